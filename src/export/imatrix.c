/*
 * imatrix.c - llama.cpp importance matrices from mpq's calibration (mpq_export.h,
 * "importance matrix").
 *
 * What llama-quantize --imatrix uses per weight tensor is the mean over calibration tokens of
 * the squared input activation of each input column: mpq's diag(X^T X / N) (mpq_calib_xtx_packed).
 * References (ggml-org/llama.cpp): tools/imatrix/imatrix.cpp (writer), common/imatrix-loader.cpp
 * and tools/quantize/quantize.cpp load_imatrix (reader):
 * - GGUF layout (what current llama-imatrix writes and reads first): key "general.type" =
 *   "imatrix", "imatrix.datasets" (array of strings), "imatrix.chunk_count" (u32),
 *   "imatrix.chunk_size" (u32); per weight tensor two F32 tensors, "<name>.in_sum2" of shape
 *   (n_values, 1) = the sum over tokens of x^2, and "<name>.counts" of shape (1, 1) = the
 *   number of tokens; names sorted. The reader divides in_sum2 by counts.
 * - legacy layout (read when the file is not GGUF): int32 n_entries; per entry int32 name
 *   length, the name, int32 ncall, int32 nval, float32 values[nval]; then int32 chunk count and
 *   int32 length + dataset name. The reader divides values by ncall; llama-imatrix writes
 *   ncall = chunks and values = mean(x^2) * chunks, and so does mpq (chunks = calibration
 *   windows of chunk_size tokens), so a merge with llama-imatrix --in-file (which multiplies a
 *   legacy entry by chunk_size) recovers the same sums and counts.
 * All integers and floats little-endian.
 */
#include "mpq/mpq_export.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_tokenizer.h"

void mpq_imatrix_free(mpq_imatrix *im) {
    if (!im) return;
    for (int i = 0; i < im->n_entries; i++) free(im->entries[i].mean_sq);
    free(im->entries);
    free(im);
}

mpq_status mpq_imatrix_from_calib(const mpq_calib *cal, const mpq_model *model, const char *dataset,
                                  mpq_imatrix **out, mpq_err *err) {
    if (!cal || !model || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "imatrix: NULL argument");
    *out = NULL;
    int nl = mpq_model_n_linear(model);
    mpq_imatrix *im = calloc(1, sizeof *im);
    if (!im || !(im->entries = mpq_calloc((size_t)nl, sizeof *im->entries))) {
        free(im);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "imatrix: out of memory");
    }
    static const char *const kind[MPQ_N_LAYER_KINDS] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                        "ffn_gate", "ffn_up", "ffn_down"};
    mpq_status st = MPQ_OK;
    im->n_tokens = mpq_calib_n_tokens(cal);
    im->n_chunks = mpq_calib_n_seqs(cal);
    im->chunk_size = mpq_calib_T(cal);
    snprintf(im->dataset, sizeof im->dataset, "%s", dataset ? dataset : "");
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(model, i);
        int64_t cols = 0;
        const double *S = mpq_calib_xtx_packed(cal, i, &cols);
        if (!S || cols != li->cols) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "imatrix: %s: no X^T X collected (calibration without collect_xtx)",
                             li->name);
            goto done;
        }
        mpq_imatrix_entry *e = &im->entries[im->n_entries++];
        snprintf(e->name, sizeof e->name, "blk.%d.%s.weight", li->block, kind[li->kind]);
        e->n_values = cols;
        if (!(e->mean_sq = mpq_calloc((size_t)cols, sizeof *e->mean_sq))) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "imatrix: out of memory");
            goto done;
        }
        for (int64_t c = 0; c < cols; c++) e->mean_sq[c] = S[mpq_xtx_index(cols, c, c)];
    }
    *out = im;
    im = NULL;
done:
    mpq_imatrix_free(im);
    return st;
}

/* ---- job: model (SHA-256 checked) + calibration windows + FP reference with X^T X ---------- */

