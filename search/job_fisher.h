/*
 * job_fisher.h - internal interface (not installed) between the job driver (job_spec.c,
 * job_run.c) and the fisher stage (job_fisher.c). The stage, its units and rows are
 * documented in include/mpq/mpq_job.h; the method in include/mpq/mpq_fisher.h.
 */
#ifndef MPQ_JOB_FISHER_H
#define MPQ_JOB_FISHER_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of units of the fisher stage (one per block that has linear layers; 0 if the stage
 * is not selected). */
int mpq_job_fisher_n_units(const mpq_job_spec *spec, const mpq_model *m);

/* Fills out[0..n) in block order: key "blk.N", block N, linear_index -1, option -1.
 * MPQ_ERR_INVALID if n does not match. */
mpq_status mpq_job_fisher_units(const mpq_job_spec *spec, const mpq_model *m, mpq_job_unit *out, int n);

/* Adds one metric row (the driver's row list); as mpq_job_hessian_row_fn. */
typedef mpq_status (*mpq_job_fisher_row_fn)(void *user, cJSON *prov, int64_t layer_id, const char *cand,
                                            const char *metric, double value, double se, int64_t n, mpq_err *err);

/* What a fisher unit needs from the driver (all borrowed for the call). */
typedef struct mpq_job_fisher_env {
    const mpq_job_spec *spec;
    const mpq_model *model;
    const int *tokens;          /* calibration windows (n_seqs, seq_len + 1) */
    int n_seqs, seq_len;
    const int64_t *layer_ids;   /* database ids of the linear layers */
    const mpq_candidate *cands; /* spec->n_candidates parsed candidates */
    mpq_job_fisher_row_fn add_row;
    void *row_user;
} mpq_job_fisher_env;

/* Computes unit u (one block): rows fisher_err (value, se over windows, n = windows) for
 * every linear layer of the block and every candidate. Thread-safe (no shared state; the
 * model is read only). Errors of mpq_fisher_block, or the row callback's. */
mpq_status mpq_job_fisher_compute(const mpq_job_fisher_env *env, const mpq_job_unit *u, cJSON *prov, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_JOB_FISHER_H */
