/*
 * store.c - models, layer tables, datasets, jobs, work units and metrics in the results
 * database. Schema: db/schema.c. The unit commit (metric rows + "done" mark in one
 * transaction) is what makes jobs resumable (DESIGN.md, "Jobs").
 */
#include "db/db_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS_SQL "strftime('%Y-%m-%dT%H:%M:%fZ','now')"

/* ---- models and layers -------------------------------------------------------------- */

mpq_status mpq_db_model_upsert(mpq_db *db, const mpq_db_model *model, const mpq_db_layer *layers,
                               int n_layers, int64_t *model_id, int64_t *layer_ids, mpq_err *err) {
    sqlite3_stmt *st = NULL, *sel = NULL;
    mpq_status s = MPQ_OK;
    int opened = 0;
    int64_t mid = 0;
    if (!db || !model || !model->sha256 || !*model->sha256 || n_layers < 0 || (n_layers > 0 && !layers))
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_model_upsert: missing model, sha256 or layers");
    for (int i = 0; i < n_layers; i++)
        if (db_field_len(layers[i].name, sizeof layers[i].name) == 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: model %s: layer %d has no name", db->path,
                               model->path ? model->path : model->sha256, i);
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    if ((s = db_prepare(db,
                        "INSERT INTO models(path, sha256, arch, format, dtype, dim, hidden_dim, n_layers,"
                        " n_heads, n_kv_heads, vocab_size, seq_len, n_params)"
                        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
                        " ON CONFLICT(sha256) DO UPDATE SET path=excluded.path, arch=excluded.arch,"
                        " format=excluded.format, dtype=excluded.dtype, dim=excluded.dim,"
                        " hidden_dim=excluded.hidden_dim, n_layers=excluded.n_layers,"
                        " n_heads=excluded.n_heads, n_kv_heads=excluded.n_kv_heads,"
                        " vocab_size=excluded.vocab_size, seq_len=excluded.seq_len,"
                        " n_params=excluded.n_params",
                        &st, err)) != MPQ_OK)
        goto done;
    db_bind_text(st, 1, model->path);
    db_bind_text(st, 2, model->sha256);
    db_bind_text(st, 3, model->arch);
    db_bind_text(st, 4, model->format);
    db_bind_text(st, 5, model->dtype);
    sqlite3_bind_int(st, 6, model->dim);
    sqlite3_bind_int(st, 7, model->hidden_dim);
    sqlite3_bind_int(st, 8, model->n_layers);
    sqlite3_bind_int(st, 9, model->n_heads);
    sqlite3_bind_int(st, 10, model->n_kv_heads);
    sqlite3_bind_int(st, 11, model->vocab_size);
    sqlite3_bind_int(st, 12, model->seq_len);
    sqlite3_bind_int64(st, 13, model->n_params);
    if ((s = db_step_done(db, st, "store model", err)) != MPQ_OK) goto done;
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db, "SELECT id FROM models WHERE sha256=?1", &sel, err)) != MPQ_OK) goto done;
    db_bind_text(sel, 1, model->sha256);
    if ((s = db_step_row(db, sel, "read model id", err, NULL)) != MPQ_OK) goto done;
    mid = sqlite3_column_int64(sel, 0);
    sqlite3_finalize(sel);
    sel = NULL;

    if ((s = db_prepare(db,
                        "INSERT INTO layers(model_id, name, hf_name, kind, block, rows, cols, n_params)"
                        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8)"
                        " ON CONFLICT(model_id, name) DO UPDATE SET hf_name=excluded.hf_name,"
                        " kind=excluded.kind, block=excluded.block, rows=excluded.rows,"
                        " cols=excluded.cols, n_params=excluded.n_params",
                        &st, err)) != MPQ_OK)
        goto done;
    if ((s = db_prepare(db, "SELECT id FROM layers WHERE model_id=?1 AND name=?2", &sel, err)) != MPQ_OK)
        goto done;
    for (int i = 0; i < n_layers; i++) {
        const mpq_db_layer *l = &layers[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, mid);
        db_bind_field(st, 2, l->name, sizeof l->name);
        db_bind_field(st, 3, l->hf_name, sizeof l->hf_name);
        db_bind_field(st, 4, l->kind, sizeof l->kind);
        sqlite3_bind_int(st, 5, l->block);
        sqlite3_bind_int64(st, 6, l->rows);
        sqlite3_bind_int64(st, 7, l->cols);
        sqlite3_bind_int64(st, 8, l->n_params);
        if (sqlite3_step(st) != SQLITE_DONE) {
            char what[MPQ_DB_NAME_MAX + 32];
            snprintf(what, sizeof what, "store layer %.*s", db_field_len(l->name, sizeof l->name), l->name);
            s = db_fail(db, err, what);
            goto done;
        }
        if (layer_ids) {
            sqlite3_reset(sel);
            sqlite3_bind_int64(sel, 1, mid);
            db_bind_field(sel, 2, l->name, sizeof l->name);
            if (sqlite3_step(sel) != SQLITE_ROW) {
                s = db_fail(db, err, "read layer id");
                goto done;
            }
            layer_ids[i] = sqlite3_column_int64(sel, 0);
        }
    }
