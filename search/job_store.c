/*
 * job_store.c - the stored-job handle (mpq_job in mpq_job.h): one job of a results database
 * with its row, its spec parsed once in stored form, its model row and layer table, and a
 * shape-only model built from them; the model file, the evaluation windows and the FP
 * reference are loaded lazily, the model checked against the SHA-256 the job recorded.
 * Reference: DESIGN.md "Jobs" (a stored job is one object).
 */
#include "mpq/mpq_job.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq/mpq_data.h"
#include "mpq/mpq_tokenizer.h"

struct mpq_job {
    mpq_db *db;
    mpq_db_job row;
    mpq_db_model_row model_row;
    mpq_job_spec *spec;
    mpq_db_layer *linear; /* n_linear, model order */
    int n_linear;
    mpq_db_layer *kv;     /* n_blocks entries, NULL when the job has no KV rows */
    int n_blocks;
    mpq_model *shape;
    /* loaded on demand */
    mpq_model *model;
    mpq_tokenizer *tok;
    mpq_data *data;
    mpq_data_seqs *seqs;
    int *tokens;
    mpq_exec *ex;
    mpq_exec_ref *ref;
    int eval_max_seqs;
    mpq_job_evalset evalset;
    int eval_workers; /* mpq_job_set_eval_workers; <= 0: one per processor */
};

/* Frees the evaluation windows, executor and FP reference (lazily built, see load_windows). */
static void evalset_drop(mpq_job *j) {
    mpq_exec_ref_free(j->ref);
    mpq_exec_free(j->ex);
    free(j->tokens);
    mpq_data_seqs_free(j->seqs);
    mpq_data_free(j->data);
    mpq_tokenizer_free(j->tok);
    j->ref = NULL;
    j->ex = NULL;
    j->tokens = NULL;
    j->seqs = NULL;
    j->data = NULL;
    j->tok = NULL;
}

void mpq_job_set_eval_workers(mpq_job *j, int n) {
    if (j) j->eval_workers = n;
}

int mpq_job_eval_workers(const mpq_job *j) {
    int n = j && j->eval_workers > 0 ? j->eval_workers : mpq_job_default_workers();
    return n > MPQ_EXEC_MAX_WORKERS ? MPQ_EXEC_MAX_WORKERS : n;
}

void mpq_job_close(mpq_job *j) {
    if (!j) return;
    evalset_drop(j);
    mpq_model_free(j->model);
    mpq_model_free(j->shape);
    free(j->linear);
    free(j->kv);
    mpq_job_spec_free(j->spec);
    free(j);
}

/* ---- open ------------------------------------------------------------------------------- */

static bool kind_parse(const char *s, mpq_layer_kind *out) {
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++)
        if (strcmp(s, mpq_layer_kind_name((mpq_layer_kind)k)) == 0) {
            *out = (mpq_layer_kind)k;
            return true;
        }
    return false;
}

/* Splits the stored layer table into linear layers and per-block KV rows. */
static mpq_status split_layers(mpq_job *j, mpq_db_layer *all, int n_all, mpq_err *err) {
    const mpq_db_model_row *mr = &j->model_row;
    j->linear = mpq_calloc(n_all > 0 ? (size_t)n_all : 1, sizeof *j->linear);
    if (!j->linear) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    int n_kv = 0;
    for (int i = 0; i < n_all; i++) {
        if (strcmp(all[i].kind, "kv_cache") == 0) n_kv++;
        else if (all[i].n_params > 0) j->linear[j->n_linear++] = all[i];
    }
    if (j->n_linear == 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job '%s': the model has no linear layers in the database",
                           mpq_db_path(j->db), j->row.name);
    j->n_blocks = mr->n_layers;
    if (n_kv == 0 || mr->n_layers <= 0) return MPQ_OK;
    if (!(j->kv = mpq_calloc((size_t)mr->n_layers, sizeof *j->kv))) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_all; i++)
        if (strcmp(all[i].kind, "kv_cache") == 0 && all[i].block >= 0 && all[i].block < mr->n_layers)
            j->kv[all[i].block] = all[i];
    return MPQ_OK;
}

/* Untied classifier and q/k/v biases are not columns of the models table: they are what the
 * stored parameter count holds beyond the linear layers, the embedding and the norms. */
static void infer_extras(mpq_model_config *cfg, const mpq_layer_info *li, int n, int64_t n_params) {
    int64_t lin = 0, d = cfg->dim, L = cfg->n_layers, V = cfg->vocab_size;
    for (int i = 0; i < n; i++) lin += li[i].n_params;
    int64_t rest = n_params - lin - V * d - (2 * L + 1) * d;
    int64_t bias = L * ((int64_t)cfg->n_heads * cfg->head_dim + 2 * (int64_t)cfg->n_kv_heads * cfg->head_dim);
    cfg->shared_classifier = !(rest == V * d || rest == V * d + bias);
    cfg->qkv_bias = rest == bias || rest == V * d + bias;
}

