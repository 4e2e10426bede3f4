/*
 * saq.c - SAQ weight candidates saq<R> (eigenbasis of S = X^T X / N) and saqc<R> (input
 * channels sorted by S_ii): dimension segmentation with a bit width per segment chosen by a
 * dynamic program, and CAQ code adjustment of every (row, segment) group.
 *
 * Reference: Li et al. 2025, "SAQ: Pushing the Limits of Vector Quantization through Code
 * Adjustment and Dimension Segmentation" (arXiv 2509.12086): section 4 (dimension segmentation
 * of PCA-projected vectors, bit allocation by dynamic programming), section 3 (CAQ).
 *
 * Why it applies to weights: the mean squared output error of a linear layer with weight error
 * E is tr(E S E^T). With S = U diag(lambda) U^T and W' = W U, E' = E U, it is
 * sum_j lambda_j ||E'_{:,j}||^2: the eigen-directions with large lambda deserve more bits.
 *
 * Algorithm (every step is in the README, "Exact quantizer conventions", SAQ):
 * 1. basis: saq: LAPACKE_dsyevd of S (double), eigenvalues sorted descending (equal
 *    eigenvalues keep LAPACK's reversed order), each eigenvector's sign chosen so that its
 *    largest-magnitude component (the first on ties) is positive, negative eigenvalues clamped
 *    to 0; U is rounded to fp16 (it is stored) and that U16 is used both ways.
 *    saqc: the permutation of the channels by descending S_jj (ties: lower index first).
 * 2. W' = W U16 (cblas_sgemm) or W'_{:,j} = W_{:,perm[j]}.
 * 3. per column j: lambda_j and m2_j = sum_r W'_{rj}^2 (double); per block of g columns
 *    (g = granularity) the sum of lambda and of lambda m2, per segment the sum over rows of the
 *    squared range (saq.h, mpq_saq_blocks); mpq_saq_dp with the per-row budget floor((R rows cols - fixed bits) / rows / g) units of g bits.
 * 4. every (row, segment) with b > 0 is coded by mpq_quant_caq_minmax (asymmetric, fp16 scale
 *    and zero, CAQ); b = 0 columns become 0.
 * 5. W_hat = W'_hat U16^T (cblas_sgemm), or the permutation undone.
 */
#include "quant/saq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SAQ_NB (MPQ_SAQ_MAX_BITS + 1)
#define SAQ_PLAN_BITS_PER_BLOCK 5 /* 4-bit width + 1 bit "a segment starts here" */
#define SAQ_SLACK 1e-3            /* plans within 0.1% of the minimum: fewest segments */

int mpq_saq_granularity(int64_t cols) {
    if (cols % 8 == 0) return 8;
    if (cols % 4 == 0) return 4;
    if (cols % 2 == 0) return 2;
    return 1;
}

static int ceil_log2(int64_t n) {
    int k = 0;
    while (((int64_t)1 << k) < n) k++;
    return k;
}

int64_t mpq_saq_fixed_bits(const mpq_candidate *c, int64_t cols) {
    if (!c || cols <= 0 || cols > MPQ_SAQ_MAX_COLS) return -1;
    int64_t d = cols / mpq_saq_granularity(cols);
    int64_t basis = c->type == MPQ_QTYPE_SAQ ? 16 * cols * cols : cols * ceil_log2(cols);
    return basis + SAQ_PLAN_BITS_PER_BLOCK * d;
}

static int64_t seg_cost(int len, int b, int scale_units) { return (int64_t)len * b + (b > 0 ? scale_units : 0); }

/* E0 of blocks q..p-1: the running sum e0, or the exact square box of e0box. */
static double box_e0(const mpq_saq_blocks *bl, size_t q, size_t p, double e0sum) {
    if (!bl->e0box) return e0sum;
    const size_t n = (size_t)bl->d + 1;
    const double *P = bl->e0box;
    double v = P[p * n + p] - P[q * n + p] - P[p * n + q] + P[q * n + q];
    return v > 0.0 ? v : 0.0;
}

