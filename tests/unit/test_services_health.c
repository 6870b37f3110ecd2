/* Active health checks (node-proxy/healthcheck.c) against real sockets on
 * loopback: an app answering 200, one answering 503, one refusing, one
 * silent (timeout); recovery; probes dropped with their endpoints; the
 * status-line parser on its own. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-proxy/healthcheck.h"

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One tiny HTTP app per loopback address; its answer is settable. */
struct app {
	int lfd;
	atomic_int status; /* 0: never accept (silent) */
};

static struct app apps[4]; /* 127.0.0.2 .. 127.0.0.4; .1 has none (refused) */
static atomic_bool stop_apps;
static uint16_t port;

static void *serve(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_apps)) {
		struct pollfd pf[4];
		for (int i = 0; i < 4; i++) {
			pf[i].fd = atomic_load(&apps[i].status) ? apps[i].lfd : -1;
			pf[i].events = POLLIN;
		}
		if (poll(pf, 4, 20) <= 0)
			continue;
		for (int i = 0; i < 4; i++) {
			char buf[512], resp[128];
			int c, n;
			if (!(pf[i].revents & POLLIN))
				continue;
			c = accept(apps[i].lfd, NULL, NULL);
			if (c < 0)
				continue;
			n = (int)recv(c, buf, sizeof(buf) - 1, 0);
			if (n > 0 && strncmp(buf, "GET /health HTTP/1.1\r\n", 22) == 0) {
				n = snprintf(resp, sizeof(resp),
				             "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n",
				             atomic_load(&apps[i].status));
				send(c, resp, (size_t)n, MSG_NOSIGNAL);
			}
			close(c);
		}
	}
	return NULL;
}

static int listen_on(const char *ip, uint16_t *p)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(*p) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	inet_pton(AF_INET, ip, &a.sin_addr);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0) {
		close(fd);
		return -1;
	}
	getsockname(fd, (struct sockaddr *)&a, &l);
	*p = ntohs(a.sin_port);
	return fd;
}

static struct workload wls[5];
static const struct workload *wlp[5];

static void mk(int i, const char *ip)
{
	memset(&wls[i], 0, sizeof(wls[i]));
	snprintf(wls[i].uid, sizeof(wls[i].uid), "uid-%d", i);
	snprintf(wls[i].ns, sizeof(wls[i].ns), "shop");
	wls[i].n_labels = 1;
	snprintf(wls[i].labels[0].key, sizeof(wls[i].labels[0].key), "app");
	snprintf(wls[i].labels[0].val, sizeof(wls[i].labels[0].val), "b");
	inet_pton(AF_INET, ip, &wls[i].ips[0].v4);
	wls[i].ips[0].family = AF_INET;
	wls[i].n_ips = 1;
	wlp[i] = &wls[i];
}

static struct service_set *load(const char *kind)
{
	char text[400];
	struct service_set *ss = NULL;
	struct conf_errors e;

	snprintf(text, sizeof(text),
	         "[service b]\nnamespace = shop\nvips = 10.96.0.1\nports = 80\nselector = app=b\n"
	         "health_check = %s:%u\nhealth_interval_ms = 100\nconnect_timeout_ms = 300\n",
	         kind, port);
	conf_errors_init(&e);
	if (services_load_buf("hc.ini", text, strlen(text), &ss, &e))
		fail_msg("%s", e.msg[0]);
	return ss;
}

/* Run the checker for @ms, as a main loop would. */
static void run_for(struct healthcheck *hc, struct service_set *ss, size_t n, unsigned ms)
{
	uint64_t end = mono_ms() + ms;

	while (mono_ms() < end) {
		int t = healthcheck_run(hc, ss, wlp, n, mono_ms());
		struct pollfd p = { .fd = healthcheck_fd(hc), .events = POLLIN };
		poll(&p, 1, t < 20 ? t : 20);
	}
}

static bool unhealthy(const struct service *s, int i)
{
	/* an unhealthy endpoint is never picked while healthy ones remain */
	for (int k = 0; k < 50; k++) {
		struct svc_pick p;
		if (services_pick(s, wlp, 5, NULL, 1, &p))
			return true;
		services_done(p.ep);
		if (p.wl == &wls[i])
			return false;
	}
	return true;
}

