/*
 * metrics + promtext: exact exposition text, escaping, bounded series and
 * children, per-worker sums under concurrency, registration errors.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node-proxy/metrics.h"
#include "node-proxy/promtext.h"

static int setup(void **state)
{
	(void)state;
	return metrics_init(2, 16);
}

static int teardown(void **state)
{
	(void)state;
	metrics_fini();
	return 0;
}

static char *render(void)
{
	char *out;
	size_t len;

	assert_int_equal(metrics_render(&out, &len), 0);
	assert_int_equal(strlen(out), len);
	return out;
}

/* The text of family @name: from its "# HELP" line up to the next "# HELP"
 * (caller frees). */
static char *family_block(const char *text, const char *name)
{
	char head[256], *p, *end, *r;

	snprintf(head, sizeof(head), "# HELP %s ", name);
	p = strstr(text, head);
	assert_non_null(p);
	end = strstr(p + 1, "# HELP ");
	if (!end)
		end = p + strlen(p);
	r = strndup(p, (size_t)(end - p));
	assert_non_null(r);
	return r;
}

static void fill(struct metrics_labels *l, enum metrics_reporter rep, const char *src,
                 const char *dst)
{
	memset(l, 0, sizeof(*l));
	l->reporter = rep;
	l->security = METRICS_SEC_MUTUAL_TLS;
	l->v[ML_SOURCE_WORKLOAD] = src;
	l->v[ML_SOURCE_WORKLOAD_NAMESPACE] = "default";
	l->v[ML_SOURCE_PRINCIPAL] = "spiffe://cluster.local/ns/default/sa/client";
	l->v[ML_DESTINATION_WORKLOAD] = dst;
	l->v[ML_DESTINATION_WORKLOAD_NAMESPACE] = "default";
}

#define U "unknown"
static const char *expected_labels(const char *rep, const char *src, const char *dst,
                                   const char *rf)
{
	static char buf[2048];

	snprintf(buf, sizeof(buf),
	         "reporter=\"%s\",source_workload=\"%s\",source_canonical_service=\"" U "\","
	         "source_canonical_revision=\"" U "\",source_workload_namespace=\"default\","
	         "source_principal=\"spiffe://cluster.local/ns/default/sa/client\","
	         "source_app=\"" U "\",source_version=\"" U "\",source_cluster=\"" U "\","
	         "destination_service=\"" U "\",destination_service_namespace=\"" U "\","
	         "destination_service_name=\"" U "\",destination_workload=\"%s\","
	         "destination_canonical_service=\"" U "\",destination_canonical_revision=\"" U "\","
	         "destination_workload_namespace=\"default\",destination_principal=\"" U "\","
	         "destination_app=\"" U "\",destination_version=\"" U "\","
	         "destination_cluster=\"" U "\",request_protocol=\"tcp\",response_flags=\"%s\","
	         "connection_security_policy=\"mutual_tls\"",
	         rep, src, dst, rf);
	return buf;
}

