/*
 * job_adaptive.c - adaptive measurement of layer_sensitivity (job_adaptive.h, README
 * "Adaptive measurement"): per-unit state artifacts, the round rule and the round loop that
 * runs each round's units through the job's pool (job_pool.h). The rule is a
 * perturbation test of the multiple-choice knapsack of mpq_jobsolve.h: a unit whose interval
 * kl +- z * se cannot make its candidate enter (or leave) the GLPK ILP solution at any budget
 * is settled; only the others get more windows. The decision reads stored rows only, so it
 * is the same whatever the worker count or the order in which units were committed.
 */
#include "job_adaptive.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_jobsolve.h"
#include "mpq/mpq_solvers.h"

void job_adaptive_windows_name(char *out, size_t n, const char *layer, const char *cand) {
    snprintf(out, n, "kl_windows/%.60s/%.40s", layer, cand);
}

void job_adaptive_state_name(char *out, size_t n, const char *layer, const char *cand) {
    snprintf(out, n, "adaptive.state/%.60s/%.40s", layer, cand);
}

void job_adaptive_round_name(char *out, size_t n, int round) { snprintf(out, n, "adaptive.round.%d", round); }

/* ---- state ------------------------------------------------------------------------------ */

static bool add_hex(cJSON *o, const char *key, double x) {
    char b[64];
    snprintf(b, sizeof b, "%a", x);
    return cJSON_AddStringToObject(o, key, b) != NULL;
}

char *job_adaptive_state_json(const mpq_eval_stats *a, int windows, int round) {
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;
    cJSON *s = o ? cJSON_AddObjectToObject(o, "acc") : NULL;
    bool ok = s && cJSON_AddNumberToObject(o, "version", 1) && cJSON_AddNumberToObject(o, "windows", windows) &&
              cJSON_AddNumberToObject(o, "round", round) && cJSON_AddNumberToObject(s, "n_tokens", (double)a->n_tokens) &&
              cJSON_AddNumberToObject(s, "n_seqs", (double)a->n_seqs) &&
              cJSON_AddNumberToObject(s, "n_ref_tokens", (double)a->n_ref_tokens) &&
              cJSON_AddNumberToObject(s, "n_ref_seqs", (double)a->n_ref_seqs) &&
              cJSON_AddNumberToObject(s, "top1_same", (double)a->top1_same) && add_hex(s, "nll_sum", a->nll_sum) &&
              add_hex(s, "kl_sum", a->kl_sum) && add_hex(s, "kl_seq_sum", a->kl_seq_sum) &&
              add_hex(s, "kl_seq_sumsq", a->kl_seq_sumsq) && add_hex(s, "dnll_sum", a->dnll_sum) &&
              add_hex(s, "dnll_seq_sum", a->dnll_seq_sum) && add_hex(s, "dnll_seq_sumsq", a->dnll_seq_sumsq) &&
              add_hex(s, "top1_seq_sum", a->top1_seq_sum) && add_hex(s, "top1_seq_sumsq", a->top1_seq_sumsq);
    if (ok) out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

unsigned char *job_adaptive_windows_bytes(const double *win, int n) {
    unsigned char *b = malloc(n > 0 ? (size_t)n * 8 : 1);
    if (!b) return NULL;
    for (int i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &win[i], 8);
        for (int k = 0; k < 8; k++) b[(size_t)i * 8 + k] = (unsigned char)(u >> (8 * k));
    }
    return b;
}

static bool get_count(const cJSON *o, const char *key, int64_t hi, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > (double)hi ||
        v->valuedouble != floor(v->valuedouble))
        return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

static bool get_hexd(const cJSON *o, const char *key, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || !v->valuestring) return false;
    char *end = NULL;
    *out = strtod(v->valuestring, &end);
    return end && end != v->valuestring && *end == '\0' && isfinite(*out);
}