/* The shape-only model of the stored model row and layer table. */
static mpq_status build_shape(mpq_job *j, mpq_err *err) {
    const mpq_db_model_row *mr = &j->model_row;
    mpq_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.dim = mr->dim;
    cfg.hidden_dim = mr->hidden_dim;
    cfg.n_layers = mr->n_layers;
    cfg.n_heads = mr->n_heads;
    cfg.n_kv_heads = mr->n_kv_heads;
    cfg.vocab_size = mr->vocab_size;
    cfg.seq_len = mr->seq_len;
    cfg.head_dim = mr->n_heads > 0 ? mr->dim / mr->n_heads : 0;
    if (!mpq_arch_parse(mr->arch, &cfg.arch))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job '%s': model row %lld: unknown arch '%s'", mpq_db_path(j->db),
                           j->row.name, (long long)mr->id, mr->arch);
    if (!mpq_model_format_parse(mr->format, &cfg.format))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job '%s': model row %lld: unknown format '%s'",
                           mpq_db_path(j->db), j->row.name, (long long)mr->id, mr->format);
    snprintf(cfg.source_dtype, sizeof cfg.source_dtype, "%.7s", mr->dtype);
    mpq_layer_info *li = mpq_calloc((size_t)j->n_linear, sizeof *li);
    if (!li) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = MPQ_OK;
    for (int i = 0; i < j->n_linear && st == MPQ_OK; i++) {
        const mpq_db_layer *l = &j->linear[i];
        snprintf(li[i].name, sizeof li[i].name, "%.95s", l->name);
        snprintf(li[i].hf_name, sizeof li[i].hf_name, "%.95s", l->hf_name);
        li[i].block = l->block;
        li[i].rows = l->rows;
        li[i].cols = l->cols;
        li[i].n_params = l->n_params;
        if (!kind_parse(l->kind, &li[i].kind))
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job '%s': layer %s: unknown kind '%s'", mpq_db_path(j->db),
                             j->row.name, l->name, l->kind);
        else if (li[i].kind == MPQ_LAYER_ATTN_K && mr->n_kv_heads > 0)
            cfg.head_dim = (int)(l->rows / mr->n_kv_heads); /* the stored shape, whatever dim / n_heads says */
    }
    if (st == MPQ_OK) infer_extras(&cfg, li, j->n_linear, mr->n_params);
    if (st == MPQ_OK) st = mpq_model_shape_create(j->spec->model, &cfg, li, j->n_linear, mr->n_params, &j->shape, err);
    if (st != MPQ_OK) mpq_err_prefix(err, "%s: job '%s'", mpq_db_path(j->db), j->row.name);
    free(li);
    return st;
}

