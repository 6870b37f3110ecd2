/*
 * authz: see authz.h.  The watch thread is the only caller of
 * confwatch_process()/confwatch_reload(); workers only read the generation
 * and take set references, as confwatch.h allows from any thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "node-proxy/authz.h"
#include "node-proxy/config.h"
#include "node-proxy/confwatch.h"
#include "node-proxy/conn.h"
#include "node-proxy/healthcheck.h"
#include "node-proxy/inpod.h"
#include "node-proxy/log.h"
#include "node-proxy/mesh.h"
#include "node-proxy/metrics.h"
#include "node-proxy/pod.h"
#include "node-proxy/worker-t.h"

#define N_REASONS (POLICY_DENY_PLAINTEXT + 1)

#define REG_MAX 4096 /* workloads known as service endpoints */

/* A balanced plaintext connection's claim, by conn slot index (per
 * worker); @bo the backoff timeout the kernel reads when the retry's
 * linked chain is submitted (it must outlive the submission). */
struct svc_slot {
	struct svc_claim cl;
	struct __kernel_timespec bo;
	uint16_t gen;
};

/* One per worker (indexed by worker id), written by that worker only. */
struct authz_w {
	struct service_set *ss; /* reference, taken at generation @ss_gen */
	uint64_t ss_gen;
	struct svc_slot *slots; /* max_conns, allocated on first use */
	uint64_t svc_routed, svc_refused, svc_no_endpoint, svc_connect_failed, svc_retries;
	struct policy_set *ps; /* reference, taken at generation @gen */
	uint64_t gen;
	uint64_t judged_gen;           /* open conns were last judged at this generation */
	uint64_t by_reason[N_REASONS]; /* new connections, by verdict reason */
	uint64_t hbone_allowed, hbone_denied;
	uint64_t revoked; /* open connections closed because a change denies them */
	/* ambit_policy_decisions_total children already looked up, for the
	 * set of generation @mc_gen (policy names point into that set) */
	struct {
		const char *policy;
		bool allow;
		uint32_t slot;
	} mc[16];
	unsigned n_mc;
	uint64_t mc_gen;
} __attribute__((aligned(64)));

static struct {
	int enabled;
	struct confwatch *cw;
	pthread_t thr;
	int efd;               /* wakes the watch thread: stop or reload */
	int stop, want_reload; /* atomics */
	struct authz_w w[POD_MAX_WORKERS];
	/* active health checks of service endpoints, run by the watch thread */
	struct healthcheck *hc;
	int node_netns_fd;
	uint32_t mark;
	/* service endpoints: copies of the enrolled workloads */
	pthread_mutex_t reg_mu;
	struct workload *reg[REG_MAX];
	size_t n_reg;
} g = { .efd = -1, .node_netns_fd = -1, .reg_mu = PTHREAD_MUTEX_INITIALIZER };

#define CNT_ADD(f, n) __atomic_store_n(&(f), (f) + (n), __ATOMIC_RELAXED)

static const char *ip_str(const struct sockaddr *sa, char *buf, size_t len)
{
	if (sa && sa->sa_family == AF_INET)
		return inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf,
		                 (socklen_t)len);
	if (sa && sa->sa_family == AF_INET6)
		return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf,
		                 (socklen_t)len);
	snprintf(buf, len, "-");
	return buf;
}

int authz_decide(const struct policy_set *ps, const struct workload *dst,
                 const struct sockaddr *peer, uint16_t dst_port, const char *principal,
                 struct policy_verdict *v)
{
	struct policy_conn c = { .src_principal = principal,
		                 .dst_port = dst_port,
		                 .plaintext = principal == NULL };

	if (peer && peer->sa_family == AF_INET) {
		c.src_ip.family = AF_INET;
		c.src_ip.v4 = ((const struct sockaddr_in *)peer)->sin_addr;
	} else if (peer && peer->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)peer)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			/* a v4 client on a dual-stack socket: judge it as v4 */
			c.src_ip.family = AF_INET;
			memcpy(&c.src_ip.v4, &a->s6_addr[12], 4);
		} else {
			c.src_ip.family = AF_INET6;
			c.src_ip.v6 = *a;
		}
	}
	return policy_eval(ps, dst, &c, v);
}

/* ---- watch thread ----------------------------------------------------------- */

static void on_change(void *arg, struct policy_set *ps, struct service_set *ss)
{
	(void)arg;
	(void)ss;
	/* Workers notice the generation on their next tick (<= 100 ms).  Also
	 * called by confwatch_open() for the initial load, before g.cw is set. */
	log_info("event=authz_policies_changed policies=%u", policy_set_count(ps));
}

