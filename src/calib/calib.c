/*
 * calib.c - calibration metrics (mpq_calib.h): one FP reference pass over the calibration
 * sequences, then per (linear layer, weight candidate) and per (block, KV pair) measurements.
 *
 * References:
 * - GPTQ (Frantar et al. 2023), eq. (1)-(2): the layer-wise objective ||W X^T - Q(W) X^T||^2 and
 *   its Hessian 2 X^T X; here act_err = trace(E S E^T), S = X^T X / n_tokens, E = Q(W) - W, is
 *   the mean over calibration tokens of the squared output error of the layer.
 * - MixDQ (Zhao et al. 2024): metric-decoupled sensitivity, each metric measured with only one
 *   layer quantized and the others in full precision (KL, change of loss, top-1 agreement).
 * - KVTuner (Li et al. 2025): per-layer sensitivity of a (K bits, V bits) pair with every other
 *   layer's cache in full precision; kv_attn_rel is the relative error of that block's attention
 *   output (the input of attn_o).
 *
 * Memory held by a mpq_calib (floats unless noted), N = n_seqs * T:
 *   reference log-probs N * vocab (and their exp, N * vocab doubles, when that is at most
 *   MPQ_EXEC_REF_P_MAX bytes), residuals entering each block and after each block's attention
 *   2 * n_layers * N * dim (prefix reuse), FP attention outputs n_layers * N * (n_heads*head_dim)
 *   (prefix reuse for attn_o units and kv_attn_rel; e.g. sotu-2.7M, 64 x 256 tokens:
 *   6 * 16384 * 192 * 4 B = 72 MiB), all held by the stored reference (mpq_exec_ref); X^T X
 *   n_layers * 4 distinct inputs * cols^2 doubles, and one layer-sized scratch. The model's
 *   weights are not copied: each mpq_calib (and each fork) has its own weight table
 *   (mpq_weights_view) that borrows the model's read-only tensors, so n workers hold one
 *   model, plus per worker an executor's activations and the layer scratch.
 *
 * Prefix reuse: a unit quantizing layer i of block b restarts at the first operation that
 * uses it, from what the FP reference stored: wq/wk/wv at block b's input, wo at wo (from the
 * stored attention output), w_gate/w_up/w_down at the FFN (from the residual after the
 * attention); a KV unit at block b's input. The later operations are the ones of a full pass,
 * so results are bitwise equal to the naive path (every unit from block 0).
 *
 * Determinism: mpq_calib_layer quantizes a copy of layer i in the layer scratch, points that
 * layer's slot of its own weight table at it for the one evaluation and points it back at the
 * model's tensor afterwards (also on error), so a unit's result does not depend on the units
 * run before it or on the worker that runs it.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_exec.h"

#define SLOTS_PER_BLOCK 4 /* distinct linear inputs per block: attn in, attn_o in, ffn in, down in */

struct mpq_calib {
    const mpq_model *model;
    mpq_calib_opts opts;
    int n_lin, n_layers, n_seqs, T;
    int64_t n_tokens;
    mpq_exec *ex;
    mpq_exec_ref *ref;
    mpq_weights *view;     /* own table borrowing the model's weights; all layers FP between calls */
    int *lin_slot;         /* (n_lin) input slot of each linear layer */
    int *slot_first;       /* (n_slots) first linear index with that input, -1 if none */
    int64_t *slot_cols;    /* (n_slots) */
    double **xtx;          /* (n_slots) upper triangle packed by rows (mpq_xtx_index), cols (cols + 1) / 2
                              doubles: sum over tokens, then / n_tokens; NULL entries */
    double *sfull;         /* (max_cols^2) one X^T X unpacked (upper triangle), or NULL without xtx */
    int64_t max_cols;
    double *xbuf;          /* (max_B * T * max_cols) doubles: one captured X in double */
    int64_t xbuf_n;
    int64_t attn_cols;     /* n_heads * head_dim */
    float *wq;             /* (max layer) quantized copy of one weight matrix */
    double *ed, *wd, *md;  /* (max layer) E, W and a product, in double */
    int64_t max_layer;
    bool is_fork;          /* ref, xtx, lin_slot, slot_first, slot_cols borrowed from the parent */
};

mpq_calib_opts mpq_calib_opts_default(void) {
    mpq_calib_opts o;
    memset(&o, 0, sizeof o);
    o.batch = 8;
    o.collect_xtx = true;
    o.prefix_reuse = true;
    o.kv_scheme = mpq_kv_scheme_default();
    return o;
}

