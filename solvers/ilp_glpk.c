/*
 * ilp_glpk.c - the allocation ILP (HAWQ-V3, Yao et al. 2021, eq. 9: one binary per
 * (layer, candidate), one-hot rows, budget rows) and its LP relaxation, solved with GLPK
 * (glp_simplex / glp_intopt, GLPK 5.0 reference manual ch. 2.8). The only file that
 * includes glpk.h. GLPK's terminal output is silenced and its fatal-error hook longjmps back
 * here (after which glp_free_env() is required), so bad input never aborts the process;
 * inputs are validated before anything is built.
 *
 * Before the ILP is built, options are removed by LP-based reduced-cost fixing (Lagrangian
 * variable fixing, e.g. Nemhauser & Wolsey, "Integer and Combinatorial Optimization", 1988,
 * II.6 / Pisinger, EJOR 83, 1995 for the MCKP) and, for one integral budget, rounding the
 * budget down to the lattice of costs the kept options can reach (then fixing again): see
 * solv_ilp_fix. Items left with one option are fixed (constants), and glp_intopt runs on the
 * remaining core with the incumbent (given in GLPK's GLP_IHEUR callback). On the 50k x 8
 * benchmark this takes the model from 400,000 binaries with a 2.66e-6 LP gap that GLPK could
 * not close in 60 s to 58 binaries solved in 0.1 s.
 */
#include "solvers/solvers_internal.h"

#include <float.h>
#include <glpk.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ilp_ctx {
    const mpq_problem *p;
    const mpq_solve_opts *opts;
    const double *eff;
    const unsigned char *keep; /* [n_items * n_opt_max] options kept by fixing, NULL = all allowed */
    int n_cols;
    int *col_item, *col_opt;   /* [n_cols + 1], 1-based */
    int n_free;                /* items with a one-hot row (more than one kept option) */
    int *item_row;             /* [n_items] 1-based one-hot row, 0 = item fixed */
    int *fixed;                /* [n_items] the option of a fixed item, -1 otherwise */
    double obj_const;          /* loss of the fixed items: added to GLPK's values, NOT given to
                                  GLPK, whose tolerances (tol_obj, mip_gap) are relative to the
                                  objective: a large constant would make them coarse */
    int *row_res;              /* budget row -> resource, [n_res] */
    int n_brows;
    double *row_scale;         /* divide costs and budget of a budget row by this */
    double *row_rhs;           /* [n_res] budget minus the fixed items' cost (item order) */
    double *dual;              /* [n_res] LP row duals of the budget rows (GLPK's sign) */
    double time_limit;         /* seconds for each GLPK call, <= 0 = none */
    const double *heur;        /* [n_cols + 1] heuristic 0/1 solution or NULL */
    int *basis_col;            /* [n_cols + 1] 1 = basic in the starting basis, or NULL */
    int basis_row;             /* 1: the first budget row is basic in the starting basis */
    bool heur_given;
    double node_bound;         /* best-node bound seen in the callback (-inf if none) */
    glp_prob *lp;
    jmp_buf jb;
    /* results */
    double lp_value;
    int lp_status;
    int mip_ret, mip_status;
    double mip_value;
    double *x;                 /* [n_cols + 1] */
} ilp_ctx;

static void on_glpk_error(void *info) {
    ilp_ctx *c = info;
    longjmp(c->jb, 1);
}

