/*
 * export_db.c - loads a job's solution from the results database as an export plan
 * (mpq_export_plan_from_db in mpq_export.h). Uses only the public mpq_db API (no SQL here).
 * The job is opened as a stored job (mpq_job.h): the plan is built on its stored layer table
 * and carries its recorded model fingerprint, so no model file is needed.
 * Reference: include/mpq/mpq_db.h (solutions, reports), include/mpq/mpq_job.h (stored jobs).
 */
#include "mpq/mpq_export.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"
#include "mpq/mpq_job.h"

int export_table_col(const mpq_db_table *t, const char *name) {
    for (int c = 0; t && c < t->n_cols; c++)
        if (t->names[c] && strcmp(t->names[c], name) == 0) return c;
    return -1;
}

const char *export_table_cell(const mpq_db_table *t, int row, int col) {
    if (!t || col < 0 || row < 0 || row >= t->n_rows) return NULL;
    return t->cells[(size_t)row * (size_t)t->n_cols + (size_t)col];
}

/* Id of the newest solution of a job with a config and status optimal/feasible. */
static mpq_status latest_solution(mpq_db *db, const mpq_db_job *job, int64_t *id, mpq_err *err) {
    mpq_db_table *t = NULL;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)job->id);
    mpq_status st = mpq_db_report_table(db, MPQ_DB_REPORT_SOLUTIONS, key, &t, err);
    if (st != MPQ_OK) return st;
    int ci = export_table_col(t, "id"), cs = export_table_col(t, "status");
    *id = 0;
    for (int r = t->n_rows - 1; r >= 0 && *id == 0; r--) {
        const char *s = export_table_cell(t, r, cs), *i = export_table_cell(t, r, ci);
        if (!s || !i || (strcmp(s, "optimal") != 0 && strcmp(s, "feasible") != 0)) continue;
        int64_t cand = strtoll(i, NULL, 10);
        mpq_db_solution sol = {0};
        if (mpq_db_solution_get(db, cand, &sol, NULL, NULL, err) != MPQ_OK) continue;
        if (sol.config_json) *id = cand;
        mpq_db_solution_release(&sol);
    }
    mpq_db_table_free(t);
    if (*id == 0)
        return mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s': no optimal or feasible solution with a config "
                                                  "(run mpq solve first)", job->name);
    return MPQ_OK;
}

mpq_status export_find_solution(mpq_db *db, const mpq_db_job *job, const char *which, int64_t *id, mpq_err *err) {
    if (!which || !*which) return latest_solution(db, job, id, err);
    mpq_status st = mpq_db_solution_find(db, job->id, which, id, err);
    if (st != MPQ_ERR_NOTFOUND) return st;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(which, &end, 10);
    if (errno || *end || v <= 0)
        return mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s': no solution '%s'", job->name, which);
    mpq_db_solution sol = {0};
    st = mpq_db_solution_get(db, v, &sol, NULL, NULL, err);
    bool ok = st == MPQ_OK && sol.job_id == job->id;
    mpq_db_solution_release(&sol);
    if (!ok) return mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s': no solution '%s'", job->name, which);
    *id = v;
    return MPQ_OK;
}

mpq_status mpq_export_plan_from_db(mpq_db *db, const char *job, const char *which, const mpq_model *model,
                                   mpq_model **model_out, mpq_config **cfg_out, mpq_export_plan **plan_out,
                                   mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_job *jh = NULL;
    mpq_db_solution sol = {0};
    mpq_config *cfg = NULL;
    int64_t sid = 0;
    if (model_out) *model_out = NULL;
    if (!cfg_out || !plan_out) return mpq_err_set(err, MPQ_ERR_INVALID, "export: cfg_out or plan_out is NULL");
    *cfg_out = NULL;
    *plan_out = NULL;
    if (!db || !job) return mpq_err_set(err, MPQ_ERR_INVALID, "export: db or job is NULL");
    if ((st = mpq_job_open(db, job, &jh, err)) != MPQ_OK) goto done;
    const mpq_db_job *j = mpq_job_get_row(jh);
    if ((st = export_find_solution(db, j, which, &sid, err)) != MPQ_OK) goto done;
    if ((st = mpq_db_solution_get(db, sid, &sol, NULL, NULL, err)) != MPQ_OK) goto done;
    if (!sol.config_json) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s': solution '%s' has no stored config", j->name, sol.name);
        goto done;
    }
    if (!model) model = mpq_job_get_shape(jh);
    char src[300];
    snprintf(src, sizeof src, "job %s solution %s", j->name, sol.name);
    if ((st = mpq_config_parse(sol.config_json, src, model, &cfg, err)) != MPQ_OK) goto done;
    mpq_export_provenance prov = {
        .job_name = j->name, .job_id = j->id, .solution_name = sol.name, .solution_id = sol.id,
        .solver = sol.solver, .status = sol.status, .metric_expr = sol.metric_expr,
        .budgets_json = sol.budgets_json, .objective = sol.objective, .created_at = sol.created_at,
        .model_sha256 = mpq_job_get_model_row(jh)->sha256};
    if ((st = mpq_export_plan_build(model, cfg, &prov, plan_out, err)) != MPQ_OK) goto done;
    if (model_out && model == mpq_job_get_shape(jh) && (st = mpq_model_shape_copy(model, model_out, err)) != MPQ_OK) {
        mpq_export_plan_free(*plan_out);
        *plan_out = NULL;
        goto done;
    }
    *cfg_out = cfg;
    cfg = NULL;
done:
    mpq_config_free(cfg);
    mpq_db_solution_release(&sol);
    mpq_job_close(jh);
    return st;
}
