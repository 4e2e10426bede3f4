/*
 * model.c - the model object common to all formats: one weight block with pointers carved
 * out (as llm.c's ParameterTensors), the table of quantizable linear layers with stable
 * GGUF-style names ("blk.N.attn_q") and Hugging Face aliases
 * ("model.layers.N.self_attn.q_proj"), lookup, clone and free.
 * Reference: include/mpq/mpq_model.h (contract); llama2.c run.c memory_map_weights (layout idea).
 */
#include "model/model_internal.h"
#include "model/gguf.h"
#include "model/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *kind_names[MPQ_N_LAYER_KINDS] = {"attn_q", "attn_k", "attn_v", "attn_o",
                                                    "ffn_gate", "ffn_up", "ffn_down"};
static const char *kind_hf[MPQ_N_LAYER_KINDS] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                 "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                 "mlp.down_proj"};

const char *mpq_layer_kind_name(mpq_layer_kind kind) {
    if ((int)kind < 0 || (int)kind >= MPQ_N_LAYER_KINDS) return "?";
    return kind_names[kind];
}

static const char *const arch_names[] = {[MPQ_ARCH_LLAMA] = "llama", [MPQ_ARCH_MISTRAL] = "mistral",
                                         [MPQ_ARCH_QWEN2] = "qwen2"};
static const char *const format_names[] = {[MPQ_MODEL_FORMAT_LLAMA2C_LEGACY] = "llama2c-legacy",
                                           [MPQ_MODEL_FORMAT_LLAMA2C_V1] = "llama2c-v1",
                                           [MPQ_MODEL_FORMAT_HF] = "hf", [MPQ_MODEL_FORMAT_GGUF] = "gguf"};
#define N_OF(a) ((int)(sizeof(a) / sizeof(a)[0]))

const char *mpq_arch_name(mpq_arch a) {
    return (int)a >= 0 && (int)a < N_OF(arch_names) && arch_names[a] ? arch_names[a] : "?";
}

bool mpq_arch_parse(const char *name, mpq_arch *out) {
    for (int i = 0; name && i < N_OF(arch_names); i++)
        if (arch_names[i] && strcmp(name, arch_names[i]) == 0) {
            *out = (mpq_arch)i;
            return true;
        }
    return false;
}

const char *mpq_model_format_name(mpq_model_format f) {
    return (int)f >= 0 && (int)f < N_OF(format_names) && format_names[f] ? format_names[f] : "?";
}

bool mpq_model_format_parse(const char *name, mpq_model_format *out) {
    for (int i = 0; name && i < N_OF(format_names); i++)
        if (format_names[i] && strcmp(name, format_names[i]) == 0) {
            *out = (mpq_model_format)i;
            return true;
        }
    return false;
}

mpq_status mpq_model_check_config(mpq_model_config *c, const char *what, mpq_err *err) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->vocab_size <= 0 || c->seq_len <= 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT,
                           "%s: dimensions must be > 0 (dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                           "n_kv_heads %d, vocab_size %d, seq_len %d)",
                           what, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                           c->seq_len);
    if (c->dim % c->n_heads != 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: dim %d is not divisible by n_heads %d", what, c->dim,
                           c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: n_heads %d is not divisible by n_kv_heads %d", what,
                           c->n_heads, c->n_kv_heads);
    c->head_dim = c->dim / c->n_heads;
    if (c->head_dim % 2 != 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: head_dim %d (dim %d / n_heads %d) is odd; RoPE needs pairs",
                           what, c->head_dim, c->dim, c->n_heads);
    return MPQ_OK;
}

