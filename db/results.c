/*
 * results.c - solutions (+ per-layer assignments), Pareto frontiers, measured evaluations
 * and binary artifacts in the results database. Schema: db/schema.c.
 */
#include "db/db_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- solutions ---------------------------------------------------------------------- */

void mpq_db_solution_release(mpq_db_solution *s) {
    if (!s) return;
    free(s->metric_expr);
    free(s->budgets_json);
    free(s->config_json);
    s->metric_expr = s->budgets_json = s->config_json = NULL;
}

mpq_status mpq_db_solution_insert(mpq_db *db, const mpq_db_solution *sol, const mpq_db_assignment *a,
                                  int n_a, int64_t *solution_id, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s = MPQ_OK;
    int opened = 0;
    int64_t id = 0;
    if (!sol || db_field_len(sol->name, sizeof sol->name) == 0 || n_a < 0 || (n_a > 0 && !a))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: solution needs a name and assignments",
                           db->path);
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    if ((s = db_prepare(db, "DELETE FROM solutions WHERE job_id=?1 AND name=?2", &st, err)) != MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, sol->job_id);
    db_bind_field(st, 2, sol->name, sizeof sol->name);
    if ((s = db_step_done(db, st, "replace solution", err)) != MPQ_OK) goto done;
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db,
                        "INSERT INTO solutions(job_id, name, solver, metric_expr, budgets_json, status,"
                        " objective, bound, gap, seconds, config_json)"
                        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                        &st, err)) != MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, sol->job_id);
    db_bind_field(st, 2, sol->name, sizeof sol->name);
    db_bind_field(st, 3, sol->solver, sizeof sol->solver);
    db_bind_text(st, 4, sol->metric_expr);
    db_bind_text(st, 5, sol->budgets_json);
    db_bind_field(st, 6, sol->status, sizeof sol->status);
    db_bind_real(st, 7, sol->objective);
    db_bind_real(st, 8, sol->bound);
    db_bind_real(st, 9, sol->gap);
    db_bind_real(st, 10, sol->seconds);
    db_bind_text(st, 11, sol->config_json);
    if ((s = db_step_done(db, st, "store solution", err)) != MPQ_OK) goto done;
    id = sqlite3_last_insert_rowid(db->h);
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db,
                        "INSERT INTO assignments(solution_id, layer_id, candidate, kv_pair)"
                        " VALUES(?1,?2,?3,?4)",
                        &st, err)) != MPQ_OK)
        goto done;
    for (int i = 0; i < n_a; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, a[i].layer_id);
        db_bind_field(st, 3, a[i].candidate, sizeof a[i].candidate);
        db_bind_field(st, 4, a[i].kv_pair, sizeof a[i].kv_pair);
        if (sqlite3_step(st) != SQLITE_DONE) {
            char what[64];
            snprintf(what, sizeof what, "assignment %d (layer %lld)", i, (long long)a[i].layer_id);
            s = db_fail(db, err, what);
            goto done;
        }
    }
done:
    sqlite3_finalize(st);
    s = tx_finish(db, opened, s, err);
    if (s == MPQ_OK && solution_id) *solution_id = id;
    return s;
}

