/*
 * gguf_load.c - a LLaMA-architecture GGUF file as an mpq_model (general.architecture "llama",
 * the {arch}.* hyper-parameter keys, tensors token_embd / blk.N.* / output_norm / output) and
 * its SPM vocabulary (tokenizer.ggml.model "llama": tokens, scores) as an mpq_tokenizer.
 *
 * Weights: llama.cpp's converter stores attn_q / attn_k rows in the interleaved-pair RoPE order
 * of the original Meta / llama2.c checkpoints (convert_hf_to_gguf.py LlamaModel permutes the HF
 * rotate_half rows back), which is mpq's order: no row permutation here. GGUF ne[0] is the
 * fastest dimension, so a matrix of ne = [in, out] is row-major (out, in) as mpq holds it.
 * Vocabulary: as llama2.c's tokenizer.py export of the same sentencepiece model: U+2581 becomes
 * a space, BOS and EOS become "\n<s>\n" and "\n</s>\n" (so text never matches them), the
 * scores are kept. Reference: ggml-org/llama.cpp gguf-py/gguf/constants.py (key and tensor
 * names), src/llama-vocab.cpp (SPM vocabulary), karpathy/llama2.c tokenizer.py (export).
 */
#include "model/gguf.h"
#include "model/model_internal.h"
#include "model/tokenizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {arch}.{suffix} as an int in lo..hi; def when absent and has_def. */
static mpq_status arch_int(const mpq_gguf_file *f, const char *suffix, bool has_def, int64_t def, int *out,
                           mpq_err *err) {
    char key[128];
    int64_t v = def;
    bool found = false;
    snprintf(key, sizeof key, "llama.%s", suffix);
    mpq_status st = mpq_gguf_get_int(f, key, 1, INT32_MAX, &v, has_def ? &found : NULL, err);
    if (st != MPQ_OK) return st;
    *out = (int)v;
    return MPQ_OK;
}

static mpq_status arch_float(const mpq_gguf_file *f, const char *suffix, float def, float *out, mpq_err *err) {
    char key[128];
    bool found = false;
    float v = def;
    snprintf(key, sizeof key, "llama.%s", suffix);
    mpq_status st = mpq_gguf_get_float(f, key, &v, &found, err);
    if (st != MPQ_OK) return st;
    if (!(v > 0) || !isfinite(v))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: %g must be a positive number", f->path, key, (double)v);
    *out = v;
    return MPQ_OK;
}

static bool str_is(const char *s, size_t n, const char *ref) { return n == strlen(ref) && memcmp(s, ref, n) == 0; }

