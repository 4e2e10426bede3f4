/*
 * ilp_glpk.c - the allocation ILP (HAWQ-V3, Yao et al. 2021, eq. 9: one binary per
 * (layer, candidate), one-hot rows, budget rows) and its LP relaxation, solved with GLPK
 * (glp_simplex / glp_intopt, GLPK 5.0 reference manual ch. 2.8). The only file that
 * includes glpk.h. GLPK's terminal output is silenced and its fatal-error hook longjmps back
 * here (after which glp_free_env() is required), so bad input never aborts the process;
 * inputs are validated before anything is built.
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
    int n_cols;
    int *col_item, *col_opt;   /* [n_cols + 1], 1-based */
    int *row_res;              /* budget row -> resource, [n_res] */
    int n_brows;
    double *row_scale;         /* divide costs and budget of a budget row by this */
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
        double v = glp_ios_node_bound(tree, b);
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
    int nr = p->n_items + c->n_brows;
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_rows(lp, nr);
    for (int i = 0; i < p->n_items; i++) glp_set_row_bnds(lp, i + 1, GLP_FX, 1.0, 1.0);
    for (int b = 0; b < c->n_brows; b++) {
        int r = c->row_res[b];
        glp_set_row_bnds(lp, p->n_items + b + 1, GLP_UP, 0.0, p->budget[r] / c->row_scale[b]);
    }
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
        ind[++n] = i + 1;
        val[n] = 1.0;
        for (int b = 0; b < c->n_brows; b++) {
            double v = p->cost[solv_co(p, c->row_res[b], i, o)] / c->row_scale[b];
            if (v != 0) {
                ind[++n] = p->n_items + b + 1;
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
        int nr = c->p->n_items + c->n_brows;
        for (int i = 1; i <= c->p->n_items; i++) glp_set_row_stat(c->lp, i, GLP_NS);
        for (int r = c->p->n_items + 1; r <= nr; r++)
            glp_set_row_stat(c->lp, r, (r == c->p->n_items + 1 && !c->basis_row) ? GLP_NU : GLP_BS);
        for (int j = 1; j <= c->n_cols; j++) glp_set_col_stat(c->lp, j, c->basis_col[j] ? GLP_BS : GLP_NL);
    }
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = GLP_MSG_OFF;
    sp.presolve = GLP_OFF;
    if (c->opts->time_limit_s > 0) sp.tm_lim = (int)fmin(c->opts->time_limit_s * 1000.0, 2e9);
    int ret = glp_simplex(c->lp, &sp);
    if (ret == GLP_EBADB || ret == GLP_ESING || ret == GLP_ECOND) { /* starting basis unusable */
        glp_adv_basis(c->lp, 0);
        ret = glp_simplex(c->lp, &sp);
    }
    c->lp_status = (ret == 0) ? glp_get_status(c->lp) : -ret;
    if (ret == 0 && c->lp_status == GLP_OPT) c->lp_value = glp_get_obj_val(c->lp);
    if (integer && ret == 0 && c->lp_status == GLP_OPT) {
        glp_iocp ip;
        glp_init_iocp(&ip);
        ip.msg_lev = GLP_MSG_OFF;
        ip.presolve = (c->opts->presolve && !c->heur) ? GLP_ON : GLP_OFF;
        ip.mip_gap = c->opts->mip_gap > 0 ? c->opts->mip_gap : 0.0;
        if (c->opts->time_limit_s > 0) ip.tm_lim = (int)fmin(c->opts->time_limit_s * 1000.0, 2e9);
        ip.cb_func = ios_callback;
        ip.cb_info = c;
        c->mip_ret = glp_intopt(c->lp, &ip);
        c->mip_status = glp_mip_status(c->lp);
        if (c->mip_status == GLP_OPT || c->mip_status == GLP_FEAS) {
            c->mip_value = glp_mip_obj_val(c->lp);
            for (int j = 1; j <= c->n_cols; j++) c->x[j] = glp_mip_col_val(c->lp, j);
        }
    }
    glp_delete_prob(c->lp);
    c->lp = NULL;
    glp_error_hook(NULL, NULL);
    return 0;
}

