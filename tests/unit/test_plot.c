/*
 * test_plot.c - the SVG plots (mpq_plot.h) and the Markdown report: every document is
 * well-formed XML (a small tag-balance parser below), has a title and axes, and carries the
 * expected number of data marks. Data are real: the stories260K layer table and the relative
 * weight error of its real layers quantized with each candidate (mpq_quantize_matrix), stored
 * in a results database as a job's metrics, a frontier, a solution and evaluations.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_export.h"
#include "mpq/mpq_plot.h"
#include "test_util.h"
#include "job_fixture.h"
#include "test_main.h"

/* Well-formed enough: one root, balanced and properly nested tags, quoted attributes, no raw
 * '<' or stray '&' in text. Returns the number of elements, -1 on error. */
static int xml_check(const char *s) {
    char stack[64][32];
    int depth = 0, n = 0, roots = 0;
    const char *p = s;
    if (strncmp(p, "<?xml", 5) == 0) {
        p = strstr(p, "?>");
        if (!p) return -1;
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) && strncmp(p, "&quot;", 6) &&
                strncmp(p, "&apos;", 6))
                return -1;
            p++;
            continue;
        }
        if (*p != '<') {
            if (depth == 0 && !(*p == ' ' || *p == '\n')) return -1;
            p++;
            continue;
        }
        p++;
        bool close = *p == '/';
        if (close) p++;
        char name[32];
        int k = 0;
        while (*p && *p != ' ' && *p != '>' && *p != '/' && *p != '\n' && k < 31) name[k++] = *p++;
        name[k] = '\0';
        if (k == 0) return -1;
        bool selfclose = false;
        char q = 0;
        while (*p && (q || *p != '>')) {
            if (q) {
                if (*p == q) q = 0;
                else if (*p == '<') return -1;
            } else if (*p == '"' || *p == '\'') q = *p;
            else if (*p == '/' && p[1] == '>') selfclose = true;
            p++;
        }
        if (!*p) return -1;
        p++;
        if (close) {
            if (depth == 0 || strcmp(stack[depth - 1], name) != 0) return -1;
            depth--;
        } else {
            n++;
            if (depth == 0) roots++;
            if (!selfclose) {
                if (depth == 64) return -1;
                strcpy(stack[depth++], name);
            }
        }
    }
    return (depth == 0 && roots == 1) ? n : -1;
}

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void check_svg(const char *svg) {
    ck_assert_ptr_nonnull(svg);
    ck_assert_msg(xml_check(svg) > 10, "SVG is not well-formed");
    ck_assert_int_eq(count(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""), 1);
    ck_assert_int_eq(count(svg, "<title>") >= 1, 1);
    ck_assert_ptr_null(strstr(svg, "nan"));
    ck_assert_ptr_null(strstr(svg, "inf\""));
}

START_TEST(test_xml_checker) {
    ck_assert_int_eq(xml_check("<a><b x=\"1\"/></a>"), 2);
    ck_assert_int_eq(xml_check("<a><b></a></b>"), -1);
    ck_assert_int_eq(xml_check("<a>x & y</a>"), -1);
    ck_assert_int_eq(xml_check("<a/><b/>"), -1);
    ck_assert_int_eq(xml_check("<a x=\"<\"/>"), -1);
}
END_TEST

/* Real data: relative Frobenius error ||Q(W)-W|| / ||W|| of every stories260K layer. */
static const char *const cands[4] = {"int2g32", "int3g32", "int4g32", "int8c"};
static double rel_err[35][4];
static mpq_model *g_model;

static void setup(void) {
    mpq_err err = {0};
    if (mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &g_model, &err) != MPQ_OK) return;
    const mpq_weights *w = mpq_model_get_weights(g_model);
    for (int i = 0; i < 35; i++) {
        const mpq_layer_info *li = mpq_model_linear(g_model, i);
        size_t n = (size_t)li->n_params;
        float *buf = malloc(n * sizeof *buf);
        for (int c = 0; c < 4; c++) {
            mpq_candidate cd;
            mpq_candidate_parse(cands[c], &cd, NULL);
            memcpy(buf, mpq_weights_linear(w, li), n * sizeof *buf);
            mpq_quantize_matrix(&cd, buf, li->rows, li->cols);
            double num = 0, den = 0;
            const float *o = mpq_weights_linear(w, li);
            for (size_t k = 0; k < n; k++) num += (buf[k] - o[k]) * (double)(buf[k] - o[k]), den += o[k] * (double)o[k];
            rel_err[i][c] = sqrt(num / den);
        }
        free(buf);
    }
}

