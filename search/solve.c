/*
 * solve.c - solving a stored job (mpq_solve.h): the multiple-choice knapsack of HAWQ-V3 /
 * MixDQ built from per-(layer, candidate) metrics in the results database, ties between
 * layers that must share a format (Q-Palette fusion groups), exact budgets in integer bits,
 * the Gaussian reverse water-filling bound (Q-Palette; Cover & Thomas 10.3.3), the exact
 * Pareto frontier (HAWQ-V2's frontier, Nemhauser-Ullmann) with its knee, and the closed loop:
 * evaluation of stored configurations with the reference executor against the FP model.
 */
#include "mpq/mpq_solve.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_tokenizer.h"

struct mpq_solve_ctx {
    mpq_db *db;
    mpq_db_job job;
    mpq_job_spec *spec;
    mpq_db_layer *layers; /* linear layers only */
    int n_layers;
    /* loaded on demand */
    mpq_model *model;
    mpq_data *edata;
    mpq_data_seqs *seqs;
    mpq_exec *ex;
    mpq_exec_ref *ref;
    int64_t eval_dataset_id;
};

/* ------------------------------------------------------------------ names and parsing ---- */

static const char *resource_names[MPQ_N_RESOURCE_KINDS] = {"bits", "bytes", "bops", "latency"};
static const char *budget_names[] = {"avg-bits", "bits", "bytes", "bops", "latency"};

const char *mpq_resource_kind_name(mpq_resource_kind k) {
    return ((int)k >= 0 && (int)k < MPQ_N_RESOURCE_KINDS) ? resource_names[k] : "?";
}

mpq_status mpq_resource_kind_parse(const char *s, mpq_resource_kind *out, mpq_err *err) {
    for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++)
        if (s && strcmp(s, resource_names[k]) == 0) {
            *out = (mpq_resource_kind)k;
            return MPQ_OK;
        }
    return mpq_err_set(err, MPQ_ERR_INVALID, "unknown resource '%s' (bits, bytes, bops, latency)", s ? s : "");
}

static mpq_resource_kind budget_resource(mpq_budget_kind k) {
    switch (k) {
    case MPQ_BUDGET_AVG_BITS:
    case MPQ_BUDGET_BITS: return MPQ_RESOURCE_BITS;
    case MPQ_BUDGET_BYTES: return MPQ_RESOURCE_BYTES;
    case MPQ_BUDGET_BOPS: return MPQ_RESOURCE_BOPS;
    default: return MPQ_RESOURCE_LATENCY;
    }
}

mpq_status mpq_budget_parse(const char *text, mpq_budget *out, mpq_err *err) {
    memset(out, 0, sizeof *out);
    const char *eq = text ? strchr(text, '=') : NULL;
    if (!eq) return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': expected KIND=VALUE (avg-bits=3.5, bytes=N, ...)", text ? text : "");
    size_t kl = (size_t)(eq - text);
    int kind = -1;
    for (int k = 0; k < 5; k++)
        if (strlen(budget_names[k]) == kl && strncmp(text, budget_names[k], kl) == 0) kind = k;
    if (kind < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': unknown kind (avg-bits, bits, bytes, bops, latency)", text);
    const char *v = eq + 1;
    out->kind = (mpq_budget_kind)kind;
    if (kind == MPQ_BUDGET_LATENCY) {
        char *end = NULL;
        errno = 0;
        double d = strtod(v, &end);
        if (!*v || errno || *end || !isfinite(d) || d <= 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': expected a positive number", text);
        out->value = d;
        out->num = 0;
        out->den = 1;
    } else {
        /* exact decimal: digits [. up to 6 digits] */
        int64_t num = 0, den = 1;
        const char *p = v;
        int n_int = 0, n_frac = 0;
        while (isdigit((unsigned char)*p)) {
            if (num > (INT64_MAX - 9) / 10) return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': value too large", text);
            num = num * 10 + (*p - '0');
            p++;
            n_int++;
        }
        if (*p == '.' && kind == MPQ_BUDGET_AVG_BITS) {
            p++;
            while (isdigit((unsigned char)*p)) {
                if (++n_frac > 6) return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': at most 6 decimals", text);
                num = num * 10 + (*p - '0');
                den *= 10;
                p++;
            }
        }
        if (*p || n_int + n_frac == 0 || num <= 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': expected a positive %s", text,
                               kind == MPQ_BUDGET_AVG_BITS ? "decimal number" : "integer");
        if (kind == MPQ_BUDGET_AVG_BITS && num > 64 * den)
            return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': more than 64 bits per weight", text);
        out->num = num;
        out->den = den;
        out->value = (double)num / (double)den;
    }
    snprintf(out->text, sizeof out->text, "%s=%s", budget_names[kind], v);
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

mpq_solve_job_opts mpq_solve_job_opts_default(void) {
    mpq_solve_job_opts o;
    memset(&o, 0, sizeof o);
    o.metric = "kl";
    o.smooth = true;
    o.act_bits = 16;
    o.solver = "auto";
    o.frontier_resource = MPQ_RESOURCE_BITS;
    return o;
}

/* Metric expression "[w*]name(+[w*]name)*". */
#define MAX_TERMS 8
typedef struct expr {
    int n;
    double w[MAX_TERMS];
    char name[MAX_TERMS][MPQ_DB_NAME_MAX];
} expr;

static mpq_status expr_parse(const char *s, expr *e, mpq_err *err) {
    memset(e, 0, sizeof *e);
    const char *p = s;
    if (!s || !*s) return mpq_err_set(err, MPQ_ERR_INVALID, "metric expression is empty");
    for (;;) {
        while (*p == ' ') p++;
        if (e->n == MAX_TERMS) return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': more than %d terms", s, MAX_TERMS);
        double w = 1.0;
        if (isdigit((unsigned char)*p) || *p == '.') {
            char *end = NULL;
            w = strtod(p, &end);
            while (*end == ' ') end++;
            if (end == p || *end != '*' || !isfinite(w))
                return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': expected WEIGHT*NAME at offset %d", s, (int)(p - s));
            p = end + 1;
            while (*p == ' ') p++;
        }
        size_t n = 0;
        while (isalnum((unsigned char)p[n]) || p[n] == '_') n++;
        if (n == 0 || n >= MPQ_DB_NAME_MAX)
            return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': expected a metric name at offset %d", s, (int)(p - s));
        memcpy(e->name[e->n], p, n);
        e->w[e->n] = w;
        e->n++;
        p += n;
        while (*p == ' ') p++;
        if (*p == '\0') break;
        if (*p != '+') return mpq_err_set(err, MPQ_ERR_INVALID, "metric '%s': unexpected '%c' at offset %d", s, *p, (int)(p - s));
        p++;
    }
    return MPQ_OK;
}

/* ------------------------------------------------------------------------------ context ---- */

mpq_status mpq_solve_ctx_open(mpq_db *db, const char *job, mpq_solve_ctx **out, mpq_err *err) {
    *out = NULL;
    mpq_status st;
    char *spec_text = NULL;
    mpq_db_layer *all = NULL;
    int n_all = 0;
    mpq_solve_ctx *c = mpq_calloc(1, sizeof *c);
    if (!c) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    c->db = db;
    if ((st = mpq_db_job_find(db, job, &c->job, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_job_spec(db, c->job.id, &spec_text, err)) != MPQ_OK) goto done;
    if ((st = mpq_job_spec_parse(spec_text, c->job.name, &c->spec, err)) != MPQ_OK) {
        mpq_err_prefix(err, "job '%s': stored spec", c->job.name);
        goto done;
    }
    if ((st = mpq_db_layers_fetch(db, c->job.model_id, &all, &n_all, err)) != MPQ_OK) goto done;
    c->layers = mpq_calloc(n_all > 0 ? (size_t)n_all : 1, sizeof *c->layers);
    if (!c->layers) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_all; i++)
        if (strcmp(all[i].kind, "kv_cache") != 0 && all[i].n_params > 0) c->layers[c->n_layers++] = all[i];
    if (c->n_layers == 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': the model has no linear layers in the database", c->job.name);
        goto done;
    }
done:
    free(all);
    free(spec_text);
    if (st != MPQ_OK) mpq_solve_ctx_free(c);
    else *out = c;
    return st;
}

void mpq_solve_ctx_free(mpq_solve_ctx *ctx) {
    if (!ctx) return;
    mpq_exec_ref_free(ctx->ref);
    mpq_exec_free(ctx->ex);
    mpq_data_seqs_free(ctx->seqs);
    mpq_data_free(ctx->edata);
    mpq_model_free(ctx->model);
    free(ctx->layers);
    mpq_job_spec_free(ctx->spec);
    free(ctx);
}

const mpq_db_job *mpq_solve_ctx_job(const mpq_solve_ctx *ctx) { return &ctx->job; }
int mpq_solve_ctx_n_candidates(const mpq_solve_ctx *ctx) { return ctx->spec->n_candidates; }
const char *mpq_solve_ctx_candidate(const mpq_solve_ctx *ctx, int i) {
    return (i >= 0 && i < ctx->spec->n_candidates) ? ctx->spec->candidates[i] : NULL;
}

static mpq_status ctx_model(mpq_solve_ctx *c, mpq_err *err) {
    if (c->model) return MPQ_OK;
    mpq_status st = mpq_model_load(c->spec->model, &c->model, err);
    if (st != MPQ_OK) return st;
    if (mpq_model_n_linear(c->model) != c->n_layers) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': model %s has %d linear layers, the database %d", c->job.name,
                         c->spec->model, mpq_model_n_linear(c->model), c->n_layers);
        mpq_model_free(c->model);
        c->model = NULL;
    }
    return st;
}

/* ------------------------------------------------------------------------------ problem ---- */

void mpq_solve_problem_free(mpq_solve_problem *p) {
    if (!p) return;
    mpq_problem_free(p->problem);
    free(p->layers);
    free(p->group_of);
    free(p->options);
    free(p->layer_loss);
    free(p->layer_bits);
    free(p);
}

static int uf_find(int *par, int x) {
    while (par[x] != x) x = par[x] = par[par[x]];
    return x;
}
static void uf_join(int *par, int a, int b) {
    a = uf_find(par, a);
    b = uf_find(par, b);
    if (a < b) par[b] = a;
    else if (b < a) par[a] = b;
}

static int option_index(const mpq_solve_problem *p, const char *name) {
    for (int o = 0; o < p->n_options; o++)
        if (strcmp(p->options[o], name) == 0) return o;
    return -1;
}

/* Latency of (candidate, layer) from the table: name, else kind, else "*". */
static mpq_status latency_of(const cJSON *tab, const char *cand, const mpq_db_layer *l, double *out, mpq_err *err) {
    const cJSON *row = cJSON_GetObjectItemCaseSensitive(tab, cand);
    if (!cJSON_IsObject(row))
        return mpq_err_set(err, MPQ_ERR_INVALID, "latency table: no entry for candidate '%s'", cand);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, l->name);
    if (!v) v = cJSON_GetObjectItemCaseSensitive(row, l->kind);
    if (!v) v = cJSON_GetObjectItemCaseSensitive(row, "*");
    if (!v) return mpq_err_set(err, MPQ_ERR_INVALID, "latency table: %s: no entry for layer %s (nor kind %s, nor \"*\")",
                               cand, l->name, l->kind);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "latency table: %s: %s: expected a non-negative number", cand, l->name);
    *out = v->valuedouble;
    return MPQ_OK;
}

