/*
 * plot_db.c - mpq_plot_job (mpq_plot.h): reads a job's frontier, evaluations, solutions and
 * metrics through the public mpq_db API (no SQL here) and renders one SVG plot. Configs are
 * read with cJSON against the stored layer table, so no model needs loading.
 * Reference: include/mpq/mpq_config.h (config format), include/mpq/mpq_job.h (metric names:
 * kl/dloss/top1 per layer x candidate; kv_kl... per "blk.N.kv" x pair).
 */
#include "mpq/mpq_plot.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"
#include "export/plot_internal.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_quant.h"

static const char *const kind_names[] = {"frontier", "bits", "sensitivity", "kv"};

mpq_status mpq_plot_kind_parse(const char *name, mpq_plot_kind *out, mpq_err *err) {
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (mpq_plot_kind)i;
            return MPQ_OK;
        }
    return mpq_err_set(err, MPQ_ERR_INVALID, "unknown plot '%s' (frontier, bits, sensitivity, kv)",
                       name ? name : "(null)");
}

const char *mpq_plot_kind_name(mpq_plot_kind k) { return (unsigned)k < 4 ? kind_names[k] : "?"; }

mpq_plot_opts mpq_plot_opts_default(void) {
    mpq_plot_opts o = {NULL, NULL};
    return o;
}

static bool is_linear(const mpq_db_layer *l) { return strcmp(l->kind, "kv_cache") != 0 && l->rows > 0; }

mpq_status plot_config_read(const char *json, const char *src, const mpq_db_layer *L, int nL, mpq_candidate *cand,
                            int n_blocks, mpq_kv_pair *kv, bool *uniform, mpq_err *err) {
    mpq_status st = MPQ_OK;
    cJSON *j = cJSON_Parse(json);
    if (!j) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: stored config is not valid JSON", src);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "weights");
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(w, "default");
    const cJSON *lay = cJSON_GetObjectItemCaseSensitive(w, "layers");
    mpq_candidate d;
    if ((st = mpq_candidate_parse(cJSON_IsString(def) ? def->valuestring : "f32", &d, err)) != MPQ_OK) goto done;
    if (uniform) *uniform = !cJSON_IsObject(lay) || cJSON_GetArraySize(lay) == 0;
    for (int i = 0; i < nL; i++) {
        cand[i] = d;
        const cJSON *e = NULL;
        if (cJSON_IsObject(lay)) {
            e = cJSON_GetObjectItemCaseSensitive(lay, L[i].name);
            if (!e && L[i].hf_name[0]) e = cJSON_GetObjectItemCaseSensitive(lay, L[i].hf_name);
        }
        if (cJSON_IsString(e) && (st = mpq_candidate_parse(e->valuestring, &cand[i], err)) != MPQ_OK) {
            mpq_err_prefix(err, "%s: weights.layers.%s", src, L[i].name);
            goto done;
        }
    }
    if (kv) {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "kv");
        const cJSON *kd = cJSON_GetObjectItemCaseSensitive(k, "default");
        const cJSON *kl = cJSON_GetObjectItemCaseSensitive(k, "layers");
        mpq_kv_pair p = {16, 16};
        if (cJSON_IsString(kd) && (st = mpq_kv_pair_parse(kd->valuestring, &p, err)) != MPQ_OK) goto done;
        for (int b = 0; b < n_blocks; b++) {
            char key[32];
            kv[b] = p;
            snprintf(key, sizeof key, "blk.%d", b);
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(kl, key);
            if (!e) {
                snprintf(key, sizeof key, "model.layers.%d", b);
                e = cJSON_GetObjectItemCaseSensitive(kl, key);
            }
            if (cJSON_IsString(e) && (st = mpq_kv_pair_parse(e->valuestring, &kv[b], err)) != MPQ_OK) goto done;
        }
    }
done:
    cJSON_Delete(j);
    return st;
}

