/*
 * services: parsing of [service] files, VIP lookup, endpoint choice,
 * circuit breaking and outlier ejection.
 *
 * Runtime state lives in struct svc_state, one per service and shared by
 * every loaded generation of that service.  Its endpoints are allocated
 * once per (service, workload uid) and stay at the same address while the
 * state lives, so a connection may keep a pointer to its endpoint; a slot
 * is only reused for another workload when nothing is active on it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "node-proxy/services.h"

struct svc_endpoint {
	struct svc_state *st;
	char uid[WL_UID_MAX];
	uint64_t key; /* hash of uid */
	atomic_uint active;
	atomic_uint consecutive_failures;
	atomic_uint_fast64_t ejected_until_ms;
	atomic_bool unhealthy;
	atomic_uint_fast64_t last_pick_ms;
};

struct svc_state {
	atomic_uint refs;
	pthread_mutex_t lock; /* n_ep and ep[] membership */
	atomic_uint active_conns, pending;
	atomic_uint_fast64_t refused_connections, refused_pending, no_endpoint, panics, ejections;
	/* limits of the newest generation, read by acquire without the set */
	atomic_uint max_connections, max_pending, outlier_failures, outlier_ejection_ms;
	unsigned n_ep;
	struct svc_endpoint *ep[SVC_MAX_ENDPOINTS];
	/* the service's identity, fixed for the state's life (a state is only
	 * adopted by a service of the same "ns/name") */
	char ns[WL_NAME_MAX], name[WL_NAME_MAX];
};

struct vip_slot {
	struct wl_ip ip;
	const struct service *svc; /* NULL: empty */
};

struct service_set {
	atomic_uint refs;
	unsigned n, cap;
	struct service **svc;
	unsigned vip_mask;
	struct vip_slot *vips;
};

/* --- state -------------------------------------------------------------- */

static struct svc_state *state_new(void)
{
	struct svc_state *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	atomic_init(&st->refs, 1);
	pthread_mutex_init(&st->lock, NULL);
	return st;
}

static struct svc_state *state_get(struct svc_state *st)
{
	atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
	return st;
}

