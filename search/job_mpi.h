/*
 * job_mpi.h - internal interface (not installed) between the job driver (job_run.c, with its
 * worker pool in job_pool.c) and its MPI transport (job_mpi.c): under an MPI launcher, rank 0
 * runs the job as a single process does (database, lease, commits in pending-list order) and
 * hands units of the worker-pool stages to the other ranks as well as to its own threads;
 * the other ranks load the model and data themselves, compute the units they are given on
 * their own threads and send back each unit's rows. What the user sees is documented in
 * README "Runs across MPI ranks" and include/mpq/mpq_job.h ("MPI").
 *
 * Both sides share the unit's row buffer (unit_rows) and the worker half of the driver
 * (job_worker_*, implemented in job_run.c); job_mpi.c alone includes mpi.h.
 */
#ifndef MPQ_JOB_MPI_H
#define MPQ_JOB_MPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- one unit's rows (job_run.c fills them, job_mpi.c moves them between ranks) ---------- */

#define MAX_UNIT_ROWS 512

/* rows[i].provenance_json == prov[i], allocated with cJSON_malloc (cJSON_PrintUnformatted on
 * the computing rank; on rank 0 one cJSON_malloc block per received row holding provenance,
 * candidate and metric, which rows[i] point into). Freed by job_rows_free. */
#define MAX_UNIT_ARTIFACTS 2
typedef struct unit_rows {
    mpq_db_metric rows[MAX_UNIT_ROWS];
    char *prov[MAX_UNIT_ROWS];
    int n;
    /* artifacts stored in the unit's commit transaction (layer_sensitivity: per-window KL,
     * and the adaptive state): malloc'd names and bytes */
    char *art_name[MAX_UNIT_ARTIFACTS];
    unsigned char *art_data[MAX_UNIT_ARTIFACTS];
    size_t art_len[MAX_UNIT_ARTIFACTS];
    int n_art;
} unit_rows;

void job_rows_free(unit_rows *r); /* frees prov[0..n) and the artifacts, sets n = n_art = 0 */

/* ---- the worker half of the driver (job_run.c) ------------------------------------------ */

typedef struct job_worker job_worker;

/* Loads the spec's model, tokenizer and data and lists its units, as rank 0 does; layer_ids
 * (n_ids = linear layers + blocks) are rank 0's database ids, copied into the rows. */
mpq_status job_worker_open(const mpq_job_spec *spec, const int64_t *layer_ids, int n_ids, job_worker **out,
                           mpq_err *err);
/* The input record rank 0 stores as artifact "inputs" (paths and SHA-256 of model, data,
 * tokenizer), computed from the files this process read; malloc'd, NULL when out of memory. */
char *job_worker_inputs_json(const job_worker *w);
/* Runs the FP reference (the options run_job uses) and forks it for n_workers threads. */
mpq_status job_worker_reference(job_worker *w, int n_workers, mpq_err *err);
int job_worker_n_units(const job_worker *w);
const mpq_job_unit *job_worker_unit(const job_worker *w, int i);
/* Computes unit i on thread slot `slot` (0 .. n_workers-1; one thread per slot at a time). */
mpq_status job_worker_compute(job_worker *w, int slot, int i, unit_rows *rows, mpq_err *err);
void job_worker_close(job_worker *w); /* accepts NULL */

/* ---- rank 0's side (job_mpi.c; all no-ops without MPI or with one rank) ------------------ */

/* True on rank 0 of a run with more than one rank. */
bool job_mpi_active(void);
/* Sends the job to every other rank: canonical spec, rank 0's input record (inputs_json),
 * layer ids. Each rank starts loading and computing its FP reference at once. Once per
 * process (the other ranks serve one job): MPQ_ERR_UNSUPPORTED for a second job. */
mpq_status job_mpi_announce(const mpq_job_spec *spec, const char *inputs_json, const int64_t *layer_ids, int n_ids,
                            mpq_err *err);
/* Waits for every rank's answer to job_mpi_announce: its worker count, or the reason it
 * refused (an input file that differs from the job's record, a different mpq version or
 * BLAS kernel, a load error): the first refusal is returned, naming rank and host. */
mpq_status job_mpi_gather(mpq_err *err);
/* Worker slots of the other ranks (the sum of their worker counts; 0 before gather). */
int job_mpi_slots(void);

/* What the dispatcher needs of the worker pool (job_pool.c). take: the next unit handed out
 * (pool item index, unit index in mpq_job_units order, rows to fill), false if none now;
 * *quit set once the pool stops. deliver: the item is computed (st, err). */
typedef struct job_mpi_pool_ops {
    bool (*take)(void *pool, int *item, int *unit_index, unit_rows **rows, bool *quit);
    void (*deliver)(void *pool, int item, mpq_status st, const mpq_err *err);
    void *pool;
} job_mpi_pool_ops;

/* Starts the thread that hands units to the other ranks and delivers their rows; stop
 * (after the pool set quit) waits for the units they hold, then joins it. */
mpq_status job_mpi_dispatch_start(const job_mpi_pool_ops *ops, mpq_err *err);
void job_mpi_dispatch_stop(void);

#ifdef __cplusplus
}
#endif

#endif /* MPQ_JOB_MPI_H */
