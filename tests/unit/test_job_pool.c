/*
 * test_job_pool.c - the unit machinery of the job driver (search/job_pool.c), driven with a
 * compute callback of its own over a stories260K FP reference and a stored job: units that
 * finish out of order are committed in pending-list order with their rows and done marks;
 * no two computations run on one mpq_calib at once, and the workers use the reference plus
 * forks of it; a failing unit is marked failed with its message while the others commit;
 * max_units stops handing out and commits exactly that many; a serial batch computes on the
 * calling thread with the reference; a second pool cannot lease a held job until the first
 * is freed. Whole jobs through the pool (workers 1 vs 2, kill and resume, MPI) are
 * tests/e2e/workers.sh, kill_resume.sh, lease.sh, mpi.sh.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "../../search/job_pool.h"
#include "job_fixture.h"
#include "spec_fixture.h"
#include "test_main.h"
#include "test_util.h"

#define N_UNITS 8
#define STAGE "layer_sensitivity"

typedef struct fx {
    char dir[4096], path[4200];
    mpq_db *db;
    mpq_model *m;
    mpq_calib *ref;
    int64_t job_id, layer_ids[64];
    mpq_job_unit units[N_UNITS];
    const mpq_job_unit *us[N_UNITS];
    mpq_job_opts opts; /* of the pool under test */
    mpq_db_unit *pend;
    int n_pend;
    /* what the callbacks saw (mu guards them) */
    pthread_mutex_t mu;
    mpq_calib *cals[N_UNITS];
    int busy[N_UNITS], n_cals;
    bool shared_cal, off_thread;
    pthread_t caller;
    int fail_index;
    char events[N_UNITS][MPQ_DB_NAME_MAX];
    int event_kind[N_UNITS], n_events;
    char fail_msg[MPQ_ERR_MSG_MAX];
} fx;

