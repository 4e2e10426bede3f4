/* bench_solvers.c - solver timings on realistic synthetic allocation problems:
 * 50,000 items x 8 options with one average-bits budget solved exactly by the DP and by the
 * GLPK ILP (mip_gap 1e-6, after LP-based reduced-cost fixing: the fixing statistics are printed), and the exact / convex-hull frontiers of 1,000 items x 8 options.
 * Costs are storage bits: bits per weight {2.25, 3.25, 4.25, 5.25, 6.25, 8.25, 12.25, 16}
 * times n_params = 4096 * k, k in 1..16; losses n * s_i * 2^(-2 bpw) * (1 + 0.1 noise) with
 * a log-uniform per-item sensitivity s_i (decreasing, convex-ish, noisy).
 * First, the solver choice of "auto" (mpq_solve_estimate_cost) for n x 8 items, n = 30 ..
 * 3,000: the estimated and measured times of the DP and the ILP, and the pick.
 * Run: cmake --build BUILD --target bench_solvers && BUILD/bench_solvers [--choice-only] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq.h"
#include "mpq/mpq_rng.h"
#include "mpq/mpq_solvers.h"
#include "../../solvers/solvers_internal.h"

static uint64_t rng_state = 12345;
static uint64_t rng_next(void) { return mpq_rng_splitmix64(&rng_state); }
static double rng_unif(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; }

static const double BPW[8] = {2.25, 3.25, 4.25, 5.25, 6.25, 8.25, 12.25, 16};

static mpq_problem *make(int n, double avg_bits, double *total_params) {
    mpq_err err = {0};
    mpq_problem *p = NULL;
    if (mpq_problem_create(n, 8, 1, &p, &err) != MPQ_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        exit(1);
    }
    mpq_problem_set_resource_name(p, 0, "bits", &err);
    double tp = 0;
    for (int i = 0; i < n; i++) {
        double np = 4096.0 * (double)(1 + rng_next() % 16);
        double sens = exp(log(1e-3) + rng_unif() * log(1e4));
        tp += np;
        for (int o = 0; o < 8; o++) {
            mpq_problem_set_cost(p, 0, i, o, BPW[o] * np, &err);
            mpq_problem_set_loss(p, i, o, np * sens * exp2(-2 * BPW[o]) * (1 + 0.1 * rng_unif()), &err);
        }
    }
    mpq_problem_set_budget(p, 0, floor(avg_bits * tp), &err);
    *total_params = tp;
    return p;
}

/* auto's choice vs measured times over a range of sizes; 1 when the pick was > 2x slower
 * than the other engine (beyond timing noise) or the objectives differ. */
static int bench_choice(void) {
    static const int sizes[] = {30, 100, 300, 1000, 3000};
    int status = 0;
    printf("%-6s %-10s %12s %12s %12s %12s  %-5s %s\n", "items", "dp engine", "dp est s", "dp s", "ilp est s", "ilp s",
           "auto", "objectives");
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        double tp = 0;
        mpq_err err = {0};
        mpq_problem *p = make(sizes[k], 4.0, &tp);
        mpq_solve_opts opts = mpq_solve_opts_default();
        mpq_solve_estimate e;
        mpq_solution *sd = NULL, *si = NULL;
        if (mpq_solve_estimate_cost(p, &opts, &e, &err) != MPQ_OK) {
            printf("estimate FAILED: %s\n", err.msg);
            status = 1;
        }
        double t0 = mpq_time_now();
        mpq_status a = mpq_solve_dp(p, &opts, &sd, &err);
        double td = mpq_time_now() - t0;
        t0 = mpq_time_now();
        mpq_status b = mpq_solve_ilp(p, &opts, &si, &err);
        double ti = mpq_time_now() - t0;
        if (a != MPQ_OK || b != MPQ_OK) {
            printf("%d items: FAILED: %s\n", sizes[k], err.msg);
            status = 1;
        } else {
            bool same = fabs(sd->total_loss - si->total_loss) <= 1e-9 * fabs(sd->total_loss);
            double picked = strcmp(e.solver, "dp") == 0 ? td : ti, other = strcmp(e.solver, "dp") == 0 ? ti : td;
            printf("%-6d %-10s %12.4g %12.4g %12.4g %12.4g  %-5s %s\n", sizes[k], sd->solver, e.dp_seconds, td,
                   e.ilp_seconds, ti, e.solver, same ? "equal" : "DIFFER");
            if (!same || (picked > 2 * other && picked > 0.05)) status = 1;
        }
        mpq_solution_free(sd);
        mpq_solution_free(si);
        mpq_problem_free(p);
    }
    return status;
}

