/*
 * mpq_export.h - the export plan of a quantized configuration and the exporters that
 * deployment tools read: mpq JSON, llama.cpp `llama-quantize --tensor-type-file` and
 * importance matrix, compressed-tensors / Hugging Face `quantization_config` (vLLM),
 * KVTuner-style per-layer KV bits (JSON or YAML), HAWQ-style per-module bits, serving
 * engines' per-layer KV flags (sglang, TensorRT-LLM, vLLM, ik_llama.cpp), GPTQModel /
 * AutoRound / ModelOpt mixed weight configs; and `mpq report` (Markdown).
 *
 * Every exporter renders ONE canonical plan, built from (model, config, provenance):
 * per linear layer its stable name ("blk.3.attn_q"), GGUF tensor name
 * ("blk.3.attn_q.weight", llama.cpp names: attn_q attn_k attn_v attn_output ffn_gate
 * ffn_up ffn_down), HF module ("model.layers.3.self_attn.q_proj"), candidate, exact bits
 * and bytes; per block its KV pair; the KV scheme; totals; provenance.
 *
 *     mpq_export_plan *plan = NULL;
 *     mpq_err err = {0};
 *     if (mpq_export_plan_build(model, cfg, NULL, &plan, &err) != MPQ_OK) ...
 *     mpq_export_opts o = mpq_export_opts_default();
 *     char *text = NULL, *notes = NULL;
 *     if (mpq_export_render(plan, MPQ_EXPORT_LLAMACPP, &o, &text, &notes, &err) != MPQ_OK) ...
 *     // text: the tensor-type file; notes: the llama-quantize command line and KV flags
 *     free(text); free(notes);
 *     mpq_export_plan_free(plan);
 *
 * llama.cpp type choice (mpq_export_ggml_choose): a candidate of b exact bits per weight
 * (mpq_candidate_bits at the layer's row length) gets the cheapest type of the ladder
 * q2_k 2.625, iq3_xxs 3.0625, q3_k 3.4375, iq4_xs 4.25, q4_k 4.5, q5_k 5.5, q6_k 6.5625,
 * q8_0 8.5, f16 16, f32 32 whose bits are >= b (never fewer bits than mpq measured).
 * Then llama-quantize's own fallback for a row length (GGUF ne[0] = cols) not divisible by
 * the type's block size is applied - IQ types -> iq4_nl, q2_k/q3_k -> q4_0, q4_k -> q5_0,
 * q5_k -> q5_1, q6_k -> q8_0, and f16 when even that does not divide (llama.cpp
 * src/llama-quant.cpp, tensor_type_fallback) - and where llama.cpp defines no fallback (q8_0
 * on cols % 32 != 0 makes it throw) mpq writes f16. Only then, as llama-quantize does, the
 * importance-matrix test on the RESOLVED type: iq3_xxs that stays iq3_xxs (cols % 256 == 0)
 * needs opts.imatrix_path, else the export fails (MPQ_ERR_INVALID naming the layer) unless
 * opts.skip_imatrix_types, which rounds up to q3_k; iq3_xxs that fell back to iq4_nl needs none.
 * The file lists the RESOLVED type, so llama-quantize never falls back and the bytes
 * mpq reports are the bytes it writes.
 */
#ifndef MPQ_EXPORT_H
#define MPQ_EXPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_calib.h"
#include "mpq/mpq_config.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPQ_EXPORT_VERSION 1 /* "mpq_export_version" of the mpq JSON format */

/* ---- llama.cpp (ggml) types ----------------------------------------------------------- */

typedef struct mpq_ggml_type_info {
    const char *name;   /* lowercase as llama-quantize reads it: "q4_k" */
    int block;          /* elements per block (256 for K/IQ types, 32 for q4_0.., 1 for f16) */
    int type_size;      /* bytes per block */
    bool needs_imatrix; /* llama-quantize refuses it without an importance matrix */
} mpq_ggml_type_info;

/* Type by lowercase or uppercase name; NULL if unknown. Static. */
const mpq_ggml_type_info *mpq_ggml_type_find(const char *name);

