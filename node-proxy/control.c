/*
 * control: the control server thread.  A plain poll loop over the
 * listening socket, a wake-up pipe and up to CONTROL_MAX_CONNS client
 * connections; it is not on the data path, so clarity wins over speed.
 *
 * Every datagram read gets exactly one ack, even one whose header cannot
 * be read (then seq 0, type CTL_ACK).  Every fd that arrives with a
 * datagram is closed after the request was handled, whatever happened:
 * ops->add dups what it keeps.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include "node-proxy/control.h"
#include "node-proxy/ctlproto.h"
#include "node-proxy/log.h"
#include "node-proxy/registry.h"

struct conn {
	int fd;
	uint64_t last; /* c->tick of the last request, for eviction */
};

struct control {
	int lfd;
	int wake[2]; /* control_stop writes to [1] */
	pthread_t th;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct ctl_ops ops;
	struct registry *reg;

	struct conn conns[CONTROL_MAX_CONNS];
	size_t nconns;
	uint64_t tick;

	unsigned char *in;  /* CTL_MAX_MSG: one request */
	unsigned char *out; /* CTL_MAX_MSG: one ack */

	_Atomic uint64_t st_requests[6], st_errors, st_open, st_accepted, st_refused, st_evicted;

	/* Last: clang folds CMSG_SPACE only as a GNU extension (a variably
	 * sized member), which must end the struct. */
	union {
		char buf[CMSG_SPACE(sizeof(int) * CTL_MAX_FDS)];
		struct cmsghdr align;
	} cmsg;
};

#define bump(c, f) atomic_fetch_add_explicit(&(c)->f, 1, memory_order_relaxed)

/* --- request handlers ------------------------------------------------------ */

/*
 * Is @fd a network namespace?  fstatfs first, so that an ioctl is never
 * issued on an arbitrary device fd; then NS_GET_NSTYPE tells net from the
 * other namespace types (kernels before 4.11 lack it: nsfs is enough).
 */
static int check_netns(int fd, struct registry_entry *e, char *err, size_t errlen)
{
	struct statfs sf;
	struct stat st;
	int t;

	if (fstatfs(fd, &sf) < 0 || sf.f_type != NSFS_MAGIC)
		goto notns;
	t = ioctl(fd, NS_GET_NSTYPE);
	if (t < 0 && errno != ENOTTY && errno != EINVAL)
		goto notns;
	if (t >= 0 && t != CLONE_NEWNET)
		goto notns;
	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "fstat of the netns fd: %s", strerror(errno));
		return -errno;
	}
	e->netns_dev = (uint64_t)st.st_dev;
	e->netns_ino = (uint64_t)st.st_ino;
	return 0;
notns:
	snprintf(err, errlen, "fd is not a network namespace");
	return -EINVAL;
}

static int wl_equal(const struct workload *a, const struct workload *b)
{
	unsigned i;

	if (strcmp(a->uid, b->uid) || strcmp(a->ns, b->ns) || strcmp(a->name, b->name) ||
	    strcmp(a->sa, b->sa) || strcmp(a->netns_path, b->netns_path) || a->n_ips != b->n_ips ||
	    a->n_labels != b->n_labels)
		return 0;
	for (i = 0; i < a->n_ips; i++) {
		if (a->ips[i].family != b->ips[i].family)
			return 0;
		if (a->ips[i].family == AF_INET ? a->ips[i].v4.s_addr != b->ips[i].v4.s_addr
		                                : memcmp(&a->ips[i].v6, &b->ips[i].v6, 16))
			return 0;
	}
	for (i = 0; i < a->n_labels; i++)
		if (strcmp(a->labels[i].key, b->labels[i].key) ||
		    strcmp(a->labels[i].val, b->labels[i].val))
			return 0;
	return 1;
}

static void fill_err(char *err, size_t errlen, int r, const char *what)
{
	if (!err[0])
		snprintf(err, errlen, "%s: %s", what, strerror(r < 0 ? -r : r));
}

/*
 * Insert or replace workload @e whose validated netns is @fd.  An
 * identical entry (same fields, same netns inode) is a retried ADD and
 * succeeds without touching the data plane; a changed one is taken down
 * and brought up again.  The data plane and the registry agree afterwards
 * whatever fails.
 */
