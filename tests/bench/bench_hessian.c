/* bench_hessian.c - cost of second-order information (src/exec/backward.c, src/calib/hessian.c)
 * on the shared real models: time of one forward, one forward+backward and one whole-model Hv
 * product (B=4, T=128; ratios to the forward) on stories260K and sotu-2.7M; a Hutchinson run
 * (HAWQ-V2 defaults: tol 1e-3, rse_tol 0.05, 10..200 probes, seed 0) on stories260K over 8
 * calibration sequences x 128 tokens printed as a per-layer table (trace, trace/n, relative
 * stderr, probes, converged); and the Spearman rank correlation between HAWQ-V2's
 * Omega_l(int3g32) and the measured KL(P_fp || P_q) when only layer l is quantized to int3g32
 * (same calibration sequences). Prints figures; asserts nothing about time. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_grad.h"
#include "mpq/mpq_hessian.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "test_util.h"

static int *read_tokens(const char *rel, size_t *n) {
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path(rel), &nb);
    if (!raw) return NULL;
    *n = nb / 2;
    int *t = malloc(*n * sizeof(int));
    for (size_t i = 0; t && i < *n; i++) t[i] = raw[2 * i] | (raw[2 * i + 1] << 8);
    free(raw);
    return t;
}

#define CHECK(call)                                                        \
    do {                                                                   \
        if ((call) != MPQ_OK) {                                            \
            fprintf(stderr, "bench_hessian: %s\n", err.msg);              \
            goto done;                                                     \
        }                                                                  \
    } while (0)

static int bench_costs(const char *label, const char *model_rel, const char *tok_rel) {
    enum { B = 4, T = 128 };
    mpq_err err = {0};
    mpq_model *m = NULL;
    mpq_exec *ex = NULL;
    mpq_grad *gr = NULL;
    mpq_weights *g = NULL;
    mpq_hessian *hs = NULL;
    float *v = NULL, *hv = NULL;
    int rc = 1;
    size_t ntok = 0;
    int *tok = read_tokens(tok_rel, &ntok);
    if (!tok || ntok < (size_t)B * (T + 1)) {
        fprintf(stderr, "bench_hessian: cannot read %s\n", tok_rel);
        goto done;
    }
    CHECK(mpq_model_load(shared_path(model_rel), &m, &err));
    const mpq_weights *w = mpq_model_get_weights(m);
    CHECK(mpq_exec_create(m, B, T, &ex, &err));
    CHECK(mpq_grad_create(ex, &gr, &err));
    CHECK(mpq_grad_weights_zeros(m, &g, &err));
    mpq_hessian_opts ho = mpq_hessian_opts_default();
    ho.batch = B;
    CHECK(mpq_hessian_create(m, NULL, tok, B, T, &ho, &hs, &err));
    size_t n = mpq_hessian_n_params(hs);
    v = malloc(n * sizeof(float));
    hv = malloc(n * sizeof(float));
    if (!v || !hv) goto done;
    for (size_t i = 0; i < n; i++) v[i] = (i * 2654435761u) & 1024 ? 1.0f : -1.0f;
    int *in = malloc((size_t)B * T * sizeof(int));
    for (int b = 0; b < B; b++) memcpy(in + b * T, tok + (size_t)b * (T + 1), T * sizeof(int));
    double tf, tb, th;
    int reps;
    double t0 = mpq_time_now();
    for (reps = 0; reps < 3 || mpq_time_now() - t0 < 1.0; reps++) CHECK(mpq_exec_forward(ex, w, NULL, in, B, T, &err));
    tf = (mpq_time_now() - t0) / reps;
    t0 = mpq_time_now();
    for (reps = 0; reps < 3 || mpq_time_now() - t0 < 1.0; reps++)
        CHECK(mpq_grad_compute(gr, w, tok, B, T, 1.0f, g, NULL, &err));
    tb = (mpq_time_now() - t0) / reps;
    t0 = mpq_time_now();
    for (reps = 0; reps < 3 || mpq_time_now() - t0 < 1.0; reps++) CHECK(mpq_hessian_hvp(hs, v, hv, &err));
    th = (mpq_time_now() - t0) / reps;
    free(in);
    printf("%-12s %9zu params  B=%d T=%d  forward %8.2f ms  fwd+bwd %8.2f ms (x%.2f)  Hv %8.2f ms (x%.2f fwd, "
           "x%.2f fwd+bwd)\n",
           label, n, B, T, tf * 1e3, tb * 1e3, tb / tf, th * 1e3, th / tf, th / tb);
    rc = 0;
done:
    free(v);
    free(hv);
    free(tok);
    mpq_hessian_free(hs);
    mpq_weights_free(g);
    mpq_grad_free(gr);
    mpq_exec_free(ex);
    mpq_model_free(m);
    return rc;
}

/* average ranks (ties share the mean rank) */
static void ranks(const double *x, double *r, int n) {
    for (int i = 0; i < n; i++) {
        int less = 0, eq = 0;
        for (int j = 0; j < n; j++) {
            less += x[j] < x[i];
            eq += x[j] == x[i];
        }
        r[i] = less + (eq + 1) / 2.0;
    }
}

