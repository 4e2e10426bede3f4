/* test_job_noise.c - the noise_sensitivity stage (search/job_noise.c) and what uses its rows:
 * the "noise" spec section (defaults, canonical form, a table of hostile sections each naming
 * its key); the injected noise has exactly the requested relative MSE (to float rounding, on
 * stories260K weights); the fit is exact on linear data and its residual is the stated one;
 * mpq_calib_layer_weights given Q(W) is bitwise mpq_calib_layer; a small stories260K job run
 * with 1 worker uninterrupted and with 2 workers interrupted and resumed stores bitwise the same
 * rows; products in metric expressions (noise_a*weight_rel) and their errors; and
 * mpq_jobsolve_random (seeded, stored with solver "random", measured once). */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_jobsolve.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "../../search/job_noise.h"
#include "spec_fixture.h"
#include "test_util.h"
#include "test_main.h"

#define NL 35 /* stories260K: 5 blocks x 7 linear layers */

#define HEAD                                                                                                  \
    "{\"name\":\"n\",\"model\":\"@M\",\"calibration\":{\"data\":\"@D\",\"seq_len\":32,\"n_seqs\":4,\"batch\":2}," \
    "\"candidates\":[\"int3g32\",\"int8c\"],"

/* ---- spec ------------------------------------------------------------------------------- */

