/* Unit tests for certs/: SPIFFE IDs, DER cursor, issuing root -> node ->
 * SVID in memory, chain verification (ours, wolfSSL's, OpenSSL's), expiry,
 * name constraints, key handling. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "certs/ca.h"
#include "certs/der.h"
#include "certs/fileio.h"
#include "certs/secmem.h"
#include "certs/svid.h"
#include "certs/x509.h"

static struct ca *g_root, *g_node, *g_root2, *g_node2;

static int group_setup(void **state)
{
	struct certs_err err;

	(void)state;
	if (ca_create_root("cluster.local", 3650, 0, &g_root, &err) < 0 ||
	    ca_issue_node(g_root, "n1", 720, 0, &g_node, &err) < 0 ||
	    ca_create_root("cluster.local", 3650, 0, &g_root2, &err) < 0 ||
	    ca_issue_node(g_root2, "n2", 720, 0, &g_node2, &err) < 0) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	ca_free(g_node);
	ca_free(g_root);
	ca_free(g_node2);
	ca_free(g_root2);
	return 0;
}

/* ------------------------------------------------------------ SPIFFE IDs */

static void test_spiffe_good(void **state)
{
	static const struct {
		const char *in, *td, *ns, *sa;
	} good[] = {
		{ "spiffe://cluster.local/ns/default/sa/web", "cluster.local", "default", "web" },
		{ "spiffe://example.org/ns/a/sa/b", "example.org", "a", "b" },
		{ "spiffe://td_1-x.y/ns/kube-system/sa/coredns.v2", "td_1-x.y", "kube-system",
		  "coredns.v2" },
		{ "spiffe://x/ns/NS/sa/Mixed_Case", "x", "NS", "Mixed_Case" },
		{ "spiffe://cluster.local/ns/.../sa/a", "cluster.local", "...", "a" },
	};
	struct spiffe_id id;
	const char *why;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		why = NULL;
		assert_int_equal(spiffe_id_parse(good[i].in, strlen(good[i].in), &id, &why), 0);
		assert_string_equal(id.td, good[i].td);
		assert_string_equal(id.ns, good[i].ns);
		assert_string_equal(id.sa, good[i].sa);
	}
}

static void test_spiffe_bad(void **state)
{
	static const char *bad[] = {
		"",
		"spiffe://",
		"https://cluster.local/ns/a/sa/b",       /* wrong scheme */
		"SPIFFE://cluster.local/ns/a/sa/b",      /* scheme not lowercase */
		"spiffe:/cluster.local/ns/a/sa/b",       /* one slash */
		"spiffe:///ns/a/sa/b",                   /* empty trust domain */
		"spiffe://Cluster.local/ns/a/sa/b",      /* uppercase trust domain */
		"spiffe://cluster.local",                /* no path */
		"spiffe://cluster.local/",               /* trailing slash only */
		"spiffe://cluster.local/ns/a/sa/b/",     /* trailing slash */
		"spiffe://cluster.local/ns//sa/b",       /* empty segment */
		"spiffe://cluster.local/ns/../sa/b",     /* dot-dot */
		"spiffe://cluster.local/ns/./sa/b",      /* dot */
		"spiffe://cluster.local/ns/a%2Fb/sa/c",  /* percent-encoding */
		"spiffe://cluster.local/ns/a/sa/b?x=1",  /* query */
		"spiffe://cluster.local/ns/a/sa/b#frag", /* fragment */
		"spiffe://cluster.local:443/ns/a/sa/b",  /* port */
		"spiffe://user@cluster.local/ns/a/sa/b", /* userinfo */
		"spiffe://cluster.local/ns/a",           /* missing sa */
		"spiffe://cluster.local/sa/b/ns/a",      /* swapped */
		"spiffe://cluster.local/ns/a/sa/b/c",    /* extra segment */
		"spiffe://cluster.local/ns/a/sa",        /* sa without value */
		"spiffe://cluster.local/ns/a b/sa/c",    /* space */
		"spiffe://cluster.local/ns/a/sa/b\n",    /* control char */
		"spiffe://clus ter/ns/a/sa/b",           /* space in td */
		"spiffe://cluster.local/NS/a/sa/b",      /* keyword case */
	};
	struct spiffe_id id;
	const char *why;
	char *longid;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		if (spiffe_id_parse(bad[i], strlen(bad[i]), &id, &why) != -EINVAL)
			fail_msg("accepted bad SPIFFE ID [%zu] '%s'", i, bad[i]);
		assert_non_null(why);
	}
	/* Embedded NUL: the length is what counts. */
	assert_int_equal(spiffe_id_parse("spiffe://a/ns/b\0/sa/c", 21, &id, &why), -EINVAL);
	/* Too long overall (> 2048) and trust domain > 255. */
	longid = malloc(4096);
	assert_non_null(longid);
	memset(longid, 'a', 4095);
	memcpy(longid, "spiffe://x/ns/", 14);
	assert_int_equal(spiffe_id_parse(longid, 3000, &id, &why), -EINVAL);
	assert_string_equal(why, "longer than 2048 bytes");
	memset(longid, 'a', 4095);
	memcpy(longid, "spiffe://", 9);
	memcpy(longid + 9 + 300, "/ns/a/sa/b", 10);
	assert_int_equal(spiffe_id_parse(longid, 9 + 310, &id, &why), -EINVAL);
	assert_string_equal(why, "trust domain longer than 255 bytes");
	/* A namespace segment of 254 bytes. */
	memcpy(longid, "spiffe://x/ns/", 14);
	memcpy(longid + 14 + 254, "/sa/b", 5);
	assert_int_equal(spiffe_id_parse(longid, 14 + 259, &id, &why), -EINVAL);
	free(longid);
	assert_int_equal(spiffe_id_parse(NULL, 0, &id, &why), -EINVAL);
}

