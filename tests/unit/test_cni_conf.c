/*
 * Unit tests of cni-plugin/cniconf.c: the CNI environment, CNI_ARGS,
 * labels, the network configuration, prevResult IPs, the enrollment
 * decision and the workload built from all of them.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cni-plugin/cniconf.h"

/* ---- environment --------------------------------------------------------- */

static const char *const *fake_env;

static const char *fake_get(const char *name)
{
	size_t n = strlen(name);

	for (const char *const *p = fake_env; *p; p++)
		if (!strncmp(*p, name, n) && (*p)[n] == '=')
			return *p + n + 1;
	return NULL;
}

static int env_with(const char *const *vars, struct cni_env *env, struct cni_error *e)
{
	fake_env = vars;
	return cni_env_read(env, fake_get, e);
}

static void test_env_ok(void **state)
{
	static const char *const v[] = { "CNI_COMMAND=ADD", "CNI_CONTAINERID=abc-1.x_y",
		                         "CNI_IFNAME=eth0", "CNI_NETNS=/run/netns/p",
		                         "CNI_ARGS=a=b",    NULL };
	struct cni_env env;
	struct cni_error e;

	(void)state;
	assert_int_equal(env_with(v, &env, &e), 0);
	assert_int_equal(env.cmd, CNI_CMD_ADD);
	assert_string_equal(env.container_id, "abc-1.x_y");
	assert_string_equal(env.netns, "/run/netns/p");
	assert_string_equal(env.path, "");
}

static void test_env_errors(void **state)
{
	static const char *const none[] = { NULL };
	static const char *const bad_cmd[] = { "CNI_COMMAND=FROB", NULL };
	static const char *const no_cid[] = { "CNI_COMMAND=DEL", "CNI_IFNAME=eth0", NULL };
	static const char *const bad_cid[] = { "CNI_COMMAND=ADD", "CNI_CONTAINERID=../etc",
		                               "CNI_IFNAME=eth0", NULL };
	static const char *const no_if[] = { "CNI_COMMAND=CHECK", "CNI_CONTAINERID=c", NULL };
	static const char *const bad_if[] = { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c",
		                              "CNI_IFNAME=a/b", NULL };
	static const char *const long_if[] = { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c",
		                               "CNI_IFNAME=0123456789abcdef", NULL };
	static const char *const rel_ns[] = { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c",
		                              "CNI_IFNAME=eth0", "CNI_NETNS=netns", NULL };
	static const char *const *const cases[] = { none,  bad_cmd, no_cid,  bad_cid,
		                                    no_if, bad_if,  long_if, rel_ns };
	struct cni_env env;
	struct cni_error e;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		e.code = 0;
		assert_int_equal(env_with(cases[i], &env, &e), -1);
		assert_int_equal(e.code, CNI_ERR_ENV);
		assert_true(e.msg[0] != '\0');
	}
}

static void test_env_version_status_need_little(void **state)
{
	static const char *const ver[] = { "CNI_COMMAND=VERSION", NULL };
	static const char *const st[] = { "CNI_COMMAND=STATUS", NULL };
	static const char *const gc[] = { "CNI_COMMAND=GC", NULL };
	struct cni_env env;
	struct cni_error e;

	(void)state;
	assert_int_equal(env_with(ver, &env, &e), 0);
	assert_int_equal(env.cmd, CNI_CMD_VERSION);
	assert_int_equal(env_with(st, &env, &e), 0);
	assert_int_equal(env.cmd, CNI_CMD_STATUS);
	assert_int_equal(env_with(gc, &env, &e), 0);
	assert_int_equal(env.cmd, CNI_CMD_GC);
}

/* ---- CNI_ARGS ------------------------------------------------------------ */

static void test_args_basic(void **state)
{
	struct cni_args a;
	struct cni_error e;

	(void)state;
	assert_int_equal(cni_args_parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;"
	                                "K8S_POD_NAME=web-0;K8S_POD_UID=1234-abcd;"
	                                "K8S_POD_INFRA_CONTAINER_ID=xyz",
	                                &a, &e),
	                 0);
	assert_string_equal(a.pod_ns, "prod");
	assert_string_equal(a.pod_name, "web-0");
	assert_string_equal(a.pod_uid, "1234-abcd");
	assert_int_equal(a.enroll, -1);
	assert_int_equal(a.has_labels, 0);
}

