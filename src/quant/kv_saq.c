/*
 * kv_saq.c - SAQ coding of the KV cache: per block, kind (keys / values) and KV head, a
 * calibrated PCA basis, a segment-DP bit allocation over its directions and static
 * per-direction uniform steps; bases saved to / loaded from a JSON file.
 *
 * Reference: Li et al. 2025, "SAQ: Pushing the Limits of Vector Quantization through Code
 * Adjustment and Dimension Segmentation" (arXiv 2509.12086): PCA projection, dynamic
 * programming over dimension segments for the bit allocation. Differences, for a KV cache
 * whose head vectors are short (head_dim 8..128): the quantizer of each direction has a step
 * fixed by calibration (no per-vector scale: an fp16 scale per head vector would cost
 * 16/head_dim bits per element, 2 bits at head_dim 8), so there is no code adjustment (with
 * fixed reconstruction points, rounding to the nearest level is already the least-squares
 * code of each coordinate). Exact conventions: mpq_quant.h and README "KV cache".
 */
#include "mpq/mpq_quant.h"
#include "mpq/mpq_solvers.h"

#include "util/file.h"

#include <cjson/cJSON.h>
#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAQ_MAX_BITS 8
#define SAQ_N_CLIP 40
#define SAQ_SCALE_BITS 16 /* the fp16 per-token scale of the scaled coder */
#define SAQ_FILE_MAX (1u << 30)

struct mpq_kv_saq {
    int n_layers, n_kv_heads, head_dim;
    bool *fitted;  /* [layer*2 + kind] */
    float *mean;   /* [unit][hd] */
    float *eig;    /* [unit][hd] */
    float *basis;  /* [unit][hd directions][hd], direction j = row j */
    float *step;   /* [unit][hd][SAQ_MAX_BITS], width b at index b-1 */
    double *mse;   /* [unit][hd][SAQ_MAX_BITS+1], width b at index b */
    float *step_s; /* as step, for coordinates divided by the token's fp16 scale */
    double *mse_s; /* as mse, errors of the scaled coder in the original units */
};

/* unit index of (layer, kind, head); kind 0 = keys, 1 = values */
static size_t unit(const mpq_kv_saq *s, int layer, bool key, int head) {
    return ((size_t)layer * 2 + (key ? 0 : 1)) * (size_t)s->n_kv_heads + (size_t)head;
}

void mpq_kv_saq_free(mpq_kv_saq *s) {
    if (!s) return;
    free(s->fitted);
    free(s->mean);
    free(s->eig);
    free(s->basis);
    free(s->step);
    free(s->mse);
    free(s->step_s);
    free(s->mse_s);
    free(s);
}

int mpq_kv_saq_n_layers(const mpq_kv_saq *s) { return s ? s->n_layers : 0; }
int mpq_kv_saq_n_kv_heads(const mpq_kv_saq *s) { return s ? s->n_kv_heads : 0; }
int mpq_kv_saq_head_dim(const mpq_kv_saq *s) { return s ? s->head_dim : 0; }
int64_t mpq_kv_saq_basis_bits(int head_dim) { return 16 * ((int64_t)head_dim * head_dim + 2 * (int64_t)head_dim); }

