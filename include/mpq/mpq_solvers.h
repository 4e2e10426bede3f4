/*
 * mpq_solvers.h - allocation problems and their solvers: ILP (GLPK), exact DP for one
 * budget, exact and convex-hull Pareto frontiers, knee point, SAQ-style segment DP, and
 * bounds (LP relaxation, Gaussian reverse water-filling).
 *
 * The problem (multiple-choice knapsack with several resources, as in HAWQ-V3 / MixDQ):
 * items i = 0..n_items-1 (layers, or groups of layers that must share a format), each with
 * options o = 0..n_options(i)-1. Option o of item i has a loss L[i][o] and costs
 * C[r][i][o] for resources r = 0..n_resources-1. Choose exactly one allowed option per item
 * so that sum_i C[r][i][o_i] <= budget[r] for every r, minimizing sum_i L[i][o_i].
 *
 * Numbers: losses and costs are doubles. A resource is "integral" when every one of its
 * costs is an integer of magnitude <= 2^53 (bits, bytes): then every partial sum is exact
 * and all solvers compare costs with budgets EXACTLY. Other resources (BOPs, latency) are
 * compared in double arithmetic; the solvers sum costs item by item in item order.
 * mpq_problem_resource_integral() tells which case applies. mpq_solve_dp() requires it.
 *
 * Monotone smoothing (mpq_solve_opts.smooth, on by default, recorded in each result):
 * measured losses are noisy, and a dearer option should never score worse than a cheaper
 * one. For each item, with costs taken in resource 0 and only allowed options considered:
 *     L'(a) = min( L(a), min{ L(b) : b allowed, C0(b) < C0(a) } )
 * i.e. a running minimum of the loss over options sorted by increasing resource-0 cost;
 * options of EQUAL cost keep their own losses (a tie in cost says nothing about order).
 * The solvers optimize L'; results also report the raw loss sum of the chosen options.
 *
 * Example:
 *     mpq_problem *p = NULL; mpq_solution *s = NULL; mpq_err err = {0};
 *     if (mpq_problem_create(n_layers, 8, 1, &p, &err) != MPQ_OK) goto fail;
 *     for (i...) for (o...) { mpq_problem_set_loss(p, i, o, omega[i][o], &err);
 *                             mpq_problem_set_cost(p, 0, i, o, bits[i][o], &err); }
 *     mpq_problem_set_budget(p, 0, 3.5 * n_params, &err);
 *     mpq_solve_opts opts = mpq_solve_opts_default();
 *     mpq_status st = mpq_solve_ilp(p, &opts, &s, &err);   // or mpq_solve_dp
 *     if (st == MPQ_ERR_INFEASIBLE) puts(err.msg);          // names the tightest budget
 *     else if (st == MPQ_OK) use(s->choice, s->total_loss, s->gap);
 *     mpq_solution_free(s); mpq_problem_free(p);
 *
 * Errors: MPQ_ERR_INVALID (bad index, non-finite number, item with no allowed option, unset
 * loss/cost of an allowed option), MPQ_ERR_INFEASIBLE (no assignment meets the budgets: the
 * message names the tightest budget), MPQ_ERR_UNSUPPORTED (solver does not apply, e.g. DP
 * with non-integral costs), MPQ_ERR_SOLVER (GLPK failure, or time limit with no solution),
 * MPQ_ERR_NOMEM. On any error no result object is returned (*out is NULL).
 */
#ifndef MPQ_SOLVERS_H
#define MPQ_SOLVERS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- problem ---- */

typedef struct mpq_problem mpq_problem; /* opaque */

/* Creates an empty problem: every item has n_options_max options (change with
 * mpq_problem_set_n_options), all allowed, none pinned, every loss and cost unset (NaN;
 * an allowed option must have them set before solving), every budget +infinity.
 * Limits: n_items >= 1, 1 <= n_options_max <= 255, 1 <= n_resources <= 64.
 * *out is owned by the caller (mpq_problem_free). MPQ_ERR_INVALID / MPQ_ERR_NOMEM. */
