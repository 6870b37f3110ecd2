/*
 * Rule generation and listing comparison of the redirector: the exact nft
 * text for given options (it must equal what nft 1.0.6 lists back, which
 * the system tests prove against the kernel), and the differences that
 * check reports.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "redirector/opts.h"
#include "redirector/redirect.h"
#include "redirector/rules.h"

#define CONNMARK_IN                                                                                \
	"\tchain connmark_in {\n"                                                                  \
	"\t\ttype filter hook prerouting priority mangle; policy accept;\n"                        \
	"\t\tmeta mark 0x00000539 ct mark set ct mark & 0xfffff111 | 0x00000111 comment \"proxy "  \
	"connection to a local app\"\n"                                                            \
	"\t\tmeta mark & 0x00000fff == 0x00000111 ct mark set ct mark & 0xfffff111 | 0x00000111 "  \
	"comment \"transparent proxy connection\"\n"                                               \
	"\t\tct direction reply ct mark & 0x00000fff == 0x00000111 meta mark set ct mark comment " \
	"\"return traffic: restore fwmark\"\n"                                                     \
	"\t}\n\n"                                                                                  \
	"\tchain connmark_out {\n"                                                                 \
	"\t\ttype route hook output priority mangle; policy accept;\n"                             \
	"\t\tct direction reply ct mark & 0x00000fff == 0x00000111 meta mark set ct mark comment " \
	"\"return traffic: restore fwmark\"\n"                                                     \
	"\t}\n\n"

static const char default_ruleset[] =
    "table inet ambit {\n" CONNMARK_IN "\tchain capture_in {\n"
    "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
    "\t\tmeta l4proto != tcp return\n"
    "\t\tiif \"lo\" return comment \"local traffic\"\n"
    "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n"
    "\t\ttcp dport 15008 return comment \"HBONE\"\n"
    "\t\tmeta l4proto tcp redirect to :15006 comment \"inbound capture\"\n"
    "\t}\n\n"
    "\tchain capture_out {\n"
    "\t\ttype nat hook output priority -100; policy accept;\n"
    "\t\tmeta l4proto != tcp return\n"
    "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n"
    "\t\tmeta mark & 0x00000fff == 0x00000111 return comment \"transparent proxy socket\"\n"
    "\t\toif \"lo\" return comment \"local destination\"\n"
    "\t\tip daddr 127.0.0.0/8 return comment \"loopback\"\n"
    "\t\tip6 daddr ::1 return comment \"loopback\"\n"
    "\t\tmeta l4proto tcp redirect to :15001 comment \"outbound capture\"\n"
    "\t}\n"
    "}\n";

static const char ipv4_only_ruleset[] =
    "table inet ambit {\n" CONNMARK_IN "\tchain capture_in {\n"
    "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
    "\t\tmeta l4proto != tcp return\n"
    "\t\tmeta nfproto ipv6 return comment \"IPv6 not captured\"\n"
    "\t\tiif \"lo\" return comment \"local traffic\"\n"
    "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n"
    "\t\ttcp dport 15008 return comment \"HBONE\"\n"
    "\t\tmeta l4proto tcp redirect to :15006 comment \"inbound capture\"\n"
    "\t}\n\n"
    "\tchain capture_out {\n"
    "\t\ttype nat hook output priority -100; policy accept;\n"
    "\t\tmeta l4proto != tcp return\n"
    "\t\tmeta nfproto ipv6 return comment \"IPv6 not captured\"\n"
    "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n"
    "\t\tmeta mark & 0x00000fff == 0x00000111 return comment \"transparent proxy socket\"\n"
    "\t\toif \"lo\" return comment \"local destination\"\n"
    "\t\tip daddr 127.0.0.0/8 return comment \"loopback\"\n"
    "\t\tmeta l4proto tcp redirect to :15001 comment \"outbound capture\"\n"
    "\t}\n"
    "}\n";

static char buf[REDIRECT_RULESET_MAX];

static void gen(const struct redirect_opts *o)
{
	int n = redirect_ruleset(o, buf, sizeof(buf));

	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(buf));
}

static void test_default_ruleset(void **state)
{
	struct redirect_opts o;

	(void)state;
	redirect_opts_default(&o);
	gen(&o);
	assert_string_equal(buf, default_ruleset);
}

static void test_ipv4_only_ruleset(void **state)
{
	struct redirect_opts o;

	(void)state;
	redirect_opts_default(&o);
	o.ipv6 = 0;
	gen(&o);
	assert_string_equal(buf, ipv4_only_ruleset);
}

static void add_cidr(struct redirect_opts *o, const char *s)
{
	assert_int_equal(redirect_parse_cidr(s, &o->exclude_cidrs[o->n_exclude_cidrs++]), 0);
}

static void test_excludes_ruleset(void **state)
{
	static const char expected[] =
	    "table inet ambit {\n" CONNMARK_IN "\tchain capture_in {\n"
	    "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
	    "\t\tmeta l4proto != tcp return\n"
	    "\t\tiif \"lo\" return comment \"local traffic\"\n"
	    "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n"
	    "\t\ttcp dport 15008 return comment \"HBONE\"\n"
	    "\t\ttcp dport 15020 return comment \"excluded inbound port\"\n"
	    "\t\ttcp dport 15021 return comment \"excluded inbound port\"\n"
	    "\t\tmeta l4proto tcp redirect to :15006 comment \"inbound capture\"\n"
	    "\t}\n\n"
	    "\tchain capture_out {\n"
	    "\t\ttype nat hook output priority -100; policy accept;\n"
	    "\t\tmeta l4proto != tcp return\n"
	    "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n"
	    "\t\tmeta mark & 0x00000fff == 0x00000111 return comment \"transparent proxy socket\"\n"
	    "\t\toif \"lo\" return comment \"local destination\"\n"
	    "\t\tip daddr 127.0.0.0/8 return comment \"loopback\"\n"
	    "\t\tip6 daddr ::1 return comment \"loopback\"\n"
	    "\t\tip daddr 10.96.0.0/12 return comment \"excluded destination\"\n"
	    "\t\tip daddr 192.168.1.7 return comment \"excluded destination\"\n"
	    "\t\tip6 daddr fd00:10::/64 return comment \"excluded destination\"\n"
	    "\t\tip6 daddr 2001:db8::1 return comment \"excluded destination\"\n"
	    "\t\tip daddr 0.0.0.0/0 return comment \"excluded destination\"\n"
	    "\t\ttcp dport 22 return comment \"excluded port\"\n"
	    "\t\ttcp dport 443 return comment \"excluded port\"\n"
	    "\t\tmeta l4proto tcp redirect to :15001 comment \"outbound capture\"\n"
	    "\t}\n"
	    "}\n";
	struct redirect_opts o;

	(void)state;
	redirect_opts_default(&o);
	add_cidr(&o, "10.100.3.4/12"); /* host bits go, as nft lists it */
	add_cidr(&o, "192.168.1.7");
	add_cidr(&o, "fd00:10::99/64");
	add_cidr(&o, "2001:db8::1/128");
	add_cidr(&o, "0.0.0.0/0");
	o.exclude_out_ports[o.n_exclude_out_ports++] = 22;
	o.exclude_out_ports[o.n_exclude_out_ports++] = 443;
	o.exclude_in_ports[o.n_exclude_in_ports++] = 15020;
	o.exclude_in_ports[o.n_exclude_in_ports++] = 15021;
	gen(&o);
	assert_string_equal(buf, expected);
}

