/*
 * mpq_kvsearch.h - KVTuner-style search of per-block KV-cache precision pairs (K bits, V bits)
 * over the sensitivities stored by a job's kv_sensitivity stage, and the joint weight + KV
 * memory budget.
 *
 * Reference: KVTuner (Li et al. 2025, "KVTuner: sensitivity-aware layer-wise mixed precision
 * KV cache quantization"): per-layer pair sensitivity, intra-layer pruning of dominated pairs,
 * inter-layer clustering, multi-objective search of (average KV bits, error). KIVI for the
 * scheme. HAWQ-V3 for the ILP of the joint budget.
 *
 * The steps (each usable alone; `mpq kv` strings them together):
 *  1. mpq_kvsearch_table_load: the per-(block, pair) metric (default kv_kl) and its standard
 *     error, the job's KV scheme and the blocks' KV width.
 *  2. mpq_kvsearch_prune: per block, the pairs on the (equivalent bits, error) Pareto front.
 *     mpq_kvsearch_asymmetry: kXvY vs kYvX comparisons (are keys more sensitive?).
 *  3. mpq_kvsearch_cluster: agglomerative average-linkage clustering of blocks on log(error).
 *  4. mpq_kvsearch_frontier: EXACT frontier of (average KV bits, total predicted error)
 *     through mpq_frontier_exact on integral costs (see "Exact bit units").
 *  5. mpq_kvsearch_joint_*: weights + KV under one byte budget (ILP).
 *  6. mpq_kvsearch_eval_*: measured KL of KV configurations (weights FP) against FP.
 *  7. mpq_kvsearch_kvtuner_json / _parse: {"0": {"nbits_key": 8, "nbits_value": 4}, ...}.
 *  mpq_kvsearch_run runs them all as one request (what `mpq kv` does) and returns a report;
 *  mpq_kvsearch_report_json is that report as JSON.
 *
 * ---- Exact bit units -------------------------------------------------------------------
 * Average bits are ratios of integers. For a block of KV width d (= n_kv_heads * head_dim)
 * with group size G, the stored bits of its K and V caches over a context of L tokens, with
 * R_K / R_V full-precision (fp16) tokens (the residual window; for KIVI keys at least L mod G,
 * as in mpq_kv_bits_per_element), are
 *     K: R_K*16*d + (L-R_K)*(d*b_K + 32*d/G)            (KIVI keys: fp16 scale+zero per
 *                                                        channel per G tokens)
 *        R_K*16*d + (L-R_K)*(d*b_K + 32*ceil(d/G))      (per-token keys)
 *     V: R_V*16*d + (L-R_V)*(d*b_V + 32*ceil(d/G))
 * (16-bit halves: 16*d*L). Multiplied by G every term is an integer: the "units" of a block
 * are G x (K bits + V bits) stored over L tokens, and the block's average bits per element
 * are units / (2*G*d*L). L <= 0 means the steady state (L = 1, no residual, no partial group).
 * Without overhead (nominal bits) the units are simply b_K + b_V and the divisor is 2.
 * So the frontier's costs are integers and mpq_frontier_exact compares them exactly.
 * Scheme saq (rates r in multiples of 1/1024 bit, r*head_dim whole bits; no group): a half is
 *        R*16*d + (L-R)*d*r + (d/head_dim)*16*(head_dim^2 + 2*head_dim)   (bases once per
 *        block; the last term only for L > 0), an integer; units are G x that as above.
 *        Without overhead the units are 1024*(r_K + r_V) and the divisor 2048.
 *
 * Example:
 *     mpq_kvsearch_table *t = NULL;
 *     mpq_kvsearch_table_load(db, job_id, "kv_kl", &t, &err);
 *     bool *keep = calloc(t->n_blocks * t->n_pairs, 1);
 *     mpq_kvsearch_prune(t, 0, true, keep, NULL, &err);
 *     mpq_kvsearch_opts o = mpq_kvsearch_opts_default();
 *     o.keep = keep;
 *     mpq_kvsearch_frontier *f = NULL;
 *     mpq_kvsearch_frontier_compute(t, &o, &f, &err);
 *     size_t k = mpq_kvsearch_frontier_at_bits(f, 3.25);   // largest avg bits <= 3.25
 *     ... f->points[k].pair[b] is the index into t->pairs of block b's pair
 *     mpq_kvsearch_frontier_free(f); free(keep); mpq_kvsearch_table_free(t);
 *
 * Or all of it as one request (what `mpq kv` does; the library never prints):
 *     mpq_kvsearch_request rq = mpq_kvsearch_request_default();
 *     double b = 3.25;
 *     rq.prune = true; rq.budgets = &b; rq.n_budgets = 1;
 *     mpq_kvsearch_report *r = NULL;
 *     if (mpq_kvsearch_run(db, "my-job", &rq, &r, &err) == MPQ_OK) {
 *         const mpq_kvsearch_point *p = &r->frontier->points[r->picks[0].point];
 *         ... p->bits, p->loss, r->picks[0].solution_id (stored as "kv-bits-3.25") ...
 *     }
 *     mpq_kvsearch_report_free(r);
 *
 * Errors: every function that can fail returns mpq_status and takes mpq_err *err last;
 * MPQ_ERR_INVALID for bad arguments, MPQ_ERR_NOTFOUND when the job has no KV rows of the
 * metric, MPQ_ERR_NOMEM, and the statuses of mpq_db / mpq_solvers passed through.
 */
