/* test_model.c - model loading (llama2.c legacy and ak42 v1, Hugging Face safetensors), the layer
 * table, clone, and a table of hostile checkpoints generated from the real shared models. */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mpq/mpq_model.h"
#include "test_util.h"
#include "test_main.h"

#define STORIES "models/stories260K/stories260K.bin"

START_TEST(test_llama2c_legacy_stories) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(STORIES), &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_model_config *c = mpq_model_get_config(m);
    ck_assert_int_eq(c->dim, 64);
    ck_assert_int_eq(c->hidden_dim, 172);
    ck_assert_int_eq(c->n_layers, 5);
    ck_assert_int_eq(c->n_heads, 8);
    ck_assert_int_eq(c->n_kv_heads, 4);
    ck_assert_int_eq(c->head_dim, 8);
    ck_assert_int_eq(c->vocab_size, 512);
    ck_assert_int_eq(c->seq_len, 512);
    ck_assert(c->shared_classifier);
    ck_assert(!c->qkv_bias);
    ck_assert_int_eq(c->format, MPQ_MODEL_FORMAT_LLAMA2C_LEGACY);
    ck_assert_str_eq(c->source_dtype, "F32");
    /* README: 260,032 parameters */
    ck_assert_int_eq(mpq_model_n_params(m), 260032);
    ck_assert_int_eq(mpq_model_n_linear(m), 35);
    const mpq_weights *w = mpq_model_get_weights(m);
    ck_assert_ptr_eq(w->classifier, w->tok_emb);
    ck_assert_int_eq((int64_t)w->n_floats, 260032);
    /* RMSNorm gains of a trained model are finite and mostly positive, not zero-filled */
    int pos = 0;
    for (int i = 0; i < c->dim; i++) pos += w->final_norm[i] > 0;
    ck_assert_int_gt(pos, c->dim / 2);
    ck_assert_str_eq(mpq_model_path(m), shared_path(STORIES));
    mpq_model_free(m);
}
END_TEST

START_TEST(test_layer_table) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(STORIES), &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_layer_info *li = mpq_model_linear(m, 7 * 3 + 1);
    ck_assert_str_eq(li->name, "blk.3.attn_k");
    ck_assert_str_eq(li->hf_name, "model.layers.3.self_attn.k_proj");
    ck_assert_int_eq(li->rows, 32);
    ck_assert_int_eq(li->cols, 64);
    ck_assert_int_eq(li->n_params, 32 * 64);
    li = mpq_model_linear(m, 6);
    ck_assert_str_eq(li->name, "blk.0.ffn_down");
    ck_assert_int_eq(li->rows, 64);
    ck_assert_int_eq(li->cols, 172);
    ck_assert_int_eq(mpq_model_find_linear(m, "blk.3.attn_k"), 22);
    ck_assert_int_eq(mpq_model_find_linear(m, "blk.3.attn_k.weight"), 22);
    ck_assert_int_eq(mpq_model_find_linear(m, "model.layers.3.self_attn.k_proj"), 22);
    ck_assert_int_eq(mpq_model_find_linear(m, "model.layers.3.self_attn.k_proj.weight"), 22);
    ck_assert_int_eq(mpq_model_find_linear(m, "model.layers.4.mlp.up_proj"), 33);
    ck_assert_int_eq(mpq_model_find_linear(m, "blk.5.attn_q"), -1);
    ck_assert_int_eq(mpq_model_find_linear(m, "blk.3.attn_k.weightx"), -1);
    ck_assert_int_eq(mpq_model_find_linear(m, ".weight"), -1);
    ck_assert_ptr_null(mpq_model_linear(m, 35));
    ck_assert_ptr_null(mpq_model_linear(m, -1));
    ck_assert_str_eq(mpq_layer_kind_name(MPQ_LAYER_FFN_GATE), "ffn_gate");
    const mpq_weights *w = mpq_model_get_weights(m);
    ck_assert_ptr_eq(mpq_weights_linear(w, mpq_model_linear(m, 22)), w->blocks[3].wk);
    ck_assert_ptr_eq(mpq_weights_linear(w, mpq_model_linear(m, 6)), w->blocks[0].w_down);
    /* layers tile the block without overlap: sum of linear params + norms + embedding = total */
    int64_t lin = 0;
    for (int i = 0; i < mpq_model_n_linear(m); i++) lin += mpq_model_linear(m, i)->n_params;
    ck_assert_int_eq(lin + 512 * 64 + (2 * 5 + 1) * 64, mpq_model_n_params(m));
    mpq_model_free(m);
}
END_TEST

