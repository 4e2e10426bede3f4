/*
 * jobsolve_problem.c - the allocation problem of a stored job (mpq_jobsolve.h): the
 * multiple-choice knapsack of HAWQ-V3 / MixDQ built from per-(layer, candidate) metrics in
 * the results database and the job's stored layer table (no model file), with ties between
 * layers that must share a format (Q-Palette fusion groups), pins, allowed sets, exact
 * integer costs (bits, bytes, BOPs) or a latency table, and budgets.
 */
#include "jobsolve_internal.h"

#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_quant.h"

mpq_jobsolve_opts mpq_jobsolve_opts_default(void) {
    mpq_jobsolve_opts o;
    memset(&o, 0, sizeof o);
    o.metric = "kl";
    o.smooth = true;
    o.act_bits = 16;
    o.solver = "auto";
    o.frontier_resource = MPQ_RESOURCE_BITS;
    return o;
}

void mpq_jobsolve_problem_free(mpq_jobsolve_problem *p) {
    if (!p) return;
    mpq_problem_free(p->problem);
    free(p->layers);
    free(p->group_of);
    free(p->options);
    free(p->layer_loss);
    free(p->layer_bits);
    free(p);
}

/* Everything the builder needs between its steps. */
typedef struct build {
    mpq_job *job;
    const mpq_jobsolve_opts *o;
    const char *jn;   /* job name for messages */
    int L, n_opt;
    mpq_jobsolve_problem *p;
    int *par, *pin, *item_of_root;
    unsigned char *allowed; /* [L * n_opt] */
    double *vals;           /* [L] scratch */
    double *rcost;          /* [kinds * L * n_opt] */
    int64_t *layer_ids;
    cJSON *lat;
    int res_index[MPQ_N_RESOURCE_KINDS];
} build;

static size_t at(const build *b, int l, int o) { return (size_t)l * (size_t)b->n_opt + (size_t)o; }
static double *rc(const build *b, int kind, int l, int o) {
    return &b->rcost[(size_t)b->L * (size_t)b->n_opt * (size_t)kind + at(b, l, o)];
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

static int option_index(const mpq_jobsolve_problem *p, const char *name) {
    for (int o = 0; o < p->n_options; o++)
        if (strcmp(p->options[o], name) == 0) return o;
    return -1;
}

/* Options (the job's candidates, + f16) and the per-layer arrays. */
static mpq_status build_alloc(build *b, mpq_err *err) {
    const mpq_job_spec *spec = mpq_job_get_spec(b->job);
    mpq_jobsolve_problem *p = b->p;
    int L = b->L, n_opt = spec->n_candidates + (b->o->include_f16 ? 1 : 0);
    if (n_opt > 255) return mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': %d candidates (at most 255)", b->jn, n_opt);
    size_t LO = (size_t)L * (size_t)n_opt;
    p->n_layers = L;
    p->layers = mpq_calloc((size_t)L, sizeof *p->layers);
    p->group_of = mpq_calloc((size_t)L, sizeof *p->group_of);
    p->options = mpq_calloc((size_t)n_opt, sizeof *p->options);
    p->layer_loss = mpq_calloc(LO, sizeof *p->layer_loss);
    p->layer_bits = mpq_calloc(LO, sizeof *p->layer_bits);
    b->par = mpq_calloc((size_t)L, sizeof *b->par);
    b->pin = mpq_calloc((size_t)L, sizeof *b->pin);
    b->item_of_root = mpq_calloc((size_t)L, sizeof *b->item_of_root);
    b->allowed = mpq_calloc(LO, 1);
    b->vals = mpq_calloc(2 * (size_t)L, sizeof *b->vals); /* [L] values, [L] per-layer factors */
    b->rcost = mpq_calloc((size_t)MPQ_N_RESOURCE_KINDS * LO, sizeof *b->rcost);
    b->layer_ids = mpq_calloc((size_t)L, sizeof *b->layer_ids);
    if (!p->layers || !p->group_of || !p->options || !p->layer_loss || !p->layer_bits || !b->par || !b->pin ||
        !b->item_of_root || !b->allowed || !b->vals || !b->rcost || !b->layer_ids)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int l = 0; l < L; l++) p->layers[l] = *mpq_job_linear(b->job, l);
    p->n_options = n_opt;
    for (int o = 0; o < spec->n_candidates; o++) snprintf(p->options[o], MPQ_DB_SHORT_MAX, "%s", spec->candidates[o]);
    if (b->o->include_f16) snprintf(p->options[n_opt - 1], MPQ_DB_SHORT_MAX, "f16");
    for (int o = 0; o + 1 < n_opt; o++)
        if (b->o->include_f16 && strcmp(p->options[o], "f16") == 0) n_opt = p->n_options = n_opt - 1; /* a candidate */
    b->n_opt = n_opt;
    for (int l = 0; l < L; l++) {
        b->layer_ids[l] = p->layers[l].id;
        b->par[l] = l;
        b->pin[l] = -1;
        p->total_params += p->layers[l].n_params;
    }
    memset(b->allowed, 1, (size_t)L * (size_t)n_opt);
    return MPQ_OK;
}

