/*
 * bootstrap.c - bootstrap stability of a stored solution (mpq_bootstrap.h): per-window
 * single-layer KL (as stored by layer_sensitivity, artifacts kl_windows/<layer>/<candidate>;
 * for jobs stored before that, measured once here and stored as window_kl/...), paired
 * resampling of the calibration
 * windows, re-solves and Pareto knees per resample (Efron & Tibshirani 1993, ch. 6).
 */
#include "mpq/mpq_bootstrap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_rng.h"
#include "mpq/mpq_solvers.h"

#include "job_calib.h"

mpq_bootstrap_opts mpq_bootstrap_opts_default(void) {
    mpq_bootstrap_opts o;
    memset(&o, 0, sizeof o);
    o.smooth = true;
    o.resamples = 200;
    o.seed = 1;
    return o;
}

void mpq_bootstrap_result_free(mpq_bootstrap_result *r) {
    if (!r) return;
    free(r->stability);
    free(r->layer);
    free(r->candidate);
    free(r);
}

typedef struct boot_ctx {
    mpq_job *job;
    mpq_db *db;
    const mpq_bootstrap_opts *o;
    mpq_jobsolve_problem *p;
    int L, O, n_items, n;       /* n = windows */
    float *w;                   /* [L * O * n] per-window KL (NaN rows: option not allowed / no kl) */
    /* measurement state */
    const mpq_model *model;
    mpq_exec *ex;
    int *tokens, T, B;
    float *fp_lp;               /* [n * T * vocab] FP log-softmax */
    float *xin;                 /* [n_layers_model * n * T * dim] residual entering each block */
    mpq_weights *wS;
} boot_ctx;

static void ctx_free(boot_ctx *c) {
    mpq_weights_free(c->wS);
    free(c->xin);
    free(c->fp_lp);
    free(c->tokens);
    mpq_exec_free(c->ex);
    free(c->w);
    mpq_jobsolve_problem_free(c->p);
}

static size_t wi(const boot_ctx *c, int l, int o) { return ((size_t)l * (size_t)c->O + (size_t)o) * (size_t)c->n; }

/* Log-softmax (double) of one position's logits into out. */
static void log_softmax(const float *z, int V, double *out) {
    double m = -INFINITY, s = 0;
    for (int v = 0; v < V; v++) m = fmax(m, (double)z[v]);
    for (int v = 0; v < V; v++) s += exp((double)z[v] - m);
    double lse = m + log(s);
    for (int v = 0; v < V; v++) out[v] = (double)z[v] - lse;
}

/* Model, windows, FP log-probs and block inputs (the FP pass in the spec's batches). */
static mpq_status load_measure(boot_ctx *c, mpq_err *err) {
    if (c->ex) return MPQ_OK;
    int *in = NULL, n_seqs = 0;
    double *lp = NULL;
    mpq_status st = job_calib_windows(c->job, "bootstrap", &c->model, &c->tokens, &n_seqs, &c->T, &c->B, NULL, err);
    if (st != MPQ_OK) return st;
    const mpq_model_config *mc = mpq_model_get_config(c->model);
    if (n_seqs != c->n) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: %d calibration windows drawn, the stored kl has n = %d",
                         n_seqs, c->n);
        goto done;
    }
    const int V = mc->vocab_size, D = mc->dim, NL = mc->n_layers, T = c->T;
    c->fp_lp = mpq_calloc((size_t)c->n * (size_t)T * (size_t)V, sizeof *c->fp_lp);
    c->xin = mpq_calloc((size_t)NL * (size_t)c->n * (size_t)T * (size_t)D, sizeof *c->xin);
    in = mpq_calloc((size_t)c->B * (size_t)T, sizeof *in);
    lp = mpq_calloc((size_t)V, sizeof *lp);
    if (!c->fp_lp || !c->xin || !in || !lp) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "bootstrap: out of memory for the FP reference");
        goto done;
    }
    if ((st = mpq_exec_create_forward(c->model, c->B, T, &c->ex, err)) != MPQ_OK) goto done;
    for (int s0 = 0; s0 < c->n; s0 += c->B) {
        int Bb = c->n - s0 < c->B ? c->n - s0 : c->B;
        for (int b = 0; b < Bb; b++)
            for (int t = 0; t < T; t++) in[(size_t)b * T + t] = c->tokens[(size_t)(s0 + b) * (T + 1) + t];
        if ((st = mpq_exec_forward(c->ex, mpq_model_get_weights(c->model), NULL, in, Bb, T, err)) != MPQ_OK) goto done;
        for (int k = 0; k < NL; k++)
            memcpy(c->xin + (((size_t)k * c->n + s0) * T) * D, mpq_exec_block_input(c->ex, k),
                   (size_t)Bb * T * D * sizeof(float));
        const float *z = mpq_exec_logits(c->ex);
        for (size_t q = 0; q < (size_t)Bb * T; q++) {
            log_softmax(z + q * V, V, lp);
            float *o = c->fp_lp + ((size_t)s0 * T + q) * V;
            for (int v = 0; v < V; v++) o[v] = (float)lp[v];
        }
    }
    st = mpq_weights_view(c->model, &c->wS, err); /* the measured layer is owned while measured */