static void ios_callback(glp_tree *tree, void *info) {
    ilp_ctx *c = info;
    int b = glp_ios_best_node(tree);
    if (b) {
        double v = glp_ios_node_bound(tree, b) + c->obj_const;
        if (v > c->node_bound) c->node_bound = v;
    }
    if (glp_ios_reason(tree) == GLP_IHEUR && c->heur && !c->heur_given) {
        c->heur_given = true;
        glp_ios_heur_sol(tree, c->heur);
    }
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Builds the model into c->lp. Returns 0, or longjmps on a GLPK error. */
static void build(ilp_ctx *c, bool integer) {
    const mpq_problem *p = c->p;
    glp_prob *lp = c->lp;
    int nr = c->n_free + c->n_brows;
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_rows(lp, nr);
    for (int i = 0; i < c->n_free; i++) glp_set_row_bnds(lp, i + 1, GLP_FX, 1.0, 1.0);
    for (int b = 0; b < c->n_brows; b++)
        glp_set_row_bnds(lp, c->n_free + b + 1, GLP_UP, 0.0, c->row_rhs[b] / c->row_scale[b]);
    glp_add_cols(lp, c->n_cols);
    int per = 1 + c->n_brows;
    int *ind = malloc((size_t)(per + 1) * sizeof *ind);
    double *val = malloc((size_t)(per + 1) * sizeof *val);
    if (!ind || !val) {
        free(ind);
        free(val);
        longjmp(c->jb, 2);
    }
    for (int j = 1; j <= c->n_cols; j++) {
        int i = c->col_item[j], o = c->col_opt[j];
        glp_set_col_kind(lp, j, integer ? GLP_BV : GLP_CV);
        if (!integer) glp_set_col_bnds(lp, j, GLP_DB, 0.0, 1.0);
        glp_set_obj_coef(lp, j, c->eff[solv_lo(p, i, o)]);
        int n = 0;
        ind[++n] = c->item_row[i];
        val[n] = 1.0;
        for (int b = 0; b < c->n_brows; b++) {
            double v = p->cost[solv_co(p, c->row_res[b], i, o)] / c->row_scale[b];
            if (v != 0) {
                ind[++n] = c->n_free + b + 1;
                val[n] = v;
            }
        }
        glp_set_mat_col(lp, j, n, ind, val);
    }
    free(ind);
    free(val);
}

/* Runs simplex (+ intopt when integer). GLPK errors longjmp to here: returns nonzero. */
static int run(ilp_ctx *c, bool integer) {
    int jr = setjmp(c->jb);
    if (jr) {
        c->lp = NULL;      /* freed by glp_free_env below */
        glp_error_hook(NULL, NULL);
        glp_free_env();
        return jr;
    }
    glp_error_hook(on_glpk_error, c);
    glp_term_out(GLP_OFF);
    c->lp = glp_create_prob();
    build(c, integer);
    glp_scale_prob(c->lp, GLP_SF_AUTO);
    if (c->basis_col) {
        /* starting basis from the greedy LP solution: one-hot rows nonbasic (fixed), the
         * greedy's budget row nonbasic at its bound when an increment broke, other budget
         * rows basic, the greedy's columns basic */
        int nr = c->n_free + c->n_brows;
        for (int i = 1; i <= c->n_free; i++) glp_set_row_stat(c->lp, i, GLP_NS);
        for (int r = c->n_free + 1; r <= nr; r++)
            glp_set_row_stat(c->lp, r, (r == c->n_free + 1 && !c->basis_row) ? GLP_NU : GLP_BS);
        for (int j = 1; j <= c->n_cols; j++) glp_set_col_stat(c->lp, j, c->basis_col[j] ? GLP_BS : GLP_NL);
    } else {
        glp_adv_basis(c->lp, 0);
    }
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = GLP_MSG_OFF;
    sp.presolve = GLP_OFF;
    if (c->time_limit > 0) sp.tm_lim = (int)fmax(1.0, fmin(c->time_limit * 1000.0, 2e9));
    int ret = glp_simplex(c->lp, &sp);
    if (ret == GLP_EBADB || ret == GLP_ESING || ret == GLP_ECOND) { /* starting basis unusable */
        glp_adv_basis(c->lp, 0);
        ret = glp_simplex(c->lp, &sp);
    }
    c->lp_status = (ret == 0) ? glp_get_status(c->lp) : -ret;
    if (ret == 0 && c->lp_status == GLP_OPT) {
        c->lp_value = glp_get_obj_val(c->lp) + c->obj_const;
        for (int b = 0; b < c->n_brows; b++) c->dual[b] = glp_get_row_dual(c->lp, c->n_free + b + 1);
    }
    if (integer && ret == 0 && c->lp_status == GLP_OPT) {
        glp_iocp ip;
        glp_init_iocp(&ip);
        ip.msg_lev = GLP_MSG_OFF;
        ip.presolve = (c->opts->presolve && !c->heur) ? GLP_ON : GLP_OFF;
        ip.mip_gap = c->opts->mip_gap > 0 ? c->opts->mip_gap : 0.0;
        if (ip.mip_gap > 0 && c->heur && c->obj_const != 0) {
            /* GLPK measures the gap relative to the objective without the fixed items'
             * constant; rescale so that it means the same relative to the whole loss
             * (using the incumbent's value as the scale) */
            double core = 0, tot;
            for (int j = 1; j <= c->n_cols; j++) core += c->heur[j] * c->eff[solv_lo(c->p, c->col_item[j], c->col_opt[j])];
            tot = core + c->obj_const;
            if (fabs(core) > 0) ip.mip_gap = fmin(1.0, ip.mip_gap * fabs(tot) / fabs(core));
        }
        if (c->time_limit > 0) ip.tm_lim = (int)fmax(1.0, fmin(c->time_limit * 1000.0, 2e9));
        ip.cb_func = ios_callback;
        ip.cb_info = c;
        c->mip_ret = glp_intopt(c->lp, &ip);
        c->mip_status = glp_mip_status(c->lp);
        if (c->mip_status == GLP_OPT || c->mip_status == GLP_FEAS) {
            c->mip_value = glp_mip_obj_val(c->lp) + c->obj_const;
            for (int j = 1; j <= c->n_cols; j++) c->x[j] = glp_mip_col_val(c->lp, j);
        }
    }
    glp_delete_prob(c->lp);
    c->lp = NULL;
    glp_error_hook(NULL, NULL);
    return 0;
}

/* Sets up columns (kept options of items with more than one; keep NULL = every allowed
 * option), fixed items, budget rows and their scaling; ctx arrays freed by ctx_free. */
static mpq_status ctx_init(ilp_ctx *c, const mpq_problem *p, const mpq_solve_opts *opts, const double *eff,
                           const unsigned char *keep, mpq_err *err) {
    memset(c, 0, sizeof *c);
    c->p = p;
    c->opts = opts;
    c->eff = eff;
    c->keep = keep;
    c->node_bound = -INFINITY;
    c->time_limit = opts->time_limit_s;
    c->item_row = mpq_calloc((size_t)p->n_items, sizeof *c->item_row);
    c->fixed = mpq_calloc((size_t)p->n_items, sizeof *c->fixed);
    c->row_res = mpq_calloc((size_t)p->n_res, sizeof *c->row_res);
    c->row_scale = mpq_calloc((size_t)p->n_res, sizeof *c->row_scale);
    c->row_rhs = mpq_calloc((size_t)p->n_res, sizeof *c->row_rhs);
    c->dual = mpq_calloc((size_t)p->n_res, sizeof *c->dual);
    if (!c->item_row || !c->fixed || !c->row_res || !c->row_scale || !c->row_rhs || !c->dual)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "ilp: out of memory for %d items", p->n_items);
    int n = 0;
    for (int i = 0; i < p->n_items; i++) {
        int k = 0, last = -1;
        for (int o = 0; o < p->n_opt[i]; o++)
            if (keep ? keep[solv_lo(p, i, o)] : mpq_problem_allowed(p, i, o)) {
                k++;
                last = o;
            }
        if (k == 0) /* cannot happen: fixing keeps the incumbent, validation an allowed option */
            return mpq_err_set(err, MPQ_ERR_SOLVER, "ilp: %s has no option left", p->item_name[i]);
        c->fixed[i] = -1;
        if (keep && k == 1) {
            c->fixed[i] = last;
            c->obj_const += eff[solv_lo(p, i, last)];
        } else {
            c->item_row[i] = ++c->n_free;
            n += k;
        }
    }
    c->n_cols = n;
    c->col_item = mpq_calloc((size_t)n + 1, sizeof *c->col_item);
    c->col_opt = mpq_calloc((size_t)n + 1, sizeof *c->col_opt);
    c->x = mpq_calloc((size_t)n + 1, sizeof *c->x);
    if (!c->col_item || !c->col_opt || !c->x)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "ilp: out of memory for %d columns", n);
    int j = 0;
    for (int i = 0; i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i] && c->item_row[i]; o++)
            if (keep ? keep[solv_lo(p, i, o)] : mpq_problem_allowed(p, i, o)) {
                j++;
                c->col_item[j] = i;
                c->col_opt[j] = o;
            }
    for (int r = 0; r < p->n_res; r++) {
        if (p->budget[r] == INFINITY) continue;
        int b = c->n_brows++;
        c->row_res[b] = r;
        c->row_scale[b] = 1.0;
        /* the fixed items' cost, summed in item order (exact for integral resources) */
        double fc = 0;
        for (int i = 0; i < p->n_items; i++)
            if (c->fixed[i] >= 0) fc += p->cost[solv_co(p, r, i, c->fixed[i])];
        c->row_rhs[b] = p->budget[r] - fc;
        /* Integral rows are divided by the gcd of their costs (exact), which keeps GLPK's
         * relative feasibility tolerance below one cost unit for longer. */
        if (mpq_problem_resource_integral(p, r)) {
            int64_t g = 0;
            for (int q = 1; q <= n; q++) g = gcd64((int64_t)fabs(p->cost[solv_co(p, r, c->col_item[q], c->col_opt[q])]), g);
            if (g > 1) c->row_scale[b] = (double)g;
        }
    }
    return MPQ_OK;
}

static void ctx_free(ilp_ctx *c) {
    free(c->basis_col);
    free(c->col_item);
    free(c->col_opt);
    free(c->item_row);
    free(c->fixed);
    free(c->row_res);
    free(c->row_scale);
    free(c->row_rhs);
    free(c->dual);
    free(c->x);
}

/* Greedy over the convex-hull increments of the first budgeted resource (the exact LP
 * optimum when it is the only budget). Sets c->basis_col / c->basis_row to the matching
 * simplex basis (the prefix columns, plus the breaking increment's target column) and, when
 * want_x, *x_out to the filled greedy 0/1 solution if it meets every budget (else NULL). */
