/*
 * job_hessian.c - the "hessian" stage of a job: HAWQ-V2 per-layer Hessian traces by
 * Hutchinson's estimator split into resumable chunks of probes, the HAWQ-V2 sensitivity
 * Omega_l(c) = Tr(H_l)/n_l * ||Q_c(W_l) - W_l||^2 for every job candidate, empirical Fisher
 * traces, top eigenvalues (per layer and whole model) and the SLQ spectral density
 * (PyHessian). Methods: src/calib/hessian.c (include/mpq/mpq_hessian.h); the stage, its units
 * and rows: include/mpq/mpq_job.h.
 *
 * Resumable Hutchinson. mpq_hessian_trace_run is one adaptive loop; here the same loop runs
 * probes_per_unit probes per unit. After each chunk its whole state (probes done, the
 * xoshiro256** state, per layer sum / sum of squares / previous mean / relative change / first
 * probe at which the layer met the stopping rule) is written as the job artifact
 * "hessian.trace.K" (doubles as C99 hex-float text, so exact) BEFORE the unit is committed;
 * chunk K starts from artifact K-1. A chunk redone after a kill rewrites the same artifact
 * from the same input, so the numbers do not depend on where (or whether) the job was
 * interrupted, nor on probes_per_unit: they are bit-identical to mpq_hessian_trace_run with
 * the same seed (the probes and the per-layer sums are generated exactly as there; checked by
 * tests/unit/test_job_hessian.c).
 */
#include "job_hessian.h"

#include <inttypes.h>
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
    float *v, *hv; /* probe and H v (n floats) */
    char names[MAX_NAMES][NAME_LEN]; /* metric names of the current unit */
    int n_names;
};

