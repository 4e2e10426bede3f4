/*
 * db.c - opening, validating and migrating the results database; transactions;
 * shared SQLite helpers. Reference: SQLite C API (https://sqlite.org/c3ref/intro.html),
 * WAL (https://sqlite.org/wal.html), file format (https://sqlite.org/fileformat2.html).
 *
 * Open sequence (nothing is written until the file is known to be a healthy mpq
 * database of a supported version):
 *   1. sqlite3_open_v2 (READONLY, or READWRITE[|CREATE]); busy timeout 10 s; FKs on.
 *   2. read sqlite_master: SQLITE_NOTADB / SQLITE_CORRUPT -> MPQ_ERR_DB naming the file.
 *   3. no tables at all -> a new database (version 0); tables but no schema_version ->
 *      "not an mpq database" (MPQ_ERR_DB); MAX(version) > MPQ_DB_SCHEMA_VERSION ->
 *      MPQ_ERR_UNSUPPORTED.
 *   4. PRAGMA quick_check (unless MPQ_DB_NO_CHECK) -> MPQ_ERR_DB if not "ok".
 *   5. writable: journal_mode=WAL, synchronous=NORMAL, then each missing migration step
 *      in its own BEGIN IMMEDIATE transaction.
 */
#include "db/db_private.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define DB_BUSY_TIMEOUT_MS 10000

/* ---- helpers ------------------------------------------------------------------------ */

/* Why path cannot be written: the errno of access(W_OK) on the file, else on its
 * directory ("directory /d: Permission denied"), else "" (unknown). */
static void write_reason(const char *path, char *buf, size_t n) {
    buf[0] = '\0';
    if (access(path, W_OK) != 0 && errno != ENOENT) {
        snprintf(buf, n, "%s", strerror(errno));
        return;
    }
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (access(dir, W_OK) != 0 && snprintf(buf, n, "directory %s: %s", dir, strerror(errno)) < 0) buf[0] = '\0';
}

/* " (job 'a' is being run by pid 1 on host h since T)" for the first live lease, else "". */
static void lock_holder(mpq_db *db, char *buf, size_t n) {
    sqlite3_stmt *st = NULL;
    buf[0] = '\0';
    if (db->schema_version < 2) return;
    if (sqlite3_prepare_v2(db->h,
                           "SELECT j.name, l.pid, l.host, l.started_at FROM job_leases l JOIN jobs j ON"
                           " j.id = l.job_id WHERE mpq_lease_live(l.host, l.pid, l.pid_start,"
                           " (julianday('now') - julianday(l.heartbeat_at)) * 86400.0) LIMIT 1",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        snprintf(buf, n, "; job '%s' is being run by pid %lld on host %s since %s",
                 (const char *)sqlite3_column_text(st, 0), (long long)sqlite3_column_int64(st, 1),
                 (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
}

mpq_status db_fail(mpq_db *db, mpq_err *err, const char *what) {
    if (!db || !db->h)
        return mpq_err_set(err, MPQ_ERR_DB, "%s: %s: out of memory", db && db->path ? db->path : "(db)", what);
    char msg[512], extra[700];
    snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db->h));
    int code = sqlite3_extended_errcode(db->h), eno = sqlite3_system_errno(db->h);
    extra[0] = '\0';
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: {
        char who[600];
        lock_holder(db, who, sizeof who);
        snprintf(extra, sizeof extra, " (another connection held the lock for more than %d s%s)",
                 DB_BUSY_TIMEOUT_MS / 1000, who);
        break;
    }
    case SQLITE_READONLY: {
        char why[300];
        write_reason(db->path, why, sizeof why);
        return mpq_err_set(err, MPQ_ERR_DB, "%s: cannot write (%s): %s: %s", db->path,
                           why[0] ? why : "opened read-only", what, msg);
    }
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
        if (eno) snprintf(extra, sizeof extra, " (%s)", strerror(eno));
        break;
    default: break;
    }
    return mpq_err_set(err, MPQ_ERR_DB, "%s: %s: %s%s", db->path, what, msg, extra);
}

mpq_status db_prepare(mpq_db *db, const char *sql, sqlite3_stmt **st, mpq_err *err) {
    *st = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, st, NULL) != SQLITE_OK) {
        sqlite3_finalize(*st);
        *st = NULL;
        return db_fail(db, err, "prepare");
    }
    return MPQ_OK;
}

