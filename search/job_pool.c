/*
 * job_pool.c - the unit machinery of the job driver (job_pool.h): the job lease, the worker
 * threads that compute a batch of units, and the commits of their rows in pending-list order.
 *
 * Units are computed by n_workers threads, each with its own mpq_calib fork (executor,
 * weight clone, scratch); the FP reference is shared read-only. Only the calling thread
 * touches the database: it marks a unit started when it lets the workers have it, and commits
 * results in the order of the pending list; while it waits it refreshes the job lease every
 * LEASE_BEAT_S seconds, so a long unit does not make the run look dead. A unit's numbers
 * depend only on the unit (BLAS runs one thread, see mpq_blas_threads, and every unit runs
 * the same batches), so the worker count changes speed, never the stored numbers. At most
 * n_workers units are in flight; a stop request lets the units in flight finish and commits
 * them. Under MPI (job_mpi.h) a dispatcher thread takes units from the same queue for the
 * other ranks, and their worker slots count in the window of units in flight. A serial batch
 * (the hessian stage) runs on the calling thread, in order: its chunks continue one running
 * estimate.
 *
 * The job lease: one runner per job (mpq_db.h, "job leases"): taken before any unit is
 * touched, refreshed with every commit (in the commit's transaction, so a run whose lease was
 * taken over can never store a unit) and every LEASE_BEAT_S seconds while waiting for
 * workers, released by job_pool_free. A lost lease stops the run with MPQ_ERR_BUSY.
 */
#include "job_pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEASE_BEAT_S 30

struct job_pool {
    job_pool_env env;
    int64_t job_id;
    mpq_db_lease lease; /* this run's hold on the job (mpq_db_lease_acquire) */
    bool leased;        /* lease taken and not lost */
    int64_t run_done;
    int n_failed;
    mpq_status first_fail;
    char first_fail_msg[MPQ_ERR_MSG_MAX];
};

mpq_status job_pool_create(const job_pool_env *env, job_pool **out, mpq_err *err) {
    job_pool *p = mpq_calloc(1, sizeof *p);
    if (!p) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    p->env = *env;
    *out = p;
    return MPQ_OK;
}

void job_pool_free(job_pool *p) {
    if (!p) return;
    if (p->leased) mpq_db_lease_release(p->env.db, &p->lease, NULL);
    free(p);
}

void job_pool_emit(const job_pool *p, const mpq_job_progress *prog) {
    if (p->env.opts->progress) p->env.opts->progress(p->env.opts->progress_user, prog);
}

int64_t job_pool_run_done(const job_pool *p) { return p->run_done; }

int job_pool_failed(const job_pool *p, mpq_status *first, const char **first_msg) {
    if (p->n_failed > 0 && first) *first = p->first_fail;
    if (p->n_failed > 0 && first_msg) *first_msg = p->first_fail_msg;
    return p->n_failed;
}

static bool should_stop(const job_pool *p) {
    return mpq_job_stop_requested() || (p->env.opts->max_units > 0 && p->run_done >= p->env.opts->max_units);
}

/* ---- the job lease ---------------------------------------------------------------------- */

mpq_status job_pool_lease(job_pool *p, int64_t job_id, mpq_err *err) {
    p->job_id = job_id;
    mpq_status st = mpq_db_lease_acquire(p->env.db, job_id, &p->lease, NULL, err);
    if (st == MPQ_OK) p->leased = true;
    return st;
}

bool job_pool_leased(const job_pool *p) { return p->leased; }

mpq_status job_pool_beat(job_pool *p, mpq_err *err) {
    mpq_status st = mpq_db_lease_heartbeat(p->env.db, &p->lease, err);
    if (st == MPQ_ERR_BUSY) p->leased = false; /* taken over: the new owner has the job now */
    return st;
}

