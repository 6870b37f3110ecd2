/*
 * hbone: the HBONE tunnel engine (HTTP/2 CONNECT over mutual TLS), sans I/O.
 *
 * One hbone_conn is one TLS connection carrying many CONNECT streams, one
 * per proxied TCP connection.  The caller (the io_uring data plane) moves
 * bytes: ciphertext from the socket goes into hbone_conn_feed(), ciphertext
 * to send comes out of hbone_conn_pending_out()/hbone_conn_out_done().
 * Everything else arrives through callbacks, which run only inside
 * hbone_conn_feed(), hbone_conn_out_done() and the hbone_stream_*() calls.
 *
 * Backpressure, both ways, with bounded memory:
 *  - sending: hbone_stream_write() encrypts as much as the peer's HTTP/2
 *    windows and the ciphertext ring allow right away and returns that
 *    count; it never keeps a pointer to the caller's bytes.  0 means "wait
 *    for on_stream_writable".
 *  - receiving: on_stream_data hands over bytes that the caller must take
 *    (they never exceed the window we advertised); the window reopens only
 *    when the caller reports them delivered with hbone_stream_consume().
 *
 * Streams are identified by their HTTP/2 stream id (int32_t).  A stream
 * exists from hbone_stream_open() (client) or on_stream_request (server)
 * until on_stream_closed, which is always the last callback for it.
 */
#ifndef AMBIT_HBONE_H
#define AMBIT_HBONE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "node-proxy/tls.h"

enum hbone_role {
	HBONE_CLIENT = TLS_CLIENT,
	HBONE_SERVER = TLS_SERVER,
};

/* HTTP/2 error codes used in resets and GOAWAY (RFC 9113 §7). */
#define HBONE_H2_NO_ERROR          0x0
#define HBONE_H2_PROTOCOL_ERROR    0x1
#define HBONE_H2_INTERNAL_ERROR    0x2
#define HBONE_H2_REFUSED_STREAM    0x7
#define HBONE_H2_CANCEL            0x8
#define HBONE_H2_CONNECT_ERROR     0xa
#define HBONE_H2_ENHANCE_YOUR_CALM 0xb

struct hbone_config {
	uint32_t max_concurrent_streams; /* we accept (SETTINGS); default 100 */
	uint32_t stream_window;          /* receive window per stream; 4 MiB */
	uint32_t conn_window;            /* receive window per connection; 16 MiB */
	size_t out_buf;                  /* ciphertext ring; 256 KiB */
	uint32_t max_header_bytes;       /* request/response header block; 16 KiB */
	uint32_t max_headers;            /* header fields per block; 64 */
};
void hbone_config_default(struct hbone_config *cfg);

/* An extra request header (client side), lower-case name. */
struct hbone_header {
	const char *name;
	const char *value;
};

/* A CONNECT request, validated (server side).  Strings are NUL-terminated
 * and valid only during on_stream_request; absent ones are NULL. */
struct hbone_request {
	const char *authority;
	struct sockaddr_storage dst; /* the parsed :authority */
	socklen_t dst_len;
	const char *forwarded;
	const char *baggage;
	const char *traceparent;
	const char *peer_id; /* client's SPIFFE ID (from its certificate) */
};

struct hbone_conn;

/* All callbacks get the @arg given to hbone_conn_new; stream callbacks get
 * the stream's user pointer (hbone_stream_open / hbone_stream_set_user).
 * Any may be NULL.  Inside a callback the caller may call every hbone_*
 * function except hbone_conn_free; hbone_stream_write returns 0 there and
 * on_stream_writable follows once the engine is back outside. */
struct hbone_callbacks {
	/* TLS finished: @reason TLS_FAIL_NONE on success. */
	void (*on_handshake)(struct hbone_conn *c, void *arg, enum tls_fail reason);
	/* Server: a valid CONNECT.  Return 0 to answer later with
	 * hbone_stream_respond(), or a status (200, 400, 401, 503) to answer
	 * now.  Invalid requests are answered 400 without this callback. */
	int (*on_stream_request)(struct hbone_conn *c, void *arg, int32_t sid,
	                         const struct hbone_request *req);
	/* Client: the response status.  Only 200 opens the tunnel; for any
	 * other status on_stream_closed follows. */
	void (*on_stream_response)(struct hbone_conn *c, void *arg, int32_t sid, void *su,
	                           int status);
	/* Tunnel bytes from the peer.  Take all of them; report delivery
	 * with hbone_stream_consume() to reopen the window.  A server may get
	 * some before it answered (an optimistic client). */
	void (*on_stream_data)(struct hbone_conn *c, void *arg, int32_t sid, void *su,
	                       const uint8_t *data, size_t len);
	/* The peer half-closed (END_STREAM): no more data will come.  Not
	 * called for refused streams (no tunnel, nothing to half-close). */
	void (*on_stream_eof)(struct hbone_conn *c, void *arg, int32_t sid, void *su);
	/* A write that returned less than asked can go on. */
	void (*on_stream_writable)(struct hbone_conn *c, void *arg, int32_t sid, void *su);
	/* The stream is gone (both sides done, reset, refused or connection
	 * closing).  @h2_error is the reset code or 0.  Last callback. */
	void (*on_stream_closed)(struct hbone_conn *c, void *arg, int32_t sid, void *su,
	                         uint32_t h2_error);
	/* The peer sent GOAWAY: streams above @last_sid were not processed
	 * (they close with REFUSED_STREAM); open no new streams here. */
	void (*on_goaway)(struct hbone_conn *c, void *arg, int32_t last_sid, uint32_t h2_error);
};

