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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"

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

static const char *base_of(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

mpq_status mpq_imatrix_from_job(mpq_job *job, mpq_imatrix **out, mpq_err *err) {
    if (!job || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "imatrix: NULL argument");
    *out = NULL;
    const mpq_model *model = NULL;
    mpq_calib *cal = NULL;
    /* the job's model (SHA-256 checked), its calibration windows (data hash checked) and the FP
     * reference with X^T X, as a stored SAQ configuration is evaluated */
    mpq_status st = mpq_job_calib_create(job, &cal, err);
    if (st == MPQ_OK) st = mpq_job_load_model(job, &model, err); /* already loaded: borrowed */
    if (st == MPQ_OK)
        st = mpq_imatrix_from_calib(cal, model, base_of(mpq_job_get_spec(job)->calib.data), out, err);
    else
        mpq_err_prefix(err, "imatrix");
    mpq_calib_free(cal);
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
