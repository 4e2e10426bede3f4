/* cmd_plot.c - `mpq plot`: one SVG plot of a job (Pareto frontier, bits per layer of a
 * solution, sensitivity heat map, KV pair ladder), written by libmpq (mpq_plot.h). */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_plot.h"

static const char *plot_help =
    "usage: mpq plot JOB --what WHAT -o FILE.svg [--db PATH] [--solution S] [--metric M]\n"
    "\n"
    "Writes an SVG plot of a job (standalone SVG 1.1, opens in any browser):\n"
    "  frontier     the newest Pareto frontier (predicted loss vs resource, a line), the\n"
    "               evaluated solutions (measured KL, or ppl with --metric ppl) and evaluated\n"
    "               uniform configs (diamonds)\n"
    "  bits         bits per weight of every layer of a solution, bars grouped by block and\n"
    "               coloured by kind (q k v o gate up down), dashed mean\n"
    "  sensitivity  heat map of a per-layer metric (layers x candidates, log colour scale)\n"
    "  kv           KV pair ladder: per block, the KV metric of each pair (most precise\n"
    "               first, log scale), the pair chosen by a solution ringed; a block\n"
    "               the solution splits by KV head has a dashed ring at each pair its\n"
    "               heads use (tooltip: which heads) and reads \"blk N (by head)\"\n"
    "\n"
    "  -w, --what WHAT       frontier | bits | sensitivity | kv (required)\n"
    "  -o, --output FILE     output SVG, - for stdout (required)\n"
    "  -d, --db PATH         results database (default: $MPQ_DB, else ./mpq.db)\n"
    "  -s, --solution S      bits / kv: solution name or id (default: newest optimal/feasible)\n"
    "  -m, --metric M        sensitivity: kl (default), dloss, top1, weight_rel, ...;\n"
    "                        kv: kl -> kv_kl (default); frontier: kl (default) or ppl\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 cannot write, 7 database, 10 job / solution / data not found.\n";

int cli_plot(int argc, char **argv) {
    static const struct option opts[] = {
        {"what", required_argument, 0, 'w'},     {"output", required_argument, 0, 'o'},
        {"db", required_argument, 0, 'd'},       {"solution", required_argument, 0, 's'},
        {"metric", required_argument, 0, 'm'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *what = NULL, *out = NULL, *dbpath = NULL;
    mpq_plot_opts po = mpq_plot_opts_default();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "w:o:d:s:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'w': what = optarg; break;
        case 'o': out = optarg; break;
        case 'd': dbpath = optarg; break;
        case 's': po.solution = optarg; break;
        case 'm': po.metric = optarg; break;
        case 'h': fputs(plot_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("plot", "bad option");
        }
    }
    if (optind >= argc) return cli_usage_error("plot", "JOB is required");
    if (optind + 1 < argc) return cli_usage_error("plot", "unexpected argument '%s'", argv[optind + 1]);
    if (!what) return cli_usage_error("plot", "--what is required");
    if (!out) return cli_usage_error("plot", "-o FILE is required");
    mpq_err err = {0};
    mpq_plot_kind k;
    if (mpq_plot_kind_parse(what, &k, &err) != MPQ_OK) return cli_usage_error("plot", "%s", err.msg);
    mpq_db *db = NULL;
    char *svg = NULL;
    int rc = MPQ_EXIT_OK;
    mpq_status st = mpq_db_open(dbpath ? dbpath : cli_default_db(), MPQ_DB_READONLY, &db, &err);
    if (st == MPQ_OK) st = mpq_plot_job(db, argv[optind], k, &po, &svg, &err);
    if (st == MPQ_OK) {
        st = cli_write_text(out, svg, &err);
        if (st == MPQ_OK && strcmp(out, "-") != 0) printf("wrote %s (%s plot of job %s)\n", out, what, argv[optind]);
    }
    if (st != MPQ_OK) rc = cli_fail("plot", st, &err);
    free(svg);
    mpq_db_close(db);
    return rc;
}
