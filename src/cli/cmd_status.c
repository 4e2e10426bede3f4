/* cmd_status.c - `mpq status [JOB]`: every job with its unit progress, or one job's status and
 * its stages (units done / total / failed). Read-only; works while a job is running. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"

static const char *status_help =
    "usage: mpq status [JOB] [--db PATH] [--json]\n"
    "\n"
    "Without JOB: every job of the database with its status and units done/total/failed.\n"
    "With JOB (name or id): the job's status, times, version and seed, the process running\n"
    "it (pid, host, since, last heartbeat), and per stage the units done / total / failed;\n"
    "for adaptive layer_sensitivity, each decided round: units extended and the\n"
    "window-evaluations stored before it; and the (layer, candidate) pairs stored as not\n"
    "available (a SAQ rate that the layer's shape cannot reach) with the reason.\n"
    "A job whose runner was killed (even by SIGKILL) shows as interrupted: its lease names\n"
    "a process that no longer exists. The database is opened read-only and never written\n"
    "(safe while a job runs, works on read-only files and file systems).\n"
    "\n"
    "  -d, --db PATH           results database (default: $MPQ_DB, else ./mpq.db)\n"
    "      --json              JSON output (an array of jobs, or one job object with \"stages\",\n"
    "                          \"runner\": {pid, host, since, heartbeat, alive} or null,\n"
    "                          \"unavailable\": [{layer, candidate, reason}] and\n"
    "                          \"adaptive_rounds\": [{round, extend, windows_before}])\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 cannot open or read the file, 7 database error, 10 job\n"
    "not found.\n";

/* The rounds of adaptive layer_sensitivity (artifacts "adaptive.round.<r>", README "Adaptive
 * measurement"): a JSON array of {round, extend, windows_before}, empty for other jobs. */
static cJSON *adaptive_rounds(mpq_db *db, int64_t job_id) {
    cJSON *a = cJSON_CreateArray();
    for (int r = 1; a; r++) {
        char name[64];
        snprintf(name, sizeof name, "adaptive.round.%d", r);
        void *blob = NULL;
        size_t n = 0;
        if (mpq_db_artifact_get(db, job_id, name, &blob, &n, NULL) != MPQ_OK) break;
        cJSON *o = cJSON_ParseWithLength(blob, n);
        free(blob);
        const cJSON *ext = cJSON_GetObjectItemCaseSensitive(o, "extend");
        const cJSON *wb = cJSON_GetObjectItemCaseSensitive(o, "windows_before");
        cJSON *x = cJSON_CreateObject();
        bool ok = x && cJSON_IsArray(ext) && cJSON_IsNumber(wb) && cJSON_AddNumberToObject(x, "round", r) &&
                  cJSON_AddNumberToObject(x, "extend", cJSON_GetArraySize(ext)) &&
                  cJSON_AddNumberToObject(x, "windows_before", wb->valuedouble) && cJSON_AddItemToArray(a, x);
        cJSON_Delete(o);
        if (!ok) {
            cJSON_Delete(x);
            break;
        }
    }
    return a;
}

/* Puts the progress rows in run order (weight_error, layer_sensitivity, kv_sensitivity, others). */
static void order_stages(mpq_db_table *t) {
    static const char *const order[] = {"weight_error", "layer_sensitivity", "kv_sensitivity"};
    if (!t || t->n_cols < 1 || t->n_rows < 2) return;
    size_t nc = (size_t)t->n_cols;
    int next = 0;
    for (int k = 0; k < 3; k++)
        for (int r = next; r < t->n_rows; r++) {
            const char *s = t->cells[(size_t)r * nc];
            if (!s || strcmp(s, order[k]) != 0) continue;
            for (size_t c = 0; c < nc; c++) { /* swap rows r and next */
                char *x = t->cells[(size_t)r * nc + c];
                t->cells[(size_t)r * nc + c] = t->cells[(size_t)next * nc + c];
                t->cells[(size_t)next * nc + c] = x;
                mpq_db_type y = t->types[(size_t)r * nc + c];
                t->types[(size_t)r * nc + c] = t->types[(size_t)next * nc + c];
                t->types[(size_t)next * nc + c] = y;
            }
            next++;
            break;
        }
}

