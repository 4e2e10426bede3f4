/*
 * test_kvquant.c - the batched KV-cache quantizers (src/quant/quant_rtn.h) and the executor's
 * KV kernels built on them, bit for bit against mpq_quant_rtn_minmax applied group by group:
 * on the real K / V activations of every block of stories260K and sotu-2.7M (keys after RoPE,
 * KIVI per-channel groups over G tokens and per-token groups of G channels, bits 1..8 and 16,
 * several G including partial groups), and on hostile groups (equal values, +0 / -0 in every
 * order, huge and tiny ranges, values beyond the fp16 range, subnormals, NaN and +-inf).
 * Equality is memcmp of the float bits: no tolerance, the batched form must perform the same
 * IEEE operations in the same order per element.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec_kernels.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "quant/quant_rtn.h"
#include "test_main.h"
#include "test_util.h"

#define EVAL_TOK "data/tinystories-eval.tok512.u16"

/* ---- references: mpq_quant_rtn_minmax one group at a time, as the executor did before ---- */

static void ref_lanes(float *x, size_t n_lanes, size_t n, size_t stride, int bits) {
    for (size_t c = 0; c < n_lanes; c++) mpq_quant_rtn_minmax(x + c, n, stride, bits);
}

static void ref_groups(float *x, size_t n_groups, size_t n, int bits) {
    for (size_t g = 0; g < n_groups; g++) mpq_quant_rtn_minmax(x + g * n, n, 1, bits);
}

/* kv_quantize_forward's groups, one mpq_quant_rtn_minmax call each */
static void ref_kv_quantize(float *dst, const float *src, int B, int T, int kvd, int bits, bool key,
                            const mpq_kv_scheme *s) {
    memcpy(dst, src, (size_t)B * T * kvd * sizeof(float));
    const int G = s->group_size;
    if (key && s->mode == MPQ_KV_KIVI) {
        for (int b = 0; b < B; b++)
            for (int g0 = 0; g0 + G <= T; g0 += G)
                ref_lanes(dst + ((size_t)b * T + g0) * kvd, (size_t)kvd, (size_t)G, (size_t)kvd, bits);
    } else {
        for (size_t r = 0; r < (size_t)B * T; r++)
            for (int c0 = 0; c0 < kvd; c0 += G)
                mpq_quant_rtn_minmax(dst + r * kvd + c0, (size_t)(kvd - c0 < G ? kvd - c0 : G), 1, bits);
    }
}

/* index of the first differing float, or -1 */
static long first_diff(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof(float)) != 0) return (long)i;
    return -1;
}

/* ---- real activations: K (after RoPE) and V of every block ---------------------------------- */

typedef struct {
    const mpq_model *m;
    float *ln1;   /* (n_layers, N, dim): the input of each block's K/V projections */
    int n_rows;   /* N */
    int n_seen;
} capture_ctx;

static void capture_kv_input(void *user, int linear_index, const float *x, int64_t rows, int64_t cols) {
    capture_ctx *c = user;
    const mpq_layer_info *li = mpq_model_linear(c->m, linear_index);
    if (li->kind != MPQ_LAYER_ATTN_K) return;
    ck_assert_int_eq(rows, c->n_rows);
    memcpy(c->ln1 + (size_t)li->block * rows * cols, x, (size_t)(rows * cols) * sizeof(float));
    c->n_seen++;
}

/* K and V (n_layers, B, T, kv_dim) of the model on B x T real tokens: the captured block
 * inputs times wk / wv (plus biases), keys rotated by RoPE as the executor does (llama2.c
 * tables: angle pos / theta^(2i/hd), computed here in double then rounded). */