/* The unit's rows and done mark, and the lease check + heartbeat, in one transaction. */
static mpq_status commit_leased(job_pool *p, int64_t unit_id, unit_rows *rows, mpq_err *err) {
    mpq_db *db = p->env.db;
    mpq_status st = mpq_db_begin(db, err);
    if (st != MPQ_OK) return st;
    st = job_pool_beat(p, err);
    for (int i = 0; st == MPQ_OK && i < rows->n_art; i++)
        st = mpq_db_artifact_put(db, p->job_id, rows->art_name[i], rows->art_data[i], rows->art_len[i], err);
    if (st == MPQ_OK && (st = mpq_db_unit_commit(db, unit_id, rows->rows, rows->n, err)) == MPQ_OK)
        return mpq_db_commit(db, err);
    mpq_db_rollback(db, NULL);
    return st;
}

/* Stores one computed unit (rows + done mark, or the failure) and reports progress. */
static mpq_status finish_unit(job_pool *p, const char *sname, int64_t unit_id, const mpq_job_unit *u,
                              mpq_status ust, unit_rows *rows, mpq_err *uerr, mpq_job_progress *prog, mpq_err *err) {
    mpq_status st;
    if (ust == MPQ_OK) {
        st = commit_leased(p, unit_id, rows, err);
        job_rows_free(rows);
        if (st != MPQ_OK) return st;
        prog->stage_done++;
        p->run_done++;
        prog->event = MPQ_JOB_EVENT_UNIT_DONE;
        prog->message = NULL;
    } else {
        mpq_err_prefix(uerr, "unit %s/%s", sname, u->key);
        if ((st = job_pool_beat(p, err)) != MPQ_OK) return st;
        if ((st = mpq_db_unit_fail(p->env.db, unit_id, uerr->msg, err)) != MPQ_OK) return st;
        if (p->n_failed++ == 0) {
            p->first_fail = ust;
            snprintf(p->first_fail_msg, sizeof p->first_fail_msg, "%s", uerr->msg);
        }
        prog->event = MPQ_JOB_EVENT_UNIT_FAILED;
        prog->message = uerr->msg;
    }
    return MPQ_OK;
}

/* Progress after a unit: rate over the units this run committed in the stage. */
static void progress_emit(job_pool *p, mpq_job_progress *prog, const mpq_job_unit *u, int64_t stage_start_done,
                          double t0) {
    double el = mpq_time_now() - t0;
    int64_t stage_run = prog->stage_done - stage_start_done;
    prog->run_done = p->run_done;
    prog->seconds = el;
    prog->rate = el > 0 && stage_run > 0 ? (double)stage_run / el : 0;
    prog->eta_seconds = prog->rate > 0 ? (double)(prog->stage_total - prog->stage_done) / prog->rate : -1;
    prog->unit_key = u->key;
    job_pool_emit(p, prog);
}

/* ---- workers ---------------------------------------------------------------------------- */

typedef struct work_item {
    const mpq_job_unit *u;
    unit_rows *rows; /* allocated when handed out, freed after the commit */
    mpq_status st;
    mpq_err err;
    bool ready;
} work_item;

typedef struct workers workers;

typedef struct worker_arg {
    workers *w;
    int index;
} worker_arg;

/* The threads of one batch. */
struct workers {
    job_pool *p;
    work_item *items;
    int n_items, next, allowed; /* next item to take; items below `allowed` may be taken */
    bool quit;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    mpq_calib **cals; /* (n_workers) cals[0] = the batch's cal, the others forks of it */
    worker_arg *args;
    pthread_t *threads;
    int n_workers, n_started;
    int n_remote;        /* worker slots of other MPI ranks (job_mpi.h), 0 without MPI */
    bool remote_started; /* job_mpi_dispatch_start succeeded */
};

static void *worker_main(void *arg) {
    workers *w = ((worker_arg *)arg)->w;
    const job_pool_env *env = &w->p->env;
    mpq_calib *cal = w->cals[((worker_arg *)arg)->index];
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->quit && w->next >= w->allowed) pthread_cond_wait(&w->cv_work, &w->mu);
        if (w->quit) break;
        work_item *it = &w->items[w->next++];
        pthread_mutex_unlock(&w->mu);
        it->st = env->compute(env->user, cal, it->u, it->rows, &it->err);
        pthread_mutex_lock(&w->mu);
        it->ready = true;
        pthread_cond_broadcast(&w->cv_done);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Stops and joins the workers (each finishes the unit it holds), frees forks and rows. */
