/* telemetry: see telemetry.h. */
#include "node-proxy/telemetry.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node-proxy/accesslog.h"
#include "node-proxy/authz.h"
#include "node-proxy/config.h"
#include "node-proxy/conn.h"
#include "node-proxy/hbone.h"
#include "node-proxy/inpod.h"
#include "node-proxy/log.h"
#include "node-proxy/mesh.h"
#include "node-proxy/metrics.h"
#include "node-proxy/pod.h"
#include "node-proxy/tls.h"
#include "node-proxy/worker-t.h"

#define NO_SERIES      UINT32_MAX
#define REQ_MAX        4096
#define REQ_TIMEOUT_MS 2000
#define VERSION        "0.1.0"

/* One connection's telemetry, in a slot parallel to its conn slot.  Valid
 * while gen equals the conn's generation (a reused slot has a new one). */
/* A service VIP's balanced connection: the service it was addressed to. */
struct tsvc {
	const char *ns, *name; /* NULL: not addressed to a service */
};

struct tconn {
	uint16_t gen;
	uint8_t mtls;
	uint32_t series[2]; /* [0] reporter=source, [1] reporter=destination */
	uint32_t rflags;
	int err;                 /* errno of the failure, 0 */
	struct pod *peer;        /* remote workload found on this node: a reference */
	struct sockaddr_in6 src; /* client address (peer of the accepted socket) */
	struct tsvc sv;          /* a VIP's: names held by the conn's service claim */
};

struct tworker {
	struct metrics_shard *ms;
	struct tconn *tc; /* [cap], anonymous mapping touched only where used */
	uint32_t cap;
};

static struct {
	int on;
	unsigned n;
	struct tworker *w;
	char td[256];
	/* what the collectors read, guarded by mu (attach/detach race a scrape) */
	pthread_mutex_t mu;
	struct worker **workers;
	unsigned n_workers;
	struct inpod *ip;
} T = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* ---- labels -------------------------------------------------------------- */

static const char *label_of(const struct workload *w, const char *key)
{
	for (unsigned i = 0; i < w->n_labels && i < WL_MAX_LABELS; i++)
		if (strcmp(w->labels[i].key, key) == 0 && w->labels[i].val[0])
			return w->labels[i].val;
	return NULL;
}

/* What a workload contributes to the Istio labels. */
struct wl_lbl {
	const char *name, *ns, *app, *ver, *csvc, *crev, *principal;
	char id[AL_ID_MAX];
};

static void wl_fill(const struct workload *w, struct wl_lbl *o)
{
	const char *v;

	memset(o, 0, sizeof(*o));
	if (!w)
		return;
	o->name = w->name;
	o->ns = w->ns;
	o->app = (v = label_of(w, "app")) ? v : label_of(w, "app.kubernetes.io/name");
	o->ver = (v = label_of(w, "version")) ? v : label_of(w, "app.kubernetes.io/version");
	o->csvc = (v = label_of(w, "service.istio.io/canonical-name")) ? v
	          : o->app                                             ? o->app
	                                                               : w->name;
	o->crev = (v = label_of(w, "service.istio.io/canonical-revision")) ? v
	          : o->ver                                                 ? o->ver
	                                                                   : "latest";
	if (snprintf(o->id, sizeof(o->id), "spiffe://%s/ns/%s/sa/%s", T.td, w->ns,
	             w->sa[0] ? w->sa : "default") >= (int)sizeof(o->id))
		o->id[sizeof(o->id) - 1] = '\0'; /* cut, like any long label value */
	o->principal = o->id;
}

/* "name.ns.svc.cluster.local", Istio's destination_service */
static const char *svc_host(const struct tsvc *sv, char *buf, size_t len)
{
	if (!sv || !sv->ns || !sv->name)
		return NULL;
	snprintf(buf, len, "%s.%s.svc.cluster.local", sv->name, sv->ns);
	return buf;
}

