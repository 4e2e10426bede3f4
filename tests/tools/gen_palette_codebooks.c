/*
 * gen_palette_codebooks.c - generates src/quant/palette_codebooks.h, the codebooks of the
 * nuq<R> and vq<R> candidates (Q-Palette, Lee & Song 2025, arXiv 2509.20214), and prints it
 * to stdout. ctest (tools.palette_codebooks) regenerates it and compares it with the committed
 * file byte for byte.
 *
 * nuq<R>, R = 2..8: the Lloyd-Max quantizer with 2^R levels for N(0, 1), computed from the
 * density itself (no samples). Levels are symmetric; on the positive half the thresholds are
 * t_0 = 0, t_k = (c_{k-1} + c_k)/2, t_{L/2} = +inf and each level is its cell's conditional
 * mean (phi(t_k) - phi(t_{k+1})) / (Q(t_k) - Q(t_{k+1})), Q(x) = erfc(x/sqrt 2)/2. Start:
 * c_k = (k + 1/2) * 8/L; iterate until no level moves (or 200000 iterations).
 *
 * vq<R>, R = 1.5, 2, ..., 4: a 2-D codebook of K = 2^(2R) points, k-means (Lloyd) on the
 * N(0, I_2) density discretised on a G x G grid of cells over [-B, B]^2 (G = 256, B = 5; the
 * outer rows/columns of cells extend to infinity). Every cell's mass and first and second
 * moments are exact products of 1-D Gaussian integrals; a cell goes to the codeword nearest
 * its conditional mean (ties: lower index); a codeword moves to the mean of its cells (a
 * codeword without cells stays). Lloyd stops when no cell changes codeword (or 2000
 * iterations). Starts: K-means++ (Arthur & Vassilvitskii 2007) over the cell means weighted
 * by mass, with the project PRNG (mpq_rng, xoshiro256**) seeded 1..RESTARTS; the run with
 * the smallest final distortion is kept (earliest seed on a tie). Points are then sorted by
 * (x, then y) and written as float hex constants. The comment line of each table gives its
 * mean squared error per dimension on the discretised density.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_rng.h"

#define G 256
#define B 5.0
#define RESTARTS 4

static double qtail(double x) { return 0.5 * erfc(x / sqrt(2.0)); }
static double phi(double x) { return isinf(x) ? 0.0 : exp(-0.5 * x * x) / sqrt(2.0 * 3.14159265358979323846); }

static void lloyd_max(int L, double *lv, double *mse) {
    int h = L / 2;
    double *c = malloc((size_t)h * sizeof *c), *t = malloc((size_t)(h + 1) * sizeof *t);
    for (int k = 0; k < h; k++) c[k] = (k + 0.5) * 8.0 / L;
    for (int it = 0; it < 200000; it++) {
        t[0] = 0.0;
        for (int k = 1; k < h; k++) t[k] = 0.5 * (c[k - 1] + c[k]);
        t[h] = INFINITY;
        int moved = 0;
        for (int k = 0; k < h; k++) {
            double m = qtail(t[k]) - qtail(t[k + 1]);
            double v = (phi(t[k]) - phi(t[k + 1])) / m;
            if (v != c[k]) moved = 1;
            c[k] = v;
        }
        if (!moved) break;
    }
    /* mse = E[x^2] - sum_k P_k c_k^2 (levels are the cell means), both halves */
    double e = 1.0;
    t[0] = 0.0;
    for (int k = 1; k < h; k++) t[k] = 0.5 * (c[k - 1] + c[k]);
    t[h] = INFINITY;
    for (int k = 0; k < h; k++) e -= 2.0 * (qtail(t[k]) - qtail(t[k + 1])) * c[k] * c[k];
    for (int k = 0; k < h; k++) {
        lv[h + k] = c[k];
        lv[h - 1 - k] = -c[k];
    }
    *mse = e;
    free(c);
    free(t);
}

/* 1-D cells: mass p, first moment m1, second moment m2 of N(0,1) over cell i */
static double P1[G], M1[G], M2[G], MU[G];

static void cells_1d(void) {
    for (int i = 0; i < G; i++) {
        double a = (i == 0) ? -INFINITY : -B + 2.0 * B * i / G;
        double b = (i == G - 1) ? INFINITY : -B + 2.0 * B * (i + 1) / G;
        double p = (a < 0 ? (qtail(a) - qtail(b)) : (qtail(a) - qtail(b)));
        double pa = phi(a), pb = phi(b);
        P1[i] = p;
        M1[i] = pa - pb;                                            /* int x phi = -phi */
        M2[i] = p + (isinf(a) ? 0.0 : a * pa) - (isinf(b) ? 0.0 : b * pb); /* int x^2 phi */
        MU[i] = M1[i] / p;
    }
}

typedef struct vq_state {
    int K;
    double *cx, *cy;
    int *own;
} vq_state;

static int nearest(const double *cx, const double *cy, int K, double x, double y) {
    int best = 0;
    double bd = INFINITY;
    for (int k = 0; k < K; k++) {
        double dx = x - cx[k], dy = y - cy[k], d = dx * dx + dy * dy;
        if (d < bd) bd = d, best = k;
    }
    return best;
}

static double distortion(const double *cx, const double *cy, const int *own) {
    double e = 0.0;
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            int k = own[i * G + j];
            double m = P1[i] * P1[j];
            double s2 = M2[i] * P1[j] + P1[i] * M2[j];
            double f1 = M1[i] * P1[j] * cx[k] + P1[i] * M1[j] * cy[k];
            e += s2 - 2.0 * f1 + m * (cx[k] * cx[k] + cy[k] * cy[k]);
        }
    return e / 2.0; /* per dimension */
}

