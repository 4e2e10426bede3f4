/*
 * job_spec.c - the JSON job spec: parsing with cJSON, validation (every error names the spec
 * and the key), defaults, path resolution, canonical form and its SHA-256; stage names and
 * the unit list of a spec on a model. The schema is documented in include/mpq/mpq_job.h.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"
#include "util/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "job_fisher.h"
#include "job_hessian.h"

static const char *const stage_names[MPQ_JOB_N_STAGES] = {"weight_error", "layer_sensitivity", "kv_sensitivity",
                                                           "hessian", "noise_sensitivity", "fisher"};

const char *mpq_job_stage_name(mpq_job_stage s) {
    if ((int)s < 0 || (int)s >= MPQ_JOB_N_STAGES) return "?";
    return stage_names[s];
}

mpq_status mpq_job_stage_parse(const char *name, mpq_job_stage *out, mpq_err *err) {
    for (int i = 0; i < MPQ_JOB_N_STAGES; i++)
        if (name && strcmp(name, stage_names[i]) == 0) {
            *out = (mpq_job_stage)i;
            return MPQ_OK;
        }
    return mpq_err_set(err, MPQ_ERR_INVALID,
                       "unknown metric '%s' (expected weight_error, layer_sensitivity, kv_sensitivity, hessian, "
                       "noise_sensitivity or fisher)",
                       name ? name : "(null)");
}

void mpq_job_spec_free(mpq_job_spec *s) {
    if (!s) return;
    free(s->name);
    free(s->description);
    free(s->model);
    free(s->tokenizer);
    free(s->calib.data);
    free(s->eval.data);
    for (int i = 0; i < s->n_candidates; i++) free(s->candidates ? s->candidates[i] : NULL);
    free(s->candidates);
    for (int i = 0; i < s->n_kv_pairs; i++) free(s->kv_pairs ? s->kv_pairs[i] : NULL);
    free(s->kv_pairs);
    free(s->canonical_json);
    free(s);
}

/* ---- small validation helpers (each sets the error naming src and key) ------------------ */

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Short text of a JSON value for messages ("-3", "\"abc\"", "[...]"). */
static void value_text(const cJSON *v, char *buf, size_t n) {
    char *p = cJSON_PrintUnformatted(v);
    if (!p) {
        snprintf(buf, n, "?");
        return;
    }
    if (strlen(p) > 40) snprintf(buf, n, "%.37s...", p);
    else snprintf(buf, n, "%s", p);
    cJSON_free(p);
}

static const char *type_name(const cJSON *v) {
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    return "invalid value";
}

/* Rejects keys of obj not in allowed (NULL-terminated) and duplicate keys. */
static mpq_status check_keys(const char *src, const char *where, const cJSON *obj, const char *const *allowed,
                             mpq_err *err) {
    for (const cJSON *c = obj->child; c; c = c->next) {
        bool ok = false;
        for (int i = 0; allowed[i]; i++)
            if (c->string && strcmp(c->string, allowed[i]) == 0) ok = true;
        if (!ok) {
            char list[256] = "";
            for (int i = 0; allowed[i]; i++) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", allowed[i]);
            }
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s%s%s: unknown key (allowed: %s)", src, where,
                               *where ? "." : "", c->string ? c->string : "?", list);
        }
        for (const cJSON *d = c->next; d; d = d->next)
            if (d->string && strcmp(d->string, c->string) == 0)
                return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s%s%s: duplicate key", src, where, *where ? "." : "",
                                   c->string);
    }
    return MPQ_OK;
}

/* Integer in [lo, hi]; absent -> *out = def (and *present false). */
static mpq_status get_int(const char *src, const char *key, const cJSON *v, int64_t lo, int64_t hi, int64_t def,
                          int64_t *out, mpq_err *err) {
    if (!v) {
        *out = def;
        return MPQ_OK;
    }
    char got[64];
    value_text(v, got, sizeof got);
    const char *what = lo == 1 ? "a positive integer" : lo == 0 ? "a non-negative integer" : "an integer";
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected %s, got %s %s", src, key, what, type_name(v), got);
    if (v->valuedouble < (double)lo)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected %s, got %s", src, key, what, got);
    if (v->valuedouble > (double)hi)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected %s <= %lld, got %s", src, key, what,
                           (long long)hi, got);
    *out = (int64_t)v->valuedouble;
    return MPQ_OK;
}

static mpq_status get_string(const char *src, const char *key, const cJSON *v, const char **out, mpq_err *err) {
    if (!cJSON_IsString(v) || !v->valuestring) {
        char got[64];
        value_text(v, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected a string, got %s %s", src, key, type_name(v), got);
    }
    if (!*v->valuestring) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: empty string", src, key);
    *out = v->valuestring;
    return MPQ_OK;
}

/* Resolves an existing path to an absolute one (malloc'd into *out). dir_ok: directories allowed.
 * stored: the path is only checked to be absolute, never opened. */
static mpq_status get_path(const char *src, const char *key, const cJSON *v, bool dir_ok, bool stored, char **out,
                           mpq_err *err) {
    const char *p = NULL;
    mpq_status st = get_string(src, key, v, &p, err);
    if (st != MPQ_OK) return st;
    if (stored) { /* a stored spec: absolute paths, taken as they are (the files may be gone) */
        if (p[0] != '/') return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: %s: expected an absolute path", src, key, p);
        return (*out = dupstr(p)) ? MPQ_OK : mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", src);
    }
    char *abs = realpath(p, NULL);
    if (!abs) return mpq_err_set(err, MPQ_ERR_IO, "%s: %s: %s: cannot open: %s", src, key, p, strerror(errno));
    struct stat sb;
    if (stat(abs, &sb) != 0) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: %s: %s: cannot open: %s", src, key, p, strerror(errno));
    } else if (S_ISDIR(sb.st_mode) && !dir_ok) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: %s: %s: is a directory, expected a file", src, key, p);
    } else if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode)) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: %s: %s: not a regular file", src, key, p);
    }
    if (st != MPQ_OK) {
        free(abs);
        return st;
    }
    *out = abs;
    return MPQ_OK;
}

