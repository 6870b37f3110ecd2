/*
 * metrics: series interning, per-worker shards, own families, rendering
 * (see metrics.h).
 *
 * Memory is fixed at init: the series table (max_series entries, each label
 * string allocated once when interned and kept for the process lifetime),
 * its two hash indexes (by raw key for the per-connection lookup, by
 * rendered labels so two raw keys that render alike - "unknown" and "", or
 * two invalid bytes that both become U+FFFD - share one series; power of
 * two, at most half full, so a probe always ends),
 * and (max_workers + 1) shards; the extra shard takes metrics_ctr_add_any
 * from threads that are not workers.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "node-proxy/metrics.h"
#include "node-proxy/promtext.h"

#define MAX_FAMILIES 128
#define NAME_MAX_LEN 128

struct series {
	char *labels;  /* rendered label pairs, no braces; owned (one block with key) */
	char *key;     /* raw values (see raw_key), for the fast lookup */
	uint32_t len;  /* strlen(labels) */
	uint32_t hash; /* label_hash of labels */
	uint32_t key_len;
	uint32_t key_hash;
	uint32_t rf_off; /* the response_flags value inside labels */
	uint32_t rf_len;
	uint32_t rflags;
};

struct child {
	char *labels; /* rendered label pairs, "" without labels; owned */
	uint32_t slot;
};

struct family {
	char name[NAME_MAX_LEN];
	char *help;
	enum metrics_type type;
	unsigned n_labels;
	char *label_names[METRICS_MAX_LABELS];
	struct child *children; /* [METRICS_MAX_CHILDREN + 1], slot families only */
	uint32_t n_children;    /* published with release after the child is set */
	uint32_t overflow_slot; /* 0 until needed */
	metrics_collect_fn collect;
	void *arg;
};

struct metrics_emitter {
	const struct family *f;
	struct sample {
		char *labels;
		double v;
	} * s;
	size_t n, cap;
	int err;
};

static struct {
	int inited;
	unsigned max_workers;
	uint32_t max_series;
	struct metrics_shard *shards; /* [max_workers + 1]; the last is shared */
	struct series *series;
	uint32_t n_series; /* atomic; entries below it are immutable */
	uint32_t *index;   /* by rendered labels: 0 empty, else id + 1; atomic */
	uint32_t *kindex;  /* by raw key, same encoding */
	uint32_t index_mask;
	uint64_t dropped; /* atomic */
	pthread_mutex_t lock;
	struct family *fam[MAX_FAMILIES];
	uint32_t n_fam;   /* atomic */
	uint32_t n_slots; /* next free own slot; 0 is the sink for bad slots */
	struct family *std[MS__COUNT];
	uint32_t *wslots[MS__COUNT]; /* per-worker children of MS_WORKER_* */
} M = { .lock = PTHREAD_MUTEX_INITIALIZER };

static const char *const label_names[ML__COUNT] = {
	[ML_SOURCE_WORKLOAD] = "source_workload",
	[ML_SOURCE_CANONICAL_SERVICE] = "source_canonical_service",
	[ML_SOURCE_CANONICAL_REVISION] = "source_canonical_revision",
	[ML_SOURCE_WORKLOAD_NAMESPACE] = "source_workload_namespace",
	[ML_SOURCE_PRINCIPAL] = "source_principal",
	[ML_SOURCE_APP] = "source_app",
	[ML_SOURCE_VERSION] = "source_version",
	[ML_SOURCE_CLUSTER] = "source_cluster",
	[ML_DESTINATION_SERVICE] = "destination_service",
	[ML_DESTINATION_SERVICE_NAMESPACE] = "destination_service_namespace",
	[ML_DESTINATION_SERVICE_NAME] = "destination_service_name",
	[ML_DESTINATION_WORKLOAD] = "destination_workload",
	[ML_DESTINATION_CANONICAL_SERVICE] = "destination_canonical_service",
	[ML_DESTINATION_CANONICAL_REVISION] = "destination_canonical_revision",
	[ML_DESTINATION_WORKLOAD_NAMESPACE] = "destination_workload_namespace",
	[ML_DESTINATION_PRINCIPAL] = "destination_principal",
	[ML_DESTINATION_APP] = "destination_app",
	[ML_DESTINATION_VERSION] = "destination_version",
	[ML_DESTINATION_CLUSTER] = "destination_cluster",
};

/* Render order is by name; the index is enum metrics_tcp. */
static const struct {
	const char *name, *help;
} tcp_fam[MT__COUNT] = {
	[MT_OPENED] = { "istio_tcp_connections_opened_total",
	                "The total number of TCP connections opened" },
	[MT_CLOSED] = { "istio_tcp_connections_closed_total",
	                "The total number of TCP connections closed" },
	[MT_SENT_BYTES] = { "istio_tcp_sent_bytes_total",
	                    "The size of total bytes sent during response in case of a TCP "
	                    "connection" },
	[MT_RECEIVED_BYTES] = { "istio_tcp_received_bytes_total",
	                        "The size of total bytes received during request in case of a "
	                        "TCP connection" },
	[MT_FAILED] = { "istio_tcp_connections_failed_total",
	                "The total number of TCP connections that were never established "
	                "(connect failure, policy denial, no route, overflow)" },
};

static const char *const rflag_names[] = { "UF",   "UH", "URX", "UO", "NR",
	                                   "DENY", "DC", "UC",  "SI", "DPE" };