done:
    if (st != MPQ_OK) mpq_err_prefix(err, "bootstrap: calibration windows");
    free(lp);
    free(in);
    return st;
}

/* Per-window KL of linear layer `lin` at candidate cand into out[n]. */
static mpq_status measure_windows(boot_ctx *c, int lin, const mpq_candidate *cand, float *out, mpq_err *err) {
    const mpq_model_config *mc = mpq_model_get_config(c->model);
    const int V = mc->vocab_size, D = mc->dim, T = c->T;
    const mpq_layer_info *li = mpq_model_linear(c->model, lin);
    const mpq_weights *W0 = mpq_model_get_weights(c->model);
    float *Q = NULL;
    double *lp = mpq_calloc((size_t)V, sizeof *lp);
    if (!lp) return mpq_err_set(err, MPQ_ERR_NOMEM, "bootstrap: out of memory");
    /* an owned copy of the FP layer (widened if 16-bit), quantized; every other tensor borrowed */
    mpq_status st = mpq_weights_own_linear(c->wS, li, W0, &Q, err);
    if (st == MPQ_OK) mpq_quantize_matrix(cand, Q, li->rows, li->cols);
    for (int s0 = 0; s0 < c->n && st == MPQ_OK; s0 += c->B) {
        int Bb = c->n - s0 < c->B ? c->n - s0 : c->B;
        const float *x = c->xin + (((size_t)li->block * c->n + s0) * T) * D;
        if ((st = mpq_exec_forward_from(c->ex, c->wS, NULL, li->block, x, Bb, T, err)) != MPQ_OK) break;
        const float *z = mpq_exec_logits(c->ex);
        for (int b = 0; b < Bb; b++) {
            double kl = 0;
            for (int t = 0; t < T; t++) {
                size_t q = (size_t)b * T + t;
                log_softmax(z + q * V, V, lp);
                const float *r = c->fp_lp + ((size_t)s0 * T + q) * V;
                double k = 0;
                for (int v = 0; v < V; v++) k += exp((double)r[v]) * ((double)r[v] - lp[v]);
                kl += k;
            }
            out[s0 + b] = (float)(kl / T);
        }
    }
    mpq_weights_drop_linear(c->wS, li, W0); /* the model's own tensor again, also on error */
    free(lp);
    if (st != MPQ_OK) mpq_err_prefix(err, "bootstrap: %s %s", li->name, cand->name);
    return st;
}

