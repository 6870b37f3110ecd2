/* conn: see conn.h.  The relay state machine and the connection pool. */
#include "node-proxy/conn.h"

#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node-proxy/authz.h"
#include "node-proxy/inpod.h"
#include "node-proxy/log.h"
#include "node-proxy/mesh.h"
#include "node-proxy/pod.h"
#include "node-proxy/telemetry.h"
#include "node-proxy/worker-t.h"

/* ---- pool ---------------------------------------------------------------- */

int conn_pool_init(struct conn_pool *p, uint32_t cap)
{
	void *m;

	memset(p, 0, sizeof(*p));
	/* MAP_NORESERVE + untouched pages: a slot costs RSS only once used. */
	m = mmap(NULL, (size_t)cap * sizeof(struct conn), PROT_READ | PROT_WRITE,
	         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return -errno;
	p->slots = m;
	p->cap = cap;
	p->free_head = CONN_NIL;
	p->active_head = CONN_NIL;
	return 0;
}

void conn_pool_fini(struct conn_pool *p)
{
	if (p->slots)
		munmap(p->slots, (size_t)p->cap * sizeof(struct conn));
	p->slots = NULL;
}

struct conn *conn_pool_get(struct conn_pool *p)
{
	struct conn *c;
	uint32_t idx;
	uint16_t gen;

	if (p->free_head != CONN_NIL) {
		idx = p->free_head;
		c = &p->slots[idx];
		p->free_head = c->next;
		gen = (uint16_t)(c->gen + 1);
	} else if (p->hwm < p->cap) {
		idx = p->hwm++;
		c = &p->slots[idx];
		gen = 1;
	} else {
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->idx = idx;
	c->gen = gen;
	c->ep[0].fd = c->ep[1].fd = -1;
	for (int s = 0; s < 2; s++)
		c->dir[s].head = c->dir[s].tail = BUF_NONE;
	c->wait_next = CONN_NIL;
	/* link at the head of the active list */
	c->prev = CONN_NIL;
	c->next = p->active_head;
	if (p->active_head != CONN_NIL)
		p->slots[p->active_head].prev = idx;
	p->active_head = idx;
	p->n_active++;
	return c;
}

void conn_pool_put(struct conn_pool *p, struct conn *c)
{
	if (c->prev != CONN_NIL)
		p->slots[c->prev].next = c->next;
	else
		p->active_head = c->next;
	if (c->next != CONN_NIL)
		p->slots[c->next].prev = c->prev;
	p->n_active--;
	c->state = CS_FREE;
	c->next = p->free_head;
	c->prev = CONN_NIL;
	p->free_head = c->idx;
}

/* ---- submission helpers ------------------------------------------------- */

static struct io_uring_sqe *conn_sqe(struct worker *w, struct conn *c, enum op op, unsigned side)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_sqe_set_data64(sqe, ud_pack(op, side, c->idx, c->gen));
	c->inflight++;
	return sqe;
}

static void arm_recv(struct worker *w, struct conn *c, unsigned s)
{
	struct io_uring_sqe *sqe = conn_sqe(w, c, OP_RECV, s);

	if (w->cfg.recv_multishot)
		io_uring_prep_recv_multishot(sqe, c->ep[s].fd, NULL, 0, 0);
	else
		io_uring_prep_recv(sqe, c->ep[s].fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	c->ep[s].recv_armed = 1;
	c->ep[s].cancel_sent = 0;
}

static void cancel_recv(struct worker *w, struct conn *c, unsigned s)
{
	struct io_uring_sqe *sqe = conn_sqe(w, c, OP_CANCEL, s);

	io_uring_prep_cancel64(sqe, ud_pack(OP_RECV, s, c->idx, c->gen), 0);
	c->ep[s].cancel_sent = 1;
}

/* Send what dir[s] holds at its head to ep[!s]. */
static void issue_send(struct worker *w, struct conn *c, unsigned s)
{
	struct dir *d = &c->dir[s];
	uint16_t bid = d->head;
	struct io_uring_sqe *sqe = conn_sqe(w, c, OP_SEND, s);

	io_uring_prep_send(sqe, c->ep[!s].fd, worker_buf(w, bid) + d->off, w->buf_len[bid] - d->off,
	                   MSG_NOSIGNAL);
	d->send_inflight = 1;
}

static void dir_push(struct worker *w, struct dir *d, uint16_t bid, uint32_t len)
{
	w->buf_len[bid] = len;
	w->buf_next[bid] = BUF_NONE;
	if (d->tail == BUF_NONE)
		d->head = bid;
	else
		w->buf_next[d->tail] = bid;
	d->tail = bid;
	d->qlen++;
	w->bufs_held++;
}

static void dir_pop(struct worker *w, struct dir *d)
{
	uint16_t bid = d->head;

	d->head = w->buf_next[bid];
	if (d->head == BUF_NONE)
		d->tail = BUF_NONE;
	d->qlen--;
	d->off = 0;
	w->bufs_held--;
	worker_buf_recycle(w, bid);
}

static void dir_drop_all(struct worker *w, struct dir *d)
{
	while (d->head != BUF_NONE)
		dir_pop(w, d);
}

/* ---- teardown ----------------------------------------------------------- */

static void conn_release(struct worker *w, struct conn *c)
{
	telemetry_conn_close(w, c); /* counters and access log, while pods are held */
	for (int s = 0; s < 2; s++) {
		dir_drop_all(w, &c->dir[s]);
		if (c->ep[s].fd >= 0) {
			if (c->rst) {
				/* SO_LINGER 0: close() sends RST, so the peer sees the reset
				 * we saw (or the failure we had) instead of a clean FIN. */
				struct linger lg = { .l_onoff = 1, .l_linger = 0 };
				setsockopt(c->ep[s].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			}
			close(c->ep[s].fd);
			c->ep[s].fd = -1;
		}
	}
	if (c->on_waitlist) {
		/* unlink from the singly linked wait list */
		uint32_t *pp = &w->wait_head;
		while (*pp != CONN_NIL && *pp != c->idx)
			pp = &w->pool.slots[*pp].wait_next;
		if (*pp == c->idx)
			*pp = c->wait_next;
		c->on_waitlist = 0;
	}
	if (c->pod) {
		__atomic_fetch_sub(&c->pod->conns, 1, __ATOMIC_RELAXED);
		pod_put(c->pod);
		c->pod = NULL;
	}
	if (c->upod) {
		__atomic_fetch_sub(&c->upod->conns, 1, __ATOMIC_RELAXED);
		pod_put(c->upod);
		c->upod = NULL;
	}
	authz_conn_closed(w, c); /* a balanced connection's claim (services) */
	STAT_ADD(w, active, -1);
	STAT_ADD(w, closed, 1);
	conn_pool_put(&w->pool, c);
}

void conn_abort(struct worker *w, struct conn *c, int rst)
{
	if (c->state == CS_CLOSING) {
		c->rst |= (uint8_t)rst;
		return;
	}
	c->state = CS_CLOSING;
	c->rst = (uint8_t)rst;
	if (rst)
		STAT_ADD(w, resets, 1);
	/* Cancel every operation still pending on either fd; the slot is
	 * released once the last completion arrives (inflight == 0). */
	for (unsigned s = 0; s < 2; s++) {
		if (c->ep[s].fd < 0)
			continue;
		struct io_uring_sqe *sqe = conn_sqe(w, c, OP_CANCEL, s);
		io_uring_prep_cancel_fd(sqe, c->ep[s].fd, IORING_ASYNC_CANCEL_ALL);
	}
	if (c->inflight == 0)
		conn_release(w, c);
}

/* ---- the state machine -------------------------------------------------- */

void conn_step(struct worker *w, struct conn *c)
{
	if (c->state == CS_CLOSING) {
		if (c->inflight == 0)
			conn_release(w, c);
		return;
	}
	if (c->state != CS_OPEN)
		return;

	/* Once half the worker's buffers sit in queues, every direction is
	 * held to one queued buffer, so connections whose receiver stalled
	 * cannot starve the others of buffers. */
	unsigned high = w->bufs_held * 2 >= w->cfg.buf_count ? 1 : w->cfg.queue_high;

	for (unsigned s = 0; s < 2; s++) {
		struct dir *d = &c->dir[s];
		struct endpoint *src = &c->ep[s], *dst = &c->ep[!s];

		if (!d->send_inflight && d->head != BUF_NONE)
			issue_send(w, c, s);
		/* Half-close: the source said FIN and everything it sent is out,
		 * so pass the FIN on; the other direction keeps flowing. */
		if (src->eof && d->head == BUF_NONE && !d->send_inflight && !dst->shut_sent) {
			/* Synchronous: shutdown(SHUT_WR) never blocks on TCP, while
			 * IORING_OP_SHUTDOWN is always punted to an io-wq thread. */
			shutdown(dst->fd, SHUT_WR);
			dst->shut_sent = dst->shut_done = 1;
		}
		/* Backpressure: read from src only while the queue toward dst is
		 * short.  A multishot recv cannot be paused, only cancelled. */
		if (src->recv_armed) {
			if (d->qlen >= high && !src->cancel_sent)
				cancel_recv(w, c, s);
		} else if (!src->eof && !src->nobufs && d->qlen < high) {
			arm_recv(w, c, s);
		}
	}
	if (c->ep[0].shut_done && c->ep[1].shut_done && c->inflight == 0) {
		/* both FINs passed on and acknowledged by the kernel: done */
		c->state = CS_CLOSING;
		conn_release(w, c);
	}
}

static void wait_for_bufs(struct worker *w, struct conn *c, unsigned s)
{
	c->ep[s].nobufs = 1;
	STAT_ADD(w, nobufs, 1);
	if (!c->on_waitlist) {
		c->on_waitlist = 1;
		c->wait_next = w->wait_head;
		w->wait_head = c->idx;
	}
}

static void on_recv(struct worker *w, struct conn *c, unsigned s, const struct io_uring_cqe *cqe)
{
	struct endpoint *ep = &c->ep[s];
	int more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more)
		ep->recv_armed = 0;
	if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		if (c->state != CS_OPEN) {
			worker_buf_recycle(w, bid);
			return;
		}
		dir_push(w, &c->dir[s], bid, (uint32_t)res);
		c->dir[s].bytes += (uint64_t)res;
		c->last_ms = w->now_ms;
		if (s == 0)
			STAT_ADD(w, bytes_down_up, (uint64_t)res);
		else
			STAT_ADD(w, bytes_up_down, (uint64_t)res);
		return;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER)
		worker_buf_recycle(w, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
	if (c->state != CS_OPEN)
		return;
	if (res == 0) {
		ep->eof = 1;
		c->last_ms = w->now_ms;
	} else if (res == -ENOBUFS) {
		wait_for_bufs(w, c, s);
	} else if (res == -ECANCELED) {
		/* our backpressure cancel: re-armed by conn_step when drained */
	} else if (res < 0) {
		telemetry_conn_flag(w, c, s ? RF_UC : RF_DC, res);
		conn_abort(w, c, 1);
	}
}

static void on_send(struct worker *w, struct conn *c, unsigned s, int res)
{
	struct dir *d = &c->dir[s];

	d->send_inflight = 0;
	if (c->state != CS_OPEN)
		return;
	if (res < 0) {
		telemetry_conn_flag(w, c, s ? RF_DC : RF_UC, res);
		conn_abort(w, c, 1);
		return;
	}
	telemetry_conn_bytes(w, c, s, (uint64_t)res);
	d->off += (uint32_t)res;
	if (d->off >= w->buf_len[d->head])
		dir_pop(w, d);
	c->last_ms = w->now_ms;
}

static void on_connect(struct worker *w, struct conn *c, int res)
{
	if (c->state != CS_CONNECTING)
		return;
	if (res < 0) {
		if (res == -ECANCELED)
			STAT_ADD(w, connect_timeouts, 1);
		else
			STAT_ADD(w, connect_errors, 1);
		log_debug("event=connect_failed conn=%u err=%d", c->idx, -res);
		if (authz_service_retry(w, c))
			return; /* a service VIP: another endpoint is being tried */
		telemetry_conn_flag(w, c, RF_UF | (authz_service_retried(w, c) ? RF_URX : 0),
		                    res == -ECANCELED ? ETIMEDOUT : res);
		conn_abort(w, c, 1);
		return;
	}
	authz_service_connected(w, c);
	c->state = CS_OPEN;
	c->last_ms = w->now_ms;
}

void conn_on_cqe(struct worker *w, struct conn *c, enum op op, unsigned s,
                 const struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->inflight--;
	switch (op) {
	case OP_RECV:
		on_recv(w, c, s, cqe);
		break;
	case OP_SEND:
		on_send(w, c, s, cqe->res);
		break;
	case OP_CONNECT:
		on_connect(w, c, cqe->res);
		break;
	case OP_SHUTDOWN:
		c->ep[s].shut_done = 1;
		break;
	case OP_CANCEL:
		if (cqe->res)
			log_debug("event=cancel_result conn=%u side=%u res=%d armed=%d qlen=%u",
			          c->idx, s, cqe->res, c->ep[s].recv_armed, c->dir[s].qlen);
		break;
	case OP_LINK_TIMEOUT:
	default:
		break;
	}
	conn_step(w, c);
}

/* ---- new connections ---------------------------------------------------- */

static int orig_dst(int fd, int family, struct sockaddr_storage *ss)
{
	socklen_t len = sizeof(*ss);

	if (family == AF_INET)
		return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, ss, &len) ? -errno : 0;
	return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, ss, &len) ? -errno : 0;
}

