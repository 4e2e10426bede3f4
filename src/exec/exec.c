/* exec.c - the reference executor: batch forward over (B,T) with saved activations,
 * prefix reuse from any block, linear-input capture, incremental single-sequence decode
 * with a (quantizable) KV cache, and evaluation (cross-entropy, perplexity, KL to a stored
 * reference, top-1 agreement). Reference: llama2.c run.c (model, decode loop), llm.c
 * train_gpt2.c (one activation block, (B,T) layout), KIVI / KVTuner (KV pairs). */
#include "mpq/mpq_exec.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec_internal.h"
#include "exec/exec_kernels.h"

/* exec_acts, exec_decode and struct mpq_exec live in exec/exec_internal.h (shared with
 * backward.c). */

mpq_exec_opts mpq_exec_opts_default(void) {
    mpq_exec_opts o;
    memset(&o, 0, sizeof o);
    o.kv_scheme = mpq_kv_scheme_default();
    return o;
}

/* ---- block carving ---- */

typedef struct carve {
    float **ptr;
    size_t n;
} carve;

/* Sums the region sizes (overflow-checked), allocates one block and sets the pointers. */
static mpq_status carve_alloc(carve *c, int nc, float **block, size_t *total_out, const char *what,
                              mpq_err *err) {
    size_t total = 0;
    for (int i = 0; i < nc; i++)
        if (!mpq_size_add(total, c[i].n, &total))
            return mpq_err_set(err, MPQ_ERR_INVALID, "exec: %s: size overflow", what);
    float *b = mpq_calloc(total ? total : 1, sizeof(float));
    if (!b) return mpq_err_set(err, MPQ_ERR_NOMEM, "exec: %s: cannot allocate %zu floats", what, total);
    size_t off = 0;
    for (int i = 0; i < nc; i++) {
        *c[i].ptr = b + off;
        off += c[i].n;
    }
    *block = b;
    if (total_out) *total_out = total;
    return MPQ_OK;
}

static bool mul(size_t a, size_t b, size_t *out) { return mpq_size_mul(a, b, out); }

static mpq_status exec_create(const mpq_model *model, int max_B, int max_T, bool fwd_only, mpq_exec **out,
                              mpq_err *err);

mpq_status mpq_exec_create(const mpq_model *model, int max_B, int max_T, mpq_exec **out, mpq_err *err) {
    return exec_create(model, max_B, max_T, false, out, err);
}

mpq_status mpq_exec_create_forward(const mpq_model *model, int max_B, int max_T, mpq_exec **out, mpq_err *err) {
    return exec_create(model, max_B, max_T, true, out, err);
}

static mpq_status exec_create(const mpq_model *model, int max_B, int max_T, bool fwd_only, mpq_exec **out,
                              mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_exec *ex = NULL;
    if (!model || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    *out = NULL;
    if (!mpq_model_has_weights(model))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: %s: shape only (no weights loaded)", mpq_model_path(model));
    const mpq_model_config *cfg = mpq_model_get_config(model);
    if (max_B < 1 || max_T < 1 || max_T > cfg->seq_len) {
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: batch %d x %d: need B >= 1 and 1 <= T <= seq_len %d",
                           max_B, max_T, cfg->seq_len);
    }
    if (cfg->n_heads < 1 || cfg->n_kv_heads < 1 || cfg->n_heads % cfg->n_kv_heads != 0 || cfg->head_dim < 2 ||
        cfg->head_dim % 2 != 0 || cfg->n_layers < 1 || cfg->dim < 1 || cfg->hidden_dim < 1 || cfg->vocab_size < 1) {
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: %s: unsupported model shape (heads %d/%d, head_dim %d)",
                           mpq_model_path(model), cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
    }
    ex = mpq_calloc(1, sizeof *ex);
    if (!ex) return mpq_err_set(err, MPQ_ERR_NOMEM, "exec: out of memory");
    ex->model = model;
    ex->cfg = *cfg;
    ex->fwd_only = fwd_only;
    ex->max_B = max_B;
    ex->max_T = max_T;
    ex->qd = cfg->n_heads * cfg->head_dim;
    ex->kvd = cfg->n_kv_heads * cfg->head_dim;
    const size_t L = (size_t)cfg->n_layers, dim = (size_t)cfg->dim, hid = (size_t)cfg->hidden_dim;
    const size_t V = (size_t)cfg->vocab_size, qd = (size_t)ex->qd, kvd = (size_t)ex->kvd;
    const size_t T = (size_t)max_T, NH = (size_t)cfg->n_heads;
    size_t bt;
    if (!mul((size_t)max_B, T, &bt) || bt > (size_t)INT_MAX) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "exec: batch %d x %d overflows", max_B, max_T);
        goto done;
    }
    ex->bt_max = bt;

    /* layer table map */
    ex->lin = malloc(L * MPQ_N_LAYER_KINDS * sizeof(int));
    ex->tok = malloc(bt * sizeof(int));
    size_t half = (size_t)cfg->head_dim / 2, nrope = (size_t)cfg->seq_len * half;
    ex->rope_cos = malloc(nrope * sizeof(float));
    ex->rope_sin = malloc(nrope * sizeof(float));
    if (!ex->lin || !ex->tok || !ex->rope_cos || !ex->rope_sin) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "exec: out of memory");
        goto done;
    }
    for (size_t i = 0; i < L * MPQ_N_LAYER_KINDS; i++) ex->lin[i] = -1;
    for (int i = 0; i < mpq_model_n_linear(model); i++) {
        const mpq_layer_info *li = mpq_model_linear(model, i);
        if (li->block >= 0 && li->block < cfg->n_layers && (int)li->kind >= 0 && (int)li->kind < MPQ_N_LAYER_KINDS)
            ex->lin[(size_t)li->block * MPQ_N_LAYER_KINDS + li->kind] = i;
    }
    /* RoPE table as HF / llama2.c compute it: freq in float, angle = pos * freq in float */
    for (size_t p = 0; p < (size_t)cfg->seq_len; p++)
        for (size_t i = 0; i < half; i++) {
            float freq = (float)(1.0 / pow((double)cfg->rope_theta, (double)(2 * i) / (double)cfg->head_dim));
            float ang = (float)p * freq;
            ex->rope_cos[p * half + i] = (float)cos((double)ang);
            ex->rope_sin[p * half + i] = (float)sin((double)ang);
        }

    /* activation block sizes (overflow-checked) */
    size_t n_dim, n_qd, n_kvd, n_hid, n_att, n_V, n_L1dim, n_Ldim, n_Lqd, n_Lkvd, n_Lhid, n_Latt, n_L, n_TT;
    bool ok = mul(bt, dim, &n_dim) && mul(bt, qd, &n_qd) && mul(bt, kvd, &n_kvd) && mul(bt, hid, &n_hid) &&
              mpq_size_mul3(bt, NH, T, &n_att) && mul(bt, V, &n_V) && mul(L + 1, n_dim, &n_L1dim) &&
              mul(L, n_dim, &n_Ldim) && mul(L, n_qd, &n_Lqd) && mul(L, n_kvd, &n_Lkvd) && mul(L, n_hid, &n_Lhid) &&
              mul(L, n_att, &n_Latt) && mul(L, bt, &n_L) &&
              mpq_size_mul3(3, T < ATTN_BLOCK ? T : ATTN_BLOCK, T, &n_TT);
    if (!ok) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "exec: activations for batch %d x %d overflow", max_B, max_T);
        goto done;
    }
    exec_acts *a = &ex->a;
    if (fwd_only) { /* one layer's slice of what only a backward reads; no attention probabilities
                       (res, res2 and atty stay per layer: prefix reuse and the reference read them) */
        n_Ldim = n_dim, n_L = bt, n_Lqd = n_qd, n_Lkvd = n_kvd, n_Lhid = n_hid, n_Latt = 0;
    }
    carve regions[] = {
        {&a->res, n_L1dim}, {&a->ln1, n_Ldim},   {&a->ln1_rstd, n_L}, {&a->q, n_Lqd},     {&a->k, n_Lkvd},
        {&a->v, n_Lkvd},    {&a->kq, n_Lkvd},    {&a->vq, n_Lkvd},    {&a->att, n_Latt},  {&a->atty, fwd_only ? L * n_qd : n_Lqd},
        {&a->res2, fwd_only ? L * n_dim : n_Ldim}, {&a->ln2, n_Ldim},   {&a->ln2_rstd, n_L}, {&a->gate, n_Lhid}, {&a->up, n_Lhid},
        {&a->hact, n_Lhid}, {&a->lnf, n_dim},    {&a->lnf_rstd, bt},  {&a->logits, n_V},  {&a->proj, n_dim},
        {&a->scratch, n_TT}, {&a->row, 2 * V},
    };
    st = carve_alloc(regions, (int)(sizeof regions / sizeof regions[0]), &ex->act_block, &ex->act_floats,
                     "activations", err);
    if (st != MPQ_OK) goto done;
    if (fwd_only) a->att = NULL;
    if (mpq_model_weights_dtype(model) != MPQ_WEIGHTS_F32) { /* conversion scratch */
        size_t big = 0;
        for (int i = 0; i < mpq_model_n_linear(model); i++)
            if ((size_t)mpq_model_linear(model, i)->n_params > big) big = (size_t)mpq_model_linear(model, i)->n_params;
        ex->wbuf = mpq_calloc(big, sizeof(float));
        if (!ex->wbuf) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "exec: out of memory for the weight conversion scratch");
            goto done;
        }
    }
    if ((st = mpq_eval_part_create(max_B, max_T, &ex->part, err)) != MPQ_OK) goto done;
    *out = ex;
    ex = NULL;