/* The architecture and hyper-parameters; vocab_size from token_embd. */
static mpq_status read_config(const mpq_gguf_file *f, mpq_model_config *c, mpq_err *err) {
    mpq_status st;
    const char *arch = NULL;
    size_t alen = 0;
    if ((st = mpq_gguf_get_string(f, "general.architecture", &arch, &alen, NULL, err)) != MPQ_OK) return st;
    if (!str_is(arch, alen, "llama"))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: general.architecture \"%.*s\" is not supported (llama)",
                           f->path, (int)(alen < 64 ? alen : 64), arch);
    int key_len = 0, val_len = 0, rope_dims = 0;
    if ((st = arch_int(f, "embedding_length", false, 0, &c->dim, err)) ||
        (st = arch_int(f, "feed_forward_length", false, 0, &c->hidden_dim, err)) ||
        (st = arch_int(f, "block_count", false, 0, &c->n_layers, err)) ||
        (st = arch_int(f, "attention.head_count", false, 0, &c->n_heads, err)) ||
        (st = arch_int(f, "context_length", false, 0, &c->seq_len, err)))
        return st;
    if ((st = arch_int(f, "attention.head_count_kv", true, c->n_heads, &c->n_kv_heads, err)) ||
        (st = arch_int(f, "attention.key_length", true, 0, &key_len, err)) ||
        (st = arch_int(f, "attention.value_length", true, 0, &val_len, err)) ||
        (st = arch_int(f, "rope.dimension_count", true, 0, &rope_dims, err)) ||
        (st = arch_float(f, "rope.freq_base", 10000.0f, &c->rope_theta, err)) ||
        (st = arch_float(f, "attention.layer_norm_rms_epsilon", 1e-5f, &c->norm_eps, err)))
        return st;
    const char *scaling = NULL;
    size_t slen = 0;
    bool found = false;
    if ((st = mpq_gguf_get_string(f, "llama.rope.scaling.type", &scaling, &slen, &found, err)) != MPQ_OK) return st;
    if (found && !str_is(scaling, slen, "none"))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: llama.rope.scaling.type \"%.*s\" is not supported", f->path,
                           (int)(slen < 64 ? slen : 64), scaling);
    const mpq_gguf_tensor *emb = mpq_gguf_find_tensor(f, "token_embd.weight");
    if (!emb) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing tensor token_embd.weight", f->path);
    if (emb->n_dims != 2 || emb->ne[1] > INT32_MAX)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor token_embd.weight: %d dimensions, expected [dim, vocab]",
                           f->path, emb->n_dims);
    c->vocab_size = (int)emb->ne[1];
    int vocab_key = c->vocab_size;
    if ((st = arch_int(f, "vocab_size", true, c->vocab_size, &vocab_key, err)) != MPQ_OK) return st;
    if (vocab_key != c->vocab_size)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: llama.vocab_size %d differs from token_embd.weight's %d rows",
                           f->path, vocab_key, c->vocab_size);
    c->arch = MPQ_ARCH_LLAMA;
    c->qkv_bias = false;
    c->format = MPQ_MODEL_FORMAT_GGUF;
    if ((st = mpq_model_check_config(c, f->path, err)) != MPQ_OK) return st;
    if ((key_len && key_len != c->head_dim) || (val_len && val_len != c->head_dim) ||
        (rope_dims && rope_dims != c->head_dim))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "%s: key_length %d / value_length %d / rope.dimension_count %d differ from head_dim %d "
                           "(embedding_length %d / head_count %d)",
                           f->path, key_len, val_len, rope_dims, c->head_dim, c->dim, c->n_heads);
    return MPQ_OK;
}

/* Loads tensor name of shape (rows, cols) (cols 0: a vector of rows) into dst; marks it used. */
static mpq_status load(const mpq_gguf_file *f, const char *name, int64_t rows, int64_t cols, float *dst, bool *used,
                       mpq_err *err) {
    const mpq_gguf_tensor *t = mpq_gguf_find_tensor(f, name);
    if (!t) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing tensor %s", f->path, name);
    bool ok = cols == 0 ? (t->n_dims == 1 && t->ne[0] == rows)
                        : (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows);
    if (!ok) {
        char got[128] = "", *p = got;
        for (int i = 0; i < t->n_dims; i++)
            p += snprintf(p, (size_t)(got + sizeof got - p), "%s%lld", i ? ", " : "", (long long)t->ne[i]);
        if (cols == 0)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: ne [%s], expected [%lld]", f->path, name, got,
                               (long long)rows);
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: ne [%s], expected [%lld, %lld] (in, out)", f->path,
                           name, got, (long long)cols, (long long)rows);
    }
    mpq_gguf_read_f32(f, t, dst);
    used[t - f->tensors] = true;
    return MPQ_OK;
}

