/* Unit tests of node-proxy's per-service-account SVID cache (identity.c):
 * a real root and node intermediate made with certs/ into a temp dir. */
#include <wolfssl/options.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "certs/ca.h"
#include "node-proxy/identity.h"
#include "node-proxy/tls.h"

static char dir[64];

static int make_ca(const char *td, const char *out)
{
	struct ca *root = NULL, *node = NULL;
	struct certs_err e;
	char c[256], k[256], r[256];
	int rc;

	rc = ca_create_root(td, 10, 0, &root, &e);
	if (!rc)
		rc = ca_issue_node(root, "n1", 24, 0, &node, &e);
	snprintf(c, sizeof(c), "%s/node-cert.pem", out);
	snprintf(k, sizeof(k), "%s/node-key.pem", out);
	snprintf(r, sizeof(r), "%s/root-cert.pem", out);
	if (!rc)
		rc = ca_save(node, c, k, &e);
	if (!rc)
		rc = ca_save(root, r, NULL, &e);
	ca_free(node);
	ca_free(root);
	return rc;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_identity.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	return make_ca("cluster.local", dir);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static json_t *find(json_t *arr, const char *id)
{
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
	{
		if (!strcmp(json_string_value(json_object_get(v, "id")), id))
			return v;
	}
	return NULL;
}

static void test_shared_and_dropped(void **state)
{
	struct identity_cache *ic;
	struct tls_identity *a, *b;
	char err[256];
	json_t *j, *e;

	(void)state;
	assert_int_equal(identity_cache_new(dir, "cluster.local", 3600, &ic, err, sizeof(err)), 0);
	assert_null(identity_get(ic, "ns1", "web"));
	assert_int_equal(identity_pod_add(ic, "p1", "ns1", "web", err, sizeof(err)), 0);
	assert_int_equal(identity_pod_add(ic, "p2", "ns1", "web", err, sizeof(err)), 0);
	assert_int_equal(identity_pod_add(ic, "p2", "ns1", "web", err, sizeof(err)),
	                 0); /* re-add */
	a = identity_get(ic, "ns1", "web");
	b = identity_get(ic, "ns1", "web");
	assert_non_null(a);
	assert_ptr_equal(a, b); /* shared: one SVID per service account */
	assert_string_equal(tls_identity_spiffe_id(a), "spiffe://cluster.local/ns/ns1/sa/web");
	tls_identity_unref(b);

	j = identity_json(ic);
	assert_int_equal(json_array_size(j), 1);
	e = find(j, "spiffe://cluster.local/ns/ns1/sa/web");
	assert_non_null(e);
	assert_int_equal(json_integer_value(json_object_get(e, "pods")), 2);
	assert_int_equal(json_integer_value(json_object_get(e, "generation")), 1);
	json_int_t nb = json_integer_value(json_object_get(e, "not_before"));
	json_int_t na = json_integer_value(json_object_get(e, "not_after"));
	json_int_t ra = json_integer_value(json_object_get(e, "renew_at"));
	assert_true(na - nb >= 3600 && na - nb <= 3600 + 301);
	assert_true(ra > nb && ra < na);
	char *dump = json_dumps(j, 0);
	assert_null(strstr(dump, "PRIVATE")); /* never key bytes */
	free(dump);
	json_decref(j);

	/* a pod moves to another account; the old one stays for p2 */
	assert_int_equal(identity_pod_add(ic, "p1", "ns1", "api", err, sizeof(err)), 0);
	j = identity_json(ic);
	assert_int_equal(json_array_size(j), 2);
	json_decref(j);
	identity_pod_del(ic, "p2");
	assert_null(identity_get(ic, "ns1", "web")); /* last pod gone: dropped */
	/* the reference taken before still works (open connections keep it) */
	assert_string_equal(tls_identity_spiffe_id(a), "spiffe://cluster.local/ns/ns1/sa/web");
	tls_identity_unref(a);
	identity_pod_del(ic, "p1");
	identity_pod_del(ic, "nope");
	j = identity_json(ic);
	assert_int_equal(json_array_size(j), 0);
	json_decref(j);
	identity_cache_free(ic);
}

static void test_renew_swaps(void **state)
{
	struct identity_cache *ic;
	struct tls_identity *old, *cur = NULL;
	char err[256], serial0[80];
	json_t *j;

	(void)state;
	assert_int_equal(identity_cache_new(dir, "cluster.local", 3600, &ic, err, sizeof(err)), 0);
	assert_int_equal(identity_pod_add(ic, "p1", "default", "sa1", err, sizeof(err)), 0);
	old = identity_get(ic, "default", "sa1");
	j = identity_json(ic);
	snprintf(serial0, sizeof(serial0), "%s",
	         json_string_value(json_object_get(json_array_get(j, 0), "serial")));
	json_decref(j);
	identity_renew_now(ic);
	for (int i = 0; i < 200; i++) {
		cur = identity_get(ic, "default", "sa1");
		if (cur != old)
			break;
		tls_identity_unref(cur);
		cur = NULL;
		usleep(10000);
	}
	assert_non_null(cur);
	assert_ptr_not_equal(cur, old);
	j = identity_json(ic);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "generation")),
	                 2);
	assert_string_not_equal(json_string_value(json_object_get(json_array_get(j, 0), "serial")),
	                        serial0);
	json_decref(j);
	uint64_t issued, failed;
	identity_counters(ic, &issued, &failed);
	assert_int_equal(issued, 2);
	assert_int_equal(failed, 0);
	/* the old identity is still usable by whoever holds it */
	assert_string_equal(tls_identity_spiffe_id(old), tls_identity_spiffe_id(cur));
	tls_identity_unref(old);
	tls_identity_unref(cur);
	identity_cache_free(ic);
}