mpq_status job_adaptive_state_load(mpq_db *db, int64_t job_id, const char *layer, const char *cand, int n_seqs,
                                   job_adaptive_state *out, mpq_err *err) {
    char name[MPQ_DB_NAME_MAX + 64], wname[MPQ_DB_NAME_MAX + 64];
    void *blob = NULL, *wb = NULL;
    size_t n = 0, wn = 0;
    cJSON *o = NULL;
    memset(out, 0, sizeof *out);
    job_adaptive_state_name(name, sizeof name, layer, cand);
    job_adaptive_windows_name(wname, sizeof wname, layer, cand);
    mpq_err e2 = {0};
    mpq_status st = mpq_db_artifact_get(db, job_id, name, &blob, &n, &e2);
    if (st == MPQ_ERR_NOTFOUND) return MPQ_OK;
    if (st != MPQ_OK) {
        *err = e2;
        return st;
    }
    o = cJSON_ParseWithLength(blob, n);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "acc");
    int64_t windows = 0, round = 0, v[5];
    mpq_eval_stats *s = &out->acc;
    if (!cJSON_IsObject(o) || !cJSON_IsObject(a) || !get_count(o, "windows", n_seqs, &windows) || windows < 1 ||
        !get_count(o, "round", 1 << 24, &round) || !get_count(a, "n_tokens", INT64_MAX / 2, &v[0]) ||
        !get_count(a, "n_seqs", n_seqs, &v[1]) || !get_count(a, "n_ref_tokens", INT64_MAX / 2, &v[2]) ||
        !get_count(a, "n_ref_seqs", n_seqs, &v[3]) || !get_count(a, "top1_same", INT64_MAX / 2, &v[4]) ||
        v[1] != windows || v[3] != windows || !get_hexd(a, "nll_sum", &s->nll_sum) ||
        !get_hexd(a, "kl_sum", &s->kl_sum) || !get_hexd(a, "kl_seq_sum", &s->kl_seq_sum) ||
        !get_hexd(a, "kl_seq_sumsq", &s->kl_seq_sumsq) || !get_hexd(a, "dnll_sum", &s->dnll_sum) ||
        !get_hexd(a, "dnll_seq_sum", &s->dnll_seq_sum) || !get_hexd(a, "dnll_seq_sumsq", &s->dnll_seq_sumsq) ||
        !get_hexd(a, "top1_seq_sum", &s->top1_seq_sum) || !get_hexd(a, "top1_seq_sumsq", &s->top1_seq_sumsq)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job %lld: artifact %s is not a valid adaptive state (windows 1..%d)",
                         mpq_db_path(db), (long long)job_id, name, n_seqs);
        goto done;
    }
    s->n_tokens = v[0];
    s->n_seqs = v[1];
    s->n_ref_tokens = v[2];
    s->n_ref_seqs = v[3];
    s->top1_same = v[4];
    out->windows = (int)windows;
    out->round = (int)round;
    if ((st = mpq_db_artifact_get(db, job_id, wname, &wb, &wn, err)) != MPQ_OK) {
        if (st == MPQ_ERR_NOTFOUND)
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job %lld: %s exists but %s is missing", mpq_db_path(db),
                             (long long)job_id, name, wname);
        goto done;
    }
    if (wn != (size_t)windows * 8) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job %lld: artifact %s: %zu bytes, expected %lld windows x 8",
                         mpq_db_path(db), (long long)job_id, wname, wn, (long long)windows);
        goto done;
    }
    if (!(out->win = malloc((size_t)windows * sizeof *out->win))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < windows; i++) {
        uint64_t u = 0;
        for (int k = 0; k < 8; k++) u |= (uint64_t)((const unsigned char *)wb)[i * 8 + k] << (8 * k);
        memcpy(&out->win[i], &u, 8);
    }
done:
    cJSON_Delete(o);
    free(blob);
    free(wb);
    if (st != MPQ_OK) {
        free(out->win);
        memset(out, 0, sizeof *out);
    }
    return st;
}

/* ---- the round rule --------------------------------------------------------------------- */

static bool same_choice(const mpq_solution *a, const mpq_solution *b) {
    for (int i = 0; i < a->n_items; i++)
        if (a->choice[i] != b->choice[i]) return false;
    return true;
}