mpq_status mpq_problem_create(int n_items, int n_options_max, int n_resources, mpq_problem **out,
                              mpq_err *err);
/* Frees p (NULL is fine). */
void mpq_problem_free(mpq_problem *p);

/* Setters: MPQ_ERR_INVALID on an index out of range or a non-finite value (budgets may be
 * +INFINITY = no limit, never NaN or -inf). */
mpq_status mpq_problem_set_n_options(mpq_problem *p, int item, int n_options, mpq_err *err);
mpq_status mpq_problem_set_loss(mpq_problem *p, int item, int option, double loss, mpq_err *err);
mpq_status mpq_problem_set_cost(mpq_problem *p, int resource, int item, int option, double cost,
                                mpq_err *err);
mpq_status mpq_problem_set_budget(mpq_problem *p, int resource, double budget, mpq_err *err);
/* Per-item allowed set (mask); default all allowed. */
mpq_status mpq_problem_set_allowed(mpq_problem *p, int item, int option, bool allowed, mpq_err *err);
/* Fixes item to option (option -1 removes the pin). A pinned option must also be allowed. */
mpq_status mpq_problem_pin(mpq_problem *p, int item, int option, mpq_err *err);
/* Names used in messages (copied; at most 63 bytes kept). Option names are per option
 * index (options are usually one shared candidate list). Defaults "item 3", "option 2",
 * "resource 0". */
mpq_status mpq_problem_set_item_name(mpq_problem *p, int item, const char *name, mpq_err *err);
mpq_status mpq_problem_set_option_name(mpq_problem *p, int option, const char *name, mpq_err *err);
mpq_status mpq_problem_set_resource_name(mpq_problem *p, int resource, const char *name, mpq_err *err);

/* Getters (no checks beyond range: out-of-range returns 0 / NaN / NULL). Names are borrowed,
 * valid until the name is set again or p is freed. */
int mpq_problem_n_items(const mpq_problem *p);
int mpq_problem_n_options(const mpq_problem *p, int item);
int mpq_problem_n_resources(const mpq_problem *p);
double mpq_problem_loss(const mpq_problem *p, int item, int option);
double mpq_problem_cost(const mpq_problem *p, int resource, int item, int option);
double mpq_problem_budget(const mpq_problem *p, int resource);
/* Allowed and compatible with the pin. */
bool mpq_problem_allowed(const mpq_problem *p, int item, int option);
const char *mpq_problem_item_name(const mpq_problem *p, int item);
const char *mpq_problem_option_name(const mpq_problem *p, int option);
const char *mpq_problem_resource_name(const mpq_problem *p, int resource);
/* True when all costs of allowed options of the resource are integers with |c| <= 2^53. */
bool mpq_problem_resource_integral(const mpq_problem *p, int resource);

/* Checks that the problem is complete: every item has an allowed option, every allowed
 * option has finite loss and costs. MPQ_ERR_INVALID naming the item/option otherwise. */
mpq_status mpq_problem_validate(const mpq_problem *p, mpq_err *err);

/* Fills loss_out[i * n_options_max + o] (caller buffer of n_items * n_options_max doubles)
 * with the monotone-smoothed losses defined above (NaN for options not allowed). */
mpq_status mpq_problem_smoothed_losses(const mpq_problem *p, double *loss_out, mpq_err *err);

/* Quick infeasibility test: for each resource, the minimum cost reachable by that resource
 * alone (sum over items of the cheapest allowed option). If some budget is below it,
 * returns MPQ_ERR_INFEASIBLE naming the tightest such budget (largest relative excess) and
 * sets *resource_out to it (if not NULL); else MPQ_OK and *resource_out = -1. */
mpq_status mpq_problem_check_budgets(const mpq_problem *p, int *resource_out, mpq_err *err);

/* --------------------------------------------------------------- solutions ---- */