mpq_status mpq_kv_saq_create(int n_layers, int n_kv_heads, int head_dim, mpq_kv_saq **out, mpq_err *err) {
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq: out is NULL");
    *out = NULL;
    if (n_layers < 1 || n_layers > 4096 || n_kv_heads < 1 || n_kv_heads > 1024 || head_dim < 2 || head_dim > 1024)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "kv saq: shape %d blocks x %d KV heads x head_dim %d outside 1..4096 x 1..1024 x 2..1024",
                           n_layers, n_kv_heads, head_dim);
    mpq_kv_saq *s = calloc(1, sizeof *s);
    if (!s) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq: out of memory");
    s->n_layers = n_layers;
    s->n_kv_heads = n_kv_heads;
    s->head_dim = head_dim;
    /* at most 4096*2*1024 units x 1024^2 floats: 2^43 bytes, representable in size_t on 64-bit;
     * calloc reports failure */
    size_t units = (size_t)n_layers * 2 * (size_t)n_kv_heads, hd = (size_t)head_dim;
    s->fitted = calloc((size_t)n_layers * 2, sizeof *s->fitted);
    s->mean = calloc(units * hd, sizeof *s->mean);
    s->eig = calloc(units * hd, sizeof *s->eig);
    s->basis = calloc(units * hd * hd, sizeof *s->basis);
    s->step = calloc(units * hd * SAQ_MAX_BITS, sizeof *s->step);
    s->mse = calloc(units * hd * (SAQ_MAX_BITS + 1), sizeof *s->mse);
    s->step_s = calloc(units * hd * SAQ_MAX_BITS, sizeof *s->step_s);
    s->mse_s = calloc(units * hd * (SAQ_MAX_BITS + 1), sizeof *s->mse_s);
    if (!s->fitted || !s->mean || !s->eig || !s->basis || !s->step || !s->mse || !s->step_s || !s->mse_s) {
        mpq_kv_saq_free(s);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq: out of memory for %d x %d x %d bases", n_layers, n_kv_heads,
                           head_dim);
    }
    *out = s;
    return MPQ_OK;
}

/* mid-rise uniform code of y with 2^b levels and step st */
static uint32_t saq_code(double y, double st, int b) {
    double half = (double)(1u << (b - 1));
    double q = floor(y / st) + half;
    double top = (double)((1u << b) - 1u);
    if (!(q > 0.0)) q = 0.0; /* also NaN */
    if (q > top) q = top;
    return (uint32_t)q;
}
static double saq_level(uint32_t q, double st, int b) { return ((double)q - (double)(1u << (b - 1)) + 0.5) * st; }

/* squared error sum of the coordinates y[0..n) (stride) coded with width b and step st,
 * each weighted by wt[i] (NULL: 1) */
static double saq_sse(const double *y, const double *wt, int64_t n, size_t stride, double st, int b) {
    double e = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = y[(size_t)i * stride];
        double d = v - saq_level(saq_code(v, st, b), st, b);
        e += (wt ? wt[i] : 1.0) * d * d;
    }
    return e;
}

/* The per-token scale of a head vector's coordinates y: fp16(sqrt(mean y^2)), <= 65504. */
static float saq_token_scale(const double *y, int hd) {
    double ss = 0.0;
    for (int j = 0; j < hd; j++) ss += y[j] * y[j];
    double r = sqrt(ss / (double)hd);
    if (!(r < 65504.0)) r = isfinite(r) ? 65504.0 : 0.0;
    return mpq_fp16_round((float)r);
}

/* Steps and errors of one direction: coordinates y (stride), weights wt (NULL: 1) */
static void fit_steps(const double *y, const double *wt, int64_t n, size_t stride, float *stp, double *mse) {
    double amax = 0.0, e0 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = y[(size_t)i * stride];
        if (fabs(v) > amax) amax = fabs(v);
        e0 += (wt ? wt[i] : 1.0) * v * v;
    }
    mse[0] = e0 / (double)n;
    for (int b = 1; b <= SAQ_MAX_BITS; b++) {
        double best = INFINITY;
        float best_st = FLT_MIN; /* an all-zero coordinate: levels +-FLT_MIN/2, ~0 */
        for (int k = 0; k < SAQ_N_CLIP; k++) {
            /* half-range amax * 2^(-k/8) split into 2^b steps; the step is a float as stored */
            float cand = (float)(2.0 * amax * exp2(-(double)k / 8.0) / (double)(1u << b));
            if (!(cand > 0.0f) || !isfinite(cand)) break;
            double e = saq_sse(y, wt, n, stride, (double)cand, b);
            if (e < best) best = e, best_st = cand;
        }
        stp[b - 1] = best_st;
        mse[b] = isfinite(best) ? best / (double)n : 0.0;
    }
}