#ifndef MPQ_KVSEARCH_H
#define MPQ_KVSEARCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_solvers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the sensitivity table ---------------------------------------------------------------- */

/* Plain data, owned by whoever created it (mpq_kvsearch_table_free). */
typedef struct mpq_kvsearch_table {
    int n_blocks;
    int n_pairs;
    int kv_dim;                 /* n_kv_heads * head_dim of every block */
    mpq_kv_scheme scheme;
    mpq_kv_pair *pairs;         /* [n_pairs], in the job spec's order */
    char (*pair_names)[16];     /* [n_pairs] "k8v4" */
    int64_t *layer_ids;         /* [n_blocks] database ids of "blk.N.kv" (0 when not from a db) */
    double *err;                /* [n_blocks * n_pairs] metric value (block-major), NaN = not measured */
    double *se;                 /* [n_blocks * n_pairs] standard error, NaN = unknown */
    char metric[64];            /* "kv_kl" */
    int n_heads;                /* per-head table (mpq_kvsearch_table_load_heads): KV heads per block,
                                   its items ("blocks" above) are (block, head) = (i / n_heads, i % n_heads)
                                   and kv_dim is head_dim; 0 = items are blocks */
    int head_dim;               /* scheme saq: head_dim of the model (for the bases; 0 = none counted) */
} mpq_kvsearch_table;

/* An empty table (err and se all NaN, layer_ids 0) for n_blocks x n_pairs pairs (copied).
 * MPQ_ERR_INVALID (sizes, kv_dim <= 0, bits not in {2,3,4,8,16}), MPQ_ERR_NOMEM. */
mpq_status mpq_kvsearch_table_create(int n_blocks, int n_pairs, int kv_dim, const mpq_kv_scheme *scheme,
                                     const mpq_kv_pair *pairs, mpq_kvsearch_table **out, mpq_err *err);
/* Reads job job_id's KV scheme and pairs (its stored spec), its model's "blk.N.kv" layer rows
 * and the metric rows (metric NULL = "kv_kl"). MPQ_ERR_NOTFOUND when the job has no KV
 * section or no row of that metric; MPQ_ERR_FORMAT for a stored spec that cannot be read. */
mpq_status mpq_kvsearch_table_load(mpq_db *db, int64_t job_id, const char *metric, mpq_kvsearch_table **out,
                                   mpq_err *err);
void mpq_kvsearch_table_free(mpq_kvsearch_table *t); /* accepts NULL */

/* Index of a pair in t->pairs, -1 if absent. */
int mpq_kvsearch_pair_index(const mpq_kvsearch_table *t, mpq_kv_pair p);

/* Exact integer units of one block holding pair p (see "Exact bit units"); -1 on overflow. */
int64_t mpq_kvsearch_pair_units(const mpq_kvsearch_table *t, mpq_kv_pair p, int64_t context_len, bool overhead);
/* Units per average bit of one block: 2*G*d*L with overhead (L = 1 when context_len <= 0), 2 without. */
int64_t mpq_kvsearch_units_per_bit(const mpq_kvsearch_table *t, int64_t context_len, bool overhead);
/* Average bits per KV element of a whole assignment (pair index per block). */
double mpq_kvsearch_avg_bits(const mpq_kvsearch_table *t, const int *pair_idx, int64_t context_len, bool overhead);

/* ---- 1. intra-layer pruning ---------------------------------------------------------------- */

/* keep[b * n_pairs + j] (caller buffer) is set true iff pair j of block b is measured and no
 * other measured pair of the block has units <= and error <= with one of them strict (cost in
 * units at context_len, with or without overhead). Pairs equal in both stay. *n_kept (may be
 * NULL) counts kept entries. */
mpq_status mpq_kvsearch_prune(const mpq_kvsearch_table *t, int64_t context_len, bool overhead, bool *keep,
                              int *n_kept, mpq_err *err);

/* ---- K vs V -------------------------------------------------------------------------------- */