/* Resources: bits always first, then those the budgets / the frontier need. */
static mpq_status build_resources(build *b, mpq_err *err) {
    mpq_jobsolve_problem *p = b->p;
    bool need[MPQ_N_RESOURCE_KINDS] = {true, false, false, false};
    for (int i = 0; i < b->o->n_budgets; i++) need[jobsolve_budget_resource(b->o->budgets[i].kind)] = true;
    if ((int)b->o->frontier_resource < 0 || (int)b->o->frontier_resource >= MPQ_N_RESOURCE_KINDS)
        return mpq_err_set(err, MPQ_ERR_INVALID, "frontier resource %d out of range", (int)b->o->frontier_resource);
    need[b->o->frontier_resource] = true;
    for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) {
        b->res_index[k] = -1;
        if (need[k]) {
            b->res_index[k] = p->n_resources;
            p->resource[p->n_resources++] = (mpq_resource_kind)k;
        }
    }
    if (!need[MPQ_RESOURCE_LATENCY]) return MPQ_OK;
    if (!b->o->latency_json)
        return mpq_err_set(err, MPQ_ERR_INVALID, "a latency budget or frontier needs a latency table (--latency-table)");
    b->lat = cJSON_Parse(b->o->latency_json);
    if (!cJSON_IsObject(b->lat))
        return mpq_err_set(err, MPQ_ERR_INVALID, "latency table: expected a JSON object {candidate: {layer or kind: us}}");
    return MPQ_OK;
}

/* Latency of (candidate, layer) from the table: name, else kind, else "*". */
static mpq_status latency_of(const cJSON *tab, const char *cand, const mpq_db_layer *l, double *out, mpq_err *err) {
    const cJSON *row = cJSON_GetObjectItemCaseSensitive(tab, cand);
    if (!cJSON_IsObject(row))
        return mpq_err_set(err, MPQ_ERR_INVALID, "latency table: no entry for candidate '%s'", cand);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, l->name);
    if (!v) v = cJSON_GetObjectItemCaseSensitive(row, l->kind);
    if (!v) v = cJSON_GetObjectItemCaseSensitive(row, "*");
    if (!v)
        return mpq_err_set(err, MPQ_ERR_INVALID, "latency table: %s: no entry for layer %s (nor kind %s, nor \"*\")",
                           cand, l->name, l->kind);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1e15)
        return mpq_err_set(err, MPQ_ERR_INVALID, "latency table: %s: %s: expected a number in 0..1e15", cand, l->name);
    *out = v->valuedouble;
    return MPQ_OK;
}

/* Exact stored bits of a (rows, cols) layer under c; -1 on overflow. */
static int64_t layer_bits_of(const mpq_candidate *c, int64_t rows, int64_t cols) {
    return mpq_candidate_matrix_bits(c, rows, cols); /* rows-aware: exact for tcq<R> too */
}

