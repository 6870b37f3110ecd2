/*
 * authz: the decision glue (addresses, v4-mapped sources, HBONE vs
 * plaintext), the watch thread (reload, refusal of a broken file, startup
 * refusal) and the re-evaluation of open connections on a worker, with
 * real policy files in a temporary directory and real loopback sockets.
 * conn_abort() is defined here: it records which connections a change
 * closes instead of driving an io_uring.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-proxy/authz.h"
#include "node-proxy/config.h"
#include "node-proxy/confdir.h"
#include "node-proxy/pod.h"
#include "node-proxy/worker-t.h"

static uint32_t aborted[8];
static unsigned n_aborted;

void conn_abort(struct worker *w, struct conn *c, int rst)
{
	(void)w;
	assert_int_equal(rst, 1);
	if (n_aborted < 8)
		aborted[n_aborted++] = c->idx;
	c->state = CS_CLOSING;
}

/* the worker and pod table behind a service retry (not exercised here:
 * tests/system/test_policy.py covers it against the real data plane) */
int worker_enter_pod(struct worker *w, struct pod *pod)
{
	(void)w;
	(void)pod;
	return -ENOSYS;
}
struct io_uring_sqe *worker_sqe(struct worker *w)
{
	(void)w;
	fail();
	return NULL;
}
void pod_put(struct pod *p)
{
	(void)p;
}
struct pod *inpod_lookup_addr(struct inpod *ip, const struct sockaddr *sa)
{
	(void)ip;
	(void)sa;
	return NULL;
}

/* mesh.c's side of a change (no HBONE here) */
static unsigned n_reauthorize;
void mesh_reauthorize(struct worker *w)
{
	(void)w;
	n_reauthorize++;
}
int mesh_principal(const struct pod *pod, char *out, size_t len)
{
	(void)pod;
	(void)out;
	(void)len;
	return -ENOENT; /* the mesh is off */
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char tmp[512], path[512];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(rename(tmp, path), 0);
}

static void wl_init(struct workload *w, const char *ns, const char *app)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->ns, sizeof(w->ns), "%s", ns);
	snprintf(w->name, sizeof(w->name), "%s", app);
	snprintf(w->sa, sizeof(w->sa), "%s", app);
	w->n_labels = 1;
	snprintf(w->labels[0].key, sizeof(w->labels[0].key), "app");
	snprintf(w->labels[0].val, sizeof(w->labels[0].val), "%s", app);
}

static const char SHOP[] = "[policy backend-allow]\n"
                           "namespace = shop\n"
                           "selector = app=backend\n"
                           "[rule backend-allow]\n"
                           "principals = spiffe://cluster.local/ns/shop/sa/frontend\n"
                           "ports = 8080\n"
                           "[rule backend-allow]\n"
                           "ip_blocks = 10.0.0.0/8, fd00::/16\n"
                           "ports = 9090\n"
                           "[policy deny-legacy]\n"
                           "namespace = shop\n"
                           "action = DENY\n"
                           "[rule deny-legacy]\n"
                           "ip_blocks = 10.200.0.0/16\n";

