/* Hot reload (confwatch) and check-config: an edited directory is loaded
 * after the debounce, a broken file is refused with file:line and the last
 * good set stays in force, services keep their runtime state across
 * reloads; check-config's exit codes and messages. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-proxy/checkconfig.h"
#include "node-proxy/confwatch.h"
#include "node-proxy/log.h"

static char pdir[64], sdir[64];
static int changes;
static struct policy_set *last_seen;

static void on_change(void *arg, struct policy_set *ps, struct service_set *ss)
{
	(void)arg;
	(void)ss;
	changes++;
	last_seen = ps; /* borrowed, compared only */
}

/* Write @text to DIR/NAME the way editors and kubectl do: temp + rename. */
static void put(const char *dir, const char *name, const char *text)
{
	char tmp[256], path[256];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(rename(tmp, path), 0);
}

static int setup(void **state)
{
	(void)state;
	log_set_level(LOG_LVL_ERROR);
	snprintf(pdir, sizeof(pdir), "/tmp/np-pol-XXXXXX");
	snprintf(sdir, sizeof(sdir), "/tmp/np-svc-XXXXXX");
	assert_non_null(mkdtemp(pdir));
	assert_non_null(mkdtemp(sdir));
	changes = 0;
	return 0;
}

static int teardown(void **state)
{
	char cmd[200];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", pdir, sdir);
	return system(cmd);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Poll and process until @done says so or 3 s pass; returns the time taken. */
static uint64_t pump(struct confwatch *cw, bool (*done)(struct confwatch *cw))
{
	uint64_t t0 = mono_ms();

	while (!done(cw)) {
		struct pollfd p = { .fd = confwatch_fd(cw), .events = POLLIN };
		if (mono_ms() - t0 > 3000)
			fail_msg("no reload within 3 s");
		if (poll(&p, 1, 50) > 0)
			assert_true(confwatch_process(cw) >= 0);
	}
	return mono_ms() - t0;
}

static uint64_t want_gen;
static bool gen_reached(struct confwatch *cw)
{
	return confwatch_generation(cw) >= want_gen;
}

static uint64_t want_failed;
static bool failed_reached(struct confwatch *cw)
{
	struct confwatch_stats st;

	confwatch_get_stats(cw, &st);
	return st.policy_reloads_failed + st.services_reloads_failed >= want_failed;
}

static int eval_port(struct confwatch *cw, uint16_t port)
{
	struct policy_set *ps = confwatch_policies(cw);
	struct workload w = { .ns = "shop" };
	struct policy_conn c = { .src_principal = "spiffe://td/ns/shop/sa/a", .dst_port = port };
	struct policy_verdict v;
	int rc = policy_eval(ps, &w, &c, &v);

	policy_set_put(ps);
	return rc;
}

#define POL(port) "[policy p]\nnamespace = shop\n[rule p]\nports = " #port "\n"
#define SVC(max)                                                                                   \
	"[service s]\nnamespace = shop\nvips = 10.96.0.1\nports = 80\nselector = app=s\n"          \
	"max_connections = " #max "\nmax_pending = 1\n"

static void test_reload(void **state)
{
	struct confwatch_opts o = {
		.policy_dir = pdir, .services_dir = sdir, .debounce_ms = 50, .on_change = on_change
	};
	struct confwatch *cw = NULL;
	struct conf_errors e;
	struct confwatch_stats st;
	struct service_set *ss;
	struct svc_ticket t1, t2;
	struct wl_ip vip;
	uint64_t took;

	(void)state;
	put(pdir, "a.ini", POL(80));
	put(sdir, "s.ini", SVC(1));
	conf_errors_init(&e);
	assert_int_equal(confwatch_open(&o, &cw, &e), 0);
	assert_int_equal(confwatch_generation(cw), 1);
	assert_int_equal(changes, 1);
	assert_int_equal(eval_port(cw, 80), 0);
	assert_int_equal(eval_port(cw, 81), -EACCES);

	/* a connection is open on the service */
	ss = confwatch_services(cw);
	conf_parse_ip("10.96.0.1", &vip);
	assert_int_equal(services_acquire(services_lookup(ss, &vip, 80, NULL), &t1), 0);
	services_set_put(ss);

	/* edit: port 81 now */
	put(pdir, "a.ini", POL(81));
	want_gen = 2;
	took = pump(cw, gen_reached);
	print_message("reload after %llu ms\n", (unsigned long long)took);
	assert_int_equal(eval_port(cw, 80), -EACCES);
	assert_int_equal(eval_port(cw, 81), 0);
	assert_int_equal(changes, 2);

	/* a broken file: refused, the last good set stays, counted, logged with its line */
	put(pdir, "b.ini", "[policy q]\nnamespace = shop\naction = PERHAPS\n");
	want_failed = 1;
	pump(cw, failed_reached);
	confwatch_get_stats(cw, &st);
	assert_int_equal(st.policy_reloads_failed, 1);
	assert_non_null(strstr(st.last_error, "/b.ini:3: bad action \"PERHAPS\""));
	assert_int_equal(confwatch_generation(cw), 2);
	assert_int_equal(eval_port(cw, 81), 0);
	assert_int_equal(eval_port(cw, 80), -EACCES);

	/* only the directory that changed is loaded again */
	assert_int_equal(st.services_reloads_ok, 1);
	assert_int_equal(st.generation, 2);
	/* a services reload keeps the open connection counted */
	put(sdir, "s.ini", SVC(2)); /* limit 1 -> 2 */
	want_gen = 3;
	pump(cw, gen_reached);
	ss = confwatch_services(cw);
	assert_int_equal(services_acquire(services_lookup(ss, &vip, 80, NULL), &t2), -EBUSY);
	assert_int_equal(t2.refused, SVC_REFUSED_MAX_PENDING); /* t1 still pending */
	services_connected(&t1);
	assert_int_equal(services_acquire(services_lookup(ss, &vip, 80, NULL), &t2), 0);
	services_set_put(ss);
	services_release(&t2);

	/* fixed: loaded again */
	put(pdir, "b.ini", "[policy q]\nnamespace = shop\naction = DENY\n[rule q]\nports = 81\n");
	want_gen = 4;
	pump(cw, gen_reached);
	assert_int_equal(eval_port(cw, 81), -EACCES);

	/* deleting a file is a change too */
	{
		char path[128];
		snprintf(path, sizeof(path), "%s/b.ini", pdir);
		assert_int_equal(unlink(path), 0);
	}
	want_gen = 5;
	pump(cw, gen_reached);
	assert_int_equal(eval_port(cw, 81), 0);
	assert_ptr_not_equal(last_seen, NULL);

	/* forced reload, and a reference outliving the watcher */
	assert_int_equal(confwatch_reload(cw), 1);
	ss = confwatch_services(cw);
	confwatch_close(cw);
	assert_int_equal(services_count(ss), 1);
	services_set_put(ss);
	services_release(&t1);
}

/* Writes that never stop still get loaded (at most every 2 s). */
static void test_busy_dir(void **state)
{
	struct confwatch_opts o = { .policy_dir = pdir, .debounce_ms = 300 };
	struct confwatch *cw = NULL;
	uint64_t t0 = mono_ms();
	struct conf_errors e;

	(void)state;
	put(pdir, "a.ini", POL(80));
	conf_errors_init(&e);
	assert_int_equal(confwatch_open(&o, &cw, &e), 0);
	assert_null(confwatch_services(cw));
	while (confwatch_generation(cw) < 2) {
		struct pollfd p = { .fd = confwatch_fd(cw), .events = POLLIN };
		if (mono_ms() - t0 > 4000)
			fail_msg("never reloaded");
		put(pdir, "a.ini", POL(81));
		if (poll(&p, 1, 100) > 0)
			confwatch_process(cw);
	}
	assert_in_range(mono_ms() - t0, 1900, 3000);
	confwatch_close(cw);
}

static void test_open_refuses_bad(void **state)
{
	struct confwatch_opts o = { .policy_dir = pdir, .services_dir = sdir };
	struct confwatch *cw = NULL;
	struct conf_errors e;

	(void)state;
	put(pdir, "a.ini", "[policy p]\nnamespace = shop\nbogus = 1\n");
	put(sdir, "s.ini", SVC(1));
	conf_errors_init(&e);
	assert_int_equal(confwatch_open(&o, &cw, &e), -EINVAL);
	assert_null(cw);
	assert_int_equal(e.n, 1);
	assert_non_null(strstr(e.msg[0], "/a.ini:3: unknown key \"bogus\""));

	o.root_ns = "Not_A_Namespace";
	conf_errors_init(&e);
	assert_int_equal(confwatch_open(&o, &cw, &e), -EINVAL);
	assert_non_null(strstr(e.msg[0], "bad namespace"));
	o.root_ns = NULL;

	o.policy_dir = "/nonexistent";
	conf_errors_init(&e);
	assert_int_equal(confwatch_open(&o, &cw, &e), -EINVAL);
	assert_non_null(strstr(e.msg[0], "/nonexistent: No such file"));
}

/* A ConfigMap volume: FILE -> ..data/FILE, ..data -> ..TIMESTAMP; kubelet
 * updates by pointing a new ..data at a new directory with rename(2). */
static void test_configmap_layout(void **state)
{
	struct confwatch_opts o = { .policy_dir = pdir, .debounce_ms = 20 };
	struct confwatch *cw = NULL;
	struct conf_errors e;
	char p1[128], p2[128], link[128], tmp[128];

	(void)state;
	snprintf(p1, sizeof(p1), "%s/..2026_01", pdir);
	snprintf(p2, sizeof(p2), "%s/..2026_02", pdir);
	assert_int_equal(mkdir(p1, 0755), 0);
	assert_int_equal(mkdir(p2, 0755), 0);
	put(p1, "a.ini", POL(80));
	put(p2, "a.ini", POL(81));
	snprintf(link, sizeof(link), "%s/..data", pdir);
	assert_int_equal(symlink("..2026_01", link), 0);
	snprintf(tmp, sizeof(tmp), "%s/a.ini", pdir);
	assert_int_equal(symlink("..data/a.ini", tmp), 0);

	conf_errors_init(&e);
	assert_int_equal(confwatch_open(&o, &cw, &e), 0);
	assert_int_equal(eval_port(cw, 80), 0);
	assert_int_equal(eval_port(cw, 81), -EACCES);

	snprintf(tmp, sizeof(tmp), "%s/..data_tmp", pdir);
	assert_int_equal(symlink("..2026_02", tmp), 0);
	assert_int_equal(rename(tmp, link), 0);
	want_gen = 2;
	pump(cw, gen_reached);
	assert_int_equal(eval_port(cw, 80), -EACCES);
	assert_int_equal(eval_port(cw, 81), 0);
	confwatch_close(cw);
}

struct reader_arg {
	struct confwatch *cw;
	atomic_bool stop;
	atomic_ulong evals, refreshes;
};

/* A worker as the data plane would run one: keep a reference to the set in
 * force, refresh it when the generation moves, evaluate with it. */
static void *reader(void *arg)
{
	struct reader_arg *a = arg;
	uint64_t gen = confwatch_generation(a->cw);
	struct policy_set *ps = confwatch_policies(a->cw);
	struct service_set *ss = confwatch_services(a->cw);
	struct workload w = { .uid = "u1", .ns = "shop", .n_ips = 1, .n_labels = 1 };
	const struct workload *wp = &w;
	struct policy_conn c = { .src_principal = "spiffe://td/ns/shop/sa/a", .dst_port = 80 };

	snprintf(w.labels[0].key, sizeof(w.labels[0].key), "app");
	snprintf(w.labels[0].val, sizeof(w.labels[0].val), "s");
	conf_parse_ip("10.0.0.1", &w.ips[0]);
	while (!atomic_load(&a->stop)) {
		struct policy_verdict v;
		struct svc_ticket t;
		struct svc_pick p;
		struct wl_ip vip;
		const struct service *s;

		if (confwatch_generation(a->cw) != gen) {
			gen = confwatch_generation(a->cw);
			policy_set_put(ps);
			services_set_put(ss);
			ps = confwatch_policies(a->cw);
			ss = confwatch_services(a->cw);
			atomic_fetch_add(&a->refreshes, 1);
		}
		c.dst_port = (uint16_t)(80 + (atomic_load(&a->evals) & 1));
		policy_eval(ps, &w, &c, &v);
		conf_parse_ip("10.96.0.1", &vip);
		s = services_lookup(ss, &vip, 80, NULL);
		assert_non_null(s);
		if (services_acquire(s, &t) == 0) {
			if (services_pick(s, &wp, 1, NULL, 1, &p) == 0) {
				services_report(p.ep, true, 1);
				services_done(p.ep);
			}
			services_connected(&t);
			services_release(&t);
		}
		atomic_fetch_add(&a->evals, 1);
	}
	policy_set_put(ps);
	services_set_put(ss);
	return NULL;
}

/* 50 edits (every 10th one broken) while 3 workers evaluate: no crash, no
 * leak (ASan), every good edit is taken, every broken one refused. */
static void test_reload_under_load(void **state)
{
	struct confwatch_opts o = { .policy_dir = pdir, .services_dir = sdir };
	struct reader_arg a = { 0 };
	struct confwatch_stats st;
	struct conf_errors e;
	pthread_t th[3];

	(void)state;
	put(pdir, "a.ini", POL(80));
	put(sdir, "s.ini", SVC(1000));
	conf_errors_init(&e);
	assert_int_equal(confwatch_open(&o, &a.cw, &e), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader, &a), 0);
	for (int i = 1; i <= 50; i++) {
		if (i % 10 == 0)
			put(pdir, "a.ini", "[policy p]\nnamespace = shop\nports = 80\n");
		else if (i % 2)
			put(pdir, "a.ini", POL(81));
		else
			put(pdir, "a.ini", POL(80));
		put(sdir, "s.ini", i % 2 ? SVC(999) : SVC(1000));
		confwatch_reload(a.cw);
		usleep(2000);
	}
	atomic_store(&a.stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	confwatch_get_stats(a.cw, &st);
	print_message("%lu evaluations, %lu refreshes during 50 reloads\n",
	              (unsigned long)atomic_load(&a.evals),
	              (unsigned long)atomic_load(&a.refreshes));
	assert_int_equal(st.policy_reloads_failed, 5);
	assert_int_equal(st.policy_reloads_ok, 46);
	assert_int_equal(st.services_reloads_ok, 51);
	assert_int_equal(st.generation, 51);
	confwatch_close(a.cw);
}

/* Run check-config with stderr/stdout captured; returns the exit code. */
static int run_check(char *out, size_t outlen, int argc, char **argv)
{
	char path[] = "/tmp/np-cc-XXXXXX";
	int fd = mkstemp(path), save_err = dup(2), save_out = dup(1), rc;
	ssize_t n;

	assert_true(fd >= 0);
	fflush(stdout);
	fflush(stderr);
	dup2(fd, 2);
	dup2(fd, 1);
	rc = checkconfig_main(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(save_err, 2);
	dup2(save_out, 1);
	close(save_err);
	close(save_out);
	n = pread(fd, out, outlen - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return rc;
}

static void test_checkconfig(void **state)
{
	char out[4096];
	char *ok[] = { "check-config", "configs/policies.d", "configs/services.d", NULL };
	char *help[] = { "check-config", "--help", NULL };
	char *none[] = { "check-config", NULL };
	char *badopt[] = { "check-config", "--frobnicate", NULL };
	char *explicit[] = { "check-config", "-p", pdir, "-s", sdir, NULL };
	char *autod[] = { "check-config", "-q", pdir, sdir, NULL };
	char *rootns[] = { "check-config", "-r", "Bad_NS", pdir, NULL };

	(void)state;
	assert_int_equal(run_check(out, sizeof(out), 3, ok), 0);
	assert_non_null(strstr(out, "configs/policies.d: ok, "));
	assert_non_null(strstr(out, "configs/services.d: ok, 3 services"));
	assert_int_equal(run_check(out, sizeof(out), 2, help), 0);
	assert_non_null(strstr(out, "usage: ambit-node-proxy check-config"));
	assert_int_equal(run_check(out, sizeof(out), 1, none), 2);
	assert_int_equal(run_check(out, sizeof(out), 2, badopt), 2);
	assert_int_equal(run_check(out, sizeof(out), 4, rootns), 2);

	put(pdir, "a.ini", POL(80));
	put(sdir, "s.ini", SVC(1) "lb = fastest\n");
	assert_int_equal(run_check(out, sizeof(out), 5, explicit), 1);
	assert_non_null(strstr(out, "/s.ini:8: bad lb \"fastest\""));
	assert_non_null(strstr(out, "invalid (1 error)"));
	assert_non_null(strstr(out, "ok, 1 policies"));

	/* the services dir is recognised by its contents */
	assert_int_equal(run_check(out, sizeof(out), 4, autod), 1);
	assert_non_null(strstr(out, "/s.ini:8: bad lb"));
	assert_null(strstr(out, "ok,")); /* -q */
	put(sdir, "s.ini", SVC(1));
	assert_int_equal(run_check(out, sizeof(out), 4, autod), 0);
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_configmap_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_under_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkconfig, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
