/*
 * tcq.c - trellis-coded quantization: QTIP's bitshift trellis (L = 16 state bits, V = 2
 * weights per step, k = 3..10 new bits per step) with the hybrid codebook, tail-biting tiles
 * of 16x16 weights, and Q-Palette's "tcomb" quarter rates.
 *
 * References:
 * - Tseng, Sun, Hou, De Sa, "QTIP: Quantization with Trellises and Incoherence Processing",
 *   arXiv 2406.11235, section 3.1 (bitshift trellis: state s_i = the last L bits of the
 *   stream, s_{i+1} = ((s_i << k) | b) mod 2^L, decoded value = c(s_i)), section 3.2 (the
 *   "HYB" code: a hash of the state indexes a 2^t x 2 table trained by k-means on Gaussian
 *   pairs, one coordinate's sign taken from the hash) and Algorithm 4 (tail-biting: Viterbi on
 *   the sequence rotated by half, fix the L-k overlapping bits, re-run constrained).
 * - Lee, Song, "Q-Palette: Fractional-Bit Quantizers Toward Optimal Bit Allocation for
 *   Efficient LLM Deployment", arXiv 2509.20214: the TCQ palette (tcq-1.5 .. tcq-5 with
 *   bits-per-step k = 2*rate, tile 16x16, table bits 9 for k <= 8, 10 for k = 9, 11 for
 *   k = 10, scale_override 0.9) and tcomb (input columns split half/half between k and k+1).
 *
 * Conventions (docs-tcq.md is the full description):
 * - Tiles: the matrix is padded with zeros to multiples of 16 in both directions; tile (R, C)
 *   holds rows 16R..16R+15, columns 16C..16C+15; the tile's 256 weights are read row by row
 *   (position p = 16*r + c), and step i codes positions 2i and 2i+1. Padding positions are
 *   coded (they occupy trellis steps and bits) but carry no weight in the error.
 * - Rates: k_lo = floor(2*rate); at a quarter rate the last floor(n_tile_cols/2) tile
 *   columns use k_lo + 1, the others k_lo.
 * - Bitstream: tiles in row-major tile order (R outer, C inner), each tile 128*k bits = 16*k
 *   bytes; bits MSB first in each byte. A tile is a cyclic bit string c[0..N), N = 128 k:
 *   state s_i = c[(i k) mod N .. (i k + L - 1) mod N] read MSB first; the encoder writes
 *   c[i k .. i k + k) = s_i >> (L - k).
 * - Codebook: see mpq_tcq_lut_expand and mpq_tcq_lut_train.
 */
#include "quant/tcq.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/tcq_lut.h"
#include "util/vec_clones.h"

/* ---------------------------------------------------------------- rates and sizes */

bool mpq_tcq_rate_valid(double rate) {
    if (!(rate >= 1.5 && rate <= 5.0)) return false; /* also rejects NaN */
    double q = rate * 4.0;                            /* exact for quarter multiples */
    return q == floor(q);
}

bool mpq_tcq_rate_split(double rate, int64_t n_tile_cols, int *k_lo, int *k_hi, int64_t *n_hi) {
    if (!mpq_tcq_rate_valid(rate) || n_tile_cols < 0) return false;
    int q = (int)(rate * 4.0); /* 6..20 */
    *k_lo = q / 2;
    if (q % 2 == 0) {
        *k_hi = *k_lo;
        *n_hi = 0;
    } else {
        *k_hi = *k_lo + 1;
        *n_hi = n_tile_cols / 2;
    }
    return true;
}

int mpq_tcq_lut_bits(int k_max) {
    if (k_max < 1 || k_max > 10) return 0;
    return k_max <= 8 ? 9 : (k_max == 9 ? 10 : 11);
}

int64_t mpq_tcq_code_bits(int64_t rows, int64_t cols, double rate) {
    if (!mpq_tcq_rate_valid(rate) || rows < 0 || cols < 0) return -1;
    if (rows == 0 || cols == 0) return 0;
    if (rows > INT64_MAX - 15 || cols > INT64_MAX - 15) return -1;
    int64_t nr = (rows + 15) / 16, nc = (cols + 15) / 16;
    int k_lo, k_hi;
    int64_t n_hi;
    mpq_tcq_rate_split(rate, nc, &k_lo, &k_hi, &n_hi);
    /* bits per tile row = 128 * (k_lo*(nc-n_hi) + k_hi*n_hi) <= 128 * 11 * nc */
    if (nc > INT64_MAX / (128 * 11) / nr) return -1;
    int64_t per_row = 128 * ((int64_t)k_lo * (nc - n_hi) + (int64_t)k_hi * n_hi);
    return nr * per_row;
}

