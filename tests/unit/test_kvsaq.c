/*
 * test_kvsaq.c - the SAQ KV coder (src/quant/kv_saq.c, src/exec/kv_saq_fit.c) and the
 * fractional k<K>v<V> rates (src/quant/kv.c): names, achievable rates, the coding of a token
 * vector against its documented bits, SAQ against per-vector RTN on the real calibration keys
 * of stories260K, progressive prefixes, and hostile bases (another model's shape, broken
 * files, an all-equal calibration set).
 */
#include <cblas.h>
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_data.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_kvsearch.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "test_main.h"
#include "test_util.h"

#define M260 "models/stories260K/stories260K.bin"
#define CALIB "data/tinystories-calib.tok512.u16"
#define NWIN 4
#define TLEN 128

START_TEST(test_pair_names) {
    mpq_err err = {0};
    mpq_kv_pair p;
    char buf[64];
    ck_assert_int_eq(mpq_kv_pair_parse("k3.25v2.5", &p, &err), MPQ_OK);
    ck_assert_int_eq(mpq_kv_rate_q(p.k_bits), 3 * 1024 + 256);
    ck_assert_int_eq(mpq_kv_rate_q(p.v_bits), 2 * 1024 + 512);
    ck_assert(mpq_kv_pair_fractional(p));
    ck_assert_str_eq(mpq_kv_pair_name(p, buf, sizeof buf), "k3.25v2.5");
    ck_assert_int_eq(mpq_kv_pair_parse("k3.0009765625v4", &p, &err), MPQ_OK); /* 1/1024 */
    ck_assert_str_eq(mpq_kv_pair_name(p, buf, sizeof buf), "k3.0009765625v4");
    ck_assert_int_eq(mpq_kv_pair_parse("k4v2", &p, &err), MPQ_OK);
    ck_assert(!mpq_kv_pair_fractional(p));
    ck_assert_int_eq(p.k_bits, 4);
    ck_assert_str_eq(mpq_kv_pair_name(p, buf, sizeof buf), "k4v2");
    /* trailing zero, not a multiple of 1/1024, out of range, empty fraction */
    const char *bad[] = {"k3.0v2", "k3.50v2", "k3.1v2", "k16.5v2", "k0.0v2", "k3.v2", "k5v2", "k3.25v2.5x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(mpq_kv_pair_parse(bad[i], &p, &err), MPQ_ERR_INVALID);
        ck_assert_msg(strstr(err.msg, bad[i]) != NULL, "%s: %s", bad[i], err.msg);
    }
    /* achievable rates at head_dim 8: rate*8 whole bits, 0 < rate <= 8 */
    ck_assert_int_eq(mpq_kv_saq_check_rate(3 * 1024 + 128, 8, &err), MPQ_OK); /* 3.125 * 8 = 25 */
    ck_assert_int_eq(mpq_kv_saq_check_rate(3 * 1024 + 64, 8, &err), MPQ_ERR_INVALID); /* 3.0625 * 8 = 24.5 */
    ck_assert(strstr(err.msg, "not achievable") && strstr(err.msg, "head_dim 8"));
    ck_assert_int_eq(mpq_kv_saq_check_rate(3 * 1024 + 64, 32, &err), MPQ_OK); /* 98 bits */
    ck_assert_int_eq(mpq_kv_saq_check_rate(9 * 1024, 8, &err), MPQ_ERR_INVALID);
    ck_assert(strstr(err.msg, "not achievable"));
    /* bits per element: codes only, plus 16*(hd^2 + 2 hd) bits per head amortised over L */
    mpq_kv_scheme s = mpq_kv_scheme_default();
    s.mode = MPQ_KV_SAQ;
    ck_assert_int_eq(mpq_kv_pair_parse("k3.25v2.5", &p, &err), MPQ_OK);
    ck_assert_double_eq(mpq_kv_bits_per_element_hd(p, &s, 32, 8, 0, true, true), 3.25);
    /* 3.25 + 16*(64+16)/8/256 = 3.25 + 0.625, exact in binary */
    ck_assert_double_eq(mpq_kv_bits_per_element_hd(p, &s, 32, 8, 256, true, true), 3.875);
}
END_TEST

/* Exact units of the KV search for saq pairs: G x stored bits over L tokens, integral, and the
 * same average as mpq_kv_bits_per_element_hd (which the README documents). */
