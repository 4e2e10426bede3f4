/* test_fisher.c - unit tests of the Fisher-weighted output error (src/calib/fisher.c,
 * mpq_fisher.h) and of the backward pass's taps (mpq_grad.h) on the real stories260K:
 * - the taps' output gradients g_t, checked against central differences of the summed loss
 *   along the quantization error: d/de L_sum(W + e E) at 0 = sum_t g_t . (E x_t);
 * - a block-limited tap (backward stopped at the block) sees exactly the full pass's numbers;
 * - mpq_fisher_block against a direct computation: the gradients and inputs captured one
 *   window at a time by a full backward, E = Q(W) - W from the test's own quantize call, and
 *   sum_t sum_o g^2 (sum_i E_oi x_ti)^2 in double loops without BLAS;
 * - determinism, mpq_fisher_summarize, and bad arguments. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_fisher.h"
#include "mpq/mpq_grad.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "test_main.h"
#include "test_util.h"

#define M260 "models/stories260K/stories260K.bin"
#define CALIB_TOK "data/tinystories-calib.tok512.u16"

enum { NS = 3, TT = 16, BLOCK = 1 };

static int *read_windows(int n_seqs, int T) {
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(CALIB_TOK), &nb);
    ck_assert_msg(raw != NULL, "cannot read %s", CALIB_TOK);
    size_t need = (size_t)n_seqs * (T + 1);
    ck_assert(nb / 2 >= need);
    int *t = malloc(need * sizeof(int));
    for (size_t i = 0; i < need; i++) t[i] = raw[2 * i] | (raw[2 * i + 1] << 8);
    free(raw);
    return t;
}

static mpq_model *load260(void) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(M260), &m, &err) == MPQ_OK, "%s", err.msg);
    return m;
}

/* ---- capture tap: copies every tapped layer's dout and inp ---- */

typedef struct capture {
    int block;
    float *dout[MPQ_N_LAYER_KINDS], *inp[MPQ_N_LAYER_KINDS];
    int N[MPQ_N_LAYER_KINDS], OC[MPQ_N_LAYER_KINDS], C[MPQ_N_LAYER_KINDS];
} capture;

static mpq_status cap_fn(void *user, int block, mpq_layer_kind kind, const float *dout, const float *inp, int N,
                         int OC, int C, mpq_err *err) {
    (void)err;
    capture *c = user;
    if (block != c->block) return MPQ_OK;
    free(c->dout[kind]);
    free(c->inp[kind]);
    c->dout[kind] = malloc((size_t)N * OC * sizeof(float));
    c->inp[kind] = malloc((size_t)N * C * sizeof(float));
    memcpy(c->dout[kind], dout, (size_t)N * OC * sizeof(float));
    memcpy(c->inp[kind], inp, (size_t)N * C * sizeof(float));
    c->N[kind] = N;
    c->OC[kind] = OC;
    c->C[kind] = C;
    return MPQ_OK;
}

static void cap_free(capture *c) {
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++) {
        free(c->dout[k]);
        free(c->inp[k]);
        c->dout[k] = c->inp[k] = NULL;
    }
}

/* Forward + backward of B windows, capturing block `block` (tap_block: the tap's block field). */
static void run_capture(const mpq_model *m, const mpq_weights *w, const int *tok, int B, int T, int tap_block,
                        capture *c, double *loss) {
    mpq_exec *ex = NULL;
    mpq_grad *gr = NULL;
    mpq_weights *gw = NULL;
    mpq_err err = {0};
    ck_assert(mpq_exec_create(m, B, T, &ex, &err) == MPQ_OK);
    ck_assert(mpq_grad_create(ex, &gr, &err) == MPQ_OK);
    ck_assert(mpq_grad_weights_zeros(m, &gw, &err) == MPQ_OK);
    mpq_grad_tap tap = {.fn = cap_fn, .user = c, .block = tap_block};
    ck_assert_msg(mpq_grad_compute_tap(gr, w, tok, B, T, (float)(B * T), gw, loss, &tap, &err) == MPQ_OK, "%s",
                  err.msg);
    mpq_weights_free(gw);
    mpq_grad_free(gr);
    mpq_exec_free(ex);
}

