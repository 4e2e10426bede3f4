/*
 * mpq_refine.h - interaction-aware closed loop (`mpq refine`): re-measures layer damage in
 * the context of the current solution and re-solves, because per-layer damages measured one
 * layer at a time (mpq_calib_layer, stored "kl") do not add up at low bits.
 *
 * Loop (budgets, ties and smoothing as given; candidates those of the job):
 *   iteration 0   the additive solution: the job's stored single-layer "kl" summed per group
 *                 (mpq_jobsolve), stored and evaluated like every iteration;
 *   iteration k   given the assignment A = A_{k-1} (per item = group of tied layers):
 *                 base     K(A) = KL(P_fp || P_A) of the model quantized as in A, on the job's
 *                          calibration windows (the FP reference of the job);
 *                 units    for each item g and each candidate c adjacent in bits to A(g) (the
 *                          next cheaper and the next dearer allowed option of g, by the item's
 *                          exact stored bits), K(A with g at c). The unit enters the executor
 *                          at g's earliest layer from the stored residuals of the A-quantized
 *                          model (mpq_exec_eval_ref_entry_from) and is scored against the FP
 *                          reference: bitwise the full forward of that model;
 *                 table    per layer l of item g (|g| layers) and option c:
 *                            share_l  = K(A) * a(l, A(l)) / sum_l' a(l', A(l'))   (a = additive;
 *                                       equal shares when that sum is not positive)
 *                            L(l, A(l)) = share_l
 *                            L(l, c)    = share_l + (K(A with g at c) - K(A)) / |g|   measured c
 *                            L(l, c)    = a(l, c) + (share_l - a(l, A(l)))            otherwise
 *                          (unmeasured options: the additive loss shifted by the layer's
 *                          measured offset at A(l)); so the predicted loss of A is K(A)
 *                          exactly, and of a one-item move its measured in-context loss;
 *                 re-solve with that table (same budgets, ties, smoothing; GLPK ILP) over the
 *                 MEASURED options only (A(g) and its two neighbours: on stories260K the
 *                 shifted additive value of a two-step move was far too optimistic and every
 *                 re-solve that could use one picked it and measured worse), with a trust
 *                 region: at most m items change. Line search on m: m = all items, then half
 *                 the previous trial's changes (>= 2); every distinct trial configuration is
 *                 measured on the calibration windows (unit ".../trial.m<changes>");
 *                 exchanges (opts.exchanges > 0): mpq_refine_exchanges over the measured
 *                 moves (sets of 2..opts.exchange_size moves that fit the budgets, best
 *                 predicted first); the first opts.exchanges configurations that are not a
 *                 trial are measured (unit ".../x.<item>.<option>..."); the configuration
 *                 with the lowest measured calibration KL among trials and exchanges (the
 *                 first measured on a tie) becomes iteration k (stored under iteration k's
 *                 table, evaluated, the next context) if it is below K(A).
 *   stop          "converged": nothing to measure (no trial, no exchange); "no-better-step":
 *                 nothing measured beat K(A); "iterations": after max_iterations accepted
 *                 steps. Each stored iteration k >= 1 therefore has a lower calibration KL
 *                 than iteration k-1 (the loop cannot cycle); the measured KL on the
 *                 evaluation windows is reported, not used.
 *
 * Storage. Solutions "refine@<tag>/it<k>", tag = the budgets as given plus ";ties=...",
 * ";nosmooth", ";solver=...", ";reach=R", ";x=N" (exchanges, unless 0), "xK" (exchange size,
 * unless 2), ";tl=...", ";metric=..." when not the defaults (so a resumed run only reuses
 * measurements made under the same settings), (solver "refine", metric "kl",
 * objective = predicted loss under iteration k's table; config provenance "mpq_solution" as
 * `mpq solve` plus "mpq_refine": iteration, budgets, table, n_measured, context_iteration,
 * context_kl, max_changed_groups, step, exchanges, exchange_size, rule), each with an evaluation row
 * (mpq_jobsolve_evaluate_solution, on the job's evaluation windows). Measurements are units of
 * stage "refine" around the context iteration j: keys "<tag>/ctx<j>/base",
 * "<tag>/ctx<j>/<first layer of item>/<candidate>" and "<tag>/ctx<j>/trial.m<n>", each
 * committing one metric row "refine_kl@<tag>#<j>" (layer NULL + candidate "" for the base,
 * "trial.m<n>" / "x.<item>.<option>..." for a trial / an exchange, else the item's first layer + candidate; value, stderr over
 * windows, n windows; provenance with the measured configuration) with its done mark in one
 * transaction. A killed refine resumes from those rows: every number it stores again is the
 * same (same choices, same table; an iteration's solution and evaluation already stored are
 * kept, not redone).
 *
 *     mpq_refine_opts o = mpq_refine_opts_default();
 *     o.budgets = &b; o.n_budgets = 1; o.max_iterations = 5;
 *     mpq_refine_result *r = NULL;
 *     if (mpq_refine_run(job, &o, &r, &err) != MPQ_OK) ...   // MPQ_ERR_INTERRUPTED: resumable
 *     for (int k = 0; k < r->n_iters; k++) r->iters[k].predicted, r->iters[k].measured_kl ...
 *     mpq_refine_result_free(r);
 */