static void test_exact_exposition(void **state)
{
	struct metrics_labels l;
	struct metrics_shard *s0 = metrics_shard(0), *s1 = metrics_shard(1);
	uint32_t a, b;
	char *text, *blk, want[8192];

	(void)state;
	fill(&l, METRICS_REPORTER_SOURCE, "fe", "be");
	a = metrics_series(&l);
	fill(&l, METRICS_REPORTER_DESTINATION, "fe", "be");
	b = metrics_series(&l);
	assert_int_not_equal(a, METRICS_SERIES_OVERFLOW);
	assert_int_not_equal(b, METRICS_SERIES_OVERFLOW);
	assert_int_not_equal(a, b);
	fill(&l, METRICS_REPORTER_SOURCE, "fe", "be");
	assert_int_equal(metrics_series(&l), a); /* interned: same id */

	metrics_conn_open(s0, a);
	metrics_conn_open(s1, a);
	metrics_conn_open(s0, b);
	metrics_tcp_add(s0, a, MT_RECEIVED_BYTES, 100);
	metrics_tcp_add(s1, a, MT_RECEIVED_BYTES, 23);
	metrics_tcp_add(s0, b, MT_SENT_BYTES, 7);
	metrics_conn_close(s0, a, 0);
	metrics_conn_close(s1, a, RF_UF | RF_URX);

	text = render();
	blk = family_block(text, "istio_tcp_connections_opened_total");
	/* destination sorts before source */
	snprintf(want, sizeof(want),
	         "# HELP istio_tcp_connections_opened_total The total number of TCP connections "
	         "opened\n# TYPE istio_tcp_connections_opened_total counter\n"
	         "istio_tcp_connections_opened_total{%s} 1\n",
	         expected_labels("destination", "fe", "be", "-"));
	snprintf(want + strlen(want), sizeof(want) - strlen(want),
	         "istio_tcp_connections_opened_total{%s} 2\n",
	         expected_labels("source", "fe", "be", "-"));
	assert_string_equal(blk, want);
	free(blk);

	blk = family_block(text, "istio_tcp_connections_closed_total");
	snprintf(want, sizeof(want),
	         "# HELP istio_tcp_connections_closed_total The total number of TCP connections "
	         "closed\n# TYPE istio_tcp_connections_closed_total counter\n"
	         "istio_tcp_connections_closed_total{%s} 1\n",
	         expected_labels("source", "fe", "be", "-"));
	snprintf(want + strlen(want), sizeof(want) - strlen(want),
	         "istio_tcp_connections_closed_total{%s} 1\n",
	         expected_labels("source", "fe", "be", "UF,URX"));
	assert_string_equal(blk, want);
	free(blk);

	blk = family_block(text, "istio_tcp_connections_failed_total");
	assert_non_null(strstr(blk, "response_flags=\"UF,URX\""));
	assert_null(strstr(blk, "response_flags=\"-\""));
	free(blk);

	blk = family_block(text, "istio_tcp_received_bytes_total");
	snprintf(want, sizeof(want),
	         "# HELP istio_tcp_received_bytes_total The size of total bytes received during "
	         "request in case of a TCP connection\n"
	         "# TYPE istio_tcp_received_bytes_total counter\n"
	         "istio_tcp_received_bytes_total{%s} 123\n",
	         expected_labels("source", "fe", "be", "-"));
	assert_string_equal(blk, want);
	free(blk);

	blk = family_block(text, "istio_tcp_sent_bytes_total");
	assert_non_null(strstr(blk, "reporter=\"destination\""));
	assert_non_null(strstr(blk, "} 7\n"));
	free(blk);
	free(text);
}

static void test_own_family_exact(void **state)
{
	static const char *const ln[] = { "action", "policy", NULL };
	struct metrics_family *f;
	uint32_t allow, deny, again;
	char *text, *blk;

	(void)state;
	f = metrics_family_register("test_decisions_total", "Decisions \\ made\nhere",
	                            METRICS_COUNTER, ln);
	assert_non_null(f);
	allow = metrics_child(f, (const char *[]){ "allow", "p1" });
	deny = metrics_child(f, (const char *[]){ "deny", NULL });
	again = metrics_child(f, (const char *[]){ "allow", "p1" });
	assert_int_equal(allow, again);
	assert_int_not_equal(allow, deny);
	metrics_ctr_add(metrics_shard(0), allow, 3);
	metrics_ctr_add(metrics_shard(1), allow, 4);
	metrics_ctr_add_any(deny, 1);
	text = render();
	blk = family_block(text, "test_decisions_total");
	assert_string_equal(blk, "# HELP test_decisions_total Decisions \\\\ made\\nhere\n"
	                         "# TYPE test_decisions_total counter\n"
	                         "test_decisions_total{action=\"allow\",policy=\"p1\"} 7\n"
	                         "test_decisions_total{action=\"deny\",policy=\"unknown\"} 1\n");
	free(blk);
	free(text);

	/* gauges: signed deltas summed over shards, or set */
	f = metrics_family_register("test_open", "Open things", METRICS_GAUGE, NULL);
	assert_non_null(f);
	allow = metrics_child(f, NULL);
	metrics_ctr_add(metrics_shard(0), allow, 5);
	metrics_ctr_add(metrics_shard(1), allow, -7);
	assert_int_equal(metrics_slot_sum(allow), -2);
	text = render();
	blk = family_block(text, "test_open");
	assert_string_equal(blk, "# HELP test_open Open things\n# TYPE test_open gauge\n"
	                         "test_open -2\n");
	free(blk);
	free(text);
}

