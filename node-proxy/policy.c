/*
 * policy: parsing, validation, indexing and evaluation of authorization
 * policies and peer authentication.
 *
 * Building happens in one pass over the files (confdir calls us back per
 * section and key), then a finishing step checks what only a whole set can
 * show (missing keys, duplicate names), sorts everything by namespace and
 * builds the namespace index used by policy_eval().  Evaluation then only
 * visits the policies of the root namespace and of the workload's own.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "node-proxy/confdir.h"
#include "node-proxy/policy.h"

enum { M_EXACT, M_PREFIX, M_SUFFIX, M_ANY };

struct strmatch {
	uint8_t kind;
	uint16_t len;
	char *s;
};

enum field_id {
	F_PRINCIPALS,
	F_NOT_PRINCIPALS,
	F_NAMESPACES,
	F_NOT_NAMESPACES,
	F_IP_BLOCKS,
	F_NOT_IP_BLOCKS,
	F_PORTS,
	F_NOT_PORTS,
	F_COUNT
};

static const char *const field_names[F_COUNT] = {
	"principals", "not_principals", "namespaces", "not_namespaces",
	"ip_blocks",  "not_ip_blocks",  "ports",      "not_ports",
};

struct field {
	bool present;
	unsigned n, cap;
	union {
		struct strmatch *str; /* principals, namespaces */
		struct cidr *cidr;    /* ip_blocks */
		uint16_t *port;       /* ports */
		void *any;
	};
};

struct rule {
	struct field f[F_COUNT];
};

enum { K_AUTHZ, K_PEERAUTH };
enum { A_ALLOW, A_DENY };
enum { MODE_UNSET, MODE_PERMISSIVE, MODE_STRICT };

struct policy {
	int kind;
	char name[WL_NAME_MAX];
	char ns[WL_NAME_MAX];
	char id[2 * WL_NAME_MAX]; /* "ns/name", what verdicts report */
	char where[320];          /* "file:line" of the header, for later errors */
	struct selector *sel;     /* NULL: the whole namespace */
	int action;               /* K_AUTHZ */
	bool has_action;
	int mode; /* K_PEERAUTH */
	unsigned n_rules;
	struct rule *rules;
};

/* Where the policies of one namespace sit in the sorted arrays. */
struct ns_slot {
	const char *ns; /* NULL: empty slot */
	unsigned authz_start, authz_n;
	unsigned pa_start, pa_n;
};

struct policy_set {
	atomic_uint refs;
	char root_ns[WL_NAME_MAX];
	unsigned n, cap; /* all, in parse order, then sorted */
	struct policy **all;
	/* after finishing: authz[] and pa[] sorted by (ns, name) */
	unsigned n_authz, n_pa;
	struct policy **authz, **pa;
	unsigned idx_mask;
	struct ns_slot *idx;
};

/* --- evaluation ------------------------------------------------------- */

static bool str_match(const struct strmatch *m, const char *s, size_t len)
{
	switch (m->kind) {
	case M_ANY:
		return true;
	case M_EXACT:
		return len == m->len && memcmp(s, m->s, len) == 0;
	case M_PREFIX:
		return len >= m->len && memcmp(s, m->s, m->len) == 0;
	default:
		return len >= m->len && memcmp(s + len - m->len, m->s, m->len) == 0;
	}
}

static bool any_str(const struct field *f, const char *s, size_t len)
{
	if (!s)
		return false; /* no identity: not even "*" matches */
	for (unsigned i = 0; i < f->n; i++)
		if (str_match(&f->str[i], s, len))
			return true;
	return false;
}

static bool any_cidr(const struct field *f, const struct wl_ip *ip)
{
	for (unsigned i = 0; i < f->n; i++)
		if (cidr_contains(&f->cidr[i], ip))
			return true;
	return false;
}

static bool any_port(const struct field *f, uint16_t port)
{
	for (unsigned i = 0; i < f->n; i++)
		if (f->port[i] == port)
			return true;
	return false;
}

struct eval_src {
	const char *princ; /* without "spiffe://", or NULL */
	size_t princ_len;
	const char *ns;
	size_t ns_len;
	const struct policy_conn *c;
};

