/* test_gguf.c - GGUF input: the sotu-2.7M GGUF files written by llama.cpp's own tools (F32,
 * F16, Q8_0) against the llama2.c checkpoint of the same weights (weights, then logits), the
 * GGUF tokenizer against tok2048.bin (every piece and score, then the ids of every line of
 * sotu-eval.txt), and a table of hostile GGUF files made by mutating a copy of the F32 file. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_tokenizer.h"
#include "test_main.h"
#include "shared_fixture.h"
#include "test_util.h"

#define BIN "models/sotu-2.7M/sotu-2.7M.bin"
#define TOK "models/sotu-2.7M/tok2048.bin"
#define G_F32 "models/sotu-2.7M-gguf/sotu-2.7M-f32.gguf"
#define G_F16 "models/sotu-2.7M-gguf/sotu-2.7M-f16.gguf"
#define G_Q80 "models/sotu-2.7M-gguf/sotu-2.7M-q8_0.gguf"
#define EVAL_U16 "data/sotu-eval.tok2048.u16"
#define B 2
#define T 128


/* Logits (B, T, vocab) of weights w of model m on the first B*T tokens of the eval file. */
static float *logits(const mpq_model *m, const mpq_weights *w) {
    size_t n = 0;
    uint16_t *u = test_read_file(shared_path(EVAL_U16), &n);
    ck_assert_ptr_nonnull(u);
    ck_assert_uint_ge(n, (size_t)B * T * 2);
    int tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = u[i];
    free(u);
    mpq_exec *ex = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_exec_create(m, B, T, &ex, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_exec_forward(ex, w, NULL, tok, B, T, &err) == MPQ_OK, "%s", err.msg);
    size_t nl = (size_t)B * T * (size_t)mpq_model_get_config(m)->vocab_size;
    float *out = malloc(nl * sizeof *out);
    memcpy(out, mpq_exec_logits(ex), nl * sizeof *out);
    mpq_exec_free(ex);
    return out;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i] - (double)b[i]) > d) d = fabs((double)a[i] - (double)b[i]);
    return d;
}

static size_t n_logits(const mpq_model *m) { return (size_t)B * T * (size_t)mpq_model_get_config(m)->vocab_size; }

/* The F32 file holds exactly the checkpoint's weights (so q/k rows are already in llama2.c's
 * interleaved RoPE order), hence exactly its logits. */
START_TEST(test_f32_equals_llama2c) {
    mpq_model *ref = test_load_model(BIN), *g = test_load_model(G_F32);
    const mpq_model_config *c = mpq_model_get_config(g);
    ck_assert_int_eq(c->format, MPQ_MODEL_FORMAT_GGUF);
    ck_assert_str_eq(c->source_dtype, "F32");
    ck_assert_int_eq(c->dim, 192);
    ck_assert_int_eq(c->n_kv_heads, 2);
    ck_assert_int_eq(c->vocab_size, 2048);
    ck_assert_int_eq(c->seq_len, 256);
    ck_assert(c->shared_classifier);
    ck_assert_int_eq(mpq_model_n_params(g), mpq_model_n_params(ref));
    const mpq_weights *wr = mpq_model_get_weights(ref), *wg = mpq_model_get_weights(g);
    ck_assert_uint_eq(wr->n_floats, wg->n_floats);
    ck_assert_int_eq(memcmp(wr->data, wg->data, wr->n_floats * sizeof(float)), 0);
    for (int i = 0; i < mpq_model_n_linear(g); i++)
        ck_assert_str_eq(mpq_model_linear(g, i)->name, mpq_model_linear(ref, i)->name);
    float *lr = logits(ref, wr), *lg = logits(g, wg);
    double d = max_abs_diff(lr, lg, n_logits(g));
    printf("GGUF F32 vs llama2.c: max |logit difference| %.3g over %zu logits\n", d, n_logits(g));
    /* same weights bit for bit and the same executor: the tolerance is zero */
    ck_assert_msg(d == 0.0, "max |logit difference| %g", d);
    free(lr);
    free(lg);
    mpq_model_free(g);
    mpq_model_free(ref);
}
END_TEST

/* The F16 file: matrices F16 (round to nearest even, as ggml converts), norms F32. Each weight
 * must equal mpq_fp16_round of the checkpoint's weight; then the logits equal, bit for bit,
 * those of the checkpoint with its weights rounded to fp16 by mpq. The difference from the F32
 * logits is reported. */
