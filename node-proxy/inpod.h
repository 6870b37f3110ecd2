/*
 * inpod: enrolment of pods into the data plane.
 *
 * Owns the table of enrolled pods and a helper thread that enters a pod's
 * network namespace (setns) to open its listeners there: 15001 (outbound
 * capture), 15006 (inbound plaintext) and 15008 (HBONE), one SO_REUSEPORT
 * copy per worker, IPv4 always and IPv6 when the pod has an IPv6 address.
 * The thread then returns to the node netns and hands each copy to its
 * worker.  Only this thread changes netns for listeners, so the control
 * and main threads never leave the node netns.
 */
#ifndef AMBIT_NP_INPOD_H
#define AMBIT_NP_INPOD_H

#include <jansson.h>
#include <stddef.h>

#include "node-proxy/workload.h"

struct inpod;
struct worker;
struct np_config;

/* Start the helper thread.  @workers (not owned) must outlive @ip. */
int inpod_start(const struct np_config *cfg, struct worker **workers, unsigned n_workers,
                int node_netns_fd, struct inpod **out);
/* Stop the thread and drop the table (pods are freed once their last
 * connection and listener are gone).  NULL is a no-op. */
void inpod_stop(struct inpod *ip);

/* Enrol @w, whose netns is @netns_fd (dup'ed, not taken).  A uid already
 * enrolled with the same netns is a no-op; with another netns it is
 * replaced.  Listeners are listening when this returns 0.  -errno and a
 * message in @err otherwise. */
int inpod_add(struct inpod *ip, const struct workload *w, int netns_fd, char *err, size_t errlen);
/* Remove: listeners stop listening before this returns, connections drain
 * within the configured deadline.  Unknown uid: 0. */
int inpod_del(struct inpod *ip, const char *uid, char *err, size_t errlen);
/* The enrolled pod that owns the address of @sa (AF_INET/AF_INET6), with a
 * reference the caller drops with pod_put(); NULL if none.  Called by
 * workers once per outbound connection (a read lock, a linear scan). */
struct sockaddr;
struct pod *inpod_lookup_addr(struct inpod *ip, const struct sockaddr *sa);
/* Uids enrolled now; for tests and admin. */
size_t inpod_count(struct inpod *ip);
/* JSON array describing every enrolled pod (new reference). */
json_t *inpod_workloads_json(struct inpod *ip);

#endif
