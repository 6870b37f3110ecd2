/*
 * The redirector's option parser and validator: what it accepts, and every
 * kind of bad input it must refuse with a message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "redirector/opts.h"
#include "redirector/redirect.h"

static char err[512];
static struct redirect_cli cli;

/* Parse a NULL-terminated list of arguments (argv[0] is added). */
static int parse_v(const char *first, va_list ap)
{
	char *argv[200];
	int argc = 0;
	const char *a;

	argv[argc++] = (char *)"ambit-redirect";
	for (a = first; a; a = va_arg(ap, const char *)) {
		assert_true(argc < 199);
		argv[argc++] = (char *)a;
	}
	argv[argc] = NULL;
	memset(err, 'x', sizeof(err));
	return redirect_cli_parse(argc, argv, &cli, err, sizeof(err));
}

static int parse(const char *first, ...)
{
	va_list ap;
	int rc;

	va_start(ap, first);
	rc = parse_v(first, ap);
	va_end(ap);
	return rc;
}

/* The parse fails and the message contains @needle. */
static void rejects(const char *needle, const char *first, ...)
{
	va_list ap;
	int rc;

	va_start(ap, first);
	rc = parse_v(first, ap);
	va_end(ap);
	assert_int_equal(rc, -EINVAL);
	assert_non_null(memchr(err, '\0', sizeof(err)));
	if (!strstr(err, needle))
		fail_msg("message '%s' lacks '%s'", err, needle);
}

static void test_defaults(void **state)
{
	(void)state;
	assert_int_equal(parse("install", "--netns", "/run/netns/a", NULL), 0);
	assert_int_equal(cli.cmd, REDIRECT_CMD_INSTALL);
	assert_string_equal(cli.netns, "/run/netns/a");
	assert_int_equal(cli.dry_run, 0);
	assert_int_equal(cli.opts.outbound_port, 15001);
	assert_int_equal(cli.opts.inbound_port, 15006);
	assert_int_equal(cli.opts.hbone_port, 15008);
	assert_int_equal(cli.opts.proxy_mark, 0x539);
	assert_int_equal(cli.opts.connmark, 0x111);
	assert_int_equal(cli.opts.connmark_mask, 0xfff);
	assert_int_equal(cli.opts.route_table, 100);
	assert_int_equal(cli.opts.ipv6, 1);
	assert_int_equal(cli.opts.n_exclude_cidrs, 0);
	assert_int_equal(cli.opts.n_exclude_out_ports, 0);
	assert_int_equal(cli.opts.n_exclude_in_ports, 0);

	assert_int_equal(parse("--netns=/proc/1234/ns/net", "remove", NULL), 0);
	assert_int_equal(cli.cmd, REDIRECT_CMD_REMOVE);
	assert_string_equal(cli.netns, "/proc/1234/ns/net");
	assert_int_equal(parse("check", "--netns", "x", NULL), 0);
	assert_int_equal(cli.cmd, REDIRECT_CMD_CHECK);
}

static void test_all_options(void **state)
{
	(void)state;
	assert_int_equal(parse("install", "--netns", "/n", "--outbound-port", "1",
	                       "--inbound-port=2", "--hbone-port", "65535", "--proxy-mark", "0xABC",
	                       "--connmark", "0x20/0xf0", "--table=1000", "--exclude-cidr",
	                       "10.1.2.3/8", "--exclude-cidr=fd00::1", "--exclude-port", "22",
	                       "--exclude-port", "443", "--exclude-inbound-port", "15020",
	                       "--dry-run", NULL),
	                 0);
	assert_int_equal(cli.opts.outbound_port, 1);
	assert_int_equal(cli.opts.inbound_port, 2);
	assert_int_equal(cli.opts.hbone_port, 65535);
	assert_int_equal(cli.opts.proxy_mark, 0xabc);
	assert_int_equal(cli.opts.connmark, 0x20);
	assert_int_equal(cli.opts.connmark_mask, 0xf0);
	assert_int_equal(cli.opts.route_table, 1000);
	assert_int_equal(cli.dry_run, 1);
	assert_int_equal(cli.opts.n_exclude_cidrs, 2);
	assert_int_equal(cli.opts.exclude_cidrs[0].family, AF_INET);
	assert_int_equal(cli.opts.exclude_cidrs[0].prefix_len, 8);
	assert_memory_equal(cli.opts.exclude_cidrs[0].addr, "\x0a\x00\x00\x00", 4);
	assert_int_equal(cli.opts.exclude_cidrs[1].family, AF_INET6);
	assert_int_equal(cli.opts.exclude_cidrs[1].prefix_len, 128);
	assert_int_equal(cli.opts.exclude_cidrs[1].addr[15], 1);
	assert_int_equal(cli.opts.n_exclude_out_ports, 2);
	assert_int_equal(cli.opts.exclude_out_ports[1], 443);
	assert_int_equal(cli.opts.n_exclude_in_ports, 1);
	assert_int_equal(cli.opts.exclude_in_ports[0], 15020);

	assert_int_equal(parse("install", "--netns", "/n", "--no-ipv6", "--connmark", "17", NULL),
	                 0);
	assert_int_equal(cli.opts.ipv6, 0);
	assert_int_equal(cli.opts.connmark, 17);
	assert_int_equal(cli.opts.connmark_mask, 0xffffffff);
}