static void test_decide(void **state)
{
	struct policy_set *ps = NULL;
	struct conf_errors e;
	struct workload be, other;
	struct policy_verdict v;
	struct sockaddr_in a4 = { .sin_family = AF_INET };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	const char *fe = "spiffe://cluster.local/ns/shop/sa/frontend";

	(void)state;
	conf_errors_init(&e);
	assert_int_equal(policy_load_buf("shop.ini", SHOP, sizeof(SHOP) - 1, NULL, &ps, &e), 0);
	wl_init(&be, "shop", "backend");
	wl_init(&other, "shop", "db");

	/* HBONE principal on the principal rule's port */
	assert_int_equal(authz_decide(ps, &be, NULL, 8080, fe, &v), 0);
	assert_int_equal(v.reason, POLICY_ALLOW_MATCH);
	assert_string_equal(v.policy, "shop/backend-allow");
	/* the same port in plaintext: no principal, denied */
	inet_pton(AF_INET, "10.1.2.3", &a4.sin_addr);
	assert_int_equal(authz_decide(ps, &be, (struct sockaddr *)&a4, 8080, NULL, &v), -EACCES);
	assert_int_equal(v.reason, POLICY_DENY_NO_MATCH);
	/* plaintext from the ip block on 9090 */
	assert_int_equal(authz_decide(ps, &be, (struct sockaddr *)&a4, 9090, NULL, &v), 0);
	/* ... but not from outside it, nor without an address */
	inet_pton(AF_INET, "192.168.1.1", &a4.sin_addr);
	assert_int_equal(authz_decide(ps, &be, (struct sockaddr *)&a4, 9090, NULL, &v), -EACCES);
	assert_int_equal(authz_decide(ps, &be, NULL, 9090, NULL, &v), -EACCES);
	/* a v4-mapped source on a dual-stack socket is judged as v4 */
	inet_pton(AF_INET6, "::ffff:10.9.9.9", &a6.sin6_addr);
	assert_int_equal(authz_decide(ps, &be, (struct sockaddr *)&a6, 9090, NULL, &v), 0);
	inet_pton(AF_INET6, "fd00::5", &a6.sin6_addr);
	assert_int_equal(authz_decide(ps, &be, (struct sockaddr *)&a6, 9090, NULL, &v), 0);
	inet_pton(AF_INET6, "fd01::5", &a6.sin6_addr);
	assert_int_equal(authz_decide(ps, &be, (struct sockaddr *)&a6, 9090, NULL, &v), -EACCES);
	/* the namespace DENY beats the ALLOW, also for a principal */
	inet_pton(AF_INET6, "::ffff:10.200.1.1", &a6.sin6_addr);
	assert_int_equal(authz_decide(ps, &be, (struct sockaddr *)&a6, 8080, fe, &v), -EACCES);
	assert_int_equal(v.reason, POLICY_DENY_MATCH);
	assert_string_equal(v.policy, "shop/deny-legacy");
	/* a workload no ALLOW selects is open */
	assert_int_equal(authz_decide(ps, &other, NULL, 1, NULL, &v), 0);
	assert_int_equal(v.reason, POLICY_ALLOW_NO_POLICY);
	/* no set at all allows */
	assert_int_equal(authz_decide(NULL, &be, NULL, 8080, NULL, &v), 0);
	policy_set_put(ps);
}

static char dir[] = "/tmp/test_authz.XXXXXX";

static json_int_t stat_int(const char *key)
{
	json_t *o = authz_stats_json();
	json_int_t v = json_integer_value(json_object_get(o, key));

	json_decref(o);
	return v;
}

static void wait_stat(const char *key, json_int_t want)
{
	for (int i = 0; i < 300 && stat_int(key) < want; i++)
		usleep(10000);
	assert_int_equal(stat_int(key), want);
}

/* A loopback TCP connection; returns the accepted end (peer 127.0.0.1). */
static int loop_conn(int lfd, int *cfd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);

	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	*cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(*cfd, (struct sockaddr *)&sa, len), 0);
	return accept(lfd, NULL, NULL);
}

