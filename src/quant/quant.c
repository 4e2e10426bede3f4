/*
 * quant.c - weight quantizer candidates: name parsing, exact bits/bytes with scale/zero
 * overhead, and round-to-nearest fake quantizers (quantize then dequantize in place).
 *
 * References:
 * - IEEE 754-2008 binary16 (fp16 scales, round to nearest even).
 * - OCP 8-bit Floating Point Specification (OFP8) v1.0: E4M3 (bias 7, max 448, no inf,
 *   subnormals) and E5M2 (bias 15, max 57344); we saturate instead of producing inf.
 * - OCP Microscaling Formats (MX) v1.0: FP4 E2M1 values {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
 * - Dettmers et al. 2023, "QLoRA", Appendix E: the 16 NormalFloat-4 levels.
 * - Li et al. 2025, "SAQ: Pushing the Limits of Vector Quantization through Code Adjustment
 *   and Dimension Segmentation" (arXiv 2509.12086), section 3, Algorithm 1: code adjustment
 *   (CAQ), used by the int candidates with suffix a and by KV groups with scheme.caq.
 *
 * Conventions chosen here (also stated in mpq_quant.h):
 * - Asymmetric int<N>: per group an fp16 scale and an fp16 *float offset* zero = the group
 *   minimum rounded down to fp16; levels zero + q*scale, q = 0..2^N-1. The fp16 scale is
 *   (max - zero)/(2^N-1) rounded to fp16 and then, if needed, bumped up to the next fp16
 *   value so that the grid covers [min, max]: every element's error is <= scale/2 (up to
 *   float rounding of the dequantization).
 * - Symmetric int<N>s: levels q*scale, q = -(2^(N-1)-1) .. 2^(N-1)-1 (the code -2^(N-1) is
 *   not used, so the grid is symmetric and contains 0); scale = absmax/(2^(N-1)-1) in fp16,
 *   bumped up to cover absmax.
 * - Minifloat / NF4: scale = absmax / format_max in fp16, bumped up so that absmax/scale
 *   does not exceed format_max; values round to nearest (ties to even for minifloats).
 * - A group whose range (or absmax) is 0 has scale 0 and dequantizes to its (fp16) offset.
 */
#include "mpq/mpq_quant.h"

#include <math.h>

#include "quant/palette.h"
#include "quant/quant_rtn.h"
#include "quant/saq.h"
#include "quant/tcq.h"
#include "util/vec_clones.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- fp16 ---------------- */

static uint16_t f32_to_f16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));
    if (x >= 0x477ff000u) /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (x < 0x38800000u) { /* below 2^-14: fp16 subnormal (step 2^-24) or zero */
        float a;
        memcpy(&a, &x, sizeof a);
        /* a * 2^24 is exact; rint rounds half to even; 1024 encodes the smallest normal */
        return (uint16_t)(sign | (uint16_t)rintf(a * 16777216.0f));
    }
    uint32_t mant = x & 0x7fffffu;
    uint32_t exp = (x >> 23) - 127u + 15u;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* carry may move into exponent */
    return (uint16_t)(sign | h);
}

static float f16_bits_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        float v = (float)mant / 16777216.0f; /* mant * 2^-24, exact */
        memcpy(&x, &v, sizeof x);
        x |= sign;
    } else if (exp == 31) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp - 15u + 127u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

float mpq_fp16_round(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

#define FP16_MAX 65504.0f

/* Next fp16 value above v (v an fp16 value, finite). */
static float fp16_next_up(float v) {
    uint16_t h = f32_to_f16_bits(v);
    if (v == 0.0f) return f16_bits_to_f32(0x0001u);
    if (v > 0.0f) {
        if ((h & 0x7fffu) >= 0x7bffu) return FP16_MAX;
        h++;
    } else {
        h--;
        if (h == 0x8000u) return 0.0f;
    }
    return f16_bits_to_f32(h);
}

/* Next fp16 value below v (v an fp16 value, finite). */
static float fp16_next_down(float v) { return -fp16_next_up(-v); }

/* Largest fp16 value <= v (clamped to the finite range). */
static float fp16_floor(float v) {
    if (v > FP16_MAX) return FP16_MAX;
    if (v < -FP16_MAX) return -FP16_MAX;
    float h = mpq_fp16_round(v);
    if (h > v) h = fp16_next_down(h);
    return h;
}

/* Smallest fp16 scale s >= fp16(need) with (float)(base + qmax*s) >= top; need >= 0. */
static float fp16_cover_scale(double need, float base, float qmax, float top) {
    float s = (float)need;
    if (s > FP16_MAX) s = FP16_MAX;
    s = mpq_fp16_round(s);
    if (need > 0.0 && s == 0.0f) s = fp16_next_up(0.0f);
    for (int i = 0; i < 64 && s < FP16_MAX && base + qmax * s < top; i++) s = fp16_next_up(s);
    return s;
}

/* ---------------- group quantizers ---------------- */

/* Asymmetric grid of a group: zero = fp16 floor of the minimum, covering fp16 scale. */
static void asym_grid(const float *x, size_t n, size_t stride, float qmax, float *zero, float *scale) {
    float lo = x[0], hi = x[0];
    for (size_t i = 1; i < n; i++) {
        float v = x[i * stride];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    *zero = fp16_floor(lo);
    *scale = fp16_cover_scale(((double)hi - (double)*zero) / qmax, *zero, qmax, hi);
}

/* Nearest asymmetric code of v (scale > 0), clamped to [0, qmax]. */
static float asym_code(float v, float zero, float scale, float qmax) {
    float q = rintf((v - zero) / scale);
    if (!(q >= 0.0f)) q = 0.0f; /* also catches NaN */
    if (q > qmax) q = qmax;
    return q;
}

/* Symmetric scale of a group: covering fp16 absmax / qmax. */
static float sym_scale(const float *x, size_t n, size_t stride, float qmax) {
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i * stride]);
        if (a > amax) amax = a;
    }
    return fp16_cover_scale((double)amax / qmax, 0.0f, qmax, amax);
}