void mpq_job_hessian_free(mpq_job_hessian *h) {
    if (!h) return;
    mpq_hessian_free(h->hs);
    free(h->tokens);
    free(h->v);
    free(h->hv);
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

/* ---- probes: xoshiro256** seeded by splitmix64, Rademacher entries (as src/calib/hessian.c) -- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

static void rademacher(uint64_t s[4], float *v, size_t n) {
    for (size_t i = 0; i < n; i += 64) {
        uint64_t bits = rng_next(s);
        for (size_t j = i; j < n && j < i + 64; j++, bits >>= 1) v[j] = (bits & 1) ? 1.0f : -1.0f;
    }
}

/* Sequential double accumulation, the same order as the library's (bit-identical sums). */
static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* ---- Hutchinson state ------------------------------------------------------------------- */

typedef struct trace_state {
    int k;             /* probes done */
    bool done;         /* converged or probes_max reached */
    uint64_t rng[4];   /* generator state after probe k */
    int nl;
    double *sum, *sumsq, *prev, *relc; /* per layer */
    int *first;        /* first probe at which the layer met the rule (0 = never) */
} trace_state;

static void state_free(trace_state *s) {
    free(s->sum);
    free(s->sumsq);
    free(s->prev);
    free(s->relc);
    free(s->first);
    memset(s, 0, sizeof *s);
}

static mpq_status state_alloc(trace_state *s, int nl, mpq_err *err) {
    memset(s, 0, sizeof *s);
    s->nl = nl;
    s->sum = mpq_calloc((size_t)nl, sizeof(double));
    s->sumsq = mpq_calloc((size_t)nl, sizeof(double));
    s->prev = mpq_calloc((size_t)nl, sizeof(double));
    s->relc = mpq_calloc((size_t)nl, sizeof(double));
    s->first = mpq_calloc((size_t)nl, sizeof(int));
    if (!s->sum || !s->sumsq || !s->prev || !s->relc || !s->first) {
        state_free(s);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory for %d layers", nl);
    }
    for (int i = 0; i < nl; i++) s->relc[i] = INFINITY;
    return MPQ_OK;
}

/* Layer i's estimate after s->k probes, computed exactly as mpq_hessian_trace_run does. */
static void state_layer(const trace_state *s, int i, int64_t n_params, const mpq_job_hessian_spec *h,
                        mpq_hessian_layer_trace *L) {
    int k = s->k;
    double mean = k > 0 ? s->sum[i] / k : 0.0;
    double var = k > 1 ? (s->sumsq[i] - k * mean * mean) / (k - 1) : 0.0;
    memset(L, 0, sizeof *L);
    L->trace = mean;
    L->n_params = n_params;
    L->trace_per_param = mean / (double)n_params;
    L->se = var > 0 ? sqrt(var / k) : 0.0;
    L->rse = mean != 0.0 ? L->se / fabs(mean) : INFINITY;
    L->rel_change = s->relc[i];
    L->n_probes = k;
    L->converged = k >= h->probes_min && L->rel_change < h->tol && L->rse < h->rse_tol;
}

static void artifact_name(char *buf, size_t n, int chunk) { snprintf(buf, n, "hessian.trace.%d", chunk); }

static mpq_status state_save(const mpq_job_hessian_env *env, int chunk, const trace_state *s, size_t n_floats,
                             mpq_err *err) {
    cJSON *o = cJSON_CreateObject(), *ls = NULL;
    char *text = NULL, buf[64], name[64];
    mpq_status st = MPQ_OK;
    bool ok = o != NULL;
    snprintf(buf, sizeof buf, "%zu", n_floats);
    ok = ok && cJSON_AddNumberToObject(o, "seed", (double)env->spec->hessian.seed) &&
         cJSON_AddStringToObject(o, "n_floats", buf) && cJSON_AddNumberToObject(o, "probes", s->k) &&
         cJSON_AddBoolToObject(o, "done", s->done);
    cJSON *r = ok ? cJSON_AddArrayToObject(o, "rng") : NULL;
    for (int j = 0; r && j < 4; j++) {
        snprintf(buf, sizeof buf, "%016" PRIx64, s->rng[j]);
        ok = ok && cJSON_AddItemToArray(r, cJSON_CreateString(buf));
    }
    ok = ok && r && (ls = cJSON_AddArrayToObject(o, "layers"));
    for (int i = 0; ok && i < s->nl; i++) {
        cJSON *a = cJSON_CreateArray();
        const double d[4] = {s->sum[i], s->sumsq[i], s->prev[i], s->relc[i]};
        ok = a && cJSON_AddItemToArray(ls, a);
        for (int j = 0; ok && j < 4; j++) {
            snprintf(buf, sizeof buf, "%a", d[j]);
            ok = cJSON_AddItemToArray(a, cJSON_CreateString(buf));
        }
        ok = ok && cJSON_AddItemToArray(a, cJSON_CreateNumber(s->first[i]));
    }
    if (ok) text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory writing the trace state");
    artifact_name(name, sizeof name, chunk);
    st = mpq_db_artifact_put(env->db, env->job_id, name, text, strlen(text), err);
    cJSON_free(text);
    return st;
}

static bool parse_double(const cJSON *v, double *out) {
    if (!cJSON_IsString(v) || !v->valuestring) return false;
    char *end = NULL;
    *out = strtod(v->valuestring, &end);
    return end != v->valuestring && *end == '\0' && !isnan(*out);
}

/* Four 16-digit hex strings. */
static bool parse_rng(const cJSON *r, uint64_t out[4]) {
    if (!cJSON_IsArray(r) || cJSON_GetArraySize(r) != 4) return false;
    int j = 0;
    for (const cJSON *x = r->child; x; x = x->next, j++) {
        if (!cJSON_IsString(x) || strlen(x->valuestring) != 16) return false;
        for (const char *c = x->valuestring; *c; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return false;
        out[j] = (uint64_t)strtoull(x->valuestring, NULL, 16);
    }
    return true;
}

/* Reads artifact "hessian.trace.<chunk>" into s (allocated here). */
static mpq_status state_load(const mpq_job_hessian_env *env, int chunk, int nl, size_t n_floats, trace_state *s,
                             mpq_err *err) {
    char name[64], want[32];
    void *blob = NULL;
    size_t n = 0;
    artifact_name(name, sizeof name, chunk);
    mpq_status st = mpq_db_artifact_get(env->db, env->job_id, name, &blob, &n, err);
    if (st == MPQ_ERR_NOTFOUND)
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: artifact %s missing (trace chunk %d not computed)", name,
                           chunk);
    if (st != MPQ_OK) return st;
    cJSON *o = cJSON_ParseWithLength(blob, n);
    free(blob);
    if ((st = state_alloc(s, nl, err)) != MPQ_OK) {
        cJSON_Delete(o);
        return st;
    }
    snprintf(want, sizeof want, "%zu", n_floats);
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed"),
                *nf = cJSON_GetObjectItemCaseSensitive(o, "n_floats"),
                *pr = cJSON_GetObjectItemCaseSensitive(o, "probes"), *dn = cJSON_GetObjectItemCaseSensitive(o, "done"),
                *r = cJSON_GetObjectItemCaseSensitive(o, "rng"), *ls = cJSON_GetObjectItemCaseSensitive(o, "layers");
    const char *bad = NULL;
    if (!cJSON_IsObject(o)) bad = "not a JSON object";
    else if (!cJSON_IsNumber(seed) || seed->valuedouble != (double)env->spec->hessian.seed) bad = "seed differs";
    else if (!cJSON_IsString(nf) || strcmp(nf->valuestring, want) != 0) bad = "parameter count differs";
    else if (!cJSON_IsNumber(pr) || pr->valuedouble < 0 || pr->valuedouble > env->spec->hessian.probes_max ||
             pr->valuedouble != floor(pr->valuedouble))
        bad = "bad probe count";
    else if (!cJSON_IsBool(dn)) bad = "bad done flag";
    else if (!parse_rng(r, s->rng)) bad = "bad generator state";
    else if (!cJSON_IsArray(ls) || cJSON_GetArraySize(ls) != nl) bad = "layer count differs";
    if (!bad) {
        s->k = (int)pr->valuedouble;
        s->done = cJSON_IsTrue(dn);
        int i = 0;
        for (const cJSON *a = ls->child; a && !bad; a = a->next, i++) {
            const cJSON *e[5] = {NULL};
            int m = 0;
            for (const cJSON *x = cJSON_IsArray(a) ? a->child : NULL; x && m < 5; x = x->next) e[m++] = x;
            if (m != 5 || cJSON_GetArraySize(a) != 5 || !parse_double(e[0], &s->sum[i]) ||
                !parse_double(e[1], &s->sumsq[i]) || !parse_double(e[2], &s->prev[i]) ||
                !parse_double(e[3], &s->relc[i]) || !cJSON_IsNumber(e[4]) || e[4]->valuedouble < 0 ||
                e[4]->valuedouble > s->k)
                bad = "bad layer entry";
            else
                s->first[i] = (int)e[4]->valuedouble;
        }
    }
    cJSON_Delete(o);
    if (bad) {
        state_free(s);
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: artifact %s: %s (job '%s')", name, bad,
                           env->spec->name);
    }
    return MPQ_OK;
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
    size_t n = mpq_hessian_n_params(js->hs);
    if (!(js->v = mpq_calloc(n, sizeof(float))) || !(js->hv = mpq_calloc(n, sizeof(float)))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory for %zu parameters", n);
        goto done;
    }
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

/* Probes chunk*ppu+1 .. of the one adaptive Hutchinson loop (see the top of the file). */
static mpq_status unit_chunk(mpq_job_hessian *js, const mpq_job_hessian_env *env, int chunk, mpq_err *err) {
    const mpq_job_hessian_spec *h = &env->spec->hessian;
    const mpq_model *m = env->model;
    const int nl = mpq_model_n_linear(m);
    const size_t n = mpq_hessian_n_params(js->hs);
    trace_state s = {0};
    mpq_status st;
    if (chunk == 0) {
        if ((st = state_alloc(&s, nl, err)) != MPQ_OK) return st;
        uint64_t x = (uint64_t)h->seed;
        for (int j = 0; j < 4; j++) s.rng[j] = splitmix64(&x);
    } else if ((st = state_load(env, chunk - 1, nl, n, &s, err)) != MPQ_OK) {
        return st;
    }
    if (s.k != (s.done ? s.k : chunk * h->probes_per_unit)) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "hessian: trace chunk %d: previous state has %d probes, expected %d",
                         chunk, s.k, chunk * h->probes_per_unit);
        goto done;
    }
    int end = (chunk + 1) * h->probes_per_unit;
    if (end > h->probes_max) end = h->probes_max;
    while (!s.done && s.k < end) {
        int k = ++s.k;
        rademacher(s.rng, js->v, n);
        if ((st = mpq_hessian_hvp(js->hs, js->v, js->hv, err)) != MPQ_OK) {
            mpq_err_prefix(err, "hessian: probe %d", k);
            goto done;
        }
        bool all = true;
        for (int i = 0; i < nl; i++) {
            const mpq_layer_info *li = mpq_model_linear(m, i);
            size_t off = mpq_hessian_layer_offset(js->hs, i);
            double x = dot(js->v + off, js->hv + off, (size_t)li->n_params);
            s.sum[i] += x;
            s.sumsq[i] += x * x;
            double mean = s.sum[i] / k;
            s.relc[i] = k > 1 ? fabs(mean - s.prev[i]) / (fabs(s.prev[i]) + 1e-6) : INFINITY;
            s.prev[i] = mean;
            mpq_hessian_layer_trace L;
            state_layer(&s, i, li->n_params, h, &L);
            if (L.converged && s.first[i] == 0) s.first[i] = k;
            all = all && L.converged;
        }
        if (all || k >= h->probes_max) s.done = true;
    }
    st = state_save(env, chunk, &s, n, err);