static int apply_add(struct control *c, struct registry_entry *e, int fd, char *err, size_t errlen)
{
	struct registry_entry *old = malloc(sizeof(*old));
	int had, r;

	if (!old) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	had = registry_get(c->reg, e->w.uid, old) == 0;
	if (had && old->netns_dev == e->netns_dev && old->netns_ino == e->netns_ino &&
	    wl_equal(&old->w, &e->w)) {
		r = 0;
		goto out;
	}
	if (!had && registry_count(c->reg) >= REGISTRY_MAX) {
		snprintf(err, errlen, "registry full (%d workloads)", REGISTRY_MAX);
		r = -ENOSPC;
		goto out;
	}
	if (had) {
		r = c->ops.del(c->ops.arg, e->w.uid, err, errlen);
		if (r) {
			fill_err(err, errlen, r, "removing the previous instance");
			goto out;
		}
	}
	r = c->ops.add(c->ops.arg, &e->w, fd, err, errlen);
	if (r) {
		fill_err(err, errlen, r, "add");
		if (had)
			registry_del(c->reg, e->w.uid);
		goto out;
	}
	r = registry_put(c->reg, e);
	if (r) {
		char ignored[64];

		snprintf(err, errlen, "cannot record the workload: %s", strerror(-r));
		c->ops.del(c->ops.arg, e->w.uid, ignored, sizeof(ignored));
		if (had)
			registry_del(c->reg, e->w.uid);
	}
out:
	free(old);
	return r;
}

static int apply_del(struct control *c, const char *uid, char *err, size_t errlen)
{
	int r, r2;

	/* Forget the pod even if the data plane complains: the CNI DEL is
	 * final, and a stale entry would be re-added after a restart. */
	r = c->ops.del(c->ops.arg, uid, err, errlen);
	if (r)
		fill_err(err, errlen, r, "del");
	r2 = registry_del(c->reg, uid);
	if (r2 && !r) {
		snprintf(err, errlen, "cannot record the removal: %s", strerror(-r2));
		r = r2;
	}
	return r;
}