const char *metrics_label_name(enum metrics_label l)
{
	return (unsigned)l < ML__COUNT ? label_names[l] : NULL;
}

const char *metrics_rflags_str(uint32_t flags, char *buf)
{
	size_t n = 0, i;

	flags &= RF__ALL;
	if (!flags) {
		strcpy(buf, "-");
		return buf;
	}
	buf[0] = '\0';
	for (i = 0; i < sizeof(rflag_names) / sizeof(rflag_names[0]); i++) {
		if (!(flags & (1u << i)))
			continue;
		if (n)
			buf[n++] = ',';
		strcpy(buf + n, rflag_names[i]);
		n += strlen(rflag_names[i]);
	}
	return buf;
}

/* Word-at-a-time multiplicative hash: label strings are ~700 bytes and a
 * byte-serial hash (FNV) cost a microsecond per connection. */
static uint32_t label_hash(const char *s, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;
	size_t i;

	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, s + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	if (i < n) {
		w = 0;
		memcpy(&w, s + i, n - i);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
	}
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 32;
	return (uint32_t)h;
}

/* --- series ------------------------------------------------------------ */

static const char *reporter_str(enum metrics_reporter r)
{
	return r == METRICS_REPORTER_DESTINATION ? "destination" : "source";
}

static const char *security_str(enum metrics_security s)
{
	switch (s) {
	case METRICS_SEC_MUTUAL_TLS:
		return "mutual_tls";
	case METRICS_SEC_NONE:
		return "none";
	default:
		return "unknown";
	}
}

static void put_pair(struct pt_buf *b, const char *name, const char *value)
{
	if (b->len)
		pt_putn(b, ",", 1);
	pt_puts(b, name);
	pt_putn(b, "=\"", 2);
	pt_label_value(b, value, METRICS_LABEL_MAX, "unknown");
	pt_putn(b, "\"", 1);
}

/* @l NULL: the overflow series, every value "overflow". */
static void build_labels(struct pt_buf *b, const struct metrics_labels *l, uint32_t *rf_off,
                         uint32_t *rf_len)
{
	char rf[RF_STR_MAX];
	size_t start;
	int i;

	put_pair(b, "reporter", l ? reporter_str(l->reporter) : "overflow");
	for (i = 0; i < ML__COUNT; i++)
		put_pair(b, label_names[i], l ? l->v[i] : "overflow");
	put_pair(b, "request_protocol", "tcp");
	start = b->len + strlen(",response_flags=\"");
	put_pair(b, "response_flags", l ? metrics_rflags_str(l->response_flags, rf) : "overflow");
	*rf_off = (uint32_t)start;
	*rf_len = (uint32_t)(b->len - 1 - start);
	put_pair(b, "connection_security_policy", l ? security_str(l->security) : "overflow");
}

/*
 * Raw key: reporter, security, response flags (4 bytes, little endian, at
 * RK_FLAGS), then each label value as given (NULL as "", cut at
 * METRICS_LABEL_MAX bytes) followed by a NUL, which no C string contains,
 * so the encoding is unambiguous.  Cheap to build: no escaping.
 */
#define RK_FLAGS 2
#define RK_MAX   (6 + ML__COUNT * (METRICS_LABEL_MAX + 1))

static size_t raw_key(char *k, const struct metrics_labels *l)
{
	uint32_t f = l->response_flags & RF__ALL;
	size_t n = 6, vl;
	int i;

	k[0] = (char)l->reporter;
	k[1] = (char)l->security;
	k[2] = (char)f;
	k[3] = (char)(f >> 8);
	k[4] = (char)(f >> 16);
	k[5] = (char)(f >> 24);
	for (i = 0; i < ML__COUNT; i++) {
		const char *v = l->v[i] ? l->v[i] : "";

		vl = strnlen(v, METRICS_LABEL_MAX);
		memcpy(k + n, v, vl);
		n += vl;
		k[n++] = '\0';
	}
	return n;
}

/* Lock-free probe of @idx: the id whose (key or labels) equal @s, or 0. */
static uint32_t index_find(const uint32_t *idx, int by_key, const char *s, size_t len, uint32_t h)
{
	const struct series *e;
	uint32_t i, v;

	for (i = h & M.index_mask;; i = (i + 1) & M.index_mask) {
		v = __atomic_load_n(&idx[i], __ATOMIC_ACQUIRE);
		if (!v)
			return 0;
		e = &M.series[v - 1];
		if (by_key ? (e->key_hash == h && e->key_len == len && !memcmp(e->key, s, len))
		           : (e->hash == h && e->len == len && !memcmp(e->labels, s, len)))
			return v - 1;
	}
}

static void index_put(uint32_t *idx, uint32_t h, uint32_t id)
{
	uint32_t i;

	for (i = h & M.index_mask; idx[i]; i = (i + 1) & M.index_mask)
		;
	__atomic_store_n(&idx[i], id + 1, __ATOMIC_RELEASE);
}

/* Slow path, on a raw-key miss: find by rendered labels or add.  @labels
 * is the rendered string. */
