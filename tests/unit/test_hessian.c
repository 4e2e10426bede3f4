/* test_hessian.c - unit tests of src/calib/hessian.c (mpq_hessian.h).
 *
 * On a tiny GQA llama built in the test (dim 8, 1 layer, 2 heads / 1 KV head, vocab 16; 728
 * parameters) the whole Hessian is formed column by column from Hv products and checked
 * against second differences of an independent double-precision reference loss
 * (tests/unit/ref_llama.h) on a subset of parameters spanning every tensor, for several
 * finite-difference steps (this is the measurement behind the default fd_step). Against that
 * H (symmetrised; eigen-decomposed with LAPACKE_dsyev): Hutchinson per-layer traces within 4
 * reported standard errors, per-layer and whole-model top eigenvalues (power iteration, with
 * deflation), SLQ nodes spanning the spectrum with weights summing to 1, same seed => identical.
 * The resumable Hutchinson estimator: begin / step / save / load / step ... in uneven pieces ==
 * mpq_hessian_trace_run, bit for bit (and the final saved states byte-equal); a table of hostile
 * saved states (truncated, wrong version or format, other layer or parameter count, other
 * settings, NaN sums, out-of-range counts, a dead generator) refused with MPQ_ERR_FORMAT.
 * On the real stories260K: per-layer traces finite, mostly positive, with standard errors;
 * Fisher traces; Omega for a real candidate. */
#include <check.h>
#include <cjson/cJSON.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_hessian.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "ref_llama.h"
#include "test_util.h"
#include "test_main.h"

#define M260 "models/stories260K/stories260K.bin"
#define CALIB_TOK "data/tinystories-calib.tok512.u16"

enum { TB = 2, TT = 8, NSUB = 24 };

/* Shared fixture: tiny model, its tokens, its Hessian from Hv (n x n, column-major = row-major
 * after symmetrisation), eigenvalues. Built once. */
static mpq_model *tiny;
static int tiny_tok[TB * (TT + 1)];
static double *H;      /* n x n, symmetrised */
static double *evals;  /* n ascending */
static size_t n_par;

static mpq_hessian *make_hs(const mpq_model *m, const int *tok, int ns, int T, int batch, double step) {
    mpq_hessian *hs = NULL;
    mpq_err err = {0};
    mpq_hessian_opts o = mpq_hessian_opts_default();
    o.batch = batch;
    if (step > 0) o.fd_step = step;
    ck_assert_msg(mpq_hessian_create(m, NULL, tok, ns, T, &o, &hs, &err) == MPQ_OK, "%s", err.msg);
    return hs;
}

static void tiny_setup(void) {
    if (tiny) return;
    tiny = rd_tiny_model(false, 21);
    uint64_t s = 22;
    for (int i = 0; i < TB * (TT + 1); i++) tiny_tok[i] = (int)(rd_rng(&s) % 16);
    mpq_hessian *hs = make_hs(tiny, tiny_tok, TB, TT, 1, 0);
    n_par = mpq_hessian_n_params(hs);
    size_t n = n_par;
    H = malloc(n * n * sizeof(double));
    float *e = calloc(n, sizeof(float)), *hv = calloc(n, sizeof(float));
    mpq_err err = {0};
    for (size_t j = 0; j < n; j++) {
        e[j] = 1.0f;
        ck_assert(mpq_hessian_hvp(hs, e, hv, &err) == MPQ_OK);
        e[j] = 0.0f;
        for (size_t i = 0; i < n; i++) H[i * n + j] = hv[i];
    }
    double asym = 0, hmax = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++) {
            double a = H[i * n + j], b = H[j * n + i];
            asym = fmax(asym, fabs(a - b));
            hmax = fmax(hmax, fabs(a));
            H[i * n + j] = H[j * n + i] = 0.5 * (a + b);
        }
    printf("hessian tiny: n=%zu  max|H|=%.3e  max asymmetry of H from Hv=%.3e\n", n, hmax, asym);
    double *A = malloc(n * n * sizeof(double));
    memcpy(A, H, n * n * sizeof(double));
    evals = malloc(n * sizeof(double));
    ck_assert_int_eq(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', (lapack_int)n, A, (lapack_int)n, evals), 0);
    printf("hessian tiny: exact spectrum [%.5f, %.5f]; lowest %.5f %.5f %.5f, highest %.5f %.5f\n", evals[0],
           evals[n - 1], evals[0], evals[1], evals[2], evals[n - 2], evals[n - 1]);
    free(A);
    free(e);
    free(hv);
    mpq_hessian_free(hs);
}