/* A health-check socket from inside @w's pod (its app is reached without
 * leaving the pod), marked so the pod's capture rules let it through.
 * Runs on the watch thread, which returns to the node netns at once. */
static int hc_socket(void *arg, const struct workload *w, int family)
{
	int nfd, fd, rc;

	(void)arg;
	nfd = open(w->netns_path, O_RDONLY | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	if (setns(nfd, CLONE_NEWNET)) {
		rc = -errno;
		close(nfd);
		return rc;
	}
	close(nfd);
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	rc = fd < 0 ? -errno : 0;
	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &g.mark, sizeof(g.mark))) {
		rc = -errno;
		close(fd);
	}
	if (setns(g.node_netns_fd, CLONE_NEWNET)) {
		/* never stay in a pod's netns: that pod may go away */
		log_err("event=authz_setns_back_failed err=%s", strerror(errno));
		abort();
	}
	return rc ? rc : fd;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One round of health checks; returns the ms until the next one. */
static int run_checks(void)
{
	struct service_set *ss;
	int ms;

	if (!g.hc)
		return -1;
	ss = confwatch_services(g.cw);
	pthread_mutex_lock(&g.reg_mu);
	ms = healthcheck_run(g.hc, ss, (const struct workload *const *)g.reg, g.n_reg, mono_ms());
	pthread_mutex_unlock(&g.reg_mu);
	services_set_put(ss);
	return ms;
}

