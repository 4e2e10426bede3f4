/* cmd_refine.c - `mpq refine`: interaction-aware closed loop on a stored job (mpq_refine.h):
 * in-context re-measurement of neighbouring candidates, re-solve, repeat; a table of
 * (iteration, bits, predicted, measured KL) per iteration. Progress on stderr. */
#include "cli.h"
#include "cli_measure.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"
#include "mpq/mpq_refine.h"

#define MAX_BUDGETS 8

static const char refine_help[] =
    "usage: mpq refine JOB --budget KIND=VALUE [--budget ...] [OPTIONS]\n"
    "\n"
    "Interaction-aware closed loop: start from the additive solution (stored single-layer KL\n"
    "summed); each iteration, measure with the executor on the calibration windows the KL of\n"
    "the model quantized as in the current solution and of every one-group move to the next\n"
    "cheaper / next dearer candidate, every other layer as in the current solution; re-solve\n"
    "with these in-context losses over the measured moves, with a trust region on the number\n"
    "of changed groups (all, then halves); measure each trial and keep the best if it beats\n"
    "the current solution on the calibration windows; then measure the best predicted\n"
    "exchanges (two of the measured moves at once that fit the budgets, e.g. one group up\n"
    "and another down) and keep the best measured configuration of all. Stops when nothing\n"
    "is left to try, nothing measured is better, or after N accepted iterations. Every\n"
    "iteration is stored as solution 'refine@<tag>/it<k>' (tag: the budgets, ';x=N' with\n"
    "exchanges; solver 'refine') and evaluated on the job's evaluation windows. Measurements are units of stage 'refine': a killed refine resumes\n"
    "(same command) with the same numbers.\n"
    "\n"
    "options:\n"
    "  -d, --db FILE           results database (default $MPQ_DB, else mpq.db)\n"
    "  -b, --budget KIND=V     avg-bits=3.5, bits=N, bytes=N, bops=N (at least one)\n"
    "  -n, --iterations N      accepted re-solves after the additive start, 1..50 (default 5)\n"
    "      --reach R           moves measured per group: candidates within R steps in bits\n"
    "                          of the current one (default 1: next cheaper and next dearer);\n"
    "                          0 = every candidate\n"
    "  -x, --exchanges N       exchanges measured per iteration, 0..256 (default 16; 0 = the\n"
    "                          re-solve trials only)\n"
    "      --exchange-size K   moves per exchange at most, 2..4 (default 2)\n"
    "  -m, --metric EXPR       the additive loss of the start and of unmeasured options\n"
    "                          (default kl; forms as in mpq solve, e.g. \"noise_a*weight_rel\")\n"
    "      --ties T            none | qkv | gate_up | qkv,gate_up (default none)\n"
    "      --no-smooth         no monotone smoothing of the loss tables\n"
    "      --solver S          auto (default) | ilp | dp\n"
    "      --time-limit SEC    ILP time limit\n"
    "      --json              print the iterations as JSON\n"
    "  -q, --quiet             no progress output\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 I/O (model or data missing), 5 invalid, 7 database,\n"
    "8 solver, 9 infeasible, 10 job not found, 12 busy (job leased by another run),\n"
    "130 interrupted (measurements so far are kept; run the same command to resume).\n";

enum { O_TIES = 256, O_NOSMOOTH, O_SOLVER, O_TL, O_JSON, O_REACH, O_XSIZE };

static void on_progress(void *user, const mpq_refine_progress *p) {
    bool quiet = *(const bool *)user;
    if (p->unit_key) cli_measure_committed();
    if (quiet) return;
    if (p->unit_key) {
        if (p->done == p->total || p->done % 10 == 0)
            fprintf(stderr, "mpq refine: around iteration %d: %lld/%lld measurements\n", p->iteration,
                    (long long)p->done, (long long)p->total);
    } else {
        fprintf(stderr, "mpq refine: iteration %d stored: predicted %.6g, measured KL %.6g\n", p->iteration,
                p->predicted, p->measured_kl);
    }
}

