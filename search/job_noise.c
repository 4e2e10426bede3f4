/*
 * job_noise.c - the "noise_sensitivity" stage of a job: Q-Palette's linear loss model
 * (Lee et al., "Q-Palette: Fractional-Bit Quantizers Toward Optimal Bit Allocation for
 * Efficient LLM Deployment", arXiv 2509.20214): the loss change of quantizing layer l is
 * modelled as dL ~= a_l * ||Q(W_l) - W_l||^2 / ||W_l||^2, so a_l is measured once per layer
 * (a few passes, whatever the number of candidates) and the loss of every candidate follows from
 * its stored weight_rel.
 *
 * a_l is measured by replacing W by W + E at a few relative noise levels t_i = ||E||^2/||W||^2
 * with E Gaussian (close to the error of a quantizer behind an incoherence rotation), running the
 * single-layer measurement of layer_sensitivity (same windows, prefix reuse: mpq_calib.h) and
 * fitting kl_i = a t_i through the origin. The fit weights each level by 1/t_i^2: with levels a
 * decade apart an unweighted fit would be the slope of the largest level alone, while KL's
 * spread grows with its size, so each level's ratio kl_i / t_i counts alike (a = their mean).
 *
 * Noise: level i of linear layer j uses xoshiro256** (mpq_rng.h) seeded with
 * seed * 2^32 + j * 2^8 + i, standard Gaussians by Box-Muller (z = sqrt(-2 ln(1 - u1)) *
 * cos(2 pi u2), then the sine of the same pair), scaled in double so that ||E||^2 = t ||W||^2.
 * Each level draws afresh, so the fit's residual also reflects the spread over directions.
 */
#include "job_noise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_rng.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

uint64_t mpq_job_noise_seed(int64_t seed, int linear_index, int level) {
    return ((uint64_t)seed << 32) + ((uint64_t)(uint32_t)linear_index << 8) + (uint64_t)(uint32_t)level;
}

mpq_status mpq_job_noise_inject(const float *w, size_t n, double t, uint64_t seed, float *out, double *realized,
                                mpq_err *err) {
    if (!w || !out || n == 0) return mpq_err_set(err, MPQ_ERR_INVALID, "noise: NULL or empty weights");
    if (!(t > 0) || !isfinite(t)) return mpq_err_set(err, MPQ_ERR_INVALID, "noise: level %g is not positive", t);
    double *g = mpq_calloc(n, sizeof *g);
    if (!g) return mpq_err_set(err, MPQ_ERR_NOMEM, "noise: out of memory for %zu weights", n);
    mpq_rng r;
    mpq_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i += 2) {
        double u1 = 1.0 - mpq_rng_uniform(&r), u2 = mpq_rng_uniform(&r); /* u1 in (0, 1] */
        double rad = sqrt(-2.0 * log(u1));
        g[i] = rad * cos(2.0 * M_PI * u2);
        if (i + 1 < n) g[i + 1] = rad * sin(2.0 * M_PI * u2);
    }
    double w2 = 0.0, g2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        w2 += (double)w[i] * (double)w[i];
        g2 += g[i] * g[i];
    }
    mpq_status st = MPQ_OK;
    if (!(w2 > 0) || !isfinite(w2)) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "noise: the weights have norm %g: relative noise is undefined", sqrt(w2));
        goto done;
    }
    if (!(g2 > 0)) { /* cannot happen for n >= 1 except with probability 0 */
        st = mpq_err_set(err, MPQ_ERR_INVALID, "noise: degenerate draw");
        goto done;
    }
    const double s = sqrt(t * w2 / g2);
    double e2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)((double)w[i] + s * g[i]);
        double d = (double)out[i] - (double)w[i];
        e2 += d * d;
    }
    if (realized) *realized = e2 / w2;
done:
    free(g);
    return st;
}

void mpq_job_noise_fit(const double *t, const double *kl, int m, double *a, double *a_se, double *resid) {
    double mean = 0.0;
    for (int i = 0; i < m; i++) mean += kl[i] / t[i];
    mean /= m;
    double ss = 0.0, rr = 0.0;
    bool inf = false;
    for (int i = 0; i < m; i++) {
        double d = kl[i] / t[i] - mean;
        ss += d * d;
        double pred = mean * t[i];
        if (pred != 0) rr += ((kl[i] - pred) / pred) * ((kl[i] - pred) / pred);
        else if (kl[i] != 0) inf = true;
    }
    *a = mean;
    *a_se = m > 1 ? sqrt(ss / (m - 1)) / sqrt((double)m) : 0.0;
    *resid = inf ? INFINITY : sqrt(rr / m);
}

mpq_status mpq_job_noise_compute(mpq_calib *cal, const mpq_model *m, const mpq_job_noise_spec *ns, int linear_index,
                                 mpq_job_noise_result *out, mpq_err *err) {
    if (!cal || !m || !ns || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "noise: NULL argument");
    if (linear_index < 0 || linear_index >= mpq_model_n_linear(m))
        return mpq_err_set(err, MPQ_ERR_INVALID, "noise: linear index %d out of range", linear_index);
    if (ns->n_levels < 1 || ns->n_levels > MPQ_JOB_NOISE_MAX_LEVELS)
        return mpq_err_set(err, MPQ_ERR_INVALID, "noise: %d levels (1..%d)", ns->n_levels, MPQ_JOB_NOISE_MAX_LEVELS);
    memset(out, 0, sizeof *out);
    const mpq_layer_info *li = mpq_model_linear(m, linear_index);
    const mpq_weights *W0 = mpq_model_get_weights(m);
    float *buf = mpq_calloc((size_t)li->n_params, sizeof *buf);
    float *wide = W0->dtype != MPQ_WEIGHTS_F32 ? mpq_calloc((size_t)li->n_params, sizeof *wide) : NULL;
    if (!buf || (W0->dtype != MPQ_WEIGHTS_F32 && !wide)) {
        free(buf);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "noise: out of memory for %s", li->name);
    }
    const float *w = mpq_weights_linear_f32(W0, li, wide); /* widened into wide if 16-bit */
    mpq_status st = MPQ_OK;
    double kl[MPQ_JOB_NOISE_MAX_LEVELS];
    for (int i = 0; i < ns->n_levels && st == MPQ_OK; i++) {
        uint64_t sd = mpq_job_noise_seed(ns->seed, linear_index, i);
        if ((st = mpq_job_noise_inject(w, (size_t)li->n_params, ns->levels[i], sd, buf, &out->realized[i], err)) !=
            MPQ_OK) {
            mpq_err_prefix(err, "%s", li->name);
            break;
        }
        if ((st = mpq_calib_layer_weights(cal, linear_index, buf, &out->kl[i], err)) != MPQ_OK) break;
        kl[i] = out->kl[i].kl;
    }
    if (st == MPQ_OK) {
        out->n_levels = ns->n_levels;
        mpq_job_noise_fit(out->realized, kl, ns->n_levels, &out->a, &out->a_se, &out->resid);
    }
    free(buf);
    free(wide);
    return st;
}
