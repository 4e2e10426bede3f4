/*
 * test_main.h - the one main() of every libcheck unit test (tests/unit/test_<module>.c):
 * runs the file's Suite and exits EXIT_SUCCESS when no test failed. Reference: Check manual,
 * "SRunner" (https://libcheck.github.io/check/doc/check_html/check_3.html).
 *
 * Use at the end of a test file:   TEST_MAIN(db_suite)
 * or, with work after the run:     int nf = test_run_suite(hessian_suite(), true); ...
 */
#ifndef MPQ_TEST_MAIN_H
#define MPQ_TEST_MAIN_H

#include <check.h>
#include <stdbool.h>
#include <stdlib.h>

#include "mpq/mpq.h"

/* Runs s (takes ownership) with CK_NORMAL output; nofork runs the tests in this process
 * (CK_NOFORK), otherwise the fork mode is Check's default (CK_FORK env var). Returns the
 * number of failed tests. */
static inline int test_run_suite(Suite *s, bool nofork) {
    mpq_blas_set_threads(1); /* as every mpq application does (mpq.h, "BLAS threads") */
    SRunner *sr = srunner_create(s);
    if (nofork) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf;
}

/* Defines main() running suite_fn() (a function returning Suite *). */
#define TEST_MAIN(suite_fn)                                                            \
    int main(void) { return test_run_suite(suite_fn(), false) == 0 ? EXIT_SUCCESS : EXIT_FAILURE; }

#endif /* MPQ_TEST_MAIN_H */