/* Exact stored bits of a (rows, cols) layer under c; -1 on overflow. */
static int64_t layer_bits_of(const mpq_candidate *c, int64_t rows, int64_t cols) {
    double rb = mpq_candidate_bits(c, cols) * (double)cols; /* an integer: row bits */
    if (!(rb >= 0) || rb > 9007199254740992.0) return -1;
    int64_t r = (int64_t)llround(rb);
    if (rows > 0 && r > INT64_MAX / rows) return -1;
    return r * rows;
}

/* Applies "glob=cand[,cand]" entries: returns matched count via callback style. */
static mpq_status split_assign(const char *spec, const char *what, char *glob, size_t gn, const char **rhs, mpq_err *err) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s '%s': expected LAYER_GLOB=CANDIDATE%s", what, spec,
                           strcmp(what, "--allow") == 0 ? "[,CANDIDATE...]" : "");
    size_t n = (size_t)(eq - spec);
    if (n >= gn) return mpq_err_set(err, MPQ_ERR_INVALID, "%s '%s': layer pattern too long", what, spec);
    memcpy(glob, spec, n);
    glob[n] = '\0';
    *rhs = eq + 1;
    return MPQ_OK;
}

mpq_status mpq_solve_problem_build(mpq_solve_ctx *ctx, const mpq_solve_job_opts *opts, mpq_solve_problem **out,
                                   mpq_err *err) {
    *out = NULL;
    mpq_status st = MPQ_OK;
    const char *jn = ctx->job.name;
    int L = ctx->n_layers;
    int *par = NULL, *pin = NULL, *item_of_root = NULL;
    unsigned char *allowed = NULL;
    double *vals = NULL, *rcost = NULL;
    cJSON *lat = NULL;
    int64_t *layer_ids = NULL;
    mpq_solve_problem *p = mpq_calloc(1, sizeof *p);
    expr e;
    if (!p) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if ((st = expr_parse(opts->metric ? opts->metric : "kl", &e, err)) != MPQ_OK) goto done;
    snprintf(p->metric, sizeof p->metric, "%s", opts->metric ? opts->metric : "kl");

    /* options */
    int n_opt = ctx->spec->n_candidates + (opts->include_f16 ? 1 : 0);
    if (n_opt > 255) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': %d candidates (at most 255)", jn, n_opt);
        goto done;
    }
    p->n_layers = L;
    p->layers = mpq_calloc((size_t)L, sizeof *p->layers);
    p->group_of = mpq_calloc((size_t)L, sizeof *p->group_of);
    p->options = mpq_calloc((size_t)n_opt, sizeof *p->options);
    p->layer_loss = mpq_calloc((size_t)L * (size_t)n_opt, sizeof *p->layer_loss);
    p->layer_bits = mpq_calloc((size_t)L * (size_t)n_opt, sizeof *p->layer_bits);
    par = mpq_calloc((size_t)L, sizeof *par);
    pin = mpq_calloc((size_t)L, sizeof *pin);
    item_of_root = mpq_calloc((size_t)L, sizeof *item_of_root);
    allowed = mpq_calloc((size_t)L * (size_t)n_opt, 1);
    vals = mpq_calloc((size_t)L, sizeof *vals);
    rcost = mpq_calloc((size_t)MPQ_N_RESOURCE_KINDS * (size_t)L * (size_t)n_opt, sizeof *rcost);
    layer_ids = mpq_calloc((size_t)L, sizeof *layer_ids);
    if (!p->layers || !p->group_of || !p->options || !p->layer_loss || !p->layer_bits || !par || !pin || !item_of_root ||
        !allowed || !vals || !rcost || !layer_ids) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(p->layers, ctx->layers, (size_t)L * sizeof *p->layers);
    p->n_options = n_opt;
    for (int o = 0; o < ctx->spec->n_candidates; o++) snprintf(p->options[o], MPQ_DB_SHORT_MAX, "%s", ctx->spec->candidates[o]);
    if (opts->include_f16) snprintf(p->options[n_opt - 1], MPQ_DB_SHORT_MAX, "f16");
    for (int o = 0; o + 1 < n_opt; o++)
        if (opts->include_f16 && strcmp(p->options[o], "f16") == 0) n_opt = p->n_options = n_opt - 1; /* already a candidate */
    for (int l = 0; l < L; l++) {
        layer_ids[l] = p->layers[l].id;
        par[l] = l;
        pin[l] = -1;
        p->total_params += p->layers[l].n_params;
    }
    memset(allowed, 1, (size_t)L * (size_t)n_opt);

    /* resources: bits always first, then those budgets / the frontier need */
    bool need[MPQ_N_RESOURCE_KINDS] = {true, false, false, false};
    for (int b = 0; b < opts->n_budgets; b++) need[budget_resource(opts->budgets[b].kind)] = true;
    need[opts->frontier_resource] = true;
    int res_index[MPQ_N_RESOURCE_KINDS];
    for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) {
        res_index[k] = -1;
        if (need[k]) {
            res_index[k] = p->n_resources;
            p->resource[p->n_resources++] = (mpq_resource_kind)k;
        }
    }
    if (need[MPQ_RESOURCE_LATENCY]) {
        if (!opts->latency_json) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "a latency budget or frontier needs a latency table (--latency-table)");
            goto done;
        }
        lat = cJSON_Parse(opts->latency_json);
        if (!cJSON_IsObject(lat)) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "latency table: expected a JSON object {candidate: {layer or kind: us}}");
            goto done;
        }
    }

    /* per-layer losses and costs */
    for (int o = 0; o < n_opt; o++) {
        mpq_candidate cand;
        if ((st = mpq_candidate_parse(p->options[o], &cand, err)) != MPQ_OK) goto done;
        for (int l = 0; l < L; l++) p->layer_loss[(size_t)l * (size_t)n_opt + (size_t)o] = 0.0;
        for (int t = 0; t < e.n; t++) {
            int found = 0;
            if ((st = mpq_db_metric_fetch(ctx->db, ctx->job.id, e.name[t], p->options[o], L, layer_ids, vals, NULL, &found,
                                          err)) != MPQ_OK)
                goto done;
            for (int l = 0; l < L; l++) p->layer_loss[(size_t)l * (size_t)n_opt + (size_t)o] += e.w[t] * vals[l];
        }
        for (int l = 0; l < L; l++) {
            const mpq_db_layer *ly = &p->layers[l];
            size_t lo = (size_t)l * (size_t)n_opt + (size_t)o;
            int64_t bits = layer_bits_of(&cand, ly->rows, ly->cols);
            int64_t bytes = mpq_candidate_bytes(&cand, ly->rows, ly->cols);
            if (bits < 0 || bytes < 0 || bits > ((int64_t)1 << 53)) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': layer %s: size under %s overflows", jn, ly->name, p->options[o]);
                goto done;
            }
            p->layer_bits[lo] = bits;
            double *rc = rcost + (size_t)L * (size_t)n_opt * 0;
            rc[lo] = (double)bits;
            rcost[(size_t)L * (size_t)n_opt * MPQ_RESOURCE_BYTES + lo] = (double)bytes;
            rcost[(size_t)L * (size_t)n_opt * MPQ_RESOURCE_BOPS + lo] =
                (double)ly->n_params * (double)cand.bits * (double)(opts->act_bits > 0 ? opts->act_bits : 16);
            if (lat) {
                double us = 0;
                if ((st = latency_of(lat, p->options[o], ly, &us, err)) != MPQ_OK) goto done;
                rcost[(size_t)L * (size_t)n_opt * MPQ_RESOURCE_LATENCY + lo] = us;
            }
        }
    }

    /* ties and user groups */
    for (int l = 0; l < L; l++)
        for (int m = l + 1; m < L; m++) {
            if (p->layers[l].block != p->layers[m].block) continue;
            const char *a = p->layers[l].kind, *b = p->layers[m].kind;
            bool qa = !strcmp(a, "attn_q") || !strcmp(a, "attn_k") || !strcmp(a, "attn_v");
            bool qb = !strcmp(b, "attn_q") || !strcmp(b, "attn_k") || !strcmp(b, "attn_v");
            bool ga = !strcmp(a, "ffn_gate") || !strcmp(a, "ffn_up");
            bool gb = !strcmp(b, "ffn_gate") || !strcmp(b, "ffn_up");
            if (((opts->ties & MPQ_TIES_QKV) && qa && qb) || ((opts->ties & MPQ_TIES_GATE_UP) && ga && gb))
                uf_join(par, l, m);
        }
    for (int g = 0; g < opts->n_groups; g++) {
        char buf[1024];
        if (strlen(opts->groups[g]) >= sizeof buf) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "group %d: too long", g + 1);
            goto done;
        }
        strcpy(buf, opts->groups[g]);
        int first = -1;
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int hits = 0;
            for (int l = 0; l < L; l++)
                if (fnmatch(t, p->layers[l].name, 0) == 0 || strcmp(t, p->layers[l].hf_name) == 0) {
                    hits++;
                    if (first < 0) first = l;
                    else uf_join(par, first, l);
                }
            if (hits == 0) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "group '%s': '%s' matches no layer of job '%s'", opts->groups[g], t, jn);
                goto done;
            }
        }
    }

    /* allowed sets */
    for (int a = 0; a < opts->n_allows; a++) {
        char glob[256];
        const char *rhs;
        if ((st = split_assign(opts->allows[a], "--allow", glob, sizeof glob, &rhs, err)) != MPQ_OK) goto done;
        unsigned char mask[256] = {0};
        char buf[512];
        snprintf(buf, sizeof buf, "%s", rhs);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            mpq_candidate c;
            int o = -1;
            if (mpq_candidate_parse(t, &c, NULL) == MPQ_OK) o = option_index(p, c.name);
            if (o < 0) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "--allow '%s': '%s' is not a candidate of job '%s'", opts->allows[a], t, jn);
                goto done;
            }
            mask[o] = 1;
        }
        int hits = 0;
        for (int l = 0; l < L; l++)
            if (fnmatch(glob, p->layers[l].name, 0) == 0) {
                hits++;
                for (int o = 0; o < n_opt; o++) allowed[(size_t)l * (size_t)n_opt + (size_t)o] &= mask[o];
            }
        if (!hits) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "--allow '%s': '%s' matches no layer of job '%s'", opts->allows[a], glob, jn);
            goto done;
        }
    }
    /* pins */
    for (int a = 0; a < opts->n_pins; a++) {
        char glob[256];
        const char *rhs;
        if ((st = split_assign(opts->pins[a], "--pin", glob, sizeof glob, &rhs, err)) != MPQ_OK) goto done;
        mpq_candidate c;
        int o = -1;
        if (mpq_candidate_parse(rhs, &c, NULL) == MPQ_OK) o = option_index(p, c.name);
        if (o < 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "--pin '%s': '%s' is not a candidate of job '%s'", opts->pins[a], rhs, jn);
            goto done;
        }
        int hits = 0;
        for (int l = 0; l < L; l++)
            if (fnmatch(glob, p->layers[l].name, 0) == 0) {
                hits++;
                pin[l] = o;
            }
        if (!hits) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "--pin '%s': '%s' matches no layer of job '%s'", opts->pins[a], glob, jn);
            goto done;
        }
    }

    /* items = groups, in order of their first layer */
    int n_items = 0;
    for (int l = 0; l < L; l++) {
        int r = uf_find(par, l);
        if (r == l) item_of_root[l] = n_items++;
        p->group_of[l] = item_of_root[r];
    }
    if ((st = mpq_problem_create(n_items, n_opt, p->n_resources, &p->problem, err)) != MPQ_OK) goto done;
    for (int o = 0; o < n_opt; o++)
        if ((st = mpq_problem_set_option_name(p->problem, o, p->options[o], err)) != MPQ_OK) goto done;
    for (int i = 0; i < n_items; i++) {
        char name[128] = "";
        int members = 0, first = -1, ipin = -1;
        double loss[256], cost[MPQ_N_RESOURCE_KINDS][256];
        unsigned char ok[256];
        for (int o = 0; o < n_opt; o++) {
            loss[o] = 0;
            ok[o] = 1;
            for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) cost[k][o] = 0;
        }
        for (int l = 0; l < L; l++) {
            if (p->group_of[l] != i) continue;
            if (first < 0) first = l;
            members++;
            if (pin[l] >= 0) {
                if (ipin >= 0 && ipin != pin[l]) {
                    st = mpq_err_set(err, MPQ_ERR_INVALID, "pins conflict: %s is tied to %s but pinned to %s, not %s",
                                     p->layers[l].name, p->layers[first].name, p->options[pin[l]], p->options[ipin]);
                    goto done;
                }
                ipin = pin[l];
            }
            for (int o = 0; o < n_opt; o++) {
                size_t lo = (size_t)l * (size_t)n_opt + (size_t)o;
                ok[o] &= allowed[lo];
                loss[o] += p->layer_loss[lo];
                for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) cost[k][o] += rcost[(size_t)L * (size_t)n_opt * (size_t)k + lo];
            }
        }
        if (members == 1) snprintf(name, sizeof name, "%s", p->layers[first].name);
        else snprintf(name, sizeof name, "%.50s(+%d tied)", p->layers[first].name, members - 1);
        if ((st = mpq_problem_set_item_name(p->problem, i, name, err)) != MPQ_OK) goto done;
        int n_ok = 0;
        for (int o = 0; o < n_opt; o++) {
            if (ok[o] && !isfinite(loss[o])) {
                if (!opts->allow_missing || ipin == o) {
                    int bad = first;
                    for (int l = 0; l < L; l++)
                        if (p->group_of[l] == i && !isfinite(p->layer_loss[(size_t)l * (size_t)n_opt + (size_t)o])) {
                            bad = l;
                            break;
                        }
                    st = mpq_err_set(err, MPQ_ERR_INVALID,
                                     "job '%s': metric '%s' missing for layer %s, candidate %s (run the stage that "
                                     "stores it, or --allow-missing to drop such options)",
                                     jn, p->metric, p->layers[bad].name, p->options[o]);
                    goto done;
                }
                ok[o] = 0;
            }
            if ((st = mpq_problem_set_allowed(p->problem, i, o, ok[o], err)) != MPQ_OK) goto done;
            if (!ok[o]) continue;
            n_ok++;
            if ((st = mpq_problem_set_loss(p->problem, i, o, loss[o], err)) != MPQ_OK) goto done;
            for (int r = 0; r < p->n_resources; r++)
                if ((st = mpq_problem_set_cost(p->problem, r, i, o, cost[p->resource[r]][o], err)) != MPQ_OK) goto done;
        }
        if (n_ok == 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': layer group %s has no allowed candidate left", jn, name);
            goto done;
        }
        if (ipin >= 0) {
            if (!ok[ipin]) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "--pin: %s pinned to %s, which --allow excludes", name, p->options[ipin]);
                goto done;
            }
            if ((st = mpq_problem_pin(p->problem, i, ipin, err)) != MPQ_OK) goto done;
        }
    }

    /* budgets */
    bool seen[MPQ_N_RESOURCE_KINDS] = {false, false, false, false};
    for (int b = 0; b < opts->n_budgets; b++) {
        const mpq_budget *bg = &opts->budgets[b];
        mpq_resource_kind rk = budget_resource(bg->kind);
        if (seen[rk]) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': a %s budget is already given", bg->text, resource_names[rk]);
            goto done;
        }
        seen[rk] = true;
        double v;
        if (bg->kind == MPQ_BUDGET_AVG_BITS) {
            /* floor(total_params * num / den) exactly: (P/den)*num + ((P%den)*num)/den, num <= 64*10^6 */
            int64_t P = p->total_params, q = P / bg->den, rem = P % bg->den;
            if (q > INT64_MAX / bg->num) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': overflows", bg->text);
                goto done;
            }
            int64_t bits = q * bg->num + (rem * bg->num) / bg->den;
            v = (double)bits;
        } else {
            v = bg->kind == MPQ_BUDGET_LATENCY ? bg->value : (double)bg->num;
        }
        int r = res_index[rk];
        char rn[64];
        snprintf(rn, sizeof rn, "%.40s (%s)", bg->text, resource_names[rk]);
        if ((st = mpq_problem_set_budget(p->problem, r, v, err)) != MPQ_OK) goto done;
        if ((st = mpq_problem_set_resource_name(p->problem, r, rn, err)) != MPQ_OK) goto done;
        p->n_finite_budgets++;
    }
    for (int r = 0; r < p->n_resources; r++)
        if (!seen[p->resource[r]] && (st = mpq_problem_set_resource_name(p->problem, r, resource_names[p->resource[r]], err)) != MPQ_OK)
            goto done;
    if ((st = mpq_problem_validate(p->problem, err)) != MPQ_OK) goto done;
