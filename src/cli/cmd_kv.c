/* cmd_kv.c - `mpq kv JOB`: KVTuner-style KV-cache precision search over a job's stored
 * kv_sensitivity metrics (per-block ladder and Pareto pruning, keys-vs-values, clustering,
 * exact (average KV bits, predicted error) frontier, budget picks, measured evaluation with
 * Spearman, joint weight + KV byte budget, KVTuner / mpq config export).
 * The search runs in the library (mpq_kvsearch_run, search/kv_run.c); this file parses the
 * options into a request and prints the report as text, or as JSON (mpq_kvsearch_report_json). */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_kvsearch.h"

static const char *kv_help =
    "usage: mpq kv JOB [--db PATH] [--metric NAME] [--context L[,L2,...]] [--nominal] [--prune]\n"
    "              [--cluster K | --threshold T] [--frontier] [--budget kv-bits=B[,B2]]\n"
    "              [--evaluate [--max-seqs N] [--workers N]] [--joint bytes=N [--batch B]]\n"
    "              [--engine NAME] [--export-kvtuner FILE] [--export-config FILE] [--per-head]\n"
    "              [--json]\n"
    "\n"
    "KV-cache precision search over the per-(block, pair) sensitivities stored by JOB's\n"
    "kv_sensitivity stage. Always prints each block's ladder (pairs by equivalent bits, with and\n"
    "without the fp16 scale/zero overhead, error +- standard error, '*' = on the block's Pareto\n"
    "front) and the keys-vs-values comparison (kXvY against kYvX).\n"
    "\n"
    "  -d, --db PATH           results database (default: $MPQ_DB, else ./mpq.db)\n"
    "  -m, --metric NAME       per-pair error metric (default kv_kl; kv_dloss, ...)\n"
    "  -L, --context L[,..]    context length for the bit accounting (overhead, residual window,\n"
    "                          KIVI's partial key group); 0 = steady state (default). A list is\n"
    "                          used by --joint (one row per L); the rest uses the first value.\n"
    "      --nominal           frontier and budgets in nominal bits (K+V)/2, without overhead\n"
    "      --prune             search only each block's Pareto pairs (stored as artifact kv_prune)\n"
    "      --cluster K         tie blocks into K groups (average linkage on log error; stored as\n"
    "                          artifact kv_clusters); the search gives a group one pair\n"
    "      --threshold T       tie blocks whose average RMS log-error distance is <= T instead\n"
    "      --frontier          print the exact frontier (always stored when computed)\n"
    "      --budget kv-bits=B  the frontier point with the largest average bits <= B (comma list);\n"
    "                          stored as solution kv-bits-B\n"
    "      --evaluate          measure every frontier point and every uniform pair (weights FP) on\n"
    "                          the job's evaluation windows against FP; store the evaluations;\n"
    "                          print Spearman(predicted, measured) and the budget comparisons\n"
    "      --max-seqs N        at most N evaluation windows (default: all of the spec's)\n"
    "      --workers N         threads of --evaluate, each taking whole batches of windows\n"
    "                          (default: the number of processors; the numbers do not depend on N)\n"
    "      --joint bytes=N     weights + KV cache under N total bytes (KV = batch x L x bytes per\n"
    "                          token), one ILP over linear layers (stored metric kl; plus f32) and\n"
    "                          KV blocks (plus k16v16); assumes the predicted KLs add up\n"
    "      --batch B           sequences for --joint (default 1)\n"
    "      --engine NAME       search only the pairs serving engine NAME offers as they are\n"
    "                          (sglang, trtllm, vllm, llamacpp; K and V widths of its KV dtypes,\n"
    "                          K = V where it has one dtype per layer): frontier, budgets, evaluate\n"
    "      --export-kvtuner F  KVTuner layer config of the first --budget pick: F ending in .yaml\n"
    "                          or .yml gets the YAML KVTuner's per_layer_config_path reads\n"
    "                          (integer keys \"0:\", with nbits_key / nbits_value), any other F the JSON\n"
    "                          {\"0\": {\"nbits_key\": 8, \"nbits_value\": 4}, ..} (string keys)\n"
    "      --export-config F   mpq config (weights f32, kv.layers) of the first --budget pick\n"
    "                          (kv scheme saq: also F.bases.json, the job's stored bases, which\n"
    "                          the config names relative to its own directory)\n";
