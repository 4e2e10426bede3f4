/* kernels.c - forward kernels of the reference executor and the KV-cache quantization
 * emulation. Reference: llama2.c run.c (RMSNorm, interleaved RoPE, GQA attention, SwiGLU),
 * llm.c train_gpt2.c (batched (B,T) layout, kernel naming), KIVI (per-channel keys /
 * per-token values, groups, full-precision residual window), Cody & Waite's two-constant
 * range reduction for exp (as in Cephes expf). Causal attention in query blocks that read keys
 * up to the block's last row only. Every matrix product goes through cblas_sgemm. */
#include "exec/exec_kernels.h"
#include "quant/quant_rtn.h"
#include "util/vec_clones.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

void encoder_forward(float *out, const int *tokens, const float *emb, int N, int C) {
    // out (N,C), tokens (N), emb (V,C)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, emb + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
}

/* 1/sqrt(ss/C + eps) in double, rounded to float. */
static inline float rms_rstd(double ss, int C, float eps) { return (float)(1.0 / sqrt(ss / C + (double)eps)); }

/* o (C) = weight * (r * x). */
static inline void rms_row(float *o, const float *x, const float *weight, float r, int C) {
    for (int i = 0; i < C; i++) o[i] = weight[i] * (r * x[i]);
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps) {
    // out (N,C), rstd (N), inp (N,C), weight (C)
    /* each row's sum of squares in double in index order; four rows at a time, so that the four
     * dependency chains of additions overlap (the same operations per row, the same bits) */
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const float *x0 = inp + (size_t)n * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        for (int i = 0; i < C; i++) {
            s0 += (double)x0[i] * x0[i];
            s1 += (double)x1[i] * x1[i];
            s2 += (double)x2[i] * x2[i];
            s3 += (double)x3[i] * x3[i];
        }
        const double ss[4] = {s0, s1, s2, s3};
        for (int k = 0; k < 4; k++) {
            float r = rms_rstd(ss[k], C, eps);
            rms_row(out + (size_t)(n + k) * C, inp + (size_t)(n + k) * C, weight, r, C);
            rstd[n + k] = r;
        }
    }
    for (; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = rms_rstd(ss, C, eps);
        rms_row(out + (size_t)n * C, x, weight, r, C);
        rstd[n] = r;
    }
}

void matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                    int OC) {
    // out (N,OC), inp (N,C), w (OC,C), bias (OC) or NULL
    float beta = 0.0f;
    if (bias) {
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

void rope_forward(float *x, const float *cos_tab, const float *sin_tab, int B, int T, int n_heads,
                  int hd) {
    // x (B,T,n_heads*hd) in place; cos_tab/sin_tab (seq_len, hd/2)
    int half = hd / 2;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *row = x + ((size_t)b * T + t) * (size_t)n_heads * hd;
            const float *cs = cos_tab + (size_t)t * half;
            const float *sn = sin_tab + (size_t)t * half;
            for (int h = 0; h < n_heads; h++) {
                float *v = row + (size_t)h * hd;
                for (int i = 0; i < half; i++) {
                    float v0 = v[2 * i], v1 = v[2 * i + 1];
                    v[2 * i] = v0 * cs[i] - v1 * sn[i];
                    v[2 * i + 1] = v0 * sn[i] + v1 * cs[i];
                }
            }
        }
    }
}

int kv_n_quant(int t, bool key, const mpq_kv_scheme *s) {
    int n = t + 1 - s->residual; /* tokens j <= t - R */
    if (n < 0) n = 0;
    if (key && s->mode == MPQ_KV_KIVI) {
        int complete = ((t + 1) / s->group_size) * s->group_size; /* tokens of complete groups */
        if (complete < n) n = complete;
    }
    return n;
}

/* Per-token groups of G consecutive channels of the row segment src[0..len) into dst: RTN groups
 * batched (mpq_quant_rtn_minmax_groups), the last group partial. */
static void quant_token_groups(float *dst, const float *src, int len, int G, int bits) {
    const int full = len / G;
    const size_t off = (size_t)full * G;
    mpq_quant_rtn_minmax_groups(dst, src, (size_t)full, (size_t)G, bits);
    if (len > full * G) mpq_quant_rtn_minmax_groups(dst + off, src + off, 1, (size_t)(len - full * G), bits);
}