static void put_le32(unsigned char *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int k = 0; k < 4; k++) b[k] = (unsigned char)(u >> (8 * k));
}
static double get_le64(const unsigned char *b) {
    uint64_t u = 0;
    for (int k = 0; k < 8; k++) u |= (uint64_t)b[k] << (8 * k);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static float get_le32(const unsigned char *b) {
    uint32_t u = 0;
    for (int k = 0; k < 4; k++) u |= (uint32_t)b[k] << (8 * k);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Loads (or measures and stores) every (layer, allowed candidate)'s per-window values. */
static mpq_status load_windows(boot_ctx *c, int *n_measured, double *check, double *check_abs, mpq_err *err) {
    const int64_t job_id = mpq_job_get_row(c->job)->id;
    const mpq_model *shape = mpq_job_get_shape(c->job);
    unsigned char *buf = mpq_calloc((size_t)c->n, 4);
    mpq_status st = MPQ_OK;
    int64_t total = 0, done = 0;
    if (!buf) return mpq_err_set(err, MPQ_ERR_NOMEM, "bootstrap: out of memory");
    for (int l = 0; l < c->L; l++)
        for (int o = 0; o < c->O; o++) total += isfinite(c->p->layer_loss[(size_t)l * c->O + o]);
    *check = *check_abs = 0;
    for (int l = 0; l < c->L && st == MPQ_OK; l++)
        for (int o = 0; o < c->O && st == MPQ_OK; o++) {
            float *w = c->w + wi(c, l, o);
            double kl = c->p->layer_loss[(size_t)l * c->O + o];
            if (!isfinite(kl)) {
                for (int k = 0; k < c->n; k++) w[k] = NAN;
                continue;
            }
            char name[MPQ_DB_NAME_MAX];
            void *data = NULL;
            size_t nb = 0;
            /* stored by layer_sensitivity itself: float64 per window; used when it holds every
             * window (an adaptive unit may hold fewer: then as for older jobs below) */
            snprintf(name, sizeof name, "kl_windows/%.60s/%.40s", c->p->layers[l].name, c->p->options[o]);
            st = mpq_db_artifact_get(c->db, job_id, name, &data, &nb, err);
            if (st != MPQ_OK && st != MPQ_ERR_NOTFOUND) break;
            bool stored = st == MPQ_OK && nb == (size_t)c->n * 8;
            if (stored)
                for (int k = 0; k < c->n; k++) w[k] = (float)get_le64((const unsigned char *)data + 8 * k);
            else if (st == MPQ_OK && (nb % 8 != 0 || nb > (size_t)c->n * 8))
                st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: artifact %s: %zu bytes, expected at most %d windows x 8",
                                 name, nb, c->n);
            free(data);
            data = NULL;
            if (st != MPQ_OK && st != MPQ_ERR_NOTFOUND) break;
            st = MPQ_OK;
            if (!stored) { /* measured by an earlier bootstrap (float32 per window), else measured now */
                snprintf(name, sizeof name, "window_kl/%.60s/%.40s", c->p->layers[l].name, c->p->options[o]);
                st = mpq_db_artifact_get(c->db, job_id, name, &data, &nb, err);
            }
            if (stored) {
                /* read above */
            } else if (st == MPQ_OK) {
                if (nb != (size_t)c->n * 4) {
                    st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: artifact %s: %zu bytes, expected %d windows x 4",
                                     name, nb, c->n);
                } else {
                    for (int k = 0; k < c->n; k++) w[k] = get_le32((const unsigned char *)data + 4 * k);
                }
                free(data);
            } else if (st == MPQ_ERR_NOTFOUND) {
                if (mpq_job_stop_requested()) {
                    st = mpq_err_set(err, MPQ_ERR_INTERRUPTED, "bootstrap: stopped after %lld/%lld per-window "
                                     "measurements; run the same command again to resume", (long long)done,
                                     (long long)total);
                    break;
                }
                mpq_candidate cand;
                int lin = mpq_model_find_linear(shape, c->p->layers[l].name);
                if (lin < 0) st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: layer %s not in the model", c->p->layers[l].name);
                if (st == MPQ_ERR_NOTFOUND) st = MPQ_OK;
                if (st == MPQ_OK) st = mpq_candidate_parse(c->p->options[o], &cand, err);
                if (st == MPQ_OK && mpq_candidate_is_saq(&cand)) /* would need the job's X^T X */
                    st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                                     "bootstrap: unit %s/%s: measuring a SAQ candidate's windows is not supported",
                                     c->p->layers[l].name, cand.name);
                if (st == MPQ_OK) st = load_measure(c, err);
                if (st == MPQ_OK) st = measure_windows(c, lin, &cand, w, err);
                for (int k = 0; st == MPQ_OK && k < c->n; k++) put_le32(buf + 4 * k, w[k]);
                if (st == MPQ_OK) st = mpq_db_artifact_put(c->db, job_id, name, buf, (size_t)c->n * 4, err);
                if (st == MPQ_OK) (*n_measured)++;
            }
            if (st != MPQ_OK) break;
            double m = 0;
            for (int k = 0; k < c->n; k++) m += w[k];
            m /= c->n;
            if (!isfinite(m)) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: artifact %s holds a non-finite value", name);
                break;
            }
            double rel = fabs(m - kl) / fmax(fabs(kl), 1e-300);
            if (rel > *check) *check = rel;
            if (fabs(m - kl) > *check_abs) *check_abs = fabs(m - kl);
            done++;
            if (c->o->progress) {
                mpq_bootstrap_progress pg = {.done = done, .total = total, .what = "windows"};
                c->o->progress(c->o->progress_user, &pg);
            }
        }
    free(buf);
    return st;
}

