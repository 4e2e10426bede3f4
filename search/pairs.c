/*
 * pairs.c - pairwise interaction terms of layer damage (mpq_pairs.h): the joint KL of two
 * layers quantized together, everything else full precision, minus their stored single-layer
 * KL, for layer pairs and candidates around a stored solution; resumable units of stage
 * "pairs"; and the stored terms as pair terms of the allocation ILP (mpq_solve_ilp_pairs).
 */
#include "mpq/mpq_pairs.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_exec.h"
#include "mpq/mpq_quant.h"

#include "job_calib.h"

#define STAGE "pairs"
#define PAIR_KL "pair_kl"
#define PAIR_INT "pair_interaction"

mpq_pairs_opts mpq_pairs_opts_default(void) {
    mpq_pairs_opts o;
    memset(&o, 0, sizeof o);
    o.scope = MPQ_PAIRS_SCOPE_BLOCK;
    o.reach = 1;
    return o;
}

void mpq_pairs_result_free(mpq_pairs_result *r) { free(r); }

mpq_status mpq_pairs_scope_parse(const char *s, mpq_pairs_scope *out, mpq_err *err) {
    if (s && !strcmp(s, "block")) *out = MPQ_PAIRS_SCOPE_BLOCK;
    else if (s && !strcmp(s, "all")) *out = MPQ_PAIRS_SCOPE_ALL;
    else return mpq_err_set(err, MPQ_ERR_INVALID, "pairs: scope '%s': expected block or all", s ? s : "(null)");
    return MPQ_OK;
}

typedef struct pairs_ctx {
    mpq_job *job;
    mpq_db *db;
    const mpq_pairs_opts *o;
    mpq_jobsolve_problem *p; /* metric kl, no budgets, no ties: items = layers */
    int L, O;
    int *lin;                /* [L] model linear index */
    int *sel;                /* [L] the solution's option per layer */
    const mpq_model *model;
    mpq_exec *ex;
    mpq_exec_ref *fp_ref;    /* with residuals */
    int *tokens;
    int n_seqs, T;
    char data_sha[65];
    mpq_weights *wS;
    mpq_candidate *cands;    /* [O] */
    mpq_db_lease lease;
    bool leased;
    int n_units_run;
} pairs_ctx;

static void ctx_free(pairs_ctx *c) {
    mpq_weights_free(c->wS);
    mpq_exec_ref_free(c->fp_ref);
    mpq_exec_free(c->ex);
    free(c->tokens);
    free(c->cands);
    free(c->sel);
    free(c->lin);
    mpq_jobsolve_problem_free(c->p);
    if (c->leased) (void)mpq_db_lease_release(c->db, &c->lease, NULL);
}

/* Model, the job's calibration windows and the FP reference on them (with residuals). */
static mpq_status load_measure(pairs_ctx *c, mpq_err *err) {
    if (c->ex) return MPQ_OK;
    int B = 0; /* the batch of the layer_sensitivity stage: it fixes the rows of every matrix product */
    mpq_status st = job_calib_windows(c->job, "pairs", &c->model, &c->tokens, &c->n_seqs, &c->T, &B, c->data_sha, err);
    if (st != MPQ_OK) return st;
    if ((st = mpq_exec_create_forward(c->model, B, c->T, &c->ex, err)) != MPQ_OK) goto done;
    if ((st = mpq_exec_ref_build(c->ex, mpq_model_get_weights(c->model), NULL, c->tokens, c->n_seqs, c->T, true,
                                 &c->fp_ref, err)) != MPQ_OK)
        goto done;
    st = mpq_weights_view(c->model, &c->wS, err); /* the two probed layers are owned while measured */
done:
    if (st != MPQ_OK) mpq_err_prefix(err, "pairs: calibration windows");
    return st;
}

/* o >= 0: wS's layer `lin` = an owned copy of the FP layer (widened if 16-bit) quantized with
 * candidate o; o < 0: the model's own tensor again (the copy freed). */
static mpq_status set_layer(pairs_ctx *c, int lin, int o, mpq_err *err) {
    const mpq_layer_info *li = mpq_model_linear(c->model, lin);
    if (o < 0) {
        mpq_weights_drop_linear(c->wS, li, mpq_model_get_weights(c->model));
        return MPQ_OK;
    }
    float *Q = NULL;
    mpq_status st = mpq_weights_own_linear(c->wS, li, mpq_model_get_weights(c->model), &Q, err);
    if (st == MPQ_OK) mpq_quantize_matrix(&c->cands[o], Q, li->rows, li->cols);
    return st;
}

