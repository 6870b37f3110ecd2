/*
 * libFuzzer harness for the control protocol parser: the datagram parser,
 * then the workload validator on whatever object the body holds (ADD's
 * "workload", SNAPSHOT's and LIST's "workloads"), then the same validator
 * on the input read directly as JSON.  A workload that validates must
 * survive an encode/validate round trip unchanged.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "node-proxy/ctlproto.h"

static void check_workload(const json_t *j)
{
	static struct workload w, back;
	char err[256];
	json_t *again;

	if (ctl_workload_from_json(j, &w, err, sizeof(err)))
		return;
	again = ctl_workload_to_json(&w);
	assert(again);
	assert(ctl_workload_from_json(again, &back, err, sizeof(err)) == 0);
	assert(memcmp(&w, &back, sizeof(w)) == 0);
	json_decref(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char out[CTL_MAX_MSG];
	struct ctl_hdr h;
	json_t *body = NULL, *v, *j;
	char err[256];
	size_t i;

	if (ctl_parse(data, size, &h, &body, err, sizeof(err)) == 0) {
		int n;

		check_workload(json_object_get(body, "workload"));
		json_array_foreach(json_object_get(body, "workloads"), i, v)
			check_workload(v);
		/* what parses re-encodes, and parses again */
		n = ctl_encode(h.type, h.seq, body, out, sizeof(out));
		if (n > 0) {
			json_t *b2 = NULL;

			assert(ctl_parse(out, (size_t)n, &h, &b2, err, sizeof(err)) == 0);
			assert(json_equal(body, b2));
			json_decref(b2);
		}
		json_decref(body);
	}
	j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (j) {
		check_workload(j);
		json_decref(j);
	}
	return 0;
}