typedef struct mpq_ggml_choice {
    const mpq_ggml_type_info *requested; /* ladder choice by bits */
    const mpq_ggml_type_info *resolved;  /* after llama-quantize's row-length fallback */
    bool fallback;       /* resolved != requested */
    bool no_llama_fallback; /* llama.cpp has no fallback for `requested` (mpq chose f16) */
    double candidate_bits;  /* exact bits of the candidate at this row length */
    int64_t bytes;       /* rows * cols/block * type_size of the resolved type */
} mpq_ggml_choice;

/* Chooses the ggml type of a (rows, cols) layer at candidate c (see top). allow_imatrix:
 * iq3_xxs may be used; skip_imatrix: when it is not allowed, round up past it instead of
 * failing. MPQ_ERR_INVALID ("... needs an importance matrix") otherwise. */
mpq_status mpq_export_ggml_choose(const mpq_candidate *c, int64_t rows, int64_t cols, bool allow_imatrix,
                                  bool skip_imatrix, mpq_ggml_choice *out, mpq_err *err);

/* ---- the plan ------------------------------------------------------------------------- */

#define MPQ_EXPORT_NAME_MAX 128

typedef struct mpq_export_layer {
    char name[MPQ_EXPORT_NAME_MAX];      /* "blk.3.attn_q" */
    char gguf_name[MPQ_EXPORT_NAME_MAX]; /* "blk.3.attn_q.weight" (attn_output for o_proj) */
    char hf_name[MPQ_EXPORT_NAME_MAX];   /* "model.layers.3.self_attn.q_proj" */
    mpq_layer_kind kind;
    int block;
    int64_t rows, cols, n_params;
    mpq_candidate cand;
    double bits;   /* exact bits per weight of cand at this row length */
    int64_t bytes; /* mpq_candidate_bytes */
} mpq_export_layer;

/* Where a configuration came from (all optional: NULL / 0 / NaN = unknown). Strings are
 * copied by mpq_export_plan_build. */
typedef struct mpq_export_provenance {
    const char *job_name;
    int64_t job_id;
    const char *solution_name;
    int64_t solution_id;
    const char *solver;       /* "ilp", "pareto", ... */
    const char *status;       /* "optimal", ... */
    const char *metric_expr;  /* "kl" */
    const char *budgets_json; /* {"bits_per_weight":3.5} */
    double objective;         /* predicted loss; NaN = unknown */
    const char *created_at;
    const char *model_sha256; /* the fingerprint a job recorded: written as is; NULL = hash the
                                 model file now (a config exported without a job) */
} mpq_export_provenance;

typedef struct mpq_export_plan {
    /* model fingerprint */
    char model_file[256];  /* base name of the model file or directory (never a full path) */
    char model_sha256[65]; /* sha256 of the checkpoint (HF: of model.safetensors); "" if unknown */
    mpq_model_config model;
    int64_t model_params;
    /* layers and blocks */
    int n_layers;
    mpq_export_layer *layers; /* n_layers, model order */
    int n_blocks;
    mpq_kv_pair *kv;          /* n_blocks */
    mpq_kv_scheme kv_scheme;
    int kv_dim;               /* n_kv_heads * head_dim */
    /* totals (mpq_config_get_stats, steady state) */
    mpq_config_stats stats;
    /* provenance (owned copies; NULL when unknown) */
    char *job_name, *solution_name, *solver, *status, *metric_expr, *budgets_json, *created_at;
    int64_t job_id, solution_id;
    double objective;
    /* the configuration as mpq_config_to_json text (owned) */
    char *config_json;
    /* the config has per-(block, KV head) pairs (mpq_config_has_kv_heads): kv[b] of such a block
     * is the largest K and the largest V bits over its heads (never less precise than searched);
     * the per-layer KV formats kvtuner, kvtuner-yaml and the serving-engine KV files refuse
     * (MPQ_ERR_UNSUPPORTED); mpq carries the heads in config_json */
    bool kv_per_head;
} mpq_export_plan;

/* Builds the plan of cfg on model. prov may be NULL. On success *out is owned by the
 * caller (mpq_export_plan_free). The fingerprint is prov->model_sha256 when given, else the
 * hash of the model file ("" when it is gone). MPQ_ERR_INVALID if cfg does not match model,
 * MPQ_ERR_IO if the model file cannot be hashed, MPQ_ERR_NOMEM. */
