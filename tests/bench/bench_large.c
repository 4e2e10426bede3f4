/* bench_large.c - mpq on large models: a TinyLlama-1.1B-shaped model (22 blocks, dim 2048,
 * hidden 5632, 32 heads, 4 KV heads, vocab 32000, untied classifier) and a llama2.c
 * 110M-shaped one (12 blocks, dim 768, hidden 2048, 12 heads, vocab 32000, tied), generated
 * with seeded random weights as BF16 Hugging Face folders (config.json + model.safetensors,
 * what src/model/hf.c reads) in a temporary folder that is deleted afterwards. Random weights
 * and random tokens: the figures are costs (seconds, tokens/s, bytes), never quality.
 *
 * Each measurement runs in a child process (fork) so that its peak RSS (VmHWM) is its own.
 *   1. 110M shape, calibration 16 x 128 tokens, batch 8, X^T X collected: peak RSS with 1 and
 *      2 calibration workers (mpq_calib_fork), each worker running 2 layer units; and the
 *      same with an extra F32 weight clone per fork, which is what a fork held before workers
 *      shared the model's weights (the old fork: layer scratch + clone + executor); then 1 and
 *      2 workers with the linear layers held in BF16 (mpq_model_load_dtype), with the CPU
 *      seconds of widening every linear layer once (what each forward adds).
 *   2. 1.1B shape, 16 x 128 tokens, batch 4, X^T X collected only with --xtx (22 blocks of
 *      packed X^T X are 3.9 GB), weights stored as --weights-dtype (default f32): load time,
 *      executor activation bytes (full and forward-only), CPU seconds of widening every linear
 *      layer once (16-bit storage), forward tokens/s with 1 and 2 workers (one executor
 *      each, batches of 4 x 128), reference-pass time, seconds of layer_sensitivity units
 *      (int4g32) of each entry point at the last block and of attn_q at block 0, of a
 *      kv_sensitivity unit (k4v4) at the last block, two layer units at once on 2 workers,
 *      and peak RSS.
 *   3. 1 block of the 1.1B widths (same dim / hidden / vocab), X^T X collected: seconds of
 *      weight_error for each of the 7 layer kinds x the 4 candidates of
 *      examples/stories260K.json (a weight_error unit's cost depends only on its layer's
 *      shape, not on the number of blocks).
 * Then it projects the wall time of examples/stories260K.json's stages (weight_error and
 * layer_sensitivity over 154 layers x 4 candidates, kv_sensitivity over 22 blocks x 7 pairs)
 * for the 1.1B shape at 16 x 128 tokens on 1, 2 and 16 cores, LINEARLY from the per-unit
 * times: a layer / KV unit at block b costs t(last block) + (L-1-b) * (one block), one block
 * = (t(attn_q at block 0) - t(attn_q at last block)) / (L-1); wall(n cores) = reference pass
 * + sum of unit CPU times / n (n dedicated cores, no other load). Asserts nothing about time.
 *
 * Disk: needs the generated folders' size (2.2 GB + 0.5 GB + 0.2 GB) + 1 GiB free in $TMPDIR
 * (default /tmp), else it says so and exits 0 without running. Memory: about 8 GB at its
 * peak (part 2 with 2 workers). Usage: bench_large [--skip-1b | --only-1b] [--weights-dtype f32|bf16|source]
 * [--xtx]. Unit costs are CPU seconds of
 * the process (wall seconds on a shared machine measure its load); both are printed for the
 * forward and the reference pass. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_rng.h"
#include "test_util.h"

typedef struct shape {
    const char *name;
    int dim, hidden, layers, heads, kv_heads, vocab;
    bool tied;
} shape;

static mpq_weights_dtype g_dt = MPQ_WEIGHTS_F32; /* --weights-dtype of parts 2 and 3 */
static bool g_xtx = false;                       /* --xtx: part 2 collects X^T X (packed) */

static const shape SHAPE_1B = {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, false};
static const shape SHAPE_1B_1 = {"tinyllama-1.1b-1block", 2048, 5632, 1, 32, 4, 32000, false};
static const shape SHAPE_110M = {"llama2c-110m", 768, 2048, 12, 12, 12, 32000, true};

