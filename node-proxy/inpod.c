/* inpod: see inpod.h. */
#include "node-proxy/inpod.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node-proxy/config.h"
#include "node-proxy/log.h"
#include "node-proxy/pod.h"
#include "node-proxy/registry.h"
#include "node-proxy/worker.h"

struct inpod_req {
	struct pod *pod;
	int rc;
	int done;
	char err[256];
};

struct inpod {
	struct np_config cfg;
	struct worker **workers;
	unsigned n_workers;
	int node_netns_fd;

	pthread_t thread;
	pthread_mutex_t mu; /* req, stop */
	pthread_cond_t cv;
	struct inpod_req *req;
	int stop;

	pthread_mutex_t call_mu; /* one add/del at a time */
	pthread_rwlock_t tab_mu; /* pods[]: written by add/del, read by workers' lookups */
	struct pod *pods[REGISTRY_MAX];
	unsigned n_pods;
	uint64_t next_id;
};

void pod_put(struct pod *p)
{
	if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (unsigned i = 0; i < p->n_lfds; i++)
		close(p->lfd[i]);
	if (p->netns_fd >= 0)
		close(p->netns_fd);
	free(p);
}

static uint16_t kind_port(const struct np_config *c, int kind)
{
	return kind == LK_OUTBOUND  ? c->port_outbound
	       : kind == LK_INBOUND ? c->port_inbound
	                            : c->port_hbone;
}

static int open_one(const struct np_config *cfg, int family, uint16_t port, unsigned worker,
                    int *out)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1, fd, rc;

	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_any;
		len = sizeof(*sin6);
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)))
			goto err;
	}
	/* REUSEPORT: one copy per worker, the kernel spreads connections.
	 * The mark is inherited by accepted sockets, so nothing the proxy
	 * sends is captured again. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_MARK, &cfg->proxy_mark, sizeof(cfg->proxy_mark)))
		goto err;
	/* With workers pinned one per CPU, prefer the copy of the worker on
	 * the CPU that handled the SYN: both hops of a pod-to-pod flow then
	 * stay on one worker and one CPU (reuseport honours this since 6.0). */
	if (cfg->cpu_affinity) {
		int cpu = (int)worker;
		setsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu, sizeof(cpu));
	}
	if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, (int)cfg->backlog))
		goto err;
	*out = fd;
	return 0;
err:
	rc = -errno;
	close(fd);
	return rc;
}

/* On the helper thread: enter the pod's netns, open every listener copy,
 * come back. */
static int open_listeners(struct inpod *ip, struct pod *p, char *err, size_t errlen)
{
	int has_v6 = 0, rc = 0;

	for (unsigned i = 0; i < p->w.n_ips; i++)
		if (p->w.ips[i].family == AF_INET6)
			has_v6 = 1;
	if (setns(p->netns_fd, CLONE_NEWNET)) {
		rc = -errno;
		snprintf(err, errlen, "setns into pod netns: %s", strerror(errno));
		return rc;
	}
	for (int kind = 0; kind < LK_N && !rc; kind++) {
		uint16_t port = kind_port(&ip->cfg, kind);
		for (int f = 0; f < 1 + has_v6 && !rc; f++) {
			int family = f ? AF_INET6 : AF_INET;
			for (unsigned wi = 0; wi < ip->n_workers; wi++) {
				int fd = -1;
				rc = open_one(&ip->cfg, family, port, wi, &fd);
				if (rc) {
					snprintf(err, errlen,
					         "listen on %s port %u in pod netns: %s",
					         f ? "[::]" : "0.0.0.0", port, strerror(-rc));
					break;
				}
				p->lfd[p->n_lfds++] = fd;
			}
		}
	}
	if (setns(ip->node_netns_fd, CLONE_NEWNET)) {
		/* Cannot happen short of the node netns fd being bad; this
		 * thread would create the next pod's listeners in the wrong
		 * place, so refuse to go on. */
		log_err("event=setns_back_failed err=%s", strerror(errno));
		abort();
	}
	if (rc) {
		for (unsigned i = 0; i < p->n_lfds; i++)
			close(p->lfd[i]);
		p->n_lfds = 0;
	}
	return rc;
}

