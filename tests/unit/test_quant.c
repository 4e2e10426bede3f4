/*
 * test_quant.c - quantizer candidates (names, exact bits/bytes), fp16 rounding, the RTN
 * fake quantizers (int asym/sym, fp8 e4m3/e5m2, fp4 e2m1, nf4), CAQ code adjustment (suffix a
 * and the KV scheme flag) and KV pair naming/bits. The quantizers are shown on the real
 * stories260K weights, CAQ also on sotu-2.7M (../shared via MPQ_SHARED).
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec_kernels.h"
#include "mpq/mpq_calib.h"
#include "mpq/mpq_config.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "test_util.h"
#include "test_main.h"

/* Bits/bytes are ratios of small integers computed in double: exact to ~1 ulp of the value
 * (< 1e-14 for values below 64), so 1e-12 is a safe tolerance. */
#define BITS_TOL 1e-12

/* ---------------- candidate names ---------------- */

typedef struct good_case {
    const char *in;
    const char *canon;
    mpq_qtype type;
    int bits, group;
    bool sym;
} good_case;

static const good_case GOOD[] = {
    {"int4g128", "int4g128", MPQ_QTYPE_INT, 4, 128, false},
    {"int3g64s", "int3g64s", MPQ_QTYPE_INT, 3, 64, true},
    {"int2g32", "int2g32", MPQ_QTYPE_INT, 2, 32, false},
    {"int8c", "int8c", MPQ_QTYPE_INT, 8, 0, false},
    {"int8cs", "int8cs", MPQ_QTYPE_INT, 8, 0, true},
    {"int5g16", "int5g16", MPQ_QTYPE_INT, 5, 16, false},
    {"int6g256s", "int6g256s", MPQ_QTYPE_INT, 6, 256, true},
    {"int7c", "int7c", MPQ_QTYPE_INT, 7, 0, false},
    {"int3g32a", "int3g32a", MPQ_QTYPE_INT, 3, 32, false},
    {"int2g32sa", "int2g32sa", MPQ_QTYPE_INT, 2, 32, true},
    {"int8ca", "int8ca", MPQ_QTYPE_INT, 8, 0, false},
    {"int4csa", "int4csa", MPQ_QTYPE_INT, 4, 0, true},
    {"fp8e4m3", "fp8e4m3", MPQ_QTYPE_FP8_E4M3, 8, 0, true},
    {"fp8e4m3c", "fp8e4m3", MPQ_QTYPE_FP8_E4M3, 8, 0, true},
    {"fp8e5m2g32", "fp8e5m2g32", MPQ_QTYPE_FP8_E5M2, 8, 32, true},
    {"fp8e5m2", "fp8e5m2", MPQ_QTYPE_FP8_E5M2, 8, 0, true},
    {"fp4e2m1g32", "fp4e2m1g32", MPQ_QTYPE_FP4_E2M1, 4, 32, true},
    {"nf4g64", "nf4g64", MPQ_QTYPE_NF4, 4, 64, true},
    {"f16", "f16", MPQ_QTYPE_F16, 16, 0, true},
    {"f32", "f32", MPQ_QTYPE_F32, 32, 0, true},
};

START_TEST(test_parse_good) {
    const good_case *g = &GOOD[_i];
    mpq_candidate c, c2;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_candidate_parse(g->in, &c, &err), MPQ_OK);
    ck_assert_str_eq(c.name, g->canon);
    ck_assert_int_eq(c.type, g->type);
    ck_assert_int_eq(c.bits, g->bits);
    ck_assert_int_eq(c.group_size, g->group);
    ck_assert(c.symmetric == g->sym);
    /* suffix a (CAQ): int only, the last letter of the canonical name */
    ck_assert(c.adjust == (g->type == MPQ_QTYPE_INT && g->canon[strlen(g->canon) - 1] == 'a'));
    /* canonical names round-trip */
    ck_assert_int_eq(mpq_candidate_parse(c.name, &c2, &err), MPQ_OK);
    ck_assert_str_eq(c2.name, c.name);
    ck_assert_int_eq(c2.type, c.type);
    ck_assert_int_eq(c2.group_size, c.group_size);
    ck_assert(c2.adjust == c.adjust);
}
END_TEST

static const char *BAD[] = {
    "int1g32", "int9g32", "int4g0", "int4g7", "int4g128x", "int4", "int4g", "int10g32", "int4g032",
    "int4g512", "int4g48", "int4g128ss", "int4cs2", "", "garbage", "fp4e2m1", "nf4", "nf4c", "fp8e4m3s",
    "fp8e4m3g8", "f16x", "f8", "INT4G128", " int4g32", "int4g32 ", "fp8e3m4", "int-4g32", "int4g99999999999",
    "int3g32as", "int3g32aa", "int3a", "int3ga", "int3g32A", "fp8e4m3a", "nf4g32a", "fp4e2m1g32a", "f16a",
};

START_TEST(test_parse_bad) {
    const char *name = BAD[_i];
    mpq_candidate c;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_candidate_parse(name, &c, &err), MPQ_ERR_INVALID);
    char quoted[80];
    snprintf(quoted, sizeof quoted, "'%s'", name);
    ck_assert_msg(strstr(err.msg, quoted) != NULL, "message should name %s: %s", quoted, err.msg);
}
END_TEST

/* ---------------- exact bits and bytes ---------------- */

typedef struct bits_case {
    const char *name;
    int64_t rows, cols;
    double bits;   /* hand computed, see comment */
    int64_t bytes; /* ceil(rows * row_bits / 8) */
} bits_case;

static const bits_case BITS[] = {
    /* int4g128, 256 cols: 4*256 + 32*2 = 1088 bits/row = 4.25; 2 rows = 2176 bits = 272 B */
    {"int4g128", 2, 256, 4.25, 272},
    /* int4g128, 172 cols: ceil(172/128) = 2 groups: 4*172 + 64 = 752 bits -> 752/172;
     * 64 rows: 48128 bits = 6016 B */
    {"int4g128", 64, 172, 752.0 / 172.0, 6016},
    /* int4g128, 64 cols (< G): one group: 256 + 32 = 288 -> 4.5 */
    {"int4g128", 1, 64, 4.5, 36},
    /* int3g64s, 256 cols: 3 + 16/64 = 3.25; 3 rows: 3*832 = 2496 bits = 312 B */
    {"int3g64s", 3, 256, 3.25, 312},
    /* int3g64s, 5 cols: 15 + 16 = 31 bits/row; 3 rows = 93 bits -> 12 B (11.625 rounded up) */
    {"int3g64s", 3, 5, 31.0 / 5.0, 12},
    /* int2g32, 1x1: 2 + 32 = 34 bits -> 5 B */
    {"int2g32", 1, 1, 34.0, 5},
    /* int8c, 64 cols: 8 + 32/64 = 8.5; 64 rows: 64*544 = 34816 bits = 4352 B */
    {"int8c", 64, 64, 8.5, 4352},
    /* int8cs: 8 + 16/64 = 8.25 */
    {"int8cs", 64, 64, 8.25, 4224},
    /* fp8e4m3 per channel: 8 + 16/64 = 8.25 */
    {"fp8e4m3", 64, 64, 8.25, 4224},
    /* fp8e5m2g32: 8 + 16/32 = 8.5 */
    {"fp8e5m2g32", 64, 64, 8.5, 4352},
    /* fp4e2m1g32: 4 + 16/32 = 4.5; 172 cols: ceil(172/32) = 6 groups: 688 + 96 = 784 bits */
    {"fp4e2m1g32", 1, 64, 4.5, 36},
    {"fp4e2m1g32", 1, 172, 784.0 / 172.0, 98},
    /* nf4g64: 4 + 16/64 = 4.25 */
    {"nf4g64", 64, 64, 4.25, 2176},
    /* int5g16: 5 + 2 = 7; 3 rows x 16 = 336 bits = 42 B */
    {"int5g16", 3, 16, 7.0, 42},
    {"f16", 3, 5, 16.0, 30},
    {"f32", 3, 5, 32.0, 60},
};

START_TEST(test_bits_bytes) {
    const bits_case *b = &BITS[_i];
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse(b->name, &c, NULL), MPQ_OK);
    ck_assert_double_eq_tol(mpq_candidate_bits(&c, b->cols), b->bits, BITS_TOL);
    ck_assert_int_eq(mpq_candidate_bytes(&c, b->rows, b->cols), b->bytes);
}
END_TEST

START_TEST(test_bytes_edge) {
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse("f32", &c, NULL), MPQ_OK);
    ck_assert_int_eq(mpq_candidate_bytes(&c, 0, 10), 0);
    ck_assert_int_eq(mpq_candidate_bytes(&c, INT64_MAX / 2, INT64_MAX / 2), -1); /* overflow */
    ck_assert_double_eq_tol(mpq_candidate_bits(&c, 0), 0.0, BITS_TOL);
}
END_TEST

/* ---------------- fp16 ---------------- */

