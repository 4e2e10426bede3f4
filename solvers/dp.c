/*
 * dp.c - exact single-budget solvers for the multiple-choice knapsack problem (MCKP):
 *  - dense DP over scaled cost values 0..B'/g with a byte choice table (the textbook MCKP
 *    recursion, Kellerer, Pferschy & Pisinger, "Knapsack Problems", 2004, ch. 11.5), costs
 *    shifted by each item's cheapest option and divided by their gcd;
 *  - bounded Pareto DP: Nemhauser-Ullmann list merging (Oper. Res. 17, 1969) over the core
 *    items left after Lagrangian reduced-cost fixing with the LP multiplier (as in Pisinger,
 *    "A minimal algorithm for the multiple-choice knapsack problem", EJOR 83, 1995).
 * See mpq_solvers.h (mpq_solve_dp) for the memory of each engine.
 */
#include "solvers/solvers_internal.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Growable per-stage back-pointer store. */
typedef struct bp_store {
    int32_t *parent; /* index into previous stage list */
    int32_t *entry;  /* view entry chosen at this stage */
    size_t n, cap;
} bp_store;

static bool bp_reserve(bp_store *b, size_t extra) {
    size_t need;
    if (!mpq_size_add(b->n, extra, &need)) return false;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return false;
        cap *= 2;
    }
    size_t bytes;
    if (!mpq_size_mul(cap, sizeof(int32_t), &bytes)) return false;
    int32_t *p = realloc(b->parent, bytes);
    if (!p) return false;
    b->parent = p;
    int32_t *e = realloc(b->entry, bytes);
    if (!e) return false;
    b->entry = e;
    b->cap = cap;
    return true;
}

