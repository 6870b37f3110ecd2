/*
 * healthcheck: non-blocking TCP / HTTP probes driven by one epoll fd.
 *
 * A probe is one (service, endpoint) pair, found again on every run by the
 * service's "ns/name" and the workload's uid, so it survives reloads and
 * holds no pointer into a set.  Each probe has at most one check in flight:
 * connect, (HTTP: send the request, read the status line), done, or the
 * deadline (the service's connect_timeout_ms) passed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node-proxy/healthcheck.h"

enum { P_IDLE, P_CONNECTING, P_READING };

struct probe {
	bool used, seen, ready; /* seen: still wanted this run; ready: an event came */
	char svc_id[2 * WL_NAME_MAX];
	char uid[WL_UID_MAX];
	int fd;
	int phase;
	uint64_t due_ms, deadline_ms;
	unsigned fails;
	bool healthy;
	size_t got;
	char buf[256];
};

struct healthcheck {
	hc_socket_fn fn;
	void *arg;
	int epfd;
	struct probe p[HC_MAX_PROBES];
	struct hc_stats st;
};

static int plain_socket(void *arg, const struct workload *w, int family)
{
	int fd;

	(void)arg;
	(void)w;
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	return fd < 0 ? -errno : fd;
}

int healthcheck_open(hc_socket_fn fn, void *arg, struct healthcheck **out)
{
	struct healthcheck *hc = calloc(1, sizeof(*hc));

	if (!hc)
		return -ENOMEM;
	hc->fn = fn ? fn : plain_socket;
	hc->arg = arg;
	hc->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (hc->epfd < 0) {
		int rc = -errno;
		free(hc);
		return rc;
	}
	*out = hc;
	return 0;
}

static void stop(struct healthcheck *hc, struct probe *p)
{
	if (p->fd >= 0) {
		epoll_ctl(hc->epfd, EPOLL_CTL_DEL, p->fd, NULL);
		close(p->fd);
	}
	p->fd = -1;
	p->phase = P_IDLE;
	p->got = 0;
}

void healthcheck_close(struct healthcheck *hc)
{
	if (!hc)
		return;
	for (unsigned i = 0; i < HC_MAX_PROBES; i++)
		if (hc->p[i].used)
			stop(hc, &hc->p[i]);
	close(hc->epfd);
	free(hc);
}

int healthcheck_fd(const struct healthcheck *hc)
{
	return hc->epfd;
}

void healthcheck_stats(const struct healthcheck *hc, struct hc_stats *st)
{
	*st = hc->st;
	st->probes = 0;
	for (unsigned i = 0; i < HC_MAX_PROBES; i++)
		st->probes += hc->p[i].used;
}

int healthcheck_http_status(const char *buf, size_t len)
{
	int code = 0;

	/* "HTTP/1.x NNN" */
	if (len < 12)
		return memcmp(buf, "HTTP/1.", len < 7 ? len : 7) == 0 ? 0 : -EPROTO;
	if (memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ')
		return -EPROTO;
	for (int i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -EPROTO;
		code = code * 10 + (buf[i] - '0');
	}
	return code >= 100 && code <= 599 ? code : -EPROTO;
}

/* A check is over: count it, and tell the service when the state flips. */
static void finish(struct healthcheck *hc, struct probe *p, const struct service *svc,
                   const struct workload *w, bool ok, uint64_t now_ms)
{
	stop(hc, p);
	p->due_ms = now_ms + svc->hc.interval_ms;
	if (ok) {
		hc->st.ok++;
		p->fails = 0;
		if (!p->healthy) {
			p->healthy = true;
			services_set_health(svc, w, true);
		}
		return;
	}
	hc->st.failed++;
	if (++p->fails >= HC_UNHEALTHY_AFTER && p->healthy) {
		p->healthy = false;
		services_set_health(svc, w, false);
	}
}

static int start(struct healthcheck *hc, struct probe *p, const struct service *svc,
                 const struct workload *w, uint64_t now_ms)
{
	struct sockaddr_storage ss = { 0 };
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = p };
	const struct wl_ip *ip = &w->ips[0];
	socklen_t sl;
	int fd;

	if (ip->family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(svc->hc.port);
		a->sin_addr = ip->v4;
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(svc->hc.port);
		a->sin6_addr = ip->v6;
		sl = sizeof(*a);
	}
	fd = hc->fn(hc->arg, w, ip->family);
	if (fd < 0)
		return fd;
	p->fd = fd;
	p->deadline_ms = now_ms + svc->connect_timeout_ms;
	p->phase = P_CONNECTING;
	p->got = 0;
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
		int rc = -errno;
		stop(hc, p);
		return rc;
	}
	if (epoll_ctl(hc->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int rc = -errno;
		stop(hc, p);
		return rc;
	}
	return 0;
}