static float *quant_error(const mpq_model *m, const mpq_layer_info *li, const char *cand) {
    mpq_candidate c;
    mpq_err err = {0};
    ck_assert(mpq_candidate_parse(cand, &c, &err) == MPQ_OK);
    const float *wl = mpq_weights_linear(mpq_model_get_weights(m), li);
    float *e = malloc((size_t)li->n_params * sizeof(float));
    memcpy(e, wl, (size_t)li->n_params * sizeof(float));
    mpq_quantize_matrix(&c, e, li->rows, li->cols);
    for (int64_t i = 0; i < li->n_params; i++) e[i] -= wl[i];
    return e;
}

START_TEST(test_tap_gradient_fd) {
    /* For layers of block 1, sum_t g_t . (E x_t) (g of the SUM of the B*T token losses, E the
     * int3g32 error) equals d/de L_sum(W + e E) at e = 0, by central differences with e = 0.05
     * (E is ~5% of W's scale, so e E is a small move). Error budget of the difference: the loss is
     * summed in double from float logits, rounding ~1e-6 relative per logit row, so the summed
     * loss of N = 32 tokens (~3 nats each) moves by ~1e-4 absolute; divided by 2e that is ~1e-3;
     * truncation e^2/6 |L'''| is of the same order. Allowed: 2e-2 |fd| + 5e-3 (measured values are
     * printed). */
    mpq_model *m = load260();
    int *tok = read_windows(2, TT);
    const int B = 2, N = B * TT;
    capture c = {.block = BLOCK};
    double l0 = 0;
    run_capture(m, mpq_model_get_weights(m), tok, B, TT, -1, &c, &l0);
    mpq_weights *wp = NULL;
    mpq_err err = {0};
    ck_assert(mpq_weights_clone(m, &wp, &err) == MPQ_OK);
    const double eps = 0.05;
    int first = -1, nl = mpq_fisher_block_layers(m, BLOCK, &first);
    ck_assert_int_eq(nl, MPQ_N_LAYER_KINDS);
    for (int j = 0; j < nl; j++) {
        const mpq_layer_info *li = mpq_model_linear(m, first + j);
        float *e = quant_error(m, li, "int3g32");
        int k = li->kind;
        ck_assert_int_eq(c.N[k], N);
        double an = 0.0;
        for (int t = 0; t < N; t++)
            for (int o = 0; o < li->rows; o++) {
                double dy = 0.0;
                for (int i = 0; i < li->cols; i++)
                    dy += (double)e[o * li->cols + i] * c.inp[k][(size_t)t * li->cols + i];
                an += (double)c.dout[k][(size_t)t * li->rows + o] * dy;
            }
        float *wl = mpq_weights_linear(wp, li);
        const float *w0 = mpq_weights_linear(mpq_model_get_weights(m), li);
        double lp = 0, lm = 0;
        capture dummy = {.block = -2};
        for (int64_t i = 0; i < li->n_params; i++) wl[i] = (float)(w0[i] + eps * e[i]);
        run_capture(m, wp, tok, B, TT, -1, &dummy, &lp);
        for (int64_t i = 0; i < li->n_params; i++) wl[i] = (float)(w0[i] - eps * e[i]);
        run_capture(m, wp, tok, B, TT, -1, &dummy, &lm);
        memcpy(wl, w0, (size_t)li->n_params * sizeof(float));
        double fd = (lp - lm) * N / (2 * eps);
        printf("fisher tap %-14s sum g.(Ex) = %+.6e  fd = %+.6e\n", li->name, an, fd);
        ck_assert_double_eq_tol(an, fd, 2e-2 * fabs(fd) + 5e-3);
        free(e);
    }
    cap_free(&c);
    mpq_weights_free(wp);
    free(tok);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_tap_block_stop_identical) {
    /* Stopping the backward after block 1 changes nothing above it: bit-identical taps. */
    mpq_model *m = load260();
    int *tok = read_windows(2, TT);
    capture a = {.block = BLOCK}, b = {.block = BLOCK};
    run_capture(m, mpq_model_get_weights(m), tok, 2, TT, -1, &a, NULL);
    run_capture(m, mpq_model_get_weights(m), tok, 2, TT, BLOCK, &b, NULL);
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++) {
        ck_assert_ptr_nonnull(b.dout[k]);
        ck_assert_int_eq(memcmp(a.dout[k], b.dout[k], (size_t)a.N[k] * a.OC[k] * sizeof(float)), 0);
        ck_assert_int_eq(memcmp(a.inp[k], b.inp[k], (size_t)a.N[k] * a.C[k] * sizeof(float)), 0);
    }
    cap_free(&a);
    cap_free(&b);
    free(tok);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_block_vs_naive) {
    /* mpq_fisher_block (NS = 3 windows in batches of 2: a full and a partial batch) against the
     * direct computation on windows captured one at a time (B = 1, full backward) with double
     * loops. Each value is a sum of non-negative terms g^2 (E x)^2, so its relative error is at
     * most that of the worst term: 2 (dg + d(Ex)). Both sides are float32 computations of the same
     * quantities in another order (batch of 2 vs 1 changes the rows of every product, sgemm vs
     * double loops for E x): the gradients carry the rounding of ~30 stages of sums of up to
     * K = 512 terms, typically sqrt(K) eps32 * 30 ~ 4e-5 relative, E x up to K eps32 = 3e-5
     * where it does not cancel. Allowed: 1e-3 relative (about 10x margin). */
    mpq_model *m = load260();
    int *tok = read_windows(NS, TT);
    const char *names[2] = {"int2g32", "int4g32"};
    mpq_candidate cands[2];
    mpq_err err = {0};
    for (int c = 0; c < 2; c++) ck_assert(mpq_candidate_parse(names[c], &cands[c], &err) == MPQ_OK);
    int first = -1, nl = mpq_fisher_block_layers(m, BLOCK, &first);
    double *out = calloc((size_t)nl * 2 * NS, sizeof(double));
    ck_assert_msg(mpq_fisher_block(m, tok, NS, TT, 2, BLOCK, cands, 2, out, &err) == MPQ_OK, "%s", err.msg);
    double worst = 0.0;
    for (int s = 0; s < NS; s++) {
        capture cw = {.block = BLOCK};
        run_capture(m, mpq_model_get_weights(m), tok + (size_t)s * (TT + 1), 1, TT, -1, &cw, NULL);
        for (int j = 0; j < nl; j++) {
            const mpq_layer_info *li = mpq_model_linear(m, first + j);
            int k = li->kind;
            for (int c = 0; c < 2; c++) {
                float *e = quant_error(m, li, names[c]);
                double sum = 0.0;
                for (int t = 0; t < TT; t++)
                    for (int o = 0; o < li->rows; o++) {
                        double dy = 0.0;
                        for (int i = 0; i < li->cols; i++)
                            dy += (double)e[o * li->cols + i] * cw.inp[k][(size_t)t * li->cols + i];
                        double g = cw.dout[k][(size_t)t * li->rows + o];
                        sum += g * g * dy * dy;
                    }
                double naive = sum / TT, got = out[((size_t)j * 2 + c) * NS + s];
                ck_assert_double_gt(naive, 0.0);
                double rel = fabs(got - naive) / naive;
                worst = rel > worst ? rel : worst;
                ck_assert_msg(rel <= 1e-3, "%s %s window %d: %.9e vs naive %.9e", li->name, names[c], s, got, naive);
                free(e);
            }
        }
        cap_free(&cw);
    }
    printf("fisher block %d vs naive: worst relative difference %.3e over %d values\n", BLOCK, worst, nl * 2 * NS);
    /* a coarser format does more damage on every layer of this block, on average over windows */
    for (int j = 0; j < nl; j++) {
        mpq_fisher_stat s2 = mpq_fisher_summarize(out + ((size_t)j * 2 + 0) * NS, NS);
        mpq_fisher_stat s4 = mpq_fisher_summarize(out + ((size_t)j * 2 + 1) * NS, NS);
        ck_assert_double_gt(s2.mean, s4.mean);
    }
    /* same inputs, same bits */
    double *again = calloc((size_t)nl * 2 * NS, sizeof(double));
    ck_assert(mpq_fisher_block(m, tok, NS, TT, 2, BLOCK, cands, 2, again, &err) == MPQ_OK);
    ck_assert_int_eq(memcmp(out, again, (size_t)nl * 2 * NS * sizeof(double)), 0);
    free(again);
    free(out);
    free(tok);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_summarize) {
    /* {1,2,3,4}: mean 2.5, sample variance 5/3, se = sqrt(5/3/4) */
    const double v[4] = {1, 2, 3, 4};
    mpq_fisher_stat s = mpq_fisher_summarize(v, 4);
    ck_assert_double_eq_tol(s.mean, 2.5, 1e-15);
    ck_assert_double_eq_tol(s.se, sqrt(5.0 / 12.0), 1e-15);
    ck_assert_int_eq(s.n, 4);
    s = mpq_fisher_summarize(v, 1);
    ck_assert_double_eq(s.mean, 1.0);
    ck_assert(isnan(s.se));
    s = mpq_fisher_summarize(NULL, 0);
    ck_assert(isnan(s.mean));
}
END_TEST