/* Nearest symmetric code of v (scale > 0), clamped to [-qmax, qmax]. */
static float sym_code(float v, float scale, float qmax) {
    float q = rintf(v / scale);
    if (!(q >= -qmax)) q = -qmax;
    if (q > qmax) q = qmax;
    return q;
}

static void group_int_asym(float *x, size_t n, size_t stride, int bits) {
    if (n == 0) return;
    const float qmax = (float)((1u << bits) - 1u);
    float zero, scale;
    asym_grid(x, n, stride, qmax, &zero, &scale);
    for (size_t i = 0; i < n; i++) {
        float *p = &x[i * stride];
        *p = (scale == 0.0f) ? zero : zero + asym_code(*p, zero, scale, qmax) * scale;
    }
}

static void group_int_sym(float *x, size_t n, size_t stride, int bits) {
    if (n == 0) return;
    const float qmax = (float)((1u << (bits - 1)) - 1u);
    const float scale = sym_scale(x, n, stride, qmax);
    for (size_t i = 0; i < n; i++) {
        float *p = &x[i * stride];
        *p = (scale == 0.0f) ? 0.0f : sym_code(*p, scale, qmax) * scale;
    }
}

/* ---------------- CAQ: code adjustment (SAQ, Li et al. 2025, section 3, Algorithm 1) -------
 * Start from the RTN codes q of the group x (length n), then MPQ_CAQ_ROUNDS rounds over the
 * coordinates in order: try q_i + 1, and if that is not accepted q_i - 1 (within the code
 * range); a step is accepted when it strictly raises the cosine between x and the
 * reconstruction direction. Asymmetric groups use the centred cosine
 *     cos(x - mean(x), q - mean(q)) = D / sqrt(||x - m||^2 * W / n),
 *     D = sum (x_i - m) q_i,  W = n sum q_i^2 - (sum q_i)^2   (an exact integer),
 * symmetric groups the plain one, D = sum x_i q_i, W = sum q_i^2; the criterion compared is
 * D / sqrt(W) (the other factors are constant), kept as running sums: O(1) per trial. A round
 * without an accepted step ends the search. Then (scale, zero) are refitted by least squares
 * for the new codes (the maximal cosine is exactly the minimal least-squares residual:
 * ||x - m||^2 (1 - cos^2)), rounded to fp16 (scale first, the zero refitted for the rounded
 * scale), and the group keeps whichever of the RTN and the CAQ reconstruction has the smaller
 * squared error (RTN on a tie). Every step and its arithmetic is in the README, "Exact
 * quantizer conventions". */

#define CAQ_STACK_CODES 4096
#define CAQ_MAX_N ((size_t)1 << 22) /* keeps n * sum q^2 <= 2^22 * 2^22 * 255^2 < 2^63 */

static double caq_crit(double d, int64_t w) { return d / sqrt((double)w); }