mpq_status mpq_kv_saq_fit(mpq_kv_saq *s, int layer, bool key, const float *x, int64_t n, mpq_err *err) {
    if (!s || !x) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq fit: NULL argument");
    if (layer < 0 || layer >= s->n_layers || n < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq fit: block %d of %d, %lld rows", layer, s->n_layers,
                           (long long)n);
    const int hd = s->head_dim, nh = s->n_kv_heads, kvd = hd * nh;
    mpq_status st = MPQ_OK;
    size_t nn = (size_t)n;
    double *y = NULL, *p = NULL, *wt = NULL, *cov = malloc((size_t)hd * hd * sizeof(double)), *w = malloc((size_t)hd * sizeof(double));
    if (nn > SIZE_MAX / sizeof(double) / (size_t)hd) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "kv saq fit: %lld rows overflow", (long long)n);
        goto done;
    }
    y = malloc(nn * (size_t)hd * sizeof(double));
    p = malloc(nn * (size_t)hd * sizeof(double));
    wt = malloc(nn * sizeof(double));
    if (!y || !p || !wt || !cov || !w) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq fit: out of memory for %lld rows", (long long)n);
        goto done;
    }
    for (int h = 0; h < nh; h++) {
        size_t u = unit(s, layer, key, h);
        float *mu = s->mean + u * (size_t)hd;
        for (int j = 0; j < hd; j++) {
            double m = 0.0;
            for (size_t i = 0; i < nn; i++) m += (double)x[i * (size_t)kvd + (size_t)h * hd + (size_t)j];
            m /= (double)n;
            if (!isfinite(m)) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "kv saq fit: block %d %s head %d: non-finite calibration vector",
                                 layer, key ? "keys" : "values", h);
                goto done;
            }
            mu[j] = (float)m;
        }
        /* centred on the stored (float) mean, as the coder does */
        for (size_t i = 0; i < nn; i++)
            for (int j = 0; j < hd; j++)
                y[i * (size_t)hd + (size_t)j] = (double)x[i * (size_t)kvd + (size_t)h * hd + (size_t)j] - (double)mu[j];
        /* cov = Y^T Y / n (upper triangle) */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, hd, (int)n, 1.0 / (double)n, y, hd, 0.0, cov, hd);
        lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', hd, cov, hd, w);
        if (info != 0) {
            st = mpq_err_set(err, MPQ_ERR_SOLVER, "kv saq fit: block %d %s head %d: LAPACKE_dsyevd failed (info %d)",
                             layer, key ? "keys" : "values", h, (int)info);
            goto done;
        }
        /* columns of cov are eigenvectors, eigenvalues ascending: direction j = column hd-1-j */
        float *V = s->basis + u * (size_t)hd * hd;
        for (int j = 0; j < hd; j++) {
            int c = hd - 1 - j, arg = 0;
            double big = -1.0;
            for (int r = 0; r < hd; r++)
                if (fabs(cov[(size_t)r * hd + c]) > big) big = fabs(cov[(size_t)r * hd + c]), arg = r;
            double sg = cov[(size_t)arg * hd + c] < 0.0 ? -1.0 : 1.0;
            for (int r = 0; r < hd; r++) V[(size_t)j * hd + r] = (float)(sg * cov[(size_t)r * hd + c]);
            s->eig[u * (size_t)hd + (size_t)j] = (float)(w[c] > 0.0 ? w[c] : 0.0);
        }
        /* coordinates in the stored (float) basis: P = Y V^T */
        for (int j = 0; j < hd * hd; j++) cov[j] = (double)V[j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, hd, hd, 1.0, y, hd, cov, hd, 0.0, p, hd);
        for (int j = 0; j < hd; j++)
            fit_steps(p + j, NULL, (int64_t)n, (size_t)hd, s->step + (u * (size_t)hd + (size_t)j) * SAQ_MAX_BITS,
                      s->mse + (u * (size_t)hd + (size_t)j) * (SAQ_MAX_BITS + 1));
        /* the scaled coder: coordinates divided by the token's fp16 scale nu, errors weighted
         * by nu^2 (back in the original units) */
        for (size_t i = 0; i < nn; i++) {
            double *row = p + i * (size_t)hd;
            float nu = saq_token_scale(row, hd);
            wt[i] = (double)nu * (double)nu;
            for (int j = 0; j < hd; j++) row[j] = nu > 0.0f ? row[j] / (double)nu : 0.0;
        }
        for (int j = 0; j < hd; j++)
            fit_steps(p + j, wt, (int64_t)n, (size_t)hd, s->step_s + (u * (size_t)hd + (size_t)j) * SAQ_MAX_BITS,
                      s->mse_s + (u * (size_t)hd + (size_t)j) * (SAQ_MAX_BITS + 1));
    }
    s->fitted[(size_t)layer * 2 + (key ? 0 : 1)] = true;
