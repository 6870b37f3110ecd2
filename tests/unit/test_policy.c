/* Table-driven tests of policy_eval(): the evaluation order of docs/policy.md
 * (STRICT, then DENY, then "no ALLOW policy", then ALLOW), scopes, match
 * forms, empty policies and rules.  Each case loads its own small policy
 * text, so a case reads on its own. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "node-proxy/confdir.h"
#include "node-proxy/policy.h"

#define ALLOW_FRONTEND                                                                             \
	"[policy allow-frontend]\nnamespace = shop\nselector = app=backend\naction = ALLOW\n"      \
	"[rule allow-frontend]\nprincipals = spiffe://cluster.local/ns/shop/sa/frontend\n"

#define DENY_LEGACY                                                                                \
	"[policy deny-legacy]\nnamespace = shop\naction = DENY\n"                                  \
	"[rule deny-legacy]\nnamespaces = legacy\n"

#define GLOBAL_DENY                                                                                \
	"[policy deny-evil]\nnamespace = ambit-system\naction = DENY\n"                            \
	"[rule deny-evil]\nprincipals = *evil\n"

#define GLOBAL_SEL                                                                                 \
	"[policy db-from-shop]\nnamespace = ambit-system\nselector = app=db\n"                     \
	"[rule db-from-shop]\nnamespaces = shop\n"

#define FORMS                                                                                      \
	"[policy forms]\nnamespace = t\naction = ALLOW\n"                                          \
	"[rule forms]\nprincipals = spiffe://td/ns/a/sa/exact\n"                                   \
	"[rule forms]\nprincipals = td/ns/b/*\n"                                                   \
	"[rule forms]\nprincipals = *-job\n"

#define PRESENCE "[policy mtls-only]\nnamespace = t\n[rule mtls-only]\nprincipals = *\n"

#define DENY_PLAIN                                                                                 \
	"[policy no-plain]\nnamespace = t\naction = DENY\n"                                        \
	"[rule no-plain]\nnot_principals = *\n"

#define NOTS                                                                                       \
	"[policy shop-but-bad]\nnamespace = t\n[rule shop-but-bad]\nnamespaces = shop\n"           \
	"not_principals = spiffe://td/ns/shop/sa/bad\n"

#define IPS                                                                                        \
	"[policy nets]\nnamespace = t\n[rule nets]\nip_blocks = 10.0.0.0/8, fd00::/8\n"            \
	"not_ip_blocks = 10.66.0.0/16\n"

#define PORTS                                                                                      \
	"[policy ports]\nnamespace = t\n[rule ports]\nports = 8080, 9000\n"                        \
	"[policy no-jobs-9000]\nnamespace = t\naction = DENY\n"                                    \
	"[rule no-jobs-9000]\nports = 9000\nprincipals = *-job\n"

#define DENY_ALL      "[policy deny-all]\nnamespace = t\naction = DENY\n[rule deny-all]\n"
#define ALLOW_NOTHING "[policy allow-nothing]\nnamespace = t\naction = ALLOW\n"
#define DENY_NOTHING  "[policy deny-nothing]\nnamespace = t\naction = DENY\n"
#define ALLOW_ALL     "[policy allow-all]\nnamespace = t\n[rule allow-all]\n"

#define STRICT_SHOP "[peer_authentication strict]\nnamespace = shop\nmode = STRICT\n"
#define STRICT_MIX                                                                                 \
	"[peer_authentication mesh]\nnamespace = ambit-system\nmode = STRICT\n"                    \
	"[peer_authentication legacy]\nnamespace = shop\nselector = app=legacy\n"                  \
	"mode = PERMISSIVE\n"                                                                      \
	"[peer_authentication open]\nnamespace = open\nmode = PERMISSIVE\n"

#define TWO_ALLOW                                                                                  \
	"[policy a1]\nnamespace = t\n[rule a1]\nports = 1\n"                                       \
	"[policy a2]\nnamespace = t\n[rule a2]\nports = 2\n"
#define ANDED                                                                                      \
	"[policy both]\nnamespace = t\n[rule both]\nprincipals = td/ns/x/sa/y\n"                   \
	"ports = 80\n"
#define NOT_PORTS                                                                                  \
	"[policy only-443]\nnamespace = t\naction = DENY\n[rule only-443]\n"                       \
	"not_ports = 443\n"
#define NOT_NS "[policy not-evil]\nnamespace = t\n[rule not-evil]\nnot_namespaces = evil\n"
#define MULTI_VALUES                                                                               \
	"[policy mv]\nnamespace = t\n[rule mv]\nprincipals = td/ns/q/sa/a,\n"                      \
	"  td/ns/q/sa/b\nprincipals = td/ns/q/sa/c\n"

enum wl_id { W_BACKEND, W_WEB, W_DB, W_OTHER, W_LEGACY, W_OPEN, W_T };

struct tcase {
	const char *what;
	const char *text; /* NULL: the NULL set */
	enum wl_id dst;
	const char *principal;
	const char *src_ns;
	const char *src_ip;
	uint16_t port;
	bool plaintext;
	bool allow;
	enum policy_reason reason;
	const char *policy;
};