static void teardown(void) {
    mpq_model_free(g_model);
    g_model = NULL;
}

START_TEST(test_renderers) {
    ck_assert_ptr_nonnull(g_model);
    mpq_err err = {0};
    char *svg = NULL;
    /* heat map: 35 x 4 cells, one missing */
    const char *rn[35], *cn[4] = {cands[0], cands[1], cands[2], cands[3]};
    double v[35 * 4];
    for (int i = 0; i < 35; i++) {
        rn[i] = mpq_model_linear(g_model, i)->name;
        for (int c = 0; c < 4; c++) v[i * 4 + c] = rel_err[i][c];
    }
    /* fewer bits, more error: int2 > int3 > int4 > int8 on every real layer */
    for (int i = 0; i < 35; i++)
        for (int c = 0; c < 3; c++) ck_assert_double_gt(rel_err[i][c], rel_err[i][c + 1]);
    v[5] = NAN;
    mpq_plot_heatmap_data hd = {"weight error", "weight_rel", 35, 4, rn, cn, v};
    ck_assert_int_eq(mpq_plot_heatmap_svg(&hd, &svg, &err), MPQ_OK);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"cell\""), 35 * 4 - 1);
    ck_assert_int_eq(count(svg, "class=\"missing\""), 1);
    ck_assert_ptr_nonnull(strstr(svg, ">blk.4.ffn_down<"));
    free(svg);
    /* bits: a uniform int4g32 config -> 35 bars; weighted mean = mpq_config_get_stats */
    mpq_config *cfg = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "int4g32", NULL, &cfg, &err), MPQ_OK);
    mpq_config_stats st;
    ck_assert_int_eq(mpq_config_get_stats(cfg, g_model, 0, &st, &err), MPQ_OK);
    int blk[35], kind[35];
    double bits[35];
    int64_t np[35];
    for (int i = 0; i < 35; i++) {
        const mpq_layer_info *li = mpq_model_linear(g_model, i);
        blk[i] = li->block, kind[i] = (int)li->kind, np[i] = li->n_params;
        bits[i] = mpq_candidate_bits(mpq_config_layer(cfg, i), li->cols);
    }
    mpq_plot_bits_data bd = {"bits", 35, rn, blk, kind, bits, NULL, np};
    ck_assert_int_eq(mpq_plot_bits_svg(&bd, &svg, &err), MPQ_OK);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"bar\""), 35);
    char want[64];
    snprintf(want, sizeof want, "mean %.4f bits", st.avg_weight_bits);
    ck_assert_ptr_nonnull(strstr(svg, want));
    ck_assert_int_eq(count(svg, ">blk "), 5); /* one label per block */
    free(svg);
    mpq_config_free(cfg);
    /* frontier: 4 predicted, 2 measured, 1 uniform (one measured point with y <= 0 is skipped on log y) */
    mpq_plot_point pred[4] = {{3, 0.5, NULL}, {8.5, 0.001, NULL}, {4, 0.1, NULL}, {5, 0.02, NULL}};
    mpq_plot_point meas[3] = {{4, 0.12, "knee"}, {5, 0.03, "b<5"}, {6, 0, "zero"}};
    mpq_plot_point uni[1] = {{5, 0.025, "int4g32"}};
    mpq_plot_frontier_data fd = {"frontier", "avg bits", "KL", pred, 4, meas, 3, uni, 1, true};
    ck_assert_int_eq(mpq_plot_frontier_svg(&fd, &svg, &err), MPQ_OK);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"pred\""), 4);
    ck_assert_int_eq(count(svg, "class=\"meas\""), 2);
    ck_assert_int_eq(count(svg, "class=\"uniform\""), 1);
    ck_assert_ptr_nonnull(strstr(svg, "b&lt;5")); /* labels are escaped */
    free(svg);
    /* kv ladder: 5 blocks x 3 pairs, chosen ringed */
    const char *pn[3] = {"k8v8", "k4v4", "k2v2"};
    double kv[15];
    int chosen[5] = {0, 1, 2, -1, 1};
    for (int b = 0; b < 5; b++)
        for (int p = 0; p < 3; p++) kv[b * 3 + p] = rel_err[b * 7][3 - p];
    mpq_plot_kv_data kd = {"kv", "kv_kl", 5, 3, pn, kv, chosen, NULL};
    ck_assert_int_eq(mpq_plot_kv_svg(&kd, &svg, &err), MPQ_OK);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"kvpt\""), 15);
    ck_assert_int_eq(count(svg, "class=\"chosen\""), 4);
    ck_assert_int_eq(count(svg, "class=\"chosen-head\""), 0);
    free(svg);
    /* block 3 split by KV head: a dashed ring at each pair its heads use, naming the heads */
    const char *hp[5] = {NULL, NULL, NULL, "k2v2,k8v8,k2v2,k2v2", NULL};
    kd.head_pairs = hp;
    ck_assert_int_eq(mpq_plot_kv_svg(&kd, &svg, &err), MPQ_OK);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"chosen-head\""), 2);
    ck_assert_ptr_nonnull(strstr(svg, "<title>blk 3 k2v2: KV heads 0,2,3</title>"));
    ck_assert_ptr_nonnull(strstr(svg, "<title>blk 3 k8v8: KV heads 1</title>"));
    ck_assert_ptr_nonnull(strstr(svg, ">blk 3 (by head)<"));
    free(svg);
    /* no data */
    mpq_plot_frontier_data empty = {0};
    ck_assert_int_eq(mpq_plot_frontier_svg(&empty, &svg, &err), MPQ_ERR_INVALID);
    mpq_plot_kind k;
    ck_assert_int_eq(mpq_plot_kind_parse("pie", &k, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_plot_kind_parse("kv", &k, &err), MPQ_OK);
    ck_assert_int_eq(k, MPQ_PLOT_KV);
}
END_TEST