mpq_status job_adaptive_decide(mpq_db *db, int64_t job_id, const mpq_job_spec *spec, const mpq_job_unit *units,
                               int n_units, const int64_t *layer_ids, int round, int **ext, int *n_ext,
                               char **decision_json, mpq_err *err) {
    const mpq_job_adaptive_spec *ad = &spec->adaptive;
    const int n_seqs = spec->calib.n_seqs;
    mpq_job *job = NULL;
    mpq_jobsolve_problem *jp = NULL;
    mpq_solution *base = NULL, *alt = NULL;
    double *kl = mpq_calloc((size_t)n_units + 1, sizeof *kl), *se = mpq_calloc((size_t)n_units + 1, sizeof *se);
    int64_t *nw = mpq_calloc((size_t)n_units + 1, sizeof *nw);
    bool *mark = mpq_calloc((size_t)n_units + 1, sizeof *mark);
    cJSON *o = NULL;
    mpq_status st = MPQ_OK;
    int64_t windows_so_far = 0;
    int n_tested = 0;
    *ext = NULL;
    *n_ext = 0;
    *decision_json = NULL;
    if (!kl || !se || !nw || !mark) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_units; i++) {
        const mpq_job_unit *u = &units[i];
        if ((st = mpq_db_metric_get(db, job_id, layer_ids[u->linear_index], spec->candidates[u->option], "kl", &kl[i],
                                    &se[i], &nw[i], err)) != MPQ_OK) {
            /* a (layer, candidate) stored as "unavailable" has no kl and is never extended */
            if (st != MPQ_ERR_NOTFOUND || mpq_db_metric_get(db, job_id, layer_ids[u->linear_index],
                                                            spec->candidates[u->option], "unavailable", NULL, NULL,
                                                            NULL, NULL) != MPQ_OK)
                goto done;
            st = MPQ_OK;
            nw[i] = n_seqs;
            se[i] = 0;
            continue;
        }
        if (!isfinite(se[i]) || se[i] < 0) se[i] = 0;
        windows_so_far += nw[i];
    }
    if ((st = mpq_job_open_id(db, job_id, &job, err)) != MPQ_OK) goto done;
    mpq_solve_opts so = mpq_solve_opts_default();
    for (int b = 0; b < ad->n_budgets && st == MPQ_OK; b++) {
        mpq_budget bu;
        if ((st = mpq_budget_parse(ad->budgets[b], &bu, err)) != MPQ_OK) break;
        mpq_jobsolve_opts jo = mpq_jobsolve_opts_default();
        jo.budgets = &bu;
        jo.n_budgets = 1;
        jo.metric = "kl";
        if ((st = mpq_jobsolve_problem_build(job, &jo, &jp, err)) != MPQ_OK) break;
        if ((st = mpq_solve_ilp(jp->problem, &so, &base, err)) != MPQ_OK) {
            mpq_err_prefix(err, "adaptive round %d: budget %s", round, bu.text);
            break;
        }
        for (int i = 0; i < n_units && st == MPQ_OK; i++) {
            const mpq_job_unit *u = &units[i];
            if (mark[i] || nw[i] >= n_seqs || u->linear_index >= jp->n_layers) continue;
            int opt = -1;
            for (int k = 0; k < jp->n_options; k++)
                if (strcmp(jp->options[k], spec->candidates[u->option]) == 0) opt = k;
            int item = jp->group_of[u->linear_index];
            if (opt < 0 || !mpq_problem_allowed(jp->problem, item, opt)) continue;
            bool chosen = base->choice[item] == opt;
            double old = mpq_problem_loss(jp->problem, item, opt);
            double moved = chosen ? old + ad->z * se[i] : fmax(0.0, old - ad->z * se[i]);
            n_tested += b == 0;
            if (moved == old) continue;
            if ((st = mpq_problem_set_loss(jp->problem, item, opt, moved, err)) != MPQ_OK) break;
            st = mpq_solve_ilp(jp->problem, &so, &alt, err);
            mpq_status rs = mpq_problem_set_loss(jp->problem, item, opt, old, err);
            if (st == MPQ_OK) st = rs;
            if (st != MPQ_OK) {
                mpq_err_prefix(err, "adaptive round %d: budget %s", round, bu.text);
                break;
            }
            if (!same_choice(base, alt)) {
                /* regret of keeping the current choice if the unit's value were `moved`: the
                 * current choice's raw loss with the move, minus the alternative's */
                double cur = base->total_loss_raw + (chosen ? moved - old : 0.0);
                double regret = cur - alt->total_loss_raw;
                if (regret > ad->tol * fabs(base->total_loss_raw)) mark[i] = true;
            }
            mpq_solution_free(alt);
            alt = NULL;
        }
        mpq_solution_free(base);
        base = NULL;
        mpq_jobsolve_problem_free(jp);
        jp = NULL;
    }
    if (st != MPQ_OK) goto done;
    int n = 0;
    for (int i = 0; i < n_units; i++) n += mark[i];
    if (!(*ext = mpq_calloc(n > 0 ? (size_t)n : 1, sizeof **ext))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    o = cJSON_CreateObject();
    cJSON *keys = o ? cJSON_AddArrayToObject(o, "extend") : NULL;
    cJSON *bs = o ? cJSON_AddArrayToObject(o, "budgets") : NULL;
    bool ok = keys && bs && cJSON_AddNumberToObject(o, "round", round) &&
              cJSON_AddStringToObject(o, "rule",
                                      "extend (layer, candidate) when kl moved to kl+z*se (chosen) or "
                                      "max(0,kl-z*se) (not chosen) changes the GLPK ILP solution on kl at a budget and the new "
                                      "solution beats the current one, both with the moved value, by more than tol "
                                      "times the current predicted kl") &&
              cJSON_AddNumberToObject(o, "z", ad->z) && cJSON_AddNumberToObject(o, "tol", ad->tol) && cJSON_AddNumberToObject(o, "min_windows", ad->min_windows) &&
              cJSON_AddNumberToObject(o, "step", ad->step) && cJSON_AddNumberToObject(o, "n_seqs", n_seqs) &&
              cJSON_AddNumberToObject(o, "units", n_units) && cJSON_AddNumberToObject(o, "tested", n_tested) &&
              cJSON_AddNumberToObject(o, "windows_before", (double)windows_so_far);
    for (int b = 0; ok && b < ad->n_budgets; b++) {
        cJSON *x = cJSON_CreateString(ad->budgets[b]);
        ok = x && cJSON_AddItemToArray(bs, x);
        if (!ok) cJSON_Delete(x);
    }
    for (int i = 0; ok && i < n_units; i++)
        if (mark[i]) {
            (*ext)[(*n_ext)++] = i;
            cJSON *x = cJSON_CreateString(units[i].key);
            ok = x && cJSON_AddItemToArray(keys, x);
            if (!ok) cJSON_Delete(x);
        }
    if (ok) *decision_json = cJSON_PrintUnformatted(o);
    if (!*decision_json) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
done:
    cJSON_Delete(o);
    mpq_solution_free(base);
    mpq_solution_free(alt);
    mpq_jobsolve_problem_free(jp);
    mpq_job_close(job);
    free(kl);
    free(se);
    free(nw);
    free(mark);
    if (st != MPQ_OK) {
        free(*ext);
        *ext = NULL;
        *n_ext = 0;
    }
    return st;
}

