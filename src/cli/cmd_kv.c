/* cmd_kv.c - `mpq kv JOB`: KVTuner-style KV-cache precision search over a job's stored
 * kv_sensitivity metrics (per-block ladder and Pareto pruning, keys-vs-values, clustering,
 * exact (average KV bits, predicted error) frontier, budget picks, measured evaluation with
 * Spearman, joint weight + KV byte budget, KVTuner / mpq config export).
 * Library side: include/mpq/mpq_kvsearch.h (search/kv_search.c). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_kvsearch.h"

static const char *kv_help =
    "usage: mpq kv JOB [--db PATH] [--metric NAME] [--context L[,L2,...]] [--nominal] [--prune]\n"
    "              [--cluster K | --threshold T] [--frontier] [--budget kv-bits=B[,B2]]\n"
    "              [--evaluate [--max-seqs N]] [--joint bytes=N [--batch B]]\n"
    "              [--export-kvtuner FILE] [--export-config FILE] [--json]\n"
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
    "      --joint bytes=N     weights + KV cache under N total bytes (KV = batch x L x bytes per\n"
    "                          token), one ILP over linear layers (stored metric kl; plus f32) and\n"
    "                          KV blocks (plus k16v16); assumes the predicted KLs add up\n"
    "      --batch B           sequences for --joint (default 1)\n"
    "      --export-kvtuner F  KVTuner layer config {\"0\": {\"nbits_key\": 8, \"nbits_value\": 4}, ..}\n"
    "                          of the first --budget pick\n"
    "      --export-config F   mpq config (weights f32, kv.layers) of the first --budget pick\n"
    "      --json              JSON output\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 I/O, 5 invalid value, 7 database error, 8 solver error,\n"
    "9 no frontier point within a budget / joint budget infeasible, 10 job or metric not found.\n";

#define MAX_LIST 16

typedef struct kv_args {
    const char *db_path, *job, *metric, *export_kvtuner, *export_config;
    int64_t contexts[MAX_LIST];
    int n_contexts;
    double budgets[MAX_LIST];
    int n_budgets;
    bool nominal, prune, frontier, evaluate, json;
    int cluster;
    double threshold;
    bool has_threshold;
    double joint_bytes;
    bool joint;
    long batch, max_seqs;
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
           O_BATCH, O_EXPK, O_EXPC, O_JSON };
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'},          {"metric", required_argument, 0, 'm'},
        {"context", required_argument, 0, 'L'},     {"nominal", no_argument, 0, O_NOMINAL},
        {"prune", no_argument, 0, O_PRUNE},         {"cluster", required_argument, 0, O_CLUSTER},
        {"threshold", required_argument, 0, O_THRESHOLD}, {"frontier", no_argument, 0, O_FRONTIER},
        {"budget", required_argument, 0, O_BUDGET}, {"evaluate", no_argument, 0, O_EVALUATE},
        {"max-seqs", required_argument, 0, O_MAXSEQS}, {"joint", required_argument, 0, O_JOINT},
        {"batch", required_argument, 0, O_BATCH},   {"export-kvtuner", required_argument, 0, O_EXPK},
        {"export-config", required_argument, 0, O_EXPC}, {"json", no_argument, 0, O_JSON},
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
        case 'h': fputs(kv_help, stdout); return -1;
        default: fputs(kv_help, stderr); return MPQ_EXIT_USAGE;
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

static int write_text(const char *path, const char *text, mpq_err *err) {
    FILE *f = fopen(path, "w");
    if (!f) return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open for writing", path);
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    if (fclose(f) != 0) ok = false;
    return ok ? MPQ_OK : mpq_err_set(err, MPQ_ERR_IO, "%s: write failed", path);
}

static cJSON *pairs_json(const mpq_kvsearch_table *t, const int *idx) {
    cJSON *a = cJSON_CreateArray();
    for (int b = 0; a && b < t->n_blocks; b++) cJSON_AddItemToArray(a, cJSON_CreateString(t->pair_names[idx[b]]));
    return a;
}

static void print_assign(const mpq_kvsearch_table *t, const int *idx) {
    for (int b = 0; b < t->n_blocks; b++) printf("%s%s", b ? " " : "", t->pair_names[idx[b]]);
}

/* Evaluation of one assignment (by pair index); returns status. */
static mpq_status eval_one(mpq_db *db, int64_t job_id, mpq_kvsearch_eval *ev, const mpq_kvsearch_table *t,
                           const int *idx, int64_t sol_id, mpq_eval_stats *st_out, mpq_err *err) {
    mpq_kv_pair *pairs = calloc((size_t)t->n_blocks, sizeof *pairs);
    if (!pairs) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int b = 0; b < t->n_blocks; b++) pairs[b] = t->pairs[idx[b]];
    mpq_status st = mpq_kvsearch_eval_run(ev, pairs, &t->scheme, st_out, err);
    if (st == MPQ_OK) st = mpq_kvsearch_eval_store(db, job_id, ev, pairs, &t->scheme, st_out, sol_id, NULL, err);
    free(pairs);
    return st;
}

