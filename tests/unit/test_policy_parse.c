/* Negative tests of the policy file parser: each bad input is refused with
 * the right line and a message that names the problem; a directory with
 * one bad file yields no set. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-proxy/confdir.h"
#include "node-proxy/policy.h"

#define HDR "[policy p]\nnamespace = shop\n" /* lines 1-2 */

struct bad {
	const char *text;
	const char *want; /* substring of the first error */
};

static const struct bad bads[] = {
	{ HDR "action = MAYBE\n", "bad.ini:3: bad action \"MAYBE\"" },
	{ HDR "action = allow\n", "bad.ini:3: bad action" },
	{ HDR "colour = red\n", "bad.ini:3: unknown key \"colour\"" },
	{ HDR "namespace = other\n", "bad.ini:3: \"namespace\" given twice" },
	{ "[policy p]\nnamespace = Shop\n", "bad.ini:2: bad namespace \"Shop\"" },
	{ "[policy p]\naction = DENY\n", "bad.ini:1: policy p has no \"namespace\"" },
	{ HDR "selector = app\n", "bad.ini:3: selector: selector item \"app\" is not key=value" },
	{ HDR "selector = app=a, app=b\n", "bad.ini:3: selector: label \"app\" twice" },
	{ HDR "selector = -bad=x\n", "bad.ini:3: selector: bad label key" },
	{ HDR "selector = app=bad value\n", "bad.ini:3: selector: bad label value" },
	{ HDR "[rule p]\nip_blocks = 10.0.0.1/8\n",
	  "bad.ini:4: ip_blocks: \"10.0.0.1/8\" has host bits" },
	{ HDR "[rule p]\nip_blocks = 10.0.0.0/33\n", "bad.ini:4: ip_blocks: bad prefix length" },
	{ HDR "[rule p]\nnot_ip_blocks = 300.1.1.1\n", "bad.ini:4: not_ip_blocks: bad address" },
	{ HDR "[rule p]\nip_blocks = fd00::/129\n", "bad.ini:4: ip_blocks: bad prefix length" },
	{ HDR "[rule p]\nports = 0\n", "bad.ini:4: ports: bad port \"0\"" },
	{ HDR "[rule p]\nports = 65536\n", "bad.ini:4: ports: bad port \"65536\"" },
	{ HDR "[rule p]\nnot_ports = 80x\n", "bad.ini:4: not_ports: bad port \"80x\"" },
	{ HDR "[rule p]\nports = 80,,81\n", "bad.ini:4: ports: empty value" },
	{ HDR "[rule p]\nprincipals = a*b\n", "bad.ini:4: principals: bad principal \"a*b\"" },
	{ HDR "[rule p]\nprincipals = **\n", "bad.ini:4: principals: bad principal" },
	{ HDR "[rule p]\nprincipals = *x*\n", "bad.ini:4: principals: bad principal" },
	{ HDR "[rule p]\nprincipals = spiffe://\n", "bad.ini:4: principals: bad principal" },
	{ HDR "[rule p]\nnamespaces = Shop\n", "bad.ini:4: namespaces: bad namespace" },
	{ HDR "[rule p]\nsources = x\n", "bad.ini:4: unknown key \"sources\" in [rule]" },
	{ HDR "[rule q]\nports = 1\n", "bad.ini:3: [rule q] must follow [policy q]" },
	{ "[rule p]\nports = 1\n", "bad.ini:1: [rule p] must follow" },
	{ "[policy]\n", "bad.ini:1: bad section [policy]" },
	{ "[policy a b]\n", "bad.ini:1: bad section [policy a b]" },
	{ "[polcy a]\n", "bad.ini:1: unknown section type \"polcy\"" },
	{ "[policy UPPER]\n", "bad.ini:1: bad name \"UPPER\"" },
	{ "[policy p\nnamespace = x\n", "bad.ini:1: section header without ']'" },
	{ "[policy p] x\n", "bad.ini:1: text after section header" },
	{ HDR "  [rule p]\n", "bad.ini:3: section header must start in the first column" },
	{ "namespace = shop\n", "bad.ini:1: \"namespace\" outside of any [section]" },
	{ HDR "just words\n", "bad.ini:3: syntax error" },
	{ HDR "action =\n", "bad.ini:3: \"action\" has no value" },
	{ HDR "\n\n\n[policy p]\nnamespace = shop\n",
	  "bad.ini:6: policy shop/p already defined at bad.ini:1" },
	{ "[peer_authentication s]\nnamespace = shop\n",
	  "bad.ini:1: peer_authentication s has no \"mode\"" },
	{ "[peer_authentication s]\nnamespace = shop\nmode = strict\n", "bad.ini:3: bad mode" },
	{ "[peer_authentication s]\nnamespace = shop\nmode = STRICT\naction = DENY\n",
	  "bad.ini:4: unknown key \"action\" in [peer_authentication]" },
	{ "[peer_authentication s]\nnamespace = shop\nmode = STRICT\n"
	  "[peer_authentication t]\nnamespace = shop\nmode = PERMISSIVE\n",
	  "bad.ini:4: second namespace-wide peer_authentication in shop" },
	{ "[peer_authentication s]\nnamespace = ambit-system\nselector = a=b\nmode = STRICT\n",
	  "bad.ini:1: peer_authentication s: no selector in the root namespace" },
	{ HDR "action = DENY\x00\n", "bad.ini:3: NUL byte" },
};