/* Sets the group losses of the problem from the per-layer table tab[L*O]. */
static mpq_status set_losses(boot_ctx *c, const double *tab, mpq_err *err) {
    mpq_status st = MPQ_OK;
    for (int g = 0; g < c->n_items && st == MPQ_OK; g++)
        for (int o = 0; o < c->O && st == MPQ_OK; o++) {
            if (!mpq_problem_allowed(c->p->problem, g, o)) continue;
            double v = 0;
            for (int l = 0; l < c->L; l++)
                if (c->p->group_of[l] == g) v += tab[(size_t)l * c->O + o];
            st = mpq_problem_set_loss(c->p->problem, g, o, v, err);
        }
    return st;
}

static mpq_status solve(boot_ctx *c, mpq_solution **s, mpq_err *err) {
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = c->o->smooth;
    int dp_res = -1;
    for (int r = 0; r < c->p->n_resources; r++)
        if (isfinite(mpq_problem_budget(c->p->problem, r))) dp_res = r;
    bool dp = c->p->n_finite_budgets == 1 && dp_res >= 0 && mpq_problem_resource_integral(c->p->problem, dp_res);
    so.dp_resource = dp_res >= 0 ? dp_res : 0;
    return dp ? mpq_solve_dp(c->p->problem, &so, s, err) : mpq_solve_ilp(c->p->problem, &so, s, err);
}

