/*
 * rotate.c - incoherence processing for the Q-Palette candidates (Lee & Song 2025, arXiv
 * 2509.20214, following QuIP#'s randomized Hadamard transform, Tseng et al. 2024):
 * W' = H_m diag(s_m) W diag(s_n) H_n^T with normalised Hadamard matrices H (orthogonal), or a
 * seeded random orthogonal matrix (QR of a Gaussian matrix, columns sign-fixed by diag(R),
 * Mezzadri 2007) for sizes without a Hadamard construction.
 *
 * Hadamard matrices: Sylvester's H_(2k) = [[H, H], [H, -H]] and Paley's construction I for
 * q = 11 and 19 (q = 3 mod 4): H_(q+1) = I + S, S = [[0, 1^T], [-1, J]] with the Jacobsthal
 * matrix J_ij = chi(j - i), chi the quadratic character mod q. Kronecker products of them.
 */
#include "quant/rotate.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_quant.h"
#include "mpq/mpq_rng.h"

uint64_t mpq_rotation_seed(int64_t rows, int64_t cols) {
    return MPQ_ROTATION_SEED ^ ((uint64_t)rows * UINT64_C(0x9e3779b97f4a7c15)) ^ (uint64_t)cols;
}

int mpq_hadamard_factor(int64_t n, int *b12, int *c20) {
    if (n < 1) return 0;
    int b = 0, c = 0, a = 0;
    while (n % 3 == 0) n /= 3, b++;
    while (n % 5 == 0) n /= 5, c++;
    while (n % 2 == 0) n /= 2, a++;
    if (n != 1 || a < 2 * (b + c)) return 0;
    if (b12) *b12 = b;
    if (c20) *c20 = c;
    return 1;
}

/* Paley I Hadamard matrix of order q + 1 into h (row-major, (q+1)^2). */
static void paley(int q, float *h) {
    int n = q + 1;
    char chi[32] = {0}; /* chi[x] for x in 0..q-1: 0, +1 (square), -1 */
    for (int x = 1; x < q; x++) chi[x] = -1;
    for (int x = 1; x < q; x++) chi[(x * x) % q] = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float s;
            if (i == 0) s = (j == 0) ? 0.0f : 1.0f;
            else if (j == 0) s = -1.0f;
            else s = (float)chi[((j - i) % q + q) % q];
            h[i * n + j] = s + (i == j ? 1.0f : 0.0f);
        }
}

/* c (na*nb)^2 = a (x) b, row-major. */
static void kron(const float *a, int64_t na, const float *b, int64_t nb, float *c) {
    int64_t n = na * nb;
    for (int64_t i = 0; i < na; i++)
        for (int64_t j = 0; j < na; j++)
            for (int64_t k = 0; k < nb; k++)
                for (int64_t l = 0; l < nb; l++) c[(i * nb + k) * n + j * nb + l] = a[i * na + j] * b[k * nb + l];
}

mpq_status mpq_hadamard_fill(int64_t n, float *h, mpq_err *err) {
    int b, c;
    if (!h || !mpq_hadamard_factor(n, &b, &c))
        return mpq_err_set(err, MPQ_ERR_INVALID, "hadamard: no construction for order %lld", (long long)n);
    float h12[144], h20[400];
    paley(11, h12);
    paley(19, h20);
    /* build in h by successive Kronecker products: start with [1] */
    float *tmp = malloc((size_t)n * (size_t)n * sizeof *tmp);
    if (!tmp) return mpq_err_set(err, MPQ_ERR_NOMEM, "hadamard: order %lld: out of memory", (long long)n);
    int64_t cur = 1;
    h[0] = 1.0f;
    for (int i = 0; i < b + c; i++) {
        const float *f = i < b ? h12 : h20;
        int64_t nf = i < b ? 12 : 20;
        kron(h, cur, f, nf, tmp);
        cur *= nf;
        memcpy(h, tmp, (size_t)cur * (size_t)cur * sizeof *h);
    }
    /* Sylvester doubling: h <- [[h, h], [h, -h]] */
    while (cur < n) {
        int64_t m = 2 * cur;
        for (int64_t i = 0; i < cur; i++)
            for (int64_t j = 0; j < cur; j++) {
                float v = h[i * cur + j];
                tmp[i * m + j] = v;
                tmp[i * m + j + cur] = v;
                tmp[(i + cur) * m + j] = v;
                tmp[(i + cur) * m + j + cur] = -v;
            }
        cur = m;
        memcpy(h, tmp, (size_t)cur * (size_t)cur * sizeof *h);
    }
    free(tmp);
    return MPQ_OK;
}

