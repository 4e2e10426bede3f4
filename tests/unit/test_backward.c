/* test_backward.c - unit tests of the backward pass (src/exec/backward.c, mpq_grad.h):
 * every backward kernel against central finite differences of an independent double-precision
 * reference of its forward (tests/unit/ref_llama.h), the whole-model gradient against central
 * differences of the double reference loss on a tiny GQA model with q/k/v biases (every
 * parameter) and on the real stories260K (a sample of weights in every tensor), accumulation /
 * scaling, loss agreement with mpq_exec_eval, and argument checks.
 *
 * Tolerance derivation (used throughout): the finite differences are taken in double on the
 * double reference with step h; their error is h^2 |f'''| / 6 + eps64 |f| / h. With h = 1e-5
 * and O(1) inputs and |f| <= 100 this is <= 1e-10 + 1e-9, negligible. The analytic gradient is
 * computed in float32: each entry is a sum of at most K products, so its rounding error is
 * bounded by about K * eps32 * sum|terms| (gamma_K), typically sqrt(K) * eps32. For the kernel
 * tests K <= 64, so K * eps32 = 64 * 6e-8 = 4e-6 relative to the gradient scale; we allow 1e-4 of
 * the largest |gradient| (25x margin). */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec_internal.h"
#include "exec/exec_kernels.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_grad.h"
#include "mpq/mpq_model.h"
#include "ref_llama.h"
#include "test_util.h"
#include "test_main.h"

#define M260 "models/stories260K/stories260K.bin"
#define CALIB_TOK "data/tinystories-calib.tok512.u16"

static const double KTOL = 1e-4; /* kernel tests: relative to max |gradient| (see header) */
static const double FD_H = 1e-5;

/* ---- helpers ---- */

static void fill(uint64_t *s, float *f, double *d, size_t n, double a) {
    for (size_t i = 0; i < n; i++) {
        f[i] = (float)rd_unif(s, a);
        if (d) d[i] = f[i];
    }
}

typedef double (*objective)(void *ctx);

/* Central differences of obj with respect to each x[i] (double), compared with g[i] (float).
 * Returns max |g - fd| / max(max |fd|, 1e-3) and prints it. */
static double fd_check(const char *name, objective obj, void *ctx, double *x, const float *g, size_t n) {
    double maxerr = 0.0, maxg = 0.0;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + FD_H;
        double fp = obj(ctx);
        x[i] = x0 - FD_H;
        double fm = obj(ctx);
        x[i] = x0;
        double fd = (fp - fm) / (2 * FD_H);
        double e = fabs(fd - (double)g[i]);
        if (e > maxerr) maxerr = e;
        if (fabs(fd) > maxg) maxg = fabs(fd);
    }
    double rel = maxerr / (maxg > 1e-3 ? maxg : 1e-3);
    printf("backward %-22s n=%4zu  max|g|=%.3e  max err=%.3e  rel=%.3e\n", name, n, maxg, maxerr, rel);
    return rel;
}