static void tiny_teardown(void) {}

/* Exact per-layer traces / block from H. */
static double block_trace(const mpq_hessian *hs, int i) {
    size_t off = mpq_hessian_layer_offset(hs, i), len = (size_t)mpq_model_linear(tiny, i)->n_params;
    double t = 0;
    for (size_t k = off; k < off + len; k++) t += H[k * n_par + k];
    return t;
}

START_TEST(test_hv_vs_second_differences) {
    /* Subset S: NSUB parameters spread over the flat vector (every tensor gets some).
     * Reference: second differences of the double loss with h = 2^-10:
     *   H_ij ~ [f(+i+j) - f(+i-j) - f(-i+j) + f(-i-j)] / (4 h^2),
     * truncation O(h^2 f'''') ~ 1e-6 relative, rounding eps64 * |f| / h^2 ~ 3e-10. */
    const mpq_weights *w = mpq_model_get_weights(tiny);
    const mpq_model_config *cfg = mpq_model_get_config(tiny);
    size_t S[NSUB];
    for (int a = 0; a < NSUB; a++) S[a] = (size_t)a * (n_par - 1) / (NSUB - 1);
    double *wd = rd_weights_to_double(w);
    const double h = 1.0 / 1024;
    double Hfd[NSUB][NSUB];
    for (int a = 0; a < NSUB; a++)
        for (int b = 0; b <= a; b++) {
            double f[4], sg[4][2] = {{1, 1}, {1, -1}, {-1, 1}, {-1, -1}};
            for (int q = 0; q < 4; q++) {
                double xa = wd[S[a]], xb = wd[S[b]];
                wd[S[a]] += sg[q][0] * h;
                wd[S[b]] += sg[q][1] * h;
                f[q] = rd_model_loss(cfg, w, wd, tiny_tok, TB, TT);
                wd[S[a]] = xa;
                wd[S[b]] = xb;
            }
            Hfd[a][b] = Hfd[b][a] = (f[0] - f[1] - f[2] + f[3]) / (4 * h * h);
        }
    /* error of the Hv columns against Hfd, for several steps */
    const double steps[] = {1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4};
    double err_default = 0;
    float *e = calloc(n_par, sizeof(float)), *hv = calloc(n_par, sizeof(float));
    mpq_err err = {0};
    for (int si = 0; si < 6; si++) {
        mpq_hessian *hs = make_hs(tiny, tiny_tok, TB, TT, 2, steps[si]);
        double num = 0, den = 0;
        for (int b = 0; b < NSUB; b++) {
            e[S[b]] = 1.0f;
            ck_assert(mpq_hessian_hvp(hs, e, hv, &err) == MPQ_OK);
            e[S[b]] = 0.0f;
            for (int a = 0; a < NSUB; a++) {
                num += (hv[S[a]] - Hfd[a][b]) * (hv[S[a]] - Hfd[a][b]);
                den += Hfd[a][b] * Hfd[a][b];
            }
        }
        double rel = sqrt(num / den);
        printf("hessian Hv fd_step %-6g  ||H_hv - H_fd||_F / ||H_fd||_F on %dx%d subset = %.3e\n", steps[si], NSUB,
               NSUB, rel);
        if (steps[si] == mpq_hessian_opts_default().fd_step) err_default = rel;
        mpq_hessian_free(hs);
    }
    /* the symmetrised fixture H (default step) against Hfd too */
    double num = 0, den = 0;
    for (int a = 0; a < NSUB; a++)
        for (int b = 0; b < NSUB; b++) {
            double d = H[S[a] * n_par + S[b]] - Hfd[a][b];
            num += d * d;
            den += Hfd[a][b] * Hfd[a][b];
        }
    printf("hessian fixture H (symmetrised) vs H_fd: rel err %.3e\n", sqrt(num / den));
    /* Default step: truncation (h^2) and float rounding (eps32 |g| / h) balance near 1e-2,
     * where the measured error is ~1e-3; 1e-2 allows for other seeds / platforms. */
    ck_assert_double_le(err_default, 1e-2);
    ck_assert_double_le(sqrt(num / den), 1e-2);
    free(e);
    free(hv);
    free(wd);
}
END_TEST