static bool ends_with_gguf(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && strcmp(path + n - 5, ".gguf") == 0;
}

static bool is_text_data(const char *path) {
    size_t n = strlen(path);
    return !(n >= 4 && (strcmp(path + n - 4, ".u16") == 0 || strcmp(path + n - 4, ".u32") == 0));
}

/* A data section: {"data", "seq_len", "n_seqs", "seed", ["batch"]}. */
static mpq_status parse_data(const char *src, const char *where, const cJSON *obj, bool calib, int64_t seed_def,
                             bool stored, mpq_job_data_spec *d, mpq_err *err) {
    static const char *const calib_keys[] = {"data", "seq_len", "n_seqs", "seed", "batch", NULL};
    static const char *const eval_keys[] = {"data", "seq_len", "n_seqs", "seed", NULL};
    char key[64];
    mpq_status st;
    if (!cJSON_IsObject(obj)) {
        char got[64];
        value_text(obj, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected an object, got %s %s", src, where, type_name(obj),
                           got);
    }
    if ((st = check_keys(src, where, obj, calib ? calib_keys : eval_keys, err)) != MPQ_OK) return st;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(obj, "data");
    snprintf(key, sizeof key, "%s.data", where);
    if (!data) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: missing (a text or .u16/.u32 token file)", src, key);
    if ((st = get_path(src, key, data, false, stored, &d->data, err)) != MPQ_OK) return st;
    int64_t v;
    snprintf(key, sizeof key, "%s.seq_len", where);
    if ((st = get_int(src, key, cJSON_GetObjectItemCaseSensitive(obj, "seq_len"), 1, 1 << 20, calib ? 128 : 256, &v,
                      err)) != MPQ_OK)
        return st;
    d->seq_len = (int)v;
    snprintf(key, sizeof key, "%s.n_seqs", where);
    if ((st = get_int(src, key, cJSON_GetObjectItemCaseSensitive(obj, "n_seqs"), 1, 1 << 24, 16, &v, err)) != MPQ_OK)
        return st;
    d->n_seqs = (int)v;
    snprintf(key, sizeof key, "%s.seed", where);
    if ((st = get_int(src, key, cJSON_GetObjectItemCaseSensitive(obj, "seed"), 0, INT32_MAX, seed_def, &v, err)) !=
        MPQ_OK)
        return st;
    d->seed = v;
    if (calib) {
        snprintf(key, sizeof key, "%s.batch", where);
        if ((st = get_int(src, key, cJSON_GetObjectItemCaseSensitive(obj, "batch"), 1, 4096, 8, &v, err)) != MPQ_OK)
            return st;
        d->batch = (int)v;
    }
    return MPQ_OK;
}

/* A non-empty array of strings, each canonicalized by canon(); duplicates rejected. */
typedef mpq_status (*canon_fn)(const char *in, char *out, size_t n, mpq_err *err);

static mpq_status canon_candidate(const char *in, char *out, size_t n, mpq_err *err) {
    mpq_candidate c;
    mpq_status st = mpq_candidate_parse(in, &c, err);
    if (st == MPQ_OK) snprintf(out, n, "%s", c.name);
    return st;
}

static mpq_status canon_pair(const char *in, char *out, size_t n, mpq_err *err) {
    mpq_kv_pair p;
    mpq_status st = mpq_kv_pair_parse(in, &p, err);
    if (st == MPQ_OK) mpq_kv_pair_name(p, out, n);
    return st;
}

static mpq_status canon_stage(const char *in, char *out, size_t n, mpq_err *err) {
    mpq_job_stage s;
    mpq_status st = mpq_job_stage_parse(in, &s, err);
    if (st == MPQ_OK) snprintf(out, n, "%s", mpq_job_stage_name(s));
    return st;
}

static mpq_status parse_names(const char *src, const char *key, const cJSON *arr, canon_fn canon, char ***out,
                              int *n_out, mpq_err *err) {
    if (!cJSON_IsArray(arr)) {
        char got[64];
        value_text(arr, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected an array of strings, got %s %s", src, key,
                           type_name(arr), got);
    }
    int n = cJSON_GetArraySize(arr);
    if (n <= 0) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: empty list", src, key);
    if (n > 4096) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: %d entries (at most 4096)", src, key, n);
    char **names = mpq_calloc((size_t)n, sizeof *names);
    if (!names) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: %s: out of memory", src, key);
    mpq_status st = MPQ_OK;
    int i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        char ik[96], buf[MPQ_DB_NAME_MAX];
        const char *s = NULL;
        snprintf(ik, sizeof ik, "%s[%d]", key, i);
        if ((st = get_string(src, ik, c, &s, err)) != MPQ_OK) break;
        mpq_err e2 = {0};
        if ((st = canon(s, buf, sizeof buf, &e2)) != MPQ_OK) {
            mpq_err_set(err, st, "%s: %s: %s", src, ik, e2.msg);
            break;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(names[j], buf) == 0) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: duplicate '%s' (same as %s[%d])", src, ik, buf, key, j);
                break;
            }
        if (st != MPQ_OK) break;
        if (!(names[i] = dupstr(buf))) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: %s: out of memory", src, key);
            break;
        }
    }
    if (st != MPQ_OK) {
        for (int j = 0; j < n; j++) free(names[j]);
        free(names);
        return st;
    }
    *out = names;
    *n_out = n;
    return MPQ_OK;
}

