/*
 * tcq.c - PLACEHOLDER for the trellis-coded quantizer (see tcq.h): plain per-element
 * round to nearest on a uniform grid of 2^floor(rate) levels spanning [-a, a], a = the
 * matrix's largest magnitude, so that the tcq<R> candidates run end to end. It is NOT a
 * trellis-coded quantizer and its errors are not TCQ's; it is replaced by the real one.
 * codes is ignored (left untouched). Code bits are counted as ceil(rate * rows * cols).
 */
#include "quant/tcq.h"

#include <math.h>

bool mpq_tcq_rate_valid(double rate) {
    if (!(rate >= 1.5 && rate <= 5.0)) return false;
    double q = rate * 4.0;
    return q == floor(q);
}

int64_t mpq_tcq_code_bits(int64_t rows, int64_t cols, double rate) {
    if (!mpq_tcq_rate_valid(rate) || rows <= 0 || cols <= 0) return -1;
    if (rows > INT64_MAX / cols) return -1;
    int64_t n = rows * cols;
    if (n > INT64_MAX / 20) return -1;
    return (n * (int64_t)(rate * 4.0) + 3) / 4; /* rate*4 is a whole number */
}

mpq_status mpq_tcq_quantize_matrix(float *w, int64_t rows, int64_t cols, double rate, uint8_t *codes,
                                   mpq_err *err) {
    (void)codes;
    if (!w || rows <= 0 || cols <= 0 || !mpq_tcq_rate_valid(rate))
        return mpq_err_set(err, MPQ_ERR_INVALID, "tcq: invalid arguments (rows %lld, cols %lld, rate %g)",
                           (long long)rows, (long long)cols, rate);
    int bits = (int)floor(rate);
    size_t n = (size_t)rows * (size_t)cols;
    float a = 0.0f;
    for (size_t i = 0; i < n; i++)
        if (fabsf(w[i]) > a) a = fabsf(w[i]); /* NaN compares false: ignored */
    if (!(a > 0.0f) || !isfinite(a)) {
        for (size_t i = 0; i < n; i++) w[i] = 0.0f;
        return MPQ_OK;
    }
    float levels = (float)((1 << bits) - 1), step = 2.0f * a / levels;
    for (size_t i = 0; i < n; i++) {
        float q = rintf((w[i] + a) / step);
        if (!(q >= 0.0f)) q = 0.0f;
        if (q > levels) q = levels;
        w[i] = -a + q * step;
    }
    return MPQ_OK;
}
