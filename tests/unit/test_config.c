/*
 * test_config.c - quantized configurations: building, JSON round trip (extra keys kept),
 * HF aliases, a table of bad configs, applying a config to the real stories260K weights,
 * applying it into a view (mpq_config_apply_view: bit-identical to a clone on stories260K,
 * its BF16 folder and sotu-2.7M held in BF16), and the size statistics (hand-computed for
 * stories260K).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_exec.h"
#include "test_util.h"
#include "test_main.h"

/* stats are sums/ratios of < 1e7 integers in double: exact to ~1e-15 relative; 1e-9 is safe */
#define STAT_TOL 1e-9

static mpq_model *g_model;

static void setup(void) {
    mpq_err err = {0};
    if (mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &g_model, &err) != MPQ_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        g_model = NULL;
    }
}

static void teardown(void) {
    mpq_model_free(g_model);
    g_model = NULL;
}

START_TEST(test_uniform_stats) {
    ck_assert_ptr_nonnull(g_model);
    mpq_config *cfg = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_config_uniform(g_model, "int4g128", "k8v4", &cfg, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_n_linear(cfg), 35);
    ck_assert_int_eq(mpq_config_n_blocks(cfg), 5);
    ck_assert_str_eq(mpq_config_layer(cfg, 34)->name, "int4g128");
    ck_assert_ptr_null(mpq_config_layer(cfg, 35));
    ck_assert_int_eq(mpq_config_kv(cfg, 4).k_bits, 8);
    ck_assert_int_eq(mpq_config_kv(cfg, 4).v_bits, 4);
    ck_assert_int_eq(mpq_config_kv_scheme(cfg)->mode, MPQ_KV_KIVI);

    mpq_config_stats st;
    ck_assert_int_eq(mpq_config_get_stats(cfg, g_model, 512, &st, &err), MPQ_OK);
    /* stories260K block: q 64x64, k 32x64, v 32x64, o 64x64, gate/up 172x64, down 64x172
     * = 45312 weights; 5 blocks = 226560. int4g128: rows of 64 cols have one group
     * (4*64 + 32 = 288 bits = 4.5/weight), down rows of 172 cols have 2 groups (688 + 64 = 752).
     * bits/block = 34304*4.5 + 64*752 = 202496 -> avg 202496/45312 = 4.468926...
     * bytes/block = (64+32+32+64+172+172)*288/8 + 64*752/8 = 19296 + 6016 = 25312 -> 126560.
     * other params = 260032 - 226560 = 33472 (embedding 32768 + norms 11*64) at 4 bytes. */
    ck_assert_int_eq(st.linear_params, 226560);
    ck_assert_double_eq_tol(st.avg_weight_bits, 202496.0 / 45312.0, STAT_TOL);
    ck_assert_int_eq(st.linear_bytes, 126560);
    ck_assert_int_eq(st.other_params, 33472);
    ck_assert_int_eq(st.total_weight_bytes, 126560 + 4 * 33472);
    /* KV: kv_dim = 4 heads x 8 = 32; KIVI G32: K 8 + 32/32 = 9, V 4 + 32*1/32 = 5;
     * per block (9+5)*32/8 = 56 bytes; 5 blocks = 280 bytes/token; avg bits (9+5)/2 = 7 */
    ck_assert_double_eq_tol(st.kv_bytes_per_token, 280.0, STAT_TOL);
    ck_assert_double_eq_tol(st.avg_kv_bits, 7.0, STAT_TOL);

    /* f32 / k16v16: 32 bits, 4 bytes per weight, 16-bit KV = 2*16*32/8*5 = 640 B/token */
    mpq_config *f = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "f32", NULL, &f, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_get_stats(f, g_model, 0, &st, &err), MPQ_OK);
    ck_assert_double_eq_tol(st.avg_weight_bits, 32.0, STAT_TOL);
    ck_assert_int_eq(st.total_weight_bytes, 4 * 260032);
    ck_assert_double_eq_tol(st.kv_bytes_per_token, 640.0, STAT_TOL);
    mpq_config_free(f);

    ck_assert_int_eq(mpq_config_uniform(g_model, "int9g32", NULL, &f, &err), MPQ_ERR_INVALID);
    ck_assert(strstr(err.msg, "'int9g32'"));
    ck_assert_ptr_null(f);
    ck_assert_int_eq(mpq_config_uniform(g_model, "int4g32", "k5v4", &f, &err), MPQ_ERR_INVALID);
    ck_assert(strstr(err.msg, "'k5v4'"));
    mpq_config_free(cfg);
}
END_TEST