#define FE "spiffe://cluster.local/ns/shop/sa/frontend"

static const struct tcase cases[] = {
	{ "no policies at all", "", W_BACKEND, FE, 0, 0, 80, 0, 1, POLICY_ALLOW_NO_POLICY, 0 },
	{ "NULL set", NULL, W_BACKEND, NULL, 0, 0, 80, 1, 1, POLICY_ALLOW_NO_POLICY, 0 },
	{ "ALLOW matches", ALLOW_FRONTEND, W_BACKEND, FE, 0, 0, 80, 0, 1, POLICY_ALLOW_MATCH,
	  "shop/allow-frontend" },
	{ "ALLOW only, not matching", ALLOW_FRONTEND, W_BACKEND,
	  "spiffe://cluster.local/ns/shop/sa/intruder", 0, 0, 80, 0, 0, POLICY_DENY_NO_MATCH, 0 },
	{ "selector does not select the workload", ALLOW_FRONTEND, W_WEB,
	  "spiffe://cluster.local/ns/shop/sa/intruder", 0, 0, 80, 0, 1, POLICY_ALLOW_NO_POLICY, 0 },
	{ "policy of another namespace", ALLOW_FRONTEND, W_OTHER,
	  "spiffe://cluster.local/ns/shop/sa/intruder", 0, 0, 80, 0, 1, POLICY_ALLOW_NO_POLICY, 0 },
	{ "plaintext has no principal", ALLOW_FRONTEND, W_BACKEND, NULL, 0, "10.0.0.1", 80, 1, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "namespace DENY does not hit others", ALLOW_FRONTEND DENY_LEGACY, W_BACKEND, FE, 0, 0, 80,
	  0, 1, POLICY_ALLOW_MATCH, "shop/allow-frontend" },
	{ "namespace-wide DENY beats workload ALLOW", ALLOW_FRONTEND DENY_LEGACY, W_BACKEND,
	  "spiffe://cluster.local/ns/legacy/sa/frontend", 0, 0, 80, 0, 0, POLICY_DENY_MATCH,
	  "shop/deny-legacy" },
	{ "explicit source namespace", ALLOW_FRONTEND DENY_LEGACY, W_BACKEND, NULL, "legacy", 0, 80,
	  0, 0, POLICY_DENY_MATCH, "shop/deny-legacy" },
	{ "plaintext: a principal filled in is ignored", ALLOW_FRONTEND, W_BACKEND, FE, "shop", 0,
	  80, 1, 0, POLICY_DENY_NO_MATCH, 0 },
	{ "plaintext: nor is a namespace", ALLOW_FRONTEND DENY_LEGACY, W_BACKEND, NULL, "legacy", 0,
	  80, 1, 0, POLICY_DENY_NO_MATCH, 0 },
	{ "global DENY in the workload's namespace", GLOBAL_DENY, W_BACKEND,
	  "spiffe://td/ns/x/sa/pure-evil", 0, 0, 80, 0, 0, POLICY_DENY_MATCH,
	  "ambit-system/deny-evil" },
	{ "global DENY elsewhere", GLOBAL_DENY, W_DB, "spiffe://td/ns/x/sa/evil", 0, 0, 80, 0, 0,
	  POLICY_DENY_MATCH, "ambit-system/deny-evil" },
	{ "global DENY, other principal", GLOBAL_DENY, W_DB, "spiffe://td/ns/x/sa/evil2", 0, 0, 80,
	  0, 1, POLICY_ALLOW_NO_POLICY, 0 },
	{ "global ALLOW with selector, match", GLOBAL_SEL, W_DB, FE, 0, 0, 5432, 0, 1,
	  POLICY_ALLOW_MATCH, "ambit-system/db-from-shop" },
	{ "global ALLOW with selector, no match", GLOBAL_SEL, W_DB, "spiffe://td/ns/ns2/sa/x", 0, 0,
	  5432, 0, 0, POLICY_DENY_NO_MATCH, 0 },
	{ "global ALLOW with selector, not selected", GLOBAL_SEL, W_BACKEND,
	  "spiffe://td/ns/a/sa/x", 0, 0, 80, 0, 1, POLICY_ALLOW_NO_POLICY, 0 },
	{ "principal exact", FORMS, W_T, "spiffe://td/ns/a/sa/exact", 0, 0, 80, 0, 1,
	  POLICY_ALLOW_MATCH, "t/forms" },
	{ "principal exact is not a prefix", FORMS, W_T, "spiffe://td/ns/a/sa/exact2", 0, 0, 80, 0,
	  0, POLICY_DENY_NO_MATCH, 0 },
	{ "principal prefix (Istio form)", FORMS, W_T, "spiffe://td/ns/b/sa/anything", 0, 0, 80, 0,
	  1, POLICY_ALLOW_MATCH, "t/forms" },
	{ "principal suffix", FORMS, W_T, "spiffe://td/ns/c/sa/nightly-job", 0, 0, 80, 0, 1,
	  POLICY_ALLOW_MATCH, "t/forms" },
	{ "principal none of the forms", FORMS, W_T, "spiffe://td/ns/c/sa/jobs", 0, 0, 80, 0, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "presence: any identity", PRESENCE, W_T, "spiffe://x/ns/y/sa/z", 0, 0, 80, 0, 1,
	  POLICY_ALLOW_MATCH, "t/mtls-only" },
	{ "presence: plaintext is no identity", PRESENCE, W_T, NULL, 0, "10.1.1.1", 80, 1, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "not_principals=* denies plaintext", DENY_PLAIN, W_T, NULL, 0, 0, 80, 1, 0,
	  POLICY_DENY_MATCH, "t/no-plain" },
	{ "not_principals=* lets mTLS through", DENY_PLAIN, W_T, FE, 0, 0, 80, 0, 1,
	  POLICY_ALLOW_NO_POLICY, 0 },
	{ "namespaces + not_principals, good", NOTS, W_T, "spiffe://td/ns/shop/sa/good", 0, 0, 80,
	  0, 1, POLICY_ALLOW_MATCH, "t/shop-but-bad" },
	{ "namespaces + not_principals, excluded", NOTS, W_T, "spiffe://td/ns/shop/sa/bad", 0, 0,
	  80, 0, 0, POLICY_DENY_NO_MATCH, 0 },
	{ "namespaces, other namespace", NOTS, W_T, "spiffe://td/ns/shop2/sa/good", 0, 0, 80, 0, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "ip_blocks v4", IPS, W_T, NULL, 0, "10.1.2.3", 80, 1, 1, POLICY_ALLOW_MATCH, "t/nets" },
	{ "not_ip_blocks carve-out", IPS, W_T, NULL, 0, "10.66.9.9", 80, 1, 0, POLICY_DENY_NO_MATCH,
	  0 },
	{ "ip_blocks v6", IPS, W_T, NULL, 0, "fd00::1", 80, 1, 1, POLICY_ALLOW_MATCH, "t/nets" },
	{ "ip_blocks v4 outside", IPS, W_T, NULL, 0, "192.168.1.1", 80, 1, 0, POLICY_DENY_NO_MATCH,
	  0 },
	{ "ip_blocks v6 outside", IPS, W_T, NULL, 0, "fe80::1", 80, 1, 0, POLICY_DENY_NO_MATCH, 0 },
	{ "ip_blocks, unknown source address", IPS, W_T, NULL, 0, NULL, 80, 1, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "ports allowed", PORTS, W_T, NULL, 0, 0, 8080, 1, 1, POLICY_ALLOW_MATCH, "t/ports" },
	{ "ports not listed", PORTS, W_T, NULL, 0, 0, 22, 1, 0, POLICY_DENY_NO_MATCH, 0 },
	{ "port-scoped DENY", PORTS, W_T, "spiffe://td/ns/a/sa/x-job", 0, 0, 9000, 0, 0,
	  POLICY_DENY_MATCH, "t/no-jobs-9000" },
	{ "port-scoped DENY, other principal", PORTS, W_T, "spiffe://td/ns/a/sa/web", 0, 0, 9000, 0,
	  1, POLICY_ALLOW_MATCH, "t/ports" },
	{ "DENY with an empty rule denies all", DENY_ALL, W_T, FE, 0, 0, 80, 0, 0,
	  POLICY_DENY_MATCH, "t/deny-all" },
	{ "ALLOW without rules allows nothing", ALLOW_NOTHING, W_T, FE, 0, 0, 80, 0, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "DENY without rules denies nothing", DENY_NOTHING, W_T, FE, 0, 0, 80, 0, 1,
	  POLICY_ALLOW_NO_POLICY, 0 },
	{ "ALLOW with an empty rule allows all", ALLOW_ALL, W_T, NULL, 0, 0, 80, 1, 1,
	  POLICY_ALLOW_MATCH, "t/allow-all" },
	{ "DENY beats ALLOW on the same workload", ALLOW_ALL DENY_ALL, W_T, FE, 0, 0, 80, 0, 0,
	  POLICY_DENY_MATCH, "t/deny-all" },
	{ "STRICT refuses plaintext", STRICT_SHOP, W_BACKEND, NULL, 0, "10.0.0.9", 80, 1, 0,
	  POLICY_DENY_PLAINTEXT, "shop/strict" },
	{ "STRICT accepts mTLS", STRICT_SHOP, W_BACKEND, FE, 0, 0, 80, 0, 1, POLICY_ALLOW_NO_POLICY,
	  0 },
	{ "STRICT of another namespace", STRICT_SHOP, W_OTHER, NULL, 0, 0, 80, 1, 1,
	  POLICY_ALLOW_NO_POLICY, 0 },
	{ "STRICT before ALLOW-all", STRICT_SHOP ALLOW_ALL, W_BACKEND, NULL, 0, 0, 80, 1, 0,
	  POLICY_DENY_PLAINTEXT, "shop/strict" },
	{ "workload PERMISSIVE beats mesh STRICT", STRICT_MIX, W_LEGACY, NULL, 0, 0, 80, 1, 1,
	  POLICY_ALLOW_NO_POLICY, 0 },
	{ "mesh STRICT", STRICT_MIX, W_BACKEND, NULL, 0, 0, 80, 1, 0, POLICY_DENY_PLAINTEXT,
	  "ambit-system/mesh" },
	{ "namespace PERMISSIVE beats mesh STRICT", STRICT_MIX, W_OPEN, NULL, 0, 0, 80, 1, 1,
	  POLICY_ALLOW_NO_POLICY, 0 },
	{ "PERMISSIVE: plaintext under ALLOW rules", STRICT_MIX ALLOW_FRONTEND, W_LEGACY, NULL, 0,
	  0, 80, 1, 1, POLICY_ALLOW_NO_POLICY, 0 },
	{ "second ALLOW matches", TWO_ALLOW, W_T, NULL, 0, 0, 2, 1, 1, POLICY_ALLOW_MATCH, "t/a2" },
	{ "fields AND'ed: one missing", ANDED, W_T, "spiffe://td/ns/x/sa/y", 0, 0, 81, 0, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "fields AND'ed: both", ANDED, W_T, "spiffe://td/ns/x/sa/y", 0, 0, 80, 0, 1,
	  POLICY_ALLOW_MATCH, "t/both" },
	{ "not_ports DENY, other port", NOT_PORTS, W_T, FE, 0, 0, 80, 0, 0, POLICY_DENY_MATCH,
	  "t/only-443" },
	{ "not_ports DENY, listed port", NOT_PORTS, W_T, FE, 0, 0, 443, 0, 1,
	  POLICY_ALLOW_NO_POLICY, 0 },
	{ "not_namespaces, other ns", NOT_NS, W_T, FE, 0, 0, 80, 0, 1, POLICY_ALLOW_MATCH,
	  "t/not-evil" },
	{ "not_namespaces, listed ns", NOT_NS, W_T, "spiffe://td/ns/evil/sa/x", 0, 0, 80, 0, 0,
	  POLICY_DENY_NO_MATCH, 0 },
	{ "not_namespaces, plaintext has no namespace", NOT_NS, W_T, NULL, 0, 0, 80, 1, 1,
	  POLICY_ALLOW_MATCH, "t/not-evil" },
	{ "values on a continuation line", MULTI_VALUES, W_T, "spiffe://td/ns/q/sa/b", 0, 0, 80, 0,
	  1, POLICY_ALLOW_MATCH, "t/mv" },
	{ "values of a repeated key", MULTI_VALUES, W_T, "spiffe://td/ns/q/sa/c", 0, 0, 80, 0, 1,
	  POLICY_ALLOW_MATCH, "t/mv" },
	{ "values: none matches", MULTI_VALUES, W_T, "spiffe://td/ns/q/sa/d", 0, 0, 80, 0, 0,
	  POLICY_DENY_NO_MATCH, 0 },
};