/* Drive @p after an event.  Returns 1 ok, 0 failed, -1 not done yet. */
static int advance(struct healthcheck *hc, struct probe *p, const struct service *svc,
                   const struct workload *w)
{
	char ipbuf[INET6_ADDRSTRLEN];
	char req[512];
	int err = 0, n;
	socklen_t el = sizeof(err);

	if (p->phase == P_CONNECTING) {
		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err)
			return 0;
		if (svc->hc.kind == SVC_HC_TCP)
			return 1;
		inet_ntop(w->ips[0].family, &w->ips[0].v6, ipbuf, sizeof(ipbuf));
		n = snprintf(
		    req, sizeof(req),
		    "GET %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: ambit-healthcheck\r\n"
		    "Connection: close\r\n\r\n",
		    svc->hc.path, w->ips[0].family == AF_INET6 ? "[" : "", ipbuf,
		    w->ips[0].family == AF_INET6 ? "]" : "", svc->hc.port);
		/* a fresh socket's buffer takes a short request whole */
		if (n <= 0 || (size_t)n >= sizeof(req) ||
		    send(p->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
			return 0;
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };
		if (epoll_ctl(hc->epfd, EPOLL_CTL_MOD, p->fd, &ev) < 0)
			return 0;
		p->phase = P_READING;
		return -1;
	}
	for (;;) {
		ssize_t r = recv(p->fd, p->buf + p->got, sizeof(p->buf) - p->got, 0);
		int code;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return -1;
		if (r <= 0)
			return 0;
		p->got += (size_t)r;
		code = healthcheck_http_status(p->buf, p->got);
		if (code < 0)
			return 0;
		if (code > 0)
			return code >= 200 && code < 400;
		if (p->got == sizeof(p->buf))
			return 0;
	}
}

static struct probe *find(struct healthcheck *hc, const char *svc_id, const char *uid, bool create)
{
	struct probe *free_slot = NULL;

	for (unsigned i = 0; i < HC_MAX_PROBES; i++) {
		struct probe *p = &hc->p[i];
		if (!p->used) {
			if (!free_slot)
				free_slot = p;
			continue;
		}
		if (strcmp(p->uid, uid) == 0 && strcmp(p->svc_id, svc_id) == 0)
			return p;
	}
	if (!create || !free_slot)
		return NULL;
	memset(free_slot, 0, sizeof(*free_slot));
	free_slot->used = true;
	free_slot->fd = -1;
	free_slot->healthy = true; /* endpoints start healthy, as without checks */
	snprintf(free_slot->svc_id, sizeof(free_slot->svc_id), "%s", svc_id);
	snprintf(free_slot->uid, sizeof(free_slot->uid), "%s", uid);
	return free_slot;
}

int healthcheck_run(struct healthcheck *hc, const struct service_set *ss,
                    const struct workload *const *wls, size_t n, uint64_t now_ms)
{
	struct epoll_event evs[64];
	uint64_t next = now_ms + 1000;
	int ne;

	for (unsigned i = 0; i < HC_MAX_PROBES; i++)
		hc->p[i].seen = hc->p[i].ready = false;
	/* level-triggered: whatever is not read now is reported again */
	ne = epoll_wait(hc->epfd, evs, 64, 0);
	for (int e = 0; e < ne; e++)
		((struct probe *)evs[e].data.ptr)->ready = true;

	for (unsigned s = 0; s < services_count(ss); s++) {
		const struct service *svc = services_at(ss, s);
		if (svc->hc.kind == SVC_HC_NONE)
			continue;
		for (size_t k = 0; k < n; k++) {
			const struct workload *w = wls[k];
			struct probe *p;
			int r;

			if (!w || !services_selects(svc, w))
				continue;
			p = find(hc, svc->id, w->uid, true);
			if (!p)
				continue; /* more pairs than HC_MAX_PROBES: unchecked */
			p->seen = true;
			if (p->phase != P_IDLE) {
				r = p->ready ? advance(hc, p, svc, w) : -1;
				if (r < 0 && now_ms >= p->deadline_ms)
					r = 0;
				if (r >= 0)
					finish(hc, p, svc, w, r == 1, now_ms);
			}
			if (p->phase == P_IDLE && now_ms >= p->due_ms) {
				if (start(hc, p, svc, w, now_ms) < 0)
					finish(hc, p, svc, w, false, now_ms);
			}
			if (p->phase != P_IDLE && p->deadline_ms < next)
				next = p->deadline_ms;
			if (p->phase == P_IDLE && p->due_ms < next)
				next = p->due_ms;
		}
	}
	/* endpoints and services that went away */
	for (unsigned i = 0; i < HC_MAX_PROBES; i++)
		if (hc->p[i].used && !hc->p[i].seen) {
			stop(hc, &hc->p[i]);
			hc->p[i].used = false;
		}
	return next > now_ms ? (int)(next - now_ms) : 0;
}
