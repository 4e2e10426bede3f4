/*
 * jobsolve_evaluate.c - closing the loop on a stored job (mpq_jobsolve.h): a stored
 * configuration is run by the reference executor on the job's evaluation windows against the
 * FP model (mpq_job_load_evalset: the model file is loaded and checked here, and only here),
 * uniform baselines are evaluated once per job, and predicted loss is compared with measured
 * KL by Spearman rank correlation (average ranks for ties).
 */
#include "jobsolve_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_config.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_rng.h"

/* Runs cfg (parsed on the loaded model) on the evaluation windows, on the job's evaluation
 * workers (mpq_job_set_eval_workers; the numbers do not depend on their count). */
static mpq_status run_config(mpq_job *job, const mpq_job_evalset *es, const mpq_config *cfg, mpq_eval_stats *out,
                             mpq_err *err) {
    mpq_weights *qw = NULL;
    mpq_kv_pair *pairs = NULL, *head_pairs = NULL;
    mpq_calib *cal = NULL;
    const double **xtx = NULL;
    const mpq_model_config *mc = mpq_model_get_config(es->model);
    mpq_status st = MPQ_OK;
    if (mpq_config_needs_xtx(cfg)) { /* SAQ candidates: the job's X^T X */
        int nl = mpq_model_n_linear(es->model);
        st = mpq_job_calib_create(job, &cal, err);
        if (st == MPQ_OK && !(xtx = mpq_calloc((size_t)nl, sizeof *xtx)))
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        for (int i = 0; st == MPQ_OK && i < nl; i++) xtx[i] = mpq_calib_xtx_packed(cal, i, NULL);
    }
    /* the model's tensors borrowed, the quantized layers owned */
    if (st == MPQ_OK) st = mpq_config_apply_view(cfg, es->model, xtx, &qw, err);
    if (st == MPQ_OK && !(pairs = mpq_calloc((size_t)mc->n_layers, sizeof *pairs)))
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if (st == MPQ_OK) {
        for (int l = 0; l < mc->n_layers; l++) pairs[l] = mpq_config_kv(cfg, l);
        mpq_exec_opts eo = mpq_exec_opts_default();
        eo.kv_pairs = pairs;
        eo.n_kv_pairs = mc->n_layers;
        eo.kv_scheme = *mpq_config_kv_scheme(cfg);
        size_t nh = (size_t)mc->n_layers * (size_t)mc->n_kv_heads;
        if (mpq_config_has_kv_heads(cfg)) { /* per-(block, KV head) pairs */
            if (!(head_pairs = mpq_calloc(nh, sizeof *head_pairs))) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
            else {
                mpq_config_kv_head_pairs(cfg, head_pairs);
                eo.kv_head_pairs = head_pairs;
                eo.n_kv_head_pairs = (int)nh;
            }
        }
        memset(out, 0, sizeof *out);
        if (st == MPQ_OK) st = mpq_exec_eval_ref_workers(es->ex, mpq_job_eval_workers(job), qw, &eo, es->ref, 0, out, err);
    }
    free(head_pairs);
    free(pairs);
    free(xtx);
    mpq_calib_free(cal);
    mpq_weights_free(qw);
    return st;
}

