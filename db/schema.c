/*
 * schema.c - the results database schema (public, stable) and its forward migrations.
 * Reference: SQLite documentation (https://sqlite.org/lang.html, /wal.html,
 * /foreignkeys.html, /lang_createindex.html#indexes_on_expressions).
 *
 * ============================= mpq results database, schema version 2 ================
 *
 * One SQLite file, WAL journal, foreign keys enforced by mpq (PRAGMA foreign_keys=ON).
 * Ids are INTEGER PRIMARY KEY (> 0). Timestamps are ISO-8601 UTC text with
 * milliseconds, "2025-01-31T12:00:00.000Z". Real numbers that are unknown are NULL.
 *
 * schema_version(version INTEGER PRIMARY KEY, applied_at TEXT, mpq_version TEXT)
 *     One row per applied migration; the schema version is MAX(version). A file whose
 *     version is newer than the running mpq is refused, never modified.
 *
 * models(id, path, sha256 UNIQUE NOT NULL, arch, format, dtype, dim, hidden_dim, n_layers,
 *        n_heads, n_kv_heads, vocab_size, seq_len, n_params, created_at)
 *     A model is identified by the SHA-256 of its weights file; path is where it was
 *     last seen.
 *
 * layers(id, model_id -> models, name, hf_name, kind, block, rows, cols, n_params)
 *     UNIQUE(model_id, name). The quantizable linear layers of a model, in model order
 *     (block, then q k v o gate up down). name is GGUF-style "blk.3.attn_q", hf_name the
 *     Hugging Face alias "model.layers.3.self_attn.q_proj"; kind is "attn_q" ... "ffn_down";
 *     rows = out_features, cols = in_features, n_params = rows*cols.
 *
 * datasets(id, path, sha256 NOT NULL, n_tokens, seq_len, n_seqs, seed, created_at)
 *     UNIQUE(sha256, seq_len, n_seqs, seed): calibration or evaluation tokens and how
 *     sequences were drawn from them.
 *
 * jobs(id, name UNIQUE NOT NULL, spec_json, spec_sha256, model_id -> models,
 *      dataset_id -> datasets NULL, status, created_at, updated_at, finished_at,
 *      mpq_version, seed)
 *     status in ('created','running','done','failed','interrupted'). Re-running a spec
 *     with the same name and the same spec_sha256 resumes the job; a different spec
 *     under the same name is refused.
 *
 * units(id, job_id -> jobs, stage, key, status, attempts, started_at, finished_at,
 *       seconds, error)   UNIQUE(job_id, stage, key)
 *     One resumable piece of work (e.g. stage 'weight_mse', key 'blk.0.attn_q/int4g128').
 *     status in ('pending','done','failed'); attempts counts starts; a unit's metrics and
 *     its 'done' mark are written in one transaction, so a killed job redoes at most the
 *     units in flight (pending with started_at set).
 *
 * metrics(id, job_id -> jobs, layer_id -> layers NULL, candidate, metric, value, stderr, n,
 *         unit_id -> units NULL, provenance_json, created_at)
 *     UNIQUE INDEX ux_metrics(job_id, metric, candidate, COALESCE(layer_id, 0)).
 *     One measured number. layer_id NULL = whole-model metric (e.g. FP perplexity);
 *     the uniqueness of (job, layer, candidate, metric) is enforced by a unique index on
 *     an expression because SQL treats NULLs as distinct in a PRIMARY KEY / UNIQUE
 *     constraint. Query whole-model rows with "layer_id IS NULL". candidate is the
 *     weight candidate ("int4g128"), a KV pair ("k4v2") or '' (never NULL). metric is
 *     e.g. 'weight_mse', 'kl', 'dloss', 'top1', 'hutchinson_trace', 'omega'; value is
 *     NOT NULL; stderr is the standard error of value (NULL if unknown), n the number of
 *     samples behind it; provenance_json holds seed, probes, tolerance, data sha256...
 *     A trigger refuses a layer that does not belong to the job's model.
 *
 * solutions(id, job_id -> jobs, name, solver, metric_expr, budgets_json, status, objective,
 *           bound, gap, seconds, created_at, config_json)   UNIQUE(job_id, name)
 *     status in e.g. 'optimal','feasible','infeasible','timeout','error'; objective is
 *     the predicted loss, bound the solver's proven bound, gap = relative MIP gap.
 * assignments(solution_id -> solutions, layer_id -> layers, candidate, kv_pair)
 *     PRIMARY KEY(solution_id, layer_id): per-layer weight format and KV pair ('' = none).
 *
 * frontiers(id, job_id -> jobs, resource, metric_expr, created_at)
 * frontier_points(frontier_id -> frontiers, idx, cost, loss, solution_id -> solutions NULL)
 *     PRIMARY KEY(frontier_id, idx). resource is e.g. 'bits_per_weight', 'bytes', 'bops'.
 *
 * evaluations(id, job_id -> jobs, solution_id -> solutions NULL, config_json,
 *             dataset_id -> datasets NULL, ppl, kl, kl_stderr, top1, ce, n_tokens, created_at)
 *     Measured quality of a configuration with the reference executor.
 *
 * artifacts(job_id -> jobs, name, blob, created_at)   PRIMARY KEY(job_id, name)
 *     Binary data of a job (e.g. stored FP reference statistics).
 *
 * job_leases(job_id -> jobs PRIMARY KEY, token, pid, pid_start, host, started_at,
 *            heartbeat_at)                                        (schema version 2)
 *     The one process running a job (mpq run / resume): at most one row per job. token
 *     is random (hex of 16 bytes) and identifies the holder's run; pid and host name it;
 *     pid_start is the process start time (clock ticks after boot, /proc/PID/stat field
 *     22; NULL where unknown), so a reused pid is not taken for the dead owner;
 *     heartbeat_at is refreshed with every unit the holder commits and at least every
 *     30 s while it waits for workers. A lease is live when its host is this host and
 *     the process pid (with that start time) exists, or its host is another one and the
 *     heartbeat is younger than 600 s (MPQ_DB_LEASE_TIMEOUT_S). A job whose status is
 *     'running' without a live lease was killed: readers show it as 'interrupted' (the
 *     row is not rewritten until the next run takes the lease over).
 *
 * Deleting a job deletes its units, metrics, solutions (+assignments), frontiers
 * (+points), evaluations, artifacts and lease (ON DELETE CASCADE).
 *
 * Views:
 *   v_layer_sensitivity(job, layer, kind, block, candidate, metric, value, stderr, n,
 *                       job_id, layer_id)  -- per-layer metrics with names
 *   v_job_progress(job, stage, done, total, failed, job_id)
 *   v_best_solution(job, metric_expr, budgets_json, solution, solver, status, objective,
 *                   bound, gap, job_id, solution_id)
 *     -- lowest objective per (job, metric_expr, budgets_json) among solutions with status
 *        'optimal' or 'feasible'
 *
 * Example: sqlite3 runs.db "SELECT layer, candidate, value FROM v_layer_sensitivity
 *          WHERE job='s260k' AND metric='kl' ORDER BY value DESC LIMIT 10"
 * ======================================================================================
 *
 * Migrations: mpq_db_migrations[i] takes the schema from version i to i+1; each step is
 * applied in its own transaction together with its schema_version row. Never edit a
 * released step: append a new one and bump MPQ_DB_SCHEMA_VERSION.
 */
