/*
 * accesslog: one JSON line per proxied connection, written when it closes,
 * without ever blocking a worker.
 *
 * Each worker owns a bounded single-producer/single-consumer ring of
 * fixed-size records (no allocation after init).  A worker reserves a slot,
 * fills it and commits it; when the ring is full the record is dropped and
 * counted.  One writer thread drains every ring, formats JSON (strings are
 * escaped byte by byte: control characters as \u00XX, invalid UTF-8 as
 * U+FFFD, so any input yields valid JSON) and writes batches to a file
 * (O_APPEND, reopened by accesslog_reopen for log rotation) or stderr.
 * It polls the rings (idle sleep 10 ms) so a worker never makes a syscall
 * to wake it.
 *
 * Switches read by workers with relaxed atomics and changed at run time by
 * the admin API: on/off and 1-in-N sampling (records with failure response
 * flags are always kept, so denied and failed connections are never
 * sampled away).
 */
#ifndef AMBIT_NP_ACCESSLOG_H
#define AMBIT_NP_ACCESSLOG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#define AL_NAME_MAX     64  /* workload, namespace, service */
#define AL_ID_MAX       160 /* SPIFFE principal */
#define AL_ERROR_MAX    128
#define AL_TRACE_MAX    64 /* traceparent is 55 bytes */
#define AL_BAGGAGE_MAX  256
#define AL_RING_DEFAULT 512 /* records per worker (~600 KB once used) */

enum al_direction { AL_OUTBOUND = 0, AL_INBOUND };

struct al_addr {
	uint8_t family; /* AF_INET, AF_INET6, or 0 (unknown) */
	uint8_t ip[16]; /* network order; IPv4 in the first 4 bytes */
	uint16_t port;  /* host order */
};

struct al_peer {
	struct al_addr addr;
	char workload[AL_NAME_MAX];
	char ns[AL_NAME_MAX];
	char identity[AL_ID_MAX];
};

/* One connection.  Fixed size, copied into the ring; every string is
 * NUL-terminated within its array (al_str does that) and may hold any
 * bytes. */
struct al_record {
	uint64_t end_ns; /* CLOCK_REALTIME at close (0: filled in at commit) */
	uint64_t duration_ms;
	uint64_t req_bytes;      /* source -> destination */
	uint64_t resp_bytes;     /* destination -> source */
	uint32_t response_flags; /* RF_* of metrics.h */
	uint8_t direction;       /* enum al_direction; also gives "reporter" */
	uint8_t mtls;            /* connection_security_policy mutual_tls */
	struct al_peer src, dst;
	char dst_service[AL_NAME_MAX];
	char error[AL_ERROR_MAX];
	char traceparent[AL_TRACE_MAX];
	char baggage[AL_BAGGAGE_MAX];
};

/* Copy @src (NULL: empty) into @dst of @cap bytes, truncating, always
 * NUL-terminated.  Truncation may split a UTF-8 character: the writer
 * then emits U+FFFD, still valid JSON. */
void al_str(char *dst, size_t cap, const char *src);
void al_addr_from_sa(struct al_addr *a, const struct sockaddr *sa);

/* Start: @path NULL or "-" logs to stderr.  @ring_size records per worker
 * (0: AL_RING_DEFAULT; rounded up to a power of two).  Logging starts
 * enabled with sampling 1.  0 or -errno (file not openable, ENOMEM). */
int accesslog_init(unsigned max_workers, unsigned ring_size, const char *path);
/* Drain what is queued, stop the writer thread, close.  Idempotent. */
void accesslog_fini(void);

/* Worker @w: a record slot to fill, or NULL when logging is off, this
 * connection is sampled out, or the ring is full (counted as a drop).
 * @rflags decides the sampling exemption.  The slot is zeroed.  Commit
 * before the next reserve on this worker. */
struct al_record *accesslog_reserve(unsigned w, uint32_t rflags);
void accesslog_commit(unsigned w);
/* Convenience: reserve + copy *@r + commit.  1 queued, 0 not. */
int accesslog_submit(unsigned w, const struct al_record *r);