/* Create a connection on @id (a reference is taken).  Client: @expected_peer
 * is the server's SPIFFE ID (required).  @cfg may be NULL (defaults).
 * A client's TLS ClientHello is ready in pending_out on return.  Returns 0
 * or -errno. */
int hbone_conn_new(enum hbone_role role, struct tls_identity *id, const char *expected_peer,
                   const struct hbone_config *cfg, const struct hbone_callbacks *cb, void *arg,
                   struct hbone_conn **out);
/* Free the connection.  on_stream_closed (CANCEL) is called for streams
 * still open so their owners can let go.  NULL is a no-op. */
void hbone_conn_free(struct hbone_conn *c);

/* Network -> engine.  Consumes all @len bytes (the caller may reuse @buf
 * on return).  Returns 0; -EPROTO when the connection is dead (TLS refused
 * or failed, HTTP/2 connection error): flush pending_out (an alert or a
 * GOAWAY may be waiting), then close; -EPIPE when the peer closed cleanly
 * (close_notify).  Not to be called from inside a callback. */
int hbone_conn_feed(struct hbone_conn *c, const uint8_t *buf, size_t len);
/* The peer closed its side of TCP: fail a pending handshake (reason
 * "closed") and end everything.  Returns -EPROTO or -EPIPE. */
int hbone_conn_feed_eof(struct hbone_conn *c);

/* Engine -> network: see tls_conn_pending_out for the iovec contract
 * (bytes stay in place until out_done; have one send in flight at a time,
 * starting at the first iovec).  Returns the iovec count. */
int hbone_conn_pending_out(struct hbone_conn *c, struct iovec iov[2]);
size_t hbone_conn_out_len(const struct hbone_conn *c);
/* @n bytes were sent; may produce more output and on_stream_writable. */
void hbone_conn_out_done(struct hbone_conn *c, size_t n);

/* 1 while the TLS handshake is complete and the connection not failed. */
int hbone_conn_established(const struct hbone_conn *c);
/* 1 when the connection has nothing left to do and its output is drained
 * (failed, peer closed, or GOAWAY exchanged with no stream left): close. */
int hbone_conn_done(const struct hbone_conn *c);
enum tls_fail hbone_conn_failure(const struct hbone_conn *c);
const char *hbone_conn_peer_id(const struct hbone_conn *c);
/* The underlying TLS connection (fingerprint, cipher, alert), owned by @c. */
const struct tls_conn *hbone_conn_tls(const struct hbone_conn *c);
/* Streams currently open, and whether a client may open one more now
 * (not failed, no GOAWAY either way, under the peer's concurrency cap). */
uint32_t hbone_conn_streams(const struct hbone_conn *c);
int hbone_conn_can_open(const struct hbone_conn *c);
/* Graceful close: GOAWAY(@h2_error) naming the last stream we processed;
 * open streams finish, new ones are refused.  0 or -errno. */
int hbone_conn_goaway(struct hbone_conn *c, uint32_t h2_error);

/* Close now: GOAWAY(NO_ERROR) cutting all streams (on_stream_closed for
 * each follows at free) and TLS close_notify; flush pending_out, then
 * close the socket and free.  For drain deadlines and shutdown. */
int hbone_conn_close(struct hbone_conn *c);

/* Process-wide counters, always on (relaxed atomics), for the metrics
 * exporter.  Indexed by role where it matters. */
struct hbone_stats {
	uint64_t handshakes[2];                      /* [role] succeeded */
	uint64_t handshake_fail[2][TLS_FAIL__COUNT]; /* [role][reason] */
	uint64_t streams_opened[2];                  /* client: opened; server: accepted CONNECTs */
	uint64_t responses[2][4];                    /* [role][200, 400, 401, 503] sent/received */
	uint64_t responses_other[2];                 /* any other status */
	uint64_t bad_requests;                       /* server: 400 by validation */
	uint64_t header_limit_resets;                /* server+client: header block too big */
	uint64_t resets_sent, resets_received;       /* RST_STREAM with an error code */
	uint64_t goaways_sent, goaways_received;
};
void hbone_stats_get(struct hbone_stats *out);

