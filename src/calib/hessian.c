/* hessian.c - Hessian information of the calibration loss: Hv by central differences of the
 * analytic gradient, Hutchinson per-layer traces (mpq_hessian_trace_run: the resumable
 * estimator of hutchinson.c run to the end, plus the loss), empirical Fisher traces, power
 * iteration (PyHessian, Yao et al. 2020) per layer and whole-model with deflation, stochastic
 * Lanczos quadrature (Ubaru et al. 2017; PyHessian's density) with LAPACKE_dstev, and the
 * HAWQ-V2 sensitivity Omega = Tr(H_l)/n_l * ||Q(W_l) - W_l||^2. See include/mpq/mpq_hessian.h. */
#include "mpq/mpq_hessian.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib/hessian_internal.h"
#include "mpq/mpq_rng.h"

/* ---- small vector helpers (double accumulation) ---- */

double mpq_hessian_dot_(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double dot(const float *a, const float *b, size_t n) { return mpq_hessian_dot_(a, b, n); }

static double norm2(const float *a, size_t n) { return sqrt(dot(a, a, n)); }

static void scal(float *a, double s, size_t n) {
    for (size_t i = 0; i < n; i++) a[i] = (float)(a[i] * s);
}

/* a -= s * b */
static void axpy_neg(float *a, double s, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) a[i] = (float)(a[i] - s * b[i]);
}

/* ---- object ---- */

mpq_hessian_opts mpq_hessian_opts_default(void) {
    mpq_hessian_opts o = {8, 1e-2};
    return o;
}

mpq_hessian_trace_opts mpq_hessian_trace_opts_default(void) {
    mpq_hessian_trace_opts o = {0, 10, 200, 1e-3, 0.05};
    return o;
}

mpq_hessian_eig_opts mpq_hessian_eig_opts_default(void) {
    mpq_hessian_eig_opts o = {0, 100, 1e-4};
    return o;
}

void mpq_hessian_free(mpq_hessian *hs) {
    if (!hs) return;
    free(hs->tokens);
    mpq_grad_free(hs->gr);
    mpq_exec_free(hs->ex);
    mpq_weights_free(hs->wp);
    mpq_weights_free(hs->wide);
    mpq_weights_free(hs->gp);
    mpq_weights_free(hs->gm);
    free(hs);
}

mpq_status mpq_hessian_create(const mpq_model *model, const mpq_weights *w, const int *tokens, int n_seqs, int T,
                              const mpq_hessian_opts *opts, mpq_hessian **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_hessian *hs = NULL;
    if (!model || !tokens || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    *out = NULL;
    const mpq_model_config *c = mpq_model_get_config(model);
    mpq_hessian_opts o = opts ? *opts : mpq_hessian_opts_default();
    if (!w) w = mpq_model_get_weights(model);
    if (n_seqs < 1 || T < 1 || T > c->seq_len || o.batch < 1 || !(o.fd_step > 0.0) || !(o.fd_step < 1.0))
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "hessian: %d sequences x %d tokens (T 1..%d), batch %d (>= 1), fd_step %g (in (0,1))",
                           n_seqs, T, c->seq_len, o.batch, o.fd_step);
    if (w->n_floats != mpq_model_get_weights(model)->n_floats || w->n_layers != c->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: weights (%zu floats) do not match model %s (%zu floats)",
                           w->n_floats, mpq_model_path(model), mpq_model_get_weights(model)->n_floats);
    size_t ntok;
    if (!mpq_size_mul((size_t)n_seqs, (size_t)T + 1, &ntok))
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: %d x %d tokens overflow", n_seqs, T);
    for (size_t i = 0; i < ntok; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: token %d at sequence %zu position %zu outside vocab 0..%d",
                               tokens[i], i / ((size_t)T + 1), i % ((size_t)T + 1), c->vocab_size - 1);
    hs = mpq_calloc(1, sizeof *hs);
    if (!hs) return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
    hs->model = model;
    hs->w = w;
    if (w->dtype != MPQ_WEIGHTS_F32) { /* the backward reads float32: widen once (the same numbers) */
        if ((st = mpq_weights_clone(model, &hs->wide, err)) != MPQ_OK) goto done;
        hs->w = w = hs->wide;
    }
    hs->opts = o;
    hs->n_seqs = n_seqs;
    hs->T = T;
    hs->n = w->n_floats;
    hs->tokens = mpq_calloc(ntok, sizeof(int));
    if (!hs->tokens) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory for %zu tokens", ntok);
        goto done;
    }
    memcpy(hs->tokens, tokens, ntok * sizeof(int));
    int B = o.batch < n_seqs ? o.batch : n_seqs;
    if ((st = mpq_exec_create(model, B, T, &hs->ex, err)) != MPQ_OK) goto done;
    if ((st = mpq_grad_create(hs->ex, &hs->gr, err)) != MPQ_OK) goto done;
    if ((st = mpq_weights_clone(model, &hs->wp, err)) != MPQ_OK) goto done;
    if ((st = mpq_grad_weights_zeros(model, &hs->gp, err)) != MPQ_OK) goto done;
    if ((st = mpq_grad_weights_zeros(model, &hs->gm, err)) != MPQ_OK) goto done;
    hs->w_rms = norm2(w->data, hs->n) / sqrt((double)hs->n);
    *out = hs;
    hs = NULL;
