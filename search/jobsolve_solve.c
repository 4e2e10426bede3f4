/*
 * jobsolve_solve.c - solving a stored job under budgets and storing the answer
 * (mpq_jobsolve.h): solver choice (exact DP for one integral budget, else the GLPK ILP),
 * the stored solution with its mpq config built on the job's stored layer table (no model
 * file), its provenance, and the Gaussian reverse water-filling bound (Q-Palette; Cover &
 * Thomas 10.3.3) on the weight error any allocation of the same bits could reach.
 */
#include "jobsolve_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_pairs.h"
#include "mpq/mpq_quant.h"

void mpq_jobsolve_result_free(mpq_jobsolve_result *r) {
    if (!r) return;
    free(r->choice);
    free(r->layer_loss);
    free(r->layer_bits);
    free(r->layer_params);
    free(r->options);
    free(r->config_json);
    free(r);
}

/* Water-filling bound on total weight sse at bits_budget (see header); NaN when unavailable.
 * *sse_choice gets the stored weight_sse summed over the choice (NaN if one is missing). */
static double waterfill_bound(mpq_job *job, const mpq_jobsolve_problem *p, double bits_budget, const int *choice,
                              double *sse_choice) {
    int L = p->n_layers;
    double bound = NAN;
    *sse_choice = NAN;
    double *n = mpq_calloc((size_t)L, sizeof *n), *c = mpq_calloc((size_t)L, sizeof *c);
    double *cnt = mpq_calloc((size_t)L, sizeof *cnt), *v = mpq_calloc((size_t)L, sizeof *v);
    double *chosen = mpq_calloc((size_t)L, sizeof *chosen);
    int64_t *ids = mpq_calloc((size_t)L, sizeof *ids);
    if (!n || !c || !cnt || !v || !chosen || !ids) goto done;
    for (int l = 0; l < L; l++) {
        ids[l] = p->layers[l].id;
        n[l] = (double)p->layers[l].n_params;
        chosen[l] = NAN;
    }
    for (int o = 0; o < p->n_options; o++) {
        mpq_candidate cand;
        if (mpq_candidate_parse(p->options[o], &cand, NULL) != MPQ_OK) goto done;
        if (mpq_db_metric_fetch(mpq_job_db(job), mpq_job_get_row(job)->id, "weight_sse", p->options[o], L, ids, v, NULL,
                                NULL, NULL) != MPQ_OK)
            goto done;
        for (int l = 0; l < L; l++) {
            if (choice && choice[l] == o) chosen[l] = v[l];
            if (!isfinite(v[l]) || cand.type == MPQ_QTYPE_F32) continue;
            double b = mpq_candidate_bits_matrix(&cand, p->layers[l].rows, p->layers[l].cols);
            c[l] += v[l] / n[l] * exp2(2.0 * b);
            cnt[l] += 1;
        }
    }
    double tot = 0;
    for (int l = 0; l < L; l++) {
        if (cnt[l] == 0) goto done;
        c[l] /= cnt[l];
        tot += chosen[l];
    }
    *sse_choice = tot;
    if (isfinite(bits_budget)) {
        double D = NAN;
        if (mpq_bound_waterfill(n, c, L, bits_budget, NULL, &D, NULL, NULL) == MPQ_OK) bound = D;
    }
done:
    free(ids);
    free(chosen);
    free(v);
    free(cnt);
    free(c);
    free(n);
    return bound;
}

static const char *status_name(mpq_solve_status s) {
    return s == MPQ_SOLVE_OPTIMAL ? "optimal" : s == MPQ_SOLVE_FEASIBLE ? "feasible" : "infeasible";
}

static bool add_num(cJSON *o, const char *k, double v) {
    return isfinite(v) ? cJSON_AddNumberToObject(o, k, v) != NULL : cJSON_AddNullToObject(o, k) != NULL;
}

static char *budgets_json_of(const mpq_jobsolve_opts *opts) {
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    for (int i = 0; i < opts->n_budgets; i++)
        if (!cJSON_AddNumberToObject(b, jobsolve_budget_names[opts->budgets[i].kind], opts->budgets[i].value)) {
            cJSON_Delete(b);
            return NULL;
        }
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return s;
}