static int entry_rank(mpq_layer_kind k) {
    if (k == MPQ_LAYER_ATTN_O) return 1;
    if (k == MPQ_LAYER_FFN_GATE || k == MPQ_LAYER_FFN_UP || k == MPQ_LAYER_FFN_DOWN) return 2;
    return 0;
}

/* K_ij(a, b): problem layers i and j at options a and b, all else FP (wS is FP on entry and on
 * return). Enters at the earlier of the two layers. */
static mpq_status measure(pairs_ctx *c, int i, int a, int j, int b, mpq_eval_stats *s, mpq_err *err) {
    memset(s, 0, sizeof *s);
    const mpq_layer_info *li = mpq_model_linear(c->model, c->lin[i]), *lj = mpq_model_linear(c->model, c->lin[j]);
    int blk = li->block, rank = entry_rank(li->kind);
    if (lj->block < blk || (lj->block == blk && entry_rank(lj->kind) < rank)) {
        blk = lj->block;
        rank = entry_rank(lj->kind);
    }
    mpq_status st = set_layer(c, c->lin[i], a, err);
    if (st == MPQ_OK) st = set_layer(c, c->lin[j], b, err);
    mpq_exec_entry e = rank == 1 ? MPQ_EXEC_ENTRY_ATTN_O : rank == 2 ? MPQ_EXEC_ENTRY_FFN : MPQ_EXEC_ENTRY_BLOCK;
    if (st == MPQ_OK) st = mpq_exec_eval_ref_entry(c->ex, c->wS, NULL, c->fp_ref, blk, e, s, err);
    (void)set_layer(c, c->lin[i], -1, NULL);
    (void)set_layer(c, c->lin[j], -1, NULL);
    return st;
}

/* Options of layer l within reach steps of option a in exact bits (a included first). */
static void near_options(const pairs_ctx *c, int l, int a, int *out, int *n) {
    const int64_t *bits = c->p->layer_bits + (size_t)l * (size_t)c->O;
    *n = 0;
    out[(*n)++] = a;
    for (int o = 0; o < c->O && !c->o->solution_only; o++) {
        if (o == a) continue;
        /* steps: distinct bit values strictly between a and o, plus one */
        int steps = 1;
        for (int q = 0; q < c->O; q++) {
            bool between = (bits[o] < bits[a] && bits[q] > bits[o] && bits[q] < bits[a]) ||
                           (bits[o] > bits[a] && bits[q] < bits[o] && bits[q] > bits[a]);
            bool dup = false; /* count each distinct bit value once */
            for (int r = 0; r < q && between; r++) dup |= bits[r] == bits[q] && r != a && r != o;
            if (between && !dup) steps++;
        }
        if (c->o->reach <= 0 || steps <= c->o->reach) out[(*n)++] = o;
    }
}

typedef struct term_def {
    int i, a, j, b;
    char key[MPQ_DB_NAME_MAX];
    char cand[MPQ_DB_NAME_MAX];
    int64_t id;
} term_def;