static void free_names(char **s, int n) {
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

static mpq_status get_bool(const char *src, const char *key, const cJSON *v, bool def, bool *out, mpq_err *err);

static mpq_status parse_kv(const char *src, const cJSON *kv, mpq_job_spec *s, mpq_err *err) {
    static const char *const kv_keys[] = {"scheme", "pairs", "per_head", NULL};
    static const char *const scheme_keys[] = {"mode", "group_size", "residual", "caq", NULL};
    mpq_status st;
    if (!cJSON_IsObject(kv)) {
        char got[64];
        value_text(kv, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv: expected an object, got %s %s", src, type_name(kv), got);
    }
    if ((st = check_keys(src, "kv", kv, kv_keys, err)) != MPQ_OK) return st;
    s->kv_scheme = mpq_kv_scheme_default();
    const cJSON *sch = cJSON_GetObjectItemCaseSensitive(kv, "scheme");
    if (sch) {
        if (!cJSON_IsObject(sch)) {
            char got[64];
            value_text(sch, got, sizeof got);
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv.scheme: expected an object, got %s %s", src,
                               type_name(sch), got);
        }
        if ((st = check_keys(src, "kv.scheme", sch, scheme_keys, err)) != MPQ_OK) return st;
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(sch, "mode");
        if (mode) {
            const char *m = NULL;
            if ((st = get_string(src, "kv.scheme.mode", mode, &m, err)) != MPQ_OK) return st;
            mpq_err e2 = {0};
            if (mpq_kv_mode_parse(m, &s->kv_scheme.mode, &e2) != MPQ_OK)
                return mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv.scheme.mode: unknown mode '%s' (kivi, per-token or saq)",
                                   src, m);

        }
        int64_t v;
        if ((st = get_int(src, "kv.scheme.group_size", cJSON_GetObjectItemCaseSensitive(sch, "group_size"), 1, 65536,
                          s->kv_scheme.group_size, &v, err)) != MPQ_OK)
            return st;
        s->kv_scheme.group_size = (int)v;
        if ((st = get_int(src, "kv.scheme.residual", cJSON_GetObjectItemCaseSensitive(sch, "residual"), 0, 1 << 20,
                          s->kv_scheme.residual, &v, err)) != MPQ_OK)
            return st;
        s->kv_scheme.residual = (int)v;
        if ((st = get_bool(src, "kv.scheme.caq", cJSON_GetObjectItemCaseSensitive(sch, "caq"), false,
                           &s->kv_scheme.caq, err)) != MPQ_OK)
            return st;
    }
    const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(kv, "pairs");
    if (!pairs) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv.pairs: missing (e.g. [\"k8v4\", \"k4v4\"])", src);
    if ((st = parse_names(src, "kv.pairs", pairs, canon_pair, &s->kv_pairs, &s->n_kv_pairs, err)) != MPQ_OK)
        return st;
    if ((st = get_bool(src, "kv.per_head", cJSON_GetObjectItemCaseSensitive(kv, "per_head"), false, &s->kv_per_head,
                       err)) != MPQ_OK)
        return st;
    s->has_kv = true;
    return MPQ_OK;
}

/* A finite number in (lo, hi] (lo_open) or [lo, hi]; absent -> def. */
static mpq_status get_double(const char *src, const char *key, const cJSON *v, double lo, bool lo_open, double hi,
                             double def, double *out, mpq_err *err) {
    if (!v) {
        *out = def;
        return MPQ_OK;
    }
    char got[64];
    value_text(v, got, sizeof got);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected a number, got %s %s", src, key, type_name(v), got);
    double x = v->valuedouble;
    if ((lo_open ? !(x > lo) : !(x >= lo)) || !(x <= hi))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected a number in %s%g, %g], got %s", src, key,
                           lo_open ? "(" : "[", lo, hi, got);
    *out = x;
    return MPQ_OK;
}

static mpq_status get_bool(const char *src, const char *key, const cJSON *v, bool def, bool *out, mpq_err *err) {
    if (!v) {
        *out = def;
        return MPQ_OK;
    }
    if (!cJSON_IsBool(v)) {
        char got[64];
        value_text(v, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: expected true or false, got %s %s", src, key, type_name(v),
                           got);
    }
    *out = cJSON_IsTrue(v);
    return MPQ_OK;
}

/* The "hessian" section (obj may be NULL: all defaults). Needs s->calib and s->seed. */
static mpq_status parse_hessian(const char *src, const cJSON *obj, mpq_job_spec *s, mpq_err *err) {
    static const char *const keys[] = {"probes_min", "probes_max", "probes_per_unit", "tol",       "rse_tol",
                                       "n_seqs",     "seq_len",    "seed",            "fd_step",   "eig",
                                       "eig_iters",  "eig_tol",    "eig_k",           "slq",       "slq_steps",
                                       "slq_probes", "fisher",     NULL};
    mpq_job_hessian_spec *h = &s->hessian;
    mpq_status st;
    int64_t v;
    if (obj && !cJSON_IsObject(obj)) {
        char got[64];
        value_text(obj, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: hessian: expected an object, got %s %s", src, type_name(obj),
                           got);
    }
    if (obj && (st = check_keys(src, "hessian", obj, keys, err)) != MPQ_OK) return st;
#define HKEY(k) (obj ? cJSON_GetObjectItemCaseSensitive(obj, k) : NULL)
#define HINT(k, lo, hi, def, dst)                                                                    \
    do {                                                                                             \
        if ((st = get_int(src, "hessian." k, HKEY(k), lo, hi, def, &v, err)) != MPQ_OK) return st;  \
        dst = v;                                                                                     \
    } while (0)
    HINT("probes_min", 2, 100000, 10, h->probes_min);
    HINT("probes_max", 2, 100000, h->probes_min > 200 ? h->probes_min : 200, h->probes_max);
    if (h->probes_max < h->probes_min)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: hessian.probes_max: %d is below hessian.probes_min %d", src,
                           h->probes_max, h->probes_min);
    HINT("probes_per_unit", 1, 100000, 10, h->probes_per_unit);
    if ((st = get_double(src, "hessian.tol", HKEY("tol"), 0, true, 1, 1e-3, &h->tol, err)) != MPQ_OK) return st;
    if ((st = get_double(src, "hessian.rse_tol", HKEY("rse_tol"), 0, true, 1e6, 0.05, &h->rse_tol, err)) != MPQ_OK)
        return st;
    int def_n = s->calib.n_seqs < 8 ? s->calib.n_seqs : 8, def_t = s->calib.seq_len < 128 ? s->calib.seq_len : 128;
    HINT("n_seqs", 1, s->calib.n_seqs, def_n, h->n_seqs);
    HINT("seq_len", 1, s->calib.seq_len, def_t, h->seq_len);
    HINT("seed", 0, INT32_MAX, s->seed, h->seed);
    if ((st = get_double(src, "hessian.fd_step", HKEY("fd_step"), 0, true, 0.5, 1e-2, &h->fd_step, err)) != MPQ_OK)
        return st;
    if ((st = get_bool(src, "hessian.eig", HKEY("eig"), true, &h->eig, err)) != MPQ_OK) return st;
    HINT("eig_iters", 1, 10000, 50, h->eig_iters);
    if ((st = get_double(src, "hessian.eig_tol", HKEY("eig_tol"), 0, true, 0.5, 1e-3, &h->eig_tol, err)) != MPQ_OK)
        return st;
    HINT("eig_k", 1, 16, 1, h->eig_k);
    if ((st = get_bool(src, "hessian.slq", HKEY("slq"), true, &h->slq, err)) != MPQ_OK) return st;
    HINT("slq_steps", 1, 250, 30, h->slq_steps);
    HINT("slq_probes", 1, 64, 4, h->slq_probes);
    if ((st = get_bool(src, "hessian.fisher", HKEY("fisher"), true, &h->fisher, err)) != MPQ_OK) return st;