static int layer_slot(const mpq_layer_info *li) {
    int g;
    switch (li->kind) {
    case MPQ_LAYER_ATTN_Q:
    case MPQ_LAYER_ATTN_K:
    case MPQ_LAYER_ATTN_V: g = 0; break;
    case MPQ_LAYER_ATTN_O: g = 1; break;
    case MPQ_LAYER_FFN_GATE:
    case MPQ_LAYER_FFN_UP: g = 2; break;
    default: g = 3; break;
    }
    return li->block * SLOTS_PER_BLOCK + g;
}

/* Packed upper triangle <-> the upper triangle of a full row-major (c, c) matrix. */
static void unpack_upper(double *full, const double *P, int64_t c) {
    for (int64_t i = 0; i < c; i++) memcpy(full + i * c + i, P + mpq_xtx_index(c, i, i), (size_t)(c - i) * sizeof *P);
}

static void pack_upper(double *P, const double *full, int64_t c) {
    for (int64_t i = 0; i < c; i++) memcpy(P + mpq_xtx_index(c, i, i), full + i * c + i, (size_t)(c - i) * sizeof *P);
}

/* Capture callback of the reference pass: accumulates X^T X (in double, dsyrk on the upper
 * triangle) once per distinct input (the FP attention outputs are kept by the reference).
 * The packed sum is unpacked into sfull, dsyrk adds this batch as it would to a full matrix
 * (it reads and writes only the upper triangle) and the result is packed back: the same
 * numbers as a full matrix per slot, in half the memory. */
static void create_capture(void *user, int idx, const float *x, int64_t rows, int64_t cols) {
    mpq_calib *cal = user;
    if (idx < 0 || idx >= cal->n_lin) return;
    int slot = cal->lin_slot[idx];
    if (!cal->opts.collect_xtx || cal->slot_first[slot] != idx || !cal->xtx[slot]) return;
    if (rows * cols > cal->xbuf_n || cols != cal->slot_cols[slot] || cols > cal->max_cols) return;
    for (int64_t i = 0; i < rows * cols; i++) cal->xbuf[i] = (double)x[i];
    unpack_upper(cal->sfull, cal->xtx[slot], cols);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)rows, 1.0, cal->xbuf, (int)cols, 1.0,
                cal->sfull, (int)cols);
    pack_upper(cal->xtx[slot], cal->sfull, cols);
}

void mpq_calib_free(mpq_calib *cal) {
    if (!cal) return;
    free(cal->wq);
    free(cal->ed);
    free(cal->wd);
    free(cal->md);
    free(cal->sfull);
    mpq_weights_free(cal->view);
    mpq_exec_free(cal->ex);
    if (cal->is_fork) { /* the rest belongs to the parent */
        free(cal);
        return;
    }
    if (cal->xtx) {
        int n_slots = cal->n_layers * SLOTS_PER_BLOCK;
        for (int s = 0; s < n_slots; s++) free(cal->xtx[s]);
        free(cal->xtx);
    }
    free(cal->lin_slot);
    free(cal->slot_first);
    free(cal->slot_cols);
    free(cal->xbuf);
    mpq_exec_ref_free(cal->ref);
    free(cal);
}

/* Layer scratch of max_layer weights: the quantized copy and three double buffers. */
static mpq_status alloc_layer_scratch(mpq_calib *cal, mpq_err *err) {
    size_t ml = (size_t)(cal->max_layer > 0 ? cal->max_layer : 1);
    cal->wq = mpq_calloc(ml, sizeof(float));
    cal->ed = mpq_calloc(ml, sizeof(double));
    cal->wd = mpq_calloc(ml, sizeof(double));
    cal->md = mpq_calloc(ml, sizeof(double));
    if (!cal->wq || !cal->ed || !cal->wd || !cal->md)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "calib: cannot allocate layer scratch of %zu weights", ml);
    if (cal->opts.collect_xtx && cal->max_cols > 0) {
        size_t n;
        if (!mpq_size_mul((size_t)cal->max_cols, (size_t)cal->max_cols, &n) ||
            !(cal->sfull = mpq_calloc(n, sizeof(double))))
            return mpq_err_set(err, MPQ_ERR_NOMEM, "calib: cannot allocate an X^T X of %lld columns",
                               (long long)cal->max_cols);
    }
    return MPQ_OK;
}