#include "db/db_private.h"

#define TS "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))"

static const char m1_tables_a[] =
    "CREATE TABLE schema_version(\n"
    "  version INTEGER PRIMARY KEY,\n"
    "  applied_at TEXT NOT NULL DEFAULT " TS ",\n"
    "  mpq_version TEXT);\n"
    "CREATE TABLE models(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  path TEXT,\n"
    "  sha256 TEXT NOT NULL UNIQUE,\n"
    "  arch TEXT, format TEXT, dtype TEXT,\n"
    "  dim INTEGER, hidden_dim INTEGER, n_layers INTEGER, n_heads INTEGER, n_kv_heads INTEGER,\n"
    "  vocab_size INTEGER, seq_len INTEGER, n_params INTEGER,\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ");\n"
    "CREATE TABLE layers(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,\n"
    "  name TEXT NOT NULL CHECK(name <> ''),\n"
    "  hf_name TEXT, kind TEXT, block INTEGER,\n"
    "  rows INTEGER CHECK(rows >= 0), cols INTEGER CHECK(cols >= 0), n_params INTEGER,\n"
    "  UNIQUE(model_id, name));\n"
    "CREATE TABLE datasets(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  path TEXT,\n"
    "  sha256 TEXT NOT NULL,\n"
    "  n_tokens INTEGER, seq_len INTEGER, n_seqs INTEGER, seed INTEGER,\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ",\n"
    "  UNIQUE(sha256, seq_len, n_seqs, seed));\n"
    "CREATE TABLE jobs(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  name TEXT NOT NULL UNIQUE CHECK(name <> ''),\n"
    "  spec_json TEXT NOT NULL,\n"
    "  spec_sha256 TEXT NOT NULL,\n"
    "  model_id INTEGER NOT NULL REFERENCES models(id),\n"
    "  dataset_id INTEGER REFERENCES datasets(id),\n"
    "  status TEXT NOT NULL DEFAULT 'created'\n"
    "    CHECK(status IN ('created','running','done','failed','interrupted')),\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ",\n"
    "  updated_at TEXT NOT NULL DEFAULT " TS ",\n"
    "  finished_at TEXT,\n"
    "  mpq_version TEXT,\n"
    "  seed INTEGER);\n"
    "CREATE TABLE units(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,\n"
    "  stage TEXT NOT NULL,\n"
    "  key TEXT NOT NULL,\n"
    "  status TEXT NOT NULL DEFAULT 'pending' CHECK(status IN ('pending','done','failed')),\n"
    "  attempts INTEGER NOT NULL DEFAULT 0,\n"
    "  started_at TEXT, finished_at TEXT, seconds REAL, error TEXT,\n"
    "  UNIQUE(job_id, stage, key));\n";

