/* backward.c - backward pass of the reference executor: gradient of the mean next-token
 * cross-entropy with respect to every parameter (classifier + softmax cross-entropy, final
 * RMSNorm, per block SwiGLU MLP, residuals, RMSNorm, causal GQA attention with interleaved
 * RoPE, q/k/v/o projections and their biases, token embedding; a shared classifier's
 * gradient adds into the embedding's). Kernels follow llm.c train_gpt2.c:
 * <op>_backward(dinp, dw, dout, saved..., dims), every output accumulated (+=).
 * Every matrix product through cblas_sgemm. Reference: llm.c (Karpathy), llama2.c run.c. */
#include "mpq/mpq_grad.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec_internal.h"
#include "exec/exec_kernels.h"

/* ---- kernels ---- */

double crossentropy_softmax_backward(float *dlogits, const float *logits, const int *targets, int N, int V,
                                     float dscale) {
    // dlogits (N,V), logits (N,V), targets (N); dlogits = dscale * (softmax - onehot)
    double nll = 0.0;
    for (int n = 0; n < N; n++) {
        const float *lg = logits + (size_t)n * V;
        float *dl = dlogits + (size_t)n * V;
        double mx = lg[0];
        for (int i = 1; i < V; i++) mx = lg[i] > mx ? lg[i] : mx;
        double sum = 0.0;
        for (int i = 0; i < V; i++) sum += exp((double)lg[i] - mx);
        double lse = mx + log(sum);
        int tgt = targets[n];
        nll -= (double)lg[tgt] - lse;
        for (int i = 0; i < V; i++) {
            double p = exp((double)lg[i] - lse);
            dl[i] = (float)(dscale * (p - (i == tgt ? 1.0 : 0.0)));
        }
    }
    return nll;
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                     int N, int C, int OC) {
    // dinp (N,C), dw (OC,C), dbias (OC), dout (N,OC), inp (N,C), w (OC,C)
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (dbias)
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) dbias[o] += d[o];
        }
}

void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C) {
    // dinp (N,C), dweight (C), dout (N,C), inp (N,C), weight (C), rstd (N)
    // y_i = w_i x_i r, r = (mean x^2 + eps)^-1/2, dr/dx_i = -r^3 x_i / C
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        double r = rstd[n], dot = 0.0;
        for (int i = 0; i < C; i++) dot += (double)weight[i] * dy[i] * x[i];
        double c = r * r * r * dot / C;
        for (int i = 0; i < C; i++) {
            dx[i] += (float)(r * weight[i] * dy[i] - c * x[i]);
            dweight[i] += (float)((double)dy[i] * x[i] * r);
        }
    }
}

