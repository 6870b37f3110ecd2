/*
 * telemetry: node-proxy's glue between the data plane and the
 * observability core (metrics.h, accesslog.h).
 *
 * It owns the process-wide set-up of metrics and the access log from the
 * [telemetry] config, the collectors that export counters kept elsewhere
 * (worker stats, workloads enrolled, HBONE handshakes) and, per worker, a
 * side table parallel to the connection pool (indexed by conn slot) that
 * holds each connection's Istio series ids, response flags and the remote
 * workload.  The data plane calls one function per event: open (labels
 * interned once, from the workloads involved), bytes relayed, a failure
 * flag, close (counters and one access log line per reporter).  The hooks
 * run on the worker's own thread, never block and never allocate.
 *
 * A same-node shortcut connection is both the source and the destination
 * side of one client connection, so it counts under both reporters.
 * All hooks are no-ops before telemetry_init (unit tests, tools).
 */
#ifndef AMBIT_NP_TELEMETRY_H
#define AMBIT_NP_TELEMETRY_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "node-proxy/metrics.h" /* RF_* response flags for telemetry_conn_flag */

struct conn;
struct inpod;
struct np_config;
struct pod;
struct worker;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Metrics registry and access log from @cfg, for @n_workers workers.
 * 0 or -errno (logged). */
int telemetry_init(const struct np_config *cfg, unsigned n_workers);
/* Export the workers' counters and the enrolled pods (not owned; must
 * outlive telemetry_fini). */
void telemetry_attach(struct worker **workers, unsigned n_workers, struct inpod *ip);
/* SIGHUP: reopen the access log file (rotation). */
void telemetry_reopen(void);
/* After the workers stopped: write what is queued, free everything. */
void telemetry_fini(void);

/* Admin: serve one request on the metrics port (GET /metrics), @fd
 * non-blocking, not closed here. */
void telemetry_serve_metrics(int fd);
/* Admin: /logging?access_log=on|off&sample=N&level=debug|info|warn|error.
 * Returns the HTTP status (200, 400) with a one-line text in @msg. */
int telemetry_logging(const char *query, char *msg, size_t msglen);

/* Worker hooks (the worker's own thread). */
/* @c's labels are known: fds, pods and original destination are set. */
void telemetry_conn_open(struct worker *w, struct conn *c);
/* @n bytes of direction @s (0: client -> server, 1: back) were sent. */
void telemetry_conn_bytes(struct worker *w, struct conn *c, unsigned s, uint64_t n);
/* Why @c is ending (RF_* of metrics.h), @err an errno or 0. */
void telemetry_conn_flag(struct worker *w, struct conn *c, uint32_t rflags, int err);
/* @c is being released: closed counters and the access log line. */
void telemetry_conn_close(struct worker *w, struct conn *c);
/* A connection refused before it had a conn slot (@rflags: RF_DENY,
 * RF_UO, RF_NR): opened and closed at once, plus its access log line.
 * @kind the listener kind of @pod, @upod the local destination of a
 * same-node shortcut (both reporters) or NULL, @cfd the accepted socket,
 * @dst its original destination (NULL unknown). */
void telemetry_refused(struct worker *w, struct pod *pod, struct pod *upod, int kind, int cfd,
                       const struct sockaddr_storage *dst, uint32_t rflags);

/* An HBONE stream (mesh.c) is not a conn slot: its telemetry is embedded
 * in the stream object and zeroed with it.  No pod reference is kept: the
 * remote workload's name is copied at open. */
struct tm_flow {
	uint32_t series, rflags;
	int err;
	uint8_t open, inbound;
	uint64_t start_ms, up, down; /* client -> server, server -> client */
	struct sockaddr_in6 src, dst;
	char peer_name[64], peer_ns[64];    /* "" unknown (not enrolled on this node) */
	char peer_id[160];                  /* the SPIFFE ID the handshake proved */
	char traceparent[64], baggage[256]; /* W3C trace context sent / received */
	const char *svc_ns, *svc_name;      /* a VIP's service: held by the stream's claim */
};
/* @pod's stream opened: outbound (@inbound 0: @fd the client socket, @dst
 * its original destination, @peer_id the destination's ID) or inbound
 * (@fd the tunnel socket, @dst the CONNECT authority, @peer_id the
 * client's ID).  connection_security_policy mutual_tls. */
void telemetry_flow_open(struct worker *w, struct tm_flow *f, struct pod *pod, int inbound, int fd,
                         const struct sockaddr_storage *dst, const char *peer_id,
                         const char *svc_ns, const char *svc_name);
/* The W3C trace context the CONNECT carried (NULL: none), for the log. */
void telemetry_flow_trace(struct tm_flow *f, const char *traceparent, const char *baggage);
/* @n plain bytes written into (@to_tunnel 1) or delivered out of the tunnel. */
void telemetry_flow_bytes(struct worker *w, struct tm_flow *f, int to_tunnel, uint64_t n);
void telemetry_flow_flag(struct tm_flow *f, uint32_t rflags, int err);
/* The stream is freed (@pod its pod): closed counters, access log line. */
void telemetry_flow_close(struct worker *w, struct tm_flow *f, struct pod *pod);
/* A CONNECT refused before a stream existed (401 by policy). */
void telemetry_flow_refused(struct worker *w, struct pod *pod, int tfd,
                            const struct sockaddr_storage *dst, const char *peer_id,
                            uint32_t rflags);

#endif
