/* cli.h - shared pieces of the mpq command line: exit codes, subcommand entry points, output helpers.
 * The CLI uses only the public libmpq API (include/mpq). */
#ifndef MPQ_CLI_H
#define MPQ_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "mpq/mpq.h"

/* Exit codes (documented in README "Exit codes"); status -> code in one table (main.c). */
enum {
    MPQ_EXIT_OK = 0,
    MPQ_EXIT_USAGE = 2,       /* bad command line */
    MPQ_EXIT_IO = 3,          /* a file could not be opened/read/written */
    MPQ_EXIT_FORMAT = 4,      /* an input file is malformed */
    MPQ_EXIT_INVALID = 5,     /* a value (spec, config, option) is invalid */
    MPQ_EXIT_UNSUPPORTED = 6, /* well-formed but unsupported (architecture, dtype, newer schema) */
    MPQ_EXIT_DB = 7,          /* results database error */
    MPQ_EXIT_SOLVER = 8,      /* solver failure */
    MPQ_EXIT_INFEASIBLE = 9,  /* no configuration meets the budget */
    MPQ_EXIT_NOTFOUND = 10,   /* job / solution / layer not found */
    MPQ_EXIT_NOMEM = 11,      /* out of memory */
    MPQ_EXIT_INTERRUPTED = 130 /* SIGINT/SIGTERM: finished work committed; resume with `mpq resume` */
};

int cli_exit_code(mpq_status st);
/* Prints "mpq CMD: MSG" to stderr and returns the exit code for st. */
int cli_fail(const char *cmd, mpq_status st, const mpq_err *err);
/* Prints "mpq CMD: <formatted>" and returns MPQ_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Parses a strictly positive / non-negative integer option; false on garbage. */
bool cli_parse_int(const char *s, long lo, long hi, long *out);
bool cli_parse_double(const char *s, double *out);

/* true when colour may be used on this stream (a terminal and NO_COLOR unset). */
bool cli_use_color(FILE *f);

typedef int (*cli_cmd_fn)(int argc, char **argv);

typedef struct cli_command {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
} cli_command;

/* Subcommands; each parses its own options with getopt_long and supports --help. */
int cli_inspect(int argc, char **argv);
int cli_eval(int argc, char **argv);

#endif
