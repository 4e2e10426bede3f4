/* file.c - opening input files safely: only regular files are read. A FIFO, character device,
 * socket or directory given as a model, data, config or spec path is refused at once with a
 * message naming it, instead of blocking in open()/read() forever (FIFO) or reading without end
 * (/dev/zero). Reference: POSIX open(2) O_NONBLOCK on FIFOs, fstat(2) st_mode. */
#include "util/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_of(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO (named pipe)";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

mpq_status mpq_file_open_regular(const char *path, int *fd_out, mpq_err *err) {
    if (!fd_out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_file_open_regular: fd is NULL");
    *fd_out = -1;
    if (!path) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_file_open_regular: path is NULL");
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open for reading: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return mpq_err_set(err, MPQ_ERR_IO, "%s: is %s, not a regular file; refusing to read it", path,
                           kind_of(sb.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot clear O_NONBLOCK: %s", path, strerror(e));
    }
    *fd_out = fd;
    return MPQ_OK;
}

mpq_status mpq_file_fopen_regular(const char *path, FILE **out, mpq_err *err) {
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_file_fopen_regular: out is NULL");
    *out = NULL;
    int fd = -1;
    mpq_status st = mpq_file_open_regular(path, &fd, err);
    if (st != MPQ_OK) return st;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return mpq_err_set(err, MPQ_ERR_IO, "%s: fdopen: %s", path, strerror(e));
    }
    *out = f;
    return MPQ_OK;
}

mpq_status mpq_file_read_text(const char *path, size_t max, const char *what, char **buf_out, size_t *n_out,
                              mpq_err *err) {
    if (!buf_out || !n_out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_file_read_text: NULL argument");
    *buf_out = NULL;
    *n_out = 0;
    FILE *f = NULL;
    mpq_status st = mpq_file_fopen_regular(path, &f, err);
    if (st != MPQ_OK) return st;
    size_t cap = max < 4096 ? max + 1 : 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        if (n == cap) {
            if (n > max) { /* max + 1 bytes read */
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: larger than %zu bytes; not %s", path, max, what);
                break;
            }
            cap = cap * 2 <= max ? cap * 2 : max + 1;
            char *nb = realloc(buf, cap + 1);
            if (!nb) free(buf);
            buf = nb;
            continue;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) st = mpq_err_set(err, MPQ_ERR_IO, "%s: read error after %zu bytes", path, n);
            break;
        }
    }
    fclose(f);
    if (st != MPQ_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *buf_out = buf;
    *n_out = n;
    return MPQ_OK;
}
