/*
 * jobsolve_pareto.c - the exact Pareto frontier of a stored job (mpq_jobsolve.h): HAWQ-V2's
 * (size, total sensitivity) frontier computed exactly (Nemhauser-Ullmann merge,
 * mpq_frontier_exact) with its convex hull and hull gaps, stored with its points; the knee
 * (mpq_frontier_knee) and points evenly spread in cost are stored as solutions.
 */
#include "jobsolve_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mpq_jobsolve_pareto_result_free(mpq_jobsolve_pareto_result *r) {
    if (!r) return;
    mpq_frontier_free(r->exact);
    mpq_frontier_free(r->hull);
    free(r->hull_gap);
    free(r->cost_display);
    free(r);
}

/* The knee, then n_spread points evenly spread in cost: frontier indices and names. */
static int pick_points(const mpq_jobsolve_pareto_result *r, const char *metric, int n_spread, size_t *want,
                       char (*names)[MPQ_DB_NAME_MAX]) {
    size_t n = r->exact->n_points;
    int nw = 0;
    if (n == 0) return 0;
    want[nw] = r->knee;
    snprintf(names[nw++], MPQ_DB_NAME_MAX, "%.100s@knee", metric);
    for (int j = 0; j < n_spread; j++) {
        const double *c = r->exact->cost;
        double at = n_spread == 1 ? c[n - 1] : c[0] + (c[n - 1] - c[0]) * j / (n_spread - 1);
        size_t k = mpq_frontier_at_budget(r->exact, at);
        want[nw] = k == SIZE_MAX ? 0 : k;
        snprintf(names[nw++], MPQ_DB_NAME_MAX, "%.100s@pareto-%d", metric, j + 1);
    }
    return nw;
}

/* Stores frontier point k as solution `name` (solver "pareto", exact: gap 0). */
static mpq_status store_point(mpq_job *job, const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *o2,
                              const mpq_jobsolve_pareto_result *r, size_t k, const char *name, int *choice,
                              int64_t *solution_id, mpq_err *err) {
    mpq_status st = mpq_frontier_assignment(p->problem, r->exact, k, choice, err);
    if (st != MPQ_OK) return st;
    int ni = mpq_problem_n_items(p->problem);
    mpq_solution s;
    memset(&s, 0, sizeof s);
    double tc[MPQ_N_RESOURCE_KINDS] = {0, 0, 0, 0};
    s.n_items = ni;
    s.n_resources = p->n_resources;
    s.choice = choice;
    s.total_cost = tc;
    double *sm = mpq_calloc((size_t)ni * 256, sizeof *sm);
    if (!sm) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if ((st = mpq_problem_smoothed_losses(p->problem, sm, err)) != MPQ_OK) {
        free(sm);
        return st;
    }
    for (int i = 0; i < ni; i++) {
        double raw = mpq_problem_loss(p->problem, i, choice[i]);
        s.total_loss_raw += raw;
        s.total_loss += o2->smooth ? sm[(size_t)i * (size_t)p->n_options + (size_t)choice[i]] : raw;
        for (int q = 0; q < p->n_resources; q++) tc[q] += mpq_problem_cost(p->problem, q, i, choice[i]);
    }
    free(sm);
    s.bound = r->exact->loss[k];
    s.status = MPQ_SOLVE_OPTIMAL;
    s.smoothed = o2->smooth;
    snprintf(s.solver, sizeof s.solver, "pareto-exact");
    s.seconds = r->seconds;
    mpq_jobsolve_result *sr = NULL;
    if ((st = jobsolve_store_choice(job, p, o2, &s, "pareto", name, r->exact->loss[k], &sr, err)) != MPQ_OK) return st;
    *solution_id = sr->solution_id;
    mpq_jobsolve_result_free(sr);
    return MPQ_OK;
}