/* Run-time switches (any thread). */
void accesslog_set_enabled(int on);
int accesslog_enabled(void);
/* Keep 1 in @n connections (1: all; 0 treated as 1).  Exact per worker:
 * of every n consecutive eligible connections on a worker one is kept. */
void accesslog_set_sampling(uint32_t n);
uint32_t accesslog_sampling(void);
/* Reopen the file (after rotation): done by the writer before its next
 * write.  Safe from a signal handler.  No-op on stderr. */
void accesslog_reopen(void);
/* Block until everything committed before the call is written (or the
 * writer failed).  0, or -ETIMEDOUT after @timeout_ms. */
int accesslog_flush(unsigned timeout_ms);

struct accesslog_stats {
	uint64_t written;      /* lines written */
	uint64_t dropped;      /* ring full */
	uint64_t sampled_out;  /* skipped by sampling */
	uint64_t write_errors; /* write(2) failures (lines lost) */
	uint64_t reopens;
};
void accesslog_stats_get(struct accesslog_stats *out);
/* Export the stats as ambit_accesslog_* collector families (metrics_init
 * must have run).  0 or -errno. */
int accesslog_register_metrics(void);

/* Apply an admin query string ("access_log=on&sample=10", also
 * "access_log=off", "sample=1"; keys in any order, each at most once).
 * Everything is validated before anything changes.  0, or -EINVAL for an
 * unknown key, a bad value or a repeated key. */
int accesslog_apply_query(const char *query, size_t len);

/* --- W3C trace context carried on HBONE CONNECT ------------------------ */

#define AL_TRACEPARENT_LEN 55 /* "00-<32 hex>-<16 hex>-<2 hex>" */

struct al_trace {
	uint8_t trace_id[16];
	uint8_t span_id[8];
	uint8_t flags;
};

/* Parse a traceparent header value (untrusted: HBONE request header).
 * Version 00 exactly as specified; a higher version is accepted by its
 * first 55 bytes when followed by '-' or the end, as W3C asks.  Rejects
 * upper-case hex, all-zero ids, version ff.  0 or -EINVAL. */
int al_traceparent_parse(const char *s, size_t n, struct al_trace *out);
/* Format @t as version 00 into @out (AL_TRACEPARENT_LEN + 1 bytes). */
void al_traceparent_format(const struct al_trace *t, char *out);
/* A child of @parent (same trace id, new span id), or a new trace when
 * @parent is NULL; random ids from getrandom(2)'s pool, sampled flag set. */
void al_trace_child(const struct al_trace *parent, struct al_trace *out);

/* Source workload metadata sent as W3C baggage (keys as Istio uses them:
 * k8s.cluster.name, k8s.namespace.name, k8s.<type>.name, service.name,
 * service.version). */
struct al_baggage {
	char cluster[AL_NAME_MAX];
	char ns[AL_NAME_MAX];
	char workload_type[16]; /* "deployment", "pod", ... */
	char workload[AL_NAME_MAX];
	char service[AL_NAME_MAX];
	char version[AL_NAME_MAX];
};
/* Build the baggage header value from the non-empty fields of @b (values
 * percent-encoded where baggage syntax requires).  Returns the length, or
 * 0 if it does not fit in @cap (AL_BAGGAGE_BUILD_MAX always suffices; the
 * access log keeps the first AL_BAGGAGE_MAX - 1 bytes of what it receives). */
#define AL_BAGGAGE_BUILD_MAX 1152
size_t al_baggage_build(const struct al_baggage *b, char *out, size_t cap);
/* Parse a received baggage value (untrusted): list members
 * "key=value[;props]" separated by ',', optional whitespace, values
 * percent-decoded; the known keys fill @out, others are ignored.  At most
 * 64 members and 8192 bytes, as W3C allows.  0 or -EINVAL (syntax). */
int al_baggage_parse(const char *s, size_t n, struct al_baggage *out);

/* Format @r as one JSON line (with '\n') into @buf of @cap bytes; returns
 * the length, or 0 if @cap is too small (AL_LINE_MAX always suffices). */
#define AL_LINE_MAX 8192
size_t accesslog_format(const struct al_record *r, char *buf, size_t cap);

#endif
