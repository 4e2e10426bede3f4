/*
 * mpq_hessian.h - second-order sensitivity of a LLaMA-family model on calibration data:
 * Hessian-vector products of the mean next-token cross-entropy, per-layer Hessian traces by
 * Hutchinson's estimator (HAWQ-V2), empirical Fisher traces, top eigenvalues by power
 * iteration (per layer, and whole-model top-k with deflation), the spectral density by
 * stochastic Lanczos quadrature (PyHessian), and the HAWQ-V2 sensitivity
 * Omega_l(c) = Tr(H_l)/n_l * ||Q_c(W_l) - W_l||^2.
 *
 * References: Dong et al., "HAWQ-V2: Hessian Aware trace-Weighted Quantization" (NeurIPS 2020);
 * Yao et al., "PyHessian: Neural Networks Through the Lens of the Hessian" (2020);
 * Hutchinson (1990); Ubaru, Chen, Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
 * quadrature" (2017).
 *
 * The loss L(w) is the mean over every calibration target (n_seqs x T) of -log p; H is its
 * Hessian over ALL parameters (the flat weights vector of mpq_weights, n = w->n_floats). The
 * data are processed in batches of opts.batch sequences, each batch weighted by its share of
 * the sequences, so results do not depend on the batch size (up to rounding).
 *
 * Hv method: central differences of the analytic (backward-pass) gradient,
 *     Hv ~ (g(w + h v) - g(w - h v)) / (2h),   h = fd_step * rms(w) / ||v||_2,
 * i.e. the perturbation h v always has norm fd_step times the RMS weight (Hv is linear in v,
 * so the relative error does not depend on v's scale or density). Error relative to |Hv|:
 * truncation ~ (h||v||)^2 |D^3 L| / (6 |H|) against rounding ~ eps32 |g| / (h ||v|| |H|) of the
 * float32 gradients; the default fd_step = 1e-2 balances the two: measured relative error of
 * Hessian columns 1e-4 (vs 7e-3 at 1e-1 and 4e-3 at 1e-4) against second differences of a
 * double-precision reference loss (tests/unit/test_hessian.c). One Hv costs two
 * forward+backward passes over the calibration data.
 *
 *     mpq_hessian *hs = NULL;
 *     mpq_hessian_opts ho = mpq_hessian_opts_default();          // batch 8, fd_step 1e-2
 *     mpq_hessian_create(model, NULL, tokens, 16, 128, &ho, &hs, &err);
 *     mpq_hessian_trace_opts to = mpq_hessian_trace_opts_default();  // seed 0, tol 1e-3, 10..200 probes
 *     mpq_hessian_trace *tr = NULL;
 *     mpq_hessian_trace_run(hs, &to, &tr, &err);
 *     for (int i = 0; i < tr->n_layers; i++)
 *         printf("%s %.4g +- %.2g (%d probes%s)\n", mpq_model_linear(model, i)->name,
 *                tr->layers[i].trace, tr->layers[i].se, tr->layers[i].n_probes,
 *                tr->layers[i].converged ? "" : ", not converged");
 *     mpq_hessian_trace_free(tr);
 *     mpq_hessian_free(hs);
 *
 * An mpq_hessian is not thread-safe (one per thread); it only reads the model.
 */
#ifndef MPQ_HESSIAN_H
#define MPQ_HESSIAN_H

#include "mpq/mpq.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mpq_hessian mpq_hessian;

typedef struct mpq_hessian_opts {
    int batch;      /* sequences per forward/backward (default 8) */
    double fd_step; /* relative step of the gradient differences (default 1e-2; see above) */
} mpq_hessian_opts;

mpq_hessian_opts mpq_hessian_opts_default(void);

/* Binds a model and calibration tokens (n_seqs, T+1) (copied; inputs 0..T-1, targets 1..T).
 * w: the weights at which H is taken (borrowed, must outlive hs; NULL = the model's own).
 * opts NULL = defaults. MPQ_ERR_INVALID (sizes, token ids: message names the position),
 * MPQ_ERR_NOMEM. Memory: executor activations for batch x T plus 4 weight-sized blocks. */
mpq_status mpq_hessian_create(const mpq_model *model, const mpq_weights *w, const int *tokens, int n_seqs, int T,
                              const mpq_hessian_opts *opts, mpq_hessian **out, mpq_err *err);
void mpq_hessian_free(mpq_hessian *hs); /* accepts NULL */

/* n: length of every flat vector below (= weights n_floats). */
size_t mpq_hessian_n_params(const mpq_hessian *hs);
/* Offset and length of linear layer i (mpq_model_linear's table) in the flat vector. */
size_t mpq_hessian_layer_offset(const mpq_hessian *hs, int linear_index);

/* Full-data gradient g (n floats, caller-owned) and mean loss (may be NULL). */
mpq_status mpq_hessian_gradient(mpq_hessian *hs, float *g, double *loss, mpq_err *err);

/* hv (n floats) = H v over the full calibration data (v, hv caller-owned, must not alias).
 * MPQ_ERR_INVALID when v is zero. */
mpq_status mpq_hessian_hvp(mpq_hessian *hs, const float *v, float *hv, mpq_err *err);

/* ---- Hutchinson per-layer traces (HAWQ-V2) ---- */

