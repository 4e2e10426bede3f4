/*
 * job_mpi.c - `mpirun -n N mpq run SPEC` / `mpq resume JOB` over MPI (Open MPI): rank 0 owns
 * the results database and runs the job as a single process does; the other ranks load the
 * model and data themselves, check them against rank 0's input record, and compute the units
 * of the worker-pool stages that rank 0 hands them, on their own threads, sending back each
 * unit's rows. Rank 0 commits every unit in pending-list order, so the database is the one a
 * single process writes. Internal interface: job_mpi.h; user documentation: README "Runs
 * across MPI ranks" and include/mpq/mpq_job.h ("MPI").
 *
 * Messages (MPI_COMM_WORLD, MPI_BYTE buffers, host byte order: every rank runs the same mpq
 * build, checked through the version and the OpenBLAS kernel):
 *   JOB   0 -> r  mpq version, OpenBLAS core, canonical spec, its SHA-256, rank 0's input
 *                 record (paths + SHA-256 of model, data, tokenizer), layer ids
 *   READY r -> 0  status, worker count, host, message (why it refused)
 *   UNIT  0 -> r  pool item, unit index (mpq_job_units order: the same spec and model give
 *                 the same list on every rank)
 *   ROWS  r -> 0  pool item, status, message, rows (layer id, value, stderr, n, candidate,
 *                 metric, provenance)
 *   DONE  0 -> r  stop;  BYE r -> 0  stopped
 * Neither side blocks in MPI while it waits: both poll (MPI_Iprobe) and sleep POLL_NS between
 * polls, so a waiting rank does not take a core from the ranks computing on the same host.
 */
#include "job_mpi.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef MPQ_HAVE_MPI
#include <cblas.h>
#include <mpi.h>
#endif

/* ---- launcher detection (both builds) ---------------------------------------------------- */

/* Open MPI's mpirun/mpiexec set OMPI_COMM_WORLD_SIZE; PMIx launchers (srun --mpi=pmix, prun)
 * set PMIX_RANK. */
bool mpq_job_mpi_launched(void) { return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK"); }

#ifndef MPQ_HAVE_MPI

static long env_num(const char *name) {
    const char *s = getenv(name);
    if (!s || !*s) return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return *end ? -1 : v;
}

bool mpq_job_mpi_available(void) { return false; }

mpq_status mpq_job_mpi_init(int *rank, int *n_ranks, mpq_err *err) {
    *rank = 0;
    *n_ranks = 1;
    long size = env_num("OMPI_COMM_WORLD_SIZE"), r = env_num("PMIX_RANK");
    if (size > 1 || r > 0)
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "started by an MPI launcher (%s=%ld) but this mpq was built without MPI (no MPI "
                           "library found when it was configured, or MPQ_MPI=OFF): every rank would run the "
                           "whole job; install libopenmpi-dev and rebuild, or run mpq without mpirun",
                           size > 1 ? "OMPI_COMM_WORLD_SIZE" : "PMIX_RANK", size > 1 ? size : r);
    return MPQ_OK;
}

mpq_status mpq_job_mpi_serve(const mpq_job_opts *opts, mpq_err *err) {
    (void)opts;
    return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "this mpq was built without MPI");
}

void mpq_job_mpi_finalize(void) {}

int64_t mpq_job_mpi_units(int rank) {
    (void)rank;
    return 0;
}

bool job_mpi_active(void) { return false; }

mpq_status job_mpi_announce(const mpq_job_spec *spec, const char *inputs_json, const int64_t *layer_ids, int n_ids,
                            mpq_err *err) {
    (void)spec, (void)inputs_json, (void)layer_ids, (void)n_ids, (void)err;
    return MPQ_OK;
}

mpq_status job_mpi_gather(mpq_err *err) {
    (void)err;
    return MPQ_OK;
}

int job_mpi_slots(void) { return 0; }

