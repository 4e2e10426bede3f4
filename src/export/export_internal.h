/* export_internal.h - private helpers of src/export: a growable text buffer (sbuf) used by
 * the exporters, the SVG writer and the report, small string utilities and result-table
 * lookups shared by the exporters, plots and report. */
#ifndef MPQ_EXPORT_INTERNAL_H
#define MPQ_EXPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_export.h"

typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom; /* sticky: an append failed */
} sbuf;

/* printf-append; on failure sets b->oom and leaves the text as it was. */
void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void sb_puts(sbuf *b, const char *s);
/* Appends n raw bytes (binary files; the buffer stays NUL-terminated after them). */
void sb_bytes(sbuf *b, const void *p, size_t n);
/* Appends s with XML escapes (& < > " '). */
void sb_xml(sbuf *b, const char *s);
/* Hands the text over (NULL if an append failed; "" when empty); the buffer is reset. */
char *sb_take(sbuf *b);
void sb_free(sbuf *b);

char *export_strdup(const char *s);

/* Appends s with the regex metacharacters . ^ $ | ( ) [ ] { } * + ? \ escaped. */
void export_regex_escape(sbuf *b, const char *s);

/* targets.c: KV-engine flags and Python quantizer configs (mpq_export_render). */
mpq_status export_render_kv_engine(const mpq_export_plan *p, mpq_kv_engine engine, const mpq_export_opts *o,
                                   char **text, char **notes, mpq_err *err);
mpq_status export_render_pyquant(const mpq_export_plan *p, mpq_export_format format, const mpq_export_opts *o,
                                 char **text, char **notes, mpq_err *err); /* NULL if out of memory */

/* Writes text to path (MPQ_ERR_IO naming path). */
mpq_status export_write_file(const char *path, const char *text, mpq_err *err);

/* Column index of a result table by name (-1 if none); cell text (NULL for NULL / out of range). */
int export_table_col(const mpq_db_table *t, const char *name);
const char *export_table_cell(const mpq_db_table *t, int row, int col);
/* A job's solution id: which NULL/"" = newest optimal/feasible with a config; else name or id. */
mpq_status export_find_solution(mpq_db *db, const mpq_db_job *job, const char *which, int64_t *id, mpq_err *err);

#endif
