/*
 * ambit-node-proxy: the node proxy daemon, and its `ctl` client.
 *
 *   ambit-node-proxy [run] [--config FILE] [--workers N] [--control-socket P]
 *                    [--state-file P] [--log-level L] [--drain-timeout D] ...
 *   ambit-node-proxy ctl add|del|list|status ...
 *
 * Start-up order: configuration, workers, the in-pod helper, the registry
 * (restoring every saved pod through the same path an ADD takes), the
 * control socket, the admin server; then ready.  SIGTERM/SIGINT: refuse new
 * connections, drain, exit 0.  The state file is kept, so a restart (or a
 * SIGKILL and a restart) serves the same pods without the CNI plugin.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node-proxy/admin.h"
#include "node-proxy/authz.h"
#include "node-proxy/checkconfig.h"
#include "node-proxy/config.h"
#include "node-proxy/control.h"
#include "node-proxy/ctl_client.h"
#include "node-proxy/inpod.h"
#include "node-proxy/log.h"
#include "node-proxy/mesh.h"
#include "node-proxy/pod.h"
#include "node-proxy/registry.h"
#include "node-proxy/telemetry.h"
#include "node-proxy/worker.h"

struct daemon {
	struct np_config cfg;
	struct worker *workers[POD_MAX_WORKERS];
	unsigned n_workers;
	struct inpod *inpod;
	struct registry *reg;
	struct control *ctl;
	struct admin *admin;
	int node_netns_fd;
	int ready; /* atomic */
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: ambit-node-proxy [run] [options]\n"
	    "       ambit-node-proxy ctl add|del|list|status ...\n"
	    "       ambit-node-proxy check-config [-p DIR] [-s DIR] [DIR...]  (docs/policy.md)\n"
	    "options (each overrides configs/node-proxy.ini):\n"
	    "  --config FILE          INI configuration\n"
	    "  --workers N            data-path threads (0 = one per CPU)\n"
	    "  --control-socket PATH  unix socket of the control protocol\n"
	    "  --state-file PATH      persisted workload registry\n"
	    "  --log-level L          error|warn|info|debug\n"
	    "  --connect-timeout D    upstream connect deadline (e.g. 5s)\n"
	    "  --idle-timeout D       close connections idle this long (0 = never)\n"
	    "  --drain-timeout D      deadline for connections of a deleted pod / at exit\n"
	    "  --admin-port P         127.0.0.1 admin HTTP port (15000)\n"
	    "  --readiness-port P     0.0.0.0 readiness port (15021)\n"
	    "  --max-connections N    per worker connection pool\n"
	    "  --preserve-source B    inbound: connect to the app from the client address\n"
	    "  --cpu-affinity B       pin worker i to CPU i, keep a flow's hops on one CPU\n"
	    "  --local-shortcut B     outbound to a pod on this node: connect inside it (1 hop)\n");
}

static int d_add(void *arg, const struct workload *w, int netns_fd, char *err, size_t errlen)
{
	struct daemon *d = arg;
	/* the pod's SVID exists before its listeners accept anything */
	int rc = mesh_pod_add(w, err, errlen);

	if (rc)
		return rc;
	rc = inpod_add(d->inpod, w, netns_fd, err, errlen);
	if (rc)
		mesh_pod_del(w->uid);
	else
		authz_pod_add(w); /* a service endpoint candidate */
	return rc;
}

static int d_del(void *arg, const char *uid, char *err, size_t errlen)
{
	struct daemon *d = arg;
	int rc = inpod_del(d->inpod, uid, err, errlen);

	if (rc == 0)
		mesh_pod_del(uid), authz_pod_del(uid);
	return rc;
}

static int d_ready(void *arg)
{
	struct daemon *d = arg;

	return __atomic_load_n(&d->ready, __ATOMIC_ACQUIRE);
}