mpq_status mpq_export_plan_build(const mpq_model *model, const mpq_config *cfg,
                                 const mpq_export_provenance *prov, mpq_export_plan **out, mpq_err *err);
void mpq_export_plan_free(mpq_export_plan *plan); /* accepts NULL */

/* A job's solution from the results database (mpq_job_open: no model file needed), loaded
 * as a config of model, or of the job's stored layer table when model is NULL (then
 * *model_out, if not NULL, gets an owned shape-only copy of it, mpq_model_free). The plan's
 * fingerprint is the SHA-256 the job recorded, never a re-hash of the file now at that path.
 * which: NULL or "" = the newest solution with a config and status optimal/feasible;
 * otherwise a solution name or decimal id of that job. *cfg_out and *plan_out owned.
 * MPQ_ERR_NOTFOUND (job, solution), MPQ_ERR_FORMAT (stored config does not parse), DB. */
mpq_status mpq_export_plan_from_db(mpq_db *db, const char *job, const char *which, const mpq_model *model,
                                   mpq_model **model_out, mpq_config **cfg_out, mpq_export_plan **plan_out,
                                   mpq_err *err);

/* ---- exporters ------------------------------------------------------------------------ */

typedef enum mpq_export_format {
    MPQ_EXPORT_MPQ = 0,           /* "mpq": versioned mpq JSON, loadable by mpq_config_load */
    MPQ_EXPORT_LLAMACPP,          /* "llamacpp": llama-quantize --tensor-type-file */
    MPQ_EXPORT_COMPRESSED_TENSORS,/* "compressed-tensors": {"quantization_config": {...}} */
    MPQ_EXPORT_KVTUNER,           /* "kvtuner": {"0": {"nbits_key": 8, "nbits_value": 4}, ...} */
    MPQ_EXPORT_KVTUNER_YAML,      /* "kvtuner-yaml": the same as YAML */
    MPQ_EXPORT_HAWQ,              /* "hawq": {"model.layers.0.self_attn.q_proj": 4, ...} */
    MPQ_EXPORT_IMATRIX,           /* "imatrix": llama.cpp importance matrix, GGUF layout (binary;
                                     not through mpq_export_render: mpq_imatrix_serialize) */
    MPQ_EXPORT_IMATRIX_DAT,       /* "imatrix-dat": the same, legacy .dat layout */
    MPQ_EXPORT_KV_SGLANG,         /* "sglang-kv": --kv-cache-dtype D [--kv-cache-per-layer-dtype RANGES] */
    MPQ_EXPORT_KV_TRTLLM,         /* "trtllm-kv": "0-3:fp8,4-35:nvfp4" (KvCacheConfig per-layer dtype) */
    MPQ_EXPORT_KV_VLLM,           /* "vllm-kv": --kv-cache-dtype fp8_e4m3 [--kv-cache-dtype-skip-layers I ...] */
    MPQ_EXPORT_KV_LLAMACPP,       /* "llamacpp-kv": -ctk/-ctv plus ik_llama.cpp's -ctk-first/-last ... */
    MPQ_EXPORT_GPTQMODEL,         /* "gptqmodel": quantize config with "dynamic" {"+:regex": {bits, group_size}} */
    MPQ_EXPORT_AUTOROUND,         /* "autoround": {"bits", "group_size", "sym", "layer_config": {module: ...}} */
    MPQ_EXPORT_MODELOPT           /* "modelopt": Python QUANT_CFG with "quant_cfg" wildcard patterns */
} mpq_export_format;

/* Format by name (above); MPQ_ERR_INVALID naming the string. */
mpq_status mpq_export_format_parse(const char *name, mpq_export_format *out, mpq_err *err);
const char *mpq_export_format_name(mpq_export_format f); /* static */

