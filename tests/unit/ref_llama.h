/* ref_llama.h - independent double-precision scalar reference of the LLaMA forward pass and
 * its mean next-token cross-entropy (llama2.c semantics: RMSNorm, interleaved RoPE, causal
 * GQA attention, SwiGLU, q/k/v biases when present), used by test_backward.c and
 * test_hessian.c as the function whose central / second differences check the analytic
 * gradient and Hessian. Naive loops, no BLAS, all in double. Test-only. */
#ifndef MPQ_TEST_REF_LLAMA_H
#define MPQ_TEST_REF_LLAMA_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_model.h"
#include "mpq/mpq_rng.h"
#include "model/model_internal.h"

/* o (N,C) = x * rstd * w */
static inline void rd_rmsnorm(double *o, const double *x, const double *w, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        const double *xr = x + (size_t)n * C;
        double ss = 0;
        for (int i = 0; i < C; i++) ss += xr[i] * xr[i];
        double r = 1.0 / sqrt(ss / C + eps);
        for (int i = 0; i < C; i++) o[(size_t)n * C + i] = w[i] * xr[i] * r;
    }
}

/* o (N,OC) = x (N,C) @ w^T (w (OC,C)) + b */
static inline void rd_matmul(double *o, const double *x, const double *w, const double *b, int N, int C, int OC) {
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OC; j++) {
            double s = b ? b[j] : 0.0;
            for (int i = 0; i < C; i++) s += x[(size_t)n * C + i] * w[(size_t)j * C + i];
            o[(size_t)n * OC + j] = s;
        }
}

/* in place, x (B,T,nh*hd); angle t * theta^(-2i/hd) */
static inline void rd_rope(double *x, int B, int T, int nh, int hd, double theta) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < hd / 2; i++) {
                    double f = pow(theta, -(double)(2 * i) / hd), c = cos(t * f), s = sin(t * f);
                    double *v = x + ((size_t)b * T + t) * (size_t)nh * hd + (size_t)h * hd + 2 * i;
                    double v0 = v[0], v1 = v[1];
                    v[0] = v0 * c - v1 * s;
                    v[1] = v0 * s + v1 * c;
                }
}

/* out (B,T,NH*hd) = causal softmax(q k^T / sqrt(hd)) v, k/v (B,T,NKV*hd) */
static inline void rd_attention(double *out, const double *q, const double *k, const double *v, int B, int T, int NH,
                                int NKV, int hd) {
    int qd = NH * hd, kvd = NKV * hd, rep = NH / NKV;
    double *a = malloc((size_t)T * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const double *qr = q + ((size_t)b * T + t) * qd + (size_t)h * hd;
                double mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    const double *kr = k + ((size_t)b * T + j) * kvd + (size_t)(h / rep) * hd;
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += qr[i] * kr[i];
                    a[j] = s / sqrt((double)hd);
                    if (a[j] > mx) mx = a[j];
                }
                double sum = 0;
                for (int j = 0; j <= t; j++) sum += (a[j] = exp(a[j] - mx));
                double *o = out + ((size_t)b * T + t) * qd + (size_t)h * hd;
                for (int i = 0; i < hd; i++) o[i] = 0;
                for (int j = 0; j <= t; j++) {
                    const double *vr = v + ((size_t)b * T + j) * kvd + (size_t)(h / rep) * hd;
                    for (int i = 0; i < hd; i++) o[i] += a[j] / sum * vr[i];
                }
            }
    free(a);
}

static inline void rd_swiglu(double *o, const double *g, const double *u, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
}

/* mean over N rows of -log softmax(logits)[target] */
static inline double rd_xent(const double *logits, const int *targets, int N, int V) {
    double tot = 0;
    for (int n = 0; n < N; n++) {
        const double *l = logits + (size_t)n * V;
        double mx = l[0];
        for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        double s = 0;
        for (int i = 0; i < V; i++) s += exp(l[i] - mx);
        tot -= l[targets[n]] - mx - log(s);
    }
    return tot / N;
}

/* Pointer into the double copy wd of a weights block, for the float tensor p of layout. */
#define RD_AT(layout, wd, p) ((p) ? (wd) + ((p) - (layout)->data) : NULL)

/* Mean cross-entropy of tokens (B, T+1) under the weights wd (doubles, same flat layout as
 * `layout`, e.g. converted from layout->data). */
