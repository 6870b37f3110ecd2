/* mesh: see mesh.h.  HBONE tunnels and streams on a worker's io_uring. */
#include "node-proxy/mesh.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node-proxy/accesslog.h"
#include "node-proxy/authz.h"
#include "node-proxy/hbone.h"
#include "node-proxy/identity.h"
#include "node-proxy/inpod.h"
#include "node-proxy/log.h"
#include "node-proxy/pod.h"
#include "node-proxy/telemetry.h"
#include "node-proxy/worker-t.h"

#define TUN_RBUF              (64 * 1024) /* ciphertext received per recv */
#define STREAM_UBUF           (32 * 1024) /* plain bytes read per recv */
#define RING_CACHE            32          /* spare stream rings kept per worker */
#define H2_FLOW_CONTROL_ERROR 0x3
#define ID_MAX                MESH_ID_MAX

/* sub-operations, in the side byte of user_data */
enum { M_RECV = 1, M_SEND, M_CONNECT, M_TIMEOUT, M_CANCEL, M_BACKOFF };
enum { MT_TUN = 1, MT_STREAM };

/* Per-worker counters: written by the worker only, read with relaxed
 * atomics by the admin thread.  Same order as mstat_names. */
struct mstats {
	uint64_t outbound_hbone;   /* outbound connections sent into a tunnel */
	uint64_t outbound_plain;   /* outbound connections to non-mesh destinations */
	uint64_t no_identity;      /* outbound from a pod without an SVID: reset */
	uint64_t tunnels_dialled;  /* client tunnels created */
	uint64_t tunnels_accepted; /* server tunnels created */
	uint64_t tunnels_active;   /* gauge: both roles */
	uint64_t tunnel_connect_errors;
	uint64_t streams_active;     /* gauge */
	uint64_t inbound_streams;    /* CONNECTs answered 200 */
	uint64_t bad_authority;      /* 400: not a workload of this pod */
	uint64_t app_connect_errors; /* 503 */
	uint64_t refused_by_peer;    /* client: non-200 answer -> downstream reset */
	uint64_t stream_resets;      /* streams ended with a reset either way */
	uint64_t bytes_into_tunnel;  /* plain bytes written to streams */
	uint64_t bytes_out_of_tunnel;
	uint64_t pool_conns;      /* gauge: pooled client tunnels */
	uint64_t pool_streams;    /* gauge: streams on them */
	uint64_t stream_retries;  /* balanced streams re-sent to another endpoint */
	uint64_t local_fast_path; /* mesh pod -> mesh pod here, joined without a tunnel */
};
static const char *const mstat_names[] = {
	"outbound_hbone",   "outbound_plain",    "no_identity",           "tunnels_dialled",
	"tunnels_accepted", "tunnels_active",    "tunnel_connect_errors", "streams_active",
	"inbound_streams",  "bad_authority",     "app_connect_errors",    "refused_by_peer",
	"stream_resets",    "bytes_into_tunnel", "bytes_out_of_tunnel",   "pool_conns",
	"pool_streams",     "stream_retries",    "local_fast_path",
};
_Static_assert(sizeof(mstat_names) / sizeof(mstat_names[0]) ==
                   sizeof(struct mstats) / sizeof(uint64_t),
               "mstat_names out of sync");

#define MSTAT(mw, f, n)                                                                            \
	__atomic_store_n(&(mw)->st->f, (mw)->st->f + (uint64_t)(n), __ATOMIC_RELAXED)

static struct {
	int enabled;
	struct identity_cache *ic;
	struct hbone_config hcfg;
	uint16_t port_hbone, port_out, port_in;
	int local_fast_path;
	struct mstats st[POD_MAX_WORKERS];
} g;

/* Common head of tunnels and streams. */
struct mobj {
	uint8_t type;
	uint8_t closing, rst, dirty, cancel_sent;
	uint16_t gen;
	uint32_t idx;
	int inflight;
	int fd;
	struct mobj *dnext; /* dirty list */
	struct pod *pod;    /* reference */
	uint64_t drain_at;  /* pod deleted / shutting down: reset at this time */
};

struct mtun {
	struct mobj h;
	int role;
	struct hbone_conn *hc;
	struct tls_identity *id; /* reference; the pool key */
	uint8_t connected, recv_armed, send_inflight, dead, in_pool, send_err;
	struct sockaddr_storage dst; /* client: <dst-ip>:15008 */
	socklen_t dst_len;
	struct iovec iov[2];
	struct msghdr msg;
	uint8_t rbuf[TUN_RBUF];
};

enum { SS_CONNECTING = 1, SS_WAIT_RESP, SS_OPEN };
enum { RETRY_NONE, RETRY_WAIT, RETRY_NOW };

struct mstream {
	struct mobj h;
	struct mtun *t; /* NULL once the HTTP/2 stream is closed */
	int32_t sid;
	uint8_t state, server, refused, detached;
	uint64_t last_ms;                       /* last byte either way: [timeouts] idle */
	uint64_t start_ms, bytes_in, bytes_out; /* for /connections */
	/* plain socket -> tunnel */
	uint8_t recv_armed, ueof, shut_sent, blocked;
	uint32_t ulen, uoff;
	/* tunnel -> plain socket: a ring of one stream window */
	uint8_t send_inflight, heof, fd_shut;
	uint8_t *ring;
	uint32_t rcap, rhead, rlen, slen;
	struct sockaddr_storage dst; /* server: the app; client: the workload asked for */
	socklen_t dst_len;
	/* client, balanced over a service (authz.c): the claim, the attempt
	 * waiting for its backoff timer or to be made, the timer's time */
	struct svc_claim cl;
	uint8_t retry; /* RETRY_* */
	int status;    /* the CONNECT's answer, 0 before */
	struct __kernel_timespec bo;
	char tp[56];       /* traceparent: one trace id over every attempt */
	struct tm_flow tm; /* metrics and access log (telemetry.c) */
	uint8_t ubuf[STREAM_UBUF];
};

struct mesh_worker {
	struct worker *w;
	struct mstats *st;
	struct hbone_pool *pool;
	struct mobj **tab;
	uint16_t *gens;
	uint32_t *free_stack;
	uint32_t cap, hwm, nfree, live;
	struct mobj *dirty;
	uint64_t rng[2];
	/* A ring is one stream window (256 KiB: malloc maps it); keeping a few
	 * spare saves an mmap/munmap and the page faults per connection. */
	uint8_t *rings[RING_CACHE];
	unsigned n_rings;
	unsigned draining;     /* objects with a drain deadline (the tick scans then) */
	uint64_t idle_scan_ms; /* last scan for idle streams */
};

static uint8_t *ring_get(struct mesh_worker *mw)
{
	return mw->n_rings ? mw->rings[--mw->n_rings] : malloc(g.hcfg.stream_window);
}

static void ring_put(struct mesh_worker *mw, uint8_t *r)
{
	if (r && mw->n_rings < RING_CACHE)
		mw->rings[mw->n_rings++] = r;
	else
		free(r);
}

/* ---- process-wide --------------------------------------------------------- */

