/*
 * refine.c - interaction-aware closed loop (mpq_refine.h): in-context re-measurement of the
 * damage of neighbouring candidates given the current solution, re-solve with those losses,
 * repeat. Per-layer damages of single-layer quantization (HAWQ / MixDQ style tables) assume
 * additivity; here every loss is measured with all other layers quantized as in the current
 * solution. Measurements are resumable units (stage "refine") committed one by one.
 */
#include "mpq/mpq_refine.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_quant.h"

#include "job_calib.h"
#include "jobsolve_internal.h"

#define STAGE "refine"

mpq_refine_opts mpq_refine_opts_default(void) {
    mpq_refine_opts o;
    memset(&o, 0, sizeof o);
    o.smooth = true;
    o.solver = "auto";
    o.max_iterations = 5;
    o.reach = 1;
    o.exchanges = MPQ_REFINE_EXCHANGES;
    o.exchange_size = 2;
    return o;
}

void mpq_refine_result_free(mpq_refine_result *r) {
    if (!r) return;
    free(r->iters);
    free(r);
}

typedef struct refine_ctx {
    mpq_job *job;
    mpq_db *db;
    const mpq_refine_opts *o;
    mpq_jobsolve_opts jo;
    mpq_jobsolve_problem *p;
    int L, O, n_items;
    double *add;        /* [L*O] additive (stored single-layer kl) */
    double *table;      /* [L*O] current table */
    int *first;         /* [n_items] first layer of each item */
    int *size;          /* [n_items] layers per item */
    int *lin;           /* [L] model linear index of each problem layer */
    /* measurement state (loaded on the first pending unit) */
    const mpq_model *model;
    mpq_exec *ex;
    mpq_exec_ref *fp_ref;
    int *tokens;
    int n_seqs, T;
    char data_sha[65];
    mpq_weights *wA, *wS;
    mpq_candidate *cands; /* [O] */
    mpq_calib *cal;       /* the job's calibration with X^T X, only when a candidate is saq */
    mpq_db_lease lease;
    bool leased;
    int n_units_run;
    mpq_refine_result *res;
} refine_ctx;

static size_t at(const refine_ctx *c, int l, int o) { return (size_t)l * (size_t)c->O + (size_t)o; }

static void ctx_free(refine_ctx *c) {
    mpq_calib_free(c->cal);
    mpq_weights_free(c->wS);
    mpq_weights_free(c->wA);
    mpq_exec_ref_free(c->fp_ref);
    mpq_exec_free(c->ex);
    free(c->tokens);
    free(c->cands);
    free(c->lin);
    free(c->size);
    free(c->first);
    free(c->table);
    free(c->add);
    mpq_jobsolve_problem_free(c->p);
    if (c->leased) (void)mpq_db_lease_release(c->db, &c->lease, NULL);
}

/* ---- measurement ------------------------------------------------------------------------ */

/* Model, calibration windows (as the job drew them) and the FP reference on them. */
static mpq_status load_measure(refine_ctx *c, mpq_err *err) {
    if (c->ex) return MPQ_OK;
    int B = 0;
    mpq_status st = job_calib_windows(c->job, "refine", &c->model, &c->tokens, &c->n_seqs, &c->T, &B, c->data_sha, err);
    if (st != MPQ_OK) return st;
    if ((st = mpq_exec_create_forward(c->model, B, c->T, &c->ex, err)) != MPQ_OK) goto done;
    if ((st = mpq_exec_ref_build(c->ex, mpq_model_get_weights(c->model), NULL, c->tokens, c->n_seqs, c->T, false,
                                 &c->fp_ref, err)) != MPQ_OK)
        goto done;
    /* A's quantized layers are owned by wA, a view of the model; the probe wS is a view of wA */
    if ((st = mpq_weights_view(c->model, &c->wA, err)) != MPQ_OK) goto done;
    for (int o = 0; o < c->O && !c->cal; o++) /* SAQ candidates need each layer's X^T X */
        if (mpq_candidate_is_saq(&c->cands[o]) && (st = mpq_job_calib_create(c->job, &c->cal, err)) != MPQ_OK)
            goto done;
done:
    if (st != MPQ_OK) mpq_err_prefix(err, "refine: calibration windows");
    return st;
}

/* dst's linear layer `lin` = FP weights quantized with candidate o: a matrix dst owns (the FP
 * layer, widened if 16-bit, quantized in place), or for f32 the model's own tensor, borrowed.
 * MPQ_ERR_NOMEM only: a quantizer that fails leaves NaN weights, as mpq_quantize_matrix. */
static mpq_status quantize_into(refine_ctx *c, mpq_weights *dst, int lin, int o, mpq_err *err) {
    const mpq_layer_info *li = mpq_model_linear(c->model, lin);
    if (c->cands[o].type == MPQ_QTYPE_F32) {
        mpq_weights_drop_linear(dst, li, mpq_model_get_weights(c->model));
        return MPQ_OK;
    }
    float *Q = NULL;
    mpq_status st = mpq_weights_own_linear(dst, li, mpq_model_get_weights(c->model), &Q, err);
    if (st != MPQ_OK) return st;
    /* X^T X for the SAQ candidates; NaN weights on failure, as mpq_quantize_matrix */
    const double *xtx = c->cal ? mpq_calib_xtx_packed(c->cal, lin, NULL) : NULL;
    if (mpq_quantize_matrix_ctx(&c->cands[o], Q, li->rows, li->cols, xtx, NULL) != MPQ_OK)
        for (int64_t k = 0; k < li->n_params; k++) Q[k] = NAN;
    return MPQ_OK;
}

static int entry_rank(mpq_layer_kind k) {
    if (k == MPQ_LAYER_ATTN_O) return 1;
    if (k == MPQ_LAYER_FFN_GATE || k == MPQ_LAYER_FFN_UP || k == MPQ_LAYER_FFN_DOWN) return 2;
    return 0;
}