mpq_status job_mpi_dispatch_start(const job_mpi_pool_ops *ops, mpq_err *err) {
    (void)ops;
    return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "this mpq was built without MPI");
}

void job_mpi_dispatch_stop(void) {}

#else /* MPQ_HAVE_MPI */

enum { TAG_JOB = 1, TAG_READY, TAG_UNIT, TAG_ROWS, TAG_DONE, TAG_BYE };

#define POLL_NS 1000000L /* 1 ms between polls of a waiting rank */

static void nap(void) {
    struct timespec ts = {0, POLL_NS};
    nanosleep(&ts, NULL);
}

/* ---- byte buffers ------------------------------------------------------------------------ */

typedef struct buf {
    unsigned char *p;
    size_t n, cap, off; /* written length / capacity; read position */
    bool bad;           /* out of memory (writing) or past the end (reading) */
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->bad) return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n) nc *= 2;
        unsigned char *np = realloc(b->p, nc);
        if (!np) {
            b->bad = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_i64(buf *b, int64_t v) { put(b, &v, sizeof v); }
static void put_f64(buf *b, double v) { put(b, &v, sizeof v); }
static void put_str(buf *b, const char *s) { /* NULL and "" differ: length -1 for NULL */
    int64_t n = s ? (int64_t)strlen(s) : -1;
    put_i64(b, n);
    if (s) put(b, s, (size_t)n);
}

static void get(buf *b, void *dst, size_t n) {
    if (b->bad || b->n - b->off < n) {
        b->bad = true;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, b->p + b->off, n);
    b->off += n;
}

static int64_t get_i64(buf *b) {
    int64_t v;
    get(b, &v, sizeof v);
    return v;
}

static double get_f64(buf *b) {
    double v;
    get(b, &v, sizeof v);
    return v;
}

/* A string of the buffer: borrowed pointer into it after its length (not terminated: *len). */
static const char *get_strn(buf *b, int64_t *len) {
    int64_t n = get_i64(b);
    *len = n;
    if (b->bad || n < 0) return NULL;
    if ((uint64_t)n > b->n - b->off) {
        b->bad = true;
        return NULL;
    }
    const char *s = (const char *)b->p + b->off;
    b->off += (size_t)n;
    return s;
}

/* A string of the buffer as a malloc'd copy (NULL for a NULL string or on error). */
static char *get_str(buf *b) {
    int64_t n;
    const char *s = get_strn(b, &n);
    if (!s) return NULL;
    char *o = malloc((size_t)n + 1);
    if (!o) {
        b->bad = true;
        return NULL;
    }
    memcpy(o, s, (size_t)n);
    o[n] = '\0';
    return o;
}

static void send_buf(const buf *b, int dest, int tag) {
    MPI_Send(b->p ? (void *)b->p : (void *)"", (int)b->n, MPI_BYTE, dest, tag, MPI_COMM_WORLD);
}

/* Receives the probed message into b (reset first). false if out of memory. */
static bool recv_buf(buf *b, const MPI_Status *ms) {
    int n = 0;
    MPI_Get_count(ms, MPI_BYTE, &n);
    b->n = b->off = 0;
    b->bad = false;
    if ((size_t)n > b->cap) {
        unsigned char *np = realloc(b->p, (size_t)n);
        if (!np) {
            MPI_Recv(NULL, 0, MPI_BYTE, ms->MPI_SOURCE, ms->MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            return false; /* (a truncation error, fatal under MPI's default handler) */
        }
        b->p = np;
        b->cap = (size_t)n;
    }
    MPI_Recv(b->p, n, MPI_BYTE, ms->MPI_SOURCE, ms->MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    b->n = (size_t)n;
    return true;
}

/* Polls for a message from `source` (or MPI_ANY_SOURCE) with `tag` (or MPI_ANY_TAG). */
static void wait_msg(int source, int tag, MPI_Status *ms) {
    int flag = 0;
    for (;;) {
        MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, ms);
        if (flag) return;
        nap();
    }
}

/* ---- rows on the wire -------------------------------------------------------------------- */

static void put_rows(buf *b, const unit_rows *r) {
    put_i64(b, r->n);
    for (int i = 0; i < r->n; i++) {
        const mpq_db_metric *m = &r->rows[i];
        put_i64(b, m->layer_id);
        put_f64(b, m->value); /* bit patterns, as stored (NaN stderr included) */
        put_f64(b, m->se);
        put_i64(b, m->n);
        put_str(b, m->candidate);
        put_str(b, m->metric);
        put_str(b, m->provenance_json);
    }
    put_i64(b, r->n_art);
    for (int i = 0; i < r->n_art; i++) {
        put_str(b, r->art_name[i]);
        put_i64(b, (int64_t)r->art_len[i]);
        if (r->art_len[i]) put(b, r->art_data[i], r->art_len[i]);
    }
}

/* Rows into r (empty on entry): each row's strings in one cJSON_malloc block held by
 * r->prov[i] (provenance first), so job_rows_free frees them. */
static mpq_status get_rows(buf *b, unit_rows *r, mpq_err *err) {
    int64_t n = get_i64(b);
    if (b->bad || n < 0 || n > MAX_UNIT_ROWS)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "malformed rows message (%lld rows)", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        mpq_db_metric m = {0};
        m.layer_id = get_i64(b);
        m.value = get_f64(b);
        m.se = get_f64(b);
        m.n = get_i64(b);
        int64_t lc, lm, lp;
        const char *c = get_strn(b, &lc), *mt = get_strn(b, &lm), *pv = get_strn(b, &lp);
        if (b->bad || !mt) return mpq_err_set(err, MPQ_ERR_FORMAT, "malformed rows message (row %lld)", (long long)i);
        size_t np = pv ? (size_t)lp + 1 : 0, nc = c ? (size_t)lc + 1 : 0; /* NULL strings stay NULL */
        char *blk = cJSON_malloc(np + nc + (size_t)lm + 1);
        if (!blk) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for unit rows");
        char *pc = blk + np, *pm = pc + nc;
        if (pv) {
            memcpy(blk, pv, (size_t)lp);
            blk[lp] = '\0';
        }
        if (c) {
            memcpy(pc, c, (size_t)lc);
            pc[lc] = '\0';
        }
        memcpy(pm, mt, (size_t)lm);
        pm[lm] = '\0';
        m.candidate = c ? pc : NULL;
        m.metric = pm;
        m.provenance_json = pv ? blk : NULL;
        r->prov[r->n] = blk;
        r->rows[r->n++] = m;
    }
    int64_t na = get_i64(b);
    if (b->bad || na < 0 || na > MAX_UNIT_ARTIFACTS)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "malformed rows message (%lld artifacts)", (long long)na);
    for (int64_t i = 0; i < na; i++) {
        char *name = get_str(b);
        int64_t len = get_i64(b);
        if (b->bad || !name || len < 0 || (uint64_t)len > b->n - b->off) {
            free(name);
            return mpq_err_set(err, MPQ_ERR_FORMAT, "malformed rows message (artifact %lld)", (long long)i);
        }
        unsigned char *d = malloc(len > 0 ? (size_t)len : 1);
        if (!d) {
            free(name);
            return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for unit artifacts");
        }
        if (len) get(b, d, (size_t)len);
        r->art_name[r->n_art] = name;
        r->art_data[r->n_art] = d;
        r->art_len[r->n_art++] = (size_t)len;
    }
    return MPQ_OK;
}

