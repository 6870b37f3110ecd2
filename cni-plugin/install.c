/*
 * install: the node installer.  All file access goes through one
 * directory fd per call; every write is write-temp, fsync, rename, fsync
 * of the directory.
 *
 * Crash safety of the .conf conversion: the new .conflist is written
 * first (the .conf still sorts before it, so the runtime keeps using the
 * unchanged original), then the .conf is renamed to its backup name.  A
 * re-run after a crash between the two steps finds its own .conflist and
 * finishes the job.
 */
#include "cni-plugin/install.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cni-plugin/cniconf.h"
#include "cni-plugin/plugin.h"

#define CONF_MAX (1u << 20)

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

static int has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && !strcmp(s + n - m, suf);
}

static int is_conf_name(const char *s)
{
	return has_suffix(s, ".conf") || has_suffix(s, ".conflist") || has_suffix(s, ".json");
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct names {
	char **v;
	size_t n;
};

static void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	ns->v = NULL;
	ns->n = 0;
}

/* Regular files of @dirfd accepted by @keep, sorted bytewise as libcni
 * sorts them.  Returns 0 or -errno. */
static int list_dir(int dirfd, int (*keep)(const char *), struct names *out)
{
	struct dirent *de;
	size_t cap = 0;
	DIR *d;
	int fd = dup(dirfd), r = 0;

	out->v = NULL;
	out->n = 0;
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		struct stat st;

		if (!keep(de->d_name) || fstatat(dirfd, de->d_name, &st, 0) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (out->n == cap) {
			char **nv;

			cap = cap ? cap * 2 : 16;
			nv = realloc(out->v, cap * sizeof(*nv));
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			out->v = nv;
		}
		out->v[out->n] = strdup(de->d_name);
		if (!out->v[out->n]) {
			r = -ENOMEM;
			break;
		}
		out->n++;
	}
	closedir(d);
	if (r)
		names_free(out);
	else if (out->n)
		qsort(out->v, out->n, sizeof(*out->v), cmp_names);
	return r;
}

/* Whole file into a malloc'ed, NUL-terminated buffer; *mode gets its
 * permission bits.  Returns 0 or -errno (-EFBIG beyond CONF_MAX). */
