/* config: see config.h. */
#include "node-proxy/config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "node-proxy/log.h"

void config_defaults(struct np_config *c)
{
	memset(c, 0, sizeof(*c));
	c->workers = 0;
	c->log_level = LOG_LVL_INFO;
	c->preserve_source = 0;
	c->cpu_affinity = 0;
	c->local_shortcut = 1;
	c->port_outbound = 15001;
	c->port_inbound = 15006;
	c->port_hbone = 15008;
	c->port_admin = 15000;
	c->port_ready = 15021;
	c->buf_size = 32768;
	c->buf_count = 256;
	c->queue_high = 4;
	c->recv_multishot = 1;
	c->max_conns = 16384;
	c->backlog = 4096;
	c->ring_entries = 1024;
	c->connect_ms = 5000;
	c->idle_ms = 3600 * 1000;
	c->drain_ms = 30 * 1000;
	c->metrics_port = 15020;
	c->max_series = 4096;
	c->access_log_sample = 1;
	c->proxy_mark = 0x539;
	c->transparent_mark = 0x111;
	snprintf(c->control_socket, sizeof(c->control_socket), "%s", "/run/ambit/node-proxy.sock");
	snprintf(c->state_file, sizeof(c->state_file), "%s", "/var/lib/ambit/node-proxy.state");
	snprintf(c->mesh_trust_domain, sizeof(c->mesh_trust_domain), "%s", "cluster.local");
	c->mesh_svid_lifetime_ms = 24 * 3600 * 1000;
	c->mesh_hbone = 1;
	c->mesh_pool_streams = 100;
	c->mesh_pool_idle_ms = 60 * 1000;
	c->mesh_stream_window = 256 * 1024;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (*s == '\0' || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end != '\0' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int config_parse_duration_ms(const char *s, unsigned *out)
{
	char *end;
	unsigned long long v, mul = 1;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (strcmp(end, "") == 0 || strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "m") == 0)
		mul = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mul = 3600 * 1000;
	else
		return -EINVAL;
	if (v > UINT_MAX / mul)
		return -EINVAL;
	*out = (unsigned)(v * mul);
	return 0;
}

static int parse_bool(const char *s, int *out)
{
	if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on") ||
	    !strcmp(s, "1"))
		*out = 1;
	else if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off") ||
	         !strcmp(s, "0"))
		*out = 0;
	else
		return -EINVAL;
	return 0;
}

enum kind { K_UINT, K_PORT, K_BOOL, K_DUR, K_LEVEL, K_PATH, K_MARK, K_NAME };

struct key {
	const char *section;
	const char *name;
	enum kind kind;
	size_t off;
	size_t size;            /* K_UINT/K_PATH: field size */
	unsigned long min, max; /* K_UINT */
};

#define F(f) offsetof(struct np_config, f), sizeof(((struct np_config *)0)->f)

