/*
 * job_hessian.h - internal interface (not installed) between the job driver (job_spec.c,
 * job_run.c) and the hessian stage (job_hessian.c): the stage's unit list and the computation
 * of one unit. The stage, its units and its rows are documented in include/mpq/mpq_job.h;
 * the methods in include/mpq/mpq_hessian.h (HAWQ-V2, PyHessian).
 */
#ifndef MPQ_JOB_HESSIAN_H
#define MPQ_JOB_HESSIAN_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of units of the hessian stage of spec on model m (0 if the stage is not selected). */
int mpq_job_hessian_n_units(const mpq_job_spec *spec, const mpq_model *m);

/* Fills out[0..n) (n = mpq_job_hessian_n_units) in run order: trace chunks, per-layer trace
 * rows, fisher, per-layer eig, whole-model eig, SLQ probes. linear_index is the layer for
 * per-layer units (else -1), option the chunk / probe index (else -1). MPQ_ERR_INVALID if n
 * does not match or a key would not fit. */
mpq_status mpq_job_hessian_units(const mpq_job_spec *spec, const mpq_model *m, mpq_job_unit *out, int n);

/* Adds one metric row (the driver's row list). prov: the unit's provenance object, which the
 * callback serialises per row (adding "candidate"). metric / cand must stay valid until the
 * unit is committed (the stage keeps its metric names in its state until the next unit). */
typedef mpq_status (*mpq_job_hessian_row_fn)(void *user, cJSON *prov, int64_t layer_id, const char *cand,
                                             const char *metric, double value, double se, int64_t n,
                                             mpq_err *err);

/* What a hessian unit needs from the driver (all borrowed for the call). */
typedef struct mpq_job_hessian_env {
    mpq_db *db;                  /* for the trace chunks' running-sum artifacts */
    int64_t job_id;
    const mpq_job_spec *spec;
    const mpq_model *model;
    const int *tokens;           /* calibration windows (n_seqs, seq_len + 1) */
    int n_seqs, seq_len;
    const int64_t *layer_ids;    /* database ids of the linear layers */
    const mpq_candidate *cands;  /* spec->n_candidates parsed candidates */
    mpq_job_hessian_row_fn add_row;
    void *row_user;
} mpq_job_hessian_env;

/* Per-run state of the stage (the Hessian object, built on first use; metric name buffers). */
typedef struct mpq_job_hessian mpq_job_hessian;

/* Computes unit u of the hessian stage, adding its rows through env->add_row. *state is
 * created on first use (free with mpq_job_hessian_free). prov gets a "hessian" object.
 * Trace chunks read the previous chunk's artifact and write their own (idempotently) before
 * returning. Errors: MPQ_ERR_INVALID (unknown key, missing chunk state, or one with an
 * unexpected probe count), MPQ_ERR_FORMAT (a chunk state mpq_hessian_hutch_load refuses; the
 * message names the artifact), MPQ_ERR_NOMEM, MPQ_ERR_DB, and the Hessian library's errors. */
mpq_status mpq_job_hessian_compute(mpq_job_hessian **state, const mpq_job_hessian_env *env, const mpq_job_unit *u,
                                   cJSON *prov, mpq_err *err);
void mpq_job_hessian_free(mpq_job_hessian *h); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif /* MPQ_JOB_HESSIAN_H */
