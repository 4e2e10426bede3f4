/*
 * mpq_exec.h - reference executor: forward pass of a LLaMA-family model over a batch of
 * B sequences x T tokens (every matrix product through BLAS sgemm), an incremental
 * single-sequence decode path with a KV cache, KV-cache quantization (per-layer K/V bit
 * pairs, KIVI or per-token grouping, full-precision residual window), and evaluation:
 * cross-entropy / perplexity and, against a stored reference run, KL(P_ref || P) and
 * top-1 agreement.
 *
 * Reference: llama2.c run.c (Karpathy) for the model, llm.c for the kernel layout;
 * KIVI (Liu et al. 2024, "KIVI: a tuning-free asymmetric 2bit quantization for KV cache")
 * for the KV grouping; KVTuner for per-layer (K bits, V bits) pairs.
 *
 *     mpq_exec *ex = NULL;
 *     mpq_err err = {0};
 *     if (mpq_exec_create(model, 8, 256, &ex, &err) != MPQ_OK) ...
 *     mpq_exec_opts o = mpq_exec_opts_default();        // FP KV cache
 *     mpq_kv_pair pairs[6] = ...;  o.kv_pairs = pairs; o.n_kv_pairs = 6;
 *     mpq_exec_ref *ref = NULL;                          // FP reference for 64 sequences
 *     mpq_exec_ref_build(ex, mpq_model_get_weights(model), NULL, tokens, 64, 256, false, &ref, &err);
 *     mpq_eval_stats st = {0};
 *     mpq_exec_eval_ref(ex, qweights, &o, ref, 0, &st, &err);
 *     printf("ppl %.3f  KL %.4g +- %.2g  top1 %.3f\n", st.ppl, st.kl_mean, st.kl_se, st.top1);
 *     mpq_exec_ref_free(ref);
 *     mpq_exec_free(ex);
 *
 * An executor is not thread-safe: use one per thread (they may share the model and weights,
 * which are only read).
 *
 * Tokens are int ids in [0, vocab_size). An evaluation batch holds T+1 tokens per sequence
 * (inputs 0..T-1, targets 1..T), laid out (B, T+1) row-major.
 *
 * KV quantization, exact causal emulation (same numbers in batch and decode mode):
 * K and V are quantized after RoPE with mpq_quant_rtn_minmax (asymmetric min-max RTN,
 * fp16 scale/zero), or mpq_quant_caq_minmax (RTN + CAQ code adjustment) when scheme.caq. For a query at position t the cache holds tokens 0..t, and token j's
 * key/value is read quantized iff
 *   - values, and keys in MPQ_KV_PER_TOKEN mode (each token's kv_dim-wide vector in groups
 *     of G consecutive channels, last group partial): j <= t - R;
 *   - keys in MPQ_KV_KIVI mode (each channel over groups of G consecutive tokens starting at
 *     token 0): j <= t - R and j's token group is complete by t (floor(j/G)*G + G - 1 <= t);
 *     an incomplete group stays in full precision, as in KIVI's streaming cache.
 * R = scheme.residual, G = scheme.group_size. The quantized values never depend on tokens
 * after t, so the emulation is causal. Pairs with 16 bits leave that tensor unquantized.
 */
#ifndef MPQ_EXEC_H
#define MPQ_EXEC_H

#include "mpq/mpq.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mpq_exec mpq_exec;

/* Called with the input X (rows = B*T, cols = in_features, row-major, borrowed for the
 * duration of the call) of linear layer `linear_index` (index into mpq_model_linear's table)
 * just before its product, e.g. to accumulate X^T X for GPTQ. q/k/v share one X (three calls
 * with the same pointer), as do gate/up. */
typedef void (*mpq_exec_capture_fn)(void *user, int linear_index, const float *x, int64_t rows,
                                    int64_t cols);

