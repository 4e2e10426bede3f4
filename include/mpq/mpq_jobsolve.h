/*
 * mpq_jobsolve.h - solving a stored job: build the allocation problem (mpq_solvers.h) from
 * the metrics a job stored in the results database, solve it under budgets, store the
 * solution (with an mpq config and its provenance), compute and store the exact Pareto
 * frontier, and close the loop by evaluating stored solutions (and uniform baselines)
 * with the reference executor against the full-precision model.
 *
 * The problem (HAWQ-V3 / MixDQ style multiple-choice knapsack):
 *  - items: the job's linear layers (KV-cache rows of kind "kv_cache" are skipped), merged
 *    into groups that must share a candidate: ties "qkv" (q/k/v of a block), "gate_up"
 *    (gate/up of a block), and user groups (comma-separated layer names or globs);
 *  - options: the job's candidates (+ "f16" with include_f16);
 *  - loss of (group, option): sum over the group's layers of a metric expression over stored
 *    per-(layer, candidate) metrics: "kl" (default), "dloss", "act_err", "weight_sse",
 *    "hawq_omega", ... or a weighted sum such as "kl+0.5*act_err" (terms "[w*]name" joined
 *    by '+'; w a finite number); a term may also be "[w*]name*name", the product of a
 *    per-layer metric (stored with candidate "", e.g. noise_a) and a per-candidate one (e.g.
 *    weight_rel), in either order: Q-Palette's sum_l a_l * ||Q(W_l)-W_l||^2/||W_l||^2 is
 *    "noise_a*weight_rel". A product whose factor has no rows in the job, or whose factors
 *    are both per-candidate or both per-layer, is MPQ_ERR_INVALID naming the expression. A
 *    missing metric of an allowed option is an error naming the
 *    layer and candidate, or (allow_missing) removes that option for that group;
 *  - costs (resource 0 is always "bits"):
 *      bits    exact stored bits of the layer, rows x row bits (mpq_candidate_bits x cols,
 *              an integer: payload plus fp16 scale/zero overhead), integers;
 *      bytes   mpq_candidate_bytes (integers);
 *      bops    MACs per token (= n_params) x element bits x activation bits (integers);
 *      latency a user table, JSON {"int4g32": {"attn_q": 12.5, "blk.0.ffn_down": 30, "*": 10}}:
 *              per candidate, the layer's name, else its kind, else "*" (microseconds);
 *  - budgets "avg-bits=3.5" (bits <= floor(3.5 x total linear params), computed exactly from
 *    the decimal text), "bits=N", "bytes=N", "bops=N", "latency=X"; several at once;
 *  - pins "blk.0.attn_v=int8c" and allowed sets "blk.*.ffn_down=int4g32,int8c" (globs, fnmatch);
 *  - monotone smoothing of losses (mpq_solvers.h) on by default, recorded.
 *
 * Solvers: "dp" (exact, one integral budget), "ilp" (GLPK; any budgets), "auto" (the one with
 * the lower estimated time, mpq_solve_estimate_cost, when dp applies, else ilp; the comparison
 * is recorded as "solver_choice" in the config's provenance). The stored solution row has
 * objective = optimized (smoothed) predicted loss, bound = LP relaxation bound, gap = the
 * solver's proven relative optimality gap (0 when optimal). Its config_json is an mpq config
 * (mpq_config.h) with every layer listed plus a "mpq_solution" provenance object: job,
 * solution, solver, engine, metric, ties, smooth, budgets (as given and resolved),
 * predicted_loss (smoothed and raw), lp_bound, gap, avg_bits, total_bits, weight_sse of the
 * choice, waterfill_bound_sse and assignments {layer: candidate}.
 *
 * Water-filling bound (Q-Palette): from stored weight_sse, per layer
 *     c_l = mean over candidates c of  sse_l(c) / n_l * 2^(2 b_c)
 * (b_c = bits per weight of c on that layer, overhead included), i.e. the Gaussian
 * distortion-rate model D_l(R) = c_l 2^(-2R) fitted to each measured point and averaged.
 * mpq_bound_waterfill then gives the least total sse any allocation of the same bits budget
 * could reach in that model (NaN when there is no bits/bytes budget or no weight_sse).
 *
 * Naming: mpq_jobsolve_* works on a stored job (mpq_job.h) and needs no model file except to
 * evaluate; the generic solvers it calls (mpq_solve_ilp, mpq_solve_dp, mpq_frontier_*) are
 * in mpq_solvers.h.
 *
 *     mpq_job *job = NULL; mpq_jobsolve_result *r = NULL; mpq_err err = {0};
 *     if (mpq_job_open(db, "stories260K-demo", &job, &err) != MPQ_OK) ...
 *     mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
 *     mpq_budget b; mpq_budget_parse("avg-bits=3.5", &b, &err);
 *     o.budgets = &b; o.n_budgets = 1; o.ties = MPQ_TIES_QKV;
 *     mpq_status st = mpq_jobsolve_run(job, &o, &r, &err);  // MPQ_ERR_INFEASIBLE names the budget
 *     ... r->objective, r->choice[layer] ...
 *     mpq_jobsolve_eval ev; mpq_jobsolve_evaluate_solution(job, r->solution_id, &ev, &err);
 *     mpq_jobsolve_result_free(r); mpq_job_close(job);
 */
