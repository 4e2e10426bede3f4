/* kernels.c - forward kernels of the reference executor and the KV-cache quantization
 * emulation. Reference: llama2.c run.c (RMSNorm, interleaved RoPE, GQA attention, SwiGLU),
 * llm.c train_gpt2.c (batched (B,T) layout, kernel naming), KIVI (per-channel keys /
 * per-token values, groups, full-precision residual window). Every matrix product goes
 * through cblas_sgemm. */
#include "exec/exec_kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void encoder_forward(float *out, const int *tokens, const float *emb, int N, int C) {
    // out (N,C), tokens (N), emb (V,C)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, emb + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps) {
    // out (N,C), rstd (N), inp (N,C), weight (C)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int i = 0; i < C; i++) o[i] = weight[i] * (r * x[i]);
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

void kv_quantize_forward(float *dst, const float *src, int B, int T, int kv_dim, int bits, bool key,
                         const mpq_kv_scheme *s) {
    // dst, src (B,T,kv_dim)
    size_t n = (size_t)B * T * kv_dim;
    memcpy(dst, src, n * sizeof(float));
    int G = s->group_size;
    /* one group: min-max RTN, or RTN + CAQ code adjustment with a least-squares refit */
    void (*quant)(float *, size_t, size_t, int) = s->caq ? mpq_quant_caq_minmax : mpq_quant_rtn_minmax;
    if (key && s->mode == MPQ_KV_KIVI) {
        /* each channel over complete groups of G tokens (stride kv_dim) */
        for (int b = 0; b < B; b++)
            for (int g0 = 0; g0 + G <= T; g0 += G) {
                float *blk = dst + ((size_t)b * T + g0) * kv_dim;
                for (int c = 0; c < kv_dim; c++) quant(blk + c, (size_t)G, (size_t)kv_dim, bits);
            }
    } else {
        /* each token's vector in groups of G consecutive channels, last group partial */
        for (size_t r = 0; r < (size_t)B * T; r++) {
            float *row = dst + r * kv_dim;
            for (int c0 = 0; c0 < kv_dim; c0 += G) {
                int len = kv_dim - c0 < G ? kv_dim - c0 : G;
                quant(row + c0, (size_t)len, 1, bits);
            }
        }
    }
}

/* For keys or values: 1 if every query reads every token quantized, -1 if none does, 0 mixed. */
static int quant_coverage(int T, bool key, const mpq_kv_scheme *s) {
    bool all = true, none = true;
    for (int t = 0; t < T; t++) {
        int nq = kv_n_quant(t, key, s);
        if (nq != t + 1) all = false;
        if (nq != 0) none = false;
    }
    return all ? 1 : (none ? -1 : 0);
}

void attention_forward(float *out, float *att, float *scratch, const float *q, const float *k,
                       const float *v, const float *kq, const float *vq, const mpq_kv_scheme *s,
                       int B, int T, int NH, int NKV, int hd) {
    // out (B,T,NH*hd), att (B,NH,T,T), scratch (2,T,T), q (B,T,NH*hd), k/v/kq/vq (B,T,NKV*hd)
    const int qd = NH * hd, kvd = NKV * hd, rep = NH / NKV;
    const float scale = (float)(1.0 / sqrt((double)hd));
    int kcov = kq ? quant_coverage(T, true, s) : -1;
    int vcov = vq ? quant_coverage(T, false, s) : -1;
    float *S2 = scratch, *P2 = scratch + (size_t)T * T;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kh = h / rep;
            const float *Q = q + (size_t)b * T * qd + (size_t)h * hd;
            size_t kvoff = (size_t)b * T * kvd + (size_t)kh * hd;
            float *A = att + ((size_t)b * NH + h) * (size_t)T * T;
            float *O = out + (size_t)b * T * qd + (size_t)h * hd;
            /* scores A (T,T) = scale * Q (T,hd) @ K^T (hd,T) */
            const float *K1 = (kcov == 1 || kcov == 0) ? kq + kvoff : k + kvoff;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, Q, qd, K1, kvd, 0.0f,
                        A, T);
            if (kcov == 0) { /* mixed: FP scores for tokens after the quantized prefix */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, Q, qd, k + kvoff,
                            kvd, 0.0f, S2, T);
                for (int t = 0; t < T; t++)
                    for (int j = kv_n_quant(t, true, s); j <= t; j++) A[(size_t)t * T + j] = S2[(size_t)t * T + j];
            }
            /* causal softmax per row */
            for (int t = 0; t < T; t++) {
                float *a = A + (size_t)t * T;
                float mx = a[0];
                for (int j = 1; j <= t; j++) mx = a[j] > mx ? a[j] : mx;
                double sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    a[j] = expf(a[j] - mx);
                    sum += a[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= t; j++) a[j] *= inv;
                for (int j = t + 1; j < T; j++) a[j] = 0.0f;
            }
            /* out O (T,hd) = A (T,T) @ V (T,hd) */
            if (vcov == -1) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, A, T, v + kvoff, kvd,
                            0.0f, O, qd);
            } else if (vcov == 1) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, A, T, vq + kvoff, kvd,
                            0.0f, O, qd);
            } else { /* split A into the quantized prefix (S2) and the FP rest (P2) */
                for (int t = 0; t < T; t++) {
                    int nq = kv_n_quant(t, false, s);
                    const float *a = A + (size_t)t * T;
                    float *p1 = S2 + (size_t)t * T, *p2 = P2 + (size_t)t * T;
                    for (int j = 0; j < T; j++) {
                        p1[j] = j < nq ? a[j] : 0.0f;
                        p2[j] = j < nq ? 0.0f : a[j];
                    }
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, S2, T, vq + kvoff, kvd,
                            0.0f, O, qd);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, P2, T, v + kvoff, kvd,
                            1.0f, O, qd);
            }
        }
    }
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    // out, gate, up (N,H) flattened to n
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

int logsoftmax_forward(float *out, const float *logits, int V) {
    // out (V), logits (V)
    int am = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[am]) am = i;
    double mx = logits[am], sum = 0.0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    for (int i = 0; i < V; i++) out[i] = (float)((double)logits[i] - lse);
    return am;
}
