/*
 * metrics: node-proxy's Prometheus metrics, Istio-compatible TCP metrics
 * plus the proxy's own, rendered in text exposition format 0.0.4.
 *
 * Istio's TCP metrics are per "series" (one Istio label set).  A label set
 * is interned once per connection, off the packet path, into a small
 * integer id in a bounded table; when the table is full every further new
 * label set shares one overflow series and a dropped counter grows, so
 * memory never depends on traffic.  Counting is per worker: each worker
 * owns a shard, a plain uint64 array indexed by series id that only that
 * worker writes (relaxed atomic store, no lock, no read-modify-write bus
 * lock); the scraper sums shards with relaxed loads, which are torn-free
 * for aligned 64-bit words.
 *
 * The proxy's own metrics are families registered by name with HELP/TYPE
 * and up to METRICS_MAX_LABELS label names; each label-value combination
 * (a "child", bounded per family) gets a slot counted the same way, or a
 * collector callback emits samples at scrape time.  metrics_init registers
 * the standard families (enum metrics_std) and the process_* metrics.
 *
 * Threads: metrics_init/fini single-threaded; metrics_series, metrics_child,
 * metrics_*_register and metrics_render from any thread; the inline adds
 * only from the shard's own worker; metrics_ctr_add_any from any thread.
 */
#ifndef AMBIT_NP_METRICS_H
#define AMBIT_NP_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_MAX_LABELS      4    /* per own family */
#define METRICS_MAX_CHILDREN    256  /* per own family, then its overflow child */
#define METRICS_MAX_SLOTS       8192 /* own-family children in all */
#define METRICS_LABEL_MAX       256  /* bytes kept of a label value */
#define METRICS_SERIES_OVERFLOW 0u   /* the id every label set gets once the table is full */
#define METRICS_DEFAULT_SERIES  4096

/* Istio TCP counters, per series. */
enum metrics_tcp {
	MT_OPENED = 0,     /* istio_tcp_connections_opened_total */
	MT_CLOSED,         /* istio_tcp_connections_closed_total */
	MT_SENT_BYTES,     /* istio_tcp_sent_bytes_total: response direction, server -> client */
	MT_RECEIVED_BYTES, /* istio_tcp_received_bytes_total: request direction, client -> server */
	MT_FAILED,         /* istio_tcp_connections_failed_total */
	MT__COUNT
};

enum metrics_reporter { METRICS_REPORTER_SOURCE = 0, METRICS_REPORTER_DESTINATION };

/* connection_security_policy */
enum metrics_security { METRICS_SEC_UNKNOWN = 0, METRICS_SEC_MUTUAL_TLS, METRICS_SEC_NONE };

/* response_flags, Envoy's spelling (rendered comma-separated in this
 * order, "-" when none).  ztunnel's "DENY" for an L4 policy denial is kept;
 * its "CONNECT" is Envoy's UF. */
enum metrics_rflag {
	RF_UF = 1u << 0,   /* upstream connect failed (refused, reset, timeout) */
	RF_UH = 1u << 1,   /* no healthy upstream (no endpoints, all ejected) */
	RF_URX = 1u << 2,  /* connect retry limit reached */
	RF_UO = 1u << 3,   /* upstream overflow: connection limit (circuit breaker) */
	RF_NR = 1u << 4,   /* no route: destination unknown / not allowed */
	RF_DENY = 1u << 5, /* denied by authorization policy */
	RF_DC = 1u << 6,   /* downstream connection terminated (reset by the client side) */
	RF_UC = 1u << 7,   /* upstream connection terminated (reset by the server side) */
	RF_SI = 1u << 8,   /* idle timeout */
	RF_DPE = 1u << 9,  /* downstream protocol error (bad HBONE request, TLS failure) */
	RF__ALL = (1u << 10) - 1,
};
/* A connection closing with one of these was never established: it also
 * counts in istio_tcp_connections_failed_total. */
#define RF_FAILED_MASK (RF_UF | RF_UH | RF_URX | RF_UO | RF_NR | RF_DENY | RF_DPE)
#define RF_STR_MAX     40
/* "-" or "UF,URX"; returns @buf (at least RF_STR_MAX bytes). */
const char *metrics_rflags_str(uint32_t flags, char *buf);

