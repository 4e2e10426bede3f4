/* bench_forward.c - throughput of the reference executor (src/exec): batch prefill
 * (tokens/s and GFLOP/s, FLOPs from mpq_exec_forward_flops), evaluation-style scoring (FP, and
 * against a reference with a quantized KV cache), one calibration unit (a stored-reference
 * evaluation), and single-sequence incremental decode (tokens/s), on the shared real models and on a generated model with llama2.c
 * stories110M's shape (dim 768, 12 layers, 12 heads, hidden 2048, vocab 32000, seq 1024;
 * random weights, written by this program to a temporary llama2.c legacy file and loaded with
 * mpq_model_load). Prints figures; asserts nothing about time. One BLAS thread, as the CLI;
 * times are process CPU time (clock()); the batch modes are timed interleaved (forward, eval,
 * forward with k4v4, eval with k4v4 against a reference, in turn) and reported as medians.
 * Mode kv times the KV-cache kernels of one 110M-shape block apart (quantization, attention). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec/exec_kernels.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "test_util.h"

/* Process CPU seconds (clock()): the bench is single-threaded (one BLAS thread), so this is
 * its own work; on a shared machine it is far steadier than wall time, which also counts the
 * time other processes hold the cores. */
static double cpu_now(void) { return (double)clock() / CLOCKS_PER_SEC; }

typedef mpq_status (*bench_fn)(void *user, mpq_err *err);

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* CPU seconds per call of each of n functions, interleaved: one warm-up call each, then rounds
 * that call each function once in turn (A B C A B C ...), at least 3 rounds and until min_s has
 * passed, at most 25; out[i] = the median over the rounds of function i's call, so a change of
 * machine load hits all of them alike. */
static int time_interleaved(const bench_fn *fn, void *const *user, int n, double min_s, double *out, mpq_err *err) {
    enum { MAX_ROUNDS = 25, MAX_FN = 8 };
    double t[MAX_FN][MAX_ROUNDS];
    if (n > MAX_FN) return -1;
    for (int i = 0; i < n; i++)
        if (fn[i](user[i], err) != MPQ_OK) return -1;
    int rounds = 0;
    const double start = cpu_now();
    do {
        for (int i = 0; i < n; i++) {
            double t0 = cpu_now();
            if (fn[i](user[i], err) != MPQ_OK) return -1;
            t[i][rounds] = cpu_now() - t0;
        }
        rounds++;
    } while (rounds < MAX_ROUNDS && (rounds < 3 || cpu_now() - start < min_s));
    for (int i = 0; i < n; i++) {
        qsort(t[i], (size_t)rounds, sizeof(double), cmp_double);
        out[i] = rounds % 2 ? t[i][rounds / 2] : 0.5 * (t[i][rounds / 2 - 1] + t[i][rounds / 2]);
    }
    return rounds;
}

typedef struct bench_ctx {
    mpq_exec *ex;
    const mpq_weights *w;
    const mpq_exec_opts *o;
    const int *tok;      /* (B, T+1) */
    int *in;             /* (B, T) */
    int B, T;
    mpq_eval_part *part;
    const float *ref_lp; /* (B, T, V) or NULL */
    const mpq_exec_ref *ref;
} bench_ctx;

static mpq_status run_forward(void *user, mpq_err *err) {
    bench_ctx *c = user;
    return mpq_exec_forward(c->ex, c->w, c->o, c->in, c->B, c->T, err);
}

/* as `mpq eval` scores one batch: forward + log-softmax + target log-prob (+ KL to ref_lp) */
static mpq_status run_eval(void *user, mpq_err *err) {
    bench_ctx *c = user;
    mpq_eval_io io = {.ref_logprobs = c->ref_lp};
    return mpq_exec_eval_part(c->ex, c->w, c->o, c->tok, c->B, c->T, &io, c->part, err);
}

