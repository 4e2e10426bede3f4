/*
 * kv_frontier.c - the exact frontier of (average KV bits, total predicted error) over
 * per-block (or per-group) pairs, through mpq_frontier_exact on integral bit units, and the
 * pick of a frontier point under an average-bits budget. API: include/mpq/mpq_kvsearch.h.
 *
 * Reference: KVTuner (Li et al. 2025) section 4.4 (multi-objective search).
 */
#include "mpq/mpq_kvsearch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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