START_TEST(test_fp16_round) {
    /* fp16: 10 mantissa bits, ulp(1) = 2^-10, smallest subnormal 2^-24, max 65504. */
    ck_assert_float_eq(mpq_fp16_round(1.0f), 1.0f);
    ck_assert_float_eq(mpq_fp16_round(65504.0f), 65504.0f);
    ck_assert_float_eq(mpq_fp16_round(65519.0f), 65504.0f);
    ck_assert(isinf(mpq_fp16_round(65520.0f)));
    ck_assert_float_eq(mpq_fp16_round(1.0f / 3.0f), 0.333251953125f);
    ck_assert_float_eq(mpq_fp16_round(ldexpf(1.0f, -24)), ldexpf(1.0f, -24));
    ck_assert_float_eq(mpq_fp16_round(ldexpf(1.0f, -25)), 0.0f);                /* tie -> even (0) */
    ck_assert_float_eq(mpq_fp16_round(3.0f * ldexpf(1.0f, -25)), ldexpf(1.0f, -23)); /* 1.5 -> 2 */
    ck_assert_float_eq(mpq_fp16_round(1.0f + ldexpf(1.0f, -11)), 1.0f);          /* tie -> even */
    ck_assert_float_eq(mpq_fp16_round(1.0f + 3.0f * ldexpf(1.0f, -11)), 1.0f + ldexpf(1.0f, -9));
    ck_assert_float_eq(mpq_fp16_round(-2.0009765625f), -2.0f); /* 2 + ulp(2)/2 = tie -> even */
    ck_assert_float_eq(mpq_fp16_round(ldexpf(1.0f, -14)), ldexpf(1.0f, -14)); /* smallest normal */
    ck_assert(isnan(mpq_fp16_round(NAN)));
}
END_TEST

/* ---------------- minifloat / nf4 exactness ---------------- */

/* All finite non-negative OCP E4M3 values, generated from the definition independently of
 * the quantizer: subnormals k*2^-9 (k=1..7), normals (1+m/8)*2^e, e=-6..8, excluding
 * S.1111.111 (NaN) so the max is 1.75*2^8 = 448. */
static int e4m3_values(float *out) {
    int n = 0;
    out[n++] = 0.0f;
    for (int k = 1; k < 8; k++) out[n++] = ldexpf((float)k, -9);
    for (int e = -6; e <= 8; e++)
        for (int m = 0; m < 8; m++) {
            if (e == 8 && m == 7) continue;
            out[n++] = ldexpf(1.0f + m / 8.0f, e);
        }
    return n;
}

START_TEST(test_fp8_e4m3_exact) {
    float vals[128], w[256], orig[256];
    int n = e4m3_values(vals);
    ck_assert_int_eq(n, 127);
    ck_assert_float_eq(vals[n - 1], 448.0f);
    /* one row (per-channel group) holding +-v * 2^-3: absmax 56 = 448 * 0.125, so the fp16
     * scale is exactly 0.125 and every value is representable: Q must be the identity. */
    for (int i = 0; i < n; i++) {
        w[2 * i] = vals[i] * 0.125f;
        w[2 * i + 1] = -vals[i] * 0.125f;
    }
    memcpy(orig, w, sizeof w);
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse("fp8e4m3", &c, NULL), MPQ_OK);
    mpq_quantize_matrix(&c, w, 1, 2 * n);
    for (int i = 0; i < 2 * n; i++) ck_assert_float_eq(w[i], orig[i]);
    /* rounding with scale 1 (absmax 448): 17 -> 16 (tie to even at step 2), 19 -> 20,
     * 0.001 -> 2^-9 (subnormal), 500 is above the group max so it is not a case here. */
    float r[4] = {448.0f, 17.0f, 19.0f, 0.001f};
    mpq_quantize_matrix(&c, r, 1, 4);
    ck_assert_float_eq(r[0], 448.0f);
    ck_assert_float_eq(r[1], 16.0f);
    ck_assert_float_eq(r[2], 20.0f);
    ck_assert_float_eq(r[3], ldexpf(1.0f, -9));
}
END_TEST

START_TEST(test_fp8_e5m2_exact) {
    /* E5M2: normals (1+m/4)*2^e, e=-14..15, max 1.75*2^15 = 57344; subnormals k*2^-16. */
    float w[256], orig[256];
    int n = 0;
    for (int k = 1; k < 4; k++) w[n++] = ldexpf((float)k, -16);
    for (int e = -14; e <= 15; e++)
        for (int m = 0; m < 4; m++) w[n++] = ldexpf(1.0f + m / 4.0f, e);
    ck_assert_float_eq(w[n - 1], 57344.0f);
    /* scale 2^-14 (fp16-exact): absmax 57344 * 2^-14 = 3.5 */
    for (int i = 0; i < n; i++) w[i] = ldexpf(w[i], -14) * ((i & 1) ? -1.0f : 1.0f);
    w[n - 1] = fabsf(w[n - 1]);
    memcpy(orig, w, sizeof w);
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse("fp8e5m2", &c, NULL), MPQ_OK);
    mpq_quantize_matrix(&c, w, 1, n);
    for (int i = 0; i < n; i++) ck_assert_float_eq(w[i], orig[i]);
}
END_TEST

START_TEST(test_fp4_nf4_exact) {
    static const float FP4[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    float w[32], orig[32];
    /* one group of 32: the 16 signed fp4 values times 0.25 (absmax 1.5 -> scale 0.25), twice */
    for (int i = 0; i < 32; i++) w[i] = FP4[i % 8] * 0.25f * ((i / 8) % 2 ? -1.0f : 1.0f);
    memcpy(orig, w, sizeof w);
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse("fp4e2m1g32", &c, NULL), MPQ_OK);
    mpq_quantize_matrix(&c, w, 1, 32);
    for (int i = 0; i < 32; i++) ck_assert_float_eq(w[i], orig[i]);
    /* 2.5 is the midpoint of 2 and 3: ties to even mantissa -> 2; 5 (between 4 and 6) -> 4 */
    float r[3] = {6.0f, 2.5f, 5.0f};
    mpq_quantize_matrix(&c, r, 1, 3);
    ck_assert_float_eq(r[1], 2.0f);
    ck_assert_float_eq(r[2], 4.0f);

    /* NF4 levels (QLoRA appendix E, float32 values) times 0.5 */
    static const float NF4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                  -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                  0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                                  0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                                  0.7229568362236023f, 1.0f};
    float v[64], vo[64];
    for (int i = 0; i < 64; i++) v[i] = NF4[i % 16] * 0.5f;
    memcpy(vo, v, sizeof v);
    ck_assert_int_eq(mpq_candidate_parse("nf4g64", &c, NULL), MPQ_OK);
    mpq_quantize_matrix(&c, v, 1, 64);
    for (int i = 0; i < 64; i++) ck_assert_float_eq(v[i], vo[i]);
}
END_TEST

/* ---------------- degenerate groups ---------------- */

static const char *ALL_CANDS[] = {"int2g32", "int4g128", "int8c", "int3g32s", "int8cs", "fp8e4m3g32",
                                  "fp8e5m2", "fp4e2m1g32", "nf4g64", "f16", "f32", "int3g32a", "int4csa"};

START_TEST(test_degenerate) {
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse(ALL_CANDS[_i], &c, NULL), MPQ_OK);
    float z[70] = {0}, k[70];
    mpq_quantize_matrix(&c, z, 2, 35);
    for (int i = 0; i < 70; i++) ck_assert_float_eq(z[i], 0.0f);
    /* constant groups of 0.3: the group max maps to the top of the grid (fmax = qmax, 448,
     * 57344, 6, 1 for int, e4m3, e5m2, e2m1, nf4), so out = fmax * scale with
     * s0 = 0.3/fmax <= scale <= s0 + ulp16(s0) and ulp16(s0) <= max(s0*2^-10, 2^-24):
     * |out - 0.3| <= max(0.3*2^-10, fmax*2^-24). Asymmetric int keeps the fp16 floor of 0.3
     * (error <= ulp16(0.3) = 2^-12 < 0.3*2^-10); f16 rounds (<= 2^-13). */
    double fmx = 1.0;
    switch (c.type) {
    case MPQ_QTYPE_INT: fmx = c.symmetric ? (double)((1 << (c.bits - 1)) - 1) : 1.0; break;
    case MPQ_QTYPE_FP8_E4M3: fmx = 448.0; break;
    case MPQ_QTYPE_FP8_E5M2: fmx = 57344.0; break;
    case MPQ_QTYPE_FP4_E2M1: fmx = 6.0; break;
    default: fmx = 1.0; break;
    }
    double tol = fmax(0.3 * ldexp(1.0, -10), fmx * ldexp(1.0, -24));
    for (int i = 0; i < 70; i++) k[i] = (i < 35) ? 0.3f : -1e-30f;
    mpq_quantize_matrix(&c, k, 2, 35);
    for (int i = 0; i < 35; i++) {
        ck_assert(isfinite(k[i]));
        ck_assert_double_eq_tol(k[i], 0.3, tol);
    }
    for (int i = 35; i < 70; i++) {
        ck_assert(isfinite(k[i]));
        ck_assert_double_eq_tol(k[i], 0.0, ldexp(1.0, -24)); /* tiny values: at most one fp16 subnormal */
    }
    /* rtn_minmax on an all-equal strided group */
    float s[9] = {2, 9, 9, 2, 9, 9, 2, 9, 9};
    mpq_quant_rtn_minmax(s, 3, 3, 2);
    ck_assert_float_eq(s[0], 2.0f);
    ck_assert_float_eq(s[3], 2.0f);
    ck_assert_float_eq(s[1], 9.0f); /* untouched (not in the strided group) */
}
END_TEST

START_TEST(test_rtn_minmax_strided) {
    /* 4 values at stride 2, 2 bits: min 0, max 3 -> scale 1 (fp16 exact), levels 0..3 */
    float x[8] = {0.0f, 100.0f, 1.4f, 100.0f, 2.6f, 100.0f, 3.0f, 100.0f};
    mpq_quant_rtn_minmax(x, 4, 2, 2);
    ck_assert_float_eq(x[0], 0.0f);
    ck_assert_float_eq(x[2], 1.0f);
    ck_assert_float_eq(x[4], 3.0f);
    ck_assert_float_eq(x[6], 3.0f);
    ck_assert_float_eq(x[1], 100.0f);
    float y[3] = {0.1f, 0.2f, 0.3f};
    mpq_quant_rtn_minmax(y, 3, 1, 16); /* >= 16 bits: unchanged */
    ck_assert_float_eq(y[1], 0.2f);
}
END_TEST