static void test_escaping(void **state)
{
	struct pt_buf b;
	char big[600];

	(void)state;
	pt_init(&b);
	pt_label_value(&b, "a\\b\"c\nd", 256, "unknown");
	assert_string_equal(b.p, "a\\\\b\\\"c\\nd");
	pt_free(&b);

	/* invalid UTF-8: lone continuation, overlong, surrogate, truncated */
	pt_label_value(&b, "x\x80y\xc0\xafz\xed\xa0\x80w\xe2\x82", 256, "unknown");
	assert_string_equal(b.p, "x\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd"
	                         "\xef\xbf\xbdw\xef\xbf\xbd\xef\xbf\xbd");
	pt_free(&b);

	/* valid multi-byte kept; empty/NULL -> default */
	pt_label_value(&b, "h\xc3\xa9llo \xf0\x9f\x98\x80", 256, "unknown");
	assert_string_equal(b.p, "h\xc3\xa9llo \xf0\x9f\x98\x80");
	pt_free(&b);
	pt_label_value(&b, "", 256, "unknown");
	pt_label_value(&b, NULL, 256, "-");
	assert_string_equal(b.p, "unknown-");
	pt_free(&b);

	/* bounded length: a 600-byte value keeps 256 bytes */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	pt_label_value(&b, big, 256, "unknown");
	assert_int_equal(b.len, 256);
	pt_free(&b);

	/* names */
	assert_true(pt_valid_name("istio_tcp:x_total", 0));
	assert_false(pt_valid_name("1abc", 0));
	assert_false(pt_valid_name("a-b", 0));
	assert_false(pt_valid_name("", 0));
	assert_false(pt_valid_name("a:b", 1));
	assert_false(pt_valid_name("__reserved", 1));
	assert_true(pt_valid_name("_ok9", 1));

	/* values */
	pt_double(&b, 1.5);
	pt_putn(&b, " ", 1);
	pt_double(&b, 1.0 / 0.0);
	pt_putn(&b, " ", 1);
	pt_double(&b, 42);
	pt_putn(&b, " ", 1);
	pt_u64(&b, UINT64_MAX);
	assert_string_equal(b.p, "1.5 +Inf 42 18446744073709551615");
	pt_free(&b);
}

static void test_hostile_label_in_series(void **state)
{
	struct metrics_labels l;
	uint32_t id;
	char *text, *blk;

	(void)state;
	fill(&l, METRICS_REPORTER_SOURCE, "evil\"}\n# TYPE x counter\nx 1", "be\\");
	id = metrics_series(&l);
	metrics_conn_open(metrics_shard(0), id);
	text = render();
	blk = family_block(text, "istio_tcp_connections_opened_total");
	assert_non_null(strstr(blk, "source_workload=\"evil\\\"}\\n# TYPE x counter\\nx 1\""));
	assert_non_null(strstr(blk, "destination_workload=\"be\\\\\""));
	assert_null(strstr(text, "\n# TYPE x counter"));
	free(blk);
	free(text);
}

/* Two raw label sets that render alike are one series (no duplicate
 * series in the output), and the flags variant is found again by key. */
static void test_series_render_alias(void **state)
{
	struct metrics_labels l;
	uint32_t a, b, c, fa, fb;

	(void)state;
	fill(&l, METRICS_REPORTER_SOURCE, "x\xff", NULL);
	a = metrics_series(&l);
	fill(&l, METRICS_REPORTER_SOURCE, "x\xfe", "unknown");
	b = metrics_series(&l);
	fill(&l, METRICS_REPORTER_SOURCE, "x\xfe", "");
	c = metrics_series(&l);
	assert_int_not_equal(a, METRICS_SERIES_OVERFLOW);
	assert_int_equal(a, b);
	assert_int_equal(a, c);
	assert_int_equal(metrics_series_count(), 2);
	fa = metrics_series_flags(a, RF_UF);
	assert_int_not_equal(fa, a);
	fb = metrics_series_flags(a, RF_UF);
	assert_int_equal(fa, fb);
	assert_int_equal(metrics_series_flags(fa, 0), a);
	l.response_flags = RF_UF;
	assert_int_equal(metrics_series(&l), fa);
	assert_int_equal(metrics_series_count(), 3);
	/* reporter and security are part of the identity */
	l.reporter = METRICS_REPORTER_DESTINATION;
	assert_int_not_equal(metrics_series(&l), fa);
	l.security = METRICS_SEC_NONE;
	assert_int_equal(metrics_series_count(), 4);
	assert_int_not_equal(metrics_series(&l), fa);
	assert_int_equal(metrics_series_count(), 5);
}

