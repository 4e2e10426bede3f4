/* test_util.h - helpers shared by the unit tests: paths into ../shared and temp files. */
#ifndef MPQ_TEST_UTIL_H
#define MPQ_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Path of a file under the shared models/data folder: $MPQ_SHARED/rel (ctest sets
 * MPQ_SHARED to ../shared from the project root). Static buffer, one per call site slot. */
static inline const char *shared_path(const char *rel) {
    static char bufs[8][4096];
    static int slot = 0;
    const char *root = getenv("MPQ_SHARED");
    if (!root || !*root) root = "../shared";
    char *b = bufs[slot];
    slot = (slot + 1) % 8;
    size_t nr = strlen(root), nl = strlen(rel);
    if (nr + nl + 2 > sizeof bufs[0]) abort();
    memcpy(b, root, nr);
    b[nr] = '/';
    memcpy(b + nr + 1, rel, nl + 1);
    return b;
}

/* Makes a fresh temporary directory (mkdtemp) and returns its path in out. */
static inline void test_tmpdir(char *out, size_t n) {
    const char *t = getenv("TMPDIR");
    snprintf(out, n, "%s/mpqtest.XXXXXX", (t && *t) ? t : "/tmp");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        abort();
    }
}

/* Writes n bytes to path; returns 0 on success. */
static inline int test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* Reads a whole file into a malloc'd buffer; *n gets its size; NULL on failure. */
static inline void *test_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(sz > 0 ? (size_t)sz : 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) *n = (size_t)sz;
    return buf;
}

#endif
