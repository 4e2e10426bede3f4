/*
 * mpq_db.h - the results database: one SQLite file holding models, layer tables,
 * calibration datasets, jobs, work units, every measured metric (with its standard
 * error and provenance), solutions, Pareto frontiers and measured evaluations.
 *
 * The schema is public and stable (users query it with the sqlite3 shell); it is
 * documented in db/schema.c and the README. Files are opened in WAL mode with a
 * 10 s busy timeout and foreign keys on, so `mpq query` can read while a job writes.
 * Writable opens migrate older schemas forward; a file whose schema is newer than
 * this build (MPQ_DB_SCHEMA_VERSION) is refused with MPQ_ERR_UNSUPPORTED, and a file
 * that is not an mpq database or is corrupted with MPQ_ERR_DB — never modified.
 * Several processes may create the same new file at once: the schema is created by one
 * of them, inside a write transaction, and the others see it done.
 *
 * A job has one runner at a time: mpq_db_lease_acquire records the process (pid, host,
 * start time, heartbeat) in job_leases and refuses a second runner with MPQ_ERR_BUSY
 * naming the holder; a dead holder's lease is taken over (see "job leases" below).
 *
 *     mpq_db *db = NULL;
 *     mpq_err err = {0};
 *     if (mpq_db_open("runs.db", MPQ_DB_CREATE, &db, &err) != MPQ_OK) ...
 *     int64_t model_id, job_id, unit_id;
 *     mpq_db_model_upsert(db, &model, layers, n_layers, &model_id, layer_ids, &err);
 *     mpq_db_job_create(db, "s260k-w4", spec_json, model_id, 0, 42, &job_id, NULL, &err);
 *     mpq_db_unit_ensure(db, job_id, "weight_mse", "blk.0.attn_q/int4g128", &unit_id, &err);
 *     mpq_db_unit_start(db, unit_id, &err);
 *     mpq_db_metric rows[1] = {{.layer_id = layer_ids[0], .candidate = "int4g128",
 *                               .metric = "weight_mse", .value = 1e-4, .se = NAN, .n = 4096}};
 *     mpq_db_unit_commit(db, unit_id, rows, 1, &err);   // rows + "done" in one transaction
 *     mpq_db_close(db);
 *
 * Conventions: ids are int64 > 0; an id argument of 0 means "none" (SQL NULL).
 * Timestamps are ISO-8601 UTC text ("2025-01-31T12:00:00.000Z"). All functions
 * that can fail return mpq_status and, on failure, set err with the file name and
 * SQLite's message; database failures are MPQ_ERR_DB. A handle is not thread-safe:
 * use one handle per thread (several handles on one file are fine).
 */
#ifndef MPQ_DB_H
#define MPQ_DB_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Schema version written by this build. */
#define MPQ_DB_SCHEMA_VERSION 2

#define MPQ_DB_NAME_MAX 128  /* layer names, job names, candidates (incl. NUL) */
#define MPQ_DB_SHORT_MAX 64  /* status, solver, kind, timestamps, versions (incl. NUL) */
#define MPQ_DB_KV_PAIR_MAX 512 /* an assignment's kv_pair (incl. NUL) */

typedef struct mpq_db mpq_db;

/* ---- open / close / transactions ---------------------------------------------------- */

/* Open flags (bits). Exactly one of READONLY, READWRITE, CREATE. */
#define MPQ_DB_READONLY 0x1u  /* SQLITE_OPEN_READONLY: never creates, never migrates */
#define MPQ_DB_READWRITE 0x2u /* file must exist; migrates an older schema */
#define MPQ_DB_CREATE 0x4u    /* READWRITE, creating the file if missing */
#define MPQ_DB_NO_CHECK 0x8u  /* skip PRAGMA quick_check on open (large files) */