static mpq_status greedy_start(const mpq_problem *p, const double *eff, ilp_ctx *c, bool want_x, double **x_out,
                               mpq_err *err) {
    mpq_status st = MPQ_OK;
    solv_mck m = {0};
    solv_inc *incs = NULL;
    size_t n_incs = 0;
    int *pos = NULL, *choice = NULL, *colmap = NULL;
    double *x = NULL;
    *x_out = NULL;
    if (c->n_brows == 0) return MPQ_OK;
    int r = c->row_res[0];
    st = solv_mck_build(p, eff, r, &m, err);
    if (st != MPQ_OK) goto done;
    st = solv_mck_increments(&m, &incs, &n_incs, err);
    if (st != MPQ_OK) goto done;
    pos = mpq_calloc((size_t)p->n_items, sizeof *pos);
    choice = mpq_calloc((size_t)p->n_items, sizeof *choice);
    x = mpq_calloc((size_t)c->n_cols + 1, sizeof *x);
    colmap = mpq_calloc((size_t)p->n_items * (size_t)p->n_opt_max, sizeof *colmap);
    c->basis_col = mpq_calloc((size_t)c->n_cols + 1, sizeof *c->basis_col);
    if (!pos || !choice || !x || !colmap || !c->basis_col) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "ilp: out of memory");
        goto done;
    }
    for (int j = 1; j <= c->n_cols; j++) colmap[solv_lo(p, c->col_item[j], c->col_opt[j])] = j;
    double bs = p->budget[r] - m.base;
    if (bs < 0) { free(c->basis_col); c->basis_col = NULL; goto done; }
    /* prefix of the greedy: the LP basis */
    double used = 0;
    size_t t = 0;
    for (int i = 0; i < p->n_items; i++) pos[i] = m.start[i];
    for (; t < n_incs && used + incs[t].dc <= bs; t++) {
        used += incs[t].dc;
        pos[incs[t].item] = incs[t].to;
    }
    for (int i = 0; i < p->n_items; i++) c->basis_col[colmap[solv_lo(p, i, m.opt[pos[i]])]] = 1;
    if (t < n_incs) c->basis_col[colmap[solv_lo(p, incs[t].item, m.opt[incs[t].to])]] = 1;
    else c->basis_row = 1;
    if (want_x) {
        double lambda, lpb;
        solv_mck_greedy(&m, incs, n_incs, bs, pos, &lambda, &lpb);
        for (int i = 0; i < p->n_items; i++) choice[i] = m.opt[pos[i]];
        if (solv_choice_feasible(p, choice)) {
            for (int j = 1; j <= c->n_cols; j++) x[j] = choice[c->col_item[j]] == c->col_opt[j] ? 1.0 : 0.0;
            *x_out = x;
            x = NULL;
        }
    }
done:
    solv_mck_free(&m);
    free(incs);
    free(pos);
    free(choice);
    free(colmap);
    free(x);
    return st;
}

mpq_status mpq_bound_lp(const mpq_problem *p, const mpq_solve_opts *opts, double *bound, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_solve_opts def = mpq_solve_opts_default();
    double *eff = NULL;
    ilp_ctx c;
    memset(&c, 0, sizeof c);
    if (!bound) return mpq_err_set(err, MPQ_ERR_INVALID, "bound_lp: bound is NULL");
    if (!opts) opts = &def;
    st = mpq_problem_check_budgets(p, NULL, err);
    if (st != MPQ_OK) return st;
    st = solv_effective_losses(p, opts->smooth, &eff, err);
    if (st != MPQ_OK) return st;
    st = ctx_init(&c, p, opts, eff, NULL, err);
    if (st != MPQ_OK) goto done;
    double *unused = NULL;
    st = greedy_start(p, eff, &c, false, &unused, err);
    if (st != MPQ_OK) goto done;
    int jr = run(&c, false);
    if (jr) {
        st = mpq_err_set(err, jr == 2 ? MPQ_ERR_NOMEM : MPQ_ERR_SOLVER, "bound_lp: GLPK failed (error hook)");
        goto done;
    }
    if (c.lp_status == GLP_NOFEAS) { st = solv_infeasible(p, err); goto done; }
    if (c.lp_status != GLP_OPT) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "bound_lp: GLPK simplex status %d (not optimal)", c.lp_status);
        goto done;
    }
    *bound = c.lp_value;
done:
    ctx_free(&c);
    free(eff);
    return st;
}

/* Loss (item order) of choice when it meets every budget, else +inf. */
static double choice_loss(const mpq_problem *p, const double *eff, const int *choice) {
    if (!solv_choice_feasible(p, choice)) return INFINITY;
    double l = 0;
    for (int i = 0; i < p->n_items; i++) l += eff[solv_lo(p, i, choice[i])];
    return l;
}

/*
 * Reduced-cost fixing. For multipliers lambda_r >= 0 of the budget rows, every assignment x
 * that meets the budgets satisfies (weak duality of the Lagrangian relaxation)
 *     loss(x) >= loss(x) + sum_r lambda_r (C_r(x) - B_r)
 *              = sum_i [L_i(x_i) + lambda.C_i(x_i)] - lambda.B
 *              = Z(lambda) + sum_i rc_i(x_i),
 * with   Z(lambda) = sum_i min_o [L_io + lambda.C_io] - lambda.B   (a lower bound on the optimum)
 * and    rc_i(o)  = L_io + lambda.C_io - min_o' [L_io' + lambda.C_io']  >= 0.
 * Let z_inc be the loss of a feasible incumbent, so OPT <= z_inc. If rc_i(o) > z_inc - Z, every
 * feasible x with x_i = o has loss(x) >= Z + rc_i(o) > z_inc >= OPT: no optimal assignment uses
 * o, and o can be removed. Every optimal assignment survives (so does the incumbent, whose
 * reduced costs sum to at most z_inc - Z), hence the optimum of the reduced problem equals
 * OPT and any lower bound proven on the reduced problem (its LP value, GLPK's best-node
 * bound) is a lower bound on the original one, as is Z itself. The argument holds for ANY
 * lambda >= 0; the LP optimal duals make Z = z_LP (the strongest such bound). One budget:
 * lambda = -slope of the increment at which the convex-hull greedy breaks (exactly the LP
 * dual, Sinha & Zoltners 1979), no simplex needed. Several budgets: the duals of GLPK's LP.
 * Rounding: Z, rc and z_inc are sums of at most n_items + n_res + 2 terms, each with
 * absolute error <= (n_items + n_res + 2) * eps * S, S the sum of the magnitudes involved
 * (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, eq. 4.4); the test uses a
 * margin of 4x that (covering Z, rc and z_inc together) so rounding never removes an option
 * the exact argument would keep, and the reported Z is lowered by the same margin.
 */
