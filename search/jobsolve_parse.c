/*
 * jobsolve_parse.c - the text a stored-job solve is given (mpq_jobsolve.h): resource and
 * budget kinds, budgets as exact decimals ("avg-bits=3.5" is 35/10, so the bits budget
 * floor(P * 35 / 10) is exact), ties, and metric expressions ("kl+0.5*act_err"). Every
 * number is range-checked before any arithmetic on it (no overflow, no NaN or infinity).
 */
#include "jobsolve_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const jobsolve_resource_names[MPQ_N_RESOURCE_KINDS] = {"bits", "bytes", "bops", "latency"};
const char *const jobsolve_budget_names[5] = {"avg-bits", "bits", "bytes", "bops", "latency"};

#define AVG_BITS_MAX 64                     /* bits per weight (f64 would be 64) */
#define INTEGRAL_BUDGET_MAX (INT64_C(1) << 53) /* costs above this are not exact doubles */
#define FRAC_DIGITS_MAX 6

const char *mpq_resource_kind_name(mpq_resource_kind k) {
    return ((int)k >= 0 && (int)k < MPQ_N_RESOURCE_KINDS) ? jobsolve_resource_names[k] : "?";
}

mpq_status mpq_resource_kind_parse(const char *s, mpq_resource_kind *out, mpq_err *err) {
    for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++)
        if (s && strcmp(s, jobsolve_resource_names[k]) == 0) {
            *out = (mpq_resource_kind)k;
            return MPQ_OK;
        }
    return mpq_err_set(err, MPQ_ERR_INVALID, "unknown resource '%s' (bits, bytes, bops, latency)", s ? s : "");
}

mpq_resource_kind jobsolve_budget_resource(mpq_budget_kind k) {
    switch (k) {
    case MPQ_BUDGET_AVG_BITS:
    case MPQ_BUDGET_BITS: return MPQ_RESOURCE_BITS;
    case MPQ_BUDGET_BYTES: return MPQ_RESOURCE_BYTES;
    case MPQ_BUDGET_BOPS: return MPQ_RESOURCE_BOPS;
    default: return MPQ_RESOURCE_LATENCY;
    }
}

/* An exact decimal "digits[.digits]" (fraction only for avg-bits) into num / den, with the
 * integer part at most int_max; every step checked before it could overflow. */
static mpq_status parse_exact(const char *text, const char *v, bool avg_bits, mpq_budget *out, mpq_err *err) {
    int64_t num = 0, den = 1, int_max = avg_bits ? AVG_BITS_MAX : INTEGRAL_BUDGET_MAX;
    const char *p = v;
    int n_int = 0, n_frac = 0;
    for (; isdigit((unsigned char)*p); p++, n_int++) {
        int d = *p - '0';
        if (num > (int_max - d) / 10) {
            if (avg_bits) return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': more than %d bits per weight", text, AVG_BITS_MAX);
            return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': value too large (at most 2^53 = %lld)", text,
                               (long long)INTEGRAL_BUDGET_MAX);
        }
        num = num * 10 + d;
    }
    if (*p == '.' && avg_bits) {
        for (p++; isdigit((unsigned char)*p); p++) { /* num <= 64 * 10^6 + 999999: no overflow */
            if (++n_frac > FRAC_DIGITS_MAX)
                return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': at most %d decimals", text, FRAC_DIGITS_MAX);
            num = num * 10 + (*p - '0');
            den *= 10;
        }
    }
    if (*p || n_int + n_frac == 0 || num <= 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': expected a positive %s", text,
                           avg_bits ? "decimal number" : "integer");
    if (avg_bits && num > AVG_BITS_MAX * den)
        return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': more than %d bits per weight", text, AVG_BITS_MAX);
    out->num = num;
    out->den = den;
    out->value = (double)num / (double)den;
    return MPQ_OK;
}

mpq_status mpq_budget_parse(const char *text, mpq_budget *out, mpq_err *err) {
    memset(out, 0, sizeof *out);
    const char *eq = text ? strchr(text, '=') : NULL;
    if (!eq)
        return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': expected KIND=VALUE (avg-bits=3.5, bytes=N, ...)",
                           text ? text : "");
    size_t kl = (size_t)(eq - text);
    int kind = -1;
    for (int k = 0; k < 5; k++)
        if (strlen(jobsolve_budget_names[k]) == kl && strncmp(text, jobsolve_budget_names[k], kl) == 0) kind = k;
    if (kind < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': unknown kind (avg-bits, bits, bytes, bops, latency)",
                           text);
    const char *v = eq + 1;
    out->kind = (mpq_budget_kind)kind;
    mpq_status st = MPQ_OK;
    if (kind == MPQ_BUDGET_LATENCY) {
        char *end = NULL;
        errno = 0;
        double d = isdigit((unsigned char)*v) || *v == '.' ? strtod(v, &end) : NAN;
        if (!end || errno || *end || !isfinite(d) || d <= 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': expected a positive finite number", text);
        out->value = d;
        out->num = 0;
        out->den = 1;
    } else if ((st = parse_exact(text, v, kind == MPQ_BUDGET_AVG_BITS, out, err)) != MPQ_OK) {
        return st;
    }
    snprintf(out->text, sizeof out->text, "%s=%.50s", jobsolve_budget_names[kind], v);
    return MPQ_OK;
}