mpq_status mpq_db_solution_get(mpq_db *db, int64_t solution_id, mpq_db_solution *out,
                               mpq_db_assignment **a_out, int *n_a, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    bool oom = false;
    mpq_db_assignment *arr = NULL;
    int n = 0, cap = 0, rc;
    memset(out, 0, sizeof *out);
    if (a_out) *a_out = NULL;
    if (n_a) *n_a = 0;
    if ((s = db_prepare(db,
                        "SELECT id, job_id, name, solver, metric_expr, budgets_json, status, objective,"
                        " bound, gap, seconds, created_at, config_json FROM solutions WHERE id=?1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, solution_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        s = mpq_err_set(err, MPQ_ERR_NOTFOUND, "%s: no solution with id %lld", db->path,
                        (long long)solution_id);
        goto done;
    }
    if (rc != SQLITE_ROW) {
        s = db_fail(db, err, "read solution");
        goto done;
    }
    out->id = sqlite3_column_int64(st, 0);
    out->job_id = sqlite3_column_int64(st, 1);
    db_col_text(st, 2, out->name, sizeof out->name);
    db_col_text(st, 3, out->solver, sizeof out->solver);
    out->metric_expr = db_col_strdup(st, 4, &oom);
    out->budgets_json = db_col_strdup(st, 5, &oom);
    db_col_text(st, 6, out->status, sizeof out->status);
    out->objective = db_col_real(st, 7);
    out->bound = db_col_real(st, 8);
    out->gap = db_col_real(st, 9);
    out->seconds = db_col_real(st, 10);
    db_col_text(st, 11, out->created_at, sizeof out->created_at);
    out->config_json = db_col_strdup(st, 12, &oom);
    if (oom) {
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: solution %lld: out of memory", db->path,
                        (long long)solution_id);
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (!a_out) goto done;
    if ((s = db_prepare(db,
                        "SELECT a.layer_id, a.candidate, a.kv_pair, l.name FROM assignments a"
                        " JOIN layers l ON l.id=a.layer_id WHERE a.solution_id=?1 ORDER BY a.layer_id",
                        &st, err)) != MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, solution_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((s = db_grow(db, &arr, n, &cap, 64, sizeof *arr, "assignments", err)) != MPQ_OK) goto done;
        mpq_db_assignment *x = &arr[n++];
        memset(x, 0, sizeof *x);
        x->layer_id = sqlite3_column_int64(st, 0);
        db_col_text(st, 1, x->candidate, sizeof x->candidate);
        db_col_text(st, 2, x->kv_pair, sizeof x->kv_pair);
        db_col_text(st, 3, x->layer_name, sizeof x->layer_name);
    }
    if (rc != SQLITE_DONE) s = db_fail(db, err, "read assignments");
done:
    sqlite3_finalize(st);
    if (s != MPQ_OK) {
        free(arr);
        mpq_db_solution_release(out);
        return s;
    }
    if (a_out) {
        *a_out = arr;
        if (n_a) *n_a = n;
    }
    return MPQ_OK;
}

mpq_status mpq_db_solution_find(mpq_db *db, int64_t job_id, const char *name, int64_t *solution_id,
                                mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if ((s = db_prepare(db, "SELECT id FROM solutions WHERE job_id=?1 AND name=?2", &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, name);
    s = db_step_row(db, st, "find solution", err, "job %lld has no solution '%s'", (long long)job_id,
                    name ? name : "");
    if (s == MPQ_OK) *solution_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return s;
}

/* ---- frontiers ---------------------------------------------------------------------- */

mpq_status mpq_db_frontier_insert(mpq_db *db, int64_t job_id, const char *resource,
                                  const char *metric_expr, const mpq_db_frontier_point *pts, int n,
                                  int64_t *frontier_id, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    int opened = 0;
    int64_t id = 0;
    if (!resource || n < 0 || (n > 0 && !pts))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: frontier needs a resource and points", db->path);
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) return s;
    if ((s = db_prepare(db, "INSERT INTO frontiers(job_id, resource, metric_expr) VALUES(?1,?2,?3)", &st,
                        err)) != MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, resource);
    db_bind_text(st, 3, metric_expr);
    if ((s = db_step_done(db, st, "store frontier", err)) != MPQ_OK) goto done;
    id = sqlite3_last_insert_rowid(db->h);
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db,
                        "INSERT INTO frontier_points(frontier_id, idx, cost, loss, solution_id)"
                        " VALUES(?1,?2,?3,?4,?5)",
                        &st, err)) != MPQ_OK)
        goto done;
    for (int i = 0; i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int(st, 2, i);
        db_bind_real(st, 3, pts[i].cost);
        db_bind_real(st, 4, pts[i].loss);
        db_bind_id(st, 5, pts[i].solution_id);
        if (sqlite3_step(st) != SQLITE_DONE) {
            char what[48];
            snprintf(what, sizeof what, "frontier point %d", i);
            s = db_fail(db, err, what);
            goto done;
        }
    }
done:
    sqlite3_finalize(st);
    s = tx_finish(db, opened, s, err);
    if (s == MPQ_OK && frontier_id) *frontier_id = id;
    return s;
}