static void test_custom_ports_marks(void **state)
{
	struct redirect_opts o;

	(void)state;
	redirect_opts_default(&o);
	o.outbound_port = 16001;
	o.inbound_port = 16006;
	o.hbone_port = 16008;
	o.proxy_mark = 0xabc;
	o.connmark = 0x20;
	o.connmark_mask = 0xf0;
	gen(&o);
	assert_non_null(strstr(buf, "\t\tmeta l4proto tcp redirect to :16001 comment"));
	assert_non_null(strstr(buf, "\t\tmeta l4proto tcp redirect to :16006 comment"));
	assert_non_null(strstr(buf, "\t\ttcp dport 16008 return comment \"HBONE\"\n"));
	assert_non_null(strstr(buf, "\t\tmeta mark 0x00000abc ct mark set ct mark & 0xffffff2f | "
	                            "0x00000020 comment"));
	assert_non_null(strstr(buf, "ct direction reply ct mark & 0x000000f0 == 0x00000020 meta "
	                            "mark set ct mark"));
	assert_null(strstr(buf, "0x00000539"));
	assert_null(strstr(buf, "15001"));
}

/* A full 32-bit mask: nft drops the "& mask" and the kept bits. */
static void test_full_mask(void **state)
{
	struct redirect_opts o;

	(void)state;
	redirect_opts_default(&o);
	o.connmark_mask = 0xffffffff;
	gen(&o);
	assert_non_null(strstr(buf, "\t\tmeta mark 0x00000539 ct mark set 0x00000111 comment"));
	assert_non_null(strstr(buf, "\t\tmeta mark 0x00000111 ct mark set 0x00000111 comment"));
	assert_non_null(strstr(buf, "ct direction reply ct mark 0x00000111 meta mark set ct mark"));
	assert_non_null(strstr(buf, "\t\tmeta mark 0x00000111 return comment \"transparent"));
}