static uint32_t series_of(enum metrics_reporter rep, int mtls, const struct workload *src,
                          const struct workload *dst, const char *peer_id, const struct tsvc *sv)
{
	struct metrics_labels l = { .reporter = rep,
		                    .security = mtls ? METRICS_SEC_MUTUAL_TLS : METRICS_SEC_NONE };
	struct wl_lbl s, d;
	char host[AL_NAME_MAX];

	wl_fill(src, &s);
	wl_fill(dst, &d);
	/* the remote end's principal is the one its handshake proved, when any */
	if (peer_id && rep == METRICS_REPORTER_DESTINATION)
		s.principal = peer_id;
	else if (peer_id)
		d.principal = peer_id;
	l.v[ML_SOURCE_WORKLOAD] = s.name;
	l.v[ML_SOURCE_CANONICAL_SERVICE] = s.csvc;
	l.v[ML_SOURCE_CANONICAL_REVISION] = s.crev;
	l.v[ML_SOURCE_WORKLOAD_NAMESPACE] = s.ns;
	l.v[ML_SOURCE_PRINCIPAL] = s.principal;
	l.v[ML_SOURCE_APP] = s.app;
	l.v[ML_SOURCE_VERSION] = s.ver;
	l.v[ML_DESTINATION_WORKLOAD] = d.name;
	l.v[ML_DESTINATION_CANONICAL_SERVICE] = d.csvc;
	l.v[ML_DESTINATION_CANONICAL_REVISION] = d.crev;
	l.v[ML_DESTINATION_WORKLOAD_NAMESPACE] = d.ns;
	l.v[ML_DESTINATION_PRINCIPAL] = d.principal;
	l.v[ML_DESTINATION_APP] = d.app;
	l.v[ML_DESTINATION_VERSION] = d.ver;
	if (svc_host(sv, host, sizeof(host))) {
		l.v[ML_DESTINATION_SERVICE] = host;
		l.v[ML_DESTINATION_SERVICE_NAMESPACE] = sv->ns;
		l.v[ML_DESTINATION_SERVICE_NAME] = sv->name;
	}
	return metrics_series(&l);
}

/* ---- access log ---------------------------------------------------------- */

static void peer_fill(struct al_peer *p, const struct workload *w, const struct sockaddr *sa)
{
	if (sa && sa->sa_family)
		al_addr_from_sa(&p->addr, sa);
	if (!w)
		return;
	al_str(p->workload, sizeof(p->workload), w->name);
	al_str(p->ns, sizeof(p->ns), w->ns);
	if (snprintf(p->identity, sizeof(p->identity), "spiffe://%s/ns/%s/sa/%s", T.td, w->ns,
	             w->sa[0] ? w->sa : "default") >= (int)sizeof(p->identity))
		p->identity[sizeof(p->identity) - 1] = '\0';
}

struct line {
	enum al_direction dir;
	const struct workload *src, *dst;
	const struct sockaddr *src_sa, *dst_sa;
	uint64_t req, resp, duration_ms;
	uint32_t rflags;
	int err, mtls;
	const struct tsvc *sv;
};

static void log_line(unsigned wid, const struct line *l)
{
	struct al_record *r = accesslog_reserve(wid, l->rflags);

	if (!r)
		return; /* off, sampled out or ring full (counted there) */
	r->direction = (uint8_t)l->dir;
	r->mtls = (uint8_t)l->mtls;
	peer_fill(&r->src, l->src, l->src_sa);
	peer_fill(&r->dst, l->dst, l->dst_sa);
	r->req_bytes = l->req;
	r->resp_bytes = l->resp;
	r->duration_ms = l->duration_ms;
	r->response_flags = l->rflags;
	svc_host(l->sv, r->dst_service, sizeof(r->dst_service));
	if (l->err)
		al_str(r->error, sizeof(r->error), strerrordesc_np(l->err));
	else if (l->rflags & RF_DENY)
		al_str(r->error, sizeof(r->error), "denied by authorization policy");
	else if (l->rflags & RF_UO)
		al_str(r->error, sizeof(r->error), "connection limit reached");
	accesslog_commit(wid);
}

/* ---- worker hooks -------------------------------------------------------- */

static struct tconn *tc_of(struct worker *w, struct conn *c)
{
	struct tworker *tw;
	struct tconn *t;

	if (!__atomic_load_n(&T.on, __ATOMIC_RELAXED) || w->id >= T.n)
		return NULL;
	tw = &T.w[w->id];
	if (c->idx >= tw->cap)
		return NULL;
	t = &tw->tc[c->idx];
	return t->gen == c->gen ? t : NULL;
}

