/*
 * kv_search.c - KVTuner-style KV-cache precision search over stored sensitivities: the
 * per-(block, pair) table, exact integer bit accounting, intra-layer Pareto pruning, K-vs-V
 * asymmetry, average-linkage clustering of blocks, the exact (average bits, predicted error)
 * frontier, the joint weight + KV byte budget (ILP), measured evaluation against FP and
 * KVTuner-format export. API and formulas: include/mpq/mpq_kvsearch.h.
 *
 * References: KVTuner (Li et al. 2025) sections 4.1-4.3 (pair sensitivity, intra-layer
 * pruning, inter-layer clustering, multi-objective search); KIVI (Liu et al. 2024) for the
 * key/value grouping; HAWQ-V3 (Yao et al. 2021) for the ILP; UPGMA (Sokal & Michener 1958)
 * for average linkage; Spearman (1904) with average ranks for ties.
 */
#include "mpq/mpq_kvsearch.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_tokenizer.h"

/* ---- small helpers ------------------------------------------------------------------------ */

static bool valid_bits(int b) { return b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }

/* a*b with int64 overflow check (a, b >= 0) */
static bool mul64(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > INT64_MAX / a) return false;
    *out = a * b;
    return true;
}

static bool add64(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0 || a > INT64_MAX - b) return false;
    *out = a + b;
    return true;
}

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
    for (int j = 0; j < n_pairs; j++)
        if (!valid_bits(pairs[j].k_bits) || !valid_bits(pairs[j].v_bits))
            return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: pair %d: bits k%d v%d not in {2,3,4,8,16}", j,
                               pairs[j].k_bits, pairs[j].v_bits);
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
    if (bits >= 16) {
        int64_t x;
        return (mul64(G * 16, d, &x) && mul64(x, Lq, &x)) ? x : -1;
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
    if (!mul64(r, 16 * d * G, &a) || !mul64(Lq - r, q, &b) || !add64(a, b, &a)) return -1;
    return a;
}

int64_t mpq_kvsearch_pair_units(const mpq_kvsearch_table *t, mpq_kv_pair p, int64_t context_len, bool overhead) {
    if (!t) return -1;
    if (!overhead) return (int64_t)p.k_bits + p.v_bits;
    int64_t k = half_units(t, p.k_bits, true, context_len), v = half_units(t, p.v_bits, false, context_len), s;
    if (k < 0 || v < 0 || !add64(k, v, &s)) return -1;
    return s;
}