static const char *ties_name(unsigned t) {
    if (t & MPQ_TIES_QKV) return (t & MPQ_TIES_GATE_UP) ? "qkv,gate_up" : "qkv";
    return (t & MPQ_TIES_GATE_UP) ? "gate_up" : "none";
}

/* The mpq config of result r (on the job's stored layer table) with its "mpq_solution"
 * provenance object; *out malloc'd. */
static mpq_status config_of(mpq_job *job, const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts,
                            const mpq_solution *s, const mpq_jobsolve_result *r, const char *budgets, char **out,
                            mpq_err *err) {
    const mpq_model *shape = mpq_job_get_shape(job);
    const mpq_db_job *row = mpq_job_get_row(job);
    mpq_config *cfg = NULL;
    char *text = NULL;
    cJSON *root = NULL;
    mpq_status st = mpq_config_uniform(shape, "f32", NULL, &cfg, err);
    if (st != MPQ_OK) return st;
    for (int l = 0; l < p->n_layers && st == MPQ_OK; l++) {
        int mi = mpq_model_find_linear(shape, p->layers[l].name);
        st = mi < 0 ? mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': layer %s not in the stored table", row->name,
                                  p->layers[l].name)
                    : mpq_config_set_layer(cfg, mi, p->options[r->choice[l]], err);
    }
    if (st != MPQ_OK) goto done;
    text = mpq_config_to_json(cfg, shape);
    root = text ? cJSON_Parse(text) : NULL;
    cJSON *prov = root ? cJSON_AddObjectToObject(root, "mpq_solution") : NULL;
    cJSON *res = NULL, *as = NULL;
    bool ok = prov && cJSON_AddStringToObject(prov, "job", row->name) &&
              cJSON_AddNumberToObject(prov, "job_id", (double)row->id) &&
              cJSON_AddStringToObject(prov, "solution", r->name) && cJSON_AddStringToObject(prov, "solver", r->solver) &&
              cJSON_AddStringToObject(prov, "engine", s->solver) &&
              (!r->solver_reason[0] || cJSON_AddStringToObject(prov, "solver_choice", r->solver_reason)) &&
              cJSON_AddStringToObject(prov, "metric", p->metric) &&
              cJSON_AddStringToObject(prov, "ties", ties_name(opts->ties)) &&
              cJSON_AddBoolToObject(prov, "smooth", s->smoothed) &&
              cJSON_AddStringToObject(prov, "status", status_name(s->status)) &&
              cJSON_AddItemToObject(prov, "budgets", cJSON_Parse(budgets)) &&
              (res = cJSON_AddObjectToObject(prov, "budgets_resolved"));
    for (int q = 0; ok && q < p->n_resources; q++)
        if (isfinite(mpq_problem_budget(p->problem, q)))
            ok = add_num(res, jobsolve_resource_names[p->resource[q]], mpq_problem_budget(p->problem, q));
    if (ok && opts->pairs)
        ok = cJSON_AddNumberToObject(prov, "pair_terms", r->n_pair_terms) && add_num(prov, "pair_loss", r->pair_loss) &&
             cJSON_AddStringToObject(prov, "pair_form", opts->pairs_standard_form ? "standard" : "aggregated");
    ok = ok && add_num(prov, "predicted_loss", r->objective) && add_num(prov, "predicted_loss_raw", r->objective_raw) &&
         add_num(prov, "lp_bound", r->lp_bound) && add_num(prov, "gap", r->gap) && add_num(prov, "avg_bits", r->avg_bits) &&
         add_num(prov, "total_bits", (double)r->total_bits) && add_num(prov, "weight_sse", r->weight_sse) &&
         add_num(prov, "waterfill_bound_sse", r->waterfill_sse) && (as = cJSON_AddObjectToObject(prov, "assignments"));
    for (int l = 0; ok && l < p->n_layers; l++)
        ok = cJSON_AddStringToObject(as, p->layers[l].name, p->options[r->choice[l]]) != NULL;
    if (!ok || !(*out = cJSON_Print(root)))
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory building the config of solution %s", r->name);
done:
    cJSON_Delete(root);
    free(text);
    mpq_config_free(cfg);
    return st;
}