/* Per-layer losses (the metric expression over stored rows) and costs of one option. */
static mpq_status build_option(build *b, const jobsolve_expr *e, int o, mpq_err *err) {
    mpq_jobsolve_problem *p = b->p;
    mpq_candidate cand;
    mpq_status st;
    if ((st = mpq_candidate_parse(p->options[o], &cand, err)) != MPQ_OK) return st;
    for (int l = 0; l < b->L; l++) p->layer_loss[at(b, l, o)] = 0.0;
    for (int t = 0; t < e->n; t++) {
        int found = 0;
        if ((st = mpq_db_metric_fetch(mpq_job_db(b->job), mpq_job_get_row(b->job)->id, e->name[t], p->options[o], b->L,
                                      b->layer_ids, b->vals, NULL, &found, err)) != MPQ_OK)
            return st;
        if (e->name2[t][0]) { /* product: times the per-layer factor (candidate "") */
            double *lv = b->vals + b->L;
            if ((st = mpq_db_metric_fetch(mpq_job_db(b->job), mpq_job_get_row(b->job)->id, e->name2[t], "", b->L,
                                          b->layer_ids, lv, NULL, &found, err)) != MPQ_OK)
                return st;
            for (int l = 0; l < b->L; l++) b->vals[l] *= lv[l];
        }
        for (int l = 0; l < b->L; l++) p->layer_loss[at(b, l, o)] += e->w[t] * b->vals[l];
    }
    int act_bits = b->o->act_bits > 0 ? b->o->act_bits : 16;
    for (int l = 0; l < b->L; l++) {
        const mpq_db_layer *ly = &p->layers[l];
        int64_t bits = layer_bits_of(&cand, ly->rows, ly->cols);
        int64_t bytes = mpq_candidate_bytes(&cand, ly->rows, ly->cols);
        if (bits < 0 && mpq_candidate_is_saq(&cand)) { /* rate not achievable: the option is absent here */
            b->allowed[at(b, l, o)] = 0;
            p->layer_loss[at(b, l, o)] = NAN;
            p->layer_bits[at(b, l, o)] = 0;
            for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) *rc(b, k, l, o) = 0.0;
            continue;
        }
        if (bits < 0 || bytes < 0 || bits > ((int64_t)1 << 53))
            return mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': layer %s: size under %s overflows", b->jn, ly->name,
                               p->options[o]);
        p->layer_bits[at(b, l, o)] = bits;
        *rc(b, MPQ_RESOURCE_BITS, l, o) = (double)bits;
        *rc(b, MPQ_RESOURCE_BYTES, l, o) = (double)bytes;
        *rc(b, MPQ_RESOURCE_BOPS, l, o) = (double)ly->n_params * (double)cand.bits * (double)act_bits;
        if (b->lat && (st = latency_of(b->lat, p->options[o], ly, rc(b, MPQ_RESOURCE_LATENCY, l, o), err)) != MPQ_OK)
            return st;
    }
    return MPQ_OK;
}

static bool is_qkv(const char *k) { return !strcmp(k, "attn_q") || !strcmp(k, "attn_k") || !strcmp(k, "attn_v"); }
static bool is_gate_up(const char *k) { return !strcmp(k, "ffn_gate") || !strcmp(k, "ffn_up"); }