done:
    mpq_exec_free(ex);
    return st;
}

void mpq_exec_free(mpq_exec *ex) {
    if (!ex) return;
    free(ex->lin);
    free(ex->tok);
    free(ex->rope_cos);
    free(ex->rope_sin);
    free(ex->act_block);
    free(ex->d.block);
    free(ex->wbuf);
    mpq_eval_part_free(ex->part);
    free(ex);
}

size_t mpq_exec_activation_bytes(const mpq_exec *ex) { return ex ? ex->act_floats * sizeof(float) : 0; }

size_t mpq_exec_weight_scratch_bytes(const mpq_exec *ex) {
    if (!ex || !ex->wbuf) return 0;
    size_t big = 0;
    for (int i = 0; i < mpq_model_n_linear(ex->model); i++)
        if ((size_t)mpq_model_linear(ex->model, i)->n_params > big) big = (size_t)mpq_model_linear(ex->model, i)->n_params;
    return big * sizeof(float);
}

/* ---- weight access ---- */

const float *exec_weight(mpq_exec *ex, const mpq_weights *w, int l, mpq_layer_kind k) {
    int idx = ex->lin[(size_t)l * MPQ_N_LAYER_KINDS + k];
    const mpq_layer_info *li = idx >= 0 ? mpq_model_linear(ex->model, idx) : NULL;
    return li ? mpq_weights_linear_f32(w, li, ex->wbuf) : NULL;
}

/* Token embedding rows of tokens (N) into out (N, dim): encoder_forward, or the 16-bit rows
 * widened one by one (the same float32 values). */
static void embed_forward(mpq_exec *ex, const mpq_weights *w, float *out, const int *tokens, int N) {
    const int dim = ex->cfg.dim;
    if (w->tok_emb) {
        encoder_forward(out, tokens, w->tok_emb, N, dim);
        return;
    }
    for (int n = 0; n < N; n++)
        mpq_weights16_to_f32(w->dtype, w->tok_emb16 + (size_t)tokens[n] * dim, (size_t)dim, out + (size_t)n * dim);
}

/* ---- argument checks ---- */

static bool kv_bits_ok(int b) { return b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }

static mpq_status check_call(const mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *o, int B, int T,
                             mpq_err *err) {
    if (!w || !w->blocks || !(w->tok_emb || w->tok_emb16) || !w->classifier || !w->final_norm)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: weights missing");
    if ((w->blocks16 || !w->tok_emb) &&
        (!ex->wbuf || (w->dtype != MPQ_WEIGHTS_BF16 && w->dtype != MPQ_WEIGHTS_F16)))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: 16-bit weights on an executor created for a float32 model");
    if (w->n_layers != ex->cfg.n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: weights have %d layers, model %d", w->n_layers,
                           ex->cfg.n_layers);
    if (B < 1 || T < 1 || B > ex->max_B || T > ex->max_T)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: batch %d x %d outside the executor's 1..%d x 1..%d", B, T,
                           ex->max_B, ex->max_T);
    const mpq_kv_scheme *s = &o->kv_scheme;
    if (s->group_size < 1 || s->residual < 0 ||
        (s->mode != MPQ_KV_PER_TOKEN && s->mode != MPQ_KV_KIVI && s->mode != MPQ_KV_SAQ))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: kv scheme: group_size %d (>= 1), residual %d (>= 0), mode %d",
                           s->group_size, s->residual, (int)s->mode);
    if (o->kv_pairs) {
        if (o->n_kv_pairs != ex->cfg.n_layers)
            return mpq_err_set(err, MPQ_ERR_INVALID, "exec: %d kv pairs for %d layers", o->n_kv_pairs,
                               ex->cfg.n_layers);
        if (s->mode == MPQ_KV_SAQ) {
            mpq_status st = mpq_kv_saq_check(o->kv_saq, ex->cfg.n_layers, ex->cfg.n_kv_heads, ex->cfg.head_dim,
                                             "exec: kv scheme saq", err);
            if (st != MPQ_OK) return st;
        }
        for (int l = 0; l < o->n_kv_pairs; l++) {
            mpq_kv_pair p = o->kv_pairs[l];
            char nm[64];
            if (s->mode == MPQ_KV_SAQ) {
                for (int half = 0; half < 2; half++) {
                    int f = half ? p.v_bits : p.k_bits;
                    if (f == 16) continue;
                    mpq_status st = mpq_kv_saq_check_rate(mpq_kv_rate_q(f), ex->cfg.head_dim, err);
                    if (mpq_kv_rate_q(f) < 0)
                        st = mpq_err_set(err, MPQ_ERR_INVALID, "kv saq: %s is not a bit width", half ? "V" : "K");
                    if (st != MPQ_OK) {
                        mpq_err_prefix(err, "exec: kv pair %s of layer %d", mpq_kv_pair_name(p, nm, sizeof nm), l);
                        return st;
                    }
                }
            } else if (!kv_bits_ok(p.k_bits) || !kv_bits_ok(p.v_bits)) {
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "exec: kv pair of layer %d: %s (bits in {2,3,4,8,16}; fractional rates need kv "
                                   "scheme mode saq)",
                                   l, mpq_kv_pair_name(p, nm, sizeof nm));
            }
        }
    }
    if (o->kv_head_pairs) {
        const int nkv = ex->cfg.n_kv_heads, hd = ex->cfg.head_dim;
        if (s->mode == MPQ_KV_SAQ)
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "exec: per-head kv pairs with kv scheme saq (its rates are per layer) are not supported");
        if (o->n_kv_head_pairs != ex->cfg.n_layers * nkv)
            return mpq_err_set(err, MPQ_ERR_INVALID, "exec: %d per-head kv pairs for %d layers x %d KV heads",
                               o->n_kv_head_pairs, ex->cfg.n_layers, nkv);
        if (hd % s->group_size != 0)
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "exec: per-head kv pairs: group_size %d does not divide head_dim %d (a group would "
                               "straddle two KV heads)",
                               s->group_size, hd);
        for (int i = 0; i < o->n_kv_head_pairs; i++)
            if (!kv_bits_ok(o->kv_head_pairs[i].k_bits) || !kv_bits_ok(o->kv_head_pairs[i].v_bits))
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "exec: kv pair of layer %d head %d: k%dv%d (bits in {2,3,4,8,16})", i / nkv,
                                   i % nkv, o->kv_head_pairs[i].k_bits, o->kv_head_pairs[i].v_bits);
    }
    return MPQ_OK;
}

static mpq_status check_tokens(const mpq_exec *ex, const int *tok, size_t n, size_t row_len, mpq_err *err) {
    if (!tok) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: tokens NULL");
    for (size_t i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= ex->cfg.vocab_size)
            return mpq_err_set(err, MPQ_ERR_INVALID, "exec: token %d at sequence %zu position %zu outside vocab 0..%d",
                               tok[i], i / row_len, i % row_len, ex->cfg.vocab_size - 1);
    return MPQ_OK;
}

/* ---- batch forward ---- */

static void capture(const mpq_exec_opts *o, const mpq_exec *ex, int l, mpq_layer_kind kind, const float *x,
                    int64_t rows, int64_t cols) {
    if (!o->capture) return;
    int idx = ex->lin[(size_t)l * MPQ_N_LAYER_KINDS + kind];
    if (idx >= 0) o->capture(o->capture_user, idx, x, rows, cols);
}