bool plot_config_kv_heads(const char *json, int block, char *out, size_t n) {
    if (!json || !out || n == 0) return false;
    out[0] = '\0';
    cJSON *j = cJSON_Parse(json);
    const cJSON *kl = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "kv"), "layers");
    char key[48];
    snprintf(key, sizeof key, "blk.%d", block);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(kl, key);
    if (!e) {
        snprintf(key, sizeof key, "model.layers.%d", block);
        e = cJSON_GetObjectItemCaseSensitive(kl, key);
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(e, "heads"), *x;
    bool any = false;
    size_t len = 0;
    if (!cJSON_IsArray(h)) h = NULL;
    cJSON_ArrayForEach(x, h) {
        if (!cJSON_IsString(x) || len >= n) continue;
        int w = snprintf(out + len, n - len, "%s%s", any ? "," : "", x->valuestring);
        len = w < 0 ? n : len + (size_t)w;
        any = true;
    }
    cJSON_Delete(j);
    return any;
}

double plot_avg_bits(const mpq_db_layer *L, int nL, const mpq_candidate *cand) {
    double bits = 0, n = 0;
    for (int i = 0; i < nL; i++) {
        if (!is_linear(&L[i])) continue;
        bits += mpq_candidate_bits_matrix(&cand[i], L[i].rows, L[i].cols) * (double)L[i].n_params;
        n += (double)L[i].n_params;
    }
    return n > 0 ? bits / n : NAN;
}

/* ---- data gathering ------------------------------------------------------------------- */

typedef struct ctx {
    mpq_db *db;
    mpq_db_job job;
    mpq_db_layer *L;
    int nL;
    int n_blocks;
} ctx;

