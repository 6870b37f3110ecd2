/* Unit tests of node-proxy/services.c: parsing (good and bad, with lines),
 * VIP lookup, balancing shares, least-request, weights, outlier ejection and
 * re-admission, health, circuit breaking, retries over distinct endpoints,
 * state carried over a reload, and concurrent pickers. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node-proxy/confdir.h"
#include "node-proxy/services.h"

#define SVC                                                                                        \
	"[service backend]\nnamespace = shop\nvips = 10.96.0.10, fd00:96::10\n"                    \
	"ports = 80:8080, 443\nselector = app=backend\n"

static struct service_set *load(const char *text)
{
	struct service_set *ss = NULL;
	struct conf_errors e;

	conf_errors_init(&e);
	if (services_load_buf("svc.ini", text, strlen(text), &ss, &e))
		fail_msg("load: %s", e.msg[0]);
	return ss;
}

static void mk_wl(struct workload *w, const char *uid, const char *ns, const char *app,
                  const char *ip, const char *weight)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->uid, sizeof(w->uid), "%s", uid);
	snprintf(w->ns, sizeof(w->ns), "%s", ns);
	snprintf(w->name, sizeof(w->name), "%s", uid);
	w->n_labels = 1;
	snprintf(w->labels[0].key, sizeof(w->labels[0].key), "app");
	snprintf(w->labels[0].val, sizeof(w->labels[0].val), "%s", app);
	if (weight) {
		snprintf(w->labels[1].key, sizeof(w->labels[1].key), SVC_WEIGHT_LABEL);
		snprintf(w->labels[1].val, sizeof(w->labels[1].val), "%s", weight);
		w->n_labels = 2;
	}
	if (ip) {
		assert_int_equal(conf_parse_ip(ip, &w->ips[0]), 0);
		w->n_ips = 1;
	}
}

/* three endpoints, plus three that must never be chosen */
static struct workload wls[6];
static const struct workload *const wlp[6] = {
	&wls[0], &wls[1], &wls[2], &wls[3], &wls[4], &wls[5]
};

static void mk_wls(const char *w0, const char *w1, const char *w2)
{
	mk_wl(&wls[0], "uid-a", "shop", "backend", "10.0.0.1", w0);
	mk_wl(&wls[1], "other-ns", "other", "backend", "10.0.0.9", NULL);
	mk_wl(&wls[2], "uid-b", "shop", "backend", "10.0.0.2", w1);
	mk_wl(&wls[3], "wrong-app", "shop", "web", "10.0.0.8", NULL);
	mk_wl(&wls[4], "uid-c", "shop", "backend", "10.0.0.3", w2);
	mk_wl(&wls[5], "no-ip", "shop", "backend", NULL, NULL);
}

static int idx_of(const struct workload *w)
{
	return (int)(w - wls);
}

static void test_lookup(void **state)
{
	struct service_set *ss = load(SVC);
	struct wl_ip ip;
	uint16_t target = 0;
	const struct service *s;

	(void)state;
	assert_int_equal(services_count(ss), 1);
	conf_parse_ip("10.96.0.10", &ip);
	s = services_lookup(ss, &ip, 80, &target);
	assert_non_null(s);
	assert_string_equal(s->id, "shop/backend");
	assert_int_equal(target, 8080);
	assert_non_null(services_lookup(ss, &ip, 443, &target));
	assert_int_equal(target, 443);
	assert_null(services_lookup(ss, &ip, 81, &target));
	conf_parse_ip("fd00:96::10", &ip);
	assert_ptr_equal(services_lookup(ss, &ip, 80, &target), s);
	conf_parse_ip("10.96.0.11", &ip);
	assert_null(services_lookup(ss, &ip, 80, &target));
	assert_null(services_lookup(NULL, &ip, 80, &target));
	/* defaults */
	assert_int_equal(s->lb, SVC_LB_LEAST_REQUEST);
	assert_int_equal(s->connect_timeout_ms, 1000);
	assert_int_equal(s->retries, 2);
	assert_int_equal(s->outlier_consecutive_failures, 5);
	assert_int_equal(s->hc.kind, SVC_HC_NONE);
	services_set_put(ss);
}