static double dotd(const double *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- kernels ---- */

enum { KN = 6, KC = 8, KOC = 5 };

struct mm_ctx {
    double x[KN * KC], w[KOC * KC], b[KOC], y[KN * KOC];
    float dout[KN * KOC];
};
static double mm_obj(void *p) {
    struct mm_ctx *c = p;
    rd_matmul(c->y, c->x, c->w, c->b, KN, KC, KOC);
    return dotd(c->y, c->dout, KN * KOC);
}

START_TEST(test_matmul_backward) {
    uint64_t s = 1;
    struct mm_ctx c;
    float x[KN * KC], w[KOC * KC], b[KOC], dx[KN * KC] = {0}, dw[KOC * KC] = {0}, db[KOC] = {0};
    fill(&s, x, c.x, KN * KC, 1.0);
    fill(&s, w, c.w, KOC * KC, 1.0);
    fill(&s, b, c.b, KOC, 1.0);
    fill(&s, c.dout, NULL, KN * KOC, 1.0);
    matmul_backward(dx, dw, db, c.dout, x, w, KN, KC, KOC);
    ck_assert_double_le(fd_check("matmul dinp", mm_obj, &c, c.x, dx, KN * KC), KTOL);
    ck_assert_double_le(fd_check("matmul dw", mm_obj, &c, c.w, dw, KOC * KC), KTOL);
    ck_assert_double_le(fd_check("matmul dbias", mm_obj, &c, c.b, db, KOC), KTOL);
}
END_TEST

struct rms_ctx {
    double x[KN * KC], w[KC], y[KN * KC];
    float dout[KN * KC];
};
static double rms_obj(void *p) {
    struct rms_ctx *c = p;
    rd_rmsnorm(c->y, c->x, c->w, KN, KC, 1e-5);
    return dotd(c->y, c->dout, KN * KC);
}

START_TEST(test_rmsnorm_backward) {
    uint64_t s = 2;
    struct rms_ctx c;
    float x[KN * KC], w[KC], y[KN * KC], rstd[KN], dx[KN * KC] = {0}, dw[KC] = {0};
    fill(&s, x, c.x, KN * KC, 1.0);
    fill(&s, w, c.w, KC, 1.0);
    fill(&s, c.dout, NULL, KN * KC, 1.0);
    rmsnorm_forward(y, rstd, x, w, KN, KC, 1e-5f);
    rmsnorm_backward(dx, dw, c.dout, x, w, rstd, KN, KC);
    ck_assert_double_le(fd_check("rmsnorm dinp", rms_obj, &c, c.x, dx, KN * KC), KTOL);
    ck_assert_double_le(fd_check("rmsnorm dweight", rms_obj, &c, c.w, dw, KC), KTOL);
}
END_TEST

enum { AB = 2, AT = 5, ANH = 4, ANKV = 2, AHD = 4, AQD = ANH * AHD, AKVD = ANKV * AHD };

struct rope_ctx {
    double x[AB * AT * AQD];
    double y[AB * AT * AQD];
    float dout[AB * AT * AQD];
};
static double rope_obj(void *p) {
    struct rope_ctx *c = p;
    memcpy(c->y, c->x, sizeof c->y);
    rd_rope(c->y, AB, AT, ANH, AHD, 10000.0);
    return dotd(c->y, c->dout, AB * AT * AQD);
}

/* RoPE tables as the executor builds them (float angle). */
static void rope_tables(float *cs, float *sn, int T, int hd) {
    for (int p = 0; p < T; p++)
        for (int i = 0; i < hd / 2; i++) {
            float f = (float)(1.0 / pow(10000.0, (double)(2 * i) / hd)), a = (float)p * f;
            cs[p * (hd / 2) + i] = (float)cos(a);
            sn[p * (hd / 2) + i] = (float)sin(a);
        }
}

START_TEST(test_rope_backward) {
    uint64_t s = 3;
    struct rope_ctx c;
    float x[AB * AT * AQD], cs[AT * AHD / 2], sn[AT * AHD / 2];
    fill(&s, x, c.x, AB * AT * AQD, 1.0);
    fill(&s, c.dout, NULL, AB * AT * AQD, 1.0);
    rope_tables(cs, sn, AT, AHD);
    float dx[AB * AT * AQD];
    memcpy(dx, c.dout, sizeof dx);
    rope_backward(dx, cs, sn, AB, AT, ANH, AHD);
    /* the float tables round the angle: error ~ eps32 * t * freq, below 1e-6 */
    ck_assert_double_le(fd_check("rope", rope_obj, &c, c.x, dx, AB * AT * AQD), KTOL);
}
END_TEST

struct att_ctx {
    double q[AB * AT * AQD], k[AB * AT * AKVD], v[AB * AT * AKVD], y[AB * AT * AQD];
    float dout[AB * AT * AQD];
};
static double att_obj(void *p) {
    struct att_ctx *c = p;
    rd_attention(c->y, c->q, c->k, c->v, AB, AT, ANH, ANKV, AHD);
    return dotd(c->y, c->dout, AB * AT * AQD);
}

START_TEST(test_attention_backward) {
    uint64_t s = 4;
    static struct att_ctx c;
    float q[AB * AT * AQD], k[AB * AT * AKVD], v[AB * AT * AKVD], out[AB * AT * AQD];
    float att[AB * ANH * AT * AT], scratch[2 * AT * AT];
    float dq[AB * AT * AQD] = {0}, dk[AB * AT * AKVD] = {0}, dv[AB * AT * AKVD] = {0};
    fill(&s, q, c.q, AB * AT * AQD, 1.5);
    fill(&s, k, c.k, AB * AT * AKVD, 1.5);
    fill(&s, v, c.v, AB * AT * AKVD, 1.0);
    fill(&s, c.dout, NULL, AB * AT * AQD, 1.0);
    mpq_kv_scheme ks = mpq_kv_scheme_default();
    attention_forward(out, att, scratch, q, k, v, NULL, NULL, &ks, AB, AT, ANH, ANKV, AHD);
    attention_backward(dq, dk, dv, scratch, c.dout, q, k, v, att, AB, AT, ANH, ANKV, AHD);
    ck_assert_double_le(fd_check("attention dq", att_obj, &c, c.q, dq, AB * AT * AQD), KTOL);
    ck_assert_double_le(fd_check("attention dk (GQA)", att_obj, &c, c.k, dk, AB * AT * AKVD), KTOL);
    ck_assert_double_le(fd_check("attention dv (GQA)", att_obj, &c, c.v, dv, AB * AT * AKVD), KTOL);
}
END_TEST

enum { SN = 40 };
struct sw_ctx {
    double g[SN], u[SN], y[SN];
    float dout[SN];
};
static double sw_obj(void *p) {
    struct sw_ctx *c = p;
    rd_swiglu(c->y, c->g, c->u, SN);
    return dotd(c->y, c->dout, SN);
}

START_TEST(test_swiglu_backward) {
    uint64_t s = 5;
    struct sw_ctx c;
    float g[SN], u[SN], dg[SN] = {0}, du[SN] = {0};
    fill(&s, g, c.g, SN, 4.0);
    fill(&s, u, c.u, SN, 2.0);
    fill(&s, c.dout, NULL, SN, 1.0);
    swiglu_backward(dg, du, c.dout, g, u, SN);
    ck_assert_double_le(fd_check("swiglu dgate", sw_obj, &c, c.g, dg, SN), KTOL);
    ck_assert_double_le(fd_check("swiglu dup", sw_obj, &c, c.u, du, SN), KTOL);
}
END_TEST

enum { XN = 4, XV = 11 };
struct xe_ctx {
    double l[XN * XV];
    int tgt[XN];
};
static double xe_obj(void *p) {
    struct xe_ctx *c = p;
    return rd_xent(c->l, c->tgt, XN, XV);
}

START_TEST(test_crossentropy_backward) {
    uint64_t s = 6;
    struct xe_ctx c;
    float l[XN * XV], dl[XN * XV];
    fill(&s, l, c.l, XN * XV, 3.0);
    for (int n = 0; n < XN; n++) c.tgt[n] = (int)(rd_rng(&s) % XV);
    double nll = crossentropy_softmax_backward(dl, l, c.tgt, XN, XV, 1.0f / XN);
    /* the loss itself: double accumulation of float logits, error ~ eps64 * V */
    ck_assert_double_eq_tol(nll / XN, xe_obj(&c), 1e-12);
    ck_assert_double_le(fd_check("crossentropy dlogits", xe_obj, &c, c.l, dl, XN * XV), KTOL);
}
END_TEST

START_TEST(test_encoder_backward) {
    /* embedding gather: demb[tok] += dout, repeated tokens add (exact in float) */
    int tok[5] = {3, 1, 3, 0, 3};
    float dout[5 * 2], demb[4 * 2] = {0};
    for (int i = 0; i < 10; i++) dout[i] = (float)(i + 1);
    encoder_backward(demb, dout, tok, 5, 2);
    ck_assert_float_eq(demb[3 * 2 + 0], 1 + 5 + 9);
    ck_assert_float_eq(demb[3 * 2 + 1], 2 + 6 + 10);
    ck_assert_float_eq(demb[1 * 2 + 0], 3);
    ck_assert_float_eq(demb[0 * 2 + 1], 8);
    ck_assert_float_eq(demb[2 * 2 + 0], 0);
}
END_TEST

/* ---- whole model ---- */

struct model_ctx {
    const mpq_model_config *cfg;
    const mpq_weights *layout;
    double *wd;
    const int *tok;
    int B, T;
};
static double model_obj(void *p) {
    struct model_ctx *c = p;
    return rd_model_loss(c->cfg, c->layout, c->wd, c->tok, c->B, c->T);
}

static mpq_weights *grad_of(const mpq_model *m, const mpq_weights *w, const int *tok, int B, int T, double *loss) {
    mpq_exec *ex = NULL;
    mpq_grad *gr = NULL;
    mpq_weights *g = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_exec_create(m, B, T, &ex, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_grad_create(ex, &gr, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_grad_weights_zeros(m, &g, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_grad_compute(gr, w, tok, B, T, 1.0f, g, loss, &err) == MPQ_OK, "%s", err.msg);
    mpq_grad_free(gr);
    mpq_exec_free(ex);
    return g;
}

START_TEST(test_tiny_model_all_params) {
    /* Tiny GQA model with q/k/v biases and a shared classifier: every parameter checked.
     * K here is at most B*T*max(dim, hidden, vocab) = 16*16 = 256 terms per entry and the chain
     * has ~10 stages: 10 * 256 * eps32 = 1.5e-4 worst case; we allow 1e-3 of max|g| and measure. */
    mpq_model *m = rd_tiny_model(true, 11);
    ck_assert_ptr_nonnull(m);
    const mpq_weights *w = mpq_model_get_weights(m);
    int tok[2 * 9];
    uint64_t s = 12;
    for (int i = 0; i < 18; i++) tok[i] = (int)(rd_rng(&s) % 16);
    double loss = 0;
    mpq_weights *g = grad_of(m, w, tok, 2, 8, &loss);
    struct model_ctx c = {mpq_model_get_config(m), w, rd_weights_to_double(w), tok, 2, 8};
    ck_assert_double_eq_tol(loss, model_obj(&c), 1e-5); /* float forward vs double: ~1e-6 */
    double rel = fd_check("tiny model (all)", model_obj, &c, c.wd, g->data, w->n_floats);
    ck_assert_double_le(rel, 1e-3);
    /* the shared classifier's gradient went into the embedding: some rows of tokens never used
     * as inputs still have a nonzero gradient through the classifier */
    free(c.wd);
    mpq_weights_free(g);
    mpq_model_free(m);
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

START_TEST(test_stories260k_sampled) {
    /* Real model: B=2 sequences x T=16 of TinyStories calibration text. In every tensor, the
     * entry with the largest |g| and one random entry are checked against central differences
     * (h = 1e-4 on the double reference: truncation h^2|f'''|/6 ~ 1e-9, rounding 1e-16*2/1e-4).
     * Float gradient error: sums of up to K = B*T*vocab = 16384 terms over ~30 stages; the
     * typical error sqrt(K) * eps32 * stages ~ 2e-4 of the tensor's gradient scale; we allow
     * 2e-3 * max|g| of that tensor + 1e-2 * |fd|. */
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(M260), &m, &err) == MPQ_OK, "%s", err.msg);
    const mpq_model_config *cfg = mpq_model_get_config(m);
    const mpq_weights *w = mpq_model_get_weights(m);
    size_t ntok = 0;
    int *all = read_tokens(CALIB_TOK, &ntok);
    const int B = 2, T = 16;
    int tok[2 * 17];
    memcpy(tok, all + 100, sizeof tok);
    double loss = 0;
    mpq_weights *g = grad_of(m, w, tok, B, T, &loss);
    struct model_ctx c = {cfg, w, rd_weights_to_double(w), tok, B, T};
    ck_assert_double_eq_tol(loss, model_obj(&c), 1e-4);
    /* tensor list */
    const float *tp[64];
    size_t tn[64];
    const char *tname[64];
    int nt = 0;
    size_t D = (size_t)cfg->dim, H = (size_t)cfg->hidden_dim, qd = (size_t)cfg->n_heads * cfg->head_dim,
           kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    tp[nt] = w->tok_emb; tn[nt] = (size_t)cfg->vocab_size * D; tname[nt++] = "tok_emb";
    for (int l = 0; l < cfg->n_layers; l++) {
        const mpq_block_weights *b = &w->blocks[l];
        const float *p[9] = {b->attn_norm, b->wq, b->wk, b->wv, b->wo, b->ffn_norm, b->w_gate, b->w_up, b->w_down};
        size_t n[9] = {D, qd * D, kvd * D, kvd * D, D * qd, D, H * D, H * D, D * H};
        static const char *nm[9] = {"attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down"};
        for (int i = 0; i < 9; i++) {
            tp[nt] = p[i]; tn[nt] = n[i]; tname[nt++] = nm[i];
        }
    }
    tp[nt] = w->final_norm; tn[nt] = D; tname[nt++] = "final_norm";
    uint64_t s = 99;
    double worst = 0;
    const double h = 1e-4;
    for (int t = 0; t < nt; t++) {
        size_t off = (size_t)(tp[t] - w->data);
        size_t imax = 0;
        double gmax = 0;
        for (size_t i = 0; i < tn[t]; i++)
            if (fabs(g->data[off + i]) > gmax) gmax = fabs(g->data[off + (imax = i)]);
        size_t idx[2] = {imax, (size_t)(rd_rng(&s) % tn[t])};
        for (int j = 0; j < 2; j++) {
            size_t k = off + idx[j];
            double x0 = c.wd[k];
            c.wd[k] = x0 + h;
            double fp = model_obj(&c);
            c.wd[k] = x0 - h;
            double fm = model_obj(&c);
            c.wd[k] = x0;
            double fd = (fp - fm) / (2 * h), e = fabs(fd - g->data[k]);
            double tol = 2e-3 * gmax + 1e-2 * fabs(fd);
            if (gmax > 0 && e / gmax > worst) worst = e / gmax;
            ck_assert_msg(e <= tol, "stories260K %s (tensor %d) [%zu]: grad %.6e fd %.6e err %.3e > %.3e", tname[t],
                          t, idx[j], g->data[k], fd, e, tol);
        }
    }
    printf("backward stories260K: %d tensors x 2 entries, max err / max|g| of tensor = %.3e\n", nt, worst);
    free(c.wd);
    free(all);
    mpq_weights_free(g);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_accumulate_and_eval_loss) {
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path(M260), &m, &err) == MPQ_OK, "%s", err.msg);
    size_t ntok = 0;
    int *all = read_tokens(CALIB_TOK, &ntok);
    const int B = 3, T = 32;
    mpq_exec *ex = NULL;
    mpq_grad *gr = NULL;
    mpq_weights *g1 = NULL, *g2 = NULL;
    ck_assert(mpq_exec_create(m, B, T, &ex, &err) == MPQ_OK);
    ck_assert(mpq_grad_create(ex, &gr, &err) == MPQ_OK);
    ck_assert(mpq_grad_weights_zeros(m, &g1, &err) == MPQ_OK);
    ck_assert(mpq_grad_weights_zeros(m, &g2, &err) == MPQ_OK);
    const mpq_weights *w = mpq_model_get_weights(m);
    double l1 = 0, l2 = 0;
    ck_assert(mpq_grad_compute(gr, w, all, B, T, 1.0f, g1, &l1, &err) == MPQ_OK);
    ck_assert(mpq_grad_compute(gr, w, all, B, T, 0.5f, g2, &l2, &err) == MPQ_OK);
    ck_assert(mpq_grad_compute(gr, w, all, B, T, 0.5f, g2, NULL, &err) == MPQ_OK);
    /* same batch twice at scale 1/2 equals once at scale 1: scaling by 0.5 is exact, but sgemm
     * with beta = 1 adds its products onto the existing values in another order, so the two
     * differ by rounding only: |diff| <= K * eps32 * max|g| with K = B*T = 96 terms, 6e-6;
     * allow 1e-5 * max|g|. */
    double gmax = 0, dmax = 0;
    for (size_t i = 0; i < g1->n_floats; i++) {
        if (fabs(g1->data[i]) > gmax) gmax = fabs(g1->data[i]);
        if (fabs(g1->data[i] - g2->data[i]) > dmax) dmax = fabs(g1->data[i] - g2->data[i]);
    }
    ck_assert_double_gt(gmax, 0.0);
    ck_assert_double_le(dmax, 1e-5 * gmax);
    ck_assert_double_eq(l1, l2);
    /* loss equals mpq_exec_eval's cross-entropy: same float logits, double sums in both */
    mpq_eval_stats st = {0};
    ck_assert(mpq_exec_eval(ex, w, NULL, all, B, T, NULL, &st, &err) == MPQ_OK);
    ck_assert_double_eq_tol(l1, st.ce, 1e-6);
    /* hostile arguments */
    int bad[3 * 33];
    memcpy(bad, all, sizeof bad);
    bad[40] = 512;
    ck_assert_int_eq(mpq_grad_compute(gr, w, bad, B, T, 1.0f, g1, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "sequence 1 position 7"));
    ck_assert_int_eq(mpq_grad_compute(gr, w, all, B + 1, T, 1.0f, g1, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_grad_compute(gr, w, all, B, 0, 1.0f, g1, NULL, &err), MPQ_ERR_INVALID);
    mpq_model *tiny = rd_tiny_model(false, 1);
    mpq_weights *gt = NULL;
    ck_assert(mpq_grad_weights_zeros(tiny, &gt, &err) == MPQ_OK);
    ck_assert_int_eq(mpq_grad_compute(gr, w, all, B, T, 1.0f, gt, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_grad_compute(NULL, w, all, B, T, 1.0f, g1, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_grad_create(NULL, NULL, &err), MPQ_ERR_INVALID);
    mpq_weights_free(gt);
    mpq_model_free(tiny);
    mpq_weights_free(g1);
    mpq_weights_free(g2);
    mpq_grad_free(gr);
    mpq_exec_free(ex);
    free(all);
    mpq_model_free(m);
}
END_TEST

static Suite *backward_suite(void) {
    Suite *s = suite_create("backward");
    TCase *k = tcase_create("kernels");
    tcase_add_test(k, test_matmul_backward);
    tcase_add_test(k, test_rmsnorm_backward);
    tcase_add_test(k, test_rope_backward);
    tcase_add_test(k, test_attention_backward);
    tcase_add_test(k, test_swiglu_backward);
    tcase_add_test(k, test_crossentropy_backward);
    tcase_add_test(k, test_encoder_backward);
    suite_add_tcase(s, k);
    TCase *mdl = tcase_create("model");
    tcase_set_timeout(mdl, 300);
    tcase_add_test(mdl, test_tiny_model_all_params);
    tcase_add_test(mdl, test_stories260k_sampled);
    tcase_add_test(mdl, test_accumulate_and_eval_loss);
    suite_add_tcase(s, mdl);
    return s;
}

TEST_MAIN(backward_suite)
