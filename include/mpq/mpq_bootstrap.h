/*
 * mpq_bootstrap.h - statistical stability of a solution (`mpq bootstrap`): resample the job's
 * calibration windows with replacement, re-solve, and count how often the stored solution is
 * still the optimum (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 6: the
 * nonparametric bootstrap of a statistic of i.i.d. samples; here the windows).
 *
 * Per-window values. Stage layer_sensitivity stores per (layer, candidate) the mean KL over the
 * n calibration windows, its standard error and n, and (artifacts
 * "kl_windows/<layer>/<candidate>", README "The results database") each window's own value as
 * a little-endian IEEE-754 binary64: those are read as they are, nothing is measured. For
 * jobs stored before that, and for adaptive units that stopped before the last window, they
 * are measured here (once per job; resumable) and stored as artifacts named
 * "window_kl/<layer>/<candidate>": n little-endian IEEE-754 binary32 values, window k = the
 * mean over its T positions of KL(P_fp || P_q) with only that layer quantized (entering the
 * executor at the layer's block from the FP run's residual: the same forward as the stage,
 * batch = the spec's calibration batch). Their mean agrees with the stored kl up to rounding
 * (the check is reported: max relative and max absolute difference; the relative one is large
 * only where the KL itself is at the rounding level of float32 log-probabilities, ~1e-8).
 *
 * Resample r (r = 1..R): indices i_1..i_n drawn uniformly with replacement (mpq_rng seeded with
 * seed; the same indices for every (layer, candidate): the resample is paired), and
 *     kl_r(l, c) = kl(l, c) + mean_k w_lc[i_k] - mean_k w_lc[k]
 * (stored kl shifted by the resample's change of the per-window mean, so the identity resample
 * gives the stored table exactly). The problem (budgets, ties, smoothing of mpq_solve) is solved
 * with kl_r (exact DP for one integral budget, else GLPK ILP) and, unless no_knee, its exact
 * Pareto frontier's knee is found (mpq_frontier_knee).
 *
 * Reported for the stored solution S: p_optimal = fraction of resamples whose optimum assigns
 * every layer as S; per-layer stability = fraction of resamples whose optimum gives the layer
 * S's candidate; S's predicted loss sum_l kl_r(l, S(l)) over resamples (percentiles 5, 50, 95,
 * nearest-rank); knee_same = fraction of resamples whose knee assigns every layer as the knee
 * of the unresampled table.
 *
 *     mpq_bootstrap_opts o = mpq_bootstrap_opts_default();
 *     o.budgets = &b; o.n_budgets = 1; o.resamples = 200; o.seed = 1;
 *     mpq_bootstrap_result *r = NULL;
 *     if (mpq_bootstrap_run(job, &o, &r, &err) == MPQ_OK) r->p_optimal ...
 *     mpq_bootstrap_result_free(r);
 */
#ifndef MPQ_BOOTSTRAP_H
#define MPQ_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPQ_BOOTSTRAP_MAX_RESAMPLES 100000

typedef struct mpq_bootstrap_progress {
    int64_t done, total;   /* per-window measurements (what), or resamples solved */
    const char *what;      /* "windows" or "resamples" */
} mpq_bootstrap_progress;
typedef void (*mpq_bootstrap_progress_fn)(void *user, const mpq_bootstrap_progress *p);

typedef struct mpq_bootstrap_opts {
    const mpq_budget *budgets;  /* borrowed; at least one */
    int n_budgets;
    unsigned ties;              /* MPQ_TIES_* (default 0) */
    bool smooth;                /* default true */
    const char *solution;       /* stored solution; NULL = "kl@<budgets as given>" */
    int resamples;              /* 1..MPQ_BOOTSTRAP_MAX_RESAMPLES (default 200) */
    uint64_t seed;              /* default 1 */
    bool identity;              /* every resample is the identity (a check: p_optimal must be 1
                                   when the solution is this problem's optimum) */
    bool no_knee;               /* skip the frontier / knee part */
    mpq_bootstrap_progress_fn progress;
    void *progress_user;
} mpq_bootstrap_opts;

mpq_bootstrap_opts mpq_bootstrap_opts_default(void);

typedef struct mpq_bootstrap_result {
    char solution[MPQ_DB_NAME_MAX];
    int n_layers, n_windows, resamples;
    int n_measured;             /* per-window measurements made by this call */
    double window_check;        /* max over (layer, candidate) of |mean w - kl| / kl */
    double window_check_abs;    /* max over (layer, candidate) of |mean w - kl| (nats/token) */
    double p_optimal;
    double *stability;          /* [n_layers] */
    char (*layer)[MPQ_DB_NAME_MAX]; /* [n_layers] names */
    char (*candidate)[MPQ_DB_SHORT_MAX]; /* [n_layers] the solution's candidate */
    double predicted;           /* S's predicted loss with the stored table */
    double loss_p5, loss_p50, loss_p95, loss_mean;
    double knee_same;           /* NaN with no_knee */
    double knee_avg_bits;       /* of the unresampled knee */
} mpq_bootstrap_result;
void mpq_bootstrap_result_free(mpq_bootstrap_result *r); /* accepts NULL */

/* Measures missing per-window values (needs the model and data files, checked against the
 * recorded SHA-256) and runs the resamples. MPQ_ERR_INVALID (no budget, resamples out of
 * range, a job without layer_sensitivity, a stored per-window artifact of the wrong size),
 * MPQ_ERR_NOTFOUND (no such solution), MPQ_ERR_INFEASIBLE, I/O, DB and solver errors;
 * MPQ_ERR_INTERRUPTED on a stop request (per-window values stored so far are kept). */
mpq_status mpq_bootstrap_run(mpq_job *job, const mpq_bootstrap_opts *opts, mpq_bootstrap_result **out, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_BOOTSTRAP_H */