mpq_status solv_mck_exact(const solv_mck *m, double bs, int *pos, mpq_err *err) {
    mpq_status st = MPQ_OK;
    solv_inc *incs = NULL;
    size_t n_incs = 0;
    int *inc_pos = NULL, *core = NULL, *kept_start = NULL, *kept = NULL;
    size_t *stage_off = NULL;
    double *rc = NULL;
    double *cc = NULL, *cl = NULL, *cr = NULL, *nc = NULL, *nl = NULL, *nr = NULL;
    bp_store bp = {0};
    int n = m->n_items;
    size_t N = (size_t)m->start[n];

    if (bs < 0) return mpq_err_set(err, MPQ_ERR_INFEASIBLE, "mckp: budget below the cheapest assignment");
    if (bs >= m->max_total) {
        for (int i = 0; i < n; i++) pos[i] = m->start[i + 1] - 1;
        return MPQ_OK;
    }
    st = solv_mck_increments(m, &incs, &n_incs, err);
    if (st != MPQ_OK) goto done;
    inc_pos = mpq_calloc((size_t)n, sizeof *inc_pos);
    rc = mpq_calloc(N, sizeof *rc);
    kept_start = mpq_calloc((size_t)n + 1, sizeof *kept_start);
    kept = mpq_calloc(N, sizeof *kept);
    core = mpq_calloc((size_t)n, sizeof *core);
    if (!inc_pos || !rc || !kept_start || !kept || !core) goto nomem;
    double lambda, lp;
    solv_mck_greedy(m, incs, n_incs, bs, inc_pos, &lambda, &lp);
    double inc_loss = 0, scale = 0, dual = -lambda * bs;
    for (int i = 0; i < n; i++) {
        double mn = INFINITY, mx = 0;
        inc_loss += m->loss[inc_pos[i]];
        for (int k = m->start[i]; k < m->start[i + 1]; k++) {
            double v = m->loss[k] + lambda * m->cost[k];
            if (v < mn) mn = v;
            if (fabs(m->loss[k]) + lambda * m->cost[k] > mx) mx = fabs(m->loss[k]) + lambda * m->cost[k];
        }
        for (int k = m->start[i]; k < m->start[i + 1]; k++) rc[k] = m->loss[k] + lambda * m->cost[k] - mn;
        dual += mn;
        scale += mx;
    }
    /* Any assignment x with cost <= bs has loss(x) >= dual + sum_i rc(x_i), so a solution
     * no worse than the incumbent has sum rc <= inc_loss - dual. tol absorbs rounding in
     * these sums (relative 1e-10 of their magnitude: far above n * DBL_EPSILON). */
    double tol = 1e-10 * (scale + fabs(inc_loss) + lambda * bs) + DBL_MIN;
    double gap = inc_loss - dual + tol;
    double fixed_cost = 0;
    int n_core = 0;
    int kk = 0;
    for (int i = 0; i < n; i++) {
        kept_start[i] = kk;
        for (int k = m->start[i]; k < m->start[i + 1]; k++)
            if (rc[k] <= gap || k == inc_pos[i]) kept[kk++] = k;
        if (kk - kept_start[i] == 1) {
            pos[i] = kept[kept_start[i]];
            fixed_cost += m->cost[pos[i]];
        } else {
            core[n_core++] = i;
        }
    }
    kept_start[n] = kk;
    double bc = bs - fixed_cost;
    /* Pareto DP over the core items. States: cost, loss, reduced-cost sum. */
    size_t cap = 1024, ncur = 1;
    cc = malloc(cap * sizeof *cc);
    cl = malloc(cap * sizeof *cl);
    cr = malloc(cap * sizeof *cr);
    stage_off = mpq_calloc((size_t)n_core + 1, sizeof *stage_off);
    if (!cc || !cl || !cr || !stage_off) goto nomem;
    cc[0] = 0;
    cl[0] = 0;
    cr[0] = 0;
    for (int t = 0; t < n_core; t++) {
        int i = core[t];
        int K = kept_start[i + 1] - kept_start[i];
        const int *ks = kept + kept_start[i];
        size_t maxout;
        if (!mpq_size_mul(ncur, (size_t)K, &maxout)) goto nomem;
        free(nc); free(nl); free(nr);
        nc = malloc(maxout * sizeof *nc);
        nl = malloc(maxout * sizeof *nl);
        nr = malloc(maxout * sizeof *nr);
        if (!nc || !nl || !nr || !bp_reserve(&bp, maxout)) goto nomem;
        size_t head[256];
        for (int a = 0; a < K; a++) head[a] = 0;
        size_t nout = 0;
        size_t base_bp = bp.n;
        for (;;) {
            int best = -1;
            double bcost = 0, bloss = 0;
            for (int a = 0; a < K; a++) {
                /* advance past states that exceed the budget or the reduced-cost gap */
                while (head[a] < ncur) {
                    size_t h = head[a];
                    double c = cc[h] + m->cost[ks[a]];
                    if (c > bc) { head[a] = ncur; break; } /* lists are cost-sorted */
                    if (cr[h] + rc[ks[a]] > gap) { head[a]++; continue; }
                    break;
                }
                if (head[a] >= ncur) continue;
                double c = cc[head[a]] + m->cost[ks[a]], l = cl[head[a]] + m->loss[ks[a]];
                if (best < 0 || c < bcost || (c == bcost && l < bloss)) { best = a; bcost = c; bloss = l; }
            }
            if (best < 0) break;
            size_t h = head[best]++;
            double r = cr[h] + rc[ks[best]];
            if (nout > 0 && bcost == nc[nout - 1]) {
                if (bloss < nl[nout - 1]) {
                    nl[nout - 1] = bloss;
                    nr[nout - 1] = r;
                    bp.parent[base_bp + nout - 1] = (int32_t)h;
                    bp.entry[base_bp + nout - 1] = ks[best];
                }
                continue;
            }
            if (nout > 0 && bloss >= nl[nout - 1]) continue; /* dominated */
            nc[nout] = bcost;
            nl[nout] = bloss;
            nr[nout] = r;
            bp.parent[base_bp + nout] = (int32_t)h;
            bp.entry[base_bp + nout] = ks[best];
            nout++;
        }
        if (nout == 0) { st = mpq_err_set(err, MPQ_ERR_SOLVER, "mckp: core DP lost every state (internal)"); goto done; }
        if (nout > INT32_MAX) goto nomem;
        bp.n = base_bp + nout;
        stage_off[t] = base_bp;
        double *tc = cc, *tl = cl, *tr = cr;
        cc = nc; cl = nl; cr = nr;
        nc = tc; nl = tl; nr = tr;
        ncur = nout;
    }
    stage_off[n_core] = bp.n;
    /* Pareto list: the last state has the least loss. Walk back. */
    size_t s = ncur - 1;
    for (int t = n_core - 1; t >= 0; t--) {
        size_t at = stage_off[t] + s;
        pos[core[t]] = bp.entry[at];
        s = (size_t)bp.parent[at];
    }
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "mckp: out of memory in the Pareto DP (%d items)", n);
done:
    free(incs);
    free(inc_pos);
    free(rc);
    free(kept_start);
    free(kept);
    free(core);
    free(stage_off);
    free(cc); free(cl); free(cr); free(nc); free(nl); free(nr);
    free(bp.parent);
    free(bp.entry);
    return st;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Dense DP over scaled cost 0..W; f[w] = least loss with scaled cost <= w. */
