/*
 * job_run.c - the resumable job driver: creates (or continues) a job in the results
 * database, checks that its model and data files did not change, recomputes the FP
 * reference, computes each unit's metric rows, and runs the pending units of each stage
 * through the job's pool (job_pool.c: worker threads, the job lease, and the commit of every
 * unit's rows with its "done" mark in one transaction) or, for an adaptive layer_sensitivity
 * stage, its rounds (job_adaptive.c). Also the worker half that other MPI ranks run (job_mpi.h).
 * Metrics: mpq_calib.h (weight error after GPTQ's X^T X weighting, MixDQ-style decoupled
 * kl/dloss/top1 per layer, KVTuner per-block KV pair sensitivity). Spec: mpq_job.h.
 */
#include "mpq/mpq_job.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_kvsearch.h"
#include "mpq/mpq_tokenizer.h"

#include "job_adaptive.h"
#include "job_fisher.h"
#include "job_hessian.h"
#include "job_kvhead.h"
#include "job_noise.h"
#include "job_mpi.h"
#include "job_pool.h"

int mpq_job_default_workers(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

mpq_job_opts mpq_job_opts_default(void) {
    mpq_job_opts o;
    memset(&o, 0, sizeof o);
    return o;
}

/* ---- model identity --------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

mpq_status mpq_job_model_sha256(const char *path, char out[65], mpq_err *err) {
    struct stat sb;
    if (!path || stat(path, &sb) != 0)
        return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open: %s", path ? path : "(null)", strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return mpq_sha256_file(path, out, err);
    DIR *d = opendir(path);
    if (!d) return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open directory: %s", path, strerror(errno));
    char **names = NULL, *list = NULL, *full = NULL;
    size_t n = 0, cap = 0, list_len = 0;
    mpq_status st = MPQ_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) {
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            names = nn;
            cap = nc;
        }
        size_t l = strlen(e->d_name) + 1;
        if (!(names[n] = malloc(l))) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        memcpy(names[n++], e->d_name, l);
    }
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        size_t need = strlen(path) + strlen(names[i]) + 2;
        char *nf = realloc(full, need);
        if (!nf) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        full = nf;
        snprintf(full, need, "%s/%s", path, names[i]);
        if (stat(full, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        char h[65];
        if ((st = mpq_sha256_file(full, h, err)) != MPQ_OK) goto done;
        size_t add = strlen(names[i]) + 1 + 64 + 1;
        char *nl = realloc(list, list_len + add + 1);
        if (!nl) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        list = nl;
        snprintf(list + list_len, add + 1, "%s %s\n", names[i], h);
        list_len += add;
    }
    mpq_sha256(list ? list : "", list_len, out);
done:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(list);
    free(full);
    closedir(d);
    return st;
}

/* ---- run context ------------------------------------------------------------------------ */

typedef struct run_ctx {
    mpq_db *db;
    const mpq_job_spec *spec;
    mpq_job_opts opts;
    mpq_model *model;
    mpq_tokenizer *tok;
    mpq_data *calib, *eval;
    mpq_data_seqs *seqs;
    int *tokens;
    char model_sha[65], tok_sha[65];
    mpq_job_unit *units;
    int n_units;
    int64_t model_id, job_id, calib_ds, eval_ds;
    int64_t *layer_ids; /* n_linear linear layers, then n_layers KV rows */
    mpq_candidate *cands;
    mpq_kv_pair *pairs;
    mpq_calib *cal;
    mpq_kv_saq *kv_saq; /* kv scheme saq: bases fitted on the calibration windows */
    mpq_job_hessian *hess; /* hessian stage state (built on its first unit) */
    job_pool *pool;     /* this run's lease, commits and workers (NULL on the other MPI ranks) */
} run_ctx;

/* Loads model, tokenizer, data and the calibration windows; parses candidates / pairs. */
static mpq_status load_inputs(run_ctx *c, mpq_err *err) {
    const mpq_job_spec *s = c->spec;
    mpq_status st;
    if ((st = mpq_model_load_dtype(s->model, s->weights_dtype, &c->model, err)) != MPQ_OK) {
        mpq_err_prefix(err, "%s: model", s->source);
        return st;
    }
    const mpq_model_config *mc = mpq_model_get_config(c->model);
    if (s->calib.seq_len > mc->seq_len)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: calibration.seq_len: %d exceeds the model's seq len %d",
                           s->source, s->calib.seq_len, mc->seq_len);
    if (s->eval.data && s->eval.seq_len > mc->seq_len)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: evaluation.seq_len: %d exceeds the model's seq len %d",
                           s->source, s->eval.seq_len, mc->seq_len);
    if ((st = mpq_job_model_sha256(s->model, c->model_sha, err)) != MPQ_OK) return st;
    c->tok_sha[0] = '\0';
    if (s->tokenizer) {
        if ((st = mpq_tokenizer_load(s->tokenizer, mc->vocab_size, &c->tok, err)) != MPQ_OK) {
            mpq_err_prefix(err, "%s: tokenizer", s->source);
            return st;
        }
        if ((st = mpq_sha256_file(s->tokenizer, c->tok_sha, err)) != MPQ_OK) return st;
    }
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(s->calib.data, c->tok, &dopt, &c->calib, err)) != MPQ_OK) {
        mpq_err_prefix(err, "%s: calibration.data", s->source);
        return st;
    }
    if (s->eval.data && (st = mpq_data_load(s->eval.data, c->tok, &dopt, &c->eval, err)) != MPQ_OK) {
        mpq_err_prefix(err, "%s: evaluation.data", s->source);
        return st;
    }
    if ((st = mpq_data_sequences(c->calib, s->calib.seq_len, s->calib.n_seqs, (uint64_t)s->calib.seed, &c->seqs,
                                 err)) != MPQ_OK) {
        mpq_err_prefix(err, "%s: calibration", s->source);
        return st;
    }
    if (s->eval.data) { /* validate that the evaluation windows exist, as the solvers' checks will ask for them */
        mpq_data_seqs *es = NULL;
        st = mpq_data_sequences(c->eval, s->eval.seq_len, s->eval.n_seqs, (uint64_t)s->eval.seed, &es, err);
        mpq_data_seqs_free(es);
        if (st != MPQ_OK) {
            mpq_err_prefix(err, "%s: evaluation", s->source);
            return st;
        }
    }
    size_t nt;
    if (!mpq_size_mul((size_t)c->seqs->n_seqs, (size_t)c->seqs->seq_len + 1, &nt) ||
        !(c->tokens = mpq_calloc(nt, sizeof *c->tokens)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for calibration tokens", s->source);
    for (size_t i = 0; i < nt; i++) c->tokens[i] = (int)c->seqs->tokens[i];
    c->cands = mpq_calloc(s->n_candidates ? (size_t)s->n_candidates : 1, sizeof *c->cands);
    c->pairs = mpq_calloc(s->n_kv_pairs ? (size_t)s->n_kv_pairs : 1, sizeof *c->pairs);
    size_t nl = (size_t)mpq_model_n_linear(c->model) + (size_t)mc->n_layers;
    c->layer_ids = mpq_calloc(nl, sizeof *c->layer_ids);
    if (!c->cands || !c->pairs || !c->layer_ids) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", s->source);
    for (int i = 0; i < s->n_candidates; i++)
        if ((st = mpq_candidate_parse(s->candidates[i], &c->cands[i], err)) != MPQ_OK) return st;
    for (int i = 0; i < s->n_kv_pairs; i++)
        if ((st = mpq_kv_pair_parse(s->kv_pairs[i], &c->pairs[i], err)) != MPQ_OK) return st;
        else if (mpq_kv_pair_fractional(c->pairs[i]) && s->kv_scheme.mode != MPQ_KV_SAQ)
            return mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv.pairs: %s: fractional rates need kv.scheme.mode saq",
                               s->source, s->kv_pairs[i]);
    return mpq_job_units(s, c->model, &c->units, &c->n_units, err);
}