typedef struct mpq_exec_opts {
    mpq_kv_scheme kv_scheme;      /* grouping / residual window (default: mpq_kv_scheme_default()) */
    const mpq_kv_pair *kv_pairs;  /* n_layers pairs, borrowed; NULL = KV cache in full precision */
    int n_kv_pairs;               /* must equal n_layers when kv_pairs != NULL */
    mpq_exec_capture_fn capture;  /* optional: linear-input capture (batch forward only) */
    void *capture_user;
    /* Per-(layer, KV head) pairs: NULL, or n_layers * n_kv_heads pairs, layer-major (pair of
     * KV head h of layer l at [l * n_kv_heads + h]), borrowed. When set, kv_pairs is ignored and
     * each KV head's channels (h*head_dim .. (h+1)*head_dim - 1) are quantized with its own
     * pair, in groups of the scheme restricted to the head; the scheme's group_size must divide
     * head_dim so that no per-token group straddles two heads (MPQ_ERR_INVALID otherwise). With
     * every head of a layer at the layer's pair the numbers are bitwise those of kv_pairs.
     * Batch forward and evaluation only (mpq_exec_decode_step: MPQ_ERR_UNSUPPORTED). */
    const mpq_kv_pair *kv_head_pairs;
    int n_kv_head_pairs;          /* must equal n_layers * n_kv_heads when kv_head_pairs != NULL */
    const mpq_kv_saq *kv_saq;     /* kv_scheme.mode saq: the bases (borrowed), else unused */
} mpq_exec_opts;

/* FP KV cache, default scheme, no capture. */
mpq_exec_opts mpq_exec_opts_default(void);

/* Creates an executor for `model` (borrowed; must outlive the executor) with activation
 * buffers for up to max_B sequences x max_T tokens (max_T <= seq_len), allocated once in one
 * block. MPQ_ERR_INVALID on bad sizes, MPQ_ERR_NOMEM. */
mpq_status mpq_exec_create(const mpq_model *model, int max_B, int max_T, mpq_exec **out, mpq_err *err);
/* As mpq_exec_create for forward-only use (evaluation, calibration, references, capture,
 * decode): the per-layer tensors only a backward pass reads (RMSNorm outputs and rstd, q, k,
 * v and their quantized copies, FFN pre-activations, SwiGLU output) are held for one layer
 * and reused by every block, and the attention probabilities are not kept. Residuals entering
 * each block, after each attention and the attention outputs stay per layer (prefix reuse,
 * mpq_exec_block_input, references read them). Every forward, evaluation and decode gives the
 * same numbers, bit for bit, as on a full executor; mpq_grad_create refuses it
 * (MPQ_ERR_INVALID). */
mpq_status mpq_exec_create_forward(const mpq_model *model, int max_B, int max_T, mpq_exec **out, mpq_err *err);
void mpq_exec_free(mpq_exec *ex); /* accepts NULL */

/* Bytes of the activation block (for reporting). */
size_t mpq_exec_activation_bytes(const mpq_exec *ex);
/* Bytes of the scratch that widens 16-bit weights at use: the largest linear layer in
 * float32; 0 for a model held in float32. */
size_t mpq_exec_weight_scratch_bytes(const mpq_exec *ex);

/* ---- batch forward ---- */

/* Forward over tokens (B, T) (B <= max_B, T <= max_T) with weights `w` (of this model's
 * shape: the model's own or a fake-quantized clone). opts NULL = defaults. Logits land in
 * mpq_exec_logits. MPQ_ERR_INVALID for bad sizes / token ids / kv pairs (message names
 * the position). */
mpq_status mpq_exec_forward(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                            const int *tokens, int B, int T, mpq_err *err);

/* Prefix reuse: runs blocks layer_start..n_layers-1 and the head, given x_in (B, T, dim),
 * the residual stream entering block layer_start (e.g. a copy of mpq_exec_block_input of
 * an earlier pass). layer_start == n_layers runs only the final norm and classifier.
 * Bitwise equal to mpq_exec_forward when x_in and the weights / KV pairs of the later
 * blocks are the same. */
