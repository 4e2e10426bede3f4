/* test_kvsearch.c - KV-cache precision search (mpq_kvsearch.h) on a small real stories260K job
 * (kv_sensitivity with 7 pairs + layer_sensitivity, 2 calibration windows) run into a temporary
 * database: exact bit units vs mpq_kv_bits_per_element, pruning vs brute force, clustering
 * determinism and threshold, frontier vs brute-force enumeration, joint ILP vs brute force,
 * KVTuner JSON round trip and hostile inputs, measured evaluation, Spearman; the whole search
 * as one request (mpq_kvsearch_run): its report against the database and the separate steps,
 * its failures, and its JSON (NaN as null). */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_job.h"
#include "mpq/mpq_kvsearch.h"
#include "test_util.h"
#include "test_main.h"

static char g_dir[512];
static char g_db[600];
static int64_t g_job;

static const char *pairs7[] = {"k8v8", "k8v4", "k4v8", "k4v4", "k4v2", "k2v4", "k2v2"};

/* Runs the job once for the whole suite (unchecked fixture: runs in the parent). */
static void setup_job(void) {
    test_tmpdir(g_dir, sizeof g_dir);
    snprintf(g_db, sizeof g_db, "%s/kv.db", g_dir);
    char spec[4096];
    snprintf(spec, sizeof spec,
             "{\"name\":\"kvt\",\"model\":\"%s\",\"seed\":1,"
             "\"calibration\":{\"data\":\"%s\",\"seq_len\":64,\"n_seqs\":2,\"batch\":2},"
             "\"evaluation\":{\"data\":\"%s\",\"seq_len\":64,\"n_seqs\":4,\"seed\":2},"
             "\"candidates\":[\"int3g32\",\"int8c\"],"
             "\"kv\":{\"scheme\":{\"mode\":\"kivi\",\"group_size\":32,\"residual\":0},"
             "\"pairs\":[\"k8v8\",\"k8v4\",\"k4v8\",\"k4v4\",\"k4v2\",\"k2v4\",\"k2v2\"]},"
             "\"metrics\":[\"layer_sensitivity\",\"kv_sensitivity\"]}",
             shared_path("models/stories260K/stories260K.bin"), shared_path("data/tinystories-calib.tok512.u16"),
             shared_path("data/tinystories-eval.tok512.u16"));
    mpq_job_spec *s = NULL;
    mpq_db *db = NULL;
    mpq_err err = {0};
    if (mpq_job_spec_parse(spec, "kvt.json", &s, &err) != MPQ_OK || mpq_db_open(g_db, MPQ_DB_CREATE, &db, &err) != MPQ_OK ||
        mpq_job_run(db, s, NULL, &g_job, &err) != MPQ_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        abort();
    }
    mpq_db_close(db);
    mpq_job_spec_free(s);
}

static void teardown_job(void) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

static mpq_db *open_db(void) {
    mpq_db *db = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_open(g_db, MPQ_DB_READWRITE, &db, &err) == MPQ_OK, "%s", err.msg);
    return db;
}

static mpq_kvsearch_table *load(mpq_db *db) {
    mpq_kvsearch_table *t = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_kvsearch_table_load(db, g_job, "kv_kl", &t, &err) == MPQ_OK, "%s", err.msg);
    return t;
}