/* The input hashes recorded with a job (artifact "inputs"). */
static char *inputs_json(const run_ctx *c) {
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;
    if (!o) return NULL;
    bool ok = cJSON_AddStringToObject(o, "model", c->spec->model) &&
              cJSON_AddStringToObject(o, "model_sha256", c->model_sha) &&
              cJSON_AddStringToObject(o, "calibration", c->spec->calib.data) &&
              cJSON_AddStringToObject(o, "calibration_sha256", mpq_data_sha256(c->calib));
    if (ok && c->eval)
        ok = cJSON_AddStringToObject(o, "evaluation", c->spec->eval.data) &&
             cJSON_AddStringToObject(o, "evaluation_sha256", mpq_data_sha256(c->eval));
    if (ok && c->tok)
        ok = cJSON_AddStringToObject(o, "tokenizer", c->spec->tokenizer) &&
             cJSON_AddStringToObject(o, "tokenizer_sha256", c->tok_sha);
    if (ok) out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

/* Compares the recorded input hashes of an existing job with the current files. */
static mpq_status check_inputs(run_ctx *c, mpq_err *err) {
    void *blob = NULL;
    size_t n = 0;
    mpq_err e2 = {0};
    mpq_status st = mpq_db_artifact_get(c->db, c->job_id, "inputs", &blob, &n, &e2);
    if (st == MPQ_ERR_NOTFOUND) return MPQ_OK; /* written again in setup */
    if (st != MPQ_OK) {
        *err = e2;
        return st;
    }
    cJSON *o = cJSON_ParseWithLength(blob, n);
    free(blob);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return mpq_err_set(err, MPQ_ERR_DB, "%s: job '%s': recorded inputs are not valid JSON", mpq_db_path(c->db),
                           c->spec->name);
    }
    struct {
        const char *key, *what, *path, *now;
    } chk[3] = {
        {"model_sha256", "model", c->spec->model, c->model_sha},
        {"calibration_sha256", "calibration data", c->spec->calib.data, mpq_data_sha256(c->calib)},
        {"evaluation_sha256", "evaluation data", c->spec->eval.data, c->eval ? mpq_data_sha256(c->eval) : NULL},
    };
    st = MPQ_OK;
    for (int i = 0; i < 3 && st == MPQ_OK; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, chk[i].key);
        if (!chk[i].now || !cJSON_IsString(v)) continue;
        if (strcmp(v->valuestring, chk[i].now) != 0)
            st = mpq_err_set(err, MPQ_ERR_INVALID,
                             "job '%s': %s %s changed since the job was created (sha256 now %.16s..., recorded "
                             "%.16s...); refusing to mix measurements: restore the file or start a job with a new name",
                             c->spec->name, chk[i].what, chk[i].path, chk[i].now, v->valuestring);
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "tokenizer_sha256");
    if (st == MPQ_OK && c->tok && cJSON_IsString(v) && strcmp(v->valuestring, c->tok_sha) != 0)
        st = mpq_err_set(err, MPQ_ERR_INVALID,
                         "job '%s': tokenizer %s changed since the job was created (sha256 now %.16s..., recorded "
                         "%.16s...)",
                         c->spec->name, c->spec->tokenizer, c->tok_sha, v->valuestring);
    cJSON_Delete(o);
    return st;
}