static void test_examples(void **state)
{
	struct service_set *ss = NULL;
	struct conf_errors e;
	const struct service *s;

	(void)state;
	conf_errors_init(&e);
	if (services_load_dir("configs/services.d", &ss, &e))
		fail_msg("%s", e.msg[0]);
	assert_int_equal(services_count(ss), 3);
	s = services_at(ss, 0);
	assert_string_equal(s->id, "shop/backend");
	assert_int_equal(s->hc.kind, SVC_HC_HTTP);
	assert_string_equal(s->hc.path, "/health");
	assert_int_equal(s->hc.port, 8080);
	assert_int_equal(s->hc.interval_ms, 2000);
	assert_int_equal(s->max_pending, 100);
	assert_int_equal(services_at(ss, 1)->lb, SVC_LB_RANDOM);
	assert_int_equal(services_at(ss, 2)->hc.kind, SVC_HC_TCP);
	services_set_put(ss);
}

static const struct {
	const char *text, *want;
} bads[] = {
	{ SVC "lb = round_robin\n", "svc.ini:6: bad lb \"round_robin\"" },
	{ SVC "retries = 9\n", "svc.ini:6: bad retries \"9\" (0..5)" },
	{ SVC "max_connections = -1\n", "svc.ini:6: bad max_connections" },
	{ SVC "connect_timeout_ms = 0\n", "svc.ini:6: bad connect_timeout_ms" },
	{ SVC "health_check = http:health:80\n", "svc.ini:6: bad health_check" },
	{ SVC "health_check = http:/h:0\n", "svc.ini:6: bad health_check" },
	{ SVC "health_check = udp:53\n", "svc.ini:6: bad health_check" },
	{ SVC "colour = red\n", "svc.ini:6: unknown key \"colour\" in [service]" },
	{ SVC "lb = random\nlb = random\n", "svc.ini:7: \"lb\" given twice" },
	{ SVC "vips = 10.96.0.10\n", "svc.ini:6: vips: \"10.96.0.10\" twice" },
	{ SVC "vips = 10.96.0.300\n", "svc.ini:6: vips: bad address" },
	{ SVC "vips = 1.1.1.1, 1.1.1.2, 1.1.1.3\n", "svc.ini:6: vips: more than 4" },
	{ SVC "ports = 80:9\n", "svc.ini:6: ports: port 80 twice" },
	{ SVC "ports = 80:0\n", "svc.ini:6: ports: bad \"80:0\"" },
	{ SVC "ports = http\n", "svc.ini:6: ports: bad \"http\"" },
	{ SVC "selector = app=x\n", "svc.ini:6: selector: label \"app\" twice" },
	{ SVC "weight_label = -w\n", "svc.ini:6: bad weight_label" },
	{ SVC "max_connections = 10\nmax_pending = 11\n", "svc.ini:1: service backend: max_pending "
	                                                  "above max_connections" },
	{ "[service x]\nnamespace = a\nports = 1\nselector = a=b\n", "svc.ini:1: service x has no "
	                                                             "\"vips\"" },
	{ "[service x]\nnamespace = a\nvips = 1.1.1.1\nselector = a=b\n", "has no \"ports\"" },
	{ "[service x]\nnamespace = a\nvips = 1.1.1.1\nports = 1\n", "has no \"selector\"" },
	{ "[service x]\nvips = 1.1.1.1\nports = 1\nselector = a=b\n", "has no \"namespace\"" },
	{ "[svc x]\n", "svc.ini:1: bad section [svc x]" },
	{ "[service X]\n", "svc.ini:1: bad service name \"X\"" },
	{ SVC SVC, "svc.ini:6: service shop/backend already defined at svc.ini:1" },
	{ SVC "[service b2]\nnamespace = shop\nvips = 10.96.0.10\nports = 80\nselector = a=b\n",
	  "svc.ini:6: service shop/b2: a VIP is already used by service shop/backend" },
};

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		struct service_set *ss = NULL;
		struct conf_errors e;
		int rc;

		conf_errors_init(&e);
		rc = services_load_buf("svc.ini", bads[i].text, strlen(bads[i].text), &ss, &e);
		if (rc != -EINVAL || !e.n || !strstr(e.msg[0], bads[i].want))
			fail_msg("case %zu: rc %d, got \"%s\", want \"%s\"", i, rc,
			         e.n ? e.msg[0] : "-", bads[i].want);
		assert_null(ss);
	}
}

