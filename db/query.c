/*
 * query.c - read-only SQL for `mpq query --sql` and the canned reports of `mpq query`.
 * Reference: SQLite authorizer (https://sqlite.org/c3ref/set_authorizer.html) and
 * sqlite3_stmt_readonly (https://sqlite.org/c3ref/stmt_readonly.html).
 *
 * A statement is accepted only if (1) the authorizer allows every action while it is
 * prepared: SELECT, reads, functions, recursive CTEs and a list of read-only PRAGMAs
 * (no assignment) — everything else (INSERT/UPDATE/DELETE, CREATE/DROP/ALTER, ATTACH/
 * DETACH, BEGIN/COMMIT/SAVEPOINT, PRAGMA x=y, ...) is denied — and (2)
 * sqlite3_stmt_readonly() is true. All statements of the text are checked before the
 * first one runs.
 */
#include "db/db_private.h"

#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* PRAGMAs that only read, with or without an argument (the argument names an object). */
static const char *const pragma_read_arg[] = {
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "integrity_check", "quick_check", "foreign_key_check",
};
/* PRAGMAs that read when given no argument (and would set something with one). */
static const char *const pragma_read_noarg[] = {
    "journal_mode", "user_version", "schema_version", "page_size", "page_count", "freelist_count",
    "foreign_keys", "encoding", "compile_options", "database_list", "table_list", "function_list",
    "collation_list", "application_id", "busy_timeout", "synchronous", "data_version",
};

static int in_list(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (name && sqlite3_stricmp(name, list[i]) == 0) return 1;
    return 0;
}

/* What the authorizer saw while one statement was prepared. */
typedef struct auth_state {
    int n_pragma_noarg; /* allowed value-less PRAGMAs (SQLite marks e.g. journal_mode as
                           not read-only even when it only reports) */
} auth_state;

static int authorizer(void *ud, int action, const char *a, const char *b, const char *c,
                      const char *d) {
    auth_state *as = ud;
    (void)c;
    (void)d;
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_UPDATE:
        /* Table-valued PRAGMA functions (pragma_table_info('x')) report column checks on
         * sqlite_master while they are set up; sqlite3_stmt_readonly() still has to hold. */
        if (a && (sqlite3_stricmp(a, "sqlite_master") == 0 || sqlite3_stricmp(a, "sqlite_schema") == 0))
            return SQLITE_OK;
        return SQLITE_DENY;
    case SQLITE_PRAGMA:
        if (in_list(a, pragma_read_arg, sizeof pragma_read_arg / sizeof pragma_read_arg[0]))
            return SQLITE_OK;
        if (!b && in_list(a, pragma_read_noarg, sizeof pragma_read_noarg / sizeof pragma_read_noarg[0])) {
            as->n_pragma_noarg++;
            return SQLITE_OK;
        }
        return SQLITE_DENY;
    default:
        return SQLITE_DENY;
    }
}

typedef int (*stmt_start_fn)(void *ud, int n_cols, const char *const *names);

/* Prepares the next statement of *sql under the authorizer; *st NULL at the end (or for
 * whitespace/comments). Returns MPQ_ERR_INVALID for refused or malformed statements. */
static mpq_status prepare_checked(mpq_db *db, const char **sql, sqlite3_stmt **st, int idx,
                                  mpq_err *err) {
    const char *tail = NULL;
    auth_state as = {0};
    *st = NULL;
    sqlite3_set_authorizer(db->h, authorizer, &as);
    int rc = sqlite3_prepare_v2(db->h, *sql, -1, st, &tail);
    sqlite3_set_authorizer(db->h, NULL, NULL);
    if (rc != SQLITE_OK) {
        int prim = rc & 0xff;
        mpq_status s = (prim == SQLITE_AUTH || prim == SQLITE_ERROR) ? MPQ_ERR_INVALID : MPQ_ERR_DB;
        mpq_err_set(err, s, "%s: query statement %d refused: %s%s", db->path, idx + 1,
                    sqlite3_errmsg(db->h),
                    prim == SQLITE_AUTH ? " (only read-only statements are allowed)" : "");
        sqlite3_finalize(*st);
        *st = NULL;
        return s;
    }
    if (*st && !sqlite3_stmt_readonly(*st) && as.n_pragma_noarg == 0) {
        sqlite3_finalize(*st);
        *st = NULL;
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: query statement %d refused: it would write (only read-only statements "
                           "are allowed)",
                           db->path, idx + 1);
    }
    *sql = tail;
    return MPQ_OK;
}

