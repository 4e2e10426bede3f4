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
    uint64_t seed;   /* Rademacher probes from mpq_rng seeded by seed (mpq_rng.h; default 0) */
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
    int converged_at;       /* first probe (k >= min_probes) at which the layer met the rule; 0 = never */
} mpq_hessian_layer_trace;

typedef struct mpq_hessian_trace {
    int n_layers;                   /* = mpq_model_n_linear */
    mpq_hessian_layer_trace *layers;/* n_layers, owned */
    int n_probes;                   /* probes run */
    bool converged;                 /* every layer converged */
    uint64_t seed;
    double tol, rse_tol, fd_step;
    int n_seqs, T;                  /* calibration data used */
    double loss;                    /* mean loss at w (NAN from mpq_hessian_hutch_finish) */
} mpq_hessian_trace;

/* Runs probes until every layer has converged or max_probes: mpq_hessian_hutch_begin, _step
 * until done, _finish, plus the loss at w. opts NULL = defaults. On success *out is owned by
 * the caller (mpq_hessian_trace_free). Same seed => identical. MPQ_ERR_INVALID for bad opts. */
mpq_status mpq_hessian_trace_run(mpq_hessian *hs, const mpq_hessian_trace_opts *opts, mpq_hessian_trace **out,
                                 mpq_err *err);
void mpq_hessian_trace_free(mpq_hessian_trace *tr); /* accepts NULL */

/* ---- the resumable Hutchinson estimator ----
 *
 * The loop of mpq_hessian_trace_run, cut where the caller likes: probe k draws a Rademacher v
 * over ALL parameters from the run's mpq_rng, computes Hv, and adds x_l = v_l . (Hv)_l (double
 * accumulation in index order) to layer l's sum and sum of squares; after probe k every
 * layer's mean, rel_change, se and rse are updated, and the run is done when every layer
 * meets the rule (k >= min_probes, rel_change < tol, rse < rse_tol) or k == max_probes.
 * The state (probes done, generator words, per layer sum / sum of squares / previous mean /
 * relative change / converged_at) can be saved after any step and loaded into another process:
 * begin, step(a), save, load, step(b) gives bit-for-bit the numbers of begin, step(a + b).
 *
 *     mpq_hessian_hutch *h = NULL;
 *     mpq_hessian_hutch_begin(hs, &to, &h, &err);
 *     mpq_hessian_hutch_step(h, 10, &err);             // probes 1..10 (fewer if done)
 *     void *blob; size_t n;
 *     mpq_hessian_hutch_save(h, &blob, &n, &err);      // store it; free(blob)
 *     mpq_hessian_hutch_free(h);
 *     ...
 *     mpq_hessian_hutch_load(hs, &to, blob, n, &h, &err);
 *     while (!mpq_hessian_hutch_done(h)) mpq_hessian_hutch_step(h, 10, &err);
 *     mpq_hessian_hutch_finish(h, &tr, &err);
 *
 * Saved state (version 2): UTF-8 JSON, so byte order never matters:
 *   {"format":"mpq.hutchinson","version":2,"seed":"<decimal u64>","n_floats":"<decimal>",
 *    "n_layers":L,"min_probes":a,"max_probes":b,"tol":"<hex float>","rse_tol":"<hex float>",
 *    "fd_step":"<hex float>","n_seqs":s,"T":t,"probes":k,"done":bool,
 *    "rng":["<16 hex digits>" x 4],
 *    "layers":[["<sum>","<sumsq>","<prev mean>","<rel_change>",converged_at] x L]}
 * doubles as C99 hex-float strings ("%a": exact; "inf" allowed for rel_change only).
 * Version 1 is the same object without "format", "version" and the run's settings (seed a JSON
 * number): the hessian stage's artifacts written before version 2; it is read with the
 * settings taken from the caller's opts. */
typedef struct mpq_hessian_hutch mpq_hessian_hutch;

/* A run with no probes yet, on hs (borrowed: must outlive h; its model, weights, data and
 * fd_step define H). opts NULL = defaults. MPQ_ERR_INVALID (opts as mpq_hessian_trace_run),
 * MPQ_ERR_NOMEM. Memory: 5 doubles per layer; step adds two n-float work vectors. */
mpq_status mpq_hessian_hutch_begin(mpq_hessian *hs, const mpq_hessian_trace_opts *opts, mpq_hessian_hutch **out,
                                   mpq_err *err);

/* Runs up to max_new probes; stops early when the run is done (0 probes if already done).
 * On an error the state stays that after the last completed probe (generator included).
 * MPQ_ERR_INVALID (max_new < 0), MPQ_ERR_NOMEM, and mpq_hessian_hvp's errors. */
mpq_status mpq_hessian_hutch_step(mpq_hessian_hutch *h, int max_new, mpq_err *err);

int mpq_hessian_hutch_n_probes(const mpq_hessian_hutch *h); /* probes done */
bool mpq_hessian_hutch_done(const mpq_hessian_hutch *h);    /* converged or max_probes reached */

/* The state as version-2 bytes (above): *blob (NUL-terminated, *size excludes the NUL) is
 * owned by the caller (free()). MPQ_ERR_NOMEM. */
mpq_status mpq_hessian_hutch_save(const mpq_hessian_hutch *h, void **blob, size_t *size, mpq_err *err);

/* A run continued from a saved state, on hs with opts (NULL = defaults), which must be those
 * of the saved run: seed, probes, tol, rse_tol, fd_step, parameter count, layer count and
 * calibration size are compared. MPQ_ERR_FORMAT, with a message naming the field and both
 * values, for a blob that is not valid JSON (e.g. truncated), is of an unknown version, lacks
 * or mistypes a field, holds NaN or out-of-range counts, an all-zero generator, or was made
 * for other settings; MPQ_ERR_NOMEM. */
mpq_status mpq_hessian_hutch_load(mpq_hessian *hs, const mpq_hessian_trace_opts *opts, const void *blob,
                                  size_t size, mpq_hessian_hutch **out, mpq_err *err);

/* The per-layer estimates after the probes done so far (the run need not be done; loss is
 * NAN). *out owned by the caller (mpq_hessian_trace_free). MPQ_ERR_INVALID before the first
 * probe, MPQ_ERR_NOMEM. */
mpq_status mpq_hessian_hutch_finish(const mpq_hessian_hutch *h, mpq_hessian_trace **out, mpq_err *err);
void mpq_hessian_hutch_free(mpq_hessian_hutch *h); /* accepts NULL */

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
