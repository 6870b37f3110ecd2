/* secmem: locked, undumpable memory for keys; see secmem.h. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "certs/secmem.h"

/* Kept at the start of the mapping; the caller gets what follows. */
struct secmem_hdr {
	size_t map_len;
	bool locked;
	/* Keeps the user area 16-byte aligned for wolfSSL's structures. */
	uint8_t pad[16 - sizeof(size_t) - sizeof(bool)];
};

void *secmem_alloc(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len;
	struct secmem_hdr *h;

	if (size > (SIZE_MAX / 2)) {
		errno = ENOMEM;
		return NULL;
	}
	len = (size + sizeof(*h) + page - 1) / page * page;
	h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h == MAP_FAILED)
		return NULL;
	(void)madvise(h, len, MADV_DONTDUMP);
	h->map_len = len;
	h->locked = mlock(h, len) == 0;
	return h + 1;
}

void secmem_free(void *p)
{
	struct secmem_hdr *h;
	size_t len;

	if (!p)
		return;
	h = (struct secmem_hdr *)p - 1;
	len = h->map_len;
	explicit_bzero(h, len);
	if (h->locked)
		(void)munlock(h, len);
	(void)munmap(h, len);
}

bool secmem_locked(const void *p)
{
	return p && ((const struct secmem_hdr *)p - 1)->locked;
}