/* K(A with item g at option o) on the calibration windows; g < 0: K(A). wA holds A. */
static mpq_status measure(refine_ctx *c, const mpq_exec_ref *aref, int g, int o, mpq_eval_stats *s, mpq_err *err) {
    memset(s, 0, sizeof *s);
    if (g < 0) return mpq_exec_eval_ref(c->ex, c->wA, NULL, c->fp_ref, 0, s, err);
    int blk = -1, rank = 3;
    mpq_status st = MPQ_OK;
    for (int l = 0; l < c->L; l++) {
        if (c->p->group_of[l] != g) continue;
        const mpq_layer_info *li = mpq_model_linear(c->model, c->lin[l]);
        int r = entry_rank(li->kind);
        if (blk < 0 || li->block < blk || (li->block == blk && r < rank)) {
            blk = li->block;
            rank = r;
        }
        if (st == MPQ_OK) st = quantize_into(c, c->wS, c->lin[l], o, err);
    }
    mpq_exec_entry e = rank == 1 ? MPQ_EXEC_ENTRY_ATTN_O : rank == 2 ? MPQ_EXEC_ENTRY_FFN : MPQ_EXEC_ENTRY_BLOCK;
    if (st == MPQ_OK) st = mpq_exec_eval_ref_entry_from(c->ex, c->wS, NULL, c->fp_ref, aref, blk, e, s, err);
    for (int l = 0; l < c->L; l++) /* back to A's layers (the probe's copies freed) */
        if (c->p->group_of[l] == g) mpq_weights_drop_linear(c->wS, mpq_model_linear(c->model, c->lin[l]), c->wA);
    return st;
}

/* The options of item g measured around option a: the allowed options within `reach` steps
 * of a in exact bits (reach 0: all allowed options), a excluded; *n of them into out[]. */
static void measured_options(const refine_ctx *c, int g, int a, int *out, int *n) {
    const mpq_problem *pr = c->p->problem;
    double ba = mpq_problem_cost(pr, 0, g, a);
    int reach = c->o->reach;
    *n = 0;
    for (int o = 0; o < c->O; o++) {
        if (o == a || !mpq_problem_allowed(pr, g, o)) continue;
        double b = mpq_problem_cost(pr, 0, g, o);
        int steps = 1; /* allowed options strictly between a and o in bits, plus one */
        for (int q = 0; q < c->O; q++) {
            if (q == a || q == o || !mpq_problem_allowed(pr, g, q)) continue;
            double bq = mpq_problem_cost(pr, 0, g, q);
            if ((b < ba && bq > b && bq < ba) || (b > ba && bq < b && bq > ba)) steps++;
        }
        if (b != ba && (reach <= 0 || steps <= reach)) out[(*n)++] = o;
    }
}

typedef struct unit_def {
    int item, option; /* item -1: base (the context, or a trial configuration) */
    char cand[64];    /* candidate of a base row: "" (context), "trial.m<m>" or "x.<item>.<option>..." */
    char key[MPQ_DB_NAME_MAX];
    int64_t id, layer_id;
    double kl;
} unit_def;

static void metric_name(const refine_ctx *c, int k, char *out, size_t n) {
    snprintf(out, n, "refine_kl@%.56s#%d", c->res->tag, k);
}

static char *unit_provenance(const refine_ctx *c, int k, const unit_def *u, const int *choice) {
    const mpq_job_spec *spec = mpq_job_get_spec(c->job);
    cJSON *j = cJSON_CreateObject(), *ctx = NULL;
    bool ok = j && cJSON_AddStringToObject(j, "stage", STAGE) && cJSON_AddStringToObject(j, "refine", c->res->tag) &&
              cJSON_AddNumberToObject(j, "iteration", k) &&
              cJSON_AddStringToObject(j, "unit", u->key) &&
              cJSON_AddNumberToObject(j, "seed", (double)spec->calib.seed) &&
              cJSON_AddNumberToObject(j, "n_seqs", c->n_seqs) && cJSON_AddNumberToObject(j, "seq_len", c->T) &&
              cJSON_AddNumberToObject(j, "batch", spec->calib.batch) &&
              cJSON_AddStringToObject(j, "data_sha256", c->data_sha) &&
              cJSON_AddStringToObject(j, "model_sha256", mpq_job_get_model_row(c->job)->sha256) &&
              cJSON_AddStringToObject(j, "mpq_version", mpq_version()) &&
              (ctx = cJSON_AddObjectToObject(j, "context"));
    for (int l = 0; ok && l < c->L; l++)
        ok = cJSON_AddStringToObject(ctx, c->p->layers[l].name, c->p->options[choice[c->p->group_of[l]]]) != NULL;
    char *s = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

static bool stop_now(const refine_ctx *c) {
    return mpq_job_stop_requested() || (c->o->max_units > 0 && c->n_units_run >= c->o->max_units);
}

/* Ensures, computes (pending ones) and reads the units of iteration k around item choice A.
 * *units malloc'd, *n_units. */
static mpq_status run_units(refine_ctx *c, int k, const int *A, bool with_neighbours, const char *trial,
                            unit_def **units, int *n_units, mpq_err *err) {
    int cap = 1 + c->O * c->n_items, n = 0;
    unit_def *u = mpq_calloc((size_t)cap, sizeof *u);
    mpq_db_unit *pend = NULL;
    mpq_exec_ref *aref = NULL;
    char *prov = NULL;
    int n_pend = 0;
    bool prepared = false;
    mpq_status st = MPQ_OK;
    if (!u) return mpq_err_set(err, MPQ_ERR_NOMEM, "refine: out of memory");
    u[n++] = (unit_def){.item = -1, .option = -1};
    if (trial) snprintf(u[0].cand, sizeof u[0].cand, "%s", trial);
    snprintf(u[0].key, sizeof u[0].key, "%.56s/ctx%d/%.48s", c->res->tag, k, trial ? u[0].cand : "base");
    for (int g = 0; with_neighbours && g < c->n_items; g++) {
        int nb[256], n_nb = 0;
        measured_options(c, g, A[g], nb, &n_nb);
        for (int s = 0; s < n_nb; s++) {
            unit_def *d = &u[n++];
            d->item = g;
            d->option = nb[s];
            d->layer_id = c->p->layers[c->first[g]].id;
            snprintf(d->key, sizeof d->key, "%.56s/ctx%d/%.40s/%.15s", c->res->tag, k, c->p->layers[c->first[g]].name,
                     c->p->options[nb[s]]);
        }
    }
    char mname[MPQ_DB_NAME_MAX];
    metric_name(c, k, mname, sizeof mname);
    int64_t job_id = mpq_job_get_row(c->job)->id;
    for (int i = 0; i < n && st == MPQ_OK; i++) st = mpq_db_unit_ensure(c->db, job_id, STAGE, u[i].key, &u[i].id, err);
    if (st == MPQ_OK) st = mpq_db_units_retry_failed(c->db, job_id, STAGE, err);
    if (st == MPQ_OK) st = mpq_db_units_pending(c->db, job_id, STAGE, &pend, &n_pend, err);
    int64_t done = 0;
    for (int i = 0; i < n && st == MPQ_OK; i++) {
        bool pending = false;
        for (int j = 0; j < n_pend; j++) pending |= pend[j].id == u[i].id;
        if (!pending) {
            done++;
            continue;
        }
        if (stop_now(c)) {
            st = mpq_err_set(err, MPQ_ERR_INTERRUPTED, "refine '%s': stopped at iteration %d (%lld/%d units); "
                             "run the same command again to resume", c->res->tag, k, (long long)done, n);
            break;
        }
        if (!prepared) { /* the A-quantized model */
            if ((st = load_measure(c, err)) != MPQ_OK) break;
            for (int l = 0; l < c->L && st == MPQ_OK; l++)
                st = quantize_into(c, c->wA, c->lin[l], A[c->p->group_of[l]], err);
            /* the probe: a table of A's layers (wA may have freed or reallocated some) */
            mpq_weights_free(c->wS);
            c->wS = NULL;
            if (st != MPQ_OK || (st = mpq_weights_view_of(c->wA, &c->wS, err)) != MPQ_OK) break;
            prepared = true;
        }
        if (u[i].item >= 0 && !aref && /* its residuals, once per context */
            (st = mpq_exec_ref_build(c->ex, c->wA, NULL, c->tokens, c->n_seqs, c->T, true, &aref, err)) != MPQ_OK)
            break;
        mpq_eval_stats s;
        if ((st = mpq_db_unit_start(c->db, u[i].id, err)) != MPQ_OK) break;
        if ((st = measure(c, aref, u[i].item, u[i].option, &s, err)) != MPQ_OK) break;
        free(prov);
        if (!(prov = unit_provenance(c, k, &u[i], A))) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "refine: out of memory");
            break;
        }
        mpq_db_metric row = {.layer_id = u[i].item < 0 ? 0 : u[i].layer_id,
                             .candidate = u[i].item < 0 ? u[i].cand : c->p->options[u[i].option],
                             .metric = mname, .value = s.kl_mean, .se = s.kl_se, .n = s.n_ref_seqs,
                             .provenance_json = prov};
        if ((st = mpq_db_lease_heartbeat(c->db, &c->lease, err)) != MPQ_OK) {
            if (st == MPQ_ERR_BUSY) c->leased = false;
            break;
        }
        if ((st = mpq_db_unit_commit(c->db, u[i].id, &row, 1, err)) != MPQ_OK) break;
        c->n_units_run++;
        done++;
        if (c->o->progress) {
            mpq_refine_progress pg = {.iteration = k, .done = done, .total = n, .unit_key = u[i].key,
                                      .predicted = NAN, .measured_kl = NAN};
            c->o->progress(c->o->progress_user, &pg);
        }
    }
    for (int i = 0; i < n && st == MPQ_OK; i++)
        st = mpq_db_metric_get(c->db, job_id, u[i].item < 0 ? 0 : u[i].layer_id,
                               u[i].item < 0 ? u[i].cand : c->p->options[u[i].option], mname, &u[i].kl, NULL, NULL, err);
    free(prov);
    free(pend);
    mpq_exec_ref_free(aref);
    if (st != MPQ_OK) {
        free(u);
        return st;
    }
    *units = u;
    *n_units = n;
    return MPQ_OK;
}