/* ---------------------------------------------------------------- codebook */

const float *mpq_tcq_lut_table(int t) {
    switch (t) {
    case 9: return MPQ_TCQ_LUT9;
    case 10: return MPQ_TCQ_LUT10;
    case 11: return MPQ_TCQ_LUT11;
    default: return NULL;
    }
}

void mpq_tcq_lut_expand(const float *tab, int t, float *x, float *y) {
    for (uint32_t s = 0; s < (1u << 16); s++) {
        uint32_t p = s * (s + 1u); /* < 2^32: no wrap for s < 2^16 */
        uint32_t i = (p >> (15 - t)) & ((1u << t) - 1u);
        float xv = tab[2 * i];
        x[s] = ((p >> 15) & 1u) ? -xv : xv;
        y[s] = tab[2 * i + 1];
    }
}

/* ---------------------------------------------------------------- Viterbi core */

struct mpq_tcq_work {
    int L, k_min, n_steps;
    float *cost_a;  /* 2^L costs of the last step */
    float *mm;      /* n_steps rows of 2^(L-k) prefix minima (row i is the base of step i) */
    float *xr, *wr; /* rotated sequence, 2*n_steps each */
    uint32_t *st;   /* n_steps states */
};

mpq_tcq_work *mpq_tcq_work_new(int L, int k_min, int n_steps) {
    if (L < 1 || L > 16 || k_min < 1 || k_min > L || n_steps < 1) return NULL;
    mpq_tcq_work *wk = calloc(1, sizeof *wk);
    if (!wk) return NULL;
    size_t ns = (size_t)1 << L;
    wk->L = L;
    wk->n_steps = n_steps;
    wk->cost_a = malloc(ns * sizeof(float));
    wk->k_min = k_min;
    wk->mm = malloc((size_t)n_steps * (ns >> k_min) * sizeof(float));
    wk->xr = malloc((size_t)n_steps * 2 * sizeof(float));
    wk->wr = malloc((size_t)n_steps * 2 * sizeof(float));
    wk->st = malloc((size_t)n_steps * sizeof(uint32_t));
    if (!wk->cost_a || !wk->mm || !wk->xr || !wk->wr || !wk->st) {
        mpq_tcq_work_free(wk);
        return NULL;
    }
    return wk;
}

void mpq_tcq_work_free(mpq_tcq_work *wk) {
    if (!wk) return;
    free(wk->cost_a);
    free(wk->mm);
    free(wk->xr);
    free(wk->wr);
    free(wk->st);
    free(wk);
}

/* The hot loop of a step, written over fixed chunks of CH lanes (no epilogue) so that gcc -O2
 * vectorises it; the scalar version computes the same values in the same order (the chunked
 * one is used when the run lengths are multiples of CH). On x86-64 with gcc the two folding
 * functions are also compiled for AVX2 and picked at load time (target_clones): the same
 * element-wise float operations (AVX2 does not bring fused multiply-add, and ISO C mode does
 * not contract), so the same bits, in about 0.6x the time. */ 
#define CH 8
#define HOT_CLONES MPQ_VEC_CLONES /* util/vec_clones.h */

/* base + w0 (x0 - lx)^2 + w1 (x1 - ly)^2: the cost of state (lx, ly) on the pair (x0, x1)
 * after the best cost `base` of reaching its prefix */
static inline float pair_err(float base, float x0, float x1, float w0, float w1, float lx,
                             float ly) {
    float dx = x0 - lx, dy = x1 - ly;
    return base + w0 * (dx * dx) + w1 * (dy * dy);
}

/* One trellis step without storing its 2^L costs: the cost of state s = u 2^k + b is
 * pair_err(mcur[u], ...) (mcur == NULL: base 0, the first step), and it is folded into the
 * next step's prefix minima mnext[s mod 2^(L-k)] = min over the top k bits of s, in increasing
 * s (strict <, so ties keep the smallest state; mnext must enter as +inf). The first step of a
 * constrained run passes only the allowed states through [s_lo, s_hi). */