typedef enum mpq_solve_status {
    MPQ_SOLVE_OPTIMAL = 0, /* proven optimal (gap 0 up to the solver's tolerance) */
    MPQ_SOLVE_FEASIBLE,    /* a feasible assignment with a proven gap > 0 (time limit / mip_gap) */
    MPQ_SOLVE_INFEASIBLE   /* used in messages and by callers that store outcomes */
} mpq_solve_status;

typedef struct mpq_solution {
    int n_items;
    int n_resources;
    int *choice;            /* [n_items] chosen option per item */
    double *total_cost;     /* [n_resources] sum of costs of the choice, item order */
    double total_loss;      /* sum of the losses optimized (smoothed if smoothed) */
    double total_loss_raw;  /* sum of the unsmoothed losses of the same choice */
    double bound;           /* proven lower bound on the optimal (optimized) loss */
    double gap;             /* |total_loss - bound| / (|total_loss| + DBL_EPSILON) */
    mpq_solve_status status;
    bool smoothed;          /* monotone smoothing applied */
    char solver[32];        /* "glpk-ilp", "dp-array", "dp-pareto", "dp-trivial", "brute" */
    double seconds;         /* wall time of the solve */
} mpq_solution;

/* Frees s and its arrays (NULL is fine). */
void mpq_solution_free(mpq_solution *s);

typedef struct mpq_solve_opts {
    bool smooth;            /* monotone smoothing (default true) */
    double time_limit_s;    /* ILP wall-time limit, <= 0 = none (default 0) */
    double mip_gap;         /* ILP relative gap at which to stop (default 0 = prove optimal) */
    bool presolve;          /* GLPK MIP presolver (default true; off when warm_start is used) */
    bool warm_start;        /* ILP: give GLPK the convex-hull greedy solution of the first budget
                               as a heuristic incumbent (when it meets every budget); the simplex
                               always starts from the greedy's LP basis. Default true. */
    int dp_resource;        /* DP / frontier resource (default 0); other budgets must be +inf for DP */
    size_t dp_max_bytes;    /* DP: use the dense table (n_items x (B/g+1) bytes) only when it fits
                               in this many bytes, else the bounded Pareto DP (default 256 MiB) */
    bool pair_standard_form;/* mpq_solve_ilp_pairs: the three-row product linearisation per term
                               instead of the aggregated one (default false) */
} mpq_solve_opts;

/* Defaults as documented above. */
mpq_solve_opts mpq_solve_opts_default(void);

/* ILP (HAWQ-V3 style) with GLPK: one binary per (item, allowed option), one-hot rows,
 * one budget row per finite budget; glp_intopt with the options above. GLPK's terminal
 * output is silenced and its fatal-error hook caught (returned as MPQ_ERR_SOLVER).
 * Before GLPK runs, options are fixed by reduced costs (Lagrangian multipliers from the
 * convex-hull greedy for one budget, LP duals for several): an option whose reduced cost
 * exceeds incumbent - bound cannot be in any optimum and is dropped; with one integral
 * budget the budget is also rounded down to the grid its remaining costs can reach.
 * s->bound is the best of the Lagrangian bound, the LP relaxation value and GLPK's
 * best-node bound (all valid for the original problem); s->gap as defined above; status
 * OPTIMAL if GLPK proved optimality with mip_gap = 0 or the gap is 0. On a time limit the
 * best solution found (at least the greedy incumbent) is returned as FEASIBLE with its gap.
 * Returns MPQ_OK with *out (caller frees), MPQ_ERR_INFEASIBLE (message names the budget),
 * MPQ_ERR_SOLVER (GLPK failure), MPQ_ERR_INVALID. */
mpq_status mpq_solve_ilp(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solution **out,
                         mpq_err *err);

/* Pairwise interaction terms (layer damages that do not add up): term t adds `value` to the
 * loss when item item_a takes option_a and item item_b takes option_b (item_a != item_b).
 * Several terms on the same two (item, option) choices add up. */
typedef struct mpq_pair_term {
    int item_a, option_a;
    int item_b, option_b;
    double value;           /* finite, any sign */
} mpq_pair_term;

