/*
 * solvers_internal.h - private types and helpers shared by the files in solvers/:
 * the problem struct, effective (smoothed) losses, solution filling, infeasibility
 * messages, and the single-resource multiple-choice knapsack view (per-item options with
 * dominated ones removed, costs shifted by the item's cheapest option) with its convex
 * hull increments (Sinha & Zoltners 1979, the LP relaxation of the MCKP).
 */
#ifndef MPQ_SOLVERS_INTERNAL_H
#define MPQ_SOLVERS_INTERNAL_H

#include "mpq/mpq_solvers.h"

#define SOLV_NAME_MAX 64

struct mpq_problem {
    int n_items, n_opt_max, n_res;
    int *n_opt;               /* [n_items] */
    double *loss;             /* [n_items * n_opt_max], NaN = unset */
    double *cost;             /* [n_res * n_items * n_opt_max], NaN = unset */
    double *budget;           /* [n_res], +inf = none */
    unsigned char *mask;      /* [n_items * n_opt_max] 1 = allowed */
    int *pin;                 /* [n_items] -1 = none */
    char (*item_name)[SOLV_NAME_MAX];
    char (*opt_name)[SOLV_NAME_MAX];
    char (*res_name)[SOLV_NAME_MAX];
};

static inline size_t solv_lo(const mpq_problem *p, int i, int o) {
    return (size_t)i * (size_t)p->n_opt_max + (size_t)o;
}
static inline size_t solv_co(const mpq_problem *p, int r, int i, int o) {
    return ((size_t)r * (size_t)p->n_items + (size_t)i) * (size_t)p->n_opt_max + (size_t)o;
}

/* Validates p and returns (malloc'd, caller frees) the losses to optimize: smoothed when
 * smooth, else a copy; NaN where not allowed. */
mpq_status solv_effective_losses(const mpq_problem *p, bool smooth, double **out, mpq_err *err);

/* New solution with arrays sized for p (choice all -1). */
mpq_status solv_solution_new(const mpq_problem *p, const char *solver, mpq_solution **out, mpq_err *err);
/* Recomputes total_cost, total_loss (from eff) and total_loss_raw from s->choice, item order. */
void solv_solution_totals(const mpq_problem *p, const double *eff, mpq_solution *s);
/* True when choice meets every budget (sums in item order, compared exactly). */
bool solv_choice_feasible(const mpq_problem *p, const int *choice);
/* Writes the infeasibility message naming the tightest budget; returns MPQ_ERR_INFEASIBLE. */
mpq_status solv_infeasible(const mpq_problem *p, mpq_err *err);

/* Single-resource view: item i's useful options are k = start[i] .. start[i+1]-1, sorted by
 * increasing cost with strictly decreasing loss (options dominated inside the item removed;
 * equal (cost, loss) keeps the lowest option index). cost[k] is shifted by the item's
 * cheapest allowed cost item_base[i]; base = sum of item_base in item order. */
typedef struct solv_mck {
    int n_items;
    int *start;       /* [n_items + 1] */
    int *opt;         /* [N] option index */
    double *cost;     /* [N] shifted cost >= 0 */
    double *loss;     /* [N] */
    double *item_base;/* [n_items] */
    double base;
    double max_total; /* sum over items of the largest shifted cost */
} solv_mck;

mpq_status solv_mck_build(const mpq_problem *p, const double *eff, int r, solv_mck *m, mpq_err *err);
/* The same restricted to the options with mask[i * n_opt_max + o] != 0 (mask NULL = all). */
mpq_status solv_mck_build_mask(const mpq_problem *p, const double *eff, int r, const unsigned char *mask, solv_mck *m,
                               mpq_err *err);
void solv_mck_free(solv_mck *m);

/* A hull increment of item `item`: move from view entry `from` to view entry `to`. */
typedef struct solv_inc {
    int item, from, to;
    double dc, dl, slope;  /* dc > 0, dl < 0, slope = dl / dc */
} solv_inc;

/* Per-item lower convex hulls (collinear points kept) and all increments sorted by slope
 * ascending (most loss saved per cost first; ties by item, then position). *incs malloc'd. */
mpq_status solv_mck_increments(const solv_mck *m, solv_inc **incs, size_t *n_incs, mpq_err *err);

/* Greedy over sorted increments for shifted budget bs >= 0: pos[i] (view entry per item)
 * gets the integer greedy solution (prefix until the first increment that does not fit,
 * then later increments that still fit, in order); *lambda the multiplier (-slope of the
 * first increment that did not fit, 0 if all fit); *lp_bound the LP relaxation value
 * (sum of losses of the prefix + fractional part of the breaking increment). */
void solv_mck_greedy(const solv_mck *m, const solv_inc *incs, size_t n_incs, double bs, int *pos,
                     double *lambda, double *lp_bound);

/* Exact min-loss assignment of the view with total shifted cost <= bs (bs >= 0), by the
 * bounded Pareto DP described in mpq_solvers.h; pos[i] = view entry per item. */
mpq_status solv_mck_exact(const solv_mck *m, double bs, int *pos, mpq_err *err);

/* ------------------------------------------------------------------ ILP ---- */

/* What mpq_solve_ilp did (for tests and the benchmark). */
typedef struct solv_ilp_info {
    int n_cols_full;    /* binaries of the plain model (allowed options) */
    int n_cols;         /* binaries given to glp_intopt (after reduced-cost fixing) */
    int n_items_free;   /* items left with more than one option */
    double lagr_bound;  /* Lagrangian bound L(lambda) used for fixing, rounded down (-inf if none) */
    double incumbent;   /* loss of the heuristic incumbent (+inf if none) */
    double fix_seconds; /* time of the fixing step (incl. the full LP for several budgets) */
    double glpk_seconds;/* time in glp_simplex + glp_intopt on the model solved */
    int tight_res;      /* resource whose budget was tightened (-1: none) ... */
    double tight_budget;/* ... to this value, met by every assignment of kept options within budget */
    int rounds;         /* fixing rounds run (fix, tighten the budget, re-solve the LP, fix again) */
} solv_ilp_info;

/* LP-based reduced-cost fixing, and for one integral budget rounds of budget tightening and
 * fixing again (see ilp_glpk.c for the arguments): keep[i * n_opt_max + o]
 * (caller buffer) = 1 for allowed options that may belong to an optimal assignment, 0 for
 * the rest; inc_choice[n_items] (caller buffer) gets the incumbent when info->incumbent is
 * finite (else keep is just the allowed mask). eff: from solv_effective_losses. */
mpq_status solv_ilp_fix(const mpq_problem *p, const mpq_solve_opts *opts, const double *eff, unsigned char *keep,
                        int *inc_choice, solv_ilp_info *info, mpq_err *err);
/* mpq_solve_ilp with fixing switchable (fixing = false: the plain HAWQ-V3 model) and its
 * statistics (info may be NULL). Same contract as mpq_solve_ilp. */
mpq_status solv_ilp_solve(const mpq_problem *p, const mpq_solve_opts *opts, bool fixing, mpq_solution **out,
                          solv_ilp_info *info, mpq_err *err);

#endif
