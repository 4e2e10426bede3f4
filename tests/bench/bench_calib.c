/* bench_calib.c - cost of the calibration metrics (src/calib): a sensitivity sweep over all
 * linear layers x 3 weight candidates and all blocks x 3 KV pairs, with prefix reuse (each unit
 * restarts inside its block at the first operation it changes, from the stored FP residual /
 * attention output: q/k/v and KV at the block, wo at wo, gate/up/down at the FFN) and naive
 * (every unit from block 0; both use the reference's cached exp / argmax), on
 * the shared stories260K (TinyStories calibration text) and sotu-2.7M (its calibration text),
 * 16 sequences x 128 tokens. Prints the reference-pass time, both sweep times, the speed-up
 * and per-unit milliseconds, and checks that both sweeps give identical numbers. Also prints
 * the Spearman rank correlation between act_err and KL over (layer, candidate). Asserts
 * nothing about time. BLAS runs one thread, as in mpq. The two sweeps are interleaved unit by
 * unit.
 *
 * `bench_calib units [REPS [MODEL]]` instead prints the process CPU time per unit as `mpq run` computes
 * them for examples/stories260K.json (16 x 128 calibration tokens, batch 8, prefix reuse, KIVI
 * G 32): the mean over every linear layer of a layer_sensitivity unit (int4g32), and over every
 * block of a kv_sensitivity unit (k4v4), each sweep repeated REPS times (default 5), on both
 * shared models (or only MODEL: stories260K or sotu-2.7M); also the per-unit figure of the fastest
 * sweep (the least disturbed by other processes on a shared machine). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "test_util.h"

static int *read_windows(const char *path, int n_seqs, int T) {
    size_t nb = 0;
    uint8_t *raw = test_read_file(path, &nb);
    if (!raw) return NULL;
    if (nb / 2 < (size_t)n_seqs * T + 1) {
        free(raw);
        return NULL;
    }
    int *t = malloc((size_t)n_seqs * (T + 1) * sizeof(int));
    if (t)
        for (int s = 0; s < n_seqs; s++)
            for (int j = 0; j <= T; j++) {
                size_t p = (size_t)s * T + j;
                t[(size_t)s * (T + 1) + j] = raw[2 * p] | (raw[2 * p + 1] << 8);
            }
    free(raw);
    return t;
}

static double spearman(const double *a, const double *b, int n) {
    double *r[2] = {calloc((size_t)n, sizeof(double)), calloc((size_t)n, sizeof(double))};
    const double *v[2] = {a, b};
    if (!r[0] || !r[1]) {
        free(r[0]);
        free(r[1]);
        return NAN;
    }
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < n; i++) {
            int less = 0, eq = 0;
            for (int j = 0; j < n; j++) {
                if (v[k][j] < v[k][i]) less++;
                else if (v[k][j] == v[k][i]) eq++;
            }
            r[k][i] = less + (eq + 1) / 2.0;
        }
    double m = (n + 1) / 2.0, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) {
        sab += (r[0][i] - m) * (r[1][i] - m);
        saa += (r[0][i] - m) * (r[0][i] - m);
        sbb += (r[1][i] - m) * (r[1][i] - m);
    }
    free(r[0]);
    free(r[1]);
    return sab / sqrt(saa * sbb);
}

/* Both sweeps, interleaved unit by unit (prefix reuse then naive) so that a change of machine
 * load hits both alike: weight units (every layer x candidates), then KV units (every block x
 * pairs). KL of the weight units goes to kl / kl_n (n_lin*3), of the KV units to kv / kv_n. */
static int sweep(mpq_calib *cal, mpq_calib *naive, const mpq_model *m, const mpq_candidate *c, const mpq_kv_pair *p,
                 double *kl, double *kl_n, double *kv, double *kv_n, double t[4]) {
    mpq_err err = {0};
    int n_lin = mpq_model_n_linear(m), L = mpq_model_get_config(m)->n_layers;
    mpq_calib *cs[2] = {cal, naive};
    double *out_w[2] = {kl, kl_n}, *out_kv[2] = {kv, kv_n};
    for (int i = 0; i < n_lin; i++)
        for (int k = 0; k < 3; k++)
            for (int v = 0; v < 2; v++) {
                mpq_calib_result r;
                if (mpq_calib_layer(cs[v], i, &c[k], &r, &err) != MPQ_OK) {
                    fprintf(stderr, "bench_calib: %s\n", err.msg);
                    return 1;
                }
                out_w[v][i * 3 + k] = r.kl;
                t[v] += r.seconds;
            }
    for (int b = 0; b < L; b++)
        for (int k = 0; k < 3; k++)
            for (int v = 0; v < 2; v++) {
                mpq_calib_result r;
                if (mpq_calib_kv(cs[v], b, p[k], &r, &err) != MPQ_OK) {
                    fprintf(stderr, "bench_calib: %s\n", err.msg);
                    return 1;
                }
                out_kv[v][b * 3 + k] = r.kl;
                t[2 + v] += r.seconds;
            }
    return 0;
}