static void group_int_caq(float *x, size_t n, size_t stride, int bits, bool sym) {
    if (n == 0) return;
    const float qmax = sym ? (float)((1u << (bits - 1)) - 1u) : (float)((1u << bits) - 1u);
    float zero = 0.0f, scale;
    if (sym) scale = sym_scale(x, n, stride, qmax);
    else asym_grid(x, n, stride, qmax, &zero, &scale);
    uint8_t stack_codes[CAQ_STACK_CODES];
    uint8_t *cb = (n <= CAQ_STACK_CODES) ? stack_codes : (n <= CAQ_MAX_N ? malloc(n) : NULL);
    bool use_caq = scale > 0.0f && cb != NULL && bits <= 8;
    const int off = sym ? (int)qmax : 0; /* codes stored as q + off in 0..254 (sym) / 0..255 */
    const int qlo = -off, qhi = (int)qmax;
    double m = 0.0;
    float s16 = 0.0f, z16 = 0.0f;
    if (use_caq) {
        if (!sym) {
            for (size_t i = 0; i < n; i++) m += (double)x[i * stride];
            m /= (double)n;
        }
        int64_t s1 = 0, s2 = 0;
        double d = 0.0;
        for (size_t i = 0; i < n; i++) {
            float v = x[i * stride];
            int q = (int)(sym ? sym_code(v, scale, qmax) : asym_code(v, zero, scale, qmax));
            cb[i] = (uint8_t)(q + off);
            s1 += q;
            s2 += (int64_t)q * q;
            d += ((double)v - m) * (double)q;
        }
        int64_t w = sym ? s2 : (int64_t)n * s2 - s1 * s1;
        use_caq = w > 0 && d > 0.0;
        if (use_caq) {
            double f = caq_crit(d, w);
            for (int round = 0; round < MPQ_CAQ_ROUNDS; round++) {
                bool moved = false;
                for (size_t i = 0; i < n; i++) {
                    int q = (int)cb[i] - off;
                    double c = (double)x[i * stride] - m;
                    for (int step = 1; step >= -1; step -= 2) {
                        if (q + step < qlo || q + step > qhi) continue;
                        double d2 = step > 0 ? d + c : d - c;
                        int64_t s1b = s1 + step, s2b = s2 + 2 * (int64_t)step * q + 1;
                        int64_t w2 = sym ? s2b : (int64_t)n * s2b - s1b * s1b;
                        if (w2 <= 0) continue;
                        double f2 = caq_crit(d2, w2);
                        if (f2 > f) {
                            cb[i] = (uint8_t)(q + step + off);
                            d = d2, s1 = s1b, s2 = s2b, f = f2;
                            moved = true;
                            break;
                        }
                    }
                }
                if (!moved) break;
            }
            /* least-squares refit from the final codes, sums recomputed from scratch */
            s1 = 0, s2 = 0, d = 0.0;
            for (size_t i = 0; i < n; i++) {
                int q = (int)cb[i] - off;
                s1 += q;
                s2 += (int64_t)q * q;
                d += ((double)x[i * stride] - m) * (double)q;
            }
            w = sym ? s2 : (int64_t)n * s2 - s1 * s1;
            double s = sym ? d / (double)s2 : d * (double)n / (double)w;
            float sf = (float)s;
            s16 = mpq_fp16_round(sf > FP16_MAX ? FP16_MAX : sf);
            use_caq = s16 > 0.0f; /* also false for NaN */
            if (use_caq && !sym) {
                float zf = (float)(m - (double)s16 * ((double)s1 / (double)n));
                if (zf > FP16_MAX) zf = FP16_MAX;
                if (zf < -FP16_MAX) zf = -FP16_MAX;
                z16 = mpq_fp16_round(zf);
            }
        }
    }
    if (use_caq) { /* keep the CAQ result only when its squared error is strictly smaller */
        double e_rtn = 0.0, e_caq = 0.0;
        for (size_t i = 0; i < n; i++) {
            float v = x[i * stride];
            float r = sym ? sym_code(v, scale, qmax) * scale : zero + asym_code(v, zero, scale, qmax) * scale;
            float t = (float)((int)cb[i] - off) * s16, y = sym ? t : z16 + t;
            e_rtn += ((double)v - (double)r) * ((double)v - (double)r);
            e_caq += ((double)v - (double)y) * ((double)v - (double)y);
        }
        use_caq = e_caq < e_rtn;
    }
    if (use_caq) {
        for (size_t i = 0; i < n; i++) {
            float t = (float)((int)cb[i] - off) * s16;
            x[i * stride] = sym ? t : z16 + t;
        }
    } else if (sym) {
        group_int_sym(x, n, stride, bits);
    } else {
        group_int_asym(x, n, stride, bits);
    }
    if (cb != stack_codes) free(cb);
}

typedef struct minifloat {
    int mant_bits; /* explicit mantissa bits */
    int emin;      /* exponent of the smallest normal (subnormal step 2^(emin-mant_bits)) */
    double max;    /* largest finite magnitude (saturation) */
} minifloat;

static const minifloat MF_E4M3 = {3, -6, 448.0};
static const minifloat MF_E5M2 = {2, -14, 57344.0};
static const minifloat MF_E2M1 = {1, 0, 6.0};

/* Rounds y to the nearest value of the format (ties to even), saturating at max. */
static double minifloat_round(double y, const minifloat *f) {
    double a = fabs(y);
    if (!(a > 0.0)) return 0.0;
    int e;
    (void)frexp(a, &e); /* a = m * 2^e, m in [0.5, 1): floor(log2 a) = e - 1 */
    e -= 1;
    if (e < f->emin) e = f->emin;
    double step = ldexp(1.0, e - f->mant_bits);
    double r = rint(a / step) * step; /* a/step is exact (power-of-two scaling) */
    if (r > f->max) r = f->max;
    return y < 0 ? -r : r;
}

static void group_minifloat(float *x, size_t n, size_t stride, const minifloat *f) {
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i * stride]);
        if (a > amax) amax = a;
    }
    float scale = mpq_fp16_round((float)((double)amax / f->max));
    if (amax > 0.0f && scale == 0.0f) scale = fp16_next_up(0.0f);
    for (int i = 0; i < 64 && scale < FP16_MAX && (double)amax / scale > f->max; i++) scale = fp16_next_up(scale);
    for (size_t i = 0; i < n; i++) {
        float *p = &x[i * stride];
        if (scale == 0.0f) {
            *p = 0.0f;
            continue;
        }
        *p = (float)(minifloat_round((double)*p / scale, f) * scale);
    }
}