/* Frontier, hull and gaps of p in problem resource `res`. */
static mpq_status frontier_of(const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts, int res,
                              mpq_jobsolve_pareto_result *r, mpq_err *err) {
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = opts->smooth;
    so.dp_resource = res;
    mpq_status st;
    if ((st = mpq_frontier_exact(p->problem, &so, &r->exact, err)) != MPQ_OK) return st;
    if ((st = mpq_frontier_hull(p->problem, &so, &r->hull, err)) != MPQ_OK) return st;
    size_t n = r->exact->n_points, nh = r->hull->n_points;
    r->hull_gap = mpq_calloc(nh ? nh : 1, sizeof *r->hull_gap);
    r->cost_display = mpq_calloc(n ? n : 1, sizeof *r->cost_display);
    if (!r->hull_gap || !r->cost_display)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for a frontier of %zu points", n);
    if ((st = mpq_frontier_hull_gaps(r->hull, r->exact, r->hull_gap, err)) != MPQ_OK) return st;
    bool bits = opts->frontier_resource == MPQ_RESOURCE_BITS;
    for (size_t k = 0; k < n; k++)
        r->cost_display[k] = bits ? r->exact->cost[k] / (double)p->total_params : r->exact->cost[k];
    r->knee = mpq_frontier_knee(r->exact);
    return MPQ_OK;
}

mpq_status mpq_jobsolve_pareto(mpq_job *job, const mpq_jobsolve_opts *opts, int n_spread,
                               mpq_jobsolve_pareto_result **out, mpq_err *err) {
    if (!job || !opts || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_jobsolve_pareto: NULL argument");
    *out = NULL;
    mpq_status st;
    mpq_jobsolve_problem *p = NULL;
    int *choice = NULL;
    mpq_db_frontier_point *pts = NULL;
    mpq_jobsolve_opts o2 = *opts;
    o2.n_budgets = 0;
    o2.budgets = NULL;
    if (n_spread < 0 || n_spread > 32) return mpq_err_set(err, MPQ_ERR_INVALID, "pareto: --evaluate K must be 0..32");
    mpq_jobsolve_pareto_result *r = mpq_calloc(1, sizeof *r);
    if (!r) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    double t0 = mpq_time_now();
    if ((st = mpq_jobsolve_problem_build(job, &o2, &p, err)) != MPQ_OK) goto done;
    int res = 0;
    for (int q = 0; q < p->n_resources; q++)
        if (p->resource[q] == opts->frontier_resource) res = q;
    if ((st = frontier_of(p, opts, res, r, err)) != MPQ_OK) goto done;
    r->seconds = mpq_time_now() - t0;
    size_t n = r->exact->n_points;
    pts = mpq_calloc(n ? n : 1, sizeof *pts);
    choice = mpq_calloc((size_t)mpq_problem_n_items(p->problem), sizeof *choice);
    if (!pts || !choice) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for a frontier of %zu points", n);
        goto done;
    }
    for (size_t k = 0; k < n; k++) {
        pts[k].cost = r->cost_display[k];
        pts[k].loss = r->exact->loss[k];
    }
    size_t want[33];
    char names[33][MPQ_DB_NAME_MAX];
    int nw = pick_points(r, p->metric, n_spread, want, names);
    for (int w = 0; w < nw; w++) {
        int64_t sid = 0;
        if ((st = store_point(job, p, &o2, r, want[w], names[w], choice, &sid, err)) != MPQ_OK) goto done;
        r->solution_ids[r->n_solutions] = sid;
        r->solution_points[r->n_solutions++] = want[w];
        pts[want[w]].solution_id = sid;
    }
    bool bits = opts->frontier_resource == MPQ_RESOURCE_BITS;
    st = mpq_db_frontier_insert(mpq_job_db(job), mpq_job_get_row(job)->id,
                                bits ? "avg_bits" : jobsolve_resource_names[opts->frontier_resource], p->metric, pts,
                                (int)n, &r->frontier_id, err);
done:
    free(choice);
    free(pts);
    mpq_jobsolve_problem_free(p);
    if (st != MPQ_OK) mpq_jobsolve_pareto_result_free(r);
    else *out = r;
    return st;
}