/* One comparison in a block: pair hi_k = kXvY and its swap lo_k = kYvX with X > Y. */
typedef struct mpq_kvsearch_kv_cmp {
    int block;
    int hi_k;     /* index of kXvY (keys at the higher precision) */
    int lo_k;     /* index of kYvX (keys at the lower precision) */
    double diff;  /* err(lo_k) - err(hi_k): > 0 means quantizing the keys hurts more */
    double se;    /* sqrt(se(lo_k)^2 + se(hi_k)^2): treats the two as independent, which
                     overstates it when they share sequences (conservative); NaN if unknown */
} mpq_kvsearch_kv_cmp;

/* Every swap-pair comparison present (block-major, then pair order). *out malloc'd (free());
 * *n_out may be 0 (then *out is NULL). */
mpq_status mpq_kvsearch_asymmetry(const mpq_kvsearch_table *t, mpq_kvsearch_kv_cmp **out, int *n_out,
                                  mpq_err *err);

/* ---- 2. inter-layer clustering ------------------------------------------------------------- */

/* Distance between blocks a and b: root mean square over the union U of pairs kept in any
 * block (keep NULL = every pair measured in some block) of log(max(err, 1e-12)) differences;
 * a pair not measured in a block counts as log(max error of the table) + log(100) ("missing
 * = large"). NaN when U is empty. */
double mpq_kvsearch_distance(const mpq_kvsearch_table *t, const bool *keep, int a, int b);

/* Agglomerative clustering with average linkage (UPGMA) on mpq_kvsearch_distance: repeatedly
 * merges the two clusters of smallest average pairwise distance (ties: the lowest cluster
 * indices) while more than n_groups clusters remain (n_groups > 0), or while that distance is
 * <= threshold (n_groups <= 0; threshold >= 0). group[b] (caller buffer of n_blocks) gets
 * group ids 0.. numbered by first block; *n_groups_out the count. Deterministic. */
mpq_status mpq_kvsearch_cluster(const mpq_kvsearch_table *t, const bool *keep, int n_groups, double threshold,
                                int *group, int *n_groups_out, mpq_err *err);

/* ---- 3. frontier ---------------------------------------------------------------------------- */

typedef struct mpq_kvsearch_opts {
    int64_t context_len; /* for overhead / residual accounting; <= 0 = steady state (default 0) */
    bool overhead;       /* the resource: bits with overhead (default true) or nominal (K+V)/2 */
    const bool *keep;    /* NULL or [n_blocks * n_pairs]: only these pairs (mpq_kvsearch_prune) */
    const int *group;    /* NULL or [n_blocks] group ids 0..n_groups-1: a group shares one pair */
    int n_groups;
} mpq_kvsearch_opts;

mpq_kvsearch_opts mpq_kvsearch_opts_default(void);

typedef struct mpq_kvsearch_point {
    int64_t units;        /* total units in the optimized resource (sum over blocks) */
    double bits;          /* average bits per KV element in the optimized resource */
    double bits_nominal;  /* the same assignment: nominal (K+V)/2 */
    double bits_overhead; /* the same assignment: with overhead at opts.context_len */
    double loss;          /* predicted: sum over blocks of the metric (additivity assumed) */
    double loss_se;       /* sqrt of the sum of squared standard errors (NaN if unknown) */
    int *pair;            /* [n_blocks] index into t->pairs (points into the frontier's storage) */
} mpq_kvsearch_point;

typedef struct mpq_kvsearch_frontier {
    int n_blocks;
    size_t n_points;
    mpq_kvsearch_point *points; /* by increasing bits, strictly decreasing loss */
    int64_t units_per_bit;      /* n_blocks * mpq_kvsearch_units_per_bit */
    mpq_kvsearch_opts opts;     /* copy (keep / group pointers are not used after the call) */
    double seconds;
} mpq_kvsearch_frontier;

/* Exact frontier over per-block (or per-group) pairs (mpq_frontier_exact, no monotone
 * smoothing: the losses are the stored ones), each point's assignment recovered.
 * MPQ_ERR_INVALID when a block (group) has no allowed measured pair. */
mpq_status mpq_kvsearch_frontier_compute(const mpq_kvsearch_table *t, const mpq_kvsearch_opts *o,
                                         mpq_kvsearch_frontier **out, mpq_err *err);
void mpq_kvsearch_frontier_free(mpq_kvsearch_frontier *f); /* accepts NULL */
/* Index of the point with the largest average bits <= bits (exact: units <= floor(bits *
 * units_per_bit)); SIZE_MAX if none. */
size_t mpq_kvsearch_frontier_at_bits(const mpq_kvsearch_frontier *f, double bits);