START_TEST(test_f16) {
    mpq_model *ref = test_load_model(BIN), *g = test_load_model(G_F16);
    ck_assert_str_eq(mpq_model_get_config(g)->source_dtype, "F16");
    const mpq_weights *wg = mpq_model_get_weights(g);
    mpq_weights *emu = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_weights_clone(ref, &emu, &err) == MPQ_OK, "%s", err.msg);
    size_t n_f16 = 0;
    for (size_t i = 0; i < emu->n_floats; i++) {
        float r = emu->data[i], h = mpq_fp16_round(r);
        if (wg->data[i] == r) continue; /* F32 tensor, or exactly representable */
        ck_assert_msg(wg->data[i] == h, "weight %zu: gguf %.9g, checkpoint %.9g rounds to %.9g", i,
                      (double)wg->data[i], (double)r, (double)h);
        emu->data[i] = h;
        n_f16++;
    }
    ck_assert_uint_gt(n_f16, emu->n_floats / 2);
    float *lf = logits(ref, mpq_model_get_weights(ref)), *le = logits(ref, emu), *lg = logits(g, wg);
    double d = max_abs_diff(lf, lg, n_logits(g)), de = max_abs_diff(le, lg, n_logits(g));
    printf("GGUF F16 vs llama2.c F32: max |logit difference| %.3g; vs the checkpoint rounded to fp16 by mpq: %.3g\n",
           d, de);
    ck_assert_msg(de == 0.0, "max |logit difference| %g", de);
    free(lf);
    free(le);
    free(lg);
    mpq_weights_free(emu);
    mpq_model_free(g);
    mpq_model_free(ref);
}
END_TEST

/* The Q8_0 file: every row in blocks of 32, value = fp16(d) * q with |q| <= 127 and
 * d = amax/127 of the block. Per weight, |deq - w| <= d/2 (rounding q) + 127 * |d - fp16(d)|
 * <= d * (1/2 + 127 * 2^-11) (fp16 rounding of d, relative 2^-11): checked for every weight of
 * every Q8_0 matrix. Logits are compared with the checkpoint's weights dequantized by a
 * reference Q8_0 written here (ggml's quantize_row_q8_0_ref arithmetic: d = amax/127,
 * q = roundf(x * (1/d)), stored fp16(d)), which reproduces the file's weights exactly. */
START_TEST(test_q8_0) {
    mpq_model *ref = test_load_model(BIN), *g = test_load_model(G_Q80);
    ck_assert_str_eq(mpq_model_get_config(g)->source_dtype, "Q8_0");
    const mpq_weights *wr = mpq_model_get_weights(ref), *wg = mpq_model_get_weights(g);
    mpq_weights *emu = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_weights_clone(ref, &emu, &err) == MPQ_OK, "%s", err.msg);
    size_t n_q = 0, n_diff = 0;
    double worst = 0; /* largest |deq - w| / d */
    for (int li = -1; li < mpq_model_n_linear(ref); li++) {
        /* li = -1: the token embedding (vocab, dim), also Q8_0 in llama-quantize's output */
        const mpq_model_config *c = mpq_model_get_config(ref);
        const mpq_layer_info *L = li >= 0 ? mpq_model_linear(ref, li) : NULL;
        const float *r = L ? mpq_weights_linear(wr, L) : wr->tok_emb;
        const float *q = L ? mpq_weights_linear(wg, L) : wg->tok_emb;
        float *e = L ? mpq_weights_linear(emu, L) : emu->tok_emb;
        size_t n = L ? (size_t)L->n_params : (size_t)c->vocab_size * (size_t)c->dim;
        if (!L && memcmp(r, q, n * sizeof(float)) == 0) continue; /* kept F32 */
        for (size_t b = 0; b < n / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++)
                if (fabsf(r[b * 32 + j]) > amax) amax = fabsf(r[b * 32 + j]);
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f, dh = mpq_fp16_round(d);
            for (int j = 0; j < 32; j++) {
                size_t i = b * 32 + (size_t)j;
                float deq = dh * (float)(int)roundf(r[i] * id);
                e[i] = deq;
                n_diff += deq != q[i];
                double err_i = fabs((double)q[i] - (double)r[i]);
                double bound = (double)d * (0.5 + 127.0 / 2048.0) * (1 + 1e-6);
                ck_assert_msg(err_i <= bound, "weight %zu of %s: |%.9g - %.9g| > %.3g", i, L ? L->name : "token_embd",
                              (double)q[i], (double)r[i], bound);
                if (d > 0 && err_i / d > worst) worst = err_i / d;
                n_q++;
            }
        }
    }
    ck_assert_uint_gt(n_q, 2000000);
    float *lf = logits(ref, wr), *le = logits(ref, emu), *lg = logits(g, wg);
    double d = max_abs_diff(lf, lg, n_logits(g)), de = max_abs_diff(le, lg, n_logits(g));
    printf("GGUF Q8_0: %zu weights, largest |error| %.3f d (bound %.3f d), %zu differ from the reference "
           "Q8_0 written here; max |logit difference| vs llama2.c F32 %.3g, vs the reference Q8_0 %.3g\n",
           n_q, worst, 0.5 + 127.0 / 2048.0, n_diff, d, de);
    /* the reference reproduces llama-quantize's output exactly, so the logits are equal too */
    ck_assert_uint_eq(n_diff, 0);
    ck_assert_msg(de == 0.0, "max |logit difference| %g", de);
    free(lf);
    free(le);
    free(lg);
    mpq_weights_free(emu);
    mpq_model_free(g);
    mpq_model_free(ref);
}
END_TEST