static uint32_t intern(const char *key, size_t klen, uint32_t kh, const char *labels, size_t len,
                       uint32_t rf_off, uint32_t rf_len, uint32_t rflags)
{
	uint32_t h = label_hash(labels, len), id;
	struct series *s;
	char *blk;

	pthread_mutex_lock(&M.lock);
	id = index_find(M.kindex, 1, key, klen, kh); /* lost a race to another thread? */
	if (id)
		goto out;
	id = index_find(M.index, 0, labels, len, h); /* renders like a known one */
	if (id)
		goto out;
	id = __atomic_load_n(&M.n_series, __ATOMIC_RELAXED);
	if (id >= M.max_series)
		goto full;
	blk = malloc(len + 1 + klen);
	if (!blk)
		goto full;
	s = &M.series[id];
	s->labels = blk;
	memcpy(blk, labels, len);
	blk[len] = '\0';
	s->key = blk + len + 1;
	memcpy(s->key, key, klen);
	s->len = (uint32_t)len;
	s->hash = h;
	s->key_len = (uint32_t)klen;
	s->key_hash = kh;
	s->rf_off = rf_off;
	s->rf_len = rf_len;
	s->rflags = rflags;
	__atomic_store_n(&M.n_series, id + 1, __ATOMIC_RELEASE);
	index_put(M.index, h, id);
	index_put(M.kindex, kh, id);
out:
	pthread_mutex_unlock(&M.lock);
	return id;
full:
	__atomic_fetch_add(&M.dropped, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&M.lock);
	return METRICS_SERIES_OVERFLOW;
}

uint32_t metrics_series(const struct metrics_labels *l)
{
	char key[RK_MAX];
	struct pt_buf b;
	uint32_t off, len, id, kh;
	size_t klen;

	if (!M.inited || !l)
		return METRICS_SERIES_OVERFLOW;
	klen = raw_key(key, l);
	kh = label_hash(key, klen);
	id = index_find(M.kindex, 1, key, klen, kh);
	if (id)
		return id;
	pt_init(&b);
	build_labels(&b, l, &off, &len);
	id = b.err ? METRICS_SERIES_OVERFLOW
	           : intern(key, klen, kh, b.p, b.len, off, len, l->response_flags & RF__ALL);
	pt_free(&b);
	return id;
}

uint32_t metrics_series_flags(uint32_t id, uint32_t flags)
{
	const struct series *s;
	char rf[RF_STR_MAX], key[RK_MAX];
	struct pt_buf b;
	uint32_t nid, kh;

	flags &= RF__ALL;
	if (!M.inited || id == METRICS_SERIES_OVERFLOW ||
	    id >= __atomic_load_n(&M.n_series, __ATOMIC_ACQUIRE))
		return METRICS_SERIES_OVERFLOW;
	s = &M.series[id];
	if (s->rflags == flags)
		return id;
	memcpy(key, s->key, s->key_len);
	key[RK_FLAGS] = (char)flags;
	key[RK_FLAGS + 1] = (char)(flags >> 8);
	key[RK_FLAGS + 2] = (char)(flags >> 16);
	key[RK_FLAGS + 3] = (char)(flags >> 24);
	kh = label_hash(key, s->key_len);
	nid = index_find(M.kindex, 1, key, s->key_len, kh);
	if (nid)
		return nid;
	metrics_rflags_str(flags, rf);
	pt_init(&b);
	pt_putn(&b, s->labels, s->rf_off);
	pt_puts(&b, rf);
	pt_putn(&b, s->labels + s->rf_off + s->rf_len, s->len - s->rf_off - s->rf_len);
	nid = b.err
	          ? METRICS_SERIES_OVERFLOW
	          : intern(key, s->key_len, kh, b.p, b.len, s->rf_off, (uint32_t)strlen(rf), flags);
	pt_free(&b);
	return nid;
}

void metrics_conn_open(struct metrics_shard *s, uint32_t id)
{
	metrics_tcp_add(s, id, MT_OPENED, 1);
}

void metrics_conn_close(struct metrics_shard *s, uint32_t id, uint32_t rflags)
{
	uint32_t fid = metrics_series_flags(id, rflags);

	metrics_tcp_add(s, fid, MT_CLOSED, 1);
	if (rflags & RF_FAILED_MASK)
		metrics_tcp_add(s, fid, MT_FAILED, 1);
}

uint32_t metrics_series_count(void)
{
	return __atomic_load_n(&M.n_series, __ATOMIC_ACQUIRE);
}

uint64_t metrics_series_dropped(void)
{
	return __atomic_load_n(&M.dropped, __ATOMIC_RELAXED);
}

struct metrics_shard *metrics_shard(unsigned w)
{
	if (!M.inited || w >= M.max_workers)
		return NULL;
	return &M.shards[w];
}

uint64_t metrics_tcp_sum(uint32_t id, enum metrics_tcp m)
{
	uint64_t sum = 0;
	unsigned w;

	if (!M.inited || id >= M.max_series || (unsigned)m >= MT__COUNT)
		return 0;
	for (w = 0; w <= M.max_workers; w++)
		sum +=
		    __atomic_load_n(&M.shards[w].tcp[(size_t)id * MT__COUNT + m], __ATOMIC_RELAXED);
	return sum;
}

int64_t metrics_slot_sum(uint32_t slot)
{
	uint64_t sum = 0;
	unsigned w;

	if (!M.inited || slot >= METRICS_MAX_SLOTS)
		return 0;
	for (w = 0; w <= M.max_workers; w++)
		sum += __atomic_load_n(&M.shards[w].ctr[slot], __ATOMIC_RELAXED);
	return (int64_t)sum;
}

