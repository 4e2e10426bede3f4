/*
 * shared_fixture.h - the shared models and token files as the unit tests read them: a model
 * loaded from ../shared (the test fails naming it otherwise) and calibration windows of a
 * uint16 token file.
 */
#ifndef MPQ_TEST_SHARED_FIXTURE_H
#define MPQ_TEST_SHARED_FIXTURE_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "mpq/mpq_model.h"
#include "test_util.h"

/* The model at ../shared/rel, float32 in memory; fails the test with the loader's message. */
static inline mpq_model *test_load_model(const char *rel) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    mpq_status st = mpq_model_load(shared_path(rel), &m, &err);
    ck_assert_msg(st == MPQ_OK, "load %s: %s", rel, err.msg);
    return m;
}

/* n_seqs windows of T+1 tokens of the uint16 little-endian file ../shared/rel, window k starting
 * at token k*T (consecutive windows share one token, as mpq's calibration draws them
 * contiguously); malloc'd, window-major. Fails the test when the file is short. */
static inline int *test_read_windows(const char *rel, int n_seqs, int T) {
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(rel), &nb);
    ck_assert_msg(raw != NULL, "cannot read %s", rel);
    size_t need = (size_t)n_seqs * T + 1;
    ck_assert_msg(nb / 2 >= need, "%s: %zu tokens < %zu", rel, nb / 2, need);
    int *t = malloc((size_t)n_seqs * (T + 1) * sizeof(int));
    ck_assert_ptr_nonnull(t);
    for (int s = 0; s < n_seqs; s++)
        for (int j = 0; j <= T; j++) {
            size_t p = (size_t)s * T + j;
            t[(size_t)s * (T + 1) + j] = raw[2 * p] | (raw[2 * p + 1] << 8);
        }
    free(raw);
    return t;
}

#endif /* MPQ_TEST_SHARED_FIXTURE_H */
