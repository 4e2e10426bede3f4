/*
 * kv_run.c - the whole KV search of a stored job as one request (mpq_kvsearch_run): table,
 * pruning, keys vs values, clusters, frontier, budget picks with their exports and stored
 * solutions, measured evaluation, joint weight + KV budget; and the report it returns.
 * API: include/mpq/mpq_kvsearch.h ("the whole search"); the steps themselves are in the other
 * search/kv_*.c files. Reference: KVTuner (Li et al. 2025), the pipeline of its section 4.
 */
#include "mpq/mpq_kvsearch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_export.h"
#include "mpq/mpq_job.h"

mpq_kvsearch_request mpq_kvsearch_request_default(void) {
    return (mpq_kvsearch_request){.metric = NULL, .contexts = NULL, .n_contexts = 0, .threshold = -1,
                                  .max_seqs = 0, .joint_bytes = 0, .batch = 1};
}

void mpq_kvsearch_report_free(mpq_kvsearch_report *r) {
    if (!r) return;
    mpq_kvsearch_table_free(r->table);
    free(r->keep);
    free(r->pair_bits);
    free(r->pair_bits_nominal);
    free(r->ladder);
    free(r->cmp);
    free(r->group);
    free(r->distance);
    mpq_kvsearch_frontier_free(r->frontier);
    for (int i = 0; r->picks && i < r->n_picks; i++) free(r->picks[i].uniform_compared);
    free(r->picks);
    free(r->point_eval);
    free(r->point_evaluation_id);
    free(r->uniform_eval);
    free(r->uniform_bits);
    free(r->uniform_evaluation_id);
    free(r->joint);
    free(r);
}

/* State of one run: the request (contexts filled in), the report being built, the job's
 * model when a step needs it (config export, joint). */
typedef struct run_ctx {
    mpq_db *db;
    mpq_kvsearch_request rq;
    mpq_kvsearch_report *r;
    mpq_model *model;
} run_ctx;

/* The one place a job is opened: by name, or by decimal id when no job has that name. */
/* The stored job (mpq_job.h) by name or id: its id and name for the report. */
static mpq_status open_job(mpq_db *db, const char *job, mpq_kvsearch_report *r, mpq_err *err) {
    mpq_job *jh = NULL;
    mpq_status st = mpq_job_open(db, job, &jh, err);
    if (st != MPQ_OK) return st;
    const mpq_db_job *row = mpq_job_get_row(jh);
    r->job_id = row->id;
    snprintf(r->job_name, sizeof r->job_name, "%s", row->name);
    mpq_job_close(jh);
    return MPQ_OK;
}

static mpq_status job_model(run_ctx *c, mpq_err *err) {
    return c->model ? MPQ_OK : mpq_kvsearch_job_model(c->db, c->r->job_id, &c->model, err);
}