static void test_args_last_duplicate_wins_and_empty_segments(void **state)
{
	struct cni_args a;
	struct cni_error e;

	(void)state;
	assert_int_equal(cni_args_parse(";;K8S_POD_NAME=a;;K8S_POD_NAME=b;AMBIT_LABELS=x:1;"
	                                "AMBIT_LABELS=y:2,z=3;",
	                                &a, &e),
	                 0);
	assert_string_equal(a.pod_name, "b");
	assert_int_equal(a.n_labels, 2);
	assert_string_equal(a.labels[0].key, "y");
	assert_string_equal(a.labels[1].val, "3");
	assert_int_equal(cni_args_parse("", &a, &e), 0);
	assert_string_equal(a.pod_name, "");
}

static void test_args_values_with_equals_and_unknown(void **state)
{
	struct cni_args a;
	struct cni_error e;

	(void)state;
	/* Unknown keys may hold anything but ';'. */
	assert_int_equal(cni_args_parse("FOO=a=b=c;BAR= spaces ok ;K8S_POD_NAME=p", &a, &e), 0);
	assert_string_equal(a.pod_name, "p");
}

static void test_args_enroll(void **state)
{
	struct cni_args a;
	struct cni_error e;

	(void)state;
	assert_int_equal(cni_args_parse("AMBIT_ENROLL=false", &a, &e), 0);
	assert_int_equal(a.enroll, 0);
	assert_int_equal(cni_args_parse("AMBIT_ENROLL=TRUE", &a, &e), 0);
	assert_int_equal(a.enroll, 1);
	assert_int_equal(cni_args_parse("AMBIT_ENROLL=0", &a, &e), 0);
	assert_int_equal(a.enroll, 0);
	assert_int_equal(cni_args_parse("AMBIT_ENROLL=maybe", &a, &e), -1);
	assert_int_equal(e.code, CNI_ERR_ENV);
	assert_int_equal(cni_args_parse("AMBIT_ENROLL=", &a, &e), -1);
}

static void test_args_errors(void **state)
{
	static const char *const bad[] = {
		"K8S_POD_NAME",            /* no '=' */
		"=value",                  /* empty key */
		"a=b;novalue",             /* second segment */
		"K8S_POD_NAMESPACE=a b",   /* space */
		"K8S_POD_NAME=x/y",        /* slash */
		"K8S_POD_UID=\"q\"",       /* quote */
		"AMBIT_SERVICE_ACCOUNT=$", /* symbol */
		"AMBIT_LABELS=novalue",    /* label without '=' */
		"AMBIT_LABELS=:v",         /* empty label key */
		"AMBIT_LABELS=a:b c",      /* space in value */
	};
	struct cni_args a;
	struct cni_error e;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e.code = 0;
		assert_int_equal(cni_args_parse(bad[i], &a, &e), -1);
		assert_int_equal(e.code, CNI_ERR_ENV);
	}
}

static void test_args_bounds(void **state)
{
	char *s = malloc(CNI_ARGS_MAX + 64);
	struct cni_args a;
	struct cni_error e;
	int n;

	(void)state;
	assert_non_null(s);
	/* A name of exactly WL_NAME_MAX - 1 bytes fits; one more does not. */
	n = sprintf(s, "K8S_POD_NAME=");
	memset(s + n, 'a', WL_NAME_MAX - 1);
	s[n + WL_NAME_MAX - 1] = '\0';
	assert_int_equal(cni_args_parse(s, &a, &e), 0);
	assert_int_equal(strlen(a.pod_name), WL_NAME_MAX - 1);
	s[n + WL_NAME_MAX - 1] = 'a';
	s[n + WL_NAME_MAX] = '\0';
	assert_int_equal(cni_args_parse(s, &a, &e), -1);
	/* UIDs are shorter. */
	n = sprintf(s, "K8S_POD_UID=");
	memset(s + n, 'f', WL_UID_MAX);
	s[n + WL_UID_MAX] = '\0';
	assert_int_equal(cni_args_parse(s, &a, &e), -1);
	/* The whole string is bounded. */
	memset(s, 'x', CNI_ARGS_MAX + 1);
	s[0] = 'k';
	s[1] = '=';
	s[CNI_ARGS_MAX + 1] = '\0';
	assert_int_equal(cni_args_parse(s, &a, &e), -1);
	assert_int_equal(e.code, CNI_ERR_ENV);
	s[CNI_ARGS_MAX] = '\0';
	assert_int_equal(cni_args_parse(s, &a, &e), 0);
	free(s);
}