static void *watch_main(void *arg)
{
	struct pollfd pfd[3] = { { .fd = confwatch_fd(g.cw), .events = POLLIN },
		                 { .fd = g.efd, .events = POLLIN },
		                 { .fd = g.hc ? healthcheck_fd(g.hc) : -1, .events = POLLIN } };
	int timeout = run_checks();

	(void)arg;
	while (!__atomic_load_n(&g.stop, __ATOMIC_ACQUIRE)) {
		if (poll(pfd, 3, timeout) < 0) {
			if (errno == EINTR)
				continue;
			log_err("event=authz_poll_failed err=%s", strerror(errno));
			break;
		}
		if (pfd[1].revents & POLLIN) {
			uint64_t v;
			if (read(g.efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				break;
		}
		if (__atomic_exchange_n(&g.want_reload, 0, __ATOMIC_ACQ_REL))
			confwatch_reload(g.cw);
		if (pfd[0].revents & POLLIN)
			confwatch_process(g.cw);
		timeout = run_checks();
	}
	return NULL;
}

int authz_init(const struct np_config *cfg, char *err, size_t errlen)
{
	struct confwatch_opts o = { .root_ns = cfg->policy_root_ns[0] ? cfg->policy_root_ns : NULL,
		                    .on_change = on_change };
	struct conf_errors *e;
	int rc;

	if (!cfg->policy_dir[0] && !cfg->services_dir[0])
		return 0;
	o.policy_dir = cfg->policy_dir[0] ? cfg->policy_dir : NULL;
	o.services_dir = cfg->services_dir[0] ? cfg->services_dir : NULL;
	e = calloc(1, sizeof(*e)); /* ~32 KiB: not on the stack */
	if (!e)
		return -ENOMEM;
	conf_errors_init(e);
	rc = confwatch_open(&o, &g.cw, e);
	if (rc) {
		snprintf(err, errlen, "%s%s", e->n ? e->msg[0] : strerror(-rc),
		         conf_errors_count(e) > 1 ? " (and more, see check-config)" : "");
		/* each error was logged by confwatch with file:line */
		goto out;
	}
	if (o.services_dir) {
		g.mark = cfg->proxy_mark;
		g.node_netns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		rc = g.node_netns_fd < 0 ? -errno : healthcheck_open(hc_socket, NULL, &g.hc);
		if (rc) {
			snprintf(err, errlen, "health checks: %s", strerror(-rc));
			goto fail_cw;
		}
	}
	g.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g.efd < 0) {
		rc = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail_cw;
	}
	rc = -pthread_create(&g.thr, NULL, watch_main, NULL);
	if (rc) {
		snprintf(err, errlen, "pthread_create: %s", strerror(-rc));
		goto fail_efd;
	}
	g.enabled = o.policy_dir != NULL;
	log_info("event=authz_started policies_dir=%s services_dir=%s enforcing=%d",
	         o.policy_dir ? o.policy_dir : "-", o.services_dir ? o.services_dir : "-",
	         g.enabled);
	goto out;
fail_efd:
	close(g.efd);
	g.efd = -1;
fail_cw:
	if (g.hc)
		healthcheck_close(g.hc);
	g.hc = NULL;
	if (g.node_netns_fd >= 0)
		close(g.node_netns_fd);
	g.node_netns_fd = -1;
	confwatch_close(g.cw);
	g.cw = NULL;
out:
	free(e);
	return rc;
}

static void wake(void)
{
	uint64_t one = 1;

	if (write(g.efd, &one, sizeof(one)) < 0)
		log_warn("event=authz_wake_failed err=%s", strerror(errno));
}

void authz_fini(void)
{
	if (!g.cw)
		return;
	__atomic_store_n(&g.stop, 1, __ATOMIC_RELEASE);
	wake();
	pthread_join(g.thr, NULL);
	close(g.efd);
	g.efd = -1;
	for (unsigned i = 0; i < POD_MAX_WORKERS; i++) {
		policy_set_put(g.w[i].ps);
		g.w[i].ps = NULL;
		services_set_put(g.w[i].ss);
		g.w[i].ss = NULL;
		free(g.w[i].slots);
		g.w[i].slots = NULL;
	}
	pthread_mutex_lock(&g.reg_mu);
	for (size_t i = 0; i < g.n_reg; i++)
		free(g.reg[i]);
	g.n_reg = 0;
	pthread_mutex_unlock(&g.reg_mu);
	g.enabled = 0;
	if (g.hc)
		healthcheck_close(g.hc);
	g.hc = NULL;
	if (g.node_netns_fd >= 0)
		close(g.node_netns_fd);
	g.node_netns_fd = -1;
	confwatch_close(g.cw);
	g.cw = NULL;
}

int authz_enabled(void)
{
	return g.enabled;
}

int authz_reload(void)
{
	if (!g.cw)
		return 0;
	__atomic_store_n(&g.want_reload, 1, __ATOMIC_RELEASE);
	wake();
	return 0;
}

/* ---- worker hooks ----------------------------------------------------------- */

static struct authz_w *aw_of(struct worker *w)
{
	return &g.w[w->id % POD_MAX_WORKERS];
}

/* The set in force for this worker: swapped when the generation moved. */
static struct policy_set *cur_set(struct authz_w *a)
{
	uint64_t gen = confwatch_generation(g.cw);

	if (gen != a->gen) {
		policy_set_put(a->ps);
		a->ps = confwatch_policies(g.cw);
		a->gen = gen;
	}
	return a->ps;
}

/* ambit_policy_decisions_total{action, policy}: the child is looked up
 * (a string build) once per (verdict, policy) and set, then cached. */
static void count_decision(struct authz_w *a, const struct policy_verdict *v)
{
	const char *vals[2] = { v->allow ? "ALLOW" : "DENY", v->policy ? v->policy : "none" };
	uint32_t slot;
	unsigned i;

	if (a->mc_gen != a->gen)
		a->n_mc = 0, a->mc_gen = a->gen;
	for (i = 0; i < a->n_mc; i++)
		if (a->mc[i].allow == v->allow && a->mc[i].policy == v->policy)
			break;
	if (i < a->n_mc) {
		slot = a->mc[i].slot;
	} else {
		slot = metrics_child(metrics_std(MS_POLICY_DECISIONS), vals);
		if (a->n_mc < sizeof(a->mc) / sizeof(a->mc[0]))
			a->mc[a->n_mc++] = (typeof(a->mc[0])){ v->policy, v->allow, slot };
	}
	metrics_ctr_add_any(slot, 1);
}

static void log_denied(const char *what, const struct pod *dst, const struct sockaddr *peer,
                       const char *principal, uint16_t port, const struct policy_verdict *v)
{
	char ip[INET6_ADDRSTRLEN];

	log_info("event=authz_denied what=%s pod=%s/%s src=%s principal=%s port=%u reason=%s "
	         "policy=%s",
	         what, dst->w.ns, dst->w.name, ip_str(peer, ip, sizeof(ip)),
	         principal ? principal : "-", port, policy_reason_str(v->reason),
	         v->policy ? v->policy : "-");
}

int authz_plaintext(struct worker *w, struct pod *dst, int cfd, uint16_t dst_port)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct policy_verdict v;
	struct authz_w *a;
	int rc;

	if (!g.enabled)
		return 0;
	a = aw_of(w);
	if (getpeername(cfd, (struct sockaddr *)&peer, &plen))
		peer.ss_family = AF_UNSPEC; /* judged without an address */
	rc = authz_decide(cur_set(a), &dst->w, (struct sockaddr *)&peer, dst_port, NULL, &v);
	CNT_ADD(a->by_reason[v.reason], 1);
	count_decision(a, &v);
	if (rc)
		log_denied("plaintext", dst, (struct sockaddr *)&peer, NULL, dst_port, &v);
	return rc;
}