/* The result of choice s of p: per-layer option, loss, bits, totals. */
static mpq_status result_of(const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts, const mpq_solution *s,
                            const char *solver, const char *name, double lp_bound, mpq_jobsolve_result *r,
                            mpq_err *err) {
    int L = p->n_layers;
    r->choice = mpq_calloc((size_t)L, sizeof *r->choice);
    r->layer_loss = mpq_calloc((size_t)L, sizeof *r->layer_loss);
    r->layer_bits = mpq_calloc((size_t)L, sizeof *r->layer_bits);
    r->options = mpq_calloc((size_t)p->n_options, sizeof *r->options);
    r->layer_params = mpq_calloc((size_t)L, sizeof *r->layer_params);
    if (!r->choice || !r->layer_loss || !r->layer_bits || !r->layer_params || !r->options)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    memcpy(r->options, p->options, (size_t)p->n_options * sizeof *r->options);
    r->n_options = p->n_options;
    r->n_layers = L;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->solver, sizeof r->solver, "%s", solver);
    snprintf(r->engine, sizeof r->engine, "%s", s->solver);
    r->status = s->status;
    r->objective = s->total_loss;
    r->objective_raw = s->total_loss_raw;
    r->lp_bound = lp_bound;
    r->gap = s->gap;
    r->seconds = s->seconds;
    r->total_params = p->total_params;
    for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) r->cost[k] = NAN;
    for (int q = 0; q < p->n_resources; q++) r->cost[p->resource[q]] = s->total_cost[q];
    for (int l = 0; l < L; l++) {
        int o = s->choice[p->group_of[l]];
        size_t lo = (size_t)l * (size_t)p->n_options + (size_t)o;
        r->choice[l] = o;
        r->layer_loss[l] = p->layer_loss[lo];
        r->layer_bits[l] = p->layer_bits[lo];
        r->layer_params[l] = p->layers[l].n_params;
        r->total_bits += r->layer_bits[l];
    }
    r->avg_bits = (double)r->total_bits / (double)r->total_params;
    (void)opts;
    return MPQ_OK;
}

/* The bits budget the water-filling bound is computed at. */
static double bound_bits(const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts, const mpq_jobsolve_result *r) {
    double bits_budget = INFINITY;
    for (int b = 0; b < opts->n_budgets; b++)
        if (jobsolve_budget_resource(opts->budgets[b].kind) == MPQ_RESOURCE_BITS)
            bits_budget = mpq_problem_budget(p->problem, 0);
        else if (opts->budgets[b].kind == MPQ_BUDGET_BYTES && !isfinite(bits_budget))
            bits_budget = 8.0 * (double)opts->budgets[b].num;
    if (!isfinite(bits_budget) && opts->n_budgets == 0) bits_budget = (double)r->total_bits; /* frontier points */
    return bits_budget;
}