/* Per-block float count and the whole block size; false on overflow. */
static bool layout_sizes(const mpq_model_config *c, size_t *per_block, size_t *total) {
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, kv = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    size_t qd = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t dd, kvd, hd, b = 0, t = 0, emb;
    if (!mpq_size_mul(qd, d, &dd) || !mpq_size_mul(kv, d, &kvd) || !mpq_size_mul(h, d, &hd)) return false;
    /* attn_norm + wq + wk + wv + wo + ffn_norm + gate + up + down (+ biases) */
    if (!mpq_size_add(d, dd, &b) || !mpq_size_add(b, kvd, &b) || !mpq_size_add(b, kvd, &b) ||
        !mpq_size_add(b, dd, &b) || !mpq_size_add(b, d, &b) || !mpq_size_add(b, hd, &b) ||
        !mpq_size_add(b, hd, &b) || !mpq_size_add(b, hd, &b))
        return false;
    if (c->qkv_bias && (!mpq_size_add(b, qd, &b) || !mpq_size_add(b, kv, &b) || !mpq_size_add(b, kv, &b)))
        return false;
    if (!mpq_size_mul((size_t)c->vocab_size, d, &emb)) return false;
    if (!mpq_size_mul(b, (size_t)c->n_layers, &t) || !mpq_size_add(t, emb, &t) || !mpq_size_add(t, d, &t))
        return false;
    if (!c->shared_classifier && !mpq_size_add(t, emb, &t)) return false;
    /* keep byte size representable too */
    size_t bytes;
    if (!mpq_size_mul(t, sizeof(float), &bytes)) return false;
    *per_block = b;
    *total = t;
    return true;
}

mpq_status mpq_model_weights_size(const mpq_model_config *cfg, size_t *n_floats, const char *what, mpq_err *err) {
    size_t pb;
    if (!layout_sizes(cfg, &pb, n_floats))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weight size overflows (dim %d, hidden_dim %d, n_layers %d, vocab %d)",
                           what, cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->vocab_size);
    return MPQ_OK;
}

/* Carves w->blocks[] pointers out of data in the fixed layout: tok_emb, then per block
 * attn_norm wq wk wv wo [bq bk bv] ffn_norm w_gate w_up w_down, then final_norm, classifier. */
static void carve(const mpq_model_config *c, mpq_weights *w, float *data, size_t n_floats) {
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, kv = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    size_t qd = (size_t)c->n_heads * (size_t)c->head_dim;
    float *p = data;
    w->data = data;
    w->n_floats = n_floats;
    w->n_layers = c->n_layers;
    w->tok_emb = p;
    p += (size_t)c->vocab_size * d;
    for (int l = 0; l < c->n_layers; l++) {
        mpq_block_weights *b = &w->blocks[l];
        b->attn_norm = p; p += d;
        b->wq = p; p += qd * d;
        b->wk = p; p += kv * d;
        b->wv = p; p += kv * d;
        b->wo = p; p += d * qd;
        if (c->qkv_bias) {
            b->bq = p; p += qd;
            b->bk = p; p += kv;
            b->bv = p; p += kv;
        } else {
            b->bq = b->bk = b->bv = NULL;
        }
        b->ffn_norm = p; p += d;
        b->w_gate = p; p += h * d;
        b->w_up = p; p += h * d;
        b->w_down = p; p += d * h;
    }
    w->final_norm = p; p += d;
    if (c->shared_classifier) {
        w->classifier = w->tok_emb;
    } else {
        w->classifier = p;
        p += (size_t)c->vocab_size * d;
    }
}

static void fill_layer_table(mpq_model *m) {
    const mpq_model_config *c = &m->cfg;
    int64_t d = c->dim, h = c->hidden_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t qd = (int64_t)c->n_heads * c->head_dim;
    int i = 0;
    for (int l = 0; l < c->n_layers; l++) {
        for (int k = 0; k < MPQ_N_LAYER_KINDS; k++, i++) {
            mpq_layer_info *li = &m->layers[i];
            li->kind = (mpq_layer_kind)k;
            li->block = l;
            snprintf(li->name, sizeof li->name, "blk.%d.%s", l, kind_names[k]);
            snprintf(li->hf_name, sizeof li->hf_name, "model.layers.%d.%s", l, kind_hf[k]);
            switch ((mpq_layer_kind)k) {
            case MPQ_LAYER_ATTN_Q: li->rows = qd; li->cols = d; break;
            case MPQ_LAYER_ATTN_K:
            case MPQ_LAYER_ATTN_V: li->rows = kv; li->cols = d; break;
            case MPQ_LAYER_ATTN_O: li->rows = d; li->cols = qd; break;
            case MPQ_LAYER_FFN_GATE:
            case MPQ_LAYER_FFN_UP: li->rows = h; li->cols = d; break;
            case MPQ_LAYER_FFN_DOWN: li->rows = d; li->cols = h; break;
            }
            li->n_params = li->rows * li->cols;
        }
    }
    m->n_linear = i;
}

