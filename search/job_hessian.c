/*
 * job_hessian.c - the "hessian" stage of a job: HAWQ-V2 per-layer Hessian traces by
 * Hutchinson's estimator split into resumable chunks of probes, the HAWQ-V2 sensitivity
 * Omega_l(c) = Tr(H_l)/n_l * ||Q_c(W_l) - W_l||^2 for every job candidate, empirical Fisher
 * traces, top eigenvalues (per layer and whole model) and the SLQ spectral density
 * (PyHessian). Methods: src/calib/hessian.c and src/calib/hutchinson.c
 * (include/mpq/mpq_hessian.h); the stage, its units and rows: include/mpq/mpq_job.h.
 *
 * Resumable Hutchinson. The trace chunks run the library's resumable estimator
 * (mpq_hessian_hutch_*, the loop of mpq_hessian_trace_run): chunk K loads the state saved by
 * chunk K-1 (artifact "hessian.trace.<K-1>"), runs up to probes_per_unit probes and saves its
 * state as "hessian.trace.K" BEFORE the unit is committed. A chunk redone after a kill rewrites
 * the same artifact from the same input, so the numbers do not depend on where (or whether)
 * the job was interrupted, nor on probes_per_unit: they are those of mpq_hessian_trace_run
 * with the same seed and settings. Artifacts written before the state format had a version
 * (version 1) are still read.
 */
#include "job_hessian.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_hessian.h"

#define MAX_NAMES 512
#define NAME_LEN 40

struct mpq_job_hessian {
    mpq_hessian *hs;
    int *tokens;   /* (n_seqs, seq_len + 1) of the hessian windows */
    char names[MAX_NAMES][NAME_LEN]; /* metric names of the current unit */
    int n_names;
};

void mpq_job_hessian_free(mpq_job_hessian *h) {
    if (!h) return;
    mpq_hessian_free(h->hs);
    free(h->tokens);
    free(h);
}

/* ---- units ------------------------------------------------------------------------------ */

static int n_chunks(const mpq_job_hessian_spec *h) {
    return (h->probes_max + h->probes_per_unit - 1) / h->probes_per_unit;
}

int mpq_job_hessian_n_units(const mpq_job_spec *spec, const mpq_model *m) {
    if (!spec || !m || !spec->stages[MPQ_JOB_STAGE_HESSIAN]) return 0;
    const mpq_job_hessian_spec *h = &spec->hessian;
    int nl = mpq_model_n_linear(m);
    return n_chunks(h) + nl + (h->fisher ? 1 : 0) + (h->eig ? nl + 1 : 0) + (h->slq ? h->slq_probes : 0);
}

static bool set_unit(mpq_job_unit *u, int linear_index, int block, int option, const char *key) {
    *u = (mpq_job_unit){.stage = MPQ_JOB_STAGE_HESSIAN, .linear_index = linear_index, .block = block,
                        .option = option};
    int w = snprintf(u->key, sizeof u->key, "%s", key);
    return w >= 0 && (size_t)w < sizeof u->key;
}

mpq_status mpq_job_hessian_units(const mpq_job_spec *spec, const mpq_model *m, mpq_job_unit *out, int n) {
    if (!out || n != mpq_job_hessian_n_units(spec, m)) return MPQ_ERR_INVALID;
    const mpq_job_hessian_spec *h = &spec->hessian;
    int nl = mpq_model_n_linear(m), k = 0;
    bool ok = true;
    char key[2 * MPQ_DB_NAME_MAX];
    for (int c = 0; c < n_chunks(h); c++) {
        snprintf(key, sizeof key, "trace/chunk.%d", c);
        ok = set_unit(&out[k++], -1, -1, c, key) && ok;
    }
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        snprintf(key, sizeof key, "trace/%s", li->name);
        ok = set_unit(&out[k++], i, li->block, -1, key) && ok;
    }
    if (h->fisher) ok = set_unit(&out[k++], -1, -1, -1, "fisher") && ok;
    if (h->eig) {
        for (int i = 0; i < nl; i++) {
            const mpq_layer_info *li = mpq_model_linear(m, i);
            snprintf(key, sizeof key, "eig/%s", li->name);
            ok = set_unit(&out[k++], i, li->block, -1, key) && ok;
        }
        ok = set_unit(&out[k++], -1, -1, -1, "eig/model") && ok;
    }
    for (int p = 0; h->slq && p < h->slq_probes; p++) {
        snprintf(key, sizeof key, "slq/probe.%d", p);
        ok = set_unit(&out[k++], -1, -1, p, key) && ok;
    }
    return ok && k == n ? MPQ_OK : MPQ_ERR_INVALID;
}

