/*
 * kv_joint.c - weights and KV cache under one byte budget: one multiple-choice knapsack over
 * the linear layers (the job's candidates, plus f32) and the KV blocks (the job's pairs, plus
 * k16v16), in integral units of 1/(8*G) byte, solved by ILP. API: include/mpq/mpq_kvsearch.h.
 *
 * Reference: HAWQ-V3 (Yao et al. 2021) for the ILP; KVTuner (Li et al. 2025) for the pairs.
 */
#include "mpq/mpq_kvsearch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "search/kv_internal.h"

/* ---- joint weight + KV -------------------------------------------------------------------- */

mpq_kvsearch_joint_opts mpq_kvsearch_joint_opts_default(void) {
    return (mpq_kvsearch_joint_opts){.budget_bytes = INFINITY, .context_len = 4096, .batch = 1,
                                     .weight_metric = "kl", .fixed_bytes = 0};
}

void mpq_kvsearch_joint_free(mpq_kvsearch_joint *j) {
    if (!j) return;
    mpq_problem_free(j->problem);
    free(j->linear_names);
    free(j->linear_params);
    free(j->cand_names);
    free(j);
}

mpq_status mpq_kvsearch_joint_build(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                    const mpq_kvsearch_joint_opts *o, mpq_kvsearch_joint **out, mpq_err *err) {
    if (!db || !t || !o || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: NULL argument");
    *out = NULL;
    if (o->context_len < 1 || o->batch < 1 || o->fixed_bytes < 0 || !(o->budget_bytes >= 0))
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: need context > 0, batch > 0, budget >= 0 (got %lld, %lld, %g)",
                           (long long)o->context_len, (long long)o->batch, o->budget_bytes);
    const char *wm = o->weight_metric ? o->weight_metric : "kl";
    mpq_db_job job;
    mpq_db_layer *layers = NULL;
    char **cands = NULL;
    int n_layers = 0, n_cands = 0;
    int64_t *ids = NULL;
    double *val = NULL;
    mpq_kvsearch_joint *j = NULL;
    mpq_status st = mpq_db_job_get(db, job_id, &job, err);
    if (st != MPQ_OK) goto done;
    if ((st = mpq_db_layers_fetch(db, job.model_id, &layers, &n_layers, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_metric_candidates(db, job_id, wm, &cands, &n_cands, err)) != MPQ_OK) goto done;
    if (n_cands == 0) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s' has no '%s' rows for weight candidates (run its "
                         "layer_sensitivity stage)", job.name, wm);
        goto done;
    }
    int nl = 0;
    for (int i = 0; i < n_layers; i++) nl += strcmp(layers[i].kind, "kv_cache") != 0;
    if (nl == 0 || n_cands + 1 > 255 || t->n_pairs + 1 > 255) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: job '%s': %d linear layers, %d candidates", job.name, nl,
                         n_cands);
        goto done;
    }
    if (!(j = calloc(1, sizeof *j)) || !(j->linear_names = mpq_calloc((size_t)nl, sizeof *j->linear_names)) ||
        !(j->linear_params = mpq_calloc((size_t)nl, sizeof *j->linear_params)) ||
        !(j->cand_names = mpq_calloc((size_t)n_cands + 1, sizeof *j->cand_names)) ||
        !(ids = mpq_calloc((size_t)nl, sizeof *ids)) || !(val = mpq_calloc((size_t)nl, sizeof *val))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    j->n_linear = nl;
    j->n_blocks = t->n_blocks;
    j->n_cands = n_cands + 1;
    j->n_kv_options = t->n_pairs + 1;
    j->opts = *o;
    j->opts.weight_metric = NULL;
    j->cost_per_byte = 8 * (int64_t)t->scheme.group_size;
    int nopt = j->n_cands > j->n_kv_options ? j->n_cands : j->n_kv_options;
    if ((st = mpq_problem_create(nl + t->n_blocks, nopt, 1, &j->problem, err)) != MPQ_OK) goto done;
    mpq_problem *p = j->problem;
    mpq_problem_set_resource_name(p, 0, "bytes x 8G", NULL);
    int li = 0;
    for (int i = 0; i < n_layers; i++) {
        if (strcmp(layers[i].kind, "kv_cache") == 0) continue;
        snprintf(j->linear_names[li], sizeof j->linear_names[li], "%s", layers[i].name);
        j->linear_params[li] = layers[i].rows * layers[i].cols;
        ids[li] = layers[i].id;
        mpq_problem_set_item_name(p, li, layers[i].name, NULL);
        mpq_problem_set_n_options(p, li, j->n_cands, NULL);
        li++;
    }
    for (int c = 0; c <= n_cands; c++) {
        const char *cn = c < n_cands ? cands[c] : "f32";
        mpq_candidate cd;
        snprintf(j->cand_names[c], sizeof j->cand_names[c], "%s", cn);
        if ((st = mpq_candidate_parse(cn, &cd, err)) != MPQ_OK) goto done;
        int found = nl;
        if (c < n_cands &&
            (st = mpq_db_metric_fetch(db, job_id, wm, cn, nl, ids, val, NULL, &found, err)) != MPQ_OK)
            goto done;
        li = 0;
        for (int i = 0; i < n_layers; i++) {
            if (strcmp(layers[i].kind, "kv_cache") == 0) continue;
            double loss = c < n_cands ? val[li] : 0.0;
            int64_t bytes = mpq_candidate_bytes(&cd, layers[i].rows, layers[i].cols), cost;
            if (bytes < 0 || !kv_mul64(bytes, j->cost_per_byte, &cost)) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: %s: size of %s overflows", layers[i].name, cn);
                goto done;
            }
            if (isnan(loss)) {
                if ((st = mpq_problem_set_allowed(p, li, c, false, err)) != MPQ_OK) goto done;
            } else if ((st = mpq_problem_set_loss(p, li, c, loss, err)) != MPQ_OK ||
                       (st = mpq_problem_set_cost(p, 0, li, c, (double)cost, err)) != MPQ_OK)
                goto done;
            li++;
        }
    }
    for (int b = 0; b < t->n_blocks; b++) {
        int it = nl + b;
        char name[48];
        if (t->n_heads > 0) /* per-head table: item (block, head) */
            snprintf(name, sizeof name, "blk.%d.kv.h%d", b / t->n_heads, b % t->n_heads);
        else
            snprintf(name, sizeof name, "blk.%d.kv", b);
        mpq_problem_set_item_name(p, it, name, NULL);
        mpq_problem_set_n_options(p, it, j->n_kv_options, NULL);
        for (int q = 0; q < j->n_kv_options; q++) {
            mpq_kv_pair pr = q < t->n_pairs ? t->pairs[q] : (mpq_kv_pair){16, 16};
            double loss = q < t->n_pairs ? t->err[(size_t)b * t->n_pairs + q] : 0.0;
            int64_t u = mpq_kvsearch_pair_units(t, pr, o->context_len, true), cost;
            if (u < 0 || !kv_mul64(u, o->batch, &cost) || cost > ((int64_t)1 << 53)) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: KV size at context %lld x batch %lld overflows",
                                 (long long)o->context_len, (long long)o->batch);
                goto done;
            }
            if (isnan(loss)) {
                if ((st = mpq_problem_set_allowed(p, it, q, false, err)) != MPQ_OK) goto done;
            } else if ((st = mpq_problem_set_loss(p, it, q, loss, err)) != MPQ_OK ||
                       (st = mpq_problem_set_cost(p, 0, it, q, (double)cost, err)) != MPQ_OK)
                goto done;
        }
    }
    double budget = floor((o->budget_bytes - (double)o->fixed_bytes) * (double)j->cost_per_byte);
    if (isinf(o->budget_bytes)) budget = INFINITY;
    if (!(budget >= 0)) {
        st = mpq_err_set(err, MPQ_ERR_INFEASIBLE, "kv joint: budget %.0f bytes is below the %lld fixed bytes",
                         o->budget_bytes, (long long)o->fixed_bytes);
        goto done;
    }
    if ((st = mpq_problem_set_budget(p, 0, budget, err)) != MPQ_OK) goto done;
    *out = j;
    j = NULL;