/* The data hash the job recorded for key (artifact "inputs"); "" if none. */
static void recorded_sha(mpq_job *job, const char *key, char out[65]) {
    void *blob = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (mpq_db_artifact_get(mpq_job_db(job), mpq_job_get_row(job)->id, "inputs", &blob, &n, NULL) != MPQ_OK) return;
    cJSON *o = cJSON_ParseWithLength(blob, n);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v) && strlen(v->valuestring) == 64) snprintf(out, 65, "%s", v->valuestring);
    cJSON_Delete(o);
    free(blob);
}

static const char *base_of(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

mpq_status mpq_imatrix_from_job(mpq_job *job, mpq_imatrix **out, mpq_err *err) {
    if (!job || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "imatrix: NULL argument");
    *out = NULL;
    const mpq_job_spec *s = mpq_job_get_spec(job);
    const char *jn = mpq_job_get_row(job)->name;
    const mpq_model *model = NULL;
    mpq_tokenizer *tok = NULL;
    mpq_data *data = NULL;
    mpq_data_seqs *seqs = NULL;
    int *tokens = NULL;
    mpq_calib *cal = NULL;
    mpq_status st;
    if ((st = mpq_job_load_model(job, &model, err)) != MPQ_OK) {
        mpq_err_prefix(err, "imatrix of job '%s' needs the model's weights", jn);
        return st;
    }
    const mpq_model_config *mc = mpq_model_get_config(model);
    if (s->tokenizer && (st = mpq_tokenizer_load(s->tokenizer, mc->vocab_size, &tok, err)) != MPQ_OK) {
        mpq_err_prefix(err, "imatrix of job '%s': tokenizer", jn);
        goto done;
    }
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(s->calib.data, tok, &dopt, &data, err)) != MPQ_OK) {
        mpq_err_prefix(err, "imatrix of job '%s': calibration data", jn);
        goto done;
    }
    char rec[65];
    recorded_sha(job, "calibration_sha256", rec);
    if (rec[0] && strcmp(rec, mpq_data_sha256(data)) != 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID,
                         "imatrix of job '%s': calibration data %s changed since the job was created (sha256 now %s, "
                         "recorded %s)", jn, s->calib.data, mpq_data_sha256(data), rec);
        goto done;
    }
    if ((st = mpq_data_sequences(data, s->calib.seq_len, s->calib.n_seqs, (uint64_t)s->calib.seed, &seqs, err)) !=
        MPQ_OK)
        goto done;
    size_t nt;
    if (!mpq_size_mul((size_t)seqs->n_seqs, (size_t)seqs->seq_len + 1, &nt) ||
        !(tokens = mpq_calloc(nt, sizeof *tokens))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "imatrix: out of memory for %d calibration windows", seqs->n_seqs);
        goto done;
    }
    for (size_t i = 0; i < nt; i++) tokens[i] = (int)seqs->tokens[i];
    mpq_calib_opts co = mpq_calib_opts_default();
    co.batch = s->calib.batch;
    co.collect_xtx = true;
    if (s->has_kv) co.kv_scheme = s->kv_scheme;
    if ((st = mpq_calib_create(model, tokens, seqs->n_seqs, seqs->seq_len, &co, &cal, err)) != MPQ_OK) goto done;
    st = mpq_imatrix_from_calib(cal, model, base_of(s->calib.data), out, err);
done:
    mpq_calib_free(cal);
    free(tokens);
    mpq_data_seqs_free(seqs);
    mpq_data_free(data);
    mpq_tokenizer_free(tok);
    return st;
}

/* ---- serialization ------------------------------------------------------------------------ */

static void put_u32(sbuf *b, uint32_t v) {
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    sb_bytes(b, c, 4);
}
static void put_u64(sbuf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_f32(sbuf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_gstr(sbuf *b, const char *s) { /* GGUF string: u64 length + bytes */
    put_u64(b, strlen(s));
    sb_bytes(b, s, strlen(s));
}
static void pad_to(sbuf *b, size_t align) {
    static const unsigned char z[32] = {0};
    while (b->len % align) sb_bytes(b, z, 1);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const mpq_imatrix_entry *)a)->name, ((const mpq_imatrix_entry *)b)->name);
}