int cli_refine(int argc, char **argv) {
    static const struct option lo[] = {{"db", required_argument, 0, 'd'},       {"budget", required_argument, 0, 'b'},
                                       {"iterations", required_argument, 0, 'n'}, {"ties", required_argument, 0, O_TIES},
                                       {"no-smooth", no_argument, 0, O_NOSMOOTH}, {"solver", required_argument, 0, O_SOLVER},
                                       {"time-limit", required_argument, 0, O_TL}, {"json", no_argument, 0, O_JSON},
                                       {"reach", required_argument, 0, O_REACH}, {"metric", required_argument, 0, 'm'},
                                       {"exchanges", required_argument, 0, 'x'},
                                       {"exchange-size", required_argument, 0, O_XSIZE},
                                       {"quiet", no_argument, 0, 'q'},            {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    mpq_budget budgets[MAX_BUDGETS];
    mpq_refine_opts o = mpq_refine_opts_default();
    const char *dbp = cli_default_db();
    bool json = false, quiet = false;
    int c, rc = 0;
    long v;
    double d;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:b:n:m:x:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dbp = optarg; break;
        case 'b': {
            if (o.n_budgets >= MAX_BUDGETS) return cli_usage_error("refine", "too many --budget options");
            mpq_err e = {0};
            if (mpq_budget_parse(optarg, &budgets[o.n_budgets], &e) != MPQ_OK) return cli_usage_error("refine", "%s", e.msg);
            o.n_budgets++;
            break;
        }
        case 'n':
            if (!cli_parse_int(optarg, 1, MPQ_REFINE_MAX_ITERATIONS, &v))
                return cli_usage_error("refine", "bad --iterations '%s' (1..%d)", optarg, MPQ_REFINE_MAX_ITERATIONS);
            o.max_iterations = (int)v;
            break;
        case O_TIES: {
            mpq_err e = {0};
            if (mpq_ties_parse(optarg, &o.ties, &e) != MPQ_OK) return cli_usage_error("refine", "%s", e.msg);
            break;
        }
        case O_NOSMOOTH: o.smooth = false; break;
        case O_SOLVER:
            if (strcmp(optarg, "auto") && strcmp(optarg, "ilp") && strcmp(optarg, "dp"))
                return cli_usage_error("refine", "bad --solver '%s' (auto, ilp, dp)", optarg);
            o.solver = optarg;
            break;
        case O_TL:
            if (!cli_parse_double(optarg, &d) || d < 0 || d > 1e7)
                return cli_usage_error("refine", "bad --time-limit '%s' (0..1e7 seconds)", optarg);
            o.time_limit_s = d;
            break;
        case O_JSON: json = true; break;
        case O_REACH:
            if (!cli_measure_parse_reach("refine", optarg, &o.reach, &rc)) return rc;
            break;
        case 'm': o.metric = optarg; break;
        case 'x':
            if (!cli_parse_int(optarg, 0, MPQ_REFINE_MAX_EXCHANGES, &v))
                return cli_usage_error("refine", "bad --exchanges '%s' (0..%d)", optarg, MPQ_REFINE_MAX_EXCHANGES);
            o.exchanges = (int)v;
            break;
        case O_XSIZE:
            if (!cli_parse_int(optarg, 2, MPQ_REFINE_MAX_EXCHANGE_SIZE, &v))
                return cli_usage_error("refine", "bad --exchange-size '%s' (2..%d)", optarg,
                                       MPQ_REFINE_MAX_EXCHANGE_SIZE);
            o.exchange_size = (int)v;
            break;
        case 'q': quiet = true; break;
        case 'h': fputs(refine_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("refine", "bad option");
        }
    }
    if (optind >= argc) return cli_usage_error("refine", "missing JOB");
    const char *jobname = argv[optind++];
    if (optind < argc) return cli_usage_error("refine", "unexpected argument '%s'", argv[optind]);
    if (o.n_budgets == 0) return cli_usage_error("refine", "at least one --budget is required (e.g. avg-bits=3.5)");
    o.budgets = budgets;
    cli_measure_hook_init();
    o.progress = on_progress;
    o.progress_user = &quiet;

    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_job *job = NULL;
    mpq_refine_result *r = NULL;
    cJSON *j = NULL;
    mpq_status st;
    if ((st = cli_measure_open(dbp, jobname, &db, &job, &err)) != MPQ_OK) goto done;
    if ((st = mpq_refine_run(job, &o, &r, &err)) != MPQ_OK) goto done;
    if (json) {
        cJSON *arr = NULL;
        if (!(j = cJSON_CreateObject()) || !cli_json_add_string(j, "job", mpq_job_get_row(job)->name) ||
            !cli_json_add_string(j, "refine", r->tag) || !cli_json_add_string(j, "stop", r->stop) ||
            !cli_json_add_number(j, "measurements_run", r->n_units_run) ||
            !(arr = cJSON_AddArrayToObject(j, "iterations"))) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int k = 0; k < r->n_iters; k++) {
            const mpq_refine_iter *it = &r->iters[k];
            cJSON *x = cJSON_CreateObject();
            if (!x || !cJSON_AddItemToArray(arr, x) || !cli_json_add_number(x, "iteration", it->iteration) ||
                !cli_json_add_number(x, "solution_id", (double)it->solution_id) ||
                !cli_json_add_number(x, "evaluation_id", (double)it->evaluation_id) ||
                !cli_json_add_number(x, "avg_bits", it->avg_bits) ||
                !cli_json_add_number(x, "total_bits", (double)it->total_bits) ||
                !cli_json_add_number(x, "predicted", it->predicted) ||
                !cli_json_add_number(x, "measured_kl", it->measured_kl) ||
                !cli_json_add_number(x, "measured_kl_se", it->measured_kl_se) ||
                !cli_json_add_number(x, "context_kl", it->context_kl) ||
                !cli_json_add_number(x, "n_measured", it->n_measured) ||
                !cli_json_add_number(x, "n_changed", it->n_changed) ||
                !cJSON_AddBoolToObject(x, "exchange", it->exchange)) {
                st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
                goto done;
            }
        }
        if (cli_print_json(stdout, j)) st = MPQ_ERR_NOMEM;
    } else {
        printf("job '%s': refine %s, stopped: %s (%d measurements run now)\n", mpq_job_get_row(job)->name, r->tag,
               r->stop, r->n_units_run);
        printf("%4s %-34s %10s %11s %11s %9s %11s %6s %7s %s\n", "it", "solution", "bits/w", "predicted", "measured",
               "+-", "context_kl", "meas.", "changed", "step");
        for (int k = 0; k < r->n_iters; k++) {
            const mpq_refine_iter *it = &r->iters[k];
            char name[MPQ_DB_NAME_MAX];
            snprintf(name, sizeof name, "refine@%.56s/it%d", r->tag, it->iteration);
            printf("%4d %-34.34s %10.6f %11.6g %11.6g %9.2g %11.6g %6d %7d %s\n", it->iteration, name, it->avg_bits,
                   it->predicted, it->measured_kl, it->measured_kl_se, it->context_kl, it->n_measured, it->n_changed,
                   it->iteration == 0 ? "additive" : it->exchange ? "exchange" : "re-solve");
        }
        printf("predicted: sum of the iteration's loss table over the choice (it0: stored %s);\n"
               "measured: executor KL vs FP on the evaluation windows; context_kl: KL of the same\n"
               "configuration on the calibration windows (what the loop decides on).\n",
               o.metric && strcmp(o.metric, "kl") ? o.metric : "single-layer KL");
    }
done:
    cJSON_Delete(j);
    mpq_refine_result_free(r);
    mpq_job_close(job);
    mpq_db_close(db);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("refine", st, &err);
}
