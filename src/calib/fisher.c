/* fisher.c - Fisher-weighted output error per (linear layer, candidate), the score of
 * NVIDIA ModelOpt AutoQuantize: sum over tokens of sum_o g_{t,o}^2 ((Q(W) - W) x_t)_o^2 with
 * g the gradient of the next-token loss w.r.t. the layer's output (mpq_fisher.h). The output
 * gradients and inputs come from the backward pass's taps (mpq_grad.h); E x_t for every
 * token is one cblas_sgemm per candidate. */
#include "mpq/mpq_fisher.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_grad.h"

int mpq_fisher_block_layers(const mpq_model *m, int block, int *first) {
    int n = 0, f = -1;
    for (int i = 0; m && i < mpq_model_n_linear(m); i++)
        if (mpq_model_linear(m, i)->block == block) {
            if (f < 0) f = i;
            n++;
        }
    if (first) *first = f;
    return n;
}

typedef struct fisher_tap {
    const mpq_model *m;
    int first, n_layers, n_cands, n_seqs;
    float **err_w;     /* (n_layers * n_cands) E = Q(W) - W, (rows, cols) each */
    float *dy;         /* (B*T, max rows) E x_t for every token */
    double *out;       /* (n_layers, n_cands, n_seqs) */
    int s0, T;         /* first window of the batch, tokens per window */
} fisher_tap;

static mpq_status on_tap(void *user, int block, mpq_layer_kind kind, const float *dout, const float *inp, int N,
                         int OC, int C, mpq_err *err) {
    fisher_tap *ft = user;
    int j = -1;
    for (int i = 0; i < ft->n_layers; i++) {
        const mpq_layer_info *li = mpq_model_linear(ft->m, ft->first + i);
        if (li->block == block && li->kind == kind) j = i;
    }
    if (j < 0) return MPQ_OK; /* a projection the layer table does not list */
    const mpq_layer_info *li = mpq_model_linear(ft->m, ft->first + j);
    if (li->rows != OC || li->cols != C)
        return mpq_err_set(err, MPQ_ERR_INVALID, "fisher: %s is %lld x %lld, backward gave %d x %d", li->name,
                           (long long)li->rows, (long long)li->cols, OC, C);
    const int T = ft->T, B = N / T;
    for (int c = 0; c < ft->n_cands; c++) {
        // dy (N,OC) = inp (N,C) E^T, E (OC,C)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, ft->err_w[j * ft->n_cands + c],
                    C, 0.0f, ft->dy, OC);
        for (int b = 0; b < B; b++) {
            double acc = 0.0;
            for (int t = 0; t < T; t++) {
                size_t row = ((size_t)b * T + t) * (size_t)OC;
                const float *g = dout + row, *d = ft->dy + row;
                double s = 0.0;
                for (int o = 0; o < OC; o++) {
                    double gd = (double)g[o] * d[o];
                    s += gd * gd;
                }
                acc += s;
            }
            ft->out[((size_t)j * ft->n_cands + c) * ft->n_seqs + ft->s0 + b] = acc / T;
        }
    }
    return MPQ_OK;
}