#define N_SEQS 16
#define SEQ_T 128

static const char *CANDS[4] = {"int2g32", "int3g32", "int4g32", "int8c"};
static const char *PAIRS[7] = {"k8v8", "k8v4", "k4v8", "k4v4", "k4v2", "k2v4", "k2v2"};

/* ---- generator -------------------------------------------------------------------------- */

typedef struct tensor_desc {
    char name[96];
    int64_t rows, cols; /* cols 0 = vector */
    int kind;           /* 0 embedding, 1 norm (ones), 2 linear */
} tensor_desc;

static int list_tensors(const shape *s, tensor_desc *t) {
    static const char *lin[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                 "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    const int64_t d = s->dim, h = s->hidden, kv = (int64_t)s->kv_heads * (s->dim / s->heads);
    const int64_t rows[7] = {d, kv, kv, d, h, h, d}, cols[7] = {d, d, d, d, d, d, h};
    int n = 0;
    t[n++] = (tensor_desc){"model.embed_tokens.weight", s->vocab, d, 0};
    for (int l = 0; l < s->layers; l++) {
        t[n] = (tensor_desc){"", d, 0, 1};
        snprintf(t[n++].name, 96, "model.layers.%d.input_layernorm.weight", l);
        for (int k = 0; k < 7; k++) {
            t[n] = (tensor_desc){"", rows[k], cols[k], 2};
            snprintf(t[n++].name, 96, "model.layers.%d.%s.weight", l, lin[k]);
            if (k == 3) {
                t[n] = (tensor_desc){"", d, 0, 1};
                snprintf(t[n++].name, 96, "model.layers.%d.post_attention_layernorm.weight", l);
            }
        }
    }
    t[n++] = (tensor_desc){"model.norm.weight", d, 0, 1};
    if (!s->tied) t[n++] = (tensor_desc){"lm_head.weight", s->vocab, d, 2};
    return n;
}

static int64_t n_elems(const tensor_desc *t) { return t->rows * (t->cols > 0 ? t->cols : 1); }

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1); /* round to nearest even (values here are finite) */
    return (uint16_t)(u >> 16);
}

static int64_t shape_bytes(const shape *s) {
    tensor_desc *t = calloc((size_t)s->layers * 10 + 4, sizeof *t);
    if (!t) return -1;
    int n = list_tensors(s, t);
    int64_t b = 0;
    for (int i = 0; i < n; i++) b += 2 * n_elems(&t[i]);
    free(t);
    return b;
}

/* Writes DIR/config.json and DIR/model.safetensors (BF16). Linear weights uniform with
 * standard deviation 1/sqrt(in_features) (activations stay O(1) through the blocks),
 * embeddings / classifier standard deviation 1, norms 1. Returns 0 on success. */
