/*
 * mpq.h - status codes, error messages, checked arithmetic and version of libmpq.
 *
 * Every libmpq function that can fail returns an mpq_status and takes an
 * `mpq_err *err` as its last argument. On failure the message names the file,
 * the object and the position where the problem was found, e.g.
 *
 *     mpq_err err = {0};
 *     mpq_model *m = NULL;
 *     if (mpq_model_load("m.bin", NULL, &m, &err) != MPQ_OK)
 *         fprintf(stderr, "mpq: %s\n", err.msg);   // "m.bin: header dim 64 ..."
 *
 * `err` may be NULL when the caller does not want the message. The library never
 * prints and never exits; the CLI maps a status to an exit code (see README).
 */
#ifndef MPQ_MPQ_H
#define MPQ_MPQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mpq_status {
    MPQ_OK = 0,
    MPQ_ERR_NOMEM,       /* allocation failed */
    MPQ_ERR_IO,          /* open/read/write/mmap failed */
    MPQ_ERR_FORMAT,      /* a file's content is malformed or inconsistent */
    MPQ_ERR_INVALID,     /* a caller argument or spec value is invalid */
    MPQ_ERR_UNSUPPORTED, /* well-formed but not supported (architecture, dtype, schema) */
    MPQ_ERR_DB,          /* the results database failed */
    MPQ_ERR_SOLVER,      /* a solver failed (not infeasibility: see solvers) */
    MPQ_ERR_INTERRUPTED, /* stopped by a signal after committing finished work */
    MPQ_ERR_INFEASIBLE,  /* the problem has no solution under its constraints */
    MPQ_ERR_NOTFOUND,    /* a named object (job, layer, solution) does not exist */
    MPQ_ERR_BUSY         /* held by another process (a job being run by another runner) */
} mpq_status;

#define MPQ_ERR_MSG_MAX 1024

typedef struct mpq_err {
    mpq_status status;
    char msg[MPQ_ERR_MSG_MAX];
} mpq_err;

/* Stores status and a printf-formatted message in err (if err != NULL); returns status. */
mpq_status mpq_err_set(mpq_err *err, mpq_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prepends "prefix: " to an existing message (for adding context at a boundary). */
void mpq_err_prefix(mpq_err *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Static, never NULL: "ok", "out of memory", "I/O error", ... */
const char *mpq_status_str(mpq_status status);

/* Overflow-checked size arithmetic: return false (and leave *out unchanged) on overflow. */
bool mpq_size_mul(size_t a, size_t b, size_t *out);
bool mpq_size_add(size_t a, size_t b, size_t *out);
/* *out = a*b*c with overflow check. */
bool mpq_size_mul3(size_t a, size_t b, size_t c, size_t *out);

/* "0.1.0"; static. */
const char *mpq_version(void);

/* Allocation helpers: zeroed, overflow-checked n*size; NULL on failure. Free with free(). */
void *mpq_calloc(size_t n, size_t size);

/* Opens path read-only if it is a regular file. A FIFO, device, socket or directory is refused
 * at once (it is checked with fstat before any read, so a FIFO never blocks): MPQ_ERR_IO with
 * "PATH: is a FIFO (named pipe), not a regular file; refusing to read it". A failed open is
 * MPQ_ERR_IO with "PATH: cannot open for reading: <strerror>". On MPQ_OK *fd is a blocking
 * descriptor the caller close()s; otherwise *fd is -1. */
mpq_status mpq_file_open_regular(const char *path, int *fd, mpq_err *err);

/* SHA-256 of a file as 64 lowercase hex chars + NUL in out[65]. */
mpq_status mpq_sha256_file(const char *path, char out[65], mpq_err *err);
/* SHA-256 of a buffer. */
void mpq_sha256(const void *data, size_t n, char out[65]);

/* Monotonic wall clock in seconds. */
double mpq_time_now(void);

/* ---- JSON numbers --------------------------------------------------------------------------
 * cJSON prints a number with 15 significant digits whenever that reads back within one
 * DBL_EPSILON of it, so a printed double can come back one unit in the last place off. This
 * turns every number item of a cJSON tree (root and its siblings and descendants) into raw
 * text, the shortest of %.15g, %.16g, %.17g that reads back as exactly the same double
 * (NaN/Inf become null), so that printing the tree loses nothing. false when out of memory
 * (the tree is then partly converted, still valid JSON). The --json outputs of the CLI use it. */
struct cJSON;
bool mpq_json_exact_numbers(struct cJSON *root);

/* ---- BLAS threads ------------------------------------------------------------------------
 * OpenBLAS's matrix products give different last bits for different thread counts, so every
 * number libmpq stores is computed with BLAS running one thread; parallelism comes from
 * libmpq's own worker threads (mpq_job_opts.n_workers), which call BLAS at the same time.
 * The BLAS thread count is process-wide state that libmpq never changes by itself: the
 * application sets it once at start-up, before starting threads, with
 * mpq_blas_set_threads(1) (the mpq CLI does; OPENBLAS_NUM_THREADS and OMP_NUM_THREADS then
 * only decide how many idle OpenBLAS threads exist). mpq_job_run / mpq_job_resume return
 * MPQ_ERR_UNSUPPORTED when it is not 1. */
int mpq_blas_threads(void);          /* OpenBLAS's current thread count */
void mpq_blas_set_threads(int n);    /* process-wide; n < 1 is taken as 1 */

#ifdef __cplusplus
}
#endif
#endif /* MPQ_MPQ_H */