static void check_bad(const char *text, size_t len, const char *want)
{
	struct policy_set *ps = (struct policy_set *)0x1;
	struct conf_errors e;
	int rc;

	conf_errors_init(&e);
	rc = policy_load_buf("bad.ini", text, len, NULL, &ps, &e);
	if (rc != -EINVAL || e.n == 0 || !strstr(e.msg[0], want))
		fail_msg("input:\n%s\nrc %d, first error \"%s\", want \"%s\"", text, rc,
		         e.n ? e.msg[0] : "(none)", want);
	assert_ptr_equal(ps, (struct policy_set *)0x1); /* untouched */
}

static void test_bad_inputs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		size_t len = strlen(bads[i].text);
		/* the NUL case: its length is the literal's */
		if (strstr(bads[i].want, "NUL"))
			len = strlen(HDR "action = DENY") + 2;
		check_bad(bads[i].text, len, bads[i].want);
	}
	print_message("%zu bad inputs refused with their line\n", sizeof(bads) / sizeof(bads[0]));
}

static void test_long_line(void **state)
{
	char text[1024];
	int n;

	(void)state;
	n = snprintf(text, sizeof(text), HDR "[rule p]\nprincipals = ");
	memset(text + n, 'a', 400);
	text[n + 400] = '\n';
	check_bad(text, (size_t)n + 401, "bad.ini:4: line longer than 196 bytes");
}

static void test_too_many_values(void **state)
{
	size_t cap = 64 * 1024, len;
	char *text = malloc(cap);

	(void)state;
	len = (size_t)snprintf(text, cap, HDR "[rule p]\n");
	for (int i = 0; i < POLICY_MAX_VALUES + 1; i++)
		len += (size_t)snprintf(text + len, cap - len, "ports = %d\n", i + 1);
	check_bad(text, len, "ports: more than 256 values");
	free(text);
}

static void test_too_many_rules(void **state)
{
	size_t cap = 64 * 1024, len;
	char *text = malloc(cap);

	(void)state;
	len = (size_t)snprintf(text, cap, HDR);
	for (int i = 0; i < POLICY_MAX_RULES + 1; i++)
		len += (size_t)snprintf(text + len, cap - len, "[rule p]\n");
	check_bad(text, len, "more than 64 rules in policy p");
	free(text);
}

static void test_file_too_big(void **state)
{
	size_t len = CONFDIR_MAX_FILE_SIZE + 1;
	char *text = malloc(len);

	(void)state;
	memset(text, '\n', len);
	check_bad(text, len, "file larger than");
	free(text);
}