static uint16_t ss_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* The upstream socket, created in @pod's netns (a socket belongs to the
 * netns of the thread that creates it). */
static int upstream_socket(struct worker *w, struct pod *pod, int kind, int family, int cfd)
{
	int one = 1, fd, rc;
	uint32_t mark = w->cfg.proxy_mark;

	rc = worker_enter_pod(w, pod);
	if (rc)
		return rc;
	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (kind == LK_INBOUND && w->cfg.preserve_source) {
		/* Connect to the app from the client's own address: needs
		 * IP_TRANSPARENT to bind a non-local address, and the
		 * transparent mark so the redirector's connmark and policy
		 * routing send the app's replies back to this socket.  Port 0:
		 * the client's own port would collide with the conntrack entry
		 * of the redirected connection. */
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		if (getpeername(cfd, (struct sockaddr *)&peer, &plen)) {
			rc = -errno;
			goto fail;
		}
		if (family == AF_INET)
			((struct sockaddr_in *)&peer)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&peer)->sin6_port = 0;
		mark = w->cfg.transparent_mark;
		if (setsockopt(fd, family == AF_INET ? SOL_IP : SOL_IPV6,
		               family == AF_INET ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one,
		               sizeof(one)) ||
		    bind(fd, (struct sockaddr *)&peer, plen)) {
			rc = -errno;
			goto fail;
		}
	}
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark))) {
		rc = -errno;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return rc;
}