int authz_hbone(struct worker *w, struct pod *dst, const char *principal, int tfd,
                uint16_t dst_port)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct policy_verdict v;
	struct authz_w *a;
	int rc;

	if (!g.enabled)
		return 0;
	a = aw_of(w);
	if (tfd < 0 || getpeername(tfd, (struct sockaddr *)&peer, &plen))
		peer.ss_family = AF_UNSPEC;
	/* an HBONE peer without an identity cannot happen (mTLS); if it
	 * did, an empty principal is judged as "no identity", not plaintext */
	rc = authz_decide(cur_set(a), &dst->w, (struct sockaddr *)&peer, dst_port,
	                  principal ? principal : "", &v);
	CNT_ADD(a->by_reason[v.reason], 1);
	count_decision(a, &v);
	if (rc) {
		CNT_ADD(a->hbone_denied, 1);
		log_denied("hbone", dst, (struct sockaddr *)&peer, principal, dst_port, &v);
	} else {
		CNT_ADD(a->hbone_allowed, 1);
	}
	return rc;
}

int authz_mesh_local(struct worker *w, struct pod *dst, struct pod *src, int cfd, uint16_t dst_port)
{
	char principal[MESH_ID_MAX];

	if (!g.enabled)
		return 0;
	if (mesh_principal(src, principal, sizeof(principal)))
		principal[0] = '\0'; /* judged as "no identity": cannot happen with mesh on */
	return authz_hbone(w, dst, principal, cfd, dst_port);
}

int authz_hbone_recheck(struct worker *w, struct pod *dst, const char *principal, int tfd,
                        uint16_t dst_port)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct policy_verdict v;
	struct authz_w *a;

	if (!g.enabled)
		return 0;
	a = aw_of(w);
	if (tfd < 0 || getpeername(tfd, (struct sockaddr *)&peer, &plen))
		peer.ss_family = AF_UNSPEC;
	if (authz_decide(cur_set(a), &dst->w, (struct sockaddr *)&peer, dst_port,
	                 principal ? principal : "", &v) == 0)
		return 0;
	CNT_ADD(a->revoked, 1);
	log_denied("revoked", dst, (struct sockaddr *)&peer, principal, dst_port, &v);
	return -EACCES;
}

void authz_tick(struct worker *w)
{
	struct authz_w *a;
	struct policy_set *ps;
	uint32_t i;

	if (!g.enabled)
		return;
	a = aw_of(w);
	if (confwatch_generation(g.cw) == a->judged_gen)
		return;
	ps = cur_set(a);
	a->judged_gen = a->gen;
	for (i = w->pool.active_head; i != CONN_NIL;) {
		struct conn *c = &w->pool.slots[i];
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		struct policy_verdict v;
		struct pod *dst = NULL;
		char principal[MESH_ID_MAX];
		const char *pr = NULL;
		uint16_t port;

		i = c->next;
		if (c->state != CS_OPEN && c->state != CS_CONNECTING)
			continue;
		if (c->kind == LK_INBOUND)
			dst = c->pod;
		else if (c->kind == LK_OUTBOUND && c->upod)
			dst = c->upod; /* same-node shortcut: the destination's inbound */
		if (!dst)
			continue;
		/* sin_port and sin6_port share their offset */
		port = ntohs(c->dst.sin6_port);
		if (getpeername(c->ep[0].fd, (struct sockaddr *)&peer, &plen))
			peer.ss_family = AF_UNSPEC;
		/* a fast-path connection is judged by its source's principal */
		if (c->mesh_local)
			pr = mesh_principal(c->pod, principal, sizeof(principal)) ? "" : principal;
		if (authz_decide(ps, &dst->w, (struct sockaddr *)&peer, port, pr, &v) == 0)
			continue;
		CNT_ADD(a->revoked, 1);
		log_denied("revoked", dst, (struct sockaddr *)&peer, pr, port, &v);
		conn_abort(w, c, 1);
	}
	mesh_reauthorize(w); /* and the HBONE streams this worker serves */
}

/* ---- services ---------------------------------------------------------------- */

