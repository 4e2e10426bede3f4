/*
 * mpq_grad.h - gradients of the next-token cross-entropy with respect to every parameter
 * of a LLaMA-family model (backward pass of the reference executor, llm.c style).
 *
 * The loss of a batch of B sequences x T positions (tokens laid out (B, T+1) as for
 * mpq_exec_eval: inputs 0..T-1, targets 1..T) is the mean over the B*T targets of
 * -log p(target). Gradients mirror the parameters: they live in an mpq_weights block of the
 * model's layout (same carving as mpq_weights_clone), so every tensor's gradient is at the
 * same offset as the tensor, and the whole gradient is the flat vector g->data[0..n_floats).
 * With a shared classifier the classifier and the embedding are one tensor and their
 * gradients add.
 *
 *     mpq_exec *ex = NULL;  mpq_grad *gr = NULL;  mpq_weights *g = NULL;
 *     mpq_err err = {0};
 *     mpq_exec_create(model, 4, 128, &ex, &err);
 *     mpq_grad_create(ex, &gr, &err);
 *     mpq_grad_weights_zeros(model, &g, &err);
 *     double loss;
 *     mpq_grad_compute(gr, mpq_model_get_weights(model), tokens, 4, 128, 1.0f, g, &loss, &err);
 *     // g->blocks[3].wq now holds dLoss/dWq of block 3
 *     mpq_weights_free(g); mpq_grad_free(gr); mpq_exec_free(ex);
 *
 * Only the full-precision KV path is differentiated (no KV quantization, no capture).
 * A mpq_grad is bound to one executor and is not thread-safe (one per thread).
 * Reference: llm.c train_gpt2.c (Karpathy) for the kernel layout; llama2.c run.c for the
 * model (RMSNorm, interleaved RoPE, GQA attention, SwiGLU).
 */
#ifndef MPQ_GRAD_H
#define MPQ_GRAD_H

#include "mpq/mpq.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mpq_grad mpq_grad;

/* Creates backward workspace for executor `ex` (borrowed; must outlive the mpq_grad), sized
 * for the executor's max_B x max_T. MPQ_ERR_INVALID (NULL), MPQ_ERR_NOMEM. */
mpq_status mpq_grad_create(mpq_exec *ex, mpq_grad **out, mpq_err *err);
void mpq_grad_free(mpq_grad *g); /* accepts NULL */

/* A zeroed weights-shaped block for `model` (free with mpq_weights_free). MPQ_ERR_NOMEM. */
mpq_status mpq_grad_weights_zeros(const mpq_model *model, mpq_weights **out, mpq_err *err);

/* Sets every float of a weights-shaped block to zero (accepts NULL). */
void mpq_grad_weights_clear(mpq_weights *g);

/* Forward + backward over tokens (B, T+1) with weights w: ACCUMULATES
 * scale * dLoss/dw into grads (clear it first for a plain gradient; scale lets a caller
 * average batches of different sizes). *loss (may be NULL) receives the batch's mean
 * cross-entropy (nats, unscaled). Overwrites the executor's activations (its logits stay
 * those of this batch). MPQ_ERR_INVALID for NULL / shape mismatch / bad sizes or tokens
 * (message names the position). */
mpq_status mpq_grad_compute(mpq_grad *g, const mpq_weights *w, const int *tokens, int B, int T,
                            float scale, mpq_weights *grads, double *loss, mpq_err *err);

/* ---- taps: the gradient of every linear layer's output ----------------------------------
 * A tap sees, for each linear layer y = x W^T (+ b) of the selected block(s), the gradient of
 * the loss with respect to the layer's OUTPUT, dout (N, out_features) row-major, and its
 * input x, inp (N, in_features), with N = B*T rows in (sequence, position) order. dout is
 * scaled as the parameter gradients are: scale/(B*T) * d(sum of the B*T token losses)/dy, so
 * scale = (float)(B*T) gives the gradient of the SUM of the token losses. For attn_q / attn_k
 * it is the gradient before RoPE (the projection's output). Both pointers are borrowed for
 * the call. Order: blocks from last to first; within a block ffn_down, ffn_gate, ffn_up,
 * attn_o, attn_q, attn_k, attn_v. A tap returning non-OK stops the pass with that status. */
typedef mpq_status (*mpq_grad_tap_fn)(void *user, int block, mpq_layer_kind kind, const float *dout,
                                      const float *inp, int N, int out_features, int in_features, mpq_err *err);

typedef struct mpq_grad_tap {
    mpq_grad_tap_fn fn;
    void *user;
    int block; /* >= 0: call fn for this block only and stop the backward pass after it (the
                  parameter gradients of lower blocks and of the embedding are then NOT
                  accumulated); < 0: every block, full backward */
} mpq_grad_tap;

/* As mpq_grad_compute, calling tap (may be NULL: identical to mpq_grad_compute). Errors as
 * mpq_grad_compute, or the tap's status. */
mpq_status mpq_grad_compute_tap(mpq_grad *g, const mpq_weights *w, const int *tokens, int B, int T, float scale,
                                mpq_weights *grads, double *loss, const mpq_grad_tap *tap, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_GRAD_H */