/* Sum of the terms active under choice[n_items] (no checks). */
double mpq_pair_terms_value(const mpq_pair_term *terms, int n_terms, const int *choice);

/* The ILP of mpq_solve_ilp plus pair terms, minimizing sum_i L'(i, o_i) + sum of the active
 * terms (L' the smoothed losses when opts->smooth: smoothing applies to the per-item losses
 * only). Terms whose two options are not both allowed are left out. Default (aggregated form):
 * for every pair of items (i, j) with a term, a column y(oa, ob) >= 0 per pair of allowed
 * options (cost = the sum of its terms, 0 if none) with the rows sum_ob y(oa, ob) = x(i, oa)
 * and sum_oa y(oa, ob) = x(j, ob); with opts->pair_standard_form, per term a column y in
 * [0, 1] with the standard product linearisation  y <= x(a, oa),  y <= x(b, ob),
 * y >= x(a, oa) + x(b, ob) - 1. Both give y = x(a, oa) x(b, ob) at every integer point; the
 * aggregated LP relaxation is at least as tight. No reduced-cost fixing or warm start (they
 * need a separable objective): GLPK solves the whole model (glp_simplex, glp_intopt with
 * opts->presolve, mip_gap, time_limit_s). s->total_loss / total_loss_raw include the active
 * terms; s->bound is the LP relaxation (or the loss itself when proven optimal); solver
 * "glpk-ilp-pairs". MPQ_ERR_INVALID (a term out of range, equal items, non-finite value),
 * MPQ_ERR_INFEASIBLE (names the budget), MPQ_ERR_SOLVER, MPQ_ERR_NOMEM. */
mpq_status mpq_solve_ilp_pairs(const mpq_problem *p, const mpq_pair_term *terms, int n_terms,
                               const mpq_solve_opts *opts, mpq_solution **out, mpq_err *err);

/* Exact DP for one budget (resource opts->dp_resource; every other budget must be +inf),
 * integral costs required (MPQ_ERR_UNSUPPORTED otherwise). Two exact engines:
 *  - "dp-array": costs shifted by each item's cheapest option and divided by g = gcd of all
 *    shifted costs and the shifted budget rounded down to a multiple of g; value array of
 *    (B'/g+1) doubles x2 and a choice table of n_items x (B'/g+1) bytes; time
 *    O(n_items x options x B'/g). Used when the table fits in opts->dp_max_bytes.
 *  - "dp-pareto": Nemhauser-Ullmann merge of (cost, loss) lists restricted to the core that
 *    Lagrangian reduced costs cannot exclude (multiplier from the convex-hull/LP solution;
 *    a partial assignment is dropped when its reduced-cost sum exceeds incumbent - LP bound,
 *    which no optimal completion can); back-pointers only for core states. Memory is the
 *    sum of the core list sizes (<= n_core x (B'/g+1) entries, usually tiny).
 * Both return the exact optimum (ties: the lowest cost, then the first found).
 * MPQ_OK / MPQ_ERR_INFEASIBLE / MPQ_ERR_UNSUPPORTED / MPQ_ERR_INVALID / MPQ_ERR_NOMEM. */
mpq_status mpq_solve_dp(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solution **out,
                        mpq_err *err);