START_TEST(test_table_load) {
    mpq_db *db = open_db();
    mpq_kvsearch_table *t = load(db);
    ck_assert_int_eq(t->n_blocks, 5);
    ck_assert_int_eq(t->n_pairs, 7);
    ck_assert_int_eq(t->kv_dim, 32); /* 4 KV heads x head_dim 8 */
    ck_assert_int_eq(t->scheme.group_size, 32);
    for (int j = 0; j < 7; j++) ck_assert_str_eq(t->pair_names[j], pairs7[j]);
    for (int b = 0; b < 5; b++) {
        ck_assert_int_gt(t->layer_ids[b], 0);
        for (int j = 0; j < 7; j++) ck_assert(t->err[b * 7 + j] >= 0); /* KL >= 0 and measured */
        /* k8v8 is near lossless, k2v2 the worst: the measurement is meaningful on real weights */
        ck_assert(t->err[b * 7 + 0] < t->err[b * 7 + 6]);
    }
    mpq_err err = {0};
    mpq_kvsearch_table *x = NULL;
    ck_assert_int_eq(mpq_kvsearch_table_load(db, g_job, "no_such_metric", &x, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_null(x);
    ck_assert_ptr_nonnull(strstr(err.msg, "no_such_metric"));
    ck_assert_int_eq(mpq_kvsearch_table_load(db, 999, "kv_kl", &x, &err), MPQ_ERR_NOTFOUND);
    mpq_kvsearch_table_free(t);
    mpq_db_close(db);
}
END_TEST

/* Units / units_per_bit equal the bits of mpq_kv_bits_per_element, for both modes and residual
 * windows. Both sides are ratios of small integers computed in doubles: the only rounding is in
 * the final divisions and sums (a few ulps of ~10), so 1e-12 absolute is ample. */
START_TEST(test_units_exact) {
    mpq_kv_pair pr[] = {{8, 8}, {8, 4}, {4, 2}, {3, 2}, {2, 2}, {16, 4}, {16, 16}};
    mpq_kv_scheme sch[] = {{MPQ_KV_KIVI, 32, 0, false}, {MPQ_KV_KIVI, 32, 20, false}, {MPQ_KV_PER_TOKEN, 12, 8, false}};
    int64_t ctx[] = {0, 1, 100, 256, 4096, 65536};
    mpq_err err = {0};
    for (size_t s = 0; s < 3; s++) {
        mpq_kvsearch_table *t = NULL;
        ck_assert_int_eq(mpq_kvsearch_table_create(2, 7, 40, &sch[s], pr, &t, &err), MPQ_OK);
        for (size_t c = 0; c < 6; c++)
            for (int j = 0; j < 7; j++) {
                int idx[2] = {j, j};
                double want = (mpq_kv_bits_per_element(pr[j], &sch[s], 40, ctx[c], true, true) +
                               mpq_kv_bits_per_element(pr[j], &sch[s], 40, ctx[c], false, true)) / 2;
                ck_assert_double_eq_tol(mpq_kvsearch_avg_bits(t, idx, ctx[c], true), want, 1e-12);
                ck_assert_double_eq_tol(mpq_kvsearch_avg_bits(t, idx, ctx[c], false), (pr[j].k_bits + pr[j].v_bits) / 2.0,
                                        1e-12);
                ck_assert_int_ge(mpq_kvsearch_pair_units(t, pr[j], ctx[c], true), 0);
            }
        mpq_kvsearch_table_free(t);
    }
}
END_TEST

START_TEST(test_prune_brute) {
    mpq_db *db = open_db();
    mpq_kvsearch_table *t = load(db);
    bool keep[35];
    int n_kept = 0;
    mpq_err err = {0};
    int64_t ctxs[] = {0, 4096};
    for (int c = 0; c < 2; c++)
        for (int ov = 0; ov < 2; ov++) {
            ck_assert_int_eq(mpq_kvsearch_prune(t, ctxs[c], ov, keep, &n_kept, &err), MPQ_OK);
            int cnt = 0;
            for (int b = 0; b < 5; b++)
                for (int j = 0; j < 7; j++) {
                    /* brute force on double bits from mpq_kv_bits_per_element */
                    double bj = ov ? mpq_kv_bits_per_element(t->pairs[j], &t->scheme, 32, ctxs[c], true, true) +
                                         mpq_kv_bits_per_element(t->pairs[j], &t->scheme, 32, ctxs[c], false, true)
                                   : t->pairs[j].k_bits + t->pairs[j].v_bits;
                    bool dom = false;
                    for (int i = 0; i < 7; i++) {
                        double bi = ov ? mpq_kv_bits_per_element(t->pairs[i], &t->scheme, 32, ctxs[c], true, true) +
                                             mpq_kv_bits_per_element(t->pairs[i], &t->scheme, 32, ctxs[c], false, true)
                                       : t->pairs[i].k_bits + t->pairs[i].v_bits;
                        double ei = t->err[b * 7 + i], ej = t->err[b * 7 + j];
                        if (i != j && bi <= bj + 1e-12 && ei <= ej && (bi < bj - 1e-12 || ei < ej)) dom = true;
                    }
                    ck_assert_msg(keep[b * 7 + j] == !dom, "block %d pair %s", b, t->pair_names[j]);
                    cnt += !dom;
                }
            ck_assert_int_eq(cnt, n_kept);
            for (int b = 0; b < 5; b++) ck_assert(keep[b * 7 + 0] && keep[b * 7 + 6]); /* cheapest & best survive */
        }
    ck_assert_int_eq(mpq_kvsearch_prune_store(db, g_job, t, keep, 0, true, &err), MPQ_OK);
    void *blob = NULL;
    size_t n = 0;
    ck_assert_int_eq(mpq_db_artifact_get(db, g_job, "kv_prune", &blob, &n, &err), MPQ_OK);
    char *txt = calloc(n + 1, 1);
    ck_assert_ptr_nonnull(txt);
    memcpy(txt, blob, n);
    ck_assert_ptr_nonnull(strstr(txt, "\"blk.4.kv\":[\"k8v8\""));
    free(txt);
    free(blob);
    mpq_kvsearch_table_free(t);
    mpq_db_close(db);
}
END_TEST

/* Average linkage between two sets of blocks, recomputed here from the distance. */
static double linkage(const mpq_kvsearch_table *t, const int *g, int ga, int gb) {
    double s = 0;
    int n = 0;
    for (int a = 0; a < t->n_blocks; a++)
        for (int b = 0; b < t->n_blocks; b++)
            if (g[a] == ga && g[b] == gb) {
                s += mpq_kvsearch_distance(t, NULL, a, b);
                n++;
            }
    return s / n;
}

START_TEST(test_cluster) {
    mpq_db *db = open_db();
    mpq_kvsearch_table *t = load(db);
    mpq_err err = {0};
    int g1[5], g2[5], ng1 = 0, ng2 = 0;
    /* symmetric, zero diagonal */
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++)
            ck_assert_double_eq_tol(mpq_kvsearch_distance(t, NULL, a, b), mpq_kvsearch_distance(t, NULL, b, a), 1e-15);
    ck_assert_double_eq_tol(mpq_kvsearch_distance(t, NULL, 2, 2), 0, 1e-15);
    for (int k = 1; k <= 5; k++) {
        ck_assert_int_eq(mpq_kvsearch_cluster(t, NULL, k, 0, g1, &ng1, &err), MPQ_OK);
        ck_assert_int_eq(mpq_kvsearch_cluster(t, NULL, k, 0, g2, &ng2, &err), MPQ_OK);
        ck_assert_int_eq(ng1, k);
        ck_assert_int_eq(ng1, ng2);
        for (int b = 0; b < 5; b++) ck_assert_int_eq(g1[b], g2[b]); /* deterministic */
        ck_assert_int_eq(g1[0], 0);                                   /* numbered by first block */
    }
    /* threshold: the median pairwise distance. Final clusters are all farther apart than T
     * (else they would have been merged), and each merge happened at a linkage <= T, so the
     * linkage of the two halves of any merged cluster... checked via: within-group average <= T. */
    double d[10];
    int nd = 0;
    for (int a = 0; a < 5; a++)
        for (int b = a + 1; b < 5; b++) d[nd++] = mpq_kvsearch_distance(t, NULL, a, b);
    for (int i = 1; i < nd; i++)
        for (int j = i; j > 0 && d[j - 1] > d[j]; j--) {
            double x = d[j];
            d[j] = d[j - 1];
            d[j - 1] = x;
        }
    double T = (d[4] + d[5]) / 2;
    ck_assert_int_eq(mpq_kvsearch_cluster(t, NULL, 0, T, g1, &ng1, &err), MPQ_OK);
    ck_assert_int_gt(ng1, 1);
    ck_assert_int_lt(ng1, 5);
    for (int x = 0; x < ng1; x++)
        for (int y = x + 1; y < ng1; y++) ck_assert_double_gt(linkage(t, g1, x, y), T);
    ck_assert_int_eq(mpq_kvsearch_cluster(t, NULL, 0, 1e9, g1, &ng1, &err), MPQ_OK);
    ck_assert_int_eq(ng1, 1);
    ck_assert_int_eq(mpq_kvsearch_cluster(t, NULL, 0, -1, g1, &ng1, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_kvsearch_groups_store(db, g_job, t, g2, 5, 5, 0, &err), MPQ_OK);
    mpq_kvsearch_table_free(t);
    mpq_db_close(db);
}
END_TEST

/* Exact frontier vs enumeration of all 7^5 assignments. Losses are sums of 5 stored doubles in
 * block order on both sides (identical order), so they agree to rounding: 1e-12 relative. */
START_TEST(test_frontier_brute) {
    mpq_db *db = open_db();
    mpq_kvsearch_table *t = load(db);
    mpq_err err = {0};
    for (int ov = 0; ov < 2; ov++) {
        int64_t L = ov ? 100 : 0; /* 100 tokens: KIVI keys keep a partial group of 4 in fp16 */
        /* brute force Pareto set: for each cost, min loss; then strictly decreasing filter */
        enum { NA = 16807 };
        static int64_t cost[NA];
        static double loss[NA];
        int c[5];
        for (int a = 0; a < NA; a++) {
            int x = a;
            int64_t u = 0;
            double l = 0;
            for (int b = 0; b < 5; b++) {
                c[b] = x % 7;
                x /= 7;
                u += mpq_kvsearch_pair_units(t, t->pairs[c[b]], L, ov);
                l += t->err[b * 7 + c[b]];
            }
            cost[a] = u;
            loss[a] = l;
        }
        int64_t pc[NA];
        double pl[NA];
        int np = 0;
        /* sort indices by (cost, loss) via selection on distinct costs */
        int64_t last = -1;
        double best = INFINITY;
        for (;;) {
            int64_t next = INT64_MAX;
            for (int a = 0; a < NA; a++)
                if (cost[a] > last && cost[a] < next) next = cost[a];
            if (next == INT64_MAX) break;
            double m = INFINITY;
            for (int a = 0; a < NA; a++)
                if (cost[a] == next && loss[a] < m) m = loss[a];
            if (m < best) {
                pc[np] = next;
                pl[np++] = m;
                best = m;
            }
            last = next;
        }
        bool keep[35];
        ck_assert_int_eq(mpq_kvsearch_prune(t, L, ov, keep, NULL, &err), MPQ_OK);
        for (int pr = 0; pr < 2; pr++) {
            mpq_kvsearch_opts o = mpq_kvsearch_opts_default();
            o.context_len = L;
            o.overhead = ov;
            o.keep = pr ? keep : NULL;
            mpq_kvsearch_frontier *f = NULL;
            ck_assert_msg(mpq_kvsearch_frontier_compute(t, &o, &f, &err) == MPQ_OK, "%s", err.msg);
            ck_assert_int_eq((int)f->n_points, np);
            for (int k = 0; k < np; k++) {
                ck_assert_int_eq(f->points[k].units, pc[k]);
                ck_assert_double_eq_tol(f->points[k].loss, pl[k], 1e-12 * pl[k]);
                /* the recovered assignment has that cost and loss */
                ck_assert_double_eq_tol(mpq_kvsearch_avg_bits(t, f->points[k].pair, L, ov), f->points[k].bits, 1e-12);
            }
            size_t k4 = mpq_kvsearch_frontier_at_bits(f, 4.0);
            ck_assert(k4 != SIZE_MAX);
            ck_assert(f->points[k4].bits <= 4.0);
            ck_assert(k4 + 1 == f->n_points || f->points[k4 + 1].bits > 4.0);
            ck_assert(mpq_kvsearch_frontier_at_bits(f, 0.5) == SIZE_MAX);
            if (pr && ov) ck_assert_int_eq(mpq_kvsearch_frontier_store(db, g_job, t, f, NULL, &err), MPQ_OK);
            mpq_kvsearch_frontier_free(f);
        }
    }
    /* groups: all blocks tied -> the frontier is the uniform pairs that are not dominated */
    int g[5] = {0, 0, 0, 0, 0};
    mpq_kvsearch_opts o = mpq_kvsearch_opts_default();
    o.group = g;
    o.n_groups = 1;
    mpq_kvsearch_frontier *f = NULL;
    ck_assert_int_eq(mpq_kvsearch_frontier_compute(t, &o, &f, &err), MPQ_OK);
    for (size_t k = 0; k < f->n_points; k++)
        for (int b = 1; b < 5; b++) ck_assert_int_eq(f->points[k].pair[b], f->points[k].pair[0]);
    mpq_kvsearch_frontier_free(f);
    mpq_kvsearch_table_free(t);
    mpq_db_close(db);
}
END_TEST

/* Joint ILP == brute force on a reduced instance: all items pinned to their unconstrained ILP
 * choice except 3 linear layers and 2 KV blocks, under a budget that binds. Losses are sums of
 * stored doubles (same set, possibly different order): 1e-12 relative covers the rounding. */
START_TEST(test_joint_brute) {
    mpq_db *db = open_db();
    mpq_kvsearch_table *t = load(db);
    mpq_err err = {0};
    mpq_kvsearch_joint_opts jo = mpq_kvsearch_joint_opts_default();
    jo.context_len = 512;
    jo.batch = 2;
    jo.budget_bytes = 2e5;
    mpq_kvsearch_joint *j = NULL;
    ck_assert_msg(mpq_kvsearch_joint_build(db, g_job, t, &jo, &j, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(j->n_linear, 35);
    ck_assert_int_eq(j->n_cands, 3); /* int3g32, int8c, f32 */
    ck_assert_int_eq(j->n_kv_options, 8);
    mpq_problem *p = j->problem;
    int free_items[] = {0, 6, 20, 35, 38};
    for (int i = 0; i < mpq_problem_n_items(p); i++) {
        bool fr = false;
        for (int k = 0; k < 5; k++) fr |= free_items[k] == i;
        if (!fr) ck_assert_int_eq(mpq_problem_pin(p, i, 0, &err), MPQ_OK); /* int3g32 / first pair */
    }
    /* budget: pinned costs + the midpoint of the free items' min and max costs */
    double pinned = 0, lo = 0, hi = 0;
    for (int i = 0; i < mpq_problem_n_items(p); i++) {
        bool fr = false;
        for (int k = 0; k < 5; k++) fr |= free_items[k] == i;
        if (!fr) {
            pinned += mpq_problem_cost(p, 0, i, 0);
            continue;
        }
        double mn = INFINITY, mx = 0;
        for (int o = 0; o < mpq_problem_n_options(p, i); o++) {
            double c = mpq_problem_cost(p, 0, i, o);
            mn = fmin(mn, c);
            mx = fmax(mx, c);
        }
        lo += mn;
        hi += mx;
    }
    ck_assert_int_eq(mpq_problem_set_budget(p, 0, pinned + floor((lo + hi) / 2), &err), MPQ_OK);
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = false;
    mpq_solution *a = NULL, *b = NULL;
    ck_assert_msg(mpq_solve_ilp(p, &so, &a, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_solve_brute(p, &so, &b, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_double_eq_tol(a->total_loss, b->total_loss, 1e-12 * b->total_loss + 1e-300);
    ck_assert(a->total_cost[0] <= mpq_problem_budget(p, 0));
    mpq_kvsearch_joint_result r;
    mpq_kvsearch_joint_summary(j, t, a, &r);
    ck_assert_double_eq_tol(r.loss_weights + r.loss_kv, a->total_loss, 1e-12 * a->total_loss + 1e-300);
    ck_assert(r.kv_bytes > 0 && r.weight_bytes > 0);
    mpq_solution_free(a);
    mpq_solution_free(b);
    mpq_kvsearch_joint_free(j);
    /* longer context at the same budget: KV takes more bytes -> no more KV bits than before */
    double kvbits[2];
    int64_t Ls[2] = {64, 4096};
    for (int i = 0; i < 2; i++) {
        jo.context_len = Ls[i];
        jo.batch = 1;
        jo.budget_bytes = 9e5;
        ck_assert_int_eq(mpq_kvsearch_joint_build(db, g_job, t, &jo, &j, &err), MPQ_OK);
        ck_assert_msg(mpq_solve_ilp(j->problem, &so, &a, &err) == MPQ_OK, "%s", err.msg);
        mpq_kvsearch_joint_summary(j, t, a, &r);
        ck_assert(r.weight_bytes + r.kv_bytes <= 9e5);
        kvbits[i] = r.avg_kv_bits;
        mpq_solution_free(a);
        mpq_kvsearch_joint_free(j);
    }
    ck_assert_double_le(kvbits[1], kvbits[0]);
    jo.budget_bytes = 10;
    ck_assert_int_eq(mpq_kvsearch_joint_build(db, g_job, t, &jo, &j, &err), MPQ_OK);
    ck_assert_int_eq(mpq_solve_ilp(j->problem, &so, &a, &err), MPQ_ERR_INFEASIBLE);
    mpq_kvsearch_joint_free(j);
    mpq_kvsearch_table_free(t);
    mpq_db_close(db);
}
END_TEST

START_TEST(test_kvtuner_roundtrip) {
    mpq_kv_pair in[5] = {{8, 4}, {4, 4}, {2, 2}, {16, 8}, {3, 2}}, out[5];
    char *s = mpq_kvsearch_kvtuner_json(in, 5);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(strstr(s, "\"nbits_key\""));
    mpq_err err = {0};
    ck_assert_msg(mpq_kvsearch_kvtuner_parse(s, "kt.json", 5, out, &err) == MPQ_OK, "%s", err.msg);
    for (int b = 0; b < 5; b++) {
        ck_assert_int_eq(out[b].k_bits, in[b].k_bits);
        ck_assert_int_eq(out[b].v_bits, in[b].v_bits);
    }
    free(s);
    /* hostile documents: each must fail with FORMAT and a message naming the source */
    static const char *bad[] = {
        "",                                                                  /* empty */
        "[1,2]",                                                             /* not an object */
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4}}",                        /* blocks missing */
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"0\":{\"nbits_key\":8,\"nbits_value\":4}}", /* duplicate */
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":{\"nbits_key\":5,\"nbits_value\":4}}", /* 5 bits */
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":{\"nbits_key\":4.5,\"nbits_value\":4}}",
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":{\"nbits_key\":\"4\",\"nbits_value\":4}}",
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":{\"nbits_key\":4}}",                /* missing */
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":{\"nbits_key\":4,\"nbits_value\":4,\"x\":1}}",
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"2\":{\"nbits_key\":4,\"nbits_value\":4}}", /* out of range */
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"01\":{\"nbits_key\":4,\"nbits_value\":4}}",
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"-1\":{\"nbits_key\":4,\"nbits_value\":4}}",
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":[4,4]}",
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":{\"nbits_key\":1e300,\"nbits_value\":4}}",
        "{\"0\":{\"nbits_key\":8,\"nbits_value\":4},\"1\":{\"nbits_key\":4,\"nbits_value\":4}",  /* truncated */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mpq_kv_pair o2[2];
        ck_assert_msg(mpq_kvsearch_kvtuner_parse(bad[i], "bad.json", 2, o2, &err) == MPQ_ERR_FORMAT, "case %zu", i);
        ck_assert_msg(strncmp(err.msg, "bad.json", 8) == 0, "case %zu: %s", i, err.msg);
    }
}
END_TEST

START_TEST(test_spearman) {
    double x[] = {1, 2, 3, 4, 5}, y[] = {10, 20, 30, 40, 50}, z[] = {5, 4, 3, 2, 1}, w[] = {1, 1, 2, 2, 3};
    /* exact small-integer rank arithmetic: only the final sqrt/division rounds */
    ck_assert_double_eq_tol(mpq_kvsearch_spearman(x, y, 5), 1.0, 1e-15);
    ck_assert_double_eq_tol(mpq_kvsearch_spearman(x, z, 5), -1.0, 1e-15);
    /* ties: ranks of w are 1.5 1.5 3.5 3.5 5 -> rho = 9 / sqrt(10 * 9) = 0.9486832980505138 */
    ck_assert_double_eq_tol(mpq_kvsearch_spearman(x, w, 5), 9.0 / sqrt(90.0), 1e-15);
    ck_assert(isnan(mpq_kvsearch_spearman(x, y, 1)));
}
END_TEST

/* Closed loop on the job's evaluation windows: k8v8 is far better than k2v2, the stored
 * evaluation carries the KV config, and predicted order matches measured order for the
 * uniform extremes. */
START_TEST(test_evaluate) {
    mpq_db *db = open_db();
    mpq_kvsearch_table *t = load(db);
    mpq_err err = {0};
    mpq_kvsearch_eval *ev = NULL;
    ck_assert_msg(mpq_kvsearch_eval_open(db, g_job, 2, &ev, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_str_eq(mpq_kvsearch_eval_source(ev), "evaluation");
    mpq_kv_pair hi[5], lo[5];
    for (int b = 0; b < 5; b++) {
        hi[b] = (mpq_kv_pair){8, 8};
        lo[b] = (mpq_kv_pair){2, 2};
    }
    mpq_eval_stats sh, sl;
    ck_assert_int_eq(mpq_kvsearch_eval_run(ev, hi, &t->scheme, &sh, &err), MPQ_OK);
    ck_assert_int_eq(mpq_kvsearch_eval_run(ev, lo, &t->scheme, &sl, &err), MPQ_OK);
    ck_assert_int_eq(sh.n_ref_tokens, 2 * 64);
    ck_assert(sh.kl_mean >= 0 && sh.kl_mean < sl.kl_mean / 100); /* 8-bit KV is ~lossless vs 2-bit */
    ck_assert(sl.top1 < sh.top1);
    int64_t id = 0;
    ck_assert_int_eq(mpq_kvsearch_eval_store(db, g_job, ev, lo, &t->scheme, &sl, 0, &id, &err), MPQ_OK);
    ck_assert_int_gt(id, 0);
    mpq_db_evaluation *evs = NULL;
    int n = 0;
    ck_assert_int_eq(mpq_db_evaluations_fetch(db, g_job, &evs, &n, &err), MPQ_OK);
    ck_assert_int_ge(n, 1);
    ck_assert_ptr_nonnull(strstr(evs[n - 1].config_json, "\"k2v2\""));
    ck_assert_double_eq(evs[n - 1].kl, sl.kl_mean); /* SQLite REAL stores the same IEEE double */
    for (int i = 0; i < n; i++) free(evs[i].config_json);
    free(evs);
    /* the config JSON parses back as an mpq config with those pairs */
    char *cj = NULL;
    ck_assert_int_eq(mpq_kvsearch_config_json(mpq_kvsearch_eval_model(ev), lo, &t->scheme, &cj, &err), MPQ_OK);
    ck_assert_ptr_nonnull(strstr(cj, "\"kv\""));
    free(cj);
    mpq_kvsearch_eval_free(ev);
    mpq_kvsearch_table_free(t);
    mpq_db_close(db);
}
END_TEST

/* Figures are compared with ck_assert_double_eq: the report and the database hold the same IEEE
 * doubles (SQLite REAL, cJSON's 17-digit round trip), so equality is exact. */

static cJSON *artifact_json(mpq_db *db, const char *name) {
    void *data = NULL;
    size_t n = 0;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_artifact_get(db, g_job, name, &data, &n, &err) == MPQ_OK, "%s", err.msg);
    cJSON *j = cJSON_ParseWithLength(data, n);
    free(data);
    ck_assert_ptr_nonnull(j);
    return j;
}

/* prune + 2 clusters + frontier + a budget + evaluation: every stored row agrees with the report,
 * and the report agrees with the steps run one by one. */
START_TEST(test_run_report) {
    mpq_db *db = open_db();
    mpq_err err = {0};
    double budget = 4.0;
    mpq_kvsearch_request rq = mpq_kvsearch_request_default();
    rq.prune = true;
    rq.cluster = 2;
    rq.frontier = true;
    rq.budgets = &budget;
    rq.n_budgets = 1;
    rq.evaluate = true;
    rq.max_seqs = 2;
    mpq_kvsearch_report *r = NULL;
    ck_assert_msg(mpq_kvsearch_run(db, "kvt", &rq, &r, &err) == MPQ_OK, "%s", err.msg);
    const mpq_kvsearch_table *t = r->table;
    ck_assert_int_eq(r->job_id, g_job);
    ck_assert_str_eq(r->job_name, "kvt");
    ck_assert_int_eq(t->n_blocks, 5);
    ck_assert_int_eq(t->n_pairs, 7);
    ck_assert(r->overhead && r->pruned);
    ck_assert_int_eq(r->context_len, 0);

    /* pruning: as mpq_kvsearch_prune, and the stored artifact lists exactly the kept pairs */
    bool keep[35];
    int n_kept = 0;
    ck_assert_int_eq(mpq_kvsearch_prune(t, 0, true, keep, &n_kept, &err), MPQ_OK);
    ck_assert_int_eq(r->n_kept, n_kept);
    cJSON *pj = artifact_json(db, "kv_prune");
    for (int b = 0; b < 5; b++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.kv", b);
        const cJSON *lst = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pj, "layers"), name);
        int n_in = 0;
        for (int j = 0; j < 7; j++) {
            ck_assert(r->keep[b * 7 + j] == keep[b * 7 + j]);
            n_in += keep[b * 7 + j];
        }
        ck_assert_int_eq(cJSON_GetArraySize(lst), n_in);
        const cJSON *e;
        cJSON_ArrayForEach(e, lst) {
            mpq_kv_pair pr;
            ck_assert_int_eq(mpq_kv_pair_parse(e->valuestring, &pr, &err), MPQ_OK);
            ck_assert(keep[b * 7 + mpq_kvsearch_pair_index(t, pr)]);
        }
    }
    cJSON_Delete(pj);

    /* ladder: pairs by (bits, error) in every block, a permutation */
    for (int b = 0; b < 5; b++)
        for (int x = 1; x < 7; x++) {
            int p = r->ladder[b * 7 + x - 1], q = r->ladder[b * 7 + x];
            ck_assert(r->pair_bits[p] < r->pair_bits[q] ||
                      (r->pair_bits[p] == r->pair_bits[q] && !(t->err[b * 7 + p] > t->err[b * 7 + q])));
        }

    /* keys vs values: counts and verdict follow the comparisons */
    int nk = 0;
    for (int i = 0; i < r->n_cmp; i++) nk += r->cmp[i].diff > 0;
    ck_assert_int_eq(r->n_cmp, 10);
    ck_assert_int_eq(r->n_keys_more, nk);

    /* clusters: as mpq_kvsearch_cluster on the kept pairs, stored as kv_clusters */
    int g[5], ng = 0;
    ck_assert_int_eq(mpq_kvsearch_cluster(t, keep, 2, 0, g, &ng, &err), MPQ_OK);
    ck_assert_int_eq(r->n_groups, 2);
    for (int b = 0; b < 5; b++) ck_assert_int_eq(r->group[b], g[b]);
    cJSON *cj = artifact_json(db, "kv_clusters");
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(cj, "n_groups")->valueint, 2);
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(cj, "groups");
    for (int x = 0; x < 2; x++) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetArrayItem(gs, x)) ck_assert_int_eq(g[e->valueint], x);
    }
    cJSON_Delete(cj);

    /* frontier: stored point by point; a group shares one pair; only kept pairs */
    const mpq_kvsearch_frontier *f = r->frontier;
    ck_assert_ptr_nonnull(f);
    ck_assert_int_gt(r->frontier_id, 0);
    mpq_db_frontier_point *pts = NULL;
    int n_pts = 0;
    ck_assert_int_eq(mpq_db_frontier_points(db, r->frontier_id, &pts, &n_pts, &err), MPQ_OK);
    ck_assert_int_eq((size_t)n_pts, f->n_points);
    for (size_t k = 0; k < f->n_points; k++) {
        ck_assert_double_eq(pts[k].cost, f->points[k].bits);
        ck_assert_double_eq(pts[k].loss, f->points[k].loss);
        for (int b = 0; b < 5; b++) {
            ck_assert(keep[b * 7 + f->points[k].pair[b]]);
            for (int c = 0; c < 5; c++)
                if (g[b] == g[c]) ck_assert_int_eq(f->points[k].pair[b], f->points[k].pair[c]);
        }
    }
    free(pts);

    /* the budget: the largest point <= 4 bits, stored as solution kv-bits-4 with its pairs */
    ck_assert_int_eq(r->n_picks, 1);
    const mpq_kvsearch_pick *pk = &r->picks[0];
    const mpq_kvsearch_point *p = &f->points[pk->point];
    ck_assert_str_eq(pk->name, "kv-bits-4");
    ck_assert(p->bits <= 4.0 && (pk->point + 1 == f->n_points || f->points[pk->point + 1].bits > 4.0));
    int64_t sid = 0;
    ck_assert_int_eq(mpq_db_solution_find(db, g_job, "kv-bits-4", &sid, &err), MPQ_OK);
    ck_assert_int_eq(sid, pk->solution_id);
    mpq_db_solution sol;
    mpq_db_assignment *as = NULL;
    int n_as = 0;
    ck_assert_int_eq(mpq_db_solution_get(db, sid, &sol, &as, &n_as, &err), MPQ_OK);
    ck_assert_double_eq(sol.objective, p->loss);
    ck_assert_str_eq(sol.metric_expr, "kv_kl");
    ck_assert_str_eq(sol.solver, "kv-frontier");
    cJSON *bj = cJSON_Parse(sol.budgets_json);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(bj, "kv_bits")->valuedouble, 4.0);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bj, "overhead")));
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(bj, "context")->valuedouble, 0);
    cJSON_Delete(bj);
    ck_assert_int_eq(n_as, 5);
    for (int b = 0; b < 5; b++) {
        ck_assert_int_eq(as[b].layer_id, t->layer_ids[b]);
        ck_assert_str_eq(as[b].kv_pair, t->pair_names[p->pair[b]]);
    }
    free(as);
    mpq_db_solution_release(&sol);

    /* evaluation: every frontier point and uniform pair stored; the pick's row names its solution */
    ck_assert(r->evaluated);
    ck_assert_str_eq(r->eval_source, "evaluation");
    mpq_db_evaluation *evs = NULL;
    int n_ev = 0, n_seen = 0;
    ck_assert_int_eq(mpq_db_evaluations_fetch(db, g_job, &evs, &n_ev, &err), MPQ_OK);
    for (int i = 0; i < n_ev; i++) {
        for (size_t k = 0; k < f->n_points; k++)
            if (evs[i].id == r->point_evaluation_id[k]) {
                ck_assert_double_eq(evs[i].kl, r->point_eval[k].kl_mean);
                ck_assert_int_eq(evs[i].solution_id, k == pk->point ? sid : 0);
                n_seen++;
            }
        for (int j = 0; j < 7; j++)
            if (evs[i].id == r->uniform_evaluation_id[j]) {
                ck_assert_double_eq(evs[i].kl, r->uniform_eval[j].kl_mean);
                n_seen++;
            }
        free(evs[i].config_json);
    }
    free(evs);
    ck_assert_int_eq(n_seen, (int)f->n_points + 7);
    ck_assert(r->spearman > 0.5); /* predicted and measured KL rise together along the frontier */
    /* the pick against the uniform pairs of no fewer bits (steady state: (K+V)/2 + 1 bit of scales) */
    int n_cmp = 0, n_beat = 0;
    for (int j = 0; j < 7; j++) {
        ck_assert_double_eq(r->uniform_bits[j], (t->pairs[j].k_bits + t->pairs[j].v_bits) / 2.0 + 1.0);
        bool in = r->uniform_bits[j] >= p->bits;
        ck_assert(pk->uniform_compared[j] == in);
        n_cmp += in;
        n_beat += in && r->point_eval[pk->point].kl_mean < r->uniform_eval[j].kl_mean;
    }
    ck_assert_int_eq(pk->n_uniform_compared, n_cmp);
    ck_assert_int_eq(pk->n_uniform_beaten, n_beat);
    ck_assert_int_ge(n_cmp, 5); /* k8v8 k8v4 k4v8 k4v4 and a 4-bit pair at least */

    /* the JSON says the same */
    char *js = mpq_kvsearch_report_json(r);
    cJSON *j = cJSON_Parse(js);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "blocks")), 5);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "frontier")), (int)f->n_points);
    const cJSON *b0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "budgets"), 0);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(b0, "solution_id")->valuedouble, (double)sid);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(b0, "predicted")->valuedouble, p->loss);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(j, "spearman")->valuedouble, r->spearman);
    cJSON_Delete(j);
    free(js);
    mpq_kvsearch_report_free(r);
    mpq_db_close(db);
}
END_TEST