/* 16-bit homes: the same layout walk as carve, with the linear matrices and an untied
 * embedding in d16; the norms, biases and the classifier (the embedding too when tied) in
 * small; every 16-bit tensor's float pointer points at stage. The classifier stays float32:
 * widening it in row blocks at use would change the logits' bits (OpenBLAS 0.3.21's sgemm
 * does not give the same sums for a block of columns as for the whole product). */
static void carve16(const mpq_model_config *c, mpq_weights *w, mpq_block_weights16 *b16, uint16_t *d16, float *small,
                    float *stage) {
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, kv = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    size_t qd = (size_t)c->n_heads * (size_t)c->head_dim;
    uint16_t *p = d16;
    float *f = small;
    w->n_layers = c->n_layers;
    if (c->shared_classifier) {
        w->tok_emb = w->classifier = f;
        f += (size_t)c->vocab_size * d;
        w->tok_emb16 = NULL;
    } else {
        w->tok_emb = stage;
        w->tok_emb16 = p;
        p += (size_t)c->vocab_size * d;
        w->classifier = f;
        f += (size_t)c->vocab_size * d;
    }
    for (int l = 0; l < c->n_layers; l++) {
        mpq_block_weights *b = &w->blocks[l];
        mpq_block_weights16 *q = &b16[l];
        b->attn_norm = f; f += d;
        q->wq = p; p += qd * d;
        q->wk = p; p += kv * d;
        q->wv = p; p += kv * d;
        q->wo = p; p += d * qd;
        if (c->qkv_bias) {
            b->bq = f; f += qd;
            b->bk = f; f += kv;
            b->bv = f; f += kv;
        } else {
            b->bq = b->bk = b->bv = NULL;
        }
        b->ffn_norm = f; f += d;
        q->w_gate = p; p += h * d;
        q->w_up = p; p += h * d;
        q->w_down = p; p += d * h;
        b->wq = b->wk = b->wv = b->wo = b->w_gate = b->w_up = b->w_down = stage;
    }
    w->final_norm = f;
    w->classifier16 = NULL;
    w->blocks16 = b16;
}

mpq_status mpq_model_create(const mpq_model_config *cfg, const char *path, mpq_weights_dtype dtype, mpq_model **out,
                            mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_model *m = NULL;
    size_t n_floats = 0, n_lin = 0;
    *out = NULL;
    if (dtype == MPQ_WEIGHTS_SOURCE)
        dtype = strcmp(cfg->source_dtype, "BF16") == 0 ? MPQ_WEIGHTS_BF16
              : strcmp(cfg->source_dtype, "F16") == 0  ? MPQ_WEIGHTS_F16
                                                       : MPQ_WEIGHTS_F32;
    if (dtype != MPQ_WEIGHTS_F32 && dtype != MPQ_WEIGHTS_BF16 && dtype != MPQ_WEIGHTS_F16)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: weight storage dtype %d (f32, bf16, f16 or source)", path,
                           (int)dtype);
    st = mpq_model_weights_size(cfg, &n_floats, path, err);
    if (st != MPQ_OK) goto done;
    if (!mpq_size_mul((size_t)cfg->n_layers, MPQ_N_LAYER_KINDS, &n_lin) || n_lin > (size_t)INT32_MAX) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: too many layers (%d)", path, cfg->n_layers);
        goto done;
    }
    m = mpq_calloc(1, sizeof *m);
    if (!m) goto nomem;
    m->cfg = *cfg;
    m->wdtype = dtype;
    m->path = malloc(strlen(path) + 1);
    m->w.blocks = mpq_calloc((size_t)cfg->n_layers, sizeof *m->w.blocks);
    m->layers = mpq_calloc(n_lin, sizeof *m->layers);
    if (!m->path || !m->w.blocks || !m->layers) goto nomem;
    memcpy(m->path, path, strlen(path) + 1);
    if (dtype == MPQ_WEIGHTS_F32) {
        float *data = mpq_calloc(n_floats, sizeof(float));
        if (!data) goto nomem;
        carve(&m->cfg, &m->w, data, n_floats);
    } else {
        /* norms and biases in float32: 2 dim (+ qd + 2 kvd) per block and the final norm; all
         * products are bounded by n_floats, already overflow-checked */
        size_t d = (size_t)cfg->dim, qd = (size_t)cfg->n_heads * (size_t)cfg->head_dim;
        size_t kv = (size_t)cfg->n_kv_heads * (size_t)cfg->head_dim, h = (size_t)cfg->hidden_dim;
        size_t small = (size_t)cfg->n_layers * (2 * d + (cfg->qkv_bias ? qd + 2 * kv : 0)) + d +
                       (size_t)cfg->vocab_size * d; /* + the classifier */
        size_t emb = (size_t)cfg->vocab_size * d, big = h * d > qd * d ? h * d : qd * d;
        m->stage_n = emb > big ? emb : big;
        m->w.data = mpq_calloc(small, sizeof(float));
        m->data16 = mpq_calloc(n_floats - small, sizeof(uint16_t));
        m->blocks16 = mpq_calloc((size_t)cfg->n_layers, sizeof *m->blocks16);
        m->stage = mpq_calloc(m->stage_n, sizeof(float));
        if (!m->w.data || !m->data16 || !m->blocks16 || !m->stage) goto nomem;
        carve16(&m->cfg, &m->w, m->blocks16, m->data16, m->w.data, m->stage);
        m->w.n_floats = n_floats; /* the parameter count of the layout, as for F32 */
    }
    m->w.dtype = dtype;
    fill_layer_table(m);
    *out = m;
    m = NULL;
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for %zu weights", path, n_floats);
done:
    mpq_model_free(m);
    return st;
}