mpq_status db_exec(mpq_db *db, const char *sql, const char *what, mpq_err *err) {
    char *emsg = NULL;
    if (sqlite3_exec(db->h, sql, NULL, NULL, &emsg) != SQLITE_OK) {
        mpq_err_set(err, MPQ_ERR_DB, "%s: %s: %s", db->path, what,
                    emsg ? emsg : sqlite3_errmsg(db->h));
        sqlite3_free(emsg);
        return MPQ_ERR_DB;
    }
    return MPQ_OK;
}

int db_bind_text(sqlite3_stmt *st, int i, const char *s) {
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

int db_bind_id(sqlite3_stmt *st, int i, int64_t id) {
    return id > 0 ? sqlite3_bind_int64(st, i, id) : sqlite3_bind_null(st, i);
}

int db_bind_real(sqlite3_stmt *st, int i, double v) {
    return isnan(v) ? sqlite3_bind_null(st, i) : sqlite3_bind_double(st, i, v);
}

void db_col_text(sqlite3_stmt *st, int i, char *buf, size_t n) {
    const unsigned char *t = sqlite3_column_text(st, i);
    if (n == 0) return;
    if (!t) {
        buf[0] = '\0';
        return;
    }
    size_t len = strlen((const char *)t);
    if (len >= n) len = n - 1;
    memcpy(buf, t, len);
    buf[len] = '\0';
}

char *db_col_strdup(sqlite3_stmt *st, int i, bool *oom) {
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t) return NULL;
    size_t len = (size_t)sqlite3_column_bytes(st, i);
    char *s = malloc(len + 1);
    if (!s) {
        *oom = true;
        return NULL;
    }
    memcpy(s, t, len);
    s[len] = '\0';
    return s;
}

double db_col_real(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

int db_field_len(const char *s, size_t cap) {
    const char *z = memchr(s, '\0', cap);
    return (int)(z ? (size_t)(z - s) : cap);
}

int db_bind_field(sqlite3_stmt *st, int i, const char *s, size_t cap) {
    return sqlite3_bind_text(st, i, s, db_field_len(s, cap), SQLITE_TRANSIENT);
}

mpq_status db_step_done(mpq_db *db, sqlite3_stmt *st, const char *what, mpq_err *err) {
    return sqlite3_step(st) == SQLITE_DONE ? MPQ_OK : db_fail(db, err, what);
}

mpq_status db_step_row(mpq_db *db, sqlite3_stmt *st, const char *what, mpq_err *err,
                       const char *notfound, ...) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) return MPQ_OK;
    if (rc != SQLITE_DONE || !notfound) return db_fail(db, err, what);
    char msg[512];
    va_list ap;
    va_start(ap, notfound);
    vsnprintf(msg, sizeof msg, notfound, ap);
    va_end(ap);
    return mpq_err_set(err, MPQ_ERR_NOTFOUND, "%s: %s", db->path, msg);
}

mpq_status db_step_change(mpq_db *db, sqlite3_stmt *st, const char *what, const char *noun,
                          int64_t id, mpq_err *err) {
    if (sqlite3_step(st) != SQLITE_DONE) return db_fail(db, err, what);
    if (sqlite3_changes(db->h) == 0)
        return mpq_err_set(err, MPQ_ERR_NOTFOUND, "%s: no %s with id %lld", db->path, noun,
                           (long long)id);
    return MPQ_OK;
}