void metrics_ctr_add_any(uint32_t slot, int64_t n)
{
	if (!M.inited)
		return;
	__atomic_fetch_add(&M.shards[M.max_workers].ctr[slot < METRICS_MAX_SLOTS ? slot : 0],
	                   (uint64_t)n, __ATOMIC_RELAXED);
}

void metrics_gauge_set(uint32_t slot, int64_t v)
{
	if (!M.inited)
		return;
	__atomic_store_n(&M.shards[M.max_workers].ctr[slot < METRICS_MAX_SLOTS ? slot : 0],
	                 (uint64_t)v, __ATOMIC_RELAXED);
}

/* --- own families --------------------------------------------------------- */

static void family_free(struct family *f)
{
	uint32_t i;

	if (!f)
		return;
	free(f->help);
	for (i = 0; i < f->n_labels; i++)
		free(f->label_names[i]);
	if (f->children)
		for (i = 0; i < f->n_children; i++)
			free(f->children[i].labels);
	free(f->children);
	free(f);
}

static int same_shape(const struct family *f, enum metrics_type type,
                      const char *const *label_names_in, unsigned n)
{
	unsigned i;

	if (f->type != type || f->n_labels != n)
		return 0;
	for (i = 0; i < n; i++)
		if (strcmp(f->label_names[i], label_names_in[i]))
			return 0;
	return 1;
}

static int name_taken_by_istio(const char *name)
{
	int m;

	for (m = 0; m < MT__COUNT; m++)
		if (!strcmp(name, tcp_fam[m].name))
			return 1;
	return 0;
}

static struct family *family_add(const char *name, const char *help, enum metrics_type type,
                                 const char *const *lnames, metrics_collect_fn collect, void *arg)
{
	struct family *f = NULL;
	unsigned n = 0, i;
	int err = EINVAL;

	if (!M.inited || !pt_valid_name(name, 0) || strlen(name) >= NAME_MAX_LEN || !help ||
	    (type != METRICS_COUNTER && type != METRICS_GAUGE) || name_taken_by_istio(name))
		goto fail;
	for (; lnames && lnames[n]; n++) {
		if (n == METRICS_MAX_LABELS || !pt_valid_name(lnames[n], 1))
			goto fail;
		for (i = 0; i < n; i++)
			if (!strcmp(lnames[i], lnames[n]))
				goto fail;
	}
	pthread_mutex_lock(&M.lock);
	for (i = 0; i < M.n_fam; i++) {
		if (strcmp(M.fam[i]->name, name))
			continue;
		f = M.fam[i];
		pthread_mutex_unlock(&M.lock);
		if (!collect && !__atomic_load_n(&f->collect, __ATOMIC_ACQUIRE) &&
		    same_shape(f, type, lnames, n))
			return f;
		errno = EEXIST;
		return NULL;
	}
	err = ENOSPC;
	if (M.n_fam == MAX_FAMILIES)
		goto unlock;
	err = ENOMEM;
	f = calloc(1, sizeof(*f));
	if (!f)
		goto unlock;
	strcpy(f->name, name);
	f->type = type;
	f->collect = collect;
	f->arg = arg;
	f->help = strdup(help);
	if (!f->help)
		goto unlock;
	for (i = 0; i < n; i++) {
		f->label_names[i] = strdup(lnames[i]);
		if (!f->label_names[i])
			goto unlock;
		f->n_labels = i + 1;
	}
	if (!collect) {
		f->children = calloc(METRICS_MAX_CHILDREN + 1, sizeof(*f->children));
		if (!f->children)
			goto unlock;
	}
	M.fam[M.n_fam] = f;
	__atomic_store_n(&M.n_fam, M.n_fam + 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&M.lock);
	return f;
unlock:
	pthread_mutex_unlock(&M.lock);
	family_free(f);
fail:
	errno = err;
	return NULL;
}

static void build_child_labels(struct pt_buf *b, const struct family *f, const char *const *values)
{
	unsigned i;

	for (i = 0; i < f->n_labels; i++)
		put_pair(b, f->label_names[i], values ? values[i] : NULL);
}

/* Caller holds M.lock.  Appends a child with @labels (taken). */
static uint32_t child_add_locked(struct family *f, char *labels)
{
	uint32_t n = f->n_children;

	f->children[n].labels = labels;
	f->children[n].slot = M.n_slots++;
	__atomic_store_n(&f->n_children, n + 1, __ATOMIC_RELEASE);
	return f->children[n].slot;
}

uint32_t metrics_child(struct metrics_family *mf, const char *const *values)
{
	static const char *const ov[METRICS_MAX_LABELS] = { "overflow", "overflow", "overflow",
		                                            "overflow" };
	struct family *f = (struct family *)mf;
	struct pt_buf b, ob;
	const char *key;
	char *own;
	uint32_t i, slot = 0;

	if (!M.inited || !f || __atomic_load_n(&f->collect, __ATOMIC_ACQUIRE))
		return 0;
	pt_init(&b);
	pt_init(&ob);
	build_child_labels(&b, f, values);
	if (b.err)
		goto out;
	key = b.p ? b.p : "";
	pthread_mutex_lock(&M.lock);
	for (i = 0; i < f->n_children; i++) {
		if (!strcmp(f->children[i].labels, key)) {
			slot = f->children[i].slot;
			goto unlock;
		}
	}
	if (f->n_children < METRICS_MAX_CHILDREN && M.n_slots < METRICS_MAX_SLOTS) {
		own = b.p ? b.p : strdup("");
		if (!own)
			goto unlock;
		if (own == b.p)
			pt_init(&b); /* ownership moved to the child */
		slot = child_add_locked(f, own);
		goto unlock;
	}
	/* Full: the family's overflow child, created once in the spare entry
	 * (children has METRICS_MAX_CHILDREN + 1 entries). */
	if (!f->overflow_slot && f->n_labels && f->n_children == METRICS_MAX_CHILDREN &&
	    M.n_slots < METRICS_MAX_SLOTS) {
		build_child_labels(&ob, f, ov);
		if (!ob.err) {
			f->overflow_slot = child_add_locked(f, ob.p);
			pt_init(&ob);
		}
	}
	slot = f->overflow_slot;
unlock:
	pthread_mutex_unlock(&M.lock);
out:
	pt_free(&ob);
	pt_free(&b);
	return slot;
}