static void workers_stop(workers *w) {
    pthread_mutex_lock(&w->mu);
    w->quit = true;
    pthread_cond_broadcast(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n_started; i++) pthread_join(w->threads[i], NULL);
    if (w->remote_started) job_mpi_dispatch_stop(); /* waits for the units other ranks hold */
    for (int i = 1; w->cals && i < w->n_workers; i++) mpq_calib_free(w->cals[i]);
    for (int i = 0; w->items && i < w->n_items; i++)
        if (w->items[i].rows) {
            job_rows_free(w->items[i].rows);
            free(w->items[i].rows);
        }
    free(w->items);
    free(w->cals);
    free(w->args);
    free(w->threads);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv_work);
    pthread_cond_destroy(&w->cv_done);
}

/* The MPI dispatcher's view of the workers (job_mpi.h): it takes items as a worker does. */
static bool workers_take(void *wv, int *item, int *unit_index, unit_rows **rows, bool *quit) {
    workers *w = wv;
    bool got = false;
    pthread_mutex_lock(&w->mu);
    *quit = w->quit;
    if (!w->quit && w->next < w->allowed) {
        work_item *it = &w->items[w->next];
        *item = w->next++;
        *unit_index = w->p->env.unit_index(w->p->env.user, it->u);
        *rows = it->rows;
        got = true;
    }
    pthread_mutex_unlock(&w->mu);
    return got;
}

static void workers_deliver(void *wv, int item, mpq_status st, const mpq_err *err) {
    workers *w = wv;
    pthread_mutex_lock(&w->mu);
    w->items[item].st = st;
    if (st != MPQ_OK && err) w->items[item].err = *err;
    w->items[item].ready = true;
    pthread_cond_broadcast(&w->cv_done);
    pthread_mutex_unlock(&w->mu);
}

/* Forks b->cal for workers 2..n and starts the threads (and, under MPI, the dispatcher to
 * the other ranks); workers_stop undoes a partial start. */
static mpq_status workers_start(workers *w, job_pool *p, const job_pool_batch *b, mpq_err *err) {
    const int n_items = b->n;
    memset(w, 0, sizeof *w);
    w->p = p;
    w->n_workers = p->env.opts->n_workers < n_items ? p->env.opts->n_workers : n_items;
    if (w->n_workers < 1) w->n_workers = 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv_work, NULL);
    pthread_cond_init(&w->cv_done, NULL);
    w->n_items = n_items;
    w->items = mpq_calloc(n_items > 0 ? (size_t)n_items : 1, sizeof *w->items);
    w->cals = mpq_calloc((size_t)w->n_workers, sizeof *w->cals);
    w->args = mpq_calloc((size_t)w->n_workers, sizeof *w->args);
    w->threads = mpq_calloc((size_t)w->n_workers, sizeof *w->threads);
    if (!w->items || !w->cals || !w->args || !w->threads)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for %d workers", w->n_workers);
    for (int i = 0; i < n_items; i++) w->items[i].u = b->units[i];
    w->cals[0] = b->cal;
    mpq_status st;
    for (int i = 1; i < w->n_workers; i++)
        if ((st = mpq_calib_fork(b->cal, &w->cals[i], err)) != MPQ_OK) {
            mpq_err_prefix(err, "worker %d of %d", i + 1, w->n_workers);
            return st;
        }
    for (int i = 0; i < w->n_workers; i++) {
        w->args[i] = (worker_arg){.w = w, .index = i};
        int rc = pthread_create(&w->threads[i], NULL, worker_main, &w->args[i]);
        if (rc != 0) return mpq_err_set(err, MPQ_ERR_NOMEM, "cannot start worker thread %d: %s", i + 1, strerror(rc));
        w->n_started++;
    }
    if ((w->n_remote = job_mpi_slots()) > 0) {
        job_mpi_pool_ops ops = {.take = workers_take, .deliver = workers_deliver, .pool = w};
        if ((st = job_mpi_dispatch_start(&ops, err)) != MPQ_OK) return st;
        w->remote_started = true;
    }
    return MPQ_OK;
}

/* Hands the workers pending units up to i + n_workers, marking each started; stops
 * handing out once a stop was requested or max_units commits would be exceeded. */