int64_t mpq_kvsearch_units_per_bit(const mpq_kvsearch_table *t, int64_t context_len, bool overhead) {
    if (!t) return -1;
    if (!overhead) return 2;
    int64_t x;
    if (!mul64(2 * (int64_t)t->scheme.group_size, t->kv_dim, &x) || !mul64(x, context_len > 0 ? context_len : 1, &x))
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
            if (p.k_bits <= p.v_bits) continue;
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

/* ---- clustering --------------------------------------------------------------------------- */

#define LOG_FLOOR 1e-12

double mpq_kvsearch_distance(const mpq_kvsearch_table *t, const bool *keep, int a, int b) {
    if (!t || a < 0 || b < 0 || a >= t->n_blocks || b >= t->n_blocks) return NAN;
    int np = t->n_pairs, nu = 0;
    double emax = LOG_FLOOR;
    size_t n = (size_t)t->n_blocks * np;
    for (size_t i = 0; i < n; i++)
        if (!isnan(t->err[i]) && t->err[i] > emax) emax = t->err[i];
    double big = log(emax) + log(100.0), s = 0;
    for (int j = 0; j < np; j++) {
        bool in_u = false;
        for (int x = 0; x < t->n_blocks && !in_u; x++) {
            size_t k = (size_t)x * np + j;
            in_u = keep ? keep[k] : !isnan(t->err[k]);
        }
        if (!in_u) continue;
        double ea = t->err[(size_t)a * np + j], eb = t->err[(size_t)b * np + j];
        double la = isnan(ea) ? big : log(fmax(ea, LOG_FLOOR)), lb = isnan(eb) ? big : log(fmax(eb, LOG_FLOOR));
        s += (la - lb) * (la - lb);
        nu++;
    }
    return nu ? sqrt(s / nu) : NAN;
}

mpq_status mpq_kvsearch_cluster(const mpq_kvsearch_table *t, const bool *keep, int n_groups, double threshold,
                                int *group, int *n_groups_out, mpq_err *err) {
    if (!t || !group) return mpq_err_set(err, MPQ_ERR_INVALID, "kv cluster: NULL argument");
    if (n_groups <= 0 && !(threshold >= 0))
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv cluster: give a group count > 0 or a threshold >= 0");
    int n = t->n_blocks;
    double *D = mpq_calloc((size_t)n * (size_t)n, sizeof *D);
    int *owner = mpq_calloc((size_t)n, sizeof *owner); /* cluster (= its lowest block) of each block */
    int *size = mpq_calloc((size_t)n, sizeof *size);
    if (!D || !owner || !size) {
        free(D);
        free(owner);
        free(size);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "kv cluster: out of memory");
    }
    mpq_status st = MPQ_OK;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            D[(size_t)a * n + b] = a == b ? 0 : mpq_kvsearch_distance(t, keep, a, b);
            if (isnan(D[(size_t)a * n + b])) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "kv cluster: no measured pair to compare blocks on");
                goto done;
            }
        }
    for (int a = 0; a < n; a++) {
        owner[a] = a;
        size[a] = 1;
    }
    int n_clusters = n;
    while (n_clusters > 1 && (n_groups <= 0 || n_clusters > n_groups)) {
        /* average linkage between live clusters ci < cj: mean of D over member pairs */
        int bi = -1, bj = -1;
        double best = INFINITY;
        for (int ci = 0; ci < n; ci++) {
            if (size[ci] == 0) continue;
            for (int cj = ci + 1; cj < n; cj++) {
                if (size[cj] == 0) continue;
                double s = 0;
                for (int a = 0; a < n; a++)
                    if (owner[a] == ci)
                        for (int b = 0; b < n; b++)
                            if (owner[b] == cj) s += D[(size_t)a * n + b];
                s /= (double)size[ci] * (double)size[cj];
                if (s < best) {
                    best = s;
                    bi = ci;
                    bj = cj;
                }
            }
        }
        if (n_groups <= 0 && best > threshold) break;
        for (int a = 0; a < n; a++)
            if (owner[a] == bj) owner[a] = bi;
        size[bi] += size[bj];
        size[bj] = 0;
        n_clusters--;
    }
    int next = 0;
    for (int a = 0; a < n; a++) size[a] = -1; /* reuse: cluster -> group id */
    for (int a = 0; a < n; a++) {
        if (size[owner[a]] < 0) size[owner[a]] = next++;
        group[a] = size[owner[a]];
    }
    if (n_groups_out) *n_groups_out = next;
done:
    free(D);
    free(owner);
    free(size);
    return st;
}

/* ---- frontier ----------------------------------------------------------------------------- */

mpq_kvsearch_opts mpq_kvsearch_opts_default(void) {
    return (mpq_kvsearch_opts){.context_len = 0, .overhead = true, .keep = NULL, .group = NULL, .n_groups = 0};
}

void mpq_kvsearch_frontier_free(mpq_kvsearch_frontier *f) {
    if (!f) return;
    if (f->points) free(f->points[0].pair);
    free(f->points);
    free(f);
}