done:
    cJSON_Delete(lat);
    free(layer_ids);
    free(rcost);
    free(vals);
    free(allowed);
    free(item_of_root);
    free(pin);
    free(par);
    if (st != MPQ_OK) mpq_solve_problem_free(p);
    else *out = p;
    return st;
}

/* --------------------------------------------------------------------------- store ---- */

void mpq_solve_result_free(mpq_solve_result *r) {
    if (!r) return;
    free(r->choice);
    free(r->layer_loss);
    free(r->layer_bits);
    free(r->layer_params);
    free(r->options);
    free(r->config_json);
    free(r);
}

/* Water-filling bound on total weight sse at bits_budget (see header); NaN when unavailable. */
static double waterfill_bound(mpq_solve_ctx *ctx, const mpq_solve_problem *p, double bits_budget, const int *choice,
                              double *sse_choice, mpq_err *err) {
    int L = p->n_layers;
    double bound = NAN;
    *sse_choice = NAN;
    double *n = mpq_calloc((size_t)L, sizeof *n), *c = mpq_calloc((size_t)L, sizeof *c), *cnt = mpq_calloc((size_t)L, sizeof *cnt);
    double *v = mpq_calloc((size_t)L, sizeof *v), *chosen = mpq_calloc((size_t)L, sizeof *chosen);
    int64_t *ids = mpq_calloc((size_t)L, sizeof *ids);
    if (!n || !c || !cnt || !v || !chosen || !ids) goto done;
    for (int l = 0; l < L; l++) {
        ids[l] = p->layers[l].id;
        n[l] = (double)p->layers[l].n_params;
        chosen[l] = NAN;
    }
    for (int o = 0; o < p->n_options; o++) {
        mpq_candidate cand;
        if (mpq_candidate_parse(p->options[o], &cand, NULL) != MPQ_OK) goto done;
        if (mpq_db_metric_fetch(ctx->db, ctx->job.id, "weight_sse", p->options[o], L, ids, v, NULL, NULL, err) != MPQ_OK)
            goto done;
        for (int l = 0; l < L; l++) {
            if (choice && choice[l] == o) chosen[l] = v[l];
            if (!isfinite(v[l]) || cand.type == MPQ_QTYPE_F32) continue;
            double b = mpq_candidate_bits(&cand, p->layers[l].cols);
            c[l] += v[l] / n[l] * exp2(2.0 * b);
            cnt[l] += 1;
        }
    }
    double tot = 0;
    for (int l = 0; l < L; l++) {
        if (cnt[l] == 0) goto done;
        c[l] /= cnt[l];
        tot += chosen[l];
    }
    *sse_choice = tot;
    if (isfinite(bits_budget)) {
        double D = NAN;
        if (mpq_bound_waterfill(n, c, L, bits_budget, NULL, &D, NULL, NULL) == MPQ_OK) bound = D;
    }
done:
    free(ids);
    free(chosen);
    free(v);
    free(cnt);
    free(c);
    free(n);
    return bound;
}

