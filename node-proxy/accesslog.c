/*
 * accesslog: per-worker SPSC rings, a writer thread, JSON formatting (see
 * accesslog.h).
 *
 * Ring protocol: the worker owns head, the writer owns tail; the worker
 * publishes a filled slot with a release store of head, the writer frees
 * slots with a release store of tail once their lines are written, so a
 * slot is never reused while the writer still reads it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node-proxy/accesslog.h"
#include "node-proxy/metrics.h"
#include "node-proxy/promtext.h"

#define WRITE_BATCH   (64 * 1024)
#define IDLE_SLEEP_MS 10
/* Empty passes before the writer stops polling and sleeps until woken: a
 * node-proxy with its log off (or no traffic) costs no timer wake-ups. */
#define IDLE_PASSES_BEFORE_SLEEP 20
#define SLEEP_MAX_MS             1000 /* bounds a missed wake-up, never expected */

struct al_ring {
	/* producer side */
	uint64_t head __attribute__((aligned(64)));
	uint64_t tail_cache;
	uint64_t sample_ctr;
	uint64_t dropped; /* written by the producer, read by anyone */
	uint64_t sampled_out;
	/* consumer side */
	uint64_t tail __attribute__((aligned(64)));
	struct al_record *rec;
};

static struct {
	int inited;
	unsigned n;
	uint64_t mask;
	struct al_ring *rings;
	char *path; /* NULL: stderr */
	int fd;
	pthread_t thread;
	int stop;                                /* atomic */
	uint32_t reopen_req;                     /* atomic: bumped by accesslog_reopen */
	uint32_t reopen_done;                    /* atomic: the last request the writer served */
	int enabled;                             /* atomic */
	uint32_t sample_n;                       /* atomic */
	uint64_t written, write_errors, reopens; /* atomic */
	char *batch;                             /* [WRITE_BATCH] */
	char *line;                              /* [AL_LINE_MAX], one formatted line */
	size_t batch_max;                        /* bytes per write(2) */
	uint64_t *new_tail;                      /* writer's scratch: [n] */
	int efd;                                 /* wakes the sleeping writer */
	int sleeping;                            /* atomic: the writer waits on efd */
} A;

/* Producers, reopen and stop: wake the writer if it went to sleep.  The
 * fence orders the caller's publication (ring head, request) before the
 * flag's load; the writer orders its flag store before its re-check of
 * the rings the same way, so one of the two always sees the other. */
static void wake_writer(void)
{
	uint64_t one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&A.sleeping, __ATOMIC_RELAXED) &&
	    __atomic_exchange_n(&A.sleeping, 0, __ATOMIC_ACQ_REL))
		(void)!write(A.efd, &one, sizeof(one));
}

void al_str(char *dst, size_t cap, const char *src)
{
	size_t n;

	if (!cap)
		return;
	if (!src) {
		dst[0] = '\0';
		return;
	}
	n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

void al_addr_from_sa(struct al_addr *a, const struct sockaddr *sa)
{
	memset(a, 0, sizeof(*a));
	if (!sa)
		return;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		a->family = AF_INET;
		memcpy(a->ip, &in->sin_addr, 4);
		a->port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		a->family = AF_INET6;
		memcpy(a->ip, &in6->sin6_addr, 16);
		a->port = ntohs(in6->sin6_port);
	}
}

/* --- JSON formatting ------------------------------------------------------- */

struct jw {
	char *p;
	size_t len, cap;
	int overflow;
};