static mpq_status knee_of(boot_ctx *c, int *choice, double *avg_bits, mpq_err *err) {
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = c->o->smooth;
    mpq_frontier *f = NULL;
    mpq_status st = mpq_frontier_exact(c->p->problem, &so, &f, err);
    if (st != MPQ_OK) return st;
    size_t k = mpq_frontier_knee(f);
    if (k == SIZE_MAX) st = mpq_err_set(err, MPQ_ERR_SOLVER, "bootstrap: empty frontier");
    else st = mpq_frontier_assignment(c->p->problem, f, k, choice, err);
    if (st == MPQ_OK && avg_bits) *avg_bits = f->cost[k] / (double)c->p->total_params;
    mpq_frontier_free(f);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[n]. */
static double pct(const double *v, int n, double q) {
    int k = (int)ceil(q / 100.0 * n);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

mpq_status mpq_bootstrap_run(mpq_job *job, const mpq_bootstrap_opts *o, mpq_bootstrap_result **out, mpq_err *err) {
    if (!job || !o || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_bootstrap_run: NULL argument");
    *out = NULL;
    if (o->n_budgets <= 0 || !o->budgets)
        return mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: no budget given (e.g. avg-bits=4.5)");
    if (o->resamples < 1 || o->resamples > MPQ_BOOTSTRAP_MAX_RESAMPLES)
        return mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: resamples %d: expected 1..%d", o->resamples,
                           MPQ_BOOTSTRAP_MAX_RESAMPLES);
    boot_ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    c.db = mpq_job_db(job);
    c.o = o;
    const mpq_db_job *row = mpq_job_get_row(job);
    mpq_bootstrap_result *r = mpq_calloc(1, sizeof *r);
    mpq_db_solution sol;
    mpq_db_assignment *asg = NULL;
    int n_asg = 0;
    int *S = NULL, *knee0 = NULL, *kneer = NULL, *idx = NULL;
    double *tab = NULL, *base = NULL, *losses = NULL, *mean_all = NULL;
    int64_t sid = 0;
    memset(&sol, 0, sizeof sol);
    if (!r) return mpq_err_set(err, MPQ_ERR_NOMEM, "bootstrap: out of memory");
    mpq_status st = MPQ_OK;
    /* the job must have single-layer kl, with its window count */
    char **kc = NULL;
    int n_kc = 0;
    if ((st = mpq_db_metric_candidates(c.db, row->id, "kl", &kc, &n_kc, err)) != MPQ_OK) goto done;
    mpq_db_strings_free(kc, n_kc);
    if (n_kc == 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: job '%s' has no single-layer kl (stage layer_sensitivity); "
                         "add \"layer_sensitivity\" to the spec's metrics", row->name);
        goto done;
    }
    mpq_jobsolve_opts jo = mpq_jobsolve_opts_default();
    jo.metric = "kl";
    jo.ties = o->ties;
    jo.smooth = o->smooth;
    jo.budgets = o->budgets;
    jo.n_budgets = o->n_budgets;
    if ((st = mpq_jobsolve_problem_build(job, &jo, &c.p, err)) != MPQ_OK) goto done;
    c.L = c.p->n_layers;
    c.O = c.p->n_options;
    c.n_items = mpq_problem_n_items(c.p->problem);
    {
        int64_t nwin = 0;
        int l0 = 0, o0 = 0; /* the first (layer, option) with a kl: a pair may be unavailable */
        while (l0 * c.O + o0 < c.L * c.O - 1 && !isfinite(c.p->layer_loss[(size_t)l0 * c.O + o0]))
            if (++o0 == c.O) o0 = 0, l0++;
        if ((st = mpq_db_metric_get(c.db, row->id, c.p->layers[l0].id, c.p->options[o0], "kl", NULL, NULL, &nwin,
                                    err)) != MPQ_OK)
            goto done;
        if (nwin < 2 || nwin > 1000000) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: layer %s: stored kl has n = %lld windows (need >= 2)",
                             c.p->layers[l0].name, (long long)nwin);
            goto done;
        }
        c.n = (int)nwin;
    }
    /* the solution */
    if (o->solution && *o->solution) snprintf(r->solution, sizeof r->solution, "%s", o->solution);
    else {
        int k = snprintf(r->solution, sizeof r->solution, "kl@");
        for (int b = 0; b < o->n_budgets && k > 0 && (size_t)k < sizeof r->solution; b++)
            k += snprintf(r->solution + k, sizeof r->solution - (size_t)k, "%s%s", b ? "," : "", o->budgets[b].text);
    }
    st = mpq_db_solution_find(c.db, row->id, r->solution, &sid, err);
    if (st == MPQ_ERR_NOTFOUND) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "bootstrap: job '%s' has no solution '%s' (run mpq solve first, or "
                         "name one with --solution)", row->name, r->solution);
        goto done;
    }
    if (st != MPQ_OK || (st = mpq_db_solution_get(c.db, sid, &sol, &asg, &n_asg, err)) != MPQ_OK) goto done;
    size_t LO = (size_t)c.L * (size_t)c.O;
    S = mpq_calloc((size_t)c.L, sizeof *S);
    knee0 = mpq_calloc((size_t)c.n_items, sizeof *knee0);
    kneer = mpq_calloc((size_t)c.n_items, sizeof *kneer);
    idx = mpq_calloc((size_t)c.n, sizeof *idx);
    tab = mpq_calloc(LO, sizeof *tab);
    base = mpq_calloc(LO, sizeof *base);
    mean_all = mpq_calloc(LO, sizeof *mean_all);
    losses = mpq_calloc((size_t)o->resamples, sizeof *losses);
    c.w = mpq_calloc(LO * (size_t)c.n, sizeof *c.w);
    r->stability = mpq_calloc((size_t)c.L, sizeof *r->stability);
    r->layer = mpq_calloc((size_t)c.L, sizeof *r->layer);
    r->candidate = mpq_calloc((size_t)c.L, sizeof *r->candidate);
    if (!S || !knee0 || !kneer || !idx || !tab || !base || !mean_all || !losses || !c.w || !r->stability || !r->layer ||
        !r->candidate) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "bootstrap: out of memory");
        goto done;
    }
    for (int l = 0; l < c.L && st == MPQ_OK; l++) {
        int k = 0;
        while (k < n_asg && asg[k].layer_id != c.p->layers[l].id) k++;
        S[l] = -1;
        for (int op = 0; k < n_asg && op < c.O; op++)
            if (!strcmp(asg[k].candidate, c.p->options[op])) S[l] = op;
        if (S[l] < 0)
            st = mpq_err_set(err, MPQ_ERR_INVALID, "bootstrap: solution '%s' has no measured candidate for layer %s",
                             r->solution, c.p->layers[l].name);
        snprintf(r->layer[l], sizeof r->layer[l], "%s", c.p->layers[l].name);
        if (S[l] >= 0) snprintf(r->candidate[l], sizeof r->candidate[l], "%s", c.p->options[S[l]]);
    }
    if (st != MPQ_OK) goto done;
    r->n_layers = c.L;
    r->n_windows = c.n;
    r->resamples = o->resamples;
    memcpy(base, c.p->layer_loss, LO * sizeof *base);
    if ((st = load_windows(&c, &r->n_measured, &r->window_check, &r->window_check_abs, err)) != MPQ_OK) goto done;
    for (size_t q = 0; q < LO; q++) {
        double m = 0;
        for (int k = 0; k < c.n; k++) m += c.w[q * c.n + k];
        mean_all[q] = m / c.n;
    }
    for (int l = 0; l < c.L; l++) r->predicted += base[(size_t)l * c.O + S[l]];
    r->knee_same = NAN;
    if (!o->no_knee) {
        if ((st = set_losses(&c, base, err)) != MPQ_OK) goto done;
        if ((st = knee_of(&c, knee0, &r->knee_avg_bits, err)) != MPQ_OK) goto done;
    }
    mpq_rng rng;
    mpq_rng_seed(&rng, o->seed);
    int n_opt = 0, n_knee = 0;
    for (int rs = 0; rs < o->resamples; rs++) {
        for (int k = 0; k < c.n; k++) idx[k] = o->identity ? k : (int)mpq_rng_below(&rng, (uint64_t)c.n);
        for (size_t q = 0; q < LO; q++) {
            if (!isfinite(base[q])) {
                tab[q] = base[q];
                continue;
            }
            double m = 0;
            for (int k = 0; k < c.n; k++) m += c.w[q * c.n + idx[k]];
            tab[q] = base[q] + (m / c.n - mean_all[q]);
        }
        if ((st = set_losses(&c, tab, err)) != MPQ_OK) goto done;
        mpq_solution *s = NULL;
        if ((st = solve(&c, &s, err)) != MPQ_OK) goto done;
        bool same = true;
        for (int l = 0; l < c.L; l++) {
            bool eq = s->choice[c.p->group_of[l]] == S[l];
            r->stability[l] += eq;
            same &= eq;
        }
        mpq_solution_free(s);
        n_opt += same;
        double ls = 0;
        for (int l = 0; l < c.L; l++) ls += tab[(size_t)l * c.O + S[l]];
        losses[rs] = ls;
        if (!o->no_knee) {
            if ((st = knee_of(&c, kneer, NULL, err)) != MPQ_OK) goto done;
            n_knee += memcmp(kneer, knee0, (size_t)c.n_items * sizeof *kneer) == 0;
        }
        if (o->progress) {
            mpq_bootstrap_progress pg = {.done = rs + 1, .total = o->resamples, .what = "resamples"};
            o->progress(o->progress_user, &pg);
        }
    }
    r->p_optimal = (double)n_opt / o->resamples;
    for (int l = 0; l < c.L; l++) r->stability[l] /= o->resamples;
    if (!o->no_knee) r->knee_same = (double)n_knee / o->resamples;
    double sum = 0;
    for (int rs = 0; rs < o->resamples; rs++) sum += losses[rs];
    r->loss_mean = sum / o->resamples;
    qsort(losses, (size_t)o->resamples, sizeof *losses, cmp_double);
    r->loss_p5 = pct(losses, o->resamples, 5);
    r->loss_p50 = pct(losses, o->resamples, 50);
    r->loss_p95 = pct(losses, o->resamples, 95);
done:
    free(asg);
    mpq_db_solution_release(&sol);
    free(S);
    free(knee0);
    free(kneer);
    free(idx);
    free(tab);
    free(base);
    free(mean_all);
    free(losses);
    ctx_free(&c);
    if (st == MPQ_OK) *out = r;
    else mpq_bootstrap_result_free(r);
    return st;
}