/* Runs blocks l0.. and the head. entry says where block l0 starts: MPQ_EXEC_ENTRY_BLOCK at its
 * RMSNorm (res[l0] set), MPQ_EXEC_ENTRY_ATTN_O at wo (res[l0] and atty[l0] set),
 * MPQ_EXEC_ENTRY_FFN at the FFN RMSNorm (res2[l0] set). The operations run are the same ones,
 * in the same order, as those of a full pass, so the results are bitwise equal. */
static void run_blocks(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *o, int l0, mpq_exec_entry entry,
                       int B, int T, bool keep_att) {
    const mpq_model_config *c = &ex->cfg;
    exec_acts *a = &ex->a;
    const int N = B * T, dim = c->dim, qd = ex->qd, kvd = ex->kvd, hid = c->hidden_dim, hd = c->head_dim;
    const int NH = c->n_heads, NKV = c->n_kv_heads;
    const size_t BT = ex->bt_max, n = (size_t)N;
    const size_t att_stride = BT * (size_t)NH * (size_t)ex->max_T;
    if (keep_att && ex->att_T != T) {
        /* attention_forward writes only the block lower triangle of the (T,T) layout: zeros
         * elsewhere from the allocation, or cleared once when T changes */
        if (ex->att_T != 0) memset(a->att, 0, (size_t)c->n_layers * att_stride * sizeof(float));
        ex->att_T = T;
    }
    if (ex->fwd_only) keep_att = false;
    for (int l = l0; l < c->n_layers; l++) {
        const mpq_block_weights *bw = &w->blocks[l];
        const size_t L = (size_t)l, Ls = ex->fwd_only ? 0 : L; /* Ls: slice of what only a backward reads */
        float *x = a->res + L * BT * dim;
        float *ln1 = a->ln1 + Ls * BT * dim, *q = a->q + Ls * BT * qd;
        float *k = a->k + Ls * BT * kvd, *v = a->v + Ls * BT * kvd;
        float *kq = a->kq + Ls * BT * kvd, *vq = a->vq + Ls * BT * kvd;
        float *att = keep_att ? a->att + L * att_stride : NULL, *atty = a->atty + L * BT * qd;
        float *res2 = a->res2 + L * BT * dim, *ln2 = a->ln2 + Ls * BT * dim;
        float *gate = a->gate + Ls * BT * hid, *up = a->up + Ls * BT * hid, *hact = a->hact + Ls * BT * hid;
        float *xnext = a->res + (L + 1) * BT * dim;
        const mpq_exec_entry e = l == l0 ? entry : MPQ_EXEC_ENTRY_BLOCK;
        if (e == MPQ_EXEC_ENTRY_BLOCK) { /* attention */
            rmsnorm_forward(ln1, a->ln1_rstd + Ls * BT, x, bw->attn_norm, N, dim, c->norm_eps);
            capture(o, ex, l, MPQ_LAYER_ATTN_Q, ln1, N, dim);
            capture(o, ex, l, MPQ_LAYER_ATTN_K, ln1, N, dim);
            capture(o, ex, l, MPQ_LAYER_ATTN_V, ln1, N, dim);
            matmul_forward(q, ln1, exec_weight(ex, w, l, MPQ_LAYER_ATTN_Q), bw->bq, N, dim, qd);
            matmul_forward(k, ln1, exec_weight(ex, w, l, MPQ_LAYER_ATTN_K), bw->bk, N, dim, kvd);
            matmul_forward(v, ln1, exec_weight(ex, w, l, MPQ_LAYER_ATTN_V), bw->bv, N, dim, kvd);
            int kb = o->kv_pairs ? o->kv_pairs[l].k_bits : 16, vb = o->kv_pairs ? o->kv_pairs[l].v_bits : 16;
            const bool saq = o->kv_scheme.mode == MPQ_KV_SAQ;
            if (saq && kb != 16) kv_saq_forward(kq, k, N, kvd, l, kb, true, o->kv_saq); /* pre-RoPE keys */
            rope_forward(q, ex->rope_cos, ex->rope_sin, B, T, NH, hd);
            rope_forward(k, ex->rope_cos, ex->rope_sin, B, T, NKV, hd);
            const float *kqp = NULL, *vqp = NULL;
            if (o->kv_head_pairs) { /* per-(layer, KV head) pairs */
                const mpq_kv_pair *hp = o->kv_head_pairs + L * (size_t)NKV;
                kb = vb = 16;
                if (kv_quantize_heads_forward(kq, k, B, T, NKV, hd, hp, true, &o->kv_scheme)) kqp = kq;
                if (kv_quantize_heads_forward(vq, v, B, T, NKV, hd, hp, false, &o->kv_scheme)) vqp = vq;
            }
            if (saq && kb != 16) {
                rope_forward(kq, ex->rope_cos, ex->rope_sin, B, T, NKV, hd); /* the cache's keys, then RoPE */
                kqp = kq;
            } else if (kb < 16) {
                kv_quantize_forward(kq, k, B, T, kvd, kb, true, &o->kv_scheme);
                kqp = kq;
            }
            if (saq && vb != 16) {
                kv_saq_forward(vq, v, N, kvd, l, vb, false, o->kv_saq);
                vqp = vq;
            } else if (vb < 16) {
                kv_quantize_forward(vq, v, B, T, kvd, vb, false, &o->kv_scheme);
                vqp = vq;
            }
            attention_forward(atty, att, a->scratch, q, k, v, kqp, vqp, &o->kv_scheme, B, T, NH,
                              NKV, hd);
        }
        if (e != MPQ_EXEC_ENTRY_FFN) { /* wo and the residual */
            capture(o, ex, l, MPQ_LAYER_ATTN_O, atty, N, qd);
            matmul_forward(a->proj, atty, exec_weight(ex, w, l, MPQ_LAYER_ATTN_O), NULL, N, qd, dim);
            residual_forward(res2, x, a->proj, n * dim);
        }
        rmsnorm_forward(ln2, a->ln2_rstd + Ls * BT, res2, bw->ffn_norm, N, dim, c->norm_eps);
        capture(o, ex, l, MPQ_LAYER_FFN_GATE, ln2, N, dim);
        capture(o, ex, l, MPQ_LAYER_FFN_UP, ln2, N, dim);
        matmul_forward(gate, ln2, exec_weight(ex, w, l, MPQ_LAYER_FFN_GATE), NULL, N, dim, hid);
        matmul_forward(up, ln2, exec_weight(ex, w, l, MPQ_LAYER_FFN_UP), NULL, N, dim, hid);
        swiglu_forward(hact, gate, up, n * hid);
        capture(o, ex, l, MPQ_LAYER_FFN_DOWN, hact, N, hid);
        matmul_forward(a->proj, hact, exec_weight(ex, w, l, MPQ_LAYER_FFN_DOWN), NULL, N, hid, dim);
        residual_forward(xnext, res2, a->proj, n * dim);
    }
    /* head */
    float *xf = a->res + (size_t)c->n_layers * BT * dim;
    rmsnorm_forward(a->lnf, a->lnf_rstd, xf, w->final_norm, N, dim, c->norm_eps);
    matmul_forward(a->logits, a->lnf, w->classifier, NULL, N, dim, c->vocab_size);
    ex->B = B;
    ex->T = T;
}

mpq_status mpq_exec_forward(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const int *tokens,
                            int B, int T, mpq_err *err) {
    if (!ex) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL executor");
    mpq_exec_opts def = mpq_exec_opts_default();
    const mpq_exec_opts *o = opts ? opts : &def;
    mpq_status st = check_call(ex, w, o, B, T, err);
    if (st != MPQ_OK) return st;
    st = check_tokens(ex, tokens, (size_t)B * T, (size_t)T, err);
    if (st != MPQ_OK) return st;
    embed_forward(ex, w, ex->a.res, tokens, B * T);
    run_blocks(ex, w, o, 0, MPQ_EXEC_ENTRY_BLOCK, B, T, true);
    return MPQ_OK;
}