int mesh_init(const struct np_config *cfg, char *err, size_t errlen)
{
	int rc;

	memset(&g, 0, sizeof(g));
	if (!cfg->mesh_ca_dir[0] || !cfg->mesh_hbone)
		return 0;
	rc = identity_cache_new(cfg->mesh_ca_dir, cfg->mesh_trust_domain,
	                        cfg->mesh_svid_lifetime_ms / 1000, &g.ic, err, errlen);
	if (rc)
		return rc;
	hbone_config_default(&g.hcfg);
	g.hcfg.stream_window = cfg->mesh_stream_window;
	if (g.hcfg.conn_window < g.hcfg.stream_window)
		g.hcfg.conn_window = g.hcfg.stream_window;
	g.port_hbone = cfg->port_hbone;
	g.local_fast_path = cfg->mesh_local_fast_path;
	g.port_out = cfg->port_outbound;
	g.port_in = cfg->port_inbound;
	g.enabled = 1;
	log_info("event=mesh_enabled trust_domain=%s ca_dir=%s svid_lifetime_s=%u",
	         cfg->mesh_trust_domain, cfg->mesh_ca_dir, cfg->mesh_svid_lifetime_ms / 1000);
	return 0;
}

void mesh_fini(void)
{
	identity_cache_free(g.ic);
	g.ic = NULL;
	g.enabled = 0;
}

int mesh_principal(const struct pod *pod, char *out, size_t len)
{
	if (!g.enabled)
		return -ENOENT;
	return identity_spiffe_id(g.ic, pod->w.ns, pod->w.sa[0] ? pod->w.sa : "default", out, len);
}

int mesh_enabled(void)
{
	return g.enabled;
}

int mesh_pod_add(const struct workload *w, char *err, size_t errlen)
{
	if (!g.enabled)
		return 0;
	return identity_pod_add(g.ic, w->uid, w->ns, w->sa[0] ? w->sa : "default", err, errlen);
}

void mesh_pod_del(const char *uid)
{
	if (g.enabled)
		identity_pod_del(g.ic, uid);
}

void mesh_renew_now(void)
{
	if (g.enabled)
		identity_renew_now(g.ic);
}

json_t *mesh_stats_json(void)
{
	static const char *const status[] = { "200", "400", "401", "503" };
	static const char *const roles[] = { "client", "server" };
	struct hbone_stats hs;
	struct mstats tot;
	json_t *o, *hsk, *fail, *str, *resp;
	uint64_t issued = 0, failed = 0;

	o = json_object();
	json_object_set_new(o, "enabled", json_boolean(g.enabled));
	if (!g.enabled)
		return o;
	memset(&tot, 0, sizeof(tot));
	for (unsigned i = 0; i < POD_MAX_WORKERS; i++)
		for (size_t k = 0; k < sizeof(tot) / sizeof(uint64_t); k++)
			((uint64_t *)&tot)[k] +=
			    __atomic_load_n(&((uint64_t *)&g.st[i])[k], __ATOMIC_RELAXED);
	for (size_t k = 0; k < sizeof(tot) / sizeof(uint64_t); k++)
		json_object_set_new(o, mstat_names[k],
		                    json_integer((json_int_t)((uint64_t *)&tot)[k]));
	hbone_stats_get(&hs);
	hsk = json_object();
	fail = json_object();
	str = json_object();
	resp = json_object();
	for (int r = 0; r < 2; r++) {
		json_t *f = json_object(), *rs = json_object();
		json_object_set_new(hsk, roles[r], json_integer((json_int_t)hs.handshakes[r]));
		for (int k = 1; k < TLS_FAIL__COUNT; k++)
			json_object_set_new(f, tls_fail_str((enum tls_fail)k),
			                    json_integer((json_int_t)hs.handshake_fail[r][k]));
		json_object_set_new(fail, roles[r], f);
		json_object_set_new(str, roles[r], json_integer((json_int_t)hs.streams_opened[r]));
		for (int k = 0; k < 4; k++)
			json_object_set_new(rs, status[k],
			                    json_integer((json_int_t)hs.responses[r][k]));
		json_object_set_new(rs, "other", json_integer((json_int_t)hs.responses_other[r]));
		json_object_set_new(resp, roles[r], rs);
	}
	json_object_set_new(o, "handshakes", hsk);
	json_object_set_new(o, "handshake_failures", fail);
	json_object_set_new(o, "streams_opened", str);
	json_object_set_new(o, "responses", resp);
	json_object_set_new(o, "bad_requests", json_integer((json_int_t)hs.bad_requests));
	json_object_set_new(o, "resets_sent", json_integer((json_int_t)hs.resets_sent));
	json_object_set_new(o, "resets_received", json_integer((json_int_t)hs.resets_received));
	json_object_set_new(o, "trust_domain", json_string(identity_trust_domain(g.ic)));
	identity_counters(g.ic, &issued, &failed);
	json_object_set_new(o, "svids_issued", json_integer((json_int_t)issued));
	json_object_set_new(o, "svid_failures", json_integer((json_int_t)failed));
	json_object_set_new(o, "identities", identity_json(g.ic));
	return o;
}

/* ---- per-worker table ------------------------------------------------------ */

static struct mesh_worker *mw_of(struct worker *w)
{
	struct mesh_worker *mw = w->mesh;
	uint32_t cap = w->cfg.max_conns;

	if (mw)
		return mw;
	mw = calloc(1, sizeof(*mw));
	if (!mw)
		return NULL;
	mw->w = w;
	mw->st = &g.st[w->id % POD_MAX_WORKERS];
	mw->cap = cap;
	mw->tab = calloc(cap, sizeof(*mw->tab));
	mw->gens = calloc(cap, sizeof(*mw->gens));
	mw->free_stack = calloc(cap, sizeof(*mw->free_stack));
	if (!mw->tab || !mw->gens || !mw->free_stack ||
	    hbone_pool_new(w->cfg.mesh_pool_streams, &mw->pool)) {
		free(mw->tab);
		free(mw->gens);
		free(mw->free_stack);
		free(mw);
		return NULL;
	}
	if (getrandom(mw->rng, sizeof(mw->rng), 0) != sizeof(mw->rng))
		mw->rng[0] = (uint64_t)(uintptr_t)mw, mw->rng[1] = w->now_ms | 1;
	w->mesh = mw;
	return mw;
}

static uint64_t rnd(struct mesh_worker *mw)
{
	/* xorshift128+: trace ids need uniqueness, not secrecy */
	uint64_t s1 = mw->rng[0];
	const uint64_t s0 = mw->rng[1];
	mw->rng[0] = s0;
	s1 ^= s1 << 23;
	mw->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return mw->rng[1] + s0;
}

/* @zero: bytes to clear (the object up to its data buffer, which needs
 * none: zeroing 32-64 KiB per connection showed up in connection rate). */
static void *obj_new(struct mesh_worker *mw, size_t size, size_t zero, int type, struct pod *pod)
{
	struct mobj *o;
	uint32_t idx;

	if (mw->nfree)
		idx = mw->free_stack[--mw->nfree];
	else if (mw->hwm < mw->cap)
		idx = mw->hwm++;
	else
		return NULL;
	o = malloc(size);
	if (o)
		memset(o, 0, zero);
	if (!o) {
		mw->free_stack[mw->nfree++] = idx;
		return NULL;
	}
	o->type = (uint8_t)type;
	o->idx = idx;
	o->gen = ++mw->gens[idx];
	o->fd = -1;
	o->pod = pod;
	pod_get(pod);
	mw->tab[idx] = o;
	mw->live++;
	return o;
}