mpq_status mpq_exec_forward_from(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                 int layer_start, const float *x_in, int B, int T, mpq_err *err);

/* Where a forward enters its first block (mpq_exec_forward_from_entry). */
typedef enum mpq_exec_entry {
    MPQ_EXEC_ENTRY_BLOCK = 0, /* at the block's attention RMSNorm; x_in = residual entering it */
    MPQ_EXEC_ENTRY_ATTN_O,    /* at wo; x_in = residual entering the block, a_in = the attention
                                 output (B, T, n_heads*head_dim), the input of wo */
    MPQ_EXEC_ENTRY_FFN        /* at the FFN RMSNorm; x_in = residual after the block's attention */
} mpq_exec_entry;

/* Within-block prefix reuse: runs block `layer` from `entry`, then blocks layer+1.. and the
 * head. a_in is read only for MPQ_EXEC_ENTRY_ATTN_O (may be NULL otherwise); ENTRY_BLOCK is
 * mpq_exec_forward_from. Bitwise equal to mpq_exec_forward when x_in / a_in are those of an
 * earlier pass with the same batch and the weights / KV pairs after the entry point are the
 * same (e.g. a unit quantizing only w_gate, w_up or w_down of block b may enter at its FFN,
 * one quantizing wo at ATTN_O). Activations before the entry point are left stale.
 * MPQ_ERR_INVALID for a bad layer / entry / NULL input or as mpq_exec_forward. */
mpq_status mpq_exec_forward_from_entry(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, int layer,
                                       mpq_exec_entry entry, const float *x_in, const float *a_in, int B, int T,
                                       mpq_err *err);

/* Borrowed results of the last forward, packed (B, T, ...) with that call's B and T;
 * valid until the next forward / eval call or mpq_exec_free. */
const float *mpq_exec_logits(const mpq_exec *ex);                 /* (B, T, vocab) */
const float *mpq_exec_block_input(const mpq_exec *ex, int layer); /* (B, T, dim); layer in
                                       0..n_layers (n_layers = input of the final norm) */

/* ---- evaluation ---- */

/* Accumulated over calls (start from a zeroed struct); the derived fields are recomputed
 * after every call. */
typedef struct mpq_eval_stats {
    int64_t n_tokens;     /* scored positions */
    int64_t n_seqs;       /* scored sequences */
    double nll_sum;       /* sum of -log p(target) (nats) */
    double ce;            /* nll_sum / n_tokens */
    double ppl;           /* exp(ce) */
    /* against a reference (only positions evaluated with one): */
    int64_t n_ref_tokens, n_ref_seqs;
    double kl_sum;        /* sum over positions of KL(P_ref || P) (nats) */
    double kl_seq_sum, kl_seq_sumsq; /* sums of per-sequence mean KL and its square */
    int64_t top1_same;    /* positions whose argmax equals the reference argmax */
    double kl_mean;       /* kl_sum / n_ref_tokens */
    double kl_se;         /* standard error over sequences of the per-sequence mean KL
                             (sample std / sqrt(n_ref_seqs); 0 with fewer than 2 sequences) */
    double top1;          /* top1_same / n_ref_tokens */
    /* paired against the reference, per position d = nll - nll_ref (nats), where nll_ref is
     * -log of the reference's probability of the same target (only with a reference): */
    double dnll_sum;                     /* sum over positions of d */
    double dnll_seq_sum, dnll_seq_sumsq; /* sums of per-sequence mean d and its square */
    double top1_seq_sum, top1_seq_sumsq; /* sums of per-sequence top-1 agreement and its square */
    double dnll_mean;     /* dnll_sum / n_ref_tokens: change of cross-entropy vs the reference */
    double dnll_se;       /* standard error over sequences of the per-sequence mean d (paired) */
    double top1_se;       /* standard error over sequences of the per-sequence top-1 agreement */
} mpq_eval_stats;