/* Opens (and, when writable, creates/migrates) the database at path. On success *out
 * owns the handle (close with mpq_db_close). Errors: MPQ_ERR_INVALID (flags),
 * MPQ_ERR_IO (cannot open or create the file; a writable open of a file or directory
 * that cannot be written: "x.db: cannot write (Read-only file system): ..."),
 * MPQ_ERR_DB (not an SQLite file, corrupted, not an mpq database, SQLite failure),
 * MPQ_ERR_UNSUPPORTED (schema newer than this build). A refused file is not modified.
 * READONLY never writes: a WAL-mode file whose -shm cannot be created (read-only
 * directory or file system) is read as an immutable file when it has no -wal file with
 * content (https://sqlite.org/wal.html#readonly); with such a -wal file it is refused
 * with MPQ_ERR_IO naming the -wal file, since its changes could not be read. */
mpq_status mpq_db_open(const char *path, unsigned flags, mpq_db **out, mpq_err *err);
/* Closes the handle (rolls back an open transaction). Accepts NULL. */
void mpq_db_close(mpq_db *db);

/* Borrowed; valid until mpq_db_close. */
const char *mpq_db_path(const mpq_db *db);
/* Schema version of the open file (== MPQ_DB_SCHEMA_VERSION after a writable open). */
int mpq_db_schema_version(const mpq_db *db);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. Functions below that write several rows run in
 * their own transaction, or in a savepoint inside the caller's transaction. begin
 * inside an open transaction returns MPQ_ERR_INVALID. */
mpq_status mpq_db_begin(mpq_db *db, mpq_err *err);
mpq_status mpq_db_commit(mpq_db *db, mpq_err *err);
mpq_status mpq_db_rollback(mpq_db *db, mpq_err *err);

/* PRAGMA integrity_check + foreign_key_check; MPQ_ERR_DB with the first problem. */
mpq_status mpq_db_check(mpq_db *db, mpq_err *err);

/* ---- models, layers, datasets ------------------------------------------------------- */

/* A model as stored (input). Strings may be NULL (stored as NULL / ''). */
typedef struct mpq_db_model {
    const char *path;
    const char *sha256;  /* 64 hex chars; the identity of a model (required) */
    const char *arch;    /* "llama", "mistral", "qwen2" */
    const char *format;  /* "llama2c-legacy", "llama2c-v1", "hf" */
    const char *dtype;   /* source dtype: "F32", "F16", "BF16" */
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int64_t n_params;
} mpq_db_model;

/* One quantizable layer (input to mpq_db_model_upsert, output of mpq_db_layers_fetch).
 * Plain data: does not depend on mpq_model.h. */
typedef struct mpq_db_layer {
    int64_t id;                    /* output only */
    char name[MPQ_DB_NAME_MAX];    /* "blk.3.attn_q" */
    char hf_name[MPQ_DB_NAME_MAX]; /* "model.layers.3.self_attn.q_proj" or "" */
    char kind[MPQ_DB_SHORT_MAX];   /* "attn_q", ..., "ffn_down" */
    int block;
    int64_t rows, cols, n_params;
} mpq_db_layer;

/* Inserts or updates the model (keyed by sha256) and its layer table (keyed by
 * (model, name)), in one transaction. *model_id gets the id; layer_ids (n_layers
 * entries, may be NULL) get the layer ids in input order. */
mpq_status mpq_db_model_upsert(mpq_db *db, const mpq_db_model *model, const mpq_db_layer *layers,
                               int n_layers, int64_t *model_id, int64_t *layer_ids, mpq_err *err);

/* The layer table of a model in insertion (model) order. *out is malloc'd (free()),
 * *n_out its length (0 and *out NULL for a model without layers). */
mpq_status mpq_db_layers_fetch(mpq_db *db, int64_t model_id, mpq_db_layer **out, int *n_out,
                               mpq_err *err);
/* A stored model row (output of mpq_db_model_get). Plain data. */
typedef struct mpq_db_model_row {
    int64_t id;
    char path[4096];              /* as recorded when the model was stored */
    char sha256[65];              /* the identity recorded for the file (or directory) */
    char arch[MPQ_DB_SHORT_MAX];  /* "llama", ... */
    char format[MPQ_DB_SHORT_MAX];
    char dtype[MPQ_DB_SHORT_MAX];
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int64_t n_params;
} mpq_db_model_row;