/* ---- Hutchinson state ------------------------------------------------------------------- */

static mpq_hessian_trace_opts trace_opts(const mpq_job_hessian_spec *h) {
    mpq_hessian_trace_opts o = mpq_hessian_trace_opts_default();
    o.seed = (uint64_t)h->seed;
    o.min_probes = h->probes_min;
    o.max_probes = h->probes_max;
    o.tol = h->tol;
    o.rse_tol = h->rse_tol;
    return o;
}

static void artifact_name(char *buf, size_t n, int chunk) { snprintf(buf, n, "hessian.trace.%d", chunk); }

static mpq_status state_save(const mpq_job_hessian_env *env, int chunk, const mpq_hessian_hutch *hu, mpq_err *err) {
    char name[64];
    void *blob = NULL;
    size_t n = 0;
    mpq_status st = mpq_hessian_hutch_save(hu, &blob, &n, err);
    artifact_name(name, sizeof name, chunk);
    if (st == MPQ_OK) st = mpq_db_artifact_put(env->db, env->job_id, name, blob, n, err);
    free(blob);
    return st;
}

/* The estimator continued from artifact "hessian.trace.<chunk>". */
static mpq_status state_load(mpq_job_hessian *js, const mpq_job_hessian_env *env, int chunk, mpq_hessian_hutch **out,
                             mpq_err *err) {
    char name[64];
    void *blob = NULL;
    size_t n = 0;
    artifact_name(name, sizeof name, chunk);
    mpq_status st = mpq_db_artifact_get(env->db, env->job_id, name, &blob, &n, err);
    if (st == MPQ_ERR_NOTFOUND)
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: artifact %s missing (trace chunk %d not computed)", name,
                           chunk);
    if (st != MPQ_OK) return st;
    mpq_hessian_trace_opts to = trace_opts(&env->spec->hessian);
    st = mpq_hessian_hutch_load(js->hs, &to, blob, n, out, err);
    free(blob);
    if (st != MPQ_OK) mpq_err_prefix(err, "hessian: artifact %s (job '%s')", name, env->spec->name);
    return st;
}

/* ---- the stage's state and provenance ---------------------------------------------------- */

static mpq_status ensure_state(mpq_job_hessian **state, const mpq_job_hessian_env *env, mpq_err *err) {
    if (*state) return MPQ_OK;
    const mpq_job_hessian_spec *h = &env->spec->hessian;
    mpq_status st = MPQ_OK;
    mpq_job_hessian *js = mpq_calloc(1, sizeof *js);
    if (!js) return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
    if (h->n_seqs > env->n_seqs || h->seq_len > env->seq_len) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "hessian: %d x %d tokens requested, calibration has %d x %d",
                         h->n_seqs, h->seq_len, env->n_seqs, env->seq_len);
        goto done;
    }
    /* the first n_seqs calibration windows, the first seq_len + 1 tokens of each */
    if (!(js->tokens = mpq_calloc((size_t)h->n_seqs * ((size_t)h->seq_len + 1), sizeof(int)))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
        goto done;
    }
    for (int s = 0; s < h->n_seqs; s++)
        memcpy(js->tokens + (size_t)s * (h->seq_len + 1), env->tokens + (size_t)s * (env->seq_len + 1),
               ((size_t)h->seq_len + 1) * sizeof(int));
    mpq_hessian_opts ho = mpq_hessian_opts_default();
    ho.batch = env->spec->calib.batch;
    ho.fd_step = h->fd_step;
    if ((st = mpq_hessian_create(env->model, NULL, js->tokens, h->n_seqs, h->seq_len, &ho, &js->hs, err)) != MPQ_OK)
        goto done;
    *state = js;
    js = NULL;
