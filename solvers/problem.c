/*
 * problem.c - the allocation problem (multiple-choice knapsack with several budgets, as in
 * HAWQ-V3's ILP), solutions, monotone smoothing, infeasibility diagnosis, brute force, and
 * the single-resource MCKP view with its convex-hull increments and greedy (the LP
 * relaxation of the MCKP: Sinha & Zoltners, Oper. Res. 27(3), 1979).
 */
#include "solvers/solvers_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTIONS 255
#define MAX_RESOURCES 64
#define INTEGRAL_MAX 9007199254740992.0 /* 2^53 */

mpq_status mpq_problem_create(int n_items, int n_options_max, int n_resources, mpq_problem **out,
                              mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_problem *p = NULL;
    size_t nlo, nco;
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_problem_create: out is NULL");
    *out = NULL;
    if (n_items < 1 || n_options_max < 1 || n_options_max > MAX_OPTIONS || n_resources < 1 ||
        n_resources > MAX_RESOURCES)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "problem: n_items %d, n_options_max %d, n_resources %d out of range "
                           "(>= 1, 1..%d, 1..%d)",
                           n_items, n_options_max, n_resources, MAX_OPTIONS, MAX_RESOURCES);
    /* at most 2^31 (item, option, resource) costs (16 GiB): beyond that refuse up front */
    if (!mpq_size_mul((size_t)n_items, (size_t)n_options_max, &nlo) ||
        !mpq_size_mul(nlo, (size_t)n_resources, &nco) || nco > ((size_t)1 << 31))
        return mpq_err_set(err, MPQ_ERR_INVALID, "problem: %d items x %d options x %d resources is too large",
                           n_items, n_options_max, n_resources);
    p = calloc(1, sizeof *p);
    if (!p) { st = MPQ_ERR_NOMEM; goto done; }
    p->n_items = n_items;
    p->n_opt_max = n_options_max;
    p->n_res = n_resources;
    p->n_opt = mpq_calloc((size_t)n_items, sizeof *p->n_opt);
    p->loss = mpq_calloc(nlo, sizeof *p->loss);
    p->cost = mpq_calloc(nco, sizeof *p->cost);
    p->budget = mpq_calloc((size_t)n_resources, sizeof *p->budget);
    p->mask = mpq_calloc(nlo, 1);
    p->pin = mpq_calloc((size_t)n_items, sizeof *p->pin);
    p->item_name = mpq_calloc((size_t)n_items, sizeof *p->item_name);
    p->opt_name = mpq_calloc((size_t)n_options_max, sizeof *p->opt_name);
    p->res_name = mpq_calloc((size_t)n_resources, sizeof *p->res_name);
    if (!p->n_opt || !p->loss || !p->cost || !p->budget || !p->mask || !p->pin || !p->item_name ||
        !p->opt_name || !p->res_name) {
        st = MPQ_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < n_items; i++) {
        p->n_opt[i] = n_options_max;
        p->pin[i] = -1;
        snprintf(p->item_name[i], SOLV_NAME_MAX, "item %d", i);
    }
    for (size_t k = 0; k < nlo; k++) { p->loss[k] = NAN; p->mask[k] = 1; }
    for (size_t k = 0; k < nco; k++) p->cost[k] = NAN;
    for (int o = 0; o < n_options_max; o++) snprintf(p->opt_name[o], SOLV_NAME_MAX, "option %d", o);
    for (int r = 0; r < n_resources; r++) {
        p->budget[r] = INFINITY;
        snprintf(p->res_name[r], SOLV_NAME_MAX, "resource %d", r);
    }
done:
    if (st != MPQ_OK) {
        mpq_problem_free(p);
        return mpq_err_set(err, st, "problem: out of memory for %d items x %d options x %d resources",
                           n_items, n_options_max, n_resources);
    }
    *out = p;
    return MPQ_OK;
}

void mpq_problem_free(mpq_problem *p) {
    if (!p) return;
    free(p->n_opt);
    free(p->loss);
    free(p->cost);
    free(p->budget);
    free(p->mask);
    free(p->pin);
    free(p->item_name);
    free(p->opt_name);
    free(p->res_name);
    free(p);
}