static void test_series_bounded(void **state)
{
	struct metrics_labels l;
	char name[32];
	uint32_t id, ids[16];
	int i;
	char *text, *blk;

	(void)state;
	metrics_fini();
	assert_int_equal(metrics_init(1, 4), 0);
	assert_int_equal(metrics_series_count(), 1); /* the overflow series */
	for (i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		fill(&l, METRICS_REPORTER_SOURCE, name, "be");
		ids[i] = metrics_series(&l);
		metrics_conn_open(metrics_shard(0), ids[i]);
	}
	/* ids 1..3, then overflow for the other 7 */
	for (i = 0; i < 3; i++)
		assert_int_equal(ids[i], (uint32_t)i + 1);
	for (i = 3; i < 10; i++)
		assert_int_equal(ids[i], METRICS_SERIES_OVERFLOW);
	assert_int_equal(metrics_series_count(), 4);
	assert_int_equal(metrics_series_dropped(), 7);
	/* a known set still finds its id when the table is full */
	fill(&l, METRICS_REPORTER_SOURCE, "w1", "be");
	assert_int_equal(metrics_series(&l), 2);
	/* flags variant of a full table: overflow too, and counted */
	id = metrics_series_flags(1, RF_UF);
	assert_int_equal(id, METRICS_SERIES_OVERFLOW);
	assert_int_equal(metrics_series_dropped(), 8);
	/* out-of-range ids land in the overflow series, never out of bounds */
	metrics_tcp_add(metrics_shard(0), 999999, MT_SENT_BYTES, 5);
	assert_int_equal(metrics_tcp_sum(METRICS_SERIES_OVERFLOW, MT_SENT_BYTES), 5);

	text = render();
	blk = family_block(text, "istio_tcp_connections_opened_total");
	assert_non_null(strstr(blk, "{reporter=\"overflow\",source_workload=\"overflow\""));
	assert_non_null(strstr(blk, "connection_security_policy=\"overflow\"} 7\n"));
	free(blk);
	assert_non_null(strstr(text, "\nambit_metrics_series_dropped_total 8\n"));
	assert_non_null(strstr(text, "\nambit_metrics_series 4\n"));
	assert_non_null(strstr(text, "\nambit_metrics_series_max 4\n"));
	free(text);
}

static void test_children_bounded(void **state)
{
	static const char *const ln[] = { "k", NULL };
	struct metrics_family *f;
	char v[16];
	const char *vals[1] = { v };
	uint32_t slot, ov = 0;
	int i;
	char *text;

	(void)state;
	f = metrics_family_register("test_many_total", "Many", METRICS_COUNTER, ln);
	assert_non_null(f);
	for (i = 0; i < METRICS_MAX_CHILDREN + 50; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		slot = metrics_child(f, vals);
		assert_int_not_equal(slot, 0);
		if (i == METRICS_MAX_CHILDREN)
			ov = slot;
		if (i >= METRICS_MAX_CHILDREN)
			assert_int_equal(slot, ov);
		metrics_ctr_add(metrics_shard(0), slot, 1);
	}
	text = render();
	assert_non_null(strstr(text, "\ntest_many_total{k=\"overflow\"} 50\n"));
	assert_non_null(strstr(text, "\ntest_many_total{k=\"v0\"} 1\n"));
	assert_null(strstr(text, "{k=\"v300\"}"));
	free(text);
}

