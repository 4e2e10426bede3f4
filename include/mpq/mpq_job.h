/*
 * mpq_job.h - calibration jobs: the JSON job spec, its stages and work units, and the
 * resumable driver behind `mpq run` / `mpq resume`.
 *
 * A job measures, for one model and one calibration set, how much quantizing each layer
 * (or each block's KV cache) hurts, and stores every number in the results database
 * (mpq_db.h) unit by unit: a unit's metric rows and its "done" mark are written in one
 * transaction, so a job killed at any moment (even SIGKILL) resumes and redoes at most
 * the unit that was in flight. Units are computed independently against the same
 * full-precision reference (recomputed on every run, deterministic), so the same spec
 * gives bit-identical stored numbers whether the job was interrupted or not.
 *
 * ---- Job spec (JSON) ---------------------------------------------------------------------
 *
 *   {
 *     "name": "stories260K-demo",                     required; 1..100 chars [A-Za-z0-9._-]
 *     "description": "free text",                     optional
 *     "model": "../shared/models/stories260K/stories260K.bin",   required: llama2.c file or HF dir
 *     "tokenizer": "../shared/models/stories260K/tok512.bin",    required only for text data
 *     "seed": 1,                                      integer >= 0 (default 1)
 *     "threads": 1,         no effect (integer 1..1024, default 1), accepted for specs of
 *                           earlier versions, which used it to set OpenBLAS threads; numbers
 *                           never depend on a thread count (mpq.h, "BLAS threads"; workers:
 *                           mpq_job_opts.n_workers). Written to the canonical spec only when
 *                           != 1 (older specs keep their hash)
 *     "calibration": {                                required
 *       "data": "../shared/data/tinystories-calib.tok512.u16",   text, .u16 or .u32 tokens
 *       "seq_len": 128,     tokens per window, > 0 (default 128; must be <= the model's seq len)
 *       "n_seqs": 16,       windows, > 0 (default 16)
 *       "seed": 1,          window sampling seed, >= 0 (default: the top-level seed)
 *       "batch": 8          windows per forward batch, > 0 (default 8; part of the
 *                           spec because it fixes the order of floating-point sums)
 *     },
 *     "evaluation": {       optional; same keys except batch (defaults seq_len 256,
 *       "data": "...",      n_seqs 16, seed = top-level seed + 1); recorded as a dataset
 *       ...                 for later `mpq eval` / solver checks, not used by the stages
 *     },
 *     "candidates": ["int2g32", "int3g32", "int4g32", "int8c"],  weight formats (mpq_quant.h);
 *                           required and non-empty when a weight stage is selected
 *     "kv": {               required when kv_sensitivity is selected
 *       "scheme": {"mode": "kivi" | "per-token", "group_size": 32 (> 0), "residual": 0 (>= 0),
 *                  "caq": false (CAQ code adjustment of the KV groups; canonical spec: only if true)},
 *       "pairs": ["k8v8", "k8v4", "k4v8", "k4v4", "k4v2", "k2v4", "k2v2"]   (non-empty)
 *     },
 *     "metrics": ["weight_error", "layer_sensitivity", "kv_sensitivity", "hessian",
 *                 "noise_sensitivity", "fisher"]
 *                           stages to run, in this fixed order whatever the list order
 *                           (default: weight_error + layer_sensitivity, + kv_sensitivity
 *                           when "kv" is given, + hessian when "hessian" is given,
 *                           + noise_sensitivity when "noise" is given)
 *     "hessian": {          optional; only with the hessian metric (an error otherwise)
 *       "probes_min": 10, "probes_max": 200,   Hutchinson probes, 2 <= min <= max <= 100000
 *       "probes_per_unit": 10,                  probes per committed unit, >= 1
 *       "tol": 1e-3,        stop when every layer's relative change of the running mean < tol
 *       "rse_tol": 0.05,    ... and every layer's stderr / |trace| < rse_tol, in (0, 1e6] (a large
 *                           value leaves the relative change alone, as NNCF / PyHessian do)
 *       "n_seqs": 8, "seq_len": 128,  the first n_seqs calibration windows, first seq_len
 *                           tokens of each (defaults capped at calibration.n_seqs / seq_len;
 *                           an explicit value above them is an error)
 *       "seed": S,          probe seed, >= 0 (default: the top-level seed)
 *       "fd_step": 1e-2,    relative step of the Hv central differences, in (0, 0.5]
 *       "eig": true, "eig_iters": 50 (1..10000), "eig_tol": 1e-3 (in (0, 1)), "eig_k": 1 (1..16),
 *       "slq": true, "slq_steps": 30 (1..250), "slq_probes": 4 (1..64),
 *       "fisher": true
 *     }                     defaults from HAWQ-V2 / NNCF (tol, probes) and PyHessian (eig, SLQ)
 *     "noise": {            optional; only with the noise_sensitivity metric (an error otherwise)
 *       "levels": [0.001, 0.01, 0.1],  relative noise levels t = ||E||^2/||W||^2: 1..8 finite
 *                           numbers, strictly increasing, in (0, 10]
 *       "seed": S           noise seed, integer >= 0 (default: the top-level seed)
 *     },
 *     "adaptive": {         optional; only with layer_sensitivity (README "Adaptive measurement")
 *       "budgets": ["avg-bits=3.5"],  1..8 distinct budgets (mpq_budget_parse); required
 *       "min_windows": 8,   windows measured first: 1..n_seqs, a multiple of batch or n_seqs
 *                           (default: batch)
 *       "step": 8,          windows added per round, a positive multiple of batch (default: batch)
 *       "z": 2,             interval half-width in standard errors, (0, 100] (default 2)
 *       "tol": 0            relative regret tolerated, [0, 1] (default 0)
 *     }
 *   }
 *
 * Relative paths are resolved against the CURRENT directory of the process that parses
 * the spec (the examples are written to be run from the project root); the canonical spec
 * stores absolute paths, so `mpq resume` works from any directory. Unknown keys, wrong
 * types, non-integral or out-of-range numbers, duplicate candidates/pairs, unknown
 * candidates, pairs, KV modes or metrics, and missing files are rejected with a message
 * naming the spec file and the key:
 *   "job.json: calibration.n_seqs: expected a positive integer, got -3"
 *   "job.json: model: ../x.bin: cannot open: No such file or directory"
 *
 * The canonical spec is cJSON_PrintUnformatted of the parsed spec with every default
 * filled in and keys in the order above; its SHA-256 identifies the spec in the database.
 *
 * ---- Stages and units ------------------------------------------------------------------
 *
 *   weight_error       unit = one linear layer, key "blk.3.attn_q". Rows: for every
 *                      candidate weight_sse, weight_rel, act_err, act_rel; and the layer's
 *                      xtx_trace with candidate "".
 *   layer_sensitivity  unit = layer x candidate, key "blk.3.attn_q/int4g32". Rows: kl, dloss,
 *                      top1 with their standard error over sequences and n = n_seqs; artifact
 *                      "kl_windows/<layer>/<candidate>" = each window's mean KL (little-endian
 *                      float64, windows in order), stored in the unit's commit. With "adaptive":
 *                      n = the windows measured so far (min_windows in round 0), units
 *                      "round.R/<key>" add `step` windows to the units round R extends (decided
 *                      from the rows stored when round R-1 ended, artifact "adaptive.round.R"),
 *                      and each commit stores "adaptive.state/<layer>/<candidate>" (the running
 *                      sums the next round continues bit for bit). Refused under MPI.
 *   kv_sensitivity     unit = block x pair, key "blk.3.kv/k4v2". Rows: kv_kl, kv_dloss,
 *                      kv_top1 (with standard errors), kv_attn_rel, stored against a layer
 *                      row "blk.3.kv" of kind "kv_cache" (rows 0, cols = kv dim, n_params 0)
 *                      added to the model's layer table.
 *   hessian            units (keys), all over the same Hessian of the mean next-token loss on
 *                      the hessian windows (mpq_hessian.h), run in this order:
 *                      "trace/chunk.K"  probes K*ppu+1 .. (K+1)*ppu of ONE adaptive Hutchinson
 *                                       run (mpq_hessian_hutch_*); stores the estimator's
 *                                       saved state (artifact "hessian.trace.K", the versioned
 *                                       JSON of mpq_hessian_hutch_save, written before the unit
 *                                       commits and rewritten identically on a redo); after
 *                                       convergence the remaining chunks do nothing. Rows: none.
 *                      "trace/<layer>"  rows hutchinson_trace (se, n = probes),
 *                                       hutchinson_trace_per_param (se / n_params),
 *                                       hessian_converged (0/1: the stopping rule held at the
 *                                       last probe), hessian_rel_change (last relative change),
 *                                       hessian_converged_at (first probe at which the layer met
 *                                       the rule; +inf if never), and per job
 *                                       candidate hawq_omega = trace/n_params * ||Q_c(W)-W||^2
 *                                       (se = trace se / n_params * same, n = probes).
 *                      "fisher"         fisher_trace per layer (n = n_seqs).
 *                      "eig/<layer>"    top_eig (n = iterations) of the layer's diagonal block.
 *                      "eig/model"      top_eig_1 .. top_eig_k (layer NULL), whole model.
 *                      "slq/probe.P"    slq_node_i / slq_weight_i (layer NULL, i = P*steps + j,
 *                                       weights divided by slq_probes so all sum to 1; start
 *                                       vector seeded by seed + P), and slq_trace_P = n * sum
 *                                       weight*node*slq_probes (this probe's estimate of Tr H).
 *                      Same spec => the same numbers however the stage was interrupted.
 *   noise_sensitivity  unit = one linear layer, key "blk.3.attn_q" (Q-Palette's linear loss
 *                      model dKL ~= a_l * ||Q(W)-W||^2/||W||^2). For each level t_i the layer's
 *                      W is replaced by W + E_i, E_i Gaussian (seeded by noise.seed, the layer
 *                      index and i; see search/job_noise.c) rescaled so that
 *                      ||E_i||^2/||W||^2 = t_i, and measured exactly as layer_sensitivity
 *                      (mean KL over the calibration windows). Rows (candidate ""):
 *                      noise_kl_<i> (i = 0.., se over sequences, n = n_seqs), noise_a = the
 *                      weighted least-squares slope through the origin with weights 1/t_i^2,
 *                      i.e. the mean of kl_i / t_i (se = their standard deviation / sqrt(m),
 *                      NaN-free: 0 when m = 1), noise_resid = sqrt(mean_i ((kl_i - a t_i) /
 *                      (a t_i))^2), the relative RMS deviation from the line (n = m levels).
 *                      Provenance "noise": {seed, levels, realized}: realized = the relative
 *                      noise of the float weights actually used (the fit uses these).
 *   fisher             unit = one transformer block, key "blk.3": one forward + backward of
 *                      the FP model per calibration batch (mpq_fisher.h). Rows: for every
 *                      linear layer of the block and every candidate fisher_err (se over
 *                      windows, n = n_seqs). Only when listed in metrics; needs candidates.
 * Every row carries provenance JSON: stage, seed, n_seqs, seq_len, batch, data_sha256,
 * model_sha256, mpq_version, candidate, and for KV rows the scheme; hessian rows also carry
 * "hessian": {seed, probes_min, probes_max, tol, rse_tol, fd_step, n_seqs, seq_len} (and
 * eig_iters, eig_tol or slq_steps, slq_probes where they apply).
 *
 *     mpq_job_spec *spec = NULL;
 *     mpq_err err = {0};
 *     if (mpq_job_spec_load("examples/stories260K.json", &spec, &err) != MPQ_OK) ...
 *     mpq_db *db = NULL;
 *     mpq_db_open("examples/mpq.db", MPQ_DB_CREATE, &db, &err);
 *     mpq_job_signals_install(&err);                 // SIGINT/SIGTERM -> stop after the unit
 *     mpq_job_opts o = mpq_job_opts_default();
 *     int64_t job_id;
 *     mpq_status st = mpq_job_run(db, spec, &o, &job_id, &err);  // MPQ_ERR_INTERRUPTED: resumable
 *     mpq_db_close(db);
 *     mpq_job_spec_free(spec);
 */