static const char m1_tables_b[] =
    "CREATE TABLE metrics(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,\n"
    "  layer_id INTEGER REFERENCES layers(id),\n"
    "  candidate TEXT NOT NULL DEFAULT '',\n"
    "  metric TEXT NOT NULL CHECK(metric <> ''),\n"
    "  value REAL NOT NULL,\n"
    "  stderr REAL,\n"
    "  n INTEGER,\n"
    "  unit_id INTEGER REFERENCES units(id) ON DELETE SET NULL,\n"
    "  provenance_json TEXT,\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ");\n"
    "CREATE UNIQUE INDEX ux_metrics ON metrics(job_id, metric, candidate, COALESCE(layer_id, 0));\n"
    "CREATE INDEX ix_metrics_unit ON metrics(unit_id);\n"
    "CREATE INDEX ix_metrics_layer ON metrics(layer_id);\n"
    "CREATE TRIGGER tr_metrics_layer_model BEFORE INSERT ON metrics\n"
    "  WHEN NEW.layer_id IS NOT NULL AND\n"
    "       (SELECT model_id FROM layers WHERE id = NEW.layer_id) IS NOT\n"
    "       (SELECT model_id FROM jobs WHERE id = NEW.job_id)\n"
    "BEGIN SELECT RAISE(ABORT, 'metrics: layer does not belong to the job''s model'); END;\n"
    "CREATE TABLE solutions(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,\n"
    "  name TEXT NOT NULL CHECK(name <> ''),\n"
    "  solver TEXT, metric_expr TEXT, budgets_json TEXT, status TEXT,\n"
    "  objective REAL, bound REAL, gap REAL, seconds REAL,\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ",\n"
    "  config_json TEXT,\n"
    "  UNIQUE(job_id, name));\n"
    "CREATE TABLE assignments(\n"
    "  solution_id INTEGER NOT NULL REFERENCES solutions(id) ON DELETE CASCADE,\n"
    "  layer_id INTEGER NOT NULL REFERENCES layers(id),\n"
    "  candidate TEXT NOT NULL DEFAULT '',\n"
    "  kv_pair TEXT NOT NULL DEFAULT '',\n"
    "  PRIMARY KEY(solution_id, layer_id));\n";