/* One transaction: model + layer table (+ KV rows), datasets, job, inputs artifact, all units. */
static mpq_status setup_job(run_ctx *c, bool exists, mpq_err *err) {
    const mpq_model_config *mc = mpq_model_get_config(c->model);
    int nl = mpq_model_n_linear(c->model), nb = mc->n_layers;
    mpq_db_layer *layers = mpq_calloc((size_t)nl + (size_t)nb, sizeof *layers);
    char *inputs = NULL;
    mpq_status st = MPQ_OK;
    bool in_tx = false;
    if (!layers) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(c->model, i);
        mpq_db_layer *l = &layers[i];
        snprintf(l->name, sizeof l->name, "%s", li->name);
        snprintf(l->hf_name, sizeof l->hf_name, "%s", li->hf_name);
        snprintf(l->kind, sizeof l->kind, "%s", mpq_layer_kind_name(li->kind));
        l->block = li->block;
        l->rows = li->rows;
        l->cols = li->cols;
        l->n_params = li->n_params;
    }
    for (int b = 0; b < nb; b++) {
        mpq_db_layer *l = &layers[nl + b];
        snprintf(l->name, sizeof l->name, "blk.%d.kv", b);
        snprintf(l->kind, sizeof l->kind, "kv_cache");
        l->block = b;
        l->rows = 0;
        l->cols = (int64_t)mc->n_kv_heads * mc->head_dim;
        l->n_params = 0;
    }
    mpq_db_model dm = {.path = c->spec->model, .sha256 = c->model_sha, .arch = mpq_arch_name(mc->arch),
                       .format = mpq_model_format_name(mc->format), .dtype = mc->source_dtype, .dim = mc->dim,
                       .hidden_dim = mc->hidden_dim, .n_layers = mc->n_layers, .n_heads = mc->n_heads,
                       .n_kv_heads = mc->n_kv_heads, .vocab_size = mc->vocab_size, .seq_len = mc->seq_len,
                       .n_params = mpq_model_n_params(c->model)};
    if ((st = mpq_db_begin(c->db, err)) != MPQ_OK) goto done;
    in_tx = true;
    if ((st = mpq_db_model_upsert(c->db, &dm, layers, nl + nb, &c->model_id, c->layer_ids, err)) != MPQ_OK) goto done;
    const mpq_job_spec *s = c->spec;
    mpq_db_dataset ds = {.path = s->calib.data, .sha256 = mpq_data_sha256(c->calib),
                         .n_tokens = (int64_t)s->calib.n_seqs * (s->calib.seq_len + 1), .seq_len = s->calib.seq_len,
                         .n_seqs = s->calib.n_seqs, .seed = s->calib.seed};
    if ((st = mpq_db_dataset_upsert(c->db, &ds, &c->calib_ds, err)) != MPQ_OK) goto done;
    if (c->eval) {
        mpq_db_dataset es = {.path = s->eval.data, .sha256 = mpq_data_sha256(c->eval),
                             .n_tokens = (int64_t)s->eval.n_seqs * (s->eval.seq_len + 1), .seq_len = s->eval.seq_len,
                             .n_seqs = s->eval.n_seqs, .seed = s->eval.seed};
        if ((st = mpq_db_dataset_upsert(c->db, &es, &c->eval_ds, err)) != MPQ_OK) goto done;
    }
    if (!exists) {
        bool existed = false;
        if ((st = mpq_db_job_create(c->db, s->name, s->canonical_json, c->model_id, c->calib_ds, s->seed, &c->job_id,
                                    &existed, err)) != MPQ_OK)
            goto done;
    }
    void *blob = NULL;
    size_t bn = 0;
    mpq_err e2 = {0};
    mpq_status ga = mpq_db_artifact_get(c->db, c->job_id, "inputs", &blob, &bn, &e2);
    free(blob);
    if (ga == MPQ_ERR_NOTFOUND) {
        if (!(inputs = inputs_json(c))) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = mpq_db_artifact_put(c->db, c->job_id, "inputs", inputs, strlen(inputs), err)) != MPQ_OK) goto done;
    } else if (ga != MPQ_OK) {
        *err = e2;
        st = ga;
        goto done;
    }
    for (int i = 0; i < c->n_units; i++) {
        int64_t uid;
        if ((st = mpq_db_unit_ensure(c->db, c->job_id, mpq_job_stage_name(c->units[i].stage), c->units[i].key, &uid,
                                     err)) != MPQ_OK)
            goto done;
    }
    st = mpq_db_commit(c->db, err);
    in_tx = false;
done:
    if (in_tx) mpq_db_rollback(c->db, NULL);
    free(inputs);
    free(layers);
    return st;
}

/* ---- units ------------------------------------------------------------------------------ */

static const mpq_job_unit *find_unit(const run_ctx *c, mpq_job_stage stage, const char *key) {
    for (int i = 0; i < c->n_units; i++)
        if (c->units[i].stage == stage && strcmp(c->units[i].key, key) == 0) return &c->units[i];
    return NULL;
}