void rope_backward(float *dx, const float *cos_tab, const float *sin_tab, int B, int T, int n_heads, int hd) {
    // dx (B,T,n_heads*hd) in place; transpose of the rotation of rope_forward
    int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *row = dx + ((size_t)b * T + t) * (size_t)n_heads * hd;
            const float *cs = cos_tab + (size_t)t * half, *sn = sin_tab + (size_t)t * half;
            for (int h = 0; h < n_heads; h++) {
                float *v = row + (size_t)h * hd;
                for (int i = 0; i < half; i++) {
                    float d0 = v[2 * i], d1 = v[2 * i + 1];
                    v[2 * i] = d0 * cs[i] + d1 * sn[i];
                    v[2 * i + 1] = -d0 * sn[i] + d1 * cs[i];
                }
            }
        }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *q,
                        const float *k, const float *v, const float *att, int B, int T, int NH, int NKV, int hd) {
    // dq, q, dout (B,T,NH*hd); dk, dv, k, v (B,T,NKV*hd); att (B,NH,T,T); scratch (2,T,T)
    const int qd = NH * hd, kvd = NKV * hd, rep = NH / NKV;
    const float scale = (float)(1.0 / sqrt((double)hd));
    float *dA = scratch;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t qoff = (size_t)b * T * qd + (size_t)h * hd;
            size_t kvoff = (size_t)b * T * kvd + (size_t)(h / rep) * hd;
            const float *A = att + ((size_t)b * NH + h) * (size_t)T * T;
            const float *dO = dout + qoff;
            /* O = A V: dA (T,T) = dO (T,hd) V^T, dV (T,hd) += A^T dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, qd, v + kvoff, kvd, 0.0f, dA,
                        T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, A, T, dO, qd, 1.0f, dv + kvoff,
                        kvd);
            /* causal softmax: dS_tj = A_tj (dA_tj - sum_j' A_tj' dA_tj'), 0 above the diagonal */
            for (int t = 0; t < T; t++) {
                const float *a = A + (size_t)t * T;
                float *d = dA + (size_t)t * T;
                double s = 0.0;
                for (int j = 0; j <= t; j++) s += (double)a[j] * d[j];
                for (int j = 0; j <= t; j++) d[j] = (float)((double)a[j] * ((double)d[j] - s));
                for (int j = t + 1; j < T; j++) d[j] = 0.0f;
            }
            /* S = scale Q K^T: dQ += scale dS K, dK += scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, dA, T, k + kvoff, kvd, 1.0f,
                        dq + qoff, qd);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, dA, T, q + qoff, qd, 1.0f,
                        dk + kvoff, kvd);
        }
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    // dgate, dup, dout, gate, up (N,H) flattened to n
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), silu = g * sg;
        dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] += dout[i] * silu;
    }
}

void encoder_backward(float *demb, const float *dout, const int *tokens, int N, int C) {
    // demb (V,C), dout (N,C), tokens (N)
    for (int n = 0; n < N; n++) {
        float *d = demb + (size_t)tokens[n] * C;
        const float *s = dout + (size_t)n * C;
        for (int i = 0; i < C; i++) d[i] += s[i];
    }
}

/* ---- whole-model backward ---- */

struct mpq_grad {
    mpq_exec *ex;
    float *block;
    float *dlogits;          /* (BT, V) */
    float *dres;             /* (BT, dim) gradient of the residual stream */
    float *dln;              /* (BT, dim) gradient of an RMSNorm output */
    float *datty, *dq;       /* (BT, qd) */
    float *dk, *dv;          /* (BT, kvd) */
    float *dhact, *dgate, *dup; /* (BT, hidden) */
    float *scratch;          /* (2, T, T) */
    int *tok, *tgt;          /* (BT) */
};

mpq_status mpq_grad_create(mpq_exec *ex, mpq_grad **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_grad *g = NULL;
    if (!ex || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "grad: NULL argument");
    *out = NULL;
    if (ex->fwd_only)
        return mpq_err_set(err, MPQ_ERR_INVALID, "grad: the executor was created forward-only (mpq_exec_create_forward)");
    const mpq_model_config *c = &ex->cfg;
    const size_t bt = ex->bt_max, T = (size_t)ex->max_T;
    size_t n_V, n_dim, n_qd, n_kvd, n_hid, n_TT, total = 0;
    if (!mpq_size_mul(bt, (size_t)c->vocab_size, &n_V) || !mpq_size_mul(bt, (size_t)c->dim, &n_dim) ||
        !mpq_size_mul(bt, (size_t)ex->qd, &n_qd) || !mpq_size_mul(bt, (size_t)ex->kvd, &n_kvd) ||
        !mpq_size_mul(bt, (size_t)c->hidden_dim, &n_hid) || !mpq_size_mul3(2, T, T, &n_TT))
        return mpq_err_set(err, MPQ_ERR_INVALID, "grad: workspace for %d x %d overflows", ex->max_B, ex->max_T);
    g = mpq_calloc(1, sizeof *g);
    if (!g) return mpq_err_set(err, MPQ_ERR_NOMEM, "grad: out of memory");
    g->ex = ex;
    struct {
        float **p;
        size_t n;
    } r[] = {{&g->dlogits, n_V}, {&g->dres, n_dim}, {&g->dln, n_dim},   {&g->datty, n_qd}, {&g->dq, n_qd},
             {&g->dk, n_kvd},    {&g->dv, n_kvd},   {&g->dhact, n_hid}, {&g->dgate, n_hid}, {&g->dup, n_hid},
             {&g->scratch, n_TT}};
    const int nr = (int)(sizeof r / sizeof r[0]);
    for (int i = 0; i < nr; i++)
        if (!mpq_size_add(total, r[i].n, &total)) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "grad: workspace size overflows");
            goto done;
        }
    g->block = mpq_calloc(total, sizeof(float));
    g->tok = mpq_calloc(bt, sizeof(int));
    g->tgt = mpq_calloc(bt, sizeof(int));
    if (!g->block || !g->tok || !g->tgt) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "grad: cannot allocate %zu floats of workspace", total);
        goto done;
    }
    size_t off = 0;
    for (int i = 0; i < nr; i++) {
        *r[i].p = g->block + off;
        off += r[i].n;
    }
    *out = g;
    g = NULL;
done:
    mpq_grad_free(g);
    return st;
}

void mpq_grad_free(mpq_grad *g) {
    if (!g) return;
    free(g->block);
    free(g->tok);
    free(g->tgt);
    free(g);
}