done:
    mpq_hessian_free(hs);
    return st;
}

size_t mpq_hessian_n_params(const mpq_hessian *hs) { return hs ? hs->n : 0; }

size_t mpq_hessian_layer_offset(const mpq_hessian *hs, int i) {
    const mpq_layer_info *li = mpq_model_linear(hs->model, i);
    return (size_t)(mpq_weights_linear(hs->w, li) - hs->w->data);
}

/* grads = full-data gradient at weights w (batches weighted by their share of sequences). */
static mpq_status full_grad(mpq_hessian *hs, const mpq_weights *w, mpq_weights *grads, double *loss, mpq_err *err) {
    mpq_grad_weights_clear(grads);
    double tot = 0.0;
    int B = hs->opts.batch;
    for (int s0 = 0; s0 < hs->n_seqs; s0 += B) {
        int nb = hs->n_seqs - s0 < B ? hs->n_seqs - s0 : B;
        double l = 0.0;
        mpq_status st = mpq_grad_compute(hs->gr, w, hs->tokens + (size_t)s0 * (hs->T + 1), nb, hs->T,
                                         (float)nb / (float)hs->n_seqs, grads, &l, err);
        if (st != MPQ_OK) return st;
        tot += l * nb;
    }
    if (loss) *loss = tot / hs->n_seqs;
    return MPQ_OK;
}

mpq_status mpq_hessian_gradient(mpq_hessian *hs, float *g, double *loss, mpq_err *err) {
    if (!hs || !g) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    mpq_status st = full_grad(hs, hs->w, hs->gp, loss, err);
    if (st == MPQ_OK) memcpy(g, hs->gp->data, hs->n * sizeof(float));
    return st;
}

mpq_status mpq_hessian_hvp(mpq_hessian *hs, const float *v, float *hv, mpq_err *err) {
    if (!hs || !v || !hv) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    const size_t n = hs->n;
    const double vn = norm2(v, n);
    if (!(vn > 0.0) || !isfinite(vn))
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: Hv of a zero or non-finite vector (||v|| = %g)", vn);
    /* the perturbation h v has norm fd_step * rms(w) whatever v (Hv is linear in v) */
    const double h = hs->opts.fd_step * (hs->w_rms > 0 ? hs->w_rms : 1.0) / vn;
    const float *w0 = hs->w->data;
    float *wp = hs->wp->data;
    for (size_t i = 0; i < n; i++) wp[i] = (float)(w0[i] + h * v[i]);
    mpq_status st = full_grad(hs, hs->wp, hs->gp, NULL, err);
    if (st != MPQ_OK) return st;
    for (size_t i = 0; i < n; i++) wp[i] = (float)(w0[i] - h * v[i]);
    st = full_grad(hs, hs->wp, hs->gm, NULL, err);
    if (st != MPQ_OK) return st;
    /* divide by the steps actually taken (float rounding of w +- hv) would be per coordinate;
     * h is used: the rounding of w + hv is ~eps32 |w| << h |v| */
    const double inv = 1.0 / (2.0 * h);
    for (size_t i = 0; i < n; i++) hv[i] = (float)(((double)hs->gp->data[i] - hs->gm->data[i]) * inv);
    return MPQ_OK;
}