/* Runs one prepared statement, calling start once and fn for every row. */
static mpq_status run_stmt(mpq_db *db, sqlite3_stmt *st, stmt_start_fn start, mpq_db_row_fn fn,
                           void *ud, bool *stopped, mpq_err *err) {
    mpq_status s = MPQ_OK;
    int n = sqlite3_column_count(st);
    const char **names = calloc((size_t)(n > 0 ? n : 1), sizeof *names);
    const char **vals = calloc((size_t)(n > 0 ? n : 1), sizeof *vals);
    mpq_db_type *types = calloc((size_t)(n > 0 ? n : 1), sizeof *types);
    char (*blobs)[40] = calloc((size_t)(n > 0 ? n : 1), sizeof *blobs);
    int rc;
    if (!names || !vals || !types || !blobs) {
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: query: out of memory", db->path);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        names[i] = sqlite3_column_name(st, i);
        if (!names[i]) names[i] = "";
    }
    if (n > 0 && start && start(ud, n, names) != 0) {
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: query: out of memory", db->path);
        goto done;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < n; i++) {
            int t = sqlite3_column_type(st, i);
            switch (t) {
            case SQLITE_INTEGER: types[i] = MPQ_DB_TYPE_INTEGER; break;
            case SQLITE_FLOAT: types[i] = MPQ_DB_TYPE_REAL; break;
            case SQLITE_TEXT: types[i] = MPQ_DB_TYPE_TEXT; break;
            case SQLITE_BLOB: types[i] = MPQ_DB_TYPE_BLOB; break;
            default: types[i] = MPQ_DB_TYPE_NULL; break;
            }
            if (t == SQLITE_BLOB) {
                snprintf(blobs[i], sizeof blobs[i], "<blob %d bytes>", sqlite3_column_bytes(st, i));
                vals[i] = blobs[i];
            } else if (t == SQLITE_FLOAT && isfinite(sqlite3_column_double(st, i))) {
                /* the shortest of %.15g..%.17g that reads back as the same double (SQLite's own
                 * text conversion keeps 15 digits) */
                const double v = sqlite3_column_double(st, i);
                for (int prec = 15; prec <= 17; prec++) {
                    snprintf(blobs[i], sizeof blobs[i], "%.*g", prec, v);
                    if (strtod(blobs[i], NULL) == v) break;
                }
                vals[i] = blobs[i];
            } else {
                vals[i] = (const char *)sqlite3_column_text(st, i);
                if (!vals[i] && t != SQLITE_NULL) {
                    s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: query: out of memory", db->path);
                    goto done;
                }
            }
        }
        if (fn && fn(ud, n, names, vals, types) != 0) {
            *stopped = true;
            goto done;
        }
    }
    if (rc != SQLITE_DONE) s = db_fail(db, err, "query");
done:
    free(names);
    free(vals);
    free(types);
    free(blobs);
    return s;
}

static mpq_status run_readonly(mpq_db *db, const char *sql, stmt_start_fn start, mpq_db_row_fn fn,
                               void *ud, mpq_err *err) {
    mpq_status s = MPQ_OK;
    sqlite3_stmt *st = NULL;
    if (!db || !sql) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_query: NULL handle or SQL");
    /* Pass 1: check every statement before anything runs. */
    const char *p = sql;
    int idx = 0, n_stmts = 0;
    while (p && *p) {
        if ((s = prepare_checked(db, &p, &st, idx, err)) != MPQ_OK) return s;
        if (!st) break; /* only whitespace / comments left */
        sqlite3_finalize(st);
        st = NULL;
        idx++;
        n_stmts++;
    }
    if (n_stmts == 0) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: query: no SQL statement", db->path);
    /* Pass 2: run them. */
    p = sql;
    bool stopped = false;
    for (idx = 0; idx < n_stmts && !stopped; idx++) {
        if ((s = prepare_checked(db, &p, &st, idx, err)) != MPQ_OK) return s;
        if (!st) break;
        s = run_stmt(db, st, start, fn, ud, &stopped, err);
        sqlite3_finalize(st);
        st = NULL;
        if (s != MPQ_OK) return s;
    }
    return MPQ_OK;
}