static int bench_model(const char *label, const char *model_rel, const char *tok_rel, int n_seqs, int T) {
    mpq_model *m = NULL;
    mpq_calib *cal = NULL, *naive = NULL;
    mpq_err err = {0};
    int *tok = NULL, rc = 1;
    double *kl = NULL, *kl_n = NULL, *act = NULL, kv[64 * 3], kv_n[64 * 3];
    const char *cn[3] = {"int2g32", "int4g32", "int8g32"};
    mpq_candidate c[3];
    mpq_kv_pair p[3] = {{2, 2}, {4, 4}, {8, 8}};
    for (int k = 0; k < 3; k++)
        if (mpq_candidate_parse(cn[k], &c[k], &err) != MPQ_OK) goto done;
    if (mpq_model_load(shared_path(model_rel), &m, &err) != MPQ_OK) goto done;
    if (mpq_model_get_config(m)->n_layers > 64) goto done;
    tok = read_windows(shared_path(tok_rel), n_seqs, T);
    if (!tok) {
        fprintf(stderr, "bench_calib: cannot read %s\n", tok_rel);
        goto done;
    }
    int n_lin = mpq_model_n_linear(m), L = mpq_model_get_config(m)->n_layers;
    kl = calloc((size_t)n_lin * 3, sizeof(double));
    kl_n = calloc((size_t)n_lin * 3, sizeof(double));
    act = calloc((size_t)n_lin * 3, sizeof(double));
    if (!kl || !kl_n || !act) goto done;

    mpq_calib_opts o = mpq_calib_opts_default();
    double t0 = mpq_time_now();
    if (mpq_calib_create(m, tok, n_seqs, T, &o, &cal, &err) != MPQ_OK) goto done;
    double t_ref = mpq_time_now() - t0;
    o.prefix_reuse = false;
    o.collect_xtx = false;
    if (mpq_calib_create(m, tok, n_seqs, T, &o, &naive, &err) != MPQ_OK) goto done;

    t0 = mpq_time_now();
    for (int i = 0; i < n_lin; i++)
        for (int k = 0; k < 3; k++) {
            mpq_calib_weight_stats we;
            if (mpq_calib_weight_error(cal, i, &c[k], &we, &err) != MPQ_OK) goto done;
            act[i * 3 + k] = we.act_err;
        }
    double t_we = mpq_time_now() - t0;

    double t[4] = {0, 0, 0, 0};
    if (sweep(cal, naive, m, c, p, kl, kl_n, kv, kv_n, t)) goto done;
    double tw = t[0], tw_n = t[1], tkv = t[2], tkv_n = t[3];
    int same = memcmp(kl, kl_n, (size_t)n_lin * 3 * sizeof(double)) == 0 &&
               memcmp(kv, kv_n, (size_t)L * 3 * sizeof(double)) == 0;
    int nw = n_lin * 3, nk = L * 3;
    printf("%-12s %d x %d tokens, %d layers x 3 candidates + %d blocks x 3 KV pairs (ref CE %.4f)\n", label, n_seqs,
           T, n_lin, L, mpq_calib_ref_ce(cal));
    printf("  reference pass with X^T X: %.1f ms; weight errors (act_err) for all %d units: %.1f ms (%.3f ms/unit)\n",
           t_ref * 1e3, nw, t_we * 1e3, t_we * 1e3 / nw);
    printf("  weight units: prefix reuse %8.1f ms (%.2f ms/unit)  naive %8.1f ms (%.2f ms/unit)  speed-up %.2fx\n",
           tw * 1e3, tw * 1e3 / nw, tw_n * 1e3, tw_n * 1e3 / nw, tw_n / tw);
    printf("  KV units:     prefix reuse %8.1f ms (%.2f ms/unit)  naive %8.1f ms (%.2f ms/unit)  speed-up %.2fx\n",
           tkv * 1e3, tkv * 1e3 / nk, tkv_n * 1e3, tkv_n * 1e3 / nk, tkv_n / tkv);
    printf("  prefix-reuse results %s the naive ones; Spearman(act_err, kl) over %d units = %.3f\n",
           same ? "bitwise equal to" : "DIFFER from", nw, spearman(act, kl, nw));
    rc = same ? 0 : 1;
done:
    if (rc && err.msg[0]) fprintf(stderr, "bench_calib: %s\n", err.msg);
    mpq_calib_free(naive);
    mpq_calib_free(cal);
    free(act);
    free(kl_n);
    free(kl);
    free(tok);
    mpq_model_free(m);
    return rc;
}