mpq_status mpq_exec_forward_from(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, int layer_start,
                                 const float *x_in, int B, int T, mpq_err *err) {
    if (!ex || !x_in) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    mpq_exec_opts def = mpq_exec_opts_default();
    const mpq_exec_opts *o = opts ? opts : &def;
    mpq_status st = check_call(ex, w, o, B, T, err);
    if (st != MPQ_OK) return st;
    if (layer_start < 0 || layer_start > ex->cfg.n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: layer_start %d outside 0..%d", layer_start, ex->cfg.n_layers);
    float *dst = ex->a.res + (size_t)layer_start * ex->bt_max * ex->cfg.dim;
    memmove(dst, x_in, (size_t)B * T * ex->cfg.dim * sizeof(float));
    run_blocks(ex, w, o, layer_start, MPQ_EXEC_ENTRY_BLOCK, B, T, false);
    return MPQ_OK;
}

mpq_status mpq_exec_forward_from_entry(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, int layer,
                                       mpq_exec_entry entry, const float *x_in, const float *a_in, int B, int T,
                                       mpq_err *err) {
    if (!ex || !x_in || (entry == MPQ_EXEC_ENTRY_ATTN_O && !a_in))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    if (entry != MPQ_EXEC_ENTRY_BLOCK && entry != MPQ_EXEC_ENTRY_ATTN_O && entry != MPQ_EXEC_ENTRY_FFN)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: entry %d (block, attn_o or ffn)", (int)entry);
    if (entry == MPQ_EXEC_ENTRY_BLOCK) return mpq_exec_forward_from(ex, w, opts, layer, x_in, B, T, err);
    mpq_exec_opts def = mpq_exec_opts_default();
    const mpq_exec_opts *o = opts ? opts : &def;
    mpq_status st = check_call(ex, w, o, B, T, err);
    if (st != MPQ_OK) return st;
    if (layer < 0 || layer >= ex->cfg.n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: entry inside block %d outside 0..%d", layer,
                           ex->cfg.n_layers - 1);
    const size_t L = (size_t)layer, n = (size_t)B * T, dim = (size_t)ex->cfg.dim;
    if (entry == MPQ_EXEC_ENTRY_FFN) {
        memmove(ex->a.res2 + L * ex->bt_max * dim, x_in, n * dim * sizeof(float));
    } else {
        memmove(ex->a.res + L * ex->bt_max * dim, x_in, n * dim * sizeof(float));
        memmove(ex->a.atty + L * ex->bt_max * (size_t)ex->qd, a_in, n * (size_t)ex->qd * sizeof(float));
    }
    run_blocks(ex, w, o, layer, entry, B, T, false);
    return MPQ_OK;
}

const float *mpq_exec_logits(const mpq_exec *ex) { return ex ? ex->a.logits : NULL; }

const float *mpq_exec_block_input(const mpq_exec *ex, int layer) {
    if (!ex || layer < 0 || layer > ex->cfg.n_layers) return NULL;
    return ex->a.res + (size_t)layer * ex->bt_max * ex->cfg.dim;
}

/* ---- evaluation ---- */

/* Standard error of the mean of n per-sequence values given their sum and sum of squares
 * (sample std / sqrt(n); 0 with fewer than 2 values). */
static double seq_se(double sum, double sumsq, int64_t n) {
    if (n < 2) return 0.0;
    double nn = (double)n, mean = sum / nn, var = (sumsq - nn * mean * mean) / (nn - 1.0);
    return var > 0 ? sqrt(var / nn) : 0.0;
}

static void stats_finish(mpq_eval_stats *s) {
    s->ce = s->n_tokens > 0 ? s->nll_sum / (double)s->n_tokens : 0.0;
    s->ppl = exp(s->ce);
    s->kl_mean = s->n_ref_tokens > 0 ? s->kl_sum / (double)s->n_ref_tokens : 0.0;
    s->top1 = s->n_ref_tokens > 0 ? (double)s->top1_same / (double)s->n_ref_tokens : 0.0;
    s->kl_se = 0.0;
    if (s->n_ref_seqs >= 2) {
        double nn = (double)s->n_ref_seqs, mean = s->kl_seq_sum / nn;
        double var = (s->kl_seq_sumsq - nn * mean * mean) / (nn - 1.0);
        s->kl_se = var > 0 ? sqrt(var / nn) : 0.0;
    }
    s->dnll_mean = s->n_ref_tokens > 0 ? s->dnll_sum / (double)s->n_ref_tokens : 0.0;
    s->dnll_se = seq_se(s->dnll_seq_sum, s->dnll_seq_sumsq, s->n_ref_seqs);
    s->top1_se = seq_se(s->top1_seq_sum, s->top1_seq_sumsq, s->n_ref_seqs);
}

/* ---- evaluation parts ----
 * A batch is scored into a part (per position: log p(target) and KL; per sequence: the
 * sequence's sums), and a part is added to the totals by replaying the additions in the
 * order the scoring loop meets them. Batches scored on different threads and added in batch
 * order therefore give the same bits as one thread adding as it goes. */
struct mpq_eval_part {
    int max_B, max_T;
    int B, T;            /* of the recorded batch (B = 0: empty) */
    bool has_ref;
    float *lp_tgt;       /* (B, T) log p(target) */
    double *kl;          /* (B, T) KL(P_ref || P) per position (has_ref) */
    double *kl_seq;      /* (B) sum over the sequence's positions of kl */
    double *dnll_seq;    /* (B) sum of nll - nll_ref */
    int64_t *top1_seq;   /* (B) positions whose argmax equals the reference's */
};

mpq_status mpq_eval_part_create(int max_B, int max_T, mpq_eval_part **out, mpq_err *err) {
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    *out = NULL;
    size_t n;
    if (max_B < 1 || max_T < 1 || !mpq_size_mul((size_t)max_B, (size_t)max_T, &n))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: evaluation part of %d x %d", max_B, max_T);
    mpq_eval_part *p = mpq_calloc(1, sizeof *p);
    if (!p) return mpq_err_set(err, MPQ_ERR_NOMEM, "exec: out of memory");
    p->max_B = max_B;
    p->max_T = max_T;
    p->lp_tgt = mpq_calloc(n, sizeof *p->lp_tgt);
    p->kl = mpq_calloc(n, sizeof *p->kl);
    p->kl_seq = mpq_calloc((size_t)max_B, sizeof *p->kl_seq);
    p->dnll_seq = mpq_calloc((size_t)max_B, sizeof *p->dnll_seq);
    p->top1_seq = mpq_calloc((size_t)max_B, sizeof *p->top1_seq);
    if (!p->lp_tgt || !p->kl || !p->kl_seq || !p->dnll_seq || !p->top1_seq) {
        mpq_eval_part_free(p);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "exec: evaluation part of %d x %d: out of memory", max_B, max_T);
    }
    *out = p;
    return MPQ_OK;
}

void mpq_eval_part_free(mpq_eval_part *p) {
    if (!p) return;
    free(p->lp_tgt);
    free(p->kl);
    free(p->kl_seq);
    free(p->dnll_seq);
    free(p->top1_seq);
    free(p);
}

void mpq_eval_stats_add(mpq_eval_stats *s, const mpq_eval_part *p) {
    if (!s || !p || p->B == 0) return;
    const int T = p->T;
    for (int b = 0; b < p->B; b++) {
        const size_t r0 = (size_t)b * (size_t)T;
        for (int t = 0; t < T; t++) s->nll_sum -= p->lp_tgt[r0 + t];
        if (p->has_ref) {
            for (int t = 0; t < T; t++) s->kl_sum += p->kl[r0 + t];
            s->top1_same += p->top1_seq[b];
        }
        s->n_tokens += T;
        s->n_seqs += 1;
        if (p->has_ref) {
            double m = p->kl_seq[b] / T;
            s->n_ref_tokens += T;
            s->n_ref_seqs += 1;
            s->kl_seq_sum += m;
            s->kl_seq_sumsq += m * m;
            double dm = p->dnll_seq[b] / T, tm = (double)p->top1_seq[b] / T;
            s->dnll_sum += p->dnll_seq[b];
            s->dnll_seq_sum += dm;
            s->dnll_seq_sumsq += dm * dm;
            s->top1_seq_sum += tm;
            s->top1_seq_sumsq += tm * tm;
        }
    }
    stats_finish(s);
}

/* The reference probability of a stored reference log-probability: exp_fast in float,
 * widened (relative error <= EXP_FAST_MAX_REL, exec_kernels.h). */
static double ref_prob(float lr) { return (double)exp_fast(lr); }