/* Optional inputs/outputs of one evaluation batch; all NULL = statistics only. */
typedef struct mpq_eval_io {
    const float *ref_logprobs; /* (B, T, vocab) log-softmax of the reference run, or NULL */
    float *logprobs_out;       /* (B, T, vocab) receives this run's log-softmax (to serve as a
                                  reference later), or NULL */
    float *logits_out;         /* (B, T, vocab) receives the raw logits, or NULL */
    float *target_logprobs_out;/* (B, T) receives log p(tokens[b][t+1]), or NULL */
} mpq_eval_io;

/* Forward over tokens (B, T+1) and accumulate cross-entropy (and KL / top-1 when
 * io->ref_logprobs is given) into *stats. io may be NULL. */
mpq_status mpq_exec_eval(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                         const int *tokens, int B, int T, const mpq_eval_io *io,
                         mpq_eval_stats *stats, mpq_err *err);

/* A stored reference run over n_seqs sequences (tokens (n_seqs, T+1), copied): its
 * log-softmax (n_seqs * T * vocab floats: 64 x 256 x 2048 x 4 B = 128 MiB for sotu-2.7M),
 * the argmax per position (n_seqs * T ints), the probabilities exp of the log-softmax (the
 * executor's float exp, README "Executor numerics", widened to double; n_seqs * T * vocab
 * doubles, kept only when that is at most MPQ_EXEC_REF_P_MAX bytes: it spares every later
 * evaluation the same exp per vocabulary entry and does not change any number) and,
 * with keep_residuals, for prefix reuse per block the residual entering it and the residual
 * after its attention (2 * n_layers * n_seqs * T * dim floats) and its attention output
 * (n_layers * n_seqs * T * n_heads*head_dim floats). */
typedef struct mpq_exec_ref mpq_exec_ref;

#define MPQ_EXEC_REF_P_MAX ((size_t)256 << 20)

/* Runs the reference (weights w, opts; NULL = FP KV) in batches of the executor's max_B. */
mpq_status mpq_exec_ref_build(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                              const int *tokens, int n_seqs, int T, bool keep_residuals,
                              mpq_exec_ref **out, mpq_err *err);
void mpq_exec_ref_free(mpq_exec_ref *ref); /* accepts NULL */
int mpq_exec_ref_n_seqs(const mpq_exec_ref *ref);
int mpq_exec_ref_T(const mpq_exec_ref *ref);
/* The reference's own statistics (cross-entropy / ppl of the reference run). Borrowed. */
const mpq_eval_stats *mpq_exec_ref_stats(const mpq_exec_ref *ref);
/* Borrowed (n_seqs, T, vocab) log-softmax; valid until mpq_exec_ref_free. */
const float *mpq_exec_ref_logprobs(const mpq_exec_ref *ref);
/* Borrowed (n_seqs, T, n_heads*head_dim) attention output (input of wo) of block `layer`;
 * NULL without keep_residuals or for a bad layer. Valid until mpq_exec_ref_free. */
const float *mpq_exec_ref_attn_out(const mpq_exec_ref *ref, int layer);

/* Evaluates weights w / opts on the reference's sequences and accumulates into *stats,
 * including KL and top-1 against the reference. layer_start > 0 starts from the stored
 * residual entering that block (needs keep_residuals; the caller guarantees that blocks
 * < layer_start have the reference's weights and KV pairs). */
mpq_status mpq_exec_eval_ref(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                             const mpq_exec_ref *ref, int layer_start, mpq_eval_stats *stats,
                             mpq_err *err);

/* As mpq_exec_eval_ref, entering block `layer` at `entry` (mpq_exec_forward_from_entry) from
 * the stored residuals / attention outputs (needs keep_residuals unless layer 0 / ENTRY_BLOCK).
 * The caller guarantees that everything before the entry point has the reference's weights
 * and KV pairs. Bitwise equal to mpq_exec_eval_ref(..., 0, ...) under that condition. */