static int d_readd(void *arg, const struct registry_entry *e, int netns_fd)
{
	struct daemon *d = arg;
	char err[256] = "";
	int rc = d_add(d, &e->w, netns_fd, err, sizeof(err));

	if (rc)
		log_warn("event=restore_failed uid=%s err=\"%s\"", e->w.uid, err);
	else
		log_info("event=restored uid=%s ns=%s name=%s", e->w.uid, e->w.ns, e->w.name);
	return rc;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	/* Two descriptors per proxied connection; take what we are allowed. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int mkdir_parent(const char *path)
{
	char dir[256];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(dir, 0700);
		*p = '/';
	}
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

enum {
	OPT_CONFIG = 256,
	OPT_WORKERS,
	OPT_CTLSOCK,
	OPT_STATE,
	OPT_LOGLEVEL,
	OPT_CONNECT,
	OPT_IDLE,
	OPT_DRAIN,
	OPT_ADMIN,
	OPT_READY,
	OPT_MAXCONN,
	OPT_PRESERVE,
	OPT_AFFINITY,
	OPT_SHORTCUT,
};

static const struct option long_opts[] = {
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "workers", required_argument, NULL, OPT_WORKERS },
	{ "control-socket", required_argument, NULL, OPT_CTLSOCK },
	{ "state-file", required_argument, NULL, OPT_STATE },
	{ "log-level", required_argument, NULL, OPT_LOGLEVEL },
	{ "connect-timeout", required_argument, NULL, OPT_CONNECT },
	{ "idle-timeout", required_argument, NULL, OPT_IDLE },
	{ "drain-timeout", required_argument, NULL, OPT_DRAIN },
	{ "admin-port", required_argument, NULL, OPT_ADMIN },
	{ "readiness-port", required_argument, NULL, OPT_READY },
	{ "max-connections", required_argument, NULL, OPT_MAXCONN },
	{ "preserve-source", required_argument, NULL, OPT_PRESERVE },
	{ "cpu-affinity", required_argument, NULL, OPT_AFFINITY },
	{ "local-shortcut", required_argument, NULL, OPT_SHORTCUT },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const struct {
	int opt;
	const char *section, *key;
} opt_keys[] = {
	{ OPT_WORKERS, "proxy", "workers" },          { OPT_CTLSOCK, "paths", "control_socket" },
	{ OPT_STATE, "paths", "state_file" },         { OPT_LOGLEVEL, "proxy", "log_level" },
	{ OPT_CONNECT, "timeouts", "connect" },       { OPT_IDLE, "timeouts", "idle" },
	{ OPT_DRAIN, "timeouts", "drain" },           { OPT_ADMIN, "ports", "admin" },
	{ OPT_READY, "ports", "readiness" },          { OPT_MAXCONN, "pool", "connections" },
	{ OPT_PRESERVE, "proxy", "preserve_source" }, { OPT_AFFINITY, "proxy", "cpu_affinity" },
	{ OPT_SHORTCUT, "proxy", "local_shortcut" },
};

/* Configuration: the file first, then every flag over it.  Exit status 2
 * on any error, as for a usage error. */
static int load_config(int argc, char **argv, struct np_config *cfg)
{
	char err[512];
	int c;

	config_defaults(cfg);
	/* pass 1: only --config */
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		if (c == OPT_CONFIG && config_load(cfg, optarg, err, sizeof(err))) {
			fprintf(stderr, "ambit-node-proxy: %s\n", err);
			return 2;
		}
	}
	/* pass 2: everything else, reporting errors */
	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		if (c == '?') {
			usage(stderr);
			return 2;
		}
		for (size_t i = 0; i < sizeof(opt_keys) / sizeof(opt_keys[0]); i++) {
			if (opt_keys[i].opt != c)
				continue;
			if (config_set(cfg, opt_keys[i].section, opt_keys[i].key, optarg, err,
			               sizeof(err))) {
				fprintf(stderr, "ambit-node-proxy: --%s: %s\n",
				        long_opts[c - 256].name, err);
				return 2;
			}
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ambit-node-proxy: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return 0;
}

static int run(int argc, char **argv)
{
	struct daemon d;
	sigset_t sigs;
	int sig, rc, n;

	memset(&d, 0, sizeof(d));
	d.node_netns_fd = -1;
	rc = load_config(argc, argv, &d.cfg);
	if (rc)
		return rc;
	log_set_level(d.cfg.log_level);
	raise_nofile();
	{
		char err[512] = "";
		rc = mesh_init(&d.cfg, err, sizeof(err));
		if (rc) {
			log_err("event=startup_failed what=mesh err=\"%s\"", err);
			return 1;
		}
	}

	/* Signals go to this thread only (sigwait below): block them before
	 * any thread is created so every thread inherits the mask. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP); /* re-issue every SVID now */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	{
		char err[512] = "";
		rc = authz_init(&d.cfg, err, sizeof(err));
		if (rc) {
			log_err("event=startup_failed what=policy err=\"%s\"", err);
			mesh_fini();
			return 1;
		}
	}

	d.node_netns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (d.node_netns_fd < 0) {
		log_err("event=startup_failed what=open_node_netns err=%s", strerror(errno));
		return 1;
	}
	n = (int)d.cfg.workers;
	if (n == 0)
		n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > POD_MAX_WORKERS)
		n = POD_MAX_WORKERS;
	rc = telemetry_init(&d.cfg, (unsigned)n); /* metrics and access log, before workers */
	if (rc)
		goto out;
	for (int i = 0; i < n; i++) {
		rc = worker_create((unsigned)i, &d.cfg, d.node_netns_fd, &d.workers[i]);
		if (!rc) {
			rc = worker_start(d.workers[i]);
			if (rc) {
				worker_join(d.workers[i]);
				d.workers[i] = NULL;
			}
		}
		if (rc) {
			log_err("event=startup_failed what=worker err=%s", strerror(-rc));
			goto out;
		}
		d.n_workers++;
	}
	rc = inpod_start(&d.cfg, d.workers, d.n_workers, d.node_netns_fd, &d.inpod);
	if (rc)
		goto out;
	for (unsigned i = 0; i < d.n_workers; i++)
		worker_set_inpod(d.workers[i], d.inpod);
	telemetry_attach(d.workers, d.n_workers, d.inpod);
	mkdir_parent(d.cfg.state_file);
	rc = registry_open(d.cfg.state_file, &d.reg);
	if (rc) {
		log_err("event=startup_failed what=registry path=%s err=%s", d.cfg.state_file,
		        strerror(-rc));
		goto out;
	}
	rc = registry_restore(d.reg, d_readd, &d);
	if (rc < 0) {
		log_err("event=startup_failed what=restore err=%s", strerror(-rc));
		goto out;
	}
	log_info("event=restore_done pods=%d", rc);

	struct ctl_ops ops = { .arg = &d, .add = d_add, .del = d_del, .ready = d_ready };
	rc = control_start(d.cfg.control_socket, &ops, d.reg, &d.ctl);
	if (rc) {
		log_err("event=startup_failed what=control path=%s err=%s", d.cfg.control_socket,
		        strerror(-rc));
		goto out;
	}
	struct admin_src src = { .ready = d_ready,
		                 .arg = &d,
		                 .inpod = d.inpod,
		                 .workers = d.workers,
		                 .n_workers = d.n_workers };
	rc = admin_start(&d.cfg, &src, &d.admin);
	if (rc)
		goto out;
	__atomic_store_n(&d.ready, 1, __ATOMIC_RELEASE);
	log_info("event=ready workers=%u pods=%zu control=%s admin=127.0.0.1:%u", d.n_workers,
	         inpod_count(d.inpod), d.cfg.control_socket, d.cfg.port_admin);

	while (sigwait(&sigs, &sig) != 0 || (sig != SIGTERM && sig != SIGINT))
		if (sig == SIGHUP)
			mesh_renew_now(), authz_reload(), telemetry_reopen();
	log_info("event=shutdown signal=%d drain_ms=%u", sig, d.cfg.drain_ms);
	__atomic_store_n(&d.ready, 0, __ATOMIC_RELEASE);
	rc = 0;
out:
	/* Order: no new requests, no new connections, drain, then the rest. */
	control_stop(d.ctl);
	telemetry_attach(NULL, 0, NULL); /* scrapes stop reading the workers */
	for (unsigned i = 0; i < d.n_workers; i++)
		worker_stop(d.workers[i], d.cfg.drain_ms);
	for (unsigned i = 0; i < d.n_workers; i++)
		worker_join(d.workers[i]);
	admin_stop(d.admin);
	inpod_stop(d.inpod);
	mesh_fini();
	authz_fini();
	telemetry_fini(); /* after the workers: writes the last access log lines */
	if (d.reg)
		registry_close(d.reg);
	if (d.node_netns_fd >= 0)
		close(d.node_netns_fd);
	log_info("event=exit rc=%d", rc ? 1 : 0);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "ctl") == 0)
		return ctl_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "check-config") == 0)
		return checkconfig_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "run") == 0) {
		argv[1] = argv[0];
		return run(argc - 1, argv + 1);
	}
	return run(argc, argv);
}