START_TEST(test_search_units) {
    mpq_err err = {0};
    mpq_kv_scheme s = mpq_kv_scheme_default();
    s.mode = MPQ_KV_SAQ;
    mpq_kv_pair pr[3];
    ck_assert_int_eq(mpq_kv_pair_parse("k3.25v2.5", &pr[0], &err), MPQ_OK);
    ck_assert_int_eq(mpq_kv_pair_parse("k4v4", &pr[1], &err), MPQ_OK);
    ck_assert_int_eq(mpq_kv_pair_parse("k16v2.125", &pr[2], &err), MPQ_OK);
    mpq_kvsearch_table *t = NULL;
    ck_assert_int_eq(mpq_kvsearch_table_create(2, 3, 32, &s, pr, &t, &err), MPQ_OK);
    t->head_dim = 8; /* 4 KV heads */
    const int64_t G = 32, L = 256;
    /* K: 256*32*3.25 + 4*16*(64+16); V: 256*32*2.5 + the same bases */
    ck_assert_int_eq(mpq_kvsearch_pair_units(t, pr[0], L, true), G * (26624 + 5120 + 20480 + 5120));
    ck_assert_int_eq(mpq_kvsearch_units_per_bit(t, L, true), 2 * G * 32 * L);
    for (int j = 0; j < 3; j++) {
        double avg = (double)mpq_kvsearch_pair_units(t, pr[j], L, true) / (double)mpq_kvsearch_units_per_bit(t, L, true);
        double ref = 0.5 * (mpq_kv_bits_per_element_hd(pr[j], &s, 32, 8, L, true, true) +
                            mpq_kv_bits_per_element_hd(pr[j], &s, 32, 8, L, false, true));
        /* both are ratios of exact integers below 2^40: equal to double rounding (2^-52 relative) */
        ck_assert_double_eq_tol(avg, ref, 1e-12 * ref);
    }
    /* steady state: no bases; nominal: 1/1024 bit units */
    ck_assert_int_eq(mpq_kvsearch_pair_units(t, pr[0], 0, true), G * (104 + 80));
    ck_assert_int_eq(mpq_kvsearch_pair_units(t, pr[0], 0, false), 3328 + 2560);
    ck_assert_int_eq(mpq_kvsearch_units_per_bit(t, 0, false), 2048);
    mpq_kvsearch_table_free(t);
    /* fractional pairs outside mode saq are refused */
    s.mode = MPQ_KV_KIVI;
    ck_assert_int_eq(mpq_kvsearch_table_create(2, 3, 32, &s, pr, &t, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(t);
}
END_TEST

/* Keys before RoPE (and values) of every block of stories260K over NWIN calibration
 * windows: the captured attn_k / attn_v inputs times Wk^T / Wv^T (the model has no bias). */
typedef struct kcap {
    const mpq_model *m;
    int kvd;
    int64_t n;
    float *k[16], *v[16];
} kcap;

static void cap(void *u, int idx, const float *x, int64_t rows, int64_t cols) {
    kcap *c = u;
    const mpq_layer_info *li = mpq_model_linear(c->m, idx);
    if (li->kind != MPQ_LAYER_ATTN_K && li->kind != MPQ_LAYER_ATTN_V) return;
    const mpq_block_weights *bw = &mpq_model_get_weights(c->m)->blocks[li->block];
    bool key = li->kind == MPQ_LAYER_ATTN_K;
    float *dst = key ? c->k[li->block] : c->v[li->block];
    const float *w = key ? bw->wk : bw->wv;
    for (int64_t r = 0; r < rows; r++)
        for (int o = 0; o < c->kvd; o++) {
            double acc = 0.0;
            for (int64_t i = 0; i < cols; i++) acc += (double)x[r * cols + i] * (double)w[(size_t)o * cols + i];
            dst[r * c->kvd + o] = (float)acc;
        }
}

static mpq_model *g_m;
static kcap g_cap;
static mpq_kv_saq *g_bases;

static void setup_real(void) {
    mpq_err err = {0};
    ck_assert_int_eq(mpq_model_load(shared_path(M260), &g_m, &err), MPQ_OK);
    const mpq_model_config *mc = mpq_model_get_config(g_m);
    ck_assert_int_le(mc->n_layers, 16);
    mpq_data *d = NULL;
    mpq_data_opts o = mpq_data_opts_default();
    o.vocab_size = mc->vocab_size;
    ck_assert_int_eq(mpq_data_load(shared_path(CALIB), NULL, &o, &d, &err), MPQ_OK);
    mpq_data_seqs *sq = NULL;
    ck_assert_int_eq(mpq_data_sequences(d, TLEN, NWIN, 1, &sq, &err), MPQ_OK);
    ck_assert_int_eq(mpq_kv_saq_fit_model(g_m, sq->tokens, NWIN, TLEN, TLEN + 1, 2, &g_bases, &err), MPQ_OK);
    /* the same windows again, in one batch, for the keys and values the test codes */
    g_cap.m = g_m;
    g_cap.kvd = mc->n_kv_heads * mc->head_dim;
    g_cap.n = (int64_t)NWIN * TLEN;
    for (int l = 0; l < mc->n_layers; l++) {
        g_cap.k[l] = malloc((size_t)g_cap.n * g_cap.kvd * sizeof(float));
        g_cap.v[l] = malloc((size_t)g_cap.n * g_cap.kvd * sizeof(float));
    }
    int *tok = malloc((size_t)NWIN * TLEN * sizeof(int));
    for (int i = 0; i < NWIN; i++)
        for (int t = 0; t < TLEN; t++) tok[i * TLEN + t] = sq->tokens[(size_t)i * (TLEN + 1) + t];
    mpq_exec *ex = NULL;
    ck_assert_int_eq(mpq_exec_create(g_m, NWIN, TLEN, &ex, &err), MPQ_OK);
    mpq_exec_opts eo = mpq_exec_opts_default();
    eo.capture = cap;
    eo.capture_user = &g_cap;
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(g_m), &eo, tok, NWIN, TLEN, &err), MPQ_OK);
    mpq_exec_free(ex);
    free(tok);
    mpq_data_seqs_free(sq);
    mpq_data_free(d);
}