/* The GGUF vocabulary is the one llama2.c's export wrote to tok2048.bin (pieces, scores), and
 * both encode every line of sotu-eval.txt to the same ids, which are the golden ids. */
START_TEST(test_tokenizer_equals_tok2048) {
    mpq_tokenizer *a = NULL, *b = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_tokenizer_load(shared_path(TOK), 2048, &a, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_tokenizer_load(shared_path(G_F32), 2048, &b, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_tokenizer_n_vocab(b), 2048);
    for (int i = 0; i < 2048; i++) {
        ck_assert_str_eq(mpq_tokenizer_piece(a, i), mpq_tokenizer_piece(b, i));
        ck_assert_float_eq(mpq_tokenizer_score(a, i), mpq_tokenizer_score(b, i));
    }
    size_t n = 0;
    char *tsv = test_read_file(shared_path("data/sotu-eval.tok2048.golden.tsv"), &n);
    ck_assert_ptr_nonnull(tsv);
    tsv = realloc(tsv, n + 1);
    tsv[n] = '\0';
    int lines = 0;
    long total = 0;
    for (char *line = tsv, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        char *tab = strchr(line, '\t');
        ck_assert_ptr_nonnull(tab);
        *tab = '\0';
        int *ia = NULL, *ib = NULL, na = 0, nb = 0;
        ck_assert(mpq_tokenizer_encode(a, line, true, false, &ia, &na, &err) == MPQ_OK);
        ck_assert(mpq_tokenizer_encode(b, line, true, false, &ib, &nb, &err) == MPQ_OK);
        ck_assert_int_eq(na, nb);
        char *p = tab + 1;
        for (int i = 0; i < nb; i++) {
            ck_assert_int_eq(ia[i], ib[i]);
            char *end;
            long gold = strtol(p, &end, 10);
            ck_assert_msg(end != p, "line %d: golden ids end after %d of %d", lines + 1, i, nb);
            ck_assert_int_eq(ib[i], gold);
            p = end;
        }
        total += nb;
        lines++;
        free(ia);
        free(ib);
    }
    printf("GGUF tokenizer: %d lines of sotu-eval.txt, %ld ids, equal to tok2048.bin and the golden ids\n", lines,
           total);
    ck_assert_int_eq(lines, 945);
    free(tsv);
    mpq_tokenizer_free(a);
    mpq_tokenizer_free(b);
}
END_TEST

/* ---- hostile files: mutated copies of the F32 file ---------------------------------------- */

static unsigned char *orig;
static size_t orig_n;
static char tmp[4096];

/* Unchecked fixture (runs in the parent, before the tests fork). */
static void load_orig(void) {
    if (!orig) orig = test_read_file(shared_path(G_F32), &orig_n);
    if (!orig) abort();
    if (!tmp[0]) test_tmpdir(tmp, sizeof tmp);
}

/* Offset of the first occurrence of s (as stored: without NUL) in the copy. */
static size_t find(const unsigned char *buf, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(buf + i, s, k) == 0) return i;
    ck_abort_msg("%s not found", s);
    return 0;
}

