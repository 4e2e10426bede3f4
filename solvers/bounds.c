/*
 * bounds.c - Gaussian reverse water-filling bound (Cover & Thomas, "Elements of Information
 * Theory", 2nd ed., Thm 10.3.3; used as a lower bound in Q-Palette) and the SAQ segment DP
 * (bit allocation over contiguous segments of variance-sorted PCA dimensions, SAQ sec. 4).
 */
#include "solvers/solvers_internal.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

mpq_status mpq_bound_waterfill(const double *n, const double *c, int n_layers, double budget_bits,
                               double *rate_out, double *distortion, double *theta_out, mpq_err *err) {
    if (!n || !c || n_layers < 1 || !distortion)
        return mpq_err_set(err, MPQ_ERR_INVALID, "waterfill: NULL argument or n_layers %d < 1", n_layers);
    if (!isfinite(budget_bits) || budget_bits < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "waterfill: budget %g must be finite and >= 0", budget_bits);
    double ntot = 0, cmax = 0, slog = 0, nact = 0;
    for (int l = 0; l < n_layers; l++) {
        if (!isfinite(n[l]) || n[l] <= 0 || !isfinite(c[l]) || c[l] < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "waterfill: layer %d: n %g must be > 0, c %g >= 0", l, n[l],
                               c[l]);
        ntot += n[l];
        if (c[l] > cmax) cmax = c[l];
        if (c[l] > 0) {
            slog += n[l] * log2(c[l]);
            nact += n[l];
        }
    }
    double theta;
    if (cmax == 0) {
        theta = 0;
    } else if (budget_bits == 0) {
        theta = cmax;
    } else {
        /* rate(t) = sum n max(0, (log2 c - t)/2) is decreasing in t = log2 theta;
         * rate(log2 cmax) = 0 <= B and at t_all (every positive layer active) rate >= B. */
        double lo = (slog - 2.0 * budget_bits) / nact, hi = log2(cmax);
        for (int it = 0; it < 400; it++) {
            double mid = 0.5 * (lo + hi);
            if (mid <= lo || mid >= hi) break;
            double rate = 0;
            for (int l = 0; l < n_layers; l++)
                if (c[l] > 0 && log2(c[l]) > mid) rate += n[l] * 0.5 * (log2(c[l]) - mid);
            if (rate > budget_bits) lo = mid;
            else hi = mid;
        }
        theta = exp2(hi); /* the side whose rate is within budget */
    }
    double d = 0;
    for (int l = 0; l < n_layers; l++) {
        double r = (c[l] > theta && theta > 0) ? 0.5 * log2(c[l] / theta) : 0.0;
        if (rate_out) rate_out[l] = r;
        d += n[l] * (c[l] < theta ? c[l] : theta);
    }
    *distortion = d;
    if (theta_out) *theta_out = theta;
    return MPQ_OK;
}