static void teardown_real(void) {
    for (int l = 0; l < 16; l++) {
        free(g_cap.k[l]);
        free(g_cap.v[l]);
    }
    mpq_kv_saq_free(g_bases);
    mpq_model_free(g_m);
}

/* One token vector: the DP spends exactly rate*head_dim bits, every code fits its width,
 * the reconstruction does not depend on how many rows are coded at once, and bases written to
 * a file and read back code it identically. */
START_TEST(test_vector_roundtrip) {
    mpq_err err = {0};
    const int hd = mpq_kv_saq_head_dim(g_bases), nh = mpq_kv_saq_n_kv_heads(g_bases);
    const int rates[] = {2 * 1024, 3 * 1024 + 256, 4 * 1024 + 512};
    char dir[200], path[256];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/kvsaq_bases.json", dir);
    ck_assert_int_eq(mpq_kv_saq_save(g_bases, path, &err), MPQ_OK);
    mpq_kv_saq *back = NULL;
    ck_assert_msg(mpq_kv_saq_load(path, &back, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_kv_saq_check(back, 5, 4, 8, "back", &err), MPQ_OK);
    for (size_t ri = 0; ri < sizeof rates / sizeof rates[0]; ri++)
        for (int l = 0; l < mpq_kv_saq_n_layers(g_bases); l++)
            for (int h = 0; h < nh; h++) {
                int bits[8], bits2[8];
                bool sc = false, sc2 = true;
                uint32_t codes[8], codes2[8];
                float xh[8], xh2[8];
                ck_assert_int_eq(hd, 8);
                ck_assert_int_eq(mpq_kv_saq_plan(g_bases, l, true, h, rates[ri], bits, &sc, NULL, &err), MPQ_OK);
                ck_assert_int_eq(mpq_kv_saq_plan(back, l, true, h, rates[ri], bits2, &sc2, NULL, &err), MPQ_OK);
                int sum = 0;
                for (int j = 0; j < hd; j++) {
                    ck_assert(bits[j] >= 0 && bits[j] <= 8);
                    ck_assert_int_eq(bits[j], bits2[j]);
                    sum += bits[j];
                }
                ck_assert(sc == sc2);
                ck_assert_int_eq(sum + (sc ? 16 : 0), rates[ri] * hd / 1024);
                const float *x = g_cap.k[l] + (size_t)37 * g_cap.kvd + (size_t)h * hd; /* token 37 */
                mpq_kv_saq_code_vector(g_bases, l, true, h, bits, sc, x, codes, xh);
                mpq_kv_saq_code_vector(back, l, true, h, bits, sc, x, codes2, xh2);
                for (int j = 0; j < hd; j++) {
                    ck_assert(bits[j] == 0 ? codes[j] == 0 : codes[j] < (1u << bits[j]));
                    ck_assert_uint_eq(codes[j], codes2[j]);
                    ck_assert(xh[j] == xh2[j]); /* bitwise: the file keeps every float exactly */
                    ck_assert(isfinite(xh[j]));
                }
                /* batch of all rows vs this row alone */
                float row[32];
                memcpy(row, g_cap.k[l] + (size_t)37 * g_cap.kvd, (size_t)g_cap.kvd * sizeof(float));
                ck_assert_int_eq(mpq_kv_saq_quantize(g_bases, l, true, rates[ri], row, 1, &err), MPQ_OK);
                for (int j = 0; j < hd; j++) ck_assert(row[h * hd + j] == xh[j]);
            }
    mpq_kv_saq_free(back);
    remove(path);
}
END_TEST

/* SAQ at b bits/element against per-head-vector min-max RTN at b bits on keys (the RTN figure
 * excludes its fp16 scale + zero, 4 more bits per element at head_dim 8, so the comparison
 * favours RTN) on the calibration keys and values: squared error summed over all tokens. */
START_TEST(test_never_worse_than_rtn) {
    mpq_err err = {0};
    const int hd = mpq_kv_saq_head_dim(g_bases), nh = mpq_kv_saq_n_kv_heads(g_bases), kvd = g_cap.kvd;
    const size_t n = (size_t)g_cap.n * kvd;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    for (int l = 0; l < mpq_kv_saq_n_layers(g_bases); l++)
        for (int kind = 0; kind < 2; kind++)
            for (int bits = 2; bits <= 4; bits++) {
                const float *x = kind == 0 ? g_cap.k[l] : g_cap.v[l];
                memcpy(a, x, n * sizeof(float));
                memcpy(b, x, n * sizeof(float));
                ck_assert_int_eq(mpq_kv_saq_quantize(g_bases, l, kind == 0, bits * 1024, a, g_cap.n, &err), MPQ_OK);
                for (int64_t r = 0; r < g_cap.n; r++)
                    for (int h = 0; h < nh; h++) mpq_quant_rtn_minmax(b + (size_t)r * kvd + (size_t)h * hd, (size_t)hd, 1, bits);
                double es = 0.0, er = 0.0;
                for (size_t i = 0; i < n; i++) {
                    es += ((double)a[i] - x[i]) * ((double)a[i] - x[i]);
                    er += ((double)b[i] - x[i]) * ((double)b[i] - x[i]);
                }
                fprintf(stderr, "stories260K blk.%d %s %d bits: SAQ/RTN squared error %.3f\n", l, kind ? "v" : "k", bits,
                        es / er);
                /* asserted for the keys; for the values, whose scale varies from token to token,
                 * the static steps lose to a per-vector scale at 2 bits (README "KV cache") */
                if (kind == 0)
                    ck_assert_msg(es <= er, "blk.%d k %d bits: SAQ %g > RTN %g", l, bits, es, er);
            }
    free(a);
    free(b);
}
END_TEST

/* The top b bits of a hi-bit code are a b-bit code on the grid of step s_hi * 2^(hi-b),
 * whose half-range is one the native b-bit step search also tried: on the calibration set
 * itself the native code can only be better (ratio >= 1, exactly: powers of two scale the
 * float steps without rounding). */
START_TEST(test_prefix) {
    mpq_err err = {0};
    const int hb[][2] = {{4, 2}, {4, 3}, {8, 4}};
    for (size_t i = 0; i < 3; i++) {
        double worst = 0.0, sum = 0.0;
        int cnt = 0;
        for (int l = 0; l < mpq_kv_saq_n_layers(g_bases); l++)
            for (int kind = 0; kind < 2; kind++) {
                double r = 0.0;
                ck_assert_int_eq(mpq_kv_saq_prefix_ratio(g_bases, l, kind == 0, hb[i][0], hb[i][1],
                                                         kind == 0 ? g_cap.k[l] : g_cap.v[l], g_cap.n, &r, &err),
                                 MPQ_OK);
                ck_assert(r >= 1.0);
                if (r > worst) worst = r;
                sum += r;
                cnt++;
            }
        fprintf(stderr, "stories260K prefix %d -> %d bits: error ratio to native mean %.3f, worst %.3f\n", hb[i][0],
                hb[i][1], sum / cnt, worst);
    }
}
END_TEST

/* The in-memory JSON text (what a job stores as artifact kv_saq_bases): read back, it codes
 * every block, kind and head of the real keys and values bit-identically, and writes the same
 * text again; a cut or foreign text names `what`. */
START_TEST(test_json_text) {
    mpq_err err = {0};
    char *text = NULL, *again = NULL;
    ck_assert_int_eq(mpq_kv_saq_to_json(g_bases, &text, &err), MPQ_OK);
    size_t n = strlen(text);
    mpq_kv_saq *back = NULL;
    ck_assert_int_eq(mpq_kv_saq_from_json(text, n, "db: job 'x': artifact kv_saq_bases", &back, &err), MPQ_OK);
    ck_assert_int_eq(mpq_kv_saq_check(back, mpq_kv_saq_n_layers(g_bases), mpq_kv_saq_n_kv_heads(g_bases),
                                      mpq_kv_saq_head_dim(g_bases), "back", &err),
                     MPQ_OK);
    ck_assert_int_eq(mpq_kv_saq_to_json(back, &again, &err), MPQ_OK);
    ck_assert_str_eq(text, again);
    int64_t rows = 64;
    size_t len = (size_t)rows * (size_t)g_cap.kvd;
    float *a = malloc(len * sizeof *a), *b = malloc(len * sizeof *b);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    for (int l = 0; l < mpq_kv_saq_n_layers(g_bases); l++)
        for (int kind = 0; kind < 2; kind++) {
            const float *src = kind ? g_cap.v[l] : g_cap.k[l];
            int rate_q = 1024 * 13 / 4; /* 3.25 bits */
            memcpy(a, src, len * sizeof *a);
            memcpy(b, src, len * sizeof *b);
            ck_assert_int_eq(mpq_kv_saq_quantize(g_bases, l, kind == 0, rate_q, a, rows, &err), MPQ_OK);
            ck_assert_int_eq(mpq_kv_saq_quantize(back, l, kind == 0, rate_q, b, rows, &err), MPQ_OK);
            ck_assert_msg(memcmp(a, b, len * sizeof *a) == 0, "blk.%d %s: re-read bases code differently", l,
                          kind ? "v" : "k");
        }
    free(a);
    free(b);
    mpq_kv_saq_free(back);
    back = NULL;
    ck_assert_int_eq(mpq_kv_saq_from_json(text, n / 2, "db: job 'x': artifact kv_saq_bases", &back, &err),
                     MPQ_ERR_FORMAT);
    ck_assert_ptr_null(back);
    ck_assert_msg(strstr(err.msg, "artifact kv_saq_bases"), "%s", err.msg);
    ck_assert_int_eq(mpq_kv_saq_from_json("{\"a\":\0}", 7, "blob", &back, &err), MPQ_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "blob") && strstr(err.msg, "NUL"), "%s", err.msg);
    free(text);
    free(again);
}
END_TEST