int cli_kv(int argc, char **argv) {
    kv_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == -1) return MPQ_EXIT_OK;
    if (rc != MPQ_EXIT_OK) return rc;
    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_kvsearch_table *t = NULL;
    mpq_kvsearch_frontier *f = NULL;
    mpq_kvsearch_kv_cmp *cmp = NULL;
    mpq_kvsearch_eval *ev = NULL;
    mpq_model *model = NULL;
    bool *keep = NULL;
    int *group = NULL, *idx = NULL, n_cmp = 0, n_groups = 0;
    int64_t *sol_ids = NULL;
    size_t *picks = NULL;
    double *meas = NULL;
    char *text = NULL;
    cJSON *out = a.json ? cJSON_CreateObject() : NULL;
    mpq_status st;
    mpq_db_job job;
    int64_t L = a.contexts[0];
    bool ovh = !a.nominal;
    if (a.json && !out) return cli_fail("kv", MPQ_ERR_NOMEM, &(mpq_err){.msg = "out of memory"});

    if ((st = mpq_db_open(a.db_path, MPQ_DB_READWRITE, &db, &err)) != MPQ_OK) goto done;
    if ((st = mpq_db_job_find(db, a.job, &job, &err)) != MPQ_OK) goto done;
    if ((st = mpq_kvsearch_table_load(db, job.id, a.metric, &t, &err)) != MPQ_OK) goto done;
    int nb = t->n_blocks, np = t->n_pairs;
    if (!(keep = calloc((size_t)nb * np, sizeof *keep)) || !(group = calloc((size_t)nb, sizeof *group)) ||
        !(idx = calloc((size_t)nb, sizeof *idx))) {
        st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }

    /* 1. ladder + pruning (pruning in the resource of the search) */
    int n_kept = 0;
    if ((st = mpq_kvsearch_prune(t, L, ovh, keep, &n_kept, &err)) != MPQ_OK) goto done;
    if (a.prune && (st = mpq_kvsearch_prune_store(db, job.id, t, keep, L, ovh, &err)) != MPQ_OK) goto done;
    int64_t upb_o = mpq_kvsearch_units_per_bit(t, L, true);
    bool details = a.prune || !(a.frontier || a.n_budgets || a.evaluate || a.joint || a.cluster || a.has_threshold);
    if (!a.json && !details)
        printf("job '%s': %d blocks x %d pairs, metric %s, %d of %d pairs on their block's Pareto front "
               "(--prune prints the ladder)\n", job.name, nb, np, t->metric, n_kept, nb * np);
    if (!a.json && details) {
        printf("job '%s': %d blocks x %d pairs, metric %s, scheme %s group %d residual %d, kv_dim %d, context %lld%s\n",
               job.name, nb, np, t->metric, mpq_kv_mode_name(t->scheme.mode), t->scheme.group_size,
               t->scheme.residual, t->kv_dim, (long long)L, L <= 0 ? " (steady state)" : "");
        printf("\nper-block ladder (bits = (K+V)/2; '*' = on the block's Pareto front in %s bits; %d of %d kept)\n",
               ovh ? "overhead" : "nominal", n_kept, nb * np);
        for (int b = 0; b < nb; b++) {
            printf("  blk.%d.kv\n", b);
            /* order pairs by (units, error) */
            int ord[256];
            for (int j = 0; j < np; j++) ord[j] = j;
            for (int x = 1; x < np; x++)
                for (int y = x; y > 0; y--) {
                    int p = ord[y - 1], q = ord[y];
                    int64_t up = mpq_kvsearch_pair_units(t, t->pairs[p], L, true), uq = mpq_kvsearch_pair_units(t, t->pairs[q], L, true);
                    if (up > uq || (up == uq && t->err[(size_t)b * np + p] > t->err[(size_t)b * np + q])) {
                        ord[y - 1] = q;
                        ord[y] = p;
                    } else
                        break;
                }
            for (int x = 0; x < np; x++) {
                int j = ord[x];
                double e = t->err[(size_t)b * np + j], s = t->se[(size_t)b * np + j];
                printf("    %c %-6s %6.3f bits (%4.1f nominal)  %s %-10.4g +- %.2g\n", keep[(size_t)b * np + j] ? '*' : ' ',
                       t->pair_names[j], (double)mpq_kvsearch_pair_units(t, t->pairs[j], L, true) / (double)upb_o,
                       (double)(t->pairs[j].k_bits + t->pairs[j].v_bits) / 2.0, t->metric, e, s);
            }
        }
    } else {
        cJSON *lad = cJSON_AddArrayToObject(out, "blocks");
        for (int b = 0; lad && b < nb; b++) {
            cJSON *bo = cJSON_CreateObject(), *ps = cJSON_AddArrayToObject(bo, "pairs");
            cJSON_AddItemToArray(lad, bo);
            cJSON_AddNumberToObject(bo, "block", b);
            for (int j = 0; ps && j < np; j++) {
                cJSON *po = cJSON_CreateObject();
                cJSON_AddItemToArray(ps, po);
                cJSON_AddStringToObject(po, "pair", t->pair_names[j]);
                cJSON_AddNumberToObject(po, "bits", (double)mpq_kvsearch_pair_units(t, t->pairs[j], L, true) / (double)upb_o);
                cJSON_AddNumberToObject(po, "bits_nominal", (t->pairs[j].k_bits + t->pairs[j].v_bits) / 2.0);
                double e = t->err[(size_t)b * np + j], s = t->se[(size_t)b * np + j];
                if (isnan(e)) cJSON_AddNullToObject(po, "error"); else cJSON_AddNumberToObject(po, "error", e);
                if (isnan(s)) cJSON_AddNullToObject(po, "se"); else cJSON_AddNumberToObject(po, "se", s);
                cJSON_AddBoolToObject(po, "pareto", keep[(size_t)b * np + j]);
            }
        }
    }

    /* K vs V */
    if ((st = mpq_kvsearch_asymmetry(t, &cmp, &n_cmp, &err)) != MPQ_OK) goto done;
    int n_k = 0, n_k_sig = 0, n_v_sig = 0;
    for (int i = 0; i < n_cmp; i++) {
        n_k += cmp[i].diff > 0;
        n_k_sig += cmp[i].diff > 2 * cmp[i].se;
        n_v_sig += -cmp[i].diff > 2 * cmp[i].se;
    }
    if (!a.json && details) {
        printf("\nkeys vs values (diff = err(kYvX) - err(kXvY), X > Y; > 0: keys more sensitive; se of the\n"
               "difference assumes independence, which overstates it for paired measurements)\n");
        for (int i = 0; i < n_cmp; i++)
            printf("  blk.%d.kv  %-5s %-10.4g vs %-5s %-10.4g  diff %+.4g +- %.2g%s\n", cmp[i].block,
                   t->pair_names[cmp[i].hi_k], t->err[(size_t)cmp[i].block * np + cmp[i].hi_k], t->pair_names[cmp[i].lo_k],
                   t->err[(size_t)cmp[i].block * np + cmp[i].lo_k], cmp[i].diff, cmp[i].se,
                   fabs(cmp[i].diff) > 2 * cmp[i].se ? (cmp[i].diff > 0 ? "  keys" : "  values") : "");
        if (n_cmp)
            printf("  summary: keys more sensitive in %d of %d comparisons (%d beyond 2 se; values more sensitive "
                   "beyond 2 se: %d) -> %s\n",
                   n_k, n_cmp, n_k_sig, n_v_sig,
                   n_k_sig > n_v_sig && 2 * n_k > n_cmp ? "keys ARE more sensitive for this model"
                   : n_v_sig > n_k_sig && 2 * n_k < n_cmp ? "values are more sensitive for this model"
                                                          : "no clear difference");
        else
            printf("  no kXvY / kYvX pair measured\n");
    } else if (!a.json) {
        printf("keys vs values: keys more sensitive in %d of %d kXvY/kYvX comparisons (%d beyond 2 se, values %d)\n",
               n_k, n_cmp, n_k_sig, n_v_sig);
    } else {
        cJSON *ko = cJSON_AddObjectToObject(out, "keys_vs_values");
        cJSON_AddNumberToObject(ko, "comparisons", n_cmp);
        cJSON_AddNumberToObject(ko, "keys_more_sensitive", n_k);
        cJSON_AddNumberToObject(ko, "keys_beyond_2se", n_k_sig);
        cJSON_AddNumberToObject(ko, "values_beyond_2se", n_v_sig);
    }

    /* 2. clusters */
    if (a.cluster || a.has_threshold) {
        if ((st = mpq_kvsearch_cluster(t, keep, a.cluster, a.threshold, group, &n_groups, &err)) != MPQ_OK) goto done;
        if ((st = mpq_kvsearch_groups_store(db, job.id, t, group, n_groups, a.cluster, a.threshold, &err)) != MPQ_OK)
            goto done;
        if (!a.json) {
            printf("\nclusters (average linkage on RMS log-%s distance over Pareto pairs; %s): %d groups\n", t->metric,
                   a.cluster ? "target count" : "threshold", n_groups);
            for (int g = 0; g < n_groups; g++) {
                printf("  group %d:", g);
                for (int b = 0; b < nb; b++)
                    if (group[b] == g) printf(" blk.%d", b);
                printf("\n");
            }
            printf("  block distances:\n");
            for (int x = 0; x < nb; x++) {
                printf("   ");
                for (int y = 0; y < nb; y++) printf(" %5.2f", mpq_kvsearch_distance(t, keep, x, y));
                printf("\n");
            }
        } else {
            cJSON *ga = cJSON_AddArrayToObject(out, "groups");
            for (int b = 0; ga && b < nb; b++) cJSON_AddItemToArray(ga, cJSON_CreateNumber(group[b]));
        }
    }

    /* 3. frontier */
    bool need_frontier = a.frontier || a.n_budgets || a.evaluate || (!a.joint);
    if (need_frontier) {
        mpq_kvsearch_opts o = mpq_kvsearch_opts_default();
        o.context_len = L;
        o.overhead = ovh;
        o.keep = a.prune ? keep : NULL;
        if (n_groups) {
            o.group = group;
            o.n_groups = n_groups;
        }
        if ((st = mpq_kvsearch_frontier_compute(t, &o, &f, &err)) != MPQ_OK) goto done;
        if ((st = mpq_kvsearch_frontier_store(db, job.id, t, f, NULL, &err)) != MPQ_OK) goto done;
        if (!a.json) {
            printf("\nexact frontier of (average KV bits, total predicted %s): %zu points, %.3f s%s\n", t->metric,
                   f->n_points, f->seconds, a.frontier ? "" : " (--frontier prints them)");
            if (a.frontier) {
                printf("  %4s %9s %8s %12s %10s  pairs per block\n", "#", "bits_ovh", "nominal", "predicted", "+- se");
                for (size_t k = 0; k < f->n_points; k++) {
                    const mpq_kvsearch_point *p = &f->points[k];
                    printf("  %4zu %9.4f %8.3f %12.5g %10.2g  ", k, p->bits_overhead, p->bits_nominal, p->loss, p->loss_se);
                    print_assign(t, p->pair);
                    printf("\n");
                }
            }
        } else {
            cJSON *fa = cJSON_AddArrayToObject(out, "frontier");
            for (size_t k = 0; fa && k < f->n_points; k++) {
                cJSON *po = cJSON_CreateObject();
                cJSON_AddItemToArray(fa, po);
                cJSON_AddNumberToObject(po, "bits", f->points[k].bits);
                cJSON_AddNumberToObject(po, "bits_overhead", f->points[k].bits_overhead);
                cJSON_AddNumberToObject(po, "bits_nominal", f->points[k].bits_nominal);
                cJSON_AddNumberToObject(po, "predicted", f->points[k].loss);
                cJSON_AddItemToObject(po, "pairs", pairs_json(t, f->points[k].pair));
            }
        }
    }

    /* budget picks */
    if (a.n_budgets) {
        picks = calloc((size_t)a.n_budgets, sizeof *picks);
        sol_ids = calloc((size_t)a.n_budgets, sizeof *sol_ids);
        if (!picks || !sol_ids) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        cJSON *ba = a.json ? cJSON_AddArrayToObject(out, "budgets") : NULL;
        if (!a.json) printf("\nbudget picks (%s bits):\n", ovh ? "with overhead" : "nominal");
        for (int i = 0; i < a.n_budgets; i++) {
            picks[i] = mpq_kvsearch_frontier_at_bits(f, a.budgets[i]);
            if (picks[i] == SIZE_MAX) {
                st = mpq_err_set(&err, MPQ_ERR_INFEASIBLE, "kv-bits=%g: below the cheapest frontier point (%.4g bits)",
                                 a.budgets[i], f->n_points ? f->points[0].bits : NAN);
                goto done;
            }
            const mpq_kvsearch_point *p = &f->points[picks[i]];
            char name[64];
            snprintf(name, sizeof name, "kv-bits-%g%s", a.budgets[i], ovh ? "" : "-nominal");
            if (!a.json) {
                printf("  kv-bits=%g -> point %zu: %.4f bits (%.3f nominal, %.4f with overhead), predicted %.5g: ",
                       a.budgets[i], picks[i], p->bits, p->bits_nominal, p->bits_overhead, p->loss);
                print_assign(t, p->pair);
                printf("  [solution %s]\n", name);
            } else {
                cJSON *bo = cJSON_CreateObject();
                cJSON_AddItemToArray(ba, bo);
                cJSON_AddNumberToObject(bo, "budget", a.budgets[i]);
                cJSON_AddNumberToObject(bo, "point", (double)picks[i]);
                cJSON_AddNumberToObject(bo, "bits", p->bits);
                cJSON_AddNumberToObject(bo, "predicted", p->loss);
                cJSON_AddItemToObject(bo, "pairs", pairs_json(t, p->pair));
            }
        }
        const mpq_kvsearch_point *p0 = &f->points[picks[0]];
        mpq_kv_pair pr[1024];
        if (nb > 1024) {
            st = mpq_err_set(&err, MPQ_ERR_UNSUPPORTED, "more than 1024 blocks");
            goto done;
        }
        for (int b = 0; b < nb; b++) pr[b] = t->pairs[p0->pair[b]];
        if (a.export_kvtuner) {
            if (!(text = mpq_kvsearch_kvtuner_json(pr, nb))) {
                st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
                goto done;
            }
            if ((st = write_text(a.export_kvtuner, text, &err)) != MPQ_OK) goto done;
            free(text);
            text = NULL;
        }
        if (a.export_config) {
            if (!model && (st = mpq_kvsearch_job_model(db, job.id, &model, &err)) != MPQ_OK) goto done;
            if ((st = mpq_kvsearch_config_json(model, pr, &t->scheme, &text, &err)) != MPQ_OK) goto done;
            if ((st = write_text(a.export_config, text, &err)) != MPQ_OK) goto done;
            free(text);
            text = NULL;
        }
        /* stored only after the exports succeeded */
        for (int i = 0; i < a.n_budgets; i++) {
            const mpq_kvsearch_point *p = &f->points[picks[i]];
            char name[64], budgets[128];
            snprintf(name, sizeof name, "kv-bits-%g%s", a.budgets[i], ovh ? "" : "-nominal");
            snprintf(budgets, sizeof budgets, "{\"kv_bits\":%g,\"overhead\":%s,\"context\":%lld}", a.budgets[i],
                     ovh ? "true" : "false", (long long)L);
            if ((st = mpq_kvsearch_solution_store(db, job.id, t, name, p->pair, p->loss, budgets, NULL, &sol_ids[i],
                                                  &err)) != MPQ_OK)
                goto done;
        }
    }

    /* 5. evaluation */
    if (a.evaluate) {
        if ((st = mpq_kvsearch_eval_open(db, job.id, (int)a.max_seqs, &ev, &err)) != MPQ_OK) goto done;
        size_t nf = f->n_points;
        if (!(meas = calloc(nf + (size_t)np + 1, sizeof *meas))) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        double *pred = calloc(nf + 1, sizeof *pred), *umeas = meas + nf;
        if (!pred) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        mpq_eval_stats es;
        if (!a.json)
            printf("\nmeasured on %s windows, weights FP, KL vs FP (stored as evaluations):\n",
                   mpq_kvsearch_eval_source(ev));
        for (size_t k = 0; k < nf; k++) {
            int64_t sid = 0;
            for (int i = 0; i < a.n_budgets; i++)
                if (picks[i] == k) sid = sol_ids[i];
            if ((st = eval_one(db, job.id, ev, t, f->points[k].pair, sid, &es, &err)) != MPQ_OK) {
                free(pred);
                goto done;
            }
            meas[k] = es.kl_mean;
            pred[k] = f->points[k].loss;
            if (!a.json && a.frontier)
                printf("  point %3zu  %.4f bits  predicted %-10.4g measured %-10.4g +- %.2g  top1 %.4f\n", k, f->points[k].bits,
                       f->points[k].loss, es.kl_mean, es.kl_se, es.top1);
        }
        double rho = mpq_kvsearch_spearman(pred, meas, (int)nf);
        free(pred);
        if (!a.json) printf("  Spearman(predicted, measured KL) along the frontier: %.4f over %zu points\n", rho, nf);
        else cJSON_AddNumberToObject(out, "spearman", isnan(rho) ? 0 : rho);
        if (!a.json) printf("  uniform pairs:\n");
        cJSON *ua = a.json ? cJSON_AddArrayToObject(out, "uniform") : NULL;
        for (int j = 0; j < np; j++) {
            for (int b = 0; b < nb; b++) idx[b] = j;
            if ((st = eval_one(db, job.id, ev, t, idx, 0, &es, &err)) != MPQ_OK) goto done;
            umeas[j] = es.kl_mean;
            double bits = mpq_kvsearch_avg_bits(t, idx, L, ovh);
            if (!a.json)
                printf("    %-6s %.4f bits  measured KL %-10.4g +- %.2g  top1 %.4f\n", t->pair_names[j], bits, es.kl_mean,
                       es.kl_se, es.top1);
            else {
                cJSON *uo = cJSON_CreateObject();
                cJSON_AddItemToArray(ua, uo);
                cJSON_AddStringToObject(uo, "pair", t->pair_names[j]);
                cJSON_AddNumberToObject(uo, "bits", bits);
                cJSON_AddNumberToObject(uo, "kl", es.kl_mean);
            }
        }
        for (int i = 0; i < a.n_budgets; i++) {
            const mpq_kvsearch_point *p = &f->points[picks[i]];
            int n_cmp_u = 0, n_beat = 0;
            if (!a.json)
                printf("  kv-bits=%g: mixed (%.4f bits) measured KL %.4g vs uniform pairs with >= bits:", a.budgets[i],
                       p->bits, meas[picks[i]]);
            for (int j = 0; j < np; j++) {
                for (int b = 0; b < nb; b++) idx[b] = j;
                double bits = mpq_kvsearch_avg_bits(t, idx, L, ovh);
                if (bits + 1e-12 < p->bits) continue;
                n_cmp_u++;
                n_beat += meas[picks[i]] < umeas[j];
                if (!a.json) printf(" %s %.4g%s", t->pair_names[j], umeas[j], meas[picks[i]] < umeas[j] ? "" : "(!)");
            }
            if (!a.json)
                printf("\n    -> mixed lower than %d of %d uniform pairs of equal or higher bits%s\n", n_beat, n_cmp_u,
                       n_beat == n_cmp_u ? " (all)" : "");
        }
    }

    /* 4. joint */
    if (a.joint) {
        if (!model && (st = mpq_kvsearch_job_model(db, job.id, &model, &err)) != MPQ_OK) goto done;
        mpq_config *cfg = NULL;
        mpq_config_stats cs;
        if ((st = mpq_config_uniform(model, "f32", NULL, &cfg, &err)) == MPQ_OK)
            st = mpq_config_get_stats(cfg, model, 0, &cs, &err);
        mpq_config_free(cfg);
        if (st != MPQ_OK) goto done;
        if (!a.json)
            printf("\njoint weights + KV under %.0f bytes (batch %ld; fixed %lld bytes of embeddings/norms; ILP; loss = "
                   "sum of predicted KLs, assumed additive)\n  %8s %12s %12s %9s %9s %11s %11s %8s\n",
                   a.joint_bytes, a.batch, (long long)(cs.total_weight_bytes - cs.linear_bytes), "context", "weight B",
                   "KV B", "w bits", "kv bits", "loss w", "loss kv", "status");
        cJSON *ja = a.json ? cJSON_AddArrayToObject(out, "joint") : NULL;
        int n_feasible = 0;
        mpq_err inf_err = {0};
        for (int i = 0; i < a.n_contexts; i++) {
            mpq_kvsearch_joint_opts jo = mpq_kvsearch_joint_opts_default();
            jo.budget_bytes = a.joint_bytes;
            jo.context_len = a.contexts[i];
            jo.batch = a.batch;
            jo.fixed_bytes = cs.total_weight_bytes - cs.linear_bytes;
            mpq_kvsearch_joint *jp = NULL;
            mpq_solution *sol = NULL;
            mpq_solve_opts so = mpq_solve_opts_default();
            so.smooth = false;
            if ((st = mpq_kvsearch_joint_build(db, job.id, t, &jo, &jp, &err)) == MPQ_OK)
                st = mpq_solve_ilp(jp->problem, &so, &sol, &err);
            if (st == MPQ_ERR_INFEASIBLE) {
                if (!a.json) printf("  %8lld  infeasible (%s)\n", (long long)a.contexts[i], err.msg);
                inf_err = err;
                mpq_kvsearch_joint_free(jp);
                st = MPQ_OK;
                continue;
            }
            n_feasible++;
            if (st != MPQ_OK) {
                mpq_kvsearch_joint_free(jp);
                goto done;
            }
            mpq_kvsearch_joint_result r;
            mpq_kvsearch_joint_summary(jp, t, sol, &r);
            if (!a.json)
                printf("  %8lld %12.0f %12.0f %9.3f %9.3f %11.4g %11.4g %8s\n", (long long)a.contexts[i], r.weight_bytes,
                       r.kv_bytes, r.avg_weight_bits, r.avg_kv_bits, r.loss_weights, r.loss_kv,
                       r.status == MPQ_SOLVE_OPTIMAL ? "optimal" : "feasible");
            else {
                cJSON *jo2 = cJSON_CreateObject();
                cJSON_AddItemToArray(ja, jo2);
                cJSON_AddNumberToObject(jo2, "context", (double)a.contexts[i]);
                cJSON_AddNumberToObject(jo2, "weight_bytes", r.weight_bytes);
                cJSON_AddNumberToObject(jo2, "kv_bytes", r.kv_bytes);
                cJSON_AddNumberToObject(jo2, "avg_weight_bits", r.avg_weight_bits);
                cJSON_AddNumberToObject(jo2, "avg_kv_bits", r.avg_kv_bits);
                cJSON_AddNumberToObject(jo2, "loss_weights", r.loss_weights);
                cJSON_AddNumberToObject(jo2, "loss_kv", r.loss_kv);
            }
            mpq_solution_free(sol);
            mpq_kvsearch_joint_free(jp);
        }
        if (n_feasible == 0) {
            st = MPQ_ERR_INFEASIBLE;
            err = inf_err;
            goto done;
        }
    }
    if (a.json) {
        int jr = cli_print_json(stdout, out);
        if (jr != MPQ_EXIT_OK) {
            st = MPQ_ERR_NOMEM;
            mpq_err_set(&err, st, "out of memory");
        }
    }
done:
    cJSON_Delete(out);
    free(text);
    free(meas);
    free(picks);
    free(sol_ids);
    free(keep);
    free(group);
    free(idx);
    free(cmp);
    mpq_kvsearch_eval_free(ev);
    mpq_model_free(model);
    mpq_kvsearch_frontier_free(f);
    mpq_kvsearch_table_free(t);
    mpq_db_close(db);
    if (st != MPQ_OK) return cli_fail("kv", st, &err);
    return MPQ_EXIT_OK;
}