START_TEST(test_hutchinson_vs_exact) {
    mpq_hessian *hs = make_hs(tiny, tiny_tok, TB, TT, 1, 0);
    mpq_hessian_trace_opts o = mpq_hessian_trace_opts_default();
    o.seed = 7;
    o.max_probes = 150;
    mpq_hessian_trace *tr = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_hessian_trace_run(hs, &o, &tr, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(tr->n_layers, mpq_model_n_linear(tiny));
    int within = 0;
    for (int i = 0; i < tr->n_layers; i++) {
        double ex = block_trace(hs, i);
        const mpq_hessian_layer_trace *L = &tr->layers[i];
        printf("hutchinson tiny %-14s exact %9.4f  est %9.4f +- %.4f  (%d probes, %s) |d|/se %.2f\n",
               mpq_model_linear(tiny, i)->name, ex, L->trace, L->se, L->n_probes,
               L->converged ? "converged" : "max probes", fabs(L->trace - ex) / L->se);
        ck_assert_double_gt(L->se, 0.0);
        /* 4 standard errors: a normal deviate exceeds 4 with probability 6e-5 per layer */
        ck_assert_double_le(fabs(L->trace - ex), 4 * L->se);
        within += fabs(L->trace - ex) <= 2 * L->se;
        ck_assert_double_eq_tol(L->trace_per_param, L->trace / L->n_params, 1e-12 * fabs(L->trace) + 1e-300);
    }
    ck_assert_int_ge(within, 4); /* ~95% expected within 2 se; at least 4 of 7 */
    /* determinism: same seed => identical results */
    mpq_hessian_trace *tr2 = NULL;
    ck_assert(mpq_hessian_trace_run(hs, &o, &tr2, &err) == MPQ_OK);
    ck_assert_int_eq(tr2->n_probes, tr->n_probes);
    ck_assert_int_eq(memcmp(tr->layers, tr2->layers, sizeof *tr->layers * (size_t)tr->n_layers), 0);
    mpq_hessian_trace_free(tr2);
    /* another seed gives other numbers */
    o.seed = 8;
    ck_assert(mpq_hessian_trace_run(hs, &o, &tr2, &err) == MPQ_OK);
    ck_assert(tr2->layers[0].trace != tr->layers[0].trace);
    mpq_hessian_trace_free(tr2);
    /* Omega: Tr/n * sq_err and its propagated stderr */
    double om, ose;
    ck_assert(mpq_hessian_omega(tr, 2, 0.5, &om, &ose, &err) == MPQ_OK);
    ck_assert_double_eq_tol(om, tr->layers[2].trace / tr->layers[2].n_params * 0.5, 1e-12 * fabs(om));
    ck_assert_double_eq_tol(ose, tr->layers[2].se / tr->layers[2].n_params * 0.5, 1e-12 * fabs(ose));
    ck_assert_int_eq(mpq_hessian_omega(tr, 99, 0.5, &om, &ose, &err), MPQ_ERR_INVALID);
    /* bad options */
    o.min_probes = 1;
    ck_assert_int_eq(mpq_hessian_trace_run(hs, &o, &tr2, &err), MPQ_ERR_INVALID);
    mpq_hessian_trace_free(tr);
    mpq_hessian_free(hs);
}
END_TEST

static void same_layer(const mpq_hessian_layer_trace *a, const mpq_hessian_layer_trace *b, int i) {
    ck_assert_msg(a->trace == b->trace && a->se == b->se && a->trace_per_param == b->trace_per_param,
                  "layer %d: %.17g +- %.17g vs %.17g +- %.17g", i, a->trace, a->se, b->trace, b->se);
    ck_assert(a->rse == b->rse || (isinf(a->rse) && isinf(b->rse)));
    ck_assert(a->rel_change == b->rel_change || (isinf(a->rel_change) && isinf(b->rel_change)));
    ck_assert_int_eq(a->n_probes, b->n_probes);
    ck_assert_int_eq(a->converged, b->converged);
    ck_assert_int_eq(a->converged_at, b->converged_at);
    ck_assert_int_eq(a->n_params, b->n_params);
}

/* A run cut into steps of 1, 4, 2, 7, then the rest, saved and reloaded (into a fresh object)
 * after every step, is the uninterrupted run bit for bit. */
START_TEST(test_hutch_resume) {
    mpq_hessian *hs = make_hs(tiny, tiny_tok, TB, TT, 1, 0);
    mpq_hessian_trace_opts o = mpq_hessian_trace_opts_default();
    o.seed = 11;
    o.min_probes = 3;
    o.max_probes = 25;
    mpq_err err = {0};
    mpq_hessian_trace *ref = NULL, *tr = NULL;
    ck_assert_msg(mpq_hessian_trace_run(hs, &o, &ref, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(isfinite(ref->loss));
    mpq_hessian_hutch *h = NULL, *u = NULL;
    ck_assert_int_eq(mpq_hessian_hutch_begin(hs, &o, &h, &err), MPQ_OK);
    ck_assert_int_eq(mpq_hessian_hutch_finish(h, &tr, &err), MPQ_ERR_INVALID); /* no probes yet */
    const int steps[] = {1, 4, 2, 7, 1000};
    for (size_t j = 0; j < sizeof steps / sizeof steps[0] && !mpq_hessian_hutch_done(h); j++) {
        int k0 = mpq_hessian_hutch_n_probes(h);
        ck_assert_msg(mpq_hessian_hutch_step(h, steps[j], &err) == MPQ_OK, "%s", err.msg);
        int k1 = mpq_hessian_hutch_n_probes(h);
        ck_assert(k1 == k0 + steps[j] || (mpq_hessian_hutch_done(h) && k1 < k0 + steps[j]));
        void *blob = NULL;
        size_t n = 0;
        ck_assert_int_eq(mpq_hessian_hutch_save(h, &blob, &n, &err), MPQ_OK);
        ck_assert_uint_eq(strlen(blob), n);
        mpq_hessian_hutch_free(h);
        h = NULL;
        ck_assert_msg(mpq_hessian_hutch_load(hs, &o, blob, n, &h, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_int_eq(mpq_hessian_hutch_n_probes(h), k1);
        free(blob);
    }
    ck_assert(mpq_hessian_hutch_done(h));
    ck_assert_int_eq(mpq_hessian_hutch_step(h, 5, &err), MPQ_OK); /* done: no more probes */
    ck_assert_int_eq(mpq_hessian_hutch_n_probes(h), ref->n_probes);
    ck_assert_int_eq(mpq_hessian_hutch_finish(h, &tr, &err), MPQ_OK);
    ck_assert_int_eq(tr->n_probes, ref->n_probes);
    ck_assert_int_eq(tr->converged, ref->converged);
    ck_assert(isnan(tr->loss));
    for (int i = 0; i < ref->n_layers; i++) same_layer(&tr->layers[i], &ref->layers[i], i);
    /* the state itself: uninterrupted == resumed, byte for byte */
    ck_assert_int_eq(mpq_hessian_hutch_begin(hs, &o, &u, &err), MPQ_OK);
    ck_assert_int_eq(mpq_hessian_hutch_step(u, o.max_probes, &err), MPQ_OK);
    void *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    ck_assert_int_eq(mpq_hessian_hutch_save(h, &b1, &n1, &err), MPQ_OK);
    ck_assert_int_eq(mpq_hessian_hutch_save(u, &b2, &n2, &err), MPQ_OK);
    ck_assert_uint_eq(n1, n2);
    ck_assert_int_eq(memcmp(b1, b2, n1), 0);
    ck_assert_int_eq(mpq_hessian_hutch_step(u, -1, &err), MPQ_ERR_INVALID);
    free(b1);
    free(b2);
    mpq_hessian_hutch_free(u);
    mpq_hessian_hutch_free(h);
    mpq_hessian_trace_free(tr);
    mpq_hessian_trace_free(ref);
    mpq_hessian_free(hs);
}
END_TEST

/* Hostile saved states: path = top-level key or "key.index[.index]" set to the JSON text value
 * (NULL: delete the key); "!truncate" cuts the blob in half, "!empty" gives 0 bytes. */
static const struct {
    const char *path, *value, *needle;
} bad_blob[] = {
    {"!truncate", NULL, "hutchinson state: not a JSON object"},
    {"!empty", NULL, "hutchinson state: not a JSON object (0 bytes"},
    {"version", "3", "version 3: this build reads versions 1 and 2"},
    {"version", "\"2\"", "version nan: this build reads"},
    {"format", "\"other\"", "format: expected \"mpq.hutchinson\""},
    {"format", NULL, "format: expected"},
    {"n_layers", "6", "layer count 6 differs from the model's 7"},
    {"n_layers", "7.5", "layer count -1 differs"},
    {"n_floats", "\"12\"", "parameter count 12 differs from the model's"},
    {"n_floats", "12", "parameter count (missing) differs"},
    {"seed", "\"5\"", "seed 5 differs from the run's 11"},
    {"seed", "11", "seed: expected a decimal string"},
    {"seed", "\"99999999999999999999\"", "seed: expected a decimal string"},
    {"max_probes", "26", "probes 3..26 differ from the run's 3..25"},
    {"tol", "\"0x1p-9\"", "differ from the run's 0.001"},
    {"tol", "\"nan\"", "tol / rse_tol / fd_step: expected finite hex-float strings"},
    {"fd_step", "0.01", "tol / rse_tol / fd_step: expected"},
    {"T", "9", "calibration 2 x 9 tokens differs from the run's 2 x 8"},
    {"probes", "26", "probes: expected an integer in 0..25"},
    {"probes", "-1", "probes: expected an integer"},
    {"probes", "2.5", "probes: expected an integer"},
    {"probes", "1e300", "probes: expected an integer"},
    {"probes", NULL, "probes: expected an integer"},
    {"done", "1", "done: expected true or false"},
    {"done", "true", "done true after 4 probes of 3..25 with not every layer converged"},
    {"probes", "25", "done false after 25 probes of 3..25"},
    {"rng", "[\"0000000000000000\",\"0000000000000000\",\"0000000000000000\",\"0000000000000000\"]",
     "rng: expected 4 strings of 16 hex digits, not all zero"},
    {"rng.2", "\"00000000000000g0\"", "rng: expected"},
    {"rng.3", "\"0\"", "rng: expected"},
    {"layers.6", NULL, "layers: 6 entries, the model has 7"},
    {"layers", "{}", "layers: -1 entries"},
    {"layers.0.0", "\"nan\"", "layers[0]: expected [sum, sumsq >= 0"},
    {"layers.1.1", "\"-0x1p+0\"", "layers[1]: expected"},
    {"layers.2.2", "\"inf\"", "layers[2]: expected"},
    {"layers.3.3", "\"-inf\"", "layers[3]: expected"},
    {"layers.4.3", "\"nan\"", "layers[4]: expected"},
    {"layers.5.4", "5", "layers[5]: expected [sum, sumsq >= 0, mean, rel_change >= 0 (hex floats, no NaN), "
                        "converged_at in 0..4]"},
    {"layers.6.4", "-1", "layers[6]: expected"},
    {"layers.0.0", "1.5", "layers[0]: expected"},
    {"layers.0", "[\"0x1p+0\",\"0x1p+0\",\"0x1p+0\",\"inf\"]", "layers[0]: expected"},
};

/* Replaces (or with value NULL deletes) the item at path in o; false if the path is absent. */
static bool set_path(cJSON *o, const char *path, const char *value) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL, *tok = strtok_r(buf, ".", &save), *next;
    cJSON *parent = o;
    while ((next = strtok_r(NULL, ".", &save))) {
        parent = cJSON_IsArray(parent) ? cJSON_GetArrayItem(parent, atoi(tok)) : cJSON_GetObjectItem(parent, tok);
        if (!parent) return false;
        tok = next;
    }
    cJSON *v = value ? cJSON_Parse(value) : NULL;
    if (value && !v) return false;
    if (cJSON_IsArray(parent)) {
        if (!v) {
            cJSON_DeleteItemFromArray(parent, atoi(tok));
            return true;
        }
        return cJSON_ReplaceItemInArray(parent, atoi(tok), v);
    }
    if (!v) {
        cJSON_DeleteItemFromObjectCaseSensitive(parent, tok);
        return true;
    }
    return cJSON_ReplaceItemInObjectCaseSensitive(parent, tok, v);
}

START_TEST(test_hutch_hostile_state) {
    mpq_hessian *hs = make_hs(tiny, tiny_tok, TB, TT, 1, 0);
    mpq_hessian_trace_opts o = mpq_hessian_trace_opts_default();
    o.seed = 11;
    o.min_probes = 3;
    o.max_probes = 25;
    mpq_err err = {0};
    mpq_hessian_hutch *h = NULL;
    void *good = NULL;
    size_t ng = 0;
    ck_assert_int_eq(mpq_hessian_hutch_begin(hs, &o, &h, &err), MPQ_OK);
    ck_assert_int_eq(mpq_hessian_hutch_step(h, 4, &err), MPQ_OK);
    ck_assert(!mpq_hessian_hutch_done(h));
    ck_assert_int_eq(mpq_hessian_hutch_save(h, &good, &ng, &err), MPQ_OK);
    mpq_hessian_hutch_free(h);
    h = NULL;
    const char *k = bad_blob[_i].path;
    char *blob = NULL;
    size_t n = 0;
    if (strcmp(k, "!truncate") == 0 || strcmp(k, "!empty") == 0) {
        n = k[1] == 't' ? ng / 2 : 0;
        blob = malloc(ng + 1);
        memcpy(blob, good, ng + 1);
    } else {
        cJSON *j = cJSON_ParseWithLength(good, ng);
        ck_assert_msg(set_path(j, k, bad_blob[_i].value), "case %d: path %s", _i, k);
        blob = cJSON_PrintUnformatted(j);
        n = strlen(blob);
        cJSON_Delete(j);
    }
    mpq_status st = mpq_hessian_hutch_load(hs, &o, blob, n, &h, &err);
    ck_assert_msg(st == MPQ_ERR_FORMAT, "case %d (%s): status %d (%s)", _i, k, st, err.msg);
    ck_assert_ptr_null(h);
    ck_assert_msg(strstr(err.msg, bad_blob[_i].needle) != NULL, "case %d: '%s' lacks '%s'", _i, err.msg,
                  bad_blob[_i].needle);
    /* the untouched state loads; with other settings it is refused */
    ck_assert_int_eq(mpq_hessian_hutch_load(hs, &o, good, ng, &h, &err), MPQ_OK);
    mpq_hessian_hutch_free(h);
    h = NULL;
    mpq_hessian_trace_opts o2 = o;
    o2.rse_tol = 0.1;
    ck_assert_int_eq(mpq_hessian_hutch_load(hs, &o2, good, ng, &h, &err), MPQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "rse_tol 0.05"));
    if (k[0] == '!') free(blob);
    else cJSON_free(blob);
    free(good);
    mpq_hessian_free(hs);
}
END_TEST

START_TEST(test_eigs_vs_exact) {
    mpq_hessian *hs = make_hs(tiny, tiny_tok, TB, TT, 2, 0);
    mpq_err err = {0};
    mpq_hessian_eig_opts o = mpq_hessian_eig_opts_default();
    o.max_iter = 300;
    o.tol = 1e-6;
    /* per layer: the dominant eigenvalue of the diagonal block */
    for (int i = 0; i < mpq_model_n_linear(tiny); i++) {
        size_t off = mpq_hessian_layer_offset(hs, i), len = (size_t)mpq_model_linear(tiny, i)->n_params;
        double *A = malloc(len * len * sizeof(double)), *ev = malloc(len * sizeof(double));
        for (size_t a = 0; a < len; a++)
            for (size_t b = 0; b < len; b++) A[a * len + b] = H[(off + a) * n_par + off + b];
        ck_assert_int_eq(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', (lapack_int)len, A, (lapack_int)len, ev), 0);
        double dom = fabs(ev[0]) > fabs(ev[len - 1]) ? ev[0] : ev[len - 1];
        double lam = 0;
        int it = 0;
        ck_assert(mpq_hessian_top_eig_layer(hs, i, &o, &lam, &it, &err) == MPQ_OK);
        printf("eig tiny %-14s exact %9.5f  power %9.5f  (%d iterations)\n", mpq_model_linear(tiny, i)->name, dom,
               lam, it);
        /* power iteration converges like (|l2|/|l1|)^(2k) in the Rayleigh quotient; with 300
         * iterations and tol 1e-6 the result is within the Hv error (~1e-3) plus 1e-2 of
         * slow gaps: 2e-2 relative */
        ck_assert_double_eq_tol(lam, dom, 2e-2 * fabs(dom));
        free(A);
        free(ev);
    }
    /* whole model, top 2 with deflation */
    double lams[2];
    ck_assert(mpq_hessian_top_eigs(hs, 2, &o, lams, NULL, &err) == MPQ_OK);
    double d1 = fabs(evals[0]) > fabs(evals[n_par - 1]) ? evals[0] : evals[n_par - 1];
    /* second by magnitude */
    double d2 = 0;
    for (size_t i = 0; i < n_par; i++)
        if (evals[i] != d1 && fabs(evals[i]) > fabs(d2)) d2 = evals[i];
    printf("eig tiny whole model: exact %.5f %.5f  power+deflation %.5f %.5f\n", d1, d2, lams[0], lams[1]);
    ck_assert_double_eq_tol(lams[0], d1, 1e-2 * fabs(d1)); /* measured 2.4e-3 */
    ck_assert_double_eq_tol(lams[1], d2, 5e-2 * fabs(d1));
    ck_assert_int_eq(mpq_hessian_top_eig_layer(hs, 99, &o, lams, NULL, &err), MPQ_ERR_INVALID);
    mpq_hessian_free(hs);
}
END_TEST

START_TEST(test_slq_vs_exact) {
    mpq_hessian *hs = make_hs(tiny, tiny_tok, TB, TT, 2, 0);
    mpq_err err = {0};
    enum { M = 40, NV = 3 };
    double nodes[M * NV], wts[M * NV], nodes2[M * NV], wts2[M * NV];
    ck_assert_msg(mpq_hessian_slq(hs, M, NV, 5, nodes, wts, &err) == MPQ_OK, "%s", err.msg);
    double sw = 0, mn = INFINITY, mx = -INFINITY, mean = 0, exact_mean = 0;
    for (int i = 0; i < M * NV; i++) {
        ck_assert(wts[i] >= 0);
        sw += wts[i];
        mean += wts[i] * nodes[i];
        if (wts[i] > 0) {
            mn = fmin(mn, nodes[i]);
            mx = fmax(mx, nodes[i]);
        }
    }
    for (size_t i = 0; i < n_par; i++) exact_mean += evals[i] / n_par;
    double range = evals[n_par - 1] - evals[0];
    printf("slq tiny: weights sum %.12f  nodes [%.5f, %.5f] exact [%.5f, %.5f]  mean %.5f exact tr/n %.5f\n", sw, mn,
           mx, evals[0], evals[n_par - 1], mean, exact_mean);
    /* eigenvector first components squared sum to 1 per probe: rounding ~ m * eps64 */
    ck_assert_double_eq_tol(sw, 1.0, 1e-10);
    /* Ritz values lie inside the spectrum (up to the Hv error, 1e-2 of the range) and the
     * extreme ones converge first in Lanczos: within 2% of the range after 40 steps */
    ck_assert_double_ge(mn, evals[0] - 1e-2 * range);
    ck_assert_double_le(mx, evals[n_par - 1] + 1e-2 * range);
    ck_assert_double_le(mn, evals[0] + 2e-2 * range);
    ck_assert_double_ge(mx, evals[n_par - 1] - 2e-2 * range);
    ck_assert_double_ge(mx - mn, 0.9 * range);
    /* sum w_i * node_i estimates tr(H)/n (Hutchinson in disguise): within 3 sigma of 3 probes,
     * loosely 50% of the spectral range */
    ck_assert_double_eq_tol(mean, exact_mean, 0.5 * range);
    ck_assert(mpq_hessian_slq(hs, M, NV, 5, nodes2, wts2, &err) == MPQ_OK);
    ck_assert_int_eq(memcmp(nodes, nodes2, sizeof nodes), 0);
    ck_assert_int_eq(memcmp(wts, wts2, sizeof wts), 0);
    ck_assert_int_eq(mpq_hessian_slq(hs, 0, NV, 5, nodes, wts, &err), MPQ_ERR_INVALID);
    mpq_hessian_free(hs);
}
END_TEST

static int *read_tokens(const char *rel, size_t *n) {
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(rel), &nb);
    ck_assert_msg(raw != NULL, "cannot read %s", rel);
    *n = nb / 2;
    int *t = malloc(*n * sizeof(int));
    for (size_t i = 0; i < *n; i++) t[i] = raw[2 * i] | (raw[2 * i + 1] << 8);
    free(raw);
    return t;
}

START_TEST(test_stories260k_traces) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(M260), &m, &err) == MPQ_OK, "%s", err.msg);
    size_t ntok = 0;
    int *all = read_tokens(CALIB_TOK, &ntok);
    const int NS = 4, T = 32;
    mpq_hessian *hs = make_hs(m, all, NS, T, 4, 0);
    mpq_hessian_trace_opts o = mpq_hessian_trace_opts_default();
    o.max_probes = 24;
    mpq_hessian_trace *tr = NULL;
    ck_assert_msg(mpq_hessian_trace_run(hs, &o, &tr, &err) == MPQ_OK, "%s", err.msg);
    double *fisher = calloc((size_t)tr->n_layers, sizeof(double));
    ck_assert(mpq_hessian_fisher(hs, fisher, &err) == MPQ_OK);
    mpq_candidate c;
    ck_assert(mpq_candidate_parse("int4g32", &c, &err) == MPQ_OK);
    int positive = 0;
    printf("stories260K (loss %.4f, %d x %d tokens, %d probes)\n", tr->loss, NS, T, tr->n_probes);
    printf("%-16s %12s %10s %8s %7s %5s %12s %12s\n", "layer", "trace", "tr/n", "rse", "probes", "conv",
           "fisher", "omega(int4g32)");
    for (int i = 0; i < tr->n_layers; i++) {
        const mpq_hessian_layer_trace *L = &tr->layers[i];
        double om, ose;
        ck_assert(mpq_hessian_omega_candidate(m, NULL, tr, i, &c, &om, &ose, &err) == MPQ_OK);
        printf("%-16s %12.5g %10.4g %8.3f %7d %5s %12.5g %12.5g\n", mpq_model_linear(m, i)->name, L->trace,
               L->trace_per_param, L->rse, L->n_probes, L->converged ? "yes" : "no", fisher[i], om);
        ck_assert(isfinite(L->trace) && isfinite(L->se) && L->se > 0);
        ck_assert(isfinite(fisher[i]) && fisher[i] > 0);
        ck_assert(isfinite(om) && isfinite(ose) && ose >= 0);
        positive += L->trace > 0;
    }
    printf("stories260K: %d of %d layer traces positive\n", positive, tr->n_layers);
    /* near a trained minimum the per-layer curvature is positive for most layers */
    ck_assert_int_ge(positive, tr->n_layers * 3 / 4);
    free(fisher);
    mpq_hessian_trace_free(tr);
    mpq_hessian_free(hs);
    /* hostile arguments */
    mpq_hessian *bad = NULL;
    int keep = all[5];
    all[5] = 600;
    ck_assert_int_eq(mpq_hessian_create(m, NULL, all, NS, T, NULL, &bad, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "sequence 0 position 5"));
    all[5] = keep;
    ck_assert_int_eq(mpq_hessian_create(m, NULL, all, NS, 10000, NULL, &bad, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_hessian_create(m, NULL, all, 0, T, NULL, &bad, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_hessian_create(m, mpq_model_get_weights(tiny), all, NS, T, NULL, &bad, &err),
                     MPQ_ERR_INVALID);
    ck_assert_ptr_null(bad);
    free(all);
    mpq_model_free(m);
}
END_TEST

static Suite *hessian_suite(void) {
    Suite *s = suite_create("hessian");
    TCase *t = tcase_create("tiny_exact");
    tcase_set_timeout(t, 300);
    tcase_add_unchecked_fixture(t, tiny_setup, tiny_teardown);
    tcase_add_test(t, test_hv_vs_second_differences);
    tcase_add_test(t, test_hutchinson_vs_exact);
    tcase_add_test(t, test_hutch_resume);
    tcase_add_loop_test(t, test_hutch_hostile_state, 0, (int)(sizeof bad_blob / sizeof bad_blob[0]));
    tcase_add_test(t, test_eigs_vs_exact);
    tcase_add_test(t, test_slq_vs_exact);
    tcase_add_test(t, test_stories260k_traces);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    int nf = test_run_suite(hessian_suite(), true);
    free(H);
    free(evals);
    mpq_model_free(tiny);
    return nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
