/* test_solve.c - solving from stored metrics (search/solve.c) on a real tiny stories260K job
 * (weight_error + layer_sensitivity, 3 candidates, run once into a temp database): DP == ILP,
 * exact budgets, monotone in the budget, infeasible budgets named, ties, pins, stored
 * solution and config round trip, frontier non-dominated and consistent with the solver,
 * closed-loop evaluation, metric expressions, hostile budget / expression / option tables. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_jobsolve.h"
#include "test_util.h"
#include "test_main.h"

#define JOB "tiny"
static char g_db[4200];

/* Runs the tiny job once (in the parent process: unchecked fixture). */
static void setup_job(void) {
    char dir[4096];
    test_tmpdir(dir, sizeof dir);
    snprintf(g_db, sizeof g_db, "%s/s.db", dir);
    char spec[16384];
    snprintf(spec, sizeof spec,
             "{\"name\":\"" JOB "\",\"model\":\"%s\",\"calibration\":{\"data\":\"%s\",\"seq_len\":32,\"n_seqs\":4,\"batch\":4},"
             "\"evaluation\":{\"data\":\"%s\",\"seq_len\":64,\"n_seqs\":4},"
             "\"candidates\":[\"int3g32\",\"int4g32\",\"int8c\"]}",
             shared_path("models/stories260K/stories260K.bin"), shared_path("data/tinystories-calib.tok512.u16"),
             shared_path("data/tinystories-eval.tok512.u16"));
    mpq_job_spec *s = NULL;
    mpq_db *db = NULL;
    mpq_err err = {0};
    if (mpq_job_spec_parse(spec, "tiny.json", &s, &err) != MPQ_OK || mpq_db_open(g_db, MPQ_DB_CREATE, &db, &err) != MPQ_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        abort();
    }
    mpq_job_opts o = mpq_job_opts_default();
    if (mpq_job_run(db, s, &o, NULL, &err) != MPQ_OK) {
        fprintf(stderr, "setup: job: %s\n", err.msg);
        abort();
    }
    mpq_db_close(db);
    mpq_job_spec_free(s);
}

typedef struct fx {
    mpq_db *db;
    mpq_job *ctx;
    mpq_err err;
} fx;

static void fx_open(fx *f) {
    memset(f, 0, sizeof *f);
    ck_assert_msg(mpq_db_open(g_db, MPQ_DB_READWRITE, &f->db, &f->err) == MPQ_OK, "%s", f->err.msg);
    ck_assert_msg(mpq_job_open(f->db, JOB, &f->ctx, &f->err) == MPQ_OK, "%s", f->err.msg);
}
static void fx_close(fx *f) {
    mpq_job_close(f->ctx);
    mpq_db_close(f->db);
}

static mpq_status solve1(fx *f, const char *budget, const char *solver, unsigned ties, mpq_jobsolve_result **r) {
    mpq_budget b;
    ck_assert_msg(mpq_budget_parse(budget, &b, &f->err) == MPQ_OK, "%s", f->err.msg);
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.budgets = &b;
    o.n_budgets = 1;
    o.solver = solver;
    o.ties = ties;
    return mpq_jobsolve_run(f->ctx, &o, r, &f->err);
}

static int layer_index(const mpq_jobsolve_result *r, fx *f, const char *name) {
    mpq_db_solution s;
    mpq_db_assignment *a = NULL;
    int n = 0, idx = -1;
    memset(&s, 0, sizeof s);
    ck_assert(mpq_db_solution_get(f->db, r->solution_id, &s, &a, &n, &f->err) == MPQ_OK);
    for (int i = 0; i < n; i++)
        if (strcmp(a[i].layer_name, name) == 0) idx = i;
    free(a);
    mpq_db_solution_release(&s);
    ck_assert_int_ge(idx, 0);
    return idx;
}