static void test_watch_and_reevaluate(void **state)
{
	struct np_config cfg;
	char err[512] = "";
	struct worker *w;
	struct conn slots[3];
	struct pod *pod;
	struct sockaddr_in lsa = { .sin_family = AF_INET,
		                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int lfd, cfd[3];
	json_t *o;

	(void)state;
	assert_non_null(mkdtemp(dir));
	write_file(dir, "10.ini",
	           "[policy be]\nnamespace = shop\nselector = app=backend\n"
	           "[rule be]\nip_blocks = 127.0.0.1\nports = 8080, 8081\n");
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.policy_dir, sizeof(cfg.policy_dir), "%s", dir);
	assert_int_equal(authz_init(&cfg, err, sizeof(err)), 0);
	assert_true(authz_enabled());
	assert_int_equal(stat_int("generation"), 1);
	assert_int_equal(stat_int("policies"), 1);

	/* a worker with three open inbound connections from 127.0.0.1 */
	w = calloc(1, sizeof(*w));
	pod = calloc(1, sizeof(*pod));
	assert_non_null(w);
	assert_non_null(pod);
	wl_init(&pod->w, "shop", "backend");
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&lsa, sizeof(lsa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	memset(slots, 0, sizeof(slots));
	w->pool.slots = slots;
	w->pool.hwm = 3;
	w->pool.active_head = 0;
	for (uint32_t i = 0; i < 3; i++) {
		struct sockaddr_in *d = (struct sockaddr_in *)&slots[i].dst;
		slots[i].idx = i;
		slots[i].state = CS_OPEN;
		slots[i].kind = i == 2 ? LK_OUTBOUND : LK_INBOUND; /* 2: plain outbound */
		slots[i].pod = pod;
		slots[i].ep[0].fd = loop_conn(lfd, &cfd[i]);
		slots[i].next = i < 2 ? i + 1 : CONN_NIL;
		d->sin_family = AF_INET;
		d->sin_port = htons((uint16_t)(i == 0 ? 8080 : 8081));
	}
	/* the new connection hook agrees with the set in force */
	assert_int_equal(authz_plaintext(w, pod, slots[0].ep[0].fd, 8080), 0);
	assert_int_equal(authz_plaintext(w, pod, slots[0].ep[0].fd, 9999), -EACCES);
	assert_int_equal(stat_int("allowed"), 1);
	assert_int_equal(stat_int("denied"), 1);
	/* first tick judges everything: all allowed */
	authz_tick(w);
	assert_int_equal(n_aborted, 0);
	assert_int_equal(n_reauthorize, 1); /* and the HBONE streams */
	authz_tick(w); /* nothing changed: no second pass */
	assert_int_equal(n_aborted, 0);
	assert_int_equal(n_reauthorize, 1);

	/* 8081 leaves the rule: conn 1 is closed, conn 0 stays, conn 2 is
	 * outbound without a local destination and not judged here */
	write_file(dir, "10.ini",
	           "[policy be]\nnamespace = shop\nselector = app=backend\n"
	           "[rule be]\nip_blocks = 127.0.0.1\nports = 8080\n");
	wait_stat("generation", 2);
	authz_tick(w);
	assert_int_equal(n_aborted, 1);
	assert_int_equal(aborted[0], 1);
	assert_int_equal(stat_int("revoked"), 1);
	assert_int_equal(slots[0].state, CS_OPEN);
	assert_int_equal(slots[2].state, CS_OPEN);

	/* a broken file: refused with file:line, the set in force stays */
	write_file(dir, "20-bad.ini", "[policy x]\nnamespace = shop\naction = allow\n");
	wait_stat("policy_reloads_failed", 1);
	assert_int_equal(stat_int("generation"), 2);
	o = authz_stats_json();
	assert_non_null(
	    strstr(json_string_value(json_object_get(o, "last_error")), "20-bad.ini:3"));
	json_decref(o);
	authz_tick(w);
	assert_int_equal(n_aborted, 1);
	assert_int_equal(authz_plaintext(w, pod, slots[0].ep[0].fd, 8080), 0);

	/* SIGHUP path: a forced reload of the (still broken) dir fails again */
	authz_reload();
	wait_stat("policy_reloads_failed", 2);
	unlink(strcat(strcpy(err, dir), "/20-bad.ini"));
	wait_stat("generation", 3);

	for (int i = 0; i < 3; i++) {
		close(slots[i].ep[0].fd);
		close(cfd[i]);
	}
	close(lfd);
	authz_fini();
	assert_false(authz_enabled());
	free(pod);
	free(w);
}

static void test_startup_refusal(void **state)
{
	struct np_config cfg;
	char err[512] = "";

	(void)state;
	/* dir still exists from the previous test (one good file) */
	write_file(dir, "30-bad.ini", "[policy y]\nnamespace = Shop\n");
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.policy_dir, sizeof(cfg.policy_dir), "%s", dir);
	assert_int_equal(authz_init(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "30-bad.ini:2"));
	assert_false(authz_enabled());
	/* a missing directory is fatal too */
	snprintf(cfg.policy_dir, sizeof(cfg.policy_dir), "%s/nope", dir);
	assert_int_equal(authz_init(&cfg, err, sizeof(err)), -EINVAL);
	/* nothing configured: off, every hook allows */
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(authz_init(&cfg, err, sizeof(err)), 0);
	assert_false(authz_enabled());
	assert_int_equal(authz_plaintext(NULL, NULL, -1, 80), 0);
	assert_int_equal(authz_hbone(NULL, NULL, NULL, -1, 80), 0);
	authz_tick(NULL);
	authz_fini();
	unlink(strcat(strcpy(err, dir), "/10.ini"));
	unlink(strcat(strcpy(err, dir), "/30-bad.ini"));
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_watch_and_reevaluate),
		cmocka_unit_test(test_startup_refusal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