struct metrics_family *metrics_family_register(const char *name, const char *help,
                                               enum metrics_type type,
                                               const char *const *label_names_in)
{
	struct family *f = family_add(name, help, type, label_names_in, NULL, NULL);

	/* A family without labels has exactly one child: create it now so it
	 * renders (as 0) before the first event. */
	if (f && f->n_labels == 0)
		metrics_child((struct metrics_family *)f, NULL);
	return (struct metrics_family *)f;
}

int metrics_collector_register(const char *name, const char *help, enum metrics_type type,
                               const char *const *lnames, metrics_collect_fn collect, void *arg)
{
	if (!collect)
		return -EINVAL;
	return family_add(name, help, type, lnames, collect, arg) ? 0 : -errno;
}

int metrics_family_set_collector(struct metrics_family *mf, metrics_collect_fn collect, void *arg)
{
	struct family *f = (struct family *)mf;

	if (!M.inited || !f || !collect)
		return -EINVAL;
	pthread_mutex_lock(&M.lock);
	if (__atomic_load_n(&f->collect, __ATOMIC_RELAXED)) {
		pthread_mutex_unlock(&M.lock);
		return -EALREADY;
	}
	f->arg = arg;
	__atomic_store_n(&f->collect, collect, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&M.lock);
	return 0;
}

void metrics_emit(struct metrics_emitter *e, const char *const *values, double v)
{
	struct pt_buf b;
	struct sample *s;

	if (e->err)
		return;
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 16;

		s = realloc(e->s, cap * sizeof(*s));
		if (!s) {
			e->err = -ENOMEM;
			return;
		}
		e->s = s;
		e->cap = cap;
	}
	pt_init(&b);
	build_child_labels(&b, e->f, values);
	if (b.err) {
		e->err = b.err;
		return;
	}
	e->s[e->n].labels = b.p ? b.p : strdup("");
	if (!e->s[e->n].labels) {
		e->err = -ENOMEM;
		return;
	}
	e->s[e->n++].v = v;
}

struct metrics_family *metrics_std(enum metrics_std which)
{
	return (unsigned)which < MS__COUNT ? (struct metrics_family *)M.std[which] : NULL;
}

const char *metrics_family_name(const struct metrics_family *f)
{
	return f ? ((const struct family *)f)->name : NULL;
}

uint32_t metrics_worker_slot(enum metrics_std which, unsigned w)
{
	if (!M.inited || (unsigned)which >= MS__COUNT || !M.wslots[which] || w >= M.max_workers)
		return 0;
	return M.wslots[which][w];
}

/* --- process_* and self metrics -------------------------------------------- */

static int read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
	return 0;
}

/* Fields of /proc/self/stat after the ")" that ends comm (which may hold
 * spaces): field 3 (state) is index 0. */
static int proc_stat_fields(unsigned long long *utime, unsigned long long *stime,
                            unsigned long long *start, unsigned long long *vsize)
{
	char buf[1024], *p;
	unsigned long long v[21];
	int i;

	if (read_file("/proc/self/stat", buf, sizeof(buf)))
		return -1;
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	p += 2;
	p = strchr(p, ' '); /* skip the state letter */
	for (i = 0; i < 21 && p; i++) {
		char *end;

		v[i] = strtoull(p, &end, 10);
		if (end == p)
			return -1;
		p = end;
	}
	if (i < 21)
		return -1;
	/* v[0] is field 4 (ppid); utime 14, stime 15, starttime 22, vsize 23 */
	*utime = v[10];
	*stime = v[11];
	*start = v[18];
	*vsize = v[19];
	return 0;
}

static void collect_process(void *arg, struct metrics_emitter *e)
{
	unsigned long long ut, st, start, vsize, rss_pages;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	const char *what = arg;
	char buf[4096], *p;
	struct rlimit rl;

	if (!strcmp(what, "cpu")) {
		if (!proc_stat_fields(&ut, &st, &start, &vsize))
			metrics_emit(e, NULL, (double)(ut + st) / (double)tck);
	} else if (!strcmp(what, "rss")) {
		if (!read_file("/proc/self/statm", buf, sizeof(buf)) &&
		    sscanf(buf, "%*u %llu", &rss_pages) == 1)
			metrics_emit(e, NULL, (double)rss_pages * (double)page);
	} else if (!strcmp(what, "vsize")) {
		if (!proc_stat_fields(&ut, &st, &start, &vsize))
			metrics_emit(e, NULL, (double)vsize);
	} else if (!strcmp(what, "fds")) {
		DIR *d = opendir("/proc/self/fd");
		struct dirent *de;
		long n = 0;

		if (!d)
			return;
		while ((de = readdir(d)))
			if (de->d_name[0] != '.')
				n++;
		closedir(d);
		metrics_emit(e, NULL, (double)(n - 1)); /* minus the dir's own fd */
	} else if (!strcmp(what, "maxfds")) {
		if (!getrlimit(RLIMIT_NOFILE, &rl))
			metrics_emit(e, NULL,
			             rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur);
	} else if (!strcmp(what, "start")) {
		if (proc_stat_fields(&ut, &st, &start, &vsize) ||
		    read_file("/proc/stat", buf, sizeof(buf)))
			return;
		p = strstr(buf, "\nbtime ");
		if (p)
			metrics_emit(e, NULL,
			             (double)strtoull(p + 7, NULL, 10) +
			                 (double)start / (double)tck);
	}
}