mpq_status mpq_grad_weights_zeros(const mpq_model *model, mpq_weights **out, mpq_err *err) {
    mpq_status st = mpq_weights_clone(model, out, err);
    if (st == MPQ_OK) mpq_grad_weights_clear(*out);
    return st;
}

void mpq_grad_weights_clear(mpq_weights *g) {
    if (g && g->data) memset(g->data, 0, g->n_floats * sizeof(float));
}

mpq_status mpq_grad_compute(mpq_grad *g, const mpq_weights *w, const int *tokens, int B, int T, float scale,
                            mpq_weights *grads, double *loss, mpq_err *err) {
    return mpq_grad_compute_tap(g, w, tokens, B, T, scale, grads, loss, NULL, err);
}

/* Hands the tap one linear layer's output gradient and input (no-op without a tap). */
static mpq_status tap_call(const mpq_grad_tap *tap, int block, mpq_layer_kind kind, const float *dout,
                           const float *inp, int N, int OC, int C, mpq_err *err) {
    if (!tap || !tap->fn || (tap->block >= 0 && tap->block != block)) return MPQ_OK;
    return tap->fn(tap->user, block, kind, dout, inp, N, OC, C, err);
}

mpq_status mpq_grad_compute_tap(mpq_grad *g, const mpq_weights *w, const int *tokens, int B, int T, float scale,
                                mpq_weights *grads, double *loss, const mpq_grad_tap *tap, mpq_err *err) {
    if (!g || !w || !tokens || !grads || !grads->blocks)
        return mpq_err_set(err, MPQ_ERR_INVALID, "grad: NULL argument");
    mpq_exec *ex = g->ex;
    const mpq_model_config *c = &ex->cfg;
    if (grads->n_layers != c->n_layers || grads->n_floats != w->n_floats)
        return mpq_err_set(err, MPQ_ERR_INVALID, "grad: gradient block (%d layers, %zu floats) does not mirror the "
                           "weights (%d layers, %zu floats)", grads->n_layers, grads->n_floats, w->n_layers,
                           w->n_floats);
    if (B < 1 || T < 1 || B > ex->max_B || T > ex->max_T)
        return mpq_err_set(err, MPQ_ERR_INVALID, "grad: batch %d x %d outside the executor's 1..%d x 1..%d", B, T,
                           ex->max_B, ex->max_T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++) {
            int id = tokens[(size_t)b * (T + 1) + t];
            if (id < 0 || id >= c->vocab_size)
                return mpq_err_set(err, MPQ_ERR_INVALID, "grad: token %d at sequence %d position %d outside vocab 0..%d",
                                   id, b, t, c->vocab_size - 1);
            if (t < T) g->tok[(size_t)b * T + t] = id;
            if (t > 0) g->tgt[(size_t)b * T + t - 1] = id;
        }
    mpq_status st = mpq_exec_forward(ex, w, NULL, g->tok, B, T, err);
    if (st != MPQ_OK) return st;

    exec_acts *a = &ex->a;
    const int N = B * T, dim = c->dim, qd = ex->qd, kvd = ex->kvd, hid = c->hidden_dim, V = c->vocab_size;
    const int NH = c->n_heads, NKV = c->n_kv_heads, hd = c->head_dim;
    const size_t BT = ex->bt_max, n = (size_t)N;
    const size_t att_stride = BT * (size_t)NH * (size_t)ex->max_T;

    /* head: loss = mean over N targets */
    double nll = crossentropy_softmax_backward(g->dlogits, a->logits, g->tgt, N, V, scale / (float)N);
    if (loss) *loss = nll / N;
    memset(g->dln, 0, n * dim * sizeof(float));
    memset(g->dres, 0, n * dim * sizeof(float));
    matmul_backward(g->dln, grads->classifier, NULL, g->dlogits, a->lnf, w->classifier, N, dim, V);
    rmsnorm_backward(g->dres, grads->final_norm, g->dln, a->res + (size_t)c->n_layers * BT * dim, w->final_norm,
                     a->lnf_rstd, N, dim);

    const int l_stop = tap && tap->block >= 0 && tap->block < c->n_layers ? tap->block : 0;
    mpq_status st_tap = MPQ_OK;
    for (int l = c->n_layers - 1; l >= l_stop; l--) {
        const mpq_block_weights *bw = &w->blocks[l];
        mpq_block_weights *gw = &grads->blocks[l];
        const size_t L = (size_t)l;
        const float *x = a->res + L * BT * dim, *ln1 = a->ln1 + L * BT * dim;
        const float *q = a->q + L * BT * qd, *k = a->k + L * BT * kvd, *v = a->v + L * BT * kvd;
        const float *att = a->att + L * att_stride, *atty = a->atty + L * BT * qd;
        const float *res2 = a->res2 + L * BT * dim, *ln2 = a->ln2 + L * BT * dim;
        const float *gate = a->gate + L * BT * hid, *up = a->up + L * BT * hid, *hact = a->hact + L * BT * hid;

        /* x_next = res2 + hact @ w_down^T ; dres holds d x_next and becomes d res2 */
        memset(g->dhact, 0, n * hid * sizeof(float));
        memset(g->dgate, 0, n * hid * sizeof(float));
        memset(g->dup, 0, n * hid * sizeof(float));
        memset(g->dln, 0, n * dim * sizeof(float));
        if ((st_tap = tap_call(tap, l, MPQ_LAYER_FFN_DOWN, g->dres, hact, N, dim, hid, err)) != MPQ_OK) return st_tap;
        matmul_backward(g->dhact, gw->w_down, NULL, g->dres, hact, exec_weight(ex, w, l, MPQ_LAYER_FFN_DOWN), N, hid, dim);
        swiglu_backward(g->dgate, g->dup, g->dhact, gate, up, n * hid);
        if ((st_tap = tap_call(tap, l, MPQ_LAYER_FFN_GATE, g->dgate, ln2, N, hid, dim, err)) != MPQ_OK ||
            (st_tap = tap_call(tap, l, MPQ_LAYER_FFN_UP, g->dup, ln2, N, hid, dim, err)) != MPQ_OK)
            return st_tap;
        matmul_backward(g->dln, gw->w_gate, NULL, g->dgate, ln2, exec_weight(ex, w, l, MPQ_LAYER_FFN_GATE), N, dim, hid);
        matmul_backward(g->dln, gw->w_up, NULL, g->dup, ln2, exec_weight(ex, w, l, MPQ_LAYER_FFN_UP), N, dim, hid);
        rmsnorm_backward(g->dres, gw->ffn_norm, g->dln, res2, bw->ffn_norm, a->ln2_rstd + L * BT, N, dim);

        /* res2 = x + atty @ wo^T ; dres becomes d x */
        memset(g->datty, 0, n * qd * sizeof(float));
        memset(g->dq, 0, n * qd * sizeof(float));
        memset(g->dk, 0, n * kvd * sizeof(float));
        memset(g->dv, 0, n * kvd * sizeof(float));
        memset(g->dln, 0, n * dim * sizeof(float));
        if ((st_tap = tap_call(tap, l, MPQ_LAYER_ATTN_O, g->dres, atty, N, dim, qd, err)) != MPQ_OK) return st_tap;
        matmul_backward(g->datty, gw->wo, NULL, g->dres, atty, exec_weight(ex, w, l, MPQ_LAYER_ATTN_O), N, qd, dim);
        attention_backward(g->dq, g->dk, g->dv, g->scratch, g->datty, q, k, v, att, B, T, NH, NKV, hd);
        rope_backward(g->dq, ex->rope_cos, ex->rope_sin, B, T, NH, hd);
        rope_backward(g->dk, ex->rope_cos, ex->rope_sin, B, T, NKV, hd);
        /* dq, dk now hold the gradients of the projections' outputs (before RoPE) */
        if ((st_tap = tap_call(tap, l, MPQ_LAYER_ATTN_Q, g->dq, ln1, N, qd, dim, err)) != MPQ_OK ||
            (st_tap = tap_call(tap, l, MPQ_LAYER_ATTN_K, g->dk, ln1, N, kvd, dim, err)) != MPQ_OK ||
            (st_tap = tap_call(tap, l, MPQ_LAYER_ATTN_V, g->dv, ln1, N, kvd, dim, err)) != MPQ_OK)
            return st_tap;
        matmul_backward(g->dln, gw->wq, gw->bq, g->dq, ln1, exec_weight(ex, w, l, MPQ_LAYER_ATTN_Q), N, dim, qd);
        matmul_backward(g->dln, gw->wk, gw->bk, g->dk, ln1, exec_weight(ex, w, l, MPQ_LAYER_ATTN_K), N, dim, kvd);
        matmul_backward(g->dln, gw->wv, gw->bv, g->dv, ln1, exec_weight(ex, w, l, MPQ_LAYER_ATTN_V), N, dim, kvd);
        rmsnorm_backward(g->dres, gw->attn_norm, g->dln, x, bw->attn_norm, a->ln1_rstd + L * BT, N, dim);
    }
    if (l_stop == 0) encoder_backward(grads->tok_emb, g->dres, g->tok, N, dim);
    return MPQ_OK;
}
