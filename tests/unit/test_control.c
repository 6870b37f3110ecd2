/*
 * control: the real server thread on a real unix socket, with a real
 * registry on a temp file.  The data plane behind struct ctl_ops is the
 * unit boundary: a recorder stands in for it.  Every test counts the
 * process's open fds before and after, which covers the server side too
 * (same process).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-proxy/control.h"
#include "node-proxy/ctl_client.h"
#include "node-proxy/ctlproto.h"
#include "node-proxy/registry.h"

#define TMO 5000

struct fake {
	pthread_mutex_t mu;
	int adds, dels, ready;
	int fail_add;
	int fd_was_open;
	char last_add[WL_UID_MAX], last_del[WL_UID_MAX];
};

struct fx {
	char dir[64], sock[128], state[128];
	struct registry *reg;
	struct control *c;
	struct fake fake;
	int base_fds;
};

static int fake_add(void *arg, const struct workload *w, int netns_fd, char *err, size_t errlen)
{
	struct fake *f = arg;
	int r = 0;

	pthread_mutex_lock(&f->mu);
	f->adds++;
	f->fd_was_open = fcntl(netns_fd, F_GETFD) >= 0;
	snprintf(f->last_add, sizeof(f->last_add), "%s", w->uid);
	if (f->fail_add) {
		snprintf(err, errlen, "listener bind failed");
		r = -EADDRINUSE;
	}
	pthread_mutex_unlock(&f->mu);
	return r;
}

static int fake_del(void *arg, const char *uid, char *err, size_t errlen)
{
	struct fake *f = arg;

	(void)err;
	(void)errlen;
	pthread_mutex_lock(&f->mu);
	f->dels++;
	snprintf(f->last_del, sizeof(f->last_del), "%s", uid);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

static int fake_ready(void *arg)
{
	struct fake *f = arg;

	return __atomic_load_n(&f->ready, __ATOMIC_RELAXED);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct ctl_ops ops = {
		.arg = &f->fake, .add = fake_add, .del = fake_del, .ready = fake_ready
	};

	pthread_mutex_init(&f->fake.mu, NULL);
	f->base_fds = count_fds();
	strcpy(f->dir, "/tmp/ambit-ctl.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	/* a socket dir that does not exist yet: control_start makes it 0700 */
	snprintf(f->sock, sizeof(f->sock), "%s/run/ctl.sock", f->dir);
	snprintf(f->state, sizeof(f->state), "%s/state.json", f->dir);
	if (registry_open(f->state, &f->reg) || control_start(f->sock, &ops, f->reg, &f->c))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];
	int fds;

	control_stop(f->c);
	registry_close(f->reg);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd) != 0)
		return -1;
	fds = count_fds();
	pthread_mutex_destroy(&f->fake.mu);
	if (fds != f->base_fds) {
		fprintf(stderr, "fd leak: %d open before, %d after\n", f->base_fds, fds);
		free(f);
		return -1;
	}
	free(f);
	return 0;
}

static void make_wl(struct workload *w, const char *uid, const char *name)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->uid, sizeof(w->uid), "%s", uid);
	strcpy(w->ns, "default");
	snprintf(w->name, sizeof(w->name), "%s", name);
	strcpy(w->sa, "default");
	strcpy(w->netns_path, "/proc/self/ns/net");
	w->n_ips = 1;
	w->ips[0].family = AF_INET;
	inet_pton(AF_INET, "10.44.0.7", &w->ips[0].v4);
}

static json_t *add_body(const struct workload *w)
{
	return json_pack("{s:o}", "workload", ctl_workload_to_json(w));
}

/* Wait until the server has noticed @open client connections. */
static void wait_open(struct fx *f, uint64_t open)
{
	struct control_stats st;
	int i;

	for (i = 0; i < 500; i++) {
		control_get_stats(f->c, &st);
		if (st.conns_open == open)
			return;
		usleep(10000);
	}
	fail_msg("server still has %llu connections open, want %llu",
	         (unsigned long long)st.conns_open, (unsigned long long)open);
}