START_TEST(test_clone) {
    mpq_model *m = NULL;
    mpq_weights *w2 = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(STORIES), &m, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_weights_clone(m, &w2, &err), MPQ_OK);
    const mpq_weights *w = mpq_model_get_weights(m);
    ck_assert_ptr_ne(w2->data, w->data);
    ck_assert_int_eq(memcmp(w2->data, w->data, w->n_floats * sizeof(float)), 0);
    ck_assert_ptr_eq(w2->classifier, w2->tok_emb);
    const mpq_layer_info *li = mpq_model_linear(m, 30);
    float *a = mpq_weights_linear(w, li), *b = mpq_weights_linear(w2, li);
    ck_assert_int_eq(b - w2->data, a - w->data);
    b[0] += 1.0f; /* the clone is independent */
    ck_assert(a[0] != b[0]);
    mpq_weights_free(w2);
    mpq_weights_free(NULL);
    mpq_model_free(m);
    mpq_model_free(NULL);
}
END_TEST

/* A view borrows every tensor, owns only its table: substituting one layer's pointer in it
 * changes neither the model nor another view. */
START_TEST(test_view) {
    mpq_model *m = NULL;
    mpq_weights *v1 = NULL, *v2 = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(STORIES), &m, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_weights_view(m, &v1, &err), MPQ_OK);
    ck_assert_int_eq(mpq_weights_view(m, &v2, &err), MPQ_OK);
    const mpq_weights *w = mpq_model_get_weights(m);
    ck_assert_ptr_null(v1->data);
    ck_assert_ptr_ne(v1->blocks, w->blocks);
    ck_assert_ptr_eq(v1->tok_emb, w->tok_emb);
    ck_assert_ptr_eq(v1->classifier, w->classifier);
    ck_assert_ptr_eq(v1->final_norm, w->final_norm);
    for (int i = 0; i < mpq_model_n_linear(m); i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        ck_assert_ptr_eq(mpq_weights_linear(v1, li), mpq_weights_linear(w, li));
        float **slot = mpq_weights_linear_slot(v1, li);
        ck_assert_ptr_nonnull(slot);
        ck_assert_ptr_eq(*slot, mpq_weights_linear(w, li));
    }
    const mpq_layer_info *li = mpq_model_linear(m, 30);
    float other = 0.0f, *orig = mpq_weights_linear(w, li);
    *mpq_weights_linear_slot(v1, li) = &other;
    ck_assert_ptr_eq(mpq_weights_linear(v1, li), &other);
    ck_assert_ptr_eq(mpq_weights_linear(w, li), orig);
    ck_assert_ptr_eq(mpq_weights_linear(v2, li), orig);
    mpq_layer_info bad = *li;
    bad.block = w->n_layers;
    ck_assert_ptr_null(mpq_weights_linear_slot(v1, &bad));
    ck_assert_ptr_null(mpq_weights_linear_slot(NULL, li));
    ck_assert_int_eq(mpq_weights_view(NULL, &v1, &err), MPQ_ERR_INVALID);
    mpq_weights_free(v2);
    mpq_weights_free(v1);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_llama2c_sotu) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path("models/sotu-2.7M/sotu-2.7M.bin"), &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_model_config *c = mpq_model_get_config(m);
    ck_assert_int_eq(c->dim, 192);
    ck_assert_int_eq(c->n_layers, 6);
    ck_assert_int_eq(c->n_heads, 6);
    ck_assert_int_eq(c->n_kv_heads, 2);
    ck_assert_int_eq(c->vocab_size, 2048);
    ck_assert_int_eq(mpq_model_n_params(m), 2755008); /* its README */
    mpq_model_free(m);
}
END_TEST


