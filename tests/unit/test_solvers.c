/* test_solvers.c - solvers: ILP (GLPK), exact DP (both engines) and exact Pareto frontier
 * against brute force on hundreds of random small instances (budgets, pins, masks, ties,
 * infeasible budgets); LP-based reduced-cost fixing of the ILP; monotone smoothing; hull vs exact frontier; knee rule on a known
 * curve; water-filling vs its closed form; SAQ segment DP vs brute force; hostile inputs;
 * and the whole chain on the real stories260K layers (fake-quantization errors as losses). */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_rng.h"
#include "mpq/mpq_solvers.h"
#include "test_util.h"
#include "../../solvers/solvers_internal.h"

/* fixed-seed PRNG: the splitmix64 stream of mpq_rng.h */
static uint64_t rng_state;
static uint64_t rng_next(void) { return mpq_rng_splitmix64(&rng_state); }
static int rng_int(int lo, int hi) { return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1)); }
static double rng_unif(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; }

/* Random instance as described in the brief; returns the problem. */
static mpq_problem *random_problem(int *n_res_out) {
    mpq_err err = {0};
    mpq_problem *p = NULL;
    int n = rng_int(2, 6), omax = rng_int(2, 4), R = rng_int(1, 2);
    ck_assert_int_eq(mpq_problem_create(n, omax, R, &p, &err), MPQ_OK);
    ck_assert_int_eq(mpq_problem_set_resource_name(p, 0, "bits", &err), MPQ_OK);
    if (R == 2) ck_assert_int_eq(mpq_problem_set_resource_name(p, 1, "bops", &err), MPQ_OK);
    bool dyadic = rng_int(0, 1); /* losses k/64: exact sums and many ties */
    double lo_sum[2] = {0, 0}, hi_sum[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        int no = rng_int(2, omax);
        ck_assert_int_eq(mpq_problem_set_n_options(p, i, no, &err), MPQ_OK);
        int n_allowed = 0;
        for (int o = 0; o < no; o++) {
            double l = dyadic ? rng_int(0, 64) / 64.0 : rng_unif();
            ck_assert_int_eq(mpq_problem_set_loss(p, i, o, l, &err), MPQ_OK);
            ck_assert_int_eq(mpq_problem_set_cost(p, 0, i, o, rng_int(0, 12), &err), MPQ_OK);
            if (R == 2) ck_assert_int_eq(mpq_problem_set_cost(p, 1, i, o, rng_int(0, 40) * 0.25, &err), MPQ_OK);
            bool allowed = rng_int(0, 99) >= 15;
            if (o == no - 1 && n_allowed == 0) allowed = true;
            n_allowed += allowed;
            ck_assert_int_eq(mpq_problem_set_allowed(p, i, o, allowed, &err), MPQ_OK);
        }
        if (rng_int(0, 9) == 0) {
            int o;
            do o = rng_int(0, no - 1); while (!mpq_problem_allowed(p, i, o));
            ck_assert_int_eq(mpq_problem_pin(p, i, o, &err), MPQ_OK);
        }
        for (int r = 0; r < R; r++) {
            double mn = INFINITY, mx = -INFINITY;
            for (int o = 0; o < no; o++) {
                if (!mpq_problem_allowed(p, i, o)) continue;
                double c = mpq_problem_cost(p, r, i, o);
                if (c < mn) mn = c;
                if (c > mx) mx = c;
            }
            lo_sum[r] += mn;
            hi_sum[r] += mx;
        }
    }
    for (int r = 0; r < R; r++) {
        if (r == 1 && rng_int(0, 2) == 0) continue; /* sometimes no second budget */
        double b = lo_sum[r] - 2 + rng_unif() * (hi_sum[r] - lo_sum[r] + 4);
        if (r == 0) b = floor(b);
        else b = floor(b * 4) / 4;
        ck_assert_int_eq(mpq_problem_set_budget(p, r, b, &err), MPQ_OK);
    }
    *n_res_out = R;
    return p;
}

static bool solution_feasible(const mpq_problem *p, const mpq_solution *s) {
    for (int r = 0; r < mpq_problem_n_resources(p); r++) {
        double c = 0;
        for (int i = 0; i < mpq_problem_n_items(p); i++) {
            if (!mpq_problem_allowed(p, i, s->choice[i])) return false;
            c += mpq_problem_cost(p, r, i, s->choice[i]);
        }
        if (c > mpq_problem_budget(p, r)) return false;
    }
    return true;
}