static void test_spiffe_format(void **state)
{
	struct spiffe_id id = { "cluster.local", "default", "web" }, back;
	char buf[SPIFFE_ID_MAX + 1];
	int n;

	(void)state;
	n = spiffe_id_format(&id, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen("spiffe://cluster.local/ns/default/sa/web"));
	assert_int_equal(spiffe_id_parse(buf, (size_t)n, &back, NULL), 0);
	assert_string_equal(back.sa, "web");
	assert_int_equal(spiffe_id_format(&id, buf, 10), -ENOSPC);
	snprintf(id.ns, sizeof(id.ns), "..");
	assert_int_equal(spiffe_id_format(&id, buf, sizeof(buf)), -EINVAL);
}

static void test_uri_subtree(void **state)
{
	(void)state;
	assert_true(x509_uri_in_subtree("spiffe://cluster.local/ns/a/sa/b", "cluster.local"));
	assert_true(x509_uri_in_subtree("spiffe://CLUSTER.local/ns/a/sa/b", "cluster.local"));
	assert_false(x509_uri_in_subtree("spiffe://evil.local/ns/a/sa/b", "cluster.local"));
	assert_false(x509_uri_in_subtree("spiffe://cluster.local.evil/x", "cluster.local"));
	assert_false(x509_uri_in_subtree("spiffe://xcluster.local/x", "cluster.local"));
	assert_false(x509_uri_in_subtree("spiffe://a.cluster.local/x", "cluster.local"));
	assert_true(x509_uri_in_subtree("spiffe://a.cluster.local/x", ".cluster.local"));
	assert_false(x509_uri_in_subtree("spiffe://cluster.local/x", ".cluster.local"));
	assert_true(x509_uri_in_subtree("https://u@cluster.local:8443/x", "cluster.local"));
	assert_false(x509_uri_in_subtree("urn:cluster.local", "cluster.local"));
}

/* ------------------------------------------------------------ DER cursor */

static void test_der_cursor(void **state)
{
	static const uint8_t ok[] = { 0x30, 0x03, 0x02, 0x01, 0x05 };
	static const uint8_t long_ok[] = { 0x04, 0x81, 0x80 };
	static const uint8_t nonmin[] = { 0x04, 0x81, 0x05, 1, 2, 3, 4, 5 };
	static const uint8_t indef[] = { 0x30, 0x80, 0x00, 0x00 };
	static const uint8_t past[] = { 0x30, 0x05, 0x02, 0x01 };
	static const uint8_t hightag[] = { 0x1f, 0x81, 0x01, 0x00 };
	static const uint8_t five[] = { 0x04, 0x85, 1, 0, 0, 0, 0 };
	struct der d;
	struct der_tlv t, in;
	uint8_t hdr[8];

	(void)state;
	d = der_init(ok, sizeof(ok));
	assert_int_equal(der_expect(&d, DER_SEQUENCE, &t), 0);
	assert_int_equal(t.len, 3);
	d = der_enter(&t);
	assert_int_equal(der_expect(&d, DER_INTEGER, &in), 0);
	assert_int_equal(in.val[0], 5);
	assert_int_equal(der_next(&d, &in), -ENODATA);
	assert_int_equal(der_expect(&d, DER_INTEGER, &in), -EBADMSG);
	d = der_init(long_ok, sizeof(long_ok)); /* claims 128 bytes, has 0 */
	assert_int_equal(der_next(&d, &t), -EBADMSG);
	d = der_init(nonmin, sizeof(nonmin));
	assert_int_equal(der_next(&d, &t), -EBADMSG);
	d = der_init(indef, sizeof(indef));
	assert_int_equal(der_next(&d, &t), -EBADMSG);
	d = der_init(past, sizeof(past));
	assert_int_equal(der_next(&d, &t), -EBADMSG);
	d = der_init(hightag, sizeof(hightag));
	assert_int_equal(der_next(&d, &t), -EBADMSG);
	d = der_init(five, sizeof(five));
	assert_int_equal(der_next(&d, &t), -EBADMSG);
	d = der_init(ok, 1);
	assert_int_equal(der_next(&d, &t), -EBADMSG);
	assert_int_equal(der_put_hdr(hdr, 0x04, 5), 2);
	assert_int_equal(der_put_hdr(hdr, 0x04, 200), 3);
	assert_int_equal(hdr[1], 0x81);
	assert_int_equal(hdr[2], 200);
	assert_int_equal(der_put_hdr(hdr, 0x04, 0x1234), 4);
	assert_int_equal(hdr[2], 0x12);
	assert_int_equal(hdr[3], 0x34);
}

/* ------------------------------------------------------------ issuing */

