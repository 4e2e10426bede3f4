/*
 * mpq_calib.h - calibration metrics: what quantizing one layer (or one layer's KV cache)
 * to one candidate does, measured on calibration sequences.
 *
 * Metrics (names as stored in the results database, table `metrics`):
 *   xtx_trace   per layer: trace of X^T X / n_tokens, X = the layer's input activations
 *               (rows = tokens); 2 X^T X is the GPTQ layer Hessian of the output error.
 *   weight_sse  ||Q(W) - W||_F^2                 weight_rel  weight_sse / ||W||_F^2
 *   act_err     trace(E X^T X E^T) / n_tokens, E = Q(W) - W: mean squared output error of
 *               the layer on calibration inputs      act_rel  act_err / (trace(W X^T X W^T)/n_tokens)
 *   kl, dloss, top1   only this layer quantized (all else FP), over the calibration sequences:
 *               mean KL(P_fp || P_q) of next-token distributions, change of mean cross-entropy
 *               (nats), top-1 agreement with FP; each with its standard error over sequences.
 *   kv_kl, kv_dloss, kv_top1, kv_attn_rel   only block b's KV cache quantized with a pair;
 *               kv_attn_rel = ||A_q - A_fp||_F / ||A_fp||_F of that block's attention output.
 *
 *     mpq_calib *cal = NULL;
 *     mpq_calib_create(model, tokens, n_seqs, T, &opts, &cal, &err);  // FP reference pass
 *     mpq_calib_result r;
 *     mpq_calib_layer(cal, i, &cand, &r, &err);   // prefix reuse: restarts at layer i's block
 *     mpq_calib_free(cal);
 */
#ifndef MPQ_CALIB_H
#define MPQ_CALIB_H

#include "mpq/mpq.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mpq_calib mpq_calib;

typedef struct mpq_calib_opts {
    int batch;            /* sequences per forward batch (default 8) */
    bool collect_xtx;     /* collect X^T X per layer in the reference pass (default true) */
    bool prefix_reuse;    /* restart forwards at the quantized block (default true); false = naive */
    mpq_kv_scheme kv_scheme; /* scheme for KV sensitivity (default mpq_kv_scheme_default()) */
    const mpq_kv_saq *kv_saq; /* kv_scheme.mode saq: the bases (borrowed; default NULL) */
} mpq_calib_opts;

mpq_calib_opts mpq_calib_opts_default(void);

/* Runs the FP reference over tokens (n_seqs, T+1) (copied), keeping what the metrics need
 * (reference log-probs, residuals entering each block, per-layer X^T X). model is borrowed
 * and must outlive cal. */
mpq_status mpq_calib_create(const mpq_model *model, const int *tokens, int n_seqs, int T,
                            const mpq_calib_opts *opts, mpq_calib **out, mpq_err *err);
void mpq_calib_free(mpq_calib *cal); /* accepts NULL */

/* A worker's copy of `cal` for running units on another thread: it shares cal's FP
 * reference and X^T X (read-only; cal must outlive the fork and must not be freed before
 * it) and the model's weights (read-only, never copied), and has its own executor, weight
 * table and layer scratch (activations for opts.batch windows plus three doubles and one
 * float per weight of the largest linear layer). mpq_calib_weight_error / _layer / _kv
 * on different forks (and on cal) may run at the same time, and give the same results,
 * bit for bit, as on cal. Free with mpq_calib_free. MPQ_ERR_NOMEM. */
mpq_status mpq_calib_fork(const mpq_calib *cal, mpq_calib **out, mpq_err *err);

/* FP reference cross-entropy (nats/token) of the calibration sequences. */
double mpq_calib_ref_ce(const mpq_calib *cal);

/* trace(X^T X)/n_tokens of linear layer i (0 when xtx was not collected). */
double mpq_calib_xtx_trace(const mpq_calib *cal, int linear_index);

/* X^T X / n_tokens of linear layer i, in double: the upper triangle of the symmetric
 * (cols, cols) matrix packed by rows (row i holds columns i..cols-1; BLAS's row-major packed
 * upper layout, as cblas_dspmv(CblasRowMajor, CblasUpper, ...) reads it), cols (cols + 1) / 2
 * values: element (i, j), i <= j, is at mpq_xtx_index(cols, i, j). Borrowed, valid until
 * mpq_calib_free; shared by layers with the same input (q/k/v, gate/up). NULL (and *cols = 0)
 * when xtx was not collected or i is out of range. cols may be NULL. */
const double *mpq_calib_xtx_packed(const mpq_calib *cal, int linear_index, int64_t *cols);