mpq_status mpq_calib_fork(const mpq_calib *parent, mpq_calib **out, mpq_err *err) {
    if (!parent || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: NULL argument");
    *out = NULL;
    mpq_calib *cal = mpq_calloc(1, sizeof *cal);
    if (!cal) return mpq_err_set(err, MPQ_ERR_NOMEM, "calib: out of memory");
    *cal = *parent;
    cal->is_fork = true;
    cal->ex = NULL;
    cal->view = NULL;
    cal->wq = NULL;
    cal->ed = cal->wd = cal->md = NULL;
    cal->sfull = NULL;
    cal->xbuf = NULL;
    cal->xbuf_n = 0;
    mpq_status st;
    if ((st = alloc_layer_scratch(cal, err)) != MPQ_OK ||
        (st = mpq_weights_view(parent->model, &cal->view, err)) != MPQ_OK ||
        (st = mpq_exec_create_forward(parent->model, parent->opts.batch, parent->T, &cal->ex, err)) != MPQ_OK) {
        mpq_calib_free(cal);
        return st;
    }
    *out = cal;
    return MPQ_OK;
}

mpq_status mpq_calib_create(const mpq_model *model, const int *tokens, int n_seqs, int T,
                            const mpq_calib_opts *opts, mpq_calib **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_calib *cal = NULL;
    if (!model || !tokens || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: NULL argument");
    *out = NULL;
    mpq_calib_opts o = opts ? *opts : mpq_calib_opts_default();
    const mpq_model_config *cfg = mpq_model_get_config(model);
    if (n_seqs < 1 || T < 1 || T > cfg->seq_len)
        return mpq_err_set(err, MPQ_ERR_INVALID, "calib: %d sequences x %d tokens (need >= 1 x 1..%d)", n_seqs, T,
                           cfg->seq_len);
    if (o.batch < 1) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: batch %d (must be >= 1)", o.batch);
    if (o.batch > n_seqs) o.batch = n_seqs;

    cal = mpq_calloc(1, sizeof *cal);
    if (!cal) return mpq_err_set(err, MPQ_ERR_NOMEM, "calib: out of memory");
    cal->model = model;
    cal->opts = o;
    cal->n_lin = mpq_model_n_linear(model);
    cal->n_layers = cfg->n_layers;
    cal->n_seqs = n_seqs;
    cal->T = T;
    cal->n_tokens = (int64_t)n_seqs * T;
    cal->attn_cols = (int64_t)cfg->n_heads * cfg->head_dim;
    const int n_slots = cal->n_layers * SLOTS_PER_BLOCK;

    cal->lin_slot = mpq_calloc((size_t)(cal->n_lin > 0 ? cal->n_lin : 1), sizeof(int));
    cal->slot_first = mpq_calloc((size_t)n_slots, sizeof(int));
    cal->slot_cols = mpq_calloc((size_t)n_slots, sizeof(int64_t));
    cal->xtx = mpq_calloc((size_t)n_slots, sizeof(double *));
    if (!cal->lin_slot || !cal->slot_first || !cal->slot_cols || !cal->xtx) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "calib: out of memory");
        goto done;
    }
    for (int s = 0; s < n_slots; s++) cal->slot_first[s] = -1;
    int64_t max_cols = 0;
    for (int i = 0; i < cal->n_lin; i++) {
        const mpq_layer_info *li = mpq_model_linear(model, i);
        int s = layer_slot(li);
        cal->lin_slot[i] = s;
        if (cal->slot_first[s] < 0) {
            cal->slot_first[s] = i;
            cal->slot_cols[s] = li->cols;
        }
        if (li->cols > max_cols) max_cols = li->cols;
        if (li->n_params > cal->max_layer) cal->max_layer = li->n_params;
    }
    cal->max_cols = max_cols;
    if ((st = alloc_layer_scratch(cal, err)) != MPQ_OK) goto done;
    if (o.collect_xtx) {
        size_t nx;
        if (!mpq_size_mul3((size_t)o.batch, (size_t)T, (size_t)max_cols, &nx)) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "calib: activation buffer overflows");
            goto done;
        }
        cal->xbuf_n = (int64_t)nx;
        cal->xbuf = mpq_calloc(nx > 0 ? nx : 1, sizeof(double));
        if (!cal->xbuf) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "calib: cannot allocate %zu doubles of activations", nx);
            goto done;
        }
        for (int s = 0; s < n_slots; s++) {
            if (cal->slot_first[s] < 0) continue;
            cal->xtx[s] = mpq_calloc((size_t)mpq_xtx_size(cal->slot_cols[s]), sizeof(double));
            if (!cal->xtx[s]) {
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "calib: cannot allocate X^T X of %lld columns",
                                 (long long)cal->slot_cols[s]);
                goto done;
            }
        }
    }
    st = mpq_weights_view(model, &cal->view, err);
    if (st != MPQ_OK) goto done;
    st = mpq_exec_create_forward(model, o.batch, T, &cal->ex, err);
    if (st != MPQ_OK) goto done;

    mpq_exec_opts eo = mpq_exec_opts_default();
    eo.capture = create_capture;
    eo.capture_user = cal;
    st = mpq_exec_ref_build(cal->ex, mpq_model_get_weights(model), &eo, tokens, n_seqs, T, true, &cal->ref, err);
    if (st != MPQ_OK) {
        mpq_err_prefix(err, "calib: reference pass");
        goto done;
    }
    /* normalize X^T X (the packed upper triangle) */
    for (int s = 0; s < n_slots && o.collect_xtx; s++) {
        double *S = cal->xtx[s];
        if (!S) continue;
        const int64_t n = mpq_xtx_size(cal->slot_cols[s]);
        const double inv = 1.0 / (double)cal->n_tokens;
        for (int64_t k = 0; k < n; k++) S[k] *= inv;
    }
    free(cal->xbuf); /* only needed during the reference pass */
    cal->xbuf = NULL;
    cal->xbuf_n = 0;
    *out = cal;
    cal = NULL;
