/* test_job.c - job specs (defaults, canonical form, a table of hostile specs each naming its
 * key), the unit list on stories260K, and the driver: interrupted + resumed == uninterrupted
 * (bit-identical stored numbers), different spec refused, changed data file refused. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "spec_fixture.h"
#include "test_util.h"
#include "unit/test_main.h"


START_TEST(test_defaults) {
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_msg(spec_parse("{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},"
                        "\"candidates\":[\"int4g32\",\"fp8e4m3c\"]}",
                        &s, &err) == MPQ_OK,
                  "%s", err.msg);
    ck_assert_str_eq(s->name, "a");
    ck_assert_int_eq(s->seed, 1);
    ck_assert_int_eq(s->calib.seq_len, 128);
    ck_assert_int_eq(s->calib.n_seqs, 16);
    ck_assert_int_eq(s->calib.seed, 1); /* defaults to the top-level seed */
    ck_assert_int_eq(s->calib.batch, 8);
    ck_assert_ptr_null(s->eval.data);
    ck_assert_ptr_null(s->tokenizer);
    ck_assert_int_eq(s->n_candidates, 2);
    ck_assert_str_eq(s->candidates[1], "fp8e4m3"); /* canonical name */
    ck_assert(s->stages[MPQ_JOB_STAGE_WEIGHT_ERROR] && s->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY]);
    ck_assert(!s->stages[MPQ_JOB_STAGE_KV_SENSITIVITY] && !s->has_kv);
    ck_assert_msg(s->model[0] == '/', "model path made absolute: %s", s->model);
    /* canonical text: every default present, hash of exactly that text */
    ck_assert_ptr_nonnull(strstr(s->canonical_json, "\"batch\":8"));
    ck_assert_ptr_nonnull(strstr(s->canonical_json, "\"metrics\":[\"weight_error\",\"layer_sensitivity\"]"));
    char h[65];
    mpq_sha256(s->canonical_json, strlen(s->canonical_json), h);
    ck_assert_str_eq(h, s->sha256);
    /* canonical form is a fixed point */
    mpq_job_spec *s2 = NULL;
    ck_assert_msg(mpq_job_spec_parse(s->canonical_json, "c", &s2, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_str_eq(s2->canonical_json, s->canonical_json);
    ck_assert_str_eq(s2->sha256, s->sha256);
    mpq_job_spec_free(s2);
    /* threads: default 1, left out of the canonical text (older specs keep their hash) */
    ck_assert_int_eq(s->threads, 1);
    ck_assert_ptr_null(strstr(s->canonical_json, "threads"));
    mpq_job_spec_free(s);
    ck_assert_msg(spec_parse("{\"name\":\"a\",\"model\":\"@M\",\"threads\":2,\"calibration\":{\"data\":\"@D\"},"
                        "\"candidates\":[\"int4g32\",\"fp8e4m3c\"]}",
                        &s, &err) == MPQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(s->threads, 2);
    ck_assert_ptr_nonnull(strstr(s->canonical_json, "\"seed\":1,\"threads\":2,\"calibration\""));
    ck_assert_msg(mpq_job_spec_parse(s->canonical_json, "c", &s2, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(s2->threads, 2);
    ck_assert_str_eq(s2->sha256, s->sha256); /* fixed point with threads too */
    mpq_job_spec_free(s2);
    mpq_job_spec_free(s);
}
END_TEST

START_TEST(test_full_spec) {
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_msg(spec_parse("{\"name\":\"b-1.x\",\"model\":\"@M\",\"tokenizer\":\"@T\",\"seed\":7,"
                        "\"calibration\":{\"data\":\"@X\",\"seq_len\":64,\"n_seqs\":4,\"batch\":2},"
                        "\"evaluation\":{\"data\":\"@D\"},"
                        "\"candidates\":[\"int4g32\"],"
                        "\"kv\":{\"scheme\":{\"mode\":\"per-token\",\"group_size\":16,\"residual\":8},"
                        "\"pairs\":[\"k8v4\",\"k4v2\"]},"
                        "\"metrics\":[\"kv_sensitivity\",\"weight_error\"]}",
                        &s, &err) == MPQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(s->calib.seed, 7);
    ck_assert_int_eq(s->eval.seed, 8); /* evaluation default: seed + 1 */
    ck_assert_int_eq(s->eval.seq_len, 256);
    ck_assert_int_eq(s->eval.batch, 0);
    ck_assert(s->has_kv);
    ck_assert_int_eq(s->kv_scheme.mode, MPQ_KV_PER_TOKEN);
    ck_assert_int_eq(s->kv_scheme.group_size, 16);
    ck_assert_int_eq(s->kv_scheme.residual, 8);
    ck_assert_int_eq(s->n_kv_pairs, 2);
    ck_assert_str_eq(s->kv_pairs[1], "k4v2");
    /* stages run in the fixed order, whatever the list order */
    ck_assert(s->stages[MPQ_JOB_STAGE_WEIGHT_ERROR] && s->stages[MPQ_JOB_STAGE_KV_SENSITIVITY]);
    ck_assert(!s->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY]);
    ck_assert_ptr_nonnull(strstr(s->canonical_json, "\"metrics\":[\"weight_error\",\"kv_sensitivity\"]"));
    mpq_job_spec_free(s);
}
END_TEST

/* Hostile specs: each must fail with the given status and a message naming the key. */
static const struct {
    const char *json;
    mpq_status st;
    const char *needle;
} hostile[] = {
    {"", MPQ_ERR_FORMAT, "not valid JSON"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"threads\":0,\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: threads: expected a positive integer, got 0"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"threads\":1.5,\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: threads: expected a positive integer, got number 1.5"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"threads\":\"2\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: threads: expected a positive integer, got string"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"threads\":2000,\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: threads: expected a positive integer <= 1024, got 2000"},
    {"{\"name\":\"a\",", MPQ_ERR_FORMAT, "not valid JSON"},
    {"[1,2]", MPQ_ERR_INVALID, "top level"},
    {"{\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}", MPQ_ERR_INVALID,
     "job.json: name: missing"},
    {"{\"name\":\"a b\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: name:"},
    {"{\"name\":7,\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}", MPQ_ERR_INVALID,
     "job.json: name: expected a string, got number 7"},
    {"{\"name\":\"a\",\"model\":\"/nonexistent/x.bin\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_IO, "job.json: model: /nonexistent/x.bin: cannot open: No such file"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\",\"n_seqs\":-3},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: calibration.n_seqs: expected a positive integer"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\",\"seq_len\":2.5},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: calibration.seq_len: expected a positive integer"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\",\"batch\":\"8\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: calibration.batch: expected a positive integer, got string"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\",\"n_seqs\":1e30},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "calibration.n_seqs"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\",\"sed\":1},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: calibration.sed: unknown key"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"],\"extra\":1}",
     MPQ_ERR_INVALID, "job.json: extra: unknown key"},
    {"{\"name\":\"a\",\"name\":\"b\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: name: duplicate key"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":\"@D\",\"candidates\":[\"int4g32\"]}", MPQ_ERR_INVALID,
     "job.json: calibration: expected an object"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"candidates\":[\"int4g32\"]}", MPQ_ERR_INVALID, "job.json: calibration: missing"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int9g32\"]}",
     MPQ_ERR_INVALID, "job.json: candidates[0]:"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\",3]}",
     MPQ_ERR_INVALID, "job.json: candidates[1]: expected a string"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\",\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: candidates[1]: duplicate"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[]}", MPQ_ERR_INVALID,
     "job.json: candidates: empty list"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":\"int4g32\"}", MPQ_ERR_INVALID,
     "job.json: candidates: expected an array"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"}}", MPQ_ERR_INVALID, "job.json: candidates: missing"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"],"
     "\"metrics\":[\"hessain\"]}",
     MPQ_ERR_INVALID, "job.json: metrics[0]: unknown metric 'hessain'"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"],"
     "\"metrics\":[\"kv_sensitivity\"]}",
     MPQ_ERR_INVALID, "job.json: kv: missing"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"],"
     "\"kv\":{\"pairs\":[\"k5v4\"]}}",
     MPQ_ERR_INVALID, "job.json: kv.pairs[0]:"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"],"
     "\"kv\":{\"scheme\":{\"mode\":\"fancy\"},\"pairs\":[\"k4v4\"]}}",
     MPQ_ERR_INVALID, "job.json: kv.scheme.mode: unknown mode 'fancy'"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"],"
     "\"kv\":{\"scheme\":{\"group_size\":0},\"pairs\":[\"k4v4\"]}}",
     MPQ_ERR_INVALID, "job.json: kv.scheme.group_size: expected a positive integer"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"],"
     "\"kv\":{\"scheme\":{\"residual\":-1},\"pairs\":[\"k4v4\"]}}",
     MPQ_ERR_INVALID, "job.json: kv.scheme.residual: expected a non-negative integer"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@X\"},\"candidates\":[\"int4g32\"]}", MPQ_ERR_INVALID,
     "job.json: tokenizer: missing"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"seed\":-1,\"calibration\":{\"data\":\"@D\"},\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: seed: expected a non-negative integer"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"/\"},\"candidates\":[\"int4g32\"]}", MPQ_ERR_IO,
     "job.json: calibration.data: /: is a directory"},
    {"{\"name\":\"a\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},\"evaluation\":{\"data\":\"@D\",\"batch\":2},"
     "\"candidates\":[\"int4g32\"]}",
     MPQ_ERR_INVALID, "job.json: evaluation.batch: unknown key"},
};

START_TEST(test_hostile_specs) {
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    mpq_status st = spec_parse(hostile[_i].json, &s, &err);
    ck_assert_msg(st == hostile[_i].st, "case %d: status %d, want %d (%s)", _i, st, hostile[_i].st, err.msg);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, hostile[_i].needle) != NULL, "case %d: '%s' lacks '%s'", _i, err.msg,
                  hostile[_i].needle);
}
END_TEST

START_TEST(test_spec_file_errors) {
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_job_spec_load("/nonexistent/job.json", &s, &err), MPQ_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/job.json: cannot open"));
    char dir[512], path[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/nul.json", dir);
    ck_assert_int_eq(test_write_file(path, "{\"a\0\":1}", 9), 0);
    ck_assert_int_eq(mpq_job_spec_load(path, &s, &err), MPQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "NUL byte"));
    remove(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_stage_names) {
    for (int i = 0; i < MPQ_JOB_N_STAGES; i++) {
        mpq_job_stage s;
        ck_assert_int_eq(mpq_job_stage_parse(mpq_job_stage_name((mpq_job_stage)i), &s, NULL), MPQ_OK);
        ck_assert_int_eq(s, i);
    }
    mpq_job_stage s;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_job_stage_parse("weight", &s, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "'weight'"));
}
END_TEST

START_TEST(test_units) {
    mpq_job_spec *s = NULL;
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(spec_parse("{\"name\":\"u\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\"},"
                        "\"candidates\":[\"int2g32\",\"int3g32\",\"int4g32\",\"int8c\"],"
                        "\"kv\":{\"pairs\":[\"k8v8\",\"k8v4\",\"k4v8\",\"k4v4\",\"k4v2\",\"k2v4\",\"k2v2\"]}}",
                        &s, &err) == MPQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(mpq_model_load(shared_path(FIXTURE_MODEL), &m, &err), MPQ_OK);
    mpq_job_unit *u = NULL;
    int n = 0;
    ck_assert_int_eq(mpq_job_units(s, m, &u, &n, &err), MPQ_OK);
    /* stories260K: 5 blocks x 7 linear layers; 35 + 35*4 + 5*7 units */
    ck_assert_int_eq(n, 35 + 140 + 35);
    ck_assert_str_eq(u[0].key, "blk.0.attn_q");
    ck_assert_int_eq(u[0].stage, MPQ_JOB_STAGE_WEIGHT_ERROR);
    ck_assert_int_eq(u[0].option, -1);
    ck_assert_str_eq(u[34].key, "blk.4.ffn_down");
    ck_assert_str_eq(u[35].key, "blk.0.attn_q/int2g32");
    ck_assert_str_eq(u[38].key, "blk.0.attn_q/int8c");
    ck_assert_int_eq(u[38].option, 3);
    ck_assert_int_eq(u[38].stage, MPQ_JOB_STAGE_LAYER_SENSITIVITY);
    ck_assert_str_eq(u[175].key, "blk.0.kv/k8v8");
    ck_assert_int_eq(u[175].linear_index, -1);
    ck_assert_str_eq(u[n - 1].key, "blk.4.kv/k2v2");
    ck_assert_int_eq(u[n - 1].block, 4);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            ck_assert_msg(u[i].stage != u[j].stage || strcmp(u[i].key, u[j].key) != 0, "duplicate key %s", u[i].key);
    free(u);
    mpq_model_free(m);
    mpq_job_spec_free(s);
}
END_TEST

/* ---- driver ----------------------------------------------------------------------------- */

static const char *small_spec =
    "{\"name\":\"small\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\",\"seq_len\":32,\"n_seqs\":4,\"batch\":2},"
    "\"candidates\":[\"int3g32\"],\"kv\":{\"pairs\":[\"k2v2\"]},"
    "\"metrics\":[\"weight_error\",\"layer_sensitivity\",\"kv_sensitivity\"]}";

START_TEST(test_interrupt_resume_identical) {
    char dir[512];
    test_tmpdir(dir, sizeof dir);
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_msg(spec_parse(small_spec, &s, &err) == MPQ_OK, "%s", err.msg);
    mpq_db *a = fixture_open_db(dir, "a.db"), *b = fixture_open_db(dir, "b.db");
    int64_t id = 0;
    ck_assert_msg(mpq_job_run(a, s, NULL, &id, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_gt(id, 0);
    int64_t done = 0, total = 0;
    ck_assert_int_eq(mpq_db_units_count(a, id, NULL, &done, &total, NULL, &err), MPQ_OK);
    ck_assert_int_eq(total, 35 + 35 + 5);
    ck_assert_int_eq(done, total);

    /* interrupted twice (after 10, then 30 more units), then resumed to the end */
    mpq_job_opts o = mpq_job_opts_default();
    o.max_units = 10;
    ck_assert_int_eq(mpq_job_run(b, s, &o, &id, &err), MPQ_ERR_INTERRUPTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "mpq resume small"));
    mpq_db_job j;
    ck_assert_int_eq(mpq_db_job_get(b, id, &j, &err), MPQ_OK);
    ck_assert_int_eq(j.status, MPQ_DB_JOB_INTERRUPTED);
    ck_assert_int_eq(mpq_db_units_count(b, id, NULL, &done, NULL, NULL, &err), MPQ_OK);
    ck_assert_int_eq(done, 10);
    o.max_units = 30;
    ck_assert_int_eq(mpq_job_resume(b, "small", &o, &err), MPQ_ERR_INTERRUPTED);
    ck_assert_msg(mpq_job_resume(b, "small", NULL, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_db_job_get(b, id, &j, &err), MPQ_OK);
    ck_assert_int_eq(j.status, MPQ_DB_JOB_DONE);
    /* a finished job: running again is a no-op */
    ck_assert_int_eq(mpq_job_run(b, s, NULL, NULL, &err), MPQ_OK);

    mpq_db_table *ta = fixture_dump(a, "1"), *tb = fixture_dump(b, "1");
    /* 35 layers x (4 weight rows + xtx) + 35 x 3 + 5 x 4 */
    ck_assert_int_eq(ta->n_rows, 35 * 5 + 35 * 3 + 5 * 4);
    ck_assert_int_eq(tb->n_rows, ta->n_rows);
    for (int i = 0; i < ta->n_rows * ta->n_cols; i++) {
        const char *x = ta->cells[i] ? ta->cells[i] : "NULL", *y = tb->cells[i] ? tb->cells[i] : "NULL";
        ck_assert_msg(strcmp(x, y) == 0, "cell %d differs: %s vs %s", i, x, y);
    }
    /* the numbers are real measurements: int3 on blk.0.attn_q has kl > 0 and top1 in (0, 1] */
    int64_t lid = 0;
    ck_assert_int_eq(mpq_db_layer_find(a, j.model_id, "blk.0.attn_q", &lid, &err), MPQ_OK);
    double kl, top1, se;
    ck_assert_int_eq(mpq_db_metric_get(a, id, lid, "int3g32", "kl", &kl, &se, NULL, &err), MPQ_OK);
    ck_assert(kl > 0 && isfinite(se));
    ck_assert_int_eq(mpq_db_metric_get(a, id, lid, "int3g32", "top1", &top1, NULL, NULL, &err), MPQ_OK);
    ck_assert(top1 > 0 && top1 <= 1);
    ck_assert_int_eq(mpq_db_layer_find(a, j.model_id, "blk.2.kv", &lid, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_metric_get(a, id, lid, "k2v2", "kv_kl", &kl, NULL, NULL, &err), MPQ_OK);
    ck_assert(kl > 0);
    mpq_db_table_free(ta);
    mpq_db_table_free(tb);

    /* same name, different spec: refused, nothing changed */
    mpq_job_spec *s2 = NULL;
    char *t2 = spec_fill(small_spec);
    char *p = strstr(t2, "\"n_seqs\":4");
    ck_assert_ptr_nonnull(p);
    p[9] = '5';
    ck_assert_int_eq(mpq_job_spec_parse(t2, "job2.json", &s2, &err), MPQ_OK);
    free(t2);
    ck_assert_int_eq(mpq_job_run(a, s2, NULL, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "job 'small' exists with a different spec"));
    ck_assert_int_eq(mpq_job_resume(a, "nosuchjob", NULL, &err), MPQ_ERR_NOTFOUND);
    mpq_job_spec_free(s2);
    mpq_db_close(a);
    mpq_db_close(b);
    mpq_job_spec_free(s);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(test_changed_data_refused) {
    char dir[512], data[600];
    test_tmpdir(dir, sizeof dir);
    size_t n = 0;
    void *buf = test_read_file(shared_path(FIXTURE_CALIB), &n);
    ck_assert_ptr_nonnull(buf);
    snprintf(data, sizeof data, "%s/calib.u16", dir);
    ck_assert_int_eq(test_write_file(data, buf, n), 0);
    char json[2048];
    snprintf(json, sizeof json,
             "{\"name\":\"c\",\"model\":\"%s\",\"calibration\":{\"data\":\"%s\",\"seq_len\":16,\"n_seqs\":2},"
             "\"candidates\":[\"int4g32\"],\"metrics\":[\"weight_error\"]}",
             shared_path(FIXTURE_MODEL), data);
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_job_spec_parse(json, "c.json", &s, &err) == MPQ_OK, "%s", err.msg);
    mpq_db *db = fixture_open_db(dir, "c.db");
    mpq_job_opts o = mpq_job_opts_default();
    o.max_units = 3;
    ck_assert_int_eq(mpq_job_run(db, s, &o, NULL, &err), MPQ_ERR_INTERRUPTED);
    /* flip one token (stays < vocab): same size, different hash */
    ((unsigned char *)buf)[1000] ^= 1; /* low byte: id +-1 stays < 512 */
    ck_assert_int_eq(test_write_file(data, buf, n), 0);
    ck_assert_int_eq(mpq_job_resume(db, "c", NULL, &err), MPQ_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "calibration data") && strstr(err.msg, "changed since the job was created"), "%s",
                  err.msg);
    int64_t done = 0;
    mpq_db_job j;
    ck_assert_int_eq(mpq_db_job_find(db, "c", &j, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_units_count(db, j.id, NULL, &done, NULL, NULL, &err), MPQ_OK);
    ck_assert_int_eq(done, 3); /* nothing more was computed on the changed data */
    ck_assert_int_eq(j.status, MPQ_DB_JOB_INTERRUPTED);
    free(buf);
    mpq_db_close(db);
    mpq_job_spec_free(s);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *job_suite(void) {
    Suite *s = suite_create("job");
    TCase *tc = tcase_create("spec");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_full_spec);
    tcase_add_loop_test(tc, test_hostile_specs, 0, (int)(sizeof hostile / sizeof hostile[0]));
    tcase_add_test(tc, test_spec_file_errors);
    tcase_add_test(tc, test_stage_names);
    tcase_add_test(tc, test_units);
    suite_add_tcase(s, tc);
    TCase *td = tcase_create("driver");
    tcase_set_timeout(td, 300);
    tcase_add_test(td, test_interrupt_resume_identical);
    tcase_add_test(td, test_changed_data_refused);
    suite_add_tcase(s, td);
    return s;
}

int main(void) { return test_run_suite(job_suite(), false) == 0 ? EXIT_SUCCESS : EXIT_FAILURE; }