static void test_labels(void **state)
{
	struct wl_label l[WL_MAX_LABELS];
	char buf[WL_MAX_LABELS * 8 + 16];
	struct cni_error e;
	unsigned n = 0;
	size_t off = 0;

	(void)state;
	assert_int_equal(cni_labels_parse("app=x,version=v1,,app=y,empty=", l, &n, 7, &e), 0);
	assert_int_equal(n, 3);
	assert_string_equal(l[0].key, "app");
	assert_string_equal(l[0].val, "y");
	assert_string_equal(l[2].key, "empty");
	assert_string_equal(l[2].val, "");
	n = 0;
	assert_int_equal(cni_labels_parse("app.kubernetes.io/name=web", l, &n, 7, &e), 0);
	assert_string_equal(l[0].key, "app.kubernetes.io/name");
	/* Capacity: WL_MAX_LABELS distinct keys fit, one more fails. */
	for (int i = 0; i <= WL_MAX_LABELS; i++)
		off += (size_t)sprintf(buf + off, "k%d=v,", i);
	n = 0;
	assert_int_equal(cni_labels_parse(buf, l, &n, 7, &e), -1);
	assert_int_equal(e.code, 7);
	/* Values are bounded by WL_LABEL_VAL_MAX. */
	memset(buf, 'v', sizeof(buf));
	memcpy(buf, "k=", 2);
	buf[2 + WL_LABEL_VAL_MAX] = '\0';
	n = 0;
	assert_int_equal(cni_labels_parse(buf, l, &n, 4, &e), -1);
	buf[2 + WL_LABEL_VAL_MAX - 1] = '\0';
	n = 0;
	assert_int_equal(cni_labels_parse(buf, l, &n, 4, &e), 0);
}

/* ---- network configuration ----------------------------------------------- */

static int parse(const char *json, enum cni_cmd cmd, struct cni_conf *c, struct cni_error *e)
{
	return cni_conf_parse(json, strlen(json), cmd, c, e);
}

static struct cni_conf *new_conf(void)
{
	struct cni_conf *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	return c;
}

static void free_conf(struct cni_conf *c)
{
	cni_conf_free(c);
	free(c);
}