/* one calibration unit: every window of a stored reference, scored against it */
static mpq_status run_unit(void *user, mpq_err *err) {
    bench_ctx *c = user;
    mpq_eval_stats st = {0};
    return mpq_exec_eval_ref(c->ex, c->w, c->o, c->ref, 0, &st, err);
}

/* Prints, for batches of B x T tokens: the bare forward (mpq_exec_forward, which also keeps
 * what a backward pass reads), FP scoring (mpq_exec_eval_part: cross-entropy), scoring against
 * a reference (as `mpq eval` with a config: log-softmax + KL + top-1, with KV pairs k4v4, KIVI
 * G 32, so that the quantized-KV attention path runs), and with n_unit > 0 one calibration unit
 * (mpq_exec_eval_ref over n_unit windows, k4v4); then single-sequence decode. */
static int bench_model(const char *label, const char *path, int B, int T, int n_unit, int n_decode) {
    mpq_model *m = NULL;
    mpq_exec *ex = NULL;
    mpq_exec_ref *ref = NULL;
    mpq_eval_part *part = NULL;
    mpq_kv_pair *pairs = NULL;
    mpq_err err = {0};
    int *tok = NULL, *in = NULL, *utok = NULL, rc = 1;
    float *ref_lp = NULL;
    if (mpq_model_load(path, &m, &err) != MPQ_OK) goto done;
    const mpq_model_config *c = mpq_model_get_config(m);
    const mpq_weights *w = mpq_model_get_weights(m);
    if (T > c->seq_len) T = c->seq_len;
    if (mpq_exec_create(m, B, T, &ex, &err) != MPQ_OK || mpq_eval_part_create(B, T, &part, &err) != MPQ_OK)
        goto done;
    const size_t V = (size_t)c->vocab_size;
    tok = malloc((size_t)B * (T + 1) * sizeof(int));
    in = malloc((size_t)B * T * sizeof(int));
    ref_lp = malloc((size_t)B * T * V * sizeof(float));
    pairs = malloc((size_t)c->n_layers * sizeof *pairs);
    if (!tok || !in || !ref_lp || !pairs) goto done;
    uint32_t s = 12345;
    for (int i = 0; i < B * (T + 1); i++) {
        s = s * 1664525u + 1013904223u;
        tok[i] = (int)((s >> 8) % (uint32_t)c->vocab_size);
    }
    for (int b = 0; b < B; b++) memcpy(in + (size_t)b * T, tok + (size_t)b * (T + 1), (size_t)T * sizeof(int));
    for (int l = 0; l < c->n_layers; l++) pairs[l] = (mpq_kv_pair){4, 4};
    mpq_exec_opts kv = mpq_exec_opts_default();
    kv.kv_pairs = pairs;
    kv.n_kv_pairs = c->n_layers;
    kv.kv_scheme.mode = MPQ_KV_KIVI;
    kv.kv_scheme.group_size = 32;
    kv.kv_scheme.residual = 0;
    mpq_eval_io io = {.logprobs_out = ref_lp};
    if (mpq_exec_eval_part(ex, w, NULL, tok, B, T, &io, part, &err) != MPQ_OK) goto done;
    bench_ctx bc = {.ex = ex, .w = w, .tok = tok, .in = in, .B = B, .T = T, .part = part};
    bench_ctx bkv = bc, bref = bc;
    bkv.o = &kv;
    bref.o = &kv;
    bref.ref_lp = ref_lp;
    double flops = mpq_exec_forward_flops(c, B, T);
    /* forward FP, eval FP, forward k4v4, eval k4v4 vs ref: interleaved */
    const bench_fn fns[4] = {run_forward, run_eval, run_forward, run_eval};
    void *const users[4] = {&bc, &bc, &bkv, &bref};
    double tm[4];
    int rounds = time_interleaved(fns, users, 4, 3.0, tm, &err);
    if (rounds < 0) goto done;
    printf("%-20s params %7.2fM B=%d T=%-4d (CPU time, median of %d interleaved rounds)\n"
           "%-20s forward %9.1f tok/s %6.2f GFLOP/s | eval %9.1f tok/s (%.3fx forward time) | "
           "forward k4v4 %9.1f tok/s (%.3fx) | eval k4v4 vs ref %9.1f tok/s (%.3fx)\n",
           label, mpq_model_n_params(m) / 1e6, B, T, rounds, label, B * T / tm[0], flops / tm[0] / 1e9, B * T / tm[1],
           tm[1] / tm[0], B * T / tm[2], tm[2] / tm[0], B * T / tm[3], tm[3] / tm[0]);
    if (n_unit > 0) {
        utok = malloc((size_t)n_unit * (T + 1) * sizeof(int));
        if (!utok) goto done;
        for (int i = 0; i < n_unit * (T + 1); i++) {
            s = s * 1664525u + 1013904223u;
            utok[i] = (int)((s >> 8) % (uint32_t)c->vocab_size);
        }
        if (mpq_exec_ref_build(ex, w, NULL, utok, n_unit, T, false, &ref, &err) != MPQ_OK) goto done;
        bc.ref = ref;
        bc.o = &kv;
        const bench_fn ufn[1] = {run_unit};
        void *const uus[1] = {&bc};
        double t_unit;
        if (time_interleaved(ufn, uus, 1, 2.0, &t_unit, &err) < 0) goto done;
        printf("%-20s calibration unit (eval_ref %d x %d, k4v4): %.2f CPU ms/unit (median)\n", label, n_unit, T, t_unit * 1e3);
    }
    /* decode: BOS then greedy n_decode tokens */
    if (n_decode > c->seq_len - 1) n_decode = c->seq_len - 1;
    if (n_decode > 0) {
        int bos = 1;
        int *out = malloc((size_t)n_decode * sizeof(int));
        if (!out) goto done;
        double t0 = cpu_now();
        mpq_status st = mpq_exec_generate_greedy(ex, w, NULL, &bos, 1, n_decode, out, &err);
        double el = cpu_now() - t0;
        free(out);
        if (st != MPQ_OK) goto done;
        printf("%-20s decode %d tokens: %9.1f tok/s\n", label, n_decode, n_decode / el);
    }
    fflush(stdout);
    rc = 0;
done:
    if (rc) fprintf(stderr, "bench_forward: %s: %s\n", label, err.msg);
    free(tok);
    free(in);
    free(utok);
    free(ref_lp);
    free(pairs);
    mpq_exec_ref_free(ref);
    mpq_eval_part_free(part);
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

/* Greedy decode of n tokens from BOS with the model at path: tok/s (as llama2.c run.c
 * reports it: the first token excluded). */
static int bench_decode(const char *path, int n) {
    mpq_model *m = NULL;
    mpq_exec *ex = NULL;
    mpq_err err = {0};
    int rc = 1, *out = NULL;
    if (mpq_model_load(path, &m, &err) != MPQ_OK || mpq_exec_create(m, 1, 1, &ex, &err) != MPQ_OK) goto done;
    const mpq_model_config *c = mpq_model_get_config(m);
    const mpq_weights *w = mpq_model_get_weights(m);
    if (n > c->seq_len) n = c->seq_len;
    if (n < 2 || !(out = malloc((size_t)n * sizeof(int)))) goto done;
    const float *lg = NULL;
    int tok = 1;
    double t1 = 0.0;
    for (int i = 0; i < n; i++) {
        if (mpq_exec_decode_step(ex, w, NULL, tok, &lg, &err) != MPQ_OK) goto done;
        if (i == 0) t1 = cpu_now();
        int am = 0;
        for (int v = 1; v < c->vocab_size; v++)
            if (lg[v] > lg[am]) am = v;
        out[i] = tok = am;
    }
    printf("%s: decode %d tokens: %.1f tok/s (first token excluded)\n", path, n, (n - 1) / (cpu_now() - t1));
    rc = 0;
done:
    if (rc) fprintf(stderr, "bench_forward: %s: %s\n", path, err.msg);
    free(out);
    mpq_exec_free(ex);
    mpq_model_free(m);
    return rc;
}

/* ---- the KV kernels of one 110M-shape block (T = 1024, 12 heads of 64, KIVI G 32, 4 bits) ---- */

typedef struct kv_ctx {
    const float *q, *k, *v;
    float *kq, *vq, *out, *scratch;
    int T, NH, hd;
    mpq_kv_scheme s, sr; /* R 0, and R 128 (every value block reads both sources) */
} kv_ctx;

/* K and V quantized as the executor does (kv_quantize_forward: batched groups) */
static mpq_status run_kvq(void *user, mpq_err *err) {
    (void)err;
    kv_ctx *c = user;
    const int kvd = c->NH * c->hd;
    kv_quantize_forward(c->kq, c->k, 1, c->T, kvd, 4, true, &c->s);
    kv_quantize_forward(c->vq, c->v, 1, c->T, kvd, 4, false, &c->s);
    return MPQ_OK;
}

/* the same groups, one mpq_quant_rtn_minmax call per group (the executor's loop before the
 * batched form; the same bits) */
static mpq_status run_kvq_pergroup(void *user, mpq_err *err) {
    (void)err;
    kv_ctx *c = user;
    const int kvd = c->NH * c->hd, G = c->s.group_size;
    memcpy(c->kq, c->k, (size_t)c->T * kvd * sizeof(float));
    memcpy(c->vq, c->v, (size_t)c->T * kvd * sizeof(float));
    for (int g0 = 0; g0 + G <= c->T; g0 += G)
        for (int ch = 0; ch < kvd; ch++) mpq_quant_rtn_minmax(c->kq + (size_t)g0 * kvd + ch, (size_t)G, (size_t)kvd, 4);
    for (size_t r = 0; r < (size_t)c->T; r++)
        for (int c0 = 0; c0 < kvd; c0 += G) mpq_quant_rtn_minmax(c->vq + r * kvd + c0, (size_t)G, 1, 4);
    return MPQ_OK;
}

static mpq_status run_attn_fp(void *user, mpq_err *err) {
    (void)err;
    kv_ctx *c = user;
    attention_forward(c->out, NULL, c->scratch, c->q, c->k, c->v, NULL, NULL, &c->s, 1, c->T, c->NH, c->NH, c->hd);
    return MPQ_OK;
}

static mpq_status run_attn_kv(void *user, mpq_err *err) {
    (void)err;
    kv_ctx *c = user;
    attention_forward(c->out, NULL, c->scratch, c->q, c->k, c->v, c->kq, c->vq, &c->s, 1, c->T, c->NH, c->NH, c->hd);
    return MPQ_OK;
}

static mpq_status run_attn_kv_res(void *user, mpq_err *err) {
    (void)err;
    kv_ctx *c = user;
    attention_forward(c->out, NULL, c->scratch, c->q, c->k, c->v, c->kq, c->vq, &c->sr, 1, c->T, c->NH, c->NH, c->hd);
    return MPQ_OK;
}

/* CPU ms per call (medians of interleaved rounds) of the KV quantization (batched, and group by
 * group) and of the attention (FP, k4v4 R 0, k4v4 R 128) on one block of the 110M shape, random
 * inputs in (-2, 2). */
static int bench_kv_kernels(void) {
    kv_ctx c = {.T = 1024, .NH = 12, .hd = 64};
    const size_t n = (size_t)c.T * c.NH * c.hd;
    float *buf = malloc(7 * n * sizeof(float));
    float *scratch = malloc((size_t)3 * ATTN_BLOCK * c.T * sizeof(float));
    if (!buf || !scratch) {
        free(buf);
        free(scratch);
        fprintf(stderr, "bench_forward: kv: out of memory\n");
        return 1;
    }
    uint32_t s = 7;
    for (size_t i = 0; i < 3 * n; i++) {
        s = s * 1664525u + 1013904223u;
        buf[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 4.0f;
    }
    c.q = buf, c.k = buf + n, c.v = buf + 2 * n, c.kq = buf + 3 * n, c.vq = buf + 4 * n, c.out = buf + 5 * n;
    c.scratch = scratch;
    c.s = (mpq_kv_scheme){.mode = MPQ_KV_KIVI, .group_size = 32, .residual = 0};
    c.sr = c.s;
    c.sr.residual = 128;
    mpq_err err = {0};
    const bench_fn fns[5] = {run_kvq, run_kvq_pergroup, run_attn_fp, run_attn_kv, run_attn_kv_res};
    void *const users[5] = {&c, &c, &c, &c, &c};
    double tm[5];
    int rounds = time_interleaved(fns, users, 5, 3.0, tm, &err);
    int rc = rounds < 0;
    if (!rc)
        printf("110M-shape block, T=1024, 12 x 64, k4v4 KIVI G 32 (CPU ms per call, median of %d interleaved rounds)\n"
               "  quantize K and V: %.2f batched, %.2f group by group (%.2fx)\n"
               "  attention: FP %.2f | k4v4 R 0 %.2f (%.3fx FP) | k4v4 R 128 %.2f (%.3fx FP)\n",
               rounds, tm[0] * 1e3, tm[1] * 1e3, tm[1] / tm[0], tm[2] * 1e3, tm[3] * 1e3, tm[3] / tm[2], tm[4] * 1e3,
               tm[4] / tm[2]);
    free(buf);
    free(scratch);
    return rc;
}

/* Usage: bench_forward [which]; which = all (default), small (the two shared models), 110m or
 * kv (the KV kernels of one 110M-shape block; also part of all); bench_forward decode MODEL N: greedy decode only; bench_forward write110m PATH: writes the
 * generated 110M-shape checkpoint to PATH (to run other programs on it) and exits. */
int main(int argc, char **argv) {
    mpq_blas_set_threads(1); /* as the mpq CLI runs (mpq.h, "BLAS threads") */
    const char *which = argc > 1 ? argv[1] : "all";
    if (strcmp(which, "decode") == 0 && argc == 4) return bench_decode(argv[2], atoi(argv[3]));
    if (strcmp(which, "write110m") == 0 && argc == 3)
        return write_model(argv[2], 768, 2048, 12, 12, 12, 32000, 1024) == 0 ? 0 : 1;
    bool small = strcmp(which, "all") == 0 || strcmp(which, "small") == 0;
    bool big = strcmp(which, "all") == 0 || strcmp(which, "110m") == 0;
    bool kv = strcmp(which, "all") == 0 || strcmp(which, "kv") == 0;
    int rc = 0;
    if (kv) rc |= bench_kv_kernels();
    if (small) {
        rc |= bench_model("stories260K", shared_path("models/stories260K/stories260K.bin"), 8, 256, 16, 256);
        rc |= bench_model("sotu-2.7M", shared_path("models/sotu-2.7M/sotu-2.7M.bin"), 8, 256, 16, 255);
    }
    if (big) {
        char dir[4096], path[4200];
        test_tmpdir(dir, sizeof dir);
        snprintf(path, sizeof path, "%s/stories110M-shape.bin", dir);
        if (write_model(path, 768, 2048, 12, 12, 12, 32000, 1024) != 0) {
            fprintf(stderr, "bench_forward: cannot write %s\n", path);
            rc = 1;
        } else {
            rc |= bench_model("110M-shape (random)", path, 1, 1024, 0, 64);
            rc |= bench_model("110M-shape (random)", path, 4, 256, 0, 0);
        }
        remove(path);
        rmdir(dir);
    }
    return rc;
}