static mpq_status check_request(const mpq_kvsearch_request *rq, mpq_err *err) {
    for (int i = 0; i < rq->n_contexts; i++) {
        if (rq->contexts[i] < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "kv: context %lld < 0", (long long)rq->contexts[i]);
        if (rq->joint && rq->contexts[i] < 1)
            return mpq_err_set(err, MPQ_ERR_INVALID, "kv: the joint budget needs contexts > 0 (got %lld)",
                               (long long)rq->contexts[i]);
    }
    if (rq->cluster < 0) return mpq_err_set(err, MPQ_ERR_INVALID, "kv: cluster count %d < 0", rq->cluster);
    mpq_kv_engine e;
    if (rq->engine && mpq_kv_engine_parse(rq->engine, &e, err) != MPQ_OK) return MPQ_ERR_INVALID;
    if (isinf(rq->threshold) || (rq->cluster > 0 && rq->threshold >= 0))
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv: give a cluster count or a finite threshold, not both");
    if (rq->n_budgets < 0 || (rq->n_budgets > 0 && !rq->budgets))
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv: %d budgets without a list", rq->n_budgets);
    for (int i = 0; i < rq->n_budgets; i++)
        if (!(rq->budgets[i] >= 0) || isinf(rq->budgets[i]))
            return mpq_err_set(err, MPQ_ERR_INVALID, "kv: budget kv-bits=%g: expected a finite number >= 0",
                               rq->budgets[i]);
    if ((rq->export_kvtuner || rq->export_config) && rq->n_budgets == 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv: an export needs a budget (it writes the first budget's pick)");
    if (rq->joint && (!(rq->joint_bytes >= 0) || rq->batch < 1))
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv: joint: need bytes >= 0 and batch > 0 (got %g, %lld)",
                           rq->joint_bytes, (long long)rq->batch);
    return MPQ_OK;
}

/* ---- ladder, pruning, keys vs values -------------------------------------------------------- */

static mpq_status step_ladder(run_ctx *c, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    const mpq_kvsearch_table *t = r->table;
    int nb = t->n_blocks, np = t->n_pairs;
    int64_t L = r->context_len;
    size_t n = (size_t)nb * (size_t)np;
    int64_t *u = mpq_calloc((size_t)np, sizeof *u);
    r->keep = mpq_calloc(n, sizeof *r->keep);
    r->ladder = mpq_calloc(n, sizeof *r->ladder);
    r->pair_bits = mpq_calloc((size_t)np, sizeof *r->pair_bits);
    r->pair_bits_nominal = mpq_calloc((size_t)np, sizeof *r->pair_bits_nominal);
    mpq_status st = MPQ_OK;
    if (!u || !r->keep || !r->ladder || !r->pair_bits || !r->pair_bits_nominal) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
        goto done;
    }
    if ((st = mpq_kvsearch_prune(t, L, r->overhead, r->keep, &r->n_kept, err)) != MPQ_OK) goto done;
    if (c->rq.prune) {
        if ((st = mpq_kvsearch_prune_store(c->db, r->job_id, t, r->keep, L, r->overhead, err)) != MPQ_OK) goto done;
        r->pruned = true;
    }
    int64_t upb = mpq_kvsearch_units_per_bit(t, L, true);
    for (int j = 0; j < np; j++) {
        u[j] = mpq_kvsearch_pair_units(t, t->pairs[j], L, true);
        r->pair_bits[j] = (double)u[j] / (double)upb;
        r->pair_bits_nominal[j] = (double)(mpq_kv_rate_q(t->pairs[j].k_bits) + mpq_kv_rate_q(t->pairs[j].v_bits)) / 2048.0;
    }
    /* per block: pairs by (units with overhead, error), insertion sort (stable) */
    for (int b = 0; b < nb; b++) {
        int *ord = r->ladder + (size_t)b * np;
        const double *e = t->err + (size_t)b * np;
        for (int j = 0; j < np; j++) ord[j] = j;
        for (int x = 1; x < np; x++)
            for (int y = x; y > 0; y--) {
                int p = ord[y - 1], q = ord[y];
                if (!(u[p] > u[q] || (u[p] == u[q] && e[p] > e[q]))) break;
                ord[y - 1] = q;
                ord[y] = p;
            }
    }
done:
    free(u);
    return st;
}

static mpq_status step_asymmetry(run_ctx *c, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    mpq_status st = mpq_kvsearch_asymmetry(r->table, &r->cmp, &r->n_cmp, err);
    if (st != MPQ_OK) return st;
    for (int i = 0; i < r->n_cmp; i++) {
        r->n_keys_more += r->cmp[i].diff > 0;
        r->n_keys_beyond_2se += r->cmp[i].diff > 2 * r->cmp[i].se;
        r->n_values_beyond_2se += -r->cmp[i].diff > 2 * r->cmp[i].se;
    }
    int k = r->n_keys_beyond_2se, v = r->n_values_beyond_2se;
    if (k > v && 2 * r->n_keys_more > r->n_cmp) r->verdict = MPQ_KVSEARCH_VERDICT_KEYS;
    else if (v > k && 2 * r->n_keys_more < r->n_cmp) r->verdict = MPQ_KVSEARCH_VERDICT_VALUES;
    else r->verdict = MPQ_KVSEARCH_VERDICT_UNCLEAR;
    return MPQ_OK;
}