static int generate(const shape *s, const char *dir, uint64_t seed) {
    char path[4096];
    int rc = -1;
    FILE *f = NULL;
    char *hdr = NULL;
    uint16_t *buf = NULL;
    tensor_desc *t = calloc((size_t)s->layers * 10 + 4, sizeof *t);
    if (!t) return -1;
    int n = list_tensors(s, t);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!(f = fopen(path, "w"))) goto done;
    fprintf(f,
            "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d,\n"
            " \"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,\n"
            " \"num_key_value_heads\": %d, \"vocab_size\": %d, \"max_position_embeddings\": 2048,\n"
            " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s,\n"
            " \"torch_dtype\": \"bfloat16\"}\n",
            s->dim, s->hidden, s->layers, s->heads, s->kv_heads, s->vocab, s->tied ? "true" : "false");
    if (fclose(f) != 0) {
        f = NULL;
        goto done;
    }
    size_t cap = (size_t)n * 200 + 64, len = 0;
    if (!(hdr = malloc(cap))) goto done;
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t nb = 2 * n_elems(&t[i]);
        if (t[i].cols > 0)
            len += (size_t)snprintf(hdr + len, cap - len,
                                    ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld,%lld],\"data_offsets\":[%lld,%lld]}",
                                    t[i].name, (long long)t[i].rows, (long long)t[i].cols, (long long)off,
                                    (long long)(off + nb));
        else
            len += (size_t)snprintf(hdr + len, cap - len,
                                    ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld],\"data_offsets\":[%lld,%lld]}",
                                    t[i].name, (long long)t[i].rows, (long long)off, (long long)(off + nb));
        off += nb;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!(f = fopen(path, "wb"))) goto done;
    uint64_t hl = len;
    unsigned char le[8];
    for (int k = 0; k < 8; k++) le[k] = (unsigned char)(hl >> (8 * k));
    if (fwrite(le, 1, 8, f) != 8 || fwrite(hdr, 1, len, f) != len) goto done;
    const size_t chunk = (size_t)1 << 20;
    if (!(buf = malloc(chunk * sizeof *buf))) goto done;
    mpq_rng r;
    mpq_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int64_t ne = n_elems(&t[i]);
        double a = t[i].kind == 2 ? sqrt(3.0 / (double)t[i].cols) : sqrt(3.0);
        for (int64_t done = 0; done < ne;) {
            size_t m = (size_t)(ne - done < (int64_t)chunk ? ne - done : (int64_t)chunk);
            for (size_t k = 0; k < m; k++)
                buf[k] = to_bf16(t[i].kind == 1 ? 1.0f : (float)((2.0 * mpq_rng_uniform(&r) - 1.0) * a));
            if (fwrite(buf, sizeof *buf, m, f) != m) goto done;
            done += (int64_t)m;
        }
    }
    rc = fclose(f) == 0 ? 0 : -1;
    f = NULL;
done:
    if (f) fclose(f);
    free(buf);
    free(hdr);
    free(t);
    return rc;
}

static void remove_model(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    rmdir(dir);
}

static int mkdir_0700(const char *d) { return mkdir(d, 0700); }

/* CPU seconds of this process (all its threads): on a shared machine wall seconds measure the
 * load as much as the work, so unit costs are taken in CPU seconds (BLAS runs one thread). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- measurements ------------------------------------------------------------------------ */

static double vm_hwm_gib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = atof(line + 6);
    if (f) fclose(f);
    return kb / (1024.0 * 1024.0);
}

static int *random_tokens(int vocab, uint64_t seed) {
    int *tok = malloc((size_t)N_SEQS * (SEQ_T + 1) * sizeof *tok);
    mpq_rng r;
    mpq_rng_seed(&r, seed);
    for (int i = 0; tok && i < N_SEQS * (SEQ_T + 1); i++) tok[i] = (int)mpq_rng_below(&r, (uint64_t)vocab);
    return tok;
}

static void die(const char *what, const mpq_err *err) {
    fprintf(stderr, "bench_large: %s: %s\n", what, err->msg);
    exit(1);
}

static int find_layer(const mpq_model *m, int block, mpq_layer_kind kind) {
    for (int i = 0; i < mpq_model_n_linear(m); i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        if (li->block == block && li->kind == kind) return i;
    }
    return -1;
}

/* Work shared by worker threads through mpq_exec_batches_run. */
typedef struct par {
    mpq_calib **cals;
    mpq_exec **exs;
    const mpq_weights *w;
    const int *tokens;
    int B, T, lin;
    mpq_candidate cand;
} par;

static mpq_status par_forward(void *user, int worker, int batch, mpq_err *err) {
    par *p = user;
    (void)batch; /* every batch forwards the same tokens */
    return mpq_exec_forward(p->exs[worker], p->w, NULL, p->tokens, p->B,
                            p->T, err);
}

static mpq_status par_layer(void *user, int worker, int batch, mpq_err *err) {
    par *p = user;
    (void)batch;
    mpq_calib_result r;
    return mpq_calib_layer(p->cals[worker], p->lin, &p->cand, &r, err);
}

static mpq_status par_nop(void *user, int worker, int batch, mpq_err *err) {
    (void)user, (void)worker, (void)batch, (void)err;
    return MPQ_OK;
}

/* CPU seconds to widen every linear layer of a 16-bit model once into a float32 scratch
 * (what each forward pays for converting at use); 0 for a float32 model. */
