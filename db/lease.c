/*
 * lease.c - one runner per job: the job_leases table (schema version 2, db/schema.c) and
 * the liveness rule readers use to show a killed job as 'interrupted'.
 * Reference: SQLite transactions (https://sqlite.org/lang_transaction.html: BEGIN
 * IMMEDIATE takes the write lock before the first read, so check-then-insert is atomic),
 * application-defined functions (https://sqlite.org/c3ref/create_function.html),
 * kill(2) with signal 0, proc(5) /proc/PID/stat (field 3 state, field 22 starttime).
 *
 * Rules (also in mpq_db.h and the README):
 *   - a lease of this host (gethostname) is live while its pid exists, is not a zombie,
 *     and (when both are known) started at the recorded time — a reused pid is not the
 *     owner; kill(pid, 0) failing with EPERM means the process exists (another user);
 *   - a lease of another host is live while its heartbeat is younger than
 *     MPQ_DB_LEASE_TIMEOUT_S (the pid cannot be checked from here; WAL databases are
 *     not shared across hosts, so this case is a file moved from another machine);
 *   - acquiring reads the lease and writes the new one in one IMMEDIATE transaction.
 */
#include "db/db_private.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- this process and host ------------------------------------------------------------ */

static void host_name(char *buf, size_t n) {
    if (gethostname(buf, n) != 0 || !buf[0]) snprintf(buf, n, "localhost");
    buf[n - 1] = '\0';
}

/* State letter and start time of a process from /proc/PID/stat; false if unreadable. */
static bool proc_stat(long pid, char *state, int64_t *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may contain spaces and ')' */
    if (!p) return false;
    p++;
    char st = 0;
    long long field = 0;
    /* fields after ')': 3 state, 4 ppid, ..., 22 starttime */
    for (int i = 3; i <= 22; i++) {
        while (*p == ' ') p++;
        if (!*p) return false;
        if (i == 3) st = *p;
        if (i == 22) field = strtoll(p, NULL, 10);
        while (*p && *p != ' ') p++;
    }
    *state = st;
    *start = field;
    return true;
}

static int64_t self_start(void) {
    char st;
    int64_t start = 0;
    return proc_stat((long)getpid(), &st, &start) ? start : 0;
}

/* Liveness of a lease by the rules at the top of this file. */
static bool lease_live(const char *host, int64_t pid, int64_t pid_start, double age_s) {
    char me[256];
    host_name(me, sizeof me);
    if (!host || strcmp(host, me) != 0) return age_s < (double)MPQ_DB_LEASE_TIMEOUT_S;
    if (pid <= 0 || pid > INT_MAX) return false;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM) return false;
    char st;
    int64_t start = 0;
    if (proc_stat((long)pid, &st, &start)) {
        if (st == 'Z' || st == 'X') return false; /* killed, not yet reaped */
        if (pid_start > 0 && start > 0 && start != pid_start) return false; /* pid reused */
    }
    return true;
}

/* SQL: mpq_lease_live(host, pid, pid_start, heartbeat_age_seconds) -> 1 or 0. */
static void lease_live_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    const char *host = (const char *)sqlite3_value_text(argv[0]);
    int64_t pid = sqlite3_value_int64(argv[1]);
    int64_t start = sqlite3_value_int64(argv[2]);
    double age = sqlite3_value_type(argv[3]) == SQLITE_NULL ? 1e30 : sqlite3_value_double(argv[3]);
    sqlite3_result_int(ctx, lease_live(host, pid, start, age) ? 1 : 0);
}

mpq_status db_register_functions(mpq_db *db, mpq_err *err) {
    if (sqlite3_create_function_v2(db->h, "mpq_lease_live", 4, SQLITE_UTF8, NULL, lease_live_fn, NULL,
                                   NULL, NULL) != SQLITE_OK)
        return db_fail(db, err, "register mpq_lease_live");
    return MPQ_OK;
}

#define LEASE_LIVE_SQL(l)                                                                          \
    "mpq_lease_live(" l ".host, " l ".pid, " l ".pid_start,"                                       \
    " (julianday('now') - julianday(" l ".heartbeat_at)) * 86400.0)"

const char *db_job_status_sql(const mpq_db *db) {
    if (db->schema_version < 2) return "j.status"; /* read-only open of a file without leases */
    return "CASE WHEN j.status = 'running' AND NOT EXISTS (SELECT 1 FROM job_leases jl"
           " WHERE jl.job_id = j.id AND " LEASE_LIVE_SQL("jl") ") THEN 'interrupted' ELSE j.status END";
}

/* ---- the lease row -------------------------------------------------------------------- */

#define TS_SQL "strftime('%Y-%m-%dT%H:%M:%fZ','now')"