static void real_kv(const char *rel, int B, int T, mpq_model **mo, float **ko, float **vo) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(rel), &m, &err) == MPQ_OK, "%s: %s", rel, err.msg);
    const mpq_model_config *c = mpq_model_get_config(m);
    const mpq_weights *w = mpq_model_get_weights(m);
    const int N = B * T, L = c->n_layers, dim = c->dim, hd = c->head_dim, kvd = c->n_kv_heads * hd;
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(EVAL_TOK), &nb);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_ge(nb / 2, (size_t)N);
    int *tok = malloc((size_t)N * sizeof *tok);
    capture_ctx cc = {.m = m, .ln1 = malloc((size_t)L * N * dim * sizeof(float)), .n_rows = N};
    float *k = malloc((size_t)L * N * kvd * sizeof(float)), *v = malloc((size_t)L * N * kvd * sizeof(float));
    float *cs = malloc((size_t)T * (hd / 2) * sizeof(float)), *sn = malloc((size_t)T * (hd / 2) * sizeof(float));
    ck_assert(tok && cc.ln1 && k && v && cs && sn);
    for (int i = 0; i < N; i++) tok[i] = (raw[2 * i] | (raw[2 * i + 1] << 8)) % c->vocab_size;
    free(raw);
    mpq_exec *ex = NULL;
    ck_assert(mpq_exec_create_forward(m, B, T, &ex, &err) == MPQ_OK);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.capture = capture_kv_input;
    o.capture_user = &cc;
    ck_assert_msg(mpq_exec_forward(ex, w, &o, tok, B, T, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(cc.n_seen, L);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < hd / 2; i++) {
            double a = t / pow((double)c->rope_theta, 2.0 * i / hd);
            cs[(size_t)t * (hd / 2) + i] = (float)cos(a);
            sn[(size_t)t * (hd / 2) + i] = (float)sin(a);
        }
    for (int l = 0; l < L; l++) {
        const float *x = cc.ln1 + (size_t)l * N * dim;
        float *kl = k + (size_t)l * N * kvd, *vl = v + (size_t)l * N * kvd;
        matmul_forward(kl, x, w->blocks[l].wk, w->blocks[l].bk, N, dim, kvd);
        matmul_forward(vl, x, w->blocks[l].wv, w->blocks[l].bv, N, dim, kvd);
        rope_forward(kl, cs, sn, B, T, c->n_kv_heads, hd);
    }
    mpq_exec_free(ex);
    free(tok);
    free(cc.ln1);
    free(cs);
    free(sn);
    *mo = m;
    *ko = k;
    *vo = v;
}

/* Every bit width and several G on the K / V of every block: the batched quantizers against
 * mpq_quant_rtn_minmax group by group, and kv_quantize_forward / kv_quantize_heads_forward
 * against the same loops the executor ran before. */
