/*
 * authz: authorization policy enforced in the data plane.
 *
 * Owns the process's confwatch instance (policies.d, services.d) and a
 * small thread that polls it, so a changed file is reloaded without the
 * workers or the admin thread ever blocking on it.  Workers call the
 * decision hooks below on their own thread: each keeps one reference to
 * the policy set in force and swaps it when confwatch's generation moved
 * (one relaxed load per call).  On a change, the next worker tick (100 ms)
 * re-evaluates every open inbound connection of that worker and resets
 * those now denied: closing happens on the thread that owns the conn, and
 * the inputs of a decision are all recoverable from the conn itself
 * (destination pod, original destination port, peer address), so no
 * per-connection copy is kept for plaintext.  HBONE streams are judged by
 * mesh.c through authz_hbone() with the peer's SPIFFE id, and re-judged
 * through mesh_reauthorize().
 *
 * Also owns service balancing (services.d): the endpoint table (copies of
 * the workloads enrolled here), a claim slot per conn index per worker
 * (ticket and endpoint; nothing in struct conn), and the active health
 * checks, run by the same watch thread.
 *
 * Off (every hook allows, costs one branch) when no policies_dir is set.
 * Counters are per worker, written by that worker only.
 */
#ifndef AMBIT_NP_AUTHZ_H
#define AMBIT_NP_AUTHZ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "node-proxy/policy.h"
#include "node-proxy/services.h"
#include <netinet/in.h>

struct np_config;
struct pod;
struct worker;
struct workload;

/* Load the configured directories (a bad one is fatal: -EINVAL, message in
 * @err) and start the watch thread.  0 when off or started, else -errno. */
int authz_init(const struct np_config *cfg, char *err, size_t errlen);
void authz_fini(void);
int authz_enabled(void);
/* Reload now (SIGHUP).  1 new sets, 0 unchanged or refused, -errno. */
int authz_reload(void);

/*
 * The decision for one connection to @dst, pure: @ps NULL allows.  @peer is
 * the source address (AF_INET/AF_INET6 sockaddr; NULL unknown), @principal
 * the peer's SPIFFE id for HBONE (NULL for plaintext).  0 or -EACCES, @v
 * filled.
 */
int authz_decide(const struct policy_set *ps, const struct workload *dst,
                 const struct sockaddr *peer, uint16_t dst_port, const char *principal,
                 struct policy_verdict *v);

/* Worker hooks, on the worker's own thread. */
/* Plaintext connection @cfd to @dst (15006, or a same-node shortcut) for
 * port @dst_port: 0 allow, -EACCES deny (the caller resets @cfd). */
int authz_plaintext(struct worker *w, struct pod *dst, int cfd, uint16_t dst_port);
/* HBONE stream to @dst from @principal, tunnel socket @tfd (source
 * address), app port @dst_port: 0 allow, -EACCES deny (answer 401). */
int authz_hbone(struct worker *w, struct pod *dst, const char *principal, int tfd,
                uint16_t dst_port);
/* Same-node fast path (mesh.c's -EXDEV): the connection from mesh pod
 * @src (client socket @cfd) to @dst is judged as an HBONE stream from
 * @src's principal.  0 allow, -EACCES deny. */
int authz_mesh_local(struct worker *w, struct pod *dst, struct pod *src, int cfd,
                     uint16_t dst_port);
/* The same for an open HBONE stream after a change (mesh_reauthorize()):
 * -EACCES when the new set denies it (counted as revoked, not as new). */
int authz_hbone_recheck(struct worker *w, struct pod *dst, const char *principal, int tfd,
                        uint16_t dst_port);
/* From the worker's tick: when the policies changed, re-evaluate the
 * worker's open plaintext connections and reset those now denied. */
void authz_tick(struct worker *w);

/*
 * Services (services.d): endpoints are the workloads enrolled on this node
 * (authz_pod_add/del from the control plane).  An outbound connection to a
 * service VIP:port takes a claim: a circuit-breaker ticket and an endpoint,
 * its address written over the destination.  The claim travels with the
 * connection: conn.c parks it in a per-worker slot by conn index
 * (authz_service_attach), mesh.c keeps it in the HBONE stream.  Whoever
 * holds it reports each attempt's outcome (outlier ejection) and releases
 * it once, when the connection is over.
 */
struct conn;
struct sockaddr_storage;
struct svc_claim {
	struct svc_ticket t;
	struct svc_endpoint *ep; /* NULL between a failed attempt and the next pick */
	struct svc_tried tried;
	struct sockaddr_in6 vip; /* what the client asked for (sockaddr_in for v4) */
	uint8_t used, attempt, retries_left;
};
int authz_pod_add(const struct workload *w);
void authz_pod_del(const char *uid);
/* Outbound @dst: 0 not a VIP (@cl unused), 1 claimed and *@dst rewritten,
 * -EBUSY (circuit breaker) or -EHOSTUNREACH (no endpoint): reset the client. */
int authz_service_claim(struct worker *w, struct svc_claim *cl, struct sockaddr_storage *dst);
/* The attempt on the claimed endpoint failed (counted towards its
 * ejection).  Within the service's retries, another endpoint is picked into
 * *@dst and 1 returned; *@backoff_ms is the wait before that attempt
 * (attempt n waits n x retry_backoff_ms).  0: no more attempts. */
int authz_claim_failed(struct worker *w, struct svc_claim *cl, struct sockaddr_storage *dst,
                       unsigned *backoff_ms);
/* The attempt succeeded (resets the endpoint's failure count). */
void authz_claim_ok(struct worker *w, struct svc_claim *cl);
/* The connection is over.  Idempotent; a no-op for an unused claim. */
void authz_claim_release(struct worker *w, struct svc_claim *cl);

/* conn.c's side: @c takes over claim @cl (0, or -ENOMEM: @cl released). */
int authz_service_attach(struct worker *w, struct conn *c, struct svc_claim *cl);
/* The connect of balanced @c succeeded (a failure goes through
 * authz_service_retry(), which reports it). */
void authz_service_connected(struct worker *w, struct conn *c);
/* The connect of balanced @c failed: report it and, within the service's
 * retries, reconnect @c to another endpoint (new upstream socket, connect
 * submitted after the backoff).  1 when retrying, 0 when the caller should
 * fail @c. */
int authz_service_retry(struct worker *w, struct conn *c);
/* The service balanced @c was addressed to (both NULL for any other
 * connection); valid until authz_conn_closed(). */
void authz_service_names(struct worker *w, struct conn *c, const char **ns, const char **name);
/* 1 when balanced @c was retried on another endpoint (flag URX on failure) */
int authz_service_retried(struct worker *w, struct conn *c);
void authz_conn_closed(struct worker *w, struct conn *c);

/* The "authz" object of the admin /stats (new reference). */
json_t *authz_stats_json(void);

#endif
