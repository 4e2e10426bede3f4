/*
 * test_pairs.c - the allocation ILP with pairwise interaction terms (mpq_solve_ilp_pairs,
 * the terms mpq_pairs.h measures): both linearisations against exhaustive enumeration of every
 * assignment on small random instances, with no terms against mpq_solve_ilp, hostile arguments.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_pairs.h"
#include "mpq/mpq_solvers.h"
#include "test_main.h"

/* Deterministic generator (splitmix64) for the instances. */
static uint64_t rng_state;
static double urand(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

/* Instance: n items x n_opt options, integral bits-like costs, budget between the cheapest and
 * the dearest total so that it binds; losses decreasing with cost plus noise. */
static mpq_problem *make_problem(int n, int n_opt, double frac) {
    mpq_problem *p = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_problem_create(n, n_opt, 1, &p, &err), MPQ_OK);
    double lo = 0, hi = 0;
    for (int i = 0; i < n; i++) {
        double cmin = INFINITY, cmax = 0;
        for (int o = 0; o < n_opt; o++) {
            double cost = (double)((o + 2) * (10 + (int)(urand() * 20)));
            double loss = exp2(-(double)o) * (0.5 + urand());
            ck_assert_int_eq(mpq_problem_set_cost(p, 0, i, o, cost, &err), MPQ_OK);
            ck_assert_int_eq(mpq_problem_set_loss(p, i, o, loss, &err), MPQ_OK);
            cmin = fmin(cmin, cost);
            cmax = fmax(cmax, cost);
        }
        lo += cmin;
        hi += cmax;
    }
    ck_assert_int_eq(mpq_problem_set_budget(p, 0, floor(lo + frac * (hi - lo)), &err), MPQ_OK);
    return p;
}

/* Best objective over every assignment meeting the budget (unsmoothed losses + active terms);
 * +inf when none does. */
static double brute(const mpq_problem *p, const mpq_pair_term *t, int nt) {
    int n = mpq_problem_n_items(p);
    int choice[16] = {0};
    double best = INFINITY;
    for (;;) {
        double cost = 0, loss = 0;
        for (int i = 0; i < n; i++) {
            cost += mpq_problem_cost(p, 0, i, choice[i]);
            loss += mpq_problem_loss(p, i, choice[i]);
        }
        if (cost <= mpq_problem_budget(p, 0)) {
            loss += mpq_pair_terms_value(t, nt, choice);
            if (loss < best) best = loss;
        }
        int i = 0;
        while (i < n && ++choice[i] == mpq_problem_n_options(p, i)) choice[i++] = 0;
        if (i == n) break;
    }
    return best;
}

/* _i = 0: the aggregated linearisation (default), 1: the three-row standard one */
START_TEST(test_pairs_vs_brute) {
    rng_state = 12345;
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = false; /* brute force enumerates the raw losses */
    so.pair_standard_form = _i == 1;
    for (int inst = 0; inst < 40; inst++) {
        int n = 3 + inst % 4, n_opt = 2 + inst % 3;
        mpq_problem *p = make_problem(n, n_opt, 0.2 + 0.15 * (inst % 5));
        int nt = 4 + (int)(urand() * 28); /* with repeats of the same product */
        mpq_pair_term t[32];
        for (int k = 0; k < nt; k++) {
            int a = (int)(urand() * n), b = (int)(urand() * (n - 1));
            if (b >= a) b++;
            /* both signs, of the size of the losses: the terms change the optimum */
            t[k] = (mpq_pair_term){.item_a = a, .option_a = (int)(urand() * n_opt), .item_b = b,
                                   .option_b = (int)(urand() * n_opt), .value = (urand() - 0.4) * 1.5};
        }
        mpq_solution *s = NULL;
        mpq_err err = {0};
        double want = brute(p, t, nt);
        mpq_status st = mpq_solve_ilp_pairs(p, t, nt, &so, &s, &err);
        if (!isfinite(want)) {
            ck_assert_int_eq(st, MPQ_ERR_INFEASIBLE);
        } else {
            ck_assert_msg(st == MPQ_OK, "instance %d: %s", inst, err.msg);
            /* the returned objective is recomputed from the choice (exact sums of the same
             * doubles as brute force); GLPK proves optimality up to its relative objective
             * tolerance tol_obj = 1e-7, so an optimum may be missed by at most that much */
            double tol = 1e-7 * (1.0 + fabs(want));
            ck_assert_double_eq_tol(s->total_loss, want, tol);
            double direct = mpq_pair_terms_value(t, nt, s->choice);
            for (int i = 0; i < n; i++) direct += mpq_problem_loss(p, i, s->choice[i]);
            ck_assert_double_eq_tol(s->total_loss_raw, direct, 1e-12 * (1.0 + fabs(direct)));
            ck_assert(s->total_cost[0] <= mpq_problem_budget(p, 0));
            ck_assert(s->bound <= s->total_loss + tol);
        }
        mpq_solution_free(s);
        mpq_problem_free(p);
    }
}
END_TEST