mpq_status mpq_exec_eval_ref_entry(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                   const mpq_exec_ref *ref, int layer, mpq_exec_entry entry,
                                   mpq_eval_stats *stats, mpq_err *err);

/* The batches of mpq_exec_eval_ref_entry that hold sequences [seq_begin, seq_end) only:
 * seq_begin a multiple of ex's max_B, seq_end one too or the reference's n_seqs, so that
 * every batch has the composition it has in the whole evaluation. Calls over consecutive
 * ranges accumulating into the same *stats give exactly the bits of one whole call.
 * seq_kl (may be NULL) receives (seq_end - seq_begin) per-sequence mean KL values, the very
 * numbers whose sum and sum of squares enter kl_seq_sum / kl_seq_sumsq. MPQ_ERR_INVALID
 * for a range that is not whole batches, or as mpq_exec_eval_ref_entry. */
mpq_status mpq_exec_eval_ref_entry_range(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                         const mpq_exec_ref *ref, int layer, mpq_exec_entry entry, int seq_begin,
                                         int seq_end, mpq_eval_stats *stats, double *seq_kl, mpq_err *err);

/* ---- evaluation on worker threads ----
 * The statistics are sums over positions and sequences in floating point, so their last
 * bits depend on the order of the additions. A batch can instead be scored into a part,
 * which records every addition it would make, and parts added to the totals in batch order
 * give exactly the bits of one thread calling mpq_exec_eval batch after batch (the batch
 * composition, i.e. max_B, must stay the same: it sets the rows of every matrix product). */

typedef struct mpq_eval_part mpq_eval_part;

/* A part for batches of up to max_B x max_T. MPQ_ERR_INVALID, MPQ_ERR_NOMEM. */
mpq_status mpq_eval_part_create(int max_B, int max_T, mpq_eval_part **out, mpq_err *err);
void mpq_eval_part_free(mpq_eval_part *part); /* accepts NULL */

/* As mpq_exec_eval, but the batch's contributions are recorded in part (overwritten) instead
 * of added to statistics. MPQ_ERR_INVALID also when B x T exceeds the part. */
mpq_status mpq_exec_eval_part(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts, const int *tokens, int B,
                              int T, const mpq_eval_io *io, mpq_eval_part *part, mpq_err *err);

/* Adds a part to *stats with the additions mpq_exec_eval would have made, and recomputes
 * the derived fields. */
void mpq_eval_stats_add(mpq_eval_stats *stats, const mpq_eval_part *part);

/* One batch's work for mpq_exec_batches_run; `worker` in 0..n_workers-1 selects the
 * caller's per-worker state (an executor, a part, buffers). Returns an mpq_status. */
typedef mpq_status (*mpq_exec_batch_fn)(void *user, int worker, int batch, mpq_err *err);

#define MPQ_EXEC_MAX_WORKERS 256

/* Runs compute(batch) for batches 0..n_batches-1 on n_workers threads (the calling thread
 * is one of them; capped at n_batches and MPQ_EXEC_MAX_WORKERS) and commit(batch) on the
 * worker that computed it, after that batch's compute and after every earlier batch's
 * commit, never two commits at once. Accumulate in commit and the result does not depend on
 * n_workers. The first batch (in order) whose compute or commit fails stops the run: its
 * status and message are returned, later batches are not committed. */
mpq_status mpq_exec_batches_run(int n_workers, int n_batches, mpq_exec_batch_fn compute, mpq_exec_batch_fn commit,
                                void *user, mpq_err *err);

/* mpq_exec_eval_ref with n_workers threads: ex and n_workers-1 executors created for the
 * call (each holds its own activations, mpq_exec_activation_bytes) take whole batches of
 * ex's max_B sequences; the statistics are bit-identical to mpq_exec_eval_ref's for any
 * n_workers. n_workers <= 1 is mpq_exec_eval_ref. */