static char *unit_provenance(const pairs_ctx *c, const term_def *t) {
    const mpq_job_spec *spec = mpq_job_get_spec(c->job);
    cJSON *j = cJSON_CreateObject();
    bool ok = j && cJSON_AddStringToObject(j, "stage", STAGE) && cJSON_AddStringToObject(j, "unit", t->key) &&
              cJSON_AddStringToObject(j, "layer_i", c->p->layers[t->i].name) &&
              cJSON_AddStringToObject(j, "candidate_i", c->p->options[t->a]) &&
              cJSON_AddStringToObject(j, "layer_j", c->p->layers[t->j].name) &&
              cJSON_AddStringToObject(j, "candidate_j", c->p->options[t->b]) &&
              cJSON_AddNumberToObject(j, "seed", (double)spec->calib.seed) &&
              cJSON_AddNumberToObject(j, "n_seqs", c->n_seqs) && cJSON_AddNumberToObject(j, "seq_len", c->T) &&
              cJSON_AddNumberToObject(j, "batch", spec->calib.batch) &&
              cJSON_AddStringToObject(j, "data_sha256", c->data_sha) &&
              cJSON_AddStringToObject(j, "model_sha256", mpq_job_get_model_row(c->job)->sha256) &&
              cJSON_AddStringToObject(j, "mpq_version", mpq_version()) &&
              cJSON_AddStringToObject(j, "rule", "pair_interaction = pair_kl - kl(layer_i, candidate_i) - "
                                                 "kl(layer_j, candidate_j)");
    char *s = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

static bool stop_now(const pairs_ctx *c) {
    return mpq_job_stop_requested() || (c->o->max_units > 0 && c->n_units_run >= c->o->max_units);
}

static double kl_of(const pairs_ctx *c, int l, int o) { return c->p->layer_loss[(size_t)l * (size_t)c->O + (size_t)o]; }

/* The solution's per-layer option. */
static mpq_status load_solution(pairs_ctx *c, mpq_pairs_result *r, mpq_err *err) {
    const mpq_db_job *row = mpq_job_get_row(c->job);
    mpq_status st = mpq_db_solution_find(c->db, row->id, c->o->solution, &r->solution_id, err);
    if (st == MPQ_ERR_NOTFOUND)
        return mpq_err_set(err, MPQ_ERR_NOTFOUND, "pairs: job '%s' has no solution '%s' (see mpq query solutions %s)",
                           row->name, c->o->solution, row->name);
    if (st != MPQ_OK) return st;
    mpq_db_solution s;
    mpq_db_assignment *a = NULL;
    int n_a = 0;
    memset(&s, 0, sizeof s);
    if ((st = mpq_db_solution_get(c->db, r->solution_id, &s, &a, &n_a, err)) != MPQ_OK) return st;
    for (int l = 0; l < c->L && st == MPQ_OK; l++) {
        int k = 0;
        while (k < n_a && a[k].layer_id != c->p->layers[l].id) k++;
        if (k == n_a) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "pairs: solution '%s' (%s) has no candidate for layer %s",
                             c->o->solution, s.status, c->p->layers[l].name);
            break;
        }
        c->sel[l] = -1;
        for (int o = 0; o < c->O; o++)
            if (!strcmp(a[k].candidate, c->p->options[o])) c->sel[l] = o;
        if (c->sel[l] < 0)
            st = mpq_err_set(err, MPQ_ERR_INVALID, "pairs: solution '%s': layer %s: candidate '%s' was not measured "
                             "by the job", c->o->solution, c->p->layers[l].name, a[k].candidate);
        else if (!isfinite(kl_of(c, l, c->sel[l])))
            st = mpq_err_set(err, MPQ_ERR_INVALID, "pairs: layer %s: no stored kl for %s", c->p->layers[l].name,
                             a[k].candidate);
    }
    free(a);
    mpq_db_solution_release(&s);
    return st;
}

static mpq_status setup(pairs_ctx *c, mpq_err *err) {
    const mpq_db_job *row = mpq_job_get_row(c->job);
    if (!c->o->solution || !*c->o->solution)
        return mpq_err_set(err, MPQ_ERR_INVALID, "pairs: no solution given (e.g. kl@avg-bits=3.5)");
    if (c->o->scope != MPQ_PAIRS_SCOPE_BLOCK && c->o->scope != MPQ_PAIRS_SCOPE_ALL)
        return mpq_err_set(err, MPQ_ERR_INVALID, "pairs: bad scope %d", (int)c->o->scope);
    char **kc = NULL;
    int n_kc = 0;
    mpq_status st = mpq_db_metric_candidates(c->db, row->id, "kl", &kc, &n_kc, err);
    mpq_db_strings_free(kc, n_kc);
    if (st != MPQ_OK) return st;
    if (n_kc == 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "pairs: job '%s' has no single-layer kl (stage layer_sensitivity); "
                           "pairs need it: add \"layer_sensitivity\" to the spec's metrics", row->name);
    mpq_jobsolve_opts jo = mpq_jobsolve_opts_default();
    jo.metric = "kl";
    if ((st = mpq_jobsolve_problem_build(c->job, &jo, &c->p, err)) != MPQ_OK) return st;
    c->L = c->p->n_layers;
    c->O = c->p->n_options;
    if (c->o->reach < 0 || c->o->reach > c->O - 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "pairs: reach %d out of range: expected 0..%d (the job has %d "
                           "candidates; 0 = every candidate)", c->o->reach, c->O - 1, c->O);
    c->lin = mpq_calloc((size_t)c->L, sizeof *c->lin);
    c->sel = mpq_calloc((size_t)c->L, sizeof *c->sel);
    c->cands = mpq_calloc((size_t)c->O, sizeof *c->cands);
    if (!c->lin || !c->sel || !c->cands) return mpq_err_set(err, MPQ_ERR_NOMEM, "pairs: out of memory");
    for (int l = 0; l < c->L; l++) {
        c->lin[l] = mpq_model_find_linear(mpq_job_get_shape(c->job), c->p->layers[l].name);
        if (c->lin[l] < 0) return mpq_err_set(err, MPQ_ERR_INVALID, "pairs: layer %s not in the model", c->p->layers[l].name);
    }
    for (int o = 0; o < c->O; o++) {
        if ((st = mpq_candidate_parse(c->p->options[o], &c->cands[o], err)) != MPQ_OK) return st;
        if (mpq_candidate_is_saq(&c->cands[o])) /* it would need the job's X^T X, which pairs does not build */
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "pairs: candidate %s: SAQ candidates are not supported by mpq pairs",
                               c->cands[o].name);
    }
    return MPQ_OK;
}

