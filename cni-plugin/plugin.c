/*
 * plugin: ADD / DEL / CHECK / STATUS / GC.
 *
 * ADD order, and why:
 *   1. parse CNI_ARGS, decide enrollment, skip host-network pods;
 *   2. open the netns (it must exist; its fd goes to node-proxy);
 *   3. write the attachment record (so DEL/GC can always undo 4 and 5);
 *   4. install the capture rules (atomic in the redirector);
 *   5. register with node-proxy and wait for its ack (listeners are up in
 *      the pod's netns when it arrives).
 * A failure in 4 or 5 undoes 4 and 3: the pod is either meshed or the
 * runtime sees an error and retries; it never runs unmeshed.
 */
#include "cni-plugin/plugin.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cni-plugin/cnilog.h"
#include "cni-plugin/state.h"
#include "node-proxy/ctlproto.h"
#include "redirector/redirect.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* 1 when @fd is the network namespace of this process or of pid 1: a
 * host-network pod.  Capture rules must never be installed there. */
static int is_host_netns(int fd)
{
	static const char *const own[] = { "/proc/self/ns/net", "/proc/1/ns/net" };
	struct stat st, o;

	if (fstat(fd, &st) < 0)
		return 0;
	for (size_t i = 0; i < 2; i++)
		if (stat(own[i], &o) == 0 && o.st_dev == st.st_dev && o.st_ino == st.st_ino)
			return 1;
	return 0;
}

/* The redirector's defaults (IPv4 and IPv6) plus the config's excludes.
 * The same for ADD, CHECK and DEL, so CHECK compares like with like. */
static void redirect_opts_for(const struct cni_conf *c, struct redirect_opts *o)
{
	redirect_opts_default(o);
	o->n_exclude_cidrs = c->redirect.n_exclude_cidrs;
	memcpy(o->exclude_cidrs, c->redirect.exclude_cidrs, sizeof(o->exclude_cidrs));
	o->n_exclude_out_ports = c->redirect.n_exclude_out_ports;
	memcpy(o->exclude_out_ports, c->redirect.exclude_out_ports, sizeof(o->exclude_out_ports));
	o->n_exclude_in_ports = c->redirect.n_exclude_in_ports;
	memcpy(o->exclude_in_ports, c->redirect.exclude_in_ports, sizeof(o->exclude_in_ports));
}

int cni_plugin_validate(const struct cni_conf *c, struct cni_error *e)
{
	struct redirect_opts ro;
	char err[512] = "";

	redirect_opts_for(c, &ro);
	if (redirect_opts_validate(&ro, err, sizeof(err))) {
		cni_fail(e, CNI_ERR_CONFIG, "invalid \"redirect\" settings");
		cni_details(e, "%s", err);
		return -1;
	}
	return 0;
}

/* The chained result: prevResult as it came, with the request's version. */
static json_t *pass_through(const struct cni_conf *c, struct cni_error *e)
{
	json_t *r;

	if (!c->prev_result) {
		cni_fail(e, CNI_ERR_CONFIG,
		         "no prevResult: ambit-cni must be chained after the main plugin");
		return NULL;
	}
	r = json_deep_copy(c->prev_result);
	if (!r || json_object_set_new(r, "cniVersion", json_string(c->version))) {
		json_decref(r);
		cni_fail(e, CNI_ERR_IO, "out of memory");
		return NULL;
	}
	return r;
}

/*
 * The capture rules are installed (or removed) on a thread of their own
 * while the main thread talks to node-proxy: the two are independent until
 * both have finished, and ADD/DEL then take as long as the slower one
 * instead of the sum.  The redirector switches only its calling thread's
 * netns and serializes itself, so this is safe.
 */
struct rules_job {
	pthread_t th;
	int started;
	int install;
	const char *netns;
	const struct redirect_opts *o;
	int r;
	double ms;
	char err[512];
};