static void obj_free(struct mesh_worker *mw, struct mobj *o)
{
	if (o->fd >= 0) {
		if (o->rst) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };
			setsockopt(o->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(o->fd);
	}
	if (o->pod)
		pod_put(o->pod);
	mw->tab[o->idx] = NULL;
	mw->free_stack[mw->nfree++] = o->idx;
	mw->live--;
	free(o);
}

static void dirty(struct mesh_worker *mw, struct mobj *o)
{
	if (o->dirty)
		return;
	o->dirty = 1;
	o->dnext = mw->dirty;
	mw->dirty = o;
}

static struct io_uring_sqe *msqe(struct mesh_worker *mw, struct mobj *o, int sub)
{
	struct io_uring_sqe *sqe = worker_sqe(mw->w);

	io_uring_sqe_set_data64(sqe, ud_pack(OP_MESH, (unsigned)sub, o->idx, o->gen));
	o->inflight++;
	return sqe;
}

/* Teardown: cancel what is pending on the fd; freed by the step function
 * once the last completion is in. */
static void obj_close(struct mesh_worker *mw, struct mobj *o, int rst)
{
	o->rst |= (uint8_t)rst;
	if (!o->closing) {
		o->closing = 1;
		if (o->fd >= 0 && o->inflight) {
			struct io_uring_sqe *sqe = msqe(mw, o, M_CANCEL);
			io_uring_prep_cancel_fd(sqe, o->fd, IORING_ASYNC_CANCEL_ALL);
		}
	}
	dirty(mw, o);
}

static int proxy_socket(struct mesh_worker *mw, struct pod *pod, int family)
{
	struct worker *w = mw->w;
	uint32_t mark = w->cfg.proxy_mark;
	int one = 1, fd, rc;

	rc = worker_enter_pod(w, pod);
	if (rc)
		return rc;
	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* the proxy mark: never captured by the pod's own rules */
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark))) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

static void submit_connect(struct mesh_worker *mw, struct mobj *o, const struct sockaddr *sa,
                           socklen_t len)
{
	struct io_uring_sqe *sqe = msqe(mw, o, M_CONNECT);

	io_uring_prep_connect(sqe, o->fd, sa, len);
	sqe->flags |= IOSQE_IO_LINK;
	sqe = msqe(mw, o, M_TIMEOUT);
	io_uring_prep_link_timeout(sqe, &mw->w->connect_ts, 0);
}

static void addr_fmt(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, ntohs(s4->sin_port));
	} else {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
	}
}

static uint16_t ss_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Is the address of @ss one of @pod's? */
static int pod_owns(const struct pod *pod, const struct sockaddr_storage *ss)
{
	for (unsigned i = 0; i < pod->w.n_ips && i < WL_MAX_IPS; i++) {
		const struct wl_ip *ip = &pod->w.ips[i];
		if (ip->family != ss->ss_family)
			continue;
		if (ip->family == AF_INET &&
		    ip->v4.s_addr == ((const struct sockaddr_in *)ss)->sin_addr.s_addr)
			return 1;
		if (ip->family == AF_INET6 &&
		    !memcmp(&ip->v6, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16))
			return 1;
	}
	return 0;
}

/* ---- engine callbacks (never free anything here) -------------------------- */

struct mstream;
static void stream_attempt_failed(struct mesh_worker *mw, struct mstream *s);
static void stream_retry(struct mesh_worker *mw, struct mstream *s);

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* The mesh_worker of the thread running callbacks: set around every engine
 * call (one worker per thread, so a thread-local is exact). */
static __thread struct mesh_worker *cur_mw;

static void on_handshake(struct hbone_conn *c, void *arg, enum tls_fail reason)
{
	struct mtun *t = arg;
	char peer[64] = "";

	if (t->role == HBONE_SERVER) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		if (getpeername(t->h.fd, (struct sockaddr *)&ss, &len) == 0)
			addr_fmt(&ss, peer, sizeof(peer));
	} else {
		addr_fmt(&t->dst, peer, sizeof(peer));
	}
	if (reason != TLS_FAIL_NONE) {
		log_warn("event=hbone_handshake_failed role=%s pod=%s peer_addr=%s reason=%s",
		         t->role == HBONE_SERVER ? "server" : "client", t->h.pod->w.uid, peer,
		         tls_fail_str(reason));
		return;
	}
	uint8_t fp[32];
	char fph[65] = "-";
	if (tls_conn_peer_fingerprint(hbone_conn_tls(c), fp) == 0)
		hex(fp, sizeof(fp), fph);
	/* once per HBONE connection: who the peer is, and which certificate */
	log_info("event=hbone_established role=%s pod=%s local_id=%s peer_id=%s peer_addr=%s "
	         "peer_cert_sha256=%s cipher=%s",
	         t->role == HBONE_SERVER ? "server" : "client", t->h.pod->w.uid,
	         tls_identity_spiffe_id(t->id), hbone_conn_peer_id(c), peer, fph,
	         tls_conn_cipher(hbone_conn_tls(c)) ? tls_conn_cipher(hbone_conn_tls(c)) : "-");
}

static int on_stream_request(struct hbone_conn *c, void *arg, int32_t sid,
                             const struct hbone_request *req)
{
	struct mtun *t = arg;
	struct mesh_worker *mw = cur_mw;
	struct mstream *s;
	uint16_t port = ss_port(&req->dst);
	int fd;

	/* Only this pod's own addresses, and never our own ports (a loop). */
	if (!pod_owns(t->h.pod, &req->dst) || port == g.port_hbone || port == g.port_out ||
	    port == g.port_in) {
		MSTAT(mw, bad_authority, 1);
		log_info("event=hbone_bad_authority pod=%s peer_id=%s authority=%s",
		         t->h.pod->w.uid, req->peer_id ? req->peer_id : "-", req->authority);
		return 400;
	}
	if (authz_hbone(mw->w, t->h.pod, req->peer_id, t->h.fd, port)) {
		telemetry_flow_refused(mw->w, t->h.pod, t->h.fd, &req->dst, req->peer_id, RF_DENY);
		return 401; /* the destination's policy denies this peer (authz.c) */
	}
	s = obj_new(mw, sizeof(*s), offsetof(struct mstream, ubuf), MT_STREAM, t->h.pod);
	if (!s) {
		MSTAT(mw, app_connect_errors, 1);
		return 503;
	}
	s->server = 1;
	s->t = t;
	s->sid = sid;
	s->state = SS_CONNECTING;
	memcpy(&s->dst, &req->dst, req->dst_len);
	s->dst_len = req->dst_len;
	telemetry_flow_open(mw->w, &s->tm, t->h.pod, 1, t->h.fd, &req->dst, req->peer_id, NULL,
	                    NULL);
	telemetry_flow_trace(&s->tm, req->traceparent, req->baggage);
	MSTAT(mw, streams_active, 1);
	s->last_ms = s->start_ms = mw->w->now_ms;
	__atomic_fetch_add(&s->h.pod->conns, 1, __ATOMIC_RELAXED); /* /workloads */
	hbone_stream_set_user(c, sid, s);
	fd = proxy_socket(mw, t->h.pod, req->dst.ss_family);
	if (fd < 0) {
		/* answered 503 by the step function (connect "failed") */
		s->refused = 1;
		dirty(mw, &s->h);
		return 0;
	}
	s->h.fd = fd;
	submit_connect(mw, &s->h, (struct sockaddr *)&s->dst, s->dst_len);
	return 0;
}

