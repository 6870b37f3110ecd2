/* admin: see admin.h. */
#include "node-proxy/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "node-proxy/authz.h"
#include "node-proxy/config.h"
#include "node-proxy/inpod.h"
#include "node-proxy/log.h"
#include "node-proxy/mesh.h"
#include "node-proxy/pod.h"
#include "node-proxy/telemetry.h"
#include "node-proxy/worker.h"

#define REQ_MAX         4096
#define REQ_TIMEOUT_MS  2000
#define DUMP_PER_WORKER 4096

struct admin {
	struct admin_src src;
	int admin_fd, ready_fd, wake_fd;
	int metrics_fd; /* 0.0.0.0:<metrics_port>, GET /metrics; -1 when off */
	pthread_t thread;
};

/* Same order as struct worker_stats. */
static const char *const stat_names[] = {
	"accepted",       "active",          "closed",           "bytes_down_up",   "bytes_up_down",
	"pool_exhausted", "connect_errors",  "connect_timeouts", "resets",          "idle_timeouts",
	"drain_resets",   "orig_dst_errors", "socket_errors",    "hbone_refused",   "nobufs",
	"accept_errors",  "listeners",       "bufs_held",        "local_shortcuts",
};
_Static_assert(sizeof(stat_names) / sizeof(stat_names[0]) ==
                   sizeof(struct worker_stats) / sizeof(uint64_t),
               "stat_names out of sync with struct worker_stats");