/* Provenance of every row of a unit (candidate set per row). */
static cJSON *provenance_base(const run_ctx *c, mpq_job_stage stage) {
    const mpq_job_spec *s = c->spec;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    bool ok = cJSON_AddStringToObject(o, "stage", mpq_job_stage_name(stage)) &&
              cJSON_AddNumberToObject(o, "seed", (double)s->calib.seed) &&
              cJSON_AddNumberToObject(o, "n_seqs", s->calib.n_seqs) &&
              cJSON_AddNumberToObject(o, "seq_len", s->calib.seq_len) &&
              cJSON_AddNumberToObject(o, "batch", s->calib.batch) &&
              cJSON_AddStringToObject(o, "data_sha256", mpq_data_sha256(c->calib)) &&
              cJSON_AddStringToObject(o, "model_sha256", c->model_sha) &&
              cJSON_AddStringToObject(o, "mpq_version", mpq_version());
    if (ok && stage == MPQ_JOB_STAGE_KV_SENSITIVITY) {
        cJSON *sch = cJSON_AddObjectToObject(o, "scheme");
        ok = sch && cJSON_AddStringToObject(sch, "mode", mpq_kv_mode_name(s->kv_scheme.mode)) &&
             cJSON_AddNumberToObject(sch, "group_size", s->kv_scheme.group_size) &&
             cJSON_AddNumberToObject(sch, "residual", s->kv_scheme.residual);
        if (ok && s->kv_scheme.caq) ok = cJSON_AddTrueToObject(sch, "caq") != NULL;
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static void rows_free(unit_rows *r) { /* unit_rows: job_mpi.h */
    for (int i = 0; i < r->n; i++) cJSON_free(r->prov[i]);
    r->n = 0;
    for (int i = 0; i < r->n_art; i++) {
        free(r->art_name[i]);
        free(r->art_data[i]);
    }
    r->n_art = 0;
}

/* Adds an artifact to be stored with the unit's commit; takes data (freed on failure too). */
static mpq_status add_artifact(unit_rows *r, const char *name, unsigned char *data, size_t len, mpq_err *err) {
    char *nm = NULL;
    if (data && r->n_art < MAX_UNIT_ARTIFACTS && (nm = malloc(strlen(name) + 1))) {
        memcpy(nm, name, strlen(name) + 1);
        r->art_name[r->n_art] = nm;
        r->art_data[r->n_art] = data;
        r->art_len[r->n_art++] = len;
        return MPQ_OK;
    }
    free(data);
    return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for artifact %s", name);
}

void job_rows_free(unit_rows *r) { rows_free(r); }

static mpq_status add_row(unit_rows *r, cJSON *prov, int64_t layer_id, const char *cand, const char *metric,
                          double value, double se, int64_t n, mpq_err *err) {
    if (r->n >= MAX_UNIT_ROWS) return mpq_err_set(err, MPQ_ERR_INVALID, "more than %d rows in one unit", MAX_UNIT_ROWS);
    if (isnan(value)) return mpq_err_set(err, MPQ_ERR_INVALID, "metric %s (%s) is NaN", metric, cand);
    cJSON_DeleteItemFromObjectCaseSensitive(prov, "candidate");
    if (!cJSON_AddStringToObject(prov, "candidate", cand)) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    char *p = cJSON_PrintUnformatted(prov);
    if (!p) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    r->prov[r->n] = p;
    r->rows[r->n] = (mpq_db_metric){.layer_id = layer_id, .candidate = cand, .metric = metric, .value = value,
                                    .se = se, .n = n, .provenance_json = p};
    r->n++;
    return MPQ_OK;
}

/* A SAQ candidate whose rate cannot be reached on the unit's layer (mpq_candidate_matrix_bits
 * -1: R*rows*cols not whole, or the basis / permutation and segment plan alone exceed it). */
static bool saq_unreachable(const run_ctx *c, const mpq_job_unit *u, int k) {
    const mpq_layer_info *li = mpq_model_linear(c->model, u->linear_index);
    return mpq_candidate_is_saq(&c->cands[k]) && mpq_candidate_matrix_bits(&c->cands[k], li->rows, li->cols) < 0;
}

/* Replaces the quantizer's error in *err by the row that marks (layer, candidate) as not
 * available (README "Weight candidates and KV pairs"): metric "unavailable" = 1, the
 * quantizer's message as the provenance's "reason". */
static mpq_status unavailable_row(unit_rows *r, cJSON *prov, int64_t lid, const char *cn, mpq_err *err) {
    char why[MPQ_ERR_MSG_MAX];
    snprintf(why, sizeof why, "%s", err && err->msg[0] ? err->msg : "rate not achievable for the layer's shape");
    if (err) memset(err, 0, sizeof *err);
    if (!cJSON_AddStringToObject(prov, "reason", why)) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = add_row(r, prov, lid, cn, "unavailable", 1.0, NAN, 0, err);
    cJSON_DeleteItemFromObjectCaseSensitive(prov, "reason");
    return st;
}

static mpq_status hessian_row(void *user, cJSON *prov, int64_t layer_id, const char *cand, const char *metric,
                              double value, double se, int64_t n, mpq_err *err) {
    return add_row(user, prov, layer_id, cand, metric, value, se, n, err);
}

/* The noise_sensitivity rows of one layer (search/job_noise.c); provenance gets "noise". */
static const char *const noise_kl_names[MPQ_JOB_NOISE_MAX_LEVELS] = {
    "noise_kl_0", "noise_kl_1", "noise_kl_2", "noise_kl_3", "noise_kl_4", "noise_kl_5", "noise_kl_6", "noise_kl_7"};

static mpq_status noise_rows(run_ctx *c, mpq_calib *cal, const mpq_job_unit *u, cJSON *prov, unit_rows *r,
                             mpq_err *err) {
    const mpq_job_noise_spec *ns = &c->spec->noise;
    mpq_job_noise_result res;
    mpq_status st = mpq_job_noise_compute(cal, c->model, ns, u->linear_index, &res, err);
    if (st != MPQ_OK) return st;
    cJSON *no = cJSON_AddObjectToObject(prov, "noise");
    cJSON *lv = cJSON_CreateDoubleArray(ns->levels, ns->n_levels);
    cJSON *re = cJSON_CreateDoubleArray(res.realized, res.n_levels);
    bool ok = no && lv && re && cJSON_AddNumberToObject(no, "seed", (double)ns->seed) &&
              cJSON_AddItemToObject(no, "levels", lv);
    if (ok) lv = NULL;
    ok = ok && cJSON_AddItemToObject(no, "realized", re);
    if (ok) re = NULL;
    cJSON_Delete(lv);
    cJSON_Delete(re);
    if (!ok) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    int64_t lid = c->layer_ids[u->linear_index];
    for (int i = 0; i < res.n_levels && st == MPQ_OK; i++)
        st = add_row(r, prov, lid, "", noise_kl_names[i], res.kl[i].kl, res.kl[i].kl_se, res.kl[i].n_seqs, err);
    if (st == MPQ_OK) st = add_row(r, prov, lid, "", "noise_a", res.a, res.a_se, res.n_levels, err);
    if (st == MPQ_OK) st = add_row(r, prov, lid, "", "noise_resid", res.resid, NAN, res.n_levels, err);
    return st;
}

/* The layer_sensitivity rows of one unit: windows [0, n_seqs), or under "adaptive" the first
 * min_windows (round 0) or the next step windows after those stored (round r), continuing the
 * stored sums bit for bit (mpq_calib_layer_range). Artifacts: the per-window KL of every
 * window measured so far, and under "adaptive" the unit's state. */
static mpq_status ls_rows(run_ctx *c, mpq_calib *cal, const mpq_job_unit *u, cJSON *prov, unit_rows *r,
                          mpq_err *err) {
    const mpq_job_spec *s = c->spec;
    const mpq_job_adaptive_spec *ad = &s->adaptive;
    const int n = c->seqs->n_seqs;
    const mpq_layer_info *li = mpq_model_linear(c->model, u->linear_index);
    const char *cn = s->candidates[u->option];
    const int64_t lid = c->layer_ids[u->linear_index];
    mpq_eval_stats acc;
    memset(&acc, 0, sizeof acc);
    int begin = 0, end = n;
    const double *prev = NULL;
    if (u->round > 0) {
        const adapt_unit *au = (const adapt_unit *)u;
        acc = au->state.acc;
        begin = au->state.windows;
        prev = au->state.win;
        end = n - begin > ad->step ? begin + ad->step : n;
        if (begin <= 0 || begin >= n)
            return mpq_err_set(err, MPQ_ERR_INVALID, "round %d: the unit has %d of %d windows", u->round, begin, n);
    } else if (ad->enabled) {
        end = ad->min_windows;
    }
    double *win = malloc((size_t)end * sizeof *win);
    if (!win) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if (begin) memcpy(win, prev, (size_t)begin * sizeof *win);
    mpq_calib_result res;
    mpq_status st = mpq_calib_layer_range(cal, u->linear_index, &c->cands[u->option], begin, end, &acc, win + begin,
                                          &res, err);
    if (st != MPQ_OK && u->round == 0 && saq_unreachable(c, u, u->option)) { /* no windows, no state */
        free(win);
        return unavailable_row(r, prov, lid, cn, err);
    }
    if (st == MPQ_OK && ad->enabled) {
        cJSON *ao = cJSON_AddObjectToObject(prov, "adaptive");
        cJSON *bs = ao ? cJSON_AddArrayToObject(ao, "budgets") : NULL;
        bool ok = bs && cJSON_AddStringToObject(ao, "rule", "ilp-flip") && cJSON_AddNumberToObject(ao, "z", ad->z) &&
                  cJSON_AddNumberToObject(ao, "tol", ad->tol) &&
                  cJSON_AddNumberToObject(ao, "min_windows", ad->min_windows) &&
                  cJSON_AddNumberToObject(ao, "step", ad->step) && cJSON_AddNumberToObject(ao, "round", u->round) &&
                  cJSON_AddNumberToObject(ao, "windows", end);
        for (int i = 0; ok && i < ad->n_budgets; i++) {
            cJSON *x = cJSON_CreateString(ad->budgets[i]);
            ok = x && cJSON_AddItemToArray(bs, x);
            if (!ok) cJSON_Delete(x);
        }
        if (!ok) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    if (st == MPQ_OK && (st = add_row(r, prov, lid, cn, "kl", res.kl, res.kl_se, res.n_seqs, err)) == MPQ_OK &&
        (st = add_row(r, prov, lid, cn, "dloss", res.dloss, res.dloss_se, res.n_seqs, err)) == MPQ_OK)
        st = add_row(r, prov, lid, cn, "top1", res.top1, res.top1_se, res.n_seqs, err);
    char name[MPQ_DB_NAME_MAX + 64];
    if (st == MPQ_OK) {
        job_adaptive_windows_name(name, sizeof name, li->name, cn);
        st = add_artifact(r, name, job_adaptive_windows_bytes(win, end), (size_t)end * 8, err);
    }
    if (st == MPQ_OK && ad->enabled) {
        job_adaptive_state_name(name, sizeof name, li->name, cn);
        char *js = job_adaptive_state_json(&acc, end, u->round);
        st = add_artifact(r, name, (unsigned char *)js, js ? strlen(js) : 0, err);
    }
    free(win);
    return st;
}

/* Computes one unit's rows (no database access, except the hessian stage's trace chunks,
 * which write their running-sum artifact idempotently before the unit commits). */
static mpq_status compute_unit(run_ctx *c, mpq_calib *cal, const mpq_job_unit *u, unit_rows *r, mpq_err *err) {
    const mpq_job_spec *s = c->spec;
    mpq_status st = MPQ_OK;
    cJSON *prov = provenance_base(c, u->stage);
    if (!prov) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if (u->stage == MPQ_JOB_STAGE_WEIGHT_ERROR) {
        int64_t lid = c->layer_ids[u->linear_index];
        int64_t ntok = (int64_t)s->calib.n_seqs * s->calib.seq_len;
        for (int k = 0; k < s->n_candidates && st == MPQ_OK; k++) {
            mpq_calib_weight_stats we;
            const char *cn = s->candidates[k];
            if ((st = mpq_calib_weight_error(cal, u->linear_index, &c->cands[k], &we, err)) != MPQ_OK) {
                if (saq_unreachable(c, u, k)) st = unavailable_row(r, prov, lid, cn, err);
                continue;
            }
            int64_t np = mpq_model_linear(c->model, u->linear_index)->n_params;
            if ((st = add_row(r, prov, lid, cn, "weight_sse", we.sse, NAN, np, err)) != MPQ_OK ||
                (st = add_row(r, prov, lid, cn, "weight_rel", we.rel, NAN, np, err)) != MPQ_OK ||
                (st = add_row(r, prov, lid, cn, "act_err", we.act_err, NAN, ntok, err)) != MPQ_OK ||
                (st = add_row(r, prov, lid, cn, "act_rel", we.act_rel, NAN, ntok, err)) != MPQ_OK)
                break;
        }
        if (st == MPQ_OK)
            st = add_row(r, prov, lid, "", "xtx_trace", mpq_calib_xtx_trace(cal, u->linear_index), NAN, ntok, err);
    } else if (u->stage == MPQ_JOB_STAGE_LAYER_SENSITIVITY) {
        st = ls_rows(c, cal, u, prov, r, err);
    } else if (u->stage == MPQ_JOB_STAGE_NOISE) {
        st = noise_rows(c, cal, u, prov, r, err);
    } else if (u->stage == MPQ_JOB_STAGE_HESSIAN) {
        mpq_job_hessian_env env = {.db = c->db, .job_id = c->job_id, .spec = s, .model = c->model,
                                   .tokens = c->tokens, .n_seqs = c->seqs->n_seqs, .seq_len = c->seqs->seq_len,
                                   .layer_ids = c->layer_ids, .cands = c->cands, .add_row = hessian_row,
                                   .row_user = r};
        st = mpq_job_hessian_compute(&c->hess, &env, u, prov, err);
    } else if (u->stage == MPQ_JOB_STAGE_FISHER) {
        mpq_job_fisher_env env = {.spec = s, .model = c->model, .tokens = c->tokens, .n_seqs = c->seqs->n_seqs,
                                  .seq_len = c->seqs->seq_len, .layer_ids = c->layer_ids, .cands = c->cands,
                                  .add_row = hessian_row, .row_user = r};
        st = mpq_job_fisher_compute(&env, u, prov, err);
    } else {
        int nl = mpq_model_n_linear(c->model);
        int64_t lid = c->layer_ids[nl + u->block];
        const char *pn = s->kv_pairs[u->option];
        mpq_calib_result res;
        if (u->kv_head_unit) /* kv.per_head: metrics kv_kl_head ..., candidate "k4v2@h1" */
            st = mpq_job_kv_head_rows(cal, u, c->pairs[u->option], prov, lid, hessian_row, r, err);
        else if ((st = mpq_calib_kv(cal, u->block, c->pairs[u->option], &res, err)) == MPQ_OK &&
            (st = add_row(r, prov, lid, pn, "kv_kl", res.kl, res.kl_se, res.n_seqs, err)) == MPQ_OK &&
            (st = add_row(r, prov, lid, pn, "kv_dloss", res.dloss, res.dloss_se, res.n_seqs, err)) == MPQ_OK &&
            (st = add_row(r, prov, lid, pn, "kv_top1", res.top1, res.top1_se, res.n_seqs, err)) == MPQ_OK)
            st = add_row(r, prov, lid, pn, "kv_attn_rel", res.attn_rel, NAN, res.n_seqs, err);
    }
    cJSON_Delete(prov);
    if (st != MPQ_OK) rows_free(r);
    return st;
}

/* ---- the pool's view of the driver (job_pool.h) ----------------------------------------- */

static mpq_status pool_compute(void *user, mpq_calib *cal, const mpq_job_unit *u, unit_rows *rows, mpq_err *err) {
    return compute_unit(user, cal, u, rows, err);
}

static int pool_unit_index(void *user, const mpq_job_unit *u) { return (int)(u - ((const run_ctx *)user)->units); }

/* ---- run and resume --------------------------------------------------------------------- */

/* The FP reference every unit is measured against (the same options on every MPI rank). */
static mpq_status reference_create(run_ctx *c, mpq_err *err) {
    const mpq_job_spec *spec = c->spec;
    mpq_calib_opts co = mpq_calib_opts_default();
    co.batch = spec->calib.batch;
    co.collect_xtx = spec->stages[MPQ_JOB_STAGE_WEIGHT_ERROR];
    for (int k = 0; k < spec->n_candidates && !co.collect_xtx; k++) { /* SAQ candidates need X^T X */
        mpq_candidate cd;
        co.collect_xtx = mpq_candidate_parse(spec->candidates[k], &cd, NULL) == MPQ_OK && mpq_candidate_is_saq(&cd);
    }
    co.prefix_reuse = true;
    if (spec->has_kv) co.kv_scheme = spec->kv_scheme;
    if (spec->has_kv && spec->kv_scheme.mode == MPQ_KV_SAQ) {
        /* SAQ bases: those the job stored (artifact kv_saq_bases), else fitted on the job's own
         * calibration windows and stored before any unit uses them; the other MPI ranks (no
         * database) fit them themselves, which gives the same bases (a deterministic fit; the
         * stored JSON round-trips every float and double exactly). Then every pair's rate is
         * checked against head_dim. */
        const mpq_model_config *mc = mpq_model_get_config(c->model);
        mpq_status fs = MPQ_ERR_NOTFOUND;
        if (c->db)
            fs = mpq_kvsearch_saq_bases_get(c->db, c->job_id, spec->name, mc->n_layers, mc->n_kv_heads, mc->head_dim,
                                            &c->kv_saq, err);
        if (fs == MPQ_ERR_NOTFOUND) {
            fs = mpq_kv_saq_fit_model(c->model, c->tokens, c->seqs->n_seqs, c->seqs->seq_len, c->seqs->seq_len + 1,
                                      spec->calib.batch, &c->kv_saq, err);
            if (fs == MPQ_OK && c->db) fs = mpq_kvsearch_saq_bases_put(c->db, c->job_id, c->kv_saq, err);
        } else if (fs != MPQ_OK) {
            return fs; /* the message names the database, job and artifact */
        }
        for (int i = 0; fs == MPQ_OK && i < spec->n_kv_pairs; i++)
            for (int h = 0; fs == MPQ_OK && h < 2; h++) {
                int f = h ? c->pairs[i].v_bits : c->pairs[i].k_bits;
                if (f != 16) fs = mpq_kv_saq_check_rate(mpq_kv_rate_q(f), mpq_model_get_config(c->model)->head_dim, err);
                if (fs != MPQ_OK) mpq_err_prefix(err, "kv pair %s", spec->kv_pairs[i]);
            }
        if (fs != MPQ_OK) {
            mpq_err_prefix(err, "job '%s': kv saq bases", spec->name);
            return fs;
        }
        co.kv_saq = c->kv_saq;
    }
    mpq_status st = mpq_calib_create(c->model, c->tokens, c->seqs->n_seqs, c->seqs->seq_len, &co, &c->cal, err);
    if (st != MPQ_OK) mpq_err_prefix(err, "job '%s': FP reference", spec->name);
    return st;
}

/* Builds the FP reference once per run, before the first unit that needs it (the adaptive
 * rounds: job_adaptive_env.reference); *cal is c->cal. */
static mpq_status reference_ensure(void *user, mpq_calib **cal, mpq_err *err) {
    run_ctx *c = user;
    if (!c->cal) {
        double t0 = mpq_time_now();
        mpq_status st = reference_create(c, err);
        if (st != MPQ_OK) return st;
        mpq_job_progress p = {.event = MPQ_JOB_EVENT_REFERENCE, .job = c->spec->name,
                              .seconds = mpq_time_now() - t0, .eta_seconds = -1};
        job_pool_emit(c->pool, &p);
        if ((st = job_pool_beat(c->pool, err)) != MPQ_OK) return st;
    }
    *cal = c->cal;
    return MPQ_OK;
}

/* Runs the pending units of one stage. *stopped set when a stop was requested. */
static mpq_status run_stage(run_ctx *c, mpq_job_stage stage, int stage_index, int n_stages, bool *stopped,
                            mpq_err *err) {
    const char *sname = mpq_job_stage_name(stage);
    const bool adaptive = stage == MPQ_JOB_STAGE_LAYER_SENSITIVITY && c->spec->adaptive.enabled;
    mpq_db_unit *pend = NULL;
    const mpq_job_unit **us = NULL;
    int n_pend = 0;
    int64_t done = 0, total = 0;
    mpq_status st;
    if ((st = mpq_db_units_count(c->db, c->job_id, sname, &done, &total, NULL, err)) != MPQ_OK) return st;
    if ((st = mpq_db_units_pending(c->db, c->job_id, sname, &pend, &n_pend, err)) != MPQ_OK) return st;
    if (!(us = mpq_calloc(n_pend > 0 ? (size_t)n_pend : 1, sizeof *us))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_pend && !adaptive; i++)
        if (!(us[i] = find_unit(c, stage, pend[i].key))) { /* cannot happen when the spec hash matched */
            st = mpq_err_set(err, MPQ_ERR_DB, "%s: job '%s': unit %s/%s is not in the spec", mpq_db_path(c->db),
                             c->spec->name, sname, pend[i].key);
            goto done;
        }
    double t0 = mpq_time_now();
    mpq_job_progress p = {.event = MPQ_JOB_EVENT_STAGE_START, .job = c->spec->name, .stage = sname,
                          .stage_index = stage_index, .n_stages = n_stages, .stage_done = done,
                          .stage_total = total, .run_done = job_pool_run_done(c->pool), .eta_seconds = -1};
    job_pool_emit(c->pool, &p);
    if (adaptive) {
        job_adaptive_env env = {.db = c->db, .job_id = c->job_id, .spec = c->spec, .model = c->model,
                                .units = c->units, .n_units = c->n_units, .layer_ids = c->layer_ids,
                                .n_seqs = c->seqs->n_seqs, .reference = reference_ensure, .user = c};
        st = job_adaptive_run(c->pool, &env, sname, &p, stopped, err);
    } else {
        job_pool_batch b = {.stage = sname, .pend = pend, .units = us, .n = n_pend, .cal = c->cal,
                            .serial = stage == MPQ_JOB_STAGE_HESSIAN || n_pend == 0, .t0 = t0};
        st = job_pool_run(c->pool, &b, &p, stopped, err);
    }
    if (st != MPQ_OK) goto done;
    p.event = MPQ_JOB_EVENT_STAGE_END;
    p.seconds = mpq_time_now() - t0;
    p.unit_key = NULL;
    p.message = NULL;
    job_pool_emit(c->pool, &p);
done:
    free(us);
    free(pend);
    return st;
}

/* Rank 0 under MPI: the job, this run's input record and the layer ids to the other ranks. */
static mpq_status mpi_announce(run_ctx *c, mpq_err *err) {
    char *inputs = inputs_json(c);
    if (!inputs) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    int n_ids = mpq_model_n_linear(c->model) + mpq_model_get_config(c->model)->n_layers;
    mpq_status st = job_mpi_announce(c->spec, inputs, c->layer_ids, n_ids, err);
    free(inputs);
    return st;
}

static void ctx_free(run_ctx *c) {
    job_pool_free(c->pool); /* releases the lease */
    mpq_job_hessian_free(c->hess);
    mpq_calib_free(c->cal);
    mpq_kv_saq_free(c->kv_saq);
    free(c->units);
    free(c->layer_ids);
    free(c->cands);
    free(c->pairs);
    free(c->tokens);
    mpq_data_seqs_free(c->seqs);
    mpq_data_free(c->eval);
    mpq_data_free(c->calib);
    mpq_tokenizer_free(c->tok);
    mpq_model_free(c->model);
}

static mpq_status run_job(mpq_db *db, const mpq_job_spec *spec, const mpq_job_opts *opts, int64_t *job_id,
                          mpq_err *err) {
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.db = db;
    c.spec = spec;
    c.opts = opts ? *opts : mpq_job_opts_default();
    if (c.opts.n_workers <= 0) c.opts.n_workers = mpq_job_default_workers();
    mpq_status st;
    bool running = false;
    job_pool_env pe = {.db = db, .opts = &c.opts, .compute = pool_compute, .unit_index = pool_unit_index, .user = &c};
    if ((st = job_pool_create(&pe, &c.pool, err)) != MPQ_OK) goto done;

    /* existing job? (mpq_db_job_find also matches ids: require the name itself) */
    mpq_db_job job;
    mpq_err e2 = {0};
    bool exists = false;
    st = mpq_db_job_find(db, spec->name, &job, &e2);
    if (spec->adaptive.enabled && job_mpi_active()) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                         "%s: adaptive: not available across MPI ranks (each round's units continue the sums stored "
                         "for them, which the other ranks do not have): run the job as one process (with --workers)",
                         spec->source);
        goto done;
    }
    if (st == MPQ_OK && strcmp(job.name, spec->name) == 0) {
        exists = true;
        c.job_id = job.id;
        if (strcmp(job.spec_sha256, spec->sha256) != 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID,
                             "job '%s' exists with a different spec (%s: stored spec sha256 %.12s..., this spec "
                             "%.12s...); use another name or --db",
                             spec->name, mpq_db_path(db), job.spec_sha256, spec->sha256);
            goto done;
        }
        /* before loading: a second runner stops here */
        if ((st = job_pool_lease(c.pool, c.job_id, err)) != MPQ_OK) goto done;
    } else if (st != MPQ_OK && st != MPQ_ERR_NOTFOUND) {
        *err = e2;
        goto done;
    }
    if ((st = load_inputs(&c, err)) != MPQ_OK) goto done;
    if (exists && (st = check_inputs(&c, err)) != MPQ_OK) goto done;
    if ((st = setup_job(&c, exists, err)) != MPQ_OK) goto done;
    /* a new job: another run may have created it too */
    if (!exists && (st = job_pool_lease(c.pool, c.job_id, err)) != MPQ_OK) goto done;
    if (job_id) *job_id = c.job_id;
    if ((st = mpq_db_units_retry_failed(db, c.job_id, NULL, err)) != MPQ_OK) goto done;
    int64_t n_done = 0, n_total = 0;
    if ((st = mpq_db_units_count(db, c.job_id, NULL, &n_done, &n_total, NULL, err)) != MPQ_OK) goto done;
    if (n_done < n_total) {
        if ((st = mpq_db_job_set_status(db, c.job_id, MPQ_DB_JOB_RUNNING, err)) != MPQ_OK) goto done;
        running = true;
        if (job_mpi_active() && (st = mpi_announce(&c, err)) != MPQ_OK) goto done; /* the ranks load meanwhile */
        double t0 = mpq_time_now();
        if ((st = reference_create(&c, err)) != MPQ_OK) goto done;
        if ((st = job_mpi_gather(err)) != MPQ_OK) goto done; /* no-op without MPI */
        mpq_job_progress p = {.event = MPQ_JOB_EVENT_REFERENCE, .job = spec->name, .seconds = mpq_time_now() - t0,
                              .eta_seconds = -1};
        job_pool_emit(c.pool, &p);
        if ((st = job_pool_beat(c.pool, err)) != MPQ_OK) goto done;
    }
    int n_stages = 0, idx = 0;
    for (int s = 0; s < MPQ_JOB_N_STAGES; s++) n_stages += spec->stages[s];
    bool stopped = false;
    for (int s = 0; s < MPQ_JOB_N_STAGES && !stopped; s++) {
        if (!spec->stages[s]) continue;
        if ((st = run_stage(&c, (mpq_job_stage)s, ++idx, n_stages, &stopped, err)) != MPQ_OK) goto done;
    }
    if ((st = mpq_db_units_count(db, c.job_id, NULL, &n_done, &n_total, NULL, err)) != MPQ_OK) goto done;
    mpq_status first_fail = MPQ_OK;
    const char *first_fail_msg = NULL;
    int n_failed = job_pool_failed(c.pool, &first_fail, &first_fail_msg);
    if (stopped) {
        st = mpq_db_job_set_status(db, c.job_id, MPQ_DB_JOB_INTERRUPTED, err);
        running = false;
        if (st == MPQ_OK)
            st = mpq_err_set(err, MPQ_ERR_INTERRUPTED,
                             "job '%s' interrupted after %lld units of this run (%lld/%lld done); resume with: "
                             "mpq resume %s",
                             spec->name, (long long)job_pool_run_done(c.pool), (long long)n_done, (long long)n_total,
                             spec->name);
    } else if (n_failed > 0) {
        st = mpq_db_job_set_status(db, c.job_id, MPQ_DB_JOB_FAILED, err);
        running = false;
        if (st == MPQ_OK)
            st = mpq_err_set(err, first_fail, "job '%s': %d units failed (a resume retries them); first: %s",
                             spec->name, n_failed, first_fail_msg);
    } else {
        st = mpq_db_job_set_status(db, c.job_id, MPQ_DB_JOB_DONE, err);
        running = false;
    }
done:
    if (running && st != MPQ_OK && job_pool_leased(c.pool)) /* only the lease holder writes the job's status */
        mpq_db_job_set_status(db, c.job_id, MPQ_DB_JOB_FAILED, NULL);
    ctx_free(&c); /* releases the lease */
    return st;
}

