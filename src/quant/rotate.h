/*
 * rotate.h - incoherence processing of the palette candidates (internal): the seeded
 * orthogonal matrices Q_k = M_k diag(s_k) applied to both sides of a weight matrix.
 *
 *     float *qm = NULL, *qn = NULL;
 *     if (mpq_rotation_build(rows, cols, &qm, &qn, &err) != MPQ_OK) ...
 *     mpq_rotation_apply(qm, qn, w, tmp, rows, cols, false);   // w <- Q_m w Q_n^T
 *     mpq_rotation_apply(qm, qn, w, tmp, rows, cols, true);    // w <- Q_m^T w Q_n
 *     free(qm); free(qn);
 */
#ifndef MPQ_ROTATE_H
#define MPQ_ROTATE_H

#include "mpq/mpq.h"

/* Fixed constant of the rotation seed ("mpq-rot1" in ASCII). */
#define MPQ_ROTATION_SEED UINT64_C(0x6d70712d726f7431)

/* The PRNG seed of a (rows, cols) matrix:
 * MPQ_ROTATION_SEED ^ (rows * 0x9e3779b97f4a7c15) ^ cols (uint64 arithmetic, wrapping). */
uint64_t mpq_rotation_seed(int64_t rows, int64_t cols);

/* 1 if n = 2^a 12^b 20^c with a >= 2(b + c) (a Hadamard matrix is built), else 0. On 1,
 * *b12 and *c20 (may be NULL) receive b and c. */
int mpq_hadamard_factor(int64_t n, int *b12, int *c20);

/* Fills h (n x n row-major) with the UNnormalised Hadamard matrix H12^(x)b (x) H20^(x)c (x)
 * H_(2^a) (Paley I for 12 and 20, Sylvester for powers of two). MPQ_ERR_INVALID if n has
 * no such factorisation. */
mpq_status mpq_hadamard_fill(int64_t n, float *h, mpq_err *err);

/* Builds Q_m (rows x rows) and Q_n (cols x cols), row-major, owned by the caller (free()).
 * Seeded stream: mpq_rng_seed(mpq_rotation_seed(rows, cols)); s_m = rademacher(rows),
 * s_n = rademacher(cols); then, for each side without a Hadamard construction (m first), a
 * k x k Gaussian matrix (row-major, Box-Muller pairs) orthonormalised by QR. */
mpq_status mpq_rotation_build(int64_t rows, int64_t cols, float **qm, float **qn, mpq_err *err);

/* inverse = false: w <- Q_m w Q_n^T; inverse = true: w <- Q_m^T w Q_n. tmp holds rows*cols
 * floats. Two cblas_sgemm calls. */
void mpq_rotation_apply(const float *qm, const float *qn, float *w, float *tmp, int64_t rows, int64_t cols,
                        bool inverse);

/* Box-Muller normal pair from two uniform draws u1, u2 of r (mpq_rng_uniform, in that order):
 * rad = sqrt(-2 ln(1 - u1)); z0 = rad cos(2 pi u2), z1 = rad sin(2 pi u2). */
struct mpq_rng;
void mpq_rotation_gauss_pair(struct mpq_rng *r, double *z0, double *z1);

#endif /* MPQ_ROTATE_H */
