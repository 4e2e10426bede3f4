/*
 * kv_store.c - storing what the KV search found: the frontier, budget solutions (with their
 * budgets as JSON), and the pruning and clustering as artifacts (JSON built with cJSON).
 * API and artifact formats: include/mpq/mpq_kvsearch.h.
 */
#include "mpq/mpq_kvsearch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- storage ------------------------------------------------------------------------------ */

mpq_status mpq_kvsearch_frontier_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                       const mpq_kvsearch_frontier *f, int64_t *frontier_id, mpq_err *err) {
    if (!db || !t || !f) return mpq_err_set(err, MPQ_ERR_INVALID, "kv frontier store: NULL argument");
    mpq_db_frontier_point *pts = mpq_calloc(f->n_points ? f->n_points : 1, sizeof *pts);
    if (!pts) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < f->n_points; k++)
        pts[k] = (mpq_db_frontier_point){.cost = f->points[k].bits, .loss = f->points[k].loss, .solution_id = 0};
    int64_t id = 0;
    mpq_status st = mpq_db_frontier_insert(db, job_id, f->opts.overhead ? "kv_bits" : "kv_bits_nominal", t->metric,
                                           pts, (int)f->n_points, &id, err);
    free(pts);
    if (st == MPQ_OK && frontier_id) *frontier_id = id;
    return st;
}

mpq_status mpq_kvsearch_solution_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const char *name,
                                       const int *pair_idx, double loss, const char *budgets_json,
                                       const char *config_json, int64_t *solution_id, mpq_err *err) {
    if (!db || !t || !name || !pair_idx) return mpq_err_set(err, MPQ_ERR_INVALID, "kv solution store: NULL argument");
    mpq_db_assignment *a = mpq_calloc((size_t)t->n_blocks, sizeof *a);
    if (!a) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int b = 0; b < t->n_blocks; b++) {
        a[b].layer_id = t->layer_ids[b];
        snprintf(a[b].kv_pair, sizeof a[b].kv_pair, "%s", t->pair_names[pair_idx[b]]);
    }
    mpq_db_solution s = {.job_id = job_id, .metric_expr = (char *)t->metric, .budgets_json = (char *)budgets_json,
                         .config_json = (char *)config_json, .objective = loss, .bound = NAN, .gap = NAN,
                         .seconds = NAN};
    snprintf(s.name, sizeof s.name, "%s", name);
    snprintf(s.solver, sizeof s.solver, "kv-frontier");
    snprintf(s.status, sizeof s.status, "optimal");
    mpq_status st = mpq_db_solution_insert(db, &s, a, t->n_blocks, solution_id, err);
    free(a);
    return st;
}

static mpq_status put_json(mpq_db *db, int64_t job_id, const char *name, cJSON *o, mpq_err *err) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = mpq_db_artifact_put(db, job_id, name, s, strlen(s), err);
    cJSON_free(s);
    return st;
}

mpq_status mpq_kvsearch_prune_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const bool *keep,
                                    int64_t context_len, bool overhead, mpq_err *err) {
    if (!db || !t || !keep) return mpq_err_set(err, MPQ_ERR_INVALID, "kv prune store: NULL argument");
    cJSON *o = cJSON_CreateObject();
    cJSON *layers = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "metric", t->metric) &&
              cJSON_AddNumberToObject(o, "context", (double)context_len) &&
              cJSON_AddBoolToObject(o, "overhead", overhead) && (layers = cJSON_AddObjectToObject(o, "layers"));
    for (int b = 0; ok && b < t->n_blocks; b++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.kv", b);
        cJSON *arr = cJSON_AddArrayToObject(layers, name);
        ok = arr != NULL;
        for (int j = 0; ok && j < t->n_pairs; j++)
            if (keep[(size_t)b * t->n_pairs + j]) {
                cJSON *s = cJSON_CreateString(t->pair_names[j]);
                ok = s && cJSON_AddItemToArray(arr, s);
            }
    }
    if (!ok) {
        cJSON_Delete(o);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    return put_json(db, job_id, "kv_prune", o, err);
}

mpq_status mpq_kvsearch_groups_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const int *group,
                                     int n_groups, int target, double threshold, mpq_err *err) {
    if (!db || !t || !group) return mpq_err_set(err, MPQ_ERR_INVALID, "kv groups store: NULL argument");
    cJSON *o = cJSON_CreateObject();
    cJSON *gs = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "metric", t->metric) &&
              cJSON_AddNumberToObject(o, "n_groups", n_groups) &&
              (target > 0 ? cJSON_AddNumberToObject(o, "target", target) != NULL
                          : cJSON_AddNumberToObject(o, "threshold", threshold) != NULL) &&
              (gs = cJSON_AddArrayToObject(o, "groups"));
    for (int g = 0; ok && g < n_groups; g++) {
        cJSON *arr = cJSON_CreateArray();
        ok = arr && cJSON_AddItemToArray(gs, arr);
        for (int b = 0; ok && b < t->n_blocks; b++)
            if (group[b] == g) {
                cJSON *x = cJSON_CreateNumber(b);
                ok = x && cJSON_AddItemToArray(arr, x);
            }
    }
    if (!ok) {
        cJSON_Delete(o);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    return put_json(db, job_id, "kv_clusters", o, err);
}