static void jw_putn(struct jw *w, const char *s, size_t n)
{
	if (w->overflow || n > w->cap - w->len) {
		w->overflow = 1;
		return;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
}

static void jw_puts(struct jw *w, const char *s)
{
	jw_putn(w, s, strlen(s));
}

/* A JSON string literal of the NUL-terminated bytes in @s[0..cap). */
static void jw_string(struct jw *w, const char *s, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *u = (const uint8_t *)s;
	size_t n = strnlen(s, cap), i, k;
	char esc[6];

	jw_putn(w, "\"", 1);
	for (i = 0; i < n;) {
		k = pt_utf8_len(u + i, n - i);
		if (k == 0) {
			jw_putn(w, "\\ufffd", 6);
			i++;
			continue;
		}
		if (k > 1) {
			/* U+2028/2029 are valid JSON but break JavaScript
			 * line-oriented consumers: escape them too. */
			if (k == 3 && u[i] == 0xe2 && u[i + 1] == 0x80 &&
			    (u[i + 2] == 0xa8 || u[i + 2] == 0xa9))
				jw_puts(w, u[i + 2] == 0xa8 ? "\\u2028" : "\\u2029");
			else
				jw_putn(w, s + i, k);
			i += k;
			continue;
		}
		switch (u[i]) {
		case '"':
			jw_putn(w, "\\\"", 2);
			break;
		case '\\':
			jw_putn(w, "\\\\", 2);
			break;
		case '\n':
			jw_putn(w, "\\n", 2);
			break;
		case '\r':
			jw_putn(w, "\\r", 2);
			break;
		case '\t':
			jw_putn(w, "\\t", 2);
			break;
		default:
			if (u[i] < 0x20 || u[i] == 0x7f) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[u[i] >> 4];
				esc[5] = hex[u[i] & 15];
				jw_putn(w, esc, 6);
			} else {
				jw_putn(w, s + i, 1);
			}
		}
		i++;
	}
	jw_putn(w, "\"", 1);
}

/* "key": string, or null when empty. */
static void jw_field_str(struct jw *w, const char *key, const char *s, size_t cap)
{
	jw_puts(w, ",\"");
	jw_puts(w, key);
	jw_puts(w, "\":");
	if (!s[0])
		jw_puts(w, "null");
	else
		jw_string(w, s, cap);
}

static void jw_field_u64(struct jw *w, const char *key, uint64_t v)
{
	char tmp[64];
	int n = snprintf(tmp, sizeof(tmp), ",\"%s\":%llu", key, (unsigned long long)v);

	jw_putn(w, tmp, (size_t)n);
}

static void jw_field_addr(struct jw *w, const char *key, const struct al_addr *a)
{
	char ip[INET6_ADDRSTRLEN], tmp[INET6_ADDRSTRLEN + 16];

	jw_puts(w, ",\"");
	jw_puts(w, key);
	jw_puts(w, "\":");
	if ((a->family != AF_INET && a->family != AF_INET6) ||
	    !inet_ntop(a->family, a->ip, ip, sizeof(ip))) {
		jw_puts(w, "null");
		return;
	}
	if (a->family == AF_INET6)
		snprintf(tmp, sizeof(tmp), "\"[%s]:%u\"", ip, a->port);
	else
		snprintf(tmp, sizeof(tmp), "\"%s:%u\"", ip, a->port);
	jw_puts(w, tmp);
}

size_t accesslog_format(const struct al_record *r, char *buf, size_t cap)
{
	struct jw w = { buf, 0, cap, 0 };
	char ts[64], rf[RF_STR_MAX];
	time_t sec = (time_t)(r->end_ns / 1000000000ull);
	unsigned ms = (unsigned)(r->end_ns / 1000000ull % 1000);
	int inbound = r->direction == AL_INBOUND;
	struct tm tm;

	if (!gmtime_r(&sec, &tm))
		memset(&tm, 0, sizeof(tm));
	snprintf(ts, sizeof(ts), "{\"timestamp\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\"",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         ms);
	jw_puts(&w, ts);
	jw_puts(&w, inbound ? ",\"reporter\":\"destination\",\"direction\":\"inbound\""
	                    : ",\"reporter\":\"source\",\"direction\":\"outbound\"");
	jw_field_addr(&w, "src_addr", &r->src.addr);
	jw_field_str(&w, "src_workload", r->src.workload, sizeof(r->src.workload));
	jw_field_str(&w, "src_namespace", r->src.ns, sizeof(r->src.ns));
	jw_field_str(&w, "src_identity", r->src.identity, sizeof(r->src.identity));
	jw_field_addr(&w, "dst_addr", &r->dst.addr);
	jw_field_str(&w, "dst_service", r->dst_service, sizeof(r->dst_service));
	jw_field_str(&w, "dst_workload", r->dst.workload, sizeof(r->dst.workload));
	jw_field_str(&w, "dst_namespace", r->dst.ns, sizeof(r->dst.ns));
	jw_field_str(&w, "dst_identity", r->dst.identity, sizeof(r->dst.identity));
	jw_puts(&w, r->mtls ? ",\"connection_security_policy\":\"mutual_tls\""
	                    : ",\"connection_security_policy\":\"none\"");
	/* Bytes as the local workload saw them (the client for outbound, the
	 * server for inbound), as ztunnel logs them. */
	jw_field_u64(&w, "bytes_sent", inbound ? r->resp_bytes : r->req_bytes);
	jw_field_u64(&w, "bytes_received", inbound ? r->req_bytes : r->resp_bytes);
	jw_field_u64(&w, "duration_ms", r->duration_ms);
	jw_puts(&w, ",\"response_flags\":\"");
	jw_puts(&w, metrics_rflags_str(r->response_flags, rf));
	jw_puts(&w, "\"");
	jw_field_str(&w, "error", r->error, sizeof(r->error));
	jw_field_str(&w, "traceparent", r->traceparent, sizeof(r->traceparent));
	jw_field_str(&w, "baggage", r->baggage, sizeof(r->baggage));
	jw_puts(&w, "}\n");
	return w.overflow ? 0 : w.len;
}

