/* exec_kernels.h - private forward kernels of the reference executor (llm.c layout:
 * <op>_forward(out, in, w, dims...), row-major, N = B*T rows) and the KV-cache
 * quantization emulation. Reference: llama2.c run.c, llm.c train_gpt2.c, KIVI. */
#ifndef MPQ_EXEC_KERNELS_H
#define MPQ_EXEC_KERNELS_H

#include <stddef.h>

#include "mpq/mpq_quant.h"

/* out (N,C) = emb[tokens[n]] ; emb (V,C). Tokens already range-checked. */
void encoder_forward(float *out, const int *tokens, const float *emb, int N, int C);

/* out (N,C) = inp * rstd * weight, rstd (N) = 1/sqrt(mean(inp^2) + eps). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps);

/* out (N,OC) = inp (N,C) @ w^T (w (OC,C)) + bias (OC, may be NULL); cblas_sgemm. */
void matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                    int OC);

/* In place: x (B,T,n_heads*hd), interleaved pairs (2i, 2i+1) of each head rotated by angle
 * pos*freq_i; cos_tab/sin_tab (seq_len, hd/2) indexed [pos][i]. Positions t = 0..T-1. */
void rope_forward(float *x, const float *cos_tab, const float *sin_tab, int B, int T, int n_heads,
                  int hd);

/* Number of leading cache tokens read quantized by a query at position t (see mpq_exec.h):
 * key = true for keys. The quantized set is always a prefix 0..n-1. */
int kv_n_quant(int t, bool key, const mpq_kv_scheme *s);

/* dst (B,T,kv_dim) = quantize-dequantize of src (B,T,kv_dim) with `bits` for keys (key=true)
 * or values: per-token groups of G channels, or (KIVI keys) per-channel groups of G tokens;
 * only complete token groups are quantized for KIVI keys (the rest copied). */
void kv_quantize_forward(float *dst, const float *src, int B, int T, int kv_dim, int bits, bool key,
                         const mpq_kv_scheme *s);

/* Causal GQA attention for each (b, h), kv head h / (NH/NKV):
 *   att (B,NH,T,T) = softmax(mask(Q K^T / sqrt(hd))) (upper triangle 0; saved for backward)
 *   out (B,T,NH*hd) = att @ V
 * q (B,T,NH*hd), k/v (B,T,NKV*hd). kq / vq (same shape as k / v) are quantized copies or NULL;
 * when given, query t reads kq rows 0..kv_n_quant(t,key)-1 and k rows after that (same for v).
 * scratch: 2*T*T floats. Products via cblas_sgemm. */
void attention_forward(float *out, float *att, float *scratch, const float *q, const float *k,
                       const float *v, const float *kq, const float *vq, const mpq_kv_scheme *s,
                       int B, int T, int NH, int NKV, int hd);

/* out (n) = silu(gate) * up. */
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);

/* out (n) = a + b. */
void residual_forward(float *out, const float *a, const float *b, size_t n);

/* out (V) = log_softmax(logits (V)); returns the argmax (first on ties). Double accumulation. */
int logsoftmax_forward(float *out, const float *logits, int V);

#endif