static mpq_status frontier_plot(ctx *c, const mpq_plot_opts *o, char **svg, mpq_err *err) {
    mpq_status st;
    int64_t fid = 0;
    mpq_db_frontier_point *pts = NULL;
    int np = 0, ne = 0;
    mpq_db_evaluation *ev = NULL;
    mpq_db_table *ft = NULL, *sol = NULL;
    mpq_plot_point *pred = NULL, *meas = NULL, *uni = NULL;
    char **labels = NULL;
    mpq_candidate *cand = NULL;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)c->job.id);
    st = mpq_db_frontier_latest(c->db, c->job.id, NULL, NULL, &fid, err);
    if (st == MPQ_ERR_NOTFOUND) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s' has no Pareto frontier (run mpq pareto)", c->job.name);
        goto done;
    }
    if (st != MPQ_OK) goto done;
    if ((st = mpq_db_frontier_points(c->db, fid, &pts, &np, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_report_table(c->db, MPQ_DB_REPORT_FRONTIERS, key, &ft, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_report_table(c->db, MPQ_DB_REPORT_SOLUTIONS, key, &sol, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_evaluations_fetch(c->db, c->job.id, &ev, &ne, err)) != MPQ_OK) goto done;
    const char *resource = "cost", *expr = "loss";
    char fids[32];
    snprintf(fids, sizeof fids, "%lld", (long long)fid);
    for (int r = 0; r < ft->n_rows; r++) {
        const char *f = export_table_cell(ft, r, export_table_col(ft, "frontier"));
        if (f && strcmp(f, fids) == 0) {
            const char *rs = export_table_cell(ft, r, export_table_col(ft, "resource"));
            const char *me = export_table_cell(ft, r, export_table_col(ft, "metric_expr"));
            if (rs) resource = rs;
            if (me) expr = me;
            break;
        }
    }
    bool use_ppl = o->metric && strcmp(o->metric, "ppl") == 0;
    pred = mpq_calloc((size_t)(np > 0 ? np : 1), sizeof *pred);
    meas = mpq_calloc((size_t)(ne > 0 ? ne : 1), sizeof *meas);
    uni = mpq_calloc((size_t)(ne > 0 ? ne : 1), sizeof *uni);
    labels = mpq_calloc((size_t)(ne > 0 ? ne : 1), sizeof *labels);
    cand = mpq_calloc((size_t)(c->nL > 0 ? c->nL : 1), sizeof *cand);
    if (!pred || !meas || !uni || !labels || !cand) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
        goto done;
    }
    for (int i = 0; i < np; i++) pred[i] = (mpq_plot_point){pts[i].cost, pts[i].loss, NULL};
    bool bits_axis = strstr(resource, "bit") != NULL;
    int nm = 0, nu = 0;
    for (int i = 0; i < ne; i++) {
        double y = use_ppl ? ev[i].ppl : ev[i].kl;
        if (!isfinite(y)) continue;
        double x = NAN;
        for (int k = 0; k < np && ev[i].solution_id > 0; k++)
            if (pts[k].solution_id == ev[i].solution_id) x = pts[k].cost;
        bool uniform = false;
        char src[64];
        snprintf(src, sizeof src, "evaluation %lld", (long long)ev[i].id);
        if (ev[i].config_json &&
            plot_config_read(ev[i].config_json, src, c->L, c->nL, cand, 0, NULL, &uniform, err) == MPQ_OK) {
            if (!isfinite(x) && bits_axis) x = plot_avg_bits(c->L, c->nL, cand);
        }
        if (!isfinite(x)) continue;
        char lab[160] = "";
        if (uniform && c->nL > 0) snprintf(lab, sizeof lab, "%s", cand[0].name);
        for (int r = 0; !uniform && r < sol->n_rows; r++) {
            const char *id = export_table_cell(sol, r, export_table_col(sol, "id"));
            if (id && ev[i].solution_id > 0 && strtoll(id, NULL, 10) == ev[i].solution_id) {
                const char *nm_ = export_table_cell(sol, r, export_table_col(sol, "name"));
                snprintf(lab, sizeof lab, "%s", nm_ ? nm_ : "");
            }
        }
        labels[i] = export_strdup(lab);
        if (uniform) uni[nu++] = (mpq_plot_point){x, y, labels[i]};
        else meas[nm++] = (mpq_plot_point){x, y, labels[i]};
    }
    char title[300], ylab[200];
    snprintf(title, sizeof title, "Pareto frontier - job %s", c->job.name);
    snprintf(ylab, sizeof ylab, "predicted %s / measured %s", expr, use_ppl ? "ppl" : "KL");
    bool logy = true;
    for (int i = 0; i < np; i++) logy &= pred[i].y > 0;
    for (int i = 0; i < nm; i++) logy &= meas[i].y > 0;
    for (int i = 0; i < nu; i++) logy &= uni[i].y > 0;
    mpq_plot_frontier_data d = {title, resource, ylab, pred, np, meas, nm, uni, nu, logy};
    st = mpq_plot_frontier_svg(&d, svg, err);
done:
    for (int i = 0; labels && i < ne; i++) free(labels[i]);
    free(labels);
    for (int i = 0; ev && i < ne; i++) free(ev[i].config_json);
    free(ev);
    free(pts);
    free(pred);
    free(meas);
    free(uni);
    free(cand);
    mpq_db_table_free(ft);
    mpq_db_table_free(sol);
    return st;
}

/* The chosen solution's config: candidates per layer and KV per block. */
static mpq_status solution_config(ctx *c, const char *which, mpq_candidate *cand, mpq_kv_pair *kv, char *name,
                                  size_t name_n, mpq_err *err) {
    int64_t sid = 0;
    mpq_db_solution s = {0};
    mpq_status st = export_find_solution(c->db, &c->job, which, &sid, err);
    if (st != MPQ_OK) return st;
    if ((st = mpq_db_solution_get(c->db, sid, &s, NULL, NULL, err)) != MPQ_OK) return st;
    if (!s.config_json) st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "solution '%s' has no stored config", s.name);
    else {
        char src[200];
        snprintf(src, sizeof src, "solution %s", s.name);
        st = plot_config_read(s.config_json, src, c->L, c->nL, cand, c->n_blocks, kv, NULL, err);
    }
    snprintf(name, name_n, "%s", s.name);
    mpq_db_solution_release(&s);
    return st;
}

static int kind_index(const char *k) {
    static const char *const kinds[7] = {"attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up", "ffn_down"};
    for (int i = 0; i < 7; i++)
        if (strcmp(k, kinds[i]) == 0) return i;
    return 7;
}