typedef struct mpq_export_opts {
    const char *imatrix_path;  /* llamacpp: importance matrix for llama-quantize (enables iq3_xxs) */
    bool skip_imatrix_types;   /* llamacpp: without imatrix, round up past iq3_xxs instead of failing */
    const char *embedding_type;/* llamacpp: --token-embedding-type / --output-tensor-type (default "f16") */
    const char *model_gguf;    /* llamacpp: input GGUF named in the command line (default "model-f32.gguf") */
    const char *output_gguf;   /* llamacpp: output GGUF (default "model-mpq.gguf") */
    const char *tensor_type_file; /* llamacpp: the file named in the command (default "tensor-types.txt") */
    bool strict;               /* refuse (MPQ_ERR_UNSUPPORTED) instead of warning when the target would not
                                  load the file as written (compressed-tensors: vLLM's bit widths and
                                  group sizes) or a layer or block had to be collapsed (KV engines,
                                  GPTQModel, AutoRound, ModelOpt) */
} mpq_export_opts;

mpq_export_opts mpq_export_opts_default(void);

/* Renders plan in format f. *text gets the file content and *notes (may be NULL) human
 * notes for stdout (llamacpp: the llama-quantize command and -ctk/-ctv flags; others: KV
 * collapse and scheme remarks); both malloc'd NUL-terminated (free()). Errors name the
 * layer: MPQ_ERR_INVALID (compressed-tensors: fused shards q/k/v or gate/up with different
 * schemes; llamacpp: imatrix type without imatrix), MPQ_ERR_UNSUPPORTED (a candidate the
 * format cannot express, e.g. nf4 in compressed-tensors), MPQ_ERR_NOMEM. */
mpq_status mpq_export_render(const mpq_export_plan *plan, mpq_export_format f, const mpq_export_opts *opts,
                             char **text, char **notes, mpq_err *err);

/* llama.cpp KV cache type for one precision. llama.cpp offers f16, q8_0, q5_1, q5_0, q4_1,
 * q4_0 and iq4_nl (block 32); the rule is the cheapest with at least `bits` element bits and an
 * asymmetric min/max grid like mpq's KV quantizer: 2, 3, 4 -> "q4_1" (there is no 2- or 3-bit
 * type), 5 -> "q5_1", 6..8 -> "q8_0" (symmetric, the only 8-bit type), 16 -> "f16". Static. */
const char *mpq_export_llama_kv_type(int bits);

/* ---- KV cache dtypes of serving engines ----------------------------------------------------
 *
 * Each engine offers a small menu of KV-cache dtypes. Rule (mpq_kv_engine_dtype): a block's
 * K (or V) precision of b bits gets the cheapest dtype of the menu with at least b element bits.
 * Engines with one dtype per layer for K and V together (sglang, TensorRT-LLM, vLLM) take
 * b = max(K bits, V bits). Menus (element bits):
 *   sglang     fp4_e2m1 4, fp8_e4m3 8, bf16 16  (per layer: --kv-cache-per-layer-dtype, an
 *              unmerged proposal, sgl-project/sglang PRs #15420 and #17530)
 *   trtllm     nvfp4 4, fp8 8, bf16 16          (per layer: range strings of the open PR
 *              NVIDIA/TensorRT-LLM #13695)
 *   vllm       fp8_e4m3 8, auto 16              (--kv-cache-dtype and --kv-cache-dtype-skip-layers,
 *              merged: skipped layers keep the model dtype; a per-layer map is RFC #57445)
 *   llamacpp   q4_1 4, q5_1 5, q8_0 8, f16 16   (mpq_export_llama_kv_type; per K and V; first/last-N
 *              layers with ik_llama.cpp's -ctk-first/-ctk-last/-ctv-first/-ctv-last, its PR #1599)
 * mpq_kv_engine_offers tells whether a pair maps without rounding up (K and V each exactly a
 * menu width; K == V for the one-dtype-per-layer engines): the KV search's menu restriction. */
typedef enum mpq_kv_engine {
    MPQ_KV_ENGINE_SGLANG = 0,
    MPQ_KV_ENGINE_TRTLLM,
    MPQ_KV_ENGINE_VLLM,
    MPQ_KV_ENGINE_LLAMACPP
} mpq_kv_engine;

