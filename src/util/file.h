/* file.h - internal: stdio form of mpq_file_open_regular (mpq.h), for the library's readers.
 * Public headers may not include <stdio.h>, hence this header. */
#ifndef MPQ_UTIL_FILE_H
#define MPQ_UTIL_FILE_H

#include <stdio.h>

#include "mpq/mpq.h"

/* mpq_file_open_regular, then fdopen(fd, "rb"): *out is a blocking stream on a regular file
 * that the caller fclose()s; NULL with MPQ_ERR_IO and a message naming path otherwise. */
mpq_status mpq_file_fopen_regular(const char *path, FILE **out, mpq_err *err);

#endif /* MPQ_UTIL_FILE_H */