static mpq_status open_row(mpq_db *db, mpq_job *j, mpq_err *err) {
    char *text = NULL, src[MPQ_DB_NAME_MAX + 32];
    mpq_db_layer *all = NULL;
    int n_all = 0;
    mpq_status st = mpq_db_job_spec(db, j->row.id, &text, err);
    if (st != MPQ_OK) return st;
    snprintf(src, sizeof src, "job '%s' (stored spec)", j->row.name);
    if ((st = mpq_job_spec_parse_stored(text, src, &j->spec, err)) != MPQ_OK) {
        if (st == MPQ_ERR_INVALID) st = MPQ_ERR_FORMAT;
        goto done;
    }
    if ((st = mpq_db_model_get(db, j->row.model_id, &j->model_row, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_layers_fetch(db, j->row.model_id, &all, &n_all, err)) != MPQ_OK) goto done;
    if ((st = split_layers(j, all, n_all, err)) != MPQ_OK) goto done;
    st = build_shape(j, err);
done:
    free(all);
    free(text);
    return st;
}

mpq_status mpq_job_open_id(mpq_db *db, int64_t job_id, mpq_job **out, mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_open: NULL argument");
    *out = NULL;
    mpq_job *j = mpq_calloc(1, sizeof *j);
    if (!j) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    j->db = db;
    mpq_status st = mpq_db_job_get(db, job_id, &j->row, err);
    if (st == MPQ_OK) st = open_row(db, j, err);
    if (st != MPQ_OK) {
        mpq_job_close(j);
        return st;
    }
    *out = j;
    return MPQ_OK;
}

mpq_status mpq_job_open(mpq_db *db, const char *job, mpq_job **out, mpq_err *err) {
    if (!db || !job || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_open: NULL argument");
    *out = NULL;
    mpq_db_job row;
    mpq_status st = mpq_db_job_find(db, job, &row, err);
    if (st != MPQ_OK) return st;
    return mpq_job_open_id(db, row.id, out, err);
}

/* ---- getters ---------------------------------------------------------------------------- */

mpq_db *mpq_job_db(const mpq_job *j) { return j ? j->db : NULL; }
const mpq_db_job *mpq_job_get_row(const mpq_job *j) { return j ? &j->row : NULL; }
const mpq_job_spec *mpq_job_get_spec(const mpq_job *j) { return j ? j->spec : NULL; }
const mpq_db_model_row *mpq_job_get_model_row(const mpq_job *j) { return j ? &j->model_row : NULL; }
int mpq_job_n_linear(const mpq_job *j) { return j ? j->n_linear : 0; }
const mpq_db_layer *mpq_job_linear(const mpq_job *j, int i) {
    return j && i >= 0 && i < j->n_linear ? &j->linear[i] : NULL;
}
int mpq_job_n_blocks(const mpq_job *j) { return j ? j->n_blocks : 0; }
const mpq_db_layer *mpq_job_kv_layer(const mpq_job *j, int b) {
    return j && j->kv && b >= 0 && b < j->n_blocks && j->kv[b].id ? &j->kv[b] : NULL;
}
int mpq_job_find_linear(const mpq_job *j, const char *name) { return j ? mpq_model_find_linear(j->shape, name) : -1; }
const mpq_model *mpq_job_get_shape(const mpq_job *j) { return j ? j->shape : NULL; }

/* ---- files ------------------------------------------------------------------------------ */

static mpq_status missing_model(const mpq_job *j, int e, mpq_err *err) {
    return mpq_err_set(err, MPQ_ERR_IO,
                       "job '%s': model %s: cannot open: %s; it is needed here and must be the file the job "
                       "measured (sha256 %s)",
                       j->row.name, j->spec->model, strerror(e), j->model_row.sha256);
}

mpq_status mpq_job_check_files(mpq_job *j, mpq_err *err) {
    if (!j) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_check_files: NULL job");
    struct stat sb;
    if (stat(j->spec->model, &sb) != 0) return missing_model(j, errno, err);
    const struct {
        const char *what, *path;
    } f[3] = {{"calibration data", j->spec->calib.data},
              {"evaluation data", j->spec->eval.data},
              {"tokenizer", j->spec->tokenizer}};
    for (int i = 0; i < 3; i++)
        if (f[i].path && stat(f[i].path, &sb) != 0)
            return mpq_err_set(err, MPQ_ERR_IO, "job '%s': %s %s: cannot open: %s", j->row.name, f[i].what, f[i].path,
                               strerror(errno));
    return MPQ_OK;
}

/* The loaded model's layer table must be the stored one. */
static mpq_status check_layers(const mpq_job *j, const mpq_model *m, mpq_err *err) {
    if (mpq_model_n_linear(m) != j->n_linear)
        return mpq_err_set(err, MPQ_ERR_INVALID, "job '%s': model %s has %d linear layers, the database %d",
                           j->row.name, j->spec->model, mpq_model_n_linear(m), j->n_linear);
    for (int i = 0; i < j->n_linear; i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        const mpq_db_layer *l = &j->linear[i];
        if (strcmp(li->name, l->name) != 0 || li->rows != l->rows || li->cols != l->cols)
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "job '%s': model %s: layer %d is %s (%lld x %lld), the database has %s (%lld x %lld)",
                               j->row.name, j->spec->model, i, li->name, (long long)li->rows, (long long)li->cols,
                               l->name, (long long)l->rows, (long long)l->cols);
    }
    return MPQ_OK;
}

mpq_status mpq_job_load_model(mpq_job *j, const mpq_model **out, mpq_err *err) {
    if (!j || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_load_model: NULL argument");
    *out = NULL;
    if (j->model) {
        *out = j->model;
        return MPQ_OK;
    }
    struct stat sb;
    if (stat(j->spec->model, &sb) != 0) return missing_model(j, errno, err);
    char sha[65];
    mpq_status st = mpq_job_model_sha256(j->spec->model, sha, err);
    if (st != MPQ_OK) return st;
    if (strcmp(sha, j->model_row.sha256) != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "job '%s': model %s changed since the job measured it (sha256 now %s, recorded %s); "
                           "restore the file",
                           j->row.name, j->spec->model, sha, j->model_row.sha256);
    mpq_model *m = NULL;
    if ((st = mpq_model_load_dtype(j->spec->model, j->spec->weights_dtype, &m, err)) != MPQ_OK) {
        mpq_err_prefix(err, "job '%s': model", j->row.name);
        return st;
    }
    if ((st = check_layers(j, m, err)) != MPQ_OK) {
        mpq_model_free(m);
        return st;
    }
    j->model = m;
    *out = m;
    return MPQ_OK;
}

/* ---- evaluation windows ----------------------------------------------------------------- */

/* The data hash the job recorded for `key` (artifact "inputs"), "" if none. */
static void recorded_sha(mpq_job *j, const char *key, char out[65]) {
    void *blob = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (mpq_db_artifact_get(j->db, j->row.id, "inputs", &blob, &n, NULL) != MPQ_OK) return;
    cJSON *o = cJSON_ParseWithLength(blob, n);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v) && strlen(v->valuestring) == 64) snprintf(out, 65, "%s", v->valuestring);
    cJSON_Delete(o);
    free(blob);
}