/* ---------------- real model ---------------- */

static mpq_model *g_model;

static void model_setup(void) {
    mpq_err err = {0};
    if (mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &g_model, &err) != MPQ_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        g_model = NULL;
    }
}

static void model_teardown(void) {
    mpq_model_free(g_model);
    g_model = NULL;
}

/* ||Q(W) - W||_F^2 of layer li for candidate name */
static double layer_err(const mpq_layer_info *li, const char *name) {
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse(name, &c, NULL), MPQ_OK);
    const float *w = mpq_weights_linear(mpq_model_get_weights(g_model), li);
    size_t n = (size_t)li->n_params;
    float *q = malloc(n * sizeof *q);
    ck_assert_ptr_nonnull(q);
    memcpy(q, w, n * sizeof *q);
    mpq_quantize_matrix(&c, q, li->rows, li->cols);
    double e = 0.0;
    for (size_t i = 0; i < n; i++) e += ((double)q[i] - w[i]) * ((double)q[i] - w[i]);
    free(q);
    return e;
}

START_TEST(test_real_monotone_bits) {
    ck_assert_ptr_nonnull(g_model);
    int nl = mpq_model_n_linear(g_model);
    ck_assert_int_eq(nl, 35); /* 5 blocks x 7 linear layers */
    static const char *G32[] = {"int2g32", "int3g32", "int4g32", "int8g32"};
    static const char *G128[] = {"int2g128", "int3g128", "int4g128", "int8g128"};
    static const char *SYM[] = {"int2g32s", "int3g32s", "int4g32s", "int8g32s"};
    double sum32[4] = {0}, sum128[4] = {0};
    int per_layer_g32_le_g128 = 0;
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(g_model, i);
        double e32[4], e128[4], es[4];
        for (int b = 0; b < 4; b++) {
            e32[b] = layer_err(li, G32[b]);
            e128[b] = layer_err(li, G128[b]);
            es[b] = layer_err(li, SYM[b]);
            sum32[b] += e32[b];
            sum128[b] += e128[b];
            if (e32[b] <= e128[b]) per_layer_g32_le_g128++;
            /* finer groups never lose on these weights (checked: holds for all 140 cases) */
            ck_assert_msg(e32[b] <= e128[b], "%s: %s %g > %s %g", li->name, G32[b], e32[b], G128[b], e128[b]);
        }
        for (int b = 0; b + 1 < 4; b++) {
            ck_assert_msg(e32[b] > e32[b + 1], "%s: %s %g <= %s %g", li->name, G32[b], e32[b], G32[b + 1],
                          e32[b + 1]);
            ck_assert_msg(e128[b] > e128[b + 1], "%s: %s", li->name, G128[b]);
            ck_assert_msg(es[b] > es[b + 1], "%s: %s", li->name, SYM[b]);
        }
    }
    for (int b = 0; b < 4; b++) ck_assert_msg(sum32[b] <= sum128[b], "%s sum %g > %s sum %g", G32[b], sum32[b],
                                              G128[b], sum128[b]);
    printf("stories260K sum ||Q(W)-W||^2 over 35 layers: g32 int2 %.6g int3 %.6g int4 %.6g int8 %.6g | "
           "g128 int2 %.6g int3 %.6g int4 %.6g int8 %.6g | g32<=g128 per layer in %d of %d cases\n",
           sum32[0], sum32[1], sum32[2], sum32[3], sum128[0], sum128[1], sum128[2], sum128[3],
           per_layer_g32_le_g128, 4 * nl);
}
END_TEST

START_TEST(test_real_formats) {
    ck_assert_ptr_nonnull(g_model);
    static const char *NAMES[] = {"int4g32", "int4g32s", "nf4g32", "fp4e2m1g32", "fp8e4m3g32", "fp8e5m2g32",
                                  "int8c", "fp8e4m3", "f16"};
    enum { NN = sizeof NAMES / sizeof NAMES[0] };
    double sum[NN] = {0};
    for (int i = 0; i < mpq_model_n_linear(g_model); i++)
        for (int k = 0; k < NN; k++) sum[k] += layer_err(mpq_model_linear(g_model, i), NAMES[k]);
    printf("stories260K sum ||Q(W)-W||^2:");
    for (int k = 0; k < NN; k++) printf(" %s %.6g", NAMES[k], sum[k]);
    printf("\n");
    /* 8-bit formats beat 4-bit ones; e4m3 (3 mantissa bits) beats e5m2 (2); f16 is nearly lossless */
    ck_assert(sum[4] < sum[0] && sum[4] < sum[2] && sum[4] < sum[3]);
    ck_assert(sum[4] < sum[5]);
    ck_assert(sum[8] < sum[6]);
    /* NF4 is designed for normal-like weights: on real weights it beats the fp4 grid */
    ck_assert(sum[2] < sum[3]);
}
END_TEST

/* Per-element error bound for asymmetric int<N> on one group [lo, hi] (see quant.c):
 * zero = fp16 floor of lo, so hi - zero <= (hi - lo) + ulp16(lo) with ulp16(x) <= |x|*2^-10 + 2^-24;
 * s0 = (hi - zero)/qmax; the stored scale is fp16(s0), bumped up at most to the next fp16 value,
 * so scale <= s0*(1 + 2^-10) + 2^-24. Each element is within scale/2 of a grid point, plus
 * float rounding of zero + q*scale (a few ulps of max(|lo|, |hi|)). */
static double asym_bound(double lo, double hi, int bits) {
    double qmax = (double)((1 << bits) - 1);
    double s0 = ((hi - lo) + fabs(lo) * ldexp(1.0, -10) + ldexp(1.0, -24)) / qmax;
    double scale = s0 * (1.0 + ldexp(1.0, -10)) + ldexp(1.0, -24);
    return 0.5 * scale + 4.0 * FLT_EPSILON * fmax(fabs(lo), fabs(hi));
}

START_TEST(test_real_group_properties) {
    ck_assert_ptr_nonnull(g_model);
    static const char *NAMES[] = {"int2g32", "int3g64", "int4g128", "int8g32", "int4c", "int3g32s", "int4g64s",
                                  "int8cs"};
    const mpq_weights *W = mpq_model_get_weights(g_model);
    for (size_t k = 0; k < sizeof NAMES / sizeof NAMES[0]; k++) {
        mpq_candidate c;
        ck_assert_int_eq(mpq_candidate_parse(NAMES[k], &c, NULL), MPQ_OK);
        for (int i = 0; i < mpq_model_n_linear(g_model); i++) {
            const mpq_layer_info *li = mpq_model_linear(g_model, i);
            size_t n = (size_t)li->n_params;
            const float *w = mpq_weights_linear(W, li);
            float *q = malloc(n * sizeof *q), *qq = malloc(n * sizeof *qq);
            ck_assert_ptr_nonnull(q);
            ck_assert_ptr_nonnull(qq);
            memcpy(q, w, n * sizeof *q);
            mpq_quantize_matrix(&c, q, li->rows, li->cols);
            memcpy(qq, q, n * sizeof *q);
            mpq_quantize_matrix(&c, qq, li->rows, li->cols);
            int64_t g = c.group_size > 0 && c.group_size < li->cols ? c.group_size : li->cols;
            for (int64_t r = 0; r < li->rows; r++)
                for (int64_t j0 = 0; j0 < li->cols; j0 += g) {
                    int64_t len = li->cols - j0 < g ? li->cols - j0 : g;
                    const float *wg = w + r * li->cols + j0;
                    const float *qg = q + r * li->cols + j0;
                    const float *qqg = qq + r * li->cols + j0;
                    double lo = wg[0], hi = wg[0], amax = 0;
                    for (int64_t t = 0; t < len; t++) {
                        lo = fmin(lo, wg[t]);
                        hi = fmax(hi, wg[t]);
                        amax = fmax(amax, fabs(wg[t]));
                    }
                    /* distinct output values per group: <= 2^N (asym), <= 2^N - 1 (sym) */
                    float seen[256];
                    int nseen = 0;
                    for (int64_t t = 0; t < len; t++) {
                        int f = 0;
                        for (int s = 0; s < nseen && !f; s++) f = (seen[s] == qg[t]);
                        if (!f) {
                            ck_assert_int_lt(nseen, 256);
                            seen[nseen++] = qg[t];
                        }
                    }
                    ck_assert_int_le(nseen, c.symmetric ? (1 << c.bits) - 1 : (1 << c.bits));
                    for (int64_t t = 0; t < len; t++) {
                        /* idempotent: the second pass finds the same fp16 zero (an output
                         * value, already fp16) and the same fp16 scale (the range of the
                         * outputs is qmax*scale up to float rounding, far below half an fp16
                         * ulp of the scale), so every code is reproduced exactly. */
                        ck_assert_msg(qqg[t] == qg[t], "%s %s: Q(Q(w)) %.9g != Q(w) %.9g", NAMES[k], li->name,
                                      qqg[t], qg[t]);
                        double bound;
                        if (c.symmetric) {
                            /* scale <= fp16 bump of absmax/qmax: same derivation as asym_bound */
                            double qmax = (double)((1 << (c.bits - 1)) - 1);
                            bound = 0.5 * ((amax / qmax) * (1.0 + ldexp(1.0, -10)) + ldexp(1.0, -24)) +
                                    4.0 * FLT_EPSILON * amax;
                        } else {
                            bound = asym_bound(lo, hi, c.bits);
                        }
                        ck_assert_msg(fabs((double)qg[t] - wg[t]) <= bound, "%s %s: |Q(w)-w| %g > bound %g",
                                      NAMES[k], li->name, fabs((double)qg[t] - wg[t]), bound);
                    }
                }
            /* symmetric grid contains 0: an exact zero weight stays exactly zero */
            if (c.symmetric) {
                float z[3] = {(float)w[0], 0.0f, -(float)w[0]};
                mpq_quantize_matrix(&c, z, 1, 3);
                ck_assert_float_eq(z[1], 0.0f);
                ck_assert_float_eq(z[0], -z[2]);
            }
            free(q);
            free(qq);
        }
    }
}
END_TEST

