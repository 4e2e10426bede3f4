/* cli_util.c - exit-code table, error printing and option parsing shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

int cli_exit_code(mpq_status st) {
    static const struct { mpq_status st; int code; } table[] = {
        {MPQ_OK, MPQ_EXIT_OK},
        {MPQ_ERR_NOMEM, MPQ_EXIT_NOMEM},
        {MPQ_ERR_IO, MPQ_EXIT_IO},
        {MPQ_ERR_FORMAT, MPQ_EXIT_FORMAT},
        {MPQ_ERR_INVALID, MPQ_EXIT_INVALID},
        {MPQ_ERR_UNSUPPORTED, MPQ_EXIT_UNSUPPORTED},
        {MPQ_ERR_DB, MPQ_EXIT_DB},
        {MPQ_ERR_SOLVER, MPQ_EXIT_SOLVER},
        {MPQ_ERR_INTERRUPTED, MPQ_EXIT_INTERRUPTED},
        {MPQ_ERR_INFEASIBLE, MPQ_EXIT_INFEASIBLE},
        {MPQ_ERR_NOTFOUND, MPQ_EXIT_NOTFOUND},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].st == st) return table[i].code;
    return 1;
}

int cli_fail(const char *cmd, mpq_status st, const mpq_err *err) {
    const char *msg = (err && err->msg[0]) ? err->msg : mpq_status_str(st);
    fprintf(stderr, "mpq %s: %s\n", cmd, msg);
    return cli_exit_code(st);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "mpq %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see mpq %s --help)\n", cmd);
    return MPQ_EXIT_USAGE;
}

bool cli_parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end != '\0' || !isfinite(v)) return false; /* no NaN, no infinity, no overflow */
    *out = v;
    return true;
}

bool cli_use_color(FILE *f) {
    const char *nc = getenv("NO_COLOR");
    if (nc && *nc) return false;
    return isatty(fileno(f));
}
