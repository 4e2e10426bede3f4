/*
 * kv_table.c - the per-(block, pair) sensitivity table of a job's kv_sensitivity stage and the
 * exact integer bit accounting of a KV pair (API and formulas: include/mpq/mpq_kvsearch.h,
 * "Exact bit units").
 *
 * References: KVTuner (Li et al. 2025) section 4.1 (per-layer pair sensitivity); KIVI (Liu et
 * al. 2024) for per-channel keys / per-token values and the full-precision residual window.
 */
#include "mpq/mpq_kvsearch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_job.h"
#include "search/kv_internal.h"

/* ---- table -------------------------------------------------------------------------------- */

mpq_status mpq_kvsearch_table_create(int n_blocks, int n_pairs, int kv_dim, const mpq_kv_scheme *scheme,
                                     const mpq_kv_pair *pairs, mpq_kvsearch_table **out, mpq_err *err) {
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: out is NULL");
    *out = NULL;
    if (n_blocks < 1 || n_pairs < 1 || n_pairs > 254 || kv_dim < 1 || !pairs)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: bad shape (%d blocks, %d pairs, kv_dim %d)", n_blocks,
                           n_pairs, kv_dim);
    mpq_kv_scheme def = mpq_kv_scheme_default();
    if (!scheme) scheme = &def;
    if (scheme->group_size < 1 || scheme->residual < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: bad scheme (group %d, residual %d)", scheme->group_size,
                           scheme->residual);
    for (int j = 0; j < n_pairs; j++) {
        char nm[64];
        bool ok = scheme->mode == MPQ_KV_SAQ
                      ? mpq_kv_rate_q(pairs[j].k_bits) > 0 && mpq_kv_rate_q(pairs[j].v_bits) > 0
                      : kv_valid_bits(pairs[j].k_bits) && kv_valid_bits(pairs[j].v_bits);
        if (!ok)
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "kv table: pair %d: bits k%d v%d not in {2,3,4,8,16} (fractional rates: scheme saq)", j,
                               pairs[j].k_bits, pairs[j].v_bits);
        if (strlen(mpq_kv_pair_name(pairs[j], nm, sizeof nm)) >= 16)
            return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: pair %s: name longer than 15 characters", nm);
    }
    mpq_kvsearch_table *t = calloc(1, sizeof *t);
    size_t n = (size_t)n_blocks * (size_t)n_pairs;
    if (!t) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv table: out of memory");
    t->n_blocks = n_blocks;
    t->n_pairs = n_pairs;
    t->kv_dim = kv_dim;
    t->scheme = *scheme;
    t->pairs = mpq_calloc((size_t)n_pairs, sizeof *t->pairs);
    t->pair_names = mpq_calloc((size_t)n_pairs, sizeof *t->pair_names);
    t->layer_ids = mpq_calloc((size_t)n_blocks, sizeof *t->layer_ids);
    t->err = mpq_calloc(n, sizeof *t->err);
    t->se = mpq_calloc(n, sizeof *t->se);
    if (!t->pairs || !t->pair_names || !t->layer_ids || !t->err || !t->se) {
        mpq_kvsearch_table_free(t);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "kv table: out of memory");
    }
    for (int j = 0; j < n_pairs; j++) {
        t->pairs[j] = pairs[j];
        mpq_kv_pair_name(pairs[j], t->pair_names[j], sizeof t->pair_names[j]);
    }
    for (size_t i = 0; i < n; i++) t->err[i] = t->se[i] = NAN;
    snprintf(t->metric, sizeof t->metric, "kv_kl");
    *out = t;
    return MPQ_OK;
}

void mpq_kvsearch_table_free(mpq_kvsearch_table *t) {
    if (!t) return;
    free(t->pairs);
    free(t->pair_names);
    free(t->layer_ids);
    free(t->err);
    free(t->se);
    free(t);
}

int mpq_kvsearch_pair_index(const mpq_kvsearch_table *t, mpq_kv_pair p) {
    for (int j = 0; t && j < t->n_pairs; j++)
        if (t->pairs[j].k_bits == p.k_bits && t->pairs[j].v_bits == p.v_bits) return j;
    return -1;
}