static void close_rst(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

void conn_accept(struct worker *w, struct pod *pod, int kind, int family, uint16_t lport, int cfd)
{
	struct sockaddr_storage dst;
	struct io_uring_sqe *sqe;
	struct pod *upod = NULL;
	struct svc_claim cl;
	socklen_t dlen;
	struct conn *c;
	int one = 1, ufd, rc, mesh_local = 0;

	STAT_ADD(w, accepted, 1);
	if (kind == LK_HBONE) {
		if (mesh_accept_hbone(w, pod, cfd) == 0)
			return;
		/* HBONE off (no [mesh] ca_dir) or no identity for this pod */
		STAT_ADD(w, hbone_refused, 1);
		close(cfd);
		return;
	}
	rc = orig_dst(cfd, family, &dst);
	if (rc || ss_port(&dst) == lport) {
		/* not redirected to us (or would loop back into ourselves) */
		STAT_ADD(w, orig_dst_errors, 1);
		close_rst(cfd);
		return;
	}
	/* A service VIP: balanced to an endpoint, dst rewritten (authz.c).
	 * Before the mesh decision, so an endpoint that is a mesh workload
	 * is reached over HBONE with its own identity. */
	cl.used = 0;
	if (kind == LK_OUTBOUND && (rc = authz_service_claim(w, &cl, &dst)) < 0) {
		telemetry_refused(w, pod, NULL, kind, cfd, &dst, rc == -EBUSY ? RF_UO : RF_UH);
		close_rst(cfd);
		return;
	}
	/* a mesh workload: one stream of an HBONE tunnel, not plain TCP (the
	 * stream takes the claim), or the same-node fast path */
	if (kind == LK_OUTBOUND) {
		rc = mesh_outbound(w, pod, cfd, &dst, &cl);
		if (rc == 0)
			return;
		mesh_local = rc == -EXDEV;
	}
	/* plaintext inbound: the destination pod's policy decides (authz.c) */
	if (kind == LK_INBOUND && authz_plaintext(w, pod, cfd, ss_port(&dst))) {
		telemetry_refused(w, pod, NULL, kind, cfd, &dst, RF_DENY);
		close_rst(cfd);
		return;
	}
	c = conn_pool_get(&w->pool);
	if (!c) {
		STAT_ADD(w, pool_exhausted, 1);
		authz_claim_release(w, &cl);
		telemetry_refused(w, pod, NULL, kind, cfd, &dst, RF_UO);
		close_rst(cfd);
		return;
	}
	if (authz_service_attach(w, c, &cl)) {
		conn_pool_put(&w->pool, c);
		close_rst(cfd);
		return;
	}
	/* Same-node shortcut: an outbound connection to a pod enrolled here is
	 * connected from inside that pod's netns, exactly as its own inbound
	 * listener would, instead of crossing the bridge to be captured again
	 * on 15006: one proxied connection and one TCP connection fewer.
	 * (When policy lands, the destination's inbound authorization runs
	 * here.) */
	if (kind == LK_OUTBOUND && (w->cfg.local_shortcut || mesh_local) && w->inpod)
		upod = inpod_lookup_addr(w->inpod, (struct sockaddr *)&dst);
	if (upod && upod->id == pod->id) {
		pod_put(upod); /* to itself: plain outbound */
		upod = NULL;
	}
	if (mesh_local && !upod) {
		/* removed since mesh.c saw it: never downgrade to plaintext */
		authz_conn_closed(w, c);
		conn_pool_put(&w->pool, c);
		close_rst(cfd);
		return;
	}
	if (upod && (mesh_local ? authz_mesh_local(w, upod, pod, cfd, ss_port(&dst))
	                        : authz_plaintext(w, upod, cfd, ss_port(&dst)))) {
		/* the shortcut skips upod's 15006: its inbound policy runs here */
		telemetry_refused(w, pod, upod, kind, cfd, &dst, RF_DENY);
		pod_put(upod);
		authz_conn_closed(w, c);
		conn_pool_put(&w->pool, c);
		close_rst(cfd);
		return;
	}
	ufd = upod ? upstream_socket(w, upod, LK_INBOUND, family, cfd)
	           : upstream_socket(w, pod, kind, family, cfd);
	if (ufd < 0) {
		if (upod)
			pod_put(upod);
		log_warn("event=upstream_socket_failed pod=%s err=%s", pod->w.uid, strerror(-ufd));
		STAT_ADD(w, socket_errors, 1);
		authz_conn_closed(w, c);
		conn_pool_put(&w->pool, c);
		close_rst(cfd);
		return;
	}
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	STAT_ADD(w, active, 1);
	c->kind = (uint8_t)kind;
	c->mesh_local = (uint8_t)mesh_local;
	c->pod = pod;
	pod_get(pod);
	__atomic_fetch_add(&pod->conns, 1, __ATOMIC_RELAXED);
	if (upod) {
		c->upod = upod; /* the lookup's reference */
		__atomic_fetch_add(&upod->conns, 1, __ATOMIC_RELAXED);
		STAT_ADD(w, local_shortcuts, 1);
	}
	c->ep[0].fd = cfd;
	c->ep[1].fd = ufd;
	c->start_ms = c->last_ms = w->now_ms;
	if (__atomic_load_n(&pod->deleted, __ATOMIC_RELAXED) ||
	    (upod && __atomic_load_n(&upod->deleted, __ATOMIC_RELAXED)) || w->stopping)
		c->drain_deadline_ms = w->now_ms + w->cfg.drain_ms;
	c->state = CS_CONNECTING;

	dlen = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	memcpy(&c->dst, &dst, dlen);
	telemetry_conn_open(w, c); /* pods and original destination known: Istio labels */

	/* The kernel reads the address at submission; c->dst outlives that. */
	sqe = conn_sqe(w, c, OP_CONNECT, 1);
	io_uring_prep_connect(sqe, ufd, (struct sockaddr *)&c->dst, dlen);
	sqe->flags |= IOSQE_IO_LINK;
	sqe = conn_sqe(w, c, OP_LINK_TIMEOUT, 1);
	io_uring_prep_link_timeout(sqe, &w->connect_ts, 0);
}