static bool rule_matches(const struct rule *r, const struct eval_src *s)
{
	const struct field *f = r->f;

	if (f[F_PRINCIPALS].present && !any_str(&f[F_PRINCIPALS], s->princ, s->princ_len))
		return false;
	if (f[F_NOT_PRINCIPALS].present && any_str(&f[F_NOT_PRINCIPALS], s->princ, s->princ_len))
		return false;
	if (f[F_NAMESPACES].present && !any_str(&f[F_NAMESPACES], s->ns, s->ns_len))
		return false;
	if (f[F_NOT_NAMESPACES].present && any_str(&f[F_NOT_NAMESPACES], s->ns, s->ns_len))
		return false;
	if (f[F_IP_BLOCKS].present && !any_cidr(&f[F_IP_BLOCKS], &s->c->src_ip))
		return false;
	if (f[F_NOT_IP_BLOCKS].present && any_cidr(&f[F_NOT_IP_BLOCKS], &s->c->src_ip))
		return false;
	if (f[F_PORTS].present && !any_port(&f[F_PORTS], s->c->dst_port))
		return false;
	if (f[F_NOT_PORTS].present && any_port(&f[F_NOT_PORTS], s->c->dst_port))
		return false;
	return true;
}

/* No rules: matches nothing.  A rule with no fields: matches everything. */
static bool policy_matches(const struct policy *p, const struct eval_src *s)
{
	for (unsigned i = 0; i < p->n_rules; i++)
		if (rule_matches(&p->rules[i], s))
			return true;
	return false;
}

static bool applies(const struct policy *p, const struct workload *dst)
{
	return !p->sel || selector_matches(p->sel, dst);
}

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

static const struct ns_slot *ns_find(const struct policy_set *ps, const char *ns)
{
	uint32_t i;

	if (!ps->idx)
		return NULL;
	for (i = hash_str(ns) & ps->idx_mask;; i = (i + 1) & ps->idx_mask) {
		const struct ns_slot *s = &ps->idx[i];
		if (!s->ns)
			return NULL;
		if (strcmp(s->ns, ns) == 0)
			return s;
	}
}

static const char *strip_spiffe(const char *p)
{
	return strncmp(p, "spiffe://", 9) == 0 ? p + 9 : p;
}

/* "TD/ns/NS/sa/SA" -> NS, without copying. */
static void ns_of_principal(const char *p, const char **ns, size_t *len)
{
	const char *s = strstr(p, "/ns/"), *e;

	*ns = NULL;
	*len = 0;
	if (!s)
		return;
	s += 4;
	e = strchr(s, '/');
	*ns = s;
	*len = e ? (size_t)(e - s) : strlen(s);
}

/* The peer_authentication mode for @dst: the workload-selecting one in its
 * namespace, else its namespace's, else the root namespace's. */
static const struct policy *peer_auth_for(const struct policy_set *ps, const struct workload *dst,
                                          const struct ns_slot *root, const struct ns_slot *own)
{
	const struct policy *ns_wide = NULL;

	if (own)
		for (unsigned i = own->pa_start; i < own->pa_start + own->pa_n; i++) {
			const struct policy *p = ps->pa[i];
			if (!p->sel)
				ns_wide = p;
			else if (selector_matches(p->sel, dst))
				return p;
		}
	if (ns_wide)
		return ns_wide;
	if (root && own != root)
		for (unsigned i = root->pa_start; i < root->pa_start + root->pa_n; i++)
			if (!ps->pa[i]->sel)
				return ps->pa[i];
	return NULL;
}

static int verdict(struct policy_verdict *v, enum policy_reason r, const struct policy *p)
{
	v->reason = r;
	v->policy = p ? p->id : NULL;
	v->allow = r == POLICY_ALLOW_NO_POLICY || r == POLICY_ALLOW_MATCH;
	return v->allow ? 0 : -EACCES;
}