HOT_CLONES
static void step_fold(const float *restrict mcur, float *restrict mnext, const float *restrict lx,
                      const float *restrict ly, int L, int k, size_t s_lo, size_t s_hi, float x0,
                      float x1, float w0, float w1) {
    const size_t nk = (size_t)1 << k, nm = (size_t)1 << (L - k);
    if (nk % CH == 0 && nm % CH == 0 && s_lo % nk == 0 && s_hi % nk == 0) {
        /* both weights 1 (no padding in the pair): w * d == d exactly, so the products by
         * the weights are left out, which gives the same floats faster */
        const bool unit = w0 == 1.0f && w1 == 1.0f;
        for (size_t u = s_lo / nk; u < s_hi / nk; u++) {
            const float base = mcur ? mcur[u] : 0.0f;
            for (size_t b0 = 0; b0 < nk; b0 += CH) {
                size_t s0 = u * nk + b0;
                float *restrict tg = mnext + (s0 & (nm - 1));
                const float *restrict px = lx + s0, *restrict py = ly + s0;
                if (unit) {
                    for (size_t b = 0; b < CH; b++) {
                        float dx = x0 - px[b], dy = x1 - py[b];
                        float c = base + dx * dx + dy * dy;
                        tg[b] = c < tg[b] ? c : tg[b];
                    }
                } else {
                    for (size_t b = 0; b < CH; b++) {
                        float c = pair_err(base, x0, x1, w0, w1, px[b], py[b]);
                        tg[b] = c < tg[b] ? c : tg[b];
                    }
                }
            }
        }
    } else {
        for (size_t s = s_lo; s < s_hi; s++) {
            float c = pair_err(mcur ? mcur[s >> k] : 0.0f, x0, x1, w0, w1, lx[s], ly[s]);
            size_t t = s & (nm - 1);
            mnext[t] = c < mnext[t] ? c : mnext[t];
        }
    }
}

/* step_fold for two independent sequences a and b on the same trellis, both with unit
 * weights and every state admitted (steps >= 1, chunked layout): each table entry is loaded
 * once for both, and each sequence gets exactly the floats step_fold would give it. */
HOT_CLONES
static void step_fold2(const float *restrict ma, const float *restrict mb, float *restrict na,
                       float *restrict nb, const float *restrict lx, const float *restrict ly,
                       int L, int k, float xa0, float xa1, float xb0, float xb1) {
    const size_t nk = (size_t)1 << k, nm = (size_t)1 << (L - k);
    for (size_t u = 0; u < nm; u++) {
        const float ba = ma[u], bb = mb[u];
        for (size_t b0 = 0; b0 < nk; b0 += CH) {
            size_t s0 = u * nk + b0;
            float *restrict ta = na + (s0 & (nm - 1)), *restrict tb = nb + (s0 & (nm - 1));
            const float *restrict px = lx + s0, *restrict py = ly + s0;
            for (size_t b = 0; b < CH; b++) {
                float dxa = xa0 - px[b], dya = xa1 - py[b];
                float dxb = xb0 - px[b], dyb = xb1 - py[b];
                float ca = ba + dxa * dxa + dya * dya, cb = bb + dxb * dxb + dyb * dyb;
                ta[b] = ca < ta[b] ? ca : ta[b];
                tb[b] = cb < tb[b] ? cb : tb[b];
            }
        }
    }
}

/* Cost of reaching state s at step i, recomputed bit for bit as the forward pass computed it:
 * step 0 from base 0 (infinite outside the allowed starts), step i >= 1 from the stored prefix
 * minimum mm[i*nm + (s >> k)]. */
static float cost_at(const mpq_tcq_trellis *tr, const mpq_tcq_work *wk, const float *xs,
                     const float *wt, int i, int32_t overlap, uint32_t s) {
    const int k = tr->k;
    const size_t nm = (size_t)1 << (tr->L - k);
    float base = 0.0f;
    if (i == 0) {
        if (overlap >= 0 && (s >> k) != (uint32_t)overlap) return INFINITY;
    } else {
        base = wk->mm[(size_t)i * nm + (s >> k)];
    }
    return pair_err(base, xs[2 * i], xs[2 * i + 1], wt[2 * i], wt[2 * i + 1], tr->x[s], tr->y[s]);
}

/* Forward step i (0 <= i < n-1) of one sequence: folds its costs into mm[i + 1]; step 0
 * admits every state or only those whose top L-k bits are the overlap. */
static void forward_step(const mpq_tcq_trellis *tr, mpq_tcq_work *wk, const float *xs,
                         const float *wt, int i, int32_t overlap) {
    const int L = tr->L, k = tr->k;
    const size_t ns = (size_t)1 << L, nk = (size_t)1 << k, nm = (size_t)1 << (L - k);
    size_t s_lo = 0, s_hi = ns;
    if (i == 0 && overlap >= 0) {
        s_lo = (size_t)overlap << k;
        s_hi = s_lo + nk;
    }
    float *mnext = wk->mm + (size_t)(i + 1) * nm;
    for (size_t u = 0; u < nm; u++) mnext[u] = INFINITY;
    step_fold(i ? wk->mm + (size_t)i * nm : NULL, mnext, tr->x, tr->y, L, k, s_lo, s_hi,
              xs[2 * i], xs[2 * i + 1], wt[2 * i], wt[2 * i + 1]);
}