static void *inpod_main(void *arg)
{
	struct inpod *ip = arg;

	pthread_mutex_lock(&ip->mu);
	for (;;) {
		while (!ip->stop && (!ip->req || ip->req->done))
			pthread_cond_wait(&ip->cv, &ip->mu);
		if (ip->stop)
			break;
		struct inpod_req *r = ip->req;
		pthread_mutex_unlock(&ip->mu);
		r->rc = open_listeners(ip, r->pod, r->err, sizeof(r->err));
		pthread_mutex_lock(&ip->mu);
		r->done = 1;
		pthread_cond_broadcast(&ip->cv);
	}
	pthread_mutex_unlock(&ip->mu);
	return NULL;
}

int inpod_start(const struct np_config *cfg, struct worker **workers, unsigned n_workers,
                int node_netns_fd, struct inpod **out)
{
	struct inpod *ip;
	int rc;

	if (n_workers > POD_MAX_WORKERS)
		return -EINVAL;
	ip = calloc(1, sizeof(*ip));
	if (!ip)
		return -ENOMEM;
	ip->cfg = *cfg;
	ip->workers = workers;
	ip->n_workers = n_workers;
	ip->node_netns_fd = node_netns_fd;
	ip->next_id = 1;
	pthread_mutex_init(&ip->mu, NULL);
	pthread_mutex_init(&ip->call_mu, NULL);
	pthread_rwlock_init(&ip->tab_mu, NULL);
	pthread_cond_init(&ip->cv, NULL);
	rc = -pthread_create(&ip->thread, NULL, inpod_main, ip);
	if (rc) {
		free(ip);
		return rc;
	}
	*out = ip;
	return 0;
}

static int find(struct inpod *ip, const char *uid)
{
	for (unsigned i = 0; i < ip->n_pods; i++)
		if (strcmp(ip->pods[i]->w.uid, uid) == 0)
			return (int)i;
	return -1;
}