/* Ties (q/k/v, gate/up of a block) and user groups (names or globs) join layers. */
static mpq_status build_groups(build *b, mpq_err *err) {
    const mpq_jobsolve_problem *p = b->p;
    unsigned ties = b->o->ties;
    for (int l = 0; l < b->L; l++)
        for (int m = l + 1; m < b->L; m++) {
            if (p->layers[l].block != p->layers[m].block) continue;
            const char *x = p->layers[l].kind, *y = p->layers[m].kind;
            if (((ties & MPQ_TIES_QKV) && is_qkv(x) && is_qkv(y)) ||
                ((ties & MPQ_TIES_GATE_UP) && is_gate_up(x) && is_gate_up(y)))
                uf_join(b->par, l, m);
        }
    for (int g = 0; g < b->o->n_groups; g++) {
        char buf[1024];
        if (strlen(b->o->groups[g]) >= sizeof buf) return mpq_err_set(err, MPQ_ERR_INVALID, "group %d: too long", g + 1);
        strcpy(buf, b->o->groups[g]);
        int first = -1;
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int hits = 0;
            for (int l = 0; l < b->L; l++)
                if (fnmatch(t, p->layers[l].name, 0) == 0 || strcmp(t, p->layers[l].hf_name) == 0) {
                    hits++;
                    if (first < 0) first = l;
                    else uf_join(b->par, first, l);
                }
            if (hits == 0)
                return mpq_err_set(err, MPQ_ERR_INVALID, "group '%s': '%s' matches no layer of job '%s'", b->o->groups[g],
                                   t, b->jn);
        }
    }
    return MPQ_OK;
}

/* "glob=rhs" -> glob, rhs. */
static mpq_status split_assign(const char *spec, const char *what, char *glob, size_t gn, const char **rhs,
                               mpq_err *err) {
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

/* Option index of candidate text t, or -1 when it is not an option of the problem. */
static int option_of(const mpq_jobsolve_problem *p, const char *t) {
    mpq_candidate c;
    return mpq_candidate_parse(t, &c, NULL) == MPQ_OK ? option_index(p, c.name) : -1;
}

/* --allow GLOB=C1,C2 (intersected) and --pin GLOB=C. */
static mpq_status build_allow_pin(build *b, mpq_err *err) {
    const mpq_jobsolve_problem *p = b->p;
    mpq_status st;
    for (int a = 0; a < b->o->n_allows; a++) {
        char glob[256], buf[512];
        const char *rhs, *spec = b->o->allows[a];
        if ((st = split_assign(spec, "--allow", glob, sizeof glob, &rhs, err)) != MPQ_OK) return st;
        unsigned char mask[256] = {0};
        snprintf(buf, sizeof buf, "%s", rhs);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int o = option_of(p, t);
            if (o < 0)
                return mpq_err_set(err, MPQ_ERR_INVALID, "--allow '%s': '%s' is not a candidate of job '%s'", spec, t,
                                   b->jn);
            mask[o] = 1;
        }
        int hits = 0;
        for (int l = 0; l < b->L; l++)
            if (fnmatch(glob, p->layers[l].name, 0) == 0) {
                hits++;
                for (int o = 0; o < b->n_opt; o++) b->allowed[at(b, l, o)] &= mask[o];
            }
        if (!hits)
            return mpq_err_set(err, MPQ_ERR_INVALID, "--allow '%s': '%s' matches no layer of job '%s'", spec, glob, b->jn);
    }
    for (int a = 0; a < b->o->n_pins; a++) {
        char glob[256];
        const char *rhs, *spec = b->o->pins[a];
        if ((st = split_assign(spec, "--pin", glob, sizeof glob, &rhs, err)) != MPQ_OK) return st;
        int o = option_of(p, rhs), hits = 0;
        if (o < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "--pin '%s': '%s' is not a candidate of job '%s'", spec, rhs, b->jn);
        for (int l = 0; l < b->L; l++)
            if (fnmatch(glob, p->layers[l].name, 0) == 0) {
                hits++;
                b->pin[l] = o;
            }
        if (!hits)
            return mpq_err_set(err, MPQ_ERR_INVALID, "--pin '%s': '%s' matches no layer of job '%s'", spec, glob, b->jn);
    }
    return MPQ_OK;
}