/* Model distortion of blocks q..p-1 at b bits (see saq.h). */
static double seg_dist(double lam, double r2, double e0, int b) {
    if (b == 0) return e0;
    double qm = (double)((1 << b) - 1), v = lam * r2 / (12.0 * qm * qm);
    return v < e0 ? v : e0;
}

mpq_status mpq_saq_plan_objective(const mpq_saq_blocks *bl, const int *seg_start, const int *seg_bits, int n_segments,
                                  double *objective, int64_t *cost, mpq_err *err) {
    if (!bl || !bl->lam || !bl->r2 || !bl->e0 || bl->d <= 0 || bl->g <= 0 || !seg_start || !seg_bits ||
        n_segments <= 0 || seg_start[0] != 0 || seg_start[n_segments] != bl->d)
        return mpq_err_set(err, MPQ_ERR_INVALID, "saq plan: bad arguments");
    double obj = 0.0;
    int64_t k = 0;
    for (int s = 0; s < n_segments; s++) {
        int q = seg_start[s], p = seg_start[s + 1], b = seg_bits[s];
        if (p <= q || b < 0 || b > MPQ_SAQ_MAX_BITS) return mpq_err_set(err, MPQ_ERR_INVALID, "saq plan: bad segment %d", s);
        double lam = 0.0, e0 = 0.0;
        for (int j = p; j-- > q;) {
            lam += bl->lam[j];
            e0 += bl->e0[j];
        }
        obj += seg_dist(lam, bl->r2[(size_t)q * (size_t)(bl->d + 1) + (size_t)p], box_e0(bl, (size_t)q, (size_t)p, e0), b);
        k += seg_cost(p - q, b, 32 / bl->g);
    }
    if (objective) *objective = obj;
    if (cost) *cost = k;
    return MPQ_OK;
}

/* sd[q * SAQ_NB + b] = distortion of blocks q..p-1 at b bits, q = 0..p-1 (running sums). */
static void seg_table(const mpq_saq_blocks *bl, size_t p, double *sd) {
    double lam = 0.0, e0 = 0.0;
    for (size_t q = p; q-- > 0;) {
        lam += bl->lam[q];
        e0 += bl->e0[q];
        const double ez = box_e0(bl, q, p, e0), r2 = bl->r2[q * (size_t)(bl->d + 1) + p];
        for (int b = 0; b < SAQ_NB; b++) sd[q * SAQ_NB + (size_t)b] = seg_dist(lam, r2, ez, b);
    }
}