static const char *kv_help2 = /* (two strings: ISO C caps a literal at 4095 characters) */
    "      --per-head          search per (block, KV head) items on the per-head metric (the\n"
    "                          metric with \"_head\", stored when the spec has kv.per_head): ladder,\n"
    "                          frontier, budgets (solutions kv-bits-B-heads), --evaluate and\n"
    "                          --export-config carry one pair per KV head; --export-kvtuner\n"
    "                          writes KVTuner's per-head YAML; --joint takes (block, head) items\n"
    "      --json              JSON output: one object with the sections above (numbers that are\n"
    "                          NaN or infinite, e.g. an unknown standard error, are null)\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 I/O, 5 invalid value, 7 database error, 8 solver error,\n"
    "9 no frontier point within a budget / joint budget infeasible, 10 job or metric not found.\n";

#define MAX_LIST 16

typedef struct kv_args {
    const char *db_path, *job, *metric, *export_kvtuner, *export_config, *engine;
    int64_t contexts[MAX_LIST];
    int n_contexts;
    double budgets[MAX_LIST];
    int n_budgets;
    bool nominal, prune, frontier, evaluate, json, per_head;
    int cluster;
    double threshold;
    bool has_threshold;
    double joint_bytes;
    bool joint;
    long batch, max_seqs, workers;
} kv_args;

/* "a,b,c" of doubles after an optional "prefix=" */
static bool parse_list(const char *s, const char *prefix, double *out, int *n) {
    size_t pl = prefix ? strlen(prefix) : 0;
    if (prefix && strncmp(s, prefix, pl) == 0 && s[pl] == '=') s += pl + 1;
    else if (prefix && strchr(s, '='))
        return false;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n >= MAX_LIST || !cli_parse_double(tok, &out[*n]) || !(out[*n] >= 0) || isinf(out[*n])) return false;
        (*n)++;
    }
    return *n > 0;
}