static mpq_status bits_plot(ctx *c, const mpq_plot_opts *o, char **svg, mpq_err *err) {
    mpq_status st;
    mpq_candidate *cand = mpq_calloc((size_t)c->nL, sizeof *cand);
    mpq_kv_pair *kv = mpq_calloc((size_t)(c->n_blocks > 0 ? c->n_blocks : 1), sizeof *kv);
    const char **names = mpq_calloc((size_t)c->nL, sizeof *names);
    const char **cn = mpq_calloc((size_t)c->nL, sizeof *cn);
    int *block = mpq_calloc((size_t)c->nL, sizeof *block), *kind = mpq_calloc((size_t)c->nL, sizeof *kind);
    double *bits = mpq_calloc((size_t)c->nL, sizeof *bits);
    int64_t *np = mpq_calloc((size_t)c->nL, sizeof *np);
    char sname[MPQ_DB_NAME_MAX] = "";
    if (!cand || !kv || !names || !cn || !block || !kind || !bits || !np) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
        goto done;
    }
    if ((st = solution_config(c, o->solution, cand, kv, sname, sizeof sname, err)) != MPQ_OK) goto done;
    int n = 0;
    for (int i = 0; i < c->nL; i++) {
        if (!is_linear(&c->L[i])) continue;
        names[n] = c->L[i].name;
        cn[n] = cand[i].name;
        block[n] = c->L[i].block;
        kind[n] = kind_index(c->L[i].kind);
        bits[n] = mpq_candidate_bits_matrix(&cand[i], c->L[i].rows, c->L[i].cols);
        np[n] = c->L[i].n_params;
        n++;
    }
    char title[300];
    snprintf(title, sizeof title, "bits per weight - job %s, solution %s", c->job.name, sname);
    mpq_plot_bits_data d = {title, n, names, block, kind, bits, cn, np};
    st = mpq_plot_bits_svg(&d, svg, err);
done:
    free(cand);
    free(kv);
    free(names);
    free(cn);
    free(block);
    free(kind);
    free(bits);
    free(np);
    return st;
}

typedef struct cand_col {
    char name[MPQ_DB_NAME_MAX];
    double key; /* sort key: bits (candidates) or k+v bits (pairs) */
    double key2;
} cand_col;