static void check_model(const char *rel) {
    const int B = 2, T = 128;
    mpq_model *m = NULL;
    float *k = NULL, *v = NULL;
    real_kv(rel, B, T, &m, &k, &v);
    const mpq_model_config *c = mpq_model_get_config(m);
    const int N = B * T, hd = c->head_dim, H = c->n_kv_heads, kvd = H * hd;
    const size_t n = (size_t)N * kvd;
    float *a = malloc(n * sizeof(float)), *r = malloc(n * sizeof(float));
    mpq_kv_pair *pairs = malloc((size_t)H * sizeof *pairs);
    ck_assert(a && r && pairs);
    const int bits_list[] = {1, 2, 3, 4, 5, 8, 16};
    const int g_list[] = {8, 13, 16, 32, 64};
    long checked = 0;
    for (int l = 0; l < c->n_layers; l++)
        for (int kv = 0; kv < 2; kv++) {
            const float *src = (kv == 0 ? k : v) + (size_t)l * n;
            for (size_t bi = 0; bi < sizeof bits_list / sizeof *bits_list; bi++) {
                const int bits = bits_list[bi];
                for (size_t gi = 0; gi < sizeof g_list / sizeof *g_list; gi++) {
                    const int G = g_list[gi];
                    /* per-channel groups of G tokens: all kvd channels side by side, and one
                     * head's channels (lanes starting inside the row) */
                    memcpy(a, src, n * sizeof(float));
                    memcpy(r, src, n * sizeof(float));
                    for (int g0 = 0; g0 + G <= N; g0 += G) {
                        mpq_quant_rtn_minmax_lanes(a + (size_t)g0 * kvd, a + (size_t)g0 * kvd, (size_t)kvd, (size_t)G, (size_t)kvd, bits);
                        ref_lanes(r + (size_t)g0 * kvd, (size_t)kvd, (size_t)G, (size_t)kvd, bits);
                    }
                    long d = first_diff(a, r, n);
                    ck_assert_msg(d < 0, "%s block %d %s lanes bits %d G %d: element %ld %a vs %a", rel, l,
                                  kv ? "V" : "K", bits, G, d, d < 0 ? 0.0 : a[d], d < 0 ? 0.0 : r[d]);
                    memcpy(a, src, n * sizeof(float));
                    memcpy(r, src, n * sizeof(float));
                    for (int g0 = 0; g0 + G <= N; g0 += G) {
                        float *pa = a + (size_t)g0 * kvd + hd, *pr = r + (size_t)g0 * kvd + hd;
                        mpq_quant_rtn_minmax_lanes(pa, pa, (size_t)(kvd - hd), (size_t)G, (size_t)kvd, bits);
                        ref_lanes(pr, (size_t)(kvd - hd), (size_t)G, (size_t)kvd, bits);
                    }
                    ck_assert_msg(first_diff(a, r, n) < 0, "%s block %d lanes from head 1, bits %d G %d", rel, l, bits, G);
                    /* contiguous groups of G (G = 13 leaves a partial group at the end) */
                    memcpy(a, src, n * sizeof(float));
                    memcpy(r, src, n * sizeof(float));
                    mpq_quant_rtn_minmax_groups(a, a, n / (size_t)G, (size_t)G, bits);
                    ref_groups(r, n / (size_t)G, (size_t)G, bits);
                    mpq_quant_rtn_minmax_groups(a + n / G * G, a + n / G * G, 1, n % (size_t)G, bits);
                    mpq_quant_rtn_minmax(r + n / G * G, n % (size_t)G, 1, bits);
                    d = first_diff(a, r, n);
                    ck_assert_msg(d < 0, "%s block %d %s groups bits %d G %d: element %ld", rel, l, kv ? "V" : "K",
                                  bits, G, d);
                    /* the executor's kernels, KIVI keys and per-token values / keys */
                    mpq_kv_scheme s = mpq_kv_scheme_default();
                    s.mode = MPQ_KV_KIVI;
                    s.group_size = G;
                    for (int key = 0; key < 2; key++) {
                        kv_quantize_forward(a, src, B, T, kvd, bits, key, &s);
                        ref_kv_quantize(r, src, B, T, kvd, bits, key, &s);
                        ck_assert_msg(first_diff(a, r, n) < 0, "%s block %d kv_quantize_forward key %d bits %d G %d",
                                      rel, l, key, bits, G);
                        if (hd % G == 0 && bits < 16) { /* every head at `bits`: the per-block result */
                            for (int h = 0; h < H; h++) pairs[h] = (mpq_kv_pair){bits, bits};
                            ck_assert(kv_quantize_heads_forward(a, src, B, T, H, hd, pairs, key, &s));
                            ck_assert_msg(first_diff(a, r, n) < 0, "%s block %d heads key %d bits %d G %d", rel, l,
                                          key, bits, G);
                        }
                    }
                    s.mode = MPQ_KV_PER_TOKEN;
                    kv_quantize_forward(a, src, B, T, kvd, bits, true, &s);
                    ref_kv_quantize(r, src, B, T, kvd, bits, true, &s);
                    ck_assert_msg(first_diff(a, r, n) < 0, "%s block %d per-token keys bits %d G %d", rel, l, bits, G);
                    checked += 6;
                }
            }
        }
    /* the data are not degenerate: quantization at 4 bits moved most elements */
    memcpy(a, k, n * sizeof(float));
    mpq_quant_rtn_minmax_groups(a, a, n / 32, 32, 4);
    size_t moved = 0;
    for (size_t i = 0; i < n; i++) moved += a[i] != k[i];
    ck_assert_msg(moved > n / 2, "%s: only %zu of %zu elements changed at 4 bits", rel, moved, n);
    ck_assert_int_gt(checked, 0);
    free(a);
    free(r);
    free(pairs);
    free(k);
    free(v);
    mpq_model_free(m);
}