#undef HINT
#undef HKEY
    return MPQ_OK;
}

/* The "noise" section (obj may be NULL: all defaults). Needs s->seed. */
static mpq_status parse_noise(const char *src, const cJSON *obj, mpq_job_spec *s, mpq_err *err) {
    static const char *const keys[] = {"levels", "seed", NULL};
    static const double def_levels[] = {1e-3, 1e-2, 1e-1};
    mpq_job_noise_spec *ns = &s->noise;
    mpq_status st;
    char got[64];
    if (obj && !cJSON_IsObject(obj)) {
        value_text(obj, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: noise: expected an object, got %s %s", src, type_name(obj), got);
    }
    if (obj && (st = check_keys(src, "noise", obj, keys, err)) != MPQ_OK) return st;
    const cJSON *lv = obj ? cJSON_GetObjectItemCaseSensitive(obj, "levels") : NULL;
    if (!lv) {
        ns->n_levels = 3;
        memcpy(ns->levels, def_levels, sizeof def_levels);
    } else {
        if (!cJSON_IsArray(lv)) {
            value_text(lv, got, sizeof got);
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: noise.levels: expected an array of numbers, got %s %s", src,
                               type_name(lv), got);
        }
        int n = cJSON_GetArraySize(lv);
        if (n < 1 || n > MPQ_JOB_NOISE_MAX_LEVELS)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: noise.levels: expected 1..%d levels, got %d", src,
                               MPQ_JOB_NOISE_MAX_LEVELS, n);
        int i = 0;
        for (const cJSON *x = lv->child; x; x = x->next, i++) {
            value_text(x, got, sizeof got);
            if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || !(x->valuedouble > 0) || x->valuedouble > 10)
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "%s: noise.levels[%d]: expected a finite number in (0, 10], got %s %s", src, i,
                                   type_name(x), got);
            if (i > 0 && !(x->valuedouble > ns->levels[i - 1]))
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "%s: noise.levels[%d]: %s is not above the previous level %g (levels must be "
                                   "strictly increasing)",
                                   src, i, got, ns->levels[i - 1]);
            ns->levels[i] = x->valuedouble;
        }
        ns->n_levels = n;
    }
    int64_t v;
    if ((st = get_int(src, "noise.seed", obj ? cJSON_GetObjectItemCaseSensitive(obj, "seed") : NULL, 0, INT32_MAX,
                      s->seed, &v, err)) != MPQ_OK)
        return st;
    ns->seed = v;
    return MPQ_OK;
}

