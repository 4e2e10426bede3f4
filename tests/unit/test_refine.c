/*
 * test_refine.c - pieces of the interaction-aware loop (mpq_refine.h): the in-context table
 * rule (mpq_refine_table) against hand-computed values, the measured exchanges
 * (mpq_refine_exchanges: hand-computed list; never over a budget on random problems), and the executor entry from another
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

/* Three items of sizes 1, 1, 2 (bits per option 2, 3, 4 per weight); budget 3 bits/weight on
 * 4 weights = 12 bits; context (1, 1, 1) = 12 bits exactly. Exchanges that fit: one item down
 * one step and another up one step at equal cost (items 0 and 1 in either direction), or any
 * move of the big item 2 down with a move of item 0 or 1 up. */
static mpq_problem *small_problem(void) {
    mpq_problem *p = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_problem_create(3, 3, 1, &p, &err), MPQ_OK);
    const int size[3] = {1, 1, 2};
    for (int g = 0; g < 3; g++)
        for (int o = 0; o < 3; o++) {
            ck_assert_int_eq(mpq_problem_set_loss(p, g, o, 1.0 / (o + 1), &err), MPQ_OK);
            ck_assert_int_eq(mpq_problem_set_cost(p, 0, g, o, (double)(size[g] * (2 + o)), &err), MPQ_OK);
        }
    ck_assert_int_eq(mpq_problem_set_budget(p, 0, 12.0, &err), MPQ_OK);
    return p;
}

