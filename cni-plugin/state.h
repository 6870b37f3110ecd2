/*
 * state: what ambit-cni remembers about each attachment it enrolled.
 *
 * One small JSON file per attachment, <stateDir>/<network>/<containerID>.<ifname>,
 * written atomically (temp file, rename) *before* the pod is registered
 * with node-proxy, so that DEL and GC always know which node-proxy uid an
 * attachment was registered under (the pod UID, or the container ID when
 * the runtime gives none) and which netns holds its rules.  A lock file per
 * network serializes GC (exclusive) against ADD/DEL (shared).
 */
#ifndef AMBIT_CNI_STATE_H
#define AMBIT_CNI_STATE_H

#include <stddef.h>

#include "cni-plugin/cniconf.h"
#include "node-proxy/workload.h"

struct cni_state {
	char container_id[CNI_CONTAINERID_MAX];
	char ifname[CNI_IFNAME_MAX];
	char uid[WL_UID_MAX];
	char netns[256];
	int ipv6;
};

struct state_dir {
	int dirfd;
	int lockfd;
};

/* Create (0700) and lock <dir>/<network>; shared unless @exclusive.
 * @network "" means "_".  Returns 0 or -errno. */
int state_open(struct state_dir *sd, const char *dir, const char *network, int exclusive);
void state_close(struct state_dir *sd);

/* Write, read, remove one record.  state_get returns -ENOENT when there is
 * none, -EINVAL when the file is corrupt.  state_drop of a missing
 * record is 0. */
int state_put(struct state_dir *sd, const struct cni_state *s);
int state_get(struct state_dir *sd, const char *container_id, const char *ifname,
              struct cni_state *s);
int state_drop(struct state_dir *sd, const char *container_id, const char *ifname);

/* All readable records; *out is malloc'ed (caller frees), corrupt files
 * are skipped.  Returns the count or -errno. */
int state_list(struct state_dir *sd, struct cni_state **out);

#endif
