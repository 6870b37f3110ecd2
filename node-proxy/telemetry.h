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

#endif