mpq_status mpq_refine_table(int n_layers, int n_options, int n_items, const int *group_of, const int *choice,
                            const double *additive, double context_kl, const mpq_refine_move *moves, int n_moves,
                            double *table, mpq_err *err) {
    if (n_layers < 1 || n_options < 1 || n_items < 1 || n_moves < 0 || !group_of || !choice || !additive || !table ||
        (n_moves && !moves) || !isfinite(context_kl))
        return mpq_err_set(err, MPQ_ERR_INVALID, "refine table: bad arguments");
    int *size = mpq_calloc((size_t)n_items, sizeof *size);
    if (!size) return mpq_err_set(err, MPQ_ERR_NOMEM, "refine table: out of memory");
    mpq_status st = MPQ_OK;
    double S = 0;
    for (int l = 0; l < n_layers && st == MPQ_OK; l++) {
        int g = group_of[l];
        if (g < 0 || g >= n_items || choice[g] < 0 || choice[g] >= n_options)
            st = mpq_err_set(err, MPQ_ERR_INVALID, "refine table: layer %d: item or choice out of range", l);
        else if (!isfinite(additive[(size_t)l * (size_t)n_options + (size_t)choice[g]]))
            st = mpq_err_set(err, MPQ_ERR_INVALID, "refine table: layer %d: no additive loss at its choice", l);
        else {
            size[g]++;
            S += additive[(size_t)l * (size_t)n_options + (size_t)choice[g]];
        }
    }
    for (int i = 0; i < n_moves && st == MPQ_OK; i++)
        if (moves[i].item < 0 || moves[i].item >= n_items || moves[i].option < 0 || moves[i].option >= n_options ||
            !isfinite(moves[i].kl) || !size[moves[i].item])
            st = mpq_err_set(err, MPQ_ERR_INVALID, "refine table: move %d out of range", i);
    for (int l = 0; l < n_layers && st == MPQ_OK; l++) {
        int g = group_of[l], a = choice[g];
        const double *ad = additive + (size_t)l * (size_t)n_options;
        double *t = table + (size_t)l * (size_t)n_options;
        double share = S > 0 ? context_kl * ad[a] / S : context_kl / n_layers;
        for (int o = 0; o < n_options; o++) t[o] = ad[o] + (share - ad[a]);
        t[a] = share;
        for (int i = 0; i < n_moves; i++)
            if (moves[i].item == g && moves[i].option != a) t[moves[i].option] = share + (moves[i].kl - context_kl) / size[g];
    }
    free(size);
    return st;
}

static int exchange_cmp(const mpq_refine_exchange *a, const mpq_refine_exchange *b) {
    if (a->predicted != b->predicted) return a->predicted < b->predicted ? -1 : 1;
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    for (int i = 0; i < a->n; i++) {
        if (a->item[i] != b->item[i]) return a->item[i] < b->item[i] ? -1 : 1;
        if (a->option[i] != b->option[i]) return a->option[i] < b->option[i] ? -1 : 1;
    }
    return 0;
}

typedef struct xenum {
    const mpq_refine_move *mv; /* usable moves, sorted by (item, option) */
    int n_mv, R, max_size, max_out, n_out;
    const double *dc;  /* [n_mv * R] cost change of each move */
    const double *slack; /* [R] budget - context total (INFINITY: no budget) */
    double *used;      /* [R] */
    double context_kl;
    mpq_refine_exchange cur, *out;
} xenum;

