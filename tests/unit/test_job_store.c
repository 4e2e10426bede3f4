/*
 * test_job_store.c - the stored-job handle (mpq_job in mpq_job.h) on a real job of the
 * stories260K model: open by name and by id, unknown jobs, the spec read without touching any
 * file (the model copy moved away), the stored layer table and shape equal to the model's, and
 * the lazy model load refusing a missing or changed file with the recorded SHA-256.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "test_util.h"
#include "test_main.h"

#define JOB "store"
static char g_dir[4096], g_db[4200], g_model[4200], g_moved[4200];
static char g_sha[65];

/* Copies the model into a temp dir and runs a small job on the copy (parent process). */
static void setup_job(void) {
    test_tmpdir(g_dir, sizeof g_dir);
    snprintf(g_db, sizeof g_db, "%s/j.db", g_dir);
    snprintf(g_model, sizeof g_model, "%s/model.bin", g_dir);
    snprintf(g_moved, sizeof g_moved, "%s/model.moved", g_dir);
    size_t n = 0;
    void *bytes = test_read_file(shared_path("models/stories260K/stories260K.bin"), &n);
    if (!bytes || test_write_file(g_model, bytes, n) != 0) abort();
    free(bytes);
    char spec[16384];
    snprintf(spec, sizeof spec,
             "{\"name\":\"" JOB "\",\"model\":\"%s\",\"calibration\":{\"data\":\"%s\",\"seq_len\":32,\"n_seqs\":2,"
             "\"batch\":2},\"evaluation\":{\"data\":\"%s\",\"seq_len\":32,\"n_seqs\":2},"
             "\"candidates\":[\"int4g32\",\"int8c\"],\"metrics\":[\"weight_error\"]}",
             g_model, shared_path("data/tinystories-calib.tok512.u16"), shared_path("data/tinystories-eval.tok512.u16"));
    mpq_job_spec *s = NULL;
    mpq_db *db = NULL;
    mpq_err err = {0};
    if (mpq_job_spec_parse(spec, "store.json", &s, &err) != MPQ_OK || mpq_db_open(g_db, MPQ_DB_CREATE, &db, &err) != MPQ_OK ||
        mpq_job_run(db, s, NULL, NULL, &err) != MPQ_OK || mpq_job_model_sha256(g_model, g_sha, &err) != MPQ_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        abort();
    }
    mpq_db_close(db);
    mpq_job_spec_free(s);
}

static mpq_db *open_db(void) {
    mpq_db *db = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_open(g_db, MPQ_DB_READWRITE, &db, &err) == MPQ_OK, "%s", err.msg);
    return db;
}