/* Stores the frontier (resource "kv_bits" or "kv_bits_nominal", cost = average bits,
 * metric_expr = t->metric); *frontier_id may be NULL. */
mpq_status mpq_kvsearch_frontier_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                       const mpq_kvsearch_frontier *f, int64_t *frontier_id, mpq_err *err);
/* Stores an assignment as a solution (solver "kv-frontier", assignments kv_pair per block,
 * config_json may be NULL) under name (replacing one of the same name). */
mpq_status mpq_kvsearch_solution_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const char *name,
                                       const int *pair_idx, double loss, const char *budgets_json,
                                       const char *config_json, int64_t *solution_id, mpq_err *err);
/* Stores the pruning (artifact "kv_prune") and the groups (artifact "kv_clusters") as JSON:
 *   kv_prune:    {"metric":"kv_kl","context":0,"overhead":true,"layers":{"blk.0.kv":["k8v8",..],..}}
 *   kv_clusters: {"metric":"kv_kl","n_groups":3,"threshold":0.5,"groups":[[0,1],[2,3,4]]}
 * (threshold null when a group count was asked). */
mpq_status mpq_kvsearch_prune_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const bool *keep,
                                    int64_t context_len, bool overhead, mpq_err *err);
mpq_status mpq_kvsearch_groups_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const int *group,
                                     int n_groups, int target, double threshold, mpq_err *err);

/* ---- 4. joint weight + KV budget ----------------------------------------------------------- */

typedef struct mpq_kvsearch_joint_opts {
    double budget_bytes;    /* total bytes: weights (all of them) + KV cache */
    int64_t context_len;    /* L tokens of KV cache (> 0) */
    int64_t batch;          /* B sequences (> 0); KV bytes = B * L * bytes per token */
    const char *weight_metric; /* stored per (linear layer, candidate) loss, default "kl" */
    int64_t fixed_bytes;    /* bytes not searched (embeddings, norms, untied classifier), >= 0 */
} mpq_kvsearch_joint_opts;

mpq_kvsearch_joint_opts mpq_kvsearch_joint_opts_default(void);

/* The joint problem: items 0..n_linear-1 are the linear layers (options: the job's candidates
 * with a stored weight_metric row, then "f32" with loss 0), items n_linear.. the KV blocks, or
 * the (block, head) items of a per-head table, named blk.N.kv.hH (options: t's pairs, then
 * k16v16 with loss 0). One integral resource in units of 1/(8*G)
 * byte (cost_per_byte = 8*G): a weight option costs 8*G*mpq_candidate_bytes, a KV option
 * B * (its units at L with overhead). The loss is the sum of predicted KLs: it ASSUMES the
 * damage of the layers and of the KV blocks adds up. */
typedef struct mpq_kvsearch_joint {
    mpq_problem *problem;
    int n_linear, n_blocks;
    char (*linear_names)[MPQ_DB_NAME_MAX]; /* [n_linear] */
    int64_t *linear_params;                /* [n_linear] */
    int n_cands;                           /* weight options per linear item (last = "f32") */
    char (*cand_names)[32];                /* [n_cands] */
    int n_kv_options;                      /* t->n_pairs + 1 (last = k16v16) */
    int64_t cost_per_byte;
    mpq_kvsearch_joint_opts opts;
} mpq_kvsearch_joint;

mpq_status mpq_kvsearch_joint_build(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                    const mpq_kvsearch_joint_opts *o, mpq_kvsearch_joint **out, mpq_err *err);
void mpq_kvsearch_joint_free(mpq_kvsearch_joint *j); /* accepts NULL */

typedef struct mpq_kvsearch_joint_result {
    double weight_bytes;     /* searched + fixed */
    double kv_bytes;
    double avg_weight_bits;  /* over the linear layers' parameters */
    double avg_kv_bits;      /* over KV elements, with overhead */
    double loss_weights, loss_kv;
    double bound, gap;
    mpq_solve_status status;
} mpq_kvsearch_joint_result;

/* Summary of a solution (choice from mpq_solve_ilp / mpq_solve_brute on j->problem). */
void mpq_kvsearch_joint_summary(const mpq_kvsearch_joint *j, const mpq_kvsearch_table *t, const mpq_solution *s,
                                mpq_kvsearch_joint_result *out);

/* ---- 5. measured evaluation ----------------------------------------------------------------- */

typedef struct mpq_kvsearch_eval mpq_kvsearch_eval; /* model + data windows + FP reference */

/* Opens the stored job (mpq_job.h), loads its model (checked against the recorded SHA-256) and
 * its evaluation windows (spec "evaluation", else "calibration"; at most max_seqs of them when
 * max_seqs > 0) and runs the FP reference (mpq_job_load_evalset). *out owned by the caller
 * (mpq_kvsearch_eval_free). */