static void test_conf_full(void **state)
{
	const char *j =
	    "{\"cniVersion\":\"1.1.0\",\"name\":\"k8s-pod-network\",\"type\":\"ambit-cni\","
	    "\"controlSocket\":\"/run/x.sock\",\"stateDir\":\"/tmp/st\",\"logFile\":\"/tmp/l\","
	    "\"excludeNamespaces\":[\"kube-system\",\"istio-system\"],"
	    "\"enrollNamespaces\":[\"prod\"],\"serviceAccount\":\"web\","
	    "\"labels\":{\"app\":\"web\",\"tier\":\"fe\"},\"timeoutMs\":500,"
	    "\"redirect\":{\"excludeCidrs\":[\"10.1.2.3/8\",\"fd00::1\"],"
	    "\"excludePorts\":[22,53],\"excludeInboundPorts\":[9100]},"
	    "\"runtimeConfig\":{},\"args\":{\"cni\":{}},"
	    "\"prevResult\":{\"cniVersion\":\"1.1.0\",\"ips\":[]}}";
	struct cni_conf *c = new_conf();
	struct cni_error e;

	(void)state;
	assert_int_equal(parse(j, CNI_CMD_ADD, c, &e), 0);
	assert_string_equal(c->version, "1.1.0");
	assert_string_equal(c->name, "k8s-pod-network");
	assert_string_equal(c->control_socket, "/run/x.sock");
	assert_string_equal(c->state_dir, "/tmp/st");
	assert_string_equal(c->log_file, "/tmp/l");
	assert_int_equal(c->n_exclude_ns, 2);
	assert_string_equal(c->exclude_ns[1], "istio-system");
	assert_int_equal(c->has_enroll_ns, 1);
	assert_int_equal(c->n_enroll_ns, 1);
	assert_string_equal(c->sa, "web");
	assert_int_equal(c->n_labels, 2);
	assert_int_equal(c->timeout_ms, 500);
	assert_int_equal(c->redirect.n_exclude_cidrs, 2);
	assert_int_equal(c->redirect.exclude_cidrs[0].family, AF_INET);
	assert_int_equal(c->redirect.exclude_cidrs[0].prefix_len, 8);
	/* host bits cleared */
	assert_int_equal(c->redirect.exclude_cidrs[0].addr[1], 0);
	assert_int_equal(c->redirect.exclude_cidrs[0].addr[0], 10);
	assert_int_equal(c->redirect.exclude_cidrs[1].family, AF_INET6);
	assert_int_equal(c->redirect.exclude_cidrs[1].prefix_len, 128);
	assert_int_equal(c->redirect.n_exclude_out_ports, 2);
	assert_int_equal(c->redirect.exclude_out_ports[1], 53);
	assert_int_equal(c->redirect.exclude_in_ports[0], 9100);
	assert_non_null(c->prev_result);
	free_conf(c);
}

static void test_conf_defaults(void **state)
{
	struct cni_conf *c = new_conf();
	struct cni_error e;

	(void)state;
	assert_int_equal(
	    parse("{\"cniVersion\":\"1.0.0\",\"type\":\"ambit-cni\"}", CNI_CMD_DEL, c, &e), 0);
	assert_string_equal(c->control_socket, "/run/ambit/node-proxy.sock");
	assert_string_equal(c->sa, "default");
	assert_string_equal(c->name, "");
	assert_int_equal(c->timeout_ms, 2000);
	assert_int_equal(c->has_enroll_ns, 0);
	assert_null(c->prev_result);
	free_conf(c);
}