/* Istio's label set as ztunnel exports it, in its order.  NULL or "" is
 * rendered "unknown". */
enum metrics_label {
	ML_SOURCE_WORKLOAD = 0,
	ML_SOURCE_CANONICAL_SERVICE,
	ML_SOURCE_CANONICAL_REVISION,
	ML_SOURCE_WORKLOAD_NAMESPACE,
	ML_SOURCE_PRINCIPAL,
	ML_SOURCE_APP,
	ML_SOURCE_VERSION,
	ML_SOURCE_CLUSTER,
	ML_DESTINATION_SERVICE,
	ML_DESTINATION_SERVICE_NAMESPACE,
	ML_DESTINATION_SERVICE_NAME,
	ML_DESTINATION_WORKLOAD,
	ML_DESTINATION_CANONICAL_SERVICE,
	ML_DESTINATION_CANONICAL_REVISION,
	ML_DESTINATION_WORKLOAD_NAMESPACE,
	ML_DESTINATION_PRINCIPAL,
	ML_DESTINATION_APP,
	ML_DESTINATION_VERSION,
	ML_DESTINATION_CLUSTER,
	ML__COUNT
};
const char *metrics_label_name(enum metrics_label l);

struct metrics_labels {
	enum metrics_reporter reporter;
	enum metrics_security security;
	uint32_t response_flags;  /* RF_*; 0 at connection open */
	const char *v[ML__COUNT]; /* borrowed for the call only */
};

/* One worker's counters.  Layout public only so the adds can be inline. */
struct metrics_shard {
	uint64_t *tcp; /* [max_series * MT__COUNT] */
	uint64_t *ctr; /* [METRICS_MAX_SLOTS], own-family children */
	uint32_t max_series;
};

/* Set up for @max_workers shards and at most @max_series Istio label sets
 * (0: METRICS_DEFAULT_SERIES; the overflow series is one of them), and
 * register the standard families.  0, -EINVAL, -ENOMEM, -EALREADY. */
int metrics_init(unsigned max_workers, uint32_t max_series);
/* Free everything (tests, shutdown).  No adds may run concurrently. */
void metrics_fini(void);

/* The shard of worker @w (< max_workers), for the inline adds; cache it. */
struct metrics_shard *metrics_shard(unsigned w);

/* Intern @l: the series id (stable for the process lifetime), or
 * METRICS_SERIES_OVERFLOW once max_series label sets exist.  Thread-safe;
 * a lookup of a known set takes no lock; a new set takes a mutex. */
uint32_t metrics_series(const struct metrics_labels *l);
/* The id of series @id's label set with response_flags = @flags. */
uint32_t metrics_series_flags(uint32_t id, uint32_t flags);

static inline void metrics_tcp_add(struct metrics_shard *s, uint32_t id, enum metrics_tcp m,
                                   uint64_t n)
{
	uint64_t *c;

	if (id >= s->max_series)
		id = METRICS_SERIES_OVERFLOW;
	c = &s->tcp[(size_t)id * MT__COUNT + m];
	/* Single writer: a plain add, stored atomically so a concurrent
	 * scrape never reads half a word. */
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* Connection life cycle on the owning worker.  open: opened_total.
 * close: closed_total on the series with @rflags (interned then, which may
 * lock once), plus failed_total when @rflags has RF_FAILED_MASK bits.
 * Bytes are counted on the open series id with metrics_tcp_add. */
void metrics_conn_open(struct metrics_shard *s, uint32_t id);
void metrics_conn_close(struct metrics_shard *s, uint32_t id, uint32_t rflags);

/* --- the proxy's own metrics ------------------------------------------- */

enum metrics_type { METRICS_COUNTER = 0, METRICS_GAUGE };
struct metrics_family;

/* Register a family: @name a valid metric name (counters end in _total),
 * @help one line, @label_names NULL-terminated (NULL: none), at most
 * METRICS_MAX_LABELS.  Registering the same name again with the same type
 * and labels returns the existing family.  NULL with errno EINVAL, EEXIST
 * (same name, different shape), ENOSPC, ENOMEM. */
struct metrics_family *metrics_family_register(const char *name, const char *help,
                                               enum metrics_type type,
                                               const char *const *label_names);
/* The slot of @f's child with these label values (one per label name;
 * NULL/"" rendered "unknown"), created on first use.  Past
 * METRICS_MAX_CHILDREN (or METRICS_MAX_SLOTS in all) the family's overflow
 * child (every value "overflow") is returned.  Thread-safe, locks: call at
 * setup or on rare events, then count with the slot. */
uint32_t metrics_child(struct metrics_family *f, const char *const *values);

/* Counter or gauge delta on the owning worker's shard (gauges: +1/-1,
 * summed over shards at scrape). */
static inline void metrics_ctr_add(struct metrics_shard *s, uint32_t slot, int64_t n)
{
	uint64_t *c = &s->ctr[slot < METRICS_MAX_SLOTS ? slot : 0];

	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + (uint64_t)n, __ATOMIC_RELAXED);
}
/* Same from any thread (atomic add on a shared shard). */
void metrics_ctr_add_any(uint32_t slot, int64_t n);
/* Gauge set from any thread: the shared shard's value becomes @v (only
 * meaningful for a gauge nobody also adds to from a worker). */