mpq_status solv_ilp_fix(const mpq_problem *p, const mpq_solve_opts *opts, const double *eff, unsigned char *keep,
                        int *inc_choice, solv_ilp_info *info, mpq_err *err) {
    mpq_status st = MPQ_OK;
    solv_mck m = {0};
    solv_inc *incs = NULL;
    size_t n_incs = 0;
    int *pos = NULL, *cand = NULL;
    double *lambda = NULL, *rc = NULL, *bud = NULL;
    ilp_ctx c;
    memset(&c, 0, sizeof c);
    int n = p->n_items, R = p->n_res;
    size_t no = (size_t)n * (size_t)p->n_opt_max;
    double t0 = mpq_time_now();
    info->incumbent = INFINITY;
    info->lagr_bound = -INFINITY;
    info->tight_res = -1;
    info->rounds = 0;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < p->n_opt_max; o++) keep[solv_lo(p, i, o)] = o < p->n_opt[i] && mpq_problem_allowed(p, i, o);
    pos = mpq_calloc((size_t)n, sizeof *pos);
    cand = mpq_calloc((size_t)n, sizeof *cand);
    lambda = mpq_calloc((size_t)R, sizeof *lambda);
    bud = mpq_calloc((size_t)R, sizeof *bud);
    rc = mpq_calloc(no, sizeof *rc);
    if (!pos || !cand || !lambda || !bud || !rc) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "ilp: out of memory for fixing %d items", n);
        goto done;
    }
    int r0 = -1, nb = 0;
    for (int r = 0; r < R; r++) {
        bud[r] = p->budget[r];
        if (p->budget[r] != INFINITY) {
            if (r0 < 0) r0 = r;
            nb++;
        }
    }
    /* one integral budget: rounds of fixing and budget tightening (see tighten below) */
    bool tighten = nb == 1 && mpq_problem_resource_integral(p, r0);
    for (int round = 0; round < 16; round++) {
        info->rounds = round + 1;
        memset(lambda, 0, (size_t)R * sizeof *lambda);
        if (r0 >= 0) {
            /* incumbent and (one budget) multiplier from the convex-hull greedy of budget r0
             * over the kept options */
            solv_mck_free(&m);
            free(incs);
            incs = NULL;
            st = solv_mck_build_mask(p, eff, r0, keep, &m, err);
            if (st != MPQ_OK) goto done;
            double bs = bud[r0] - m.base;
            if (bs < 0) goto done; /* round 0: infeasible, reported by the solve; later: cannot happen */
            st = solv_mck_increments(&m, &incs, &n_incs, err);
            if (st != MPQ_OK) goto done;
            double lam = 0, lpb = 0;
            solv_mck_greedy(&m, incs, n_incs, bs, pos, &lam, &lpb);
            for (int i = 0; i < n; i++) cand[i] = m.opt[pos[i]];
            double l = choice_loss(p, eff, cand);
            if (l < info->incumbent) {
                info->incumbent = l;
                memcpy(inc_choice, cand, (size_t)n * sizeof *cand);
            }
            if (nb == 1) lambda[r0] = lam;
            if (nb > 1) {
                /* several budgets: the duals of the full LP relaxation */
                st = ctx_init(&c, p, opts, eff, NULL, err);
                if (st != MPQ_OK) goto done;
                double *unused = NULL;
                st = greedy_start(p, eff, &c, false, &unused, err);
                if (st != MPQ_OK) goto done;
                int jr = run(&c, false);
                if (jr) {
                    st = mpq_err_set(err, jr == 2 ? MPQ_ERR_NOMEM : MPQ_ERR_SOLVER,
                                     "solve_ilp: GLPK failed (error hook)");
                    goto done;
                }
                if (c.lp_status != GLP_OPT) goto done; /* no fixing; the solve reports the outcome */
                /* GLPK row b holds C_r / scale <= B_r / scale; its dual pi_b <= 0 (minimization),
                 * so the multiplier of the unscaled row is -pi_b / scale */
                for (int b = 0; b < c.n_brows; b++) lambda[c.row_res[b]] = fmax(0.0, -c.dual[b] / c.row_scale[b]);
            }
        }
        /* Z(lambda), reduced costs, and the Lagrangian choice as another incumbent candidate */
        double Z = 0, S = 0;
        for (int i = 0; i < n; i++) {
            double mn = INFINITY, mx = 0;
            int arg = -1;
            for (int o = 0; o < p->n_opt[i]; o++) {
                if (!keep[solv_lo(p, i, o)]) continue;
                double v = eff[solv_lo(p, i, o)], a = fabs(v);
                for (int r = 0; r < R; r++)
                    if (lambda[r] > 0) {
                        v += lambda[r] * p->cost[solv_co(p, r, i, o)];
                        a += lambda[r] * fabs(p->cost[solv_co(p, r, i, o)]);
                    }
                rc[solv_lo(p, i, o)] = v;
                if (v < mn) {
                    mn = v;
                    arg = o;
                }
                if (a > mx) mx = a;
            }
            for (int o = 0; o < p->n_opt[i]; o++)
                if (keep[solv_lo(p, i, o)]) rc[solv_lo(p, i, o)] -= mn;
            cand[i] = arg;
            Z += mn;
            S += 2 * mx;
        }
        for (int r = 0; r < R; r++)
            if (lambda[r] > 0) {
                Z -= lambda[r] * bud[r];
                S += lambda[r] * fabs(bud[r]);
            }
        double l = choice_loss(p, eff, cand);
        if (l < info->incumbent) {
            info->incumbent = l;
            memcpy(inc_choice, cand, (size_t)n * sizeof *cand);
        }
        if (!isfinite(Z)) goto done;
        if (isfinite(info->incumbent)) S += fabs(info->incumbent);
        double tol = 4.0 * (double)(n + R + 2) * DBL_EPSILON * S + DBL_MIN;
        if (Z - tol > info->lagr_bound) info->lagr_bound = Z - tol;
        if (!isfinite(info->incumbent)) goto done;
        double thr = info->incumbent - Z + tol;
        for (int i = 0; i < n; i++)
            for (int o = 0; o < p->n_opt[i]; o++) {
                size_t k = solv_lo(p, i, o);
                if (keep[k] && rc[k] > thr && o != inc_choice[i]) keep[k] = 0;
            }
        if (!tighten) break;
        /* Budget tightening. Every assignment x of kept options has
         *     C(x) = base + sum_i (C_i(x_i) - C_i,min),   base = sum_i C_i,min (cheapest kept),
         * and each difference is a multiple of g = gcd of all of them (integral costs: the
         * sums are exact), so C(x) <= B implies C(x) <= base + floor((B - base) / g) * g. The
         * optimum uses kept options only, so the problem with the kept options and this budget
         * has the same optimum; its LP (Lagrangian) bound is higher when the budget shrank,
         * which allows more fixing: repeat until nothing changes. */
        int64_t g = 0;
        double base = 0;
        for (int i = 0; i < n; i++) {
            double cmin = INFINITY;
            for (int o = 0; o < p->n_opt[i]; o++)
                if (keep[solv_lo(p, i, o)] && p->cost[solv_co(p, r0, i, o)] < cmin) cmin = p->cost[solv_co(p, r0, i, o)];
            for (int o = 0; o < p->n_opt[i]; o++)
                if (keep[solv_lo(p, i, o)]) g = gcd64((int64_t)(p->cost[solv_co(p, r0, i, o)] - cmin), g);
            base += cmin;
        }
        if (g <= 1) break;
        int64_t d = (int64_t)(bud[r0] - base); /* exact: integral costs, |sums| <= 2^53 */
        double nbud = base + (double)(d - d % g);
        if (!(nbud < bud[r0])) break;
        bud[r0] = nbud;
        info->tight_res = r0;
        info->tight_budget = nbud;
    }
done:
    info->fix_seconds = mpq_time_now() - t0;
    ctx_free(&c);
    solv_mck_free(&m);
    free(incs);
    free(pos);
    free(cand);
    free(lambda);
    free(bud);
    free(rc);
    return st;
}