static mpq_status check_io(const mpq_problem *p, int item, int option, const char *what, mpq_err *err) {
    if (!p) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: problem is NULL", what);
    if (item < 0 || item >= p->n_items)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: item %d out of range 0..%d", what, item, p->n_items - 1);
    if (option < 0 || option >= p->n_opt[item])
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: option %d out of range 0..%d", what,
                           p->item_name[item], option, p->n_opt[item] - 1);
    return MPQ_OK;
}

mpq_status mpq_problem_set_n_options(mpq_problem *p, int item, int n_options, mpq_err *err) {
    if (!p || item < 0 || item >= p->n_items)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_n_options: item %d out of range", item);
    if (n_options < 1 || n_options > p->n_opt_max)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_n_options: %s: %d options not in 1..%d",
                           p->item_name[item], n_options, p->n_opt_max);
    p->n_opt[item] = n_options;
    if (p->pin[item] >= n_options) p->pin[item] = -1;
    return MPQ_OK;
}

mpq_status mpq_problem_set_loss(mpq_problem *p, int item, int option, double loss, mpq_err *err) {
    mpq_status st = check_io(p, item, option, "set_loss", err);
    if (st != MPQ_OK) return st;
    if (!isfinite(loss))
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_loss: %s %s: loss %g is not finite",
                           p->item_name[item], p->opt_name[option], loss);
    p->loss[solv_lo(p, item, option)] = loss;
    return MPQ_OK;
}

mpq_status mpq_problem_set_cost(mpq_problem *p, int resource, int item, int option, double cost,
                                mpq_err *err) {
    mpq_status st = check_io(p, item, option, "set_cost", err);
    if (st != MPQ_OK) return st;
    if (resource < 0 || resource >= p->n_res)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_cost: resource %d out of range 0..%d", resource,
                           p->n_res - 1);
    if (!isfinite(cost))
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_cost: %s %s %s: cost %g is not finite",
                           p->res_name[resource], p->item_name[item], p->opt_name[option], cost);
    p->cost[solv_co(p, resource, item, option)] = cost;
    return MPQ_OK;
}

mpq_status mpq_problem_set_budget(mpq_problem *p, int resource, double budget, mpq_err *err) {
    if (!p || resource < 0 || resource >= p->n_res)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_budget: resource %d out of range", resource);
    if (isnan(budget) || budget == -INFINITY)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_budget: %s: budget %g is not a number or +inf",
                           p->res_name[resource], budget);
    p->budget[resource] = budget;
    return MPQ_OK;
}

mpq_status mpq_problem_set_allowed(mpq_problem *p, int item, int option, bool allowed, mpq_err *err) {
    mpq_status st = check_io(p, item, option, "set_allowed", err);
    if (st != MPQ_OK) return st;
    p->mask[solv_lo(p, item, option)] = allowed ? 1 : 0;
    return MPQ_OK;
}

mpq_status mpq_problem_pin(mpq_problem *p, int item, int option, mpq_err *err) {
    if (option == -1) {
        if (!p || item < 0 || item >= p->n_items)
            return mpq_err_set(err, MPQ_ERR_INVALID, "pin: item %d out of range", item);
        p->pin[item] = -1;
        return MPQ_OK;
    }
    mpq_status st = check_io(p, item, option, "pin", err);
    if (st != MPQ_OK) return st;
    p->pin[item] = option;
    return MPQ_OK;
}

static void set_name(char *dst, const char *name) {
    snprintf(dst, SOLV_NAME_MAX, "%s", name ? name : "");
}

mpq_status mpq_problem_set_item_name(mpq_problem *p, int item, const char *name, mpq_err *err) {
    if (!p || item < 0 || item >= p->n_items || !name)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_item_name: item %d out of range or name NULL", item);
    set_name(p->item_name[item], name);
    return MPQ_OK;
}

mpq_status mpq_problem_set_option_name(mpq_problem *p, int option, const char *name, mpq_err *err) {
    if (!p || option < 0 || option >= p->n_opt_max || !name)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_option_name: option %d out of range or name NULL",
                           option);
    set_name(p->opt_name[option], name);
    return MPQ_OK;
}

mpq_status mpq_problem_set_resource_name(mpq_problem *p, int resource, const char *name, mpq_err *err) {
    if (!p || resource < 0 || resource >= p->n_res || !name)
        return mpq_err_set(err, MPQ_ERR_INVALID, "set_resource_name: resource %d out of range or name NULL",
                           resource);
    set_name(p->res_name[resource], name);
    return MPQ_OK;
}