int cli_status(int argc, char **argv) {
    enum { OPT_JSON = 1000 };
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'}, {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *db_path = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db_path = optarg; break;
        case OPT_JSON: json = true; break;
        case 'h': fputs(status_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("status", "bad option");
        }
    }
    if (optind + 1 < argc) return cli_usage_error("status", "unexpected argument '%s'", argv[optind + 1]);
    const char *job = optind < argc ? argv[optind] : NULL;
    if (!db_path) db_path = cli_default_db();

    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_db_table *jobs = NULL, *prog = NULL, *skip = NULL;
    cJSON *out = NULL;
    mpq_status st;
    int rc = MPQ_EXIT_OK;
    if ((st = mpq_db_open(db_path, MPQ_DB_READONLY | MPQ_DB_NO_CHECK, &db, &err)) != MPQ_OK) goto done;
    if (!job) {
        if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_JOBS, NULL, &jobs, &err)) != MPQ_OK) goto done;
        if (json) {
            out = cli_table_json(jobs);
            rc = cli_print_json(stdout, out);
        } else if (jobs->n_rows == 0) {
            printf("no jobs in %s\n", db_path);
        } else {
            cli_print_table(stdout, jobs);
        }
        goto done;
    }
    mpq_db_job j;
    if ((st = mpq_db_job_find(db, job, &j, &err)) != MPQ_OK) goto done;
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)j.id);
    if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_JOBS, id, &jobs, &err)) != MPQ_OK) goto done;
    if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_PROGRESS, id, &prog, &err)) != MPQ_OK) goto done;
    if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_UNAVAILABLE, id, &skip, &err)) != MPQ_OK) goto done;
    order_stages(prog);
    mpq_db_lease lease;
    bool held = false;
    if ((st = mpq_db_lease_get(db, j.id, &lease, &held, &err)) != MPQ_OK) goto done;
    if (json) {
        cJSON *a = cli_table_json(jobs);
        cJSON *o = a ? cJSON_DetachItemFromArray(a, 0) : NULL;
        cJSON_Delete(a);
        cJSON *s = cli_table_json(prog);
        if (o && s && cJSON_AddItemToObject(o, "stages", s)) s = NULL;
        cJSON_Delete(s);
        cJSON *r = held ? cJSON_CreateObject() : cJSON_CreateNull();
        if (r && held &&
            !(cJSON_AddNumberToObject(r, "pid", (double)lease.pid) && cJSON_AddStringToObject(r, "host", lease.host) &&
              cJSON_AddStringToObject(r, "since", lease.started_at) &&
              cJSON_AddStringToObject(r, "heartbeat", lease.heartbeat_at) && cJSON_AddBoolToObject(r, "alive", lease.live))) {
            cJSON_Delete(r);
            r = NULL;
        }
        if (o && r && cJSON_AddItemToObject(o, "runner", r)) r = NULL;
        cJSON_Delete(r);
        cJSON *sk = cli_table_json(skip);
        if (o && sk && cJSON_AddItemToObject(o, "unavailable", sk)) sk = NULL;
        cJSON_Delete(sk);
        cJSON *ar = adaptive_rounds(db, j.id);
        if (o && ar && cJSON_AddItemToObject(o, "adaptive_rounds", ar)) ar = NULL;
        cJSON_Delete(ar);
        out = o;
        rc = cli_print_json(stdout, out);
    } else {
        const char *model = "", *done_s = "", *total_s = "", *failed_s = "";
        for (int k = 0; jobs->n_rows > 0 && k < jobs->n_cols; k++) {
            const char *v = jobs->cells[k] ? jobs->cells[k] : "";
            if (strcmp(jobs->names[k], "model") == 0) model = v;
            if (strcmp(jobs->names[k], "units_done") == 0) done_s = v;
            if (strcmp(jobs->names[k], "units_total") == 0) total_s = v;
            if (strcmp(jobs->names[k], "units_failed") == 0) failed_s = v;
        }
        printf("job       %s (id %lld)\nstatus    %s\nmodel     %s\nunits     %s/%s done, %s failed\n"
               "seed      %lld\ncreated   %s\nupdated   %s\n",
               j.name, (long long)j.id, mpq_db_job_status_name(j.status), model, done_s, total_s, failed_s,
               (long long)j.seed, j.created_at, j.updated_at);
        if (j.finished_at[0]) printf("finished  %s\n", j.finished_at);
        if (held)
            printf("runner    pid %lld on host %s since %s, last heartbeat %s%s\n", (long long)lease.pid, lease.host,
                   lease.started_at, lease.heartbeat_at,
                   lease.live ? "" : " (gone: the next run or resume takes the job over)");
        printf("version   mpq %s\nspec      sha256 %s\n\n", j.mpq_version, j.spec_sha256);
        cli_print_table(stdout, prog);
        if (skip->n_rows > 0) {
            printf("\nnot available (no rows stored, never chosen by the solvers): %d (layer, candidate) pairs\n",
                   skip->n_rows);
            for (int r = 0; r < skip->n_rows; r++) {
                const char *const *cell = (const char *const *)skip->cells + (size_t)r * (size_t)skip->n_cols;
                printf("  %s %s: %s\n", cell[0] ? cell[0] : "", cell[1] ? cell[1] : "", cell[2] ? cell[2] : "");
            }
        }
        cJSON *ar = adaptive_rounds(db, j.id);
        int nr = cJSON_GetArraySize(ar);
        if (nr > 0) printf("\nadaptive rounds (layer_sensitivity: units extended, window-evaluations stored before the round)\n");
        for (int r = 0; r < nr; r++) {
            const cJSON *x = cJSON_GetArrayItem(ar, r);
            int ne = (int)cJSON_GetObjectItemCaseSensitive(x, "extend")->valuedouble;
            printf("  round %d: %d units extended, %.0f window-evaluations before%s\n", r + 1, ne,
                   cJSON_GetObjectItemCaseSensitive(x, "windows_before")->valuedouble,
                   ne == 0 ? " (no unit left to extend: measurement settled)" : "");
        }
        cJSON_Delete(ar);
    }
done:
    cJSON_Delete(out);
    mpq_db_table_free(prog);
    mpq_db_table_free(skip);
    mpq_db_table_free(jobs);
    mpq_db_close(db);
    return st == MPQ_OK ? rc : cli_fail("status", st, &err);
}