mpq_status mpq_saq_dp(const mpq_saq_blocks *bl, int64_t budget, int *seg_start, int *seg_bits, int *n_segments,
                      double *objective, mpq_err *err) {
    if (!bl || !bl->lam || !bl->r2 || !bl->e0 || bl->d <= 0 || bl->g <= 0 || 32 % bl->g != 0 || !seg_start ||
        !seg_bits || !n_segments)
        return mpq_err_set(err, MPQ_ERR_INVALID, "saq dp: bad arguments");
    if (budget < 0) return mpq_err_set(err, MPQ_ERR_INFEASIBLE, "saq dp: budget %lld < 0", (long long)budget);
    const int d = bl->d, su = 32 / bl->g;
    /* more than 8 bits per block and a scale per block are never needed */
    int64_t cap = (int64_t)d * MPQ_SAQ_MAX_BITS + (int64_t)d * su;
    if (budget > cap) budget = cap;
    const size_t B = (size_t)budget + 1, P = (size_t)d + 1;
    mpq_status st = MPQ_OK;
    double *f = malloc(P * B * sizeof *f);      /* pass 1: any number of segments */
    double *gp = malloc(P * B * sizeof *gp);    /* pass 2: exactly k - 1 segments */
    double *gk = malloc(P * B * sizeof *gk);    /* pass 2: exactly k segments */
    double *sd = malloc(P * SAQ_NB * sizeof *sd); /* distortions of the segments ending at p */
    int32_t **ch = calloc(P, sizeof *ch);       /* ch[k][p*B + c] = q * SAQ_NB + b */
    if (!f || !gp || !gk || !sd || !ch) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "saq dp: out of memory (d %d, budget %lld)", d, (long long)budget);
        goto done;
    }
    /* pass 1: f[p][c] = min objective of blocks 0..p-1 at cost <= c */
    for (size_t c = 0; c < B; c++) f[c] = 0.0;
    for (size_t p = 1; p < P; p++) {
        seg_table(bl, p, sd);
        for (size_t c = 0; c < B; c++) {
            double best = INFINITY;
            for (size_t q = p; q-- > 0;)
                for (int b = 0; b < SAQ_NB; b++) {
                    int64_t k = seg_cost((int)(p - q), b, su);
                    if (k > (int64_t)c) break; /* cost grows with b */
                    double v = f[q * B + (c - (size_t)k)] + sd[q * SAQ_NB + (size_t)b];
                    if (v < best) best = v;
                }
            f[p * B + c] = best;
        }
    }
    const double dstar = f[(size_t)d * B + (B - 1)];
    if (!isfinite(dstar)) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "saq dp: no finite plan (statistics not finite?)");
        goto done;
    }
    const double thr = dstar + SAQ_SLACK * fabs(dstar);
    /* pass 2: exactly k segments, k = 1, 2, ... until the objective is within the slack */
    for (size_t i = 0; i < P * B; i++) gp[i] = INFINITY;
    for (size_t c = 0; c < B; c++) gp[c] = 0.0;
    int kfound = 0;
    for (int k = 1; k <= d && !kfound; k++) {
        if (!(ch[k] = malloc(P * B * sizeof **ch))) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "saq dp: out of memory (d %d, budget %lld)", d, (long long)budget);
            goto done;
        }
        for (size_t c = 0; c < B; c++) gk[c] = INFINITY, ch[k][c] = -1;
        for (size_t p = 1; p < P; p++) {
            seg_table(bl, p, sd);
            for (size_t c = 0; c < B; c++) {
                double best = INFINITY;
                int32_t arg = -1;
                for (size_t q = p; q-- > (size_t)(k - 1);)
                    for (int b = 0; b < SAQ_NB; b++) {
                        int64_t kc = seg_cost((int)(p - q), b, su);
                        if (kc > (int64_t)c) break;
                        double v = gp[q * B + (c - (size_t)kc)] + sd[q * SAQ_NB + (size_t)b];
                        if (v < best) best = v, arg = (int32_t)(q * SAQ_NB + (size_t)b);
                    }
                gk[p * B + c] = best;
                ch[k][p * B + c] = arg;
            }
        }
        if (gk[(size_t)d * B + (B - 1)] <= thr) kfound = k;
        double *t = gp;
        gp = gk;
        gk = t;
    }
    if (!kfound) { /* cannot happen: the optimum has some number of segments <= d */
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "saq dp: no plan reaches the optimum %g", dstar);
        goto done;
    }
    size_t p = (size_t)d, c = B - 1;
    for (int k = kfound; k >= 1; k--) {
        int32_t a = ch[k][p * B + c];
        size_t q = (size_t)a / SAQ_NB;
        int b = a % SAQ_NB;
        seg_start[k - 1] = (int)q;
        seg_bits[k - 1] = b;
        c -= (size_t)seg_cost((int)(p - q), b, su);
        p = q;
    }
    seg_start[kfound] = d;
    *n_segments = kfound;
    st = mpq_saq_plan_objective(bl, seg_start, seg_bits, kfound, objective, NULL, err);
done:
    if (ch)
        for (size_t k = 0; k < P; k++) free(ch[k]);
    free(ch);
    free(sd);
    free(gk);
    free(gp);
    free(f);
    return st;
}

