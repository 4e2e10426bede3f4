/*
 * report.c - `mpq report` (mpq_report_write in mpq_export.h): a Markdown report of a job
 * from the results database - model, data, provenance, the most sensitive layers, the
 * Pareto frontier, solutions with predicted and measured quality, uniform baselines - with
 * the SVG plots of mpq_plot.h written beside it and linked. Markdown as in CommonMark with
 * GitHub pipe tables. Uses only the public mpq_db API.
 */
#include "mpq/mpq_export.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export/export_internal.h"
#include "export/plot_internal.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_plot.h"

mpq_report_opts mpq_report_opts_default(void) {
    mpq_report_opts o = {NULL, NULL, 10, "kl"};
    return o;
}

static void md_cell(sbuf *b, const char *s) {
    for (; s && *s; s++) {
        if (*s == '|') sb_puts(b, "\\|");
        else if (*s == '\n') sb_puts(b, " ");
        else {
            char c[2] = {*s, 0};
            sb_puts(b, c);
        }
    }
}

static void num(sbuf *b, double v, const char *fmt) {
    if (isfinite(v)) sb_printf(b, fmt, v);
    else sb_puts(b, "-");
}

typedef struct sens_row {
    int layer;
    double key;
} sens_row;

static int cmp_sens(const void *a, const void *b) {
    double x = ((const sens_row *)a)->key, y = ((const sens_row *)b)->key;
    if (x != y) return x > y ? -1 : 1;
    return ((const sens_row *)a)->layer - ((const sens_row *)b)->layer;
}

/* Top sensitive layers: the metric at every candidate, ranked by the value at the cheapest
 * candidate measured (the one a tight budget would pick). */
static mpq_status section_sensitive(sbuf *b, mpq_db *db, const mpq_db_job *j, const mpq_db_layer *L, int nL,
                                    const mpq_report_opts *o, mpq_err *err) {
    char key[32];
    mpq_db_table *t = NULL;
    char **cands = NULL;
    int nc = 0;
    double *vals = NULL;
    sens_row *rows = NULL;
    snprintf(key, sizeof key, "%lld", (long long)j->id);
    mpq_status st = mpq_db_metric_candidates(db, j->id, o->metric, &cands, &nc, err);
    if (st != MPQ_OK) goto done;
    sb_printf(b, "\n## Most sensitive layers (%s)\n\n", o->metric);
    int nlin = 0;
    for (int i = 0; i < nL; i++) nlin += strcmp(L[i].kind, "kv_cache") != 0;
    if (nc == 0 || nlin == 0) {
        sb_printf(b, "No '%s' measurements in this job.\n", o->metric);
        goto done;
    }
    /* order candidates by bits, cheapest first */
    double *cb = mpq_calloc((size_t)nc, sizeof *cb);
    if (!cb) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "report: out of memory");
        goto done;
    }
    for (int c = 0; c < nc; c++) {
        mpq_candidate cd;
        cb[c] = mpq_candidate_parse(cands[c], &cd, NULL) == MPQ_OK ? mpq_candidate_bits(&cd, 4096) : 99;
    }
    for (int a = 0; a < nc; a++)
        for (int c = a + 1; c < nc; c++)
            if (cb[c] < cb[a]) {
                double tb = cb[a];
                cb[a] = cb[c], cb[c] = tb;
                char *ts = cands[a];
                cands[a] = cands[c], cands[c] = ts;
            }
    free(cb);
    vals = mpq_calloc((size_t)nL * (size_t)nc, sizeof *vals);
    rows = mpq_calloc((size_t)nL, sizeof *rows);
    int64_t *ids = mpq_calloc((size_t)nL, sizeof *ids);
    if (!vals || !rows || !ids) {
        free(ids);
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "report: out of memory");
        goto done;
    }
    for (int i = 0; i < nL; i++) ids[i] = L[i].id;
    for (int c = 0; c < nc; c++) {
        double *col = mpq_calloc((size_t)nL, sizeof *col);
        if (!col) {
            free(ids);
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "report: out of memory");
            goto done;
        }
        st = mpq_db_metric_fetch(db, j->id, o->metric, cands[c], nL, ids, col, NULL, NULL, err);
        for (int i = 0; i < nL; i++) vals[(size_t)i * (size_t)nc + (size_t)c] = col[i];
        free(col);
        if (st != MPQ_OK) {
            free(ids);
            goto done;
        }
    }
    free(ids);
    int nr = 0;
    for (int i = 0; i < nL; i++) {
        if (strcmp(L[i].kind, "kv_cache") == 0) continue;
        double k = NAN;
        for (int c = 0; c < nc && !isfinite(k); c++) k = vals[(size_t)i * (size_t)nc + (size_t)c];
        if (!isfinite(k)) continue;
        rows[nr++] = (sens_row){i, k};
    }
    qsort(rows, (size_t)nr, sizeof *rows, cmp_sens);
    sb_printf(b, "Ranked by %s at the cheapest candidate; all %d linear layers are in the heat map.\n\n| rank | layer "
                 "| kind |", o->metric, nr);
    for (int c = 0; c < nc; c++) sb_printf(b, " %s |", cands[c]);
    sb_puts(b, "\n|---:|---|---|");
    for (int c = 0; c < nc; c++) sb_puts(b, "---:|");
    sb_puts(b, "\n");
    for (int r = 0; r < nr && r < o->top_layers; r++) {
        const mpq_db_layer *l = &L[rows[r].layer];
        sb_printf(b, "| %d | %s | %s |", r + 1, l->name, l->kind);
        for (int c = 0; c < nc; c++) {
            sb_puts(b, " ");
            num(b, vals[(size_t)rows[r].layer * (size_t)nc + (size_t)c], "%.4g");
            sb_puts(b, " |");
        }
        sb_puts(b, "\n");
    }