int policy_eval(const struct policy_set *ps, const struct workload *dst,
                const struct policy_conn *c, struct policy_verdict *v)
{
	const struct ns_slot *slots[2], *root, *own;
	const struct policy *pa, *allowed = NULL;
	struct eval_src s = { .c = c };
	unsigned n_slots = 0, i, k;
	bool any_allow = false;

	if (!ps)
		return verdict(v, POLICY_ALLOW_NO_POLICY, NULL);
	root = ns_find(ps, ps->root_ns);
	own = ns_find(ps, dst->ns);
	pa = peer_auth_for(ps, dst, root, own);
	if (pa && pa->mode == MODE_STRICT && (c->plaintext || !c->src_principal))
		return verdict(v, POLICY_DENY_PLAINTEXT, pa);

	/* plaintext carries no identity, whatever the caller filled in */
	if (c->src_principal && !c->plaintext) {
		s.princ = strip_spiffe(c->src_principal);
		s.princ_len = strlen(s.princ);
	}
	if (c->plaintext) {
		/* no namespace either */
	} else if (c->src_ns) {
		s.ns = c->src_ns;
		s.ns_len = strlen(c->src_ns);
	} else if (s.princ) {
		ns_of_principal(s.princ, &s.ns, &s.ns_len);
	}

	/* the root namespace's policies apply everywhere, then the workload's own */
	if (root)
		slots[n_slots++] = root;
	if (own && own != root)
		slots[n_slots++] = own;

	for (k = 0; k < n_slots; k++)
		for (i = slots[k]->authz_start; i < slots[k]->authz_start + slots[k]->authz_n;
		     i++) {
			const struct policy *p = ps->authz[i];
			if (!applies(p, dst))
				continue;
			if (p->action == A_DENY) {
				if (policy_matches(p, &s))
					return verdict(v, POLICY_DENY_MATCH, p);
				continue;
			}
			any_allow = true;
			if (!allowed && policy_matches(p, &s))
				allowed = p;
		}
	if (!any_allow)
		return verdict(v, POLICY_ALLOW_NO_POLICY, NULL);
	if (allowed)
		return verdict(v, POLICY_ALLOW_MATCH, allowed);
	return verdict(v, POLICY_DENY_NO_MATCH, NULL);
}

const char *policy_reason_str(enum policy_reason r)
{
	switch (r) {
	case POLICY_ALLOW_NO_POLICY:
		return "allow_no_policy";
	case POLICY_ALLOW_MATCH:
		return "allow_match";
	case POLICY_DENY_MATCH:
		return "deny_match";
	case POLICY_DENY_NO_MATCH:
		return "deny_no_match";
	case POLICY_DENY_PLAINTEXT:
		return "deny_plaintext";
	}
	return "?";
}

int policy_principal_of(const struct workload *w, const char *trust_domain, char *buf, size_t len)
{
	int n = snprintf(buf, len, "spiffe://%s/ns/%s/sa/%s", trust_domain, w->ns,
	                 w->sa[0] ? w->sa : "default");

	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* --- lifetime --------------------------------------------------------- */

static void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (unsigned r = 0; r < p->n_rules; r++)
		for (unsigned f = 0; f < F_COUNT; f++) {
			struct field *fl = &p->rules[r].f[f];
			if (f <= F_NOT_NAMESPACES)
				for (unsigned i = 0; i < fl->n; i++)
					free(fl->str[i].s);
			free(fl->any);
		}
	free(p->rules);
	free(p->sel);
	free(p);
}

static void set_free(struct policy_set *ps)
{
	for (unsigned i = 0; i < ps->n; i++)
		policy_free(ps->all[i]);
	free(ps->all);
	free(ps->authz);
	free(ps->pa);
	free(ps->idx);
	free(ps);
}

struct policy_set *policy_set_get(struct policy_set *ps)
{
	if (ps)
		atomic_fetch_add_explicit(&ps->refs, 1, memory_order_relaxed);
	return ps;
}

void policy_set_put(struct policy_set *ps)
{
	if (ps && atomic_fetch_sub_explicit(&ps->refs, 1, memory_order_acq_rel) == 1)
		set_free(ps);
}

unsigned policy_set_count(const struct policy_set *ps)
{
	return ps ? ps->n : 0;
}

/* --- parsing ---------------------------------------------------------- */

enum { S_NONE, S_IGNORE, S_POLICY, S_RULE, S_PEERAUTH };

struct pctx {
	struct policy_set *ps;
	struct conf_errors *e;
	int state;
	struct policy *cur;  /* S_POLICY, S_RULE, S_PEERAUTH */
	struct rule *rule;   /* S_RULE */
	char file[4096];     /* file of the last section, to tie [rule] to its policy */
	struct policy *last; /* last [policy] of that file */
	bool seen[8];        /* scalar keys already set in this section */
};