static const struct key keys[] = {
	{ "proxy", "workers", K_UINT, F(workers), 0, 256 },
	{ "proxy", "log_level", K_LEVEL, F(log_level), 0, 0 },
	{ "proxy", "preserve_source", K_BOOL, F(preserve_source), 0, 0 },
	{ "proxy", "cpu_affinity", K_BOOL, F(cpu_affinity), 0, 0 },
	{ "proxy", "local_shortcut", K_BOOL, F(local_shortcut), 0, 0 },
	{ "ports", "outbound", K_PORT, F(port_outbound), 1, 65535 },
	{ "ports", "inbound", K_PORT, F(port_inbound), 1, 65535 },
	{ "ports", "hbone", K_PORT, F(port_hbone), 1, 65535 },
	{ "ports", "admin", K_PORT, F(port_admin), 1, 65535 },
	{ "ports", "readiness", K_PORT, F(port_ready), 1, 65535 },
	{ "buffers", "size", K_UINT, F(buf_size), 1024, 1 << 20 },
	{ "buffers", "count", K_UINT, F(buf_count), 8, 32768 },
	{ "buffers", "queue_high", K_UINT, F(queue_high), 1, 64 },
	{ "buffers", "recv_multishot", K_BOOL, F(recv_multishot), 0, 0 },
	{ "pool", "connections", K_UINT, F(max_conns), 1, 1 << 20 },
	{ "pool", "backlog", K_UINT, F(backlog), 1, 65535 },
	{ "pool", "ring_entries", K_UINT, F(ring_entries), 64, 32768 },
	{ "timeouts", "connect", K_DUR, F(connect_ms), 1, 0 },
	{ "timeouts", "idle", K_DUR, F(idle_ms), 0, 0 },
	{ "timeouts", "drain", K_DUR, F(drain_ms), 0, 0 },
	{ "telemetry", "metrics_port", K_UINT, F(metrics_port), 0, 65535 },
	{ "telemetry", "max_series", K_UINT, F(max_series), 16, 1 << 20 },
	{ "telemetry", "access_log", K_PATH, F(access_log), 0, 0 },
	{ "telemetry", "access_log_sample", K_UINT, F(access_log_sample), 0, 1000000 },
	{ "marks", "proxy", K_MARK, F(proxy_mark), 0, 0 },
	{ "marks", "transparent", K_MARK, F(transparent_mark), 0, 0 },
	{ "paths", "control_socket", K_PATH, F(control_socket), 0, 0 },
	{ "paths", "state_file", K_PATH, F(state_file), 0, 0 },
	{ "mesh", "trust_domain", K_NAME, F(mesh_trust_domain), 0, 0 },
	{ "mesh", "ca_dir", K_PATH, F(mesh_ca_dir), 0, 0 },
	{ "mesh", "svid_lifetime", K_DUR, F(mesh_svid_lifetime_ms), 10000, 0 },
	{ "mesh", "hbone", K_BOOL, F(mesh_hbone), 0, 0 },
	{ "mesh", "pool_streams", K_UINT, F(mesh_pool_streams), 1, 1000 },
	{ "mesh", "pool_idle", K_DUR, F(mesh_pool_idle_ms), 0, 0 },
	{ "mesh", "stream_window", K_UINT, F(mesh_stream_window), 65535, 1 << 30 },
	{ "mesh", "local_fast_path", K_BOOL, F(mesh_local_fast_path), 0, 0 },
	{ "policy", "policies_dir", K_PATH, F(policy_dir), 0, 0 },
	{ "policy", "services_dir", K_PATH, F(services_dir), 0, 0 },
	{ "policy", "root_namespace", K_NAME, F(policy_root_ns), 0, 0 },
};

int config_set(struct np_config *c, const char *section, const char *name, const char *value,
               char *err, size_t errlen)
{
	const struct key *k = NULL;
	int known_section = 0;
	unsigned long v;
	unsigned d;
	int b;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strcmp(keys[i].section, section) != 0)
			continue;
		known_section = 1;
		if (strcmp(keys[i].name, name) == 0) {
			k = &keys[i];
			break;
		}
	}
	if (!known_section) {
		snprintf(err, errlen, "unknown section [%s]", section);
		return -EINVAL;
	}
	if (!k) {
		snprintf(err, errlen, "unknown key \"%s\" in [%s]", name, section);
		return -EINVAL;
	}
	char *p = (char *)c + k->off;
	switch (k->kind) {
	case K_UINT:
		if (parse_uint(value, k->min, k->max, &v))
			goto bad_range;
		if (!strcmp(name, "count") && (v & (v - 1))) {
			snprintf(err, errlen, "%s.%s: \"%s\" is not a power of two", section, name,
			         value);
			return -EINVAL;
		}
		*(unsigned *)p = (unsigned)v;
		return 0;
	case K_PORT:
		if (parse_uint(value, 1, 65535, &v))
			goto bad_range;
		*(uint16_t *)p = (uint16_t)v;
		return 0;
	case K_MARK:
		if (parse_uint(value, 0, UINT32_MAX, &v))
			goto bad;
		*(uint32_t *)p = (uint32_t)v;
		return 0;
	case K_BOOL:
		if (parse_bool(value, &b))
			goto bad;
		*(int *)p = b;
		return 0;
	case K_DUR:
		if (config_parse_duration_ms(value, &d) || d < k->min)
			goto bad;
		*(unsigned *)p = d;
		return 0;
	case K_LEVEL:
		b = log_level_parse(value);
		if (b < 0)
			goto bad;
		*(int *)p = b;
		return 0;
	case K_PATH:
		if (value[0] != '/') {
			snprintf(err, errlen, "%s.%s: \"%s\" is not an absolute path", section,
			         name, value);
			return -EINVAL;
		}
		if (strlen(value) >= k->size) {
			snprintf(err, errlen, "%s.%s: path longer than %zu bytes", section, name,
			         k->size - 1);
			return -EINVAL;
		}
		memcpy(p, value, strlen(value) + 1);
		return 0;
	case K_NAME:
		/* a SPIFFE trust domain: lower-case letters, digits, '.', '-', '_' */
		if (!*value || strlen(value) >= k->size ||
		    strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789.-_") != strlen(value))
			goto bad;
		memcpy(p, value, strlen(value) + 1);
		return 0;
	}
bad:
	snprintf(err, errlen, "%s.%s: bad value \"%s\"", section, name, value);
	return -EINVAL;
bad_range:
	if (k->kind == K_PORT)
		snprintf(err, errlen, "%s.%s: bad value \"%s\" (expected 1..65535)", section, name,
		         value);
	else
		snprintf(err, errlen, "%s.%s: bad value \"%s\" (expected %lu..%lu)", section, name,
		         value, k->min, k->max);
	return -EINVAL;
}