START_TEST(test_noise_defaults) {
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    /* "noise" given, "metrics" absent: the default stages plus noise_sensitivity */
    ck_assert_msg(spec_parse(HEAD "\"seed\":5,\"noise\":{}}", &s, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(s->stages[MPQ_JOB_STAGE_NOISE] && s->stages[MPQ_JOB_STAGE_WEIGHT_ERROR] &&
              s->stages[MPQ_JOB_STAGE_LAYER_SENSITIVITY]);
    ck_assert_int_eq(s->noise.n_levels, 3);
    ck_assert_double_eq(s->noise.levels[0], 1e-3);
    ck_assert_double_eq(s->noise.levels[1], 1e-2);
    ck_assert_double_eq(s->noise.levels[2], 1e-1);
    ck_assert_int_eq(s->noise.seed, 5);
    ck_assert_ptr_nonnull(strstr(s->canonical_json, "\"noise\":{\"levels\":[0.001,0.01,0.1],\"seed\":5}"));
    ck_assert_ptr_nonnull(strstr(s->canonical_json, "\"noise_sensitivity\"]"));
    /* the canonical form parses back to the same text (resume re-canonicalizes) */
    mpq_job_spec *s2 = NULL;
    ck_assert_msg(mpq_job_spec_parse(s->canonical_json, "c", &s2, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_str_eq(s2->canonical_json, s->canonical_json);
    mpq_job_spec_free(s2);
    mpq_job_spec_free(s);
    /* listed in metrics without a "noise" section: defaults; explicit levels and seed */
    ck_assert_msg(spec_parse(HEAD "\"metrics\":[\"noise_sensitivity\"],\"noise\":{\"levels\":[0.5],\"seed\":0}}", &s,
                        &err) == MPQ_OK,
                  "%s", err.msg);
    ck_assert(!s->stages[MPQ_JOB_STAGE_WEIGHT_ERROR] && s->stages[MPQ_JOB_STAGE_NOISE]);
    ck_assert_int_eq(s->noise.n_levels, 1);
    ck_assert_int_eq(s->noise.seed, 0);
    mpq_job_spec_free(s);
    ck_assert_msg(spec_parse(HEAD "\"metrics\":[\"noise_sensitivity\"]}", &s, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(s->noise.n_levels, 3);
    mpq_job_spec_free(s);
    /* without the stage: no "noise" in the canonical spec (older specs keep their hash) */
    ck_assert_msg(spec_parse(HEAD "\"metrics\":[\"weight_error\"]}", &s, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(!s->stages[MPQ_JOB_STAGE_NOISE]);
    ck_assert_ptr_null(strstr(s->canonical_json, "noise"));
    mpq_job_spec_free(s);
}
END_TEST

static const struct {
    const char *json, *needle;
} hostile[] = {
    {HEAD "\"noise\":[1]}", "job.json: noise: expected an object"},
    {HEAD "\"noise\":{\"level\":[0.1]}}", "job.json: noise.level: unknown key"},
    {HEAD "\"noise\":{\"levels\":0.1}}", "job.json: noise.levels: expected an array"},
    {HEAD "\"noise\":{\"levels\":[]}}", "job.json: noise.levels: expected 1..8 levels, got 0"},
    {HEAD "\"noise\":{\"levels\":[1,2,3,4,5,6,7,8,9]}}", "job.json: noise.levels: expected 1..8 levels, got 9"},
    {HEAD "\"noise\":{\"levels\":[0]}}", "job.json: noise.levels[0]: expected a finite number in (0, 10]"},
    {HEAD "\"noise\":{\"levels\":[-0.1]}}", "job.json: noise.levels[0]: expected a finite number"},
    {HEAD "\"noise\":{\"levels\":[0.1,1e999]}}", "job.json: noise.levels[1]: expected a finite number"},
    {HEAD "\"noise\":{\"levels\":[0.1,11]}}", "job.json: noise.levels[1]: expected a finite number in (0, 10]"},
    {HEAD "\"noise\":{\"levels\":[0.1,\"0.2\"]}}", "job.json: noise.levels[1]: expected a finite number"},
    {HEAD "\"noise\":{\"levels\":[0.1,0.01]}}", "job.json: noise.levels[1]: 0.01 is not above the previous level"},
    {HEAD "\"noise\":{\"levels\":[0.1,0.1]}}", "strictly increasing"},
    {HEAD "\"noise\":{\"seed\":-1}}", "job.json: noise.seed: expected a non-negative integer"},
    {HEAD "\"noise\":{\"seed\":1.5}}", "job.json: noise.seed: expected a non-negative integer"},
    {HEAD "\"metrics\":[\"weight_error\"],\"noise\":{}}", "job.json: noise: given, but metrics does not list"},
    {HEAD "\"metrics\":[\"noise\"]}", "job.json: metrics[0]: unknown metric 'noise'"},
};

START_TEST(test_noise_hostile) {
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(spec_parse(hostile[_i].json, &s, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, hostile[_i].needle) != NULL, "case %d: '%s' lacks '%s'", _i, err.msg,
                  hostile[_i].needle);
}
END_TEST

START_TEST(test_noise_units) {
    mpq_job_spec *s = NULL;
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(spec_parse(HEAD "\"metrics\":[\"weight_error\",\"noise_sensitivity\"]}", &s, &err) == MPQ_OK, "%s",
                  err.msg);
    ck_assert_int_eq(mpq_model_load(shared_path(FIXTURE_MODEL), &m, &err), MPQ_OK);
    mpq_job_unit *u = NULL;
    int n = 0;
    ck_assert_int_eq(mpq_job_units(s, m, &u, &n, &err), MPQ_OK);
    ck_assert_int_eq(n, 2 * NL); /* one unit per linear layer in each stage */
    ck_assert_int_eq(u[NL].stage, MPQ_JOB_STAGE_NOISE);
    ck_assert_str_eq(u[NL].key, "blk.0.attn_q");
    ck_assert_int_eq(u[NL].linear_index, 0);
    ck_assert_int_eq(u[NL].option, -1);
    ck_assert_str_eq(u[2 * NL - 1].key, "blk.4.ffn_down");
    ck_assert_str_eq(mpq_job_stage_name(MPQ_JOB_STAGE_NOISE), "noise_sensitivity");
    free(u);
    mpq_model_free(m);
    mpq_job_spec_free(s);
}
END_TEST

/* ---- injection and fit ------------------------------------------------------------------- */

START_TEST(test_inject_exact) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_model_load(shared_path(FIXTURE_MODEL), &m, &err), MPQ_OK);
    for (int li = 0; li < NL; li += 17) { /* blk.0.attn_q, blk.2.ffn_down, blk.4.ffn_down */
        const mpq_layer_info *L = mpq_model_linear(m, li);
        const float *w = mpq_weights_linear(mpq_model_get_weights(m), L);
        size_t n = (size_t)L->n_params;
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        ck_assert(a && b);
        static const double ts[] = {1e-4, 1e-3, 1e-2, 1e-1, 1.0};
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
            double t = ts[k], realized = 0;
            ck_assert_int_eq(mpq_job_noise_inject(w, n, t, mpq_job_noise_seed(1, li, (int)k), a, &realized, &err),
                             MPQ_OK);
            double e2 = 0, w2 = 0;
            for (size_t i = 0; i < n; i++) {
                double d = (double)a[i] - (double)w[i];
                e2 += d * d;
                w2 += (double)w[i] * (double)w[i];
            }
            /* Before rounding ||E||^2 = t ||W||^2 up to double rounding (~1e-13 relative). Rounding
             * W_i + E_i to float moves each E_i by d_i, |d_i| <= 2^-24 |W_i + E_i|, so
             * | ||E + d||^2 - ||E||^2 | <= 2 ||E|| ||d|| + ||d||^2 <= 2^-23 ||E|| (||W|| + ||E||) (1 + 2^-24),
             * i.e. relative to t ||W||^2 at most 2^-23 (1/sqrt(t) + 1) (1 + 2^-24). */
            double tol = ldexp(1.0, -23) * (1.0 / sqrt(t) + 1.0) * (1.0 + ldexp(1.0, -24)) + 1e-12;
            ck_assert_double_eq_tol(e2 / w2, t, tol * t);
            ck_assert_double_eq(realized, e2 / w2); /* the function reports the same sums */
            /* same seed: the same bytes; another seed: other noise of the same size */
            double r2 = 0;
            ck_assert_int_eq(mpq_job_noise_inject(w, n, t, mpq_job_noise_seed(1, li, (int)k), b, &r2, &err), MPQ_OK);
            ck_assert_int_eq(memcmp(a, b, n * sizeof *a), 0);
            ck_assert_int_eq(mpq_job_noise_inject(w, n, t, mpq_job_noise_seed(2, li, (int)k), b, &r2, &err), MPQ_OK);
            ck_assert_int_ne(memcmp(a, b, n * sizeof *a), 0);
            ck_assert_double_eq_tol(r2, t, tol * t);
        }
        /* bad inputs */
        ck_assert_int_eq(mpq_job_noise_inject(w, n, 0.0, 1, a, NULL, &err), MPQ_ERR_INVALID);
        ck_assert_int_eq(mpq_job_noise_inject(w, n, NAN, 1, a, NULL, &err), MPQ_ERR_INVALID);
        memset(b, 0, n * sizeof *b);
        ck_assert_int_eq(mpq_job_noise_inject(b, n, 0.1, 1, a, NULL, &err), MPQ_ERR_INVALID);
        ck_assert_ptr_nonnull(strstr(err.msg, "norm 0"));
        free(a);
        free(b);
    }
    /* seeds of distinct (seed, layer, level) are distinct */
    ck_assert(mpq_job_noise_seed(1, 0, 1) != mpq_job_noise_seed(1, 1, 0));
    ck_assert(mpq_job_noise_seed(1, 0, 0) != mpq_job_noise_seed(2, 0, 0));
    mpq_model_free(m);
}
END_TEST

START_TEST(test_fit) {
    const double t[3] = {1e-3, 1e-2, 1e-1};
    double kl[3], a, se, resid;
    /* exactly linear: each kl_i / t_i is 0.7 to one rounding of kl_i and one of the division,
     * so a is 0.7 within 3 ulp, the sd of the ratios within a few ulp, the residual ~1e-16 */
    for (int i = 0; i < 3; i++) kl[i] = 0.7 * t[i];
    mpq_job_noise_fit(t, kl, 3, &a, &se, &resid);
    ck_assert_double_eq_tol(a, 0.7, 4 * DBL_EPSILON);
    ck_assert_double_le(se, 4 * DBL_EPSILON);
    ck_assert_double_le(resid, 8 * DBL_EPSILON);
    /* kl_i = a0 t_i (1 + e_i): a = a0 (1 + mean e), resid = RMS of (1+e_i)/(1+mean e) - 1 */
    const double e[3] = {0.1, -0.2, 0.4}, a0 = 2.0, me = (0.1 - 0.2 + 0.4) / 3;
    for (int i = 0; i < 3; i++) kl[i] = a0 * t[i] * (1 + e[i]);
    mpq_job_noise_fit(t, kl, 3, &a, &se, &resid);
    ck_assert_double_eq_tol(a, a0 * (1 + me), 1e-14);
    double ss = 0, rr = 0;
    for (int i = 0; i < 3; i++) {
        ss += (a0 * e[i] - a0 * me) * (a0 * e[i] - a0 * me);
        double q = (1 + e[i]) / (1 + me) - 1;
        rr += q * q;
    }
    ck_assert_double_eq_tol(se, sqrt(ss / 2) / sqrt(3.0), 1e-14);
    ck_assert_double_eq_tol(resid, sqrt(rr / 3), 1e-14);
    /* one level: the slope of that point, no spread */
    mpq_job_noise_fit(t + 2, kl + 2, 1, &a, &se, &resid);
    ck_assert_double_eq(a, kl[2] / t[2]);
    ck_assert_double_eq(se, 0.0);
    /* all zero: a = 0, resid 0; a zero slope with a non-zero point: resid +inf */
    const double z[2] = {0, 0}, nz[2] = {1e-3, -1e-3};
    mpq_job_noise_fit(t, z, 2, &a, &se, &resid);
    ck_assert(a == 0 && resid == 0);
    mpq_job_noise_fit((const double[]){1e-2, 1e-2}, nz, 2, &a, &se, &resid);
    ck_assert(a == 0 && isinf(resid));
}
END_TEST

/* mpq_calib_layer_weights with the candidate's Q(W) is bitwise mpq_calib_layer. */
START_TEST(test_calib_layer_weights) {
    mpq_model *m = NULL;
    mpq_calib *cal = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_model_load(shared_path(FIXTURE_MODEL), &m, &err), MPQ_OK);
    int tokens[4 * 33];
    for (int i = 0; i < 4 * 33; i++) tokens[i] = (i * 37 + 11) % 512;
    mpq_calib_opts co = mpq_calib_opts_default();
    co.batch = 2;
    ck_assert_int_eq(mpq_calib_create(m, tokens, 4, 32, &co, &cal, &err), MPQ_OK);
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse("int3g32", &c, &err), MPQ_OK);
    for (int li = 3; li < NL; li += 11) {
        const mpq_layer_info *L = mpq_model_linear(m, li);
        float *q = malloc((size_t)L->n_params * sizeof *q);
        ck_assert_ptr_nonnull(q);
        memcpy(q, mpq_weights_linear(mpq_model_get_weights(m), L), (size_t)L->n_params * sizeof *q);
        mpq_quantize_matrix(&c, q, L->rows, L->cols);
        mpq_calib_result r1, r2;
        ck_assert_int_eq(mpq_calib_layer(cal, li, &c, &r1, &err), MPQ_OK);
        ck_assert_int_eq(mpq_calib_layer_weights(cal, li, q, &r2, &err), MPQ_OK);
        ck_assert(r1.kl == r2.kl && r1.kl_se == r2.kl_se && r1.dloss == r2.dloss && r1.top1 == r2.top1);
        ck_assert_double_gt(r1.kl, 0);
        free(q);
    }
    ck_assert_int_eq(mpq_calib_layer_weights(cal, NL, tokens == NULL ? NULL : (const float *)tokens, NULL, &err),
                     MPQ_ERR_INVALID);
    mpq_calib_free(cal);
    mpq_model_free(m);
}
END_TEST

/* ---- the stage in a job ------------------------------------------------------------------ */

static const char *job_spec = HEAD "\"metrics\":[\"weight_error\",\"noise_sensitivity\"],\"noise\":{\"seed\":3}}";

START_TEST(test_job_resume_workers) {
    char dir[512];
    test_tmpdir(dir, sizeof dir);
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_msg(spec_parse(job_spec, &s, &err) == MPQ_OK, "%s", err.msg);
    mpq_db *a = fixture_open_db(dir, "a.db"), *b = fixture_open_db(dir, "b.db");
    mpq_job_opts o1 = mpq_job_opts_default();
    o1.n_workers = 1;
    int64_t id = 0;
    ck_assert_msg(mpq_job_run(a, s, &o1, &id, &err) == MPQ_OK, "%s", err.msg);
    /* 2 workers, stopped twice inside the noise stage, then resumed */
    mpq_job_opts o2 = mpq_job_opts_default();
    o2.n_workers = 2;
    o2.max_units = NL + 5;
    ck_assert_int_eq(mpq_job_run(b, s, &o2, NULL, &err), MPQ_ERR_INTERRUPTED);
    o2.max_units = 12;
    ck_assert_int_eq(mpq_job_resume(b, "n", &o2, &err), MPQ_ERR_INTERRUPTED);
    o2.max_units = 0;
    ck_assert_msg(mpq_job_resume(b, "n", &o2, &err) == MPQ_OK, "%s", err.msg);
    mpq_db_table *ta = fixture_dump(a, "1"), *tb = fixture_dump(b, "1");
    /* 35 layers x (2 candidates x 4 weight rows + xtx) + 35 x (3 noise_kl + noise_a + noise_resid) */
    ck_assert_int_eq(ta->n_rows, NL * 9 + NL * 5);
    ck_assert_int_eq(tb->n_rows, ta->n_rows);
    for (int i = 0; i < ta->n_rows * ta->n_cols; i++) {
        const char *x = ta->cells[i] ? ta->cells[i] : "NULL", *y = tb->cells[i] ? tb->cells[i] : "NULL";
        ck_assert_msg(strcmp(x, y) == 0, "cell %d differs: %s vs %s", i, x, y);
    }
    mpq_db_table_free(ta);
    mpq_db_table_free(tb);
    /* the rows are the fit of the stored levels: noise_a = mean kl_i / realized t_i */
    mpq_db_job j;
    ck_assert_int_eq(mpq_db_job_get(a, id, &j, &err), MPQ_OK);
    int64_t lid = 0;
    ck_assert_int_eq(mpq_db_layer_find(a, j.model_id, "blk.1.attn_k", &lid, &err), MPQ_OK);
    double kl[3], na, na_se, resid;
    static const char *names[3] = {"noise_kl_0", "noise_kl_1", "noise_kl_2"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(mpq_db_metric_get(a, id, lid, "", names[i], &kl[i], NULL, NULL, &err), MPQ_OK);
        ck_assert_double_gt(kl[i], 0);
        if (i) ck_assert_double_gt(kl[i], kl[i - 1]); /* a decade more noise, more KL */
    }
    ck_assert_int_eq(mpq_db_metric_get(a, id, lid, "", "noise_a", &na, &na_se, NULL, &err), MPQ_OK);
    ck_assert_int_eq(mpq_db_metric_get(a, id, lid, "", "noise_resid", &resid, NULL, NULL, &err), MPQ_OK);
    ck_assert_double_gt(na, 0);
    ck_assert(isfinite(na_se) && isfinite(resid) && resid >= 0);
    /* realized levels are within float rounding of the requested ones (test_inject_exact's bound
     * at t = 1e-3: 2^-23 (1/sqrt(1e-3) + 1) < 4e-6 relative), so the mean of kl_i / t_i over the
     * requested levels matches noise_a to that */
    double m = (kl[0] / 1e-3 + kl[1] / 1e-2 + kl[2] / 1e-1) / 3;
    ck_assert_double_eq_tol(na, m, 4e-6 * m);
    mpq_db_close(a);
    mpq_db_close(b);
    mpq_job_spec_free(s);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- products in metric expressions, random configurations -------------------------------- */

START_TEST(test_products_and_random) {
    char dir[512];
    test_tmpdir(dir, sizeof dir);
    mpq_job_spec *s = NULL;
    mpq_err err = {0};
    ck_assert_msg(spec_parse(job_spec, &s, &err) == MPQ_OK, "%s", err.msg);
    mpq_db *db = fixture_open_db(dir, "p.db");
    ck_assert_msg(mpq_job_run(db, s, NULL, NULL, &err) == MPQ_OK, "%s", err.msg);
    mpq_job *job = NULL;
    ck_assert_int_eq(mpq_job_open(db, "n", &job, &err), MPQ_OK);
    mpq_jobsolve_opts o = mpq_jobsolve_opts_default();
    o.smooth = false;
    int64_t jid = mpq_job_get_row(job)->id;
    static const char *same[] = {"noise_a*weight_rel", "weight_rel * noise_a", "2*noise_a*weight_rel"};
    for (int k = 0; k < 3; k++) {
        o.metric = same[k];
        mpq_jobsolve_problem *p = NULL;
        ck_assert_msg(mpq_jobsolve_problem_build(job, &o, &p, &err) == MPQ_OK, "%s: %s", same[k], err.msg);
        for (int l = 0; l < p->n_layers; l += 5)
            for (int c = 0; c < p->n_options; c++) {
                double a, r;
                ck_assert_int_eq(mpq_db_metric_get(db, jid, p->layers[l].id, "", "noise_a", &a, NULL, NULL, &err),
                                 MPQ_OK);
                ck_assert_int_eq(
                    mpq_db_metric_get(db, jid, p->layers[l].id, p->options[c], "weight_rel", &r, NULL, NULL, &err),
                    MPQ_OK);
                /* w * r * a: exact products in double, the same operations in the same order */
                ck_assert_double_eq(p->layer_loss[(size_t)l * (size_t)p->n_options + (size_t)c],
                                    (k == 2 ? 2.0 : 1.0) * (r * a));
            }
        mpq_jobsolve_problem_free(p);
    }
    static const struct {
        const char *expr, *needle;
    } bad[] = {
        {"weight_rel*weight_sse", "two per-candidate metrics"},
        {"noise_a*xtx_trace", "two per-layer metrics"},
        {"noise_a*kl", "'kl' is not stored for job 'n'"},
        {"nosuch*weight_rel", "'nosuch' is not stored"},
        {"noise_a*weight_rel*act_rel", "at most two metrics in a product"},
        {"noise_a*0.5", "expected a metric name after '*'"},
        {"noise_a*", "expected a metric name after '*'"},
        {"noise_a", "metric 'noise_a' missing for layer blk.0.attn_q"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        o.metric = bad[k].expr;
        mpq_jobsolve_problem *p = NULL;
        ck_assert_int_eq(mpq_jobsolve_problem_build(job, &o, &p, &err), MPQ_ERR_INVALID);
        ck_assert_ptr_null(p);
        ck_assert_msg(strstr(err.msg, bad[k].needle) != NULL, "'%s': '%s' lacks '%s'", bad[k].expr, err.msg,
                      bad[k].needle);
    }
    /* random configurations: stored with solver "random", measured, reproducible, kept */
    int64_t ids[4], ids2[4];
    int reused = -1;
    ck_assert_msg(mpq_jobsolve_random(job, "noise_a*weight_rel", 4, 7, ids, &reused, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(reused, 0);
    ck_assert_msg(mpq_jobsolve_random(job, "weight_rel", 4, 7, ids2, &reused, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(reused, 4); /* same seed: same assignments, already measured */
    for (int k = 0; k < 4; k++) ck_assert_int_eq(ids2[k], ids[k]);
    mpq_db_solution sol;
    mpq_db_assignment *as = NULL;
    int n_as = 0;
    memset(&sol, 0, sizeof sol);
    ck_assert_int_eq(mpq_db_solution_get(db, ids[1], &sol, &as, &n_as, &err), MPQ_OK);
    ck_assert_str_eq(sol.solver, "random");
    ck_assert_str_eq(sol.name, "random-7-1");
    ck_assert_int_eq(n_as, NL);
    int n_int8 = 0;
    for (int l = 0; l < n_as; l++) {
        ck_assert(strcmp(as[l].candidate, "int3g32") == 0 || strcmp(as[l].candidate, "int8c") == 0);
        n_int8 += strcmp(as[l].candidate, "int8c") == 0;
    }
    /* uniform over 2 candidates: 35 fair draws are not all alike (p = 2^-34) */
    ck_assert(n_int8 > 0 && n_int8 < NL);
    free(as);
    mpq_db_solution_release(&sol);
    mpq_jobsolve_compare_row *rows = NULL;
    int nr = 0, nu = 0;
    double rho = NAN;
    ck_assert_int_eq(mpq_jobsolve_compare(job, "noise_a*weight_rel", &rows, &nr, &rho, &nu, &err), MPQ_OK);
    ck_assert_int_eq(nr, 4);
    for (int k = 0; k < nr; k++) ck_assert(isfinite(rows[k].predicted) && rows[k].kl > 0);
    free(rows);
    ck_assert_int_eq(mpq_jobsolve_random(job, "kl", 1, 7, ids, NULL, &err), MPQ_ERR_INVALID); /* kl not stored */
    ck_assert_int_eq(mpq_jobsolve_random(job, "weight_rel", 0, 7, ids, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_jobsolve_random(job, "weight_rel", MPQ_JOBSOLVE_RANDOM_MAX + 1, 7, ids, NULL, &err),
                     MPQ_ERR_INVALID);
    mpq_job_close(job);
    mpq_db_close(db);
    mpq_job_spec_free(s);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *job_noise_suite(void) {
    Suite *s = suite_create("job_noise");
    TCase *tc = tcase_create("spec");
    tcase_add_test(tc, test_noise_defaults);
    tcase_add_loop_test(tc, test_noise_hostile, 0, (int)(sizeof hostile / sizeof hostile[0]));
    tcase_add_test(tc, test_noise_units);
    tcase_add_test(tc, test_inject_exact);
    tcase_add_test(tc, test_fit);
    suite_add_tcase(s, tc);
    TCase *td = tcase_create("job");
    tcase_set_timeout(td, 600);
    tcase_add_test(td, test_calib_layer_weights);
    tcase_add_test(td, test_job_resume_workers);
    tcase_add_test(td, test_products_and_random);
    suite_add_tcase(s, td);
    return s;
}

int main(void) { return test_run_suite(job_noise_suite(), false) == 0 ? EXIT_SUCCESS : EXIT_FAILURE; }