/* Split "TYPE NAME" into its two words; false if not exactly two. */
static bool split_header(const char *h, char *type, size_t tl, char *name, size_t nl)
{
	const char *sp = strpbrk(h, " \t");
	const char *n;

	if (!sp || (size_t)(sp - h) >= tl)
		return false;
	memcpy(type, h, (size_t)(sp - h));
	type[sp - h] = '\0';
	n = sp;
	while (*n == ' ' || *n == '\t')
		n++;
	if (!*n || strpbrk(n, " \t") || strlen(n) >= nl)
		return false;
	memcpy(name, n, strlen(n) + 1);
	return true;
}

static struct policy *new_policy(struct pctx *x, const char *file, int line, int kind,
                                 const char *name)
{
	struct policy_set *ps = x->ps;
	struct policy *p;

	if (ps->n == POLICY_MAX_POLICIES) {
		conf_error(x->e, file, line, "more than %d policies", POLICY_MAX_POLICIES);
		return NULL;
	}
	if (ps->n == ps->cap) {
		unsigned cap = ps->cap ? ps->cap * 2 : 16;
		struct policy **a = realloc(ps->all, cap * sizeof(*a));
		if (!a)
			goto oom;
		ps->all = a;
		ps->cap = cap;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto oom;
	p->kind = kind;
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->where, sizeof(p->where), "%s:%d", file, line);
	ps->all[ps->n++] = p;
	return p;
oom:
	conf_error(x->e, file, line, "out of memory");
	return NULL;
}

static void on_section(void *ctx, const char *file, int line, const char *header)
{
	struct pctx *x = ctx;
	char type[32], name[WL_NAME_MAX];

	if (strcmp(x->file, file) != 0) {
		snprintf(x->file, sizeof(x->file), "%s", file);
		x->last = NULL;
	}
	x->state = S_IGNORE;
	x->cur = NULL;
	x->rule = NULL;
	memset(x->seen, 0, sizeof(x->seen));
	if (!header)
		return;
	if (!split_header(header, type, sizeof(type), name, sizeof(name))) {
		conf_error(x->e, file, line,
		           "bad section [%s]: expected [policy NAME], [rule NAME] or "
		           "[peer_authentication NAME]",
		           header);
		return;
	}
	if (!conf_valid_name(name)) {
		conf_error(x->e, file, line,
		           "bad name \"%s\" (lowercase letters, digits, '-', '.')", name);
		return;
	}
	if (strcmp(type, "policy") == 0) {
		x->cur = x->last = new_policy(x, file, line, K_AUTHZ, name);
		x->state = x->cur ? S_POLICY : S_IGNORE;
	} else if (strcmp(type, "peer_authentication") == 0) {
		x->cur = new_policy(x, file, line, K_PEERAUTH, name);
		x->state = x->cur ? S_PEERAUTH : S_IGNORE;
	} else if (strcmp(type, "rule") == 0) {
		struct policy *p = x->last;
		struct rule *r;

		if (!p || strcmp(p->name, name) != 0) {
			conf_error(x->e, file, line,
			           "[rule %s] must follow [policy %s] in the same file", name,
			           name);
			return;
		}
		if (p->n_rules == POLICY_MAX_RULES) {
			conf_error(x->e, file, line, "more than %d rules in policy %s",
			           POLICY_MAX_RULES, name);
			return;
		}
		r = realloc(p->rules, (p->n_rules + 1) * sizeof(*r));
		if (!r) {
			conf_error(x->e, file, line, "out of memory");
			return;
		}
		p->rules = r;
		x->rule = &r[p->n_rules++];
		memset(x->rule, 0, sizeof(*x->rule));
		x->cur = p;
		x->state = S_RULE;
	} else {
		conf_error(x->e, file, line,
		           "unknown section type \"%s\" (policy, rule, peer_authentication)", type);
	}
}

static bool pattern_ok(const char *v, bool ns)
{
	size_t n = strlen(v);

	if (n == 0 || n > POLICY_MAX_VALUE_LEN)
		return false;
	if (strcmp(v, "*") == 0)
		return true;
	for (size_t i = 0; i < n; i++) {
		char ch = v[i];
		if (ch == '*') {
			if ((i != 0 && i != n - 1) || n == 1)
				return false;
			continue;
		}
		if (ns) {
			if (!(ch >= 'a' && ch <= 'z') && !(ch >= '0' && ch <= '9') && ch != '-')
				return false;
		} else if (ch <= 0x20 || ch >= 0x7f || ch == ',') {
			return false;
		}
	}
	return !(v[0] == '*' && v[n - 1] == '*'); /* "*x*" is not a form */
}