struct load_ctx {
	struct np_config *c;
	const char *path;
	char *err;
	size_t errlen;
	int failed;
	FILE *f;
	int line; /* lines handed to inih so far: the line of the current key */
};

/* inih (as Debian builds it) does not pass line numbers to the handler,
 * but it reads exactly one line per reader call, so count them here. */
static char *reader(char *buf, int size, void *stream)
{
	struct load_ctx *x = stream;
	char *r = fgets(buf, size, x->f);

	if (r)
		x->line++;
	return r;
}

static int on_kv(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *x = user;
	int line = x->line;
	char msg[256];

	if (x->failed)
		return 0;
	if (!name) {
		/* A section header; inih (>= r42) reports it when INI_CALL_HANDLER_ON_NEW_SECTION
		 * is set.  Unknown ones are caught by the first key below, or here. */
		return 1;
	}
	if (config_set(x->c, section, name, value, msg, sizeof(msg))) {
		snprintf(x->err, x->errlen, "%s:%d: %s", x->path, line, msg);
		x->failed = 1;
		return 0;
	}
	return 1;
}

/* inih does not report empty sections; look for section headers ourselves so
 * that a misspelt empty [sectoin] is still refused with its line. */
static int check_sections(FILE *f, const char *path, char *err, size_t errlen)
{
	char line[512];
	int n = 0;

	while (fgets(line, sizeof(line), f)) {
		char *s = line, *e;
		n++;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s != '[')
			continue;
		e = strchr(s, ']');
		if (!e) {
			snprintf(err, errlen, "%s:%d: section header without ']'", path, n);
			return -EINVAL;
		}
		*e = '\0';
		s++;
		int ok = 0;
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strcmp(keys[i].section, s) == 0)
				ok = 1;
		if (!ok) {
			snprintf(err, errlen, "%s:%d: unknown section [%s]", path, n, s);
			return -EINVAL;
		}
	}
	rewind(f);
	return 0;
}

int config_load(struct np_config *c, const char *path, char *err, size_t errlen)
{
	struct load_ctx x = { .c = c, .path = path, .err = err, .errlen = errlen };
	struct np_config tmp = *c;
	FILE *f;
	int rc;

	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	rc = check_sections(f, path, err, errlen);
	if (rc)
		goto out;
	x.c = &tmp;
	x.f = f;
	rc = ini_parse_stream(reader, &x, on_kv, &x);
	if (x.failed) {
		rc = -EINVAL;
		goto out;
	}
	if (rc > 0) {
		snprintf(err, errlen, "%s:%d: syntax error", path, rc);
		rc = -EINVAL;
		goto out;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s: read error", path);
		rc = -EIO;
		goto out;
	}
	*c = tmp;
	rc = 0;
out:
	fclose(f);
	return rc;
}
