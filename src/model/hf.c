/*
 * hf.c - Hugging Face model directories: config.json (LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM) and model.safetensors, or shards listed in model.safetensors.index.json
 * ("weight_map": {tensor: file}). F32/F16/BF16 are converted to F32; the q/k rows (and q/k
 * biases) are permuted back from HF's rotate_half layout to llama2.c's interleaved RoPE pairs:
 * llama2.c row h*hd + 2p + c  <-  HF row h*hd + c*(hd/2) + p   (c in {0,1}, p < hd/2),
 * the inverse of transformers' convert_llama_weights_to_hf.py permute().
 * Reference: transformers LlamaConfig / Qwen2Config field names and defaults.
 */
#include "model/model_internal.h"
#include "util/file.h"
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_JSON ((size_t)64 * 1024 * 1024)
#define MAX_SHARDS 4096

typedef struct hf_ctx {
    const char *dir;
    mpq_st_file **shards;
    int n_shards;
    cJSON *index;            /* parsed index json (sharded case) */
    const cJSON *weight_map; /* borrowed from index */
} hf_ctx;

/* Reads a whole (small) text file; *out malloc'd and NUL-terminated. */
static mpq_status read_text(const char *path, char **out, size_t *len, mpq_err *err) {
    mpq_status st = MPQ_OK;
    char *buf = NULL;
    FILE *f = NULL;
    struct stat sb;
    *out = NULL;
    if ((st = mpq_file_fopen_regular(path, &f, err)) != MPQ_OK) return st;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || (size_t)sb.st_size > MAX_JSON) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: not a regular file of at most %zu bytes", path, MAX_JSON);
        goto done;
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: short read", path);
        goto done;
    }
    buf[sb.st_size] = '\0';
    *len = (size_t)sb.st_size;
    *out = buf;
    buf = NULL;
done:
    free(buf);
    fclose(f);
    return st;
}

static mpq_status parse_json_file(const char *path, cJSON **out, mpq_err *err) {
    char *text = NULL;
    size_t n = 0;
    *out = NULL;
    mpq_status st = read_text(path, &text, &n, err);
    if (st != MPQ_OK) return st;
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = j;
    return MPQ_OK;
}

/* Integer field: absent => def (if has_def) else error; wrong type / range => error. */
static mpq_status get_int(const cJSON *cfg, const char *path, const char *key, bool has_def, int def, int *out,
                          mpq_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!j || cJSON_IsNull(j)) {
        if (!has_def) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing required field \"%s\"", path, key);
        *out = def;
        return MPQ_OK;
    }
    if (!cJSON_IsNumber(j) || floor(j->valuedouble) != j->valuedouble || j->valuedouble < -2147483648.0 ||
        j->valuedouble > 2147483647.0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: field \"%s\" must be an integer", path, key);
    *out = (int)j->valuedouble;
    return MPQ_OK;
}

static mpq_status get_float(const cJSON *cfg, const char *path, const char *key, float def, float *out,
                            mpq_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return MPQ_OK;
    }
    if (!cJSON_IsNumber(j) || !(j->valuedouble > 0) || !isfinite(j->valuedouble))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: field \"%s\" must be a positive number", path, key);
    *out = (float)j->valuedouble;
    return MPQ_OK;
}

static mpq_status parse_config(const char *dir, mpq_model_config *c, bool *tie, mpq_err *err) {
    mpq_status st = MPQ_OK;
    cJSON *cfg = NULL;
    char path[4096];
    int head_dim = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    st = parse_json_file(path, &cfg, err);
    if (st != MPQ_OK) goto done;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(cfg, "architectures");
    const cJSON *a0 = cJSON_IsArray(arch) ? cJSON_GetArrayItem(arch, 0) : NULL;
    if (!cJSON_IsString(a0)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: \"architectures\" must be an array of strings", path);
        goto done;
    }
    if (strcmp(a0->valuestring, "LlamaForCausalLM") == 0) c->arch = MPQ_ARCH_LLAMA;
    else if (strcmp(a0->valuestring, "MistralForCausalLM") == 0) c->arch = MPQ_ARCH_MISTRAL;
    else if (strcmp(a0->valuestring, "Qwen2ForCausalLM") == 0) c->arch = MPQ_ARCH_QWEN2;
    else {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                         "%s: architecture %.64s is not supported (LlamaForCausalLM, MistralForCausalLM, "
                         "Qwen2ForCausalLM)",
                         path, a0->valuestring);
        goto done;
    }
    if ((st = get_int(cfg, path, "hidden_size", false, 0, &c->dim, err)) ||
        (st = get_int(cfg, path, "intermediate_size", false, 0, &c->hidden_dim, err)) ||
        (st = get_int(cfg, path, "num_hidden_layers", false, 0, &c->n_layers, err)) ||
        (st = get_int(cfg, path, "num_attention_heads", false, 0, &c->n_heads, err)) ||
        (st = get_int(cfg, path, "vocab_size", false, 0, &c->vocab_size, err)) ||
        (st = get_int(cfg, path, "max_position_embeddings", false, 0, &c->seq_len, err)))
        goto done;
    if ((st = get_int(cfg, path, "num_key_value_heads", true, c->n_heads, &c->n_kv_heads, err)) ||
        (st = get_int(cfg, path, "head_dim", true, 0, &head_dim, err)) ||
        (st = get_float(cfg, path, "rope_theta", 10000.0f, &c->rope_theta, err)) ||
        (st = get_float(cfg, path, "rms_norm_eps", 1e-6f, &c->norm_eps, err)))
        goto done;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings");
    if (t && !cJSON_IsBool(t)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: field \"tie_word_embeddings\" must be true or false", path);
        goto done;
    }
    *tie = t ? cJSON_IsTrue(t) : false;
    c->qkv_bias = c->arch == MPQ_ARCH_QWEN2;
    c->format = MPQ_MODEL_FORMAT_HF;
    st = mpq_model_check_config(c, path, err);
    if (st != MPQ_OK) goto done;
    if (head_dim != 0 && head_dim != c->head_dim) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: head_dim %d differs from hidden_size %d / heads %d", path,
                         head_dim, c->dim, c->n_heads);
        goto done;
    }