/* Keeps out[] the max_out smallest exchanges (exchange_cmp), sorted. */
static void xkeep(xenum *e) {
    if (e->n_out == e->max_out && exchange_cmp(&e->cur, &e->out[e->n_out - 1]) >= 0) return;
    int i = e->n_out < e->max_out ? e->n_out++ : e->n_out - 1;
    while (i > 0 && exchange_cmp(&e->cur, &e->out[i - 1]) < 0) {
        e->out[i] = e->out[i - 1];
        i--;
    }
    e->out[i] = e->cur;
}

static void xwalk(xenum *e, int from) {
    for (int i = from; i < e->n_mv; i++) {
        const mpq_refine_move *m = &e->mv[i];
        if (e->cur.n && m->item <= e->cur.item[e->cur.n - 1]) continue;
        int k = e->cur.n;
        e->cur.item[k] = m->item;
        e->cur.option[k] = m->option;
        e->cur.n = k + 1;
        double pred = e->cur.predicted;
        e->cur.predicted += m->kl - e->context_kl;
        for (int r = 0; r < e->R; r++) e->used[r] += e->dc[(size_t)i * (size_t)e->R + (size_t)r];
        if (e->cur.n >= 2) {
            bool fits = true;
            for (int r = 0; r < e->R && fits; r++) fits = e->used[r] <= e->slack[r];
            if (fits && e->max_out > 0) xkeep(e);
        }
        if (e->cur.n < e->max_size) xwalk(e, i + 1);
        for (int r = 0; r < e->R; r++) e->used[r] -= e->dc[(size_t)i * (size_t)e->R + (size_t)r];
        e->cur.predicted = pred;
        e->cur.n = k;
    }
}

static int move_cmp(const void *pa, const void *pb) {
    const mpq_refine_move *a = pa, *b = pb;
    if (a->item != b->item) return a->item < b->item ? -1 : 1;
    return (a->option > b->option) - (a->option < b->option);
}

mpq_status mpq_refine_exchanges(const mpq_problem *p, const int *choice, double context_kl,
                                const mpq_refine_move *moves, int n_moves, int max_size, int max_out,
                                mpq_refine_exchange *out, int *n_out, mpq_err *err) {
    if (!p || !choice || n_moves < 0 || (n_moves && !moves) || max_out < 0 || (max_out && !out) || !n_out ||
        !isfinite(context_kl) || max_size < 2 || max_size > MPQ_REFINE_MAX_EXCHANGE_SIZE)
        return mpq_err_set(err, MPQ_ERR_INVALID, "refine exchanges: bad arguments");
    *n_out = 0;
    const int n_items = mpq_problem_n_items(p), R = mpq_problem_n_resources(p);
    for (int g = 0; g < n_items; g++)
        if (choice[g] < 0 || choice[g] >= mpq_problem_n_options(p, g) || !mpq_problem_allowed(p, g, choice[g]))
            return mpq_err_set(err, MPQ_ERR_INVALID, "refine exchanges: item %d: choice out of range", g);
    for (int i = 0; i < n_moves; i++)
        if (moves[i].item < 0 || moves[i].item >= n_items || moves[i].option < 0 ||
            moves[i].option >= mpq_problem_n_options(p, moves[i].item) ||
            !mpq_problem_allowed(p, moves[i].item, moves[i].option) || !isfinite(moves[i].kl))
            return mpq_err_set(err, MPQ_ERR_INVALID, "refine exchanges: move %d out of range", i);
    mpq_refine_move *mv = mpq_calloc((size_t)n_moves + 1, sizeof *mv);
    double *dc = mpq_calloc((size_t)(n_moves + 1) * (size_t)R, sizeof *dc);
    double *slack = mpq_calloc((size_t)R, sizeof *slack), *used = mpq_calloc((size_t)R, sizeof *used);
    if (!mv || !dc || !slack || !used) {
        free(mv);
        free(dc);
        free(slack);
        free(used);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "refine exchanges: out of memory");
    }
    int n = 0;
    for (int i = 0; i < n_moves; i++)
        if (moves[i].option != choice[moves[i].item]) mv[n++] = moves[i];
    qsort(mv, (size_t)n, sizeof *mv, move_cmp);
    int w = 0; /* the same move listed twice counts once (the first) */
    for (int i = 0; i < n; i++)
        if (!w || move_cmp(&mv[w - 1], &mv[i]) != 0) mv[w++] = mv[i];
    n = w;
    for (int r = 0; r < R; r++) {
        double B = mpq_problem_budget(p, r), tot = 0;
        for (int g = 0; g < n_items; g++) tot += mpq_problem_cost(p, r, g, choice[g]);
        slack[r] = isfinite(B) ? B - tot : INFINITY;
        for (int i = 0; i < n; i++)
            dc[(size_t)i * (size_t)R + (size_t)r] = mpq_problem_cost(p, r, mv[i].item, mv[i].option) -
                                                    mpq_problem_cost(p, r, mv[i].item, choice[mv[i].item]);
    }
    xenum e = {.mv = mv, .n_mv = n, .R = R, .max_size = max_size, .max_out = max_out, .dc = dc, .slack = slack,
               .used = used, .context_kl = context_kl, .out = out};
    xwalk(&e, 0);
    *n_out = e.n_out;
    free(mv);
    free(dc);
    free(slack);
    free(used);
    return MPQ_OK;
}

/* The in-context table around A from its units (u[0] the base). */
static mpq_status build_table(refine_ctx *c, const int *A, const unit_def *u, int n, mpq_err *err) {
    mpq_refine_move *mv = mpq_calloc((size_t)n, sizeof *mv);
    if (!mv) return mpq_err_set(err, MPQ_ERR_NOMEM, "refine: out of memory");
    for (int i = 1; i < n; i++) mv[i - 1] = (mpq_refine_move){.item = u[i].item, .option = u[i].option, .kl = u[i].kl};
    mpq_status st = mpq_refine_table(c->L, c->O, c->n_items, c->p->group_of, A, c->add, u[0].kl, mv, n - 1, c->table, err);
    free(mv);
    return st;
}

/* ---- solve, store, evaluate ------------------------------------------------------------- */

/* A copy of p's problem with one more resource: the number of items whose option differs
 * from A, at most m (the trust region). */
