/* libFuzzer harness for the certificate-facing parsers of certs/x509.c:
 * every input goes through x509_parse (DER), x509_load_certs (PEM/DER
 * splitting) and spiffe_id_parse; whatever parses is fed on to the SVID
 * and name-constraint checks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "certs/x509.h"

static void check_cert(const struct x509_cert *c)
{
	struct spiffe_id id;
	size_t i, j;

	(void)x509_svid_id(c, "cluster.local", &id, NULL);
	for (i = 0; i < c->n_uris; i++)
		for (j = 0; j < c->n_nc_permitted_uri; j++)
			(void)x509_uri_in_subtree(c->uris[i], c->nc_permitted_uri[j]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct x509_cert cert;
	struct x509_buf bufs[X509_CHAIN_MAX];
	struct certs_err err;
	struct spiffe_id id;
	uint8_t *store = NULL;
	const char *why;
	char buf[SPIFFE_ID_MAX + 1];
	int n, i;

	if (x509_parse(data, size, &cert, &err) == 0)
		check_cert(&cert);
	n = x509_load_certs(data, size, bufs, X509_CHAIN_MAX, &store, &err);
	for (i = 0; i < n; i++)
		if (x509_parse(bufs[i].der, bufs[i].len, &cert, &err) == 0)
			check_cert(&cert);
	if (n >= 2)
		(void)x509_verify_chain(bufs, 1, &bufs[n - 1], 1, &err);
	free(store);
	if (spiffe_id_parse((const char *)data, size, &id, &why) == 0) {
		/* What parses must format back to the same bytes. */
		n = spiffe_id_format(&id, buf, sizeof(buf));
		if (n < 0 || (size_t)n != size || memcmp(buf, data, size) != 0)
			abort();
	}
	if (size > 0 && size < 300) {
		char uri[300];

		memcpy(uri, data, size);
		uri[size] = '\0';
		(void)x509_uri_in_subtree(uri, "cluster.local");
		(void)x509_uri_in_subtree(uri, ".cluster.local");
	}
	return 0;
}