done:
    free(y);
    free(p);
    free(wt);
    free(cov);
    free(w);
    return st;
}

mpq_status mpq_kv_saq_check(const mpq_kv_saq *s, int n_layers, int n_kv_heads, int head_dim, const char *what,
                            mpq_err *err) {
    if (!what) what = "kv saq bases";
    if (!s) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv scheme saq needs bases (none given)", what);
    if (s->n_layers != n_layers || s->n_kv_heads != n_kv_heads || s->head_dim != head_dim)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: bases are for %d blocks x %d KV heads x head_dim %d, the model has %d x %d x %d", what,
                           s->n_layers, s->n_kv_heads, s->head_dim, n_layers, n_kv_heads, head_dim);
    for (int l = 0; l < s->n_layers * 2; l++)
        if (!s->fitted[l])
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: block %d %s not fitted", what, l / 2,
                               l % 2 ? "values" : "keys");
    return MPQ_OK;
}

mpq_status mpq_kv_saq_check_rate(int rate_q, int head_dim, mpq_err *err) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.10g", (double)rate_q / 1024.0);
    if (rate_q <= 0 || rate_q > SAQ_MAX_BITS * 1024)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "kv saq: rate %s bits/element not achievable: SAQ codes need 0 < rate <= %d bits", buf,
                           SAQ_MAX_BITS);
    if (head_dim < 1 || ((int64_t)rate_q * head_dim) % 1024 != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "kv saq: rate %s bits/element not achievable at head_dim %d: rate x head_dim = %.6g is not "
                           "a whole number of bits",
                           buf, head_dim, (double)rate_q * head_dim / 1024.0);
    return MPQ_OK;
}

/* segment DP of one error table at a budget; bits[hd] and *dist out */
static mpq_status run_dp(const double *tab, int hd, int64_t budget, int *bits, double *dist, mpq_err *err) {
    int widths[SAQ_MAX_BITS + 1];
    for (int b = 0; b <= SAQ_MAX_BITS; b++) widths[b] = b;
    int *seg_start = malloc((size_t)(hd + 1) * sizeof(int)), *seg_bits = malloc((size_t)(hd + 1) * sizeof(int));
    mpq_status st = MPQ_OK;
    int nseg = 0;
    if (!seg_start || !seg_bits) st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq plan: out of memory");
    else st = mpq_segment_dp(NULL, tab, hd, widths, SAQ_MAX_BITS + 1, 0, budget, seg_start, seg_bits, &nseg, dist, err);
    if (st == MPQ_OK)
        for (int g = 0; g < nseg; g++)
            for (int j = seg_start[g]; j < seg_start[g + 1]; j++) bits[j] = seg_bits[g];
    free(seg_start);
    free(seg_bits);
    return st;
}