/* ---------------- independent reference (README "Exact quantizer conventions") ----------
 * A second, plain scalar implementation written from the README's text, not from quant.c:
 * fp16 values via frexp/ldexp instead of bit manipulation, round-half-to-even via floor
 * instead of rint, groups and formulas as the README states them. test_reference_bits
 * compares it with mpq_quantize_matrix bit for bit on every layer of stories260K. */

/* floor(log2 a) of a > 0 as a binary16 binade: at least -14 (subnormals share it) */
static int ref_f16_exp(double a) {
    int e;
    (void)frexp(a, &e);
    return e - 1 < -14 ? -14 : e - 1;
}

static double ref_f16_ulp(double a) { return ldexp(1.0, ref_f16_exp(a) - 10); }

/* round half to even of r (r finite), without rint; a negative r rounding to 0 gives -0 */
static double ref_rne(double r) {
    double f = floor(r), frac = r - f, q;
    if (frac > 0.5) q = f + 1.0;
    else if (frac < 0.5) q = f;
    else q = fmod(f, 2.0) == 0.0 ? f : f + 1.0;
    return (q == 0.0 && r < 0.0) ? -0.0 : q;
}

/* fp16(x): nearest binary16, ties to even; infinity from 65520 on */
static double ref_fp16(double x) {
    double a = fabs(x);
    if (a == 0.0 || a != a) return x;
    double u = ref_f16_ulp(a), r = ref_rne(a / u) * u;
    if (r > 65504.0) r = INFINITY;
    return x < 0 ? -r : r;
}

/* largest binary16 <= v, clamped to +-65504 */
static double ref_fp16_floor(double v) {
    if (v > 65504.0) return 65504.0;
    if (v < -65504.0) return -65504.0;
    if (v == 0.0) return v;
    double a = fabs(v), u = ref_f16_ulp(a);
    return v > 0 ? floor(a / u) * u : -(ceil(a / u) * u);
}

/* next binary16 above s >= 0 */
static double ref_fp16_next_up(double s) { return s == 0.0 ? ldexp(1.0, -24) : s + ref_f16_ulp(s); }

/* the README's scale rule for the integer grids: fp16 of (float)need clamped to 65504, the
 * smallest subnormal if that is 0 while need > 0, then bumped while base + qmax*scale < top */
static float ref_int_scale(double need, float base, float qmax, float top, int *bumped) {
    float f = (float)need;
    float s = (float)ref_fp16(f > 65504.0f ? 65504.0f : f);
    if (need > 0.0 && s == 0.0f) s = (float)ldexp(1.0, -24);
    for (int i = 0; i < 64 && s < 65504.0f; i++) {
        float t = qmax * s;
        float reach = base + t;
        if (!(reach < top)) break;
        s = (float)ref_fp16_next_up(s);
        (*bumped)++;
    }
    return s;
}

typedef struct ref_counts {
    long groups, bumped, zero_below_min; /* groups; scales bumped; zeros strictly below the min */
} ref_counts;

static void ref_int_asym(float *x, int64_t n, int bits, ref_counts *rc) {
    float lo = x[0], hi = x[0];
    for (int64_t i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    float qmax = (float)((1 << bits) - 1);
    float zero = (float)ref_fp16_floor(lo);
    int bumped = 0;
    float scale = ref_int_scale(((double)hi - (double)zero) / qmax, zero, qmax, hi, &bumped);
    rc->groups++;
    rc->bumped += bumped > 0;
    rc->zero_below_min += zero < lo;
    for (int64_t i = 0; i < n; i++) {
        if (scale == 0.0f) {
            x[i] = zero;
            continue;
        }
        float d = x[i] - zero;
        float r = d / scale;
        float q = (float)ref_rne(r);
        if (q < 0.0f) q = 0.0f;
        if (q > qmax) q = qmax;
        float t = q * scale;
        x[i] = zero + t;
    }
}

static void ref_int_sym(float *x, int64_t n, int bits, ref_counts *rc) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
    float qmax = (float)((1 << (bits - 1)) - 1);
    int bumped = 0;
    float scale = ref_int_scale((double)amax / qmax, 0.0f, qmax, amax, &bumped);
    rc->groups++;
    rc->bumped += bumped > 0;
    for (int64_t i = 0; i < n; i++) {
        if (scale == 0.0f) {
            x[i] = 0.0f;
            continue;
        }
        float r = x[i] / scale;
        float q = (float)ref_rne(r);
        if (q < -qmax) q = -qmax;
        if (q > qmax) q = qmax;
        x[i] = q * scale;
    }
}

/* README table: E4M3 m 3 emin -6 max 448; E5M2 m 2 emin -14 max 57344; E2M1 m 1 emin 0 max 6 */
static void ref_minifloat(float *x, int64_t n, int m, int emin, double max, ref_counts *rc) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
    float scale = (float)ref_fp16((double)(float)((double)amax / max));
    if (amax > 0.0f && scale == 0.0f) scale = (float)ldexp(1.0, -24);
    int bumped = 0;
    for (int i = 0; i < 64 && scale < 65504.0f && (double)amax / scale > max; i++, bumped++)
        scale = (float)ref_fp16_next_up(scale);
    rc->groups++;
    rc->bumped += bumped > 0;
    for (int64_t i = 0; i < n; i++) {
        if (scale == 0.0f) {
            x[i] = 0.0f;
            continue;
        }
        double y = (double)x[i] / scale, a = fabs(y), r = 0.0;
        if (a > 0.0) {
            int e = ilogb(a);
            if (e < emin) e = emin;
            double step = ldexp(1.0, e - m);
            r = ref_rne(a / step) * step;
            if (r > max) r = max;
        }
        x[i] = (float)((y < 0 ? -r : r) * scale);
    }
}

static const double REF_NF4[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};

static void ref_nf4(float *x, int64_t n, ref_counts *rc) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
    /* the smallest binary16 >= amax (amax <= 65504 here) */
    double scale = 0.0;
    if (amax > 0.0f) {
        double u = ref_f16_ulp(amax);
        scale = ceil((double)amax / u) * u;
    }
    rc->groups++;
    rc->bumped += scale != ref_fp16(amax);
    for (int64_t i = 0; i < n; i++) {
        if (scale == 0.0) {
            x[i] = 0.0f;
            continue;
        }
        double y = (double)x[i] / (double)(float)scale;
        int k = 15;
        for (int j = 0; j < 15; j++)
            if (y <= 0.5 * (REF_NF4[j] + REF_NF4[j + 1])) {
                k = j;
                break;
            }
        x[i] = (float)(REF_NF4[k] * (double)(float)scale);
    }
}

/* CAQ (README, "CAQ code adjustment, suffix a"), written from the README's five steps. */
typedef struct caq_info {
    bool adjusted;          /* steps 2-4 ran (not an early base result) */
    bool kept_base;         /* the group ended with the base result */
    int steps;              /* accepted +-1 steps */
    double f_start, f_end;  /* criterion D / sqrt(W) of the RTN codes and of the final codes */
    double e_base, e_final; /* squared error of the base result and of the group's result */
    double e_fit, e_fit_tol;/* least-squares refit of the final codes before fp16 rounding, and a
                               bound on how far below e_base float rounding of r can put it */
} caq_info;