/* Exact total bits R * rows * cols (R = hundredths / 100), -1 when not an integer or overflow. */
static int64_t total_bits(const mpq_candidate *c, int64_t rows, int64_t cols) {
    int64_t h = (int64_t)llround(c->rate * 100.0);
    if (rows <= 0 || cols <= 0 || cols > INT64_MAX / rows) return -1;
    int64_t n = rows * cols;
    if (n > INT64_MAX / h) return -1;
    if ((n * h) % 100 != 0) return -1;
    return n * h / 100;
}

int64_t mpq_saq_matrix_bits(const mpq_candidate *c, int64_t rows, int64_t cols) {
    int64_t t = total_bits(c, rows, cols), fx = mpq_saq_fixed_bits(c, cols);
    if (t < 0 || fx < 0 || fx > t) return -1;
    return t;
}

/* Eigenbasis of S (n, n): U (n, n) row-major in float, column j = eigenvector of the j-th
 * largest eigenvalue lam[j] (clamped at 0), sign rule as above, rounded to fp16. */
static mpq_status eigen_basis(const double *S, int64_t n, float *U, double *lam, mpq_err *err) {
    mpq_status st = MPQ_OK;
    double *A = malloc((size_t)(n * n) * sizeof *A), *ev = malloc((size_t)n * sizeof *ev);
    if (!A || !ev) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "eigenbasis of order %lld: out of memory", (long long)n);
        goto done;
    }
    memcpy(A, S, (size_t)(n * n) * sizeof *A);
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)n, A, (lapack_int)n, ev);
    if (info != 0) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "eigenbasis of order %lld: LAPACKE_dsyevd failed (info %d)",
                         (long long)n, (int)info);
        goto done;
    }
    for (int64_t j = 0; j < n; j++) {
        int64_t src = n - 1 - j; /* LAPACK: ascending */
        lam[j] = ev[src] > 0.0 ? ev[src] : 0.0;
        int64_t imax = 0;
        double amax = -1.0;
        for (int64_t i = 0; i < n; i++) {
            double a = fabs(A[i * n + src]);
            if (a > amax) amax = a, imax = i;
        }
        double sg = A[imax * n + src] < 0.0 ? -1.0 : 1.0;
        for (int64_t i = 0; i < n; i++) U[i * n + j] = mpq_fp16_round((float)(sg * A[i * n + src]));
    }
done:
    free(ev);
    free(A);
    return st;
}

static int cmp_diag_desc(const void *a, const void *b, const double *S, int64_t n) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    double x = S[i * n + i], y = S[j * n + j];
    if (x > y) return -1;
    if (x < y) return 1;
    return (i > j) - (i < j);
}

/* Stable merge sort of the permutation by descending S_jj (ties: lower index first). */
static void sort_perm(int64_t *p, int64_t *tmp, int64_t n, const double *S, int64_t dim) {
    if (n < 2) return;
    int64_t h = n / 2;
    sort_perm(p, tmp, h, S, dim);
    sort_perm(p + h, tmp, n - h, S, dim);
    int64_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp_diag_desc(&p[j], &p[i], S, dim) < 0 ? p[j++] : p[i++];
    while (i < h) tmp[k++] = p[i++];
    while (j < n) tmp[k++] = p[j++];
    memcpy(p, tmp, (size_t)n * sizeof *p);
}