mpq_status mpq_exec_eval_ref_workers(mpq_exec *ex, int n_workers, const mpq_weights *w, const mpq_exec_opts *opts,
                                     const mpq_exec_ref *ref, int layer_start, mpq_eval_stats *stats, mpq_err *err);

/* As mpq_exec_eval_ref_entry, but the residuals / attention outputs entering block `layer`
 * at `entry` are read from `from` (a run on the same tokens with keep_residuals, e.g. of the
 * model quantized as in a configuration) while KL / top-1 are scored against `ref` (e.g. the
 * FP run): the in-context damage of changing layers at or after the entry point of a
 * configuration whose earlier layers are as in `from`. Bitwise equal to
 * mpq_exec_eval_ref(ex, w, opts, ref, 0, ...) when everything before the entry point has
 * from's weights and KV pairs. MPQ_ERR_INVALID when from and ref differ in shape or tokens,
 * from has no residuals, or as mpq_exec_eval_ref_entry. */
mpq_status mpq_exec_eval_ref_entry_from(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                        const mpq_exec_ref *ref, const mpq_exec_ref *from, int layer,
                                        mpq_exec_entry entry, mpq_eval_stats *stats, mpq_err *err);

/* ---- incremental decode (one sequence, KV cache of seq_len tokens) ---- */

/* Empties the KV cache (position 0). */
void mpq_exec_decode_reset(mpq_exec *ex);
/* Current position (tokens in the cache). */
int mpq_exec_decode_pos(const mpq_exec *ex);
/* Feeds `token` at the current position and advances it; *logits (may be NULL) receives a
 * borrowed (vocab) pointer valid until the next call. opts->kv_* apply as in batch mode;
 * the caller keeps opts the same for the whole sequence. MPQ_ERR_INVALID when the cache is
 * full (position == seq_len) or the token is out of range; MPQ_ERR_NOMEM. */
mpq_status mpq_exec_decode_step(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                int token, const float **logits, mpq_err *err);
/* Greedy generation: resets, feeds prompt (n_prompt >= 1), then writes n_new argmax ids to
 * out (each fed back). */
mpq_status mpq_exec_generate_greedy(mpq_exec *ex, const mpq_weights *w, const mpq_exec_opts *opts,
                                    const int *prompt, int n_prompt, int n_new, int *out,
                                    mpq_err *err);

/* ---- KV memory ---- */

/* Bytes per token of the KV cache, counting fp16 scale + fp16 zero per group (through
 * mpq_kv_bits_per_element) for a context of context_len tokens: returns the total over
 * layers and, when per_layer != NULL, writes n_layers per-layer figures. pairs NULL = all
 * k16v16. */
double mpq_exec_kv_bytes_per_token(const mpq_model_config *cfg, const mpq_kv_pair *pairs,
                                   const mpq_kv_scheme *scheme, int64_t context_len,
                                   double *per_layer);

/* FLOPs of one batch forward over B x T tokens (2 per multiply-add: projections, causal
 * attention counted as the full T x T products the executor runs, classifier). */
double mpq_exec_forward_flops(const mpq_model_config *cfg, int B, int T);

/* ---- SAQ KV bases ---- */

/* Fits the SAQ KV bases of `model` (mpq_kv_saq in mpq_quant.h) from its full-precision
 * forward over n_seqs windows of seq_len tokens (window i at windows + i*window_stride), in
 * batches of `batch` windows: every block's keys before RoPE and its values, all positions.
 * *out owned by the caller (mpq_kv_saq_free). MPQ_ERR_INVALID, MPQ_ERR_NOMEM, MPQ_ERR_SOLVER. */
mpq_status mpq_kv_saq_fit_model(const mpq_model *model, const int32_t *windows, int n_seqs, int seq_len,
                                int window_stride, int batch, mpq_kv_saq **out, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_EXEC_H */
