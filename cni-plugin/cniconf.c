/*
 * cniconf: parsing of the CNI environment, CNI_ARGS, stdin and labels.
 *
 * All inputs are untrusted: lengths are checked before every copy, strings
 * are restricted to the characters their consumers accept, and nothing is
 * written outside the fixed-size fields of struct cni_conf / cni_args.
 */
#include "cni-plugin/cniconf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cni_fail(struct cni_error *e, int code, const char *fmt, ...)
{
	va_list ap;

	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	e->details[0] = '\0';
	return -1;
}

void cni_details(struct cni_error *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->details, sizeof(e->details), fmt, ap);
	va_end(ap);
}

int cni_version_supported(const char *v)
{
	return v && (!strcmp(v, "1.0.0") || !strcmp(v, "1.1.0"));
}

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Names (namespace, pod, service account, uid): what Kubernetes allows
 * plus '_' and upper case, which podman's container names use. */
static int name_char(char c)
{
	return is_alnum(c) || c == '-' || c == '.' || c == '_';
}

static int name_valid(const char *s, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!name_char(s[i]))
			return 0;
	return 1;
}

int cni_container_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= CNI_CONTAINERID_MAX || !is_alnum(s[0]))
		return 0;
	return name_valid(s, n);
}

/* Interface names as the kernel takes them (and as the spec restricts). */
static int ifname_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= CNI_IFNAME_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || s[i] == ':' || s[i] <= ' ' || s[i] == 0x7f)
			return 0;
	return 1;
}

/* ---- environment --------------------------------------------------------- */

static const struct {
	const char *name;
	enum cni_cmd cmd;
} cmds[] = {
	{ "ADD", CNI_CMD_ADD },         { "DEL", CNI_CMD_DEL },       { "CHECK", CNI_CMD_CHECK },
	{ "VERSION", CNI_CMD_VERSION }, { "STATUS", CNI_CMD_STATUS }, { "GC", CNI_CMD_GC },
};

static const char *env_or_empty(const char *(*get)(const char *), const char *name)
{
	const char *v = get(name);

	return v ? v : "";
}

int cni_env_read(struct cni_env *env, const char *(*get)(const char *name), struct cni_error *e)
{
	memset(env, 0, sizeof(*env));
	env->command = env_or_empty(get, "CNI_COMMAND");
	env->container_id = env_or_empty(get, "CNI_CONTAINERID");
	env->netns = env_or_empty(get, "CNI_NETNS");
	env->ifname = env_or_empty(get, "CNI_IFNAME");
	env->args = env_or_empty(get, "CNI_ARGS");
	env->path = env_or_empty(get, "CNI_PATH");

	if (!env->command[0])
		return cni_fail(e, CNI_ERR_ENV, "CNI_COMMAND is not set");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(env->command, cmds[i].name))
			env->cmd = cmds[i].cmd;
	if (env->cmd == CNI_CMD_NONE) {
		cni_fail(e, CNI_ERR_ENV, "unknown CNI_COMMAND");
		cni_details(e, "CNI_COMMAND=%.64s; expected ADD, DEL, CHECK, VERSION, STATUS or GC",
		            env->command);
		return -1;
	}
	if (env->cmd != CNI_CMD_ADD && env->cmd != CNI_CMD_DEL && env->cmd != CNI_CMD_CHECK)
		return 0;
	if (!env->container_id[0])
		return cni_fail(e, CNI_ERR_ENV, "CNI_CONTAINERID is not set");
	if (!cni_container_id_valid(env->container_id))
		return cni_fail(e, CNI_ERR_ENV,
		                "CNI_CONTAINERID must be [A-Za-z0-9][A-Za-z0-9_.-]*, < %d bytes",
		                CNI_CONTAINERID_MAX);
	if (!env->ifname[0])
		return cni_fail(e, CNI_ERR_ENV, "CNI_IFNAME is not set");
	if (!ifname_valid(env->ifname))
		return cni_fail(e, CNI_ERR_ENV, "CNI_IFNAME is not a valid interface name");
	if (strlen(env->netns) >= CNI_PATH_MAX)
		return cni_fail(e, CNI_ERR_ENV, "CNI_NETNS is too long");
	if (env->netns[0] && env->netns[0] != '/')
		return cni_fail(e, CNI_ERR_ENV, "CNI_NETNS must be an absolute path");
	if (strlen(env->args) > CNI_ARGS_MAX)
		return cni_fail(e, CNI_ERR_ENV, "CNI_ARGS is longer than %d bytes", CNI_ARGS_MAX);
	return 0;
}