/* ---- process state ----------------------------------------------------------------------- */

static struct {
    bool inited;            /* MPI_Init_thread called by mpq_job_mpi_init */
    bool ready;             /* ... and the thread level is enough: the ranks talk */
    int rank, size;
    /* rank 0 */
    int *cap;               /* (size) worker slots per rank, after gather; cap[0] unused */
    int slots;              /* sum of cap[1..] */
    int64_t *n_done;        /* (size) units each rank computed without error, all runs */
    bool announced;
    /* rank 0's dispatcher */
    job_mpi_pool_ops ops;
    pthread_t thread;
    bool thread_started;
} g;

bool mpq_job_mpi_available(void) { return true; }

mpq_status mpq_job_mpi_init(int *rank, int *n_ranks, mpq_err *err) {
    *rank = 0;
    *n_ranks = 1;
    if (!mpq_job_mpi_launched()) return MPQ_OK;
    if (!g.inited) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "MPI_Init_thread failed");
        g.inited = true;
        MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
        MPI_Comm_size(MPI_COMM_WORLD, &g.size);
        if (provided < MPI_THREAD_SERIALIZED)
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "the MPI library gives thread level %d, mpq needs MPI_THREAD_SERIALIZED (%d): rank 0 "
                               "talks to the other ranks from a thread of its own",
                               provided, MPI_THREAD_SERIALIZED);
        g.ready = true;
        if (g.rank == 0 && !(g.n_done = mpq_calloc((size_t)g.size, sizeof *g.n_done)))
            return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    *rank = g.rank;
    *n_ranks = g.size;
    return MPQ_OK;
}

