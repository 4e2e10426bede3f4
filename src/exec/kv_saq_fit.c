/*
 * kv_saq_fit.c - fits the SAQ KV bases (mpq_kv_saq, mpq_quant.h) of a model from the keys
 * (before RoPE) and values of its full-precision forward over calibration windows.
 * k = X Wk^T (+ bk) and v = X Wv^T (+ bv) are recomputed from the captured input X of
 * attn_k / attn_v (the same product the executor forms), so the executor is not changed.
 */
#include "mpq/mpq_exec.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

typedef struct fit_ctx {
    const mpq_model *model;
    const mpq_weights *w;
    int kvd;
    int64_t rows_per_layer; /* capacity */
    int64_t *n_k, *n_v;     /* rows stored per block */
    float **k, **v;         /* per block (rows, kvd) */
    float *wscratch;        /* (kvd, dim): Wk or Wv widened when held in 16 bits */
} fit_ctx;

static void fit_capture(void *user, int idx, const float *x, int64_t rows, int64_t cols) {
    fit_ctx *c = user;
    const mpq_layer_info *li = mpq_model_linear(c->model, idx);
    if (!li || (li->kind != MPQ_LAYER_ATTN_K && li->kind != MPQ_LAYER_ATTN_V)) return;
    bool key = li->kind == MPQ_LAYER_ATTN_K;
    int l = li->block;
    int64_t *n = key ? &c->n_k[l] : &c->n_v[l];
    if (*n + rows > c->rows_per_layer) return; /* cannot happen: capacity = all windows */
    float *dst = (key ? c->k[l] : c->v[l]) + (size_t)*n * (size_t)c->kvd;
    const mpq_block_weights *bw = &c->w->blocks[l];
    const float *wm = mpq_weights_linear_f32(c->w, li, c->wscratch), *bias = key ? bw->bk : bw->bv;
    for (int64_t r = 0; r < rows; r++)
        if (bias) memcpy(dst + (size_t)r * c->kvd, bias, (size_t)c->kvd * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, c->kvd, (int)cols, 1.0f, x, (int)cols, wm,
                (int)cols, bias ? 1.0f : 0.0f, dst, c->kvd);
    *n += rows;
}

mpq_status mpq_kv_saq_fit_model(const mpq_model *model, const int32_t *windows, int n_seqs, int seq_len,
                                int window_stride, int batch, mpq_kv_saq **out, mpq_err *err) {
    if (!model || !windows || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq fit: NULL argument");
    *out = NULL;
    if (n_seqs < 1 || seq_len < 1 || window_stride < seq_len || batch < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq fit: %d windows of %d tokens (stride %d), batch %d", n_seqs,
                           seq_len, window_stride, batch);
    const mpq_model_config *mc = mpq_model_get_config(model);
    const mpq_weights *w = mpq_model_get_weights(model);
    if (!w) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq fit: %s: no weights loaded", mpq_model_path(model));
    const int L = mc->n_layers, kvd = mc->n_kv_heads * mc->head_dim;
    if (batch > n_seqs) batch = n_seqs;
    mpq_status st = MPQ_OK;
    mpq_exec *ex = NULL;
    mpq_kv_saq *s = NULL;
    int *tok = NULL;
    fit_ctx c = {model, w, kvd, (int64_t)n_seqs * seq_len, NULL, NULL, NULL, NULL, NULL};
    c.n_k = calloc((size_t)L, sizeof(int64_t));
    c.n_v = calloc((size_t)L, sizeof(int64_t));
    c.k = calloc((size_t)L, sizeof(float *));
    c.v = calloc((size_t)L, sizeof(float *));
    tok = malloc((size_t)batch * (size_t)seq_len * sizeof(int));
    c.wscratch = malloc((size_t)kvd * (size_t)mc->dim * sizeof(float));
    if (!c.n_k || !c.n_v || !c.k || !c.v || !tok || !c.wscratch) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq fit: out of memory");
        goto done;
    }
    for (int l = 0; l < L; l++) {
        c.k[l] = malloc((size_t)c.rows_per_layer * (size_t)kvd * sizeof(float));
        c.v[l] = malloc((size_t)c.rows_per_layer * (size_t)kvd * sizeof(float));
        if (!c.k[l] || !c.v[l]) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv saq fit: out of memory for %d x %d key/value rows", L,
                             n_seqs * seq_len);
            goto done;
        }
    }
    if ((st = mpq_kv_saq_create(L, mc->n_kv_heads, mc->head_dim, &s, err)) != MPQ_OK) goto done;
    if ((st = mpq_exec_create_forward(model, batch, seq_len, &ex, err)) != MPQ_OK) goto done;
    mpq_exec_opts o = mpq_exec_opts_default();
    o.capture = fit_capture;
    o.capture_user = &c;
    for (int i0 = 0; i0 < n_seqs; i0 += batch) {
        int B = n_seqs - i0 < batch ? n_seqs - i0 : batch;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < seq_len; t++)
                tok[(size_t)b * seq_len + t] = windows[(size_t)(i0 + b) * (size_t)window_stride + (size_t)t];
        if ((st = mpq_exec_forward(ex, w, &o, tok, B, seq_len, err)) != MPQ_OK) goto done;
    }
    for (int l = 0; l < L && st == MPQ_OK; l++) {
        st = mpq_kv_saq_fit(s, l, true, c.k[l], c.n_k[l], err);
        if (st == MPQ_OK) st = mpq_kv_saq_fit(s, l, false, c.v[l], c.n_v[l], err);
    }
    if (st == MPQ_OK) {
        *out = s;
        s = NULL;
    }
done:
    if (c.k)
        for (int l = 0; l < L; l++) free(c.k[l]);
    if (c.v)
        for (int l = 0; l < L; l++) free(c.v[l]);
    free(c.k);
    free(c.v);
    free(c.n_k);
    free(c.n_v);
    free(tok);
    free(c.wscratch);
    mpq_exec_free(ex);
    mpq_kv_saq_free(s);
    return st;
}