static int parse_args(int argc, char **argv, kv_args *a) {
    enum { O_NOMINAL = 1000, O_PRUNE, O_CLUSTER, O_THRESHOLD, O_FRONTIER, O_BUDGET, O_EVALUATE, O_MAXSEQS, O_JOINT,
           O_BATCH, O_EXPK, O_EXPC, O_JSON, O_ENGINE, O_WORKERS, O_PERHEAD };
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'},          {"metric", required_argument, 0, 'm'},
        {"context", required_argument, 0, 'L'},     {"nominal", no_argument, 0, O_NOMINAL},
        {"engine", required_argument, 0, O_ENGINE}, {"prune", no_argument, 0, O_PRUNE},         {"cluster", required_argument, 0, O_CLUSTER},
        {"threshold", required_argument, 0, O_THRESHOLD}, {"frontier", no_argument, 0, O_FRONTIER},
        {"budget", required_argument, 0, O_BUDGET}, {"evaluate", no_argument, 0, O_EVALUATE},
        {"max-seqs", required_argument, 0, O_MAXSEQS}, {"workers", required_argument, 0, O_WORKERS}, {"joint", required_argument, 0, O_JOINT},
        {"batch", required_argument, 0, O_BATCH},   {"export-kvtuner", required_argument, 0, O_EXPK},
        {"export-config", required_argument, 0, O_EXPC}, {"json", no_argument, 0, O_JSON}, {"per-head", no_argument, 0, O_PERHEAD},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->db_path = cli_default_db();
    a->metric = "kv_kl";
    a->batch = 1;
    a->n_contexts = 1;
    int c;
    double tmp[MAX_LIST];
    long lv;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:m:L:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->db_path = optarg; break;
        case 'm': a->metric = optarg; break;
        case 'L':
            if (!parse_list(optarg, NULL, tmp, &a->n_contexts))
                return cli_usage_error("kv", "--context: expected integers >= 0 (comma list), got '%s'", optarg);
            for (int i = 0; i < a->n_contexts; i++) {
                if (tmp[i] != floor(tmp[i]) || tmp[i] > 1e9)
                    return cli_usage_error("kv", "--context: expected integers in 0..1e9, got '%s'", optarg);
                a->contexts[i] = (int64_t)tmp[i];
            }
            break;
        case O_NOMINAL: a->nominal = true; break;
        case O_PRUNE: a->prune = true; break;
        case O_ENGINE: a->engine = optarg; break;
        case O_CLUSTER:
            if (!cli_parse_int(optarg, 1, 100000, &lv)) return cli_usage_error("kv", "--cluster: expected a positive integer, got '%s'", optarg);
            a->cluster = (int)lv;
            break;
        case O_THRESHOLD:
            if (!cli_parse_double(optarg, &a->threshold) || !(a->threshold >= 0) || isinf(a->threshold))
                return cli_usage_error("kv", "--threshold: expected a number >= 0, got '%s'", optarg);
            a->has_threshold = true;
            break;
        case O_FRONTIER: a->frontier = true; break;
        case O_BUDGET:
            if (!parse_list(optarg, "kv-bits", a->budgets, &a->n_budgets))
                return cli_usage_error("kv", "--budget: expected kv-bits=B[,B2...] with B >= 0, got '%s'", optarg);
            break;
        case O_EVALUATE: a->evaluate = true; break;
        case O_WORKERS:
            if (!cli_parse_int(optarg, 1, MPQ_EXEC_MAX_WORKERS, &a->workers))
                return cli_usage_error("kv", "bad --workers '%s' (1..%d)", optarg, MPQ_EXEC_MAX_WORKERS);
            break;
        case O_MAXSEQS:
            if (!cli_parse_int(optarg, 1, 1000000, &a->max_seqs)) return cli_usage_error("kv", "--max-seqs: expected a positive integer, got '%s'", optarg);
            break;
        case O_JOINT: {
            int n = 0;
            if (!parse_list(optarg, "bytes", tmp, &n) || n != 1 || strncmp(optarg, "bytes=", 6) != 0)
                return cli_usage_error("kv", "--joint: expected bytes=N, got '%s'", optarg);
            a->joint_bytes = tmp[0];
            a->joint = true;
            break;
        }
        case O_BATCH:
            if (!cli_parse_int(optarg, 1, 1000000, &a->batch)) return cli_usage_error("kv", "--batch: expected a positive integer, got '%s'", optarg);
            break;
        case O_EXPK: a->export_kvtuner = optarg; break;
        case O_EXPC: a->export_config = optarg; break;
        case O_JSON: a->json = true; break;
        case O_PERHEAD: a->per_head = true; break;
        case 'h': fputs(kv_help, stdout); fputs(kv_help2, stdout); return -1;
        default: fputs(kv_help, stderr); fputs(kv_help2, stderr); return MPQ_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) return cli_usage_error("kv", "expected one JOB (name or id); see mpq kv --help");
    a->job = argv[optind];
    if (a->cluster && a->has_threshold) return cli_usage_error("kv", "--cluster and --threshold exclude each other");
    if ((a->export_kvtuner || a->export_config) && a->n_budgets == 0)
        return cli_usage_error("kv", "--export-kvtuner / --export-config need --budget kv-bits=B");
    if (a->joint)
        for (int i = 0; i < a->n_contexts; i++)
            if (a->contexts[i] < 1) return cli_usage_error("kv", "--joint needs --context L with L > 0");
    return MPQ_EXIT_OK;
}


/* ---- text output ----------------------------------------------------------------------------- */

static void print_assign(const mpq_kvsearch_table *t, const int *idx) {
    for (int b = 0; b < t->n_blocks; b++) printf("%s%s", b ? " " : "", t->pair_names[idx[b]]);
}

/* "blk.3.kv", or "blk.3.kv.h1" for item 3*H+1 of a per-head table */
static const char *item_name(const mpq_kvsearch_table *t, int b, char *buf, size_t n) {
    if (t->n_heads > 0) snprintf(buf, n, "blk.%d.kv.h%d", b / t->n_heads, b % t->n_heads);
    else snprintf(buf, n, "blk.%d.kv", b);
    return buf;
}