static int listen_on(const char *addr, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd, rc;

	inet_pton(AF_INET, addr, &sin.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || listen(fd, 64)) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

static json_t *stats_json(const struct worker_stats *s)
{
	json_t *o = json_object();
	const uint64_t *v = (const uint64_t *)s;

	for (size_t i = 0; i < sizeof(stat_names) / sizeof(stat_names[0]); i++)
		json_object_set_new(o, stat_names[i], json_integer((json_int_t)v[i]));
	return o;
}

/*
 * /config_dump: what this node-proxy is enforcing right now, in one JSON
 * object for operators and support bundles: the enrolled workloads, the
 * SVIDs it holds (SPIFFE ID, serial, validity - public data only; private
 * keys live in locked memory and are never serialised), and the policy and
 * service state with its last reload result.
 */
static json_t *get_config_dump(struct admin *a)
{
	json_t *mesh = mesh_stats_json();
	json_t *j = json_object();

	json_object_set_new(j, "workloads", inpod_workloads_json(a->src.inpod));
	if (mesh) {
		json_t *ids = json_object_get(mesh, "identities");
		json_t *en = json_object_get(mesh, "enabled");

		json_object_set_new(j, "certificates", ids ? json_incref(ids) : json_array());
		json_object_set_new(j, "mesh_enabled", en ? json_incref(en) : json_false());
		json_decref(mesh);
	}
	json_object_set_new(j, "authorization", authz_stats_json());
	return j;
}

static json_t *get_stats(struct admin *a)
{
	struct worker_stats tot, s;
	json_t *per = json_array();

	memset(&tot, 0, sizeof(tot));
	for (unsigned i = 0; i < a->src.n_workers; i++) {
		worker_get_stats(a->src.workers[i], &s);
		for (size_t k = 0; k < sizeof(s) / sizeof(uint64_t); k++)
			((uint64_t *)&tot)[k] += ((uint64_t *)&s)[k];
		json_t *o = stats_json(&s);
		json_object_set_new(o, "worker", json_integer(i));
		json_array_append_new(per, o);
	}
	return json_pack("{s:o, s:o, s:I, s:o, s:o}", "total", stats_json(&tot), "workers", per,
	                 "pods", (json_int_t)inpod_count(a->src.inpod), "mesh", mesh_stats_json(),
	                 "authz", authz_stats_json());
}

static void addr_str(const struct sockaddr_in6 *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "";
	unsigned port = 0;

	if (sa->sin6_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		port = ntohs(sin->sin_port);
		snprintf(out, len, "%s:%u", ip, port);
	} else if (sa->sin6_family == AF_INET6) {
		inet_ntop(AF_INET6, &sa->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, ntohs(sa->sin6_port));
	} else {
		snprintf(out, len, "-");
	}
}

static json_t *get_connections(struct admin *a)
{
	static const char *const kinds[] = { "outbound", "inbound", "hbone" };
	static const char *const states[] = { "free", "connecting", "open", "closing" };
	struct conn_info *ci = calloc(DUMP_PER_WORKER, sizeof(*ci));
	json_t *arr = json_array();
	int total = 0;

	for (unsigned i = 0; ci && i < a->src.n_workers; i++) {
		int n = worker_dump(a->src.workers[i], ci, DUMP_PER_WORKER, 1000);
		for (int k = 0; k < n; k++) {
			char src[64], dst[64];
			addr_str(&ci[k].src, src, sizeof(src));
			addr_str(&ci[k].dst, dst, sizeof(dst));
			json_array_append_new(
			    arr, json_pack(
			             "{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:i}",
			             "pod", ci[k].uid, "upstream_pod", ci[k].upstream_uid, "kind",
			             kinds[ci[k].kind % 3], "state", states[ci[k].state % 4], "src",
			             src, "dst", dst, "age_ms", (json_int_t)ci[k].age_ms, "idle_ms",
			             (json_int_t)ci[k].idle_ms, "bytes_down_up",
			             (json_int_t)ci[k].bytes_down_up, "bytes_up_down",
			             (json_int_t)ci[k].bytes_up_down, "worker", (int)ci[k].worker));
			total++;
		}
	}
	free(ci);
	return json_pack("{s:i, s:o}", "count", total, "connections", arr);
}

static void respond(int fd, int code, const char *ctype, const char *body)
{
	const char *reason = code == 200   ? "OK"
	                     : code == 404 ? "Not Found"
	                     : code == 405 ? "Method Not Allowed"
	                     : code == 503 ? "Service Unavailable"
	                                   : "Bad Request";
	char hdr[256];
	size_t blen = strlen(body);
	int n = snprintf(hdr, sizeof(hdr),
	                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	                 "Connection: close\r\n\r\n",
	                 code, reason, ctype, blen);
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	const char *parts[2] = { hdr, body };
	size_t lens[2] = { (size_t)n, blen };

	for (int i = 0; i < 2; i++) {
		size_t off = 0;
		while (off < lens[i]) {
			ssize_t w = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
			if (w > 0) {
				off += (size_t)w;
				continue;
			}
			if (w < 0 && errno == EAGAIN && poll(&p, 1, REQ_TIMEOUT_MS) == 1)
				continue;
			return;
		}
	}
}

static void respond_json(int fd, json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(1));

	respond(fd, 200, "application/json", s ? s : "null");
	free(s);
	json_decref(j);
}