static int grow(struct field *f, size_t elem)
{
	if (f->n < f->cap)
		return 0;
	unsigned cap = f->cap ? f->cap * 2 : 4;
	if (cap > POLICY_MAX_VALUES)
		cap = POLICY_MAX_VALUES;
	void *a = realloc(f->any, cap * elem);
	if (!a)
		return -ENOMEM;
	f->any = a;
	f->cap = cap;
	return 0;
}

static void add_values(struct pctx *x, const char *file, int line, enum field_id id,
                       const char *value)
{
	struct field *f = &x->rule->f[id];
	char buf[CONFDIR_MAX_LINE + 4], err[160];
	char *cur = buf, *item;

	snprintf(buf, sizeof(buf), "%s", value);
	f->present = true;
	while ((item = conf_next_item(&cur))) {
		if (!*item && !cur && f->n)
			break; /* "a, b," before a continuation line */
		if (!*item) {
			conf_error(x->e, file, line, "%s: empty value", field_names[id]);
			return;
		}
		if (f->n == POLICY_MAX_VALUES) {
			conf_error(x->e, file, line, "%s: more than %d values", field_names[id],
			           POLICY_MAX_VALUES);
			return;
		}
		if (id <= F_NOT_NAMESPACES) {
			bool is_ns = id >= F_NAMESPACES;
			const char *v = is_ns ? item : strip_spiffe(item);
			struct strmatch m = { 0 };
			size_t n;

			if (!pattern_ok(v, is_ns)) {
				conf_error(
				    x->e, file, line,
				    "%s: bad %s \"%s\" (exact, \"prefix*\", \"*suffix\" or \"*\")",
				    field_names[id], is_ns ? "namespace" : "principal", item);
				return;
			}
			n = strlen(v);
			m.kind = M_EXACT;
			if (strcmp(v, "*") == 0) {
				m.kind = M_ANY;
				n = 0;
			} else if (v[n - 1] == '*') {
				m.kind = M_PREFIX;
				n--;
			} else if (v[0] == '*') {
				m.kind = M_SUFFIX;
				v++;
				n--;
			}
			m.len = (uint16_t)n;
			m.s = strndup(v, m.len);
			if (!m.s || grow(f, sizeof(m))) {
				free(m.s);
				conf_error(x->e, file, line, "out of memory");
				return;
			}
			f->str[f->n++] = m;
		} else if (id <= F_NOT_IP_BLOCKS) {
			struct cidr c;

			if (cidr_parse(item, &c, err, sizeof(err))) {
				conf_error(x->e, file, line, "%s: %s", field_names[id], err);
				return;
			}
			if (grow(f, sizeof(c))) {
				conf_error(x->e, file, line, "out of memory");
				return;
			}
			f->cidr[f->n++] = c;
		} else {
			unsigned long port;

			if (conf_parse_uint(item, 1, 65535, &port)) {
				conf_error(x->e, file, line, "%s: bad port \"%s\" (1..65535)",
				           field_names[id], item);
				return;
			}
			if (grow(f, sizeof(uint16_t))) {
				conf_error(x->e, file, line, "out of memory");
				return;
			}
			f->port[f->n++] = (uint16_t)port;
		}
	}
}

/* A key that may appear once per section; false (and an error) if again. */
static bool once(struct pctx *x, unsigned slot, const char *file, int line, const char *key)
{
	if (x->seen[slot]) {
		conf_error(x->e, file, line, "\"%s\" given twice in this section", key);
		return false;
	}
	x->seen[slot] = true;
	return true;
}