START_TEST(test_hostile) {
    mpq_err err = {0};
    /* bases of stories260K (5 x 4 heads x 8) checked against sotu-2.7M's shape (6 x 2 x 32) */
    ck_assert_int_eq(mpq_kv_saq_check(g_bases, 6, 2, 32, "sotu", &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "4 KV heads") && strstr(err.msg, "6 x 2 x 32"), "%s", err.msg);
    ck_assert_int_eq(mpq_kv_saq_check(NULL, 5, 4, 8, "x", &err), MPQ_ERR_INVALID);
    /* the executor refuses them, and a rate not achievable */
    mpq_exec *ex = NULL;
    ck_assert_int_eq(mpq_exec_create(g_m, 1, 8, &ex, &err), MPQ_OK);
    mpq_kv_saq *other = NULL;
    ck_assert_int_eq(mpq_kv_saq_create(5, 2, 8, &other, &err), MPQ_OK);
    mpq_kv_pair pairs[5];
    for (int l = 0; l < 5; l++) ck_assert_int_eq(mpq_kv_pair_parse("k3.25v3", &pairs[l], &err), MPQ_OK);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.kv_scheme.mode = MPQ_KV_SAQ;
    o.kv_pairs = pairs;
    o.n_kv_pairs = 5;
    o.kv_saq = other;
    int tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(g_m), &o, tok, 1, 8, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "2 KV heads"), "%s", err.msg);
    o.kv_saq = g_bases;
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(g_m), &o, tok, 1, 8, &err), MPQ_OK);
    ck_assert_int_eq(mpq_kv_pair_parse("k3.0625v3", &pairs[2], &err), MPQ_OK);
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(g_m), &o, tok, 1, 8, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "k3.0625v3") && strstr(err.msg, "not achievable"), "%s", err.msg);
    o.kv_scheme.mode = MPQ_KV_KIVI; /* fractional pairs outside mode saq */
    ck_assert_int_eq(mpq_exec_forward(ex, mpq_model_get_weights(g_m), &o, tok, 1, 8, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "saq"), "%s", err.msg);
    mpq_exec_free(ex);
    mpq_kv_saq_free(other);
    /* broken files */
    char dir[200], path[256];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/kvsaq_bad.json", dir);
    const struct { const char *text; mpq_status st; const char *needle; } bad[] = {
        {"{\"mpq_kv_saq_version\": 2, \"n_layers\": 1}", MPQ_ERR_UNSUPPORTED, "newer"},
        {"{\"mpq_kv_saq_version\": 1, \"n_layers\": 1, \"n_kv_heads\": 1, \"head_dim\": 0}", MPQ_ERR_FORMAT, "head_dim"},
        {"{\"mpq_kv_saq_version\": 1, \"n_layers\": 1, \"n_kv_heads\": 1, \"head_dim\": 2, \"layers\": []}",
         MPQ_ERR_FORMAT, "layers"},
        {"{\"mpq_kv_saq_version\": 1, \"n_layers\": 1, \"n_kv_heads\": 1, \"head_dim\": 2, \"layers\": "
         "[{\"k\": [{\"mean\": [0, 0], \"eigenvalues\": [1, 1], \"basis\": [1, 0, 0]}]}]}",
         MPQ_ERR_FORMAT, "basis"},
        {"[1, 2", MPQ_ERR_FORMAT, "JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "wb");
        fputs(bad[i].text, f);
        fclose(f);
        mpq_kv_saq *s = NULL;
        ck_assert_int_eq(mpq_kv_saq_load(path, &s, &err), bad[i].st);
        ck_assert_ptr_null(s);
        ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, bad[i].needle), "%zu: %s", i, err.msg);
    }
    remove(path);
    mpq_kv_saq *s = NULL;
    ck_assert_int_eq(mpq_kv_saq_load("/nonexistent/bases.json", &s, &err), MPQ_ERR_IO);
}
END_TEST