static void test_root_and_node(void **state)
{
	const struct x509_cert *r = ca_cert(g_root), *n = ca_cert(g_node);

	(void)state;
	assert_true(r->is_ca);
	assert_true(r->self_signed);
	assert_int_equal(r->path_len, -1);
	assert_true(r->has_key_usage);
	assert_true(r->key_usage & X509_KU_KEY_CERT_SIGN);
	assert_string_equal(r->key_type, "ECDSA P-256");
	assert_string_equal(ca_trust_domain(g_root), "cluster.local");
	assert_true(n->is_ca);
	assert_false(n->self_signed);
	assert_int_equal(n->path_len, 0);
	assert_string_equal(ca_trust_domain(g_node), "cluster.local");
	assert_true(n->has_name_constraints);
	assert_true(n->nc_critical);
	assert_int_equal(n->n_nc_permitted_uri, 1);
	assert_string_equal(n->nc_permitted_uri[0], "cluster.local");
	assert_true(n->not_after <= r->not_after);
	assert_true(n->not_after - n->not_before >= 720 * 3600);
	assert_non_null(strstr(n->subject, "ambit node n1"));
	assert_string_equal(n->issuer, r->subject);
}

static void test_svid_issue_verify(void **state)
{
	struct spiffe_id id = { "cluster.local", "default", "web" }, got;
	struct x509_buf chain[2], root = ca_cert_der(g_root);
	struct x509_cert leaf;
	struct certs_err err;
	struct svid *s = NULL;
	int64_t now = (int64_t)time(NULL);

	(void)state;
	assert_int_equal(svid_issue(g_node, &id, 0, 0, &s, &err), 0);
	assert_string_equal(s->uri, "spiffe://cluster.local/ns/default/sa/web");
	assert_true(s->not_after - s->not_before == SVID_LIFETIME_DEFAULT + CA_BACKDATE_SECONDS);
	assert_true(s->renew_at > now && s->renew_at < s->not_after);
	assert_int_equal(x509_parse(s->cert_der, s->cert_der_len, &leaf, &err), 0);
	assert_false(leaf.is_ca);
	assert_int_equal(leaf.n_uris, 1);
	assert_string_equal(leaf.uris[0], s->uri);
	assert_true(leaf.key_usage & X509_KU_DIGITAL_SIGNATURE);
	assert_false(leaf.key_usage & X509_KU_KEY_CERT_SIGN);
	assert_int_equal(x509_svid_id(&leaf, "cluster.local", &got, &err), 0);
	assert_string_equal(got.ns, "default");
	assert_string_equal(got.sa, "web");
	assert_int_equal(x509_svid_id(&leaf, "other.td", &got, &err), -EPERM);
	/* An intermediate is not an SVID. */
	assert_int_equal(x509_svid_id(ca_cert(g_node), NULL, &got, &err), -EINVAL);

	chain[0].der = s->cert_der;
	chain[0].len = s->cert_der_len;
	chain[1] = ca_cert_der(g_node);
	assert_int_equal(x509_verify_chain(chain, 2, &root, 0, &err), 0);
	/* The chain DER is leaf || intermediate and splits back the same way. */
	assert_int_equal(s->chain_der_len, chain[0].len + chain[1].len);
	assert_memory_equal(s->chain_der + chain[0].len, chain[1].der, chain[1].len);
	assert_non_null(strstr(s->chain_pem, "-----BEGIN CERTIFICATE-----"));
	assert_non_null(strstr(s->key_pem, "-----BEGIN EC PRIVATE KEY-----"));
	/* Without the intermediate the leaf does not chain to the root. */
	assert_int_equal(x509_verify_chain(chain, 1, &root, 0, &err), -EKEYREJECTED);
	/* Another root (same names, other key) must not verify. */
	root = ca_cert_der(g_root2);
	assert_int_equal(x509_verify_chain(chain, 2, &root, 0, &err), -EKEYREJECTED);
	/* Another node's intermediate (same root names) is a mismatched chain. */
	chain[1] = ca_cert_der(g_node2);
	root = ca_cert_der(g_root2);
	assert_int_not_equal(x509_verify_chain(chain, 2, &root, 0, &err), 0);
	/* The trust domain must be the issuer's. */
	snprintf(id.td, sizeof(id.td), "other.td");
	svid_free(s);
	s = NULL;
	assert_int_equal(svid_issue(g_node, &id, 0, 0, &s, &err), -EPERM);
	assert_null(s);
}

/* wolfSSL's own verifier (what a TLS handshake uses) must accept the chain,
 * in particular the intermediate's critical nameConstraints extension. */
static void test_wolfssl_certmanager(void **state)
{
	struct spiffe_id id = { "cluster.local", "ns1", "sa1" };
	struct x509_buf r = ca_cert_der(g_root), n = ca_cert_der(g_node);
	WOLFSSL_CERT_MANAGER *cm;
	struct certs_err err;
	struct svid *s;

	(void)state;
	assert_int_equal(svid_issue(g_node, &id, 3600, 0, &s, &err), 0);
	cm = wolfSSL_CertManagerNew();
	assert_non_null(cm);
	assert_int_equal(
	    wolfSSL_CertManagerLoadCABuffer(cm, r.der, (long)r.len, WOLFSSL_FILETYPE_ASN1),
	    WOLFSSL_SUCCESS);
	assert_int_equal(
	    wolfSSL_CertManagerVerifyBuffer(cm, n.der, (long)n.len, WOLFSSL_FILETYPE_ASN1),
	    WOLFSSL_SUCCESS);
	assert_int_equal(
	    wolfSSL_CertManagerLoadCABuffer(cm, n.der, (long)n.len, WOLFSSL_FILETYPE_ASN1),
	    WOLFSSL_SUCCESS);
	assert_int_equal(wolfSSL_CertManagerVerifyBuffer(cm, s->cert_der, (long)s->cert_der_len,
	                                                 WOLFSSL_FILETYPE_ASN1),
	                 WOLFSSL_SUCCESS);
	wolfSSL_CertManagerFree(cm);
	svid_free(s);
}