/* Process CPU seconds: the bench runs on one thread (one BLAS thread), so this is its own work,
 * steadier than wall time on a shared machine. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Per-unit CPU milliseconds of layer_sensitivity (int4g32, every linear layer) and
 * kv_sensitivity (k4v4, every block) units, settings of examples/stories260K.json. */
static int bench_units(const char *label, const char *model_rel, const char *tok_rel, int reps) {
    const int n_seqs = 16, T = 128;
    mpq_model *m = NULL;
    mpq_calib *cal = NULL;
    mpq_err err = {0};
    int *tok = NULL, rc = 1;
    mpq_candidate c;
    if (mpq_candidate_parse("int4g32", &c, &err) != MPQ_OK) goto done;
    if (mpq_model_load(shared_path(model_rel), &m, &err) != MPQ_OK) goto done;
    tok = read_windows(shared_path(tok_rel), n_seqs, T);
    if (!tok) {
        fprintf(stderr, "bench_calib: cannot read %s\n", tok_rel);
        goto done;
    }
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = 8;
    o.collect_xtx = false;
    o.kv_scheme.mode = MPQ_KV_KIVI;
    o.kv_scheme.group_size = 32;
    o.kv_scheme.residual = 0;
    if (mpq_calib_create(m, tok, n_seqs, T, &o, &cal, &err) != MPQ_OK) goto done;
    const int n_lin = mpq_model_n_linear(m), L = mpq_model_get_config(m)->n_layers;
    double t_layer = 0.0, t_kv = 0.0, kl_sum = 0.0, min_layer = INFINITY, min_kv = INFINITY;
    for (int r = 0; r < reps; r++) {
        mpq_calib_result res;
        double t0 = cpu_now();
        for (int i = 0; i < n_lin; i++) {
            if (mpq_calib_layer(cal, i, &c, &res, &err) != MPQ_OK) goto done;
            kl_sum += res.kl;
        }
        double t1 = cpu_now();
        for (int b = 0; b < L; b++) {
            if (mpq_calib_kv(cal, b, (mpq_kv_pair){4, 4}, &res, &err) != MPQ_OK) goto done;
            kl_sum += res.kl;
        }
        const double t2 = cpu_now();
        t_layer += t1 - t0;
        t_kv += t2 - t1;
        min_layer = fmin(min_layer, t1 - t0);
        min_kv = fmin(min_kv, t2 - t1);
    }
    printf("%-12s %d x %d tokens, batch 8: layer_sensitivity int4g32 %.2f CPU ms/unit (mean of %d layers x %d; "
           "fastest sweep %.2f), kv_sensitivity k4v4 %.2f CPU ms/unit (mean of %d blocks x %d; fastest sweep %.2f); "
           "sum of KL %.12g\n",
           label, n_seqs, T, t_layer * 1e3 / (n_lin * reps), n_lin, reps, min_layer * 1e3 / n_lin,
           t_kv * 1e3 / (L * reps), L, reps, min_kv * 1e3 / L, kl_sum);
    rc = 0;
done:
    if (rc && err.msg[0]) fprintf(stderr, "bench_calib: %s\n", err.msg);
    mpq_calib_free(cal);
    free(tok);
    mpq_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    mpq_blas_set_threads(1); /* as the mpq CLI runs (mpq.h, "BLAS threads") */
    int rc = 0;
    if (argc > 1 && strcmp(argv[1], "units") == 0) {
        int reps = argc > 2 ? atoi(argv[2]) : 5;
        const char *only = argc > 3 ? argv[3] : "";
        if (reps < 1) reps = 1;
        if (!*only || strcmp(only, "stories260K") == 0)
            rc |= bench_units("stories260K", "models/stories260K/stories260K.bin", "data/tinystories-calib.tok512.u16",
                              reps);
        if (!*only || strcmp(only, "sotu-2.7M") == 0)
            rc |= bench_units("sotu-2.7M", "models/sotu-2.7M/sotu-2.7M.bin", "data/sotu-calib.tok2048.u16", reps);
        return rc;
    }
    rc |= bench_model("stories260K", "models/stories260K/stories260K.bin", "data/tinystories-calib.tok512.u16", 16, 128);
    rc |= bench_model("sotu-2.7M", "models/sotu-2.7M/sotu-2.7M.bin", "data/sotu-calib.tok2048.u16", 16, 128);
    return rc;
}