static mpq_status limited_problem(const refine_ctx *c, const int *A, int m, mpq_problem **out, mpq_err *err) {
    const mpq_problem *p = c->p->problem;
    int R = mpq_problem_n_resources(p);
    mpq_problem *q = NULL;
    mpq_status st = mpq_problem_create(c->n_items, c->O, R + 1, &q, err);
    for (int o = 0; o < c->O && st == MPQ_OK; o++) st = mpq_problem_set_option_name(q, o, mpq_problem_option_name(p, o), err);
    for (int g = 0; g < c->n_items && st == MPQ_OK; g++) {
        st = mpq_problem_set_item_name(q, g, mpq_problem_item_name(p, g), err);
        for (int o = 0; o < c->O && st == MPQ_OK; o++) {
            int nb[256], n_nb = 0;
            measured_options(c, g, A[g], nb, &n_nb);
            bool ok = mpq_problem_allowed(p, g, o) && o == A[g];
            for (int t = 0; t < n_nb; t++) ok |= nb[t] == o && mpq_problem_allowed(p, g, o);
            st = mpq_problem_set_allowed(q, g, o, ok, err);
            if (!ok || st != MPQ_OK) continue;
            st = mpq_problem_set_loss(q, g, o, mpq_problem_loss(p, g, o), err);
            for (int r = 0; r < R && st == MPQ_OK; r++) st = mpq_problem_set_cost(q, r, g, o, mpq_problem_cost(p, r, g, o), err);
            if (st == MPQ_OK) st = mpq_problem_set_cost(q, R, g, o, o == A[g] ? 0.0 : 1.0, err);
        }
    }
    for (int r = 0; r < R && st == MPQ_OK; r++)
        if (isfinite(mpq_problem_budget(p, r))) st = mpq_problem_set_budget(q, r, mpq_problem_budget(p, r), err);
    if (st == MPQ_OK) st = mpq_problem_set_budget(q, R, (double)m, err);
    if (st == MPQ_OK) st = mpq_problem_set_resource_name(q, R, "changed groups (trust region)", err);
    if (st == MPQ_OK) st = mpq_problem_validate(q, err);
    if (st != MPQ_OK) mpq_problem_free(q);
    else *out = q;
    return st;
}

/* Solves with the current table; A != NULL and m < n_items: at most m items change from A. */
static mpq_status solve_table(refine_ctx *c, const int *A, int m, mpq_solution **s, double *lb, mpq_err *err) {
    mpq_jobsolve_problem *p = c->p;
    mpq_status st = MPQ_OK;
    memcpy(p->layer_loss, c->table, (size_t)c->L * (size_t)c->O * sizeof *c->table);
    for (int g = 0; g < c->n_items && st == MPQ_OK; g++)
        for (int o = 0; o < c->O && st == MPQ_OK; o++) {
            if (!mpq_problem_allowed(p->problem, g, o)) continue;
            double v = 0;
            for (int l = 0; l < c->L; l++)
                if (p->group_of[l] == g) v += c->table[at(c, l, o)];
            st = mpq_problem_set_loss(p->problem, g, o, v, err);
        }
    if (st != MPQ_OK) return st;
    int dp_res = -1;
    for (int r = 0; r < p->n_resources; r++)
        if (isfinite(mpq_problem_budget(p->problem, r))) dp_res = r;
    bool dp_ok = p->n_finite_budgets == 1 && dp_res >= 0 && mpq_problem_resource_integral(p->problem, dp_res);
    const char *asked = c->o->solver ? c->o->solver : "auto";
    bool dp;
    if (!strcmp(asked, "auto")) dp = dp_ok;
    else if (!strcmp(asked, "dp")) {
        if (!dp_ok) return mpq_err_set(err, MPQ_ERR_INVALID, "refine: dp needs exactly one budget on an integral "
                                                              "resource (bits, bytes, bops); use --solver ilp");
        dp = true;
    } else if (!strcmp(asked, "ilp")) dp = false;
    else return mpq_err_set(err, MPQ_ERR_INVALID, "refine: unknown solver '%s' (auto, ilp, dp)", asked);
    mpq_solve_opts so = mpq_solve_opts_default();
    so.smooth = c->o->smooth;
    so.time_limit_s = c->o->time_limit_s;
    so.dp_resource = dp_res >= 0 ? dp_res : 0;
    if (A) {
        mpq_problem *q = NULL;
        if ((st = limited_problem(c, A, m, &q, err)) != MPQ_OK) return st;
        st = mpq_solve_ilp(q, &so, s, err);
        mpq_problem_free(q);
    } else {
        st = dp ? mpq_solve_dp(p->problem, &so, s, err) : mpq_solve_ilp(p->problem, &so, s, err);
    }
    if (st == MPQ_ERR_INFEASIBLE) mpq_err_prefix(err, "job '%s'", mpq_job_get_row(c->job)->name);
    if (st != MPQ_OK) return st;
    if (mpq_bound_lp(p->problem, &so, lb, NULL) != MPQ_OK) *lb = NAN;
    return MPQ_OK;
}

/* The stored solution `name` if it is a complete refine iteration with this choice. */
static mpq_status find_stored(refine_ctx *c, const char *name, const int *choice, int64_t *id, mpq_err *err) {
    *id = 0;
    int64_t sid;
    mpq_status st = mpq_db_solution_find(c->db, mpq_job_get_row(c->job)->id, name, &sid, err);
    if (st == MPQ_ERR_NOTFOUND) return MPQ_OK;
    if (st != MPQ_OK) return st;
    mpq_db_solution s;
    mpq_db_assignment *a = NULL;
    int n_a = 0;
    memset(&s, 0, sizeof s);
    if ((st = mpq_db_solution_get(c->db, sid, &s, &a, &n_a, err)) != MPQ_OK) return st;
    bool same = s.config_json && strstr(s.config_json, "\"mpq_refine\"") && n_a == c->L && !strcmp(s.solver, STAGE);
    for (int l = 0; same && l < c->L; l++) {
        int j = 0;
        while (j < n_a && a[j].layer_id != c->p->layers[l].id) j++;
        same = j < n_a && !strcmp(a[j].candidate, c->p->options[choice[l]]);
    }
    if (same) *id = sid;
    free(a);
    mpq_db_solution_release(&s);
    return MPQ_OK;
}