/* jobsolve_store_choice with why (may be NULL) recorded as the solver_reason. */
static mpq_status store_choice_why(mpq_job *job, const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts,
                                   const mpq_solution *s, const char *solver, const char *why, const char *name,
                                   double lp_bound, int n_pair_terms, mpq_jobsolve_result **out, mpq_err *err) {
    *out = NULL;
    mpq_status st;
    char *budgets = NULL;
    mpq_db_assignment *asg = NULL;
    mpq_jobsolve_result *r = mpq_calloc(1, sizeof *r);
    if (!r) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if ((st = result_of(p, opts, s, solver, name, lp_bound, r, err)) != MPQ_OK) goto done;
    if (opts->pairs) { /* the active pair terms: what the objective adds to the per-layer losses */
        double raw = 0;
        for (int l = 0; l < p->n_layers; l++) raw += r->layer_loss[l];
        r->pair_loss = s->total_loss_raw - raw;
        r->n_pair_terms = n_pair_terms;
    }
    snprintf(r->solver_reason, sizeof r->solver_reason, "%s", why ? why : "");
    r->waterfill_sse = waterfill_bound(job, p, bound_bits(p, opts, r), r->choice, &r->weight_sse);
    asg = mpq_calloc((size_t)p->n_layers, sizeof *asg);
    if (!asg || !(budgets = budgets_json_of(opts))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int l = 0; l < p->n_layers; l++) {
        asg[l].layer_id = p->layers[l].id;
        snprintf(asg[l].candidate, sizeof asg[l].candidate, "%s", p->options[r->choice[l]]);
    }
    if ((st = config_of(job, p, opts, s, r, budgets, &r->config_json, err)) != MPQ_OK) goto done;
    mpq_db_solution sol;
    memset(&sol, 0, sizeof sol);
    sol.job_id = mpq_job_get_row(job)->id;
    snprintf(sol.name, sizeof sol.name, "%s", name);
    snprintf(sol.solver, sizeof sol.solver, "%s", solver);
    snprintf(sol.status, sizeof sol.status, "%s", status_name(s->status));
    sol.metric_expr = (char *)p->metric;
    sol.budgets_json = budgets;
    sol.config_json = r->config_json;
    sol.objective = r->objective;
    sol.bound = lp_bound;
    sol.gap = r->gap;
    sol.seconds = r->seconds;
    st = mpq_db_solution_insert(mpq_job_db(job), &sol, asg, p->n_layers, &r->solution_id, err);
done:
    free(asg);
    free(budgets);
    if (st != MPQ_OK) mpq_jobsolve_result_free(r);
    else *out = r;
    return st;
}

mpq_status jobsolve_store_choice(mpq_job *job, const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts,
                                 const mpq_solution *s, const char *solver, const char *name, double lp_bound,
                                 mpq_jobsolve_result **out, mpq_err *err) {
    return store_choice_why(job, p, opts, s, solver, NULL, name, lp_bound, 0, out, err);
}

static void default_name(const mpq_jobsolve_opts *opts, const char *metric, char *out, size_t n) {
    int k = snprintf(out, n, "%s%s@", metric, opts->pairs ? "+pairs" : "");
    for (int b = 0; b < opts->n_budgets && k > 0 && (size_t)k < n; b++)
        k += snprintf(out + k, n - (size_t)k, "%s%s", b ? "," : "", opts->budgets[b].text);
}

/* "auto" -> dp or ilp by the estimated cost of each (mpq_solve_estimate_cost; *why says
 * what was compared); checks an explicit choice. *dp_res: the budgeted resource for dp. */
static mpq_status pick_solver(const mpq_jobsolve_problem *p, const char *asked, const mpq_solve_opts *so,
                              const char **solver, int *dp_res, char *why, size_t why_n, mpq_err *err) {
    why[0] = '\0';
    *dp_res = -1;
    for (int r = 0; r < p->n_resources; r++)
        if (isfinite(mpq_problem_budget(p->problem, r))) *dp_res = r;
    bool dp_ok = p->n_finite_budgets == 1 && mpq_problem_resource_integral(p->problem, *dp_res);
    if (strcmp(asked, "auto") == 0) {
        mpq_solve_opts o = *so;
        o.dp_resource = *dp_res >= 0 ? *dp_res : 0;
        mpq_solve_estimate e;
        mpq_status st = mpq_solve_estimate_cost(p->problem, &o, &e, err);
        if (st != MPQ_OK) return st;
        *solver = dp_ok ? e.solver : "ilp";
        snprintf(why, why_n, "auto: %s", e.reason);
    }
    else if (strcmp(asked, "dp") == 0 && !dp_ok)
        return mpq_err_set(err, MPQ_ERR_INVALID, "solve: dp needs exactly one budget on an integral resource (bits, "
                                                 "bytes, bops); use --solver ilp");
    else if (strcmp(asked, "ilp") != 0 && strcmp(asked, "dp") != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "solve: unknown solver '%s' (auto, ilp, dp)", asked);
    else *solver = asked;
    return MPQ_OK;
}

