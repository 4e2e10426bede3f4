/*
 * job_pool.h - internal interface (not installed) of the unit machinery of the job driver:
 * one run's lease on a job (mpq_db.h, "job leases"), the worker threads that compute a batch
 * of pending units, and the commits of each unit's rows with its "done" mark in the order of
 * the pending list. The driver (job_run.c) gives it one batch per stage, the adaptive rounds
 * (job_adaptive.c) one per round; under MPI the dispatcher of job_mpi.c takes units from the
 * same queue for the other ranks (job_mpi_pool_ops). What the user sees: README "Workers and
 * threads" and "Runs across MPI ranks".
 *
 *     job_pool_env env = {.db = db, .opts = &opts, .compute = compute, .unit_index = index,
 *                         .user = ctx};
 *     job_pool *pl = NULL;
 *     st = job_pool_create(&env, &pl, err);
 *     if (st == MPQ_OK) st = job_pool_lease(pl, job_id, err);      // one runner per job
 *     if (st == MPQ_OK) st = job_pool_run(pl, &batch, &progress, &stopped, err);
 *     job_pool_free(pl);                                            // releases the lease
 */
#ifndef MPQ_JOB_POOL_H
#define MPQ_JOB_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_calib.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"

#include "job_mpi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One run's lease, its commit and failure counts, and the workers of the batch it runs. */
typedef struct job_pool job_pool;

/* What the pool needs of the driver; copied by job_pool_create, the pointers borrowed for
 * the pool's life. */
typedef struct job_pool_env {
    mpq_db *db;
    const mpq_job_opts *opts; /* n_workers (>= 1), max_units, progress */
    /* Computes unit u's rows with cal (the batch's FP reference, or a fork of it that only
     * the calling thread uses); called on several threads at once, each with its own cal. */
    mpq_status (*compute)(void *user, mpq_calib *cal, const mpq_job_unit *u, unit_rows *rows, mpq_err *err);
    /* u's index in mpq_job_units order (what job_mpi.c sends to the other ranks). */
    int (*unit_index)(void *user, const mpq_job_unit *u);
    void *user;
} job_pool_env;

/* Pending units of one stage, computed and committed by job_pool_run. */
typedef struct job_pool_batch {
    const char *stage;            /* stage name (failure messages) */
    const mpq_db_unit *pend;      /* [n] as mpq_db_units_pending lists them: the commit order */
    const mpq_job_unit **units;   /* [n] the unit of each */
    int n;
    mpq_calib *cal;               /* the FP reference; forked for workers 2..n_workers */
    bool serial;                  /* compute on the calling thread, one after another (hessian) */
    double t0;                    /* start of the period the progress rate is taken over */
} job_pool_batch;

/* A pool that holds no lease yet. MPQ_ERR_NOMEM. */
mpq_status job_pool_create(const job_pool_env *env, job_pool **out, mpq_err *err);
/* Releases the lease if the pool still holds it; accepts NULL. */
void job_pool_free(job_pool *p);

/* Takes the lease of job job_id (mpq_db_lease_acquire: MPQ_ERR_BUSY when another live run
 * holds it); the commits of job_pool_run go to that job. */
mpq_status job_pool_lease(job_pool *p, int64_t job_id, mpq_err *err);
/* True from job_pool_lease until the lease is found taken over (only its holder may write
 * the job's status). */
bool job_pool_leased(const job_pool *p);
/* Refreshes the lease (mpq_db_lease_heartbeat); MPQ_ERR_BUSY once it was taken over. Inside
 * a transaction it makes the transaction's writes conditional on holding the lease. */
mpq_status job_pool_beat(job_pool *p, mpq_err *err);

/* Passes p to the progress callback of opts (if any). */
void job_pool_emit(const job_pool *p, const mpq_job_progress *prog);

/* Computes and commits batch b: each unit is marked started when a worker may take it
 * (at most n_workers, plus the other MPI ranks' slots, in flight), its rows and done mark
 * are committed in one transaction with a lease check, in the order of b->pend; a unit that
 * fails is marked failed with its message (the run goes on). While it waits for a unit it
 * refreshes the lease every 30 s. Progress: a UNIT_DONE / UNIT_FAILED event per unit,
 * prog->stage_done counting on. A stop request (mpq_job_stop_requested) or reaching
 * opts->max_units commits of this run hands out no more units, commits those in flight and
 * sets *stopped. Errors: database errors, MPQ_ERR_BUSY (lease lost), MPQ_ERR_NOMEM. */
mpq_status job_pool_run(job_pool *p, const job_pool_batch *b, mpq_job_progress *prog, bool *stopped,
                        mpq_err *err);

/* Units this run committed (all batches). */
int64_t job_pool_run_done(const job_pool *p);
/* Units that failed in this run; when there was one, *first (its status) and *first_msg
 * (its message, borrowed while p lives) are the first's. first / first_msg may be NULL. */
int job_pool_failed(const job_pool *p, mpq_status *first, const char **first_msg);

#ifdef __cplusplus
}
#endif

#endif /* MPQ_JOB_POOL_H */