START_TEST(test_random_vs_brute) {
    rng_state = 20240601;
    int n_feasible = 0, n_infeasible = 0, n_dp = 0;
    for (int t = 0; t < 400; t++) {
        int R = 0;
        mpq_problem *p = random_problem(&R);
        mpq_solve_opts opts = mpq_solve_opts_default();
        opts.smooth = rng_int(0, 1);
        opts.warm_start = rng_int(0, 1);
        mpq_err eb = {0}, ei = {0}, ed = {0};
        mpq_solution *sb = NULL, *si = NULL, *sd = NULL, *sd2 = NULL;
        mpq_status stb = mpq_solve_brute(p, &opts, &sb, &eb);
        mpq_status sti = mpq_solve_ilp(p, &opts, &si, &ei);
        ck_assert_msg(stb == MPQ_OK || stb == MPQ_ERR_INFEASIBLE, "instance %d: brute %s", t, eb.msg);
        ck_assert_msg(sti == stb, "instance %d: ilp %d (%s) vs brute %d", t, sti, ei.msg, stb);
        /* Tolerances. DP/frontier: the same options summed in item order give identical
         * doubles; a different tied assignment differs by rounding only: at most
         * 2 * n * eps * sum|L| <= 2 * 6 * 2.2e-16 * 6 = 1.6e-14 (|L| <= 1), so 1e-13.
         * ILP: GLPK prunes nodes within 1e-10 * (1 + |best|) of the incumbent, |best| <= 6,
         * so 1e-9 (distinct objectives of these instances differ by far more). */
        const double tol_exact = 1e-13, tol_ilp = 1e-9;
        bool one_budget = R == 1 || mpq_problem_budget(p, 1) == INFINITY;
        if (stb == MPQ_OK) {
            n_feasible++;
            ck_assert(solution_feasible(p, sb));
            ck_assert(solution_feasible(p, si));
            ck_assert_double_eq_tol(si->total_loss, sb->total_loss, tol_ilp);
            ck_assert_int_eq(si->status, MPQ_SOLVE_OPTIMAL);
            ck_assert(si->gap <= 1e-9);
            ck_assert(si->bound <= si->total_loss + tol_ilp);
            ck_assert_int_eq(si->smoothed, opts.smooth);
        } else {
            n_infeasible++;
            ck_assert_ptr_null(sb);
            ck_assert_ptr_null(si);
            ck_assert_msg(strstr(ei.msg, "bits") || strstr(ei.msg, "bops"), "message names a budget: %s", ei.msg);
            ck_assert_ptr_nonnull(strstr(ei.msg, "infeasible"));
        }
        if (one_budget) {
            n_dp++;
            mpq_solve_opts o2 = opts;
            mpq_status std = mpq_solve_dp(p, &opts, &sd, &ed);
            ck_assert_msg(std == stb, "instance %d: dp %d (%s)", t, std, ed.msg);
            o2.dp_max_bytes = 0; /* force the bounded Pareto engine */
            ck_assert_int_eq(mpq_solve_dp(p, &o2, &sd2, &ed), stb);
            mpq_frontier *f = NULL;
            ck_assert_int_eq(mpq_frontier_exact(p, &opts, &f, &ed), MPQ_OK);
            size_t k = mpq_frontier_at_budget(f, mpq_problem_budget(p, 0));
            if (stb == MPQ_OK) {
                ck_assert_msg(!strcmp(sd2->solver, "dp-pareto") || !strcmp(sd2->solver, "dp-trivial"), "%s",
                              sd2->solver);
                ck_assert(solution_feasible(p, sd));
                ck_assert(solution_feasible(p, sd2));
                ck_assert_double_eq_tol(sd->total_loss, sb->total_loss, tol_exact);
                ck_assert_double_eq_tol(sd2->total_loss, sb->total_loss, tol_exact);
                ck_assert_uint_ne(k, SIZE_MAX);
                ck_assert_double_eq_tol(f->loss[k], sb->total_loss, tol_exact);
                int choice[6];
                ck_assert_int_eq(mpq_frontier_assignment(p, f, k, choice, &ed), MPQ_OK);
                double c = 0;
                for (int i = 0; i < mpq_problem_n_items(p); i++) c += mpq_problem_cost(p, 0, i, choice[i]);
                ck_assert(c <= mpq_problem_budget(p, 0));
                ck_assert_double_eq(c, f->cost[k]);
            } else {
                ck_assert_uint_eq(k, SIZE_MAX);
                ck_assert_ptr_nonnull(strstr(ed.msg, "bits"));
            }
            /* frontier: strictly increasing cost, strictly decreasing loss */
            for (size_t q = 1; q < f->n_points; q++) {
                ck_assert(f->cost[q] > f->cost[q - 1]);
                ck_assert(f->loss[q] < f->loss[q - 1]);
            }
            mpq_frontier_free(f);
        }
        mpq_solution_free(sb);
        mpq_solution_free(si);
        mpq_solution_free(sd);
        mpq_solution_free(sd2);
        mpq_problem_free(p);
    }
    /* the generator must exercise both outcomes and the DP path */
    ck_assert_int_gt(n_feasible, 150);
    ck_assert_int_gt(n_infeasible, 20);
    ck_assert_int_gt(n_dp, 150);
}
END_TEST

/* LP-based reduced-cost fixing (solv_ilp_fix in ilp_glpk.c) on random instances: every option
 * of the brute-force optimum is kept, the problem restricted to the kept options has the same
 * optimum, the Lagrangian bound and the incumbent bracket the optimum, and the ILP gives the
 * same optimum with and without fixing. */
