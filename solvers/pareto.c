/*
 * pareto.c - loss-vs-cost frontiers of the single-resource MCKP:
 *  - exact Pareto frontier by Nemhauser & Ullmann list merging ("Discrete dynamic programming
 *    and capital allocation", Management Sci. 15(9), 1969) with dominance pruning;
 *  - convex-hull frontier from the greedy over per-item hull increments (Lagrangian / LP
 *    relaxation of the MCKP; HAWQ-V2's Pareto frontier picks from such a curve);
 *  - per-hull-point gap to the exact frontier and a knee rule (largest normalized distance
 *    below the chord between the extreme points, "Kneedle"-like without a sensitivity knob).
 */
#include "solvers/solvers_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct hull_priv {
    int n_items;
    int *choice0;   /* [n_items] cheapest entry's option per item */
    int *inc_item;  /* [n_points-1] */
    int *inc_opt;   /* [n_points-1] option after the increment */
} hull_priv;

void mpq_frontier_free(mpq_frontier *f) {
    if (!f) return;
    if (f->priv) {
        hull_priv *h = f->priv;
        free(h->choice0);
        free(h->inc_item);
        free(h->inc_opt);
        free(h);
    }
    free(f->cost);
    free(f->loss);
    free(f);
}

static mpq_status frontier_prepare(const mpq_problem *p, const mpq_solve_opts *opts, double **eff,
                                   solv_mck *m, mpq_err *err) {
    mpq_status st = mpq_problem_validate(p, err);
    if (st != MPQ_OK) return st;
    if (opts->dp_resource < 0 || opts->dp_resource >= p->n_res)
        return mpq_err_set(err, MPQ_ERR_INVALID, "frontier: resource %d out of range 0..%d", opts->dp_resource,
                           p->n_res - 1);
    st = solv_effective_losses(p, opts->smooth, eff, err);
    if (st != MPQ_OK) return st;
    st = solv_mck_build(p, *eff, opts->dp_resource, m, err);
    if (st != MPQ_OK) {
        free(*eff);
        *eff = NULL;
    }
    return st;
}

mpq_status mpq_frontier_exact(const mpq_problem *p, const mpq_solve_opts *opts, mpq_frontier **out,
                              mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_solve_opts def = mpq_solve_opts_default();
    double *eff = NULL, *cc = NULL, *cl = NULL, *nc = NULL, *nl = NULL;
    solv_mck m = {0};
    mpq_frontier *f = NULL;
    double t0 = mpq_time_now();
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "frontier_exact: out is NULL");
    *out = NULL;
    if (!opts) opts = &def;
    st = frontier_prepare(p, opts, &eff, &m, err);
    if (st != MPQ_OK) return st;
    size_t ncur = 1, cap = 0; /* cap: allocated size of both list pairs (nc/nl start unallocated) */
    cc = malloc(sizeof *cc);
    cl = malloc(sizeof *cl);
    if (!cc || !cl) goto nomem;
    cc[0] = 0;
    cl[0] = 0;
    for (int i = 0; i < m.n_items; i++) {
        int k0 = m.start[i], K = m.start[i + 1] - k0;
        size_t need;
        if (!mpq_size_mul(ncur, (size_t)K, &need)) goto nomem;
        if (need > cap) {
            free(nc);
            free(nl);
            nc = malloc(need * sizeof *nc);
            nl = malloc(need * sizeof *nl);
            if (!nc || !nl) goto nomem;
            /* cc/cl are swapped with nc/nl below: keep both pairs at the larger size */
            double *a = realloc(cc, need * sizeof *cc), *b = NULL;
            if (!a) goto nomem;
            cc = a;
            b = realloc(cl, need * sizeof *cl);
            if (!b) goto nomem;
            cl = b;
            cap = need;
        }
        size_t head[256];
        for (int a = 0; a < K; a++) head[a] = 0;
        size_t nout = 0;
        for (;;) {
            int best = -1;
            double bc = 0, bl = 0;
            for (int a = 0; a < K; a++) {
                if (head[a] >= ncur) continue;
                double c = cc[head[a]] + m.cost[k0 + a], l = cl[head[a]] + m.loss[k0 + a];
                if (best < 0 || c < bc || (c == bc && l < bl)) { best = a; bc = c; bl = l; }
            }
            if (best < 0) break;
            head[best]++;
            if (nout > 0 && bc == nc[nout - 1]) {
                if (bl < nl[nout - 1]) nl[nout - 1] = bl;
                continue;
            }
            if (nout > 0 && bl >= nl[nout - 1]) continue;
            nc[nout] = bc;
            nl[nout] = bl;
            nout++;
        }
        double *t = cc; cc = nc; nc = t;
        t = cl; cl = nl; nl = t;
        ncur = nout;
    }
    f = calloc(1, sizeof *f);
    if (!f) goto nomem;
    f->cost = malloc(ncur * sizeof *f->cost);
    f->loss = malloc(ncur * sizeof *f->loss);
    if (!f->cost || !f->loss) goto nomem;
    for (size_t k = 0; k < ncur; k++) {
        f->cost[k] = cc[k] + m.base;
        f->loss[k] = cl[k];
    }
    f->n_points = ncur;
    f->resource = opts->dp_resource;
    f->smoothed = opts->smooth;
    f->hull = false;
    f->seconds = mpq_time_now() - t0;
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "frontier_exact: out of memory (%zu points)", ncur);
done:
    free(eff);
    free(cc); free(cl); free(nc); free(nl);
    solv_mck_free(&m);
    if (st != MPQ_OK) { mpq_frontier_free(f); f = NULL; }
    *out = f;
    return st;
}