static void test_conf_errors(void **state)
{
	static const struct {
		const char *json;
		enum cni_cmd cmd;
		int code;
	} cases[] = {
		{ "", CNI_CMD_ADD, CNI_ERR_DECODE },
		{ "{", CNI_CMD_ADD, CNI_ERR_DECODE },
		{ "{\"a\":1,\"a\":2}", CNI_CMD_ADD, CNI_ERR_DECODE },
		{ "[1]", CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"type\":\"ambit-cni\"}", CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":1,\"type\":\"ambit-cni\"}", CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"0.4.0\",\"type\":\"ambit-cni\"}", CNI_CMD_ADD,
		  CNI_ERR_VERSION },
		{ "{\"cniVersion\":\"2.0.0\",\"type\":\"ambit-cni\"}", CNI_CMD_DEL,
		  CNI_ERR_VERSION },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"ambit-cni\"}", CNI_CMD_STATUS,
		  CNI_ERR_VERSION },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"ambit-cni\"}", CNI_CMD_GC,
		  CNI_ERR_VERSION },
		{ "{\"cniVersion\":\"1.0.0\"}", CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"name\":\"..\"}", CNI_CMD_ADD,
		  CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"name\":7}", CNI_CMD_ADD,
		  CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"controlSocket\":\"rel.sock\"}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"controlSocket\":\"/"
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  "aaaaa"
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"timeoutMs\":0}", CNI_CMD_ADD,
		  CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"timeoutMs\":\"5\"}", CNI_CMD_ADD,
		  CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"excludeNamespaces\":\"kube-system\"}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"excludeNamespaces\":[1]}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"labels\":{\"a\":1}}", CNI_CMD_ADD,
		  CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"labels\":{\"a b\":\"x\"}}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"serviceAccount\":\"a/b\"}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"redirect\":[]}", CNI_CMD_ADD,
		  CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"redirect\":{\"excludeCidrs\":"
		  "[\"10.0.0.0/33\"]}}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"redirect\":{\"excludeCidrs\":"
		  "[\"nonsense\"]}}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"redirect\":{\"excludePorts\":[0]}}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"redirect\":{\"excludePorts\":[65536]}"
		  "}",
		  CNI_CMD_ADD, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":[]}", CNI_CMD_ADD,
		  CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.1.0\",\"type\":\"t\"}", CNI_CMD_GC, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.1.0\",\"type\":\"t\",\"cni.dev/valid-attachments\":{}}",
		  CNI_CMD_GC, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.1.0\",\"type\":\"t\",\"cni.dev/valid-attachments\":"
		  "[{\"ifname\":\"eth0\"}]}",
		  CNI_CMD_GC, CNI_ERR_CONFIG },
		{ "{\"cniVersion\":\"1.1.0\",\"type\":\"t\",\"cni.dev/valid-attachments\":"
		  "[{\"containerID\":\"../x\"}]}",
		  CNI_CMD_GC, CNI_ERR_CONFIG },
	};
	struct cni_error e;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cni_conf *c = new_conf();

		e.code = 0;
		if (parse(cases[i].json, cases[i].cmd, c, &e) != -1 || e.code != cases[i].code)
			fail_msg("case %zu (%s): got code %d (%s), want %d", i, cases[i].json,
			         e.code, e.msg, cases[i].code);
		free_conf(c);
	}
}

static void test_conf_too_many(void **state)
{
	char buf[8192];
	struct cni_conf *c = new_conf();
	struct cni_error e;
	size_t off;

	(void)state;
	off = (size_t)sprintf(
	    buf, "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"redirect\":{\"excludePorts\":[");
	for (int i = 1; i <= REDIRECT_MAX_EXCLUDES + 1; i++)
		off += (size_t)sprintf(buf + off, "%s%d", i > 1 ? "," : "", i);
	sprintf(buf + off, "]}}");
	assert_int_equal(parse(buf, CNI_CMD_ADD, c, &e), -1);
	assert_int_equal(e.code, CNI_ERR_CONFIG);
	free_conf(c);
}

static void test_conf_version(void **state)
{
	struct cni_conf *c = new_conf();
	struct cni_error e;

	(void)state;
	assert_int_equal(parse("", CNI_CMD_VERSION, c, &e), 0);
	assert_string_equal(c->version, CNI_VERSION_DEFAULT);
	cni_conf_free(c);
	assert_int_equal(parse("{\"cniVersion\":\"1.0.0\"}", CNI_CMD_VERSION, c, &e), 0);
	assert_string_equal(c->version, "1.0.0");
	cni_conf_free(c);
	assert_int_equal(parse("{nope", CNI_CMD_VERSION, c, &e), -1);
	assert_int_equal(e.code, CNI_ERR_DECODE);
	free_conf(c);
}

static void test_conf_gc(void **state)
{
	const char *j = "{\"cniVersion\":\"1.1.0\",\"type\":\"t\",\"cni.dev/valid-attachments\":"
	                "[{\"containerID\":\"c1\",\"ifname\":\"eth0\"},{\"containerID\":\"c2\"}]}";
	struct cni_conf *c = new_conf();
	struct cni_error e;

	(void)state;
	assert_int_equal(parse(j, CNI_CMD_GC, c, &e), 0);
	assert_int_equal(c->n_valid, 2);
	assert_string_equal(c->valid_ids[1], "c2");
	free_conf(c);
}

/* ---- prevResult ---------------------------------------------------------- */