static void collect_hs(void *arg, struct metrics_emitter *e)
{
	const uint64_t *v = arg;

	metrics_emit(e, (const char *[]){ "server" }, (double)v[1]);
	metrics_emit(e, (const char *[]){ "client" }, (double)v[0]);
	metrics_emit(e, (const char *[]){ "client" }, 99); /* repeat: dropped */
}

static void test_std_family_as_collector(void **state)
{
	static uint64_t hs[2] = { 5, 7 };
	struct metrics_family *f = metrics_std(MS_HANDSHAKES);
	char *text, *blk;

	(void)state;
	assert_non_null(f);
	assert_string_equal(metrics_family_name(f), "ambit_hbone_handshakes_total");
	metrics_ctr_add(metrics_shard(0), metrics_child(f, (const char *[]){ "client" }), 1);
	assert_int_equal(metrics_family_set_collector(f, collect_hs, hs), 0);
	assert_int_equal(metrics_family_set_collector(f, collect_hs, hs), -EALREADY);
	assert_int_equal(metrics_family_set_collector(NULL, collect_hs, hs), -EINVAL);
	assert_int_equal(metrics_child(f, (const char *[]){ "client" }), 0);
	text = render();
	blk = family_block(text, "ambit_hbone_handshakes_total");
	assert_string_equal(blk, "# HELP ambit_hbone_handshakes_total mTLS handshakes completed, "
	                         "by our role\n# TYPE ambit_hbone_handshakes_total counter\n"
	                         "ambit_hbone_handshakes_total{role=\"client\"} 5\n"
	                         "ambit_hbone_handshakes_total{role=\"server\"} 7\n");
	free(blk);
	free(text);
	/* registering the name again as a slot family is refused now */
	assert_null(metrics_family_register("ambit_hbone_handshakes_total", "x", METRICS_COUNTER,
	                                    (const char *[]){ "role", NULL }));
}

static void test_register_errors(void **state)
{
	static const char *const two[] = { "a", "b", NULL };
	static const char *const five[] = { "a", "b", "c", "d", "e", NULL };
	static const char *const dup[] = { "a", "a", NULL };
	static const char *const bad[] = { "a-b", NULL };

	(void)state;
	errno = 0;
	assert_null(metrics_family_register("bad name", "h", METRICS_COUNTER, NULL));
	assert_int_equal(errno, EINVAL);
	assert_null(metrics_family_register("ok_total", "h", METRICS_COUNTER, five));
	assert_int_equal(errno, EINVAL);
	assert_null(metrics_family_register("ok_total", "h", METRICS_COUNTER, dup));
	assert_null(metrics_family_register("ok_total", "h", METRICS_COUNTER, bad));
	assert_null(
	    metrics_family_register("istio_tcp_sent_bytes_total", "h", METRICS_COUNTER, NULL));
	assert_non_null(metrics_family_register("ok_total", "h", METRICS_COUNTER, two));
	/* same shape: the same family; different shape: EEXIST */
	assert_non_null(metrics_family_register("ok_total", "h", METRICS_COUNTER, two));
	assert_null(metrics_family_register("ok_total", "h", METRICS_GAUGE, two));
	assert_int_equal(errno, EEXIST);
	assert_null(metrics_family_register("process_open_fds", "h", METRICS_GAUGE, NULL));
	assert_int_equal(errno, EEXIST);
	assert_int_equal(metrics_init(1, 1), -EALREADY);
	/* a bad slot goes to the sink, never rendered */
	metrics_ctr_add(metrics_shard(0), METRICS_MAX_SLOTS + 5, 1);
	assert_null(metrics_shard(2));
}

struct writer_arg {
	unsigned w;
	uint32_t id, slot;
	unsigned long n;
};

static void *writer(void *p)
{
	struct writer_arg *a = p;
	struct metrics_shard *s = metrics_shard(a->w);
	unsigned long i;

	for (i = 0; i < a->n; i++) {
		metrics_tcp_add(s, a->id, MT_SENT_BYTES, 3);
		metrics_tcp_add(s, a->id, MT_RECEIVED_BYTES, 1);
		metrics_ctr_add(s, a->slot, 1);
		if (i % 1000 == 0)
			metrics_conn_open(s, a->id);
	}
	return NULL;
}