/* ---- Hutchinson ---- */

void mpq_hessian_trace_free(mpq_hessian_trace *tr) {
    if (!tr) return;
    free(tr->layers);
    free(tr);
}

mpq_status mpq_hessian_trace_run(mpq_hessian *hs, const mpq_hessian_trace_opts *opts, mpq_hessian_trace **out,
                                 mpq_err *err) {
    mpq_hessian_hutch *h = NULL;
    mpq_hessian_trace *tr = NULL;
    double loss = 0.0;
    if (!hs || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    *out = NULL;
    mpq_status st = mpq_hessian_hutch_begin(hs, opts, &h, err);
    if (st == MPQ_OK) st = full_grad(hs, hs->w, hs->gp, &loss, err);
    while (st == MPQ_OK && !mpq_hessian_hutch_done(h)) st = mpq_hessian_hutch_step(h, INT32_MAX, err);
    if (st == MPQ_OK) st = mpq_hessian_hutch_finish(h, &tr, err);
    if (st == MPQ_OK) {
        tr->loss = loss;
        *out = tr;
    }
    mpq_hessian_hutch_free(h);
    return st;
}

/* ---- Fisher ---- */

mpq_status mpq_hessian_fisher(mpq_hessian *hs, double *fisher, mpq_err *err) {
    if (!hs || !fisher) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    const int nl = mpq_model_n_linear(hs->model);
    for (int i = 0; i < nl; i++) fisher[i] = 0.0;
    for (int s = 0; s < hs->n_seqs; s++) {
        mpq_grad_weights_clear(hs->gp);
        mpq_status st = mpq_grad_compute(hs->gr, hs->w, hs->tokens + (size_t)s * (hs->T + 1), 1, hs->T, 1.0f, hs->gp,
                                         NULL, err);
        if (st != MPQ_OK) return st;
        for (int i = 0; i < nl; i++) {
            size_t off = mpq_hessian_layer_offset(hs, i);
            const float *g = hs->gp->data + off;
            fisher[i] += dot(g, g, (size_t)mpq_model_linear(hs->model, i)->n_params);
        }
    }
    for (int i = 0; i < nl; i++) fisher[i] /= hs->n_seqs;
    return MPQ_OK;
}

/* ---- power iteration ---- */

/* Power iteration on vectors supported on [off, off+len), deflated against the n_defl
 * orthonormal vectors defl (each n floats). v, hv: work vectors of n floats. */
static mpq_status power_iter(mpq_hessian *hs, size_t off, size_t len, const float *defl, int n_defl,
                             const mpq_hessian_eig_opts *o, float *v, float *hv, double *lambda, int *iters,
                             mpq_err *err) {
    const size_t n = hs->n;
    mpq_rng r;
    mpq_rng_seed(&r, o->seed);
    memset(v, 0, n * sizeof(float));
    mpq_rng_rademacher(&r, v + off, len);
    double lam = 0.0;
    int it;
    for (it = 1; it <= o->max_iter; it++) {
        for (int d = 0; d < n_defl; d++) axpy_neg(v, dot(v, defl + (size_t)d * n, n), defl + (size_t)d * n, n);
        double nv = norm2(v, n);
        if (!(nv > 0)) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: power iteration: start vector vanished");
        scal(v, 1.0 / nv, n);
        mpq_status st = mpq_hessian_hvp(hs, v, hv, err);
        if (st != MPQ_OK) return st;
        if (off != 0 || len != n) { /* restrict to the block: H_ll v_l */
            memset(hv, 0, off * sizeof(float));
            memset(hv + off + len, 0, (n - off - len) * sizeof(float));
        }
        double nl = dot(v, hv, n);
        bool stop = it > 1 && fabs(nl - lam) / (fabs(lam) + 1e-6) < o->tol;
        lam = nl;
        memcpy(v, hv, n * sizeof(float));
        if (stop) break;
    }
    *lambda = lam;
    if (iters) *iters = it > o->max_iter ? o->max_iter : it;
    /* v holds H u (unnormalised) for the last u; normalise as the eigenvector estimate */
    for (int d = 0; d < n_defl; d++) axpy_neg(v, dot(v, defl + (size_t)d * n, n), defl + (size_t)d * n, n);
    double nv = norm2(v, n);
    if (nv > 0) scal(v, 1.0 / nv, n);
    return MPQ_OK;
}

mpq_status mpq_hessian_top_eig_layer(mpq_hessian *hs, int i, const mpq_hessian_eig_opts *opts, double *lambda,
                                     int *iters, mpq_err *err) {
    if (!hs || !lambda) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    if (i < 0 || i >= mpq_model_n_linear(hs->model))
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: linear layer %d outside 0..%d", i,
                           mpq_model_n_linear(hs->model) - 1);
    mpq_hessian_eig_opts o = opts ? *opts : mpq_hessian_eig_opts_default();
    float *v = mpq_calloc(hs->n, sizeof(float)), *hv = mpq_calloc(hs->n, sizeof(float));
    mpq_status st;
    if (!v || !hv)
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
    else
        st = power_iter(hs, mpq_hessian_layer_offset(hs, i), (size_t)mpq_model_linear(hs->model, i)->n_params, NULL,
                        0, &o, v, hv, lambda, iters, err);
    free(v);
    free(hv);
    return st;
}