int authz_pod_add(const struct workload *w)
{
	struct workload *copy;
	int rc = 0;

	if (!g.cw)
		return 0;
	copy = malloc(sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	*copy = *w;
	pthread_mutex_lock(&g.reg_mu);
	for (size_t i = 0; i < g.n_reg; i++)
		if (strcmp(g.reg[i]->uid, w->uid) == 0) {
			free(g.reg[i]); /* re-add: fresh metadata */
			g.reg[i] = copy;
			goto out;
		}
	if (g.n_reg < REG_MAX)
		g.reg[g.n_reg++] = copy;
	else
		rc = -ENOSPC, free(copy);
out:
	pthread_mutex_unlock(&g.reg_mu);
	if (rc)
		log_warn("event=authz_endpoint_table_full uid=%s", w->uid);
	return rc;
}

void authz_pod_del(const char *uid)
{
	if (!g.cw)
		return;
	pthread_mutex_lock(&g.reg_mu);
	for (size_t i = 0; i < g.n_reg; i++)
		if (strcmp(g.reg[i]->uid, uid) == 0) {
			free(g.reg[i]);
			g.reg[i] = g.reg[--g.n_reg];
			break;
		}
	pthread_mutex_unlock(&g.reg_mu);
}

static struct service_set *cur_services(struct authz_w *a)
{
	uint64_t gen = confwatch_generation(g.cw);

	if (gen != a->ss_gen) {
		services_set_put(a->ss);
		a->ss = confwatch_services(g.cw);
		a->ss_gen = gen;
	}
	return a->ss;
}

static struct svc_slot *slot_of(struct worker *w, struct conn *c)
{
	struct authz_w *a = aw_of(w);
	struct svc_slot *s;

	if (!a->slots || c->idx >= w->cfg.max_conns)
		return NULL;
	s = &a->slots[c->idx];
	return s->cl.used && s->gen == c->gen ? s : NULL;
}

/* Pick an endpoint of @svc not in @tried and point @dst at it (the VIP's
 * family, target port).  0 or -EHOSTUNREACH. */
static int pick_endpoint(struct worker *w, const struct service *svc, struct svc_tried *tried,
                         uint16_t target, struct sockaddr_storage *dst, struct svc_endpoint **ep)
{
	struct svc_pick pick;
	int rc;

	pthread_mutex_lock(&g.reg_mu);
	rc = services_pick(svc, (const struct workload *const *)g.reg, g.n_reg, tried, w->now_ms,
	                   &pick);
	if (rc == 0) {
		rc = -EHOSTUNREACH;
		for (unsigned i = 0; i < pick.wl->n_ips; i++) {
			const struct wl_ip *ip = &pick.wl->ips[i];
			if (ip->family != dst->ss_family)
				continue;
			if (ip->family == AF_INET) {
				((struct sockaddr_in *)dst)->sin_addr = ip->v4;
				((struct sockaddr_in *)dst)->sin_port = htons(target);
			} else {
				((struct sockaddr_in6 *)dst)->sin6_addr = ip->v6;
				((struct sockaddr_in6 *)dst)->sin6_port = htons(target);
			}
			rc = 0;
			break;
		}
		if (rc)
			services_done(pick.ep);
		else
			*ep = pick.ep;
	}
	pthread_mutex_unlock(&g.reg_mu);
	return rc;
}

static const struct service *lookup(struct authz_w *a, const struct sockaddr_storage *dst,
                                    uint16_t *target)
{
	struct service_set *ss = cur_services(a);
	struct wl_ip vip = { .family = dst->ss_family };
	uint16_t port;

	if (!ss)
		return NULL;
	if (dst->ss_family == AF_INET) {
		vip.v4 = ((const struct sockaddr_in *)dst)->sin_addr;
		port = ntohs(((const struct sockaddr_in *)dst)->sin_port);
	} else {
		vip.v6 = ((const struct sockaddr_in6 *)dst)->sin6_addr;
		port = ntohs(((const struct sockaddr_in6 *)dst)->sin6_port);
	}
	return services_lookup(ss, &vip, port, target);
}

int authz_service_claim(struct worker *w, struct svc_claim *cl, struct sockaddr_storage *dst)
{
	struct authz_w *a;
	const struct service *svc;
	struct svc_ticket t;
	struct svc_endpoint *ep = NULL;
	uint16_t target;

	cl->used = 0;
	if (!g.cw)
		return 0;
	a = aw_of(w);
	svc = lookup(a, dst, &target);
	if (!svc)
		return 0;
	if (services_acquire(svc, &t)) {
		CNT_ADD(a->svc_refused, 1);
		log_info("event=service_refused service=%s reason=%s", svc->id,
		         services_refusal_str(t.refused));
		return -EBUSY;
	}
	memset(&cl->tried, 0, sizeof(cl->tried));
	memset(&cl->vip, 0, sizeof(cl->vip));
	memcpy(&cl->vip, dst,
	       dst->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(cl->vip));
	if (pick_endpoint(w, svc, &cl->tried, target, dst, &ep)) {
		services_release(&t);
		CNT_ADD(a->svc_no_endpoint, 1);
		log_info("event=service_no_endpoint service=%s", svc->id);
		return -EHOSTUNREACH;
	}
	cl->t = t;
	cl->ep = ep;
	cl->used = 1;
	cl->attempt = 0;
	cl->retries_left =
	    (uint8_t)(svc->retries < SVC_MAX_RETRIES ? svc->retries : SVC_MAX_RETRIES);
	CNT_ADD(a->svc_routed, 1);
	return 1;
}

int authz_claim_failed(struct worker *w, struct svc_claim *cl, struct sockaddr_storage *dst,
                       unsigned *backoff_ms)
{
	struct authz_w *a = aw_of(w);
	const struct service *svc;
	struct svc_endpoint *ep = NULL;
	uint16_t target;

	*backoff_ms = 0;
	if (!g.cw || !cl->used || !cl->ep)
		return 0;
	services_report(cl->ep, false, w->now_ms); /* towards ejection */
	services_done(cl->ep);
	cl->ep = NULL;
	CNT_ADD(a->svc_connect_failed, 1);
	if (cl->retries_left && !w->stopping) {
		cl->retries_left--;
		cl->attempt++;
		memset(dst, 0, sizeof(*dst));
		memcpy(dst, &cl->vip,
		       cl->vip.sin6_family == AF_INET ? sizeof(struct sockaddr_in)
		                                      : sizeof(struct sockaddr_in6));
		/* the set in force now: a reload may have changed the service */
		svc = lookup(a, dst, &target);
		if (!svc || pick_endpoint(w, svc, &cl->tried, target, dst, &ep))
			return 0;
		cl->ep = ep;
		CNT_ADD(a->svc_retries, 1);
		*backoff_ms = cl->attempt * svc->retry_backoff_ms;
		return 1;
	}
	return 0;
}

void authz_claim_ok(struct worker *w, struct svc_claim *cl)
{
	if (!g.cw || !cl->used || !cl->ep)
		return;
	services_report(cl->ep, true, w->now_ms);
	services_connected(&cl->t);
}

void authz_claim_release(struct worker *w, struct svc_claim *cl)
{
	(void)w;
	if (!cl->used)
		return;
	if (cl->ep)
		services_done(cl->ep);
	cl->ep = NULL;
	services_release(&cl->t);
	cl->used = 0;
}

int authz_service_attach(struct worker *w, struct conn *c, struct svc_claim *cl)
{
	struct authz_w *a = aw_of(w);
	struct svc_slot *s;

	if (!cl->used)
		return 0;
	if (!a->slots) {
		a->slots = calloc(w->cfg.max_conns, sizeof(*a->slots));
		if (!a->slots) {
			authz_claim_release(w, cl);
			return -ENOMEM;
		}
	}
	s = &a->slots[c->idx];
	s->cl = *cl;
	s->gen = c->gen;
	cl->used = 0; /* moved */
	return 0;
}

/* A new upstream socket for @c towards @dst: from the client pod's netns,
 * or from inside the destination pod when it is enrolled here (the same
 * choice conn_accept() makes, without preserve_source). */
static int retry_socket(struct worker *w, struct conn *c, const struct sockaddr_storage *dst,
                        struct pod **upodp)
{
	struct pod *upod = NULL;
	int one = 1, fd, rc;
	uint32_t mark = w->cfg.proxy_mark;
	uint16_t port;

	if ((w->cfg.local_shortcut || c->mesh_local) && w->inpod)
		upod = inpod_lookup_addr(w->inpod, (const struct sockaddr *)dst);
	if (upod && upod->id == c->pod->id) {
		pod_put(upod);
		upod = NULL;
	}
	if (c->mesh_local && !upod) {
		rc = -EHOSTUNREACH; /* a fast-path conn never goes plaintext */
		goto fail;
	}
	port = ntohs(((struct sockaddr_in6 *)dst)->sin6_port);
	if (upod && (c->mesh_local ? authz_mesh_local(w, upod, c->pod, c->ep[0].fd, port)
	                           : authz_plaintext(w, upod, c->ep[0].fd, port))) {
		rc = -EACCES;
		goto fail;
	}
	rc = worker_enter_pod(w, upod ? upod : c->pod);
	if (rc)
		goto fail;
	fd = socket(dst->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark))) {
		rc = -errno;
		close(fd);
		goto fail;
	}
	*upodp = upod;
	return fd;
