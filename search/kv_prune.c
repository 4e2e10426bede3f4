/*
 * kv_prune.c - intra-layer pruning of dominated KV pairs (per block, the pairs on the
 * (stored bits, error) Pareto front) and the keys-vs-values comparison of swapped pairs
 * (kXvY against kYvX). API: include/mpq/mpq_kvsearch.h.
 *
 * Reference: KVTuner (Li et al. 2025) section 4.2 (intra-layer pruning) and its observation
 * that keys are usually more sensitive than values.
 */
#include "mpq/mpq_kvsearch.h"

#include <math.h>
#include <stdlib.h>

#include "search/kv_internal.h"

/* ---- pruning ------------------------------------------------------------------------------ */

mpq_status mpq_kvsearch_prune(const mpq_kvsearch_table *t, int64_t context_len, bool overhead, bool *keep,
                              int *n_kept, mpq_err *err) {
    if (!t || !keep) return mpq_err_set(err, MPQ_ERR_INVALID, "kv prune: NULL argument");
    int np = t->n_pairs, kept = 0;
    int64_t *u = mpq_calloc((size_t)np, sizeof *u);
    if (!u) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv prune: out of memory");
    for (int j = 0; j < np; j++) {
        u[j] = mpq_kvsearch_pair_units(t, t->pairs[j], context_len, overhead);
        if (u[j] < 0) {
            free(u);
            return mpq_err_set(err, MPQ_ERR_INVALID, "kv prune: bits of %s at context %lld overflow", t->pair_names[j],
                               (long long)context_len);
        }
    }
    for (int b = 0; b < t->n_blocks; b++) {
        const double *e = t->err + (size_t)b * np;
        for (int j = 0; j < np; j++) {
            bool k = !isnan(e[j]);
            for (int i = 0; k && i < np; i++) {
                if (i == j || isnan(e[i])) continue;
                if (u[i] <= u[j] && e[i] <= e[j] && (u[i] < u[j] || e[i] < e[j])) k = false;
            }
            keep[(size_t)b * np + j] = k;
            kept += k;
        }
    }
    free(u);
    if (n_kept) *n_kept = kept;
    return MPQ_OK;
}

/* ---- K vs V ------------------------------------------------------------------------------- */

mpq_status mpq_kvsearch_asymmetry(const mpq_kvsearch_table *t, mpq_kvsearch_kv_cmp **out, int *n_out, mpq_err *err) {
    if (!t || !out || !n_out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv asymmetry: NULL argument");
    *out = NULL;
    *n_out = 0;
    int np = t->n_pairs, n = 0;
    mpq_kvsearch_kv_cmp *c = mpq_calloc((size_t)t->n_blocks * (size_t)np, sizeof *c);
    if (!c) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv asymmetry: out of memory");
    for (int b = 0; b < t->n_blocks; b++)
        for (int j = 0; j < np; j++) {
            mpq_kv_pair p = t->pairs[j];
            if (mpq_kv_rate_q(p.k_bits) <= mpq_kv_rate_q(p.v_bits)) continue;
            int s = mpq_kvsearch_pair_index(t, (mpq_kv_pair){p.v_bits, p.k_bits});
            if (s < 0) continue;
            double eh = t->err[(size_t)b * np + j], el = t->err[(size_t)b * np + s];
            if (isnan(eh) || isnan(el)) continue;
            double sh = t->se[(size_t)b * np + j], sl = t->se[(size_t)b * np + s];
            c[n++] = (mpq_kvsearch_kv_cmp){.block = b, .hi_k = j, .lo_k = s, .diff = el - eh,
                                          .se = sqrt(sh * sh + sl * sl)};
        }
    if (n == 0) {
        free(c);
        return MPQ_OK;
    }
    *out = c;
    *n_out = n;
    return MPQ_OK;
}