static void test_expiry(void **state)
{
	struct spiffe_id id = { "cluster.local", "default", "old" };
	int64_t now = (int64_t)time(NULL), day = 86400;
	struct x509_buf chain[2], root;
	struct ca *oroot = NULL, *onode = NULL;
	struct certs_err err;
	struct svid *s = NULL;

	(void)state;
	/* A PKI made ten days ago, a node three days ago. */
	assert_int_equal(ca_create_root("cluster.local", 3650, now - 10 * day, &oroot, &err), 0);
	assert_int_equal(ca_issue_node(oroot, "old", 720, now - 3 * day, &onode, &err), 0);
	root = ca_cert_der(oroot);
	/* Issued "two hours ago" for one hour: expired now. */
	assert_int_equal(svid_issue(onode, &id, 3600, now - 7200, &s, &err), 0);
	chain[0].der = s->cert_der;
	chain[0].len = s->cert_der_len;
	chain[1] = ca_cert_der(onode);
	assert_int_equal(x509_verify_chain(chain, 2, &root, now, &err), -EKEYEXPIRED);
	assert_non_null(strstr(err.msg, "leaf"));
	assert_non_null(strstr(err.msg, "expired"));
	/* ... valid back then ... */
	assert_int_equal(x509_verify_chain(chain, 2, &root, now - 7000, &err), 0);
	/* ... and not yet valid before its notBefore (intermediate still valid). */
	assert_int_equal(x509_verify_chain(chain, 2, &root, now - day, &err), -EKEYEXPIRED);
	assert_non_null(strstr(err.msg, "not valid yet"));
	/* Before the intermediate existed. */
	assert_int_equal(x509_verify_chain(chain, 2, &root, now - 5 * day, &err), -EKEYEXPIRED);
	svid_free(s);
	/* An issuer that has expired at that time cannot issue. */
	assert_int_equal(svid_issue(onode, &id, 3600, now - 9 * day, &s, &err), -EKEYEXPIRED);
	assert_null(s);
	/* The leaf is cut at the intermediate's notAfter. */
	assert_int_equal(svid_issue(g_node, &id, 3600 * 24 * 365, 0, &s, &err), 0);
	assert_int_equal(s->not_after, ca_cert(g_node)->not_after);
	svid_free(s);
	ca_free(onode);
	ca_free(oroot);
}

/* Issue a certificate for a fresh key from issuer with ca_sign().  Returns
 * the malloc()ed DER; with ca_out, also loads it with its key as a CA. */
static uint8_t *make_cert(const struct ca *issuer, const char *uri, bool is_ca, size_t *len,
                          struct ca **ca_out)
{
	struct ca_spec spec = { 0 };
	struct certs_err err;
	uint8_t *der = NULL, kder[256];
	ecc_key key;
	WC_RNG rng;
	int klen;

	assert_int_equal(wc_InitRng(&rng), 0);
	assert_int_equal(wc_ecc_init(&key), 0);
	assert_int_equal(wc_ecc_make_key_ex(&rng, 32, &key, ECC_SECP256R1), 0);
	wc_FreeRng(&rng);
	spec.org = "test";
	spec.cn = is_ca ? "sub CA" : NULL;
	spec.uri = uri;
	spec.not_before = (int64_t)time(NULL) - 60;
	spec.not_after = (int64_t)time(NULL) + 3600;
	spec.is_ca = is_ca;
	spec.path_len = -1;
	spec.key_usage = is_ca ? "keyCertSign,cRLSign" : "digitalSignature";
	if (ca_sign(issuer, &spec, &key, &der, len, &err) < 0)
		fail_msg("ca_sign: %s", err.msg);
	if (ca_out) {
		klen = wc_EccPrivateKeyToDer(&key, kder, sizeof(kder));
		assert_true(klen > 0);
		assert_int_equal(ca_load(der, *len, kder, (size_t)klen, ca_out, &err), 0);
		explicit_bzero(kder, sizeof(kder));
	}
	wc_ecc_free(&key);
	return der;
}