/* Stored numbers must not depend on the BLAS thread count (mpq.h, "BLAS threads"). */
static mpq_status check_blas(mpq_err *err) {
    int n = mpq_blas_threads();
    if (n != 1)
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "OpenBLAS runs %d threads: stored numbers would depend on the thread count; call "
                           "mpq_blas_set_threads(1) at start-up (the mpq CLI does) and use workers for parallelism",
                           n);
    return MPQ_OK;
}

mpq_status mpq_job_run(mpq_db *db, const mpq_job_spec *spec, const mpq_job_opts *opts, int64_t *job_id,
                       mpq_err *err) {
    if (!db || !spec) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_run: NULL argument");
    mpq_status bst = check_blas(err);
    if (bst != MPQ_OK) return bst;
    return run_job(db, spec, opts, job_id, err);
}

mpq_status mpq_job_resume(mpq_db *db, const char *job, const mpq_job_opts *opts, mpq_err *err) {
    if (!db || !job) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_resume: NULL argument");
    mpq_status bst = check_blas(err);
    if (bst != MPQ_OK) return bst;
    mpq_job *jh = NULL;
    mpq_status st = mpq_job_open(db, job, &jh, err); /* the stored spec, parsed once */
    if (st != MPQ_OK) return st;
    const mpq_job_spec *spec = mpq_job_get_spec(jh);
    const mpq_db_job *j = mpq_job_get_row(jh);
    if (strcmp(spec->sha256, j->spec_sha256) != 0 || strcmp(spec->name, j->name) != 0)
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                         "job '%s': the stored spec does not re-canonicalize to the same text (stored by another "
                         "mpq version?)",
                         j->name);
    else if ((st = mpq_job_check_files(jh, err)) == MPQ_OK) /* names a missing file and its recorded hash */
        st = run_job(db, spec, opts, NULL, err);
    mpq_job_close(jh);
    return st;
}