void telemetry_conn_open(struct worker *w, struct conn *c)
{
	const struct workload *dw;
	struct tworker *tw;
	struct tconn *t;
	socklen_t sl;

	if (!__atomic_load_n(&T.on, __ATOMIC_RELAXED) || w->id >= T.n || !c->pod)
		return;
	tw = &T.w[w->id];
	if (c->idx >= tw->cap)
		return;
	t = &tw->tc[c->idx];
	if (t->peer) /* left by a connection that never reached close */
		pod_put(t->peer);
	memset(t, 0, sizeof(*t));
	t->gen = c->gen;
	t->series[0] = t->series[1] = NO_SERIES;
	sl = sizeof(t->src);
	if (getpeername(c->ep[0].fd, (struct sockaddr *)&t->src, &sl))
		t->src.sin6_family = 0;
	if (c->kind == LK_OUTBOUND) {
		/* the destination: a local pod (shortcut, or by address), else unknown */
		if (!c->upod && w->inpod)
			t->peer = inpod_lookup_addr(w->inpod, (struct sockaddr *)&c->dst);
		dw = c->upod ? &c->upod->w : t->peer ? &t->peer->w : NULL;
		authz_service_names(w, c, &t->sv.ns, &t->sv.name);
		/* the mesh fast path: both identities known to this process,
		 * reported as the mutual TLS a tunnel would have had */
		t->mtls = c->mesh_local;
		t->series[0] =
		    series_of(METRICS_REPORTER_SOURCE, t->mtls, &c->pod->w, dw, NULL, &t->sv);
		if (c->upod) /* one hop is both sides: also the destination's report */
			t->series[1] = series_of(METRICS_REPORTER_DESTINATION, t->mtls, &c->pod->w,
			                         dw, NULL, &t->sv);
	} else {
		if (t->src.sin6_family && w->inpod)
			t->peer = inpod_lookup_addr(w->inpod, (struct sockaddr *)&t->src);
		t->series[1] = series_of(METRICS_REPORTER_DESTINATION, 0,
		                         t->peer ? &t->peer->w : NULL, &c->pod->w, NULL, NULL);
	}
	for (int r = 0; r < 2; r++)
		if (t->series[r] != NO_SERIES)
			metrics_conn_open(tw->ms, t->series[r]);
}

void telemetry_conn_bytes(struct worker *w, struct conn *c, unsigned s, uint64_t n)
{
	struct tconn *t = tc_of(w, c);
	enum metrics_tcp m = s ? MT_SENT_BYTES : MT_RECEIVED_BYTES;

	if (!t)
		return;
	for (int r = 0; r < 2; r++)
		if (t->series[r] != NO_SERIES)
			metrics_tcp_add(T.w[w->id].ms, t->series[r], m, n);
}

void telemetry_conn_flag(struct worker *w, struct conn *c, uint32_t rflags, int err)
{
	struct tconn *t = tc_of(w, c);

	if (!t)
		return;
	t->rflags |= rflags & RF__ALL;
	if (!t->err)
		t->err = err < 0 ? -err : err;
}

void telemetry_conn_close(struct worker *w, struct conn *c)
{
	struct tconn *t = tc_of(w, c);
	const struct workload *pw;

	if (!t)
		return;
	pw = c->upod ? &c->upod->w : t->peer ? &t->peer->w : NULL;
	for (int r = 0; r < 2; r++) {
		if (t->series[r] == NO_SERIES)
			continue;
		metrics_conn_close(T.w[w->id].ms, t->series[r], t->rflags);
		struct line l = {
			.dir = r ? AL_INBOUND : AL_OUTBOUND,
			.src = c->kind == LK_OUTBOUND ? &c->pod->w : pw,
			.dst = c->kind == LK_OUTBOUND ? pw : &c->pod->w,
			.src_sa = (struct sockaddr *)&t->src,
			.dst_sa = (struct sockaddr *)&c->dst,
			.req = c->dir[0].bytes,
			.resp = c->dir[1].bytes,
			.duration_ms = w->now_ms - c->start_ms,
			.rflags = t->rflags,
			.err = t->err,
			.mtls = t->mtls,
			.sv = &t->sv,
		};
		log_line(w->id, &l);
	}
	if (t->peer)
		pod_put(t->peer);
	t->peer = NULL;
	t->series[0] = t->series[1] = NO_SERIES;
}

