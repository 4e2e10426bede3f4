/*
 * tcq.h - trellis-coded quantizer of the Q-Palette palette (Lee & Song, NeurIPS 2025,
 * arXiv 2509.20214) on data already rotated and scaled to unit variance. Internal header.
 *
 * Rates 1.5, 1.75, ..., 5.0 bits per weight. mpq_tcq_code_bits gives the exact number of code
 * bits of a (rows, cols) matrix (-1 if the shape cannot be coded at that rate);
 * mpq_tcq_quantize_matrix fake-quantizes w in place and, when codes is not NULL, stores the
 * codes there.
 */
#ifndef MPQ_TCQ_H
#define MPQ_TCQ_H

#include "mpq/mpq.h"

bool mpq_tcq_rate_valid(double rate);
int64_t mpq_tcq_code_bits(int64_t rows, int64_t cols, double rate);
mpq_status mpq_tcq_quantize_matrix(float *w, int64_t rows, int64_t cols, double rate, uint8_t *codes,
                                   mpq_err *err);

#endif /* MPQ_TCQ_H */