/* Both solvers are exact on the same smoothed losses; their sums differ only by the order of
 * ~35 additions of numbers <= 1: |diff| <= 35 * 2^-52 * total, so 1e-12 relative is safe. */
START_TEST(test_dp_equals_ilp_and_budget_exact) {
    fx f;
    fx_open(&f);
    mpq_jobsolve_result *dp = NULL, *ilp = NULL;
    ck_assert_msg(solve1(&f, "avg-bits=4.5", "dp", 0, &dp) == MPQ_OK, "%s", f.err.msg);
    ck_assert_msg(solve1(&f, "avg-bits=4.5", "ilp", 0, &ilp) == MPQ_OK, "%s", f.err.msg);
    ck_assert_str_eq(dp->solver, "dp");
    ck_assert_str_eq(ilp->solver, "ilp");
    ck_assert_double_eq_tol(dp->objective, ilp->objective, 1e-12 * (1 + fabs(dp->objective)));
    ck_assert_int_eq(dp->status, MPQ_SOLVE_OPTIMAL);
    /* exact budget: floor(4.5 * params) in integers (4.5 = 9/2) */
    int64_t budget = dp->total_params * 9 / 2;
    ck_assert_int_le(dp->total_bits, budget);
    ck_assert_int_le(ilp->total_bits, budget);
    int64_t sum = 0;
    for (int l = 0; l < dp->n_layers; l++) sum += dp->layer_bits[l];
    ck_assert_int_eq(sum, dp->total_bits);
    ck_assert_int_eq(dp->total_params, 226560); /* stories260K's 35 linear layers */
    /* the LP relaxation bounds the integer optimum from below (slack 1e-9 for simplex round-off) */
    ck_assert(dp->lp_bound <= dp->objective + 1e-9);
    /* water-filling bound is below the sse actually reached at the same bits */
    ck_assert(isfinite(dp->waterfill_sse) && isfinite(dp->weight_sse));
    ck_assert(dp->waterfill_sse <= dp->weight_sse);
    mpq_jobsolve_result_free(dp);
    mpq_jobsolve_result_free(ilp);
    fx_close(&f);
}
END_TEST

START_TEST(test_tighter_budget_not_better) {
    fx f;
    fx_open(&f);
    double prev = INFINITY;
    const char *b[] = {"avg-bits=4.2", "avg-bits=4.6", "avg-bits=5.5", "avg-bits=7"};
    for (int i = 0; i < 4; i++) {
        mpq_jobsolve_result *r = NULL;
        ck_assert_msg(solve1(&f, b[i], "auto", 0, &r) == MPQ_OK, "%s", f.err.msg);
        ck_assert_msg(r->objective <= prev, "%s: %g > %g at a tighter budget", b[i], r->objective, prev);
        prev = r->objective;
        mpq_jobsolve_result_free(r);
    }
    fx_close(&f);
}
END_TEST