/* The last step and the traceback of a sequence whose forward steps are done. */
static float viterbi_finish(const mpq_tcq_trellis *tr, mpq_tcq_work *wk, const float *xs,
                            const float *wt, int n_steps, int32_t overlap, uint32_t *states) {
    const int L = tr->L, k = tr->k;
    const size_t ns = (size_t)1 << L, nk = (size_t)1 << k, nm = (size_t)1 << (L - k);
    /* the last step's costs, kept */
    float *prev = wk->cost_a;
    {
        int i = n_steps - 1;
        for (size_t s = 0; s < ns; s++) prev[s] = cost_at(tr, wk, xs, wt, i, overlap, (uint32_t)s);
    }
    /* last state: any, or low L-k bits = overlap */
    size_t best = 0;
    float bc = INFINITY;
    if (overlap >= 0) {
        best = (size_t)overlap;
        bc = prev[best];
        for (size_t j = 1; j < nk; j++) {
            size_t s = j * nm + (size_t)overlap;
            if (prev[s] < bc) {
                bc = prev[s];
                best = s;
            }
        }
    } else {
        bc = prev[0];
        for (size_t s = 1; s < ns; s++)
            if (prev[s] < bc) {
                bc = prev[s];
                best = s;
            }
    }
    /* traceback: the predecessor of s_i is the first j (smallest state) minimising the cost
     * of j * 2^(L-k) + (s_i >> k) at step i-1, recomputed: the minimum step_fold kept */
    uint32_t s = (uint32_t)best;
    states[n_steps - 1] = s;
    for (int i = n_steps - 1; i > 0; i--) {
        uint32_t u = s >> k, bs = u;
        float bcost = cost_at(tr, wk, xs, wt, i - 1, overlap, u);
        for (uint32_t j = 1; j < nk; j++) {
            uint32_t c = (j << (L - k)) | u;
            float v = cost_at(tr, wk, xs, wt, i - 1, overlap, c);
            if (v < bcost) {
                bcost = v;
                bs = c;
            }
        }
        s = bs;
        states[i - 1] = s;
    }
    return bc;
}

float mpq_tcq_viterbi(const mpq_tcq_trellis *tr, mpq_tcq_work *wk, const float *xs,
                      const float *wt, int n_steps, int32_t overlap, uint32_t *states) {
    for (int i = 0; i + 1 < n_steps; i++) forward_step(tr, wk, xs, wt, i, overlap);
    return viterbi_finish(tr, wk, xs, wt, n_steps, overlap, states);
}

/* mpq_tcq_viterbi on two sequences a, b (workspaces wa, wb) at once: the steps where both have
 * unit weights go through step_fold2; the results are those of two separate calls. */
static void viterbi_pair(const mpq_tcq_trellis *tr, mpq_tcq_work *wa, mpq_tcq_work *wb,
                         const float *xa, const float *ta, const float *xb, const float *tb,
                         int n_steps, int32_t oa, int32_t ob, uint32_t *sa, uint32_t *sb,
                         float *ca, float *cb) {
    const int L = tr->L, k = tr->k;
    const size_t nk = (size_t)1 << k, nm = (size_t)1 << (L - k);
    const bool chunked = nk % CH == 0 && nm % CH == 0;
    for (int i = 0; i + 1 < n_steps; i++) {
        bool unit = ta[2 * i] == 1.0f && ta[2 * i + 1] == 1.0f && tb[2 * i] == 1.0f &&
                    tb[2 * i + 1] == 1.0f;
        if (i > 0 && chunked && unit) {
            float *na = wa->mm + (size_t)(i + 1) * nm, *nb = wb->mm + (size_t)(i + 1) * nm;
            for (size_t u = 0; u < nm; u++) na[u] = nb[u] = INFINITY;
            step_fold2(wa->mm + (size_t)i * nm, wb->mm + (size_t)i * nm, na, nb, tr->x, tr->y,
                       L, k, xa[2 * i], xa[2 * i + 1], xb[2 * i], xb[2 * i + 1]);
        } else {
            forward_step(tr, wa, xa, ta, i, oa);
            forward_step(tr, wb, xb, tb, i, ob);
        }
    }
    *ca = viterbi_finish(tr, wa, xa, ta, n_steps, oa, sa);
    *cb = viterbi_finish(tr, wb, xb, tb, n_steps, ob, sb);
}