static int same_netns(int a, int b)
{
	struct stat sa, sb;

	if (fstat(a, &sa) || fstat(b, &sb))
		return 0;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Unlink pods[i] and take it down (call_mu and tab_mu held). */
static void remove_at(struct inpod *ip, unsigned i)
{
	struct pod *p = ip->pods[i];

	ip->pods[i] = ip->pods[--ip->n_pods];
	__atomic_store_n(&p->deleted, 1, __ATOMIC_RELEASE);
	/* Stop listening now, before the ack: new connections are refused
	 * from this point on.  The fds stay open (and owned by the pod) until
	 * every worker has let go of them. */
	for (unsigned k = 0; k < p->n_lfds; k++)
		shutdown(p->lfd[k], SHUT_RDWR);
	for (unsigned k = 0; k < ip->n_workers; k++)
		worker_del_pod(ip->workers[k], p);
	log_info("event=pod_deleted uid=%s ns=%s name=%s", p->w.uid, p->w.ns, p->w.name);
	pod_put(p);
}

int inpod_add(struct inpod *ip, const struct workload *w, int netns_fd, char *err, size_t errlen)
{
	struct inpod_req req;
	struct pod *p;
	int rc, i;

	pthread_mutex_lock(&ip->call_mu);
	pthread_rwlock_wrlock(&ip->tab_mu);
	i = find(ip, w->uid);
	if (i >= 0 && same_netns(ip->pods[i]->netns_fd, netns_fd)) {
		ip->pods[i]->w = *w; /* metadata refresh only */
		pthread_rwlock_unlock(&ip->tab_mu);
		pthread_mutex_unlock(&ip->call_mu);
		return 0;
	}
	if (i >= 0)
		remove_at(ip, (unsigned)i);
	pthread_rwlock_unlock(&ip->tab_mu);
	if (ip->n_pods >= REGISTRY_MAX) {
		snprintf(err, errlen, "too many workloads (%d)", REGISTRY_MAX);
		rc = -ENOSPC;
		goto out;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	p->w = *w;
	p->refs = 1;
	p->netns_fd = fcntl(netns_fd, F_DUPFD_CLOEXEC, 0);
	if (p->netns_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "dup netns fd: %s", strerror(errno));
		free(p);
		goto out;
	}
	p->id = __atomic_fetch_add(&ip->next_id, 1, __ATOMIC_RELAXED);

	memset(&req, 0, sizeof(req));
	req.pod = p;
	pthread_mutex_lock(&ip->mu);
	ip->req = &req;
	pthread_cond_broadcast(&ip->cv);
	while (!req.done)
		pthread_cond_wait(&ip->cv, &ip->mu);
	ip->req = NULL;
	pthread_mutex_unlock(&ip->mu);
	rc = req.rc;
	if (rc) {
		snprintf(err, errlen, "%s", req.err);
		pod_put(p);
		goto out;
	}

	/* Listener copies are laid out kind-major, then family, then worker. */
	unsigned per_kind = p->n_lfds / LK_N;
	for (unsigned k = 0; k < p->n_lfds; k++) {
		int kind = (int)(k / per_kind);
		int family = (k % per_kind) >= ip->n_workers ? AF_INET6 : AF_INET;
		worker_add_listener(ip->workers[k % ip->n_workers], p, kind, family,
		                    kind_port(&ip->cfg, kind), p->lfd[k]);
	}
	pthread_rwlock_wrlock(&ip->tab_mu);
	ip->pods[ip->n_pods++] = p;
	pthread_rwlock_unlock(&ip->tab_mu);
	log_info("event=pod_added uid=%s ns=%s name=%s listeners=%u", w->uid, w->ns, w->name,
	         p->n_lfds);
out:
	pthread_mutex_unlock(&ip->call_mu);
	return rc;
}

int inpod_del(struct inpod *ip, const char *uid, char *err, size_t errlen)
{
	int i;

	(void)err;
	(void)errlen;
	pthread_mutex_lock(&ip->call_mu);
	pthread_rwlock_wrlock(&ip->tab_mu);
	i = find(ip, uid);
	if (i >= 0)
		remove_at(ip, (unsigned)i);
	pthread_rwlock_unlock(&ip->tab_mu);
	pthread_mutex_unlock(&ip->call_mu);
	return 0;
}

struct pod *inpod_lookup_addr(struct inpod *ip, const struct sockaddr *sa)
{
	struct pod *found = NULL;

	pthread_rwlock_rdlock(&ip->tab_mu);
	for (unsigned i = 0; i < ip->n_pods && !found; i++) {
		struct pod *p = ip->pods[i];
		for (unsigned k = 0; k < p->w.n_ips; k++) {
			const struct wl_ip *a = &p->w.ips[k];
			if (a->family != sa->sa_family)
				continue;
			if (a->family == AF_INET
			        ? a->v4.s_addr == ((const struct sockaddr_in *)sa)->sin_addr.s_addr
			        : !memcmp(&a->v6, &((const struct sockaddr_in6 *)sa)->sin6_addr,
			                  sizeof(a->v6))) {
				found = p;
				pod_get(p);
				break;
			}
		}
	}
	pthread_rwlock_unlock(&ip->tab_mu);
	return found;
}

size_t inpod_count(struct inpod *ip)
{
	size_t n;

	pthread_rwlock_rdlock(&ip->tab_mu);
	n = ip->n_pods;
	pthread_rwlock_unlock(&ip->tab_mu);
	return n;
}

json_t *inpod_workloads_json(struct inpod *ip)
{
	json_t *arr = json_array();

	pthread_rwlock_rdlock(&ip->tab_mu);
	for (unsigned i = 0; i < ip->n_pods; i++) {
		struct pod *p = ip->pods[i];
		json_t *ips = json_array();
		char buf[INET6_ADDRSTRLEN];
		for (unsigned k = 0; k < p->w.n_ips; k++) {
			inet_ntop(p->w.ips[k].family, &p->w.ips[k].v6, buf, sizeof(buf));
			json_array_append_new(ips, json_string(buf));
		}
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:i, s:i}",
		                                     "uid", p->w.uid, "namespace", p->w.ns, "name",
		                                     p->w.name, "service_account", p->w.sa, "netns",
		                                     p->w.netns_path, "ips", ips, "connections",
		                                     __atomic_load_n(&p->conns, __ATOMIC_RELAXED),
		                                     "listeners", (int)p->n_lfds));
	}
	pthread_rwlock_unlock(&ip->tab_mu);
	return arr;
}

void inpod_stop(struct inpod *ip)
{
	if (!ip)
		return;
	pthread_mutex_lock(&ip->mu);
	ip->stop = 1;
	pthread_cond_broadcast(&ip->cv);
	pthread_mutex_unlock(&ip->mu);
	pthread_join(ip->thread, NULL);
	pthread_rwlock_wrlock(&ip->tab_mu);
	for (unsigned i = 0; i < ip->n_pods; i++)
		pod_put(ip->pods[i]);
	ip->n_pods = 0;
	pthread_rwlock_unlock(&ip->tab_mu);
	pthread_mutex_destroy(&ip->mu);
	pthread_mutex_destroy(&ip->call_mu);
	pthread_rwlock_destroy(&ip->tab_mu);
	pthread_cond_destroy(&ip->cv);
	free(ip);
}