mpq_status mpq_kvsearch_eval_open(mpq_db *db, int64_t job_id, int max_seqs, mpq_kvsearch_eval **out,
                                  mpq_err *err);
void mpq_kvsearch_eval_free(mpq_kvsearch_eval *ev); /* accepts NULL */
/* Threads of mpq_kvsearch_eval_run (mpq_job_set_eval_workers: numbers do not depend on it);
 * <= 0 = one per processor (the default). */
void mpq_kvsearch_eval_set_workers(mpq_kvsearch_eval *ev, int n_workers);
/* Borrowed, valid until mpq_kvsearch_eval_free. */
const mpq_model *mpq_kvsearch_eval_model(const mpq_kvsearch_eval *ev);
/* "evaluation" or "calibration": which windows are used. */
const char *mpq_kvsearch_eval_source(const mpq_kvsearch_eval *ev);
/* Measures FP weights with per-block KV pairs (n_blocks entries) under scheme: KL vs FP, top-1,
 * perplexity (*stats zeroed first). */
mpq_status mpq_kvsearch_eval_run(mpq_kvsearch_eval *ev, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                 mpq_eval_stats *stats, mpq_err *err);
/* Stores one evaluation (config_json = the mpq config: weights f32, kv.layers = pairs). */
mpq_status mpq_kvsearch_eval_store(mpq_db *db, int64_t job_id, mpq_kvsearch_eval *ev, const mpq_kv_pair *pairs,
                                   const mpq_kv_scheme *scheme, const mpq_eval_stats *stats, int64_t solution_id,
                                   int64_t *evaluation_id, mpq_err *err);

/* The model of a job as its stored layer table: a shape-only model (mpq_model_shape_create),
 * enough for configs and sizes, no model file needed. *out: mpq_model_free. */
mpq_status mpq_kvsearch_job_model(mpq_db *db, int64_t job_id, mpq_model **out, mpq_err *err);

/* The SAQ KV bases a job with kv scheme mode saq stores (artifact "kv_saq_bases": the bases
 * file's JSON text, mpq_kv_saq_to_json). get: MPQ_ERR_NOTFOUND if not stored yet; a stored
 * artifact that does not parse or is not of shape (n_layers, n_kv_heads, head_dim) is
 * MPQ_ERR_FORMAT (a newer version MPQ_ERR_UNSUPPORTED), naming the database, job (`job`, or its
 * id when NULL) and artifact. *out: mpq_kv_saq_free. put: stores s in its own transaction
 * unless the artifact is already there (then the stored one is kept). */
mpq_status mpq_kvsearch_saq_bases_get(mpq_db *db, int64_t job_id, const char *job, int n_layers, int n_kv_heads,
                                      int head_dim, mpq_kv_saq **out, mpq_err *err);
mpq_status mpq_kvsearch_saq_bases_put(mpq_db *db, int64_t job_id, const mpq_kv_saq *s, mpq_err *err);
/* As mpq_kvsearch_config_json, with kv.scheme.bases = bases_ref (the name written into the
 * config) and the bases themselves (borrowed; checked against the model). */
mpq_status mpq_kvsearch_config_json_saq(const mpq_model *model, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                        const char *bases_ref, const mpq_kv_saq *bases, char **out, mpq_err *err);

/* Spearman rank correlation of x and y (n >= 2; ties get average ranks); NaN if undefined. */
double mpq_kvsearch_spearman(const double *x, const double *y, int n);

/* ---- 6. export ------------------------------------------------------------------------------ */

/* KVTuner layer config {"0": {"nbits_key": 8, "nbits_value": 4}, ...} (keys = block index as
 * a string, in block order). Malloc'd text (free()), NULL when out of memory. */
char *mpq_kvsearch_kvtuner_json(const mpq_kv_pair *pairs, int n_blocks);
/* Parses such a document for a model of n_blocks blocks into pairs_out[n_blocks]; every block
 * must appear exactly once with integer bits in {2,3,4,8,16}. MPQ_ERR_FORMAT naming source
 * and key otherwise. */
mpq_status mpq_kvsearch_kvtuner_parse(const char *json, const char *source, int n_blocks, mpq_kv_pair *pairs_out,
                                      mpq_err *err);
/* The mpq config JSON (mpq_config.h format: weights f32, kv.scheme, kv.layers) of model with
 * these pairs. Malloc'd (free()). */
mpq_status mpq_kvsearch_config_json(const mpq_model *model, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                    char **out, mpq_err *err);