static double conversion_cpu(const mpq_model *m) {
    if (mpq_model_weights_dtype(m) == MPQ_WEIGHTS_F32) return 0;
    int64_t big = 0;
    for (int i = 0; i < mpq_model_n_linear(m); i++)
        if (mpq_model_linear(m, i)->n_params > big) big = mpq_model_linear(m, i)->n_params;
    float *s = malloc((size_t)big * sizeof *s);
    if (!s) return -1;
    double c0 = cpu_now();
    volatile float sink = 0;
    for (int i = 0; i < mpq_model_n_linear(m); i++) {
        const float *w = mpq_weights_linear_f32(mpq_model_get_weights(m), mpq_model_linear(m, i), s);
        sink += w[0];
    }
    double t = cpu_now() - c0;
    (void)sink;
    free(s);
    return t;
}

/* GiB the model's weights hold in memory: 2 B per 16-bit parameter, 4 B per float32 one. */
static double weight_gib(const mpq_model *m) {
    int64_t n16 = 0, n = mpq_model_n_params(m);
    if (mpq_model_weights_dtype(m) != MPQ_WEIGHTS_F32) {
        for (int i = 0; i < mpq_model_n_linear(m); i++) n16 += mpq_model_linear(m, i)->n_params;
        if (mpq_model_get_weights(m)->tok_emb16)
            n16 += (int64_t)mpq_model_get_config(m)->vocab_size * mpq_model_get_config(m)->dim;
    }
    return (double)(2 * n16 + 4 * (n - n16)) / (1 << 30);
}

/* Part 1: peak RSS of a calibration with n_workers workers (each runs 2 layer units). */
static int part_rss(const char *dir, int n_workers, bool old_clone, mpq_weights_dtype dt) {
    mpq_err err = {0};
    mpq_model *m = NULL;
    if (mpq_model_load_dtype(dir, dt, &m, &err) != MPQ_OK) die(dir, &err);
    int *tok = random_tokens(mpq_model_get_config(m)->vocab_size, 7);
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = 8;
    mpq_calib *cals[2] = {NULL, NULL};
    mpq_weights *clones[2] = {NULL, NULL};
    if (mpq_calib_create(m, tok, N_SEQS, SEQ_T, &o, &cals[0], &err) != MPQ_OK) die("calib", &err);
    for (int i = 1; i < n_workers; i++) {
        if (mpq_calib_fork(cals[0], &cals[i], &err) != MPQ_OK) die("fork", &err);
        if (old_clone && mpq_weights_clone(m, &clones[i], &err) != MPQ_OK) die("clone", &err);
    }
    par p = {.cals = cals, .lin = find_layer(m, mpq_model_get_config(m)->n_layers - 1, MPQ_LAYER_FFN_DOWN)};
    if (mpq_candidate_parse("int4g32", &p.cand, &err) != MPQ_OK) die("candidate", &err);
    if (mpq_exec_batches_run(n_workers, 2 * n_workers, par_layer, par_nop, &p, &err) != MPQ_OK) die("units", &err);
    double conv = conversion_cpu(m);
    printf("  %-14s %s weights %.2f GiB, %d worker%s%s: peak RSS %.2f GiB", "llama2c-110m",
           dt == MPQ_WEIGHTS_F32 ? "F32" : "BF16", weight_gib(m), n_workers, n_workers > 1 ? "s" : "",
           old_clone ? " + a weight clone per fork (as before)" : "", vm_hwm_gib());
    if (conv > 0) printf("; widening every linear layer once (one forward's conversions): %.3f CPU s", conv);
    printf("\n");
    for (int i = 1; i < n_workers; i++) {
        mpq_calib_free(cals[i]);
        mpq_weights_free(clones[i]);
    }
    mpq_calib_free(cals[0]);
    free(tok);
    mpq_model_free(m);
    return 0;
}

/* Figures of part 2, written by the child into a pipe. */
typedef struct big_times {
    double load_s, fwd1_tps, fwd2_tps, ref_s, layer_last[MPQ_N_LAYER_KINDS], q_first, kv_last, layer2_par, rss;
    double act_bytes, act_fwd_bytes, conv_s, weight_gib;
    double fwd1_wall_tps, fwd2_wall_tps, ref_wall; /* wall-clock counterparts */
} big_times;

