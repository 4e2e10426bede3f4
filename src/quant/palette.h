/*
 * palette.h - the Q-Palette candidates tcq<R>, vq<R>, nuq<R> (internal): rotation, per-row
 * fp16 RMS scales, codebook (or trellis) quantization, back-rotation.
 */
#ifndef MPQ_PALETTE_H
#define MPQ_PALETTE_H

#include "mpq/mpq_quant.h"

/* Fake-quantizes w (rows x cols, row-major) under a palette candidate; w is unchanged on
 * failure (MPQ_ERR_NOMEM, MPQ_ERR_UNSUPPORTED for shapes above the caps). */
mpq_status mpq_palette_quantize(const mpq_candidate *c, float *w, int64_t rows, int64_t cols, mpq_err *err);

/* Codebooks (palette_codebooks.h): nuq<R> levels (2^R ascending floats, R = 2..8) and vq<R>
 * points (2^(2R) pairs, 2R = 3..8). NULL when R is not offered. */
const float *mpq_palette_nuq_levels(int rate_bits, int *n_levels);
const float *mpq_palette_vq_points(int code_bits, int *n_points);

#endif /* MPQ_PALETTE_H */