#ifndef MPQ_JOB_H
#define MPQ_JOB_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- stages ----------------------------------------------------------------------------- */

typedef enum mpq_job_stage {
    MPQ_JOB_STAGE_WEIGHT_ERROR = 0,
    MPQ_JOB_STAGE_LAYER_SENSITIVITY,
    MPQ_JOB_STAGE_KV_SENSITIVITY,
    MPQ_JOB_STAGE_HESSIAN,
    MPQ_JOB_STAGE_NOISE,
    MPQ_JOB_STAGE_FISHER
} mpq_job_stage;

#define MPQ_JOB_N_STAGES 6

/* "weight_error", "layer_sensitivity", "kv_sensitivity", "hessian", "noise_sensitivity",
 * "fisher" (static); "?" for other values. */
const char *mpq_job_stage_name(mpq_job_stage s);
/* Stage by name; MPQ_ERR_INVALID naming the string if unknown. */
mpq_status mpq_job_stage_parse(const char *name, mpq_job_stage *out, mpq_err *err);

/* ---- spec ------------------------------------------------------------------------------- */

typedef struct mpq_job_data_spec {
    char *data;     /* absolute path (malloc'd); NULL when the section is absent */
    int seq_len;
    int n_seqs;
    int64_t seed;
    int batch;      /* calibration only (evaluation: 0) */
} mpq_job_data_spec;

