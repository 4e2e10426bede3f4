/* test_calib.c - unit tests of the calibration metrics (src/calib, mpq_calib.h) on the real
 * shared models (stories260K on TinyStories calibration text; a few checks on sotu-2.7M on its
 * calibration text): X^T X against a direct recomputation from captured activations, weight
 * errors against direct computation, act_err against the mean squared output error
 * ||X E^T||^2 / n_tokens, monotonicity over bit widths, prefix reuse against naive evaluation,
 * determinism (A, B, A), dloss against a full evaluation, KV sensitivities and kv_attn_rel
 * against a direct capture, and argument checks. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "shared_fixture.h"
#include "test_util.h"

#define M260 "models/stories260K/stories260K.bin"
#define MSOTU "models/sotu-2.7M/sotu-2.7M.bin"
#define TOK260 "data/tinystories-calib.tok512.u16"
#define TOKSOTU "data/sotu-calib.tok2048.u16"

/* ---- helpers ---- */

static mpq_candidate cand(const char *name) {
    mpq_candidate c;
    mpq_err err = {0};
    ck_assert_msg(mpq_candidate_parse(name, &c, &err) == MPQ_OK, "%s", err.msg);
    return c;
}

/* Captures the input X (N, cols) of linear layer `target` over all sequences with the FP
 * weights w and KV pairs (NULL = FP), in batches of B (the same batching as mpq_calib). */
typedef struct cap {
    int target;
    float *x;
    int64_t fill, cols;
} cap;

static void cap_fn(void *user, int idx, const float *x, int64_t rows, int64_t cols) {
    cap *c = user;
    if (idx != c->target) return;
    c->cols = cols;
    memcpy(c->x + c->fill, x, (size_t)(rows * cols) * sizeof(float));
    c->fill += rows * cols;
}

static float *capture_input(const mpq_model *m, const mpq_weights *w, const mpq_kv_pair *pairs, const int *tok,
                            int n_seqs, int T, int B, int target) {
    const mpq_layer_info *li = mpq_model_linear(m, target);
    mpq_exec *ex = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_exec_create(m, B, T, &ex, &err), MPQ_OK);
    cap c = {target, malloc((size_t)n_seqs * T * li->cols * sizeof(float)), 0, 0};
    ck_assert_ptr_nonnull(c.x);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.capture = cap_fn;
    o.capture_user = &c;
    if (pairs) {
        o.kv_pairs = pairs;
        o.n_kv_pairs = mpq_model_get_config(m)->n_layers;
    }
    mpq_eval_stats st = {0};
    for (int s0 = 0; s0 < n_seqs; s0 += B) {
        int nb = n_seqs - s0 < B ? n_seqs - s0 : B;
        ck_assert_int_eq(mpq_exec_eval(ex, w, &o, tok + (size_t)s0 * (T + 1), nb, T, NULL, &st, &err), MPQ_OK);
    }
    ck_assert_int_eq(c.fill, (int64_t)n_seqs * T * li->cols);
    mpq_exec_free(ex);
    return c.x;
}

/* Spearman rank correlation (average ranks for ties). */
static void ranks(const double *v, double *r, int n) {
    for (int i = 0; i < n; i++) {
        int less = 0, eq = 0;
        for (int j = 0; j < n; j++) {
            if (v[j] < v[i]) less++;
            else if (v[j] == v[i]) eq++;
        }
        r[i] = less + (eq + 1) / 2.0;
    }
}

static double spearman(const double *a, const double *b, int n) {
    double *ra = calloc((size_t)n, sizeof(double)), *rb = calloc((size_t)n, sizeof(double));
    ck_assert(ra && rb);
    ranks(a, ra, n);
    ranks(b, rb, n);
    double ma = 0, mb = 0;
    for (int i = 0; i < n; i++) ma += ra[i], mb += rb[i];
    ma /= n;
    mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - ma) * (rb[i] - mb);
        saa += (ra[i] - ma) * (ra[i] - ma);
        sbb += (rb[i] - mb) * (rb[i] - mb);
    }
    free(ra);
    free(rb);
    return sab / sqrt(saa * sbb);
}

static void results_equal(const mpq_calib_result *a, const mpq_calib_result *b, const char *what) {
    ck_assert_msg(a->kl == b->kl && a->kl_se == b->kl_se && a->dloss == b->dloss && a->dloss_se == b->dloss_se &&
                      a->top1 == b->top1 && a->top1_se == b->top1_se && a->n_tokens == b->n_tokens &&
                      a->n_seqs == b->n_seqs && ((isnan(a->attn_rel) && isnan(b->attn_rel)) || a->attn_rel == b->attn_rel),
                  "%s: kl %.17g vs %.17g, dloss %.17g vs %.17g, top1 %.17g vs %.17g, attn %.17g vs %.17g", what, a->kl,
                  b->kl, a->dloss, b->dloss, a->top1, b->top1, a->attn_rel, b->attn_rel);
}

/* ---- stories260K fixture: 8 sequences x 64 tokens, batch 4 (two batches) ---- */

#define NS 8
#define TT 64
#define BB 4

static mpq_model *g_m;
static int *g_tok;
static mpq_calib *g_cal;

static void setup260(void) {
    g_m = test_load_model(M260);
    g_tok = test_read_windows(TOK260, NS, TT);
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = BB;
    mpq_err err = {0};
    mpq_status st = mpq_calib_create(g_m, g_tok, NS, TT, &o, &g_cal, &err);
    ck_assert_msg(st == MPQ_OK, "create: %s", err.msg);
}

static void teardown260(void) {
    mpq_calib_free(g_cal);
    free(g_tok);
    mpq_model_free(g_m);
}

START_TEST(test_ref_ce) {
    /* reference CE of stories260K on real TinyStories text: ppl ~4.4 on 512-token windows; on
     * 64-token windows (less context) it is higher but must stay a sane language-model value */
    double ce = mpq_calib_ref_ce(g_cal);
    ck_assert_msg(ce > 1.0 && ce < 2.5, "ref ce %g", ce);
    ck_assert_int_eq(mpq_calib_n_tokens(g_cal), NS * TT);
    ck_assert_int_eq(mpq_calib_n_seqs(g_cal), NS);
    ck_assert_int_eq(mpq_calib_T(g_cal), TT);
}
END_TEST