static void test_dry_run_and_help(void **state)
{
	(void)state;
	/* --dry-run needs no namespace: it only prints */
	assert_int_equal(parse("install", "--dry-run", NULL), 0);
	assert_null(cli.netns);
	assert_int_equal(parse("--help", NULL), 0);
	assert_int_equal(cli.help, 1);
	assert_int_equal(parse("install", "-h", "--bogus", NULL), 0);
	assert_int_equal(cli.help, 1);
}

static void test_bad_cidr(void **state)
{
	static const char *bad[] = {
		"10.0.0.0/33", "1.2.3",
		"fd00::/129",  "10.0.0.0/",
		"/8",          "10.0.0.0/-1",
		"10.0.0.0/8x", "",
		"::1/ 64",     "10.0.0.0//8",
		"1.2.3.4.5",   "10.0.0.0/08000000000",
		"fd00:::1",    "host.example",
		" 10.0.0.1",   "0123456789012345678901234567890123456789012345678901234567890/8"
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		rejects("--exclude-cidr", "install", "--netns", "/n", "--exclude-cidr", bad[i],
		        NULL);
}

static void test_bad_ports(void **state)
{
	static const char *bad[] = { "0",  "65536", "abc", "-1",   "+1",
		                     " 1", "1 ",    "",    "0x10", "99999999999999999999" };
	static const char *opt[] = { "--outbound-port", "--inbound-port", "--hbone-port",
		                     "--exclude-port", "--exclude-inbound-port" };
	size_t i, k;

	(void)state;
	for (k = 0; k < sizeof(opt) / sizeof(opt[0]); k++)
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			rejects(opt[k], "install", "--netns", "/n", opt[k], bad[i], NULL);
	rejects("must differ", "install", "--netns", "/n", "--inbound-port", "15001", NULL);
	rejects("must differ", "install", "--netns", "/n", "--hbone-port", "15006", NULL);
	rejects("given twice", "install", "--netns", "/n", "--exclude-port", "22", "--exclude-port",
	        "22", NULL);
}

static void test_bad_marks(void **state)
{
	(void)state;
	rejects("--proxy-mark", "install", "--netns", "/n", "--proxy-mark", "0x", NULL);
	rejects("--proxy-mark", "install", "--netns", "/n", "--proxy-mark", "0x1g", NULL);
	rejects("--proxy-mark", "install", "--netns", "/n", "--proxy-mark", "4294967296", NULL);
	rejects("--proxy-mark", "install", "--netns", "/n", "--proxy-mark", "0x100000000", NULL);
	rejects("--proxy-mark", "install", "--netns", "/n", "--proxy-mark", "-5", NULL);
	rejects("must not be 0", "install", "--netns", "/n", "--proxy-mark", "0", NULL);
	rejects("--connmark", "install", "--netns", "/n", "--connmark", "0x111/", NULL);
	rejects("--connmark", "install", "--netns", "/n", "--connmark", "/0xfff", NULL);
	rejects("--connmark", "install", "--netns", "/n", "--connmark", "0x111/0xfff/1", NULL);
	rejects("--connmark", "install", "--netns", "/n", "--connmark",
	        "0x1111111111111111111111111111111111/1", NULL);
	rejects("mark inside mask", "install", "--netns", "/n", "--connmark", "0x1111/0xfff", NULL);
	rejects("mark inside mask", "install", "--netns", "/n", "--connmark", "0x111/0", NULL);
	rejects("mark inside mask", "install", "--netns", "/n", "--connmark", "0/0xfff", NULL);
	/* the proxy's sockets would be routed into the local table */
	rejects("matches connmark", "install", "--netns", "/n", "--proxy-mark", "0x5111", NULL);
}

static void test_bad_table(void **state)
{
	(void)state;
	rejects("reserved", "install", "--netns", "/n", "--table", "0", NULL);
	rejects("reserved", "install", "--netns", "/n", "--table", "253", NULL);
	rejects("reserved", "install", "--netns", "/n", "--table", "254", NULL);
	rejects("reserved", "install", "--netns", "/n", "--table", "255", NULL);
	rejects("--table", "install", "--netns", "/n", "--table", "main", NULL);
	assert_int_equal(parse("install", "--netns", "/n", "--table", "4294967295", NULL), 0);
}

static void test_too_many_excludes(void **state)
{
	static char vals[40][24];
	static const char *opt[] = { "--exclude-cidr", "--exclude-port", "--exclude-inbound-port" };
	char *argv[200];
	int argc, i, k;

	(void)state;
	for (k = 0; k < 3; k++) {
		for (int n = REDIRECT_MAX_EXCLUDES; n <= REDIRECT_MAX_EXCLUDES + 1; n++) {
			argc = 0;
			argv[argc++] = (char *)"ambit-redirect";
			argv[argc++] = (char *)"install";
			argv[argc++] = (char *)"--netns=/n";
			for (i = 0; i < n; i++) {
				if (k == 0)
					snprintf(vals[i], sizeof(vals[i]), "10.%d.0.0/16", i);
				else
					snprintf(vals[i], sizeof(vals[i]), "%d", 1000 + i);
				argv[argc++] = (char *)opt[k];
				argv[argc++] = vals[i];
			}
			argv[argc] = NULL;
			int rc = redirect_cli_parse(argc, argv, &cli, err, sizeof(err));
			if (n == REDIRECT_MAX_EXCLUDES) {
				assert_int_equal(rc, 0);
			} else {
				assert_int_equal(rc, -EINVAL);
				assert_non_null(strstr(err, "too many"));
				assert_non_null(strstr(err, opt[k]));
			}
		}
	}
}

static void test_bad_syntax(void **state)
{
	(void)state;
	rejects("unknown option '--bogus'", "install", "--netns", "/n", "--bogus", NULL);
	rejects("unknown option '--netn'", "install", "--netn", "/n", NULL);
	rejects("unknown option '-x'", "install", "-x", NULL);
	rejects("missing --netns", "install", NULL);
	rejects("missing --netns", "check", "--no-ipv6", NULL);
	rejects("--netns needs a value", "install", "--netns", NULL);
	rejects("--netns: empty path", "install", "--netns=", NULL);
	rejects("--netns given twice", "install", "--netns", "/a", "--netns", "/b", NULL);
	rejects("missing command", "--netns", "/n", NULL);
	rejects("missing command", NULL);
	rejects("unknown command 'instal'", "instal", "--netns", "/n", NULL);
	rejects("unexpected argument 'remove'", "install", "remove", "--netns", "/n", NULL);
	rejects("--no-ipv6 takes no value", "install", "--netns", "/n", "--no-ipv6=1", NULL);
	rejects("--dry-run takes no value", "install", "--dry-run=yes", NULL);
	rejects("IPv6 is off", "install", "--netns", "/n", "--no-ipv6", "--exclude-cidr",
	        "fd00::/8", NULL);
	rejects("repeats", "install", "--netns", "/n", "--exclude-cidr", "10.1.0.0/16",
	        "--exclude-cidr", "10.1.2.3/16", NULL);
}

static void test_parse_cidr(void **state)
{
	struct redirect_cidr c;

	(void)state;
	assert_int_equal(redirect_parse_cidr("192.168.77.200/20", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix_len, 20);
	assert_memory_equal(c.addr, "\xc0\xa8\x40\x00", 4);
	assert_int_equal(redirect_parse_cidr("0.0.0.0/0", &c), 0);
	assert_int_equal(c.prefix_len, 0);
	assert_int_equal(redirect_parse_cidr("fd00:1:2:3:4:5:6:7/33", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_memory_equal(c.addr, "\xfd\x00\x00\x01\x00\x00\x00\x00", 8);
	assert_int_equal(redirect_parse_cidr("::/0", &c), 0);
	assert_int_equal(redirect_parse_cidr("fd00::/x", &c), -EINVAL);
}

static void test_validate_direct(void **state)
{
	struct redirect_opts o;

	(void)state;
	redirect_opts_default(&o);
	assert_int_equal(redirect_opts_validate(&o, err, sizeof(err)), 0);
	o.n_exclude_out_ports = REDIRECT_MAX_EXCLUDES + 1;
	assert_int_equal(redirect_opts_validate(&o, err, sizeof(err)), -EINVAL);
	redirect_opts_default(&o);
	o.n_exclude_cidrs = 1;
	o.exclude_cidrs[0].family = AF_INET;
	o.exclude_cidrs[0].prefix_len = 33;
	assert_int_equal(redirect_opts_validate(&o, err, sizeof(err)), -EINVAL);
	o.exclude_cidrs[0].family = 12345;
	o.exclude_cidrs[0].prefix_len = 8;
	assert_int_equal(redirect_opts_validate(&o, err, sizeof(err)), -EINVAL);
	redirect_opts_default(&o);
	o.n_exclude_in_ports = 1; /* port 0 left in the list */
	assert_int_equal(redirect_opts_validate(&o, err, sizeof(err)), -EINVAL);
	/* a NULL/0 error buffer is allowed */
	assert_int_equal(redirect_opts_validate(&o, NULL, 0), -EINVAL);
	/* a tiny error buffer is cut, not overrun */
	assert_int_equal(redirect_opts_validate(&o, err, 5), -EINVAL);
	assert_int_equal(strlen(err), 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),         cmocka_unit_test(test_all_options),
		cmocka_unit_test(test_dry_run_and_help), cmocka_unit_test(test_bad_cidr),
		cmocka_unit_test(test_bad_ports),        cmocka_unit_test(test_bad_marks),
		cmocka_unit_test(test_bad_table),        cmocka_unit_test(test_too_many_excludes),
		cmocka_unit_test(test_bad_syntax),       cmocka_unit_test(test_parse_cidr),
		cmocka_unit_test(test_validate_direct),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
