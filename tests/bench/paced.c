/*
 * bench-paced: an open-loop HTTP/1.1 client at a fixed request rate, for
 * latency percentiles at 1,000 and 10,000 req/s with microsecond resolution
 * (hey prints latencies in 0.1 ms steps).
 *
 *   bench-paced HOST PORT RATE SECONDS CONNS
 *
 * Request i is due at t0 + i / RATE on keep-alive connection i % CONNS.  An
 * idle connection sends it at once; a busy one queues it until the previous
 * answer is in.  Latency runs from the due time, not from the send, so a
 * slow answer also counts against the requests it held up (no coordinated
 * omission, the correction wrk2 makes).  Timing with an absolute timerfd.
 * Prints: n= errors= seconds= rate= p50= p90= p99= p999= max= (us).  Part
 * of the benchmark (tests/bench), not the product.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define QCAP 4096

struct conn {
	int fd;
	int busy;
	double inflight_due;
	double q[QCAP]; /* due times of queued requests */
	unsigned qh, qn;
	size_t got, need;
	char buf[16384];
};

static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
static double *lat;
static long nlat, errs;

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double p)
{
	long i;

	if (!nlat)
		return 0;
	i = (long)(p / 100.0 * (double)nlat + 0.999999) - 1;
	if (i < 0)
		i = 0;
	if (i >= nlat)
		i = nlat - 1;
	return lat[i];
}

static int send_req(struct conn *c, double due)
{
	if (write(c->fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
		return -1;
	c->busy = 1;
	c->inflight_due = due;
	c->got = c->need = 0;
	return 0;
}

/* 1 when a whole answer is in, 0 when more is needed, -1 on a bad one */
static int answer_done(struct conn *c)
{
	char *h, *cl;

	if (!c->need) {
		c->buf[c->got] = 0;
		h = strstr(c->buf, "\r\n\r\n");
		if (!h)
			return c->got >= sizeof(c->buf) - 1 ? -1 : 0;
		cl = strcasestr(c->buf, "Content-Length:");
		if (!cl || cl > h)
			return -1;
		c->need = (size_t)(h + 4 - c->buf) + strtoul(cl + 15, NULL, 10);
		if (c->need >= sizeof(c->buf))
			return -1;
	}
	return c->got >= c->need;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct epoll_event ev, evs[64];
	struct itimerspec its = { 0 };
	struct conn *cs;
	double rate, secs, t0, end, last = 0;
	long total, next = 0;
	int conc, ep, tfd, one = 1;

	if (argc != 6)
		return 2;
	sa.sin_port = htons((unsigned short)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
		return 2;
	rate = atof(argv[3]);
	secs = atof(argv[4]);
	conc = atoi(argv[5]);
	if (rate <= 0 || secs <= 0 || conc < 1 || conc > 1024)
		return 2;
	total = (long)(rate * secs);
	lat = calloc((size_t)total + 1, sizeof(*lat));
	cs = calloc((size_t)conc, sizeof(*cs));
	ep = epoll_create1(0);
	tfd = timerfd_create(CLOCK_MONOTONIC, 0);
	if (!lat || !cs || ep < 0 || tfd < 0) {
		perror("setup");
		return 1;
	}
	for (int i = 0; i < conc; i++) {
		cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (cs[i].fd < 0 || connect(cs[i].fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			perror("connect");
			return 1;
		}
		setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ev.events = EPOLLIN;
		ev.data.ptr = &cs[i];
		epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
	}
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	t0 = now() + 0.01;
	end = t0 + secs + 10; /* answers still owed after that are errors */
	for (;;) {
		double t = now();

		/* issue every request that is due */
		while (next < total && t0 + (double)next / rate <= t) {
			struct conn *c = &cs[next % conc];
			double due = t0 + (double)next / rate;

			next++;
			if (!c->busy) {
				if (send_req(c, due) < 0)
					errs++;
			} else if (c->qn < QCAP) {
				c->q[(c->qh + c->qn++) % QCAP] = due;
			} else {
				errs++;
			}
		}
		if (next < total) {
			double d = t0 + (double)next / rate;

			its.it_value.tv_sec = (time_t)d;
			its.it_value.tv_nsec = (long)((d - (double)(time_t)d) * 1e9);
			timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
		}
		if (next >= total && nlat + errs >= total)
			break;
		if (t > end)
			break;
		int n = epoll_wait(ep, evs, 64, 100);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			ssize_t r;
			int done;

			if (!c) {
				uint64_t x;

				if (read(tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
					perror("timerfd");
				continue;
			}
			r = read(c->fd, c->buf + c->got, sizeof(c->buf) - 1 - c->got);
			if (r <= 0) {
				fprintf(stderr, "connection closed\n");
				return 1;
			}
			c->got += (size_t)r;
			done = answer_done(c);
			if (done < 0) {
				fprintf(stderr, "bad answer\n");
				return 1;
			}
			if (!done)
				continue;
			last = now();
			lat[nlat++] = (last - c->inflight_due) * 1e6;
			c->busy = 0;
			if (c->qn) {
				double due = c->q[c->qh];

				c->qh = (c->qh + 1) % QCAP;
				c->qn--;
				if (send_req(c, due) < 0)
					errs++;
			}
		}
	}
	errs += total - nlat - errs > 0 ? total - nlat - errs : 0;
	qsort(lat, (size_t)nlat, sizeof(*lat), cmp);
	printf("n=%ld errors=%ld seconds=%.3f rate=%.1f p50=%.1f p90=%.1f p99=%.1f p999=%.1f "
	       "max=%.1f\n",
	       nlat, errs, last - t0, last > t0 ? (double)nlat / (last - t0) : 0.0, pct(50),
	       pct(90), pct(99), pct(99.9), nlat ? lat[nlat - 1] : 0.0);
	return 0;
}