/* The run's terms: layer pairs in scope, candidates near the solution. */
static mpq_status term_set(pairs_ctx *c, term_def **out, int *n_out, int *n_pairs, mpq_err *err) {
    int *na = mpq_calloc((size_t)c->L, sizeof *na), *opts = mpq_calloc((size_t)c->L * (size_t)c->O, sizeof *opts);
    term_def *t = NULL;
    if (!na || !opts) goto nomem;
    for (int l = 0; l < c->L; l++) near_options(c, l, c->sel[l], opts + (size_t)l * (size_t)c->O, &na[l]);
    size_t n = 0;
    *n_pairs = 0;
    for (int i = 0; i < c->L; i++)
        for (int j = i + 1; j < c->L; j++)
            if (c->o->scope == MPQ_PAIRS_SCOPE_ALL || c->p->layers[i].block == c->p->layers[j].block) {
                n += (size_t)na[i] * (size_t)na[j];
                (*n_pairs)++;
            }
    if (n > 1000000) {
        free(na);
        free(opts);
        return mpq_err_set(err, MPQ_ERR_INVALID, "pairs: %zu terms asked (more than 10^6); use --scope block or a "
                           "smaller --reach", n);
    }
    if (!(t = mpq_calloc(n ? n : 1, sizeof *t))) goto nomem;
    size_t k = 0;
    for (int i = 0; i < c->L; i++)
        for (int j = i + 1; j < c->L; j++) {
            if (!(c->o->scope == MPQ_PAIRS_SCOPE_ALL || c->p->layers[i].block == c->p->layers[j].block)) continue;
            for (int x = 0; x < na[i]; x++)
                for (int y = 0; y < na[j]; y++) {
                    term_def *d = &t[k++];
                    d->i = i;
                    d->j = j;
                    d->a = opts[(size_t)i * (size_t)c->O + (size_t)x];
                    d->b = opts[(size_t)j * (size_t)c->O + (size_t)y];
                    snprintf(d->key, sizeof d->key, "%.40s/%.15s/%.40s/%.15s", c->p->layers[i].name,
                             c->p->options[d->a], c->p->layers[j].name, c->p->options[d->b]);
                    snprintf(d->cand, sizeof d->cand, "%.20s|%.80s=%.20s", c->p->options[d->a], c->p->layers[j].name,
                             c->p->options[d->b]);
                }
        }
    free(na);
    free(opts);
    *out = t;
    *n_out = (int)n;
    return MPQ_OK;
nomem:
    free(na);
    free(opts);
    return mpq_err_set(err, MPQ_ERR_NOMEM, "pairs: out of memory");
}

