/*
 * saq.h - internal interface of the SAQ weight candidates saq<R> / saqc<R> (saq.c): segment
 * bit allocation of a linear layer's input dimension in the eigenbasis (saq) or the sorted
 * channel basis (saqc) of S = X^T X / N, with CAQ coding of each (row, segment). The exact
 * algorithm is in the README, "Exact quantizer conventions" (SAQ).
 */
#ifndef MPQ_QUANT_SAQ_H
#define MPQ_QUANT_SAQ_H

#include "mpq/mpq_quant.h"

/* Bit widths a segment may take: 0..MPQ_SAQ_MAX_BITS (0 = the segment's columns are dropped). */
#define MPQ_SAQ_MAX_BITS 8
/* Largest number of columns (input dimension) a saq candidate accepts. */
#define MPQ_SAQ_MAX_COLS 8192

/* Granularity of segment lengths: the largest of 8, 4, 2, 1 that divides cols. */
int mpq_saq_granularity(int64_t cols);

/* Stored bits that do not depend on the plan: the basis (saq: 16 cols^2, fp16 U; saqc:
 * cols * ceil(log2 cols), the permutation) plus the segment plan (5 bits per block of
 * granularity columns). -1 for a shape the candidate cannot code. */
int64_t mpq_saq_fixed_bits(const mpq_candidate *c, int64_t cols);

/* Exact stored bits R * rows * cols of a saq/saqc candidate; -1 when R * rows * cols is not a
 * whole number, cols > MPQ_SAQ_MAX_COLS, or the fixed bits exceed it (rate not achievable). */
int64_t mpq_saq_matrix_bits(const mpq_candidate *c, int64_t rows, int64_t cols);

/* Per-block statistics the segment DP reads: d blocks of g columns (g divides 32); for block j
 * lam[j] = sum of lambda over its columns, e0[j] = sum of lambda * m2 over its columns
 * (m2 = sum_r W'_{rj}^2); r2 ((d+1, d+1) row-major, entries q < p used): r2[q (d+1) + p] =
 * sum over rows of (max - min)^2 of the row's entries in columns [q g, p g). e0box, when not
 * NULL, replaces the sums of e0 by the exact error of dropping blocks q..p-1 with their cross
 * terms: (d+1, d+1) 2-D prefix sums of M_jk = S'_jk (W'^T W')_jk over blocks, E0(q, p) = the sum
 * of M over the square [q g, p g)^2 (the sorted channel basis, whose S' is not diagonal). */
typedef struct mpq_saq_blocks {
    int d, g;
    const double *lam, *e0, *r2;
    const double *e0box;
} mpq_saq_blocks;

/* Model distortion of a segment of blocks q..p-1 at b bits, with L = sum lam, E0 = E0(q, p):
 *   b = 0: E0 (the columns are dropped);
 *   b > 0: min(E0, L * r2(q, p) / (12 (2^b - 1)^2))
 * (each row's min-max grid has step range / (2^b - 1) and error step^2 / 12 per element,
 * weighted by lambda). Cost of the segment in units of g bits per row:
 * (p - q) b + (b > 0 ? 32 / g : 0). mpq_saq_plan_objective sums both over a plan
 * (seg_start[0] = 0, seg_start[n] = d). */
mpq_status mpq_saq_plan_objective(const mpq_saq_blocks *bl, const int *seg_start, const int *seg_bits, int n_segments,
                                  double *objective, int64_t *cost, mpq_err *err);

/* Segment DP: minimal objective D* over plans of cost <= budget (widths 0..MPQ_SAQ_MAX_BITS);
 * returns, among plans with objective <= D* (1 + 1e-3), one with the fewest segments (the
 * first found scanning the last segment's start from nearest to farthest and widths upward).
 * seg_start and seg_bits (caller buffers of d + 1 ints) get the segments' first block and
 * width, seg_start[n] = d; *objective its objective. MPQ_ERR_INFEASIBLE when budget < 0,
 * MPQ_ERR_INVALID for bad arguments or non-finite statistics, MPQ_ERR_NOMEM. */
mpq_status mpq_saq_dp(const mpq_saq_blocks *bl, int64_t budget, int *seg_start, int *seg_bits, int *n_segments,
                      double *objective, mpq_err *err);

/* What one saq quantization stored (bits add up to used_bits <= total_bits). */
typedef struct mpq_saq_report {
    int64_t total_bits;  /* R * rows * cols: the candidate's exact size */
    int64_t basis_bits;  /* fp16 basis (saq) or permutation (saqc) */
    int64_t plan_bits;   /* 5 bits per block */
    int64_t code_bits;   /* rows * sum over segments of len * b */
    int64_t scale_bits;  /* 32 bits (fp16 scale + fp16 zero) per row per segment with b > 0 */
    int64_t used_bits;   /* basis + plan + codes + scales */
    int granularity, n_segments;
    double objective;    /* DP objective of the plan */
    double lambda_min;   /* smallest eigenvalue (saq, clamped at 0) or diagonal entry (saqc) */
    int *seg_start, *seg_bits; /* set by the caller (NULL or buffers of cols + 1 ints): the plan,
                                  in blocks of granularity columns */
} mpq_saq_report;

/* Fake-quantizes w (rows, cols) with a saq/saqc candidate given S (cols, cols), symmetric.
 * rep may be NULL. MPQ_ERR_UNSUPPORTED when S is NULL, MPQ_ERR_INVALID for non-finite S or
 * weights or a rate the shape cannot reach (both naming the candidate), MPQ_ERR_NOMEM,
 * MPQ_ERR_SOLVER when LAPACKE fails; w is unchanged on failure. */
mpq_status mpq_saq_quantize(const mpq_candidate *c, float *w, int64_t rows, int64_t cols, const double *S,
                            mpq_saq_report *rep, mpq_err *err);

#endif /* MPQ_QUANT_SAQ_H */