/* QLoRA NormalFloat-4 levels (Dettmers et al. 2023, Appendix E), ascending. */
static const double NF4_LEVELS[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};

static double nf4_round(double y) {
    /* nearest level; exact midpoints go to the lower level */
    int k = 0;
    while (k < 15 && y > 0.5 * (NF4_LEVELS[k] + NF4_LEVELS[k + 1])) k++;
    return NF4_LEVELS[k];
}

static void group_nf4(float *x, size_t n, size_t stride) {
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i * stride]);
        if (a > amax) amax = a;
    }
    float scale = fp16_cover_scale((double)amax, 0.0f, 1.0f, amax);
    for (size_t i = 0; i < n; i++) {
        float *p = &x[i * stride];
        *p = (scale == 0.0f) ? 0.0f : (float)(nf4_round((double)*p / scale) * scale);
    }
}

void mpq_quant_rtn_minmax(float *x, size_t n, size_t stride, int bits) {
    if (!x || n == 0 || bits >= 16) return;
    if (bits < 1) bits = 1;
    if (stride == 0) stride = 1;
    group_int_asym(x, n, stride, bits);
}

/* ---------------- batched min-max RTN (KV cache) ----------------
 * Each group gets exactly group_int_asym's operations: the running minimum / maximum from the
 * first element in index order (`v < lo ? v : lo`, so a NaN first element stays and later NaNs
 * are skipped), the fp16 grid from fp16_floor / fp16_cover_scale (scalar, once per group), then
 * per element q = rint((v - zero) / scale) clamped to [0, qmax] and zero + q * scale (zero when
 * scale is 0). The element steps are written without branches over fixed runs of RTN_LANES so
 * that gcc -O2 vectorises them; rint is computed as (|d| + 2^23) - 2^23 for |d| < 2^23 (|d|
 * otherwise) with d's sign copied back, which is rintf exactly in the default rounding mode
 * (also for -0, +-inf and NaN). The loops are also compiled for AVX2 and picked at run time
 * where gcc supports it: the same IEEE operations per lane (-std=c11 keeps
 * -ffp-contract=off; "avx2" does not enable FMA), so every build gives the same bits. */
#define RTN_CLONES MPQ_VEC_CLONES
#define RTN_LANES 8
#define RTN_CHUNK 256 /* groups per pass of the lane form (stack arrays) */

static inline float rint_lane(float d) {
    const float t = fabsf(d);
    const float r = (t + 8388608.0f) - 8388608.0f; /* rint(t) for t < 2^23 */
    return copysignf(mpq_vec_sel(t < 8388608.0f, r, t), d);
}

/* The element step of group_int_asym: asym_code, then the dequantization. */
static inline float asym_lane(float v, float zero, float scale, float qmax) {
    const int z = scale == 0.0f;
    float q = rint_lane((v - zero) / mpq_vec_sel(z, 1.0f, scale)); /* the quotient is unused when z */
    q = mpq_vec_sel(q >= 0.0f, q, 0.0f);                            /* !(q >= 0): 0, also for NaN */
    q = mpq_vec_sel(q > qmax, qmax, q);
    const float r = zero + q * scale;
    return mpq_vec_sel(z, zero, r);
}

RTN_CLONES void mpq_quant_rtn_minmax_lanes(float *dst, const float *src, size_t n_lanes, size_t n, size_t stride,
                                           int bits) {
    if (!dst || !src || n == 0 || n_lanes == 0) return;
    if (bits >= 16) { /* unchanged */
        if (dst != src)
            for (size_t i = 0; i < n; i++) memcpy(dst + i * stride, src + i * stride, n_lanes * sizeof(float));
        return;
    }
    if (bits < 1) bits = 1;
    const float qmax = (float)((1u << bits) - 1u);
    float lo[RTN_CHUNK], hi[RTN_CHUNK], zero[RTN_CHUNK], scale[RTN_CHUNK];
    for (size_t c0 = 0; c0 < n_lanes; c0 += RTN_CHUNK) {
        const size_t w = n_lanes - c0 < RTN_CHUNK ? n_lanes - c0 : RTN_CHUNK;
        const float *xc = src + c0;
        float *yc = dst + c0;
        for (size_t c = 0; c < w; c++) lo[c] = hi[c] = xc[c];
        for (size_t i = 1; i < n; i++) {
            const float *row = xc + i * stride;
            size_t c = 0;
            for (; c + RTN_LANES <= w; c += RTN_LANES)
                for (int k = 0; k < RTN_LANES; k++) {
                    float v = row[c + k];
                    lo[c + k] = v < lo[c + k] ? v : lo[c + k];
                    hi[c + k] = v > hi[c + k] ? v : hi[c + k];
                }
            for (; c < w; c++) {
                float v = row[c];
                lo[c] = v < lo[c] ? v : lo[c];
                hi[c] = v > hi[c] ? v : hi[c];
            }
        }
        for (size_t c = 0; c < w; c++) {
            zero[c] = fp16_floor(lo[c]);
            scale[c] = fp16_cover_scale(((double)hi[c] - (double)zero[c]) / qmax, zero[c], qmax, hi[c]);
        }
        for (size_t i = 0; i < n; i++) {
            const float *row = xc + i * stride;
            float *out = yc + i * stride;
            size_t c = 0;
            for (; c + RTN_LANES <= w; c += RTN_LANES) {
                float t[RTN_LANES]; /* all loads before the stores: dst may be src */
                for (int k = 0; k < RTN_LANES; k++) t[k] = row[c + k];
                for (int k = 0; k < RTN_LANES; k++) out[c + k] = asym_lane(t[k], zero[c + k], scale[c + k], qmax);
            }
            for (; c < w; c++) out[c] = asym_lane(row[c], zero[c], scale[c], qmax);
        }
    }
}

