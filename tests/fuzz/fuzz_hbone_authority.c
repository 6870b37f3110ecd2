/*
 * libFuzzer: the HBONE server's view of a CONNECT request.  The first byte
 * picks the target: even -> hbone_parse_authority on the rest; odd -> the
 * rest split at NUL bytes into name/value pairs for hbone_validate_request.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node-proxy/hbone.h"

#define MAXNV 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hbone_nv nv[MAXNV];
	struct hbone_request req;
	struct sockaddr_storage ss;
	socklen_t sl;
	char *copy, *p, *end;
	size_t n = 0;

	if (size < 1)
		return 0;
	if ((data[0] & 1) == 0) {
		/* Exact length, no NUL terminator: catches reads past the end. */
		char *a = malloc(size - 1 ? size - 1 : 1);
		if (!a)
			return 0;
		memcpy(a, data + 1, size - 1);
		if (hbone_parse_authority(a, size - 1, &ss, &sl) == 0 && ss.ss_family != AF_INET &&
		    ss.ss_family != AF_INET6)
			abort();
		free(a);
		return 0;
	}
	copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	copy[size - 1] = '\0';
	p = copy;
	end = copy + size - 1;
	while (p < end && n < MAXNV) {
		char *name = p, *value;
		p += strlen(p) + 1;
		if (p > end)
			break;
		value = p;
		p += strlen(p) + 1;
		nv[n++] = (struct hbone_nv){ name, strlen(name), value, strlen(value) };
		if (p > end)
			break;
	}
	if (hbone_validate_request(nv, n, &req) == 0 &&
	    (!req.authority || (req.dst.ss_family != AF_INET && req.dst.ss_family != AF_INET6)))
		abort();
	free(copy);
	return 0;
}
