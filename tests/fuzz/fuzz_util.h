/*
 * fuzz_util.h - helpers shared by the libFuzzer harnesses in tests/fuzz/: a private temporary
 * folder for inputs that the library reads by path, the shared models folder, and a
 * NUL-terminated copy of an input for the parsers of text.
 *
 * The harnesses are built only with -DMPQ_FUZZ=ON (clang, -fsanitize=fuzzer,address,undefined);
 * see tests/fuzz/run.sh and the README's "Fuzzing" part.
 */
#ifndef MPQ_FUZZ_UTIL_H
#define MPQ_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "mpq/mpq.h"

#ifndef MPQ_FUZZ_SHARED_DIR
#define MPQ_FUZZ_SHARED_DIR "../shared"
#endif

/* Aborts the harness on a setup failure (not a finding in the code under test). */
static inline void fuzz_die(const char *what, const mpq_err *err) {
    fprintf(stderr, "fuzz setup: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    abort();
}

/* MPQ_SHARED, else the folder given at build time. */
static inline const char *fuzz_shared_path(const char *rel) {
    static char buf[4096];
    const char *root = getenv("MPQ_SHARED");
    snprintf(buf, sizeof buf, "%s/%s", root && *root ? root : MPQ_FUZZ_SHARED_DIR, rel);
    return buf;
}

static char fuzz_dir[256];

static inline void fuzz_rm_dir(void) {
    char cmd[300];
    if (!fuzz_dir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir);
}

/* A private folder (in /dev/shm when there is one), removed at exit. */
static inline const char *fuzz_tmpdir(void) {
    if (!fuzz_dir[0]) {
        struct stat st;
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                               ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/mpq-fuzz-XXXXXX", base);
        if (!mkdtemp(fuzz_dir)) fuzz_die("mkdtemp", NULL);
        atexit(fuzz_rm_dir);
    }
    return fuzz_dir;
}

/* Writes data to <tmpdir>/name (replacing it) and returns the path (static buffer). */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) fuzz_die(path, NULL);
    if (size && fwrite(data, 1, size, f) != size) fuzz_die(path, NULL);
    if (fclose(f) != 0) fuzz_die(path, NULL);
    return path;
}

/* A malloc'd NUL-terminated copy of data (caller frees). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif /* MPQ_FUZZ_UTIL_H */
