/* cmd_solve.c - `mpq solve`, `mpq pareto`, `mpq evaluate`: per-layer allocation from a job's
 * stored metrics (ILP / DP under budgets, exact Pareto frontier and knee), stored as solutions
 * with their mpq configs, and the closed loop: measured KL / perplexity of stored solutions and
 * uniform baselines against the FP model, with the predicted-vs-measured rank correlation.
 * Library: include/mpq/mpq_jobsolve.h. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_jobsolve.h"

#define MAX_LIST 64

static const char *problem_opts_help =
    "  -d, --db PATH           results database (default: $MPQ_DB, else ./mpq.db)\n"
    "      --workers N         threads of the evaluations, each taking whole batches of windows\n"
    "                          (default: the number of processors; the numbers do not depend on N)\n"
    "  -m, --metric EXPR       loss: a stored metric (kl default, dloss, act_err, weight_sse,\n"
    "                          hawq_omega, ...) or a weighted sum such as \"kl+0.5*act_err\";\n"
    "                          a term may be a per-layer metric times a per-candidate one,\n"
    "                          e.g. \"noise_a*weight_rel\" (noise_sensitivity stage)\n"
    "      --ties LIST         none (default) | qkv | gate_up | qkv,gate_up: tied layers share\n"
    "                          a candidate\n"
    "      --group L1,L2,...   user group of layers (names or globs) sharing a candidate (repeatable)\n"
    "      --pin LAYER=CAND    fix layers (glob) to a candidate, e.g. blk.0.attn_v=int8c (repeatable)\n"
    "      --allow GLOB=C1,C2  allowed candidates of matching layers (repeatable)\n"
    "      --f16               also offer f16 (keep) as an option\n"
    "      --allow-missing     drop options whose metric is missing (default: error naming them)\n"
    "      --no-smooth         no monotone smoothing of losses (default: smoothed, recorded)\n"
    "      --act-bits N        activation bits for BOPs (default 16)\n"
    "      --latency-table F   JSON {candidate: {layer|kind|\"*\": microseconds}}\n"
    "      --json              JSON output\n"
    "  -h, --help              this help\n";

static const char *solve_help =
    "usage: mpq solve JOB --budget KIND=VALUE [--budget ...] [options]\n"
    "\n"
    "Chooses one candidate per linear layer of JOB (from its stored per-layer metrics) that\n"
    "minimizes the predicted loss (sum over layers) under every budget, stores the solution with\n"
    "its mpq config (query with `mpq query solutions JOB`) and prints it.\n"
    "Budgets: avg-bits=3.5 (stored bits incl. scale/zero <= 3.5 x quantizable weights, exact),\n"
    "bits=N, bytes=N, bops=N (MACs x weight bits x activation bits), latency=US (needs a table).\n"
    "\n"
    "  -b, --budget KIND=VALUE budget (repeatable; several at once use the ILP)\n"
    "      --solver S          auto (default: the lower estimated time of dp and ilp; both exact)\n"
    "                          | ilp | dp\n"
    "      --time-limit S      ILP time limit in seconds (0 = none; reports the proven gap)\n"
    "  -n, --name NAME         solution name (default METRIC@BUDGETS; an existing one is replaced)\n"
    "  -e, --evaluate          also measure the solution (and uniform baselines) on the job's\n"
    "                          evaluation data against the FP model\n"
    "      --pairs             add the job's stored pair interaction terms (`mpq pairs`) to the\n"
    "                          loss: GLPK ILP with linearised pair products; metric kl only;\n"
    "                          default name kl+pairs@BUDGETS\n"
    "      --pairs-form F      aggregated (default: marginal rows per layer pair) | standard\n"
    "                          (three rows per term): the linearisation of the pair products\n";

static const char *pareto_help =
    "usage: mpq pareto JOB [options]\n"
    "\n"
    "Computes the exact Pareto frontier (Nemhauser-Ullmann) of (resource, predicted loss) and its\n"
    "convex hull, stores the frontier, prints its points (avg bits, predicted loss, hull gap) and\n"
    "the knee (the point farthest below the chord of the normalized frontier), stored as solution\n"
    "METRIC@knee.\n"
    "\n"
    "  -r, --resource R        bits (default; shown as avg bits) | bytes | bops | latency\n"
    "  -e, --evaluate K        also store K points evenly spread in cost (METRIC@pareto-i) and\n"
    "                          measure them, the knee and uniform baselines\n"
    "      --all-points        print every point (default: at most 40 plus the knee)\n";

static const char *evaluate_help =
    "usage: mpq evaluate JOB [SOLUTION...] [--all] [options]\n"
    "       mpq evaluate JOB --random N [--seed S] [options]\n"
    "\n"
    "Measures stored solutions (names or ids) of JOB on the job's evaluation data (its spec's\n"
    "\"evaluation\" windows, else the calibration windows) against the FP model, stores\n"
    "evaluations (ppl, KL, its standard error, top-1, cross-entropy), evaluates every candidate\n"
    "uniformly once per job as a baseline, and prints predicted vs measured with the Spearman\n"
    "rank correlation between predicted loss (--metric) and measured KL.\n"
    "With --random N: draws N random configurations (each linear layer uniform over the job's\n"
    "candidates), stores them as solutions random-S-0 .. random-S-(N-1) (solver \"random\"),\n"
    "measures them (a configuration already stored and measured under that name is not measured\n"
    "again) and prints predicted vs measured and the Spearman correlation over these N only.\n"
    "\n"
    "  -a, --all               every stored solution of the job that has a configuration\n"
    "      --random N          N random configurations (1..1000) instead of stored solutions\n"
    "      --seed S            seed of --random (integer >= 0, default 1)\n"
    "      --no-uniform        skip the uniform baselines\n"
    "  -d, --db PATH           results database (default: $MPQ_DB, else ./mpq.db)\n"
    "      --workers N         threads of the evaluations, each taking whole batches of windows\n"
    "                          (default: the number of processors; the numbers do not depend on N)\n"
    "  -m, --metric EXPR       predicted loss expression for the comparison (default kl;\n"
    "                          forms as in mpq solve, e.g. \"noise_a*weight_rel\")\n"
    "      --json              JSON output\n"
    "  -h, --help              this help\n";

typedef struct solve_args {
    const char *db, *job, *name, *latency_file, *ties;
    const char *groups[MAX_LIST], *pins[MAX_LIST], *allows[MAX_LIST], *budget_text[MAX_LIST];
    int n_groups, n_pins, n_allows, n_budgets;
    mpq_budget budgets[MAX_LIST];
    mpq_jobsolve_opts o;
    bool json, evaluate_flag, all_points, all, no_uniform;
    long evaluate_k, workers, random_n, seed;
    const char *solutions[MAX_LIST];
    int n_solutions;
    char *latency_text;
} solve_args;

enum { O_TIES = 1000, O_GROUP, O_PIN, O_ALLOW, O_F16, O_MISSING, O_NOSMOOTH, O_ACT, O_LAT, O_JSON, O_SOLVER, O_TL,
       O_ALLPTS, O_NOUNI, O_WORKERS, O_RANDOM, O_SEED, O_PAIRS, O_PAIRS_FORM };

/* NULL with *err set when path is not a readable regular file of at most 16 MiB. */
static char *read_text(const char *path, mpq_err *err) {
    int fd = -1;
    if (mpq_file_open_regular(path, &fd, err) != MPQ_OK) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        mpq_err_set(err, MPQ_ERR_IO, "%s: fdopen: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (n + 2 > cap) {
            if (cap >= ((size_t)16 << 20)) { /* a latency table is a few KB */
                mpq_err_set(err, MPQ_ERR_FORMAT, "%s: larger than 16 MiB; not a latency table", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb) {
                mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        buf[n++] = (char)c;
    }
    if (ferror(f)) {
        mpq_err_set(err, MPQ_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    if (!buf && !(buf = malloc(1))) {
        mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* which: 0 solve, 1 pareto, 2 evaluate. Returns 0 ok, -1 help printed, else an exit code. */
static int parse_args(int which, int argc, char **argv, solve_args *a) {
    static const char *cmds[] = {"solve", "pareto", "evaluate"};
    const char *cmd = cmds[which];
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'},          {"metric", required_argument, 0, 'm'},
        {"ties", required_argument, 0, O_TIES},     {"group", required_argument, 0, O_GROUP},
        {"pin", required_argument, 0, O_PIN},       {"allow", required_argument, 0, O_ALLOW},
        {"f16", no_argument, 0, O_F16},             {"allow-missing", no_argument, 0, O_MISSING},
        {"no-smooth", no_argument, 0, O_NOSMOOTH},  {"act-bits", required_argument, 0, O_ACT},
        {"latency-table", required_argument, 0, O_LAT}, {"json", no_argument, 0, O_JSON},
        {"budget", required_argument, 0, 'b'},      {"solver", required_argument, 0, O_SOLVER},
        {"time-limit", required_argument, 0, O_TL}, {"name", required_argument, 0, 'n'},
        {"evaluate", optional_argument, 0, 'e'},    {"resource", required_argument, 0, 'r'},
        {"all-points", no_argument, 0, O_ALLPTS},   {"all", no_argument, 0, 'a'},
        {"no-uniform", no_argument, 0, O_NOUNI},    {"help", no_argument, 0, 'h'},
        {"workers", required_argument, 0, O_WORKERS},
        {"random", required_argument, 0, O_RANDOM}, {"seed", required_argument, 0, O_SEED},
        {"pairs", no_argument, 0, O_PAIRS}, {"pairs-form", required_argument, 0, O_PAIRS_FORM},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->o = mpq_jobsolve_opts_default();
    a->db = cli_default_db();
    a->seed = 1;
    optind = 1;
    int c;
    long v;
    double d;
    while ((c = getopt_long(argc, argv, which == 1 ? "d:m:r:e:h" : "d:m:b:n:eah", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->db = optarg; break;
        case 'm': a->o.metric = optarg; break;
        case O_TIES: a->ties = optarg; break;
        case O_GROUP:
        case O_PIN:
        case O_ALLOW: {
            const char **arr = c == O_GROUP ? a->groups : c == O_PIN ? a->pins : a->allows;
            int *n = c == O_GROUP ? &a->n_groups : c == O_PIN ? &a->n_pins : &a->n_allows;
            if (*n >= MAX_LIST) return cli_usage_error(cmd, "too many --group/--pin/--allow options");
            arr[(*n)++] = optarg;
            break;
        }
        case O_F16: a->o.include_f16 = true; break;
        case O_MISSING: a->o.allow_missing = true; break;
        case O_NOSMOOTH: a->o.smooth = false; break;
        case O_ACT:
            if (!cli_parse_int(optarg, 1, 64, &v)) return cli_usage_error(cmd, "bad --act-bits '%s'", optarg);
            a->o.act_bits = (int)v;
            break;
        case O_LAT: a->latency_file = optarg; break;
        case O_JSON: a->json = true; break;
        case 'b': {
            if (which != 0) return cli_usage_error(cmd, "--budget applies to mpq solve");
            if (a->n_budgets >= MAX_LIST) return cli_usage_error(cmd, "too many --budget options");
            mpq_err e = {0};
            if (mpq_budget_parse(optarg, &a->budgets[a->n_budgets], &e) != MPQ_OK) return cli_usage_error(cmd, "%s", e.msg);
            a->n_budgets++;
            break;
        }
        case O_SOLVER:
            if (strcmp(optarg, "auto") && strcmp(optarg, "ilp") && strcmp(optarg, "dp"))
                return cli_usage_error(cmd, "bad --solver '%s' (auto, ilp, dp)", optarg);
            a->o.solver = optarg;
            break;
        case O_TL:
            if (!cli_parse_double(optarg, &d) || d < 0 || d > 1e7)
                return cli_usage_error(cmd, "bad --time-limit '%s' (0..1e7 seconds)", optarg);
            a->o.time_limit_s = d;
            break;
        case 'n': a->o.name = optarg; break;
        case 'e':
            if (which == 1) {
                if (!optarg && optind < argc && argv[optind][0] != '-') optarg = argv[optind++];
                if (!optarg || !cli_parse_int(optarg, 0, 32, &a->evaluate_k))
                    return cli_usage_error(cmd, "bad --evaluate '%s' (0..32 points)", optarg ? optarg : "");
                a->evaluate_flag = true;
            } else {
                if (optarg) return cli_usage_error(cmd, "--evaluate takes no value here");
                a->evaluate_flag = true;
            }
            break;
        case 'r': {
            mpq_err e = {0};
            if (mpq_resource_kind_parse(optarg, &a->o.frontier_resource, &e) != MPQ_OK) return cli_usage_error(cmd, "%s", e.msg);
            break;
        }
        case O_PAIRS:
            if (which != 0) return cli_usage_error(cmd, "--pairs applies to mpq solve");
            a->o.pairs = true;
            break;
        case O_PAIRS_FORM:
            if (which != 0) return cli_usage_error(cmd, "--pairs-form applies to mpq solve");
            if (strcmp(optarg, "aggregated") && strcmp(optarg, "standard"))
                return cli_usage_error(cmd, "bad --pairs-form '%s' (aggregated, standard)", optarg);
            a->o.pairs_standard_form = strcmp(optarg, "standard") == 0;
            break;
        case O_ALLPTS: a->all_points = true; break;
        case 'a': a->all = true; break;
        case O_NOUNI: a->no_uniform = true; break;
        case O_WORKERS:
            if (!cli_parse_int(optarg, 1, MPQ_EXEC_MAX_WORKERS, &a->workers))
                return cli_usage_error(cmd, "bad --workers '%s' (1..%d)", optarg, MPQ_EXEC_MAX_WORKERS);
            break;
        case O_RANDOM:
        case O_SEED:
            if (which != 2) return cli_usage_error(cmd, "--random and --seed apply to mpq evaluate");
            if (c == O_RANDOM && !cli_parse_int(optarg, 1, MPQ_JOBSOLVE_RANDOM_MAX, &a->random_n))
                return cli_usage_error(cmd, "bad --random '%s' (1..%d configurations)", optarg, MPQ_JOBSOLVE_RANDOM_MAX);
            if (c == O_SEED && !cli_parse_int(optarg, 0, INT64_MAX, &a->seed))
                return cli_usage_error(cmd, "bad --seed '%s' (an integer >= 0)", optarg);
            break;
        case 'h':
            if (which == 0) fputs(solve_help, stdout);
            else if (which == 1) fputs(pareto_help, stdout);
            else fputs(evaluate_help, stdout);
            if (which != 2) fputs(problem_opts_help, stdout);
            fputs("\nExit codes: 0 ok, 2 usage (incl. bad budget syntax), 3 I/O, 5 invalid (bad metric,\n"
                  "layer pattern, candidate, missing metric), 7 database, 8 solver, 9 infeasible (the\n"
                  "message names the tightest budget), 10 job or solution not found.\n",
                  stdout);
            return -1;
        default: return cli_usage_error(cmd, "bad option");
        }
    }
    if (optind >= argc) return cli_usage_error(cmd, "missing JOB");
    a->job = argv[optind++];
    for (; optind < argc; optind++) {
        if (which != 2) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        if (a->n_solutions >= MAX_LIST) return cli_usage_error(cmd, "too many solutions");
        a->solutions[a->n_solutions++] = argv[optind];
    }
    if (which == 0 && a->n_budgets == 0) return cli_usage_error(cmd, "at least one --budget is required (e.g. avg-bits=3.5)");
    if (a->random_n > 0 && (a->all || a->n_solutions > 0))
        return cli_usage_error(cmd, "--random cannot be combined with SOLUTION names or --all");
    if (a->ties) {
        mpq_err e = {0};
        if (mpq_ties_parse(a->ties, &a->o.ties, &e) != MPQ_OK) return cli_usage_error(cmd, "%s", e.msg);
    }
    a->o.groups = a->groups;
    a->o.n_groups = a->n_groups;
    a->o.pins = a->pins;
    a->o.n_pins = a->n_pins;
    a->o.allows = a->allows;
    a->o.n_allows = a->n_allows;
    a->o.budgets = a->budgets;
    a->o.n_budgets = a->n_budgets;
    return 0;
}

static int load_latency(const char *cmd, solve_args *a) {
    if (!a->latency_file) return 0;
    mpq_err e = {0};
    a->latency_text = read_text(a->latency_file, &e);
    if (!a->latency_text) return cli_fail(cmd, e.status, &e);
    a->o.latency_json = a->latency_text;
    return 0;
}

static const char *status_str(mpq_solve_status s) {
    return s == MPQ_SOLVE_OPTIMAL ? "optimal" : s == MPQ_SOLVE_FEASIBLE ? "feasible" : "infeasible";
}

/* Evaluates the given solution ids (+ uniform baselines unless skipped) and prints the
 * comparison. */
/* The "evaluations" array and the Spearman figures of a predicted-vs-measured comparison. */
static void comparison_json(cJSON *jout, const mpq_jobsolve_compare_row *rows, int n, double rho, int nu) {
    cJSON *arr = cJSON_AddArrayToObject(jout, "evaluations");
    for (int i = 0; arr && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddStringToObject(o, "label", rows[i].label);
        cJSON_AddNumberToObject(o, "solution_id", (double)rows[i].solution_id);
        cJSON_AddNumberToObject(o, "avg_bits", rows[i].avg_bits);
        if (isfinite(rows[i].predicted)) cJSON_AddNumberToObject(o, "predicted", rows[i].predicted);
        else cJSON_AddNullToObject(o, "predicted");
        cJSON_AddNumberToObject(o, "kl", rows[i].kl);
        cJSON_AddNumberToObject(o, "kl_stderr", rows[i].kl_stderr);
        cJSON_AddNumberToObject(o, "ppl", rows[i].ppl);
        cJSON_AddNumberToObject(o, "top1", rows[i].top1);
        cJSON_AddItemToArray(arr, o);
    }
    if (isfinite(rho)) cJSON_AddNumberToObject(jout, "spearman", rho);
    else cJSON_AddNullToObject(jout, "spearman");
    cJSON_AddNumberToObject(jout, "spearman_n", nu);
}

/* The same as a table; kind ("" or "random ") names the configurations in the Spearman line. */
static void comparison_print(const char *metric, const mpq_jobsolve_compare_row *rows, int n, double rho, int nu,
                             const char *kind) {
    printf("\npredicted (sum of %s over layers) vs measured on the evaluation data:\n", metric);
    printf("%-28s %9s %12s %12s %10s %9s %7s\n", "configuration", "avg bits", "predicted", "measured KL", "+- se", "ppl",
           "top-1");
    for (int i = 0; i < n; i++)
        printf("%-28.28s %9.4f %12.6g %12.6g %10.2g %9.4f %7.4f\n", rows[i].label, rows[i].avg_bits, rows[i].predicted,
               rows[i].kl, rows[i].kl_stderr, rows[i].ppl, rows[i].top1);
    if (isfinite(rho))
        printf("Spearman rank correlation (predicted vs measured KL): %.4f over %d %sconfigurations\n", rho, nu, kind);
    else printf("Spearman rank correlation: n/a (%d configurations with both numbers; needs 3)\n", nu);
}

/* The first linear layer of the job on which candidate `name` is not achievable (a SAQ rate
 * its shape cannot reach), or NULL: a uniform baseline of it cannot exist. */
static const char *uniform_unavailable_on(const mpq_job *job, const char *name) {
    const mpq_model *shape = mpq_job_get_shape(job);
    mpq_candidate c;
    if (!shape || mpq_candidate_parse(name, &c, NULL) != MPQ_OK || !mpq_candidate_is_saq(&c)) return NULL;
    for (int i = 0; i < mpq_model_n_linear(shape); i++) {
        const mpq_layer_info *li = mpq_model_linear(shape, i);
        if (mpq_candidate_matrix_bits(&c, li->rows, li->cols) < 0) return li->name;
    }
    return NULL;
}

/* The evaluation just made of solution id (its measurement ev, its comparison row for the
 * name and the prediction) as a JSON object: README "mpq solve, pareto, evaluate". */
static cJSON *requested_json(int64_t id, const mpq_jobsolve_eval *ev, const mpq_jobsolve_compare_row *rows, int n) {
    const mpq_jobsolve_compare_row *row = NULL;
    for (int i = 0; i < n && !row; i++)
        if (rows[i].solution_id == id) row = &rows[i];
    cJSON *o = cJSON_CreateObject();
    bool ok = o && (row ? cJSON_AddStringToObject(o, "solution", row->label) : cJSON_AddNullToObject(o, "solution")) &&
              cJSON_AddNumberToObject(o, "solution_id", (double)id) &&
              cJSON_AddNumberToObject(o, "evaluation_id", (double)ev->evaluation_id) &&
              cJSON_AddNumberToObject(o, "avg_bits", row ? row->avg_bits : ev->avg_bits) &&
              (row && isfinite(row->predicted) ? cJSON_AddNumberToObject(o, "predicted", row->predicted)
                                               : cJSON_AddNullToObject(o, "predicted")) &&
              cJSON_AddNumberToObject(o, "kl", ev->kl) && cJSON_AddNumberToObject(o, "kl_stderr", ev->kl_stderr) &&
              cJSON_AddNumberToObject(o, "ppl", ev->ppl) && cJSON_AddNumberToObject(o, "top1", ev->top1) &&
              cJSON_AddNumberToObject(o, "ce", ev->ce) && cJSON_AddNumberToObject(o, "n_tokens", (double)ev->n_tokens);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static mpq_status evaluate_and_compare(mpq_job *job, const int64_t *ids, int n_ids, bool uniform, const char *metric,
                                       bool json, cJSON *jout, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_jobsolve_eval *evs = mpq_calloc(n_ids > 0 ? (size_t)n_ids : 1, sizeof *evs);
    if (!evs) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_ids; i++)
        if ((st = mpq_jobsolve_evaluate_solution(job, ids[i], &evs[i], err)) != MPQ_OK) {
            free(evs);
            return st;
        }
    if (uniform)
        for (int c = 0; c < mpq_job_get_spec(job)->n_candidates; c++) {
            mpq_jobsolve_eval ev;
            const char *cn = mpq_job_get_spec(job)->candidates[c], *skip = uniform_unavailable_on(job, cn);
            if (skip) {
                fprintf(stderr, "mpq: no uniform baseline for %s: its rate is not achievable on %s\n", cn, skip);
                continue;
            }
            if ((st = mpq_jobsolve_evaluate_uniform(job, cn, false, &ev, err)) != MPQ_OK) {
                free(evs);
                return st;
            }
        }
    mpq_jobsolve_compare_row *rows = NULL;
    int n = 0, nu = 0;
    double rho = NAN;
    if ((st = mpq_jobsolve_compare(job, metric, &rows, &n, &rho, &nu, err)) != MPQ_OK) {
        free(evs);
        return st;
    }
    /* sort by avg bits for display */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && rows[j].avg_bits < rows[j - 1].avg_bits; j--) {
            mpq_jobsolve_compare_row t = rows[j];
            rows[j] = rows[j - 1];
            rows[j - 1] = t;
        }
    if (json) {
        /* the solutions asked for, in the order asked, with the evaluation just made of each;
         * "evaluation": that object when exactly one was asked for, else null */
        cJSON *req = cJSON_AddArrayToObject(jout, "requested");
        for (int i = 0; req && i < n_ids; i++) {
            cJSON *o = requested_json(ids[i], &evs[i], rows, n);
            if (!o || !cJSON_AddItemToArray(req, o)) {
                cJSON_Delete(o);
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
            }
        }
        cJSON *one = n_ids == 1 && req ? cJSON_Duplicate(cJSON_GetArrayItem(req, 0), true) : cJSON_CreateNull();
        if (!req || !one || !cJSON_AddItemToObject(jout, "evaluation", one)) {
            cJSON_Delete(one);
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        }
        comparison_json(jout, rows, n, rho, nu);
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(jout, "evaluations");
        for (cJSON *e = arr ? arr->child : NULL; e; e = e->next) {
            const cJSON *sid = cJSON_GetObjectItemCaseSensitive(e, "solution_id");
            bool asked = false;
            for (int i = 0; i < n_ids && cJSON_IsNumber(sid) && !asked; i++) asked = sid->valuedouble == (double)ids[i];
            if (!cJSON_AddBoolToObject(e, "requested", asked)) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        }
    } else {
        comparison_print(metric, rows, n, rho, nu, "");
    }
    free(rows);
    free(evs);
    return st;
}

int cli_solve(int argc, char **argv) {
    solve_args a;
    int rc = parse_args(0, argc, argv, &a);
    if (rc) return rc < 0 ? MPQ_EXIT_OK : rc;
    if ((rc = load_latency("solve", &a)) != 0) return rc;
    mpq_err err = {0};
    mpq_status st;
    mpq_db *db = NULL;
    mpq_job *job = NULL;
    mpq_jobsolve_result *r = NULL;
    cJSON *jout = NULL;
    if ((st = mpq_db_open(a.db, MPQ_DB_READWRITE, &db, &err)) != MPQ_OK) goto done;
    if ((st = mpq_job_open(db, a.job, &job, &err)) != MPQ_OK) goto done;
    mpq_job_set_eval_workers(job, (int)a.workers);
    if ((st = mpq_jobsolve_run(job, &a.o, &r, &err)) != MPQ_OK) goto done;
    if (a.json) {
        jout = cJSON_Parse(r->config_json);
        cJSON *x = jout ? cJSON_CreateObject() : NULL;
        if (!x) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        cJSON_AddNumberToObject(x, "solution_id", (double)r->solution_id);
        cJSON_AddStringToObject(x, "name", r->name);
        cJSON_AddItemToObject(x, "config", jout);
        jout = x;
    } else {
        printf("job '%s': solution '%s' (id %lld), metric %s, solver %s (%s)\n", mpq_job_get_row(job)->name, r->name,
               (long long)r->solution_id, a.o.metric, r->solver, r->engine);
        mpq_db_solution s;
        mpq_db_assignment *as = NULL;
        int n_as = 0;
        memset(&s, 0, sizeof s);
        if ((st = mpq_db_solution_get(db, r->solution_id, &s, &as, &n_as, &err)) != MPQ_OK) goto done;
        printf("%-22s %-10s %9s %12s %14s\n", "layer", "candidate", "bits/w", "bits", "predicted");
        for (int l = 0; l < n_as; l++) {
            /* assignments come back in layer order, as the result's arrays */
            int k = l < r->n_layers ? l : r->n_layers - 1;
            printf("%-22s %-10s %9.4f %12lld %14.6g\n", as[l].layer_name, as[l].candidate,
                   (double)r->layer_bits[k] / (double)r->layer_params[k], (long long)r->layer_bits[k], r->layer_loss[k]);
        }
        free(as);
        mpq_db_solution_release(&s);
        printf("total: %lld bits for %lld weights = %.6f bits/weight", (long long)r->total_bits, (long long)r->total_params,
               r->avg_bits);
        for (int k = 1; k < MPQ_N_RESOURCE_KINDS; k++)
            if (isfinite(r->cost[k])) printf(", %s %.17g", mpq_resource_kind_name((mpq_resource_kind)k), r->cost[k]);
        printf("\npredicted loss %.6g (raw %.6g%s), status %s, gap %.3g, LP bound %.6g, %.3f s\n", r->objective, r->objective_raw,
               a.o.smooth ? ", smoothed optimized" : "", status_str(r->status), r->gap, r->lp_bound, r->seconds);
        if (a.o.pairs)
            printf("pair terms: %d in the ILP, %.6g of the predicted loss from active ones\n", r->n_pair_terms,
                   r->pair_loss);
        if (isfinite(r->waterfill_sse))
            printf("weight sse of the choice %.6g; water-filling lower bound at this bits budget %.6g\n", r->weight_sse,
                   r->waterfill_sse);
    }
    if (a.evaluate_flag) {
        if ((st = evaluate_and_compare(job, &r->solution_id, 1, true, a.o.metric, a.json, jout, &err)) != MPQ_OK) goto done;
    }
    if (a.json) {
        int prc = cli_print_json(stdout, jout);
        if (prc) st = MPQ_ERR_NOMEM;
    }
done:
    cJSON_Delete(jout);
    mpq_jobsolve_result_free(r);
    mpq_job_close(job);
    mpq_db_close(db);
    free(a.latency_text);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("solve", st, &err);
}

int cli_pareto(int argc, char **argv) {
    solve_args a;
    int rc = parse_args(1, argc, argv, &a);
    if (rc) return rc < 0 ? MPQ_EXIT_OK : rc;
    if ((rc = load_latency("pareto", &a)) != 0) return rc;
    mpq_err err = {0};
    mpq_status st;
    mpq_db *db = NULL;
    mpq_job *job = NULL;
    mpq_jobsolve_pareto_result *r = NULL;
    cJSON *jout = NULL;
    if ((st = mpq_db_open(a.db, MPQ_DB_READWRITE, &db, &err)) != MPQ_OK) goto done;
    if ((st = mpq_job_open(db, a.job, &job, &err)) != MPQ_OK) goto done;
    mpq_job_set_eval_workers(job, (int)a.workers);
    if ((st = mpq_jobsolve_pareto(job, &a.o, a.evaluate_flag ? (int)a.evaluate_k : 0, &r, &err)) != MPQ_OK) goto done;
    size_t n = r->exact->n_points, nh = r->hull->n_points;
    bool bits = a.o.frontier_resource == MPQ_RESOURCE_BITS;
    /* hull gap per exact point: the gap of the hull segment it lies in (0 for hull vertices) */
    if (a.json) {
        jout = cJSON_CreateObject();
        cJSON *pts = jout ? cJSON_AddArrayToObject(jout, "points") : NULL;
        if (!pts) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        cJSON_AddNumberToObject(jout, "frontier_id", (double)r->frontier_id);
        cJSON_AddStringToObject(jout, "resource", bits ? "avg_bits" : mpq_resource_kind_name(a.o.frontier_resource));
        cJSON_AddNumberToObject(jout, "n_points", (double)n);
        cJSON_AddNumberToObject(jout, "n_hull_points", (double)nh);
        cJSON_AddNumberToObject(jout, "knee", (double)r->knee);
        cJSON_AddNumberToObject(jout, "seconds", r->seconds);
        for (size_t k = 0; k < n; k++) {
            cJSON *p = cJSON_CreateArray();
            if (!p) break;
            cJSON_AddItemToArray(p, cJSON_CreateNumber(r->cost_display[k]));
            cJSON_AddItemToArray(p, cJSON_CreateNumber(r->exact->loss[k]));
            cJSON_AddItemToArray(pts, p);
        }
    } else {
        printf("job '%s': exact frontier of (%s, predicted %s): %zu points, convex hull %zu vertices, %.3f s; frontier id %lld\n",
               mpq_job_get_row(job)->name, bits ? "avg bits" : mpq_resource_kind_name(a.o.frontier_resource), a.o.metric, n, nh,
               r->seconds, (long long)r->frontier_id);
        printf("%6s %12s %14s %6s %12s\n", "point", bits ? "avg bits" : "cost", "predicted", "hull", "hull gap");
        size_t step = (a.all_points || n <= 60) ? 1 : (n + 39) / 40;
        size_t h = 0;
        for (size_t k = 0; k < n; k++) {
            while (h + 1 < nh && r->hull->cost[h + 1] <= r->exact->cost[k]) h++;
            bool on_hull = nh > 0 && r->hull->cost[h] == r->exact->cost[k];
            if (k % step != 0 && k != r->knee && k + 1 != n) continue;
            char gap[32] = "";
            if (on_hull) snprintf(gap, sizeof gap, "%.4g", r->hull_gap[h] < 1e-12 ? 0.0 : r->hull_gap[h]);
            printf("%6zu %12.6f %14.6g %6s %12s%s\n", k, r->cost_display[k], r->exact->loss[k], on_hull ? "yes" : "", gap,
                   k == r->knee ? "  <- knee" : "");
        }
        printf("knee: point %zu at %.6f %s, predicted %.6g (stored as solution id %lld)\n", r->knee, r->cost_display[r->knee],
               bits ? "bits/weight" : mpq_resource_kind_name(a.o.frontier_resource), r->exact->loss[r->knee],
               (long long)(r->n_solutions ? r->solution_ids[0] : 0));
        printf("(hull gap: loss given up by the hull vertex over the exact frontier up to the next vertex)\n");
    }
    if (a.evaluate_flag) {
        if ((st = evaluate_and_compare(job, r->solution_ids, r->n_solutions, true, a.o.metric, a.json, jout, &err)) != MPQ_OK)
            goto done;
    }
    if (a.json) {
        int prc = cli_print_json(stdout, jout);
        if (prc) st = MPQ_ERR_NOMEM;
    }
done:
    cJSON_Delete(jout);
    mpq_jobsolve_pareto_result_free(r);
    mpq_job_close(job);
    mpq_db_close(db);
    free(a.latency_text);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("pareto", st, &err);
}

/* mpq evaluate --random: draw, store, measure, and compare over the random configurations only. */
static mpq_status evaluate_random(mpq_job *job, const solve_args *a, cJSON *jout, mpq_err *err) {
    const char *metric = a->o.metric ? a->o.metric : "kl";
    int n = (int)a->random_n, reused = 0, nr = 0, nu = 0, nsel = 0;
    int64_t *ids = calloc((size_t)n, sizeof *ids);
    double *xs = calloc((size_t)n, sizeof *xs), *ys = calloc((size_t)n, sizeof *ys);
    mpq_jobsolve_compare_row *rows = NULL, *sel = calloc((size_t)n, sizeof *sel);
    double rho_all = NAN, rho = NAN;
    mpq_status st = MPQ_OK;
    if (!ids || !xs || !ys || !sel) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!a->json)
        printf("job '%s': %d random configurations (seed %ld), each layer uniform over %d candidates\n",
               mpq_job_get_row(job)->name, n, a->seed, mpq_job_get_spec(job)->n_candidates);
    if ((st = mpq_jobsolve_random(job, metric, n, (uint64_t)a->seed, ids, &reused, err)) != MPQ_OK) goto done;
    if ((st = mpq_jobsolve_compare(job, metric, &rows, &nr, &rho_all, &nu, err)) != MPQ_OK) goto done;
    for (int k = 0; k < n; k++) /* in draw order */
        for (int i = 0; i < nr; i++)
            if (rows[i].solution_id == ids[k]) {
                sel[nsel++] = rows[i];
                break;
            }
    nu = 0;
    for (int i = 0; i < nsel; i++)
        if (isfinite(sel[i].predicted) && isfinite(sel[i].kl)) {
            xs[nu] = sel[i].predicted;
            ys[nu++] = sel[i].kl;
        }
    if (nu >= 3) rho = mpq_jobsolve_spearman(xs, ys, nu);
    if (a->json) {
        cJSON *ro = cJSON_AddObjectToObject(jout, "random");
        if (ro) {
            cJSON_AddNumberToObject(ro, "n", n);
            cJSON_AddNumberToObject(ro, "seed", (double)a->seed);
            cJSON_AddNumberToObject(ro, "reused", reused);
            cJSON_AddStringToObject(ro, "metric", metric);
        }
        comparison_json(jout, sel, nsel, rho, nu);
    } else {
        printf("measured %d, kept %d measured before\n", n - reused, reused);
        comparison_print(metric, sel, nsel, rho, nu, "random ");
    }
done:
    free(rows);
    free(sel);
    free(xs);
    free(ys);
    free(ids);
    return st;
}

int cli_evaluate(int argc, char **argv) {
    solve_args a;
    int rc = parse_args(2, argc, argv, &a);
    if (rc) return rc < 0 ? MPQ_EXIT_OK : rc;
    mpq_err err = {0};
    mpq_status st;
    mpq_db *db = NULL;
    mpq_job *job = NULL;
    mpq_db_table *t = NULL;
    int64_t *ids = NULL;
    int n_ids = 0;
    cJSON *jout = NULL;
    if ((st = mpq_db_open(a.db, MPQ_DB_READWRITE, &db, &err)) != MPQ_OK) goto done;
    if ((st = mpq_job_open(db, a.job, &job, &err)) != MPQ_OK) goto done;
    mpq_job_set_eval_workers(job, (int)a.workers);
    int64_t job_id = mpq_job_get_row(job)->id;
    if (a.random_n > 0) {
        if (a.json && !(jout = cJSON_CreateObject())) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = evaluate_random(job, &a, jout, &err)) == MPQ_OK && a.json && cli_print_json(stdout, jout))
            st = MPQ_ERR_NOMEM;
        goto done;
    }
    if (a.all) {
        char jid[32];
        snprintf(jid, sizeof jid, "%lld", (long long)job_id);
        if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_SOLUTIONS, jid, &t, &err)) != MPQ_OK) goto done;
        int c_id = -1, c_status = -1;
        for (int c = 0; c < t->n_cols; c++) {
            if (strcmp(t->names[c], "id") == 0) c_id = c;
            if (strcmp(t->names[c], "status") == 0) c_status = c;
        }
        ids = calloc((size_t)t->n_rows + (size_t)a.n_solutions + 1, sizeof *ids);
        if (!ids) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int r = 0; r < t->n_rows && c_id >= 0; r++) {
            const char *sv = c_status >= 0 ? t->cells[(size_t)r * (size_t)t->n_cols + (size_t)c_status] : NULL;
            if (sv && strcmp(sv, "infeasible") == 0) continue;
            ids[n_ids++] = strtoll(t->cells[(size_t)r * (size_t)t->n_cols + (size_t)c_id], NULL, 10);
        }
    } else {
        ids = calloc((size_t)a.n_solutions + 1, sizeof *ids);
        if (!ids) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    for (int i = 0; i < a.n_solutions; i++) {
        int64_t id = 0;
        if (mpq_db_solution_find(db, job_id, a.solutions[i], &id, NULL) != MPQ_OK) {
            long v = 0;
            if (!cli_parse_int(a.solutions[i], 1, INT64_MAX, &v)) {
                st = mpq_err_set(&err, MPQ_ERR_NOTFOUND, "job '%s': no solution '%s'", mpq_job_get_row(job)->name, a.solutions[i]);
                goto done;
            }
            id = v;
        }
        ids[n_ids++] = id;
    }
    if (a.json && !(jout = cJSON_CreateObject())) {
        st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!a.json)
        printf("job '%s': evaluating %d solution(s)%s\n", mpq_job_get_row(job)->name, n_ids,
               a.no_uniform ? "" : " and the uniform baselines");
    if ((st = evaluate_and_compare(job, ids, n_ids, !a.no_uniform, a.o.metric, a.json, jout, &err)) != MPQ_OK) goto done;
    if (a.json) {
        int prc = cli_print_json(stdout, jout);
        if (prc) st = MPQ_ERR_NOMEM;
    }
done:
    cJSON_Delete(jout);
    free(ids);
    mpq_db_table_free(t);
    mpq_job_close(job);
    mpq_db_close(db);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("evaluate", st, &err);
}