/* Byte offsets inside the tensor info of `name`: n_dims, type and data offset fields. */
static void tensor_fields(const unsigned char *buf, size_t n, const char *name, size_t *nd_at, size_t *type_at,
                          size_t *off_at) {
    size_t at = find(buf, n, name) + strlen(name);
    uint32_t nd;
    memcpy(&nd, buf + at, 4);
    *nd_at = at;
    *type_at = at + 4 + 8 * (size_t)nd;
    *off_at = *type_at + 4;
}

static void put_u32(unsigned char *b, size_t at, uint32_t v) { memcpy(b + at, &v, 4); }
static void put_u64(unsigned char *b, size_t at, uint64_t v) { memcpy(b + at, &v, 8); }

typedef enum { TRUNC, N_TENSORS, N_TENSORS_HUGE, N_KV_HUGE, KEY_LEN, VALUE_LEN, TYPE_UNKNOWN, TYPE_Q4K, MISALIGNED,
               DUP_NAME, KV_TYPE, MAGIC, VERSION, DIMS_PAST_END, TRUNC_DATA, TRUNC_KV, N_CASES } hostile;

static const struct {
    const char *what;
    mpq_status want;
    const char *msg; /* substring of the message */
} cases[N_CASES] = {
    [TRUNC] = {"truncated to 20 bytes", MPQ_ERR_FORMAT, "too short for a GGUF header"},
    [TRUNC_KV] = {"truncated inside the key/values", MPQ_ERR_FORMAT, "key tokenizer.ggml.tokens: array of 2048 strings"},
    [TRUNC_DATA] = {"truncated inside the data", MPQ_ERR_FORMAT, "end past the file"},
    [N_TENSORS] = {"n_tensors one more than stored", MPQ_ERR_FORMAT, "tensor info"},
    [N_TENSORS_HUGE] = {"n_tensors 2^40", MPQ_ERR_FORMAT, "n_tensors 1099511627776"},
    [N_KV_HUGE] = {"n_kv 2^40", MPQ_ERR_FORMAT, "n_kv 1099511627776"},
    [KEY_LEN] = {"first key's length past EOF", MPQ_ERR_FORMAT, "runs past the end of the file"},
    [VALUE_LEN] = {"general.architecture value length past EOF", MPQ_ERR_FORMAT, "general.architecture: string length"},
    [TYPE_UNKNOWN] = {"tensor type 99", MPQ_ERR_FORMAT, "tensor token_embd.weight: unknown ggml type 99"},
    [TYPE_Q4K] = {"tensor type Q4_K", MPQ_ERR_UNSUPPORTED, "tensor blk.0.attn_q.weight: ggml type Q4_K"},
    [MISALIGNED] = {"data offset + 1", MPQ_ERR_FORMAT, "is not a multiple of the alignment 32"},
    [DUP_NAME] = {"two tensors named blk.0.attn_q.weight", MPQ_ERR_FORMAT, "blk.0.attn_q.weight appears twice"},
    [KV_TYPE] = {"value type 13", MPQ_ERR_FORMAT, "unknown value type 13"},
    [MAGIC] = {"magic GGUX (then read as a llama2.c checkpoint)", MPQ_ERR_FORMAT, "dimensions must be > 0"},
    [VERSION] = {"version 1", MPQ_ERR_UNSUPPORTED, "GGUF version 1"},
    [DIMS_PAST_END] = {"token_embd ne[1] x 1000", MPQ_ERR_FORMAT, "tensor token_embd.weight: bytes"},
};

