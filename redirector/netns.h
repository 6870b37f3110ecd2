/*
 * netns: entering a pod's network namespace on the calling thread only.
 *
 * netns_enter() opens the target, proves it is a network namespace, and
 * switches the calling thread into it with setns(2), keeping an fd of the
 * thread's own namespace; netns_leave() switches back and closes both.
 * Other threads of the process are not affected (CLONE_NEWNET is
 * per-thread), so this is safe in a multi-threaded process.  Sockets made
 * between the two calls belong to the target namespace.
 */
#ifndef AMBIT_REDIRECT_NETNS_H
#define AMBIT_REDIRECT_NETNS_H

#include "redirector/textbuf.h"

struct netns_guard {
	int orig_fd; /* the thread's namespace before enter */
	int target_fd;
};

/* 0, or -errno with a message naming @path in @err: -ENOENT, -EACCES,
 * -EINVAL (not a network namespace), -EPERM (no CAP_SYS_ADMIN), -EBUSY
 * (the host's initial namespace, or the calling thread's own: the
 * redirector never touches either). */
int netns_enter(const char *path, struct netns_guard *g, struct textbuf *err);

/* Back to the original namespace.  Failing to return would leave the
 * thread acting in a pod's namespace, so that aborts the process. */
void netns_leave(struct netns_guard *g);

#endif