#ifndef MPQ_JOBSOLVE_H
#define MPQ_JOBSOLVE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_solvers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- budgets, ties, resources ------------------------------------------------------------ */

typedef enum mpq_resource_kind {
    MPQ_RESOURCE_BITS = 0,
    MPQ_RESOURCE_BYTES,
    MPQ_RESOURCE_BOPS,
    MPQ_RESOURCE_LATENCY
} mpq_resource_kind;
#define MPQ_N_RESOURCE_KINDS 4

/* "bits", "bytes", "bops", "latency" (static); "?" otherwise. */
const char *mpq_resource_kind_name(mpq_resource_kind k);
/* By name; MPQ_ERR_INVALID naming the string. */
mpq_status mpq_resource_kind_parse(const char *s, mpq_resource_kind *out, mpq_err *err);

typedef enum mpq_budget_kind {
    MPQ_BUDGET_AVG_BITS = 0, /* bits per quantizable weight (resource bits) */
    MPQ_BUDGET_BITS,
    MPQ_BUDGET_BYTES,
    MPQ_BUDGET_BOPS,
    MPQ_BUDGET_LATENCY
} mpq_budget_kind;

typedef struct mpq_budget {
    mpq_budget_kind kind;
    double value;         /* as written */
    int64_t num, den;     /* value = num / den exactly (den a power of 10 <= 10^6); integral kinds */
    char text[64];        /* "avg-bits=3.5" as given (canonical spelling of the kind) */
} mpq_budget;

/* Parses "KIND=VALUE", KIND one of avg-bits, bits, bytes, bops, latency; avg-bits a positive
 * decimal of at most 64 with at most 6 fractional digits, bits/bytes/bops positive integers
 * below 2^53 (exactly representable costs), latency a positive finite number. Every value is
 * range-checked before any arithmetic. MPQ_ERR_INVALID naming the text. */
mpq_status mpq_budget_parse(const char *text, mpq_budget *out, mpq_err *err);

#define MPQ_TIES_QKV 0x1u
#define MPQ_TIES_GATE_UP 0x2u
/* "none" | "qkv" | "gate_up" | "qkv,gate_up" (any order) -> flags; MPQ_ERR_INVALID. */
mpq_status mpq_ties_parse(const char *text, unsigned *out, mpq_err *err);

/* ---- problem ----------------------------------------------------------------------------- */

typedef struct mpq_jobsolve_opts {
    const char *metric;          /* loss expression (default "kl") */
    unsigned ties;               /* MPQ_TIES_* (default 0) */
    const char *const *groups;   /* user groups: each "name_or_glob,name_or_glob,..." */
    int n_groups;
    const char *const *pins;     /* "glob=candidate" */
    int n_pins;
    const char *const *allows;   /* "glob=cand,cand" */
    int n_allows;
    bool include_f16;            /* add option "f16" (default false) */
    bool allow_missing;          /* disallow options with missing metrics instead of failing */
    bool smooth;                 /* monotone smoothing (default true) */
    int act_bits;                /* BOPs activation bits (default 16) */
    const char *latency_json;    /* latency table text, NULL = none */
    const mpq_budget *budgets;   /* borrowed */
    int n_budgets;
    const char *solver;          /* "auto" (default) | "ilp" | "dp" */
    double time_limit_s;         /* ILP time limit (0 = none) */
    const char *name;            /* solution name; NULL = "<metric>@<budgets>" */
    mpq_resource_kind frontier_resource; /* pareto: resource of the frontier (default bits) */
    bool pairs;                  /* solve: add the job's stored pair interaction terms
                                    (mpq_pairs.h; metric "kl" only, GLPK ILP with pair terms,
                                    mpq_solve_ilp_pairs; default name "kl+pairs@<budgets>") */
    bool pairs_standard_form;    /* with pairs: the three-row linearisation (default: aggregated) */
} mpq_jobsolve_opts;

mpq_jobsolve_opts mpq_jobsolve_opts_default(void);