mpq_status solv_ilp_solve(const mpq_problem *p, const mpq_solve_opts *opts, bool fixing, mpq_solution **out,
                          solv_ilp_info *info_out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_solve_opts def = mpq_solve_opts_default();
    double *eff = NULL, *heur = NULL;
    unsigned char *keep = NULL;
    int *inc = NULL;
    mpq_solution *s = NULL;
    solv_ilp_info info;
    ilp_ctx c;
    double t0 = mpq_time_now();
    memset(&c, 0, sizeof c);
    memset(&info, 0, sizeof info);
    info.lagr_bound = -INFINITY;
    info.incumbent = INFINITY;
    info.tight_res = -1;
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "solve_ilp: out is NULL");
    *out = NULL;
    if (!opts) opts = &def;
    if (!(opts->mip_gap >= 0) || isnan(opts->time_limit_s))
        return mpq_err_set(err, MPQ_ERR_INVALID, "solve_ilp: mip_gap %g / time limit %g invalid", opts->mip_gap,
                           opts->time_limit_s);
    st = mpq_problem_check_budgets(p, NULL, err); /* validates, and names a budget infeasible alone */
    if (st != MPQ_OK) return st;
    st = solv_effective_losses(p, opts->smooth, &eff, err);
    if (st != MPQ_OK) return st;
    for (int i = 0; i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i]; o++) info.n_cols_full += mpq_problem_allowed(p, i, o);
    bool have_inc = false;
    if (fixing) {
        keep = mpq_calloc((size_t)p->n_items * (size_t)p->n_opt_max, 1);
        inc = mpq_calloc((size_t)p->n_items, sizeof *inc);
        if (!keep || !inc) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "solve_ilp: out of memory");
            goto done;
        }
        st = solv_ilp_fix(p, opts, eff, keep, inc, &info, err);
        if (st != MPQ_OK) goto done;
        have_inc = isfinite(info.incumbent);
    }
    st = ctx_init(&c, p, opts, eff, have_inc ? keep : NULL, err);
    if (st != MPQ_OK) goto done;
    if (have_inc && info.tight_res >= 0) /* tightened budget (integral: exact arithmetic) */
        for (int b = 0; b < c.n_brows; b++)
            if (c.row_res[b] == info.tight_res) c.row_rhs[b] += info.tight_budget - p->budget[info.tight_res];
    info.n_cols = c.n_cols;
    info.n_items_free = c.n_free;
    st = solv_solution_new(p, "glpk-ilp", &s, err);
    if (st != MPQ_OK) goto done;
    bool proven = false;
    double glpk_bound = -INFINITY;
    if (c.n_cols == 0) {
        /* every item fixed: the one assignment left is the incumbent, and it is optimal */
        for (int i = 0; i < p->n_items; i++) s->choice[i] = c.fixed[i];
        proven = true;
    } else {
        if (have_inc) {
            if (opts->warm_start) {
                heur = mpq_calloc((size_t)c.n_cols + 1, sizeof *heur);
                if (!heur) {
                    st = mpq_err_set(err, MPQ_ERR_NOMEM, "solve_ilp: out of memory");
                    goto done;
                }
                for (int j = 1; j <= c.n_cols; j++) heur[j] = inc[c.col_item[j]] == c.col_opt[j] ? 1.0 : 0.0;
                c.heur = heur;
            }
        } else if (opts->warm_start) {
            st = greedy_start(p, eff, &c, true, &heur, err);
            if (st != MPQ_OK) goto done;
            c.heur = heur;
        }
        if (opts->time_limit_s > 0) {
            c.time_limit = opts->time_limit_s - (mpq_time_now() - t0);
            if (c.time_limit < 1e-3) c.time_limit = 1e-3;
        }
        double tg = mpq_time_now();
        int jr = run(&c, true);
        info.glpk_seconds = mpq_time_now() - tg;
        if (jr) {
            st = mpq_err_set(err, jr == 2 ? MPQ_ERR_NOMEM : MPQ_ERR_SOLVER, "solve_ilp: GLPK failed (error hook)");
            goto done;
        }
        bool glpk_sol = c.lp_status == GLP_OPT && (c.mip_status == GLP_OPT || c.mip_status == GLP_FEAS);
        if (!have_inc) {
            if (c.lp_status == GLP_NOFEAS || c.mip_ret == GLP_ENOPFS || c.mip_status == GLP_NOFEAS) {
                st = solv_infeasible(p, err);
                goto done;
            }
            if (c.lp_status != GLP_OPT) {
                st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp: LP relaxation not solved (GLPK status/code %d%s)",
                                 c.lp_status, c.lp_status == -GLP_ETMLIM ? ", time limit" : "");
                goto done;
            }
            if (!glpk_sol) {
                st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp: no integer solution (glp_intopt returned %d%s)",
                                 c.mip_ret, c.mip_ret == GLP_ETMLIM ? ": time limit reached" : "");
                goto done;
            }
        }
        if (c.lp_status == GLP_OPT) glpk_bound = c.lp_value;
        if (c.node_bound > glpk_bound) glpk_bound = c.node_bound;
        double best_x = 0;
        if (glpk_sol) {
            /* per free item, the column with the largest value (robust to GLPK's integrality
             * tolerance); columns of an item are contiguous */
            for (int i = 0; i < p->n_items; i++) s->choice[i] = c.fixed[i];
            for (int j = 1; j <= c.n_cols; j++) {
                int i = c.col_item[j];
                if (j == 1 || c.col_item[j - 1] != i || c.x[j] > best_x) {
                    s->choice[i] = c.col_opt[j];
                    best_x = c.x[j];
                }
            }
            solv_solution_totals(p, eff, s);
            for (int r = 0; r < p->n_res && !have_inc; r++)
                if (s->total_cost[r] > p->budget[r]) {
                    st = mpq_err_set(err, MPQ_ERR_SOLVER,
                                     "solve_ilp: GLPK's solution exceeds budget %s: %.17g > %.17g (within GLPK's "
                                     "feasibility tolerance)",
                                     p->res_name[r], s->total_cost[r], p->budget[r]);
                    goto done;
                }
            proven = c.mip_ret == 0 && c.mip_status == GLP_OPT && !(opts->mip_gap > 0);
        }
        /* with fixing, keep the incumbent when GLPK found nothing better (or nothing feasible) */
        if (have_inc && (!glpk_sol || !solv_choice_feasible(p, s->choice) ||
                         choice_loss(p, eff, s->choice) > info.incumbent)) {
            memcpy(s->choice, inc, (size_t)p->n_items * sizeof *inc);
            if (!glpk_sol || !solv_choice_feasible(p, s->choice)) proven = false;
        }
    }
    solv_solution_totals(p, eff, s);
    double bound = info.lagr_bound;
    if (glpk_bound > bound) bound = glpk_bound;
    if (proven || bound > s->total_loss) bound = s->total_loss;
    s->bound = bound;
    s->gap = fabs(s->total_loss - bound) / (fabs(s->total_loss) + DBL_EPSILON);
    s->status = (proven || s->gap == 0) ? MPQ_SOLVE_OPTIMAL : MPQ_SOLVE_FEASIBLE;
    s->smoothed = opts->smooth;
    s->seconds = mpq_time_now() - t0;