static void ref_int_caq(float *x, int64_t n, int bits, bool sym, caq_info *ci) {
    memset(ci, 0, sizeof *ci);
    float qmax = sym ? (float)((1 << (bits - 1)) - 1) : (float)((1 << bits) - 1);
    float zero = 0.0f, scale;
    int bumped = 0;
    if (sym) {
        float amax = 0.0f;
        for (int64_t i = 0; i < n; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
        scale = ref_int_scale((double)amax / qmax, 0.0f, qmax, amax, &bumped);
    } else {
        float lo = x[0], hi = x[0];
        for (int64_t i = 1; i < n; i++) {
            if (x[i] < lo) lo = x[i];
            if (x[i] > hi) hi = x[i];
        }
        zero = (float)ref_fp16_floor(lo);
        scale = ref_int_scale(((double)hi - (double)zero) / qmax, zero, qmax, hi, &bumped);
    }
    /* step 1: integer codes and the base result */
    int *q = malloc((size_t)n * sizeof *q);
    float *r = malloc((size_t)n * sizeof *r);
    ck_assert(q && r);
    for (int64_t i = 0; i < n; i++) {
        if (scale == 0.0f) {
            q[i] = 0;
            r[i] = sym ? 0.0f : zero;
            continue;
        }
        float d = sym ? x[i] : x[i] - zero;
        float qq = (float)ref_rne(d / scale);
        float lo_code = sym ? -qmax : 0.0f;
        if (!(qq >= lo_code)) qq = lo_code;
        if (qq > qmax) qq = qmax;
        q[i] = (int)qq;
        float t = qq * scale;
        r[i] = sym ? t : zero + t;
    }
    for (int64_t i = 0; i < n; i++) {
        double e = (double)x[i] - (double)r[i];
        ci->e_base += e * e;
        /* r_i = fl(zero + fl(q*scale)): each rounding moves it by at most half an ulp of
         * magnitudes <= |zero| + |q*scale|, so by <= u_i = ulp(|zero| + |q*scale|) in all */
        double u = ldexp(1.0, ilogb(fabs((double)zero) + fabs((double)q[i] * scale) + 1e-300) - 23);
        ci->e_fit_tol += 2.0 * fabs(e) * u + u * u;
    }
    ci->e_fit_tol += 1e-12 * ci->e_base;
    bool caq = scale > 0.0f && bits <= 8;
    double m = 0.0, D = 0.0;
    int64_t S1 = 0, S2 = 0, W = 0;
    float s16 = 0.0f, z16 = 0.0f;
    if (caq) { /* step 2 */
        if (!sym) {
            for (int64_t i = 0; i < n; i++) m += (double)x[i];
            m /= (double)n;
        }
        for (int64_t i = 0; i < n; i++) {
            S1 += q[i];
            S2 += (int64_t)q[i] * q[i];
            D += ((double)x[i] - m) * (double)q[i];
        }
        W = sym ? S2 : n * S2 - S1 * S1;
        caq = W > 0 && D > 0.0;
    }
    if (caq) { /* step 3 */
        ci->adjusted = true;
        double f = D / sqrt((double)W);
        ci->f_start = f;
        int lo_code = sym ? -(int)qmax : 0;
        for (int round = 0; round < 6; round++) {
            int taken = 0;
            for (int64_t i = 0; i < n; i++) {
                double c = (double)x[i] - m;
                const int steps[2] = {1, -1};
                for (int k = 0; k < 2; k++) {
                    int t = steps[k];
                    if (q[i] + t < lo_code || q[i] + t > (int)qmax) continue;
                    double D2 = t > 0 ? D + c : D - c;
                    int64_t S1b = S1 + t, S2b = S2 + 2 * t * (int64_t)q[i] + 1;
                    int64_t W2 = sym ? S2b : n * S2b - S1b * S1b;
                    if (W2 <= 0) continue;
                    double f2 = D2 / sqrt((double)W2);
                    if (f2 > f) {
                        q[i] += t;
                        D = D2, S1 = S1b, S2 = S2b, f = f2;
                        taken++;
                        break;
                    }
                }
            }
            ci->steps += taken;
            if (taken == 0) break;
        }
        /* step 4 */
        S1 = S2 = 0;
        D = 0.0;
        for (int64_t i = 0; i < n; i++) {
            S1 += q[i];
            S2 += (int64_t)q[i] * q[i];
            D += ((double)x[i] - m) * (double)q[i];
        }
        W = sym ? S2 : n * S2 - S1 * S1;
        ci->f_end = D / sqrt((double)W);
        double s = sym ? D / (double)S2 : D * (double)n / (double)W;
        double zfit = sym ? 0.0 : m - s * ((double)S1 / (double)n);
        for (int64_t i = 0; i < n; i++) {
            double e = (double)x[i] - (zfit + s * q[i]);
            ci->e_fit += e * e;
        }
        float sf = (float)s;
        s16 = (float)ref_fp16(sf > 65504.0f ? 65504.0f : sf);
        caq = s16 > 0.0f;
        if (caq && !sym) {
            float z = (float)(m - (double)s16 * ((double)S1 / (double)n));
            if (z > 65504.0f) z = 65504.0f;
            if (z < -65504.0f) z = -65504.0f;
            z16 = (float)ref_fp16(z);
        }
    }
    float *y = r;
    if (caq) { /* step 5 */
        float *yy = malloc((size_t)n * sizeof *yy);
        ck_assert_ptr_nonnull(yy);
        double e_caq = 0.0;
        for (int64_t i = 0; i < n; i++) {
            float t = (float)q[i] * s16;
            yy[i] = sym ? t : z16 + t;
            e_caq += ((double)x[i] - (double)yy[i]) * ((double)x[i] - (double)yy[i]);
        }
        if (e_caq < ci->e_base) {
            y = yy;
            ci->e_final = e_caq;
        } else {
            free(yy);
        }
    }
    ci->kept_base = y == r;
    if (ci->kept_base) ci->e_final = ci->e_base;
    memcpy(x, y, (size_t)n * sizeof *x);
    if (y != r) free(y);
    free(r);
    free(q);
}

/* The README's group layout: groups of G along each row from column 0, the last one
 * partial; one group per row for per-channel or G >= cols. */
static void ref_quantize(const mpq_candidate *c, float *w, int64_t rows, int64_t cols, ref_counts *rc) {
    if (c->type == MPQ_QTYPE_F32) return;
    if (c->type == MPQ_QTYPE_F16) {
        for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)ref_fp16(w[i]);
        return;
    }
    int64_t G = (c->group_size == 0 || c->group_size >= cols) ? cols : c->group_size;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j0 = 0; j0 < cols; j0 += G) {
            float *g = w + r * cols + j0;
            int64_t len = cols - j0 < G ? cols - j0 : G;
            switch (c->type) {
            case MPQ_QTYPE_INT:
                if (c->adjust) {
                    caq_info ci;
                    ref_int_caq(g, len, c->bits, c->symmetric, &ci);
                    rc->groups++;
                } else if (c->symmetric) ref_int_sym(g, len, c->bits, rc);
                else ref_int_asym(g, len, c->bits, rc);
                break;
            case MPQ_QTYPE_FP8_E4M3: ref_minifloat(g, len, 3, -6, 448.0, rc); break;
            case MPQ_QTYPE_FP8_E5M2: ref_minifloat(g, len, 2, -14, 57344.0, rc); break;
            case MPQ_QTYPE_FP4_E2M1: ref_minifloat(g, len, 1, 0, 6.0, rc); break;
            case MPQ_QTYPE_NF4: ref_nf4(g, len, rc); break;
            default: break;
            }
        }
}

START_TEST(test_reference_bits) {
    ck_assert_ptr_nonnull(g_model);
    /* every family, every group size, partial groups (ffn_down rows are 172 = 5*32 + 12 wide),
     * per channel, and G >= cols (G = 256 on 64- and 172-wide rows) */
    static const char *NAMES[] = {"int2g32", "int3g64", "int4g128", "int8g16", "int4c", "int5g256", "int6g32",
                                  "int7g64", "int2g16s", "int3g32s", "int4cs", "int8g64s", "fp8e4m3", "fp8e4m3g16",
                                  "fp8e5m2g32", "fp8e5m2", "fp4e2m1g32", "fp4e2m1g128", "nf4g64", "nf4g16",
                                  "nf4g256", "f16", "f32", "int2g32a", "int3g64a", "int4ca", "int8g16a",
                                  "int3g32sa", "int2csa"};
    const mpq_weights *W = mpq_model_get_weights(g_model);
    for (size_t k = 0; k < sizeof NAMES / sizeof NAMES[0]; k++) {
        mpq_candidate c;
        ck_assert_int_eq(mpq_candidate_parse(NAMES[k], &c, NULL), MPQ_OK);
        ref_counts rc = {0, 0, 0};
        long changed = 0, n_total = 0;
        for (int i = 0; i < mpq_model_n_linear(g_model); i++) {
            const mpq_layer_info *li = mpq_model_linear(g_model, i);
            size_t n = (size_t)li->n_params;
            const float *w = mpq_weights_linear(W, li);
            float *q = malloc(n * sizeof *q), *r = malloc(n * sizeof *r);
            ck_assert_ptr_nonnull(q);
            ck_assert_ptr_nonnull(r);
            memcpy(q, w, n * sizeof *q);
            memcpy(r, w, n * sizeof *r);
            mpq_quantize_matrix(&c, q, li->rows, li->cols);
            ref_quantize(&c, r, li->rows, li->cols, &rc);
            for (size_t t = 0; t < n; t++) { /* plain compare: a ck_assert per element costs a mark point */
                if (memcmp(&q[t], &r[t], sizeof(float)) != 0)
                    ck_abort_msg("%s %s element %zu (row %zu col %zu): mpq %a, README reference %a (w %a)", NAMES[k],
                                 li->name, t, t / (size_t)li->cols, t % (size_t)li->cols, (double)q[t], (double)r[t],
                                 (double)w[t]);
                changed += q[t] != w[t];
            }
            n_total += (long)n;
            /* bits/weight and bytes from the README formula */
            int64_t C = li->cols, G = c.group_size > 0 ? c.group_size : C;
            int64_t o = c.type == MPQ_QTYPE_INT && !c.symmetric ? 32 : 16;
            int64_t row_bits = c.bits >= 16 ? (int64_t)c.bits * C : (int64_t)c.bits * C + o * ((C + G - 1) / G);
            ck_assert_double_eq_tol(mpq_candidate_bits(&c, C), (double)row_bits / (double)C, BITS_TOL);
            ck_assert_int_eq(mpq_candidate_bytes(&c, li->rows, C), (li->rows * row_bits + 7) / 8);
            free(q);
            free(r);
        }
        if (c.type != MPQ_QTYPE_F32) ck_assert_int_gt(changed, 0);
        printf("README reference == mpq bit for bit: %-12s %7ld weights (%ld changed), %5ld groups, %ld scales "
               "bumped, %ld zeros below the min\n",
               NAMES[k], n_total, changed, rc.groups, rc.bumped, rc.zero_below_min);
    }
}
END_TEST

/* ---------------- CAQ (suffix a) ---------------- */