static int cmp_col(const void *a, const void *b) {
    const cand_col *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    if (x->key2 != y->key2) return x->key2 > y->key2 ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Rows of metric `metric` of the sensitivity report into a (layers x columns) grid. kv:
 * rows are blk.N.kv layers (by block), columns KV pairs; else linear layers x candidates. */
static mpq_status grid_plot(ctx *c, const char *metric, bool kv, const mpq_plot_opts *o, char **svg, mpq_err *err) {
    mpq_status st;
    mpq_db_table *t = NULL;
    cand_col *cols = NULL;
    int ncol = 0;
    int *row_of = NULL; /* layer index -> row */
    const char **rnames = NULL, **cnames = NULL;
    double *vals = NULL;
    int *chosen = NULL;
    mpq_candidate *cand = NULL;
    mpq_kv_pair *kvp = NULL;
    char (*labels)[MPQ_DB_KV_PAIR_MAX] = NULL; /* per-KV-head pairs of the blocks that have them */
    const char **head_pairs = NULL;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)c->job.id);
    if ((st = mpq_db_report_table(c->db, MPQ_DB_REPORT_SENSITIVITY, key, &t, err)) != MPQ_OK) goto done;
    int cl = export_table_col(t, "layer"), cc = export_table_col(t, "candidate"), cm = export_table_col(t, "metric"),
        cv = export_table_col(t, "value");
    cols = mpq_calloc((size_t)(t->n_rows > 0 ? t->n_rows : 1), sizeof *cols);
    row_of = mpq_calloc((size_t)(c->nL > 0 ? c->nL : 1), sizeof *row_of);
    rnames = mpq_calloc((size_t)(c->nL > 0 ? c->nL : 1), sizeof *rnames);
    if (!cols || !row_of || !rnames) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
        goto done;
    }
    for (int r = 0; r < t->n_rows; r++) {
        const char *m = export_table_cell(t, r, cm), *cd = export_table_cell(t, r, cc);
        if (!m || strcmp(m, metric) != 0 || !cd || !*cd) continue;
        bool seen = false;
        for (int k = 0; k < ncol && !seen; k++) seen = strcmp(cols[k].name, cd) == 0;
        if (seen) continue;
        snprintf(cols[ncol].name, sizeof cols[ncol].name, "%s", cd);
        if (kv) {
            mpq_kv_pair p;
            if (mpq_kv_pair_parse(cd, &p, NULL) != MPQ_OK) continue;
            cols[ncol].key = (mpq_kv_rate_q(p.k_bits) + mpq_kv_rate_q(p.v_bits)) / 1024.0;
            cols[ncol].key2 = mpq_kv_rate_q(p.k_bits) / 1024.0;
        } else {
            mpq_candidate cnd;
            if (mpq_candidate_parse(cd, &cnd, NULL) != MPQ_OK) continue;
            cols[ncol].key = mpq_candidate_bits(&cnd, 4096);
        }
        ncol++;
    }
    qsort(cols, (size_t)ncol, sizeof *cols, cmp_col);
    int nrow = 0;
    for (int i = 0; i < c->nL; i++) {
        row_of[i] = -1;
        if (kv ? strcmp(c->L[i].kind, "kv_cache") == 0 : is_linear(&c->L[i])) {
            row_of[i] = nrow;
            rnames[nrow++] = c->L[i].name;
        }
    }
    if (ncol == 0 || nrow == 0) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s' has no '%s' measurements (run the %s stage)", c->job.name,
                         metric, kv ? "kv_sensitivity" : "layer_sensitivity");
        goto done;
    }
    vals = mpq_calloc((size_t)nrow * (size_t)ncol, sizeof *vals);
    cnames = mpq_calloc((size_t)ncol, sizeof *cnames);
    if (!vals || !cnames) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
        goto done;
    }
    for (int i = 0; i < nrow * ncol; i++) vals[i] = NAN;
    for (int k = 0; k < ncol; k++) cnames[k] = cols[k].name;
    for (int r = 0; r < t->n_rows; r++) {
        const char *m = export_table_cell(t, r, cm), *cd = export_table_cell(t, r, cc);
        const char *ln = export_table_cell(t, r, cl), *v = export_table_cell(t, r, cv);
        if (!m || strcmp(m, metric) != 0 || !cd || !ln || !v) continue;
        int li = -1, k = -1;
        for (int i = 0; i < c->nL && li < 0; i++)
            if (strcmp(c->L[i].name, ln) == 0) li = i;
        for (int q = 0; q < ncol && k < 0; q++)
            if (strcmp(cols[q].name, cd) == 0) k = q;
        if (li < 0 || k < 0 || row_of[li] < 0) continue;
        vals[(size_t)row_of[li] * (size_t)ncol + (size_t)k] = strtod(v, NULL);
    }
    char title[300];
    if (kv) {
        /* the chosen pair per block from a solution, when there is one */
        chosen = mpq_calloc((size_t)nrow, sizeof *chosen);
        cand = mpq_calloc((size_t)c->nL, sizeof *cand);
        kvp = mpq_calloc((size_t)(c->n_blocks > 0 ? c->n_blocks : 1), sizeof *kvp);
        if (!chosen || !cand || !kvp) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
            goto done;
        }
        char sname[MPQ_DB_NAME_MAX] = "";
        mpq_err e2 = {0};
        st = solution_config(c, o->solution, cand, kvp, sname, sizeof sname, &e2);
        if (st != MPQ_OK && o->solution) {
            *err = e2;
            goto done;
        }
        bool have = st == MPQ_OK;
        st = MPQ_OK;
        char *heads_cfg = NULL; /* the solution's config, for blocks with per-KV-head pairs */
        if (have) {
            int64_t sid = 0;
            mpq_db_solution s = {0};
            if (export_find_solution(c->db, &c->job, o->solution, &sid, NULL) == MPQ_OK &&
                mpq_db_solution_get(c->db, sid, &s, NULL, NULL, NULL) == MPQ_OK) {
                if (s.config_json && (heads_cfg = malloc(strlen(s.config_json) + 1)))
                    memcpy(heads_cfg, s.config_json, strlen(s.config_json) + 1);
                mpq_db_solution_release(&s);
            }
        }
        labels = mpq_calloc((size_t)nrow, sizeof *labels);
        head_pairs = mpq_calloc((size_t)nrow, sizeof *head_pairs);
        if (!labels || !head_pairs) {
            free(heads_cfg);
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
            goto done;
        }
        for (int i = 0; i < nrow; i++) {
            chosen[i] = -1;
            int blk = -1;
            sscanf(rnames[i], "blk.%d", &blk);
            if (!have || blk < 0 || blk >= c->n_blocks) continue;
            char hp[MPQ_DB_KV_PAIR_MAX];
            if (plot_config_kv_heads(heads_cfg, blk, hp, sizeof hp)) { /* no one column: the heads' pairs */
                snprintf(labels[i], sizeof labels[i], "%s", hp);
                head_pairs[i] = labels[i];
                continue;
            }
            char pn[16];
            mpq_kv_pair_name(kvp[blk], pn, sizeof pn);
            for (int k = 0; k < ncol; k++)
                if (strcmp(cols[k].name, pn) == 0) chosen[i] = k;
        }
        free(heads_cfg);
        snprintf(title, sizeof title, "KV pair ladder - job %s%s%s", c->job.name, have ? ", solution " : "",
                 have ? sname : "");
        mpq_plot_kv_data d = {title, metric, nrow, ncol, cnames, vals, have ? chosen : NULL,
                              have ? (const char *const *)head_pairs : NULL};
        st = mpq_plot_kv_svg(&d, svg, err);
    } else {
        snprintf(title, sizeof title, "sensitivity (%s) - job %s", metric, c->job.name);
        mpq_plot_heatmap_data d = {title, metric, nrow, ncol, rnames, cnames, vals};
        st = mpq_plot_heatmap_svg(&d, svg, err);
    }