/* Adds the "mpq_refine" provenance to the stored solution r and stores it again (same name). */
static mpq_status add_provenance(refine_ctx *c, mpq_jobsolve_result *r, int k, int ctx, int m, int n_measured,
                                 double ctx_kl, const char *step, mpq_err *err) {
    mpq_db_solution s;
    mpq_db_assignment *a = NULL;
    int n_a = 0;
    char *text = NULL;
    memset(&s, 0, sizeof s);
    mpq_status st = mpq_db_solution_get(c->db, r->solution_id, &s, &a, &n_a, err);
    if (st != MPQ_OK) return st;
    cJSON *root = cJSON_Parse(s.config_json ? s.config_json : ""), *pr = NULL;
    bool ok = root && (pr = cJSON_AddObjectToObject(root, "mpq_refine")) &&
              cJSON_AddNumberToObject(pr, "iteration", k) && cJSON_AddStringToObject(pr, "refine", c->res->tag) &&
              cJSON_AddNumberToObject(pr, "max_iterations", c->o->max_iterations) &&
              cJSON_AddStringToObject(pr, "table", k == 0 ? "additive" : "in-context") &&
              cJSON_AddNumberToObject(pr, "n_measured", n_measured) &&
              (k ? cJSON_AddNumberToObject(pr, "context_iteration", ctx) : cJSON_AddNullToObject(pr, "context_iteration")) &&
              cJSON_AddNumberToObject(pr, "max_changed_groups", k ? m : c->n_items) &&
              (isfinite(ctx_kl) ? cJSON_AddNumberToObject(pr, "context_kl", ctx_kl)
                                : cJSON_AddNullToObject(pr, "context_kl")) &&
              cJSON_AddStringToObject(pr, "unit_stage", STAGE) && cJSON_AddStringToObject(pr, "step", step) &&
              cJSON_AddNumberToObject(pr, "exchanges", c->o->exchanges) &&
              cJSON_AddNumberToObject(pr, "exchange_size", c->o->exchange_size) &&
              cJSON_AddStringToObject(pr, "rule", "L(l,A(l)) = K(A)*a(l,A(l))/sum a; measured neighbours "
                                                  "L(l,c) = L(l,A(l)) + (K(A;g->c)-K(A))/|g|; others a(l,c) "
                                                  "shifted by L(l,A(l))-a(l,A(l))");
    if (!ok || !(text = cJSON_Print(root))) st = mpq_err_set(err, MPQ_ERR_NOMEM, "refine: out of memory");
    cJSON_Delete(root);
    if (st == MPQ_OK) {
        free(s.config_json);
        s.config_json = text;
        text = NULL;
        for (int i = 0; i < n_a; i++) a[i].layer_name[0] = '\0';
        st = mpq_db_solution_insert(c->db, &s, a, n_a, &r->solution_id, err);
        if (st == MPQ_OK) {
            free(r->config_json);
            r->config_json = s.config_json;
            s.config_json = NULL;
        }
    }
    free(text);
    free(a);
    mpq_db_solution_release(&s);
    return st;
}

/* Solves with the current table, stores (unless already stored) and evaluates iteration k.
 * choice_out[L] gets the per-layer option, item_out[n_items] the per-item one. */
static mpq_status do_iteration(refine_ctx *c, int k, int ctx, const int *B, int m, int n_measured, double ctx_kl,
                               const char *step, int *choice_out, int *item_out, mpq_err *err) {
    mpq_solution *s = NULL;
    mpq_jobsolve_result *r = NULL;
    mpq_db_evaluation *evs = NULL;
    int n_evs = 0;
    double lb = NAN;
    /* k >= 1: the chosen configuration B (trust region 0 around B), under the current table */
    mpq_status st = solve_table(c, B, B ? 0 : c->n_items, &s, &lb, err);
    if (st != MPQ_OK) return st;
    for (int g = 0; g < c->n_items; g++) item_out[g] = s->choice[g];
    for (int l = 0; l < c->L; l++) choice_out[l] = s->choice[c->p->group_of[l]];
    char name[MPQ_DB_NAME_MAX];
    snprintf(name, sizeof name, "refine@%.56s/it%d", c->res->tag, k);
    mpq_refine_iter *it = &c->res->iters[k];
    memset(it, 0, sizeof *it);
    it->iteration = k;
    it->n_measured = n_measured;
    it->context_kl = NAN;
    it->predicted = s->total_loss_raw;
    for (int l = 0; l < c->L; l++) it->total_bits += c->p->layer_bits[at(c, l, choice_out[l])];
    it->avg_bits = (double)it->total_bits / (double)c->p->total_params;
    if ((st = find_stored(c, name, choice_out, &it->solution_id, err)) != MPQ_OK) goto done;
    if (!it->solution_id) {
        if ((st = jobsolve_store_choice(c->job, c->p, &c->jo, s, STAGE, name, lb, &r, err)) != MPQ_OK) goto done;
        if ((st = add_provenance(c, r, k, ctx, m, n_measured, ctx_kl, step, err)) != MPQ_OK) goto done;
        it->solution_id = r->solution_id;
    }
    if ((st = mpq_db_evaluations_fetch(c->db, mpq_job_get_row(c->job)->id, &evs, &n_evs, err)) != MPQ_OK) goto done;
    for (int i = n_evs - 1; i >= 0 && !it->evaluation_id; i--)
        if (evs[i].solution_id == it->solution_id) {
            it->evaluation_id = evs[i].id;
            it->measured_kl = evs[i].kl;
            it->measured_kl_se = evs[i].kl_stderr;
        }
    if (!it->evaluation_id) {
        mpq_jobsolve_eval ev;
        if ((st = mpq_jobsolve_evaluate_solution(c->job, it->solution_id, &ev, err)) != MPQ_OK) goto done;
        it->evaluation_id = ev.evaluation_id;
        it->measured_kl = ev.kl;
        it->measured_kl_se = ev.kl_stderr;
    }
    if (c->o->progress) {
        mpq_refine_progress pg = {.iteration = k, .unit_key = NULL, .predicted = it->predicted,
                                  .measured_kl = it->measured_kl};
        c->o->progress(c->o->progress_user, &pg);
    }
done:
    for (int i = 0; i < n_evs; i++) free(evs[i].config_json);
    free(evs);
    mpq_jobsolve_result_free(r);
    mpq_solution_free(s);
    return st;
}