static void serve(struct admin *a, int fd, int admin_port)
{
	char req[REQ_MAX + 1];
	size_t len = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char method[8], path[256];

	/* read until the end of the headers, bounded in size and time */
	while (len < REQ_MAX) {
		if (poll(&p, 1, REQ_TIMEOUT_MS) != 1)
			return;
		ssize_t r = recv(fd, req + len, REQ_MAX - len, 0);
		if (r <= 0)
			return;
		len += (size_t)r;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	req[len] = '\0';
	if (sscanf(req, "%7s %255s", method, path) != 2) {
		respond(fd, 400, "text/plain", "bad request\n");
		return;
	}
	char *q = strchr(path, '?');
	if (q)
		*q = '\0';
	if (admin_port && strcmp(path, "/quitquitquit") == 0 &&
	    (strcmp(method, "POST") == 0 || strcmp(method, "GET") == 0)) {
		/* Same path as SIGTERM: main's sigwait starts the graceful drain
		 * (listeners closed, connections drained within drain_timeout). */
		respond(fd, 200, "text/plain", "draining\n");
		log_info("event=quitquitquit");
		kill(getpid(), SIGTERM);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		respond(fd, 405, "text/plain", "only GET (and POST /quitquitquit)\n");
		return;
	}
	if (strcmp(path, "/healthz/ready") == 0) {
		if (a->src.ready(a->src.arg))
			respond(fd, 200, "text/plain", "ready\n");
		else
			respond(fd, 503, "text/plain", "not ready\n");
	} else if (!admin_port) {
		respond(fd, 404, "text/plain", "not found\n");
	} else if (strcmp(path, "/workloads") == 0) {
		respond_json(fd, inpod_workloads_json(a->src.inpod));
	} else if (strcmp(path, "/connections") == 0) {
		respond_json(fd, get_connections(a));
	} else if (strcmp(path, "/stats") == 0) {
		respond_json(fd, get_stats(a));
	} else if (strcmp(path, "/config_dump") == 0) {
		respond_json(fd, get_config_dump(a));
	} else if (strcmp(path, "/logging") == 0) {
		char msg[256];
		int code = telemetry_logging(q ? q + 1 : "", msg, sizeof(msg));
		respond(fd, code, "text/plain", msg);
	} else {
		respond(fd, 404, "text/plain", "not found\n");
	}
}

static void *admin_main(void *arg)
{
	struct admin *a = arg;

	for (;;) {
		struct pollfd p[4] = {
			{ .fd = a->wake_fd, .events = POLLIN },
			{ .fd = a->admin_fd, .events = POLLIN },
			{ .fd = a->ready_fd, .events = POLLIN },
			{ .fd = a->metrics_fd, .events = POLLIN },
		};
		if (poll(p, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents)
			break;
		for (int i = 1; i < 4; i++) {
			if (!(p[i].revents & POLLIN))
				continue;
			int fd = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd < 0)
				continue;
			if (i == 3)
				telemetry_serve_metrics(fd);
			else
				serve(a, fd, i == 1);
			close(fd);
		}
	}
	return NULL;
}

int admin_start(const struct np_config *cfg, const struct admin_src *src, struct admin **out)
{
	struct admin *a = calloc(1, sizeof(*a));
	int rc;

	if (!a)
		return -ENOMEM;
	a->src = *src;
	a->admin_fd = a->ready_fd = a->wake_fd = a->metrics_fd = -1;
	a->admin_fd = listen_on("127.0.0.1", cfg->port_admin);
	if (a->admin_fd < 0) {
		rc = a->admin_fd;
		log_err("event=admin_listen_failed port=%u err=%s", cfg->port_admin, strerror(-rc));
		goto fail;
	}
	a->ready_fd = listen_on("0.0.0.0", cfg->port_ready);
	if (a->ready_fd < 0) {
		rc = a->ready_fd;
		log_err("event=admin_listen_failed port=%u err=%s", cfg->port_ready, strerror(-rc));
		goto fail;
	}
	if (cfg->metrics_port) {
		a->metrics_fd = listen_on("0.0.0.0", (uint16_t)cfg->metrics_port);
		if (a->metrics_fd < 0) {
			rc = a->metrics_fd;
			log_err("event=admin_listen_failed port=%u err=%s", cfg->metrics_port,
			        strerror(-rc));
			goto fail;
		}
	}
	a->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (a->wake_fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = -pthread_create(&a->thread, NULL, admin_main, a);
	if (rc)
		goto fail;
	*out = a;
	return 0;
fail:
	if (a->admin_fd >= 0)
		close(a->admin_fd);
	if (a->ready_fd >= 0)
		close(a->ready_fd);
	if (a->wake_fd >= 0)
		close(a->wake_fd);
	if (a->metrics_fd >= 0)
		close(a->metrics_fd);
	free(a);
	return rc;
}

void admin_stop(struct admin *a)
{
	uint64_t one = 1;

	if (!a)
		return;
	if (write(a->wake_fd, &one, sizeof(one)) < 0) {
		/* the thread then stays until exit; nothing else to do */
	}
	pthread_join(a->thread, NULL);
	close(a->admin_fd);
	close(a->ready_fd);
	close(a->wake_fd);
	if (a->metrics_fd >= 0)
		close(a->metrics_fd);
	free(a);
}
