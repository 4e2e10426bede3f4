/* test_weights16.c - 16-bit weight storage (mpq_model_load_dtype) and forward-only executors
 * (mpq_exec_create_forward) on the real shared models: a BF16 folder kept in BF16 gives the
 * float32 path's numbers bit for bit (weights, logits, decode, calibration metrics), and
 * act_err read from the packed X^T X agrees with a direct trace(E S E^T); an F32
 * file rounded to BF16 / F16 changes each weight by at most half a unit in the last place;
 * a forward-only executor gives the full executor's numbers with a smaller activation
 * block; hostile dtype values are refused. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_grad.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "test_main.h"
#include "test_util.h"

#define BF16_DIR "models/stories260K-hf-bf16"
#define STORIES "models/stories260K/stories260K.bin"
#define TOKENS "data/tinystories-calib.tok512.u16"

enum { NS = 4, T = 32 };

/* NS sequences of T+1 real tokens from the shared calibration file. */
static void read_tokens(int *tok) {
    FILE *f = fopen(shared_path(TOKENS), "rb");
    ck_assert_ptr_nonnull(f);
    uint16_t buf[NS * (T + 1)];
    ck_assert_int_eq(fread(buf, sizeof buf[0], NS * (T + 1), f), NS * (T + 1));
    fclose(f);
    for (int i = 0; i < NS * (T + 1); i++) tok[i] = buf[i];
}

static mpq_model *load(const char *rel, mpq_weights_dtype dt) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load_dtype(shared_path(rel), dt, &m, &err) == MPQ_OK, "%s", err.msg);
    return m;
}

/* Bits of two doubles equal (NaN == NaN when both are). */
static void ck_same(double a, double b, const char *what) {
    ck_assert_msg(memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)), "%s: %.17g != %.17g", what, a, b);
}