static mpq_status setup(refine_ctx *c, mpq_err *err) {
    const mpq_refine_opts *o = c->o;
    if (o->n_budgets <= 0 || !o->budgets)
        return mpq_err_set(err, MPQ_ERR_INVALID, "refine: no budget given (e.g. avg-bits=3.5)");
    if (o->exchange_size < 2 || o->exchange_size > MPQ_REFINE_MAX_EXCHANGE_SIZE)
        return mpq_err_set(err, MPQ_ERR_INVALID, "refine: exchange size %d: expected 2..%d", o->exchange_size,
                           MPQ_REFINE_MAX_EXCHANGE_SIZE);
    if (o->exchanges < 0 || o->exchanges > MPQ_REFINE_MAX_EXCHANGES)
        return mpq_err_set(err, MPQ_ERR_INVALID, "refine: exchanges %d: expected 0..%d", o->exchanges,
                           MPQ_REFINE_MAX_EXCHANGES);
    if (o->max_iterations < 1 || o->max_iterations > MPQ_REFINE_MAX_ITERATIONS)
        return mpq_err_set(err, MPQ_ERR_INVALID, "refine: iterations %d: expected 1..%d", o->max_iterations,
                           MPQ_REFINE_MAX_ITERATIONS);
    mpq_refine_result *res = c->res;
    int k = 0;
    for (int b = 0; b < o->n_budgets; b++)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, "%s%s", b ? "," : "", o->budgets[b].text);
    /* everything that can change a choice is in the tag, so resumed units always belong to it */
    if (o->ties && k < (int)sizeof res->tag)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, ";ties=%s",
                      (o->ties & MPQ_TIES_QKV) ? ((o->ties & MPQ_TIES_GATE_UP) ? "qkv,gate_up" : "qkv") : "gate_up");
    if (!o->smooth && k < (int)sizeof res->tag) k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, ";nosmooth");
    if (o->solver && strcmp(o->solver, "auto") && k < (int)sizeof res->tag)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, ";solver=%.8s", o->solver);
    if (o->reach != 1 && k < (int)sizeof res->tag)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, ";reach=%d", o->reach < 0 ? 0 : o->reach);
    if (o->exchanges && k < (int)sizeof res->tag)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, ";x=%d", o->exchanges);
    if (o->exchanges && o->exchange_size != 2 && k < (int)sizeof res->tag)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, "x%d", o->exchange_size);
    if (o->time_limit_s > 0 && k < (int)sizeof res->tag)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, ";tl=%g", o->time_limit_s);
    if (o->metric && strcmp(o->metric, "kl") != 0 && k < (int)sizeof res->tag)
        k += snprintf(res->tag + k, sizeof res->tag - (size_t)k, ";metric=%.40s", o->metric);
    if (strlen(res->tag) > 56) return mpq_err_set(err, MPQ_ERR_INVALID, "refine: budgets '%s': too long", res->tag);
    c->jo = mpq_jobsolve_opts_default();
    c->jo.metric = o->metric ? o->metric : "kl";
    c->jo.ties = o->ties;
    c->jo.budgets = o->budgets;
    c->jo.n_budgets = o->n_budgets;
    c->jo.smooth = o->smooth;
    c->jo.solver = o->solver;
    c->jo.time_limit_s = o->time_limit_s;
    mpq_status st = mpq_jobsolve_problem_build(c->job, &c->jo, &c->p, err);
    if (st != MPQ_OK) return st;
    c->L = c->p->n_layers;
    c->O = c->p->n_options;
    c->n_items = mpq_problem_n_items(c->p->problem);
    size_t LO = (size_t)c->L * (size_t)c->O;
    c->add = mpq_calloc(LO, sizeof *c->add);
    c->table = mpq_calloc(LO, sizeof *c->table);
    c->first = mpq_calloc((size_t)c->n_items, sizeof *c->first);
    c->size = mpq_calloc((size_t)c->n_items, sizeof *c->size);
    c->lin = mpq_calloc((size_t)c->L, sizeof *c->lin);
    c->cands = mpq_calloc((size_t)c->O, sizeof *c->cands);
    res->iters = mpq_calloc((size_t)o->max_iterations + 1, sizeof *res->iters);
    if (!c->add || !c->table || !c->first || !c->size || !c->lin || !c->cands || !res->iters)
        return mpq_err_set(err, MPQ_ERR_NOMEM, "refine: out of memory");
    memcpy(c->add, c->p->layer_loss, LO * sizeof *c->add);
    memcpy(c->table, c->add, LO * sizeof *c->add);
    for (int g = 0; g < c->n_items; g++) c->first[g] = -1;
    for (int l = 0; l < c->L; l++) {
        int g = c->p->group_of[l];
        if (c->first[g] < 0) c->first[g] = l;
        c->size[g]++;
        c->lin[l] = mpq_model_find_linear(mpq_job_get_shape(c->job), c->p->layers[l].name);
        if (strlen(c->p->layers[l].name) > 40)
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "refine: layer name %s longer than 40 characters (unit keys)",
                               c->p->layers[l].name);
        if (c->lin[l] < 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "refine: layer %s not in the model", c->p->layers[l].name);
    }
    for (int op = 0; op < c->O; op++)
        if ((st = mpq_candidate_parse(c->p->options[op], &c->cands[op], err)) != MPQ_OK) return st;
    st = mpq_db_lease_acquire(c->db, mpq_job_get_row(c->job)->id, &c->lease, NULL, err);
    if (st == MPQ_OK) c->leased = true;
    return st;
}

