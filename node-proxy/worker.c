/* worker: see worker.h.  The io_uring loop, listeners and mailbox. */
#include "node-proxy/worker.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "node-proxy/authz.h"
#include "node-proxy/log.h"
#include "node-proxy/mesh.h"
#include "node-proxy/pod.h"
#include "node-proxy/registry.h"
#include "node-proxy/telemetry.h"
#include "node-proxy/worker-t.h"

#define TICK_MS 100

enum cmd_type { CMD_ADD_LSN, CMD_DEL_POD, CMD_STOP, CMD_DUMP };

struct dump_req {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs; /* requester + worker; the last one frees */
	int done;
	struct conn_info *out; /* owned by the requester; NULL once it gave up */
	size_t max, n;
};

struct wcmd {
	struct wcmd *next;
	enum cmd_type type;
	struct pod *pod; /* a reference travels with the command */
	int kind, family, fd;
	uint16_t port;
	unsigned drain_ms;
	struct dump_req *dump;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

unsigned worker_id(const struct worker *w)
{
	return w->id;
}

void worker_set_inpod(struct worker *w, struct inpod *ip)
{
	w->inpod = ip;
}

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&w->ring)))
		io_uring_submit(&w->ring);
	return sqe;
}

void worker_buf_recycle(struct worker *w, uint16_t bid)
{
	io_uring_buf_ring_add(w->br, worker_buf(w, bid), w->cfg.buf_size, bid, (int)w->buf_mask, 0);
	io_uring_buf_ring_advance(w->br, 1);
}

int worker_enter_pod(struct worker *w, struct pod *pod)
{
	/* Lazy: the thread stays in the last pod's netns, so a run of
	 * connections from one pod costs no setns at all (two setns calls
	 * cost ~4.6 us here; see docs/node-proxy.md). */
	if (w->cur_pod_id == pod->id)
		return 0;
	if (setns(pod->netns_fd, CLONE_NEWNET))
		return -errno;
	w->cur_pod_id = pod->id;
	return 0;
}

static void leave_pod_netns(struct worker *w)
{
	if (w->cur_pod_id && setns(w->node_netns_fd, CLONE_NEWNET) == 0)
		w->cur_pod_id = 0;
}

/* ---- mailbox -------------------------------------------------------------- */

static int post(struct worker *w, struct wcmd *cmd)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->mu);
	if (w->exited) {
		pthread_mutex_unlock(&w->mu);
		return -ESHUTDOWN;
	}
	cmd->next = w->cmds;
	w->cmds = cmd;
	pthread_mutex_unlock(&w->mu);
	if (write(w->efd, &one, sizeof(one)) < 0)
		return -errno;
	return 0;
}

static void arm_mailbox(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_read(sqe, w->efd, &w->efd_val, sizeof(w->efd_val), 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_MAILBOX, 0, 0, 0));
}

static void arm_tick(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_TICK, 0, 0, 0));
}

/* ---- listeners ------------------------------------------------------------ */

static void arm_accept(struct worker *w, uint32_t idx)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_multishot_accept(sqe, w->lsn[idx].fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_ACCEPT, 0, idx, 0));
	w->lsn[idx].armed = 1;
}

static void lsn_release(struct worker *w, struct lsn *l)
{
	struct pod *p = l->pod;

	memset(l, 0, sizeof(*l));
	l->fd = -1;
	STAT_ADD(w, listeners, -1);
	pod_put(p);
}

static void lsn_close(struct worker *w, uint32_t idx)
{
	struct lsn *l = &w->lsn[idx];
	struct io_uring_sqe *sqe;

	if (!l->used || l->closing)
		return;
	l->closing = 1;
	if (!l->armed) {
		lsn_release(w, l);
		return;
	}
	sqe = worker_sqe(w);
	io_uring_prep_cancel64(sqe, ud_pack(OP_ACCEPT, 0, idx, 0), 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_LCANCEL, 0, idx, 0));
}