/* splitmix64 and Box-Muller: reproducible test vectors */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) * 0x1.0p-53; }
static double rng_gauss(uint64_t *s) {
    double u = rng_unif(s), v = rng_unif(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* one test vector of kind k: 0 Gaussian, 1 Gaussian + offset, 2 heavy tail (t-like), 3 uniform */
static void rand_vec(float *x, int n, int kind, uint64_t *s) {
    double off = kind == 1 ? 3.0 * rng_gauss(s) : 0.0, sc = 0.01 + rng_unif(s);
    for (int i = 0; i < n; i++) {
        double v = rng_gauss(s);
        if (kind == 2) v /= sqrt(0.05 + rng_unif(s));
        if (kind == 3) v = 2.0 * rng_unif(s) - 1.0;
        x[i] = (float)(sc * (v + off));
    }
}

START_TEST(test_caq_bits_equal_base) {
    /* same stored fields: bits and bytes of every int candidate with a equal the base's */
    static const char *BASE[] = {"int2g16", "int3g32", "int4g128", "int8g256", "int5c", "int3g64s", "int8cs"};
    static const int64_t COLS[] = {1, 5, 64, 172, 4096};
    for (size_t k = 0; k < sizeof BASE / sizeof BASE[0]; k++) {
        char name[32];
        snprintf(name, sizeof name, "%sa", BASE[k]);
        mpq_candidate b, a;
        ck_assert_int_eq(mpq_candidate_parse(BASE[k], &b, NULL), MPQ_OK);
        ck_assert_int_eq(mpq_candidate_parse(name, &a, NULL), MPQ_OK);
        ck_assert_str_eq(a.name, name);
        ck_assert(a.adjust && !b.adjust);
        for (size_t j = 0; j < sizeof COLS / sizeof COLS[0]; j++) {
            ck_assert_double_eq(mpq_candidate_bits(&a, COLS[j]), mpq_candidate_bits(&b, COLS[j]));
            ck_assert_int_eq(mpq_candidate_bytes(&a, 7, COLS[j]), mpq_candidate_bytes(&b, 7, COLS[j]));
        }
    }
}
END_TEST

START_TEST(test_caq_random) {
    /* Random vectors (4 kinds x lengths 8/32/64/100 x bits 2/3/4/8 x asym/sym, 200 each):
     * - mpq_quantize_matrix equals the README reference bit for bit;
     * - the adjustment never lowers the criterion (the cosine) of its starting RTN code;
     * - the result's squared error is <= RTN's (guard, exact) and the least-squares refit of the
     *   final codes before fp16 rounding is <= RTN's up to e_fit_tol: the float rounding of the
     *   RTN reconstruction (derived in ref_int_caq) plus 1e-12 relative for the double sums. */
    static const int LEN[] = {8, 32, 64, 100};
    static const int BITS_[] = {2, 3, 4, 8};
    uint64_t seed = 12345;
    long n_groups = 0, n_adj = 0, n_base = 0, fit_over = 0;
    double sum_base = 0, sum_final = 0;
    float x[100], y[100], w[100];
    for (int sym = 0; sym < 2; sym++)
        for (size_t bi = 0; bi < 4; bi++)
            for (size_t li = 0; li < 4; li++)
                for (int rep = 0; rep < 200; rep++) {
                    int n = LEN[li], bits = BITS_[bi];
                    rand_vec(x, n, rep % 4, &seed);
                    char name[32];
                    snprintf(name, sizeof name, "int%dc%sa", bits, sym ? "s" : "");
                    mpq_candidate c;
                    ck_assert_int_eq(mpq_candidate_parse(name, &c, NULL), MPQ_OK);
                    memcpy(y, x, sizeof x);
                    memcpy(w, x, sizeof x);
                    mpq_quantize_matrix(&c, y, 1, n);
                    caq_info ci;
                    ref_int_caq(w, n, bits, sym, &ci);
                    for (int i = 0; i < n; i++)
                        if (memcmp(&y[i], &w[i], sizeof(float)) != 0)
                            ck_abort_msg("%s n %d rep %d element %d: mpq %a, README reference %a", name, n, rep, i,
                                         (double)y[i], (double)w[i]);
                    ck_assert_msg(ci.adjusted, "%s n %d rep %d: no adjustment on a random vector", name, n, rep);
                    ck_assert_msg(ci.f_end >= ci.f_start, "%s: criterion fell %.17g -> %.17g", name, ci.f_start,
                                  ci.f_end);
                    ck_assert_msg(ci.e_final <= ci.e_base, "%s: error %.17g > RTN %.17g", name, ci.e_final, ci.e_base);
                    fit_over += ci.e_fit > ci.e_base + ci.e_fit_tol;
                    n_groups++;
                    n_adj += ci.steps > 0;
                    n_base += ci.kept_base;
                    sum_base += ci.e_base;
                    sum_final += ci.e_final;
                }
    printf("CAQ on %ld random vectors: codes adjusted in %ld, RTN kept (fp16 guard) in %ld, refit above RTN in %ld; "
           "sum error / RTN = %.4f\n",
           n_groups, n_adj, n_base, fit_over, sum_final / sum_base);
    ck_assert_int_eq(fit_over, 0);
    ck_assert(sum_final < sum_base);
}
END_TEST

/* max over all 4^8 (asym, B = 2) or 3^8 (sym int2: -1, 0, 1) code vectors of D / sqrt(W) */
static double exhaustive_best(const float *x, int sym) {
    const int n = 8, L = sym ? 3 : 4, lo = sym ? -1 : 0;
    double m = 0.0;
    if (!sym) {
        for (int i = 0; i < n; i++) m += (double)x[i];
        m /= n;
    }
    int total = 1;
    for (int i = 0; i < n; i++) total *= L;
    double best = -INFINITY;
    for (int code = 0; code < total; code++) {
        int v = code;
        int64_t s1 = 0, s2 = 0;
        double d = 0.0;
        for (int i = 0; i < n; i++) {
            int q = v % L + lo;
            v /= L;
            s1 += q;
            s2 += (int64_t)q * q;
            d += ((double)x[i] - m) * q;
        }
        int64_t w = sym ? s2 : n * s2 - s1 * s1;
        if (w > 0 && d / sqrt((double)w) > best) best = d / sqrt((double)w);
    }
    return best;
}

START_TEST(test_caq_exhaustive_d8_b2) {
    /* D = 8, B = 2: CAQ's final cosine against the best over every code vector (the criterion is
     * the cosine times a constant, so comparing it compares cosines). Two sums of 8 double
     * products of the same terms in a different order differ by < 1e-15 relative: a match is
     * f_end >= best * (1 - 1e-12). CAQ is a local search: "most cases", not all. */
    uint64_t seed = 777;
    const int N = 500;
    for (int sym = 0; sym < 2; sym++) {
        int match = 0, rtn_match = 0;
        double worst = 1.0, mean_ratio = 0.0;
        float x[8], w[8];
        for (int rep = 0; rep < N; rep++) {
            rand_vec(x, 8, rep % 4, &seed);
            memcpy(w, x, sizeof x);
            caq_info ci;
            ref_int_caq(w, 8, 2, sym, &ci);
            double best = exhaustive_best(x, sym);
            ck_assert(ci.adjusted);
            ck_assert_msg(ci.f_end <= best * (1 + 1e-12), "CAQ above the exhaustive best: %g > %g", ci.f_end, best);
            match += ci.f_end >= best * (1 - 1e-12);
            rtn_match += ci.f_start >= best * (1 - 1e-12);
            if (ci.f_end / best < worst) worst = ci.f_end / best;
            mean_ratio += ci.f_end / best / N;
        }
        printf("D=8 B=2 %s: CAQ reaches the exhaustive best cosine in %d/%d vectors (RTN start: %d); worst "
               "cos ratio %.4f, mean %.6f\n",
               sym ? "symmetric (3 levels, 3^8 codes)" : "asymmetric (4^8 codes)", match, N, rtn_match, worst,
               mean_ratio);
        ck_assert_msg(match > N / 2, "CAQ matches the exhaustive best in only %d/%d", match, N);
        ck_assert_int_gt(match, rtn_match);
    }
}
END_TEST

/* Per group on every layer of a model: mpq == README reference bit for bit, error <= RTN (exact),
 * least-squares refit before fp16 rounding <= RTN + e_fit_tol (exceptions counted, must be 0). */
static void caq_real_groups(mpq_model *m, const char *label) {
    static const char *NAMES[] = {"int2g32a", "int3g32a", "int4g32a", "int8g32a", "int3ca", "int3g32sa"};
    const mpq_weights *W = mpq_model_get_weights(m);
    for (size_t k = 0; k < sizeof NAMES / sizeof NAMES[0]; k++) {
        mpq_candidate c;
        ck_assert_int_eq(mpq_candidate_parse(NAMES[k], &c, NULL), MPQ_OK);
        long groups = 0, adjusted = 0, kept = 0, fit_over = 0;
        double sb = 0, sf = 0;
        for (int l = 0; l < mpq_model_n_linear(m); l++) {
            const mpq_layer_info *li = mpq_model_linear(m, l);
            const float *w = mpq_weights_linear(W, li);
            size_t n = (size_t)li->n_params;
            float *q = malloc(n * sizeof *q);
            ck_assert_ptr_nonnull(q);
            memcpy(q, w, n * sizeof *q);
            mpq_quantize_matrix(&c, q, li->rows, li->cols);
            int64_t G = (c.group_size == 0 || c.group_size >= li->cols) ? li->cols : c.group_size;
            float *g = malloc((size_t)G * sizeof *g);
            ck_assert_ptr_nonnull(g);
            for (int64_t r = 0; r < li->rows; r++)
                for (int64_t j = 0; j < li->cols; j += G) {
                    int64_t len = li->cols - j < G ? li->cols - j : G;
                    const float *src = w + r * li->cols + j, *got = q + r * li->cols + j;
                    memcpy(g, src, (size_t)len * sizeof *g);
                    caq_info ci;
                    ref_int_caq(g, len, c.bits, c.symmetric, &ci);
                    if (memcmp(g, got, (size_t)len * sizeof *g) != 0)
                        ck_abort_msg("%s %s %s row %lld col %lld: mpq differs from the README reference", label,
                                     NAMES[k], li->name, (long long)r, (long long)j);
                    if (!(ci.e_final <= ci.e_base))
                        ck_abort_msg("%s %s %s row %lld: error %g > RTN %g", label, NAMES[k], li->name, (long long)r,
                                     ci.e_final, ci.e_base);
                    fit_over += ci.adjusted && ci.e_fit > ci.e_base + ci.e_fit_tol;
                    groups++;
                    adjusted += ci.steps > 0;
                    kept += ci.kept_base;
                    sb += ci.e_base;
                    sf += ci.e_final;
                }
            free(g);
            free(q);
        }
        printf("%s %-10s %6ld groups: codes adjusted %5.1f%%, RTN kept (fp16 guard) %5.2f%%, refit above RTN %ld, "
               "squared error / RTN %.4f\n",
               label, NAMES[k], groups, 100.0 * adjusted / groups, 100.0 * kept / groups, fit_over, sf / sb);
        ck_assert_int_eq(fit_over, 0);
        ck_assert_msg(sf < sb * (c.bits <= 4 ? 0.9 : 0.99), "%s %s: error ratio %g", label, NAMES[k], sf / sb);
    }
}

START_TEST(test_caq_real_groups) {
    ck_assert_ptr_nonnull(g_model);
    caq_real_groups(g_model, "stories260K");
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path("models/sotu-2.7M/sotu-2.7M.bin"), &m, &err) == MPQ_OK, "%s", err.msg);
    caq_real_groups(m, "sotu-2.7M");
    mpq_model_free(m);
}
END_TEST