mpq_status db_grow(mpq_db *db, void *arr_ptr, int n, int *cap, int first, size_t elem,
                   const char *what, mpq_err *err) {
    if (n < *cap) return MPQ_OK;
    void *arr;
    memcpy(&arr, arr_ptr, sizeof arr);
    int nc = *cap ? *cap * 2 : first;
    size_t bytes = 0;
    void *na = (*cap > INT_MAX / 2 || !mpq_size_mul((size_t)nc, elem, &bytes))
                   ? NULL
                   : realloc(arr, bytes);
    if (!na) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: %s: out of memory", db->path, what);
    memcpy(arr_ptr, &na, sizeof na);
    *cap = nc;
    return MPQ_OK;
}

/* ---- transactions ------------------------------------------------------------------- */

mpq_status tx_begin(mpq_db *db, int *opened, mpq_err *err) {
    *opened = 0;
    if (sqlite3_get_autocommit(db->h)) {
        if (db_exec(db, "BEGIN IMMEDIATE", "begin transaction", err) != MPQ_OK) return MPQ_ERR_DB;
        *opened = 1;
    } else {
        if (db_exec(db, "SAVEPOINT mpq_sp", "savepoint", err) != MPQ_OK) return MPQ_ERR_DB;
        *opened = 2;
    }
    return MPQ_OK;
}

mpq_status tx_end(mpq_db *db, int opened, bool ok, mpq_err *err) {
    if (opened == 1) {
        if (ok) {
            if (db_exec(db, "COMMIT", "commit", err) == MPQ_OK) return MPQ_OK;
            /* COMMIT failed (e.g. disk full): make sure nothing stays half-open. */
            if (!sqlite3_get_autocommit(db->h)) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
            return MPQ_ERR_DB;
        }
        if (!sqlite3_get_autocommit(db->h)) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
        return MPQ_OK;
    }
    if (opened == 2) {
        if (ok) return db_exec(db, "RELEASE mpq_sp", "release savepoint", err);
        sqlite3_exec(db->h, "ROLLBACK TO mpq_sp; RELEASE mpq_sp", NULL, NULL, NULL);
    }
    return MPQ_OK;
}

mpq_status tx_finish(mpq_db *db, int opened, mpq_status s, mpq_err *err) {
    mpq_status e = tx_end(db, opened, s == MPQ_OK, err);
    return s == MPQ_OK ? e : s;
}

mpq_status mpq_db_begin(mpq_db *db, mpq_err *err) {
    if (!db) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_begin: NULL handle");
    if (!sqlite3_get_autocommit(db->h))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: begin: a transaction is already open", db->path);
    return db_exec(db, "BEGIN IMMEDIATE", "begin transaction", err);
}

mpq_status mpq_db_commit(mpq_db *db, mpq_err *err) {
    if (!db) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_commit: NULL handle");
    if (sqlite3_get_autocommit(db->h))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: commit: no transaction is open", db->path);
    return db_exec(db, "COMMIT", "commit", err);
}

mpq_status mpq_db_rollback(mpq_db *db, mpq_err *err) {
    if (!db) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_rollback: NULL handle");
    if (sqlite3_get_autocommit(db->h)) return MPQ_OK; /* already rolled back (e.g. by SQLite) */
    return db_exec(db, "ROLLBACK", "rollback", err);
}

/* ---- open --------------------------------------------------------------------------- */

/* Single integer result of sql into *out (0 if no row / NULL). */
static mpq_status query_int(mpq_db *db, const char *sql, const char *what, int64_t *out,
                            mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s = MPQ_OK;
    *out = 0;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        s = db_fail(db, err, what);
        goto done;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
    } else if (rc != SQLITE_DONE) {
        s = db_fail(db, err, what);
    }
done:
    sqlite3_finalize(st);
    return s;
}