void telemetry_refused(struct worker *w, struct pod *pod, struct pod *upod, int kind, int cfd,
                       const struct sockaddr_storage *dst, uint32_t rflags)
{
	struct sockaddr_in6 src = { 0 };
	socklen_t sl = sizeof(src);
	struct pod *peer = NULL;
	int out = kind == LK_OUTBOUND;

	if (!__atomic_load_n(&T.on, __ATOMIC_RELAXED) || w->id >= T.n || !pod)
		return;
	if (getpeername(cfd, (struct sockaddr *)&src, &sl))
		src.sin6_family = 0;
	if (!upod && w->inpod && (out ? dst != NULL : src.sin6_family != 0))
		peer = inpod_lookup_addr(w->inpod, out ? (const struct sockaddr *)dst
		                                       : (const struct sockaddr *)&src);
	const struct workload *pw = upod ? &upod->w : peer ? &peer->w : NULL;
	for (int r = 0; r < 2; r++) {
		/* outbound: the source's report, and the destination's when it is
		 * a shortcut into a local pod; inbound: the destination's */
		if ((r == 0 && !out) || (r == 1 && out && !upod))
			continue;
		uint32_t id = series_of(r ? METRICS_REPORTER_DESTINATION : METRICS_REPORTER_SOURCE,
		                        0, out ? &pod->w : pw, out ? pw : &pod->w, NULL, NULL);
		metrics_conn_open(T.w[w->id].ms, id);
		metrics_conn_close(T.w[w->id].ms, id, rflags);
		struct line l = { .dir = r ? AL_INBOUND : AL_OUTBOUND,
			          .src = out ? &pod->w : pw,
			          .dst = out ? pw : &pod->w,
			          .src_sa = (struct sockaddr *)&src,
			          .dst_sa = (const struct sockaddr *)dst,
			          .rflags = rflags };
		log_line(w->id, &l);
	}
	if (peer)
		pod_put(peer);
}

/* ---- HBONE streams ------------------------------------------------------- */

void telemetry_flow_open(struct worker *w, struct tm_flow *f, struct pod *pod, int inbound, int fd,
                         const struct sockaddr_storage *dst, const char *peer_id,
                         const char *svc_ns, const char *svc_name)
{
	socklen_t sl = sizeof(f->src);
	const struct sockaddr *psa;
	const struct workload *pw;
	struct pod *peer = NULL;

	if (!__atomic_load_n(&T.on, __ATOMIC_RELAXED) || w->id >= T.n || !pod)
		return;
	memset(f, 0, sizeof(*f));
	f->inbound = (uint8_t) !!inbound;
	f->start_ms = w->now_ms;
	f->svc_ns = svc_ns;
	f->svc_name = svc_name;
	if (getpeername(fd, (struct sockaddr *)&f->src, &sl))
		f->src.sin6_family = 0;
	if (dst)
		memcpy(&f->dst, dst,
		       dst->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(f->dst));
	al_str(f->peer_id, sizeof(f->peer_id), peer_id);
	/* the remote end as a workload when it is enrolled here (its labels go
	 * into the series now; only its name is kept for the log line) */
	psa = inbound ? (const struct sockaddr *)&f->src : (const struct sockaddr *)&f->dst;
	if (w->inpod && psa->sa_family)
		peer = inpod_lookup_addr(w->inpod, psa);
	pw = peer ? &peer->w : NULL;
	if (pw) {
		al_str(f->peer_name, sizeof(f->peer_name), pw->name);
		al_str(f->peer_ns, sizeof(f->peer_ns), pw->ns);
	}
	struct tsvc sv = { svc_ns, svc_name };
	f->series = series_of(inbound ? METRICS_REPORTER_DESTINATION : METRICS_REPORTER_SOURCE, 1,
	                      inbound ? pw : &pod->w, inbound ? &pod->w : pw,
	                      f->peer_id[0] ? f->peer_id : NULL, &sv);
	if (peer)
		pod_put(peer);
	metrics_conn_open(T.w[w->id].ms, f->series);
	f->open = 1;
}

void telemetry_flow_trace(struct tm_flow *f, const char *traceparent, const char *baggage)
{
	if (!f->open)
		return;
	al_str(f->traceparent, sizeof(f->traceparent), traceparent);
	al_str(f->baggage, sizeof(f->baggage), baggage);
}

void telemetry_flow_bytes(struct worker *w, struct tm_flow *f, int to_tunnel, uint64_t n)
{
	/* outbound: into the tunnel is client -> server; inbound the reverse */
	int c2s = !!to_tunnel != f->inbound;

	if (!f->open || w->id >= T.n)
		return;
	if (c2s)
		f->up += n;
	else
		f->down += n;
	metrics_tcp_add(T.w[w->id].ms, f->series, c2s ? MT_RECEIVED_BYTES : MT_SENT_BYTES, n);
}