/* Reads model model_id. MPQ_ERR_NOTFOUND if there is no such model. */
mpq_status mpq_db_model_get(mpq_db *db, int64_t model_id, mpq_db_model_row *out, mpq_err *err);
/* Id of a layer of a model by stable name or HF name; MPQ_ERR_NOTFOUND if none. */
mpq_status mpq_db_layer_find(mpq_db *db, int64_t model_id, const char *name, int64_t *layer_id,
                             mpq_err *err);

/* A calibration / evaluation dataset (input). Identity: (sha256, seq_len, n_seqs, seed). */
typedef struct mpq_db_dataset {
    const char *path;
    const char *sha256; /* of the token/text file (required) */
    int64_t n_tokens;   /* tokens used */
    int seq_len;
    int64_t n_seqs;
    int64_t seed;
} mpq_db_dataset;

mpq_status mpq_db_dataset_upsert(mpq_db *db, const mpq_db_dataset *ds, int64_t *dataset_id,
                                 mpq_err *err);

/* ---- jobs --------------------------------------------------------------------------- */

typedef enum mpq_db_job_status {
    MPQ_DB_JOB_CREATED = 0,
    MPQ_DB_JOB_RUNNING,
    MPQ_DB_JOB_DONE,
    MPQ_DB_JOB_FAILED,
    MPQ_DB_JOB_INTERRUPTED
} mpq_db_job_status;

/* "created", "running", "done", "failed", "interrupted" (static). */
const char *mpq_db_job_status_name(mpq_db_job_status s);

typedef struct mpq_db_job {
    int64_t id;
    char name[MPQ_DB_NAME_MAX];
    char spec_sha256[65];
    int64_t model_id;
    int64_t dataset_id; /* 0 = none */
    mpq_db_job_status status;
    char created_at[MPQ_DB_SHORT_MAX];
    char updated_at[MPQ_DB_SHORT_MAX];
    char finished_at[MPQ_DB_SHORT_MAX]; /* "" until done/failed */
    char mpq_version[MPQ_DB_SHORT_MAX];
    int64_t seed;
} mpq_db_job;

/* Creates job `name` with its spec (JSON text, hashed with SHA-256). If a job of that
 * name exists with the same spec hash, returns its id and sets *existed (may be NULL);
 * with a different spec returns MPQ_ERR_INVALID "job 'x' exists with a different spec".
 * Records mpq_version() and the creation time. dataset_id 0 = none. */
mpq_status mpq_db_job_create(mpq_db *db, const char *name, const char *spec_json, int64_t model_id,
                             int64_t dataset_id, int64_t seed, int64_t *job_id, bool *existed,
                             mpq_err *err);
/* Sets the status (and updated_at; finished_at for done/failed). MPQ_ERR_NOTFOUND if no job.
 * Stored as given; readers (mpq_db_job_get, the JOBS report) show a 'running' job with no
 * live lease as 'interrupted' (its runner was killed). */
mpq_status mpq_db_job_set_status(mpq_db *db, int64_t job_id, mpq_db_job_status status,
                                 mpq_err *err);
/* Finds a job by name, or by decimal id when no job has that name. MPQ_ERR_NOTFOUND. */
mpq_status mpq_db_job_find(mpq_db *db, const char *name_or_id, mpq_db_job *out, mpq_err *err);
mpq_status mpq_db_job_get(mpq_db *db, int64_t job_id, mpq_db_job *out, mpq_err *err);
/* The job's spec JSON, malloc'd NUL-terminated into *out (free()). */
mpq_status mpq_db_job_spec(mpq_db *db, int64_t job_id, char **out, mpq_err *err);
/* Deletes a job and everything it owns (units, metrics, solutions, frontiers, evaluations,
 * artifacts). Models, layers and datasets stay. */
