/*
 * llama2c.c - llama2.c checkpoints: the legacy format (7 int32 header, fp32 weights, the
 * freq_cis block, negative vocab_size => separate classifier) and the versioned "ak42" v1
 * fp32 format (256-byte header: magic 0x616b3432, int32 version 1, 7 int32 params, uint8
 * shared_classifier). Reference: karpathy/llama2.c run.c (memory_map_weights) and export.py
 * (legacy_export, version1_export). Files are little-endian, like the hosts we run on.
 */
#include "model/model_internal.h"
#include "util/file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define AK42_MAGIC 0x616b3432u
#define AK42_HEADER 256

typedef struct reader {
    FILE *f;
    const char *path;
    size_t pos; /* byte offset, for messages */
} reader;

static mpq_status read_floats(reader *r, float *dst, size_t n, const char *what, mpq_err *err) {
    size_t got = fread(dst, sizeof(float), n, r->f);
    if (got != n)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s: short read at byte %zu (%zu of %zu floats)", r->path,
                           what, r->pos + got * sizeof(float), got, n);
    /* a NaN or Inf weight makes every figure computed from the model meaningless */
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i]))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: element %zu (byte %zu) is %s; weights must be finite",
                               r->path, what, i, r->pos + i * sizeof(float), isnan(dst[i]) ? "NaN" : dst[i] > 0 ? "+Inf" : "-Inf");
    r->pos += n * sizeof(float);
    return MPQ_OK;
}

/* Expected file size: header + every weight (+ freq_cis for legacy). false on overflow. */
static bool expected_size(const mpq_model_config *c, size_t header, bool legacy, size_t *out) {
    size_t n, bytes, freq = 0;
    mpq_err e;
    if (mpq_model_weights_size(c, &n, "", &e) != MPQ_OK) return false;
    if (legacy && !mpq_size_mul((size_t)c->seq_len, (size_t)c->head_dim, &freq)) return false;
    if (!mpq_size_add(n, freq, &n) || !mpq_size_mul(n, sizeof(float), &bytes) || !mpq_size_add(bytes, header, &bytes))
        return false;
    *out = bytes;
    return true;
}

#define RD(ptr, n, what)                                                                                               \
    do {                                                                                                               \
        st = read_floats(&r, (ptr), (n), (what), err);                                                                 \
        if (st != MPQ_OK) goto done;                                                                                   \
        mpq_model_commit(m, &(ptr));                                                                                   \
    } while (0)