/* "sglang", "trtllm", "vllm", "llamacpp"; MPQ_ERR_INVALID naming the string. */
mpq_status mpq_kv_engine_parse(const char *name, mpq_kv_engine *out, mpq_err *err);
const char *mpq_kv_engine_name(mpq_kv_engine e); /* static */
/* The engine's dtype for `bits` (see above) and its element bits (*dtype_bits may be NULL). Static. */
const char *mpq_kv_engine_dtype(mpq_kv_engine e, int bits, int *dtype_bits);
/* True when pair p is expressible by engine e without rounding up. */
bool mpq_kv_engine_offers(mpq_kv_engine e, mpq_kv_pair p);

/* ---- importance matrix (llama.cpp) ----------------------------------------------------------
 *
 * Per linear layer, keyed by its GGUF tensor name ("blk.0.attn_q.weight"), the mean over the
 * calibration tokens of each input column's squared activation: the diagonal of mpq's
 * X^T X / N (mpq_calib_xtx_packed), N = n_tokens. Files (see src/export/imatrix.c for the layouts):
 *   GGUF (format "imatrix"): "<name>.in_sum2" = diag * N, "<name>.counts" = N, plus
 *     general.type "imatrix", imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size;
 *   legacy .dat ("imatrix-dat"): values = diag * n_chunks with ncall = n_chunks.
 * llama-quantize reads either (values / count = diag). */
typedef struct mpq_imatrix_entry {
    char name[MPQ_EXPORT_NAME_MAX]; /* GGUF tensor name */
    int64_t n_values;               /* input columns */
    double *mean_sq;                /* n_values: diag(X^T X / N) */
} mpq_imatrix_entry;

typedef struct mpq_imatrix {
    int n_entries;
    mpq_imatrix_entry *entries;     /* model order */
    int64_t n_tokens;               /* N */
    int n_chunks;                   /* calibration windows */
    int chunk_size;                 /* tokens per window */
    char dataset[256];              /* base name of the calibration data file */
} mpq_imatrix;

/* From a calibration created with collect_xtx. *out owned (mpq_imatrix_free). MPQ_ERR_INVALID
 * (no X^T X), MPQ_ERR_NOMEM. */
mpq_status mpq_imatrix_from_calib(const mpq_calib *cal, const mpq_model *model, const char *dataset,
                                  mpq_imatrix **out, mpq_err *err);
/* From a stored job: loads the job's model (mpq_job_load_model: a missing file is MPQ_ERR_IO
 * naming it and the SHA-256 it must have, a changed one MPQ_ERR_INVALID), its calibration data
 * (checked against the recorded SHA-256) and windows, and runs the FP reference collecting
 * X^T X. Unlike every other export this needs the model file. */
mpq_status mpq_imatrix_from_job(mpq_job *job, mpq_imatrix **out, mpq_err *err);
void mpq_imatrix_free(mpq_imatrix *im); /* accepts NULL */
/* The file bytes (gguf: GGUF layout, else legacy .dat); *buf malloc'd (free()). */
mpq_status mpq_imatrix_serialize(const mpq_imatrix *im, bool gguf, unsigned char **buf, size_t *len, mpq_err *err);

/* ---- report --------------------------------------------------------------------------- */

typedef struct mpq_report_opts {
    const char *plots_dir;     /* where SVGs are written (NULL = no plots) */
    const char *plots_rel;     /* how report.md links them (relative path of plots_dir); NULL = plots_dir */
    int top_layers;            /* most sensitive layers listed (default 10) */
    const char *metric;        /* sensitivity metric (default "kl") */
} mpq_report_opts;

mpq_report_opts mpq_report_opts_default(void);

/* Writes a Markdown report of job to path: model, data, provenance, top sensitive layers,
 * frontier table, solutions with predicted and measured quality, uniform baselines, and
 * (with plots_dir) the frontier / bits / sensitivity / KV plots, linked. MPQ_ERR_NOTFOUND,
 * MPQ_ERR_IO (naming the file), MPQ_ERR_DB, MPQ_ERR_NOMEM. */
mpq_status mpq_report_write(mpq_db *db, const char *job, const mpq_report_opts *opts, const char *path,
                            mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_EXPORT_H */