mpq_status mpq_kvsearch_table_load(mpq_db *db, int64_t job_id, const char *metric, mpq_kvsearch_table **out,
                                   mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: NULL argument");
    *out = NULL;
    if (!metric) metric = "kv_kl";
    mpq_job *jh = NULL;
    mpq_db_layer *layers = NULL;
    mpq_kv_pair *pairs = NULL;
    int64_t *ids = NULL;
    double *val = NULL, *se = NULL;
    mpq_kvsearch_table *t = NULL;
    int n_layers = 0;
    mpq_status st = mpq_job_open_id(db, job_id, &jh, err); /* the stored job: spec and layer table */
    if (st != MPQ_OK) goto done;
    const mpq_db_job job = *mpq_job_get_row(jh);
    const mpq_job_spec *spec = mpq_job_get_spec(jh);
    if (!spec->has_kv || spec->n_kv_pairs < 1) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s' has no KV pairs (its spec has no \"kv\" section)", job.name);
        goto done;
    }
    mpq_kv_scheme scheme = spec->kv_scheme;
    int np = spec->n_kv_pairs;
    if (!(pairs = mpq_calloc((size_t)np, sizeof *pairs))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int j = 0; j < np; j++)
        if ((st = mpq_kv_pair_parse(spec->kv_pairs[j], &pairs[j], err)) != MPQ_OK) goto done;
    if ((st = mpq_db_layers_fetch(db, job.model_id, &layers, &n_layers, err)) != MPQ_OK) goto done;
    int nb = 0, kv_dim = 0;
    for (int i = 0; i < n_layers; i++)
        if (strcmp(layers[i].kind, "kv_cache") == 0) nb++;
    if (nb == 0) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s': its model has no KV layer rows (blk.N.kv)", job.name);
        goto done;
    }
    if (!(ids = mpq_calloc((size_t)nb, sizeof *ids))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_layers; i++) {
        const mpq_db_layer *l = &layers[i];
        if (strcmp(l->kind, "kv_cache") != 0) continue;
        if (l->block < 0 || l->block >= nb || ids[l->block] != 0 || l->cols < 1 || l->cols > (1 << 24) ||
            (kv_dim && l->cols != kv_dim)) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "job '%s': KV layer row %s: block %d / width %lld inconsistent",
                             job.name, l->name, l->block, (long long)l->cols);
            goto done;
        }
        kv_dim = (int)l->cols;
        ids[l->block] = l->id;
    }
    if ((st = mpq_kvsearch_table_create(nb, np, kv_dim, &scheme, pairs, &t, err)) != MPQ_OK) goto done;
    memcpy(t->layer_ids, ids, (size_t)nb * sizeof *ids);
    if (scheme.mode == MPQ_KV_SAQ) {
        const mpq_model *shape = mpq_job_get_shape(jh);
        t->head_dim = shape ? mpq_model_get_config(shape)->head_dim : 0;
    }
    snprintf(t->metric, sizeof t->metric, "%s", metric);
    val = mpq_calloc((size_t)nb, sizeof *val);
    se = mpq_calloc((size_t)nb, sizeof *se);
    if (!val || !se) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    int total = 0;
    for (int j = 0; j < np; j++) {
        int found = 0;
        if ((st = mpq_db_metric_fetch(db, job_id, metric, t->pair_names[j], nb, ids, val, se, &found, err)) != MPQ_OK)
            goto done;
        total += found;
        for (int b = 0; b < nb; b++) {
            t->err[(size_t)b * np + j] = val[b];
            t->se[(size_t)b * np + j] = se[b];
        }
    }
    if (total == 0) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s' has no '%s' rows for its KV pairs (run its kv_sensitivity stage)",
                         job.name, metric);
        goto done;
    }
    *out = t;
    t = NULL;
done:
    mpq_kvsearch_table_free(t);
    mpq_job_close(jh);
    free(layers);
    free(pairs);
    free(ids);
    free(val);
    free(se);
    return st;
}

