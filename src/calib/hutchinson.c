/* hutchinson.c - the resumable Hutchinson estimator of the per-layer Hessian traces
 * (Hutchinson 1990; HAWQ-V2, Dong et al. 2020, Alg. 1, with a per-layer stopping rule on the
 * relative change of the running mean and its relative standard error), and its saved state
 * (versioned JSON, hex-float doubles). mpq_hessian_trace_run and the job's hessian stage both
 * run this loop. See include/mpq/mpq_hessian.h. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib/hessian_internal.h"
#include "mpq/mpq_rng.h"

#define STATE_FORMAT "mpq.hutchinson"
#define STATE_VERSION 2

struct mpq_hessian_hutch {
    mpq_hessian *hs; /* borrowed */
    mpq_hessian_trace_opts o;
    int nl;
    int k;           /* probes done */
    bool done;       /* every layer converged, or k == max_probes */
    mpq_rng rng;     /* generator state after probe k */
    double *sum, *sumsq, *prev, *relc; /* per layer: sums of x and x^2, mean after k, last relative change */
    int *first;      /* per layer: first probe at which the rule held (0 = never) */
};

void mpq_hessian_hutch_free(mpq_hessian_hutch *h) {
    if (!h) return;
    free(h->sum);
    free(h->sumsq);
    free(h->prev);
    free(h->relc);
    free(h->first);
    free(h);
}

static mpq_status check_opts(const mpq_hessian_trace_opts *o, mpq_err *err) {
    if (o->min_probes < 2 || o->max_probes < o->min_probes || !(o->tol > 0) || !(o->rse_tol > 0))
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "hessian: trace: probes %d..%d (need 2 <= min <= max), tol %g, rse_tol %g (> 0)",
                           o->min_probes, o->max_probes, o->tol, o->rse_tol);
    return MPQ_OK;
}

/* A zero state (no probes, generator unseeded) for hs and o. */
static mpq_status alloc_state(mpq_hessian *hs, const mpq_hessian_trace_opts *o, mpq_hessian_hutch **out,
                              mpq_err *err) {
    const int nl = mpq_model_n_linear(hs->model);
    const size_t m = (size_t)nl + 1;
    mpq_hessian_hutch *h = mpq_calloc(1, sizeof *h);
    if (!h || !(h->sum = mpq_calloc(m, sizeof(double))) || !(h->sumsq = mpq_calloc(m, sizeof(double))) ||
        !(h->prev = mpq_calloc(m, sizeof(double))) || !(h->relc = mpq_calloc(m, sizeof(double))) ||
        !(h->first = mpq_calloc(m, sizeof(int)))) {
        mpq_hessian_hutch_free(h);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: trace: out of memory for %d layers", nl);
    }
    h->hs = hs;
    h->o = *o;
    h->nl = nl;
    for (int i = 0; i < nl; i++) h->relc[i] = INFINITY;
    *out = h;
    return MPQ_OK;
}

