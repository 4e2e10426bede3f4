/*
 * db_private.h - internals shared by the db/ files (the only code that includes sqlite3.h).
 * Not installed; not for other modules.
 */
#ifndef MPQ_DB_PRIVATE_H
#define MPQ_DB_PRIVATE_H

#include <sqlite3.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"

struct mpq_db {
    sqlite3 *h;
    char *path;
    int schema_version;
    bool readonly;
    sqlite3_stmt *st_metric_insert; /* cached hot-path statement (store.c), finalized on close */
};

/* mpq_db_migrations[v] takes version v to v+1: NULL-terminated list of SQL texts. */
extern const char *const *const mpq_db_migrations[];
extern const int mpq_db_n_migrations;

/* Sets err to "<path>: <what>: <sqlite errmsg>" with MPQ_ERR_DB; returns MPQ_ERR_DB. */
mpq_status db_fail(mpq_db *db, mpq_err *err, const char *what);
/* Prepares sql (MPQ_ERR_DB on failure). */
mpq_status db_prepare(mpq_db *db, const char *sql, sqlite3_stmt **st, mpq_err *err);
/* Runs sql statements without results. */
mpq_status db_exec(mpq_db *db, const char *sql, const char *what, mpq_err *err);
/* Binds helpers: NULL string -> SQL NULL; id 0 -> NULL; NaN -> NULL. */
int db_bind_text(sqlite3_stmt *st, int i, const char *s);
int db_bind_id(sqlite3_stmt *st, int i, int64_t id);
int db_bind_real(sqlite3_stmt *st, int i, double v);
/* Length of a fixed-size char array field, not reading past its end; binds it as text. */
int db_field_len(const char *s, size_t cap);
int db_bind_field(sqlite3_stmt *st, int i, const char *s, size_t cap);
/* Steps st once, expecting SQLITE_DONE; anything else is db_fail(what). */
mpq_status db_step_done(mpq_db *db, sqlite3_stmt *st, const char *what, mpq_err *err);
/* Steps st once, expecting a row: MPQ_OK on SQLITE_ROW; on SQLITE_DONE, MPQ_ERR_NOTFOUND with
 * "<path>: <notfound formatted>" (or db_fail(what) when notfound is NULL); else db_fail(what). */
mpq_status db_step_row(mpq_db *db, sqlite3_stmt *st, const char *what, mpq_err *err,
                       const char *notfound, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
/* Steps an UPDATE/DELETE of one row by id: db_fail(what) unless SQLITE_DONE; MPQ_ERR_NOTFOUND
 * "<path>: no <noun> with id <id>" when it changed nothing. */
mpq_status db_step_change(mpq_db *db, sqlite3_stmt *st, const char *what, const char *noun,
                          int64_t id, mpq_err *err);
/* Grows the array *arr_ptr (any T **, passed as &arr) of *cap elements of elem bytes so that
 * index n fits: doubles, starting at first. MPQ_ERR_NOMEM "<path>: <what>: out of memory"
 * leaves the array as it was. */
mpq_status db_grow(mpq_db *db, void *arr_ptr, int n, int *cap, int first, size_t elem,
                   const char *what, mpq_err *err);
/* Copies column text into buf (size n), "" for NULL. */
void db_col_text(sqlite3_stmt *st, int i, char *buf, size_t n);
/* malloc'd copy of column text, NULL for SQL NULL; *oom set on allocation failure. */
char *db_col_strdup(sqlite3_stmt *st, int i, bool *oom);
/* Column as double, NaN for NULL. */
double db_col_real(sqlite3_stmt *st, int i);

/* Transaction or savepoint: tx_begin opens BEGIN IMMEDIATE when in autocommit, else a
 * savepoint; tx_end commits (ok) or rolls back (!ok) what tx_begin opened. *opened
 * tells tx_end what to close. */
mpq_status tx_begin(mpq_db *db, int *opened, mpq_err *err);
mpq_status tx_end(mpq_db *db, int opened, bool ok, mpq_err *err);
/* tx_end with ok = (s == MPQ_OK); returns s, or tx_end's failure when s was MPQ_OK. */
mpq_status tx_finish(mpq_db *db, int opened, mpq_status s, mpq_err *err);

/* Registers mpq_lease_live(host, pid, pid_start, heartbeat_age_s) on the connection
 * (lease.c). */
mpq_status db_register_functions(mpq_db *db, mpq_err *err);
/* SQL expression of the status readers see for the jobs row aliased j: 'running' without
 * a live lease reads 'interrupted' (schema >= 2; plain j.status before). Static text. */
const char *db_job_status_sql(const mpq_db *db);

/* Resolves a job given by name or decimal id. */
mpq_status db_job_resolve(mpq_db *db, const char *name_or_id, int64_t *job_id, mpq_err *err);

/* Test hook: runs arbitrary SQL on a file with a raw sqlite3 connection (creating it),
 * bypassing every mpq check. Used by tests/unit/test_db.c to build hostile files. */
mpq_status mpq_db_test_raw_exec(const char *path, const char *sql, mpq_err *err);
/* Test hook: creates the file at schema `version` (1..MPQ_DB_SCHEMA_VERSION) exactly as that
 * version's mpq did, to test migrations forward. */
mpq_status mpq_db_test_create_version(const char *path, int version, mpq_err *err);

#endif /* MPQ_DB_PRIVATE_H */