/* The "hessian" section (see the top of this file for keys, ranges and defaults). */
typedef struct mpq_job_hessian_spec {
    int probes_min, probes_max; /* Hutchinson probes (HAWQ-V2 / NNCF: 10, 200) */
    int probes_per_unit;        /* probes per committed unit (10); does not change any number */
    double tol, rse_tol;        /* stopping rule (1e-3, 0.05): mpq_hessian_trace_opts */
    double fd_step;             /* relative finite-difference step of Hv (1e-2) */
    int n_seqs, seq_len;        /* the first n_seqs calibration windows, first seq_len tokens */
    int64_t seed;               /* probes / start vectors (default: the top-level seed) */
    bool eig;                   /* per-layer and whole-model top eigenvalues (true) */
    int eig_iters;              /* power iterations at most (50) */
    double eig_tol;             /* relative change of the eigenvalue to stop (1e-3, PyHessian) */
    int eig_k;                  /* whole-model top-k eigenvalues (1, PyHessian top_n) */
    bool slq;                   /* spectral density by SLQ (true) */
    int slq_steps, slq_probes;  /* Lanczos steps per probe (30), probes (4) */
    bool fisher;                /* empirical Fisher traces (true) */
} mpq_job_hessian_spec;

/* The "noise" section (see the top of this file). */
#define MPQ_JOB_NOISE_MAX_LEVELS 8
typedef struct mpq_job_noise_spec {
    int n_levels;                             /* 1..MPQ_JOB_NOISE_MAX_LEVELS (default 3) */
    double levels[MPQ_JOB_NOISE_MAX_LEVELS];  /* relative noise ||E||^2/||W||^2, increasing */
    int64_t seed;                             /* noise seed (default: the top-level seed) */
} mpq_job_noise_spec;