/* ---- clusters and frontier ------------------------------------------------------------------ */

static mpq_status step_clusters(run_ctx *c, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    const mpq_kvsearch_table *t = r->table;
    int nb = t->n_blocks;
    if (c->rq.cluster <= 0 && !(c->rq.threshold >= 0)) return MPQ_OK;
    r->group = mpq_calloc((size_t)nb, sizeof *r->group);
    r->distance = mpq_calloc((size_t)nb * (size_t)nb, sizeof *r->distance);
    if (!r->group || !r->distance) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    int n_groups = 0;
    mpq_status st = mpq_kvsearch_cluster(t, r->keep, c->rq.cluster, c->rq.threshold, r->group, &n_groups, err);
    if (st != MPQ_OK) return st;
    for (int x = 0; x < nb; x++)
        for (int y = 0; y < nb; y++) r->distance[(size_t)x * nb + y] = mpq_kvsearch_distance(t, r->keep, x, y);
    r->n_groups = n_groups;
    return mpq_kvsearch_groups_store(c->db, r->job_id, t, r->group, n_groups, c->rq.cluster, c->rq.threshold, err);
}

/* The search's pairs restricted to what the request's engine offers (on top of pruning): a
 * block left with no pair is an error naming the engine and the block. */
static mpq_status engine_menu(run_ctx *c, bool **out, mpq_err *err) {
    const mpq_kvsearch_report *r = c->r;
    const mpq_kvsearch_table *t = r->table;
    mpq_kv_engine e;
    mpq_status st = mpq_kv_engine_parse(c->rq.engine, &e, err);
    if (st != MPQ_OK) return st;
    size_t n = (size_t)t->n_blocks * (size_t)t->n_pairs;
    bool *m = mpq_calloc(n ? n : 1, sizeof *m);
    if (!m) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    for (int b = 0; b < t->n_blocks; b++) {
        bool any = false;
        for (int j = 0; j < t->n_pairs; j++) {
            size_t k = (size_t)b * (size_t)t->n_pairs + (size_t)j;
            m[k] = (!r->pruned || r->keep[k]) && mpq_kv_engine_offers(e, t->pairs[j]);
            any = any || m[k];
        }
        if (!any) {
            free(m);
            return mpq_err_set(err, MPQ_ERR_NOTFOUND,
                               "kv: engine %s offers none of block %d's %spairs (it takes K and V widths of its "
                               "KV dtypes exactly: see mpq export --help); add such pairs to the job's spec",
                               mpq_kv_engine_name(e), b, r->pruned ? "kept " : "");
        }
    }
    *out = m;
    return MPQ_OK;
}

static mpq_status step_frontier(run_ctx *c, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    if (!c->rq.frontier && c->rq.n_budgets == 0 && !c->rq.evaluate) return MPQ_OK;
    mpq_kvsearch_opts o = mpq_kvsearch_opts_default();
    o.context_len = r->context_len;
    o.overhead = r->overhead;
    o.keep = r->pruned ? r->keep : NULL;
    if (r->n_groups) {
        o.group = r->group;
        o.n_groups = r->n_groups;
    }
    bool *menu = NULL;
    mpq_status st = MPQ_OK;
    if (c->rq.engine && (st = engine_menu(c, &menu, err)) != MPQ_OK) return st;
    if (menu) o.keep = menu;
    st = mpq_kvsearch_frontier_compute(r->table, &o, &r->frontier, err);
    free(menu);
    if (st == MPQ_OK) st = mpq_kvsearch_frontier_store(c->db, r->job_id, r->table, r->frontier, &r->frontier_id, err);
    return st;
}

