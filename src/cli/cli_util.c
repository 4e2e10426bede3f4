/* cli_util.c - exit-code table, error printing, option parsing and the JSON output rules
 * shared by the subcommands (JSON through cJSON: https://github.com/DaveGamble/cJSON). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
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
        {MPQ_ERR_BUSY, MPQ_EXIT_BUSY},
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

cJSON *cli_json_number(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static bool add_item(cJSON *o, const char *key, cJSON *v) {
    if (!v) return false;
    if (!cJSON_AddItemToObject(o, key, v)) {
        cJSON_Delete(v);
        return false;
    }
    return true;
}

bool cli_json_add_number(cJSON *o, const char *key, double v) { return o && add_item(o, key, cli_json_number(v)); }

bool cli_json_add_string(cJSON *o, const char *key, const char *s) {
    return o && add_item(o, key, s ? cJSON_CreateString(s) : cJSON_CreateNull());
}

bool cli_json_add_bool(cJSON *o, const char *key, bool v) { return o && add_item(o, key, cJSON_CreateBool(v)); }

mpq_status cli_write_text(const char *path, const char *text, mpq_err *err) {
    if (strcmp(path, "-") == 0) {
        if (fputs(text, stdout) < 0 || fflush(stdout) != 0)
            return mpq_err_set(err, MPQ_ERR_IO, "stdout: write failed: %s", strerror(errno));
        return MPQ_OK;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    mpq_status st = MPQ_OK;
    if (fputs(text, f) < 0 || fflush(f) != 0) st = mpq_err_set(err, MPQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && st == MPQ_OK) st = mpq_err_set(err, MPQ_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    return st;
}

int cli_finish_stdout(const char *cmd, int rc) {
    errno = 0;
    bool failed = fflush(stdout) != 0;
    int e = errno;
    failed = ferror(stdout) || failed;
    if (fclose(stdout) != 0 && !failed) {
        failed = true;
        e = errno;
    }
    if (!failed) return rc;
    fprintf(stderr, "mpq %s: stdout: write failed: %s\n", cmd, e ? strerror(e) : "output lost");
    return rc == MPQ_EXIT_OK ? MPQ_EXIT_IO : rc;
}

mpq_status cli_write_json(FILE *f, const char *name, cJSON *j, mpq_err *err) {
    char *s = j && mpq_json_exact_numbers(j) ? cJSON_Print(j) : NULL;
    if (!s) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for the JSON output", name);
    bool ok = fputs(s, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0;
    cJSON_free(s);
    return ok ? MPQ_OK : mpq_err_set(err, MPQ_ERR_IO, "%s: write failed: %s", name, strerror(errno));
}