/* The "adaptive" section (README "Adaptive measurement"). Needs s->calib. */
static mpq_status parse_adaptive(const char *src, const cJSON *obj, mpq_job_spec *s, mpq_err *err) {
    static const char *const keys[] = {"budgets", "min_windows", "step", "z", "tol", NULL};
    mpq_job_adaptive_spec *a = &s->adaptive;
    mpq_status st;
    char got[64];
    if (!cJSON_IsObject(obj)) {
        value_text(obj, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: adaptive: expected an object, got %s %s", src, type_name(obj),
                           got);
    }
    if ((st = check_keys(src, "adaptive", obj, keys, err)) != MPQ_OK) return st;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(obj, "budgets");
    if (!cJSON_IsArray(b) || cJSON_GetArraySize(b) < 1 || cJSON_GetArraySize(b) > MPQ_JOB_ADAPTIVE_MAX_BUDGETS) {
        value_text(b, got, sizeof got);
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: adaptive.budgets: expected an array of 1..%d budgets such as \"avg-bits=3.5\", got "
                           "%s %s",
                           src, MPQ_JOB_ADAPTIVE_MAX_BUDGETS, b ? type_name(b) : "nothing", b ? got : "");
    }
    int i = 0;
    for (const cJSON *x = b->child; x; x = x->next, i++) {
        char key[48];
        snprintf(key, sizeof key, "adaptive.budgets[%d]", i);
        const char *t = NULL;
        if ((st = get_string(src, key, x, &t, err)) != MPQ_OK) return st;
        mpq_budget bu;
        mpq_err e2 = {0};
        if (mpq_budget_parse(t, &bu, &e2) != MPQ_OK)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: %s", src, key, e2.msg);
        for (int j = 0; j < i; j++)
            if (strcmp(a->budgets[j], bu.text) == 0)
                return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %s: '%s' is listed twice", src, key, bu.text);
        snprintf(a->budgets[i], sizeof a->budgets[i], "%s", bu.text);
    }
    a->n_budgets = i;
    const int n = s->calib.n_seqs, B = s->calib.batch;
    int64_t v;
    if ((st = get_int(src, "adaptive.min_windows", cJSON_GetObjectItemCaseSensitive(obj, "min_windows"), 1, n,
                      B < n ? B : n, &v, err)) != MPQ_OK)
        return st; /* the message gives the bound: calibration.n_seqs */
    if (v % B != 0 && v != n)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: adaptive.min_windows: %lld is not a multiple of calibration.batch %d (windows are "
                           "measured in whole batches, so that a unit extended to all windows equals the "
                           "non-adaptive measurement bit for bit)",
                           src, (long long)v, B);
    a->min_windows = (int)v;
    if ((st = get_int(src, "adaptive.step", cJSON_GetObjectItemCaseSensitive(obj, "step"), 1, 1 << 24, B, &v, err)) !=
        MPQ_OK)
        return st;
    if (v % B != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: adaptive.step: %lld is not a multiple of calibration.batch %d (windows are measured "
                           "in whole batches)",
                           src, (long long)v, B);
    a->step = (int)v;
    const cJSON *z = cJSON_GetObjectItemCaseSensitive(obj, "z");
    a->z = 2.0;
    if (z) {
        value_text(z, got, sizeof got);
        if (!cJSON_IsNumber(z) || !isfinite(z->valuedouble) || !(z->valuedouble > 0) || z->valuedouble > 100)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: adaptive.z: expected a number in (0, 100], got %s %s", src,
                               type_name(z), got);
        a->z = z->valuedouble;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "tol");
    a->tol = 0.0;
    if (t) {
        value_text(t, got, sizeof got);
        if (!cJSON_IsNumber(t) || !isfinite(t->valuedouble) || !(t->valuedouble >= 0) || t->valuedouble > 1)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: adaptive.tol: expected a number in [0, 1], got %s %s", src,
                               type_name(t), got);
        a->tol = t->valuedouble;
    }
    a->enabled = true;
    return MPQ_OK;
}

/* ---- canonical form --------------------------------------------------------------------- */