bool job_mpi_active(void) { return g.ready && g.rank == 0 && g.size > 1; }

int job_mpi_slots(void) { return job_mpi_active() ? g.slots : 0; }

int64_t mpq_job_mpi_units(int rank) {
    return job_mpi_active() && rank > 0 && rank < g.size && !g.thread_started ? g.n_done[rank] : 0;
}

static const char *blas_core(void) {
    const char *s = openblas_get_corename();
    return s ? s : "?";
}

/* ---- rank 0: announce, gather, finalize ---------------------------------------------------- */

mpq_status job_mpi_announce(const mpq_job_spec *spec, const char *inputs_json, const int64_t *layer_ids, int n_ids,
                            mpq_err *err) {
    if (!job_mpi_active()) return MPQ_OK;
    if (g.announced) /* the other ranks serve one job, then stop */
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "job '%s': this MPI run already ran a job; one job per mpirun",
                           spec->name);
    buf b = {0};
    put_str(&b, mpq_version());
    put_str(&b, blas_core());
    put_str(&b, spec->canonical_json);
    put_str(&b, spec->sha256);
    put_str(&b, inputs_json);
    put_i64(&b, n_ids);
    for (int i = 0; i < n_ids; i++) put_i64(&b, layer_ids[i]);
    if (b.bad) {
        free(b.p);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    for (int r = 1; r < g.size; r++) send_buf(&b, r, TAG_JOB);
    free(b.p);
    g.announced = true;
    return MPQ_OK;
}

mpq_status job_mpi_gather(mpq_err *err) {
    if (!job_mpi_active() || !g.announced || g.cap) return MPQ_OK;
    int *cap = mpq_calloc((size_t)g.size, sizeof *cap);
    if (!cap) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    buf b = {0};
    mpq_status st = MPQ_OK;
    int slots = 0;
    for (int r = 1; r < g.size; r++) { /* every answer is taken, the first refusal reported */
        MPI_Status ms;
        wait_msg(r, TAG_READY, &ms);
        if (!recv_buf(&b, &ms)) {
            if (st == MPQ_OK) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
            continue;
        }
        int64_t rst = get_i64(&b), nw = get_i64(&b);
        char *host = get_str(&b), *msg = get_str(&b);
        if (b.bad || rst < MPQ_OK || rst > MPQ_ERR_BUSY || (rst == MPQ_OK && (nw < 1 || nw > 256))) {
            if (st == MPQ_OK) st = mpq_err_set(err, MPQ_ERR_FORMAT, "rank %d: malformed answer to the job", r);
        } else if (rst != MPQ_OK) {
            if (st == MPQ_OK)
                st = mpq_err_set(err, (mpq_status)rst, "rank %d of %d (host %s) refused the job: %s", r, g.size,
                                 host ? host : "?", msg ? msg : "?");
        } else {
            cap[r] = (int)nw;
            slots += (int)nw;
        }
        free(host);
        free(msg);
    }
    free(b.p);
    if (st != MPQ_OK) {
        free(cap);
        return st;
    }
    g.cap = cap;
    g.slots = slots;
    return MPQ_OK;
}

