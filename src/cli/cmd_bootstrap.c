/* cmd_bootstrap.c - `mpq bootstrap`: bootstrap stability of a stored solution over resampled
 * calibration windows (mpq_bootstrap.h): probability it stays optimal, per-layer choice
 * stability, spread of its predicted loss, stability of the Pareto knee. Progress on stderr. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_bootstrap.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"

#define MAX_BUDGETS 8

static const char boot_help[] =
    "usage: mpq bootstrap JOB --budget KIND=VALUE [--budget ...] [OPTIONS]\n"
    "\n"
    "Bootstrap over the job's calibration windows: each resample draws the windows with\n"
    "replacement (the same draw for every layer and candidate), shifts every stored single-layer\n"
    "KL by the resample's change of its per-window mean, re-solves under the budgets (as mpq\n"
    "solve --metric kl) and finds the knee of the exact Pareto frontier. Reports for the stored\n"
    "solution the fraction of resamples in which it is still the optimum, each layer's choice\n"
    "stability, percentiles of its predicted loss, and how often the knee stays the same.\n"
    "Per-window KL is measured once per job (needs the model) and stored as artifacts\n"
    "'window_kl/<layer>/<candidate>'; a stopped run keeps what it stored.\n"
    "\n"
    "options:\n"
    "  -d, --db FILE           results database (default $MPQ_DB, else mpq.db)\n"
    "  -b, --budget KIND=V     avg-bits=4.5, bits=N, bytes=N, bops=N (at least one)\n"
    "  -s, --solution NAME     stored solution (default kl@BUDGETS, as mpq solve names it)\n"
    "  -r, --resamples N       resamples, 1..100000 (default 200)\n"
    "      --seed S            resampling seed, 0..2^63 (default 1)\n"
    "      --identity          every resample is the identity (a check: the stored optimum\n"
    "                          must stay optimal in every one)\n"
    "      --no-knee           skip the Pareto knee part\n"
    "      --ties T            none | qkv | gate_up | qkv,gate_up (default none)\n"
    "      --no-smooth         no monotone smoothing of the loss tables\n"
    "      --json              print the result as JSON\n"
    "  -q, --quiet             no progress output\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 I/O (model or data missing), 5 invalid (job without\n"
    "layer_sensitivity, bad stored per-window values), 7 database, 8 solver, 9 infeasible,\n"
    "10 job or solution not found, 130 interrupted (per-window values so far are kept).\n";

enum { O_SEED = 256, O_IDENT, O_NOKNEE, O_TIES, O_NOSMOOTH, O_JSON };

static void on_progress(void *user, const mpq_bootstrap_progress *p) {
    if (*(const bool *)user) return;
    if (p->done == p->total || p->done % 50 == 0)
        fprintf(stderr, "mpq bootstrap: %s %lld/%lld\n", p->what, (long long)p->done, (long long)p->total);
}

int cli_bootstrap(int argc, char **argv) {
    static const struct option lo[] = {{"db", required_argument, 0, 'd'},      {"budget", required_argument, 0, 'b'},
                                       {"solution", required_argument, 0, 's'}, {"resamples", required_argument, 0, 'r'},
                                       {"seed", required_argument, 0, O_SEED},  {"identity", no_argument, 0, O_IDENT},
                                       {"no-knee", no_argument, 0, O_NOKNEE},   {"ties", required_argument, 0, O_TIES},
                                       {"no-smooth", no_argument, 0, O_NOSMOOTH}, {"json", no_argument, 0, O_JSON},
                                       {"quiet", no_argument, 0, 'q'},          {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    mpq_budget budgets[MAX_BUDGETS];
    mpq_bootstrap_opts o = mpq_bootstrap_opts_default();
    const char *dbp = cli_default_db();
    bool json = false, quiet = false;
    int c;
    long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:b:s:r:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dbp = optarg; break;
        case 'b': {
            if (o.n_budgets >= MAX_BUDGETS) return cli_usage_error("bootstrap", "too many --budget options");
            mpq_err e = {0};
            if (mpq_budget_parse(optarg, &budgets[o.n_budgets], &e) != MPQ_OK) return cli_usage_error("bootstrap", "%s", e.msg);
            o.n_budgets++;
            break;
        }
        case 's': o.solution = optarg; break;
        case 'r':
            if (!cli_parse_int(optarg, 1, MPQ_BOOTSTRAP_MAX_RESAMPLES, &v))
                return cli_usage_error("bootstrap", "bad --resamples '%s' (1..%d)", optarg, MPQ_BOOTSTRAP_MAX_RESAMPLES);
            o.resamples = (int)v;
            break;
        case O_SEED:
            if (!cli_parse_int(optarg, 0, 0x7fffffffffffffffL, &v))
                return cli_usage_error("bootstrap", "bad --seed '%s' (0..2^63-1)", optarg);
            o.seed = (uint64_t)v;
            break;
        case O_IDENT: o.identity = true; break;
        case O_NOKNEE: o.no_knee = true; break;
        case O_TIES: {
            mpq_err e = {0};
            if (mpq_ties_parse(optarg, &o.ties, &e) != MPQ_OK) return cli_usage_error("bootstrap", "%s", e.msg);
            break;
        }
        case O_NOSMOOTH: o.smooth = false; break;
        case O_JSON: json = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(boot_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("bootstrap", "bad option");
        }
    }
    if (optind >= argc) return cli_usage_error("bootstrap", "missing JOB");
    const char *jobname = argv[optind++];
    if (optind < argc) return cli_usage_error("bootstrap", "unexpected argument '%s'", argv[optind]);
    if (o.n_budgets == 0) return cli_usage_error("bootstrap", "at least one --budget is required (e.g. avg-bits=4.5)");
    o.budgets = budgets;
    o.progress = on_progress;
    o.progress_user = &quiet;

    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_job *job = NULL;
    mpq_bootstrap_result *r = NULL;
    cJSON *j = NULL;
    mpq_status st;
    if ((st = mpq_job_signals_install(&err)) != MPQ_OK) goto done;
    if ((st = mpq_db_open(dbp, MPQ_DB_READWRITE, &db, &err)) != MPQ_OK) goto done;
    if ((st = mpq_job_open(db, jobname, &job, &err)) != MPQ_OK) goto done;
    if ((st = mpq_bootstrap_run(job, &o, &r, &err)) != MPQ_OK) goto done;
    if (json) {
        cJSON *arr = NULL;
        if (!(j = cJSON_CreateObject()) || !cli_json_add_string(j, "job", mpq_job_get_row(job)->name) ||
            !cli_json_add_string(j, "solution", r->solution) || !cli_json_add_number(j, "resamples", r->resamples) ||
            !cli_json_add_number(j, "seed", (double)o.seed) || !cli_json_add_bool(j, "identity", o.identity) ||
            !cli_json_add_number(j, "windows", r->n_windows) || !cli_json_add_number(j, "measured_now", r->n_measured) ||
            !cli_json_add_number(j, "window_check", r->window_check) ||
            !cli_json_add_number(j, "window_check_abs", r->window_check_abs) ||
            !cli_json_add_number(j, "p_optimal", r->p_optimal) || !cli_json_add_number(j, "predicted", r->predicted) ||
            !cli_json_add_number(j, "loss_mean", r->loss_mean) || !cli_json_add_number(j, "loss_p5", r->loss_p5) ||
            !cli_json_add_number(j, "loss_p50", r->loss_p50) || !cli_json_add_number(j, "loss_p95", r->loss_p95) ||
            !cli_json_add_number(j, "knee_same", r->knee_same) ||
            !cli_json_add_number(j, "knee_avg_bits", r->knee_avg_bits) ||
            !(arr = cJSON_AddArrayToObject(j, "layers"))) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int l = 0; l < r->n_layers; l++) {
            cJSON *x = cJSON_CreateObject();
            if (!x || !cJSON_AddItemToArray(arr, x) || !cli_json_add_string(x, "layer", r->layer[l]) ||
                !cli_json_add_string(x, "candidate", r->candidate[l]) ||
                !cli_json_add_number(x, "stability", r->stability[l])) {
                st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
                goto done;
            }
        }
        if (cli_print_json(stdout, j)) st = MPQ_ERR_NOMEM;
    } else {
        printf("job '%s': solution '%s', %d resamples of %d windows (seed %llu%s), %d per-window measurements now\n",
               mpq_job_get_row(job)->name, r->solution, r->resamples, r->n_windows, (unsigned long long)o.seed,
               o.identity ? ", identity" : "", r->n_measured);
        printf("per-window means vs stored kl: max difference %.3g nats/token, max relative %.3g\n",
               r->window_check_abs, r->window_check);
        printf("stays optimal in %.1f%% of resamples\n", 100.0 * r->p_optimal);
        printf("predicted loss %.6g; over resamples mean %.6g, p5 %.6g, p50 %.6g, p95 %.6g\n", r->predicted,
               r->loss_mean, r->loss_p5, r->loss_p50, r->loss_p95);
        if (isfinite(r->knee_same))
            printf("Pareto knee (%.4f bits/weight) is the same point in %.1f%% of resamples\n", r->knee_avg_bits,
                   100.0 * r->knee_same);
        printf("layers whose choice changes in some resample (stability = fraction keeping it):\n");
        int shown = 0;
        for (int l = 0; l < r->n_layers; l++)
            if (r->stability[l] < 1.0) {
                printf("  %-24s %-10s %.3f\n", r->layer[l], r->candidate[l], r->stability[l]);
                shown++;
            }
        if (!shown) printf("  (none)\n");
    }
done:
    cJSON_Delete(j);
    mpq_bootstrap_result_free(r);
    mpq_job_close(job);
    mpq_db_close(db);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("bootstrap", st, &err);
}