mpq_status mpq_ties_parse(const char *text, unsigned *out, mpq_err *err) {
    *out = 0;
    if (!text) return MPQ_OK;
    char buf[128];
    if (strlen(text) >= sizeof buf) return mpq_err_set(err, MPQ_ERR_INVALID, "ties '%.40s...': too long", text);
    strcpy(buf, text);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "none") == 0) continue;
        if (strcmp(t, "qkv") == 0) *out |= MPQ_TIES_QKV;
        else if (strcmp(t, "gate_up") == 0) *out |= MPQ_TIES_GATE_UP;
        else return mpq_err_set(err, MPQ_ERR_INVALID, "ties '%s': unknown '%s' (none, qkv, gate_up)", text, t);
    }
    return MPQ_OK;
}

#define WEIGHT_MAX 1e12 /* a term weight beyond this only hides the other terms */

/* Length of the metric name at p (letters, digits, '_'). */
static size_t name_len(const char *p) {
    size_t n = 0;
    while (isalnum((unsigned char)p[n]) || p[n] == '_') n++;
    return n;
}

mpq_status jobsolve_expr_parse(const char *s, jobsolve_expr *e, mpq_err *err) {
    memset(e, 0, sizeof *e);
    const char *p = s;
    if (!s || !*s) return mpq_err_set(err, MPQ_ERR_INVALID, "metric expression is empty");
    snprintf(e->text, sizeof e->text, "%s", s);
    for (;;) {
        while (*p == ' ') p++;
        if (e->n == JOBSOLVE_MAX_TERMS)
            return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': more than %d terms", s, JOBSOLVE_MAX_TERMS);
        double w = 1.0;
        if (isdigit((unsigned char)*p) || *p == '.') {
            char *end = NULL;
            errno = 0;
            w = strtod(p, &end);
            bool range = errno == 0 && isfinite(w) && w <= WEIGHT_MAX;
            while (*end == ' ') end++;
            if (end == p || *end != '*')
                return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': expected WEIGHT*NAME at offset %d", s,
                                   (int)(p - s));
            if (!range)
                return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': weight at offset %d out of range (0..%g)", s,
                                   (int)(p - s), WEIGHT_MAX);
            p = end + 1;
            while (*p == ' ') p++;
        }
        size_t n = name_len(p);
        if (n == 0 || n >= MPQ_DB_NAME_MAX || isdigit((unsigned char)*p))
            return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': expected a metric name at offset %d", s,
                               (int)(p - s));
        memcpy(e->name[e->n], p, n);
        e->w[e->n] = w;
        p += n;
        while (*p == ' ') p++;
        if (*p == '*') { /* a product: PER_LAYER*PER_CANDIDATE, in either order */
            p++;
            while (*p == ' ') p++;
            n = name_len(p);
            if (n == 0 || n >= MPQ_DB_NAME_MAX || isdigit((unsigned char)*p))
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "metric '%s': expected a metric name after '*' at offset %d (a weight goes first: "
                                   "W*A*B)",
                                   s, (int)(p - s));
            memcpy(e->name2[e->n], p, n);
            p += n;
            while (*p == ' ') p++;
            if (*p == '*')
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "metric '%s': at most two metrics in a product (offset %d): a per-layer metric times "
                                   "a per-candidate one",
                                   s, (int)(p - s));
        }
        e->n++;
        if (*p == '\0') break;
        if (*p != '+')
            return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': unexpected '%c' at offset %d", s, *p, (int)(p - s));
        p++;
    }
    return MPQ_OK;
}

/* How metric m is stored in the job: 0 no rows, 1 only with candidate "", 2 only with
 * candidates, 3 both. */
static mpq_status metric_kind(mpq_job *job, const char *m, int *kind, mpq_err *err) {
    char **c = NULL;
    int n = 0;
    mpq_status st = mpq_db_metric_candidates(mpq_job_db(job), mpq_job_get_row(job)->id, m, &c, &n, err);
    if (st != MPQ_OK) return st;
    *kind = 0;
    for (int i = 0; i < n; i++) *kind |= c[i][0] ? 2 : 1;
    mpq_db_strings_free(c, n);
    return MPQ_OK;
}

mpq_status jobsolve_expr_resolve(mpq_job *job, jobsolve_expr *e, mpq_err *err) {
    const char *jn = mpq_job_get_row(job)->name;
    for (int t = 0; t < e->n; t++) {
        if (!e->name2[t][0]) continue;
        int k[2];
        const char *nm[2] = {e->name[t], e->name2[t]};
        for (int f = 0; f < 2; f++) {
            mpq_status st = metric_kind(job, nm[f], &k[f], err);
            if (st != MPQ_OK) return st;
            if (k[f] == 0)
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "metric '%s': '%s' is not stored for job '%s' (noise_a is stored by the "
                                   "noise_sensitivity stage, weight_rel by weight_error)",
                                   e->text, nm[f], jn);
            if (k[f] == 3)
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "metric '%s': '%s' is stored both per layer and per candidate in job '%s'; cannot "
                                   "tell which factor is per layer",
                                   e->text, nm[f], jn);
        }
        if (k[0] == k[1])
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "metric '%s': '%s*%s' multiplies two %s metrics; a product needs one per-layer metric "
                               "(stored with candidate \"\", e.g. noise_a) and one per-candidate metric (e.g. "
                               "weight_rel)",
                               e->text, nm[0], nm[1], k[0] == 2 ? "per-candidate" : "per-layer");
        if (k[0] == 1) { /* per-layer factor first: swap so that name is per candidate */
            char tmp[MPQ_DB_NAME_MAX];
            memcpy(tmp, e->name[t], sizeof tmp);
            memcpy(e->name[t], e->name2[t], sizeof tmp);
            memcpy(e->name2[t], tmp, sizeof tmp);
        }
    }
    return MPQ_OK;
}