static void state_put(struct svc_state *st)
{
	if (!st || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (unsigned i = 0; i < st->n_ep; i++)
		free(st->ep[i]);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

static void state_set_limits(struct svc_state *st, const struct service *s)
{
	atomic_store(&st->max_connections, s->max_connections);
	atomic_store(&st->max_pending, s->max_pending);
	atomic_store(&st->outlier_failures, s->outlier_consecutive_failures);
	atomic_store(&st->outlier_ejection_ms, s->outlier_ejection_ms);
}

/* --- set lifetime ------------------------------------------------------- */

static void set_free(struct service_set *ss)
{
	for (unsigned i = 0; i < ss->n; i++) {
		state_put(ss->svc[i]->state);
		free(ss->svc[i]->sel);
		free(ss->svc[i]);
	}
	free(ss->svc);
	free(ss->vips);
	free(ss);
}

struct service_set *services_set_get(struct service_set *ss)
{
	if (ss)
		atomic_fetch_add_explicit(&ss->refs, 1, memory_order_relaxed);
	return ss;
}

void services_set_put(struct service_set *ss)
{
	if (ss && atomic_fetch_sub_explicit(&ss->refs, 1, memory_order_acq_rel) == 1)
		set_free(ss);
}

unsigned services_count(const struct service_set *ss)
{
	return ss ? ss->n : 0;
}

const struct service *services_at(const struct service_set *ss, unsigned i)
{
	return ss && i < ss->n ? ss->svc[i] : NULL;
}

void services_adopt_state(struct service_set *next, const struct service_set *prev)
{
	if (!next || !prev)
		return;
	for (unsigned i = 0; i < next->n; i++)
		for (unsigned j = 0; j < prev->n; j++)
			if (strcmp(next->svc[i]->id, prev->svc[j]->id) == 0) {
				state_put(next->svc[i]->state);
				next->svc[i]->state = state_get(prev->svc[j]->state);
				state_set_limits(next->svc[i]->state, next->svc[i]);
				break;
			}
}

/* --- lookup ------------------------------------------------------------- */

static uint32_t hash_ip(const struct wl_ip *ip)
{
	const uint8_t *p =
	    ip->family == AF_INET ? (const uint8_t *)&ip->v4 : (const uint8_t *)&ip->v6;
	unsigned n = ip->family == AF_INET ? 4 : 16;
	uint32_t h = 2166136261u;

	for (unsigned i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

const struct service *services_lookup(const struct service_set *ss, const struct wl_ip *vip,
                                      uint16_t port, uint16_t *target)
{
	uint32_t i;

	if (!ss || !ss->vips || (vip->family != AF_INET && vip->family != AF_INET6))
		return NULL;
	for (i = hash_ip(vip) & ss->vip_mask;; i = (i + 1) & ss->vip_mask) {
		const struct vip_slot *s = &ss->vips[i];
		if (!s->svc)
			return NULL;
		if (wl_ip_equal(&s->ip, vip)) {
			for (unsigned p = 0; p < s->svc->n_ports; p++)
				if (s->svc->ports[p].port == port) {
					if (target)
						*target = s->svc->ports[p].target;
					return s->svc;
				}
			return NULL;
		}
	}
}

bool services_selects(const struct service *svc, const struct workload *w)
{
	return strcmp(svc->ns, w->ns) == 0 && w->n_ips > 0 && svc->sel &&
	       selector_matches(svc->sel, w);
}

/* --- circuit breaking --------------------------------------------------- */

int services_acquire(const struct service *svc, struct svc_ticket *t)
{
	struct svc_state *st = svc->state;
	unsigned conns, pend;

	t->st = NULL;
	t->pending = false;
	t->refused = SVC_OK;
	conns = atomic_fetch_add(&st->active_conns, 1);
	if (conns >= atomic_load_explicit(&st->max_connections, memory_order_relaxed)) {
		atomic_fetch_sub(&st->active_conns, 1);
		atomic_fetch_add(&st->refused_connections, 1);
		t->refused = SVC_REFUSED_MAX_CONNECTIONS;
		return -EBUSY;
	}
	pend = atomic_fetch_add(&st->pending, 1);
	if (pend >= atomic_load_explicit(&st->max_pending, memory_order_relaxed)) {
		atomic_fetch_sub(&st->pending, 1);
		atomic_fetch_sub(&st->active_conns, 1);
		atomic_fetch_add(&st->refused_pending, 1);
		t->refused = SVC_REFUSED_MAX_PENDING;
		return -EBUSY;
	}
	t->st = state_get(st);
	t->pending = true;
	return 0;
}

void services_connected(struct svc_ticket *t)
{
	if (t->st && t->pending) {
		atomic_fetch_sub(&t->st->pending, 1);
		t->pending = false;
	}
}

void services_release(struct svc_ticket *t)
{
	if (!t->st)
		return;
	services_connected(t);
	atomic_fetch_sub(&t->st->active_conns, 1);
	state_put(t->st);
	t->st = NULL;
}

void services_ticket_names(const struct svc_ticket *t, const char **ns, const char **name)
{
	*ns = t->st ? t->st->ns : NULL;
	*name = t->st ? t->st->name : NULL;
}

const char *services_refusal_str(enum svc_refusal r)
{
	switch (r) {
	case SVC_OK:
		return "ok";
	case SVC_REFUSED_MAX_CONNECTIONS:
		return "max_connections";
	case SVC_REFUSED_MAX_PENDING:
		return "max_pending";
	}
	return "?";
}

/* --- endpoint choice ---------------------------------------------------- */

static uint64_t hash_uid(const char *s)
{
	uint64_t h = 14695981039346656037ull;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

/* xorshift64*, one stream per thread, seeded from the kernel. */
static uint64_t rnd(void)
{
	static __thread uint64_t s;

	if (!s) {
		if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != sizeof(s) || !s)
			s = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&s;
	}
	s ^= s >> 12;
	s ^= s << 25;
	s ^= s >> 27;
	return s * 2685821657736338717ull;
}

/* Find or make the endpoint of @uid.  Under st->lock.  NULL if every slot
 * is busy. */
static struct svc_endpoint *ep_find(struct svc_state *st, const char *uid, uint64_t now_ms,
                                    bool create)
{
	uint64_t key = hash_uid(uid);
	struct svc_endpoint *victim = NULL, *ep;

	for (unsigned i = 0; i < st->n_ep; i++)
		if (st->ep[i]->key == key && strcmp(st->ep[i]->uid, uid) == 0)
			return st->ep[i];
	if (!create)
		return NULL;
	if (st->n_ep < SVC_MAX_ENDPOINTS) {
		ep = calloc(1, sizeof(*ep));
		if (!ep)
			return NULL;
		ep->st = st;
		st->ep[st->n_ep++] = ep;
	} else {
		/* reuse the idle slot picked longest ago (its workload is likely gone) */
		for (unsigned i = 0; i < st->n_ep; i++) {
			ep = st->ep[i];
			if (atomic_load(&ep->active) || atomic_load(&ep->ejected_until_ms) > now_ms)
				continue;
			if (!victim ||
			    atomic_load(&ep->last_pick_ms) < atomic_load(&victim->last_pick_ms))
				victim = ep;
		}
		if (!victim)
			return NULL;
		ep = victim;
		atomic_store(&ep->consecutive_failures, 0);
		atomic_store(&ep->ejected_until_ms, 0);
		atomic_store(&ep->unhealthy, false);
	}
	snprintf(ep->uid, sizeof(ep->uid), "%s", uid);
	ep->key = key;
	atomic_store(&ep->last_pick_ms, now_ms);
	return ep;
}

static unsigned weight_of(const struct service *svc, const struct workload *w)
{
	const char *v = workload_label(w, svc->weight_label);
	unsigned long n;

	if (!v || conf_parse_uint(v, 1, SVC_MAX_WEIGHT, &n))
		return 1;
	return (unsigned)n;
}

static bool was_tried(const struct svc_tried *t, const struct svc_endpoint *ep)
{
	if (!t)
		return false;
	for (unsigned i = 0; i < t->n; i++)
		if (t->ep[i] == ep)
			return true;
	return false;
}

struct cand {
	struct svc_endpoint *ep;
	const struct workload *wl;
	unsigned weight;
	unsigned active;
};

/* Choose among @c[0..n): returns the index. */
static unsigned choose(enum svc_lb lb, const struct cand *c, unsigned n)
{
	unsigned best = 0, ties = 1;
	uint64_t total = 0, r;

	if (lb == SVC_LB_RANDOM) {
		for (unsigned i = 0; i < n; i++)
			total += c[i].weight;
		r = rnd() % total;
		for (unsigned i = 0; i < n; i++) {
			if (r < c[i].weight)
				return i;
			r -= c[i].weight;
		}
		return n - 1;
	}
	/* least (active + 1) / weight; equal ones by reservoir sampling */
	for (unsigned i = 1; i < n; i++) {
		uint64_t a = (uint64_t)(c[i].active + 1) * c[best].weight;
		uint64_t b = (uint64_t)(c[best].active + 1) * c[i].weight;
		if (a < b) {
			best = i;
			ties = 1;
		} else if (a == b && rnd() % ++ties == 0) {
			best = i;
		}
	}
	return best;
}

int services_pick(const struct service *svc, const struct workload *const *wls, size_t n,
                  struct svc_tried *tried, uint64_t now_ms, struct svc_pick *out)
{
	struct svc_state *st = svc->state;
	struct cand good[SVC_MAX_ENDPOINTS], any[SVC_MAX_ENDPOINTS];
	unsigned n_good = 0, n_any = 0, k;
	struct cand *set;
	bool panic = false;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < n && n_any < SVC_MAX_ENDPOINTS; i++) {
		struct svc_endpoint *ep;
		struct cand c;

		if (!wls[i] || !services_selects(svc, wls[i]))
			continue;
		ep = ep_find(st, wls[i]->uid, now_ms, true);
		if (!ep || was_tried(tried, ep))
			continue;
		c.ep = ep;
		c.wl = wls[i];
		c.weight = weight_of(svc, wls[i]);
		c.active = atomic_load_explicit(&ep->active, memory_order_relaxed);
		any[n_any++] = c;
		if (atomic_load_explicit(&ep->ejected_until_ms, memory_order_relaxed) > now_ms ||
		    atomic_load_explicit(&ep->unhealthy, memory_order_relaxed))
			continue;
		good[n_good++] = c;
	}
	if (n_good) {
		set = good;
		k = choose(svc->lb, good, n_good);
	} else if (n_any) {
		/* all left are ejected or failing checks: better one of them than none */
		set = any;
		k = choose(svc->lb, any, n_any);
		panic = true;
	} else {
		pthread_mutex_unlock(&st->lock);
		atomic_fetch_add(&st->no_endpoint, 1);
		return -EHOSTUNREACH;
	}
	atomic_fetch_add(&set[k].ep->active, 1);
	atomic_store_explicit(&set[k].ep->last_pick_ms, now_ms, memory_order_relaxed);
	pthread_mutex_unlock(&st->lock);
	if (panic)
		atomic_fetch_add(&st->panics, 1);
	out->ep = set[k].ep;
	out->wl = set[k].wl;
	out->panic = panic;
	if (tried && tried->n < SVC_MAX_RETRIES + 1)
		tried->ep[tried->n++] = set[k].ep;
	return 0;
}

void services_report(struct svc_endpoint *ep, bool success, uint64_t now_ms)
{
	struct svc_state *st = ep->st;
	unsigned limit, f;

	if (success) {
		atomic_store_explicit(&ep->consecutive_failures, 0, memory_order_relaxed);
		return;
	}
	limit = atomic_load_explicit(&st->outlier_failures, memory_order_relaxed);
	f = atomic_fetch_add(&ep->consecutive_failures, 1) + 1;
	if (limit && f >= limit) {
		atomic_store(&ep->consecutive_failures, 0);
		atomic_store(
		    &ep->ejected_until_ms,
		    now_ms + atomic_load_explicit(&st->outlier_ejection_ms, memory_order_relaxed));
		atomic_fetch_add(&st->ejections, 1);
	}
}

void services_done(struct svc_endpoint *ep)
{
	if (ep)
		atomic_fetch_sub(&ep->active, 1);
}

void services_set_health(const struct service *svc, const struct workload *w, bool healthy)
{
	struct svc_endpoint *ep;

	pthread_mutex_lock(&svc->state->lock);
	ep = ep_find(svc->state, w->uid, 0, true);
	if (ep)
		atomic_store(&ep->unhealthy, !healthy);
	pthread_mutex_unlock(&svc->state->lock);
}

void services_stats(const struct service *svc, uint64_t now_ms, struct svc_stats *out)
{
	struct svc_state *st = svc->state;

	memset(out, 0, sizeof(*out));
	out->active_connections = atomic_load(&st->active_conns);
	out->pending = atomic_load(&st->pending);
	out->refused_connections = atomic_load(&st->refused_connections);
	out->refused_pending = atomic_load(&st->refused_pending);
	out->no_endpoint = atomic_load(&st->no_endpoint);
	out->panics = atomic_load(&st->panics);
	out->ejections = atomic_load(&st->ejections);
	pthread_mutex_lock(&st->lock);
	out->endpoints = st->n_ep;
	for (unsigned i = 0; i < st->n_ep; i++) {
		if (atomic_load(&st->ep[i]->ejected_until_ms) > now_ms)
			out->ejected_now++;
		if (atomic_load(&st->ep[i]->unhealthy))
			out->unhealthy_now++;
	}
	pthread_mutex_unlock(&st->lock);
}

int services_endpoint_info(const struct service *svc, const struct workload *w, uint64_t now_ms,
                           unsigned *active, bool *ejected)
{
	struct svc_endpoint *ep;
	int rc = -ENOENT;

	pthread_mutex_lock(&svc->state->lock);
	ep = ep_find(svc->state, w->uid, now_ms, false);
	if (ep) {
		*active = atomic_load(&ep->active);
		*ejected = atomic_load(&ep->ejected_until_ms) > now_ms;
		rc = 0;
	}
	pthread_mutex_unlock(&svc->state->lock);
	return rc;
}

/* --- parsing ------------------------------------------------------------ */

struct sctx {
	struct service_set *ss;
	struct conf_errors *e;
	struct service *cur; /* NULL: ignoring keys */
	unsigned seen;       /* bit per scalar key already set */
};

static void on_section(void *ctx, const char *file, int line, const char *header)
{
	struct sctx *x = ctx;
	struct service_set *ss = x->ss;
	const char *name;
	struct service *s;

	x->cur = NULL;
	x->seen = 0;
	if (!header)
		return;
	if (strncmp(header, "service", 7) != 0 || (header[7] != ' ' && header[7] != '\t')) {
		conf_error(x->e, file, line, "bad section [%s]: expected [service NAME]", header);
		return;
	}
	name = header + 8;
	while (*name == ' ' || *name == '\t')
		name++;
	if (!conf_valid_name(name) || strlen(name) >= WL_NAME_MAX) {
		conf_error(x->e, file, line,
		           "bad service name \"%s\" (lowercase letters, digits, "
		           "'-', '.')",
		           name);
		return;
	}
	if (ss->n == SVC_MAX_SERVICES) {
		conf_error(x->e, file, line, "more than %d services", SVC_MAX_SERVICES);
		return;
	}
	if (ss->n == ss->cap) {
		unsigned cap = ss->cap ? ss->cap * 2 : 16;
		struct service **a = realloc(ss->svc, cap * sizeof(*a));
		if (!a)
			goto oom;
		ss->svc = a;
		ss->cap = cap;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		goto oom;
	s->state = state_new();
	if (!s->state) {
		free(s);
		goto oom;
	}
	snprintf(s->name, sizeof(s->name), "%s", name);
	snprintf(s->where, sizeof(s->where), "%s:%d", file, line);
	snprintf(s->weight_label, sizeof(s->weight_label), "%s", SVC_WEIGHT_LABEL);
	s->lb = SVC_LB_LEAST_REQUEST;
	s->connect_timeout_ms = 1000;
	s->max_connections = 1024;
	s->max_pending = 1024;
	s->retries = 2;
	s->retry_backoff_ms = 25;
	s->outlier_consecutive_failures = 5;
	s->outlier_ejection_ms = 10000;
	ss->svc[ss->n++] = s;
	x->cur = s;
	return;
oom:
	conf_error(x->e, file, line, "out of memory");
}

struct ukey {
	const char *name;
	size_t off;
	unsigned long min, max;
};

#define UK(f, lo, hi)                                                                              \
	{                                                                                          \
#f, offsetof(struct service, f), lo, hi                                            \
	}
static const struct ukey ukeys[] = {
	UK(connect_timeout_ms, 1, 600000),     UK(max_connections, 1, 1000000),
	UK(max_pending, 1, 1000000),           UK(retries, 0, SVC_MAX_RETRIES),
	UK(retry_backoff_ms, 0, 10000),        UK(outlier_consecutive_failures, 0, 1000),
	UK(outlier_ejection_ms, 100, 3600000),
};

/* "http:/health:8080" or "tcp:8080". */
static int parse_hc(const char *v, struct svc_health_check *hc, char *err, size_t errlen)
{
	const char *colon = strrchr(v, ':');
	unsigned long port;

	if (!colon || conf_parse_uint(colon + 1, 1, 65535, &port))
		goto bad;
	hc->port = (uint16_t)port;
	if (strncmp(v, "tcp:", 4) == 0 && colon == v + 3) {
		hc->kind = SVC_HC_TCP;
		return 0;
	}
	if (strncmp(v, "http:/", 6) == 0) {
		size_t plen = (size_t)(colon - (v + 5));
		if (plen >= sizeof(hc->path))
			goto bad;
		for (const char *p = v + 5; p < colon; p++)
			if (*p <= 0x20 || *p >= 0x7f)
				goto bad;
		memcpy(hc->path, v + 5, plen);
		hc->path[plen] = '\0';
		hc->kind = SVC_HC_HTTP;
		return 0;
	}
bad:
	snprintf(err, errlen, "bad health_check \"%s\" (http:/PATH:PORT or tcp:PORT)", v);
	return -EINVAL;
}

static bool once(struct sctx *x, unsigned bit, const char *file, int line, const char *key)
{
	if (x->seen & (1u << bit)) {
		conf_error(x->e, file, line, "\"%s\" given twice in this section", key);
		return false;
	}
	x->seen |= 1u << bit;
	return true;
}

static void add_vips(struct sctx *x, const char *file, int line, const char *value)
{
	struct service *s = x->cur;
	char buf[CONFDIR_MAX_LINE + 4];
	char *cur = buf, *item;

	snprintf(buf, sizeof(buf), "%s", value);
	while ((item = conf_next_item(&cur))) {
		struct wl_ip ip;

		if (!*item && !cur && s->n_vips)
			break;
		if (conf_parse_ip(item, &ip)) {
			conf_error(x->e, file, line, "vips: bad address \"%s\"", item);
			return;
		}
		if (s->n_vips == SVC_MAX_VIPS) {
			conf_error(x->e, file, line, "vips: more than %d", SVC_MAX_VIPS);
			return;
		}
		for (unsigned i = 0; i < s->n_vips; i++)
			if (wl_ip_equal(&s->vips[i], &ip)) {
				conf_error(x->e, file, line, "vips: \"%s\" twice", item);
				return;
			}
		s->vips[s->n_vips++] = ip;
	}
}

static void add_ports(struct sctx *x, const char *file, int line, const char *value)
{
	struct service *s = x->cur;
	char buf[CONFDIR_MAX_LINE + 4];
	char *cur = buf, *item;

	snprintf(buf, sizeof(buf), "%s", value);
	while ((item = conf_next_item(&cur))) {
		char *colon;
		unsigned long p, t;

		if (!*item && !cur && s->n_ports)
			break;
		colon = strchr(item, ':');
		if (colon)
			*colon = '\0';
		if (conf_parse_uint(item, 1, 65535, &p) ||
		    (colon && conf_parse_uint(colon + 1, 1, 65535, &t))) {
			if (colon)
				*colon = ':';
			conf_error(x->e, file, line,
			           "ports: bad \"%s\" (PORT or PORT:TARGET, 1..65535)", item);
			return;
		}
		if (!colon)
			t = p;
		if (s->n_ports == SVC_MAX_PORTS) {
			conf_error(x->e, file, line, "ports: more than %d", SVC_MAX_PORTS);
			return;
		}
		for (unsigned i = 0; i < s->n_ports; i++)
			if (s->ports[i].port == p) {
				conf_error(x->e, file, line, "ports: port %lu twice", p);
				return;
			}
		s->ports[s->n_ports].port = (uint16_t)p;
		s->ports[s->n_ports].target = (uint16_t)t;
		s->n_ports++;
	}
}

static void on_kv(void *ctx, const char *file, int line, const char *key, const char *value)
{
	struct sctx *x = ctx;
	struct service *s = x->cur;
	char err[200];

	if (!s)
		return;
	if (!*value) {
		conf_error(x->e, file, line, "\"%s\" has no value", key);
		return;
	}
	if (strcmp(key, "namespace") == 0) {
		if (!once(x, 0, file, line, key))
			return;
		if (!conf_valid_dns_label(value))
			conf_error(x->e, file, line, "bad namespace \"%s\"", value);
		else
			snprintf(s->ns, sizeof(s->ns), "%s", value);
	} else if (strcmp(key, "vips") == 0) {
		add_vips(x, file, line, value);
	} else if (strcmp(key, "ports") == 0) {
		add_ports(x, file, line, value);
	} else if (strcmp(key, "selector") == 0) {
		if (!s->sel && !(s->sel = calloc(1, sizeof(*s->sel)))) {
			conf_error(x->e, file, line, "out of memory");
			return;
		}
		if (selector_parse(s->sel, value, err, sizeof(err)))
			conf_error(x->e, file, line, "selector: %s", err);
	} else if (strcmp(key, "lb") == 0) {
		if (!once(x, 1, file, line, key))
			return;
		if (strcmp(value, "least_request") == 0)
			s->lb = SVC_LB_LEAST_REQUEST;
		else if (strcmp(value, "random") == 0)
			s->lb = SVC_LB_RANDOM;
		else
			conf_error(x->e, file, line, "bad lb \"%s\" (least_request or random)",
			           value);
	} else if (strcmp(key, "weight_label") == 0) {
		struct selector tmp = { 0 };
		char probe[WL_LABEL_KEY_MAX + 4];

		if (!once(x, 2, file, line, key))
			return;
		snprintf(probe, sizeof(probe), "%s=1", value);
		if (strlen(value) >= WL_LABEL_KEY_MAX ||
		    selector_parse(&tmp, probe, err, sizeof(err)))
			conf_error(x->e, file, line, "bad weight_label \"%s\"", value);
		else
			snprintf(s->weight_label, sizeof(s->weight_label), "%s", value);
	} else if (strcmp(key, "health_check") == 0) {
		if (!once(x, 3, file, line, key))
			return;
		if (parse_hc(value, &s->hc, err, sizeof(err)))
			conf_error(x->e, file, line, "%s", err);
		else if (!s->hc.interval_ms)
			s->hc.interval_ms = 5000;
	} else if (strcmp(key, "health_interval_ms") == 0) {
		unsigned long v;
		if (!once(x, 4, file, line, key))
			return;
		if (conf_parse_uint(value, 100, 3600000, &v))
			conf_error(x->e, file, line, "bad health_interval_ms \"%s\" (100..3600000)",
			           value);
		else
			s->hc.interval_ms = (unsigned)v;
	} else {
		for (unsigned i = 0; i < sizeof(ukeys) / sizeof(ukeys[0]); i++) {
			unsigned long v;
			if (strcmp(key, ukeys[i].name) != 0)
				continue;
			if (!once(x, 5 + i, file, line, key))
				return;
			if (conf_parse_uint(value, ukeys[i].min, ukeys[i].max, &v))
				conf_error(x->e, file, line, "bad %s \"%s\" (%lu..%lu)", key, value,
				           ukeys[i].min, ukeys[i].max);
			else
				*(unsigned *)((char *)s + ukeys[i].off) = (unsigned)v;
			return;
		}
		conf_error(x->e, file, line, "unknown key \"%s\" in [service]", key);
	}
}

static int finish(struct service_set *ss, struct conf_errors *e)
{
	unsigned size, n_vips = 0;
	int rc = 0;

	for (unsigned i = 0; i < ss->n; i++) {
		struct service *s = ss->svc[i];
		const char *missing = !s->ns[0]     ? "namespace"
		                      : !s->n_vips  ? "vips"
		                      : !s->n_ports ? "ports"
		                      : !s->sel     ? "selector"
		                                    : NULL;
		if (missing) {
			conf_error(e, s->where, 0, "service %s has no \"%s\"", s->name, missing);
			rc = -EINVAL;
			continue;
		}
		if (s->max_pending > s->max_connections) {
			conf_error(e, s->where, 0, "service %s: max_pending above max_connections",
			           s->name);
			rc = -EINVAL;
		}
		snprintf(s->id, sizeof(s->id), "%s/%s", s->ns, s->name);
		snprintf(s->state->ns, sizeof(s->state->ns), "%s", s->ns);
		snprintf(s->state->name, sizeof(s->state->name), "%s", s->name);
		for (unsigned j = 0; j < i; j++)
			if (strcmp(ss->svc[j]->id, s->id) == 0) {
				conf_error(e, s->where, 0, "service %s already defined at %s",
				           s->id, ss->svc[j]->where);
				rc = -EINVAL;
			}
		state_set_limits(s->state, s);
		n_vips += s->n_vips;
	}
	if (rc)
		return rc;
	for (size = 8; size < 2 * n_vips + 2; size *= 2)
		;
	ss->vips = calloc(size, sizeof(*ss->vips));
	if (!ss->vips) {
		conf_error(e, "services", 0, "out of memory");
		return -ENOMEM;
	}
	ss->vip_mask = size - 1;
	for (unsigned i = 0; i < ss->n; i++)
		for (unsigned v = 0; v < ss->svc[i]->n_vips; v++) {
			const struct wl_ip *ip = &ss->svc[i]->vips[v];
			uint32_t h;
			for (h = hash_ip(ip) & ss->vip_mask; ss->vips[h].svc;
			     h = (h + 1) & ss->vip_mask)
				if (wl_ip_equal(&ss->vips[h].ip, ip))
					break;
			if (ss->vips[h].svc) {
				conf_error(e, ss->svc[i]->where, 0,
				           "service %s: a VIP is already used by service %s at %s",
				           ss->svc[i]->id, ss->vips[h].svc->id,
				           ss->vips[h].svc->where);
				rc = -EINVAL;
				continue;
			}
			ss->vips[h].ip = *ip;
			ss->vips[h].svc = ss->svc[i];
		}
	return rc;
}

static int load(const char *dir, const char *file, const char *buf, size_t len,
                struct service_set **out, struct conf_errors *e)
{
	static const struct confdir_ops ops = { .section = on_section, .kv = on_kv };
	struct sctx x = { .e = e };
	unsigned errs;
	int rc;

	x.ss = calloc(1, sizeof(*x.ss));
	if (!x.ss) {
		conf_error(e, dir ? dir : file, 0, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&x.ss->refs, 1);
	if (dir)
		errs = confdir_parse_dir(dir, &ops, &x, e);
	else
		errs = confdir_parse_buf(file, buf, len, &ops, &x, e);
	rc = errs ? -EINVAL : finish(x.ss, e);
	if (rc) {
		set_free(x.ss);
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	*out = x.ss;
	return 0;
}

int services_load_dir(const char *dir, struct service_set **out, struct conf_errors *err)
{
	return load(dir, NULL, NULL, 0, out, err);
}

int services_load_buf(const char *file, const char *buf, size_t len, struct service_set **out,
                      struct conf_errors *err)
{
	return load(NULL, file, buf, len, out, err);
}