static int do_add(struct control *c, json_t *body, const int *fds, size_t nfds, char *err,
                  size_t errlen)
{
	struct registry_entry *e;
	char why[256];
	int r;

	if (nfds != 1) {
		snprintf(err, errlen, "ADD carries exactly one fd (the pod's netns), got %zu",
		         nfds);
		return -EINVAL;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = ctl_workload_from_json(json_object_get(body, "workload"), &e->w, why, sizeof(why));
	if (r) {
		snprintf(err, errlen, "bad workload: %s", why);
		goto out;
	}
	r = check_netns(fds[0], e, err, errlen);
	if (r)
		goto out;
	r = apply_add(c, e, fds[0], err, errlen);
out:
	free(e);
	return r;
}

static int do_del(struct control *c, json_t *body, size_t nfds, char *err, size_t errlen)
{
	json_t *u = json_object_get(body, "uid");
	const char *uid = json_string_value(u);

	if (nfds) {
		snprintf(err, errlen, "DEL carries no fds, got %zu", nfds);
		return -EINVAL;
	}
	if (!uid || !uid[0] || strlen(uid) >= WL_UID_MAX || strlen(uid) != json_string_length(u)) {
		snprintf(err, errlen, "DEL needs \"uid\": a non-empty string of at most %d bytes",
		         WL_UID_MAX - 1);
		return -EINVAL;
	}
	return apply_del(c, uid, err, errlen);
}

/*
 * SNAPSHOT: the complete set of workloads the caller knows.  Validated as
 * a whole first (a bad entry changes nothing); then workloads not listed
 * are removed and the listed ones added or replaced.  Failures of single
 * workloads do not stop the others; the ack names the first one.
 */
static int do_snapshot(struct control *c, json_t *body, const int *fds, size_t nfds, char *err,
                       size_t errlen)
{
	json_t *arr = json_object_get(body, "workloads"), *v;
	struct registry_entry *es = NULL;
	char(*uids)[WL_UID_MAX] = NULL;
	size_t n, i, k, nu, failed = 0;
	char why[256], first[384] = "";
	int r = 0;

	if (!json_is_array(arr)) {
		snprintf(err, errlen, "SNAPSHOT needs \"workloads\": an array");
		return -EINVAL;
	}
	n = json_array_size(arr);
	if (n != nfds) {
		snprintf(err, errlen,
		         "SNAPSHOT carries one netns fd per workload: %zu workloads, %zu fds", n,
		         nfds);
		return -EINVAL;
	}
	es = calloc(n ? n : 1, sizeof(*es));
	uids = calloc(REGISTRY_MAX, sizeof(*uids));
	if (!es || !uids) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	json_array_foreach(arr, i, v)
	{
		if ((r = ctl_workload_from_json(v, &es[i].w, why, sizeof(why)))) {
			snprintf(err, errlen, "bad workloads[%zu]: %s", i, why);
			goto out;
		}
		if ((r = check_netns(fds[i], &es[i], why, sizeof(why)))) {
			snprintf(err, errlen, "workloads[%zu]: %s", i, why);
			goto out;
		}
		for (k = 0; k < i; k++) {
			if (!strcmp(es[k].w.uid, es[i].w.uid)) {
				snprintf(err, errlen, "workloads[%zu]: duplicate uid \"%s\"", i,
				         es[i].w.uid);
				r = -EINVAL;
				goto out;
			}
		}
	}

	nu = registry_uids(c->reg, uids, REGISTRY_MAX);
	for (k = 0; k < nu; k++) {
		for (i = 0; i < n && strcmp(es[i].w.uid, uids[k]); i++)
			;
		if (i < n)
			continue;
		why[0] = 0;
		if (apply_del(c, uids[k], why, sizeof(why)) && !failed++)
			snprintf(first, sizeof(first), "uid %s: %s", uids[k], why);
	}
	for (i = 0; i < n; i++) {
		why[0] = 0;
		if (apply_add(c, &es[i], fds[i], why, sizeof(why)) && !failed++)
			snprintf(first, sizeof(first), "uid %s: %s", es[i].w.uid, why);
	}
	if (failed) {
		snprintf(err, errlen, "%zu change(s) failed; first: %s", failed, first);
		r = -EIO;
	}
out:
	free(uids);
	free(es);
	return r;
}

static json_t *entry_json(const struct registry_entry *e)
{
	json_t *o = ctl_workload_to_json(&e->w);

	if (o && (json_object_set_new(o, "netns_dev", json_integer((json_int_t)e->netns_dev)) ||
	          json_object_set_new(o, "netns_ino", json_integer((json_int_t)e->netns_ino)))) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

/*
 * LIST: the registry as an array.  A datagram holds 64 KiB, about 200
 * workloads with labels; if they do not all fit, the longest prefix that
 * does is sent with "truncated": true and "total".
 */
static int do_list(struct control *c, json_t *body, size_t nfds, json_t *ack, char *err,
                   size_t errlen)
{
	const char *only = json_string_value(json_object_get(body, "uid"));
	char(*uids)[WL_UID_MAX] = calloc(REGISTRY_MAX, sizeof(*uids));
	struct registry_entry *e = malloc(sizeof(*e));
	json_t *all = json_array(), *part = NULL;
	size_t n, i, lo, hi;
	int r = 0;

	if (nfds) {
		snprintf(err, errlen, "LIST carries no fds, got %zu", nfds);
		r = -EINVAL;
		goto out;
	}
	if (!uids || !e || !all) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	/* {"uid": U} asks for one workload: always fits, never truncated. */
	n = registry_uids(c->reg, uids, REGISTRY_MAX);
	for (i = 0; i < n; i++)
		if ((!only || !strcmp(only, uids[i])) && registry_get(c->reg, uids[i], e) == 0)
			json_array_append_new(all, entry_json(e));
	n = json_array_size(all);
	json_object_set(ack, "workloads", all);
	/* The ack's "error" is added later: leave room for a short one. */
	if (ctl_encode(CTL_ACK, 0, ack, c->out, CTL_MAX_MSG - 64) >= 0)
		goto out;
	/* Largest prefix that fits: lo fits, hi does not. */
	lo = 0;
	hi = n;
	json_object_set_new(ack, "truncated", json_true());
	json_object_set_new(ack, "total", json_integer((json_int_t)n));
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		json_decref(part);
		part = json_array();
		for (i = 0; part && i < mid; i++)
			json_array_append(part, json_array_get(all, i));
		json_object_set(ack, "workloads", part);
		if (ctl_encode(CTL_ACK, 0, ack, c->out, CTL_MAX_MSG - 64) >= 0)
			lo = mid;
		else
			hi = mid;
	}
	json_decref(part);
	part = json_array();
	for (i = 0; part && i < lo; i++)
		json_array_append(part, json_array_get(all, i));
	json_object_set(ack, "workloads", part);
out:
	json_decref(part);
	json_decref(all);
	free(e);
	free(uids);
	return r;
}

static int do_status(struct control *c, size_t nfds, json_t *ack, char *err, size_t errlen)
{
	int ready;

	if (nfds) {
		snprintf(err, errlen, "STATUS carries no fds, got %zu", nfds);
		return -EINVAL;
	}
	ready = c->ops.ready ? c->ops.ready(c->ops.arg) : 1;
	json_object_set_new(ack, "ready", json_boolean(ready));
	json_object_set_new(ack, "workloads", json_integer((json_int_t)registry_count(c->reg)));
	return 0;
}

static const char *const type_name[] = { "?", "add", "del", "snapshot", "list", "status" };

static const char *req_uid(json_t *body)
{
	const char *u = json_string_value(json_object_get(body, "uid"));

	if (!u)
		u = json_string_value(json_object_get(json_object_get(body, "workload"), "uid"));
	return u ? u : "-";
}

/*
 * Handle one received datagram (@n bytes in c->in, @flags from recvmsg,
 * @fds received with it, still owned by the caller).  Returns the ack body
 * (with "error" set) and its header fields in *atype and *aseq.
 */
static json_t *handle(struct control *c, size_t n, int flags, const int *fds, size_t nfds,
                      uint16_t *atype, uint32_t *aseq)
{
	char err[512] = "";
	struct ctl_hdr h;
	json_t *body = NULL, *ack = json_object();
	int r, known;

	*atype = CTL_ACK;
	*aseq = 0;
	if (!ack)
		return NULL;
	if (flags & MSG_TRUNC) {
		/* The first CTL_MAX_MSG bytes are here: enough to echo seq. */
		r = ctl_parse(c->in, CTL_HDR_LEN, &h, &body, err, sizeof(err));
		json_decref(body);
		body = NULL;
		snprintf(err, sizeof(err), "datagram larger than %d bytes", CTL_MAX_MSG);
		goto hdr;
	}
	r = ctl_parse(c->in, n, &h, &body, err, sizeof(err));
	if (r)
		goto hdr;
	if (flags & MSG_CTRUNC) {
		snprintf(err, sizeof(err), "control data truncated (more than %d fds?)",
		         CTL_MAX_FDS);
		goto hdr;
	}
	switch (h.type) {
	case CTL_ADD:
		do_add(c, body, fds, nfds, err, sizeof(err));
		break;
	case CTL_DEL:
		do_del(c, body, nfds, err, sizeof(err));
		break;
	case CTL_SNAPSHOT:
		do_snapshot(c, body, fds, nfds, err, sizeof(err));
		break;
	case CTL_LIST:
		do_list(c, body, nfds, ack, err, sizeof(err));
		break;
	case CTL_STATUS:
		do_status(c, nfds, ack, err, sizeof(err));
		break;
	default:
		snprintf(err, sizeof(err), "message type 0x%x is not a request", h.type);
		break;
	}
hdr:
	known = h.magic && h.type >= CTL_ADD && h.type <= CTL_STATUS;
	if (h.magic) {
		*atype = known ? CTL_ACK | h.type : CTL_ACK;
		*aseq = h.seq;
	}
	bump(c, st_requests[known ? h.type : 0]);
	/* Messages quote client input and may be cut mid-character: keep
	 * them printable ASCII so the ack is always valid JSON. */
	for (char *p = err; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	if (err[0]) {
		log_warn("event=control_error type=%s seq=%u err=\"%s\"",
		         known ? type_name[h.type] : "?", *aseq, err);
		bump(c, st_errors);
	} else if (h.type == CTL_ADD || h.type == CTL_DEL || h.type == CTL_SNAPSHOT) {
		log_info("event=control_%s seq=%u uid=%s workloads=%zu", type_name[h.type], *aseq,
		         h.type == CTL_SNAPSHOT ? "-" : req_uid(body), registry_count(c->reg));
	}
	if (err[0]) {
		/* A failed request reports nothing but its error. */
		json_object_clear(ack);
	}
	json_object_set_new(ack, "error", json_string(err));
	json_decref(body);
	return ack;
}

/* --- connections ------------------------------------------------------------ */

static void drop_conn(struct control *c, size_t i)
{
	close(c->conns[i].fd);
	c->conns[i] = c->conns[--c->nconns];
	atomic_fetch_sub_explicit(&c->st_open, 1, memory_order_relaxed);
}

/* Take every fd out of the control messages of @m into @fds (at most
 * CTL_MAX_FDS; any beyond are closed at once).  Returns the count. */
static size_t take_fds(struct msghdr *m, int *fds)
{
	struct cmsghdr *cm;
	size_t n = 0;

	for (cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
		size_t k, cnt;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (k = 0; k < cnt; k++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
			if (n < CTL_MAX_FDS)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* Serve one datagram on connection @i.  Returns 0 to keep it, -1 to drop. */
static int serve_conn(struct control *c, size_t i, short revents)
{
	int fds[CTL_MAX_FDS];
	struct iovec iov = { .iov_base = c->in, .iov_len = CTL_MAX_MSG };
	struct msghdr m = { .msg_iov = &iov,
		            .msg_iovlen = 1,
		            .msg_control = c->cmsg.buf,
		            .msg_controllen = sizeof(c->cmsg.buf) };
	uint16_t atype;
	uint32_t aseq;
	size_t nfds, k;
	json_t *ack;
	ssize_t n;
	int len;

	if (!(revents & POLLIN))
		return -1; /* POLLHUP / POLLERR alone */
	n = recvmsg(c->conns[i].fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	nfds = take_fds(&m, fds);
	/* 0 bytes is end of stream, unless the peer is still there: then it
	 * sent an empty datagram, which deserves an error ack. */
	if (n == 0 && nfds == 0 && !(m.msg_flags & MSG_CTRUNC) && (revents & (POLLHUP | POLLRDHUP)))
		return -1;
	c->conns[i].last = ++c->tick;

	ack = handle(c, (size_t)n, m.msg_flags, fds, nfds, &atype, &aseq);
	for (k = 0; k < nfds; k++)
		close(fds[k]);
	if (!ack)
		return -1;
	len = ctl_encode(atype, aseq, ack, c->out, CTL_MAX_MSG);
	json_decref(ack);
	if (len < 0) {
		json_t *small = json_pack("{s:s}", "error", "ack does not fit in a datagram");

		len = small ? ctl_encode(atype, aseq, small, c->out, CTL_MAX_MSG) : -ENOMEM;
		json_decref(small);
		if (len < 0)
			return -1;
	}
	/* A client that does not read its acks loses its connection rather
	 * than stalling everyone else. */
	if (send(c->conns[i].fd, c->out, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL) != len)
		return -1;
	return 0;
}

static void accept_conn(struct control *c)
{
	struct ucred cr = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t sl = sizeof(cr);
	size_t i, idlest = 0;
	int fd;

	fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		/* Out of fds or memory: the listener stays readable, so back
		 * off instead of spinning; requests are not latency critical. */
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			log_warn("event=control_accept_failed err=\"%s\"", strerror(errno));
			usleep(100 * 1000);
		}
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &sl) < 0 || sl != sizeof(cr) ||
	    cr.uid != 0) {
		log_warn("event=control_refused pid=%d uid=%d reason=\"root only\"", (int)cr.pid,
		         (int)cr.uid);
		bump(c, st_refused);
		close(fd);
		return;
	}
	if (c->nconns == CONTROL_MAX_CONNS) {
		for (i = 1; i < c->nconns; i++)
			if (c->conns[i].last < c->conns[idlest].last)
				idlest = i;
		drop_conn(c, idlest);
		bump(c, st_evicted);
	}
	c->conns[c->nconns++] = (struct conn){ .fd = fd, .last = ++c->tick };
	bump(c, st_accepted);
	bump(c, st_open);
}

static void *serve(void *arg)
{
	struct control *c = arg;
	struct pollfd pfd[2 + CONTROL_MAX_CONNS];
	size_t i;

	for (;;) {
		pfd[0] = (struct pollfd){ .fd = c->wake[0], .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = c->lfd, .events = POLLIN };
		for (i = 0; i < c->nconns; i++)
			pfd[2 + i] =
			    (struct pollfd){ .fd = c->conns[i].fd, .events = POLLIN | POLLRDHUP };
		if (poll(pfd, 2 + c->nconns, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("event=control_poll_failed err=\"%s\"", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		/* Backwards, so that drop_conn's swap with the last entry only
		 * moves a connection already served in this round. */
		for (i = c->nconns; i-- > 0;)
			if (pfd[2 + i].revents && serve_conn(c, i, pfd[2 + i].revents))
				drop_conn(c, i);
		if (pfd[1].revents & POLLIN)
			accept_conn(c);
	}
	return NULL;
}

/* --- lifecycle -------------------------------------------------------------- */

/* mkdir -p of the directory part of @path, new components mode 0700. */
static int make_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *p;

	snprintf(dir, sizeof(dir), "%s", path);
	p = strrchr(dir, '/');
	if (!p || p == dir)
		return 0;
	*p = 0;
	for (p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		/* A stale socket from a previous run is replaced; a live one
		 * (another node-proxy answers) or any other file is left alone. */
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		close(fd);
		if (r == 0)
			return -EADDRINUSE;
		if (unlink(path) < 0)
			return -errno;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* The socket inode's mode becomes the file's mode at bind (minus the
	 * umask), so there is no window in which others may connect. */
	if (fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int control_start(const char *path, const struct ctl_ops *ops, struct registry *reg,
                  struct control **out)
{
	struct control *c;
	sigset_t all, old;
	int r;

	*out = NULL;
	if (!ops || !ops->add || !ops->del || !reg)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->lfd = c->wake[0] = c->wake[1] = -1;
	if (!path[0] || strlen(path) >= sizeof(c->path)) {
		r = -ENAMETOOLONG;
		goto fail;
	}
	memcpy(c->path, path, strlen(path) + 1);
	c->ops = *ops;
	c->reg = reg;
	c->in = malloc(CTL_MAX_MSG);
	c->out = malloc(CTL_MAX_MSG);
	if (!c->in || !c->out) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = make_parent(path)))
		goto fail;
	if ((c->lfd = listen_on(path)) < 0) {
		r = c->lfd;
		goto fail;
	}
	if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		goto fail;
	}
	/* Signals belong to the main thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&c->th, NULL, serve, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		goto fail;
	*out = c;
	return 0;
fail:
	if (c->lfd >= 0) {
		close(c->lfd);
		unlink(c->path);
	}
	if (c->wake[0] >= 0) {
		close(c->wake[0]);
		close(c->wake[1]);
	}
	free(c->in);
	free(c->out);
	free(c);
	return r;
}

void control_stop(struct control *c)
{
	if (!c)
		return;
	while (write(c->wake[1], "x", 1) < 0 && errno == EINTR)
		;
	pthread_join(c->th, NULL);
	while (c->nconns)
		drop_conn(c, c->nconns - 1);
	close(c->lfd);
	unlink(c->path);
	close(c->wake[0]);
	close(c->wake[1]);
	free(c->in);
	free(c->out);
	free(c);
}

void control_get_stats(struct control *c, struct control_stats *out)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < 6; i++)
		out->requests[i] = atomic_load_explicit(&c->st_requests[i], memory_order_relaxed);
	out->errors = atomic_load_explicit(&c->st_errors, memory_order_relaxed);
	out->conns_open = atomic_load_explicit(&c->st_open, memory_order_relaxed);
	out->conns_accepted = atomic_load_explicit(&c->st_accepted, memory_order_relaxed);
	out->conns_refused = atomic_load_explicit(&c->st_refused, memory_order_relaxed);
	out->conns_evicted = atomic_load_explicit(&c->st_evicted, memory_order_relaxed);
}
