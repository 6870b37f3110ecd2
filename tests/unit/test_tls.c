/*
 * TLS half of HBONE: identities and handshakes, accepted and refused with
 * the right reason.  Odd peers (TLS 1.2, no certificate, wrong ALPN,
 * plaintext) are raw wolfSSL endpoints over memory buffers.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/hash.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "node-proxy/hbone.h"
#include "node-proxy/tls.h"

#include "tests/unit/test_hbone_util.c"

static int setup(void **state)
{
	(void)state;
	return pki_make();
}

static int teardown(void **state)
{
	(void)state;
	pki_remove();
	return 0;
}

/* ---- raw wolfSSL peer --------------------------------------------------- */

struct raw {
	WOLFSSL_CTX *ctx;
	WOLFSSL *ssl;
	uint8_t in[1 << 16];
	size_t in_len, in_off;
	uint8_t out[1 << 16];
	size_t out_len;
	int ret;
};

static int raw_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct raw *r = arg;
	size_t n = r->in_len - r->in_off;
	(void)ssl;
	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (n > (size_t)sz)
		n = sz;
	memcpy(buf, r->in + r->in_off, n);
	r->in_off += n;
	return (int)n;
}

static int raw_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct raw *r = arg;
	(void)ssl;
	if (r->out_len + sz > sizeof(r->out))
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	memcpy(r->out + r->out_len, buf, sz);
	r->out_len += sz;
	return sz;
}

/* A raw client: @tls12 for a TLS 1.2-only client, @leaf NULL for none,
 * @alpn NULL for no ALPN extension. */
static struct raw *raw_client(int tls12, const char *leaf, const char *alpn)
{
	struct raw *r = calloc(1, sizeof(*r));
	char n[64];
	uint8_t *b;
	size_t len;

