/*
 * conn: one proxied TCP connection and the per-worker pool that holds them.
 *
 * A conn joins two endpoints: ep[0] the accepted (downstream) socket and
 * ep[1] the socket node-proxy connected (upstream).  Data flows in two
 * independent directions; dir[s] carries what was received on ep[s] and is
 * to be sent on ep[!s].  Each direction is a queue of provided receive
 * buffers (linked through the worker's per-buffer metadata, so a queue costs
 * no memory of its own) and at most one send in flight.  A future
 * TLS/HTTP2 transform (HBONE, issue 4) sits between a direction's receive
 * completions and its queue: it consumes ciphertext buffers and produces
 * plaintext ones (and the reverse), without changing the rest of the
 * machine.
 *
 * Connections come from a bounded pool allocated once per worker; slots are
 * touched only when first used, so an unused pool costs address space, not
 * RSS.  An idle connection holds no data buffer: only its slot
 * (sizeof(struct conn)) and its two kernel sockets.
 *
 * user_data of every io_uring operation packs op, side, slot index and the
 * slot's generation (see ud_pack()); a conn slot is reused only after every
 * operation it submitted has completed (inflight == 0), so a completion
 * always finds the conn that issued it.
 */
#ifndef AMBIT_NP_CONN_H
#define AMBIT_NP_CONN_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

struct pod;
struct worker;

enum op {
	OP_NONE = 0,
	OP_ACCEPT, /* idx = listener slot */
	OP_RECV,   /* multishot, provided buffers */
	OP_SEND,
	OP_CONNECT,
	OP_LINK_TIMEOUT, /* connect deadline */
	OP_SHUTDOWN,
	OP_CANCEL,  /* cancel of a recv (backpressure) or of a whole fd (teardown) */
	OP_TICK,    /* periodic timer: idle/drain deadlines */
	OP_MAILBOX, /* eventfd read: commands from other threads */
	OP_LCANCEL, /* cancel of a listener's multishot accept */
	OP_MESH,    /* HBONE tunnels and streams (mesh.c): side = its sub-op */
};

/* user_data: | gen:16 | idx:32 | side:8 | op:8 | */
static inline uint64_t ud_pack(enum op op, unsigned side, uint32_t idx, uint16_t gen)
{
	return (uint64_t)op | ((uint64_t)(side & 0xff) << 8) | ((uint64_t)idx << 16) |
	       ((uint64_t)gen << 48);
}
static inline enum op ud_op(uint64_t ud)
{
	return (enum op)(ud & 0xff);
}
static inline unsigned ud_side(uint64_t ud)
{
	return (unsigned)(ud >> 8) & 0xff;
}
static inline uint32_t ud_idx(uint64_t ud)
{
	return (uint32_t)(ud >> 16);
}
static inline uint16_t ud_gen(uint64_t ud)
{
	return (uint16_t)(ud >> 48);
}

#define BUF_NONE 0xffffu

enum conn_state {
	CS_FREE = 0,
	CS_CONNECTING, /* upstream connect in flight; nothing else armed */
	CS_OPEN,       /* relaying (possibly half-closed) */
	CS_CLOSING,    /* teardown: cancels issued, waiting for inflight == 0 */
};

struct endpoint {
	int fd;
	uint8_t recv_armed;  /* multishot recv outstanding */
	uint8_t cancel_sent; /* its cancel is outstanding */
	uint8_t eof;         /* recv returned 0 */
	uint8_t nobufs;      /* recv stopped for lack of buffers; waits on the worker */
	uint8_t shut_sent;   /* shutdown(SHUT_WR) issued on this endpoint */
	uint8_t shut_done;
};

struct dir {
	uint16_t head, tail; /* buffer ids, BUF_NONE when empty */
	uint16_t qlen;
	uint8_t send_inflight;
	uint32_t off;   /* bytes of head already sent */
	uint64_t bytes; /* relayed so far */
};

struct conn {
	uint8_t state;
	uint8_t kind;        /* enum lsn_kind of the listener it came from */
	uint8_t rst;         /* on teardown, close with SO_LINGER 0 (RST) */
	uint8_t on_waitlist; /* queued on the worker's no-buffer wait list */
	uint8_t mesh_local;  /* mesh fast path: both ends' identities known here */
	uint16_t gen;
	int16_t inflight; /* submitted operations not yet completed */
	uint32_t idx;
	struct endpoint ep[2];
	struct dir dir[2];
	struct pod *pod;         /* the pod it was accepted in; holds a reference */
	struct pod *upod;        /* local destination pod when short-cut; reference */
	struct sockaddr_in6 dst; /* original destination (sockaddr_in for IPv4) */
	uint64_t start_ms, last_ms, drain_deadline_ms;
	uint32_t prev, next; /* active list (indices; UINT32_MAX = none) */
	uint32_t wait_next;  /* no-buffer wait list */
};

#define CONN_NIL UINT32_MAX

/* The pool: a bounded array; free slots on a LIFO list, slots above
 * @hwm never touched yet. */
struct conn_pool {
	struct conn *slots; /* mmap'd, lazily backed */
	uint32_t cap, hwm, free_head, active_head, n_active;
};

int conn_pool_init(struct conn_pool *p, uint32_t cap);
void conn_pool_fini(struct conn_pool *p);
/* A zeroed-out conn (state CS_FREE, fds -1) linked on the active list, or
 * NULL when all @cap are in use. */
struct conn *conn_pool_get(struct conn_pool *p);
/* Return @c (must be unlinked from any wait list, inflight 0). */
void conn_pool_put(struct conn_pool *p, struct conn *c);
static inline struct conn *conn_pool_at(struct conn_pool *p, uint32_t idx)
{
	return idx < p->hwm ? &p->slots[idx] : NULL;
}

/* The relay state machine (conn.c), driven by the worker loop. */
struct io_uring_cqe;
void conn_on_cqe(struct worker *w, struct conn *c, enum op op, unsigned side,
                 const struct io_uring_cqe *cqe);
/* Re-evaluate what @c should have in flight and submit it. */
void conn_step(struct worker *w, struct conn *c);
/* Tear down: cancel everything, close both fds (with RST when @rst) once
 * no operation is in flight, release buffers and the slot. */
void conn_abort(struct worker *w, struct conn *c, int rst);
/* Start relaying an accepted connection: @cfd accepted on a listener of
 * @kind of @pod; creates the upstream socket and connects it.  Takes
 * ownership of @cfd in all cases. */
void conn_accept(struct worker *w, struct pod *pod, int kind, int family, uint16_t lport, int cfd);

#endif
