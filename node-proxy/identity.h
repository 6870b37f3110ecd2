/*
 * identity: the per-service-account X.509-SVIDs of the pods this node serves.
 *
 * One entry per (namespace, service account): pods sharing a service account
 * share its SVID.  An entry is created when the first pod of that account is
 * added (svid_issue from the node intermediate, ECDSA P-256) and dropped with
 * its last pod.  Each entry holds a tls_identity_slot: a renewal thread
 * re-issues at half life (or at once on identity_renew_now) and swaps the
 * new identity into the slot, so new connections present the new certificate
 * while open ones keep the reference they started with.  Private keys live
 * only in memory: svid.c keeps them in locked pages and tls_identity_new()
 * wipes its copies; the SVID's key is wiped right after the identity is
 * built.  Thread safe (one mutex; lookups are per new connection, not per
 * packet).
 */
#ifndef AMBIT_NP_IDENTITY_H
#define AMBIT_NP_IDENTITY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct identity_cache;
struct tls_identity;

/* Load @ca_dir/node-cert.pem, node-key.pem, root-cert.pem; the node
 * intermediate's trust domain must equal @td.  Starts the renewal thread.
 * 0 or -errno with a message in @err. */
int identity_cache_new(const char *ca_dir, const char *td, unsigned lifetime_s,
                       struct identity_cache **out, char *err, size_t errlen);
/* Stop the thread, drop every entry (keys wiped).  NULL is a no-op. */
void identity_cache_free(struct identity_cache *ic);

/* Pod @uid of service account @sa in @ns is served: make sure its SVID
 * exists (issued now if not).  Idempotent per uid (a re-add with another
 * account moves the pod).  0 or -errno with a message. */
int identity_pod_add(struct identity_cache *ic, const char *uid, const char *ns, const char *sa,
                     char *err, size_t errlen);
/* Pod @uid is gone: its account's SVID is dropped with its last pod. */
void identity_pod_del(struct identity_cache *ic, const char *uid);

/* The current identity of (@ns, @sa), a new reference (tls_identity_unref),
 * or NULL when no pod of that account is served. */
struct tls_identity *identity_get(struct identity_cache *ic, const char *ns, const char *sa);
/* Format the SPIFFE ID of (@ns, @sa) in the cache's trust domain. */
int identity_spiffe_id(const struct identity_cache *ic, const char *ns, const char *sa, char *out,
                       size_t outlen);
const char *identity_trust_domain(const struct identity_cache *ic);

/* Re-issue every SVID now (SIGHUP, tests); returns at once, the renewal
 * thread does the work. */
void identity_renew_now(struct identity_cache *ic);

/* [{"id", "serial", "not_before", "not_after", "renew_at", "generation",
 *   "sha256", "pods"}] (new reference).  Never key bytes. */
json_t *identity_json(struct identity_cache *ic);

/* Renewals done, failures (process lifetime). */
void identity_counters(struct identity_cache *ic, uint64_t *issued, uint64_t *failed);

#endif