done:
    mpq_calib_free(cal);
    return st;
}

double mpq_calib_ref_ce(const mpq_calib *cal) {
    const mpq_eval_stats *s = cal ? mpq_exec_ref_stats(cal->ref) : NULL;
    return s ? s->ce : NAN;
}

int mpq_calib_n_seqs(const mpq_calib *cal) { return cal ? cal->n_seqs : 0; }
int mpq_calib_T(const mpq_calib *cal) { return cal ? cal->T : 0; }
int64_t mpq_calib_n_tokens(const mpq_calib *cal) { return cal ? cal->n_tokens : 0; }

const double *mpq_calib_xtx_packed(const mpq_calib *cal, int linear_index, int64_t *cols) {
    if (cols) *cols = 0;
    if (!cal || linear_index < 0 || linear_index >= cal->n_lin || !cal->opts.collect_xtx) return NULL;
    int s = cal->lin_slot[linear_index];
    if (!cal->xtx[s]) return NULL;
    if (cols) *cols = cal->slot_cols[s];
    return cal->xtx[s];
}

double mpq_calib_xtx_trace(const mpq_calib *cal, int linear_index) {
    int64_t c = 0;
    const double *S = mpq_calib_xtx_packed(cal, linear_index, &c);
    if (!S) return 0.0;
    double tr = 0.0;
    for (int64_t i = 0; i < c; i++) tr += S[mpq_xtx_index(c, i, i)];
    return tr;
}

static mpq_status check_linear(const mpq_calib *cal, int i, const void *c, const void *out, mpq_err *err) {
    if (!cal || !c || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: NULL argument");
    if (i < 0 || i >= cal->n_lin)
        return mpq_err_set(err, MPQ_ERR_INVALID, "calib: linear index %d outside 0..%d", i, cal->n_lin - 1);
    return MPQ_OK;
}

/* trace(A S A^T) for A (rows, cols) and symmetric S (cols, cols), all double: M = A S by
 * dsymm, then sum(M .* A). */
static double quad_trace(const double *A, const double *S, double *M, int64_t rows, int64_t cols) {
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)rows, (int)cols, 1.0, S, (int)cols, A, (int)cols, 0.0, M,
                (int)cols);
    double t = 0.0;
    for (int64_t k = 0; k < rows * cols; k++) t += M[k] * A[k];
    return t;
}