void kv_quantize_forward(float *dst, const float *src, int B, int T, int kv_dim, int bits, bool key,
                         const mpq_kv_scheme *s) {
    // dst, src (B,T,kv_dim)
    size_t n = (size_t)B * T * kv_dim;
    int G = s->group_size;
    if (s->caq) { /* RTN + CAQ code adjustment with a least-squares refit, one group at a time */
        memcpy(dst, src, n * sizeof(float));
        if (key && s->mode == MPQ_KV_KIVI) {
            for (int b = 0; b < B; b++)
                for (int g0 = 0; g0 + G <= T; g0 += G) {
                    float *blk = dst + ((size_t)b * T + g0) * kv_dim;
                    for (int c = 0; c < kv_dim; c++) mpq_quant_caq_minmax(blk + c, (size_t)G, (size_t)kv_dim, bits);
                }
        } else {
            for (size_t r = 0; r < (size_t)B * T; r++) {
                float *row = dst + r * kv_dim;
                for (int c0 = 0; c0 < kv_dim; c0 += G) {
                    int len = kv_dim - c0 < G ? kv_dim - c0 : G;
                    mpq_quant_caq_minmax(row + c0, (size_t)len, 1, bits);
                }
            }
        }
        return;
    }
    /* min-max RTN, batched from src into dst: each group bitwise as mpq_quant_rtn_minmax on it
     * alone */
    if (key && s->mode == MPQ_KV_KIVI) {
        /* each channel over complete groups of G tokens (stride kv_dim): the kv_dim channels
         * of a token group side by side; the tokens of the unfinished group copied */
        const int full = T / G * G;
        for (int b = 0; b < B; b++) {
            const size_t r0 = (size_t)b * T * kv_dim;
            for (int g0 = 0; g0 < full; g0 += G)
                mpq_quant_rtn_minmax_lanes(dst + r0 + (size_t)g0 * kv_dim, src + r0 + (size_t)g0 * kv_dim,
                                           (size_t)kv_dim, (size_t)G, (size_t)kv_dim, bits);
            if (full < T)
                memcpy(dst + r0 + (size_t)full * kv_dim, src + r0 + (size_t)full * kv_dim,
                       (size_t)(T - full) * kv_dim * sizeof(float));
        }
    } else if (kv_dim % G == 0) {
        /* each token's vector in groups of G consecutive channels: all groups of all rows */
        mpq_quant_rtn_minmax_groups(dst, src, n / (size_t)G, (size_t)G, bits);
    } else {
        for (size_t r = 0; r < (size_t)B * T; r++) quant_token_groups(dst + r * kv_dim, src + r * kv_dim, kv_dim, G, bits);
    }
}

bool kv_quantize_heads_forward(float *dst, const float *src, int B, int T, int n_kv_heads, int hd,
                               const mpq_kv_pair *pairs, bool key, const mpq_kv_scheme *s) {
    // dst, src (B,T,n_kv_heads*hd); pairs (n_kv_heads)
    bool any = false;
    for (int h = 0; h < n_kv_heads; h++) any = any || (key ? pairs[h].k_bits : pairs[h].v_bits) < 16;
    if (!any) return false;
    const int kv_dim = n_kv_heads * hd, G = s->group_size;
    memcpy(dst, src, (size_t)B * T * kv_dim * sizeof(float));
    for (int h = 0; h < n_kv_heads; h++) {
        const int bits = key ? pairs[h].k_bits : pairs[h].v_bits;
        if (bits >= 16) continue;
        const int c_lo = h * hd, c_hi = c_lo + hd;
        if (key && s->mode == MPQ_KV_KIVI) {
            for (int b = 0; b < B; b++)
                for (int g0 = 0; g0 + G <= T; g0 += G) {
                    float *blk = dst + ((size_t)b * T + g0) * kv_dim;
                    if (s->caq)
                        for (int c = c_lo; c < c_hi; c++) mpq_quant_caq_minmax(blk + c, (size_t)G, (size_t)kv_dim, bits);
                    else
                        mpq_quant_rtn_minmax_lanes(blk + c_lo, blk + c_lo, (size_t)hd, (size_t)G, (size_t)kv_dim, bits);
                }
        } else {
            for (size_t r = 0; r < (size_t)B * T; r++) {
                float *row = dst + r * kv_dim;
                if (!s->caq) {
                    quant_token_groups(row + c_lo, row + c_lo, hd, G, bits);
                    continue;
                }
                for (int c0 = c_lo; c0 < c_hi; c0 += G) {
                    int len = c_hi - c0 < G ? c_hi - c0 : G;
                    mpq_quant_caq_minmax(row + c0, (size_t)len, 1, bits);
                }
            }
        }
    }
    return true;
}