static void *scraper(void *p)
{
	int *stop = p;
	char *out;
	size_t len;

	while (!__atomic_load_n(stop, __ATOMIC_RELAXED)) {
		assert_int_equal(metrics_render(&out, &len), 0);
		free(out);
	}
	return NULL;
}

static void test_two_workers_concurrent(void **state)
{
	struct metrics_labels l;
	struct writer_arg a[2];
	pthread_t t[2], sc;
	uint32_t id, slot;
	int stop = 0, i;
	char *text, want[64];

	(void)state;
	fill(&l, METRICS_REPORTER_SOURCE, "fe", "be");
	id = metrics_series(&l);
	slot = metrics_worker_slot(MS_WORKER_CQES, 1);
	assert_int_not_equal(slot, 0);
	assert_int_not_equal(metrics_worker_slot(MS_WORKER_CQES, 0), slot);
	for (i = 0; i < 2; i++) {
		a[i] = (struct writer_arg){ (unsigned)i, id, slot, 1000000 };
		assert_int_equal(pthread_create(&t[i], NULL, writer, &a[i]), 0);
	}
	assert_int_equal(pthread_create(&sc, NULL, scraper, &stop), 0);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	pthread_join(sc, NULL);
	assert_int_equal(metrics_tcp_sum(id, MT_SENT_BYTES), 6000000);
	assert_int_equal(metrics_tcp_sum(id, MT_RECEIVED_BYTES), 2000000);
	assert_int_equal(metrics_tcp_sum(id, MT_OPENED), 2000);
	assert_int_equal(metrics_slot_sum(slot), 2000000);
	text = render();
	snprintf(want, sizeof(want), "ambit_worker_cqes_total{worker=\"1\"} 2000000\n");
	assert_non_null(strstr(text, want));
	assert_non_null(strstr(text, "ambit_worker_cqes_total{worker=\"0\"} 0\n"));
	free(text);
}

struct intern_arg {
	int seed;
	uint32_t ids[300];
};

static void *interner(void *p)
{
	struct intern_arg *a = p;
	struct metrics_labels l;
	char name[32];
	int i;

	for (i = 0; i < 300; i++) {
		/* both threads intern the same 200 names, in different orders,
		 * plus 100 of their own */
		int k = i < 200 ? (a->seed ? 199 - i : i) : 1000 * (a->seed + 1) + i;

		snprintf(name, sizeof(name), "w%d", k);
		fill(&l, METRICS_REPORTER_SOURCE, name, "be");
		a->ids[i] = metrics_series(&l);
		metrics_conn_open(metrics_shard((unsigned)a->seed), a->ids[i]);
	}
	return NULL;
}

/* New label sets interned from two threads while a scraper renders: one
 * id per label set, all counts present, no duplicate series. */
