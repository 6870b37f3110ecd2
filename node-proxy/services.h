/*
 * services: virtual IPs balanced over the workloads a label selector picks,
 * with the resilience state each service needs (circuit breaker counts,
 * per-endpoint active requests, consecutive failures, ejection, health).
 *
 * A service_set is loaded from a directory of INI files, immutable and
 * reference counted like a policy_set.  The mutable runtime state of a
 * service (struct svc_state) is separate: atomics, shared by the sets of
 * successive reloads (services_adopt_state) so that a reload neither resets
 * ejections nor loses count of open connections.  Lookups are lock-free;
 * picking an endpoint takes the service's own mutex for a few microseconds
 * (once per new connection, never per packet).
 */
#ifndef AMBIT_NP_SERVICES_H
#define AMBIT_NP_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node-proxy/confdir.h"
#include "node-proxy/workload.h"

#define SVC_MAX_SERVICES  1024
#define SVC_MAX_VIPS      4
#define SVC_MAX_PORTS     16
#define SVC_MAX_ENDPOINTS 256 /* endpoints tracked (and balanced over) per service */
#define SVC_MAX_RETRIES   5
#define SVC_WEIGHT_LABEL  "ambit.dev/weight" /* 1..1000, default 1 */
#define SVC_MAX_WEIGHT    1000

struct service_set;
struct svc_state;
struct svc_endpoint;

enum svc_lb { SVC_LB_LEAST_REQUEST, SVC_LB_RANDOM };
enum svc_hc_kind { SVC_HC_NONE, SVC_HC_TCP, SVC_HC_HTTP };

struct svc_port_map {
	uint16_t port;   /* what clients connect to on the VIP */
	uint16_t target; /* what the endpoint listens on */
};

struct svc_health_check {
	enum svc_hc_kind kind;
	uint16_t port;  /* on the endpoint */
	char path[128]; /* SVC_HC_HTTP: GET PATH, 2xx is healthy */
	unsigned interval_ms;
};

/* One [service]: read-only for everyone but the loader. */
struct service {
	char ns[WL_NAME_MAX];
	char name[WL_NAME_MAX];
	char id[2 * WL_NAME_MAX]; /* "ns/name" */
	char where[320];          /* "file:line" of its header */
	unsigned n_vips;
	struct wl_ip vips[SVC_MAX_VIPS];
	unsigned n_ports;
	struct svc_port_map ports[SVC_MAX_PORTS];
	struct selector *sel;
	enum svc_lb lb;
	char weight_label[WL_LABEL_KEY_MAX];
	unsigned connect_timeout_ms;           /* default 1000 */
	unsigned max_connections;              /* open + connecting; default 1024 */
	unsigned max_pending;                  /* connecting; default 1024 */
	unsigned retries;                      /* extra connect attempts; default 2 */
	unsigned retry_backoff_ms;             /* before attempt n: n * this; default 25 */
	unsigned outlier_consecutive_failures; /* 0: never eject; default 5 */
	unsigned outlier_ejection_ms;          /* default 10000 */
	struct svc_health_check hc;            /* kind NONE unless configured */
	struct svc_state *state;
};

/* Load every *.ini of @dir / one buffer: as policy_load_dir(). */
int services_load_dir(const char *dir, struct service_set **out, struct conf_errors *err);
int services_load_buf(const char *file, const char *buf, size_t len, struct service_set **out,
                      struct conf_errors *err);
struct service_set *services_set_get(struct service_set *ss); /* NULL-safe */
void services_set_put(struct service_set *ss);                /* NULL-safe */
unsigned services_count(const struct service_set *ss);
const struct service *services_at(const struct service_set *ss, unsigned i);

/* Give the services of @next the runtime state of the same-named services
 * of @prev (counts, ejections carry over).  Call before publishing @next. */
void services_adopt_state(struct service_set *next, const struct service_set *prev);

/* The service owning @vip with service port @port, or NULL; *@target is
 * the endpoint's port.  Lock-free, no allocation. */
const struct service *services_lookup(const struct service_set *ss, const struct wl_ip *vip,
                                      uint16_t port, uint16_t *target);
/* Is @w an endpoint of @svc (namespace and selector)? */
bool services_selects(const struct service *svc, const struct workload *w);

/* --- circuit breaking --------------------------------------------------- */

enum svc_refusal { SVC_OK, SVC_REFUSED_MAX_CONNECTIONS, SVC_REFUSED_MAX_PENDING };

/* One connection's claim on its service.  Holds a reference on the state,
 * so it stays valid across reloads and removal of the service. */
struct svc_ticket {
	struct svc_state *st;
	bool pending;
	enum svc_refusal refused;
};

/* Claim a connection and a pending connect.  0, or -EBUSY with the reason
 * in t->refused (counted; the ticket holds nothing then). */
int services_acquire(const struct service *svc, struct svc_ticket *t);
/* The connect succeeded: no longer pending. */
void services_connected(struct svc_ticket *t);
/* The connection is over (or was never made).  Idempotent. */
void services_release(struct svc_ticket *t);
const char *services_refusal_str(enum svc_refusal r);
/* The claimed service's namespace and name (NULL when @t holds nothing);
 * valid while @t is held. */
void services_ticket_names(const struct svc_ticket *t, const char **ns, const char **name);

/* --- endpoint choice ---------------------------------------------------- */

/* Endpoints already tried by this connection, skipped by the next pick. */
struct svc_tried {
	unsigned n;
	const struct svc_endpoint *ep[SVC_MAX_RETRIES + 1];
};

struct svc_pick {
	struct svc_endpoint *ep;   /* pass to services_report / services_done */
	const struct workload *wl; /* one of the caller's @wls */
	bool panic;                /* every endpoint was ejected or unhealthy */
};

/*
 * Choose an endpoint of @svc among *@wls[0..n) (the workloads known now;
 * pointers, so a caller can point into its own records, e.g. &entry.w),
 * skipping @tried (may be NULL) and, unless none is left, ejected and
 * unhealthy ones.  least_request: fewest active requests per weight, ties
 * broken at random; random: weighted random.  On success the endpoint's
 * active count is raised (services_done lowers it), it is added to @tried,
 * and 0 is returned; -EHOSTUNREACH if no endpoint is left.  @now_ms is a
 * CLOCK_MONOTONIC time in milliseconds.
 */
int services_pick(const struct service *svc, const struct workload *const *wls, size_t n,
                  struct svc_tried *tried, uint64_t now_ms, struct svc_pick *out);
/* The outcome of a connect to @ep: a failure counts towards ejection, a
 * success resets the count. */
void services_report(struct svc_endpoint *ep, bool success, uint64_t now_ms);
/* The request on @ep is over (after services_report, if any). */
void services_done(struct svc_endpoint *ep);
/* Result of an active health check of @w for @svc. */
void services_set_health(const struct service *svc, const struct workload *w, bool healthy);

struct svc_stats {
	unsigned active_connections, pending;
	uint64_t refused_connections, refused_pending, no_endpoint, panics, ejections;
	unsigned endpoints, ejected_now, unhealthy_now;
};
void services_stats(const struct service *svc, uint64_t now_ms, struct svc_stats *st);
/* Active requests and ejection of endpoint @w of @svc (for tests, admin). */
int services_endpoint_info(const struct service *svc, const struct workload *w, uint64_t now_ms,
                           unsigned *active, bool *ejected);

#endif