static mpq_status quick_check(mpq_db *db, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s = MPQ_OK;
    if (sqlite3_prepare_v2(db->h, "PRAGMA quick_check(1)", -1, &st, NULL) != SQLITE_OK) {
        s = db_fail(db, err, "integrity check");
        goto done;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(st, 0);
        if (!r || strcmp(r, "ok") != 0)
            s = mpq_err_set(err, MPQ_ERR_DB, "%s: database is corrupted: %s", db->path,
                            r ? r : "(no result)");
    } else {
        s = db_fail(db, err, "integrity check");
    }
done:
    sqlite3_finalize(st);
    return s;
}

/* The version of the file as it is now (0 without a schema_version table). */
static mpq_status read_version(mpq_db *db, int64_t *version, mpq_err *err) {
    int64_t has = 0;
    *version = 0;
    mpq_status s = query_int(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_version'",
                             "read schema", &has, err);
    if (s == MPQ_OK && has)
        s = query_int(db, "SELECT MAX(version) FROM schema_version", "read schema_version", version, err);
    return s;
}

/* PRAGMA journal_mode=WAL. Switching a new file to WAL needs an exclusive lock, and SQLite
 * may answer SQLITE_BUSY at once without calling the busy handler (several processes creating
 * the same file): retry every 5 ms up to the busy timeout; a file another process has already
 * switched answers "wal" on the next try. */
static mpq_status set_wal(mpq_db *db, const char *path, mpq_err *err) {
    for (int waited_ms = 0;; waited_ms += 5) {
        sqlite3_stmt *st = NULL;
        mpq_status s = db_prepare(db, "PRAGMA journal_mode=WAL", &st, err);
        if (s != MPQ_OK) return s;
        int rc = sqlite3_step(st);
        const char *jm = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        bool wal = jm && strcmp(jm, "wal") == 0;
        if (rc == SQLITE_ROW && !wal)
            s = mpq_err_set(err, MPQ_ERR_DB, "%s: cannot use WAL journal mode (got '%s')", path, jm ? jm : "");
        else if (rc != SQLITE_ROW && ((rc & 0xff) != SQLITE_BUSY || waited_ms >= DB_BUSY_TIMEOUT_MS))
            s = db_fail(db, err, "set WAL journal mode");
        sqlite3_finalize(st);
        if (s != MPQ_OK || rc == SQLITE_ROW) return s;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Applies the missing steps, each in its own BEGIN IMMEDIATE transaction that first reads
 * the version again: another process may have created or migrated the file since it was
 * opened (two `mpq run` on a new file), and then the step is not applied twice. */
static mpq_status migrate(mpq_db *db, mpq_err *err) {
    mpq_status s = MPQ_OK;
    sqlite3_stmt *st = NULL;
    /* the usual case, a current schema, needs no write lock (a live writer may hold it) */
    int64_t now = 0;
    if ((s = read_version(db, &now, err)) != MPQ_OK) return s;
    if (now >= mpq_db_n_migrations && now <= MPQ_DB_SCHEMA_VERSION) {
        db->schema_version = (int)now;
        return MPQ_OK;
    }
    for (;;) {
        if (db_exec(db, "BEGIN IMMEDIATE", "begin migration", err) != MPQ_OK) return MPQ_ERR_DB;
        int64_t cur = 0;
        if ((s = read_version(db, &cur, err)) != MPQ_OK) goto fail;
        if (cur > MPQ_DB_SCHEMA_VERSION) {
            s = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                            "%s: schema version %lld is newer than this mpq supports (%d); upgrade mpq", db->path,
                            (long long)cur, MPQ_DB_SCHEMA_VERSION);
            goto fail;
        }
        db->schema_version = (int)cur;
        if (cur >= mpq_db_n_migrations) {
            sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL); /* nothing was written */
            return MPQ_OK;
        }
        int v = (int)cur;
        char what[64];
        snprintf(what, sizeof what, "migration to schema version %d", v + 1);
        for (const char *const *part = mpq_db_migrations[v]; *part; part++) {
            s = db_exec(db, *part, what, err);
            if (s != MPQ_OK) goto fail;
        }
        s = db_prepare(db, "INSERT INTO schema_version(version, mpq_version) VALUES(?1, ?2)", &st, err);
        if (s != MPQ_OK) goto fail;
        sqlite3_bind_int(st, 1, v + 1);
        sqlite3_bind_text(st, 2, mpq_version(), -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) {
            s = db_fail(db, err, what);
            goto fail;
        }
        sqlite3_finalize(st);
        st = NULL;
        if (db_exec(db, "COMMIT", what, err) != MPQ_OK) {
            s = MPQ_ERR_DB;
            goto fail;
        }
        db->schema_version = v + 1;
    }
fail:
    sqlite3_finalize(st);
    if (!sqlite3_get_autocommit(db->h)) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    return s;
}