/* ---- per-(block, KV head) pairs --------------------------------------------------------------
 * With kv.per_head in the job spec, kv_sensitivity also stores, per block, KV head h and pair,
 * the metric kv_kl_head (and kv_dloss_head, kv_top1_head, kv_attn_rel_head) against the row
 * "blk.N.kv", candidate "<pair>@h<h>": only that head's K and V channels of that block quantized.
 * Items of the per-head search are (block, head); everything above that takes "blocks" (pruning,
 * clusters, frontier, picks) works on items unchanged: with group_size dividing head_dim (required),
 * an item of width head_dim has exactly 1/n_kv_heads of the units of a block at the same pair, so
 * average bits over items equal average bits over blocks of the same assignment. */

/* The per-head table of job_id: n_blocks = model blocks x KV heads (item b*H + h), kv_dim =
 * head_dim, n_heads = H, layer_ids[item] = its block's row. metric NULL = "kv_kl_head"; a name
 * without the "_head" suffix gets it ("kv_kl" -> "kv_kl_head"). MPQ_ERR_NOTFOUND when the job
 * has no such rows (its spec lacks kv.per_head). */
mpq_status mpq_kvsearch_table_load_heads(mpq_db *db, int64_t job_id, const char *metric, mpq_kvsearch_table **out,
                                         mpq_err *err);
/* The mpq config (weights f32) with per-head pairs head_pairs[n_layers * n_kv_heads] (layer-major):
 * a block whose heads all share a pair is written as that pair, others as {"heads": [...]}. */
mpq_status mpq_kvsearch_config_json_heads(const mpq_model *model, const mpq_kv_pair *head_pairs,
                                          const mpq_kv_scheme *scheme, char **out, mpq_err *err);
/* KVTuner's per-head config as YAML, the file its FlexibleQuantizedCacheConfig reads with
 * per_head_quant=True, per_head_config_path=FILE (flexible_quantized_cache.py; its
 * config/..._per_head.yaml files): integer keys layer -> KV head -> {nbits_key, nbits_value}, from
 * head_pairs[n_blocks * n_heads] (layer-major), after one '#' comment line. KVTuner quantizes
 * each head's cache on its own, as mpq's per-head groups do. Malloc'd (free()), NULL when out
 * of memory or on bad sizes. */
char *mpq_kvsearch_kvtuner_heads_yaml(const mpq_kv_pair *head_pairs, int n_blocks, int n_heads);
/* mpq_kvsearch_eval_run / _store with per-head pairs (mpq_exec_opts.kv_head_pairs). */
mpq_status mpq_kvsearch_eval_run_heads(mpq_kvsearch_eval *ev, const mpq_kv_pair *head_pairs,
                                       const mpq_kv_scheme *scheme, mpq_eval_stats *stats, mpq_err *err);
mpq_status mpq_kvsearch_eval_store_heads(mpq_db *db, int64_t job_id, mpq_kvsearch_eval *ev,
                                         const mpq_kv_pair *head_pairs, const mpq_kv_scheme *scheme,
                                         const mpq_eval_stats *stats, int64_t solution_id, int64_t *evaluation_id,
                                         mpq_err *err);
/* Stores a per-head assignment (pair index per item of a per-head table) as a solution (solver
 * "kv-frontier-heads"): config_json (required) holds the per-head pairs; the assignment row of
 * a block carries its pair when all its heads share it, else "". */
mpq_status mpq_kvsearch_solution_store_heads(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                             const char *name, const int *pair_idx, double loss,
                                             const char *budgets_json, const char *config_json,
                                             int64_t *solution_id, mpq_err *err);

/* ---- 7. the whole search: what `mpq kv` runs ------------------------------------------------ */

/* What to run (mpq_kvsearch_run). Plain data from mpq_kvsearch_request_default(); the pointers
 * are borrowed for the duration of the call. */