/* A problem built from a job: the solver problem plus the mapping back to layers. */
typedef struct mpq_jobsolve_problem {
    mpq_problem *problem;        /* owned; items = groups; resource 0 = bits */
    int n_layers;                /* the job's linear layers, model order */
    mpq_db_layer *layers;        /* [n_layers] (copies) */
    int *group_of;               /* [n_layers] item index of each layer */
    int n_options;
    char (*options)[MPQ_DB_SHORT_MAX]; /* [n_options] candidate names */
    double *layer_loss;          /* [n_layers * n_options] raw loss per layer (NaN: missing) */
    int64_t *layer_bits;         /* [n_layers * n_options] exact stored bits */
    int64_t total_params;        /* sum of the linear layers' n_params */
    int n_resources;
    mpq_resource_kind resource[MPQ_N_RESOURCE_KINDS]; /* kind of each problem resource */
    int n_finite_budgets;
    char metric[256];            /* the expression as given */
} mpq_jobsolve_problem;

/* Builds the problem of opts (budgets included). *out owned by the caller. MPQ_ERR_INVALID
 * (bad expression, glob matching no layer, unknown candidate, conflicting pins, missing
 * metric naming layer and candidate, duplicate budget kinds, latency table problems). */
mpq_status mpq_jobsolve_problem_build(mpq_job *job, const mpq_jobsolve_opts *opts, mpq_jobsolve_problem **out,
                                   mpq_err *err);
void mpq_jobsolve_problem_free(mpq_jobsolve_problem *p); /* accepts NULL */

/* ---- solve and store --------------------------------------------------------------------- */

typedef struct mpq_jobsolve_result {
    int64_t solution_id;
    char name[MPQ_DB_NAME_MAX];
    char solver[MPQ_DB_SHORT_MAX];   /* "dp" or "ilp" (stored) */
    char engine[32];                 /* mpq_solution.solver, e.g. "dp-array", "glpk-ilp" */
    char solver_reason[256];         /* why "auto" picked the solver (estimated times), else "" */
    mpq_solve_status status;
    double objective;                /* optimized (smoothed) predicted loss */
    double objective_raw;            /* unsmoothed predicted loss of the same choice */
    double lp_bound, gap, seconds;
    double waterfill_sse;            /* water-filling lower bound on total weight sse (NaN n/a) */
    double weight_sse;               /* total stored weight_sse of the choice (NaN n/a) */
    int n_layers;
    int *choice;                     /* [n_layers] option index per layer */
    double *layer_loss;              /* [n_layers] raw predicted loss per layer */
    int64_t *layer_bits;             /* [n_layers] */
    int64_t *layer_params;           /* [n_layers] */
    int64_t total_bits, total_params;
    double avg_bits;                 /* total_bits / total_params */
    double cost[MPQ_N_RESOURCE_KINDS]; /* total per resource kind (NaN if not in the problem) */
    char (*options)[MPQ_DB_SHORT_MAX]; /* [n_options] names (copy) */
    int n_options;
    char *config_json;               /* stored config (malloc'd) */
    int n_pair_terms;                /* opts.pairs: pair terms in the ILP (0 otherwise) */
    double pair_loss;                /* opts.pairs: sum of the active pair terms (included in
                                        objective and objective_raw; 0 otherwise) */
} mpq_jobsolve_result;
void mpq_jobsolve_result_free(mpq_jobsolve_result *r); /* accepts NULL */

/* Builds, solves and stores a solution (mpq_db_solution_insert, replacing one of the same
 * name). Returns MPQ_OK with *out, or MPQ_ERR_INFEASIBLE (an "infeasible" solution row is
 * stored, without assignments; the message names the tightest budget), MPQ_ERR_INVALID (no
 * budget, dp with several budgets...), MPQ_ERR_UNSUPPORTED, MPQ_ERR_SOLVER, DB errors. */
mpq_status mpq_jobsolve_run(mpq_job *job, const mpq_jobsolve_opts *opts, mpq_jobsolve_result **out,
                         mpq_err *err);

/* ---- Pareto frontier --------------------------------------------------------------------- */

typedef struct mpq_jobsolve_pareto_result {
    mpq_frontier *exact;      /* owned */
    mpq_frontier *hull;       /* owned */
    double *hull_gap;         /* [hull->n_points] */
    double *cost_display;     /* [exact->n_points] avg bits (bits resource) or raw cost */
    size_t knee;              /* index into exact */
    int64_t frontier_id;
    int n_solutions;          /* stored: knee (+ evenly spread points) */
    int64_t solution_ids[64];
    size_t solution_points[64]; /* exact index of each stored solution */
    double seconds;
} mpq_jobsolve_pareto_result;
void mpq_jobsolve_pareto_result_free(mpq_jobsolve_pareto_result *r); /* accepts NULL */