/* float32 -> bfloat16 / binary16, round to nearest even (NaN kept a NaN). */
static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);   /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                     /* below 2^-14: subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;            /* below half the smallest subnormal */
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23); /* 14 - (e - 127) + 13 ... man >> (shift) gives units of 2^-24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1u), halfw = 1u << (shift - 1);
        if (rem > halfw || (rem == halfw && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u); /* round the 13 dropped bits to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

void mpq_weights16_to_f32(mpq_weights_dtype dtype, const uint16_t *src, size_t n, float *dst) {
    if (dtype == MPQ_WEIGHTS_BF16)
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)src[i] << 16;
            memcpy(&dst[i], &u, sizeof u);
        }
    else
        for (size_t i = 0; i < n; i++) dst[i] = mpq_st_f16_to_f32(src[i]);
}

void mpq_model_commit(mpq_model *m, float *const *slot) {
    if (!m || m->wdtype == MPQ_WEIGHTS_F32 || !m->stage) return;
    const mpq_model_config *c = &m->cfg;
    const uint16_t *dst = NULL;
    size_t n = 0, d = (size_t)c->dim;
    if (slot == &m->w.tok_emb && m->w.tok_emb16) {
        dst = m->w.tok_emb16;
        n = (size_t)c->vocab_size * d;
    } else {
        for (int i = 0; i < m->n_linear && !dst; i++) {
            const mpq_layer_info *li = &m->layers[i];
            if (slot == mpq_weights_linear_slot(&m->w, li)) {
                const mpq_block_weights16 *b = &m->blocks16[li->block];
                const uint16_t *t[MPQ_N_LAYER_KINDS] = {b->wq, b->wk, b->wv, b->wo, b->w_gate, b->w_up, b->w_down};
                dst = t[li->kind];
                n = (size_t)li->n_params;
            }
        }
    }
    if (!dst) return;
    uint16_t *o = (uint16_t *)(uintptr_t)dst; /* the model owns data16 */
    if (m->wdtype == MPQ_WEIGHTS_BF16)
        for (size_t i = 0; i < n; i++) o[i] = f32_to_bf16(m->stage[i]);
    else
        for (size_t i = 0; i < n; i++) o[i] = f32_to_f16(m->stage[i]);
}

void mpq_model_finish_load(mpq_model *m) {
    if (!m || m->wdtype == MPQ_WEIGHTS_F32) return;
    if (m->w.tok_emb16) m->w.tok_emb = NULL;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        mpq_block_weights *b = &m->w.blocks[l];
        b->wq = b->wk = b->wv = b->wo = b->w_gate = b->w_up = b->w_down = NULL;
    }
    free(m->stage);
    m->stage = NULL;
}