/* 3000 picks over 3 endpoints: each gets its share (within 15%, over 4 sigma). */
static void shares(const char *lb, const char *w0, const char *w1, const char *w2,
                   const int want[3])
{
	char text[512];
	struct service_set *ss;
	const struct service *s;
	int count[6] = { 0 };

	snprintf(text, sizeof(text), SVC "lb = %s\n", lb);
	ss = load(text);
	s = services_at(ss, 0);
	mk_wls(w0, w1, w2);
	for (int i = 0; i < 3000; i++) {
		struct svc_pick p;
		assert_int_equal(services_pick(s, wlp, 6, NULL, 1, &p), 0);
		count[idx_of(p.wl)]++;
		services_done(p.ep);
	}
	print_message("%s shares: %d %d %d\n", lb, count[0], count[2], count[4]);
	assert_int_equal(count[1] + count[3] + count[5], 0);
	assert_in_range(count[0], want[0] * 85 / 100, want[0] * 115 / 100);
	assert_in_range(count[2], want[1] * 85 / 100, want[1] * 115 / 100);
	assert_in_range(count[4], want[2] * 85 / 100, want[2] * 115 / 100);
	services_set_put(ss);
}

static void test_balanced(void **state)
{
	static const int even[3] = { 1000, 1000, 1000 }, weighted[3] = { 750, 750, 1500 };

	(void)state;
	shares("least_request", NULL, NULL, NULL, even);
	shares("random", NULL, NULL, NULL, even);
	shares("random", "1", "1", "2", weighted);
	shares("random", "1", "bogus", "2", weighted); /* a bad weight counts as 1 */
}

/* Least request: the idle endpoint is always the next one. */
static void test_least_request(void **state)
{
	struct service_set *ss = load(SVC);
	const struct service *s = services_at(ss, 0);
	struct svc_pick p[3], q;
	unsigned active;
	bool ej;

	(void)state;
	mk_wls(NULL, NULL, NULL);
	for (int i = 0; i < 3; i++)
		assert_int_equal(services_pick(s, wlp, 6, NULL, 1, &p[i]), 0);
	/* one each */
	assert_true(p[0].ep != p[1].ep && p[1].ep != p[2].ep && p[0].ep != p[2].ep);
	for (int round = 0; round < 20; round++) {
		int k = round % 3;
		services_done(p[k].ep);
		assert_int_equal(services_pick(s, wlp, 6, NULL, 1, &q), 0);
		assert_ptr_equal(q.ep, p[k].ep);
		p[k] = q;
	}
	assert_int_equal(services_endpoint_info(s, &wls[0], 1, &active, &ej), 0);
	assert_int_equal(active, 1);
	assert_false(ej);
	assert_int_equal(services_endpoint_info(s, &wls[1], 1, &active, &ej), -ENOENT);
	for (int i = 0; i < 3; i++)
		services_done(p[i].ep);
	services_set_put(ss);
}