/* ---- budgets: picks, exports, stored solutions ---------------------------------------------- */

static mpq_status write_text(const char *path, const char *text, mpq_err *err) {
    FILE *f = fopen(path, "w");
    if (!f) return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open for writing", path);
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    if (fclose(f) != 0) ok = false;
    return ok ? MPQ_OK : mpq_err_set(err, MPQ_ERR_IO, "%s: write failed", path);
}

/* kv scheme saq: the mpq config of the pick and, next to it, FILE.bases.json with the job's
 * stored bases, which the config names relative to its own directory. */
static mpq_status export_saq_config(run_ctx *c, const mpq_kvsearch_point *p, mpq_err *err) {
    const mpq_kvsearch_table *t = c->r->table;
    const char *file = c->rq.export_config;
    mpq_status st = job_model(c, err);
    if (st != MPQ_OK) return st;
    const mpq_model_config *mc = mpq_model_get_config(c->model);
    mpq_kv_saq *bases = NULL;
    mpq_kv_pair *pr = mpq_calloc((size_t)t->n_blocks, sizeof *pr);
    char *path = NULL, *text = NULL;
    size_t n = strlen(file);
    if (!pr || !(path = malloc(n + sizeof ".bases.json"))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
        goto done;
    }
    memcpy(path, file, n);
    memcpy(path + n, ".bases.json", sizeof ".bases.json");
    const char *slash = strrchr(path, '/'), *ref = slash ? slash + 1 : path;
    for (int b = 0; b < t->n_blocks; b++) pr[b] = t->pairs[p->pair[b]];
    if ((st = mpq_kvsearch_saq_bases_get(c->db, c->r->job_id, c->r->job_name, mc->n_layers, mc->n_kv_heads,
                                         mc->head_dim, &bases, err)) != MPQ_OK ||
        (st = mpq_kvsearch_config_json_saq(c->model, pr, &t->scheme, ref, bases, &text, err)) != MPQ_OK ||
        (st = mpq_kv_saq_save(bases, path, err)) != MPQ_OK)
        goto done;
    st = write_text(file, text, err);
done:
    free(text);
    free(path);
    free(pr);
    mpq_kv_saq_free(bases);
    return st;
}

/* A KVTuner file named *.yaml / *.yml gets the YAML KVTuner's per_layer_config_path reads
 * (README "KVTuner" under mpq export: integer keys); any other name the JSON form. */
static bool kvtuner_yaml_path(const char *path) {
    size_t n = strlen(path);
    return (n >= 5 && strcmp(path + n - 5, ".yaml") == 0) || (n >= 4 && strcmp(path + n - 4, ".yml") == 0);
}

/* "i:\n  nbits_key: K\n  nbits_value: V\n" per block after one comment line; malloc'd. */
static char *kvtuner_layers_yaml(const mpq_kv_pair *pairs, int n_blocks) {
    size_t cap = 64 + (size_t)n_blocks * 64, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    len += (size_t)snprintf(out, cap, "# KVTuner per_layer_config (layer -> bits; mpq kv)\n");
    for (int b = 0; b < n_blocks && len < cap; b++)
        len += (size_t)snprintf(out + len, cap - len, "%d:\n  nbits_key: %d\n  nbits_value: %d\n", b, pairs[b].k_bits,
                                pairs[b].v_bits);
    return out;
}