int mpq_problem_n_items(const mpq_problem *p) { return p ? p->n_items : 0; }
int mpq_problem_n_options(const mpq_problem *p, int item) {
    return (p && item >= 0 && item < p->n_items) ? p->n_opt[item] : 0;
}
int mpq_problem_n_resources(const mpq_problem *p) { return p ? p->n_res : 0; }
double mpq_problem_loss(const mpq_problem *p, int item, int option) {
    if (!p || item < 0 || item >= p->n_items || option < 0 || option >= p->n_opt[item]) return NAN;
    return p->loss[solv_lo(p, item, option)];
}
double mpq_problem_cost(const mpq_problem *p, int resource, int item, int option) {
    if (!p || resource < 0 || resource >= p->n_res || item < 0 || item >= p->n_items || option < 0 ||
        option >= p->n_opt[item])
        return NAN;
    return p->cost[solv_co(p, resource, item, option)];
}
double mpq_problem_budget(const mpq_problem *p, int resource) {
    return (p && resource >= 0 && resource < p->n_res) ? p->budget[resource] : NAN;
}
bool mpq_problem_allowed(const mpq_problem *p, int item, int option) {
    if (!p || item < 0 || item >= p->n_items || option < 0 || option >= p->n_opt[item]) return false;
    if (!p->mask[solv_lo(p, item, option)]) return false;
    return p->pin[item] < 0 || p->pin[item] == option;
}
const char *mpq_problem_item_name(const mpq_problem *p, int item) {
    return (p && item >= 0 && item < p->n_items) ? p->item_name[item] : NULL;
}
const char *mpq_problem_option_name(const mpq_problem *p, int option) {
    return (p && option >= 0 && option < p->n_opt_max) ? p->opt_name[option] : NULL;
}
const char *mpq_problem_resource_name(const mpq_problem *p, int resource) {
    return (p && resource >= 0 && resource < p->n_res) ? p->res_name[resource] : NULL;
}

bool mpq_problem_resource_integral(const mpq_problem *p, int resource) {
    if (!p || resource < 0 || resource >= p->n_res) return false;
    for (int i = 0; i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i]; o++) {
            if (!mpq_problem_allowed(p, i, o)) continue;
            double c = p->cost[solv_co(p, resource, i, o)];
            if (!isfinite(c) || fabs(c) > INTEGRAL_MAX || c != floor(c)) return false;
        }
    return true;
}

mpq_status mpq_problem_validate(const mpq_problem *p, mpq_err *err) {
    if (!p) return mpq_err_set(err, MPQ_ERR_INVALID, "problem is NULL");
    for (int i = 0; i < p->n_items; i++) {
        int n_allowed = 0;
        if (p->pin[i] >= 0 && !p->mask[solv_lo(p, i, p->pin[i])])
            return mpq_err_set(err, MPQ_ERR_INVALID, "problem: %s: pinned to %s, which is not allowed",
                               p->item_name[i], p->opt_name[p->pin[i]]);
        for (int o = 0; o < p->n_opt[i]; o++) {
            if (!mpq_problem_allowed(p, i, o)) continue;
            n_allowed++;
            if (!isfinite(p->loss[solv_lo(p, i, o)]))
                return mpq_err_set(err, MPQ_ERR_INVALID, "problem: %s %s: loss not set", p->item_name[i],
                                   p->opt_name[o]);
            for (int r = 0; r < p->n_res; r++)
                if (!isfinite(p->cost[solv_co(p, r, i, o)]))
                    return mpq_err_set(err, MPQ_ERR_INVALID, "problem: %s %s: cost of %s not set",
                                       p->item_name[i], p->opt_name[o], p->res_name[r]);
        }
        if (n_allowed == 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "problem: %s has no allowed option", p->item_name[i]);
    }
    return MPQ_OK;
}