static void add_list_del(void **state)
{
	struct fx *f = *state;
	struct registry_entry e;
	struct workload w;
	struct stat st, dst;
	json_t *reply = NULL, *body;
	char err[512];
	int ready, fd, nsfd;

	/* the socket and its directory are private */
	assert_int_equal(stat(f->sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	*strrchr(f->sock, '/') = 0;
	assert_int_equal(stat(f->sock, &dst), 0);
	f->sock[strlen(f->sock)] = '/';
	assert_int_equal(dst.st_mode & 0777, 0700);

	assert_int_equal(ctl_status(f->sock, TMO, &ready, err, sizeof(err)), 0);
	assert_int_equal(ready, 0);
	f->fake.ready = 1;
	assert_int_equal(ctl_status(f->sock, TMO, &ready, err, sizeof(err)), 0);
	assert_int_equal(ready, 1);

	make_wl(&w, "uid-a", "pod-a");
	nsfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	assert_true(nsfd >= 0);
	assert_int_equal(ctl_add(f->sock, &w, nsfd, TMO, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(f->fake.adds, 1);
	assert_true(f->fake.fd_was_open);
	assert_string_equal(f->fake.last_add, "uid-a");
	assert_int_equal(registry_get(f->reg, "uid-a", &e), 0);
	assert_int_equal(fstat(nsfd, &st), 0);
	assert_true(e.netns_dev == (uint64_t)st.st_dev && e.netns_ino == (uint64_t)st.st_ino);

	/* a retried identical ADD is a no-op for the data plane */
	assert_int_equal(ctl_add(f->sock, &w, nsfd, TMO, err, sizeof(err)), 0);
	assert_int_equal(f->fake.adds, 1);
	/* a changed one replaces: del, then add */
	strcpy(w.sa, "web");
	assert_int_equal(ctl_add(f->sock, &w, nsfd, TMO, err, sizeof(err)), 0);
	assert_int_equal(f->fake.adds, 2);
	assert_int_equal(f->fake.dels, 1);
	assert_int_equal(registry_get(f->reg, "uid-a", &e), 0);
	assert_string_equal(e.w.sa, "web");

	fd = ctl_client_connect(f->sock);
	assert_true(fd >= 0);
	assert_int_equal(
	    ctl_client_call(fd, CTL_LIST, NULL, NULL, 0, TMO, &reply, err, sizeof(err)), 0);
	body = json_object_get(reply, "workloads");
	assert_int_equal(json_array_size(body), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(body, 0), "uid")),
	                    "uid-a");
	assert_true((uint64_t)json_integer_value(
	                json_object_get(json_array_get(body, 0), "netns_ino")) == e.netns_ino);
	json_decref(reply);
	/* filtered by uid */
	body = json_pack("{s:s}", "uid", "nope");
	assert_int_equal(
	    ctl_client_call(fd, CTL_LIST, body, NULL, 0, TMO, &reply, err, sizeof(err)), 0);
	assert_int_equal(json_array_size(json_object_get(reply, "workloads")), 0);
	json_decref(reply);
	json_decref(body);
	body = json_pack("{s:s}", "uid", "uid-a");
	assert_int_equal(
	    ctl_client_call(fd, CTL_LIST, body, NULL, 0, TMO, &reply, err, sizeof(err)), 0);
	assert_int_equal(json_array_size(json_object_get(reply, "workloads")), 1);
	json_decref(reply);
	json_decref(body);
	close(fd);

	assert_int_equal(ctl_del(f->sock, "uid-a", TMO, err, sizeof(err)), 0);
	assert_int_equal(f->fake.dels, 2);
	assert_string_equal(f->fake.last_del, "uid-a");
	assert_int_equal(registry_count(f->reg), 0);
	assert_int_equal(ctl_del(f->sock, "never-added", TMO, err, sizeof(err)), 0);
	close(nsfd);

	/* persisted: a fresh registry on the same file sees the change */
	struct registry *r2;

	assert_int_equal(ctl_add(f->sock, &w, (nsfd = open("/proc/self/ns/net", O_RDONLY)), TMO,
	                         err, sizeof(err)),
	                 0);
	close(nsfd);
	assert_int_equal(registry_open(f->state, &r2), 0);
	assert_int_equal(registry_restore(r2, NULL, NULL), 1);
	registry_close(r2);
	wait_open(f, 0);
}

/* Send an ADD for @w with @fds and return the ack's error (static). */
static const char *add_err(struct fx *f, const struct workload *w, const int *fds, size_t nfds)
{
	static char err[512];
	json_t *body = add_body(w);
	int fd = ctl_client_connect(f->sock), r;

	assert_true(fd >= 0);
	r = ctl_client_call(fd, CTL_ADD, body, fds, nfds, TMO, NULL, err, sizeof(err));
	close(fd);
	json_decref(body);
	if (r == 0)
		return "";
	assert_int_equal(r, -EREMOTEIO);
	return err;
}

static void add_errors(void **state)
{
	struct fx *f = *state;
	struct workload w;
	int p[2], ns[2], uts, before;
	char tmp[160];

	make_wl(&w, "uid-b", "pod-b");
	assert_int_equal(pipe(p), 0);
	ns[0] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	ns[1] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	uts = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
	assert_true(ns[0] >= 0 && ns[1] >= 0 && uts >= 0);
	before = count_fds();

	assert_string_equal(add_err(f, &w, &p[0], 1), "fd is not a network namespace");
	assert_string_equal(add_err(f, &w, &uts, 1), "fd is not a network namespace");
	assert_non_null(strstr(add_err(f, &w, NULL, 0), "exactly one fd"));
	assert_non_null(strstr(add_err(f, &w, ns, 2), "got 2"));
	int three[3] = { ns[0], p[1], ns[1] };
	assert_non_null(strstr(add_err(f, &w, three, 3), "got 3"));
	w.name[0] = 0;
	assert_non_null(strstr(add_err(f, &w, ns, 1), "bad workload"));
	make_wl(&w, "uid-b", "pod-b");
	assert_int_equal(f->fake.adds, 0);

	/* the data plane refuses: error passed through, nothing recorded */
	f->fake.fail_add = 1;
	assert_string_equal(add_err(f, &w, ns, 1), "listener bind failed");
	f->fake.fail_add = 0;
	assert_int_equal(f->fake.adds, 1);
	assert_int_equal(registry_count(f->reg), 0);

	/* the registry cannot persist: the add is undone via ops->del */
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->state);
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_non_null(strstr(add_err(f, &w, ns, 1), "cannot record"));
	assert_int_equal(f->fake.adds, 2);
	assert_int_equal(f->fake.dels, 1);
	assert_string_equal(f->fake.last_del, "uid-b");
	assert_int_equal(registry_count(f->reg), 0);
	rmdir(tmp);
	assert_string_equal(add_err(f, &w, ns, 1), "");
	assert_int_equal(registry_count(f->reg), 1);

	wait_open(f, 0);
	assert_int_equal(count_fds(), before);
	close(p[0]);
	close(p[1]);
	close(ns[0]);
	close(ns[1]);
	close(uts);
}

/* Send raw bytes (with fds) and read one ack. */
static void raw_xchg(int fd, const void *buf, size_t len, const int *fds, size_t nfds,
                     struct ctl_hdr *h, char *errbuf, size_t errlen)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr a;
	} cm;
	static unsigned char in[CTL_MAX_MSG];
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	json_t *body;
	char perr[256];
	ssize_t n;

	if (nfds) {
		struct cmsghdr *c;

		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	assert_int_equal(sendmsg(fd, &m, MSG_NOSIGNAL), (ssize_t)len);
	assert_int_equal(poll(&pfd, 1, TMO), 1);
	n = recv(fd, in, sizeof(in), 0);
	assert_true(n >= CTL_HDR_LEN);
	assert_int_equal(ctl_parse(in, (size_t)n, h, &body, perr, sizeof(perr)), 0);
	assert_true(h->type & CTL_ACK);
	assert_true(json_is_string(json_object_get(body, "error")));
	snprintf(errbuf, errlen, "%s", json_string_value(json_object_get(body, "error")));
	json_decref(body);
}