static void *rules_run(void *arg)
{
	struct rules_job *j = arg;
	double t = now_ms();

	j->err[0] = '\0';
	j->r = j->install ? redirect_install(j->netns, j->o, j->err, sizeof(j->err))
	                  : redirect_remove(j->netns, j->o, j->err, sizeof(j->err));
	j->ms = now_ms() - t;
	return NULL;
}

static void rules_start(struct rules_job *j, int install, const char *netns,
                        const struct redirect_opts *o)
{
	memset(j, 0, sizeof(*j));
	j->install = install;
	j->netns = netns;
	j->o = o;
	if (pthread_create(&j->th, NULL, rules_run, j) == 0)
		j->started = 1;
	else
		rules_run(j); /* no thread: do it inline, just slower */
}

static int rules_join(struct rules_job *j)
{
	if (j->started)
		pthread_join(j->th, NULL);
	j->started = 0;
	return j->r;
}

static int uses_ipv6(const struct wl_ip *ips, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (ips[i].family == AF_INET6)
			return 1;
	return 0;
}

/* Open CNI_NETNS.  Returns the fd (*host = 1 when it is the host's own
 * netns), or -1 with @e set (code 3 when the netns does not exist). */
static int open_netns(const char *path, int *host, struct cni_error *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*host = 0;
	if (fd < 0) {
		int err = errno;

		cni_fail(e, err == ENOENT ? CNI_ERR_NO_CONTAINER : CNI_ERR_IO,
		         "cannot open the pod's network namespace");
		cni_details(e, "%.200s: %s", path, strerror(err));
		return -1;
	}
	/* A path that is not a network namespace (a plain file, a mount
	 * namespace) is the runtime's mistake: refuse before touching it. */
	if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
		cni_fail(e, CNI_ERR_ENV, "CNI_NETNS is not a network namespace");
		cni_details(e, "%.200s", path);
		close(fd);
		return -1;
	}
	*host = is_host_netns(fd);
	return fd;
}

static int cmd_add(const struct cni_env *env, const struct cni_conf *c, json_t **out,
                   struct cni_error *e)
{
	struct state_dir sd = { -1, -1 };
	struct redirect_opts ro;
	struct cni_state st;
	struct workload *w = NULL;
	struct cni_args a;
	struct wl_ip ips[WL_MAX_IPS];
	unsigned n_ips, dropped;
	const char *why;
	char err[512];
	struct rules_job job;
	double t0 = now_ms(), t_state, t_ack;
	int fd = -1, host, installed = 0, recorded = 0, r, rr, ret = -1;

	if (cni_args_parse(env->args, &a, e) || cni_args_merge(&a, &c->conf_args, e))
		return -1;
	if (!c->prev_result)
		return cni_fail(e, CNI_ERR_CONFIG,
		                "no prevResult: ambit-cni must be chained after the main plugin");
	if (cni_plugin_validate(c, e))
		return -1;
	redirect_opts_for(c, &ro);
	if (!cni_enroll_decision(c, &a, &why)) {
		cnilog(CNILOG_INFO, "not enrolled: %s (namespace %s, pod %s)", why,
		       a.pod_ns[0] ? a.pod_ns : "default", a.pod_name);
		goto pass;
	}
	if (!env->netns[0]) {
		cnilog(CNILOG_INFO, "not enrolled: no CNI_NETNS (host-network pod)");
		goto pass;
	}
	fd = open_netns(env->netns, &host, e);
	if (fd < 0)
		return -1;
	if (host) {
		cnilog(CNILOG_INFO, "not enrolled: CNI_NETNS is the host network namespace");
		goto pass;
	}
	if (cni_prev_ips(c, ips, &n_ips, &dropped, e))
		goto out;
	if (dropped)
		cnilog(CNILOG_WARN, "pod has more than %d IPs; %u not registered", WL_MAX_IPS,
		       dropped);
	w = calloc(1, sizeof(*w));
	if (!w) {
		cni_fail(e, CNI_ERR_IO, "out of memory");
		goto out;
	}
	if (cni_workload_build(c, &a, env, ips, n_ips, w, e))
		goto out;