int main(int argc, char **argv) {
    mpq_blas_set_threads(1); /* as the mpq CLI runs (mpq.h, "BLAS threads") */
    mpq_err err = {0};
    setvbuf(stdout, NULL, _IOLBF, 0);
    int status = bench_choice();
    if (argc > 1 && strcmp(argv[1], "--choice-only") == 0) return status;
    double tp = 0;
    mpq_problem *p = make(50000, 4.0, &tp);
    mpq_solve_opts opts = mpq_solve_opts_default();
    mpq_solution *sd = NULL, *si = NULL;
    double t0 = mpq_time_now();
    if (mpq_solve_dp(p, &opts, &sd, &err) != MPQ_OK) {
        printf("dp: FAILED: %s\n", err.msg);
        status = 1;
    } else {
        printf("dp   50000 x 8, budget 4.0 bits/weight (%.0f params): %-10s %.3f s  loss %.12g  bits/weight %.6f\n",
               tp, sd->solver, mpq_time_now() - t0, sd->total_loss, sd->total_cost[0] / tp);
    }
    double lb = 0;
    t0 = mpq_time_now();
    if (mpq_bound_lp(p, &opts, &lb, &err) == MPQ_OK)
        printf("lp   relaxation bound %.12g  %.3f s\n", lb, mpq_time_now() - t0);
    else
        printf("lp   FAILED: %s\n", err.msg);
    /* The LP relaxation lies 2.66e-6 below the optimum (GLPK alone: 60 s, gap 2.66e-6).
     * Reduced-cost fixing, then rounding the budget down to the lattice of costs the kept
     * options can reach, raises the Lagrangian bound and leaves a core of a few dozen binaries. */
    opts.time_limit_s = 60;
    for (int pass = 0; pass < 2; pass++) {
        opts.mip_gap = pass == 0 ? 1e-6 : 0;
        mpq_solution_free(si);
        si = NULL;
        t0 = mpq_time_now();
        solv_ilp_info info;
        if (solv_ilp_solve(p, &opts, true, &si, &info, &err) != MPQ_OK) {
            printf("ilp: FAILED: %s\n", err.msg);
            status = 1;
        } else {
            printf("ilp  50000 x 8 (GLPK, mip_gap %g, warm start, limit 60 s): %.3f s  loss %.12g  gap %.3g  status %s\n",
                   opts.mip_gap, mpq_time_now() - t0, si->total_loss, si->gap,
                   si->status == MPQ_SOLVE_OPTIMAL ? "optimal" : "feasible");
            printf("ilp  fixing: %d of %d binaries kept, %d items free; incumbent %.12g, Lagrangian bound %.12g; "
                   "fixing %.3f s (%d rounds%s), GLPK %.3f s\n",
                   info.n_cols, info.n_cols_full, info.n_items_free, info.incumbent, info.lagr_bound, info.fix_seconds,
                   info.rounds, info.tight_res >= 0 ? ", budget tightened" : "", info.glpk_seconds);
            if (sd) printf("ilp  vs dp: relative excess %.3g\n", (si->total_loss - sd->total_loss) / sd->total_loss);
            if (pass == 0 && si->gap > 1e-6) status = 1;
            if (pass == 1 && sd && fabs(si->total_loss - sd->total_loss) > 1e-12 * sd->total_loss) status = 1;
        }
    }
    mpq_solution_free(sd);
    mpq_solution_free(si);
    mpq_problem_free(p);

    p = make(1000, 4.0, &tp);
    opts = mpq_solve_opts_default();
    mpq_frontier *fe = NULL, *fh = NULL;
    t0 = mpq_time_now();
    if (mpq_frontier_exact(p, &opts, &fe, &err) != MPQ_OK) {
        printf("frontier exact: FAILED: %s\n", err.msg);
        status = 1;
    } else {
        printf("frontier exact 1000 x 8: %.3f s, %zu points\n", mpq_time_now() - t0, fe->n_points);
    }
    t0 = mpq_time_now();
    if (mpq_frontier_hull(p, &opts, &fh, &err) != MPQ_OK) {
        printf("frontier hull: FAILED: %s\n", err.msg);
        status = 1;
    } else {
        printf("frontier hull  1000 x 8: %.4f s, %zu points\n", mpq_time_now() - t0, fh->n_points);
    }
    if (fe && fh) {
        double *gap = malloc(fh->n_points * sizeof *gap), gmax = 0, rel = 0;
        mpq_frontier_hull_gaps(fh, fe, gap, &err);
        for (size_t k = 0; k < fh->n_points; k++) {
            if (gap[k] > gmax) gmax = gap[k];
            if (gap[k] / fh->loss[k] > rel) rel = gap[k] / fh->loss[k];
        }
        size_t knee = mpq_frontier_knee(fe);
        printf("hull gap to exact frontier: max %.4g (max relative %.3g); knee at %.4f bits/weight, loss %.6g\n",
               gmax, rel, fe->cost[knee] / tp, fe->loss[knee]);
        t0 = mpq_time_now();
        int *choice = malloc(1000 * sizeof *choice);
        if (mpq_frontier_assignment(p, fe, knee, choice, &err) != MPQ_OK) {
            printf("knee assignment FAILED: %s\n", err.msg);
            status = 1;
        } else {
            printf("knee assignment re-solved in %.3f s\n", mpq_time_now() - t0);
        }
        free(choice);
        free(gap);
    }
    mpq_frontier_free(fe);
    mpq_frontier_free(fh);
    mpq_problem_free(p);
    return status;
}