mpq_status mpq_kv_saq_plan(const mpq_kv_saq *s, int layer, bool key, int head, int rate_q, int *bits, bool *scaled,
                           double *distortion, mpq_err *err) {
    if (!s || !bits) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq plan: NULL argument");
    if (layer < 0 || layer >= s->n_layers || head < 0 || head >= s->n_kv_heads)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq plan: block %d head %d outside %d x %d", layer, head,
                           s->n_layers, s->n_kv_heads);
    mpq_status st = mpq_kv_saq_check_rate(rate_q, s->head_dim, err);
    if (st != MPQ_OK) return st;
    const int hd = s->head_dim;
    const size_t off = unit(s, layer, key, head) * (size_t)hd * (SAQ_MAX_BITS + 1);
    const int64_t budget = (int64_t)rate_q * hd / 1024;
    double d0 = 0.0, d1 = INFINITY;
    if ((st = run_dp(s->mse + off, hd, budget, bits, &d0, err)) != MPQ_OK) return st;
    bool sc = false;
    if (budget >= SAQ_SCALE_BITS) {
        int *b1 = malloc((size_t)hd * sizeof(int));
        if (!b1) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq plan: out of memory");
        st = run_dp(s->mse_s + off, hd, budget - SAQ_SCALE_BITS, b1, &d1, err);
        if (st == MPQ_OK && d1 < d0) {
            memcpy(bits, b1, (size_t)hd * sizeof(int));
            sc = true;
        }
        free(b1);
        if (st != MPQ_OK) return st;
    }
    if (scaled) *scaled = sc;
    if (distortion) *distortion = sc ? d1 : d0;
    return MPQ_OK;
}

void mpq_kv_saq_code_vector(const mpq_kv_saq *s, int layer, bool key, int head, const int *bits, bool scaled,
                            const float *x, uint32_t *codes, float *xhat) {
    const int hd = s->head_dim;
    const size_t u = unit(s, layer, key, head);
    const float *mu = s->mean + u * (size_t)hd, *V = s->basis + u * (size_t)hd * hd;
    const float *stp = (scaled ? s->step_s : s->step) + u * (size_t)hd * SAQ_MAX_BITS;
    double xc[1024], y[1024] = {0}, basis_row[1024];
    for (int j = 0; j < hd; j++) xc[j] = (double)x[j] - (double)mu[j];
    for (int j = 0; j < hd; j++) {
        /* y_j = V_j . (x - mu): one direction at a time, the same call for every row */
        for (int r = 0; r < hd; r++) basis_row[r] = (double)V[(size_t)j * hd + r];
        y[j] = cblas_ddot(hd, basis_row, 1, xc, 1);
    }
    double nu = 1.0;
    if (scaled) { /* the token's fp16 scale: coordinates coded in units of nu */
        nu = (double)saq_token_scale(y, hd);
        for (int j = 0; j < hd; j++) y[j] = nu > 0.0 ? y[j] / nu : 0.0;
    }
    for (int j = 0; j < hd; j++) {
        int b = bits[j];
        if (b <= 0) {
            codes[j] = 0;
            y[j] = 0.0;
            continue;
        }
        double sj = (double)stp[(size_t)j * SAQ_MAX_BITS + (size_t)(b - 1)];
        codes[j] = saq_code(y[j], sj, b);
        y[j] = nu * saq_level(codes[j], sj, b);
    }
    /* xhat = mu + V^T y_hat */
    for (int r = 0; r < hd; r++) {
        double acc = 0.0;
        for (int j = 0; j < hd; j++) acc += (double)V[(size_t)j * hd + r] * y[j];
        xhat[r] = (float)((double)mu[r] + acc);
    }
}

mpq_status mpq_kv_saq_quantize(const mpq_kv_saq *s, int layer, bool key, int rate_q, float *x, int64_t n,
                               mpq_err *err) {
    if (!s || !x || n < 0) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq quantize: bad argument");
    if (!s->fitted[(size_t)layer * 2 + (key ? 0 : 1)])
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq quantize: block %d %s not fitted", layer,
                           key ? "keys" : "values");
    const int hd = s->head_dim, nh = s->n_kv_heads;
    int *bits = malloc((size_t)nh * hd * sizeof(int));
    bool *scaled = malloc((size_t)nh * sizeof(bool));
    uint32_t *codes = malloc((size_t)hd * sizeof(uint32_t));
    mpq_status st = MPQ_OK;
    if (!bits || !codes || !scaled) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq quantize: out of memory");
        goto done;
    }
    for (int h = 0; h < nh && st == MPQ_OK; h++) st = mpq_kv_saq_plan(s, layer, key, h, rate_q, bits + (size_t)h * hd, &scaled[h], NULL, err);
    if (st != MPQ_OK) goto done;
    for (int64_t i = 0; i < n; i++)
        for (int h = 0; h < nh; h++) {
            float *v = x + (size_t)i * (size_t)(nh * hd) + (size_t)h * hd;
            mpq_kv_saq_code_vector(s, layer, key, h, bits + (size_t)h * hd, scaled[h], v, codes, v);
        }