static void test_half_life_timer(void **state)
{
	struct identity_cache *ic;
	struct tls_identity *a, *b = NULL;
	char err[256];

	(void)state;
	/* 4 s lifetime: renewed ~2 s after issue, by the thread alone */
	assert_int_equal(identity_cache_new(dir, "cluster.local", 4, &ic, err, sizeof(err)), 0);
	assert_int_equal(identity_pod_add(ic, "p1", "default", "short", err, sizeof(err)), 0);
	a = identity_get(ic, "default", "short");
	for (int i = 0; i < 400; i++) {
		b = identity_get(ic, "default", "short");
		if (b != a)
			break;
		tls_identity_unref(b);
		b = NULL;
		usleep(10000);
	}
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	tls_identity_unref(a);
	tls_identity_unref(b);
	identity_cache_free(ic);
}

static void test_refusals(void **state)
{
	struct identity_cache *ic = NULL;
	char err[256] = "", other[96];

	(void)state;
	assert_int_not_equal(
	    identity_cache_new("/nonexistent/dir", "cluster.local", 3600, &ic, err, sizeof(err)),
	    0);
	assert_non_null(strstr(err, "/nonexistent/dir"));
	assert_int_not_equal(identity_cache_new(dir, "other.domain", 3600, &ic, err, sizeof(err)),
	                     0);
	assert_non_null(strstr(err, "trust domain"));
	/* a key that does not belong to the certificate */
	snprintf(other, sizeof(other), "%s/other", dir);
	assert_int_equal(mkdir(other, 0700), 0);
	assert_int_equal(make_ca("cluster.local", other), 0);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "cp %s/node-cert.pem %s/node-cert.pem", dir, other);
	assert_int_equal(system(cmd), 0);
	err[0] = '\0';
	assert_int_not_equal(
	    identity_cache_new(other, "cluster.local", 3600, &ic, err, sizeof(err)), 0);
	assert_true(strlen(err) > 0);

	assert_int_equal(identity_cache_new(dir, "cluster.local", 3600, &ic, err, sizeof(err)), 0);
	/* not a valid SPIFFE path segment */
	assert_int_not_equal(identity_pod_add(ic, "p1", "bad ns", "sa", err, sizeof(err)), 0);
	assert_int_not_equal(identity_pod_add(ic, "p1", "ns", "..", err, sizeof(err)), 0);
	assert_null(identity_get(ic, "bad ns", "sa"));
	json_t *j = identity_json(ic);
	assert_int_equal(json_array_size(j), 0);
	json_decref(j);
	identity_cache_free(ic);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shared_and_dropped),
		cmocka_unit_test(test_renew_swaps),
		cmocka_unit_test(test_half_life_timer),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