void telemetry_flow_flag(struct tm_flow *f, uint32_t rflags, int err)
{
	if (!f->open)
		return;
	f->rflags |= rflags & RF__ALL;
	if (!f->err)
		f->err = err < 0 ? -err : err;
}

static void flow_line(unsigned wid, const struct tm_flow *f, struct pod *pod, uint64_t dur)
{
	struct al_record *r = accesslog_reserve(wid, f->rflags);
	struct al_peer *local, *remote;

	if (!r)
		return;
	r->direction = f->inbound ? AL_INBOUND : AL_OUTBOUND;
	r->mtls = 1;
	local = f->inbound ? &r->dst : &r->src;
	remote = f->inbound ? &r->src : &r->dst;
	peer_fill(local, &pod->w, NULL);
	al_str(remote->workload, sizeof(remote->workload), f->peer_name);
	al_str(remote->ns, sizeof(remote->ns), f->peer_ns);
	al_str(remote->identity, sizeof(remote->identity), f->peer_id);
	if (f->src.sin6_family)
		al_addr_from_sa(&r->src.addr, (const struct sockaddr *)&f->src);
	if (f->dst.sin6_family)
		al_addr_from_sa(&r->dst.addr, (const struct sockaddr *)&f->dst);
	al_str(r->traceparent, sizeof(r->traceparent), f->traceparent);
	al_str(r->baggage, sizeof(r->baggage), f->baggage);
	r->req_bytes = f->up;
	r->resp_bytes = f->down;
	r->duration_ms = dur;
	r->response_flags = f->rflags;
	struct tsvc sv = { f->svc_ns, f->svc_name };
	svc_host(&sv, r->dst_service, sizeof(r->dst_service));
	if (f->err)
		al_str(r->error, sizeof(r->error), strerrordesc_np(f->err));
	else if (f->rflags & RF_DENY)
		al_str(r->error, sizeof(r->error), "denied by authorization policy");
	else if (f->rflags & RF_UF)
		al_str(r->error, sizeof(r->error), "HBONE CONNECT refused");
	accesslog_commit(wid);
}

void telemetry_flow_close(struct worker *w, struct tm_flow *f, struct pod *pod)
{
	if (!f->open || w->id >= T.n || !__atomic_load_n(&T.on, __ATOMIC_RELAXED))
		return;
	f->open = 0;
	metrics_conn_close(T.w[w->id].ms, f->series, f->rflags);
	flow_line(w->id, f, pod, w->now_ms - f->start_ms);
}

void telemetry_flow_refused(struct worker *w, struct pod *pod, int tfd,
                            const struct sockaddr_storage *dst, const char *peer_id,
                            uint32_t rflags)
{
	struct tm_flow f;

	telemetry_flow_open(w, &f, pod, 1, tfd, dst, peer_id, NULL, NULL);
	if (!f.open)
		return;
	f.rflags = rflags;
	telemetry_flow_close(w, &f, pod);
}

/* ---- collectors ---------------------------------------------------------- */