RTN_CLONES void mpq_quant_rtn_minmax_groups(float *dst, const float *src, size_t n_groups, size_t n, int bits) {
    if (!dst || !src || n == 0) return;
    if (bits >= 16) { /* unchanged */
        if (dst != src) memcpy(dst, src, n_groups * n * sizeof(float));
        return;
    }
    if (bits < 1) bits = 1;
    const float qmax = (float)((1u << bits) - 1u);
    for (size_t g = 0; g < n_groups; g++) {
        const float *p = src + g * n;
        float *y = dst + g * n;
        float lo = p[0], hi = p[0];
        size_t i = 0;
        if (n >= RTN_LANES) {
            /* RTN_LANES running minima / maxima, each from p[0]; the minimum and maximum values
             * do not depend on the order, only which of +0 / -0 comes first does: a zero
             * result is recomputed in index order below */
            float l[RTN_LANES], h[RTN_LANES];
            for (int k = 0; k < RTN_LANES; k++) l[k] = h[k] = p[0];
            for (; i + RTN_LANES <= n; i += RTN_LANES)
                for (int k = 0; k < RTN_LANES; k++) {
                    float v = p[i + k];
                    l[k] = v < l[k] ? v : l[k];
                    h[k] = v > h[k] ? v : h[k];
                }
            for (int k = 0; k < RTN_LANES; k++) {
                lo = l[k] < lo ? l[k] : lo;
                hi = h[k] > hi ? h[k] : hi;
            }
            if (lo == 0.0f || hi == 0.0f) lo = hi = p[0], i = 0;
        }
        for (; i < n; i++) {
            float v = p[i];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        const float zero = fp16_floor(lo);
        const float scale = fp16_cover_scale(((double)hi - (double)zero) / qmax, zero, qmax, hi);
        i = 0;
        for (; i + RTN_LANES <= n; i += RTN_LANES) {
            float t[RTN_LANES]; /* all loads before the stores: dst may be src */
            for (int k = 0; k < RTN_LANES; k++) t[k] = p[i + k];
            for (int k = 0; k < RTN_LANES; k++) y[i + k] = asym_lane(t[k], zero, scale, qmax);
        }
        for (; i < n; i++) y[i] = asym_lane(p[i], zero, scale, qmax);
    }
}

void mpq_quant_caq_minmax(float *x, size_t n, size_t stride, int bits) {
    if (!x || n == 0 || bits >= 16) return;
    if (bits < 1) bits = 1;
    if (stride == 0) stride = 1;
    group_int_caq(x, n, stride, bits, false);
}

static void quant_group(const mpq_candidate *c, float *x, size_t n) {
    switch (c->type) {
    case MPQ_QTYPE_INT:
        if (c->adjust)
            group_int_caq(x, n, 1, c->bits, c->symmetric);
        else if (c->symmetric)
            group_int_sym(x, n, 1, c->bits);
        else
            group_int_asym(x, n, 1, c->bits);
        break;
    case MPQ_QTYPE_FP8_E4M3: group_minifloat(x, n, 1, &MF_E4M3); break;
    case MPQ_QTYPE_FP8_E5M2: group_minifloat(x, n, 1, &MF_E5M2); break;
    case MPQ_QTYPE_FP4_E2M1: group_minifloat(x, n, 1, &MF_E2M1); break;
    case MPQ_QTYPE_NF4: group_nf4(x, n, 1); break;
    case MPQ_QTYPE_F16:
        for (size_t i = 0; i < n; i++) x[i] = mpq_fp16_round(x[i]);
        break;
    case MPQ_QTYPE_F32: break;
    case MPQ_QTYPE_TCQ:
    case MPQ_QTYPE_VQ:
    case MPQ_QTYPE_NUQ: /* whole-matrix quantizers: mpq_palette_quantize */
    case MPQ_QTYPE_SAQ:
    case MPQ_QTYPE_SAQC: break; /* whole-matrix quantizers that need X^T X: mpq_saq_quantize */
    }
}

bool mpq_candidate_is_palette(const mpq_candidate *c) {
    return c && (c->type == MPQ_QTYPE_TCQ || c->type == MPQ_QTYPE_VQ || c->type == MPQ_QTYPE_NUQ);
}

bool mpq_candidate_is_saq(const mpq_candidate *c) {
    return c && (c->type == MPQ_QTYPE_SAQ || c->type == MPQ_QTYPE_SAQC);
}

mpq_status mpq_quantize_matrix_ctx(const mpq_candidate *c, float *w, int64_t rows, int64_t cols, const double *xtx,
                                   mpq_err *err) {
    if (!c || !w || rows <= 0 || cols <= 0) return MPQ_OK;
    if (!mpq_candidate_is_saq(c)) return mpq_quantize_matrix_checked(c, w, rows, cols, err);
    if (!xtx) return mpq_saq_quantize(c, w, rows, cols, NULL, NULL, err);
    /* the SAQ quantizer takes the full symmetric matrix: unpack the upper triangle */
    size_t nn;
    double *S = NULL;
    if (cols > MPQ_SAQ_MAX_COLS || !mpq_size_mul((size_t)cols, (size_t)cols, &nn) || !(S = malloc(nn * sizeof *S)))
        return cols > MPQ_SAQ_MAX_COLS ? mpq_saq_quantize(c, w, rows, cols, xtx, NULL, err) /* refused, naming the limit, before S is read */
                                        : mpq_err_set(err, MPQ_ERR_NOMEM, "candidate %s: out of memory for X^T X", c->name);
    for (int64_t i = 0, k = 0; i < cols; i++)
        for (int64_t j = i; j < cols; j++, k++) S[i * cols + j] = S[j * cols + i] = xtx[k];
    mpq_status st = mpq_saq_quantize(c, w, rows, cols, S, NULL, err);
    free(S);
    return st;
}

mpq_status mpq_quantize_matrix_checked(const mpq_candidate *c, float *w, int64_t rows, int64_t cols,
                                       mpq_err *err) {
    if (!c || !w || rows <= 0 || cols <= 0) return MPQ_OK;
    if (mpq_candidate_is_saq(c)) return mpq_saq_quantize(c, w, rows, cols, NULL, NULL, err);
    if (mpq_candidate_is_palette(c)) return mpq_palette_quantize(c, w, rows, cols, err);
    mpq_quantize_matrix(c, w, rows, cols);
    return MPQ_OK;
}

void mpq_quantize_matrix(const mpq_candidate *c, float *w, int64_t rows, int64_t cols) {
    if (!c || !w || rows <= 0 || cols <= 0) return;
    if (c->type == MPQ_QTYPE_F32) return;
    if (mpq_candidate_is_palette(c) || mpq_candidate_is_saq(c)) {
        if (mpq_quantize_matrix_checked(c, w, rows, cols, NULL) != MPQ_OK)
            for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) w[i] = NAN;
        return;
    }
    int64_t g = (c->group_size > 0 && c->group_size < cols) ? c->group_size : cols;
    for (int64_t r = 0; r < rows; r++) {
        float *row = w + (size_t)r * (size_t)cols;
        for (int64_t j = 0; j < cols; j += g) {
            int64_t len = (cols - j < g) ? cols - j : g;
            quant_group(c, row + j, (size_t)len);
        }
    }
}