#define AUTO UINT32_MAX /* hlen: the body's real length */

static size_t mk(unsigned char *b, uint32_t magic, uint16_t ver, uint16_t type, uint32_t seq,
                 uint32_t hlen, const char *body)
{
	size_t n = body ? strlen(body) : 0;
	uint32_t m = htonl(magic), s = htonl(seq), l = htonl(hlen == AUTO ? (uint32_t)n : hlen);
	uint16_t v = htons(ver), t = htons(type);

	memcpy(b, &m, 4);
	memcpy(b + 4, &v, 2);
	memcpy(b + 6, &t, 2);
	memcpy(b + 8, &s, 4);
	memcpy(b + 12, &l, 4);
	memcpy(b + 16, body ? body : "", n);
	return 16 + n;
}

static void malformed(void **state)
{
	struct fx *f = *state;
	static unsigned char b[70000];
	struct control_stats st0, st1;
	struct ctl_hdr h;
	char err[512];
	int fd, p[2], ns, before, ready;
	size_t n;

	assert_int_equal(pipe(p), 0);
	ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	fd = ctl_client_connect(f->sock);
	assert_true(fd >= 0 && ns >= 0);
	wait_open(f, 1);
	before = count_fds();
	control_get_stats(f->c, &st0);

	/* short: even the header is unreadable -> seq 0, plain CTL_ACK */
	raw_xchg(fd, "AMB1x", 5, NULL, 0, &h, err, sizeof(err));
	assert_int_equal(h.seq, 0);
	assert_int_equal(h.type, CTL_ACK);
	assert_non_null(strstr(err, "short"));
	/* empty datagram */
	raw_xchg(fd, "", 0, NULL, 0, &h, err, sizeof(err));
	assert_int_equal(h.seq, 0);
	assert_non_null(strstr(err, "short"));
	/* bad magic, with an fd that must not leak */
	n = mk(b, 0x12345678, 1, CTL_LIST, 3, 0, NULL);
	raw_xchg(fd, b, n, &ns, 1, &h, err, sizeof(err));
	assert_int_equal(h.seq, 0);
	assert_non_null(strstr(err, "magic"));
	/* unknown version: named, seq echoed */
	n = mk(b, CTL_MAGIC, 7, CTL_STATUS, 41, 0, NULL);
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_int_equal(h.seq, 41);
	assert_non_null(strstr(err, "version 7"));
	assert_non_null(strstr(err, "supported: 1"));
	/* unknown type */
	n = mk(b, CTL_MAGIC, 1, 9, 42, 0, NULL);
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_int_equal(h.seq, 42);
	assert_non_null(strstr(err, "unknown message type"));
	/* an ack sent to the server */
	n = mk(b, CTL_MAGIC, 1, CTL_ADD | CTL_ACK, 43, AUTO, "{}");
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_non_null(strstr(err, "not a request"));
	/* truncated: the header promises more body than arrives */
	n = mk(b, CTL_MAGIC, 1, CTL_ADD, 44, 500, "{\"workload\":{\"uid\":");
	raw_xchg(fd, b, n, &ns, 1, &h, err, sizeof(err));
	assert_int_equal(h.seq, 44);
	assert_non_null(strstr(err, "length mismatch"));
	/* oversized datagram (> CTL_MAX_MSG) with an fd */
	memset(b, ' ', sizeof(b));
	mk(b, CTL_MAGIC, 1, CTL_DEL, 45, sizeof(b) - 16, NULL);
	raw_xchg(fd, b, sizeof(b), &ns, 1, &h, err, sizeof(err));
	assert_int_equal(h.seq, 45);
	assert_non_null(strstr(err, "larger than"));
	/* bad JSON, duplicate keys, deep nesting */
	n = mk(b, CTL_MAGIC, 1, CTL_DEL, 46, AUTO, "{\"uid\":1");
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_non_null(strstr(err, "bad JSON"));
	n = mk(b, CTL_MAGIC, 1, CTL_DEL, 47, AUTO, "{\"uid\":\"a\",\"uid\":\"b\"}");
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_non_null(strstr(err, "duplicate"));
	n = mk(b, CTL_MAGIC, 1, CTL_LIST, 48, AUTO, "{\"a\":[[[[[[[[[[[[]]]]]]]]]]]]}");
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_non_null(strstr(err, "nested"));
	/* fds where none belong */
	n = mk(b, CTL_MAGIC, 1, CTL_DEL, 49, AUTO, "{\"uid\":\"x\"}");
	raw_xchg(fd, b, n, p, 2, &h, err, sizeof(err));
	assert_non_null(strstr(err, "no fds"));
	n = mk(b, CTL_MAGIC, 1, CTL_LIST, 50, 0, NULL);
	raw_xchg(fd, b, n, &ns, 1, &h, err, sizeof(err));
	assert_non_null(strstr(err, "no fds"));
	n = mk(b, CTL_MAGIC, 1, CTL_STATUS, 51, 0, NULL);
	raw_xchg(fd, b, n, &p[0], 1, &h, err, sizeof(err));
	assert_non_null(strstr(err, "no fds"));
	/* DEL without a usable uid */
	n = mk(b, CTL_MAGIC, 1, CTL_DEL, 52, AUTO, "{}");
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_non_null(strstr(err, "uid"));
	/* non-ASCII input quoted in the error still gives a valid ack */
	n = mk(b, CTL_MAGIC, 1, CTL_ADD, 54, AUTO,
	       "{\"workload\":{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\","
	       "\"ips\":[\"\u00e9\u00e9\u00e9\"]}}");
	raw_xchg(fd, b, n, &ns, 1, &h, err, sizeof(err));
	assert_non_null(strstr(err, "ips[0] \"??????\" is not"));
	/* ADD whose "workload" is not an object */
	n = mk(b, CTL_MAGIC, 1, CTL_ADD, 53, AUTO, "{\"workload\":1}");
	raw_xchg(fd, b, n, &ns, 1, &h, err, sizeof(err));
	assert_non_null(strstr(err, "bad workload"));

	/* still serving on the same connection, and nothing leaked */
	n = mk(b, CTL_MAGIC, 1, CTL_STATUS, 60, 0, NULL);
	raw_xchg(fd, b, n, NULL, 0, &h, err, sizeof(err));
	assert_string_equal(err, "");
	assert_int_equal(h.seq, 60);
	assert_int_equal(h.type, CTL_STATUS | CTL_ACK);
	assert_int_equal(count_fds(), before);
	assert_int_equal(f->fake.adds, 0);
	assert_int_equal(ctl_status(f->sock, TMO, &ready, err, sizeof(err)), 0);

	control_get_stats(f->c, &st1);
	assert_true(st1.errors - st0.errors == 17);
	assert_true(st1.requests[0] - st0.requests[0] >= 5);
	assert_true(st1.requests[CTL_STATUS] - st0.requests[CTL_STATUS] == 4);

	close(fd);
	close(ns);
	close(p[0]);
	close(p[1]);
	wait_open(f, 0);
}

