/*
 * test_job_mpi.c - the MPI entry points of the job driver (mpq_job.h, "MPI") in a process
 * that no MPI launcher started: launcher detection from the environment, a plain process is
 * rank 0 of 1 without touching MPI, serving is refused outside a multi-rank run, and a build
 * without MPI refuses a launcher's environment with more than one rank. The multi-rank
 * behaviour itself (identical databases, dying ranks, refusals) is tests/e2e/mpi.sh.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_job.h"
#include "test_main.h"

static void clear_launcher_env(void) {
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("PMIX_RANK");
}

START_TEST(test_launch_detection) {
    clear_launcher_env();
    ck_assert(!mpq_job_mpi_launched());
    setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
    ck_assert(mpq_job_mpi_launched());
    clear_launcher_env();
    setenv("PMIX_RANK", "0", 1);
    ck_assert(mpq_job_mpi_launched());
    clear_launcher_env();
    setenv("OMPI_COMM_WORLD_RANK", "1", 1); /* not one of the two variables mpq reads */
    ck_assert(!mpq_job_mpi_launched());
}
END_TEST

START_TEST(test_plain_process_is_rank_0_of_1) {
    clear_launcher_env();
    int rank = -1, n = -1;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_job_mpi_init(&rank, &n, &err), MPQ_OK);
    ck_assert_int_eq(rank, 0);
    ck_assert_int_eq(n, 1);
    rank = n = -1; /* a second call gives the same */
    ck_assert_int_eq(mpq_job_mpi_init(&rank, &n, &err), MPQ_OK);
    ck_assert_int_eq(rank, 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(mpq_job_mpi_units(1), 0);
    ck_assert_int_eq(mpq_job_mpi_units(0), 0);
    mpq_job_opts o = mpq_job_opts_default();
    mpq_status st = mpq_job_mpi_serve(&o, &err); /* only ranks other than 0 serve */
    ck_assert_int_eq(st, mpq_job_mpi_available() ? MPQ_ERR_INVALID : MPQ_ERR_UNSUPPORTED);
    ck_assert_int_ne(err.msg[0], '\0');
    mpq_job_mpi_finalize(); /* MPI was never initialized: nothing to do */
    mpq_job_mpi_finalize();
}
END_TEST

/* Only in a build without MPI: in an MPI build these variables would make mpq_job_mpi_init
 * call MPI_Init_thread, which needs a real launcher. */
START_TEST(test_no_mpi_build_refuses_ranks) {
    if (mpq_job_mpi_available()) return;
    struct {
        const char *var, *val;
        mpq_status want;
    } cases[] = {
        {"OMPI_COMM_WORLD_SIZE", "2", MPQ_ERR_UNSUPPORTED},
        {"OMPI_COMM_WORLD_SIZE", "64", MPQ_ERR_UNSUPPORTED},
        {"PMIX_RANK", "1", MPQ_ERR_UNSUPPORTED},
        {"OMPI_COMM_WORLD_SIZE", "1", MPQ_OK}, /* mpirun -n 1: a single process anyway */
        {"PMIX_RANK", "0", MPQ_OK},            /* rank 0 of an unknown count: runs; others refuse */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clear_launcher_env();
        setenv(cases[i].var, cases[i].val, 1);
        int rank = -1, n = -1;
        mpq_err err = {0};
        ck_assert_int_eq(mpq_job_mpi_init(&rank, &n, &err), cases[i].want);
        ck_assert_int_eq(rank, 0);
        ck_assert_int_eq(n, 1);
        if (cases[i].want != MPQ_OK) {
            ck_assert_ptr_nonnull(strstr(err.msg, "built without MPI"));
            ck_assert_ptr_nonnull(strstr(err.msg, cases[i].var));
        }
    }
    clear_launcher_env();
}
END_TEST

static Suite *job_mpi_suite(void) {
    Suite *s = suite_create("job_mpi");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_launch_detection);
    tcase_add_test(tc, test_plain_process_is_rank_0_of_1);
    tcase_add_test(tc, test_no_mpi_build_refuses_ranks);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(job_mpi_suite)