/* The "adaptive" section: adaptive measurement of layer_sensitivity (README "Adaptive
 * measurement"). Units first measure the first min_windows calibration windows; then, round
 * by round, `step` more windows are added only to the units whose interval
 * kl +- z * kl_se could change the solution (GLPK ILP on kl) at one of the budgets to one
 * better by more than tol x the predicted kl. */
#define MPQ_JOB_ADAPTIVE_MAX_BUDGETS 8
typedef struct mpq_job_adaptive_spec {
    bool enabled;                  /* the section was given */
    int n_budgets;                 /* 1..MPQ_JOB_ADAPTIVE_MAX_BUDGETS */
    char budgets[MPQ_JOB_ADAPTIVE_MAX_BUDGETS][64]; /* canonical texts ("avg-bits=3.5", mpq_budget_parse) */
    int min_windows;               /* 1..n_seqs, a multiple of calibration.batch or n_seqs (default: batch) */
    int step;                      /* >= 1, a multiple of calibration.batch (default: batch) */
    double z;                      /* interval half-width in standard errors, (0, 100] (default 2) */
    double tol;                    /* relative regret tolerated, [0, 1] (default 0: any change of the
                                      solution extends the unit) */
} mpq_job_adaptive_spec;

/* A parsed, validated and defaulted spec. All strings malloc'd and owned by the spec. */
typedef struct mpq_job_spec {
    char *name;
    char *description;         /* NULL if absent */
    char *model;               /* absolute path */
    char *tokenizer;           /* absolute path or NULL */
    int64_t seed;
    mpq_job_data_spec calib;
    mpq_job_data_spec eval;    /* eval.data NULL: no evaluation section */
    char **candidates;         /* canonical candidate names (mpq_candidate_parse) */
    int n_candidates;
    bool has_kv;
    mpq_kv_scheme kv_scheme;
    char **kv_pairs;           /* canonical pair names ("k4v2") */
    int n_kv_pairs;
    bool stages[MPQ_JOB_N_STAGES]; /* selected stages */
    char *canonical_json;      /* cJSON_PrintUnformatted of the defaulted spec */
    char sha256[65];           /* SHA-256 of canonical_json */
    char source[256];          /* file name used in messages ("job.json") */
    mpq_job_hessian_spec hessian; /* defaulted; meaningful when stages[MPQ_JOB_STAGE_HESSIAN] */
    int threads;               /* no effect; accepted for older specs (default 1) */
    mpq_weights_dtype weights_dtype; /* "weights_dtype": storage of the model's linear layers
                                        (mpq_model_load_dtype); default f32 */
    mpq_job_noise_spec noise;  /* defaulted; meaningful when stages[MPQ_JOB_STAGE_NOISE] */
    bool kv_per_head;          /* kv.per_head (default false): kv_sensitivity also measures each
                                  (block, KV head, pair) alone; kv.scheme.group_size must divide
                                  the model's head_dim (checked by mpq_job_units) */
    mpq_job_adaptive_spec adaptive; /* enabled only with layer_sensitivity */
} mpq_job_spec;

