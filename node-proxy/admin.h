/*
 * admin: node-proxy's small HTTP/1.1 admin and readiness server.
 *
 * One thread with poll(2), off the data path.  127.0.0.1:<admin> serves
 * GET /healthz/ready, /workloads, /connections, /stats, /config_dump
 * (JSON), /logging?..., and POST /quitquitquit (graceful drain, as SIGTERM);
 * 0.0.0.0:<readiness> serves GET /healthz/ready only (200 once state is
 * restored and listeners are up, else 503).  Both live in the node netns.
 * One request per connection (Connection: close); requests are bounded
 * (4 KiB, 2 s) so a slow or hostile client cannot pin the thread for long.
 */
#ifndef AMBIT_NP_ADMIN_H
#define AMBIT_NP_ADMIN_H

struct admin;
struct inpod;
struct worker;
struct np_config;

struct admin_src {
	int (*ready)(void *arg);
	void *arg;
	struct inpod *inpod;
	struct worker **workers;
	unsigned n_workers;
};

/* Bind both ports and start the thread.  0 or -errno (message logged). */
int admin_start(const struct np_config *cfg, const struct admin_src *src, struct admin **out);
void admin_stop(struct admin *a);

#endif