	r = state_open(&sd, c->state_dir, c->name, 0);
	if (r == 0) {
		memset(&st, 0, sizeof(st));
		snprintf(st.container_id, sizeof(st.container_id), "%s", env->container_id);
		snprintf(st.ifname, sizeof(st.ifname), "%s", env->ifname);
		snprintf(st.uid, sizeof(st.uid), "%s", w->uid);
		snprintf(st.netns, sizeof(st.netns), "%s", env->netns);
		st.ipv6 = uses_ipv6(ips, n_ips);
		r = state_put(&sd, &st);
	}
	if (r) {
		cni_fail(e, CNI_ERR_STATE, "cannot record the attachment");
		cni_details(e, "stateDir %.200s: %s", c->state_dir, strerror(-r));
		goto out;
	}
	recorded = 1;

	t_state = now_ms();
	rules_start(&job, 1, env->netns, &ro);
	err[0] = '\0';
	r = ctl_add(c->control_socket, w, fd, c->timeout_ms, err, sizeof(err));
	t_ack = now_ms();
	rr = rules_join(&job);
	/* Even a failed install may have left part behind: always undo. */
	installed = 1;
	if (r) {
		char err2[256] = "";

		/* A late ack may still register the pod: take it back. */
		if (r == -ETIMEDOUT &&
		    ctl_del(c->control_socket, w->uid, c->timeout_ms, err2, sizeof(err2)))
			cnilog(CNILOG_ERR, "could not deregister uid %s: %s", w->uid, err2);
		cni_fail(e, CNI_ERR_TRY_AGAIN, "node-proxy did not register the pod");
		cni_details(e, "control socket %.108s: %s", c->control_socket,
		            r == -EREMOTEIO ? err
		            : err[0]        ? err
		                            : strerror(-r));
		goto out;
	}
	if (rr) {
		/* Registered but not captured: take the registration back. */
		err[0] = '\0';
		if (ctl_del(c->control_socket, w->uid, c->timeout_ms, err, sizeof(err)))
			cnilog(CNILOG_ERR, "could not deregister uid %s: %s", w->uid, err);
		cni_fail(e, CNI_ERR_RULES, "cannot install the capture rules in the pod");
		cni_details(e, "%s (%s)", job.err, strerror(-rr));
		goto out;
	}
	installed = 0;
	recorded = 0;
	cnilog(CNILOG_INFO,
	       "enrolled uid=%s ns=%s name=%s sa=%s ips=%u in %.1f ms "
	       "(record %.1f, rules %.1f, node-proxy ack %.1f) (%s)",
	       w->uid, w->ns, w->name, w->sa, w->n_ips, now_ms() - t0, t_state - t0, job.ms,
	       t_ack - t_state, why);
pass:
	*out = pass_through(c, e);
	ret = *out ? 0 : -1;
out:
	if (installed) {
		char err2[256] = "";

		if (redirect_remove(env->netns, &ro, err2, sizeof(err2)))
			cnilog(CNILOG_ERR, "could not undo the capture rules: %s", err2);
	}
	if (recorded)
		state_drop(&sd, env->container_id, env->ifname);
	if (ret)
		cnilog(CNILOG_ERR, "ADD failed (code %d): %s: %s", e->code, e->msg, e->details);
	state_close(&sd);
	if (fd >= 0)
		close(fd);
	free(w);
	return ret;
}

