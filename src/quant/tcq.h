/*
 * tcq.h - trellis-coded quantization (internal to libmpq): QTIP's bitshift trellis with its
 * hybrid ("HYB", quantlut_sym) codebook, configured as Q-Palette's tcq / tcomb quantizers.
 *
 * References: Tseng et al., "QTIP: Quantization with Trellises and Incoherence Processing"
 * (arXiv 2406.11235), section 3 (bitshift trellis, tail-biting, hybrid codes); Lee and Song,
 * "Q-Palette" (arXiv 2509.20214), its TCQ palette tcq-1.5 .. tcq-5 and the "tcomb" quarter
 * rates. The exact conventions (tile order, bitstream, column split, padding, codebook) are in
 * docs-tcq.md and at the top of tcq.c.
 *
 *     float *w = ...;                         // (rows, cols) row-major, ~N(0,1) entries
 *     int64_t nb = mpq_tcq_code_bits(rows, cols, 2.5);
 *     uint8_t *codes = malloc((size_t)(nb + 7) / 8);
 *     mpq_err err = {0};
 *     if (mpq_tcq_quantize_matrix(w, rows, cols, 2.5, codes, &err) != MPQ_OK) ...
 *     // w now holds the reconstruction; mpq_tcq_decode_matrix(codes, ...) gives it again.
 *
 * Everything is deterministic: the same input gives the same bits and floats on every
 * machine and thread count (no threads are used here; callers may encode disjoint tile rows
 * in parallel).
 */
#ifndef MPQ_TCQ_H
#define MPQ_TCQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- public-facing interface (used by the quantizer palette) ------------------------------ */

/* Rates offered: 1.5, 1.75, ..., 5.0 (bits per weight of the codes). NaN and anything else
 * give false. */
bool mpq_tcq_rate_valid(double rate);

/* Exact number of code bits for a (rows, cols) matrix at `rate`: tiles of 16x16 (the last tile
 * row / column zero-padded and counted), 128*k bits per tile with k the tile column's bits per
 * step (tcomb split included), no side information (the codebook is a source constant).
 * 0 for rows == 0 or cols == 0. -1 for an invalid rate, negative sizes, or a size whose bit
 * count would not fit in int64_t. */
int64_t mpq_tcq_code_bits(int64_t rows, int64_t cols, double rate);

/* Quantizes a row-major (rows, cols) matrix in place (writes the decoder's reconstruction).
 * Data assumed ~N(0,1) (the caller rotates and scales). If codes != NULL, also writes the
 * bitstream, ceil(mpq_tcq_code_bits(...)/8) bytes (always whole bytes: every tile is 16*k
 * bytes). MPQ_ERR_INVALID for an invalid rate, a negative size, a size too large, w == NULL
 * with a non-empty shape, or a NaN/Inf entry (named by row and column); MPQ_ERR_NOMEM when the
 * workspace cannot be allocated. On error w and codes may be partly written. */
mpq_status mpq_tcq_quantize_matrix(float *w, int64_t rows, int64_t cols, double rate,
                                   uint8_t *codes, mpq_err *err);

/* Decodes a bitstream written by mpq_tcq_quantize_matrix into a (rows, cols) matrix; equal,
 * bit for bit, to the reconstruction the encoder wrote. Any byte string of the right length
 * decodes (every bit pattern is a valid code). Same errors as above for rate / shape. */
mpq_status mpq_tcq_decode_matrix(const uint8_t *codes, int64_t rows, int64_t cols, double rate,
                                 float *out, mpq_err *err);

/* ---- internals exposed for tests, the LUT generator and the benchmark -------------------- */

#define MPQ_TCQ_L 16     /* state bits */
#define MPQ_TCQ_V 2      /* weights per trellis step */
#define MPQ_TCQ_TILE 16  /* tiles are 16x16 weights */
#define MPQ_TCQ_STEPS 128 /* steps per tile: 256 weights / V */
#define MPQ_TCQ_SCALE_OVERRIDE 0.9 /* Q-Palette's scale_override for tcq (see tcq.c) */

/* Bits per step for the tile columns of a rate: *k_lo for the first tile columns, *k_hi for
 * the last n_hi = floor(n_tile_cols / 2) of them at a quarter rate (k_hi = k_lo + 1); at a
 * half/whole rate k_hi = k_lo and n_hi = 0. False for an invalid rate. */
bool mpq_tcq_rate_split(double rate, int64_t n_tile_cols, int *k_lo, int *k_hi, int64_t *n_hi);

/* Codebook table bits t for a largest bits-per-step k (Q-Palette: 9 for k <= 8, 10 for k = 9,
 * 11 for k = 10); 0 for k outside 1..10. */
