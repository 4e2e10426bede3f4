/*
 * hessian_internal.h - private parts of the Hessian module shared by hessian.c (Hv, traces,
 * eigenvalues, SLQ) and hutchinson.c (the resumable Hutchinson estimator). Not a public header.
 */
#ifndef MPQ_HESSIAN_INTERNAL_H
#define MPQ_HESSIAN_INTERNAL_H

#include "mpq/mpq_exec.h"
#include "mpq/mpq_grad.h"
#include "mpq/mpq_hessian.h"

struct mpq_hessian {
    const mpq_model *model;
    const mpq_weights *w;  /* point of expansion (borrowed) */
    mpq_hessian_opts opts;
    int n_seqs, T;
    int *tokens;           /* (n_seqs, T+1) */
    mpq_exec *ex;
    mpq_grad *gr;
    mpq_weights *wp;       /* w + h v */
    mpq_weights *wide;     /* float32 copy of a model held in 16 bits (w points at it), else NULL */
    mpq_weights *gp, *gm;  /* gradients at w + hv, w - hv */
    size_t n;
    double w_rms;
};

/* sum_i a[i] * b[i] in double, in index order (every trace and eigenvalue uses this order). */
double mpq_hessian_dot_(const float *a, const float *b, size_t n);

#endif /* MPQ_HESSIAN_INTERNAL_H */