START_TEST(test_bad_arguments) {
    mpq_model *m = load260();
    int *tok = read_windows(2, TT);
    mpq_candidate c;
    mpq_err err = {0};
    double out[7 * 2];
    ck_assert(mpq_candidate_parse("int4g32", &c, &err) == MPQ_OK);
    ck_assert_int_eq(mpq_fisher_block(m, tok, 2, TT, 2, 0, &c, 0, out, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "no candidates"));
    ck_assert_int_eq(mpq_fisher_block(m, tok, 2, TT, 2, 5, &c, 1, out, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "block 5 outside 0..4"));
    ck_assert_int_eq(mpq_fisher_block(m, tok, 0, TT, 2, 0, &c, 1, out, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_fisher_block(NULL, tok, 2, TT, 2, 0, &c, 1, out, &err), MPQ_ERR_INVALID);
    /* a token outside the vocabulary is refused by the backward pass, naming it */
    tok[5] = 100000;
    ck_assert_int_eq(mpq_fisher_block(m, tok, 2, TT, 2, 0, &c, 1, out, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "token 100000"));
    /* a shape-only model has no weights */
    mpq_model *shape = NULL;
    ck_assert(mpq_model_shape_copy(m, &shape, &err) == MPQ_OK);
    ck_assert_int_eq(mpq_fisher_block(shape, tok, 2, TT, 2, 0, &c, 1, out, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "shape only"));
    mpq_model_free(shape);
    free(tok);
    mpq_model_free(m);
}
END_TEST

static Suite *fisher_suite(void) {
    Suite *s = suite_create("fisher");
    TCase *t = tcase_create("fisher");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_tap_gradient_fd);
    tcase_add_test(t, test_tap_block_stop_identical);
    tcase_add_test(t, test_block_vs_naive);
    tcase_add_test(t, test_summarize);
    tcase_add_test(t, test_bad_arguments);
    suite_add_tcase(s, t);
    return s;
}

TEST_MAIN(fisher_suite)