done:
    ctx_free(&c);
    free(eff);
    free(heur);
    free(keep);
    free(inc);
    if (st != MPQ_OK) { mpq_solution_free(s); s = NULL; }
    *out = s;
    if (info_out) *info_out = info;
    return st;
}

mpq_status mpq_solve_ilp(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solution **out,
                         mpq_err *err) {
    return solv_ilp_solve(p, opts, true, out, NULL, err);
}

/* ---- pairwise interaction terms ------------------------------------------------------------
 * The same allocation ILP with a quadratic part: term t adds value_t when item a_t takes option
 * oa_t AND item b_t takes option ob_t. Linearised with one continuous column y_t in [0, 1] and
 * the three rows of the standard product linearisation (Glover & Woolsey 1974; Fortet 1960):
 *     y_t <= x(a_t, oa_t),   y_t <= x(b_t, ob_t),   y_t >= x(a_t, oa_t) + x(b_t, ob_t) - 1,
 * so y_t = x(a_t, oa_t) * x(b_t, ob_t) for every binary x whatever the sign of value_t. A term
 * whose options are not both allowed can never be active and is left out; several terms on the
 * same product simply add. That is the form with opts->pair_standard_form. By default the
 * tighter aggregated form (Adams & Sherali 1986, the level-1 reformulation-linearisation of the
 * one-hot rows; Frieze & Yadegar 1983 for the QAP): for every pair of items (i, j) with a term,
 * one column y(i, oa, j, ob) >= 0 per pair of allowed options (cost = the sum of its terms, 0
 * when none) and the rows
 *     sum_ob y(i, oa, j, ob) = x(i, oa)  for every oa,   sum_oa y(i, oa, j, ob) = x(j, ob)  for every ob,
 * i.e. y is a joint distribution with the one-hot marginals: at integer x it is again the
 * product, and its LP relaxation is at least as tight as the three rows'. Fixing and warm starts
 * of mpq_solve_ilp are not used here (they rely on the separable objective). */

typedef struct pair_ctx {
    jmp_buf jb;
    glp_prob *lp;
} pair_ctx;

static void on_glpk_error_pairs(void *info) {
    pair_ctx *c = info;
    longjmp(c->jb, 1);
}

typedef struct pair_model {
    const mpq_problem *p;
    const double *eff;
    const mpq_pair_term *terms;
    int n_terms;
    const mpq_solve_opts *opts;
    int n_x, n_y;      /* columns: x 1..n_x, y n_x+1..n_x+n_y */
    int *col;          /* [n_items * n_opt_max] 1-based x column, 0 = not allowed */
    int *col_item, *col_opt; /* [n_x + 1] */
    int *y_term;       /* standard form: [n_y] term index of each y column */
    double *y_cost;    /* [n_y] objective coefficient of each y column */
    /* aggregated form: item pairs lo < hi, their dense option-pair slots and slot columns */
    int n_ip;
    int64_t *ip_key;   /* [n_ip] lo * n_items + hi, ascending */
    size_t *ip_base;   /* [n_ip] first slot; slot = base + oa * n_opt[hi] + ob */
    int *slot_col;     /* [n_slots] 1-based y column, 0 = an option not allowed */
    double *x;         /* [n_x + n_y + 1] solution */
    double lp_value, mip_value;
    int lp_ret, lp_status, mip_ret, mip_status;
} pair_model;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void pair_build(pair_model *m, glp_prob *lp) {
    const mpq_problem *p = m->p;
    glp_set_obj_dir(lp, GLP_MIN);
    int ncol = m->n_x + m->n_y;
    glp_add_cols(lp, ncol);
    for (int j = 1; j <= m->n_x; j++) {
        glp_set_col_kind(lp, j, GLP_BV);
        glp_set_obj_coef(lp, j, m->eff[solv_lo(p, m->col_item[j], m->col_opt[j])]);
    }
    for (int k = 0; k < m->n_y; k++) {
        int j = m->n_x + 1 + k;
        glp_set_col_bnds(lp, j, GLP_DB, 0.0, 1.0);
        glp_set_obj_coef(lp, j, m->y_cost[k]);
    }
    int ind[4];
    double val[4];
    for (int i = 0; i < p->n_items; i++) { /* one-hot */
        int r = glp_add_rows(lp, 1), n = 0;
        glp_set_row_bnds(lp, r, GLP_FX, 1.0, 1.0);
        for (int o = 0; o < p->n_opt[i]; o++)
            if (m->col[solv_lo(p, i, o)]) n++;
        int *ix = mpq_calloc((size_t)n + 1, sizeof *ix);
        double *vx = mpq_calloc((size_t)n + 1, sizeof *vx);
        if (!ix || !vx) {
            free(ix);
            free(vx);
            glp_error("out of memory\n"); /* longjmps through the hook */
            return;
        }
        n = 0;
        for (int o = 0; o < p->n_opt[i]; o++)
            if (m->col[solv_lo(p, i, o)]) {
                ix[++n] = m->col[solv_lo(p, i, o)];
                vx[n] = 1.0;
            }
        glp_set_mat_row(lp, r, n, ix, vx);
        free(ix);
        free(vx);
    }
    for (int res = 0; res < p->n_res; res++) { /* budgets, each row divided by its largest cost */
        if (p->budget[res] == INFINITY) continue;
        double scale = 0;
        for (int j = 1; j <= m->n_x; j++) scale = fmax(scale, fabs(p->cost[solv_co(p, res, m->col_item[j], m->col_opt[j])]));
        if (!(scale > 0)) scale = 1.0;
        int r = glp_add_rows(lp, 1);
        glp_set_row_bnds(lp, r, GLP_UP, 0.0, p->budget[res] / scale);
        int *ix = mpq_calloc((size_t)m->n_x + 1, sizeof *ix);
        double *vx = mpq_calloc((size_t)m->n_x + 1, sizeof *vx);
        if (!ix || !vx) {
            free(ix);
            free(vx);
            glp_error("out of memory\n");
            return;
        }
        for (int j = 1; j <= m->n_x; j++) {
            ix[j] = j;
            vx[j] = p->cost[solv_co(p, res, m->col_item[j], m->col_opt[j])] / scale;
        }
        glp_set_mat_row(lp, r, m->n_x, ix, vx);
        free(ix);
        free(vx);
    }
    for (int q = 0; q < m->n_ip; q++) { /* aggregated: marginal rows of each item pair */
        int lo = (int)(m->ip_key[q] / p->n_items), hi = (int)(m->ip_key[q] % p->n_items);
        int na = p->n_opt[lo], nb = p->n_opt[hi];
        int *ix = mpq_calloc((size_t)(na > nb ? na : nb) + 2, sizeof *ix);
        double *vx = mpq_calloc((size_t)(na > nb ? na : nb) + 2, sizeof *vx);
        if (!ix || !vx) {
            free(ix);
            free(vx);
            glp_error("out of memory\n");
            return;
        }
        for (int side = 0; side < 2; side++) {
            int it = side ? hi : lo, n_own = side ? nb : na, n_other = side ? na : nb;
            for (int o = 0; o < n_own; o++) {
                int xc = m->col[solv_lo(p, it, o)];
                if (!xc) continue;
                int n = 0;
                for (int u = 0; u < n_other; u++) {
                    size_t slot = m->ip_base[q] + (side ? (size_t)u * nb + (size_t)o : (size_t)o * nb + (size_t)u);
                    if (m->slot_col[slot]) {
                        ix[++n] = m->slot_col[slot];
                        vx[n] = 1.0;
                    }
                }
                ix[++n] = xc;
                vx[n] = -1.0;
                int r = glp_add_rows(lp, 1);
                glp_set_row_bnds(lp, r, GLP_FX, 0.0, 0.0);
                glp_set_mat_row(lp, r, n, ix, vx);
            }
        }
        free(ix);
        free(vx);
    }
    for (int k = 0; k < m->n_y && m->y_term; k++) { /* standard: three rows per term */
        const mpq_pair_term *t = &m->terms[m->y_term[k]];
        int y = m->n_x + 1 + k, xa = m->col[solv_lo(p, t->item_a, t->option_a)],
            xb = m->col[solv_lo(p, t->item_b, t->option_b)];
        int r = glp_add_rows(lp, 3);
        glp_set_row_bnds(lp, r, GLP_UP, 0.0, 0.0); /* y - xa <= 0 */
        ind[1] = y; val[1] = 1.0; ind[2] = xa; val[2] = -1.0;
        glp_set_mat_row(lp, r, 2, ind, val);
        glp_set_row_bnds(lp, r + 1, GLP_UP, 0.0, 0.0); /* y - xb <= 0 */
        ind[2] = xb;
        glp_set_mat_row(lp, r + 1, 2, ind, val);
        glp_set_row_bnds(lp, r + 2, GLP_LO, -1.0, 0.0); /* y - xa - xb >= -1 */
        ind[2] = xa; ind[3] = xb; val[3] = -1.0;
        glp_set_mat_row(lp, r + 2, 3, ind, val);
    }
}

