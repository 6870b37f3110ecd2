/*
 * registry: the table, its persistence, and restore against real network
 * namespace inodes (/proc/self/ns/net).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "node-proxy/registry.h"

struct fx {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/ambit-reg.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/state.json", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void entry(struct registry_entry *e, const char *uid, const char *netns)
{
	struct stat st;

	memset(e, 0, sizeof(*e));
	snprintf(e->w.uid, sizeof(e->w.uid), "%s", uid);
	strcpy(e->w.ns, "default");
	snprintf(e->w.name, sizeof(e->w.name), "pod-%s", uid);
	strcpy(e->w.sa, "default");
	snprintf(e->w.netns_path, sizeof(e->w.netns_path), "%s", netns);
	e->w.n_ips = 1;
	e->w.ips[0].family = AF_INET;
	inet_pton(AF_INET, "10.0.0.9", &e->w.ips[0].v4);
	e->w.n_labels = 1;
	strcpy(e->w.labels[0].key, "app");
	strcpy(e->w.labels[0].val, uid);
	if (stat(netns, &st) == 0) {
		e->netns_dev = st.st_dev;
		e->netns_ino = st.st_ino;
	}
}

static void put_del_list(void **state)
{
	struct fx *f = *state;
	struct registry *r;
	struct registry_entry e, out[4];
	char uids[4][WL_UID_MAX];

	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_count(r), 0);
	entry(&e, "a", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), 0);
	entry(&e, "b", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), 0);
	/* replace by uid */
	strcpy(e.w.name, "renamed");
	assert_int_equal(registry_put(r, &e), 0);
	assert_int_equal(registry_count(r), 2);
	assert_int_equal(registry_list(r, out, 4), 2);
	assert_string_equal(out[0].w.uid, "a");
	assert_string_equal(out[1].w.name, "renamed");
	assert_int_equal(registry_list(r, out, 1), 1);
	assert_int_equal(registry_uids(r, uids, 4), 2);
	assert_string_equal(uids[1], "b");
	assert_int_equal(registry_get(r, "b", &out[2]), 0);
	assert_string_equal(out[2].w.name, "renamed");
	assert_int_equal(registry_get(r, "zz", &out[2]), -ENOENT);

	assert_int_equal(registry_del(r, "a"), 0);
	assert_int_equal(registry_del(r, "a"), 0); /* absent: still 0 */
	assert_int_equal(registry_count(r), 1);
	assert_int_equal(registry_list(r, out, 4), 1);
	assert_string_equal(out[0].w.uid, "b");
	e.w.uid[0] = 0;
	assert_int_equal(registry_put(r, &e), -EINVAL);
	registry_close(r);

	/* the file is there, mode 0600, no temp file left */
	struct stat st;
	char tmp[160];

	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
	assert_int_equal(access(tmp, F_OK), -1);
}

static int readd_calls;
static char readd_uids[8][WL_UID_MAX];
static int readd_fail_uid_b;

static int readd(void *arg, const struct registry_entry *e, int fd)
{
	struct stat st;

	(void)arg;
	assert_int_equal(fstat(fd, &st), 0);
	assert_true((uint64_t)st.st_ino == e->netns_ino);
	if (readd_calls < 8)
		strcpy(readd_uids[readd_calls], e->w.uid);
	readd_calls++;
	if (readd_fail_uid_b && !strcmp(e->w.uid, "b"))
		return -EADDRINUSE;
	return 0;
}

static void persist_restore(void **state)
{
	struct fx *f = *state;
	struct registry *r;
	struct registry_entry e, out[4];

	assert_int_equal(registry_open(f->path, &r), 0);
	entry(&e, "a", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), 0);
	entry(&e, "b", "/proc/self/ns/net");
	e.w.n_ips = 2;
	e.w.ips[1].family = AF_INET6;
	inet_pton(AF_INET6, "fd00::9", &e.w.ips[1].v6);
	assert_int_equal(registry_put(r, &e), 0);
	registry_close(r);

	/* a "restart": new registry, same file */
	readd_calls = 0;
	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_count(r), 0);
	assert_int_equal(registry_restore(r, readd, NULL), 2);
	assert_int_equal(readd_calls, 2);
	assert_string_equal(readd_uids[0], "a");
	assert_int_equal(registry_list(r, out, 4), 2);
	assert_memory_equal(&out[1], &e, sizeof(e));
	registry_close(r);

	/* readd failing for b drops b, also from the file */
	readd_calls = 0;
	readd_fail_uid_b = 1;
	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_restore(r, readd, NULL), 1);
	readd_fail_uid_b = 0;
	assert_int_equal(registry_count(r), 1);
	registry_close(r);
	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_restore(r, NULL, NULL), 1);
	registry_close(r);
}

