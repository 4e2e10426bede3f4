/* err.c - mpq_err, status strings, checked size arithmetic, version, clock. */
#include "mpq/mpq.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef MPQ_VERSION_STRING
#define MPQ_VERSION_STRING "0.0.0"
#endif

mpq_status mpq_err_set(mpq_err *err, mpq_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

void mpq_err_prefix(mpq_err *err, const char *fmt, ...) {
    if (!err) return;
    char pre[MPQ_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t np = strlen(pre);
    if (np + 2 >= sizeof err->msg) return;
    /* shift the old message right by "pre: " and truncate what no longer fits */
    size_t old = strnlen(err->msg, sizeof err->msg - 1);
    size_t keep = sizeof err->msg - 1 - (np + 2);
    if (old > keep) old = keep;
    memmove(err->msg + np + 2, err->msg, old);
    err->msg[np + 2 + old] = '\0';
    memcpy(err->msg, pre, np);
    err->msg[np] = ':';
    err->msg[np + 1] = ' ';
}

const char *mpq_status_str(mpq_status status) {
    switch (status) {
    case MPQ_OK: return "ok";
    case MPQ_ERR_NOMEM: return "out of memory";
    case MPQ_ERR_IO: return "I/O error";
    case MPQ_ERR_FORMAT: return "malformed input";
    case MPQ_ERR_INVALID: return "invalid argument";
    case MPQ_ERR_UNSUPPORTED: return "unsupported";
    case MPQ_ERR_DB: return "database error";
    case MPQ_ERR_SOLVER: return "solver error";
    case MPQ_ERR_INTERRUPTED: return "interrupted";
    case MPQ_ERR_INFEASIBLE: return "infeasible";
    case MPQ_ERR_NOTFOUND: return "not found";
    case MPQ_ERR_BUSY: return "busy";
    }
    return "unknown status";
}

bool mpq_size_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

bool mpq_size_add(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}

bool mpq_size_mul3(size_t a, size_t b, size_t c, size_t *out) {
    size_t ab;
    if (!mpq_size_mul(a, b, &ab)) return false;
    return mpq_size_mul(ab, c, out);
}

const char *mpq_version(void) { return MPQ_VERSION_STRING; }

void *mpq_calloc(size_t n, size_t size) {
    size_t total;
    if (!mpq_size_mul(n, size, &total)) return NULL;
    if (total == 0) total = 1;
    return calloc(1, total);
}

double mpq_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
