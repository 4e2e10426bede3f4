/* sbuf.c - growable text buffer and file writing for the exporters, plots and report
 * (export_internal.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"

static bool sb_reserve(sbuf *b, size_t extra) {
    if (b->oom) return false;
    size_t need;
    if (!mpq_size_add(b->len, extra, &need) || !mpq_size_add(need, 1, &need)) {
        b->oom = true;
        return false;
    }
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > (size_t)-1 / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = true;
        return false;
    }
    b->s = s;
    b->cap = cap;
    return true;
}

void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if (!sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sb_puts(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (!sb_reserve(b, n)) return;
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

void sb_bytes(sbuf *b, const void *p, size_t n) {
    if (!sb_reserve(b, n)) return;
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void sb_xml(sbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': sb_puts(b, "&amp;"); break;
        case '<': sb_puts(b, "&lt;"); break;
        case '>': sb_puts(b, "&gt;"); break;
        case '"': sb_puts(b, "&quot;"); break;
        case '\'': sb_puts(b, "&apos;"); break;
        default: {
            char c[2] = {*s, 0};
            sb_puts(b, c);
        }
        }
    }
}

char *sb_take(sbuf *b) {
    if (b->oom) {
        sb_free(b);
        return NULL;
    }
    if (!b->s && !sb_reserve(b, 0)) return NULL;
    b->s[b->len] = '\0';
    char *s = b->s;
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

void sb_free(sbuf *b) {
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}

mpq_status export_write_file(const char *path, const char *text, mpq_err *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    size_t n = strlen(text);
    size_t w = fwrite(text, 1, n, f);
    int rc = fclose(f);
    if (w != n || rc != 0) return mpq_err_set(err, MPQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return MPQ_OK;
}