mpq_status mpq_kvsearch_frontier_compute(const mpq_kvsearch_table *t, const mpq_kvsearch_opts *o,
                                         mpq_kvsearch_frontier **out, mpq_err *err) {
    if (!t || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv frontier: NULL argument");
    *out = NULL;
    mpq_kvsearch_opts opts = o ? *o : mpq_kvsearch_opts_default();
    int nb = t->n_blocks, np = t->n_pairs;
    int n_items = opts.group ? opts.n_groups : nb;
    if (opts.group) {
        if (opts.n_groups < 1 || opts.n_groups > nb)
            return mpq_err_set(err, MPQ_ERR_INVALID, "kv frontier: %d groups for %d blocks", opts.n_groups, nb);
        for (int b = 0; b < nb; b++)
            if (opts.group[b] < 0 || opts.group[b] >= opts.n_groups)
                return mpq_err_set(err, MPQ_ERR_INVALID, "kv frontier: block %d: group %d out of range", b,
                                   opts.group[b]);
    }
    double t0 = mpq_time_now();
    mpq_problem *p = NULL;
    mpq_frontier *fr = NULL;
    mpq_kvsearch_frontier *f = NULL;
    int *choice = NULL, *all = NULL;
    int64_t *units = mpq_calloc((size_t)np, sizeof *units);
    mpq_status st = MPQ_OK;
    if (!units) return mpq_err_set(err, MPQ_ERR_NOMEM, "kv frontier: out of memory");
    for (int j = 0; j < np; j++)
        if ((units[j] = mpq_kvsearch_pair_units(t, t->pairs[j], opts.context_len, opts.overhead)) < 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "kv frontier: bits of %s overflow", t->pair_names[j]);
            goto done;
        }
    if ((st = mpq_problem_create(n_items, np, 1, &p, err)) != MPQ_OK) goto done;
    mpq_problem_set_resource_name(p, 0, opts.overhead ? "kv bit units" : "kv nominal bits", NULL);
    for (int j = 0; j < np; j++) mpq_problem_set_option_name(p, j, t->pair_names[j], NULL);
    for (int it = 0; it < n_items; it++) {
        int n_ok = 0;
        char name[64];
        snprintf(name, sizeof name, opts.group ? "kv group %d" : "blk.%d.kv", it);
        mpq_problem_set_item_name(p, it, name, NULL);
        for (int j = 0; j < np; j++) {
            double loss = 0, cost = 0;
            bool measured = true, kept = opts.keep == NULL, any = false;
            for (int b = 0; b < nb; b++) {
                if ((opts.group ? opts.group[b] : b) != it) continue;
                any = true;
                double e = t->err[(size_t)b * np + j];
                if (isnan(e)) measured = false;
                loss += e;
                cost += (double)units[j];
                if (opts.keep && opts.keep[(size_t)b * np + j]) kept = true;
            }
            bool ok = any && measured && kept;
            if ((st = mpq_problem_set_allowed(p, it, j, ok, err)) != MPQ_OK) goto done;
            if (!ok) continue;
            n_ok++;
            if ((st = mpq_problem_set_loss(p, it, j, loss, err)) != MPQ_OK ||
                (st = mpq_problem_set_cost(p, 0, it, j, cost, err)) != MPQ_OK)
                goto done;
        }
        if (n_ok == 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "kv frontier: %s has no measured (kept) pair", name);
            goto done;
        }
    }
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = false;
    if ((st = mpq_frontier_exact(p, &so, &fr, err)) != MPQ_OK) goto done;
    if (!(f = calloc(1, sizeof *f)) || !(f->points = mpq_calloc(fr->n_points ? fr->n_points : 1, sizeof *f->points)) ||
        !(all = mpq_calloc((fr->n_points ? fr->n_points : 1) * (size_t)nb, sizeof *all)) ||
        !(choice = mpq_calloc((size_t)n_items, sizeof *choice))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "kv frontier: out of memory");
        goto done;
    }
    f->points[0].pair = all;
    all = NULL;
    f->n_blocks = nb;
    f->n_points = fr->n_points;
    f->opts = opts;
    f->opts.keep = NULL;
    f->opts.group = NULL;
    f->units_per_bit = (int64_t)nb * mpq_kvsearch_units_per_bit(t, opts.context_len, opts.overhead);
    for (size_t k = 0; k < fr->n_points; k++) {
        mpq_kvsearch_point *pt = &f->points[k];
        pt->pair = f->points[0].pair + k * (size_t)nb;
        if ((st = mpq_frontier_assignment(p, fr, k, choice, err)) != MPQ_OK) goto done;
        double loss = 0, v = 0;
        int64_t u = 0;
        for (int b = 0; b < nb; b++) {
            int j = choice[opts.group ? opts.group[b] : b];
            pt->pair[b] = j;
            loss += t->err[(size_t)b * np + j];
            v += t->se[(size_t)b * np + j] * t->se[(size_t)b * np + j];
            u += units[j];
        }
        pt->units = u;
        pt->loss = loss;
        pt->loss_se = sqrt(v);
        pt->bits = (double)u / (double)f->units_per_bit;
        pt->bits_nominal = mpq_kvsearch_avg_bits(t, pt->pair, opts.context_len, false);
        pt->bits_overhead = mpq_kvsearch_avg_bits(t, pt->pair, opts.context_len, true);
    }
    f->seconds = mpq_time_now() - t0;
    *out = f;
    f = NULL;
done:
    mpq_kvsearch_frontier_free(f);
    free(all);
    free(choice);
    free(units);
    mpq_frontier_free(fr);
    mpq_problem_free(p);
    return st;
}

size_t mpq_kvsearch_frontier_at_bits(const mpq_kvsearch_frontier *f, double bits) {
    if (!f || !(bits >= 0)) return SIZE_MAX;
    double lim = floor(bits * (double)f->units_per_bit + 1e-9);
    size_t best = SIZE_MAX;
    for (size_t k = 0; k < f->n_points; k++)
        if ((double)f->points[k].units <= lim) best = k;
    return best;
}

/* ---- storage ------------------------------------------------------------------------------ */

