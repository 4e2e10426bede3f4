/*
 * mpq_config.h - a quantized configuration of a model: one weight candidate per linear
 * layer, one KV precision pair per transformer block, and the KV scheme. It is what the
 * solvers produce, what the reference executor runs, and what `mpq export` converts.
 *
 * File format (JSON, versioned; every key but mpq_config_version is optional):
 *
 *   {
 *     "mpq_config_version": 1,
 *     "weights": { "default": "f32",
 *                  "layers": { "blk.0.attn_q": "int4g128", ... } },
 *     "kv": { "scheme": { "mode": "kivi", "group_size": 32, "residual": 0 },
 *             "default": "k16v16",
 *             "layers": { "blk.0": "k8v4", ... } },
 *     ... any other keys (model fingerprint, provenance, budgets) are allowed and kept
 *   }
 *
 * - mpq_config_version: integer >= 1; a file newer than MPQ_CONFIG_VERSION is rejected
 *   with MPQ_ERR_UNSUPPORTED ("cfg.json: mpq_config_version 7 is newer than this mpq (1)").
 * - weights.default: candidate for every linear layer not listed (default "f32").
 *   weights.layers: keys are stable layer names ("blk.3.attn_q") or Hugging Face aliases
 *   ("model.layers.3.self_attn.q_proj", with or without ".weight"); values candidate names
 *   (see mpq_quant.h). A layer given twice (e.g. by both names) is an error.
 * - kv.scheme: mode "kivi" | "per-token", group_size > 0, residual >= 0, caq true | false
 *   (CAQ code adjustment of the KV groups; written only when true) (default: KIVI, 32, 0, false).
 *   kv.default: pair for every block not listed (default "k16v16"). kv.layers: keys "blk.N"
 *   or "model.layers.N", values pairs such as "k8v4".
 * mpq_config_to_json writes weights.layers / kv.layers only for entries that differ from
 * the defaults, layers in model order with stable names; the other top-level keys of a
 * parsed file are written back unchanged after "weights" and "kv".
 *
 * Every error names the source and the key: "cfg.json: weights.layers.blk.9.attn_q: no
 * such layer in model (5 blocks)", "cfg.json: weights.layers.blk.0.attn_q: unknown
 * candidate 'int9'", "cfg.json: kv.scheme.group_size: expected a positive integer".
 *
 *     mpq_config *cfg = NULL;
 *     mpq_weights *q = NULL;
 *     if (mpq_config_load("cfg.json", model, &cfg, &err) != MPQ_OK) ...
 *     if (mpq_config_apply_view(cfg, model, NULL, &q, &err) != MPQ_OK) ...  // q: fake-quantized
 *     // (or mpq_weights_clone + mpq_config_apply: the same numbers in a full float32 copy)
 *     mpq_config_stats st;
 *     mpq_config_get_stats(cfg, model, 512, &st, &err);          // st.avg_weight_bits, ...
 *     mpq_weights_free(q);
 *     mpq_config_free(cfg);
 */
#ifndef MPQ_CONFIG_H
#define MPQ_CONFIG_H

#include "mpq/mpq.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPQ_CONFIG_VERSION 1

typedef struct mpq_config mpq_config;

/* Reads and parses a config file for `model` (the layer names are resolved against it).
 * On success *out owns a new config (free with mpq_config_free). MPQ_ERR_IO if the file
 * cannot be read; MPQ_ERR_FORMAT for bad JSON, wrong types, unknown layers, candidates or
 * pairs; MPQ_ERR_UNSUPPORTED for a newer version; MPQ_ERR_NOMEM. The message starts with path. */
mpq_status mpq_config_load(const char *path, const mpq_model *model, mpq_config **out, mpq_err *err);

/* Same, from a NUL-terminated JSON text; source_name (e.g. the file name) starts every message. */
mpq_status mpq_config_parse(const char *json_text, const char *source_name, const mpq_model *model,
                            mpq_config **out, mpq_err *err);

/* Builds a config with every linear layer at weight_candidate (e.g. "int4g128") and every block
 * at kv_pair (e.g. "k8v4"; NULL = "k16v16"), default KV scheme. MPQ_ERR_INVALID for bad names. */
mpq_status mpq_config_uniform(const mpq_model *model, const char *weight_candidate, const char *kv_pair,
                              mpq_config **out, mpq_err *err);

