#include "redirector/netns.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

/* The file behind @fd is a network namespace, or -EINVAL. */
static int is_netns(int fd, const char *path, struct textbuf *err)
{
	struct statfs sfs;
	int type;

	if (fstatfs(fd, &sfs) || (unsigned long)sfs.f_type != NSFS_MAGIC) {
		tb_printf(err,
		          "%s is not a namespace file (expected /run/netns/NAME or "
		          "/proc/PID/ns/net)",
		          path);
		return -EINVAL;
	}
	type = ioctl(fd, NS_GET_NSTYPE);
	if (type >= 0 && type != CLONE_NEWNET) {
		tb_printf(err, "%s is a namespace but not a network namespace", path);
		return -EINVAL;
	}
	return 0;
}

/* Inode of the initial network namespace on kernels that give the init
 * namespaces fixed numbers (PROC_NET_INIT_INO, 0xEFFFFFF9). */
#define NET_INIT_INO 0xEFFFFFF9UL

static int same_file(int fd, const char *path)
{
	struct stat a, b;

	if (fstat(fd, &a) || stat(path, &b))
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Refuse the host's network namespace: capture rules there would take
 * the whole machine's TCP into a proxy.  /proc/1/ns/net is not always
 * readable (PID 1 may deny it even to root), so the fixed inode number of
 * the initial namespace is checked as well. */
static int is_host_netns(int fd)
{
	struct stat a;

	if (!fstat(fd, &a) && (unsigned long)a.st_ino == NET_INIT_INO)
		return 1;
	return same_file(fd, "/proc/1/ns/net");
}

int netns_enter(const char *path, struct netns_guard *g, struct textbuf *err)
{
	int rc;

	g->orig_fd = -1;
	g->target_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (g->target_fd < 0) {
		rc = -errno;
		tb_printf(err, "cannot open network namespace %s: %s", path, strerror(-rc));
		return rc;
	}
	rc = is_netns(g->target_fd, path, err);
	if (rc)
		goto fail;
	if (is_host_netns(g->target_fd)) {
		tb_printf(err, "%s is the host's network namespace; refusing to touch it", path);
		rc = -EBUSY;
		goto fail;
	}
	/* The caller lives outside the pod (CNI plugin, node proxy, an
	 * operator's shell).  Pointing at its own namespace is a mistake that
	 * could capture the caller's traffic, so it is refused too. */
	if (same_file(g->target_fd, "/proc/thread-self/ns/net")) {
		tb_printf(err,
		          "%s is the caller's own network namespace; run ambit-redirect from "
		          "outside the pod",
		          path);
		rc = -EBUSY;
		goto fail;
	}
	/* thread-self: another thread of this process may live elsewhere */
	g->orig_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (g->orig_fd < 0) {
		rc = -errno;
		tb_printf(err, "cannot open this thread's network namespace: %s", strerror(-rc));
		goto fail;
	}
	if (setns(g->target_fd, CLONE_NEWNET)) {
		rc = -errno;
		tb_printf(err, "cannot enter network namespace %s: %s%s", path, strerror(-rc),
		          rc == -EPERM ? " (needs CAP_SYS_ADMIN; run as root)" : "");
		goto fail;
	}
	return 0;
fail:
	if (g->orig_fd >= 0)
		close(g->orig_fd);
	close(g->target_fd);
	g->orig_fd = g->target_fd = -1;
	return rc;
}

void netns_leave(struct netns_guard *g)
{
	if (setns(g->orig_fd, CLONE_NEWNET)) {
		fprintf(stderr,
		        "ambit-redirect: cannot return to the original network namespace: "
		        "%s; aborting\n",
		        strerror(errno));
		abort();
	}
	close(g->orig_fd);
	close(g->target_fd);
	g->orig_fd = g->target_fd = -1;
}
