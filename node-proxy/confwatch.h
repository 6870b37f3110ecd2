/*
 * confwatch: the policies.d and services.d directories in force, reloaded
 * when they change (inotify, debounced), never replaced by a set that fails
 * to load.
 *
 * Pollable, no thread of its own: the owner polls confwatch_fd() for
 * POLLIN and calls confwatch_process(), which reloads, swaps the current
 * sets under a mutex and calls on_change.  Readers on any thread take a
 * reference with confwatch_policies()/confwatch_services() and put it when
 * done; a cheap confwatch_generation() check tells a worker when to do so.
 * The sets are freed when the last reference goes (RCU-like by refcount).
 */
#ifndef AMBIT_NP_CONFWATCH_H
#define AMBIT_NP_CONFWATCH_H

#include <stdint.h>

#include "node-proxy/confdir.h"
#include "node-proxy/policy.h"
#include "node-proxy/services.h"

struct confwatch;

struct confwatch_opts {
	const char *policy_dir;   /* NULL: no authorization policies */
	const char *services_dir; /* NULL: no services */
	const char *root_ns;      /* NULL: POLICY_DEFAULT_ROOT_NS */
	unsigned debounce_ms;     /* quiet time after the last change; 0: 100 */
	/* Called by confwatch_process() after a swap, on its thread, with the
	 * sets now in force (borrowed: policy_set_get() to keep one).  The data
	 * plane re-evaluates its open connections against @ps here. */
	void (*on_change)(void *arg, struct policy_set *ps, struct service_set *ss);
	void *arg;
};

struct confwatch_stats {
	uint64_t generation; /* successful swaps so far (the initial load is 1) */
	uint64_t policy_reloads_ok, policy_reloads_failed;
	uint64_t services_reloads_ok, services_reloads_failed;
	char last_error[CONFDIR_ERR_LEN]; /* first error of the last failed load */
};

/*
 * Load both directories and start watching them.  A directory that does
 * not exist or fails to load is an error here (-EINVAL, messages in @err):
 * a node must not start with less policy than configured.  0 or -errno.
 */
int confwatch_open(const struct confwatch_opts *o, struct confwatch **out, struct conf_errors *err);
void confwatch_close(struct confwatch *cw);

/* Readable when there is something for confwatch_process() to do. */
int confwatch_fd(const struct confwatch *cw);
/* Drain events; reload once the directories were quiet for debounce_ms.
 * Returns 1 if new sets are in force, 0 if not (nothing to do, or the new
 * files were refused: logged with file:line, counted), or -errno. */
int confwatch_process(struct confwatch *cw);
/* Reload both now (SIGHUP, admin).  Same return as confwatch_process(). */
int confwatch_reload(struct confwatch *cw);

/* The sets in force, each with a new reference for the caller (may be NULL
 * when the directory was not configured). */
struct policy_set *confwatch_policies(struct confwatch *cw);
struct service_set *confwatch_services(struct confwatch *cw);
/* Bumped on every swap; lock-free, for workers to notice a change. */
uint64_t confwatch_generation(const struct confwatch *cw);
void confwatch_get_stats(struct confwatch *cw, struct confwatch_stats *st);

#endif