/* The KVTuner and mpq config files of the first budget's pick. */
static mpq_status write_exports(run_ctx *c, mpq_err *err) {
    const mpq_kvsearch_table *t = c->r->table;
    const mpq_kvsearch_point *p = &c->r->frontier->points[c->r->picks[0].point];
    char *text = NULL;
    if (t->scheme.mode == MPQ_KV_SAQ) {
        if (c->rq.export_kvtuner) /* refused before any file is written */
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "kv: --export-kvtuner: the job's KV scheme is saq; KVTuner files hold integer K/V bits "
                               "per block and have no place for the calibrated bases (use --export-config)");
        return export_saq_config(c, p, err);
    }
    mpq_kv_pair *pr = mpq_calloc((size_t)t->n_blocks, sizeof *pr);
    mpq_status st = MPQ_OK;
    if (!pr) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    for (int b = 0; b < t->n_blocks; b++) pr[b] = t->pairs[p->pair[b]];
    if (t->n_heads > 0) { /* per-head items: pr holds one pair per (block, head) */
        if (c->rq.export_kvtuner) {
            if (!(text = mpq_kvsearch_kvtuner_heads_yaml(pr, t->n_blocks / t->n_heads, t->n_heads)))
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
            else
                st = write_text(c->rq.export_kvtuner, text, err);
            free(text);
            text = NULL;
        }
        if (st == MPQ_OK && c->rq.export_config && (st = job_model(c, err)) == MPQ_OK &&
            (st = mpq_kvsearch_config_json_heads(c->model, pr, &t->scheme, &text, err)) == MPQ_OK)
            st = write_text(c->rq.export_config, text, err);
        free(text);
        free(pr);
        return st;
    }
    if (c->rq.export_kvtuner) {
        if (!(text = kvtuner_yaml_path(c->rq.export_kvtuner) ? kvtuner_layers_yaml(pr, t->n_blocks)
                                                             : mpq_kvsearch_kvtuner_json(pr, t->n_blocks)))
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
        else st = write_text(c->rq.export_kvtuner, text, err);
        free(text);
        text = NULL;
    }
    if (st == MPQ_OK && c->rq.export_config && (st = job_model(c, err)) == MPQ_OK &&
        (st = mpq_kvsearch_config_json(c->model, pr, &t->scheme, &text, err)) == MPQ_OK)
        st = write_text(c->rq.export_config, text, err);
    free(text);
    free(pr);
    return st;
}

/* {"kv_bits": B, "overhead": bool, "context": L}: the budget a solution was picked under. */
static mpq_status store_pick(run_ctx *c, mpq_kvsearch_pick *pk, mpq_err *err) {
    const mpq_kvsearch_report *r = c->r;
    const mpq_kvsearch_point *p = &r->frontier->points[pk->point];
    cJSON *o = cJSON_CreateObject();
    char *budgets = NULL;
    if (o && cJSON_AddNumberToObject(o, "kv_bits", pk->budget) && cJSON_AddBoolToObject(o, "overhead", r->overhead) &&
        cJSON_AddNumberToObject(o, "context", (double)r->context_len))
        budgets = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!budgets) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    mpq_status st;
    if (r->table->n_heads > 0) { /* per-head: the config carries the pairs */
        const mpq_kvsearch_table *t = r->table;
        char *cfg = NULL;
        mpq_kv_pair *pr = mpq_calloc((size_t)t->n_blocks, sizeof *pr);
        if (!pr) st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
        else {
            for (int b = 0; b < t->n_blocks; b++) pr[b] = t->pairs[p->pair[b]];
            if ((st = job_model(c, err)) == MPQ_OK &&
                (st = mpq_kvsearch_config_json_heads(c->model, pr, &t->scheme, &cfg, err)) == MPQ_OK)
                st = mpq_kvsearch_solution_store_heads(c->db, r->job_id, t, pk->name, p->pair, p->loss, budgets, cfg,
                                                       &pk->solution_id, err);
        }
        free(cfg);
        free(pr);
    } else {
        st = mpq_kvsearch_solution_store(c->db, r->job_id, r->table, pk->name, p->pair, p->loss, budgets, NULL,
                                         &pk->solution_id, err);
    }
    cJSON_free(budgets);
    return st;
}