static int part_big(const char *dir, big_times *bt, mpq_weights_dtype dt) {
    mpq_err err = {0};
    mpq_model *m = NULL;
    double t0 = mpq_time_now();
    if (mpq_model_load_dtype(dir, dt, &m, &err) != MPQ_OK) die(dir, &err);
    bt->load_s = mpq_time_now() - t0;
    const mpq_model_config *cfg = mpq_model_get_config(m);
    const int L = cfg->n_layers, B = 4;
    int *tok = random_tokens(cfg->vocab_size, 11);
    int *fwd_tok = malloc((size_t)B * SEQ_T * sizeof *fwd_tok); /* (B, T) packed inputs */
    for (int b = 0; b < B; b++) memcpy(fwd_tok + b * SEQ_T, tok + b * (SEQ_T + 1), SEQ_T * sizeof *fwd_tok);
    mpq_exec *exs[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++)
        if (mpq_exec_create(m, B, SEQ_T, &exs[i], &err) != MPQ_OK) die("exec", &err);
    bt->act_bytes = (double)mpq_exec_activation_bytes(exs[0]);
    {
        mpq_exec *ef = NULL;
        if (mpq_exec_create_forward(m, B, SEQ_T, &ef, &err) != MPQ_OK) die("exec", &err);
        bt->act_fwd_bytes = (double)mpq_exec_activation_bytes(ef);
        mpq_exec_free(ef);
    }
    bt->conv_s = conversion_cpu(m);
    bt->weight_gib = weight_gib(m);
    par p = {.exs = exs, .w = mpq_model_get_weights(m), .tokens = fwd_tok, .B = B, .T = SEQ_T};
    /* 1 worker, then 2 at once (A B A B would double a heavy run; each is one batch) */
    t0 = mpq_time_now();
    double c0 = cpu_now();
    if (mpq_exec_batches_run(1, 1, par_forward, par_nop, &p, &err) != MPQ_OK) die("forward", &err);
    bt->fwd1_tps = B * SEQ_T / (cpu_now() - c0);
    bt->fwd1_wall_tps = B * SEQ_T / (mpq_time_now() - t0);
    t0 = mpq_time_now();
    c0 = cpu_now();
    if (mpq_exec_batches_run(2, 2, par_forward, par_nop, &p, &err) != MPQ_OK) die("forward x2", &err);
    bt->fwd2_tps = 2 * B * SEQ_T / (cpu_now() - c0);
    bt->fwd2_wall_tps = 2 * B * SEQ_T / (mpq_time_now() - t0);
    mpq_exec_free(exs[1]);
    mpq_exec_free(exs[0]);

    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = B;
    o.collect_xtx = g_xtx;
    o.kv_scheme.mode = MPQ_KV_KIVI;
    o.kv_scheme.group_size = 32;
    o.kv_scheme.residual = 0;
    mpq_calib *cals[2] = {NULL, NULL};
    t0 = mpq_time_now();
    c0 = cpu_now();
    if (mpq_calib_create(m, tok, N_SEQS, SEQ_T, &o, &cals[0], &err) != MPQ_OK) die("calib", &err);
    bt->ref_s = cpu_now() - c0;
    bt->ref_wall = mpq_time_now() - t0;
    mpq_candidate c;
    if (mpq_candidate_parse("int4g32", &c, &err) != MPQ_OK) die("candidate", &err);
    mpq_calib_result r;
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++) {
        c0 = cpu_now();
        if (mpq_calib_layer(cals[0], find_layer(m, L - 1, (mpq_layer_kind)k), &c, &r, &err) != MPQ_OK)
            die("layer unit", &err);
        bt->layer_last[k] = cpu_now() - c0;
    }
    mpq_kv_pair kp;
    c0 = cpu_now();
    if (mpq_kv_pair_parse("k4v4", &kp, &err) != MPQ_OK || mpq_calib_kv(cals[0], L - 1, kp, &r, &err) != MPQ_OK)
        die("kv unit", &err);
    bt->kv_last = cpu_now() - c0;
    c0 = cpu_now();
    if (mpq_calib_layer(cals[0], find_layer(m, 0, MPQ_LAYER_ATTN_Q), &c, &r, &err) != MPQ_OK) die("layer unit", &err);
    bt->q_first = cpu_now() - c0;
    if (mpq_calib_fork(cals[0], &cals[1], &err) != MPQ_OK) die("fork", &err);
    p = (par){.cals = cals, .lin = find_layer(m, L - 1, MPQ_LAYER_FFN_DOWN), .cand = c};
    c0 = cpu_now();
    if (mpq_exec_batches_run(2, 2, par_layer, par_nop, &p, &err) != MPQ_OK) die("units x2", &err);
    bt->layer2_par = (cpu_now() - c0) / 2; /* CPU seconds per unit with 2 workers */
    bt->rss = vm_hwm_gib();
    mpq_calib_free(cals[1]);
    mpq_calib_free(cals[0]);
    free(fwd_tok);
    free(tok);
    mpq_model_free(m);
    return 0;
}

