/*
 * job_calib.c - the calibration windows of a stored job (job_calib.h).
 */
#include "job_calib.h"

#include <stdio.h>
#include <stdlib.h>

#include "mpq/mpq_data.h"
#include "mpq/mpq_tokenizer.h"

mpq_status job_calib_windows(mpq_job *job, const char *who, const mpq_model **model, int **tokens, int *n_seqs,
                             int *T, int *batch, char *data_sha, mpq_err *err) {
    const mpq_job_spec *spec = mpq_job_get_spec(job);
    mpq_tokenizer *tok = NULL;
    mpq_data *d = NULL;
    mpq_data_seqs *seqs = NULL;
    *tokens = NULL;
    mpq_status st = mpq_job_load_model(job, model, err);
    if (st != MPQ_OK) return st;
    const mpq_model_config *mc = mpq_model_get_config(*model);
    if (spec->tokenizer && (st = mpq_tokenizer_load(spec->tokenizer, mc->vocab_size, &tok, err)) != MPQ_OK) goto done;
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(spec->calib.data, tok, &dopt, &d, err)) != MPQ_OK) goto done;
    if (data_sha) snprintf(data_sha, 65, "%s", mpq_data_sha256(d));
    if ((st = mpq_data_sequences(d, spec->calib.seq_len, spec->calib.n_seqs, (uint64_t)spec->calib.seed, &seqs,
                                 err)) != MPQ_OK)
        goto done;
    size_t nt = (size_t)seqs->n_seqs * ((size_t)seqs->seq_len + 1);
    if (!(*tokens = mpq_calloc(nt, sizeof **tokens))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for calibration tokens");
        goto done;
    }
    for (size_t i = 0; i < nt; i++) (*tokens)[i] = (int)seqs->tokens[i];
    *n_seqs = seqs->n_seqs;
    *T = seqs->seq_len;
    *batch = spec->calib.batch < seqs->n_seqs ? spec->calib.batch : seqs->n_seqs;
done:
    if (st != MPQ_OK) mpq_err_prefix(err, "%s: calibration windows", who);
    mpq_data_seqs_free(seqs);
    mpq_data_free(d);
    mpq_tokenizer_free(tok);
    return st;
}