static const char *status_name(mpq_solve_status s) {
    return s == MPQ_SOLVE_OPTIMAL ? "optimal" : s == MPQ_SOLVE_FEASIBLE ? "feasible" : "infeasible";
}

static bool add_num(cJSON *o, const char *k, double v) {
    return isfinite(v) ? cJSON_AddNumberToObject(o, k, v) != NULL : cJSON_AddNullToObject(o, k) != NULL;
}

static char *budgets_json_of(const mpq_solve_job_opts *opts) {
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    for (int i = 0; i < opts->n_budgets; i++)
        if (!cJSON_AddNumberToObject(b, budget_names[opts->budgets[i].kind], opts->budgets[i].value)) {
            cJSON_Delete(b);
            return NULL;
        }
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return s;
}

/* Stores choice s of p as solution `name`; *out gets the result. */
static mpq_status store_choice(mpq_solve_ctx *ctx, const mpq_solve_problem *p, const mpq_solve_job_opts *opts,
                               const mpq_solution *s, const char *solver, const char *name, double lp_bound,
                               mpq_solve_result **out, mpq_err *err) {
    *out = NULL;
    mpq_status st = MPQ_OK;
    int L = p->n_layers;
    mpq_config *cfg = NULL;
    char *cfg_text = NULL, *budgets = NULL;
    cJSON *root = NULL;
    mpq_db_assignment *asg = NULL;
    mpq_solve_result *r = mpq_calloc(1, sizeof *r);
    if (!r) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    r->choice = mpq_calloc((size_t)L, sizeof *r->choice);
    r->layer_loss = mpq_calloc((size_t)L, sizeof *r->layer_loss);
    r->layer_bits = mpq_calloc((size_t)L, sizeof *r->layer_bits);
    r->options = mpq_calloc((size_t)p->n_options, sizeof *r->options);
    r->layer_params = mpq_calloc((size_t)L, sizeof *r->layer_params);
    asg = mpq_calloc((size_t)L, sizeof *asg);
    budgets = budgets_json_of(opts);
    if (!r->choice || !r->layer_loss || !r->layer_bits || !r->layer_params || !r->options || !asg || !budgets) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(r->options, p->options, (size_t)p->n_options * sizeof *r->options);
    r->n_options = p->n_options;
    r->n_layers = L;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->solver, sizeof r->solver, "%s", solver);
    snprintf(r->engine, sizeof r->engine, "%s", s->solver);
    r->status = s->status;
    r->objective = s->total_loss;
    r->objective_raw = s->total_loss_raw;
    r->lp_bound = lp_bound;
    r->gap = s->gap;
    r->seconds = s->seconds;
    r->total_params = p->total_params;
    for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) r->cost[k] = NAN;
    for (int q = 0; q < p->n_resources; q++) r->cost[p->resource[q]] = s->total_cost[q];
    for (int l = 0; l < L; l++) {
        int o = s->choice[p->group_of[l]];
        r->choice[l] = o;
        r->layer_loss[l] = p->layer_loss[(size_t)l * (size_t)p->n_options + (size_t)o];
        r->layer_bits[l] = p->layer_bits[(size_t)l * (size_t)p->n_options + (size_t)o];
        r->layer_params[l] = p->layers[l].n_params;
        r->total_bits += r->layer_bits[l];
        asg[l].layer_id = p->layers[l].id;
        snprintf(asg[l].candidate, sizeof asg[l].candidate, "%s", p->options[o]);
    }
    r->avg_bits = (double)r->total_bits / (double)r->total_params;
    double bits_budget = INFINITY;
    for (int b = 0; b < opts->n_budgets; b++)
        if (budget_resource(opts->budgets[b].kind) == MPQ_RESOURCE_BITS) bits_budget = mpq_problem_budget(p->problem, 0);
        else if (opts->budgets[b].kind == MPQ_BUDGET_BYTES && !isfinite(bits_budget)) bits_budget = 8.0 * (double)opts->budgets[b].num;
    if (!isfinite(bits_budget) && opts->n_budgets == 0) bits_budget = (double)r->total_bits; /* frontier points: their own bits */
    r->waterfill_sse = waterfill_bound(ctx, p, bits_budget, r->choice, &r->weight_sse, err);

    /* config */
    if ((st = ctx_model(ctx, err)) != MPQ_OK) goto done;
    if ((st = mpq_config_uniform(ctx->model, "f32", NULL, &cfg, err)) != MPQ_OK) goto done;
    for (int l = 0; l < L; l++) {
        int mi = mpq_model_find_linear(ctx->model, p->layers[l].name);
        if (mi < 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': layer %s not in model %s", ctx->job.name, p->layers[l].name,
                             ctx->spec->model);
            goto done;
        }
        if ((st = mpq_config_set_layer(cfg, mi, p->options[r->choice[l]], err)) != MPQ_OK) goto done;
    }
    cfg_text = mpq_config_to_json(cfg, ctx->model);
    root = cfg_text ? cJSON_Parse(cfg_text) : NULL;
    cJSON *prov = root ? cJSON_AddObjectToObject(root, "mpq_solution") : NULL;
    cJSON *res = NULL, *as = NULL;
    bool ok = prov && cJSON_AddStringToObject(prov, "job", ctx->job.name) && cJSON_AddNumberToObject(prov, "job_id", (double)ctx->job.id) &&
              cJSON_AddStringToObject(prov, "solution", name) && cJSON_AddStringToObject(prov, "solver", solver) &&
              cJSON_AddStringToObject(prov, "engine", s->solver) && cJSON_AddStringToObject(prov, "metric", p->metric) &&
              cJSON_AddStringToObject(prov, "ties", (opts->ties & MPQ_TIES_QKV) ? ((opts->ties & MPQ_TIES_GATE_UP) ? "qkv,gate_up" : "qkv")
                                                   : ((opts->ties & MPQ_TIES_GATE_UP) ? "gate_up" : "none")) &&
              cJSON_AddBoolToObject(prov, "smooth", s->smoothed) && cJSON_AddStringToObject(prov, "status", status_name(s->status)) &&
              cJSON_AddItemToObject(prov, "budgets", cJSON_Parse(budgets)) && (res = cJSON_AddObjectToObject(prov, "budgets_resolved"));
    for (int q = 0; ok && q < p->n_resources; q++)
        if (isfinite(mpq_problem_budget(p->problem, q)))
            ok = add_num(res, resource_names[p->resource[q]], mpq_problem_budget(p->problem, q));
    ok = ok && add_num(prov, "predicted_loss", r->objective) && add_num(prov, "predicted_loss_raw", r->objective_raw) &&
         add_num(prov, "lp_bound", lp_bound) && add_num(prov, "gap", r->gap) && add_num(prov, "avg_bits", r->avg_bits) &&
         add_num(prov, "total_bits", (double)r->total_bits) && add_num(prov, "weight_sse", r->weight_sse) &&
         add_num(prov, "waterfill_bound_sse", r->waterfill_sse) && (as = cJSON_AddObjectToObject(prov, "assignments"));
    for (int l = 0; ok && l < L; l++) ok = cJSON_AddStringToObject(as, p->layers[l].name, p->options[r->choice[l]]) != NULL;
    if (!ok || !(r->config_json = cJSON_Print(root))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory building the config of solution %s", name);
        goto done;
    }
    mpq_db_solution sol;
    memset(&sol, 0, sizeof sol);
    sol.job_id = ctx->job.id;
    snprintf(sol.name, sizeof sol.name, "%s", name);
    snprintf(sol.solver, sizeof sol.solver, "%s", solver);
    snprintf(sol.status, sizeof sol.status, "%s", status_name(s->status));
    sol.metric_expr = (char *)p->metric;
    sol.budgets_json = budgets;
    sol.config_json = r->config_json;
    sol.objective = r->objective;
    sol.bound = lp_bound;
    sol.gap = r->gap;
    sol.seconds = r->seconds;
    if ((st = mpq_db_solution_insert(ctx->db, &sol, asg, L, &r->solution_id, err)) != MPQ_OK) goto done;