	assert_non_null(r);
	r->ctx = wolfSSL_CTX_new(tls12 ? wolfTLSv1_2_client_method() : wolfTLSv1_3_client_method());
	assert_non_null(r->ctx);
	b = pki_read("root.pem", &len);
	assert_int_equal(wolfSSL_CTX_load_verify_buffer(r->ctx, b, len, WOLFSSL_FILETYPE_PEM),
	                 WOLFSSL_SUCCESS);
	free(b);
	if (leaf) {
		snprintf(n, sizeof(n), "%s.pem", leaf);
		b = pki_read(n, &len);
		assert_int_equal(wolfSSL_CTX_use_certificate_chain_buffer(r->ctx, b, len),
		                 WOLFSSL_SUCCESS);
		free(b);
		snprintf(n, sizeof(n), "%s.key", leaf);
		b = pki_read(n, &len);
		assert_int_equal(
		    wolfSSL_CTX_use_PrivateKey_buffer(r->ctx, b, len, WOLFSSL_FILETYPE_PEM),
		    WOLFSSL_SUCCESS);
		free(b);
	}
	wolfSSL_CTX_set_verify(r->ctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_SetIORecv(r->ctx, raw_recv);
	wolfSSL_CTX_SetIOSend(r->ctx, raw_send);
	r->ssl = wolfSSL_new(r->ctx);
	assert_non_null(r->ssl);
	if (alpn)
		assert_int_equal(wolfSSL_UseALPN(r->ssl, (char *)alpn, strlen(alpn),
		                                 WOLFSSL_ALPN_CONTINUE_ON_MISMATCH),
		                 WOLFSSL_SUCCESS);
	wolfSSL_SetIOReadCtx(r->ssl, r);
	wolfSSL_SetIOWriteCtx(r->ssl, r);
	return r;
}

static void raw_free(struct raw *r)
{
	wolfSSL_free(r->ssl);
	wolfSSL_CTX_free(r->ctx);
	free(r);
}

/* Run a raw client against an hbone server until nothing moves. */
static void raw_vs_server(struct raw *r, struct side *srv)
{
	struct iovec iov[2];
	int guard = 0, n, i;
	size_t moved;

	do {
		moved = 0;
		r->ret = wolfSSL_connect(r->ssl);
		if (r->out_len) {
			hbone_conn_feed(srv->c, r->out, r->out_len);
			moved += r->out_len;
			r->out_len = 0;
		}
		n = hbone_conn_pending_out(srv->c, iov);
		for (i = 0; i < n; i++) {
			if (r->in_off == r->in_len)
				r->in_off = r->in_len = 0;
			assert_true(r->in_len + iov[i].iov_len <= sizeof(r->in));
			memcpy(r->in + r->in_len, iov[i].iov_base, iov[i].iov_len);
			r->in_len += iov[i].iov_len;
			moved += iov[i].iov_len;
		}
		hbone_conn_out_done(srv->c, hbone_conn_out_len(srv->c));
	} while (moved && ++guard < 100);
}

/* ---- tests -------------------------------------------------------------- */

static void test_identity_load(void **state)
{
	struct tls_identity_config cfg = { 0 };
	struct tls_identity *id;
	uint8_t *a, *b, *c;
	int rc;

	(void)state;
	id = pki_identity("client", "root");
	assert_non_null(id);
	assert_string_equal(tls_identity_spiffe_id(id), ID_CLIENT);
	assert_string_equal(tls_identity_trust_domain(id), TD);
	tls_identity_unref(id);

	/* DER chain + PKCS#8 DER key + DER root. */
	a = pki_read("client.chain.der", &cfg.chain_len);
	b = pki_read("client.key.der", &cfg.key_len);
	c = pki_read("root.der", &cfg.roots_len);
	cfg.chain = a;
	cfg.key = b;
	cfg.roots = c;
	assert_int_equal(tls_identity_new(&cfg, &id), 0);
	assert_string_equal(tls_identity_spiffe_id(id), ID_CLIENT);
	tls_identity_unref(id);

	/* Explicit trust domain, then a bad one. */
	cfg.trust_domain = "example.org";
	assert_int_equal(tls_identity_new(&cfg, &id), 0);
	assert_string_equal(tls_identity_trust_domain(id), "example.org");
	tls_identity_unref(id);
	cfg.trust_domain = "Bad Domain";
	assert_int_equal(tls_identity_new(&cfg, &id), -EINVAL);
	cfg.trust_domain = NULL;

	/* Key of another certificate. */
	free(b);
	b = pki_read("server.key", &cfg.key_len);
	cfg.key = b;
	assert_int_equal(tls_identity_new(&cfg, &id), -EINVAL);
	assert_null(id);

	/* Garbage everywhere. */
	cfg.chain = (const uint8_t *)"not a certificate";
	cfg.chain_len = 17;
	assert_int_equal(tls_identity_new(&cfg, &id), -EINVAL);
	assert_int_equal(tls_identity_new(NULL, &id), -EINVAL);
	free(a);
	free(b);
	free(c);

	/* Root without a SPIFFE SAN cannot be an identity. */
	assert_null(pki_identity_rc("root", "root", &rc));
	assert_int_equal(rc, -EINVAL);
}

static void test_spiffe_from_der(void **state)
{
	uint8_t der[4096];
	char id[128];
	uint8_t *pem;
	size_t len;
	int dl;

	(void)state;
	pem = pki_read("client.leaf", &len);
	dl = wc_CertPemToDer(pem, (int)len, der, sizeof(der), CERT_TYPE);
	free(pem);
	assert_true(dl > 0);
	assert_int_equal(tls_spiffe_id_from_der(der, dl, id, sizeof(id)), 0);
	assert_string_equal(id, ID_CLIENT);
	assert_int_equal(tls_spiffe_id_from_der(der, dl, id, 10), -ENOSPC);
	assert_int_equal(tls_spiffe_id_from_der(der, dl / 2, id, sizeof(id)), -EBADMSG);
	assert_int_equal(tls_spiffe_id_from_der((const uint8_t *)"junk", 4, id, sizeof(id)),
	                 -EBADMSG);
	/* A CA certificate has no URI SAN. */
	pem = pki_read("root.pem", &len);
	dl = wc_CertPemToDer(pem, (int)len, der, sizeof(der), CERT_TYPE);
	free(pem);
	assert_int_equal(tls_spiffe_id_from_der(der, dl, id, sizeof(id)), -EINVAL);
}

static void handshake_pair(const char *cli_leaf, const char *srv_leaf, const char *expect,
                           size_t chunk, struct side **cli, struct side **srv)
{
	struct tls_identity *ci = pki_identity(cli_leaf, "root");
	struct tls_identity *si = pki_identity(srv_leaf, "root");

	assert_non_null(ci);
	assert_non_null(si);
	*cli = side_new(HBONE_CLIENT, ci, expect, NULL);
	*srv = side_new(HBONE_SERVER, si, NULL, NULL);
	assert_non_null(*cli);
	assert_non_null(*srv);
	/* The connections hold their own references. */
	tls_identity_unref(ci);
	tls_identity_unref(si);
	run_pipe_chunked(*cli, *srv, chunk);
}

static void sha256_of_leaf(const char *leaf, uint8_t out[32])
{
	char n[64];
	uint8_t *pem, der[4096];
	size_t len;
	int dl;

	snprintf(n, sizeof(n), "%s.leaf", leaf);
	pem = pki_read(n, &len);
	assert_non_null(pem);
	dl = wc_CertPemToDer(pem, (int)len, der, sizeof(der), CERT_TYPE);
	assert_true(dl > 0);
	assert_int_equal(wc_Sha256Hash(der, dl, out), 0);
	free(pem);
}

static void test_handshake_ok(void **state)
{
	static const size_t chunks[] = { (size_t)-1, 1, 7, 1000 };
	uint8_t fp[32], want[32];
	struct side *cli, *srv;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		handshake_pair("client", "server", ID_SERVER, chunks[i], &cli, &srv);
		assert_int_equal(cli->hs, 1);
		assert_int_equal(cli->why, TLS_FAIL_NONE);
		assert_int_equal(srv->hs, 1);
		assert_int_equal(srv->why, TLS_FAIL_NONE);
		assert_true(hbone_conn_established(cli->c));
		assert_true(hbone_conn_established(srv->c));
		assert_string_equal(hbone_conn_peer_id(cli->c), ID_SERVER);
		assert_string_equal(hbone_conn_peer_id(srv->c), ID_CLIENT);
		assert_string_equal(tls_conn_cipher(hbone_conn_tls(cli->c)),
		                    "TLS13-AES128-GCM-SHA256");
		assert_int_equal(tls_conn_peer_fingerprint(hbone_conn_tls(cli->c), fp), 0);
		sha256_of_leaf("server", want);
		assert_memory_equal(fp, want, 32);
		assert_int_equal(tls_conn_peer_fingerprint(hbone_conn_tls(srv->c), fp), 0);
		sha256_of_leaf("client", want);
		assert_memory_equal(fp, want, 32);
		assert_int_equal(ra, 0);
		assert_int_equal(rb, 0);
		side_free(cli);
		side_free(srv);
	}
}

