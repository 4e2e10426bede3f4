/* bench_tcq.c - speed of trellis-coded quantization (src/quant/tcq.c): seconds and weights/s
 * to encode a seeded 288x768 N(0,1) matrix at rates 2 and 4 with one thread, then with two
 * threads each encoding half of the rows (144 rows = 9 tile rows each; the codes of the halves
 * are the two halves of the one-thread bitstream, checked bit for bit, as are the
 * reconstructions), and the decoder's speed; wall and CPU seconds. Then two real sotu-2.7M layers
 * of block 0, attn_q (192x192) and ffn_down (192x512), rows scaled to unit RMS (no rotation),
 * at rates 2 and 4: seconds and nmse. Prints figures; exits
 * non-zero only if the two-thread result differs from the one-thread result or a call fails. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpq/mpq_model.h"
#include "quant/tcq.h"
#include "test_util.h"

typedef struct job {
    float *w;
    int64_t rows, cols;
    double rate;
    uint8_t *codes;
    mpq_status st;
    mpq_err err;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    j->st = mpq_tcq_quantize_matrix(j->w, j->rows, j->cols, j->rate, j->codes, &j->err);
    return NULL;
}

/* CPU seconds used by the process (all threads): on a shared machine wall time also counts
 * the other processes' turns, so both are printed. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double nmse(const float *q, const float *w, size_t n) {
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)q[i] - w[i];
        e += d * d;
        s += (double)w[i] * w[i];
    }
    return e / s;
}

static int bench_gaussian(double rate) {
    enum { R = 288, C = 768 };
    const size_t n = (size_t)R * C;
    size_t nb = (size_t)mpq_tcq_code_bits(R, C, rate) / 8;
    float *w = malloc(n * sizeof(float)), *q1 = malloc(n * sizeof(float));
    float *q2 = malloc(n * sizeof(float)), *d = malloc(n * sizeof(float));
    uint8_t *c1 = malloc(nb), *c2 = malloc(nb);
    int rc = 1;
    if (!w || !q1 || !q2 || !d || !c1 || !c2) goto done;
    mpq_rng r;
    mpq_rng_seed(&r, 288768);
    for (size_t i = 0; i < n; i += 2) {
        double p[2];
        mpq_tcq_normal_pair(&r, p);
        w[i] = (float)p[0];
        w[i + 1] = (float)p[1];
    }
    memcpy(q1, w, n * sizeof(float));
    memcpy(q2, w, n * sizeof(float));
    mpq_err err = {0};
    double t0 = mpq_time_now(), u0 = cpu_now();
    if (mpq_tcq_quantize_matrix(q1, R, C, rate, c1, &err) != MPQ_OK) {
        fprintf(stderr, "bench_tcq: %s\n", err.msg);
        goto done;
    }
    double t1 = mpq_time_now(), u1 = cpu_now();
    job jobs[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        jobs[i] = (job){q2 + (size_t)i * n / 2, R / 2, C, rate, c2 + (size_t)i * nb / 2,
                        MPQ_OK, {0}};
        if (pthread_create(&th[i], NULL, run_job, &jobs[i]) != 0) goto done;
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    double t2 = mpq_time_now(), u2 = cpu_now();
    for (int i = 0; i < 2; i++)
        if (jobs[i].st != MPQ_OK) {
            fprintf(stderr, "bench_tcq: %s\n", jobs[i].err.msg);
            goto done;
        }
    if (mpq_tcq_decode_matrix(c1, R, C, rate, d, &err) != MPQ_OK) {
        fprintf(stderr, "bench_tcq: %s\n", err.msg);
        goto done;
    }
    double t3 = mpq_time_now();
    bool same = memcmp(q1, q2, n * sizeof(float)) == 0 && memcmp(c1, c2, nb) == 0 &&
                memcmp(q1, d, n * sizeof(float)) == 0;
    printf("tcq %dx%d N(0,1) rate %.2f: nmse %.5f\n"
           "  1 thread:  %.2f s wall (%.0f weights/s), %.2f s CPU (%.0f weights per CPU s)\n"
           "  2 threads: %.2f s wall (%.0f weights/s), %.2f s CPU; identical to 1 thread: %s\n"
           "  decode: %.3f s wall\n",
           R, C, rate, nmse(q1, w, n), t1 - t0, (double)n / (t1 - t0), u1 - u0,
           (double)n / (u1 - u0), t2 - t1, (double)n / (t2 - t1), u2 - u1, same ? "yes" : "NO",
           t3 - t2);
    rc = same ? 0 : 1;
done:
    free(w);
    free(q1);
    free(q2);
    free(d);
    free(c1);
    free(c2);
    return rc;
}

static int bench_real(void) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    int rc = 1;
    if (mpq_model_load(shared_path("models/sotu-2.7M/sotu-2.7M.bin"), &m, &err) != MPQ_OK) {
        fprintf(stderr, "bench_tcq: %s\n", err.msg);
        return 1;
    }
    const mpq_weights *wts = mpq_model_get_weights(m);
    for (int li = 0; li < mpq_model_n_linear(m); li++) {
        const mpq_layer_info *info = mpq_model_linear(m, li);
        bool pick = info->kind == MPQ_LAYER_ATTN_Q || info->kind == MPQ_LAYER_FFN_DOWN;
        if (info->block != 0 || !pick) continue;
        int64_t R = info->rows, C = info->cols;
        size_t n = (size_t)(R * C);
        float *w = malloc(n * sizeof(float)), *q = malloc(n * sizeof(float));
        if (!w || !q) {
            free(w);
            free(q);
            goto done;
        }
        memcpy(w, mpq_weights_linear(wts, info), n * sizeof(float));
        for (int64_t r = 0; r < R; r++) {
            double ss = 0.0;
            for (int64_t c = 0; c < C; c++) ss += (double)w[r * C + c] * w[r * C + c];
            float inv = ss > 0.0 ? (float)(1.0 / sqrt(ss / (double)C)) : 1.0f;
            for (int64_t c = 0; c < C; c++) w[r * C + c] *= inv;
        }
        for (int b = 2; b <= 4; b += 2) {
            memcpy(q, w, n * sizeof(float));
            double t0 = mpq_time_now(), u0 = cpu_now();
            mpq_status st = mpq_tcq_quantize_matrix(q, R, C, (double)b, NULL, &err);
            double t1 = mpq_time_now(), u1 = cpu_now();
            if (st != MPQ_OK) {
                fprintf(stderr, "bench_tcq: %s: %s\n", info->name, err.msg);
                free(w);
                free(q);
                goto done;
            }
            printf("tcq sotu-2.7M %s (%lld x %lld) rate %d: nmse %.5f, %.2f s wall, %.2f s CPU\n",
                   info->name, (long long)R, (long long)C, b, nmse(q, w, n), t1 - t0, u1 - u0);
        }
        free(w);
        free(q);
    }
    rc = 0;
done:
    mpq_model_free(m);
    return rc;
}

int main(void) {
    int rc = 0;
    rc |= bench_gaussian(2.0);
    rc |= bench_gaussian(4.0);
    rc |= bench_real();
    return rc;
}