/* Deep copy (MPQ_ERR_NOMEM). */
mpq_status mpq_config_clone(const mpq_config *cfg, mpq_config **out, mpq_err *err);

void mpq_config_free(mpq_config *cfg); /* accepts NULL */

/* Shape the config was built for. */
int mpq_config_n_linear(const mpq_config *cfg);
int mpq_config_n_blocks(const mpq_config *cfg);

/* Candidate of linear layer i (index into the model's layer table); borrowed, valid until the
 * config is freed or the layer is set again. NULL if i is out of range. */
const mpq_candidate *mpq_config_layer(const mpq_config *cfg, int i);
/* KV pair of block b; {16, 16} if b is out of range. */
mpq_kv_pair mpq_config_kv(const mpq_config *cfg, int block);
/* Borrowed; valid until the config is freed. */
const mpq_kv_scheme *mpq_config_kv_scheme(const mpq_config *cfg);
/* The weights default candidate (used for unlisted layers when written back). Borrowed. */
const mpq_candidate *mpq_config_weights_default(const mpq_config *cfg);

/* ---- per-(block, KV head) pairs ----
 * A kv.layers entry may be {"heads": ["k4v2", "k8v4", ...]} instead of a pair: one pair per KV
 * head (exactly n_kv_heads of them, MPQ_ERR_FORMAT naming the source and key otherwise), head h
 * owning channels h*head_dim .. (h+1)*head_dim - 1 of the block's K and V. It needs
 * kv.scheme.group_size dividing head_dim (no group straddles two heads; MPQ_ERR_INVALID).
 * mpq_config_kv(cfg, b) of such a block still returns its per-block pair (kv.default unless
 * set), which per-head-unaware code would use: check mpq_config_has_kv_heads. */
int mpq_config_n_kv_heads(const mpq_config *cfg);
/* True when some block has per-head pairs. */
bool mpq_config_has_kv_heads(const mpq_config *cfg);
/* Block b's pair of every KV head into out[n_kv_heads] (out may be NULL): its per-head pairs,
 * or the block's pair repeated; returns true when the block has per-head pairs. */
bool mpq_config_kv_heads(const mpq_config *cfg, int block, mpq_kv_pair *out);
/* Every block's heads (mpq_config_kv_heads) into out[n_blocks * n_kv_heads], layer-major: the
 * layout of mpq_exec_opts.kv_head_pairs. */
void mpq_config_kv_head_pairs(const mpq_config *cfg, mpq_kv_pair *out);
/* Gives block b per-head pairs (n_kv_heads of them, copied); mpq_config_set_kv on the block
 * replaces them by one pair. MPQ_ERR_INVALID for a bad block / pair or a group size that does
 * not divide head_dim. */
mpq_status mpq_config_set_kv_heads(mpq_config *cfg, int block, const mpq_kv_pair *pairs, mpq_err *err);

/* Setters for solvers. MPQ_ERR_INVALID (message names the index / name) on a bad index or name. */
mpq_status mpq_config_set_layer(mpq_config *cfg, int i, const char *candidate, mpq_err *err);
mpq_status mpq_config_set_layer_candidate(mpq_config *cfg, int i, const mpq_candidate *c, mpq_err *err);
mpq_status mpq_config_set_kv(mpq_config *cfg, int block, mpq_kv_pair pair, mpq_err *err);
/* group_size must be > 0 and residual >= 0. */
mpq_status mpq_config_set_kv_scheme(mpq_config *cfg, const mpq_kv_scheme *scheme, mpq_err *err);

/* KV scheme saq: the bases. mpq_config_set_kv_saq takes ownership of `bases` (even on error)
 * or, when bases is NULL, loads them from `path`; path (may be NULL with bases given: then the
 * config cannot be written with them) is what the config file records as kv.scheme.bases.
 * MPQ_ERR_INVALID when the bases are for another shape (names both), or as mpq_kv_saq_load. */
mpq_status mpq_config_set_kv_saq(mpq_config *cfg, const char *path, mpq_kv_saq *bases, mpq_err *err);
/* Borrowed, valid until the config is freed or its bases set again; NULL if none. */
const mpq_kv_saq *mpq_config_kv_saq(const mpq_config *cfg);
const char *mpq_config_kv_saq_path(const mpq_config *cfg);
/* MPQ_ERR_INVALID naming `what` and the block: a fractional pair without mode saq, mode saq
 * without bases, a rate that is not achievable at the model's head_dim. */
