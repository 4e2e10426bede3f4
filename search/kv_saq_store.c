/*
 * kv_saq_store.c - the SAQ KV bases of a job (kv scheme mode saq) in the results database:
 * artifact "kv_saq_bases", the bases-file JSON (mpq_kv_saq_to_json, "mpq_kv_saq_version": 1),
 * stored once by the first run that fits them and read back by every later use.
 * API: include/mpq/mpq_kvsearch.h.
 */
#include "mpq/mpq_kvsearch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAQ_ARTIFACT "kv_saq_bases"

mpq_status mpq_kvsearch_saq_bases_get(mpq_db *db, int64_t job_id, const char *job, int n_layers, int n_kv_heads,
                                      int head_dim, mpq_kv_saq **out, mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq bases: NULL argument");
    *out = NULL;
    char what[512];
    if (job) snprintf(what, sizeof what, "%s: job '%s': artifact " SAQ_ARTIFACT, mpq_db_path(db), job);
    else snprintf(what, sizeof what, "%s: job %lld: artifact " SAQ_ARTIFACT, mpq_db_path(db), (long long)job_id);
    void *blob = NULL;
    size_t n = 0;
    mpq_err e2 = {0};
    mpq_status st = mpq_db_artifact_get(db, job_id, SAQ_ARTIFACT, &blob, &n, &e2);
    if (st == MPQ_ERR_NOTFOUND)
        return mpq_err_set(err, MPQ_ERR_NOTFOUND,
                           "%s: missing (the job's kv_sensitivity has not run with this mpq version; "
                           "mpq resume stores it when units are left)",
                           what);
    if (st != MPQ_OK) {
        if (err) *err = e2;
        return st;
    }
    mpq_kv_saq *s = NULL;
    st = mpq_kv_saq_from_json(blob ? (const char *)blob : "", blob ? n : 0, what, &s, err);
    free(blob);
    if (st == MPQ_OK && (st = mpq_kv_saq_check(s, n_layers, n_kv_heads, head_dim, what, err)) != MPQ_OK)
        st = MPQ_ERR_FORMAT; /* stored, but not for this model: a malformed artifact */
    if (st != MPQ_OK) {
        mpq_kv_saq_free(s);
        return st;
    }
    *out = s;
    return MPQ_OK;
}

mpq_status mpq_kvsearch_saq_bases_put(mpq_db *db, int64_t job_id, const mpq_kv_saq *s, mpq_err *err) {
    if (!db || !s) return mpq_err_set(err, MPQ_ERR_INVALID, "kv saq bases: NULL argument");
    char *text = NULL;
    mpq_status st = mpq_kv_saq_to_json(s, &text, err);
    if (st != MPQ_OK) return st;
    if ((st = mpq_db_begin(db, err)) == MPQ_OK) {
        void *blob = NULL;
        size_t n = 0;
        mpq_err e2 = {0};
        mpq_status g = mpq_db_artifact_get(db, job_id, SAQ_ARTIFACT, &blob, &n, &e2);
        free(blob);
        if (g == MPQ_ERR_NOTFOUND) st = mpq_db_artifact_put(db, job_id, SAQ_ARTIFACT, text, strlen(text), err);
        else if (g != MPQ_OK) {
            st = g;
            if (err) *err = e2;
        } /* else: already stored by another run (the same deterministic fit): kept */
        if (st == MPQ_OK) st = mpq_db_commit(db, err);
        else mpq_db_rollback(db, NULL);
    }
    free(text);
    return st;
}