/* One item (group of layers): name, allowed options, summed losses and costs, pin. */
static mpq_status build_item(build *b, int i, mpq_err *err) {
    mpq_jobsolve_problem *p = b->p;
    char name[128] = "";
    int members = 0, first = -1, ipin = -1, n_opt = b->n_opt;
    double loss[256], cost[MPQ_N_RESOURCE_KINDS][256];
    unsigned char ok[256];
    mpq_status st;
    for (int o = 0; o < n_opt; o++) {
        loss[o] = 0;
        ok[o] = 1;
        for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) cost[k][o] = 0;
    }
    for (int l = 0; l < b->L; l++) {
        if (p->group_of[l] != i) continue;
        if (first < 0) first = l;
        members++;
        if (b->pin[l] >= 0) {
            if (ipin >= 0 && ipin != b->pin[l])
                return mpq_err_set(err, MPQ_ERR_INVALID, "pins conflict: %s is tied to %s but pinned to %s, not %s",
                                   p->layers[l].name, p->layers[first].name, p->options[b->pin[l]], p->options[ipin]);
            ipin = b->pin[l];
        }
        for (int o = 0; o < n_opt; o++) {
            ok[o] &= b->allowed[at(b, l, o)];
            loss[o] += p->layer_loss[at(b, l, o)];
            for (int k = 0; k < MPQ_N_RESOURCE_KINDS; k++) cost[k][o] += *rc(b, k, l, o);
        }
    }
    if (members == 1) snprintf(name, sizeof name, "%s", p->layers[first].name);
    else snprintf(name, sizeof name, "%.50s(+%d tied)", p->layers[first].name, members - 1);
    if ((st = mpq_problem_set_item_name(p->problem, i, name, err)) != MPQ_OK) return st;
    int n_ok = 0;
    for (int o = 0; o < n_opt; o++) {
        if (ok[o] && !isfinite(loss[o])) {
            if (!b->o->allow_missing || ipin == o) {
                int bad = first;
                for (int l = 0; l < b->L; l++)
                    if (p->group_of[l] == i && !isfinite(p->layer_loss[at(b, l, o)])) {
                        bad = l;
                        break;
                    }
                return mpq_err_set(err, MPQ_ERR_INVALID,
                                   "job '%s': metric '%s' missing for layer %s, candidate %s (run the stage that "
                                   "stores it, or --allow-missing to drop such options)",
                                   b->jn, p->metric, p->layers[bad].name, p->options[o]);
            }
            ok[o] = 0;
        }
        if ((st = mpq_problem_set_allowed(p->problem, i, o, ok[o], err)) != MPQ_OK) return st;
        if (!ok[o]) continue;
        n_ok++;
        if ((st = mpq_problem_set_loss(p->problem, i, o, loss[o], err)) != MPQ_OK) return st;
        for (int r = 0; r < p->n_resources; r++)
            if ((st = mpq_problem_set_cost(p->problem, r, i, o, cost[p->resource[r]][o], err)) != MPQ_OK) return st;
    }
    if (n_ok == 0) return mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': layer group %s has no allowed candidate left", b->jn, name);
    if (ipin < 0) return MPQ_OK;
    if (!ok[ipin])
        return mpq_err_set(err, MPQ_ERR_INVALID, "--pin: %s pinned to %s, which --allow excludes (or whose rate is not achievable there)", name, p->options[ipin]);
    return mpq_problem_pin(p->problem, i, ipin, err);
}

