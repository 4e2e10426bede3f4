/*
 * mpq_pairs.h - pairwise interaction terms of layer damage (`mpq pairs`, `mpq solve --pairs`).
 * The stored single-layer KL kl_l(c) (stage layer_sensitivity: layer l alone at candidate c,
 * everything else full precision) assumes that damages add up; at low bits they do not. For
 * two layers i < j (model order) and candidates a, b:
 *
 *     K_ij(a, b) = KL(P_fp || P) with layer i at a, layer j at b, every other layer FP,
 *                  on the job's calibration windows (the windows, batch and FP reference of
 *                  the layer_sensitivity stage: the same numbers kl_l(c) was measured on);
 *     I_ij(a, b) = K_ij(a, b) - kl_i(a) - kl_j(b)          (the interaction term).
 *
 * Which terms are measured (mpq_pairs_run), around a stored solution S (choice s_l):
 *   layer pairs   scope "block": i, j in the same block; scope "all": every pair;
 *   candidates    C_l = {s_l} plus the job's candidates within `reach` steps of s_l in exact
 *                 stored bits of l (1 step = the next cheaper / next dearer candidate; equal
 *                 bits count as one step; reach 0 = every candidate);
 *                 (solution_only: C_l = {s_l}, one term per layer pair: enough to correct the
 *                 solution's prediction, not to move the solver);
 *   terms         every (i, a, j, b) with a in C_i, b in C_j.
 * Each term is a unit of stage "pairs" (key "<layer i>/<a>/<layer j>/<b>", independent of S, so
 * solutions and scopes share measurements) committing, with its done mark in one transaction,
 * two metric rows on layer i with candidate "<a>|<layer j>=<b>":
 *     pair_kl           K_ij(a, b), standard error over windows, n = windows;
 *     pair_interaction  I_ij(a, b) (no standard error: per-window KL is not stored), n = windows.
 * A killed run resumes from those rows (run the same command): every number is the same.
 * The measurement enters the executor at the earlier of the two layers (the FP reference's
 * residuals up to there): bitwise the full forward of that model.
 *
 * In the solve (mpq_jobsolve_opts.pairs, metric "kl" only) every stored pair_interaction row
 * whose two layers and candidates belong to the problem becomes a term of mpq_solve_ilp_pairs
 * (items = the groups of the two layers; a pair inside one tied group is skipped); a pair or
 * candidate combination without a row counts 0 (assumed additive).
 *
 *     mpq_pairs_opts o = mpq_pairs_opts_default();
 *     o.solution = "kl@avg-bits=3.5"; o.scope = MPQ_PAIRS_SCOPE_BLOCK; o.reach = 1;
 *     mpq_pairs_result *r = NULL;
 *     if (mpq_pairs_run(job, &o, &r, &err) != MPQ_OK) ...   // MPQ_ERR_INTERRUPTED: resumable
 *     r->additive, r->pair_sum, r->measured_kl ...
 *     mpq_pairs_result_free(r);
 */
#ifndef MPQ_PAIRS_H
#define MPQ_PAIRS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"
#include "mpq/mpq_solvers.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mpq_pairs_scope {
    MPQ_PAIRS_SCOPE_BLOCK = 0, /* pairs of layers of the same block */
    MPQ_PAIRS_SCOPE_ALL        /* every pair of linear layers */
} mpq_pairs_scope;

/* "block" | "all" -> scope; MPQ_ERR_INVALID naming the text. */
mpq_status mpq_pairs_scope_parse(const char *s, mpq_pairs_scope *out, mpq_err *err);

/* Progress of the measurements (borrowed for the call). */
typedef struct mpq_pairs_progress {
    int64_t done, total;  /* terms stored / in the run's set */
    const char *unit_key; /* the unit just committed */
} mpq_pairs_progress;
typedef void (*mpq_pairs_progress_fn)(void *user, const mpq_pairs_progress *p);

typedef struct mpq_pairs_opts {
    const char *solution;   /* stored solution name (required) */
    mpq_pairs_scope scope;  /* default block */
    int reach;              /* 0..n_candidates-1; default 1; 0 = every candidate */
    bool solution_only;     /* C_l = {s_l}: only the solution's own combinations (reach unused) */
    int max_units;          /* stop (MPQ_ERR_INTERRUPTED) after this many commits; 0 = none */
    mpq_pairs_progress_fn progress;
    void *progress_user;
} mpq_pairs_opts;

mpq_pairs_opts mpq_pairs_opts_default(void);

typedef struct mpq_pairs_result {
    int64_t solution_id;
    int n_layers;           /* linear layers of the job */
    int n_layer_pairs;      /* layer pairs in scope */
    int n_terms;            /* terms in the run's set (stored after a complete run) */
    int n_units_run;        /* measured by this call (not resumed) */
    double additive;        /* sum of stored kl over the solution's choice */
    double pair_sum;        /* sum of I_ij(s_i, s_j) over the layer pairs in scope */
    double predicted;       /* additive + pair_sum */
    double measured_kl, measured_kl_se; /* newest evaluation of the solution (NaN if none) */
    double interaction_min, interaction_max; /* over the run's terms */
} mpq_pairs_result;
void mpq_pairs_result_free(mpq_pairs_result *r); /* accepts NULL */

/* Measures (or resumes) the terms around opts->solution; needs the model and data files
 * (checked against the recorded SHA-256) and takes the job's lease (MPQ_ERR_BUSY). Stop
 * requests or max_units end it after the unit in flight with MPQ_ERR_INTERRUPTED.
 * MPQ_ERR_NOTFOUND (no such solution), MPQ_ERR_INVALID (no solution name, reach out of range,
 * a solution without assignments or with a candidate the job did not measure, a job without
 * layer_sensitivity), I/O and DB errors. *out owned by the caller. */
mpq_status mpq_pairs_run(mpq_job *job, const mpq_pairs_opts *opts, mpq_pairs_result **out, mpq_err *err);

/* The stored pair_interaction rows of the job as terms of problem p (items = p's groups,
 * options = p's candidates; rows naming layers or candidates outside p, or two layers of the
 * same group, are skipped). *terms malloc'd (free(); NULL when none), *n_terms. */
mpq_status mpq_pairs_terms(mpq_job *job, const mpq_jobsolve_problem *p, mpq_pair_term **terms, int *n_terms,
                           mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_PAIRS_H */