static int setup(void **state)
{
	static pthread_t th;
	static const char *ips[4] = { "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5" };

	(void)state;
	for (int attempt = 0; attempt < 10; attempt++) {
		int ok = 1;
		port = 0;
		apps[0].lfd = listen_on(ips[0], &port);
		for (int i = 1; i < 4; i++) {
			apps[i].lfd = listen_on(ips[i], &port);
			ok &= apps[i].lfd >= 0;
		}
		if (ok && apps[0].lfd >= 0)
			break;
		for (int i = 0; i < 4; i++)
			if (apps[i].lfd >= 0)
				close(apps[i].lfd);
	}
	atomic_store(&apps[0].status, 200);
	atomic_store(&apps[1].status, 503);
	atomic_store(&apps[2].status, 0);   /* silent */
	atomic_store(&apps[3].status, 302); /* redirects count as healthy */
	mk(0, "127.0.0.1");                 /* nothing listens: refused */
	for (int i = 0; i < 4; i++)
		mk(i + 1, ips[i]);
	return pthread_create(&th, NULL, serve, NULL);
}

static void test_http(void **state)
{
	struct service_set *ss = load("http:/health");
	const struct service *s = services_at(ss, 0);
	struct healthcheck *hc = NULL;
	struct svc_stats st;
	struct hc_stats hs;

	(void)state;
	assert_int_equal(healthcheck_open(NULL, NULL, &hc), 0);
	run_for(hc, ss, 5, 900);
	services_stats(s, 0, &st);
	assert_int_equal(st.unhealthy_now, 3);
	assert_true(unhealthy(s, 0));  /* refused */
	assert_false(unhealthy(s, 1)); /* 200 */
	assert_true(unhealthy(s, 2));  /* 503 */
	assert_true(unhealthy(s, 3));  /* silent: timed out */
	assert_false(unhealthy(s, 4)); /* 302 */
	healthcheck_stats(hc, &hs);
	print_message("%llu checks ok, %llu failed\n", (unsigned long long)hs.ok,
	              (unsigned long long)hs.failed);
	assert_int_equal(hs.probes, 5);
	assert_true(hs.ok >= 4 && hs.failed >= 6);

	/* the 503 app recovers */
	atomic_store(&apps[1].status, 204);
	run_for(hc, ss, 5, 400);
	assert_false(unhealthy(s, 2));
	services_stats(s, 0, &st);
	assert_int_equal(st.unhealthy_now, 2);

	/* endpoints that left are no longer probed */
	run_for(hc, ss, 2, 150);
	healthcheck_stats(hc, &hs);
	assert_int_equal(hs.probes, 2);
	healthcheck_close(hc);
	services_set_put(ss);
}

static void test_tcp(void **state)
{
	struct service_set *ss = load("tcp");
	const struct service *s = services_at(ss, 0);
	struct healthcheck *hc = NULL;
	struct svc_stats st;

	(void)state;
	assert_int_equal(healthcheck_open(NULL, NULL, &hc), 0);
	run_for(hc, ss, 5, 600);
	services_stats(s, 0, &st);
	assert_int_equal(st.unhealthy_now, 1); /* only the refused one */
	assert_true(unhealthy(s, 0));
	assert_false(unhealthy(s, 2));
	healthcheck_close(hc);
	services_set_put(ss);
}

static int failing_socket(void *arg, const struct workload *w, int family)
{
	(void)w;
	(void)family;
	(*(int *)arg)++;
	return -EMFILE;
}

/* The caller's socket function is used; its failure is a failed check. */
static void test_socket_fn(void **state)
{
	struct service_set *ss = load("tcp");
	struct healthcheck *hc = NULL;
	struct svc_stats st;
	int calls = 0;

	(void)state;
	assert_int_equal(healthcheck_open(failing_socket, &calls, &hc), 0);
	run_for(hc, ss, 5, 350);
	assert_true(calls >= 10);
	services_stats(services_at(ss, 0), 0, &st);
	assert_int_equal(st.unhealthy_now, 5);
	healthcheck_close(hc);
	services_set_put(ss);
}

static void test_status_line(void **state)
{
	(void)state;
	assert_int_equal(healthcheck_http_status("HTTP/1.1 200 OK\r\n", 17), 200);
	assert_int_equal(healthcheck_http_status("HTTP/1.0 503 X", 14), 503);
	assert_int_equal(healthcheck_http_status("HTTP/1.1 20", 11), 0);
	assert_int_equal(healthcheck_http_status("HTT", 3), 0);
	assert_int_equal(healthcheck_http_status("SSH-2.0-OpenSSH", 15), -EPROTO);
	assert_int_equal(healthcheck_http_status("HTTP/1.1 2x0 OK", 15), -EPROTO);
	assert_int_equal(healthcheck_http_status("HTTP/1.1 099 OK", 15), -EPROTO);
	assert_int_equal(healthcheck_http_status("HTTP/2.0 200 OK", 15), -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_line),
		cmocka_unit_test(test_http),
		cmocka_unit_test(test_tcp),
		cmocka_unit_test(test_socket_fn),
	};
	int rc;

	if (setup(NULL))
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	atomic_store(&stop_apps, true);
	return rc;
}