/* Opens db->h on name (a path, or a file: URI when uri) and sets up the connection. */
static mpq_status connect(mpq_db *db, const char *name, int oflags, bool uri, mpq_err *err) {
    int rc = sqlite3_open_v2(name, &db->h, oflags | (uri ? SQLITE_OPEN_URI : 0), NULL);
    if (rc != SQLITE_OK) {
        int eno = db->h ? sqlite3_system_errno(db->h) : 0;
        char why[300] = "";
        if ((rc & 0xff) == SQLITE_CANTOPEN && (oflags & SQLITE_OPEN_CREATE)) write_reason(db->path, why, sizeof why);
        else if (eno) snprintf(why, sizeof why, "%s", strerror(eno));
        return mpq_err_set(err, (rc & 0xff) == SQLITE_CANTOPEN ? MPQ_ERR_IO : MPQ_ERR_DB,
                           "%s: cannot %s database: %s%s%s%s", db->path,
                           (oflags & SQLITE_OPEN_CREATE) ? "open or create" : "open",
                           db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc), why[0] ? " (" : "", why,
                           why[0] ? ")" : "");
    }
    sqlite3_extended_result_codes(db->h, 1);
    if (sqlite3_busy_timeout(db->h, DB_BUSY_TIMEOUT_MS) != SQLITE_OK) return db_fail(db, err, "busy timeout");
    mpq_status s = db_register_functions(db, err);
    if (s == MPQ_OK) s = db_exec(db, "PRAGMA foreign_keys=ON", "enable foreign keys", err);
    return s;
}

/* "file:" URI of path with immutable=1 (https://sqlite.org/uri.html): every byte but
 * unreserved characters and '/' percent-encoded. malloc'd; NULL when out of memory. */
static char *immutable_uri(const char *path) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(path);
    char *u = malloc(n * 3 + sizeof "file:?immutable=1");
    if (!u) return NULL;
    char *o = u;
    memcpy(o, "file:", 5);
    o += 5;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~/", *p)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    memcpy(o, "?immutable=1", sizeof "?immutable=1");
    return u;
}

/* Read-only open of a WAL file that SQLite cannot read because its -shm cannot be
 * created (read-only directory or file system, https://sqlite.org/wal.html#readonly):
 * without a -wal holding changes the main file is the whole database, so it is read as
 * an immutable file; with one, it is refused naming the -wal file. */
static mpq_status reopen_immutable(mpq_db *db, mpq_err *err) {
    char wal[4200], why[300];
    struct stat sb;
    snprintf(wal, sizeof wal, "%s-wal", db->path);
    write_reason(db->path, why, sizeof why);
    if (stat(wal, &sb) == 0 && sb.st_size > 0)
        return mpq_err_set(err, MPQ_ERR_IO,
                           "%s: cannot read: %s holds changes not yet in the database file, and without "
                           "write access (%s) SQLite cannot create the %s-shm index it needs to read them; "
                           "copy the database and its -wal file to a writable place",
                           db->path, wal, why[0] ? why : "read-only", db->path);
    char *uri = immutable_uri(db->path);
    if (!uri) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", db->path);
    sqlite3_close_v2(db->h);
    db->h = NULL;
    mpq_status s = connect(db, uri, SQLITE_OPEN_READONLY, true, err);
    free(uri);
    return s;
}