/* An all-equal calibration set: zero covariance, zero eigenvalues; no NaN, and the
 * reconstruction of that vector is the vector (up to the FLT_MIN/2 level of an all-zero
 * direction). */
START_TEST(test_degenerate) {
    mpq_err err = {0};
    mpq_kv_saq *s = NULL;
    ck_assert_int_eq(mpq_kv_saq_create(1, 2, 4, &s, &err), MPQ_OK);
    float x[16 * 8];
    for (int i = 0; i < 16 * 8; i++) x[i] = 0.75f + (float)(i % 8);
    ck_assert_int_eq(mpq_kv_saq_fit(s, 0, true, x, 16, &err), MPQ_OK);
    ck_assert_int_eq(mpq_kv_saq_fit(s, 0, false, x, 16, &err), MPQ_OK);
    for (int rate = 1; rate <= 8; rate++) {
        float y[16 * 8];
        memcpy(y, x, sizeof y);
        ck_assert_int_eq(mpq_kv_saq_quantize(s, 0, true, rate * 1024, y, 16, &err), MPQ_OK);
        /* tolerance: |mu| <= 8 plus directions contributing FLT_MIN-sized levels: a few ulps of 8 */
        for (int i = 0; i < 16 * 8; i++) ck_assert_float_eq_tol(y[i], x[i], 4.0f * 8.0f * 1.2e-7f);
    }
    /* a vector away from the calibration point stays finite */
    float z[8] = {100, -100, 3, 4, 5, 6, 7, 8};
    ck_assert_int_eq(mpq_kv_saq_quantize(s, 0, false, 2048, z, 1, &err), MPQ_OK);
    for (int i = 0; i < 8; i++) ck_assert(isfinite(z[i]));
    mpq_kv_saq_free(s);
}
END_TEST

