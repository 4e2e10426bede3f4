/* test_hutch_se.c - the standard errors of the Hutchinson per-layer traces
 * (src/calib/hutchinson.c, mpq_hessian.h) on the real stories260K:
 * - the stored se is the per-PROBE formula: sample sd (n - 1) of x_l = v_l . (H v)_l over the
 *   probes, divided by sqrt(probes), checked against the probes replayed here (same generator,
 *   same order) - not a per-chunk or per-batch quantity, and not the population sd;
 * - the se is calibrated: R independent runs (seeds 0..R-1) of P probes each scatter around
 *   their common mean by what their se say. For every layer, z_r = (t_r - mean_s t_s) / se_r;
 *   pooled over L layers, mean z^2 estimates (R-1)/R * (true variance / se^2) and, with
 *   calibrated se, is close to (R-1)/R. It catches se off by a constant factor, e.g. the chunk
 *   of probes_per_unit probes taken as the unit (factor sqrt(chunk)) or the division by
 *   sqrt(probes) forgotten (factor sqrt(P)).
 * Tolerance of the pooled check: with calibrated se, each z_r is Student-like with P - 1 = 15
 * degrees of freedom in its se, so E z^2 ~ (R-1)/R * 15/13 = 1.08 for R = P = 16. The layers
 * share their probes (one whole-model v per probe), so the L*R values are not independent; in
 * the worst case (fully correlated layers) only the R runs are, and the pooled mean has sd
 * <= sqrt(2 * 1.2 / R) ~ 0.39 (~0.07 were the layers independent). Allowed: [0.45, 2.0] - a
 * factor sqrt(2) in the se (2x in variance) is not reliably caught, but the errors this guards
 * against (factors sqrt(10), sqrt(16): z^2 off by 10x, 16x) are far outside. Measured: 1.110. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_hessian.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_rng.h"
#include "test_main.h"
#include "test_util.h"

#define M260 "models/stories260K/stories260K.bin"
#define CALIB_TOK "data/tinystories-calib.tok512.u16"

enum { NS = 1, TT = 16, P = 16, R = 16 };

static int *read_windows(int n_seqs, int T) {
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(CALIB_TOK), &nb);
    ck_assert_msg(raw != NULL, "cannot read %s", CALIB_TOK);
    size_t need = (size_t)n_seqs * (T + 1);
    ck_assert(nb / 2 >= need);
    int *t = malloc(need * sizeof(int));
    for (size_t i = 0; i < need; i++) t[i] = raw[2 * i] | (raw[2 * i + 1] << 8);
    free(raw);
    return t;
}

static mpq_hessian_trace *run(mpq_hessian *hs, uint64_t seed) {
    mpq_hessian_trace_opts o = mpq_hessian_trace_opts_default();
    o.seed = seed;
    o.min_probes = o.max_probes = P; /* a fixed count: no stopping rule in play */
    mpq_hessian_trace *tr = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_hessian_trace_run(hs, &o, &tr, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(tr->n_probes, P);
    return tr;
}

START_TEST(test_se_is_per_probe) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(M260), &m, &err) == MPQ_OK, "%s", err.msg);
    int *tok = read_windows(NS, TT);
    mpq_hessian *hs = NULL;
    ck_assert(mpq_hessian_create(m, NULL, tok, NS, TT, NULL, &hs, &err) == MPQ_OK);
    mpq_hessian_trace *tr = run(hs, 5);
    const size_t n = mpq_hessian_n_params(hs);
    const int nl = mpq_model_n_linear(m);
    float *v = calloc(n, sizeof(float)), *hv = calloc(n, sizeof(float));
    double *x = calloc((size_t)P * nl, sizeof(double));
    mpq_rng r;
    mpq_rng_seed(&r, 5);
    for (int k = 0; k < P; k++) {
        mpq_rng_rademacher(&r, v, n);
        ck_assert(mpq_hessian_hvp(hs, v, hv, &err) == MPQ_OK);
        for (int l = 0; l < nl; l++) {
            size_t off = mpq_hessian_layer_offset(hs, l);
            double s = 0;
            for (int64_t i = 0; i < mpq_model_linear(m, l)->n_params; i++) s += (double)v[off + i] * hv[off + i];
            x[(size_t)k * nl + l] = s;
        }
    }
    for (int l = 0; l < nl; l++) {
        double mean = 0, ss = 0;
        for (int k = 0; k < P; k++) mean += x[(size_t)k * nl + l];
        mean /= P;
        for (int k = 0; k < P; k++) ss += (x[(size_t)k * nl + l] - mean) * (x[(size_t)k * nl + l] - mean);
        double se = sqrt(ss / (P - 1) / P);
        /* same probes, same HVPs (deterministic); the sums differ only in the order of the
         * double additions (one-pass sum of squares there, two-pass here): relative 1e-9 */
        ck_assert_double_eq_tol(tr->layers[l].trace, mean, 1e-9 * (fabs(mean) + se));
        ck_assert_double_eq_tol(tr->layers[l].se, se, 1e-6 * se);
    }
    free(v);
    free(hv);
    free(x);
    mpq_hessian_trace_free(tr);
    mpq_hessian_free(hs);
    free(tok);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_se_calibrated) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(M260), &m, &err) == MPQ_OK, "%s", err.msg);
    int *tok = read_windows(NS, TT);
    mpq_hessian *hs = NULL;
    ck_assert(mpq_hessian_create(m, NULL, tok, NS, TT, NULL, &hs, &err) == MPQ_OK);
    const int nl = mpq_model_n_linear(m);
    mpq_hessian_trace *tr[R];
    for (int s = 0; s < R; s++) tr[s] = run(hs, (uint64_t)s);
    double z2 = 0;
    int nz = 0;
    for (int l = 0; l < nl; l++) {
        double mean = 0;
        for (int s = 0; s < R; s++) mean += tr[s]->layers[l].trace;
        mean /= R;
        double lz2 = 0;
        for (int s = 0; s < R; s++) {
            double z = (tr[s]->layers[l].trace - mean) / tr[s]->layers[l].se;
            lz2 += z * z;
        }
        z2 += lz2;
        nz += R;
    }
    double pooled = z2 / nz;
    printf("hutchinson se calibration: %d runs x %d probes, %d layers: pooled mean z^2 = %.3f "
           "(calibrated: about (R-1)/R * (P-1)/(P-3) = %.3f)\n",
           R, P, nl, pooled, (R - 1.0) / R * (P - 1.0) / (P - 3.0));
    ck_assert_double_ge(pooled, 0.45);
    ck_assert_double_le(pooled, 2.0);
    for (int s = 0; s < R; s++) mpq_hessian_trace_free(tr[s]);
    mpq_hessian_free(hs);
    free(tok);
    mpq_model_free(m);
}
END_TEST

static Suite *hutch_se_suite(void) {
    Suite *s = suite_create("hutch_se");
    TCase *t = tcase_create("se");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, test_se_is_per_probe);
    tcase_add_test(t, test_se_calibrated);
    suite_add_tcase(s, t);
    return s;
}

TEST_MAIN(hutch_se_suite)