/* Reads the job name and its lease (if any) into *out; *held tells whether there is one. */
static mpq_status read_lease(mpq_db *db, int64_t job_id, mpq_db_lease *out, bool *held, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    memset(out, 0, sizeof *out);
    *held = false;
    if ((s = db_prepare(db,
                        "SELECT j.name, l.token, l.pid, l.pid_start, l.host, l.started_at, l.heartbeat_at,"
                        " " LEASE_LIVE_SQL("l") " FROM jobs j LEFT JOIN job_leases l ON l.job_id = j.id"
                        " WHERE j.id = ?1",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, job_id);
    s = db_step_row(db, st, "read job lease", err, "no job with id %lld", (long long)job_id);
    if (s == MPQ_OK) {
        out->job_id = job_id;
        db_col_text(st, 0, out->job, sizeof out->job);
        if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
            *held = true;
            db_col_text(st, 1, out->token, sizeof out->token);
            out->pid = sqlite3_column_int64(st, 2);
            out->pid_start = sqlite3_column_int64(st, 3);
            db_col_text(st, 4, out->host, sizeof out->host);
            db_col_text(st, 5, out->started_at, sizeof out->started_at);
            db_col_text(st, 6, out->heartbeat_at, sizeof out->heartbeat_at);
            out->live = sqlite3_column_int(st, 7) != 0;
        }
    }
    sqlite3_finalize(st);
    return s;
}

static mpq_status busy_error(mpq_db *db, const mpq_db_lease *l, const char *lead, mpq_err *err) {
    char me[256];
    host_name(me, sizeof me);
    if (strcmp(l->host, me) == 0)
        return mpq_err_set(err, MPQ_ERR_BUSY,
                           "%s: job '%s' %s pid %lld on host %s since %s (last heartbeat %s); wait for it "
                           "to finish or stop it (kill %lld), then resume",
                           db->path, l->job, lead, (long long)l->pid, l->host, l->started_at, l->heartbeat_at,
                           (long long)l->pid);
    return mpq_err_set(err, MPQ_ERR_BUSY,
                       "%s: job '%s' %s pid %lld on host %s since %s (last heartbeat %s); a lease of another "
                       "host is taken over once its heartbeat is %d s old",
                       db->path, l->job, lead, (long long)l->pid, l->host, l->started_at, l->heartbeat_at,
                       MPQ_DB_LEASE_TIMEOUT_S);
}

mpq_status mpq_db_lease_acquire(mpq_db *db, int64_t job_id, mpq_db_lease *out, mpq_db_lease *prev,
                                mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    int opened = 0;
    bool held = false;
    mpq_db_lease cur;
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_lease_acquire: NULL argument");
    memset(out, 0, sizeof *out);
    if (prev) memset(prev, 0, sizeof *prev);
    if (db->readonly)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: cannot run a job on a database opened read-only",
                           db->path);
    if ((s = tx_begin(db, &opened, err)) != MPQ_OK) {
        /* the write lock stayed taken for the whole busy timeout: if a live runner holds the
         * job's lease, say so (a read needs no lock in WAL mode) instead of "database is locked" */
        mpq_err e2 = {0};
        if (read_lease(db, job_id, &cur, &held, &e2) == MPQ_OK && held && cur.live)
            return busy_error(db, &cur, "is being run by", err);
        return s;
    }
    if ((s = read_lease(db, job_id, &cur, &held, err)) != MPQ_OK) goto done;
    if (held && cur.live) {
        s = busy_error(db, &cur, "is being run by", err);
        goto done;
    }
    if (held && prev) *prev = cur;
    char host[256];
    host_name(host, sizeof host);
    if ((s = db_prepare(db,
                        "INSERT OR REPLACE INTO job_leases(job_id, token, pid, pid_start, host, started_at,"
                        " heartbeat_at) VALUES(?1, lower(hex(randomblob(16))), ?2, ?3, ?4, " TS_SQL ", " TS_SQL
                        ")",
                        &st, err)) != MPQ_OK)
        goto done;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int64(st, 2, (int64_t)getpid());
    db_bind_id(st, 3, self_start());
    db_bind_text(st, 4, host);
    if ((s = db_step_done(db, st, "take job lease", err)) != MPQ_OK) goto done;
    if ((s = read_lease(db, job_id, out, &held, err)) != MPQ_OK) goto done;
done:
    sqlite3_finalize(st);
    return tx_finish(db, opened, s, err);
}

mpq_status mpq_db_lease_heartbeat(mpq_db *db, const mpq_db_lease *lease, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!db || !lease || !lease->token[0])
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_lease_heartbeat: no lease");
    if ((s = db_prepare(db, "UPDATE job_leases SET heartbeat_at = " TS_SQL " WHERE job_id = ?1 AND token = ?2",
                        &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, lease->job_id);
    db_bind_text(st, 2, lease->token);
    s = db_step_done(db, st, "job lease heartbeat", err);
    sqlite3_finalize(st);
    if (s != MPQ_OK || sqlite3_changes(db->h) > 0) return s;
    mpq_db_lease cur;
    bool held = false;
    if ((s = read_lease(db, lease->job_id, &cur, &held, err)) != MPQ_OK) return s;
    if (!held)
        return mpq_err_set(err, MPQ_ERR_BUSY, "%s: job '%s': this run's lease was removed; stopping", db->path,
                           cur.job);
    return busy_error(db, &cur, "was taken over (this run stops) by", err);
}

mpq_status mpq_db_lease_release(mpq_db *db, const mpq_db_lease *lease, mpq_err *err) {
    sqlite3_stmt *st = NULL;
    mpq_status s;
    if (!db || !lease || !lease->token[0]) return MPQ_OK;
    if ((s = db_prepare(db, "DELETE FROM job_leases WHERE job_id = ?1 AND token = ?2", &st, err)) != MPQ_OK)
        return s;
    sqlite3_bind_int64(st, 1, lease->job_id);
    db_bind_text(st, 2, lease->token);
    s = db_step_done(db, st, "release job lease", err);
    sqlite3_finalize(st);
    return s;
}

mpq_status mpq_db_lease_get(mpq_db *db, int64_t job_id, mpq_db_lease *out, bool *held, mpq_err *err) {
    if (!db || !out || !held) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_db_lease_get: NULL argument");
    memset(out, 0, sizeof *out);
    *held = false;
    if (db->schema_version < 2) return MPQ_OK;
    mpq_status s = read_lease(db, job_id, out, held, err);
    if (s == MPQ_OK && !*held) memset(out, 0, sizeof *out);
    return s;
}
