/*
 * test_db.c - the results database (db/, include/mpq/mpq_db.h): create/migrate/reopen,
 * refusal of newer schemas and hostile files (file left byte-identical), job identity,
 * atomic unit commits, the read-only query runner, WAL reader/writer concurrency,
 * solutions/frontiers/evaluations/reports, integrity after use, job leases (acquire,
 * refuse, take over from a dead, reused-pid or stale other-host owner; 'interrupted' for
 * readers), migration from schema 1, several processes creating one new file.
 *
 * The layer table is the real one of stories260K (from its llama2.c header in
 * MPQ_SHARED), and the stored per-layer numbers are the squared Frobenius norms of its
 * real weights, so what the solvers will fetch is checked against the checkpoint.
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "test_util.h"
#include "test_main.h"

/* Test hook in db/db.c: raw SQL on a file, bypassing mpq (to build hostile files). */
mpq_status mpq_db_test_raw_exec(const char *path, const char *sql, mpq_err *err);
mpq_status mpq_db_test_create_version(const char *path, int version, mpq_err *err);

/* ---- the real model: stories260K layer table and per-layer weight norms ------------- */

typedef struct real_model {
    int dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    int n_linear;
    mpq_db_layer layers[64];
    double sqnorm[64]; /* sum of squares of each layer's weights, accumulated in double */
    char sha[65];
} real_model;

static const char *const kinds[7] = {"attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up",
                                     "ffn_down"};
static const char *const hf_kinds[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                        "mlp.down_proj"};

static double sq(const float *w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * (double)w[i];
    return s;
}

/* Reads the legacy llama2.c layout: header, tok_emb, rms_att, wq, wk, wv, wo, rms_ffn,
 * w1 (gate), w2 (down), w3 (up), ... */
static void load_real_model(real_model *m) {
    size_t n = 0;
    const char *path = shared_path("models/stories260K/stories260K.bin");
    unsigned char *buf = test_read_file(path, &n);
    ck_assert_msg(buf != NULL, "cannot read %s (set MPQ_SHARED)", path);
    ck_assert_uint_gt(n, 28);
    int32_t h[7];
    memcpy(h, buf, sizeof h);
    m->dim = h[0];
    m->hidden = h[1];
    m->n_layers = h[2];
    m->n_heads = h[3];
    m->n_kv_heads = h[4];
    m->vocab = h[5] < 0 ? -h[5] : h[5];
    m->seq_len = h[6];
    ck_assert_int_eq(m->dim, 64);
    ck_assert_int_eq(m->n_layers, 5);
    ck_assert_int_le(m->n_layers * 7, 64);
    size_t D = (size_t)m->dim, H = (size_t)m->hidden, L = (size_t)m->n_layers, V = (size_t)m->vocab;
    size_t kv = (size_t)m->n_kv_heads * (D / (size_t)m->n_heads);
    const float *w = (const float *)(buf + 28);
    const float *wq = w + V * D + L * D;
    const float *wk = wq + L * D * D;
    const float *wv = wk + L * kv * D;
    const float *wo = wv + L * kv * D;
    const float *w1 = wo + L * D * D + L * D;
    const float *w2 = w1 + L * H * D;
    const float *w3 = w2 + L * D * H;
    ck_assert_uint_le((size_t)((const unsigned char *)(w3 + L * H * D) - buf), n);
    const float *base[7] = {wq, wk, wv, wo, w1, w3, w2};
    size_t rows[7] = {D, kv, kv, D, H, H, D}, cols[7] = {D, D, D, D, D, D, H};
    m->n_linear = 0;
    for (int b = 0; b < m->n_layers; b++)
        for (int k = 0; k < 7; k++) {
            mpq_db_layer *l = &m->layers[m->n_linear];
            memset(l, 0, sizeof *l);
            snprintf(l->name, sizeof l->name, "blk.%d.%s", b, kinds[k]);
            snprintf(l->hf_name, sizeof l->hf_name, "model.layers.%d.%s", b, hf_kinds[k]);
            snprintf(l->kind, sizeof l->kind, "%s", kinds[k]);
            l->block = b;
            l->rows = (int64_t)rows[k];
            l->cols = (int64_t)cols[k];
            l->n_params = l->rows * l->cols;
            m->sqnorm[m->n_linear] = sq(base[k] + (size_t)b * rows[k] * cols[k], rows[k] * cols[k]);
            m->n_linear++;
        }
    mpq_sha256(buf, n, m->sha);
    free(buf);
}

static real_model RM;

static void setup_model(void) { load_real_model(&RM); }

static mpq_db_model db_model_of(const real_model *m) {
    mpq_db_model dm = {.path = "models/stories260K/stories260K.bin", .sha256 = m->sha,
                       .arch = "llama", .format = "llama2c-legacy", .dtype = "F32",
                       .dim = m->dim, .hidden_dim = m->hidden, .n_layers = m->n_layers,
                       .n_heads = m->n_heads, .n_kv_heads = m->n_kv_heads,
                       .vocab_size = m->vocab, .seq_len = m->seq_len, .n_params = 260032};
    return dm;
}

/* ---- helpers ------------------------------------------------------------------------ */

static char g_dir[512];

static const char *tpath(const char *name) {
    static char bufs[4][768];
    static int slot;
    char *b = bufs[slot];
    slot = (slot + 1) % 4;
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

static void mk_dir(void) { test_tmpdir(g_dir, sizeof g_dir); }

/* Removes the test's temporary directory (flat: only files inside). */
static void rm_dir(void) {
    if (!g_dir[0]) return;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            remove(p);
        }
        closedir(d);
    }
    rmdir(g_dir);
    g_dir[0] = '\0';
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void sha_of(const char *p, char out[65]) {
    mpq_err err = {0};
    ck_assert_msg(mpq_sha256_file(p, out, &err) == MPQ_OK, "%s", err.msg);
}

static int64_t q_int(mpq_db *db, const char *sql) {
    mpq_db_table *t = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_query_table(db, sql, &t, &err) == MPQ_OK, "%s: %s", sql, err.msg);
    ck_assert_int_eq(t->n_rows, 1);
    ck_assert_ptr_nonnull(t->cells[0]);
    int64_t v = strtoll(t->cells[0], NULL, 10);
    mpq_db_table_free(t);
    return v;
}

static mpq_db *open_ok(const char *path, unsigned flags) {
    mpq_db *db = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_open(path, flags, &db, &err) == MPQ_OK, "%s", err.msg);
    return db;
}

/* Model + job + one unit per layer holding the real weight norms as metric rows. */
typedef struct fixture {
    int64_t model_id, job_id;
    int64_t layer_ids[64];
} fixture;

static const char SPEC_A[] = "{\"model\":\"stories260K\",\"candidates\":[\"int4g32\"],\"seed\":7}";
static const char SPEC_B[] = "{\"model\":\"stories260K\",\"candidates\":[\"int3g32\"],\"seed\":7}";

