/*
 * confwatch: inotify on the config directories, a timerfd for the debounce,
 * both behind one epoll fd so the owner polls a single descriptor.
 *
 * Any event in a watched directory (a file closed after writing, renamed
 * in - what editors and Kubernetes' ..data symlink swap do -, deleted)
 * (re)arms the timer; when it fires, each directory is loaded into a new
 * set, and only a set that loaded without a single error replaces the one
 * in force.  Policies and services are independent: a broken services file
 * does not hold back a policy fix.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "node-proxy/confwatch.h"
#include "node-proxy/log.h"

#define WATCH_MASK                                                                                 \
	(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF |   \
	 IN_MOVE_SELF | IN_ATTRIB)

struct confwatch {
	struct confwatch_opts o;
	char *policy_dir, *services_dir, *root_ns;
	int epfd, infd, tfd;
	int wd_pol, wd_svc;   /* -1: not watched (unset, or the directory went away) */
	pthread_mutex_t lock; /* ps, ss and stats */
	struct policy_set *ps;
	struct service_set *ss;
	atomic_uint_fast64_t gen;
	uint64_t pending_since_ms; /* first change not yet loaded, 0: none */
	bool dirty_pol, dirty_svc; /* which directory changed since its last load */
	struct confwatch_stats st;
};

#define CONFWATCH_MAX_DELAY_MS 2000

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void add_watches(struct confwatch *cw)
{
	if (cw->policy_dir && cw->wd_pol < 0)
		cw->wd_pol = inotify_add_watch(cw->infd, cw->policy_dir, WATCH_MASK);
	if (cw->services_dir && cw->wd_svc < 0)
		cw->wd_svc = inotify_add_watch(cw->infd, cw->services_dir, WATCH_MASK);
}

static void log_errors(const char *what, const struct conf_errors *e)
{
	for (unsigned i = 0; i < e->n; i++) {
		char m[CONFDIR_ERR_LEN];
		/* keep the key=value line parseable: no '"' inside the quoted value */
		snprintf(m, sizeof(m), "%s", e->msg[i]);
		for (char *c = m; *c; c++)
			if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
				*c = '\'';
		log_warn("event=config_refused kind=%s error=\"%s\"", what, m);
	}
	if (e->dropped)
		log_warn("event=config_refused kind=%s more_errors=%u", what, e->dropped);
}

/* Load what is configured; swap what loaded.  1: something swapped. */
static int reload(struct confwatch *cw, bool initial, struct conf_errors *err)
{
	struct policy_set *ps = NULL, *old_ps = NULL;
	struct service_set *ss = NULL, *old_ss = NULL;
	struct conf_errors e;
	bool pol_ok = false, svc_ok = false;
	int rc;

	add_watches(cw);
	if (initial)
		cw->dirty_pol = cw->dirty_svc = true;
	if (cw->policy_dir && cw->dirty_pol) {
		cw->dirty_pol = false;
		conf_errors_init(&e);
		rc = policy_load_dir(cw->policy_dir, cw->root_ns, &ps, &e);
		pol_ok = rc == 0;
		pthread_mutex_lock(&cw->lock);
		if (pol_ok) {
			cw->st.policy_reloads_ok++;
		} else {
			cw->st.policy_reloads_failed++;
			snprintf(cw->st.last_error, sizeof(cw->st.last_error), "%s",
			         e.n ? e.msg[0] : "policy load failed");
		}
		pthread_mutex_unlock(&cw->lock);
		if (!pol_ok) {
			log_errors("policy", &e);
			conf_errors_merge(err, &e);
		}
	}
	if (cw->services_dir && cw->dirty_svc) {
		cw->dirty_svc = false;
		conf_errors_init(&e);
		rc = services_load_dir(cw->services_dir, &ss, &e);
		svc_ok = rc == 0;
		pthread_mutex_lock(&cw->lock);
		if (svc_ok) {
			cw->st.services_reloads_ok++;
		} else {
			cw->st.services_reloads_failed++;
			snprintf(cw->st.last_error, sizeof(cw->st.last_error), "%s",
			         e.n ? e.msg[0] : "services load failed");
		}
		pthread_mutex_unlock(&cw->lock);
		if (!svc_ok) {
			log_errors("services", &e);
			conf_errors_merge(err, &e);
		}
	}
	if (initial && ((cw->policy_dir && !pol_ok) || (cw->services_dir && !svc_ok))) {
		policy_set_put(ps);
		services_set_put(ss);
		return -EINVAL;
	}
	if (!pol_ok && !svc_ok)
		return 0;

	pthread_mutex_lock(&cw->lock);
	if (pol_ok) {
		old_ps = cw->ps;
		cw->ps = ps;
	}
	if (svc_ok) {
		/* counts and ejections carry over to the services that stay */
		services_adopt_state(ss, cw->ss);
		old_ss = cw->ss;
		cw->ss = ss;
	}
	cw->st.generation = atomic_fetch_add(&cw->gen, 1) + 1;
	ps = policy_set_get(cw->ps);
	ss = services_set_get(cw->ss);
	pthread_mutex_unlock(&cw->lock);

	log_info("event=config_loaded generation=%llu policies=%u services=%u%s%s",
	         (unsigned long long)atomic_load(&cw->gen), policy_set_count(ps),
	         services_count(ss), pol_ok ? " policy_dir=reloaded" : "",
	         svc_ok ? " services_dir=reloaded" : "");
	if (cw->o.on_change)
		cw->o.on_change(cw->o.arg, ps, ss);
	policy_set_put(ps);
	services_set_put(ss);
	policy_set_put(old_ps);
	services_set_put(old_ss);
	return 1;
}