mpq_status mpq_refine_run(mpq_job *job, const mpq_refine_opts *opts, mpq_refine_result **out, mpq_err *err) {
    if (!job || !opts || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_refine_run: NULL argument");
    *out = NULL;
    refine_ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    c.db = mpq_job_db(job);
    c.o = opts;
    int *choice = NULL, *items = NULL, *hist = NULL, *tried = NULL;
    mpq_refine_move *mv = NULL;
    mpq_refine_exchange *xs = NULL;
    unit_def *u = NULL;
    int n_u = 0;
    if (!(c.res = mpq_calloc(1, sizeof *c.res))) return mpq_err_set(err, MPQ_ERR_NOMEM, "refine: out of memory");
    mpq_status st = setup(&c, err);
    if (st != MPQ_OK) goto done;
    const int N = opts->max_iterations;
    choice = mpq_calloc((size_t)c.L, sizeof *choice);
    items = mpq_calloc((size_t)c.n_items, sizeof *items);
    hist = mpq_calloc((size_t)(N + 1) * (size_t)c.n_items, sizeof *hist);
    /* trust-region trials per iteration: m = all, then at least halving down to 2 */
    tried = mpq_calloc((size_t)(c.n_items + 2) * (size_t)c.n_items, sizeof *tried);
    mv = mpq_calloc((size_t)c.n_items * (size_t)c.O + 1, sizeof *mv);
    xs = mpq_calloc((size_t)opts->exchanges + (size_t)c.n_items + 2, sizeof *xs);
    if (!choice || !items || !hist || !tried || !mv || !xs) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "refine: out of memory");
        goto done;
    }
    snprintf(c.res->stop, sizeof c.res->stop, "iterations");
    /* iteration 0: the additive solution; it is the first context */
    if ((st = do_iteration(&c, 0, 0, NULL, c.n_items, 0, NAN, "additive", choice, items, err)) != MPQ_OK) goto done;
    c.res->n_iters = 1;
    memcpy(hist, items, (size_t)c.n_items * sizeof *items);
    int ctx = 0;
    double K_ctx = NAN;
    if ((st = run_units(&c, 0, hist, false, NULL, &u, &n_u, err)) != MPQ_OK) goto done;
    K_ctx = c.res->iters[0].context_kl = u[0].kl;
    for (int k = 1; k <= N; k++) {
        const int *A = hist + (size_t)ctx * (size_t)c.n_items;
        int *B = hist + (size_t)k * (size_t)c.n_items;
        free(u);
        u = NULL;
        if ((st = run_units(&c, ctx, A, true, NULL, &u, &n_u, err)) != MPQ_OK) goto done;
        if ((st = build_table(&c, A, u, n_u, err)) != MPQ_OK) goto done;
        int n_meas = n_u;
        /* trust-region line search: solve with at most m changed groups, m = all, then half of
         * the previous trial's changes (>= 2, one swap); measure each distinct trial on the
         * calibration windows; the best one becomes iteration k if it beats the context */
        int best_m = -1, m = c.n_items, n_trials = 0, n_x = 0;
        bool best_x = false;
        double best_K = INFINITY;
        while (m >= 2 || (m == c.n_items && m >= 1)) {
            mpq_solution *s = NULL;
            double lb;
            if ((st = solve_table(&c, A, m, &s, &lb, err)) != MPQ_OK) goto done;
            int changed = 0;
            for (int g = 0; g < c.n_items; g++) {
                items[g] = s->choice[g];
                changed += items[g] != A[g];
            }
            mpq_solution_free(s);
            if (changed == 0) break; /* the table predicts no better assignment */
            unit_def *tu = NULL;
            int n_tu = 0;
            char tname[32];
            snprintf(tname, sizeof tname, "trial.m%d", changed);
            if ((st = run_units(&c, ctx, items, false, tname, &tu, &n_tu, err)) != MPQ_OK) goto done;
            memcpy(tried + (size_t)n_trials * (size_t)c.n_items, items, (size_t)c.n_items * sizeof *items);
            n_trials++;
            if (tu[0].kl < best_K) {
                best_K = tu[0].kl;
                best_m = changed;
                memcpy(B, items, (size_t)c.n_items * sizeof *items);
            }
            free(tu);
            if (changed < 2) break;
            m = changed / 2 >= 2 ? changed / 2 : (changed > 2 ? 2 : 1);
            if (m >= changed) break;
        }
        /* measured exchanges: sets of 2..exchange_size measured one-group moves that fit the
         * budgets, best predicted first, each configuration not already tried measured whole */
        if (opts->exchanges > 0 && n_u > 1) {
            for (int i = 1; i < n_u; i++)
                mv[i - 1] = (mpq_refine_move){.item = u[i].item, .option = u[i].option, .kl = u[i].kl};
            int n_xs = 0;
            if ((st = mpq_refine_exchanges(c.p->problem, A, u[0].kl, mv, n_u - 1, opts->exchange_size,
                                           opts->exchanges + n_trials, xs, &n_xs, err)) != MPQ_OK)
                goto done;
            for (int i = 0; i < n_xs && n_x < opts->exchanges; i++) {
                memcpy(items, A, (size_t)c.n_items * sizeof *items);
                for (int t = 0; t < xs[i].n; t++) items[xs[i].item[t]] = xs[i].option[t];
                bool seen = false;
                for (int t = 0; t < n_trials && !seen; t++)
                    seen = !memcmp(tried + (size_t)t * (size_t)c.n_items, items, (size_t)c.n_items * sizeof *items);
                if (seen) continue;
                unit_def *tu = NULL;
                int n_tu = 0;
                char tname[64];
                int tl = snprintf(tname, sizeof tname, "x");
                for (int t = 0; t < xs[i].n && tl < (int)sizeof tname; t++)
                    tl += snprintf(tname + tl, sizeof tname - (size_t)tl, ".%d.%d", xs[i].item[t], xs[i].option[t]);
                if (tl >= 48) { /* the unit key keeps 48 characters of it */
                    st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "refine: exchange unit name too long (%d groups)",
                                     c.n_items);
                    goto done;
                }
                if ((st = run_units(&c, ctx, items, false, tname, &tu, &n_tu, err)) != MPQ_OK) goto done;
                n_x++;
                if (tu[0].kl < best_K) {
                    best_K = tu[0].kl;
                    best_m = xs[i].n;
                    best_x = true;
                    memcpy(B, items, (size_t)c.n_items * sizeof *items);
                }
                free(tu);
            }
        }
        if (n_trials == 0 && n_x == 0) {
            snprintf(c.res->stop, sizeof c.res->stop, "converged");
            break;
        }
        if (!(best_K < K_ctx)) {
            snprintf(c.res->stop, sizeof c.res->stop, "no-better-step");
            break;
        }
        if ((st = do_iteration(&c, k, ctx, B, best_m, n_meas + n_trials + n_x, K_ctx,
                               best_x ? "measured exchange" : "trust-region re-solve", choice, items, err)) != MPQ_OK)
            goto done;
        if (memcmp(items, B, (size_t)c.n_items * sizeof *items) != 0) {
            st = mpq_err_set(err, MPQ_ERR_SOLVER, "refine: iteration %d: the chosen configuration is not reproducible", k);
            goto done;
        }
        c.res->n_iters = k + 1;
        c.res->iters[k].context = ctx;
        c.res->iters[k].max_changed = best_m;
        c.res->iters[k].accepted = true;
        c.res->iters[k].exchange = best_x;
        c.res->iters[k].context_kl = best_K;
        for (int l = 0; l < c.L; l++) c.res->iters[k].n_changed += A[c.p->group_of[l]] != B[c.p->group_of[l]];
        ctx = k;
        K_ctx = best_K;
    }
    c.res->selected = ctx;
    c.res->n_units_run = c.n_units_run;
done:
    free(u);
    free(xs);
    free(mv);
    free(tried);
    free(hist);
    free(items);
    free(choice);
    ctx_free(&c);
    if (st == MPQ_OK) *out = c.res;
    else mpq_refine_result_free(c.res);
    return st;
}