typedef struct mpq_kvsearch_request {
    const char *metric;         /* per-pair error metric; NULL = "kv_kl" (default) */
    const int64_t *contexts;    /* context lengths L >= 0 (each > 0 with joint). contexts[0] is the
                                   bit accounting of the ladder, pruning, frontier and budgets
                                   (0 = steady state); joint gets one row per entry. NULL = {0} */
    int n_contexts;
    bool nominal;               /* frontier and budgets in nominal bits (K+V)/2 (default: with overhead) */
    bool prune;                 /* search only each block's Pareto pairs; store artifact kv_prune */
    int cluster;                /* > 0: tie blocks into this many groups (artifact kv_clusters) */
    double threshold;           /* >= 0 with cluster 0: tie blocks within this distance; < 0 = off (default -1) */
    bool frontier;              /* compute and store the frontier (also done for budgets / evaluate) */
    const double *budgets;      /* average-bit budgets (>= 0); each picks the frontier point with
                                   the largest bits <= B, stored as solution "kv-bits-B" (with
                                   nominal: "kv-bits-B-nominal"), budgets_json
                                   {"kv_bits": B, "overhead": bool, "context": L} */
    int n_budgets;
    bool evaluate;              /* measure every frontier point and every uniform pair (weights FP)
                                   against FP; stores the evaluations (loads the model; scheme
                                   saq: with the job's stored bases, mpq_kvsearch_saq_bases_get) */
    int max_seqs;               /* evaluation windows; <= 0 = all of the spec's (default 0) */
    bool joint;                 /* weights + KV under joint_bytes (one ILP per context) */
    double joint_bytes;         /* total bytes (>= 0) */
    int64_t batch;              /* sequences of KV cache for joint (default 1) */
    const char *export_kvtuner; /* NULL or a file: KVTuner config of the first budget's pick */
    const char *export_config;  /* NULL or a file: mpq config of the first budget's pick (scheme
                                   saq: also <file>.bases.json, named in the config by its base
                                   name; KVTuner export is MPQ_ERR_UNSUPPORTED for saq) */
    const char *engine;         /* NULL, or a serving engine ("sglang", "trtllm", "vllm", "llamacpp";
                                   mpq_export.h): the frontier, budgets and evaluation search only
                                   the pairs that engine offers without rounding up
                                   (mpq_kv_engine_offers); MPQ_ERR_INVALID for an unknown name,
                                   MPQ_ERR_NOTFOUND when a block keeps no pair */
    int eval_workers;           /* threads of the evaluations (mpq_kvsearch_eval_set_workers);
                                   <= 0 = one per processor (default 0) */
    bool per_head;              /* search per (block, KV head) items (mpq_kvsearch_table_load_heads;
                                   metric gets "_head"); exports and stored solutions (named
                                   "kv-bits-B[-nominal]-heads", mpq_kvsearch_solution_store_heads) carry
                                   per-head pairs (export_kvtuner: mpq_kvsearch_kvtuner_heads_yaml); joint takes the
                                   (block, head) items as its KV items */
} mpq_kvsearch_request;

mpq_kvsearch_request mpq_kvsearch_request_default(void);

/* Which half of the cache the swapped-pair comparisons find more sensitive: keys when more
 * comparisons put keys beyond 2 se than values and keys lose in most of them; values likewise. */
typedef enum mpq_kvsearch_verdict {
    MPQ_KVSEARCH_VERDICT_UNCLEAR = 0,
    MPQ_KVSEARCH_VERDICT_KEYS,
    MPQ_KVSEARCH_VERDICT_VALUES
} mpq_kvsearch_verdict;

/* One budget's pick. */
typedef struct mpq_kvsearch_pick {
    double budget;           /* as requested */
    size_t point;            /* index into report->frontier->points */
    char name[64];           /* the stored solution's name, "kv-bits-3.25" */
    int64_t solution_id;
    /* with evaluate: the uniform pairs of equal or higher average bits (uniform_bits >= the
     * point's bits - 1e-12) and how many of them measured a higher KL than the pick */
    bool *uniform_compared;  /* [n_pairs] (NULL without evaluate) */
    int n_uniform_compared, n_uniform_beaten;
} mpq_kvsearch_pick;

/* One context of the joint budget. */
typedef struct mpq_kvsearch_joint_row {
    int64_t context_len;
    bool feasible;
    mpq_kvsearch_joint_result result; /* when feasible */
    char message[MPQ_ERR_MSG_MAX];    /* why not, when infeasible */
} mpq_kvsearch_joint_row;

/* Everything a run found. Owned by the caller (mpq_kvsearch_report_free); every array lives
 * as long as the report. Sections not asked for are NULL / 0. */