static inline double rd_model_loss(const mpq_model_config *c, const mpq_weights *layout, const double *wd,
                                   const int *tokens, int B, int T) {
    const int N = B * T, D = c->dim, H = c->hidden_dim, hd = c->head_dim, qd = c->n_heads * hd,
              kvd = c->n_kv_heads * hd, V = c->vocab_size;
    double *x = malloc((size_t)N * D * sizeof(double)), *xb = malloc((size_t)N * D * sizeof(double));
    double *q = malloc((size_t)N * qd * sizeof(double)), *k = malloc((size_t)N * kvd * sizeof(double));
    double *v = malloc((size_t)N * kvd * sizeof(double)), *ao = malloc((size_t)N * qd * sizeof(double));
    double *g = malloc((size_t)N * H * sizeof(double)), *u = malloc((size_t)N * H * sizeof(double));
    double *lg = malloc((size_t)N * V * sizeof(double));
    int *tgt = malloc((size_t)N * sizeof(int));
    const double *emb = RD_AT(layout, wd, layout->tok_emb);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int id = tokens[(size_t)b * (T + 1) + t];
            memcpy(x + ((size_t)b * T + t) * D, emb + (size_t)id * D, (size_t)D * sizeof(double));
            tgt[b * T + t] = tokens[(size_t)b * (T + 1) + t + 1];
        }
    for (int l = 0; l < c->n_layers; l++) {
        const mpq_block_weights *bw = &layout->blocks[l];
        rd_rmsnorm(xb, x, RD_AT(layout, wd, bw->attn_norm), N, D, c->norm_eps);
        rd_matmul(q, xb, RD_AT(layout, wd, bw->wq), RD_AT(layout, wd, bw->bq), N, D, qd);
        rd_matmul(k, xb, RD_AT(layout, wd, bw->wk), RD_AT(layout, wd, bw->bk), N, D, kvd);
        rd_matmul(v, xb, RD_AT(layout, wd, bw->wv), RD_AT(layout, wd, bw->bv), N, D, kvd);
        rd_rope(q, B, T, c->n_heads, hd, c->rope_theta);
        rd_rope(k, B, T, c->n_kv_heads, hd, c->rope_theta);
        rd_attention(ao, q, k, v, B, T, c->n_heads, c->n_kv_heads, hd);
        rd_matmul(xb, ao, RD_AT(layout, wd, bw->wo), NULL, N, qd, D);
        for (size_t i = 0; i < (size_t)N * D; i++) x[i] += xb[i];
        rd_rmsnorm(xb, x, RD_AT(layout, wd, bw->ffn_norm), N, D, c->norm_eps);
        rd_matmul(g, xb, RD_AT(layout, wd, bw->w_gate), NULL, N, D, H);
        rd_matmul(u, xb, RD_AT(layout, wd, bw->w_up), NULL, N, D, H);
        rd_swiglu(g, g, u, (size_t)N * H);
        rd_matmul(xb, g, RD_AT(layout, wd, bw->w_down), NULL, N, H, D);
        for (size_t i = 0; i < (size_t)N * D; i++) x[i] += xb[i];
    }
    rd_rmsnorm(xb, x, RD_AT(layout, wd, layout->final_norm), N, D, c->norm_eps);
    rd_matmul(lg, xb, RD_AT(layout, wd, layout->classifier), NULL, N, D, V);
    double loss = rd_xent(lg, tgt, N, V);
    free(x); free(xb); free(q); free(k); free(v); free(ao); free(g); free(u); free(lg); free(tgt);
    return loss;
}

/* A double copy of a float weights block (caller frees). */
static inline double *rd_weights_to_double(const mpq_weights *w) {
    double *d = malloc(w->n_floats * sizeof(double));
    for (size_t i = 0; i < w->n_floats; i++) d[i] = w->data[i];
    return d;
}

/* splitmix64 step (test RNG: the stream of mpq_rng.h). */
static inline uint64_t rd_rng(uint64_t *s) { return mpq_rng_splitmix64(s); }
/* uniform in [-a, a) */
static inline double rd_unif(uint64_t *s, double a) { return a * (2.0 * (double)(rd_rng(s) >> 11) / 9007199254740992.0 - 1.0); }

/* A tiny llama model built in memory: dim 8, hidden 16, 1 layer, 2 query heads sharing 1 KV
 * head (GQA), vocab 16, seq_len 16, shared classifier, optional q/k/v biases. Weights uniform:
 * matrices U(-0.5,0.5), embeddings U(-1,1), norm gains 1 + U(-0.2,0.2), biases U(-0.2,0.2).
 * NULL on failure. */
static inline mpq_model *rd_tiny_model(bool bias, uint64_t seed) {
    mpq_model_config c;
    memset(&c, 0, sizeof c);
    c.dim = 8; c.hidden_dim = 16; c.n_layers = 1; c.n_heads = 2; c.n_kv_heads = 1; c.vocab_size = 16;
    c.seq_len = 16; c.rope_theta = 10000.0f; c.norm_eps = 1e-5f; c.shared_classifier = true; c.qkv_bias = bias;
    memcpy(c.source_dtype, "F32", 4);
    mpq_model *m = NULL;
    if (mpq_model_check_config(&c, "tiny", NULL) != MPQ_OK || mpq_model_create(&c, "tiny", MPQ_WEIGHTS_F32, &m, NULL) != MPQ_OK)
        return NULL;
    mpq_weights *w = &m->w;
    uint64_t s = seed;
    for (size_t i = 0; i < w->n_floats; i++) w->data[i] = (float)rd_unif(&s, 0.5);
    for (size_t i = 0; i < (size_t)c.vocab_size * c.dim; i++) w->tok_emb[i] = (float)rd_unif(&s, 1.0);
    for (int l = 0; l < c.n_layers; l++)
        for (int i = 0; i < c.dim; i++) {
            w->blocks[l].attn_norm[i] = (float)(1.0 + rd_unif(&s, 0.2));
            w->blocks[l].ffn_norm[i] = (float)(1.0 + rd_unif(&s, 0.2));
        }
    for (int i = 0; i < c.dim; i++) w->final_norm[i] = (float)(1.0 + rd_unif(&s, 0.2));
    if (bias)
        for (int l = 0; l < c.n_layers; l++) {
            for (int i = 0; i < c.n_heads * c.head_dim; i++) w->blocks[l].bq[i] = (float)rd_unif(&s, 0.2);
            for (int i = 0; i < c.n_kv_heads * c.head_dim; i++) {
                w->blocks[l].bk[i] = (float)rd_unif(&s, 0.2);
                w->blocks[l].bv[i] = (float)rd_unif(&s, 0.2);
            }
        }
    return m;
}

#endif