static void on_stream_response(struct hbone_conn *c, void *arg, int32_t sid, void *su, int status)
{
	struct mstream *s = su;

	(void)c;
	(void)arg;
	log_debug("event=hbone_response pod=%s sid=%d status=%d", s ? s->h.pod->w.uid : "-", sid,
	          status);
	if (!s)
		return;
	s->status = status;
	if (status == 200) {
		s->state = SS_OPEN;
		authz_claim_ok(cur_mw->w, &s->cl); /* a balanced stream: endpoint is fine */
	} else {
		s->refused = 1;
		MSTAT(cur_mw, refused_by_peer, 1);
		telemetry_flow_flag(&s->tm, status == 401 ? RF_DENY : RF_UF, 0);
		log_debug("event=hbone_refused pod=%s status=%d", s->h.pod->w.uid, status);
	}
	dirty(cur_mw, &s->h);
}

static void on_stream_data(struct hbone_conn *c, void *arg, int32_t sid, void *su,
                           const uint8_t *data, size_t len)
{
	struct mstream *s = su;

	(void)arg;
	if (!s || s->h.closing) {
		hbone_stream_consume(c, sid, len); /* nobody to take them */
		return;
	}
	if (!s->ring) {
		s->rcap = g.hcfg.stream_window;
		s->ring = ring_get(cur_mw);
	}
	if (!s->ring || len > s->rcap - s->rlen) {
		/* more than the window we advertised: the peer broke flow control */
		hbone_stream_reset(c, sid, H2_FLOW_CONTROL_ERROR);
		obj_close(cur_mw, &s->h, 1);
		return;
	}
	uint32_t tail = (s->rhead + s->rlen) % s->rcap;
	size_t first = len < (size_t)(s->rcap - tail) ? len : (size_t)(s->rcap - tail);
	memcpy(s->ring + tail, data, first);
	memcpy(s->ring, data + first, len - first);
	s->rlen += (uint32_t)len;
	s->last_ms = cur_mw->w->now_ms;
	MSTAT(cur_mw, bytes_out_of_tunnel, len);
	s->bytes_out += len;
	dirty(cur_mw, &s->h);
}

static void on_stream_eof(struct hbone_conn *c, void *arg, int32_t sid, void *su)
{
	struct mstream *s = su;

	(void)c;
	(void)arg;
	(void)sid;
	if (!s)
		return;
	s->heof = 1;
	dirty(cur_mw, &s->h);
}

static void on_stream_writable(struct hbone_conn *c, void *arg, int32_t sid, void *su)
{
	struct mstream *s = su;

	(void)c;
	(void)arg;
	(void)sid;
	if (!s)
		return;
	s->blocked = 0;
	dirty(cur_mw, &s->h);
}

static void on_stream_closed(struct hbone_conn *c, void *arg, int32_t sid, void *su,
                             uint32_t h2_error)
{
	struct mstream *s = su;

	(void)c;
	(void)arg;
	(void)sid;
	if (!s)
		return;
	log_debug(
	    "event=hbone_stream_closed pod=%s sid=%d h2_error=%u state=%d refused=%d server=%d",
	    s->h.pod->w.uid, sid, h2_error, s->state, s->refused, s->server);
	/* A balanced stream that never opened (tunnel connect or handshake
	 * failed, the peer answered 503, the tunnel died): another endpoint,
	 * unless the destination's policy said no (401: deterministic). */
	if (!s->server && s->state != SS_OPEN && s->status != 401 && !s->h.closing && s->cl.used) {
		stream_attempt_failed(cur_mw, s);
		return;
	}
	s->t = NULL;
	s->sid = -1;
	s->detached = 1;
	/* A reset, a refusal or a tunnel that died before the stream opened:
	 * the plain side sees a reset too. */
	if (h2_error || s->refused || s->state != SS_OPEN) {
		MSTAT(cur_mw, stream_resets, 1);
		obj_close(cur_mw, &s->h, 1);
	}
	dirty(cur_mw, &s->h);
}

static const struct hbone_callbacks cbs = {
	.on_handshake = on_handshake,
	.on_stream_request = on_stream_request,
	.on_stream_response = on_stream_response,
	.on_stream_data = on_stream_data,
	.on_stream_eof = on_stream_eof,
	.on_stream_writable = on_stream_writable,
	.on_stream_closed = on_stream_closed,
};

/* ---- tunnels -------------------------------------------------------------- */

static struct mtun *tun_new(struct mesh_worker *mw, int role, struct pod *pod,
                            struct tls_identity *id, const char *expected)
{
	struct mtun *t = obj_new(mw, sizeof(*t), offsetof(struct mtun, rbuf), MT_TUN, pod);

	if (!t)
		return NULL;
	t->role = role;
	t->id = tls_identity_ref(id);
	if (hbone_conn_new(role, id, expected, &g.hcfg, &cbs, t, &t->hc)) {
		tls_identity_unref(t->id);
		obj_free(mw, &t->h);
		return NULL;
	}
	MSTAT(mw, tunnels_active, 1);
	if (role == HBONE_CLIENT)
		MSTAT(mw, tunnels_dialled, 1);
	else
		MSTAT(mw, tunnels_accepted, 1);
	return t;
}

static void tun_free(struct mesh_worker *mw, struct mtun *t)
{
	if (t->in_pool)
		hbone_pool_remove(mw->pool, t->hc);
	/* on_stream_closed for every stream still open: they detach */
	hbone_conn_free(t->hc);
	tls_identity_unref(t->id);
	MSTAT(mw, tunnels_active, -1);
	obj_free(mw, &t->h);
}

static void tun_step(struct mesh_worker *mw, struct mtun *t)
{
	struct io_uring_sqe *sqe;

	if (!t->h.closing) {
		size_t out;
		if (t->dead && t->in_pool) {
			hbone_pool_remove(mw->pool, t->hc);
			t->in_pool = 0;
		}
		/* out of the pool (idle, GOAWAY) and its last stream gone */
		if (t->role == HBONE_CLIENT && !t->in_pool && !t->dead &&
		    !hbone_conn_streams(t->hc)) {
			hbone_conn_goaway(t->hc, HBONE_H2_NO_ERROR);
			t->dead = 1;
		}
		out = hbone_conn_out_len(t->hc);
		if (t->connected && !t->send_err) {
			if (!t->send_inflight && out) {
				int n = hbone_conn_pending_out(t->hc, t->iov);
				memset(&t->msg, 0, sizeof(t->msg));
				t->msg.msg_iov = t->iov;
				t->msg.msg_iovlen = (size_t)n;
				sqe = msqe(mw, &t->h, M_SEND);
				io_uring_prep_sendmsg(sqe, t->h.fd, &t->msg, MSG_NOSIGNAL);
				t->send_inflight = 1;
			}
			if (!t->recv_armed && !t->dead) {
				sqe = msqe(mw, &t->h, M_RECV);
				io_uring_prep_recv(sqe, t->h.fd, t->rbuf, sizeof(t->rbuf), 0);
				t->recv_armed = 1;
			}
		}
		if ((t->dead || hbone_conn_done(t->hc)) && !t->send_inflight &&
		    (t->connected ? (t->send_err || !hbone_conn_out_len(t->hc)) : !t->h.inflight))
			obj_close(mw, &t->h, t->dead && t->send_err);
	}
	if (t->h.closing && t->h.inflight == 0 && !t->h.dirty)
		tun_free(mw, t);
}