mpq_status mpq_model_load_gguf(const char *path, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_gguf_file *f = NULL;
    mpq_model *m = NULL;
    bool *used = NULL;
    mpq_model_config c;
    char name[96], tb[16];
    memset(&c, 0, sizeof c);
    *out = NULL;
    if ((st = mpq_gguf_open(path, &f, err)) != MPQ_OK) goto done;
    if ((st = read_config(f, &c, err)) != MPQ_OK) goto done;
    c.shared_classifier = mpq_gguf_find_tensor(f, "output.weight") == NULL;
    const mpq_gguf_tensor *q0 = mpq_gguf_find_tensor(f, "blk.0.attn_q.weight");
    snprintf(c.source_dtype, sizeof c.source_dtype, "%s",
             mpq_ggml_type_name(q0 ? q0->type : mpq_gguf_find_tensor(f, "token_embd.weight")->type, tb));
    if ((st = mpq_model_create(&c, path, dtype, &m, err)) != MPQ_OK) goto done;
    used = mpq_calloc(f->n_tensors > 0 ? (size_t)f->n_tensors : 1, sizeof *used);
    if (!used) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int64_t d = c.dim, h = c.hidden_dim, qd = (int64_t)c.n_heads * c.head_dim, kv = (int64_t)c.n_kv_heads * c.head_dim;
    mpq_weights *w = &m->w;
#define LOAD(nm, r, cl, dst)                                                                                           \
    do {                                                                                                               \
        if ((st = load(f, (nm), (r), (cl), (dst), used, err)) != MPQ_OK) goto done;                                    \
        mpq_model_commit(m, &(dst));                                                                                   \
    } while (0)
#define LB(suffix, r, cl, dst)                                                                                         \
    do {                                                                                                               \
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, suffix);                                                    \
        LOAD(name, r, cl, dst);                                                                                        \
    } while (0)
    LOAD("token_embd.weight", c.vocab_size, d, w->tok_emb);
    for (int l = 0; l < c.n_layers; l++) {
        mpq_block_weights *b = &w->blocks[l];
        LB("attn_norm", d, 0, b->attn_norm);
        LB("attn_q", qd, d, b->wq);
        LB("attn_k", kv, d, b->wk);
        LB("attn_v", kv, d, b->wv);
        LB("attn_output", d, qd, b->wo);
        LB("ffn_norm", d, 0, b->ffn_norm);
        LB("ffn_gate", h, d, b->w_gate);
        LB("ffn_up", h, d, b->w_up);
        LB("ffn_down", d, h, b->w_down);
    }
    LOAD("output_norm.weight", d, 0, w->final_norm);
    if (!c.shared_classifier) LOAD("output.weight", c.vocab_size, d, w->classifier);
#undef LB
#undef LOAD
    for (int i = 0; i < f->n_tensors; i++)
        if (!used[i]) {
            st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: tensor %s is not part of a llama model mpq can run", path,
                             f->tensors[i].name);
            goto done;
        }
    *out = m;
    m = NULL;
done:
    free(used);
    mpq_model_free(m);
    mpq_gguf_close(f);
    return st;
}

/* An array key of element type elem and count n (n < 0: any count, stored in *count). */
static mpq_status get_array(const mpq_gguf_file *f, const char *key, mpq_gguf_vtype elem, int64_t n,
                            const mpq_gguf_kv **out, mpq_err *err) {
    const mpq_gguf_kv *kv = mpq_gguf_find_kv(f, key);
    *out = NULL;
    if (!kv) return MPQ_OK;
    if (kv->type != MPQ_GGUF_ARRAY || kv->elem != elem)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: expected an array of type %d", f->path, key, (int)elem);
    if (n >= 0 && kv->count != (uint64_t)n)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: %llu entries, tokenizer.ggml.tokens has %lld", f->path,
                           key, (unsigned long long)kv->count, (long long)n);
    *out = kv;
    return MPQ_OK;
}

/* A special-token id key: absent is fine; present must equal want (mpq's fixed ids). */
static mpq_status check_special(const mpq_gguf_file *f, const char *key, int want, mpq_err *err) {
    int64_t v = want;
    bool found = false;
    mpq_status st = mpq_gguf_get_int(f, key, 0, INT32_MAX, &v, &found, err);
    if (st != MPQ_OK) return st;
    if (found && v != want)
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: %s is %lld; mpq's tokenizer needs %d (unk 0, BOS 1, EOS 2)",
                           f->path, key, (long long)v, want);
    return MPQ_OK;
}