/* ---- the worker half, for the other ranks of an MPI run (job_mpi.h) ---------------------- */

struct job_worker {
    run_ctx c;
    mpq_calib **cals; /* (n_cals) cals[0] = c.cal, the others forks of it */
    int n_cals;
};

mpq_status job_worker_open(const mpq_job_spec *spec, const int64_t *layer_ids, int n_ids, job_worker **out,
                           mpq_err *err) {
    job_worker *w = mpq_calloc(1, sizeof *w);
    if (!w) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    w->c.spec = spec;
    w->c.opts = mpq_job_opts_default();
    mpq_status st = load_inputs(&w->c, err);
    if (st == MPQ_OK &&
        n_ids != mpq_model_n_linear(w->c.model) + mpq_model_get_config(w->c.model)->n_layers)
        st = mpq_err_set(err, MPQ_ERR_INVALID, "model %s: %d linear layers + blocks here, %d on rank 0", spec->model,
                         mpq_model_n_linear(w->c.model) + mpq_model_get_config(w->c.model)->n_layers, n_ids);
    if (st == MPQ_OK) memcpy(w->c.layer_ids, layer_ids, (size_t)n_ids * sizeof *layer_ids);
    if (st != MPQ_OK) {
        job_worker_close(w);
        return st;
    }
    *out = w;
    return MPQ_OK;
}