done:
    state_free(&s);
    return st;
}

/* Rows of linear layer i from the final trace state; hawq_omega per job candidate. */
static mpq_status unit_trace_layer(mpq_job_hessian *js, const mpq_job_hessian_env *env, int i, cJSON *prov,
                                   mpq_err *err) {
    const mpq_job_hessian_spec *h = &env->spec->hessian;
    const int nl = mpq_model_n_linear(env->model);
    const int last = n_chunks(h) - 1;
    trace_state s = {0};
    mpq_hessian_trace tr;
    memset(&tr, 0, sizeof tr);
    mpq_status st = state_load(env, last, nl, mpq_hessian_n_params(js->hs), &s, err);
    if (st != MPQ_OK) return st;
    if (!s.done) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "hessian: trace state of chunk %d is not final (%d probes)", last, s.k);
        goto done;
    }
    if (!(tr.layers = mpq_calloc((size_t)nl, sizeof *tr.layers))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
        goto done;
    }
    tr.n_layers = nl;
    tr.n_probes = s.k;
    for (int j = 0; j < nl; j++) state_layer(&s, j, mpq_model_linear(env->model, j)->n_params, h, &tr.layers[j]);
    const mpq_hessian_layer_trace *L = &tr.layers[i];
    cJSON *ph = prov_hessian(prov, h);
    if (!ph || !cJSON_AddNumberToObject(ph, "probes", s.k) || !cJSON_AddNumberToObject(ph, "probes_per_unit",
                                                                                         h->probes_per_unit)) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory");
        goto done;
    }
    int64_t lid = env->layer_ids[i], np = s.k;
    void *u = env->row_user;
    if ((st = env->add_row(u, prov, lid, "", "hutchinson_trace", L->trace, L->se, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hutchinson_trace_per_param", L->trace_per_param,
                           L->se / (double)L->n_params, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hessian_converged", L->converged ? 1.0 : 0.0, NAN, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hessian_rel_change", L->rel_change, NAN, np, err)) != MPQ_OK ||
        (st = env->add_row(u, prov, lid, "", "hessian_converged_at", s.first[i] > 0 ? s.first[i] : INFINITY, NAN, np,
                           err)) != MPQ_OK)
        goto done;
    for (int c = 0; c < env->spec->n_candidates; c++) {
        double om = 0.0, om_se = 0.0;
        if ((st = mpq_hessian_omega_candidate(env->model, NULL, &tr, i, &env->cands[c], &om, &om_se, err)) != MPQ_OK)
            goto done;
        if ((st = env->add_row(u, prov, lid, env->spec->candidates[c], "hawq_omega", om, om_se, np, err)) != MPQ_OK)
            goto done;
    }
done:
    free(tr.layers);
    state_free(&s);
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
