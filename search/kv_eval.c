/*
 * kv_eval.c - measured quality of KV configurations: the job's model with FP weights and
 * per-block KV pairs, KL / top-1 / perplexity against the FP reference on the job's
 * evaluation windows, stored as evaluations; Spearman rank correlation of predicted and
 * measured errors. API: include/mpq/mpq_kvsearch.h.
 *
 * Reference: Spearman (1904), with average ranks for ties.
 */
#include "mpq/mpq_kvsearch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_data.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_tokenizer.h"

/* ---- evaluation --------------------------------------------------------------------------- */

struct mpq_kvsearch_eval {
    mpq_job *job;               /* the stored job (owns model, windows, FP reference) */
    const mpq_job_evalset *es;  /* borrowed from job */
    mpq_kv_saq *saq;            /* kv scheme saq: the job's stored bases (artifact kv_saq_bases) */
};

void mpq_kvsearch_eval_free(mpq_kvsearch_eval *ev) {
    if (!ev) return;
    mpq_kv_saq_free(ev->saq);
    mpq_job_close(ev->job);
    free(ev);
}

void mpq_kvsearch_eval_set_workers(mpq_kvsearch_eval *ev, int n_workers) {
    if (ev) mpq_job_set_eval_workers(ev->job, n_workers);
}

const mpq_model *mpq_kvsearch_eval_model(const mpq_kvsearch_eval *ev) { return ev && ev->es ? ev->es->model : NULL; }
const char *mpq_kvsearch_eval_source(const mpq_kvsearch_eval *ev) { return ev && ev->es ? ev->es->source : "calibration"; }

mpq_status mpq_kvsearch_job_model(mpq_db *db, int64_t job_id, mpq_model **out, mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv: NULL argument");
    *out = NULL;
    mpq_job *job = NULL;
    mpq_status st = mpq_job_open_id(db, job_id, &job, err);
    if (st == MPQ_OK) st = mpq_model_shape_copy(mpq_job_get_shape(job), out, err);
    mpq_job_close(job);
    return st;
}

mpq_status mpq_kvsearch_eval_open(mpq_db *db, int64_t job_id, int max_seqs, mpq_kvsearch_eval **out,
                                  mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval: NULL argument");
    *out = NULL;
    mpq_kvsearch_eval *ev = calloc(1, sizeof *ev);
    if (!ev) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = mpq_job_open_id(db, job_id, &ev->job, err);
    if (st == MPQ_OK) st = mpq_job_load_evalset(ev->job, max_seqs, &ev->es, err);
    const mpq_job_spec *spec = st == MPQ_OK ? mpq_job_get_spec(ev->job) : NULL;
    if (spec && spec->has_kv && spec->kv_scheme.mode == MPQ_KV_SAQ) {
        const mpq_model_config *mc = mpq_model_get_config(ev->es->model);
        st = mpq_kvsearch_saq_bases_get(db, job_id, spec->name, mc->n_layers, mc->n_kv_heads, mc->head_dim, &ev->saq,
                                        err);
    }
    if (st != MPQ_OK) {
        mpq_kvsearch_eval_free(ev);
        return st;
    }
    *out = ev;
    return MPQ_OK;
}

