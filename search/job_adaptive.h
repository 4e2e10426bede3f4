/*
 * job_adaptive.h - internal interface (not installed) of adaptive measurement for the
 * layer_sensitivity stage (README "Adaptive measurement"): the per-unit state stored with
 * every commit (the accumulated sums of the windows measured so far and their per-window KL),
 * the round rule that picks the units to extend from the rows stored at the end of the
 * previous round, and the round loop, which the driver (job_run.c) calls for the stage and
 * which computes and commits each round's units through the job's pool (job_pool.h).
 */
#ifndef MPQ_JOB_ADAPTIVE_H
#define MPQ_JOB_ADAPTIVE_H

#include <stddef.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"

#include "job_pool.h"

/* Artifact names: "kl_windows/<layer>/<candidate>" (per-window KL, little-endian float64,
 * windows 0.. in order), "adaptive.state/<layer>/<candidate>" (JSON, adaptive jobs only),
 * "adaptive.round.<r>" (JSON, the decision of round r >= 1). */
void job_adaptive_windows_name(char *out, size_t n, const char *layer, const char *cand);
void job_adaptive_state_name(char *out, size_t n, const char *layer, const char *cand);
void job_adaptive_round_name(char *out, size_t n, int round);

/* The state of one adaptive unit after its last commit. */
typedef struct job_adaptive_state {
    int windows;         /* windows measured (0: none yet) */
    int round;           /* round of the last commit */
    mpq_eval_stats acc;  /* sums over those windows (continued bit for bit by the next round) */
    double *win;         /* [windows] per-window KL (malloc'd; NULL when windows = 0) */
} job_adaptive_state;

/* JSON text of the state (doubles as C99 hex strings: exact). malloc'd, NULL when out of memory. */
char *job_adaptive_state_json(const mpq_eval_stats *acc, int windows, int round);
/* Little-endian float64 bytes of win[0..n) into a malloc'd buffer of 8n bytes (NULL: no memory). */
unsigned char *job_adaptive_windows_bytes(const double *win, int n);
/* Reads the stored state of (layer, cand): its JSON and per-window artifacts, checked against
 * each other and n_seqs (MPQ_ERR_FORMAT naming the artifact otherwise). *out zeroed (windows 0)
 * when the unit has no state. Free out->win. */
mpq_status job_adaptive_state_load(mpq_db *db, int64_t job_id, const char *layer, const char *cand, int n_seqs,
                                   job_adaptive_state *out, mpq_err *err);

/* The rule of round `round` (>= 1): over the job's layer_sensitivity units (units[0..n_units),
 * round 0, spec order), with each unit's stored kl, kl_se and n (windows) read from db, solves
 * the GLPK ILP of every budget of spec->adaptive on kl (mpq_jobsolve defaults: no ties,
 * smoothing on) and marks unit (l, c) for extension when it has fewer than n_seqs windows and
 * moving its kl to kl + z se (c chosen at l) or max(0, kl - z se) (c not chosen) changes the
 * solution of some budget. *ext (malloc'd, indices into units) and *n_ext; *decision_json
 * (malloc'd) is what artifact "adaptive.round.<round>" stores. MPQ_ERR_INFEASIBLE naming the
 * budget, DB / solver errors. */
mpq_status job_adaptive_decide(mpq_db *db, int64_t job_id, const mpq_job_spec *spec, const mpq_job_unit *units,
                               int n_units, const int64_t *layer_ids, int round, int **ext, int *n_ext,
                               char **decision_json, mpq_err *err);

/* A unit of an adaptive round r >= 1 (mpq_job_unit.round): the spec's unit with the state
 * it had at the end of its last commit. `u` first: the unit computation gets &au->u and
 * reads the state through it. */
typedef struct adapt_unit {
    mpq_job_unit u;
    job_adaptive_state state;
} adapt_unit;

/* What the round loop needs of the driver; borrowed for the call. */
typedef struct job_adaptive_env {
    mpq_db *db;
    int64_t job_id;
    const mpq_job_spec *spec;
    const mpq_model *model;     /* linear layer names (the state artifacts' names) */
    const mpq_job_unit *units;  /* [n_units] the job's units, mpq_job_units order */
    int n_units;
    const int64_t *layer_ids;   /* database ids of the linear layers */
    int n_seqs;                 /* calibration windows */
    /* The FP reference, built on the first call (a run whose round-0 units were all done
     * before it started needs it only once a round extends a unit). */
    mpq_status (*reference)(void *user, mpq_calib **cal, mpq_err *err);
    void *user;
} job_adaptive_env;

/* Runs the adaptive layer_sensitivity stage `sname` (README "Adaptive measurement"): round 0
 * is the stage's pending spec units over the first min_windows windows; round r >= 1 starts
 * only when every unit of round r-1 is done: its set of units to extend is decided from the
 * rows stored then (job_adaptive_decide) and stored, with the round's units "round.r/<unit
 * key>", in one transaction (artifact "adaptive.round.r"); a resumed job reads that decision
 * back instead of deciding again. A decision with no unit ends the stage; so does a failed
 * unit or a stop request (*stopped set). Each round's pending units are computed and
 * committed by job_pool_run; p->stage_done / stage_total are re-read before each round.
 * Errors: those of job_pool_run, job_adaptive_decide and job_adaptive_state_load, and
 * MPQ_ERR_FORMAT naming a stored decision that lists no "extend" or a unit not in the spec. */
mpq_status job_adaptive_run(job_pool *pool, const job_adaptive_env *env, const char *sname, mpq_job_progress *p,
                            bool *stopped, mpq_err *err);

#endif /* MPQ_JOB_ADAPTIVE_H */