static void tun_cqe(struct mesh_worker *mw, struct mtun *t, int sub, int res)
{
	int rc;

	switch (sub) {
	case M_CONNECT:
		if (res < 0) {
			MSTAT(mw, tunnel_connect_errors, 1);
			log_info("event=hbone_connect_failed pod=%s err=%s", t->h.pod->w.uid,
			         strerror(-res));
			t->dead = 1;
		} else {
			t->connected = 1;
		}
		break;
	case M_RECV:
		t->recv_armed = 0;
		if (t->h.closing || t->dead)
			break;
		if (res > 0)
			rc = hbone_conn_feed(t->hc, t->rbuf, (size_t)res);
		else if (res == 0 || res == -ECONNRESET)
			rc = hbone_conn_feed_eof(t->hc);
		else
			rc = -EIO;
		if (rc) {
			t->dead = 1;
			if (res < 0)
				t->send_err = 1;
		}
		break;
	case M_SEND:
		t->send_inflight = 0;
		if (res < 0) {
			t->send_err = 1;
			t->dead = 1;
		} else if (!t->h.closing) {
			hbone_conn_out_done(t->hc, (size_t)res);
		}
		break;
	default:
		break;
	}
}

/* ---- streams -------------------------------------------------------------- */

static void stream_abort(struct mesh_worker *mw, struct mstream *s)
{
	/* closing first: the reset's on_stream_closed must not retry it */
	obj_close(mw, &s->h, 1);
	if (s->t && s->sid >= 0) {
		struct mtun *t = s->t;
		hbone_stream_reset(t->hc, s->sid, HBONE_H2_CONNECT_ERROR);
		dirty(mw, &t->h);
	}
}

static void stream_step(struct mesh_worker *mw, struct mstream *s)
{
	struct mtun *t = s->t;
	struct io_uring_sqe *sqe;

	if (s->h.closing)
		goto closing;
	if (s->retry == RETRY_NOW) {
		s->retry = RETRY_NONE;
		stream_retry(mw, s);
		if (s->h.closing)
			goto closing;
		return;
	}
	if (s->retry == RETRY_WAIT)
		return;
	if (s->state == SS_CONNECTING && s->refused) {
		/* the app socket could not even be made */
		if (t)
			hbone_stream_respond(t->hc, s->sid, 503), dirty(mw, &t->h);
		MSTAT(mw, app_connect_errors, 1);
		telemetry_flow_flag(&s->tm, RF_UF, 0);
		obj_close(mw, &s->h, 1);
		goto closing;
	}
	if (s->state != SS_OPEN)
		return;
	/* plain -> tunnel */
	/* until all is taken or the engine says wait: only a 0 return promises
	 * an on_stream_writable, a short write does not */
	while (t && s->uoff < s->ulen && !s->blocked) {
		ssize_t n = hbone_stream_write(t->hc, s->sid, s->ubuf + s->uoff, s->ulen - s->uoff);
		dirty(mw, &t->h);
		if (n > 0) {
			s->uoff += (uint32_t)n;
			MSTAT(mw, bytes_into_tunnel, n);
			telemetry_flow_bytes(mw->w, &s->tm, 1, (uint64_t)n);
			s->bytes_in += (uint64_t)n;
		} else if (n == 0) {
			s->blocked = 1; /* on_stream_writable clears it */
		} else {
			stream_abort(mw, s);
			goto closing;
		}
		t = s->t; /* a callback may have detached us */
	}
	if (s->uoff == s->ulen) {
		s->uoff = s->ulen = 0;
		if (s->ueof && !s->shut_sent && t) {
			hbone_stream_shutdown(t->hc, s->sid);
			s->shut_sent = 1;
			dirty(mw, &t->h);
			t = s->t;
		} else if (!s->ueof && !s->recv_armed && !s->detached) {
			sqe = msqe(mw, &s->h, M_RECV);
			io_uring_prep_recv(sqe, s->h.fd, s->ubuf, sizeof(s->ubuf), 0);
			s->recv_armed = 1;
		}
	}
	/* tunnel -> plain */
	if (s->rlen && !s->send_inflight) {
		uint32_t n = s->rcap - s->rhead < s->rlen ? s->rcap - s->rhead : s->rlen;
		sqe = msqe(mw, &s->h, M_SEND);
		io_uring_prep_send(sqe, s->h.fd, s->ring + s->rhead, n, MSG_NOSIGNAL);
		s->send_inflight = 1;
		s->slen = n;
	}
	if (!s->rlen && !s->send_inflight && s->heof && !s->fd_shut) {
		shutdown(s->h.fd, SHUT_WR);
		s->fd_shut = 1;
	}
	/* done: the HTTP/2 stream is closed and what it brought is delivered */
	if (s->detached && !s->rlen && !s->send_inflight) {
		if (!s->fd_shut) {
			shutdown(s->h.fd, SHUT_WR);
			s->fd_shut = 1;
		}
		obj_close(mw, &s->h, 0);
	}
closing:
	/* never while queued on the dirty list: it is stepped again first */
	if (s->h.closing && s->h.inflight == 0 && s->detached && !s->h.dirty) {
		ring_put(mw, s->ring);
		MSTAT(mw, streams_active, -1);
		__atomic_fetch_sub(&s->h.pod->conns, 1, __ATOMIC_RELAXED);
		telemetry_flow_close(mw->w, &s->tm, s->h.pod);
		authz_claim_release(mw->w, &s->cl); /* after the flow: it names the service */
		obj_free(mw, &s->h);
	}
}

static void stream_cqe(struct mesh_worker *mw, struct mstream *s, int sub, int res)
{
	struct mtun *t = s->t;

	switch (sub) {
	case M_BACKOFF:
		if (s->retry == RETRY_WAIT)
			s->retry = RETRY_NOW;
		break;
	case M_CONNECT:
		if (s->h.closing || s->state != SS_CONNECTING)
			break;
		if (!t) { /* the tunnel went away meanwhile */
			obj_close(mw, &s->h, 1);
			break;
		}
		if (res < 0) {
			MSTAT(mw, app_connect_errors, 1);
			telemetry_flow_flag(&s->tm, RF_UF, res);
			log_info("event=hbone_app_connect_failed pod=%s err=%s", s->h.pod->w.uid,
			         strerror(-res));
			hbone_stream_respond(t->hc, s->sid, 503); /* closes the stream */
			obj_close(mw, &s->h, 1);
		} else {
			s->state = SS_OPEN;
			MSTAT(mw, inbound_streams, 1);
			hbone_stream_respond(t->hc, s->sid, 200);
		}
		dirty(mw, &t->h);
		break;
	case M_RECV:
		s->recv_armed = 0;
		if (s->h.closing)
			break;
		s->last_ms = mw->w->now_ms;
		if (res > 0) {
			s->ulen = (uint32_t)res;
			s->uoff = 0;
		} else if (res == 0) {
			s->ueof = 1;
		} else if (res != -ECANCELED) {
			stream_abort(mw, s);
		}
		break;
	case M_SEND:
		s->send_inflight = 0;
		if (s->h.closing)
			break;
		if (res < 0) {
			stream_abort(mw, s);
			break;
		}
		s->last_ms = mw->w->now_ms;
		s->rhead = (s->rhead + (uint32_t)res) % s->rcap;
		s->rlen -= (uint32_t)res;
		telemetry_flow_bytes(mw->w, &s->tm, 0, (uint64_t)res);
		if (t) {
			/* delivered: reopen the window by that much */
			hbone_stream_consume(t->hc, s->sid, (size_t)res);
			dirty(mw, &t->h);
		}
		if (!s->rlen) {
			/* drained: an idle stream holds no ring (back to the cache) */
			ring_put(mw, s->ring);
			s->ring = NULL;
			s->rhead = 0;
		}
		break;
	default:
		break;
	}
}

