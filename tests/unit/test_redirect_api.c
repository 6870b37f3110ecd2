/*
 * The redirector's library API against the kernel, in private network
 * namespaces that this test creates (unshare on a helper thread, kept
 * alive by an fd and addressed as /proc/self/fd/N): install, check,
 * remove, error returns, and many threads at once, each of which must
 * end up in its own namespace again.  Needs root; skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "redirector/redirect.h"

struct ns {
	int fd;
	char path[64];
};

static void *make_ns_thread(void *arg)
{
	struct ns *ns = arg;
	struct ifreq ifr;
	int s;

	ns->fd = -1;
	if (unshare(CLONE_NEWNET))
		return NULL;
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr))
		return NULL;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr))
		return NULL;
	close(s);
	ns->fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	return NULL;
}

/* A fresh network namespace with lo up, alive while ns->fd is open. */
static void ns_new(struct ns *ns)
{
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, make_ns_thread, ns), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(ns->fd >= 0);
	snprintf(ns->path, sizeof(ns->path), "/proc/self/fd/%d", ns->fd);
}

static ino_t own_ns(void)
{
	struct stat st;

	assert_int_equal(stat("/proc/thread-self/ns/net", &st), 0);
	return st.st_ino;
}

static int need_root(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		print_message("not root: namespace tests skipped\n");
		skip();
	}
	return 0;
}

static char err[REDIRECT_ERR_MAX];

static void test_install_check_remove(void **state)
{
	struct redirect_opts o;
	struct ns ns;
	ino_t me = own_ns();

	need_root(state);
	ns_new(&ns);
	redirect_opts_default(&o);
	assert_int_equal(redirect_check(ns.path, &o, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "nft: missing table inet ambit"));
	assert_non_null(strstr(err, "routing: IPv6 route local ::/0 dev lo table 100: missing"));

	assert_int_equal(redirect_install(ns.path, &o, err, sizeof(err)), 0);
	assert_int_equal(redirect_check(ns.path, &o, err, sizeof(err)), 0);
	assert_int_equal(redirect_install(ns.path, &o, err, sizeof(err)), 0);
	assert_int_equal(redirect_check(ns.path, &o, err, sizeof(err)), 0);

	/* other options: a difference */
	o.exclude_out_ports[o.n_exclude_out_ports++] = 22;
	assert_int_equal(redirect_check(ns.path, &o, err, sizeof(err)), 1);
	assert_string_equal(err, "nft: missing rule in chain capture_out: tcp dport 22 return "
	                         "comment \"excluded port\"");
	/* a small buffer gets a cut, terminated report */
	assert_int_equal(redirect_check(ns.path, &o, err, 16), 1);
	assert_int_equal(strlen(err), 15);
	assert_string_equal(err + 12, "...");

	assert_int_equal(redirect_remove(ns.path, &o, err, sizeof(err)), 0);
	assert_int_equal(redirect_remove(ns.path, &o, err, sizeof(err)), 0);
	assert_int_equal(redirect_check(ns.path, &o, err, sizeof(err)), 1);
	assert_int_equal(own_ns(), me);
	close(ns.fd);
}