fail:
	if (upod)
		pod_put(upod);
	return rc;
}

int authz_service_retry(struct worker *w, struct conn *c)
{
	struct svc_slot *s = g.cw ? slot_of(w, c) : NULL;
	struct sockaddr_storage dst;
	struct io_uring_sqe *sqe;
	struct pod *upod = NULL;
	unsigned backoff;
	socklen_t dlen;
	int fd;

	if (!s || !s->cl.ep)
		return 0;
	/* preserve_source needs conn.c's transparent socket: no retry then */
	if (w->cfg.preserve_source)
		s->cl.retries_left = 0;
	if (!authz_claim_failed(w, &s->cl, &dst, &backoff))
		return 0;
	fd = retry_socket(w, c, &dst, &upod);
	if (fd < 0) {
		services_done(s->cl.ep); /* never tried: not a failure of it */
		s->cl.ep = NULL;
		return 0;
	}
	dlen = dst.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	/* the failed connect completed: nothing is in flight on the old fd */
	close(c->ep[1].fd);
	c->ep[1].fd = fd;
	if (c->upod) {
		__atomic_fetch_sub(&c->upod->conns, 1, __ATOMIC_RELAXED);
		pod_put(c->upod);
	}
	c->upod = upod; /* the lookup's reference */
	if (upod)
		__atomic_fetch_add(&upod->conns, 1, __ATOMIC_RELAXED);
	memcpy(&c->dst, &dst, dlen);
	if (backoff) {
		/* wait, then connect: a hard link, so the timer's -ETIME does
		 * not cancel the connect behind it */
		s->bo.tv_sec = backoff / 1000;
		s->bo.tv_nsec = (long long)(backoff % 1000) * 1000000;
		sqe = worker_sqe(w);
		io_uring_sqe_set_data64(sqe, ud_pack(OP_LINK_TIMEOUT, 1, c->idx, c->gen));
		c->inflight++;
		io_uring_prep_timeout(sqe, &s->bo, 0, 0);
		sqe->flags |= IOSQE_IO_HARDLINK;
	}
	sqe = worker_sqe(w);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_CONNECT, 1, c->idx, c->gen));
	c->inflight++;
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->dst, dlen);
	sqe->flags |= IOSQE_IO_LINK;
	sqe = worker_sqe(w);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_LINK_TIMEOUT, 1, c->idx, c->gen));
	c->inflight++;
	io_uring_prep_link_timeout(sqe, &w->connect_ts, 0);
	return 1;
}

