/*
 * blas.c - the process-wide OpenBLAS thread count (mpq.h, "BLAS threads"): OpenBLAS's
 * openblas_get_num_threads / openblas_set_num_threads (OpenBLAS USAGE.md).
 */
#include <cblas.h>

#include "mpq/mpq.h"

int mpq_blas_threads(void) { return openblas_get_num_threads(); }

void mpq_blas_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }
