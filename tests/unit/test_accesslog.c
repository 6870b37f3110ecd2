/*
 * accesslog: JSON validity for hostile strings (parsed back with jansson),
 * ring-full drops, exact 1-in-N sampling, reopen after rotation, switches.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "node-proxy/accesslog.h"
#include "node-proxy/metrics.h"

static char dir[] = "/tmp/ambit-al-XXXXXX";
static char path[128];

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/access.log", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[256];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int after_each(void **state)
{
	(void)state;
	accesslog_fini();
	unlink(path);
	return 0;
}

static void sample_record(struct al_record *r)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(41000) };
	struct sockaddr_in6 b = { .sin6_family = AF_INET6, .sin6_port = htons(8080) };

	memset(r, 0, sizeof(*r));
	inet_pton(AF_INET, "10.1.2.3", &a.sin_addr);
	inet_pton(AF_INET6, "fd00::5", &b.sin6_addr);
	al_addr_from_sa(&r->src.addr, (struct sockaddr *)&a);
	al_addr_from_sa(&r->dst.addr, (struct sockaddr *)&b);
	al_str(r->src.workload, sizeof(r->src.workload), "frontend");
	al_str(r->src.ns, sizeof(r->src.ns), "shop");
	al_str(r->src.identity, sizeof(r->src.identity), "spiffe://cluster.local/ns/shop/sa/fe");
	al_str(r->dst.workload, sizeof(r->dst.workload), "backend");
	al_str(r->dst.ns, sizeof(r->dst.ns), "shop");
	al_str(r->dst.identity, sizeof(r->dst.identity), "spiffe://cluster.local/ns/shop/sa/be");
	r->direction = AL_OUTBOUND;
	r->mtls = 1;
	r->req_bytes = 1000;
	r->resp_bytes = 20000;
	r->duration_ms = 12;
	r->end_ns = 1764145800123456789ull; /* 2025-11-26T08:30:00.123Z */
}

static json_t *parse_line(const char *line, size_t len)
{
	json_error_t err;
	json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);

	if (!j)
		fail_msg("invalid JSON (%s): %.*s", err.text, (int)len, line);
	return j;
}

static void test_format_fields(void **state)
{
	struct al_record r;
	char buf[AL_LINE_MAX];
	size_t n;
	json_t *j;

	(void)state;
	sample_record(&r);
	n = accesslog_format(&r, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(buf[n - 1], '\n');
	assert_null(memchr(buf, '\n', n - 1)); /* one line */
	j = parse_line(buf, n - 1);
	assert_string_equal(json_string_value(json_object_get(j, "timestamp")),
	                    "2025-11-26T08:30:00.123Z");
	assert_string_equal(json_string_value(json_object_get(j, "direction")), "outbound");
	assert_string_equal(json_string_value(json_object_get(j, "reporter")), "source");
	assert_string_equal(json_string_value(json_object_get(j, "src_addr")), "10.1.2.3:41000");
	assert_string_equal(json_string_value(json_object_get(j, "dst_addr")), "[fd00::5]:8080");
	assert_string_equal(json_string_value(json_object_get(j, "src_workload")), "frontend");
	assert_string_equal(json_string_value(json_object_get(j, "dst_namespace")), "shop");
	assert_string_equal(json_string_value(json_object_get(j, "dst_identity")),
	                    "spiffe://cluster.local/ns/shop/sa/be");
	assert_string_equal(json_string_value(json_object_get(j, "connection_security_policy")),
	                    "mutual_tls");
	/* outbound: the local workload is the client */
	assert_int_equal(json_integer_value(json_object_get(j, "bytes_sent")), 1000);
	assert_int_equal(json_integer_value(json_object_get(j, "bytes_received")), 20000);
	assert_int_equal(json_integer_value(json_object_get(j, "duration_ms")), 12);
	assert_string_equal(json_string_value(json_object_get(j, "response_flags")), "-");
	assert_true(json_is_null(json_object_get(j, "error")));
	assert_true(json_is_null(json_object_get(j, "traceparent")));
	assert_true(json_is_null(json_object_get(j, "dst_service")));
	json_decref(j);

	/* inbound flips the byte fields; flags and tracing show up */
	r.direction = AL_INBOUND;
	r.response_flags = RF_DENY;
	al_str(r.error, sizeof(r.error), "denied by policy ns/shop/deny-all");
	al_str(r.traceparent, sizeof(r.traceparent),
	       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	al_str(r.baggage, sizeof(r.baggage), "k8s.namespace.name=shop,k8s.deployment.name=fe");
	memset(&r.src.addr, 0, sizeof(r.src.addr));
	n = accesslog_format(&r, buf, sizeof(buf));
	j = parse_line(buf, n - 1);
	assert_string_equal(json_string_value(json_object_get(j, "reporter")), "destination");
	assert_int_equal(json_integer_value(json_object_get(j, "bytes_sent")), 20000);
	assert_int_equal(json_integer_value(json_object_get(j, "bytes_received")), 1000);
	assert_string_equal(json_string_value(json_object_get(j, "response_flags")), "DENY");
	assert_string_equal(json_string_value(json_object_get(j, "traceparent")),
	                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	assert_true(json_is_null(json_object_get(j, "src_addr")));
	assert_string_equal(json_string_value(json_object_get(j, "error")),
	                    "denied by policy ns/shop/deny-all");
	json_decref(j);

	/* too small a buffer: 0, never a partial line */
	assert_int_equal(accesslog_format(&r, buf, 100), 0);
}

static void test_hostile_strings(void **state)
{
	static const char *const valid[] = {
		"quote\" backslash\\ slash/ tab\t cr\r nl\n",
		"\x01\x02\x1f\x7f ctl",
		"\"}\n{\"injected\":1",
		"utf8 h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 sep\xe2\x80\xa8x",
	};
	struct al_record r;
	char buf[AL_LINE_MAX], big[4096];
	size_t n, i;
	json_t *j;
	const char *s;

	(void)state;
	for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		sample_record(&r);
		al_str(r.error, sizeof(r.error), valid[i]);
		al_str(r.src.workload, sizeof(r.src.workload), valid[i]);
		n = accesslog_format(&r, buf, sizeof(buf));
		assert_true(n > 0);
		assert_null(memchr(buf, '\n', n - 1));
		j = parse_line(buf, n - 1);
		/* valid UTF-8 round-trips exactly */
		assert_string_equal(json_string_value(json_object_get(j, "error")), valid[i]);
		assert_string_equal(json_string_value(json_object_get(j, "src_workload")),
		                    valid[i]);
		assert_null(json_object_get(j, "injected"));
		json_decref(j);
	}

	/* invalid UTF-8 becomes U+FFFD, one per bad byte */
	sample_record(&r);
	al_str(r.error, sizeof(r.error),
	       "a\xff"
	       "b\xc0\xaf"
	       "c\xed\xa0\x80"
	       "d\xe2\x82");
	n = accesslog_format(&r, buf, sizeof(buf));
	j = parse_line(buf, n - 1);
	s = json_string_value(json_object_get(j, "error"));
	assert_string_equal(s, "a\xef\xbf\xbd"
	                       "b\xef\xbf\xbd\xef\xbf\xbd"
	                       "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	                       "d\xef\xbf\xbd\xef\xbf\xbd");
	json_decref(j);

	/* 4 KiB strings in every field: truncated to the field, still JSON,
	 * worst case (every byte escaped) still fits AL_LINE_MAX */
	for (i = 0; i < 2; i++) {
		memset(big, i ? 0x01 : 0xff, sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		sample_record(&r);
		al_str(r.src.workload, sizeof(r.src.workload), big);
		al_str(r.src.ns, sizeof(r.src.ns), big);
		al_str(r.src.identity, sizeof(r.src.identity), big);
		al_str(r.dst.workload, sizeof(r.dst.workload), big);
		al_str(r.dst.ns, sizeof(r.dst.ns), big);
		al_str(r.dst.identity, sizeof(r.dst.identity), big);
		al_str(r.dst_service, sizeof(r.dst_service), big);
		al_str(r.error, sizeof(r.error), big);
		al_str(r.traceparent, sizeof(r.traceparent), big);
		al_str(r.baggage, sizeof(r.baggage), big);
		assert_int_equal(strlen(r.baggage), AL_BAGGAGE_MAX - 1);
		n = accesslog_format(&r, buf, sizeof(buf));
		assert_true(n > 0);
		j = parse_line(buf, n - 1);
		s = json_string_value(json_object_get(j, "baggage"));
		assert_non_null(s);
		/* one output character per input byte (FFFD or \u0001) */
		assert_int_equal(strlen(s), (AL_BAGGAGE_MAX - 1) * (i ? 1 : 3));
		json_decref(j);
	}

	/* a multi-byte character cut by truncation stays valid JSON */
	memset(big, 0, sizeof(big));
	for (i = 0; i + 2 < 200; i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	sample_record(&r);
	al_str(r.src.ns, 8, big + 1); /* starts mid-character too */
	n = accesslog_format(&r, buf, sizeof(buf));
	j = parse_line(buf, n - 1);
	json_decref(j);
}

/* Read @p and check every line is JSON; returns the number of lines. */
static int count_json_lines(const char *p)
{
	FILE *f = fopen(p, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int lines = 0;

	if (!f)
		return -1;
	while ((n = getline(&line, &cap, f)) > 0) {
		json_t *j;

		assert_int_equal(line[n - 1], '\n');
		j = parse_line(line, (size_t)n - 1);
		assert_non_null(json_object_get(j, "timestamp"));
		json_decref(j);
		lines++;
	}
	free(line);
	fclose(f);
	return lines;
}

static void test_write_and_flush(void **state)
{
	struct al_record r, *slot;
	struct accesslog_stats st;
	int i;

	(void)state;
	assert_int_equal(accesslog_init(2, 64, path), 0);
	sample_record(&r);
	for (i = 0; i < 40; i++) {
		assert_int_equal(accesslog_submit((unsigned)(i % 2), &r), 1);
		if (i % 8 == 0)
			assert_int_equal(accesslog_flush(2000), 0);
	}
	/* reserve/commit fills end_ns when left 0 */
	slot = accesslog_reserve(1, 0);
	assert_non_null(slot);
	slot->direction = AL_INBOUND;
	accesslog_commit(1);
	assert_int_equal(accesslog_flush(2000), 0);
	assert_int_equal(count_json_lines(path), 41);
	accesslog_stats_get(&st);
	assert_int_equal(st.written, 41);
	assert_int_equal(st.dropped, 0);
	/* invalid worker: nothing */
	assert_null(accesslog_reserve(2, 0));
	assert_int_equal(accesslog_submit(7, &r), 0);
	assert_int_equal(accesslog_init(1, 1, path), -EALREADY);
}

static void test_ring_full_drops(void **state)
{
	struct al_record r;
	struct accesslog_stats st;
	int i, queued = 0;

	(void)state;
	assert_int_equal(accesslog_init(1, 4, path), 0);
	sample_record(&r);
	/* A tight loop outruns the writer (it formats and writes): the ring
	 * of 4 fills and further records are dropped, never waited for. */
	for (i = 0; i < 5000; i++)
		queued += accesslog_submit(0, &r);
	assert_int_equal(accesslog_flush(5000), 0);
	accesslog_stats_get(&st);
	assert_true(st.dropped > 0);
	assert_int_equal(st.dropped + (uint64_t)queued, 5000);
	assert_int_equal(st.written, (uint64_t)queued);
	assert_int_equal(count_json_lines(path), queued);
}

static void test_sampling_exact(void **state)
{
	struct al_record r;
	struct accesslog_stats st;
	int i, kept = 0;

	(void)state;
	assert_int_equal(accesslog_init(2, 4096, path), 0);
	sample_record(&r);
	accesslog_set_sampling(10);
	assert_int_equal(accesslog_sampling(), 10);
	for (i = 0; i < 1000; i++)
		kept += accesslog_submit(0, &r);
	assert_int_equal(kept, 100);
	/* failures bypass sampling: denied/failed connections always logged */
	r.response_flags = RF_DENY;
	for (i = 0; i < 37; i++)
		kept += accesslog_submit(1, &r);
	assert_int_equal(kept, 137);
	/* but not DC/UC (ordinary closes) */
	r.response_flags = RF_DC;
	for (i = 0; i < 30; i++)
		kept += accesslog_submit(1, &r);
	assert_int_equal(kept, 140);
	accesslog_set_sampling(0); /* 0 means every connection */
	assert_int_equal(accesslog_sampling(), 1);
	r.response_flags = 0;
	for (i = 0; i < 25; i++)
		kept += accesslog_submit(0, &r);
	assert_int_equal(kept, 165);
	/* off: nothing, nothing counted as dropped */
	accesslog_set_enabled(0);
	assert_false(accesslog_enabled());
	for (i = 0; i < 25; i++)
		kept += accesslog_submit(0, &r);
	assert_int_equal(kept, 165);
	accesslog_set_enabled(1);
	assert_int_equal(accesslog_flush(2000), 0);
	accesslog_stats_get(&st);
	assert_int_equal(st.written, 165);
	assert_int_equal(st.sampled_out, 900 + 27);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(count_json_lines(path), 165);
}

static void test_reopen(void **state)
{
	struct al_record r;
	struct accesslog_stats st;
	char rotated[160];

	(void)state;
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	assert_int_equal(accesslog_init(1, 16, path), 0);
	sample_record(&r);
	assert_int_equal(accesslog_submit(0, &r), 1);
	assert_int_equal(accesslog_submit(0, &r), 1);
	assert_int_equal(accesslog_flush(2000), 0);
	assert_int_equal(rename(path, rotated), 0);
	/* still writing to the renamed file until reopened */
	assert_int_equal(accesslog_submit(0, &r), 1);
	assert_int_equal(accesslog_flush(2000), 0);
	accesslog_reopen();
	assert_int_equal(accesslog_flush(2000), 0);
	assert_int_equal(accesslog_submit(0, &r), 1);
	assert_int_equal(accesslog_flush(2000), 0);
	assert_int_equal(count_json_lines(rotated), 3);
	assert_int_equal(count_json_lines(path), 1);
	accesslog_stats_get(&st);
	assert_int_equal(st.reopens, 1);
	unlink(rotated);
}

static void test_bad_path_and_stderr(void **state)
{
	(void)state;
	assert_int_equal(accesslog_init(1, 16, "/nonexistent-dir/x/access.log"), -ENOENT);
	assert_int_equal(accesslog_init(0, 16, NULL), -EINVAL);
	assert_int_equal(accesslog_init(1, 16, "-"), 0);
	accesslog_reopen(); /* no-op on stderr */
	assert_int_equal(accesslog_flush(2000), 0);
}

static void test_metrics_export(void **state)
{
	struct al_record r;
	char *text;
	size_t len;

	(void)state;
	assert_int_equal(metrics_init(1, 8), 0);
	assert_int_equal(accesslog_init(1, 16, path), 0);
	assert_int_equal(accesslog_register_metrics(), 0);
	sample_record(&r);
	accesslog_set_sampling(2);
	accesslog_submit(0, &r);
	accesslog_submit(0, &r);
	accesslog_submit(0, &r);
	assert_int_equal(accesslog_flush(2000), 0);
	assert_int_equal(metrics_render(&text, &len), 0);
	assert_non_null(strstr(text, "\nambit_accesslog_lines_total 2\n"));
	assert_non_null(
	    strstr(text, "\nambit_accesslog_dropped_total{reason=\"sampled_out\"} 1\n"));
	assert_non_null(strstr(text, "\nambit_accesslog_sampling 2\n"));
	free(text);
	metrics_fini();
}

struct fifo_reader {
	int fd;
	char *buf;
	size_t len, cap;
};

static void *fifo_read_all(void *p)
{
	struct fifo_reader *r = p;
	ssize_t n;

	for (;;) {
		if (r->len == r->cap) {
			r->cap = r->cap ? r->cap * 2 : 65536;
			r->buf = realloc(r->buf, r->cap);
			if (!r->buf)
				return NULL;
		}
		n = read(r->fd, r->buf + r->len, r->cap - r->len);
		if (n <= 0)
			break; /* EOF: every writer closed */
		r->len += (size_t)n;
	}
	return NULL;
}

/* To a pipe (stderr under systemd), lines are written in chunks of at
 * most PIPE_BUF, so another writer's lines (the daemon log) never land
 * inside ours. */
static void test_pipe_lines_whole(void **state)
{
	char fifo[160], marker[201], *line, *save;
	struct fifo_reader rd = { 0 };
	struct al_record r;
	pthread_t t;
	int wfd, i, json = 0, markers = 0;

	(void)state;
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	rd.fd = open(fifo, O_RDONLY | O_NONBLOCK);
	assert_true(rd.fd >= 0);
	wfd = open(fifo, O_WRONLY);
	assert_true(wfd >= 0);
	/* blocking reads from here on */
	assert_int_equal(fcntl(rd.fd, F_SETFL, 0), 0);
	assert_int_equal(pthread_create(&t, NULL, fifo_read_all, &rd), 0);
	assert_int_equal(accesslog_init(1, 4096, fifo), 0);
	memset(marker, 'm', sizeof(marker) - 2);
	marker[sizeof(marker) - 2] = '\n';
	marker[sizeof(marker) - 1] = '\0';
	sample_record(&r);
	al_str(r.baggage, sizeof(r.baggage), "k=v");
	for (i = 0; i < 2000; i++) {
		assert_int_equal(accesslog_submit(0, &r), 1);
		assert_int_equal(write(wfd, marker, 200), 200);
	}
	assert_int_equal(accesslog_flush(10000), 0);
	accesslog_fini();
	close(wfd);
	pthread_join(t, NULL);
	close(rd.fd);
	assert_non_null(rd.buf);
	rd.buf[rd.len - 1] = '\0';
	for (line = strtok_r(rd.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == 'm') {
			assert_int_equal(strspn(line, "m"), 199);
			assert_int_equal(strlen(line), 199);
			markers++;
		} else {
			json_decref(parse_line(line, strlen(line)));
			json++;
		}
	}
	assert_int_equal(markers, 2000);
	assert_int_equal(json, 2000);
	free(rd.buf);
	unlink(fifo);
}

static void test_admin_query(void **state)
{
	(void)state;
	assert_int_equal(accesslog_init(1, 16, path), 0);
	assert_int_equal(accesslog_apply_query("access_log=off", 14), 0);
	assert_false(accesslog_enabled());
	assert_int_equal(accesslog_apply_query("sample=25&access_log=on&level=debug", 35), 0);
	assert_true(accesslog_enabled());
	assert_int_equal(accesslog_sampling(), 25);
	assert_int_equal(accesslog_apply_query("", 0), 0);
	/* bad queries change nothing, even when a valid key came first */
	assert_int_equal(accesslog_apply_query("access_log=off&sample=0", 23), -EINVAL);
	assert_true(accesslog_enabled());
	assert_int_equal(accesslog_sampling(), 25);
	assert_int_equal(accesslog_apply_query("access_log=maybe", 16), -EINVAL);
	assert_int_equal(accesslog_apply_query("sample=10000000", 15), -EINVAL);
	assert_int_equal(accesslog_apply_query("sample=1x", 9), -EINVAL);
	assert_int_equal(accesslog_apply_query("sample=", 7), -EINVAL);
	assert_int_equal(accesslog_apply_query("sample=2&sample=3", 17), -EINVAL);
	assert_int_equal(accesslog_apply_query("sampling=2", 10), -EINVAL);
	assert_int_equal(accesslog_apply_query("access_log", 10), -EINVAL);
	assert_int_equal(accesslog_apply_query("access_log=off&", 15), -EINVAL);
	/* the length bounds the parse, not a NUL */
	assert_int_equal(accesslog_apply_query("sample=7garbage", 8), 0);
	assert_int_equal(accesslog_sampling(), 7);
	assert_true(accesslog_enabled());
}

static void test_traceparent(void **state)
{
	static const char good[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	static const char *const bad[] = {
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span */
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 + extra */
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  /* no '-' */
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
		"",
	};
	struct al_trace t, c, n;
	char out[AL_TRACEPARENT_LEN + 1];
	size_t i;

	(void)state;
	assert_int_equal(al_traceparent_parse(good, strlen(good), &t), 0);
	assert_int_equal(t.trace_id[0], 0x4b);
	assert_int_equal(t.span_id[7], 0xb7);
	assert_int_equal(t.flags, 1);
	al_traceparent_format(&t, out);
	assert_string_equal(out, good);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(al_traceparent_parse(bad[i], strlen(bad[i]), &n), -EINVAL);
	assert_int_equal(al_traceparent_parse(NULL, 0, &n), -EINVAL);
	/* a future version: its first 55 bytes, when followed by '-' */
	assert_int_equal(
	    al_traceparent_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", 60,
	                         &n),
	    0);

	/* child: same trace, new span; new trace: random, non-zero, sampled */
	al_trace_child(&t, &c);
	assert_memory_equal(c.trace_id, t.trace_id, 16);
	assert_memory_not_equal(c.span_id, t.span_id, 8);
	al_trace_child(NULL, &n);
	assert_memory_not_equal(n.trace_id, t.trace_id, 16);
	assert_int_equal(n.flags, 1);
	al_traceparent_format(&n, out);
	assert_int_equal(strlen(out), AL_TRACEPARENT_LEN);
	assert_int_equal(al_traceparent_parse(out, strlen(out), &c), 0);
	assert_memory_equal(c.trace_id, n.trace_id, 16);
}

static void test_baggage(void **state)
{
	struct al_baggage b, p;
	char out[AL_BAGGAGE_MAX];
	size_t n;
	char big[9000];
	int i;

	(void)state;
	memset(&b, 0, sizeof(b));
	al_str(b.cluster, sizeof(b.cluster), "Kubernetes");
	al_str(b.ns, sizeof(b.ns), "shop");
	al_str(b.workload_type, sizeof(b.workload_type), "deployment");
	al_str(b.workload, sizeof(b.workload), "front end,v=1;x%\"\xc3\xa9");
	al_str(b.version, sizeof(b.version), "v1");
	n = al_baggage_build(&b, out, sizeof(out));
	assert_true(n > 0);
	assert_string_equal(out, "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,"
	                         "k8s.deployment.name=front%20end%2Cv=1%3Bx%25%22%C3%A9,"
	                         "service.version=v1");
	assert_int_equal(al_baggage_parse(out, n, &p), 0);
	assert_string_equal(p.cluster, "Kubernetes");
	assert_string_equal(p.ns, "shop");
	assert_string_equal(p.workload_type, "deployment");
	assert_string_equal(p.workload, b.workload);
	assert_string_equal(p.version, "v1");
	assert_string_equal(p.service, "");
	assert_int_equal(al_baggage_build(&b, out, 20), 0); /* does not fit */

	/* whitespace, properties, unknown keys, odd percent signs */
	{
		const char *q = " k8s.namespace.name = a%2 ;prop=1 , other=x,, "
		                "k8s.pod.name=p%41d,service.name=s%zz";

		assert_int_equal(al_baggage_parse(q, strlen(q), &p), 0);
	}
	assert_string_equal(p.ns, "a%2");
	assert_string_equal(p.workload_type, "pod");
	assert_string_equal(p.workload, "pAd");
	assert_string_equal(p.service, "s%zz");
	/* values are cut to the field, %00 ends them */
	assert_int_equal(al_baggage_parse("service.name=ab%00cd", 20, &p), 0);
	assert_string_equal(p.service, "ab");

	/* syntax errors */
	assert_int_equal(al_baggage_parse("novalue", 7, &p), -EINVAL);
	assert_int_equal(al_baggage_parse("=v", 2, &p), -EINVAL);
	assert_int_equal(al_baggage_parse("k(=v", 4, &p), -EINVAL);
	assert_int_equal(al_baggage_parse("k=v v", 5, &p), -EINVAL);
	assert_int_equal(al_baggage_parse("k=\"v\"", 5, &p), -EINVAL);
	assert_int_equal(al_baggage_parse(NULL, 0, &p), -EINVAL);
	/* at most 64 members and 8192 bytes */
	big[0] = '\0';
	for (i = 0; i < 65; i++)
		strcat(big, i ? ",k=v" : "k=v");
	assert_int_equal(al_baggage_parse(big, strlen(big), &p), -EINVAL);
	big[strlen("k=v,") * 64 - 1] = '\0';
	assert_int_equal(al_baggage_parse(big, strlen(big), &p), 0);
	memset(big, 'a', sizeof(big));
	assert_int_equal(al_baggage_parse(big, sizeof(big), &p), -EINVAL);
	/* empty: fine, nothing known */
	assert_int_equal(al_baggage_parse("", 0, &p), 0);
	assert_string_equal(p.ns, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_fields),
		cmocka_unit_test(test_hostile_strings),
		cmocka_unit_test_teardown(test_write_and_flush, after_each),
		cmocka_unit_test_teardown(test_ring_full_drops, after_each),
		cmocka_unit_test_teardown(test_sampling_exact, after_each),
		cmocka_unit_test_teardown(test_reopen, after_each),
		cmocka_unit_test_teardown(test_bad_path_and_stderr, after_each),
		cmocka_unit_test_teardown(test_metrics_export, after_each),
		cmocka_unit_test_teardown(test_admin_query, after_each),
		cmocka_unit_test_teardown(test_pipe_lines_whole, after_each),
		cmocka_unit_test(test_traceparent),
		cmocka_unit_test(test_baggage),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