/* struct worker_stats, field by field (same order), as ambit_worker_* */
static const struct {
	const char *name, *help;
	enum metrics_type type;
} wstat[] = {
	{ "ambit_worker_connections_accepted_total", "connections accepted", METRICS_COUNTER },
	{ "ambit_worker_connections_active", "proxied connections open", METRICS_GAUGE },
	{ "ambit_worker_connections_closed_total", "proxied connections closed", METRICS_COUNTER },
	{ "ambit_worker_bytes_client_to_server_total", "bytes received from clients",
	  METRICS_COUNTER },
	{ "ambit_worker_bytes_server_to_client_total", "bytes received from servers",
	  METRICS_COUNTER },
	{ "ambit_worker_pool_exhausted_total", "connections refused: pool full", METRICS_COUNTER },
	{ "ambit_worker_connect_errors_total", "upstream connects refused or unreachable",
	  METRICS_COUNTER },
	{ "ambit_worker_connect_timeouts_total", "upstream connects timed out", METRICS_COUNTER },
	{ "ambit_worker_resets_total", "connections closed with RST", METRICS_COUNTER },
	{ "ambit_worker_idle_timeouts_total", "connections closed idle", METRICS_COUNTER },
	{ "ambit_worker_drain_resets_total", "connections reset at a drain deadline",
	  METRICS_COUNTER },
	{ "ambit_worker_orig_dst_errors_total", "accepted without a usable original destination",
	  METRICS_COUNTER },
	{ "ambit_worker_socket_errors_total", "socket/setns/setsockopt failures", METRICS_COUNTER },
	{ "ambit_worker_hbone_refused_total", "15008 connections refused (mesh off)",
	  METRICS_COUNTER },
	{ "ambit_worker_recv_nobufs_total", "receives paused: buffer ring empty", METRICS_COUNTER },
	{ "ambit_worker_accept_errors_total", "accept failures", METRICS_COUNTER },
	{ "ambit_worker_listeners", "armed listener copies", METRICS_GAUGE },
	{ "ambit_worker_buffers_held", "receive buffers queued in userspace", METRICS_GAUGE },
	{ "ambit_worker_local_shortcuts_total", "outbound connections relayed into a local pod",
	  METRICS_COUNTER },
};
_Static_assert(sizeof(wstat) / sizeof(wstat[0]) == sizeof(struct worker_stats) / sizeof(uint64_t),
               "wstat out of sync with struct worker_stats");

static void collect_worker(void *arg, struct metrics_emitter *e)
{
	size_t field = (size_t)(uintptr_t)arg;
	struct worker_stats st;
	char idx[16];

	pthread_mutex_lock(&T.mu);
	for (unsigned i = 0; i < T.n_workers; i++) {
		worker_get_stats(T.workers[i], &st);
		snprintf(idx, sizeof(idx), "%u", i);
		metrics_emit(e, (const char *[]){ idx }, (double)((const uint64_t *)&st)[field]);
	}
	pthread_mutex_unlock(&T.mu);
}

/* ENOBUFS receives are the workers' nobufs count */
static void collect_nobufs(void *arg, struct metrics_emitter *e)
{
	(void)arg;
	collect_worker(
	    (void *)(uintptr_t)(offsetof(struct worker_stats, nobufs) / sizeof(uint64_t)), e);
}

/* A family the workers do not count: no samples rather than false zeros. */
static void collect_nothing(void *arg, struct metrics_emitter *e)
{
	(void)arg;
	(void)e;
}

static void collect_enrolled(void *arg, struct metrics_emitter *e)
{
	(void)arg;
	pthread_mutex_lock(&T.mu);
	if (T.ip)
		metrics_emit(e, NULL, (double)inpod_count(T.ip));
	pthread_mutex_unlock(&T.mu);
}

static void collect_handshakes(void *arg, struct metrics_emitter *e)
{
	static const char *const role[2] = { "client", "server" };
	struct hbone_stats st;

	hbone_stats_get(&st);
	for (int r = 0; r < 2; r++) {
		if (!arg) {
			metrics_emit(e, (const char *[]){ role[r] }, (double)st.handshakes[r]);
			continue;
		}
		for (int f = 1; f < TLS_FAIL__COUNT; f++)
			if (st.handshake_fail[r][f])
				metrics_emit(e, (const char *[]){ role[r], tls_fail_str(f) },
				             (double)st.handshake_fail[r][f]);
	}
}

/* The HBONE pool's counters live in mesh.c's per-worker stats: read them
 * from its /stats object at scrape time (rare) rather than count twice. */
static void collect_mesh(void *arg, struct metrics_emitter *e)
{
	json_t *o = mesh_stats_json(), *v;

	if (o && json_is_true(json_object_get(o, "enabled")) &&
	    (v = json_object_get(o, (const char *)arg)) && json_is_integer(v))
		metrics_emit(e, NULL, (double)json_integer_value(v));
	json_decref(o);
}