mpq_status mpq_calib_weight_error(mpq_calib *cal, int linear_index, const mpq_candidate *c,
                                  mpq_calib_weight_stats *out, mpq_err *err) {
    mpq_status st = check_linear(cal, linear_index, c, out, err);
    if (st != MPQ_OK) return st;
    const mpq_layer_info *li = mpq_model_linear(cal->model, linear_index);
    const int64_t n = li->n_params;
    /* the layer as float32 (widened into wq when held in 16 bits), kept in double in wd */
    const float *W = mpq_weights_linear_f32(mpq_model_get_weights(cal->model), li, cal->wq);
    if (W != cal->wq) memcpy(cal->wq, W, (size_t)n * sizeof(float));
    for (int64_t k = 0; k < n; k++) cal->wd[k] = (double)cal->wq[k];
    if ((st = mpq_quantize_matrix_ctx(c, cal->wq, li->rows, li->cols, mpq_calib_xtx_packed(cal, linear_index, NULL),
                                      err)) != MPQ_OK) {
        mpq_err_prefix(err, "layer %s", li->name);
        return st;
    }
    double sse = 0.0, wn = 0.0;
    for (int64_t k = 0; k < n; k++) {
        double w = cal->wd[k], e = (double)cal->wq[k] - w;
        cal->ed[k] = e;
        sse += e * e;
        wn += w * w;
    }
    out->sse = sse;
    out->rel = wn > 0 ? sse / wn : (sse > 0 ? INFINITY : 0.0);
    out->act_err = NAN;
    out->act_rel = NAN;
    int64_t cols = 0;
    const double *P = mpq_calib_xtx_packed(cal, linear_index, &cols);
    if (P && cols == li->cols && cols <= cal->max_cols && cal->sfull) {
        double *S = cal->sfull; /* this worker's unpacked copy: dsymm reads the upper triangle */
        unpack_upper(S, P, cols);
        out->act_err = quad_trace(cal->ed, S, cal->md, li->rows, cols);
        if (out->act_err < 0) out->act_err = 0; /* S is PSD; only rounding can make it negative */
        double den = quad_trace(cal->wd, S, cal->md, li->rows, cols);
        out->act_rel = den > 0 ? out->act_err / den : (out->act_err > 0 ? INFINITY : 0.0);
    }
    return MPQ_OK;
}

static void fill_result(const mpq_eval_stats *s, double seconds, mpq_calib_result *out) {
    out->kl = s->kl_mean;
    out->kl_se = s->kl_se;
    out->dloss = s->dnll_mean;
    out->dloss_se = s->dnll_se;
    out->top1 = s->top1;
    out->top1_se = s->top1_se;
    out->attn_rel = NAN;
    out->n_seqs = s->n_ref_seqs;
    out->n_tokens = s->n_ref_tokens;
    out->seconds = seconds;
}

/* Runs the single-layer measurement of linear layer li with the weights the caller put in
 * cal->wq: points the layer's slot of cal's weight table at them, evaluates, and points it
 * back at the model's tensor (also on error). */
static mpq_status eval_replaced_range(mpq_calib *cal, const mpq_layer_info *li, const char *what, double t0,
                                      int seq_begin, int seq_end, mpq_eval_stats *acc, double *seq_kl,
                                      mpq_calib_result *out, mpq_err *err) {
    float **slot = mpq_weights_linear_slot(cal->view, li);
    float *W = *slot; /* the model's tensor */
    *slot = cal->wq;
    mpq_eval_stats s;
    memset(&s, 0, sizeof s);
    if (acc) s = *acc;
    mpq_exec_opts eo = mpq_exec_opts_default();
    mpq_exec_entry entry = MPQ_EXEC_ENTRY_BLOCK;
    if (li->kind == MPQ_LAYER_ATTN_O) entry = MPQ_EXEC_ENTRY_ATTN_O;
    else if (li->kind == MPQ_LAYER_FFN_GATE || li->kind == MPQ_LAYER_FFN_UP || li->kind == MPQ_LAYER_FFN_DOWN)
        entry = MPQ_EXEC_ENTRY_FFN;
    mpq_status st;
    if (seq_end > 0) /* a range (mpq_calib_layer_range); layer 0 at its block is the whole forward */
        st = mpq_exec_eval_ref_entry_range(cal->ex, cal->view, &eo, cal->ref, cal->opts.prefix_reuse ? li->block : 0,
                                           cal->opts.prefix_reuse ? entry : MPQ_EXEC_ENTRY_BLOCK, seq_begin, seq_end,
                                           &s, seq_kl, err);
    else if (cal->opts.prefix_reuse)
        st = mpq_exec_eval_ref_entry(cal->ex, cal->view, &eo, cal->ref, li->block, entry, &s, err);
    else
        st = mpq_exec_eval_ref(cal->ex, cal->view, &eo, cal->ref, 0, &s, err);
    *slot = W; /* the model's tensor again, also on error */
    if (st != MPQ_OK) {
        mpq_err_prefix(err, "calib: %s %s", li->name, what);
        return st;
    }
    if (acc) *acc = s;
    fill_result(&s, mpq_time_now() - t0, out);
    return MPQ_OK;
}

