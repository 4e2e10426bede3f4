/* bench_forward.c - throughput of the reference executor (src/exec): batch prefill
 * (tokens/s and GFLOP/s, FLOPs from mpq_exec_forward_flops) and single-sequence incremental
 * decode (tokens/s), on the shared real models and on a generated model with llama2.c
 * stories110M's shape (dim 768, 12 layers, 12 heads, hidden 2048, vocab 32000, seq 1024;
 * random weights, written by this program to a temporary llama2.c legacy file and loaded with
 * mpq_model_load). Prints figures; asserts nothing about time. OpenBLAS default threads. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "test_util.h"

static int bench_model(const char *label, const char *path, int B, int T, int n_decode) {
    mpq_model *m = NULL;
    mpq_exec *ex = NULL;
    mpq_err err = {0};
    int *tok = NULL, rc = 1;
    if (mpq_model_load(path, &m, &err) != MPQ_OK) {
        fprintf(stderr, "bench_forward: %s\n", err.msg);
        goto done;
    }
    const mpq_model_config *c = mpq_model_get_config(m);
    const mpq_weights *w = mpq_model_get_weights(m);
    if (T > c->seq_len) T = c->seq_len;
    if (mpq_exec_create(m, B, T, &ex, &err) != MPQ_OK) {
        fprintf(stderr, "bench_forward: %s\n", err.msg);
        goto done;
    }
    tok = malloc((size_t)B * T * sizeof(int));
    if (!tok) goto done;
    uint32_t s = 12345;
    for (int i = 0; i < B * T; i++) {
        s = s * 1664525u + 1013904223u;
        tok[i] = (int)((s >> 8) % (uint32_t)c->vocab_size);
    }
    /* warm-up, then repeat for at least ~1 s */
    if (mpq_exec_forward(ex, w, NULL, tok, B, T, &err) != MPQ_OK) {
        fprintf(stderr, "bench_forward: %s\n", err.msg);
        goto done;
    }
    int reps = 0;
    double t0 = mpq_time_now(), el = 0;
    do {
        mpq_exec_forward(ex, w, NULL, tok, B, T, &err);
        reps++;
        el = mpq_time_now() - t0;
    } while (el < 1.0 && reps < 50);
    double per = el / reps, flops = mpq_exec_forward_flops(c, B, T);
    printf("%-22s params %8.2fM  prefill B=%d T=%-4d %9.0f tok/s  %7.2f GFLOP/s  (%.1f ms/batch, activations %.0f MiB)\n",
           label, mpq_model_n_params(m) / 1e6, B, T, B * T / per, flops / per / 1e9, per * 1e3,
           mpq_exec_activation_bytes(ex) / 1048576.0);
    /* decode: BOS then greedy n_decode tokens */
    if (n_decode > c->seq_len - 1) n_decode = c->seq_len - 1;
    int bos = 1;
    int *out = malloc((size_t)n_decode * sizeof(int));
    if (!out) goto done;
    t0 = mpq_time_now();
    mpq_status st = mpq_exec_generate_greedy(ex, w, NULL, &bos, 1, n_decode, out, &err);
    el = mpq_time_now() - t0;
    free(out);
    if (st != MPQ_OK) {
        fprintf(stderr, "bench_forward: %s\n", err.msg);
        goto done;
    }
    printf("%-22s decode %d tokens: %9.1f tok/s\n", label, n_decode, n_decode / el);
    rc = 0;
done:
    free(tok);
    mpq_exec_free(ex);
    mpq_model_free(m);
    return rc;
}

/* Writes a llama2.c legacy checkpoint of the given shape with small random weights
 * (norm weights 1, shared classifier, freq_cis block as llama2.c expects). */
static int write_model(const char *path, int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
                       int seq_len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int32_t hdr[7] = {dim, hidden, layers, heads, kv_heads, vocab, seq_len};
    int ok = fwrite(hdr, sizeof hdr, 1, f) == 1;
    int hs = dim / heads, kvd = kv_heads * hs;
    /* (count, kind): kind 0 random, 1 ones, 2 cos table, 3 sin table */
    struct { size_t n; int kind; } parts[] = {
        {(size_t)vocab * dim, 0},           {(size_t)layers * dim, 1},          {(size_t)layers * dim * dim, 0},
        {(size_t)layers * dim * kvd, 0},    {(size_t)layers * dim * kvd, 0},    {(size_t)layers * dim * dim, 0},
        {(size_t)layers * dim, 1},          {(size_t)layers * dim * hidden, 0}, {(size_t)layers * hidden * dim, 0},
        {(size_t)layers * dim * hidden, 0}, {(size_t)dim, 1},                   {(size_t)seq_len * hs / 2, 2},
        {(size_t)seq_len * hs / 2, 3},
    };
    enum { CH = 1 << 16 };
    static float buf[CH];
    uint32_t s = 42;
    for (size_t p = 0; ok && p < sizeof parts / sizeof parts[0]; p++) {
        for (size_t off = 0; ok && off < parts[p].n; off += CH) {
            size_t n = parts[p].n - off < CH ? parts[p].n - off : CH;
            for (size_t i = 0; i < n; i++) {
                size_t idx = off + i;
                if (parts[p].kind == 0) {
                    s = s * 1664525u + 1013904223u;
                    buf[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.04f;
                } else if (parts[p].kind == 1) {
                    buf[i] = 1.0f;
                } else {
                    size_t pos = idx / (size_t)(hs / 2), j = idx % (size_t)(hs / 2);
                    double a = (double)pos / pow(10000.0, 2.0 * (double)j / hs);
                    buf[i] = (float)(parts[p].kind == 2 ? cos(a) : sin(a));
                }
            }
            ok = fwrite(buf, sizeof(float), n, f) == n;
        }
    }
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

int main(void) {
    mpq_blas_set_threads(1); /* as the mpq CLI runs (mpq.h, "BLAS threads") */
    int rc = 0;
    rc |= bench_model("stories260K", shared_path("models/stories260K/stories260K.bin"), 8, 256, 256);
    rc |= bench_model("sotu-2.7M", shared_path("models/sotu-2.7M/sotu-2.7M.bin"), 8, 256, 255);
    char dir[4096], path[4200];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/stories110M-shape.bin", dir);
    if (write_model(path, 768, 2048, 12, 12, 12, 32000, 1024) != 0) {
        fprintf(stderr, "bench_forward: cannot write %s\n", path);
        rc = 1;
    } else {
        rc |= bench_model("110M-shape (random)", path, 4, 256, 64);
    }
    remove(path);
    rmdir(dir);
    return rc;
}