void confwatch_close(struct confwatch *cw)
{
	if (!cw)
		return;
	if (cw->epfd >= 0)
		close(cw->epfd);
	if (cw->infd >= 0)
		close(cw->infd);
	if (cw->tfd >= 0)
		close(cw->tfd);
	policy_set_put(cw->ps);
	services_set_put(cw->ss);
	pthread_mutex_destroy(&cw->lock);
	free(cw->policy_dir);
	free(cw->services_dir);
	free(cw->root_ns);
	free(cw);
}

int confwatch_open(const struct confwatch_opts *o, struct confwatch **out, struct conf_errors *err)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct confwatch *cw;
	int rc;

	if (o->root_ns && !conf_valid_dns_label(o->root_ns)) {
		conf_error(err, "root namespace", 0, "bad namespace \"%s\"", o->root_ns);
		return -EINVAL;
	}
	cw = calloc(1, sizeof(*cw));
	if (!cw)
		return -ENOMEM;
	cw->o = *o;
	cw->epfd = cw->infd = cw->tfd = -1;
	cw->wd_pol = cw->wd_svc = -1;
	pthread_mutex_init(&cw->lock, NULL);
	if (!cw->o.debounce_ms)
		cw->o.debounce_ms = 100;
	if ((o->policy_dir && !(cw->policy_dir = strdup(o->policy_dir))) ||
	    (o->services_dir && !(cw->services_dir = strdup(o->services_dir))) ||
	    !(cw->root_ns = strdup(o->root_ns ? o->root_ns : POLICY_DEFAULT_ROOT_NS))) {
		rc = -ENOMEM;
		goto fail;
	}
	cw->epfd = epoll_create1(EPOLL_CLOEXEC);
	cw->infd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	cw->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (cw->epfd < 0 || cw->infd < 0 || cw->tfd < 0) {
		rc = -errno;
		goto fail;
	}
	ev.data.fd = cw->infd;
	if (epoll_ctl(cw->epfd, EPOLL_CTL_ADD, cw->infd, &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	ev.data.fd = cw->tfd;
	if (epoll_ctl(cw->epfd, EPOLL_CTL_ADD, cw->tfd, &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	rc = reload(cw, true, err);
	if (rc < 0)
		goto fail;
	*out = cw;
	return 0;
fail:
	confwatch_close(cw);
	return rc;
}

int confwatch_fd(const struct confwatch *cw)
{
	return cw->epfd;
}

static void arm(struct confwatch *cw)
{
	struct itimerspec its = { 0 };

	its.it_value.tv_sec = cw->o.debounce_ms / 1000;
	its.it_value.tv_nsec = (long)(cw->o.debounce_ms % 1000) * 1000000L;
	timerfd_settime(cw->tfd, 0, &its, NULL);
}

int confwatch_process(struct confwatch *cw)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool changed = false;
	uint64_t ticks;
	ssize_t n;

	for (;;) {
		n = read(cw->infd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			if (ev->wd == cw->wd_pol)
				cw->dirty_pol = true;
			if (ev->wd == cw->wd_svc)
				cw->dirty_svc = true;
			if (ev->mask & IN_IGNORED) {
				/* the directory itself went away: watch it again once back */
				if (ev->wd == cw->wd_pol)
					cw->wd_pol = -1;
				if (ev->wd == cw->wd_svc)
					cw->wd_svc = -1;
			}
			changed = true;
			p += sizeof(*ev) + ev->len;
		}
	}
	if (n < 0 && errno != EAGAIN)
		return -errno;
	n = read(cw->tfd, &ticks, sizeof(ticks));
	if (changed) {
		uint64_t now = now_ms();
		if (!cw->pending_since_ms)
			cw->pending_since_ms = now;
		/* the quiet period restarts with every change, but a directory
		 * that never stays quiet is still loaded every CONFWATCH_MAX_DELAY */
		if (now - cw->pending_since_ms < CONFWATCH_MAX_DELAY_MS) {
			arm(cw);
			return 0;
		}
	} else if (n != sizeof(ticks)) {
		return 0;
	}
	cw->pending_since_ms = 0;
	return reload(cw, false, NULL);
}

int confwatch_reload(struct confwatch *cw)
{
	cw->dirty_pol = cw->dirty_svc = true;
	return reload(cw, false, NULL);
}

struct policy_set *confwatch_policies(struct confwatch *cw)
{
	struct policy_set *ps;

	pthread_mutex_lock(&cw->lock);
	ps = policy_set_get(cw->ps);
	pthread_mutex_unlock(&cw->lock);
	return ps;
}

struct service_set *confwatch_services(struct confwatch *cw)
{
	struct service_set *ss;

	pthread_mutex_lock(&cw->lock);
	ss = services_set_get(cw->ss);
	pthread_mutex_unlock(&cw->lock);
	return ss;
}

uint64_t confwatch_generation(const struct confwatch *cw)
{
	return atomic_load_explicit(&cw->gen, memory_order_acquire);
}

void confwatch_get_stats(struct confwatch *cw, struct confwatch_stats *st)
{
	pthread_mutex_lock(&cw->lock);
	*st = cw->st;
	pthread_mutex_unlock(&cw->lock);
}