static void print_ladder(const mpq_kvsearch_report *r) {
    const mpq_kvsearch_table *t = r->table;
    int nb = t->n_blocks, np = t->n_pairs;
    long long L = (long long)r->context_len;
    printf("job '%s': %d blocks x %d pairs, metric %s, scheme %s group %d residual %d, kv_dim %d, context %lld%s\n",
           r->job_name, nb, np, t->metric, mpq_kv_mode_name(t->scheme.mode), t->scheme.group_size, t->scheme.residual,
           t->kv_dim, L, L <= 0 ? " (steady state)" : "");
    printf("\nper-block ladder (bits = (K+V)/2; '*' = on the block's Pareto front in %s bits; %d of %d kept)\n",
           r->overhead ? "overhead" : "nominal", r->n_kept, nb * np);
    for (int b = 0; b < nb; b++) {
        char nm[48];
        printf("  %s\n", item_name(t, b, nm, sizeof nm));
        for (int x = 0; x < np; x++) {
            int j = r->ladder[(size_t)b * np + x];
            size_t k = (size_t)b * np + j;
            printf("    %c %-6s %6.3f bits (%4.1f nominal)  %s %-10.4g +- %.2g\n", r->keep[k] ? '*' : ' ',
                   t->pair_names[j], r->pair_bits[j], r->pair_bits_nominal[j], t->metric, t->err[k], t->se[k]);
        }
    }
}

static void print_asymmetry(const mpq_kvsearch_report *r, bool details) {
    const mpq_kvsearch_table *t = r->table;
    int np = t->n_pairs;
    if (!details) {
        printf("keys vs values: keys more sensitive in %d of %d kXvY/kYvX comparisons (%d beyond 2 se, values %d)\n",
               r->n_keys_more, r->n_cmp, r->n_keys_beyond_2se, r->n_values_beyond_2se);
        return;
    }
    printf("\nkeys vs values (diff = err(kYvX) - err(kXvY), X > Y; > 0: keys more sensitive; se of the\n"
           "difference assumes independence, which overstates it for paired measurements)\n");
    for (int i = 0; i < r->n_cmp; i++) {
        const mpq_kvsearch_kv_cmp *c = &r->cmp[i];
        char nm[48];
        printf("  %s  %-5s %-10.4g vs %-5s %-10.4g  diff %+.4g +- %.2g%s\n", item_name(t, c->block, nm, sizeof nm),
               t->pair_names[c->hi_k],
               t->err[(size_t)c->block * np + c->hi_k], t->pair_names[c->lo_k], t->err[(size_t)c->block * np + c->lo_k],
               c->diff, c->se, fabs(c->diff) > 2 * c->se ? (c->diff > 0 ? "  keys" : "  values") : "");
    }
    if (r->n_cmp)
        printf("  summary: keys more sensitive in %d of %d comparisons (%d beyond 2 se; values more sensitive "
               "beyond 2 se: %d) -> %s\n",
               r->n_keys_more, r->n_cmp, r->n_keys_beyond_2se, r->n_values_beyond_2se,
               r->verdict == MPQ_KVSEARCH_VERDICT_KEYS     ? "keys ARE more sensitive for this model"
               : r->verdict == MPQ_KVSEARCH_VERDICT_VALUES ? "values are more sensitive for this model"
                                                           : "no clear difference");
    else
        printf("  no kXvY / kYvX pair measured\n");
}

static void print_clusters(const mpq_kvsearch_report *r, const kv_args *a) {
    int nb = r->table->n_blocks;
    printf("\nclusters (average linkage on RMS log-%s distance over Pareto pairs; %s): %d groups\n", r->table->metric,
           a->cluster ? "target count" : "threshold", r->n_groups);
    for (int g = 0; g < r->n_groups; g++) {
        printf("  group %d:", g);
        for (int b = 0; b < nb; b++)
            if (r->group[b] == g) {
                char nm[48];
                printf(" %s", item_name(r->table, b, nm, sizeof nm));
            }
        printf("\n");
    }
    printf("  block distances:\n");
    for (int x = 0; x < nb; x++) {
        printf("   ");
        for (int y = 0; y < nb; y++) printf(" %5.2f", r->distance[(size_t)x * nb + y]);
        printf("\n");
    }
}