done:
    mpq_db_strings_free(cands, nc);
    mpq_db_table_free(t);
    free(vals);
    free(rows);
    return st;
}

/* The KV pair of every block of each solution that has KV assignment rows; a block with
 * per-KV-head pairs shows them in head order (stored joined by ",", or for solutions stored
 * before that, read from the config's "heads"). */
static mpq_status section_kv(sbuf *b, mpq_db *db, const mpq_db_table *sol, mpq_err *err) {
    bool header = false;
    for (int r = 0; r < sol->n_rows; r++) {
        int64_t sid = strtoll(export_table_cell(sol, r, 0), NULL, 10);
        mpq_db_solution s = {0};
        mpq_db_assignment *as = NULL;
        int n_as = 0, n_kv = 0;
        mpq_status st = mpq_db_solution_get(db, sid, &s, &as, &n_as, err);
        if (st != MPQ_OK) return st;
        for (int i = 0; i < n_as; i++) {
            int blk = -1;
            char hp[MPQ_DB_KV_PAIR_MAX];
            const char *pair = as[i].kv_pair;
            bool kv_row = sscanf(as[i].layer_name, "blk.%d.kv", &blk) == 1 && strstr(as[i].layer_name, ".kv");
            if (!kv_row) continue;
            if (!pair[0] && plot_config_kv_heads(s.config_json, blk, hp, sizeof hp)) pair = hp;
            if (!pair[0]) continue;
            if (!header) {
                sb_puts(b, "\n## KV pairs per block\n\nA block whose KV heads have different pairs lists them in "
                           "head order (h0,h1,...).\n\n| solution | block | KV pair |\n|---|---|---|\n");
                header = true;
            }
            sb_puts(b, "| ");
            md_cell(b, n_kv++ == 0 ? s.name : "");
            sb_printf(b, " | %s | ", as[i].layer_name);
            md_cell(b, pair);
            sb_printf(b, "%s |\n", strchr(pair, ',') ? " (per KV head)" : "");
        }
        free(as);
        mpq_db_solution_release(&s);
    }
    return MPQ_OK;
}