static void expect_refused(const char *cli_leaf, const char *srv_leaf, const char *expect,
                           enum tls_fail cli_why, enum tls_fail srv_why)
{
	struct side *cli, *srv;

	handshake_pair(cli_leaf, srv_leaf, expect, (size_t)-1, &cli, &srv);
	assert_false(hbone_conn_established(cli->c) && hbone_conn_established(srv->c));
	if (cli_why != TLS_FAIL__COUNT) {
		assert_int_equal(cli->hs, 1);
		assert_string_equal(tls_fail_str(cli->why), tls_fail_str(cli_why));
		assert_int_equal(hbone_conn_failure(cli->c), cli_why);
		assert_null(hbone_conn_peer_id(cli->c));
	}
	if (srv_why != TLS_FAIL__COUNT) {
		assert_int_equal(srv->hs, 1);
		assert_string_equal(tls_fail_str(srv->why), tls_fail_str(srv_why));
		assert_null(hbone_conn_peer_id(srv->c));
	}
	side_free(cli);
	side_free(srv);
}

static void test_wrong_server_identity(void **state)
{
	(void)state;
	/* The server presents ns/other/sa/evil where sa/server was expected. */
	expect_refused("client", "other", ID_SERVER, TLS_FAIL_WRONG_IDENTITY, TLS_FAIL_PEER_ALERT);
}

static void test_foreign_ca(void **state)
{
	(void)state;
	expect_refused("foreign", "server", ID_SERVER, TLS_FAIL__COUNT, TLS_FAIL_UNKNOWN_CA);
}

static void test_expired(void **state)
{
	(void)state;
	/* Expired client certificate, then an expired server certificate. */
	expect_refused("expired", "server", ID_SERVER, TLS_FAIL__COUNT, TLS_FAIL_EXPIRED);
	expect_refused("client", "expired", ID_CLIENT, TLS_FAIL_EXPIRED, TLS_FAIL_PEER_ALERT);
}