mpq_status mpq_db_query(mpq_db *db, const char *sql, mpq_db_row_fn fn, void *ud, mpq_err *err) {
    return run_readonly(db, sql, NULL, fn, ud, err);
}

/* ---- tables ------------------------------------------------------------------------- */

void mpq_db_table_free(mpq_db_table *t) {
    if (!t) return;
    if (t->names)
        for (int i = 0; i < t->n_cols; i++) free(t->names[i]);
    if (t->cells) {
        size_t n = (size_t)t->n_rows * (size_t)t->n_cols;
        for (size_t i = 0; i < n; i++) free(t->cells[i]);
    }
    free(t->names);
    free(t->cells);
    free(t->types);
    free(t);
}

typedef struct table_builder {
    mpq_db_table *t;
    int cap_rows;
    bool oom; /* set when tb_row stops for lack of memory */
} table_builder;

static char *dupstr(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* Starts a fresh table for a statement (the previous statement's rows are dropped). */
static int tb_start(void *ud, int n_cols, const char *const *names) {
    table_builder *b = ud;
    mpq_db_table *t = b->t;
    if (t->cells) {
        size_t n = (size_t)t->n_rows * (size_t)t->n_cols;
        for (size_t i = 0; i < n; i++) free(t->cells[i]);
    }
    if (t->names)
        for (int i = 0; i < t->n_cols; i++) free(t->names[i]);
    free(t->names);
    free(t->cells);
    free(t->types);
    memset(t, 0, sizeof *t);
    b->cap_rows = 0;
    t->names = calloc((size_t)n_cols, sizeof *t->names);
    if (!t->names) return 1;
    t->n_cols = n_cols;
    for (int i = 0; i < n_cols; i++)
        if (!(t->names[i] = dupstr(names[i]))) return 1;
    return 0;
}

static int tb_row_add(table_builder *b, int n_cols, const char *const *values,
                      const mpq_db_type *types);

static int tb_row(void *ud, int n_cols, const char *const *names, const char *const *values,
                  const mpq_db_type *types) {
    (void)names;
    table_builder *b = ud;
    if (tb_row_add(b, n_cols, values, types) != 0) {
        b->oom = true;
        return 1;
    }
    return 0;
}

static int tb_row_add(table_builder *b, int n_cols, const char *const *values,
                      const mpq_db_type *types) {
    mpq_db_table *t = b->t;
    if (n_cols != t->n_cols) return 1;
    if (t->n_rows == b->cap_rows) {
        int nc = b->cap_rows ? b->cap_rows * 2 : 32;
        size_t cells;
        if (!mpq_size_mul((size_t)nc, (size_t)n_cols, &cells)) return 1;
        char **ncl = realloc(t->cells, (cells ? cells : 1) * sizeof *ncl);
        if (!ncl) return 1;
        t->cells = ncl;
        mpq_db_type *nt = realloc(t->types, (cells ? cells : 1) * sizeof *nt);
        if (!nt) return 1;
        t->types = nt;
        b->cap_rows = nc;
    }
    size_t base = (size_t)t->n_rows * (size_t)n_cols;
    for (int i = 0; i < n_cols; i++) {
        t->types[base + (size_t)i] = types[i];
        t->cells[base + (size_t)i] = NULL;
    }
    t->n_rows++; /* counted first so that free() sees every allocated cell */
    for (int i = 0; i < n_cols; i++) {
        if (values[i] && !(t->cells[base + (size_t)i] = dupstr(values[i]))) return 1;
    }
    return 0;
}

static mpq_status table_new(mpq_db *db, mpq_db_table **out, mpq_err *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: query: out of memory", db->path);
    return MPQ_OK;
}

mpq_status mpq_db_query_table(mpq_db *db, const char *sql, mpq_db_table **out, mpq_err *err) {
    mpq_status s;
    table_builder b = {0};
    *out = NULL;
    if ((s = table_new(db, &b.t, err)) != MPQ_OK) return s;
    s = run_readonly(db, sql, tb_start, tb_row, &b, err);
    if (s == MPQ_OK && b.oom)
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: query: out of memory", db->path);
    if (s != MPQ_OK) {
        mpq_db_table_free(b.t);
        return s;
    }
    *out = b.t;
    return MPQ_OK;
}

/* ---- reports ------------------------------------------------------------------------ */

static const char *const report_sql[] = {
    /* JOBS */
    "SELECT j.id, j.name, %s AS status, m.path AS model, j.seed,"
    " (SELECT COUNT(*) FROM units u WHERE u.job_id=j.id AND u.status='done') AS units_done,"
    " (SELECT COUNT(*) FROM units u WHERE u.job_id=j.id) AS units_total,"
    " (SELECT COUNT(*) FROM units u WHERE u.job_id=j.id AND u.status='failed') AS units_failed,"
    " j.created_at, j.updated_at, j.finished_at, j.mpq_version"
    " FROM jobs j LEFT JOIN models m ON m.id=j.model_id WHERE ?1 IS NULL OR j.id=?1 ORDER BY j.id",
    /* LAYERS */
    "SELECT l.id, l.name, l.hf_name, l.kind, l.block, l.rows, l.cols, l.n_params"
    " FROM jobs j JOIN layers l ON l.model_id=j.model_id WHERE j.id=?1 ORDER BY l.id",
    /* SENSITIVITY */
    "SELECT COALESCE(l.name,'') AS layer, l.kind AS kind, l.block AS block, m.candidate, m.metric,"
    " m.value, m.stderr, m.n FROM metrics m LEFT JOIN layers l ON l.id=m.layer_id"
    " WHERE m.job_id=?1 ORDER BY m.metric, COALESCE(m.layer_id,0), m.candidate",
    /* PROGRESS */
    "SELECT stage, done, total, failed FROM v_job_progress WHERE job_id=?1 ORDER BY stage",
    /* SOLUTIONS */
    "SELECT id, name, solver, status, metric_expr, budgets_json, objective, bound, gap, seconds,"
    " created_at FROM solutions WHERE job_id=?1 ORDER BY id",
    /* EVALUATIONS */
    "SELECT e.id, s.name AS solution, d.path AS dataset, e.ppl, e.kl, e.kl_stderr, e.top1, e.ce,"
    " e.n_tokens, e.created_at FROM evaluations e LEFT JOIN solutions s ON s.id=e.solution_id"
    " LEFT JOIN datasets d ON d.id=e.dataset_id WHERE e.job_id=?1 ORDER BY e.id",
    /* FRONTIERS */
    "SELECT f.id AS frontier, f.resource, f.metric_expr, p.idx, p.cost, p.loss, s.name AS solution"
    " FROM frontiers f JOIN frontier_points p ON p.frontier_id=f.id"
    " LEFT JOIN solutions s ON s.id=p.solution_id WHERE f.job_id=?1 ORDER BY f.id, p.idx",
    /* UNAVAILABLE */
    "SELECT l.name AS layer, m.candidate, CASE WHEN json_valid(m.provenance_json)"
    " THEN json_extract(m.provenance_json, '$.reason') END AS reason"
    " FROM metrics m JOIN layers l ON l.id=m.layer_id"
    " WHERE m.job_id=?1 AND m.metric='unavailable' ORDER BY l.id, m.candidate",
};

mpq_status mpq_db_report_table(mpq_db *db, mpq_db_report report, const char *job, mpq_db_table **out,
                               mpq_err *err) {
    mpq_status s;
    sqlite3_stmt *st = NULL;
    table_builder b = {0};
    int64_t job_id = 0;
    bool stopped = false;
    *out = NULL;
    if ((int)report < 0 || (size_t)report >= sizeof report_sql / sizeof report_sql[0])
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: unknown report %d", db->path, (int)report);
    if (job && (s = db_job_resolve(db, job, &job_id, err)) != MPQ_OK) return s;
    if (!job && report != MPQ_DB_REPORT_JOBS)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: this report needs a job", db->path);
    if ((s = table_new(db, &b.t, err)) != MPQ_OK) return s;
    char sql[2048];
    if (report == MPQ_DB_REPORT_JOBS) /* the status as readers see it (lease.c) */
        snprintf(sql, sizeof sql, report_sql[report], db_job_status_sql(db));
    else
        snprintf(sql, sizeof sql, "%s", report_sql[report]);
    if ((s = db_prepare(db, sql, &st, err)) != MPQ_OK) goto done;
    db_bind_id(st, 1, job_id);
    s = run_stmt(db, st, tb_start, tb_row, &b, &stopped, err);
    if (s == MPQ_OK && stopped)
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: report: out of memory", db->path);
done:
    sqlite3_finalize(st);
    if (s != MPQ_OK) {
        mpq_db_table_free(b.t);
        return s;
    }
    *out = b.t;
    return MPQ_OK;
}
