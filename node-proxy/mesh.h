/*
 * mesh: HBONE in the io_uring data path.
 *
 * The routing decision and the glue between the sans-I/O HBONE engine
 * (hbone.h) and a worker's ring.  An outbound connection (15001) whose
 * original destination is a mesh workload (a pod enrolled here) becomes one
 * CONNECT stream on a pooled client HBONE connection keyed (source pod's
 * identity, destination SPIFFE ID, <dst-ip>:15008), dialled from the source
 * pod's netns; anything else stays plain passthrough (conn.c).  A connection
 * accepted on 15008 becomes a server HBONE connection presenting the
 * destination pod's identity; each CONNECT whose authority is an address of
 * that pod is connected to the app inside the pod's netns (SO_MARK, so it
 * is not captured) and answered 200, or 400 / 503.
 *
 * Objects: a tunnel (one TCP socket carrying TLS, one hbone_conn) and a
 * stream (one plain TCP socket - the captured client or the app - joined to
 * one HTTP/2 stream of a tunnel).  Both live in a per-worker table and use
 * user_data op OP_MESH; nothing here is shared between workers except the
 * identity cache and the counters.  Bytes: tunnel ciphertext is received
 * into a per-tunnel buffer and fed to the engine, whose ring is sent with
 * sendmsg; a stream's plain bytes are received into a per-stream buffer and
 * written with hbone_stream_write (0 = wait for on_stream_writable: the
 * socket is not read meanwhile), and tunnel bytes go through a per-stream
 * ring of one HTTP/2 window, consumed (window reopened) only once the plain
 * socket took them.  Objects are freed at one point, after the event that
 * made them done, never inside an engine callback.
 *
 * Off (everything plaintext, as before) when [mesh] ca_dir is unset.
 */
#ifndef AMBIT_NP_MESH_H
#define AMBIT_NP_MESH_H

#include <jansson.h>
#include <stddef.h>
#include <sys/socket.h>

struct io_uring_cqe;
struct np_config;
struct pod;
struct worker;
struct workload;

/* Process-wide set-up from the [mesh] config (loads the node CA, starts
 * the SVID renewal thread).  0 when off or ready, -errno with @err. */
int mesh_init(const struct np_config *cfg, char *err, size_t errlen);
void mesh_fini(void);
int mesh_enabled(void);

/* Control plane: before a pod's listeners open / after it is removed. */
int mesh_pod_add(const struct workload *w, char *err, size_t errlen);
void mesh_pod_del(const char *uid);
/* Re-issue every SVID now (SIGHUP). */
void mesh_renew_now(void);

/* The "mesh" object of the admin /stats (new reference; never keys). */
json_t *mesh_stats_json(void);

/* Worker hooks; all on the worker's own thread. */
/* A connection accepted on @pod's 15008: 0 when taken (fd owned), else
 * -errno and the caller refuses it as before. */
int mesh_accept_hbone(struct worker *w, struct pod *pod, int cfd);
#define MESH_ID_MAX 2064 /* a SPIFFE ID (2048) and its NUL */
/* @pod's SPIFFE ID (0), -ENOENT when the mesh is off. */
int mesh_principal(const struct pod *pod, char *out, size_t len);
/* An outbound connection from @pod to @dst: 0 when it goes over HBONE
 * (fd owned, also on failure), -ENOENT for plain passthrough, -EXDEV for
 * the same-node fast path ([mesh] local_fast_path: @dst is a mesh pod of
 * this node, the caller joins the sockets and judges the destination's
 * policy with authz_mesh_local(); the claim stays with the caller).  @cl (may be
 * NULL or unused): the service claim when @dst is a balanced endpoint; the
 * stream takes it over (0), and retries on another endpoint when the
 * attempt fails before the stream opens. */
struct svc_claim;
int mesh_outbound(struct worker *w, struct pod *pod, int cfd, const struct sockaddr_storage *dst,
                  struct svc_claim *cl);
void mesh_on_cqe(struct worker *w, const struct io_uring_cqe *cqe);
void mesh_tick(struct worker *w);
/* Policies changed: reset server streams the new set denies (authz.c). */
void mesh_reauthorize(struct worker *w);
/* @pod was deleted: close its tunnels and streams. */
void mesh_del_pod(struct worker *w, struct pod *pod);
/* Shutting down: close everything; mesh_busy() turns 0 once gone. */
void mesh_stop(struct worker *w);
int mesh_busy(struct worker *w);
/* Tunnelled connections (streams) into @out for /connections: the count. */
struct conn_info;
size_t mesh_dump(struct worker *w, struct conn_info *out, size_t max);
void mesh_worker_free(struct worker *w);

#endif