static mpq_status load_windows(mpq_job *j, const mpq_job_data_spec *ds, bool from_eval, int max_seqs, mpq_err *err) {
    const mpq_model_config *mc = mpq_model_get_config(j->model);
    mpq_status st;
    if (j->spec->tokenizer && (st = mpq_tokenizer_load(j->spec->tokenizer, mc->vocab_size, &j->tok, err)) != MPQ_OK) {
        mpq_err_prefix(err, "job '%s': tokenizer", j->row.name);
        return st;
    }
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(ds->data, j->tok, &dopt, &j->data, err)) != MPQ_OK) {
        mpq_err_prefix(err, "job '%s': %s data", j->row.name, from_eval ? "evaluation" : "calibration");
        return st;
    }
    char rec[65];
    recorded_sha(j, from_eval ? "evaluation_sha256" : "calibration_sha256", rec);
    if (rec[0] && strcmp(rec, mpq_data_sha256(j->data)) != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "job '%s': %s data %s changed since the job was created (sha256 now %s, recorded %s)",
                           j->row.name, from_eval ? "evaluation" : "calibration", ds->data, mpq_data_sha256(j->data),
                           rec);
    int n = ds->n_seqs;
    if (max_seqs > 0 && max_seqs < n) n = max_seqs;
    if ((st = mpq_data_sequences(j->data, ds->seq_len, n, (uint64_t)ds->seed, &j->seqs, err)) != MPQ_OK) return st;
    if (j->seqs->n_seqs < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: no evaluation window of %d tokens", ds->data, ds->seq_len);
    size_t nt;
    if (!mpq_size_mul((size_t)j->seqs->n_seqs, (size_t)j->seqs->seq_len + 1, &nt) ||
        !(j->tokens = mpq_calloc(nt, sizeof *j->tokens)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for %d evaluation windows", j->seqs->n_seqs);
    for (size_t i = 0; i < nt; i++) j->tokens[i] = (int)j->seqs->tokens[i];
    return MPQ_OK;
}

mpq_status mpq_job_load_evalset(mpq_job *j, int max_seqs, const mpq_job_evalset **out, mpq_err *err) {
    if (!j || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_load_evalset: NULL argument");
    *out = NULL;
    if (max_seqs < 0) max_seqs = 0;
    if (j->ref && j->eval_max_seqs == max_seqs) {
        *out = &j->evalset;
        return MPQ_OK;
    }
    evalset_drop(j);
    const mpq_model *m = NULL;
    mpq_status st = mpq_job_load_model(j, &m, err);
    if (st != MPQ_OK) return st;
    bool from_eval = j->spec->eval.data != NULL;
    const mpq_job_data_spec *ds = from_eval ? &j->spec->eval : &j->spec->calib;
    if ((st = load_windows(j, ds, from_eval, max_seqs, err)) != MPQ_OK) goto done;
    int ns = j->seqs->n_seqs, T = j->seqs->seq_len;
    if ((st = mpq_exec_create_forward(m, ns < 8 ? ns : 8, T, &j->ex, err)) != MPQ_OK) goto done;
    if ((st = mpq_exec_ref_build(j->ex, mpq_model_get_weights(m), NULL, j->tokens, ns, T, false, &j->ref, err)) !=
        MPQ_OK)
        goto done;
    j->eval_max_seqs = max_seqs;
    j->evalset = (mpq_job_evalset){.model = m, .ex = j->ex, .ref = j->ref, .source = from_eval ? "evaluation" : "calibration",
                                   .data = ds, .data_path = mpq_data_path(j->data),
                                   .data_sha256 = mpq_data_sha256(j->data), .n_seqs = ns, .seq_len = T,
                                   .seed = (int64_t)j->seqs->seed};
    *out = &j->evalset;
done:
    if (st != MPQ_OK) evalset_drop(j);
    return st;
}