/* Estimated wall time of the exact engines for one budget (on opts->dp_resource), and the one
 * "auto" runs: the cheaper estimate (ties: dp). Measured on bench_solvers' problems (one core):
 *   dp-trivial  (the budget admits every item's least-loss option): 0;
 *   dp-array    MPQ_SOLVE_DP_CELL_S x n_items x (B'/g + 1) x mean allowed options per item
 *               (the table's cells times the options tried at each);
 *   dp-pareto   not estimated (its time is set by the core the reduced costs leave, which is
 *               only known after the same fixing the ILP runs): +inf, so auto takes the ILP;
 *   ilp         MPQ_SOLVE_ILP_BASE_S + MPQ_SOLVE_ILP_COL_S x allowed (item, option) pairs
 *               (the convex-hull greedy and reduced-cost fixing are linear in them; GLPK then
 *               sees a core of a few dozen binaries).
 * With several finite budgets or non-integral costs only the ILP applies (dp = +inf).
 * Measured (bench_solvers, 2 cores under load ~9, 1,000 x 8 items, 4 bits/weight): dp-array
 * 15M cells x 8 options 3.7 s (7.5 ns per cell-option; about 4 ns unloaded), ilp 0.012 s;
 * 30 x 8: dp 1.0 ms, ilp 0.8 ms. The constants are rounded; only their ratio matters.
 * reason: one line saying what was compared, for the solution's provenance.
 * MPQ_ERR_INVALID (as mpq_problem_validate), MPQ_ERR_NOMEM. */
#define MPQ_SOLVE_DP_CELL_S 5e-9
#define MPQ_SOLVE_ILP_BASE_S 1e-3
#define MPQ_SOLVE_ILP_COL_S 1e-6

typedef struct mpq_solve_estimate {
    const char *solver;     /* "dp" or "ilp": what auto runs */
    const char *dp_engine;  /* "dp-trivial", "dp-array", "dp-pareto", or NULL when dp does not apply */
    double dp_seconds;      /* estimate (+inf when not estimated or dp does not apply) */
    double ilp_seconds;
    double dp_cells;        /* n_items x (B'/g + 1) for dp-array, else 0 */
    int64_t n_columns;      /* allowed (item, option) pairs */
    char reason[200];
} mpq_solve_estimate;

mpq_status mpq_solve_estimate_cost(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solve_estimate *out,
                                   mpq_err *err);

/* Exhaustive enumeration (reference for tests): MPQ_ERR_UNSUPPORTED when the number of
 * assignments exceeds 10^7. Ties: the lexicographically first assignment. */
mpq_status mpq_solve_brute(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solution **out,
                           mpq_err *err);

/* LP relaxation value (GLPK simplex) of the problem: a lower bound on the optimal loss.
 * MPQ_ERR_INFEASIBLE when even the relaxation is infeasible. */
mpq_status mpq_bound_lp(const mpq_problem *p, const mpq_solve_opts *opts, double *bound, mpq_err *err);

/* ---------------------------------------------------------------- frontier ---- */

/* Frontier of (cost in one resource, loss) ignoring every budget: points by increasing cost
 * with strictly decreasing loss. */
typedef struct mpq_frontier {
    int resource;
    size_t n_points;
    double *cost;   /* [n_points] ascending */
    double *loss;   /* [n_points] strictly descending */
    bool smoothed;
    bool hull;      /* true: convex-hull (Lagrangian) vertices; false: exact frontier */
    double seconds;
    void *priv;     /* solver data for mpq_frontier_assignment; do not touch */
} mpq_frontier;

/* Exact Pareto frontier by Nemhauser-Ullmann merging item by item with dominance pruning
 * (resource opts->dp_resource; costs as doubles, exact when integral). Memory O(frontier);
 * assignments are recovered by re-solving (mpq_frontier_assignment). *out owned by caller. */
mpq_status mpq_frontier_exact(const mpq_problem *p, const mpq_solve_opts *opts, mpq_frontier **out,
                              mpq_err *err);
/* Convex-hull frontier (greedy marginal / Lagrangian): the vertices of the lower convex hull
 * of all assignments, each an integer assignment reached by taking the per-item hull
 * increments in order of decreasing efficiency -dLoss/dCost. Each vertex lies on the exact
 * frontier (its loss equals the LP relaxation at its cost). O(N log N), N = sum of options. */
mpq_status mpq_frontier_hull(const mpq_problem *p, const mpq_solve_opts *opts, mpq_frontier **out,
                             mpq_err *err);
/* Assignment of point k: choice_out[n_items]. For the hull: replay of the increments; for the
 * exact frontier: exact re-solve at budget cost[k] (checked to give loss[k]).
 * p must be the problem the frontier was computed from. */