static int cmd_del(const struct cni_env *env, const struct cni_conf *c, struct cni_error *e)
{
	struct state_dir sd = { -1, -1 };
	struct cni_state st;
	struct cni_args a;
	char uid[WL_UID_MAX];
	char err[512];
	struct redirect_opts ro;
	struct rules_job job;
	double t0 = now_ms(), t_start, t_ctl;
	int have_state = 0, removing = 0, r;

	(void)e;
	/* DEL must succeed whatever is left: a bad CNI_ARGS only loses the
	 * pod UID, which the attachment record also has. */
	if (cni_args_parse(env->args, &a, e)) {
		cnilog(CNILOG_WARN, "ignoring CNI_ARGS on DEL: %s", e->msg);
		memset(&a, 0, sizeof(a));
	}
	r = state_open(&sd, c->state_dir, c->name, 0);
	if (r)
		cnilog(CNILOG_WARN, "stateDir %s: %s", c->state_dir, strerror(-r));
	else if (state_get(&sd, env->container_id, env->ifname, &st) == 0)
		have_state = 1;
	snprintf(uid, sizeof(uid), "%s",
	         have_state     ? st.uid
	         : a.pod_uid[0] ? a.pod_uid
	                        : env->container_id);

	/* Rules only in a network namespace other than ours, and only when
	 * this network installed them: every enrolled attachment has a record
	 * (written before its rules), a skipped one has none.  Without a
	 * readable stateDir, remove anyway. */
	if (env->netns[0] && (have_state || sd.dirfd < 0)) {
		int fd = open(env->netns, O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET && !is_host_netns(fd)) {
				redirect_opts_for(c, &ro);
				rules_start(&job, 0, env->netns, &ro);
				removing = 1;
			}
			close(fd);
		}
	}
	t_start = now_ms();
	err[0] = '\0';
	r = ctl_del(c->control_socket, uid, c->timeout_ms, err, sizeof(err));
	if (r)
		/* node-proxy down: it drops the pod itself when it restores
		 * (the netns is gone by then) or at the next GC. */
		cnilog(CNILOG_WARN, "node-proxy did not deregister uid %s: %s", uid,
		       err[0] ? err : strerror(-r));
	t_ctl = now_ms();
	if (removing && rules_join(&job))
		cnilog(CNILOG_WARN, "could not remove the capture rules: %s", job.err);
	if (sd.dirfd >= 0) {
		r = state_drop(&sd, env->container_id, env->ifname);
		if (r)
			cnilog(CNILOG_WARN, "could not drop the attachment record: %s",
			       strerror(-r));
	}
	state_close(&sd);
	cnilog(CNILOG_INFO, "deleted uid=%s in %.1f ms (node-proxy %.1f, rules %.1f)", uid,
	       now_ms() - t0, t_ctl - t_start, removing ? job.ms : 0.0);
	return 0;
}

/* The registered workloads, from CTL_LIST.  Returns the ack body (caller
 * decrefs) or NULL with @e set (code 11). */
static json_t *list_workloads(const struct cni_conf *c, struct cni_error *e)
{
	json_t *body, *reply = NULL;
	char err[512] = "";
	int fd, r;

	fd = ctl_client_connect(c->control_socket);
	if (fd < 0) {
		cni_fail(e, CNI_ERR_TRY_AGAIN, "node-proxy is not reachable");
		cni_details(e, "control socket %.108s: %s", c->control_socket, strerror(-fd));
		return NULL;
	}
	body = json_object();
	r = ctl_client_call(fd, CTL_LIST, body, NULL, 0, c->timeout_ms, &reply, err, sizeof(err));
	json_decref(body);
	close(fd);
	if (r || !json_is_array(json_object_get(reply, "workloads"))) {
		json_decref(reply);
		cni_fail(e, CNI_ERR_TRY_AGAIN, "node-proxy did not list its workloads");
		cni_details(e, "%s", r ? (err[0] ? err : strerror(-r)) : "no workloads array");
		return NULL;
	}
	return reply;
}

