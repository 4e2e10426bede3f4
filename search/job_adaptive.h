/*
 * job_adaptive.h - internal interface (not installed) of adaptive measurement for the
 * layer_sensitivity stage (README "Adaptive measurement"): the per-unit state stored with
 * every commit (the accumulated sums of the windows measured so far and their per-window KL)
 * and the round rule that picks the units to extend from the rows stored at the end of the
 * previous round. The driver (job_run.c) runs the rounds; job_adaptive.c holds the rule.
 */
#ifndef MPQ_JOB_ADAPTIVE_H
#define MPQ_JOB_ADAPTIVE_H

#include <stddef.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_job.h"

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

#endif /* MPQ_JOB_ADAPTIVE_H */
