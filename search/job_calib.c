/*
 * job_calib.c - a stored job's calibration (mpq_job.h, mpq_job_calib_create): the job's model
 * (SHA-256 checked), its calibration windows (data hash checked against the recorded one) and
 * the FP reference with every linear layer's X^T X, for the quantizers that need X^T X (the
 * SAQ candidates) when a stored configuration is evaluated.
 */
#include "mpq/mpq_job.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_tokenizer.h"

/* The data hash the job recorded for key (artifact "inputs"); "" if none. */
static void recorded_sha(mpq_job *job, const char *key, char out[65]) {
    void *blob = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (mpq_db_artifact_get(mpq_job_db(job), mpq_job_get_row(job)->id, "inputs", &blob, &n, NULL) != MPQ_OK) return;
    cJSON *o = cJSON_ParseWithLength(blob, n);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v) && strlen(v->valuestring) == 64) snprintf(out, 65, "%s", v->valuestring);
    cJSON_Delete(o);
    free(blob);
}

mpq_status mpq_job_calib_create(mpq_job *job, mpq_calib **out, mpq_err *err) {
    if (!job || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "job calibration: NULL argument");
    *out = NULL;
    const mpq_job_spec *s = mpq_job_get_spec(job);
    const char *jn = mpq_job_get_row(job)->name;
    const mpq_model *model = NULL;
    mpq_tokenizer *tok = NULL;
    mpq_data *data = NULL;
    mpq_data_seqs *seqs = NULL;
    int *tokens = NULL;
    mpq_status st;
    if ((st = mpq_job_load_model(job, &model, err)) != MPQ_OK) {
        mpq_err_prefix(err, "calibration of job '%s'", jn);
        return st;
    }
    const mpq_model_config *mc = mpq_model_get_config(model);
    if (s->tokenizer && (st = mpq_tokenizer_load(s->tokenizer, mc->vocab_size, &tok, err)) != MPQ_OK) {
        mpq_err_prefix(err, "calibration of job '%s': tokenizer", jn);
        goto done;
    }
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(s->calib.data, tok, &dopt, &data, err)) != MPQ_OK) {
        mpq_err_prefix(err, "calibration of job '%s': calibration data", jn);
        goto done;
    }
    char rec[65];
    recorded_sha(job, "calibration_sha256", rec);
    if (rec[0] && strcmp(rec, mpq_data_sha256(data)) != 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID,
                         "calibration of job '%s': calibration data %s changed since the job was created (sha256 now "
                         "%s, recorded %s)",
                         jn, s->calib.data, mpq_data_sha256(data), rec);
        goto done;
    }
    if ((st = mpq_data_sequences(data, s->calib.seq_len, s->calib.n_seqs, (uint64_t)s->calib.seed, &seqs, err)) !=
        MPQ_OK)
        goto done;
    size_t nt;
    if (!mpq_size_mul((size_t)seqs->n_seqs, (size_t)seqs->seq_len + 1, &nt) ||
        !(tokens = mpq_calloc(nt, sizeof *tokens))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "calibration of job '%s': out of memory for %d windows", jn,
                         seqs->n_seqs);
        goto done;
    }
    for (size_t i = 0; i < nt; i++) tokens[i] = (int)seqs->tokens[i];
    mpq_calib_opts co = mpq_calib_opts_default();
    co.batch = s->calib.batch;
    co.collect_xtx = true;
    if (s->has_kv) co.kv_scheme = s->kv_scheme;
    st = mpq_calib_create(model, tokens, seqs->n_seqs, seqs->seq_len, &co, out, err);
    if (st != MPQ_OK) mpq_err_prefix(err, "calibration of job '%s'", jn);
done:
    free(tokens);
    mpq_data_seqs_free(seqs);
    mpq_data_free(data);
    mpq_tokenizer_free(tok);
    return st;
}