done:
    mpq_kvsearch_joint_free(j);
    mpq_db_strings_free(cands, n_cands);
    free(layers);
    free(ids);
    free(val);
    return st;
}

void mpq_kvsearch_joint_summary(const mpq_kvsearch_joint *j, const mpq_kvsearch_table *t, const mpq_solution *s,
                                mpq_kvsearch_joint_result *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!j || !t || !s) return;
    double wc = 0, kc = 0, params = 0;
    for (int i = 0; i < j->n_linear; i++) {
        wc += mpq_problem_cost(j->problem, 0, i, s->choice[i]);
        out->loss_weights += mpq_problem_loss(j->problem, i, s->choice[i]);
        params += (double)j->linear_params[i];
    }
    for (int b = 0; b < j->n_blocks; b++) {
        int it = j->n_linear + b;
        kc += mpq_problem_cost(j->problem, 0, it, s->choice[it]);
        out->loss_kv += mpq_problem_loss(j->problem, it, s->choice[it]);
    }
    double cpb = (double)j->cost_per_byte;
    out->weight_bytes = wc / cpb + (double)j->opts.fixed_bytes;
    out->kv_bytes = kc / cpb;
    out->avg_weight_bits = params > 0 ? 8.0 * (wc / cpb) / params : NAN;
    out->avg_kv_bits = kc / ((double)j->opts.batch * (double)j->n_blocks *
                             (double)mpq_kvsearch_units_per_bit(t, j->opts.context_len, true));
    out->bound = s->bound;
    out->gap = s->gap;
    out->status = s->status;
}