static int register_collectors(void)
{
	static const char *const wl[] = { "worker", NULL };
	int rc;

	for (size_t i = 0; i < sizeof(wstat) / sizeof(wstat[0]); i++) {
		rc = metrics_collector_register(wstat[i].name, wstat[i].help, wstat[i].type, wl,
		                                collect_worker, (void *)(uintptr_t)i);
		if (rc)
			return rc;
	}
	rc = metrics_family_set_collector(metrics_std(MS_WORKLOADS_ENROLLED), collect_enrolled,
	                                  NULL);
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_WORKER_BUFRING_EXHAUSTED),
		                                  collect_nobufs, NULL);
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_WORKER_SQES), collect_nothing,
		                                  NULL);
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_WORKER_CQES), collect_nothing,
		                                  NULL);
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_POOL_CONNECTIONS), collect_mesh,
		                                  (void *)"pool_conns");
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_POOL_STREAMS), collect_mesh,
		                                  (void *)"pool_streams");
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_POOL_CONNECTIONS_OPENED),
		                                  collect_mesh, (void *)"tunnels_dialled");
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_HANDSHAKES), collect_handshakes,
		                                  NULL);
	if (!rc)
		rc = metrics_family_set_collector(metrics_std(MS_HANDSHAKE_FAILURES),
		                                  collect_handshakes, (void *)1);
	return rc;
}

/* ---- set-up -------------------------------------------------------------- */

int telemetry_init(const struct np_config *cfg, unsigned n_workers)
{
	const char *path = cfg->access_log;
	int rc;

	if (T.on)
		return -EALREADY;
	if (!cfg->metrics_port && !cfg->access_log[0]) {
		/* nothing would ever read what is counted: count nothing */
		log_info("event=telemetry off=1");
		return 0;
	}
	snprintf(T.td, sizeof(T.td), "%s",
	         cfg->mesh_trust_domain[0] ? cfg->mesh_trust_domain : "cluster.local");
	rc = metrics_init(n_workers, cfg->max_series);
	if (rc) {
		log_err("event=startup_failed what=metrics err=%s", strerror(-rc));
		return rc;
	}
	metrics_set_build_info(VERSION);
	/* "" (unset) and /dev/stderr both mean stderr; unset starts off */
	if (!path[0] || strcmp(path, "/dev/stderr") == 0)
		path = NULL;
	rc = accesslog_init(n_workers, 0, path);
	if (rc) {
		log_err("event=startup_failed what=access_log path=%s err=%s",
		        path ? path : "stderr", strerror(-rc));
		goto fail_metrics;
	}
	accesslog_set_enabled(cfg->access_log[0] && cfg->access_log_sample > 0);
	if (cfg->access_log_sample > 0)
		accesslog_set_sampling(cfg->access_log_sample);
	rc = accesslog_register_metrics();
	if (!rc)
		rc = register_collectors();
	if (rc) {
		log_err("event=startup_failed what=metrics_collectors err=%s", strerror(-rc));
		goto fail_log;
	}
	T.w = calloc(n_workers, sizeof(*T.w));
	if (!T.w) {
		rc = -ENOMEM;
		goto fail_log;
	}
	T.n = n_workers;
	for (unsigned i = 0; i < n_workers; i++) {
		/* untouched pages cost no RSS: a slot is used with its conn slot */
		void *m = mmap(NULL, (size_t)cfg->max_conns * sizeof(struct tconn),
		               PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		               -1, 0);
		if (m == MAP_FAILED) {
			rc = -errno;
			goto fail_w;
		}
		T.w[i].tc = m;
		T.w[i].cap = cfg->max_conns;
		T.w[i].ms = metrics_shard(i);
	}
	log_info("event=telemetry metrics_port=%u max_series=%u access_log=%s access_log_on=%d "
	         "sample=%u",
	         cfg->metrics_port, cfg->max_series, path ? path : "stderr", accesslog_enabled(),
	         accesslog_sampling());
	__atomic_store_n(&T.on, 1, __ATOMIC_RELEASE);
	return 0;
fail_w:
	for (unsigned i = 0; i < T.n; i++)
		if (T.w[i].tc)
			munmap(T.w[i].tc, (size_t)T.w[i].cap * sizeof(struct tconn));
	free(T.w);
	T.w = NULL;
	T.n = 0;
	log_err("event=startup_failed what=telemetry err=%s", strerror(-rc));
fail_log:
	accesslog_fini();
fail_metrics:
	metrics_fini();
	return rc;
}

void telemetry_attach(struct worker **workers, unsigned n_workers, struct inpod *ip)
{
	pthread_mutex_lock(&T.mu);
	T.workers = workers;
	T.n_workers = workers ? n_workers : 0;
	T.ip = ip;
	pthread_mutex_unlock(&T.mu);
}

void telemetry_reopen(void)
{
	if (__atomic_load_n(&T.on, __ATOMIC_RELAXED))
		accesslog_reopen();
}