done:
    mpq_db_table_free(t);
    free(cols);
    free(row_of);
    free(rnames);
    free(cnames);
    free(vals);
    free(chosen);
    free(cand);
    free(kvp);
    free(labels);
    free(head_pairs);
    return st;
}

mpq_status mpq_plot_job(mpq_db *db, const char *job, mpq_plot_kind what, const mpq_plot_opts *opts, char **svg,
                        mpq_err *err) {
    mpq_status st;
    ctx c = {0};
    mpq_plot_opts def = mpq_plot_opts_default();
    if (!opts) opts = &def;
    if (!db || !job || !svg) return mpq_err_set(err, MPQ_ERR_INVALID, "plot: NULL argument");
    *svg = NULL;
    c.db = db;
    mpq_job *jh = NULL; /* the stored job: row and layer table, no model file */
    if ((st = mpq_job_open(db, job, &jh, err)) != MPQ_OK) return st;
    c.job = *mpq_job_get_row(jh);
    mpq_job_close(jh);
    if ((st = mpq_db_layers_fetch(db, c.job.model_id, &c.L, &c.nL, err)) != MPQ_OK) return st;
    for (int i = 0; i < c.nL; i++)
        if (c.L[i].block + 1 > c.n_blocks) c.n_blocks = c.L[i].block + 1;
    char metric[MPQ_DB_NAME_MAX];
    const char *m = opts->metric ? opts->metric : "kl";
    switch (what) {
    case MPQ_PLOT_FRONTIER: st = frontier_plot(&c, opts, svg, err); break;
    case MPQ_PLOT_BITS: st = bits_plot(&c, opts, svg, err); break;
    case MPQ_PLOT_SENSITIVITY: st = grid_plot(&c, m, false, opts, svg, err); break;
    case MPQ_PLOT_KV:
        snprintf(metric, sizeof metric, "%s%s", strncmp(m, "kv_", 3) == 0 ? "" : "kv_", m);
        st = grid_plot(&c, metric, true, opts, svg, err);
        break;
    default: st = mpq_err_set(err, MPQ_ERR_INVALID, "plot: unknown kind %d", (int)what);
    }
    free(c.L);
    return st;
}