#ifndef MPQ_REFINE_H
#define MPQ_REFINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPQ_REFINE_MAX_ITERATIONS 50
#define MPQ_REFINE_EXCHANGES 16
#define MPQ_REFINE_MAX_EXCHANGES 256
#define MPQ_REFINE_MAX_EXCHANGE_SIZE 4

/* Progress of the measurements (borrowed for the call). */
typedef struct mpq_refine_progress {
    int iteration;        /* unit_key: the iteration whose solution is the context measured
                             around; NULL: the iteration just stored */
    int64_t done, total;  /* units of this batch (context + moves, or one trial) */
    const char *unit_key; /* the unit just committed; NULL for "iteration solved" */
    double predicted, measured_kl; /* when unit_key is NULL: of the stored iteration */
} mpq_refine_progress;
typedef void (*mpq_refine_progress_fn)(void *user, const mpq_refine_progress *p);

typedef struct mpq_refine_opts {
    const mpq_budget *budgets;   /* borrowed; at least one */
    int n_budgets;
    unsigned ties;               /* MPQ_TIES_* (default 0) */
    bool smooth;                 /* monotone smoothing of every table (default true) */
    const char *solver;          /* "auto" (default) | "ilp" | "dp" */
    double time_limit_s;         /* ILP time limit (0 = none) */
    int max_iterations;          /* accepted re-solves after the additive start, 1..MPQ_REFINE_MAX_ITERATIONS (5) */
    int reach;                   /* moves measured per group: options within this many steps in
                                    bits of the current one (default 1: the two neighbours); 0 = all */
    int max_units;               /* stop (MPQ_ERR_INTERRUPTED) after this many commits; 0 = none */
    int exchanges;               /* measured exchanges per iteration (mpq_refine_exchanges; default
                                    MPQ_REFINE_EXCHANGES); 0 = none. Not 0: ";x=<n>" in the tag */
    int exchange_size;           /* moves per exchange at most, 2 (default)..MPQ_REFINE_MAX_EXCHANGE_SIZE;
                                    not 2 (and exchanges): "x<size>" appended to the tag */
    const char *metric;          /* the additive loss a: a metric expression (mpq_jobsolve.h; e.g.
                                    "noise_a*weight_rel"); NULL = "kl". Not "kl": ";metric=<expr>"
                                    is appended to the tag */
    mpq_refine_progress_fn progress;
    void *progress_user;
} mpq_refine_opts;

mpq_refine_opts mpq_refine_opts_default(void);