void kv_saq_forward(float *dst, const float *src, int N, int kv_dim, int layer, int field, bool key,
                    const mpq_kv_saq *saq) {
    // dst, src (N,kv_dim)
    size_t n = (size_t)N * kv_dim;
    memcpy(dst, src, n * sizeof(float));
    if (mpq_kv_saq_quantize(saq, layer, key, mpq_kv_rate_q(field), dst, N, NULL) != MPQ_OK)
        for (size_t i = 0; i < n; i++) dst[i] = NAN;
}

/* ---- fast exp ----
 * e^x = 2^n e^r with n = rint(x log2 e) and r = x - n ln2 (Cody-Waite: ln2 = C1 + C2, C1 with 9
 * significant bits so n*C1 is exact for |n| <= 2^15 and x - n*C1 is exact by Sterbenz), |r| <=
 * ln2/2 + 1e-5; e^r by its degree-7 Taylor polynomial in Horner form; 2^n built in the exponent
 * field (1.5*2^23 rounding trick: n is read from the low mantissa bits of t). Derivation of the
 * relative error bound for x in [EXP_LO, EXP_HI] (float, round to nearest, u = 2^-24, no FMA
 * needed):
 *   truncation            |r|^8/8! e^|r| / e^r          <= 1.04e-8  = 0.17 u
 *   reduction             |err r| <= u|r| + u|n C2| + |n| |ln2 - C1 - C2|
 *                                  <= (0.347 + 0.027 + 0.028) u   = 0.40 u (relative, via e^r)
 *   Horner rounding       sum_i (2i+1) u |r|^i / i! / e^r  <= 2.394 u / 0.7071 = 3.39 u
 *                         (term i carries 2i+1 roundings; the last one is the final rounding)
 *   coefficients 1/i!     rounded to float               <= 0.01 u
 *   scaling by 2^n        exact (the result is a normal float on [EXP_LO, EXP_HI])
 *   total                                                 <= 3.97 u < EXP_FAST_MAX_REL = 2^-22
 * Outside: x < EXP_LO (e^x below FLT_MIN, including -inf) gives +0 (absolute error < FLT_MIN);
 * x > EXP_HI (= 127.5 ln2, e^x > 2.4e38) gives +inf; NaN gives NaN. Written without branches
 * and with fixed-length inner loops of EXP_LANES so that gcc -O2 vectorises them. */
#define EXP_LANES 8

static inline float exp_fast_inline(float x) {
    int below = x < EXP_FAST_LO, above = x > EXP_FAST_HI;
    float xc = mpq_vec_sel(below, EXP_FAST_LO, mpq_vec_sel(above, EXP_FAST_HI, x));
    float t = xc * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rint into the mantissa */
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t ut, bits;
    memcpy(&ut, &t, sizeof ut);
    bits = (ut - 0x4B400000u + 127u) << 23; /* (n + 127) << 23, n in -126..127 */
    float s;
    memcpy(&s, &bits, sizeof s);
    float y = p * s;
    return mpq_vec_sel(above, INFINITY, mpq_vec_sel(below, 0.0f, y));
}

float exp_fast(float x) { return exp_fast_inline(x); }

/* The loops below are also compiled for AVX2 and picked at run time, with the same bits
 * (util/vec_clones.h). */
#define VEC_CLONES MPQ_VEC_CLONES

