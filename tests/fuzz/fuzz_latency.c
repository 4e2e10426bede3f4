/*
 * fuzz_latency.c - libFuzzer harness for latency tables (search/jobsolve_problem.c): a stored
 * job of the stories260K model with "kl" metrics for two candidates is written into a
 * temporary database once; each input is the latency table JSON of an
 * mpq_jobsolve_problem_build with a latency budget and frontier.
 * Seeds: generated tables (per candidate: layer names, kinds and "*").
 */
/* realpath */
#define _XOPEN_SOURCE 700
#include <limits.h>

#include "fuzz_util.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"
#include "mpq/mpq_model.h"

static mpq_db *db;
static mpq_job *job;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    mpq_err err = {0};
    char model_path[PATH_MAX], data_path[PATH_MAX], dbp[512];
    if (!realpath(fuzz_shared_path("models/stories260K/stories260K.bin"), model_path) ||
        !realpath(fuzz_shared_path("data/tinystories-calib.tok512.u16"), data_path))
        fuzz_die("../shared (set MPQ_SHARED)", NULL);
    mpq_model *m = NULL;
    if (mpq_model_load(model_path, &m, &err) != MPQ_OK) fuzz_die("model", &err);
    snprintf(dbp, sizeof dbp, "%s/latency.db", fuzz_tmpdir());
    if (mpq_db_open(dbp, MPQ_DB_CREATE, &db, &err) != MPQ_OK) fuzz_die("db", &err);
    const mpq_model_config *mc = mpq_model_get_config(m);
    int nl = mpq_model_n_linear(m);
    mpq_db_layer *L = calloc((size_t)nl, sizeof *L);
    int64_t *ids = calloc((size_t)nl, sizeof *ids);
    if (!L || !ids) abort();
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        snprintf(L[i].name, sizeof L[i].name, "%s", li->name);
        snprintf(L[i].hf_name, sizeof L[i].hf_name, "%s", li->hf_name);
        snprintf(L[i].kind, sizeof L[i].kind, "%s", mpq_layer_kind_name(li->kind));
        L[i].block = li->block, L[i].rows = li->rows, L[i].cols = li->cols, L[i].n_params = li->n_params;
    }
    mpq_db_model dm = {.path = model_path, .sha256 = "0000000000000000000000000000000000000000000000000000000000000000",
                       .arch = "llama", .format = "llama2c-legacy", .dtype = mc->source_dtype, .dim = mc->dim,
                       .hidden_dim = mc->hidden_dim, .n_layers = mc->n_layers, .n_heads = mc->n_heads,
                       .n_kv_heads = mc->n_kv_heads, .vocab_size = mc->vocab_size, .seq_len = mc->seq_len,
                       .n_params = mpq_model_n_params(m)};
    int64_t model_id = 0, job_id = 0;
    if (mpq_db_model_upsert(db, &dm, L, nl, &model_id, ids, &err) != MPQ_OK) fuzz_die("model row", &err);
    char json[8192];
    snprintf(json, sizeof json,
             "{\"name\":\"lat\",\"model\":\"%s\",\"calibration\":{\"data\":\"%s\"},\"candidates\":[\"int4g32\",\"int8c\"]}",
             model_path, data_path);
    mpq_job_spec *spec = NULL;
    if (mpq_job_spec_parse(json, "latency.json", &spec, &err) != MPQ_OK) fuzz_die("spec", &err);
    if (mpq_db_job_create(db, "lat", spec->canonical_json, model_id, 0, 1, &job_id, NULL, &err) != MPQ_OK)
        fuzz_die("job", &err);
    mpq_job_spec_free(spec);
    mpq_db_metric *rows = calloc((size_t)nl * 2, sizeof *rows);
    if (!rows) abort();
    for (int i = 0; i < nl; i++)
        for (int c = 0; c < 2; c++)
            rows[i * 2 + c] = (mpq_db_metric){.layer_id = ids[i], .candidate = c ? "int8c" : "int4g32", .metric = "kl",
                                              .value = c ? 0.001 * (i + 1) : 0.01 * (i + 1), .se = 0.0 / 0.0};
    if (mpq_db_metric_put(db, job_id, 0, rows, nl * 2, &err) != MPQ_OK) fuzz_die("metrics", &err);
    if (mpq_job_open(db, "lat", &job, &err) != MPQ_OK) fuzz_die("job open", &err);
    free(rows);
    free(ids);
    free(L);
    mpq_model_free(m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstr(data, size);
    mpq_err err = {0};
    mpq_budget b;
    if (mpq_budget_parse("latency=1000", &b, &err) != MPQ_OK) fuzz_die("budget", &err);
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.latency_json = json;
    o.budgets = &b;
    o.n_budgets = 1;
    o.frontier_resource = MPQ_RESOURCE_LATENCY;
    mpq_jobsolve_problem *p = NULL;
    mpq_jobsolve_problem_build(job, &o, &p, &err);
    mpq_jobsolve_problem_free(p);
    free(json);
    return 0;
}
