/* cli_measure.h - option handling shared by the commands that measure more on a stored job
 * (`mpq refine`, `mpq pairs`): --reach, the kill test hook, opening the job. */
#ifndef MPQ_CLI_MEASURE_H
#define MPQ_CLI_MEASURE_H

#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"

/* --reach R (0..255) into *out; false (usage message printed, *exit_code set) when bad. */
bool cli_measure_parse_reach(const char *cmd, const char *arg, int *out, int *exit_code);

/* Test hook (as `mpq run`): MPQ_TEST_KILL_AFTER_UNITS=N makes the N-th cli_measure_committed()
 * raise SIGKILL. cli_measure_hook_init() reads the variable. */
void cli_measure_hook_init(void);
void cli_measure_committed(void);

/* Installs the stop signals (mpq_job_signals_install), opens dbp read-write and job `name`. */
mpq_status cli_measure_open(const char *dbp, const char *name, mpq_db **db, mpq_job **job, mpq_err *err);

#endif /* MPQ_CLI_MEASURE_H */
