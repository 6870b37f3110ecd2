/*
 * Unit tests of cni-plugin/state.c: attachment records (put/get/drop/list),
 * corrupt files, and the per-network lock (GC exclusive against ADD/DEL
 * shared).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cni-plugin/state.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/ambit-cni-state.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct cni_state rec(const char *cid, const char *ifname, const char *uid)
{
	struct cni_state s;

	memset(&s, 0, sizeof(s));
	snprintf(s.container_id, sizeof(s.container_id), "%s", cid);
	snprintf(s.ifname, sizeof(s.ifname), "%s", ifname);
	snprintf(s.uid, sizeof(s.uid), "%s", uid);
	snprintf(s.netns, sizeof(s.netns), "/run/netns/%s", cid);
	return s;
}

static void test_put_get_drop(void **state)
{
	struct state_dir sd;
	struct cni_state s = rec("c1", "eth0", "uid-1"), got;
	char path[256];
	struct stat st;

	(void)state;
	assert_int_equal(state_open(&sd, dir, "net", 0), 0);
	/* the directory is created private */
	snprintf(path, sizeof(path), "%s/net", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(state_get(&sd, "c1", "eth0", &got), -ENOENT);
	s.ipv6 = 1;
	assert_int_equal(state_put(&sd, &s), 0);
	assert_int_equal(state_get(&sd, "c1", "eth0", &got), 0);
	assert_string_equal(got.uid, "uid-1");
	assert_string_equal(got.netns, "/run/netns/c1");
	assert_int_equal(got.ipv6, 1);
	/* another ifname of the same container is another record */
	assert_int_equal(state_get(&sd, "c1", "net1", &got), -ENOENT);
	/* overwrite */
	s = rec("c1", "eth0", "uid-2");
	assert_int_equal(state_put(&sd, &s), 0);
	assert_int_equal(state_get(&sd, "c1", "eth0", &got), 0);
	assert_string_equal(got.uid, "uid-2");
	assert_int_equal(got.ipv6, 0);
	assert_int_equal(state_drop(&sd, "c1", "eth0"), 0);
	assert_int_equal(state_get(&sd, "c1", "eth0", &got), -ENOENT);
	assert_int_equal(state_drop(&sd, "c1", "eth0"), 0); /* idempotent */
	state_close(&sd);
}

static void test_list_skips_corrupt_and_hidden(void **state)
{
	struct state_dir sd;
	struct cni_state *v = NULL, s;
	char path[256];
	int n, fd;

	(void)state;
	assert_int_equal(state_open(&sd, dir, "", 0), 0); /* "" -> "_" */
	for (int i = 0; i < 40; i++) {
		char cid[16], uid[16];

		snprintf(cid, sizeof(cid), "c%d", i);
		snprintf(uid, sizeof(uid), "u%d", i);
		s = rec(cid, "eth0", uid);
		assert_int_equal(state_put(&sd, &s), 0);
	}
	snprintf(path, sizeof(path), "%s/_/garbage.eth0", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{not json", 9), 9);
	close(fd);
	snprintf(path, sizeof(path), "%s/_/nouid.eth0", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\"containerID\":\"x\"}", 19), 19);
	close(fd);
	assert_int_equal(state_get(&sd, "garbage", "eth0", &s), -EINVAL);
	n = state_list(&sd, &v);
	assert_int_equal(n, 40);
	for (int i = 0; i < n; i++)
		assert_true(v[i].uid[0] == 'u');
	free(v);
	state_close(&sd);
}

static void test_names_bounded(void **state)
{
	struct state_dir sd;
	char longdir[600];

	(void)state;
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_int_equal(state_open(&sd, longdir, "net", 0), -ENAMETOOLONG);
	assert_int_equal(sd.dirfd, -1);
	state_close(&sd); /* safe after a failed open */
}

static void test_lock_exclusive_vs_shared(void **state)
{
	struct state_dir a, b;
	char path[256];
	int fd;

	(void)state;
	assert_int_equal(state_open(&a, dir, "net", 0), 0);
	assert_int_equal(state_open(&b, dir, "net", 0), 0); /* two shared: fine */
	snprintf(path, sizeof(path), "%s/net/.lock", dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	/* a GC (exclusive) must wait while ADD/DEL hold the lock shared */
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	state_close(&a);
	state_close(&b);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
	close(fd);
	assert_int_equal(state_open(&a, dir, "net", 1), 0);
	fd = open(path, O_RDWR);
	assert_int_equal(flock(fd, LOCK_SH | LOCK_NB), -1);
	close(fd);
	state_close(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_drop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_skips_corrupt_and_hidden, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_names_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_exclusive_vs_shared, setup, teardown),
	};

	return cmocka_run_group_tests_name("cni_state", tests, NULL, NULL);
}
