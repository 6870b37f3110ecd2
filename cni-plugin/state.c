/*
 * state: per-attachment records in a directory, via *at() calls on one
 * directory fd so that the network name is resolved once.
 */
#include "cni-plugin/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_FILE_MAX 4096

static int mkdir_p(const char *path)
{
	char buf[512];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		buf[i] = path[i];
	}
	return 0;
}

int state_open(struct state_dir *sd, const char *dir, const char *network, int exclusive)
{
	char path[512];
	int r;

	sd->dirfd = -1;
	sd->lockfd = -1;
	r = snprintf(path, sizeof(path), "%s/%s", dir, network[0] ? network : "_");
	if (r < 0 || (size_t)r >= sizeof(path))
		return -ENAMETOOLONG;
	r = mkdir_p(path);
	if (r)
		return r;
	sd->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sd->dirfd < 0)
		return -errno;
	sd->lockfd = openat(sd->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sd->lockfd < 0)
		goto fail;
	while (flock(sd->lockfd, exclusive ? LOCK_EX : LOCK_SH) < 0)
		if (errno != EINTR)
			goto fail;
	return 0;
fail:
	r = -errno;
	state_close(sd);
	return r;
}

void state_close(struct state_dir *sd)
{
	if (sd->lockfd >= 0)
		close(sd->lockfd); /* releases the flock */
	if (sd->dirfd >= 0)
		close(sd->dirfd);
	sd->lockfd = -1;
	sd->dirfd = -1;
}

static int file_name(char *buf, size_t cap, const char *cid, const char *ifname)
{
	int r = snprintf(buf, cap, "%s.%s", cid, ifname);

	return r < 0 || (size_t)r >= cap ? -ENAMETOOLONG : 0;
}

int state_put(struct state_dir *sd, const struct cni_state *s)
{
	char name[CNI_CONTAINERID_MAX + CNI_IFNAME_MAX + 2];
	char tmp[sizeof(name) + 32];
	char *text = NULL;
	json_t *j;
	size_t len;
	int fd = -1, r;

	r = file_name(name, sizeof(name), s->container_id, s->ifname);
	if (r)
		return r;
	snprintf(tmp, sizeof(tmp), ".tmp.%d.%s", (int)getpid(), s->ifname);
	j = json_pack("{s:s, s:s, s:s, s:s, s:b}", "containerID", s->container_id, "ifname",
	              s->ifname, "uid", s->uid, "netns", s->netns, "ipv6", s->ipv6);
	if (!j)
		return -ENOMEM;
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	fd = openat(sd->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (write(fd, text, len) != (ssize_t)len) {
		r = errno ? -errno : -EIO;
		goto out_unlink;
	}
	/* No fsync: rename is atomic against crashes of this process, and
	 * after a power loss no pod (nor its netns) survives to need the
	 * record.  stateDir is on tmpfs (/run) by default anyway. */
	if (renameat(sd->dirfd, tmp, sd->dirfd, name) < 0) {
		r = -errno;
		goto out_unlink;
	}
	r = 0;
	goto out;
out_unlink:
	unlinkat(sd->dirfd, tmp, 0);
out:
	if (fd >= 0)
		close(fd);
	free(text);
	return r;
}

static int copy_field(json_t *j, const char *key, char *dst, size_t cap)
{
	json_t *v = json_object_get(j, key);

	if (!json_is_string(v) || json_string_length(v) >= cap)
		return -EINVAL;
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int read_record(int dirfd, const char *name, struct cni_state *s)
{
	char buf[STATE_FILE_MAX];
	json_t *j;
	ssize_t n;
	int fd, r;

	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf));
	r = n < 0 ? -errno : 0;
	close(fd);
	if (r)
		return r;
	if (n == (ssize_t)sizeof(buf))
		return -EINVAL;
	j = json_loadb(buf, (size_t)n, 0, NULL);
	if (!j)
		return -EINVAL;
	memset(s, 0, sizeof(*s));
	if (copy_field(j, "containerID", s->container_id, sizeof(s->container_id)) ||
	    copy_field(j, "ifname", s->ifname, sizeof(s->ifname)) ||
	    copy_field(j, "uid", s->uid, sizeof(s->uid)) ||
	    copy_field(j, "netns", s->netns, sizeof(s->netns)))
		r = -EINVAL;
	s->ipv6 = json_is_true(json_object_get(j, "ipv6"));
	json_decref(j);
	return r;
}

int state_get(struct state_dir *sd, const char *container_id, const char *ifname,
              struct cni_state *s)
{
	char name[CNI_CONTAINERID_MAX + CNI_IFNAME_MAX + 2];
	int r = file_name(name, sizeof(name), container_id, ifname);

	return r ? r : read_record(sd->dirfd, name, s);
}

int state_drop(struct state_dir *sd, const char *container_id, const char *ifname)
{
	char name[CNI_CONTAINERID_MAX + CNI_IFNAME_MAX + 2];
	int r = file_name(name, sizeof(name), container_id, ifname);

	if (r)
		return r;
	if (unlinkat(sd->dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int state_list(struct state_dir *sd, struct cni_state **out)
{
	struct cni_state *v = NULL, *nv;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd;

	*out = NULL;
	fd = dup(sd->dirfd);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue; /* ., .., .lock, temp files */
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		if (read_record(sd->dirfd, de->d_name, &v[n]) == 0)
			n++;
	}
	closedir(d);
	*out = v;
	return (int)n;
}
