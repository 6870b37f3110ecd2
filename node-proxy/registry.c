/*
 * registry: enrolled workloads in memory (a uid-keyed array, grown on
 * demand up to REGISTRY_MAX) and on disk (one JSON file rewritten
 * atomically after every change).  The in-memory table only changes when
 * the file write succeeded, so what a caller was told matches what a
 * restart will see.
 *
 * State file, version 1:
 *   {"version": 1, "workloads": [ {<ctlproto workload>,
 *                                  "netns_dev": N, "netns_ino": N}, ... ]}
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <jansson.h>

#include "node-proxy/ctlproto.h"
#include "node-proxy/log.h"
#include "node-proxy/registry.h"

#define STATE_VERSION  1
#define STATE_MAX_SIZE (64u << 20) /* REGISTRY_MAX full workloads fit easily */

struct registry {
	pthread_mutex_t mu;
	char *path; /* NULL: memory only (tests) */
	size_t n, cap;
	struct registry_entry *e; /* e[0..n), order of insertion */
};

int registry_open(const char *state_path, struct registry **out)
{
	struct registry *r;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (state_path && !(r->path = strdup(state_path))) {
		free(r);
		return -ENOMEM;
	}
	pthread_mutex_init(&r->mu, NULL);
	*out = r;
	return 0;
}

void registry_close(struct registry *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r->e);
	free(r->path);
	free(r);
}

static ssize_t find(const struct registry *r, const char *uid)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		if (!strcmp(r->e[i].w.uid, uid))
			return (ssize_t)i;
	return -1;
}

static int reserve(struct registry *r, size_t want)
{
	struct registry_entry *ne;
	size_t cap;

	if (want <= r->cap)
		return 0;
	if (want > REGISTRY_MAX)
		return -ENOSPC;
	cap = r->cap ? r->cap * 2 : 16;
	if (cap > REGISTRY_MAX)
		cap = REGISTRY_MAX;
	if (cap < want)
		cap = want;
	ne = realloc(r->e, cap * sizeof(*ne));
	if (!ne)
		return -ENOMEM;
	r->e = ne;
	r->cap = cap;
	return 0;
}