mpq_status mpq_db_open(const char *path, unsigned flags, mpq_db **out, mpq_err *err) {
    mpq_status s = MPQ_OK;
    mpq_db *db = NULL;
    if (out) *out = NULL;
    if (!path || !*path || !out)
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_open: missing path or output");
    unsigned mode = flags & (MPQ_DB_READONLY | MPQ_DB_READWRITE | MPQ_DB_CREATE);
    if (mode != MPQ_DB_READONLY && mode != MPQ_DB_READWRITE && mode != MPQ_DB_CREATE)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: open flags must contain exactly one of readonly/readwrite/create", path);
    if (flags & ~(MPQ_DB_READONLY | MPQ_DB_READWRITE | MPQ_DB_CREATE | MPQ_DB_NO_CHECK))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: unknown open flags 0x%x", path, flags);

    db = calloc(1, sizeof *db);
    if (!db) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
    size_t len = strlen(path);
    db->path = malloc(len + 1);
    if (!db->path) {
        s = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(db->path, path, len + 1);
    db->readonly = (mode == MPQ_DB_READONLY);

    int oflags = db->readonly ? SQLITE_OPEN_READONLY
                 : (mode == MPQ_DB_CREATE ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                                          : SQLITE_OPEN_READWRITE);
    if ((s = connect(db, path, oflags, false, err)) != MPQ_OK) goto done;
    if (!db->readonly && sqlite3_db_readonly(db->h, "main") == 1) {
        /* SQLite fell back to read-only: the file or its file system cannot be written. */
        char why[300];
        write_reason(path, why, sizeof why);
        s = mpq_err_set(err, MPQ_ERR_IO,
                        "%s: cannot write (%s): the database can only be opened read-only (mpq status and "
                        "mpq query can read it)",
                        path, why[0] ? why : "opened read-only");
        goto done;
    }

    /* Is this an SQLite file at all? (NOTADB / CORRUPT surface here, before any write.) */
    int64_t n_objects = 0, has_version = 0, version = 0;
    if ((s = query_int(db, "SELECT count(*) FROM sqlite_master", "read schema", &n_objects, err)) != MPQ_OK) {
        int code = sqlite3_extended_errcode(db->h) & 0xff;
        if (!db->readonly || (code != SQLITE_CANTOPEN && code != SQLITE_READONLY && code != SQLITE_IOERR))
            goto done;
        mpq_err e2 = {0};
        if ((s = reopen_immutable(db, &e2)) != MPQ_OK ||
            (s = query_int(db, "SELECT count(*) FROM sqlite_master", "read schema", &n_objects, &e2)) != MPQ_OK) {
            if (err) *err = e2;
            goto done;
        }
    }
    if ((s = query_int(db,
                       "SELECT count(*) FROM sqlite_master WHERE type='table' AND "
                       "name='schema_version'",
                       "read schema", &has_version, err)) != MPQ_OK)
        goto done;
    if (has_version) {
        if ((s = query_int(db, "SELECT MAX(version) FROM schema_version", "read schema_version",
                           &version, err)) != MPQ_OK)
            goto done;
        if (version > MPQ_DB_SCHEMA_VERSION) {
            s = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                            "%s: schema version %lld is newer than this mpq supports (%d); upgrade mpq",
                            path, (long long)version, MPQ_DB_SCHEMA_VERSION);
            goto done;
        }
        if (version < 1) {
            s = mpq_err_set(err, MPQ_ERR_DB, "%s: schema_version table is empty (damaged database)",
                            path);
            goto done;
        }
    } else if (n_objects > 0) {
        s = mpq_err_set(err, MPQ_ERR_DB,
                        "%s: not an mpq results database (no schema_version table among %lld objects)",
                        path, (long long)n_objects);
        goto done;
    } else if (db->readonly) {
        s = mpq_err_set(err, MPQ_ERR_DB, "%s: empty database (no mpq schema); nothing to read", path);
        goto done;
    }
    db->schema_version = (int)version;
    if (n_objects > 0 && !(flags & MPQ_DB_NO_CHECK)) {
        if ((s = quick_check(db, err)) != MPQ_OK) goto done;
    }

    if (!db->readonly) {
        if ((s = set_wal(db, path, err)) != MPQ_OK) goto done;
        if ((s = db_exec(db, "PRAGMA synchronous=NORMAL", "set synchronous", err)) != MPQ_OK) goto done;
        if ((s = migrate(db, err)) != MPQ_OK) goto done;
    }
    *out = db;
    db = NULL;
done:
    mpq_db_close(db);
    return s;
}

