/*
 * mpq_fisher.h - Fisher-weighted output error of quantizing a linear layer (the score of
 * NVIDIA ModelOpt's AutoQuantize): from ONE forward + backward pass of the full-precision
 * model per batch of windows, for every linear layer l and candidate format c,
 *
 *     fisher_err(l, c) = 1/n_windows * sum_windows  1/T * sum_{t=1..T} sum_o  g_{t,o}^2 * (E_c x_t)_o^2
 *
 * with E_c = Q_c(W_l) - W_l (mpq_quantize_matrix), x_t the layer's input at token t and
 * g_t = d(sum of the window's T next-token cross-entropies)/d y_t the gradient of the
 * window's summed loss with respect to the layer's output y_t = W_l x_t (+ b) at token t
 * (mpq_grad.h, taps). It is the diagonal empirical-Fisher approximation of the loss change
 * caused by the output perturbation E_c x_t (without the factor 1/2 of the quadratic model).
 * The loss is the data's next-token cross-entropy, not the KL to the model's own
 * distribution: the KL is at its minimum at the FP weights, so its gradient is exactly zero
 * there and an empirical Fisher built from it would vanish. Every window contributes one
 * per-token mean, so the standard error is over windows.
 *
 * Cost: per block, one forward and a backward down to that block per batch of windows (no
 * parameter gradients below it), and per candidate one (B*T, in) x (in, out) sgemm per layer
 * for E_c x_t: independent of the number of candidates except for those products.
 *
 *     double *win = malloc(sizeof(double) * 7 * n_cands * n_seqs);   // 7 linear layers per block
 *     mpq_fisher_block(model, tokens, n_seqs, seq_len, 8, 3, cands, n_cands, win, &err);
 *     mpq_fisher_stat s = mpq_fisher_summarize(win + (j * n_cands + c) * n_seqs, n_seqs);
 */
#ifndef MPQ_FISHER_H
#define MPQ_FISHER_H

#include <stddef.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The linear layers of block `block` of m, in the model's layer table order: *first gets the
 * index of the first (mpq_model_linear), the return value their number (0 if none). */
int mpq_fisher_block_layers(const mpq_model *m, int block, int *first);

/* Per-window Fisher-weighted output errors of the linear layers of `block`.
 * tokens: (n_seqs, seq_len + 1) windows, inputs 0..seq_len-1 and targets 1..seq_len each
 * (as mpq_grad_compute). Windows are run `batch` at a time in order (the last batch may be
 * shorter); the numbers depend on batch (the rows of each matrix product) but on nothing
 * else (no threads). out[(j * n_cands + c) * n_seqs + s] (j over the block's layers, see
 * mpq_fisher_block_layers) gets window s's per-token mean 1/T sum_t sum_o g^2 (E_c x_t)^2.
 * out must hold n_block_layers * n_cands * n_seqs doubles. MPQ_ERR_INVALID (NULL, a
 * shape-only model, n_cands < 1, block out of range, bad sizes or tokens), MPQ_ERR_NOMEM. */
mpq_status mpq_fisher_block(const mpq_model *m, const int *tokens, int n_seqs, int seq_len, int batch, int block,
                            const mpq_candidate *cands, int n_cands, double *out, mpq_err *err);

/* Mean over n values and its standard error sd / sqrt(n) (sd with n - 1; se NAN for n < 2). */
typedef struct mpq_fisher_stat {
    double mean, se;
    int n;
} mpq_fisher_stat;

mpq_fisher_stat mpq_fisher_summarize(const double *v, int n);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_FISHER_H */