START_TEST(test_xtx_direct) {
    /* X^T X / N of every distinct input of every block vs a naive double recomputation from the
     * captured X. Both sum the same float products in double (N*cols terms of magnitude <= |x|^2)
     * in different orders: the relative difference is bounded by ~N*eps_d = 512*1.1e-16 ~ 6e-14
     * of the sum of |terms|; 1e-10 relative to the trace (>= every |entry| by Cauchy-Schwarz on a
     * PSD matrix) is a generous bound. */
    const mpq_weights *w = mpq_model_get_weights(g_m);
    int n_lin = mpq_model_n_linear(g_m);
    for (int i = 0; i < n_lin; i++) {
        const mpq_layer_info *li = mpq_model_linear(g_m, i);
        if (li->kind == MPQ_LAYER_ATTN_K || li->kind == MPQ_LAYER_ATTN_V || li->kind == MPQ_LAYER_FFN_UP) {
            /* shares its input with q / gate: same matrix */
            int64_t c1 = 0, c2 = 0;
            ck_assert_ptr_eq(mpq_calib_xtx_packed(g_cal, i, &c1), mpq_calib_xtx_packed(g_cal, i - (li->kind == MPQ_LAYER_ATTN_V ? 2 : 1), &c2));
            continue;
        }
        float *X = capture_input(g_m, w, NULL, g_tok, NS, TT, BB, i);
        int64_t cols = 0;
        const double *S = mpq_calib_xtx_packed(g_cal, i, &cols);
        ck_assert_ptr_nonnull(S);
        ck_assert_int_eq(cols, li->cols);
        double tr = 0;
        for (int64_t k = 0; k < (int64_t)NS * TT * cols; k++) tr += (double)X[k] * X[k];
        tr /= NS * TT;
        ck_assert_double_eq_tol(mpq_calib_xtx_trace(g_cal, i), tr, 1e-10 * tr);
        /* a few full entries, including off-diagonal ones on both sides */
        int64_t pairs[4][2] = {{0, 0}, {0, cols - 1}, {cols - 1, 0}, {cols / 2, cols / 3}};
        for (int p = 0; p < 4; p++) {
            int64_t a = pairs[p][0], b = pairs[p][1];
            double s = 0;
            for (int64_t r = 0; r < (int64_t)NS * TT; r++) s += (double)X[r * cols + a] * X[r * cols + b];
            s /= NS * TT;
            ck_assert_double_eq_tol(S[mpq_xtx_index(cols, a, b)], s, 1e-10 * tr);
        }
        free(X);
    }
}
END_TEST

START_TEST(test_weight_and_act_error_direct) {
    /* weight_sse vs direct sum of (Q(W)-W)^2 in double (same terms, same order: equal to
     * rounding, tol 1e-12 relative); act_err vs ||X E^T||_F^2 / N from captured X, computed here
     * naively in double: both are exact-product sums of N*rows*cols double terms reordered, so the
     * relative difference is ~ (cols + N) eps_d * cond; 1e-8 relative covers it. */
    const mpq_weights *w = mpq_model_get_weights(g_m);
    const char *names[2] = {"int4g32", "int2g64"};
    int n_lin = mpq_model_n_linear(g_m);
    for (int i = 0; i < n_lin; i++) {
        const mpq_layer_info *li = mpq_model_linear(g_m, i);
        const float *W = mpq_weights_linear(w, li);
        float *X = capture_input(g_m, w, NULL, g_tok, NS, TT, BB, i);
        for (int ci = 0; ci < 2; ci++) {
            mpq_candidate c = cand(names[ci]);
            mpq_calib_weight_stats we;
            mpq_err err = {0};
            ck_assert_int_eq(mpq_calib_weight_error(g_cal, i, &c, &we, &err), MPQ_OK);
            float *Q = malloc((size_t)li->n_params * sizeof(float));
            memcpy(Q, W, (size_t)li->n_params * sizeof(float));
            mpq_quantize_matrix(&c, Q, li->rows, li->cols);
            double sse = 0, wn = 0;
            for (int64_t k = 0; k < li->n_params; k++) {
                double e = (double)Q[k] - (double)W[k];
                sse += e * e;
                wn += (double)W[k] * W[k];
            }
            ck_assert_double_eq_tol(we.sse, sse, 1e-12 * sse);
            ck_assert_double_eq_tol(we.rel, sse / wn, 1e-12 * sse / wn);
            double oe = 0, on = 0;
            for (int64_t r = 0; r < (int64_t)NS * TT; r++) {
                const float *x = X + r * li->cols;
                for (int64_t o = 0; o < li->rows; o++) {
                    double y = 0, yw = 0;
                    for (int64_t k = 0; k < li->cols; k++) {
                        y += ((double)Q[o * li->cols + k] - (double)W[o * li->cols + k]) * x[k];
                        yw += (double)W[o * li->cols + k] * x[k];
                    }
                    oe += y * y;
                    on += yw * yw;
                }
            }
            oe /= NS * TT;
            ck_assert_msg(oe > 0, "%s %s: zero output error", li->name, names[ci]);
            ck_assert_double_eq_tol(we.act_err, oe, 1e-8 * oe);
            ck_assert_double_eq_tol(we.act_rel, oe / (on / (NS * TT)), 1e-8 * oe / (on / (NS * TT)));
            free(Q);
        }
        free(X);
    }
}
END_TEST

