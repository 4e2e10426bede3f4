/*
 * job_noise.h - internal interface (not installed) between the job driver (job_run.c) and the
 * noise_sensitivity stage (job_noise.c): the noise injection, the fit, and the computation of
 * one unit. The stage and its rows are documented in include/mpq/mpq_job.h.
 */
#ifndef MPQ_JOB_NOISE_H
#define MPQ_JOB_NOISE_H

#include <stddef.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_calib.h"
#include "mpq/mpq_job.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Seed of the noise of (linear layer, level): seed * 2^32 + linear_index * 2^8 + level. */
uint64_t mpq_job_noise_seed(int64_t seed, int linear_index, int level);

/* out = W + E over n weights, E = G * s with G standard Gaussian (Box-Muller on mpq_rng seeded
 * with `seed`) and s chosen in double so that ||E||^2 / ||W||^2 = t exactly before out is rounded
 * to float. *realized = ||out - W||^2 / ||W||^2 computed from the float result (in double).
 * MPQ_ERR_INVALID when ||W|| = 0 or t is not a positive finite number. */
mpq_status mpq_job_noise_inject(const float *w, size_t n, double t, uint64_t seed, float *out, double *realized,
                                mpq_err *err);

/* The fit of kl_i ~= a * t_i through the origin, weights 1 / t_i^2 (every level counts
 * alike): a = mean_i kl_i / t_i; *a_se = sample sd of kl_i / t_i over sqrt(m) (0 when m = 1);
 * *resid = sqrt(mean_i ((kl_i - a t_i) / (a t_i))^2) (+inf when a = 0 and some kl_i != 0, 0 when
 * all are 0). m >= 1, t_i > 0. */
void mpq_job_noise_fit(const double *t, const double *kl, int m, double *a, double *a_se, double *resid);

/* One unit's measurements: for every level, the realized level, the calib result; and the fit. */
typedef struct mpq_job_noise_result {
    int n_levels;
    double realized[MPQ_JOB_NOISE_MAX_LEVELS];
    mpq_calib_result kl[MPQ_JOB_NOISE_MAX_LEVELS];
    double a, a_se, resid;
} mpq_job_noise_result;

/* Measures linear layer linear_index of cal's model at every level of ns (mpq_calib_layer_weights
 * on W + E). Thread-safe across different cal forks. MPQ_ERR_NOMEM, MPQ_ERR_INVALID (zero weights),
 * calib errors. */
mpq_status mpq_job_noise_compute(mpq_calib *cal, const mpq_model *m, const mpq_job_noise_spec *ns, int linear_index,
                                 mpq_job_noise_result *out, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_JOB_NOISE_H */
