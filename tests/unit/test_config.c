/* Unit tests of node-proxy/config.c: the good file, defaults, overrides,
 * and every kind of bad input reported with its file and line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-proxy/config.h"
#include "node-proxy/log.h"

static char path[64];

static void write_file(const char *text)
{
	int fd;

	snprintf(path, sizeof(path), "/tmp/np-config-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static int load(const char *text, struct np_config *c, char *err, size_t errlen)
{
	int rc;

	config_defaults(c);
	write_file(text);
	rc = config_load(c, path, err, errlen);
	unlink(path);
	return rc;
}

static void test_defaults(void **state)
{
	struct np_config c;

	(void)state;
	config_defaults(&c);
	assert_int_equal(c.port_outbound, 15001);
	assert_int_equal(c.port_inbound, 15006);
	assert_int_equal(c.port_hbone, 15008);
	assert_int_equal(c.port_admin, 15000);
	assert_int_equal(c.port_ready, 15021);
	assert_int_equal(c.proxy_mark, 0x539);
	assert_int_equal(c.transparent_mark, 0x111);
	assert_int_equal(c.workers, 0);
	assert_int_equal(c.preserve_source, 0);
}

static void test_good_file(void **state)
{
	struct np_config c;
	char err[256] = "";

	(void)state;
	assert_int_equal(
	    load("; comment\n"
	         "[proxy]\nworkers = 3\nlog_level = debug\npreserve_source = true\n"
	         "cpu_affinity = yes\n"
	         "[ports]\noutbound = 16001\ninbound=16006\nhbone = 16008\n"
	         "admin = 16000\nreadiness = 16021\n"
	         "[buffers]\nsize = 65536\ncount = 512\nqueue_high = 8\nrecv_multishot = off\n"
	         "[pool]\nconnections = 1000\nbacklog = 128\nring_entries = 2048\n"
	         "[timeouts]\nconnect = 250ms\nidle = 2m\ndrain = 1h\n"
	         "[marks]\nproxy = 0x540\ntransparent = 273\n"
	         "[paths]\ncontrol_socket = /tmp/x.sock\nstate_file = /tmp/x.state\n",
	         &c, err, sizeof(err)),
	    0);
	assert_string_equal(err, "");
	assert_int_equal(c.workers, 3);
	assert_int_equal(c.log_level, LOG_LVL_DEBUG);
	assert_int_equal(c.preserve_source, 1);
	assert_int_equal(c.cpu_affinity, 1);
	assert_int_equal(c.port_outbound, 16001);
	assert_int_equal(c.port_inbound, 16006);
	assert_int_equal(c.port_hbone, 16008);
	assert_int_equal(c.port_admin, 16000);
	assert_int_equal(c.port_ready, 16021);
	assert_int_equal(c.buf_size, 65536);
	assert_int_equal(c.buf_count, 512);
	assert_int_equal(c.queue_high, 8);
	assert_int_equal(c.recv_multishot, 0);
	assert_int_equal(c.max_conns, 1000);
	assert_int_equal(c.backlog, 128);
	assert_int_equal(c.ring_entries, 2048);
	assert_int_equal(c.connect_ms, 250);
	assert_int_equal(c.idle_ms, 120000);
	assert_int_equal(c.drain_ms, 3600000);
	assert_int_equal(c.proxy_mark, 0x540);
	assert_int_equal(c.transparent_mark, 0x111);
	assert_string_equal(c.control_socket, "/tmp/x.sock");
	assert_string_equal(c.state_file, "/tmp/x.state");
}

static void test_shipped_file(void **state)
{
	struct np_config c;
	char err[256] = "";

	(void)state;
	config_defaults(&c);
	/* tests run from the repository root */
	if (access("configs/node-proxy.ini", R_OK) != 0)
		skip();
	assert_int_equal(config_load(&c, "configs/node-proxy.ini", err, sizeof(err)), 0);
	assert_int_equal(c.port_outbound, 15001);
}

struct bad {
	const char *text;
	const char *expect; /* substring after "PATH:" */
};