/* LIST answers in one datagram: when the registry does not fit, the
 * longest prefix that does is sent, marked truncated. */
static void list_truncated(void **state)
{
	struct fx *f = *state;
	struct registry_entry e;
	json_t *reply = NULL, *wls;
	char err[256];
	int i, k, fd;

	for (i = 0; i < 30; i++) {
		char uid[16];

		snprintf(uid, sizeof(uid), "big-%d", i);
		make_wl(&e.w, uid, uid);
		e.netns_dev = e.netns_ino = 1;
		e.w.n_labels = WL_MAX_LABELS;
		for (k = 0; k < WL_MAX_LABELS; k++) {
			snprintf(e.w.labels[k].key, sizeof(e.w.labels[k].key),
			         "example.com/label-%02d", k);
			memset(e.w.labels[k].val, 'v', WL_LABEL_VAL_MAX - 1);
			e.w.labels[k].val[WL_LABEL_VAL_MAX - 1] = 0;
		}
		assert_int_equal(registry_put(f->reg, &e), 0);
	}
	fd = ctl_client_connect(f->sock);
	assert_true(fd >= 0);
	assert_int_equal(
	    ctl_client_call(fd, CTL_LIST, NULL, NULL, 0, TMO, &reply, err, sizeof(err)), 0);
	wls = json_object_get(reply, "workloads");
	assert_true(json_is_true(json_object_get(reply, "truncated")));
	assert_int_equal(json_integer_value(json_object_get(reply, "total")), 30);
	assert_true(json_array_size(wls) > 5 && json_array_size(wls) < 30);
	assert_string_equal(json_string_value(json_object_get(json_array_get(wls, 0), "uid")),
	                    "big-0");
	json_decref(reply);
	close(fd);
	wait_open(f, 0);
}