/* Scores the logits of the last forward against targets tokens[b*(T+1) + t + 1] into part
 * (B <= part->max_B, T <= part->max_T, checked by the callers). ref_p / ref_am (may be NULL)
 * are this batch's ref_prob of io->ref_logprobs and its argmax per position, precomputed by
 * a stored reference: the same values the loop below would compute. Without a reference and
 * without io->logprobs_out only log-sum-exp is computed (no log-probability row). */
static void score_batch(mpq_exec *ex, const int *tokens, int B, int T, const mpq_eval_io *io, const double *ref_p,
                        const int *ref_am, mpq_eval_part *part) {
    const int V = ex->cfg.vocab_size;
    part->B = B;
    part->T = T;
    part->has_ref = io && io->ref_logprobs;
    for (int b = 0; b < B; b++) {
        double kl_seq = 0.0, dnll_seq = 0.0;
        int64_t top1_seq = 0;
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            const float *lg = ex->a.logits + r * V;
            float *lp = (io && io->logprobs_out) ? io->logprobs_out + r * V : NULL;
            int tgt = tokens[(size_t)b * (T + 1) + t + 1], am = 0;
            float lpt;
            double lse = 0.0;
            if (io && io->logprobs_out) {
                am = logsoftmax_forward(lp, lg, V);
                lpt = lp[tgt];
            } else { /* the values logsoftmax_forward would store, computed where they are used */
                lse = logsumexp_forward(lg, V, &am);
                lpt = (float)((double)lg[tgt] - lse);
            }
            part->lp_tgt[r] = lpt;
            if (io && io->target_logprobs_out) io->target_logprobs_out[r] = lpt;
            if (io && io->logits_out) memcpy(io->logits_out + r * V, lg, (size_t)V * sizeof(float));
            if (io && io->ref_logprobs) {
                const float *rp = io->ref_logprobs + r * V;
                const double *pp = ref_p && ref_am ? ref_p + r * V : NULL; /* else exp_fast of rp */
                /* with lp stored, (float)((double)lp_i - 0.0) is lp_i: the same terms */
                double kl = io->logprobs_out ? kl_row_forward(pp, rp, lp, 0.0, V) : kl_row_forward(pp, rp, lg, lse, V);
                int ram = pp ? ref_am[r] : argmax_forward(rp, V);
                if (kl < 0.0) kl = 0.0; /* rounding of near-identical distributions */
                kl_seq += kl;
                part->kl[r] = kl;
                top1_seq += (ram == am);
                dnll_seq += (double)rp[tgt] - (double)lpt; /* nll - nll_ref */
            }
        }
        part->kl_seq[b] = kl_seq;
        part->dnll_seq[b] = dnll_seq;
        part->top1_seq[b] = top1_seq;
    }
}

/* Forward over tokens (B, T+1) and score into part (ex->part when part is NULL); ref_p /
 * ref_am: the reference's precomputed exp / argmax of this batch (may be NULL). */
static mpq_status eval_tokens(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const int *tokens, int B,
                              int T, const mpq_eval_io *io, const double *ref_p, const int *ref_am,
                              mpq_eval_part *part, mpq_err *err) {
    mpq_exec_opts def = mpq_exec_opts_default();
    const mpq_exec_opts *o = opts ? opts : &def;
    mpq_status st = check_call(ex, w, o, B, T, err);
    if (st != MPQ_OK) return st;
    st = check_tokens(ex, tokens, (size_t)B * (T + 1), (size_t)T + 1, err);
    if (st != MPQ_OK) return st;
    for (int b = 0; b < B; b++) memcpy(ex->tok + (size_t)b * T, tokens + (size_t)b * (T + 1), (size_t)T * sizeof(int));
    embed_forward(ex, w, ex->a.res, ex->tok, B * T);
    run_blocks(ex, w, o, 0, MPQ_EXEC_ENTRY_BLOCK, B, T, false);
    score_batch(ex, tokens, B, T, io, ref_p, ref_am, part);
    return MPQ_OK;
}

mpq_status mpq_exec_eval(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const int *tokens, int B,
                         int T, const mpq_eval_io *io, mpq_eval_stats *stats, mpq_err *err) {
    if (!ex || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    mpq_status st = eval_tokens(ex, w, opts, tokens, B, T, io, NULL, NULL, ex->part, err);
    if (st == MPQ_OK) mpq_eval_stats_add(stats, ex->part);
    return st;
}

mpq_status mpq_exec_eval_part(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const int *tokens, int B,
                              int T, const mpq_eval_io *io, mpq_eval_part *part, mpq_err *err) {
    if (!ex || !part) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    if (B > part->max_B || T > part->max_T)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: batch %d x %d exceeds the evaluation part's %d x %d", B, T,
                           part->max_B, part->max_T);
    part->B = 0;
    return eval_tokens(ex, w, opts, tokens, B, T, io, NULL, NULL, part, err);
}

/* ---- stored reference ---- */

struct mpq_exec_ref {
    int n_seqs, T, n_layers, dim, vocab, qd;
    int *tokens;      /* (n_seqs, T+1) */
    float *logprobs;  /* (n_seqs, T, V) */
    float *res;       /* (L, n_seqs, T, dim) or NULL: residual entering each block */
    float *res2;      /* (L, n_seqs, T, dim) or NULL: residual after each block's attention */
    float *atty;      /* (L, n_seqs, T, qd) or NULL: attention output (input of wo) */
    int *am;          /* (n_seqs, T) argmax of logprobs (first maximum) */
    double *p;        /* (n_seqs, T, V) ref_prob(logprobs), or NULL (over MPQ_EXEC_REF_P_MAX) */
    mpq_eval_stats stats;
};

void mpq_exec_ref_free(mpq_exec_ref *ref) {
    if (!ref) return;
    free(ref->tokens);
    free(ref->logprobs);
    free(ref->res);
    free(ref->res2);
    free(ref->atty);
    free(ref->am);
    free(ref->p);
    free(ref);
}

const float *mpq_exec_ref_attn_out(const mpq_exec_ref *ref, int layer) {
    if (!ref || !ref->atty || layer < 0 || layer >= ref->n_layers) return NULL;
    return ref->atty + (size_t)layer * (size_t)ref->n_seqs * (size_t)ref->T * (size_t)ref->qd;
}

int mpq_exec_ref_n_seqs(const mpq_exec_ref *ref) { return ref ? ref->n_seqs : 0; }
int mpq_exec_ref_T(const mpq_exec_ref *ref) { return ref ? ref->T : 0; }
const mpq_eval_stats *mpq_exec_ref_stats(const mpq_exec_ref *ref) { return ref ? &ref->stats : NULL; }
const float *mpq_exec_ref_logprobs(const mpq_exec_ref *ref) { return ref ? ref->logprobs : NULL; }