START_TEST(test_monotone_and_table) {
    /* int2 > int3 > int4 > int8 (same group size 32): sse and act_err strictly for every layer
     * (a finer grid of the same min/max can only shrink each element's error bound); KL on the
     * sum over layers (per layer it is a noisy measurement: counted and printed). */
    const char *names[4] = {"int2g32", "int3g32", "int4g32", "int8g32"};
    int n_lin = mpq_model_n_linear(g_m);
    double kl_sum[4] = {0};
    int kl_mono = 0, dl_mono = 0;
    int int2_over_int4 = 0;
    double *act = calloc((size_t)n_lin * 4, sizeof(double)), *kls = calloc((size_t)n_lin * 4, sizeof(double));
    ck_assert(act && kls);
    printf("stories260K, %d x %d tokens: per-layer KL (nats/token)\n%-16s %10s %10s %10s %10s %9s\n", NS, TT, "layer",
           "int2g32", "int3g32", "int4g32", "int8g32", "top1@2");
    for (int i = 0; i < n_lin; i++) {
        const mpq_layer_info *li = mpq_model_linear(g_m, i);
        mpq_calib_weight_stats we[4];
        mpq_calib_result r[4];
        for (int ci = 0; ci < 4; ci++) {
            mpq_candidate c = cand(names[ci]);
            mpq_err err = {0};
            ck_assert_int_eq(mpq_calib_weight_error(g_cal, i, &c, &we[ci], &err), MPQ_OK);
            ck_assert_msg(mpq_calib_layer(g_cal, i, &c, &r[ci], &err) == MPQ_OK, "%s", err.msg);
            kl_sum[ci] += r[ci].kl;
            act[i * 4 + ci] = we[ci].act_err;
            kls[i * 4 + ci] = r[ci].kl;
            /* standard errors and ranges */
            ck_assert_msg(r[ci].kl > 0 && r[ci].kl_se > 0, "%s %s kl %g se %g", li->name, names[ci], r[ci].kl, r[ci].kl_se);
            ck_assert_msg(r[ci].dloss_se > 0, "%s %s dloss_se %g", li->name, names[ci], r[ci].dloss_se);
            ck_assert_msg(r[ci].top1 >= 0 && r[ci].top1 <= 1 && r[ci].top1_se >= 0, "top1 %g", r[ci].top1);
            ck_assert_int_eq(r[ci].n_tokens, NS * TT);
            ck_assert_int_eq(r[ci].n_seqs, NS);
            ck_assert(isnan(r[ci].attn_rel));
        }
        for (int ci = 0; ci + 1 < 4; ci++) {
            ck_assert_msg(we[ci].sse > we[ci + 1].sse, "%s: sse %s %g <= %s %g", li->name, names[ci], we[ci].sse,
                          names[ci + 1], we[ci + 1].sse);
            ck_assert_msg(we[ci].act_err > we[ci + 1].act_err, "%s: act_err %s %g <= %s %g", li->name, names[ci],
                          we[ci].act_err, names[ci + 1], we[ci + 1].act_err);
        }
        int2_over_int4 += r[0].kl > r[2].kl;
        kl_mono += r[0].kl > r[1].kl && r[1].kl > r[2].kl && r[2].kl > r[3].kl;
        dl_mono += r[0].dloss > r[1].dloss && r[1].dloss > r[2].dloss && r[2].dloss > r[3].dloss;
        printf("%-16s %10.3e %10.3e %10.3e %10.3e %9.4f\n", li->name, r[0].kl, r[1].kl, r[2].kl, r[3].kl, r[0].top1);
    }
    double rho = spearman(act, kls, n_lin * 4);
    printf("KL monotone int2>int3>int4>int8 in %d/%d layers, dloss monotone in %d/%d; Spearman(act_err, kl) over "
           "%d (layer, candidate) = %.3f\n", kl_mono, n_lin, dl_mono, n_lin, n_lin * 4, rho);
    for (int ci = 0; ci + 1 < 4; ci++)
        ck_assert_msg(kl_sum[ci] > kl_sum[ci + 1], "sum KL %s %g <= %s %g", names[ci], kl_sum[ci], names[ci + 1],
                      kl_sum[ci + 1]);
    /* int2 vs int4 per layer is a 4x coarser grid: expect it to hold nearly everywhere */
    ck_assert_msg(int2_over_int4 == n_lin, "KL int2 > int4 in only %d/%d layers", int2_over_int4, n_lin);
    ck_assert_msg(kl_mono >= n_lin / 2, "KL monotone in only %d/%d layers", kl_mono, n_lin);
    /* the activation-weighted error must carry the ordering information of the measured KL */
    ck_assert_msg(rho > 0.5, "Spearman(act_err, kl) = %g", rho);
    free(act);
    free(kls);
}
END_TEST