START_TEST(test_ilp_fixing) {
    rng_state = 31337;
    int n_feasible = 0, n_removed = 0, n_all_fixed = 0;
    for (int t = 0; t < 400; t++) {
        int R = 0;
        mpq_problem *p = random_problem(&R);
        int n = mpq_problem_n_items(p), omax = 4;
        mpq_solve_opts opts = mpq_solve_opts_default();
        opts.smooth = rng_int(0, 1);
        mpq_err err = {0};
        mpq_solution *sb = NULL, *sf = NULL, *sn = NULL, *sr = NULL;
        mpq_status stb = mpq_solve_brute(p, &opts, &sb, &err);
        ck_assert(stb == MPQ_OK || stb == MPQ_ERR_INFEASIBLE);
        /* ILP with and without fixing */
        solv_ilp_info info_f, info_n;
        ck_assert_int_eq(solv_ilp_solve(p, &opts, true, &sf, &info_f, &err), stb);
        ck_assert_int_eq(solv_ilp_solve(p, &opts, false, &sn, &info_n, &err), stb);
        /* the fixing step itself */
        double *eff = NULL;
        ck_assert_int_eq(solv_effective_losses(p, opts.smooth, &eff, &err), MPQ_OK);
        unsigned char keep[6 * 4];
        int inc[6];
        solv_ilp_info info;
        ck_assert_int_le(n, 6);
        ck_assert_int_le(p->n_opt_max, omax);
        ck_assert_int_eq(solv_ilp_fix(p, &opts, eff, keep, inc, &info, &err), MPQ_OK);
        if (stb == MPQ_OK) {
            n_feasible++;
            /* tolerance as in test_random_vs_brute: ILP 1e-9 (GLPK's pruning tolerance),
             * exact sums of the same options 1e-13 (2 n eps sum|L| <= 1.6e-14) */
            ck_assert_double_eq_tol(sf->total_loss, sb->total_loss, 1e-9);
            ck_assert_double_eq_tol(sn->total_loss, sb->total_loss, 1e-9);
            ck_assert_int_eq(sf->status, MPQ_SOLVE_OPTIMAL);
            ck_assert(sf->bound <= sb->total_loss + 1e-9);
            ck_assert_int_eq(info_n.n_cols, info_n.n_cols_full); /* no fixing: the plain model */
            ck_assert_int_le(info_f.n_cols, info_f.n_cols_full);
            /* feasible instances always get an incumbent (greedy or Lagrangian choice, or
             * without one no fixing at all) and Z <= OPT <= incumbent */
            ck_assert(info.lagr_bound <= sb->total_loss + 1e-13);
            if (isfinite(info.incumbent)) ck_assert(info.incumbent >= sb->total_loss - 1e-13);
            for (int i = 0; i < n; i++)
                ck_assert_msg(keep[i * p->n_opt_max + sb->choice[i]], "instance %d: optimal option of item %d removed",
                              t, i);
            /* restrict the problem to the kept options: same optimum (unsmoothed only: the
             * smoothed losses depend on the allowed set) */
            int removed = 0, left = 0;
            for (int i = 0; i < n; i++) {
                int k = 0;
                for (int o = 0; o < mpq_problem_n_options(p, i); o++) {
                    if (!mpq_problem_allowed(p, i, o)) continue;
                    if (keep[i * p->n_opt_max + o]) {
                        k++;
                    } else {
                        removed++;
                        ck_assert_int_eq(mpq_problem_set_allowed(p, i, o, false, &err), MPQ_OK);
                    }
                }
                left += k > 1;
            }
            n_removed += removed;
            n_all_fixed += left == 0;
            if (!opts.smooth) {
                ck_assert_int_eq(mpq_solve_brute(p, &opts, &sr, &err), MPQ_OK);
                ck_assert_double_eq_tol(sr->total_loss, sb->total_loss, 1e-13);
            }
        } else {
            ck_assert(!isfinite(info.incumbent));
        }
        free(eff);
        mpq_solution_free(sb);
        mpq_solution_free(sf);
        mpq_solution_free(sn);
        mpq_solution_free(sr);
        mpq_problem_free(p);
    }
    /* not vacuous: fixing removes options, and often settles whole instances */
    ck_assert_int_gt(n_feasible, 150);
    ck_assert_int_gt(n_removed, 200);
    ck_assert_int_gt(n_all_fixed, 20);
}
END_TEST

/* Budget tightening (ilp_glpk.c): one integral budget whose option costs differ by multiples
 * of 3 within each item (item offsets arbitrary), so the budget rounds down to the lattice of
 * reachable costs; ILP with fixing = ILP without = brute force, and the tightened budget is
 * met by the brute-force optimum. */
START_TEST(test_ilp_tighten) {
    rng_state = 4242;
    int n_tight = 0, n_ok = 0;
    for (int t = 0; t < 300; t++) {
        mpq_err err = {0};
        mpq_problem *p = NULL;
        int n = rng_int(2, 6), no = rng_int(2, 4);
        ck_assert_int_eq(mpq_problem_create(n, no, 1, &p, &err), MPQ_OK);
        double lo = 0, hi = 0;
        for (int i = 0; i < n; i++) {
            int off = rng_int(0, 7), mn = 1000, mx = 0;
            for (int o = 0; o < no; o++) {
                int c = off + 3 * rng_int(0, 5);
                if (c < mn) mn = c;
                if (c > mx) mx = c;
                ck_assert_int_eq(mpq_problem_set_cost(p, 0, i, o, c, &err), MPQ_OK);
                ck_assert_int_eq(mpq_problem_set_loss(p, i, o, rng_int(0, 64) / 64.0 + 1.0 / (1 + c), &err), MPQ_OK);
            }
            lo += mn;
            hi += mx;
        }
        ck_assert_int_eq(mpq_problem_set_budget(p, 0, floor(lo + rng_unif() * (hi - lo)), &err), MPQ_OK);
        mpq_solve_opts opts = mpq_solve_opts_default();
        opts.smooth = rng_int(0, 1);
        mpq_solution *sb = NULL, *sf = NULL, *sn = NULL;
        solv_ilp_info info;
        ck_assert_int_eq(mpq_solve_brute(p, &opts, &sb, &err), MPQ_OK);
        ck_assert_int_eq(solv_ilp_solve(p, &opts, true, &sf, &info, &err), MPQ_OK);
        ck_assert_int_eq(solv_ilp_solve(p, &opts, false, &sn, NULL, &err), MPQ_OK);
        /* tolerance 1e-9: GLPK's pruning tolerance (see test_random_vs_brute) */
        ck_assert_double_eq_tol(sf->total_loss, sb->total_loss, 1e-9);
        ck_assert_double_eq_tol(sn->total_loss, sb->total_loss, 1e-9);
        ck_assert_int_eq(sf->status, MPQ_SOLVE_OPTIMAL);
        ck_assert(sf->bound <= sb->total_loss + 1e-9);
        ck_assert(info.lagr_bound <= sb->total_loss + 1e-13);
        if (info.tight_res >= 0) {
            n_tight++;
            ck_assert(info.tight_budget < mpq_problem_budget(p, 0));
            if (sb->total_cost[0] <= info.tight_budget) n_ok++;
        }
        mpq_solution_free(sb);
        mpq_solution_free(sf);
        mpq_solution_free(sn);
        mpq_problem_free(p);
    }
    ck_assert_int_gt(n_tight, 30);
    /* every optimal assignment survives fixing (only options strictly worse than the
     * incumbent go), so the brute-force optimum meets the tightened budget */
    ck_assert_int_eq(n_ok, n_tight);
}
END_TEST