mpq_status mpq_exec_ref_build(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const int *tokens,
                              int n_seqs, int T, bool keep_residuals, mpq_exec_ref **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_exec_ref *ref = NULL;
    if (!ex || !tokens || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    *out = NULL;
    if (n_seqs < 1 || T < 1 || T > ex->max_T)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: reference of %d sequences x %d tokens (T 1..%d)", n_seqs, T,
                           ex->max_T);
    const size_t dim = (size_t)ex->cfg.dim, V = (size_t)ex->cfg.vocab_size, L = (size_t)ex->cfg.n_layers;
    const size_t qd = (size_t)ex->qd;
    size_t n_tok, n_lp, n_res = 0, n_att = 0;
    if (!mpq_size_mul((size_t)n_seqs, (size_t)T + 1, &n_tok) || !mpq_size_mul3((size_t)n_seqs, (size_t)T, V, &n_lp) ||
        (keep_residuals && (!mpq_size_mul3(L, (size_t)n_seqs * (size_t)T, dim, &n_res) ||
                            !mpq_size_mul3(L, (size_t)n_seqs * (size_t)T, qd, &n_att))))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: reference of %d x %d overflows", n_seqs, T);
    ref = mpq_calloc(1, sizeof *ref);
    if (!ref) return mpq_err_set(err, MPQ_ERR_NOMEM, "exec: out of memory");
    ref->n_seqs = n_seqs;
    ref->T = T;
    ref->n_layers = (int)L;
    ref->dim = (int)dim;
    ref->vocab = (int)V;
    ref->qd = (int)qd;
    ref->tokens = mpq_calloc(n_tok, sizeof(int));
    ref->logprobs = mpq_calloc(n_lp, sizeof(float));
    ref->am = mpq_calloc((size_t)n_seqs * (size_t)T, sizeof(int));
    if (keep_residuals) {
        ref->res = mpq_calloc(n_res, sizeof(float));
        ref->res2 = mpq_calloc(n_res, sizeof(float));
        ref->atty = mpq_calloc(n_att, sizeof(float));
    }
    if (!ref->tokens || !ref->logprobs || !ref->am || (keep_residuals && (!ref->res || !ref->res2 || !ref->atty))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "exec: reference of %d x %d: cannot allocate %zu floats", n_seqs, T,
                         n_lp + 2 * n_res + n_att);
        goto done;
    }
    /* exp of the log-probs in double, only when it fits MPQ_EXEC_REF_P_MAX (an optional cache:
     * without it every evaluation recomputes the same values) */
    if (n_lp <= MPQ_EXEC_REF_P_MAX / sizeof(double)) ref->p = malloc(n_lp * sizeof(double));
    memcpy(ref->tokens, tokens, n_tok * sizeof(int));
    for (int s0 = 0; s0 < n_seqs; s0 += ex->max_B) {
        int nb = n_seqs - s0 < ex->max_B ? n_seqs - s0 : ex->max_B;
        mpq_eval_io io = {0};
        io.logprobs_out = ref->logprobs + (size_t)s0 * T * V;
        st = mpq_exec_eval(ex, w, opts, ref->tokens + (size_t)s0 * (T + 1), nb, T, &io, &ref->stats, err);
        if (st != MPQ_OK) goto done;
        if (keep_residuals)
            for (size_t l = 0; l < L; l++) {
                const size_t nbt = (size_t)nb * T, off = (l * n_seqs + s0) * (size_t)T;
                memcpy(ref->res + off * dim, mpq_exec_block_input(ex, (int)l), nbt * dim * sizeof(float));
                memcpy(ref->res2 + off * dim, ex->a.res2 + l * ex->bt_max * dim, nbt * dim * sizeof(float));
                memcpy(ref->atty + off * qd, ex->a.atty + l * ex->bt_max * qd, nbt * qd * sizeof(float));
            }
    }
    /* per position: argmax (first maximum) and, when cached, exp in double (as score_batch) */
    for (size_t r = 0; r < (size_t)n_seqs * (size_t)T; r++) {
        const float *rp = ref->logprobs + r * V;
        ref->am[r] = argmax_forward(rp, (int)V);
        if (ref->p)
            for (size_t i = 0; i < V; i++) ref->p[r * V + i] = ref_prob(rp[i]);
    }
    *out = ref;
    ref = NULL;
done:
    mpq_exec_ref_free(ref);
    return st;
}

static mpq_status ref_check(const mpq_exec *ex, const mpq_exec_ref *ref, int layer, mpq_exec_entry entry,
                            mpq_err *err) {
    if (ref->vocab != ex->cfg.vocab_size || ref->dim != ex->cfg.dim || ref->n_layers != ex->cfg.n_layers ||
        ref->qd != ex->qd)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: reference was built for another model shape");
    if (entry != MPQ_EXEC_ENTRY_BLOCK && entry != MPQ_EXEC_ENTRY_ATTN_O && entry != MPQ_EXEC_ENTRY_FFN)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: entry %d (block, attn_o or ffn)", (int)entry);
    if (layer < 0 || layer >= ref->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: layer_start %d: residuals are stored for blocks 0..%d", layer,
                           ref->n_layers - 1);
    if ((layer > 0 || entry != MPQ_EXEC_ENTRY_BLOCK) && !ref->res)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: layer_start %d needs a reference with stored residuals (0..%d)",
                           layer, ref->n_layers - 1);
    return MPQ_OK;
}

/* Batch `batch` (sequences batch*max_B ..) of a reference evaluation, scored into part. */
static mpq_status ref_batch(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const mpq_exec_ref *ref,
                            int layer, mpq_exec_entry entry, int batch, mpq_eval_part *part, mpq_err *err) {
    const int T = ref->T, s0 = batch * ex->max_B;
    const int nb = ref->n_seqs - s0 < ex->max_B ? ref->n_seqs - s0 : ex->max_B;
    const size_t V = (size_t)ref->vocab, dim = (size_t)ref->dim, qd = (size_t)ref->qd;
    const int *tok = ref->tokens + (size_t)s0 * (T + 1);
    const size_t off = (size_t)s0 * (size_t)T;
    mpq_eval_io io = {0};
    io.ref_logprobs = ref->logprobs + off * V;
    if (layer == 0 && entry == MPQ_EXEC_ENTRY_BLOCK)
        return eval_tokens(ex, w, opts, tok, nb, T, &io, ref->p ? ref->p + off * V : NULL, ref->am + off, part, err);
    const size_t row = ((size_t)layer * (size_t)ref->n_seqs + (size_t)s0) * (size_t)T;
    const float *x = entry == MPQ_EXEC_ENTRY_FFN ? ref->res2 + row * dim : ref->res + row * dim;
    mpq_status st = mpq_exec_forward_from_entry(ex, w, opts, layer, entry, x, ref->atty + row * qd, nb, T, err);
    if (st == MPQ_OK) score_batch(ex, tok, nb, T, &io, ref->p ? ref->p + off * V : NULL, ref->am + off, part);
    return st;
}

mpq_status mpq_exec_eval_ref_entry(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                   const mpq_exec_ref *ref, int layer, mpq_exec_entry entry, mpq_eval_stats *stats,
                                   mpq_err *err) {
    if (!ex || !ref || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    mpq_status st = ref_check(ex, ref, layer, entry, err);
    if (st != MPQ_OK) return st;
    const int n_batches = (ref->n_seqs + ex->max_B - 1) / ex->max_B;
    for (int k = 0; k < n_batches; k++) {
        if ((st = ref_batch(ex, w, opts, ref, layer, entry, k, ex->part, err)) != MPQ_OK) return st;
        mpq_eval_stats_add(stats, ex->part);
    }
    return MPQ_OK;
}

mpq_status mpq_exec_eval_ref_entry_range(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                         const mpq_exec_ref *ref, int layer, mpq_exec_entry entry, int seq_begin,
                                         int seq_end, mpq_eval_stats *stats, double *seq_kl, mpq_err *err) {
    if (!ex || !ref || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    mpq_status st = ref_check(ex, ref, layer, entry, err);
    if (st != MPQ_OK) return st;
    if (seq_begin < 0 || seq_begin >= seq_end || seq_end > ref->n_seqs || seq_begin % ex->max_B != 0 ||
        (seq_end % ex->max_B != 0 && seq_end != ref->n_seqs))
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "exec: sequences [%d, %d) of %d are not whole batches of %d", seq_begin, seq_end,
                           ref->n_seqs, ex->max_B);
    for (int k = seq_begin / ex->max_B; k * ex->max_B < seq_end; k++) {
        if ((st = ref_batch(ex, w, opts, ref, layer, entry, k, ex->part, err)) != MPQ_OK) return st;
        mpq_eval_stats_add(stats, ex->part);
        for (int b = 0; seq_kl && b < ex->part->B; b++)
            seq_kl[k * ex->max_B + b - seq_begin] = ex->part->kl_seq[b] / ex->part->T; /* as added to kl_seq_sum */
    }
    return MPQ_OK;
}

/* mpq_exec_eval_ref_workers: worker i evaluates with exs[i] into parts[i]. */
typedef struct ref_work {
    mpq_exec **exs;
    mpq_eval_part **parts;
    const mpq_weights *w;
    const mpq_exec_opts *opts;
    const mpq_exec_ref *ref;
    int layer;
    mpq_eval_stats *stats;
} ref_work;

static mpq_status ref_work_compute(void *user, int worker, int batch, mpq_err *err) {
    ref_work *rw = user;
    return ref_batch(rw->exs[worker], rw->w, rw->opts, rw->ref, rw->layer, MPQ_EXEC_ENTRY_BLOCK, batch,
                     rw->parts[worker], err);
}

static mpq_status ref_work_commit(void *user, int worker, int batch, mpq_err *err) {
    (void)batch;
    (void)err;
    ref_work *rw = user;
    mpq_eval_stats_add(rw->stats, rw->parts[worker]);
    return MPQ_OK;
}

mpq_status mpq_exec_eval_ref_workers(mpq_exec *ex, int n_workers, const mpq_weights *w, const mpq_exec_opts *opts,
                                     const mpq_exec_ref *ref, int layer_start, mpq_eval_stats *stats, mpq_err *err) {
    if (!ex || !ref || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    const int n_batches = (ref->n_seqs + ex->max_B - 1) / ex->max_B;
    if (n_workers > n_batches) n_workers = n_batches;
    if (n_workers <= 1) return mpq_exec_eval_ref(ex, w, opts, ref, layer_start, stats, err);
    mpq_status st = ref_check(ex, ref, layer_start, MPQ_EXEC_ENTRY_BLOCK, err);
    if (st != MPQ_OK) return st;
    mpq_exec **exs = mpq_calloc((size_t)n_workers, sizeof *exs);
    mpq_eval_part **parts = mpq_calloc((size_t)n_workers, sizeof *parts);
    if (!exs || !parts) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "exec: out of memory for %d workers", n_workers);
        goto done;
    }
    exs[0] = ex;
    parts[0] = ex->part;
    for (int i = 1; i < n_workers && st == MPQ_OK; i++)
        if ((st = exec_create(ex->model, ex->max_B, ex->max_T, ex->fwd_only, &exs[i], err)) == MPQ_OK)
            parts[i] = exs[i]->part;
    if (st != MPQ_OK) goto done;
    ref_work rw = {.exs = exs, .parts = parts, .w = w, .opts = opts, .ref = ref, .layer = layer_start, .stats = stats};
    st = mpq_exec_batches_run(n_workers, n_batches, ref_work_compute, ref_work_commit, &rw, err);
done:
    for (int i = 1; exs && i < n_workers; i++) mpq_exec_free(exs[i]);
    free(exs);
    free(parts);
    return st;
}