static void collect_self(void *arg, struct metrics_emitter *e)
{
	const char *what = arg;

	if (!strcmp(what, "series"))
		metrics_emit(e, NULL, metrics_series_count());
	else if (!strcmp(what, "max"))
		metrics_emit(e, NULL, M.max_series);
	else
		metrics_emit(e, NULL, (double)metrics_series_dropped());
}

static char build_version[64] = "unknown";

static void collect_build(void *arg, struct metrics_emitter *e)
{
	const char *v[1] = { build_version };

	(void)arg;
	metrics_emit(e, v, 1);
}

void metrics_set_build_info(const char *version)
{
	snprintf(build_version, sizeof(build_version), "%s", version ? version : "unknown");
}

/* --- init ------------------------------------------------------------------ */

static const struct {
	const char *name, *help;
	enum metrics_type type;
	const char *labels[3];
} std_def[MS__COUNT] = {
	[MS_HANDSHAKES] = { "ambit_hbone_handshakes_total",
	                    "mTLS handshakes completed, by our role",
	                    METRICS_COUNTER,
	                    { "role" } },
	[MS_HANDSHAKE_FAILURES] = { "ambit_hbone_handshake_failures_total",
	                            "mTLS handshakes failed, by our role and reason",
	                            METRICS_COUNTER,
	                            { "role", "reason" } },
	[MS_POOL_CONNECTIONS] = { "ambit_pool_connections",
	                          "HBONE connections open in the outbound pool",
	                          METRICS_GAUGE,
	                          { NULL } },
	[MS_POOL_STREAMS] = { "ambit_pool_streams",
	                      "HBONE CONNECT streams open on pooled connections",
	                      METRICS_GAUGE,
	                      { NULL } },
	[MS_POOL_CONNECTIONS_OPENED] = { "ambit_pool_connections_opened_total",
	                                 "HBONE connections the pool opened (a new handshake each)",
	                                 METRICS_COUNTER,
	                                 { NULL } },
	[MS_POLICY_DECISIONS] = { "ambit_policy_decisions_total",
	                          "Authorization decisions, by action and the deciding policy",
	                          METRICS_COUNTER,
	                          { "action", "policy" } },
	[MS_WORKLOADS_ENROLLED] = { "ambit_workloads_enrolled",
	                            "Workloads (pods) this node proxy serves",
	                            METRICS_GAUGE,
	                            { NULL } },
	[MS_WORKER_SQES] = { "ambit_worker_sqes_submitted_total",
	                     "io_uring submission queue entries submitted, per worker",
	                     METRICS_COUNTER,
	                     { "worker" } },
	[MS_WORKER_CQES] = { "ambit_worker_cqes_total",
	                     "io_uring completions handled, per worker",
	                     METRICS_COUNTER,
	                     { "worker" } },
	[MS_WORKER_BUFRING_EXHAUSTED] = { "ambit_worker_buffer_ring_exhausted_total",
	                                  "Receives that found the provided buffer ring empty "
	                                  "(ENOBUFS), per worker",
	                                  METRICS_COUNTER,
	                                  { "worker" } },
};

static const struct {
	const char *name, *help;
	enum metrics_type type;
	metrics_collect_fn fn;
	const char *arg;
} coll_def[] = {
	{ "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
	  METRICS_COUNTER, collect_process, "cpu" },
	{ "process_resident_memory_bytes", "Resident memory size in bytes.", METRICS_GAUGE,
	  collect_process, "rss" },
	{ "process_virtual_memory_bytes", "Virtual memory size in bytes.", METRICS_GAUGE,
	  collect_process, "vsize" },
	{ "process_open_fds", "Number of open file descriptors.", METRICS_GAUGE, collect_process,
	  "fds" },
	{ "process_max_fds", "Maximum number of open file descriptors.", METRICS_GAUGE,
	  collect_process, "maxfds" },
	{ "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
	  METRICS_GAUGE, collect_process, "start" },
	{ "ambit_metrics_series", "Istio TCP label sets interned (the overflow series included)",
	  METRICS_GAUGE, collect_self, "series" },
	{ "ambit_metrics_series_max", "Bound on interned Istio TCP label sets", METRICS_GAUGE,
	  collect_self, "max" },
	{ "ambit_metrics_series_dropped_total",
	  "New Istio TCP label sets counted in the overflow series because the table was full",
	  METRICS_COUNTER, collect_self, "dropped" },
};