mpq_status mpq_frontier_assignment(const mpq_problem *p, const mpq_frontier *f, size_t k, int *choice_out,
                                   mpq_err *err);
/* Index of the point with the largest cost <= budget (the best loss within budget), or
 * SIZE_MAX when even the cheapest point costs more. */
size_t mpq_frontier_at_budget(const mpq_frontier *f, double budget);
/* For each hull point k (gap_out[hull->n_points]): the loss given up by using hull point k
 * at budgets between it and the next hull point, i.e.
 *     gap_k = max{ loss_k - exact.loss[j] : cost_k <= exact.cost[j] < cost_{k+1} }  (>= 0),
 * with cost_{n} = +inf for the last point. 0 means the hull is exact on that interval. */
mpq_status mpq_frontier_hull_gaps(const mpq_frontier *hull, const mpq_frontier *exact, double *gap_out,
                                  mpq_err *err);
/* Knee point without tuning: normalize cost and loss to [0,1] by their ranges over the
 * frontier, draw the chord from the cheapest to the dearest point, and return the index of
 * the point farthest BELOW the chord (largest (chord - loss) in normalized units; ties: the
 * cheaper point). Returns 0 when no point lies strictly below the chord (or n_points < 3:
 * the cheapest point), SIZE_MAX for an empty frontier. */
size_t mpq_frontier_knee(const mpq_frontier *f);
/* Frees f (NULL is fine). */
void mpq_frontier_free(mpq_frontier *f);

/* ------------------------------------------------------ SAQ segment DP ---- */

/* SAQ-style bit allocation over dimension segments. Dimensions j = 0..d-1 (variances sorted
 * descending, as PCA gives them) are split into contiguous segments; each segment gets one
 * bit width b from bits[0..n_bits-1] (integers >= 0) and costs len*b + overhead bits
 * (overhead is paid by every segment, e.g. its scale). Total cost <= budget_bits.
 * Distortion of dimension j at b bits: err_table[j*n_bits + k] if err_table != NULL, else
 * the Gaussian model var[j] * 2^(-2 b). Exact DP over (prefix length, bits used):
 * O(d^2 x n_bits x budget) time, O(d x budget) memory. Outputs (caller buffers of d + 1):
 * seg_start[s] for s = 0..n_segments-1 (seg_start[n_segments] = d), seg_bits[s]
 * (the bit width, not its index); *n_segments, *distortion. var may be NULL when err_table is
 * given. MPQ_ERR_INFEASIBLE when even the cheapest split exceeds the budget. */
mpq_status mpq_segment_dp(const double *var, const double *err_table, int d, const int *bits, int n_bits,
                          int64_t overhead, int64_t budget_bits, int *seg_start, int *seg_bits,
                          int *n_segments, double *distortion, mpq_err *err);

/* ----------------------------------------------------------------- bounds ---- */

/* Gaussian reverse water-filling (Q-Palette / Cover & Thomas 10.3.3): layer l has n[l]
 * weights, each with distortion D_l(R) = c[l] * 2^(-2R) at R bits. Minimizing
 * sum_l n[l] D_l(R_l) subject to sum_l n[l] R_l <= budget_bits, R_l >= 0 (real R) gives
 *     R_l = max(0, 1/2 log2(c[l] / theta)),  D = sum_l n[l] min(c[l], theta),
 * theta found by bisection on log2(theta) to relative precision 1e-12. Because real rates
 * relax every quantizer palette, D is a LOWER BOUND on the distortion any allocation can
 * reach under the same budget in this Gaussian model. rate_out[n_layers] may be NULL.
 * MPQ_ERR_INVALID for n[l] <= 0, c[l] < 0, non-finite numbers or budget < 0. */
mpq_status mpq_bound_waterfill(const double *n, const double *c, int n_layers, double budget_bits,
                               double *rate_out, double *distortion, double *theta_out, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_SOLVERS_H */