static void snapshot(void **state)
{
	struct fx *f = *state;
	struct workload a, b, c;
	json_t *body, *arr;
	char err[512];
	int ns[3], p[2], fd, i;

	for (i = 0; i < 3; i++)
		ns[i] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	assert_int_equal(pipe(p), 0);
	make_wl(&a, "a", "pod-a");
	make_wl(&b, "b", "pod-b");
	make_wl(&c, "c", "pod-c");
	assert_int_equal(ctl_add(f->sock, &a, ns[0], TMO, err, sizeof(err)), 0);
	assert_int_equal(ctl_add(f->sock, &b, ns[0], TMO, err, sizeof(err)), 0);
	assert_int_equal(f->fake.adds, 2);

	fd = ctl_client_connect(f->sock);
	assert_true(fd >= 0);
	arr = json_array();
	json_array_append_new(arr, ctl_workload_to_json(&b));
	json_array_append_new(arr, ctl_workload_to_json(&c));
	body = json_pack("{s:o}", "workloads", arr);

	/* invalid snapshots change nothing */
	assert_int_equal(
	    ctl_client_call(fd, CTL_SNAPSHOT, body, ns, 1, TMO, NULL, err, sizeof(err)),
	    -EREMOTEIO);
	assert_non_null(strstr(err, "one netns fd per workload"));
	int mixed[2] = { ns[1], p[0] };
	assert_int_equal(
	    ctl_client_call(fd, CTL_SNAPSHOT, body, mixed, 2, TMO, NULL, err, sizeof(err)),
	    -EREMOTEIO);
	assert_non_null(strstr(err, "workloads[1]: fd is not a network namespace"));
	json_array_append_new(arr, ctl_workload_to_json(&c));
	assert_int_equal(
	    ctl_client_call(fd, CTL_SNAPSHOT, body, ns, 3, TMO, NULL, err, sizeof(err)),
	    -EREMOTEIO);
	assert_non_null(strstr(err, "duplicate uid"));
	json_array_remove(arr, 2);
	assert_int_equal(f->fake.adds, 2);
	assert_int_equal(f->fake.dels, 0);
	assert_int_equal(registry_count(f->reg), 2);

	/* {b, c}: a goes, c comes, b (unchanged) is left alone */
	assert_int_equal(
	    ctl_client_call(fd, CTL_SNAPSHOT, body, ns, 2, TMO, NULL, err, sizeof(err)), 0);
	assert_int_equal(f->fake.dels, 1);
	assert_string_equal(f->fake.last_del, "a");
	assert_int_equal(f->fake.adds, 3);
	assert_string_equal(f->fake.last_add, "c");
	assert_int_equal(registry_count(f->reg), 2);
	struct registry_entry e;
	assert_int_equal(registry_get(f->reg, "a", &e), -ENOENT);
	assert_int_equal(registry_get(f->reg, "c", &e), 0);

	/* an empty snapshot removes everything */
	json_decref(body);
	body = json_pack("{s:[]}", "workloads");
	assert_int_equal(
	    ctl_client_call(fd, CTL_SNAPSHOT, body, NULL, 0, TMO, NULL, err, sizeof(err)), 0);
	assert_int_equal(registry_count(f->reg), 0);
	assert_int_equal(f->fake.dels, 3);

	json_decref(body);
	close(fd);
	for (i = 0; i < 3; i++)
		close(ns[i]);
	close(p[0]);
	close(p[1]);
	wait_open(f, 0);
}

