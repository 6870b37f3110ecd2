/*
 * libFuzzer harness for the policy file parser (node-proxy/policy.c through
 * confdir.c and inih): any bytes as one policy file.  A set that loads is
 * also evaluated for a few connections, so odd-but-valid sets reach
 * policy_eval() too.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "node-proxy/confdir.h"
#include "node-proxy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf_errors e;
	static struct workload w = { .ns = "shop",
		                     .n_labels = 1,
		                     .labels = { { .key = "app", .val = "backend" } } };
	static const char *principals[] = { NULL, "spiffe://cluster.local/ns/shop/sa/frontend",
		                            "td/ns/x", "" };
	struct policy_set *ps = NULL;

	conf_errors_init(&e);
	if (policy_load_buf("fuzz.ini", (const char *)data, size, "ambit-system", &ps, &e)) {
		assert(e.n > 0 && ps == NULL);
		return 0;
	}
	for (unsigned i = 0; i < 4; i++) {
		struct policy_conn c = { .src_principal = principals[i],
			                 .dst_port = (uint16_t)(80 + i),
			                 .plaintext = principals[i] == NULL };
		struct policy_verdict v;
		int rc;

		conf_parse_ip(i & 1 ? "10.1.2.3" : "fd00::1", &c.src_ip);
		rc = policy_eval(ps, &w, &c, &v);
		assert((rc == 0) == v.allow && (rc == 0 || rc == -EACCES));
	}
	policy_set_put(ps);
	return 0;
}