static const char m1_tables_c[] =
    "CREATE TABLE frontiers(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,\n"
    "  resource TEXT NOT NULL,\n"
    "  metric_expr TEXT,\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ");\n"
    "CREATE TABLE frontier_points(\n"
    "  frontier_id INTEGER NOT NULL REFERENCES frontiers(id) ON DELETE CASCADE,\n"
    "  idx INTEGER NOT NULL,\n"
    "  cost REAL, loss REAL,\n"
    "  solution_id INTEGER REFERENCES solutions(id) ON DELETE SET NULL,\n"
    "  PRIMARY KEY(frontier_id, idx));\n"
    "CREATE TABLE evaluations(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,\n"
    "  solution_id INTEGER REFERENCES solutions(id) ON DELETE SET NULL,\n"
    "  config_json TEXT,\n"
    "  dataset_id INTEGER REFERENCES datasets(id),\n"
    "  ppl REAL, kl REAL, kl_stderr REAL, top1 REAL, ce REAL, n_tokens INTEGER,\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ");\n"
    "CREATE TABLE artifacts(\n"
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,\n"
    "  name TEXT NOT NULL,\n"
    "  blob BLOB,\n"
    "  created_at TEXT NOT NULL DEFAULT " TS ",\n"
    "  PRIMARY KEY(job_id, name));\n"
    "CREATE INDEX ix_layers_model ON layers(model_id);\n"
    "CREATE INDEX ix_solutions_job ON solutions(job_id);\n"
    "CREATE INDEX ix_frontiers_job ON frontiers(job_id);\n"
    "CREATE INDEX ix_evaluations_job ON evaluations(job_id);\n"
    "CREATE INDEX ix_assignments_layer ON assignments(layer_id);\n";

static const char m1_views[] =
    "CREATE VIEW v_layer_sensitivity AS\n"
    "  SELECT j.name AS job, l.name AS layer, l.kind AS kind, l.block AS block,\n"
    "         m.candidate AS candidate, m.metric AS metric, m.value AS value,\n"
    "         m.stderr AS stderr, m.n AS n, m.job_id AS job_id, m.layer_id AS layer_id\n"
    "  FROM metrics m JOIN jobs j ON j.id = m.job_id JOIN layers l ON l.id = m.layer_id;\n"
    "CREATE VIEW v_job_progress AS\n"
    "  SELECT j.name AS job, u.stage AS stage,\n"
    "         SUM(u.status = 'done') AS done, COUNT(*) AS total,\n"
    "         SUM(u.status = 'failed') AS failed, j.id AS job_id\n"
    "  FROM units u JOIN jobs j ON j.id = u.job_id\n"
    "  GROUP BY u.job_id, u.stage;\n"
    "CREATE VIEW v_best_solution AS\n"
    "  SELECT j.name AS job, s.metric_expr AS metric_expr, s.budgets_json AS budgets_json,\n"
    "         s.name AS solution, s.solver AS solver, s.status AS status,\n"
    "         MIN(s.objective) AS objective, s.bound AS bound, s.gap AS gap,\n"
    "         j.id AS job_id, s.id AS solution_id\n"
    "  FROM solutions s JOIN jobs j ON j.id = s.job_id\n"
    "  WHERE s.status IN ('optimal','feasible') AND s.objective IS NOT NULL\n"
    "  GROUP BY s.job_id, s.metric_expr, s.budgets_json;\n";

/* Version 2: one runner per job. */
static const char m2_leases[] =
    "CREATE TABLE job_leases(\n"
    "  job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,\n"
    "  token TEXT NOT NULL,\n"
    "  pid INTEGER NOT NULL,\n"
    "  pid_start INTEGER,\n"
    "  host TEXT NOT NULL,\n"
    "  started_at TEXT NOT NULL DEFAULT " TS ",\n"
    "  heartbeat_at TEXT NOT NULL DEFAULT " TS ");\n";

/* Version 1: the SQL of one step may be split in parts (C11 guarantees string literals
 * of 4095 characters only); a step ends with NULL. */
static const char *const migration_1[] = {m1_tables_a, m1_tables_b, m1_tables_c, m1_views, NULL};
static const char *const migration_2[] = {m2_leases, NULL};

const char *const *const mpq_db_migrations[] = {
    migration_1,
    migration_2,
};

const int mpq_db_n_migrations = (int)(sizeof mpq_db_migrations / sizeof mpq_db_migrations[0]);

_Static_assert(sizeof mpq_db_migrations / sizeof mpq_db_migrations[0] == MPQ_DB_SCHEMA_VERSION,
               "one migration step per schema version");