done:
    mpq_job_hessian_free(js);
    return st;
}

/* prov.hessian = {seed, probes_min, probes_max, tol, rse_tol, fd_step, n_seqs, seq_len, ...}. */
static cJSON *prov_hessian(cJSON *prov, const mpq_job_hessian_spec *h) {
    cJSON_DeleteItemFromObjectCaseSensitive(prov, "hessian");
    cJSON *o = cJSON_AddObjectToObject(prov, "hessian");
    bool ok = o && cJSON_AddNumberToObject(o, "seed", (double)h->seed) &&
              cJSON_AddNumberToObject(o, "probes_min", h->probes_min) &&
              cJSON_AddNumberToObject(o, "probes_max", h->probes_max) && cJSON_AddNumberToObject(o, "tol", h->tol) &&
              cJSON_AddNumberToObject(o, "rse_tol", h->rse_tol) && cJSON_AddNumberToObject(o, "fd_step", h->fd_step) &&
              cJSON_AddNumberToObject(o, "n_seqs", h->n_seqs) && cJSON_AddNumberToObject(o, "seq_len", h->seq_len);
    return ok ? o : NULL;
}

static const char *name_of(mpq_job_hessian *js, const char *fmt, int i) {
    if (js->n_names >= MAX_NAMES) return NULL;
    char *b = js->names[js->n_names++];
    snprintf(b, NAME_LEN, fmt, i);
    return b;
}

/* ---- units ------------------------------------------------------------------------------ */

/* Probes chunk*ppu+1 .. of the one adaptive Hutchinson run (see the top of the file). */
static mpq_status unit_chunk(mpq_job_hessian *js, const mpq_job_hessian_env *env, int chunk, mpq_err *err) {
    const mpq_job_hessian_spec *h = &env->spec->hessian;
    const mpq_hessian_trace_opts to = trace_opts(h);
    mpq_hessian_hutch *hu = NULL;
    mpq_status st = chunk == 0 ? mpq_hessian_hutch_begin(js->hs, &to, &hu, err)
                               : state_load(js, env, chunk - 1, &hu, err);
    if (st != MPQ_OK) return st;
    const int k = mpq_hessian_hutch_n_probes(hu);
    if (!mpq_hessian_hutch_done(hu) && k != chunk * h->probes_per_unit) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "hessian: trace chunk %d: previous state has %d probes, expected %d",
                         chunk, k, chunk * h->probes_per_unit);
        goto done;
    }
    int end = (chunk + 1) * h->probes_per_unit;
    if (end > h->probes_max) end = h->probes_max;
    if (end > k && (st = mpq_hessian_hutch_step(hu, end - k, err)) != MPQ_OK) goto done;
    st = state_save(env, chunk, hu, err);
done:
    mpq_hessian_hutch_free(hu);
    return st;
}