/* Part 3: weight_error seconds per (kind, candidate) on one block of the 1.1B widths. */
static int part_werr(const char *dir, double we[MPQ_N_LAYER_KINDS][4], mpq_weights_dtype dt) {
    mpq_err err = {0};
    mpq_model *m = NULL;
    if (mpq_model_load_dtype(dir, dt, &m, &err) != MPQ_OK) die(dir, &err);
    int *tok = random_tokens(mpq_model_get_config(m)->vocab_size, 13);
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = 4;
    mpq_calib *cal = NULL;
    if (mpq_calib_create(m, tok, N_SEQS, SEQ_T, &o, &cal, &err) != MPQ_OK) die("calib", &err);
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++)
        for (int j = 0; j < 4; j++) {
            mpq_candidate c;
            mpq_calib_weight_stats ws;
            if (mpq_candidate_parse(CANDS[j], &c, &err) != MPQ_OK) die("candidate", &err);
            double c0 = cpu_now();
            if (mpq_calib_weight_error(cal, find_layer(m, 0, (mpq_layer_kind)k), &c, &ws, &err) != MPQ_OK)
                die("weight_error", &err);
            we[k][j] = cpu_now() - c0;
        }
    mpq_calib_free(cal);
    free(tok);
    mpq_model_free(m);
    return 0;
}

