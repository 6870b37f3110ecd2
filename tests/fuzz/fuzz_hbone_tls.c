/*
 * libFuzzer: arbitrary bytes into the TLS side of an HBONE connection
 * before any handshake: a server (what a port scanner, a plaintext client
 * or an attacker sends to 15008) or, when the first byte is odd, a client
 * that has just sent its ClientHello (what a rogue server answers).  The
 * identity is a real SVID issued once at start-up with certs/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "certs/ca.h"
#include "certs/svid.h"
#include "node-proxy/hbone.h"

static struct tls_identity *id;

static void init(void)
{
	struct tls_identity_config cfg = { 0 };
	struct spiffe_id sid = { .td = "cluster.local", .ns = "fuzz", .sa = "fuzz" };
	struct ca *root, *node;
	struct svid *s;
	struct x509_buf r;

	if (ca_create_root("cluster.local", 30, 0, &root, NULL) ||
	    ca_issue_node(root, "n1", 24, 0, &node, NULL) || svid_issue(node, &sid, 0, 0, &s, NULL))
		abort();
	r = ca_cert_der(root);
	cfg.chain = s->chain_der;
	cfg.chain_len = s->chain_der_len;
	cfg.key = s->key_der;
	cfg.key_len = s->key_der_len;
	cfg.roots = r.der;
	cfg.roots_len = r.len;
	if (tls_identity_new(&cfg, &id))
		abort();
	svid_free(s);
	ca_free(node);
	ca_free(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hbone_conn *c;
	size_t off = 1, k;
	int client;

	if (!id)
		init();
	if (size < 1)
		return 0;
	client = data[0] & 1;
	if (hbone_conn_new(client ? HBONE_CLIENT : HBONE_SERVER, id,
	                   "spiffe://cluster.local/ns/fuzz/sa/fuzz", NULL, NULL, NULL, &c))
		return 0;
	while (off < size) {
		k = 1 + data[off] % 200;
		if (k > size - off)
			k = size - off;
		hbone_conn_out_done(c, hbone_conn_out_len(c));
		if (hbone_conn_feed(c, data + off, k) < 0)
			break;
		off += k;
	}
	(void)hbone_conn_failure(c);
	hbone_conn_free(c);
	return 0;
}