/* ---------------- candidates: names and sizes ---------------- */

static bool valid_group(long g) { return g == 16 || g == 32 || g == 64 || g == 128 || g == 256; }

/* Parses "g<G>" or "c" (or nothing when allow_none) at *p; advances *p.
 * Returns 1 on success with *group set (0 = per channel), 0 on a bad spec. */
static int parse_grouping(const char **p, int *group, bool allow_none, bool allow_c) {
    const char *s = *p;
    if (*s == 'g') {
        s++;
        if (*s < '1' || *s > '9') return 0; /* no leading zeros: one spelling per candidate */
        long g = 0;
        while (*s >= '0' && *s <= '9') {
            g = g * 10 + (*s - '0');
            if (g > 100000) return 0;
            s++;
        }
        if (!valid_group(g)) return 0;
        *group = (int)g;
    } else if (*s == 'c' && allow_c) {
        s++;
        *group = 0;
    } else if (allow_none) {
        *group = 0;
    } else {
        return 0;
    }
    *p = s;
    return 1;
}

static void candidate_canonical(mpq_candidate *c) {
    char grp[16] = "";
    if (c->group_size > 0) snprintf(grp, sizeof grp, "g%d", c->group_size);
    switch (c->type) {
    case MPQ_QTYPE_INT:
        snprintf(c->name, sizeof c->name, "int%d%s%s%s", c->bits, c->group_size > 0 ? grp : "c",
                 c->symmetric ? "s" : "", c->adjust ? "a" : "");
        break;
    case MPQ_QTYPE_FP8_E4M3: snprintf(c->name, sizeof c->name, "fp8e4m3%s", grp); break;
    case MPQ_QTYPE_FP8_E5M2: snprintf(c->name, sizeof c->name, "fp8e5m2%s", grp); break;
    case MPQ_QTYPE_FP4_E2M1: snprintf(c->name, sizeof c->name, "fp4e2m1%s", grp); break;
    case MPQ_QTYPE_NF4: snprintf(c->name, sizeof c->name, "nf4%s", grp); break;
    case MPQ_QTYPE_F16: snprintf(c->name, sizeof c->name, "f16"); break;
    case MPQ_QTYPE_F32: snprintf(c->name, sizeof c->name, "f32"); break;
    case MPQ_QTYPE_TCQ: snprintf(c->name, sizeof c->name, "tcq%g", c->rate); break;
    case MPQ_QTYPE_VQ: snprintf(c->name, sizeof c->name, "vq%g", c->rate); break;
    case MPQ_QTYPE_NUQ: snprintf(c->name, sizeof c->name, "nuq%g", c->rate); break;
    case MPQ_QTYPE_SAQ: snprintf(c->name, sizeof c->name, "saq%g", c->rate); break;
    case MPQ_QTYPE_SAQC: snprintf(c->name, sizeof c->name, "saqc%g", c->rate); break;
    }
}