typedef struct mpq_kvsearch_report {
    int64_t job_id;
    char job_name[MPQ_DB_NAME_MAX];
    mpq_kvsearch_table *table;   /* the loaded table (t below) */
    int64_t context_len;         /* request contexts[0] */
    bool overhead;               /* !request nominal: the resource of pruning, frontier, budgets */
    /* ladder: per block, every pair (always) */
    bool *keep;                  /* [n_blocks * n_pairs] on the block's Pareto front (mpq_kvsearch_prune) */
    int n_kept;
    bool pruned;                 /* the search used only kept pairs (request prune) */
    double *pair_bits;           /* [n_pairs] average bits with overhead at context_len */
    double *pair_bits_nominal;   /* [n_pairs] (K+V)/2 */
    int *ladder;                 /* [n_blocks * n_pairs] per block, pair indices by (pair_bits, error) */
    /* keys vs values (always) */
    mpq_kvsearch_kv_cmp *cmp;    /* [n_cmp] (mpq_kvsearch_asymmetry) */
    int n_cmp;
    int n_keys_more;             /* comparisons with diff > 0 */
    int n_keys_beyond_2se;       /* diff > 2 se */
    int n_values_beyond_2se;     /* -diff > 2 se */
    mpq_kvsearch_verdict verdict;
    /* clusters (request cluster / threshold) */
    int n_groups;                /* 0 = not clustered */
    int *group;                  /* [n_blocks] group ids 0..n_groups-1 */
    double *distance;            /* [n_blocks * n_blocks] mpq_kvsearch_distance on keep */
    /* frontier (stored) */
    mpq_kvsearch_frontier *frontier;
    int64_t frontier_id;
    /* budgets */
    mpq_kvsearch_pick *picks;    /* [n_picks] in request order (allocated for every budget) */
    int n_picks;
    /* evaluation (request evaluate) */
    bool evaluated;
    const char *eval_source;     /* "evaluation" or "calibration" windows (static string) */
    mpq_eval_stats *point_eval;  /* [frontier->n_points] */
    int64_t *point_evaluation_id;
    double spearman;             /* predicted vs measured KL along the frontier; NaN if undefined */
    mpq_eval_stats *uniform_eval; /* [n_pairs] every block at pair j */
    double *uniform_bits;        /* [n_pairs] average bits of uniform pair j in the frontier's resource */
    int64_t *uniform_evaluation_id;
    /* joint (request joint) */
    int64_t joint_fixed_bytes;   /* embeddings, norms, untied classifier: not searched */
    mpq_kvsearch_joint_row *joint; /* [n_joint] in request context order */
    int n_joint;
} mpq_kvsearch_report;

/* Runs the KV search of job (name, or decimal id when no job has that name) in db as req asks:
 * table, pruning (+ artifact with prune), keys vs values, clusters (+ artifact), frontier
 * (stored), budget picks, exports, evaluation (stored), joint. The budget solutions are stored
 * after the exports are written, so a failed export stores no solution. Never prints.
 * Returns MPQ_ERR_INVALID for a bad request (cluster with threshold, exports without a
 * budget, joint with a context <= 0, ...), MPQ_ERR_NOTFOUND (job, metric), MPQ_ERR_INFEASIBLE
 * when a budget is below the cheapest frontier point or no joint context is feasible (the
 * message of the last), MPQ_ERR_IO for an export, and the statuses of the steps.
 * On failure *out is NULL when the failure came before the ladder and keys vs values were
 * done; otherwise it holds the report of the steps done before the failure (sections not reached are NULL / 0; picks and joint rows
 * count those made, the joint rows include every infeasible context), so that a caller can
 * show them with the error. Free *out in either case. */
mpq_status mpq_kvsearch_run(mpq_db *db, const char *job, const mpq_kvsearch_request *req,
                            mpq_kvsearch_report **out, mpq_err *err);
void mpq_kvsearch_report_free(mpq_kvsearch_report *r); /* accepts NULL and half-built reports */

/* The report as JSON (the text of `mpq kv --json`), built with cJSON:
 *   {"job", "job_id", "metric", "context", "overhead",
 *    "blocks": [{"pairs": [{"pair", "bits", "bits_nominal", "error", "se", "pareto"}], "block"}],
 *    "keys_vs_values": {"comparisons", "keys_more_sensitive", "keys_beyond_2se",
 *                       "values_beyond_2se", "verdict", "items": [{"block", "keys_high",
 *                       "keys_low", "diff", "se"}]},
 *    "groups": [group of each block],                                       (clusters)
 *    "frontier": [{"bits", "bits_overhead", "bits_nominal", "predicted", "predicted_se",
 *                  "pairs", "measured": {"kl", "kl_se", "top1", "ppl"}}], "frontier_id",
 *    "budgets": [{"budget", "point", "bits", "predicted", "pairs", "solution", "solution_id",
 *                 "uniform_compared", "uniform_beaten"}],
 *    "uniform": [{"pair", "bits", "kl", "kl_se", "top1"}], "spearman", "windows",  (evaluation)
 *    "joint": [{"context", "weight_bytes", "kv_bytes", "avg_weight_bits", "avg_kv_bits",
 *               "loss_weights", "loss_kv", "status", "gap"}], "joint_fixed_bytes"}
 * A per-head table (n_heads > 0) adds "n_kv_heads" after "overhead", and its "blocks" and
 * keys_vs_values "items" entries give "block" = item / n_heads and "kv_head" = item % n_heads.
 * Sections are present as in the report ("measured", "uniform_*" only with evaluation; joint
 * lists the feasible contexts). JSON has no NaN or infinity: such numbers are written as null.
 * Malloc'd (free()); NULL when out of memory. */
char *mpq_kvsearch_report_json(const mpq_kvsearch_report *r);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_KVSEARCH_H */