/* Running minimum over strictly cheaper (resource 0) allowed options: see mpq_solvers.h. */
static void smooth_item(const mpq_problem *p, int i, double *out) {
    int idx[MAX_OPTIONS];
    int n = 0;
    for (int o = 0; o < p->n_opt[i]; o++)
        if (mpq_problem_allowed(p, i, o)) idx[n++] = o;
    /* insertion sort by resource-0 cost (n <= 255) */
    for (int a = 1; a < n; a++) {
        int v = idx[a], b = a;
        double cv = p->cost[solv_co(p, 0, i, v)];
        while (b > 0 && p->cost[solv_co(p, 0, i, idx[b - 1])] > cv) { idx[b] = idx[b - 1]; b--; }
        idx[b] = v;
    }
    double run = INFINITY;
    for (int a = 0; a < n;) {
        double c = p->cost[solv_co(p, 0, i, idx[a])];
        int e = a;
        double gmin = INFINITY;
        while (e < n && p->cost[solv_co(p, 0, i, idx[e])] == c) {
            double l = p->loss[solv_lo(p, i, idx[e])];
            out[solv_lo(p, i, idx[e])] = l < run ? l : run;
            if (l < gmin) gmin = l;
            e++;
        }
        if (gmin < run) run = gmin;
        a = e;
    }
}

mpq_status mpq_problem_smoothed_losses(const mpq_problem *p, double *loss_out, mpq_err *err) {
    mpq_status st = mpq_problem_validate(p, err);
    if (st != MPQ_OK) return st;
    if (!loss_out) return mpq_err_set(err, MPQ_ERR_INVALID, "smoothed_losses: output is NULL");
    for (size_t k = 0; k < (size_t)p->n_items * (size_t)p->n_opt_max; k++) loss_out[k] = NAN;
    for (int i = 0; i < p->n_items; i++) smooth_item(p, i, loss_out);
    return MPQ_OK;
}

mpq_status solv_effective_losses(const mpq_problem *p, bool smooth, double **out, mpq_err *err) {
    *out = NULL;
    mpq_status st = mpq_problem_validate(p, err);
    if (st != MPQ_OK) return st;
    size_t n = (size_t)p->n_items * (size_t)p->n_opt_max;
    double *e = mpq_calloc(n, sizeof *e);
    if (!e) return mpq_err_set(err, MPQ_ERR_NOMEM, "problem: out of memory for %zu losses", n);
    if (smooth) {
        st = mpq_problem_smoothed_losses(p, e, err);
        if (st != MPQ_OK) { free(e); return st; }
    } else {
        for (int i = 0; i < p->n_items; i++)
            for (int o = 0; o < p->n_opt_max; o++)
                e[solv_lo(p, i, o)] = (o < p->n_opt[i] && mpq_problem_allowed(p, i, o)) ? p->loss[solv_lo(p, i, o)]
                                                                                         : NAN;
    }
    *out = e;
    return MPQ_OK;
}

mpq_status mpq_problem_check_budgets(const mpq_problem *p, int *resource_out, mpq_err *err) {
    if (resource_out) *resource_out = -1;
    mpq_status st = mpq_problem_validate(p, err);
    if (st != MPQ_OK) return st;
    int worst = -1;
    double worst_rel = 0, worst_min = 0;
    for (int r = 0; r < p->n_res; r++) {
        if (p->budget[r] == INFINITY) continue;
        double mn = 0;
        for (int i = 0; i < p->n_items; i++) {
            double m = INFINITY;
            for (int o = 0; o < p->n_opt[i]; o++)
                if (mpq_problem_allowed(p, i, o) && p->cost[solv_co(p, r, i, o)] < m) m = p->cost[solv_co(p, r, i, o)];
            mn += m;
        }
        if (mn > p->budget[r]) {
            double rel = (mn - p->budget[r]) / (fabs(p->budget[r]) + DBL_EPSILON);
            if (worst < 0 || rel > worst_rel) { worst = r; worst_rel = rel; worst_min = mn; }
        }
    }
    if (worst >= 0) {
        if (resource_out) *resource_out = worst;
        return mpq_err_set(err, MPQ_ERR_INFEASIBLE,
                           "infeasible: budget %s = %.17g is below %.17g, the minimum reachable with the "
                           "cheapest allowed option of every item",
                           p->res_name[worst], p->budget[worst], worst_min);
    }
    return MPQ_OK;
}