/* Rows of linear layer i from the final trace state; hawq_omega per job candidate. */
static mpq_status unit_trace_layer(mpq_job_hessian *js, const mpq_job_hessian_env *env, int i, cJSON *prov,
                                   mpq_err *err) {
    const mpq_job_hessian_spec *h = &env->spec->hessian;
    const int last = n_chunks(h) - 1;
    mpq_hessian_hutch *hu = NULL;
    mpq_hessian_trace *tr = NULL;
    mpq_status st = state_load(js, env, last, &hu, err);
    if (st != MPQ_OK) return st;
    if (!mpq_hessian_hutch_done(hu)) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "hessian: trace state of chunk %d is not final (%d probes)", last,
                         mpq_hessian_hutch_n_probes(hu));
        goto done;
    }
    if ((st = mpq_hessian_hutch_finish(hu, &tr, err)) != MPQ_OK) goto done;
    const mpq_hessian_layer_trace *L = &tr->layers[i];
    cJSON *ph = prov_hessian(prov, h);
    if (!ph || !cJSON_AddNumberToObject(ph, "probes", tr->n_probes) ||
        !cJSON_AddNumberToObject(ph, "probes_per_unit", h->probes_per_unit)) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
        goto done;
    }
    int64_t lid = env->layer_ids[i], np = tr->n_probes;
    void *u = env->row_user;
    if ((st = env->add_row(u, prov, lid, "", "hutchinson_trace", L->trace, L->se, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hutchinson_trace_per_param", L->trace_per_param,
                           L->se / (double)L->n_params, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hessian_converged", L->converged ? 1.0 : 0.0, NAN, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hessian_rel_change", L->rel_change, NAN, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hessian_converged_at", L->converged_at > 0 ? L->converged_at : INFINITY,
                           NAN, np, err)) != MPQ_OK)
        goto done;
    for (int c = 0; c < env->spec->n_candidates; c++) {
        double om = 0.0, om_se = 0.0;
        if ((st = mpq_hessian_omega_candidate(env->model, NULL, tr, i, &env->cands[c], &om, &om_se, err)) != MPQ_OK)
            goto done;
        if ((st = env->add_row(u, prov, lid, env->spec->candidates[c], "hawq_omega", om, om_se, np, err)) != MPQ_OK)
            goto done;
    }
done:
    mpq_hessian_trace_free(tr);
    mpq_hessian_hutch_free(hu);
    return st;
}

static mpq_status unit_fisher(mpq_job_hessian *js, const mpq_job_hessian_env *env, cJSON *prov, mpq_err *err) {
    const int nl = mpq_model_n_linear(env->model);
    double *f = mpq_calloc((size_t)nl, sizeof(double));
    if (!f) return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
    mpq_status st = mpq_hessian_fisher(js->hs, f, err);
    if (st == MPQ_OK && !prov_hessian(prov, &env->spec->hessian))
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
    for (int i = 0; i < nl && st == MPQ_OK; i++)
        st = env->add_row(env->row_user, prov, env->layer_ids[i], "", "fisher_trace", f[i], NAN,
                          env->spec->hessian.n_seqs, err);
    free(f);
    return st;
}

static mpq_status unit_eig(mpq_job_hessian *js, const mpq_job_hessian_env *env, int i, cJSON *prov, mpq_err *err) {
    const mpq_job_hessian_spec *h = &env->spec->hessian;
    mpq_hessian_eig_opts eo = mpq_hessian_eig_opts_default();
    eo.seed = (uint64_t)h->seed;
    eo.max_iter = h->eig_iters;
    eo.tol = h->eig_tol;
    cJSON *ph = prov_hessian(prov, h);
    if (!ph || !cJSON_AddNumberToObject(ph, "eig_iters", h->eig_iters) ||
        !cJSON_AddNumberToObject(ph, "eig_tol", h->eig_tol))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
    mpq_status st = MPQ_OK;
    if (i >= 0) {
        double lam = 0.0;
        int it = 0;
        if ((st = mpq_hessian_top_eig_layer(js->hs, i, &eo, &lam, &it, err)) != MPQ_OK) return st;
        return env->add_row(env->row_user, prov, env->layer_ids[i], "", "top_eig", lam, NAN, it, err);
    }
    double lams[16];
    if (!cJSON_AddNumberToObject(ph, "eig_k", h->eig_k)) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if ((st = mpq_hessian_top_eigs(js->hs, h->eig_k, &eo, lams, NULL, err)) != MPQ_OK) return st;
    for (int j = 0; j < h->eig_k && st == MPQ_OK; j++) {
        const char *nm = name_of(js, "top_eig_%d", j + 1);
        st = nm ? env->add_row(env->row_user, prov, 0, "", nm, lams[j], NAN, 0, err)
                : mpq_err_set(err, MPQ_ERR_INVALID, "hessian: too many rows");
    }
    return st;
}