static void make_wl(enum wl_id id, struct workload *w)
{
	static const struct {
		const char *ns, *name, *app;
	} t[] = {
		[W_BACKEND] = { "shop", "backend-1", "backend" },
		[W_WEB] = { "shop", "web-1", "web" },
		[W_DB] = { "ns2", "db-1", "db" },
		[W_OTHER] = { "other", "backend-1", "backend" },
		[W_LEGACY] = { "shop", "legacy-1", "legacy" },
		[W_OPEN] = { "open", "x-1", "x" },
		[W_T] = { "t", "t-1", "t" },
	};

	memset(w, 0, sizeof(*w));
	snprintf(w->ns, sizeof(w->ns), "%s", t[id].ns);
	snprintf(w->name, sizeof(w->name), "%s", t[id].name);
	snprintf(w->sa, sizeof(w->sa), "default");
	w->n_labels = 2;
	snprintf(w->labels[0].key, sizeof(w->labels[0].key), "version");
	snprintf(w->labels[0].val, sizeof(w->labels[0].val), "v1");
	snprintf(w->labels[1].key, sizeof(w->labels[1].key), "app");
	snprintf(w->labels[1].val, sizeof(w->labels[1].val), "%s", t[id].app);
}

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *t = &cases[i];
		struct policy_set *ps = NULL;
		struct conf_errors e;
		struct workload w;
		struct policy_conn c = { 0 };
		struct policy_verdict v;
		int rc;

		conf_errors_init(&e);
		if (t->text) {
			rc = policy_load_buf("case.ini", t->text, strlen(t->text), NULL, &ps, &e);
			if (rc)
				fail_msg("case %zu (%s): load: %s", i, t->what, e.msg[0]);
		}
		make_wl(t->dst, &w);
		c.src_principal = t->principal;
		c.src_ns = t->src_ns;
		if (t->src_ip)
			assert_int_equal(conf_parse_ip(t->src_ip, &c.src_ip), 0);
		c.dst_port = t->port;
		c.plaintext = t->plaintext;
		rc = policy_eval(ps, &w, &c, &v);
		if (v.allow != t->allow || v.reason != t->reason || (rc == 0) != t->allow ||
		    (t->policy == NULL) != (v.policy == NULL) ||
		    (t->policy && strcmp(t->policy, v.policy) != 0))
			fail_msg("case %zu (%s): got %s %s by %s, want %s %s by %s", i, t->what,
			         v.allow ? "allow" : "deny", policy_reason_str(v.reason),
			         v.policy ? v.policy : "-", t->allow ? "allow" : "deny",
			         policy_reason_str(t->reason), t->policy ? t->policy : "-");
		policy_set_put(ps);
	}
	print_message("%zu evaluation cases\n", sizeof(cases) / sizeof(cases[0]));
}

