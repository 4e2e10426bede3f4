/*
 * test_kvhead.c - per-(block, KV head) KV pairs: the executor's per-head quantization kernel
 * against the per-block kernel applied to each head alone, bit identity of per-head pairs that
 * repeat the block's pair with per-block pairs on the real models (stories260K: 4 KV heads of 8,
 * sotu-2.7M: 2 of 32), the group-straddling refusal, per-head configs (round trip, size
 * statistics, hostile entries), the per-head units of a kv.per_head spec, and the exact bit
 * accounting of per-head search items.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec_kernels.h"
#include "mpq/mpq_config.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_kvsearch.h"
#include "test_main.h"
#include "shared_fixture.h"
#include "test_util.h"

#define STORIES "models/stories260K/stories260K.bin"
#define SOTU "models/sotu-2.7M/sotu-2.7M.bin"
#define EVAL_TOK "data/tinystories-eval.tok512.u16"


/* B*T real tokens (uint16 LE file), clamped below vocab (sotu has a larger vocabulary; any
 * valid ids do for a bit-identity check). */
static int *tokens(int n, int vocab) {
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(EVAL_TOK), &nb);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_ge(nb / 2, (size_t)n + 500);
    int *t = malloc((size_t)n * sizeof *t);
    ck_assert_ptr_nonnull(t);
    for (int i = 0; i < n; i++) t[i] = (raw[2 * (i + 500)] | (raw[2 * (i + 500) + 1] << 8)) % vocab;
    free(raw);
    return t;
}

/* ---- kernel: each head is quantized as if it were a block of its own -------------------- */

START_TEST(test_kernel_heads) {
    const int B = 2, T = 70, H = 4, hd = 8, kvd = H * hd;
    size_t n = (size_t)B * T * kvd;
    float *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst);
    float *one = malloc((size_t)B * T * hd * sizeof *one), *oneq = malloc((size_t)B * T * hd * sizeof *oneq);
    ck_assert(src && dst && one && oneq);
    uint64_t x = 88172645463325252ull; /* xorshift: values in (-2, 2) with distinct per-head ranges */
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        src[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 4.0 - 2.0) * (1.0f + (float)((i % kvd) / hd));
    }
    const mpq_kv_pair pairs[4] = {{2, 4}, {16, 3}, {8, 16}, {3, 2}};
    for (int mode = 0; mode < 2; mode++)
        for (int G = 2; G <= hd; G *= 2) {
            mpq_kv_scheme s = mpq_kv_scheme_default();
            s.mode = mode ? MPQ_KV_KIVI : MPQ_KV_PER_TOKEN;
            s.group_size = G;
            for (int key = 0; key < 2; key++) {
                ck_assert(kv_quantize_heads_forward(dst, src, B, T, H, hd, pairs, key, &s));
                for (int h = 0; h < H; h++) {
                    int bits = key ? pairs[h].k_bits : pairs[h].v_bits;
                    for (size_t r = 0; r < (size_t)B * T; r++)
                        memcpy(one + r * hd, src + r * kvd + (size_t)h * hd, (size_t)hd * sizeof *one);
                    if (bits < 16) kv_quantize_forward(oneq, one, B, T, hd, bits, key, &s);
                    else memcpy(oneq, one, (size_t)B * T * hd * sizeof *one);
                    for (size_t r = 0; r < (size_t)B * T; r++)
                        ck_assert_msg(memcmp(oneq + r * hd, dst + r * kvd + (size_t)h * hd, (size_t)hd * sizeof *one) == 0,
                                      "mode %d G %d key %d head %d row %zu differs", mode, G, key, h, r);
                }
            }
        }
    /* all heads at 16 bits: nothing to quantize */
    const mpq_kv_pair fp[4] = {{16, 16}, {16, 16}, {16, 16}, {16, 16}};
    mpq_kv_scheme s = mpq_kv_scheme_default();
    ck_assert(!kv_quantize_heads_forward(dst, src, B, T, H, hd, fp, true, &s));
    free(src);
    free(dst);
    free(one);
    free(oneq);
}
END_TEST