/* ---- the step loop -------------------------------------------------------- */

static void run_dirty(struct mesh_worker *mw)
{
	while (mw->dirty) {
		struct mobj *o = mw->dirty;
		mw->dirty = o->dnext;
		o->dirty = 0;
		o->dnext = NULL;
		if (o->type == MT_TUN)
			tun_step(mw, (struct mtun *)o);
		else
			stream_step(mw, (struct mstream *)o);
	}
}

void mesh_on_cqe(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct mesh_worker *mw = w->mesh;
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	uint32_t idx = ud_idx(ud);
	struct mobj *o;

	if (!mw || idx >= mw->cap || !(o = mw->tab[idx]) || o->gen != ud_gen(ud)) {
		log_err("event=stray_mesh_completion worker=%u idx=%u", w->id, idx);
		return;
	}
	cur_mw = mw;
	o->inflight--;
	if (o->type == MT_TUN)
		tun_cqe(mw, (struct mtun *)o, (int)ud_side(ud), cqe->res);
	else
		stream_cqe(mw, (struct mstream *)o, (int)ud_side(ud), cqe->res);
	dirty(mw, o);
	run_dirty(mw);
}

/* ---- new connections ------------------------------------------------------ */

static void close_rst(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

int mesh_accept_hbone(struct worker *w, struct pod *pod, int cfd)
{
	struct mesh_worker *mw;
	struct tls_identity *id;
	struct mtun *t;
	int one = 1;

	if (!g.enabled || !(mw = mw_of(w)))
		return -ENOTSUP;
	cur_mw = mw;
	id = identity_get(g.ic, pod->w.ns, pod->w.sa[0] ? pod->w.sa : "default");
	if (!id)
		return -ENOENT;
	t = tun_new(mw, HBONE_SERVER, pod, id, NULL);
	tls_identity_unref(id);
	if (!t) {
		close_rst(cfd);
		return 0;
	}
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	t->h.fd = cfd;
	t->connected = 1;
	dirty(mw, &t->h);
	run_dirty(mw);
	return 0;
}

/* A pooled tunnel from @pod (identity @src) to @dst_pod, or a new one. */
static struct mtun *tunnel_for(struct mesh_worker *mw, struct pod *pod, struct tls_identity *src,
                               const char *dst_id, const struct sockaddr_storage *dst)
{
	struct sockaddr_storage ta;
	socklen_t tl;
	void *user = NULL;
	struct mtun *t;
	int fd;

	memset(&ta, 0, sizeof(ta));
	if (dst->ss_family == AF_INET) {
		memcpy(&ta, dst, sizeof(struct sockaddr_in));
		((struct sockaddr_in *)&ta)->sin_port = htons(g.port_hbone);
		tl = sizeof(struct sockaddr_in);
	} else {
		memcpy(&ta, dst, sizeof(struct sockaddr_in6));
		((struct sockaddr_in6 *)&ta)->sin6_port = htons(g.port_hbone);
		tl = sizeof(struct sockaddr_in6);
	}
	if (hbone_pool_pick(mw->pool, src, dst_id, (struct sockaddr *)&ta, tl, &user))
		return user;
	/* dialled from the source pod's netns: its own address, its routes */
	fd = proxy_socket(mw, pod, ta.ss_family);
	if (fd < 0)
		return NULL;
	t = tun_new(mw, HBONE_CLIENT, pod, src, dst_id);
	if (!t) {
		close(fd);
		return NULL;
	}
	t->h.fd = fd;
	t->dst = ta;
	t->dst_len = tl;
	if (hbone_pool_add(mw->pool, src, dst_id, (struct sockaddr *)&t->dst, tl, t->hc, t) == 0)
		t->in_pool = 1;
	submit_connect(mw, &t->h, (struct sockaddr *)&t->dst, tl);
	return t;
}

/* Is @dst a mesh workload other than @pod?  Its SPIFFE ID into @dst_id: 0,
 * else -ENOENT (plain passthrough). */
static int mesh_dst(struct worker *w, struct pod *pod, const struct sockaddr_storage *dst,
                    char *dst_id, size_t len)
{
	struct pod *upod = inpod_lookup_addr(w->inpod, (const struct sockaddr *)dst);
	int rc = -ENOENT;

	if (!upod)
		return -ENOENT;
	if (upod->id != pod->id &&
	    identity_spiffe_id(g.ic, upod->w.ns, upod->w.sa[0] ? upod->w.sa : "default", dst_id,
	                       len) == 0)
		rc = 0;
	pod_put(upod);
	return rc;
}

/* W3C baggage with the source workload's metadata, so the destination
 * side can log (and label) who called without a registry lookup. */
static size_t pod_baggage(const struct pod *pod, char *bag, size_t len)
{
	struct al_baggage bg;

	memset(&bg, 0, sizeof(bg));
	al_str(bg.ns, sizeof(bg.ns), pod->w.ns);
	al_str(bg.workload, sizeof(bg.workload), pod->w.name);
	al_str(bg.workload_type, sizeof(bg.workload_type), "pod");
	for (unsigned i = 0; i < pod->w.n_labels && i < WL_MAX_LABELS; i++) {
		if (strcmp(pod->w.labels[i].key, "app") == 0)
			al_str(bg.service, sizeof(bg.service), pod->w.labels[i].val);
		else if (strcmp(pod->w.labels[i].key, "version") == 0)
			al_str(bg.version, sizeof(bg.version), pod->w.labels[i].val);
	}
	return al_baggage_build(&bg, bag, len);
}

/* Open client stream @s's CONNECT to s->dst (a workload whose identity is
 * @dst_id) on a pooled or new tunnel from its pod, and start its telemetry
 * flow.  0, or -errno with @s not attached. */
static int stream_connect(struct mesh_worker *mw, struct mstream *s, const char *dst_id)
{
	char authority[80], fwd[96], peer[64], bag[AL_BAGGAGE_BUILD_MAX];
	struct pod *pod = s->h.pod;
	struct sockaddr_storage cl;
	socklen_t cll = sizeof(cl);
	struct tls_identity *src;
	const char *sns, *sname;
	struct mtun *t;
	size_t bagl;
	int32_t sid;

	bagl = pod_baggage(pod, bag, sizeof(bag));
	services_ticket_names(&s->cl.t, &sns, &sname);
	telemetry_flow_open(mw->w, &s->tm, pod, 0, s->h.fd, &s->dst, dst_id, sns, sname);
	telemetry_flow_trace(&s->tm, s->tp, bagl ? bag : NULL); /* the log joins the two hops */
	src = identity_get(g.ic, pod->w.ns, pod->w.sa[0] ? pod->w.sa : "default");
	if (!src) {
		/* never downgrade a mesh destination to plaintext */
		MSTAT(mw, no_identity, 1);
		return -ENOKEY;
	}
	t = tunnel_for(mw, pod, src, dst_id, &s->dst);
	tls_identity_unref(src);
	if (!t)
		return -ENOMEM;
	addr_fmt(&s->dst, authority, sizeof(authority));
	if (getpeername(s->h.fd, (struct sockaddr *)&cl, &cll) == 0)
		addr_fmt(&cl, peer, sizeof(peer));
	else
		snprintf(peer, sizeof(peer), "unknown");
	snprintf(fwd, sizeof(fwd), "for=\"%s\"", peer);
	struct hbone_header hdrs[3] = { { "forwarded", fwd },
		                        { "traceparent", s->tp },
		                        { "baggage", bag } };
	dirty(mw, &t->h);
	if (hbone_stream_open(t->hc, authority, hdrs, bagl ? 3 : 2, s, &sid))
		return -EIO;
	s->t = t;
	s->sid = sid;
	s->detached = 0;
	s->state = SS_WAIT_RESP;
	s->status = 0;
	s->refused = 0;
	return 0;
}

/* An attempt of client stream @s failed before it opened (never from a
 * state that freed anything).  A balanced stream goes on to another
 * endpoint after its backoff, within the service's retries; anything else
 * is over: the client gets a reset. */
static void stream_attempt_failed(struct mesh_worker *mw, struct mstream *s)
{
	struct sockaddr_storage dst;
	unsigned backoff;

	s->t = NULL;
	s->sid = -1;
	s->detached = 1;
	if (!(s->tm.rflags & RF__ALL))
		telemetry_flow_flag(&s->tm, RF_UF, 0);
	if (!s->h.closing && s->cl.used && !__atomic_load_n(&s->h.pod->deleted, __ATOMIC_RELAXED) &&
	    authz_claim_failed(mw->w, &s->cl, &dst, &backoff)) {
		memcpy(&s->dst, &dst, sizeof(dst));
		if (backoff) {
			s->bo.tv_sec = backoff / 1000;
			s->bo.tv_nsec = (long long)(backoff % 1000) * 1000000;
			io_uring_prep_timeout(msqe(mw, &s->h, M_BACKOFF), &s->bo, 0, 0);
			s->retry = RETRY_WAIT;
		} else {
			s->retry = RETRY_NOW;
		}
		dirty(mw, &s->h);
		return;
	}
	if (s->cl.attempt)
		telemetry_flow_flag(&s->tm, RF_URX, 0);
	MSTAT(mw, stream_resets, 1);
	obj_close(mw, &s->h, 1);
}

/* The next attempt of a balanced stream, from its step (s->dst is the new
 * endpoint): the failed attempt's flow is closed (its own access log line,
 * flagged UF) and a new one opened towards the new endpoint. */
static void stream_retry(struct mesh_worker *mw, struct mstream *s)
{
	char dst_id[ID_MAX];

	telemetry_flow_close(mw->w, &s->tm, s->h.pod);
	MSTAT(mw, stream_retries, 1);
	if (mesh_dst(mw->w, s->h.pod, &s->dst, dst_id, sizeof(dst_id))) {
		/* picked an endpoint without a mesh identity: not for this
		 * stream (a mesh client never downgrades to plaintext) */
		const char *sns, *sname;
		services_ticket_names(&s->cl.t, &sns, &sname);
		telemetry_flow_open(mw->w, &s->tm, s->h.pod, 0, s->h.fd, &s->dst, NULL, sns, sname);
		stream_attempt_failed(mw, s);
		return;
	}
	if (stream_connect(mw, s, dst_id))
		stream_attempt_failed(mw, s);
}

int mesh_outbound(struct worker *w, struct pod *pod, int cfd, const struct sockaddr_storage *dst,
                  struct svc_claim *cl)
{
	char dst_id[ID_MAX];
	struct mesh_worker *mw;
	struct mstream *s;
	int one = 1;

	if (!g.enabled || !w->inpod)
		return -ENOENT;
	if (mesh_dst(w, pod, dst, dst_id, sizeof(dst_id)) || !(mw = mw_of(w)))
		goto plain;
	cur_mw = mw;
	if (g.local_fast_path) {
		/* Both ends are pods of this node and this process holds both
		 * identities: a tunnel from us to us would prove nothing the
		 * capture did not.  conn.c joins the two sockets directly and
		 * judges the destination's policy with the source's principal
		 * (the source must have its SVID, as for a tunnel). */
		struct tls_identity *src =
		    identity_get(g.ic, pod->w.ns, pod->w.sa[0] ? pod->w.sa : "default");
		if (src) {
			tls_identity_unref(src);
			MSTAT(mw, local_fast_path, 1);
			return -EXDEV;
		}
	}
	MSTAT(mw, outbound_hbone, 1);
	s = obj_new(mw, sizeof(*s), offsetof(struct mstream, ubuf), MT_STREAM, pod);
	if (!s) {
		if (cl)
			authz_claim_release(w, cl);
		close_rst(cfd);
		return 0;
	}
	MSTAT(mw, streams_active, 1);
	s->last_ms = s->start_ms = mw->w->now_ms;
	__atomic_fetch_add(&s->h.pod->conns, 1, __ATOMIC_RELAXED); /* /workloads */
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->h.fd = cfd;
	s->state = SS_WAIT_RESP;
	s->sid = -1;
	s->detached = 1; /* until stream_connect attached it */
	memcpy(&s->dst, dst,
	       dst->ss_family == AF_INET ? sizeof(struct sockaddr_in)
	                                 : sizeof(struct sockaddr_in6));
	if (cl && cl->used) {
		s->cl = *cl; /* the stream owns the service claim now */
		cl->used = 0;
	}
	snprintf(s->tp, sizeof(s->tp), "00-%016llx%016llx-%016llx-01", (unsigned long long)rnd(mw),
	         (unsigned long long)rnd(mw), (unsigned long long)(rnd(mw) | 1));
	if (stream_connect(mw, s, dst_id))
		stream_attempt_failed(mw, s);
	run_dirty(mw);
	return 0;
plain:
	/* Counted in the worker's stats slot, which exists whether or not
	 * this worker has dialled a tunnel yet (w->mesh is created lazily). */
	{
		struct mstats *st = &g.st[w->id % POD_MAX_WORKERS];

		__atomic_store_n(&st->outbound_plain, st->outbound_plain + 1, __ATOMIC_RELAXED);
	}
	return -ENOENT;
}

/* ---- timer, deletion, shutdown -------------------------------------------- */

static void expire_cb(void *arg, struct hbone_conn *c, void *user)
{
	struct mesh_worker *mw = arg;
	struct mtun *t = user;

	(void)c;
	t->in_pool = 0; /* the pool forgot it already; tun_step closes it */
	dirty(mw, &t->h);
}

static void drain_deadlines(struct mesh_worker *mw);

/* [timeouts] idle for tunnelled connections, as conn.c does for plain ones
 * (scanned once a second: the deadline is coarse anyway). */
static void close_idle(struct mesh_worker *mw, uint64_t now, unsigned idle_ms)
{
	for (uint32_t i = 0; i < mw->hwm; i++) {
		struct mobj *o = mw->tab[i];
		struct mstream *s = (struct mstream *)o;
		if (!o || o->closing || o->type != MT_STREAM || s->state != SS_OPEN)
			continue;
		if (now - s->last_ms >= idle_ms) {
			STAT_ADD(mw->w, idle_timeouts, 1);
			stream_abort(mw, s);
		}
	}
	run_dirty(mw);
}

void mesh_tick(struct worker *w)
{
	struct mesh_worker *mw = w->mesh;

	if (!mw)
		return;
	cur_mw = mw;
	hbone_pool_expire(mw->pool, w->now_ms, w->cfg.mesh_pool_idle_ms, expire_cb, mw);
	run_dirty(mw);
	if (mw->draining)
		drain_deadlines(mw);
	if (w->cfg.idle_ms && w->now_ms - mw->idle_scan_ms >= 1000) {
		mw->idle_scan_ms = w->now_ms;
		close_idle(mw, w->now_ms, w->cfg.idle_ms);
	}
	/* gauges for /stats, refreshed per tick: the pool walk is not free
	 * (1% of a bulk transfer's CPU when done per completion) */
	__atomic_store_n(&mw->st->pool_conns, hbone_pool_conns(mw->pool), __ATOMIC_RELAXED);
	__atomic_store_n(&mw->st->pool_streams, hbone_pool_streams(mw->pool), __ATOMIC_RELAXED);
}

/* Pod deleted (or shutdown, @pod NULL): no new streams on its tunnels
 * (GOAWAY, out of the pool), open streams go on until @drain_ms, then they
 * are reset - as conn.c drains plain connections. */
static void drain_where(struct mesh_worker *mw, struct pod *pod, unsigned drain_ms)
{
	uint64_t now = mw->w->now_ms;

	for (uint32_t i = 0; i < mw->hwm; i++) {
		struct mobj *o = mw->tab[i];
		if (!o || o->closing || (pod && o->pod != pod))
			continue;
		if (!o->drain_at) {
			o->drain_at = now + drain_ms;
			mw->draining++;
		}
		if (o->type == MT_TUN) {
			struct mtun *t = (struct mtun *)o;
			if (t->in_pool) {
				hbone_pool_remove(mw->pool, t->hc);
				t->in_pool = 0;
			}
			hbone_conn_goaway(t->hc, HBONE_H2_NO_ERROR);
		}
		dirty(mw, o);
	}
	run_dirty(mw);
}

static void drain_deadlines(struct mesh_worker *mw)
{
	uint64_t now = mw->w->now_ms;
	unsigned left = 0;

	for (uint32_t i = 0; i < mw->hwm; i++) {
		struct mobj *o = mw->tab[i];
		if (!o || !o->drain_at || o->closing)
			continue;
		if (now < o->drain_at) {
			left++;
			continue;
		}
		if (o->type == MT_TUN) {
			((struct mtun *)o)->dead = 1;
			obj_close(mw, o, 1);
		} else {
			stream_abort(mw, (struct mstream *)o);
		}
	}
	mw->draining = left;
	run_dirty(mw);
}

/* Policies changed (authz.c): server streams whose peer the new set denies
 * are reset; the tunnel and its other streams stay. */
void mesh_reauthorize(struct worker *w)
{
	struct mesh_worker *mw = w->mesh;

	if (!mw)
		return;
	cur_mw = mw;
	for (uint32_t i = 0; i < mw->hwm; i++) {
		struct mobj *o = mw->tab[i];
		struct mstream *s = (struct mstream *)o;
		if (!o || o->closing || o->type != MT_STREAM || !s->server || !s->t)
			continue;
		if (authz_hbone_recheck(w, o->pod, hbone_conn_peer_id(s->t->hc), s->t->h.fd,
		                        ss_port(&s->dst)))
			stream_abort(mw, s);
	}
	run_dirty(mw);
}

void mesh_del_pod(struct worker *w, struct pod *pod)
{
	if (w->mesh) {
		cur_mw = w->mesh;
		drain_where(w->mesh, pod, w->cfg.drain_ms);
	}
}

void mesh_stop(struct worker *w)
{
	if (w->mesh) {
		cur_mw = w->mesh;
		drain_where(w->mesh, NULL, w->cfg.drain_ms);
	}
}

size_t mesh_dump(struct worker *w, struct conn_info *out, size_t max)
{
	struct mesh_worker *mw = w->mesh;
	size_t n = 0;

	for (uint32_t i = 0; mw && i < mw->hwm && n < max; i++) {
		struct mobj *o = mw->tab[i];
		struct mstream *s = (struct mstream *)o;
		struct conn_info *ci = &out[n];
		socklen_t len = sizeof(ci->src);
		if (!o || o->type != MT_STREAM)
			continue;
		memset(ci, 0, sizeof(*ci));
		ci->pod_id = o->pod->id;
		snprintf(ci->uid, sizeof(ci->uid), "%s", o->pod->w.uid);
		/* a client stream is the pod's outbound connection; a server
		 * stream shows as "hbone", its source the tunnel's peer */
		ci->kind = s->server ? LK_HBONE : LK_OUTBOUND;
		ci->state = o->closing ? CS_CLOSING : s->state == SS_OPEN ? CS_OPEN : CS_CONNECTING;
		ci->age_ms = w->now_ms - s->start_ms;
		ci->idle_ms = w->now_ms - s->last_ms;
		ci->bytes_down_up = s->server ? s->bytes_out : s->bytes_in;
		ci->bytes_up_down = s->server ? s->bytes_in : s->bytes_out;
		if (!s->server && o->fd >= 0)
			getpeername(o->fd, (struct sockaddr *)&ci->src, &len);
		else if (s->server && s->t && s->t->h.fd >= 0)
			getpeername(s->t->h.fd, (struct sockaddr *)&ci->src, &len);
		memcpy(&ci->dst, &s->dst,
		       s->dst.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
		                                    : sizeof(struct sockaddr_in));
		ci->worker = w->id;
		n++;
	}
	return n;
}

int mesh_busy(struct worker *w)
{
	return w->mesh && w->mesh->live;
}

void mesh_worker_free(struct worker *w)
{
	struct mesh_worker *mw = w->mesh;

	if (!mw)
		return;
	/* Only after the ring is gone: nothing can complete any more. */
	cur_mw = mw;
	for (uint32_t i = 0; i < mw->hwm; i++) {
		struct mobj *o = mw->tab[i];
		if (o && o->type == MT_TUN) {
			((struct mtun *)o)->in_pool = 0;
			tun_free(mw, (struct mtun *)o);
		}
	}
	for (uint32_t i = 0; i < mw->hwm; i++) {
		struct mobj *o = mw->tab[i];
		if (o) {
			free(((struct mstream *)o)->ring);
			obj_free(mw, o);
		}
	}
	while (mw->n_rings)
		free(mw->rings[--mw->n_rings]);
	hbone_pool_free(mw->pool);
	free(mw->tab);
	free(mw->gens);
	free(mw->free_stack);
	free(mw);
	w->mesh = NULL;
}