void authz_service_connected(struct worker *w, struct conn *c)
{
	struct svc_slot *s = g.cw ? slot_of(w, c) : NULL;

	if (s)
		authz_claim_ok(w, &s->cl);
}

void authz_service_names(struct worker *w, struct conn *c, const char **ns, const char **name)
{
	struct svc_slot *s = g.cw ? slot_of(w, c) : NULL;

	*ns = *name = NULL;
	if (s)
		services_ticket_names(&s->cl.t, ns, name);
}

int authz_service_retried(struct worker *w, struct conn *c)
{
	struct svc_slot *s = g.cw ? slot_of(w, c) : NULL;

	return s && s->cl.attempt > 0;
}

void authz_conn_closed(struct worker *w, struct conn *c)
{
	struct svc_slot *s = g.cw ? slot_of(w, c) : NULL;

	if (s)
		authz_claim_release(w, &s->cl);
}

/* ---- admin ------------------------------------------------------------------ */

/* Balancing counters and, per service, its circuit-breaker state. */
static json_t *services_json(const uint64_t sv[5])
{
	json_t *o = json_object(), *per = json_object();
	struct service_set *ss = confwatch_services(g.cw);
	struct timespec ts;
	uint64_t now;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* the workers' clock */
	now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	json_object_set_new(o, "routed", json_integer((json_int_t)sv[0]));
	json_object_set_new(o, "refused", json_integer((json_int_t)sv[1]));
	json_object_set_new(o, "no_endpoint", json_integer((json_int_t)sv[2]));
	json_object_set_new(o, "connect_failed", json_integer((json_int_t)sv[3]));
	json_object_set_new(o, "retries", json_integer((json_int_t)sv[4]));
	if (g.hc) {
		struct hc_stats hs;
		healthcheck_stats(g.hc, &hs);
		json_object_set_new(o, "health_checks",
		                    json_pack("{s:i, s:I, s:I}", "probes", (int)hs.probes, "ok",
		                              (json_int_t)hs.ok, "failed", (json_int_t)hs.failed));
	}
	for (unsigned i = 0; i < services_count(ss); i++) {
		const struct service *svc = services_at(ss, i);
		struct svc_stats st;
		services_stats(svc, now, &st);
		json_object_set_new(
		    per, svc->id,
		    json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:i, s:i, s:i}", "active_connections",
		              (int)st.active_connections, "pending", (int)st.pending,
		              "refused_connections", (json_int_t)st.refused_connections,
		              "refused_pending", (json_int_t)st.refused_pending, "no_endpoint",
		              (json_int_t)st.no_endpoint, "ejections", (json_int_t)st.ejections,
		              "endpoints", (int)st.endpoints, "ejected_now", (int)st.ejected_now,
		              "unhealthy_now", (int)st.unhealthy_now));
	}
	services_set_put(ss);
	json_object_set_new(o, "by_service", per);
	return o;
}