static void test_concurrent_interning(void **state)
{
	struct intern_arg a[2] = { { .seed = 0 }, { .seed = 1 } };
	pthread_t t[2], sc;
	int stop = 0, i;
	char *text, *blk, *line, *save;
	int lines = 0;

	(void)state;
	metrics_fini();
	assert_int_equal(metrics_init(2, 1024), 0);
	assert_int_equal(pthread_create(&sc, NULL, scraper, &stop), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, interner, &a[i]), 0);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	pthread_join(sc, NULL);
	assert_int_equal(metrics_series_count(), 1 + 200 + 200);
	for (i = 0; i < 200; i++)
		assert_int_equal(a[0].ids[i], a[1].ids[199 - i]);
	for (i = 0; i < 200; i++)
		assert_int_equal(metrics_tcp_sum(a[0].ids[i], MT_OPENED), 2);
	text = render();
	blk = family_block(text, "istio_tcp_connections_opened_total");
	for (line = strtok_r(blk, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (line[0] != '#')
			lines++;
	assert_int_equal(lines, 400);
	free(blk);
	free(text);
}

/* Structural checks on the whole output: HELP/TYPE once per family, right
 * before its samples, families sorted, no duplicate sample line names. */
static void test_render_structure(void **state)
{
	struct metrics_labels l;
	char *text, *line, *save, *prev_fam = NULL, *copy;
	char seen[64][128];
	int n_seen = 0, i;
	double v;

	(void)state;
	metrics_set_build_info("1.2.3-test");
	fill(&l, METRICS_REPORTER_SOURCE, "fe", "be");
	metrics_conn_open(metrics_shard(0), metrics_series(&l));
	metrics_gauge_set(metrics_child(metrics_std(MS_WORKLOADS_ENROLLED), NULL), 3);
	text = render();
	assert_non_null(strstr(text, "\nambit_build_info{version=\"1.2.3-test\"} 1\n"));
	assert_non_null(strstr(text, "\nambit_workloads_enrolled 3\n"));
	assert_non_null(strstr(text, "\n# TYPE process_cpu_seconds_total counter\n"));
	line = strstr(text, "\nprocess_resident_memory_bytes ");
	assert_non_null(line);
	v = strtod(line + strlen("\nprocess_resident_memory_bytes "), NULL);
	assert_true(v > 1e5);
	line = strstr(text, "\nprocess_open_fds ");
	assert_non_null(line);
	assert_true(strtod(line + strlen("\nprocess_open_fds "), NULL) >= 3);
	line = strstr(text, "\nprocess_start_time_seconds ");
	assert_non_null(line);
	assert_true(strtod(line + strlen("\nprocess_start_time_seconds "), NULL) > 1.6e9);

	copy = strdup(text);
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "# HELP ", 7)) {
			char name[128];

			sscanf(line + 7, "%127s", name);
			for (i = 0; i < n_seen; i++)
				assert_string_not_equal(seen[i], name);
			assert_true(n_seen < 64);
			strcpy(seen[n_seen++], name);
			if (prev_fam)
				assert_true(strcmp(prev_fam, name) < 0);
			prev_fam = seen[n_seen - 1];
			line = strtok_r(NULL, "\n", &save);
			assert_non_null(line);
			assert_int_equal(strncmp(line, "# TYPE ", 7), 0);
			assert_int_equal(strncmp(line + 7, name, strlen(name)), 0);
		} else {
			/* a sample belongs to the family announced last */
			assert_non_null(prev_fam);
			assert_int_equal(strncmp(line, prev_fam, strlen(prev_fam)), 0);
			assert_true(line[strlen(prev_fam)] == '{' || line[strlen(prev_fam)] == ' ');
		}
	}
	assert_true(n_seen >= 25);
	free(copy);
	free(text);
}

static void test_rflags_str(void **state)
{
	char buf[RF_STR_MAX];

	(void)state;
	assert_string_equal(metrics_rflags_str(0, buf), "-");
	assert_string_equal(metrics_rflags_str(RF_DENY, buf), "DENY");
	assert_string_equal(metrics_rflags_str(RF__ALL, buf), "UF,UH,URX,UO,NR,DENY,DC,UC,SI,DPE");
	assert_true(strlen(buf) < RF_STR_MAX);
	assert_string_equal(metrics_rflags_str(0xffff0000u, buf), "-");
}

static void test_uninitialised(void **state)
{
	struct metrics_labels l;
	char *out;
	size_t len;

	(void)state;
	metrics_fini();
	memset(&l, 0, sizeof(l));
	assert_int_equal(metrics_series(&l), METRICS_SERIES_OVERFLOW);
	assert_null(metrics_shard(0));
	assert_int_equal(metrics_render(&out, &len), -EINVAL);
	assert_int_equal(metrics_init(0, 10), -EINVAL);
	assert_int_equal(metrics_init(1, 1u << 24), -EINVAL);
	assert_int_equal(metrics_init(2, 16), 0); /* for teardown */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_exact_exposition, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_family_exact, setup, teardown),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test_setup_teardown(test_hostile_label_in_series, setup, teardown),
		cmocka_unit_test_setup_teardown(test_series_render_alias, setup, teardown),
		cmocka_unit_test_setup_teardown(test_series_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_children_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_std_family_as_collector, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_workers_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_interning, setup, teardown),
		cmocka_unit_test_setup_teardown(test_render_structure, setup, teardown),
		cmocka_unit_test(test_rflags_str),
		cmocka_unit_test_setup_teardown(test_uninitialised, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