static json_t *entry_to_json(const struct registry_entry *e)
{
	json_t *o = ctl_workload_to_json(&e->w);

	if (!o)
		return NULL;
	/* uint64 stored bit-for-bit in jansson's signed 64-bit integer. */
	if (json_object_set_new(o, "netns_dev", json_integer((json_int_t)e->netns_dev)) ||
	    json_object_set_new(o, "netns_ino", json_integer((json_int_t)e->netns_ino))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, r = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
out:
	free(copy);
	return r;
}

/* Write the whole table to the state file: temp file beside it, fsync,
 * rename over, fsync the directory.  Called with r->mu held. */
static int persist(struct registry *r)
{
	json_t *root = NULL, *arr;
	char *text = NULL, *tmp = NULL;
	size_t i;
	int fd = -1, ret;

	if (!r->path)
		return 0;
	ret = -ENOMEM;
	root = json_object();
	arr = json_array();
	if (!root || !arr || json_object_set_new(root, "version", json_integer(STATE_VERSION)) ||
	    json_object_set_new(root, "workloads", arr))
		goto out;
	for (i = 0; i < r->n; i++)
		if (json_array_append_new(arr, entry_to_json(&r->e[i])))
			goto out;
	text = json_dumps(root, JSON_INDENT(1));
	if (!text || asprintf(&tmp, "%s.tmp", r->path) < 0) {
		tmp = NULL;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		log_err("event=registry_write_failed path=%s err=\"%s\"", tmp, strerror(errno));
		goto out;
	}
	if ((ret = write_all(fd, text, strlen(text))) || (ret = write_all(fd, "\n", 1)))
		goto fail_tmp;
	if (fsync(fd) < 0) {
		ret = -errno;
		goto fail_tmp;
	}
	ret = close(fd) < 0 ? -errno : 0;
	fd = -1;
	if (ret)
		goto fail_tmp;
	if (rename(tmp, r->path) < 0) {
		ret = -errno;
		goto fail_tmp;
	}
	/* The new file is in place: from here the table must match it, so a
	 * failed directory fsync is logged but not returned (undoing the
	 * in-memory change would make memory and disk disagree). */
	ret = fsync_dir_of(r->path);
	if (ret)
		log_err("event=registry_dir_fsync_failed path=%s err=\"%s\"", r->path,
		        strerror(-ret));
	ret = 0;
	goto out;
fail_tmp:
	log_err("event=registry_write_failed path=%s err=\"%s\"", r->path, strerror(-ret));
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(text);
	json_decref(root);
	return ret;
}

int registry_put(struct registry *r, const struct registry_entry *e)
{
	struct registry_entry old;
	ssize_t i;
	int ret;

	if (!e->w.uid[0])
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	i = find(r, e->w.uid);
	if (i >= 0) {
		old = r->e[i];
		r->e[i] = *e;
		ret = persist(r);
		if (ret)
			r->e[i] = old;
	} else {
		ret = reserve(r, r->n + 1);
		if (ret)
			goto out;
		r->e[r->n++] = *e;
		ret = persist(r);
		if (ret)
			r->n--;
	}
out:
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int registry_del(struct registry *r, const char *uid)
{
	struct registry_entry old;
	ssize_t i;
	int ret = 0;

	pthread_mutex_lock(&r->mu);
	i = find(r, uid);
	if (i < 0)
		goto out;
	old = r->e[i];
	memmove(&r->e[i], &r->e[i + 1], (r->n - (size_t)i - 1) * sizeof(r->e[0]));
	r->n--;
	ret = persist(r);
	if (ret) {
		/* Put it back where it was. */
		memmove(&r->e[i + 1], &r->e[i], (r->n - (size_t)i) * sizeof(r->e[0]));
		r->e[i] = old;
		r->n++;
	}
out:
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int registry_get(struct registry *r, const char *uid, struct registry_entry *out)
{
	ssize_t i;

	pthread_mutex_lock(&r->mu);
	i = find(r, uid);
	if (i >= 0)
		*out = r->e[i];
	pthread_mutex_unlock(&r->mu);
	return i >= 0 ? 0 : -ENOENT;
}

size_t registry_list(struct registry *r, struct registry_entry *out, size_t max)
{
	size_t n;

	pthread_mutex_lock(&r->mu);
	n = r->n < max ? r->n : max;
	if (n)
		memcpy(out, r->e, n * sizeof(*out));
	pthread_mutex_unlock(&r->mu);
	return n;
}

size_t registry_uids(struct registry *r, char (*out)[WL_UID_MAX], size_t max)
{
	size_t i, n;

	pthread_mutex_lock(&r->mu);
	n = r->n < max ? r->n : max;
	for (i = 0; i < n; i++)
		memcpy(out[i], r->e[i].w.uid, WL_UID_MAX);
	pthread_mutex_unlock(&r->mu);
	return n;
}

size_t registry_count(struct registry *r)
{
	size_t n;

	pthread_mutex_lock(&r->mu);
	n = r->n;
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* --- restore -------------------------------------------------------------- */

static void set_aside(const char *path, const char *why)
{
	char *bad = NULL;

	if (asprintf(&bad, "%s.corrupt", path) < 0)
		return;
	if (rename(path, bad) < 0)
		log_err("event=registry_corrupt path=%s reason=\"%s\" moved=no err=\"%s\"", path,
		        why, strerror(errno));
	else
		log_err("event=registry_corrupt path=%s reason=\"%s\" moved_to=%s starting=empty",
		        path, why, bad);
	free(bad);
}

/* Read the state file into a JSON array of workloads.  Missing file: an
 * empty array.  Unreadable or malformed: set aside, empty array. */
static int load(const char *path, json_t **out)
{
	json_error_t jerr;
	json_t *root = NULL, *arr, *v;
	char why[256];
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, ret = 0;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT) {
			*out = json_array();
			return *out ? 0 : -ENOMEM;
		}
		ret = -errno;
		log_err("event=registry_open_failed path=%s err=\"%s\"", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > STATE_MAX_SIZE) {
		snprintf(why, sizeof(why), "not a regular file of at most %u bytes",
		         STATE_MAX_SIZE);
		goto corrupt;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	root = json_loadb(buf, got, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(why, sizeof(why), "line %d: %s", jerr.line, jerr.text);
		goto corrupt;
	}
	v = json_object_get(root, "version");
	if (!json_is_integer(v) || json_integer_value(v) != STATE_VERSION) {
		snprintf(why, sizeof(why), "missing or unsupported \"version\" (want %d)",
		         STATE_VERSION);
		goto corrupt;
	}
	arr = json_object_get(root, "workloads");
	if (!json_is_array(arr)) {
		snprintf(why, sizeof(why), "\"workloads\" is not an array");
		goto corrupt;
	}
	*out = json_incref(arr);
	goto out;
corrupt:
	close(fd);
	fd = -1;
	set_aside(path, why);
	*out = json_array();
	ret = *out ? 0 : -ENOMEM;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	json_decref(root);
	return ret;
}

static int entry_from_json(const json_t *j, struct registry_entry *e, char *err, size_t errlen)
{
	const json_t *dev = json_object_get(j, "netns_dev"), *ino = json_object_get(j, "netns_ino");
	int r;

	memset(e, 0, sizeof(*e));
	r = ctl_workload_from_json(j, &e->w, err, errlen);
	if (r)
		return r;
	if (!json_is_integer(dev) || !json_is_integer(ino) || !e->w.netns_path[0]) {
		snprintf(err, errlen, "no netns identity (path, netns_dev, netns_ino)");
		return -EINVAL;
	}
	e->netns_dev = (uint64_t)json_integer_value(dev);
	e->netns_ino = (uint64_t)json_integer_value(ino);
	return 0;
}

int registry_restore(struct registry *r,
                     int (*readd)(void *arg, const struct registry_entry *e, int netns_fd),
                     void *arg)
{
	struct registry_entry *e = NULL;
	json_t *arr = NULL, *v;
	char err[256];
	size_t i;
	int ret, restored = 0;

	if (!r->path)
		return 0;
	ret = load(r->path, &arr);
	if (ret)
		return ret;
	e = malloc(sizeof(*e));
	if (!e) {
		ret = -ENOMEM;
		goto out;
	}
	/* readd runs without the lock: it may take a while (setns, binds)
	 * and must not block a concurrent registry_list. */
	json_array_foreach(arr, i, v)
	{
		struct statfs sf;
		struct stat st;
		int fd;

		if (entry_from_json(v, e, err, sizeof(err))) {
			log_warn("event=registry_drop index=%zu reason=\"%s\"", i, err);
			continue;
		}
		pthread_mutex_lock(&r->mu);
		ret = find(r, e->w.uid) >= 0 ? -EEXIST : reserve(r, r->n + 1);
		pthread_mutex_unlock(&r->mu);
		if (ret) {
			log_warn("event=registry_drop uid=%s reason=\"%s\"", e->w.uid,
			         ret == -EEXIST ? "uid already registered" : "registry full");
			continue;
		}
		fd = open(e->w.netns_path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			log_warn("event=registry_drop uid=%s ns=%s name=%s netns=%s reason=\"%s\"",
			         e->w.uid, e->w.ns, e->w.name, e->w.netns_path, strerror(errno));
			continue;
		}
		if (fstat(fd, &st) < 0 || (uint64_t)st.st_dev != e->netns_dev ||
		    (uint64_t)st.st_ino != e->netns_ino || fstatfs(fd, &sf) < 0 ||
		    sf.f_type != NSFS_MAGIC) {
			log_warn("event=registry_drop uid=%s ns=%s name=%s netns=%s "
			         "reason=\"netns path now names another namespace\"",
			         e->w.uid, e->w.ns, e->w.name, e->w.netns_path);
			close(fd);
			continue;
		}
		ret = readd ? readd(arg, e, fd) : 0;
		close(fd);
		if (ret) {
			log_warn(
			    "event=registry_drop uid=%s ns=%s name=%s reason=\"re-add failed: %s\"",
			    e->w.uid, e->w.ns, e->w.name, strerror(ret < 0 ? -ret : ret));
			continue;
		}
		/* Capacity was reserved above; restore runs before the control
		 * server starts, so nothing else inserted meanwhile. */
		pthread_mutex_lock(&r->mu);
		if (r->n < r->cap) {
			r->e[r->n++] = *e;
			restored++;
		}
		pthread_mutex_unlock(&r->mu);
	}
	/* Rewrite so that dropped entries are gone from disk too. */
	pthread_mutex_lock(&r->mu);
	ret = persist(r);
	pthread_mutex_unlock(&r->mu);
	if (ret == 0)
		ret = restored;
out:
	free(e);
	json_decref(arr);
	return ret;
}