/* Budgets into the problem's resources (avg-bits exactly: floor(P * num / den)). */
static mpq_status build_budgets(build *b, mpq_err *err) {
    mpq_jobsolve_problem *p = b->p;
    bool seen[MPQ_N_RESOURCE_KINDS] = {false, false, false, false};
    mpq_status st;
    for (int i = 0; i < b->o->n_budgets; i++) {
        const mpq_budget *bg = &b->o->budgets[i];
        mpq_resource_kind rk = jobsolve_budget_resource(bg->kind);
        if (seen[rk])
            return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': a %s budget is already given", bg->text,
                               jobsolve_resource_names[rk]);
        seen[rk] = true;
        double v;
        if (bg->kind == MPQ_BUDGET_AVG_BITS) {
            /* (P/den)*num + ((P%den)*num)/den; den <= 10^6, num <= 64 * den */
            if (bg->den <= 0 || bg->num <= 0 || bg->num > 64 * bg->den)
                return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': out of range", bg->text);
            int64_t P = p->total_params, q = P / bg->den, rem = P % bg->den;
            if (q > INT64_MAX / bg->num) return mpq_err_set(err, MPQ_ERR_INVALID, "budget '%s': overflows", bg->text);
            v = (double)(q * bg->num + (rem * bg->num) / bg->den);
        } else {
            v = bg->kind == MPQ_BUDGET_LATENCY ? bg->value : (double)bg->num;
        }
        int r = b->res_index[rk];
        char rn[64];
        snprintf(rn, sizeof rn, "%.40s (%s)", bg->text, jobsolve_resource_names[rk]);
        if ((st = mpq_problem_set_budget(p->problem, r, v, err)) != MPQ_OK) return st;
        if ((st = mpq_problem_set_resource_name(p->problem, r, rn, err)) != MPQ_OK) return st;
        p->n_finite_budgets++;
    }
    for (int r = 0; r < p->n_resources; r++)
        if (!seen[p->resource[r]] &&
            (st = mpq_problem_set_resource_name(p->problem, r, jobsolve_resource_names[p->resource[r]], err)) != MPQ_OK)
            return st;
    return MPQ_OK;
}

static mpq_status build_steps(build *b, mpq_err *err) {
    mpq_jobsolve_problem *p = b->p;
    jobsolve_expr e;
    mpq_status st;
    const char *metric = b->o->metric ? b->o->metric : "kl";
    if ((st = jobsolve_expr_parse(metric, &e, err)) != MPQ_OK || (st = jobsolve_expr_resolve(b->job, &e, err)) != MPQ_OK)
        return st;
    snprintf(p->metric, sizeof p->metric, "%s", metric);
    if ((st = build_alloc(b, err)) != MPQ_OK || (st = build_resources(b, err)) != MPQ_OK) return st;
    for (int o = 0; o < b->n_opt; o++)
        if ((st = build_option(b, &e, o, err)) != MPQ_OK) return st;
    if ((st = build_groups(b, err)) != MPQ_OK || (st = build_allow_pin(b, err)) != MPQ_OK) return st;
    int n_items = 0; /* items = groups, in order of their first layer */
    for (int l = 0; l < b->L; l++) {
        int r = uf_find(b->par, l);
        if (r == l) b->item_of_root[l] = n_items++;
        p->group_of[l] = b->item_of_root[r];
    }
    if ((st = mpq_problem_create(n_items, b->n_opt, p->n_resources, &p->problem, err)) != MPQ_OK) return st;
    for (int o = 0; o < b->n_opt; o++)
        if ((st = mpq_problem_set_option_name(p->problem, o, p->options[o], err)) != MPQ_OK) return st;
    for (int i = 0; i < n_items; i++)
        if ((st = build_item(b, i, err)) != MPQ_OK) return st;
    if ((st = build_budgets(b, err)) != MPQ_OK) return st;
    return mpq_problem_validate(p->problem, err);
}

mpq_status mpq_jobsolve_problem_build(mpq_job *job, const mpq_jobsolve_opts *opts, mpq_jobsolve_problem **out,
                                      mpq_err *err) {
    if (!job || !opts || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_jobsolve_problem_build: NULL argument");
    *out = NULL;
    build b;
    memset(&b, 0, sizeof b);
    b.job = job;
    b.o = opts;
    b.jn = mpq_job_get_row(job)->name;
    b.L = mpq_job_n_linear(job);
    if (!(b.p = mpq_calloc(1, sizeof *b.p))) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = build_steps(&b, err);
    cJSON_Delete(b.lat);
    free(b.layer_ids);
    free(b.rcost);
    free(b.vals);
    free(b.allowed);
    free(b.item_of_root);
    free(b.pin);
    free(b.par);
    if (st != MPQ_OK) mpq_jobsolve_problem_free(b.p);
    else *out = b.p;
    return st;
}
