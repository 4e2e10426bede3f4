/* exec_internal.h - private layout of the reference executor shared by exec.c (forward)
 * and backward.c (backward pass): the activation block a forward keeps for the backward and
 * the executor struct. Moved out of exec.c unchanged. Reference: llm.c train_gpt2.c
 * (ActivationTensors: one block with pointers carved out). Not a public header. */
#ifndef MPQ_EXEC_INTERNAL_H
#define MPQ_EXEC_INTERNAL_H

#include <stddef.h>

#include "mpq/mpq_exec.h"

/* Activations of one batch forward; per-layer tensors are (L, max_B*max_T, ...) with the
 * current call's (B,T) rows packed at the start of each layer's slice. Everything a
 * backward pass needs is kept. */
typedef struct exec_acts {
    float *res;      /* (L+1, BT, dim)  residual entering block l; [L] enters the final norm */
    float *ln1;      /* (L, BT, dim)    attention RMSNorm output */
    float *ln1_rstd; /* (L, BT) */
    float *q;        /* (L, BT, qd)     after RoPE */
    float *k, *v;    /* (L, BT, kvd)    k after RoPE */
    float *kq, *vq;  /* (L, BT, kvd)    quantized copies (valid when that layer's bits < 16) */
    float *att;      /* (L, B, NH, T, T) attention probabilities (mpq_exec_forward only: the
                        backward reads them; the eval paths do not write them) */
    float *atty;     /* (L, BT, qd)     attention output before wo */
    float *res2;     /* (L, BT, dim)    residual after attention */
    float *ln2;      /* (L, BT, dim) */
    float *ln2_rstd; /* (L, BT) */
    float *gate, *up;/* (L, BT, hidden) pre-activations */
    float *hact;     /* (L, BT, hidden) silu(gate)*up, input of w_down */
    float *lnf;      /* (BT, dim) */
    float *lnf_rstd; /* (BT) */
    float *logits;   /* (BT, V) */
    float *proj;     /* (BT, dim) scratch: wo / w_down outputs */
    float *scratch;  /* (3, min(T, ATTN_BLOCK), T) attention scratch */
    float *row;      /* (2, V) scratch: one log-softmax row, one row of reference probabilities */
} exec_acts;

typedef struct exec_decode {
    float *block;
    float *x, *xb, *xb2;   /* (dim) */
    float *q;              /* (qd) */
    float *att;            /* (seq_len) */
    float *hb, *hb2, *hb3; /* (hidden): gate, up, silu(gate)*up */
    float *logits;         /* (V) */
    float *kc, *vc;        /* (L, seq_len, kvd) FP cache */
    float *kqc, *vqc;      /* (L, seq_len, kvd) quantized copies */
} exec_decode;

struct mpq_exec {
    const mpq_model *model;
    mpq_model_config cfg;
    int max_B, max_T;
    int B, T;              /* of the last batch forward */
    int att_T;             /* T whose (T,T) layout att holds (0: all zeros, as allocated) */
    int qd, kvd;
    size_t bt_max;         /* max_B * max_T */
    int *lin;              /* (L, 7) index into the model's layer table, -1 if absent */
    float *rope_cos, *rope_sin; /* (seq_len, hd/2) */
    int *tok;              /* (max_B * max_T) packed inputs */
    float *act_block;
    size_t act_floats;
    exec_acts a;
    exec_decode d;
    int pos;               /* decode position */
    mpq_eval_part *part;   /* scores of the last evaluation batch (mpq_exec_eval) */
    /* weight access (16-bit storage: each matrix converted to float32 at use) */
    float *wbuf;           /* (largest linear layer) float32 copy of a 16-bit matrix, or NULL (F32 model) */
    bool fwd_only;         /* created by mpq_exec_create_forward: per-layer scratch held once */
};

/* Layer l's matrix of kind k as float32: the slot's float pointer, or its 16-bit tensor
 * converted into ex->wbuf (valid until the next call). NULL when neither is set. */
const float *exec_weight(mpq_exec *ex, const mpq_weights *w, int l, mpq_layer_kind k);

/* ---- backward kernels (backward.c), llm.c convention: every d<x> output is ACCUMULATED
 * (+=) so that branches that meet add; N = B*T rows, row-major. ---- */

/* dlogits (N,V) = scale/N_total * (softmax(logits) - onehot(target)) for each row; returns the
 * sum over rows of -log p(target) (double). targets (N). */
double crossentropy_softmax_backward(float *dlogits, const float *logits, const int *targets, int N, int V,
                                     float dscale);

/* y = inp @ w^T + bias: dinp (N,C) += dout (N,OC) @ w (OC,C); dw (OC,C) += dout^T @ inp;
 * dbias (OC) += column sums of dout (dbias may be NULL; dinp may be NULL). cblas_sgemm. */
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                     int N, int C, int OC);

/* y = w * inp * rstd: dinp (N,C) += ..., dweight (C) += sum_n dout*inp*rstd. */
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C);

/* In place: dx (B,T,n_heads*hd) <- R^T dx (inverse rotation of rope_forward). */
void rope_backward(float *dx, const float *cos_tab, const float *sin_tab, int B, int T, int n_heads, int hd);

/* Causal GQA attention (FP KV) as attention_forward with kq = vq = NULL:
 * dq (B,T,NH*hd) += , dk / dv (B,T,NKV*hd) += ; att (B,NH,T,T) the saved probabilities;
 * scratch: 2*T*T floats. */
void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *q,
                        const float *k, const float *v, const float *att, int B, int T, int NH, int NKV, int hd);

/* out = silu(gate) * up: dgate += dout * up * silu'(gate), dup += dout * silu(gate). */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);

/* demb[tokens[n]] (V,C) += dout[n] (N,C). */
void encoder_backward(float *demb, const float *dout, const int *tokens, int N, int C);

#endif /* MPQ_EXEC_INTERNAL_H */