/* Exact (Nemhauser-Ullmann) frontier and convex hull of opts' problem (budgets ignored) in
 * resource opts->frontier_resource, stored with mpq_db_frontier_insert (resource "avg_bits"
 * for bits, else the resource name); the knee (mpq_frontier_knee) is stored as solution
 * "<metric>@knee" and, with n_spread > 0 (<= 32), n_spread points evenly spread in cost as
 * "<metric>@pareto-<i>". Frontier points carry the ids of the stored solutions. */
mpq_status mpq_jobsolve_pareto(mpq_job *job, const mpq_jobsolve_opts *opts, int n_spread,
                            mpq_jobsolve_pareto_result **out, mpq_err *err);

/* ---- evaluation -------------------------------------------------------------------------- */

typedef struct mpq_jobsolve_eval {
    int64_t evaluation_id;
    double ppl, kl, kl_stderr, top1, ce;
    int64_t n_tokens;
    double avg_bits;
    bool reused;      /* an existing evaluation was returned (uniform baselines) */
} mpq_jobsolve_eval;

/* Evaluates a config (JSON text) on the job's evaluation data (spec "evaluation", else the
 * calibration windows) against the FP model (reference built once per job handle), storing an
 * evaluation row with solution_id (0 = none). */
mpq_status mpq_jobsolve_evaluate_config(mpq_job *job, const char *config_json, int64_t solution_id,
                                     mpq_jobsolve_eval *out, mpq_err *err);
/* Evaluates stored solution solution_id (MPQ_ERR_INVALID if it has no config, e.g. infeasible). */
mpq_status mpq_jobsolve_evaluate_solution(mpq_job *job, int64_t solution_id, mpq_jobsolve_eval *out,
                                       mpq_err *err);
/* Uniform baseline: every linear layer at `candidate`; config JSON carries
 * "name": "uniform:<candidate>". Evaluated once per job: an existing evaluation of that name
 * is returned (out->reused) unless force. */
mpq_status mpq_jobsolve_evaluate_uniform(mpq_job *job, const char *candidate, bool force, mpq_jobsolve_eval *out,
                                      mpq_err *err);

/* Predicted vs measured over the job's evaluations (newest per solution / baseline name). */
typedef struct mpq_jobsolve_compare_row {
    char label[MPQ_DB_NAME_MAX]; /* solution name or "uniform:int4g32" */
    int64_t solution_id;         /* 0 for baselines */
    double avg_bits;
    double predicted;            /* sum over layers of the metric expression (NaN if missing) */
    double kl, kl_stderr, ppl, top1;
} mpq_jobsolve_compare_row;

/* Rows (malloc'd, free()) and Spearman rank correlation (average ranks for ties) between
 * predicted and measured KL over rows with both finite (NaN with fewer than 3). */
mpq_status mpq_jobsolve_compare(mpq_job *job, const char *metric, mpq_jobsolve_compare_row **rows, int *n_rows,
                             double *spearman, int *n_used, mpq_err *err);

/* Random configurations, to check a loss model against measurements on configurations no
 * solver chose. Draws n assignments (1..MPQ_JOBSOLVE_RANDOM_MAX): one xoshiro256** stream
 * (mpq_rng.h) seeded with `seed`, consumed configuration by configuration and, within one, layer
 * by layer in the stored layer order, each layer's candidate = the (d+1)-th of the spec's
 * candidates available on the layer, d = mpq_rng_below(r, m), m their count (all n_candidates
 * unless a SAQ rate is not achievable on the layer's shape). Configuration i (0-based) is stored as solution "random-<seed>-<i>" (solver
 * "random", status "feasible", objective = the unsmoothed sum of `metric` over layers, bound and
 * gap NaN; an existing solution of that name is replaced) and evaluated as
 * mpq_jobsolve_evaluate_solution does - unless a solution of that name already has exactly these
 * assignments and an evaluation, which is then kept (re-running with another --metric measures
 * nothing again). solution_ids[0..n) get the ids; *n_reused (may be NULL) counts the kept ones.
 * Errors: MPQ_ERR_INVALID (n out of range, bad or missing metric: as mpq_jobsolve_problem_build),
 * evaluation errors, MPQ_ERR_DB. */
#define MPQ_JOBSOLVE_RANDOM_MAX 1000
mpq_status mpq_jobsolve_random(mpq_job *job, const char *metric, int n, uint64_t seed, int64_t *solution_ids,
                               int *n_reused, mpq_err *err);

/* Spearman rank correlation of x and y (n >= 2; NaN if a side is constant). */
double mpq_jobsolve_spearman(const double *x, const double *y, int n);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_JOBSOLVE_H */
