/*
 * kv_report_json.c - a KV search report (mpq_kvsearch_run) as JSON, built with cJSON: the
 * output of `mpq kv --json`. JSON has no NaN or infinity: such numbers (an unmeasured pair, an
 * unknown standard error, an undefined Spearman) are written as null.
 * API and layout: include/mpq/mpq_kvsearch.h (mpq_kvsearch_report_json).
 */
#include "mpq/mpq_kvsearch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/json_num.h"

/* A number, or null when v is NaN or +-Inf. false when out of memory. */
/* Exactly (read back it is the same double), NaN/Inf as null. */
static bool add_num(cJSON *o, const char *key, double v) { return mpq_json_add_number(o, key, v); }

static bool add_item(cJSON *arr, cJSON *item) {
    if (!item) return false;
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

/* A new object appended to arr (NULL when out of memory). */
static cJSON *add_object(cJSON *arr) {
    cJSON *o = cJSON_CreateObject();
    return add_item(arr, o) ? o : NULL;
}

/* ["k8v8", "k4v4", ...]: the pair of each block. */
static bool add_pairs(cJSON *o, const char *key, const mpq_kvsearch_table *t, const int *idx) {
    cJSON *a = cJSON_AddArrayToObject(o, key);
    bool ok = a != NULL;
    for (int b = 0; ok && b < t->n_blocks; b++) ok = add_item(a, cJSON_CreateString(t->pair_names[idx[b]]));
    return ok;
}

static bool add_eval(cJSON *o, const char *key, const mpq_eval_stats *es) {
    cJSON *m = cJSON_AddObjectToObject(o, key);
    return m && add_num(m, "kl", es->kl_mean) && add_num(m, "kl_se", es->kl_se) && add_num(m, "top1", es->top1) &&
           add_num(m, "ppl", es->ppl);
}

static bool add_blocks(cJSON *root, const mpq_kvsearch_report *r) {
    const mpq_kvsearch_table *t = r->table;
    int np = t->n_pairs;
    cJSON *lad = cJSON_AddArrayToObject(root, "blocks");
    bool ok = lad != NULL;
    for (int b = 0; ok && b < t->n_blocks; b++) {
        cJSON *bo = add_object(lad), *ps = bo ? cJSON_AddArrayToObject(bo, "pairs") : NULL;
        /* per-head tables: items (block, kv_head) */
        ok = ps && cJSON_AddNumberToObject(bo, "block", t->n_heads > 0 ? b / t->n_heads : b) &&
             (t->n_heads <= 0 || cJSON_AddNumberToObject(bo, "kv_head", b % t->n_heads));
        for (int j = 0; ok && j < np; j++) {
            size_t k = (size_t)b * np + (size_t)j;
            cJSON *po = add_object(ps);
            ok = po && cJSON_AddStringToObject(po, "pair", t->pair_names[j]) && add_num(po, "bits", r->pair_bits[j]) &&
                 add_num(po, "bits_nominal", r->pair_bits_nominal[j]) && add_num(po, "error", t->err[k]) &&
                 add_num(po, "se", t->se[k]) && cJSON_AddBoolToObject(po, "pareto", r->keep[k]);
        }
    }
    return ok;
}

static const char *verdict_name(mpq_kvsearch_verdict v) {
    return v == MPQ_KVSEARCH_VERDICT_KEYS ? "keys" : v == MPQ_KVSEARCH_VERDICT_VALUES ? "values" : "unclear";
}

static bool add_keys_vs_values(cJSON *root, const mpq_kvsearch_report *r) {
    const mpq_kvsearch_table *t = r->table;
    cJSON *ko = cJSON_AddObjectToObject(root, "keys_vs_values"), *items = NULL;
    bool ok = ko && cJSON_AddNumberToObject(ko, "comparisons", r->n_cmp) &&
              cJSON_AddNumberToObject(ko, "keys_more_sensitive", r->n_keys_more) &&
              cJSON_AddNumberToObject(ko, "keys_beyond_2se", r->n_keys_beyond_2se) &&
              cJSON_AddNumberToObject(ko, "values_beyond_2se", r->n_values_beyond_2se) &&
              cJSON_AddStringToObject(ko, "verdict", verdict_name(r->verdict)) &&
              (items = cJSON_AddArrayToObject(ko, "items"));
    for (int i = 0; ok && i < r->n_cmp; i++) {
        const mpq_kvsearch_kv_cmp *c = &r->cmp[i];
        cJSON *co = add_object(items);
        ok = co && cJSON_AddNumberToObject(co, "block", t->n_heads > 0 ? c->block / t->n_heads : c->block) &&
             (t->n_heads <= 0 || cJSON_AddNumberToObject(co, "kv_head", c->block % t->n_heads)) &&
             cJSON_AddStringToObject(co, "keys_high", t->pair_names[c->hi_k]) &&
             cJSON_AddStringToObject(co, "keys_low", t->pair_names[c->lo_k]) && add_num(co, "diff", c->diff) &&
             add_num(co, "se", c->se);
    }
    return ok;
}

static bool add_frontier(cJSON *root, const mpq_kvsearch_report *r) {
    const mpq_kvsearch_frontier *f = r->frontier;
    cJSON *fa = cJSON_AddArrayToObject(root, "frontier");
    bool ok = fa && cJSON_AddNumberToObject(root, "frontier_id", (double)r->frontier_id);
    for (size_t k = 0; ok && k < f->n_points; k++) {
        const mpq_kvsearch_point *p = &f->points[k];
        cJSON *po = add_object(fa);
        ok = po && add_num(po, "bits", p->bits) && add_num(po, "bits_overhead", p->bits_overhead) &&
             add_num(po, "bits_nominal", p->bits_nominal) && add_num(po, "predicted", p->loss) &&
             add_num(po, "predicted_se", p->loss_se) && add_pairs(po, "pairs", r->table, p->pair) &&
             (!r->evaluated || add_eval(po, "measured", &r->point_eval[k]));
    }
    return ok;
}

static bool add_budgets(cJSON *root, const mpq_kvsearch_report *r) {
    cJSON *ba = cJSON_AddArrayToObject(root, "budgets");
    bool ok = ba != NULL;
    for (int i = 0; ok && i < r->n_picks; i++) {
        const mpq_kvsearch_pick *pk = &r->picks[i];
        const mpq_kvsearch_point *p = &r->frontier->points[pk->point];
        cJSON *bo = add_object(ba);
        ok = bo && add_num(bo, "budget", pk->budget) && cJSON_AddNumberToObject(bo, "point", (double)pk->point) &&
             add_num(bo, "bits", p->bits) && add_num(bo, "predicted", p->loss) &&
             add_pairs(bo, "pairs", r->table, p->pair) && cJSON_AddStringToObject(bo, "solution", pk->name) &&
             cJSON_AddNumberToObject(bo, "solution_id", (double)pk->solution_id);
        if (ok && r->evaluated)
            ok = cJSON_AddNumberToObject(bo, "uniform_compared", pk->n_uniform_compared) &&
                 cJSON_AddNumberToObject(bo, "uniform_beaten", pk->n_uniform_beaten);
    }
    return ok;
}

static bool add_uniform(cJSON *root, const mpq_kvsearch_report *r) {
    cJSON *ua = cJSON_AddArrayToObject(root, "uniform");
    bool ok = ua && add_num(root, "spearman", r->spearman) && cJSON_AddStringToObject(root, "windows", r->eval_source);
    for (int j = 0; ok && j < r->table->n_pairs; j++) {
        cJSON *uo = add_object(ua);
        ok = uo && cJSON_AddStringToObject(uo, "pair", r->table->pair_names[j]) &&
             add_num(uo, "bits", r->uniform_bits[j]) && add_num(uo, "kl", r->uniform_eval[j].kl_mean) &&
             add_num(uo, "kl_se", r->uniform_eval[j].kl_se) && add_num(uo, "top1", r->uniform_eval[j].top1);
    }
    return ok;
}

/* Feasible contexts only (as `mpq kv` prints them). */
static bool add_joint(cJSON *root, const mpq_kvsearch_report *r) {
    cJSON *ja = cJSON_AddArrayToObject(root, "joint");
    bool ok = ja && cJSON_AddNumberToObject(root, "joint_fixed_bytes", (double)r->joint_fixed_bytes);
    for (int i = 0; ok && i < r->n_joint; i++) {
        const mpq_kvsearch_joint_row *row = &r->joint[i];
        if (!row->feasible) continue;
        const mpq_kvsearch_joint_result *x = &row->result;
        cJSON *jo = add_object(ja);
        ok = jo && cJSON_AddNumberToObject(jo, "context", (double)row->context_len) &&
             add_num(jo, "weight_bytes", x->weight_bytes) && add_num(jo, "kv_bytes", x->kv_bytes) &&
             add_num(jo, "avg_weight_bits", x->avg_weight_bits) && add_num(jo, "avg_kv_bits", x->avg_kv_bits) &&
             add_num(jo, "loss_weights", x->loss_weights) && add_num(jo, "loss_kv", x->loss_kv) &&
             cJSON_AddStringToObject(jo, "status", x->status == MPQ_SOLVE_OPTIMAL ? "optimal" : "feasible") &&
             add_num(jo, "gap", x->gap);
    }
    return ok;
}

char *mpq_kvsearch_report_json(const mpq_kvsearch_report *r) {
    if (!r || !r->table) return NULL;
    cJSON *root = cJSON_CreateObject();
    bool ok = root && cJSON_AddStringToObject(root, "job", r->job_name) &&
              cJSON_AddNumberToObject(root, "job_id", (double)r->job_id) &&
              cJSON_AddStringToObject(root, "metric", r->table->metric) &&
              cJSON_AddNumberToObject(root, "context", (double)r->context_len) &&
              cJSON_AddBoolToObject(root, "overhead", r->overhead) &&
              (r->table->n_heads <= 0 || cJSON_AddNumberToObject(root, "n_kv_heads", r->table->n_heads)) &&
              add_blocks(root, r) &&
              add_keys_vs_values(root, r);
    if (ok && r->n_groups) {
        cJSON *ga = cJSON_AddArrayToObject(root, "groups");
        ok = ga != NULL;
        for (int b = 0; ok && b < r->table->n_blocks; b++) ok = add_item(ga, cJSON_CreateNumber(r->group[b]));
    }
    if (ok && r->frontier) ok = add_frontier(root, r);
    if (ok && r->n_picks) ok = add_budgets(root, r);
    if (ok && r->evaluated) ok = add_uniform(root, r);
    if (ok && r->n_joint) ok = add_joint(root, r);
    char *s = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *c = malloc(n); /* plain malloc'd for the caller's free() */
    if (c) memcpy(c, s, n);
    cJSON_free(s);
    return c;
}