static mpq_status step_budgets(run_ctx *c, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    const mpq_kvsearch_frontier *f = r->frontier;
    if (c->rq.n_budgets == 0) return MPQ_OK;
    if (!(r->picks = mpq_calloc((size_t)c->rq.n_budgets, sizeof *r->picks)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    for (int i = 0; i < c->rq.n_budgets; i++) { /* n_picks counts the picks made */
        mpq_kvsearch_pick *pk = &r->picks[i];
        pk->budget = c->rq.budgets[i];
        pk->point = mpq_kvsearch_frontier_at_bits(f, pk->budget);
        if (pk->point == SIZE_MAX)
            return mpq_err_set(err, MPQ_ERR_INFEASIBLE, "kv-bits=%g: below the cheapest frontier point (%.4g bits)",
                               pk->budget, f->n_points ? f->points[0].bits : NAN);
        snprintf(pk->name, sizeof pk->name, "kv-bits-%g%s%s", pk->budget, r->overhead ? "" : "-nominal",
                 r->table->n_heads > 0 ? "-heads" : "");
        r->n_picks++;
    }
    mpq_status st = MPQ_OK;
    if (c->rq.export_kvtuner || c->rq.export_config) st = write_exports(c, err);
    /* stored only after the exports succeeded */
    for (int i = 0; st == MPQ_OK && i < r->n_picks; i++) st = store_pick(c, &r->picks[i], err);
    return st;
}

/* ---- evaluation ----------------------------------------------------------------------------- */

/* Measures and stores one assignment (pair index per block). */
static mpq_status eval_one(run_ctx *c, mpq_kvsearch_eval *ev, const int *idx, int64_t sol_id, mpq_eval_stats *es,
                           int64_t *eval_id, mpq_err *err) {
    const mpq_kvsearch_table *t = c->r->table;
    mpq_kv_pair *pairs = mpq_calloc((size_t)t->n_blocks, sizeof *pairs);
    if (!pairs) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    for (int b = 0; b < t->n_blocks; b++) pairs[b] = t->pairs[idx[b]];
    mpq_status st;
    if (t->n_heads > 0) { /* per-head items */
        st = mpq_kvsearch_eval_run_heads(ev, pairs, &t->scheme, es, err);
        if (st == MPQ_OK)
            st = mpq_kvsearch_eval_store_heads(c->db, c->r->job_id, ev, pairs, &t->scheme, es, sol_id, eval_id, err);
        free(pairs);
        return st;
    }
    st = mpq_kvsearch_eval_run(ev, pairs, &t->scheme, es, err);
    if (st == MPQ_OK) st = mpq_kvsearch_eval_store(c->db, c->r->job_id, ev, pairs, &t->scheme, es, sol_id, eval_id, err);
    free(pairs);
    return st;
}

/* Every frontier point (with the solution id of a budget that picked it) and Spearman. */
static mpq_status eval_frontier(run_ctx *c, mpq_kvsearch_eval *ev, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    const mpq_kvsearch_frontier *f = r->frontier;
    size_t nf = f->n_points;
    double *xy = mpq_calloc(2 * (nf ? nf : 1), sizeof *xy);
    if (!xy) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    mpq_status st = MPQ_OK;
    for (size_t k = 0; st == MPQ_OK && k < nf; k++) {
        int64_t sid = 0;
        for (int i = 0; i < r->n_picks; i++)
            if (r->picks[i].point == k) sid = r->picks[i].solution_id;
        st = eval_one(c, ev, f->points[k].pair, sid, &r->point_eval[k], &r->point_evaluation_id[k], err);
        xy[k] = f->points[k].loss;
        xy[nf + k] = r->point_eval[k].kl_mean;
    }
    if (st == MPQ_OK) r->spearman = mpq_kvsearch_spearman(xy, xy + nf, (int)nf);
    free(xy);
    return st;
}

/* Every pair on every block, then each pick against the uniform pairs of no fewer bits. */
static mpq_status eval_uniform(run_ctx *c, mpq_kvsearch_eval *ev, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    const mpq_kvsearch_table *t = r->table;
    int nb = t->n_blocks, np = t->n_pairs;
    int *idx = mpq_calloc((size_t)nb, sizeof *idx);
    if (!idx) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    mpq_status st = MPQ_OK;
    for (int j = 0; st == MPQ_OK && j < np; j++) {
        for (int b = 0; b < nb; b++) idx[b] = j;
        st = eval_one(c, ev, idx, 0, &r->uniform_eval[j], &r->uniform_evaluation_id[j], err);
        r->uniform_bits[j] = mpq_kvsearch_avg_bits(t, idx, r->context_len, r->overhead);
    }
    free(idx);
    for (int i = 0; st == MPQ_OK && i < r->n_picks; i++) {
        mpq_kvsearch_pick *pk = &r->picks[i];
        const mpq_kvsearch_point *p = &r->frontier->points[pk->point];
        double mixed = r->point_eval[pk->point].kl_mean;
        if (!(pk->uniform_compared = mpq_calloc((size_t)np, sizeof *pk->uniform_compared)))
            return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
        for (int j = 0; j < np; j++) {
            if (r->uniform_bits[j] + 1e-12 < p->bits) continue;
            pk->uniform_compared[j] = true;
            pk->n_uniform_compared++;
            pk->n_uniform_beaten += mixed < r->uniform_eval[j].kl_mean;
        }
    }
    return st;
}

static mpq_status step_evaluate(run_ctx *c, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    if (!c->rq.evaluate) return MPQ_OK;
    size_t nf = r->frontier->n_points ? r->frontier->n_points : 1, np = (size_t)r->table->n_pairs;
    r->point_eval = mpq_calloc(nf, sizeof *r->point_eval);
    r->point_evaluation_id = mpq_calloc(nf, sizeof *r->point_evaluation_id);
    r->uniform_eval = mpq_calloc(np, sizeof *r->uniform_eval);
    r->uniform_bits = mpq_calloc(np, sizeof *r->uniform_bits);
    r->uniform_evaluation_id = mpq_calloc(np, sizeof *r->uniform_evaluation_id);
    if (!r->point_eval || !r->point_evaluation_id || !r->uniform_eval || !r->uniform_bits || !r->uniform_evaluation_id)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    mpq_kvsearch_eval *ev = NULL;
    mpq_status st = mpq_kvsearch_eval_open(c->db, r->job_id, c->rq.max_seqs, &ev, err);
    if (st == MPQ_OK) {
        mpq_kvsearch_eval_set_workers(ev, c->rq.eval_workers);
        r->eval_source = mpq_kvsearch_eval_source(ev);
        if ((st = eval_frontier(c, ev, err)) == MPQ_OK) st = eval_uniform(c, ev, err);
    }
    mpq_kvsearch_eval_free(ev);
    if (st == MPQ_OK) r->evaluated = true;
    return st;
}

/* ---- joint weight + KV budget --------------------------------------------------------------- */

/* One context: feasible row, or an infeasible row with the solver's message (status MPQ_OK). */
static mpq_status joint_row(run_ctx *c, mpq_kvsearch_joint_row *row, mpq_err *err) {
    mpq_kvsearch_joint_opts jo = mpq_kvsearch_joint_opts_default();
    jo.budget_bytes = c->rq.joint_bytes;
    jo.context_len = row->context_len;
    jo.batch = c->rq.batch;
    jo.fixed_bytes = c->r->joint_fixed_bytes;
    mpq_kvsearch_joint *jp = NULL;
    mpq_solution *sol = NULL;
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = false;
    mpq_err e = {0};
    mpq_status st = mpq_kvsearch_joint_build(c->db, c->r->job_id, c->r->table, &jo, &jp, &e);
    if (st == MPQ_OK) st = mpq_solve_ilp(jp->problem, &so, &sol, &e);
    if (st == MPQ_OK) {
        row->feasible = true;
        mpq_kvsearch_joint_summary(jp, c->r->table, sol, &row->result);
    } else if (st == MPQ_ERR_INFEASIBLE) {
        snprintf(row->message, sizeof row->message, "%s", e.msg);
        st = MPQ_OK;
    } else if (err) {
        *err = e;
    }
    mpq_solution_free(sol);
    mpq_kvsearch_joint_free(jp);
    return st;
}

static mpq_status step_joint(run_ctx *c, mpq_err *err) {
    mpq_kvsearch_report *r = c->r;
    if (!c->rq.joint) return MPQ_OK;
    mpq_config *cfg = NULL;
    mpq_config_stats cs;
    mpq_status st = job_model(c, err);
    if (st == MPQ_OK && (st = mpq_config_uniform(c->model, "f32", NULL, &cfg, err)) == MPQ_OK)
        st = mpq_config_get_stats(cfg, c->model, 0, &cs, err);
    mpq_config_free(cfg);
    if (st != MPQ_OK) return st;
    r->joint_fixed_bytes = cs.total_weight_bytes - cs.linear_bytes;
    if (!(r->joint = mpq_calloc((size_t)c->rq.n_contexts, sizeof *r->joint)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    int n_feasible = 0;
    for (int i = 0; i < c->rq.n_contexts; i++) { /* n_joint counts the rows done */
        r->joint[i].context_len = c->rq.contexts[i];
        if ((st = joint_row(c, &r->joint[i], err)) != MPQ_OK) return st;
        n_feasible += r->joint[i].feasible;
        r->n_joint++;
    }
    if (n_feasible == 0) return mpq_err_set(err, MPQ_ERR_INFEASIBLE, "%s", r->joint[r->n_joint - 1].message);
    return MPQ_OK;
}

/* ---- the run -------------------------------------------------------------------------------- */

mpq_status mpq_kvsearch_run(mpq_db *db, const char *job, const mpq_kvsearch_request *req,
                            mpq_kvsearch_report **out, mpq_err *err) {
    if (!db || !job || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv: NULL argument");
    *out = NULL;
    static const int64_t steady = 0;
    run_ctx c = {.db = db, .rq = req ? *req : mpq_kvsearch_request_default()};
    if (c.rq.n_contexts < 0 || (c.rq.n_contexts > 0 && !c.rq.contexts))
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv: %d contexts without a list", c.rq.n_contexts);
    if (c.rq.n_contexts == 0) {
        c.rq.contexts = &steady;
        c.rq.n_contexts = 1;
    }
    mpq_status st = check_request(&c.rq, err);
    if (st != MPQ_OK) return st;
    if (!(c.r = calloc(1, sizeof *c.r))) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv: out of memory");
    c.r->context_len = c.rq.contexts[0];
    c.r->overhead = !c.rq.nominal;
    c.r->spearman = NAN;
    if ((st = open_job(db, job, c.r, err)) == MPQ_OK &&
        (st = c.rq.per_head ? mpq_kvsearch_table_load_heads(db, c.r->job_id, c.rq.metric, &c.r->table, err)
                            : mpq_kvsearch_table_load(db, c.r->job_id, c.rq.metric, &c.r->table, err)) == MPQ_OK &&
        (st = step_ladder(&c, err)) == MPQ_OK)
        st = step_asymmetry(&c, err);
    bool shown = st == MPQ_OK; /* the report has its ladder and keys vs values: worth showing */
    if (st == MPQ_OK && (st = step_clusters(&c, err)) == MPQ_OK && (st = step_frontier(&c, err)) == MPQ_OK &&
        (st = step_budgets(&c, err)) == MPQ_OK && (st = step_evaluate(&c, err)) == MPQ_OK)
        st = step_joint(&c, err);
    mpq_model_free(c.model);
    if (st != MPQ_OK && !shown) {
        mpq_kvsearch_report_free(c.r);
        return st;
    }
    *out = c.r;
    return st;
}