void mpq_job_mpi_finalize(void) {
    if (!g.inited) return;
    if (g.ready && g.rank == 0 && g.size > 1) {
        /* DONE to every rank, then wait for its BYE; anything else it still sends (an answer
         * to a job this rank gave up on) is read and dropped. */
        for (int r = 1; r < g.size; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_DONE, MPI_COMM_WORLD);
        buf b = {0};
        for (int r = 1; r < g.size; r++) {
            for (;;) {
                MPI_Status ms;
                wait_msg(r, MPI_ANY_TAG, &ms);
                recv_buf(&b, &ms);
                if (ms.MPI_TAG == TAG_BYE) break;
            }
        }
        free(b.p);
    }
    free(g.cap);
    free(g.n_done);
    g.cap = NULL;
    g.n_done = NULL;
    MPI_Finalize();
    g.inited = g.ready = false;
}

/* ---- rank 0: the dispatcher thread -------------------------------------------------------- */

typedef struct flight {
    int rank, item, unit_index;
    unit_rows *rows;
} flight;

static void *dispatch_main(void *arg) {
    (void)arg;
    const job_mpi_pool_ops *ops = &g.ops;
    flight *fl = mpq_calloc((size_t)g.slots, sizeof *fl);
    int *busy = mpq_calloc((size_t)g.size, sizeof *busy);
    int n_fl = 0;
    buf b = {0}, in = {0};
    if (!fl || !busy) { /* nothing handed out: the local workers do every unit */
        free(fl);
        free(busy);
        return NULL;
    }
    /* quit is learnt from take, which is asked whenever a rank has a free slot: with nothing
     * in flight every rank has one, so the loop ends once the pool quit and all came back */
    bool quit = false;
    while (!(quit && n_fl == 0)) {
        bool acted = false;
        for (int r = 1; r < g.size && !quit; r++)
            while (busy[r] < g.cap[r]) {
                int item, ui;
                unit_rows *rows;
                if (!ops->take(ops->pool, &item, &ui, &rows, &quit)) break;
                fl[n_fl++] = (flight){.rank = r, .item = item, .unit_index = ui, .rows = rows};
                busy[r]++;
                b.n = 0;
                b.bad = false;
                put_i64(&b, item);
                put_i64(&b, ui);
                if (b.bad) { /* out of memory: the unit fails (a resume redoes it) */
                    mpq_err e = {0};
                    mpq_err_set(&e, MPQ_ERR_NOMEM, "out of memory sending the unit to rank %d", r);
                    ops->deliver(ops->pool, item, MPQ_ERR_NOMEM, &e);
                    fl[--n_fl] = (flight){0};
                    busy[r]--;
                    continue;
                }
                send_buf(&b, r, TAG_UNIT);
                acted = true;
            }
        int flag = 0;
        MPI_Status ms;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_ROWS, MPI_COMM_WORLD, &flag, &ms);
        if (flag) {
            acted = true;
            bool got = recv_buf(&in, &ms);
            int64_t item = get_i64(&in), ust = get_i64(&in);
            int k = 0;
            while (k < n_fl && !(fl[k].rank == ms.MPI_SOURCE && fl[k].item == item)) k++;
            if (k < n_fl) {
                mpq_err e = {0};
                mpq_status st = MPQ_OK;
                char *msg = get_str(&in);
                if (!got) st = mpq_err_set(&e, MPQ_ERR_NOMEM, "out of memory receiving the rows of rank %d",
                                           ms.MPI_SOURCE);
                else if (in.bad || ust < MPQ_OK || ust > MPQ_ERR_BUSY)
                    st = mpq_err_set(&e, MPQ_ERR_FORMAT, "malformed rows message from rank %d", ms.MPI_SOURCE);
                else if (ust != MPQ_OK)
                    st = mpq_err_set(&e, (mpq_status)ust, "rank %d: %s", ms.MPI_SOURCE, msg ? msg : "?");
                else if ((st = get_rows(&in, fl[k].rows, &e)) != MPQ_OK)
                    job_rows_free(fl[k].rows);
                free(msg);
                if (st == MPQ_OK) g.n_done[fl[k].rank]++;
                ops->deliver(ops->pool, fl[k].item, st, &e);
                busy[fl[k].rank]--;
                fl[k] = fl[--n_fl];
            } /* else: not a unit this thread handed out (cannot happen): dropped */
        }
        if (!acted) nap();
    }
    free(fl);
    free(busy);
    free(b.p);
    free(in.p);
    return NULL;
}