/* Client: open a CONNECT stream to @authority ("ip:port" / "[v6]:port")
 * with optional extra headers (forwarded, baggage, traceparent...).  Works
 * before the handshake completes (queued).  Returns 0 with *@sid, -EINVAL
 * (bad authority/header), -EAGAIN (no stream available: can_open is 0). */
int hbone_stream_open(struct hbone_conn *c, const char *authority, const struct hbone_header *h,
                      size_t nh, void *su, int32_t *sid);
/* Server: answer a request (200 opens the tunnel; 400/401/503 refuse it
 * and reset the stream).  0, -ENOENT, -EALREADY, -EINVAL. */
int hbone_stream_respond(struct hbone_conn *c, int32_t sid, int status);
/* Send tunnel bytes.  Returns the count accepted (already ciphertext in
 * the ring: @buf is not kept), 0 to wait for on_stream_writable (windows
 * or ring full, tunnel not open yet, or called from a callback), or
 * -ENOENT (unknown stream), -EPIPE (after shutdown), -EPROTO (dead). */
ssize_t hbone_stream_write(struct hbone_conn *c, int32_t sid, const uint8_t *buf, size_t len);
/* Bytes hbone_stream_write would accept right now. */
size_t hbone_stream_write_room(struct hbone_conn *c, int32_t sid);
/* Half-close our side (END_STREAM).  0 or -ENOENT. */
int hbone_stream_shutdown(struct hbone_conn *c, int32_t sid);
/* Abort the stream with RST_STREAM(@h2_error).  0 or -ENOENT. */
int hbone_stream_reset(struct hbone_conn *c, int32_t sid, uint32_t h2_error);
/* @n bytes from on_stream_data were delivered: reopen the windows. */
int hbone_stream_consume(struct hbone_conn *c, int32_t sid, size_t n);
int hbone_stream_set_user(struct hbone_conn *c, int32_t sid, void *su);

/* Parse "a.b.c.d:port" or "[v6]:port" (port 1-65535, no host names, no
 * zone ids, at most 64 bytes).  @s needs no NUL.  0 or -EINVAL. */
int hbone_parse_authority(const char *s, size_t len, struct sockaddr_storage *ss, socklen_t *sl);

/* Validate a request header list as the server does: returns 0 and fills
 * @req (pointing into @nv) or an HTTP status (400) for a bad request.  The
 * names and values must be NUL-terminated at their lengths. */
struct hbone_nv {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};
int hbone_validate_request(const struct hbone_nv *nv, size_t n, struct hbone_request *req);

/*
 * Client connection pool (one per worker thread, not thread safe): HBONE
 * connections keyed by (source identity, destination SPIFFE ID, destination
 * address), as brief §3 asks.  Sans I/O like the rest: the data plane asks
 * for a connection with room for one more stream, dials and adds one when
 * there is none, removes connections it closes, and expires idle ones from
 * its timer.  The pool holds pointers only; it never frees a connection.
 */
struct hbone_pool;
/* @max_streams: streams per connection before another one is dialled
 * (also bounded by the peer's MAX_CONCURRENT_STREAMS). */
int hbone_pool_new(uint32_t max_streams, struct hbone_pool **out);
/* Free the pool (not the connections). */
void hbone_pool_free(struct hbone_pool *p);
/* A pooled connection for the key that can open one more stream now, or
 * NULL.  *@user (if given) gets the pointer stored with it. */
struct hbone_conn *hbone_pool_pick(struct hbone_pool *p, const struct tls_identity *src,
                                   const char *dst_id, const struct sockaddr *dst, socklen_t len,
                                   void **user);
/* Add @c under the key (copied).  0, -EEXIST, -ENOMEM, -EINVAL. */
int hbone_pool_add(struct hbone_pool *p, const struct tls_identity *src, const char *dst_id,
                   const struct sockaddr *dst, socklen_t len, struct hbone_conn *c, void *user);
/* Forget @c.  0 or -ENOENT. */
int hbone_pool_remove(struct hbone_pool *p, struct hbone_conn *c);
/* Remove every connection without streams for at least @idle_ms (as seen by
 * successive calls) and every dead or drained one, calling @cb for each so
 * the caller closes it (@cb may free the connection but must not touch the
 * pool).  Returns how many went.  Keys compare the identity by pointer:
 * safe, since each pooled connection holds a reference to its identity. */
size_t hbone_pool_expire(struct hbone_pool *p, uint64_t now_ms, uint64_t idle_ms,
                         void (*cb)(void *arg, struct hbone_conn *c, void *user), void *arg);
/* Pooled connections and the streams they carry (gauges). */
uint32_t hbone_pool_conns(const struct hbone_pool *p);
uint32_t hbone_pool_streams(const struct hbone_pool *p);

#ifdef AMBIT_FUZZ
/* Fuzzing: a server connection whose TLS layer is a pass-through. */
int hbone_conn_new_cleartext_server(const struct hbone_config *cfg,
                                    const struct hbone_callbacks *cb, void *arg,
                                    struct hbone_conn **out);
#endif

#endif