/* Batch forward vs incremental decode with saq pairs: the decode path quantizes the pre-RoPE
 * key of each new token and ropes the result, as the batch path does for all tokens at once.
 * The q/k/v products differ in their last bits between the two paths (sgemm vs sgemv), and a
 * coordinate near a level boundary can then take the neighbouring level; so, as for the KIVI
 * test in unit.exec: most sequences agree to the FP tolerance (1e-3 of the logit scale), and
 * every difference stays below half the effect of the quantization itself, which a wrong
 * key order (RoPE before quantization in one path only) would exceed. */
START_TEST(test_batch_vs_decode) {
    mpq_err err = {0};
    const mpq_model_config *c = mpq_model_get_config(g_m);
    const mpq_weights *w = mpq_model_get_weights(g_m);
    enum { T = 48, NSEQ = 3 };
    const int V = c->vocab_size;
    mpq_kv_pair pairs[16];
    for (int l = 0; l < c->n_layers; l++) ck_assert_int_eq(mpq_kv_pair_parse("k3.25v3", &pairs[l], &err), MPQ_OK);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.kv_scheme.mode = MPQ_KV_SAQ;
    o.kv_pairs = pairs;
    o.n_kv_pairs = c->n_layers;
    o.kv_saq = g_bases;
    mpq_exec *ex = NULL;
    ck_assert_int_eq(mpq_exec_create(g_m, 1, T, &ex, &err), MPQ_OK);
    float *fp = malloc((size_t)T * V * sizeof(float)), *bq = malloc((size_t)T * V * sizeof(float));
    int n_exact = 0;
    for (int sidx = 0; sidx < NSEQ; sidx++) {
        int seq[T];
        for (int t = 0; t < T; t++) seq[t] = (int)((t * 37 + sidx * 101 + 5) % (V - 2)) + 2;
        seq[0] = 1;
        ck_assert_int_eq(mpq_exec_forward(ex, w, NULL, seq, 1, T, &err), MPQ_OK);
        memcpy(fp, mpq_exec_logits(ex), (size_t)T * V * sizeof(float));
        ck_assert_msg(mpq_exec_forward(ex, w, &o, seq, 1, T, &err) == MPQ_OK, "%s", err.msg);
        memcpy(bq, mpq_exec_logits(ex), (size_t)T * V * sizeof(float));
        double qd = 0.0, md = 0.0, ma = 0.0;
        for (size_t i = 0; i < (size_t)T * V; i++) {
            double d = fabs((double)fp[i] - bq[i]);
            qd = d > qd ? d : qd;
        }
        mpq_exec_decode_reset(ex);
        for (int t = 0; t < T; t++) {
            const float *lg = NULL;
            ck_assert_msg(mpq_exec_decode_step(ex, w, &o, seq[t], &lg, &err) == MPQ_OK, "%s", err.msg);
            for (int v = 0; v < V; v++) {
                double d = fabs((double)lg[v] - bq[(size_t)t * V + v]);
                md = d > md ? d : md;
                ma = fabs(lg[v]) > ma ? fabs(lg[v]) : ma;
            }
        }
        fprintf(stderr, "saq batch vs decode, sequence %d: max |diff| %.3g, quantization effect %.3g\n", sidx, md, qd);
        ck_assert_msg(md < 0.5 * qd, "sequence %d: batch vs decode %g, quantization effect %g", sidx, md, qd);
        if (md <= 1e-3 * ma) n_exact++;
    }
    ck_assert_int_ge(n_exact, 1);
    free(fp);
    free(bq);
    mpq_exec_free(ex);
}
END_TEST

static Suite *kvsaq_suite(void) {
    Suite *s = suite_create("kvsaq");
    TCase *tc = tcase_create("unit");
    tcase_add_test(tc, test_pair_names);
    tcase_add_test(tc, test_degenerate);
    tcase_add_test(tc, test_search_units);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("stories260K");
    tcase_add_unchecked_fixture(tr, setup_real, teardown_real);
    tcase_set_timeout(tr, 600);
    tcase_add_test(tr, test_vector_roundtrip);
    tcase_add_test(tr, test_never_worse_than_rtn);
    tcase_add_test(tr, test_prefix);
    tcase_add_test(tr, test_hostile);
    tcase_add_test(tr, test_json_text);
    tcase_add_test(tr, test_batch_vs_decode);
    suite_add_tcase(s, tr);
    return s;
}

TEST_MAIN(kvsaq_suite)