mpq_status mpq_kvsearch_eval_run(mpq_kvsearch_eval *ev, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                 mpq_eval_stats *stats, mpq_err *err) {
    if (!ev || !pairs || !scheme || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval: NULL argument");
    memset(stats, 0, sizeof *stats);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.kv_scheme = *scheme;
    o.kv_pairs = pairs;
    o.n_kv_pairs = mpq_model_get_config(ev->es->model)->n_layers;
    o.kv_saq = ev->saq;
    return mpq_exec_eval_ref_workers(ev->es->ex, mpq_job_eval_workers(ev->job), mpq_model_get_weights(ev->es->model),
                                     &o, ev->es->ref, 0, stats, err);
}

/* Stores an evaluation of the configuration cfg (JSON text, freed here) on ev's evaluation set. */
static mpq_status store_config(mpq_db *db, int64_t job_id, const mpq_kvsearch_eval *ev, char *cfg,
                               const mpq_eval_stats *stats, int64_t solution_id, int64_t *evaluation_id, mpq_err *err) {
    const mpq_job_evalset *es = ev->es;
    mpq_db_dataset ds = {.path = es->data_path, .sha256 = es->data_sha256,
                         .n_tokens = (int64_t)es->n_seqs * (es->seq_len + 1), .seq_len = es->seq_len,
                         .n_seqs = es->n_seqs, .seed = es->seed};
    int64_t ds_id = 0;
    mpq_status st = mpq_db_dataset_upsert(db, &ds, &ds_id, err);
    if (st == MPQ_OK) {
        mpq_db_evaluation e = {.job_id = job_id, .solution_id = solution_id, .dataset_id = ds_id, .config_json = cfg,
                               .ppl = stats->ppl, .kl = stats->kl_mean, .kl_stderr = stats->kl_se,
                               .top1 = stats->top1, .ce = stats->ce, .n_tokens = stats->n_ref_tokens};
        st = mpq_db_evaluation_insert(db, &e, evaluation_id, err);
    }
    free(cfg);
    return st;
}

mpq_status mpq_kvsearch_eval_store(mpq_db *db, int64_t job_id, mpq_kvsearch_eval *ev, const mpq_kv_pair *pairs,
                                   const mpq_kv_scheme *scheme, const mpq_eval_stats *stats, int64_t solution_id,
                                   int64_t *evaluation_id, mpq_err *err) {
    if (!db || !ev || !pairs || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval store: NULL argument");
    char *cfg = NULL;
    mpq_status st = mpq_kvsearch_config_json(ev->es->model, pairs, scheme, &cfg, err);
    if (st != MPQ_OK) return st;
    return store_config(db, job_id, ev, cfg, stats, solution_id, evaluation_id, err);
}

/* ---- per-(block, KV head) pairs ---------------------------------------------------------- */

mpq_status mpq_kvsearch_eval_run_heads(mpq_kvsearch_eval *ev, const mpq_kv_pair *head_pairs,
                                       const mpq_kv_scheme *scheme, mpq_eval_stats *stats, mpq_err *err) {
    if (!ev || !head_pairs || !scheme || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval: NULL argument");
    memset(stats, 0, sizeof *stats);
    const mpq_model_config *mc = mpq_model_get_config(ev->es->model);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.kv_scheme = *scheme;
    o.kv_head_pairs = head_pairs;
    o.n_kv_head_pairs = mc->n_layers * mc->n_kv_heads;
    o.kv_saq = ev->saq;
    return mpq_exec_eval_ref_workers(ev->es->ex, mpq_job_eval_workers(ev->job), mpq_model_get_weights(ev->es->model),
                                     &o, ev->es->ref, 0, stats, err);
}

mpq_status mpq_kvsearch_eval_store_heads(mpq_db *db, int64_t job_id, mpq_kvsearch_eval *ev,
                                         const mpq_kv_pair *head_pairs, const mpq_kv_scheme *scheme,
                                         const mpq_eval_stats *stats, int64_t solution_id, int64_t *evaluation_id,
                                         mpq_err *err) {
    if (!db || !ev || !head_pairs || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval store: NULL argument");
    char *cfg = NULL;
    mpq_status st = mpq_kvsearch_config_json_heads(ev->es->model, head_pairs, scheme, &cfg, err);
    if (st != MPQ_OK) return st;
    return store_config(db, job_id, ev, cfg, stats, solution_id, evaluation_id, err);
}

double mpq_kvsearch_spearman(const double *x, const double *y, int n) {
    if (!x || !y || n < 2) return NAN;
    double *r = mpq_calloc((size_t)n * 2, sizeof *r);
    if (!r) return NAN;
    const double *v[2] = {x, y};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < n; i++) {
            int less = 0, eq = 0;
            for (int k = 0; k < n; k++) {
                less += v[s][k] < v[s][i];
                eq += v[s][k] == v[s][i];
            }
            r[s * n + i] = less + (eq + 1) / 2.0; /* average rank (1-based) */
        }
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        mx += r[i];
        my += r[n + i];
    }
    mx /= n;
    my /= n;
    for (int i = 0; i < n; i++) {
        double a = r[i] - mx, b = r[n + i] - my;
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    free(r);
    return (sxx > 0 && syy > 0) ? sxy / sqrt(sxx * syy) : NAN;
}