static int register_std(void)
{
	static const char *const version_label[] = { "version", NULL };
	char wname[16];
	const char *wv[1] = { wname };
	size_t i;
	unsigned w;
	int rc;

	for (i = 0; i < MS__COUNT; i++) {
		M.std[i] = (struct family *)metrics_family_register(
		    std_def[i].name, std_def[i].help, std_def[i].type, std_def[i].labels);
		if (!M.std[i])
			return -errno;
	}
	for (i = MS_WORKER_SQES; i <= MS_WORKER_BUFRING_EXHAUSTED; i++) {
		M.wslots[i] = calloc(M.max_workers, sizeof(uint32_t));
		if (!M.wslots[i])
			return -ENOMEM;
		for (w = 0; w < M.max_workers; w++) {
			snprintf(wname, sizeof(wname), "%u", w);
			M.wslots[i][w] = metrics_child((struct metrics_family *)M.std[i], wv);
		}
	}
	for (i = 0; i < sizeof(coll_def) / sizeof(coll_def[0]); i++) {
		rc =
		    metrics_collector_register(coll_def[i].name, coll_def[i].help, coll_def[i].type,
		                               NULL, coll_def[i].fn, (void *)coll_def[i].arg);
		if (rc)
			return rc;
	}
	return metrics_collector_register(
	    "ambit_build_info", "A metric with a constant 1 labelled by the ambit version",
	    METRICS_GAUGE, version_label, collect_build, NULL);
}

static size_t tcp_bytes(uint32_t max_series)
{
	return (size_t)max_series * MT__COUNT * 8;
}

static uint64_t *shard_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void shard_unmap(uint64_t *p, size_t len)
{
	if (p)
		munmap(p, len);
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t p = 1;

	while (p < n)
		p <<= 1;
	return p;
}

int metrics_init(unsigned max_workers, uint32_t max_series)
{
	struct pt_buf b;
	uint32_t off, len;
	unsigned w;
	int rc;

	if (M.inited)
		return -EALREADY;
	if (max_workers == 0 || max_workers > 1024 || max_series > (1u << 20))
		return -EINVAL;
	if (max_series == 0)
		max_series = METRICS_DEFAULT_SERIES;
	if (max_series < 2)
		max_series = 2;
	M.max_workers = max_workers;
	M.max_series = max_series;
	M.n_series = 0;
	M.n_fam = 0;
	M.n_slots = 1; /* slot 0: sink for invalid slots, never rendered */
	M.dropped = 0;
	rc = -ENOMEM;
	M.series = calloc(max_series, sizeof(*M.series));
	M.index_mask = pow2_at_least((uint64_t)max_series * 2) - 1;
	M.index = calloc((size_t)M.index_mask + 1, sizeof(*M.index));
	M.kindex = calloc((size_t)M.index_mask + 1, sizeof(*M.kindex));
	M.shards = calloc(max_workers + 1, sizeof(*M.shards));
	if (!M.series || !M.index || !M.kindex || !M.shards)
		goto fail;
	for (w = 0; w <= max_workers; w++) {
		/* Anonymous mappings: page-aligned (no false sharing between
		 * workers), zero, and resident only where counters are used. */
		M.shards[w].max_series = max_series;
		M.shards[w].tcp = shard_map(tcp_bytes(max_series));
		M.shards[w].ctr = shard_map(METRICS_MAX_SLOTS * 8);
		if (!M.shards[w].tcp || !M.shards[w].ctr)
			goto fail;
	}
	M.inited = 1;
	/* Series 0 is the overflow series (not in the hash index). */
	pt_init(&b);
	build_labels(&b, NULL, &off, &len);
	if (b.err)
		goto fail_inited;
	M.series[0].labels = b.p;
	M.series[0].len = (uint32_t)b.len;
	M.series[0].hash = label_hash(b.p, b.len);
	M.series[0].rf_off = off;
	M.series[0].rf_len = len;
	M.series[0].rflags = UINT32_MAX; /* never equal to real flags */
	M.n_series = 1;
	rc = register_std();
	if (rc)
		goto fail_inited;
	return 0;
fail_inited:
	metrics_fini();
	return rc;
fail:
	M.inited = 1;
	metrics_fini();
	return rc;
}

void metrics_fini(void)
{
	unsigned w;
	uint32_t i;

	if (!M.inited)
		return;
	for (i = 0; i < M.n_series && M.series; i++)
		free(M.series[i].labels);
	free(M.series);
	free(M.index);
	free(M.kindex);
	if (M.shards) {
		for (w = 0; w <= M.max_workers; w++) {
			shard_unmap(M.shards[w].tcp, tcp_bytes(M.max_series));
			shard_unmap(M.shards[w].ctr, METRICS_MAX_SLOTS * 8);
		}
	}
	free(M.shards);
	for (i = 0; i < M.n_fam; i++)
		family_free(M.fam[i]);
	for (i = 0; i < MS__COUNT; i++) {
		free(M.wslots[i]);
		M.wslots[i] = NULL;
		M.std[i] = NULL;
	}
	M.series = NULL;
	M.index = NULL;
	M.kindex = NULL;
	M.shards = NULL;
	M.n_series = 0;
	M.n_fam = 0;
	M.inited = 0;
}

/* --- rendering ------------------------------------------------------------- */

struct render_item {
	const char *name;
	int tcp; /* enum metrics_tcp, or -1 for an own family */
	struct family *f;
};

static int item_cmp(const void *a, const void *b)
{
	return strcmp(((const struct render_item *)a)->name, ((const struct render_item *)b)->name);
}