mpq_status mpq_fisher_block(const mpq_model *m, const int *tokens, int n_seqs, int seq_len, int batch, int block,
                            const mpq_candidate *cands, int n_cands, double *out, mpq_err *err) {
    if (!m || !tokens || !cands || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "fisher: NULL argument");
    if (!mpq_model_has_weights(m)) return mpq_err_set(err, MPQ_ERR_INVALID, "fisher: the model is shape only");
    const mpq_model_config *mc = mpq_model_get_config(m);
    if (n_cands < 1) return mpq_err_set(err, MPQ_ERR_INVALID, "fisher: no candidates");
    if (n_seqs < 1 || seq_len < 1 || batch < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "fisher: %d windows of %d tokens in batches of %d", n_seqs, seq_len,
                           batch);
    if (block < 0 || block >= mc->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "fisher: block %d outside 0..%d", block, mc->n_layers - 1);
    fisher_tap ft = {.m = m, .n_cands = n_cands, .n_seqs = n_seqs, .out = out, .T = seq_len};
    ft.n_layers = mpq_fisher_block_layers(m, block, &ft.first);
    if (ft.n_layers == 0) return MPQ_OK;
    const int B = batch < n_seqs ? batch : n_seqs;
    mpq_exec *ex = NULL;
    mpq_grad *gr = NULL;
    mpq_weights *gw = NULL, *wide = NULL;
    int64_t max_rows = 0;
    size_t n_dy;
    mpq_status st = MPQ_OK;
    for (int j = 0; j < ft.n_layers; j++) {
        int64_t r = mpq_model_linear(m, ft.first + j)->rows;
        max_rows = r > max_rows ? r : max_rows;
    }
    if (!(ft.err_w = mpq_calloc((size_t)ft.n_layers * (size_t)n_cands, sizeof *ft.err_w)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "fisher: out of memory");
    if (!mpq_size_mul3((size_t)B, (size_t)seq_len, (size_t)max_rows, &n_dy) ||
        !(ft.dy = mpq_calloc(n_dy, sizeof(float)))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "fisher: out of memory for %d x %d x %lld floats", B, seq_len,
                         (long long)max_rows);
        goto done;
    }
    const mpq_weights *w = mpq_model_get_weights(m);
    if (w->dtype != MPQ_WEIGHTS_F32) { /* the backward reads float32: widen once (the same numbers) */
        if ((st = mpq_weights_clone(m, &wide, err)) != MPQ_OK) goto done;
        w = wide;
    }
    for (int j = 0; j < ft.n_layers; j++) {
        const mpq_layer_info *li = mpq_model_linear(m, ft.first + j);
        const float *wl = mpq_weights_linear(w, li);
        size_t np = (size_t)li->n_params;
        for (int c = 0; c < n_cands; c++) {
            float *e = mpq_calloc(np ? np : 1, sizeof(float));
            if (!e) {
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "fisher: out of memory for %s", li->name);
                goto done;
            }
            ft.err_w[j * n_cands + c] = e;
            memcpy(e, wl, np * sizeof(float));
            mpq_quantize_matrix(&cands[c], e, li->rows, li->cols);
            for (size_t i = 0; i < np; i++) e[i] -= wl[i];
        }
    }
    if ((st = mpq_exec_create(m, B, seq_len, &ex, err)) != MPQ_OK || (st = mpq_grad_create(ex, &gr, err)) != MPQ_OK ||
        (st = mpq_grad_weights_zeros(m, &gw, err)) != MPQ_OK)
        goto done;
    mpq_grad_tap tap = {.fn = on_tap, .user = &ft, .block = block};
    for (int s0 = 0; s0 < n_seqs; s0 += B) {
        int nb = n_seqs - s0 < B ? n_seqs - s0 : B;
        ft.s0 = s0;
        /* scale = B*T: the taps see the gradient of the SUM of the batch's token losses */
        st = mpq_grad_compute_tap(gr, w, tokens + (size_t)s0 * (seq_len + 1), nb, seq_len, (float)(nb * seq_len), gw,
                                  NULL, &tap, err);
        if (st != MPQ_OK) goto done;
    }
done:
    mpq_weights_free(wide);
    for (int i = 0; ft.err_w && i < ft.n_layers * n_cands; i++) free(ft.err_w[i]);
    free(ft.err_w);
    free(ft.dy);
    mpq_weights_free(gw);
    mpq_grad_free(gr);
    mpq_exec_free(ex);
    return st;
}

mpq_fisher_stat mpq_fisher_summarize(const double *v, int n) {
    mpq_fisher_stat s = {.mean = NAN, .se = NAN, .n = n};
    if (!v || n < 1) return s;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += v[i];
    s.mean = sum / n;
    if (n < 2) return s;
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (v[i] - s.mean) * (v[i] - s.mean);
    s.se = sqrt(ss / (n - 1) / n);
    return s;
}