done:
    cJSON_Delete(root);
    free(cfg_text);
    mpq_config_free(cfg);
    free(asg);
    free(budgets);
    if (st != MPQ_OK) mpq_solve_result_free(r);
    else *out = r;
    return st;
}

static void default_name(const mpq_solve_job_opts *opts, const char *metric, char *out, size_t n) {
    int k = snprintf(out, n, "%s@", metric);
    for (int b = 0; b < opts->n_budgets && k > 0 && (size_t)k < n; b++)
        k += snprintf(out + k, n - (size_t)k, "%s%s", b ? "," : "", opts->budgets[b].text);
}

mpq_status mpq_solve_job(mpq_solve_ctx *ctx, const mpq_solve_job_opts *opts, mpq_solve_result **out, mpq_err *err) {
    *out = NULL;
    mpq_status st;
    mpq_solve_problem *p = NULL;
    mpq_solution *s = NULL;
    char *budgets = NULL;
    if (opts->n_budgets <= 0) return mpq_err_set(err, MPQ_ERR_INVALID, "solve: no budget given (e.g. avg-bits=3.5)");
    if ((st = mpq_solve_problem_build(ctx, opts, &p, err)) != MPQ_OK) return st;
    char name[MPQ_DB_NAME_MAX];
    if (opts->name && *opts->name) snprintf(name, sizeof name, "%s", opts->name);
    else default_name(opts, p->metric, name, sizeof name);

    const char *solver = opts->solver ? opts->solver : "auto";
    int dp_res = -1;
    for (int r = 0; r < p->n_resources; r++)
        if (isfinite(mpq_problem_budget(p->problem, r))) dp_res = r;
    bool dp_ok = p->n_finite_budgets == 1 && mpq_problem_resource_integral(p->problem, dp_res);
    if (strcmp(solver, "auto") == 0) solver = dp_ok ? "dp" : "ilp";
    else if (strcmp(solver, "dp") == 0 && !dp_ok) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "solve: dp needs exactly one budget on an integral resource (bits, bytes, bops); "
                                               "use --solver ilp");
        goto done;
    } else if (strcmp(solver, "ilp") != 0 && strcmp(solver, "dp") != 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "solve: unknown solver '%s' (auto, ilp, dp)", solver);
        goto done;
    }
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = opts->smooth;
    so.time_limit_s = opts->time_limit_s;
    so.dp_resource = dp_res >= 0 ? dp_res : 0;
    st = strcmp(solver, "dp") == 0 ? mpq_solve_dp(p->problem, &so, &s, err) : mpq_solve_ilp(p->problem, &so, &s, err);
    if (st == MPQ_ERR_INFEASIBLE) {
        /* record the attempt (no assignments), keep the solver's message */
        mpq_err e2 = {0};
        budgets = budgets_json_of(opts);
        mpq_db_solution sol;
        memset(&sol, 0, sizeof sol);
        sol.job_id = ctx->job.id;
        snprintf(sol.name, sizeof sol.name, "%s", name);
        snprintf(sol.solver, sizeof sol.solver, "%s", solver);
        snprintf(sol.status, sizeof sol.status, "infeasible");
        sol.metric_expr = p->metric;
        sol.budgets_json = budgets;
        sol.objective = sol.bound = sol.gap = sol.seconds = NAN;
        int64_t id;
        if (budgets) (void)mpq_db_solution_insert(ctx->db, &sol, NULL, 0, &id, &e2);
        mpq_err_prefix(err, "job '%s'", ctx->job.name);
        goto done;
    }
    if (st != MPQ_OK) goto done;
    double lb = NAN;
    mpq_err e3 = {0};
    if (mpq_bound_lp(p->problem, &so, &lb, &e3) != MPQ_OK) lb = NAN;
    st = store_choice(ctx, p, opts, s, solver, name, lb, out, err);