START_TEST(test_bf16_source_bitwise) {
    mpq_model *m32 = load(BF16_DIR, MPQ_WEIGHTS_F32), *m16 = load(BF16_DIR, MPQ_WEIGHTS_SOURCE);
    mpq_err err = {0};
    ck_assert_str_eq(mpq_model_get_config(m16)->source_dtype, "BF16");
    ck_assert_int_eq(mpq_model_weights_dtype(m16), MPQ_WEIGHTS_BF16);
    ck_assert_int_eq(mpq_model_weights_dtype(m32), MPQ_WEIGHTS_F32);
    ck_assert_int_eq(mpq_model_n_params(m16), mpq_model_n_params(m32));
    const mpq_weights *w32 = mpq_model_get_weights(m32), *w16 = mpq_model_get_weights(m16);
    /* every linear matrix is held only in 16 bits and widens to the float32 path's values */
    for (int i = 0; i < mpq_model_n_linear(m16); i++) {
        const mpq_layer_info *li = mpq_model_linear(m16, i);
        ck_assert_ptr_null(mpq_weights_linear(w16, li));
        float *s = calloc((size_t)li->n_params, sizeof *s);
        const float *a = mpq_weights_linear_f32(w16, li, s);
        ck_assert_ptr_eq(a, s);
        ck_assert(memcmp(a, mpq_weights_linear(w32, li), (size_t)li->n_params * sizeof *a) == 0);
        free(s);
    }
    /* the widened clone is the float32 model, every parameter */
    mpq_weights *cl = NULL;
    ck_assert_msg(mpq_weights_clone(m16, &cl, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(cl->dtype, MPQ_WEIGHTS_F32);
    ck_assert(memcmp(cl->data, w32->data, w32->n_floats * sizeof(float)) == 0);
    mpq_weights_free(cl);

    int tok[NS * (T + 1)];
    read_tokens(tok);
    /* logits of a batch forward and of decode steps: identical bits */
    mpq_exec *e32 = NULL, *e16 = NULL;
    ck_assert(mpq_exec_create(m32, NS, T, &e32, &err) == MPQ_OK);
    ck_assert(mpq_exec_create(m16, NS, T, &e16, &err) == MPQ_OK);
    ck_assert_uint_eq(mpq_exec_weight_scratch_bytes(e32), 0);
    ck_assert_uint_gt(mpq_exec_weight_scratch_bytes(e16), 0);
    int in[NS * T];
    for (int b = 0; b < NS; b++) memcpy(in + b * T, tok + b * (T + 1), T * sizeof(int));
    ck_assert_msg(mpq_exec_forward(e32, w32, NULL, in, NS, T, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_exec_forward(e16, w16, NULL, in, NS, T, &err) == MPQ_OK, "%s", err.msg);
    const size_t nl = (size_t)NS * T * (size_t)mpq_model_get_config(m16)->vocab_size;
    ck_assert(memcmp(mpq_exec_logits(e32), mpq_exec_logits(e16), nl * sizeof(float)) == 0);
    for (int t = 0; t < 8; t++) {
        const float *l32 = NULL, *l16 = NULL;
        ck_assert(mpq_exec_decode_step(e32, w32, NULL, tok[t], &l32, &err) == MPQ_OK);
        ck_assert(mpq_exec_decode_step(e16, w16, NULL, tok[t], &l16, &err) == MPQ_OK);
        ck_assert(memcmp(l32, l16, (size_t)mpq_model_get_config(m16)->vocab_size * sizeof(float)) == 0);
    }
    mpq_exec_free(e32);
    mpq_exec_free(e16);

    /* calibration: layer sensitivity and weight error (with X^T X) of every layer, identical */
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = 2;
    mpq_calib *c32 = NULL, *c16 = NULL;
    ck_assert_msg(mpq_calib_create(m32, tok, NS, T, &o, &c32, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_calib_create(m16, tok, NS, T, &o, &c16, &err) == MPQ_OK, "%s", err.msg);
    mpq_candidate cand;
    ck_assert(mpq_candidate_parse("int4g32", &cand, &err) == MPQ_OK);
    for (int i = 0; i < mpq_model_n_linear(m16); i++) {
        mpq_calib_result r32, r16;
        mpq_calib_weight_stats s32, s16;
        ck_assert_msg(mpq_calib_layer(c32, i, &cand, &r32, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_msg(mpq_calib_layer(c16, i, &cand, &r16, &err) == MPQ_OK, "%s", err.msg);
        ck_same(r32.kl, r16.kl, "kl");
        ck_same(r32.dloss, r16.dloss, "dloss");
        ck_same(r32.top1, r16.top1, "top1");
        ck_assert_msg(mpq_calib_weight_error(c32, i, &cand, &s32, &err) == MPQ_OK, "%s", err.msg);
        ck_assert_msg(mpq_calib_weight_error(c16, i, &cand, &s16, &err) == MPQ_OK, "%s", err.msg);
        ck_same(s32.sse, s16.sse, "sse");
        ck_same(s32.act_err, s16.act_err, "act_err");
        ck_same(s32.act_rel, s16.act_rel, "act_rel");
        ck_assert(isfinite(s16.act_err)); /* X^T X was collected: the comparison means something */
    }
    /* act_err read from the packed X^T X = trace(E S E^T) with the full symmetric S rebuilt by
     * mpq_xtx_index and summed by plain loops (another order of the same double sums: equal
     * to 1e-10 relative, far above double rounding over <= 172 x 172 terms ~ 1e-13) */
    for (int i = 0; i < mpq_model_n_linear(m16); i += 3) {
        const mpq_layer_info *li = mpq_model_linear(m16, i);
        int64_t c = 0;
        const double *P = mpq_calib_xtx_packed(c16, i, &c);
        ck_assert_ptr_nonnull(P);
        ck_assert_int_eq(c, li->cols);
        float *q = malloc((size_t)li->n_params * sizeof *q);
        memcpy(q, mpq_weights_linear(w32, li), (size_t)li->n_params * sizeof *q);
        mpq_quantize_matrix(&cand, q, li->rows, li->cols);
        double want = 0;
        for (int64_t r = 0; r < li->rows; r++) {
            const float *wr = mpq_weights_linear(w32, li) + r * c, *qr = q + r * c;
            for (int64_t a = 0; a < c; a++)
                for (int64_t b = 0; b < c; b++)
                    want += ((double)qr[a] - wr[a]) * P[mpq_xtx_index(c, a, b)] * ((double)qr[b] - wr[b]);
        }
        mpq_calib_weight_stats s16;
        ck_assert(mpq_calib_weight_error(c16, i, &cand, &s16, &err) == MPQ_OK);
        ck_assert_double_eq_tol(s16.act_err, want, 1e-10 * want);
        free(q);
    }
    mpq_calib_free(c32);
    mpq_calib_free(c16);
    mpq_model_free(m32);
    mpq_model_free(m16);
}
END_TEST

/* An F32 file rounded to 16 bits: each weight moves by at most half a unit in the last place
 * of the 16-bit format (BF16: 8 significant bits, |dw| <= 2^-8 |w|; F16: 11 bits, 2^-11 |w|,
 * or 2^-25 absolute below F16's normal range 2^-14), and BF16 values have zero low halves. */
static void check_rounded(mpq_weights_dtype dt) {
    mpq_model *m32 = load(STORIES, MPQ_WEIGHTS_F32), *m16 = load(STORIES, dt);
    ck_assert_int_eq(mpq_model_weights_dtype(m16), dt);
    /* an F32 file: SOURCE keeps float32 */
    mpq_model *ms = load(STORIES, MPQ_WEIGHTS_SOURCE);
    ck_assert_int_eq(mpq_model_weights_dtype(ms), MPQ_WEIGHTS_F32);
    mpq_model_free(ms);
    const mpq_weights *w32 = mpq_model_get_weights(m32), *w16 = mpq_model_get_weights(m16);
    int64_t changed = 0, n = 0;
    for (int i = 0; i < mpq_model_n_linear(m16); i++) {
        const mpq_layer_info *li = mpq_model_linear(m16, i);
        float *s = calloc((size_t)li->n_params, sizeof *s);
        const float *a = mpq_weights_linear_f32(w16, li, s), *b = mpq_weights_linear(w32, li);
        for (int64_t k = 0; k < li->n_params; k++, n++) {
            double d = fabs((double)a[k] - (double)b[k]), x = fabs((double)b[k]);
            double bound = dt == MPQ_WEIGHTS_BF16 ? ldexp(x, -8) : (x < ldexp(1, -14) ? ldexp(1, -25) : ldexp(x, -11));
            ck_assert_msg(d <= bound, "%s[%lld]: %.9g -> %.9g", li->name, (long long)k, b[k], a[k]);
            if (dt == MPQ_WEIGHTS_BF16) {
                uint32_t u;
                memcpy(&u, &a[k], sizeof u);
                ck_assert_uint_eq(u & 0xffffu, 0);
            }
            changed += d > 0;
        }
        free(s);
    }
    ck_assert_int_gt(changed, n / 2); /* rounding really happened */
    /* the tied embedding / classifier stays float32: its rows are the file's */
    const int dim = mpq_model_get_config(m16)->dim;
    float row[64];
    ck_assert_int_le(dim, 64);
    const float *r = mpq_weights_rows_f32(w16, true, dim, 7, 1, row);
    ck_assert(memcmp(r, w32->tok_emb + 7 * dim, (size_t)dim * sizeof *r) == 0);
    mpq_model_free(m32);
    mpq_model_free(m16);
}

START_TEST(test_f32_rounded_bf16) { check_rounded(MPQ_WEIGHTS_BF16); }
END_TEST

START_TEST(test_f32_rounded_f16) { check_rounded(MPQ_WEIGHTS_F16); }
END_TEST

/* sotu-2.7M rounded to BF16: the executor's forward on the 16-bit weights (linear layers
 * widened at use into the executor's scratch) equals, bit for bit, its forward on the widened
 * clone (every matrix read in place as float32). */
START_TEST(test_sotu_bf16_blocks) {
    mpq_model *m = load("models/sotu-2.7M/sotu-2.7M.bin", MPQ_WEIGHTS_BF16);
    mpq_err err = {0};
    ck_assert_ptr_nonnull(mpq_model_get_weights(m)->classifier); /* the classifier stays float32 */
    mpq_weights *wide = NULL;
    ck_assert(mpq_weights_clone(m, &wide, &err) == MPQ_OK);
    mpq_exec *ex = NULL;
    ck_assert(mpq_exec_create_forward(m, 2, T, &ex, &err) == MPQ_OK);
    int tok[2 * T];
    FILE *f = fopen(shared_path("data/sotu-calib.tok2048.u16"), "rb");
    ck_assert_ptr_nonnull(f);
    uint16_t buf[2 * T];
    ck_assert_int_eq(fread(buf, sizeof buf[0], 2 * T, f), 2 * T);
    fclose(f);
    for (int i = 0; i < 2 * T; i++) tok[i] = buf[i];
    const size_t nl = (size_t)2 * T * (size_t)mpq_model_get_config(m)->vocab_size;
    float *l16 = malloc(nl * sizeof *l16);
    ck_assert_msg(mpq_exec_forward(ex, mpq_model_get_weights(m), NULL, tok, 2, T, &err) == MPQ_OK, "%s", err.msg);
    memcpy(l16, mpq_exec_logits(ex), nl * sizeof *l16);
    ck_assert_msg(mpq_exec_forward(ex, wide, NULL, tok, 2, T, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(memcmp(l16, mpq_exec_logits(ex), nl * sizeof *l16) == 0);
    free(l16);
    mpq_exec_free(ex);
    mpq_weights_free(wide);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_forward_only_exec) {
    mpq_model *m = load(STORIES, MPQ_WEIGHTS_F32);
    const mpq_weights *w = mpq_model_get_weights(m);
    mpq_err err = {0};
    int tok[NS * (T + 1)];
    read_tokens(tok);
    mpq_exec *full = NULL, *fwd = NULL;
    ck_assert(mpq_exec_create(m, 2, T, &full, &err) == MPQ_OK);
    ck_assert(mpq_exec_create_forward(m, 2, T, &fwd, &err) == MPQ_OK);
    ck_assert_uint_lt(mpq_exec_activation_bytes(fwd), mpq_exec_activation_bytes(full));
    mpq_exec_ref *rf = NULL, *rw = NULL;
    ck_assert(mpq_exec_ref_build(full, w, NULL, tok, NS, T, true, &rf, &err) == MPQ_OK);
    ck_assert(mpq_exec_ref_build(fwd, w, NULL, tok, NS, T, true, &rw, &err) == MPQ_OK);
    const mpq_eval_stats *a = mpq_exec_ref_stats(rf), *b = mpq_exec_ref_stats(rw);
    ck_same(a->nll_sum, b->nll_sum, "nll");
    ck_assert(memcmp(mpq_exec_ref_logprobs(rf), mpq_exec_ref_logprobs(rw),
                     (size_t)NS * T * (size_t)mpq_model_get_config(m)->vocab_size * sizeof(float)) == 0);
    for (int l = 0; l < mpq_model_get_config(m)->n_layers; l++)
        ck_assert(memcmp(mpq_exec_ref_attn_out(rf, l), mpq_exec_ref_attn_out(rw, l),
                         (size_t)NS * T * (size_t)mpq_model_get_config(m)->dim * sizeof(float)) == 0);
    /* prefix-reuse evaluation from block 3 of each reference */
    mpq_eval_stats sf = {0}, sw = {0};
    ck_assert(mpq_exec_eval_ref(full, w, NULL, rf, 3, &sf, &err) == MPQ_OK);
    ck_assert(mpq_exec_eval_ref(fwd, w, NULL, rw, 3, &sw, &err) == MPQ_OK);
    ck_same(sf.kl_sum, sw.kl_sum, "kl");
    ck_same(sf.nll_sum, sw.nll_sum, "nll");
    /* no backward on a forward-only executor */
    mpq_grad *g = NULL;
    ck_assert_int_eq(mpq_grad_create(fwd, &g, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(g);
    mpq_exec_ref_free(rf);
    mpq_exec_ref_free(rw);
    mpq_exec_free(full);
    mpq_exec_free(fwd);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_dtype_names_hostile) {
    mpq_weights_dtype d = MPQ_WEIGHTS_F32;
    const char *names[] = {"f32", "bf16", "f16", "source"};
    for (int i = 0; i < 4; i++) {
        ck_assert(mpq_weights_dtype_parse(names[i], &d));
        ck_assert_int_eq(d, i);
        ck_assert_str_eq(mpq_weights_dtype_name(d), names[i]);
    }
    const char *bad[] = {"", "BF16", "fp16", "bf16 ", "f8", "float32", "q8_0"};
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) ck_assert(!mpq_weights_dtype_parse(bad[i], &d));
    ck_assert(!mpq_weights_dtype_parse(NULL, &d));
    ck_assert_str_eq(mpq_weights_dtype_name((mpq_weights_dtype)9), "?");
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_model_load_dtype(shared_path(STORIES), (mpq_weights_dtype)9, &m, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(err.msg, "dtype"));
}
END_TEST

static Suite *weights16_suite(void) {
    Suite *s = suite_create("weights16");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bf16_source_bitwise);
    tcase_add_test(tc, test_f32_rounded_bf16);
    tcase_add_test(tc, test_f32_rounded_f16);
    tcase_add_test(tc, test_sotu_bf16_blocks);
    tcase_add_test(tc, test_forward_only_exec);
    tcase_add_test(tc, test_dtype_names_hostile);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(weights16_suite)