mpq_status mpq_kvsearch_frontier_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                       const mpq_kvsearch_frontier *f, int64_t *frontier_id, mpq_err *err) {
    if (!db || !t || !f) return mpq_err_set(err, MPQ_ERR_INVALID, "kv frontier store: NULL argument");
    mpq_db_frontier_point *pts = mpq_calloc(f->n_points ? f->n_points : 1, sizeof *pts);
    if (!pts) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < f->n_points; k++)
        pts[k] = (mpq_db_frontier_point){.cost = f->points[k].bits, .loss = f->points[k].loss, .solution_id = 0};
    int64_t id = 0;
    mpq_status st = mpq_db_frontier_insert(db, job_id, f->opts.overhead ? "kv_bits" : "kv_bits_nominal", t->metric,
                                           pts, (int)f->n_points, &id, err);
    free(pts);
    if (st == MPQ_OK && frontier_id) *frontier_id = id;
    return st;
}

mpq_status mpq_kvsearch_solution_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const char *name,
                                       const int *pair_idx, double loss, const char *budgets_json,
                                       const char *config_json, int64_t *solution_id, mpq_err *err) {
    if (!db || !t || !name || !pair_idx) return mpq_err_set(err, MPQ_ERR_INVALID, "kv solution store: NULL argument");
    mpq_db_assignment *a = mpq_calloc((size_t)t->n_blocks, sizeof *a);
    if (!a) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int b = 0; b < t->n_blocks; b++) {
        a[b].layer_id = t->layer_ids[b];
        snprintf(a[b].kv_pair, sizeof a[b].kv_pair, "%s", t->pair_names[pair_idx[b]]);
    }
    mpq_db_solution s = {.job_id = job_id, .metric_expr = (char *)t->metric, .budgets_json = (char *)budgets_json,
                         .config_json = (char *)config_json, .objective = loss, .bound = NAN, .gap = NAN,
                         .seconds = NAN};
    snprintf(s.name, sizeof s.name, "%s", name);
    snprintf(s.solver, sizeof s.solver, "kv-frontier");
    snprintf(s.status, sizeof s.status, "optimal");
    mpq_status st = mpq_db_solution_insert(db, &s, a, t->n_blocks, solution_id, err);
    free(a);
    return st;
}

static mpq_status put_json(mpq_db *db, int64_t job_id, const char *name, cJSON *o, mpq_err *err) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = mpq_db_artifact_put(db, job_id, name, s, strlen(s), err);
    cJSON_free(s);
    return st;
}

mpq_status mpq_kvsearch_prune_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const bool *keep,
                                    int64_t context_len, bool overhead, mpq_err *err) {
    if (!db || !t || !keep) return mpq_err_set(err, MPQ_ERR_INVALID, "kv prune store: NULL argument");
    cJSON *o = cJSON_CreateObject();
    cJSON *layers = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "metric", t->metric) &&
              cJSON_AddNumberToObject(o, "context", (double)context_len) &&
              cJSON_AddBoolToObject(o, "overhead", overhead) && (layers = cJSON_AddObjectToObject(o, "layers"));
    for (int b = 0; ok && b < t->n_blocks; b++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.kv", b);
        cJSON *arr = cJSON_AddArrayToObject(layers, name);
        ok = arr != NULL;
        for (int j = 0; ok && j < t->n_pairs; j++)
            if (keep[(size_t)b * t->n_pairs + j]) {
                cJSON *s = cJSON_CreateString(t->pair_names[j]);
                ok = s && cJSON_AddItemToArray(arr, s);
            }
    }
    if (!ok) {
        cJSON_Delete(o);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    return put_json(db, job_id, "kv_prune", o, err);
}

mpq_status mpq_kvsearch_groups_store(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t, const int *group,
                                     int n_groups, int target, double threshold, mpq_err *err) {
    if (!db || !t || !group) return mpq_err_set(err, MPQ_ERR_INVALID, "kv groups store: NULL argument");
    cJSON *o = cJSON_CreateObject();
    cJSON *gs = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "metric", t->metric) &&
              cJSON_AddNumberToObject(o, "n_groups", n_groups) &&
              (target > 0 ? cJSON_AddNumberToObject(o, "target", target) != NULL
                          : cJSON_AddNumberToObject(o, "threshold", threshold) != NULL) &&
              (gs = cJSON_AddArrayToObject(o, "groups"));
    for (int g = 0; ok && g < n_groups; g++) {
        cJSON *arr = cJSON_CreateArray();
        ok = arr && cJSON_AddItemToArray(gs, arr);
        for (int b = 0; ok && b < t->n_blocks; b++)
            if (group[b] == g) {
                cJSON *x = cJSON_CreateNumber(b);
                ok = x && cJSON_AddItemToArray(arr, x);
            }
    }
    if (!ok) {
        cJSON_Delete(o);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    return put_json(db, job_id, "kv_clusters", o, err);
}