done:
    free(budgets);
    mpq_solution_free(s);
    mpq_solve_problem_free(p);
    return st;
}

/* --------------------------------------------------------------------------- pareto ---- */

void mpq_solve_pareto_result_free(mpq_solve_pareto_result *r) {
    if (!r) return;
    mpq_frontier_free(r->exact);
    mpq_frontier_free(r->hull);
    free(r->hull_gap);
    free(r->cost_display);
    free(r);
}

mpq_status mpq_solve_pareto(mpq_solve_ctx *ctx, const mpq_solve_job_opts *opts, int n_spread, mpq_solve_pareto_result **out,
                            mpq_err *err) {
    *out = NULL;
    mpq_status st;
    mpq_solve_problem *p = NULL;
    int *choice = NULL;
    mpq_db_frontier_point *pts = NULL;
    mpq_solve_job_opts o2 = *opts;
    o2.n_budgets = 0;
    o2.budgets = NULL;
    if (n_spread < 0 || n_spread > 32) return mpq_err_set(err, MPQ_ERR_INVALID, "pareto: --evaluate K must be 0..32");
    mpq_solve_pareto_result *r = mpq_calloc(1, sizeof *r);
    if (!r) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    double t0 = mpq_time_now();
    if ((st = mpq_solve_problem_build(ctx, &o2, &p, err)) != MPQ_OK) goto done;
    int res = 0;
    for (int q = 0; q < p->n_resources; q++)
        if (p->resource[q] == opts->frontier_resource) res = q;
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = opts->smooth;
    so.dp_resource = res;
    if ((st = mpq_frontier_exact(p->problem, &so, &r->exact, err)) != MPQ_OK) goto done;
    if ((st = mpq_frontier_hull(p->problem, &so, &r->hull, err)) != MPQ_OK) goto done;
    size_t n = r->exact->n_points, nh = r->hull->n_points;
    r->hull_gap = mpq_calloc(nh ? nh : 1, sizeof *r->hull_gap);
    r->cost_display = mpq_calloc(n ? n : 1, sizeof *r->cost_display);
    pts = mpq_calloc(n ? n : 1, sizeof *pts);
    choice = mpq_calloc((size_t)mpq_problem_n_items(p->problem), sizeof *choice);
    if (!r->hull_gap || !r->cost_display || !pts || !choice) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for a frontier of %zu points", n);
        goto done;
    }
    if ((st = mpq_frontier_hull_gaps(r->hull, r->exact, r->hull_gap, err)) != MPQ_OK) goto done;
    bool bits = opts->frontier_resource == MPQ_RESOURCE_BITS;
    for (size_t k = 0; k < n; k++) {
        r->cost_display[k] = bits ? r->exact->cost[k] / (double)p->total_params : r->exact->cost[k];
        pts[k].cost = r->cost_display[k];
        pts[k].loss = r->exact->loss[k];
    }
    r->knee = mpq_frontier_knee(r->exact);
    r->seconds = mpq_time_now() - t0;
    /* solutions: knee, then n_spread points evenly spread in cost */
    size_t want[33];
    char names[33][MPQ_DB_NAME_MAX];
    int nw = 0;
    if (n > 0) {
        want[nw] = r->knee;
        snprintf(names[nw++], MPQ_DB_NAME_MAX, "%.100s@knee", p->metric);
        for (int j = 0; j < n_spread; j++) {
            double c = n_spread == 1 ? r->exact->cost[n - 1]
                                     : r->exact->cost[0] + (r->exact->cost[n - 1] - r->exact->cost[0]) * j / (n_spread - 1);
            size_t k = mpq_frontier_at_budget(r->exact, c);
            if (k == SIZE_MAX) k = 0;
            want[nw] = k;
            snprintf(names[nw++], MPQ_DB_NAME_MAX, "%.100s@pareto-%d", p->metric, j + 1);
        }
    }
    for (int w = 0; w < nw; w++) {
        if ((st = mpq_frontier_assignment(p->problem, r->exact, want[w], choice, err)) != MPQ_OK) goto done;
        int ni = mpq_problem_n_items(p->problem);
        mpq_solution s;
        memset(&s, 0, sizeof s);
        double tc[MPQ_N_RESOURCE_KINDS] = {0, 0, 0, 0};
        s.n_items = ni;
        s.n_resources = p->n_resources;
        s.choice = choice;
        s.total_cost = tc;
        double *sm = mpq_calloc((size_t)ni * 256, sizeof *sm);
        if (!sm) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = mpq_problem_smoothed_losses(p->problem, sm, err)) != MPQ_OK) {
            free(sm);
            goto done;
        }
        int nmax = p->n_options;
        for (int i = 0; i < ni; i++) {
            s.total_loss_raw += mpq_problem_loss(p->problem, i, choice[i]);
            s.total_loss += opts->smooth ? sm[(size_t)i * (size_t)nmax + (size_t)choice[i]] : mpq_problem_loss(p->problem, i, choice[i]);
            for (int q = 0; q < p->n_resources; q++) tc[q] += mpq_problem_cost(p->problem, q, i, choice[i]);
        }
        free(sm);
        s.bound = r->exact->loss[want[w]];
        s.gap = 0;
        s.status = MPQ_SOLVE_OPTIMAL;
        s.smoothed = opts->smooth;
        snprintf(s.solver, sizeof s.solver, "pareto-exact");
        s.seconds = r->seconds;
        mpq_solve_result *sr = NULL;
        if ((st = store_choice(ctx, p, &o2, &s, "pareto", names[w], r->exact->loss[want[w]], &sr, err)) != MPQ_OK) goto done;
        r->solution_ids[r->n_solutions] = sr->solution_id;
        r->solution_points[r->n_solutions++] = want[w];
        pts[want[w]].solution_id = sr->solution_id;
        mpq_solve_result_free(sr);
    }
    if ((st = mpq_db_frontier_insert(ctx->db, ctx->job.id, bits ? "avg_bits" : resource_names[opts->frontier_resource],
                                     p->metric, pts, (int)n, &r->frontier_id, err)) != MPQ_OK)
        goto done;