/* x[i] = exp_fast(x[i] - shift). */
VEC_CLONES static void exp_shift_inplace(float *x, size_t n, float shift) {
    size_t i = 0;
    for (; i + EXP_LANES <= n; i += EXP_LANES)
        for (int k = 0; k < EXP_LANES; k++) x[i + k] = exp_fast_inline(x[i + k] - shift);
    for (; i < n; i++) x[i] = exp_fast_inline(x[i] - shift);
}

void exp_fast_inplace(float *x, size_t n) { exp_shift_inplace(x, n, 0.0f); }

/* Sums in double ("sum_double" order, fixed: deterministic): with n terms, term j goes to partial
 * sum j mod 4 for j < 4 floor(n/4), the rest to partial 0 in order, then (s0 + s1) + (s2 + s3).
 * The fused loops below (exp + sum, KL) add their terms in this order. */

/* x[j] = exp_fast(x[j] - shift) for j < n; returns their sum in double in sum_double order. */
VEC_CLONES static double exp_shift_inplace_sum(float *x, int n, float shift) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int j = 0;
    for (; j + EXP_LANES <= n; j += EXP_LANES) {
        for (int k = 0; k < EXP_LANES; k++) x[j + k] = exp_fast_inline(x[j + k] - shift);
        for (int k = 0; k < 4; k++) s[k] += x[j + k];
        for (int k = 0; k < 4; k++) s[k] += x[j + 4 + k];
    }
    for (; j + 4 <= n; j += 4)
        for (int k = 0; k < 4; k++) {
            x[j + k] = exp_fast_inline(x[j + k] - shift);
            s[k] += x[j + k];
        }
    for (; j < n; j++) {
        x[j] = exp_fast_inline(x[j] - shift);
        s[0] += x[j];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* sum_double of exp_fast(x[j] - shift), j < n, without storing the exponentials. */
VEC_CLONES static double exp_shift_sum(const float *x, int n, float shift) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int j = 0;
    for (; j + EXP_LANES <= n; j += EXP_LANES) {
        float e[EXP_LANES];
        for (int k = 0; k < EXP_LANES; k++) e[k] = exp_fast_inline(x[j + k] - shift);
        for (int k = 0; k < 4; k++) s[k] += e[k];
        for (int k = 0; k < 4; k++) s[k] += e[4 + k];
    }
    for (; j + 4 <= n; j += 4)
        for (int k = 0; k < 4; k++) s[k] += exp_fast_inline(x[j + k] - shift);
    for (; j < n; j++) s[0] += exp_fast_inline(x[j] - shift);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* Maximum of x[0..n), n >= 1, with 8 partial maxima (NaNs are skipped as in `a > m ? a : m`). */
VEC_CLONES static float max_float(const float *x, int n) {
    float m[8];
    for (int k = 0; k < 8; k++) m[k] = x[0];
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) m[k] = mpq_vec_sel(x[j + k] > m[k], x[j + k], m[k]);
    for (; j < n; j++) m[0] = x[j] > m[0] ? x[j] : m[0];
    float mx = m[0];
    for (int k = 1; k < 8; k++) mx = m[k] > mx ? m[k] : mx;
    return mx;
}

/* Index of the first maximum of x[0..n), n >= 1: the i that `for i: if (x[i] > x[am]) am = i`
 * from am = 0 ends with (NaNs never win; a NaN at 0 stays). */
static int argmax_first(const float *x, int n) {
    const float m = max_float(x, n);
    for (int i = 0; i < n; i++)
        if (x[i] == m) return i;
    return 0; /* m is NaN: x[0] is NaN */
}

/* Scales x[0..n) by s. */
VEC_CLONES static void scale_inplace(float *x, int n, float s) {
    int j = 0;
    for (; j + EXP_LANES <= n; j += EXP_LANES)
        for (int k = 0; k < EXP_LANES; k++) x[j + k] *= s;
    for (; j < n; j++) x[j] *= s;
}

void softmax_row_forward(float *a, int n_valid, int n_row) {
    // a (n_row): softmax over a[0..n_valid), zeros in a[n_valid..n_row)
    float mx = max_float(a, n_valid);
    float inv = (float)(1.0 / exp_shift_inplace_sum(a, n_valid, mx));
    scale_inplace(a, n_valid, inv);
    if (n_row > n_valid) memset(a + n_valid, 0, (size_t)(n_row - n_valid) * sizeof(float));
}