/* Index of element (i, j) of a packed X^T X of c columns (either order of i, j). */
static inline int64_t mpq_xtx_index(int64_t c, int64_t i, int64_t j) {
    if (i > j) {
        int64_t t = i;
        i = j;
        j = t;
    }
    return i * c - i * (i - 1) / 2 + (j - i);
}
/* Values a packed X^T X of c columns holds: c (c + 1) / 2. */
static inline int64_t mpq_xtx_size(int64_t c) { return c * (c + 1) / 2; }

/* A mpq_calib holds one executor and one weight table: not thread-safe (one per thread).
 * Memory, N = n_seqs * T: reference log-probs N*vocab floats, block inputs, residuals after
 * attention and FP attention outputs n_layers*N*(2*dim + n_heads*head_dim) floats, X^T X
 * cols (cols + 1) / 2 doubles per distinct input (4 per block, packed), and per calib or fork
 * the layer scratch plus, with xtx, one unpacked max_cols^2 doubles (where act_err unpacks a
 * layer's X^T X for cblas_dsymm, bit for bit the full-matrix numbers); the model's weights
 * are borrowed, not copied. */

/* Number of calibration sequences, tokens per sequence, and scored tokens (n_seqs * T). */
int mpq_calib_n_seqs(const mpq_calib *cal);
int mpq_calib_T(const mpq_calib *cal);
int64_t mpq_calib_n_tokens(const mpq_calib *cal);

/* (The type was first declared with the same name as the function below, which C does not
 * allow: the type is mpq_calib_weight_stats, the function keeps its name.) */
typedef struct mpq_calib_weight_stats {
    double sse, rel;          /* weight space */
    double act_err, act_rel;  /* activation weighted (NAN when xtx was not collected) */
} mpq_calib_weight_stats;

/* Weight-space and activation-weighted error of candidate c on linear layer i. Does not touch
 * the model. MPQ_ERR_INVALID for a bad index or NULL argument. */
mpq_status mpq_calib_weight_error(mpq_calib *cal, int linear_index, const mpq_candidate *c,
                                  mpq_calib_weight_stats *out, mpq_err *err);

typedef struct mpq_calib_result {
    double kl, kl_se;       /* mean KL(P_fp || P_q) per token, standard error over sequences */
    double dloss, dloss_se; /* mean CE change (nats/token), standard error over sequences (paired) */
    double top1, top1_se;   /* top-1 agreement, standard error over sequences */
    double attn_rel;        /* KV only: relative error of the block's attention output (else NAN) */
    int64_t n_seqs, n_tokens;
    double seconds;
} mpq_calib_result;

/* Measured sensitivity of linear layer i quantized with c, all other layers FP. */
mpq_status mpq_calib_layer(mpq_calib *cal, int linear_index, const mpq_candidate *c,
                           mpq_calib_result *out, mpq_err *err);

/* mpq_calib_layer over calibration windows [seq_begin, seq_end) only, continuing the
 * accumulator *acc (zeroed before the first range; updated): windows are taken in whole
 * batches of opts.batch (seq_begin a multiple of it, seq_end one too or n_seqs), so that
 * consecutive ranges from 0 to n_seqs leave in *acc, and in *out, exactly the bits of one
 * mpq_calib_layer call. *out is the result over every window accumulated so far. seq_kl (may
 * be NULL) receives the (seq_end - seq_begin) per-window mean KL values (nats/token).
 * MPQ_ERR_INVALID for a range that is not whole batches, a bad index or NULL argument. */
mpq_status mpq_calib_layer_range(mpq_calib *cal, int linear_index, const mpq_candidate *c, int seq_begin,
                                 int seq_end, mpq_eval_stats *acc, double *seq_kl, mpq_calib_result *out,
                                 mpq_err *err);

/* The same measurement with linear layer i's weights replaced by w ((rows, cols) row-major,
 * borrowed for the call) instead of a candidate's Q(W): same windows, entry point and prefix
 * reuse as mpq_calib_layer, and the layer restored afterwards (the noise_sensitivity stage
 * passes W + E). MPQ_ERR_INVALID for a bad index or NULL argument. */
mpq_status mpq_calib_layer_weights(mpq_calib *cal, int linear_index, const float *w, mpq_calib_result *out,
                                   mpq_err *err);

/* Measured sensitivity of block b's KV cache quantized with pair p (scheme from opts). */
mpq_status mpq_calib_kv(mpq_calib *cal, int block, mpq_kv_pair p, mpq_calib_result *out, mpq_err *err);

/* The same with only KV head `head` of block b quantized with p (mpq_exec_opts.kv_head_pairs:
 * every other head and block in full precision): the per-head units of kv_sensitivity.
 * MPQ_ERR_INVALID for a bad block / head, or a scheme group_size that does not divide head_dim. */
mpq_status mpq_calib_kv_head(mpq_calib *cal, int block, int head, mpq_kv_pair p, mpq_calib_result *out,
                             mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_CALIB_H */
