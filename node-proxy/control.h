/*
 * control: node-proxy's control server.
 *
 * Owns the unix SOCK_SEQPACKET control socket (mode 0600, peer credentials
 * checked: uid 0 only) and a thread that serves it.  Requests are parsed
 * with ctlproto, validated (an ADD's fd must be a network namespace), then
 * handed to the data plane through struct ctl_ops; on success the change is
 * recorded in the registry (which persists it) before the ack is sent, so
 * an acked ADD survives a crash.
 */
#ifndef AMBIT_CONTROL_H
#define AMBIT_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "node-proxy/workload.h"

struct control;
struct registry;

struct ctl_ops {
	void *arg;
	/* Bring a workload up: open its listeners inside the netns @netns_fd.
	 * Called on the control thread.  @netns_fd stays owned by the caller
	 * (dup it to keep it).  Returns 0 or -errno with a message in @err. */
	int (*add)(void *arg, const struct workload *w, int netns_fd, char *err, size_t errlen);
	/* Take a workload down: close its listeners now, drain its
	 * connections within the configured deadline.  Unknown uid: 0. */
	int (*del)(void *arg, const char *uid, char *err, size_t errlen);
	/* 1 when state is restored and listeners are up. */
	int (*ready)(void *arg);
};

/* Start serving @path (removed and re-created; parent dir created 0700).
 * @reg records successful ADD/DEL/SNAPSHOT changes.  Returns 0 or -errno:
 * -EEXIST if @path is not a socket, -EADDRINUSE if another server answers
 * on it. */
int control_start(const char *path, const struct ctl_ops *ops, struct registry *reg,
                  struct control **out);
/* Stop the thread, close and unlink the socket, free @c.  NULL is a no-op. */
void control_stop(struct control *c);

#define CONTROL_MAX_CONNS 64 /* open client connections; the idlest is evicted */

/* Counters for the admin page; always on, read without stopping the server. */
struct control_stats {
	uint64_t requests[6]; /* by enum ctl_type (1..5); [0]: unreadable or unknown */
	uint64_t errors;      /* error acks sent */
	uint64_t conns_open;  /* client connections open now */
	uint64_t conns_accepted;
	uint64_t conns_refused; /* peer not uid 0 */
	uint64_t conns_evicted; /* closed to make room (CONTROL_MAX_CONNS) */
};

/* Copy the current counters into @out (each read atomically). */
void control_get_stats(struct control *c, struct control_stats *out);

#endif