static void fill(mpq_db *db, fixture *f, bool with_metrics) {
    mpq_err err = {0};
    mpq_db_model dm = db_model_of(&RM);
    ck_assert_msg(mpq_db_model_upsert(db, &dm, RM.layers, RM.n_linear, &f->model_id, f->layer_ids,
                                      &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_db_job_create(db, "s260k", SPEC_A, f->model_id, 0, 7, &f->job_id, NULL, &err) ==
                  MPQ_OK, "%s", err.msg);
    if (!with_metrics) return;
    for (int i = 0; i < RM.n_linear; i++) {
        int64_t u = 0;
        ck_assert_int_eq(mpq_db_unit_ensure(db, f->job_id, "norms", RM.layers[i].name, &u, &err), MPQ_OK);
        ck_assert_int_eq(mpq_db_unit_start(db, u, &err), MPQ_OK);
        mpq_db_metric r[2] = {
            {.layer_id = f->layer_ids[i], .candidate = "", .metric = "weight_sqnorm",
             .value = RM.sqnorm[i], .se = NAN, .n = RM.layers[i].n_params,
             .provenance_json = "{\"source\":\"stories260K.bin\"}"},
            {.layer_id = f->layer_ids[i], .candidate = "int4g32", .metric = "weight_mse",
             .value = RM.sqnorm[i] / (double)RM.layers[i].n_params * 1e-3, .se = 1e-6, .n = 1},
        };
        ck_assert_msg(mpq_db_unit_commit(db, u, r, 2, &err) == MPQ_OK, "%s", err.msg);
    }
}

/* ---- tests -------------------------------------------------------------------------- */

START_TEST(test_real_layer_table) {
    /* The README states 260,032 parameters: linear layers + embedding + RMSNorm weights. */
    int64_t lin = 0;
    for (int i = 0; i < RM.n_linear; i++) lin += RM.layers[i].n_params;
    int64_t total = lin + (int64_t)RM.vocab * RM.dim + (int64_t)(2 * RM.n_layers + 1) * RM.dim;
    ck_assert_int_eq(total, 260032);
    ck_assert_int_eq(RM.n_linear, 35);
}
END_TEST

START_TEST(test_create_migrate) {
    mk_dir();
    const char *p = tpath("a.db");
    mpq_db *db = open_ok(p, MPQ_DB_CREATE);
    ck_assert_int_eq(mpq_db_schema_version(db), MPQ_DB_SCHEMA_VERSION);
    ck_assert_str_eq(mpq_db_path(db), p);
    ck_assert_int_eq(q_int(db, "SELECT MAX(version) FROM schema_version"), MPQ_DB_SCHEMA_VERSION);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN"
                               "('schema_version','models','layers','datasets','jobs','units','metrics',"
                               "'solutions','assignments','frontiers','frontier_points','evaluations',"
                               "'artifacts')"),
                     13);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM sqlite_master WHERE type='view' AND name IN"
                               "('v_layer_sensitivity','v_job_progress','v_best_solution')"),
                     3);
    ck_assert_int_eq(q_int(db, "PRAGMA foreign_keys"), 1);
    mpq_db_table *t = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_db_query_table(db, "PRAGMA journal_mode", &t, &err), MPQ_OK);
    ck_assert_str_eq(t->cells[0], "wal");
    mpq_db_table_free(t);
    ck_assert_int_eq(mpq_db_check(db, &err), MPQ_OK);
    mpq_db_close(db);
    /* Re-opening does not re-apply the migration. */
    db = open_ok(p, MPQ_DB_READWRITE);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM schema_version"), MPQ_DB_SCHEMA_VERSION);
    mpq_db_close(db);
}
END_TEST

