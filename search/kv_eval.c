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
    mpq_model *model;
    mpq_tokenizer *tok;
    mpq_data *data;
    mpq_data_seqs *seqs;
    mpq_exec *ex;
    mpq_exec_ref *ref;
    int *tokens;
    bool from_eval;
};

void mpq_kvsearch_eval_free(mpq_kvsearch_eval *ev) {
    if (!ev) return;
    mpq_exec_ref_free(ev->ref);
    mpq_exec_free(ev->ex);
    free(ev->tokens);
    mpq_data_seqs_free(ev->seqs);
    mpq_data_free(ev->data);
    mpq_tokenizer_free(ev->tok);
    mpq_model_free(ev->model);
    free(ev);
}

const mpq_model *mpq_kvsearch_eval_model(const mpq_kvsearch_eval *ev) { return ev ? ev->model : NULL; }
const char *mpq_kvsearch_eval_source(const mpq_kvsearch_eval *ev) {
    return ev && ev->from_eval ? "evaluation" : "calibration";
}

static mpq_status load_job_spec(mpq_db *db, int64_t job_id, mpq_job_spec **spec, mpq_err *err) {
    mpq_db_job job;
    char *text = NULL, src[MPQ_DB_NAME_MAX + 16];
    mpq_status st = mpq_db_job_get(db, job_id, &job, err);
    if (st == MPQ_OK) st = mpq_db_job_spec(db, job_id, &text, err);
    if (st != MPQ_OK) return st;
    snprintf(src, sizeof src, "job '%s' spec", job.name);
    st = mpq_job_spec_parse(text, src, spec, err);
    free(text);
    return st;
}

mpq_status mpq_kvsearch_job_model(mpq_db *db, int64_t job_id, mpq_model **out, mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv: NULL argument");
    *out = NULL;
    mpq_job_spec *spec = NULL;
    mpq_status st = load_job_spec(db, job_id, &spec, err);
    if (st == MPQ_OK) st = mpq_model_load(spec->model, out, err);
    mpq_job_spec_free(spec);
    return st;
}

mpq_status mpq_kvsearch_eval_open(mpq_db *db, int64_t job_id, int max_seqs, mpq_kvsearch_eval **out,
                                  mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval: NULL argument");
    *out = NULL;
    mpq_job_spec *spec = NULL;
    mpq_kvsearch_eval *ev = calloc(1, sizeof *ev);
    if (!ev) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = load_job_spec(db, job_id, &spec, err);
    if (st != MPQ_OK) goto done;
    if ((st = mpq_model_load(spec->model, &ev->model, err)) != MPQ_OK) goto done;
    const mpq_model_config *mc = mpq_model_get_config(ev->model);
    if (spec->tokenizer && (st = mpq_tokenizer_load(spec->tokenizer, mc->vocab_size, &ev->tok, err)) != MPQ_OK)
        goto done;
    ev->from_eval = spec->eval.data != NULL;
    const mpq_job_data_spec *ds = ev->from_eval ? &spec->eval : &spec->calib;
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(ds->data, ev->tok, &dopt, &ev->data, err)) != MPQ_OK) goto done;
    int n = ds->n_seqs;
    if (max_seqs > 0 && max_seqs < n) n = max_seqs;
    if ((st = mpq_data_sequences(ev->data, ds->seq_len, n, (uint64_t)ds->seed, &ev->seqs, err)) != MPQ_OK) goto done;
    if (ev->seqs->n_seqs < 1) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "kv eval: %s: no window of %d tokens", ds->data, ds->seq_len);
        goto done;
    }
    int T = ev->seqs->seq_len, ns = ev->seqs->n_seqs;
    size_t nt = (size_t)ns * (size_t)(T + 1);
    if (!(ev->tokens = mpq_calloc(nt, sizeof *ev->tokens))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nt; i++) ev->tokens[i] = (int)ev->seqs->tokens[i];
    if ((st = mpq_exec_create(ev->model, ns < 8 ? ns : 8, T, &ev->ex, err)) != MPQ_OK) goto done;
    st = mpq_exec_ref_build(ev->ex, mpq_model_get_weights(ev->model), NULL, ev->tokens, ns, T, false, &ev->ref, err);
done:
    mpq_job_spec_free(spec);
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
    o.n_kv_pairs = mpq_model_get_config(ev->model)->n_layers;
    return mpq_exec_eval_ref(ev->ex, mpq_model_get_weights(ev->model), &o, ev->ref, 0, stats, err);
}

mpq_status mpq_kvsearch_eval_store(mpq_db *db, int64_t job_id, mpq_kvsearch_eval *ev, const mpq_kv_pair *pairs,
                                   const mpq_kv_scheme *scheme, const mpq_eval_stats *stats, int64_t solution_id,
                                   int64_t *evaluation_id, mpq_err *err) {
    if (!db || !ev || !pairs || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval store: NULL argument");
    char *cfg = NULL;
    mpq_status st = mpq_kvsearch_config_json(ev->model, pairs, scheme, &cfg, err);
    if (st != MPQ_OK) return st;
    mpq_db_dataset ds = {.path = mpq_data_path(ev->data), .sha256 = mpq_data_sha256(ev->data),
                         .n_tokens = (int64_t)ev->seqs->n_seqs * (ev->seqs->seq_len + 1),
                         .seq_len = ev->seqs->seq_len, .n_seqs = ev->seqs->n_seqs, .seed = (int64_t)ev->seqs->seed};
    int64_t ds_id = 0;
    if ((st = mpq_db_dataset_upsert(db, &ds, &ds_id, err)) == MPQ_OK) {
        mpq_db_evaluation e = {.job_id = job_id, .solution_id = solution_id, .dataset_id = ds_id, .config_json = cfg,
                               .ppl = stats->ppl, .kl = stats->kl_mean, .kl_stderr = stats->kl_se,
                               .top1 = stats->top1, .ce = stats->ce, .n_tokens = stats->n_ref_tokens};
        st = mpq_db_evaluation_insert(db, &e, evaluation_id, err);
    }
    free(cfg);
    return st;
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
