/* cmd_query.c - `mpq query`: read-only questions to the results database (jobs, per-layer
 * metrics, solutions, evaluations, progress, frontiers, or any SELECT with --sql), printed as
 * aligned tables or JSON arrays of objects. Opens the database READONLY, so it works while a
 * job is writing (WAL). Also the table printers shared with `mpq status`. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"

static const char *query_help =
    "usage: mpq query [--db PATH] [--json] WHAT [JOB] [filters]\n"
    "       mpq query [--db PATH] [--json] --sql \"SELECT ...\"\n"
    "\n"
    "Reads the results database (opened read-only: safe while a job is running) and prints\n"
    "an aligned table, or with --json a JSON array of objects (one per row; numbers as\n"
    "numbers, SQL NULL as null).\n"
    "\n"
    "WHAT:\n"
    "  jobs                   every job with its status and units done/total/failed (a job\n"
    "                         whose runner was killed shows as interrupted)\n"
    "  layers JOB             every metric of the job per layer (layer, kind, block, candidate,\n"
    "                         metric, value, stderr, n); filter with --metric / --candidate\n"
    "  model-layers JOB       the layer table of the job's model (incl. blk.N.kv rows)\n"
    "  progress JOB           units done/total/failed per stage\n"
    "  solutions JOB          the job's solutions\n"
    "  evaluations JOB        the job's measured evaluations\n"
    "  frontiers JOB          the job's Pareto frontier points\n"
    "JOB is a job name or id.\n"
    "\n"
    "  -d, --db PATH          results database (default: $MPQ_DB, else ./mpq.db)\n"
    "  -m, --metric M         layers: only metric M (e.g. kl, dloss, weight_rel, kv_kl)\n"
    "  -c, --candidate C      layers: only candidate / KV pair C (e.g. int4g32, k4v2)\n"
    "      --sql SQL          run a read-only SQL query (SELECT/WITH/EXPLAIN; writes refused)\n"
    "      --json             JSON output\n"
    "  -h, --help             this help\n"
    "\n"
    "The database is never written: read-only files and file systems work.\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 cannot open or read the file, 5 invalid (e.g. a writing\n"
    "--sql), 7 database error, 10 job not found.\n";

const char *cli_default_db(void) {
    const char *e = getenv("MPQ_DB");
    return (e && *e) ? e : "mpq.db";
}

static bool is_num(mpq_db_type t) { return t == MPQ_DB_TYPE_INTEGER || t == MPQ_DB_TYPE_REAL; }

void cli_print_table(FILE *f, const mpq_db_table *t) {
    if (!t || t->n_cols <= 0) return;
    size_t *w = calloc((size_t)t->n_cols, sizeof *w);
    if (!w) return;
    for (int c = 0; c < t->n_cols; c++) w[c] = strlen(t->names[c] ? t->names[c] : "");
    for (int r = 0; r < t->n_rows; r++)
        for (int c = 0; c < t->n_cols; c++) {
            const char *s = t->cells[(size_t)r * (size_t)t->n_cols + (size_t)c];
            size_t l = s ? strlen(s) : 0;
            if (l > w[c]) w[c] = l;
        }
    for (int c = 0; c < t->n_cols; c++) { /* headers aligned like the first row's cells */
        const char *h = t->names[c] ? t->names[c] : "";
        bool num = t->n_rows > 0 && is_num(t->types[c]);
        if (num) fprintf(f, "%*s", (int)w[c], h);
        else if (c + 1 < t->n_cols) fprintf(f, "%-*s", (int)w[c], h);
        else fputs(h, f);
        fputs(c + 1 < t->n_cols ? "  " : "\n", f);
    }
    for (int r = 0; r < t->n_rows; r++)
        for (int c = 0; c < t->n_cols; c++) {
            size_t i = (size_t)r * (size_t)t->n_cols + (size_t)c;
            const char *s = t->cells[i] ? t->cells[i] : "";
            const char *sep = c + 1 < t->n_cols ? "  " : "\n";
            if (is_num(t->types[i])) fprintf(f, "%*s%s", (int)w[c], s, sep);
            else if (c + 1 < t->n_cols) fprintf(f, "%-*s%s", (int)w[c], s, sep);
            else fprintf(f, "%s%s", s, sep);
        }
    free(w);
}

/* One row as a JSON object (NULL on allocation failure). */
static cJSON *row_object(const mpq_db_table *t, int r) {
    cJSON *o = cJSON_CreateObject();
    for (int c = 0; o && c < t->n_cols; c++) {
        size_t i = (size_t)r * (size_t)t->n_cols + (size_t)c;
        const char *s = t->cells[i];
        cJSON *v;
        if (!s) v = cJSON_CreateNull();
        else if (is_num(t->types[i])) v = cli_json_number(strtod(s, NULL)); /* NaN, Inf: null */
        else v = cJSON_CreateString(s);
        if (!v || !cJSON_AddItemToObject(o, t->names[c] ? t->names[c] : "", v)) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            o = NULL;
        }
    }
    return o;
}