mpq_status mpq_jobsolve_evaluate_config(mpq_job *job, const char *config_json, int64_t solution_id,
                                        mpq_jobsolve_eval *out, mpq_err *err) {
    if (!job || !config_json || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "evaluate: NULL argument");
    memset(out, 0, sizeof *out);
    const mpq_job_evalset *es = NULL;
    mpq_config *cfg = NULL;
    mpq_status st = mpq_job_load_evalset(job, 0, &es, err);
    if (st != MPQ_OK) return st;
    mpq_eval_stats ev;
    mpq_config_stats cs;
    if ((st = mpq_config_parse(config_json, "config", es->model, &cfg, err)) != MPQ_OK) goto done;
    if ((st = run_config(job, es, cfg, &ev, err)) != MPQ_OK) goto done;
    if ((st = mpq_config_get_stats(cfg, es->model, 0, &cs, err)) != MPQ_OK) goto done;
    out->ppl = ev.ppl;
    out->kl = ev.kl_mean;
    out->kl_stderr = ev.kl_se;
    out->top1 = ev.top1;
    out->ce = ev.ce;
    out->n_tokens = ev.n_tokens;
    out->avg_bits = cs.avg_weight_bits;
    const mpq_job_data_spec *ds = es->data;
    mpq_db_dataset dd = {.path = es->data_path, .sha256 = es->data_sha256,
                         .n_tokens = (int64_t)ds->n_seqs * (ds->seq_len + 1), .seq_len = ds->seq_len,
                         .n_seqs = ds->n_seqs, .seed = ds->seed};
    int64_t dataset_id = 0;
    if ((st = mpq_db_dataset_upsert(mpq_job_db(job), &dd, &dataset_id, err)) != MPQ_OK) goto done;
    mpq_db_evaluation row = {.job_id = mpq_job_get_row(job)->id, .solution_id = solution_id, .dataset_id = dataset_id,
                             .config_json = (char *)config_json, .ppl = ev.ppl, .kl = ev.kl_mean,
                             .kl_stderr = ev.kl_se, .top1 = ev.top1, .ce = ev.ce, .n_tokens = ev.n_tokens};
    st = mpq_db_evaluation_insert(mpq_job_db(job), &row, &out->evaluation_id, err);
done:
    mpq_config_free(cfg);
    return st;
}

mpq_status mpq_jobsolve_evaluate_solution(mpq_job *job, int64_t solution_id, mpq_jobsolve_eval *out, mpq_err *err) {
    if (!job || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "evaluate: NULL argument");
    const mpq_db_job *row = mpq_job_get_row(job);
    mpq_db_solution s;
    memset(&s, 0, sizeof s);
    mpq_status st = mpq_db_solution_get(mpq_job_db(job), solution_id, &s, NULL, NULL, err);
    if (st != MPQ_OK) return st;
    if (s.job_id != row->id)
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "solution %lld does not belong to job '%s'", (long long)solution_id,
                         row->name);
    else if (!s.config_json || !*s.config_json)
        st = mpq_err_set(err, MPQ_ERR_INVALID, "solution '%s' (%s) has no configuration to evaluate", s.name, s.status);
    else
        st = mpq_jobsolve_evaluate_config(job, s.config_json, solution_id, out, err);
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

/* The newest stored evaluation of the uniform config `label` into out (out->reused). */
static mpq_status find_uniform(mpq_job *job, const char *label, mpq_jobsolve_eval *out, mpq_err *err) {
    mpq_db_evaluation *evs = NULL;
    int n_evs = 0;
    mpq_status st = mpq_db_evaluations_fetch(mpq_job_db(job), mpq_job_get_row(job)->id, &evs, &n_evs, err);
    if (st != MPQ_OK) return st;
    for (int i = n_evs - 1; i >= 0 && !out->reused; i--) {
        if (evs[i].solution_id != 0) continue;
        char *nm = config_name(evs[i].config_json);
        if (nm && strcmp(nm, label) == 0)
            *out = (mpq_jobsolve_eval){.evaluation_id = evs[i].id, .ppl = evs[i].ppl, .kl = evs[i].kl,
                                       .kl_stderr = evs[i].kl_stderr, .top1 = evs[i].top1, .ce = evs[i].ce,
                                       .n_tokens = evs[i].n_tokens, .reused = true};
        free(nm);
    }
    for (int i = 0; i < n_evs; i++) free(evs[i].config_json);
    free(evs);
    return MPQ_OK;
}