static void restore_mismatch(void **state)
{
	struct fx *f = *state;
	struct registry *r;
	struct registry_entry e, out[4];
	char gone[160];

	snprintf(gone, sizeof(gone), "%s/vanished-netns", f->dir);
	assert_int_equal(registry_open(f->path, &r), 0);
	entry(&e, "same", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), 0);
	entry(&e, "reused", "/proc/self/ns/net");
	e.netns_ino ^= 1; /* the path now names a different namespace */
	assert_int_equal(registry_put(r, &e), 0);
	entry(&e, "vanished", gone);
	e.netns_dev = 1;
	e.netns_ino = 2;
	assert_int_equal(registry_put(r, &e), 0);
	entry(&e, "notns", f->path); /* exists, but is a regular file */
	assert_int_equal(registry_put(r, &e), 0);
	registry_close(r);

	readd_calls = 0;
	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_restore(r, readd, NULL), 1);
	assert_int_equal(readd_calls, 1);
	assert_int_equal(registry_list(r, out, 4), 1);
	assert_string_equal(out[0].w.uid, "same");
	registry_close(r);
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void restore_corrupt(void **state)
{
	struct fx *f = *state;
	struct registry *r;
	struct registry_entry e;
	char aside[160];
	static const char *bad[] = {
		"{\"version\":1,\"workloads\":[",                 /* truncated */
		"not json",                                       /* garbage */
		"{\"version\":2,\"workloads\":[]}",               /* future version */
		"{\"workloads\":[]}",                             /* no version */
		"{\"version\":1,\"workloads\":{}}",               /* wrong type */
		"{\"version\":1,\"version\":1,\"workloads\":[]}", /* duplicate key */
	};
	size_t i;

	snprintf(aside, sizeof(aside), "%s.corrupt", f->path);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		unlink(aside);
		write_file(f->path, bad[i]);
		assert_int_equal(registry_open(f->path, &r), 0);
		assert_int_equal(registry_restore(r, readd, NULL), 0);
		assert_int_equal(registry_count(r), 0);
		assert_int_equal(access(aside, F_OK), 0);
		/* a fresh, valid (empty) state file replaced it */
		entry(&e, "x", "/proc/self/ns/net");
		assert_int_equal(registry_put(r, &e), 0);
		registry_close(r);
		assert_int_equal(registry_open(f->path, &r), 0);
		assert_int_equal(registry_restore(r, NULL, NULL), 1);
		registry_close(r);
	}

	/* an entry that fails validation is dropped alone */
	unlink(aside);
	write_file(f->path, "{\"version\":1,\"workloads\":[{\"uid\":\"bad uid\"},"
	                    "{\"uid\":\"noid\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[],"
	                    "\"netns_path\":\"/proc/self/ns/net\"}]}");
	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_restore(r, readd, NULL), 0);
	assert_int_equal(access(aside, F_OK), -1);
	registry_close(r);

	/* missing file: empty, not an error */
	unlink(f->path);
	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_restore(r, readd, NULL), 0);
	registry_close(r);
}

static void bound(void **state)
{
	struct registry *r;
	struct registry_entry e;
	int i;

	(void)state;
	/* memory only: persisting 1024 times would only test the disk */
	assert_int_equal(registry_open(NULL, &r), 0);
	for (i = 0; i < REGISTRY_MAX; i++) {
		char uid[16];

		snprintf(uid, sizeof(uid), "u%d", i);
		entry(&e, uid, "/proc/self/ns/net");
		assert_int_equal(registry_put(r, &e), 0);
	}
	entry(&e, "one-more", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), -ENOSPC);
	/* replacing still works when full */
	entry(&e, "u7", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), 0);
	assert_int_equal(registry_count(r), REGISTRY_MAX);
	assert_int_equal(registry_del(r, "u0"), 0);
	entry(&e, "one-more", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), 0);
	registry_close(r);
}

static void persist_failure(void **state)
{
	struct fx *f = *state;
	struct registry *r;
	struct registry_entry e;
	char path[192];

	/* the state directory does not exist: put fails and changes nothing */
	snprintf(path, sizeof(path), "%s/missing/state.json", f->dir);
	assert_int_equal(registry_open(path, &r), 0);
	entry(&e, "a", "/proc/self/ns/net");
	assert_int_equal(registry_put(r, &e), -ENOENT);
	assert_int_equal(registry_count(r), 0);
	registry_close(r);

	/* deletes are rolled back the same way */
	assert_int_equal(registry_open(f->path, &r), 0);
	assert_int_equal(registry_put(r, &e), 0);
	assert_int_equal(chmod(f->dir, 0500), 0);
	if (geteuid() == 0) {
		/* root ignores the mode; make the temp name a directory instead */
		char tmp[160];

		assert_int_equal(chmod(f->dir, 0700), 0);
		snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
		assert_int_equal(mkdir(tmp, 0700), 0);
		assert_int_not_equal(registry_del(r, "a"), 0);
		assert_int_equal(registry_count(r), 1);
		rmdir(tmp);
	} else {
		assert_int_not_equal(registry_del(r, "a"), 0);
		assert_int_equal(registry_count(r), 1);
		chmod(f->dir, 0700);
	}
	assert_int_equal(registry_del(r, "a"), 0);
	assert_int_equal(registry_count(r), 0);
	registry_close(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(put_del_list, setup, teardown),
		cmocka_unit_test_setup_teardown(persist_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(restore_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(restore_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(persist_failure, setup, teardown),
		cmocka_unit_test(bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