/* Loads a and b and requires identical configs (except format/dtype) and layouts. */
static void load_pair(const char *a, const char *b, mpq_model **ma, mpq_model **mb) {
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(a), ma, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_model_load(shared_path(b), mb, &err) == MPQ_OK, "%s", err.msg);
    const mpq_model_config *x = mpq_model_get_config(*ma), *y = mpq_model_get_config(*mb);
    ck_assert_int_eq(x->dim, y->dim);
    ck_assert_int_eq(x->hidden_dim, y->hidden_dim);
    ck_assert_int_eq(x->n_layers, y->n_layers);
    ck_assert_int_eq(x->n_heads, y->n_heads);
    ck_assert_int_eq(x->n_kv_heads, y->n_kv_heads);
    ck_assert_int_eq(x->vocab_size, y->vocab_size);
    ck_assert_int_eq(x->seq_len, y->seq_len);
    ck_assert_int_eq(x->shared_classifier, y->shared_classifier);
    ck_assert_int_eq(y->format, MPQ_MODEL_FORMAT_HF);
    ck_assert_int_eq(mpq_model_get_weights(*ma)->n_floats, mpq_model_get_weights(*mb)->n_floats);
}

static void check_hf_f32_identical(const char *bin, const char *hf) {
    mpq_model *a = NULL, *b = NULL;
    load_pair(bin, hf, &a, &b);
    const mpq_weights *wa = mpq_model_get_weights(a), *wb = mpq_model_get_weights(b);
    ck_assert_str_eq(mpq_model_get_config(b)->source_dtype, "F32");
    /* same layout, so equal blocks mean every tensor (incl. the un-permuted q/k rows) is bit-identical */
    ck_assert_int_eq(memcmp(wa->data, wb->data, wa->n_floats * sizeof(float)), 0);
    mpq_model_free(a);
    mpq_model_free(b);
}

START_TEST(test_hf_f32_equals_llama2c) {
    check_hf_f32_identical(STORIES, "models/stories260K-hf");
    check_hf_f32_identical("models/sotu-2.7M/sotu-2.7M.bin", "models/sotu-2.7M-hf");
}
END_TEST

START_TEST(test_hf_bf16_close) {
    mpq_model *a = NULL, *b = NULL;
    load_pair(STORIES, "models/stories260K-hf-bf16", &a, &b);
    ck_assert_str_eq(mpq_model_get_config(b)->source_dtype, "BF16");
    const mpq_weights *wa = mpq_model_get_weights(a), *wb = mpq_model_get_weights(b);
    size_t n_diff = 0;
    for (size_t i = 0; i < wa->n_floats; i++) {
        /* BF16 keeps 8 significant bits (7 stored + implicit): round-to-nearest-even error is at
         * most half an ulp = 2^-8 relative to the value's power of two, so |a-b| <= 2^-8 |a|. */
        double x = wa->data[i], y = wb->data[i];
        ck_assert_double_eq_tol(y, x, fabs(x) * 0x1p-8);
        n_diff += x != y;
    }
    ck_assert_uint_gt(n_diff, wa->n_floats / 2); /* it really is a rounded copy */
    mpq_model_free(a);
    mpq_model_free(b);
}
END_TEST


/* ---- hostile inputs ---------------------------------------------------------------------- */

static void put_i32(unsigned char *b, size_t off, int32_t v) { memcpy(b + off, &v, 4); }

/* Expects load(path) to fail with status want and a message naming path and containing frag. */
static void expect_fail(const char *what, const char *path, mpq_status want, const char *frag) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    mpq_status st = mpq_model_load(path, &m, &err);
    ck_assert_msg(st == want, "%s: status %d want %d (%s)", what, st, want, err.msg);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", what, err.msg);
    ck_assert_msg(strstr(err.msg, frag) != NULL, "%s: message lacks '%s': %s", what, frag, err.msg);
}