/* Rate of a palette candidate at *p: one digit 1..9, optionally '.' and one or two digits,
 * the last not 0 (one spelling per rate). Returns 1 with *rate set and *p advanced. */
static int parse_rate(const char **p, double *rate) {
    const char *s = *p;
    if (*s < '1' || *s > '9') return 0;
    int ip = *s++ - '0', frac = 0, nd = 0;
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9' && nd < 3) frac = frac * 10 + (*s++ - '0'), nd++;
        if (nd == 0 || nd > 2 || s[-1] == '0') return 0;
    }
    if (*s >= '0' && *s <= '9') return 0;
    *rate = ip + (nd == 0 ? 0.0 : frac / (nd == 1 ? 10.0 : 100.0));
    *p = s;
    return 1;
}

static mpq_status parse_palette(const char *name, mpq_candidate *c, mpq_err *err) {
    const char *p = name;
    const char *fam;
    if (strncmp(p, "tcq", 3) == 0) c->type = MPQ_QTYPE_TCQ, p += 3, fam = "tcq";
    else if (strncmp(p, "vq", 2) == 0) c->type = MPQ_QTYPE_VQ, p += 2, fam = "vq";
    else c->type = MPQ_QTYPE_NUQ, p += 3, fam = "nuq";
    double r = 0.0;
    if (!parse_rate(&p, &r) || *p != '\0')
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "candidate '%.64s': expected %s<R> with R written as in the palette, without "
                           "leading or trailing zeros (e.g. tcq2, tcq2.25, vq1.5, nuq3)",
                           name, fam);
    bool ok = c->type == MPQ_QTYPE_TCQ ? mpq_tcq_rate_valid(r)
              : c->type == MPQ_QTYPE_VQ ? (2.0 * r == floor(2.0 * r) && r >= 1.5 && r <= 4.0)
                                        : (r == floor(r) && r >= 2.0 && r <= 8.0);
    if (!ok)
        return mpq_err_set(err, MPQ_ERR_INVALID, "candidate '%.64s': rate %g is not in the palette of %s (%s)", name,
                           r, fam,
                           c->type == MPQ_QTYPE_TCQ  ? "1.5, 1.75, ..., 5"
                           : c->type == MPQ_QTYPE_VQ ? "1.5, 2, 2.5, 3, 3.5, 4"
                                                     : "2, 3, 4, 5, 6, 7, 8");
    c->rate = r;
    c->bits = (int)ceil(r);
    c->group_size = 0;
    c->symmetric = true;
    return MPQ_OK;
}