/* --- producer side --------------------------------------------------------- */

struct al_record *accesslog_reserve(unsigned w, uint32_t rflags)
{
	struct al_ring *r;
	uint32_t n;
	struct al_record *rec;

	if (!A.inited || w >= A.n || !__atomic_load_n(&A.enabled, __ATOMIC_RELAXED))
		return NULL;
	r = &A.rings[w];
	n = __atomic_load_n(&A.sample_n, __ATOMIC_RELAXED);
	if (n > 1 && !(rflags & RF_FAILED_MASK) && r->sample_ctr++ % n != 0) {
		__atomic_store_n(&r->sampled_out, r->sampled_out + 1, __ATOMIC_RELAXED);
		return NULL;
	}
	if (r->head - r->tail_cache > A.mask) {
		r->tail_cache = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
		if (r->head - r->tail_cache > A.mask) {
			__atomic_store_n(&r->dropped, r->dropped + 1, __ATOMIC_RELAXED);
			return NULL;
		}
	}
	rec = &r->rec[r->head & A.mask];
	memset(rec, 0, sizeof(*rec));
	return rec;
}

void accesslog_commit(unsigned w)
{
	struct al_ring *r;
	struct al_record *rec;
	struct timespec ts;

	if (!A.inited || w >= A.n)
		return;
	r = &A.rings[w];
	rec = &r->rec[r->head & A.mask];
	if (!rec->end_ns && !clock_gettime(CLOCK_REALTIME, &ts))
		rec->end_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	__atomic_store_n(&r->head, r->head + 1, __ATOMIC_RELEASE);
	wake_writer(); /* one load per connection; a syscall only after idleness */
}

int accesslog_submit(unsigned w, const struct al_record *rec)
{
	struct al_record *slot = accesslog_reserve(w, rec->response_flags);

	if (!slot)
		return 0;
	*slot = *rec;
	accesslog_commit(w);
	return 1;
}

void accesslog_set_enabled(int on)
{
	__atomic_store_n(&A.enabled, on ? 1 : 0, __ATOMIC_RELAXED);
}

int accesslog_enabled(void)
{
	return __atomic_load_n(&A.enabled, __ATOMIC_RELAXED);
}

void accesslog_set_sampling(uint32_t n)
{
	__atomic_store_n(&A.sample_n, n ? n : 1, __ATOMIC_RELAXED);
}

uint32_t accesslog_sampling(void)
{
	return __atomic_load_n(&A.sample_n, __ATOMIC_RELAXED);
}

void accesslog_reopen(void)
{
	__atomic_fetch_add(&A.reopen_req, 1, __ATOMIC_RELAXED);
	wake_writer();
}

/* --- writer ---------------------------------------------------------------- */

