/*
 * test_refine.c - pieces of the interaction-aware loop (mpq_refine.h): the in-context table
 * rule (mpq_refine_table) against hand-computed values, and the executor entry from another
 * run's residuals (mpq_exec_eval_ref_entry_from) against the full forward on stories260K, bit
 * for bit, at every entry point. The loop itself (store, resume after kill -9) is
 * tests/e2e/refine.sh.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_refine.h"
#include "test_util.h"
#include "test_main.h"

#define M260 "models/stories260K/stories260K.bin"
#define TOK260 "data/tinystories-calib.tok512.u16"

/* Two items: layers 0,1 tied (item 0), layer 2 alone (item 1); options 0..2 (cheap..dear). */
START_TEST(test_table_rule) {
    const int group_of[3] = {0, 0, 1}, choice[2] = {1, 1};
    const double add[9] = {0.4, 0.2, 0.1, /* layer 0 */
                           0.6, 0.3, 0.1, /* layer 1 */
                           1.0, 0.5, 0.2}; /* layer 2 */
    /* context K = 2.0; additive at the choice: 0.2 + 0.3 + 0.5 = 1.0 -> shares 0.4, 0.6, 1.0 */
    const mpq_refine_move mv[3] = {{0, 0, 2.5}, {1, 2, 1.8}, {1, 1, 9.0} /* own option: ignored */};
    double t[9];
    mpq_err err = {0};
    ck_assert_int_eq(mpq_refine_table(3, 3, 2, group_of, choice, add, 2.0, mv, 3, t, &err), MPQ_OK);
    /* tolerance: a few ulps of numbers of order 1 (each entry is at most three operations) */
    const double tol = 8 * 2.2e-16;
    ck_assert_double_eq_tol(t[1], 0.4, tol);              /* share at the choice */
    ck_assert_double_eq_tol(t[4], 0.6, tol);
    ck_assert_double_eq_tol(t[7], 1.0, tol);
    ck_assert_double_eq_tol(t[0], 0.4 + 0.5 / 2, tol);    /* measured move of the tied pair, split */
    ck_assert_double_eq_tol(t[3], 0.6 + 0.5 / 2, tol);
    ck_assert_double_eq_tol(t[2], 0.1 + (0.4 - 0.2), tol); /* unmeasured: additive shifted */
    ck_assert_double_eq_tol(t[5], 0.1 + (0.6 - 0.3), tol);
    ck_assert_double_eq_tol(t[8], 1.0 - 0.2, tol);        /* measured: 1.0 + (1.8 - 2.0) */
    ck_assert_double_eq_tol(t[6], 1.0 + (1.0 - 0.5), tol);
    /* the context's predicted total is its measured K */
    ck_assert_double_eq_tol(t[1] + t[4] + t[7], 2.0, tol);
    /* bad input */
    const mpq_refine_move bad = {2, 0, 1.0};
    ck_assert_int_eq(mpq_refine_table(3, 3, 2, group_of, choice, add, 2.0, &bad, 1, t, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_refine_table(3, 3, 2, group_of, choice, add, NAN, mv, 1, t, &err), MPQ_ERR_INVALID);
    const int bad_choice[2] = {3, 1};
    ck_assert_int_eq(mpq_refine_table(3, 3, 2, group_of, bad_choice, add, 2.0, mv, 1, t, &err), MPQ_ERR_INVALID);
}
END_TEST

/* All layers at 0 additive: equal shares. */
START_TEST(test_table_zero_additive) {
    const int group_of[2] = {0, 1}, choice[2] = {0, 0};
    const double add[4] = {0, 0, 0, 0};
    double t[4];
    mpq_err err = {0};
    ck_assert_int_eq(mpq_refine_table(2, 2, 2, group_of, choice, add, 1.0, NULL, 0, t, &err), MPQ_OK);
    ck_assert_double_eq_tol(t[0], 0.5, 1e-15);
    ck_assert_double_eq_tol(t[2], 0.5, 1e-15);
}
END_TEST

static void quantize_layer(const mpq_model *m, mpq_weights *w, int i, const char *name) {
    mpq_candidate c;
    mpq_err err = {0};
    ck_assert_msg(mpq_candidate_parse(name, &c, &err) == MPQ_OK, "%s", err.msg);
    const mpq_layer_info *li = mpq_model_linear(m, i);
    float *q = mpq_weights_linear(w, li);
    memcpy(q, mpq_weights_linear(mpq_model_get_weights(m), li), (size_t)li->n_params * sizeof *q);
    mpq_quantize_matrix(&c, q, li->rows, li->cols);
}

/* Entering from the residuals of a model quantized as in A and scoring against FP gives the
 * full forward of "A with one layer changed", bitwise (equal sums, not a tolerance). */
START_TEST(test_entry_from_bitwise) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(M260), &m, &err) == MPQ_OK, "%s", err.msg);
    const int n_seqs = 6, T = 48;
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(TOK260), &nb);
    ck_assert_ptr_nonnull(raw);
    ck_assert(nb / 2 > (size_t)n_seqs * T + 1);
    int *tok = malloc((size_t)n_seqs * (T + 1) * sizeof *tok);
    ck_assert_ptr_nonnull(tok);
    for (int s = 0; s < n_seqs; s++)
        for (int j = 0; j <= T; j++) {
            size_t p = (size_t)s * T + j;
            tok[(size_t)s * (T + 1) + j] = raw[2 * p] | (raw[2 * p + 1] << 8);
        }
    free(raw);
    mpq_exec *ex = NULL;
    ck_assert_int_eq(mpq_exec_create(m, 4, T, &ex, &err), MPQ_OK);
    mpq_exec_ref *fp = NULL, *aref = NULL, *other = NULL;
    ck_assert_int_eq(mpq_exec_ref_build(ex, mpq_model_get_weights(m), NULL, tok, n_seqs, T, false, &fp, &err), MPQ_OK);
    mpq_weights *wA = NULL, *wS = NULL;
    ck_assert_int_eq(mpq_weights_clone(m, &wA, &err), MPQ_OK);
    ck_assert_int_eq(mpq_weights_clone(m, &wS, &err), MPQ_OK);
    for (int i = 0; i < mpq_model_n_linear(m); i++) { /* A: mixed, as a solution would be */
        quantize_layer(m, wA, i, i % 3 == 0 ? "int3g32" : "int4g32");
        quantize_layer(m, wS, i, i % 3 == 0 ? "int3g32" : "int4g32");
    }
    ck_assert_int_eq(mpq_exec_ref_build(ex, wA, NULL, tok, n_seqs, T, true, &aref, &err), MPQ_OK);
    const char *layers[] = {"blk.0.attn_q", "blk.2.attn_o", "blk.3.ffn_up", "blk.4.ffn_down"};
    const mpq_exec_entry entries[] = {MPQ_EXEC_ENTRY_BLOCK, MPQ_EXEC_ENTRY_ATTN_O, MPQ_EXEC_ENTRY_FFN,
                                      MPQ_EXEC_ENTRY_FFN};
    for (int k = 0; k < 4; k++) {
        int i = mpq_model_find_linear(m, layers[k]);
        ck_assert_int_ge(i, 0);
        const mpq_layer_info *li = mpq_model_linear(m, i);
        quantize_layer(m, wS, i, "int2g32");
        mpq_eval_stats full = {0}, part = {0};
        ck_assert_int_eq(mpq_exec_eval_ref(ex, wS, NULL, fp, 0, &full, &err), MPQ_OK);
        ck_assert_msg(mpq_exec_eval_ref_entry_from(ex, wS, NULL, fp, aref, li->block, entries[k], &part, &err) == MPQ_OK,
                      "%s", err.msg);
        ck_assert_msg(full.kl_sum == part.kl_sum && full.nll_sum == part.nll_sum && full.top1_same == part.top1_same,
                      "%s: kl %.17g vs %.17g", layers[k], full.kl_sum, part.kl_sum);
        ck_assert(full.kl_sum > 0);
        memcpy(mpq_weights_linear(wS, li), mpq_weights_linear(wA, li), (size_t)li->n_params * sizeof(float));
    }
    /* refused: a run without residuals, a run on other tokens */
    mpq_eval_stats st = {0};
    ck_assert_int_eq(mpq_exec_eval_ref_entry_from(ex, wS, NULL, fp, fp, 1, MPQ_EXEC_ENTRY_BLOCK, &st, &err),
                     MPQ_ERR_INVALID);
    tok[5] = (tok[5] + 1) % mpq_model_get_config(m)->vocab_size;
    ck_assert_int_eq(mpq_exec_ref_build(ex, wA, NULL, tok, n_seqs, T, true, &other, &err), MPQ_OK);
    ck_assert_int_eq(mpq_exec_eval_ref_entry_from(ex, wS, NULL, fp, other, 1, MPQ_EXEC_ENTRY_BLOCK, &st, &err),
                     MPQ_ERR_INVALID);
    mpq_exec_ref_free(other);
    mpq_exec_ref_free(aref);
    mpq_exec_ref_free(fp);
    mpq_weights_free(wS);
    mpq_weights_free(wA);
    mpq_exec_free(ex);
    free(tok);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_opts_and_args) {
    mpq_refine_opts o = mpq_refine_opts_default();
    ck_assert_int_eq(o.max_iterations, 5);
    ck_assert(o.smooth);
    mpq_refine_result *r = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_refine_run(NULL, &o, &r, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(r);
    mpq_refine_result_free(NULL);
}
END_TEST

static Suite *refine_suite(void) {
    Suite *s = suite_create("refine");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_table_rule);
    tcase_add_test(tc, test_table_zero_additive);
    tcase_add_test(tc, test_entry_from_bitwise);
    tcase_add_test(tc, test_opts_and_args);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(refine_suite)
