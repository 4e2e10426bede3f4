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
    MPQ_EXIT_BUSY = 12,       /* the job is being run by another process (its lease is held) */
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

/* Writes text to path ("-": stdout, flushed) and closes the file; MPQ_ERR_IO naming the
 * file and strerror when any write, the flush or the close fails (e.g. a full disk). */
mpq_status cli_write_text(const char *path, const char *text, mpq_err *err);
/* Flushes and closes stdout after command cmd returned rc: a failed or earlier lost write
 * (ferror) prints "mpq CMD: stdout: write failed: REASON" and turns rc 0 into MPQ_EXIT_IO. */
int cli_finish_stdout(const char *cmd, int rc);

/* Parses a strictly positive / non-negative integer option; false on garbage. */
bool cli_parse_int(const char *s, long lo, long hi, long *out);
/* Parses a finite double (no NaN, infinity or overflow); false on garbage. */
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
int cli_run(int argc, char **argv);    /* cmd_run.c */
int cli_resume(int argc, char **argv); /* cmd_run.c */
int cli_status(int argc, char **argv); /* cmd_status.c */
int cli_query(int argc, char **argv);  /* cmd_query.c */
int cli_solve(int argc, char **argv);    /* cmd_solve.c */
int cli_pareto(int argc, char **argv);   /* cmd_solve.c */
int cli_kv(int argc, char **argv);       /* cmd_kv.c */
int cli_evaluate(int argc, char **argv); /* cmd_solve.c */
int cli_refine(int argc, char **argv);   /* cmd_refine.c */
int cli_pairs(int argc, char **argv);    /* cmd_pairs.c */
int cli_bootstrap(int argc, char **argv); /* cmd_bootstrap.c */
int cli_export(int argc, char **argv); /* cmd_export.c */
int cli_plot(int argc, char **argv);   /* cmd_plot.c */
int cli_report(int argc, char **argv); /* cmd_report.c */
int cli_quant(int argc, char **argv);  /* cmd_quant.c */

/* Shared by status / query (cmd_query.c). Default database: $MPQ_DB, else "mpq.db". */
struct mpq_db_table;
struct cJSON;
const char *cli_default_db(void);
/* Prints a result table with aligned columns (numbers right-aligned, NULL as empty). */
void cli_print_table(FILE *f, const struct mpq_db_table *t);
/* The table as a cJSON array of objects (caller cJSON_Delete's it); NULL when out of memory. */
struct cJSON *cli_table_json(const struct mpq_db_table *t);
/* Prints j unformatted plus a newline; MPQ_EXIT_NOMEM if j is NULL or printing fails. */
int cli_print_json(FILE *f, struct cJSON *j);

/* JSON output rules (cli_util.c), used by every --json of the CLI:
 * - JSON is built as a cJSON tree and printed by cJSON (strings escaped by cJSON);
 * - a NaN or infinite number is written as null (JSON has no NaN / Infinity);
 * - a NULL string is written as null.
 * The cli_json_add_* helpers return false when out of memory (o is then still valid). */
struct cJSON *cli_json_number(double v);
bool cli_json_add_number(struct cJSON *o, const char *key, double v);
bool cli_json_add_string(struct cJSON *o, const char *key, const char *s);
bool cli_json_add_bool(struct cJSON *o, const char *key, bool v);
/* Prints j indented (cJSON_Print) plus a newline; MPQ_ERR_NOMEM when j is NULL or printing
 * fails, MPQ_ERR_IO (message names `name`) when writing to f fails. */
mpq_status cli_write_json(FILE *f, const char *name, struct cJSON *j, mpq_err *err);

#endif