mpq_status mpq_frontier_hull(const mpq_problem *p, const mpq_solve_opts *opts, mpq_frontier **out,
                             mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_solve_opts def = mpq_solve_opts_default();
    double *eff = NULL;
    solv_mck m = {0};
    solv_inc *incs = NULL;
    size_t n_incs = 0;
    mpq_frontier *f = NULL;
    hull_priv *h = NULL;
    double t0 = mpq_time_now();
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "frontier_hull: out is NULL");
    *out = NULL;
    if (!opts) opts = &def;
    st = frontier_prepare(p, opts, &eff, &m, err);
    if (st != MPQ_OK) return st;
    st = solv_mck_increments(&m, &incs, &n_incs, err);
    if (st != MPQ_OK) goto done;
    f = calloc(1, sizeof *f);
    h = calloc(1, sizeof *h);
    if (!f || !h) goto nomem;
    f->priv = h;
    h->n_items = m.n_items;
    f->cost = malloc((n_incs + 1) * sizeof *f->cost);
    f->loss = malloc((n_incs + 1) * sizeof *f->loss);
    h->choice0 = malloc((size_t)m.n_items * sizeof *h->choice0);
    h->inc_item = malloc((n_incs + 1) * sizeof *h->inc_item);
    h->inc_opt = malloc((n_incs + 1) * sizeof *h->inc_opt);
    if (!f->cost || !f->loss || !h->choice0 || !h->inc_item || !h->inc_opt) goto nomem;
    double c = m.base, l = 0;
    for (int i = 0; i < m.n_items; i++) {
        h->choice0[i] = m.opt[m.start[i]];
        l += m.loss[m.start[i]];
    }
    f->cost[0] = c;
    f->loss[0] = l;
    for (size_t t = 0; t < n_incs; t++) {
        c += incs[t].dc;
        l += incs[t].dl;
        f->cost[t + 1] = c;
        f->loss[t + 1] = l;
        h->inc_item[t] = incs[t].item;
        h->inc_opt[t] = m.opt[incs[t].to];
    }
    f->n_points = n_incs + 1;
    f->resource = opts->dp_resource;
    f->smoothed = opts->smooth;
    f->hull = true;
    f->seconds = mpq_time_now() - t0;
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "frontier_hull: out of memory (%zu increments)", n_incs);
done:
    free(eff);
    free(incs);
    solv_mck_free(&m);
    if (st != MPQ_OK) { mpq_frontier_free(f); f = NULL; }
    *out = f;
    return st;
}