static cJSON *names_array(char **names, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *x = cJSON_CreateString(names[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static cJSON *data_object(const mpq_job_data_spec *d, bool calib) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    bool ok = cJSON_AddStringToObject(o, "data", d->data) && cJSON_AddNumberToObject(o, "seq_len", d->seq_len) &&
              cJSON_AddNumberToObject(o, "n_seqs", d->n_seqs) && cJSON_AddNumberToObject(o, "seed", (double)d->seed);
    if (ok && calib) ok = cJSON_AddNumberToObject(o, "batch", d->batch) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static bool add_item(cJSON *o, const char *k, cJSON *v) {
    if (!v) return false;
    if (!cJSON_AddItemToObject(o, k, v)) {
        cJSON_Delete(v);
        return false;
    }
    return true;
}

static char *canonical(const mpq_job_spec *s) {
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;
    if (!o) return NULL;
    bool ok = cJSON_AddStringToObject(o, "name", s->name) != NULL;
    if (ok && s->description) ok = cJSON_AddStringToObject(o, "description", s->description) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "model", s->model);
    if (ok && s->tokenizer) ok = cJSON_AddStringToObject(o, "tokenizer", s->tokenizer) != NULL;
    ok = ok && cJSON_AddNumberToObject(o, "seed", (double)s->seed);
    /* threads only when not the default 1: specs canonicalized before the key existed keep
     * their text and hash (and their jobs stay resumable) */
    if (ok && s->threads != 1) ok = cJSON_AddNumberToObject(o, "threads", s->threads) != NULL;
    /* weights_dtype only when not f32, for the same reason */
    if (ok && s->weights_dtype != MPQ_WEIGHTS_F32)
        ok = cJSON_AddStringToObject(o, "weights_dtype", mpq_weights_dtype_name(s->weights_dtype)) != NULL;
    ok = ok && add_item(o, "calibration", data_object(&s->calib, true));
    if (ok && s->eval.data) ok = add_item(o, "evaluation", data_object(&s->eval, false));
    if (ok && s->n_candidates > 0) ok = add_item(o, "candidates", names_array(s->candidates, s->n_candidates));
    if (ok && s->has_kv) {
        cJSON *kv = cJSON_CreateObject(), *sch = cJSON_CreateObject();
        bool k = kv && sch && cJSON_AddStringToObject(sch, "mode", mpq_kv_mode_name(s->kv_scheme.mode)) &&
                 cJSON_AddNumberToObject(sch, "group_size", s->kv_scheme.group_size) &&
                 cJSON_AddNumberToObject(sch, "residual", s->kv_scheme.residual);
        /* caq only when set: specs written before the key existed keep their text and hash */
        if (k && s->kv_scheme.caq) k = cJSON_AddTrueToObject(sch, "caq") != NULL;
        if (k) {
            k = add_item(kv, "scheme", sch);
            sch = NULL;
        }
        k = k && add_item(kv, "pairs", names_array(s->kv_pairs, s->n_kv_pairs));
        /* per_head only when set: specs without it keep their text and hash */
        if (k && s->kv_per_head) k = cJSON_AddTrueToObject(kv, "per_head") != NULL;
        cJSON_Delete(sch);
        if (k) ok = add_item(o, "kv", kv);
        else {
            cJSON_Delete(kv);
            ok = false;
        }
    }
    if (ok && s->stages[MPQ_JOB_STAGE_HESSIAN]) {
        const mpq_job_hessian_spec *h = &s->hessian;
        cJSON *ho = cJSON_CreateObject();
        bool k = ho && cJSON_AddNumberToObject(ho, "probes_min", h->probes_min) &&
                 cJSON_AddNumberToObject(ho, "probes_max", h->probes_max) &&
                 cJSON_AddNumberToObject(ho, "probes_per_unit", h->probes_per_unit) &&
                 cJSON_AddNumberToObject(ho, "tol", h->tol) && cJSON_AddNumberToObject(ho, "rse_tol", h->rse_tol) &&
                 cJSON_AddNumberToObject(ho, "n_seqs", h->n_seqs) &&
                 cJSON_AddNumberToObject(ho, "seq_len", h->seq_len) &&
                 cJSON_AddNumberToObject(ho, "seed", (double)h->seed) &&
                 cJSON_AddNumberToObject(ho, "fd_step", h->fd_step) && cJSON_AddBoolToObject(ho, "eig", h->eig) &&
                 cJSON_AddNumberToObject(ho, "eig_iters", h->eig_iters) &&
                 cJSON_AddNumberToObject(ho, "eig_tol", h->eig_tol) &&
                 cJSON_AddNumberToObject(ho, "eig_k", h->eig_k) && cJSON_AddBoolToObject(ho, "slq", h->slq) &&
                 cJSON_AddNumberToObject(ho, "slq_steps", h->slq_steps) &&
                 cJSON_AddNumberToObject(ho, "slq_probes", h->slq_probes) &&
                 cJSON_AddBoolToObject(ho, "fisher", h->fisher);
        if (k) ok = add_item(o, "hessian", ho);
        else {
            cJSON_Delete(ho);
            ok = false;
        }
    }
    if (ok && s->stages[MPQ_JOB_STAGE_NOISE]) {
        cJSON *no = cJSON_CreateObject(), *lv = cJSON_CreateDoubleArray(s->noise.levels, s->noise.n_levels);
        bool k = no && lv && cJSON_AddItemToObject(no, "levels", lv);
        if (!k) cJSON_Delete(lv);
        k = k && cJSON_AddNumberToObject(no, "seed", (double)s->noise.seed);
        if (k) ok = add_item(o, "noise", no);
        else {
            cJSON_Delete(no);
            ok = false;
        }
    }
    if (ok && s->adaptive.enabled) {
        const mpq_job_adaptive_spec *a = &s->adaptive;
        cJSON *ao = cJSON_CreateObject(), *bs = cJSON_CreateArray();
        bool k = ao && bs;
        for (int i = 0; k && i < a->n_budgets; i++) {
            cJSON *x = cJSON_CreateString(a->budgets[i]);
            k = x && cJSON_AddItemToArray(bs, x);
            if (!k) cJSON_Delete(x);
        }
        k = k && cJSON_AddItemToObject(ao, "budgets", bs);
        if (!k) cJSON_Delete(bs);
        k = k && cJSON_AddNumberToObject(ao, "min_windows", a->min_windows) &&
            cJSON_AddNumberToObject(ao, "step", a->step) && cJSON_AddNumberToObject(ao, "z", a->z) &&
            cJSON_AddNumberToObject(ao, "tol", a->tol);
        if (k) ok = add_item(o, "adaptive", ao);
        else {
            cJSON_Delete(ao);
            ok = false;
        }
    }
    if (ok) {
        cJSON *m = cJSON_CreateArray();
        for (int i = 0; m && i < MPQ_JOB_N_STAGES; i++)
            if (s->stages[i] && !cJSON_AddItemToArray(m, cJSON_CreateString(stage_names[i]))) {
                cJSON_Delete(m);
                m = NULL;
            }
        ok = add_item(o, "metrics", m);
    }
    if (ok) out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

/* ---- parse ------------------------------------------------------------------------------ */

static bool valid_name(const char *n) {
    size_t l = strlen(n);
    if (l == 0 || l > 100) return false;
    for (size_t i = 0; i < l; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

static mpq_status spec_parse(const char *json, const char *source, bool stored, mpq_job_spec **out, mpq_err *err) {
    static const char *const top_keys[] = {"name",       "description", "model",      "tokenizer", "seed",
                                           "calibration", "evaluation", "candidates", "kv",        "metrics",
                                           "hessian",     "threads",     "noise",      "adaptive",  "weights_dtype", NULL};
    const char *src = source && *source ? source : "spec";
    mpq_status st = MPQ_OK;
    cJSON *root = NULL;
    mpq_job_spec *s = NULL;
    const char *end = NULL;
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_spec_parse: out is NULL");
    *out = NULL;
    if (!json) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: no spec text", src);
    root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        int line = 1;
        const char *at = end ? end : cJSON_GetErrorPtr();
        if (at && at >= json && at <= json + strlen(json))
            for (const char *p = json; p < at; p++) line += *p == '\n';
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: not valid JSON near line %d", src, line);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: expected a JSON object at the top level, got %s", src,
                         type_name(root));
        goto done;
    }
    if ((st = check_keys(src, "", root, top_keys, err)) != MPQ_OK) goto done;
    if (!(s = mpq_calloc(1, sizeof *s))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", src);
        goto done;
    }
    snprintf(s->source, sizeof s->source, "%s", src);

    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "name");
    const char *str = NULL;
    if (!v) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: name: missing (the job's name)", src);
        goto done;
    }
    if ((st = get_string(src, "name", v, &str, err)) != MPQ_OK) goto done;
    if (!valid_name(str)) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: name: '%.40s' must be 1..100 characters of A-Z a-z 0-9 . _ -", src,
                         str);
        goto done;
    }
    if (!(s->name = dupstr(str))) goto oom;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "description"))) {
        if (!cJSON_IsString(v)) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: description: expected a string, got %s", src, type_name(v));
            goto done;
        }
        if (!(s->description = dupstr(v->valuestring))) goto oom;
    }
    if (!(v = cJSON_GetObjectItemCaseSensitive(root, "model"))) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: model: missing (a llama2.c checkpoint or HF directory)", src);
        goto done;
    }
    if ((st = get_path(src, "model", v, true, stored, &s->model, err)) != MPQ_OK) goto done;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "tokenizer")) &&
        (st = get_path(src, "tokenizer", v, false, stored, &s->tokenizer, err)) != MPQ_OK)
        goto done;
    if ((st = get_int(src, "seed", cJSON_GetObjectItemCaseSensitive(root, "seed"), 0, INT32_MAX, 1, &s->seed, err)) !=
        MPQ_OK)
        goto done;
    int64_t threads = 1;
    if ((st = get_int(src, "threads", cJSON_GetObjectItemCaseSensitive(root, "threads"), 1, 1024, 1, &threads,
                      err)) != MPQ_OK)
        goto done;
    s->threads = (int)threads;
    s->weights_dtype = MPQ_WEIGHTS_F32;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "weights_dtype"))) {
        if ((st = get_string(src, "weights_dtype", v, &str, err)) != MPQ_OK) goto done;
        if (!mpq_weights_dtype_parse(str, &s->weights_dtype)) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: weights_dtype: '%.40s' is not one of f32, bf16, f16, source",
                             src, str);
            goto done;
        }
    }
    if (!(v = cJSON_GetObjectItemCaseSensitive(root, "calibration"))) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: calibration: missing (an object with \"data\")", src);
        goto done;
    }
    if ((st = parse_data(src, "calibration", v, true, s->seed, stored, &s->calib, err)) != MPQ_OK) goto done;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "evaluation")) &&
        (st = parse_data(src, "evaluation", v, false, s->seed + 1, stored, &s->eval, err)) != MPQ_OK)
        goto done;
    if (!s->tokenizer && (is_text_data(s->calib.data) || (s->eval.data && is_text_data(s->eval.data))) &&
        (ends_with_gguf(s->model) || mpq_model_file_is_gguf(s->model)) && !(s->tokenizer = dupstr(s->model)))
        goto oom; /* a GGUF model carries its tokenizer: the spec then names the model file as tokenizer */
    if (!s->tokenizer && (is_text_data(s->calib.data) || (s->eval.data && is_text_data(s->eval.data)))) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: tokenizer: missing, and %s is text (not .u16/.u32 tokens)", src,
                         is_text_data(s->calib.data) ? "calibration.data" : "evaluation.data");
        goto done;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "candidates")) &&
        (st = parse_names(src, "candidates", v, canon_candidate, &s->candidates, &s->n_candidates, err)) != MPQ_OK)
        goto done;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "kv")) && (st = parse_kv(src, v, s, err)) != MPQ_OK) goto done;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "metrics"))) {
        char **m = NULL;
        int nm = 0;
        if ((st = parse_names(src, "metrics", v, canon_stage, &m, &nm, err)) != MPQ_OK) goto done;
        for (int i = 0; i < nm; i++) {
            mpq_job_stage stg = MPQ_JOB_STAGE_WEIGHT_ERROR;
            mpq_job_stage_parse(m[i], &stg, NULL);
            s->stages[stg] = true;
        }
        free_names(m, nm);
    } else {
        s->stages[MPQ_JOB_STAGE_WEIGHT_ERROR] = s->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY] = true;
        s->stages[MPQ_JOB_STAGE_KV_SENSITIVITY] = s->has_kv;
        s->stages[MPQ_JOB_STAGE_HESSIAN] = cJSON_GetObjectItemCaseSensitive(root, "hessian") != NULL;
        s->stages[MPQ_JOB_STAGE_NOISE] = cJSON_GetObjectItemCaseSensitive(root, "noise") != NULL;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "hessian");
    if (v && !s->stages[MPQ_JOB_STAGE_HESSIAN]) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: hessian: given, but metrics does not list \"hessian\"", src);
        goto done;
    }
    if (s->stages[MPQ_JOB_STAGE_HESSIAN] && (st = parse_hessian(src, v, s, err)) != MPQ_OK) goto done;
    v = cJSON_GetObjectItemCaseSensitive(root, "noise");
    if (v && !s->stages[MPQ_JOB_STAGE_NOISE]) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: noise: given, but metrics does not list \"noise_sensitivity\"",
                         src);
        goto done;
    }
    if (s->stages[MPQ_JOB_STAGE_NOISE] && (st = parse_noise(src, v, s, err)) != MPQ_OK) goto done;
    v = cJSON_GetObjectItemCaseSensitive(root, "adaptive");
    if (v && !s->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY]) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: adaptive: given, but metrics does not list \"layer_sensitivity\"",
                         src);
        goto done;
    }
    if (v && (st = parse_adaptive(src, v, s, err)) != MPQ_OK) goto done;
    if ((s->stages[MPQ_JOB_STAGE_WEIGHT_ERROR] || s->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY] ||
         s->stages[MPQ_JOB_STAGE_FISHER]) &&
        s->n_candidates == 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: candidates: missing, and metrics %s need weight candidates", src,
                         s->stages[MPQ_JOB_STAGE_WEIGHT_ERROR]        ? "weight_error"
                         : s->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY] ? "layer_sensitivity"
                                                                      : "fisher");
        goto done;
    }
    if (s->stages[MPQ_JOB_STAGE_KV_SENSITIVITY] && !s->has_kv) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv: missing, and metric kv_sensitivity needs KV pairs", src);
        goto done;
    }
    if (!(s->canonical_json = canonical(s))) goto oom;
    mpq_sha256(s->canonical_json, strlen(s->canonical_json), s->sha256);
    goto done;