done:
    free(choice);
    free(pts);
    mpq_solve_problem_free(p);
    if (st != MPQ_OK) mpq_solve_pareto_result_free(r);
    else *out = r;
    return st;
}

/* ----------------------------------------------------------------------- evaluation ---- */

static mpq_status ctx_eval_setup(mpq_solve_ctx *c, mpq_err *err) {
    if (c->ref) return MPQ_OK;
    mpq_status st;
    mpq_tokenizer *tok = NULL;
    if ((st = ctx_model(c, err)) != MPQ_OK) return st;
    const mpq_job_data_spec *ds = c->spec->eval.data ? &c->spec->eval : &c->spec->calib;
    const mpq_model_config *mc = mpq_model_get_config(c->model);
    if (c->spec->tokenizer && (st = mpq_tokenizer_load(c->spec->tokenizer, mc->vocab_size, &tok, err)) != MPQ_OK) goto done;
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(ds->data, tok, &dopt, &c->edata, err)) != MPQ_OK) goto done;
    if ((st = mpq_data_sequences(c->edata, ds->seq_len, ds->n_seqs, (uint64_t)ds->seed, &c->seqs, err)) != MPQ_OK) goto done;
    if (c->seqs->n_seqs == 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: no evaluation window of %d tokens", ds->data, ds->seq_len);
        goto done;
    }
    mpq_db_dataset dd = {.path = ds->data, .sha256 = mpq_data_sha256(c->edata),
                         .n_tokens = (int64_t)ds->n_seqs * (ds->seq_len + 1), .seq_len = ds->seq_len,
                         .n_seqs = ds->n_seqs, .seed = ds->seed};
    if ((st = mpq_db_dataset_upsert(c->db, &dd, &c->eval_dataset_id, err)) != MPQ_OK) goto done;
    int B = c->seqs->n_seqs < 8 ? c->seqs->n_seqs : 8;
    if ((st = mpq_exec_create(c->model, B, ds->seq_len, &c->ex, err)) != MPQ_OK) goto done;
    int *tokens = mpq_calloc((size_t)c->seqs->n_seqs * (size_t)(ds->seq_len + 1), sizeof *tokens);
    if (!tokens) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < (size_t)c->seqs->n_seqs * (size_t)(ds->seq_len + 1); i++) tokens[i] = c->seqs->tokens[i];
    st = mpq_exec_ref_build(c->ex, mpq_model_get_weights(c->model), NULL, tokens, c->seqs->n_seqs, ds->seq_len, false,
                            &c->ref, err);
    free(tokens);
done:
    mpq_tokenizer_free(tok);
    return st;
}

mpq_status mpq_solve_evaluate_config(mpq_solve_ctx *ctx, const char *config_json, int64_t solution_id, mpq_solve_eval *out,
                                     mpq_err *err) {
    memset(out, 0, sizeof *out);
    mpq_status st;
    mpq_config *cfg = NULL;
    mpq_weights *qw = NULL;
    mpq_kv_pair *pairs = NULL;
    if ((st = ctx_eval_setup(ctx, err)) != MPQ_OK) return st;
    if ((st = mpq_config_parse(config_json, "config", ctx->model, &cfg, err)) != MPQ_OK) goto done;
    if ((st = mpq_weights_clone(ctx->model, &qw, err)) != MPQ_OK) goto done;
    if ((st = mpq_config_apply(cfg, ctx->model, qw, err)) != MPQ_OK) goto done;
    const mpq_model_config *mc = mpq_model_get_config(ctx->model);
    pairs = mpq_calloc((size_t)mc->n_layers, sizeof *pairs);
    if (!pairs) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int l = 0; l < mc->n_layers; l++) pairs[l] = mpq_config_kv(cfg, l);
    mpq_exec_opts eo = mpq_exec_opts_default();
    eo.kv_pairs = pairs;
    eo.n_kv_pairs = mc->n_layers;
    eo.kv_scheme = *mpq_config_kv_scheme(cfg);
    mpq_eval_stats es;
    memset(&es, 0, sizeof es);
    if ((st = mpq_exec_eval_ref(ctx->ex, qw, &eo, ctx->ref, 0, &es, err)) != MPQ_OK) goto done;
    mpq_config_stats cs;
    if ((st = mpq_config_get_stats(cfg, ctx->model, 0, &cs, err)) != MPQ_OK) goto done;
    out->ppl = es.ppl;
    out->kl = es.kl_mean;
    out->kl_stderr = es.kl_se;
    out->top1 = es.top1;
    out->ce = es.ce;
    out->n_tokens = es.n_tokens;
    out->avg_bits = cs.avg_weight_bits;
    mpq_db_evaluation ev = {.job_id = ctx->job.id, .solution_id = solution_id, .dataset_id = ctx->eval_dataset_id,
                            .config_json = (char *)config_json, .ppl = es.ppl, .kl = es.kl_mean, .kl_stderr = es.kl_se,
                            .top1 = es.top1, .ce = es.ce, .n_tokens = es.n_tokens};
    st = mpq_db_evaluation_insert(ctx->db, &ev, &out->evaluation_id, err);
done:
    free(pairs);
    mpq_weights_free(qw);
    mpq_config_free(cfg);
    return st;
}

mpq_status mpq_solve_evaluate_solution(mpq_solve_ctx *ctx, int64_t solution_id, mpq_solve_eval *out, mpq_err *err) {
    mpq_db_solution s;
    memset(&s, 0, sizeof s);
    mpq_status st = mpq_db_solution_get(ctx->db, solution_id, &s, NULL, NULL, err);
    if (st != MPQ_OK) return st;
    if (s.job_id != ctx->job.id)
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "solution %lld does not belong to job '%s'", (long long)solution_id, ctx->job.name);
    else if (!s.config_json || !*s.config_json)
        st = mpq_err_set(err, MPQ_ERR_INVALID, "solution '%s' (%s) has no configuration to evaluate", s.name, s.status);
    else
        st = mpq_solve_evaluate_config(ctx, s.config_json, solution_id, out, err);
    mpq_db_solution_release(&s);
    return st;
}

/* The "name" key of a config JSON (malloc'd) or NULL. */
static char *config_name(const char *json) {
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "name");
    char *r = cJSON_IsString(n) ? strdup(n->valuestring) : NULL;
    cJSON_Delete(j);
    return r;
}