static void on_kv(void *ctx, const char *file, int line, const char *key, const char *value)
{
	struct pctx *x = ctx;
	struct policy *p = x->cur;
	char err[200];

	if (x->state == S_IGNORE || x->state == S_NONE)
		return;
	if (!*value) {
		conf_error(x->e, file, line, "\"%s\" has no value", key);
		return;
	}
	if (x->state == S_RULE) {
		for (int i = 0; i < F_COUNT; i++)
			if (strcmp(key, field_names[i]) == 0) {
				add_values(x, file, line, (enum field_id)i, value);
				return;
			}
		conf_error(x->e, file, line,
		           "unknown key \"%s\" in [rule] (principals, namespaces, ip_blocks, ports "
		           "and their not_ forms)",
		           key);
		return;
	}
	if (strcmp(key, "namespace") == 0) {
		if (!once(x, 0, file, line, key))
			return;
		if (!conf_valid_dns_label(value)) {
			conf_error(x->e, file, line, "bad namespace \"%s\"", value);
			return;
		}
		snprintf(p->ns, sizeof(p->ns), "%s", value);
	} else if (strcmp(key, "selector") == 0) {
		if (!p->sel && !(p->sel = calloc(1, sizeof(*p->sel)))) {
			conf_error(x->e, file, line, "out of memory");
			return;
		}
		if (selector_parse(p->sel, value, err, sizeof(err)))
			conf_error(x->e, file, line, "selector: %s", err);
	} else if (strcmp(key, "action") == 0 && x->state == S_POLICY) {
		if (!once(x, 1, file, line, key))
			return;
		p->has_action = true;
		if (strcmp(value, "ALLOW") == 0)
			p->action = A_ALLOW;
		else if (strcmp(value, "DENY") == 0)
			p->action = A_DENY;
		else
			conf_error(x->e, file, line, "bad action \"%s\" (ALLOW or DENY)", value);
	} else if (strcmp(key, "mode") == 0 && x->state == S_PEERAUTH) {
		if (!once(x, 2, file, line, key))
			return;
		if (strcmp(value, "STRICT") == 0)
			p->mode = MODE_STRICT;
		else if (strcmp(value, "PERMISSIVE") == 0)
			p->mode = MODE_PERMISSIVE;
		else
			conf_error(x->e, file, line, "bad mode \"%s\" (STRICT or PERMISSIVE)",
			           value);
	} else {
		conf_error(x->e, file, line, "unknown key \"%s\" in [%s] (%s)", key,
		           x->state == S_POLICY ? "policy" : "peer_authentication",
		           x->state == S_POLICY ? "namespace, selector, action"
		                                : "namespace, selector, mode");
	}
}

static int cmp_policy(const void *a, const void *b)
{
	const struct policy *p = *(struct policy *const *)a, *q = *(struct policy *const *)b;
	int c = strcmp(p->ns, q->ns);

	return c ? c : strcmp(p->name, q->name);
}