/* the sequence rotated by h = n_steps/2 steps into wk->xr, wk->wr: rotated step j = original
 * step (j + h) mod n, so original step 0 is rotated step n - h */
static void rotate_half(mpq_tcq_work *wk, const float *xs, const float *wt, int n_steps) {
    int h = n_steps / 2;
    for (int j = 0; j < n_steps; j++) {
        int o = (j + h) % n_steps;
        wk->xr[2 * j] = xs[2 * o];
        wk->xr[2 * j + 1] = xs[2 * o + 1];
        wk->wr[2 * j] = wt[2 * o];
        wk->wr[2 * j + 1] = wt[2 * o + 1];
    }
}

void mpq_tcq_encode_tailbiting2(const mpq_tcq_trellis *tr, mpq_tcq_work *wa, mpq_tcq_work *wb,
                                const float *xa, const float *ta, const float *xb,
                                const float *tb, int n_steps, uint32_t *sa, uint32_t *sb,
                                float *ca, float *cb) {
    int h = n_steps / 2;
    float ra, rb;
    rotate_half(wa, xa, ta, n_steps);
    rotate_half(wb, xb, tb, n_steps);
    viterbi_pair(tr, wa, wb, wa->xr, wa->wr, wb->xr, wb->wr, n_steps, -1, -1, wa->st, wb->st,
                 &ra, &rb);
    int32_t oa = (int32_t)(wa->st[n_steps - h] >> tr->k);
    int32_t ob = (int32_t)(wb->st[n_steps - h] >> tr->k);
    viterbi_pair(tr, wa, wb, xa, ta, xb, tb, n_steps, oa, ob, sa, sb, ca, cb);
}

float mpq_tcq_encode_tailbiting(const mpq_tcq_trellis *tr, mpq_tcq_work *wk, const float *xs,
                                const float *wt, int n_steps, uint32_t *states,
                                int32_t *overlap_out) {
    int h = n_steps / 2;
    rotate_half(wk, xs, wt, n_steps);
    mpq_tcq_viterbi(tr, wk, wk->xr, wk->wr, n_steps, -1, wk->st);
    int32_t ov = (int32_t)(wk->st[n_steps - h] >> tr->k);
    if (overlap_out) *overlap_out = ov;
    return mpq_tcq_viterbi(tr, wk, xs, wt, n_steps, ov, states);
}

float mpq_tcq_encode_tailbiting_exact(const mpq_tcq_trellis *tr, mpq_tcq_work *wk,
                                      const float *xs, const float *wt, int n_steps,
                                      uint32_t *states) {
    float best = INFINITY;
    int32_t nm = (int32_t)1 << (tr->L - tr->k), bo = 0;
    for (int32_t o = 0; o < nm; o++) {
        float c = mpq_tcq_viterbi(tr, wk, xs, wt, n_steps, o, wk->st);
        if (c < best) {
            best = c;
            bo = o;
        }
    }
    return mpq_tcq_viterbi(tr, wk, xs, wt, n_steps, bo, states);
}

/* ---------------------------------------------------------------- matrix coding */

typedef struct tcq_setup {
    int64_t nr, nc, n_hi;
    int k_lo, k_hi, t;
    float *x, *y; /* expanded codebook, 2^16 each */
} tcq_setup;

static mpq_status setup_open(tcq_setup *su, int64_t rows, int64_t cols, double rate,
                             const char *what, mpq_err *err) {
    memset(su, 0, sizeof *su);
    if (!mpq_tcq_rate_valid(rate))
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "tcq %s: rate %g is not one of 1.5, 1.75, ..., 5.0 bits per weight",
                           what, rate);
    if (mpq_tcq_code_bits(rows, cols, rate) < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "tcq %s: shape (%lld, %lld) cannot be coded (negative or too large)",
                           what, (long long)rows, (long long)cols);
    su->nr = (rows + 15) / 16;
    su->nc = (cols + 15) / 16;
    mpq_tcq_rate_split(rate, su->nc, &su->k_lo, &su->k_hi, &su->n_hi);
    su->t = mpq_tcq_lut_bits(su->k_hi);
    if (rows == 0 || cols == 0) return MPQ_OK;
    su->x = malloc(sizeof(float) << 16);
    su->y = malloc(sizeof(float) << 16);
    if (!su->x || !su->y) {
        free(su->x);
        free(su->y);
        su->x = su->y = NULL;
        return mpq_err_set(err, MPQ_ERR_NOMEM, "tcq %s: out of memory for the codebook", what);
    }
    mpq_tcq_lut_expand(mpq_tcq_lut_table(su->t), su->t, su->x, su->y);
    return MPQ_OK;
}

