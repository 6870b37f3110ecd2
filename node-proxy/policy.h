/*
 * policy: L4 authorization policies and peer authentication (STRICT mTLS),
 * loaded from a directory of INI files, evaluated by a pure function.
 *
 * A policy_set is immutable once built and reference counted: whoever holds
 * a pointer holds a reference (policy_set_get/put); the last put frees it.
 * policy_eval() allocates nothing, takes no lock and may run on any thread.
 * Semantics (docs/policy.md): STRICT refuses plaintext; then any matching
 * DENY denies; else no ALLOW policy for the workload allows; else a matching
 * ALLOW allows; else deny.
 */
#ifndef AMBIT_NP_POLICY_H
#define AMBIT_NP_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node-proxy/workload.h"

#define POLICY_DEFAULT_ROOT_NS "ambit-system"
#define POLICY_MAX_POLICIES    4096 /* [policy] plus [peer_authentication] per set */
#define POLICY_MAX_RULES       64   /* [rule] sections per policy */
#define POLICY_MAX_VALUES      256  /* values per field of a rule */
#define POLICY_MAX_VALUE_LEN   255  /* bytes of one principal or namespace pattern */

struct policy_set;
struct conf_errors;

/* What is known about a connection arriving at (or leaving for) @dst. */
struct policy_conn {
	/* Both ignored when @plaintext: a plaintext peer has no identity. */
	const char *src_principal; /* peer's SPIFFE id "spiffe://TD/ns/NS/sa/SA", NULL if none */
	const char *src_ns;        /* NULL: taken from the principal's "/ns/NS/" */
	struct wl_ip src_ip;       /* family 0: unknown, matches no ip_blocks */
	uint16_t dst_port;         /* the port the client asked for (the app's port) */
	bool plaintext;            /* not through an authenticated HBONE tunnel */
};

enum policy_reason {
	POLICY_ALLOW_NO_POLICY, /* no ALLOW policy applies to the workload */
	POLICY_ALLOW_MATCH,     /* an ALLOW policy matched (and no DENY) */
	POLICY_DENY_MATCH,      /* a DENY policy matched */
	POLICY_DENY_NO_MATCH,   /* ALLOW policies apply, none matched */
	POLICY_DENY_PLAINTEXT,  /* peer_authentication STRICT and no mTLS */
};

struct policy_verdict {
	bool allow;
	enum policy_reason reason;
	/* "NS/NAME" of the deciding policy or peer_authentication, or NULL.
	 * Points into the set: valid while the caller holds its reference. */
	const char *policy;
};

/*
 * Decide.  Returns 0 (allow) or -EACCES (deny) and fills @v.  @ps NULL is
 * the empty set (allows everything).  @dst is the destination workload.
 */
int policy_eval(const struct policy_set *ps, const struct workload *dst,
                const struct policy_conn *c, struct policy_verdict *v);
/* "allow_no_policy", "allow_match", "deny_match", "deny_no_match", "deny_plaintext" */
const char *policy_reason_str(enum policy_reason r);

/*
 * Load every *.ini of @dir.  @root_ns is the namespace whose policies apply
 * to every workload (NULL: POLICY_DEFAULT_ROOT_NS).  On success returns 0
 * and a new set (one reference, the caller's) in *@out.  On any error
 * returns -EINVAL with the messages ("FILE:LINE: ...") in @err and leaves
 * *@out untouched: a directory with one bad file yields no set at all.
 */
int policy_load_dir(const char *dir, const char *root_ns, struct policy_set **out,
                    struct conf_errors *err);
/* The same for the @len bytes of a single file named @file. */
int policy_load_buf(const char *file, const char *buf, size_t len, const char *root_ns,
                    struct policy_set **out, struct conf_errors *err);

/* "spiffe://TD/ns/NS/sa/SA" of @w into @buf: the identity the data plane
 * expects from an endpoint.  0, or -ENOSPC if @len is too small. */
int policy_principal_of(const struct workload *w, const char *trust_domain, char *buf, size_t len);

struct policy_set *policy_set_get(struct policy_set *ps); /* NULL-safe, returns @ps */
void policy_set_put(struct policy_set *ps);               /* NULL-safe */
unsigned policy_set_count(const struct policy_set *ps);   /* policies + peer_authentications */

#endif