static void on_accept(struct worker *w, uint32_t idx, const struct io_uring_cqe *cqe)
{
	struct lsn *l = idx < w->n_lsn_cap ? &w->lsn[idx] : NULL;
	int res = cqe->res;

	if (!l || !l->used) {
		if (res >= 0)
			close(res);
		return;
	}
	if (!(cqe->flags & IORING_CQE_F_MORE))
		l->armed = 0;
	if (res >= 0) {
		if (l->closing || w->stopping)
			close(res);
		else
			conn_accept(w, l->pod, l->kind, l->family, l->port, res);
	} else if (res != -ECANCELED && res != -EINVAL) {
		STAT_ADD(w, accept_errors, 1);
	}
	if (l->armed)
		return;
	/* -EINVAL: the socket stopped listening (inpod_del shut it down). */
	if (l->closing || w->stopping || res == -EINVAL || res == -EBADF)
		lsn_release(w, l);
	else if (res != -EMFILE && res != -ENFILE && res != -ENOMEM && res != -ENOBUFS)
		arm_accept(w, idx);
	/* else: re-armed by the next tick, once descriptors may be free again */
}

static void add_listener(struct worker *w, struct wcmd *cmd)
{
	for (uint32_t i = 0; i < w->n_lsn_cap; i++) {
		struct lsn *l = &w->lsn[i];
		if (l->used)
			continue;
		l->used = 1;
		l->fd = cmd->fd;
		l->kind = cmd->kind;
		l->family = cmd->family;
		l->port = cmd->port;
		l->pod = cmd->pod; /* the command's reference */
		STAT_ADD(w, listeners, 1);
		if (w->stopping || __atomic_load_n(&cmd->pod->deleted, __ATOMIC_RELAXED))
			lsn_release(w, l);
		else
			arm_accept(w, i);
		return;
	}
	log_err("event=listener_table_full worker=%u", w->id);
	pod_put(cmd->pod);
}

/* ---- draining ------------------------------------------------------------- */

static void drain_conns(struct worker *w, struct pod *p, unsigned drain_ms)
{
	uint32_t i = w->pool.active_head;

	while (i != CONN_NIL) {
		struct conn *c = &w->pool.slots[i];
		uint32_t next = c->next;
		if ((!p || c->pod == p || c->upod == p) && c->state != CS_CLOSING) {
			uint64_t dl = w->now_ms + drain_ms;
			if (!c->drain_deadline_ms || dl < c->drain_deadline_ms)
				c->drain_deadline_ms = dl;
			if (drain_ms == 0) {
				STAT_ADD(w, drain_resets, 1);
				conn_abort(w, c, 1);
			}
		}
		i = next;
	}
}

static void on_tick(struct worker *w)
{
	uint32_t i = w->pool.active_head;

	while (i != CONN_NIL) {
		struct conn *c = &w->pool.slots[i];
		uint32_t next = c->next;
		if (c->state == CS_OPEN || c->state == CS_CONNECTING) {
			if (c->drain_deadline_ms && w->now_ms >= c->drain_deadline_ms) {
				STAT_ADD(w, drain_resets, 1);
				conn_abort(w, c, 1);
			} else if (c->state == CS_OPEN && w->cfg.idle_ms &&
			           w->now_ms - c->last_ms >= w->cfg.idle_ms) {
				STAT_ADD(w, idle_timeouts, 1);
				telemetry_conn_flag(w, c, RF_SI, 0); /* response_flags SI */
				conn_abort(w, c, 0);
			}
		}
		i = next;
	}
	mesh_tick(w);
	authz_tick(w); /* policies changed: re-judge open connections */
	/* listeners whose accept stopped on a resource error */
	if (!w->stopping)
		for (uint32_t k = 0; k < w->n_lsn_cap; k++)
			if (w->lsn[k].used && !w->lsn[k].armed && !w->lsn[k].closing)
				arm_accept(w, k);
}

static void do_dump(struct worker *w, struct dump_req *d)
{
	uint32_t i = w->pool.active_head;
	size_t n = 0;

	pthread_mutex_lock(&d->mu);
	while (d->out && i != CONN_NIL && n < d->max) {
		struct conn *c = &w->pool.slots[i];
		struct conn_info *ci = &d->out[n++];
		socklen_t len = sizeof(ci->src);
		memset(ci, 0, sizeof(*ci));
		ci->pod_id = c->pod ? c->pod->id : 0;
		if (c->pod)
			snprintf(ci->uid, sizeof(ci->uid), "%s", c->pod->w.uid);
		if (c->upod)
			snprintf(ci->upstream_uid, sizeof(ci->upstream_uid), "%s", c->upod->w.uid);
		ci->kind = c->kind;
		ci->state = c->state;
		ci->age_ms = w->now_ms - c->start_ms;
		ci->idle_ms = w->now_ms - c->last_ms;
		ci->bytes_down_up = c->dir[0].bytes;
		ci->bytes_up_down = c->dir[1].bytes;
		if (c->ep[0].fd >= 0)
			getpeername(c->ep[0].fd, (struct sockaddr *)&ci->src, &len);
		ci->dst = c->dst;
		ci->worker = w->id;
		i = c->next;
	}
	if (d->out)
		n += mesh_dump(w, d->out + n, d->max - n); /* HBONE streams */
	d->n = n;
	d->done = 1;
	pthread_cond_signal(&d->cv);
	int last = --d->refs == 0;
	pthread_mutex_unlock(&d->mu);
	if (last) {
		pthread_mutex_destroy(&d->mu);
		pthread_cond_destroy(&d->cv);
		free(d);
	}
}