mpq_status mpq_db_job_delete(mpq_db *db, int64_t job_id, mpq_err *err);

/* ---- job leases (one runner per job) ------------------------------------------------- */

/* A lease held by a process on another host is live while its heartbeat is younger
 * than this (the holder refreshes it with every committed unit and every 30 s while it
 * waits for workers). A lease of this host is live while its process exists. */
#define MPQ_DB_LEASE_TIMEOUT_S 600

typedef struct mpq_db_lease {
    int64_t job_id;
    char job[MPQ_DB_NAME_MAX];           /* job name (output) */
    char token[33];                      /* random; identifies this holder's run */
    int64_t pid;
    int64_t pid_start;                   /* process start (clock ticks after boot), 0 unknown */
    char host[MPQ_DB_NAME_MAX];
    char started_at[MPQ_DB_SHORT_MAX];
    char heartbeat_at[MPQ_DB_SHORT_MAX];
    bool live;                           /* mpq_db_lease_get: the holder is alive by the rules above */
} mpq_db_lease;

/* Makes this process the runner of job_id, in one write transaction (a savepoint inside
 * the caller's): with no lease, or a lease whose holder is dead, writes a new one into
 * *out (the previous holder, if any, into *prev when prev != NULL, else prev->pid = 0).
 * A live lease of another run is refused with MPQ_ERR_BUSY:
 * "x.db: job 'a' is being run by pid 123 on host h since T (last heartbeat T2)". */
mpq_status mpq_db_lease_acquire(mpq_db *db, int64_t job_id, mpq_db_lease *out, mpq_db_lease *prev,
                                mpq_err *err);
/* Refreshes heartbeat_at of the lease. MPQ_ERR_BUSY when the lease is no longer ours
 * (taken over: message names the new holder), MPQ_ERR_DB on failure. Joins the caller's
 * transaction if one is open (so a unit commit and its lease check are one transaction). */
mpq_status mpq_db_lease_heartbeat(mpq_db *db, const mpq_db_lease *lease, mpq_err *err);
/* Deletes the lease if it is still ours (nothing happens otherwise). Accepts NULL lease or
 * one with an empty token. */
mpq_status mpq_db_lease_release(mpq_db *db, const mpq_db_lease *lease, mpq_err *err);
/* The lease of job_id, if any: *held false (and *out zeroed) when there is none, or when
 * the file predates leases (schema 1). out->live tells whether the holder is alive. */
mpq_status mpq_db_lease_get(mpq_db *db, int64_t job_id, mpq_db_lease *out, bool *held, mpq_err *err);

/* ---- units (resumable work) --------------------------------------------------------- */

typedef enum mpq_db_unit_status {
    MPQ_DB_UNIT_PENDING = 0,
    MPQ_DB_UNIT_DONE,
    MPQ_DB_UNIT_FAILED
} mpq_db_unit_status;

typedef struct mpq_db_unit {
    int64_t id;
    int64_t job_id;
    char stage[MPQ_DB_NAME_MAX];
    char key[MPQ_DB_NAME_MAX];
    mpq_db_unit_status status;
    int attempts;
} mpq_db_unit;

/* Makes sure unit (job, stage, key) exists (inserted as pending) and returns its id. */
mpq_status mpq_db_unit_ensure(mpq_db *db, int64_t job_id, const char *stage, const char *key,
                              int64_t *unit_id, mpq_err *err);
/* Marks a unit started: attempts+1, started_at = now (status stays pending). */
mpq_status mpq_db_unit_start(mpq_db *db, int64_t unit_id, mpq_err *err);