oom:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", src);
done:
    cJSON_Delete(root);
    if (st != MPQ_OK) {
        mpq_job_spec_free(s);
        return st;
    }
    *out = s;
    return MPQ_OK;
}

mpq_status mpq_job_spec_parse(const char *json, const char *source, mpq_job_spec **out, mpq_err *err) {
    return spec_parse(json, source, false, out, err);
}

mpq_status mpq_job_spec_parse_stored(const char *json, const char *source, mpq_job_spec **out, mpq_err *err) {
    return spec_parse(json, source, true, out, err);
}

mpq_status mpq_job_spec_load(const char *path, mpq_job_spec **out, mpq_err *err) {
    if (!path || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_spec_load: NULL argument");
    *out = NULL;
    FILE *f = NULL;
    mpq_status st = mpq_file_fopen_regular(path, &f, err);
    if (st != MPQ_OK) return st;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            if (cap > ((size_t)16 << 20)) {
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: spec larger than 16 MiB", path);
                goto done;
            }
            size_t nc = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, nc);
            if (!nb) {
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        goto done;
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: NUL byte at offset %zu (not a JSON text)", path, strlen(buf));
        goto done;
    }
    st = mpq_job_spec_parse(buf, path, out, err);
done:
    free(buf);
    fclose(f);
    return st;
}