static int open_path(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* Write all of @buf; 0 or -errno (the batch is then lost and counted). */
static int write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len) {
		n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Regular files opened O_APPEND take each write(2) whole; pipes and
 * terminals (stderr under systemd or a container runtime) only up to
 * PIPE_BUF, beyond which our lines could interleave with the daemon log's
 * own lines.  Batch accordingly. */
static void set_batch_max(void)
{
	struct stat st;

	A.batch_max = (!fstat(A.fd, &st) && S_ISREG(st.st_mode)) ? WRITE_BATCH : PIPE_BUF;
}

static void do_reopen(void)
{
	int fd;

	if (!A.path)
		return;
	fd = open_path(A.path);
	if (fd < 0) {
		/* Keep the old file: losing lines is worse than writing to
		 * a rotated name. */
		__atomic_fetch_add(&A.write_errors, 1, __ATOMIC_RELAXED);
		return;
	}
	close(A.fd);
	A.fd = fd;
	set_batch_max();
	__atomic_fetch_add(&A.reopens, 1, __ATOMIC_RELAXED);
}

static void write_batch(size_t len, size_t lines)
{
	if (!lines)
		return;
	if (write_all(A.fd, A.batch, len))
		__atomic_fetch_add(&A.write_errors, lines, __ATOMIC_RELAXED);
	else
		__atomic_fetch_add(&A.written, lines, __ATOMIC_RELAXED);
}

/* One pass over every ring.  Returns the number of lines handled. */
static size_t drain_once(void)
{
	uint64_t *new_tail = A.new_tail;
	size_t len = 0, lines = 0, batch_lines = 0, n;
	unsigned i;

	for (i = 0; i < A.n; i++)
		new_tail[i] = A.rings[i].tail;
	for (i = 0; i < A.n; i++) {
		struct al_ring *r = &A.rings[i];
		uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);

		for (; new_tail[i] != head; new_tail[i]++) {
			n = accesslog_format(&r->rec[new_tail[i] & A.mask], A.line, AL_LINE_MAX);
			if (len + n > A.batch_max) {
				write_batch(len, batch_lines);
				lines += batch_lines;
				len = 0;
				batch_lines = 0;
			}
			memcpy(A.batch + len, A.line, n);
			len += n;
			batch_lines++;
		}
	}
	write_batch(len, batch_lines);
	lines += batch_lines;
	/* Free the slots only once their lines are written, so that
	 * accesslog_flush (which waits for tail) means "on disk". */
	for (i = 0; i < A.n; i++)
		__atomic_store_n(&A.rings[i].tail, new_tail[i], __ATOMIC_RELEASE);
	return lines;
}