/* One measured number. layer_id 0 = whole-model metric (stored as NULL). */
typedef struct mpq_db_metric {
    int64_t layer_id;
    const char *candidate;       /* weight candidate, KV pair, or NULL/"" */
    const char *metric;          /* "weight_mse", "kl", "dloss", "top1", "hutchinson_trace", ... */
    double value;                /* must be finite or +-inf (NaN is refused) */
    double se;                   /* standard error; NaN = unknown (stored NULL) */
    int64_t n;                   /* samples behind value (0 = unknown, stored NULL) */
    const char *provenance_json; /* seed, probes, tol, data sha256...; may be NULL */
} mpq_db_metric;

/* THE resumability primitive: stores a unit's metric rows (INSERT OR REPLACE) and marks
 * the unit done (finished_at, seconds since started_at) in ONE transaction (a savepoint
 * if the caller holds one). On any failure nothing is stored and the unit stays as it was.
 * MPQ_ERR_INVALID if the unit is already done or a row is invalid; MPQ_ERR_NOTFOUND. */
mpq_status mpq_db_unit_commit(mpq_db *db, int64_t unit_id, const mpq_db_metric *rows, int n_rows,
                              mpq_err *err);
/* Marks a unit failed, with a message (may be NULL). Failed units are not pending. */
mpq_status mpq_db_unit_fail(mpq_db *db, int64_t unit_id, const char *message, mpq_err *err);
/* Sets every failed unit of a job (stage NULL = all stages) back to pending. */
mpq_status mpq_db_units_retry_failed(mpq_db *db, int64_t job_id, const char *stage, mpq_err *err);

/* Pending units of a job's stage (stage NULL = all), in id order. *out malloc'd (free()). */
mpq_status mpq_db_units_pending(mpq_db *db, int64_t job_id, const char *stage, mpq_db_unit **out,
                                int *n_out, mpq_err *err);
/* Counts of a job's stage (stage NULL = all): done, total, failed (each may be NULL). */
mpq_status mpq_db_units_count(mpq_db *db, int64_t job_id, const char *stage, int64_t *n_done,
                              int64_t *n_total, int64_t *n_failed, mpq_err *err);

/* ---- metrics ------------------------------------------------------------------------ */

/* Stores rows for a job (INSERT OR REPLACE), unit_id 0 = none, in one transaction. */
mpq_status mpq_db_metric_put(mpq_db *db, int64_t job_id, int64_t unit_id, const mpq_db_metric *rows,
                             int n_rows, mpq_err *err);
/* One metric value: layer_id 0 = whole model, candidate NULL = "". se gets NaN when
 * unknown, n 0. Outputs may be NULL. MPQ_ERR_NOTFOUND if absent. */
mpq_status mpq_db_metric_get(mpq_db *db, int64_t job_id, int64_t layer_id, const char *candidate,
                             const char *metric, double *value, double *se, int64_t *n,
                             mpq_err *err);
/* For the solvers: value[i] / se[i] of (job, metric, candidate) for each layer_ids[i]
 * (n entries). Missing entries get NaN; *n_found (may be NULL) counts present ones.
 * se may be NULL. */
mpq_status mpq_db_metric_fetch(mpq_db *db, int64_t job_id, const char *metric, const char *candidate,
                               int n, const int64_t *layer_ids, double *value, double *se,
                               int *n_found, mpq_err *err);
/* Distinct candidates measured for (job, metric), sorted. *out is a malloc'd array of
 * malloc'd strings: free with mpq_db_strings_free(*out, *n_out). */
mpq_status mpq_db_metric_candidates(mpq_db *db, int64_t job_id, const char *metric, char ***out,
                                    int *n_out, mpq_err *err);
void mpq_db_strings_free(char **s, int n); /* accepts NULL */

/* ---- solutions, frontiers, evaluations, artifacts ----------------------------------- */

/* A solution. Input: the char* fields are borrowed from the caller (may be NULL).
 * Output (mpq_db_solution_get): they are malloc'd; release with mpq_db_solution_release. */