mpq_status mpq_imatrix_serialize(const mpq_imatrix *im, bool gguf, unsigned char **buf, size_t *len, mpq_err *err) {
    if (!im || !buf || !len) return mpq_err_set(err, MPQ_ERR_INVALID, "imatrix: NULL argument");
    *buf = NULL;
    *len = 0;
    if (im->n_entries < 1 || im->n_tokens < 1 || im->n_chunks < 1 || im->n_tokens > (int64_t)1 << 24)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "imatrix: %d entries, %lld tokens (need >= 1 of each and at most 2^24 tokens, the count "
                           "llama.cpp stores as float)", im->n_entries, (long long)im->n_tokens);
    sbuf b = {0};
    if (!gguf) {
        put_u32(&b, (uint32_t)im->n_entries);
        for (int i = 0; i < im->n_entries; i++) {
            const mpq_imatrix_entry *e = &im->entries[i];
            put_u32(&b, (uint32_t)strlen(e->name));
            sb_bytes(&b, e->name, strlen(e->name));
            put_u32(&b, (uint32_t)im->n_chunks);
            put_u32(&b, (uint32_t)e->n_values);
            for (int64_t c = 0; c < e->n_values; c++) put_f32(&b, (float)(e->mean_sq[c] * im->n_chunks));
        }
        put_u32(&b, (uint32_t)im->n_chunks);
        put_u32(&b, (uint32_t)strlen(im->dataset));
        sb_bytes(&b, im->dataset, strlen(im->dataset));
    } else {
        mpq_imatrix_entry *sorted = mpq_calloc((size_t)im->n_entries, sizeof *sorted);
        if (!sorted) return mpq_err_set(err, MPQ_ERR_NOMEM, "imatrix: out of memory");
        memcpy(sorted, im->entries, (size_t)im->n_entries * sizeof *sorted);
        qsort(sorted, (size_t)im->n_entries, sizeof *sorted, cmp_entry);
        const size_t align = 32; /* GGUF_DEFAULT_ALIGNMENT */
        sb_bytes(&b, "GGUF", 4);
        put_u32(&b, 3);
        put_u64(&b, 2 * (uint64_t)im->n_entries);
        put_u64(&b, 4);
        put_gstr(&b, "general.type");
        put_u32(&b, 8); /* GGUF_TYPE_STRING */
        put_gstr(&b, "imatrix");
        put_gstr(&b, "imatrix.datasets");
        put_u32(&b, 9); /* GGUF_TYPE_ARRAY */
        put_u32(&b, 8);
        put_u64(&b, 1);
        put_gstr(&b, im->dataset);
        put_gstr(&b, "imatrix.chunk_count");
        put_u32(&b, 4); /* GGUF_TYPE_UINT32 */
        put_u32(&b, (uint32_t)im->n_chunks);
        put_gstr(&b, "imatrix.chunk_size");
        put_u32(&b, 4);
        put_u32(&b, (uint32_t)im->chunk_size);
        uint64_t off = 0;
        for (int i = 0; i < im->n_entries; i++) {
            char nm[MPQ_EXPORT_NAME_MAX + 16];
            for (int k = 0; k < 2; k++) {
                snprintf(nm, sizeof nm, "%s.%s", sorted[i].name, k ? "counts" : "in_sum2");
                put_gstr(&b, nm);
                put_u32(&b, 2);
                put_u64(&b, k ? 1 : (uint64_t)sorted[i].n_values);
                put_u64(&b, 1);
                put_u32(&b, 0); /* GGML_TYPE_F32 */
                put_u64(&b, off);
                uint64_t nb = 4 * (k ? 1 : (uint64_t)sorted[i].n_values);
                off += (nb + align - 1) / align * align;
            }
        }
        pad_to(&b, align);
        for (int i = 0; i < im->n_entries; i++) {
            for (int64_t c = 0; c < sorted[i].n_values; c++)
                put_f32(&b, (float)(sorted[i].mean_sq[c] * (double)im->n_tokens));
            pad_to(&b, align);
            put_f32(&b, (float)im->n_tokens);
            pad_to(&b, align);
        }
        free(sorted);
    }
    if (b.oom) {
        sb_free(&b);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "imatrix: out of memory");
    }
    *len = b.len;
    *buf = (unsigned char *)b.s;
    return MPQ_OK;
}
