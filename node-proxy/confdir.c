/*
 * confdir: a directory of INI files through inih, with line numbers.
 *
 * inih pulls lines through our reader one at a time, so the reader knows
 * the number of the line whose key the handler is about to see.  The reader
 * also parses section headers itself (and hands inih the same line), since
 * Debian's inih is built without INI_CALL_HANDLER_ON_NEW_SECTION and never
 * tells us about a section that has no keys.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "node-proxy/confdir.h"

void conf_errors_init(struct conf_errors *e)
{
	e->n = 0;
	e->dropped = 0;
}

void conf_error(struct conf_errors *e, const char *file, int line, const char *fmt, ...)
{
	char msg[CONFDIR_ERR_LEN - 64];
	va_list ap;

	if (!e)
		return;
	if (e->n >= CONFDIR_MAX_ERRORS) {
		e->dropped++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(e->msg[e->n], CONFDIR_ERR_LEN, "%s:%d: %s", file, line, msg);
	else
		snprintf(e->msg[e->n], CONFDIR_ERR_LEN, "%s: %s", file, msg);
	e->n++;
}

void conf_errors_merge(struct conf_errors *dst, const struct conf_errors *src)
{
	if (!dst)
		return;
	for (unsigned i = 0; i < src->n; i++) {
		if (dst->n >= CONFDIR_MAX_ERRORS) {
			dst->dropped++;
			continue;
		}
		memcpy(dst->msg[dst->n++], src->msg[i], CONFDIR_ERR_LEN);
	}
	dst->dropped += src->dropped;
}

struct reader {
	const char *file;
	const char *buf;
	size_t len, pos;
	int line;     /* number of the line last handed to inih */
	int bad_line; /* last line we already reported, so inih's error is not doubled */
	bool in_section;
	const struct confdir_ops *ops;
	void *ctx;
	struct conf_errors *e;
	unsigned errs_at_start;
};

static char *strip(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		*--end = '\0';
	return s;
}

/* A "[header]" line: report it to the owner.  @l is a private copy. */
static void on_header(struct reader *r, char *l)
{
	char *close = strchr(l, ']');
	char *rest;

	if (!close) {
		conf_error(r->e, r->file, r->line, "section header without ']'");
		goto bad;
	}
	*close = '\0';
	rest = strip(close + 1);
	if (*rest && *rest != ';' && *rest != '#') {
		conf_error(r->e, r->file, r->line, "text after section header: \"%s\"", rest);
		goto bad;
	}
	r->in_section = true;
	r->ops->section(r->ctx, r->file, r->line, strip(l + 1));
	return;
bad:
	/* keys up to the next header belong to no section: the owner ignores them */
	r->bad_line = r->line;
	r->in_section = true;
	r->ops->section(r->ctx, r->file, r->line, NULL);
}

static char *reader_fn(char *out, int size, void *stream)
{
	struct reader *r = stream;
	const char *start, *nl;
	size_t n, take;
	char copy[CONFDIR_MAX_LINE + 4];

	if (r->pos >= r->len)
		return NULL;
	start = r->buf + r->pos;
	nl = memchr(start, '\n', r->len - r->pos);
	n = nl ? (size_t)(nl - start) + 1 : r->len - r->pos;
	r->pos += n;
	r->line++;
	take = n;
	if (take && start[take - 1] == '\n')
		take--;
	if (take && start[take - 1] == '\r')
		take--;
	if (r->line == 1 && take >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
		start += 3;
		take -= 3;
	}
	if (take > CONFDIR_MAX_LINE || (int)take + 2 > size) {
		conf_error(r->e, r->file, r->line,
		           "line longer than %d bytes (continue a list "
		           "on an indented next line)",
		           CONFDIR_MAX_LINE);
		r->bad_line = r->line;
		take = 0; /* hand inih an empty line instead */
	} else if (memchr(start, '\0', take)) {
		conf_error(r->e, r->file, r->line, "NUL byte in line");
		r->bad_line = r->line;
		take = 0;
	}
	memcpy(out, start, take);
	out[take] = '\n';
	out[take + 1] = '\0';

	if (take && start[0] == '[') {
		memcpy(copy, start, take);
		copy[take] = '\0';
		on_header(r, copy);
		/* inih must not see a header we refused, or it would carry on
		 * in a section we never opened */
		if (r->bad_line == r->line) {
			out[0] = '\n';
			out[1] = '\0';
		}
	} else if (take) {
		size_t i = 0;
		while (i < take && (start[i] == ' ' || start[i] == '\t'))
			i++;
		if (i < take && start[i] == '[' && i > 0) {
			conf_error(r->e, r->file, r->line,
			           "section header must start in the first column");
			r->bad_line = r->line;
			r->in_section = true;
			r->ops->section(r->ctx, r->file, r->line, NULL);
			out[0] = '\n';
			out[1] = '\0';
		}
	}
	return out;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct reader *r = user;
	char v[CONFDIR_MAX_LINE + 4];

	(void)section;
	if (!name)
		return 1;
	if (!r->in_section) {
		conf_error(r->e, r->file, r->line, "\"%s\" outside of any [section]", name);
		return 1;
	}
	snprintf(v, sizeof(v), "%s", value ? value : "");
	r->ops->kv(r->ctx, r->file, r->line, name, v);
	return 1;
}

