/* cli_measure.c - option handling shared by `mpq refine` and `mpq pairs` (cli_measure.h). */
#include "cli_measure.h"

#include <signal.h>
#include <stdlib.h>

#include "cli.h"

static long kill_after, commits;

bool cli_measure_parse_reach(const char *cmd, const char *arg, int *out, int *exit_code) {
    long v;
    if (!cli_parse_int(arg, 0, 255, &v)) {
        *exit_code = cli_usage_error(cmd, "bad --reach '%s' (0..255)", arg);
        return false;
    }
    *out = (int)v;
    return true;
}

void cli_measure_hook_init(void) {
    const char *ka = getenv("MPQ_TEST_KILL_AFTER_UNITS");
    kill_after = ka ? atol(ka) : 0;
    commits = 0;
}

void cli_measure_committed(void) {
    if (kill_after > 0 && ++commits >= kill_after) raise(SIGKILL);
}

mpq_status cli_measure_open(const char *dbp, const char *name, mpq_db **db, mpq_job **job, mpq_err *err) {
    mpq_status st = mpq_job_signals_install(err);
    if (st == MPQ_OK) st = mpq_db_open(dbp, MPQ_DB_READWRITE, db, err);
    if (st == MPQ_OK) st = mpq_job_open(*db, name, job, err);
    return st;
}