mpq_status mpq_pairs_run(mpq_job *job, const mpq_pairs_opts *opts, mpq_pairs_result **out, mpq_err *err) {
    if (!job || !opts || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_pairs_run: NULL argument");
    *out = NULL;
    pairs_ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    c.db = mpq_job_db(job);
    c.o = opts;
    term_def *t = NULL;
    mpq_db_unit *pend = NULL;
    mpq_db_evaluation *evs = NULL;
    int n_t = 0, n_pend = 0, n_evs = 0;
    char *prov = NULL;
    mpq_pairs_result *r = mpq_calloc(1, sizeof *r);
    if (!r) return mpq_err_set(err, MPQ_ERR_NOMEM, "pairs: out of memory");
    const int64_t job_id = mpq_job_get_row(job)->id;
    mpq_status st = setup(&c, err);
    if (st == MPQ_OK) st = load_solution(&c, r, err);
    if (st == MPQ_OK) st = term_set(&c, &t, &n_t, &r->n_layer_pairs, err);
    if (st != MPQ_OK) goto done;
    r->n_layers = c.L;
    r->n_terms = n_t;
    for (int i = 0; i < n_t && st == MPQ_OK; i++) st = mpq_db_unit_ensure(c.db, job_id, STAGE, t[i].key, &t[i].id, err);
    if (st == MPQ_OK) st = mpq_db_units_retry_failed(c.db, job_id, STAGE, err);
    if (st == MPQ_OK) st = mpq_db_units_pending(c.db, job_id, STAGE, &pend, &n_pend, err);
    if (st != MPQ_OK) goto done;
    int64_t done_n = 0;
    /* pending ids are sorted (id order): walk both lists */
    for (int i = 0; i < n_t && st == MPQ_OK; i++) {
        bool pending = false;
        for (int k = 0; k < n_pend && !pending; k++) pending = pend[k].id == t[i].id;
        if (!pending) {
            done_n++;
            continue;
        }
        if (stop_now(&c)) {
            st = mpq_err_set(err, MPQ_ERR_INTERRUPTED, "pairs: stopped after %lld/%d terms; run the same command "
                             "again to resume", (long long)done_n, n_t);
            break;
        }
        if (!c.leased) {
            if ((st = mpq_db_lease_acquire(c.db, job_id, &c.lease, NULL, err)) != MPQ_OK) break;
            c.leased = true;
        }
        if ((st = load_measure(&c, err)) != MPQ_OK) break;
        mpq_eval_stats s;
        if ((st = mpq_db_unit_start(c.db, t[i].id, err)) != MPQ_OK) break;
        if ((st = measure(&c, t[i].i, t[i].a, t[i].j, t[i].b, &s, err)) != MPQ_OK) break;
        free(prov);
        if (!(prov = unit_provenance(&c, &t[i]))) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "pairs: out of memory");
            break;
        }
        double inter = s.kl_mean - kl_of(&c, t[i].i, t[i].a) - kl_of(&c, t[i].j, t[i].b);
        if (!isfinite(inter)) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "pairs: %s: interaction not finite (stored kl missing?)", t[i].key);
            break;
        }
        mpq_db_metric rows[2] = {
            {.layer_id = c.p->layers[t[i].i].id, .candidate = t[i].cand, .metric = PAIR_KL, .value = s.kl_mean,
             .se = s.kl_se, .n = s.n_ref_seqs, .provenance_json = prov},
            {.layer_id = c.p->layers[t[i].i].id, .candidate = t[i].cand, .metric = PAIR_INT, .value = inter,
             .se = NAN, .n = s.n_ref_seqs, .provenance_json = prov}};
        if ((st = mpq_db_lease_heartbeat(c.db, &c.lease, err)) != MPQ_OK) {
            if (st == MPQ_ERR_BUSY) c.leased = false;
            break;
        }
        if ((st = mpq_db_unit_commit(c.db, t[i].id, rows, 2, err)) != MPQ_OK) break;
        c.n_units_run++;
        done_n++;
        if (opts->progress) {
            mpq_pairs_progress pg = {.done = done_n, .total = n_t, .unit_key = t[i].key};
            opts->progress(opts->progress_user, &pg);
        }
    }
    if (st != MPQ_OK) goto done;
    r->n_units_run = c.n_units_run;
    r->interaction_min = INFINITY;
    r->interaction_max = -INFINITY;
    for (int l = 0; l < c.L; l++) r->additive += kl_of(&c, l, c.sel[l]);
    for (int i = 0; i < n_t && st == MPQ_OK; i++) {
        double v;
        st = mpq_db_metric_get(c.db, job_id, c.p->layers[t[i].i].id, t[i].cand, PAIR_INT, &v, NULL, NULL, err);
        if (st != MPQ_OK) break;
        if (v < r->interaction_min) r->interaction_min = v;
        if (v > r->interaction_max) r->interaction_max = v;
        if (t[i].a == c.sel[t[i].i] && t[i].b == c.sel[t[i].j]) r->pair_sum += v;
    }
    if (st != MPQ_OK) goto done;
    r->predicted = r->additive + r->pair_sum;
    r->measured_kl = r->measured_kl_se = NAN;
    if ((st = mpq_db_evaluations_fetch(c.db, job_id, &evs, &n_evs, err)) != MPQ_OK) goto done;
    for (int i = n_evs - 1; i >= 0; i--)
        if (evs[i].solution_id == r->solution_id) {
            r->measured_kl = evs[i].kl;
            r->measured_kl_se = evs[i].kl_stderr;
            break;
        }