unsigned confdir_parse_buf(const char *file, const char *buf, size_t len,
                           const struct confdir_ops *ops, void *ctx, struct conf_errors *e)
{
	struct reader r = {
		.file = file,
		.buf = buf,
		.len = len,
		.ops = ops,
		.ctx = ctx,
		.e = e,
	};
	unsigned before = conf_errors_count(e);
	int rc;

	if (len > CONFDIR_MAX_FILE_SIZE) {
		conf_error(e, file, 0, "file larger than %d bytes", CONFDIR_MAX_FILE_SIZE);
		return 1;
	}
	rc = ini_parse_stream(reader_fn, &r, handler, &r);
	if (rc > 0 && rc != r.bad_line)
		conf_error(e, file, rc, "syntax error (expected \"key = value\" or \"[section]\")");
	else if (rc < 0)
		conf_error(e, file, 0, "inih failed (%d)", rc);
	return conf_errors_count(e) - before;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_ini(const char *n)
{
	size_t l = strlen(n);

	return n[0] != '.' && l > 4 && strcmp(n + l - 4, ".ini") == 0;
}

/* Read @name under @dfd whole; 0, or an error recorded and -1.  Symlinks
 * are followed: a Kubernetes ConfigMap volume is FILE -> ..data/FILE. */
static int read_file(int dfd, const char *path, const char *name, char **out, size_t *outlen,
                     struct conf_errors *e)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, rc = -1;

	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		conf_error(e, path, 0, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		conf_error(e, path, 0, "%s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		conf_error(e, path, 0, "not a regular file");
		goto out;
	}
	if (st.st_size > CONFDIR_MAX_FILE_SIZE) {
		conf_error(e, path, 0, "file larger than %d bytes", CONFDIR_MAX_FILE_SIZE);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		conf_error(e, path, 0, "out of memory");
		goto out;
	}
	/* read at most the size seen (plus one byte to notice growth) */
	while (got <= (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			conf_error(e, path, 0, "%s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > (size_t)st.st_size) {
		conf_error(e, path, 0, "file changed while being read");
		goto out;
	}
	*out = buf;
	*outlen = got;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

unsigned confdir_parse_dir(const char *dir, const struct confdir_ops *ops, void *ctx,
                           struct conf_errors *e)
{
	unsigned before = conf_errors_count(e);
	char *names[CONFDIR_MAX_FILES];
	unsigned n = 0, i;
	struct dirent *de;
	DIR *d;

	d = opendir(dir);
	if (!d) {
		conf_error(e, dir, 0, "%s", strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		if (!is_ini(de->d_name))
			continue;
		if (n == CONFDIR_MAX_FILES) {
			conf_error(e, dir, 0, "more than %d *.ini files", CONFDIR_MAX_FILES);
			break;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			conf_error(e, dir, 0, "out of memory");
			break;
		}
		n++;
	}
	qsort(names, n, sizeof(names[0]), name_cmp);
	/* a file after a broken one is still checked, so one run shows all */
	for (i = 0; i < n; i++) {
		char path[4096];
		char *buf = NULL;
		size_t len = 0;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (read_file(dirfd(d), path, names[i], &buf, &len, e) == 0) {
			confdir_parse_buf(path, buf, len, ops, ctx, e);
			free(buf);
		}
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	closedir(d);
	return conf_errors_count(e) - before;
}

char *conf_next_item(char **cur)
{
	char *s = *cur, *comma;

	if (!s)
		return NULL;
	comma = strchr(s, ',');
	if (comma) {
		*comma = '\0';
		*cur = comma + 1;
	} else {
		*cur = NULL;
	}
	return strip(s);
}

static bool label_name_ok(const char *s, size_t n)
{
	/* [a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?, at most 63 */
	if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
			return false;
	return true;
}

static bool label_key_ok(const char *k)
{
	const char *slash = strchr(k, '/');

	if (!slash)
		return label_name_ok(k, strlen(k));
	if (slash == k || slash - k > 253)
		return false;
	for (const char *p = k; p < slash; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-' &&
		    *p != '.')
			return false;
	return label_name_ok(slash + 1, strlen(slash + 1));
}

int selector_parse(struct selector *sel, const char *value, char *err, size_t errlen)
{
	char buf[CONFDIR_MAX_LINE + 4];
	char *cur = buf, *item;

	snprintf(buf, sizeof(buf), "%s", value);
	while ((item = conf_next_item(&cur))) {
		char *eq = strchr(item, '='), *k, *v;

		if (!*item) {
			snprintf(err, errlen, "empty item in selector");
			return -EINVAL;
		}
		if (!eq) {
			snprintf(err, errlen, "selector item \"%s\" is not key=value", item);
			return -EINVAL;
		}
		*eq = '\0';
		k = strip(item);
		v = strip(eq + 1);
		if (!label_key_ok(k)) {
			snprintf(err, errlen, "bad label key \"%s\"", k);
			return -EINVAL;
		}
		if (*v && !label_name_ok(v, strlen(v))) {
			snprintf(err, errlen, "bad label value \"%s\"", v);
			return -EINVAL;
		}
		for (unsigned i = 0; i < sel->n; i++)
			if (strcmp(sel->m[i].key, k) == 0) {
				snprintf(err, errlen, "label \"%s\" twice in selector", k);
				return -EINVAL;
			}
		if (sel->n == SELECTOR_MAX_LABELS) {
			snprintf(err, errlen, "more than %d labels in selector",
			         SELECTOR_MAX_LABELS);
			return -EINVAL;
		}
		snprintf(sel->m[sel->n].key, sizeof(sel->m[0].key), "%s", k);
		snprintf(sel->m[sel->n].val, sizeof(sel->m[0].val), "%s", v);
		sel->n++;
	}
	return 0;
}

const char *workload_label(const struct workload *w, const char *key)
{
	unsigned n = w->n_labels < WL_MAX_LABELS ? w->n_labels : WL_MAX_LABELS;

	for (unsigned i = 0; i < n; i++)
		if (strcmp(w->labels[i].key, key) == 0)
			return w->labels[i].val;
	return NULL;
}

bool selector_matches(const struct selector *sel, const struct workload *w)
{
	for (unsigned i = 0; i < sel->n; i++) {
		const char *v = workload_label(w, sel->m[i].key);
		if (!v || strcmp(v, sel->m[i].val) != 0)
			return false;
	}
	return true;
}

bool conf_valid_dns_label(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

bool conf_valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 253 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-' &&
		    s[i] != '.')
			return false;
	return true;
}

int conf_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (!*s || strlen(s) > 10)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int conf_parse_ip(const char *s, struct wl_ip *ip)
{
	memset(ip, 0, sizeof(*ip));
	if (inet_pton(AF_INET, s, &ip->v4) == 1) {
		ip->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &ip->v6) == 1) {
		ip->family = AF_INET6;
		return 0;
	}
	return -EINVAL;
}

bool wl_ip_equal(const struct wl_ip *a, const struct wl_ip *b)
{
	if (a->family != b->family)
		return false;
	if (a->family == AF_INET)
		return a->v4.s_addr == b->v4.s_addr;
	return memcmp(&a->v6, &b->v6, 16) == 0;
}

int cidr_parse(const char *s, struct cidr *c, char *err, size_t errlen)
{
	char buf[64];
	char *slash;
	struct wl_ip ip;
	unsigned long plen;
	unsigned max, i;

	if (strlen(s) >= sizeof(buf)) {
		snprintf(err, errlen, "bad address \"%.40s...\"", s);
		return -EINVAL;
	}
	memcpy(buf, s, strlen(s) + 1);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (conf_parse_ip(buf, &ip)) {
		snprintf(err, errlen, "bad address \"%s\"", s);
		return -EINVAL;
	}
	memset(c, 0, sizeof(*c));
	c->family = (uint8_t)ip.family;
	max = ip.family == AF_INET ? 32 : 128;
	if (ip.family == AF_INET)
		memcpy(c->addr, &ip.v4, 4);
	else
		memcpy(c->addr, &ip.v6, 16);
	plen = max;
	if (slash && conf_parse_uint(slash + 1, 0, max, &plen)) {
		snprintf(err, errlen, "bad prefix length in \"%s\" (0..%u)", s, max);
		return -EINVAL;
	}
	c->plen = (uint8_t)plen;
	for (i = 0; i < max / 8; i++) {
		unsigned bit = i * 8;
		uint8_t mask =
		    bit >= plen ? 0xff : (plen - bit >= 8 ? 0 : (uint8_t)(0xff >> (plen - bit)));
		if (c->addr[i] & mask) {
			snprintf(err, errlen, "\"%s\" has host bits set", s);
			return -EINVAL;
		}
	}
	return 0;
}

bool cidr_contains(const struct cidr *c, const struct wl_ip *ip)
{
	const uint8_t *a;
	unsigned full, rem;

	if (ip->family != c->family)
		return false;
	a = ip->family == AF_INET ? (const uint8_t *)&ip->v4 : (const uint8_t *)&ip->v6;
	full = c->plen / 8;
	rem = c->plen % 8;
	if (memcmp(a, c->addr, full) != 0)
		return false;
	if (rem && ((a[full] ^ c->addr[full]) & (uint8_t)(0xff << (8 - rem))))
		return false;
	return true;
}
