/*
 * secmem: memory for private keys.
 *
 * Key bytes (the ecc_key of a CA, the DER/PEM of a workload key) live in
 * their own anonymous mapping that is mlock()ed so it is never swapped and
 * marked MADV_DONTDUMP so it stays out of core dumps.  mlock may fail under
 * a small RLIMIT_MEMLOCK; the memory is then still usable and
 * secmem_locked() says so.  secmem_free() zeroes before unmapping.
 */
#ifndef AMBIT_CERTS_SECMEM_H
#define AMBIT_CERTS_SECMEM_H

#include <stdbool.h>
#include <stddef.h>

/* Zeroed memory of at least size bytes, or NULL (errno set). */
void *secmem_alloc(size_t size);

/* Zero, unlock and unmap; NULL is a no-op. */
void secmem_free(void *p);

/* Whether p (from secmem_alloc) is locked in RAM. */
bool secmem_locked(const void *p);

#endif