/* ---- the rounds (job_adaptive_run) ------------------------------------------------------ */

static mpq_status round_store(job_pool *pool, const job_adaptive_env *e, int round, const char *json,
                              const mpq_job_unit *base, const int *ext, int n_ext, mpq_err *err) {
    char an[64], key[MPQ_DB_NAME_MAX];
    job_adaptive_round_name(an, sizeof an, round);
    mpq_status st = mpq_db_begin(e->db, err);
    if (st != MPQ_OK) return st;
    st = job_pool_beat(pool, err);
    if (st == MPQ_OK) st = mpq_db_artifact_put(e->db, e->job_id, an, json, strlen(json), err);
    for (int i = 0; st == MPQ_OK && i < n_ext; i++) {
        int64_t uid;
        int w = snprintf(key, sizeof key, "round.%d/%s", round, base[ext[i]].key);
        if (w < 0 || (size_t)w >= sizeof key)
            st = mpq_err_set(err, MPQ_ERR_INVALID, "unit key round.%d/%s is too long", round, base[ext[i]].key);
        else
            st = mpq_db_unit_ensure(e->db, e->job_id, mpq_job_stage_name(MPQ_JOB_STAGE_LAYER_SENSITIVITY), key, &uid,
                                    err);
    }
    if (st == MPQ_OK) return mpq_db_commit(e->db, err);
    mpq_db_rollback(e->db, NULL);
    return st;
}

/* The units of round r (> 0) as stored: reads (or decides and stores) the decision. */
static mpq_status round_units(job_pool *pool, const job_adaptive_env *e, int round, const mpq_job_unit *base,
                              int n_base, adapt_unit **out, int *n_out, mpq_err *err) {
    char an[64];
    job_adaptive_round_name(an, sizeof an, round);
    void *blob = NULL;
    size_t nb = 0;
    int *ext = NULL, n_ext = 0;
    char *json = NULL;
    cJSON *o = NULL;
    *out = NULL;
    *n_out = 0;
    mpq_err e2 = {0};
    mpq_status st = mpq_db_artifact_get(e->db, e->job_id, an, &blob, &nb, &e2);
    if (st == MPQ_ERR_NOTFOUND) {
        if ((st = job_adaptive_decide(e->db, e->job_id, e->spec, base, n_base, e->layer_ids, round, &ext, &n_ext,
                                      &json, err)) != MPQ_OK ||
            (st = round_store(pool, e, round, json, base, ext, n_ext, err)) != MPQ_OK)
            goto done;
        blob = json;
        nb = strlen(json);
        json = NULL;
    } else if (st != MPQ_OK) {
        *err = e2;
        goto done;
    }
    o = cJSON_ParseWithLength(blob, nb);
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(o, "extend");
    if (!cJSON_IsArray(keys)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job '%s': artifact %s has no \"extend\" list", mpq_db_path(e->db),
                         e->spec->name, an);
        goto done;
    }
    int n = cJSON_GetArraySize(keys);
    adapt_unit *au = mpq_calloc(n > 0 ? (size_t)n : 1, sizeof *au);
    if (!au) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    *out = au;
    for (const cJSON *k = keys->child; k; k = k->next) {
        const mpq_job_unit *b = NULL;
        for (int i = 0; cJSON_IsString(k) && i < n_base && !b; i++)
            if (strcmp(base[i].key, k->valuestring) == 0) b = &base[i];
        if (!b) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: job '%s': artifact %s names a unit that is not in the spec",
                             mpq_db_path(e->db), e->spec->name, an);
            goto done;
        }
        adapt_unit *a = &au[(*n_out)++];
        a->u = *b;
        a->u.round = round;
        snprintf(a->u.key, sizeof a->u.key, "round.%d/%.100s", round, b->key);
    }