static const struct bad bad_cases[] = {
	{ "[proxy]\nworkers = 2\n[nope]\nx = 1\n", ":3: unknown section [nope]" },
	{ "[proxy]\n\n[empty_unknown]\n", ":3: unknown section [empty_unknown]" },
	{ "[proxy]\nworker = 2\n", ":2: unknown key \"worker\" in [proxy]" },
	{ "workers = 2\n", ":1: unknown section []" },
	{ "[proxy]\nworkers = -1\n", ":2: proxy.workers: bad value \"-1\"" },
	{ "[proxy]\nworkers = 1000\n", ":2: proxy.workers: bad value \"1000\"" },
	{ "[proxy]\nworkers = 2x\n", ":2: proxy.workers: bad value \"2x\"" },
	{ "[proxy]\nlog_level = loud\n", ":2: proxy.log_level: bad value \"loud\"" },
	{ "[proxy]\npreserve_source = maybe\n", ":2: proxy.preserve_source: bad value" },
	{ "[ports]\noutbound = 0\n", ":2: ports.outbound: bad value \"0\"" },
	{ "[ports]\n\ninbound = 65536\n", ":3: ports.inbound: bad value \"65536\"" },
	{ "[buffers]\ncount = 100\n", ":2: buffers.count: \"100\" is not a power of two" },
	{ "[buffers]\nsize = 10\n", ":2: buffers.size: bad value \"10\"" },
	{ "[timeouts]\nconnect = 5 s\n", ":2: timeouts.connect: bad value" },
	{ "[timeouts]\nconnect = 0\n", ":2: timeouts.connect: bad value \"0\"" },
	{ "[timeouts]\nidle = 5d\n", ":2: timeouts.idle: bad value \"5d\"" },
	{ "[timeouts]\ndrain = 99999999999h\n", ":2: timeouts.drain: bad value" },
	{ "[marks]\nproxy = 0x1ffffffff\n", ":2: marks.proxy: bad value" },
	{ "[paths]\nstate_file = relative/path\n",
	  ":2: paths.state_file: \"relative/path\" is not an absolute path" },
	{ "[proxy]\nno equals sign here\n", ":2: syntax error" },
	{ "[proxy\nworkers = 1\n", ":1: section header without ']'" },
};

static void test_bad_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct np_config c, before;
		char err[256] = "";
		config_defaults(&before);
		int rc = load(bad_cases[i].text, &c, err, sizeof(err));
		if (rc != -22 || strncmp(err, path, strlen(path)) != 0 ||
		    !strstr(err, bad_cases[i].expect)) {
			print_error("case %zu: rc=%d err=\"%s\" want \"%s\"\n", i, rc, err,
			            bad_cases[i].expect);
			fail();
		}
		/* a refused file leaves the configuration untouched */
		assert_memory_equal(&c, &before, sizeof(c));
	}
}

static void test_missing_file(void **state)
{
	struct np_config c;
	char err[256];

	(void)state;
	config_defaults(&c);
	assert_int_equal(config_load(&c, "/nonexistent/np.ini", err, sizeof(err)), -2);
	assert_non_null(strstr(err, "/nonexistent/np.ini: No such file"));
}

static void test_set_override(void **state)
{
	struct np_config c;
	char err[256];

	(void)state;
	config_defaults(&c);
	assert_int_equal(config_set(&c, "proxy", "workers", "4", err, sizeof(err)), 0);
	assert_int_equal(c.workers, 4);
	assert_int_equal(config_set(&c, "timeouts", "drain", "3s", err, sizeof(err)), 0);
	assert_int_equal(c.drain_ms, 3000);
	assert_int_equal(config_set(&c, "proxy", "workers", "x", err, sizeof(err)), -22);
	assert_int_equal(c.workers, 4);
	assert_int_equal(config_set(&c, "bogus", "workers", "1", err, sizeof(err)), -22);
	assert_string_equal(err, "unknown section [bogus]");
	char longp[300];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	assert_int_equal(config_set(&c, "paths", "control_socket", longp, err, sizeof(err)), -22);
	assert_non_null(strstr(err, "path longer than 107 bytes"));
}

static void test_duration(void **state)
{
	unsigned v;

	(void)state;
	assert_int_equal(config_parse_duration_ms("250", &v), 0);
	assert_int_equal(v, 250);
	assert_int_equal(config_parse_duration_ms("250ms", &v), 0);
	assert_int_equal(v, 250);
	assert_int_equal(config_parse_duration_ms("5s", &v), 0);
	assert_int_equal(v, 5000);
	assert_int_equal(config_parse_duration_ms("2m", &v), 0);
	assert_int_equal(v, 120000);
	assert_int_equal(config_parse_duration_ms("1h", &v), 0);
	assert_int_equal(v, 3600000);
	assert_int_equal(config_parse_duration_ms("", &v), -22);
	assert_int_equal(config_parse_duration_ms("s", &v), -22);
	assert_int_equal(config_parse_duration_ms("-1s", &v), -22);
	assert_int_equal(config_parse_duration_ms("1.5s", &v), -22);
	assert_int_equal(config_parse_duration_ms("4294968s", &v), -22);
	assert_int_equal(config_parse_duration_ms("99999999999999999999999", &v), -22);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),     cmocka_unit_test(test_good_file),
		cmocka_unit_test(test_shipped_file), cmocka_unit_test(test_bad_cases),
		cmocka_unit_test(test_missing_file), cmocka_unit_test(test_set_override),
		cmocka_unit_test(test_duration),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
