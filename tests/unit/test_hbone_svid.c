/*
 * HBONE with the mesh's own certificates: a root and per-node
 * intermediates from certs/ca.h (name-constrained to the trust domain),
 * leaf SVIDs issued in memory by certs/svid.h, handed to tls_identity_new
 * exactly as node-proxy does (DER chain leaf+intermediate, SEC1 key, root
 * DER).  Pods on two different nodes talk; expired and foreign-root SVIDs
 * are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <time.h>

#include "certs/ca.h"
#include "certs/svid.h"
#include "node-proxy/hbone.h"
#include "node-proxy/tls.h"

#include "tests/unit/test_hbone_util.c"

static struct ca *root, *node1, *node2, *root2, *node3, *oldnode;

static int setup(void **state)
{
	struct certs_err e;

	int64_t now = (int64_t)time(NULL);

	(void)state;
	/* The root dates from yesterday so that an intermediate (and SVIDs)
	 * can be issued in the past for the expiry test. */
	if (ca_create_root(TD, 30, now - 86400, &root, &e) ||
	    ca_issue_node(root, "node1", 24, 0, &node1, &e) ||
	    ca_issue_node(root, "old", 24, now - 10800, &oldnode, &e) ||
	    ca_issue_node(root, "node2", 24, 0, &node2, &e) ||
	    ca_create_root(TD, 30, 0, &root2, &e) ||
	    ca_issue_node(root2, "node3", 24, 0, &node3, &e)) {
		fprintf(stderr, "ca: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ca_free(oldnode);
	ca_free(node3);
	ca_free(root2);
	ca_free(node2);
	ca_free(node1);
	ca_free(root);
	return 0;
}

/* An identity for ns/sa issued by @node, trusting @trust; @now 0 = now. */
static struct tls_identity *svid_identity(struct ca *node, struct ca *trust, const char *ns,
                                          const char *sa, int64_t now)
{
	struct tls_identity_config cfg = { 0 };
	struct tls_identity *id = NULL;
	struct spiffe_id sid = { 0 };
	struct certs_err e;
	struct svid *s;
	struct x509_buf r = ca_cert_der(trust);

	snprintf(sid.td, sizeof(sid.td), "%s", TD);
	snprintf(sid.ns, sizeof(sid.ns), "%s", ns);
	snprintf(sid.sa, sizeof(sid.sa), "%s", sa);
	if (svid_issue(node, &sid, 3600, now, &s, &e)) {
		fprintf(stderr, "svid: %s\n", e.msg);
		return NULL;
	}
	cfg.chain = s->chain_der;
	cfg.chain_len = s->chain_der_len;
	cfg.key = s->key_der;
	cfg.key_len = s->key_der_len;
	cfg.roots = r.der;
	cfg.roots_len = r.len;
	if (tls_identity_new(&cfg, &id))
		id = NULL;
	svid_free(s); /* the identity keeps its own copies */
	return id;
}

static void connect_pair(struct tls_identity *ci, struct tls_identity *si, const char *expect,
                         struct side **cli, struct side **srv)
{
	assert_non_null(ci);
	assert_non_null(si);
	*cli = side_new(HBONE_CLIENT, ci, expect, NULL);
	*srv = side_new(HBONE_SERVER, si, NULL, NULL);
	assert_non_null(*cli);
	assert_non_null(*srv);
	tls_identity_unref(ci);
	tls_identity_unref(si);
	run_pipe(*cli, *srv);
}

static void test_svid_tunnel_across_nodes(void **state)
{
	struct side *cli, *srv;
	int32_t sid;

	(void)state;
	/* Pod on node1 (ns a, sa web) to a pod on node2 (ns b, sa db). */
	connect_pair(svid_identity(node1, root, "a", "web", 0),
	             svid_identity(node2, root, "b", "db", 0), "spiffe://" TD "/ns/b/sa/db", &cli,
	             &srv);
	assert_int_equal(cli->why, TLS_FAIL_NONE);
	assert_int_equal(srv->why, TLS_FAIL_NONE);
	assert_string_equal(hbone_conn_peer_id(srv->c), "spiffe://" TD "/ns/a/sa/web");
	assert_int_equal(hbone_stream_open(cli->c, "10.0.2.7:5432", NULL, 0, NULL, &sid), 0);
	run_pipe(cli, srv);
	assert_int_equal(cli->s[sid].status, 200);
	assert_string_equal(srv->s[sid].peer, "spiffe://" TD "/ns/a/sa/web");
	assert_int_equal(hbone_stream_write(cli->c, sid, (const uint8_t *)"select 1", 8), 8);
	run_pipe(cli, srv);
	assert_int_equal(srv->s[sid].rx, 8);
	side_free(cli);
	side_free(srv);
}

static void test_svid_refusals(void **state)
{
	struct side *cli, *srv;

	(void)state;
	/* Client SVID from another mesh's root (the client itself trusts
	 * ours, so the server is the one to judge). */
	connect_pair(svid_identity(node3, root, "a", "web", 0),
	             svid_identity(node2, root, "b", "db", 0), "spiffe://" TD "/ns/b/sa/db", &cli,
	             &srv);
	assert_int_equal(srv->why, TLS_FAIL_UNKNOWN_CA);
	assert_int_equal(cli->why, TLS_FAIL_NONE); /* TLS 1.3: client done first... */
	assert_false(hbone_conn_established(srv->c));
	side_free(cli);
	side_free(srv);

	/* ...and a client of the other mesh refuses our server. */
	connect_pair(svid_identity(node3, root2, "a", "web", 0),
	             svid_identity(node2, root, "b", "db", 0), "spiffe://" TD "/ns/b/sa/db", &cli,
	             &srv);
	assert_int_equal(cli->why, TLS_FAIL_UNKNOWN_CA);
	assert_int_equal(srv->why, TLS_FAIL_PEER_ALERT);
	side_free(cli);
	side_free(srv);

	/* Client SVID issued two hours ago for one hour: expired. */
	connect_pair(svid_identity(oldnode, root, "a", "web", (int64_t)time(NULL) - 7200),
	             svid_identity(node2, root, "b", "db", 0), "spiffe://" TD "/ns/b/sa/db", &cli,
	             &srv);
	assert_int_equal(srv->why, TLS_FAIL_EXPIRED);
	side_free(cli);
	side_free(srv);

	/* The server is a valid mesh workload, but not the one expected. */
	connect_pair(svid_identity(node1, root, "a", "web", 0),
	             svid_identity(node2, root, "b", "cache", 0), "spiffe://" TD "/ns/b/sa/db",
	             &cli, &srv);
	assert_int_equal(cli->why, TLS_FAIL_WRONG_IDENTITY);
	side_free(cli);
	side_free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_svid_tunnel_across_nodes),
		cmocka_unit_test(test_svid_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