typedef struct mpq_hessian_trace_opts {
    uint64_t seed;   /* Rademacher probes from xoshiro256** seeded by splitmix64(seed) (default 0) */
    int min_probes;  /* default 10 */
    int max_probes;  /* default 200 */
    double tol;      /* stop when every layer's |mean_k - mean_{k-1}| / (|mean_{k-1}| + 1e-6) < tol */
    double rse_tol;  /* ... AND every layer's se / |mean| < rse_tol (default 0.05) */
} mpq_hessian_trace_opts;

mpq_hessian_trace_opts mpq_hessian_trace_opts_default(void);

typedef struct mpq_hessian_layer_trace {
    double trace;           /* estimate of Tr(H_ll) (mean of v_l . (Hv)_l over probes) */
    double trace_per_param; /* trace / n_params */
    double se;              /* standard error of trace (sample std / sqrt(probes)) */
    double rse;             /* se / |trace| (inf when trace == 0) */
    double rel_change;      /* last |mean_k - mean_{k-1}| / (|mean_{k-1}| + 1e-6) */
    int n_probes;           /* probes used */
    bool converged;         /* rel_change < tol and rse < rse_tol at the end */
    int64_t n_params;       /* rows * cols */
} mpq_hessian_layer_trace;

typedef struct mpq_hessian_trace {
    int n_layers;                   /* = mpq_model_n_linear */
    mpq_hessian_layer_trace *layers;/* n_layers, owned */
    int n_probes;                   /* probes run */
    bool converged;                 /* every layer converged */
    uint64_t seed;
    double tol, rse_tol, fd_step;
    int n_seqs, T;                  /* calibration data used */
    double loss;                    /* mean loss at w */
} mpq_hessian_trace;

/* Runs probes until every layer has converged or max_probes. opts NULL = defaults.
 * On success *out is owned by the caller (mpq_hessian_trace_free). Same seed => identical. */
mpq_status mpq_hessian_trace_run(mpq_hessian *hs, const mpq_hessian_trace_opts *opts, mpq_hessian_trace **out,
                                 mpq_err *err);
void mpq_hessian_trace_free(mpq_hessian_trace *tr); /* accepts NULL */

/* Empirical Fisher trace per linear layer: (1/n_seqs) sum over sequences of ||g_s,l||^2, g_s the
 * gradient of sequence s's mean loss. fisher: n_linear doubles (caller-owned). */
mpq_status mpq_hessian_fisher(mpq_hessian *hs, double *fisher, mpq_err *err);

/* ---- eigenvalues (PyHessian) ---- */

typedef struct mpq_hessian_eig_opts {
    uint64_t seed; /* start vector (default 0) */
    int max_iter;  /* default 100 */
    double tol;    /* stop when |lambda_k - lambda_{k-1}| / (|lambda_{k-1}| + 1e-6) < tol (default 1e-4) */
} mpq_hessian_eig_opts;

mpq_hessian_eig_opts mpq_hessian_eig_opts_default(void);

/* Dominant eigenvalue (largest |lambda|) of layer i's diagonal block H_ll by power iteration on
 * vectors supported on that layer. *iters (may be NULL) receives the iterations used. */
mpq_status mpq_hessian_top_eig_layer(mpq_hessian *hs, int linear_index, const mpq_hessian_eig_opts *opts,
                                     double *lambda, int *iters, mpq_err *err);

/* The k dominant eigenvalues of the whole-model H by power iteration with deflation against
 * the earlier eigenvectors. lambdas: k doubles; vecs: k*n floats or NULL. */
mpq_status mpq_hessian_top_eigs(mpq_hessian *hs, int k, const mpq_hessian_eig_opts *opts, double *lambdas,
                                float *vecs, mpq_err *err);

/* Spectral density by stochastic Lanczos quadrature: n_v Rademacher start vectors (seed), m
 * Lanczos steps each with full reorthogonalisation, tridiagonal eigenproblem by LAPACKE_dstev.
 * nodes, weights: m*n_v doubles each (caller-owned): probe p's Ritz values at [p*m, p*m+m) with
 * weights (first eigenvector components)^2 / n_v, so all weights sum to 1. If a Lanczos run
 * breaks down after j < m steps, its remaining entries get weight 0 (node = its last Ritz value).
 * Memory: m * n floats of Lanczos vectors. */
mpq_status mpq_hessian_slq(mpq_hessian *hs, int m, int n_v, uint64_t seed, double *nodes, double *weights,
                           mpq_err *err);

/* ---- HAWQ-V2 sensitivity ---- */

/* omega = trace_per_param(layer) * sq_err, omega_se = se / n_params * sq_err, where sq_err =
 * ||Q(W_l) - W_l||_F^2. MPQ_ERR_INVALID for a bad index / NULL. */
mpq_status mpq_hessian_omega(const mpq_hessian_trace *tr, int linear_index, double sq_err, double *omega,
                             double *omega_se, mpq_err *err);

/* Same with sq_err computed by fake-quantizing a copy of layer i of w (NULL = the model's
 * weights) with candidate c. */
mpq_status mpq_hessian_omega_candidate(const mpq_model *model, const mpq_weights *w, const mpq_hessian_trace *tr,
                                       int linear_index, const mpq_candidate *c, double *omega, double *omega_se,
                                       mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_HESSIAN_H */