/* Checks that need the whole set, the sort and the namespace index. */
static int finish(struct policy_set *ps, struct conf_errors *e)
{
	unsigned i, n_ns = 0, size;
	int rc = 0;

	for (i = 0; i < ps->n; i++) {
		struct policy *p = ps->all[i];
		if (!p->ns[0]) {
			conf_error(e, p->where, 0, "%s %s has no \"namespace\"",
			           p->kind == K_AUTHZ ? "policy" : "peer_authentication", p->name);
			rc = -EINVAL;
		}
		if (p->kind == K_PEERAUTH && p->mode == MODE_UNSET) {
			conf_error(e, p->where, 0, "peer_authentication %s has no \"mode\"",
			           p->name);
			rc = -EINVAL;
		}
		if (p->kind == K_PEERAUTH && p->sel && strcmp(p->ns, ps->root_ns) == 0) {
			conf_error(e, p->where, 0,
			           "peer_authentication %s: no selector in the root namespace %s",
			           p->name, ps->root_ns);
			rc = -EINVAL;
		}
		snprintf(p->id, sizeof(p->id), "%s/%s", p->ns, p->name);
		if (p->kind == K_AUTHZ)
			ps->n_authz++;
		else
			ps->n_pa++;
	}
	if (rc)
		return rc;
	ps->authz = calloc(ps->n_authz + 1, sizeof(*ps->authz));
	ps->pa = calloc(ps->n_pa + 1, sizeof(*ps->pa));
	if (!ps->authz || !ps->pa)
		goto oom;
	ps->n_authz = ps->n_pa = 0;
	for (i = 0; i < ps->n; i++) {
		if (ps->all[i]->kind == K_AUTHZ)
			ps->authz[ps->n_authz++] = ps->all[i];
		else
			ps->pa[ps->n_pa++] = ps->all[i];
	}
	qsort(ps->authz, ps->n_authz, sizeof(*ps->authz), cmp_policy);
	qsort(ps->pa, ps->n_pa, sizeof(*ps->pa), cmp_policy);
	for (i = 1; i < ps->n_authz; i++)
		if (cmp_policy(&ps->authz[i - 1], &ps->authz[i]) == 0) {
			conf_error(e, ps->authz[i]->where, 0, "policy %s already defined at %s",
			           ps->authz[i]->id, ps->authz[i - 1]->where);
			rc = -EINVAL;
		}
	for (i = 1; i < ps->n_pa; i++) {
		if (cmp_policy(&ps->pa[i - 1], &ps->pa[i]) == 0) {
			conf_error(e, ps->pa[i]->where, 0,
			           "peer_authentication %s already defined at %s", ps->pa[i]->id,
			           ps->pa[i - 1]->where);
			rc = -EINVAL;
		}
	}
	/* one namespace-wide peer_authentication per namespace: no "oldest wins" */
	for (i = 0; i < ps->n_pa; i++)
		for (unsigned j = i + 1; j < ps->n_pa && !strcmp(ps->pa[i]->ns, ps->pa[j]->ns); j++)
			if (!ps->pa[i]->sel && !ps->pa[j]->sel) {
				conf_error(
				    e, ps->pa[j]->where, 0,
				    "second namespace-wide peer_authentication in %s (first: %s)",
				    ps->pa[j]->ns, ps->pa[i]->where);
				rc = -EINVAL;
			}
	if (rc)
		return rc;

	/* index: distinct namespaces of both arrays */
	for (i = 0; i < ps->n; i++)
		n_ns++; /* an upper bound is enough */
	for (size = 8; size < 2 * n_ns + 2; size *= 2)
		;
	ps->idx = calloc(size, sizeof(*ps->idx));
	if (!ps->idx)
		goto oom;
	ps->idx_mask = size - 1;
	for (int pass = 0; pass < 2; pass++) {
		struct policy **arr = pass ? ps->pa : ps->authz;
		unsigned n = pass ? ps->n_pa : ps->n_authz;
		for (i = 0; i < n;) {
			unsigned j = i;
			uint32_t h;
			while (j < n && strcmp(arr[j]->ns, arr[i]->ns) == 0)
				j++;
			for (h = hash_str(arr[i]->ns) & ps->idx_mask;; h = (h + 1) & ps->idx_mask)
				if (!ps->idx[h].ns || strcmp(ps->idx[h].ns, arr[i]->ns) == 0)
					break;
			ps->idx[h].ns = arr[i]->ns;
			if (pass) {
				ps->idx[h].pa_start = i;
				ps->idx[h].pa_n = j - i;
			} else {
				ps->idx[h].authz_start = i;
				ps->idx[h].authz_n = j - i;
			}
			i = j;
		}
	}
	return 0;
oom:
	conf_error(e, "policy", 0, "out of memory");
	return -ENOMEM;
}

static struct policy_set *set_new(const char *root_ns)
{
	struct policy_set *ps = calloc(1, sizeof(*ps));

	if (!ps)
		return NULL;
	atomic_init(&ps->refs, 1);
	snprintf(ps->root_ns, sizeof(ps->root_ns), "%s",
	         root_ns ? root_ns : POLICY_DEFAULT_ROOT_NS);
	return ps;
}

static int load(const char *dir, const char *file, const char *buf, size_t len, const char *root_ns,
                struct policy_set **out, struct conf_errors *e)
{
	static const struct confdir_ops ops = { .section = on_section, .kv = on_kv };
	struct pctx x = { .e = e };
	unsigned errs;
	int rc;

	x.ps = set_new(root_ns);
	if (!x.ps) {
		conf_error(e, dir ? dir : file, 0, "out of memory");
		return -ENOMEM;
	}
	if (dir)
		errs = confdir_parse_dir(dir, &ops, &x, e);
	else
		errs = confdir_parse_buf(file, buf, len, &ops, &x, e);
	rc = errs ? -EINVAL : finish(x.ps, e);
	if (rc) {
		set_free(x.ps);
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	*out = x.ps;
	return 0;
}

int policy_load_dir(const char *dir, const char *root_ns, struct policy_set **out,
                    struct conf_errors *err)
{
	return load(dir, NULL, NULL, 0, root_ns, out, err);
}

int policy_load_buf(const char *file, const char *buf, size_t len, const char *root_ns,
                    struct policy_set **out, struct conf_errors *err)
{
	return load(NULL, file, buf, len, root_ns, out, err);
}