/* ---- executor: per-head pairs equal to the block's pair are the per-block numbers -------- */

static void heads_equal_blocks(const char *rel, mpq_kv_mode mode, int G) {
    mpq_model *m = test_load_model(rel);
    const mpq_model_config *c = mpq_model_get_config(m);
    const int B = 2, T = 96, L = c->n_layers, H = c->n_kv_heads;
    int *tok = tokens(B * T, c->vocab_size);
    mpq_exec *ex = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_exec_create(m, B, T, &ex, &err), MPQ_OK);
    const mpq_kv_pair menu[] = {{4, 2}, {2, 4}, {3, 3}, {8, 4}, {16, 16}, {2, 2}, {16, 2}};
    mpq_kv_pair *pairs = calloc((size_t)L, sizeof *pairs), *hp = calloc((size_t)L * H, sizeof *hp);
    ck_assert(pairs && hp);
    for (int l = 0; l < L; l++) {
        pairs[l] = menu[l % 7];
        for (int h = 0; h < H; h++) hp[l * H + h] = pairs[l];
    }
    size_t nl = (size_t)B * T * c->vocab_size;
    float *a = malloc(nl * sizeof *a), *fp = malloc(nl * sizeof *fp);
    ck_assert(a && fp);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.kv_scheme.mode = mode;
    o.kv_scheme.group_size = G;
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(m), &o, tok, B, T, &err), MPQ_OK);
    memcpy(fp, mpq_exec_logits(ex), nl * sizeof *fp);
    o.kv_pairs = pairs;
    o.n_kv_pairs = L;
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(m), &o, tok, B, T, &err), MPQ_OK);
    memcpy(a, mpq_exec_logits(ex), nl * sizeof *a);
    ck_assert_msg(memcmp(a, fp, nl * sizeof *a) != 0, "%s: the KV pairs change nothing", rel);
    o.kv_pairs = NULL;
    o.n_kv_pairs = 0;
    o.kv_head_pairs = hp;
    o.n_kv_head_pairs = L * H;
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(m), &o, tok, B, T, &err), MPQ_OK);
    ck_assert_msg(memcmp(a, mpq_exec_logits(ex), nl * sizeof *a) == 0, "%s mode %d G %d: per-head != per-block", rel,
                  (int)mode, G);
    /* one head of block 0 changed: the logits move */
    hp[0] = (mpq_kv_pair){2, 2};
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(m), &o, tok, B, T, &err), MPQ_OK);
    ck_assert(memcmp(a, mpq_exec_logits(ex), nl * sizeof *a) != 0);
    /* decode mode refuses per-head pairs */
    const float *lg = NULL;
    mpq_exec_decode_reset(ex);
    ck_assert_int_eq(mpq_exec_decode_step(ex, mpq_model_get_weights(m), &o, tok[0], &lg, &err), MPQ_ERR_UNSUPPORTED);
    free(a);
    free(fp);
    free(pairs);
    free(hp);
    free(tok);
    mpq_exec_free(ex);
    mpq_model_free(m);
}

START_TEST(test_exec_stories_kivi) { heads_equal_blocks(STORIES, MPQ_KV_KIVI, 8); }
END_TEST
START_TEST(test_exec_stories_pertoken) { heads_equal_blocks(STORIES, MPQ_KV_PER_TOKEN, 4); }
END_TEST
START_TEST(test_exec_sotu_kivi) { heads_equal_blocks(SOTU, MPQ_KV_KIVI, 32); }
END_TEST