/* Prefix reuse from another model's run: the residuals / attention outputs entering block
 * `layer` at `entry` come from `from` (same tokens, built with keep_residuals), the scores
 * (KL, top-1, nll_ref) are against `ref`. */
mpq_status mpq_exec_eval_ref_entry_from(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                        const mpq_exec_ref *ref, const mpq_exec_ref *from, int layer,
                                        mpq_exec_entry entry, mpq_eval_stats *stats, mpq_err *err) {
    if (!ex || !ref || !from || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL argument");
    if (ref->vocab != ex->cfg.vocab_size || ref->dim != ex->cfg.dim || ref->n_layers != ex->cfg.n_layers ||
        ref->qd != ex->qd || from->dim != ref->dim || from->n_layers != ref->n_layers || from->qd != ref->qd)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: reference was built for another model shape");
    if (from->n_seqs != ref->n_seqs || from->T != ref->T ||
        memcmp(from->tokens, ref->tokens, (size_t)ref->n_seqs * (size_t)(ref->T + 1) * sizeof *ref->tokens) != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: the two references were run on different tokens");
    if (entry != MPQ_EXEC_ENTRY_BLOCK && entry != MPQ_EXEC_ENTRY_ATTN_O && entry != MPQ_EXEC_ENTRY_FFN)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: entry %d (block, attn_o or ffn)", (int)entry);
    if (layer < 0 || layer >= ref->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: layer_start %d: residuals are stored for blocks 0..%d", layer,
                           ref->n_layers - 1);
    if (!from->res)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: entering from another run needs its stored residuals");
    const int T = ref->T;
    const size_t V = (size_t)ref->vocab, dim = (size_t)ref->dim, qd = (size_t)ref->qd;
    const size_t per_layer = (size_t)layer * (size_t)ref->n_seqs;
    for (int s0 = 0; s0 < ref->n_seqs; s0 += ex->max_B) {
        int nb = ref->n_seqs - s0 < ex->max_B ? ref->n_seqs - s0 : ex->max_B;
        const int *tok = ref->tokens + (size_t)s0 * (T + 1);
        const size_t off = (size_t)s0 * (size_t)T;
        mpq_eval_io io = {0};
        io.ref_logprobs = ref->logprobs + off * V;
        const size_t row = (per_layer + (size_t)s0) * (size_t)T;
        const float *x = entry == MPQ_EXEC_ENTRY_FFN ? from->res2 + row * dim : from->res + row * dim;
        mpq_status st = mpq_exec_forward_from_entry(ex, w, opts, layer, entry, x, from->atty + row * qd, nb, T, err);
        if (st != MPQ_OK) return st;
        score_batch(ex, tok, nb, T, &io, ref->p ? ref->p + off * V : NULL, ref->am + off, ex->part);
        mpq_eval_stats_add(stats, ex->part); /* the additions one scoring pass makes, in order */
    }
    return MPQ_OK;
}

mpq_status mpq_exec_eval_ref(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const mpq_exec_ref *ref,
                             int layer_start, mpq_eval_stats *stats, mpq_err *err) {
    if (ref && layer_start == ref->n_layers && layer_start > 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: layer_start %d: residuals are stored for blocks 0..%d",
                           layer_start, ref->n_layers - 1);
    return mpq_exec_eval_ref_entry(ex, w, opts, ref, layer_start, MPQ_EXEC_ENTRY_BLOCK, stats, err);
}

/* ---- incremental decode ---- */

void mpq_exec_decode_reset(mpq_exec *ex) {
    if (ex) ex->pos = 0;
}

int mpq_exec_decode_pos(const mpq_exec *ex) { return ex ? ex->pos : 0; }

static mpq_status decode_alloc(mpq_exec *ex, mpq_err *err) {
    if (ex->d.block) return MPQ_OK;
    const mpq_model_config *c = &ex->cfg;
    exec_decode *d = &ex->d;
    size_t cache;
    if (!mpq_size_mul3((size_t)c->n_layers, (size_t)c->seq_len, (size_t)ex->kvd, &cache))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: KV cache size overflows");
    carve regions[] = {
        {&d->x, (size_t)c->dim},          {&d->xb, (size_t)c->dim},         {&d->xb2, (size_t)c->dim},
        {&d->q, (size_t)ex->qd},          {&d->att, (size_t)c->seq_len},     {&d->hb, (size_t)c->hidden_dim},
        {&d->hb2, (size_t)c->hidden_dim}, {&d->hb3, (size_t)c->hidden_dim}, {&d->logits, (size_t)c->vocab_size}, {&d->kc, cache},
        {&d->vc, cache},                  {&d->kqc, cache},                  {&d->vqc, cache},
    };
    return carve_alloc(regions, (int)(sizeof regions / sizeof regions[0]), &d->block, NULL, "KV cache", err);
}

static void matvec(float *out, const float *w, const float *x, const float *bias, int rows, int cols) {
    // out (rows) = w (rows, cols) @ x (cols) + bias
    float beta = 0.0f;
    if (bias) {
        memcpy(out, bias, (size_t)rows * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w, cols, x, 1, beta, out, 1);
}

mpq_status mpq_exec_decode_step(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, int token,
                                const float **logits, mpq_err *err) {
    if (!ex) return mpq_err_set(err, MPQ_ERR_INVALID, "exec: NULL executor");
    mpq_exec_opts def = mpq_exec_opts_default();
    const mpq_exec_opts *o = opts ? opts : &def;
    mpq_status st = check_call(ex, w, o, 1, 1, err);
    if (st != MPQ_OK) return st;
    if (o->kv_head_pairs)
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "exec: decode: per-head kv pairs are supported in batch mode only");
    const mpq_model_config *c = &ex->cfg;
    if (ex->pos >= c->seq_len)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: decode: KV cache full (%d tokens)", c->seq_len);
    if (token < 0 || token >= c->vocab_size)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: decode: token %d at position %d outside vocab 0..%d", token,
                           ex->pos, c->vocab_size - 1);
    st = decode_alloc(ex, err);
    if (st != MPQ_OK) return st;
    exec_decode *d = &ex->d;
    const int dim = c->dim, kvd = ex->kvd, hd = c->head_dim, hid = c->hidden_dim, t = ex->pos;
    const int NH = c->n_heads, rep = c->n_heads / c->n_kv_heads, half = hd / 2;
    const size_t S = (size_t)c->seq_len;
    const mpq_kv_scheme *s = &o->kv_scheme;
    const float scale = (float)(1.0 / sqrt((double)hd));
    float rstd;
    embed_forward(ex, w, d->x, &token, 1);
    for (int l = 0; l < c->n_layers; l++) {
        const mpq_block_weights *bw = &w->blocks[l];
        float *kc = d->kc + (size_t)l * S * kvd, *vc = d->vc + (size_t)l * S * kvd;
        float *kqc = d->kqc + (size_t)l * S * kvd, *vqc = d->vqc + (size_t)l * S * kvd;
        float *krow = kc + (size_t)t * kvd, *vrow = vc + (size_t)t * kvd;
        rmsnorm_forward(d->xb, &rstd, d->x, bw->attn_norm, 1, dim, c->norm_eps);
        matvec(d->q, exec_weight(ex, w, l, MPQ_LAYER_ATTN_Q), d->xb, bw->bq, ex->qd, dim);
        matvec(krow, exec_weight(ex, w, l, MPQ_LAYER_ATTN_K), d->xb, bw->bk, kvd, dim);
        matvec(vrow, exec_weight(ex, w, l, MPQ_LAYER_ATTN_V), d->xb, bw->bv, kvd, dim);
        int kb = o->kv_pairs ? o->kv_pairs[l].k_bits : 16, vb = o->kv_pairs ? o->kv_pairs[l].v_bits : 16;
        const bool saq = s->mode == MPQ_KV_SAQ;
        float *kqrow = kqc + (size_t)t * kvd;
        if (saq && kb != 16) kv_saq_forward(kqrow, krow, 1, kvd, l, kb, true, o->kv_saq); /* pre-RoPE keys */
        /* RoPE at position t (same table and formula as the batch kernel) */
        const float *cs = ex->rope_cos + (size_t)t * half, *sn = ex->rope_sin + (size_t)t * half;
        const int nrope = NH + c->n_kv_heads * (saq && kb != 16 ? 2 : 1);
        for (int h = 0; h < nrope; h++) {
            float *vec = h < NH ? d->q + (size_t)h * hd
                                : h < NH + c->n_kv_heads ? krow + (size_t)(h - NH) * hd
                                                         : kqrow + (size_t)(h - NH - c->n_kv_heads) * hd;
            for (int i = 0; i < half; i++) {
                float v0 = vec[2 * i], v1 = vec[2 * i + 1];
                vec[2 * i] = v0 * cs[i] - v1 * sn[i];
                vec[2 * i + 1] = v0 * sn[i] + v1 * cs[i];
            }
        }
        /* quantized copies, exactly as the batch emulation forms them */
        if (saq) {
            if (vb != 16) kv_saq_forward(vqc + (size_t)t * kvd, vrow, 1, kvd, l, vb, false, o->kv_saq);
        } else if (kb < 16) {
            if (s->mode == MPQ_KV_KIVI) {
                if ((t + 1) % s->group_size == 0) {
                    int g0 = t + 1 - s->group_size;
                    kv_quantize_forward(kqc + (size_t)g0 * kvd, kc + (size_t)g0 * kvd, 1, s->group_size, kvd, kb, true, s);
                }
            } else {
                kv_quantize_forward(kqc + (size_t)t * kvd, krow, 1, 1, kvd, kb, true, s);
            }
        }
        if (!saq && vb < 16) kv_quantize_forward(vqc + (size_t)t * kvd, vrow, 1, 1, kvd, vb, false, s);
        int nqk = kb != 16 ? kv_n_quant(t, true, s) : 0;
        int nqv = vb != 16 ? kv_n_quant(t, false, s) : 0;
        for (int h = 0; h < NH; h++) {
            size_t ko = (size_t)(h / rep) * hd;
            const float *qh = d->q + (size_t)h * hd;
            float *outh = d->xb2 + (size_t)h * hd;
            /* scores (t+1) = K[0..t] (t+1, hd) @ q (hd), quantized prefix from kqc */
            if (nqk > 0)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, nqk, hd, scale, kqc + ko, kvd, qh, 1, 0.0f, d->att, 1);
            if (t + 1 - nqk > 0)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, t + 1 - nqk, hd, scale, kc + (size_t)nqk * kvd + ko, kvd, qh, 1,
                            0.0f, d->att + nqk, 1);
            softmax_row_forward(d->att, t + 1, t + 1); /* as the batch kernel */
            /* out (hd) = V[0..t]^T (hd, t+1) @ p (t+1) */
            float beta = 0.0f;
            if (nqv > 0) {
                cblas_sgemv(CblasRowMajor, CblasTrans, nqv, hd, 1.0f, vqc + ko, kvd, d->att, 1, 0.0f, outh, 1);
                beta = 1.0f;
            }
            if (t + 1 - nqv > 0)
                cblas_sgemv(CblasRowMajor, CblasTrans, t + 1 - nqv, hd, 1.0f, vc + (size_t)nqv * kvd + ko, kvd,
                            d->att + nqv, 1, beta, outh, 1);
        }
        matvec(d->xb, exec_weight(ex, w, l, MPQ_LAYER_ATTN_O), d->xb2, NULL, dim, ex->qd);
        residual_forward(d->x, d->x, d->xb, (size_t)dim);
        rmsnorm_forward(d->xb, &rstd, d->x, bw->ffn_norm, 1, dim, c->norm_eps);
        matvec(d->hb, exec_weight(ex, w, l, MPQ_LAYER_FFN_GATE), d->xb, NULL, hid, dim);
        matvec(d->hb2, exec_weight(ex, w, l, MPQ_LAYER_FFN_UP), d->xb, NULL, hid, dim);
        swiglu_forward(d->hb3, d->hb, d->hb2, (size_t)hid);
        matvec(d->xb, exec_weight(ex, w, l, MPQ_LAYER_FFN_DOWN), d->hb3, NULL, dim, hid);
        residual_forward(d->x, d->x, d->xb, (size_t)dim);
    }
    rmsnorm_forward(d->xb, &rstd, d->x, w->final_norm, 1, dim, c->norm_eps);
    matvec(d->logits, w->classifier, d->xb, NULL, c->vocab_size, dim);
    ex->pos++;
    if (logits) *logits = d->logits;
    return MPQ_OK;
}