void mpq_model_free(mpq_model *m) {
    if (!m) return;
    free(m->w.data);
    free(m->w.blocks);
    free(m->data16);
    free(m->blocks16);
    free(m->stage);
    free(m->layers);
    free(m->path);
    free(m);
}

static const char *const dtype_names[] = {[MPQ_WEIGHTS_F32] = "f32", [MPQ_WEIGHTS_BF16] = "bf16",
                                          [MPQ_WEIGHTS_F16] = "f16", [MPQ_WEIGHTS_SOURCE] = "source"};

const char *mpq_weights_dtype_name(mpq_weights_dtype d) {
    return (int)d >= 0 && (int)d < N_OF(dtype_names) ? dtype_names[d] : "?";
}

bool mpq_weights_dtype_parse(const char *name, mpq_weights_dtype *out) {
    for (int i = 0; name && i < N_OF(dtype_names); i++)
        if (strcmp(name, dtype_names[i]) == 0) {
            *out = (mpq_weights_dtype)i;
            return true;
        }
    return false;
}

mpq_weights_dtype mpq_model_weights_dtype(const mpq_model *m) { return m ? m->wdtype : MPQ_WEIGHTS_F32; }

mpq_status mpq_model_load(const char *path, mpq_model **out, mpq_err *err) {
    return mpq_model_load_dtype(path, MPQ_WEIGHTS_F32, out, err);
}

mpq_status mpq_model_load_dtype(const char *path, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err) {
    struct stat sb;
    mpq_status st;
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_model_load: out is NULL");
    *out = NULL;
    if (!path || !*path) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_model_load: empty path");
    if (stat(path, &sb) != 0) return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot stat (no such file or directory?)", path);
    if ((int)dtype < 0 || (int)dtype > (int)MPQ_WEIGHTS_SOURCE)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: weight storage dtype %d (f32, bf16, f16 or source)", path,
                           (int)dtype);
    if (S_ISDIR(sb.st_mode))
        st = mpq_model_load_hf(path, dtype, out, err);
    else if (mpq_gguf_sniff(path))
        st = mpq_model_load_gguf(path, dtype, out, err);
    else
        st = mpq_model_load_llama2c(path, dtype, out, err);
    if (st == MPQ_OK) mpq_model_finish_load(*out);
    return st;
}