static const char *bridge_result =
    "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"cniVersion\":\"1.0.0\","
    "\"interfaces\":[{\"name\":\"cni0\",\"mac\":\"aa\"},{\"name\":\"veth1\"},"
    "{\"name\":\"eth0\",\"sandbox\":\"/run/netns/p\"}],"
    "\"ips\":[{\"address\":\"10.22.0.5/16\",\"gateway\":\"10.22.0.1\",\"interface\":2},"
    "{\"address\":\"10.99.0.1/24\",\"interface\":0},"
    "{\"address\":\"fd00::5/64\",\"interface\":2}]}}";

static void test_prev_ips(void **state)
{
	struct cni_conf *c = new_conf();
	struct wl_ip ips[WL_MAX_IPS];
	struct cni_error e;
	unsigned n, dropped;
	char s[64];

	(void)state;
	assert_int_equal(parse(bridge_result, CNI_CMD_ADD, c, &e), 0);
	assert_int_equal(cni_prev_ips(c, ips, &n, &dropped, &e), 0);
	assert_int_equal(n, 2); /* the bridge's address is on the host side */
	assert_int_equal(dropped, 0);
	assert_int_equal(ips[0].family, AF_INET);
	inet_ntop(AF_INET, &ips[0].v4, s, sizeof(s));
	assert_string_equal(s, "10.22.0.5"); /* host part kept */
	assert_int_equal(ips[1].family, AF_INET6);
	inet_ntop(AF_INET6, &ips[1].v6, s, sizeof(s));
	assert_string_equal(s, "fd00::5");
	free_conf(c);
}

static void test_prev_ips_errors(void **state)
{
	static const char *const bad[] = {
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\"}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"ips\":{}}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"ips\":[1]}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"ips\":"
		"[{\"address\":\"10.0.0.1\"}]}}", /* no prefix */
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"ips\":"
		"[{\"address\":\"10.0.0.1/24\",\"interface\":0}]}}", /* index out of range */
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"interfaces\":"
		"[{\"name\":\"br\"}],\"ips\":[{\"address\":\"10.0.0.1/24\",\"interface\":0}]}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"interfaces\":"
		"[{\"sandbox\":5}],\"ips\":[{\"address\":\"10.0.0.1/24\"}]}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"ips\":"
		"[{\"address\":\"10.0.0.1/24\",\"interface\":-1}]}}",
	};
	struct wl_ip ips[WL_MAX_IPS];
	struct cni_error e;
	unsigned n, dropped;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cni_conf *c = new_conf();

		assert_int_equal(parse(bad[i], CNI_CMD_ADD, c, &e), 0);
		e.code = 0;
		if (cni_prev_ips(c, ips, &n, &dropped, &e) != -1 || e.code != CNI_ERR_CONFIG)
			fail_msg("case %zu accepted", i);
		free_conf(c);
	}
}

static void test_prev_ips_cap(void **state)
{
	const char *j = "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"prevResult\":{\"ips\":["
	                "{\"address\":\"10.0.0.1/24\"},{\"address\":\"10.0.0.2/24\"},"
	                "{\"address\":\"10.0.0.3/24\"},{\"address\":\"10.0.0.4/24\"},"
	                "{\"address\":\"10.0.0.5/24\"},{\"address\":\"10.0.0.6/24\"}]}}";
	struct cni_conf *c = new_conf();
	struct wl_ip ips[WL_MAX_IPS];
	struct cni_error e;
	unsigned n, dropped;

	(void)state;
	assert_int_equal(parse(j, CNI_CMD_ADD, c, &e), 0);
	assert_int_equal(cni_prev_ips(c, ips, &n, &dropped, &e), 0);
	assert_int_equal(n, WL_MAX_IPS);
	assert_int_equal(dropped, 2);
	free_conf(c);
}

/* ---- decisions ----------------------------------------------------------- */