mpq_status job_mpi_dispatch_start(const job_mpi_pool_ops *ops, mpq_err *err) {
    if (!job_mpi_active() || g.slots == 0) return MPQ_OK;
    g.ops = *ops;
    int rc = pthread_create(&g.thread, NULL, dispatch_main, NULL);
    if (rc != 0) return mpq_err_set(err, MPQ_ERR_NOMEM, "cannot start the MPI dispatcher thread: %s", strerror(rc));
    g.thread_started = true;
    return MPQ_OK;
}

void job_mpi_dispatch_stop(void) {
    if (!g.thread_started) return;
    pthread_join(g.thread, NULL);
    g.thread_started = false;
}

/* ---- ranks other than 0 ------------------------------------------------------------------- */

typedef struct slot {
    int state; /* 0 free, 1 handed to its thread, 2 computed */
    int64_t item, unit_index;
    unit_rows rows;
    mpq_status st;
    mpq_err err;
} slot;

typedef struct server {
    job_worker *w;
    slot *slots;
    int n_slots;
    bool quit;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} server;

typedef struct slot_arg {
    server *s;
    int k;
} slot_arg;

static void *slot_main(void *arg) {
    server *s = ((slot_arg *)arg)->s;
    int k = ((slot_arg *)arg)->k;
    slot *sl = &s->slots[k];
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->quit && sl->state != 1) pthread_cond_wait(&s->cv, &s->mu);
        if (s->quit) break;
        pthread_mutex_unlock(&s->mu);
        sl->err = (mpq_err){0};
        sl->st = job_worker_compute(s->w, k, (int)sl->unit_index, &sl->rows, &sl->err);
        pthread_mutex_lock(&s->mu);
        sl->state = 2;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Compares this rank's input record with rank 0's: the first file whose SHA-256 differs. */