static double spearman(const double *a, const double *b, int n) {
    double *ra = malloc(n * sizeof(double)), *rb = malloc(n * sizeof(double));
    ranks(a, ra, n);
    ranks(b, rb, n);
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) ma += ra[i] / n, mb += rb[i] / n;
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - ma) * (rb[i] - mb);
        saa += (ra[i] - ma) * (ra[i] - ma);
        sbb += (rb[i] - mb) * (rb[i] - mb);
    }
    free(ra);
    free(rb);
    return sab / sqrt(saa * sbb);
}

static int bench_hutchinson(void) {
    enum { NS = 8, T = 128 };
    mpq_err err = {0};
    mpq_model *m = NULL;
    mpq_hessian *hs = NULL;
    mpq_hessian_trace *tr = NULL;
    mpq_exec *ex = NULL;
    mpq_exec_ref *ref = NULL;
    mpq_weights *wq = NULL;
    double *omega = NULL, *kl = NULL;
    int rc = 1;
    size_t ntok = 0;
    int *tok = read_tokens("data/tinystories-calib.tok512.u16", &ntok);
    if (!tok) goto done;
    CHECK(mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &m, &err));
    CHECK(mpq_hessian_create(m, NULL, tok, NS, T, NULL, &hs, &err));
    mpq_hessian_trace_opts to = mpq_hessian_trace_opts_default();
    double t0 = mpq_time_now();
    CHECK(mpq_hessian_trace_run(hs, &to, &tr, &err));
    double dt = mpq_time_now() - t0;
    printf("\nHutchinson on stories260K: %d x %d calibration tokens (tinystories-calib), loss %.4f, seed %llu, "
           "tol %g, rse_tol %g, probes %d..%d, fd_step %g: %d probes, %s, %.1f s\n",
           NS, T, tr->loss, (unsigned long long)tr->seed, tr->tol, tr->rse_tol, to.min_probes, to.max_probes,
           tr->fd_step, tr->n_probes, tr->converged ? "all converged" : "not all converged", dt);
    const int nl = tr->n_layers;
    omega = calloc(nl, sizeof(double));
    kl = calloc(nl, sizeof(double));
    mpq_candidate c;
    CHECK(mpq_candidate_parse("int3g32", &c, &err));
    CHECK(mpq_exec_create(m, NS, T, &ex, &err));
    CHECK(mpq_exec_ref_build(ex, mpq_model_get_weights(m), NULL, tok, NS, T, false, &ref, &err));
    CHECK(mpq_weights_clone(m, &wq, &err));
    printf("| layer | trace | trace/n | rel. stderr | probes | converged | Omega(int3g32) | KL(int3g32) |\n");
    printf("|---|---:|---:|---:|---:|---|---:|---:|\n");
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        const mpq_hessian_layer_trace *L = &tr->layers[i];
        double ose;
        CHECK(mpq_hessian_omega_candidate(m, NULL, tr, i, &c, &omega[i], &ose, &err));
        float *W = mpq_weights_linear(wq, li);
        const float *W0 = mpq_weights_linear(mpq_model_get_weights(m), li);
        mpq_quantize_matrix(&c, W, li->rows, li->cols);
        mpq_eval_stats st = {0};
        CHECK(mpq_exec_eval_ref(ex, wq, NULL, ref, 0, &st, &err));
        memcpy(W, W0, (size_t)li->n_params * sizeof(float));
        kl[i] = st.kl_mean;
        printf("| %s | %.4g | %.4g | %.3f | %d | %s | %.3g +- %.2g | %.3g |\n", li->name, L->trace,
               L->trace_per_param, L->rse, L->n_probes, L->converged ? "yes" : "no", omega[i], ose, kl[i]);
    }
    printf("Spearman rank correlation Omega(int3g32) vs measured KL over %d layers: %.3f\n", nl,
           spearman(omega, kl, nl));
    rc = 0;
done:
    free(omega);
    free(kl);
    free(tok);
    mpq_weights_free(wq);
    mpq_exec_ref_free(ref);
    mpq_exec_free(ex);
    mpq_hessian_trace_free(tr);
    mpq_hessian_free(hs);
    mpq_model_free(m);
    return rc;
}

int main(void) {
    mpq_blas_set_threads(1); /* as the mpq CLI runs (mpq.h, "BLAS threads") */
    int rc = 0;
    rc |= bench_costs("stories260K", "models/stories260K/stories260K.bin", "data/tinystories-calib.tok512.u16");
    rc |= bench_costs("sotu-2.7M", "models/sotu-2.7M/sotu-2.7M.bin", "data/sotu-calib.tok2048.u16");
    rc |= bench_hutchinson();
    return rc;
}