/* A job in a database: metrics, a frontier with a solution, evaluations -> plots + report. */
START_TEST(test_job_plots_and_report) {
    ck_assert_ptr_nonnull(g_model);
    char dir[256], path[400];
    mpq_err err = {0};
    mpq_db *db = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/p.db", dir);
    ck_assert_int_eq(mpq_db_open(path, MPQ_DB_CREATE, &db, &err), MPQ_OK);
    int64_t mid, jid, ids[40], sid;
    fixture_store_job(db, g_model, "cafe", "p", "[\"int2g32\",\"int8c\"]", true, &mid, ids, &jid);
    mpq_db_metric rows[35 * 4 + 10];
    int nr = 0;
    for (int i = 0; i < 35; i++)
        for (int c = 0; c < 4; c++)
            rows[nr++] = (mpq_db_metric){ids[i], cands[c], "kl", rel_err[i][c], NAN, 0, NULL};
    static const char *const pairs[2] = {"k8v8", "k4v2"};
    for (int b = 0; b < 5; b++)
        for (int p = 0; p < 2; p++)
            rows[nr++] = (mpq_db_metric){ids[35 + b], pairs[p], "kv_kl", rel_err[b][p ? 1 : 3], NAN, 0, NULL};
    ck_assert_int_eq(mpq_db_metric_put(db, jid, 0, rows, nr, &err), MPQ_OK);
    /* a solution: the mixed fixture-like config written by mpq_config_to_json */
    mpq_config *cfg = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "int4g32", "k8v8", &cfg, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_set_layer(cfg, 0, "int8c", &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_set_kv(cfg, 2, (mpq_kv_pair){4, 2}, &err), MPQ_OK);
    char *cj = mpq_config_to_json(cfg, g_model);
    mpq_config_stats st;
    ck_assert_int_eq(mpq_config_get_stats(cfg, g_model, 0, &st, &err), MPQ_OK);
    mpq_db_solution s = {.job_id = jid, .solver = "pareto", .status = "optimal", .metric_expr = "kl",
                         .budgets_json = "{}", .config_json = cj, .objective = 0.1, .bound = NAN, .gap = NAN,
                         .seconds = NAN};
    snprintf(s.name, sizeof s.name, "kl@knee");
    ck_assert_int_eq(mpq_db_solution_insert(db, &s, NULL, 0, &sid, &err), MPQ_OK);
    mpq_db_frontier_point fp[3] = {{3.0, 1.0, 0}, {st.avg_weight_bits, 0.1, sid}, {8.5, 0.001, 0}};
    int64_t fid;
    ck_assert_int_eq(mpq_db_frontier_insert(db, jid, "bits", "kl", fp, 3, &fid, &err), MPQ_OK);
    mpq_db_evaluation ev = {.job_id = jid, .solution_id = sid, .config_json = cj, .ppl = 7, .kl = 0.12,
                            .kl_stderr = 0.01, .top1 = 0.8, .ce = NAN, .n_tokens = 100};
    int64_t eid;
    ck_assert_int_eq(mpq_db_evaluation_insert(db, &ev, &eid, &err), MPQ_OK);
    char *uj = NULL;
    mpq_config *u = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "int8c", NULL, &u, &err), MPQ_OK);
    uj = mpq_config_to_json(u, g_model);
    mpq_db_evaluation ev2 = {.job_id = jid, .config_json = uj, .ppl = 6.3, .kl = 0.0004, .kl_stderr = NAN,
                             .top1 = 0.99, .ce = NAN, .n_tokens = 100};
    ck_assert_int_eq(mpq_db_evaluation_insert(db, &ev2, &eid, &err), MPQ_OK);

    char *svg = NULL;
    ck_assert_msg(mpq_plot_job(db, "p", MPQ_PLOT_FRONTIER, NULL, &svg, &err) == MPQ_OK, "%s", err.msg);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"pred\""), 3);
    ck_assert_int_eq(count(svg, "class=\"meas\""), 1);
    ck_assert_int_eq(count(svg, "class=\"uniform\""), 1);
    ck_assert_ptr_nonnull(strstr(svg, ">kl@knee<"));
    free(svg);
    ck_assert_msg(mpq_plot_job(db, "p", MPQ_PLOT_BITS, NULL, &svg, &err) == MPQ_OK, "%s", err.msg);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"bar\""), 35);
    free(svg);
    ck_assert_msg(mpq_plot_job(db, "p", MPQ_PLOT_SENSITIVITY, NULL, &svg, &err) == MPQ_OK, "%s", err.msg);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"cell\""), 140);
    free(svg);
    ck_assert_msg(mpq_plot_job(db, "p", MPQ_PLOT_KV, NULL, &svg, &err) == MPQ_OK, "%s", err.msg);
    check_svg(svg);
    ck_assert_int_eq(count(svg, "class=\"kvpt\""), 10);
    ck_assert_int_eq(count(svg, "class=\"chosen\""), 5); /* k8v8 in 4 blocks, k4v2 in blk 2 */
    free(svg);
    mpq_plot_opts po = mpq_plot_opts_default();
    po.metric = "dloss";
    ck_assert_int_eq(mpq_plot_job(db, "p", MPQ_PLOT_SENSITIVITY, &po, &svg, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "dloss"));
    ck_assert_int_eq(mpq_plot_job(db, "nojob", MPQ_PLOT_BITS, NULL, &svg, &err), MPQ_ERR_NOTFOUND);

    /* report */
    char rp[500], pd[500];
    snprintf(rp, sizeof rp, "%s/report.md", dir);
    snprintf(pd, sizeof pd, "%s/plots", dir);
    mpq_report_opts ro = mpq_report_opts_default();
    ro.plots_dir = pd;
    ro.plots_rel = "plots";
    ck_assert_msg(mpq_report_write(db, "p", &ro, rp, &err) == MPQ_OK, "%s", err.msg);
    size_t n = 0;
    char *md = test_read_file(rp, &n);
    ck_assert_ptr_nonnull(md);
    md = realloc(md, n + 1);
    md[n] = '\0';
    ck_assert_ptr_nonnull(strstr(md, "# mpq report: job p"));
    ck_assert_ptr_nonnull(strstr(md, "![frontier](plots/frontier.svg)"));
    ck_assert_ptr_nonnull(strstr(md, "![kv](plots/kv.svg)"));
    ck_assert_ptr_nonnull(strstr(md, "| kl@knee | pareto | optimal |"));
    ck_assert_ptr_nonnull(strstr(md, "| int8c | "));     /* the uniform baseline row */
    ck_assert_ptr_nonnull(strstr(md, "| 1 | blk."));     /* sensitive layers ranked */
    snprintf(rp, sizeof rp, "%s/plots/sensitivity.svg", dir);
    size_t ns = 0;
    char *sv = test_read_file(rp, &ns);
    ck_assert_ptr_nonnull(sv);
    free(sv);
    free(md);
    free(cj);
    free(uj);
    mpq_config_free(cfg);
    mpq_config_free(u);
    mpq_db_close(db);
}
END_TEST

static Suite *plot_suite(void) {
    Suite *s = suite_create("plot");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_xml_checker);
    tcase_add_test(tc, test_renderers);
    tcase_add_test(tc, test_job_plots_and_report);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(plot_suite)