/* simplex + intopt; GLPK errors longjmp here: returns nonzero. */
static int pair_run(pair_model *m) {
    pair_ctx c;
    memset(&c, 0, sizeof c);
    if (setjmp(c.jb)) {
        glp_error_hook(NULL, NULL);
        glp_free_env();
        return 1;
    }
    glp_error_hook(on_glpk_error_pairs, &c);
    glp_term_out(GLP_OFF);
    c.lp = glp_create_prob();
    pair_build(m, c.lp);
    glp_scale_prob(c.lp, GLP_SF_AUTO);
    glp_adv_basis(c.lp, 0);
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = GLP_MSG_OFF;
    if (m->opts->time_limit_s > 0) sp.tm_lim = (int)fmax(1.0, fmin(m->opts->time_limit_s * 1000.0, 2e9));
    m->lp_ret = glp_simplex(c.lp, &sp);
    m->lp_status = m->lp_ret == 0 ? glp_get_status(c.lp) : 0;
    if (m->lp_ret == 0 && m->lp_status == GLP_OPT) {
        m->lp_value = glp_get_obj_val(c.lp);
        glp_iocp ip;
        glp_init_iocp(&ip);
        ip.msg_lev = GLP_MSG_OFF;
        ip.presolve = m->opts->presolve ? GLP_ON : GLP_OFF;
        ip.mip_gap = m->opts->mip_gap > 0 ? m->opts->mip_gap : 0.0;
        if (m->opts->time_limit_s > 0) ip.tm_lim = (int)fmax(1.0, fmin(m->opts->time_limit_s * 1000.0, 2e9));
        m->mip_ret = glp_intopt(c.lp, &ip);
        m->mip_status = glp_mip_status(c.lp);
        if (m->mip_status == GLP_OPT || m->mip_status == GLP_FEAS) {
            m->mip_value = glp_mip_obj_val(c.lp);
            for (int j = 1; j <= m->n_x + m->n_y; j++) m->x[j] = glp_mip_col_val(c.lp, j);
        }
    }
    glp_delete_prob(c.lp);
    glp_error_hook(NULL, NULL);
    return 0;
}

double mpq_pair_terms_value(const mpq_pair_term *terms, int n_terms, const int *choice) {
    double v = 0;
    for (int t = 0; t < n_terms; t++)
        if (choice[terms[t].item_a] == terms[t].option_a && choice[terms[t].item_b] == terms[t].option_b)
            v += terms[t].value;
    return v;
}