typedef struct mpq_refine_iter {
    int iteration;
    int64_t solution_id, evaluation_id;
    int64_t total_bits;
    double avg_bits;
    double predicted;      /* raw predicted loss of the choice under this iteration's table */
    double measured_kl, measured_kl_se; /* executor, evaluation windows */
    double context_kl;     /* K(A_k) on the calibration windows (NaN when not measured) */
    int n_measured;        /* in-context measurements behind this iteration (table + trials; 0: additive) */
    int n_changed;         /* layers whose candidate differs from the context's */
    int context;           /* iteration whose solution was the context (k > 0) */
    int max_changed;       /* trust region: at most this many groups could change */
    bool accepted;         /* its calibration KL beat the context's (every stored k >= 1) */
    bool exchange;         /* the accepted step was a measured exchange (not a re-solve trial) */
} mpq_refine_iter;

typedef struct mpq_refine_result {
    char tag[MPQ_DB_NAME_MAX];  /* "avg-bits=3.5" (+ ";ties=qkv") */
    int n_iters;                /* stored iterations, 0..n_iters-1 */
    mpq_refine_iter *iters;
    char stop[32];              /* "converged", "no-better-step", "iterations" */
    int selected;               /* the last iteration (lowest calibration KL) */
    int n_units_run;            /* measurements computed by this call (not resumed) */
} mpq_refine_result;
void mpq_refine_result_free(mpq_refine_result *r); /* accepts NULL */

/* One in-context measurement: item (group) g moved to option o, the rest as in the context. */
typedef struct mpq_refine_move {
    int item, option;
    double kl;            /* K(A with item at option) */
} mpq_refine_move;

/* The in-context table of the rule above: table[l * n_options + o] (caller buffer) from the
 * additive table (same layout), the items (group_of[l], n_items) and the context choice
 * (choice[item]), the context's measured K = context_kl and the measured moves. A move of an
 * item to its own option is ignored. MPQ_ERR_INVALID (NULL, sizes, an item or option out of
 * range, a non-finite number). */
mpq_status mpq_refine_table(int n_layers, int n_options, int n_items, const int *group_of, const int *choice,
                            const double *additive, double context_kl, const mpq_refine_move *moves, int n_moves,
                            double *table, mpq_err *err);

/* A measured exchange: n (2..MPQ_REFINE_MAX_EXCHANGE_SIZE) one-item moves of the context at once
 * (item[i] to option[i], items increasing), predicted = their summed in-context changes of KL. */
typedef struct mpq_refine_exchange {
    int n;
    int item[MPQ_REFINE_MAX_EXCHANGE_SIZE], option[MPQ_REFINE_MAX_EXCHANGE_SIZE];
    double predicted;
} mpq_refine_exchange;

/* The exchanges of the loop: every set of 2..max_size moves of different items, each move's
 * change d = kl - context_kl, whose configuration (choice with those moves) fits every finite
 * budget of problem p (sum over items of mpq_problem_cost <= mpq_problem_budget, exactly);
 * ordered by the sum of their d ascending, ties by n, then (item, option) lexicographically;
 * the first min(max_out, all) into out (caller buffer), their number in *n_out. A move to the
 * item's own option is ignored, a repeated move counts once; two moves of one item are never
 * combined. MPQ_ERR_INVALID (NULL, sizes, max_size, a move out of range or not allowed, a
 * non-finite number), MPQ_ERR_NOMEM. */
mpq_status mpq_refine_exchanges(const mpq_problem *p, const int *choice, double context_kl,
                                const mpq_refine_move *moves, int n_moves, int max_size, int max_out,
                                mpq_refine_exchange *out, int *n_out, mpq_err *err);

/* Runs (or resumes) the loop on a stored job; needs the model and data files (checked against
 * the recorded SHA-256). Takes the job's lease for the duration (MPQ_ERR_BUSY if another run
 * holds it). Stop requests (mpq_job_request_stop, SIGINT/SIGTERM with mpq_job_signals_install)
 * or max_units end it after the unit in flight with MPQ_ERR_INTERRUPTED (*out NULL).
 * MPQ_ERR_INVALID (no budget, bad iterations), MPQ_ERR_INFEASIBLE, solver / DB / IO errors. */
mpq_status mpq_refine_run(mpq_job *job, const mpq_refine_opts *opts, mpq_refine_result **out, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_REFINE_H */