START_TEST(test_hostile_llama2c) {
    char dir[512], path[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.bin", dir);
    size_t sz = 0;
    unsigned char *orig = test_read_file(shared_path(STORIES), &sz);
    ck_assert_ptr_nonnull(orig);
    unsigned char *b = malloc(sz);
    struct {
        const char *what;
        size_t len;
        int field; /* header int32 index to patch, -1 none */
        int32_t value;
        mpq_status want;
        const char *frag;
    } cases[] = {
        {"truncated", sz - 100, -1, 0, MPQ_ERR_FORMAT, "implies 1056540 bytes but the file has 1056440"},
        {"short header", 10, -1, 0, MPQ_ERR_FORMAT, "too short"},
        {"empty", 0, -1, 0, MPQ_ERR_FORMAT, "too short"},
        {"hidden_dim mismatch", sz, 1, 173, MPQ_ERR_FORMAT, "but the file has 1056540"},
        {"zero dim", sz, 0, 0, MPQ_ERR_FORMAT, "must be > 0"},
        {"negative layers", sz, 2, -5, MPQ_ERR_FORMAT, "n_layers -5"},
        {"zero seq_len", sz, 6, 0, MPQ_ERR_FORMAT, "seq_len 0"},
        {"dim % heads", sz, 3, 7, MPQ_ERR_FORMAT, "not divisible by n_heads 7"},
        {"heads % kv heads", sz, 4, 3, MPQ_ERR_FORMAT, "not divisible by n_kv_heads 3"},
        {"negative vocab = separate classifier", sz, 5, -512, MPQ_ERR_FORMAT, "would fit with a shared classifier"},
        {"huge dims", sz, 1, 0x7fffffff, MPQ_ERR_FORMAT, "bytes but the file has"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(b, orig, sz);
        if (cases[i].field >= 0) put_i32(b, 4 * (size_t)cases[i].field, cases[i].value);
        ck_assert_int_eq(test_write_file(path, b, cases[i].len), 0);
        expect_fail(cases[i].what, path, cases[i].want, cases[i].frag);
    }
    /* dims whose product overflows size_t */
    memcpy(b, orig, sz);
    put_i32(b, 0, 0x40000000), put_i32(b, 4, 0x7fffffff), put_i32(b, 8, 0x7fffffff), put_i32(b, 12, 2);
    put_i32(b, 16, 2);
    ck_assert_int_eq(test_write_file(path, b, 28), 0);
    expect_fail("overflow", path, MPQ_ERR_FORMAT, "overflow");
    expect_fail("missing", "/nonexistent/m.bin", MPQ_ERR_IO, "cannot");
    remove(path);
    rmdir(dir);
    free(b);
    free(orig);
}
END_TEST

/* Writes the ak42 v1 form of stories260K (export.py version1_export order) and loads it. */
START_TEST(test_ak42_v1) {
    char dir[512], path[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/v1.bin", dir);
    mpq_model *m = NULL, *m1 = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_model_load(shared_path(STORIES), &m, &err), MPQ_OK);
    const mpq_model_config *c = mpq_model_get_config(m);
    const mpq_weights *w = mpq_model_get_weights(m);
    size_t n = 256 + w->n_floats * 4, off = 256, d = 64, h = 172, kv = 32, L = 5;
    unsigned char *b = calloc(1, n);
    int32_t hdr[9] = {0x616b3432, 1, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                      c->seq_len};
    memcpy(b, hdr, sizeof hdr);
    b[36] = 1; /* shared classifier */
#define PUT(ptr, cnt) (memcpy(b + off, (ptr), (cnt) * 4), off += (cnt) * 4)
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].attn_norm, d);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].ffn_norm, d);
    PUT(w->final_norm, d);
    PUT(w->tok_emb, 512 * d);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].wq, d * d);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].wk, kv * d);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].wv, kv * d);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].wo, d * d);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].w_gate, h * d);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].w_down, d * h);
    for (size_t l = 0; l < L; l++) PUT(w->blocks[l].w_up, h * d);