START_TEST(test_prefix_reuse_equals_naive) {
    /* prefix reuse restarts at the layer's block from the stored residual, which is bitwise the
     * residual a full forward computes (same weights, same batching): results are identical */
    mpq_calib *naive = NULL;
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = BB;
    o.prefix_reuse = false;
    o.collect_xtx = false;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_calib_create(g_m, g_tok, NS, TT, &o, &naive, &err), MPQ_OK);
    ck_assert_double_eq(mpq_calib_ref_ce(naive), mpq_calib_ref_ce(g_cal));
    ck_assert_double_eq(mpq_calib_xtx_trace(naive, 0), 0.0);
    mpq_candidate c = cand("int3g32");
    int n_lin = mpq_model_n_linear(g_m);
    for (int i = 0; i < n_lin; i++) { /* every kind: q/k/v enter at the block, o at wo, FFN at the FFN */
        mpq_calib_result a, b;
        ck_assert_int_eq(mpq_calib_layer(g_cal, i, &c, &a, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_layer(naive, i, &c, &b, &err), MPQ_OK);
        results_equal(&a, &b, mpq_model_linear(g_m, i)->name);
        /* without xtx the activation-weighted error is NAN, the weight error still defined */
        mpq_calib_weight_stats we;
        ck_assert_int_eq(mpq_calib_weight_error(naive, i, &c, &we, &err), MPQ_OK);
        ck_assert(isnan(we.act_err) && isnan(we.act_rel) && we.sse > 0);
    }
    mpq_kv_pair p = {4, 2};
    for (int b = 0; b < mpq_model_get_config(g_m)->n_layers; b++) {
        mpq_calib_result a, r;
        ck_assert_int_eq(mpq_calib_kv(g_cal, b, p, &a, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_kv(naive, b, p, &r, &err), MPQ_OK);
        results_equal(&a, &r, "kv k4v2");
    }
    mpq_calib_free(naive);
}
END_TEST

START_TEST(test_layer_range) {
    /* windows measured in two ranges of whole batches, continuing one accumulator, give the
     * bits of one mpq_calib_layer call (adaptive layer_sensitivity relies on it); the
     * per-window values are the terms of the per-sequence sums */
    mpq_candidate c = cand("int3g32");
    mpq_err err = {0};
    int n_lin = mpq_model_n_linear(g_m);
    for (int i = 0; i < n_lin; i++) {
        if (i >= 7 && i < n_lin - 7) continue; /* every kind (entry point) in the first and last block */
        const char *name = mpq_model_linear(g_m, i)->name;
        mpq_calib_result full, r1, r2;
        mpq_eval_stats acc;
        memset(&acc, 0, sizeof acc);
        double w[NS];
        ck_assert_int_eq(mpq_calib_layer(g_cal, i, &c, &full, &err), MPQ_OK);
        ck_assert_msg(mpq_calib_layer_range(g_cal, i, &c, 0, BB, &acc, w, &r1, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_int_eq(r1.n_seqs, BB);
        ck_assert_msg(mpq_calib_layer_range(g_cal, i, &c, BB, NS, &acc, w + BB, &r2, &err) == MPQ_OK, "%s", err.msg);
        results_equal(&full, &r2, name);
        /* kl = (sum over positions) / tokens; the mean of per-window means is the same number
         * summed in another order: equal up to double rounding, a few ulps of sums of NS*TT
         * positive terms (1e-12 relative is ~4500 ulps, far above that, far below any error) */
        double m1 = 0, m = 0;
        for (int k = 0; k < BB; k++) m1 += w[k] / BB;
        for (int k = 0; k < NS; k++) m += w[k] / NS;
        ck_assert_double_eq_tol(m1, r1.kl, 1e-12 * r1.kl);
        ck_assert_double_eq_tol(m, full.kl, 1e-12 * full.kl);
        for (int k = 0; k < NS; k++) ck_assert_msg(w[k] >= 0 && isfinite(w[k]), "%s window %d: %g", name, k, w[k]);
    }
    /* ranges that are not whole batches, empty or past the end */
    mpq_calib_result r;
    mpq_eval_stats acc;
    memset(&acc, 0, sizeof acc);
    ck_assert_int_eq(mpq_calib_layer_range(g_cal, 0, &c, 1, BB, &acc, NULL, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_layer_range(g_cal, 0, &c, 0, BB + 1, &acc, NULL, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_layer_range(g_cal, 0, &c, 0, 0, &acc, NULL, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_layer_range(g_cal, 0, &c, BB, NS + BB, &acc, NULL, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_layer_range(g_cal, 0, &c, 0, BB, NULL, NULL, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(acc.n_seqs, 0); /* refused calls leave the accumulator alone */
}
END_TEST

START_TEST(test_exec_entry_points) {
    /* mpq_exec_forward_from_entry / mpq_exec_eval_ref_entry against a full forward, bitwise,
     * on stories260K with blk.2.attn_o (entry ATTN_O) and blk.3.ffn_gate (entry FFN) quantized;
     * entering later than allowed (FFN entry with wo of that block quantized) must differ */
    mpq_err err = {0};
    const int L = mpq_model_get_config(g_m)->n_layers;
    const int64_t dim = mpq_model_get_config(g_m)->dim, V = mpq_model_get_config(g_m)->vocab_size;
    const size_t nlog = (size_t)BB * TT * (size_t)V;
    mpq_exec *ex = NULL;
    ck_assert_int_eq(mpq_exec_create(g_m, BB, TT, &ex, &err), MPQ_OK);
    const mpq_weights *w = mpq_model_get_weights(g_m);
    mpq_exec_ref *ref = NULL;
    ck_assert_int_eq(mpq_exec_ref_build(ex, w, NULL, g_tok, NS, TT, true, &ref, &err), MPQ_OK);
    struct {
        const char *layer;
        int block;
        mpq_exec_entry entry;
    } cases[] = {{"blk.2.attn_o", 2, MPQ_EXEC_ENTRY_ATTN_O}, {"blk.3.ffn_gate", 3, MPQ_EXEC_ENTRY_FFN}};
    mpq_candidate c = cand("int2g32");
    int *in = malloc((size_t)BB * TT * sizeof(int));
    float *full = malloc(nlog * sizeof(float)), *res = malloc((size_t)BB * TT * (size_t)dim * sizeof(float));
    ck_assert(in && full && res);
    for (int s = 0; s < BB; s++) memcpy(in + (size_t)s * TT, g_tok + (size_t)s * (TT + 1), TT * sizeof(int));
    for (int k = 0; k < 2; k++) {
        mpq_weights *q = NULL;
        ck_assert_int_eq(mpq_weights_clone(g_m, &q, &err), MPQ_OK);
        const mpq_layer_info *li = mpq_model_linear(g_m, mpq_model_find_linear(g_m, cases[k].layer));
        mpq_quantize_matrix(&c, mpq_weights_linear(q, li), li->rows, li->cols);
        /* full forward of the first batch */
        ck_assert_int_eq(mpq_exec_forward(ex, q, NULL, in, BB, TT, &err), MPQ_OK);
        memcpy(full, mpq_exec_logits(ex), nlog * sizeof(float));
        /* ATTN_O entry, direct: residual entering the block (from a FP forward of the same batch)
         * and the stored FP attention output (first batch = sequences 0..BB-1) give the full
         * forward's logits bitwise; the FFN entry is checked through the evaluation below */
        const float *a_in = mpq_exec_ref_attn_out(ref, cases[k].block);
        ck_assert_ptr_nonnull(a_in);
        if (cases[k].entry == MPQ_EXEC_ENTRY_ATTN_O) {
            ck_assert_int_eq(mpq_exec_forward(ex, w, NULL, in, BB, TT, &err), MPQ_OK);
            memcpy(res, mpq_exec_block_input(ex, cases[k].block), (size_t)BB * TT * dim * sizeof(float));
            ck_assert_int_eq(mpq_exec_forward_from_entry(ex, q, NULL, cases[k].block, cases[k].entry, res, a_in, BB,
                                                         TT, &err),
                             MPQ_OK);
            ck_assert_msg(memcmp(full, mpq_exec_logits(ex), nlog * sizeof(float)) == 0, "%s: logits differ",
                          cases[k].layer);
        }
        /* whole evaluation: entry vs block 0, bitwise */
        mpq_eval_stats s0 = {0}, s1 = {0};
        ck_assert_int_eq(mpq_exec_eval_ref(ex, q, NULL, ref, 0, &s0, &err), MPQ_OK);
        ck_assert_int_eq(mpq_exec_eval_ref_entry(ex, q, NULL, ref, cases[k].block, cases[k].entry, &s1, &err),
                         MPQ_OK);
        ck_assert_msg(s0.kl_sum == s1.kl_sum && s0.nll_sum == s1.nll_sum && s0.top1_same == s1.top1_same &&
                          s0.dnll_sum == s1.dnll_sum,
                      "%s: kl %.17g vs %.17g", cases[k].layer, s0.kl_sum, s1.kl_sum);
        ck_assert_msg(s0.kl_sum > 0, "%s int2: KL > 0", cases[k].layer);
        if (cases[k].entry == MPQ_EXEC_ENTRY_ATTN_O) {
            /* entering at the FFN skips the quantized wo: the result is the FP one (KL 0) */
            mpq_eval_stats s2 = {0};
            ck_assert_int_eq(mpq_exec_eval_ref_entry(ex, q, NULL, ref, cases[k].block, MPQ_EXEC_ENTRY_FFN, &s2, &err),
                             MPQ_OK);
            ck_assert_double_eq(s2.kl_sum, 0.0);
        }
        mpq_weights_free(q);
    }
    /* argument checks */
    mpq_eval_stats st = {0};
    ck_assert_int_eq(mpq_exec_eval_ref_entry(ex, w, NULL, ref, L, MPQ_EXEC_ENTRY_FFN, &st, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_exec_eval_ref_entry(ex, w, NULL, ref, -1, MPQ_EXEC_ENTRY_BLOCK, &st, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_exec_eval_ref_entry(ex, w, NULL, ref, 1, (mpq_exec_entry)7, &st, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "entry 7"));
    ck_assert_int_eq(mpq_exec_forward_from_entry(ex, w, NULL, 1, MPQ_EXEC_ENTRY_ATTN_O, res, NULL, BB, TT, &err),
                     MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_exec_forward_from_entry(ex, w, NULL, L, MPQ_EXEC_ENTRY_FFN, res, NULL, BB, TT, &err),
                     MPQ_ERR_INVALID);
    ck_assert_ptr_null(mpq_exec_ref_attn_out(ref, L));
    ck_assert_ptr_null(mpq_exec_ref_attn_out(NULL, 0));
    /* a reference without residuals: entries other than block 0 are refused, attn_out NULL */
    mpq_exec_ref *bare = NULL;
    ck_assert_int_eq(mpq_exec_ref_build(ex, w, NULL, g_tok, BB, TT, false, &bare, &err), MPQ_OK);
    ck_assert_ptr_null(mpq_exec_ref_attn_out(bare, 0));
    ck_assert_int_eq(mpq_exec_eval_ref_entry(ex, w, NULL, bare, 0, MPQ_EXEC_ENTRY_FFN, &st, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_exec_eval_ref_entry(ex, w, NULL, bare, 0, MPQ_EXEC_ENTRY_BLOCK, &st, &err), MPQ_OK);
    ck_assert_double_eq(st.kl_sum, 0.0); /* FP against itself */
    ck_assert_double_eq(st.top1, 1.0);
    mpq_exec_ref_free(bare);
    free(in);
    free(full);
    free(res);
    mpq_exec_ref_free(ref);
    mpq_exec_free(ex);
}
END_TEST

START_TEST(test_determinism_aba) {
    /* A, then B (same block and another block), then A again: bitwise equal (the layer's slot
     * in the weight table points at the model's tensor again); f32 leaves the model unchanged:
     * KL exactly 0 */
    mpq_err err = {0};
    mpq_candidate c2 = cand("int2g32"), c4 = cand("int4g64s"), f32 = cand("f32");
    int A = mpq_model_find_linear(g_m, "blk.2.ffn_down"), B1 = mpq_model_find_linear(g_m, "blk.2.ffn_up"),
        B2 = mpq_model_find_linear(g_m, "blk.0.attn_q");
    ck_assert(A >= 0 && B1 >= 0 && B2 >= 0);
    mpq_calib_result a1, b, a2, z;
    ck_assert_int_eq(mpq_calib_layer(g_cal, A, &c2, &a1, &err), MPQ_OK);
    ck_assert_int_eq(mpq_calib_layer(g_cal, B1, &c2, &b, &err), MPQ_OK);
    ck_assert_int_eq(mpq_calib_layer(g_cal, B2, &c4, &b, &err), MPQ_OK);
    mpq_kv_pair p = {2, 2};
    ck_assert_int_eq(mpq_calib_kv(g_cal, 2, p, &b, &err), MPQ_OK);
    ck_assert_int_eq(mpq_calib_layer(g_cal, A, &c2, &a2, &err), MPQ_OK);
    results_equal(&a1, &a2, "A B A");
    ck_assert_int_eq(mpq_calib_layer(g_cal, A, &f32, &z, &err), MPQ_OK);
    ck_assert_double_eq(z.kl, 0.0);
    ck_assert_double_eq(z.dloss, 0.0);
    ck_assert_double_eq(z.top1, 1.0);
    /* the model itself is untouched: the weight error of f32 is 0 */
    mpq_calib_weight_stats we;
    ck_assert_int_eq(mpq_calib_weight_error(g_cal, A, &f32, &we, &err), MPQ_OK);
    ck_assert_double_eq(we.sse, 0.0);
    ck_assert_double_eq(we.act_err, 0.0);
}
END_TEST

/* Worker state for test_fork_threads: unit i = linear layer i on calib[worker]. */
typedef struct fork_run {
    mpq_calib *cals[2];
    mpq_candidate c;
    mpq_calib_result *res;
} fork_run;

static mpq_status fork_unit(void *user, int worker, int batch, mpq_err *err) {
    fork_run *f = user;
    return mpq_calib_layer(f->cals[worker], batch, &f->c, &f->res[batch], err);
}

static mpq_status fork_nop(void *user, int worker, int batch, mpq_err *err) {
    (void)user, (void)worker, (void)batch, (void)err;
    return MPQ_OK;
}

/* A fork borrows the model's weights (no clone) and substitutes only the layer it quantizes:
 * every layer unit and a KV unit on the fork, in reverse order, are bitwise those of the
 * parent in forward order; the parent and the fork running units at the same time on two
 * threads give the same bits again; and the model's weights are byte for byte unchanged. */
START_TEST(test_fork_shares_weights) {
    mpq_err err = {0};
    mpq_weights *before = NULL;
    ck_assert_int_eq(mpq_weights_clone(g_m, &before, &err), MPQ_OK);
    fork_run f = {.c = cand("int2g32")};
    f.cals[0] = g_cal;
    ck_assert_msg(mpq_calib_fork(g_cal, &f.cals[1], &err) == MPQ_OK, "%s", err.msg);
    const int n = mpq_model_n_linear(g_m);
    mpq_calib_result *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
    f.res = calloc((size_t)n, sizeof *f.res);
    ck_assert(a && b && f.res);
    for (int i = 0; i < n; i++) ck_assert_int_eq(mpq_calib_layer(g_cal, i, &f.c, &a[i], &err), MPQ_OK);
    for (int i = n - 1; i >= 0; i--) ck_assert_int_eq(mpq_calib_layer(f.cals[1], i, &f.c, &b[i], &err), MPQ_OK);
    for (int i = 0; i < n; i++) {
        results_equal(&a[i], &b[i], mpq_model_linear(g_m, i)->name);
        ck_assert(a[i].kl > 0); /* int2g32 does change every layer's output */
    }
    ck_assert_int_eq(mpq_exec_batches_run(2, n, fork_unit, fork_nop, &f, &err), MPQ_OK);
    for (int i = 0; i < n; i++) results_equal(&a[i], &f.res[i], "two threads");
    mpq_kv_pair p = {4, 2};
    mpq_calib_result ka, kb;
    ck_assert_int_eq(mpq_calib_kv(g_cal, 1, p, &ka, &err), MPQ_OK);
    ck_assert_int_eq(mpq_calib_kv(f.cals[1], 1, p, &kb, &err), MPQ_OK);
    results_equal(&ka, &kb, "kv blk.1 k4v2");
    const mpq_weights *w = mpq_model_get_weights(g_m);
    ck_assert_int_eq(memcmp(before->data, w->data, w->n_floats * sizeof(float)), 0);
    /* both tables point at the model's tensors again: f32 on layer 0 changes nothing */
    mpq_candidate f32 = cand("f32");
    for (int k = 0; k < 2; k++) {
        mpq_calib_result z;
        ck_assert_int_eq(mpq_calib_layer(f.cals[k], 0, &f32, &z, &err), MPQ_OK);
        ck_assert_double_eq(z.kl, 0.0);
        ck_assert_double_eq(z.top1, 1.0);
    }
    free(f.res);
    free(b);
    free(a);
    mpq_calib_free(f.cals[1]);
    mpq_weights_free(before);
}
END_TEST

START_TEST(test_dloss_matches_full_eval) {
    /* dloss = CE(one layer quantized) - CE(FP) over the same tokens: the first from the paired
     * per-position differences, the second from two separately accumulated sums of the same
     * float log-probs in double. Difference: rounding of ~N double additions of values <= ~10
     * nats: N*10*eps_d ~ 1e-12; tol 1e-9. */
    mpq_err err = {0};
    int i = mpq_model_find_linear(g_m, "blk.1.attn_v");
    const mpq_layer_info *li = mpq_model_linear(g_m, i);
    mpq_candidate c = cand("int2g32");
    mpq_calib_result r;
    ck_assert_int_eq(mpq_calib_layer(g_cal, i, &c, &r, &err), MPQ_OK);
    mpq_weights *q = NULL;
    ck_assert_int_eq(mpq_weights_clone(g_m, &q, &err), MPQ_OK);
    mpq_quantize_matrix(&c, mpq_weights_linear(q, li), li->rows, li->cols);
    mpq_exec *ex = NULL;
    ck_assert_int_eq(mpq_exec_create(g_m, BB, TT, &ex, &err), MPQ_OK);
    mpq_eval_stats st = {0};
    for (int s0 = 0; s0 < NS; s0 += BB)
        ck_assert_int_eq(mpq_exec_eval(ex, q, NULL, g_tok + (size_t)s0 * (TT + 1), BB, TT, NULL, &st, &err), MPQ_OK);
    ck_assert_double_eq_tol(r.dloss, st.ce - mpq_calib_ref_ce(g_cal), 1e-9);
    ck_assert_msg(r.dloss > 0, "int2 on blk.1.attn_v should raise the loss: %g", r.dloss);
    mpq_exec_free(ex);
    mpq_weights_free(q);
}
END_TEST

START_TEST(test_kv) {
    /* per block: k16v16 changes nothing (all 0, top1 1); k2v2 is worse than k8v8; attn_rel > 0
     * for a quantized cache and equals a direct capture of the attn_o input; keys vs values
     * printed */
    mpq_err err = {0};
    const int L = mpq_model_get_config(g_m)->n_layers;
    mpq_kv_pair p16 = {16, 16}, p8 = {8, 8}, p2 = {2, 2}, k2 = {2, 16}, v2 = {16, 2};
    int keys_worse = 0;
    for (int b = 0; b < L; b++) {
        mpq_calib_result r16, r8, r2, rk, rv;
        ck_assert_int_eq(mpq_calib_kv(g_cal, b, p16, &r16, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_kv(g_cal, b, p8, &r8, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_kv(g_cal, b, p2, &r2, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_kv(g_cal, b, k2, &rk, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_kv(g_cal, b, v2, &rv, &err), MPQ_OK);
        ck_assert_double_eq(r16.kl, 0.0);
        ck_assert_double_eq(r16.attn_rel, 0.0);
        ck_assert_double_eq(r16.dloss, 0.0);
        ck_assert_double_eq(r16.top1, 1.0);
        ck_assert_msg(r2.kl > r8.kl, "blk.%d: k2v2 kl %g <= k8v8 %g", b, r2.kl, r8.kl);
        ck_assert_msg(r2.attn_rel > r8.attn_rel && r8.attn_rel > 0, "blk.%d attn_rel %g %g", b, r2.attn_rel,
                      r8.attn_rel);
        ck_assert_msg(r2.kl_se > 0 && r2.dloss_se > 0, "blk.%d se", b);
        keys_worse += rk.kl > rv.kl;
        printf("blk.%d kv: k8v8 kl %.3e attn %.4f | k2v2 kl %.3e attn %.4f | k2v16 kl %.3e | k16v2 kl %.3e\n", b, r8.kl,
               r8.attn_rel, r2.kl, r2.attn_rel, rk.kl, rv.kl);
    }
    printf("keys more sensitive than values (k2v16 vs k16v2 KL) in %d/%d blocks\n", keys_worse, L);
    /* direct kv_attn_rel for block 1, k2v2: capture attn_o input with and without the pair;
     * the same float products summed in double in the same order: tol 1e-12 relative */
    int b = 1, idx = mpq_model_find_linear(g_m, "blk.1.attn_o");
    const mpq_layer_info *li = mpq_model_linear(g_m, idx);
    mpq_kv_pair pairs[16];
    for (int l = 0; l < L; l++) pairs[l] = p16;
    pairs[b] = p2;
    const mpq_weights *w = mpq_model_get_weights(g_m);
    float *xf = capture_input(g_m, w, NULL, g_tok, NS, TT, BB, idx);
    float *xq = capture_input(g_m, w, pairs, g_tok, NS, TT, BB, idx);
    double d2 = 0, f2 = 0;
    for (int64_t k = 0; k < (int64_t)NS * TT * li->cols; k++) {
        double d = (double)xq[k] - xf[k];
        d2 += d * d;
        f2 += (double)xf[k] * xf[k];
    }
    mpq_calib_result r;
    ck_assert_int_eq(mpq_calib_kv(g_cal, b, p2, &r, &err), MPQ_OK);
    ck_assert_double_eq_tol(r.attn_rel, sqrt(d2 / f2), 1e-12 * sqrt(d2 / f2));
    free(xf);
    free(xq);
}
END_TEST

START_TEST(test_bad_args) {
    mpq_err err = {0};
    mpq_candidate c = cand("int4g32");
    mpq_calib_result r;
    mpq_calib_weight_stats we;
    int n_lin = mpq_model_n_linear(g_m);
    /* bad indices / blocks / NULLs */
    ck_assert_int_eq(mpq_calib_layer(g_cal, -1, &c, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_layer(g_cal, n_lin, &c, &r, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "linear index") != NULL, "%s", err.msg);
    ck_assert_int_eq(mpq_calib_weight_error(g_cal, n_lin, &c, &we, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_weight_error(NULL, 0, &c, &we, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_layer(g_cal, 0, NULL, &r, &err), MPQ_ERR_INVALID);
    mpq_kv_pair good = {4, 4}, bad = {5, 4};
    ck_assert_int_eq(mpq_calib_kv(g_cal, -1, good, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_kv(g_cal, 5, good, &r, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "block 5") != NULL, "%s", err.msg);
    ck_assert_int_eq(mpq_calib_kv(g_cal, 0, bad, &r, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "blk.0") != NULL, "%s", err.msg);
    ck_assert(mpq_calib_xtx_packed(g_cal, n_lin, NULL) == NULL);
    ck_assert_double_eq(mpq_calib_xtx_trace(g_cal, -1), 0.0);
    ck_assert(isnan(mpq_calib_ref_ce(NULL)));
    mpq_calib_free(NULL);
    /* creation: sizes, batch, token ids */
    mpq_calib *cal = NULL;
    mpq_calib_opts o = mpq_calib_opts_default();
    ck_assert_int_eq(mpq_calib_create(g_m, g_tok, 0, TT, &o, &cal, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_create(g_m, g_tok, NS, 0, &o, &cal, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_create(g_m, g_tok, 1, 513, &o, &cal, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_calib_create(NULL, g_tok, NS, TT, &o, &cal, &err), MPQ_ERR_INVALID);
    o.batch = 0;
    ck_assert_int_eq(mpq_calib_create(g_m, g_tok, NS, TT, &o, &cal, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(cal);
    int bad_tok[2 * 9];
    memcpy(bad_tok, g_tok, sizeof bad_tok);
    bad_tok[13] = 512; /* vocab is 512 */
    o = mpq_calib_opts_default();
    ck_assert_int_eq(mpq_calib_create(g_m, bad_tok, 2, 8, &o, &cal, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(cal);
    ck_assert_msg(strstr(err.msg, "calib") != NULL, "%s", err.msg);
    /* batch larger than n_seqs is clamped; one sequence: standard errors are 0 */
    o.batch = 64;
    ck_assert_int_eq(mpq_calib_create(g_m, g_tok, 1, 16, &o, &cal, &err), MPQ_OK);
    ck_assert_int_eq(mpq_calib_layer(cal, 0, &c, &r, &err), MPQ_OK);
    ck_assert_double_eq(r.kl_se, 0.0);
    ck_assert_int_eq(r.n_tokens, 16);
    mpq_calib_free(cal);
}
END_TEST

/* ---- sotu-2.7M: a larger model with its own tokenizer ---- */

START_TEST(test_sotu) {
    /* xtx trace and act_err of one layer per kind against direct computation (tolerances as in
     * the stories260K tests), int2 worse than int4 on KL, prefix reuse == naive on one layer */
    const int ns = 4, T = 64, B = 2;
    mpq_model *m = test_load_model(MSOTU);
    int *tok = test_read_windows(TOKSOTU, ns, T);
    mpq_err err = {0};
    mpq_calib *cal = NULL, *naive = NULL;
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = B;
    ck_assert_msg(mpq_calib_create(m, tok, ns, T, &o, &cal, &err) == MPQ_OK, "%s", err.msg);
    o.prefix_reuse = false;
    o.collect_xtx = false;
    ck_assert_int_eq(mpq_calib_create(m, tok, ns, T, &o, &naive, &err), MPQ_OK);
    double ce = mpq_calib_ref_ce(cal);
    ck_assert_msg(ce > 1.0 && ce < 7.0, "sotu ref ce %g", ce); /* vocab 2048: log(2048) = 7.6 */
    const mpq_weights *w = mpq_model_get_weights(m);
    const char *layers[4] = {"blk.3.attn_k", "blk.3.attn_o", "blk.3.ffn_up", "blk.5.ffn_down"};
    mpq_candidate c2 = cand("int2g64"), c4 = cand("int4g64");
    for (int k = 0; k < 4; k++) {
        int i = mpq_model_find_linear(m, layers[k]);
        ck_assert(i >= 0);
        const mpq_layer_info *li = mpq_model_linear(m, i);
        float *X = capture_input(m, w, NULL, tok, ns, T, B, i);
        double tr = 0;
        for (int64_t e = 0; e < (int64_t)ns * T * li->cols; e++) tr += (double)X[e] * X[e];
        tr /= ns * T;
        ck_assert_double_eq_tol(mpq_calib_xtx_trace(cal, i), tr, 1e-10 * tr);
        mpq_calib_weight_stats we;
        ck_assert_int_eq(mpq_calib_weight_error(cal, i, &c4, &we, &err), MPQ_OK);
        const float *W = mpq_weights_linear(w, li);
        float *Q = malloc((size_t)li->n_params * sizeof(float));
        memcpy(Q, W, (size_t)li->n_params * sizeof(float));
        mpq_quantize_matrix(&c4, Q, li->rows, li->cols);
        double oe = 0;
        for (int64_t r = 0; r < (int64_t)ns * T; r++)
            for (int64_t on = 0; on < li->rows; on++) {
                double y = 0;
                for (int64_t j = 0; j < li->cols; j++)
                    y += ((double)Q[on * li->cols + j] - (double)W[on * li->cols + j]) * X[r * li->cols + j];
                oe += y * y;
            }
        oe /= ns * T;
        ck_assert_double_eq_tol(we.act_err, oe, 1e-8 * oe);
        free(Q);
        free(X);
        mpq_calib_result r2, r4, rn;
        ck_assert_int_eq(mpq_calib_layer(cal, i, &c2, &r2, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_layer(cal, i, &c4, &r4, &err), MPQ_OK);
        ck_assert_msg(r2.kl > r4.kl, "%s: int2 kl %g <= int4 %g", layers[k], r2.kl, r4.kl);
        ck_assert_int_eq(mpq_calib_layer(naive, i, &c4, &rn, &err), MPQ_OK);
        results_equal(&r4, &rn, layers[k]);
        printf("sotu-2.7M %-15s int2g64 kl %.3e dloss %+.4f +- %.4f | int4g64 kl %.3e\n", layers[k], r2.kl, r2.dloss,
               r2.dloss_se, r4.kl);
    }
    mpq_kv_pair p2 = {2, 2}, p8 = {8, 8};
    mpq_calib_result k2, k8;
    ck_assert_int_eq(mpq_calib_kv(cal, 0, p2, &k2, &err), MPQ_OK);
    ck_assert_int_eq(mpq_calib_kv(cal, 0, p8, &k8, &err), MPQ_OK);
    ck_assert_msg(k2.kl > k8.kl && k8.attn_rel > 0, "sotu kv %g %g", k2.kl, k8.kl);
    mpq_calib_free(naive);
    mpq_calib_free(cal);
    free(tok);
    mpq_model_free(m);
}
END_TEST

static Suite *calib_suite(void) {
    Suite *s = suite_create("calib");
    TCase *tc = tcase_create("stories260K");
    tcase_add_unchecked_fixture(tc, setup260, teardown260);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_ref_ce);
    tcase_add_test(tc, test_layer_range);
    tcase_add_test(tc, test_xtx_direct);
    tcase_add_test(tc, test_weight_and_act_error_direct);
    tcase_add_test(tc, test_monotone_and_table);
    tcase_add_test(tc, test_prefix_reuse_equals_naive);
    tcase_add_test(tc, test_exec_entry_points);
    tcase_add_test(tc, test_determinism_aba);
    tcase_add_test(tc, test_fork_shares_weights);
    tcase_add_test(tc, test_dloss_matches_full_eval);
    tcase_add_test(tc, test_kv);
    tcase_add_test(tc, test_bad_args);
    suite_add_tcase(s, tc);
    TCase *ts = tcase_create("sotu-2.7M");
    tcase_set_timeout(ts, 600);
    tcase_add_test(ts, test_sotu);
    suite_add_tcase(s, ts);
    return s;
}

int main(void) {
    mpq_blas_set_threads(1); /* as every mpq application does (mpq.h, "BLAS threads") */
    SRunner *sr = srunner_create(calib_suite());
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