int mpq_tcq_lut_bits(int k_max);

/* The committed 2^t x 2 codebook table (tcq_lut.h), t = 9, 10 or 11; NULL otherwise.
 * Static storage. */
const float *mpq_tcq_lut_table(int t);

/* Expands a 2^t x 2 table into the per-state reconstruction of the 16-bit states:
 * p = (uint32)(s * (s + 1)); i = (p >> (15 - t)) mod 2^t; x[s] = tab[2i] negated when bit 15 of
 * p is set, y[s] = tab[2i + 1]. x and y hold 2^16 floats. */
void mpq_tcq_lut_expand(const float *tab, int t, float *x, float *y);

/* A trellis for the Viterbi core: L state bits (k <= L <= 16), k new bits per step, V = 2
 * weights per step, reconstruction (x[s], y[s]) of state s (2^L entries each, borrowed). */
typedef struct mpq_tcq_trellis {
    int L, k;
    const float *x, *y;
} mpq_tcq_trellis;

/* Workspace of the Viterbi core for trellises with the same L, k >= k_min and at most n_steps
 * steps (about 4 * (2 * 2^L + n_steps * 2^(L - k_min)) bytes); NULL on a bad size or no
 * memory. Not shared between threads. */
typedef struct mpq_tcq_work mpq_tcq_work;
mpq_tcq_work *mpq_tcq_work_new(int L, int k_min, int n_steps);
void mpq_tcq_work_free(mpq_tcq_work *wk);

/* Viterbi over n_steps steps of the sequence xs[2*n_steps] with per-weight error weights
 * wt[2*n_steps] (1 = coded weight, 0 = padding that does not count); cost of a path =
 * sum_i wt[2i](xs[2i]-x[s_i])^2 + wt[2i+1](xs[2i+1]-y[s_i])^2 in float, accumulated step by
 * step. overlap < 0: any path; overlap >= 0: tail-biting paths whose first state's top L-k bits
 * and last state's low L-k bits both equal overlap. Writes the path (states[n_steps]) and
 * returns its cost; ties go to the smallest state at each choice (deterministic). */
float mpq_tcq_viterbi(const mpq_tcq_trellis *tr, mpq_tcq_work *wk, const float *xs,
                      const float *wt, int n_steps, int32_t overlap, uint32_t *states);

/* QTIP's tail-biting encoder: Viterbi on the sequence rotated by n_steps/2 steps, the overlap
 * = top L-k bits of the state at the original step 0, then the constrained Viterbi above.
 * n_steps even. Returns the cost; *overlap_out (if not NULL) gets the overlap used. */
float mpq_tcq_encode_tailbiting(const mpq_tcq_trellis *tr, mpq_tcq_work *wk, const float *xs,
                                const float *wt, int n_steps, uint32_t *states,
                                int32_t *overlap_out);

/* mpq_tcq_encode_tailbiting on two sequences a and b at once (workspaces wa, wb): the same
 * paths sa, sb and costs *ca, *cb as two separate calls, faster (each codebook entry is read
 * once per step for both). */
void mpq_tcq_encode_tailbiting2(const mpq_tcq_trellis *tr, mpq_tcq_work *wa, mpq_tcq_work *wb,
                                const float *xa, const float *ta, const float *xb,
                                const float *tb, int n_steps, uint32_t *sa, uint32_t *sb,
                                float *ca, float *cb);

/* Exact tail-biting optimum: the constrained Viterbi for every overlap (2^(L-k) runs), the
 * smallest cost (smallest overlap on ties). For tests on small trellises. */
float mpq_tcq_encode_tailbiting_exact(const mpq_tcq_trellis *tr, mpq_tcq_work *wk,
                                      const float *xs, const float *wt, int n_steps,
                                      uint32_t *states);

/* One standard normal pair from r by Marsaglia's polar method, with a logarithm computed by
 * +, -, *, / only (so the values are the same on every IEEE-754 machine and libm). */
void mpq_tcq_normal_pair(mpq_rng *r, double out[2]);

/* Trains the 2^t x 2 codebook table (Lloyd's k-means on Gaussian pairs, fixed seed) and
 * normalises it to Q-Palette's operating point for unit-variance data; tab gets 2^(t+1)
 * floats. Deterministic; this is what tests/tools/gen_tcq_lut.c prints into tcq_lut.h.
 * *iters (if not NULL) gets the Lloyd iterations run. MPQ_ERR_INVALID for t outside 1..12,
 * MPQ_ERR_NOMEM. */
mpq_status mpq_tcq_lut_train(int t, float *tab, int *iters, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_TCQ_H */