/* Parses JSON text. `source` names the text in error messages (e.g. the spec's file name;
 * NULL = "spec"). Paths are resolved against the current directory and must exist.
 * On success *out is owned by the caller (mpq_job_spec_free). Errors: MPQ_ERR_FORMAT (not
 * JSON, "job.json: not valid JSON near line 3"), MPQ_ERR_INVALID (a key's type or value:
 * the message names the key), MPQ_ERR_IO (a referenced file cannot be opened), NOMEM. */
mpq_status mpq_job_spec_parse(const char *json, const char *source, mpq_job_spec **out, mpq_err *err);
/* Parses a spec as stored in the database (its canonical JSON): the same checks as
 * mpq_job_spec_parse, but no referenced file is opened - paths must be absolute and are taken
 * as they are (the model or data may have moved since). Used by mpq_job_open. */
mpq_status mpq_job_spec_parse_stored(const char *json, const char *source, mpq_job_spec **out, mpq_err *err);
/* Reads and parses a spec file (messages are prefixed with the file's base name as given).
 * MPQ_ERR_IO if the file cannot be read, else as mpq_job_spec_parse. */
mpq_status mpq_job_spec_load(const char *path, mpq_job_spec **out, mpq_err *err);
void mpq_job_spec_free(mpq_job_spec *spec); /* accepts NULL */

/* ---- units ------------------------------------------------------------------------------ */

typedef struct mpq_job_unit {
    mpq_job_stage stage;
    char key[MPQ_DB_NAME_MAX]; /* "blk.3.attn_q", "blk.3.attn_q/int4g32", "blk.3.kv/k4v2" */
    int linear_index;          /* index into mpq_model_linear, -1 for KV units */
    int block;                 /* transformer block */
    int option;                /* index into spec->candidates or spec->kv_pairs; -1 for weight_error */
    bool kv_head_unit;         /* a per-head kv_sensitivity unit ("blk.3.kv/k4v2@h1", kv.per_head) */
    int kv_head;               /* its KV head (0 otherwise) */
    int round;                 /* adaptive layer_sensitivity: 0 = the first min_windows windows,
                                  r >= 1 = the unit's extension in round r (key "round.r/<layer>/<cand>");
                                  0 otherwise. mpq_job_units lists round 0 only */
} mpq_job_unit;

/* Every unit of the spec's selected stages on model m, in run order (stage, then layer/block,
 * then candidate/pair). *out malloc'd (free()), *n_out its length. MPQ_ERR_NOMEM,
 * MPQ_ERR_INVALID (a key longer than MPQ_DB_NAME_MAX-1). */
mpq_status mpq_job_units(const mpq_job_spec *spec, const mpq_model *m, mpq_job_unit **out, int *n_out,
                         mpq_err *err);

/* SHA-256 identity of a model path: of the file itself, or for a directory of the list
 * "<name> <sha256 of file>\n" over its regular files in name order. */
mpq_status mpq_job_model_sha256(const char *path, char out[65], mpq_err *err);

/* ---- stored jobs ------------------------------------------------------------------------ */