done:
    sqlite3_finalize(st);
    sqlite3_finalize(sel);
    s = tx_finish(db, opened, s, err);
    if (s == MPQ_OK && model_id) *model_id = mid;
    return s;
}

mpq_status mpq_db_layers_fetch(mpq_db *db, int64_t model_id, mpq_db_layer **out, int *n_out,
                               mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s = MPQ_OK;
    mpq_db_layer *arr = NULL;
    int n = 0, cap = 0, rc;
    *out = NULL;
    *n_out = 0;
    if ((s = db_prepare(db,
                        "SELECT id, name, hf_name, kind, block, rows, cols, n_params FROM layers"
                        " WHERE model_id=?1 ORDER BY id",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, model_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((s = db_grow(db, &arr, n, &cap, 64, sizeof *arr, "layers", err)) != MPQ_OK) goto done;
        mpq_db_layer *l = &arr[n++];
        memset(l, 0, sizeof *l);
        l->id = sqlite3_column_int64(st, 0);
        db_col_text(st, 1, l->name, sizeof l->name);
        db_col_text(st, 2, l->hf_name, sizeof l->hf_name);
        db_col_text(st, 3, l->kind, sizeof l->kind);
        l->block = sqlite3_column_int(st, 4);
        l->rows = sqlite3_column_int64(st, 5);
        l->cols = sqlite3_column_int64(st, 6);
        l->n_params = sqlite3_column_int64(st, 7);
    }
    if (rc != SQLITE_DONE) s = db_fail(db, err, "read layers");
done:
    sqlite3_finalize(st);
    if (s != MPQ_OK) {
        free(arr);
        return s;
    }
    *out = arr;
    *n_out = n;
    return MPQ_OK;
}

mpq_status mpq_db_model_get(mpq_db *db, int64_t model_id, mpq_db_model_row *out, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_model_get: NULL argument");
    if ((s = db_prepare(db,
                        "SELECT id, path, sha256, arch, format, dtype, dim, hidden_dim, n_layers, n_heads,"
                        " n_kv_heads, vocab_size, seq_len, n_params FROM models WHERE id=?1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, model_id);
    s = db_step_row(db, st, "read model", err, "no model with id %lld", (long long)model_id);
    if (s == MPQ_OK) {
        memset(out, 0, sizeof *out);
        out->id = sqlite3_column_int64(st, 0);
        db_col_text(st, 1, out->path, sizeof out->path);
        db_col_text(st, 2, out->sha256, sizeof out->sha256);
        db_col_text(st, 3, out->arch, sizeof out->arch);
        db_col_text(st, 4, out->format, sizeof out->format);
        db_col_text(st, 5, out->dtype, sizeof out->dtype);
        int *ints[7] = {&out->dim, &out->hidden_dim, &out->n_layers, &out->n_heads, &out->n_kv_heads,
                        &out->vocab_size, &out->seq_len};
        for (int i = 0; i < 7; i++) *ints[i] = sqlite3_column_int(st, 6 + i);
        out->n_params = sqlite3_column_int64(st, 13);
    }
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_layer_find(mpq_db *db, int64_t model_id, const char *name, int64_t *layer_id,
                             mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!name) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: layer_find: NULL name", db->path);
    /* Accept "x.weight" as well as "x". */
    size_t len = strlen(name);
    int blen = (int)len;
    if (len > 7 && strcmp(name + len - 7, ".weight") == 0) blen -= 7;
    if ((s = db_prepare(db,
                        "SELECT id FROM layers WHERE model_id=?1 AND (name=?2 OR hf_name=?2)"
                        " ORDER BY (name=?2) DESC LIMIT 1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, model_id);
    sqlite3_bind_text(st, 2, name, blen, SQLITE_TRANSIENT);
    s = db_step_row(db, st, "find layer", err, "model %lld has no layer '%s'", (long long)model_id,
                    name);
    if (s == MPQ_OK) {
        *layer_id = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_dataset_upsert(mpq_db *db, const mpq_db_dataset *ds, int64_t *dataset_id,
                                 mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s = MPQ_OK;
    int opened = 0;
    if (!ds || !ds->sha256 || !*ds->sha256)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: dataset without sha256", db->path);
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    if ((s = db_prepare(db,
                        "INSERT INTO datasets(path, sha256, n_tokens, seq_len, n_seqs, seed)"
                        " VALUES(?1,?2,?3,?4,?5,?6) ON CONFLICT(sha256, seq_len, n_seqs, seed)"
                        " DO UPDATE SET path=excluded.path, n_tokens=excluded.n_tokens",
                        &st, err)) != MPQ_OK)
        goto done;
    db_bind_text(st, 1, ds->path);
    db_bind_text(st, 2, ds->sha256);
    sqlite3_bind_int64(st, 3, ds->n_tokens);
    sqlite3_bind_int(st, 4, ds->seq_len);
    sqlite3_bind_int64(st, 5, ds->n_seqs);
    sqlite3_bind_int64(st, 6, ds->seed);
    if ((s = db_step_done(db, st, "store dataset", err)) != MPQ_OK) goto done;
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db,
                        "SELECT id FROM datasets WHERE sha256=?1 AND seq_len=?2 AND n_seqs=?3 AND seed=?4",
                        &st, err)) != MPQ_OK)
        goto done;
    db_bind_text(st, 1, ds->sha256);
    sqlite3_bind_int(st, 2, ds->seq_len);
    sqlite3_bind_int64(st, 3, ds->n_seqs);
    sqlite3_bind_int64(st, 4, ds->seed);
    if ((s = db_step_row(db, st, "read dataset id", err, NULL)) != MPQ_OK) goto done;
    if (dataset_id) *dataset_id = sqlite3_column_int64(st, 0);
done:
    sqlite3_finalize(st);
    s = tx_finish(db, opened, s, err);
    return s;
}

/* ---- jobs --------------------------------------------------------------------------- */

static const char *const job_status_names[] = {"created", "running", "done", "failed", "interrupted"};

const char *mpq_db_job_status_name(mpq_db_job_status s) {
    if ((int)s < 0 || (int)s >= (int)(sizeof job_status_names / sizeof job_status_names[0]))
        return "unknown";
    return job_status_names[s];
}

static mpq_db_job_status job_status_parse(const char *t) {
    for (int i = 0; i < (int)(sizeof job_status_names / sizeof job_status_names[0]); i++)
        if (t && strcmp(t, job_status_names[i]) == 0) return (mpq_db_job_status)i;
    return MPQ_DB_JOB_FAILED;
}

mpq_status mpq_db_job_create(mpq_db *db, const char *name, const char *spec_json, int64_t model_id,
                             int64_t dataset_id, int64_t seed, int64_t *job_id, bool *existed,
                             mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s = MPQ_OK;
    int opened = 0;
    char sha[65];
    if (existed) *existed = false;
    if (!db || !name || !*name || !spec_json)
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_job_create: missing name or spec");
    mpq_sha256(spec_json, strlen(spec_json), sha);
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    if ((s = db_prepare(db, "SELECT id, spec_sha256 FROM jobs WHERE name=?1", &st, err)) != MPQ_OK)
        goto done;
    db_bind_text(st, 1, name);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *old = (const char *)sqlite3_column_text(st, 1);
        if (!old || strcmp(old, sha) != 0) {
            s = mpq_err_set(err, MPQ_ERR_INVALID,
                            "%s: job '%s' exists with a different spec (stored spec sha256 %.12s..., "
                            "new %.12s...); choose another name or delete the job",
                            db->path, name, old ? old : "", sha);
            goto done;
        }
        if (job_id) *job_id = sqlite3_column_int64(st, 0);
        if (existed) *existed = true;
        goto done;
    }
    if (rc != SQLITE_DONE) {
        s = db_fail(db, err, "find job");
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db,
                        "INSERT INTO jobs(name, spec_json, spec_sha256, model_id, dataset_id, status,"
                        " mpq_version, seed) VALUES(?1,?2,?3,?4,?5,'created',?6,?7)",
                        &st, err)) != MPQ_OK)
        goto done;
    db_bind_text(st, 1, name);
    db_bind_text(st, 2, spec_json);
    db_bind_text(st, 3, sha);
    sqlite3_bind_int64(st, 4, model_id);
    db_bind_id(st, 5, dataset_id);
    sqlite3_bind_text(st, 6, mpq_version(), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, seed);
    if (sqlite3_step(st) != SQLITE_DONE) {
        char what[MPQ_DB_NAME_MAX + 32];
        snprintf(what, sizeof what, "create job '%.*s'", MPQ_DB_NAME_MAX, name);
        s = db_fail(db, err, what);
        goto done;
    }
    if (job_id) *job_id = sqlite3_last_insert_rowid(db->h);
done:
    sqlite3_finalize(st);
    s = tx_finish(db, opened, s, err);
    return s;
}

mpq_status mpq_db_job_set_status(mpq_db *db, int64_t job_id, mpq_db_job_status status,
                                 mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if ((int)status < 0 || (int)status > MPQ_DB_JOB_INTERRUPTED)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: job %lld: invalid status %d", db->path,
                           (long long)job_id, (int)status);
    if ((s = db_prepare(db,
                        "UPDATE jobs SET status=?2, updated_at=" TS_SQL ","
                        " finished_at=CASE WHEN ?2 IN ('done','failed') THEN " TS_SQL
                        " WHEN ?2 IN ('created','running') THEN NULL ELSE finished_at END"
                        " WHERE id=?1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_text(st, 2, mpq_db_job_status_name(status), -1, SQLITE_STATIC);
    s = db_step_change(db, st, "set job status", "job", job_id, err);
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_job_get(mpq_db *db, int64_t job_id, mpq_db_job *out, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT j.id, j.name, j.spec_sha256, j.model_id, j.dataset_id, %s, j.created_at,"
             " j.updated_at, j.finished_at, j.mpq_version, j.seed FROM jobs j WHERE j.id=?1",
             db_job_status_sql(db));
    if ((s = db_prepare(db, sql, &st, err)) != MPQ_OK) return s;
    sqlite3_bind_int64(st, 1, job_id);
    s = db_step_row(db, st, "read job", err, "no job with id %lld", (long long)job_id);
    if (s == MPQ_OK) {
        memset(out, 0, sizeof *out);
        out->id = sqlite3_column_int64(st, 0);
        db_col_text(st, 1, out->name, sizeof out->name);
        db_col_text(st, 2, out->spec_sha256, sizeof out->spec_sha256);
        out->model_id = sqlite3_column_int64(st, 3);
        out->dataset_id = sqlite3_column_int64(st, 4);
        out->status = job_status_parse((const char *)sqlite3_column_text(st, 5));
        db_col_text(st, 6, out->created_at, sizeof out->created_at);
        db_col_text(st, 7, out->updated_at, sizeof out->updated_at);
        db_col_text(st, 8, out->finished_at, sizeof out->finished_at);
        db_col_text(st, 9, out->mpq_version, sizeof out->mpq_version);
        out->seed = sqlite3_column_int64(st, 10);
    }
    sqlite3_finalize(st);
    return s;
}

mpq_status db_job_resolve(mpq_db *db, const char *name_or_id, int64_t *job_id, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!name_or_id || !*name_or_id)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: no job name given", db->path);
    if ((s = db_prepare(db, "SELECT id FROM jobs WHERE name=?1 UNION ALL SELECT id FROM jobs WHERE"
                            " ?1 NOT GLOB '*[^0-9]*' AND id=CAST(?1 AS INTEGER) LIMIT 1",
                        &st, err)) != MPQ_OK)
        return s;
    db_bind_text(st, 1, name_or_id);
    s = db_step_row(db, st, "find job", err, "no job named '%s'", name_or_id);
    if (s == MPQ_OK) *job_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_job_find(mpq_db *db, const char *name_or_id, mpq_db_job *out, mpq_err *err) {
    int64_t id = 0;
    mpq_status s = db_job_resolve(db, name_or_id, &id, err);
    if (s != MPQ_OK) return s;
    return mpq_db_job_get(db, id, out, err);
}

mpq_status mpq_db_job_spec(mpq_db *db, int64_t job_id, char **out, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    bool oom = false;
    *out = NULL;
    if ((s = db_prepare(db, "SELECT spec_json FROM jobs WHERE id=?1", &st, err)) != MPQ_OK) return s;
    sqlite3_bind_int64(st, 1, job_id);
    s = db_step_row(db, st, "read job spec", err, "no job with id %lld", (long long)job_id);
    if (s == MPQ_OK) {
        *out = db_col_strdup(st, 0, &oom);
        if (oom) s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: job %lld spec: out of memory", db->path,
                                 (long long)job_id);
    }
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_job_delete(mpq_db *db, int64_t job_id, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    int opened = 0;
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    if ((s = db_prepare(db, "DELETE FROM jobs WHERE id=?1", &st, err)) != MPQ_OK) goto done;
    sqlite3_bind_int64(st, 1, job_id);
    s = db_step_change(db, st, "delete job", "job", job_id, err);
done:
    sqlite3_finalize(st);
    s = tx_finish(db, opened, s, err);
    return s;
}

/* ---- units -------------------------------------------------------------------------- */

mpq_status mpq_db_unit_ensure(mpq_db *db, int64_t job_id, const char *stage, const char *key,
                              int64_t *unit_id, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!stage || !*stage || !key)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: job %lld: unit needs a stage and a key", db->path,
                           (long long)job_id);
    if ((s = db_prepare(db,
                        "INSERT INTO units(job_id, stage, key) VALUES(?1,?2,?3)"
                        " ON CONFLICT(job_id, stage, key) DO NOTHING",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, stage);
    db_bind_text(st, 3, key);
    if ((s = db_step_done(db, st, "create unit", err)) != MPQ_OK) goto done;
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db, "SELECT id FROM units WHERE job_id=?1 AND stage=?2 AND key=?3", &st, err)) !=
        MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, stage);
    db_bind_text(st, 3, key);
    if ((s = db_step_row(db, st, "read unit id", err, NULL)) != MPQ_OK) goto done;
    if (unit_id) *unit_id = sqlite3_column_int64(st, 0);
done:
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_unit_start(mpq_db *db, int64_t unit_id, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if ((s = db_prepare(db,
                        "UPDATE units SET attempts=attempts+1, started_at=" TS_SQL ", error=NULL"
                        " WHERE id=?1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, unit_id);
    s = db_step_change(db, st, "start unit", "unit", unit_id, err);
    sqlite3_finalize(st);
    return s;
}

static mpq_status check_rows(mpq_db *db, const mpq_db_metric *rows, int n_rows, mpq_err *err) {
    if (n_rows < 0 || (n_rows > 0 && !rows))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: metric rows: bad count %d", db->path, n_rows);
    for (int i = 0; i < n_rows; i++) {
        if (!rows[i].metric || !*rows[i].metric)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: metric row %d has no metric name", db->path, i);
        if (isnan(rows[i].value))
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: metric row %d (%s): value is NaN", db->path, i,
                               rows[i].metric);
        if (rows[i].layer_id < 0 || rows[i].n < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: metric row %d (%s): negative layer id or n",
                               db->path, i, rows[i].metric);
    }
    return MPQ_OK;
}

/* Inserts rows (caller holds the transaction). */
static mpq_status insert_rows(mpq_db *db, int64_t job_id, int64_t unit_id, const mpq_db_metric *rows,
                              int n_rows, mpq_err *err) {
    mpq_status s = MPQ_OK;
    if (!db->st_metric_insert &&
        (s = db_prepare(db,
                        "INSERT OR REPLACE INTO metrics(job_id, layer_id, candidate, metric, value,"
                        " stderr, n, unit_id, provenance_json) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                        &db->st_metric_insert, err)) != MPQ_OK)
        return s;
    sqlite3_stmt *st = db->st_metric_insert;
    for (int i = 0; i < n_rows; i++) {
        const mpq_db_metric *r = &rows[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, job_id);
        db_bind_id(st, 2, r->layer_id);
        sqlite3_bind_text(st, 3, r->candidate ? r->candidate : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, r->metric, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 5, r->value);
        db_bind_real(st, 6, r->se);
        db_bind_id(st, 7, r->n);
        db_bind_id(st, 8, unit_id);
        db_bind_text(st, 9, r->provenance_json);
        if (sqlite3_step(st) != SQLITE_DONE) {
            char what[3 * MPQ_DB_NAME_MAX];
            snprintf(what, sizeof what, "job %lld: metric row %d (%.*s, layer %lld, candidate '%.*s')",
                     (long long)job_id, i, MPQ_DB_NAME_MAX, r->metric, (long long)r->layer_id,
                     MPQ_DB_NAME_MAX, r->candidate ? r->candidate : "");
            s = db_fail(db, err, what);
            break;
        }
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return s;
}

mpq_status mpq_db_unit_commit(mpq_db *db, int64_t unit_id, const mpq_db_metric *rows, int n_rows,
                              mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    int opened = 0;
    int64_t job_id = 0;
    if ((s = check_rows(db, rows, n_rows, err)) != MPQ_OK) return s;
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    if ((s = db_prepare(db, "SELECT job_id, status, stage, key FROM units WHERE id=?1", &st, err)) !=
        MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, unit_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        s = mpq_err_set(err, MPQ_ERR_NOTFOUND, "%s: no unit with id %lld", db->path, (long long)unit_id);
        goto done;
    }
    if (rc != SQLITE_ROW) {
        s = db_fail(db, err, "read unit");
        goto done;
    }
    job_id = sqlite3_column_int64(st, 0);
    const char *status = (const char *)sqlite3_column_text(st, 1);
    if (status && strcmp(status, "done") == 0) {
        s = mpq_err_set(err, MPQ_ERR_INVALID, "%s: unit %lld (%s/%s) is already done", db->path,
                        (long long)unit_id, (const char *)sqlite3_column_text(st, 2),
                        (const char *)sqlite3_column_text(st, 3));
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((s = insert_rows(db, job_id, unit_id, rows, n_rows, err)) != MPQ_OK) {
        mpq_err_prefix(err, "unit %lld", (long long)unit_id);
        goto done;
    }
    if ((s = db_prepare(db,
                        "UPDATE units SET status='done', finished_at=" TS_SQL ", error=NULL,"
                        " seconds=CASE WHEN started_at IS NULL THEN NULL"
                        " ELSE MAX(0.0, (julianday('now') - julianday(started_at)) * 86400.0) END"
                        " WHERE id=?1",
                        &st, err)) != MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, unit_id);
    if (sqlite3_step(st) != SQLITE_DONE) s = db_fail(db, err, "mark unit done");
done:
    sqlite3_finalize(st);
    s = tx_finish(db, opened, s, err);
    return s;
}

mpq_status mpq_db_unit_fail(mpq_db *db, int64_t unit_id, const char *message, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if ((s = db_prepare(db,
                        "UPDATE units SET status='failed', finished_at=" TS_SQL ", error=?2"
                        " WHERE id=?1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, unit_id);
    db_bind_text(st, 2, message);
    s = db_step_change(db, st, "mark unit failed", "unit", unit_id, err);
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_units_retry_failed(mpq_db *db, int64_t job_id, const char *stage, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if ((s = db_prepare(db,
                        "UPDATE units SET status='pending', finished_at=NULL WHERE job_id=?1"
                        " AND (?2 IS NULL OR stage=?2) AND status='failed'",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, stage);
    if (sqlite3_step(st) != SQLITE_DONE) s = db_fail(db, err, "retry failed units");
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_units_pending(mpq_db *db, int64_t job_id, const char *stage, mpq_db_unit **out,
                                int *n_out, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    mpq_db_unit *arr = NULL;
    int n = 0, cap = 0, rc;
    *out = NULL;
    *n_out = 0;
    if ((s = db_prepare(db,
                        "SELECT id, job_id, stage, key, attempts FROM units WHERE job_id=?1"
                        " AND (?2 IS NULL OR stage=?2) AND status='pending' ORDER BY id",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, stage);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((s = db_grow(db, &arr, n, &cap, 64, sizeof *arr, "pending units", err)) != MPQ_OK) goto done;
        mpq_db_unit *u = &arr[n++];
        memset(u, 0, sizeof *u);
        u->id = sqlite3_column_int64(st, 0);
        u->job_id = sqlite3_column_int64(st, 1);
        db_col_text(st, 2, u->stage, sizeof u->stage);
        db_col_text(st, 3, u->key, sizeof u->key);
        u->status = MPQ_DB_UNIT_PENDING;
        u->attempts = sqlite3_column_int(st, 4);
    }
    if (rc != SQLITE_DONE) s = db_fail(db, err, "read pending units");
done:
    sqlite3_finalize(st);
    if (s != MPQ_OK) {
        free(arr);
        return s;
    }
    *out = arr;
    *n_out = n;
    return MPQ_OK;
}

mpq_status mpq_db_units_count(mpq_db *db, int64_t job_id, const char *stage, int64_t *n_done,
                              int64_t *n_total, int64_t *n_failed, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if ((s = db_prepare(db,
                        "SELECT COALESCE(SUM(status='done'),0), COUNT(*), COALESCE(SUM(status='failed'),0)"
                        " FROM units WHERE job_id=?1 AND (?2 IS NULL OR stage=?2)",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, stage);
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (n_done) *n_done = sqlite3_column_int64(st, 0);
        if (n_total) *n_total = sqlite3_column_int64(st, 1);
        if (n_failed) *n_failed = sqlite3_column_int64(st, 2);
    } else {
        s = db_fail(db, err, "count units");
    }
    sqlite3_finalize(st);
    return s;
}

/* ---- metrics ------------------------------------------------------------------------ */

mpq_status mpq_db_metric_put(mpq_db *db, int64_t job_id, int64_t unit_id, const mpq_db_metric *rows,
                             int n_rows, mpq_err *err) {
    mpq_status s;
    int opened = 0;
    if ((s = check_rows(db, rows, n_rows, err)) != MPQ_OK) return s;
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    s = insert_rows(db, job_id, unit_id, rows, n_rows, err);
    mpq_status e = tx_end(db, opened, s == MPQ_OK, err);
    return s != MPQ_OK ? s : e;
}

#define METRIC_SELECT \
    "SELECT value, stderr, n FROM metrics WHERE job_id=?1 AND metric=?2 AND candidate=?3" \
    " AND COALESCE(layer_id, 0)=?4"

mpq_status mpq_db_metric_get(mpq_db *db, int64_t job_id, int64_t layer_id, const char *candidate,
                             const char *metric, double *value, double *se, int64_t *n,
                             mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!metric) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: metric_get: NULL metric", db->path);
    if ((s = db_prepare(db, METRIC_SELECT, &st, err)) != MPQ_OK) return s;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_text(st, 2, metric, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, candidate ? candidate : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, layer_id > 0 ? layer_id : 0);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (value) *value = sqlite3_column_double(st, 0);
        if (se) *se = db_col_real(st, 1);
        if (n) *n = sqlite3_column_int64(st, 2);
    } else if (rc == SQLITE_DONE) {
        s = mpq_err_set(err, MPQ_ERR_NOTFOUND, "%s: job %lld has no metric '%s' (layer %lld, candidate '%s')",
                        db->path, (long long)job_id, metric, (long long)layer_id,
                        candidate ? candidate : "");
    } else {
        s = db_fail(db, err, "read metric");
    }
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_metric_fetch(mpq_db *db, int64_t job_id, const char *metric, const char *candidate,
                               int n, const int64_t *layer_ids, double *value, double *se,
                               int *n_found, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    int found = 0;
    if (!metric || n < 0 || (n > 0 && (!layer_ids || !value)))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: metric_fetch: bad arguments", db->path);
    if ((s = db_prepare(db, METRIC_SELECT, &st, err)) != MPQ_OK) return s;
    for (int i = 0; i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, job_id);
        sqlite3_bind_text(st, 2, metric, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, candidate ? candidate : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 4, layer_ids[i] > 0 ? layer_ids[i] : 0);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            value[i] = sqlite3_column_double(st, 0);
            if (se) se[i] = db_col_real(st, 1);
            found++;
        } else if (rc == SQLITE_DONE) {
            value[i] = NAN;
            if (se) se[i] = NAN;
        } else {
            s = db_fail(db, err, "read metrics");
            break;
        }
    }
    sqlite3_finalize(st);
    if (s == MPQ_OK && n_found) *n_found = found;
    return s;
}

void mpq_db_strings_free(char **s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

mpq_status mpq_db_metric_candidates(mpq_db *db, int64_t job_id, const char *metric, char ***out,
                                    int *n_out, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    char **arr = NULL;
    int n = 0, cap = 0, rc;
    bool oom = false;
    *out = NULL;
    *n_out = 0;
    if ((s = db_prepare(db,
                        "SELECT DISTINCT candidate FROM metrics WHERE job_id=?1 AND metric=?2"
                        " ORDER BY candidate",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, metric);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((s = db_grow(db, &arr, n, &cap, 16, sizeof *arr, "candidates", err)) != MPQ_OK) break;
        arr[n] = db_col_strdup(st, 0, &oom);
        if (oom) break;
        n++;
    }
    if (s == MPQ_OK && oom)
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: candidates: out of memory", db->path);
    else if (s == MPQ_OK && rc != SQLITE_DONE)
        s = db_fail(db, err, "read candidates");
    sqlite3_finalize(st);
    if (s != MPQ_OK) {
        mpq_db_strings_free(arr, n);
        return s;
    }
    *out = arr;
    *n_out = n;
    return MPQ_OK;
}