/* ---- labels -------------------------------------------------------------- */

static int label_key_char(char c)
{
	return name_char(c) || c == '/';
}

static int label_put(struct wl_label *labels, unsigned *n, const char *k, size_t klen,
                     const char *v, size_t vlen, int code, struct cni_error *e)
{
	unsigned i;

	if (klen == 0 || klen >= WL_LABEL_KEY_MAX || !is_alnum(k[0]))
		return cni_fail(e, code, "label key must be 1..%d of [A-Za-z0-9._/-]",
		                WL_LABEL_KEY_MAX - 1);
	for (size_t j = 0; j < klen; j++)
		if (!label_key_char(k[j]))
			return cni_fail(e, code,
			                "label key has a character outside [A-Za-z0-9._/-]");
	if (vlen >= WL_LABEL_VAL_MAX)
		return cni_fail(e, code, "label value longer than %d bytes", WL_LABEL_VAL_MAX - 1);
	for (size_t j = 0; j < vlen; j++)
		if (!name_char(v[j]))
			return cni_fail(e, code,
			                "label value has a character outside [A-Za-z0-9._-]");
	for (i = 0; i < *n; i++)
		if (strlen(labels[i].key) == klen && !memcmp(labels[i].key, k, klen))
			break;
	if (i == *n) {
		if (*n >= WL_MAX_LABELS)
			return cni_fail(e, code, "more than %d labels", WL_MAX_LABELS);
		(*n)++;
	}
	memcpy(labels[i].key, k, klen);
	labels[i].key[klen] = '\0';
	memcpy(labels[i].val, v, vlen);
	labels[i].val[vlen] = '\0';
	return 0;
}

int cni_labels_parse(const char *s, struct wl_label *labels, unsigned *n, int code,
                     struct cni_error *e)
{
	const char *p = s;