mpq_status mpq_jobsolve_evaluate_uniform(mpq_job *job, const char *candidate, bool force, mpq_jobsolve_eval *out,
                                         mpq_err *err) {
    if (!job || !candidate || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "evaluate: NULL argument");
    memset(out, 0, sizeof *out);
    const mpq_model *shape = mpq_job_get_shape(job);
    mpq_config *cfg = NULL;
    char *text = NULL, *final = NULL;
    cJSON *root = NULL;
    char label[MPQ_DB_NAME_MAX];
    mpq_candidate c;
    mpq_config_stats cs;
    mpq_status st = mpq_candidate_parse(candidate, &c, err);
    if (st != MPQ_OK) return st;
    snprintf(label, sizeof label, "uniform:%s", c.name);
    if (!force && (st = find_uniform(job, label, out, err)) != MPQ_OK) return st;
    if ((st = mpq_config_uniform(shape, c.name, NULL, &cfg, err)) != MPQ_OK) goto done;
    if (out->reused) { /* sizes from the stored table: no model needed */
        if ((st = mpq_config_get_stats(cfg, shape, 0, &cs, err)) == MPQ_OK) out->avg_bits = cs.avg_weight_bits;
        goto done;
    }
    text = mpq_config_to_json(cfg, shape);
    root = text ? cJSON_Parse(text) : NULL;
    if (!root || !cJSON_AddStringToObject(root, "name", label) || !(final = cJSON_Print(root))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    st = mpq_jobsolve_evaluate_config(job, final, 0, out, err);
done:
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

double mpq_jobsolve_spearman(const double *x, const double *y, int n) {
    if (!x || !y || n < 2) return NAN;
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

/* Label of evaluation ev: its solution's name, else the config's "name". */
static void eval_label(mpq_job *job, const mpq_db_evaluation *ev, char *out, size_t n) {
    if (ev->solution_id) {
        mpq_db_solution s;
        memset(&s, 0, sizeof s);
        if (mpq_db_solution_get(mpq_job_db(job), ev->solution_id, &s, NULL, NULL, NULL) == MPQ_OK)
            snprintf(out, n, "%s", s.name);
        else snprintf(out, n, "(solution %lld)", (long long)ev->solution_id);
        mpq_db_solution_release(&s);
        return;
    }
    char *nm = config_name(ev->config_json);
    snprintf(out, n, "%s", nm ? nm : "(config)");
    free(nm);
}

/* Predicted loss (expression e over stored rows) and avg bits of a stored config, on the
 * job's stored layer table. False when the config does not parse. */
static bool predict(mpq_job *job, const jobsolve_expr *e, const char *config_json, double *pred, double *avg_bits) {
    const mpq_model *shape = mpq_job_get_shape(job);
    mpq_config *cfg = NULL;
    if (!config_json || mpq_config_parse(config_json, "config", shape, &cfg, NULL) != MPQ_OK) return false;
    mpq_config_stats cs;
    *avg_bits = mpq_config_get_stats(cfg, shape, 0, &cs, NULL) == MPQ_OK ? cs.avg_weight_bits : NAN;
    double p = 0;
    for (int l = 0; l < mpq_job_n_linear(job) && isfinite(p); l++) {
        const mpq_db_layer *ly = mpq_job_linear(job, l);
        int mi = mpq_model_find_linear(shape, ly->name);
        const mpq_candidate *c = mi >= 0 ? mpq_config_layer(cfg, mi) : NULL;
        if (!c) {
            p = NAN;
            break;
        }
        for (int t = 0; t < e->n; t++) {
            double v = NAN;
            if (mpq_db_metric_get(mpq_job_db(job), mpq_job_get_row(job)->id, ly->id, c->name, e->name[t], &v, NULL,
                                  NULL, NULL) != MPQ_OK)
                v = NAN;
            double lv = 1.0; /* the per-layer factor of a product (candidate "") */
            if (e->name2[t][0] && mpq_db_metric_get(mpq_job_db(job), mpq_job_get_row(job)->id, ly->id, "",
                                                    e->name2[t], &lv, NULL, NULL, NULL) != MPQ_OK)
                lv = NAN;
            p += e->w[t] * v * lv;
        }
    }
    mpq_config_free(cfg);
    *pred = p;
    return true;
}

mpq_status mpq_jobsolve_compare(mpq_job *job, const char *metric, mpq_jobsolve_compare_row **rows_out, int *n_rows,
                                double *spearman, int *n_used, mpq_err *err) {
    if (!job || !rows_out || !n_rows || !spearman || !n_used)
        return mpq_err_set(err, MPQ_ERR_INVALID, "compare: NULL argument");
    *rows_out = NULL;
    *n_rows = 0;
    *spearman = NAN;
    *n_used = 0;
    jobsolve_expr e;
    mpq_db_evaluation *evs = NULL;
    int n_evs = 0, nr = 0;
    mpq_jobsolve_compare_row *rows = NULL;
    double *xs = NULL, *ys = NULL;
    mpq_status st = jobsolve_expr_parse(metric ? metric : "kl", &e, err);
    if (st == MPQ_OK) st = jobsolve_expr_resolve(job, &e, err);
    if (st != MPQ_OK) return st;
    if ((st = mpq_db_evaluations_fetch(mpq_job_db(job), mpq_job_get_row(job)->id, &evs, &n_evs, err)) != MPQ_OK)
        return st;
    size_t cap = n_evs ? (size_t)n_evs : 1;
    rows = mpq_calloc(cap, sizeof *rows);
    xs = mpq_calloc(cap, sizeof *xs);
    ys = mpq_calloc(cap, sizeof *ys);
    if (!rows || !xs || !ys) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = n_evs - 1; i >= 0; i--) { /* newest first: keep one row per label */
        mpq_jobsolve_compare_row row;
        memset(&row, 0, sizeof row);
        row.solution_id = evs[i].solution_id;
        eval_label(job, &evs[i], row.label, sizeof row.label);
        bool dup = false;
        for (int k = 0; k < nr; k++)
            if (rows[k].solution_id == row.solution_id && strcmp(rows[k].label, row.label) == 0) dup = true;
        if (dup || !predict(job, &e, evs[i].config_json, &row.predicted, &row.avg_bits)) continue;
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
    if (nu >= 3) *spearman = mpq_jobsolve_spearman(xs, ys, nu);
    *rows_out = rows;
    *n_rows = nr;
    rows = NULL;
done:
    free(ys);
    free(xs);
    free(rows);
    for (int i = 0; i < n_evs; i++) free(evs[i].config_json);
    free(evs);
    return st;
}

/* ------------------------------------------------------------------- random configurations */

/* True when stored solution `name` has exactly the candidates of `choice` (by layer) and an
 * evaluation among evs; *id gets its id. */
static bool random_reusable(mpq_job *job, const mpq_jobsolve_problem *p, const int *choice, const char *name,
                            const mpq_db_evaluation *evs, int n_evs, int64_t *id) {
    mpq_db *db = mpq_job_db(job);
    if (mpq_db_solution_find(db, mpq_job_get_row(job)->id, name, id, NULL) != MPQ_OK) return false;
    bool evaluated = false;
    for (int i = 0; i < n_evs && !evaluated; i++) evaluated = evs[i].solution_id == *id;
    if (!evaluated) return false;
    mpq_db_solution s;
    mpq_db_assignment *as = NULL;
    int n_as = 0;
    memset(&s, 0, sizeof s);
    if (mpq_db_solution_get(db, *id, &s, &as, &n_as, NULL) != MPQ_OK) return false;
    bool same = n_as == p->n_layers && strcmp(s.solver, "random") == 0;
    for (int a = 0; same && a < n_as; a++) {
        int l = 0;
        while (l < p->n_layers && p->layers[l].id != as[a].layer_id) l++;
        same = l < p->n_layers && strcmp(as[a].candidate, p->options[choice[p->group_of[l]]]) == 0;
    }
    free(as);
    mpq_db_solution_release(&s);
    return same;
}

mpq_status mpq_jobsolve_random(mpq_job *job, const char *metric, int n, uint64_t seed, int64_t *solution_ids,
                               int *n_reused, mpq_err *err) {
    if (!job || !solution_ids) return mpq_err_set(err, MPQ_ERR_INVALID, "random: NULL argument");
    if (n < 1 || n > MPQ_JOBSOLVE_RANDOM_MAX)
        return mpq_err_set(err, MPQ_ERR_INVALID, "random: %d configurations (1..%d)", n, MPQ_JOBSOLVE_RANDOM_MAX);
    if (n_reused) *n_reused = 0;
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.metric = metric ? metric : "kl";
    o.smooth = false;
    mpq_jobsolve_problem *p = NULL;
    mpq_db_evaluation *evs = NULL;
    int n_evs = 0;
    int *choice = NULL;
    mpq_status st = mpq_jobsolve_problem_build(job, &o, &p, err);
    if (st != MPQ_OK) return st;
    const int ni = mpq_problem_n_items(p->problem), n_cand = mpq_job_get_spec(job)->n_candidates;
    if (ni != p->n_layers || p->n_options != n_cand) { /* cannot happen: no ties, no f16 */
        st = mpq_err_set(err, MPQ_ERR_INVALID, "random: unexpected problem shape");
        goto done;
    }
    if ((st = mpq_db_evaluations_fetch(mpq_job_db(job), mpq_job_get_row(job)->id, &evs, &n_evs, err)) != MPQ_OK)
        goto done;
    if (!(choice = mpq_calloc((size_t)ni, sizeof *choice))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    mpq_rng r;
    mpq_rng_seed(&r, seed);
    for (int k = 0; k < n; k++) {
        for (int l = 0; l < p->n_layers; l++) { /* uniform over the layer's available candidates */
            const int it = p->group_of[l];
            int m = 0;
            for (int o = 0; o < n_cand; o++) m += mpq_problem_allowed(p->problem, it, o);
            int d = (int)mpq_rng_below(&r, (uint64_t)(m > 0 ? m : 1)), o = 0;
            for (; o < n_cand; o++)
                if (mpq_problem_allowed(p->problem, it, o) && d-- == 0) break;
            choice[it] = o < n_cand ? o : 0;
        }
        char name[MPQ_DB_NAME_MAX];
        snprintf(name, sizeof name, "random-%llu-%d", (unsigned long long)seed, k);
        if (random_reusable(job, p, choice, name, evs, n_evs, &solution_ids[k])) {
            if (n_reused) (*n_reused)++;
            continue;
        }
        mpq_solution s;
        double tc[MPQ_N_RESOURCE_KINDS] = {0, 0, 0, 0};
        memset(&s, 0, sizeof s);
        s.n_items = ni;
        s.n_resources = p->n_resources;
        s.choice = choice;
        s.total_cost = tc;
        for (int i = 0; i < ni; i++) {
            s.total_loss_raw += mpq_problem_loss(p->problem, i, choice[i]);
            for (int q = 0; q < p->n_resources; q++) tc[q] += mpq_problem_cost(p->problem, q, i, choice[i]);
        }
        s.total_loss = s.total_loss_raw;
        s.bound = s.gap = NAN;
        s.status = MPQ_SOLVE_FEASIBLE;
        snprintf(s.solver, sizeof s.solver, "random");
        mpq_jobsolve_result *sr = NULL;
        if ((st = jobsolve_store_choice(job, p, &o, &s, "random", name, NAN, &sr, err)) != MPQ_OK) goto done;
        solution_ids[k] = sr->solution_id;
        mpq_jobsolve_result_free(sr);
        mpq_jobsolve_eval ev;
        if ((st = mpq_jobsolve_evaluate_solution(job, solution_ids[k], &ev, err)) != MPQ_OK) goto done;
    }
done:
    free(choice);
    for (int i = 0; i < n_evs; i++) free(evs[i].config_json);
    free(evs);
    mpq_jobsolve_problem_free(p);
    return st;
}