static mpq_status compare_inputs(const char *mine, const char *theirs, mpq_err *err) {
    cJSON *a = cJSON_Parse(mine), *b = cJSON_Parse(theirs);
    mpq_status st = MPQ_OK;
    if (!cJSON_IsObject(a) || !cJSON_IsObject(b)) st = mpq_err_set(err, MPQ_ERR_FORMAT, "input records unreadable");
    const cJSON *it;
    cJSON_ArrayForEach(it, b) {
        if (st != MPQ_OK) break;
        size_t l = strlen(it->string);
        if (l < 7 || strcmp(it->string + l - 7, "_sha256") != 0 || !cJSON_IsString(it)) continue;
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(a, it->string);
        if (cJSON_IsString(m) && strcmp(m->valuestring, it->valuestring) == 0) continue;
        char what[64];
        snprintf(what, sizeof what, "%.*s", (int)(l - 7), it->string);
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(b, what);
        st = mpq_err_set(err, MPQ_ERR_INVALID,
                         "%s %s differs from the job's record (sha256 here %.16s..., recorded %.16s...): every "
                         "host must have the same model and data files",
                         what, cJSON_IsString(path) ? path->valuestring : "?",
                         cJSON_IsString(m) ? m->valuestring : "(none)", it->valuestring);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return st;
}

/* Reads the JOB message, loads and checks the inputs, runs the FP reference and the forks. */
static mpq_status take_job(buf *in, int n_workers, mpq_job_spec **spec, job_worker **w, mpq_err *err) {
    char *ver = get_str(in), *core = get_str(in), *json = get_str(in), *sha = get_str(in), *inputs = get_str(in);
    int64_t n_ids = get_i64(in);
    int64_t *ids = NULL;
    char *mine = NULL;
    mpq_status st = MPQ_OK;
    if (in->bad || !ver || !core || !json || !sha || !inputs || n_ids < 1 || n_ids > (1 << 24)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "malformed job message");
        goto done;
    }
    if (strcmp(ver, mpq_version()) != 0) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "mpq %s here, %s on rank 0: every rank needs the same build",
                         mpq_version(), ver);
        goto done;
    }
    if (strcmp(core, blas_core()) != 0) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                         "OpenBLAS uses its %s kernels here, %s on rank 0: their last bits differ, so the stored "
                         "numbers would depend on the host (set OPENBLAS_CORETYPE to the same core on every host)",
                         blas_core(), core);
        goto done;
    }
    if (mpq_blas_threads() != 1) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "OpenBLAS runs %d threads here, not 1", mpq_blas_threads());
        goto done;
    }
    if (!(ids = mpq_calloc((size_t)n_ids, sizeof *ids))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n_ids; i++) ids[i] = get_i64(in);
    if (in->bad) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "malformed job message");
        goto done;
    }
    if ((st = mpq_job_spec_parse_stored(json, "spec from rank 0", spec, err)) != MPQ_OK) goto done;
    if (strcmp((*spec)->sha256, sha) != 0) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "the spec does not re-canonicalize to rank 0's text");
        goto done;
    }
    if ((st = job_worker_open(*spec, ids, (int)n_ids, w, err)) != MPQ_OK) goto done;
    if (!(mine = job_worker_inputs_json(*w))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = compare_inputs(mine, inputs, err)) != MPQ_OK) goto done;
    st = job_worker_reference(*w, n_workers, err);
done:
    free(ver);
    free(core);
    free(json);
    free(sha);
    free(inputs);
    free(ids);
    free(mine);
    return st;
}

