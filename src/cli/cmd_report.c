/* cmd_report.c - `mpq report`: a Markdown report of a job with its SVG plots
 * (mpq_report_write in mpq_export.h). */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_export.h"

static const char *report_help =
    "usage: mpq report JOB -o report.md [--plots-dir DIR] [--db PATH] [--metric M] [--top N]\n"
    "\n"
    "Writes a Markdown report of a job: model and data, provenance (seed, spec hash, versions,\n"
    "stage progress), the most sensitive layers, the Pareto frontier, every solution with its\n"
    "predicted loss and measured KL / ppl / top-1, and the uniform baselines. With --plots-dir\n"
    "the frontier, bits, sensitivity and KV plots are written there as SVG and linked (by\n"
    "their path relative to the report when DIR is inside the report's folder).\n"
    "\n"
    "  -o, --output FILE     Markdown file (required)\n"
    "  -p, --plots-dir DIR   write and link the SVG plots (created if missing)\n"
    "  -d, --db PATH         results database (default: $MPQ_DB, else ./mpq.db)\n"
    "  -m, --metric M        sensitivity metric (default kl)\n"
    "  -n, --top N           most sensitive layers listed (default 10)\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 cannot write, 7 database, 10 job not found.\n";

int cli_report(int argc, char **argv) {
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"plots-dir", required_argument, 0, 'p'},
        {"db", required_argument, 0, 'd'},     {"metric", required_argument, 0, 'm'},
        {"top", required_argument, 0, 'n'},    {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *out = NULL, *dbpath = NULL;
    mpq_report_opts ro = mpq_report_opts_default();
    long top = 10;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:p:d:m:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'p': ro.plots_dir = optarg; break;
        case 'd': dbpath = optarg; break;
        case 'm': ro.metric = optarg; break;
        case 'n':
            if (!cli_parse_int(optarg, 1, 100000, &top)) return cli_usage_error("report", "bad --top '%s'", optarg);
            break;
        case 'h': fputs(report_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("report", "bad option");
        }
    }
    if (optind >= argc) return cli_usage_error("report", "JOB is required");
    if (optind + 1 < argc) return cli_usage_error("report", "unexpected argument '%s'", argv[optind + 1]);
    if (!out) return cli_usage_error("report", "-o FILE is required");
    ro.top_layers = (int)top;
    /* link plots relative to the report when the plots folder is below the report's folder */
    char rel[4096] = "";
    if (ro.plots_dir) {
        const char *slash = strrchr(out, '/');
        size_t dl = slash ? (size_t)(slash - out + 1) : 0;
        if (dl == 0 && ro.plots_dir[0] != '/') snprintf(rel, sizeof rel, "%s", ro.plots_dir);
        else if (dl > 0 && strncmp(ro.plots_dir, out, dl) == 0) snprintf(rel, sizeof rel, "%s", ro.plots_dir + dl);
        if (rel[0]) ro.plots_rel = rel;
    }
    mpq_err err = {0};
    mpq_db *db = NULL;
    int rc = MPQ_EXIT_OK;
    mpq_status st = mpq_db_open(dbpath ? dbpath : cli_default_db(), MPQ_DB_READONLY, &db, &err);
    if (st == MPQ_OK) st = mpq_report_write(db, argv[optind], &ro, out, &err);
    if (st == MPQ_OK) printf("wrote %s%s%s\n", out, ro.plots_dir ? " and plots in " : "", ro.plots_dir ? ro.plots_dir : "");
    else rc = cli_fail("report", st, &err);
    mpq_db_close(db);
    return rc;
}