/* The quantized-prefix lengths of query rows t0..t1-1 (non-decreasing in t): lo = n(t0),
 * hi = n(t1-1); *mixed = some row reads an FP token among 0..t (with hi > 0: the block needs
 * both sources; with !mixed every row reads all its tokens quantized). */
static void quant_span(int t0, int t1, bool key, const mpq_kv_scheme *s, int *lo, int *hi, bool *mixed) {
    *lo = kv_n_quant(t0, key, s);
    *hi = kv_n_quant(t1 - 1, key, s);
    *mixed = false;
    for (int t = t0; t < t1; t++) {
        int nq = kv_n_quant(t, key, s);
        if (nq <= t) *mixed = true;
    }
}

void attention_forward(float *out, float *att, float *scratch, const float *q, const float *k,
                       const float *v, const float *kq, const float *vq, const mpq_kv_scheme *s,
                       int B, int T, int NH, int NKV, int hd) {
    // out (B,T,NH*hd), att (B,NH,T,T) or NULL, scratch (3, min(T,ATTN_BLOCK), T), q (B,T,NH*hd),
    // k/v/kq/vq (B,T,NKV*hd)
    const int qd = NH * hd, kvd = NKV * hd, rep = NH / NKV;
    const int bq = T < ATTN_BLOCK ? T : ATTN_BLOCK;
    const float scale = (float)(1.0 / sqrt((double)hd));
    float *P0 = scratch, *X1 = scratch + (size_t)bq * T, *X2 = scratch + 2 * (size_t)bq * T;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const int kh = h / rep;
            const float *Q = q + (size_t)b * T * qd + (size_t)h * hd;
            const size_t kvoff = (size_t)b * T * kvd + (size_t)kh * hd;
            float *A = att ? att + ((size_t)b * NH + h) * (size_t)T * T : NULL;
            float *O = out + (size_t)b * T * qd + (size_t)h * hd;
            for (int t0 = 0; t0 < T; t0 += bq) {
                const int m = T - t0 < bq ? T - t0 : bq, nk = t0 + m; /* rows t0..nk-1 read keys 0..nk-1 */
                float *S = A ? A + (size_t)t0 * T : P0;                 /* (m, nk) with row stride T */
                const float *Qb = Q + (size_t)t0 * qd;
                /* scores S = scale * Q_blk (m,hd) @ K[0..nk)^T: quantized prefix from kq, the rest FP */
                int lo = 0, hi = 0;
                bool mixed = false;
                if (kq) quant_span(t0, nk, true, s, &lo, &hi, &mixed);
                if (hi == 0) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, hd, scale, Qb, qd, k + kvoff, kvd,
                                0.0f, S, T);
                } else if (!mixed) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, hi, hd, scale, Qb, qd, kq + kvoff, kvd,
                                0.0f, S, T);
                } else {
                    /* quantized columns 0..hi-1, FP scores of columns lo..nk-1 into X1, copied where
                     * FP is read. The two products overlap in columns lo..hi-1 (at most a group of
                     * G keys per row block); covering each score once instead (the rows of a block
                     * split by their quantized-prefix length) was measured to change the last bits
                     * of the scores: OpenBLAS's sgemm result for one element depends on the shape
                     * of the product that computes it, and the stored numbers must not move. */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, hi, hd, scale, Qb, qd, kq + kvoff, kvd,
                                0.0f, S, T);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk - lo, hd, scale, Qb, qd,
                                k + kvoff + (size_t)lo * kvd, kvd, 0.0f, X1, T);
                    for (int i = 0; i < m; i++) {
                        const int t = t0 + i, j0 = kv_n_quant(t, true, s);
                        memcpy(S + (size_t)i * T + j0, X1 + (size_t)i * T + (j0 - lo), (size_t)(t + 1 - j0) * sizeof(float));
                    }
                }
                /* causal softmax per row: keys 0..t, zeros t+1..nk-1 */
                for (int i = 0; i < m; i++) softmax_row_forward(S + (size_t)i * T, t0 + i + 1, nk);
                /* out O_blk (m,hd) = S (m,nk) @ V[0..nk) (nk,hd) */
                lo = hi = 0;
                mixed = false;
                if (vq) quant_span(t0, nk, false, s, &lo, &hi, &mixed);
                if (hi == 0 || !mixed) { /* one source: FP, or quantized for every key read */
                    const float *Vs = (hi == 0 ? v : vq) + kvoff;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, nk, 1.0f, S, T, Vs, kvd, 0.0f,
                                O + (size_t)t0 * qd, qd);
                } else {
                    /* quantized prefix (columns 0..hi-1 of the probabilities, zero where row t reads
                     * FP) + FP rest (X2: columns lo..nk-1, zero where row t reads quantized). The
                     * products see the same operands whether the first one is a masked copy (X1,
                     * when the probabilities are kept in att) or the scratch row masked in place. */
                    float *P1 = A ? X1 : S;
                    for (int i = 0; i < m; i++) {
                        const int nq = kv_n_quant(t0 + i, false, s);
                        float *a = S + (size_t)i * T, *p2 = X2 + (size_t)i * T;
                        if (nq > lo) memset(p2, 0, (size_t)(nq - lo) * sizeof(float));
                        memcpy(p2 + (nq - lo), a + nq, (size_t)(nk - nq) * sizeof(float));
                        if (A) {
                            float *p1 = X1 + (size_t)i * T;
                            memcpy(p1, a, (size_t)nq * sizeof(float));
                            if (hi > nq) memset(p1 + nq, 0, (size_t)(hi - nq) * sizeof(float));
                        } else if (hi > nq) {
                            memset(a + nq, 0, (size_t)(hi - nq) * sizeof(float));
                        }
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, hi, 1.0f, P1, T, vq + kvoff, kvd,
                                0.0f, O + (size_t)t0 * qd, qd);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, nk - lo, 1.0f, X2, T,
                                v + kvoff + (size_t)lo * kvd, kvd, 1.0f, O + (size_t)t0 * qd, qd);
                }
            }
        }
    }
}