static int read_file(int dirfd, const char *name, char **buf, size_t *len, mode_t *mode)
{
	struct stat st;
	char *b = NULL;
	size_t n = 0;
	ssize_t r;
	int fd, ret = 0;

	*buf = NULL;
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (st.st_size > CONF_MAX) {
		ret = -EFBIG;
		goto out;
	}
	if (mode)
		*mode = st.st_mode & 07777;
	b = malloc((size_t)st.st_size + 1);
	if (!b) {
		ret = -ENOMEM;
		goto out;
	}
	while (n < (size_t)st.st_size) {
		r = read(fd, b + n, (size_t)st.st_size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	b = NULL;
out:
	free(b);
	close(fd);
	return ret;
}

/* Replace @name in @dirfd by @len bytes of @data, atomically. */
static int write_atomic(int dirfd, const char *name, const void *data, size_t len, mode_t mode)
{
	char tmp[300];
	size_t off = 0;
	int fd, r = 0;

	/* Not ending in .conf/.conflist/.json: the runtime ignores it. */
	if (snprintf(tmp, sizeof(tmp), ".ambit-cni.%d.tmp", (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t w = write(fd, (const char *)data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			r = -errno;
			goto fail;
		}
		off += (size_t)w;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	close(fd);
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		r = -errno;
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	fsync(dirfd);
	return 0;
fail:
	close(fd);
	unlinkat(dirfd, tmp, 0);
	return r;
}

static int write_json(int dirfd, const char *name, const json_t *j, mode_t mode)
{
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	char *t2;
	size_t n;
	int r;

	if (!text)
		return -ENOMEM;
	/* json_dumps ends without a newline; files conventionally have one. */
	n = strlen(text);
	t2 = realloc(text, n + 2);
	if (!t2) {
		free(text);
		return -ENOMEM;
	}
	text = t2;
	text[n++] = '\n';
	text[n] = '\0';
	r = write_atomic(dirfd, name, text, n, mode);
	free(text);
	return r;
}

static int is_ambit(const json_t *plugin)
{
	json_t *t = json_object_get(plugin, "type");

	return json_is_string(t) && !strcmp(json_string_value(t), INSTALL_PLUGIN_TYPE);
}

/* Drop every ambit entry from a conflist's plugins; returns how many. */
static size_t strip_ambit(json_t *conflist)
{
	json_t *plugins = json_object_get(conflist, "plugins");
	size_t removed = 0;

	for (size_t i = 0; i < json_array_size(plugins);) {
		if (is_ambit(json_array_get(plugins, i))) {
			json_array_remove(plugins, i);
			removed++;
		} else {
			i++;
		}
	}
	return removed;
}

static int contains_ambit(const json_t *conflist)
{
	json_t *plugins = json_object_get(conflist, "plugins");
	size_t i;
	json_t *p;

	json_array_foreach(plugins, i, p)
	{
		if (is_ambit(p))
			return 1;
	}
	return 0;
}

/* The entry to chain: @extra with "type" forced, checked by the plugin's
 * own config parser so that a typo fails the install, not every pod. */
static json_t *make_entry(const json_t *extra, const char *version, char *err, size_t errlen)
{
	struct cni_error e;
	struct cni_conf *c;
	json_t *entry, *probe;
	char *text;
	int r;

	if (extra && !json_is_object(extra)) {
		fail(err, errlen, 0, "--plugin-config must be a JSON object");
		return NULL;
	}
	entry = extra ? json_deep_copy(extra) : json_object();
	if (!entry || json_object_set_new(entry, "type", json_string(INSTALL_PLUGIN_TYPE))) {
		json_decref(entry);
		fail(err, errlen, 0, "out of memory");
		return NULL;
	}
	probe = json_deep_copy(entry);
	c = calloc(1, sizeof(*c));
	if (!probe || !c || json_object_set_new(probe, "cniVersion", json_string(version))) {
		json_decref(probe);
		json_decref(entry);
		free(c);
		fail(err, errlen, 0, "out of memory");
		return NULL;
	}
	text = json_dumps(probe, JSON_COMPACT);
	json_decref(probe);
	r = text ? cni_conf_parse(text, strlen(text), CNI_CMD_DEL, c, &e) : -1;
	if (r == 0)
		r = cni_plugin_validate(c, &e);
	if (!text)
		snprintf(e.msg, sizeof(e.msg), "out of memory");
	cni_conf_free(c);
	free(c);
	free(text);
	if (r) {
		fail(err, errlen, 0, "invalid plugin config: %s", e.msg);
		json_decref(entry);
		return NULL;
	}
	return entry;
}

static int check_version(const json_t *conf, const char *file, const char **v, char *err,
                         size_t errlen)
{
	json_t *jv = json_object_get(conf, "cniVersion");

	*v = json_string_value(jv);
	if (!cni_version_supported(*v))
		return fail(err, errlen, -EPROTONOSUPPORT,
		            "%s has cniVersion %s; ambit-cni speaks 1.0.0 and 1.1.0, "
		            "so chaining it would fail every pod",
		            file, *v ? *v : "(none)");
	return 0;
}

static int backup_name(char *buf, size_t cap, const char *name)
{
	int r = snprintf(buf, cap, "%s%s", name, INSTALL_BACKUP_SUFFIX);

	return r < 0 || (size_t)r >= cap ? -ENAMETOOLONG : 0;
}

/* The .conflist a single-plugin file @name converts into. */
static int converted_name(char *buf, size_t cap, const char *name)
{
	size_t n = strlen(name);
	const char *dot = strrchr(name, '.');
	size_t stem = dot ? (size_t)(dot - name) : n;
	int r = snprintf(buf, cap, "%.*s.conflist", (int)stem, name);

	return r < 0 || (size_t)r >= cap ? -ENAMETOOLONG : 0;
}

static int install_into_conflist(int dirfd, const char *name, json_t *conf, const char *orig,
                                 size_t orig_len, mode_t mode, const json_t *extra, char *err,
                                 size_t errlen)
{
	json_t *plugins = json_object_get(conf, "plugins"), *entry, *last;
	char bak[300];
	const char *v;
	int r;

	r = check_version(conf, name, &v, err, errlen);
	if (r)
		return r;
	if (!json_is_array(plugins) || json_array_size(plugins) == 0)
		return fail(err, errlen, -EINVAL, "%s has no plugins", name);
	entry = make_entry(extra, v, err, errlen);
	if (!entry)
		return -EINVAL;
	last = json_array_get(plugins, json_array_size(plugins) - 1);
	if (is_ambit(last) && json_equal(last, entry)) {
		json_decref(entry);
		return 0; /* already installed, same config */
	}
	r = backup_name(bak, sizeof(bak), name);
	if (r) {
		json_decref(entry);
		return fail(err, errlen, r, "%s: name too long", name);
	}
	if (!contains_ambit(conf)) {
		/* The file is in its original state (first install, or the
		 * primary plugin rewrote it): this is what uninstall restores. */
		r = write_atomic(dirfd, bak, orig, orig_len, mode);
		if (r) {
			json_decref(entry);
			return fail(err, errlen, r, "cannot write %s: %s", bak, strerror(-r));
		}
	}
	strip_ambit(conf);
	if (json_array_append_new(plugins, entry))
		return fail(err, errlen, -ENOMEM, "out of memory");
	r = write_json(dirfd, name, conf, mode);
	if (r)
		return fail(err, errlen, r, "cannot write %s: %s", name, strerror(-r));
	return 0;
}

static int install_convert(int dirfd, const char *name, json_t *conf, mode_t mode,
                           const json_t *extra, char *err, size_t errlen)
{
	char list_name[300], bak[300];
	json_t *list = NULL, *plugin = NULL, *entry = NULL, *arr = NULL;
	const char *v;
	char *cur = NULL;
	size_t cur_len;
	int r;

	r = check_version(conf, name, &v, err, errlen);
	if (r)
		return r;
	if (converted_name(list_name, sizeof(list_name), name) ||
	    backup_name(bak, sizeof(bak), name))
		return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", name);
	/* An existing .conflist of that name must be one we wrote. */
	if (read_file(dirfd, list_name, &cur, &cur_len, NULL) == 0) {
		json_t *j = json_loadb(cur, cur_len, 0, NULL);
		int ours = j && contains_ambit(j);

		json_decref(j);
		free(cur);
		if (!ours)
			return fail(err, errlen, -EEXIST,
			            "%s is single-plugin and %s exists already; refusing to "
			            "overwrite it",
			            name, list_name);
	}
	entry = make_entry(extra, v, err, errlen);
	if (!entry)
		return -EINVAL;
	plugin = json_deep_copy(conf);
	list = json_object();
	arr = json_array();
	if (!plugin || !list || !arr)
		goto nomem;
	json_object_del(plugin, "cniVersion");
	json_object_del(plugin, "name");
	/* The *_new calls take their argument's reference even on failure. */
	r = json_array_append_new(arr, plugin);
	r |= json_array_append_new(arr, entry);
	plugin = entry = NULL;
	r |= json_object_set(list, "cniVersion", json_object_get(conf, "cniVersion"));
	if (json_object_get(conf, "name"))
		r |= json_object_set(list, "name", json_object_get(conf, "name"));
	r |= json_object_set_new(list, "plugins", arr);
	arr = NULL;
	if (r)
		goto nomem;
	r = write_json(dirfd, list_name, list, mode);
	json_decref(list);
	if (r)
		return fail(err, errlen, r, "cannot write %s: %s", list_name, strerror(-r));
	if (renameat(dirfd, name, dirfd, bak) < 0) {
		r = -errno;
		unlinkat(dirfd, list_name, 0);
		return fail(err, errlen, r, "cannot move %s to %s: %s", name, bak, strerror(-r));
	}
	fsync(dirfd);
	return 0;
nomem:
	json_decref(plugin);
	json_decref(entry);
	json_decref(arr);
	json_decref(list);
	return fail(err, errlen, -ENOMEM, "out of memory");
}

int install_conf(const char *conf_dir, const json_t *plugin, char *err, size_t errlen)
{
	struct names ns = { 0 };
	json_t *conf = NULL;
	json_error_t jerr;
	char *buf = NULL;
	size_t len;
	mode_t mode = 0644;
	int dirfd, r;

	err[0] = '\0';
	dirfd = open(conf_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return fail(err, errlen, -errno, "%s: %s", conf_dir, strerror(errno));
	r = list_dir(dirfd, is_conf_name, &ns);
	if (r) {
		fail(err, errlen, r, "cannot list %s: %s", conf_dir, strerror(-r));
		goto out;
	}
	if (ns.n == 0) {
		r = fail(err, errlen, -ENOENT,
		         "no network config (*.conf, *.conflist, *.json) in %s yet; the "
		         "primary CNI plugin must be installed first",
		         conf_dir);
		goto out;
	}
	r = read_file(dirfd, ns.v[0], &buf, &len, &mode);
	if (r) {
		fail(err, errlen, r, "cannot read %s: %s", ns.v[0], strerror(-r));
		goto out;
	}
	conf = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(conf)) {
		r = fail(err, errlen, -EINVAL, "%s is not a JSON object: %s", ns.v[0],
		         conf ? "wrong type" : jerr.text);
		goto out;
	}
	if (json_object_get(conf, "plugins"))
		r = install_into_conflist(dirfd, ns.v[0], conf, buf, len, mode, plugin, err,
		                          errlen);
	else if (json_is_string(json_object_get(conf, "type")))
		r = install_convert(dirfd, ns.v[0], conf, mode, plugin, err, errlen);
	else
		r = fail(err, errlen, -EINVAL, "%s has neither \"plugins\" nor \"type\"", ns.v[0]);
out:
	json_decref(conf);
	free(buf);
	names_free(&ns);
	close(dirfd);
	return r;
}

static int is_backup_name(const char *s)
{
	return has_suffix(s, INSTALL_BACKUP_SUFFIX);
}

/* Put one backup back: @bak names <orig>.ambit-orig. */
static int restore_one(int dirfd, const char *bak, char *err, size_t errlen)
{
	char orig[300], list_name[300];
	size_t n = strlen(bak) - strlen(INSTALL_BACKUP_SUFFIX);
	char *cur = NULL, *old = NULL;
	size_t cur_len, old_len;
	json_t *jc = NULL, *jo = NULL;
	mode_t mode;
	struct stat st;
	int r = 0;

	if (n >= sizeof(orig))
		return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", bak);
	memcpy(orig, bak, n);
	orig[n] = '\0';
	if (fstatat(dirfd, orig, &st, 0) < 0) {
		/* Converted .conf: the original goes back first (it sorts
		 * before the .conflist), then the .conflist goes. */
		if (converted_name(list_name, sizeof(list_name), orig))
			return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", orig);
		if (renameat(dirfd, bak, dirfd, orig) < 0)
			return fail(err, errlen, -errno, "cannot restore %s: %s", orig,
			            strerror(errno));
		if (read_file(dirfd, list_name, &cur, &cur_len, NULL) == 0) {
			jc = json_loadb(cur, cur_len, 0, NULL);
			if (jc && contains_ambit(jc))
				unlinkat(dirfd, list_name, 0);
		}
		fsync(dirfd);
		goto out;
	}
	r = read_file(dirfd, orig, &cur, &cur_len, &mode);
	if (r == 0)
		r = read_file(dirfd, bak, &old, &old_len, NULL);
	if (r) {
		fail(err, errlen, r, "cannot read %s: %s", orig, strerror(-r));
		goto out;
	}
	jc = json_loadb(cur, cur_len, 0, NULL);
	jo = json_loadb(old, old_len, 0, NULL);
	if (jc)
		strip_ambit(jc);
	if (!jc || (jo && json_equal(jc, jo))) {
		/* Unchanged but for our entry: the original, byte for byte. */
		if (renameat(dirfd, bak, dirfd, orig) < 0)
			r = fail(err, errlen, -errno, "cannot restore %s: %s", orig,
			         strerror(errno));
		fsync(dirfd);
		goto out;
	}
	/* Rewritten by its owner since: keep their version minus ambit. */
	r = write_json(dirfd, orig, jc, mode);
	if (r) {
		fail(err, errlen, r, "cannot write %s: %s", orig, strerror(-r));
		goto out;
	}
	unlinkat(dirfd, bak, 0);
out:
	json_decref(jc);
	json_decref(jo);
	free(cur);
	free(old);
	return r;
}

int uninstall_conf(const char *conf_dir, char *err, size_t errlen)
{
	struct names ns = { 0 };
	int dirfd, r;

	err[0] = '\0';
	dirfd = open(conf_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return fail(err, errlen, -errno, "%s: %s", conf_dir, strerror(errno));
	r = list_dir(dirfd, is_backup_name, &ns);
	for (size_t i = 0; r == 0 && i < ns.n; i++)
		r = restore_one(dirfd, ns.v[i], err, errlen);
	names_free(&ns);
	if (r)
		goto out;
	/* Entries without a backup (copied by hand, or backup lost). */
	r = list_dir(dirfd, is_conf_name, &ns);
	for (size_t i = 0; r == 0 && i < ns.n; i++) {
		char *buf;
		size_t len;
		mode_t mode;
		json_t *j;

		if (read_file(dirfd, ns.v[i], &buf, &len, &mode))
			continue;
		j = json_loadb(buf, len, 0, NULL);
		free(buf);
		if (j && strip_ambit(j)) {
			r = write_json(dirfd, ns.v[i], j, mode);
			if (r)
				fail(err, errlen, r, "cannot write %s: %s", ns.v[i], strerror(-r));
		}
		json_decref(j);
	}
	names_free(&ns);
out:
	close(dirfd);
	return r;
}

int install_binary(const char *src, const char *bin_dir, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len;
	int dirfd, r;

	dirfd = open(bin_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return fail(err, errlen, -errno, "%s: %s", bin_dir, strerror(errno));
	r = read_file(AT_FDCWD, src, &buf, &len, NULL);
	if (r == -EFBIG) {
		/* Binaries are larger than configs: read without the cap. */
		int fd = open(src, O_RDONLY | O_CLOEXEC);
		struct stat st;

		r = -errno;
		if (fd >= 0 && fstat(fd, &st) == 0 && (buf = malloc((size_t)st.st_size + 1))) {
			ssize_t got = 0, n;

			while (got < st.st_size &&
			       (n = read(fd, buf + got, (size_t)(st.st_size - got))) > 0)
				got += n;
			len = (size_t)got;
			r = got == st.st_size ? 0 : -EIO;
		}
		if (fd >= 0)
			close(fd);
	}
	if (r) {
		fail(err, errlen, r, "cannot read %s: %s", src, strerror(-r));
		goto out;
	}
	r = write_atomic(dirfd, "ambit-cni", buf, len, 0755);
	if (r)
		fail(err, errlen, r, "cannot write %s/ambit-cni: %s", bin_dir, strerror(-r));
out:
	free(buf);
	close(dirfd);
	return r;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ambit-cni install --cni-bin-dir DIR --cni-conf-dir DIR\n"
	        "                         [--plugin-config JSON] [--binary PATH]\n"
	        "       ambit-cni uninstall --cni-conf-dir DIR [--cni-bin-dir DIR]\n"
	        "Without arguments ambit-cni is a CNI plugin (CNI_COMMAND in the environment).\n");
}

int install_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cni-bin-dir", required_argument, NULL, 'b' },
		{ "cni-conf-dir", required_argument, NULL, 'c' },
		{ "plugin-config", required_argument, NULL, 'p' },
		{ "binary", required_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *bin_dir = NULL, *conf_dir = NULL, *pcfg = NULL, *binary = "/proc/self/exe";
	const char *cmd = argv[1];
	json_t *plugin = NULL;
	json_error_t jerr;
	char err[1024];
	int install, o, r;

	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "install") && strcmp(cmd, "uninstall")) {
		usage(stderr);
		return 2;
	}
	install = !strcmp(cmd, "install");
	optind = 2;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'b':
			bin_dir = optarg;
			break;
		case 'c':
			conf_dir = optarg;
			break;
		case 'p':
			pcfg = optarg;
			break;
		case 'x':
			binary = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || !conf_dir || (install && !bin_dir)) {
		usage(stderr);
		return 2;
	}
	if (!install) {
		r = uninstall_conf(conf_dir, err, sizeof(err));
		if (r == 0 && bin_dir) {
			char path[4096];

			snprintf(path, sizeof(path), "%s/ambit-cni", bin_dir);
			if (unlink(path) < 0 && errno != ENOENT) {
				r = -errno;
				snprintf(err, sizeof(err), "%.900s: %s", path, strerror(errno));
			}
		}
		if (r) {
			fprintf(stderr, "ambit-cni uninstall: %s\n", err);
			return 1;
		}
		fprintf(stderr, "ambit-cni uninstall: done (%s)\n", conf_dir);
		return 0;
	}
	if (pcfg) {
		plugin = json_loads(pcfg, JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(plugin)) {
			fprintf(stderr,
			        "ambit-cni install: --plugin-config is not a JSON object%s%s\n",
			        plugin ? "" : ": ", plugin ? "" : jerr.text);
			json_decref(plugin);
			return 1;
		}
	}
	/* Binary first: a config naming a plugin the runtime cannot find
	 * would fail every pod. */
	r = install_binary(binary, bin_dir, err, sizeof(err));
	if (r == 0)
		r = install_conf(conf_dir, plugin, err, sizeof(err));
	json_decref(plugin);
	if (r) {
		fprintf(stderr, "ambit-cni install: %s\n", err);
		return 1;
	}
	fprintf(stderr, "ambit-cni install: chained into %s, binary in %s\n", conf_dir, bin_dir);
	return 0;
}
