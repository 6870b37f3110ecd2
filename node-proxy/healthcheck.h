/*
 * healthcheck: active health checks of service endpoints, as configured by
 * a service's health_check key (tcp:PORT or http:/PATH:PORT), with the
 * results fed to services_set_health() so balancing skips failing ones.
 *
 * Pollable, no thread of its own: the owner polls healthcheck_fd() and
 * calls healthcheck_run() when it is readable or when the time it returned
 * has passed.  Sockets come from a caller-supplied function, because the
 * data plane knows in which network namespace and with which socket mark
 * an endpoint's app is reachable without being captured again.
 * An endpoint turns unhealthy after HC_UNHEALTHY_AFTER failed checks in a
 * row and healthy again after one good check.
 */
#ifndef AMBIT_NP_HEALTHCHECK_H
#define AMBIT_NP_HEALTHCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "node-proxy/services.h"

#define HC_MAX_PROBES      1024 /* (service, endpoint) pairs checked */
#define HC_UNHEALTHY_AFTER 2

struct healthcheck;

/* Return a new non-blocking stream socket of @family from which @w's app
 * is reachable, or -errno.  The checker connects, and closes it. */
typedef int (*hc_socket_fn)(void *arg, const struct workload *w, int family);

/* @fn NULL: a plain socket() in the caller's namespace.  0 or -errno. */
int healthcheck_open(hc_socket_fn fn, void *arg, struct healthcheck **out);
void healthcheck_close(struct healthcheck *hc);
int healthcheck_fd(const struct healthcheck *hc);

/*
 * Progress the checks in flight, and start those due, for every service of
 * @ss with a health_check and each of its endpoints among *@wls[0..n).
 * Probes of endpoints or services no longer present are dropped.  Returns
 * the milliseconds until it wants to run again (at most 1000).
 */
int healthcheck_run(struct healthcheck *hc, const struct service_set *ss,
                    const struct workload *const *wls, size_t n, uint64_t now_ms);

struct hc_stats {
	unsigned probes;     /* (service, endpoint) pairs tracked */
	uint64_t ok, failed; /* checks completed */
};
void healthcheck_stats(const struct healthcheck *hc, struct hc_stats *st);

/* The status of an HTTP response head in @buf: 100..599, 0 if more bytes
 * are needed, -EPROTO if it is not HTTP.  (Exposed for tests.) */
int healthcheck_http_status(const char *buf, size_t len);

#endif