static mpq_status eval_replaced(mpq_calib *cal, const mpq_layer_info *li, const char *what, double t0,
                                mpq_calib_result *out, mpq_err *err) {
    return eval_replaced_range(cal, li, what, t0, 0, 0, NULL, NULL, out, err);
}

/* Copies layer li's weights into the scratch cal->wq and quantizes them there with c (given
 * the layer's X^T X, which the SAQ candidates need). */
static mpq_status quantize_layer(mpq_calib *cal, int linear_index, const mpq_layer_info *li, const mpq_candidate *c,
                                 mpq_err *err) {
    const float *W = mpq_weights_linear_f32(cal->view, li, cal->wq); /* widened into wq when held in 16 bits */
    if (W != cal->wq) memcpy(cal->wq, W, (size_t)li->n_params * sizeof(float));
    mpq_status st =
        mpq_quantize_matrix_ctx(c, cal->wq, li->rows, li->cols, mpq_calib_xtx_packed(cal, linear_index, NULL), err);
    if (st != MPQ_OK) mpq_err_prefix(err, "layer %s", li->name);
    return st;
}

mpq_status mpq_calib_layer(mpq_calib *cal, int linear_index, const mpq_candidate *c,
                           mpq_calib_result *out, mpq_err *err) {
    mpq_status st = check_linear(cal, linear_index, c, out, err);
    if (st != MPQ_OK) return st;
    const double t0 = mpq_time_now();
    const mpq_layer_info *li = mpq_model_linear(cal->model, linear_index);
    if ((st = quantize_layer(cal, linear_index, li, c, err)) != MPQ_OK) return st;
    return eval_replaced(cal, li, c->name, t0, out, err);
}

mpq_status mpq_calib_layer_range(mpq_calib *cal, int linear_index, const mpq_candidate *c, int seq_begin,
                                 int seq_end, mpq_eval_stats *acc, double *seq_kl, mpq_calib_result *out,
                                 mpq_err *err) {
    mpq_status st = check_linear(cal, linear_index, c, out, err);
    if (st != MPQ_OK) return st;
    if (!acc) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: NULL accumulator");
    if (seq_end <= 0) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: empty window range [%d, %d)", seq_begin, seq_end);
    const double t0 = mpq_time_now();
    const mpq_layer_info *li = mpq_model_linear(cal->model, linear_index);
    if ((st = quantize_layer(cal, linear_index, li, c, err)) != MPQ_OK) return st;
    return eval_replaced_range(cal, li, c->name, t0, seq_begin, seq_end, acc, seq_kl, out, err);
}

mpq_status mpq_calib_layer_weights(mpq_calib *cal, int linear_index, const float *w, mpq_calib_result *out,
                                   mpq_err *err) {
    mpq_status st = check_linear(cal, linear_index, w, out, err);
    if (st != MPQ_OK) return st;
    const double t0 = mpq_time_now();
    const mpq_layer_info *li = mpq_model_linear(cal->model, linear_index);
    memcpy(cal->wq, w, (size_t)li->n_params * sizeof(float));
    return eval_replaced(cal, li, "(given weights)", t0, out, err);
}

/* Capture state of a KV unit: compares the attn_o input of one block with the stored FP one. */
typedef struct kv_capture {
    int target;      /* linear index of blk.b.attn_o */
    const float *fp; /* FP attention outputs of block b, (N, attn_cols) */
    int64_t fill, n; /* floats compared so far, total */
    double d2, f2;   /* sum (A_q - A_fp)^2, sum A_fp^2 */
} kv_capture;

static void kv_capture_fn(void *user, int idx, const float *x, int64_t rows, int64_t cols) {
    kv_capture *k = user;
    if (idx != k->target) return;
    int64_t n = rows * cols;
    if (k->fill + n > k->n) n = k->n - k->fill;
    const float *f = k->fp + k->fill;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - (double)f[i];
        k->d2 += d * d;
        k->f2 += (double)f[i] * (double)f[i];
    }
    k->fill += n;
}