static void print_frontier(const mpq_kvsearch_report *r, const kv_args *a) {
    const mpq_kvsearch_frontier *f = r->frontier;
    printf("\nexact frontier of (average KV bits, total predicted %s): %zu points, %.3f s%s\n", r->table->metric,
           f->n_points, f->seconds, a->frontier ? "" : " (--frontier prints them)");
    if (!a->frontier) return;
    printf("  %4s %9s %8s %12s %10s  pairs per block\n", "#", "bits_ovh", "nominal", "predicted", "+- se");
    for (size_t k = 0; k < f->n_points; k++) {
        const mpq_kvsearch_point *p = &f->points[k];
        printf("  %4zu %9.4f %8.3f %12.5g %10.2g  ", k, p->bits_overhead, p->bits_nominal, p->loss, p->loss_se);
        print_assign(r->table, p->pair);
        printf("\n");
    }
}

static void print_budgets(const mpq_kvsearch_report *r) {
    printf("\nbudget picks (%s bits):\n", r->overhead ? "with overhead" : "nominal");
    for (int i = 0; i < r->n_picks; i++) {
        const mpq_kvsearch_pick *pk = &r->picks[i];
        const mpq_kvsearch_point *p = &r->frontier->points[pk->point];
        printf("  kv-bits=%g -> point %zu: %.4f bits (%.3f nominal, %.4f with overhead), predicted %.5g: ", pk->budget,
               pk->point, p->bits, p->bits_nominal, p->bits_overhead, p->loss);
        print_assign(r->table, p->pair);
        printf("  [solution %s]\n", pk->name);
    }
}

static void print_evaluation(const mpq_kvsearch_report *r, const kv_args *a) {
    const mpq_kvsearch_table *t = r->table;
    const mpq_kvsearch_frontier *f = r->frontier;
    printf("\nmeasured on %s windows, weights FP, KL vs FP (stored as evaluations):\n", r->eval_source);
    for (size_t k = 0; a->frontier && k < f->n_points; k++) {
        const mpq_eval_stats *es = &r->point_eval[k];
        printf("  point %3zu  %.4f bits  predicted %-10.4g measured %-10.4g +- %.2g  top1 %.4f\n", k, f->points[k].bits,
               f->points[k].loss, es->kl_mean, es->kl_se, es->top1);
    }
    printf("  Spearman(predicted, measured KL) along the frontier: %.4f over %zu points\n", r->spearman, f->n_points);
    printf("  uniform pairs:\n");
    for (int j = 0; j < t->n_pairs; j++) {
        const mpq_eval_stats *es = &r->uniform_eval[j];
        printf("    %-6s %.4f bits  measured KL %-10.4g +- %.2g  top1 %.4f\n", t->pair_names[j], r->uniform_bits[j],
               es->kl_mean, es->kl_se, es->top1);
    }
    for (int i = 0; i < r->n_picks; i++) {
        const mpq_kvsearch_pick *pk = &r->picks[i];
        double mixed = r->point_eval[pk->point].kl_mean;
        printf("  kv-bits=%g: mixed (%.4f bits) measured KL %.4g vs uniform pairs with >= bits:", pk->budget,
               f->points[pk->point].bits, mixed);
        for (int j = 0; j < t->n_pairs; j++)
            if (pk->uniform_compared[j])
                printf(" %s %.4g%s", t->pair_names[j], r->uniform_eval[j].kl_mean,
                       mixed < r->uniform_eval[j].kl_mean ? "" : "(!)");
        printf("\n    -> mixed lower than %d of %d uniform pairs of equal or higher bits%s\n", pk->n_uniform_beaten,
               pk->n_uniform_compared, pk->n_uniform_beaten == pk->n_uniform_compared ? " (all)" : "");
    }
}