static void test_foreign_trust_domain(void **state)
{
	(void)state;
	/* Chains to our root, but spiffe://evil.org/...: not our domain. */
	expect_refused("tdforeign", "server", ID_SERVER, TLS_FAIL__COUNT, TLS_FAIL_WRONG_IDENTITY);
}

static struct side *server_side(void)
{
	struct tls_identity *si = pki_identity("server", "root");
	struct side *srv;

	assert_non_null(si);
	srv = side_new(HBONE_SERVER, si, NULL, NULL);
	tls_identity_unref(si);
	assert_non_null(srv);
	return srv;
}

/* @alert: the TLS alert the raw client must have received, -1: any. */
static void raw_expect(int tls12, const char *leaf, const char *alpn, enum tls_fail why, int alert)
{
	WOLFSSL_ALERT_HISTORY h;

	struct side *srv = server_side();
	struct raw *r = raw_client(tls12, leaf, alpn);

	raw_vs_server(r, srv);
	assert_int_equal(srv->hs, 1);
	assert_string_equal(tls_fail_str(srv->why), tls_fail_str(why));
	assert_false(hbone_conn_established(srv->c));
	if (alert >= 0) {
		assert_int_equal(wolfSSL_get_alert_history(r->ssl, &h), WOLFSSL_SUCCESS);
		assert_int_equal(h.last_rx.code, alert);
	}
	raw_free(r);
	side_free(srv);
}

static void test_no_client_cert(void **state)
{
	(void)state;
	raw_expect(0, NULL, "h2", TLS_FAIL_NO_PEER_CERT, -1);
}

static void test_tls12_client(void **state)
{
	(void)state;
	raw_expect(1, "client", "h2", TLS_FAIL_PROTOCOL_VERSION, -1);
}

static void test_alpn(void **state)
{
	(void)state;
	raw_expect(0, "client", "http/1.1", TLS_FAIL_ALPN, 120 /* no_application_protocol */);
	raw_expect(0, "client", NULL, TLS_FAIL_ALPN, -1);
	/* Control: the same raw client with h2 is accepted. */
	{
		struct side *srv = server_side();
		struct raw *r = raw_client(0, "client", "h2");
		raw_vs_server(r, srv);
		assert_int_equal(r->ret, WOLFSSL_SUCCESS);
		assert_int_equal(srv->why, TLS_FAIL_NONE);
		assert_true(hbone_conn_established(srv->c));
		raw_free(r);
		side_free(srv);
	}
}

/* A raw TLS 1.3 server with the right identity but no ALPN (or http/1.1):
 * our client must refuse it after the handshake. */
static void raw_server_alpn(const char *alpn)
{
	struct tls_identity *ci = pki_identity("client", "root");
	struct raw *r = calloc(1, sizeof(*r));
	struct iovec iov[2];
	struct side *cli;
	uint8_t *b;
	size_t len, moved;
	int n, i, guard = 0;

	assert_non_null(r);
	r->ctx = wolfSSL_CTX_new(wolfTLSv1_3_server_method());
	b = pki_read("root.pem", &len);
	assert_int_equal(wolfSSL_CTX_load_verify_buffer(r->ctx, b, len, WOLFSSL_FILETYPE_PEM),
	                 WOLFSSL_SUCCESS);
	free(b);
	b = pki_read("server.pem", &len);
	assert_int_equal(wolfSSL_CTX_use_certificate_chain_buffer(r->ctx, b, len), WOLFSSL_SUCCESS);
	free(b);
	b = pki_read("server.key", &len);
	assert_int_equal(wolfSSL_CTX_use_PrivateKey_buffer(r->ctx, b, len, WOLFSSL_FILETYPE_PEM),
	                 WOLFSSL_SUCCESS);
	free(b);
	wolfSSL_CTX_set_verify(r->ctx, WOLFSSL_VERIFY_PEER, NULL);
	wolfSSL_CTX_SetIORecv(r->ctx, raw_recv);
	wolfSSL_CTX_SetIOSend(r->ctx, raw_send);
	r->ssl = wolfSSL_new(r->ctx);
	if (alpn)
		wolfSSL_UseALPN(r->ssl, (char *)alpn, strlen(alpn),
		                WOLFSSL_ALPN_CONTINUE_ON_MISMATCH);
	wolfSSL_SetIOReadCtx(r->ssl, r);
	wolfSSL_SetIOWriteCtx(r->ssl, r);
	cli = side_new(HBONE_CLIENT, ci, ID_SERVER, NULL);
	tls_identity_unref(ci);
	assert_non_null(cli);
	do {
		moved = 0;
		n = hbone_conn_pending_out(cli->c, iov);
		for (i = 0; i < n; i++) {
			if (r->in_off == r->in_len)
				r->in_off = r->in_len = 0;
			memcpy(r->in + r->in_len, iov[i].iov_base, iov[i].iov_len);
			r->in_len += iov[i].iov_len;
			moved += iov[i].iov_len;
		}
		hbone_conn_out_done(cli->c, hbone_conn_out_len(cli->c));
		r->ret = wolfSSL_accept(r->ssl);
		if (r->out_len) {
			hbone_conn_feed(cli->c, r->out, r->out_len);
			moved += r->out_len;
			r->out_len = 0;
		}
	} while (moved && ++guard < 100);
	assert_int_equal(cli->hs, 1);
	assert_string_equal(tls_fail_str(cli->why), "alpn");
	assert_false(hbone_conn_established(cli->c));
	side_free(cli);
	raw_free(r);
}