/* Bad requests store nothing and return no report; failures after the ladder return what was
 * done (for the caller to show) and store no solution. */
START_TEST(test_run_errors) {
    mpq_db *db = open_db();
    mpq_err err = {0};
    mpq_kvsearch_report *r = NULL;
    mpq_kvsearch_request rq = mpq_kvsearch_request_default();
    rq.cluster = 2;
    rq.threshold = 0.5;
    ck_assert_int_eq(mpq_kvsearch_run(db, "kvt", &rq, &r, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(r);
    rq = mpq_kvsearch_request_default();
    rq.export_kvtuner = "x.json";
    ck_assert_int_eq(mpq_kvsearch_run(db, "kvt", &rq, &r, &err), MPQ_ERR_INVALID);
    rq = mpq_kvsearch_request_default();
    rq.joint = true; /* joint needs a context > 0 */
    ck_assert_int_eq(mpq_kvsearch_run(db, "kvt", &rq, &r, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_kvsearch_run(db, "no such job", NULL, &r, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_null(r);
    rq = mpq_kvsearch_request_default();
    rq.metric = "nope";
    ck_assert_int_eq(mpq_kvsearch_run(db, "kvt", &rq, &r, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_null(r);

    /* below the cheapest point (3 bits with overhead): frontier done, no pick, nothing stored */
    double budgets[2] = {5, 1};
    rq = mpq_kvsearch_request_default();
    rq.budgets = budgets;
    rq.n_budgets = 2;
    ck_assert_int_eq(mpq_kvsearch_run(db, "kvt", &rq, &r, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_ptr_nonnull(strstr(err.msg, "kv-bits=1"));
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(r->frontier);
    ck_assert_int_eq(r->n_picks, 1);
    ck_assert_int_eq(r->picks[0].solution_id, 0);
    mpq_kvsearch_report_free(r);
    int64_t sid = 0;
    ck_assert_int_eq(mpq_db_solution_find(db, g_job, "kv-bits-5", &sid, &err), MPQ_ERR_NOTFOUND);

    /* an export that cannot be written: MPQ_ERR_IO, no solution stored */
    rq.n_budgets = 1;
    rq.export_kvtuner = g_dir; /* a directory */
    ck_assert_int_eq(mpq_kvsearch_run(db, "kvt", &rq, &r, &err), MPQ_ERR_IO);
    mpq_kvsearch_report_free(r);
    ck_assert_int_eq(mpq_db_solution_find(db, g_job, "kv-bits-5", &sid, &err), MPQ_ERR_NOTFOUND);

    /* joint: every context infeasible -> every row reported with its reason */
    int64_t ctx[2] = {256, 4096};
    rq = mpq_kvsearch_request_default();
    rq.contexts = ctx;
    rq.n_contexts = 2;
    rq.joint = true;
    rq.joint_bytes = 200000;
    ck_assert_int_eq(mpq_kvsearch_run(db, "kvt", &rq, &r, &err), MPQ_ERR_INFEASIBLE);
    ck_assert_int_eq(r->n_joint, 2);
    for (int i = 0; i < 2; i++) {
        ck_assert(!r->joint[i].feasible);
        ck_assert_int_eq(r->joint[i].context_len, ctx[i]);
        ck_assert_int_gt(strlen(r->joint[i].message), 0);
    }
    ck_assert_ptr_null(r->frontier); /* not asked for */
    mpq_kvsearch_report_free(r);
    /* ... and a budget that fits: weights + KV within it, at every context */
    rq.joint_bytes = 1000000;
    ck_assert_msg(mpq_kvsearch_run(db, "kvt", &rq, &r, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_gt(r->joint_fixed_bytes, 0);
    for (int i = 0; i < 2; i++) {
        ck_assert(r->joint[i].feasible);
        ck_assert(r->joint[i].result.weight_bytes + r->joint[i].result.kv_bytes <= 1000000);
    }
    mpq_kvsearch_report_free(r);
    mpq_db_close(db);
}
END_TEST

/* kv_attn_rel is stored without a standard error (NaN, SQL NULL): the JSON writes null there,
 * never a bare nan, and stays valid JSON. */
START_TEST(test_run_json_nan) {
    mpq_db *db = open_db();
    mpq_err err = {0};
    mpq_kvsearch_request rq = mpq_kvsearch_request_default();
    rq.metric = "kv_attn_rel";
    rq.frontier = true;
    mpq_kvsearch_report *r = NULL;
    ck_assert_msg(mpq_kvsearch_run(db, "kvt", &rq, &r, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(isnan(r->table->se[0]));
    ck_assert(isnan(r->frontier->points[0].loss_se));
    char *js = mpq_kvsearch_report_json(r);
    ck_assert_ptr_nonnull(js);
    ck_assert_ptr_null(strstr(js, "nan"));
    cJSON *j = cJSON_Parse(js);
    ck_assert_ptr_nonnull(j);
    const cJSON *p0 = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "blocks"), 0), "pairs"), 0);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(p0, "se")));
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(p0, "error")));
    const cJSON *f0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "frontier"), 0);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(f0, "predicted_se")));
    cJSON_Delete(j);
    free(js);
    mpq_kvsearch_report_free(r);
    mpq_db_close(db);
}
END_TEST

static Suite *kvsearch_suite(void) {
    Suite *s = suite_create("kvsearch");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, setup_job, teardown_job);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_table_load);
    tcase_add_test(tc, test_units_exact);
    tcase_add_test(tc, test_prune_brute);
    tcase_add_test(tc, test_cluster);
    tcase_add_test(tc, test_frontier_brute);
    tcase_add_test(tc, test_joint_brute);
    tcase_add_test(tc, test_kvtuner_roundtrip);
    tcase_add_test(tc, test_spearman);
    tcase_add_test(tc, test_evaluate);
    tcase_add_test(tc, test_run_report);
    tcase_add_test(tc, test_run_errors);
    tcase_add_test(tc, test_run_json_nan);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kvsearch_suite)