START_TEST(test_exchanges_small) {
    mpq_problem *p = small_problem();
    const int choice[3] = {1, 1, 1};
    /* K = 1.0; changes: item 0 up -0.3, down +0.1; item 1 up -0.2, down +0.05; item 2 down +0.4, up -0.5 */
    const mpq_refine_move mv[7] = {{0, 2, 0.7}, {0, 0, 1.1}, {1, 2, 0.8}, {1, 0, 1.05},
                                   {2, 0, 1.4}, {2, 2, 0.5}, {2, 1, 7.0} /* own option: ignored */};
    mpq_refine_exchange x[16];
    int n = -1;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_refine_exchanges(p, choice, 1.0, mv, 7, 2, 16, x, &n, &err), MPQ_OK);
    /* fitting pairs (cost change <= 0): 0 up + 1 down (-0.25), 0 down + 1 up (-0.1),
     * 0 down + 1 down (+0.15), 0 up + 2 down (+0.1), 1 up + 2 down (+0.2), 0 down + 2 down
     * (+0.5), 1 down + 2 down (+0.45); 2 up never fits with one move of size 1 */
    ck_assert_int_eq(n, 7);
    const double want[7] = {-0.25, -0.1, 0.1, 0.15, 0.2, 0.45, 0.5};
    /* tolerance: two subtractions and one addition of numbers of order 1 */
    for (int i = 0; i < 7; i++) ck_assert_double_eq_tol(x[i].predicted, want[i], 8 * 2.2e-16);
    ck_assert(x[0].n == 2 && x[0].item[0] == 0 && x[0].option[0] == 2 && x[0].item[1] == 1 && x[0].option[1] == 0);
    /* at most max_out, the best ones */
    ck_assert_int_eq(mpq_refine_exchanges(p, choice, 1.0, mv, 7, 2, 2, x, &n, &err), MPQ_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_double_eq_tol(x[1].predicted, -0.1, 8 * 2.2e-16);
    /* bad arguments */
    ck_assert_int_eq(mpq_refine_exchanges(NULL, choice, 1.0, mv, 7, 2, 2, x, &n, &err), MPQ_ERR_INVALID);
    const mpq_refine_move bad[1] = {{3, 0, 1.0}};
    ck_assert_int_eq(mpq_refine_exchanges(p, choice, 1.0, bad, 1, 2, 2, x, &n, &err), MPQ_ERR_INVALID);
    const mpq_refine_move nan_kl[1] = {{0, 0, NAN}};
    ck_assert_int_eq(mpq_refine_exchanges(p, choice, 1.0, nan_kl, 1, 2, 2, x, &n, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_refine_exchanges(p, choice, INFINITY, mv, 7, 2, 2, x, &n, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_refine_exchanges(p, choice, 1.0, mv, 7, 5, 2, x, &n, &err), MPQ_ERR_INVALID);
    mpq_problem_free(p);
}
END_TEST

/* Random problems with two budgets: every exchange of at most 3 moves returned fits both
 * budgets (recomputed here), the list is sorted and complete (equal to a brute-force count of
 * fitting sets), and a shorter list is its beginning. */
START_TEST(test_exchanges_never_over_budget) {
    uint64_t rng = 12345;
    for (int trial = 0; trial < 50; trial++) {
        const int G = 8, O = 4, R = 2;
        mpq_problem *p = NULL;
        mpq_err err = {0};
        ck_assert_int_eq(mpq_problem_create(G, O, R, &p, &err), MPQ_OK);
        double cost[2][8][4];
        int choice[8];
        double tot[2] = {0, 0};
        for (int g = 0; g < G; g++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            int size = 1 + (int)((rng >> 33) % 5);
            choice[g] = (int)((rng >> 40) % O);
            for (int o = 0; o < O; o++) {
                ck_assert_int_eq(mpq_problem_set_loss(p, g, o, 1.0 / (o + 1), &err), MPQ_OK);
                cost[0][g][o] = (double)(size * (2 + o));
                cost[1][g][o] = (double)(size * (2 + o) + (o == 3 ? 16 : 0)); /* a second, non-proportional resource */
                for (int r = 0; r < R; r++)
                    ck_assert_int_eq(mpq_problem_set_cost(p, r, g, o, cost[r][g][o], &err), MPQ_OK);
            }
            for (int r = 0; r < R; r++) tot[r] += cost[r][g][choice[g]];
        }
        for (int r = 0; r < R; r++) ck_assert_int_eq(mpq_problem_set_budget(p, r, tot[r] + (double)r, &err), MPQ_OK);
        mpq_refine_move mv[32];
        int n_mv = 0;
        for (int g = 0; g < G; g++)
            for (int o = 0; o < O; o++) {
                if (o == choice[g]) continue;
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                mv[n_mv++] = (mpq_refine_move){g, o, (double)(rng >> 11) / 9007199254740992.0};
            }
        /* brute force: every set of 2 or 3 moves of increasing items (mv is in item order) */
        int brute = 0;
        for (int i = 0; i < n_mv; i++)
            for (int j = i + 1; j < n_mv; j++)
                for (int k = j; k <= n_mv; k++) { /* k == j: the pair alone; k == n_mv: unused */
                    if (k == n_mv) continue;
                    if (mv[j].item <= mv[i].item || (k > j && mv[k].item <= mv[j].item)) continue;
                    bool fits = true;
                    for (int r = 0; r < R; r++) {
                        double t = tot[r];
                        const int set[3] = {i, j, k};
                        for (int q = 0; q < (k > j ? 3 : 2); q++)
                            t += cost[r][mv[set[q]].item][mv[set[q]].option] - cost[r][mv[set[q]].item][choice[mv[set[q]].item]];
                        fits &= t <= tot[r] + (double)r;
                    }
                    brute += fits;
                }
        static mpq_refine_exchange x[4096];
        int n = -1;
        ck_assert_int_eq(mpq_refine_exchanges(p, choice, 0.5, mv, n_mv, 3, 4096, x, &n, &err), MPQ_OK);
        ck_assert_int_eq(n, brute);
        for (int i = 0; i < n; i++) {
            int c2[8];
            memcpy(c2, choice, sizeof c2);
            ck_assert(x[i].n == 2 || x[i].n == 3);
            for (int t = 0; t < x[i].n; t++) {
                if (t) ck_assert_int_lt(x[i].item[t - 1], x[i].item[t]);
                ck_assert_int_ne(x[i].option[t], choice[x[i].item[t]]);
                c2[x[i].item[t]] = x[i].option[t];
            }
            for (int r = 0; r < R; r++) {
                double t = 0;
                for (int g = 0; g < G; g++) t += cost[r][g][c2[g]];
                ck_assert(t <= mpq_problem_budget(p, r));
            }
            if (i) ck_assert(x[i - 1].predicted <= x[i].predicted);
        }
        /* the best 10 are the first 10 of the full list */
        mpq_refine_exchange top[10];
        int n10 = -1;
        ck_assert_int_eq(mpq_refine_exchanges(p, choice, 0.5, mv, n_mv, 3, 10, top, &n10, &err), MPQ_OK);
        ck_assert_int_eq(n10, n < 10 ? n : 10);
        for (int i = 0; i < n10; i++) ck_assert_int_eq(memcmp(&top[i], &x[i], sizeof top[i]), 0);
        mpq_problem_free(p);
    }
}
END_TEST

START_TEST(test_opts_and_args) {
    mpq_refine_opts o = mpq_refine_opts_default();
    ck_assert_int_eq(o.max_iterations, 5);
    ck_assert_int_eq(o.exchanges, MPQ_REFINE_EXCHANGES);
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
    tcase_add_test(tc, test_exchanges_small);
    tcase_add_test(tc, test_exchanges_never_over_budget);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(refine_suite)