mpq_status mpq_hessian_hutch_begin(mpq_hessian *hs, const mpq_hessian_trace_opts *opts, mpq_hessian_hutch **out,
                                   mpq_err *err) {
    if (!hs || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    *out = NULL;
    mpq_hessian_trace_opts o = opts ? *opts : mpq_hessian_trace_opts_default();
    mpq_status st = check_opts(&o, err);
    if (st == MPQ_OK) st = alloc_state(hs, &o, out, err);
    if (st == MPQ_OK) mpq_rng_seed(&(*out)->rng, o.seed);
    return st;
}

int mpq_hessian_hutch_n_probes(const mpq_hessian_hutch *h) { return h ? h->k : 0; }
bool mpq_hessian_hutch_done(const mpq_hessian_hutch *h) { return h && h->done; }

/* Layer i's estimate after h->k probes (the one formula for the loop, finish and the job). */
static void layer_estimate(const mpq_hessian_hutch *h, int i, mpq_hessian_layer_trace *L) {
    const int k = h->k;
    const int64_t np = mpq_model_linear(h->hs->model, i)->n_params;
    const double mean = k > 0 ? h->sum[i] / k : 0.0;
    const double var = k > 1 ? (h->sumsq[i] - k * mean * mean) / (k - 1) : 0.0;
    memset(L, 0, sizeof *L);
    L->trace = mean;
    L->n_params = np;
    L->trace_per_param = mean / (double)np;
    L->se = var > 0 ? sqrt(var / k) : 0.0;
    L->rse = mean != 0.0 ? L->se / fabs(mean) : INFINITY;
    L->rel_change = h->relc[i];
    L->n_probes = k;
    L->converged = k >= h->o.min_probes && L->rel_change < h->o.tol && L->rse < h->o.rse_tol;
    L->converged_at = h->first[i];
}

/* Adds probe k = h->k + 1 with v and hv = H v to every layer; returns whether all converged. */
static bool add_probe(mpq_hessian_hutch *h, const float *v, const float *hv) {
    const int k = ++h->k;
    bool all = true;
    for (int i = 0; i < h->nl; i++) {
        const size_t off = mpq_hessian_layer_offset(h->hs, i);
        const double x = mpq_hessian_dot_(v + off, hv + off, (size_t)mpq_model_linear(h->hs->model, i)->n_params);
        h->sum[i] += x;
        h->sumsq[i] += x * x;
        const double mean = h->sum[i] / k;
        h->relc[i] = k > 1 ? fabs(mean - h->prev[i]) / (fabs(h->prev[i]) + 1e-6) : INFINITY;
        h->prev[i] = mean;
        mpq_hessian_layer_trace L;
        layer_estimate(h, i, &L);
        if (L.converged && h->first[i] == 0) h->first[i] = k;
        all = all && L.converged;
    }
    return all;
}

mpq_status mpq_hessian_hutch_step(mpq_hessian_hutch *h, int max_new, mpq_err *err) {
    if (!h || max_new < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: trace step: NULL or %d probes (>= 0)", max_new);
    if (h->done || max_new == 0) return MPQ_OK;
    const size_t n = h->hs->n;
    mpq_status st = MPQ_OK;
    float *v = mpq_calloc(n, sizeof(float)), *hv = mpq_calloc(n, sizeof(float));
    if (!v || !hv) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: trace: out of memory (%zu parameters)", n);
        goto done;
    }
    for (int j = 0; j < max_new && !h->done; j++) {
        mpq_rng before = h->rng;
        mpq_rng_rademacher(&h->rng, v, n);
        if ((st = mpq_hessian_hvp(h->hs, v, hv, err)) != MPQ_OK) {
            h->rng = before; /* the state stays that after the last completed probe */
            mpq_err_prefix(err, "hessian: probe %d", h->k + 1);
            goto done;
        }
        bool all = add_probe(h, v, hv);
        if (all || h->k >= h->o.max_probes) h->done = true;
    }
done:
    free(v);
    free(hv);
    return st;
}

mpq_status mpq_hessian_hutch_finish(const mpq_hessian_hutch *h, mpq_hessian_trace **out, mpq_err *err) {
    if (!h || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    *out = NULL;
    if (h->k < 1) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: trace: no probes run yet");
    mpq_hessian_trace *tr = mpq_calloc(1, sizeof *tr);
    if (!tr || !(tr->layers = mpq_calloc((size_t)h->nl + 1, sizeof *tr->layers))) {
        mpq_hessian_trace_free(tr);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: trace: out of memory for %d layers", h->nl);
    }
    tr->n_layers = h->nl;
    tr->n_probes = h->k;
    tr->converged = true;
    for (int i = 0; i < h->nl; i++) {
        layer_estimate(h, i, &tr->layers[i]);
        tr->converged = tr->converged && tr->layers[i].converged;
    }
    tr->seed = h->o.seed;
    tr->tol = h->o.tol;
    tr->rse_tol = h->o.rse_tol;
    tr->fd_step = h->hs->opts.fd_step;
    tr->n_seqs = h->hs->n_seqs;
    tr->T = h->hs->T;
    tr->loss = NAN;
    *out = tr;
    return MPQ_OK;
}

/* ---- saved state ------------------------------------------------------------------------ */

static bool add_str(cJSON *o, const char *key, const char *value) {
    return cJSON_AddStringToObject(o, key, value) != NULL;
}

static bool add_hex(cJSON *o, const char *key, double x) {
    char b[64];
    snprintf(b, sizeof b, "%a", x);
    return add_str(o, key, b);
}

mpq_status mpq_hessian_hutch_save(const mpq_hessian_hutch *h, void **blob, size_t *size, mpq_err *err) {
    if (!h || !blob || !size) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    *blob = NULL;
    *size = 0;
    char b[64];
    char *text = NULL;
    cJSON *o = cJSON_CreateObject(), *r = NULL, *ls = NULL;
    bool ok = o && add_str(o, "format", STATE_FORMAT) && cJSON_AddNumberToObject(o, "version", STATE_VERSION);
    snprintf(b, sizeof b, "%" PRIu64, h->o.seed);
    ok = ok && add_str(o, "seed", b);
    snprintf(b, sizeof b, "%zu", h->hs->n);
    ok = ok && add_str(o, "n_floats", b) && cJSON_AddNumberToObject(o, "n_layers", h->nl) &&
         cJSON_AddNumberToObject(o, "min_probes", h->o.min_probes) &&
         cJSON_AddNumberToObject(o, "max_probes", h->o.max_probes) && add_hex(o, "tol", h->o.tol) &&
         add_hex(o, "rse_tol", h->o.rse_tol) && add_hex(o, "fd_step", h->hs->opts.fd_step) &&
         cJSON_AddNumberToObject(o, "n_seqs", h->hs->n_seqs) && cJSON_AddNumberToObject(o, "T", h->hs->T) &&
         cJSON_AddNumberToObject(o, "probes", h->k) && cJSON_AddBoolToObject(o, "done", h->done) &&
         (r = cJSON_AddArrayToObject(o, "rng")) && (ls = cJSON_AddArrayToObject(o, "layers"));
    for (int j = 0; ok && j < 4; j++) {
        snprintf(b, sizeof b, "%016" PRIx64, h->rng.s[j]);
        ok = cJSON_AddItemToArray(r, cJSON_CreateString(b));
    }
    for (int i = 0; ok && i < h->nl; i++) {
        cJSON *a = cJSON_CreateArray();
        const double d[4] = {h->sum[i], h->sumsq[i], h->prev[i], h->relc[i]};
        ok = a && cJSON_AddItemToArray(ls, a);
        for (int j = 0; ok && j < 4; j++) {
            snprintf(b, sizeof b, "%a", d[j]);
            ok = cJSON_AddItemToArray(a, cJSON_CreateString(b));
        }
        ok = ok && cJSON_AddItemToArray(a, cJSON_CreateNumber(h->first[i]));
    }
    if (ok) text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    size_t n = text ? strlen(text) : 0;
    char *out = text ? mpq_calloc(n + 1, 1) : NULL;
    if (out) memcpy(out, text, n + 1);
    cJSON_free(text);
    if (!out) return mpq_err_set(err, MPQ_ERR_NOMEM, "hessian: out of memory writing the trace state");
    *blob = out;
    *size = n;
    return MPQ_OK;
}

/* A finite (or, with allow_inf, +inf) double from a hex-float string: false for anything else. */
static bool get_hex(const cJSON *v, bool allow_inf, double *out) {
    if (!cJSON_IsString(v) || !v->valuestring || !v->valuestring[0]) return false;
    char *end = NULL;
    double x = strtod(v->valuestring, &end);
    if (*end != '\0' || isnan(x) || (isinf(x) && !(allow_inf && x > 0))) return false;
    *out = x;
    return true;
}

/* An integral JSON number in [lo, hi]. */
static bool get_int(const cJSON *o, const char *key, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        v->valuedouble != floor(v->valuedouble))
        return false;
    *out = (int)v->valuedouble;
    return true;
}

/* A decimal unsigned string (digits only, no overflow). */
static bool get_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsString(v) || !v->valuestring || !v->valuestring[0] || strlen(v->valuestring) > 20) return false;
    uint64_t x = 0;
    for (const char *c = v->valuestring; *c; c++) {
        if (*c < '0' || *c > '9' || x > (UINT64_MAX - (uint64_t)(*c - '0')) / 10) return false;
        x = x * 10 + (uint64_t)(*c - '0');
    }
    *out = x;
    return true;
}