typedef struct mpq_db_solution {
    int64_t id;                  /* output */
    int64_t job_id;
    char name[MPQ_DB_NAME_MAX];  /* unique per job: inserting an existing name replaces it */
    char solver[MPQ_DB_SHORT_MAX];  /* "ilp", "pareto", "dp", "greedy", ... */
    char status[MPQ_DB_SHORT_MAX];  /* "optimal", "feasible", "infeasible", "timeout", "error" */
    char *metric_expr;           /* e.g. "kl" or "0.5*kl+dloss" */
    char *budgets_json;          /* e.g. {"bits_per_weight":3.5} */
    char *config_json;           /* exported configuration, may be NULL */
    double objective, bound, gap, seconds; /* NaN = unknown (stored NULL) */
    char created_at[MPQ_DB_SHORT_MAX]; /* output */
} mpq_db_solution;
void mpq_db_solution_release(mpq_db_solution *s); /* frees the char* fields of an output */

/* One layer's choice. Output rows also carry the layer name. */
typedef struct mpq_db_assignment {
    int64_t layer_id;
    char candidate[MPQ_DB_NAME_MAX]; /* weight format, "" if none */
    char kv_pair[MPQ_DB_KV_PAIR_MAX]; /* "k4v2", "" if none; a per-head block whose heads
                                       * differ: the heads' pairs in KV-head order joined by
                                       * "," ("k4v2,k8v4,k4v2,k4v2"), "mixed" if that is
                                       * longer than MPQ_DB_KV_PAIR_MAX - 1 */
    char layer_name[MPQ_DB_NAME_MAX]; /* output only */
} mpq_db_assignment;

/* Inserts a solution and its assignments in one transaction (replacing a solution of
 * the same job and name, with its assignments). */
mpq_status mpq_db_solution_insert(mpq_db *db, const mpq_db_solution *s, const mpq_db_assignment *a,
                                  int n_a, int64_t *solution_id, mpq_err *err);
/* Reads a solution and (if a_out != NULL) its assignments in layer order (malloc'd, free()). */
mpq_status mpq_db_solution_get(mpq_db *db, int64_t solution_id, mpq_db_solution *out,
                               mpq_db_assignment **a_out, int *n_a, mpq_err *err);
/* Id of a job's solution by name; MPQ_ERR_NOTFOUND. */
mpq_status mpq_db_solution_find(mpq_db *db, int64_t job_id, const char *name, int64_t *solution_id,
                                mpq_err *err);

typedef struct mpq_db_frontier_point {
    double cost;         /* resource: bits per weight, bytes, BOPs ... */
    double loss;         /* predicted loss (metric_expr) */
    int64_t solution_id; /* 0 = none */
} mpq_db_frontier_point;

/* Stores a frontier (points kept in the given order, idx 0..n-1) in one transaction. */
mpq_status mpq_db_frontier_insert(mpq_db *db, int64_t job_id, const char *resource,
                                  const char *metric_expr, const mpq_db_frontier_point *pts, int n,
                                  int64_t *frontier_id, mpq_err *err);
/* The newest frontier of a job for (resource, metric_expr) (either may be NULL = any). */
mpq_status mpq_db_frontier_latest(mpq_db *db, int64_t job_id, const char *resource,
                                  const char *metric_expr, int64_t *frontier_id, mpq_err *err);
/* A frontier's points in idx order; *out malloc'd (free()). */
mpq_status mpq_db_frontier_points(mpq_db *db, int64_t frontier_id, mpq_db_frontier_point **out,
                                  int *n_out, mpq_err *err);

/* A measured evaluation of a configuration. Input config_json borrowed; output malloc'd
 * (free() it). */
typedef struct mpq_db_evaluation {
    int64_t id;          /* output */
    int64_t job_id;
    int64_t solution_id; /* 0 = none (e.g. a hand-written config) */
    int64_t dataset_id;  /* 0 = none */
    char *config_json;
    double ppl, kl, kl_stderr, top1, ce; /* NaN = not measured (stored NULL) */
    int64_t n_tokens;
    char created_at[MPQ_DB_SHORT_MAX]; /* output */
} mpq_db_evaluation;