START_TEST(test_exec_straddle) {
    mpq_model *m = test_load_model(STORIES);
    const mpq_model_config *c = mpq_model_get_config(m);
    int *tok = tokens(32, c->vocab_size);
    mpq_exec *ex = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_exec_create(m, 1, 32, &ex, &err), MPQ_OK);
    mpq_kv_pair hp[5 * 4];
    for (int i = 0; i < 20; i++) hp[i] = (mpq_kv_pair){4, 4};
    mpq_exec_opts o = mpq_exec_opts_default(); /* KIVI group 32 > head_dim 8 */
    o.kv_head_pairs = hp;
    o.n_kv_head_pairs = 20;
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(m), &o, tok, 1, 32, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "group_size 32 does not divide head_dim 8"), "%s", err.msg);
    o.kv_scheme.group_size = 8;
    o.n_kv_head_pairs = 19;
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(m), &o, tok, 1, 32, &err), MPQ_ERR_INVALID);
    o.n_kv_head_pairs = 20;
    hp[7] = (mpq_kv_pair){5, 4};
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(m), &o, tok, 1, 32, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "layer 1 head 3"), "%s", err.msg);
    free(tok);
    mpq_exec_free(ex);
    mpq_model_free(m);
}
END_TEST

/* ---- configs ----------------------------------------------------------------------------- */

