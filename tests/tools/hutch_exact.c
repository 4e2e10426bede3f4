/* hutch_exact.c - checks the error bars of the Hutchinson per-layer Hessian traces
 * (src/calib/hutchinson.c) against EXACT traces: for the layers named, Tr(H_ll) =
 * sum_i e_i^T H e_i with one Hessian-vector product (mpq_hessian_hvp) per weight, and, for
 * every layer, the Hutchinson probes of the hessian stage replayed (same generator, seed and
 * order: probe k is the k-th Rademacher vector over all parameters) so that each probe's
 * x_l = v_l . (H v)_l is known. Printed per layer, at the first K probes (K = --probes):
 * the mean, the stored formula's stderr (sample sd with n - 1 over probes / sqrt(K)), a
 * bootstrap stderr over probes (2000 resamples, fixed seed), the exact trace where computed,
 * and z = (mean - exact) / stderr; and the distribution's excess kurtosis and skewness.
 * With --fd-check J the first J probes are also run with fd_step / 10 and * 10, to show the
 * finite-difference error of x against its spread over probes.
 *
 * Usage (from the project root; prints a table; slow: 2 gradient passes per HVP):
 *   mpq_hutch_exact MODEL TOKENS.u16 [--seq-len 128] [--n-seqs 16] [--seed 1] [--hess-seqs 8]
 *                   [--hess-len 128] [--probe-seed 0] [--probes 200] [--fd-step 1e-2]
 *                   [--exact blk.0.attn_q,blk.1.attn_o] [--fd-check 0] [--min-probes 10] [--tol 1e-3]
 *                   [--rse-tol 0.05] [--layer-probes 0] [--probe-layers blk.0.attn_q,blk.1.attn_o]
 * --layer-probes N: for the --probe-layers layers, also N probes supported on that layer alone
 * (seeded by probe-seed + 1000 + layer index).
 * It also replays the stage's stopping rule on the probes (the probe count a job with these
 * settings stores), since an estimate stopped when its own stderr looks small has a stderr
 * biased low.
 * The calibration windows are drawn as a job draws them (mpq_data_sequences with --seed),
 * and the Hessian is that of the first --hess-seqs windows' first --hess-len tokens, as the
 * hessian stage takes them. Not a test: run by hand; numbers are quoted in the README. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_hessian.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_rng.h"

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void stats(const double *x, int k, double *mean, double *se, double *skew, double *exkurt) {
    double s = 0.0;
    for (int i = 0; i < k; i++) s += x[i];
    double m = s / k, m2 = 0, m3 = 0, m4 = 0;
    for (int i = 0; i < k; i++) {
        double d = x[i] - m;
        m2 += d * d;
        m3 += d * d * d;
        m4 += d * d * d * d;
    }
    *mean = m;
    *se = sqrt(m2 / (k - 1) / k);
    m2 /= k;
    m3 /= k;
    m4 /= k;
    *skew = m2 > 0 ? m3 / pow(m2, 1.5) : 0;
    *exkurt = m2 > 0 ? m4 / (m2 * m2) - 3 : 0;
}

static double boot_se(const double *x, int k, int nb, uint64_t seed) {
    mpq_rng r;
    mpq_rng_seed(&r, seed);
    double s = 0, ss = 0;
    for (int b = 0; b < nb; b++) {
        double m = 0;
        for (int i = 0; i < k; i++) m += x[mpq_rng_below(&r, (uint64_t)k)];
        m /= k;
        s += m;
        ss += m * m;
    }
    double mean = s / nb;
    return sqrt((ss / nb - mean * mean) * nb / (nb - 1));
}

static mpq_status make_hs(const mpq_model *m, const int *tok, int ns, int T, double fd, mpq_hessian **hs,
                          mpq_err *err) {
    mpq_hessian_opts ho = mpq_hessian_opts_default();
    ho.fd_step = fd;
    return mpq_hessian_create(m, NULL, tok, ns, T, &ho, hs, err);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL TOKENS [options] (see the source)\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *data_path = argv[2];
    int seq_len = 128, n_seqs = 16, hess_seqs = 8, hess_len = 128, probes = 200, fd_check = 0, min_probes = 10,
        layer_probes = 0;
    double tol = 1e-3, rse_tol = 0.05;
    long long seed = 1, probe_seed = 0;
    double fd = 1e-2;
    char exact[1024] = "blk.0.attn_q,blk.1.attn_o", lp_layers[1024] = "blk.0.attn_q,blk.1.attn_o";
    for (int i = 3; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--seq-len")) seq_len = atoi(v);
        else if (!strcmp(k, "--n-seqs")) n_seqs = atoi(v);
        else if (!strcmp(k, "--seed")) seed = atoll(v);
        else if (!strcmp(k, "--hess-seqs")) hess_seqs = atoi(v);
        else if (!strcmp(k, "--hess-len")) hess_len = atoi(v);
        else if (!strcmp(k, "--probe-seed")) probe_seed = atoll(v);
        else if (!strcmp(k, "--probes")) probes = atoi(v);
        else if (!strcmp(k, "--fd-step")) fd = atof(v);
        else if (!strcmp(k, "--fd-check")) fd_check = atoi(v);
        else if (!strcmp(k, "--min-probes")) min_probes = atoi(v);
        else if (!strcmp(k, "--layer-probes")) layer_probes = atoi(v);
        else if (!strcmp(k, "--tol")) tol = atof(v);
        else if (!strcmp(k, "--rse-tol")) rse_tol = atof(v);
        else if (!strcmp(k, "--exact")) snprintf(exact, sizeof exact, "%s", v);
        else if (!strcmp(k, "--probe-layers")) snprintf(lp_layers, sizeof lp_layers, "%s", v);
        else {
            fprintf(stderr, "%s: unknown option %s\n", argv[0], k);
            return 2;
        }
    }
    if (probes < 2 || hess_seqs < 1 || hess_seqs > n_seqs || hess_len > seq_len || hess_len < 1) {
        fprintf(stderr, "%s: bad sizes\n", argv[0]);
        return 2;
    }
    mpq_blas_set_threads(1);
    mpq_err err = {0};
    mpq_model *m = NULL;
    mpq_data *d = NULL;
    mpq_data_seqs *sq = NULL;
    mpq_hessian *hs = NULL, *hs_lo = NULL, *hs_hi = NULL;
    int rc = 1;
    int *tok = NULL;
    float *v = NULL, *hv = NULL, *hv2 = NULL;
    double *x = NULL;
    mpq_data_opts dopt = mpq_data_opts_default();
    if (mpq_model_load(model_path, &m, &err) != MPQ_OK) goto fail;
    dopt.vocab_size = mpq_model_get_config(m)->vocab_size;
    if (mpq_data_load(data_path, NULL, &dopt, &d, &err) != MPQ_OK ||
        mpq_data_sequences(d, seq_len, n_seqs, (uint64_t)seed, &sq, &err) != MPQ_OK)
        goto fail;
    tok = malloc(sizeof(int) * (size_t)hess_seqs * (hess_len + 1));
    for (int s = 0; s < hess_seqs; s++)
        for (int t = 0; t <= hess_len; t++)
            tok[(size_t)s * (hess_len + 1) + t] = (int)sq->tokens[(size_t)s * (seq_len + 1) + t];
    if (make_hs(m, tok, hess_seqs, hess_len, fd, &hs, &err) != MPQ_OK) goto fail;
    if (fd_check > 0 && (make_hs(m, tok, hess_seqs, hess_len, fd / 10, &hs_lo, &err) != MPQ_OK ||
                         make_hs(m, tok, hess_seqs, hess_len, fd * 10, &hs_hi, &err) != MPQ_OK))
        goto fail;
    const size_t n = mpq_hessian_n_params(hs);
    const int nl = mpq_model_n_linear(m);
    v = calloc(n, sizeof(float));
    hv = calloc(n, sizeof(float));
    hv2 = calloc(n, sizeof(float));
    x = calloc((size_t)probes * nl, sizeof(double));
    double t0 = mpq_time_now();
    mpq_rng r;
    mpq_rng_seed(&r, (uint64_t)probe_seed);
    double fd_lo = 0, fd_hi = 0, fd_sd = 0; /* summed over checked probes and layers */
    for (int k = 0; k < probes; k++) {
        mpq_rng_rademacher(&r, v, n);
        if (mpq_hessian_hvp(hs, v, hv, &err) != MPQ_OK) goto fail;
        for (int l = 0; l < nl; l++) {
            size_t off = mpq_hessian_layer_offset(hs, l);
            x[(size_t)k * nl + l] = dot(v + off, hv + off, (size_t)mpq_model_linear(m, l)->n_params);
        }
        if (k < fd_check) {
            for (int pass = 0; pass < 2; pass++) {
                if (mpq_hessian_hvp(pass ? hs_hi : hs_lo, v, hv2, &err) != MPQ_OK) goto fail;
                for (int l = 0; l < nl; l++) {
                    size_t off = mpq_hessian_layer_offset(hs, l);
                    double y = dot(v + off, hv2 + off, (size_t)mpq_model_linear(m, l)->n_params);
                    double diff = fabs(y - x[(size_t)k * nl + l]);
                    if (pass) fd_hi += diff;
                    else fd_lo += diff;
                }
            }
        }
    }
    /* per-layer probes: v Rademacher on the named layer only (zero elsewhere), so x has no
     * cross-layer terms v_l . H_lm v_m; one HVP per layer and probe */
    for (int l = 0; l < nl && layer_probes > 0; l++) {
        const mpq_layer_info *li = mpq_model_linear(m, l);
        char pat[MPQ_LAYER_NAME_MAX + 2], list[1030];
        snprintf(pat, sizeof pat, "%s,", li->name);
        snprintf(list, sizeof list, "%s,", lp_layers);
        const char *at = strstr(list, pat);
        if (!at || (at != list && at[-1] != ',')) continue;
        size_t off = mpq_hessian_layer_offset(hs, l), np = (size_t)li->n_params;
        double *xl = calloc((size_t)layer_probes, sizeof(double));
        mpq_rng rl;
        mpq_rng_seed(&rl, (uint64_t)probe_seed + 1000u + (uint64_t)l);
        memset(v, 0, n * sizeof(float));
        for (int k = 0; k < layer_probes; k++) {
            mpq_rng_rademacher(&rl, v + off, np);
            if (mpq_hessian_hvp(hs, v, hv, &err) != MPQ_OK) goto fail;
            xl[k] = dot(v + off, hv + off, np);
        }
        memset(v, 0, n * sizeof(float));
        double mean, se, sk, ek;
        stats(xl, layer_probes, &mean, &se, &sk, &ek);
        printf("per-layer probes %-16s %d probes: %.6g +- %.4g (sd per probe %.4g)\n", li->name, layer_probes, mean,
               se, se * sqrt((double)layer_probes));
        free(xl);
    }
    double t_probe = (mpq_time_now() - t0) / probes;
    printf("probes: %d in %.1f s (%.3f s per HVP), fd_step %g, %zu parameters\n", probes, t_probe * probes, t_probe,
           fd, n);
    printf("%-16s %12s %11s %11s %8s %12s %8s %8s %7s %7s %12s %11s %8s\n", "layer", "hutch_mean", "se_formula",
           "se_boot", "se_ratio", "exact", "z", "z_boot", "skew", "exkurt", "mean_at_stop", "se_at_stop", "z_stop");
    /* the stopping rule of the hessian stage (hutchinson.c) replayed on these probes: the first
     * k >= min_probes at which every layer has rel_change < tol and se / |mean| < rse_tol */
    int k_stop = probes;
    {
        double *sum = calloc((size_t)nl, sizeof(double)), *sq = calloc((size_t)nl, sizeof(double)),
               *prev = calloc((size_t)nl, sizeof(double));
        for (int k = 1; k <= probes; k++) {
            bool all = true;
            for (int l = 0; l < nl; l++) {
                double xv = x[(size_t)(k - 1) * nl + l];
                sum[l] += xv;
                sq[l] += xv * xv;
                double mean = sum[l] / k, var = k > 1 ? (sq[l] - k * mean * mean) / (k - 1) : 0;
                double relc = k > 1 ? fabs(mean - prev[l]) / (fabs(prev[l]) + 1e-6) : INFINITY;
                double rse = mean != 0 ? sqrt(var > 0 ? var / k : 0) / fabs(mean) : INFINITY;
                prev[l] = mean;
                all = all && k >= min_probes && relc < tol && rse < rse_tol;
            }
            if (all) {
                k_stop = k;
                break;
            }
        }
        free(sum);
        free(sq);
        free(prev);
        printf("stopping rule (min %d, tol %g, rse_tol %g): the stage would stop after %d probes%s\n", min_probes,
               tol, rse_tol, k_stop, k_stop == probes ? " (the cap here)" : "");
    }
    double *col = calloc((size_t)probes, sizeof(double));
    for (int l = 0; l < nl; l++) {
        const mpq_layer_info *li = mpq_model_linear(m, l);
        for (int k = 0; k < probes; k++) col[k] = x[(size_t)k * nl + l];
        double mean, se, sk, ek;
        stats(col, probes, &mean, &se, &sk, &ek);
        double bse = boot_se(col, probes, 2000, 12345u + (uint64_t)l);
        double ex = NAN;
        char pat[MPQ_LAYER_NAME_MAX + 2];
        snprintf(pat, sizeof pat, "%s,", li->name);
        char list[1030];
        snprintf(list, sizeof list, "%s,", exact);
        if (strstr(list, pat) && (strstr(list, pat) == list || strstr(list, pat)[-1] == ',')) {
            double te = mpq_time_now(), tr = 0.0;
            size_t off = mpq_hessian_layer_offset(hs, l);
            memset(v, 0, n * sizeof(float));
            for (int64_t i = 0; i < li->n_params; i++) {
                v[off + (size_t)i] = 1.0f;
                if (mpq_hessian_hvp(hs, v, hv, &err) != MPQ_OK) goto fail;
                tr += hv[off + (size_t)i];
                v[off + (size_t)i] = 0.0f;
            }
            ex = tr;
            fprintf(stderr, "exact %s: %lld HVPs in %.1f s\n", li->name, (long long)li->n_params,
                    mpq_time_now() - te);
        }
        double ms = mean, ss = se, d1, d2;
        if (k_stop < probes && k_stop >= 2) stats(col, k_stop, &ms, &ss, &d1, &d2);
        fprintf(stdout, "%-16s %12.6g %11.4g %11.4g %8.3f %12.6g %8.2f %8.2f %7.2f %7.2f %12.6g %11.4g %8.2f\n",
                li->name, mean, se, bse, bse / se, ex, (mean - ex) / se, (mean - ex) / bse, sk, ek, ms, ss,
                (ms - ex) / ss);
        fflush(stdout);
    }
    free(col);
    if (fd_check > 0) {
        /* mean |x(fd/10) - x(fd)| and |x(fd*10) - x(fd)| against the mean probe sd */
        for (int l = 0; l < nl; l++) {
            double mean, se, sk, ek;
            double *c2 = calloc((size_t)probes, sizeof(double));
            for (int k = 0; k < probes; k++) c2[k] = x[(size_t)k * nl + l];
            stats(c2, probes, &mean, &se, &sk, &ek);
            fd_sd += se * sqrt((double)probes);
            free(c2);
        }
        printf("fd check over %d probes x %d layers: mean |x(fd/10) - x| = %.4g, mean |x(fd*10) - x| = %.4g, "
               "mean probe sd = %.4g\n",
               fd_check, nl, fd_lo / (fd_check * nl), fd_hi / (fd_check * nl), fd_sd / nl);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "%s: %s\n", argv[0], err.msg);
done:
    free(v);
    free(hv);
    free(hv2);
    free(x);
    free(tok);
    mpq_hessian_free(hs);
    mpq_hessian_free(hs_lo);
    mpq_hessian_free(hs_hi);
    mpq_data_seqs_free(sq);
    mpq_data_free(d);
    mpq_model_free(m);
    return rc;
}