/* Many namespaces: the index finds each namespace's policy and only it. */
static void test_many_namespaces(void **state)
{
	size_t cap = 300 * 128, len = 0;
	char *text = malloc(cap);
	struct policy_set *ps = NULL;
	struct conf_errors e;
	struct workload w;
	struct policy_conn c = { .src_principal = "spiffe://td/ns/a/sa/b", .dst_port = 1 };
	struct policy_verdict v;

	(void)state;
	for (int i = 0; i < 300; i++)
		len += (size_t)snprintf(text + len, cap - len,
		                        "[policy p%d]\nnamespace = ns%d\n[rule p%d]\nports = %d\n",
		                        i, i, i, i + 1);
	conf_errors_init(&e);
	assert_int_equal(policy_load_buf("many.ini", text, len, NULL, &ps, &e), 0);
	assert_int_equal(policy_set_count(ps), 300);
	make_wl(W_T, &w);
	for (int i = 0; i < 300; i++) {
		snprintf(w.ns, sizeof(w.ns), "ns%d", i);
		c.dst_port = (uint16_t)(i + 1);
		assert_int_equal(policy_eval(ps, &w, &c, &v), 0);
		assert_int_equal(v.reason, POLICY_ALLOW_MATCH);
		c.dst_port = (uint16_t)(i + 2);
		assert_int_equal(policy_eval(ps, &w, &c, &v), -EACCES);
	}
	/* CPU cost of one decision with 300 namespaces loaded: printed, not asserted */
	{
		struct timespec t0, t1;
		int denied = 0;
		snprintf(w.ns, sizeof(w.ns), "ns150");
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
		for (int i = 0; i < 1000000; i++) {
			c.dst_port = (uint16_t)(150 + (i & 3));
			denied += policy_eval(ps, &w, &c, &v) != 0;
		}
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
		assert_int_equal(denied, 750000);
		print_message("policy_eval: %.0f ns per decision\n",
		              ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e6);
	}
	free(text);
	policy_set_put(ps);
}