START_TEST(test_hostile) {
    hostile h = (hostile)_i;
    unsigned char *b = malloc(orig_n);
    memcpy(b, orig, orig_n);
    size_t n = orig_n, nd_at, type_at, off_at;
    uint64_t v;
    switch (h) {
    case TRUNC: n = 20; break;
    case TRUNC_KV: n = find(b, n, "tokenizer.ggml.tokens") + 3000; break;
    case TRUNC_DATA: n = orig_n - 1000; break;
    case N_TENSORS: memcpy(&v, b + 8, 8); put_u64(b, 8, v + 1); break;
    case N_TENSORS_HUGE: put_u64(b, 8, (uint64_t)1 << 40); break;
    case N_KV_HUGE: put_u64(b, 16, (uint64_t)1 << 40); break;
    case KEY_LEN: put_u64(b, 24, (uint64_t)1 << 50); break;
    case VALUE_LEN: put_u64(b, find(b, n, "general.architecture") + 20 + 4, (uint64_t)1 << 50); break;
    case KV_TYPE: put_u32(b, find(b, n, "general.architecture") + 20, 13); break;
    case TYPE_UNKNOWN:
        tensor_fields(b, n, "token_embd.weight", &nd_at, &type_at, &off_at);
        put_u32(b, type_at, 99);
        break;
    case TYPE_Q4K:
        tensor_fields(b, n, "blk.0.attn_q.weight", &nd_at, &type_at, &off_at);
        put_u32(b, type_at, 12);
        break;
    case MISALIGNED:
        tensor_fields(b, n, "blk.0.attn_k.weight", &nd_at, &type_at, &off_at);
        memcpy(&v, b + off_at, 8);
        put_u64(b, off_at, v + 1);
        break;
    case DUP_NAME: memcpy(b + find(b, n, "blk.0.attn_k.weight"), "blk.0.attn_q.weight", 19); break;
    case MAGIC: b[3] = 'X'; break;
    case VERSION: put_u32(b, 4, 1); break;
    case DIMS_PAST_END:
        tensor_fields(b, n, "token_embd.weight", &nd_at, &type_at, &off_at);
        memcpy(&v, b + nd_at + 4 + 8, 8);
        put_u64(b, nd_at + 4 + 8, v * 1000);
        break;
    case N_CASES: break;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/hostile%d.gguf", tmp, (int)h);
    ck_assert_int_eq(test_write_file(path, b, n), 0);
    free(b);
    mpq_model *m = NULL;
    mpq_tokenizer *t = NULL;
    mpq_err err = {0};
    mpq_status st = mpq_model_load(path, &m, &err);
    printf("hostile GGUF, %s: %s\n", cases[h].what, err.msg);
    ck_assert_msg(st == cases[h].want, "%s: status %d, want %d (%s)", cases[h].what, st, cases[h].want, err.msg);
    ck_assert_msg(strstr(err.msg, cases[h].msg), "%s: message \"%s\" lacks \"%s\"", cases[h].what, err.msg,
                  cases[h].msg);
    ck_assert_ptr_null(m);
    /* the tokenizer reads the same header: the same refusal (MAGIC is then not a GGUF at all) */
    if (h != MAGIC) {
        mpq_err e2 = {0};
        ck_assert_int_eq(mpq_tokenizer_load(path, 0, &t, &e2), cases[h].want);
        ck_assert_ptr_null(t);
    }
    remove(path);
}
END_TEST

/* A GGUF tokenizer whose vocabulary size differs from the model's is refused; a GGUF without
 * a tokenizer says so. */
START_TEST(test_tokenizer_vocab_mismatch) {
    mpq_tokenizer *t = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_tokenizer_load(shared_path(G_Q80), 512, &t, &err), MPQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "2048 pieces"));
    unsigned char *b = malloc(orig_n);
    memcpy(b, orig, orig_n);
    memcpy(b + find(b, orig_n, "tokenizer.ggml.model"), "tokenizer.ggml.modex", 20);
    char path[4200];
    snprintf(path, sizeof path, "%s/notok.gguf", tmp);
    ck_assert_int_eq(test_write_file(path, b, orig_n), 0);
    free(b);
    ck_assert_int_eq(mpq_tokenizer_load(path, 0, &t, &err), MPQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "no tokenizer in the file"));
    remove(path);
}
END_TEST

static void cleanup(void) {
    free(orig);
    orig = NULL;
    if (tmp[0]) rmdir(tmp);
}

static Suite *gguf_suite(void) {
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("gguf");
    tcase_set_timeout(tc, 600);
    tcase_add_unchecked_fixture(tc, load_orig, cleanup);
    tcase_add_test(tc, test_f32_equals_llama2c);
    tcase_add_test(tc, test_f16);
    tcase_add_test(tc, test_q8_0);
    tcase_add_test(tc, test_tokenizer_equals_tok2048);
    tcase_add_loop_test(tc, test_hostile, 0, N_CASES);
    tcase_add_test(tc, test_tokenizer_vocab_mismatch);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(gguf_suite)