done:
    cJSON_Delete(cfg);
    return st;
}

static void ctx_free(hf_ctx *h) {
    for (int i = 0; i < h->n_shards; i++) mpq_st_close(h->shards[i]);
    free(h->shards);
    cJSON_Delete(h->index);
}

static mpq_status open_files(hf_ctx *h, mpq_err *err) {
    mpq_status st = MPQ_OK;
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/model.safetensors", h->dir);
    if (stat(path, &sb) == 0) {
        h->shards = mpq_calloc(1, sizeof *h->shards);
        if (!h->shards) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
        st = mpq_st_open(path, &h->shards[0], err);
        if (st == MPQ_OK) h->n_shards = 1;
        return st;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", h->dir);
    if (stat(path, &sb) != 0)
        return mpq_err_set(err, MPQ_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json exists",
                           h->dir);
    st = parse_json_file(path, &h->index, err);
    if (st != MPQ_OK) return st;
    h->weight_map = cJSON_GetObjectItemCaseSensitive(h->index, "weight_map");
    if (!cJSON_IsObject(h->weight_map))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: \"weight_map\" must be an object", path);
    int n = cJSON_GetArraySize(h->weight_map);
    if (n > MAX_SHARDS) n = MAX_SHARDS;
    h->shards = mpq_calloc((size_t)(n > 0 ? n : 1), sizeof *h->shards);
    if (!h->shards) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
    for (const cJSON *it = h->weight_map->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weight_map[%s] is not a file name", path, it->string);
        const char *fn = it->valuestring;
        if (!*fn || strchr(fn, '/') || strcmp(fn, "..") == 0 || strcmp(fn, ".") == 0)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weight_map[%s]: shard name \"%.128s\" is not a plain file name",
                               path, it->string, fn);
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/%s", h->dir, fn);
        bool seen = false;
        for (int i = 0; i < h->n_shards && !seen; i++) seen = strcmp(h->shards[i]->path, sp) == 0;
        if (seen) continue;
        if (h->n_shards >= MAX_SHARDS)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: more than %d shards", path, MAX_SHARDS);
        st = mpq_st_open(sp, &h->shards[h->n_shards], err);
        if (st != MPQ_OK) {
            mpq_err_prefix(err, "%s: shard of %s", path, it->string);
            return st;
        }
        h->n_shards++;
    }
    return MPQ_OK;
}

/* Finds a tensor (in the shard the index names, or the single file). NULL if absent. */
static const mpq_st_tensor *find_tensor(const hf_ctx *h, const char *name, const mpq_st_file **file) {
    if (h->weight_map) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(h->weight_map, name);
        if (!cJSON_IsString(fn)) return NULL;
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/%s", h->dir, fn->valuestring);
        for (int i = 0; i < h->n_shards; i++)
            if (strcmp(h->shards[i]->path, sp) == 0) {
                *file = h->shards[i];
                return mpq_st_find(h->shards[i], name);
            }
        return NULL;
    }
    *file = h->shards[0];
    return mpq_st_find(h->shards[0], name);
}