VEC_CLONES void swiglu_forward(float *restrict out, const float *restrict gate, const float *restrict up,
                               size_t n) {
    // out, gate, up (N,H) flattened to n; no overlap
    size_t i = 0;
    for (; i + EXP_LANES <= n; i += EXP_LANES)
        for (int k = 0; k < EXP_LANES; k++) {
            float g = gate[i + k];
            out[i + k] = (g / (1.0f + exp_fast_inline(-g))) * up[i + k];
        }
    for (; i < n; i++) {
        float g = gate[i];
        out[i] = (g / (1.0f + exp_fast_inline(-g))) * up[i];
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

double logsumexp_forward(const float *logits, int V, int *argmax) {
    // logits (V)
    const int am = argmax_first(logits, V);
    if (argmax) *argmax = am;
    return (double)logits[am] + log(exp_shift_sum(logits, V, logits[am]));
}

int logsoftmax_forward(float *out, const float *logits, int V) {
    // out (V), logits (V)
    int am = 0;
    const double lse = logsumexp_forward(logits, V, &am);
    for (int i = 0; i < V; i++) out[i] = (float)((double)logits[i] - lse);
    return am;
}

/* One KL term: p * ((double)lr - (double)lp) with lp = (float)((double)l - lse). */
static inline double kl_term(double p, float lr, float l, double lse) {
    const float lp = (float)((double)l - lse);
    return p * ((double)lr - (double)lp);
}

VEC_CLONES double kl_row_forward(const double *p, const float *lr, const float *logits, double lse, int V) {
    // p (V) or NULL, lr (V), logits (V)
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    if (p) {
        for (; i + 4 <= V; i += 4)
            for (int k = 0; k < 4; k++) s[k] += kl_term(p[i + k], lr[i + k], logits[i + k], lse);
        for (; i < V; i++) s[0] += kl_term(p[i], lr[i], logits[i], lse);
    } else {
        for (; i + 4 <= V; i += 4)
            for (int k = 0; k < 4; k++)
                s[k] += kl_term((double)exp_fast_inline(lr[i + k]), lr[i + k], logits[i + k], lse);
        for (; i < V; i++) s[0] += kl_term((double)exp_fast_inline(lr[i]), lr[i], logits[i], lse);
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

int argmax_forward(const float *x, int n) { return argmax_first(x, n); }