mpq_status mpq_segment_dp(const double *var, const double *err_table, int d, const int *bits, int n_bits,
                          int64_t overhead, int64_t budget_bits, int *seg_start, int *seg_bits,
                          int *n_segments, double *distortion, mpq_err *err) {
    mpq_status st = MPQ_OK;
    double *f = NULL, *acc = NULL;
    int32_t *from = NULL;
    unsigned char *kbits = NULL;
    if (d < 1 || !bits || n_bits < 1 || n_bits > 255 || (!var && !err_table) || !seg_start || !seg_bits ||
        !n_segments || !distortion)
        return mpq_err_set(err, MPQ_ERR_INVALID, "segment_dp: d %d, n_bits %d or a NULL argument", d, n_bits);
    if (overhead < 0 || budget_bits < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "segment_dp: overhead %lld and budget %lld must be >= 0",
                           (long long)overhead, (long long)budget_bits);
    int bmin = INT32_MAX, bmax = 0;
    for (int k = 0; k < n_bits; k++) {
        if (bits[k] < 0 || bits[k] > 64)
            return mpq_err_set(err, MPQ_ERR_INVALID, "segment_dp: bits[%d] = %d not in 0..64", k, bits[k]);
        if (bits[k] < bmin) bmin = bits[k];
        if (bits[k] > bmax) bmax = bits[k];
    }
    for (int j = 0; j < d; j++) {
        for (int k = 0; k < n_bits; k++) {
            double e = err_table ? err_table[(size_t)j * (size_t)n_bits + (size_t)k] : var[j] * exp2(-2.0 * bits[k]);
            if (!isfinite(e))
                return mpq_err_set(err, MPQ_ERR_INVALID, "segment_dp: dimension %d bits %d: error %g not finite", j,
                                   bits[k], e);
        }
    }
    int64_t mincost = (int64_t)d * bmin + overhead;
    if (overhead > INT64_MAX / 2 / d)
        return mpq_err_set(err, MPQ_ERR_INVALID, "segment_dp: overhead %lld too large", (long long)overhead);
    if (mincost > budget_bits)
        return mpq_err_set(err, MPQ_ERR_INFEASIBLE,
                           "segment_dp: budget %lld bits < %lld, the cheapest split (one segment at %d bits)",
                           (long long)budget_bits, (long long)mincost, bmin);
    int64_t maxcost = (int64_t)d * bmax + (int64_t)d * overhead;
    int64_t U = budget_bits < maxcost ? budget_bits : maxcost;
    size_t u1 = (size_t)U + 1, cells;
    if (!mpq_size_mul((size_t)d + 1, u1, &cells) || cells > ((size_t)1 << 28))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "segment_dp: (d+1) x (budget+1) = %d x %lld states too many",
                           d + 1, (long long)U + 1);
    f = malloc(cells * sizeof *f);
    from = malloc(cells * sizeof *from);
    kbits = malloc(cells);
    acc = malloc((size_t)n_bits * sizeof *acc);
    if (!f || !from || !kbits || !acc) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "segment_dp: out of memory for %zu states", cells);
        goto done;
    }
    for (size_t q = 0; q < cells; q++) f[q] = INFINITY;
    f[0] = 0;
    for (int j = 1; j <= d; j++) {
        double *fj = f + (size_t)j * u1;
        for (int k = 0; k < n_bits; k++) acc[k] = 0;
        for (int a = j - 1; a >= 0; a--) { /* segment [a, j) */
            for (int k = 0; k < n_bits; k++)
                acc[k] += err_table ? err_table[(size_t)a * (size_t)n_bits + (size_t)k] : var[a] * exp2(-2.0 * bits[k]);
            const double *fa = f + (size_t)a * u1;
            for (int k = 0; k < n_bits; k++) {
                int64_t cost = (int64_t)(j - a) * bits[k] + overhead;
                if (cost > U) continue;
                for (int64_t u = cost; u <= U; u++) {
                    double prev = fa[u - cost];
                    if (prev == INFINITY) continue;
                    double v = prev + acc[k];
                    if (v < fj[u]) {
                        fj[u] = v;
                        from[(size_t)j * u1 + (size_t)u] = a;
                        kbits[(size_t)j * u1 + (size_t)u] = (unsigned char)k;
                    }
                }
            }
        }
    }
    const double *fd = f + (size_t)d * u1;
    int64_t ubest = -1;
    for (int64_t u = 0; u <= U; u++)
        if (fd[u] < INFINITY && (ubest < 0 || fd[u] < fd[ubest])) ubest = u;
    if (ubest < 0) {
        st = mpq_err_set(err, MPQ_ERR_INFEASIBLE, "segment_dp: no split fits %lld bits", (long long)budget_bits);
        goto done;
    }
    /* walk back, then reverse */
    int ns = 0, j = d;
    int64_t u = ubest;
    while (j > 0) {
        size_t q = (size_t)j * u1 + (size_t)u;
        int a = from[q], k = kbits[q];
        seg_start[ns] = a;
        seg_bits[ns] = bits[k];
        ns++;
        u -= (int64_t)(j - a) * bits[k] + overhead;
        j = a;
    }
    for (int s = 0; s < ns / 2; s++) {
        int t = seg_start[s]; seg_start[s] = seg_start[ns - 1 - s]; seg_start[ns - 1 - s] = t;
        t = seg_bits[s]; seg_bits[s] = seg_bits[ns - 1 - s]; seg_bits[ns - 1 - s] = t;
    }
    seg_start[ns] = d;
    *n_segments = ns;
    *distortion = fd[ubest];
done:
    free(f);
    free(from);
    free(kbits);
    free(acc);
    return st;
}
