/*
 * kv_cluster.c - inter-layer clustering of blocks on their log-error profiles: RMS distance
 * and agglomerative average linkage. API: include/mpq/mpq_kvsearch.h.
 *
 * References: KVTuner (Li et al. 2025) section 4.3 (inter-layer clustering); UPGMA (Sokal &
 * Michener 1958) for average linkage.
 */
#include "mpq/mpq_kvsearch.h"

#include <math.h>
#include <stdlib.h>

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