mpq_status solv_infeasible(const mpq_problem *p, mpq_err *err) {
    int r = -1;
    mpq_status st = mpq_problem_check_budgets(p, &r, err);
    if (st != MPQ_OK) return st; /* one budget alone is infeasible: message written */
    /* Jointly infeasible: name the budget with the least relative slack over its own minimum. */
    int best = -1;
    double best_rel = INFINITY, best_min = 0;
    for (int q = 0; q < p->n_res; q++) {
        if (p->budget[q] == INFINITY) continue;
        double mn = 0;
        for (int i = 0; i < p->n_items; i++) {
            double m = INFINITY;
            for (int o = 0; o < p->n_opt[i]; o++)
                if (mpq_problem_allowed(p, i, o) && p->cost[solv_co(p, q, i, o)] < m) m = p->cost[solv_co(p, q, i, o)];
            mn += m;
        }
        double rel = (p->budget[q] - mn) / (fabs(p->budget[q]) + DBL_EPSILON);
        if (rel < best_rel) { best_rel = rel; best = q; best_min = mn; }
    }
    if (best < 0) return mpq_err_set(err, MPQ_ERR_INFEASIBLE, "infeasible: no finite budget (internal)");
    return mpq_err_set(err, MPQ_ERR_INFEASIBLE,
                       "infeasible: the budgets cannot all be met together; tightest is %s = %.17g "
                       "(minimum reachable by itself %.17g)",
                       p->res_name[best], p->budget[best], best_min);
}

/* ------------------------------------------------------------- solutions ---- */

void mpq_solution_free(mpq_solution *s) {
    if (!s) return;
    free(s->choice);
    free(s->total_cost);
    free(s);
}

mpq_status solv_solution_new(const mpq_problem *p, const char *solver, mpq_solution **out, mpq_err *err) {
    mpq_solution *s = calloc(1, sizeof *s);
    if (!s) return mpq_err_set(err, MPQ_ERR_NOMEM, "solution: out of memory");
    s->n_items = p->n_items;
    s->n_resources = p->n_res;
    s->choice = mpq_calloc((size_t)p->n_items, sizeof *s->choice);
    s->total_cost = mpq_calloc((size_t)p->n_res, sizeof *s->total_cost);
    if (!s->choice || !s->total_cost) {
        mpq_solution_free(s);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "solution: out of memory for %d items", p->n_items);
    }
    for (int i = 0; i < p->n_items; i++) s->choice[i] = -1;
    snprintf(s->solver, sizeof s->solver, "%s", solver);
    *out = s;
    return MPQ_OK;
}

void solv_solution_totals(const mpq_problem *p, const double *eff, mpq_solution *s) {
    double l = 0, lr = 0;
    for (int r = 0; r < p->n_res; r++) s->total_cost[r] = 0;
    for (int i = 0; i < p->n_items; i++) {
        int o = s->choice[i];
        l += eff[solv_lo(p, i, o)];
        lr += p->loss[solv_lo(p, i, o)];
        for (int r = 0; r < p->n_res; r++) s->total_cost[r] += p->cost[solv_co(p, r, i, o)];
    }
    s->total_loss = l;
    s->total_loss_raw = lr;
}

bool solv_choice_feasible(const mpq_problem *p, const int *choice) {
    for (int r = 0; r < p->n_res; r++) {
        if (p->budget[r] == INFINITY) continue;
        double c = 0;
        for (int i = 0; i < p->n_items; i++) c += p->cost[solv_co(p, r, i, choice[i])];
        if (c > p->budget[r]) return false;
    }
    return true;
}

mpq_solve_opts mpq_solve_opts_default(void) {
    mpq_solve_opts o;
    memset(&o, 0, sizeof o);
    o.smooth = true;
    o.time_limit_s = 0;
    o.mip_gap = 0;
    o.presolve = true;
    o.warm_start = true;
    o.dp_resource = 0;
    o.dp_max_bytes = (size_t)256 << 20;
    return o;
}

/* ------------------------------------------------------------ brute force ---- */

