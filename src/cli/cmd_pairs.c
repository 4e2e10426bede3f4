/* cmd_pairs.c - `mpq pairs`: pairwise interaction terms of layer damage around a stored
 * solution (mpq_pairs.h): joint KL of two layers quantized together minus their single-layer
 * KL, stored as resumable units; prints the solution's additive and pair-corrected predicted
 * loss and, when evaluated, its measured KL. Progress on stderr. */
#include "cli.h"
#include "cli_measure.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"
#include "mpq/mpq_pairs.h"

static const char pairs_help[] =
    "usage: mpq pairs JOB --solution NAME [--scope block|all] [--reach R | --solution-only] [OPTIONS]\n"
    "\n"
    "Measures pairwise interaction terms of layer damage around a stored solution: for layer\n"
    "pairs i < j (same block, or all pairs) and candidates a, b near the solution's (its own and\n"
    "those within R steps in bits), the KL vs FP of the model with only layers i (at a) and j\n"
    "(at b) quantized, on the job's calibration windows; stores it as metric pair_kl and the\n"
    "interaction I = pair_kl - kl(i, a) - kl(j, b) as pair_interaction (layer i, candidate\n"
    "'a|<layer j>=b'). Each term is a unit of stage 'pairs': a killed run resumes (same command)\n"
    "with the same numbers; terms already stored (also by other solutions) are not measured again.\n"
    "Prints the solution's additive predicted KL (sum of single-layer KL), the same plus its\n"
    "active interaction terms, and its measured KL when evaluated. Use the terms with\n"
    "`mpq solve JOB --budget ... --pairs`.\n"
    "\n"
    "options:\n"
    "  -d, --db FILE           results database (default $MPQ_DB, else mpq.db)\n"
    "  -s, --solution NAME     stored solution of JOB (required), e.g. kl@avg-bits=3.5\n"
    "      --scope S           block (default: pairs of layers of the same block) | all\n"
    "      --reach R           candidates within R steps in bits of the solution's one\n"
    "                          (default 1; 0 = every candidate; at most candidates - 1)\n"
    "      --solution-only     only the solution's own candidates (one term per layer pair:\n"
    "                          corrects its prediction; too few for solve --pairs to move)\n"
    "  -e, --evaluate          evaluate the solution on the job's evaluation windows if it has\n"
    "                          no evaluation yet\n"
    "      --json              print the result as JSON\n"
    "  -q, --quiet             no progress output\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 I/O (model or data missing), 5 invalid (reach out of range, job\n"
    "without layer_sensitivity, solution without assignments), 7 database, 10 job or solution\n"
    "not found, 12 busy (job leased by another run), 130 interrupted (terms so far are kept).\n";

enum { O_SCOPE = 256, O_REACH, O_JSON, O_SOLONLY };

static void on_progress(void *user, const mpq_pairs_progress *p) {
    bool quiet = *(const bool *)user;
    cli_measure_committed();
    if (!quiet && (p->done == p->total || p->done % 50 == 0))
        fprintf(stderr, "mpq pairs: %lld/%lld terms\n", (long long)p->done, (long long)p->total);
}