START_TEST(test_smoothing) {
    mpq_err err = {0};
    mpq_problem *p = NULL;
    ck_assert_int_eq(mpq_problem_create(1, 5, 1, &p, &err), MPQ_OK);
    const double c[5] = {1, 2, 3, 3, 4}, l[5] = {5, 6, 4, 7, 4.5};
    /* o1 dearer than o0 but worse -> 5; o3 ties o2 in cost (keeps 7 vs o2) but is dearer than
     * o0/o1 -> min(7, 5) = 5; o4 -> min(4.5, 4) = 4 */
    const double want[5] = {5, 5, 4, 5, 4};
    for (int o = 0; o < 5; o++) {
        mpq_problem_set_loss(p, 0, o, l[o], &err);
        mpq_problem_set_cost(p, 0, 0, o, c[o], &err);
    }
    double out[5];
    ck_assert_int_eq(mpq_problem_smoothed_losses(p, out, &err), MPQ_OK);
    for (int o = 0; o < 5; o++) ck_assert_double_eq(out[o], want[o]);
    /* a masked-out option never lends its loss */
    mpq_problem_set_allowed(p, 0, 2, false, &err);
    ck_assert_int_eq(mpq_problem_smoothed_losses(p, out, &err), MPQ_OK);
    ck_assert(isnan(out[2]));
    ck_assert_double_eq(out[4], 4.5);
    mpq_problem_free(p);

    /* property on random items: L' <= L, and C(a) > C(b) implies L'(a) <= L'(b) */
    rng_state = 7;
    for (int t = 0; t < 200; t++) {
        ck_assert_int_eq(mpq_problem_create(1, 8, 1, &p, &err), MPQ_OK);
        for (int o = 0; o < 8; o++) {
            mpq_problem_set_loss(p, 0, o, rng_unif(), &err);
            mpq_problem_set_cost(p, 0, 0, o, rng_int(0, 5), &err);
        }
        double s[8];
        ck_assert_int_eq(mpq_problem_smoothed_losses(p, s, &err), MPQ_OK);
        for (int a = 0; a < 8; a++) {
            ck_assert(s[a] <= mpq_problem_loss(p, 0, a));
            for (int b = 0; b < 8; b++)
                if (mpq_problem_cost(p, 0, 0, a) > mpq_problem_cost(p, 0, 0, b)) ck_assert(s[a] <= s[b]);
        }
        mpq_problem_free(p);
    }
}
END_TEST

START_TEST(test_knee_and_hull) {
    /* y = (1-x)^2 sampled at x = k/100: normalized chord y = 1 - x, distance (1-x) - (1-x)^2
     * is largest at x = 1/2, i.e. k = 50. */
    mpq_frontier f = {0};
    double cost[101], loss[101];
    for (int k = 0; k <= 100; k++) {
        cost[k] = 1000 + 10 * k;
        loss[k] = 3.0 + 7.0 * (1 - k / 100.0) * (1 - k / 100.0);
    }
    f.cost = cost;
    f.loss = loss;
    f.n_points = 101;
    ck_assert_uint_eq(mpq_frontier_knee(&f), 50);
    f.n_points = 2;
    ck_assert_uint_eq(mpq_frontier_knee(&f), 0);
    f.n_points = 0;
    ck_assert_uint_eq(mpq_frontier_knee(&f), SIZE_MAX);

    /* Hull vertices lie on the exact frontier; gaps >= 0; knee of a real exact frontier. */
    rng_state = 99;
    mpq_err err = {0};
    for (int t = 0; t < 30; t++) {
        mpq_problem *p = NULL;
        ck_assert_int_eq(mpq_problem_create(12, 6, 1, &p, &err), MPQ_OK);
        for (int i = 0; i < 12; i++)
            for (int o = 0; o < 6; o++) {
                mpq_problem_set_cost(p, 0, i, o, (o + 2) * rng_int(1, 4), &err);
                mpq_problem_set_loss(p, i, o, exp(-(double)o) * (1 + 0.3 * rng_unif()), &err);
            }
        mpq_solve_opts opts = mpq_solve_opts_default();
        mpq_frontier *ex = NULL, *hu = NULL;
        ck_assert_int_eq(mpq_frontier_exact(p, &opts, &ex, &err), MPQ_OK);
        ck_assert_int_eq(mpq_frontier_hull(p, &opts, &hu, &err), MPQ_OK);
        ck_assert(hu->n_points <= ex->n_points);
        double *gap = malloc(hu->n_points * sizeof *gap);
        ck_assert_int_eq(mpq_frontier_hull_gaps(hu, ex, gap, &err), MPQ_OK);
        int choice[12];
        for (size_t k = 0; k < hu->n_points; k++) {
            size_t j = mpq_frontier_at_budget(ex, hu->cost[k]);
            ck_assert_uint_ne(j, SIZE_MAX);
            /* losses are sums of 12 terms < 1.3 in different orders: 2*12*eps*16 < 1e-13 */
            ck_assert_double_eq_tol(ex->loss[j], hu->loss[k], 1e-13);
            ck_assert(gap[k] >= 0);
            ck_assert_int_eq(mpq_frontier_assignment(p, hu, k, choice, &err), MPQ_OK);
            double c = 0;
            for (int i = 0; i < 12; i++) c += mpq_problem_cost(p, 0, i, choice[i]);
            ck_assert_double_eq(c, hu->cost[k]);
        }
        /* dearest point: the least loss anywhere (same tolerance as above) */
        ck_assert_double_eq_tol(gap[hu->n_points - 1], 0, 1e-13);
        size_t knee = mpq_frontier_knee(ex);
        ck_assert(knee > 0 && knee + 1 < ex->n_points);
        free(gap);
        mpq_frontier_free(ex);
        mpq_frontier_free(hu);
        mpq_problem_free(p);
    }
}
END_TEST