mpq_status mpq_db_frontier_latest(mpq_db *db, int64_t job_id, const char *resource,
                                  const char *metric_expr, int64_t *frontier_id, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if ((s = db_prepare(db,
                        "SELECT id FROM frontiers WHERE job_id=?1 AND (?2 IS NULL OR resource=?2)"
                        " AND (?3 IS NULL OR metric_expr=?3) ORDER BY id DESC LIMIT 1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, resource);
    db_bind_text(st, 3, metric_expr);
    s = db_step_row(db, st, "find frontier", err, "job %lld has no frontier for %s / %s",
                    (long long)job_id, resource ? resource : "any resource",
                    metric_expr ? metric_expr : "any metric");
    if (s == MPQ_OK) *frontier_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_frontier_points(mpq_db *db, int64_t frontier_id, mpq_db_frontier_point **out,
                                  int *n_out, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    mpq_db_frontier_point *arr = NULL;
    int n = 0, cap = 0, rc;
    *out = NULL;
    *n_out = 0;
    if ((s = db_prepare(db,
                        "SELECT cost, loss, solution_id FROM frontier_points WHERE frontier_id=?1"
                        " ORDER BY idx",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, frontier_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((s = db_grow(db, &arr, n, &cap, 64, sizeof *arr, "frontier points", err)) != MPQ_OK) goto done;
        arr[n].cost = db_col_real(st, 0);
        arr[n].loss = db_col_real(st, 1);
        arr[n].solution_id = sqlite3_column_int64(st, 2);
        n++;
    }
    if (rc != SQLITE_DONE) s = db_fail(db, err, "read frontier points");
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

/* ---- evaluations -------------------------------------------------------------------- */

mpq_status mpq_db_evaluation_insert(mpq_db *db, const mpq_db_evaluation *ev, int64_t *evaluation_id,
                                    mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!ev) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: NULL evaluation", db->path);
    if ((s = db_prepare(db,
                        "INSERT INTO evaluations(job_id, solution_id, config_json, dataset_id, ppl, kl,"
                        " kl_stderr, top1, ce, n_tokens) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, ev->job_id);
    db_bind_id(st, 2, ev->solution_id);
    db_bind_text(st, 3, ev->config_json);
    db_bind_id(st, 4, ev->dataset_id);
    db_bind_real(st, 5, ev->ppl);
    db_bind_real(st, 6, ev->kl);
    db_bind_real(st, 7, ev->kl_stderr);
    db_bind_real(st, 8, ev->top1);
    db_bind_real(st, 9, ev->ce);
    sqlite3_bind_int64(st, 10, ev->n_tokens);
    if (sqlite3_step(st) != SQLITE_DONE) s = db_fail(db, err, "store evaluation");
    else if (evaluation_id) *evaluation_id = sqlite3_last_insert_rowid(db->h);
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_evaluations_fetch(mpq_db *db, int64_t job_id, mpq_db_evaluation **out, int *n_out,
                                    mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    mpq_db_evaluation *arr = NULL;
    int n = 0, cap = 0, rc;
    bool oom = false;
    *out = NULL;
    *n_out = 0;
    if ((s = db_prepare(db,
                        "SELECT id, job_id, solution_id, dataset_id, config_json, ppl, kl, kl_stderr,"
                        " top1, ce, n_tokens, created_at FROM evaluations WHERE job_id=?1 ORDER BY id",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((s = db_grow(db, &arr, n, &cap, 16, sizeof *arr, "evaluations", err)) != MPQ_OK) break;
        mpq_db_evaluation *e = &arr[n++];
        memset(e, 0, sizeof *e);
        e->id = sqlite3_column_int64(st, 0);
        e->job_id = sqlite3_column_int64(st, 1);
        e->solution_id = sqlite3_column_int64(st, 2);
        e->dataset_id = sqlite3_column_int64(st, 3);
        e->config_json = db_col_strdup(st, 4, &oom);
        e->ppl = db_col_real(st, 5);
        e->kl = db_col_real(st, 6);
        e->kl_stderr = db_col_real(st, 7);
        e->top1 = db_col_real(st, 8);
        e->ce = db_col_real(st, 9);
        e->n_tokens = sqlite3_column_int64(st, 10);
        db_col_text(st, 11, e->created_at, sizeof e->created_at);
        if (oom) break;
    }
    if (s == MPQ_OK && oom)
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: evaluations: out of memory", db->path);
    else if (s == MPQ_OK && rc != SQLITE_DONE)
        s = db_fail(db, err, "read evaluations");
    sqlite3_finalize(st);
    if (s != MPQ_OK) {
        for (int i = 0; i < n; i++) free(arr[i].config_json);
        free(arr);
        return s;
    }
    *out = arr;
    *n_out = n;
    return MPQ_OK;
}

/* ---- artifacts ---------------------------------------------------------------------- */

mpq_status mpq_db_artifact_put(mpq_db *db, int64_t job_id, const char *name, const void *data,
                               size_t n, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!name || !*name || (n > 0 && !data))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: artifact needs a name and data", db->path);
    if (n > (size_t)0x7fffffff)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: artifact '%s': %zu bytes is too large for SQLite",
                           db->path, name, n);
    if ((s = db_prepare(db, "INSERT OR REPLACE INTO artifacts(job_id, name, blob) VALUES(?1,?2,?3)", &st,
                        err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, name);
    sqlite3_bind_blob(st, 3, n ? data : "", (int)n, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) s = db_fail(db, err, "store artifact");
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_artifact_get(mpq_db *db, int64_t job_id, const char *name, void **data, size_t *n,
                               mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    *data = NULL;
    *n = 0;
    if ((s = db_prepare(db, "SELECT blob FROM artifacts WHERE job_id=?1 AND name=?2", &st, err)) !=
        MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, name);
    s = db_step_row(db, st, "read artifact", err, "job %lld has no artifact '%s'", (long long)job_id,
                    name ? name : "");
    if (s == MPQ_OK) {
        const void *b = sqlite3_column_blob(st, 0);
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        void *buf = malloc(len ? len : 1);
        if (!buf) {
            s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: artifact '%s': out of memory", db->path, name);
        } else {
            if (len) memcpy(buf, b, len);
            *data = buf;
            *n = len;
        }
    }
    sqlite3_finalize(st);
    return s;
}
