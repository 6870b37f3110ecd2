/*
 * libFuzzer harness for cni-plugin/cniconf.c: everything ambit-cni parses
 * from its untrusted caller.
 *
 * Input layout: the first byte selects the command, bytes up to the first
 * '\n' are CNI_ARGS, the rest is the network configuration on stdin.  For
 * a parsed configuration the prevResult IPs, the enrollment decision and
 * the workload are derived too, and the labels parser gets the CNI_ARGS
 * bytes on its own.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cni-plugin/cniconf.h"

static const enum cni_cmd cmds[] = { CNI_CMD_ADD,     CNI_CMD_DEL,    CNI_CMD_CHECK,
	                             CNI_CMD_VERSION, CNI_CMD_STATUS, CNI_CMD_GC };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cni_conf c;
	static struct cni_args a;
	static struct workload w;
	struct wl_label labels[WL_MAX_LABELS];
	struct wl_ip ips[WL_MAX_IPS];
	struct cni_env env = { .container_id = "0123456789abcdef",
		               .netns = "/run/netns/x",
		               .ifname = "eth0" };
	struct cni_error e;
	const uint8_t *nl;
	char *args;
	unsigned n, dropped, nl_labels = 0;
	const char *why;
	size_t alen;
	int args_ok;

	if (size < 1)
		return 0;
	env.cmd = cmds[data[0] % (sizeof(cmds) / sizeof(cmds[0]))];
	data++;
	size--;
	nl = memchr(data, '\n', size);
	alen = nl ? (size_t)(nl - data) : size;
	args = malloc(alen + 1);
	if (!args)
		return 0;
	memcpy(args, data, alen);
	args[alen] = '\0';
	env.args = args;
	args_ok = cni_args_parse(args, &a, &e) == 0;
	cni_labels_parse(args, labels, &nl_labels, CNI_ERR_ENV, &e);
	if (nl) {
		const char *conf = (const char *)nl + 1;
		size_t clen = size - alen - 1;

		if (cni_conf_parse(conf, clen, env.cmd, &c, &e) == 0 && c.root) {
			cni_prev_ips(&c, ips, &n, &dropped, &e);
			if (args_ok) {
				cni_enroll_decision(&c, &a, &why);
				if (c.prev_result && cni_prev_ips(&c, ips, &n, &dropped, &e) == 0)
					cni_workload_build(&c, &a, &env, ips, n, &w, &e);
			}
		}
		cni_conf_free(&c);
	}
	free(args);
	return 0;
}