mpq_status mpq_solve_brute(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solution **out,
                           mpq_err *err) {
    mpq_status st = MPQ_OK;
    double *eff = NULL, *csum = NULL;
    int *cur = NULL;
    mpq_solution *s = NULL;
    mpq_solve_opts def = mpq_solve_opts_default();
    double t0 = mpq_time_now();
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "solve_brute: out is NULL");
    *out = NULL;
    if (!opts) opts = &def;
    st = solv_effective_losses(p, opts->smooth, &eff, err);
    if (st != MPQ_OK) goto done;
    double combos = 1;
    for (int i = 0; i < p->n_items; i++) {
        int n = 0;
        for (int o = 0; o < p->n_opt[i]; o++) n += mpq_problem_allowed(p, i, o);
        combos *= n;
    }
    if (combos > 1e7) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "solve_brute: %.3g assignments > 1e7", combos);
        goto done;
    }
    st = solv_solution_new(p, "brute", &s, err);
    if (st != MPQ_OK) goto done;
    cur = mpq_calloc((size_t)p->n_items, sizeof *cur);
    csum = mpq_calloc((size_t)p->n_res, sizeof *csum);
    if (!cur || !csum) { st = mpq_err_set(err, MPQ_ERR_NOMEM, "solve_brute: out of memory"); goto done; }
    for (int i = 0; i < p->n_items; i++) {
        cur[i] = 0;
        while (!mpq_problem_allowed(p, i, cur[i])) cur[i]++;
    }
    double best = INFINITY;
    for (;;) {
        double l = 0;
        bool ok = true;
        for (int i = 0; i < p->n_items; i++) l += eff[solv_lo(p, i, cur[i])];
        for (int r = 0; r < p->n_res && ok; r++) {
            if (p->budget[r] == INFINITY) continue;
            double c = 0;
            for (int i = 0; i < p->n_items; i++) c += p->cost[solv_co(p, r, i, cur[i])];
            ok = c <= p->budget[r];
        }
        if (ok && l < best) {
            best = l;
            memcpy(s->choice, cur, (size_t)p->n_items * sizeof *cur);
        }
        int i = p->n_items - 1; /* odometer, last item fastest: lexicographic order */
        for (; i >= 0; i--) {
            do cur[i]++; while (cur[i] < p->n_opt[i] && !mpq_problem_allowed(p, i, cur[i]));
            if (cur[i] < p->n_opt[i]) break;
            cur[i] = 0;
            while (!mpq_problem_allowed(p, i, cur[i])) cur[i]++;
        }
        if (i < 0) break;
    }
    if (best == INFINITY) { st = solv_infeasible(p, err); goto done; }
    solv_solution_totals(p, eff, s);
    s->bound = s->total_loss;
    s->gap = 0;
    s->status = MPQ_SOLVE_OPTIMAL;
    s->smoothed = opts->smooth;
    s->seconds = mpq_time_now() - t0;
done:
    free(eff);
    free(cur);
    free(csum);
    if (st != MPQ_OK) { mpq_solution_free(s); s = NULL; }
    *out = s;
    return st;
}

/* ------------------------------------------------------- MCKP view + hull ---- */

void solv_mck_free(solv_mck *m) {
    if (!m) return;
    free(m->start);
    free(m->opt);
    free(m->cost);
    free(m->loss);
    free(m->item_base);
    memset(m, 0, sizeof *m);
}

mpq_status solv_mck_build(const mpq_problem *p, const double *eff, int r, solv_mck *m, mpq_err *err) {
    return solv_mck_build_mask(p, eff, r, NULL, m, err);
}

mpq_status solv_mck_build_mask(const mpq_problem *p, const double *eff, int r, const unsigned char *mask, solv_mck *m,
                               mpq_err *err) {
    memset(m, 0, sizeof *m);
    size_t n_all = 0;
    for (int i = 0; i < p->n_items; i++) n_all += (size_t)p->n_opt[i];
    m->n_items = p->n_items;
    m->start = mpq_calloc((size_t)p->n_items + 1, sizeof *m->start);
    m->opt = mpq_calloc(n_all, sizeof *m->opt);
    m->cost = mpq_calloc(n_all, sizeof *m->cost);
    m->loss = mpq_calloc(n_all, sizeof *m->loss);
    m->item_base = mpq_calloc((size_t)p->n_items, sizeof *m->item_base);
    if (!m->start || !m->opt || !m->cost || !m->loss || !m->item_base) {
        solv_mck_free(m);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "mckp: out of memory for %zu options", n_all);
    }
    int k = 0;
    m->base = 0;
    m->max_total = 0;
    for (int i = 0; i < p->n_items; i++) {
        int idx[MAX_OPTIONS], n = 0;
        m->start[i] = k;
        for (int o = 0; o < p->n_opt[i]; o++)
            if (mpq_problem_allowed(p, i, o) && (!mask || mask[solv_lo(p, i, o)])) idx[n++] = o;
        if (n == 0) { /* excluded by mpq_problem_validate (and by the callers' masks) */
            solv_mck_free(m);
            return mpq_err_set(err, MPQ_ERR_INVALID, "mckp: %s has no allowed option", p->item_name[i]);
        }
        /* sort by (cost, loss, index) */
        for (int a = 1; a < n; a++) {
            int v = idx[a], b = a;
            double cv = p->cost[solv_co(p, r, i, v)], lv = eff[solv_lo(p, i, v)];
            while (b > 0) {
                int u = idx[b - 1];
                double cu = p->cost[solv_co(p, r, i, u)], lu = eff[solv_lo(p, i, u)];
                if (cu < cv || (cu == cv && (lu < lv || (lu == lv && u < v)))) break;
                idx[b] = u;
                b--;
            }
            idx[b] = v;
        }
        double base = p->cost[solv_co(p, r, i, idx[0])];
        double last_loss = INFINITY;
        for (int a = 0; a < n; a++) {
            double c = p->cost[solv_co(p, r, i, idx[a])], l = eff[solv_lo(p, i, idx[a])];
            if (l >= last_loss) continue; /* dominated: not cheaper-or-equal and better */
            m->opt[k] = idx[a];
            m->cost[k] = c - base;
            m->loss[k] = l;
            last_loss = l;
            k++;
        }
        m->item_base[i] = base;
        m->base += base;
        m->max_total += m->cost[k - 1];
    }
    m->start[p->n_items] = k;
    return MPQ_OK;
}