START_TEST(test_infeasible_named) {
    fx f;
    fx_open(&f);
    mpq_jobsolve_result *r = NULL;
    /* the cheapest candidate int3g32 costs 4 + 32/32 = 5 - 1 = 4 bits/weight plus per-row
     * overhead, so 3.9 bits cannot be met */
    ck_assert_int_eq(solve1(&f, "avg-bits=3.9", "auto", 0, &r), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_null(r);
    ck_assert_msg(strstr(f.err.msg, "avg-bits=3.9") != NULL, "%s", f.err.msg);
    /* the attempt is recorded as an infeasible solution */
    int64_t id = 0;
    ck_assert(mpq_db_solution_find(f.db, mpq_job_get_row(f.ctx)->id, "kl@avg-bits=3.9", &id, &f.err) == MPQ_OK);
    mpq_db_solution s;
    memset(&s, 0, sizeof s);
    ck_assert(mpq_db_solution_get(f.db, id, &s, NULL, NULL, &f.err) == MPQ_OK);
    ck_assert_str_eq(s.status, "infeasible");
    mpq_db_solution_release(&s);
    /* two budgets: each feasible alone, the ILP names one of them */
    mpq_budget b[2];
    ck_assert(mpq_budget_parse("avg-bits=3.9", &b[0], &f.err) == MPQ_OK);
    ck_assert(mpq_budget_parse("bops=1", &b[1], &f.err) == MPQ_OK);
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.budgets = b;
    o.n_budgets = 2;
    ck_assert_int_eq(mpq_jobsolve_run(f.ctx, &o, &r, &f.err), MPQ_ERR_INFEASIBLE);
    ck_assert_msg(strstr(f.err.msg, "bops=1") || strstr(f.err.msg, "avg-bits=3.9"), "%s", f.err.msg);
    fx_close(&f);
}
END_TEST

START_TEST(test_ties_and_pins) {
    fx f;
    fx_open(&f);
    mpq_jobsolve_result *r = NULL;
    ck_assert_msg(solve1(&f, "avg-bits=4.6", "auto", MPQ_TIES_QKV | MPQ_TIES_GATE_UP, &r) == MPQ_OK, "%s", f.err.msg);
    for (int b = 0; b < 5; b++) {
        char q[32], k[32], v[32], g[32], u[32];
        snprintf(q, sizeof q, "blk.%d.attn_q", b);
        snprintf(k, sizeof k, "blk.%d.attn_k", b);
        snprintf(v, sizeof v, "blk.%d.attn_v", b);
        snprintf(g, sizeof g, "blk.%d.ffn_gate", b);
        snprintf(u, sizeof u, "blk.%d.ffn_up", b);
        int cq = r->choice[layer_index(r, &f, q)];
        ck_assert_int_eq(cq, r->choice[layer_index(r, &f, k)]);
        ck_assert_int_eq(cq, r->choice[layer_index(r, &f, v)]);
        ck_assert_int_eq(r->choice[layer_index(r, &f, g)], r->choice[layer_index(r, &f, u)]);
    }
    mpq_jobsolve_result_free(r);
    r = NULL;

    /* pins and allowed sets are obeyed whatever the losses say */
    mpq_budget b;
    ck_assert(mpq_budget_parse("avg-bits=4.6", &b, &f.err) == MPQ_OK);
    const char *pins[] = {"blk.0.attn_v=int8c", "blk.*.ffn_down=int3g32"};
    const char *allows[] = {"blk.4.attn_*=int4g32,int8c"};
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.budgets = &b;
    o.n_budgets = 1;
    o.pins = pins;
    o.n_pins = 2;
    o.allows = allows;
    o.n_allows = 1;
    o.name = "pinned";
    ck_assert_msg(mpq_jobsolve_run(f.ctx, &o, &r, &f.err) == MPQ_OK, "%s", f.err.msg);
    ck_assert_str_eq(r->options[r->choice[layer_index(r, &f, "blk.0.attn_v")]], "int8c");
    ck_assert_str_eq(r->options[r->choice[layer_index(r, &f, "blk.2.ffn_down")]], "int3g32");
    ck_assert_str_ne(r->options[r->choice[layer_index(r, &f, "blk.4.attn_q")]], "int3g32");
    ck_assert_str_eq(r->name, "pinned");
    mpq_jobsolve_result_free(r);
    r = NULL;

    /* hostile options: each fails with MPQ_ERR_INVALID naming the offending text */
    static const struct { const char *pin, *allow, *group, *want; } bad[] = {
        {"blk.0.attn_v=int5g7", NULL, NULL, "int5g7"},
        {"nosuch.*=int8c", NULL, NULL, "nosuch"},
        {"blk.0.attn_v", NULL, NULL, "blk.0.attn_v"},
        {NULL, "blk.0.*=int2g32", NULL, "int2g32"},
        {NULL, "zzz=int8c", NULL, "zzz"},
        {"blk.0.attn_q=int8c", "blk.0.attn_q=int3g32", NULL, "excludes"},
        {NULL, NULL, "blk.0.attn_q,nope", "nope"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mpq_jobsolve_opts h = mpq_jobsolve_opts_default();
        h.budgets = &b;
        h.n_budgets = 1;
        h.pins = &bad[i].pin;
        h.n_pins = bad[i].pin ? 1 : 0;
        h.allows = &bad[i].allow;
        h.n_allows = bad[i].allow ? 1 : 0;
        h.groups = &bad[i].group;
        h.n_groups = bad[i].group ? 1 : 0;
        f.err.msg[0] = '\0';
        ck_assert_int_eq(mpq_jobsolve_run(f.ctx, &h, &r, &f.err), MPQ_ERR_INVALID);
        ck_assert_ptr_null(r);
        ck_assert_msg(strstr(f.err.msg, bad[i].want) != NULL, "case %zu: '%s' lacks '%s'", i, f.err.msg, bad[i].want);
    }
    /* conflicting pins inside a tie group */
    const char *cp[] = {"blk.1.attn_q=int8c", "blk.1.attn_k=int3g32"};
    o = mpq_jobsolve_opts_default();
    o.budgets = &b;
    o.n_budgets = 1;
    o.ties = MPQ_TIES_QKV;
    o.pins = cp;
    o.n_pins = 2;
    ck_assert_int_eq(mpq_jobsolve_run(f.ctx, &o, &r, &f.err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(f.err.msg, "conflict") != NULL, "%s", f.err.msg);
    fx_close(&f);
}
END_TEST

START_TEST(test_stored_roundtrip_and_config) {
    fx f;
    fx_open(&f);
    mpq_jobsolve_result *r = NULL;
    ck_assert_msg(solve1(&f, "avg-bits=5.2", "auto", MPQ_TIES_QKV, &r) == MPQ_OK, "%s", f.err.msg);
    mpq_db_solution s;
    mpq_db_assignment *a = NULL;
    int n = 0;
    memset(&s, 0, sizeof s);
    ck_assert(mpq_db_solution_get(f.db, r->solution_id, &s, &a, &n, &f.err) == MPQ_OK);
    ck_assert_int_eq(n, r->n_layers);
    for (int i = 0; i < n; i++) ck_assert_str_eq(a[i].candidate, r->options[r->choice[i]]);
    ck_assert_str_eq(s.status, "optimal");
    ck_assert_str_eq(s.metric_expr, "kl");
    ck_assert_str_eq(s.name, "kl@avg-bits=5.2");
    ck_assert_ptr_nonnull(strstr(s.budgets_json, "avg-bits"));
    ck_assert_double_eq_tol(s.objective, r->objective, 1e-15 * (1 + fabs(r->objective))); /* stored as REAL: exact */
    ck_assert_double_eq_tol(s.bound, r->lp_bound, 1e-15 * (1 + fabs(r->lp_bound)));
    /* config_json parses for the model and its avg bits equal the solution's exact bits */
    mpq_model *m = NULL;
    ck_assert(mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &m, &f.err) == MPQ_OK);
    mpq_config *cfg = NULL;
    ck_assert_msg(mpq_config_parse(s.config_json, "solution", m, &cfg, &f.err) == MPQ_OK, "%s", f.err.msg);
    mpq_config_stats st;
    ck_assert(mpq_config_get_stats(cfg, m, 0, &st, &f.err) == MPQ_OK);
    /* both are (sum of integer layer bits < 2^53) / params: equal up to one rounding each */
    ck_assert_double_eq_tol(st.avg_weight_bits, r->avg_bits, 1e-12);
    ck_assert(st.avg_weight_bits <= 5.2);
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(mpq_config_layer(cfg, mpq_model_find_linear(m, a[i].layer_name))->name, a[i].candidate);
    ck_assert_ptr_nonnull(strstr(s.config_json, "\"mpq_solution\""));
    ck_assert_ptr_nonnull(strstr(s.config_json, "\"waterfill_bound_sse\""));
    mpq_config_free(cfg);
    mpq_model_free(m);
    free(a);
    mpq_db_solution_release(&s);
    mpq_jobsolve_result_free(r);
    fx_close(&f);
}
END_TEST

START_TEST(test_frontier) {
    fx f;
    fx_open(&f);
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.ties = MPQ_TIES_QKV;
    mpq_jobsolve_pareto_result *p = NULL;
    ck_assert_msg(mpq_jobsolve_pareto(f.ctx, &o, 2, &p, &f.err) == MPQ_OK, "%s", f.err.msg);
    size_t n = p->exact->n_points;
    ck_assert_uint_gt(n, 10);
    for (size_t k = 1; k < n; k++) { /* non-dominated: dearer points strictly better */
        ck_assert(p->exact->cost[k] > p->exact->cost[k - 1]);
        ck_assert(p->exact->loss[k] < p->exact->loss[k - 1]);
    }
    ck_assert_uint_lt(p->knee, n);
    ck_assert_int_eq(p->n_solutions, 3);
    ck_assert(p->frontier_id > 0);
    /* stored points */
    mpq_db_frontier_point *pts = NULL;
    int np = 0;
    ck_assert(mpq_db_frontier_points(f.db, p->frontier_id, &pts, &np, &f.err) == MPQ_OK);
    ck_assert_int_eq(np, (int)n);
    ck_assert_double_eq_tol(pts[p->knee].cost, p->exact->cost[p->knee] / 226560.0, 1e-12);
    ck_assert_int_eq(pts[p->knee].solution_id, p->solution_ids[0]);
    free(pts);
    /* the DP at the budget of a frontier point finds exactly that point's loss */
    size_t ks[3] = {n / 4, n / 2, (3 * n) / 4};
    for (int i = 0; i < 3; i++) {
        char b[64];
        snprintf(b, sizeof b, "bits=%lld", (long long)p->exact->cost[ks[i]]);
        mpq_jobsolve_result *r = NULL;
        ck_assert_msg(solve1(&f, b, "dp", MPQ_TIES_QKV, &r) == MPQ_OK, "%s", f.err.msg);
        /* same smoothed losses summed in possibly different order: 1e-12 relative */
        ck_assert_double_eq_tol(r->objective, p->exact->loss[ks[i]], 1e-12 * (1 + p->exact->loss[ks[i]]));
        ck_assert_int_le(r->total_bits, (int64_t)p->exact->cost[ks[i]]);
        mpq_jobsolve_result_free(r);
    }
    mpq_jobsolve_pareto_result_free(p);
    fx_close(&f);
}
END_TEST

START_TEST(test_evaluation) {
    fx f;
    fx_open(&f);
    mpq_jobsolve_result *r = NULL;
    ck_assert_msg(solve1(&f, "avg-bits=4.6", "auto", 0, &r) == MPQ_OK, "%s", f.err.msg);
    mpq_jobsolve_eval ev;
    ck_assert_msg(mpq_jobsolve_evaluate_solution(f.ctx, r->solution_id, &ev, &f.err) == MPQ_OK, "%s", f.err.msg);
    ck_assert(isfinite(ev.kl) && ev.kl > 0);
    ck_assert(isfinite(ev.ppl) && ev.ppl > 1);
    ck_assert(ev.top1 > 0 && ev.top1 <= 1);
    ck_assert_int_eq(ev.n_tokens, 4 * 64);
    ck_assert(ev.evaluation_id > 0);
    /* uniform baselines: once per job */
    mpq_jobsolve_eval u1, u2, u8;
    ck_assert_msg(mpq_jobsolve_evaluate_uniform(f.ctx, "int3g32", false, &u1, &f.err) == MPQ_OK, "%s", f.err.msg);
    ck_assert_msg(mpq_jobsolve_evaluate_uniform(f.ctx, "int3g32", false, &u2, &f.err) == MPQ_OK, "%s", f.err.msg);
    ck_assert(u2.reused && u2.evaluation_id == u1.evaluation_id);
    ck_assert(u2.kl == u1.kl); /* the stored row read back */
    ck_assert_msg(mpq_jobsolve_evaluate_uniform(f.ctx, "int8c", false, &u8, &f.err) == MPQ_OK, "%s", f.err.msg);
    /* measured: 8-bit per channel is far closer to FP than 3-bit */
    ck_assert(u8.kl < u1.kl);
    mpq_jobsolve_compare_row *rows = NULL;
    int nr = 0, nu = 0;
    double rho = NAN;
    ck_assert(mpq_jobsolve_compare(f.ctx, "kl", &rows, &nr, &rho, &nu, &f.err) == MPQ_OK);
    ck_assert_int_ge(nr, 3);
    ck_assert_int_ge(nu, 3);
    ck_assert(isfinite(rho) && rho >= -1 && rho <= 1);
    free(rows);
    /* an infeasible solution has nothing to evaluate */
    mpq_jobsolve_result *r2 = NULL;
    ck_assert_int_eq(solve1(&f, "avg-bits=3.5", "auto", 0, &r2), MPQ_ERR_INFEASIBLE);
    int64_t id = 0;
    ck_assert(mpq_db_solution_find(f.db, mpq_job_get_row(f.ctx)->id, "kl@avg-bits=3.5", &id, &f.err) == MPQ_OK);
    ck_assert_int_eq(mpq_jobsolve_evaluate_solution(f.ctx, id, &ev, &f.err), MPQ_ERR_INVALID);
    mpq_jobsolve_result_free(r);
    fx_close(&f);
}
END_TEST

START_TEST(test_metric_expressions) {
    fx f;
    fx_open(&f);
    mpq_budget b;
    ck_assert(mpq_budget_parse("avg-bits=4.6", &b, &f.err) == MPQ_OK);
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.budgets = &b;
    o.n_budgets = 1;
    o.metric = "kl + 0.5*act_err";
    o.smooth = false;
    mpq_jobsolve_problem *p = NULL;
    ck_assert_msg(mpq_jobsolve_problem_build(f.ctx, &o, &p, &f.err) == MPQ_OK, "%s", f.err.msg);
    int64_t job = mpq_job_get_row(f.ctx)->id;
    for (int l = 0; l < p->n_layers; l += 7) {
        double kl, ae;
        ck_assert(mpq_db_metric_get(f.db, job, p->layers[l].id, "int4g32", "kl", &kl, NULL, NULL, &f.err) == MPQ_OK);
        ck_assert(mpq_db_metric_get(f.db, job, p->layers[l].id, "int4g32", "act_err", &ae, NULL, NULL, &f.err) == MPQ_OK);
        /* one multiply-add: exact to a rounding of the result */
        ck_assert_double_eq_tol(p->layer_loss[(size_t)l * (size_t)p->n_options + 1], kl + 0.5 * ae, 1e-15 * (kl + ae));
    }
    mpq_jobsolve_problem_free(p);
    /* missing metric: named; --allow-missing leaves nothing and says so */
    o.metric = "hawq_omega";
    ck_assert_int_eq(mpq_jobsolve_problem_build(f.ctx, &o, &p, &f.err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(f.err.msg, "blk.0.attn_q") && strstr(f.err.msg, "int3g32") && strstr(f.err.msg, "hawq_omega"), "%s",
                  f.err.msg);
    o.allow_missing = true;
    ck_assert_int_eq(mpq_jobsolve_problem_build(f.ctx, &o, &p, &f.err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(f.err.msg, "no allowed candidate") != NULL, "%s", f.err.msg);
    static const char *bad[] = {"", "kl+", "2*", "kl*2", "kl-dloss", "0.5 kl", "+kl"};
    o.allow_missing = false;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.metric = bad[i];
        ck_assert_msg(mpq_jobsolve_problem_build(f.ctx, &o, &p, &f.err) == MPQ_ERR_INVALID, "expression '%s' accepted", bad[i]);
        ck_assert_ptr_null(p);
    }
    fx_close(&f);
}
END_TEST

START_TEST(test_parse_tables) {
    mpq_budget b;
    mpq_err err = {0};
    ck_assert(mpq_budget_parse("avg-bits=3.5", &b, &err) == MPQ_OK);
    ck_assert_int_eq(b.kind, MPQ_BUDGET_AVG_BITS);
    ck_assert_int_eq(b.num, 35);
    ck_assert_int_eq(b.den, 10);
    ck_assert(mpq_budget_parse("bytes=123456", &b, &err) == MPQ_OK && b.num == 123456);
    ck_assert(mpq_budget_parse("latency=2.5", &b, &err) == MPQ_OK && b.value == 2.5);
    static const char *bad[] = {"avg-bits=", "avg-bits=abc", "foo=3", "bits=3.5", "avg-bits=-1", "avg-bits=3.1234567",
                                "avg-bits", "=3", "bops=0", "latency=inf", "avg-bits=65", "bytes=99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = '\0';
        ck_assert_msg(mpq_budget_parse(bad[i], &b, &err) == MPQ_ERR_INVALID, "budget '%s' accepted", bad[i]);
        ck_assert_msg(strstr(err.msg, bad[i]) != NULL, "message '%s' does not name '%s'", err.msg, bad[i]);
    }
    /* issue 15: values that overflowed int64 (UB under the sanitizers) or wrapped to a small
     * budget (1844674407370955166.1 -> 4.5, ...161.65 -> 0.05) are rejected before any arithmetic */
    static const char *range[] = {"avg-bits=7777777777777777777.126", "avg-bits=1844674407370955166.1",
                                  "avg-bits=1844674407370955161.65", "avg-bits=64.000001", "avg-bits=99999999999",
                                  "bits=9007199254740993", "bops=18446744073709551616", "latency=1e999",
                                  "latency=nan", "latency=-0", "latency=+3"};
    for (size_t i = 0; i < sizeof range / sizeof range[0]; i++) {
        err.msg[0] = '\0';
        ck_assert_msg(mpq_budget_parse(range[i], &b, &err) == MPQ_ERR_INVALID, "budget '%s' accepted", range[i]);
        ck_assert_msg(strstr(err.msg, range[i]) != NULL, "message '%s' does not name '%s'", err.msg, range[i]);
    }
    ck_assert(mpq_budget_parse("avg-bits=64", &b, &err) == MPQ_OK && b.num == 64 && b.den == 1);
    ck_assert(mpq_budget_parse("avg-bits=0.000001", &b, &err) == MPQ_OK && b.num == 1 && b.den == 1000000);
    ck_assert(mpq_budget_parse("bits=9007199254740992", &b, &err) == MPQ_OK && b.num == INT64_C(9007199254740992));
    unsigned t;
    ck_assert(mpq_ties_parse("gate_up,qkv", &t, &err) == MPQ_OK && t == (MPQ_TIES_QKV | MPQ_TIES_GATE_UP));
    ck_assert(mpq_ties_parse("none", &t, &err) == MPQ_OK && t == 0);
    ck_assert_int_eq(mpq_ties_parse("qkvo", &t, &err), MPQ_ERR_INVALID);
    /* Spearman: monotone => 1, reversed => -1, ties averaged: x = (1,2,2,3) ranks (1,2.5,2.5,4)
     * against y ranks (1,2,3,4): rho = 4.5 / sqrt(4.5 * 5) = 0.9486832980505138 */
    double x[4] = {1, 2, 2, 3}, y[4] = {10, 20, 30, 40}, yr[4] = {4, 3, 2, 1};
    ck_assert_double_eq_tol(mpq_jobsolve_spearman(y, y, 4), 1.0, 1e-15);
    ck_assert_double_eq_tol(mpq_jobsolve_spearman(y, yr, 4), -1.0, 1e-15);
    ck_assert_double_eq_tol(mpq_jobsolve_spearman(x, y, 4), 0.9486832980505138, 1e-15);
}
END_TEST

/* Latency budget from a table (name > kind > "*"), with BOPs at once: the ILP meets both. */
START_TEST(test_latency_and_bops) {
    fx f;
    fx_open(&f);
    mpq_budget b[2];
    ck_assert(mpq_budget_parse("latency=80", &b[0], &f.err) == MPQ_OK);
    ck_assert(mpq_budget_parse("bops=20000000", &b[1], &f.err) == MPQ_OK);
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.budgets = b;
    o.n_budgets = 2;
    o.latency_json = "{\"int3g32\":{\"*\":1},\"int4g32\":{\"*\":2,\"ffn_down\":3},"
                     "\"int8c\":{\"*\":4,\"blk.0.attn_q\":1}}";
    mpq_jobsolve_result *r = NULL;
    ck_assert_msg(mpq_jobsolve_run(f.ctx, &o, &r, &f.err) == MPQ_OK, "%s", f.err.msg);
    ck_assert_str_eq(r->solver, "ilp");
    ck_assert(r->cost[MPQ_RESOURCE_LATENCY] <= 80);
    ck_assert(r->cost[MPQ_RESOURCE_BOPS] <= 20000000);
    /* blk.0.attn_q costs 1 us at int8c, as little as int3g32, and is never worse: int8c */
    ck_assert_str_eq(r->options[r->choice[layer_index(r, &f, "blk.0.attn_q")]], "int8c");
    double lat = 0; /* recompute the latency from the table rules */
    for (int l = 0; l < r->n_layers; l++) {
        const char *c = r->options[r->choice[l]];
        lat += !strcmp(c, "int3g32") ? 1 : !strcmp(c, "int4g32") ? (l % 7 == 6 ? 3 : 2) : (l == 0 ? 1 : 4);
    }
    ck_assert_double_eq_tol(lat, r->cost[MPQ_RESOURCE_LATENCY], 1e-9); /* sums of small integers: exact */
    mpq_jobsolve_result_free(r);
    r = NULL;
    o.latency_json = "{\"int3g32\":{\"attn_q\":1}}";
    ck_assert_int_eq(mpq_jobsolve_run(f.ctx, &o, &r, &f.err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(f.err.msg, "latency table") != NULL, "%s", f.err.msg);
    fx_close(&f);
}
END_TEST

START_TEST(test_unknown_job) {
    mpq_db *db = NULL;
    mpq_err err = {0};
    mpq_job *c = NULL;
    ck_assert(mpq_db_open(g_db, MPQ_DB_READWRITE, &db, &err) == MPQ_OK);
    ck_assert_int_eq(mpq_job_open(db, "no-such-job", &c, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_null(c);
    mpq_db_close(db);
}
END_TEST

static Suite *solve_suite(void) {
    Suite *s = suite_create("solve");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, setup_job, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_parse_tables);
    tcase_add_test(tc, test_unknown_job);
    tcase_add_test(tc, test_dp_equals_ilp_and_budget_exact);
    tcase_add_test(tc, test_tighter_budget_not_better);
    tcase_add_test(tc, test_infeasible_named);
    tcase_add_test(tc, test_ties_and_pins);
    tcase_add_test(tc, test_stored_roundtrip_and_config);
    tcase_add_test(tc, test_frontier);
    tcase_add_test(tc, test_evaluation);
    tcase_add_test(tc, test_metric_expressions);
    tcase_add_test(tc, test_latency_and_bops);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(solve_suite)
