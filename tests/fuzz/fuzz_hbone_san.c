/*
 * libFuzzer: the peer-certificate identity check of node-proxy/tls.c on
 * arbitrary DER (wolfSSL's certificate parser underneath, then our SPIFFE
 * syntax check).  Whatever comes back as an ID must satisfy the syntax the
 * check promises.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node-proxy/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[2049];
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	memcpy(copy, data, size); /* exact length: reads past it are caught */
	if (tls_spiffe_id_from_der(copy, size, id, sizeof(id)) == 0) {
		size_t n = strlen(id);
		if (n <= 9 || memcmp(id, "spiffe://", 9) != 0 || id[n - 1] == '/' ||
		    strstr(id, "//") != id + 7 || strchr(id, '?') || strchr(id, '#'))
			abort();
	}
	free(copy);
	return 0;
}