#undef PUT
    ck_assert_uint_eq(off, n);
    ck_assert_int_eq(test_write_file(path, b, n), 0);
    ck_assert_msg(mpq_model_load(path, &m1, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_model_get_config(m1)->format, MPQ_MODEL_FORMAT_LLAMA2C_V1);
    ck_assert(mpq_model_get_config(m1)->shared_classifier);
    ck_assert_int_eq(memcmp(mpq_model_get_weights(m1)->data, w->data, w->n_floats * 4), 0);
    mpq_model_free(m1);
    /* hostile v1 headers */
    b[36] = 0;
    ck_assert_int_eq(test_write_file(path, b, n), 0);
    expect_fail("v1 flag says separate", path, MPQ_ERR_FORMAT, "would fit with a shared classifier");
    b[36] = 7;
    ck_assert_int_eq(test_write_file(path, b, n), 0);
    expect_fail("v1 flag 7", path, MPQ_ERR_FORMAT, "shared_classifier");
    b[36] = 1;
    put_i32(b, 4, 2);
    ck_assert_int_eq(test_write_file(path, b, n), 0);
    expect_fail("v2 (q8_0)", path, MPQ_ERR_UNSUPPORTED, "version 2");
    ck_assert_int_eq(test_write_file(path, b, 100), 0);
    expect_fail("v1 short header", path, MPQ_ERR_FORMAT, "256-byte");
    remove(path);
    rmdir(dir);
    free(b);
    mpq_model_free(m);
}
END_TEST

/* A writable copy of an HF directory: config (cJSON), safetensors header (cJSON) and data. */
typedef struct hf_copy {
    char dir[512];
    cJSON *config;
    cJSON *header;
    unsigned char *data;
    size_t data_len;
} hf_copy;

static void hf_read(hf_copy *h, const char *rel) {
    char p[256];
    size_t sz = 0;
    snprintf(p, sizeof p, "%s/config.json", rel);
    char *cfg = test_read_file(shared_path(p), &sz);
    ck_assert_ptr_nonnull(cfg);
    h->config = cJSON_ParseWithLength(cfg, sz);
    free(cfg);
    snprintf(p, sizeof p, "%s/model.safetensors", rel);
    unsigned char *st = test_read_file(shared_path(p), &sz);
    ck_assert_ptr_nonnull(st);
    uint64_t n;
    memcpy(&n, st, 8);
    h->header = cJSON_ParseWithLength((char *)st + 8, n);
    ck_assert_ptr_nonnull(h->header);
    h->data_len = sz - 8 - n;
    h->data = malloc(h->data_len + 4096);
    memcpy(h->data, st + 8 + n, h->data_len);
    free(st);
    test_tmpdir(h->dir, sizeof h->dir);
}

/* Writes config.json and <file> (header + the first data_len bytes of data). */
static void hf_write(const hf_copy *h, const char *file, size_t data_len) {
    char p[1024];
    char *cfg = cJSON_Print(h->config), *hdr = cJSON_PrintUnformatted(h->header);
    snprintf(p, sizeof p, "%s/config.json", h->dir);
    ck_assert_int_eq(test_write_file(p, cfg, strlen(cfg)), 0);
    uint64_t n = strlen(hdr);
    size_t tot = 8 + n + data_len;
    unsigned char *b = malloc(tot);
    memcpy(b, &n, 8);
    memcpy(b + 8, hdr, n);
    memcpy(b + 8 + n, h->data, data_len);
    snprintf(p, sizeof p, "%s/%s", h->dir, file);
    ck_assert_int_eq(test_write_file(p, b, tot), 0);
    free(b);
    free(cfg);
    free(hdr);
}

static void hf_clean(hf_copy *h) {
    const char *files[] = {"config.json", "model.safetensors", "model.safetensors.index.json", "a.safetensors",
                           "b.safetensors"};
    char p[1024];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", h->dir, files[i]);
        remove(p);
    }
    rmdir(h->dir);
    cJSON_Delete(h->config);
    cJSON_Delete(h->header);
    free(h->data);
}

static void set_offsets(cJSON *t, double b, double e) {
    cJSON *o = cJSON_CreateDoubleArray((double[]){b, e}, 2);
    if (cJSON_GetObjectItem(t, "data_offsets")) cJSON_ReplaceItemInObject(t, "data_offsets", o);
    else cJSON_AddItemToObject(t, "data_offsets", o);
}