START_TEST(test_caq_act_err_sotu) {
    /* act_err = trace(E X^T X E^T)/n_tokens with X^T X from sotu-2.7M's own calibration text
     * (8 windows of 128 tokens): CAQ lowers the weight error of every group, but act_err weighs
     * the errors by the input covariance, so it can rise on a layer; the issue asks for a lower
     * act_err on at least 90% of the layers for int3g32a vs int3g32. */
    const int ns = 8, T = 128;
    mpq_model *m = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_model_load(shared_path("models/sotu-2.7M/sotu-2.7M.bin"), &m, &err) == MPQ_OK, "%s", err.msg);
    size_t nb = 0;
    uint8_t *raw = test_read_file(shared_path("data/sotu-calib.tok2048.u16"), &nb);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_ge(nb / 2, (size_t)ns * T + 1);
    int *tok = malloc((size_t)ns * (T + 1) * sizeof *tok);
    ck_assert_ptr_nonnull(tok);
    for (int s = 0; s < ns; s++)
        for (int j = 0; j <= T; j++) {
            size_t p = (size_t)s * T + j;
            tok[(size_t)s * (T + 1) + j] = raw[2 * p] | (raw[2 * p + 1] << 8);
        }
    free(raw);
    mpq_calib_opts o = mpq_calib_opts_default();
    o.batch = 4;
    mpq_calib *cal = NULL;
    ck_assert_msg(mpq_calib_create(m, tok, ns, T, &o, &cal, &err) == MPQ_OK, "%s", err.msg);
    static const char *PAIRS[][2] = {{"int3g32", "int3g32a"}, {"int2g32", "int2g32a"}, {"int4g32", "int4g32a"}};
    int nl = mpq_model_n_linear(m);
    for (int k = 0; k < 3; k++) {
        mpq_candidate cb, ca;
        ck_assert_int_eq(mpq_candidate_parse(PAIRS[k][0], &cb, NULL), MPQ_OK);
        ck_assert_int_eq(mpq_candidate_parse(PAIRS[k][1], &ca, NULL), MPQ_OK);
        int lower = 0;
        double mean_impr = 0.0, worst = -INFINITY;
        for (int i = 0; i < nl; i++) {
            mpq_calib_weight_stats wb, wa;
            ck_assert_int_eq(mpq_calib_weight_error(cal, i, &cb, &wb, &err), MPQ_OK);
            ck_assert_int_eq(mpq_calib_weight_error(cal, i, &ca, &wa, &err), MPQ_OK);
            ck_assert_msg(wa.sse < wb.sse, "%s: sse %g >= %g", mpq_model_linear(m, i)->name, wa.sse, wb.sse);
            lower += wa.act_err < wb.act_err;
            double rel = 1.0 - wa.act_err / wb.act_err;
            mean_impr += rel / nl;
            if (-rel > worst) worst = -rel;
        }
        printf("sotu-2.7M act_err %s < %s on %d/%d layers; mean relative reduction %.1f%%, least favourable layer "
               "act_err change %+.1f%%\n",
               PAIRS[k][1], PAIRS[k][0], lower, nl, 100.0 * mean_impr, 100.0 * worst);
        if (k == 0) ck_assert_msg(lower * 10 >= nl * 9, "int3g32a lower act_err on only %d/%d layers", lower, nl);
    }
    mpq_calib_free(cal);
    free(tok);
    mpq_model_free(m);
}
END_TEST

START_TEST(test_caq_kv) {
    /* kv_quantize_forward with scheme.caq: each group as mpq_quant_caq_minmax, which is the
     * README reference (asymmetric); per group never worse than RTN; 16 bits untouched */
    const int B = 2, T = 40, C = 48;
    size_t n = (size_t)B * T * C;
    float *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst), *want = malloc(n * sizeof *want),
          *rtn = malloc(n * sizeof *rtn);
    ck_assert(src && dst && want && rtn);
    uint64_t seed = 99;
    for (size_t i = 0; i < n; i += C) rand_vec(src + i, C, (int)(i / C) % 4, &seed);
    for (int mode = 0; mode < 2; mode++) {
        mpq_kv_scheme s = mpq_kv_scheme_default();
        s.mode = mode ? MPQ_KV_KIVI : MPQ_KV_PER_TOKEN;
        s.group_size = 16;
        s.caq = true;
        for (int bits = 2; bits <= 4; bits++) {
            kv_quantize_forward(dst, src, B, T, C, bits, mode == 1, &s);
            memcpy(want, src, n * sizeof *want);
            memcpy(rtn, src, n * sizeof *rtn);
            long groups = 0;
            double eb = 0, ec = 0;
            if (mode == 1) { /* KIVI keys: channel c over tokens g0..g0+15, stride C */
                for (int b = 0; b < B; b++)
                    for (int g0 = 0; g0 + 16 <= T; g0 += 16)
                        for (int c = 0; c < C; c++) {
                            size_t off = ((size_t)b * T + g0) * C + c;
                            float g[16];
                            for (int t = 0; t < 16; t++) g[t] = src[off + (size_t)t * C];
                            caq_info ci;
                            ref_int_caq(g, 16, bits, false, &ci);
                            for (int t = 0; t < 16; t++) want[off + (size_t)t * C] = g[t];
                            mpq_quant_rtn_minmax(rtn + off, 16, C, bits);
                            groups++;
                        }
            } else {
                for (size_t r = 0; r < (size_t)B * T; r++)
                    for (int c0 = 0; c0 < C; c0 += 16) {
                        caq_info ci;
                        ref_int_caq(want + r * C + c0, 16, bits, false, &ci);
                        mpq_quant_rtn_minmax(rtn + r * C + c0, 16, 1, bits);
                        groups++;
                    }
            }
            ck_assert_int_eq(memcmp(dst, want, n * sizeof *dst), 0);
            for (size_t i = 0; i < n; i++) {
                eb += ((double)rtn[i] - src[i]) * ((double)rtn[i] - src[i]);
                ec += ((double)dst[i] - src[i]) * ((double)dst[i] - src[i]);
            }
            ck_assert_msg(ec < eb, "mode %d bits %d: CAQ %g >= RTN %g", mode, bits, ec, eb);
            printf("KV %s k%d, %ld groups of 16: squared error CAQ / RTN = %.4f\n", mode ? "kivi keys" : "per-token",
                   bits, groups, ec / eb);
        }
        kv_quantize_forward(dst, src, B, T, C, 16, false, &s);
        ck_assert_int_eq(memcmp(dst, src, n * sizeof *dst), 0);
    }
    free(src);
    free(dst);
    free(want);
    free(rtn);
}
END_TEST

