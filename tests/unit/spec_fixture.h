/*
 * spec_fixture.h - job specs on the shared stories260K files, and the stored rows of the jobs
 * run from them, for the unit tests of the job stages (test_job*.c).
 *
 * Spec templates name the shared files by placeholders: @M the model, @T its tokenizer, @D the
 * calibration tokens, @X the calibration text.
 */
#ifndef MPQ_TEST_SPEC_FIXTURE_H
#define MPQ_TEST_SPEC_FIXTURE_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"
#include "test_util.h"

#define FIXTURE_MODEL "models/stories260K/stories260K.bin"
#define FIXTURE_TOK "models/stories260K/tok512.bin"
#define FIXTURE_CALIB "data/tinystories-calib.tok512.u16"
#define FIXTURE_CALIB_TXT "data/tinystories-calib.txt"

/* tmpl with @M @T @D @X replaced by the shared paths (malloc'd). */
static inline char *spec_fill(const char *tmpl) {
    size_t cap = strlen(tmpl) + 4 * 4096 + 1;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    size_t n = 0;
    for (const char *p = tmpl; *p; p++) {
        const char *rep = NULL;
        if (p[0] == '@' && p[1] == 'M') rep = shared_path(FIXTURE_MODEL);
        else if (p[0] == '@' && p[1] == 'T') rep = shared_path(FIXTURE_TOK);
        else if (p[0] == '@' && p[1] == 'D') rep = shared_path(FIXTURE_CALIB);
        else if (p[0] == '@' && p[1] == 'X') rep = shared_path(FIXTURE_CALIB_TXT);
        if (rep) {
            size_t l = strlen(rep);
            ck_assert_uint_lt(n + l, cap);
            memcpy(out + n, rep, l);
            n += l;
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return out;
}

/* mpq_job_spec_parse of the filled template (source "job.json"). */
static inline mpq_status spec_parse(const char *tmpl, mpq_job_spec **s, mpq_err *err) {
    char *j = spec_fill(tmpl);
    mpq_status st = mpq_job_spec_parse(j, "job.json", s, err);
    free(j);
    return st;
}

/* Opens (creating) dir/name. */
static inline mpq_db *fixture_open_db(const char *dir, const char *name) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mpq_db *db = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_open(p, MPQ_DB_CREATE, &db, &err) == MPQ_OK, "%s", err.msg);
    return db;
}

/* Every stored metric row (layer, candidate, metric, value and stderr printed exactly, n,
 * provenance) satisfying the SQL condition `where` ("1" = all), in a fixed order. */
static inline mpq_db_table *fixture_dump(mpq_db *db, const char *where) {
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT l.name, m.candidate, m.metric, printf('%%.17g', m.value), printf('%%.17g', m.stderr), m.n,"
             " m.provenance_json FROM metrics m LEFT JOIN layers l ON l.id = m.layer_id WHERE %s ORDER BY 1, 2, 3",
             where);
    mpq_db_table *t = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_db_query_table(db, sql, &t, &err) == MPQ_OK, "%s", err.msg);
    return t;
}

#endif /* MPQ_TEST_SPEC_FIXTURE_H */