static void on_mailbox(struct worker *w)
{
	struct wcmd *list, *rev = NULL;

	pthread_mutex_lock(&w->mu);
	list = w->cmds;
	w->cmds = NULL;
	pthread_mutex_unlock(&w->mu);
	while (list) { /* posted LIFO; run in posting order */
		struct wcmd *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		struct wcmd *cmd = rev;
		rev = rev->next;
		switch (cmd->type) {
		case CMD_ADD_LSN:
			add_listener(w, cmd);
			break;
		case CMD_DEL_POD:
			for (uint32_t i = 0; i < w->n_lsn_cap; i++)
				if (w->lsn[i].used && w->lsn[i].pod == cmd->pod)
					lsn_close(w, i);
			drain_conns(w, cmd->pod, cmd->drain_ms);
			mesh_del_pod(w, cmd->pod);
			if (w->cur_pod_id == cmd->pod->id)
				leave_pod_netns(w); /* let the netns go away */
			pod_put(cmd->pod);
			break;
		case CMD_STOP:
			w->stopping = 1;
			for (uint32_t i = 0; i < w->n_lsn_cap; i++)
				if (w->lsn[i].used)
					lsn_close(w, i);
			drain_conns(w, NULL, cmd->drain_ms);
			mesh_stop(w);
			break;
		case CMD_DUMP:
			do_dump(w, cmd->dump);
			break;
		}
		free(cmd);
	}
	if (!w->stopping)
		arm_mailbox(w);
}

/* ---- the loop ------------------------------------------------------------- */

static void service_waiters(struct worker *w)
{
	/* Re-arm receives that stopped for lack of buffers, once a quarter
	 * of the ring is back (avoids ping-ponging on one buffer). */
	if (w->wait_head == CONN_NIL || w->bufs_held > (w->cfg.buf_count * 3) / 4)
		return;
	uint32_t i = w->wait_head;
	w->wait_head = CONN_NIL;
	while (i != CONN_NIL) {
		struct conn *c = &w->pool.slots[i];
		i = c->wait_next;
		c->wait_next = CONN_NIL;
		c->on_waitlist = 0;
		c->ep[0].nobufs = c->ep[1].nobufs = 0;
		conn_step(w, c);
	}
}

static void handle_cqe(struct worker *w, const struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	enum op op = ud_op(ud);
	struct conn *c;

	switch (op) {
	case OP_ACCEPT:
		on_accept(w, ud_idx(ud), cqe);
		return;
	case OP_LCANCEL:
		return;
	case OP_MESH:
		mesh_on_cqe(w, cqe);
		return;
	case OP_MAILBOX:
		on_mailbox(w);
		return;
	case OP_TICK:
		on_tick(w);
		if (!w->stopping || w->pool.n_active || mesh_busy(w))
			arm_tick(w);
		return;
	default:
		break;
	}
	c = conn_pool_at(&w->pool, ud_idx(ud));
	if (!c || c->state == CS_FREE || c->gen != ud_gen(ud)) {
		/* Cannot happen (slots are reused only when idle); keep the
		 * buffer accounting right if it ever does. */
		log_err("event=stray_completion worker=%u op=%d idx=%u", w->id, op, ud_idx(ud));
		if (cqe->flags & IORING_CQE_F_BUFFER)
			worker_buf_recycle(w, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
		return;
	}
	conn_on_cqe(w, c, op, ud_side(ud), cqe);
}

static int ring_init(struct worker *w)
{
	struct io_uring_params p;
	struct io_uring_buf_reg reg;
	int rc;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
	          IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = w->cfg.ring_entries * 8;
	rc = io_uring_queue_init_params(w->cfg.ring_entries, &w->ring, &p);
	if (rc == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = w->cfg.ring_entries * 8;
		rc = io_uring_queue_init_params(w->cfg.ring_entries, &w->ring, &p);
	}
	if (rc)
		return rc;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uintptr_t)w->br;
	reg.ring_entries = w->cfg.buf_count;
	reg.bgid = BGID;
	rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (rc) {
		io_uring_queue_exit(&w->ring);
		return rc;
	}
	io_uring_buf_ring_init(w->br);
	for (unsigned i = 0; i < w->cfg.buf_count; i++)
		io_uring_buf_ring_add(w->br, worker_buf(w, (uint16_t)i), w->cfg.buf_size,
		                      (uint16_t)i, (int)w->buf_mask, (int)i);
	io_uring_buf_ring_advance(w->br, (int)w->cfg.buf_count);
	return 0;
}

