/*
 * job_calib.c - the calibration windows of a stored job (job_calib.h), and the job's
 * calibration with every linear layer's X^T X (mpq_job.h, mpq_job_calib_create) for the
 * quantizers that need X^T X (the SAQ candidates) when a stored configuration is evaluated, and
 * for the importance matrix of a job (src/export/imatrix.c).
 */
#include "job_calib.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_calib.h"
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
    char who[MPQ_DB_NAME_MAX + 32], sha[65], rec[65];
    snprintf(who, sizeof who, "calibration of job '%s'", jn);
    const mpq_model *model = NULL;
    int *tokens = NULL, n_seqs = 0, T = 0, batch = 0;
    mpq_status st = job_calib_windows(job, who, &model, &tokens, &n_seqs, &T, &batch, sha, err);
    if (st != MPQ_OK) return st;
    recorded_sha(job, "calibration_sha256", rec);
    if (rec[0] && strcmp(rec, sha) != 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID,
                         "%s: calibration data %s changed since the job was created (sha256 now %s, recorded %s)", who,
                         s->calib.data, sha, rec);
    } else {
        mpq_calib_opts co = mpq_calib_opts_default();
        co.batch = s->calib.batch;
        co.collect_xtx = true;
        if (s->has_kv) co.kv_scheme = s->kv_scheme;
        st = mpq_calib_create(model, tokens, n_seqs, T, &co, out, err);
        if (st != MPQ_OK) mpq_err_prefix(err, "%s", who);
    }
    free(tokens);
    return st;
}
