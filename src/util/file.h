/* file.h - internal: stdio form of mpq_file_open_regular (mpq.h), for the library's readers.
 * Public headers may not include <stdio.h>, hence this header. */
#ifndef MPQ_UTIL_FILE_H
#define MPQ_UTIL_FILE_H

#include <stdio.h>

#include "mpq/mpq.h"

/* mpq_file_open_regular, then fdopen(fd, "rb"): *out is a blocking stream on a regular file
 * that the caller fclose()s; NULL with MPQ_ERR_IO and a message naming path otherwise. */
mpq_status mpq_file_fopen_regular(const char *path, FILE **out, mpq_err *err);

/* Reads the regular file path whole as text: *buf_out (malloc'd, NUL-terminated after the
 * *n_out bytes read; the file may itself hold NUL bytes). A file longer than max bytes is
 * MPQ_ERR_FORMAT ("PATH: larger than MAX bytes; not WHAT"); MPQ_ERR_IO (open, read),
 * MPQ_ERR_NOMEM. Nothing is returned on error. max < SIZE_MAX. */
mpq_status mpq_file_read_text(const char *path, size_t max, const char *what, char **buf_out, size_t *n_out,
                              mpq_err *err);

#endif /* MPQ_UTIL_FILE_H */
