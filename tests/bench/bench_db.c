/*
 * bench_db.c - results database write throughput: metric rows stored per second through
 * mpq_db_unit_commit (one transaction per unit: ensure + start + commit), 100,000 rows in
 * units of 50, on a file in $TMPDIR; then the solver-side read rate (mpq_db_metric_fetch).
 * Prints the figures; exits non-zero on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "test_util.h"

#define N_LAYERS 200
#define N_ROWS 100000
#define ROWS_PER_UNIT 50

int main(void) {
    mpq_blas_set_threads(1); /* as the mpq CLI runs (mpq.h, "BLAS threads") */
    char dir[512], path[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bench.db", dir);
    mpq_err err = {0};
    mpq_db *db = NULL;
    int rc = 1;
    static mpq_db_layer layers[N_LAYERS];
    static int64_t layer_ids[N_LAYERS];
    static double vals[N_LAYERS];
    char key[64], cand[16];
    if (mpq_db_open(path, MPQ_DB_CREATE, &db, &err) != MPQ_OK) goto fail;
    for (int i = 0; i < N_LAYERS; i++) {
        snprintf(layers[i].name, sizeof layers[i].name, "blk.%d.l%d", i / 7, i % 7);
        snprintf(layers[i].kind, sizeof layers[i].kind, "attn_q");
        layers[i].block = i / 7;
        layers[i].rows = layers[i].cols = 64;
        layers[i].n_params = 4096;
    }
    mpq_db_model m = {.path = "bench", .sha256 = "bench", .arch = "llama"};
    int64_t model_id = 0, job_id = 0;
    if (mpq_db_model_upsert(db, &m, layers, N_LAYERS, &model_id, layer_ids, &err) != MPQ_OK) goto fail;
    if (mpq_db_job_create(db, "bench", "{}", model_id, 0, 1, &job_id, NULL, &err) != MPQ_OK) goto fail;

    mpq_db_metric rows[ROWS_PER_UNIT];
    double t0 = mpq_time_now();
    int n_units = N_ROWS / ROWS_PER_UNIT;
    for (int u = 0; u < n_units; u++) {
        int64_t uid = 0;
        snprintf(key, sizeof key, "unit%d", u);
        if (mpq_db_unit_ensure(db, job_id, "bench", key, &uid, &err) != MPQ_OK) goto fail;
        if (mpq_db_unit_start(db, uid, &err) != MPQ_OK) goto fail;
        /* 50 rows: 50 layers x one candidate; 4 units cover the 200 layers per candidate. */
        snprintf(cand, sizeof cand, "c%d", u / (N_LAYERS / ROWS_PER_UNIT));
        for (int r = 0; r < ROWS_PER_UNIT; r++) {
            int li = (u % (N_LAYERS / ROWS_PER_UNIT)) * ROWS_PER_UNIT + r;
            rows[r] = (mpq_db_metric){.layer_id = layer_ids[li], .candidate = cand, .metric = "kl",
                                      .value = 1e-3 * (u + 1) + r, .se = 1e-5, .n = 256,
                                      .provenance_json = "{\"seed\":1}"};
        }
        if (mpq_db_unit_commit(db, uid, rows, ROWS_PER_UNIT, &err) != MPQ_OK) goto fail;
    }
    double t1 = mpq_time_now();
    printf("db: %d metric rows in %d unit commits of %d: %.3f s, %.0f rows/s, %.0f units/s\n", N_ROWS,
           n_units, ROWS_PER_UNIT, t1 - t0, N_ROWS / (t1 - t0), n_units / (t1 - t0));

    int n_cand = N_ROWS / N_LAYERS, found = 0, total = 0;
    t0 = mpq_time_now();
    for (int c = 0; c < n_cand; c++) {
        snprintf(cand, sizeof cand, "c%d", c);
        if (mpq_db_metric_fetch(db, job_id, "kl", cand, N_LAYERS, layer_ids, vals, NULL, &found, &err) !=
            MPQ_OK)
            goto fail;
        total += found;
    }
    t1 = mpq_time_now();
    if (total != N_ROWS) {
        fprintf(stderr, "bench_db: fetched %d of %d rows\n", total, N_ROWS);
        goto done;
    }
    printf("db: metric_fetch of %d rows (%d candidates x %d layers): %.3f s, %.0f rows/s\n", total, n_cand,
           N_LAYERS, t1 - t0, total / (t1 - t0));
    if (mpq_db_check(db, &err) != MPQ_OK) goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_db: %s\n", err.msg);
done:
    mpq_db_close(db);
    remove(path);
    {
        char p2[640];
        snprintf(p2, sizeof p2, "%s-wal", path);
        remove(p2);
        snprintf(p2, sizeof p2, "%s-shm", path);
        remove(p2);
    }
    remove(dir);
    return rc;
}