static mpq_status dense_dp(const solv_mck *m, int64_t g, int64_t W, int *pos, mpq_err *err) {
    mpq_status st = MPQ_OK;
    int n = m->n_items;
    size_t w1 = (size_t)W + 1, tab;
    double *f = NULL, *h = NULL;
    unsigned char *ch = NULL;
    if (!mpq_size_mul((size_t)n, w1, &tab)) return mpq_err_set(err, MPQ_ERR_NOMEM, "dp: table overflows");
    f = mpq_calloc(w1, sizeof *f);
    h = mpq_calloc(w1, sizeof *h);
    ch = malloc(tab ? tab : 1);
    if (!f || !h || !ch) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "dp: out of memory for %d x %zu table", n, w1);
        goto done;
    }
    for (size_t w = 0; w < w1; w++) f[w] = 0;
    for (int i = 0; i < n; i++) {
        unsigned char *row = ch + (size_t)i * w1;
        int k0 = m->start[i], k1 = m->start[i + 1];
        for (size_t w = 0; w < w1; w++) {
            double best = INFINITY;
            int bk = 0;
            for (int k = k0; k < k1; k++) {
                int64_t c = (int64_t)m->cost[k] / g;
                if ((size_t)c > w) break; /* entries sorted by cost */
                double v = f[w - (size_t)c] + m->loss[k];
                if (v < best) { best = v; bk = k - k0; }
            }
            h[w] = best;
            row[w] = (unsigned char)bk;
        }
        double *t = f; f = h; h = t;
    }
    size_t w = (size_t)W;
    for (int i = n - 1; i >= 0; i--) {
        int k = m->start[i] + ch[(size_t)i * w1 + w];
        pos[i] = k;
        w -= (size_t)((int64_t)m->cost[k] / g);
    }
done:
    free(f);
    free(h);
    free(ch);
    return st;
}

/* The DP engine for shifted budget bs over m, and g / W / table cells of the dense one
 * (shared by mpq_solve_dp and mpq_solve_estimate_cost, so the estimate names the engine run). */
static const char *dp_plan(const solv_mck *m, double bs, const mpq_solve_opts *o, int64_t *g_out, int64_t *W_out,
                           size_t *cells) {
    *g_out = 1;
    *W_out = 0;
    *cells = 0;
    if (bs >= m->max_total) return "dp-trivial"; /* the budget admits every item's least-loss option */
    int64_t g = 0;
    for (int k = 0; k < m->start[m->n_items]; k++) g = gcd64((int64_t)m->cost[k], g);
    if (g <= 0) g = 1;
    int64_t W = (int64_t)bs / g;
    size_t tab;
    *g_out = g;
    *W_out = W;
    if (mpq_size_mul((size_t)m->n_items, (size_t)W + 1, &tab) && tab <= o->dp_max_bytes) {
        *cells = tab;
        return "dp-array";
    }
    return "dp-pareto";
}

mpq_status mpq_solve_estimate_cost(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solve_estimate *out,
                                   mpq_err *err) {
    if (!p || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "solve_estimate: NULL argument");
    mpq_solve_opts def = mpq_solve_opts_default();
    if (!opts) opts = &def;
    memset(out, 0, sizeof *out);
    mpq_status st = mpq_problem_validate(p, err);
    if (st != MPQ_OK) return st;
    int64_t ncol = 0;
    for (int i = 0; i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i]; o++) ncol += p->mask[solv_lo(p, i, o)] != 0;
    out->n_columns = ncol;
    out->ilp_seconds = MPQ_SOLVE_ILP_BASE_S + MPQ_SOLVE_ILP_COL_S * (double)ncol;
    out->dp_seconds = INFINITY;
    int r = opts->dp_resource, n_finite = 0;
    for (int q = 0; q < p->n_res; q++) n_finite += p->budget[q] != INFINITY;
    bool dp_ok = r >= 0 && r < p->n_res && n_finite <= 1 && (n_finite == 0 || p->budget[r] != INFINITY) &&
                 mpq_problem_resource_integral(p, r);
    double *eff = NULL;
    solv_mck m = {0};
    if (dp_ok) {
        if ((st = solv_effective_losses(p, opts->smooth, &eff, err)) != MPQ_OK ||
            (st = solv_mck_build(p, eff, r, &m, err)) != MPQ_OK)
            goto done;
        int64_t g, W;
        size_t cells;
        out->dp_engine = dp_plan(&m, floor(p->budget[r] - m.base), opts, &g, &W, &cells);
        if (strcmp(out->dp_engine, "dp-trivial") == 0) out->dp_seconds = 0;
        else if (cells > 0) {
            out->dp_cells = (double)cells;
            out->dp_seconds = MPQ_SOLVE_DP_CELL_S * (double)cells * (double)ncol / (double)p->n_items;
        }
    }
    out->solver = out->dp_seconds <= out->ilp_seconds ? "dp" : "ilp";
    if (!dp_ok)
        snprintf(out->reason, sizeof out->reason, "ilp: dp does not apply (%s)",
                 n_finite > 1 ? "several budgets" : "non-integral costs");
    else if (out->dp_cells > 0)
        snprintf(out->reason, sizeof out->reason,
                 "%s: estimated dp-array %.3g s (%d items x %.0f budget steps x %.3g options) vs ilp %.3g s "
                 "(%lld columns)",
                 out->solver, out->dp_seconds, p->n_items, out->dp_cells / p->n_items, (double)ncol / p->n_items,
                 out->ilp_seconds, (long long)ncol);
    else
        snprintf(out->reason, sizeof out->reason, "%s: %s (estimated %.3g s) vs ilp %.3g s (%lld columns)",
                 out->solver, out->dp_engine, out->dp_seconds, out->ilp_seconds, (long long)ncol);