/* Runs fn in a child; its result bytes come back through a pipe. */
typedef int (*child_fn)(void *arg, void *out);
static int in_child(child_fn fn, void *arg, void *out, size_t out_n) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        int rc = fn(arg, out);
        fflush(stdout);
        if (out_n && write(fd[1], out, out_n) != (ssize_t)out_n) rc = 1;
        _exit(rc);
    }
    close(fd[1]);
    size_t got = 0;
    while (got < out_n) {
        ssize_t k = read(fd[0], (char *)out + got, out_n - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return (WIFEXITED(status) && WEXITSTATUS(status) == 0 && got == out_n) ? 0 : -1;
}

typedef struct rss_arg {
    const char *dir;
    int n_workers;
    bool old_clone;
    mpq_weights_dtype dt;
} rss_arg;
static int c_rss(void *a, void *out) {
    (void)out;
    rss_arg *r = a;
    return part_rss(r->dir, r->n_workers, r->old_clone, r->dt);
}
static int c_big(void *a, void *out) { return part_big(a, out, g_dt); }
static int c_werr(void *a, void *out) { return part_werr(a, out, g_dt); }

static const char *kind_short[MPQ_N_LAYER_KINDS] = {"attn_q", "attn_k", "attn_v", "attn_o",
                                                    "ffn_gate", "ffn_up", "ffn_down"};

static char g_dirs[3][4200], g_root[4096];

/* SIGINT / SIGTERM: delete the generated folders (unlink and rmdir are async-signal-safe). */
static void on_signal(int sig) {
    for (int i = 0; i < 3; i++) remove_model(g_dirs[i]);
    rmdir(g_root);
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv) {
    bool skip_1b = false, only_1b = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--skip-1b") == 0) {
            skip_1b = true;
        } else if (strcmp(argv[i], "--only-1b") == 0) {
            only_1b = true;
        } else if (strcmp(argv[i], "--xtx") == 0) {
            g_xtx = true;
        } else if (strcmp(argv[i], "--weights-dtype") == 0 && i + 1 < argc &&
                   mpq_weights_dtype_parse(argv[i + 1], &g_dt) && g_dt != MPQ_WEIGHTS_F16) {
            i++;
        } else {
            fprintf(stderr, "usage: bench_large [--skip-1b | --only-1b] [--weights-dtype f32|bf16|source] [--xtx]\n");
            return 2;
        }
    }
    mpq_blas_set_threads(1);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    int64_t need = shape_bytes(&SHAPE_110M) + (skip_1b ? 0 : shape_bytes(&SHAPE_1B) + shape_bytes(&SHAPE_1B_1));
    struct statvfs sv;
    if (statvfs(tmp, &sv) != 0 || (double)sv.f_bavail * sv.f_frsize < (double)need + (1 << 30)) {
        printf("bench_large: %s has not enough free space for the generated models (%.1f GB + 1 GiB margin); "
               "skipped (set TMPDIR to a folder with room)\n",
               tmp, need / 1e9);
        return 0;
    }
    char *root = g_root, *d110 = g_dirs[0], *d1b = g_dirs[1], *d1b1 = g_dirs[2];
    snprintf(root, sizeof g_root, "%s/mpqbench.XXXXXX", tmp);
    if (!mkdtemp(root)) {
        perror("bench_large: mkdtemp");
        return 1;
    }
    snprintf(d110, sizeof g_dirs[0], "%s/110m", root);
    snprintf(d1b, sizeof g_dirs[1], "%s/1b", root);
    snprintf(d1b1, sizeof g_dirs[2], "%s/1b1", root);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int rc = 0;
    char loadavg[64] = "?";
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (!fgets(loadavg, sizeof loadavg, la)) snprintf(loadavg, sizeof loadavg, "?");
        loadavg[strcspn(loadavg, "\n")] = 0;
        fclose(la);
    }

    if (only_1b) goto big;
    printf("1. peak RSS of a calibration (16 x 128 tokens, batch 8, X^T X on, 2 layer units per worker)\n");
    double t0 = mpq_time_now();
    if (mkdir_0700(d110) != 0 || generate(&SHAPE_110M, d110, 1) != 0) {
        printf("bench_large: cannot write %s\n", d110);
        rc = 1;
        goto done;
    }
    printf("  generated %s (BF16, %.2f GB) in %.1f s\n", SHAPE_110M.name, shape_bytes(&SHAPE_110M) / 1e9,
           mpq_time_now() - t0);
    for (int w = 1; w <= 2; w++) {
        rss_arg a = {d110, w, false, MPQ_WEIGHTS_F32};
        if (in_child(c_rss, &a, NULL, 0) != 0) rc = 1;
        if (w == 2) {
            a.old_clone = true;
            if (in_child(c_rss, &a, NULL, 0) != 0) rc = 1;
        }
    }
    for (int w = 1; w <= 2; w++) { /* the same with the linear layers kept in BF16 */
        rss_arg a = {d110, w, false, MPQ_WEIGHTS_BF16};
        if (in_child(c_rss, &a, NULL, 0) != 0) rc = 1;
    }
    remove_model(d110);
    if (skip_1b) goto done;