/* A job as stored in a results database: opened by name or id, it holds the job row, the
 * spec parsed once in stored form (mpq_job_spec_parse_stored: no file is opened), the
 * stored model row (path, SHA-256, dimensions) and layer table, and a shape-only model built
 * from them (mpq_model_shape_create). Solving, frontiers, exports, plots and reports work
 * from these alone, with the model file gone. The model, the evaluation windows and the FP
 * reference are loaded only when asked (mpq_job_load_model, mpq_job_load_evalset), and the
 * model file read is checked against the SHA-256 the job recorded: a missing file is
 * MPQ_ERR_IO naming it and the SHA-256 it must have, a changed file MPQ_ERR_INVALID naming
 * the file and both hashes.
 *
 *     mpq_job *job = NULL;
 *     if (mpq_job_open(db, "stories260K-demo", &job, &err) != MPQ_OK) ...   // or "3" (an id)
 *     const mpq_job_spec *spec = mpq_job_get_spec(job);         // spec->candidates ...
 *     for (int i = 0; i < mpq_job_n_linear(job); i++) use(mpq_job_linear(job, i));
 *     const mpq_model *m = NULL;
 *     if (mpq_job_load_model(job, &m, &err) != MPQ_OK) ...      // only when weights are needed
 *     mpq_job_close(job);
 *
 * Not thread-safe: one thread uses a handle at a time. db is borrowed and must outlive it. */
typedef struct mpq_job mpq_job;

/* Opens job `job` (a name, or a decimal id when no job has that name). MPQ_ERR_NOTFOUND (no
 * such job), MPQ_ERR_FORMAT (stored spec or layer table unreadable), MPQ_ERR_DB, NOMEM.
 * *out owned by the caller (mpq_job_close). */
mpq_status mpq_job_open(mpq_db *db, const char *job, mpq_job **out, mpq_err *err);
mpq_status mpq_job_open_id(mpq_db *db, int64_t job_id, mpq_job **out, mpq_err *err);
void mpq_job_close(mpq_job *job); /* accepts NULL */

/* Borrowed, valid until mpq_job_close. */
mpq_db *mpq_job_db(const mpq_job *job);
const mpq_db_job *mpq_job_get_row(const mpq_job *job);
const mpq_job_spec *mpq_job_get_spec(const mpq_job *job);
const mpq_db_model_row *mpq_job_get_model_row(const mpq_job *job); /* recorded path and sha256 */
/* The stored layer table: linear layers in model order, then one "blk.N.kv" row per block
 * (kind "kv_cache") when the job stored them (mpq_job_kv_layer returns NULL otherwise). */
int mpq_job_n_linear(const mpq_job *job);
const mpq_db_layer *mpq_job_linear(const mpq_job *job, int i);
int mpq_job_n_blocks(const mpq_job *job);
const mpq_db_layer *mpq_job_kv_layer(const mpq_job *job, int block);
/* Index of a linear layer by stable or HF name (with or without ".weight"); -1 if none. */
int mpq_job_find_linear(const mpq_job *job, const char *name);
/* The shape-only model of the stored table: for configs (mpq_config.h) and export plans. */
const mpq_model *mpq_job_get_shape(const mpq_job *job);

/* The job's model, loaded on first call from the stored spec's path, checked against the
 * recorded SHA-256 and the stored layer table. *out borrowed until mpq_job_close. */
mpq_status mpq_job_load_model(mpq_job *job, const mpq_model **out, mpq_err *err);
/* Checks that the model, data and tokenizer files of the stored spec exist (without reading
 * them): MPQ_ERR_IO naming the missing file and, for the model, the SHA-256 it must match. */
mpq_status mpq_job_check_files(mpq_job *job, mpq_err *err);

/* The evaluation windows of a job and the FP reference on them. */
typedef struct mpq_job_evalset {
    const mpq_model *model;        /* the job's model (mpq_job_load_model) */
    mpq_exec *ex;                  /* executor of up to 8 windows of seq_len tokens */
    const mpq_exec_ref *ref;       /* FP reference of every window */
    const char *source;            /* "evaluation" (spec section) or "calibration" (fallback) */
    const mpq_job_data_spec *data; /* that section of the stored spec */
    const char *data_path;
    const char *data_sha256;       /* of the data file (checked against the recorded one) */
    int n_seqs, seq_len;           /* windows used (at most max_seqs of the section's) */
    int64_t seed;
} mpq_job_evalset;

/* Loads the model, tokenizer and data of the stored spec's "evaluation" section (else
 * "calibration"), draws at most max_seqs (<= 0: all) of its windows and runs the FP
 * reference; kept until mpq_job_close, rebuilt only when max_seqs changes. *out borrowed
 * (its exec is used by the caller for evaluations; do not free). MPQ_ERR_IO / MPQ_ERR_INVALID
 * as mpq_job_load_model, data errors naming the file. */