START_TEST(test_open_by_name_and_id) {
    mpq_db *db = open_db();
    mpq_err err = {0};
    mpq_job *a = NULL, *b = NULL;
    ck_assert_msg(mpq_job_open(db, JOB, &a, &err) == MPQ_OK, "%s", err.msg);
    const mpq_db_job *row = mpq_job_get_row(a);
    ck_assert_str_eq(row->name, JOB);
    ck_assert_ptr_eq(mpq_job_db(a), db);
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)row->id);
    ck_assert_msg(mpq_job_open(db, id, &b, &err) == MPQ_OK, "%s", err.msg); /* a decimal id */
    ck_assert_int_eq(mpq_job_get_row(b)->id, row->id);
    mpq_job_close(b);
    b = NULL;
    ck_assert_msg(mpq_job_open_id(db, row->id, &b, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_str_eq(mpq_job_get_spec(b)->sha256, row->spec_sha256); /* stored form re-canonicalizes */
    ck_assert_str_eq(mpq_job_get_model_row(b)->sha256, g_sha);
    mpq_job_close(b);
    mpq_job_close(a);
    mpq_job_close(NULL);
    mpq_db_close(db);
}
END_TEST

START_TEST(test_unknown_job) {
    mpq_db *db = open_db();
    mpq_err err = {0};
    mpq_job *j = (mpq_job *)&err; /* set to NULL on failure */
    ck_assert_int_eq(mpq_job_open(db, "no-such-job", &j, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_null(j);
    ck_assert_msg(strstr(err.msg, "no-such-job") != NULL, "%s", err.msg);
    ck_assert_int_eq(mpq_job_open_id(db, 9999, &j, &err), MPQ_ERR_NOTFOUND);
    ck_assert_int_eq(mpq_job_open(db, NULL, &j, &err), MPQ_ERR_INVALID);
    mpq_db_close(db);
}
END_TEST

/* With the model copy moved away, the handle opens and gives the spec, table and shape; only
 * the model load fails, naming the file and the SHA-256 it must have. */
START_TEST(test_spec_without_files) {
    ck_assert_int_eq(rename(g_model, g_moved), 0);
    mpq_db *db = open_db();
    mpq_err err = {0};
    mpq_job *j = NULL;
    mpq_status st = mpq_job_open(db, JOB, &j, &err);
    if (st == MPQ_OK) {
        const mpq_job_spec *s = mpq_job_get_spec(j);
        ck_assert_str_eq(s->model, g_model);
        ck_assert_int_eq(s->calib.seq_len, 32);
        ck_assert_int_eq(s->n_candidates, 2);
        ck_assert_str_eq(s->candidates[1], "int8c");
        ck_assert_int_eq(mpq_job_n_linear(j), 35);
        ck_assert_ptr_nonnull(mpq_job_get_shape(j));
        const mpq_model *m = (const mpq_model *)&err;
        ck_assert_int_eq(mpq_job_load_model(j, &m, &err), MPQ_ERR_IO);
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(err.msg, g_model) && strstr(err.msg, g_sha), "%s", err.msg);
        ck_assert_int_eq(mpq_job_check_files(j, &err), MPQ_ERR_IO);
        ck_assert_msg(strstr(err.msg, g_model) != NULL, "%s", err.msg);
        const mpq_job_evalset *es = NULL;
        ck_assert_int_eq(mpq_job_load_evalset(j, 0, &es, &err), MPQ_ERR_IO);
    }
    mpq_job_close(j);
    mpq_db_close(db);
    ck_assert_int_eq(rename(g_moved, g_model), 0);
    ck_assert_msg(st == MPQ_OK, "%s", err.msg);
}
END_TEST

/* The stored layer table and the shape built from it are the model's. */
START_TEST(test_layer_table_matches_model) {
    mpq_db *db = open_db();
    mpq_err err = {0};
    mpq_job *j = NULL;
    mpq_model *m = NULL;
    ck_assert_msg(mpq_job_open(db, JOB, &j, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_model *shape = mpq_job_get_shape(j);
    ck_assert(!mpq_model_has_weights(shape));
    ck_assert(mpq_model_has_weights(m));
    ck_assert_int_eq(mpq_job_n_linear(j), mpq_model_n_linear(m));
    ck_assert_int_eq(mpq_model_n_linear(shape), mpq_model_n_linear(m));
    for (int i = 0; i < mpq_model_n_linear(m); i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i), *si = mpq_model_linear(shape, i);
        const mpq_db_layer *dl = mpq_job_linear(j, i);
        ck_assert_str_eq(dl->name, li->name);
        ck_assert_str_eq(dl->hf_name, li->hf_name);
        ck_assert_str_eq(dl->kind, mpq_layer_kind_name(li->kind));
        ck_assert_int_eq(dl->rows, li->rows);
        ck_assert_int_eq(dl->cols, li->cols);
        ck_assert_str_eq(si->name, li->name);
        ck_assert_int_eq(si->kind, li->kind);
        ck_assert_int_eq(si->block, li->block);
        ck_assert_int_eq(si->n_params, li->n_params);
        ck_assert_int_eq(mpq_job_find_linear(j, li->hf_name), i);
    }
    const mpq_model_config *a = mpq_model_get_config(m), *b = mpq_model_get_config(shape);
    ck_assert_int_eq(mpq_job_n_blocks(j), a->n_layers);
    for (int blk = 0; blk < a->n_layers; blk++) {
        const mpq_db_layer *kv = mpq_job_kv_layer(j, blk);
        ck_assert_ptr_nonnull(kv);
        ck_assert_int_eq(kv->cols, (int64_t)a->n_kv_heads * a->head_dim);
    }
    ck_assert_ptr_null(mpq_job_kv_layer(j, a->n_layers));
    ck_assert_int_eq(b->dim, a->dim);
    ck_assert_int_eq(b->hidden_dim, a->hidden_dim);
    ck_assert_int_eq(b->n_heads, a->n_heads);
    ck_assert_int_eq(b->n_kv_heads, a->n_kv_heads);
    ck_assert_int_eq(b->head_dim, a->head_dim);
    ck_assert_int_eq(b->vocab_size, a->vocab_size);
    ck_assert_int_eq(b->seq_len, a->seq_len);
    ck_assert_int_eq(b->shared_classifier, a->shared_classifier);
    ck_assert_int_eq(b->qkv_bias, a->qkv_bias);
    ck_assert_int_eq(mpq_model_n_params(shape), mpq_model_n_params(m));
    /* what needs weights refuses a shape */
    mpq_weights *w = NULL;
    ck_assert_int_eq(mpq_weights_clone(shape, &w, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "shape only") != NULL, "%s", err.msg);
    /* the lazily loaded model is the same file, checked, and kept */
    const mpq_model *lm = NULL, *lm2 = NULL;
    ck_assert_msg(mpq_job_load_model(j, &lm, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_model_n_params(lm), mpq_model_n_params(m));
    ck_assert_msg(mpq_job_load_model(j, &lm2, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_ptr_eq(lm, lm2);
    mpq_model_free(m);
    mpq_job_close(j);
    mpq_db_close(db);
}
END_TEST

/* A changed model file is refused, naming the file and both hashes; restored, it loads. */
START_TEST(test_changed_model_refused) {
    size_t n = 0;
    unsigned char *bytes = test_read_file(g_model, &n);
    ck_assert_ptr_nonnull(bytes);
    bytes[n - 1] ^= 1; /* one bit of the last weight */
    ck_assert_int_eq(test_write_file(g_model, bytes, n), 0);
    char now[65];
    mpq_err err = {0};
    ck_assert_int_eq(mpq_job_model_sha256(g_model, now, &err), MPQ_OK);
    mpq_db *db = open_db();
    mpq_job *j = NULL;
    const mpq_model *m = NULL;
    ck_assert_msg(mpq_job_open(db, JOB, &j, &err) == MPQ_OK, "%s", err.msg);
    mpq_status st = mpq_job_load_model(j, &m, &err);
    char msg[sizeof err.msg];
    memcpy(msg, err.msg, sizeof msg);
    mpq_job_close(j);
    bytes[n - 1] ^= 1;
    ck_assert_int_eq(test_write_file(g_model, bytes, n), 0);
    free(bytes);
    ck_assert_int_eq(st, MPQ_ERR_INVALID);
    ck_assert_msg(strstr(msg, g_model) && strstr(msg, g_sha) && strstr(msg, now), "%s", msg);
    j = NULL;
    ck_assert_msg(mpq_job_open(db, JOB, &j, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_job_load_model(j, &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_job_evalset *es = NULL;
    ck_assert_msg(mpq_job_load_evalset(j, 1, &es, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_str_eq(es->source, "evaluation");
    ck_assert_int_eq(es->n_seqs, 1);
    ck_assert_int_eq(es->seq_len, 32);
    ck_assert_ptr_eq(es->model, m);
    mpq_job_close(j);
    mpq_db_close(db);
}
END_TEST

static Suite *job_store_suite(void) {
    Suite *s = suite_create("job_store");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, setup_job, NULL);
    tcase_add_test(tc, test_open_by_name_and_id);
    tcase_add_test(tc, test_unknown_job);
    tcase_add_test(tc, test_spec_without_files);
    tcase_add_test(tc, test_layer_table_matches_model);
    tcase_add_test(tc, test_changed_model_refused);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(job_store_suite)
