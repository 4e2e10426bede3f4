/*
 * job_fixture.h - a stored job written directly into a results database (no stage run): the
 * model row and layer table of a loaded model (plus blk.N.kv rows) and a job whose spec is the
 * canonical text of a real spec, so mpq_job_open accepts it. For tests of what works on
 * stored jobs (plots, reports, exports) with hand-made metric rows.
 */
#ifndef MPQ_TEST_JOB_FIXTURE_H
#define MPQ_TEST_JOB_FIXTURE_H

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "test_util.h"

/* Stores model m (sha256 as given, KV rows when with_kv) and job `name` with candidates (a JSON
 * array text such as "[\"int2g32\",\"int8c\"]"). layer_ids (may be NULL) gets the ids of the
 * n_linear layers then the KV rows. */
static inline void fixture_store_job(mpq_db *db, const mpq_model *m, const char *sha256, const char *name,
                                     const char *candidates, bool with_kv, int64_t *model_id, int64_t *layer_ids,
                                     int64_t *job_id) {
    mpq_err err = {0};
    const mpq_model_config *mc = mpq_model_get_config(m);
    int nl = mpq_model_n_linear(m), nb = with_kv ? mc->n_layers : 0;
    mpq_db_layer *L = calloc((size_t)(nl + nb), sizeof *L);
    ck_assert_ptr_nonnull(L);
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        snprintf(L[i].name, sizeof L[i].name, "%s", li->name);
        snprintf(L[i].hf_name, sizeof L[i].hf_name, "%s", li->hf_name);
        snprintf(L[i].kind, sizeof L[i].kind, "%s", mpq_layer_kind_name(li->kind));
        L[i].block = li->block, L[i].rows = li->rows, L[i].cols = li->cols, L[i].n_params = li->n_params;
    }
    for (int b = 0; b < nb; b++) {
        snprintf(L[nl + b].name, sizeof L[nl + b].name, "blk.%d.kv", b);
        snprintf(L[nl + b].kind, sizeof L[nl + b].kind, "kv_cache");
        L[nl + b].block = b, L[nl + b].cols = (int64_t)mc->n_kv_heads * mc->head_dim;
    }
    mpq_db_model dm = {.path = mpq_model_path(m), .sha256 = sha256, .arch = "llama", .format = "llama2c-legacy",
                       .dtype = mc->source_dtype, .dim = mc->dim, .hidden_dim = mc->hidden_dim,
                       .n_layers = mc->n_layers, .n_heads = mc->n_heads, .n_kv_heads = mc->n_kv_heads,
                       .vocab_size = mc->vocab_size, .seq_len = mc->seq_len, .n_params = mpq_model_n_params(m)};
    ck_assert_msg(mpq_db_model_upsert(db, &dm, L, nl + nb, model_id, layer_ids, &err) == MPQ_OK, "%s", err.msg);
    free(L);
    char json[8192];
    snprintf(json, sizeof json, "{\"name\":\"%s\",\"model\":\"%s\",\"calibration\":{\"data\":\"%s\"},\"candidates\":%s}",
             name, mpq_model_path(m), shared_path("data/tinystories-calib.tok512.u16"), candidates);
    mpq_job_spec *spec = NULL;
    ck_assert_msg(mpq_job_spec_parse(json, "fixture.json", &spec, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_db_job_create(db, name, spec->canonical_json, *model_id, 0, 1, job_id, NULL, &err) == MPQ_OK, "%s",
                  err.msg);
    mpq_job_spec_free(spec);
}

#endif /* MPQ_TEST_JOB_FIXTURE_H */