/* One KV unit of block `block` with the cache precisions already in eo (kv_pairs or
 * kv_head_pairs): the evaluation against the reference, entering at the block with prefix
 * reuse, capturing the block's attention output for attn_rel (NAN when the reference kept none). */
static mpq_status kv_measure(mpq_calib *cal, int block, mpq_exec_opts *eo, mpq_calib_result *out, mpq_err *err) {
    const double t0 = mpq_time_now();
    kv_capture kc;
    memset(&kc, 0, sizeof kc);
    kc.target = -1;
    for (int i = 0; i < cal->n_lin && kc.target < 0; i++) {
        const mpq_layer_info *li = mpq_model_linear(cal->model, i);
        if (li->block == block && li->kind == MPQ_LAYER_ATTN_O) kc.target = i;
    }
    kc.n = cal->n_tokens * cal->attn_cols;
    kc.fp = mpq_exec_ref_attn_out(cal->ref, block);
    if (!kc.fp) kc.target = -1; /* no stored attention outputs: attn_rel stays NAN */
    eo->kv_scheme = cal->opts.kv_scheme;
    eo->capture = kv_capture_fn;
    eo->capture_user = &kc;
    mpq_eval_stats s;
    memset(&s, 0, sizeof s);
    mpq_status st = mpq_exec_eval_ref(cal->ex, mpq_model_get_weights(cal->model), eo, cal->ref,
                                      cal->opts.prefix_reuse ? block : 0, &s, err);
    if (st != MPQ_OK) return st;
    fill_result(&s, mpq_time_now() - t0, out);
    if (kc.target >= 0 && kc.fill == kc.n) out->attn_rel = kc.f2 > 0 ? sqrt(kc.d2 / kc.f2) : 0.0;
    return MPQ_OK;
}

mpq_status mpq_calib_kv(mpq_calib *cal, int block, mpq_kv_pair p, mpq_calib_result *out, mpq_err *err) {
    if (!cal || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: NULL argument");
    if (block < 0 || block >= cal->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "calib: block %d outside 0..%d", block, cal->n_layers - 1);
    mpq_kv_pair *pairs = mpq_calloc((size_t)cal->n_layers, sizeof *pairs);
    if (!pairs) return mpq_err_set(err, MPQ_ERR_NOMEM, "calib: out of memory");
    for (int l = 0; l < cal->n_layers; l++) pairs[l].k_bits = pairs[l].v_bits = 16;
    pairs[block] = p;
    mpq_exec_opts eo = mpq_exec_opts_default();
    eo.kv_saq = cal->opts.kv_saq;
    eo.kv_pairs = pairs;
    eo.n_kv_pairs = cal->n_layers;
    mpq_status st = kv_measure(cal, block, &eo, out, err);
    if (st != MPQ_OK) {
        char name[16];
        mpq_err_prefix(err, "calib: blk.%d %s", block, mpq_kv_pair_name(p, name, sizeof name));
    }
    free(pairs);
    return st;
}

mpq_status mpq_calib_kv_head(mpq_calib *cal, int block, int head, mpq_kv_pair p, mpq_calib_result *out,
                             mpq_err *err) {
    if (!cal || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "calib: NULL argument");
    const int nkv = mpq_model_get_config(cal->model)->n_kv_heads;
    if (block < 0 || block >= cal->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "calib: block %d outside 0..%d", block, cal->n_layers - 1);
    if (head < 0 || head >= nkv)
        return mpq_err_set(err, MPQ_ERR_INVALID, "calib: KV head %d outside 0..%d", head, nkv - 1);
    size_t n_hp = (size_t)cal->n_layers * (size_t)nkv;
    mpq_kv_pair *hp = mpq_calloc(n_hp, sizeof *hp);
    if (!hp) return mpq_err_set(err, MPQ_ERR_NOMEM, "calib: out of memory");
    for (size_t i = 0; i < n_hp; i++) hp[i].k_bits = hp[i].v_bits = 16;
    hp[(size_t)block * nkv + head] = p;
    mpq_exec_opts eo = mpq_exec_opts_default();
    eo.kv_head_pairs = hp;
    eo.n_kv_head_pairs = (int)n_hp;
    mpq_status st = kv_measure(cal, block, &eo, out, err);
    if (st != MPQ_OK) {
        char name[16];
        mpq_err_prefix(err, "calib: blk.%d head %d %s", block, head, mpq_kv_pair_name(p, name, sizeof name));
    }
    free(hp);
    return st;
}