static mpq_status workers_feed(workers *w, const mpq_db_unit *pend, int i, bool *stopping, mpq_err *err) {
    const job_pool *p = w->p;
    const int window = w->n_workers + w->n_remote; /* one unit per worker: a stop is honoured promptly */
    while (!*stopping && w->allowed < w->n_items && w->allowed < i + window) {
        int in_flight = w->allowed - i;
        if (mpq_job_stop_requested() ||
            (p->env.opts->max_units > 0 && p->run_done + in_flight >= p->env.opts->max_units)) {
            *stopping = true;
            break;
        }
        work_item *it = &w->items[w->allowed];
        if (!(it->rows = calloc(1, sizeof *it->rows)))
            return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for unit results");
        mpq_status st = mpq_db_unit_start(p->env.db, pend[w->allowed].id, err);
        if (st != MPQ_OK) return st;
        pthread_mutex_lock(&w->mu);
        w->allowed++;
        pthread_cond_broadcast(&w->cv_work);
        pthread_mutex_unlock(&w->mu);
    }
    return MPQ_OK;
}

/* ---- running a batch -------------------------------------------------------------------- */

/* A serial batch (the hessian stage): unit by unit on this thread. */
static mpq_status run_serial(job_pool *p, const job_pool_batch *b, mpq_job_progress *prog, bool *stopped,
                             mpq_err *err) {
    const int64_t start_done = prog->stage_done;
    unit_rows *rows = calloc(1, sizeof *rows);
    mpq_status st = MPQ_OK;
    if (!rows) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for unit results");
    for (int i = 0; i < b->n; i++) {
        if (should_stop(p)) {
            *stopped = true;
            break;
        }
        if ((st = mpq_db_unit_start(p->env.db, b->pend[i].id, err)) != MPQ_OK) break;
        mpq_err uerr = {0};
        mpq_status ust = p->env.compute(p->env.user, b->cal, b->units[i], rows, &uerr);
        if ((st = finish_unit(p, b->stage, b->pend[i].id, b->units[i], ust, rows, &uerr, prog, err)) != MPQ_OK)
            break;
        progress_emit(p, prog, b->units[i], start_done, b->t0);
    }
    free(rows);
    return st;
}

/* Any other batch: units computed by the workers, committed here in order. */
static mpq_status run_workers(job_pool *p, const job_pool_batch *b, mpq_job_progress *prog, bool *stopped,
                              mpq_err *err) {
    const int64_t start_done = prog->stage_done;
    workers w;
    bool stopping = false;
    mpq_status st = workers_start(&w, p, b, err);
    for (int i = 0; i < b->n && st == MPQ_OK; i++) {
        if ((st = workers_feed(&w, b->pend, i, &stopping, err)) != MPQ_OK) break;
        if (i >= w.allowed) break; /* nothing more handed out: a stop was requested */
        work_item *it = &w.items[i];
        pthread_mutex_lock(&w.mu);
        while (!it->ready && st == MPQ_OK) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += LEASE_BEAT_S;
            if (pthread_cond_timedwait(&w.cv_done, &w.mu, &ts) != 0 && !it->ready) {
                pthread_mutex_unlock(&w.mu); /* the workers go on meanwhile */
                st = job_pool_beat(p, err);
                pthread_mutex_lock(&w.mu);
            }
        }
        pthread_mutex_unlock(&w.mu);
        if (st != MPQ_OK) break;
        if ((st = finish_unit(p, b->stage, b->pend[i].id, b->units[i], it->st, it->rows, &it->err, prog, err)) !=
            MPQ_OK)
            break;
        free(it->rows);
        it->rows = NULL;
        progress_emit(p, prog, b->units[i], start_done, b->t0);
    }
    if (stopping && st == MPQ_OK) *stopped = true;
    workers_stop(&w);
    return st;
}

mpq_status job_pool_run(job_pool *p, const job_pool_batch *b, mpq_job_progress *prog, bool *stopped,
                        mpq_err *err) {
    return b->serial ? run_serial(p, b, prog, stopped, err) : run_workers(p, b, prog, stopped, err);
}