mpq_status mpq_frontier_assignment(const mpq_problem *p, const mpq_frontier *f, size_t k, int *choice_out,
                                   mpq_err *err) {
    mpq_status st = MPQ_OK;
    double *eff = NULL;
    int *pos = NULL;
    solv_mck m = {0};
    if (!p || !f || !choice_out) return mpq_err_set(err, MPQ_ERR_INVALID, "frontier_assignment: NULL argument");
    if (k >= f->n_points)
        return mpq_err_set(err, MPQ_ERR_INVALID, "frontier_assignment: point %zu out of range 0..%zu", k,
                           f->n_points - 1);
    if (f->hull) {
        const hull_priv *h = f->priv;
        if (!h || h->n_items != p->n_items)
            return mpq_err_set(err, MPQ_ERR_INVALID, "frontier_assignment: problem has %d items, frontier %d",
                               p->n_items, h ? h->n_items : -1);
        memcpy(choice_out, h->choice0, (size_t)h->n_items * sizeof *choice_out);
        for (size_t t = 0; t < k; t++) choice_out[h->inc_item[t]] = h->inc_opt[t];
        return MPQ_OK;
    }
    mpq_solve_opts o = mpq_solve_opts_default();
    o.smooth = f->smoothed;
    o.dp_resource = f->resource;
    st = frontier_prepare(p, &o, &eff, &m, err);
    if (st != MPQ_OK) return st;
    pos = mpq_calloc((size_t)p->n_items, sizeof *pos);
    if (!pos) { st = mpq_err_set(err, MPQ_ERR_NOMEM, "frontier_assignment: out of memory"); goto done; }
    st = solv_mck_exact(&m, f->cost[k] - m.base, pos, err);
    if (st != MPQ_OK) goto done;
    double l = 0, scale = 0;
    for (int i = 0; i < p->n_items; i++) {
        choice_out[i] = m.opt[pos[i]];
        l += m.loss[pos[i]];
        scale += fabs(m.loss[pos[i]]);
    }
    /* same entries summed in the same order give the same loss; tolerance covers a tie
     * reached through a different assignment (n * eps relative) */
    if (fabs(l - f->loss[k]) > 4.0 * p->n_items * DBL_EPSILON * scale + DBL_MIN)
        st = mpq_err_set(err, MPQ_ERR_INVALID,
                         "frontier_assignment: point %zu: re-solve gives loss %.17g, frontier %.17g "
                         "(not the problem the frontier was built from?)",
                         k, l, f->loss[k]);
done:
    free(eff);
    free(pos);
    solv_mck_free(&m);
    return st;
}

size_t mpq_frontier_at_budget(const mpq_frontier *f, double budget) {
    if (!f || f->n_points == 0 || !(f->cost[0] <= budget)) return SIZE_MAX;
    size_t lo = 0, hi = f->n_points; /* cost[lo] <= budget, cost[hi] > budget (hi may be n) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->cost[mid] <= budget) lo = mid;
        else hi = mid;
    }
    return lo;
}

mpq_status mpq_frontier_hull_gaps(const mpq_frontier *hull, const mpq_frontier *exact, double *gap_out,
                                  mpq_err *err) {
    if (!hull || !exact || !gap_out) return mpq_err_set(err, MPQ_ERR_INVALID, "hull_gaps: NULL argument");
    size_t j = 0;
    for (size_t k = 0; k < hull->n_points; k++) {
        double lo = hull->cost[k], hi = k + 1 < hull->n_points ? hull->cost[k + 1] : INFINITY;
        double g = 0;
        while (j < exact->n_points && exact->cost[j] < lo) j++;
        for (size_t q = j; q < exact->n_points && exact->cost[q] < hi; q++) {
            double d = hull->loss[k] - exact->loss[q];
            if (d > g) g = d;
        }
        gap_out[k] = g;
    }
    return MPQ_OK;
}

size_t mpq_frontier_knee(const mpq_frontier *f) {
    if (!f || f->n_points == 0) return SIZE_MAX;
    size_t n = f->n_points;
    if (n < 3) return 0;
    double c0 = f->cost[0], c1 = f->cost[n - 1];
    double lmax = f->loss[0], lmin = f->loss[n - 1];
    double dc = c1 - c0, dl = lmax - lmin;
    if (!(dc > 0) || !(dl > 0)) return 0;
    size_t best = 0;
    double bd = 0;
    for (size_t k = 1; k + 1 < n; k++) {
        double x = (f->cost[k] - c0) / dc;       /* 0 .. 1 */
        double y = (f->loss[k] - lmin) / dl;     /* 1 .. 0 */
        double d = (1.0 - x) - y;                /* chord y = 1 - x; distance = d / sqrt(2) */
        if (d > bd) { bd = d; best = k; }
    }
    return best;
}