void metrics_gauge_set(uint32_t slot, int64_t v);

/* Collector family: at scrape, @collect(arg, e) calls metrics_emit once per
 * sample.  For values that live elsewhere (hbone_stats, queue depths). */
struct metrics_emitter;
typedef void (*metrics_collect_fn)(void *arg, struct metrics_emitter *e);
int metrics_collector_register(const char *name, const char *help, enum metrics_type type,
                               const char *const *label_names, metrics_collect_fn collect,
                               void *arg);
/* Turn a slot family (e.g. a standard one) into a collector family: same
 * name, help, type and label names; its children are no longer rendered
 * and metrics_child returns the sink slot.  For counts another module
 * already keeps (hbone_stats for MS_HANDSHAKES/MS_HANDSHAKE_FAILURES).
 * 0, -EINVAL, -EALREADY (already a collector). */
int metrics_family_set_collector(struct metrics_family *f, metrics_collect_fn collect, void *arg);
/* One sample of the collecting family: @values as in metrics_child. */
void metrics_emit(struct metrics_emitter *e, const char *const *values, double v);

/* Standard families registered by metrics_init (names in docs/observability.md). */
enum metrics_std {
	MS_HANDSHAKES = 0,           /* ambit_hbone_handshakes_total{role} */
	MS_HANDSHAKE_FAILURES,       /* ambit_hbone_handshake_failures_total{role,reason} */
	MS_POOL_CONNECTIONS,         /* ambit_pool_connections (gauge) */
	MS_POOL_STREAMS,             /* ambit_pool_streams (gauge) */
	MS_POOL_CONNECTIONS_OPENED,  /* ambit_pool_connections_opened_total */
	MS_POLICY_DECISIONS,         /* ambit_policy_decisions_total{action,policy} */
	MS_WORKLOADS_ENROLLED,       /* ambit_workloads_enrolled (gauge) */
	MS_WORKER_SQES,              /* ambit_worker_sqes_submitted_total{worker} */
	MS_WORKER_CQES,              /* ambit_worker_cqes_total{worker} */
	MS_WORKER_BUFRING_EXHAUSTED, /* ambit_worker_buffer_ring_exhausted_total{worker} */
	MS__COUNT
};
struct metrics_family *metrics_std(enum metrics_std which);
/* The name @f was registered with. */
const char *metrics_family_name(const struct metrics_family *f);
/* Slot of a {worker="@w"} child of a per-worker family (created at init). */
uint32_t metrics_worker_slot(enum metrics_std which, unsigned w);

/* ambit_build_info{version=@version} 1 (set once at startup). */
void metrics_set_build_info(const char *version);

/* Interned series (overflow included) and label sets refused for lack of
 * room since init. */
uint32_t metrics_series_count(void);
uint64_t metrics_series_dropped(void);

/* Render every family, sorted by name, children sorted, HELP/TYPE once
 * per family.  *@out is malloc'ed (caller frees), NUL-terminated, *@len
 * bytes.  0 or -ENOMEM. */
int metrics_render(char **out, size_t *len);
/* Same, written to @f.  0 or -errno. */
int metrics_render_file(FILE *f);

/* Sums over shards, for tests and the admin API. */
uint64_t metrics_tcp_sum(uint32_t id, enum metrics_tcp m);
int64_t metrics_slot_sum(uint32_t slot);

#endif