typedef void (*hf_mutator)(hf_copy *h, size_t *data_len, char *path_out, size_t n);

static void mut_header_len(hf_copy *h, size_t *len, char *p, size_t n) {
    (void)len;
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
    FILE *f = fopen(p, "r+b");
    uint64_t big = (uint64_t)1 << 40;
    fwrite(&big, 8, 1, f);
    fclose(f);
}
static void mut_not_json(hf_copy *h, size_t *len, char *p, size_t n) {
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
    FILE *f = fopen(p, "r+b");
    fseek(f, 8, SEEK_SET);
    fwrite("[[[[not json", 12, 1, f);
    fclose(f);
}
static void mut_truncate(hf_copy *h, size_t *len, char *p, size_t n) {
    *len -= 4;
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
}
static void mut_overlap(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON *a = cJSON_GetObjectItem(h->header, "model.layers.0.input_layernorm.weight");
    cJSON *b = cJSON_GetObjectItem(h->header, "model.layers.0.post_attention_layernorm.weight");
    cJSON *o = cJSON_GetObjectItem(b, "data_offsets");
    set_offsets(a, cJSON_GetArrayItem(o, 0)->valuedouble, cJSON_GetArrayItem(o, 1)->valuedouble);
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
}
static void mut_dtype(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(h->header, "model.norm.weight"), "dtype", cJSON_CreateString("I8"));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
}
static void mut_shape_overflow(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(h->header, "model.norm.weight"), "shape",
                              cJSON_CreateDoubleArray((double[]){4294967296.0, 4294967296.0}, 2));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
}
static void mut_missing(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_DeleteItemFromObject(h->header, "model.norm.weight");
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s", h->dir);
}
static void mut_wrong_shape(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(h->header, "model.layers.2.self_attn.q_proj.weight"), "shape",
                              cJSON_CreateDoubleArray((double[]){32, 128}, 2));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
}
static void mut_size_mismatch(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(h->header, "model.norm.weight"), "shape",
                              cJSON_CreateDoubleArray((double[]){65}, 1));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/model.safetensors", h->dir);
}
static void mut_cfg_type(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(h->config, "hidden_size", cJSON_CreateString("64"));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/config.json", h->dir);
}
static void mut_cfg_arch(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(h->config, "architectures", cJSON_CreateStringArray((const char *[]){"GPT2LMHeadModel"}, 1));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/config.json", h->dir);
}
static void mut_cfg_head_dim(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_AddNumberToObject(h->config, "head_dim", 16);
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/config.json", h->dir);
}
static void mut_cfg_heads(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(h->config, "num_attention_heads", cJSON_CreateNumber(6));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s/config.json", h->dir);
}
static void mut_qwen_no_bias(hf_copy *h, size_t *len, char *p, size_t n) {
    cJSON_ReplaceItemInObject(h->config, "architectures", cJSON_CreateStringArray((const char *[]){"Qwen2ForCausalLM"}, 1));
    hf_write(h, "model.safetensors", *len);
    snprintf(p, n, "%s", h->dir);
}
static void mut_missing_shard(hf_copy *h, size_t *len, char *p, size_t n) {
    char ip[1024];
    hf_write(h, "a.safetensors", *len);
    cJSON *idx = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(idx, "weight_map");
    int i = 0;
    for (cJSON *t = h->header->child; t; t = t->next, i++)
        if (strcmp(t->string, "__metadata__")) cJSON_AddStringToObject(wm, t->string, i % 2 ? "a.safetensors" : "b.safetensors");
    char *s = cJSON_Print(idx);
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", h->dir);
    ck_assert_int_eq(test_write_file(ip, s, strlen(s)), 0);
    free(s);
    cJSON_Delete(idx);
    snprintf(p, n, "%s/b.safetensors", h->dir);
}