START_TEST(test_waterfill) {
    mpq_err err = {0};
    /* Two active layers: log2 theta = (n1 log2 c1 + n2 log2 c2 - 2B) / (n1 + n2). */
    const double n[2] = {1000, 3000}, c[2] = {4.0, 1.0};
    double B = 4000 * 2.5, rate[2], D, theta;
    ck_assert_int_eq(mpq_bound_waterfill(n, c, 2, B, rate, &D, &theta, &err), MPQ_OK);
    double lt = (1000 * 2.0 + 3000 * 0.0 - 2 * B) / 4000.0;
    /* bisection to double resolution of log2 theta (~1e-15 relative) */
    ck_assert_double_eq_tol(theta, exp2(lt), 1e-12 * exp2(lt));
    ck_assert_double_eq_tol(rate[0], 0.5 * (2.0 - lt), 1e-12);
    ck_assert_double_eq_tol(rate[1], 0.5 * (0.0 - lt), 1e-12);
    ck_assert_double_eq_tol(D, 4000 * exp2(lt), 1e-12 * 4000 * exp2(lt));
    ck_assert_double_eq_tol(n[0] * rate[0] + n[1] * rate[1], B, 1e-9 * B);
    double D_first = D;
    /* One inactive layer: budget so small that only layer 0 (c = 4) gets bits: with B = 500,
     * R0 = 0.5, theta = 4 * 2^-1 = 2 > c1 = 1, so D = 1000 * 2 + 3000 * 1 = 5000. */
    ck_assert_int_eq(mpq_bound_waterfill(n, c, 2, 500, rate, &D, &theta, &err), MPQ_OK);
    ck_assert_double_eq_tol(theta, 2.0, 1e-12);
    ck_assert_double_eq(rate[1], 0.0);
    ck_assert_double_eq_tol(D, 5000, 1e-9);
    /* lower bound: no integer allocation with sum n R <= B beats it */
    for (int r0 = 0; r0 <= 8; r0++)
        for (int r1 = 0; r1 <= 8; r1++) {
            if (n[0] * r0 + n[1] * r1 > B) continue;
            double d = n[0] * c[0] * exp2(-2.0 * r0) + n[1] * c[1] * exp2(-2.0 * r1);
            ck_assert_double_ge(d, D_first);
        }
    /* hostile */
    const double bad_n[2] = {0, 1};
    ck_assert_int_eq(mpq_bound_waterfill(bad_n, c, 2, B, NULL, &D, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_bound_waterfill(n, c, 2, -1, NULL, &D, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_bound_waterfill(n, c, 2, NAN, NULL, &D, NULL, &err), MPQ_ERR_INVALID);
}
END_TEST

/* brute force over all splits (bit mask of cut points) and bit widths */
static double seg_brute(const double *var, int d, const int *bits, int nb, int64_t ovh, int64_t budget) {
    double best = INFINITY;
    for (unsigned mask = 0; mask < (1u << (d - 1)); mask++) {
        int start[16], ns = 0;
        start[ns++] = 0;
        for (int j = 1; j < d; j++)
            if (mask & (1u << (j - 1))) start[ns++] = j;
        start[ns] = d;
        int choice[16] = {0};
        for (;;) {
            int64_t cost = 0;
            double dist = 0;
            for (int s = 0; s < ns; s++) {
                cost += (int64_t)(start[s + 1] - start[s]) * bits[choice[s]] + ovh;
                for (int j = start[s]; j < start[s + 1]; j++) dist += var[j] * exp2(-2.0 * bits[choice[s]]);
            }
            if (cost <= budget && dist < best) best = dist;
            int s = 0;
            while (s < ns && ++choice[s] == nb) choice[s++] = 0;
            if (s == ns) break;
        }
    }
    return best;
}

START_TEST(test_segment_dp) {
    rng_state = 4242;
    mpq_err err = {0};
    const int bits[4] = {0, 2, 4, 8};
    for (int t = 0; t < 60; t++) {
        int d = rng_int(1, 8);
        double var[8], sum = 0;
        var[0] = 1 + 10 * rng_unif();
        for (int j = 1; j < d; j++) var[j] = var[j - 1] * (0.3 + 0.7 * rng_unif()); /* descending */
        for (int j = 0; j < d; j++) sum += var[j];
        int64_t ovh = rng_int(0, 6), budget = rng_int(0, 8 * d + 6);
        int start[9], sb[9], ns = 0;
        double D = 0;
        mpq_status st = mpq_segment_dp(var, NULL, d, bits, 4, ovh, budget, start, sb, &ns, &D, &err);
        double want = seg_brute(var, d, bits, 4, ovh, budget);
        if (want == INFINITY) {
            ck_assert_int_eq(st, MPQ_ERR_INFEASIBLE);
            continue;
        }
        ck_assert_int_eq(st, MPQ_OK);
        /* sums of <= 8 positive terms in different orders: 2 * d * eps * sum var */
        ck_assert_double_eq_tol(D, want, 2 * 8 * DBL_EPSILON * sum);
        /* the returned split is consistent: contiguous, within budget, same distortion */
        int64_t cost = 0;
        double dist = 0;
        ck_assert_int_eq(start[0], 0);
        ck_assert_int_eq(start[ns], d);
        for (int s = 0; s < ns; s++) {
            ck_assert_int_lt(start[s], start[s + 1]);
            cost += (int64_t)(start[s + 1] - start[s]) * sb[s] + ovh;
            for (int j = start[s]; j < start[s + 1]; j++) dist += var[j] * exp2(-2.0 * sb[s]);
        }
        ck_assert(cost <= budget);
        ck_assert_double_eq_tol(dist, D, 2 * 8 * DBL_EPSILON * sum);
    }
    /* hostile */
    int start[3], sb[3], ns;
    double D, var2[2] = {1, 1};
    const int badbits[1] = {-1};
    ck_assert_int_eq(mpq_segment_dp(var2, NULL, 2, badbits, 1, 0, 10, start, sb, &ns, &D, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_segment_dp(var2, NULL, 0, bits, 4, 0, 10, start, sb, &ns, &D, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_segment_dp(var2, NULL, 2, bits + 1, 3, 5, 8, start, sb, &ns, &D, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_nonnull(strstr(err.msg, "budget 8"));
}
END_TEST

/* The "auto" choice (mpq_solve_estimate_cost): on bench_solvers' 1,000 x 8 instance (storage
 * bits of 4096 x k weights, budget 4 bits/weight: a 15M-cell DP table, seconds) it picks the
 * ILP (milliseconds); on 12 items with costs 1..8 (a table of a few hundred cells) the DP;
 * with two budgets the ILP, as the DP does not apply. Each time both engines reach the
 * same objective (both exact: ILP at mip_gap 0). */
static const double AUTO_BPW[8] = {2.25, 3.25, 4.25, 5.25, 6.25, 8.25, 12.25, 16};

START_TEST(test_auto_choice) {
    mpq_err err = {0};
    for (int c = 0; c < 3; c++) {
        rng_state = 12345;
        int n = c == 0 ? 1000 : 12;
        mpq_problem *p = NULL;
        ck_assert_int_eq(mpq_problem_create(n, 8, c == 2 ? 2 : 1, &p, &err), MPQ_OK);
        double tp = 0;
        for (int i = 0; i < n; i++) {
            double np = c == 0 ? 4096.0 * (double)(1 + rng_next() % 16) : 1.0;
            double sens = exp(log(1e-3) + rng_unif() * log(1e4));
            tp += np;
            for (int o = 0; o < 8; o++) {
                double cost = c == 0 ? AUTO_BPW[o] * np : (double)(o + 1);
                ck_assert_int_eq(mpq_problem_set_cost(p, 0, i, o, cost, &err), MPQ_OK);
                if (c == 2) ck_assert_int_eq(mpq_problem_set_cost(p, 1, i, o, (double)(8 - o), &err), MPQ_OK);
                double loss = np * sens * exp2(-2.0 * (c == 0 ? AUTO_BPW[o] : o + 1)) * (1 + 0.1 * rng_unif());
                ck_assert_int_eq(mpq_problem_set_loss(p, i, o, loss, &err), MPQ_OK);
            }
        }
        ck_assert_int_eq(mpq_problem_set_budget(p, 0, c == 0 ? floor(4.0 * tp) : 4.0 * n, &err), MPQ_OK);
        if (c == 2) ck_assert_int_eq(mpq_problem_set_budget(p, 1, 6.0 * n, &err), MPQ_OK);
        mpq_solve_opts o = mpq_solve_opts_default();
        mpq_solve_estimate e;
        ck_assert_int_eq(mpq_solve_estimate_cost(p, &o, &e, &err), MPQ_OK);
        ck_assert_str_eq(e.solver, c == 1 ? "dp" : "ilp");
        ck_assert_msg(strstr(e.reason, e.solver) == e.reason, "reason '%s'", e.reason);
        ck_assert_int_eq(e.n_columns, 8 * n);
        mpq_solution *si = NULL, *sd = NULL;
        ck_assert_int_eq(mpq_solve_ilp(p, &o, &si, &err), MPQ_OK);
        if (c < 2) {
            ck_assert_str_eq(e.dp_engine, "dp-array");
            ck_assert(c == 0 ? e.dp_seconds > 100 * e.ilp_seconds : e.dp_seconds < e.ilp_seconds);
            ck_assert_int_eq(mpq_solve_dp(p, &o, &sd, &err), MPQ_OK);
            ck_assert_double_eq_tol(si->total_loss, sd->total_loss, 1e-12 * sd->total_loss);
        } else {
            ck_assert_ptr_null(e.dp_engine);
            ck_assert(isinf(e.dp_seconds));
        }
        mpq_solution_free(si);
        mpq_solution_free(sd);
        mpq_problem_free(p);
    }
}
END_TEST

START_TEST(test_hostile_problem) {
    mpq_err err = {0};
    mpq_problem *p = NULL;
    mpq_solution *s = NULL;
    mpq_solve_opts opts = mpq_solve_opts_default();
    ck_assert_int_eq(mpq_problem_create(0, 4, 1, &p, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_create(3, 256, 1, &p, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_create(3, 4, 0, &p, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_create(1 << 30, 255, 64, &p, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(mpq_problem_create(3, 4, 2, &p, &err), MPQ_OK);
    ck_assert_int_eq(mpq_problem_set_loss(p, 3, 0, 1.0, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_set_loss(p, 0, 4, 1.0, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_set_loss(p, 0, 0, NAN, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_set_cost(p, 2, 0, 0, 1.0, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_set_cost(p, 0, 0, 0, INFINITY, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_set_budget(p, 0, NAN, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_set_budget(p, 0, -INFINITY, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_problem_pin(p, 0, 7, &err), MPQ_ERR_INVALID);
    mpq_problem_set_item_name(p, 1, "blk.1.attn_q", &err);
    mpq_problem_set_option_name(p, 2, "int4g128", &err);
    /* unset losses are reported with names */
    ck_assert_int_eq(mpq_solve_ilp(p, &opts, &s, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(s);
    for (int i = 0; i < 3; i++)
        for (int o = 0; o < 4; o++) {
            mpq_problem_set_loss(p, i, o, 1.0 / (o + 1), &err);
            mpq_problem_set_cost(p, 0, i, o, 2.0 * (o + 1), &err);
            if (!(i == 1 && o == 2)) mpq_problem_set_cost(p, 1, i, o, 0.5 * o, &err);
        }
    ck_assert_int_eq(mpq_solve_ilp(p, &opts, &s, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.1.attn_q int4g128"));
    mpq_problem_set_cost(p, 1, 1, 2, 1.0, &err);
    /* item with no allowed option */
    for (int o = 0; o < 4; o++) mpq_problem_set_allowed(p, 2, o, false, &err);
    ck_assert_int_eq(mpq_solve_dp(p, &opts, &s, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "item 2"));
    for (int o = 0; o < 4; o++) mpq_problem_set_allowed(p, 2, o, o != 1, &err);
    /* pinned to a masked option */
    mpq_problem_pin(p, 2, 1, &err);
    ck_assert_int_eq(mpq_solve_brute(p, &opts, &s, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "pinned"));
    mpq_problem_pin(p, 2, 3, &err);
    /* DP: second budget -> unsupported; non-integral costs -> unsupported */
    mpq_problem_set_budget(p, 1, 2.0, &err);
    mpq_problem_set_resource_name(p, 1, "latency", &err);
    ck_assert_int_eq(mpq_solve_dp(p, &opts, &s, &err), MPQ_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "latency"));
    opts.dp_resource = 1;
    mpq_problem_set_budget(p, 1, INFINITY, &err);
    ck_assert_int_eq(mpq_solve_dp(p, &opts, &s, &err), MPQ_ERR_UNSUPPORTED);
    opts.dp_resource = 5;
    ck_assert_int_eq(mpq_solve_dp(p, &opts, &s, &err), MPQ_ERR_INVALID);
    opts.dp_resource = 0;
    /* infeasible alone: item 2 pinned to cost 8, others >= 2 each: min 12 */
    mpq_problem_set_resource_name(p, 0, "bits", &err);
    mpq_problem_set_budget(p, 0, 11, &err);
    ck_assert_int_eq(mpq_solve_ilp(p, &opts, &s, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_nonnull(strstr(err.msg, "bits"));
    ck_assert_ptr_nonnull(strstr(err.msg, "12"));
    ck_assert_int_eq(mpq_solve_dp(p, &opts, &s, &err), MPQ_ERR_INFEASIBLE);
    double lb;
    ck_assert_int_eq(mpq_bound_lp(p, &opts, &lb, &err), MPQ_ERR_INFEASIBLE);
    /* jointly infeasible: bits 14 forces two cheap items (latency 0 each) plus the pin
     * (latency 1.5); latency budget 1.0 fails only jointly */
    mpq_problem_set_budget(p, 0, 14, &err);
    mpq_problem_set_budget(p, 1, 1.0, &err);
    mpq_problem_pin(p, 2, -1, &err);
    mpq_problem_set_allowed(p, 2, 0, false, &err);
    mpq_problem_set_allowed(p, 2, 2, false, &err);
    /* item 2 can only take option 3: bits 8, latency 1.5 > 1.0: alone infeasible in latency */
    ck_assert_int_eq(mpq_solve_ilp(p, &opts, &s, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_nonnull(strstr(err.msg, "latency"));
    mpq_problem_set_allowed(p, 2, 0, true, &err); /* now: bits 14 -> needs 2+2+... */
    mpq_problem_set_budget(p, 0, 6, &err);         /* min bits 6 with all option 0 (latency 0) */
    mpq_problem_set_budget(p, 1, 0.0, &err);
    ck_assert_int_eq(mpq_solve_ilp(p, &opts, &s, &err), MPQ_OK);
    ck_assert_double_eq(s->total_cost[0], 6);
    mpq_solution_free(s);
    s = NULL;
    mpq_problem_free(p);
    /* jointly infeasible: bits (1, 2) and latency (2, 1) per item; budgets bits 3, latency
     * 2.5: each alone reachable (min 2), but (0,1) has latency 3, (1,1) bits 4, (0,0) latency 4 */
    ck_assert_int_eq(mpq_problem_create(2, 2, 2, &p, &err), MPQ_OK);
    mpq_problem_set_resource_name(p, 0, "bits", &err);
    mpq_problem_set_resource_name(p, 1, "latency", &err);
    for (int i = 0; i < 2; i++)
        for (int o = 0; o < 2; o++) {
            mpq_problem_set_loss(p, i, o, 1.0 - o, &err);
            mpq_problem_set_cost(p, 0, i, o, 1.0 + o, &err);
            mpq_problem_set_cost(p, 1, i, o, 2.0 - o, &err);
        }
    mpq_problem_set_budget(p, 0, 3, &err);
    mpq_problem_set_budget(p, 1, 2.5, &err);
    ck_assert_int_eq(mpq_problem_check_budgets(p, NULL, &err), MPQ_OK);
    ck_assert_int_eq(mpq_solve_ilp(p, &opts, &s, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_nonnull(strstr(err.msg, "together"));
    ck_assert_int_eq(mpq_solve_brute(p, &opts, &s, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_null(s);
    mpq_problem_set_budget(p, 1, 3, &err); /* now (0,1) fits: loss 1 */
    ck_assert_int_eq(mpq_solve_ilp(p, &opts, &s, &err), MPQ_OK);
    ck_assert_double_eq(s->total_loss, 1.0);
    ck_assert_double_eq(s->total_cost[0], 3.0);
    mpq_solution_free(s);
    mpq_problem_free(p);
}
END_TEST

/* Per-layer weight pointer of the stories260K layer table. */
static float *layer_weights(const mpq_weights *w, const mpq_layer_info *li) {
    mpq_block_weights *b = &w->blocks[li->block];
    switch (li->kind) {
    case MPQ_LAYER_ATTN_Q: return b->wq;
    case MPQ_LAYER_ATTN_K: return b->wk;
    case MPQ_LAYER_ATTN_V: return b->wv;
    case MPQ_LAYER_ATTN_O: return b->wo;
    case MPQ_LAYER_FFN_GATE: return b->w_gate;
    case MPQ_LAYER_FFN_UP: return b->w_up;
    case MPQ_LAYER_FFN_DOWN: return b->w_down;
    }
    return NULL;
}

START_TEST(test_real_model) {
    /* stories260K: items = its linear layers, options = quantizers, loss = sum of squared
     * fake-quantization errors, cost = exact storage bits. ILP, both DP engines and the exact
     * frontier must agree; the Gaussian water-filling bound (per-layer variance, bits without
     * overhead) must not exceed the Gaussian-model optimum found by DP. */
    mpq_err err = {0};
    mpq_model *m = NULL;
    ck_assert_msg(mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &m, &err) == MPQ_OK, "%s",
                  err.msg);
    const mpq_weights *w = mpq_model_get_weights(m);
    int n = mpq_model_n_linear(m);
    ck_assert_int_gt(n, 10);
    const char *cands[5] = {"int2g32", "int3g64", "int4g128", "int8c", "f16"};
    mpq_problem *p = NULL, *g = NULL;
    ck_assert_int_eq(mpq_problem_create(n, 5, 1, &p, &err), MPQ_OK);
    ck_assert_int_eq(mpq_problem_create(n, 5, 1, &g, &err), MPQ_OK);
    double *nn = calloc((size_t)n, sizeof *nn), *cc = calloc((size_t)n, sizeof *cc);
    double total_params = 0, f16_bits = 0;
    const int gbits[5] = {2, 3, 4, 8, 16};
    for (int i = 0; i < n; i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        const float *src = layer_weights(w, li);
        size_t cnt = (size_t)li->n_params;
        float *tmp = malloc(cnt * sizeof *tmp);
        double mean = 0, var = 0;
        for (size_t k = 0; k < cnt; k++) mean += src[k];
        mean /= (double)cnt;
        for (size_t k = 0; k < cnt; k++) var += (src[k] - mean) * (src[k] - mean);
        var /= (double)cnt;
        nn[i] = (double)cnt;
        cc[i] = var;
        total_params += (double)cnt;
        mpq_problem_set_item_name(p, i, li->name, &err);
        for (int o = 0; o < 5; o++) {
            mpq_candidate c;
            ck_assert_int_eq(mpq_candidate_parse(cands[o], &c, &err), MPQ_OK);
            memcpy(tmp, src, cnt * sizeof *tmp);
            mpq_quantize_matrix(&c, tmp, li->rows, li->cols);
            double e = 0;
            for (size_t k = 0; k < cnt; k++) e += ((double)tmp[k] - src[k]) * ((double)tmp[k] - src[k]);
            int64_t bytes = mpq_candidate_bytes(&c, li->rows, li->cols);
            ck_assert_int_gt(bytes, 0);
            ck_assert_int_eq(mpq_problem_set_loss(p, i, o, e, &err), MPQ_OK);
            ck_assert_int_eq(mpq_problem_set_cost(p, 0, i, o, (double)(bytes * 8), &err), MPQ_OK);
            ck_assert_int_eq(mpq_problem_set_loss(g, i, o, cnt * var * exp2(-2.0 * gbits[o]), &err), MPQ_OK);
            ck_assert_int_eq(mpq_problem_set_cost(g, 0, i, o, (double)cnt * gbits[o], &err), MPQ_OK);
            if (o == 4) f16_bits += (double)(bytes * 8);
        }
        free(tmp);
    }
    mpq_solve_opts opts = mpq_solve_opts_default();
    for (int b = 0; b < 4; b++) {
        const double avgs[4] = {3.25, 4.0, 5.0, 6.0}; /* bits per weight (int2g32 costs 3) */
        double avg = avgs[b];
        mpq_problem_set_budget(p, 0, floor(avg * total_params), &err);
        mpq_solution *si = NULL, *sd = NULL, *sp = NULL;
        mpq_solve_opts o2 = opts;
        o2.dp_max_bytes = 0;
        ck_assert_msg(mpq_solve_ilp(p, &opts, &si, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_msg(mpq_solve_dp(p, &opts, &sd, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_msg(mpq_solve_dp(p, &o2, &sp, &err) == MPQ_OK, "%s", err.msg);
        /* losses ~1e-3..1e2 summed over ~35 items in item order: 2*35*eps*sum|L| relative */
        double tol = 2 * 35 * DBL_EPSILON * fabs(sd->total_loss) + 1e-9 * fabs(sd->total_loss);
        ck_assert_double_eq_tol(si->total_loss, sd->total_loss, tol);
        ck_assert_double_eq_tol(sp->total_loss, sd->total_loss, 2 * 35 * DBL_EPSILON * fabs(sd->total_loss));
        ck_assert(sd->total_cost[0] <= mpq_problem_budget(p, 0));
        ck_assert(sd->total_loss <= sd->total_loss_raw); /* smoothing only lowers */
        mpq_solution_free(si);
        mpq_solution_free(sd);
        mpq_solution_free(sp);
        /* Gaussian model: the water-filling bound is below the discrete optimum */
        mpq_problem_set_budget(g, 0, avg * total_params, &err);
        mpq_solution *sg = NULL;
        ck_assert_msg(mpq_solve_dp(g, &opts, &sg, &err) == MPQ_OK, "%s", err.msg);
        double D = 0;
        ck_assert_int_eq(mpq_bound_waterfill(nn, cc, n, avg * total_params, NULL, &D, NULL, &err), MPQ_OK);
        ck_assert_double_le(D, sg->total_loss);
        ck_assert_double_gt(D, 0.05 * sg->total_loss); /* and not vacuous */
        mpq_solution_free(sg);
    }
    (void)f16_bits;
    free(nn);
    free(cc);
    mpq_problem_free(p);
    mpq_problem_free(g);
    mpq_model_free(m);
}
END_TEST

static Suite *solvers_suite(void) {
    Suite *s = suite_create("solvers");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_random_vs_brute);
    tcase_add_test(tc, test_ilp_fixing);
    tcase_add_test(tc, test_ilp_tighten);
    tcase_add_test(tc, test_smoothing);
    tcase_add_test(tc, test_knee_and_hull);
    tcase_add_test(tc, test_waterfill);
    tcase_add_test(tc, test_segment_dp);
    tcase_add_test(tc, test_hostile_problem);
    tcase_add_test(tc, test_auto_choice);
    tcase_add_test(tc, test_real_model);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    mpq_blas_set_threads(1); /* as every mpq application does (mpq.h, "BLAS threads") */
    SRunner *sr = srunner_create(solvers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