/* Failures eject an endpoint until the ejection time is over. */
static void test_ejection(void **state)
{
	struct service_set *ss =
	    load(SVC "outlier_consecutive_failures = 3\noutlier_ejection_ms = 1000\n");
	const struct service *s = services_at(ss, 0);
	struct svc_stats st;
	struct svc_pick p;
	int count[6] = { 0 };

	(void)state;
	mk_wls(NULL, NULL, NULL);
	/* find uid-b's endpoint */
	do {
		assert_int_equal(services_pick(s, wlp, 6, NULL, 0, &p), 0);
		services_done(p.ep);
	} while (p.wl != &wls[2]);
	/* two failures, a success resets, two more: not yet */
	services_report(p.ep, false, 0);
	services_report(p.ep, false, 0);
	services_report(p.ep, true, 0);
	services_report(p.ep, false, 0);
	services_report(p.ep, false, 0);
	services_stats(s, 0, &st);
	assert_int_equal(st.ejected_now, 0);
	services_report(p.ep, false, 0);
	services_stats(s, 10, &st);
	assert_int_equal(st.ejections, 1);
	assert_int_equal(st.ejected_now, 1);
	for (int i = 0; i < 300; i++) {
		assert_int_equal(services_pick(s, wlp, 6, NULL, 999, &p), 0);
		assert_false(p.panic);
		count[idx_of(p.wl)]++;
		services_done(p.ep);
	}
	assert_int_equal(count[2], 0);
	assert_true(count[0] > 100 && count[4] > 100);
	/* re-admitted */
	memset(count, 0, sizeof(count));
	for (int i = 0; i < 300; i++) {
		assert_int_equal(services_pick(s, wlp, 6, NULL, 1000, &p), 0);
		count[idx_of(p.wl)]++;
		services_done(p.ep);
	}
	assert_true(count[2] > 60);
	services_stats(s, 1000, &st);
	assert_int_equal(st.ejected_now, 0);
	services_set_put(ss);
}

/* Everything ejected or unhealthy: still an answer (panic), counted. */
static void test_panic_and_health(void **state)
{
	struct service_set *ss = load(SVC "outlier_consecutive_failures = 1\n");
	const struct service *s = services_at(ss, 0);
	struct svc_stats st;
	struct svc_pick p;

	(void)state;
	mk_wls(NULL, NULL, NULL);
	services_set_health(s, &wls[0], false);
	services_set_health(s, &wls[4], false);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(services_pick(s, wlp, 6, NULL, 5, &p), 0);
		assert_ptr_equal(p.wl, &wls[2]);
		services_done(p.ep);
	}
	services_report(p.ep, false, 5);
	assert_int_equal(services_pick(s, wlp, 6, NULL, 6, &p), 0);
	assert_true(p.panic);
	services_done(p.ep);
	services_set_health(s, &wls[4], true);
	assert_int_equal(services_pick(s, wlp, 6, NULL, 6, &p), 0);
	assert_false(p.panic);
	assert_ptr_equal(p.wl, &wls[4]);
	services_done(p.ep);
	services_stats(s, 6, &st);
	assert_int_equal(st.panics, 1);
	assert_int_equal(st.unhealthy_now, 1);
	services_set_put(ss);
}

/* Retries go to endpoints not tried yet, then there is none left. */
static void test_retry_excludes_tried(void **state)
{
	struct service_set *ss = load(SVC);
	const struct service *s = services_at(ss, 0);
	struct svc_tried tried = { 0 };
	struct svc_pick p[3], q;
	struct svc_stats st;

	(void)state;
	mk_wls(NULL, NULL, NULL);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(services_pick(s, wlp, 6, &tried, 1, &p[i]), 0);
		services_report(p[i].ep, false, 1);
		services_done(p[i].ep);
	}
	assert_int_equal(tried.n, 3);
	assert_true(p[0].wl != p[1].wl && p[1].wl != p[2].wl && p[0].wl != p[2].wl);
	assert_int_equal(services_pick(s, wlp, 6, &tried, 1, &q), -EHOSTUNREACH);
	assert_int_equal(services_pick(s, wlp + 1, 1, NULL, 1, &q),
	                 -EHOSTUNREACH); /* other ns only */
	services_stats(s, 1, &st);
	assert_int_equal(st.no_endpoint, 2);
	services_set_put(ss);
}