void mpq_rotation_gauss_pair(struct mpq_rng *r, double *z0, double *z1) {
    double u1 = mpq_rng_uniform(r), u2 = mpq_rng_uniform(r);
    double rad = sqrt(-2.0 * log(1.0 - u1));
    *z0 = rad * cos(2.0 * 3.14159265358979323846 * u2);
    *z1 = rad * sin(2.0 * 3.14159265358979323846 * u2);
}

/* q (n x n) <- M diag(s): normalised Hadamard or random orthogonal from the stream r. */
static mpq_status side(int64_t n, const float *s, mpq_rng *r, float *q, mpq_err *err) {
    mpq_status st = MPQ_OK;
    float *tau = NULL;
    if (mpq_hadamard_factor(n, NULL, NULL)) {
        if ((st = mpq_hadamard_fill(n, q, err)) != MPQ_OK) return st;
        float norm = (float)(1.0 / sqrt((double)n));
        for (int64_t i = 0; i < n * n; i++) q[i] *= norm;
    } else {
        if (n > MPQ_PALETTE_MAX_RANDOM_DIM)
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "rotation: dimension %lld has no Hadamard construction and is above %d, the "
                               "largest random orthogonal rotation", (long long)n, MPQ_PALETTE_MAX_RANDOM_DIM);
        for (int64_t i = 0; i < n * n; i += 2) {
            double z0, z1;
            mpq_rotation_gauss_pair(r, &z0, &z1);
            q[i] = (float)z0;
            if (i + 1 < n * n) q[i + 1] = (float)z1;
        }
        tau = malloc((size_t)n * sizeof *tau);
        if (!tau) return mpq_err_set(err, MPQ_ERR_NOMEM, "rotation: out of memory");
        lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, q, (lapack_int)n, tau);
        if (info != 0) {
            st = mpq_err_set(err, MPQ_ERR_SOLVER, "rotation: LAPACKE_sgeqrf failed (info %d) for order %lld",
                             (int)info, (long long)n);
            goto done;
        }
        float *sg = malloc((size_t)n * sizeof *sg);
        if (!sg) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "rotation: out of memory");
            goto done;
        }
        for (int64_t j = 0; j < n; j++) sg[j] = q[j * n + j] < 0.0f ? -1.0f : 1.0f;
        info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, (lapack_int)n, q, (lapack_int)n, tau);
        if (info != 0) {
            free(sg);
            st = mpq_err_set(err, MPQ_ERR_SOLVER, "rotation: LAPACKE_sorgqr failed (info %d) for order %lld",
                             (int)info, (long long)n);
            goto done;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) q[i * n + j] *= sg[j];
        free(sg);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) q[i * n + j] *= s[j];
done:
    free(tau);
    return st;
}

mpq_status mpq_rotation_build(int64_t rows, int64_t cols, float **qm, float **qn, mpq_err *err) {
    *qm = *qn = NULL;
    if (rows < 1 || cols < 1 || rows > MPQ_PALETTE_MAX_DIM || cols > MPQ_PALETTE_MAX_DIM)
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "rotation: shape %lldx%lld: each dimension must be 1..%d",
                           (long long)rows, (long long)cols, MPQ_PALETTE_MAX_DIM);
    mpq_status st = MPQ_OK;
    float *sm = malloc((size_t)rows * sizeof *sm), *sn = malloc((size_t)cols * sizeof *sn);
    float *a = malloc((size_t)rows * (size_t)rows * sizeof *a), *b = malloc((size_t)cols * (size_t)cols * sizeof *b);
    if (!sm || !sn || !a || !b) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "rotation: shape %lldx%lld: out of memory", (long long)rows,
                         (long long)cols);
        goto done;
    }
    mpq_rng r;
    mpq_rng_seed(&r, mpq_rotation_seed(rows, cols));
    mpq_rng_rademacher(&r, sm, (size_t)rows);
    mpq_rng_rademacher(&r, sn, (size_t)cols);
    if ((st = side(rows, sm, &r, a, err)) != MPQ_OK) goto done;
    if ((st = side(cols, sn, &r, b, err)) != MPQ_OK) goto done;
    *qm = a, *qn = b;
    a = b = NULL;
done:
    free(sm);
    free(sn);
    free(a);
    free(b);
    return st;
}

void mpq_rotation_apply(const float *qm, const float *qn, float *w, float *tmp, int64_t rows, int64_t cols,
                        bool inverse) {
    const int m = (int)rows, n = (int)cols;
    /* tmp = op(Q_m) w ; w = tmp op(Q_n)^T */
    cblas_sgemm(CblasRowMajor, inverse ? CblasTrans : CblasNoTrans, CblasNoTrans, m, n, m, 1.0f, qm, m, w, n, 0.0f,
                tmp, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, inverse ? CblasNoTrans : CblasTrans, m, n, n, 1.0f, tmp, n, qn, n, 0.0f,
                w, n);
}