/* Four strings of 16 lowercase hex digits, not all zero (xoshiro's fixed point). */
static bool get_rng(const cJSON *r, mpq_rng *out) {
    if (!cJSON_IsArray(r) || cJSON_GetArraySize(r) != 4) return false;
    int j = 0;
    uint64_t any = 0;
    for (const cJSON *x = r->child; x; x = x->next, j++) {
        if (!cJSON_IsString(x) || !x->valuestring || strlen(x->valuestring) != 16) return false;
        for (const char *c = x->valuestring; *c; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return false;
        out->s[j] = (uint64_t)strtoull(x->valuestring, NULL, 16);
        any |= out->s[j];
    }
    return any != 0;
}

/* Version 2's record of the run's settings against hs and h->o; writes the mismatch to why. */
static bool same_settings(const cJSON *o, const mpq_hessian_hutch *h, char *why, size_t nw) {
    uint64_t seed = 0;
    int mn = 0, mx = 0, ns = 0, T = 0;
    double tol = 0, rse = 0, fd = 0;
    if (!get_u64(cJSON_GetObjectItemCaseSensitive(o, "seed"), &seed))
        snprintf(why, nw, "seed: expected a decimal string");
    else if (seed != h->o.seed)
        snprintf(why, nw, "seed %" PRIu64 " differs from the run's %" PRIu64, seed, h->o.seed);
    else if (!get_int(o, "min_probes", 0, INT32_MAX, &mn) || !get_int(o, "max_probes", 0, INT32_MAX, &mx))
        snprintf(why, nw, "min_probes / max_probes: expected non-negative integers");
    else if (mn != h->o.min_probes || mx != h->o.max_probes)
        snprintf(why, nw, "probes %d..%d differ from the run's %d..%d", mn, mx, h->o.min_probes, h->o.max_probes);
    else if (!get_hex(cJSON_GetObjectItemCaseSensitive(o, "tol"), false, &tol) ||
             !get_hex(cJSON_GetObjectItemCaseSensitive(o, "rse_tol"), false, &rse) ||
             !get_hex(cJSON_GetObjectItemCaseSensitive(o, "fd_step"), false, &fd))
        snprintf(why, nw, "tol / rse_tol / fd_step: expected finite hex-float strings");
    else if (tol != h->o.tol || rse != h->o.rse_tol || fd != h->hs->opts.fd_step)
        snprintf(why, nw, "tol %g, rse_tol %g, fd_step %g differ from the run's %g, %g, %g", tol, rse, fd, h->o.tol,
                 h->o.rse_tol, h->hs->opts.fd_step);
    else if (!get_int(o, "n_seqs", 1, INT32_MAX, &ns) || !get_int(o, "T", 1, INT32_MAX, &T))
        snprintf(why, nw, "n_seqs / T: expected positive integers");
    else if (ns != h->hs->n_seqs || T != h->hs->T)
        snprintf(why, nw, "calibration %d x %d tokens differs from the run's %d x %d", ns, T, h->hs->n_seqs,
                 h->hs->T);
    else
        return true;
    return false;
}

/* Probes, done flag, generator and per-layer sums into h (common to both versions). */
static bool get_progress(const cJSON *o, mpq_hessian_hutch *h, char *why, size_t nw) {
    const cJSON *dn = cJSON_GetObjectItemCaseSensitive(o, "done"), *ls = cJSON_GetObjectItemCaseSensitive(o, "layers");
    if (!get_int(o, "probes", 0, h->o.max_probes, &h->k))
        snprintf(why, nw, "probes: expected an integer in 0..%d (max_probes)", h->o.max_probes);
    else if (!cJSON_IsBool(dn))
        snprintf(why, nw, "done: expected true or false");
    else if (!get_rng(cJSON_GetObjectItemCaseSensitive(o, "rng"), &h->rng))
        snprintf(why, nw, "rng: expected 4 strings of 16 hex digits, not all zero");
    else if (!cJSON_IsArray(ls) || cJSON_GetArraySize(ls) != h->nl)
        snprintf(why, nw, "layers: %d entries, the model has %d", cJSON_IsArray(ls) ? cJSON_GetArraySize(ls) : -1,
                 h->nl);
    else {
        h->done = cJSON_IsTrue(dn);
        int i = 0;
        for (const cJSON *a = ls->child; a; a = a->next, i++) {
            const cJSON *e[5] = {NULL};
            int m = 0;
            for (const cJSON *x = cJSON_IsArray(a) ? a->child : NULL; x && m < 5; x = x->next) e[m++] = x;
            if (m != 5 || cJSON_GetArraySize(a) != 5 || !get_hex(e[0], false, &h->sum[i]) ||
                !get_hex(e[1], false, &h->sumsq[i]) || h->sumsq[i] < 0 || !get_hex(e[2], false, &h->prev[i]) ||
                !get_hex(e[3], true, &h->relc[i]) || h->relc[i] < 0 || !cJSON_IsNumber(e[4]) ||
                !(e[4]->valuedouble >= 0 && e[4]->valuedouble <= h->k) ||
                e[4]->valuedouble != floor(e[4]->valuedouble)) {
                snprintf(why, nw, "layers[%d]: expected [sum, sumsq >= 0, mean, rel_change >= 0 (hex floats, "
                         "no NaN), converged_at in 0..%d]", i, h->k);
                return false;
            }
            h->first[i] = (int)e[4]->valuedouble;
        }
        /* done must be what the sums imply: every layer converged, or max_probes reached */
        bool all = h->k > 0;
        for (int l = 0; l < h->nl && all; l++) {
            mpq_hessian_layer_trace L;
            layer_estimate(h, l, &L);
            all = L.converged;
        }
        if (h->done == (all || h->k == h->o.max_probes)) return true;
        snprintf(why, nw, "done %s after %d probes of %d..%d with %s layer converged", h->done ? "true" : "false",
                 h->k, h->o.min_probes, h->o.max_probes, all ? "every" : "not every");
    }
    return false;
}

mpq_status mpq_hessian_hutch_load(mpq_hessian *hs, const mpq_hessian_trace_opts *opts, const void *blob,
                                  size_t size, mpq_hessian_hutch **out, mpq_err *err) {
    if (!hs || !out || (!blob && size)) return mpq_err_set(err, MPQ_ERR_INVALID, "hessian: NULL argument");
    *out = NULL;
    mpq_hessian_trace_opts o = opts ? *opts : mpq_hessian_trace_opts_default();
    mpq_hessian_hutch *h = NULL;
    mpq_status st = check_opts(&o, err);
    if (st == MPQ_OK) st = alloc_state(hs, &o, &h, err);
    if (st != MPQ_OK) return st;
    char why[256] = "", want[32];
    cJSON *j = size ? cJSON_ParseWithLength(blob, size) : NULL;
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(j, "version"),
                *fmt = cJSON_GetObjectItemCaseSensitive(j, "format"),
                *nf = cJSON_GetObjectItemCaseSensitive(j, "n_floats"),
                *seed = cJSON_GetObjectItemCaseSensitive(j, "seed");
    int nl = -1;
    snprintf(want, sizeof want, "%zu", hs->n);
    if (!cJSON_IsObject(j))
        snprintf(why, sizeof why, "not a JSON object (%zu bytes; truncated?)", size);
    else if (ver && !(cJSON_IsNumber(ver) && ver->valuedouble == STATE_VERSION))
        snprintf(why, sizeof why, "version %.17g: this build reads versions 1 and %d",
                 cJSON_IsNumber(ver) ? ver->valuedouble : NAN, STATE_VERSION);
    else if (ver && !(cJSON_IsString(fmt) && strcmp(fmt->valuestring, STATE_FORMAT) == 0))
        snprintf(why, sizeof why, "format: expected \"%s\"", STATE_FORMAT);
    else if (!ver && !(cJSON_IsNumber(seed) && seed->valuedouble == (double)o.seed))
        snprintf(why, sizeof why, "seed differs from the run's %" PRIu64 " (version 1 state)", o.seed);
    else if (!cJSON_IsString(nf) || strcmp(nf->valuestring, want) != 0)
        snprintf(why, sizeof why, "parameter count %s differs from the model's %s",
                 cJSON_IsString(nf) ? nf->valuestring : "(missing)", want);
    else if (ver && !(get_int(j, "n_layers", 0, INT32_MAX, &nl) && nl == h->nl))
        snprintf(why, sizeof why, "layer count %d differs from the model's %d", nl, h->nl);
    else if ((!ver || same_settings(j, h, why, sizeof why)) && get_progress(j, h, why, sizeof why)) {
        *out = h;
        h = NULL;
    }
    cJSON_Delete(j);
    mpq_hessian_hutch_free(h);
    if (!*out) st = mpq_err_set(err, MPQ_ERR_FORMAT, "hutchinson state: %s", why);
    return st;
}