big:

    printf("2. %s (22 blocks), 16 x 128 random tokens, batch 4, int4g32 / k4v4 units, X^T X %s\n", SHAPE_1B.name,
           g_xtx ? "collected (packed)" : "not collected");
    t0 = mpq_time_now();
    if (mkdir_0700(d1b) != 0 || generate(&SHAPE_1B, d1b, 2) != 0 || mkdir_0700(d1b1) != 0 ||
        generate(&SHAPE_1B_1, d1b1, 3) != 0) {
        printf("bench_large: cannot write %s\n", root);
        rc = 1;
        goto done;
    }
    printf("  generated BF16 folders (%.2f GB + %.2f GB) in %.1f s\n", shape_bytes(&SHAPE_1B) / 1e9,
           shape_bytes(&SHAPE_1B_1) / 1e9, mpq_time_now() - t0);
    big_times bt;
    memset(&bt, 0, sizeof bt);
    if (in_child(c_big, d1b, &bt, sizeof bt) != 0) {
        printf("bench_large: the 1.1B run failed\n");
        rc = 1;
        goto done;
    }
    double we[MPQ_N_LAYER_KINDS][4];
    if (in_child(c_werr, d1b1, we, sizeof we) != 0) {
        printf("bench_large: the weight_error run failed\n");
        rc = 1;
        goto done;
    }
    const int L = SHAPE_1B.layers;
    printf("  weights in memory: %s, %.2f GiB; load %.1f s\n", mpq_weights_dtype_name(g_dt), bt.weight_gib, bt.load_s);
    printf("  executor activations per worker (batch 4 x 128): %.2f GiB with backward buffers, %.2f GiB forward-only "
           "(calibration)\n", bt.act_bytes / (1 << 30), bt.act_fwd_bytes / (1 << 30));
    if (bt.conv_s > 0) printf("  widening every linear layer once (one forward's conversions): %.2f CPU s\n", bt.conv_s);
    printf("  forward (batches of 4 x 128): %.1f tokens per CPU second with 1 worker, %.1f with 2 workers "
           "(wall: %.1f and %.1f tokens/s; load average %s)\n",
           bt.fwd1_tps, bt.fwd2_tps, bt.fwd1_wall_tps, bt.fwd2_wall_tps, loadavg);
    printf("  reference pass (16 x 128): %.1f CPU s (%.1f s wall)\n", bt.ref_s, bt.ref_wall);
    printf("  unit costs below are CPU seconds\n");
    printf("  layer_sensitivity unit at block %d (prefix reuse):", L - 1);
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++) printf(" %s %.2f s", kind_short[k], bt.layer_last[k]);
    printf("\n  layer_sensitivity attn_q at block 0: %.2f s; kv_sensitivity k4v4 at block %d: %.2f s\n", bt.q_first,
           L - 1, bt.kv_last);
    printf("  2 workers, ffn_down at block %d: %.2f CPU s per unit (1 worker %.2f s)\n", L - 1, bt.layer2_par,
           bt.layer_last[MPQ_LAYER_FFN_DOWN]);
    printf("  peak RSS (1 and 2 workers, %s weights in memory): %.2f GiB\n", mpq_weights_dtype_name(g_dt), bt.rss);
    printf("  weight_error CPU seconds per unit (one block of the same widths, X^T X on):\n");
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++) {
        printf("    %-8s", kind_short[k]);
        for (int j = 0; j < 4; j++) printf(" %s %.2f", CANDS[j], we[k][j]);
        printf("\n");
    }
    /* projection (linear, see the file comment) */
    const double blk = (bt.q_first - bt.layer_last[MPQ_LAYER_ATTN_Q]) / (L - 1);
    double s_we = 0, s_ls = 0, s_kv = 0;
    for (int k = 0; k < MPQ_N_LAYER_KINDS; k++)
        for (int j = 0; j < 4; j++) s_we += L * we[k][j];
    for (int b = 0; b < L; b++) {
        for (int k = 0; k < MPQ_N_LAYER_KINDS; k++) s_ls += 4 * (bt.layer_last[k] + (L - 1 - b) * blk);
        s_kv += 7 * (bt.kv_last + (L - 1 - b) * blk);
    }
    printf("  one block's forward over 16 x 128 tokens: %.2f s\n", blk);
    printf("  projected examples/stories260K.json stages for this shape, 16 x 128 tokens, LINEAR in the unit "
           "CPU times, on dedicated cores (reference pass + sum / cores):\n");
    printf("    unit-seconds: weight_error %.0f (%d units), layer_sensitivity %.0f (%d), kv_sensitivity %.0f (%d)\n",
           s_we, 7 * L * 4, s_ls, 7 * L * 4, s_kv, L * 7);
    const int cores[3] = {1, 2, 16};
    for (int i = 0; i < 3; i++)
        printf("    %2d core%s%s: %.2f h\n", cores[i], cores[i] > 1 ? "s" : " ",
               cores[i] == 16 ? " (2 ranks x 8 threads)" : "", (bt.ref_s + (s_we + s_ls + s_kv) / cores[i]) / 3600.0);
    (void)PAIRS;
done:
    remove_model(d110);
    remove_model(d1b);
    remove_model(d1b1);
    rmdir(root);
    return rc;
}