/* ---- exact bit units ---------------------------------------------------------------------- */

/* G x stored bits of one half (K or V) of a block over L tokens; -1 on overflow. */
static int64_t half_units(const mpq_kvsearch_table *t, int bits, bool key, int64_t L) {
    int64_t G = t->scheme.group_size, d = t->kv_dim, Lq = L > 0 ? L : 1, r, q, a, b;
    if (bits == 16) {
        int64_t x;
        return (kv_mul64(G * 16, d, &x) && kv_mul64(x, Lq, &x)) ? x : -1;
    }
    if (t->scheme.mode == MPQ_KV_SAQ) {
        /* G x (R*16*d + (L-R)*d*r + bases), r in 1/1024 bit: d*r must be whole bits */
        int64_t rq = mpq_kv_rate_q(bits), hd = t->head_dim, db, bases = 0;
        if (rq <= 0 || !kv_mul64(d, rq, &db) || db % 1024 != 0) return -1;
        db /= 1024;
        r = L > 0 ? (t->scheme.residual < L ? t->scheme.residual : L) : 0;
        if (L > 0 && hd > 0 && d % hd == 0) bases = (d / hd) * mpq_kv_saq_basis_bits((int)hd);
        if (!kv_mul64(r, 16 * d, &a) || !kv_mul64(Lq - r, db, &b) || !kv_add64(a, b, &a) || !kv_add64(a, bases, &a) ||
            !kv_mul64(a, G, &a))
            return -1;
        return a;
    }
    bool kivi_key = key && t->scheme.mode == MPQ_KV_KIVI;
    /* per token: G * (d*b + overhead bits) */
    if (kivi_key)
        q = G * d * bits + 32 * d;
    else
        q = G * d * bits + 32 * ((d + G - 1) / G) * G;
    r = 0;
    if (L > 0) {
        r = t->scheme.residual;
        if (kivi_key && L % G > r) r = L % G;
        if (r > L) r = L;
    }
    if (!kv_mul64(r, 16 * d * G, &a) || !kv_mul64(Lq - r, q, &b) || !kv_add64(a, b, &a)) return -1;
    return a;
}

int64_t mpq_kvsearch_pair_units(const mpq_kvsearch_table *t, mpq_kv_pair p, int64_t context_len, bool overhead) {
    if (!t) return -1;
    if (!overhead)
        return t->scheme.mode == MPQ_KV_SAQ ? (int64_t)mpq_kv_rate_q(p.k_bits) + mpq_kv_rate_q(p.v_bits)
                                             : (int64_t)p.k_bits + p.v_bits;
    int64_t k = half_units(t, p.k_bits, true, context_len), v = half_units(t, p.v_bits, false, context_len), s;
    if (k < 0 || v < 0 || !kv_add64(k, v, &s)) return -1;
    return s;
}

int64_t mpq_kvsearch_units_per_bit(const mpq_kvsearch_table *t, int64_t context_len, bool overhead) {
    if (!t) return -1;
    if (!overhead) return t->scheme.mode == MPQ_KV_SAQ ? 2048 : 2;
    int64_t x;
    if (!kv_mul64(2 * (int64_t)t->scheme.group_size, t->kv_dim, &x) || !kv_mul64(x, context_len > 0 ? context_len : 1, &x))
        return -1;
    return x;
}

double mpq_kvsearch_avg_bits(const mpq_kvsearch_table *t, const int *pair_idx, int64_t context_len, bool overhead) {
    if (!t || !pair_idx) return NAN;
    double s = 0;
    for (int b = 0; b < t->n_blocks; b++) {
        if (pair_idx[b] < 0 || pair_idx[b] >= t->n_pairs) return NAN;
        s += (double)mpq_kvsearch_pair_units(t, t->pairs[pair_idx[b]], context_len, overhead);
    }
    return s / ((double)t->n_blocks * (double)mpq_kvsearch_units_per_bit(t, context_len, overhead));
}