static void test_enroll_decision(void **state)
{
	struct cni_conf *c = new_conf();
	struct cni_args a;
	struct cni_error e;
	const char *why;

	(void)state;
	assert_int_equal(parse("{\"cniVersion\":\"1.0.0\",\"type\":\"t\","
	                       "\"excludeNamespaces\":[\"kube-system\"]}",
	                       CNI_CMD_ADD, c, &e),
	                 0);
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=prod", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 1);
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=prod;AMBIT_ENROLL=false", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 0);
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=kube-system", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 0);
	/* Excluded namespaces win over a pod's opt-in. */
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=kube-system;AMBIT_ENROLL=true", &a, &e),
	                 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 0);
	cni_conf_free(c);

	assert_int_equal(parse("{\"cniVersion\":\"1.0.0\",\"type\":\"t\","
	                       "\"enrollNamespaces\":[\"prod\"]}",
	                       CNI_CMD_ADD, c, &e),
	                 0);
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=prod", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 1);
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=dev", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 0);
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=dev;AMBIT_ENROLL=1", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 1);
	/* No namespace at all counts as "default". */
	assert_int_equal(cni_args_parse("", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 0);
	cni_conf_free(c);

	assert_int_equal(parse("{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"enrollNamespaces\":[]}",
	                       CNI_CMD_ADD, c, &e),
	                 0);
	assert_int_equal(cni_args_parse("K8S_POD_NAMESPACE=prod", &a, &e), 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 0);
	free_conf(c);
}

static void test_workload_build(void **state)
{
	struct cni_conf *c = new_conf();
	struct workload *w = calloc(1, sizeof(*w));
	struct cni_env env = { .cmd = CNI_CMD_ADD,
		               .container_id = "0123456789abcdef0123456789abcdef0123456789abcdef"
		                               "0123456789abcdef",
		               .netns = "/run/netns/p",
		               .ifname = "eth0",
		               .args = "" };
	struct wl_ip ip = { .family = AF_INET };
	struct cni_args a;
	struct cni_error e;

	(void)state;
	assert_non_null(w);
	assert_int_equal(
	    parse("{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"serviceAccount\":\"cfg\","
	          "\"labels\":{\"app\":\"cfg\",\"team\":\"a\"}}",
	          CNI_CMD_ADD, c, &e),
	    0);
	assert_int_equal(cni_args_parse("", &a, &e), 0);
	assert_int_equal(cni_workload_build(c, &a, &env, &ip, 1, w, &e), 0);
	/* Container IDs are 64 hex digits; uids hold WL_UID_MAX - 1. */
	assert_int_equal(strlen(w->uid), WL_UID_MAX - 1);
	assert_memory_equal(w->uid, env.container_id, WL_UID_MAX - 1);
	assert_string_equal(w->name, env.container_id);
	assert_string_equal(w->ns, "default");
	assert_string_equal(w->sa, "cfg");
	assert_string_equal(w->netns_path, "/run/netns/p");
	assert_int_equal(w->n_ips, 1);
	assert_int_equal(w->n_labels, 2);

	assert_int_equal(cni_args_parse("K8S_POD_UID=u-1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;"
	                                "AMBIT_SERVICE_ACCOUNT=args;AMBIT_LABELS=app:args,v:1",
	                                &a, &e),
	                 0);
	assert_int_equal(cni_workload_build(c, &a, &env, &ip, 1, w, &e), 0);
	assert_string_equal(w->uid, "u-1");
	assert_string_equal(w->ns, "prod");
	assert_string_equal(w->name, "web");
	assert_string_equal(w->sa, "args");
	assert_int_equal(w->n_labels, 3);
	assert_string_equal(w->labels[0].key, "app");
	assert_string_equal(w->labels[0].val, "args");
	assert_string_equal(w->labels[2].key, "v");
	free(w);
	free_conf(c);
}