mpq_status mpq_config_check_kv(const mpq_config *cfg, const char *what, mpq_err *err);

/* The config as JSON text (format above, 2-space indented). Caller frees with free().
 * NULL if out of memory or if model's shape does not match the config. */
char *mpq_config_to_json(const mpq_config *cfg, const mpq_model *model);

/* Writes mpq_config_to_json to path (MPQ_ERR_IO naming path, MPQ_ERR_NOMEM, MPQ_ERR_INVALID). */
mpq_status mpq_config_save(const mpq_config *cfg, const mpq_model *model, const char *path, mpq_err *err);

/* Fake-quantizes every linear layer of dst (a clone of model's weights made with
 * mpq_weights_clone, not yet quantized) with its candidate, in place. Norms, embeddings,
 * classifier and biases are left unchanged. MPQ_ERR_INVALID if dst or cfg do not match model
 * (a view is refused: mpq_config_apply_view builds one without copying the model). */
mpq_status mpq_config_apply(const mpq_config *cfg, const mpq_model *model, mpq_weights *dst, mpq_err *err);

/* As mpq_config_apply, with each linear layer's X^T X / n_tokens: xtx[i] for linear layer i
 * (upper triangle packed by rows, borrowed, e.g. mpq_calib_xtx_packed), xtx or any entry may be NULL. The SAQ
 * candidates need it (mpq_quantize_matrix_ctx): a saq layer without one fails with
 * MPQ_ERR_UNSUPPORTED naming the layer and candidate (mpq_config_apply passes none). */
mpq_status mpq_config_apply_xtx(const mpq_config *cfg, const mpq_model *model, mpq_weights *dst,
                                const double *const *xtx, mpq_err *err);

/* The quantized weights of cfg without a copy of the model: a view of model's weights
 * (mpq_weights_view) that owns a float32 matrix for each linear layer whose candidate changes
 * it (every candidate but f32: the layer's numbers widened if model holds them in 16 bits, then
 * quantized in place exactly as mpq_config_apply_xtx does) and borrows everything else from
 * model: the embedding, classifier, norms, biases and the f32 layers, which stay 16-bit in a
 * 16-bit model (the executor widens them at use, to the same float32 numbers a clone holds).
 * The numbers are those of mpq_weights_clone + mpq_config_apply_xtx, bit for bit; memory is
 * 4 B x the quantized layers' parameters instead of 4 B x every parameter. xtx as in
 * mpq_config_apply_xtx (may be NULL). On success *out owns the table (free with
 * mpq_weights_free; model must outlive it). Errors as mpq_config_apply_xtx, and MPQ_ERR_NOMEM. */
mpq_status mpq_config_apply_view(const mpq_config *cfg, const mpq_model *model, const double *const *xtx,
                                 mpq_weights **out, mpq_err *err);

/* Does any linear layer of cfg use a candidate that needs X^T X (mpq_candidate_is_saq)? */
bool mpq_config_needs_xtx(const mpq_config *cfg);

typedef struct mpq_config_stats {
    int64_t linear_params;     /* weights in the linear layers (biases excluded) */
    double avg_weight_bits;    /* exact stored bits (with scale/zero overhead) / linear_params */
    int64_t linear_bytes;      /* sum over layers of mpq_candidate_bytes */
    int64_t other_params;      /* all other parameters: embedding (once if shared), norms, biases,
                                  untied classifier — counted at their stored f32 (4 bytes) */
    int64_t total_weight_bytes; /* linear_bytes + 4 * other_params */
    double avg_kv_bits;        /* mean over blocks of (K bits + V bits)/2, with overhead */
    double kv_bytes_per_token; /* sum over blocks of (K bits + V bits) * kv_dim / 8, with overhead */
} mpq_config_stats;

/* Sizes of the configuration on model; context_len is used for the KV residual window
 * (<= 0: steady state, residual ignored). MPQ_ERR_INVALID on a shape mismatch. */
mpq_status mpq_config_get_stats(const mpq_config *cfg, const mpq_model *model, int64_t context_len,
                                mpq_config_stats *out, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_CONFIG_H */