cJSON *cli_table_json(const mpq_db_table *t) {
    cJSON *a = cJSON_CreateArray();
    for (int r = 0; a && t && r < t->n_rows; r++) {
        cJSON *o = row_object(t, r);
        if (!o || !cJSON_AddItemToArray(a, o)) {
            cJSON_Delete(o);
            cJSON_Delete(a);
            a = NULL;
        }
    }
    return a;
}

int cli_print_json(FILE *f, cJSON *j) {
    char *s = j && mpq_json_exact_numbers(j) ? cJSON_PrintUnformatted(j) : NULL;
    if (!s) {
        fprintf(stderr, "mpq: out of memory\n");
        return MPQ_EXIT_NOMEM;
    }
    fprintf(f, "%s\n", s);
    cJSON_free(s);
    return MPQ_EXIT_OK;
}

/* Keeps rows whose column `col` equals want (want NULL: keep all). */
static void filter_rows(mpq_db_table *t, const char *col, const char *want) {
    if (!want || !t) return;
    int ci = -1;
    for (int c = 0; c < t->n_cols; c++)
        if (t->names[c] && strcmp(t->names[c], col) == 0) ci = c;
    if (ci < 0) return;
    int keep = 0;
    size_t nc = (size_t)t->n_cols;
    for (int r = 0; r < t->n_rows; r++) {
        const char *s = t->cells[(size_t)r * nc + (size_t)ci];
        bool ok = s && strcmp(s, want) == 0;
        if (!ok) {
            for (size_t c = 0; c < nc; c++) free(t->cells[(size_t)r * nc + c]);
            continue;
        }
        if (keep != r) {
            memmove(&t->cells[(size_t)keep * nc], &t->cells[(size_t)r * nc], nc * sizeof *t->cells);
            memmove(&t->types[(size_t)keep * nc], &t->types[(size_t)r * nc], nc * sizeof *t->types);
        }
        keep++;
    }
    t->n_rows = keep;
}

int cli_query(int argc, char **argv) {
    enum { OPT_JSON = 1000, OPT_SQL };
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},     {"metric", required_argument, 0, 'm'},
                                         {"candidate", required_argument, 0, 'c'}, {"sql", required_argument, 0, OPT_SQL},
                                         {"json", no_argument, 0, OPT_JSON},     {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *db_path = NULL, *metric = NULL, *cand = NULL, *sql = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:m:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db_path = optarg; break;
        case 'm': metric = optarg; break;
        case 'c': cand = optarg; break;
        case OPT_SQL: sql = optarg; break;
        case OPT_JSON: json = true; break;
        case 'h': fputs(query_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("query", "bad option");
        }
    }
    const char *what = optind < argc ? argv[optind] : NULL;
    const char *job = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (sql && what) return cli_usage_error("query", "--sql takes no WHAT argument ('%s')", what);
    if (!sql && !what) return cli_usage_error("query", "what to query? (jobs, layers JOB, ... or --sql)");
    if (optind + 2 < argc) return cli_usage_error("query", "unexpected argument '%s'", argv[optind + 2]);
    static const struct {
        const char *name;
        mpq_db_report report;
        bool needs_job;
    } whats[] = {{"jobs", MPQ_DB_REPORT_JOBS, false},         {"layers", MPQ_DB_REPORT_SENSITIVITY, true},
                 {"model-layers", MPQ_DB_REPORT_LAYERS, true}, {"progress", MPQ_DB_REPORT_PROGRESS, true},
                 {"solutions", MPQ_DB_REPORT_SOLUTIONS, true}, {"evaluations", MPQ_DB_REPORT_EVALUATIONS, true},
                 {"frontiers", MPQ_DB_REPORT_FRONTIERS, true}};
    int wi = -1;
    for (size_t i = 0; what && i < sizeof whats / sizeof whats[0]; i++)
        if (strcmp(what, whats[i].name) == 0) wi = (int)i;
    if (what && wi < 0) return cli_usage_error("query", "unknown query '%s'", what);
    if (wi >= 0 && whats[wi].needs_job && !job) return cli_usage_error("query", "%s needs a JOB (name or id)", what);
    if (wi >= 0 && !whats[wi].needs_job && job) return cli_usage_error("query", "unexpected argument '%s'", job);
    if ((metric || cand) && !(wi >= 0 && whats[wi].report == MPQ_DB_REPORT_SENSITIVITY))
        return cli_usage_error("query", "--metric / --candidate apply to 'layers' only");
    if (!db_path) db_path = cli_default_db();

    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_db_table *t = NULL;
    mpq_status st;
    int rc = MPQ_EXIT_OK;
    if ((st = mpq_db_open(db_path, MPQ_DB_READONLY | MPQ_DB_NO_CHECK, &db, &err)) != MPQ_OK) goto done;
    if (sql) st = mpq_db_query_table(db, sql, &t, &err);
    else st = mpq_db_report_table(db, whats[wi].report, job, &t, &err);
    if (st != MPQ_OK) goto done;
    filter_rows(t, "metric", metric);
    filter_rows(t, "candidate", cand);
    if (json) {
        cJSON *a = cli_table_json(t);
        rc = cli_print_json(stdout, a);
        cJSON_Delete(a);
    } else {
        cli_print_table(stdout, t);
    }
done:
    mpq_db_table_free(t);
    mpq_db_close(db);
    return st == MPQ_OK ? rc : cli_fail("query", st, &err);
}