static void test_server_without_h2(void **state)
{
	(void)state;
	raw_server_alpn(NULL);
	raw_server_alpn("http/1.1");
}

static void test_plaintext(void **state)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct side *srv = server_side();

	(void)state;
	assert_int_equal(hbone_conn_feed(srv->c, (const uint8_t *)req, sizeof(req) - 1), -EPROTO);
	assert_int_equal(srv->hs, 1);
	assert_int_equal(srv->why, TLS_FAIL_NOT_TLS);
	assert_int_equal(hbone_conn_feed(srv->c, (const uint8_t *)req, 3), -EPROTO);
	side_free(srv);

	/* A handshake-looking first byte followed by junk is still refused. */
	srv = server_side();
	assert_int_equal(hbone_conn_feed(srv->c, (const uint8_t *)"\x16\x03\x01\x00\x05hello", 10),
	                 -EPROTO);
	assert_int_equal(srv->hs, 1);
	assert_int_not_equal(srv->why, TLS_FAIL_NONE);
	side_free(srv);
}

static void test_closed_mid_handshake(void **state)
{
	struct tls_identity *ci = pki_identity("client", "root");
	struct side *cli;

	(void)state;
	cli = side_new(HBONE_CLIENT, ci, ID_SERVER, NULL);
	tls_identity_unref(ci);
	assert_non_null(cli);
	assert_true(hbone_conn_out_len(cli->c) > 0); /* ClientHello ready */
	assert_int_equal(hbone_conn_feed_eof(cli->c), -EPROTO);
	assert_int_equal(cli->why, TLS_FAIL_CLOSED);
	assert_true(hbone_conn_done(cli->c) || hbone_conn_out_len(cli->c));
	side_free(cli);
}

static void test_bad_args(void **state)
{
	struct tls_identity *ci = pki_identity("client", "root");
	struct hbone_conn *c;

	(void)state;
	/* A client needs a well-formed expected identity. */
	assert_int_equal(hbone_conn_new(HBONE_CLIENT, ci, NULL, NULL, NULL, NULL, &c), -EINVAL);
	assert_int_equal(hbone_conn_new(HBONE_CLIENT, ci, "http://x", NULL, NULL, NULL, &c),
	                 -EINVAL);
	assert_int_equal(hbone_conn_new(HBONE_CLIENT, ci, "spiffe://td/../x", NULL, NULL, NULL, &c),
	                 -EINVAL);
	assert_int_equal(hbone_conn_new(HBONE_CLIENT, NULL, ID_SERVER, NULL, NULL, NULL, &c),
	                 -EINVAL);
	tls_identity_unref(ci);
	assert_string_equal(tls_fail_str(TLS_FAIL__COUNT), "invalid");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity_load),
		cmocka_unit_test(test_spiffe_from_der),
		cmocka_unit_test(test_handshake_ok),
		cmocka_unit_test(test_wrong_server_identity),
		cmocka_unit_test(test_foreign_ca),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_foreign_trust_domain),
		cmocka_unit_test(test_no_client_cert),
		cmocka_unit_test(test_tls12_client),
		cmocka_unit_test(test_alpn),
		cmocka_unit_test(test_server_without_h2),
		cmocka_unit_test(test_plaintext),
		cmocka_unit_test(test_closed_mid_handshake),
		cmocka_unit_test(test_bad_args),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