mpq_status mpq_saq_quantize(const mpq_candidate *c, float *w, int64_t rows, int64_t cols, const double *S,
                            mpq_saq_report *rep, mpq_err *err) {
    if (!c || !w || rows <= 0 || cols <= 0 || !mpq_candidate_is_saq(c))
        return mpq_err_set(err, MPQ_ERR_INVALID, "saq: bad arguments");
    const bool pca = c->type == MPQ_QTYPE_SAQ;
    const int64_t tot = total_bits(c, rows, cols), fixed = mpq_saq_fixed_bits(c, cols);
    if (tot < 0 || fixed < 0 || fixed > tot) {
        if (fixed < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "candidate %s: rate not achievable: %lld columns exceed %d",
                               c->name, (long long)cols, MPQ_SAQ_MAX_COLS);
        if (tot < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "candidate %s: rate not achievable: %g * %lld * %lld is not a whole number of bits",
                               c->name, c->rate, (long long)rows, (long long)cols);
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "candidate %s: rate not achievable: %lld x %lld has %lld bits, the %s and segment plan "
                           "alone need %lld",
                           c->name, (long long)rows, (long long)cols, (long long)tot,
                           pca ? "fp16 basis" : "permutation", (long long)fixed);
    }
    /* after the shape: a rate the shape cannot reach is refused as such, with or without S
     * (a job records that (layer, candidate) as not available, job_run.c) */
    if (!S)
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "candidate %s needs the layer's calibration statistics X^T X (none given)", c->name);
    const size_t nn = (size_t)(cols * cols), nw = (size_t)(rows * cols);
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(S[i]))
            return mpq_err_set(err, MPQ_ERR_INVALID, "candidate %s: X^T X has a non-finite entry at (%lld, %lld)",
                               c->name, (long long)(i / (size_t)cols), (long long)(i % (size_t)cols));
    for (size_t i = 0; i < nw; i++)
        if (!isfinite(w[i]))
            return mpq_err_set(err, MPQ_ERR_INVALID, "candidate %s: non-finite weight at (%lld, %lld)", c->name,
                               (long long)(i / (size_t)cols), (long long)(i % (size_t)cols));
    const int g = mpq_saq_granularity(cols);
    const int d = (int)(cols / g);
    mpq_status st = MPQ_OK;
    float *U = NULL, *wp = malloc(nw * sizeof *wp);
    double *lam = malloc((size_t)cols * sizeof *lam), *blk = calloc((size_t)d * 2, sizeof *blk);
    int64_t *perm = NULL, *tmp = NULL;
    double *G = NULL, *box = NULL, *wd = NULL, *r2 = NULL;
    int *ss = malloc((size_t)(d + 1) * sizeof *ss), *sb = malloc((size_t)(d + 1) * sizeof *sb);
    if (!wp || !lam || !blk || !ss || !sb) goto nomem;
    if (pca) {
        if (!(U = malloc(nn * sizeof *U))) goto nomem;
        if ((st = eigen_basis(S, cols, U, lam, err)) != MPQ_OK) goto done;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0f, w, (int)cols, U,
                    (int)cols, 0.0f, wp, (int)cols);
    } else {
        perm = malloc((size_t)cols * sizeof *perm);
        tmp = malloc((size_t)cols * sizeof *tmp);
        wd = malloc(nw * sizeof *wd);
        if (!perm || !tmp || !wd) goto nomem;
        for (int64_t j = 0; j < cols; j++) perm[j] = j;
        sort_perm(perm, tmp, cols, S, cols);
        for (int64_t j = 0; j < cols; j++) {
            double v = S[perm[j] * cols + perm[j]];
            lam[j] = v > 0.0 ? v : 0.0;
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) wp[r * cols + j] = w[r * cols + perm[j]];
    }
    for (int64_t j = 0; j < cols; j++) {
        double m2 = 0.0;
        for (int64_t r = 0; r < rows; r++) m2 += (double)wp[r * cols + j] * (double)wp[r * cols + j];
        blk[j / g] += lam[j];
        blk[d + j / g] += lam[j] * m2;
    }
    { /* r2[q][p]: per row running min / max over blocks q..p-1, q descending */
        const size_t n1 = (size_t)d + 1;
        if (!(r2 = calloc(n1 * n1, sizeof *r2))) goto nomem;
        for (int64_t r = 0; r < rows; r++) {
            const float *x = wp + r * cols;
            for (int p = 1; p <= d; p++) {
                float lo = INFINITY, hi = -INFINITY;
                for (int q = p; q-- > 0;) {
                    for (int64_t j = (int64_t)q * g; j < (int64_t)(q + 1) * g; j++) {
                        if (x[j] < lo) lo = x[j];
                        if (x[j] > hi) hi = x[j];
                    }
                    double rg = (double)hi - (double)lo;
                    r2[(size_t)q * n1 + (size_t)p] += rg * rg;
                }
            }
        }
    }
    if (!pca) { /* exact drop errors with cross terms: M = S'_jk (W'^T W')_jk, box sums */
        const size_t n1 = (size_t)d + 1;
        if (!(G = malloc(nn * sizeof *G)) || !(box = calloc(n1 * n1, sizeof *box))) goto nomem;
        for (size_t i = 0; i < nw; i++) wd[i] = (double)wp[i];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)rows, 1.0, wd, (int)cols, 0.0, G, (int)cols);
        for (int64_t j = 0; j < cols; j++)
            for (int64_t k = j; k < cols; k++) {
                double v = G[j * cols + k] * S[perm[j] * cols + perm[k]];
                box[(size_t)(j / g + 1) * n1 + (size_t)(k / g + 1)] += v;
                if (k != j) box[(size_t)(k / g + 1) * n1 + (size_t)(j / g + 1)] += v;
            }
        for (size_t a = 1; a < n1; a++)
            for (size_t b2 = 1; b2 < n1; b2++)
                box[a * n1 + b2] += box[(a - 1) * n1 + b2] + box[a * n1 + b2 - 1] - box[(a - 1) * n1 + b2 - 1];
    }
    const mpq_saq_blocks bl = {d, g, blk, blk + d, r2, box};
    const int64_t budget = (tot - fixed) / rows / g;
    int nseg = 0;
    double obj = 0.0;
    if ((st = mpq_saq_dp(&bl, budget, ss, sb, &nseg, &obj, err)) != MPQ_OK) {
        mpq_err_prefix(err, "candidate %s", c->name);
        goto done;
    }
    int64_t code = 0, scale = 0;
    for (int s = 0; s < nseg; s++) {
        int64_t j0 = (int64_t)ss[s] * g, j1 = (int64_t)ss[s + 1] * g;
        code += rows * (j1 - j0) * sb[s];
        if (sb[s] > 0) scale += rows * 32;
        for (int64_t r = 0; r < rows; r++) {
            float *x = wp + r * cols + j0;
            if (sb[s] == 0) memset(x, 0, (size_t)(j1 - j0) * sizeof *x);
            else mpq_quant_caq_minmax(x, (size_t)(j1 - j0), 1, sb[s]);
        }
    }
    if (pca) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)cols, 1.0f, wp, (int)cols, U,
                    (int)cols, 0.0f, w, (int)cols);
    } else {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) w[r * cols + perm[j]] = wp[r * cols + j];
    }
    if (rep) {
        int *rs = rep->seg_start, *rb = rep->seg_bits;
        memset(rep, 0, sizeof *rep);
        rep->seg_start = rs, rep->seg_bits = rb;
        for (int s = 0; s <= nseg && rs && rb; s++) rs[s] = ss[s], rb[s] = s < nseg ? sb[s] : 0;
        rep->total_bits = tot;
        rep->basis_bits = pca ? 16 * cols * cols : cols * ceil_log2(cols);
        rep->plan_bits = fixed - rep->basis_bits;
        rep->code_bits = code;
        rep->scale_bits = scale;
        rep->used_bits = fixed + code + scale;
        rep->granularity = g;
        rep->n_segments = nseg;
        rep->objective = obj;
        rep->lambda_min = lam[cols - 1];
    }
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "candidate %s: out of memory for a %lld x %lld matrix", c->name,
                     (long long)rows, (long long)cols);
done:
    free(sb);
    free(ss);
    free(r2);
    free(box);
    free(G);
    free(wd);
    free(tmp);
    free(perm);
    free(blk);
    free(lam);
    free(wp);
    free(U);
    return st;
}