void telemetry_fini(void)
{
	if (!T.on)
		return;
	telemetry_attach(NULL, 0, NULL);
	__atomic_store_n(&T.on, 0, __ATOMIC_RELEASE);
	accesslog_fini();
	for (unsigned i = 0; i < T.n; i++) {
		struct tworker *tw = &T.w[i];
		/* pod references of connections the workers never closed */
		for (uint32_t k = 0; k < tw->cap; k++)
			if (tw->tc[k].peer)
				pod_put(tw->tc[k].peer);
		munmap(tw->tc, (size_t)tw->cap * sizeof(struct tconn));
	}
	free(T.w);
	T.w = NULL;
	T.n = 0;
	metrics_fini();
}

/* ---- admin --------------------------------------------------------------- */

static int send_all(int fd, const char *p, size_t n)
{
	struct pollfd pf = { .fd = fd, .events = POLLOUT };

	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && (errno == EAGAIN || errno == EINTR) &&
		    poll(&pf, 1, REQ_TIMEOUT_MS) == 1)
			continue;
		return -1;
	}
	return 0;
}

static void reply(int fd, int code, const char *reason, const char *ctype, const char *body,
                  size_t len)
{
	char hdr[256];
	int n = snprintf(hdr, sizeof(hdr),
	                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	                 "Connection: close\r\n\r\n",
	                 code, reason, ctype, len);

	if (send_all(fd, hdr, (size_t)n) == 0)
		send_all(fd, body, len);
}

void telemetry_serve_metrics(int fd)
{
	char req[REQ_MAX + 1], method[8], path[256];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t len = 0;
	char *body, *q;
	int rc;

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
		reply(fd, 400, "Bad Request", "text/plain", "bad request\n", 12);
		return;
	}
	q = strchr(path, '?');
	if (q)
		*q = '\0';
	if (strcmp(path, "/metrics") != 0) {
		reply(fd, 404, "Not Found", "text/plain", "not found\n", 10);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		reply(fd, 405, "Method Not Allowed", "text/plain", "only GET\n", 9);
		return;
	}
	if (!__atomic_load_n(&T.on, __ATOMIC_ACQUIRE)) {
		reply(fd, 503, "Service Unavailable", "text/plain", "metrics off\n", 12);
		return;
	}
	rc = metrics_render(&body, &len);
	if (rc) {
		reply(fd, 503, "Service Unavailable", "text/plain", "out of memory\n", 14);
		return;
	}
	reply(fd, 200, "OK", METRICS_CONTENT_TYPE, body, len);
	free(body);
}

int telemetry_logging(const char *query, char *msg, size_t msglen)
{
	const char *lv = NULL;
	size_t qlen = strlen(query), lvlen = 0;
	char level[16];
	int lvl = -1;

	/* level= is the daemon log's: find and check it here, the access log
	 * validates the rest (and ignores level) */
	for (const char *k = query; k && *k; k = strchr(k, '&') ? strchr(k, '&') + 1 : NULL) {
		if (strncmp(k, "level=", 6) == 0) {
			if (lv) {
				snprintf(msg, msglen, "level given twice\n");
				return 400;
			}
			lv = k + 6;
			lvlen = strcspn(lv, "&");
		}
	}
	if (lv) {
		if (lvlen >= sizeof(level)) {
			snprintf(msg, msglen, "bad level\n");
			return 400;
		}
		memcpy(level, lv, lvlen);
		level[lvlen] = '\0';
		lvl = log_level_parse(level);
		if (lvl < 0) {
			snprintf(msg, msglen, "bad level \"%s\"\n", level);
			return 400;
		}
	}
	if (!__atomic_load_n(&T.on, __ATOMIC_ACQUIRE)) {
		snprintf(msg, msglen, "telemetry off\n");
		return 503;
	}
	if (accesslog_apply_query(query, qlen)) {
		snprintf(msg, msglen,
		         "bad query: access_log=on|off, sample=1..1000000, "
		         "level=error|warn|info|debug\n");
		return 400;
	}
	if (lvl >= 0) {
		log_set_level(lvl);
		log_info("event=log_level level=%s", log_level_name(lvl));
	}
	snprintf(msg, msglen, "access_log=%s sample=%u level=%s\n",
	         accesslog_enabled() ? "on" : "off", accesslog_sampling(),
	         log_level_name(log_level_cur));
	return 200;
}