START_TEST(test_config_heads) {
    mpq_model *m = test_load_model(STORIES);
    mpq_err err = {0};
    mpq_config *cfg = NULL, *back = NULL;
    const char *text = "{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"mode\": \"kivi\", \"group_size\": 8},"
                       " \"default\": \"k4v4\", \"layers\": {\"blk.1\": {\"heads\": [\"k2v2\", \"k8v8\", \"k16v16\", \"k4v3\"]},"
                       " \"model.layers.3\": \"k3v2\"}}}";
    ck_assert_int_eq(mpq_config_parse(text, "c.json", m, &cfg, &err), MPQ_OK);
    ck_assert(mpq_config_has_kv_heads(cfg));
    ck_assert_int_eq(mpq_config_n_kv_heads(cfg), 4);
    mpq_kv_pair hp[4];
    ck_assert(!mpq_config_kv_heads(cfg, 0, hp));
    ck_assert(hp[3].k_bits == 4 && hp[3].v_bits == 4);
    ck_assert(mpq_config_kv_heads(cfg, 1, hp));
    ck_assert(hp[0].k_bits == 2 && hp[1].v_bits == 8 && hp[2].k_bits == 16 && hp[3].v_bits == 3);
    /* stats: G = 8 divides kv_dim 32: a quantized K or V element costs b + 32/8 bits, 16 stays 16.
     * blocks 0, 2, 4 k4v4: 8 each; block 3 k3v2: (7 + 6)/2 = 6.5; block 1 heads: (6+6)/2 = 6,
     * (12+12)/2 = 12, 16, (8+7)/2 = 7.5 -> 41.5/4 = 10.375. Mean over 5 blocks = 40.875/5. */
    mpq_config_stats st;
    ck_assert_int_eq(mpq_config_get_stats(cfg, m, 0, &st, &err), MPQ_OK);
    /* the sum is of dyadic numbers (exact); one division by 5 on either side */
    ck_assert_double_eq_tol(st.avg_kv_bits, 40.875 / 5.0, 1e-12);
    /* bytes per token: per head 8 channels x (K+V bits) / 8 = K+V bits; block 1: 12+24+32+15 = 83,
     * k4v4 blocks 32 x 16 / 8 = 64 each, k3v2 block 32 x 13 / 8 = 52 */
    ck_assert_double_eq_tol(st.kv_bytes_per_token, 83.0 + 3 * 64.0 + 52.0, 1e-12);
    char *js = mpq_config_to_json(cfg, m);
    ck_assert_ptr_nonnull(js);
    ck_assert_ptr_nonnull(strstr(js, "\"heads\""));
    ck_assert_int_eq(mpq_config_parse(js, "back.json", m, &back, &err), MPQ_OK);
    mpq_kv_pair a[20], b[20];
    mpq_config_kv_head_pairs(cfg, a);
    mpq_config_kv_head_pairs(back, b);
    ck_assert(memcmp(a, b, sizeof a) == 0);
    /* a per-block pair replaces the heads */
    ck_assert_int_eq(mpq_config_set_kv(back, 1, (mpq_kv_pair){8, 4}, &err), MPQ_OK);
    ck_assert(!mpq_config_has_kv_heads(back));
    free(js);
    mpq_config_free(back);
    mpq_config_free(cfg);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_config_heads_bad) {
    mpq_model *m = test_load_model(STORIES);
    static const struct {
        const char *layers, *scheme;
        mpq_status st;
        const char *msg;
    } bad[] = {
        {"{\"heads\": [\"k4v4\", \"k4v4\", \"k4v4\"]}", "8", MPQ_ERR_FORMAT,
         "bad.json: kv.layers.blk.2.heads: 3 pairs for a model with 4 KV heads"},
        {"{\"heads\": [\"k4v4\", \"k4v4\", \"k4v4\", \"k4v4\", \"k4v4\"]}", "8", MPQ_ERR_FORMAT, "5 pairs for a model with 4"},
        {"{\"heads\": [\"k4v4\", \"k9v4\", \"k4v4\", \"k4v4\"]}", "8", MPQ_ERR_FORMAT,
         "bad.json: kv.layers.blk.2.heads[1]: expected a KV pair such as \"k8v4\" (got 'k9v4')"},
        {"{\"heads\": [\"k4v4\", 4, \"k4v4\", \"k4v4\"]}", "8", MPQ_ERR_FORMAT, "heads[1]: expected a KV pair"},
        {"{\"heads\": \"k4v4\"}", "8", MPQ_ERR_FORMAT, "kv.layers.blk.2: expected a KV pair such as"},
        {"{\"heads\": [\"k4v4\", \"k4v4\", \"k4v4\", \"k4v4\"], \"x\": 1}", "8", MPQ_ERR_FORMAT, "blk.2.x: unknown"},
        {"{}", "8", MPQ_ERR_FORMAT, "kv.layers.blk.2: expected a KV pair such as"},
        {"{\"heads\": [\"k4v4\", \"k4v4\", \"k4v4\", \"k4v4\"]}", "32", MPQ_ERR_INVALID,
         "bad.json: kv.layers.blk.2.heads: per-head pairs need kv.scheme.group_size (32) to divide head_dim (8)"},
        {"{\"heads\": [\"k4v4\", \"k4v4\", \"k4v4\", \"k4v4\"]}", "3", MPQ_ERR_INVALID, "group_size (3) to divide"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "{\"mpq_config_version\": 1, \"kv\": {\"scheme\": {\"group_size\": %s}, \"layers\": {\"blk.2\": %s}}}",
                 bad[i].scheme, bad[i].layers);
        mpq_config *cfg = NULL;
        mpq_err err = {0};
        ck_assert_int_eq(mpq_config_parse(text, "bad.json", m, &cfg, &err), bad[i].st);
        ck_assert_ptr_null(cfg);
        ck_assert_msg(strstr(err.msg, bad[i].msg), "case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
    }
    mpq_model_free(m);
}
END_TEST

/* ---- spec units ------------------------------------------------------------------------------ */

static mpq_status units_for(int G, bool per_head, mpq_job_unit **u, int *n, mpq_err *err) {
    char text[2048];
    snprintf(text, sizeof text,
             "{\"name\": \"ph\", \"model\": \"%s\", \"calibration\": {\"data\": \"%s\", \"seq_len\": 32, \"n_seqs\": 1},"
             " \"kv\": {\"scheme\": {\"group_size\": %d}, \"pairs\": [\"k4v4\", \"k2v2\"]%s},"
             " \"metrics\": [\"kv_sensitivity\"]}",
             shared_path(STORIES), shared_path("data/tinystories-calib.tok512.u16"), G,
             per_head ? ", \"per_head\": true" : "");
    mpq_job_spec *s = NULL;
    mpq_status st = mpq_job_spec_parse(text, "s.json", &s, err);
    ck_assert_msg(st == MPQ_OK, "%s", err->msg);
    ck_assert_int_eq(s->kv_per_head, per_head);
    ck_assert_int_eq(strstr(s->canonical_json, "per_head") != NULL, per_head); /* old specs keep their hash */
    mpq_model *m = test_load_model(STORIES);
    st = mpq_job_units(s, m, u, n, err);
    mpq_model_free(m);
    mpq_job_spec_free(s);
    return st;
}

START_TEST(test_spec_units) {
    mpq_job_unit *u = NULL;
    int n = 0;
    mpq_err err = {0};
    ck_assert_int_eq(units_for(32, false, &u, &n, &err), MPQ_OK);
    ck_assert_int_eq(n, 5 * 2);
    free(u);
    ck_assert_int_eq(units_for(8, true, &u, &n, &err), MPQ_OK);
    ck_assert_int_eq(n, 5 * 2 + 5 * 4 * 2); /* per block, then per (block, head) */
    ck_assert(!u[9].kv_head_unit && u[10].kv_head_unit);
    ck_assert_str_eq(u[10].key, "blk.0.kv/k4v4@h0");
    ck_assert_str_eq(u[n - 1].key, "blk.4.kv/k2v2@h3");
    ck_assert_int_eq(u[n - 1].block, 4);
    ck_assert_int_eq(u[n - 1].kv_head, 3);
    ck_assert_int_eq(u[n - 1].option, 1);
    free(u);
    u = NULL;
    ck_assert_int_eq(units_for(32, true, &u, &n, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "s.json: kv.per_head: kv.scheme.group_size 32 does not divide head_dim 8"), "%s", err.msg);
    ck_assert_ptr_null(u);
}
END_TEST

/* ---- search items: the bits of a per-head assignment ------------------------------------------ */

START_TEST(test_item_bits) {
    /* stories260K shape: 5 blocks x 4 heads of 8; G = 8, KIVI; per-head table items of width 8 */
    const mpq_kv_pair pairs[3] = {{4, 4}, {2, 2}, {8, 4}};
    mpq_kv_scheme s = mpq_kv_scheme_default();
    s.group_size = 8;
    s.residual = 3;
    mpq_kvsearch_table *tb = NULL, *th = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_kvsearch_table_create(5, 3, 32, &s, pairs, &tb, &err), MPQ_OK);
    ck_assert_int_eq(mpq_kvsearch_table_create(20, 3, 8, &s, pairs, &th, &err), MPQ_OK);
    th->n_heads = 4;
    int ib[5], ih[20];
    for (int64_t L = 0; L <= 37; L += 37)
        for (int j = 0; j < 3; j++) {
            /* a block's units are exactly those of its 4 heads together */
            ck_assert_int_eq(mpq_kvsearch_pair_units(tb, pairs[j], L, true), 4 * mpq_kvsearch_pair_units(th, pairs[j], L, true));
            for (int b = 0; b < 5; b++) ib[b] = (b + j) % 3;
            for (int i = 0; i < 20; i++) ih[i] = ib[i / 4];
            /* the same assignment has the same average bits as blocks or as items (ratios of the
             * same integers: equal to rounding, 1e-12 relative) */
            ck_assert_double_eq_tol(mpq_kvsearch_avg_bits(tb, ib, L, true), mpq_kvsearch_avg_bits(th, ih, L, true), 1e-12);
        }
    mpq_kvsearch_table_free(tb);
    mpq_kvsearch_table_free(th);
}
END_TEST

static Suite *kvhead_suite(void) {
    Suite *s = suite_create("kvhead");
    TCase *tc = tcase_create("kvhead");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_kernel_heads);
    tcase_add_test(tc, test_exec_stories_kivi);
    tcase_add_test(tc, test_exec_stories_pertoken);
    tcase_add_test(tc, test_exec_sotu_kivi);
    tcase_add_test(tc, test_exec_straddle);
    tcase_add_test(tc, test_config_heads);
    tcase_add_test(tc, test_config_heads_bad);
    tcase_add_test(tc, test_spec_units);
    tcase_add_test(tc, test_item_bits);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kvhead_suite)