START_TEST(test_caq_kv_scheme_keys) {
    /* config: kv.scheme.caq read, written only when true, type checked */
    mpq_err err = {0};
    mpq_config *cfg = NULL;
    ck_assert_ptr_nonnull(g_model);
    ck_assert_msg(mpq_config_parse("{\"mpq_config_version\":1,\"kv\":{\"scheme\":{\"mode\":\"per-token\",\"group_size\":32,\"residual\":0,"
                                   "\"caq\":true},\"default\":\"k3v3\"}}",
                                   "cfg.json", g_model, &cfg, &err) == MPQ_OK,
                  "%s", err.msg);
    ck_assert(mpq_config_kv_scheme(cfg)->caq);
    char *js = mpq_config_to_json(cfg, g_model);
    ck_assert_ptr_nonnull(js);
    ck_assert_ptr_nonnull(strstr(js, "\"caq\""));
    mpq_config *back = NULL; /* the written config reads back with the flag */
    ck_assert_msg(mpq_config_parse(js, "written.json", g_model, &back, &err) == MPQ_OK, "%s", err.msg);
    ck_assert(mpq_config_kv_scheme(back)->caq);
    mpq_config_free(back);
    free(js);
    mpq_kv_scheme s = *mpq_config_kv_scheme(cfg);
    s.caq = false;
    ck_assert_int_eq(mpq_config_set_kv_scheme(cfg, &s, &err), MPQ_OK);
    js = mpq_config_to_json(cfg, g_model);
    ck_assert_ptr_nonnull(js);
    ck_assert_ptr_null(strstr(js, "caq"));
    free(js);
    mpq_config_free(cfg);
    cfg = NULL;
    ck_assert_int_eq(mpq_config_parse("{\"mpq_config_version\":1,\"kv\":{\"scheme\":{\"caq\":1}}}", "cfg.json", g_model, &cfg, &err),
                     MPQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "kv.scheme.caq"));
    /* job spec: kv.scheme.caq parsed; canonical text has it only when true */
    char spec[4096];
    const char *fmt = "{\"name\":\"a\",\"model\":\"%s\",\"calibration\":{\"data\":\"%s\"},\"candidates\":[\"int3g32a\"],"
                      "\"kv\":{\"scheme\":{\"mode\":\"per-token\"%s},\"pairs\":[\"k3v3\"]}}";
    char model[1024], data[1024];
    snprintf(model, sizeof model, "%s", shared_path("models/stories260K/stories260K.bin"));
    snprintf(data, sizeof data, "%s", shared_path("data/tinystories-calib.tok512.u16"));
    const char *extra[3] = {",\"caq\":true", "", ",\"caq\":false"};
    for (int k = 0; k < 3; k++) {
        snprintf(spec, sizeof spec, fmt, model, data, extra[k]);
        mpq_job_spec *js2 = NULL;
        ck_assert_msg(mpq_job_spec_parse(spec, "job.json", &js2, &err) == MPQ_OK, "%s", err.msg);
        ck_assert(js2->kv_scheme.caq == (k == 0));
        ck_assert_str_eq(js2->candidates[0], "int3g32a");
        ck_assert((strstr(js2->canonical_json, "\"caq\":true") != NULL) == (k == 0));
        mpq_job_spec_free(js2);
    }
    snprintf(spec, sizeof spec, fmt, model, data, ",\"caq\":\"yes\"");
    mpq_job_spec *bad = NULL;
    ck_assert_int_eq(mpq_job_spec_parse(spec, "job.json", &bad, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "kv.scheme.caq"));
}
END_TEST

/* ---------------- KV ---------------- */

START_TEST(test_kv_pairs) {
    mpq_kv_pair p;
    mpq_err err = {0};
    char buf[16];
    static const char *GOODKV[] = {"k8v4", "k2v2", "k16v16", "k3v8", "k4v16"};
    for (size_t i = 0; i < sizeof GOODKV / sizeof GOODKV[0]; i++) {
        ck_assert_int_eq(mpq_kv_pair_parse(GOODKV[i], &p, &err), MPQ_OK);
        ck_assert_str_eq(mpq_kv_pair_name(p, buf, sizeof buf), GOODKV[i]);
    }
    ck_assert_int_eq(mpq_kv_pair_parse("K8V4", &p, &err), MPQ_OK); /* KVTuner spelling */
    ck_assert_int_eq(p.k_bits, 8);
    ck_assert_int_eq(p.v_bits, 4);
    static const char *BADKV[] = {"k5v4", "k8", "k8v", "v8k4", "k8v4x", "k008v4", "", "k1v1", "k32v32",
                                  "kv", "k-4v4", "8v4"};
    for (size_t i = 0; i < sizeof BADKV / sizeof BADKV[0]; i++) {
        ck_assert_int_eq(mpq_kv_pair_parse(BADKV[i], &p, &err), MPQ_ERR_INVALID);
        char quoted[40];
        snprintf(quoted, sizeof quoted, "'%s'", BADKV[i]);
        ck_assert_msg(strstr(err.msg, quoted), "%s", err.msg);
    }
    mpq_kv_mode m;
    ck_assert_int_eq(mpq_kv_mode_parse("kivi", &m, &err), MPQ_OK);
    ck_assert_int_eq(m, MPQ_KV_KIVI);
    ck_assert_str_eq(mpq_kv_mode_name(m), "kivi");
    ck_assert_int_eq(mpq_kv_mode_parse("per-token", &m, &err), MPQ_OK);
    ck_assert_int_eq(m, MPQ_KV_PER_TOKEN);
    ck_assert_str_eq(mpq_kv_mode_name(m), "per-token");
    ck_assert_int_eq(mpq_kv_mode_parse("KIVI2", &m, &err), MPQ_ERR_INVALID);
    ck_assert(strstr(err.msg, "'KIVI2'"));
    mpq_kv_scheme s = mpq_kv_scheme_default();
    ck_assert_int_eq(s.mode, MPQ_KV_KIVI);
    ck_assert_int_eq(s.group_size, 32);
    ck_assert_int_eq(s.residual, 0);
}
END_TEST

START_TEST(test_kv_bits) {
    mpq_kv_scheme s = mpq_kv_scheme_default(); /* KIVI, G = 32, R = 0 */
    mpq_kv_pair p = {4, 2};
    /* keys per channel, groups of 32 tokens: 4 + 32/32 = 5 */
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p, &s, 32, 512, true, true), 5.0, BITS_TOL);
    /* values per token, kv_dim 32 (stories260K: 4 kv heads x 8): 1 group: 2 + 32/32 = 3 */
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p, &s, 32, 512, false, true), 3.0, BITS_TOL);
    /* kv_dim 48: ceil(48/32) = 2 groups per token: 2 + 64/48 */
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p, &s, 48, 512, false, true), 2.0 + 64.0 / 48.0, BITS_TOL);
    /* nominal */
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p, &s, 48, 512, true, false), 4.0, BITS_TOL);
    /* 16-bit: exactly 16, overhead or not */
    mpq_kv_pair p16 = {16, 8};
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p16, &s, 32, 512, true, true), 16.0, BITS_TOL);
    /* residual 128 of 512, k2 G32: quantized 2 + 1 = 3; (128*16 + 384*3)/512 = 3200/512 = 6.25 */
    s.residual = 128;
    mpq_kv_pair p2 = {2, 2};
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p2, &s, 32, 512, true, true), 6.25, BITS_TOL);
    /* KIVI keys, L = 100 not a multiple of G = 32, R = 0: the incomplete trailing group of
     * 100 mod 32 = 4 tokens stays fp16: (4*16 + 96*3)/100 = 352/100 = 3.52; values are
     * grouped per token, so they have no partial token group: 3 */
    mpq_kv_scheme s0 = mpq_kv_scheme_default();
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p2, &s0, 32, 100, true, true), 3.52, BITS_TOL);
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p2, &s0, 32, 100, false, true), 3.0, BITS_TOL);
    /* steady state (context_len 0): no residual or partial group */
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p2, &s, 32, 0, true, true), 3.0, BITS_TOL);
    /* residual longer than the context: everything fp16 */
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p2, &s, 32, 100, true, true), 16.0, BITS_TOL);
    /* per-token mode, G = 64, kv_dim 192 (sotu-2.7M: 3 groups): keys like values: 8 + 96/192 = 8.5 */
    mpq_kv_scheme t = {MPQ_KV_PER_TOKEN, 64, 0, false};
    mpq_kv_pair p8 = {8, 8};
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p8, &t, 192, 512, true, true), 8.5, BITS_TOL);
    ck_assert_double_eq_tol(mpq_kv_bits_per_element(p8, &t, 192, 512, false, true), 8.5, BITS_TOL);
}
END_TEST

static Suite *quant_suite(void) {
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("names");
    tcase_add_loop_test(tc, test_parse_good, 0, (int)(sizeof GOOD / sizeof GOOD[0]));
    tcase_add_loop_test(tc, test_parse_bad, 0, (int)(sizeof BAD / sizeof BAD[0]));
    tcase_add_loop_test(tc, test_bits_bytes, 0, (int)(sizeof BITS / sizeof BITS[0]));
    tcase_add_test(tc, test_bytes_edge);
    tcase_add_test(tc, test_fp16_round);
    tcase_add_test(tc, test_kv_pairs);
    tcase_add_test(tc, test_kv_bits);
    tcase_add_test(tc, test_caq_bits_equal_base);
    suite_add_tcase(s, tc);
    TCase *tq = tcase_create("quantizers");
    tcase_add_test(tq, test_fp8_e4m3_exact);
    tcase_add_test(tq, test_fp8_e5m2_exact);
    tcase_add_test(tq, test_fp4_nf4_exact);
    tcase_add_loop_test(tq, test_degenerate, 0, (int)(sizeof ALL_CANDS / sizeof ALL_CANDS[0]));
    tcase_add_test(tq, test_rtn_minmax_strided);
    tcase_add_test(tq, test_caq_random);
    tcase_add_test(tq, test_caq_exhaustive_d8_b2);
    tcase_add_test(tq, test_caq_kv);
    suite_add_tcase(s, tq);
    TCase *tr = tcase_create("real_model");
    tcase_add_unchecked_fixture(tr, model_setup, model_teardown);
    tcase_set_timeout(tr, 300);
    tcase_add_test(tr, test_real_monotone_bits);
    tcase_add_test(tr, test_real_formats);
    tcase_add_test(tr, test_real_group_properties);
    tcase_add_test(tr, test_reference_bits);
    tcase_add_test(tr, test_caq_real_groups);
    tcase_add_test(tr, test_caq_act_err_sotu);
    tcase_add_test(tr, test_caq_kv_scheme_keys);
    suite_add_tcase(s, tr);
    return s;
}

TEST_MAIN(quant_suite)
