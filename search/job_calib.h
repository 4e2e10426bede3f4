/*
 * job_calib.h - internal (not installed): the calibration windows of a stored job as the
 * layer_sensitivity stage drew them, shared by the commands that measure more on them
 * (refine.c, pairs.c, bootstrap.c).
 */
#ifndef MPQ_JOB_CALIB_H
#define MPQ_JOB_CALIB_H

#include "mpq/mpq.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"

/* The job's model (mpq_job_load_model, borrowed from the job), its tokenizer if any, and the
 * calibration data's windows (spec calib: data, seq_len, n_seqs, seed): *tokens (malloc'd,
 * n_seqs * (T + 1) tokens, window-major), *n_seqs windows of *T positions, *batch = the spec's
 * batch capped at n_seqs, data_sha (may be NULL) the data file's SHA-256 (hex, 65 bytes).
 * Errors are prefixed "<who>: calibration windows"; nothing is returned on error. */
mpq_status job_calib_windows(mpq_job *job, const char *who, const mpq_model **model, int **tokens, int *n_seqs,
                             int *T, int *batch, char *data_sha, mpq_err *err);

#endif /* MPQ_JOB_CALIB_H */