mpq_status mpq_job_load_evalset(mpq_job *job, int max_seqs, const mpq_job_evalset **out, mpq_err *err);

/* The job's calibration: its model (mpq_job_load_model; borrowed by *out, which must be freed
 * before mpq_job_close), the calibration windows of the stored spec (the data hash checked
 * against the recorded one) and the FP reference with every linear layer's X^T X
 * (mpq_calib_xtx_packed): what the SAQ candidates need to be applied (mpq_config_apply_xtx). Free
 * *out with mpq_calib_free. MPQ_ERR_IO / MPQ_ERR_INVALID naming the file, MPQ_ERR_NOMEM. */
typedef struct mpq_calib mpq_calib;
mpq_status mpq_job_calib_create(mpq_job *job, mpq_calib **out, mpq_err *err);

/* Threads the evaluations of this job use (mpq_jobsolve_evaluate_*, mpq_kvsearch_eval_run),
 * each with its own executor, taking whole batches (mpq_exec_eval_ref_workers): the numbers
 * do not depend on it. n <= 0 (the default): one per processor (mpq_job_default_workers). */
void mpq_job_set_eval_workers(mpq_job *job, int n);
int mpq_job_eval_workers(const mpq_job *job); /* the resolved count, >= 1 */

/* ---- driver ----------------------------------------------------------------------------- */

typedef enum mpq_job_event {
    MPQ_JOB_EVENT_REFERENCE = 0, /* FP reference pass finished (seconds = its duration) */
    MPQ_JOB_EVENT_STAGE_START,
    MPQ_JOB_EVENT_UNIT_DONE,     /* a unit was committed */
    MPQ_JOB_EVENT_UNIT_FAILED,   /* a unit failed (message in `message`); the job goes on */
    MPQ_JOB_EVENT_STAGE_END
} mpq_job_event;

/* What a progress callback receives; borrowed for the call only. */
typedef struct mpq_job_progress {
    mpq_job_event event;
    const char *job;         /* job name */
    const char *stage;       /* stage name (NULL for REFERENCE) */
    int stage_index;         /* 1-based among the selected stages */
    int n_stages;
    int64_t stage_done;      /* units of the stage done (including earlier runs) */
    int64_t stage_total;
    int64_t run_done;        /* units committed by this run (all stages) */
    double rate;             /* units/s of this run in this stage (0 until one is done) */
    double eta_seconds;      /* remaining units of the stage / rate (-1 unknown) */
    double seconds;          /* wall time since the stage started (REFERENCE: of the pass) */
    const char *unit_key;    /* UNIT_DONE / UNIT_FAILED */
    const char *message;     /* UNIT_FAILED */
} mpq_job_progress;

/* Called by the driver (never prints itself). May call raise(); the driver does not
 * depend on the callback returning for the durability of committed units. */
typedef void (*mpq_job_progress_fn)(void *user, const mpq_job_progress *p);

typedef struct mpq_job_opts {
    mpq_job_progress_fn progress; /* may be NULL */
    void *progress_user;
    int max_units;                /* stop (as if interrupted) after this many commits; 0 = no limit */
    int n_workers;                /* threads computing units; 0 = mpq_job_default_workers(). Changes
                                     speed and memory (each extra worker holds a copy of the
                                     weights and its activations), never the stored numbers */
} mpq_job_opts;

/* The default worker count: the number of online processors (1..256). */
int mpq_job_default_workers(void);

mpq_job_opts mpq_job_opts_default(void);

/* Creates the job of `spec` in db (or continues it: a job of the same name and the same
 * canonical spec), then runs its pending (and previously failed) units stage by stage.
 * Before anything is written for an existing job, the model and data files are hashed and
 * compared with those recorded at creation; a changed file is refused (MPQ_ERR_INVALID,
 * "job 'x': model /a/b.bin changed since the job was created ..."). *job_id (may be NULL)
 * gets the job's id. Returns MPQ_OK when every unit is done (job status 'done');
 * MPQ_ERR_INTERRUPTED after a stop request (signal or max_units): finished units are
 * committed and the job is marked 'interrupted'; if units failed, the first failure's status
 * with a message counting them (job 'failed'; a later run/resume retries them);
 * MPQ_ERR_INVALID "job 'x' exists with a different spec"; DB / IO / FORMAT errors. */