done:
    for (int i = 0; i < n_evs; i++) free(evs[i].config_json);
    free(evs);
    free(prov);
    free(pend);
    free(t);
    ctx_free(&c);
    if (st == MPQ_OK) *out = r;
    else free(r);
    return st;
}

mpq_status mpq_pairs_terms(mpq_job *job, const mpq_jobsolve_problem *p, mpq_pair_term **terms, int *n_terms,
                           mpq_err *err) {
    if (!job || !p || !terms || !n_terms) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_pairs_terms: NULL argument");
    *terms = NULL;
    *n_terms = 0;
    mpq_db *db = mpq_job_db(job);
    const int64_t job_id = mpq_job_get_row(job)->id;
    const int L = p->n_layers;
    char **cands = NULL;
    int n_c = 0, n = 0, cap = 0;
    int64_t *ids = mpq_calloc((size_t)L, sizeof *ids);
    double *v = mpq_calloc((size_t)L, sizeof *v);
    mpq_pair_term *t = NULL;
    mpq_status st = MPQ_OK;
    if (!ids || !v) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "pairs: out of memory");
        goto done;
    }
    for (int l = 0; l < L; l++) ids[l] = p->layers[l].id;
    if ((st = mpq_db_metric_candidates(db, job_id, PAIR_INT, &cands, &n_c, err)) != MPQ_OK) goto done;
    for (int k = 0; k < n_c; k++) {
        /* "<a>|<layer j>=<b>" */
        char buf[MPQ_DB_NAME_MAX];
        snprintf(buf, sizeof buf, "%s", cands[k]);
        char *bar = strchr(buf, '|'), *eq = bar ? strrchr(bar, '=') : NULL;
        if (!bar || !eq) continue;
        *bar = *eq = '\0';
        int a = -1, b = -1, lj = -1;
        for (int o = 0; o < p->n_options; o++) {
            if (!strcmp(buf, p->options[o])) a = o;
            if (!strcmp(eq + 1, p->options[o])) b = o;
        }
        for (int l = 0; l < L; l++)
            if (!strcmp(bar + 1, p->layers[l].name)) lj = l;
        if (a < 0 || b < 0 || lj < 0) continue;
        int found = 0;
        if ((st = mpq_db_metric_fetch(db, job_id, PAIR_INT, cands[k], L, ids, v, NULL, &found, err)) != MPQ_OK)
            goto done;
        for (int li = 0; li < L && found; li++) {
            if (!isfinite(v[li]) || p->group_of[li] == p->group_of[lj]) continue;
            if (n == cap) {
                int nc = cap ? 2 * cap : 256;
                mpq_pair_term *q = realloc(t, (size_t)nc * sizeof *q);
                if (!q) {
                    st = mpq_err_set(err, MPQ_ERR_NOMEM, "pairs: out of memory");
                    goto done;
                }
                t = q;
                cap = nc;
            }
            t[n++] = (mpq_pair_term){.item_a = p->group_of[li], .option_a = a, .item_b = p->group_of[lj],
                                     .option_b = b, .value = v[li]};
        }
    }
done:
    mpq_db_strings_free(cands, n_c);
    free(ids);
    free(v);
    if (st != MPQ_OK) {
        free(t);
        return st;
    }
    *terms = t;
    *n_terms = n;
    return MPQ_OK;
}