mpq_status mpq_hessian_top_eigs(mpq_hessian *hs, int k, const mpq_hessian_eig_opts *opts, double *lambdas,
                                float *vecs, mpq_err *err) {
    if (!hs || !lambdas || k < 1) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: top_eigs: NULL or k %d < 1", k);
    mpq_hessian_eig_opts o = opts ? *opts : mpq_hessian_eig_opts_default();
    const size_t n = hs->n;
    mpq_status st = MPQ_OK;
    size_t nk;
    float *U = NULL, *v = NULL, *hv = NULL;
    if (!mpq_size_mul((size_t)k, n, &nk)) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: top_eigs: k %d too large", k);
    U = mpq_calloc(nk, sizeof(float));
    v = mpq_calloc(n, sizeof(float));
    hv = mpq_calloc(n, sizeof(float));
    if (!U || !v || !hv) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: top_eigs: out of memory for %d x %zu floats", k, n);
        goto done;
    }
    for (int j = 0; j < k; j++) {
        mpq_hessian_eig_opts oj = o;
        oj.seed = o.seed + (uint64_t)j;
        if ((st = power_iter(hs, 0, n, U, j, &oj, v, hv, &lambdas[j], NULL, err)) != MPQ_OK) goto done;
        memcpy(U + (size_t)j * n, v, n * sizeof(float));
    }
    if (vecs) memcpy(vecs, U, nk * sizeof(float));
done:
    free(U);
    free(v);
    free(hv);
    return st;
}

/* ---- stochastic Lanczos quadrature ---- */