mpq_status mpq_job_run(mpq_db *db, const mpq_job_spec *spec, const mpq_job_opts *opts, int64_t *job_id,
                       mpq_err *err);

/* Resumes a job by name or id with the spec stored in the database. MPQ_ERR_NOTFOUND if
 * there is no such job; else as mpq_job_run. */
mpq_status mpq_job_resume(mpq_db *db, const char *job, const mpq_job_opts *opts, mpq_err *err);

/* ---- stop requests (signals) ------------------------------------------------------------ */

/* Installs SIGINT and SIGTERM handlers (sigaction, SA_RESETHAND: a second signal acts as
 * usual) that only set the stop flag; the driver finishes and commits the current unit,
 * then returns MPQ_ERR_INTERRUPTED. MPQ_ERR_INVALID if sigaction fails. */
mpq_status mpq_job_signals_install(mpq_err *err);
/* Sets / reads / clears the stop flag (async-signal-safe to set). */
void mpq_job_request_stop(void);
bool mpq_job_stop_requested(void);
void mpq_job_stop_clear(void);
/* Signal number that set the flag (0 if mpq_job_request_stop or none). */
int mpq_job_stop_signal(void);

/* ---- MPI (README "Runs across MPI ranks") ------------------------------------------------
 * Under an MPI launcher, rank 0 calls mpq_job_run / mpq_job_resume as a single process does
 * (it alone opens the database, takes the lease, commits); the other ranks call
 * mpq_job_mpi_serve instead: they receive the job, load its model and data themselves,
 * refuse (reported by rank 0, naming rank and host) if a file's SHA-256 differs from the
 * job's record or the mpq version or OpenBLAS kernel differs from rank 0's, and compute the
 * units of the worker-pool stages rank 0 hands them, each on opts->n_workers threads. The
 * hessian stage runs on rank 0 only. Stored numbers are those of a single process. One job
 * per MPI run: a second mpq_job_run / mpq_job_resume with units to compute on rank 0 of the
 * same run fails with MPQ_ERR_UNSUPPORTED.
 *
 *     int rank, n;
 *     if (mpq_job_mpi_init(&rank, &n, &err) != MPQ_OK) ...    // before any other work
 *     if (rank == 0) st = mpq_job_run(db, spec, &o, NULL, &err);
 *     else st = mpq_job_mpi_serve(&o, &err);
 *     mpq_job_mpi_finalize();                                 // every rank, on every way out */

/* Whether the environment says an MPI launcher started this process: OMPI_COMM_WORLD_SIZE
 * (Open MPI's mpirun / mpiexec) or PMIX_RANK (PMIx launchers, e.g. srun --mpi=pmix) is set. */
bool mpq_job_mpi_launched(void);
/* Whether this build has MPI (Open MPI found when it was configured). */
bool mpq_job_mpi_available(void);
/* Not launched by MPI: *rank = 0, *n_ranks = 1, MPI untouched. Launched: MPI_Init_thread
 * (MPI_THREAD_SERIALIZED) and this process's rank and the number of ranks. MPQ_ERR_UNSUPPORTED
 * when the build has no MPI and the launcher started more than one rank (OMPI_COMM_WORLD_SIZE
 * > 1 or PMIX_RANK > 0), or when MPI cannot give MPI_THREAD_SERIALIZED. Later calls give
 * the same rank and count without initializing again. */
mpq_status mpq_job_mpi_init(int *rank, int *n_ranks, mpq_err *err);
/* On ranks other than 0: serves rank 0 until it finishes (its job, a refusal, or nothing).
 * opts->n_workers threads (0: mpq_job_default_workers of this host); the other fields are
 * unused. Returns MPQ_OK once rank 0 is done (a refusal is reported by rank 0, not here);
 * MPQ_ERR_INVALID on rank 0 or without MPI. A failure of MPI itself aborts every rank
 * (MPI's default error handler). */
mpq_status mpq_job_mpi_serve(const mpq_job_opts *opts, mpq_err *err);
/* Rank 0 tells every other rank to stop and waits for them; then MPI_Finalize. No-op when
 * mpq_job_mpi_init did not initialize MPI. */
void mpq_job_mpi_finalize(void);
/* On rank 0, after mpq_job_run / mpq_job_resume: the units rank `rank` (1 .. n_ranks-1)
 * computed and sent back without error (committed, unless the run stopped on an error
 * first); 0 for other ranks, other processes or without MPI. */
int64_t mpq_job_mpi_units(int rank);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_JOB_H */