done:
    free(bits);
    free(scaled);
    free(codes);
    return st;
}

mpq_status mpq_kv_saq_prefix_ratio(const mpq_kv_saq *s, int layer, bool key, int hi, int b, const float *x,
                                   int64_t n, double *ratio, mpq_err *err) {
    if (!s || !x || !ratio || n < 1 || layer < 0 || layer >= s->n_layers || b < 1 || hi <= b || hi > SAQ_MAX_BITS)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq prefix: bad argument (block %d, widths %d -> %d)", layer, hi, b);
    const int hd = s->head_dim, nh = s->n_kv_heads;
    double e_pre = 0.0, e_nat = 0.0;
    for (int h = 0; h < nh; h++) {
        const size_t u = unit(s, layer, key, h);
        const float *mu = s->mean + u * (size_t)hd, *V = s->basis + u * (size_t)hd * hd;
        const float *stp = s->step + u * (size_t)hd * SAQ_MAX_BITS;
        for (int64_t i = 0; i < n; i++) {
            const float *v = x + (size_t)i * (size_t)(nh * hd) + (size_t)h * hd;
            for (int j = 0; j < hd; j++) {
                double y = 0.0;
                for (int r = 0; r < hd; r++) y += (double)V[(size_t)j * hd + r] * ((double)v[r] - (double)mu[r]);
                double sh = (double)stp[(size_t)j * SAQ_MAX_BITS + (size_t)(hi - 1)];
                double sb = (double)stp[(size_t)j * SAQ_MAX_BITS + (size_t)(b - 1)];
                uint32_t q = saq_code(y, sh, hi) >> (hi - b); /* the top b bits */
                double dp = y - saq_level(q, sh * (double)(1u << (hi - b)), b);
                double dn = y - saq_level(saq_code(y, sb, b), sb, b);
                e_pre += dp * dp;
                e_nat += dn * dn;
            }
        }
    }
    *ratio = e_nat > 0.0 ? e_pre / e_nat : (e_pre > 0.0 ? INFINITY : 1.0);
    return MPQ_OK;
}

/* ---------------- bases file ---------------- */