char *job_worker_inputs_json(const job_worker *w) { return inputs_json(&w->c); }

mpq_status job_worker_reference(job_worker *w, int n_workers, mpq_err *err) {
    mpq_status st = reference_create(&w->c, err);
    if (st != MPQ_OK) return st;
    if (!(w->cals = mpq_calloc(n_workers > 0 ? (size_t)n_workers : 1, sizeof *w->cals)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for %d workers", n_workers);
    w->cals[0] = w->c.cal;
    w->n_cals = 1;
    for (; w->n_cals < n_workers; w->n_cals++)
        if ((st = mpq_calib_fork(w->c.cal, &w->cals[w->n_cals], err)) != MPQ_OK) {
            mpq_err_prefix(err, "worker %d of %d", w->n_cals + 1, n_workers);
            return st;
        }
    return MPQ_OK;
}

int job_worker_n_units(const job_worker *w) { return w->c.n_units; }

const mpq_job_unit *job_worker_unit(const job_worker *w, int i) {
    return i >= 0 && i < w->c.n_units ? &w->c.units[i] : NULL;
}

mpq_status job_worker_compute(job_worker *w, int slot, int i, unit_rows *rows, mpq_err *err) {
    if (slot < 0 || slot >= w->n_cals || i < 0 || i >= w->c.n_units || w->c.units[i].stage == MPQ_JOB_STAGE_HESSIAN)
        return mpq_err_set(err, MPQ_ERR_INVALID, "unit %d (slot %d) cannot be computed on this rank", i, slot);
    return compute_unit(&w->c, w->cals[slot], &w->c.units[i], rows, err);
}

void job_worker_close(job_worker *w) {
    if (!w) return;
    for (int i = 1; i < w->n_cals; i++) mpq_calib_free(w->cals[i]);
    free(w->cals);
    ctx_free(&w->c);
    free(w);
}