/* ---- units ------------------------------------------------------------------------------ */

mpq_status mpq_job_units(const mpq_job_spec *spec, const mpq_model *m, mpq_job_unit **out, int *n_out,
                         mpq_err *err) {
    if (!spec || !m || !out || !n_out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_units: NULL argument");
    *out = NULL;
    *n_out = 0;
    int nl = mpq_model_n_linear(m);
    int nb = mpq_model_get_config(m)->n_layers;
    size_t total = 0;
    if (spec->stages[MPQ_JOB_STAGE_WEIGHT_ERROR]) total += (size_t)nl;
    if (spec->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY]) total += (size_t)nl * (size_t)spec->n_candidates;
    const int nkvh = mpq_model_get_config(m)->n_kv_heads, hdim = mpq_model_get_config(m)->head_dim;
    const bool per_head = spec->stages[MPQ_JOB_STAGE_KV_SENSITIVITY] && spec->kv_per_head;
    if (per_head && (spec->kv_scheme.group_size > hdim || hdim % spec->kv_scheme.group_size != 0))
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: kv.per_head: kv.scheme.group_size %d does not divide head_dim %d, so a group would "
                           "straddle two KV heads (use a group_size dividing %d)",
                           spec->source, spec->kv_scheme.group_size, hdim, hdim);
    if (spec->stages[MPQ_JOB_STAGE_KV_SENSITIVITY]) total += (size_t)nb * (size_t)spec->n_kv_pairs;
    if (per_head) total += (size_t)nb * (size_t)nkvh * (size_t)spec->n_kv_pairs;
    if (spec->stages[MPQ_JOB_STAGE_HESSIAN]) total += (size_t)mpq_job_hessian_n_units(spec, m);
    if (spec->stages[MPQ_JOB_STAGE_NOISE]) total += (size_t)nl;
    if (spec->stages[MPQ_JOB_STAGE_FISHER]) total += (size_t)mpq_job_fisher_n_units(spec, m);
    if (total > (size_t)INT_MAX / 2) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %zu units", spec->source, total);
    mpq_job_unit *u = mpq_calloc(total ? total : 1, sizeof *u);
    if (!u) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for %zu units", spec->source, total);
    int k = 0;
    mpq_status st = MPQ_OK;
    for (int stage = 0; stage < MPQ_JOB_N_STAGES && st == MPQ_OK; stage++) {
        if (!spec->stages[stage]) continue;
        if (stage == MPQ_JOB_STAGE_HESSIAN) {
            int nh = mpq_job_hessian_n_units(spec, m);
            if (mpq_job_hessian_units(spec, m, u + k, nh) != MPQ_OK) st = MPQ_ERR_INVALID;
            k += nh;
            continue;
        }
        if (stage == MPQ_JOB_STAGE_FISHER) {
            int nf = mpq_job_fisher_n_units(spec, m);
            if (mpq_job_fisher_units(spec, m, u + k, nf) != MPQ_OK) st = MPQ_ERR_INVALID;
            k += nf;
            continue;
        }
        if (stage == MPQ_JOB_STAGE_KV_SENSITIVITY) {
            for (int b = 0; b < nb; b++)
                for (int p = 0; p < spec->n_kv_pairs; p++, k++) {
                    u[k] = (mpq_job_unit){.stage = (mpq_job_stage)stage, .linear_index = -1, .block = b, .option = p};
                    int w = snprintf(u[k].key, sizeof u[k].key, "blk.%d.kv/%s", b, spec->kv_pairs[p]);
                    if (w < 0 || (size_t)w >= sizeof u[k].key) st = MPQ_ERR_INVALID;
                }
            /* per-head units after the per-block ones: block, head, pair */
            for (int b = 0; per_head && b < nb; b++)
                for (int h = 0; h < nkvh; h++)
                    for (int p = 0; p < spec->n_kv_pairs; p++, k++) {
                        u[k] = (mpq_job_unit){.stage = (mpq_job_stage)stage, .linear_index = -1, .block = b,
                                              .option = p, .kv_head_unit = true, .kv_head = h};
                        int w = snprintf(u[k].key, sizeof u[k].key, "blk.%d.kv/%s@h%d", b, spec->kv_pairs[p], h);
                        if (w < 0 || (size_t)w >= sizeof u[k].key) st = MPQ_ERR_INVALID;
                    }
            continue;
        }
        const bool per_layer = stage == MPQ_JOB_STAGE_WEIGHT_ERROR || stage == MPQ_JOB_STAGE_NOISE;
        int nopt = per_layer ? 1 : spec->n_candidates;
        for (int i = 0; i < nl; i++) {
            const mpq_layer_info *li = mpq_model_linear(m, i);
            for (int c = 0; c < nopt; c++, k++) {
                u[k] = (mpq_job_unit){.stage = (mpq_job_stage)stage, .linear_index = i, .block = li->block,
                                      .option = per_layer ? -1 : c};
                int w = per_layer
                            ? snprintf(u[k].key, sizeof u[k].key, "%s", li->name)
                            : snprintf(u[k].key, sizeof u[k].key, "%s/%s", li->name, spec->candidates[c]);
                if (w < 0 || (size_t)w >= sizeof u[k].key) st = MPQ_ERR_INVALID;
            }
        }
    }
    if (st != MPQ_OK) {
        free(u);
        return mpq_err_set(err, st, "%s: a unit key is longer than %d characters", spec->source, MPQ_DB_NAME_MAX - 1);
    }
    *out = u;
    *n_out = k;
    return MPQ_OK;
}