static int cmd_check(const struct cni_env *env, const struct cni_conf *c, struct cni_error *e)
{
	struct state_dir sd = { -1, -1 };
	struct redirect_opts ro;
	struct cni_state st;
	struct workload *w = NULL;
	struct cni_args a;
	struct wl_ip ips[WL_MAX_IPS];
	unsigned n_ips, dropped;
	const char *why;
	json_t *reply = NULL, *arr, *v;
	char err[REDIRECT_ERR_MAX] = "";
	size_t i;
	int fd, host, r, found = 0, ret = -1;

	if (cni_args_parse(env->args, &a, e) || cni_args_merge(&a, &c->conf_args, e))
		return -1;
	if (!c->prev_result)
		return cni_fail(e, CNI_ERR_CONFIG,
		                "no prevResult: ambit-cni must be chained after the main plugin");
	if (!cni_enroll_decision(c, &a, &why) || !env->netns[0])
		return 0;
	fd = open_netns(env->netns, &host, e);
	if (fd < 0)
		return -1;
	close(fd);
	if (host)
		return 0;
	if (cni_prev_ips(c, ips, &n_ips, &dropped, e))
		return -1;
	w = calloc(1, sizeof(*w));
	if (!w)
		return cni_fail(e, CNI_ERR_IO, "out of memory");
	if (cni_workload_build(c, &a, env, ips, n_ips, w, e))
		goto out;
	if (state_open(&sd, c->state_dir, c->name, 0) == 0 &&
	    state_get(&sd, env->container_id, env->ifname, &st) == 0)
		snprintf(w->uid, sizeof(w->uid), "%s", st.uid);
	state_close(&sd);

	redirect_opts_for(c, &ro);
	r = redirect_check(env->netns, &ro, err, sizeof(err));
	if (r) {
		cni_fail(e, CNI_ERR_RULES_DRIFT,
		         r > 0 ? "capture rules in the pod differ from the expected ones"
		               : "cannot inspect the capture rules in the pod");
		cni_details(e, "%s", r > 0 ? err : strerror(-r));
		goto out;
	}
	reply = list_workloads(c, e);
	if (!reply)
		goto out;
	arr = json_object_get(reply, "workloads");
	json_array_foreach(arr, i, v)
	{
		struct workload *got = calloc(1, sizeof(*got));

		if (got && ctl_workload_from_json(v, got, err, sizeof(err)) == 0 &&
		    !strcmp(got->uid, w->uid))
			found = 1;
		free(got);
	}
	if (!found && json_is_true(json_object_get(reply, "truncated"))) {
		/* A LIST ack holds one datagram of workloads: on a crowded
		 * node ours may simply not be in it.  Unknown is not drift. */
		cnilog(CNILOG_WARN, "CHECK: node-proxy's list is truncated; uid %s not verified",
		       w->uid);
		found = 1;
	}
	if (!found) {
		cni_fail(e, CNI_ERR_NOT_REGISTERED, "node-proxy does not serve this pod");
		cni_details(e, "uid %s is not registered", w->uid);
		goto out;
	}
	ret = 0;
out:
	json_decref(reply);
	free(w);
	return ret;
}

static int cmd_status(const struct cni_conf *c, struct cni_error *e)
{
	char err[512] = "";
	int ready = 0;
	int r = ctl_status(c->control_socket, c->timeout_ms, &ready, err, sizeof(err));

	if (r) {
		cni_fail(e, CNI_ERR_NOT_AVAILABLE, "node-proxy is not reachable");
		cni_details(e, "control socket %.108s: %s", c->control_socket,
		            err[0] ? err : strerror(-r));
		return -1;
	}
	if (!ready)
		return cni_fail(e, CNI_ERR_NOT_AVAILABLE, "node-proxy is not ready");
	return 0;
}

static int id_valid(const struct cni_conf *c, const char *cid)
{
	for (size_t i = 0; i < c->n_valid; i++)
		if (!strcmp(c->valid_ids[i], cid))
			return 1;
	return 0;
}

/* A uid stays registered while some valid attachment (of any record in
 * this network) was registered under it. */