static void test_errors(void **state)
{
	struct redirect_opts o;
	struct ns ns;
	char tmp[] = "/tmp/ambit-redirect-api-XXXXXX";
	int fd;

	need_root(state);
	ns_new(&ns);
	redirect_opts_default(&o);

	assert_int_equal(redirect_install(NULL, &o, err, sizeof(err)), -EINVAL);
	assert_int_equal(redirect_install("/nonexistent/ns", &o, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot open network namespace /nonexistent/ns"));
	fd = mkstemp(tmp);
	assert_true(fd >= 0);
	assert_int_equal(redirect_install(tmp, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "is not a namespace file"));
	close(fd);
	unlink(tmp);
	assert_int_equal(redirect_check("/proc/self/ns/mnt", &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a network namespace"));

	/* invalid options never reach the namespace */
	o.inbound_port = o.outbound_port;
	assert_int_equal(redirect_install(ns.path, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "must differ"));
	redirect_opts_default(&o);
	assert_int_equal(redirect_check(ns.path, &o, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "missing table"));

	/* an error buffer of 1 byte is still a string */
	assert_int_equal(redirect_install("/nonexistent", &o, err, 1), -ENOENT);
	assert_int_equal(err[0], '\0');
	close(ns.fd);
}

/* From inside a private namespace, its own path is refused: the caller
 * must sit outside the pod.  Done on a thread that entered a private
 * namespace, so a regression could only touch that namespace. */
struct own_arg {
	struct ns *ns;
	int rc;
	char msg[256];
};

static void *own_thread(void *p)
{
	struct own_arg *a = p;
	struct redirect_opts o;

	redirect_opts_default(&o);
	if (setns(a->ns->fd, CLONE_NEWNET)) {
		a->rc = 1;
		return NULL;
	}
	a->rc = redirect_install("/proc/thread-self/ns/net", &o, a->msg, sizeof(a->msg));
	return NULL;
}

static void test_own_netns_refused(void **state)
{
	struct own_arg a;
	struct redirect_opts o;
	struct ns ns;
	pthread_t t;

	need_root(state);
	ns_new(&ns);
	a.ns = &ns;
	assert_int_equal(pthread_create(&t, NULL, own_thread, &a), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(a.rc, -EBUSY);
	assert_non_null(strstr(a.msg, "caller's own network namespace"));
	redirect_opts_default(&o);
	assert_int_equal(redirect_check(ns.path, &o, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "missing table"));
	close(ns.fd);
}

#define NTHREADS 8
#define ROUNDS   4

struct worker {
	struct ns *ns;
	size_t nports; /* same for the threads sharing a namespace */
	int failures;
	int moved; /* ended in a namespace other than its own */
	char msg[512];
};

static void *worker(void *p)
{
	struct worker *w = p;
	struct redirect_opts o;
	struct stat before, after;
	int i, rc;

	redirect_opts_default(&o);
	stat("/proc/thread-self/ns/net", &before);
	for (i = 0; i < ROUNDS; i++) {
		o.n_exclude_out_ports = w->nports;
		o.exclude_out_ports[0] = 22;
		o.exclude_out_ports[1] = 443;
		rc = redirect_install(w->ns->path, &o, w->msg, sizeof(w->msg));
		if (!rc)
			rc = redirect_check(w->ns->path, &o, w->msg, sizeof(w->msg));
		if (rc)
			w->failures++;
		stat("/proc/thread-self/ns/net", &after);
		if (after.st_ino != before.st_ino)
			w->moved++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS];
	struct ns ns[NTHREADS / 2];
	struct redirect_opts o;
	ino_t me = own_ns();
	int i;

	need_root(state);
	for (i = 0; i < NTHREADS / 2; i++)
		ns_new(&ns[i]);
	/* two threads per namespace with the same options, all at once:
	 * concurrent idempotent installs must all succeed */
	for (i = 0; i < NTHREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].ns = &ns[i / 2];
		w[i].nports = (size_t)(i / 2) % 3;
		assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		if (w[i].failures)
			fail_msg("thread %d: %d failures, last: %s", i, w[i].failures, w[i].msg);
		assert_int_equal(w[i].moved, 0);
	}
	assert_int_equal(own_ns(), me);
	redirect_opts_default(&o);
	o.exclude_out_ports[0] = 22;
	o.exclude_out_ports[1] = 443;
	for (i = 0; i < NTHREADS / 2; i++) {
		o.n_exclude_out_ports = (size_t)i % 3;
		assert_int_equal(redirect_check(ns[i].path, &o, err, sizeof(err)), 0);
		assert_int_equal(redirect_remove(ns[i].path, &o, err, sizeof(err)), 0);
		close(ns[i].fd);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_install_check_remove),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_own_netns_refused),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