mpq_status mpq_exec_generate_greedy(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const int *prompt,
                                    int n_prompt, int n_new, int *out, mpq_err *err) {
    if (!ex || !prompt || n_prompt < 1 || n_new < 0 || (n_new > 0 && !out))
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: generate: bad arguments (prompt %d tokens, %d new)", n_prompt,
                           n_new);
    mpq_exec_decode_reset(ex);
    const float *lg = NULL;
    for (int i = 0; i < n_prompt; i++) {
        mpq_status st = mpq_exec_decode_step(ex, w, opts, prompt[i], &lg, err);
        if (st != MPQ_OK) return st;
    }
    for (int i = 0; i < n_new; i++) {
        int am = 0;
        for (int v = 1; v < ex->cfg.vocab_size; v++)
            if (lg[v] > lg[am]) am = v;
        out[i] = am;
        if (i + 1 < n_new) {
            mpq_status st = mpq_exec_decode_step(ex, w, opts, am, &lg, err);
            if (st != MPQ_OK) return st;
        }
    }
    return MPQ_OK;
}

/* ---- KV memory and FLOPs ---- */

double mpq_exec_kv_bytes_per_token(const mpq_model_config *cfg, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                   int64_t context_len, double *per_layer) {
    if (!cfg) return 0.0;
    mpq_kv_scheme def = mpq_kv_scheme_default();
    const mpq_kv_scheme *s = scheme ? scheme : &def;
    int kvd = cfg->n_kv_heads * cfg->head_dim;
    double total = 0.0;
    for (int l = 0; l < cfg->n_layers; l++) {
        mpq_kv_pair p = {16, 16};
        if (pairs) p = pairs[l];
        double kb = mpq_kv_bits_per_element_hd(p, s, kvd, cfg->head_dim, context_len, true, true);
        double vb = mpq_kv_bits_per_element_hd(p, s, kvd, cfg->head_dim, context_len, false, true);
        double bytes = (double)kvd * (kb + vb) / 8.0;
        if (per_layer) per_layer[l] = bytes;
        total += bytes;
    }
    return total;
}

double mpq_exec_forward_flops(const mpq_model_config *cfg, int B, int T) {
    if (!cfg) return 0.0;
    double dim = cfg->dim, qd = (double)cfg->n_heads * cfg->head_dim, kvd = (double)cfg->n_kv_heads * cfg->head_dim;
    double per_tok_layer = 2.0 * (dim * qd + 2.0 * dim * kvd + qd * dim + 3.0 * dim * cfg->hidden_dim);
    double attn_layer = 4.0 * (double)B * cfg->n_heads * (double)T * T * cfg->head_dim;
    double head = 2.0 * dim * cfg->vocab_size;
    return (double)B * T * (cfg->n_layers * per_tok_layer + head) + cfg->n_layers * attn_layer;
}