START_TEST(test_reopen_keeps_data) {
    mk_dir();
    const char *p = tpath("b.db");
    fixture f = {0};
    mpq_db *db = open_ok(p, MPQ_DB_CREATE);
    fill(db, &f, true);
    mpq_db_close(db);

    for (int pass = 0; pass < 2; pass++) {
        db = open_ok(p, pass == 0 ? MPQ_DB_READWRITE : MPQ_DB_READONLY);
        mpq_err err = {0};
        mpq_db_job job;
        ck_assert_msg(mpq_db_job_find(db, "s260k", &job, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_int_eq(job.id, f.job_id);
        ck_assert_str_eq(job.mpq_version, mpq_version());
        ck_assert_int_eq(job.seed, 7);
        char sha[65];
        mpq_sha256(SPEC_A, strlen(SPEC_A), sha);
        ck_assert_str_eq(job.spec_sha256, sha);
        char *spec = NULL;
        ck_assert_int_eq(mpq_db_job_spec(db, job.id, &spec, &err), MPQ_OK);
        ck_assert_str_eq(spec, SPEC_A);
        free(spec);
        mpq_db_layer *ls = NULL;
        int nl = 0;
        ck_assert_int_eq(mpq_db_layers_fetch(db, job.model_id, &ls, &nl, &err), MPQ_OK);
        ck_assert_int_eq(nl, RM.n_linear);
        int64_t ids[64];
        for (int i = 0; i < nl; i++) {
            ck_assert_str_eq(ls[i].name, RM.layers[i].name);
            ck_assert_str_eq(ls[i].hf_name, RM.layers[i].hf_name);
            ck_assert_int_eq(ls[i].rows, RM.layers[i].rows);
            ck_assert_int_eq(ls[i].id, f.layer_ids[i]);
            ids[i] = ls[i].id;
        }
        /* What the solvers fetch equals the norms computed from the checkpoint. A REAL
         * column stores the IEEE double unchanged, so the tolerance is 0. */
        double v[64], se[64];
        int found = 0;
        ck_assert_int_eq(mpq_db_metric_fetch(db, job.id, "weight_sqnorm", "", nl, ids, v, se, &found, &err),
                         MPQ_OK);
        ck_assert_int_eq(found, nl);
        for (int i = 0; i < nl; i++) {
            ck_assert_double_eq(v[i], RM.sqnorm[i]);
            ck_assert(isnan(se[i]));
            ck_assert_double_gt(v[i], 0.0);
        }
        /* Missing candidate -> NaN, n_found 0. */
        ck_assert_int_eq(mpq_db_metric_fetch(db, job.id, "weight_sqnorm", "int2", nl, ids, v, NULL, &found, &err),
                         MPQ_OK);
        ck_assert_int_eq(found, 0);
        ck_assert(isnan(v[0]));
        double val, s;
        int64_t n;
        ck_assert_int_eq(mpq_db_metric_get(db, job.id, ids[3], "int4g32", "weight_mse", &val, &s, &n, &err),
                         MPQ_OK);
        ck_assert_double_eq(s, 1e-6);
        ck_assert_int_eq(n, 1);
        ck_assert_int_eq(mpq_db_metric_get(db, job.id, 0, NULL, "weight_mse", &val, &s, &n, &err),
                         MPQ_ERR_NOTFOUND);
        char **cands = NULL;
        int nc = 0;
        ck_assert_int_eq(mpq_db_metric_candidates(db, job.id, "weight_mse", &cands, &nc, &err), MPQ_OK);
        ck_assert_int_eq(nc, 1);
        ck_assert_str_eq(cands[0], "int4g32");
        mpq_db_strings_free(cands, nc);
        int64_t done = 0, total = 0, failed = -1;
        ck_assert_int_eq(mpq_db_units_count(db, job.id, "norms", &done, &total, &failed, &err), MPQ_OK);
        ck_assert_int_eq(done, nl);
        ck_assert_int_eq(total, nl);
        ck_assert_int_eq(failed, 0);
        int64_t lid = 0;
        ck_assert_int_eq(mpq_db_layer_find(db, job.model_id, "model.layers.2.mlp.down_proj.weight", &lid, &err),
                         MPQ_OK);
        ck_assert_int_eq(lid, f.layer_ids[2 * 7 + 6]);
        ck_assert_int_eq(mpq_db_layer_find(db, job.model_id, "blk.9.attn_q", &lid, &err), MPQ_ERR_NOTFOUND);
        free(ls);
        /* A read-only handle cannot write through the API either. */
        if (pass == 1) {
            ck_assert_int_eq(mpq_db_job_set_status(db, job.id, MPQ_DB_JOB_DONE, &err), MPQ_ERR_DB);
            ck_assert_ptr_nonnull(strstr(err.msg, p));
        }
        mpq_db_close(db);
    }
    /* Missing files: READWRITE / READONLY never create them. */
    mpq_db *x = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_db_open(tpath("missing.db"), MPQ_DB_READONLY, &x, &err), MPQ_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing.db"));
    ck_assert_int_eq(mpq_db_open(tpath("missing.db"), MPQ_DB_READWRITE, &x, &err), MPQ_ERR_IO);
    ck_assert(!file_exists(tpath("missing.db")));
    ck_assert_ptr_null(x);
    ck_assert_int_eq(mpq_db_open(p, MPQ_DB_READONLY | MPQ_DB_CREATE, &x, &err), MPQ_ERR_INVALID);
}
END_TEST

START_TEST(test_newer_schema_refused) {
    mk_dir();
    const char *p = tpath("new.db");
    fixture f = {0};
    mpq_db *db = open_ok(p, MPQ_DB_CREATE);
    fill(db, &f, false);
    mpq_db_close(db);
    mpq_err err = {0};
    ck_assert_msg(mpq_db_test_raw_exec(p, "INSERT INTO schema_version(version) VALUES(9)", &err) == MPQ_OK,
                  "%s", err.msg);
    char before[65], after[65];
    sha_of(p, before);
    unsigned modes[3] = {MPQ_DB_READWRITE, MPQ_DB_CREATE, MPQ_DB_READONLY};
    for (int i = 0; i < 3; i++) {
        mpq_db *x = NULL;
        ck_assert_int_eq(mpq_db_open(p, modes[i], &x, &err), MPQ_ERR_UNSUPPORTED);
        ck_assert_ptr_null(x);
        char want[1200];
        snprintf(want, sizeof want, "%s: schema version 9 is newer than this mpq supports (%d); upgrade mpq",
                 p, MPQ_DB_SCHEMA_VERSION);
        ck_assert_str_eq(err.msg, want);
        sha_of(p, after);
        ck_assert_str_eq(before, after);
    }
}
END_TEST

/* Hostile files: each must be refused with MPQ_ERR_DB naming the file, and left unchanged. */
START_TEST(test_hostile_files) {
    mk_dir();
    /* A real, multi-page database to cut up. */
    const char *good = tpath("good.db");
    fixture f = {0};
    mpq_db *db = open_ok(good, MPQ_DB_CREATE);
    fill(db, &f, true);
    mpq_db_close(db);
    size_t gn = 0;
    unsigned char *g = test_read_file(good, &gn);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_ge(gn, 8 * 4096); /* several pages, so the cuts below hit data */

    unsigned char rnd[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof rnd; i++) {
        x = x * 1664525u + 1013904223u;
        rnd[i] = (unsigned char)(x >> 24);
    }
    /* A middle page whose b-tree page header is overwritten (bit rot): caught by quick_check. */
    unsigned char *rot = malloc(gn);
    ck_assert_ptr_nonnull(rot);
    memcpy(rot, g, gn);
    memset(rot + (gn / 2) / 4096 * 4096, 0xff, 12);
    const char text[] = "this is not a database, just some text that happens to be long enough\n";
    struct {
        const char *name;
        const void *data;
        size_t n;
        const char *raw_sql; /* build with raw SQLite instead */
    } cases[] = {
        {"text.db", text, sizeof text - 1, NULL},
        {"random.db", rnd, sizeof rnd, NULL},
        {"header-only.db", g, 100, NULL},
        {"one-page.db", g, 4096, NULL},
        {"half.db", g, (gn / 2) / 4096 * 4096, NULL},
        {"last-page-missing.db", g, gn - 4096, NULL},
        {"rotten-page.db", rot, gn, NULL},
        {"foreign.db", NULL, 0, "CREATE TABLE t(x); INSERT INTO t VALUES(1);"},
        {"empty-version.db", NULL, 0, "CREATE TABLE schema_version(version INTEGER PRIMARY KEY);"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *p = tpath(cases[c].name);
        mpq_err err = {0};
        if (cases[c].raw_sql)
            ck_assert_int_eq(mpq_db_test_raw_exec(p, cases[c].raw_sql, &err), MPQ_OK);
        else
            ck_assert_int_eq(test_write_file(p, cases[c].data, cases[c].n), 0);
        char before[65], after[65];
        sha_of(p, before);
        for (int m = 0; m < 2; m++) {
            mpq_db *h = NULL;
            mpq_status s = mpq_db_open(p, m == 0 ? MPQ_DB_CREATE : MPQ_DB_READONLY, &h, &err);
            ck_assert_msg(s == MPQ_ERR_DB, "%s (mode %d): status %d: %s", cases[c].name, m, (int)s,
                          err.msg);
            ck_assert_ptr_null(h);
            ck_assert_msg(strstr(err.msg, p) != NULL, "%s: message does not name the file: %s",
                          cases[c].name, err.msg);
            sha_of(p, after);
            ck_assert_msg(strcmp(before, after) == 0, "%s was modified", cases[c].name);
        }
    }
    free(g);
    free(rot);
    /* An empty (0-byte) file is a valid empty SQLite database: CREATE initializes it. */
    const char *e = tpath("empty.db");
    ck_assert_int_eq(test_write_file(e, "", 0), 0);
    mpq_db *h = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_db_open(e, MPQ_DB_READONLY, &h, &err), MPQ_ERR_DB);
    h = open_ok(e, MPQ_DB_CREATE);
    ck_assert_int_eq(mpq_db_schema_version(h), MPQ_DB_SCHEMA_VERSION);
    mpq_db_close(h);
}
END_TEST

START_TEST(test_job_identity) {
    mk_dir();
    mpq_db *db = open_ok(tpath("j.db"), MPQ_DB_CREATE);
    fixture f = {0};
    fill(db, &f, false);
    mpq_err err = {0};
    int64_t id2 = 0;
    bool existed = false;
    ck_assert_int_eq(mpq_db_job_create(db, "s260k", SPEC_A, f.model_id, 0, 7, &id2, &existed, &err), MPQ_OK);
    ck_assert(existed);
    ck_assert_int_eq(id2, f.job_id);
    ck_assert_int_eq(mpq_db_job_create(db, "s260k", SPEC_B, f.model_id, 0, 7, &id2, &existed, &err),
                     MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "job 's260k' exists with a different spec"));
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM jobs"), 1);
    /* A second job with its dataset; lookup by decimal id. */
    mpq_db_dataset ds = {.path = "data/tinystories-calib.tok512.u16", .sha256 = RM.sha,
                         .n_tokens = 61239, .seq_len = 256, .n_seqs = 8, .seed = 7};
    int64_t dsid = 0, dsid2 = 0, j2 = 0;
    ck_assert_int_eq(mpq_db_dataset_upsert(db, &ds, &dsid, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_dataset_upsert(db, &ds, &dsid2, &err), MPQ_OK);
    ck_assert_int_eq(dsid, dsid2);
    ck_assert_int_eq(mpq_db_job_create(db, "s260k-b", SPEC_B, f.model_id, dsid, 1, &j2, &existed, &err),
                     MPQ_OK);
    ck_assert(!existed);
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", (long long)j2);
    mpq_db_job job;
    ck_assert_int_eq(mpq_db_job_find(db, ids, &job, &err), MPQ_OK);
    ck_assert_str_eq(job.name, "s260k-b");
    ck_assert_int_eq(job.dataset_id, dsid);
    ck_assert_int_eq(job.status, MPQ_DB_JOB_CREATED);
    ck_assert_str_eq(job.finished_at, "");
    ck_assert_int_eq(mpq_db_job_find(db, "nope", &job, &err), MPQ_ERR_NOTFOUND);
    ck_assert_int_eq(mpq_db_job_set_status(db, j2, MPQ_DB_JOB_RUNNING, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_job_set_status(db, j2, MPQ_DB_JOB_DONE, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_job_get(db, j2, &job, &err), MPQ_OK);
    ck_assert_int_eq(job.status, MPQ_DB_JOB_DONE);
    ck_assert_uint_eq(strlen(job.finished_at), 24); /* 2025-01-31T12:00:00.000Z */
    ck_assert_int_eq(job.finished_at[23], 'Z');
    ck_assert_int_eq(mpq_db_job_set_status(db, 9999, MPQ_DB_JOB_DONE, &err), MPQ_ERR_NOTFOUND);
    /* A job on a model that does not exist violates the foreign key. */
    ck_assert_int_eq(mpq_db_job_create(db, "orphan", SPEC_A, 4242, 0, 7, &id2, NULL, &err), MPQ_ERR_DB);
    ck_assert_ptr_nonnull(strstr(err.msg, "FOREIGN KEY"));
    mpq_db_close(db);
}
END_TEST

START_TEST(test_unit_commit_atomic) {
    mk_dir();
    mpq_db *db = open_ok(tpath("u.db"), MPQ_DB_CREATE);
    fixture f = {0};
    fill(db, &f, false);
    mpq_err err = {0};
    int64_t u = 0, u_again = 0;
    ck_assert_int_eq(mpq_db_unit_ensure(db, f.job_id, "kl", "blk.0/int4g32", &u, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_unit_ensure(db, f.job_id, "kl", "blk.0/int4g32", &u_again, &err), MPQ_OK);
    ck_assert_int_eq(u, u_again);
    ck_assert_int_eq(mpq_db_unit_start(db, u, &err), MPQ_OK);
    mpq_db_metric rows[4] = {
        {.layer_id = f.layer_ids[0], .candidate = "int4g32", .metric = "kl", .value = 0.1, .se = 0.01, .n = 64},
        {.layer_id = f.layer_ids[1], .candidate = "int4g32", .metric = "kl", .value = 0.2, .se = 0.01, .n = 64},
        {.layer_id = 0, .candidate = "int4g32", .metric = "kl_total", .value = 0.3, .se = NAN, .n = 64},
        {.layer_id = 999999, .candidate = "int4g32", .metric = "kl", .value = 0.4, .se = 0.01, .n = 64},
    };
    /* Row 3 refers to a layer that does not exist: the whole commit rolls back. */
    ck_assert_int_eq(mpq_db_unit_commit(db, u, rows, 4, &err), MPQ_ERR_DB);
    ck_assert_ptr_nonnull(strstr(err.msg, "metric row 3"));
    ck_assert_ptr_nonnull(strstr(err.msg, "u.db"));
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM metrics"), 0);
    mpq_db_unit *pend = NULL;
    int np = 0;
    ck_assert_int_eq(mpq_db_units_pending(db, f.job_id, "kl", &pend, &np, &err), MPQ_OK);
    ck_assert_int_eq(np, 1);
    ck_assert_int_eq(pend[0].id, u);
    ck_assert_int_eq(pend[0].attempts, 1);
    ck_assert_str_eq(pend[0].key, "blk.0/int4g32");
    free(pend);
    /* NaN values are refused before anything is written. */
    mpq_db_metric nanrow = {.layer_id = f.layer_ids[0], .metric = "kl", .value = NAN, .se = NAN};
    ck_assert_int_eq(mpq_db_unit_commit(db, u, &nanrow, 1, &err), MPQ_ERR_INVALID);
    /* A layer of another model (the real sotu-2.7M header is not needed: any model). */
    mpq_db_model other = db_model_of(&RM);
    other.sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
    int64_t om = 0, ol = 0;
    ck_assert_int_eq(mpq_db_model_upsert(db, &other, RM.layers, 1, &om, &ol, &err), MPQ_OK);
    ck_assert_int_ne(om, f.model_id);
    mpq_db_metric wrong = {.layer_id = ol, .metric = "kl", .value = 1.0, .se = NAN};
    ck_assert_int_eq(mpq_db_unit_commit(db, u, &wrong, 1, &err), MPQ_ERR_DB);
    ck_assert_ptr_nonnull(strstr(err.msg, "layer does not belong to the job's model"));
    /* The good rows commit, with the unit's done mark. */
    ck_assert_int_eq(mpq_db_unit_start(db, u, &err), MPQ_OK);
    ck_assert_msg(mpq_db_unit_commit(db, u, rows, 3, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM metrics"), 3);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM metrics WHERE layer_id IS NULL"), 1);
    ck_assert_int_eq(q_int(db, "SELECT attempts FROM units"), 2);
    ck_assert_int_eq(q_int(db, "SELECT seconds >= 0 AND finished_at IS NOT NULL FROM units"), 1);
    ck_assert_int_eq(mpq_db_units_pending(db, f.job_id, NULL, &pend, &np, &err), MPQ_OK);
    ck_assert_int_eq(np, 0);
    free(pend);
    ck_assert_int_eq(mpq_db_unit_commit(db, u, rows, 1, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_db_unit_commit(db, 123456, rows, 1, &err), MPQ_ERR_NOTFOUND);
    /* Whole-model metric is unique despite layer_id NULL: REPLACE keeps one row. */
    mpq_db_metric again = rows[2];
    again.value = 0.35;
    ck_assert_int_eq(mpq_db_metric_put(db, f.job_id, 0, &again, 1, &err), MPQ_OK);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM metrics WHERE layer_id IS NULL"), 1);
    double v = 0;
    ck_assert_int_eq(mpq_db_metric_get(db, f.job_id, 0, "int4g32", "kl_total", &v, NULL, NULL, &err), MPQ_OK);
    ck_assert_double_eq(v, 0.35);

    /* Inside a caller's transaction a failed unit commit rolls back only itself. */
    int64_t u2 = 0, u3 = 0;
    ck_assert_int_eq(mpq_db_unit_ensure(db, f.job_id, "kl", "blk.1/int4g32", &u2, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_unit_ensure(db, f.job_id, "kl", "blk.2/int4g32", &u3, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_begin(db, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_begin(db, &err), MPQ_ERR_INVALID);
    mpq_db_metric r2 = {.layer_id = f.layer_ids[7], .candidate = "int4g32", .metric = "kl", .value = 0.5, .se = NAN};
    ck_assert_int_eq(mpq_db_unit_commit(db, u2, &r2, 1, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_unit_commit(db, u3, &rows[3], 1, &err), MPQ_ERR_DB);
    ck_assert_int_eq(mpq_db_commit(db, &err), MPQ_OK);
    int64_t done = 0, total = 0;
    ck_assert_int_eq(mpq_db_units_count(db, f.job_id, "kl", &done, &total, NULL, &err), MPQ_OK);
    ck_assert_int_eq(done, 2);
    ck_assert_int_eq(total, 3);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM metrics"), 4);
    /* Failed units leave the pending list until retried. */
    ck_assert_int_eq(mpq_db_unit_fail(db, u3, "NaN loss", &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_units_pending(db, f.job_id, "kl", &pend, &np, &err), MPQ_OK);
    ck_assert_int_eq(np, 0);
    free(pend);
    ck_assert_int_eq(mpq_db_units_retry_failed(db, f.job_id, NULL, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_units_pending(db, f.job_id, "kl", &pend, &np, &err), MPQ_OK);
    ck_assert_int_eq(np, 1);
    free(pend);
    /* A transaction abandoned by the caller is rolled back. */
    ck_assert_int_eq(mpq_db_begin(db, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_metric_put(db, f.job_id, 0, &r2, 1, &err), MPQ_OK);
    r2.metric = "kl2";
    ck_assert_int_eq(mpq_db_metric_put(db, f.job_id, 0, &r2, 1, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_rollback(db, &err), MPQ_OK);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM metrics WHERE metric='kl2'"), 0);
    ck_assert_int_eq(mpq_db_check(db, &err), MPQ_OK);
    mpq_db_close(db);
}
END_TEST

static int count_rows(void *ud, int n_cols, const char *const *names, const char *const *values,
                      const mpq_db_type *types) {
    (void)n_cols;
    (void)names;
    (void)values;
    (void)types;
    (*(int *)ud)++;
    return 0;
}

START_TEST(test_query_readonly) {
    mk_dir();
    const char *p = tpath("q.db");
    mpq_db *db = open_ok(p, MPQ_DB_CREATE);
    fixture f = {0};
    fill(db, &f, true);
    int64_t n_metrics = q_int(db, "SELECT count(*) FROM metrics");
    ck_assert_int_eq(n_metrics, 2 * RM.n_linear);
    char attach[1024];
    snprintf(attach, sizeof attach, "ATTACH DATABASE '%s' AS x", tpath("attached.db"));
    const char *refused[] = {
        "INSERT INTO jobs(name, spec_json, spec_sha256, model_id) VALUES('x','{}','0',1)",
        "DELETE FROM metrics",
        "UPDATE jobs SET name='y'",
        "UPDATE sqlite_master SET sql=''",
        "DROP TABLE metrics",
        "DROP VIEW v_job_progress",
        "ALTER TABLE jobs ADD COLUMN z",
        "CREATE TABLE t(x)",
        "CREATE TEMP TABLE t(x)",
        "CREATE INDEX ix ON jobs(seed)",
        attach,
        "DETACH DATABASE main",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA foreign_keys=OFF",
        "PRAGMA user_version=5",
        "PRAGMA writable_schema=ON",
        "BEGIN",
        "SAVEPOINT a",
        "VACUUM",
        "REINDEX",
        "ANALYZE",
        "SELECT 1; DELETE FROM metrics",
        "SELECT load_extension('x')",
        "SELEC 1",
        "",
        "  -- only a comment\n",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        mpq_err err = {0};
        int rows = 0;
        mpq_status s = mpq_db_query(db, refused[i], count_rows, &rows, &err);
        if (strncmp(refused[i], "SELECT load_extension", 21) == 0) {
            /* load_extension is disabled in SQL; it is refused when it runs. */
            ck_assert_msg(s != MPQ_OK, "accepted: %s", refused[i]);
            continue;
        }
        ck_assert_msg(s == MPQ_ERR_INVALID, "'%s' gave %d: %s", refused[i], (int)s, err.msg);
        ck_assert_int_eq(rows, 0); /* nothing ran, not even the leading SELECT 1 */
        ck_assert_ptr_nonnull(strstr(err.msg, p));
    }
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM metrics"), n_metrics);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM jobs"), 1);
    ck_assert(!file_exists(tpath("attached.db")));
    mpq_db_table *t = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_db_query_table(db, "PRAGMA journal_mode", &t, &err), MPQ_OK);
    ck_assert_str_eq(t->cells[0], "wal");
    mpq_db_table_free(t);
    /* Reads that are allowed. */
    ck_assert_int_eq(q_int(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<5)"
                               " SELECT sum(x) FROM c"),
                     15);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM pragma_table_info('metrics')"), 11);
    ck_assert_int_eq(mpq_db_query_table(db, "PRAGMA table_info(metrics)", &t, &err), MPQ_OK);
    ck_assert_int_eq(t->n_rows, 11);
    mpq_db_table_free(t);
    ck_assert_int_eq(mpq_db_query_table(db,
                                        "SELECT 1; SELECT layer, value, stderr FROM v_layer_sensitivity"
                                        " WHERE metric='weight_sqnorm' ORDER BY value DESC",
                                        &t, &err),
                     MPQ_OK);
    ck_assert_int_eq(t->n_cols, 3);
    ck_assert_int_eq(t->n_rows, RM.n_linear);
    ck_assert_str_eq(t->names[0], "layer");
    ck_assert_int_eq(t->types[1], MPQ_DB_TYPE_REAL);
    ck_assert_int_eq(t->types[2], MPQ_DB_TYPE_NULL);
    ck_assert_ptr_null(t->cells[2]);
    /* The largest layer by norm is what the checkpoint says. */
    int best = 0;
    for (int i = 1; i < RM.n_linear; i++)
        if (RM.sqnorm[i] > RM.sqnorm[best]) best = i;
    ck_assert_str_eq(t->cells[0], RM.layers[best].name);
    mpq_db_table_free(t);
    int rows = 0;
    ck_assert_int_eq(mpq_db_query(db, "SELECT * FROM metrics", count_rows, &rows, &err), MPQ_OK);
    ck_assert_int_eq(rows, n_metrics);
    /* Errors name the file. */
    ck_assert_int_eq(mpq_db_query(db, "SELECT * FROM no_such_table", count_rows, &rows, &err),
                     MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "no such table"));
    ck_assert_ptr_nonnull(strstr(err.msg, p));
    mpq_db_close(db);
}
END_TEST

START_TEST(test_concurrent_reader) {
    mk_dir();
    const char *p = tpath("c.db");
    mpq_db *w = open_ok(p, MPQ_DB_CREATE);
    fixture f = {0};
    fill(w, &f, false);
    mpq_db *r = open_ok(p, MPQ_DB_READONLY);
    mpq_err err = {0};
    ck_assert_int_eq(mpq_db_begin(w, &err), MPQ_OK);
    mpq_db_metric rows[35];
    for (int i = 0; i < RM.n_linear; i++)
        rows[i] = (mpq_db_metric){.layer_id = f.layer_ids[i], .candidate = "int8c", .metric = "weight_mse",
                                  .value = RM.sqnorm[i] * 1e-6, .se = NAN};
    ck_assert_int_eq(mpq_db_metric_put(w, f.job_id, 0, rows, RM.n_linear, &err), MPQ_OK);
    /* The reader sees the last committed state at once (no SQLITE_BUSY, no wait). */
    double t0 = mpq_time_now();
    ck_assert_int_eq(q_int(r, "SELECT count(*) FROM metrics"), 0);
    mpq_db *r2 = open_ok(p, MPQ_DB_READONLY); /* opening while the writer holds the lock */
    ck_assert_int_eq(q_int(r2, "SELECT count(*) FROM jobs"), 1);
    ck_assert_double_lt(mpq_time_now() - t0, 2.0); /* far below the 10 s busy timeout */
    ck_assert_int_eq(mpq_db_commit(w, &err), MPQ_OK);
    ck_assert_int_eq(q_int(r, "SELECT count(*) FROM metrics"), RM.n_linear);
    ck_assert_int_eq(q_int(r2, "SELECT count(*) FROM v_layer_sensitivity WHERE job='s260k'"), RM.n_linear);
    mpq_db_close(r2);
    mpq_db_close(r);
    ck_assert_int_eq(mpq_db_check(w, &err), MPQ_OK);
    mpq_db_close(w);
}
END_TEST

START_TEST(test_solutions_reports) {
    mk_dir();
    mpq_db *db = open_ok(tpath("s.db"), MPQ_DB_CREATE);
    fixture f = {0};
    fill(db, &f, true);
    mpq_err err = {0};
    mpq_db_assignment a[64];
    memset(a, 0, sizeof a);
    for (int i = 0; i < RM.n_linear; i++) {
        a[i].layer_id = f.layer_ids[i];
        snprintf(a[i].candidate, sizeof a[i].candidate, "%s", i % 7 == 6 ? "int8c" : "int4g32");
        snprintf(a[i].kv_pair, sizeof a[i].kv_pair, "%s", i % 7 == 1 ? "k8v4" : "");
    }
    mpq_db_solution s = {.job_id = f.job_id, .metric_expr = "kl",
                         .budgets_json = "{\"bits_per_weight\":4.5}", .objective = 0.25, .bound = 0.2,
                         .gap = 0.2, .seconds = 0.01, .config_json = "{\"layers\":{}}"};
    snprintf(s.name, sizeof s.name, "ilp-4.5");
    snprintf(s.solver, sizeof s.solver, "ilp");
    snprintf(s.status, sizeof s.status, "feasible");
    int64_t sid = 0, sid2 = 0, sid3 = 0;
    ck_assert_msg(mpq_db_solution_insert(db, &s, a, RM.n_linear, &sid, &err) == MPQ_OK, "%s", err.msg);
    /* Same name again replaces it (and its assignments). */
    s.objective = 0.21;
    snprintf(s.status, sizeof s.status, "optimal");
    ck_assert_int_eq(mpq_db_solution_insert(db, &s, a, RM.n_linear, &sid2, &err), MPQ_OK);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM solutions"), 1);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM assignments"), RM.n_linear);
    snprintf(s.name, sizeof s.name, "greedy-4.5");
    snprintf(s.solver, sizeof s.solver, "greedy");
    snprintf(s.status, sizeof s.status, "feasible");
    s.objective = 0.3;
    s.bound = NAN;
    ck_assert_int_eq(mpq_db_solution_insert(db, &s, a, 2, &sid3, &err), MPQ_OK);
    /* An assignment to a missing layer rolls the whole solution back. */
    mpq_db_assignment bad = {.layer_id = 888888};
    snprintf(s.name, sizeof s.name, "bad");
    ck_assert_int_eq(mpq_db_solution_insert(db, &s, &bad, 1, NULL, &err), MPQ_ERR_DB);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM solutions"), 2);

    mpq_db_solution out;
    mpq_db_assignment *ao = NULL;
    int na = 0;
    ck_assert_int_eq(mpq_db_solution_get(db, sid2, &out, &ao, &na, &err), MPQ_OK);
    ck_assert_str_eq(out.name, "ilp-4.5");
    ck_assert_str_eq(out.status, "optimal");
    ck_assert_str_eq(out.budgets_json, "{\"bits_per_weight\":4.5}");
    ck_assert_double_eq(out.objective, 0.21);
    ck_assert_int_eq(na, RM.n_linear);
    ck_assert_str_eq(ao[6].layer_name, "blk.0.ffn_down");
    ck_assert_str_eq(ao[6].candidate, "int8c");
    ck_assert_str_eq(ao[1].kv_pair, "k8v4");
    free(ao);
    mpq_db_solution_release(&out);
    ck_assert_int_eq(mpq_db_solution_get(db, sid3, &out, NULL, NULL, &err), MPQ_OK);
    ck_assert(isnan(out.bound));
    mpq_db_solution_release(&out);
    int64_t found = 0;
    ck_assert_int_eq(mpq_db_solution_find(db, f.job_id, "greedy-4.5", &found, &err), MPQ_OK);
    ck_assert_int_eq(found, sid3);
    /* v_best_solution picks the lowest objective per (job, metric, budget). */
    mpq_db_table *t = NULL;
    ck_assert_int_eq(mpq_db_query_table(db, "SELECT solution, objective FROM v_best_solution", &t, &err),
                     MPQ_OK);
    ck_assert_int_eq(t->n_rows, 1);
    ck_assert_str_eq(t->cells[0], "ilp-4.5");
    mpq_db_table_free(t);

    mpq_db_frontier_point pts[3] = {{3.0, 0.9, 0}, {4.0, 0.3, sid3}, {4.5, 0.21, sid2}};
    int64_t fr = 0, fr_latest = 0;
    ck_assert_int_eq(mpq_db_frontier_insert(db, f.job_id, "bits_per_weight", "kl", pts, 3, &fr, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_frontier_latest(db, f.job_id, "bits_per_weight", NULL, &fr_latest, &err), MPQ_OK);
    ck_assert_int_eq(fr, fr_latest);
    ck_assert_int_eq(mpq_db_frontier_latest(db, f.job_id, "bops", NULL, &fr_latest, &err), MPQ_ERR_NOTFOUND);
    mpq_db_frontier_point *po = NULL;
    int npo = 0;
    ck_assert_int_eq(mpq_db_frontier_points(db, fr, &po, &npo, &err), MPQ_OK);
    ck_assert_int_eq(npo, 3);
    ck_assert_double_eq(po[1].cost, 4.0);
    ck_assert_int_eq(po[0].solution_id, 0);
    ck_assert_int_eq(po[2].solution_id, sid2);
    free(po);

    mpq_db_evaluation ev = {.job_id = f.job_id, .solution_id = sid2, .config_json = "{}", .ppl = 4.41,
                            .kl = 0.02, .kl_stderr = NAN, .top1 = 0.97, .ce = 1.484, .n_tokens = 23040};
    int64_t eid = 0;
    ck_assert_int_eq(mpq_db_evaluation_insert(db, &ev, &eid, &err), MPQ_OK);
    mpq_db_evaluation *eo = NULL;
    int ne = 0;
    ck_assert_int_eq(mpq_db_evaluations_fetch(db, f.job_id, &eo, &ne, &err), MPQ_OK);
    ck_assert_int_eq(ne, 1);
    ck_assert_int_eq(eo[0].id, eid);
    ck_assert_double_eq(eo[0].ppl, 4.41);
    ck_assert(isnan(eo[0].kl_stderr));
    ck_assert_str_eq(eo[0].config_json, "{}");
    free(eo[0].config_json);
    free(eo);

    float blob[4] = {1.0f, -2.0f, 3.5f, 0.0f};
    void *bo = NULL;
    size_t nb = 0;
    ck_assert_int_eq(mpq_db_artifact_put(db, f.job_id, "fp_logits_stats", blob, sizeof blob, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_artifact_get(db, f.job_id, "fp_logits_stats", &bo, &nb, &err), MPQ_OK);
    ck_assert_uint_eq(nb, sizeof blob);
    ck_assert_int_eq(memcmp(bo, blob, sizeof blob), 0);
    free(bo);
    ck_assert_int_eq(mpq_db_artifact_get(db, f.job_id, "nope", &bo, &nb, &err), MPQ_ERR_NOTFOUND);

    /* Reports for `mpq query`. */
    struct {
        mpq_db_report r;
        int rows;
        const char *col0;
    } reps[] = {
        {MPQ_DB_REPORT_JOBS, 1, "id"},
        {MPQ_DB_REPORT_LAYERS, RM.n_linear, "id"},
        {MPQ_DB_REPORT_SENSITIVITY, 2 * RM.n_linear, "layer"},
        {MPQ_DB_REPORT_PROGRESS, 1, "stage"},
        {MPQ_DB_REPORT_SOLUTIONS, 2, "id"},
        {MPQ_DB_REPORT_EVALUATIONS, 1, "id"},
        {MPQ_DB_REPORT_FRONTIERS, 3, "frontier"},
    };
    for (size_t i = 0; i < sizeof reps / sizeof reps[0]; i++) {
        ck_assert_msg(mpq_db_report_table(db, reps[i].r, "s260k", &t, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_int_eq(t->n_rows, reps[i].rows);
        ck_assert_str_eq(t->names[0], reps[i].col0);
        mpq_db_table_free(t);
    }
    ck_assert_int_eq(mpq_db_report_table(db, MPQ_DB_REPORT_JOBS, NULL, &t, &err), MPQ_OK);
    ck_assert_str_eq(t->cells[1], "s260k");
    ck_assert_str_eq(t->names[5], "units_done");
    ck_assert_int_eq(atoi(t->cells[5]), RM.n_linear);
    mpq_db_table_free(t);
    ck_assert_int_eq(mpq_db_report_table(db, MPQ_DB_REPORT_LAYERS, "nope", &t, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_null(t);
    /* (layer, candidate) pairs stored as not available: the reason from the provenance, NULL
     * when the stored provenance is not JSON (never an error), in layer order */
    ck_assert_int_eq(mpq_db_report_table(db, MPQ_DB_REPORT_UNAVAILABLE, "s260k", &t, &err), MPQ_OK);
    ck_assert_int_eq(t->n_rows, 0);
    mpq_db_table_free(t);
    mpq_db_metric un[2] = {
        {.layer_id = f.layer_ids[3], .candidate = "saq7", .metric = "unavailable", .value = 1, .se = NAN,
         .provenance_json = "{\"stage\":\"weight_error\",\"reason\":\"candidate saq7: rate not achievable\"}"},
        {.layer_id = f.layer_ids[1], .candidate = "saq7", .metric = "unavailable", .value = 1, .se = NAN,
         .provenance_json = "{not json"}};
    ck_assert_int_eq(mpq_db_metric_put(db, f.job_id, 0, un, 2, &err), MPQ_OK);
    ck_assert_msg(mpq_db_report_table(db, MPQ_DB_REPORT_UNAVAILABLE, "s260k", &t, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(t->n_rows, 2);
    ck_assert_int_eq(t->n_cols, 3);
    ck_assert_str_eq(t->names[2], "reason");
    ck_assert_str_eq(t->cells[1], "saq7");
    ck_assert_ptr_null(t->cells[2]);
    ck_assert_str_eq(t->cells[5], "candidate saq7: rate not achievable");
    mpq_db_table_free(t);

    /* Deleting the job removes everything it owns; the model stays. */
    ck_assert_int_eq(mpq_db_check(db, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_job_delete(db, f.job_id, &err), MPQ_OK);
    ck_assert_int_eq(q_int(db, "SELECT (SELECT count(*) FROM metrics) + (SELECT count(*) FROM units) +"
                               " (SELECT count(*) FROM solutions) + (SELECT count(*) FROM assignments) +"
                               " (SELECT count(*) FROM frontier_points) + (SELECT count(*) FROM evaluations)"
                               " + (SELECT count(*) FROM artifacts)"),
                     0);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM layers"), RM.n_linear);
    ck_assert_int_eq(mpq_db_check(db, &err), MPQ_OK);
    mpq_db_close(db);
}
END_TEST


/* ---- job leases, migration from schema 1, concurrent creation ----------------------- */

static void raw(const char *p, const char *sql) {
    mpq_err err = {0};
    ck_assert_msg(mpq_db_test_raw_exec(p, sql, &err) == MPQ_OK, "%s: %s", sql, err.msg);
}

static mpq_db_job_status job_status(mpq_db *db, int64_t id) {
    mpq_db_job j;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_job_get(db, id, &j, &err) == MPQ_OK, "%s", err.msg);
    return j.status;
}

/* A pid that no process has: a child that has exited and been reaped. */
static pid_t dead_pid(void) {
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) _exit(0);
    ck_assert_int_eq(waitpid(p, NULL, 0), p);
    return p;
}

START_TEST(test_lease) {
    mk_dir();
    const char *p = tpath("lease.db");
    fixture f = {0};
    mpq_err err = {0};
    mpq_db *a = open_ok(p, MPQ_DB_CREATE), *b = open_ok(p, MPQ_DB_READWRITE);
    fill(a, &f, false);
    ck_assert_int_eq(mpq_db_job_set_status(a, f.job_id, MPQ_DB_JOB_RUNNING, &err), MPQ_OK);
    /* running without any lease: a killed runner of a file migrated from schema 1 */
    ck_assert_int_eq(job_status(b, f.job_id), MPQ_DB_JOB_INTERRUPTED);

    mpq_db_lease la, lb, prev;
    ck_assert_msg(mpq_db_lease_acquire(a, f.job_id, &la, &prev, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(strlen(la.token), 32);
    ck_assert_int_eq(la.pid, (int64_t)getpid());
    ck_assert(la.live);
    ck_assert_int_eq(prev.pid, 0);
    ck_assert_str_eq(la.job, "s260k");
    ck_assert_int_eq(job_status(b, f.job_id), MPQ_DB_JOB_RUNNING);

    /* a second runner (another handle, even of this process) is refused, naming the holder */
    ck_assert_int_eq(mpq_db_lease_acquire(b, f.job_id, &lb, NULL, &err), MPQ_ERR_BUSY);
    char want[256];
    snprintf(want, sizeof want, "job 's260k' is being run by pid %lld on host %s since %s", (long long)getpid(),
             la.host, la.started_at);
    ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, p), "%s", err.msg);
    ck_assert_int_eq(mpq_db_lease_heartbeat(a, &la, &err), MPQ_OK);

    /* release, then b holds it: a's heartbeat now reports the lease lost, naming b */
    ck_assert_int_eq(mpq_db_lease_release(a, &la, &err), MPQ_OK);
    ck_assert_int_eq(q_int(a, "SELECT count(*) FROM job_leases"), 0);
    ck_assert_int_eq(mpq_db_lease_acquire(b, f.job_id, &lb, &prev, &err), MPQ_OK);
    ck_assert_int_eq(prev.pid, 0);
    ck_assert_int_eq(mpq_db_lease_heartbeat(a, &la, &err), MPQ_ERR_BUSY);
    ck_assert_msg(strstr(err.msg, "was taken over"), "%s", err.msg);
    ck_assert_int_eq(mpq_db_lease_release(a, &la, &err), MPQ_OK); /* not ours: nothing happens */
    ck_assert_int_eq(q_int(a, "SELECT count(*) FROM job_leases"), 1);
    mpq_db_close(b);

    /* a dead owner (killed: pid gone) is interrupted to readers and taken over */
    char sql[256];
    pid_t dp = dead_pid();
    snprintf(sql, sizeof sql, "UPDATE job_leases SET pid=%d, pid_start=NULL, token='dead'", (int)dp);
    raw(p, sql);
    mpq_db *ro = open_ok(p, MPQ_DB_READONLY);
    ck_assert_int_eq(job_status(ro, f.job_id), MPQ_DB_JOB_INTERRUPTED);
    bool held = false;
    ck_assert_int_eq(mpq_db_lease_get(ro, f.job_id, &lb, &held, &err), MPQ_OK);
    ck_assert(held && !lb.live && lb.pid == dp);
    ck_assert_int_eq(q_int(ro, "SELECT count(*) FROM jobs WHERE status='running'"), 1); /* not rewritten */
    ck_assert_int_eq(mpq_db_lease_acquire(ro, f.job_id, &lb, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_msg(mpq_db_lease_acquire(a, f.job_id, &la, &prev, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(prev.pid, dp);
    ck_assert_str_eq(prev.token, "dead");
    ck_assert_int_eq(job_status(ro, f.job_id), MPQ_DB_JOB_RUNNING);

    /* our pid with another start time: the pid was reused, the owner is dead */
    raw(p, "UPDATE job_leases SET pid_start=pid_start+12345, token='reused'");
    ck_assert_int_eq(job_status(ro, f.job_id), MPQ_DB_JOB_INTERRUPTED);
    ck_assert_int_eq(mpq_db_lease_acquire(a, f.job_id, &la, &prev, &err), MPQ_OK);
    ck_assert_str_eq(prev.token, "reused");

    /* another host: live while the heartbeat is younger than the timeout */
    raw(p, "UPDATE job_leases SET host='elsewhere.example', pid=1, pid_start=NULL, token='far',"
           " heartbeat_at=strftime('%Y-%m-%dT%H:%M:%fZ','now','-30 seconds')");
    ck_assert_int_eq(job_status(ro, f.job_id), MPQ_DB_JOB_RUNNING);
    ck_assert_int_eq(mpq_db_lease_acquire(a, f.job_id, &la, NULL, &err), MPQ_ERR_BUSY);
    ck_assert_msg(strstr(err.msg, "pid 1 on host elsewhere.example since") &&
                      strstr(err.msg, "taken over once its heartbeat is 600 s old"),
                  "%s", err.msg);
    snprintf(sql, sizeof sql,
             "UPDATE job_leases SET heartbeat_at=strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ','now','-%d seconds')",
             MPQ_DB_LEASE_TIMEOUT_S + 1);
    raw(p, sql);
    ck_assert_int_eq(job_status(ro, f.job_id), MPQ_DB_JOB_INTERRUPTED);
    ck_assert_int_eq(mpq_db_lease_acquire(a, f.job_id, &la, &prev, &err), MPQ_OK);
    ck_assert_str_eq(prev.host, "elsewhere.example");

    /* deleting the job deletes its lease */
    ck_assert_int_eq(mpq_db_job_delete(a, f.job_id, &err), MPQ_OK);
    ck_assert_int_eq(q_int(a, "SELECT count(*) FROM job_leases"), 0);
    mpq_db_close(ro);
    mpq_db_close(a);
}
END_TEST

START_TEST(test_migrate_from_1) {
    mk_dir();
    const char *p = tpath("v1.db");
    mpq_err err = {0};
    ck_assert_msg(mpq_db_test_create_version(p, 1, &err) == MPQ_OK, "%s", err.msg);
    raw(p, "INSERT INTO models(id, sha256) VALUES(1, 'aa');"
           "INSERT INTO jobs(id, name, spec_json, spec_sha256, model_id, status) VALUES(1, 'old', '{}', 'bb', 1,"
           " 'running');"
           "INSERT INTO units(job_id, stage, key, status) VALUES(1, 'weight_error', 'k', 'done');");
    char before[65], after[65];
    sha_of(p, before);
    /* read-only: version 1 as it is, nothing written, status as stored (no leases to judge) */
    mpq_db *ro = open_ok(p, MPQ_DB_READONLY);
    ck_assert_int_eq(mpq_db_schema_version(ro), 1);
    ck_assert_int_eq(job_status(ro, 1), MPQ_DB_JOB_RUNNING);
    mpq_db_lease l;
    bool held = true;
    ck_assert_int_eq(mpq_db_lease_get(ro, 1, &l, &held, &err), MPQ_OK);
    ck_assert(!held);
    mpq_db_table *t = NULL;
    ck_assert_int_eq(mpq_db_report_table(ro, MPQ_DB_REPORT_JOBS, NULL, &t, &err), MPQ_OK);
    ck_assert_str_eq(t->cells[2], "running");
    mpq_db_table_free(t);
    mpq_db_close(ro);
    sha_of(p, after);
    ck_assert_str_eq(before, after);
    /* writable: migrated to the current version, data kept, the lease-less running job is interrupted */
    mpq_db *db = open_ok(p, MPQ_DB_READWRITE);
    ck_assert_int_eq(mpq_db_schema_version(db), MPQ_DB_SCHEMA_VERSION);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM schema_version"), MPQ_DB_SCHEMA_VERSION);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name='job_leases'"), 1);
    ck_assert_int_eq(q_int(db, "SELECT count(*) FROM units WHERE status='done'"), 1);
    ck_assert_int_eq(job_status(db, 1), MPQ_DB_JOB_INTERRUPTED);
    ck_assert_int_eq(mpq_db_report_table(db, MPQ_DB_REPORT_JOBS, NULL, &t, &err), MPQ_OK);
    ck_assert_str_eq(t->cells[2], "interrupted");
    mpq_db_table_free(t);
    ck_assert_int_eq(mpq_db_lease_acquire(db, 1, &l, NULL, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_check(db, &err), MPQ_OK);
    mpq_db_close(db);
}
END_TEST

/* Several processes creating the same new file at once all succeed; the schema is made once. */
START_TEST(test_create_race) {
    mk_dir();
    for (int round = 0; round < 5; round++) {
        char name[32];
        snprintf(name, sizeof name, "race%d.db", round);
        const char *p = tpath(name);
        pid_t kids[4];
        for (int k = 0; k < 4; k++) {
            kids[k] = fork();
            ck_assert_int_ge(kids[k], 0);
            if (kids[k] == 0) {
                mpq_db *x = NULL;
                mpq_err e = {0};
                mpq_status s = mpq_db_open(p, MPQ_DB_CREATE, &x, &e);
                if (s != MPQ_OK) fprintf(stderr, "child %d: %s\n", k, e.msg);
                mpq_db_close(x);
                _exit(s == MPQ_OK ? 0 : 10 + (int)s);
            }
        }
        for (int k = 0; k < 4; k++) {
            int wst = 0;
            ck_assert_int_eq(waitpid(kids[k], &wst, 0), kids[k]);
            ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "round %d child %d: status %d", round, k, wst);
        }
        mpq_db *db = open_ok(p, MPQ_DB_READONLY);
        ck_assert_int_eq(q_int(db, "SELECT count(*) FROM schema_version"), MPQ_DB_SCHEMA_VERSION);
        mpq_db_close(db);
    }
}
END_TEST

static Suite *db_suite(void) {
    Suite *s = suite_create("db");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, setup_model, NULL);
    tcase_add_checked_fixture(tc, NULL, rm_dir);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_real_layer_table);
    tcase_add_test(tc, test_create_migrate);
    tcase_add_test(tc, test_reopen_keeps_data);
    tcase_add_test(tc, test_newer_schema_refused);
    tcase_add_test(tc, test_hostile_files);
    tcase_add_test(tc, test_job_identity);
    tcase_add_test(tc, test_unit_commit_atomic);
    tcase_add_test(tc, test_query_readonly);
    tcase_add_test(tc, test_concurrent_reader);
    tcase_add_test(tc, test_solutions_reports);
    tcase_add_test(tc, test_lease);
    tcase_add_test(tc, test_migrate_from_1);
    tcase_add_test(tc, test_create_race);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(db_suite)
