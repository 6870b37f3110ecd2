/*
 * pod: one enrolled workload as the data plane sees it.
 *
 * Shared by the inpod helper thread (which creates it and opens its
 * listeners), the workers (which accept on those listeners and relay its
 * connections) and the admin thread (which lists it).  Lifetime is a
 * reference count: one reference while enrolled, one per armed listener
 * copy in a worker, one per open connection.  The last pod_put() closes the
 * listener fds and the netns fd and frees it, on whichever thread that is.
 */
#ifndef AMBIT_NP_POD_H
#define AMBIT_NP_POD_H

#include <stdint.h>

#include "node-proxy/workload.h"

enum lsn_kind { LK_OUTBOUND = 0, LK_INBOUND, LK_HBONE, LK_N };

#define POD_MAX_WORKERS 64
#define POD_MAX_LFDS    (LK_N * 2 * POD_MAX_WORKERS) /* kinds x {v4,v6} x workers */

struct pod {
	uint64_t id;       /* unique for the process lifetime, never reused */
	struct workload w; /* copy of what the control plane sent */
	int netns_fd;      /* owned */
	int refs;          /* atomic */
	int conns;         /* atomic: open connections (for /workloads) */
	int deleted;       /* atomic: set once by inpod_del() */
	unsigned n_lfds;
	int lfd[POD_MAX_LFDS]; /* owned: every listener copy opened in the netns */
};

static inline void pod_get(struct pod *p)
{
	__atomic_fetch_add(&p->refs, 1, __ATOMIC_RELAXED);
}

/* Drop a reference; the last one frees @p (see above). */
void pod_put(struct pod *p);

#endif
