/* file.c - opening input files safely: only regular files are read. A FIFO, character device,
 * socket or directory given as a model, data, config or spec path is refused at once with a
 * message naming it, instead of blocking in open()/read() forever (FIFO) or reading without end
 * (/dev/zero). Reference: POSIX open(2) O_NONBLOCK on FIFOs, fstat(2) st_mode. */
#include "util/file.h"

#include <errno.h>
#include <fcntl.h>
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