mpq_status mpq_candidate_parse(const char *name, mpq_candidate *out, mpq_err *err) {
    if (!name || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "candidate: NULL argument");
    mpq_candidate c;
    memset(&c, 0, sizeof c);
    const char *p = name;
    int ok = 0;
    if (strncmp(p, "tcq", 3) == 0 || strncmp(p, "vq", 2) == 0 || strncmp(p, "nuq", 3) == 0) {
        mpq_status st = parse_palette(name, &c, err);
        if (st != MPQ_OK) return st;
        candidate_canonical(&c);
        *out = c;
        return MPQ_OK;
    }
    if (strncmp(p, "saq", 3) == 0) {
        bool chan = p[3] == 'c';
        p += chan ? 4 : 3;
        double r = 0.0;
        if (!parse_rate(&p, &r) || *p != '\0' || r > 8.0)
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "candidate '%.64s': expected %s<R>, R from 1 to 8 with at most two decimals and "
                               "no trailing zeros (e.g. %s3, %s3.25)",
                               name, chan ? "saqc" : "saq", chan ? "saqc" : "saq", chan ? "saqc" : "saq");
        c.type = chan ? MPQ_QTYPE_SAQC : MPQ_QTYPE_SAQ;
        c.rate = r;
        c.bits = (int)ceil(r);
        candidate_canonical(&c);
        *out = c;
        return MPQ_OK;
    }
    if (strncmp(p, "int", 3) == 0) {
        p += 3;
        if (*p >= '2' && *p <= '8' && !(p[1] >= '0' && p[1] <= '9')) {
            c.type = MPQ_QTYPE_INT;
            c.bits = *p - '0';
            p++;
            ok = parse_grouping(&p, &c.group_size, false, true);
            if (ok && *p == 's') {
                c.symmetric = true;
                p++;
            }
            if (ok && *p == 'a') {
                c.adjust = true;
                p++;
            }
        }
    } else if (strncmp(p, "fp8e4m3", 7) == 0 || strncmp(p, "fp8e5m2", 7) == 0) {
        c.type = (p[4] == '4') ? MPQ_QTYPE_FP8_E4M3 : MPQ_QTYPE_FP8_E5M2;
        c.bits = 8;
        c.symmetric = true;
        p += 7;
        ok = parse_grouping(&p, &c.group_size, true, true);
    } else if (strncmp(p, "fp4e2m1", 7) == 0) {
        c.type = MPQ_QTYPE_FP4_E2M1;
        c.bits = 4;
        c.symmetric = true;
        p += 7;
        ok = parse_grouping(&p, &c.group_size, false, false);
    } else if (strncmp(p, "nf4", 3) == 0) {
        c.type = MPQ_QTYPE_NF4;
        c.bits = 4;
        c.symmetric = true;
        p += 3;
        ok = parse_grouping(&p, &c.group_size, false, false);
    } else if (strncmp(p, "f16", 3) == 0) {
        c.type = MPQ_QTYPE_F16;
        c.bits = 16;
        c.symmetric = true;
        p += 3;
        ok = 1;
    } else if (strncmp(p, "f32", 3) == 0) {
        c.type = MPQ_QTYPE_F32;
        c.bits = 32;
        c.symmetric = true;
        p += 3;
        ok = 1;
    }
    if (!ok || *p != '\0')
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "candidate '%.64s': not a known quantizer (expected int<2..8>g<G>|c[s][a], "
                           "fp8e4m3[g<G>|c], fp8e5m2[g<G>|c], fp4e2m1g<G>, nf4g<G>, f16, f32, tcq<R>, "
                           "vq<R>, nuq<R>, saq<R> or saqc<R>; G in 16/32/64/128/256)",
                           name);
    c.rate = c.bits;
    candidate_canonical(&c);
    *out = c;
    return MPQ_OK;
}

/* Exact stored bits of one row of `cols` weights; -1 if that does not fit in int64. */
static int64_t row_bits(const mpq_candidate *c, int64_t cols) {
    if (cols <= 0) return 0;
    if (cols > INT64_MAX / 64) return -1; /* bits <= 32 plus <= 32 overhead per weight */
    if (c->type == MPQ_QTYPE_F16) return 16 * cols;
    if (c->type == MPQ_QTYPE_F32) return 32 * cols;
    if (c->type == MPQ_QTYPE_NUQ) return (int64_t)c->rate * cols + 16;
    if (mpq_candidate_is_saq(c)) return -1; /* whole-matrix sizes only */
    if (c->type == MPQ_QTYPE_VQ) return (cols + 1) / 2 * (int64_t)(2.0 * c->rate) + 16;
    if (c->type == MPQ_QTYPE_TCQ) {
        int64_t cb = mpq_tcq_code_bits(1, cols, c->rate);
        return cb < 0 || cb > INT64_MAX - 16 ? -1 : cb + 16;
    }
    int64_t per_group = (c->type == MPQ_QTYPE_INT && !c->symmetric) ? 32 : 16;
    int64_t groups = (c->group_size > 0) ? (cols + c->group_size - 1) / c->group_size : 1;
    return (int64_t)c->bits * cols + per_group * groups;
}

double mpq_candidate_bits(const mpq_candidate *c, int64_t cols) {
    if (!c || cols <= 0) return 0.0;
    if (mpq_candidate_is_saq(c)) return c->rate; /* exact for every shape it can code */
    if (row_bits(c, cols) < 0) return (double)c->bits; /* absurd widths: nominal */
    return (double)row_bits(c, cols) / (double)cols;
}

int64_t mpq_candidate_matrix_bits(const mpq_candidate *c, int64_t rows, int64_t cols) {
    if (!c || rows <= 0 || cols <= 0) return 0;
    if (mpq_candidate_is_saq(c)) return mpq_saq_matrix_bits(c, rows, cols);
    if (c->type == MPQ_QTYPE_TCQ) {
        int64_t cb = mpq_tcq_code_bits(rows, cols, c->rate);
        if (cb < 0 || rows > (INT64_MAX - cb) / 16) return -1;
        return cb + 16 * rows;
    }
    int64_t rb = row_bits(c, cols);
    if (rb < 0 || rb > INT64_MAX / rows) return -1; /* overflow: not representable */
    return rb * rows;
}

double mpq_candidate_bits_matrix(const mpq_candidate *c, int64_t rows, int64_t cols) {
    if (!c || rows <= 0 || cols <= 0) return 0.0;
    int64_t t = mpq_candidate_matrix_bits(c, rows, cols);
    if (t < 0) return NAN;
    return (double)t / ((double)rows * (double)cols);
}

int64_t mpq_candidate_bytes(const mpq_candidate *c, int64_t rows, int64_t cols) {
    if (!c || rows <= 0 || cols <= 0) return 0;
    int64_t total = mpq_candidate_matrix_bits(c, rows, cols);
    if (total < 0) return -1;
    return total / 8 + (total % 8 != 0);
}
