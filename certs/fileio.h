/*
 * fileio: reading and atomically writing the small files of the PKI.
 *
 * Writes go to a temporary file in the same directory with the final mode,
 * are fsync()ed, renamed over the target and the directory is fsync()ed, so
 * a crash leaves either the old or the new file, never a torn key.
 */
#ifndef AMBIT_CERTS_FILEIO_H
#define AMBIT_CERTS_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "certs/err.h"

/* Read all of path (at most max bytes) into a new buffer with one extra NUL
 * byte.  The caller releases it with certs_file_free().  Returns 0 or
 * -errno (-EFBIG when larger than max). */
int certs_read_file(const char *path, size_t max, uint8_t **buf, size_t *len,
                    struct certs_err *err);

/* Zero and free a buffer from certs_read_file() (it may have held a key). */
void certs_file_free(uint8_t *buf, size_t len);

/* Atomically replace path with buf[0..len) and the given mode. */
int certs_write_file(const char *path, const void *buf, size_t len, mode_t mode,
                     struct certs_err *err);

#endif