json_t *authz_stats_json(void)
{
	uint64_t r[N_REASONS] = { 0 }, ha = 0, hd = 0, rv = 0, sv[5] = { 0 };
	struct confwatch_stats st;
	json_t *o = json_object(), *by = json_object();
	struct policy_set *ps;

	json_object_set_new(o, "enabled", json_boolean(g.enabled));
	if (!g.cw) {
		json_decref(by);
		return o;
	}
	for (unsigned i = 0; i < POD_MAX_WORKERS; i++) {
		for (unsigned k = 0; k < N_REASONS; k++)
			r[k] += __atomic_load_n(&g.w[i].by_reason[k], __ATOMIC_RELAXED);
		ha += __atomic_load_n(&g.w[i].hbone_allowed, __ATOMIC_RELAXED);
		hd += __atomic_load_n(&g.w[i].hbone_denied, __ATOMIC_RELAXED);
		rv += __atomic_load_n(&g.w[i].revoked, __ATOMIC_RELAXED);
		sv[0] += __atomic_load_n(&g.w[i].svc_routed, __ATOMIC_RELAXED);
		sv[1] += __atomic_load_n(&g.w[i].svc_refused, __ATOMIC_RELAXED);
		sv[2] += __atomic_load_n(&g.w[i].svc_no_endpoint, __ATOMIC_RELAXED);
		sv[3] += __atomic_load_n(&g.w[i].svc_connect_failed, __ATOMIC_RELAXED);
		sv[4] += __atomic_load_n(&g.w[i].svc_retries, __ATOMIC_RELAXED);
	}
	for (unsigned k = 0; k < N_REASONS; k++)
		json_object_set_new(by, policy_reason_str((enum policy_reason)k),
		                    json_integer((json_int_t)r[k]));
	json_object_set_new(
	    o, "allowed",
	    json_integer((json_int_t)(r[POLICY_ALLOW_NO_POLICY] + r[POLICY_ALLOW_MATCH])));
	json_object_set_new(
	    o, "denied",
	    json_integer((json_int_t)(r[POLICY_DENY_MATCH] + r[POLICY_DENY_NO_MATCH] +
	                              r[POLICY_DENY_PLAINTEXT])));
	json_object_set_new(o, "by_reason", by);
	json_object_set_new(o, "hbone_allowed", json_integer((json_int_t)ha));
	json_object_set_new(o, "hbone_denied", json_integer((json_int_t)hd));
	json_object_set_new(o, "revoked", json_integer((json_int_t)rv));
	confwatch_get_stats(g.cw, &st);
	ps = confwatch_policies(g.cw);
	json_object_set_new(o, "policies", json_integer((json_int_t)policy_set_count(ps)));
	policy_set_put(ps);
	json_object_set_new(o, "generation", json_integer((json_int_t)st.generation));
	json_object_set_new(o, "policy_reloads_ok", json_integer((json_int_t)st.policy_reloads_ok));
	json_object_set_new(o, "policy_reloads_failed",
	                    json_integer((json_int_t)st.policy_reloads_failed));
	json_object_set_new(o, "services_reloads_ok",
	                    json_integer((json_int_t)st.services_reloads_ok));
	json_object_set_new(o, "services_reloads_failed",
	                    json_integer((json_int_t)st.services_reloads_failed));
	json_object_set_new(o, "last_error", json_string(st.last_error));
	json_object_set_new(o, "services", services_json(sv));
	return o;
}