/* Computes the units rank 0 hands out on n_workers threads until DONE. */
static void serve_units(job_worker *w, int n_workers) {
    server s = {.w = w, .n_slots = n_workers};
    slot_arg *args = mpq_calloc((size_t)n_workers, sizeof *args);
    pthread_t *th = mpq_calloc((size_t)n_workers, sizeof *th);
    s.slots = mpq_calloc((size_t)n_workers, sizeof *s.slots);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    int n_started = 0;
    for (int k = 0; args && th && s.slots && k < n_workers; k++) {
        args[k] = (slot_arg){.s = &s, .k = k};
        if (pthread_create(&th[k], NULL, slot_main, &args[k]) != 0) break;
        n_started++;
    }
    /* slots without a thread stay unused: rank 0 was told n_workers, so a unit given to one
     * is answered at once with an error (the unit fails; a resume redoes it) */
    buf in = {0}, out = {0};
    for (;;) {
        bool acted = false;
        for (int k = 0; s.slots && k < n_workers; k++) {
            pthread_mutex_lock(&s.mu);
            int state = s.slots[k].state;
            pthread_mutex_unlock(&s.mu);
            if (state != 2) continue;
            slot *sl = &s.slots[k];
            out.n = 0;
            out.bad = false;
            put_i64(&out, sl->item);
            put_i64(&out, sl->st);
            put_str(&out, sl->st == MPQ_OK ? NULL : sl->err.msg);
            if (sl->st == MPQ_OK) put_rows(&out, &sl->rows);
            job_rows_free(&sl->rows);
            if (out.bad) { /* out of memory: report the unit failed, with no text */
                out.n = 0;
                out.bad = false;
                put_i64(&out, sl->item);
                put_i64(&out, MPQ_ERR_NOMEM);
                put_str(&out, "out of memory for the unit's rows");
            }
            send_buf(&out, 0, TAG_ROWS);
            pthread_mutex_lock(&s.mu);
            sl->state = 0;
            pthread_mutex_unlock(&s.mu);
            acted = true;
        }
        int flag = 0;
        MPI_Status ms;
        MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &ms);
        if (flag) {
            acted = true;
            bool got = recv_buf(&in, &ms);
            if (ms.MPI_TAG == TAG_DONE) break;
            if (ms.MPI_TAG != TAG_UNIT) continue; /* nothing else is sent now */
            int64_t item = get_i64(&in), ui = get_i64(&in);
            int k = 0;
            pthread_mutex_lock(&s.mu);
            while (s.slots && k < n_started && s.slots[k].state != 0) k++;
            bool ok = got && !in.bad && s.slots && k < n_started;
            if (ok) {
                s.slots[k] = (slot){.state = 1, .item = item, .unit_index = ui};
                pthread_cond_broadcast(&s.cv);
            }
            pthread_mutex_unlock(&s.mu);
            if (!ok) {
                out.n = 0;
                out.bad = false;
                put_i64(&out, item);
                put_i64(&out, MPQ_ERR_NOMEM);
                put_str(&out, "no free worker on this rank (out of memory or threads)");
                send_buf(&out, 0, TAG_ROWS);
            }
        }
        if (!acted) nap();
    }
    pthread_mutex_lock(&s.mu);
    s.quit = true;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    for (int k = 0; k < n_started; k++) pthread_join(th[k], NULL);
    for (int k = 0; s.slots && k < n_workers; k++) job_rows_free(&s.slots[k].rows);
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    free(s.slots);
    free(args);
    free(th);
    free(in.p);
    free(out.p);
}

mpq_status mpq_job_mpi_serve(const mpq_job_opts *opts, mpq_err *err) {
    if (!g.ready || g.rank == 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_job_mpi_serve: not a rank other than 0 of an MPI run");
    int n_workers = opts && opts->n_workers > 0 ? opts->n_workers : mpq_job_default_workers();
    buf in = {0};
    MPI_Status ms;
    wait_msg(0, MPI_ANY_TAG, &ms); /* JOB, or DONE when rank 0 had nothing to hand out */
    recv_buf(&in, &ms);
    if (ms.MPI_TAG == TAG_JOB) {
        mpq_job_spec *spec = NULL;
        job_worker *w = NULL;
        mpq_err e = {0};
        mpq_status st = take_job(&in, n_workers, &spec, &w, &e);
        char host[256] = "?";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        buf out = {0};
        put_i64(&out, st);
        put_i64(&out, n_workers);
        put_str(&out, host);
        put_str(&out, st == MPQ_OK ? NULL : e.msg);
        send_buf(&out, 0, TAG_READY); /* (out of memory: a short message, read as malformed) */
        free(out.p);
        if (st == MPQ_OK) serve_units(w, n_workers);
        else
            for (;;) { /* refused: rank 0 stops the run; wait for its DONE */
                wait_msg(0, MPI_ANY_TAG, &ms);
                recv_buf(&in, &ms);
                if (ms.MPI_TAG == TAG_DONE) break;
            }
        job_worker_close(w);
        mpq_job_spec_free(spec);
    }
    free(in.p);
    MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_BYE, MPI_COMM_WORLD);
    return MPQ_OK;
}

#endif /* MPQ_HAVE_MPI */