/* ---- joint weight + KV -------------------------------------------------------------------- */

mpq_kvsearch_joint_opts mpq_kvsearch_joint_opts_default(void) {
    return (mpq_kvsearch_joint_opts){.budget_bytes = INFINITY, .context_len = 4096, .batch = 1,
                                     .weight_metric = "kl", .fixed_bytes = 0};
}

void mpq_kvsearch_joint_free(mpq_kvsearch_joint *j) {
    if (!j) return;
    mpq_problem_free(j->problem);
    free(j->linear_names);
    free(j->linear_params);
    free(j->cand_names);
    free(j);
}

mpq_status mpq_kvsearch_joint_build(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                    const mpq_kvsearch_joint_opts *o, mpq_kvsearch_joint **out, mpq_err *err) {
    if (!db || !t || !o || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: NULL argument");
    *out = NULL;
    if (o->context_len < 1 || o->batch < 1 || o->fixed_bytes < 0 || !(o->budget_bytes >= 0))
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: need context > 0, batch > 0, budget >= 0 (got %lld, %lld, %g)",
                           (long long)o->context_len, (long long)o->batch, o->budget_bytes);
    const char *wm = o->weight_metric ? o->weight_metric : "kl";
    mpq_db_job job;
    mpq_db_layer *layers = NULL;
    char **cands = NULL;
    int n_layers = 0, n_cands = 0;
    int64_t *ids = NULL;
    double *val = NULL;
    mpq_kvsearch_joint *j = NULL;
    mpq_status st = mpq_db_job_get(db, job_id, &job, err);
    if (st != MPQ_OK) goto done;
    if ((st = mpq_db_layers_fetch(db, job.model_id, &layers, &n_layers, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_metric_candidates(db, job_id, wm, &cands, &n_cands, err)) != MPQ_OK) goto done;
    if (n_cands == 0) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s' has no '%s' rows for weight candidates (run its "
                         "layer_sensitivity stage)", job.name, wm);
        goto done;
    }
    int nl = 0;
    for (int i = 0; i < n_layers; i++) nl += strcmp(layers[i].kind, "kv_cache") != 0;
    if (nl == 0 || n_cands + 1 > 255 || t->n_pairs + 1 > 255) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: job '%s': %d linear layers, %d candidates", job.name, nl,
                         n_cands);
        goto done;
    }
    if (!(j = calloc(1, sizeof *j)) || !(j->linear_names = mpq_calloc((size_t)nl, sizeof *j->linear_names)) ||
        !(j->linear_params = mpq_calloc((size_t)nl, sizeof *j->linear_params)) ||
        !(j->cand_names = mpq_calloc((size_t)n_cands + 1, sizeof *j->cand_names)) ||
        !(ids = mpq_calloc((size_t)nl, sizeof *ids)) || !(val = mpq_calloc((size_t)nl, sizeof *val))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    j->n_linear = nl;
    j->n_blocks = t->n_blocks;
    j->n_cands = n_cands + 1;
    j->n_kv_options = t->n_pairs + 1;
    j->opts = *o;
    j->opts.weight_metric = NULL;
    j->cost_per_byte = 8 * (int64_t)t->scheme.group_size;
    int nopt = j->n_cands > j->n_kv_options ? j->n_cands : j->n_kv_options;
    if ((st = mpq_problem_create(nl + t->n_blocks, nopt, 1, &j->problem, err)) != MPQ_OK) goto done;
    mpq_problem *p = j->problem;
    mpq_problem_set_resource_name(p, 0, "bytes x 8G", NULL);
    int li = 0;
    for (int i = 0; i < n_layers; i++) {
        if (strcmp(layers[i].kind, "kv_cache") == 0) continue;
        snprintf(j->linear_names[li], sizeof j->linear_names[li], "%s", layers[i].name);
        j->linear_params[li] = layers[i].rows * layers[i].cols;
        ids[li] = layers[i].id;
        mpq_problem_set_item_name(p, li, layers[i].name, NULL);
        mpq_problem_set_n_options(p, li, j->n_cands, NULL);
        li++;
    }
    for (int c = 0; c <= n_cands; c++) {
        const char *cn = c < n_cands ? cands[c] : "f32";
        mpq_candidate cd;
        snprintf(j->cand_names[c], sizeof j->cand_names[c], "%s", cn);
        if ((st = mpq_candidate_parse(cn, &cd, err)) != MPQ_OK) goto done;
        int found = nl;
        if (c < n_cands &&
            (st = mpq_db_metric_fetch(db, job_id, wm, cn, nl, ids, val, NULL, &found, err)) != MPQ_OK)
            goto done;
        li = 0;
        for (int i = 0; i < n_layers; i++) {
            if (strcmp(layers[i].kind, "kv_cache") == 0) continue;
            double loss = c < n_cands ? val[li] : 0.0;
            int64_t bytes = mpq_candidate_bytes(&cd, layers[i].rows, layers[i].cols), cost;
            if (bytes < 0 || !mul64(bytes, j->cost_per_byte, &cost)) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: %s: size of %s overflows", layers[i].name, cn);
                goto done;
            }
            if (isnan(loss)) {
                if ((st = mpq_problem_set_allowed(p, li, c, false, err)) != MPQ_OK) goto done;
            } else if ((st = mpq_problem_set_loss(p, li, c, loss, err)) != MPQ_OK ||
                       (st = mpq_problem_set_cost(p, 0, li, c, (double)cost, err)) != MPQ_OK)
                goto done;
            li++;
        }
    }
    for (int b = 0; b < t->n_blocks; b++) {
        int it = nl + b;
        char name[32];
        snprintf(name, sizeof name, "blk.%d.kv", b);
        mpq_problem_set_item_name(p, it, name, NULL);
        mpq_problem_set_n_options(p, it, j->n_kv_options, NULL);
        for (int q = 0; q < j->n_kv_options; q++) {
            mpq_kv_pair pr = q < t->n_pairs ? t->pairs[q] : (mpq_kv_pair){16, 16};
            double loss = q < t->n_pairs ? t->err[(size_t)b * t->n_pairs + q] : 0.0;
            int64_t u = mpq_kvsearch_pair_units(t, pr, o->context_len, true), cost;
            if (u < 0 || !mul64(u, o->batch, &cost) || cost > ((int64_t)1 << 53)) {
                st = mpq_err_set(err, MPQ_ERR_INVALID, "kv joint: KV size at context %lld x batch %lld overflows",
                                 (long long)o->context_len, (long long)o->batch);
                goto done;
            }
            if (isnan(loss)) {
                if ((st = mpq_problem_set_allowed(p, it, q, false, err)) != MPQ_OK) goto done;
            } else if ((st = mpq_problem_set_loss(p, it, q, loss, err)) != MPQ_OK ||
                       (st = mpq_problem_set_cost(p, 0, it, q, (double)cost, err)) != MPQ_OK)
                goto done;
        }
    }
    double budget = floor((o->budget_bytes - (double)o->fixed_bytes) * (double)j->cost_per_byte);
    if (isinf(o->budget_bytes)) budget = INFINITY;
    if (!(budget >= 0)) {
        st = mpq_err_set(err, MPQ_ERR_INFEASIBLE, "kv joint: budget %.0f bytes is below the %lld fixed bytes",
                         o->budget_bytes, (long long)o->fixed_bytes);
        goto done;
    }
    if ((st = mpq_problem_set_budget(p, 0, budget, err)) != MPQ_OK) goto done;
    *out = j;
    j = NULL;
