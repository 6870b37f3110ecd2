/*
 * registry: the set of enrolled workloads, persisted so that a restarted
 * node-proxy serves every pod again without the CNI plugin being called.
 *
 * The state file is JSON (ctlproto's workload encoding plus the netns
 * identity: path, st_dev and st_ino of the nsfs inode), rewritten
 * atomically on every change: temp file in the same dir, fsync, rename,
 * fsync of the directory.  Thread-safe (one mutex; not on the data path).
 */
#ifndef AMBIT_REGISTRY_H
#define AMBIT_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "node-proxy/workload.h"

#define REGISTRY_MAX 1024 /* workloads per node; ADD beyond is refused */

struct registry;

struct registry_entry {
	struct workload w;
	uint64_t netns_dev; /* identity of the netns the CNI handed us, so a */
	uint64_t netns_ino; /* reused path is never mistaken for the old pod */
};

/* Open the registry backed by @state_path (not read yet; NULL keeps it in
 * memory only).  0 or -errno. */
int registry_open(const char *state_path, struct registry **out);
void registry_close(struct registry *r);

/* Insert or replace by uid, then persist.  0, -ENOSPC, or -errno. */
int registry_put(struct registry *r, const struct registry_entry *e);
/* Remove by uid, then persist.  0 also when absent. */
int registry_del(struct registry *r, const char *uid);
/* Copy the entry for @uid into @out: 0, or -ENOENT. */
int registry_get(struct registry *r, const char *uid, struct registry_entry *out);
/* Copy out the uids of up to @max entries; returns the count. */
size_t registry_uids(struct registry *r, char (*out)[WL_UID_MAX], size_t max);
/* Copy out up to @max entries; returns the count. */
size_t registry_list(struct registry *r, struct registry_entry *out, size_t max);
size_t registry_count(struct registry *r);

/*
 * Restore after a restart: read the state file, and for each entry open
 * its netns path, check dev/ino still match, and call @readd with the open
 * fd (closed by restore afterwards).  Entries whose netns vanished or
 * changed, or whose @readd fails, are dropped from the registry and
 * logged.  A missing state file is an empty registry; a corrupt one is
 * renamed aside (.corrupt) and logged.  Returns the number restored or
 * -errno.
 */
int registry_restore(struct registry *r,
                     int (*readd)(void *arg, const struct registry_entry *e, int netns_fd),
                     void *arg);

#endif