static mpq_status write_plot(mpq_db *db, const char *job, mpq_plot_kind k, const mpq_report_opts *o, sbuf *b,
                             mpq_err *err) {
    char *svg = NULL, path[4096];
    mpq_err e2 = {0};
    mpq_plot_opts po = mpq_plot_opts_default();
    po.metric = k == MPQ_PLOT_SENSITIVITY ? o->metric : NULL;
    const char *name = mpq_plot_kind_name(k);
    mpq_status st = mpq_plot_job(db, job, k, &po, &svg, &e2);
    if (st == MPQ_ERR_NOTFOUND || st == MPQ_ERR_INVALID) {
        sb_printf(b, "\n*%s plot: not drawn (%s).*\n", name, e2.msg);
        return MPQ_OK;
    }
    if (st != MPQ_OK) {
        *err = e2;
        return st;
    }
    snprintf(path, sizeof path, "%s/%s.svg", o->plots_dir, name);
    st = export_write_file(path, svg, err);
    free(svg);
    if (st != MPQ_OK) return st;
    sb_printf(b, "\n![%s](%s/%s.svg)\n", name, o->plots_rel ? o->plots_rel : o->plots_dir, name);
    return MPQ_OK;
}

mpq_status mpq_report_write(mpq_db *db, const char *job, const mpq_report_opts *opts, const char *path,
                            mpq_err *err) {
    mpq_status st;
    mpq_report_opts def = mpq_report_opts_default();
    if (!opts) opts = &def;
    mpq_report_opts o = *opts;
    if (!o.metric) o.metric = "kl";
    if (o.top_layers <= 0) o.top_layers = 10;
    mpq_job *jh = NULL;
    mpq_db_layer *L = NULL;
    int nL = 0, ne = 0, np = 0;
    char *text = NULL;
    mpq_db_table *sol = NULL, *prog = NULL, *skip = NULL;
    mpq_db_evaluation *ev = NULL;
    mpq_db_frontier_point *pts = NULL;
    mpq_candidate *cand = NULL;
    sbuf b = {0};
    char key[32];
    if (!db || !job || !path) return mpq_err_set(err, MPQ_ERR_INVALID, "report: NULL argument");
    if ((st = mpq_job_open(db, job, &jh, err)) != MPQ_OK) return st;
    const mpq_db_job j = *mpq_job_get_row(jh);
    const mpq_job_spec *spec = mpq_job_get_spec(jh);
    snprintf(key, sizeof key, "%lld", (long long)j.id);
    if ((st = mpq_db_layers_fetch(db, j.model_id, &L, &nL, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_SOLUTIONS, key, &sol, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_PROGRESS, key, &prog, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_evaluations_fetch(db, j.id, &ev, &ne, err)) != MPQ_OK) goto done;
    cand = mpq_calloc((size_t)(nL > 0 ? nL : 1), sizeof *cand);
    if (!cand) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "report: out of memory");
        goto done;
    }

    sb_printf(&b, "# mpq report: job %s\n\n", j.name);
    if (spec->description) sb_printf(&b, "%s\n\n", spec->description);
    sb_puts(&b, "## Model and data\n\n| | |\n|---|---|\n");
    sb_printf(&b, "| model | `%s` (sha256 `%.16s...`) |\n", spec->model, mpq_job_get_model_row(jh)->sha256);
    int64_t nlin = 0, nparams = 0, nblocks = 0;
    for (int i = 0; i < nL; i++)
        if (strcmp(L[i].kind, "kv_cache") != 0) nlin++, nparams += L[i].n_params;
        else nblocks++;
    sb_printf(&b, "| linear layers | %lld (%lld weights) |\n", (long long)nlin, (long long)nparams);
    if (nblocks) sb_printf(&b, "| KV caches measured | %lld blocks |\n", (long long)nblocks);
    static const char *const secs[2] = {"calibration", "evaluation"};
    for (int s = 0; s < 2; s++) {
        const mpq_job_data_spec *c = s == 0 ? &spec->calib : &spec->eval;
        if (!c->data) continue;
        sb_printf(&b, "| %s data | `%s`: %d windows x %d tokens, seed %lld |\n", secs[s], c->data, c->n_seqs,
                  c->seq_len, (long long)c->seed);
    }
    if (spec->n_candidates > 0) {
        sb_puts(&b, "| candidates |");
        for (int c = 0; c < spec->n_candidates; c++) sb_printf(&b, " %s", spec->candidates[c]);
        sb_puts(&b, " |\n");
    }

    sb_puts(&b, "\n## Provenance\n\n| | |\n|---|---|\n");
    sb_printf(&b, "| job | %s (id %lld), status %s |\n", j.name, (long long)j.id, mpq_db_job_status_name(j.status));
    sb_printf(&b, "| created / finished | %s / %s |\n", j.created_at, j.finished_at[0] ? j.finished_at : "-");
    sb_printf(&b, "| seed | %lld |\n| spec sha256 | `%s` |\n| mpq version | %s (report by %s) |\n", (long long)j.seed,
              j.spec_sha256, j.mpq_version, mpq_version());
    for (int r = 0; r < prog->n_rows; r++)
        sb_printf(&b, "| stage %s | %s/%s units done, %s failed |\n", export_table_cell(prog, r, 0),
                  export_table_cell(prog, r, 1), export_table_cell(prog, r, 2), export_table_cell(prog, r, 3));

    /* (layer, candidate) pairs stored as not available (a SAQ rate not achievable there) */
    if ((st = mpq_db_report_table(db, MPQ_DB_REPORT_UNAVAILABLE, key, &skip, err)) != MPQ_OK) goto done;
    if (skip->n_rows > 0) {
        sb_printf(&b, "\n## Candidates not available on some layers\n\n%d (layer, candidate) pairs were skipped: no "
                      "measurement is stored for them and no solution uses them.\n\n| layer | candidate | reason |\n"
                      "|---|---|---|\n", skip->n_rows);
        for (int r = 0; r < skip->n_rows; r++) {
            sb_puts(&b, "| ");
            md_cell(&b, export_table_cell(skip, r, 0));
            sb_puts(&b, " | ");
            md_cell(&b, export_table_cell(skip, r, 1));
            sb_puts(&b, " | ");
            md_cell(&b, export_table_cell(skip, r, 2));
            sb_puts(&b, " |\n");
        }
    }

    if ((st = section_sensitive(&b, db, &j, L, nL, &o, err)) != MPQ_OK) goto done;

    /* frontier */
    sb_puts(&b, "\n## Pareto frontier\n\n");
    int64_t fid = 0;
    mpq_status fs = mpq_db_frontier_latest(db, j.id, NULL, NULL, &fid, err);
    if (fs == MPQ_ERR_NOTFOUND) sb_puts(&b, "No frontier stored (run `mpq pareto`).\n");
    else if (fs != MPQ_OK) {
        st = fs;
        goto done;
    } else {
        if ((st = mpq_db_frontier_points(db, fid, &pts, &np, err)) != MPQ_OK) goto done;
        int step = np > 25 ? (np + 24) / 25 : 1;
        sb_printf(&b, "%d points%s.\n\n| # | cost | predicted loss | solution |\n|---:|---:|---:|---|\n", np,
                  step > 1 ? " (every few shown, plus those with a stored solution)" : "");
        for (int i = 0; i < np; i++) {
            if (i % step != 0 && i != np - 1 && pts[i].solution_id == 0) continue;
            const char *sn = "";
            for (int r = 0; r < sol->n_rows && pts[i].solution_id; r++)
                if (strtoll(export_table_cell(sol, r, 0), NULL, 10) == pts[i].solution_id)
                    sn = export_table_cell(sol, r, 1);
            sb_printf(&b, "| %d | %.4f | %.6g | %s |\n", i, pts[i].cost, pts[i].loss, sn ? sn : "");
        }
    }

    /* solutions with predicted and measured quality */
    sb_puts(&b, "\n## Solutions: predicted vs measured\n\n");
    if (sol->n_rows == 0) sb_puts(&b, "No solutions stored (run `mpq solve` or `mpq pareto`).\n");
    else
        sb_puts(&b, "| solution | solver | status | metric | budgets | avg bits | predicted | measured KL | +- se | ppl "
                    "| top-1 |\n|---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (int r = 0; r < sol->n_rows; r++) {
        int64_t sid = strtoll(export_table_cell(sol, r, 0), NULL, 10);
        mpq_db_solution s = {0};
        double bits = NAN;
        if ((st = mpq_db_solution_get(db, sid, &s, NULL, NULL, err)) != MPQ_OK) goto done;
        if (s.config_json && plot_config_read(s.config_json, s.name, L, nL, cand, 0, NULL, NULL, NULL) == MPQ_OK)
            bits = plot_avg_bits(L, nL, cand);
        const mpq_db_evaluation *e = NULL;
        for (int i = 0; i < ne; i++)
            if (ev[i].solution_id == sid) e = &ev[i];
        sb_puts(&b, "| ");
        md_cell(&b, s.name);
        sb_printf(&b, " | %s | %s | ", s.solver, s.status);
        md_cell(&b, s.metric_expr ? s.metric_expr : "");
        sb_puts(&b, " | ");
        md_cell(&b, s.budgets_json ? s.budgets_json : "");
        sb_puts(&b, " | ");
        num(&b, bits, "%.4f");
        sb_puts(&b, " | ");
        num(&b, s.objective, "%.6g");
        sb_puts(&b, " | ");
        num(&b, e ? e->kl : NAN, "%.6g");
        sb_puts(&b, " | ");
        num(&b, e ? e->kl_stderr : NAN, "%.2g");
        sb_puts(&b, " | ");
        num(&b, e ? e->ppl : NAN, "%.4f");
        sb_puts(&b, " | ");
        num(&b, e ? e->top1 : NAN, "%.4f");
        sb_puts(&b, " |\n");
        mpq_db_solution_release(&s);
    }

    if ((st = section_kv(&b, db, sol, err)) != MPQ_OK) goto done;

    /* uniform baselines: evaluations whose config has one candidate everywhere */
    sb_puts(&b, "\n## Uniform baselines\n\n");
    int nu = 0;
    for (int i = 0; i < ne; i++) {
        bool uniform = false;
        if (!ev[i].config_json || ev[i].solution_id > 0 ||
            plot_config_read(ev[i].config_json, "evaluation", L, nL, cand, 0, NULL, &uniform, NULL) != MPQ_OK ||
            !uniform)
            continue;
        if (nu++ == 0)
            sb_puts(&b, "| config | avg bits | measured KL | +- se | ppl | top-1 |\n|---|---:|---:|---:|---:|---:|\n");
        sb_printf(&b, "| %s | ", nL > 0 ? cand[0].name : "?");
        num(&b, plot_avg_bits(L, nL, cand), "%.4f");
        sb_puts(&b, " | ");
        num(&b, ev[i].kl, "%.6g");
        sb_puts(&b, " | ");
        num(&b, ev[i].kl_stderr, "%.2g");
        sb_puts(&b, " | ");
        num(&b, ev[i].ppl, "%.4f");
        sb_puts(&b, " | ");
        num(&b, ev[i].top1, "%.4f");
        sb_puts(&b, " |\n");
    }
    if (nu == 0) sb_puts(&b, "No uniform configurations evaluated (run `mpq evaluate JOB --all`).\n");

    if (o.plots_dir) {
        sb_puts(&b, "\n## Plots\n");
        if (mkdir(o.plots_dir, 0755) != 0 && errno != EEXIST) {
            st = mpq_err_set(err, MPQ_ERR_IO, "%s: cannot create: %s", o.plots_dir, strerror(errno));
            goto done;
        }
        for (int k = 0; k < 4; k++)
            if ((st = write_plot(db, job, (mpq_plot_kind)k, &o, &b, err)) != MPQ_OK) goto done;
    }
    text = sb_take(&b);
    if (!text) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "report: out of memory");
        goto done;
    }
    st = export_write_file(path, text, err);
done:
    sb_free(&b);
    free(text);
    free(L);
    mpq_job_close(jh);
    mpq_db_table_free(sol);
    mpq_db_table_free(prog);
    mpq_db_table_free(skip);
    for (int i = 0; ev && i < ne; i++) free(ev[i].config_json);
    free(ev);
    free(pts);
    free(cand);
    return st;
}