	while (*p) {
		const char *end = strchr(p, ',');
		size_t seg = end ? (size_t)(end - p) : strlen(p);
		const char *eq = NULL;

		/* KEY:VALUE, or KEY=VALUE.  ':' is the one to use inside
		 * CNI_ARGS: the Go plugins of a chain (libcni's LoadArgs)
		 * reject a CNI_ARGS pair holding a second '='. */
		for (size_t i = 0; i < seg && !eq; i++)
			if (p[i] == ':' || p[i] == '=')
				eq = p + i;
		if (seg > 0) {
			if (!eq)
				return cni_fail(e, code, "label \"%.*s\" is not KEY:VALUE",
				                (int)(seg > 64 ? 64 : seg), p);
			if (label_put(labels, n, p, (size_t)(eq - p), eq + 1,
			              seg - (size_t)(eq - p) - 1, code, e))
				return -1;
		}
		p += seg;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* ---- CNI_ARGS ------------------------------------------------------------ */

static int copy_name(char *dst, size_t cap, const char *v, size_t vlen, const char *key,
                     struct cni_error *e)
{
	if (vlen >= cap)
		return cni_fail(e, CNI_ERR_ENV, "CNI_ARGS %s is longer than %zu bytes", key,
		                cap - 1);
	if (vlen && !name_valid(v, vlen))
		return cni_fail(e, CNI_ERR_ENV,
		                "CNI_ARGS %s has a character outside [A-Za-z0-9._-]", key);
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
	return 0;
}

static int parse_bool(const char *v, size_t n, int *out)
{
	static const char *const yes[] = { "true", "1", "yes", "on" };
	static const char *const no[] = { "false", "0", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (strlen(yes[i]) == n && !strncasecmp(v, yes[i], n)) {
			*out = 1;
			return 0;
		}
		if (strlen(no[i]) == n && !strncasecmp(v, no[i], n)) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

static int args_key(const char *k, size_t klen, const char *name)
{
	return strlen(name) == klen && !memcmp(k, name, klen);
}

int cni_args_parse(const char *s, struct cni_args *a, struct cni_error *e)
{
	char lbuf[CNI_ARGS_MAX + 1];
	const char *labels = NULL;
	size_t labels_len = 0;
	const char *p = s;

	memset(a, 0, sizeof(*a));
	a->enroll = -1;
	if (strlen(s) > CNI_ARGS_MAX)
		return cni_fail(e, CNI_ERR_ENV, "CNI_ARGS is longer than %d bytes", CNI_ARGS_MAX);

	while (*p) {
		const char *end = strchr(p, ';');
		size_t seg = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', seg);
		const char *v;
		size_t klen, vlen;

		if (seg == 0)
			goto next;
		if (!eq || eq == p) {
			cni_fail(e, CNI_ERR_ENV, "CNI_ARGS: segment is not KEY=VALUE");
			cni_details(e, "segment \"%.*s\"", (int)(seg > 64 ? 64 : seg), p);
			return -1;
		}
		klen = (size_t)(eq - p);
		v = eq + 1;
		vlen = seg - klen - 1;
		if (args_key(p, klen, "K8S_POD_NAMESPACE")) {
			if (copy_name(a->pod_ns, sizeof(a->pod_ns), v, vlen, "K8S_POD_NAMESPACE",
			              e))
				return -1;
		} else if (args_key(p, klen, "K8S_POD_NAME")) {
			if (copy_name(a->pod_name, sizeof(a->pod_name), v, vlen, "K8S_POD_NAME", e))
				return -1;
		} else if (args_key(p, klen, "K8S_POD_UID")) {
			if (copy_name(a->pod_uid, sizeof(a->pod_uid), v, vlen, "K8S_POD_UID", e))
				return -1;
		} else if (args_key(p, klen, "AMBIT_SERVICE_ACCOUNT")) {
			if (copy_name(a->sa, sizeof(a->sa), v, vlen, "AMBIT_SERVICE_ACCOUNT", e))
				return -1;
		} else if (args_key(p, klen, "AMBIT_ENROLL")) {
			if (parse_bool(v, vlen, &a->enroll))
				return cni_fail(e, CNI_ERR_ENV,
				                "CNI_ARGS AMBIT_ENROLL must be true or false");
		} else if (args_key(p, klen, "AMBIT_LABELS")) {
			/* Last duplicate wins: remember, parse once at the end. */
			labels = v;
			labels_len = vlen;
		}
	next:
		p += seg;
		if (*p == ';')
			p++;
	}
	if (labels) {
		memcpy(lbuf, labels, labels_len);
		lbuf[labels_len] = '\0';
		a->has_labels = 1;
		if (cni_labels_parse(lbuf, a->labels, &a->n_labels, CNI_ERR_ENV, e))
			return -1;
	}
	return 0;
}

/* ---- stdin --------------------------------------------------------------- */

static int get_string(json_t *obj, const char *key, char *dst, size_t cap, int required,
                      struct cni_error *e)
{
	json_t *v = json_object_get(obj, key);

	if (!v) {
		if (required)
			return cni_fail(e, CNI_ERR_CONFIG, "network config has no \"%s\"", key);
		return 0;
	}
	if (!json_is_string(v))
		return cni_fail(e, CNI_ERR_CONFIG, "\"%s\" must be a string", key);
	if (json_string_length(v) >= cap || strlen(json_string_value(v)) != json_string_length(v))
		return cni_fail(e, CNI_ERR_CONFIG, "\"%s\" is longer than %zu bytes", key, cap - 1);
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int get_names(json_t *obj, const char *key, char (*dst)[WL_NAME_MAX], unsigned *n,
                     int *present, struct cni_error *e)
{
	json_t *arr = json_object_get(obj, key);
	size_t i;
	json_t *v;

	*n = 0;
	if (!arr)
		return 0;
	if (!json_is_array(arr))
		return cni_fail(e, CNI_ERR_CONFIG, "\"%s\" must be an array of strings", key);
	if (json_array_size(arr) > CNI_MAX_NAMESPACES)
		return cni_fail(e, CNI_ERR_CONFIG, "\"%s\" has more than %d entries", key,
		                CNI_MAX_NAMESPACES);
	if (present)
		*present = 1;
	json_array_foreach(arr, i, v)
	{
		if (!json_is_string(v) || json_string_length(v) >= WL_NAME_MAX ||
		    !name_valid(json_string_value(v), json_string_length(v)))
			return cni_fail(e, CNI_ERR_CONFIG, "\"%s\"[%zu] is not a namespace name",
			                key, i);
		memcpy(dst[*n], json_string_value(v), json_string_length(v) + 1);
		(*n)++;
	}
	return 0;
}

static int parse_cidr(const char *s, struct redirect_cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	int max;
	long plen;
	char *end;

	if (alen == 0 || alen >= INET6_ADDRSTRLEN)
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		return -1;
	}
	if (!slash) {
		c->prefix_len = (uint8_t)max;
		return 0;
	}
	if (slash[1] < '0' || slash[1] > '9' || strlen(slash + 1) > 3)
		return -1;
	errno = 0;
	plen = strtol(slash + 1, &end, 10);
	if (errno || *end || plen < 0 || plen > max)
		return -1;
	c->prefix_len = (uint8_t)plen;
	/* Canonical form: host bits cleared, as the rules match prefixes. */
	for (int bit = (int)plen; bit < max; bit++)
		c->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
	return 0;
}

static int get_ports(json_t *obj, const char *key, uint16_t *dst, size_t *n, struct cni_error *e)
{
	json_t *arr = json_object_get(obj, key);
	size_t i;
	json_t *v;

	*n = 0;
	if (!arr)
		return 0;
	if (!json_is_array(arr))
		return cni_fail(e, CNI_ERR_CONFIG, "redirect.%s must be an array of ports", key);
	if (json_array_size(arr) > REDIRECT_MAX_EXCLUDES)
		return cni_fail(e, CNI_ERR_CONFIG, "redirect.%s has more than %d entries", key,
		                REDIRECT_MAX_EXCLUDES);
	json_array_foreach(arr, i, v)
	{
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 65535)
			return cni_fail(e, CNI_ERR_CONFIG,
			                "redirect.%s[%zu] is not a port 1..65535", key, i);
		dst[(*n)++] = (uint16_t)json_integer_value(v);
	}
	return 0;
}

static int parse_redirect(json_t *r, struct redirect_opts *o, struct cni_error *e)
{
	json_t *arr, *v;
	size_t i;

	if (!r)
		return 0;
	if (!json_is_object(r))
		return cni_fail(e, CNI_ERR_CONFIG, "\"redirect\" must be an object");
	arr = json_object_get(r, "excludeCidrs");
	if (arr) {
		if (!json_is_array(arr))
			return cni_fail(e, CNI_ERR_CONFIG,
			                "redirect.excludeCidrs must be an array");
		if (json_array_size(arr) > REDIRECT_MAX_EXCLUDES)
			return cni_fail(e, CNI_ERR_CONFIG,
			                "redirect.excludeCidrs has more than %d entries",
			                REDIRECT_MAX_EXCLUDES);
		json_array_foreach(arr, i, v)
		{
			if (!json_is_string(v) ||
			    parse_cidr(json_string_value(v), &o->exclude_cidrs[i]))
				return cni_fail(
				    e, CNI_ERR_CONFIG,
				    "redirect.excludeCidrs[%zu] is not an address/prefix", i);
		}
		o->n_exclude_cidrs = json_array_size(arr);
	}
	if (get_ports(r, "excludePorts", o->exclude_out_ports, &o->n_exclude_out_ports, e) ||
	    get_ports(r, "excludeInboundPorts", o->exclude_in_ports, &o->n_exclude_in_ports, e))
		return -1;
	return 0;
}

static int parse_labels_obj(json_t *l, struct wl_label *labels, unsigned *n, struct cni_error *e)
{
	const char *k;
	json_t *v;

	if (!l)
		return 0;
	if (!json_is_object(l))
		return cni_fail(e, CNI_ERR_CONFIG, "\"labels\" must be an object of strings");
	json_object_foreach(l, k, v)
	{
		if (!json_is_string(v))
			return cni_fail(e, CNI_ERR_CONFIG, "labels.%.64s must be a string", k);
		if (label_put(labels, n, k, strlen(k), json_string_value(v), json_string_length(v),
		              CNI_ERR_CONFIG, e))
			return -1;
	}
	return 0;
}

/* "args": {"cni": {"AMBIT_SERVICE_ACCOUNT": "sa", "AMBIT_ENROLL": true,
 * "AMBIT_LABELS": "k:v,k:v" or {"k": "v"}}}; other keys are ignored. */
static int parse_conf_args(json_t *args, struct cni_args *a, struct cni_error *e)
{
	json_t *cni, *v;

	memset(a, 0, sizeof(*a));
	a->enroll = -1;
	if (!args)
		return 0;
	if (!json_is_object(args))
		return cni_fail(e, CNI_ERR_CONFIG, "\"args\" must be an object");
	cni = json_object_get(args, "cni");
	if (!cni)
		return 0;
	if (!json_is_object(cni))
		return cni_fail(e, CNI_ERR_CONFIG, "\"args.cni\" must be an object");
	v = json_object_get(cni, "AMBIT_SERVICE_ACCOUNT");
	if (v && (!json_is_string(v) || json_string_length(v) >= sizeof(a->sa) ||
	          !name_valid(json_string_value(v), json_string_length(v))))
		return cni_fail(e, CNI_ERR_CONFIG, "args.cni.AMBIT_SERVICE_ACCOUNT is not a name");
	if (v)
		memcpy(a->sa, json_string_value(v), json_string_length(v) + 1);
	v = json_object_get(cni, "AMBIT_ENROLL");
	if (json_is_boolean(v))
		a->enroll = json_is_true(v);
	else if (v && (!json_is_string(v) ||
	               parse_bool(json_string_value(v), json_string_length(v), &a->enroll)))
		return cni_fail(e, CNI_ERR_CONFIG, "args.cni.AMBIT_ENROLL must be true or false");
	v = json_object_get(cni, "AMBIT_LABELS");
	if (json_is_string(v)) {
		if (strlen(json_string_value(v)) != json_string_length(v))
			return cni_fail(e, CNI_ERR_CONFIG, "args.cni.AMBIT_LABELS has a NUL byte");
		a->has_labels = 1;
		return cni_labels_parse(json_string_value(v), a->labels, &a->n_labels,
		                        CNI_ERR_CONFIG, e);
	}
	if (v && !json_is_object(v))
		return cni_fail(e, CNI_ERR_CONFIG,
		                "args.cni.AMBIT_LABELS must be \"k:v,...\" or an object");
	a->has_labels = v != NULL;
	return parse_labels_obj(v, a->labels, &a->n_labels, e);
}

int cni_args_merge(struct cni_args *a, const struct cni_args *lower, struct cni_error *e)
{
	struct wl_label mine[WL_MAX_LABELS];
	unsigned n_mine = a->n_labels;

	if (!a->sa[0])
		memcpy(a->sa, lower->sa, sizeof(a->sa));
	if (a->enroll < 0)
		a->enroll = lower->enroll;
	if (!lower->n_labels)
		return 0;
	memcpy(mine, a->labels, n_mine * sizeof(mine[0]));
	memcpy(a->labels, lower->labels, lower->n_labels * sizeof(a->labels[0]));
	a->n_labels = lower->n_labels;
	a->has_labels = 1;
	for (unsigned i = 0; i < n_mine; i++) {
		unsigned j;

		for (j = 0; j < a->n_labels; j++)
			if (!strcmp(a->labels[j].key, mine[i].key))
				break;
		if (j == a->n_labels) {
			if (a->n_labels >= WL_MAX_LABELS)
				return cni_fail(e, CNI_ERR_ENV, "more than %d labels",
				                WL_MAX_LABELS);
			a->n_labels++;
		}
		a->labels[j] = mine[i];
	}
	return 0;
}

static int parse_valid_attachments(struct cni_conf *c, struct cni_error *e)
{
	json_t *arr = json_object_get(c->root, "cni.dev/valid-attachments");
	size_t i;
	json_t *v;

	/* Absent is not "none valid": that would deregister every pod. */
	if (!arr)
		return cni_fail(e, CNI_ERR_CONFIG, "GC needs \"cni.dev/valid-attachments\"");
	if (!json_is_array(arr))
		return cni_fail(e, CNI_ERR_CONFIG,
		                "\"cni.dev/valid-attachments\" must be an array");
	if (json_array_size(arr) == 0)
		return 0;
	c->valid_ids = calloc(json_array_size(arr), sizeof(*c->valid_ids));
	if (!c->valid_ids)
		return cni_fail(e, CNI_ERR_IO, "out of memory");
	json_array_foreach(arr, i, v)
	{
		json_t *id = json_object_get(v, "containerID");
		json_t *ifn = json_object_get(v, "ifname");

		if (!json_is_object(v) || !json_is_string(id) ||
		    !cni_container_id_valid(json_string_value(id)) ||
		    strlen(json_string_value(id)) != json_string_length(id) ||
		    (ifn && !json_is_string(ifn)))
			return cni_fail(e, CNI_ERR_CONFIG,
			                "cni.dev/valid-attachments[%zu] needs a valid containerID",
			                i);
		c->valid_ids[c->n_valid++] = json_string_value(id);
	}
	return 0;
}

int cni_conf_parse(const char *buf, size_t len, enum cni_cmd cmd, struct cni_conf *c,
                   struct cni_error *e)
{
	json_error_t jerr;
	json_t *v;

	memset(c, 0, sizeof(*c));
	c->name = "";
	strcpy(c->version, CNI_VERSION_DEFAULT);
	strcpy(c->control_socket, "/run/ambit/node-proxy.sock");
	strcpy(c->state_dir, "/run/ambit/cni");
	strcpy(c->sa, "default");
	c->timeout_ms = 2000;
	c->conf_args.enroll = -1;

	if (cmd == CNI_CMD_VERSION) {
		/* VERSION reads only cniVersion, and tolerates anything else:
		 * a runtime may probe with an empty stdin. */
		size_t i = 0;

		while (i < len &&
		       (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\t' || buf[i] == '\r'))
			i++;
		if (i == len)
			return 0;
		c->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
		if (!c->root) {
			cni_fail(e, CNI_ERR_DECODE, "stdin is not valid JSON");
			cni_details(e, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
			return -1;
		}
		v = json_object_get(c->root, "cniVersion");
		if (json_is_string(v) && json_string_length(v) < sizeof(c->version))
			memcpy(c->version, json_string_value(v), json_string_length(v) + 1);
		return 0;
	}

	if (len == 0)
		return cni_fail(e, CNI_ERR_DECODE, "no network configuration on stdin");
	c->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!c->root) {
		cni_fail(e, CNI_ERR_DECODE, "network configuration is not valid JSON");
		cni_details(e, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
		return -1;
	}
	if (!json_is_object(c->root))
		return cni_fail(e, CNI_ERR_CONFIG, "network configuration is not a JSON object");
	if (get_string(c->root, "cniVersion", c->version, sizeof(c->version), 1, e)) {
		/* Keep the error's own cniVersion printable. */
		strcpy(c->version, CNI_VERSION_DEFAULT);
		return -1;
	}
	if (!cni_version_supported(c->version)) {
		cni_fail(e, CNI_ERR_VERSION, "incompatible CNI version %.15s", c->version);
		cni_details(e, "ambit-cni supports 1.0.0 and 1.1.0");
		return -1;
	}
	if ((cmd == CNI_CMD_STATUS || cmd == CNI_CMD_GC) && strcmp(c->version, "1.1.0")) {
		cni_fail(e, CNI_ERR_VERSION, "%s needs cniVersion 1.1.0",
		         cmd == CNI_CMD_GC ? "GC" : "STATUS");
		return -1;
	}
	v = json_object_get(c->root, "type");
	if (!json_is_string(v))
		return cni_fail(e, CNI_ERR_CONFIG, "network config has no \"type\" string");
	v = json_object_get(c->root, "name");
	if (v && !json_is_string(v))
		return cni_fail(e, CNI_ERR_CONFIG, "\"name\" must be a string");
	if (v) {
		/* The name becomes a directory under stateDir: no "." or "..". */
		if (!name_valid(json_string_value(v), json_string_length(v)) ||
		    !is_alnum(json_string_value(v)[0]) || json_string_length(v) >= WL_NAME_MAX)
			return cni_fail(e, CNI_ERR_CONFIG,
			                "\"name\" must be 1..%d of [A-Za-z0-9._-]",
			                WL_NAME_MAX - 1);
		c->name = json_string_value(v);
	}
	if (get_string(c->root, "controlSocket", c->control_socket, sizeof(c->control_socket), 0,
	               e) ||
	    get_string(c->root, "stateDir", c->state_dir, sizeof(c->state_dir), 0, e) ||
	    get_string(c->root, "logFile", c->log_file, sizeof(c->log_file), 0, e) ||
	    get_string(c->root, "serviceAccount", c->sa, sizeof(c->sa), 0, e))
		return -1;
	if (c->control_socket[0] != '/' || c->state_dir[0] != '/' ||
	    (c->log_file[0] && c->log_file[0] != '/'))
		return cni_fail(e, CNI_ERR_CONFIG,
		                "controlSocket, stateDir and logFile must be absolute paths");
	if (!name_valid(c->sa, strlen(c->sa)))
		return cni_fail(e, CNI_ERR_CONFIG, "\"serviceAccount\" is not a valid name");
	v = json_object_get(c->root, "timeoutMs");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 60000)
			return cni_fail(e, CNI_ERR_CONFIG, "\"timeoutMs\" must be 1..60000");
		c->timeout_ms = (int)json_integer_value(v);
	}
	if (get_names(c->root, "excludeNamespaces", c->exclude_ns, &c->n_exclude_ns, NULL, e) ||
	    get_names(c->root, "enrollNamespaces", c->enroll_ns, &c->n_enroll_ns, &c->has_enroll_ns,
	              e) ||
	    parse_labels_obj(json_object_get(c->root, "labels"), c->labels, &c->n_labels, e) ||
	    parse_redirect(json_object_get(c->root, "redirect"), &c->redirect, e) ||
	    parse_conf_args(json_object_get(c->root, "args"), &c->conf_args, e))
		return -1;
	v = json_object_get(c->root, "prevResult");
	if (v && !json_is_object(v))
		return cni_fail(e, CNI_ERR_CONFIG, "\"prevResult\" must be an object");
	c->prev_result = v;
	if (cmd == CNI_CMD_GC && parse_valid_attachments(c, e))
		return -1;
	return 0;
}

void cni_conf_free(struct cni_conf *c)
{
	free(c->valid_ids);
	c->valid_ids = NULL;
	c->n_valid = 0;
	json_decref(c->root);
	c->root = NULL;
	c->prev_result = NULL;
}

/* ---- prevResult ---------------------------------------------------------- */

static int parse_ip_cidr(const char *s, struct wl_ip *ip)
{
	struct redirect_cidr c;

	char addr[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');

	/* prevResult addresses are always CIDR: require (and check) the
	 * prefix, but keep the host part, which is the pod's address. */
	if (!slash || parse_cidr(s, &c) || (size_t)(slash - s) >= sizeof(addr))
		return -1;
	memcpy(addr, s, (size_t)(slash - s));
	addr[slash - s] = '\0';
	if (inet_pton(c.family, addr, c.addr) != 1)
		return -1;
	memset(ip, 0, sizeof(*ip));
	ip->family = c.family;
	if (c.family == AF_INET)
		memcpy(&ip->v4, c.addr, 4);
	else
		memcpy(&ip->v6, c.addr, 16);
	return 0;
}

int cni_prev_ips(const struct cni_conf *c, struct wl_ip *ips, unsigned *n, unsigned *dropped,
                 struct cni_error *e)
{
	json_t *pr = c->prev_result, *arr, *ifs, *v;
	size_t i;

	*n = 0;
	*dropped = 0;
	if (!pr)
		return cni_fail(e, CNI_ERR_CONFIG,
		                "no prevResult: ambit-cni must be chained after the main plugin");
	ifs = json_object_get(pr, "interfaces");
	if (ifs && !json_is_array(ifs))
		return cni_fail(e, CNI_ERR_CONFIG, "prevResult.interfaces must be an array");
	json_array_foreach(ifs, i, v)
	{
		json_t *sb = json_object_get(v, "sandbox");

		if (!json_is_object(v) || (sb && !json_is_string(sb)))
			return cni_fail(e, CNI_ERR_CONFIG,
			                "prevResult.interfaces[%zu] is malformed", i);
	}
	arr = json_object_get(pr, "ips");
	if (arr && !json_is_array(arr))
		return cni_fail(e, CNI_ERR_CONFIG, "prevResult.ips must be an array");
	json_array_foreach(arr, i, v)
	{
		json_t *addr = json_object_get(v, "address");
		json_t *idx = json_object_get(v, "interface");
		struct wl_ip ip;

		if (!json_is_object(v) || !json_is_string(addr) ||
		    parse_ip_cidr(json_string_value(addr), &ip))
			return cni_fail(e, CNI_ERR_CONFIG,
			                "prevResult.ips[%zu].address is not an address/prefix", i);
		if (idx) {
			json_t *itf;
			json_t *sb;

			if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
			    (size_t)json_integer_value(idx) >= json_array_size(ifs))
				return cni_fail(e, CNI_ERR_CONFIG,
				                "prevResult.ips[%zu].interface is out of range", i);
			itf = json_array_get(ifs, (size_t)json_integer_value(idx));
			sb = json_object_get(itf, "sandbox");
			/* Host-side veth ends and bridges carry no sandbox. */
			if (!sb || json_string_length(sb) == 0)
				continue;
		}
		if (*n >= WL_MAX_IPS) {
			(*dropped)++;
			continue;
		}
		ips[(*n)++] = ip;
	}
	if (*n == 0)
		return cni_fail(e, CNI_ERR_CONFIG,
		                "prevResult has no IP address inside the sandbox");
	return 0;
}

/* ---- decisions ----------------------------------------------------------- */

static int ns_listed(const char (*list)[WL_NAME_MAX], unsigned n, const char *ns)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(list[i], ns))
			return 1;
	return 0;
}

int cni_enroll_decision(const struct cni_conf *c, const struct cni_args *a, const char **why)
{
	const char *ns = a->pod_ns[0] ? a->pod_ns : "default";

	if (a->enroll == 0) {
		*why = "pod opted out (AMBIT_ENROLL=false)";
		return 0;
	}
	if (ns_listed(c->exclude_ns, c->n_exclude_ns, ns)) {
		*why = "namespace is in excludeNamespaces";
		return 0;
	}
	if (a->enroll == 1) {
		*why = "pod opted in (AMBIT_ENROLL=true)";
		return 1;
	}
	if (c->has_enroll_ns) {
		if (ns_listed(c->enroll_ns, c->n_enroll_ns, ns)) {
			*why = "namespace is in enrollNamespaces";
			return 1;
		}
		*why = "namespace is not in enrollNamespaces";
		return 0;
	}
	*why = "enrolled by default";
	return 1;
}

static void copy_trunc(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);

	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

int cni_workload_build(const struct cni_conf *c, const struct cni_args *a,
                       const struct cni_env *env, const struct wl_ip *ips, unsigned n_ips,
                       struct workload *w, struct cni_error *e)
{
	memset(w, 0, sizeof(*w));
	if (strlen(env->netns) >= sizeof(w->netns_path))
		return cni_fail(e, CNI_ERR_ENV, "CNI_NETNS is longer than %zu bytes",
		                sizeof(w->netns_path) - 1);
	copy_trunc(w->uid, sizeof(w->uid), a->pod_uid[0] ? a->pod_uid : env->container_id);
	copy_trunc(w->ns, sizeof(w->ns), a->pod_ns[0] ? a->pod_ns : "default");
	copy_trunc(w->name, sizeof(w->name), a->pod_name[0] ? a->pod_name : env->container_id);
	copy_trunc(w->sa, sizeof(w->sa), a->sa[0] ? a->sa : c->sa[0] ? c->sa : "default");
	copy_trunc(w->netns_path, sizeof(w->netns_path), env->netns);
	if (n_ips > WL_MAX_IPS)
		n_ips = WL_MAX_IPS;
	memcpy(w->ips, ips, n_ips * sizeof(*ips));
	w->n_ips = n_ips;
	memcpy(w->labels, c->labels, c->n_labels * sizeof(c->labels[0]));
	w->n_labels = c->n_labels;
	for (unsigned i = 0; i < a->n_labels; i++) {
		unsigned j;

		for (j = 0; j < w->n_labels; j++)
			if (!strcmp(w->labels[j].key, a->labels[i].key))
				break;
		if (j == w->n_labels) {
			if (w->n_labels >= WL_MAX_LABELS)
				return cni_fail(e, CNI_ERR_ENV,
				                "more than %d labels after merging AMBIT_LABELS",
				                WL_MAX_LABELS);
			w->n_labels++;
		}
		w->labels[j] = a->labels[i];
	}
	return 0;
}