static void many_connections(void **state)
{
	struct fx *f = *state;
	struct control_stats st;
	int fds[CONTROL_MAX_CONNS + 6], i, ready;
	char err[256];

	for (i = 0; i < CONTROL_MAX_CONNS + 6; i++) {
		fds[i] = ctl_client_connect(f->sock);
		assert_true(fds[i] >= 0);
		/* a request each, so that accept order is also activity order */
		assert_int_equal(
		    ctl_client_call(fds[i], CTL_STATUS, NULL, NULL, 0, TMO, NULL, err, sizeof(err)),
		    0);
	}
	control_get_stats(f->c, &st);
	assert_int_equal(st.conns_open, CONTROL_MAX_CONNS);
	assert_int_equal(st.conns_evicted, 6);
	/* the oldest were evicted, the newest still work */
	i = ctl_client_call(fds[0], CTL_STATUS, NULL, NULL, 0, TMO, NULL, err, sizeof(err));
	assert_true(i == -ECONNRESET || i == -EPIPE);
	assert_int_equal(ctl_client_call(fds[CONTROL_MAX_CONNS + 5], CTL_STATUS, NULL, NULL, 0, TMO,
	                                 NULL, err, sizeof(err)),
	                 0);
	for (i = 0; i < CONTROL_MAX_CONNS + 6; i++)
		close(fds[i]);
	wait_open(f, 0);
	assert_int_equal(ctl_status(f->sock, TMO, &ready, err, sizeof(err)), 0);
}