static int uid_in_use(const struct cni_conf *c, const struct cni_state *recs, int n,
                      const char *uid)
{
	char cut[WL_UID_MAX];

	for (int i = 0; i < n; i++)
		if (id_valid(c, recs[i].container_id) && !strcmp(recs[i].uid, uid))
			return 1;
	for (size_t i = 0; i < c->n_valid; i++) {
		snprintf(cut, sizeof(cut), "%s", c->valid_ids[i]);
		if (!strcmp(cut, uid))
			return 1;
	}
	return 0;
}

static int cmd_gc(const struct cni_conf *c, struct cni_error *e)
{
	struct state_dir sd = { -1, -1 };
	struct cni_state *recs = NULL;
	json_t *reply = NULL, *arr, *v;
	char err[512];
	size_t i;
	int n, r, ret = -1, removed = 0;

	r = state_open(&sd, c->state_dir, c->name, 1);
	if (r) {
		cni_fail(e, CNI_ERR_STATE, "cannot open the attachment records");
		cni_details(e, "stateDir %.200s: %s", c->state_dir, strerror(-r));
		return -1;
	}
	n = state_list(&sd, &recs);
	if (n < 0) {
		cni_fail(e, CNI_ERR_STATE, "cannot list the attachment records");
		cni_details(e, "%s", strerror(-n));
		goto out;
	}
	/* 1. Records of attachments the runtime no longer knows. */
	for (int k = 0; k < n; k++) {
		if (id_valid(c, recs[k].container_id))
			continue;
		if (!uid_in_use(c, recs, n, recs[k].uid)) {
			err[0] = '\0';
			r = ctl_del(c->control_socket, recs[k].uid, c->timeout_ms, err,
			            sizeof(err));
			if (r) {
				cni_fail(e, CNI_ERR_TRY_AGAIN, "node-proxy did not deregister %s",
				         recs[k].uid);
				cni_details(e, "%s", err[0] ? err : strerror(-r));
				goto out;
			}
		}
		state_drop(&sd, recs[k].container_id, recs[k].ifname);
		removed++;
	}
	/* 2. Registrations whose netns path is gone and that no valid
	 * attachment explains (their record was lost).  A workload whose
	 * netns still exists may belong to another network: left alone. */
	reply = list_workloads(c, e);
	if (!reply)
		goto out;
	arr = json_object_get(reply, "workloads");
	json_array_foreach(arr, i, v)
	{
		static struct workload w; /* 20 KB: not on the stack */
		struct stat sb;

		err[0] = '\0';
		if (ctl_workload_from_json(v, &w, err, sizeof(err)))
			continue;
		if (uid_in_use(c, recs, n, w.uid) ||
		    (w.netns_path[0] && stat(w.netns_path, &sb) == 0))
			continue;
		r = ctl_del(c->control_socket, w.uid, c->timeout_ms, err, sizeof(err));
		if (r) {
			cni_fail(e, CNI_ERR_TRY_AGAIN, "node-proxy did not deregister %s", w.uid);
			cni_details(e, "%s", err[0] ? err : strerror(-r));
			goto out;
		}
		removed++;
	}
	cnilog(CNILOG_INFO, "GC removed %d stale attachments (%zu valid)", removed, c->n_valid);
	ret = 0;
out:
	json_decref(reply);
	free(recs);
	state_close(&sd);
	return ret;
}

int cni_plugin_run(const struct cni_env *env, const struct cni_conf *c, json_t **out,
                   struct cni_error *e)
{
	*out = NULL;
	switch (env->cmd) {
	case CNI_CMD_ADD:
		return cmd_add(env, c, out, e);
	case CNI_CMD_DEL:
		return cmd_del(env, c, e);
	case CNI_CMD_CHECK:
		return cmd_check(env, c, e);
	case CNI_CMD_STATUS:
		return cmd_status(c, e);
	case CNI_CMD_GC:
		return cmd_gc(c, e);
	default:
		return cni_fail(e, CNI_ERR_ENV, "unsupported CNI_COMMAND");
	}
}