int cli_pairs(int argc, char **argv) {
    static const struct option lo[] = {{"db", required_argument, 0, 'd'},     {"solution", required_argument, 0, 's'},
                                       {"scope", required_argument, 0, O_SCOPE}, {"reach", required_argument, 0, O_REACH},
                                       {"evaluate", no_argument, 0, 'e'},      {"json", no_argument, 0, O_JSON},
                                       {"solution-only", no_argument, 0, O_SOLONLY},
                                       {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    mpq_pairs_opts o = mpq_pairs_opts_default();
    const char *dbp = cli_default_db();
    bool json = false, quiet = false, evaluate = false;
    int c, rc = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:s:eqh", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dbp = optarg; break;
        case 's': o.solution = optarg; break;
        case O_SCOPE: {
            mpq_err e = {0};
            if (mpq_pairs_scope_parse(optarg, &o.scope, &e) != MPQ_OK) return cli_usage_error("pairs", "%s", e.msg);
            break;
        }
        case O_REACH:
            if (!cli_measure_parse_reach("pairs", optarg, &o.reach, &rc)) return rc;
            break;
        case O_SOLONLY: o.solution_only = true; break;
        case 'e': evaluate = true; break;
        case O_JSON: json = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(pairs_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("pairs", "bad option");
        }
    }
    if (optind >= argc) return cli_usage_error("pairs", "missing JOB");
    const char *jobname = argv[optind++];
    if (optind < argc) return cli_usage_error("pairs", "unexpected argument '%s'", argv[optind]);
    if (!o.solution) return cli_usage_error("pairs", "--solution NAME is required (e.g. kl@avg-bits=3.5)");
    cli_measure_hook_init();
    o.progress = on_progress;
    o.progress_user = &quiet;

    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_job *job = NULL;
    mpq_pairs_result *r = NULL;
    cJSON *j = NULL;
    mpq_status st;
    if ((st = cli_measure_open(dbp, jobname, &db, &job, &err)) != MPQ_OK) goto done;
    if ((st = mpq_pairs_run(job, &o, &r, &err)) != MPQ_OK) goto done;
    if (evaluate && !isfinite(r->measured_kl)) {
        mpq_jobsolve_eval ev;
        if ((st = mpq_jobsolve_evaluate_solution(job, r->solution_id, &ev, &err)) != MPQ_OK) goto done;
        r->measured_kl = ev.kl;
        r->measured_kl_se = ev.kl_stderr;
    }
    if (json) {
        if (!(j = cJSON_CreateObject()) || !cli_json_add_string(j, "job", mpq_job_get_row(job)->name) ||
            !cli_json_add_string(j, "solution", o.solution) ||
            !cli_json_add_number(j, "solution_id", (double)r->solution_id) ||
            !cli_json_add_string(j, "scope", o.scope == MPQ_PAIRS_SCOPE_ALL ? "all" : "block") ||
            !cli_json_add_number(j, "reach", o.reach) || !cli_json_add_bool(j, "solution_only", o.solution_only) || !cli_json_add_number(j, "layer_pairs", r->n_layer_pairs) ||
            !cli_json_add_number(j, "terms", r->n_terms) || !cli_json_add_number(j, "measured_now", r->n_units_run) ||
            !cli_json_add_number(j, "additive", r->additive) || !cli_json_add_number(j, "pair_sum", r->pair_sum) ||
            !cli_json_add_number(j, "predicted", r->predicted) ||
            !cli_json_add_number(j, "interaction_min", r->interaction_min) ||
            !cli_json_add_number(j, "interaction_max", r->interaction_max) ||
            !cli_json_add_number(j, "measured_kl", r->measured_kl) ||
            !cli_json_add_number(j, "measured_kl_se", r->measured_kl_se)) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (cli_print_json(stdout, j)) st = MPQ_ERR_NOMEM;
    } else {
        printf("job '%s': solution '%s': %d layer pairs (%s), %d terms (%d measured now)\n", mpq_job_get_row(job)->name,
               o.solution, r->n_layer_pairs, o.scope == MPQ_PAIRS_SCOPE_ALL ? "all" : "same block", r->n_terms,
               r->n_units_run);
        printf("interaction terms: min %.6g, max %.6g\n", r->interaction_min, r->interaction_max);
        printf("predicted KL additive %.6g, with its pair terms %.6g (pairs %+.6g)", r->additive, r->predicted,
               r->pair_sum);
        if (isfinite(r->measured_kl)) printf(", measured %.6g +- %.2g", r->measured_kl, r->measured_kl_se);
        printf("\n");
    }
done:
    cJSON_Delete(j);
    mpq_pairs_result_free(r);
    mpq_job_close(job);
    mpq_db_close(db);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("pairs", st, &err);
}