static void setup_close(tcq_setup *su) {
    free(su->x);
    free(su->y);
}

static inline int tile_k(const tcq_setup *su, int64_t tc) {
    return tc < su->nc - su->n_hi ? su->k_lo : su->k_hi;
}

/* MSB-first bit writer/reader on a tile's byte string */
static inline void put_bits(uint8_t *buf, size_t pos, uint32_t v, int n) {
    for (int b = n - 1; b >= 0; b--, pos++) {
        uint8_t mask = (uint8_t)(0x80u >> (pos & 7));
        if ((v >> b) & 1u)
            buf[pos >> 3] |= mask;
        else
            buf[pos >> 3] &= (uint8_t)~mask;
    }
}

static inline uint32_t get_bits_cyclic(const uint8_t *buf, size_t nbits, size_t pos, int n) {
    uint32_t v = 0;
    for (int b = 0; b < n; b++) {
        size_t p = (pos + (size_t)b) % nbits;
        v = (v << 1) | ((buf[p >> 3] >> (7 - (p & 7))) & 1u);
    }
    return v;
}

/* Tile (tr, tc) of the row-major (rows, cols) matrix as a step sequence: xs[p], p = 16 r + c,
 * with weight wt[p] = 1, or 0 and xs[p] = 0 where (r, c) is padding. */
static void gather_tile(const float *w, int64_t rows, int64_t cols, int64_t tr, int64_t tc,
                        float *xs, float *wt) {
    for (int p = 0; p < 256; p++) {
        int64_t r = tr * 16 + p / 16, c = tc * 16 + p % 16;
        bool in = r < rows && c < cols;
        xs[p] = in ? w[r * cols + c] : 0.0f;
        wt[p] = in ? 1.0f : 0.0f;
    }
}

/* Writes the decoded values of a tile's path into the matrix (padding skipped). */
static void scatter_tile(float *w, int64_t rows, int64_t cols, int64_t tr, int64_t tc,
                         const float *x, const float *y, const uint32_t *path) {
    for (int p = 0; p < 256; p++) {
        int64_t r = tr * 16 + p / 16, c = tc * 16 + p % 16;
        if (r < rows && c < cols) w[r * cols + c] = (p & 1) ? y[path[p / 2]] : x[path[p / 2]];
    }
}

mpq_status mpq_tcq_quantize_matrix(float *w, int64_t rows, int64_t cols, double rate,
                                   uint8_t *codes, mpq_err *err) {
    tcq_setup su;
    mpq_tcq_work *wk = NULL, *wk2 = NULL;
    mpq_status st = setup_open(&su, rows, cols, rate, "quantize", err);
    if (st != MPQ_OK) goto done;
    if (rows == 0 || cols == 0) goto done;
    if (!w) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "tcq quantize: matrix pointer is NULL");
        goto done;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(w[r * cols + c])) {
                st = mpq_err_set(err, MPQ_ERR_INVALID,
                                 "tcq quantize: weight (%lld, %lld) of the (%lld, %lld) matrix "
                                 "is %s; only finite values can be coded",
                                 (long long)r, (long long)c, (long long)rows, (long long)cols,
                                 isnan(w[r * cols + c]) ? "NaN" : "infinite");
                goto done;
            }
    wk = mpq_tcq_work_new(MPQ_TCQ_L, su.k_lo, MPQ_TCQ_STEPS);
    wk2 = mpq_tcq_work_new(MPQ_TCQ_L, su.k_lo, MPQ_TCQ_STEPS);
    if (!wk || !wk2) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "tcq quantize: out of memory for the workspace");
        goto done;
    }
    float xs[2][256], wt[2][256];
    uint32_t path[2][MPQ_TCQ_STEPS];
    size_t off = 0; /* byte offset of the tile in codes */
    for (int64_t tr = 0; tr < su.nr; tr++) {
        /* tiles are encoded two at a time when neighbours share k (same result as one by one) */
        for (int64_t tc = 0; tc < su.nc;) {
            int k = tile_k(&su, tc);
            int n_t = (tc + 1 < su.nc && tile_k(&su, tc + 1) == k) ? 2 : 1;
            for (int j = 0; j < n_t; j++) gather_tile(w, rows, cols, tr, tc + j, xs[j], wt[j]);
            mpq_tcq_trellis trl = {MPQ_TCQ_L, k, su.x, su.y};
            if (n_t == 2) {
                float ca, cb;
                mpq_tcq_encode_tailbiting2(&trl, wk, wk2, xs[0], wt[0], xs[1], wt[1],
                                           MPQ_TCQ_STEPS, path[0], path[1], &ca, &cb);
            } else {
                mpq_tcq_encode_tailbiting(&trl, wk, xs[0], wt[0], MPQ_TCQ_STEPS, path[0], NULL);
            }
            for (int j = 0; j < n_t; j++) {
                scatter_tile(w, rows, cols, tr, tc + j, su.x, su.y, path[j]);
                if (codes)
                    for (int i = 0; i < MPQ_TCQ_STEPS; i++)
                        put_bits(codes + off, (size_t)i * k, path[j][i] >> (MPQ_TCQ_L - k), k);
                off += (size_t)16 * k;
            }
            tc += n_t;
        }
    }