/* Loads tensor `name` of shape (rows[, cols]) into dst; permutes rows for RoPE when heads > 0. */
static mpq_status load_tensor(const hf_ctx *h, const char *name, int64_t rows, int64_t cols, int perm_heads,
                              int head_dim, float *dst, float *tmp, mpq_err *err) {
    const mpq_st_file *f = NULL;
    const mpq_st_tensor *t = find_tensor(h, name, &f);
    if (!t) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing tensor %s", h->dir, name);
    bool ok = cols == 0 ? (t->ndim == 1 && t->shape[0] == rows)
                        : (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!ok) {
        char got[128] = "", *p = got;
        for (int i = 0; i < t->ndim && p < got + sizeof got - 24; i++)
            p += snprintf(p, (size_t)(got + sizeof got - p), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (cols == 0)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: shape [%s], expected [%lld]", f->path, name, got,
                               (long long)rows);
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: shape [%s], expected [%lld, %lld]", f->path, name, got,
                           (long long)rows, (long long)cols);
    }
    if (perm_heads == 0) {
        return mpq_st_read_f32(f, t, dst, err);
    }
    size_t rc = cols == 0 ? 1 : (size_t)cols, half = (size_t)head_dim / 2;
    mpq_status st = mpq_st_read_f32(f, t, tmp, err);
    if (st != MPQ_OK) return st;
    for (size_t hh = 0; hh < (size_t)perm_heads; hh++)
        for (size_t p = 0; p < half; p++)
            for (size_t c = 0; c < 2; c++) {
                size_t to = hh * (size_t)head_dim + 2 * p + c, from = hh * (size_t)head_dim + c * half + p;
                memcpy(dst + to * rc, tmp + from * rc, rc * sizeof(float));
            }
    return MPQ_OK;
}

mpq_status mpq_model_load_hf(const char *dir, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_model *m = NULL;
    hf_ctx h;
    mpq_model_config c;
    bool tie = false;
    float *tmp = NULL;
    char name[256];
    memset(&h, 0, sizeof h);
    memset(&c, 0, sizeof c);
    *out = NULL;
    h.dir = dir;
    st = parse_config(dir, &c, &tie, err);
    if (st != MPQ_OK) goto done;
    st = open_files(&h, err);
    if (st != MPQ_OK) goto done;
    const mpq_st_file *ef = NULL;
    const mpq_st_tensor *emb = find_tensor(&h, "model.embed_tokens.weight", &ef);
    if (!emb) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing tensor model.embed_tokens.weight", dir);
        goto done;
    }
    snprintf(c.source_dtype, sizeof c.source_dtype, "%s", mpq_st_dtype_name(emb->dtype));
    const mpq_st_file *lf = NULL;
    c.shared_classifier = tie || !find_tensor(&h, "lm_head.weight", &lf);
    st = mpq_model_create(&c, dir, dtype, &m, err);
    if (st != MPQ_OK) goto done;
    int64_t d = c.dim, hd = c.hidden_dim, qd = (int64_t)c.n_heads * c.head_dim;
    int64_t kv = (int64_t)c.n_kv_heads * c.head_dim;
    tmp = mpq_calloc((size_t)qd * (size_t)d, sizeof(float));
    if (!tmp) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    mpq_weights *w = &m->w;
#define LOAD(nm, r, cl, ph, dst)                                                                                       \
    do {                                                                                                               \
        st = load_tensor(&h, (nm), (r), (cl), (ph), c.head_dim, (dst), tmp, err);                                     \
        if (st != MPQ_OK) goto done;                                                                                   \
        mpq_model_commit(m, &(dst));                                                                                   \
    } while (0)
    LOAD("model.embed_tokens.weight", c.vocab_size, d, 0, w->tok_emb);
    for (int l = 0; l < c.n_layers; l++) {
        mpq_block_weights *b = &w->blocks[l];
#define LN(fmt, r, cl, ph, dst)                                                                                        \
    do {                                                                                                               \
        snprintf(name, sizeof name, "model.layers.%d." fmt, l);                                                        \
        LOAD(name, r, cl, ph, dst);                                                                                    \
    } while (0)
        LN("input_layernorm.weight", d, 0, 0, b->attn_norm);
        LN("self_attn.q_proj.weight", qd, d, c.n_heads, b->wq);
        LN("self_attn.k_proj.weight", kv, d, c.n_kv_heads, b->wk);
        LN("self_attn.v_proj.weight", kv, d, 0, b->wv);
        LN("self_attn.o_proj.weight", d, qd, 0, b->wo);
        if (c.qkv_bias) {
            LN("self_attn.q_proj.bias", qd, 0, c.n_heads, b->bq);
            LN("self_attn.k_proj.bias", kv, 0, c.n_kv_heads, b->bk);
            LN("self_attn.v_proj.bias", kv, 0, 0, b->bv);
        }
        LN("post_attention_layernorm.weight", d, 0, 0, b->ffn_norm);
        LN("mlp.gate_proj.weight", hd, d, 0, b->w_gate);
        LN("mlp.up_proj.weight", hd, d, 0, b->w_up);
        LN("mlp.down_proj.weight", d, hd, 0, b->w_down);
#undef LN
    }
    LOAD("model.norm.weight", d, 0, 0, w->final_norm);
    if (!c.shared_classifier) LOAD("lm_head.weight", c.vocab_size, d, 0, w->classifier);
#undef LOAD
    *out = m;
    m = NULL;
done:
    free(tmp);
    ctx_free(&h);
    mpq_model_free(m);
    return st;
}