START_TEST(test_hostile_hf) {
    struct {
        const char *what;
        hf_mutator mut;
        mpq_status want;
        const char *frag;
    } cases[] = {
        {"header length past EOF", mut_header_len, MPQ_ERR_FORMAT, "header length 1099511627776 + 8 > file size"},
        {"header not JSON", mut_not_json, MPQ_ERR_FORMAT, "not a JSON object"},
        {"offsets past the end", mut_truncate, MPQ_ERR_FORMAT, "> data size"},
        {"overlapping tensors", mut_overlap, MPQ_ERR_FORMAT, "overlap"},
        {"unknown dtype", mut_dtype, MPQ_ERR_UNSUPPORTED, "dtype I8"},
        {"shape product overflow", mut_shape_overflow, MPQ_ERR_FORMAT, "overflows"},
        {"missing tensor", mut_missing, MPQ_ERR_FORMAT, "missing tensor model.norm.weight"},
        {"wrong shape", mut_wrong_shape, MPQ_ERR_FORMAT, "shape [32, 128], expected [64, 64]"},
        {"bytes vs shape", mut_size_mismatch, MPQ_ERR_FORMAT, "65 elements of F32 need 260 bytes"},
        {"config wrong type", mut_cfg_type, MPQ_ERR_FORMAT, "\"hidden_size\" must be an integer"},
        {"config unknown arch", mut_cfg_arch, MPQ_ERR_UNSUPPORTED, "GPT2LMHeadModel"},
        {"config head_dim", mut_cfg_head_dim, MPQ_ERR_UNSUPPORTED, "head_dim 16"},
        {"config heads", mut_cfg_heads, MPQ_ERR_FORMAT, "not divisible by n_heads 6"},
        {"qwen2 without biases", mut_qwen_no_bias, MPQ_ERR_FORMAT, "missing tensor model.layers.0.self_attn.q_proj.bias"},
        {"missing index shard", mut_missing_shard, MPQ_ERR_IO, "cannot open"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hf_copy h;
        char expect_in_msg[1024];
        hf_read(&h, "models/stories260K-hf");
        size_t len = h.data_len;
        cases[i].mut(&h, &len, expect_in_msg, sizeof expect_in_msg);
        mpq_model *m = NULL;
        mpq_err err = {0};
        mpq_status st = mpq_model_load(h.dir, &m, &err);
        ck_assert_msg(st == cases[i].want, "%s: status %d want %d (%s)", cases[i].what, st, cases[i].want, err.msg);
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(err.msg, expect_in_msg), "%s: message does not name %s: %s", cases[i].what,
                      expect_in_msg, err.msg);
        ck_assert_msg(strstr(err.msg, cases[i].frag), "%s: message lacks '%s': %s", cases[i].what, cases[i].frag,
                      err.msg);
        hf_clean(&h);
    }
    mpq_model *m = NULL;
    mpq_err err = {0};
    char tmp[512];
    test_tmpdir(tmp, sizeof tmp);
    ck_assert_int_eq(mpq_model_load(tmp, &m, &err), MPQ_ERR_IO); /* no config.json */
    rmdir(tmp);
}
END_TEST

/* Sharded directory (two shards via the index) and Qwen2 q/k/v biases with the RoPE row
 * permutation: bias value = its HF row index, so the loaded order shows the permutation. */