/* Peer credentials are checked even when file modes would let others in. */
static void non_root_refused(void **state)
{
	struct fx *f = *state;
	struct control_stats st;
	char dir[128];
	pid_t pid;
	int status;

	if (geteuid() != 0)
		skip();
	snprintf(dir, sizeof(dir), "%s/run", f->dir);
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(chmod(f->sock, 0666), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[256];
		int ready, fd;

		if (setgid(65534) || setuid(65534))
			_exit(10);
		fd = ctl_client_connect(f->sock);
		if (fd < 0)
			_exit(11); /* the mode should have let us connect */
		/* closed by the server: no ack ever */
		if (ctl_client_call(fd, CTL_STATUS, NULL, NULL, 0, TMO, NULL, err, sizeof(err)) ==
		    0)
			_exit(12);
		(void)ready;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	control_get_stats(f->c, &st);
	assert_int_equal(st.conns_refused, 1);
	assert_int_equal(st.requests[CTL_STATUS], 0);
}

static int run_ctl(struct fx *f, int quiet, ...)
{
	char *argv[32];
	va_list ap;
	int argc = 0, r, saved = -1, devnull;

	argv[argc++] = "ctl";
	argv[argc++] = "--socket";
	argv[argc++] = f->sock;
	va_start(ap, quiet);
	while ((argv[argc] = va_arg(ap, char *)))
		argc++;
	va_end(ap);
	fflush(stdout);
	if (quiet) {
		saved = dup(1);
		devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		close(devnull);
	}
	r = ctl_main(argc, argv);
	fflush(stdout);
	if (quiet) {
		dup2(saved, 1);
		close(saved);
	}
	return r;
}

static void ctl_cli(void **state)
{
	struct fx *f = *state;
	struct registry_entry e;

	assert_int_equal(run_ctl(f, 1, "status", NULL), 1); /* not ready */
	f->fake.ready = 1;
	assert_int_equal(run_ctl(f, 1, "status", NULL), 0);
	assert_int_equal(run_ctl(f, 1, "add", "--uid", "cli-1", "--namespace", "team", "--name",
	                         "web", "--service-account", "web-sa", "--netns",
	                         "/proc/self/ns/net", "--ip", "10.9.0.3", "--ip", "fd00::3",
	                         "--label", "app=web", "--label", "tier=front", NULL),
	                 0);
	assert_int_equal(registry_get(f->reg, "cli-1", &e), 0);
	assert_string_equal(e.w.sa, "web-sa");
	assert_int_equal(e.w.n_ips, 2);
	assert_int_equal(e.w.n_labels, 2);
	assert_string_equal(e.w.labels[1].val, "front");
	assert_int_equal(run_ctl(f, 1, "list", NULL), 0);
	assert_int_equal(run_ctl(f, 1, "list", "--json", NULL), 0);
	assert_int_equal(run_ctl(f, 1, "del", "--uid", "cli-1", NULL), 0);
	assert_int_equal(registry_count(f->reg), 0);

	/* usage errors and refusals */
	assert_int_equal(run_ctl(f, 1, NULL), 2);
	assert_int_equal(run_ctl(f, 1, "frobnicate", NULL), 2);
	assert_int_equal(run_ctl(f, 1, "del", NULL), 2);
	assert_int_equal(run_ctl(f, 1, "add", "--uid", "x", NULL), 2);
	assert_int_equal(run_ctl(f, 1, "add", "--uid", "x", "--namespace", "n", "--name", "p",
	                         "--netns", "/proc/self/ns/net", "--ip", "300.1.1.1", NULL),
	                 2);
	assert_int_equal(run_ctl(f, 1, "add", "--uid", "x", "--namespace", "n", "--name", "p",
	                         "--netns", "/proc/self/ns/net", "--ip", "10.0.0.1", "--label",
	                         "novalue", NULL),
	                 2);
	assert_int_equal(run_ctl(f, 1, "add", "--uid", "x", "--namespace", "n", "--name", "p",
	                         "--netns", "/proc/self/ns/uts", "--ip", "10.0.0.1", NULL),
	                 1);
	assert_int_equal(run_ctl(f, 1, "add", "--uid", "x", "--namespace", "n", "--name", "p",
	                         "--netns", "/nonexistent", "--ip", "10.0.0.1", NULL),
	                 1);
	assert_int_equal(registry_count(f->reg), 0);
	wait_open(f, 0);
}

static void start_errors(void **state)
{
	struct ctl_ops ops = { .add = fake_add, .del = fake_del };
	struct registry *reg;
	struct control *c;
	char dir[] = "/tmp/ambit-ctl2.XXXXXX", path[200], longp[200];
	int fd, base = count_fds();

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(registry_open(NULL, &reg), 0);
	/* never removes a file that is not a socket */
	snprintf(path, sizeof(path), "%s/regular", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	assert_int_equal(control_start(path, &ops, reg, &c), -EEXIST);
	assert_null(c);
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
	memset(longp, 'x', sizeof(longp));
	longp[0] = '/';
	longp[150] = 0;
	assert_int_equal(control_start(longp, &ops, reg, &c), -ENAMETOOLONG);
	ops.add = NULL;
	assert_int_equal(control_start(path, &ops, reg, &c), -EINVAL);
	/* a live server is not displaced; a stale socket is replaced */
	ops.add = fake_add;
	assert_int_equal(control_start(path, &ops, reg, &c), 0);
	struct control *c2 = NULL;
	assert_int_equal(control_start(path, &ops, reg, &c2), -EADDRINUSE);
	assert_null(c2);
	control_stop(c);
	fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(control_start(path, &ops, reg, &c), 0);
	control_stop(c);
	assert_int_equal(access(path, F_OK), -1);
	control_stop(NULL);
	registry_close(reg);
	rmdir(dir);
	assert_int_equal(count_fds(), base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(add_list_del, setup, teardown),
		cmocka_unit_test_setup_teardown(add_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(snapshot, setup, teardown),
		cmocka_unit_test_setup_teardown(list_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(many_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(non_root_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(ctl_cli, setup, teardown),
		cmocka_unit_test(start_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
