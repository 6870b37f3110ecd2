/*
 * worker-t: the worker's internal state, shared by worker.c (loop,
 * listeners, mailbox) and conn.c (relay state machine).  Nothing outside
 * those two files includes this.
 */
#ifndef AMBIT_NP_WORKER_T_H
#define AMBIT_NP_WORKER_T_H

#include <liburing.h>
#include <pthread.h>
#include <stdint.h>

#include "node-proxy/config.h"
#include "node-proxy/conn.h"
#include "node-proxy/worker.h"

#define BGID 1

struct lsn {
	int fd;   /* owned by the pod */
	int kind; /* enum lsn_kind */
	int family;
	uint16_t port;
	uint8_t used, armed, closing;
	struct pod *pod; /* reference held while used */
};

struct wcmd;

struct worker {
	unsigned id;
	struct np_config cfg;
	int node_netns_fd;
	struct inpod *inpod; /* not owned */
	pthread_t thread;
	struct io_uring ring;

	/* receive buffers: one provided-buffer ring */
	struct io_uring_buf_ring *br;
	size_t br_size;
	uint8_t *bufs;
	size_t bufs_size;
	uint32_t buf_mask;
	uint16_t *buf_next; /* queue links, per buffer id */
	uint32_t *buf_len;  /* valid bytes, per buffer id */
	uint32_t bufs_held; /* buffers in userspace queues */
	uint32_t wait_head; /* conns waiting for buffers (CONN_NIL) */

	struct conn_pool pool;
	struct lsn *lsn;
	uint32_t n_lsn_cap;

	struct __kernel_timespec connect_ts, tick_ts;
	uint64_t now_ms;
	uint64_t cur_pod_id; /* pod whose netns this thread is in; 0 = node netns */

	/* mailbox */
	int efd;
	uint64_t efd_val;
	pthread_mutex_t mu;
	struct wcmd *cmds;

	int stopping;
	uint64_t stop_deadline_ms;
	int exited;

	struct worker_stats st; /* written by this thread only */
	struct mesh_worker *mesh; /* HBONE state (mesh.c), made on first use */
};

#define STAT_ADD(w, f, n) __atomic_store_n(&(w)->st.f, (w)->st.f + (n), __ATOMIC_RELAXED)

/* An SQE, submitting the queue first if it is full (never NULL). */
struct io_uring_sqe *worker_sqe(struct worker *w);
/* Return receive buffer @bid to the kernel. */
void worker_buf_recycle(struct worker *w, uint16_t bid);
static inline uint8_t *worker_buf(struct worker *w, uint16_t bid)
{
	return w->bufs + (size_t)bid * w->cfg.buf_size;
}
/* Enter @pod's netns on this thread if not already in it.  0 or -errno. */
int worker_enter_pod(struct worker *w, struct pod *pod);

#endif