done:
    mpq_kvsearch_joint_free(j);
    mpq_db_strings_free(cands, n_cands);
    free(layers);
    free(ids);
    free(val);
    return st;
}

void mpq_kvsearch_joint_summary(const mpq_kvsearch_joint *j, const mpq_kvsearch_table *t, const mpq_solution *s,
                                mpq_kvsearch_joint_result *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!j || !t || !s) return;
    double wc = 0, kc = 0, params = 0;
    for (int i = 0; i < j->n_linear; i++) {
        wc += mpq_problem_cost(j->problem, 0, i, s->choice[i]);
        out->loss_weights += mpq_problem_loss(j->problem, i, s->choice[i]);
        params += (double)j->linear_params[i];
    }
    for (int b = 0; b < j->n_blocks; b++) {
        int it = j->n_linear + b;
        kc += mpq_problem_cost(j->problem, 0, it, s->choice[it]);
        out->loss_kv += mpq_problem_loss(j->problem, it, s->choice[it]);
    }
    double cpb = (double)j->cost_per_byte;
    out->weight_bytes = wc / cpb + (double)j->opts.fixed_bytes;
    out->kv_bytes = kc / cpb;
    out->avg_weight_bits = params > 0 ? 8.0 * (wc / cpb) / params : NAN;
    out->avg_kv_bits = kc / ((double)j->opts.batch * (double)j->n_blocks *
                             (double)mpq_kvsearch_units_per_bit(t, j->opts.context_len, true));
    out->bound = s->bound;
    out->gap = s->gap;
    out->status = s->status;
}