void mpq_db_close(mpq_db *db) {
    if (!db) return;
    if (db->h) {
        sqlite3_finalize(db->st_metric_insert);
        if (!sqlite3_get_autocommit(db->h)) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close_v2(db->h);
    }
    free(db->path);
    free(db);
}

const char *mpq_db_path(const mpq_db *db) { return db ? db->path : NULL; }

int mpq_db_schema_version(const mpq_db *db) { return db ? db->schema_version : 0; }

mpq_status mpq_db_check(mpq_db *db, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s = MPQ_OK;
    if ((s = db_prepare(db, "PRAGMA integrity_check(1)", &st, err)) != MPQ_OK) return s;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        s = db_fail(db, err, "integrity check");
        goto done;
    }
    const char *r = (const char *)sqlite3_column_text(st, 0);
    if (!r || strcmp(r, "ok") != 0) {
        s = mpq_err_set(err, MPQ_ERR_DB, "%s: integrity check: %s", db->path, r ? r : "(null)");
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((s = db_prepare(db, "PRAGMA foreign_key_check", &st, err)) != MPQ_OK) goto done;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        s = mpq_err_set(err, MPQ_ERR_DB, "%s: foreign key check: table %s row %lld references %s",
                        db->path, (const char *)sqlite3_column_text(st, 0),
                        (long long)sqlite3_column_int64(st, 1), (const char *)sqlite3_column_text(st, 2));
    } else if (rc != SQLITE_DONE) {
        s = db_fail(db, err, "foreign key check");
    }
done:
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_test_raw_exec(const char *path, const char *sql, mpq_err *err) {
    sqlite3 *h = NULL;
    char *emsg = NULL;
    mpq_status s = MPQ_OK;
    if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        s = mpq_err_set(err, MPQ_ERR_DB, "%s: %s", path, h ? sqlite3_errmsg(h) : "cannot open");
        goto done;
    }
    if (sqlite3_exec(h, sql, NULL, NULL, &emsg) != SQLITE_OK) {
        s = mpq_err_set(err, MPQ_ERR_DB, "%s: %s", path, emsg ? emsg : sqlite3_errmsg(h));
        goto done;
    }
done:
    sqlite3_free(emsg);
    sqlite3_close(h);
    return s;
}

mpq_status mpq_db_test_create_version(const char *path, int version, mpq_err *err) {
    if (version < 1 || version > mpq_db_n_migrations)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: no schema version %d", path, version);
    mpq_status s = mpq_db_test_raw_exec(path, "PRAGMA journal_mode=WAL", err);
    for (int v = 0; v < version && s == MPQ_OK; v++) {
        for (const char *const *part = mpq_db_migrations[v]; *part && s == MPQ_OK; part++)
            s = mpq_db_test_raw_exec(path, *part, err);
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version(version, mpq_version) VALUES(%d, 'test')", v + 1);
        if (s == MPQ_OK) s = mpq_db_test_raw_exec(path, sql, err);
    }
    return s;
}