static void test_conf_args_cni(void **state)
{
	struct cni_conf *c = new_conf();
	struct cni_args a;
	struct cni_error e;
	const char *why;

	(void)state;
	assert_int_equal(parse("{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":{\"cni\":{"
	                       "\"AMBIT_SERVICE_ACCOUNT\":\"web\",\"AMBIT_ENROLL\":false,"
	                       "\"AMBIT_LABELS\":{\"app\":\"conf\",\"tier\":\"fe\"},"
	                       "\"other\":[1,2]}}}",
	                       CNI_CMD_ADD, c, &e),
	                 0);
	assert_string_equal(c->conf_args.sa, "web");
	assert_int_equal(c->conf_args.enroll, 0);
	assert_int_equal(c->conf_args.n_labels, 2);
	/* CNI_ARGS wins, key by key. */
	assert_int_equal(cni_args_parse("AMBIT_LABELS=app:env,v:1", &a, &e), 0);
	assert_int_equal(cni_args_merge(&a, &c->conf_args, &e), 0);
	assert_string_equal(a.sa, "web");
	assert_int_equal(a.enroll, 0);
	assert_int_equal(cni_enroll_decision(c, &a, &why), 0);
	assert_int_equal(a.n_labels, 3);
	assert_string_equal(a.labels[0].key, "app");
	assert_string_equal(a.labels[0].val, "env");
	assert_string_equal(a.labels[1].key, "tier");
	assert_string_equal(a.labels[2].key, "v");
	assert_int_equal(cni_args_parse("AMBIT_ENROLL=true;AMBIT_SERVICE_ACCOUNT=x", &a, &e), 0);
	assert_int_equal(cni_args_merge(&a, &c->conf_args, &e), 0);
	assert_int_equal(a.enroll, 1);
	assert_string_equal(a.sa, "x");
	cni_conf_free(c);

	/* string form, and no args at all */
	assert_int_equal(parse("{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":{\"cni\":{"
	                       "\"AMBIT_LABELS\":\"a:1,b:2\",\"AMBIT_ENROLL\":\"yes\"}}}",
	                       CNI_CMD_ADD, c, &e),
	                 0);
	assert_int_equal(c->conf_args.n_labels, 2);
	assert_int_equal(c->conf_args.enroll, 1);
	cni_conf_free(c);
	assert_int_equal(parse("{\"cniVersion\":\"1.0.0\",\"type\":\"t\"}", CNI_CMD_ADD, c, &e), 0);
	assert_int_equal(c->conf_args.enroll, -1);
	assert_int_equal(cni_args_parse("", &a, &e), 0);
	assert_int_equal(cni_args_merge(&a, &c->conf_args, &e), 0);
	assert_int_equal(a.enroll, -1);
	assert_int_equal(a.n_labels, 0);
	cni_conf_free(c);

	/* wrong types are config errors */
	static const char *const bad[] = {
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":[]}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":{\"cni\":1}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":{\"cni\":"
		"{\"AMBIT_ENROLL\":\"maybe\"}}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":{\"cni\":"
		"{\"AMBIT_SERVICE_ACCOUNT\":\"a b\"}}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":{\"cni\":"
		"{\"AMBIT_LABELS\":[\"a\"]}}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"args\":{\"cni\":"
		"{\"AMBIT_LABELS\":\"novalue\"}}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e.code = 0;
		if (parse(bad[i], CNI_CMD_ADD, c, &e) != -1 || e.code != CNI_ERR_CONFIG)
			fail_msg("case %zu accepted: %s", i, bad[i]);
		cni_conf_free(c);
	}
	free_conf(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_env_ok),
		cmocka_unit_test(test_env_errors),
		cmocka_unit_test(test_env_version_status_need_little),
		cmocka_unit_test(test_args_basic),
		cmocka_unit_test(test_args_last_duplicate_wins_and_empty_segments),
		cmocka_unit_test(test_args_values_with_equals_and_unknown),
		cmocka_unit_test(test_args_enroll),
		cmocka_unit_test(test_args_errors),
		cmocka_unit_test(test_args_bounds),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_conf_full),
		cmocka_unit_test(test_conf_defaults),
		cmocka_unit_test(test_conf_errors),
		cmocka_unit_test(test_conf_too_many),
		cmocka_unit_test(test_conf_version),
		cmocka_unit_test(test_conf_gc),
		cmocka_unit_test(test_prev_ips),
		cmocka_unit_test(test_prev_ips_errors),
		cmocka_unit_test(test_prev_ips_cap),
		cmocka_unit_test(test_enroll_decision),
		cmocka_unit_test(test_workload_build),
		cmocka_unit_test(test_conf_args_cni),
	};

	return cmocka_run_group_tests_name("cni_conf", tests, NULL, NULL);
}