/* ---- evaluation --------------------------------------------------------------------------- */

struct mpq_kvsearch_eval {
    mpq_job *job;               /* the stored job (owns model, windows, FP reference) */
    const mpq_job_evalset *es;  /* borrowed from job */
};

void mpq_kvsearch_eval_free(mpq_kvsearch_eval *ev) {
    if (!ev) return;
    mpq_job_close(ev->job);
    free(ev);
}

const mpq_model *mpq_kvsearch_eval_model(const mpq_kvsearch_eval *ev) { return ev && ev->es ? ev->es->model : NULL; }
const char *mpq_kvsearch_eval_source(const mpq_kvsearch_eval *ev) { return ev && ev->es ? ev->es->source : "calibration"; }

mpq_status mpq_kvsearch_job_model(mpq_db *db, int64_t job_id, mpq_model **out, mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv: NULL argument");
    *out = NULL;
    mpq_job *job = NULL;
    mpq_status st = mpq_job_open_id(db, job_id, &job, err);
    if (st == MPQ_OK) st = mpq_model_shape_copy(mpq_job_get_shape(job), out, err);
    mpq_job_close(job);
    return st;
}

mpq_status mpq_kvsearch_eval_open(mpq_db *db, int64_t job_id, int max_seqs, mpq_kvsearch_eval **out,
                                  mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval: NULL argument");
    *out = NULL;
    mpq_kvsearch_eval *ev = calloc(1, sizeof *ev);
    if (!ev) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_status st = mpq_job_open_id(db, job_id, &ev->job, err);
    if (st == MPQ_OK) st = mpq_job_load_evalset(ev->job, max_seqs, &ev->es, err);
    if (st != MPQ_OK) {
        mpq_kvsearch_eval_free(ev);
        return st;
    }
    *out = ev;
    return MPQ_OK;
}

mpq_status mpq_kvsearch_eval_run(mpq_kvsearch_eval *ev, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                 mpq_eval_stats *stats, mpq_err *err) {
    if (!ev || !pairs || !scheme || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval: NULL argument");
    memset(stats, 0, sizeof *stats);
    mpq_exec_opts o = mpq_exec_opts_default();
    o.kv_scheme = *scheme;
    o.kv_pairs = pairs;
    o.n_kv_pairs = mpq_model_get_config(ev->es->model)->n_layers;
    return mpq_exec_eval_ref(ev->es->ex, mpq_model_get_weights(ev->es->model), &o, ev->es->ref, 0, stats, err);
}

mpq_status mpq_kvsearch_eval_store(mpq_db *db, int64_t job_id, mpq_kvsearch_eval *ev, const mpq_kv_pair *pairs,
                                   const mpq_kv_scheme *scheme, const mpq_eval_stats *stats, int64_t solution_id,
                                   int64_t *evaluation_id, mpq_err *err) {
    if (!db || !ev || !pairs || !stats) return mpq_err_set(err, MPQ_ERR_INVALID, "kv eval store: NULL argument");
    char *cfg = NULL;
    mpq_status st = mpq_kvsearch_config_json(ev->es->model, pairs, scheme, &cfg, err);
    if (st != MPQ_OK) return st;
    const mpq_job_evalset *es = ev->es;
    mpq_db_dataset ds = {.path = es->data_path, .sha256 = es->data_sha256,
                         .n_tokens = (int64_t)es->n_seqs * (es->seq_len + 1), .seq_len = es->seq_len,
                         .n_seqs = es->n_seqs, .seed = es->seed};
    int64_t ds_id = 0;
    if ((st = mpq_db_dataset_upsert(db, &ds, &ds_id, err)) == MPQ_OK) {
        mpq_db_evaluation e = {.job_id = job_id, .solution_id = solution_id, .dataset_id = ds_id, .config_json = cfg,
                               .ppl = stats->ppl, .kl = stats->kl_mean, .kl_stderr = stats->kl_se,
                               .top1 = stats->top1, .ce = stats->ce, .n_tokens = stats->n_ref_tokens};
        st = mpq_db_evaluation_insert(db, &e, evaluation_id, err);
    }
    free(cfg);
    return st;
}

double mpq_kvsearch_spearman(const double *x, const double *y, int n) {
    if (!x || !y || n < 2) return NAN;
    double *r = mpq_calloc((size_t)n * 2, sizeof *r);
    if (!r) return NAN;
    const double *v[2] = {x, y};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < n; i++) {
            int less = 0, eq = 0;
            for (int k = 0; k < n; k++) {
                less += v[s][k] < v[s][i];
                eq += v[s][k] == v[s][i];
            }
            r[s * n + i] = less + (eq + 1) / 2.0; /* average rank (1-based) */
        }
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        mx += r[i];
        my += r[n + i];
    }
    mx /= n;
    my /= n;
    for (int i = 0; i < n; i++) {
        double a = r[i] - mx, b = r[n + i] - my;
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    free(r);
    return (sxx > 0 && syy > 0) ? sxy / sqrt(sxx * syy) : NAN;
}