START_TEST(test_roundtrip_and_extras) {
    ck_assert_ptr_nonnull(g_model);
    mpq_err err = {0};
    const char *text = "{\n"
                       "  \"mpq_config_version\": 1,\n"
                       "  \"model\": {\"sha256\": \"b0a507e7\", \"n_params\": 260032},\n"
                       "  \"weights\": {\"default\": \"int4g64\", \"layers\": {\n"
                       "     \"blk.0.attn_q\": \"int8c\",\n"
                       "     \"model.layers.1.mlp.down_proj.weight\": \"nf4g32\",\n"
                       "     \"model.layers.4.self_attn.v_proj\": \"fp8e4m3c\"}},\n"
                       "  \"kv\": {\"scheme\": {\"mode\": \"per-token\", \"group_size\": 16, \"residual\": 8},\n"
                       "          \"default\": \"k8v8\", \"layers\": {\"blk.2\": \"k4v2\", \"model.layers.4\": \"K16V4\"}},\n"
                       "  \"budget\": {\"bits\": 3.5}\n"
                       "}\n";
    mpq_config *a = NULL, *b = NULL, *c = NULL;
    ck_assert_int_eq(mpq_config_parse(text, "cfg.json", g_model, &a, &err), MPQ_OK);
    int q0 = mpq_model_find_linear(g_model, "blk.0.attn_q");
    int d1 = mpq_model_find_linear(g_model, "blk.1.ffn_down");
    int v4 = mpq_model_find_linear(g_model, "blk.4.attn_v");
    ck_assert_str_eq(mpq_config_layer(a, q0)->name, "int8c");
    ck_assert_str_eq(mpq_config_layer(a, d1)->name, "nf4g32");
    ck_assert_str_eq(mpq_config_layer(a, v4)->name, "fp8e4m3");
    ck_assert_str_eq(mpq_config_layer(a, q0 + 1)->name, "int4g64"); /* default */
    ck_assert_int_eq(mpq_config_kv(a, 2).k_bits, 4);
    ck_assert_int_eq(mpq_config_kv(a, 2).v_bits, 2);
    ck_assert_int_eq(mpq_config_kv(a, 4).k_bits, 16);
    ck_assert_int_eq(mpq_config_kv(a, 0).k_bits, 8);
    ck_assert_int_eq(mpq_config_kv_scheme(a)->mode, MPQ_KV_PER_TOKEN);
    ck_assert_int_eq(mpq_config_kv_scheme(a)->group_size, 16);
    ck_assert_int_eq(mpq_config_kv_scheme(a)->residual, 8);

    /* edit like a solver, write, read back: every getter equal, extras kept */
    ck_assert_int_eq(mpq_config_set_layer(a, 10, "int3g32s", &err), MPQ_OK);
    mpq_kv_pair p = {3, 8};
    ck_assert_int_eq(mpq_config_set_kv(a, 1, p, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_set_layer(a, 35, "int4g32", &err), MPQ_ERR_INVALID);
    ck_assert(strstr(err.msg, "35"));
    mpq_kv_pair bad = {5, 4};
    ck_assert_int_eq(mpq_config_set_kv(a, 0, bad, &err), MPQ_ERR_INVALID);
    mpq_kv_scheme sbad = {MPQ_KV_KIVI, 0, 0, false};
    ck_assert_int_eq(mpq_config_set_kv_scheme(a, &sbad, &err), MPQ_ERR_INVALID);

    char *json = mpq_config_to_json(a, g_model);
    ck_assert_ptr_nonnull(json);
    ck_assert(strstr(json, "\"blk.1.ffn_down\""));   /* written with stable names */
    ck_assert(strstr(json, "\"b0a507e7\""));         /* extras kept */
    ck_assert(strstr(json, "\"budget\""));
    ck_assert_int_eq(mpq_config_parse(json, "rt.json", g_model, &b, &err), MPQ_OK);
    for (int i = 0; i < mpq_config_n_linear(a); i++)
        ck_assert_str_eq(mpq_config_layer(a, i)->name, mpq_config_layer(b, i)->name);
    for (int k = 0; k < 5; k++) {
        ck_assert_int_eq(mpq_config_kv(a, k).k_bits, mpq_config_kv(b, k).k_bits);
        ck_assert_int_eq(mpq_config_kv(a, k).v_bits, mpq_config_kv(b, k).v_bits);
    }
    ck_assert_int_eq(mpq_config_kv_scheme(b)->residual, 8);
    char *json2 = mpq_config_to_json(b, g_model);
    ck_assert_str_eq(json, json2); /* fixed point */

    /* clone, save, load from a file */
    ck_assert_int_eq(mpq_config_clone(b, &c, &err), MPQ_OK);
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    ck_assert_int_eq(mpq_config_save(c, g_model, path, &err), MPQ_OK);
    mpq_config_free(b);
    b = NULL;
    ck_assert_int_eq(mpq_config_load(path, g_model, &b, &err), MPQ_OK);
    char *json3 = mpq_config_to_json(b, g_model);
    ck_assert_str_eq(json, json3);
    remove(path);
    rmdir(dir);
    free(json);
    free(json2);
    free(json3);
    mpq_config_free(a);
    mpq_config_free(b);
    mpq_config_free(c);
}
END_TEST

typedef struct bad_cfg {
    const char *text;
    mpq_status status;
    const char *msg; /* expected substring */
} bad_cfg;

static const bad_cfg BAD[] = {
    {"", MPQ_ERR_FORMAT, "cfg.json: invalid JSON at line 1"},
    {"{\"mpq_config_version\": 1,\n \"weights\": {\"default\": }}", MPQ_ERR_FORMAT, "cfg.json: invalid JSON at line 2"},
    {"{\"mpq_config_version\": 1} trailing", MPQ_ERR_FORMAT, "cfg.json: invalid JSON"},
    {"[1, 2]", MPQ_ERR_FORMAT, "cfg.json: expected a JSON object"},
    {"{}", MPQ_ERR_FORMAT, "cfg.json: mpq_config_version: missing"},
    {"{\"mpq_config_version\": \"1\"}", MPQ_ERR_FORMAT, "cfg.json: mpq_config_version: expected a positive integer"},
    {"{\"mpq_config_version\": 1.5}", MPQ_ERR_FORMAT, "mpq_config_version: expected a positive integer"},
    {"{\"mpq_config_version\": 0}", MPQ_ERR_FORMAT, "mpq_config_version: expected a positive integer"},
    {"{\"mpq_config_version\": 7}", MPQ_ERR_UNSUPPORTED, "cfg.json: mpq_config_version 7 is newer than this mpq (1)"},
    {"{\"mpq_config_version\": 1, \"mpq_config_version\": 1}", MPQ_ERR_FORMAT, "mpq_config_version: key repeated"},
    {"{\"mpq_config_version\": 1, \"weights\": 3}", MPQ_ERR_FORMAT, "cfg.json: weights: expected an object"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"default\": 4}}", MPQ_ERR_FORMAT, "cfg.json: weights.default: expected a string"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"default\": \"int4\"}}", MPQ_ERR_FORMAT,
     "cfg.json: weights.default: unknown candidate 'int4'"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"defualt\": \"int4g32\"}}", MPQ_ERR_FORMAT, "cfg.json: weights.defualt: unknown"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"layers\": []}}", MPQ_ERR_FORMAT, "cfg.json: weights.layers: expected an object"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"layers\": {\"blk.9.attn_q\": \"int4g32\"}}}", MPQ_ERR_FORMAT,
     "cfg.json: weights.layers.blk.9.attn_q: no such layer in model (5 blocks)"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"layers\": {\"blk.0.attn_x\": \"int4g32\"}}}", MPQ_ERR_FORMAT,
     "weights.layers.blk.0.attn_x: no such layer"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"layers\": {\"blk.0.attn_q\": \"int9\"}}}", MPQ_ERR_FORMAT,
     "cfg.json: weights.layers.blk.0.attn_q: unknown candidate 'int9'"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"layers\": {\"blk.0.attn_q\": null}}}", MPQ_ERR_FORMAT,
     "weights.layers.blk.0.attn_q: expected a string"},
    {"{\"mpq_config_version\": 1, \"weights\": {\"layers\": {\"blk.0.attn_q\": \"int4g32\", "
     "\"model.layers.0.self_attn.q_proj\": \"int8c\"}}}",
     MPQ_ERR_FORMAT, "weights.layers.model.layers.0.self_attn.q_proj: layer blk.0.attn_q is given twice"},
    {"{\"mpq_config_version\": 1, \"kv\": \"k8v8\"}", MPQ_ERR_FORMAT, "cfg.json: kv: expected an object"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"group_size\": 0}}}", MPQ_ERR_FORMAT,
     "cfg.json: kv.scheme.group_size: expected a positive integer"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"group_size\": \"32\"}}}", MPQ_ERR_FORMAT,
     "kv.scheme.group_size: expected a positive integer"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"group_size\": 1e300}}}", MPQ_ERR_FORMAT,
     "kv.scheme.group_size: expected a positive integer"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"residual\": -1}}}", MPQ_ERR_FORMAT,
     "kv.scheme.residual: expected a non-negative integer"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"mode\": \"kivi2\"}}}", MPQ_ERR_FORMAT, "kv.scheme.mode"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"groupsize\": 32}}}", MPQ_ERR_FORMAT, "kv.scheme.groupsize: unknown key"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"default\": \"k8v5\"}}", MPQ_ERR_FORMAT, "cfg.json: kv.default: expected a KV pair"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"layers\": {\"blk.5\": \"k8v8\"}}}", MPQ_ERR_FORMAT,
     "cfg.json: kv.layers.blk.5: no such block in model (5 blocks)"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"layers\": {\"blk.-1\": \"k8v8\"}}}", MPQ_ERR_FORMAT, "kv.layers.blk.-1: expected a block name"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"layers\": {\"blk.01\": \"k8v8\"}}}", MPQ_ERR_FORMAT, "kv.layers.blk.01: expected a block name"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"layers\": {\"blk.99999999999999999999\": \"k8v8\"}}}", MPQ_ERR_FORMAT,
     "expected a block name"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"layers\": {\"blk.1\": \"k8v8\", \"model.layers.1\": \"k4v4\"}}}", MPQ_ERR_FORMAT,
     "kv.layers.model.layers.1: block 1 is given twice"},
    {"{\"mpq_config_version\": 1, \"kv\": {\"layers\": {\"blk.1\": 8}}}", MPQ_ERR_FORMAT, "kv.layers.blk.1: expected a KV pair"},
};

START_TEST(test_bad_configs) {
    ck_assert_ptr_nonnull(g_model);
    const bad_cfg *b = &BAD[_i];
    mpq_config *cfg = NULL;
    mpq_err err = {0};
    mpq_status st = mpq_config_parse(b->text, "cfg.json", g_model, &cfg, &err);
    ck_assert_int_eq(st, b->status);
    ck_assert_ptr_null(cfg);
    ck_assert_msg(strstr(err.msg, b->msg) != NULL, "case %d: expected \"%s\" in \"%s\"", _i, b->msg, err.msg);
}
END_TEST

START_TEST(test_load_files) {
    ck_assert_ptr_nonnull(g_model);
    mpq_err err = {0};
    mpq_config *cfg = NULL;
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/missing.json", dir);
    ck_assert_int_eq(mpq_config_load(path, g_model, &cfg, &err), MPQ_ERR_IO);
    ck_assert(strstr(err.msg, path));
    /* embedded NUL byte */
    snprintf(path, sizeof path, "%s/nul.json", dir);
    static const char nul[] = "{\"mpq_config_version\": 1}\0{";
    ck_assert_int_eq(test_write_file(path, nul, sizeof nul), 0);
    ck_assert_int_eq(mpq_config_load(path, g_model, &cfg, &err), MPQ_ERR_FORMAT);
    ck_assert(strstr(err.msg, "NUL byte at offset 25"));
    remove(path);
    /* truncated file */
    snprintf(path, sizeof path, "%s/trunc.json", dir);
    static const char tr[] = "{\"mpq_config_version\": 1, \"weights\": {\"default\": \"int4g";
    ck_assert_int_eq(test_write_file(path, tr, sizeof tr - 1), 0);
    ck_assert_int_eq(mpq_config_load(path, g_model, &cfg, &err), MPQ_ERR_FORMAT);
    ck_assert(strstr(err.msg, path) && strstr(err.msg, "invalid JSON"));
    remove(path);
    /* a directory */
    ck_assert_int_ne(mpq_config_load(dir, g_model, &cfg, &err), MPQ_OK);
    ck_assert_ptr_null(cfg);
    rmdir(dir);
}
END_TEST

static double sq_err(const mpq_weights *q, const mpq_weights *w) {
    double e = 0;
    for (size_t i = 0; i < w->n_floats; i++) e += ((double)q->data[i] - w->data[i]) * ((double)q->data[i] - w->data[i]);
    return e;
}

START_TEST(test_apply_real) {
    ck_assert_ptr_nonnull(g_model);
    mpq_err err = {0};
    const mpq_weights *W = mpq_model_get_weights(g_model);
    const mpq_model_config *mc = mpq_model_get_config(g_model);
    mpq_config *u4 = NULL, *mix = NULL, *f32 = NULL;
    mpq_weights *q4 = NULL, *qm = NULL, *qf = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "int4g32", "k8v8", &u4, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_uniform(g_model, "f32", NULL, &f32, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_clone(u4, &mix, &err), MPQ_OK);
    /* mixed: the FFN layers (3/4 of the weights) at int8 */
    for (int i = 0; i < mpq_config_n_linear(mix); i++)
        if (mpq_model_linear(g_model, i)->kind >= MPQ_LAYER_FFN_GATE)
            ck_assert_int_eq(mpq_config_set_layer(mix, i, "int8g32", &err), MPQ_OK);
    ck_assert_int_eq(mpq_weights_clone(g_model, &q4, &err), MPQ_OK);
    ck_assert_int_eq(mpq_weights_clone(g_model, &qm, &err), MPQ_OK);
    ck_assert_int_eq(mpq_weights_clone(g_model, &qf, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_apply(u4, g_model, q4, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_apply(mix, g_model, qm, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_apply(f32, g_model, qf, &err), MPQ_OK);

    /* f32 leaves everything bit-identical */
    ck_assert_int_eq(memcmp(qf->data, W->data, W->n_floats * sizeof(float)), 0);
    /* non-linear parameters untouched: embedding, norms */
    size_t emb = (size_t)mc->vocab_size * (size_t)mc->dim;
    ck_assert_int_eq(memcmp(q4->tok_emb, W->tok_emb, emb * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(q4->final_norm, W->final_norm, (size_t)mc->dim * sizeof(float)), 0);
    for (int b = 0; b < mc->n_layers; b++) {
        ck_assert_int_eq(memcmp(q4->blocks[b].attn_norm, W->blocks[b].attn_norm, (size_t)mc->dim * sizeof(float)), 0);
        ck_assert_int_eq(memcmp(q4->blocks[b].ffn_norm, W->blocks[b].ffn_norm, (size_t)mc->dim * sizeof(float)), 0);
    }
    /* each linear layer equals a direct quantize of the original */
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse("int4g32", &c, NULL), MPQ_OK);
    for (int i = 0; i < mpq_model_n_linear(g_model); i++) {
        const mpq_layer_info *li = mpq_model_linear(g_model, i);
        float *ref = malloc((size_t)li->n_params * sizeof *ref);
        ck_assert_ptr_nonnull(ref);
        memcpy(ref, mpq_weights_linear(W, li), (size_t)li->n_params * sizeof *ref);
        mpq_quantize_matrix(&c, ref, li->rows, li->cols);
        ck_assert_int_eq(memcmp(ref, mpq_weights_linear(q4, li), (size_t)li->n_params * sizeof *ref), 0);
        ck_assert(memcmp(ref, mpq_weights_linear(W, li), (size_t)li->n_params * sizeof *ref) != 0);
        free(ref);
    }
    /* more bits where most weights are -> less damage, and more bytes */
    double e4 = sq_err(q4, W), em = sq_err(qm, W);
    mpq_config_stats s4, sm;
    ck_assert_int_eq(mpq_config_get_stats(u4, g_model, 0, &s4, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_get_stats(mix, g_model, 0, &sm, &err), MPQ_OK);
    printf("stories260K: int4g32 %.4f bits/weight, %lld bytes, ||dW||^2 %.4g; int4g32 attn + int8g32 ffn %.4f "
           "bits/weight, %lld bytes, ||dW||^2 %.4g\n",
           s4.avg_weight_bits, (long long)s4.total_weight_bytes, e4, sm.avg_weight_bits,
           (long long)sm.total_weight_bytes, em);
    ck_assert(em < e4);
    ck_assert(sm.avg_weight_bits > s4.avg_weight_bits);
    /* int4g32 everywhere: 4 + 32/32 = 5 bits (64 and 172 cols: ceil(172/32) = 6 groups, 688+192 = 880 bits/row) */
    ck_assert_double_eq_tol(s4.avg_weight_bits, (34304.0 * 5.0 + 64.0 * 880.0) / 45312.0, STAT_TOL);

    /* mismatched destination */
    mpq_weights fake = *q4;
    fake.n_floats -= 1;
    ck_assert_int_eq(mpq_config_apply(u4, g_model, &fake, &err), MPQ_ERR_INVALID);
    ck_assert(strstr(err.msg, "not a clone"));

    mpq_weights_free(q4);
    mpq_weights_free(qm);
    mpq_weights_free(qf);
    mpq_config_free(u4);
    mpq_config_free(mix);
    mpq_config_free(f32);
}
END_TEST

START_TEST(test_hf_model_aliases) {
    /* the HF directory of the same model: the same config resolves to the same layers */
    mpq_model *hf = NULL;
    mpq_err err = {0};
    mpq_status st = mpq_model_load(shared_path("models/stories260K-hf"), &hf, &err);
    ck_assert_msg(st == MPQ_OK, "%s", err.msg);
    const char *text = "{\"mpq_config_version\": 1, \"weights\": {\"default\": \"int8c\", \"layers\": "
                       "{\"model.layers.3.mlp.gate_proj.weight\": \"int2g16\"}}}";
    mpq_config *a = NULL;
    ck_assert_int_eq(mpq_config_parse(text, "hf.json", hf, &a, &err), MPQ_OK);
    int i = mpq_model_find_linear(hf, "blk.3.ffn_gate");
    ck_assert_int_ge(i, 0);
    ck_assert_str_eq(mpq_config_layer(a, i)->name, "int2g16");
    ck_assert_str_eq(mpq_config_layer(a, i + 1)->name, "int8c");
    /* a config made for one model is refused on a model of another shape (sotu-2.7M: 6 blocks) */
    mpq_model *sotu = NULL;
    st = mpq_model_load(shared_path("models/sotu-2.7M/sotu-2.7M.bin"), &sotu, &err);
    ck_assert_msg(st == MPQ_OK, "%s", err.msg);
    mpq_weights *sw = NULL;
    ck_assert_int_eq(mpq_weights_clone(sotu, &sw, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_apply(a, sotu, sw, &err), MPQ_ERR_INVALID);
    ck_assert(strstr(err.msg, "35 layers / 5 blocks"));
    ck_assert_ptr_null(mpq_config_to_json(a, sotu));
    mpq_config_stats stt;
    ck_assert_int_eq(mpq_config_get_stats(a, sotu, 0, &stt, &err), MPQ_ERR_INVALID);
    /* and its own config parses there with 6 blocks */
    mpq_config *b6 = NULL;
    ck_assert_int_eq(mpq_config_parse("{\"mpq_config_version\": 1, \"kv\": {\"layers\": {\"blk.5\": \"k2v2\"}}}",
                                      "sotu.json", sotu, &b6, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_kv(b6, 5).k_bits, 2);
    mpq_config_free(b6);
    mpq_weights_free(sw);
    mpq_model_free(sotu);
    mpq_config_free(a);
    mpq_model_free(hf);
}
END_TEST

/* One model: mpq_config_apply_view of a mixed config (f32 layers among quantized ones) against
 * mpq_weights_clone + mpq_config_apply. Exact equality throughout: both quantize the same float32
 * numbers with the same code, and the executor widens a borrowed 16-bit layer to the same floats
 * a clone holds, so weights and logits must agree bit for bit. */
static void check_apply_view(const char *path, mpq_weights_dtype dtype) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load_dtype(shared_path(path), dtype, &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_weights *W = mpq_model_get_weights(m);
    static const char *const cands[] = {"int4g32", "f32", "int8c", "nf4g64", "f16"};
    const int nc = (int)(sizeof cands / sizeof cands[0]), nl = mpq_model_n_linear(m);
    mpq_config *cfg = NULL;
    ck_assert_int_eq(mpq_config_uniform(m, "f32", NULL, &cfg, &err), MPQ_OK);
    for (int i = 0; i < nl; i++) ck_assert_int_eq(mpq_config_set_layer(cfg, i, cands[i % nc], &err), MPQ_OK);
    mpq_weights *qc = NULL, *qv = NULL;
    ck_assert_int_eq(mpq_weights_clone(m, &qc, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_apply(cfg, m, qc, &err), MPQ_OK);
    ck_assert_msg(mpq_config_apply_view(cfg, m, NULL, &qv, &err) == MPQ_OK, "%s", err.msg);
    /* the view: nothing but the quantized layers owned */
    ck_assert_ptr_null(qv->data);
    ck_assert_ptr_eq(qv->tok_emb, W->tok_emb);
    ck_assert_ptr_eq(qv->tok_emb16, W->tok_emb16);
    ck_assert_ptr_eq(qv->classifier, W->classifier);
    ck_assert_ptr_eq(qv->final_norm, W->final_norm);
    ck_assert_ptr_eq(qv->blocks16, W->blocks16);
    ck_assert_int_eq(qv->dtype, W->dtype);
    size_t big = 0;
    for (int i = 0; i < nl; i++)
        if ((size_t)mpq_model_linear(m, i)->n_params > big) big = (size_t)mpq_model_linear(m, i)->n_params;
    float *scratch = malloc(big * sizeof *scratch);
    ck_assert_ptr_nonnull(scratch);
    int n_owned = 0;
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        ck_assert_ptr_eq(qv->blocks[li->block].attn_norm, W->blocks[li->block].attn_norm);
        if (i % nc == 1) { /* f32: the model's own tensor (NULL float pointer when held in 16 bits) */
            ck_assert_ptr_null(mpq_weights_owned_linear(qv, li));
            ck_assert_ptr_eq(mpq_weights_linear(qv, li), mpq_weights_linear(W, li));
        } else {
            ck_assert_ptr_nonnull(mpq_weights_owned_linear(qv, li));
            ck_assert_ptr_eq(mpq_weights_linear(qv, li), mpq_weights_owned_linear(qv, li));
            n_owned++;
        }
        const float *a = mpq_weights_linear_f32(qv, li, scratch);
        ck_assert_ptr_nonnull(a);
        ck_assert_msg(memcmp(a, mpq_weights_linear(qc, li), (size_t)li->n_params * sizeof *a) == 0, "%s: %s", path,
                      li->name);
    }
    ck_assert_int_eq(n_owned, nl - (nl + nc - 2) / nc);
    /* logits of a forward over real tokens, bit for bit */
    enum { B = 2, T = 16 };
    int tok[B * T];
    for (int k = 0; k < B * T; k++) tok[k] = (k * 37 + 11) % mpq_model_get_config(m)->vocab_size;
    mpq_exec *ex = NULL;
    ck_assert_int_eq(mpq_exec_create_forward(m, B, T, &ex, &err), MPQ_OK);
    size_t n_logits = (size_t)B * T * (size_t)mpq_model_get_config(m)->vocab_size;
    float *lc = malloc(n_logits * sizeof *lc);
    ck_assert_ptr_nonnull(lc);
    ck_assert_msg(mpq_exec_forward(ex, qc, NULL, tok, B, T, &err) == MPQ_OK, "%s", err.msg);
    memcpy(lc, mpq_exec_logits(ex), n_logits * sizeof *lc);
    ck_assert_msg(mpq_exec_forward(ex, qv, NULL, tok, B, T, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(memcmp(lc, mpq_exec_logits(ex), n_logits * sizeof *lc) == 0);
    /* a probe on top of the view: one layer owned, then dropped back to the view's */
    const mpq_layer_info *l0 = mpq_model_linear(m, 0), *l1 = mpq_model_linear(m, 1);
    mpq_weights *probe = NULL;
    float *p = NULL;
    ck_assert_int_eq(mpq_weights_view_of(qv, &probe, &err), MPQ_OK);
    ck_assert_ptr_null(mpq_weights_owned_linear(probe, l0));
    ck_assert_ptr_eq(mpq_weights_linear(probe, l0), mpq_weights_linear(qv, l0));
    ck_assert_int_eq(mpq_weights_own_linear(probe, l0, W, &p, &err), MPQ_OK);
    ck_assert_ptr_eq(mpq_weights_linear(probe, l0), p);
    ck_assert(p != mpq_weights_linear(qv, l0));
    const float *fp0 = mpq_weights_linear_f32(W, l0, scratch); /* the FP layer, widened if 16-bit */
    ck_assert(memcmp(p, fp0, (size_t)l0->n_params * sizeof *p) == 0);
    float *again = NULL; /* owning it again reuses the matrix and refills it from the source */
    p[0] += 1.0f;
    ck_assert_int_eq(mpq_weights_own_linear(probe, l0, W, &again, &err), MPQ_OK);
    ck_assert_ptr_eq(again, p);
    ck_assert(memcmp(p, mpq_weights_linear_f32(W, l0, scratch), (size_t)l0->n_params * sizeof *p) == 0);
    mpq_weights_drop_linear(probe, l0, qv);
    ck_assert_ptr_null(mpq_weights_owned_linear(probe, l0));
    ck_assert_ptr_eq(mpq_weights_linear(probe, l0), mpq_weights_linear(qv, l0));
    /* dropping to the model: the f32 layer l1 of the view is borrowed as it was */
    mpq_weights_drop_linear(probe, l1, W);
    ck_assert_ptr_eq(mpq_weights_linear(probe, l1), mpq_weights_linear(W, l1));
    mpq_weights_drop_linear(qv, l0, qv); /* a view dropped onto itself keeps its matrix */
    ck_assert_ptr_nonnull(mpq_weights_owned_linear(qv, l0));
    ck_assert_int_eq(mpq_weights_own_linear(probe, l0, W, NULL, &err), MPQ_OK); /* freed by mpq_weights_free */
    mpq_weights_free(probe);
    ck_assert_msg(memcmp(mpq_weights_linear(qv, l0), mpq_weights_linear(qc, l0), (size_t)l0->n_params * sizeof(float)) == 0,
                  "the view's layer changed under a probe");
    /* bad arguments */
    mpq_layer_info bad = *l0;
    bad.block = mpq_model_get_config(m)->n_layers;
    ck_assert_int_eq(mpq_weights_own_linear(qv, &bad, W, &p, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(p);
    ck_assert(strstr(err.msg, l0->name));
    ck_assert_int_eq(mpq_weights_own_linear(qv, l0, NULL, &p, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_weights_view_of(NULL, &probe, &err), MPQ_ERR_INVALID);
    mpq_weights_drop_linear(qv, &bad, W); /* ignored */
    printf("%s (%s): apply_view owns %d of %d layers; weights and logits equal the clone's\n", path,
           mpq_weights_dtype_name(W->dtype), n_owned, nl);
    free(lc);
    free(scratch);
    mpq_exec_free(ex);
    mpq_weights_free(qv);
    mpq_weights_free(qc);
    mpq_config_free(cfg);
    mpq_model_free(m);
}

START_TEST(test_apply_view) {
    check_apply_view("models/stories260K/stories260K.bin", MPQ_WEIGHTS_F32);
    check_apply_view("models/stories260K-hf-bf16", MPQ_WEIGHTS_SOURCE); /* BF16 held as BF16 */
    check_apply_view("models/sotu-2.7M/sotu-2.7M.bin", MPQ_WEIGHTS_BF16);
}
END_TEST

START_TEST(test_apply_view_errors) {
    ck_assert_ptr_nonnull(g_model);
    mpq_err err = {0};
    mpq_config *cfg = NULL, *saq = NULL, *other = NULL;
    mpq_weights *q = (mpq_weights *)&err; /* must be reset to NULL on every failure */
    mpq_model *shape = NULL, *sotu = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "int4g32", NULL, &cfg, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_apply_view(NULL, g_model, NULL, &q, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_model_shape_copy(g_model, &shape, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_apply_view(cfg, shape, NULL, &q, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(q);
    ck_assert(strstr(err.msg, "shape only"));
    ck_assert_int_eq(mpq_model_load(shared_path("models/sotu-2.7M/sotu-2.7M.bin"), &sotu, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_uniform(sotu, "int4g32", NULL, &other, &err), MPQ_OK);
    q = (mpq_weights *)&err;
    ck_assert_int_eq(mpq_config_apply_view(other, g_model, NULL, &q, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(q);
    ck_assert(strstr(err.msg, "config has 42 layers"));
    /* a SAQ layer without X^T X: refused naming the layer, nothing returned (saqc3: a rate attn_o
     * reaches; saq3 on a 64-wide layer is refused earlier, its fp16 basis alone costs ~6 bits) */
    ck_assert_int_eq(mpq_config_uniform(g_model, "f32", NULL, &saq, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_set_layer(saq, 3, "saqc3", &err), MPQ_OK);
    q = (mpq_weights *)&err;
    ck_assert_int_eq(mpq_config_apply_view(saq, g_model, NULL, &q, &err), MPQ_ERR_UNSUPPORTED);
    ck_assert_ptr_null(q);
    ck_assert(strstr(err.msg, mpq_model_linear(g_model, 3)->name));
    mpq_config_free(saq);
    mpq_config_free(other);
    mpq_config_free(cfg);
    mpq_model_free(sotu);
    mpq_model_free(shape);
}
END_TEST

static Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_uniform_stats);
    tcase_add_test(tc, test_roundtrip_and_extras);
    tcase_add_loop_test(tc, test_bad_configs, 0, (int)(sizeof BAD / sizeof BAD[0]));
    tcase_add_test(tc, test_load_files);
    tcase_add_test(tc, test_apply_real);
    tcase_add_test(tc, test_hf_model_aliases);
    tcase_add_test(tc, test_apply_view);
    tcase_add_test(tc, test_apply_view_errors);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(config_suite)