/* Records an infeasible attempt (no assignments); the solver's message stays in err. */
static void store_infeasible(mpq_job *job, const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts,
                             const char *solver, const char *name) {
    char *budgets = budgets_json_of(opts);
    mpq_db_solution sol;
    memset(&sol, 0, sizeof sol);
    sol.job_id = mpq_job_get_row(job)->id;
    snprintf(sol.name, sizeof sol.name, "%s", name);
    snprintf(sol.solver, sizeof sol.solver, "%s", solver);
    snprintf(sol.status, sizeof sol.status, "infeasible");
    sol.metric_expr = (char *)p->metric;
    sol.budgets_json = budgets;
    sol.objective = sol.bound = sol.gap = sol.seconds = NAN;
    int64_t id;
    if (budgets) (void)mpq_db_solution_insert(mpq_job_db(job), &sol, NULL, 0, &id, NULL);
    free(budgets);
}

mpq_status mpq_jobsolve_run(mpq_job *job, const mpq_jobsolve_opts *opts, mpq_jobsolve_result **out, mpq_err *err) {
    if (!job || !opts || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_jobsolve_run: NULL argument");
    *out = NULL;
    mpq_status st;
    mpq_jobsolve_problem *p = NULL;
    mpq_solution *s = NULL;
    mpq_pair_term *terms = NULL;
    int n_terms = 0;
    if (opts->n_budgets <= 0) return mpq_err_set(err, MPQ_ERR_INVALID, "solve: no budget given (e.g. avg-bits=3.5)");
    if ((st = mpq_jobsolve_problem_build(job, opts, &p, err)) != MPQ_OK) return st;
    char name[MPQ_DB_NAME_MAX];
    if (opts->name && *opts->name) snprintf(name, sizeof name, "%s", opts->name);
    else default_name(opts, p->metric, name, sizeof name);
    const char *solver = NULL;
    int dp_res = -1;
    char why[256];
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = opts->smooth;
    so.time_limit_s = opts->time_limit_s;
    if ((st = pick_solver(p, opts->solver ? opts->solver : "auto", &so, &solver, &dp_res, why, sizeof why, err)) !=
        MPQ_OK)
        goto done;
    so.dp_resource = dp_res >= 0 ? dp_res : 0;
    if (opts->pairs) {
        if (strcmp(p->metric, "kl") != 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "solve: --pairs needs --metric kl (the pair terms are "
                                                   "interactions of single-layer KL), not '%s'", p->metric);
            goto done;
        }
        if (opts->solver && !strcmp(opts->solver, "dp")) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "solve: --pairs uses the ILP; --solver dp does not apply");
            goto done;
        }
        solver = "ilp";
        snprintf(why, sizeof why, "pairs: GLPK ILP with pair terms");
        if ((st = mpq_pairs_terms(job, p, &terms, &n_terms, err)) != MPQ_OK) goto done;
        so.pair_standard_form = opts->pairs_standard_form;
        st = mpq_solve_ilp_pairs(p->problem, terms, n_terms, &so, &s, err);
    } else {
        st = strcmp(solver, "dp") == 0 ? mpq_solve_dp(p->problem, &so, &s, err) : mpq_solve_ilp(p->problem, &so, &s, err);
    }
    if (st == MPQ_ERR_INFEASIBLE) {
        store_infeasible(job, p, opts, solver, name);
        mpq_err_prefix(err, "job '%s'", mpq_job_get_row(job)->name);
        goto done;
    }
    if (st != MPQ_OK) goto done;
    double lb = NAN;
    if (opts->pairs) lb = s->bound; /* the LP relaxation of the model with pair terms */
    else if (mpq_bound_lp(p->problem, &so, &lb, NULL) != MPQ_OK) lb = NAN;
    st = store_choice_why(job, p, opts, s, solver, why, name, lb, n_terms, out, err);
done:
    free(terms);
    mpq_solution_free(s);
    mpq_jobsolve_problem_free(p);
    return st;
}