mpq_status mpq_tokenizer_load_gguf(const char *path, int vocab_size, mpq_tokenizer **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_gguf_file *f = NULL;
    char **pieces = NULL;
    size_t *lens = NULL;
    float *scores = NULL;
    int n = 0;
    *out = NULL;
    if ((st = mpq_gguf_open(path, &f, err)) != MPQ_OK) goto done;
    const char *model = NULL;
    size_t mlen = 0;
    bool found = false;
    if ((st = mpq_gguf_get_string(f, "tokenizer.ggml.model", &model, &mlen, &found, err)) != MPQ_OK) goto done;
    if (!found) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: no tokenizer in the file (key tokenizer.ggml.model)", path);
        goto done;
    }
    if (!str_is(model, mlen, "llama")) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                         "%s: tokenizer.ggml.model \"%.*s\" is not supported (\"llama\": a sentencepiece vocabulary)",
                         path, (int)(mlen < 64 ? mlen : 64), model);
        goto done;
    }
    const mpq_gguf_kv *tokens = NULL, *sc = NULL, *types = NULL;
    if ((st = get_array(f, "tokenizer.ggml.tokens", MPQ_GGUF_STRING, -1, &tokens, err)) != MPQ_OK) goto done;
    if (!tokens) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing key tokenizer.ggml.tokens", path);
        goto done;
    }
    if (tokens->count > INT32_MAX) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tokenizer.ggml.tokens: %llu entries", path,
                         (unsigned long long)tokens->count);
        goto done;
    }
    n = (int)tokens->count;
    if (vocab_size > 0 && n != vocab_size) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %d pieces, the model's vocabulary %d", path,
                         n, vocab_size);
        goto done;
    }
    if ((st = get_array(f, "tokenizer.ggml.scores", MPQ_GGUF_F32, n, &sc, err)) != MPQ_OK ||
        (st = get_array(f, "tokenizer.ggml.token_type", MPQ_GGUF_I32, n, &types, err)) != MPQ_OK)
        goto done;
    if (!sc) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing key tokenizer.ggml.scores (an SPM vocabulary needs them)",
                         path);
        goto done;
    }
    if ((st = check_special(f, "tokenizer.ggml.unknown_token_id", MPQ_TOKEN_UNK, err)) != MPQ_OK ||
        (st = check_special(f, "tokenizer.ggml.bos_token_id", MPQ_TOKEN_BOS, err)) != MPQ_OK ||
        (st = check_special(f, "tokenizer.ggml.eos_token_id", MPQ_TOKEN_EOS, err)) != MPQ_OK)
        goto done;
    size_t cap = n > 0 ? (size_t)n : 1;
    pieces = mpq_calloc(cap, sizeof *pieces);
    lens = mpq_calloc(cap, sizeof *lens);
    scores = mpq_calloc(cap, sizeof *scores);
    if (!pieces || !lens || !scores) goto nomem;
    /* the string array was bounds-checked when the file was opened: walk it again */
    size_t pos = tokens->off;
    for (int i = 0; i < n; i++) {
        uint64_t len;
        memcpy(&len, f->map + pos, 8);
        const unsigned char *s = f->map + pos + 8;
        pos += 8 + (size_t)len;
        const char *special = i == MPQ_TOKEN_BOS ? "\n<s>\n" : i == MPQ_TOKEN_EOS ? "\n</s>\n" : NULL;
        size_t sl = special ? strlen(special) : (size_t)len;
        if (!(pieces[i] = malloc(sl + 1))) goto nomem;
        if (special) {
            memcpy(pieces[i], special, sl);
        } else { /* U+2581 (E2 96 81) -> ' ' */
            size_t k = 0;
            for (size_t j = 0; j < sl; j++) {
                if (j + 2 < sl && s[j] == 0xE2 && s[j + 1] == 0x96 && s[j + 2] == 0x81) {
                    pieces[i][k++] = ' ';
                    j += 2;
                } else {
                    pieces[i][k++] = (char)s[j];
                }
            }
            sl = k;
        }
        pieces[i][sl] = '\0';
        lens[i] = sl;
        memcpy(&scores[i], f->map + sc->off + 4 * (size_t)i, 4);
    }
    /* byte fallback: mpq's encoder maps byte b to id 3 + b */
    for (int b = 0; b < 256 && n >= 3 + 256; b++) {
        char want[8];
        snprintf(want, sizeof want, "<0x%02X>", b);
        if (strcmp(pieces[3 + b], want) != 0) {
            st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                             "%s: token %d is \"%.16s\", not the byte piece %s (mpq needs byte pieces at ids 3..258)",
                             path, 3 + b, pieces[3 + b], want);
            goto done;
        }
        if (types) {
            int32_t ty;
            memcpy(&ty, f->map + types->off + 4 * (size_t)(3 + b), 4);
            if (ty != 6) { /* LLAMA_TOKEN_TYPE_BYTE */
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: token %d (%s) has token_type %d, expected 6 (byte)", path,
                                 3 + b, want, (int)ty);
                goto done;
            }
        }
    }
    st = mpq_tokenizer_from_pieces((const char *const *)pieces, lens, scores, n, path, out, err);
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for %d pieces", path, n);
done:
    if (pieces)
        for (int i = 0; i < n; i++) free(pieces[i]);
    free(pieces);
    free(lens);
    free(scores);
    mpq_gguf_close(f);
    return st;
}