static void test_circuit_breaker(void **state)
{
	struct service_set *ss = load(SVC "max_connections = 5\nmax_pending = 3\n");
	const struct service *s = services_at(ss, 0);
	struct svc_ticket t[8];
	struct svc_stats st;

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(services_acquire(s, &t[i]), 0);
	assert_int_equal(services_acquire(s, &t[3]), -EBUSY);
	assert_int_equal(t[3].refused, SVC_REFUSED_MAX_PENDING);
	assert_string_equal(services_refusal_str(t[3].refused), "max_pending");
	for (int i = 0; i < 3; i++)
		services_connected(&t[i]);
	assert_int_equal(services_acquire(s, &t[3]), 0);
	assert_int_equal(services_acquire(s, &t[4]), 0);
	assert_int_equal(services_acquire(s, &t[5]), -EBUSY);
	assert_int_equal(t[5].refused, SVC_REFUSED_MAX_CONNECTIONS);
	assert_int_equal(services_acquire(s, &t[6]), -EBUSY);
	services_stats(s, 0, &st);
	assert_int_equal(st.active_connections, 5);
	assert_int_equal(st.pending, 2);
	assert_int_equal(st.refused_pending, 1);
	assert_int_equal(st.refused_connections, 2);
	/* the set may go away while tickets are held */
	services_set_put(ss);
	for (int i = 0; i < 5; i++) {
		services_release(&t[i]);
		services_release(&t[i]); /* idempotent */
	}
	services_release(&t[5]); /* refused: holds nothing */
}

/* A reload keeps ejections and counts of services that stay. */
static void test_adopt_state(void **state)
{
	const char *v1 = SVC "outlier_consecutive_failures = 1\nmax_connections = 1\n"
	                     "max_pending = 1\n";
	const char *v2 = SVC "outlier_consecutive_failures = 1\nmax_connections = 2\n"
	                     "max_pending = 2\n";
	struct service_set *a = load(v1), *b = load(v2);
	const struct service *sa = services_at(a, 0), *sb = services_at(b, 0);
	struct svc_ticket t1, t2, t3;
	struct svc_stats st;
	struct svc_pick p;
	unsigned active;
	bool ej;

	(void)state;
	mk_wls(NULL, NULL, NULL);
	assert_int_equal(services_acquire(sa, &t1), 0);
	assert_int_equal(services_pick(sa, wlp + 1, 1, NULL, 0, &p), -EHOSTUNREACH);
	assert_int_equal(services_pick(sa, wlp, 3, NULL, 0, &p), 0);
	services_report(p.ep, false, 0);
	services_adopt_state(b, a);
	services_set_put(a);
	services_stats(sb, 1, &st);
	assert_int_equal(st.active_connections, 1);
	assert_int_equal(st.ejected_now, 1);
	assert_int_equal(services_endpoint_info(sb, p.wl, 1, &active, &ej), 0);
	assert_int_equal(active, 1);
	assert_true(ej);
	/* the new limit applies */
	assert_int_equal(services_acquire(sb, &t2), 0);
	assert_int_equal(services_acquire(sb, &t3), -EBUSY);
	services_done(p.ep);
	services_release(&t1);
	services_release(&t2);
	services_set_put(b);
}

struct thr {
	const struct service *s;
	int iters;
};

static void *picker(void *arg)
{
	struct thr *t = arg;

	for (int i = 0; i < t->iters; i++) {
		struct svc_ticket tk;
		struct svc_pick p;
		if (services_acquire(t->s, &tk))
			continue;
		if (services_pick(t->s, wlp, 6, NULL, (uint64_t)i, &p) == 0) {
			services_report(p.ep, i % 7 != 0, (uint64_t)i);
			services_connected(&tk);
			services_done(p.ep);
		}
		services_release(&tk);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct service_set *ss = load(SVC "max_connections = 1000000\nmax_pending = 1000000\n");
	struct thr t = { services_at(ss, 0), 50000 };
	pthread_t th[4];
	struct svc_stats st;
	unsigned active;
	bool ej;

	(void)state;
	mk_wls(NULL, NULL, NULL);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, picker, &t), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	services_stats(t.s, 0, &st);
	assert_int_equal(st.active_connections, 0);
	assert_int_equal(st.pending, 0);
	for (int i = 0; i < 6; i += 2) {
		assert_int_equal(services_endpoint_info(t.s, &wls[i], 0, &active, &ej), 0);
		assert_int_equal(active, 0);
	}
	services_set_put(ss);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_examples),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_balanced),
		cmocka_unit_test(test_least_request),
		cmocka_unit_test(test_ejection),
		cmocka_unit_test(test_panic_and_health),
		cmocka_unit_test(test_retry_excludes_tried),
		cmocka_unit_test(test_circuit_breaker),
		cmocka_unit_test(test_adopt_state),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