/* ---- export ------------------------------------------------------------------------------- */

char *mpq_kvsearch_kvtuner_json(const mpq_kv_pair *pairs, int n_blocks) {
    if (!pairs || n_blocks < 1) return NULL;
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    for (int b = 0; ok && b < n_blocks; b++) {
        char key[16];
        snprintf(key, sizeof key, "%d", b);
        cJSON *l = cJSON_AddObjectToObject(o, key);
        ok = l && cJSON_AddNumberToObject(l, "nbits_key", pairs[b].k_bits) &&
             cJSON_AddNumberToObject(l, "nbits_value", pairs[b].v_bits);
    }
    char *s = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!s) return NULL;
    char *c = malloc(strlen(s) + 1); /* plain malloc'd for the caller's free() */
    if (c) memcpy(c, s, strlen(s) + 1);
    cJSON_free(s);
    return c;
}

mpq_status mpq_kvsearch_kvtuner_parse(const char *json, const char *source, int n_blocks, mpq_kv_pair *pairs_out,
                                      mpq_err *err) {
    if (!source) source = "kvtuner";
    if (!json || !pairs_out || n_blocks < 1) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: NULL argument", source);
    cJSON *o = cJSON_Parse(json);
    bool *seen = mpq_calloc((size_t)n_blocks, sizeof *seen);
    mpq_status st = MPQ_OK;
    if (!seen) {
        cJSON_Delete(o);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    if (!cJSON_IsObject(o)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: expected a JSON object {\"0\": {\"nbits_key\": .., \"nbits_value\": ..}}",
                         source);
        goto done;
    }
    const cJSON *l;
    cJSON_ArrayForEach(l, o) {
        const char *k = l->string;
        char *end = NULL;
        long b = (k && *k >= '0' && *k <= '9') ? strtol(k, &end, 10) : -1;
        if (b < 0 || !end || *end || b >= n_blocks || (k[0] == '0' && k[1])) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key '%s': expected a block index 0..%d", source, k ? k : "",
                             n_blocks - 1);
            goto done;
        }
        if (seen[b]) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: block %ld given twice", source, b);
            goto done;
        }
        seen[b] = true;
        if (!cJSON_IsObject(l) || cJSON_GetArraySize(l) != 2) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s: expected {\"nbits_key\": N, \"nbits_value\": N}", source, k);
            goto done;
        }
        const char *names[2] = {"nbits_key", "nbits_value"};
        int bits[2];
        for (int h = 0; h < 2; h++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(l, names[h]);
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
                v->valuedouble > 64 || !valid_bits((int)v->valuedouble)) {
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s.%s: expected 2, 3, 4, 8 or 16", source, k, names[h]);
                goto done;
            }
            bits[h] = (int)v->valuedouble;
        }
        pairs_out[b] = (mpq_kv_pair){bits[0], bits[1]};
    }
    for (int b = 0; b < n_blocks; b++)
        if (!seen[b]) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: block %d missing (model has %d blocks)", source, b, n_blocks);
            goto done;
        }
done:
    free(seen);
    cJSON_Delete(o);
    return st;
}

mpq_status mpq_kvsearch_config_json(const mpq_model *model, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                    char **out, mpq_err *err) {
    if (!model || !pairs || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv config: NULL argument");
    *out = NULL;
    mpq_config *cfg = NULL;
    mpq_status st = mpq_config_uniform(model, "f32", NULL, &cfg, err);
    int nb = mpq_model_get_config(model)->n_layers;
    for (int b = 0; st == MPQ_OK && b < nb; b++) st = mpq_config_set_kv(cfg, b, pairs[b], err);
    if (st == MPQ_OK && scheme) st = mpq_config_set_kv_scheme(cfg, scheme, err);
    if (st == MPQ_OK && !(*out = mpq_config_to_json(cfg, model))) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_config_free(cfg);
    return st;
}