START_TEST(test_hf_sharded_and_qwen2_bias) {
    hf_copy h;
    hf_read(&h, "models/stories260K-hf");
    /* two shards, each a full copy; the index sends alternate tensors to each */
    char ip[1024];
    hf_write(&h, "a.safetensors", h.data_len);
    hf_write(&h, "b.safetensors", h.data_len);
    cJSON *idx = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(idx, "weight_map");
    int i = 0;
    for (cJSON *t = h.header->child; t; t = t->next, i++)
        if (strcmp(t->string, "__metadata__")) cJSON_AddStringToObject(wm, t->string, i % 2 ? "a.safetensors" : "b.safetensors");
    char *s = cJSON_Print(idx);
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", h.dir);
    ck_assert_int_eq(test_write_file(ip, s, strlen(s)), 0);
    free(s);
    cJSON_Delete(idx);
    mpq_model *ref = NULL, *m = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_model_load(shared_path("models/stories260K-hf"), &ref, &err), MPQ_OK);
    ck_assert_msg(mpq_model_load(h.dir, &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_weights *wr = mpq_model_get_weights(ref), *wm2 = mpq_model_get_weights(m);
    ck_assert_int_eq(memcmp(wr->data, wm2->data, wr->n_floats * 4), 0);
    mpq_model_free(m);
    m = NULL;
    remove(ip);
    /* Qwen2: add biases (F32) to a single file */
    cJSON_ReplaceItemInObject(h.config, "architectures", cJSON_CreateStringArray((const char *[]){"Qwen2ForCausalLM"}, 1));
    size_t len = h.data_len;
    h.data = realloc(h.data, h.data_len + 5 * 128 * 4);
    const char *nm[3] = {"q", "k", "v"};
    int rows[3] = {64, 32, 32};
    for (int l = 0; l < 5; l++)
        for (int k = 0; k < 3; k++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj.bias", l, nm[k]);
            cJSON *t = cJSON_AddObjectToObject(h.header, name);
            cJSON_AddStringToObject(t, "dtype", "F32");
            cJSON_AddItemToObject(t, "shape", cJSON_CreateDoubleArray((double[]){rows[k]}, 1));
            set_offsets(t, (double)len, (double)(len + 4 * (size_t)rows[k]));
            for (int r = 0; r < rows[k]; r++) {
                float v = (float)(1000 * l + r);
                memcpy(h.data + len, &v, 4);
                len += 4;
            }
        }
    hf_write(&h, "model.safetensors", len);
    ck_assert_msg(mpq_model_load(h.dir, &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_model_config *c = mpq_model_get_config(m);
    ck_assert(c->qkv_bias);
    ck_assert_int_eq(c->arch, MPQ_ARCH_QWEN2);
    const mpq_weights *w = mpq_model_get_weights(m);
    ck_assert_int_eq((int64_t)w->n_floats, mpq_model_n_params(ref) + 5 * 128);
    int hd = 8;
    for (int l = 0; l < 5; l++) {
        for (int r = 0; r < 64; r++) { /* llama2.c row h*hd+2p+c holds HF row h*hd + c*hd/2 + p */
            int hh = r / hd, p = (r % hd) / 2, cc = r % 2;
            ck_assert_int_eq((int)w->blocks[l].bq[r], 1000 * l + hh * hd + cc * hd / 2 + p);
            if (r < 32) {
                ck_assert_int_eq((int)w->blocks[l].bk[r], 1000 * l + hh * hd + cc * hd / 2 + p);
                ck_assert_int_eq((int)w->blocks[l].bv[r], 1000 * l + r); /* v is not permuted */
            }
        }
        /* matrices identical to the Llama load despite the different block layout */
        ck_assert_int_eq(memcmp(w->blocks[l].wq, wr->blocks[l].wq, 64 * 64 * 4), 0);
        ck_assert_int_eq(memcmp(w->blocks[l].w_down, wr->blocks[l].w_down, 64 * 172 * 4), 0);
    }
    mpq_model_free(m);
    mpq_model_free(ref);
    hf_clean(&h);
}
END_TEST

Suite *model_suite(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("llama2c");
    tcase_add_test(tc, test_llama2c_legacy_stories);
    tcase_add_test(tc, test_layer_table);
    tcase_add_test(tc, test_clone);
    tcase_add_test(tc, test_view);
    tcase_add_test(tc, test_llama2c_sotu);
    suite_add_tcase(s, tc);
    tc = tcase_create("hf");
    tcase_add_test(tc, test_hf_f32_equals_llama2c);
    tcase_add_test(tc, test_hf_bf16_close);
    tcase_add_test(tc, test_hf_sharded_and_qwen2_bias);
    suite_add_tcase(s, tc);
    tc = tcase_create("hostile");
    tcase_add_test(tc, test_hostile_llama2c);
    tcase_add_test(tc, test_ak42_v1);
    tcase_add_test(tc, test_hostile_hf);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(model_suite)