static mpq_status unit_slq(mpq_job_hessian *js, const mpq_job_hessian_env *env, int p, cJSON *prov, mpq_err *err) {
    const mpq_job_hessian_spec *h = &env->spec->hessian;
    const size_t n = mpq_hessian_n_params(js->hs);
    const int m = (size_t)h->slq_steps > n ? (int)n : h->slq_steps; /* as mpq_hessian_slq caps it */
    double *nodes = mpq_calloc((size_t)m, sizeof(double)), *wts = mpq_calloc((size_t)m, sizeof(double));
    mpq_status st = MPQ_OK;
    cJSON *ph = prov_hessian(prov, h);
    if (!nodes || !wts || !ph || !cJSON_AddNumberToObject(ph, "slq_steps", h->slq_steps) ||
        !cJSON_AddNumberToObject(ph, "slq_probes", h->slq_probes) ||
        !cJSON_AddNumberToObject(ph, "slq_seed", (double)h->seed + p)) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
        goto done;
    }
    /* one start vector per unit, seeded by seed + p; n_v = 1 so the weights sum to 1 here */
    if ((st = mpq_hessian_slq(js->hs, m, 1, (uint64_t)h->seed + (uint64_t)p, nodes, wts, err)) != MPQ_OK) goto done;
    double tr = 0.0;
    for (int j = 0; j < m; j++) tr += wts[j] * nodes[j];
    tr *= (double)n;
    for (int j = 0; j < m && st == MPQ_OK; j++) {
        int idx = p * m + j;
        const char *nn = name_of(js, "slq_node_%d", idx), *nw = name_of(js, "slq_weight_%d", idx);
        if (!nn || !nw) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "hessian: too many rows");
            break;
        }
        if ((st = env->add_row(env->row_user, prov, 0, "", nn, nodes[j], NAN, 1, err)) == MPQ_OK)
            st = env->add_row(env->row_user, prov, 0, "", nw, wts[j] / h->slq_probes, NAN, 1, err);
    }
    const char *nt = st == MPQ_OK ? name_of(js, "slq_trace_%d", p) : NULL;
    if (st == MPQ_OK)
        st = nt ? env->add_row(env->row_user, prov, 0, "", nt, tr, NAN, 1, err)
                : mpq_err_set(err, MPQ_ERR_INVALID, "hessian: too many rows");
done:
    free(nodes);
    free(wts);
    return st;
}

mpq_status mpq_job_hessian_compute(mpq_job_hessian **state, const mpq_job_hessian_env *env, const mpq_job_unit *u,
                                   cJSON *prov, mpq_err *err) {
    if (!state || !env || !u || !prov || !env->add_row)
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_hessian_compute: NULL argument");
    mpq_status st = ensure_state(state, env, err);
    if (st != MPQ_OK) return st;
    mpq_job_hessian *js = *state;
    js->n_names = 0;
    const int nl = mpq_model_n_linear(env->model);
    const char *k = u->key;
    if (strncmp(k, "trace/chunk.", 12) == 0 && u->option >= 0) return unit_chunk(js, env, u->option, err);
    if (strncmp(k, "trace/", 6) == 0 && u->linear_index >= 0 && u->linear_index < nl)
        return unit_trace_layer(js, env, u->linear_index, prov, err);
    if (strcmp(k, "fisher") == 0) return unit_fisher(js, env, prov, err);
    if (strcmp(k, "eig/model") == 0) return unit_eig(js, env, -1, prov, err);
    if (strncmp(k, "eig/", 4) == 0 && u->linear_index >= 0 && u->linear_index < nl)
        return unit_eig(js, env, u->linear_index, prov, err);
    if (strncmp(k, "slq/probe.", 10) == 0 && u->option >= 0) return unit_slq(js, env, u->option, prov, err);
    return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: unknown unit '%s'", k);
}