mpq_status mpq_solve_ilp_pairs(const mpq_problem *p, const mpq_pair_term *terms, int n_terms,
                               const mpq_solve_opts *opts, mpq_solution **out, mpq_err *err) {
    mpq_solve_opts def = mpq_solve_opts_default();
    pair_model m;
    mpq_solution *s = NULL;
    double *eff = NULL;
    double t0 = mpq_time_now();
    memset(&m, 0, sizeof m);
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "solve_ilp_pairs: out is NULL");
    *out = NULL;
    if (!p || n_terms < 0 || (n_terms > 0 && !terms))
        return mpq_err_set(err, MPQ_ERR_INVALID, "solve_ilp_pairs: bad arguments");
    if (!opts) opts = &def;
    if (!(opts->mip_gap >= 0) || isnan(opts->time_limit_s))
        return mpq_err_set(err, MPQ_ERR_INVALID, "solve_ilp_pairs: mip_gap %g / time limit %g invalid", opts->mip_gap,
                           opts->time_limit_s);
    for (int t = 0; t < n_terms; t++) {
        const mpq_pair_term *q = &terms[t];
        if (q->item_a < 0 || q->item_a >= p->n_items || q->item_b < 0 || q->item_b >= p->n_items ||
            q->item_a == q->item_b || q->option_a < 0 || q->option_a >= p->n_opt[q->item_a] || q->option_b < 0 ||
            q->option_b >= p->n_opt[q->item_b] || !isfinite(q->value))
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "solve_ilp_pairs: term %d: items %d/%d, options %d/%d, value %g out of range or "
                               "not finite (two different items are needed)",
                               t, q->item_a, q->item_b, q->option_a, q->option_b, q->value);
    }
    mpq_status st = mpq_problem_check_budgets(p, NULL, err);
    if (st != MPQ_OK) return st;
    if ((st = solv_effective_losses(p, opts->smooth, &eff, err)) != MPQ_OK) return st;
    m.p = p;
    m.eff = eff;
    m.terms = terms;
    m.n_terms = n_terms;
    m.opts = opts;
    m.col = mpq_calloc((size_t)p->n_items * (size_t)p->n_opt_max, sizeof *m.col);
    for (int i = 0; m.col && i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i]; o++) m.n_x += mpq_problem_allowed(p, i, o);
    int n_valid = 0;
    for (int t = 0; t < n_terms; t++)
        n_valid += mpq_problem_allowed(p, terms[t].item_a, terms[t].option_a) &&
                   mpq_problem_allowed(p, terms[t].item_b, terms[t].option_b);
    m.col_item = mpq_calloc((size_t)m.n_x + 1, sizeof *m.col_item);
    m.col_opt = mpq_calloc((size_t)m.n_x + 1, sizeof *m.col_opt);
    if (!m.col || !m.col_item || !m.col_opt) goto nomem;
    int j = 0;
    for (int i = 0; i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i]; o++)
            if (mpq_problem_allowed(p, i, o)) {
                m.col[solv_lo(p, i, o)] = ++j;
                m.col_item[j] = i;
                m.col_opt[j] = o;
            }
    if (opts->pair_standard_form) {
        m.n_y = n_valid;
        m.y_term = mpq_calloc((size_t)m.n_y + 1, sizeof *m.y_term);
        m.y_cost = mpq_calloc((size_t)m.n_y + 1, sizeof *m.y_cost);
        if (!m.y_term || !m.y_cost) goto nomem;
        for (int t = 0, k = 0; t < n_terms; t++)
            if (mpq_problem_allowed(p, terms[t].item_a, terms[t].option_a) &&
                mpq_problem_allowed(p, terms[t].item_b, terms[t].option_b)) {
                m.y_cost[k] = terms[t].value;
                m.y_term[k++] = t;
            }
    } else if (n_valid > 0) {
        /* distinct item pairs (lo, hi) of the valid terms */
        m.ip_key = mpq_calloc((size_t)n_valid, sizeof *m.ip_key);
        if (!m.ip_key) goto nomem;
        for (int t = 0; t < n_terms; t++)
            if (mpq_problem_allowed(p, terms[t].item_a, terms[t].option_a) &&
                mpq_problem_allowed(p, terms[t].item_b, terms[t].option_b)) {
                int lo = terms[t].item_a < terms[t].item_b ? terms[t].item_a : terms[t].item_b;
                int hi = terms[t].item_a ^ terms[t].item_b ^ lo;
                m.ip_key[m.n_ip++] = (int64_t)lo * p->n_items + hi;
            }
        qsort(m.ip_key, (size_t)m.n_ip, sizeof *m.ip_key, cmp_i64);
        int u = 0;
        for (int q = 0; q < m.n_ip; q++)
            if (q == 0 || m.ip_key[q] != m.ip_key[u - 1]) m.ip_key[u++] = m.ip_key[q];
        m.n_ip = u;
        m.ip_base = mpq_calloc((size_t)m.n_ip, sizeof *m.ip_base);
        if (!m.ip_base) goto nomem;
        size_t n_slots = 0;
        for (int q = 0; q < m.n_ip; q++) {
            m.ip_base[q] = n_slots;
            n_slots += (size_t)p->n_opt[m.ip_key[q] / p->n_items] * (size_t)p->n_opt[m.ip_key[q] % p->n_items];
        }
        m.slot_col = mpq_calloc(n_slots, sizeof *m.slot_col);
        double *slot_cost = mpq_calloc(n_slots, sizeof *slot_cost);
        if (!m.slot_col || !slot_cost) {
            free(slot_cost);
            goto nomem;
        }
        for (int t = 0; t < n_terms; t++) {
            const mpq_pair_term *q = &terms[t];
            if (!mpq_problem_allowed(p, q->item_a, q->option_a) || !mpq_problem_allowed(p, q->item_b, q->option_b))
                continue;
            bool sw = q->item_a > q->item_b;
            int lo = sw ? q->item_b : q->item_a, hi = sw ? q->item_a : q->item_b;
            int olo = sw ? q->option_b : q->option_a, ohi = sw ? q->option_a : q->option_b;
            int64_t key = (int64_t)lo * p->n_items + hi;
            const int64_t *f = bsearch(&key, m.ip_key, (size_t)m.n_ip, sizeof *m.ip_key, cmp_i64);
            slot_cost[m.ip_base[f - m.ip_key] + (size_t)olo * p->n_opt[hi] + (size_t)ohi] += q->value;
        }
        for (int q = 0; q < m.n_ip; q++) {
            int lo = (int)(m.ip_key[q] / p->n_items), hi = (int)(m.ip_key[q] % p->n_items);
            for (int a = 0; a < p->n_opt[lo]; a++)
                for (int b = 0; b < p->n_opt[hi]; b++)
                    if (mpq_problem_allowed(p, lo, a) && mpq_problem_allowed(p, hi, b))
                        m.slot_col[m.ip_base[q] + (size_t)a * p->n_opt[hi] + (size_t)b] = m.n_x + ++m.n_y;
        }
        m.y_cost = mpq_calloc((size_t)m.n_y + 1, sizeof *m.y_cost);
        if (!m.y_cost) {
            free(slot_cost);
            goto nomem;
        }
        for (size_t k = 0; k < n_slots; k++)
            if (m.slot_col[k]) m.y_cost[m.slot_col[k] - m.n_x - 1] = slot_cost[k];
        free(slot_cost);
    }
    m.x = mpq_calloc((size_t)m.n_x + (size_t)m.n_y + 1, sizeof *m.x);
    if (!m.x) goto nomem;
    if (pair_run(&m)) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp_pairs: GLPK failed (error hook)");
        goto done;
    }
    if ((m.lp_ret == 0 && m.lp_status == GLP_NOFEAS) || m.mip_ret == GLP_ENOPFS || m.mip_status == GLP_NOFEAS) {
        st = solv_infeasible(p, err);
        goto done;
    }
    if (m.lp_ret != 0 || m.lp_status != GLP_OPT) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp_pairs: LP relaxation not solved (glp_simplex %d, status %d)",
                         m.lp_ret, m.lp_status);
        goto done;
    }
    if (m.mip_status != GLP_OPT && m.mip_status != GLP_FEAS) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp_pairs: no integer solution (glp_intopt returned %d%s)",
                         m.mip_ret, m.mip_ret == GLP_ETMLIM ? ": time limit reached" : "");
        goto done;
    }
    if ((st = solv_solution_new(p, "glpk-ilp-pairs", &s, err)) != MPQ_OK) goto done;
    for (int i = 0; i < p->n_items; i++) {
        double best = -1;
        for (int o = 0; o < p->n_opt[i]; o++) {
            int c = m.col[solv_lo(p, i, o)];
            if (c && m.x[c] > best) {
                best = m.x[c];
                s->choice[i] = o;
            }
        }
    }
    if (!solv_choice_feasible(p, s->choice)) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp_pairs: GLPK's solution exceeds a budget (within GLPK's "
                                              "feasibility tolerance)");
        goto done;
    }
    solv_solution_totals(p, eff, s);
    double pv = mpq_pair_terms_value(terms, n_terms, s->choice);
    s->total_loss += pv;
    s->total_loss_raw += pv;
    bool proven = m.mip_ret == 0 && m.mip_status == GLP_OPT && !(opts->mip_gap > 0);
    double bound = proven ? s->total_loss : fmin(m.lp_value, s->total_loss);
    s->bound = bound;
    s->gap = fabs(s->total_loss - bound) / (fabs(s->total_loss) + DBL_EPSILON);
    s->status = (proven || s->gap == 0) ? MPQ_SOLVE_OPTIMAL : MPQ_SOLVE_FEASIBLE;
    s->smoothed = opts->smooth;
    s->seconds = mpq_time_now() - t0;
done:
    free(m.col);
    free(m.col_item);
    free(m.col_opt);
    free(m.y_term);
    free(m.y_cost);
    free(m.ip_key);
    free(m.ip_base);
    free(m.slot_col);
    free(m.x);
    free(eff);
    if (st != MPQ_OK) {
        mpq_solution_free(s);
        s = NULL;
    }
    *out = s;
    return st;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "solve_ilp_pairs: out of memory for %d terms", n_terms);
    goto done;
}
