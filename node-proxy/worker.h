/*
 * worker: one data-path thread with its own io_uring.
 *
 * Each worker owns a ring, a provided-buffer ring for receives, a bounded
 * connection pool and its copy (SO_REUSEPORT) of every pod's listeners.
 * Other threads talk to a worker only through its mailbox (a mutex-guarded
 * command list plus an eventfd the ring reads), never by touching its
 * state.  Counters are written by the worker alone and read with relaxed
 * atomics by the admin thread.
 */
#ifndef AMBIT_NP_WORKER_H
#define AMBIT_NP_WORKER_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct pod;
struct np_config;

struct worker_stats {
	uint64_t accepted; /* connections accepted on any listener */
	uint64_t active;   /* currently open */
	uint64_t closed;
	uint64_t bytes_down_up; /* downstream -> upstream */
	uint64_t bytes_up_down;
	uint64_t pool_exhausted; /* accepted but refused: pool full */
	uint64_t connect_errors; /* upstream refused/unreachable */
	uint64_t connect_timeouts;
	uint64_t resets; /* closed with RST because a peer reset or failed */
	uint64_t idle_timeouts;
	uint64_t drain_resets;    /* still open at a drain deadline */
	uint64_t orig_dst_errors; /* SO_ORIGINAL_DST missing or pointing at ourselves */
	uint64_t socket_errors;   /* socket/setns/setsockopt failures */
	uint64_t hbone_refused;   /* 15008 not served yet (issue 4) */
	uint64_t nobufs;          /* receives paused because the buffer ring ran dry */
	uint64_t accept_errors;
	uint64_t listeners;       /* armed listener copies */
	uint64_t bufs_held;       /* receive buffers queued in userspace now */
	uint64_t local_shortcuts; /* outbound connections relayed straight into a local pod */
};

struct conn_info {
	uint64_t pod_id;
	char uid[64];
	int kind;
	int state;
	uint64_t age_ms, idle_ms;
	uint64_t bytes_down_up, bytes_up_down;
	struct sockaddr_in6 src, dst; /* AF_INET addresses stored as sockaddr_in */
	char upstream_uid[64];        /* local destination pod (shortcut), or "" */
	unsigned worker;
};

/* Create worker @id (ring, buffers, pool) from @cfg; the thread is not
 * started.  @node_netns_fd is the netns the process started in, which the
 * worker returns to when a pod it entered goes away (not owned). */
int worker_create(unsigned id, const struct np_config *cfg, int node_netns_fd, struct worker **out);
int worker_start(struct worker *w);
/* Ask the worker to stop accepting, drain for @drain_ms, then reset what is
 * left and exit; worker_join() waits for that and frees @w. */
void worker_stop(struct worker *w, unsigned drain_ms);
void worker_join(struct worker *w);

/* Hand a listener copy to @w: it takes a pod reference and arms a
 * multishot accept.  @fd stays owned by @pod.  0 or -errno. */
int worker_add_listener(struct worker *w, struct pod *pod, int kind, int family, uint16_t port,
                        int fd);
/* @pod was deleted: stop its accepts, drain its connections within the
 * configured deadline. */
int worker_del_pod(struct worker *w, struct pod *pod);

void worker_get_stats(struct worker *w, struct worker_stats *out);
/* Copy up to @max open connections; blocks up to @timeout_ms for the
 * worker to answer.  Returns the count or -errno. */
int worker_dump(struct worker *w, struct conn_info *out, size_t max, int timeout_ms);
unsigned worker_id(const struct worker *w);
/* Where outbound connections look up local destination pods (set once,
 * before any pod is added). */
struct inpod;
void worker_set_inpod(struct worker *w, struct inpod *ip);

#endif