static int sample_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sample *)a)->labels, ((const struct sample *)b)->labels);
}

static void render_head(struct pt_buf *b, const char *name, const char *help,
                        enum metrics_type type)
{
	pt_printf(b, "# HELP %s ", name);
	pt_help(b, help);
	pt_printf(b, "\n# TYPE %s %s\n", name, type == METRICS_COUNTER ? "counter" : "gauge");
}

static void render_sample_head(struct pt_buf *b, const char *name, const char *labels)
{
	pt_puts(b, name);
	if (labels && *labels) {
		pt_putn(b, "{", 1);
		pt_puts(b, labels);
		pt_putn(b, "}", 1);
	}
	pt_putn(b, " ", 1);
}

static void render_tcp(struct pt_buf *b, enum metrics_tcp m, const struct series **sorted,
                       uint32_t n)
{
	uint32_t i;

	render_head(b, tcp_fam[m].name, tcp_fam[m].help, METRICS_COUNTER);
	for (i = 0; i < n; i++) {
		uint32_t id = (uint32_t)(sorted[i] - M.series);
		uint64_t v = metrics_tcp_sum(id, m);

		/* A label set shows up in a family once that counter moved,
		 * as with a client library's get-or-create. */
		if (!v)
			continue;
		render_sample_head(b, tcp_fam[m].name, sorted[i]->labels);
		pt_u64(b, v);
		pt_putn(b, "\n", 1);
	}
}

static int child_cmp(const void *a, const void *b)
{
	return strcmp(((const struct child *)a)->labels, ((const struct child *)b)->labels);
}

static void render_family(struct pt_buf *b, struct family *f)
{
	uint32_t n, i;

	metrics_collect_fn collect = __atomic_load_n(&f->collect, __ATOMIC_ACQUIRE);

	render_head(b, f->name, f->help, f->type);
	if (collect) {
		struct metrics_emitter e = { .f = f };

		collect(f->arg, &e);
		if (e.err) {
			b->err = e.err;
		} else {
			if (e.n) /* a collector may emit nothing: qsort(NULL, 0) is UB */
				qsort(e.s, e.n, sizeof(*e.s), sample_cmp);
			for (i = 0; i < e.n; i++) {
				/* One sample per label set: drop repeats. */
				if (i && !strcmp(e.s[i].labels, e.s[i - 1].labels))
					continue;
				render_sample_head(b, f->name, e.s[i].labels);
				pt_double(b, e.s[i].v);
				pt_putn(b, "\n", 1);
			}
		}
		for (i = 0; i < e.n; i++)
			free(e.s[i].labels);
		free(e.s);
		return;
	}
	n = __atomic_load_n(&f->n_children, __ATOMIC_ACQUIRE);
	{
		struct child *c = malloc((n ? n : 1) * sizeof(*c));

		if (!c) {
			b->err = -ENOMEM;
			return;
		}
		memcpy(c, f->children, n * sizeof(*c));
		qsort(c, n, sizeof(*c), child_cmp);
		for (i = 0; i < n; i++) {
			int64_t v = metrics_slot_sum(c[i].slot);

			render_sample_head(b, f->name, c[i].labels);
			if (f->type == METRICS_COUNTER)
				pt_u64(b, (uint64_t)v);
			else
				pt_i64(b, v);
			pt_putn(b, "\n", 1);
		}
		free(c);
	}
}

static int series_ptr_cmp(const void *a, const void *b)
{
	const struct series *x = *(const struct series *const *)a;
	const struct series *y = *(const struct series *const *)b;

	return strcmp(x->labels, y->labels);
}

int metrics_render(char **out, size_t *len)
{
	struct render_item items[MAX_FAMILIES + MT__COUNT];
	const struct series **sorted = NULL;
	uint32_t n_series, n_fam, n = 0, i;
	struct pt_buf b;
	int rc;

	*out = NULL;
	*len = 0;
	if (!M.inited)
		return -EINVAL;
	pt_init(&b);
	n_series = __atomic_load_n(&M.n_series, __ATOMIC_ACQUIRE);
	sorted = malloc(n_series * sizeof(*sorted));
	if (!sorted)
		return -ENOMEM;
	for (i = 0; i < n_series; i++)
		sorted[i] = &M.series[i];
	qsort(sorted, n_series, sizeof(*sorted), series_ptr_cmp);

	for (i = 0; i < MT__COUNT; i++)
		items[n++] = (struct render_item){ tcp_fam[i].name, (int)i, NULL };
	n_fam = __atomic_load_n(&M.n_fam, __ATOMIC_ACQUIRE);
	for (i = 0; i < n_fam; i++)
		items[n++] = (struct render_item){ M.fam[i]->name, -1, M.fam[i] };
	qsort(items, n, sizeof(items[0]), item_cmp);
	for (i = 0; i < n; i++) {
		if (items[i].tcp >= 0)
			render_tcp(&b, (enum metrics_tcp)items[i].tcp, sorted, n_series);
		else
			render_family(&b, items[i].f);
	}
	free(sorted);
	rc = b.err;
	if (rc) {
		pt_free(&b);
		return rc;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

int metrics_render_file(FILE *f)
{
	char *p;
	size_t n;
	int rc = metrics_render(&p, &n);

	if (rc)
		return rc;
	if (n && fwrite(p, 1, n, f) != n)
		rc = -EIO;
	if (fflush(f))
		rc = -errno;
	free(p);
	return rc;
}