done:
    cJSON_Delete(o);
    free(blob);
    free(json);
    free(ext);
    return st;
}

static void adapt_units_free(adapt_unit *au, int n) {
    for (int i = 0; au && i < n; i++) free(au[i].state.win);
    free(au);
}

mpq_status job_adaptive_run(job_pool *pool, const job_adaptive_env *e, const char *sname, mpq_job_progress *p,
                            bool *stopped, mpq_err *err) {
    const mpq_job_unit *base = NULL;
    int n_base = 0;
    for (int i = 0; i < e->n_units; i++)
        if (e->units[i].stage == MPQ_JOB_STAGE_LAYER_SENSITIVITY) {
            if (!base) base = &e->units[i];
            n_base++;
        }
    mpq_status st = MPQ_OK;
    for (int r = 0; st == MPQ_OK && !*stopped && job_pool_failed(pool, NULL, NULL) == 0; r++) {
        adapt_unit *au = NULL;
        int n_au = 0, n_pend = 0, n_mine = 0;
        mpq_db_unit *pend = NULL, *mine = NULL;
        const mpq_job_unit **us = NULL;
        if (r > 0 && ((st = round_units(pool, e, r, base, n_base, &au, &n_au, err)) != MPQ_OK || n_au == 0)) {
            adapt_units_free(au, n_au); /* n_au == 0: nothing left to extend, the stage is done */
            break;
        }
        if ((st = mpq_db_units_pending(e->db, e->job_id, sname, &pend, &n_pend, err)) != MPQ_OK) goto next;
        mine = mpq_calloc(n_pend > 0 ? (size_t)n_pend : 1, sizeof *mine);
        us = mpq_calloc(n_pend > 0 ? (size_t)n_pend : 1, sizeof *us);
        if (!mine || !us) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
            goto next;
        }
        for (int i = 0; i < n_pend; i++) {
            const mpq_job_unit *u = NULL;
            for (int k = 0; r == 0 && k < n_base && !u; k++)
                if (strcmp(base[k].key, pend[i].key) == 0) u = &base[k];
            for (int k = 0; r > 0 && k < n_au && !u; k++)
                if (strcmp(au[k].u.key, pend[i].key) == 0) {
                    if ((st = job_adaptive_state_load(e->db, e->job_id,
                                                      mpq_model_linear(e->model, au[k].u.linear_index)->name,
                                                      e->spec->candidates[au[k].u.option], e->n_seqs, &au[k].state,
                                                      err)) != MPQ_OK)
                        goto next;
                    u = &au[k].u;
                }
            if (!u) continue; /* another round's unit */
            mine[n_mine] = pend[i];
            us[n_mine++] = u;
        }
        if (n_mine > 0) {
            int64_t done = 0, total = 0;
            mpq_calib *cal = NULL;
            if ((st = e->reference(e->user, &cal, err)) != MPQ_OK ||
                (st = mpq_db_units_count(e->db, e->job_id, sname, &done, &total, NULL, err)) != MPQ_OK)
                goto next;
            p->stage_done = done;
            p->stage_total = total;
            job_pool_batch b = {.stage = sname, .pend = mine, .units = us, .n = n_mine, .cal = cal,
                                .t0 = mpq_time_now()}; /* rate: of this round */
            st = job_pool_run(pool, &b, p, stopped, err);
        }
    next:
        free(us);
        free(mine);
        free(pend);
        adapt_units_free(au, n_au);
    }
    return st;
}