done:
    free(eff);
    solv_mck_free(&m);
    return st;
}

mpq_status mpq_solve_dp(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solution **out,
                        mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_solve_opts def = mpq_solve_opts_default();
    double *eff = NULL;
    int *pos = NULL;
    solv_mck m = {0};
    mpq_solution *s = NULL;
    double t0 = mpq_time_now();
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "solve_dp: out is NULL");
    *out = NULL;
    if (!opts) opts = &def;
    st = mpq_problem_validate(p, err);
    if (st != MPQ_OK) return st;
    int r = opts->dp_resource;
    if (r < 0 || r >= p->n_res)
        return mpq_err_set(err, MPQ_ERR_INVALID, "solve_dp: dp_resource %d out of range 0..%d", r, p->n_res - 1);
    for (int q = 0; q < p->n_res; q++)
        if (q != r && p->budget[q] != INFINITY)
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "solve_dp: handles one budget (%s); %s also has a budget: use the ILP",
                               p->res_name[r], p->res_name[q]);
    if (!mpq_problem_resource_integral(p, r))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "solve_dp: %s has non-integer costs (or |cost| > 2^53): use the ILP",
                           p->res_name[r]);
    st = mpq_problem_check_budgets(p, NULL, err);
    if (st != MPQ_OK) return st;
    st = solv_effective_losses(p, opts->smooth, &eff, err);
    if (st != MPQ_OK) goto done;
    st = solv_mck_build(p, eff, r, &m, err);
    if (st != MPQ_OK) goto done;
    pos = mpq_calloc((size_t)p->n_items, sizeof *pos);
    if (!pos) { st = mpq_err_set(err, MPQ_ERR_NOMEM, "solve_dp: out of memory"); goto done; }
    double bs = floor(p->budget[r] - m.base); /* integers: exact below 2^53 */
    int64_t g, W;
    size_t cells;
    const char *engine = dp_plan(&m, bs, opts, &g, &W, &cells);
    if (strcmp(engine, "dp-trivial") == 0) {
        for (int i = 0; i < p->n_items; i++) pos[i] = m.start[i + 1] - 1;
    } else {
        st = strcmp(engine, "dp-array") == 0 ? dense_dp(&m, g, W, pos, err) : solv_mck_exact(&m, bs, pos, err);
        if (st != MPQ_OK) goto done;
    }
    st = solv_solution_new(p, engine, &s, err);
    if (st != MPQ_OK) goto done;
    for (int i = 0; i < p->n_items; i++) s->choice[i] = m.opt[pos[i]];
    solv_solution_totals(p, eff, s);
    if (!solv_choice_feasible(p, s->choice)) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_dp: internal error: result exceeds budget %s", p->res_name[r]);
        goto done;
    }
    s->bound = s->total_loss;
    s->gap = 0;
    s->status = MPQ_SOLVE_OPTIMAL;
    s->smoothed = opts->smooth;
    s->seconds = mpq_time_now() - t0;
done:
    free(eff);
    free(pos);
    solv_mck_free(&m);
    if (st != MPQ_OK) { mpq_solution_free(s); s = NULL; }
    *out = s;
    return st;
}