struct start_sync {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done, rc;
};

static struct start_sync *start_sync_of(struct worker *w);

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct start_sync *ss = start_sync_of(w);
	int rc;

	if (w->cfg.cpu_affinity) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(w->id % CPU_SETSIZE, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	/* The ring is created on this thread: SINGLE_ISSUER binds it here. */
	rc = ring_init(w);
	pthread_mutex_lock(&ss->mu);
	ss->rc = rc;
	ss->done = 1;
	pthread_cond_signal(&ss->cv);
	pthread_mutex_unlock(&ss->mu);
	if (rc)
		return NULL;

	w->now_ms = mono_ms();
	arm_mailbox(w);
	arm_tick(w);
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		rc = io_uring_submit_and_wait(&w->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			log_err("event=ring_error worker=%u err=%s", w->id, strerror(-rc));
			break;
		}
		w->now_ms = mono_ms();
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			handle_cqe(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
		service_waiters(w);
		__atomic_store_n(&w->st.bufs_held, w->bufs_held, __ATOMIC_RELAXED);
		if (w->stopping && w->pool.n_active == 0 && w->st.listeners == 0 && !mesh_busy(w))
			break;
	}
	/* Anything left (ring error only): close it. */
	pthread_mutex_lock(&w->mu);
	w->exited = 1;
	struct wcmd *cmds = w->cmds;
	w->cmds = NULL;
	pthread_mutex_unlock(&w->mu);
	while (cmds) {
		struct wcmd *n = cmds->next;
		if (cmds->type == CMD_DUMP)
			do_dump(w, cmds->dump);
		if (cmds->pod)
			pod_put(cmds->pod);
		free(cmds);
		cmds = n;
	}
	io_uring_queue_exit(&w->ring);
	return NULL;
}

/* ---- public API ----------------------------------------------------------- */

struct worker_box {
	struct worker w;
	struct start_sync ss;
};

static struct start_sync *start_sync_of(struct worker *w)
{
	return &((struct worker_box *)w)->ss;
}

int worker_create(unsigned id, const struct np_config *cfg, int node_netns_fd, struct worker **out)
{
	struct worker_box *b;
	struct worker *w;
	int rc = -ENOMEM;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	w = &b->w;
	w->id = id;
	w->cfg = *cfg;
	w->node_netns_fd = node_netns_fd;
	w->wait_head = CONN_NIL;
	w->efd = -1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_mutex_init(&b->ss.mu, NULL);
	pthread_cond_init(&b->ss.cv, NULL);
	w->connect_ts.tv_sec = cfg->connect_ms / 1000;
	w->connect_ts.tv_nsec = (long long)(cfg->connect_ms % 1000) * 1000000;
	w->tick_ts.tv_sec = 0;
	w->tick_ts.tv_nsec = TICK_MS * 1000000LL;
	w->buf_mask = cfg->buf_count - 1;

	w->br_size = cfg->buf_count * sizeof(struct io_uring_buf);
	w->br = mmap(NULL, w->br_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->br == MAP_FAILED) {
		w->br = NULL;
		goto fail;
	}
	/* Buffers are faulted in only when the kernel first fills them. */
	w->bufs_size = (size_t)cfg->buf_count * cfg->buf_size;
	w->bufs = mmap(NULL, w->bufs_size, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (w->bufs == MAP_FAILED) {
		w->bufs = NULL;
		goto fail;
	}
	w->buf_next = calloc(cfg->buf_count, sizeof(*w->buf_next));
	w->buf_len = calloc(cfg->buf_count, sizeof(*w->buf_len));
	w->n_lsn_cap = REGISTRY_MAX * LK_N * 2;
	w->lsn = calloc(w->n_lsn_cap, sizeof(*w->lsn));
	if (!w->buf_next || !w->buf_len || !w->lsn)
		goto fail;
	rc = conn_pool_init(&w->pool, cfg->max_conns);
	if (rc)
		goto fail;
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0) {
		rc = -errno;
		goto fail;
	}
	*out = w;
	return 0;
fail:
	worker_join(w);
	return rc;
}