static void print_joint(const mpq_kvsearch_report *r, const kv_args *a) {
    printf("\njoint weights + KV under %.0f bytes (batch %ld; fixed %lld bytes of embeddings/norms; ILP; loss = "
           "sum of predicted KLs, assumed additive)\n  %8s %12s %12s %9s %9s %11s %11s %8s\n",
           a->joint_bytes, a->batch, (long long)r->joint_fixed_bytes, "context", "weight B", "KV B", "w bits",
           "kv bits", "loss w", "loss kv", "status");
    for (int i = 0; i < r->n_joint; i++) {
        const mpq_kvsearch_joint_row *row = &r->joint[i];
        const mpq_kvsearch_joint_result *x = &row->result;
        if (!row->feasible) {
            printf("  %8lld  infeasible (%s)\n", (long long)row->context_len, row->message);
            continue;
        }
        printf("  %8lld %12.0f %12.0f %9.3f %9.3f %11.4g %11.4g %8s\n", (long long)row->context_len, x->weight_bytes,
               x->kv_bytes, x->avg_weight_bits, x->avg_kv_bits, x->loss_weights, x->loss_kv,
               x->status == MPQ_SOLVE_OPTIMAL ? "optimal" : "feasible");
    }
}

static void print_text(const mpq_kvsearch_report *r, const kv_args *a) {
    const mpq_kvsearch_table *t = r->table;
    bool details = a->prune || !(a->frontier || a->n_budgets || a->evaluate || a->joint || a->cluster || a->has_threshold);
    if (t->n_heads > 0)
        printf("per-head search: %d items = %d blocks x %d KV heads (head_dim %d); 'block' below means item\n",
               t->n_blocks, t->n_blocks / t->n_heads, t->n_heads, t->kv_dim);
    if (details)
        print_ladder(r);
    else
        printf("job '%s': %d blocks x %d pairs, metric %s, %d of %d pairs on their block's Pareto front "
               "(--prune prints the ladder)\n",
               r->job_name, t->n_blocks, t->n_pairs, t->metric, r->n_kept, t->n_blocks * t->n_pairs);
    print_asymmetry(r, details);
    if (r->n_groups) print_clusters(r, a);
    if (r->frontier) print_frontier(r, a);
    if (r->picks) print_budgets(r);
    if (r->evaluated) print_evaluation(r, a);
    if (r->joint) print_joint(r, a);
}

/* ---- the command ----------------------------------------------------------------------------- */

static mpq_kvsearch_request make_request(const kv_args *a) {
    mpq_kvsearch_request rq = mpq_kvsearch_request_default();
    rq.metric = a->metric;
    rq.contexts = a->contexts;
    rq.n_contexts = a->n_contexts;
    rq.nominal = a->nominal;
    rq.prune = a->prune;
    rq.cluster = a->cluster;
    rq.threshold = a->has_threshold ? a->threshold : -1;
    rq.frontier = a->frontier || !a->joint; /* without --joint the frontier is always computed */
    rq.budgets = a->budgets;
    rq.n_budgets = a->n_budgets;
    rq.evaluate = a->evaluate;
    rq.max_seqs = (int)a->max_seqs;
    rq.eval_workers = (int)a->workers;
    rq.joint = a->joint;
    rq.joint_bytes = a->joint_bytes;
    rq.batch = a->batch;
    rq.export_kvtuner = a->export_kvtuner;
    rq.export_config = a->export_config;
    rq.engine = a->engine;
    rq.per_head = a->per_head;
    return rq;
}

int cli_kv(int argc, char **argv) {
    kv_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == -1) return MPQ_EXIT_OK;
    if (rc != MPQ_EXIT_OK) return rc;
    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_kvsearch_report *r = NULL;
    mpq_kvsearch_request rq = make_request(&a);
    mpq_status st = mpq_db_open(a.db_path, MPQ_DB_READWRITE, &db, &err);
    if (st == MPQ_OK) st = mpq_kvsearch_run(db, a.job, &rq, &r, &err);
    if (st == MPQ_OK && a.json) {
        char *text = mpq_kvsearch_report_json(r);
        if (!text) st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
        else if (printf("%s\n", text) < 0) st = mpq_err_set(&err, MPQ_ERR_IO, "stdout: write failed");
        free(text);
    } else if (r && !a.json) {
        print_text(r, &a); /* after a failure: what was done before it, then the error */
    }
    mpq_kvsearch_report_free(r);
    mpq_db_close(db);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("kv", st, &err);
}