mpq_status mpq_solve_evaluate_uniform(mpq_solve_ctx *ctx, const char *candidate, bool force, mpq_solve_eval *out, mpq_err *err) {
    memset(out, 0, sizeof *out);
    mpq_status st;
    mpq_config *cfg = NULL;
    char *text = NULL, *final = NULL;
    cJSON *root = NULL;
    mpq_db_evaluation *evs = NULL;
    int n_evs = 0;
    char label[MPQ_DB_NAME_MAX];
    mpq_candidate c;
    if ((st = mpq_candidate_parse(candidate, &c, err)) != MPQ_OK) return st;
    snprintf(label, sizeof label, "uniform:%s", c.name);
    if (!force) {
        if ((st = mpq_db_evaluations_fetch(ctx->db, ctx->job.id, &evs, &n_evs, err)) != MPQ_OK) return st;
        for (int i = n_evs - 1; i >= 0; i--) {
            if (evs[i].solution_id != 0) continue;
            char *nm = config_name(evs[i].config_json);
            bool hit = nm && strcmp(nm, label) == 0;
            free(nm);
            if (hit) {
                out->evaluation_id = evs[i].id;
                out->ppl = evs[i].ppl;
                out->kl = evs[i].kl;
                out->kl_stderr = evs[i].kl_stderr;
                out->top1 = evs[i].top1;
                out->ce = evs[i].ce;
                out->n_tokens = evs[i].n_tokens;
                out->reused = true;
                break;
            }
        }
    }
    if (out->reused) {
        if ((st = ctx_model(ctx, err)) != MPQ_OK) goto done;
        if ((st = mpq_config_uniform(ctx->model, c.name, NULL, &cfg, err)) != MPQ_OK) goto done;
        mpq_config_stats cs;
        if ((st = mpq_config_get_stats(cfg, ctx->model, 0, &cs, err)) != MPQ_OK) goto done;
        out->avg_bits = cs.avg_weight_bits;
        goto done;
    }
    if ((st = ctx_model(ctx, err)) != MPQ_OK) goto done;
    if ((st = mpq_config_uniform(ctx->model, c.name, NULL, &cfg, err)) != MPQ_OK) goto done;
    text = mpq_config_to_json(cfg, ctx->model);
    root = text ? cJSON_Parse(text) : NULL;
    if (!root || !cJSON_AddStringToObject(root, "name", label) || !(final = cJSON_Print(root))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    st = mpq_solve_evaluate_config(ctx, final, 0, out, err);
done:
    for (int i = 0; i < n_evs; i++) free(evs[i].config_json);
    free(evs);
    free(final);
    cJSON_Delete(root);
    free(text);
    mpq_config_free(cfg);
    return st;
}

/* ----------------------------------------------------------------------- comparison ---- */

static void ranks(const double *x, int n, double *r) {
    for (int i = 0; i < n; i++) {
        int less = 0, eq = 0;
        for (int j = 0; j < n; j++) {
            if (x[j] < x[i]) less++;
            else if (x[j] == x[i]) eq++;
        }
        r[i] = less + (eq + 1) / 2.0; /* average rank of the tie block (1-based) */
    }
}

double mpq_solve_spearman(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double *rx = mpq_calloc((size_t)n, sizeof *rx), *ry = mpq_calloc((size_t)n, sizeof *ry);
    double res = NAN;
    if (rx && ry) {
        ranks(x, n, rx);
        ranks(y, n, ry);
        double mx = 0, my = 0;
        for (int i = 0; i < n; i++) {
            mx += rx[i];
            my += ry[i];
        }
        mx /= n;
        my /= n;
        double sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < n; i++) {
            sxy += (rx[i] - mx) * (ry[i] - my);
            sxx += (rx[i] - mx) * (rx[i] - mx);
            syy += (ry[i] - my) * (ry[i] - my);
        }
        if (sxx > 0 && syy > 0) res = sxy / sqrt(sxx * syy);
    }
    free(rx);
    free(ry);
    return res;
}

mpq_status mpq_solve_compare(mpq_solve_ctx *ctx, const char *metric, mpq_solve_compare_row **rows_out, int *n_rows,
                             double *spearman, int *n_used, mpq_err *err) {
    *rows_out = NULL;
    *n_rows = 0;
    *spearman = NAN;
    *n_used = 0;
    mpq_status st;
    expr e;
    mpq_db_evaluation *evs = NULL;
    int n_evs = 0;
    mpq_solve_compare_row *rows = NULL;
    double *xs = NULL, *ys = NULL;
    int64_t *ids = NULL;
    double *vals = NULL;
    int L = ctx->n_layers, nr = 0;
    if ((st = expr_parse(metric ? metric : "kl", &e, err)) != MPQ_OK) return st;
    if ((st = ctx_model(ctx, err)) != MPQ_OK) return st;
    if ((st = mpq_db_evaluations_fetch(ctx->db, ctx->job.id, &evs, &n_evs, err)) != MPQ_OK) return st;
    rows = mpq_calloc(n_evs ? (size_t)n_evs : 1, sizeof *rows);
    xs = mpq_calloc(n_evs ? (size_t)n_evs : 1, sizeof *xs);
    ys = mpq_calloc(n_evs ? (size_t)n_evs : 1, sizeof *ys);
    ids = mpq_calloc((size_t)L, sizeof *ids);
    vals = mpq_calloc((size_t)L, sizeof *vals);
    if (!rows || !xs || !ys || !ids || !vals) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int l = 0; l < L; l++) ids[l] = ctx->layers[l].id;
    for (int i = n_evs - 1; i >= 0; i--) { /* newest first: keep one row per label */
        mpq_solve_compare_row row;
        memset(&row, 0, sizeof row);
        row.solution_id = evs[i].solution_id;
        if (evs[i].solution_id) {
            mpq_db_solution s;
            memset(&s, 0, sizeof s);
            if (mpq_db_solution_get(ctx->db, evs[i].solution_id, &s, NULL, NULL, NULL) != MPQ_OK) continue;
            snprintf(row.label, sizeof row.label, "%s", s.name);
            mpq_db_solution_release(&s);
        } else {
            char *nm = config_name(evs[i].config_json);
            snprintf(row.label, sizeof row.label, "%s", nm ? nm : "(config)");
            free(nm);
        }
        bool dup = false;
        for (int k = 0; k < nr; k++)
            if (rows[k].solution_id == row.solution_id && strcmp(rows[k].label, row.label) == 0) dup = true;
        if (dup) continue;
        mpq_config *cfg = NULL;
        if (!evs[i].config_json || mpq_config_parse(evs[i].config_json, "config", ctx->model, &cfg, NULL) != MPQ_OK) continue;
        mpq_config_stats cs;
        row.avg_bits = mpq_config_get_stats(cfg, ctx->model, 0, &cs, NULL) == MPQ_OK ? cs.avg_weight_bits : NAN;
        double pred = 0;
        for (int l = 0; l < L && isfinite(pred); l++) {
            int mi = mpq_model_find_linear(ctx->model, ctx->layers[l].name);
            const mpq_candidate *c = mi >= 0 ? mpq_config_layer(cfg, mi) : NULL;
            if (!c) {
                pred = NAN;
                break;
            }
            for (int t = 0; t < e.n; t++) {
                double v = NAN;
                if (mpq_db_metric_get(ctx->db, ctx->job.id, ids[l], c->name, e.name[t], &v, NULL, NULL, NULL) != MPQ_OK) v = NAN;
                pred += e.w[t] * v;
            }
        }
        mpq_config_free(cfg);
        row.predicted = pred;
        row.kl = evs[i].kl;
        row.kl_stderr = evs[i].kl_stderr;
        row.ppl = evs[i].ppl;
        row.top1 = evs[i].top1;
        rows[nr++] = row;
    }
    int nu = 0;
    for (int k = 0; k < nr; k++)
        if (isfinite(rows[k].predicted) && isfinite(rows[k].kl)) {
            xs[nu] = rows[k].predicted;
            ys[nu++] = rows[k].kl;
        }
    *n_used = nu;
    if (nu >= 3) *spearman = mpq_solve_spearman(xs, ys, nu);
    *rows_out = rows;
    *n_rows = nr;
    rows = NULL;
done:
    free(vals);
    free(ids);
    free(ys);
    free(xs);
    free(rows);
    for (int i = 0; i < n_evs; i++) free(evs[i].config_json);
    free(evs);
    return st;
}