int worker_start(struct worker *w)
{
	struct start_sync *ss = start_sync_of(w);
	int rc;

	rc = -pthread_create(&w->thread, NULL, worker_main, w);
	if (rc)
		return rc;
	pthread_mutex_lock(&ss->mu);
	while (!ss->done)
		pthread_cond_wait(&ss->cv, &ss->mu);
	rc = ss->rc;
	pthread_mutex_unlock(&ss->mu);
	if (rc) {
		pthread_join(w->thread, NULL);
		w->thread = 0;
		w->exited = 1;
	}
	return rc;
}

void worker_stop(struct worker *w, unsigned drain_ms)
{
	struct wcmd *cmd = calloc(1, sizeof(*cmd));

	if (!cmd)
		return;
	cmd->type = CMD_STOP;
	cmd->drain_ms = drain_ms;
	if (post(w, cmd))
		free(cmd);
}

void worker_join(struct worker *w)
{
	struct worker_box *b = (struct worker_box *)w;

	if (!w)
		return;
	if (w->thread)
		pthread_join(w->thread, NULL);
	mesh_worker_free(w);
	conn_pool_fini(&w->pool);
	if (w->bufs)
		munmap(w->bufs, w->bufs_size);
	if (w->br)
		munmap(w->br, w->br_size);
	free(w->buf_next);
	free(w->buf_len);
	free(w->lsn);
	if (w->efd >= 0)
		close(w->efd);
	pthread_mutex_destroy(&w->mu);
	pthread_mutex_destroy(&b->ss.mu);
	pthread_cond_destroy(&b->ss.cv);
	free(b);
}

int worker_add_listener(struct worker *w, struct pod *pod, int kind, int family, uint16_t port,
                        int fd)
{
	struct wcmd *cmd = calloc(1, sizeof(*cmd));
	int rc;

	if (!cmd)
		return -ENOMEM;
	cmd->type = CMD_ADD_LSN;
	cmd->kind = kind;
	cmd->family = family;
	cmd->port = port;
	cmd->fd = fd;
	cmd->pod = pod;
	pod_get(pod);
	rc = post(w, cmd);
	if (rc) {
		pod_put(pod);
		free(cmd);
	}
	return rc;
}

int worker_del_pod(struct worker *w, struct pod *pod)
{
	struct wcmd *cmd = calloc(1, sizeof(*cmd));
	int rc;

	if (!cmd)
		return -ENOMEM;
	cmd->type = CMD_DEL_POD;
	cmd->pod = pod;
	cmd->drain_ms = w->cfg.drain_ms;
	pod_get(pod);
	rc = post(w, cmd);
	if (rc) {
		pod_put(pod);
		free(cmd);
	}
	return rc;
}

void worker_get_stats(struct worker *w, struct worker_stats *out)
{
	const uint64_t *src = (const uint64_t *)&w->st;
	uint64_t *dst = (uint64_t *)out;

	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

int worker_dump(struct worker *w, struct conn_info *out, size_t max, int timeout_ms)
{
	struct dump_req *d = calloc(1, sizeof(*d));
	struct wcmd *cmd = calloc(1, sizeof(*cmd));
	struct timespec dl;
	int rc = 0, last;

	if (!d || !cmd) {
		free(d);
		free(cmd);
		return -ENOMEM;
	}
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	d->refs = 2;
	d->out = out;
	d->max = max;
	cmd->type = CMD_DUMP;
	cmd->dump = d;
	if (post(w, cmd)) {
		free(cmd);
		d->refs = 1;
		rc = -ESHUTDOWN;
	}
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&d->mu);
	while (!rc && !d->done)
		if (pthread_cond_timedwait(&d->cv, &d->mu, &dl) == ETIMEDOUT)
			rc = -ETIMEDOUT;
	if (!rc)
		rc = (int)d->n;
	d->out = NULL; /* the worker must not write after we return */
	last = --d->refs == 0;
	pthread_mutex_unlock(&d->mu);
	if (last) {
		pthread_mutex_destroy(&d->mu);
		pthread_cond_destroy(&d->cv);
		free(d);
	}
	return rc;
}