static double kmeans(int K, uint64_t seed, double *cx, double *cy, int *own) {
    /* k-means++ start over cell means, weighted by mass */
    mpq_rng r;
    mpq_rng_seed(&r, seed);
    static double d2[G * G];
    double tot = 0.0;
    for (int c = 0; c < G * G; c++) tot += P1[c / G] * P1[c % G];
    double u = mpq_rng_uniform(&r) * tot, acc = 0.0;
    int pick = G * G - 1;
    for (int c = 0; c < G * G; c++) {
        acc += P1[c / G] * P1[c % G];
        if (acc > u) { pick = c; break; }
    }
    cx[0] = MU[pick / G], cy[0] = MU[pick % G];
    for (int c = 0; c < G * G; c++) d2[c] = INFINITY;
    for (int k = 1; k < K; k++) {
        double s = 0.0;
        for (int c = 0; c < G * G; c++) {
            double dx = MU[c / G] - cx[k - 1], dy = MU[c % G] - cy[k - 1], d = dx * dx + dy * dy;
            if (d < d2[c]) d2[c] = d;
            s += d2[c] * P1[c / G] * P1[c % G];
        }
        u = mpq_rng_uniform(&r) * s, acc = 0.0, pick = G * G - 1;
        for (int c = 0; c < G * G; c++) {
            acc += d2[c] * P1[c / G] * P1[c % G];
            if (acc > u) { pick = c; break; }
        }
        cx[k] = MU[pick / G], cy[k] = MU[pick % G];
    }
    for (int c = 0; c < G * G; c++) own[c] = -1;
    double *sx = malloc((size_t)K * sizeof *sx), *sy = malloc((size_t)K * sizeof *sy), *sm = malloc((size_t)K * sizeof *sm);
    for (int it = 0; it < 2000; it++) {
        int changed = 0;
        for (int c = 0; c < G * G; c++) {
            int k = nearest(cx, cy, K, MU[c / G], MU[c % G]);
            if (k != own[c]) changed = 1, own[c] = k;
        }
        if (!changed) break;
        memset(sx, 0, (size_t)K * sizeof *sx);
        memset(sy, 0, (size_t)K * sizeof *sy);
        memset(sm, 0, (size_t)K * sizeof *sm);
        for (int c = 0; c < G * G; c++) {
            int i = c / G, j = c % G, k = own[c];
            sx[k] += M1[i] * P1[j];
            sy[k] += P1[i] * M1[j];
            sm[k] += P1[i] * P1[j];
        }
        for (int k = 0; k < K; k++)
            if (sm[k] > 0.0) cx[k] = sx[k] / sm[k], cy[k] = sy[k] / sm[k];
    }
    free(sx);
    free(sy);
    free(sm);
    return distortion(cx, cy, own);
}

static int cmp_pt(const void *a, const void *b) {
    const float *p = a, *q = b;
    if (p[0] != q[0]) return p[0] < q[0] ? -1 : 1;
    if (p[1] != q[1]) return p[1] < q[1] ? -1 : 1;
    return 0;
}

int main(void) {
    printf("/*\n * palette_codebooks.h - GENERATED by tests/tools/gen_palette_codebooks.c; do not edit.\n"
           " * Codebooks of the nuq<R> (Lloyd-Max, N(0,1)) and vq<R> (2-D k-means, N(0,I)) candidates;\n"
           " * how they are made is in the generator's opening comment and the README.\n */\n"
           "#ifndef MPQ_PALETTE_CODEBOOKS_H\n#define MPQ_PALETTE_CODEBOOKS_H\n\n");
    for (int R = 2; R <= 8; R++) {
        int L = 1 << R;
        double lv[256], mse;
        lloyd_max(L, lv, &mse);
        printf("/* nuq%d: %d levels, mse %.6f */\nstatic const float NUQ_CB_%d[%d] = {", R, L, mse, R, L);
        for (int k = 0; k < L; k++) printf("%s%a", k == 0 ? "\n    " : k % 4 ? ", " : ",\n    ", (double)(float)lv[k]);
        printf("};\n\n");
    }
    cells_1d();
    static int own[G * G];
    for (int twoR = 3; twoR <= 8; twoR++) {
        int K = 1 << twoR;
        double cx[256], cy[256], bx[256], by[256], best = INFINITY;
        for (int s = 1; s <= RESTARTS; s++) {
            double d = kmeans(K, (uint64_t)s, cx, cy, own);
            fprintf(stderr, "vq K=%d seed %d: mse %.6f\n", K, s, d);
            if (d < best) best = d, memcpy(bx, cx, sizeof cx), memcpy(by, cy, sizeof cy);
        }
        float pts[256][2];
        for (int k = 0; k < K; k++) pts[k][0] = (float)bx[k], pts[k][1] = (float)by[k];
        qsort(pts, (size_t)K, sizeof pts[0], cmp_pt);
        printf("/* vq%g: %d points, mse per dimension %.6f */\nstatic const float VQ_CB_%d[%d][2] = {",
               twoR / 2.0, K, best, twoR, K);
        for (int k = 0; k < K; k++) printf("%s{%a, %a}", k == 0 ? "\n    " : k % 2 ? ", " : ",\n    ", (double)pts[k][0], (double)pts[k][1]);
        printf("};\n\n");
    }
    printf("#endif /* MPQ_PALETTE_CODEBOOKS_H */\n");
    return 0;
}