const mpq_model_config *mpq_model_get_config(const mpq_model *m) { return m ? &m->cfg : NULL; }
const mpq_weights *mpq_model_get_weights(const mpq_model *m) { return m ? &m->w : NULL; }
const char *mpq_model_path(const mpq_model *m) { return m ? m->path : NULL; }
int64_t mpq_model_n_params(const mpq_model *m) {
    if (!m) return 0;
    return m->shape_only ? m->shape_params : (int64_t)m->w.n_floats;
}
mpq_status mpq_model_shape_copy(const mpq_model *m, mpq_model **out, mpq_err *err) {
    if (!m || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_model_shape_copy: NULL argument");
    return mpq_model_shape_create(m->path, &m->cfg, m->layers, m->n_linear, mpq_model_n_params(m), out, err);
}
bool mpq_model_has_weights(const mpq_model *m) { return m && !m->shape_only; }

mpq_status mpq_model_shape_create(const char *path, const mpq_model_config *cfg, const mpq_layer_info *layers,
                                  int n_linear, int64_t n_params, mpq_model **out, mpq_err *err) {
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_model_shape_create: out is NULL");
    *out = NULL;
    const char *p = path ? path : "(model)";
    if (!cfg || !layers || n_linear <= 0 || n_params < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: model shape: no layers", p);
    if (cfg->dim <= 0 || cfg->n_layers <= 0 || cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->head_dim <= 0 ||
        cfg->vocab_size <= 0 || cfg->hidden_dim <= 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: model shape: non-positive dimension", p);
    for (int i = 0; i < n_linear; i++)
        if (layers[i].block < 0 || layers[i].block >= cfg->n_layers || (int)layers[i].kind < 0 ||
            (int)layers[i].kind >= MPQ_N_LAYER_KINDS || layers[i].rows < 0 || layers[i].cols < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: model shape: layer %.96s: block or kind out of range", p,
                               layers[i].name);
    mpq_model *m = mpq_calloc(1, sizeof *m);
    if (!m) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", p);
    m->cfg = *cfg;
    m->shape_only = true;
    m->shape_params = n_params;
    m->n_linear = n_linear;
    m->layers = mpq_calloc((size_t)n_linear, sizeof *m->layers);
    m->path = malloc(strlen(p) + 1);
    if (!m->layers || !m->path) {
        mpq_model_free(m);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", p);
    }
    memcpy(m->layers, layers, (size_t)n_linear * sizeof *m->layers);
    memcpy(m->path, p, strlen(p) + 1);
    *out = m;
    return MPQ_OK;
}
int mpq_model_n_linear(const mpq_model *m) { return m ? m->n_linear : 0; }

const mpq_layer_info *mpq_model_linear(const mpq_model *m, int i) {
    if (!m || i < 0 || i >= m->n_linear) return NULL;
    return &m->layers[i];
}

/* Equal up to an optional ".weight" suffix on name. */
static bool name_eq(const char *name, size_t n, const char *ref) {
    size_t r = strlen(ref);
    return n == r && memcmp(name, ref, r) == 0;
}

int mpq_model_find_linear(const mpq_model *m, const char *name) {
    if (!m || !name) return -1;
    size_t n = strlen(name);
    static const char suffix[] = ".weight";
    if (n > sizeof suffix - 1 && strcmp(name + n - (sizeof suffix - 1), suffix) == 0) n -= sizeof suffix - 1;
    for (int i = 0; i < m->n_linear; i++)
        if (name_eq(name, n, m->layers[i].name) || name_eq(name, n, m->layers[i].hf_name)) return i;
    return -1;
}

float *mpq_weights_linear(const mpq_weights *w, const mpq_layer_info *li) {
    if (!w || !li || li->block < 0 || li->block >= w->n_layers) return NULL;
    const mpq_block_weights *b = &w->blocks[li->block];
    switch (li->kind) {
    case MPQ_LAYER_ATTN_Q: return b->wq;
    case MPQ_LAYER_ATTN_K: return b->wk;
    case MPQ_LAYER_ATTN_V: return b->wv;
    case MPQ_LAYER_ATTN_O: return b->wo;
    case MPQ_LAYER_FFN_GATE: return b->w_gate;
    case MPQ_LAYER_FFN_UP: return b->w_up;
    case MPQ_LAYER_FFN_DOWN: return b->w_down;
    }
    return NULL;
}

float **mpq_weights_linear_slot(mpq_weights *w, const mpq_layer_info *li) {
    if (!w || !li || li->block < 0 || li->block >= w->n_layers) return NULL;
    mpq_block_weights *b = &w->blocks[li->block];
    switch (li->kind) {
    case MPQ_LAYER_ATTN_Q: return &b->wq;
    case MPQ_LAYER_ATTN_K: return &b->wk;
    case MPQ_LAYER_ATTN_V: return &b->wv;
    case MPQ_LAYER_ATTN_O: return &b->wo;
    case MPQ_LAYER_FFN_GATE: return &b->w_gate;
    case MPQ_LAYER_FFN_UP: return &b->w_up;
    case MPQ_LAYER_FFN_DOWN: return &b->w_down;
    }
    return NULL;
}

const float *mpq_weights_linear_f32(const mpq_weights *w, const mpq_layer_info *li, float *scratch) {
    const float *f = mpq_weights_linear(w, li);
    if (f || !w || !w->blocks16 || !li || li->block < 0 || li->block >= w->n_layers) return f;
    const mpq_block_weights16 *b = &w->blocks16[li->block];
    const uint16_t *t[MPQ_N_LAYER_KINDS] = {b->wq, b->wk, b->wv, b->wo, b->w_gate, b->w_up, b->w_down};
    if ((int)li->kind < 0 || (int)li->kind >= MPQ_N_LAYER_KINDS || !t[li->kind] || !scratch) return NULL;
    mpq_weights16_to_f32(w->dtype, t[li->kind], (size_t)li->n_params, scratch);
    return scratch;
}

const float *mpq_weights_rows_f32(const mpq_weights *w, bool classifier, int dim, int64_t row0, int64_t n_rows,
                                  float *scratch) {
    if (!w || row0 < 0 || n_rows < 0 || dim < 0) return NULL;
    const float *f = classifier ? w->classifier : w->tok_emb;
    const size_t off = (size_t)row0 * (size_t)dim;
    if (f) return f + off;
    const uint16_t *h = classifier ? w->classifier16 : w->tok_emb16;
    if (!h || !scratch) return NULL;
    mpq_weights16_to_f32(w->dtype, h + off, (size_t)n_rows * (size_t)dim, scratch);
    return scratch;
}

mpq_status mpq_weights_view(const mpq_model *m, mpq_weights **out, mpq_err *err) {
    if (!m || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_weights_view: NULL argument");
    *out = NULL;
    if (m->shape_only) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: shape only (no weights loaded)", m->path);
    mpq_weights *w = mpq_calloc(1, sizeof *w);
    if (w) w->blocks = mpq_calloc((size_t)m->cfg.n_layers, sizeof *w->blocks);
    if (!w || !w->blocks) {
        mpq_weights_free(w);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for a weight table", m->path);
    }
    mpq_block_weights *keep = w->blocks;
    *w = m->w;
    w->blocks = keep;
    memcpy(w->blocks, m->w.blocks, (size_t)m->cfg.n_layers * sizeof *w->blocks);
    w->data = NULL; /* borrowed: mpq_weights_free frees only the table */
    w->n_floats = 0;
    w->owned = NULL;
    *out = w;
    return MPQ_OK;
}

mpq_status mpq_weights_view_of(const mpq_weights *src, mpq_weights **out, mpq_err *err) {
    if (!src || !out || !src->blocks || src->n_layers < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_weights_view_of: NULL argument or empty weights");
    *out = NULL;
    mpq_weights *w = mpq_calloc(1, sizeof *w);
    if (w) w->blocks = mpq_calloc((size_t)src->n_layers, sizeof *w->blocks);
    if (!w || !w->blocks) {
        mpq_weights_free(w);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for a weight table of %d blocks", src->n_layers);
    }
    mpq_block_weights *keep = w->blocks;
    *w = *src;
    w->blocks = keep;
    memcpy(w->blocks, src->blocks, (size_t)src->n_layers * sizeof *w->blocks);
    w->data = NULL; /* borrowed: mpq_weights_free frees only the table and what w owns itself */
    w->n_floats = 0;
    w->owned = NULL;
    *out = w;
    return MPQ_OK;
}

/* Index of layer li in an `owned` array, or -1 for a layer outside w's shape. */
static long owned_index(const mpq_weights *w, const mpq_layer_info *li) {
    if (!w || !li || li->block < 0 || li->block >= w->n_layers || (int)li->kind < 0 ||
        (int)li->kind >= MPQ_N_LAYER_KINDS)
        return -1;
    return (long)li->block * MPQ_N_LAYER_KINDS + (long)li->kind;
}

float *mpq_weights_owned_linear(const mpq_weights *w, const mpq_layer_info *li) {
    long k = owned_index(w, li);
    return k >= 0 && w->owned ? w->owned[k] : NULL;
}

mpq_status mpq_weights_own_linear(mpq_weights *w, const mpq_layer_info *li, const mpq_weights *src, float **out,
                                  mpq_err *err) {
    if (out) *out = NULL;
    long k = owned_index(w, li);
    if (!src || k < 0 || owned_index(src, li) < 0 || li->rows < 1 || li->cols < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_weights_own_linear: %s: NULL argument or layer outside the weights",
                           li ? li->name : "(null)");
    size_t n;
    if (!mpq_size_mul((size_t)li->rows, (size_t)li->cols, &n))
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_weights_own_linear: %s: %lld x %lld overflows", li->name,
                           (long long)li->rows, (long long)li->cols);
    if (!w->owned && !(w->owned = mpq_calloc((size_t)w->n_layers * MPQ_N_LAYER_KINDS, sizeof *w->owned)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for the weight table's owned matrices", li->name);
    float *q = w->owned[k];
    bool fresh = !q;
    if (fresh && !(q = mpq_calloc(n, sizeof *q)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for a %lld x %lld float32 matrix", li->name,
                           (long long)li->rows, (long long)li->cols);
    const float *f = mpq_weights_linear_f32(src, li, q); /* widened into q if src holds it in 16 bits */
    if (!f) {
        if (fresh) free(q);
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_weights_own_linear: %s: no tensor in the source weights",
                           li->name);
    }
    if (f != q) memcpy(q, f, n * sizeof *q);
    w->owned[k] = q;
    *mpq_weights_linear_slot(w, li) = q;
    if (out) *out = q;
    return MPQ_OK;
}

void mpq_weights_drop_linear(mpq_weights *w, const mpq_layer_info *li, const mpq_weights *src) {
    long k = owned_index(w, li);
    if (k < 0 || owned_index(src, li) < 0) return;
    float *back = mpq_weights_linear(src, li);
    if (w->owned && back && back == w->owned[k]) return; /* src is w, or borrows w's matrix: keep it */
    *mpq_weights_linear_slot(w, li) = back;
    if (w->owned) {
        free(w->owned[k]);
        w->owned[k] = NULL;
    }
}

mpq_status mpq_weights_clone(const mpq_model *m, mpq_weights **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_weights *w = NULL;
    float *data = NULL;
    if (!m || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_weights_clone: NULL argument");
    *out = NULL;
    if (m->shape_only) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: shape only (no weights loaded)", m->path);
    w = mpq_calloc(1, sizeof *w);
    if (!w) goto nomem;
    w->blocks = mpq_calloc((size_t)m->cfg.n_layers, sizeof *w->blocks);
    data = mpq_calloc(m->w.n_floats, sizeof(float));
    if (!w->blocks || !data) goto nomem;
    carve(&m->cfg, w, data, m->w.n_floats);
    if (m->wdtype == MPQ_WEIGHTS_F32) {
        memcpy(data, m->w.data, m->w.n_floats * sizeof(float));
    } else { /* widen tensor by tensor */
        const int d = m->cfg.dim, L = m->cfg.n_layers;
        size_t d_ = (size_t)d, qd = (size_t)m->cfg.n_heads * (size_t)m->cfg.head_dim;
        size_t kv = (size_t)m->cfg.n_kv_heads * (size_t)m->cfg.head_dim;
        if (m->w.tok_emb16)
            mpq_weights16_to_f32(m->wdtype, m->w.tok_emb16, (size_t)m->cfg.vocab_size * d_, w->tok_emb);
        else
            memcpy(w->tok_emb, m->w.tok_emb, (size_t)m->cfg.vocab_size * d_ * sizeof(float));
        if (!m->cfg.shared_classifier)
            memcpy(w->classifier, m->w.classifier, (size_t)m->cfg.vocab_size * d_ * sizeof(float));
        memcpy(w->final_norm, m->w.final_norm, d_ * sizeof(float));
        for (int l = 0; l < L; l++) {
            const mpq_block_weights *s = &m->w.blocks[l];
            mpq_block_weights *b = &w->blocks[l];
            memcpy(b->attn_norm, s->attn_norm, d_ * sizeof(float));
            memcpy(b->ffn_norm, s->ffn_norm, d_ * sizeof(float));
            if (m->cfg.qkv_bias) {
                memcpy(b->bq, s->bq, qd * sizeof(float));
                memcpy(b->bk, s->bk, kv * sizeof(float));
                memcpy(b->bv, s->bv, kv * sizeof(float));
            }
        }
        for (int i = 0; i < m->n_linear; i++)
            mpq_weights_linear_f32(&m->w, &m->layers[i], mpq_weights_linear(w, &m->layers[i]));
    }
    data = NULL;
    *out = w;
    w = NULL;
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory cloning %zu weights", m->path, m->w.n_floats);
done:
    free(data);
    mpq_weights_free(w);
    return st;
}

void mpq_weights_free(mpq_weights *w) {
    if (!w) return;
    for (long k = 0; w->owned && k < (long)w->n_layers * MPQ_N_LAYER_KINDS; k++) free(w->owned[k]);
    free(w->owned);
    free(w->data);
    free(w->blocks);
    free(w);
}