static int inc_cmp(const void *a, const void *b) {
    const solv_inc *x = a, *y = b;
    if (x->slope < y->slope) return -1;
    if (x->slope > y->slope) return 1;
    if (x->item != y->item) return x->item < y->item ? -1 : 1;
    return x->from < y->from ? -1 : (x->from > y->from);
}

mpq_status solv_mck_increments(const solv_mck *m, solv_inc **incs, size_t *n_incs, mpq_err *err) {
    size_t n = (size_t)m->start[m->n_items];
    solv_inc *v = mpq_calloc(n, sizeof *v);
    int *hull = mpq_calloc((size_t)MAX_OPTIONS, sizeof *hull);
    *incs = NULL;
    *n_incs = 0;
    if (!v || !hull) {
        free(v);
        free(hull);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "mckp: out of memory for hull increments");
    }
    size_t c = 0;
    for (int i = 0; i < m->n_items; i++) {
        int h = 0;
        for (int k = m->start[i]; k < m->start[i + 1]; k++) {
            /* lower hull: drop the last vertex while it lies strictly above the segment */
            while (h >= 2) {
                int a = hull[h - 2], b = hull[h - 1];
                double cross = (m->cost[b] - m->cost[a]) * (m->loss[k] - m->loss[a]) -
                               (m->loss[b] - m->loss[a]) * (m->cost[k] - m->cost[a]);
                if (cross < 0) h--; /* b above chord a-k */
                else break;
            }
            hull[h++] = k;
        }
        for (int t = 1; t < h; t++) {
            solv_inc *e = &v[c++];
            e->item = i;
            e->from = hull[t - 1];
            e->to = hull[t];
            e->dc = m->cost[e->to] - m->cost[e->from];
            e->dl = m->loss[e->to] - m->loss[e->from];
            e->slope = e->dl / e->dc;
        }
    }
    free(hull);
    qsort(v, c, sizeof *v, inc_cmp);
    *incs = v;
    *n_incs = c;
    return MPQ_OK;
}

void solv_mck_greedy(const solv_mck *m, const solv_inc *incs, size_t n_incs, double bs, int *pos,
                     double *lambda, double *lp_bound) {
    double used = 0, loss = 0;
    for (int i = 0; i < m->n_items; i++) {
        pos[i] = m->start[i];
        loss += m->loss[m->start[i]];
    }
    size_t t = 0;
    for (; t < n_incs; t++) {
        if (used + incs[t].dc > bs) break;
        used += incs[t].dc;
        loss += incs[t].dl;
        pos[incs[t].item] = incs[t].to;
    }
    if (t == n_incs) {
        *lambda = 0;
        *lp_bound = loss;
        return;
    }
    *lambda = -incs[t].slope;
    *lp_bound = loss + (bs - used) * incs[t].slope;
    /* fill: later increments that still fit and continue their item's hull walk */
    for (size_t u = t + 1; u < n_incs; u++) {
        const solv_inc *e = &incs[u];
        if (pos[e->item] == e->from && used + e->dc <= bs) {
            used += e->dc;
            pos[e->item] = e->to;
        }
    }
}