static void test_install_cmd(void **state)
{
	struct redirect_opts o;
	int n;

	(void)state;
	redirect_opts_default(&o);
	n = rules_install_cmd(&o, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(strncmp(buf, "add table inet ambit\ndelete table inet ambit\n", 45), 0);
	assert_string_equal(buf + 45, default_ruleset);
	assert_string_equal(rules_remove_cmd, "add table inet ambit\ndelete table inet ambit\n");
}

static void test_buffer_too_small_and_invalid(void **state)
{
	struct redirect_opts o;
	char small[64];
	size_t i;

	(void)state;
	redirect_opts_default(&o);
	assert_int_equal(redirect_ruleset(&o, small, sizeof(small)), -ENOSPC);
	assert_int_equal(small[sizeof(small) - 1], '\0');
	assert_int_equal(rules_install_cmd(&o, small, 10), -ENOSPC);
	assert_int_equal(rules_install_cmd(&o, small, sizeof(small)), -ENOSPC);
	o.outbound_port = 0;
	assert_int_equal(redirect_ruleset(&o, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(rules_install_cmd(&o, small, 10), -EINVAL);

	/* the largest valid option set fits REDIRECT_RULESET_MAX */
	redirect_opts_default(&o);
	for (i = 0; i < REDIRECT_MAX_EXCLUDES; i++) {
		struct redirect_cidr *c = &o.exclude_cidrs[i];
		c->family = AF_INET6;
		memset(c->addr, 0xff, 16);
		c->addr[0] = (uint8_t)i;
		c->prefix_len = 127;
		o.exclude_out_ports[i] = (uint16_t)(60000 + i);
		o.exclude_in_ports[i] = (uint16_t)(50000 + i);
	}
	o.n_exclude_cidrs = o.n_exclude_out_ports = o.n_exclude_in_ports = REDIRECT_MAX_EXCLUDES;
	assert_true(redirect_ruleset(&o, buf, sizeof(buf)) > 0);
	assert_true(rules_install_cmd(&o, buf, sizeof(buf)) > 0);
}

/* --- rules_diff ------------------------------------------------------------ */

static char report[4096];

static int diff(const char *expected, const char *actual)
{
	struct textbuf t;
	int n;

	tb_init(&t, report, sizeof(report));
	n = rules_diff(expected, actual, &t);
	assert_false(t.overflow);
	return n;
}

/* @s with the first occurrence of @from replaced by @to (static buffer). */
static const char *edit(const char *s, const char *from, const char *to)
{
	static char out[REDIRECT_RULESET_MAX];
	const char *p = strstr(s, from);

	assert_non_null(p);
	snprintf(out, sizeof(out), "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
	return out;
}

static void test_diff_equal(void **state)
{
	(void)state;
	assert_int_equal(diff(default_ruleset, default_ruleset), 0);
	assert_string_equal(report, "");
	/* indentation and blank lines are formatting, not state */
	assert_int_equal(diff(default_ruleset, edit(default_ruleset, "\n\n\tchain capture_in {\n",
	                                            "\n  chain capture_in {   \n\n")),
	                 0);
}

static void test_diff_missing_rule(void **state)
{
	(void)state;
	assert_int_equal(
	    diff(default_ruleset,
	         edit(default_ruleset,
	              "\t\tmeta l4proto tcp redirect to :15001 comment \"outbound capture\"\n",
	              "")),
	    1);
	assert_string_equal(report, "nft: missing rule in chain capture_out: meta l4proto tcp "
	                            "redirect to :15001 comment \"outbound capture\"\n");
}

static void test_diff_changed_and_extra_rule(void **state)
{
	(void)state;
	assert_int_equal(diff(default_ruleset, edit(default_ruleset, "tcp dport 15008 return",
	                                            "tcp dport 15009 return")),
	                 2);
	assert_string_equal(
	    report,
	    "nft: missing rule in chain capture_in: tcp dport 15008 return comment \"HBONE\"\n"
	    "nft: unexpected rule in chain capture_in: tcp dport 15009 return comment "
	    "\"HBONE\"\n");
}

static void test_diff_duplicate_rule(void **state)
{
	(void)state;
	assert_int_equal(
	    diff(default_ruleset,
	         edit(default_ruleset, "\t\tiif \"lo\" return comment \"local traffic\"\n",
	              "\t\tiif \"lo\" return comment \"local traffic\"\n"
	              "\t\tiif \"lo\" return comment \"local traffic\"\n")),
	    1);
	assert_string_equal(report, "nft: unexpected rule in chain capture_in: iif \"lo\" return "
	                            "comment \"local traffic\"\n");
}

static void test_diff_chain_definition(void **state)
{
	(void)state;
	assert_int_equal(
	    diff(default_ruleset, edit(default_ruleset, "hook output priority -100; policy accept;",
	                               "hook output priority -100; policy drop;")),
	    2);
	assert_string_equal(report,
	                    "nft: different definition in chain capture_out: type nat hook output "
	                    "priority -100; policy accept;\n"
	                    "nft: unexpected definition in chain capture_out: type nat hook output "
	                    "priority -100; policy drop;\n");
}

static void test_diff_missing_and_extra_chain(void **state)
{
	char *a;
	const char *p, *q;

	(void)state;
	/* cut chain connmark_out out of the listing */
	p = strstr(default_ruleset, "\tchain connmark_out {");
	q = strstr(default_ruleset, "\tchain capture_in {");
	assert_non_null(asprintf(&a, "%.*s%s", (int)(p - default_ruleset), default_ruleset, q) > 0
	                    ? (void *)1
	                    : NULL);
	assert_int_equal(diff(default_ruleset, a), 1);
	assert_string_equal(report, "nft: missing chain connmark_out\n");
	free(a);

	assert_int_equal(diff(default_ruleset, edit(default_ruleset, "\n}\n",
	                                            "\n\n\tchain mine {\n\t\ttcp dport 1 drop\n"
	                                            "\t}\n}\n")),
	                 1);
	assert_string_equal(report, "nft: unexpected chain mine\n");
	/* a set with multi-line elements is one opaque block */
	assert_int_equal(diff(default_ruleset,
	                      edit(default_ruleset, "\n}\n",
	                           "\n\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 1.1.1.1,\n"
	                           "\t\t\t     2.2.2.2 }\n\t}\n}\n")),
	                 1);
	assert_string_equal(report, "nft: unexpected set s\n");
}

static void test_diff_order(void **state)
{
	const char *a;

	(void)state;
	a = edit(default_ruleset,
	         "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n"
	         "\t\ttcp dport 15008 return comment \"HBONE\"\n",
	         "\t\ttcp dport 15008 return comment \"HBONE\"\n"
	         "\t\tmeta mark 0x00000539 return comment \"proxy socket\"\n");
	assert_int_equal(diff(default_ruleset, a), 1);
	assert_string_equal(report,
	                    "nft: rules out of order in chain capture_in at: tcp dport 15008 "
	                    "return comment \"HBONE\"\n");
}

static void test_diff_table_attribute(void **state)
{
	(void)state;
	/* a dormant table has no effect at all: must not pass as equal */
	assert_int_equal(diff(default_ruleset, edit(default_ruleset, "table inet ambit {\n",
	                                            "table inet ambit {\n\tflags dormant\n\n")),
	                 1);
	assert_string_equal(report, "nft: unexpected attribute in table inet ambit: flags dormant\n");
}

static void test_diff_owned_table(void **state)
{
	(void)state;
	/* someone else's owned table: the annotation after the brace must not
	 * hide the table's contents from the comparison */
	assert_int_equal(
	    diff(default_ruleset, edit(default_ruleset, "table inet ambit {\n",
	                               "table inet ambit { # progname nft\n\tflags owner\n\n")),
	    1);
	assert_string_equal(report, "nft: unexpected attribute in table inet ambit: flags owner\n");
	/* a '#' inside a quoted comment is not an annotation */
	assert_int_equal(diff("table inet ambit {\n\tchain c {\n\t\ttcp dport 1 comment \"a#b\"\n"
	                      "\t}\n}\n",
	                      "table inet ambit {\n\tchain c {\n\t\ttcp dport 1 comment \"a#c\"\n"
	                      "\t}\n}\n"),
	                 2);
}

static void test_diff_empty_listing(void **state)
{
	(void)state;
	assert_int_equal(diff(default_ruleset, ""), 4);
	assert_int_equal(diff("", ""), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_ruleset),
		cmocka_unit_test(test_ipv4_only_ruleset),
		cmocka_unit_test(test_excludes_ruleset),
		cmocka_unit_test(test_custom_ports_marks),
		cmocka_unit_test(test_full_mask),
		cmocka_unit_test(test_install_cmd),
		cmocka_unit_test(test_buffer_too_small_and_invalid),
		cmocka_unit_test(test_diff_equal),
		cmocka_unit_test(test_diff_missing_rule),
		cmocka_unit_test(test_diff_changed_and_extra_rule),
		cmocka_unit_test(test_diff_duplicate_rule),
		cmocka_unit_test(test_diff_chain_definition),
		cmocka_unit_test(test_diff_missing_and_extra_chain),
		cmocka_unit_test(test_diff_order),
		cmocka_unit_test(test_diff_table_attribute),
		cmocka_unit_test(test_diff_owned_table),
		cmocka_unit_test(test_diff_empty_listing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