static void write_pem(const char *dir, const char *name, struct x509_buf b)
{
	struct certs_err err;
	char path[512], *pem;
	size_t plen;

	assert_int_equal(ca_der_to_pem(b.der, b.len, CA_PEM_CERT, false, &pem, &plen, &err), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(certs_write_file(path, pem, plen, 0644, &err), 0);
	free(pem);
}

static void test_name_constraints(void **state)
{
	struct x509_buf chain[3], root = ca_cert_der(g_root);
	struct certs_err err;
	uint8_t *evil, *good;
	size_t evil_len, good_len;
	struct ca *sub = NULL;
	char cmd[1024], dir[] = "/tmp/ambit-certs-nc.XXXXXX";

	(void)state;
	/* ca_sign does not police names: that is the verifier's job. */
	evil = make_cert(g_node, "spiffe://evil.local/ns/a/sa/b", false, &evil_len, NULL);
	good = make_cert(g_node, "spiffe://cluster.local/ns/a/sa/b", false, &good_len, NULL);
	chain[1] = ca_cert_der(g_node);
	chain[0].der = good;
	chain[0].len = good_len;
	assert_int_equal(x509_verify_chain(chain, 2, &root, 0, &err), 0);
	chain[0].der = evil;
	chain[0].len = evil_len;
	assert_int_equal(x509_verify_chain(chain, 2, &root, 0, &err), -EPERM);
	assert_non_null(strstr(err.msg, "name constraints"));

	/* OpenSSL enforces the extension we spliced in, too. */
	if (access("/usr/bin/openssl", X_OK) == 0) {
		char out[2048] = "";
		FILE *f;
		size_t n;

		assert_non_null(mkdtemp(dir));
		write_pem(dir, "leaf.pem", chain[0]);
		write_pem(dir, "inter.pem", chain[1]);
		write_pem(dir, "root.pem", root);
		snprintf(cmd, sizeof(cmd),
		         "openssl verify -CAfile %s/root.pem -untrusted %s/inter.pem %s/leaf.pem "
		         "2>&1",
		         dir, dir, dir);
		f = popen(cmd, "r");
		assert_non_null(f);
		n = fread(out, 1, sizeof(out) - 1, f);
		out[n] = '\0';
		assert_int_not_equal(pclose(f), 0);
		if (!strstr(out, "subtree violation"))
			fail_msg("openssl said: %s", out);
		/* ... and accepts the good one. */
		chain[0].der = good;
		chain[0].len = good_len;
		write_pem(dir, "leaf.pem", chain[0]);
		snprintf(cmd, sizeof(cmd),
		         "openssl verify -CAfile %s/root.pem -untrusted %s/inter.pem %s/leaf.pem "
		         ">/dev/null 2>&1",
		         dir, dir, dir);
		assert_int_equal(system(cmd), 0);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		assert_int_equal(system(cmd), 0);
	}
	/* The post-handshake check catches it without signature work. */
	{
		struct x509_buf l = { evil, evil_len }, g = { good, good_len };
		struct spiffe_id id;

		assert_int_equal(x509_peer_id(&l, &chain[1], "evil.local", &id, &err), -EPERM);
		assert_int_equal(x509_peer_id(&l, NULL, "cluster.local", &id, &err), -EPERM);
		assert_int_equal(x509_peer_id(&g, &chain[1], "cluster.local", &id, &err), 0);
		assert_string_equal(id.sa, "b");
		assert_int_equal(x509_peer_id(&chain[1], NULL, NULL, &id, &err), -EINVAL);
	}
	free(evil);
	free(good);

	/* A CA under the node intermediate (pathlen 0) must not be accepted. */
	free(make_cert(g_node, "spiffe://cluster.local", true, &good_len, &sub));
	assert_non_null(sub);
	good = make_cert(sub, "spiffe://cluster.local/ns/a/sa/b", false, &good_len, NULL);
	chain[0].der = good;
	chain[0].len = good_len;
	chain[1] = ca_cert_der(sub);
	chain[2] = ca_cert_der(g_node);
	assert_int_equal(x509_verify_chain(chain, 3, &root, 0, &err), -EPERM);
	assert_non_null(strstr(err.msg, "path length"));
	free(good);
	ca_free(sub);
}

static void test_key_wipe_and_lock(void **state)
{
	struct spiffe_id id = { "cluster.local", "default", "wipe" };
	struct certs_err err;
	struct svid *s;
	size_t i, nz = 0;
	uint8_t *k;

	(void)state;
	assert_int_equal(svid_issue(g_node, &id, 3600, 0, &s, &err), 0);
	assert_true(s->key_der_len > 100 && s->key_der_len < 256);
	/* The key in memory belongs to the certificate. */
	assert_int_equal(
	    ca_key_matches(s->cert_der, s->cert_der_len, s->key_der, s->key_der_len, &err), 0);
	assert_int_equal(ca_key_matches(s->cert_der, s->cert_der_len, (const uint8_t *)s->key_pem,
	                                s->key_pem_len, &err),
	                 0);
	/* ... and not to the intermediate. */
	assert_int_equal(ca_key_matches(ca_cert_der(g_node).der, ca_cert_der(g_node).len,
	                                s->key_der, s->key_der_len, &err),
	                 -EKEYREJECTED);
	for (i = 0; i < s->key_der_len; i++)
		nz += s->key_der[i] != 0;
	assert_true(nz > s->key_der_len / 2);
	k = s->key_der;
	svid_wipe_key(s);
	for (i = 0; i < s->key_der_len; i++)
		assert_int_equal(k[i], 0);
	for (i = 0; i < s->key_pem_len; i++)
		assert_int_equal(s->key_pem[i], 0);
	svid_wipe_key(s); /* idempotent */
	svid_free(s);
	k = secmem_alloc(100);
	assert_non_null(k);
	/* mlock may be refused by RLIMIT_MEMLOCK; as root in tests it is not. */
	if (geteuid() == 0)
		assert_true(secmem_locked(k));
	secmem_free(k);
}

static void test_ca_files(void **state)
{
	char dir[] = "/tmp/ambit-certs-ut.XXXXXX", c[256], k[256], k2[256];
	struct certs_err err;
	struct ca *back = NULL;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(c, sizeof(c), "%s/c.pem", dir);
	snprintf(k, sizeof(k), "%s/k.pem", dir);
	snprintf(k2, sizeof(k2), "%s/k2.pem", dir);
	umask(022);
	assert_int_equal(ca_save(g_node, c, k, &err), 0);
	assert_int_equal(stat(k, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(c, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(ca_load_files(c, k, &back, &err), 0);
	assert_string_equal(ca_trust_domain(back), "cluster.local");
	assert_int_equal(ca_cert_der(back).len, ca_cert_der(g_node).len);
	ca_free(back);
	/* Wrong key: another CA's key with this certificate. */
	snprintf(k2, sizeof(k2), "%s/other.pem", dir);
	{
		char c2[256];

		snprintf(c2, sizeof(c2), "%s/c2.pem", dir);
		assert_int_equal(ca_save(g_node2, c2, k2, &err), 0);
	}
	assert_int_equal(ca_load_files(c, k2, &back, &err), -EKEYREJECTED);
	assert_non_null(strstr(err.msg, "does not match"));
	/* Missing file, malformed PEM, a leaf as CA. */
	snprintf(k2, sizeof(k2), "%s/missing.pem", dir);
	assert_int_equal(ca_load_files(c, k2, &back, &err), -ENOENT);
	assert_int_equal(
	    certs_write_file(k2, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n", 36, 0600, &err), 0);
	assert_int_equal(ca_load_files(c, k2, &back, &err), -EBADMSG);
	assert_int_equal(certs_write_file(k2,
	                                  "-----BEGIN CERTIFICATE-----\n!!!\n"
	                                  "-----END CERTIFICATE-----\n",
	                                  59, 0644, &err),
	                 0);
	assert_int_equal(ca_load_files(k2, k, &back, &err), -EBADMSG);
	snprintf(c, sizeof(c), "rm -rf %s", dir);
	assert_int_equal(system(c), 0);
}

static void test_load_certs(void **state)
{
	struct spiffe_id id = { "cluster.local", "default", "pem" };
	struct x509_buf out[4];
	struct certs_err err;
	uint8_t *st = NULL;
	struct svid *s;
	int n;

	(void)state;
	assert_int_equal(svid_issue(g_node, &id, 3600, 0, &s, &err), 0);
	n = x509_load_certs((const uint8_t *)s->chain_pem, s->chain_pem_len, out, 4, &st, &err);
	assert_int_equal(n, 2);
	assert_int_equal(out[0].len, s->cert_der_len);
	assert_memory_equal(out[0].der, s->cert_der, s->cert_der_len);
	free(st);
	assert_int_equal(
	    x509_load_certs((const uint8_t *)s->chain_pem, s->chain_pem_len, out, 1, &st, &err),
	    -E2BIG);
	n = x509_load_certs(s->cert_der, s->cert_der_len, out, 4, &st, &err);
	assert_int_equal(n, 1);
	free(st);
	assert_int_equal(x509_load_certs((const uint8_t *)"hello", 5, out, 4, &st, &err), -EBADMSG);
	/* Truncated PEM (no END line). */
	assert_int_equal(
	    x509_load_certs((const uint8_t *)s->cert_pem, s->cert_pem_len - 30, out, 4, &st, &err),
	    -EBADMSG);
	assert_null(st);
	svid_free(s);
}

static void test_parse_malformed(void **state)
{
	struct spiffe_id id = { "cluster.local", "default", "bad" };
	struct x509_cert *c = malloc(sizeof(*c));
	struct certs_err err;
	struct svid *s;
	uint8_t *copy;
	size_t i;

	(void)state;
	assert_non_null(c);
	assert_int_equal(x509_parse(NULL, 0, c, &err), -EINVAL);
	assert_int_equal(x509_parse((const uint8_t *)"\x30\x00", 2, c, &err), -EBADMSG);
	assert_int_equal(svid_issue(g_node, &id, 3600, 0, &s, &err), 0);
	/* Every truncation fails cleanly. */
	for (i = 1; i < s->cert_der_len; i++)
		assert_int_not_equal(x509_parse(s->cert_der, i, c, &err), 0);
	/* Single-byte corruptions never crash; most are refused. */
	copy = malloc(s->cert_der_len);
	assert_non_null(copy);
	for (i = 0; i < s->cert_der_len; i++) {
		memcpy(copy, s->cert_der, s->cert_der_len);
		copy[i] ^= 0xff;
		(void)x509_parse(copy, s->cert_der_len, c, &err);
	}
	/* A flipped signature byte parses but does not verify. */
	{
		struct x509_buf chain[2], root = ca_cert_der(g_root);

		memcpy(copy, s->cert_der, s->cert_der_len);
		copy[s->cert_der_len - 5] ^= 0x01;
		chain[0].der = copy;
		chain[0].len = s->cert_der_len;
		chain[1] = ca_cert_der(g_node);
		assert_int_equal(x509_verify_chain(chain, 2, &root, 0, &err), -EKEYREJECTED);
	}
	free(copy);
	svid_free(s);
	free(c);
}

/* ---- A TLS 1.3 handshake in memory, the way HBONE will use the SVIDs. */

struct pipe {
	uint8_t buf[65536];
	size_t len;
};

struct tls_end {
	struct pipe *in, *out;
};

static int mem_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct tls_end *e = ctx;
	size_t n = e->in->len < (size_t)sz ? e->in->len : (size_t)sz;

	(void)ssl;
	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	memcpy(buf, e->in->buf, n);
	memmove(e->in->buf, e->in->buf + n, e->in->len - n);
	e->in->len -= n;
	return (int)n;
}

static int mem_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct tls_end *e = ctx;

	(void)ssl;
	if (e->out->len + (size_t)sz > sizeof(e->out->buf))
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	memcpy(e->out->buf + e->out->len, buf, (size_t)sz);
	e->out->len += (size_t)sz;
	return sz;
}

static WOLFSSL_CTX *tls_ctx(bool server, const uint8_t *chain, size_t chain_len, const uint8_t *key,
                            size_t key_len, struct x509_buf root)
{
	WOLFSSL_CTX *ctx =
	    wolfSSL_CTX_new(server ? wolfTLSv1_3_server_method() : wolfTLSv1_3_client_method());

	assert_non_null(ctx);
	assert_int_equal(
	    wolfSSL_CTX_load_verify_buffer(ctx, root.der, (long)root.len, WOLFSSL_FILETYPE_ASN1),
	    WOLFSSL_SUCCESS);
	/* leaf || intermediate as DER, exactly svid->chain_der. */
	assert_int_equal(wolfSSL_CTX_use_certificate_chain_buffer_format(
	                     ctx, chain, (long)chain_len, WOLFSSL_FILETYPE_ASN1),
	                 WOLFSSL_SUCCESS);
	assert_int_equal(
	    wolfSSL_CTX_use_PrivateKey_buffer(ctx, key, (long)key_len, WOLFSSL_FILETYPE_ASN1),
	    WOLFSSL_SUCCESS);
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
	                       NULL);
	wolfSSL_CTX_SetIORecv(ctx, mem_recv);
	wolfSSL_CTX_SetIOSend(ctx, mem_send);
	return ctx;
}

/* Run a handshake; 0 when both sides complete.  On success *peer_id is the
 * server's view of the client (x509_peer_id on the received chain). */
static int tls_handshake(const uint8_t *cchain, size_t cchain_len, const uint8_t *ckey,
                         size_t ckey_len, const uint8_t *schain, size_t schain_len,
                         const uint8_t *skey, size_t skey_len, struct spiffe_id *peer_id,
                         int *peer_id_ret)
{
	static struct pipe c2s, s2c;
	struct tls_end ce = { &s2c, &c2s }, se = { &c2s, &s2c };
	struct x509_buf root = ca_cert_der(g_root);
	WOLFSSL_CTX *cctx = tls_ctx(false, cchain, cchain_len, ckey, ckey_len, root);
	WOLFSSL_CTX *sctx = tls_ctx(true, schain, schain_len, skey, skey_len, root);
	WOLFSSL *c = wolfSSL_new(cctx), *sv = wolfSSL_new(sctx);
	bool cdone = false, sdone = false, failed = false;
	struct certs_err err;
	int i, r;

	c2s.len = s2c.len = 0;
	wolfSSL_SetIOReadCtx(c, &ce);
	wolfSSL_SetIOWriteCtx(c, &ce);
	wolfSSL_SetIOReadCtx(sv, &se);
	wolfSSL_SetIOWriteCtx(sv, &se);
	for (i = 0; i < 50 && !(cdone && sdone) && !failed; i++) {
		if (!cdone) {
			r = wolfSSL_connect(c);
			if (r == WOLFSSL_SUCCESS)
				cdone = true;
			else if (wolfSSL_get_error(c, r) != WOLFSSL_ERROR_WANT_READ)
				failed = true;
		}
		if (!sdone) {
			r = wolfSSL_accept(sv);
			if (r == WOLFSSL_SUCCESS)
				sdone = true;
			else if (wolfSSL_get_error(sv, r) != WOLFSSL_ERROR_WANT_READ)
				failed = true;
		}
	}
	r = cdone && sdone ? 0 : -1;
	if (r == 0) {
		WOLFSSL_X509_CHAIN *ch = wolfSSL_get_peer_chain(sv);
		struct x509_buf leaf, inter;

		assert_non_null(ch);
		assert_int_equal(wolfSSL_get_chain_count(ch), 2);
		leaf.der = wolfSSL_get_chain_cert(ch, 0);
		leaf.len = (size_t)wolfSSL_get_chain_length(ch, 0);
		inter.der = wolfSSL_get_chain_cert(ch, 1);
		inter.len = (size_t)wolfSSL_get_chain_length(ch, 1);
		*peer_id_ret = x509_peer_id(&leaf, &inter, "cluster.local", peer_id, &err);
	}
	wolfSSL_free(c);
	wolfSSL_free(sv);
	wolfSSL_CTX_free(cctx);
	wolfSSL_CTX_free(sctx);
	return r;
}

static void test_tls_mutual_auth(void **state)
{
	struct spiffe_id a = { "cluster.local", "default", "client" };
	struct spiffe_id b = { "cluster.local", "shop", "server" };
	struct svid *sa, *sb, *foreign;
	struct spiffe_id got;
	struct certs_err err;
	uint8_t *evil, *echain, kder[256];
	size_t evil_len;
	int pr = 1, klen;

	(void)state;
	assert_int_equal(svid_issue(g_node, &a, 3600, 0, &sa, &err), 0);
	assert_int_equal(svid_issue(g_node, &b, 3600, 0, &sb, &err), 0);
	assert_int_equal(svid_issue(g_node2, &a, 3600, 0, &foreign, &err), 0);
	/* Two SVIDs of one mesh: handshake completes, the server sees the
	 * client's SPIFFE ID. */
	assert_int_equal(tls_handshake(sa->chain_der, sa->chain_der_len, sa->key_der,
	                               sa->key_der_len, sb->chain_der, sb->chain_der_len,
	                               sb->key_der, sb->key_der_len, &got, &pr),
	                 0);
	assert_int_equal(pr, 0);
	assert_string_equal(got.ns, "default");
	assert_string_equal(got.sa, "client");
	/* A client from another root is refused by wolfSSL. */
	assert_int_not_equal(tls_handshake(foreign->chain_der, foreign->chain_der_len,
	                                   foreign->key_der, foreign->key_der_len, sb->chain_der,
	                                   sb->chain_der_len, sb->key_der, sb->key_der_len, &got,
	                                   &pr),
	                     0);
	/* A client whose certificate breaks the intermediate's URI name
	 * constraint: wolfSSL 5.5.4 lets it through, x509_peer_id does not. */
	{
		struct ca_spec spec = { 0 };
		ecc_key key;
		WC_RNG rng;
		struct x509_buf n = ca_cert_der(g_node);

		assert_int_equal(wc_InitRng(&rng), 0);
		assert_int_equal(wc_ecc_init(&key), 0);
		assert_int_equal(wc_ecc_make_key_ex(&rng, 32, &key, ECC_SECP256R1), 0);
		wc_FreeRng(&rng);
		spec.org = "ambit";
		spec.uri = "spiffe://evil.local/ns/default/sa/client";
		spec.not_before = (int64_t)time(NULL) - 60;
		spec.not_after = (int64_t)time(NULL) + 600;
		spec.path_len = -1;
		spec.key_usage = "digitalSignature";
		spec.ext_key_usage = "serverAuth,clientAuth";
		assert_int_equal(ca_sign(g_node, &spec, &key, &evil, &evil_len, &err), 0);
		klen = wc_EccKeyToDer(&key, kder, sizeof(kder));
		assert_true(klen > 0);
		wc_ecc_free(&key);
		echain = malloc(evil_len + n.len);
		assert_non_null(echain);
		memcpy(echain, evil, evil_len);
		memcpy(echain + evil_len, n.der, n.len);
		pr = 0;
		assert_int_equal(tls_handshake(echain, evil_len + n.len, kder, (size_t)klen,
		                               sb->chain_der, sb->chain_der_len, sb->key_der,
		                               sb->key_der_len, &got, &pr),
		                 0);
		assert_int_equal(pr, -EPERM);
		free(echain);
		free(evil);
		explicit_bzero(kder, sizeof(kder));
	}
	svid_free(sa);
	svid_free(sb);
	svid_free(foreign);
}

/* node-proxy issues from several threads; every SVID must still verify. */
static void *issue_many(void *arg)
{
	struct spiffe_id id = { "cluster.local", "default", "t" };
	struct x509_buf chain[2], root = ca_cert_der(g_root);
	struct certs_err err;
	struct svid *s;
	long bad = 0;
	int i;

	snprintf(id.sa, sizeof(id.sa), "sa-%ld", (long)(intptr_t)arg);
	for (i = 0; i < 20; i++) {
		if (svid_issue(g_node, &id, 3600, 0, &s, &err) < 0) {
			bad++;
			continue;
		}
		chain[0].der = s->cert_der;
		chain[0].len = s->cert_der_len;
		chain[1] = ca_cert_der(g_node);
		bad += x509_verify_chain(chain, 2, &root, 0, &err) != 0;
		svid_free(s);
	}
	return (void *)bad;
}

static void test_concurrent_issue(void **state)
{
	pthread_t t[4];
	void *bad;
	long i;

	(void)state;
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, issue_many, (void *)(intptr_t)i), 0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], &bad), 0);
		assert_int_equal((long)(intptr_t)bad, 0);
	}
}

int main(void)
{
	int r;

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spiffe_good),
		cmocka_unit_test(test_spiffe_bad),
		cmocka_unit_test(test_spiffe_format),
		cmocka_unit_test(test_uri_subtree),
		cmocka_unit_test(test_der_cursor),
		cmocka_unit_test(test_root_and_node),
		cmocka_unit_test(test_svid_issue_verify),
		cmocka_unit_test(test_wolfssl_certmanager),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_name_constraints),
		cmocka_unit_test(test_key_wipe_and_lock),
		cmocka_unit_test(test_ca_files),
		cmocka_unit_test(test_load_certs),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_concurrent_issue),
		cmocka_unit_test(test_tls_mutual_auth),
	};

	wolfSSL_Init();
	r = cmocka_run_group_tests(tests, group_setup, group_teardown);
	wolfSSL_Cleanup();
	return r;
}