mpq_status mpq_model_load_llama2c(const char *path, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_model *m = NULL;
    reader r = {NULL, path, 0};
    mpq_model_config c;
    struct stat sb;
    int32_t hdr[9];
    bool legacy;
    size_t header_bytes, file_size, want = 0;
    char what[64];

    *out = NULL;
    memset(&c, 0, sizeof c);
    if ((st = mpq_file_fopen_regular(path, &r.f, err)) != MPQ_OK) goto done;
    if (fstat(fileno(r.f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    file_size = (size_t)sb.st_size;
    if (fread(hdr, sizeof(int32_t), 1, r.f) != 1) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: file of %zu bytes is too short for a llama2.c header", path,
                         file_size);
        goto done;
    }
    legacy = (uint32_t)hdr[0] != AK42_MAGIC;
    if (legacy) {
        if (fread(hdr + 1, sizeof(int32_t), 6, r.f) != 6) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: file of %zu bytes is too short for the 28-byte legacy header",
                             path, file_size);
            goto done;
        }
        c.dim = hdr[0], c.hidden_dim = hdr[1], c.n_layers = hdr[2], c.n_heads = hdr[3];
        c.n_kv_heads = hdr[4], c.vocab_size = hdr[5], c.seq_len = hdr[6];
        c.shared_classifier = c.vocab_size > 0;
        if (c.vocab_size < 0 && c.vocab_size != INT32_MIN) c.vocab_size = -c.vocab_size;
        c.format = MPQ_MODEL_FORMAT_LLAMA2C_LEGACY;
        header_bytes = 7 * sizeof(int32_t);
    } else {
        unsigned char rest[AK42_HEADER - 4];
        if (fread(rest, 1, sizeof rest, r.f) != sizeof rest) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: file of %zu bytes is too short for the 256-byte ak42 header",
                             path, file_size);
            goto done;
        }
        memcpy(hdr + 1, rest, 8 * sizeof(int32_t));
        if (hdr[1] != 1) {
            st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: ak42 version %d is not supported (only 1 = fp32)", path,
                             hdr[1]);
            goto done;
        }
        c.dim = hdr[2], c.hidden_dim = hdr[3], c.n_layers = hdr[4], c.n_heads = hdr[5];
        c.n_kv_heads = hdr[6], c.vocab_size = hdr[7], c.seq_len = hdr[8];
        unsigned char shared = rest[8 * sizeof(int32_t)];
        if (shared > 1) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: ak42 shared_classifier flag at byte 36 is %u (0 or 1)", path,
                             shared);
            goto done;
        }
        c.shared_classifier = shared == 1;
        c.format = MPQ_MODEL_FORMAT_LLAMA2C_V1;
        header_bytes = AK42_HEADER;
    }
    r.pos = header_bytes;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.qkv_bias = false;
    c.arch = MPQ_ARCH_LLAMA;
    memcpy(c.source_dtype, "F32", 4);
    st = mpq_model_check_config(&c, path, err);
    if (st != MPQ_OK) goto done;
    if (!expected_size(&c, header_bytes, legacy, &want)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: header dims overflow the size computation", path);
        goto done;
    }
    if (want != file_size) {
        mpq_model_config o = c;
        size_t other = 0;
        o.shared_classifier = !c.shared_classifier;
        bool other_ok = expected_size(&o, header_bytes, legacy, &other) && other == file_size;
        st = mpq_err_set(err, MPQ_ERR_FORMAT,
                         "%s: header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab %d, "
                         "seq_len %d, %s classifier) implies %zu bytes but the file has %zu%s",
                         path, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len,
                         c.shared_classifier ? "shared" : "separate", want, file_size,
                         other_ok ? (c.shared_classifier ? " (it would fit with a separate classifier)"
                                                         : " (it would fit with a shared classifier)")
                                  : "");
        goto done;
    }
    st = mpq_model_create(&c, path, dtype, &m, err);
    if (st != MPQ_OK) goto done;

    {
        mpq_weights *w = &m->w;
        size_t d = (size_t)c.dim, h = (size_t)c.hidden_dim, kv = (size_t)c.n_kv_heads * (size_t)c.head_dim;
        size_t L = (size_t)c.n_layers, V = (size_t)c.vocab_size;
#define EACH(field, n, name)                                                                                           \
    for (size_t l = 0; l < L; l++) {                                                                                   \
        snprintf(what, sizeof what, "blk.%zu.%s", l, name);                                                            \
        RD(w->blocks[l].field, (n), what);                                                                             \
    }
        if (legacy) {
            RD(w->tok_emb, V * d, "token_embedding");
            EACH(attn_norm, d, "attn_norm");
            EACH(wq, d * d, "attn_q");
            EACH(wk, kv * d, "attn_k");
            EACH(wv, kv * d, "attn_v");
            EACH(wo, d * d, "attn_o");
            EACH(ffn_norm, d, "ffn_norm");
            EACH(w_gate, h * d, "ffn_gate (w1)");
            EACH(w_down, d * h, "ffn_down (w2)");
            EACH(w_up, h * d, "ffn_up (w3)");
            RD(w->final_norm, d, "final_norm");
            size_t skip = (size_t)c.seq_len * (size_t)c.head_dim * sizeof(float);
            if (fseek(r.f, (long)skip, SEEK_CUR) != 0) {
                st = mpq_err_set(err, MPQ_ERR_IO, "%s: cannot skip the freq_cis block at byte %zu", path, r.pos);
                goto done;
            }
            r.pos += skip;
        } else {
            EACH(attn_norm, d, "attn_norm");
            EACH(ffn_norm, d, "ffn_norm");
            RD(w->final_norm, d, "final_norm");
            RD(w->tok_emb, V * d, "token_embedding");
            EACH(wq, d * d, "attn_q");
            EACH(wk, kv * d, "attn_k");
            EACH(wv, kv * d, "attn_v");
            EACH(wo, d * d, "attn_o");
            EACH(w_gate, h * d, "ffn_gate (w1)");
            EACH(w_down, d * h, "ffn_down (w2)");
            EACH(w_up, h * d, "ffn_up (w3)");
        }
#undef EACH
        if (!c.shared_classifier) RD(w->classifier, V * d, "classifier");
    }
    *out = m;
    m = NULL;
done:
    if (r.f) fclose(r.f);
    mpq_model_free(m);
    return st;
}
