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

/* Per-KV-head variant: dst (B,T,n_kv_heads*hd) = src with the channels of head h
 * ([h*hd, (h+1)*hd)) quantized with pairs[h].k_bits (key) or .v_bits, 16 = copied. The groups
 * are those of kv_quantize_forward restricted to the head; with G dividing hd (required by the
 * caller) they are the same groups, so equal bits on every head give bitwise the same dst.
 * Returns false (dst untouched) when every head has 16 bits. */
bool kv_quantize_heads_forward(float *dst, const float *src, int B, int T, int n_kv_heads, int hd,
                               const mpq_kv_pair *pairs, bool key, const mpq_kv_scheme *s);
/* dst (N,kv_dim) = SAQ quantize-dequantize of src (N,kv_dim) of block `layer` at the rate
 * held in `field` (whole bits or MPQ_KV_RATE_FRAC + 1024*rate) with the bases saq
 * (checked by the caller); rows are coded independently. On a failure (out of memory) dst
 * is all NaN, so that it cannot pass for a small error. */
void kv_saq_forward(float *dst, const float *src, int N, int kv_dim, int layer, int field, bool key,
                    const mpq_kv_saq *saq);

/* Query rows per block of the causal attention. */
#define ATTN_BLOCK 64

/* Causal GQA attention for each (b, h), kv head h / (NH/NKV), in blocks of ATTN_BLOCK query
 * rows t0..t1-1 that read keys 0..t1-1 only (the upper triangle beyond the block is never
 * computed):
 *   P = softmax(mask(Q K^T / sqrt(hd))) per row (softmax_row_forward), out (B,T,NH*hd) = P @ V.
 * q (B,T,NH*hd), k/v (B,T,NKV*hd). kq / vq (same shape as k / v) are quantized copies or NULL;
 * when given, query t reads kq rows 0..kv_n_quant(t,key)-1 and k rows after that (same for v).
 * att (B,NH,T,T) or NULL: when given, the probabilities are written there (row t, columns
 * 0..t1-1, zeros above the diagonal) for the backward pass; columns t1..T-1 of the block's rows
 * are not written and must already hold zeros. scratch: 3 * min(T, ATTN_BLOCK) * T floats.
 * Products via cblas_sgemm. */
void attention_forward(float *out, float *att, float *scratch, const float *q, const float *k,
                       const float *v, const float *kq, const float *vq, const mpq_kv_scheme *s,
                       int B, int T, int NH, int NKV, int hd);

/* Fast float e^x (kernels.c has the derivation of the bound): relative error
 * <= EXP_FAST_MAX_REL = 2^-22 (4 u) for x in [EXP_FAST_LO, EXP_FAST_HI] (ln FLT_MIN, 127.5 ln 2);
 * +0 below EXP_FAST_LO (including -inf), +inf above EXP_FAST_HI, NaN for NaN. */
#define EXP_FAST_LO (-87.33654475f)
#define EXP_FAST_HI 88.37626266f
#define EXP_FAST_MAX_REL 2.384185791015625e-7 /* 2^-22 */
float exp_fast(float x);

/* x[i] = exp_fast(x[i]) for i < n (vectorised). */
void exp_fast_inplace(float *x, size_t n);

/* In place on a (n_row): softmax of a[0..n_valid) (max subtracted, exp_fast, sum in double,
 * multiplied by the float reciprocal of the sum), zeros in a[n_valid..n_row). n_valid >= 1. */
void softmax_row_forward(float *a, int n_valid, int n_row);

/* out (n) = silu(gate) * up with silu(g) = g / (1 + exp_fast(-g)); the three do not overlap. */
void swiglu_forward(float *restrict out, const float *restrict gate, const float *restrict up, size_t n);

/* out (n) = a + b. */
void residual_forward(float *out, const float *a, const float *b, size_t n);

/* log sum_i exp(logits[i]) (V) in double: m + log(sum_i exp_fast(logits[i] - m)) with m the
 * first maximum, the exponentials in float, their sum in double (four partial sums by index mod
 * 4, as softmax_row_forward); *argmax (may be NULL) = the index of the first maximum. */
double logsumexp_forward(const float *logits, int V, int *argmax);

/* out (V) = log_softmax(logits (V)) = (float)(logits[i] - logsumexp_forward(...)) with the
 * subtraction in double; returns the argmax (first on ties). out may not alias logits. */
int logsoftmax_forward(float *out, const float *logits, int V);

/* KL(P_ref || P) of one position before clamping: sum_i p_i ((double)lr_i - (double)lp_i) with
 * lp_i = (float)((double)logits[i] - lse) (the value logsoftmax_forward stores), p_i = p[i], or
 * (double)exp_fast(lr[i]) when p is NULL; the terms are summed in double in four partial sums
 * by index mod 4 (the rest into the first), then (s0 + s1) + (s2 + s3). */
double kl_row_forward(const double *p, const float *lr, const float *logits, double lse, int V);

/* Index of the first maximum of x (n >= 1); NaNs never win, except a NaN at 0 stays. */
int argmax_forward(const float *x, int n);

#endif