static void fx_open(fx *f) {
    memset(f, 0, sizeof *f);
    mpq_err err = {0};
    test_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/pool.db", f->dir);
    ck_assert_msg(mpq_db_open(f->path, MPQ_DB_CREATE, &f->db, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_model_load(shared_path(FIXTURE_MODEL), &f->m, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_le(mpq_model_n_linear(f->m), 64);
    int64_t model_id = 0;
    fixture_store_job(f->db, f->m, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "pool",
                      "[\"int4g32\"]", false, &model_id, f->layer_ids, &f->job_id);
    for (int i = 0; i < N_UNITS; i++) {
        mpq_job_unit *u = &f->units[i];
        u->stage = MPQ_JOB_STAGE_LAYER_SENSITIVITY;
        snprintf(u->key, sizeof u->key, "%s/int4g32", mpq_model_linear(f->m, i)->name);
        u->linear_index = i;
        f->us[i] = u;
        int64_t uid;
        ck_assert_msg(mpq_db_unit_ensure(f->db, f->job_id, STAGE, u->key, &uid, &err) == MPQ_OK, "%s", err.msg);
    }
    ck_assert_msg(mpq_db_units_pending(f->db, f->job_id, STAGE, &f->pend, &f->n_pend, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(f->n_pend, N_UNITS);
    for (int i = 0; i < N_UNITS; i++) ck_assert_str_eq(f->pend[i].key, f->units[i].key); /* id order = unit order */
    int tokens[4 * 33];
    for (int i = 0; i < 4 * 33; i++) tokens[i] = (i * 37 + 11) % 512;
    mpq_calib_opts co = mpq_calib_opts_default();
    co.batch = 2;
    ck_assert_msg(mpq_calib_create(f->m, tokens, 4, 32, &co, &f->ref, &err) == MPQ_OK, "%s", err.msg);
    pthread_mutex_init(&f->mu, NULL);
    f->caller = pthread_self();
    f->fail_index = -1;
}

static void fx_close(fx *f) {
    free(f->pend);
    mpq_calib_free(f->ref);
    mpq_model_free(f->m);
    mpq_db_close(f->db);
    pthread_mutex_destroy(&f->mu);
    char p[4300];
    snprintf(p, sizeof p, "%s/pool.db-wal", f->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/pool.db-shm", f->dir);
    unlink(p);
    unlink(f->path);
    rmdir(f->dir);
}

/* One row "kl" = i + 0.5 for unit i, after a sleep that makes later units finish first. */
static mpq_status fake_compute(void *user, mpq_calib *cal, const mpq_job_unit *u, unit_rows *rows, mpq_err *err) {
    fx *f = user;
    const int i = u->linear_index;
    int slot = -1;
    pthread_mutex_lock(&f->mu);
    for (int k = 0; k < f->n_cals && slot < 0; k++)
        if (f->cals[k] == cal) slot = k;
    if (slot < 0) {
        slot = f->n_cals++;
        f->cals[slot] = cal;
    }
    if (f->busy[slot]++ > 0) f->shared_cal = true;
    if (!pthread_equal(pthread_self(), f->caller)) f->off_thread = true;
    pthread_mutex_unlock(&f->mu);
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(N_UNITS - i) * 4000000L};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&f->mu);
    f->busy[slot]--;
    pthread_mutex_unlock(&f->mu);
    if (i == f->fail_index) return mpq_err_set(err, MPQ_ERR_INVALID, "boom %d", i);
    char *prov = cJSON_malloc(3);
    if (!prov) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    memcpy(prov, "{}", 3);
    rows->prov[0] = prov;
    rows->rows[0] = (mpq_db_metric){.layer_id = f->layer_ids[i], .candidate = "int4g32", .metric = "kl",
                                    .value = i + 0.5, .se = NAN, .n = 1, .provenance_json = prov};
    rows->n = 1;
    return MPQ_OK;
}

static int fake_index(void *user, const mpq_job_unit *u) { return (int)(u - ((fx *)user)->units); }

/* Called on the committing thread after each unit (job_pool_emit). */
static void on_progress(void *user, const mpq_job_progress *p) {
    fx *f = user;
    if (p->event != MPQ_JOB_EVENT_UNIT_DONE && p->event != MPQ_JOB_EVENT_UNIT_FAILED) return;
    ck_assert(pthread_equal(pthread_self(), f->caller));
    ck_assert_int_lt(f->n_events, N_UNITS);
    snprintf(f->events[f->n_events], sizeof f->events[0], "%s", p->unit_key);
    f->event_kind[f->n_events++] = p->event;
    if (p->event == MPQ_JOB_EVENT_UNIT_FAILED) snprintf(f->fail_msg, sizeof f->fail_msg, "%s", p->message);
}

/* Opens the fixture and computes and commits all its pending units as one batch (unit
 * fail_index failing, -1 none); *stopped as job_pool_run set it. The caller frees the pool
 * and closes the fixture. */
static job_pool *run_batch(fx *f, int n_workers, int max_units, bool serial, int fail_index, bool *stopped) {
    fx_open(f);
    f->fail_index = fail_index;
    f->opts = mpq_job_opts_default();
    f->opts.n_workers = n_workers;
    f->opts.max_units = max_units;
    f->opts.progress = on_progress;
    f->opts.progress_user = f;
    job_pool_env env = {.db = f->db, .opts = &f->opts, .compute = fake_compute, .unit_index = fake_index, .user = f};
    job_pool *p = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(job_pool_create(&env, &p, &err), MPQ_OK);
    ck_assert_msg(job_pool_lease(p, f->job_id, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(job_pool_leased(p));
    job_pool_batch b = {.stage = STAGE, .pend = f->pend, .units = f->us, .n = f->n_pend, .cal = f->ref,
                        .serial = serial, .t0 = mpq_time_now()};
    mpq_job_progress prog = {.job = "pool", .stage = STAGE, .stage_total = N_UNITS, .eta_seconds = -1};
    *stopped = false; /* as run_job starts: job_pool_run sets it only when it stops */
    ck_assert_msg(job_pool_run(p, &b, &prog, stopped, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(prog.stage_done, job_pool_run_done(p));
    return p;
}

/* Units of the stage done, and *failed (may be NULL) failed, as stored. */
static int64_t stored_done(fx *f, int64_t *failed) {
    int64_t done = -1;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_units_count(f->db, f->job_id, STAGE, &done, NULL, failed, &err) == MPQ_OK, "%s", err.msg);
    return done;
}

static void assert_stored(fx *f, int i, bool want) {
    double v = 0;
    mpq_err err = {0};
    mpq_status st = mpq_db_metric_get(f->db, f->job_id, f->layer_ids[i], "int4g32", "kl", &v, NULL, NULL, &err);
    if (!want) {
        ck_assert_int_eq(st, MPQ_ERR_NOTFOUND);
        return;
    }
    ck_assert_msg(st == MPQ_OK, "unit %d: %s", i, err.msg);
    ck_assert(v == i + 0.5); /* stored as computed: the double round-trips exactly */
}

START_TEST(test_commit_order_and_forks) {
    fx f;
    bool stopped;
    job_pool *p = run_batch(&f, 3, 0, false, -1, &stopped);
    ck_assert(!stopped);
    ck_assert_int_eq(job_pool_run_done(p), N_UNITS);
    ck_assert_int_eq(job_pool_failed(p, NULL, NULL), 0);
    ck_assert_int_eq(f.n_events, N_UNITS);
    for (int i = 0; i < N_UNITS; i++) { /* committed in pending order although later units finish first */
        ck_assert_str_eq(f.events[i], f.units[i].key);
        ck_assert_int_eq(f.event_kind[i], MPQ_JOB_EVENT_UNIT_DONE);
        assert_stored(&f, i, true);
    }
    ck_assert(f.off_thread);
    ck_assert(!f.shared_cal);
    ck_assert_int_eq(f.n_cals, 3); /* the reference and two forks */
    bool has_ref = false;
    for (int k = 0; k < f.n_cals; k++) has_ref |= f.cals[k] == f.ref;
    ck_assert(has_ref);
    int64_t failed = -1;
    ck_assert_int_eq(stored_done(&f, &failed), N_UNITS);
    ck_assert_int_eq(failed, 0);
    job_pool_free(p);
    fx_close(&f);
}
END_TEST

START_TEST(test_failed_unit) {
    fx f;
    bool stopped;
    job_pool *p = run_batch(&f, 2, 0, false, 2, &stopped);
    ck_assert(!stopped);
    mpq_status first = MPQ_OK;
    const char *msg = NULL;
    ck_assert_int_eq(job_pool_failed(p, &first, &msg), 1);
    ck_assert_int_eq(first, MPQ_ERR_INVALID);
    char want[256];
    snprintf(want, sizeof want, "unit " STAGE "/%s: boom 2", f.units[2].key);
    ck_assert_str_eq(msg, want);
    ck_assert_str_eq(f.fail_msg, want);
    ck_assert_int_eq(f.event_kind[2], MPQ_JOB_EVENT_UNIT_FAILED);
    ck_assert_int_eq(job_pool_run_done(p), N_UNITS - 1);
    for (int i = 0; i < N_UNITS; i++) assert_stored(&f, i, i != 2);
    int64_t failed = -1;
    ck_assert_int_eq(stored_done(&f, &failed), N_UNITS - 1);
    ck_assert_int_eq(failed, 1);
    job_pool_free(p);
    fx_close(&f);
}
END_TEST

START_TEST(test_max_units_stops) {
    fx f;
    bool stopped;
    job_pool *p = run_batch(&f, 2, 3, false, -1, &stopped);
    ck_assert(stopped);
    ck_assert_int_eq(job_pool_run_done(p), 3);
    ck_assert_int_eq(f.n_events, 3);
    for (int i = 0; i < N_UNITS; i++) assert_stored(&f, i, i < 3);
    ck_assert_int_eq(stored_done(&f, NULL), 3);
    job_pool_free(p);
    fx_close(&f);
}
END_TEST

START_TEST(test_serial_batch) {
    fx f;
    bool stopped;
    job_pool *p = run_batch(&f, 4, 0, true, -1, &stopped);
    ck_assert(!stopped);
    ck_assert(!f.off_thread);
    ck_assert_int_eq(f.n_cals, 1);
    ck_assert_ptr_eq(f.cals[0], f.ref);
    for (int i = 0; i < N_UNITS; i++) {
        ck_assert_str_eq(f.events[i], f.units[i].key);
        assert_stored(&f, i, true);
    }
    ck_assert_int_eq(stored_done(&f, NULL), N_UNITS);
    job_pool_free(p);
    fx_close(&f);
}
END_TEST

START_TEST(test_lease_held_until_free) {
    fx f;
    fx_open(&f);
    mpq_err err = {0};
    f.opts = mpq_job_opts_default();
    job_pool_env env = {.db = f.db, .opts = &f.opts, .compute = fake_compute, .unit_index = fake_index, .user = &f};
    job_pool *a = NULL, *b = NULL;
    ck_assert_int_eq(job_pool_create(&env, &a, &err), MPQ_OK);
    ck_assert_int_eq(job_pool_create(&env, &b, &err), MPQ_OK);
    ck_assert_int_eq(job_pool_lease(a, f.job_id, &err), MPQ_OK);
    ck_assert_int_eq(job_pool_beat(a, &err), MPQ_OK);
    ck_assert_int_eq(job_pool_lease(b, f.job_id, &err), MPQ_ERR_BUSY);
    ck_assert_msg(strstr(err.msg, "job 'pool' is being run by pid") != NULL, "%s", err.msg);
    ck_assert(!job_pool_leased(b));
    job_pool_free(a); /* releases */
    ck_assert_msg(job_pool_lease(b, f.job_id, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(job_pool_leased(b));
    job_pool_free(b);
    mpq_db_lease l;
    bool held = true;
    ck_assert_int_eq(mpq_db_lease_get(f.db, f.job_id, &l, &held, &err), MPQ_OK);
    ck_assert(!held);
    fx_close(&f);
}
END_TEST

static Suite *job_pool_suite(void) {
    Suite *s = suite_create("job_pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_commit_order_and_forks);
    tcase_add_test(tc, test_failed_unit);
    tcase_add_test(tc, test_max_units_stops);
    tcase_add_test(tc, test_serial_batch);
    tcase_add_test(tc, test_lease_held_until_free);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(job_pool_suite)