done:
    mpq_tcq_work_free(wk);
    mpq_tcq_work_free(wk2);
    setup_close(&su);
    return st;
}

mpq_status mpq_tcq_decode_matrix(const uint8_t *codes, int64_t rows, int64_t cols, double rate,
                                 float *out, mpq_err *err) {
    tcq_setup su;
    mpq_status st = setup_open(&su, rows, cols, rate, "decode", err);
    if (st != MPQ_OK) goto done;
    if (rows == 0 || cols == 0) goto done;
    if (!codes || !out) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "tcq decode: codes or output pointer is NULL");
        goto done;
    }
    size_t off = 0;
    for (int64_t tr = 0; tr < su.nr; tr++) {
        for (int64_t tc = 0; tc < su.nc; tc++) {
            int k = tile_k(&su, tc);
            size_t nbits = (size_t)MPQ_TCQ_STEPS * k;
            for (int i = 0; i < MPQ_TCQ_STEPS; i++) {
                uint32_t s = get_bits_cyclic(codes + off, nbits, (size_t)i * k, MPQ_TCQ_L);
                for (int v = 0; v < 2; v++) {
                    int p = 2 * i + v;
                    int64_t r = tr * 16 + p / 16, c = tc * 16 + p % 16;
                    if (r < rows && c < cols) out[r * cols + c] = v ? su.y[s] : su.x[s];
                }
            }
            off += (size_t)16 * k;
        }
    }
done:
    setup_close(&su);
    return st;
}

/* ---------------------------------------------------------------- codebook training */

/* ln(a) for a > 0 finite, by +, -, *, / only: a = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh(z), z = (m-1)/(m+1), |z| < 0.1716, series to z^41 (error < 1e-17 relative). */
static double ln_portable(double a) {
    int e;
    double m = frexp(a, &e); /* exact: m in [0.5, 1) */
    if (m < 0x1.6a09e667f3bcdp-1) { /* sqrt(1/2) */
        m *= 2.0;
        e -= 1;
    }
    double z = (m - 1.0) / (m + 1.0), z2 = z * z, term = z, sum = 0.0;
    for (int n = 1; n <= 41; n += 2) {
        sum += term / n;
        term *= z2;
    }
    return 2.0 * sum + e * 0x1.62e42fefa39efp-1; /* ln 2 */
}

void mpq_tcq_normal_pair(mpq_rng *r, double out[2]) {
    double u, v, s;
    do {
        u = 2.0 * mpq_rng_uniform(r) - 1.0;
        v = 2.0 * mpq_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * ln_portable(s) / s); /* sqrt is correctly rounded (IEEE 754) */
    out[0] = u * f;
    out[1] = v * f;
}

#define LUT_TRAIN_POINTS ((size_t)1 << 20) /* Gaussian pairs, as QTIP's 2^20 */
#define LUT_TRAIN_SEED 20240611u           /* + t */
#define LUT_TRAIN_MAX_ITERS 100
#define LUT_TRAIN_REL_TOL 1e-5 /* stop when the mean squared error falls by less (relative) */

typedef struct { double x; int32_t i; } xkey;

static int cmp_xkey(const void *a, const void *b) {
    const xkey *p = a, *q = b;
    if (p->x != q->x) return p->x < q->x ? -1 : 1;
    return p->i < q->i ? -1 : (p->i > q->i);
}