/* References: the set lives until the last put. */
static void test_refcount(void **state)
{
	struct policy_set *ps = NULL;
	struct conf_errors e;

	(void)state;
	conf_errors_init(&e);
	assert_int_equal(policy_load_buf("r.ini", ALLOW_ALL, strlen(ALLOW_ALL), NULL, &ps, &e), 0);
	assert_ptr_equal(policy_set_get(ps), ps);
	policy_set_put(ps);
	assert_int_equal(policy_set_count(ps), 1);
	policy_set_put(ps);
	policy_set_put(NULL);
	assert_null(policy_set_get(NULL));
}

/* The identity of a workload, as principals match it. */
static void test_principal_of(void **state)
{
	struct workload w;
	char buf[128], small[16];
	struct policy_set *ps = NULL;
	struct conf_errors e;
	struct policy_conn c = { .dst_port = 80 };
	struct policy_verdict v;

	(void)state;
	make_wl(W_BACKEND, &w);
	snprintf(w.sa, sizeof(w.sa), "frontend");
	assert_int_equal(policy_principal_of(&w, "cluster.local", buf, sizeof(buf)), 0);
	assert_string_equal(buf, FE);
	assert_int_equal(policy_principal_of(&w, "cluster.local", small, sizeof(small)), -ENOSPC);
	w.sa[0] = '\0';
	assert_int_equal(policy_principal_of(&w, "td", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "spiffe://td/ns/shop/sa/default");

	conf_errors_init(&e);
	assert_int_equal(
	    policy_load_buf("p.ini", ALLOW_FRONTEND, strlen(ALLOW_FRONTEND), NULL, &ps, &e), 0);
	make_wl(W_BACKEND, &w);
	snprintf(w.sa, sizeof(w.sa), "frontend");
	assert_int_equal(policy_principal_of(&w, "cluster.local", buf, sizeof(buf)), 0);
	c.src_principal = buf;
	assert_int_equal(policy_eval(ps, &w, &c, &v), 0);
	policy_set_put(ps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_many_namespaces),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_principal_of),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