START_TEST(test_no_terms_equals_ilp) {
    rng_state = 777;
    mpq_solve_opts so = mpq_solve_opts_default(); /* smoothing on: both optimize the same losses */
    for (int inst = 0; inst < 10; inst++) {
        mpq_problem *p = make_problem(6, 4, 0.3 + 0.05 * inst);
        mpq_solution *a = NULL, *b = NULL;
        mpq_err err = {0};
        ck_assert_int_eq(mpq_solve_ilp(p, &so, &a, &err), MPQ_OK);
        ck_assert_int_eq(mpq_solve_ilp_pairs(p, NULL, 0, &so, &b, &err), MPQ_OK);
        /* both proven optimal on the same objective; GLPK's tol_obj as above */
        ck_assert_double_eq_tol(a->total_loss, b->total_loss, 1e-7 * (1.0 + fabs(a->total_loss)));
        mpq_solution_free(a);
        mpq_solution_free(b);
        mpq_problem_free(p);
    }
}
END_TEST

START_TEST(test_hostile_terms) {
    rng_state = 5;
    mpq_problem *p = make_problem(3, 3, 0.5);
    mpq_solution *s = NULL;
    mpq_err err = {0};
    mpq_pair_term bad[] = {
        {.item_a = 1, .option_a = 0, .item_b = 1, .option_b = 2, .value = 0.1},  /* same item */
        {.item_a = 0, .option_a = 3, .item_b = 1, .option_b = 0, .value = 0.1},  /* option out of range */
        {.item_a = -1, .option_a = 0, .item_b = 1, .option_b = 0, .value = 0.1}, /* item out of range */
        {.item_a = 0, .option_a = 0, .item_b = 1, .option_b = 0, .value = NAN},  /* not finite */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ck_assert_int_eq(mpq_solve_ilp_pairs(p, &bad[k], 1, NULL, &s, &err), MPQ_ERR_INVALID);
        ck_assert_ptr_null(s);
        ck_assert_ptr_nonnull(strstr(err.msg, "term 0"));
    }
    ck_assert_int_eq(mpq_solve_ilp_pairs(p, NULL, 2, NULL, &s, &err), MPQ_ERR_INVALID);
    /* a budget below the cheapest assignment */
    ck_assert_int_eq(mpq_problem_set_budget(p, 0, 1.0, &err), MPQ_OK);
    mpq_pair_term ok = {.item_a = 0, .option_a = 0, .item_b = 1, .option_b = 0, .value = -0.5};
    ck_assert_int_eq(mpq_solve_ilp_pairs(p, &ok, 1, NULL, &s, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_null(s);
    mpq_problem_free(p);
    mpq_pairs_scope sc;
    ck_assert_int_eq(mpq_pairs_scope_parse("all", &sc, &err), MPQ_OK);
    ck_assert_int_eq(sc, MPQ_PAIRS_SCOPE_ALL);
    ck_assert_int_eq(mpq_pairs_scope_parse("blocks", &sc, &err), MPQ_ERR_INVALID);
    mpq_pairs_opts o = mpq_pairs_opts_default();
    mpq_pairs_result *r = NULL;
    ck_assert_int_eq(mpq_pairs_run(NULL, &o, &r, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(r);
}
END_TEST

static Suite *pairs_suite(void) {
    Suite *s = suite_create("pairs");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_pairs_vs_brute, 0, 2);
    tcase_add_test(tc, test_no_terms_equals_ilp);
    tcase_add_test(tc, test_hostile_terms);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(pairs_suite)