/* All errors of one file are reported, not only the first. */
static void test_several_errors(void **state)
{
	const char *t = HDR "action = NO\ncolour = red\n[rule p]\nports = 0\n";
	struct policy_set *ps = NULL;
	struct conf_errors e;

	(void)state;
	conf_errors_init(&e);
	assert_int_equal(policy_load_buf("f.ini", t, strlen(t), NULL, &ps, &e), -EINVAL);
	assert_int_equal(e.n, 3);
	assert_non_null(strstr(e.msg[0], "f.ini:3:"));
	assert_non_null(strstr(e.msg[1], "f.ini:4:"));
	assert_non_null(strstr(e.msg[2], "f.ini:6:"));
	assert_null(ps);
}

/* A comment, blank lines, CRLF, a BOM and ':' as separator are all fine. */
static void test_good_syntax(void **state)
{
	const char *t = "\xEF\xBB\xBF; comment\r\n# other comment\r\n\r\n[policy p]\r\n"
	                "namespace: shop ; inline comment\r\naction = DENY\r\n[rule p]\r\n"
	                "ports = 80\r\n";
	struct policy_set *ps = NULL;
	struct conf_errors e;

	(void)state;
	conf_errors_init(&e);
	assert_int_equal(policy_load_buf("g.ini", t, strlen(t), NULL, &ps, &e), 0);
	assert_int_equal(policy_set_count(ps), 1);
	policy_set_put(ps);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Directories: *.ini in name order, others ignored, cross-file duplicates
 * found, a bad file fails the whole directory. */
static void test_dir(void **state)
{
	char dir[] = "/tmp/np-policy-XXXXXX";
	struct policy_set *ps = NULL;
	struct conf_errors e;
	char cmd[600];

	(void)state;
	assert_non_null(mkdtemp(dir));
	write_file(dir, "10-a.ini", "[policy a]\nnamespace = shop\n");
	write_file(dir, "20-b.ini", "[policy b]\nnamespace = shop\n[rule b]\n");
	write_file(dir, "README", "not ini at all [");
	write_file(dir, ".hidden.ini", "garbage");
	conf_errors_init(&e);
	assert_int_equal(policy_load_dir(dir, NULL, &ps, &e), 0);
	assert_int_equal(policy_set_count(ps), 2);
	policy_set_put(ps);
	ps = NULL;

	/* [rule] must not attach to a policy of an earlier file */
	write_file(dir, "30-c.ini", "[rule b]\nports = 1\n");
	conf_errors_init(&e);
	assert_int_equal(policy_load_dir(dir, NULL, &ps, &e), -EINVAL);
	assert_non_null(strstr(e.msg[0], "30-c.ini:1: [rule b] must follow"));
	assert_null(ps);

	write_file(dir, "30-c.ini", "[policy a]\nnamespace = shop\n");
	conf_errors_init(&e);
	assert_int_equal(policy_load_dir(dir, NULL, &ps, &e), -EINVAL);
	assert_non_null(strstr(e.msg[0], "30-c.ini:1: policy shop/a already defined at"));
	assert_non_null(strstr(e.msg[0], "10-a.ini:1"));

	conf_errors_init(&e);
	assert_int_equal(policy_load_dir("/nonexistent/dir", NULL, &ps, &e), -EINVAL);
	assert_non_null(strstr(e.msg[0], "/nonexistent/dir: No such file"));
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* The example files shipped in configs/ are valid. */
static void test_examples(void **state)
{
	struct policy_set *ps = NULL;
	struct conf_errors e;

	(void)state;
	conf_errors_init(&e);
	if (policy_load_dir("configs/policies.d", NULL, &ps, &e))
		fail_msg("%s", e.msg[0]);
	assert_true(policy_set_count(ps) >= 3);
	policy_set_put(ps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_inputs),      cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_too_many_values), cmocka_unit_test(test_too_many_rules),
		cmocka_unit_test(test_file_too_big),    cmocka_unit_test(test_several_errors),
		cmocka_unit_test(test_good_syntax),     cmocka_unit_test(test_dir),
		cmocka_unit_test(test_examples),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