static void *writer_main(void *arg)
{
	struct timespec idle = { 0, IDLE_SLEEP_MS * 1000000L };
	struct pollfd pfd = { .fd = A.efd, .events = POLLIN };
	unsigned empty = 0;
	uint64_t v;
	uint32_t req;

	(void)arg;
	for (;;) {
		req = __atomic_load_n(&A.reopen_req, __ATOMIC_RELAXED);
		if (req != A.reopen_done) {
			do_reopen();
			__atomic_store_n(&A.reopen_done, req, __ATOMIC_RELEASE);
		}
		if (drain_once()) {
			empty = 0;
			continue;
		}
		if (__atomic_load_n(&A.stop, __ATOMIC_ACQUIRE)) {
			drain_once();
			break;
		}
		/* busy: poll every 10 ms (a burst fills the rings no faster
		 * than that drains them); idle: sleep until woken */
		if (++empty < IDLE_PASSES_BEFORE_SLEEP) {
			nanosleep(&idle, NULL);
			continue;
		}
		__atomic_store_n(&A.sleeping, 1, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (drain_once() || __atomic_load_n(&A.stop, __ATOMIC_ACQUIRE) ||
		    __atomic_load_n(&A.reopen_req, __ATOMIC_RELAXED) != A.reopen_done) {
			__atomic_store_n(&A.sleeping, 0, __ATOMIC_RELAXED);
			empty = 0;
			continue;
		}
		if (poll(&pfd, 1, SLEEP_MAX_MS) > 0)
			(void)!read(A.efd, &v, sizeof(v));
		__atomic_store_n(&A.sleeping, 0, __ATOMIC_RELAXED);
		empty = 0;
	}
	return NULL;
}

int accesslog_flush(unsigned timeout_ms)
{
	struct timespec tick = { 0, 1000000L };
	uint32_t reopen_snap;
	uint64_t *snap;
	unsigned i, waited = 0;
	int done;

	if (!A.inited)
		return 0;
	reopen_snap = __atomic_load_n(&A.reopen_req, __ATOMIC_RELAXED);
	snap = calloc(A.n, sizeof(*snap));
	if (!snap)
		return -ENOMEM;
	for (i = 0; i < A.n; i++)
		snap[i] = __atomic_load_n(&A.rings[i].head, __ATOMIC_ACQUIRE);
	for (;;) {
		done =
		    (int32_t)(__atomic_load_n(&A.reopen_done, __ATOMIC_ACQUIRE) - reopen_snap) >= 0;
		for (i = 0; i < A.n; i++)
			if (__atomic_load_n(&A.rings[i].tail, __ATOMIC_ACQUIRE) < snap[i])
				done = 0;
		if (done || waited >= timeout_ms)
			break;
		nanosleep(&tick, NULL);
		waited++;
	}
	free(snap);
	return done ? 0 : -ETIMEDOUT;
}

int accesslog_init(unsigned max_workers, unsigned ring_size, const char *path)
{
	uint64_t size = 1;
	unsigned i;
	int rc;

	if (A.inited)
		return -EALREADY;
	if (max_workers == 0 || max_workers > 1024 || ring_size > (1u << 20))
		return -EINVAL;
	if (ring_size == 0)
		ring_size = AL_RING_DEFAULT;
	while (size < ring_size)
		size <<= 1;
	memset(&A, 0, sizeof(A));
	A.n = max_workers;
	A.mask = size - 1;
	A.enabled = 1;
	A.sample_n = 1;
	A.fd = -1;
	rc = -ENOMEM;
	A.rings = aligned_alloc(64, ((sizeof(*A.rings) * max_workers) + 63) & ~(size_t)63);
	A.batch = malloc(WRITE_BATCH);
	A.line = malloc(AL_LINE_MAX);
	A.new_tail = calloc(max_workers, sizeof(*A.new_tail));
	if (!A.rings || !A.batch || !A.line || !A.new_tail)
		goto fail;
	memset(A.rings, 0, sizeof(*A.rings) * max_workers);
	for (i = 0; i < max_workers; i++) {
		A.rings[i].rec = calloc(size, sizeof(struct al_record));
		if (!A.rings[i].rec)
			goto fail;
	}
	if (path && strcmp(path, "-")) {
		A.path = strdup(path);
		if (!A.path)
			goto fail;
		A.fd = open_path(path);
		if (A.fd < 0) {
			rc = -errno;
			goto fail;
		}
	} else {
		A.fd = STDERR_FILENO;
	}
	set_batch_max();
	A.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (A.efd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = -pthread_create(&A.thread, NULL, writer_main, NULL);
	if (rc)
		goto fail;
	A.inited = 1;
	return 0;
fail:
	if (A.path && A.fd >= 0)
		close(A.fd);
	if (A.efd > 0)
		close(A.efd);
	if (A.rings)
		for (i = 0; i < max_workers; i++)
			free(A.rings[i].rec);
	free(A.rings);
	free(A.batch);
	free(A.line);
	free(A.new_tail);
	free(A.path);
	memset(&A, 0, sizeof(A));
	return rc;
}

void accesslog_fini(void)
{
	unsigned i;

	if (!A.inited)
		return;
	__atomic_store_n(&A.stop, 1, __ATOMIC_RELEASE);
	wake_writer();
	pthread_join(A.thread, NULL);
	if (A.path)
		close(A.fd);
	close(A.efd);
	for (i = 0; i < A.n; i++)
		free(A.rings[i].rec);
	free(A.rings);
	free(A.batch);
	free(A.line);
	free(A.new_tail);
	free(A.path);
	memset(&A, 0, sizeof(A));
}

void accesslog_stats_get(struct accesslog_stats *out)
{
	unsigned i;

	memset(out, 0, sizeof(*out));
	if (!A.inited)
		return;
	for (i = 0; i < A.n; i++) {
		out->dropped += __atomic_load_n(&A.rings[i].dropped, __ATOMIC_RELAXED);
		out->sampled_out += __atomic_load_n(&A.rings[i].sampled_out, __ATOMIC_RELAXED);
	}
	out->written = __atomic_load_n(&A.written, __ATOMIC_RELAXED);
	out->write_errors = __atomic_load_n(&A.write_errors, __ATOMIC_RELAXED);
	out->reopens = __atomic_load_n(&A.reopens, __ATOMIC_RELAXED);
}

static void collect_al(void *arg, struct metrics_emitter *e)
{
	struct accesslog_stats s;
	const char *which = arg;

	accesslog_stats_get(&s);
	if (!strcmp(which, "written")) {
		metrics_emit(e, NULL, (double)s.written);
	} else if (!strcmp(which, "dropped")) {
		const char *full[] = { "ring_full" }, *samp[] = { "sampled_out" },
		           *werr[] = { "write_error" };

		metrics_emit(e, full, (double)s.dropped);
		metrics_emit(e, samp, (double)s.sampled_out);
		metrics_emit(e, werr, (double)s.write_errors);
	} else if (!strcmp(which, "enabled")) {
		metrics_emit(e, NULL, accesslog_enabled());
	} else {
		metrics_emit(e, NULL, accesslog_sampling());
	}
}

int accesslog_register_metrics(void)
{
	static const char *const reason[] = { "reason", NULL };
	int rc;

	rc = metrics_collector_register("ambit_accesslog_lines_total", "Access log lines written",
	                                METRICS_COUNTER, NULL, collect_al, "written");
	if (!rc)
		rc = metrics_collector_register("ambit_accesslog_dropped_total",
		                                "Access log records not written, by reason",
		                                METRICS_COUNTER, reason, collect_al, "dropped");
	if (!rc)
		rc = metrics_collector_register("ambit_accesslog_enabled",
		                                "1 when the access log is on", METRICS_GAUGE, NULL,
		                                collect_al, "enabled");
	if (!rc)
		rc = metrics_collector_register("ambit_accesslog_sampling",
		                                "Access log keeps 1 in this many connections",
		                                METRICS_GAUGE, NULL, collect_al, "sampling");
	return rc;
}

/* --- admin query ----------------------------------------------------------- */

static int key_is(const char *k, size_t kl, const char *want)
{
	return kl == strlen(want) && !memcmp(k, want, kl);
}

int accesslog_apply_query(const char *q, size_t len)
{
	int on = -1, seen_on = 0, seen_sample = 0;
	unsigned long sample = 0;
	size_t i = 0;

	if (len && q[len - 1] == '&')
		return -EINVAL; /* an empty last member */
	while (i < len) {
		const char *k = q + i, *v, *amp, *eq;
		size_t kl, vl, j;

		amp = memchr(k, '&', len - i);
		if (!amp)
			amp = q + len;
		eq = memchr(k, '=', (size_t)(amp - k));
		if (!eq)
			return -EINVAL;
		kl = (size_t)(eq - k);
		v = eq + 1;
		vl = (size_t)(amp - v);
		if (key_is(k, kl, "access_log")) {
			if (seen_on++)
				return -EINVAL;
			if (key_is(v, vl, "on") || key_is(v, vl, "1") || key_is(v, vl, "true"))
				on = 1;
			else if (key_is(v, vl, "off") || key_is(v, vl, "0") ||
			         key_is(v, vl, "false"))
				on = 0;
			else
				return -EINVAL;
		} else if (key_is(k, kl, "sample")) {
			if (seen_sample++ || vl == 0 || vl > 7)
				return -EINVAL;
			sample = 0;
			for (j = 0; j < vl; j++) {
				if (v[j] < '0' || v[j] > '9')
					return -EINVAL;
				sample = sample * 10 + (unsigned long)(v[j] - '0');
			}
			if (sample < 1 || sample > 1000000)
				return -EINVAL;
		} else if (!key_is(k, kl, "level")) {
			return -EINVAL; /* "level" is the daemon log's, not ours */
		}
		i = (size_t)(amp - q) + 1;
	}
	if (on >= 0)
		accesslog_set_enabled(on);
	if (sample)
		accesslog_set_sampling((uint32_t)sample);
	return 0;
}

/* --- trace context ------------------------------------------------------------ */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* @n lower-case hex digits at @s into @out (n / 2 bytes). */
static int unhex(const char *s, size_t n, uint8_t *out)
{
	size_t i;

	for (i = 0; i < n; i += 2) {
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

int al_traceparent_parse(const char *s, size_t n, struct al_trace *out)
{
	uint8_t ver;

	if (!s || n < AL_TRACEPARENT_LEN)
		return -EINVAL;
	if (unhex(s, 2, &ver) || ver == 0xff || s[2] != '-' || s[35] != '-' || s[52] != '-')
		return -EINVAL;
	if (ver == 0 ? n != AL_TRACEPARENT_LEN : (n > AL_TRACEPARENT_LEN && s[55] != '-'))
		return -EINVAL;
	if (unhex(s + 3, 32, out->trace_id) || unhex(s + 36, 16, out->span_id) ||
	    unhex(s + 53, 2, &out->flags))
		return -EINVAL;
	if (all_zero(out->trace_id, 16) || all_zero(out->span_id, 8))
		return -EINVAL;
	return 0;
}

void al_traceparent_format(const struct al_trace *t, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;

	out[o++] = '0';
	out[o++] = '0';
	out[o++] = '-';
	for (i = 0; i < 16; i++) {
		out[o++] = hex[t->trace_id[i] >> 4];
		out[o++] = hex[t->trace_id[i] & 15];
	}
	out[o++] = '-';
	for (i = 0; i < 8; i++) {
		out[o++] = hex[t->span_id[i] >> 4];
		out[o++] = hex[t->span_id[i] & 15];
	}
	out[o++] = '-';
	out[o++] = hex[t->flags >> 4];
	out[o++] = hex[t->flags & 15];
	out[o] = '\0';
}

/* Per-thread xorshift seeded once from getrandom: ids must be unique, not
 * secret, and a syscall per connection is not affordable. */
static uint64_t rnd64(void)
{
	static __thread uint64_t st;
	uint64_t x;

	if (!st) {
		if (getrandom(&st, sizeof(st), GRND_NONBLOCK) != sizeof(st)) {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			st = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)&st;
		}
		st |= 1;
	}
	x = st;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	st = x;
	return x * 0x2545f4914f6cdd1dull;
}

void al_trace_child(const struct al_trace *parent, struct al_trace *out)
{
	uint64_t r;

	if (parent) {
		memcpy(out->trace_id, parent->trace_id, 16);
		out->flags = parent->flags;
	} else {
		do {
			r = rnd64();
			memcpy(out->trace_id, &r, 8);
			r = rnd64();
			memcpy(out->trace_id + 8, &r, 8);
		} while (all_zero(out->trace_id, 16));
		out->flags = 0x01;
	}
	do {
		r = rnd64();
		memcpy(out->span_id, &r, 8);
	} while (all_zero(out->span_id, 8));
}

/* --- baggage -------------------------------------------------------------------- */

/* W3C baggage-octet: printable ASCII except space " , ; \ (and we also
 * encode % so decoding is unambiguous). */
static int baggage_octet(uint8_t c)
{
	return c > 0x20 && c < 0x7f && c != '"' && c != ',' && c != ';' && c != '\\' && c != '%';
}

static int put_member(struct jw *w, const char *key, const char *val, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strnlen(val, cap), i;
	char enc[3];

	if (!n)
		return 0;
	if (w->len)
		jw_putn(w, ",", 1);
	jw_puts(w, key);
	jw_putn(w, "=", 1);
	for (i = 0; i < n; i++) {
		uint8_t c = (uint8_t)val[i];

		if (baggage_octet(c)) {
			jw_putn(w, val + i, 1);
		} else {
			enc[0] = '%';
			enc[1] = hex[c >> 4];
			enc[2] = hex[c & 15];
			jw_putn(w, enc, 3);
		}
	}
	return 0;
}

size_t al_baggage_build(const struct al_baggage *b, char *out, size_t cap)
{
	struct jw w = { out, 0, cap ? cap - 1 : 0, cap == 0 };
	char key[64];
	size_t tl = strnlen(b->workload_type, sizeof(b->workload_type)), i;

	put_member(&w, "k8s.cluster.name", b->cluster, sizeof(b->cluster));
	put_member(&w, "k8s.namespace.name", b->ns, sizeof(b->ns));
	if (b->workload[0]) {
		/* the type is a key part: only token characters */
		for (i = 0; i < tl; i++)
			if (!((b->workload_type[i] >= 'a' && b->workload_type[i] <= 'z') ||
			      (b->workload_type[i] >= '0' && b->workload_type[i] <= '9')))
				break;
		snprintf(key, sizeof(key), "k8s.%.*s.name", (int)(tl && i == tl ? tl : 3),
		         tl && i == tl ? b->workload_type : "pod");
		put_member(&w, key, b->workload, sizeof(b->workload));
	}
	put_member(&w, "service.name", b->service, sizeof(b->service));
	put_member(&w, "service.version", b->version, sizeof(b->version));
	if (w.overflow)
		return 0;
	out[w.len] = '\0';
	return w.len;
}

static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static int tchar(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int hexval_ci(char c)
{
	return (c >= 'A' && c <= 'F') ? c - 'A' + 10 : hexval(c);
}

/* Percent-decode @v[0..n) into @dst (cap bytes, NUL-terminated, cut);
 * a '%' not followed by two hex digits is kept as is (W3C: treat as is). */
static void pct_decode(char *dst, size_t cap, const char *v, size_t n)
{
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < n && o + 1 < cap; i++) {
		if (v[i] == '%' && i + 2 < n) {
			hi = hexval_ci(v[i + 1]);
			lo = hexval_ci(v[i + 2]);
			if (hi >= 0 && lo >= 0) {
				if (hi == 0 && lo == 0)
					break; /* a C string ends here */
				dst[o++] = (char)(hi << 4 | lo);
				i += 2;
				continue;
			}
		}
		dst[o++] = v[i];
	}
	dst[o] = '\0';
}

int al_baggage_parse(const char *s, size_t n, struct al_baggage *out)
{
	size_t i = 0, members = 0;

	memset(out, 0, sizeof(*out));
	if (!s || n > 8192)
		return -EINVAL;
	while (i <= n) {
		const char *m = s + i, *comma = memchr(m, ',', n - i);
		size_t ml = comma ? (size_t)(comma - m) : n - i, k0, k1, v0, v1;

		/* trim the member */
		for (k0 = 0; k0 < ml && is_ows(m[k0]); k0++)
			;
		for (v1 = ml; v1 > k0 && is_ows(m[v1 - 1]); v1--)
			;
		if (k0 < v1) {
			if (++members > 64)
				return -EINVAL;
			for (k1 = k0; k1 < v1 && tchar((uint8_t)m[k1]); k1++)
				;
			if (k1 == k0)
				return -EINVAL;
			for (v0 = k1; v0 < v1 && is_ows(m[v0]); v0++)
				;
			if (v0 == v1 || m[v0] != '=')
				return -EINVAL;
			for (v0++; v0 < v1 && is_ows(m[v0]); v0++)
				;
			{
				const char *semi = memchr(m + v0, ';', v1 - v0);
				size_t ve = semi ? (size_t)(semi - m) : v1, j;

				while (ve > v0 && is_ows(m[ve - 1]))
					ve--;
				for (j = v0; j < ve; j++)
					if (!baggage_octet((uint8_t)m[j]) && m[j] != '%')
						return -EINVAL;
				{
					const char *key = m + k0;
					size_t kl = k1 - k0;
					char *dst = NULL;
					size_t cap = 0;

					if (key_is(key, kl, "k8s.cluster.name")) {
						dst = out->cluster;
						cap = sizeof(out->cluster);
					} else if (key_is(key, kl, "k8s.namespace.name")) {
						dst = out->ns;
						cap = sizeof(out->ns);
					} else if (key_is(key, kl, "service.name")) {
						dst = out->service;
						cap = sizeof(out->service);
					} else if (key_is(key, kl, "service.version")) {
						dst = out->version;
						cap = sizeof(out->version);
					} else if (kl > 9 && !memcmp(key, "k8s.", 4) &&
					           !memcmp(key + kl - 5, ".name", 5) &&
					           kl - 9 < sizeof(out->workload_type) &&
					           !memchr(key + 4, '.', kl - 9)) {
						memcpy(out->workload_type, key + 4, kl - 9);
						out->workload_type[kl - 9] = '\0';
						dst = out->workload;
						cap = sizeof(out->workload);
					}
					if (dst)
						pct_decode(dst, cap, m + v0, ve - v0);
				}
			}
		}
		if (!comma)
			break;
		i = (size_t)(comma - s) + 1;
	}
	return 0;
}