START_TEST(test_real_stories) { check_model("models/stories260K/stories260K.bin"); }
END_TEST

START_TEST(test_real_sotu) { check_model("models/sotu-2.7M/sotu-2.7M.bin"); }
END_TEST

/* ---- hostile groups ---------------------------------------------------------------------- */

/* Fills group values from a pattern id; n elements. */
static void hostile_fill(float *x, size_t n, int pat, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) {
        *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
        const float u = (float)((*rng >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f; /* [-1, 1) */
        const int r4 = (int)((*rng >> 20) & 3);
        float y;
        switch (pat) {
        case 0: y = 1.25f; break;                                     /* all equal */
        case 1: y = r4 & 1 ? -0.0f : 0.0f; break;                     /* +0 / -0 mixed */
        case 2: y = i == 0 ? -0.0f : 0.0f; break;                     /* -0 first */
        case 3: y = i == n - 1 ? -0.0f : 0.0f; break;                 /* -0 last */
        case 4: y = r4 == 0 ? -0.0f : r4 == 1 ? 0.0f : u; break;      /* zeros among values */
        case 5: y = u * 3.0e38f; break;                               /* huge range */
        case 6: y = i % 2 ? FLT_MAX : -FLT_MAX; break;
        case 7: y = u * 1e-40f; break;                                /* subnormal */
        case 8: y = -70000.0f + u; break;                             /* below the fp16 range */
        case 9: y = 70000.0f + u * 10.0f; break;                      /* above it */
        case 10: y = i == 0 ? NAN : u; break;                         /* NaN first */
        case 11: y = i == n / 2 ? NAN : u; break;                     /* NaN inside */
        case 12: y = i == 1 ? INFINITY : u; break;
        case 13: y = i == 2 ? -INFINITY : u; break;
        case 14: y = r4 == 0 ? NAN : r4 == 1 ? INFINITY : r4 == 2 ? -INFINITY : u; break;
        case 15: y = 1000.0f + u * 1e-3f; break;                      /* tiny range, large offset */
        case 16: y = u * 65504.0f; break;                             /* the full fp16 range */
        case 17: y = r4 == 0 ? 0.0f : -u * u; break;                  /* max exactly 0 */
        case 18: y = r4 == 0 ? -0.0f : r4 == 1 ? 0.0f : u * u + 0.5f; break; /* min a zero, +0 and -0 mixed */
        default: y = u; break;
        }
        x[i] = y;
    }
}

#define N_PAT 20

START_TEST(test_hostile) {
    uint64_t rng = 88172645463325252ull;
    const size_t lane_counts[] = {1, 7, 8, 9, 300}; /* below / at / above the vector width, several chunks */
    const size_t lens[] = {1, 2, 7, 8, 9, 32, 33};
    long checked = 0;
    for (int bits = 1; bits <= 16; bits += (bits < 4 ? 1 : 4)) /* 1 2 3 4 8 12 16 */
        for (int pat = 0; pat < N_PAT; pat++)
            for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
                const size_t n = lens[li];
                for (size_t ci = 0; ci < sizeof lane_counts / sizeof *lane_counts; ci++) {
                    const size_t L = lane_counts[ci], stride = L + 3, tot = n * stride;
                    float *a = malloc(tot * sizeof(float)), *r = malloc(tot * sizeof(float));
                    ck_assert(a && r);
                    /* each lane its own group: a column of the pattern */
                    float *col = malloc(n * sizeof(float));
                    ck_assert_ptr_nonnull(col);
                    for (size_t c = 0; c < stride; c++) {
                        hostile_fill(col, n, c < L ? pat : N_PAT, &rng);
                        for (size_t i = 0; i < n; i++) a[i * stride + c] = col[i];
                    }
                    free(col);
                    memcpy(r, a, tot * sizeof(float));
                    /* out of place into o (the other elements of o hold the source too), then in place */
                    float *o = malloc(tot * sizeof(float));
                    ck_assert_ptr_nonnull(o);
                    memcpy(o, a, tot * sizeof(float));
                    for (size_t i = 0; i < n; i++) memset(o + i * stride, 0xff, L * sizeof(float));
                    mpq_quant_rtn_minmax_lanes(o, a, L, n, stride, bits);
                    mpq_quant_rtn_minmax_lanes(a, a, L, n, stride, bits);
                    ref_lanes(r, L, n, stride, bits);
                    long d = first_diff(a, r, tot);
                    ck_assert_msg(d < 0, "lanes pattern %d bits %d n %zu lanes %zu: element %ld %a vs %a", pat, bits, n,
                                  L, d, d < 0 ? 0.0 : a[d], d < 0 ? 0.0 : r[d]);
                    ck_assert_msg(first_diff(o, r, tot) < 0, "lanes out of place, pattern %d bits %d n %zu lanes %zu",
                                  pat, bits, n, L);
                    free(o);
                    /* contiguous groups: L groups of n */
                    float *g = malloc(L * n * sizeof(float)), *gr = malloc(L * n * sizeof(float));
                    ck_assert(g && gr);
                    for (size_t j = 0; j < L; j++) hostile_fill(g + j * n, n, pat, &rng);
                    memcpy(gr, g, L * n * sizeof(float));
                    float *go = malloc(L * n * sizeof(float));
                    ck_assert_ptr_nonnull(go);
                    memset(go, 0xff, L * n * sizeof(float));
                    mpq_quant_rtn_minmax_groups(go, g, L, n, bits);
                    mpq_quant_rtn_minmax_groups(g, g, L, n, bits);
                    ref_groups(gr, L, n, bits);
                    d = first_diff(g, gr, L * n);
                    ck_assert_msg(d < 0, "groups pattern %d bits %d n %zu: element %ld %a vs %a", pat, bits, n, d,
                                  d < 0 ? 0.0 : g[d], d < 0 ? 0.0 : gr[d]);
                    ck_assert_msg(first_diff(go, gr, L * n) < 0, "groups out of place, pattern %d bits %d n %zu", pat,
                                  bits, n);
                    free(go);
                    free(g);
                    free(gr);
                    free(a);
                    free(r);
                    checked++;
                }
            }
    ck_assert_int_gt(checked, 0);
    /* the cases that decide the sign of a zero: an all-zero group dequantizes to its first
     * element's zero (+0 first: +0, -0 first: -0) in both forms */
    float z[16] = {0.0f}, zr[16];
    z[0] = -0.0f;
    memcpy(zr, z, sizeof z);
    mpq_quant_rtn_minmax_groups(z, z, 1, 16, 4);
    mpq_quant_rtn_minmax(zr, 16, 1, 4);
    ck_assert(signbit(zr[5]) && signbit(z[5]));
    /* no-op cases */
    float one[3] = {1.0f, 2.0f, 3.0f};
    mpq_quant_rtn_minmax_groups(one, one, 1, 3, 16);
    mpq_quant_rtn_minmax_lanes(one, one, 3, 1, 3, 16);
    mpq_quant_rtn_minmax_groups(NULL, one, 1, 3, 4);
    mpq_quant_rtn_minmax_lanes(one, NULL, 3, 1, 3, 4);
    mpq_quant_rtn_minmax_groups(one, one, 1, 0, 4);
    ck_assert(one[0] == 1.0f && one[1] == 2.0f && one[2] == 3.0f);
    float cp[3] = {0.0f}; /* 16 bits out of place: a copy */
    mpq_quant_rtn_minmax_groups(cp, one, 1, 3, 16);
    ck_assert(memcmp(cp, one, sizeof cp) == 0);
}
END_TEST

static Suite *kvquant_suite(void) {
    Suite *s = suite_create("kvquant");
    TCase *tc = tcase_create("kvquant");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_hostile);
    tcase_add_test(tc, test_real_stories);
    tcase_add_test(tc, test_real_sotu);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kvquant_suite)