mpq_status mpq_hessian_slq(mpq_hessian *hs, int m, int n_v, uint64_t seed, double *nodes, double *weights,
                           mpq_err *err) {
    if (!hs || !nodes || !weights || m < 1 || n_v < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: slq: NULL or m %d / n_v %d < 1", m, n_v);
    const size_t n = hs->n;
    if ((size_t)m > n) m = (int)n; /* cannot have more than n orthogonal vectors */
    mpq_status st = MPQ_OK;
    size_t nq;
    float *Q = NULL, *w = NULL;
    double *al = NULL, *be = NULL, *z = NULL;
    if (!mpq_size_mul((size_t)m + 1, n, &nq)) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: slq: m %d too large", m);
    Q = mpq_calloc(nq, sizeof(float));
    w = mpq_calloc(n, sizeof(float));
    al = mpq_calloc((size_t)m, sizeof(double));
    be = mpq_calloc((size_t)m, sizeof(double));
    z = mpq_calloc((size_t)m * m, sizeof(double));
    if (!Q || !w || !al || !be || !z) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: slq: out of memory for %d Lanczos vectors of %zu", m + 1, n);
        goto done;
    }
    mpq_rng r;
    mpq_rng_seed(&r, seed);
    for (int p = 0; p < n_v; p++) {
        double *nd = nodes + (size_t)p * m, *wt = weights + (size_t)p * m;
        mpq_rng_rademacher(&r, Q, n);
        scal(Q, 1.0 / sqrt((double)n), n);
        int steps = 0;
        for (int j = 0; j < m; j++) {
            float *q = Q + (size_t)j * n;
            if ((st = mpq_hessian_hvp(hs, q, w, err)) != MPQ_OK) goto done;
            al[j] = dot(q, w, n);
            steps = j + 1;
            /* full reorthogonalisation against q_0..q_j (twice: classical Gram-Schmidt x2) */
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i <= j; i++) axpy_neg(w, dot(w, Q + (size_t)i * n, n), Q + (size_t)i * n, n);
            if (j + 1 == m) break;
            double b = norm2(w, n);
            be[j] = b;
            if (!(b > 1e-8 * (fabs(al[j]) + 1e-30))) break; /* invariant subspace found */
            memcpy(Q + (size_t)(j + 1) * n, w, n * sizeof(float));
            scal(Q + (size_t)(j + 1) * n, 1.0 / b, n);
        }
        for (int i = 0; i < steps; i++) nd[i] = al[i];
        lapack_int info = LAPACKE_dstev(LAPACK_COL_MAJOR, 'V', steps, nd, be, z, steps);
        if (info != 0) {
            st = mpq_err_set(err, MPQ_ERR_SOLVER, "hessian: slq: LAPACKE_dstev failed (info %d) on probe %d",
                             (int)info, p);
            goto done;
        }
        for (int i = 0; i < steps; i++) wt[i] = z[(size_t)i * steps] * z[(size_t)i * steps] / n_v;
        for (int i = steps; i < m; i++) {
            nd[i] = nd[steps - 1];
            wt[i] = 0.0;
        }
    }
done:
    free(Q);
    free(w);
    free(al);
    free(be);
    free(z);
    return st;
}

/* ---- Omega ---- */

mpq_status mpq_hessian_omega(const mpq_hessian_trace *tr, int i, double sq_err, double *omega, double *omega_se,
                             mpq_err *err) {
    if (!tr || !omega) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: omega: NULL argument");
    if (i < 0 || i >= tr->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: omega: layer %d outside 0..%d", i, tr->n_layers - 1);
    const mpq_hessian_layer_trace *L = &tr->layers[i];
    *omega = L->trace_per_param * sq_err;
    if (omega_se) *omega_se = L->se / (double)L->n_params * sq_err;
    return MPQ_OK;
}

mpq_status mpq_hessian_omega_candidate(const mpq_model *model, const mpq_weights *w, const mpq_hessian_trace *tr,
                                       int i, const mpq_candidate *c, double *omega, double *omega_se, mpq_err *err) {
    if (!model || !tr || !c || !omega) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: omega: NULL argument");
    if (i < 0 || i >= mpq_model_n_linear(model) || i >= tr->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: omega: layer %d outside 0..%d", i, tr->n_layers - 1);
    if (!w) w = mpq_model_get_weights(model);
    const mpq_layer_info *li = mpq_model_linear(model, i);
    float *q = mpq_calloc((size_t)li->n_params, sizeof(float));
    float *w16 = w->dtype != MPQ_WEIGHTS_F32 ? mpq_calloc((size_t)li->n_params, sizeof(float)) : NULL;
    if (!q || (w->dtype != MPQ_WEIGHTS_F32 && !w16)) {
        free(q);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: omega: %s: out of memory", li->name);
    }
    const float *W = mpq_weights_linear_f32(w, li, w16);
    memcpy(q, W, (size_t)li->n_params * sizeof(float));
    mpq_quantize_matrix(c, q, li->rows, li->cols);
    double se = 0.0;
    for (int64_t k = 0; k < li->n_params; k++) {
        double d = (double)q[k] - W[k];
        se += d * d;
    }
    free(q);
    free(w16);
    return mpq_hessian_omega(tr, i, se, omega, omega_se, err);
}