mpq_status mpq_db_evaluation_insert(mpq_db *db, const mpq_db_evaluation *ev, int64_t *evaluation_id,
                                    mpq_err *err);
/* Evaluations of a job in id order; *out malloc'd (free() each config_json, then *out). */
mpq_status mpq_db_evaluations_fetch(mpq_db *db, int64_t job_id, mpq_db_evaluation **out, int *n_out,
                                    mpq_err *err);

/* Named binary blobs of a job (e.g. FP reference logits statistics). put replaces. */
mpq_status mpq_db_artifact_put(mpq_db *db, int64_t job_id, const char *name, const void *data,
                               size_t n, mpq_err *err);
/* *data malloc'd (free()), *n its size. MPQ_ERR_NOTFOUND if absent. */
mpq_status mpq_db_artifact_get(mpq_db *db, int64_t job_id, const char *name, void **data, size_t *n,
                               mpq_err *err);

/* ---- read-only queries (mpq query) -------------------------------------------------- */

typedef enum mpq_db_type {
    MPQ_DB_TYPE_NULL = 0,
    MPQ_DB_TYPE_INTEGER,
    MPQ_DB_TYPE_REAL,
    MPQ_DB_TYPE_TEXT,
    MPQ_DB_TYPE_BLOB
} mpq_db_type;

/* Called once per result row. names/values/types have n_cols entries, borrowed for the
 * call only; values[i] is NULL for SQL NULL, blobs are shown as "<blob N bytes>".
 * Return nonzero to stop (mpq_db_query then returns MPQ_OK). */
typedef int (*mpq_db_row_fn)(void *ud, int n_cols, const char *const *names,
                             const char *const *values, const mpq_db_type *types);

/* Runs one or more SQL statements that only read (SELECT, WITH, EXPLAIN, read-only
 * PRAGMAs such as table_info). Anything that writes, ATTACH/DETACH, transaction control
 * or a PRAGMA assignment is refused with MPQ_ERR_INVALID before anything runs. */
mpq_status mpq_db_query(mpq_db *db, const char *sql, mpq_db_row_fn fn, void *ud, mpq_err *err);

/* A result table: n_rows x n_cols cells, row-major; cell text NULL for SQL NULL. */
typedef struct mpq_db_table {
    int n_cols;
    int n_rows;
    char **names;       /* n_cols */
    char **cells;       /* n_rows * n_cols */
    mpq_db_type *types; /* n_rows * n_cols */
} mpq_db_table;
void mpq_db_table_free(mpq_db_table *t); /* accepts NULL */

/* Same rules as mpq_db_query; the rows of the last statement are collected in *out. */
mpq_status mpq_db_query_table(mpq_db *db, const char *sql, mpq_db_table **out, mpq_err *err);

/* The common questions of `mpq query`, without SQL. */
typedef enum mpq_db_report {
    MPQ_DB_REPORT_JOBS = 0,    /* all jobs with unit progress (job ignored) */
    MPQ_DB_REPORT_LAYERS,      /* the job's model layer table */
    MPQ_DB_REPORT_SENSITIVITY, /* every metric of the job, per layer (layer "" = whole model) */
    MPQ_DB_REPORT_PROGRESS,    /* units done/total/failed per stage */
    MPQ_DB_REPORT_SOLUTIONS,   /* the job's solutions */
    MPQ_DB_REPORT_EVALUATIONS, /* the job's evaluations */
    MPQ_DB_REPORT_FRONTIERS,   /* the job's frontier points */
    MPQ_DB_REPORT_UNAVAILABLE  /* (layer, candidate) stored as not available: layer, candidate,
                                * reason (metric "unavailable", reason from its provenance) */
} mpq_db_report;

/* job: name or decimal id (NULL allowed for MPQ_DB_REPORT_JOBS only). MPQ_ERR_NOTFOUND. */
mpq_status mpq_db_report_table(mpq_db *db, mpq_db_report report, const char *job, mpq_db_table **out,
                               mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_DB_H */
