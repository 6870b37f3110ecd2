/*
 * libFuzzer harness for policy_eval(): a fixed set with every match form,
 * scope and peer_authentication, against connections and destination
 * workloads made from the input.
 *
 * Input layout: byte 0 flags (bit 0 plaintext, bit 1 has principal, bit 2
 * has explicit source namespace, bit 3 IPv6), bytes 1-2 port, bytes 3-18
 * address, then '\n'-separated strings: principal, source namespace,
 * destination namespace, and "key=value" labels of the destination.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "node-proxy/confdir.h"
#include "node-proxy/policy.h"

static const char set_text[] =
    "[peer_authentication mesh]\nnamespace = ambit-system\nmode = PERMISSIVE\n"
    "[peer_authentication strict]\nnamespace = shop\nmode = STRICT\n"
    "[peer_authentication legacy]\nnamespace = shop\nselector = app=legacy\nmode = PERMISSIVE\n"
    "[policy deny-evil]\nnamespace = ambit-system\naction = DENY\n"
    "[rule deny-evil]\nprincipals = *evil\n[rule deny-evil]\nnamespaces = quarantine\n"
    "[policy db]\nnamespace = ambit-system\nselector = app=db\n[rule db]\nnamespaces = shop, ops*\n"
    "[policy backend]\nnamespace = shop\nselector = app=backend, tier=2\n"
    "[rule backend]\nprincipals = spiffe://cluster.local/ns/shop/sa/frontend, td/ns/x/*\n"
    "ports = 8080, 9090\n"
    "[rule backend]\nip_blocks = 10.0.0.0/8, fd00::/8\nnot_ip_blocks = 10.66.0.0/16\n"
    "not_ports = 22\n"
    "[policy no-plain]\nnamespace = data\naction = DENY\n[rule no-plain]\nnot_principals = *\n"
    "[policy none]\nnamespace = empty\n"
    "[policy all]\nnamespace = open\n[rule all]\n"
    "[policy notns]\nnamespace = open\naction = DENY\n[rule notns]\nnot_namespaces = open, shop\n"
    "ports = 1\n";

static struct policy_set *ps;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Next '\n'-terminated string of the input into @out (bounded). */
static void take(const uint8_t **p, const uint8_t *end, char *out, size_t outlen)
{
	size_t n = 0;

	while (*p < end && **p != '\n') {
		if (n + 1 < outlen)
			out[n++] = (char)**p;
		(*p)++;
	}
	if (*p < end)
		(*p)++;
	out[n] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct workload w;
	char princ[300], srcns[80], label[400];
	const uint8_t *p = data + 19, *end = data + size;
	struct policy_conn c = { 0 };
	struct policy_verdict v;
	int rc;

	if (!ps) {
		struct conf_errors e;
		conf_errors_init(&e);
		if (policy_load_buf("set.ini", set_text, sizeof(set_text) - 1, NULL, &ps, &e)) {
			fprintf(stderr, "%s\n", e.msg[0]);
			abort();
		}
	}
	if (size < 19)
		return 0;
	memset(&w, 0, sizeof(w));
	c.plaintext = data[0] & 1;
	c.dst_port = (uint16_t)(data[1] << 8 | data[2]);
	c.src_ip.family = data[0] & 8 ? AF_INET6 : AF_INET;
	memcpy(&c.src_ip.v6, data + 3, 16);
	take(&p, end, princ, sizeof(princ));
	take(&p, end, srcns, sizeof(srcns));
	take(&p, end, w.ns, sizeof(w.ns));
	if (data[0] & 2)
		c.src_principal = princ;
	if (data[0] & 4)
		c.src_ns = srcns;
	while (p < end && w.n_labels < WL_MAX_LABELS) {
		char *eq;
		take(&p, end, label, sizeof(label));
		eq = strchr(label, '=');
		if (!eq)
			continue;
		*eq = '\0';
		snprintf(w.labels[w.n_labels].key, sizeof(w.labels[0].key), "%s", label);
		snprintf(w.labels[w.n_labels].val, sizeof(w.labels[0].val), "%s", eq + 1);
		w.n_labels++;
	}
	rc = policy_eval(ps, &w, &c, &v);
	assert((rc == 0) == v.allow && (rc == 0 || rc == -EACCES));
	if (v.reason == POLICY_DENY_PLAINTEXT)
		assert(c.plaintext || !c.src_principal);
	if (v.reason == POLICY_DENY_MATCH || v.reason == POLICY_ALLOW_MATCH)
		assert(v.policy != NULL);
	assert(strlen(policy_reason_str(v.reason)) > 1);
	return 0;
}