/* Sets up columns, row scaling; ctx arrays freed by ctx_free. */
static mpq_status ctx_init(ilp_ctx *c, const mpq_problem *p, const mpq_solve_opts *opts, const double *eff,
                           mpq_err *err) {
    memset(c, 0, sizeof *c);
    c->p = p;
    c->opts = opts;
    c->eff = eff;
    c->node_bound = -INFINITY;
    int n = 0;
    for (int i = 0; i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i]; o++) n += mpq_problem_allowed(p, i, o);
    c->n_cols = n;
    c->col_item = mpq_calloc((size_t)n + 1, sizeof *c->col_item);
    c->col_opt = mpq_calloc((size_t)n + 1, sizeof *c->col_opt);
    c->row_res = mpq_calloc((size_t)p->n_res, sizeof *c->row_res);
    c->row_scale = mpq_calloc((size_t)p->n_res, sizeof *c->row_scale);
    c->x = mpq_calloc((size_t)n + 1, sizeof *c->x);
    if (!c->col_item || !c->col_opt || !c->row_res || !c->row_scale || !c->x)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "ilp: out of memory for %d columns", n);
    int j = 0;
    for (int i = 0; i < p->n_items; i++)
        for (int o = 0; o < p->n_opt[i]; o++)
            if (mpq_problem_allowed(p, i, o)) {
                j++;
                c->col_item[j] = i;
                c->col_opt[j] = o;
            }
    for (int r = 0; r < p->n_res; r++) {
        if (p->budget[r] == INFINITY) continue;
        int b = c->n_brows++;
        c->row_res[b] = r;
        c->row_scale[b] = 1.0;
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
    free(c->row_res);
    free(c->row_scale);
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
    st = ctx_init(&c, p, opts, eff, err);
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

mpq_status mpq_solve_ilp(const mpq_problem *p, const mpq_solve_opts *opts, mpq_solution **out,
                         mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_solve_opts def = mpq_solve_opts_default();
    double *eff = NULL, *heur = NULL;
    mpq_solution *s = NULL;
    double best_x = 0;
    ilp_ctx c;
    double t0 = mpq_time_now();
    memset(&c, 0, sizeof c);
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
    st = ctx_init(&c, p, opts, eff, err);
    if (st != MPQ_OK) goto done;
    if (opts->warm_start) {
        st = greedy_start(p, eff, &c, true, &heur, err);
        if (st != MPQ_OK) goto done;
        c.heur = heur;
    }
    int jr = run(&c, true);
    if (jr) {
        st = mpq_err_set(err, jr == 2 ? MPQ_ERR_NOMEM : MPQ_ERR_SOLVER, "solve_ilp: GLPK failed (error hook)");
        goto done;
    }
    if (c.lp_status == GLP_NOFEAS || c.mip_ret == GLP_ENOPFS || c.mip_status == GLP_NOFEAS) {
        st = solv_infeasible(p, err);
        goto done;
    }
    if (c.lp_status != GLP_OPT) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp: LP relaxation not solved (GLPK status/code %d%s)",
                         c.lp_status, c.lp_status == -GLP_ETMLIM ? ", time limit" : "");
        goto done;
    }
    if (c.mip_status != GLP_OPT && c.mip_status != GLP_FEAS) {
        st = mpq_err_set(err, MPQ_ERR_SOLVER, "solve_ilp: no integer solution (glp_intopt returned %d%s)",
                         c.mip_ret, c.mip_ret == GLP_ETMLIM ? ": time limit reached" : "");
        goto done;
    }
    st = solv_solution_new(p, "glpk-ilp", &s, err);
    if (st != MPQ_OK) goto done;
    /* per item, the column with the largest value (robust to GLPK's integrality tolerance);
     * columns of an item are contiguous */
    for (int j = 1; j <= c.n_cols; j++) {
        int i = c.col_item[j];
        if (j == 1 || c.col_item[j - 1] != i || c.x[j] > best_x) {
            s->choice[i] = c.col_opt[j];
            best_x = c.x[j];
        }
    }
    solv_solution_totals(p, eff, s);
    for (int r = 0; r < p->n_res; r++)
        if (s->total_cost[r] > p->budget[r]) {
            st = mpq_err_set(err, MPQ_ERR_SOLVER,
                             "solve_ilp: GLPK's solution exceeds budget %s: %.17g > %.17g (within GLPK's "
                             "feasibility tolerance)",
                             p->res_name[r], s->total_cost[r], p->budget[r]);
            goto done;
        }
    double bound = c.lp_value;
    if (c.node_bound > bound) bound = c.node_bound;
    bool proven = c.mip_ret == 0 && c.mip_status == GLP_OPT && !(opts->mip_gap > 0);
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
    if (st != MPQ_OK) { mpq_solution_free(s); s = NULL; }
    *out = s;
    return st;
}