static cJSON *float_array(const float *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *x = cJSON_CreateNumber((double)v[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static cJSON *double_array(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *x = cJSON_CreateNumber(v[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static bool add_arr(cJSON *o, const char *k, cJSON *a) {
    if (!a) return false;
    if (!cJSON_AddItemToObject(o, k, a)) {
        cJSON_Delete(a);
        return false;
    }
    return true;
}

mpq_status mpq_kv_saq_to_json(const mpq_kv_saq *s, char **out, mpq_err *err) {
    if (!s || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq to json: NULL argument");
    *out = NULL;
    const int hd = s->head_dim;
    cJSON *root = cJSON_CreateObject(), *layers = NULL;
    bool ok = root && cJSON_AddNumberToObject(root, "mpq_kv_saq_version", 1) &&
              cJSON_AddNumberToObject(root, "n_layers", s->n_layers) &&
              cJSON_AddNumberToObject(root, "n_kv_heads", s->n_kv_heads) && cJSON_AddNumberToObject(root, "head_dim", hd) &&
              (layers = cJSON_AddArrayToObject(root, "layers")) != NULL;
    for (int l = 0; ok && l < s->n_layers; l++) {
        cJSON *lo = cJSON_CreateObject();
        ok = lo && cJSON_AddItemToArray(layers, lo);
        if (!ok) {
            cJSON_Delete(lo);
            break;
        }
        for (int kind = 0; ok && kind < 2; kind++) {
            cJSON *heads = cJSON_AddArrayToObject(lo, kind == 0 ? "k" : "v");
            ok = heads != NULL;
            for (int h = 0; ok && h < s->n_kv_heads; h++) {
                size_t u = unit(s, l, kind == 0, h);
                cJSON *ho = cJSON_CreateObject();
                ok = ho && cJSON_AddItemToArray(heads, ho);
                if (!ok) {
                    cJSON_Delete(ho);
                    break;
                }
                ok = add_arr(ho, "mean", float_array(s->mean + u * hd, hd)) &&
                     add_arr(ho, "eigenvalues", float_array(s->eig + u * hd, hd)) &&
                     add_arr(ho, "basis", float_array(s->basis + u * hd * hd, hd * hd)) &&
                     add_arr(ho, "steps", float_array(s->step + u * hd * SAQ_MAX_BITS, hd * SAQ_MAX_BITS)) &&
                     add_arr(ho, "mse", double_array(s->mse + u * hd * (SAQ_MAX_BITS + 1), hd * (SAQ_MAX_BITS + 1))) &&
                     add_arr(ho, "steps_scaled", float_array(s->step_s + u * hd * SAQ_MAX_BITS, hd * SAQ_MAX_BITS)) &&
                     add_arr(ho, "mse_scaled",
                             double_array(s->mse_s + u * hd * (SAQ_MAX_BITS + 1), hd * (SAQ_MAX_BITS + 1)));
            }
        }
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq bases: out of memory");
    *out = text;
    return MPQ_OK;
}

mpq_status mpq_kv_saq_save(const mpq_kv_saq *s, const char *path, mpq_err *err) {
    if (!s || !path) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq save: NULL argument");
    char *text = NULL;
    FILE *f = NULL;
    mpq_status st = mpq_kv_saq_to_json(s, &text, err);
    if (st != MPQ_OK) {
        mpq_err_prefix(err, "%s", path);
        return st;
    }
    f = fopen(path, "wb");
    if (!f) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    size_t len = strlen(text);
    if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF)
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
done:
    if (f && fclose(f) != 0 && st == MPQ_OK) st = mpq_err_set(err, MPQ_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    free(text);
    return st;
}

static bool json_int(const cJSON *o, const char *k, long *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!(d >= -2147483647.0 && d <= 2147483647.0) || d != floor(d)) return false;
    *out = (long)d;
    return true;
}

/* reads key k of o: an array of exactly n finite numbers >= lo into fl (float) or db (double) */
static mpq_status read_arr(const cJSON *o, const char *k, int n, double lo, float *fl, double *db, const char *path,
                           int l, const char *kind, int h, mpq_err *err) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: layers[%d].%s[%d].%s: expected an array of %d numbers", path, l,
                           kind, h, k, n);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) {
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < lo ||
            (fl && !isfinite((float)x->valuedouble)))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: layers[%d].%s[%d].%s[%d]: expected a finite number >= %g",
                               path, l, kind, h, k, i, lo);
        if (fl) fl[i] = (float)x->valuedouble;
        else db[i] = x->valuedouble;
        i++;
    }
    return MPQ_OK;
}

mpq_status mpq_kv_saq_load(const char *path, mpq_kv_saq **out, mpq_err *err) {
    if (!out || !path) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq load: NULL argument");
    *out = NULL;
    char *buf = NULL;
    size_t n = 0;
    mpq_status st = mpq_file_read_text(path, SAQ_FILE_MAX, "a bases file", &buf, &n, err);
    if (st != MPQ_OK) return st;
    st = mpq_kv_saq_from_json(buf, n, path, out, err);
    free(buf);
    return st;
}

mpq_status mpq_kv_saq_from_json(const char *buf, size_t n, const char *path, mpq_kv_saq **out, mpq_err *err) {
    if (!out || !buf || !path) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq from json: NULL argument");
    *out = NULL;
    mpq_status st = MPQ_OK;
    cJSON *root = NULL;
    mpq_kv_saq *s = NULL;
    if (memchr(buf, '\0', n)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: NUL byte; not a JSON text", path);
        goto done;
    }
    root = cJSON_ParseWithLength(buf, n);
    if (!cJSON_IsObject(root)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    long ver = 0, nl = 0, nh = 0, hd = 0;
    if (!json_int(root, "mpq_kv_saq_version", &ver) || ver < 1) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: mpq_kv_saq_version: expected an integer >= 1", path);
        goto done;
    }
    if (ver > 1) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: mpq_kv_saq_version %ld is newer than this mpq (1)", path, ver);
        goto done;
    }
    if (!json_int(root, "n_layers", &nl) || !json_int(root, "n_kv_heads", &nh) || !json_int(root, "head_dim", &hd) ||
        nl < 1 || nl > 4096 || nh < 1 || nh > 1024 || hd < 2 || hd > 1024) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT,
                         "%s: n_layers (1..4096), n_kv_heads (1..1024), head_dim (2..1024): expected integers in range",
                         path);
        goto done;
    }
    if ((st = mpq_kv_saq_create((int)nl, (int)nh, (int)hd, &s, err)) != MPQ_OK) goto done;
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != (int)nl) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: layers: expected an array of %ld blocks", path, nl);
        goto done;
    }
    int l = 0;
    const cJSON *lo;
    cJSON_ArrayForEach(lo, layers) {
        for (int kind = 0; kind < 2; kind++) {
            const char *kn = kind == 0 ? "k" : "v";
            const cJSON *heads = cJSON_IsObject(lo) ? cJSON_GetObjectItemCaseSensitive(lo, kn) : NULL;
            if (!cJSON_IsArray(heads) || cJSON_GetArraySize(heads) != (int)nh) {
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: layers[%d].%s: expected an array of %ld KV heads", path, l, kn,
                                 nh);
                goto done;
            }
            int h = 0;
            const cJSON *ho;
            cJSON_ArrayForEach(ho, heads) {
                size_t u = unit(s, l, kind == 0, h);
                int d = (int)hd;
                if ((st = read_arr(ho, "mean", d, -INFINITY, s->mean + u * d, NULL, path, l, kn, h, err)) != MPQ_OK ||
                    (st = read_arr(ho, "eigenvalues", d, 0.0, s->eig + u * d, NULL, path, l, kn, h, err)) != MPQ_OK ||
                    (st = read_arr(ho, "basis", d * d, -INFINITY, s->basis + u * d * d, NULL, path, l, kn, h, err)) !=
                        MPQ_OK ||
                    (st = read_arr(ho, "steps", d * SAQ_MAX_BITS, 0.0, s->step + u * d * SAQ_MAX_BITS, NULL, path, l, kn,
                                   h, err)) != MPQ_OK ||
                    (st = read_arr(ho, "mse", d * (SAQ_MAX_BITS + 1), 0.0, NULL,
                                   s->mse + u * d * (SAQ_MAX_BITS + 1), path, l, kn, h, err)) != MPQ_OK ||
                    (st = read_arr(ho, "steps_scaled", d * SAQ_MAX_BITS, 0.0, s->step_s + u * d * SAQ_MAX_BITS, NULL,
                                   path, l, kn, h, err)) != MPQ_OK ||
                    (st = read_arr(ho, "mse_scaled", d * (SAQ_MAX_BITS + 1), 0.0, NULL,
                                   s->mse_s + u * d * (SAQ_MAX_BITS + 1), path, l, kn, h, err)) != MPQ_OK)
                    goto done;
                for (int i = 0; i < d * SAQ_MAX_BITS; i++)
                    if (!(s->step[u * d * SAQ_MAX_BITS + (size_t)i] > 0.0f) ||
                        !(s->step_s[u * d * SAQ_MAX_BITS + (size_t)i] > 0.0f)) {
                        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: layers[%d].%s[%d].steps[%d]: expected a step > 0", path,
                                         l, kn, h, i);
                        goto done;
                    }
                h++;
            }
            s->fitted[(size_t)l * 2 + (size_t)kind] = true;
        }
        l++;
    }
    *out = s;
    s = NULL;
done:
    cJSON_Delete(root);
    mpq_kv_saq_free(s);
    return st;
}
