/*
 * batches.c - evaluation batches on worker threads, committed in batch order
 * (mpq_exec_batches_run, mpq_exec.h). Workers take batch indices in increasing order,
 * compute them concurrently, and each commit runs after every earlier batch's commit, one at
 * a time: what the commits accumulate is added in the order one thread would add it, so the
 * totals do not depend on the worker count. The first failure in batch order is reported.
 */
#include "mpq/mpq_exec.h"

#include <pthread.h>
#include <string.h>

typedef struct batch_pool {
    int n_batches;
    mpq_exec_batch_fn compute, commit;
    void *user;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int next;      /* next batch to hand out */
    int turn;      /* next batch to commit */
    bool failed;   /* a batch failed at its turn: workers stop */
    mpq_status st; /* of that batch */
    mpq_err err;
} batch_pool;

typedef struct batch_worker {
    batch_pool *p;
    int index;
} batch_worker;

static void *batch_worker_main(void *arg) {
    batch_worker *bw = arg;
    batch_pool *p = bw->p;
    mpq_err err = {0};
    pthread_mutex_lock(&p->mu);
    while (!p->failed && p->next < p->n_batches) {
        int b = p->next++;
        pthread_mutex_unlock(&p->mu);
        mpq_status st = p->compute(p->user, bw->index, b, &err);
        pthread_mutex_lock(&p->mu);
        while (!p->failed && p->turn != b) pthread_cond_wait(&p->cv, &p->mu);
        if (p->failed) break;
        if (st == MPQ_OK) st = p->commit(p->user, bw->index, b, &err); /* serialized: under the lock */
        if (st != MPQ_OK) {
            p->failed = true;
            p->st = st;
            p->err = err;
        } else {
            p->turn++;
        }
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

mpq_status mpq_exec_batches_run(int n_workers, int n_batches, mpq_exec_batch_fn compute, mpq_exec_batch_fn commit,
                                void *user, mpq_err *err) {
    if (!compute || !commit || n_batches < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "exec: batches: NULL function or negative count");
    if (n_workers > n_batches) n_workers = n_batches;
    if (n_workers < 1) n_workers = 1;
    if (n_workers > MPQ_EXEC_MAX_WORKERS) n_workers = MPQ_EXEC_MAX_WORKERS;
    batch_pool p;
    memset(&p, 0, sizeof p);
    p.n_batches = n_batches;
    p.compute = compute;
    p.commit = commit;
    p.user = user;
    p.st = MPQ_OK;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    pthread_t th[MPQ_EXEC_MAX_WORKERS];
    batch_worker bw[MPQ_EXEC_MAX_WORKERS];
    int n_started = 0;
    /* worker 0 is this thread; a thread that cannot start leaves its share to the others,
     * which changes nothing but the speed */
    for (int i = 1; i < n_workers; i++) {
        bw[i] = (batch_worker){.p = &p, .index = i};
        if (pthread_create(&th[n_started], NULL, batch_worker_main, &bw[i]) != 0) break;
        n_started++;
    }
    bw[0] = (batch_worker){.p = &p, .index = 0};
    batch_worker_main(&bw[0]);
    for (int i = 0; i < n_started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    if (p.failed) {
        if (err) *err = p.err;
        return p.st;
    }
    return MPQ_OK;
}