mpq_status mpq_tcq_lut_train(int t, float *tab, int *iters, mpq_err *err) {
    if (t < 1 || t > 12)
        return mpq_err_set(err, MPQ_ERR_INVALID, "tcq codebook: table bits %d not in 1..12", t);
    mpq_status st = MPQ_OK;
    size_t nc = (size_t)1 << t, np = LUT_TRAIN_POINTS;
    double *cen = malloc(nc * 2 * sizeof(double)), *pts = malloc(np * 2 * sizeof(double));
    double *sum = malloc(nc * 2 * sizeof(double));
    size_t *cnt = malloc(nc * sizeof(size_t));
    int32_t *asg = malloc(np * sizeof(int32_t));
    xkey *ord = malloc(nc * sizeof(xkey));
    float *ex = malloc(sizeof(float) << 16), *ey = malloc(sizeof(float) << 16);
    if (!cen || !pts || !sum || !cnt || !asg || !ord || !ex || !ey) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "tcq codebook: out of memory (t = %d)", t);
        goto done;
    }
    mpq_rng r;
    mpq_rng_seed(&r, LUT_TRAIN_SEED + (uint64_t)t);
    for (size_t c = 0; c < nc; c++) mpq_tcq_normal_pair(&r, cen + 2 * c); /* initial centres */
    for (size_t p = 0; p < np; p++) mpq_tcq_normal_pair(&r, pts + 2 * p);
    for (size_t p = 0; p < np; p++) asg[p] = 0;
    double prev_mse = INFINITY;
    int it = 0;
    while (it < LUT_TRAIN_MAX_ITERS) {
        it++;
        /* assignment: nearest centre (smallest index on ties), searched outwards from the
         * point's x in the centres sorted by x, starting from the current centre's distance */
        for (size_t c = 0; c < nc; c++) {
            ord[c].x = cen[2 * c];
            ord[c].i = (int32_t)c;
        }
        qsort(ord, nc, sizeof *ord, cmp_xkey);
        double mse = 0.0;
        for (size_t p = 0; p < np; p++) {
            double px = pts[2 * p], py = pts[2 * p + 1];
            int32_t bi = asg[p];
            double dx0 = px - cen[2 * bi], dy0 = py - cen[2 * bi + 1];
            double bd = dx0 * dx0 + dy0 * dy0;
            size_t lo = 0, hi = nc; /* first ord with x >= px */
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (ord[mid].x < px) lo = mid + 1;
                else hi = mid;
            }
            for (size_t j = lo; j < nc; j++) {
                double dx = ord[j].x - px;
                if (dx * dx > bd) break;
                int32_t ci = ord[j].i;
                double dy = cen[2 * ci + 1] - py, d = dx * dx + dy * dy;
                if (d < bd || (d == bd && ci < bi)) {
                    bd = d;
                    bi = ci;
                }
            }
            for (size_t j = lo; j-- > 0;) {
                double dx = ord[j].x - px;
                if (dx * dx > bd) break;
                int32_t ci = ord[j].i;
                double dy = cen[2 * ci + 1] - py, d = dx * dx + dy * dy;
                if (d < bd || (d == bd && ci < bi)) {
                    bd = d;
                    bi = ci;
                }
            }
            asg[p] = bi;
            mse += bd;
        }
        mse /= (double)np;
        /* update: mean of the assigned points (an empty cluster keeps its centre) */
        memset(sum, 0, nc * 2 * sizeof(double));
        memset(cnt, 0, nc * sizeof(size_t));
        for (size_t p = 0; p < np; p++) {
            sum[2 * asg[p]] += pts[2 * p];
            sum[2 * asg[p] + 1] += pts[2 * p + 1];
            cnt[asg[p]]++;
        }
        for (size_t c = 0; c < nc; c++)
            if (cnt[c]) {
                cen[2 * c] = sum[2 * c] / (double)cnt[c];
                cen[2 * c + 1] = sum[2 * c + 1] / (double)cnt[c];
            }
        if (prev_mse - mse < LUT_TRAIN_REL_TOL * mse) break;
        prev_mse = mse;
    }
    /* Q-Palette's operating point: the data fed to the trellis has rms 0.9 * rms(codebook over
     * the 2^16 states); for unit-variance data that is the table scaled by 1/(0.9 * rms). */
    for (size_t c = 0; c < 2 * nc; c++) tab[c] = (float)cen[c];
    mpq_tcq_lut_expand(tab, t, ex, ey);
    double ss = 0.0;
    for (size_t s = 0; s < ((size_t)1 << 16); s++)
        ss += (double)ex[s] * ex[s] + (double)ey[s] * ey[s];
    double rms = sqrt(ss / (double)((size_t)2 << 16));
    double g = 1.0 / (MPQ_TCQ_SCALE_OVERRIDE * rms);
    for (size_t c = 0; c < 2 * nc; c++) tab[c] = (float)(cen[c] * g);
    if (iters) *iters = it;
done:
    free(cen);
    free(pts);
    free(sum);
    free(cnt);
    free(asg);
    free(ord);
    free(ex);
    free(ey);
    return st;
}
