/*
 * libFuzzer harness for the control protocol: the datagram parser, then
 * the workload validator on whatever object the body holds (ADD's
 * "workload", SNAPSHOT's and LIST's "workloads"), then the same validator
 * on the input read directly as JSON.  A workload that validates must
 * survive an encode/validate round trip unchanged.  Finally the server's
 * own request handler (control.c, included to reach its static functions)
 * answers the input as a datagram, with 0-3 real netns fds attached and a
 * memory-only registry behind it; its ack must always encode.
 */
#include <assert.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "node-proxy/control.c"
#include "node-proxy/ctlproto.h"
#include "node-proxy/log.h"

static int fz_add(void *arg, const struct workload *w, int netns_fd, char *err, size_t errlen)
{
	(void)arg;
	(void)netns_fd;
	/* let the fuzzer reach the data plane's refusal path too */
	if (w->name[0] == 'x') {
		snprintf(err, errlen, "refused");
		return -EINVAL;
	}
	return 0;
}

static int fz_del(void *arg, const char *uid, char *err, size_t errlen)
{
	(void)arg;
	(void)uid;
	(void)err;
	(void)errlen;
	return 0;
}

static void serve_once(const uint8_t *data, size_t size)
{
	static struct control *c;
	static int nsfd = -1;
	int fds[3];
	uint16_t atype;
	uint32_t aseq;
	size_t nfds, i;
	json_t *ack;

	if (!c) {
		c = calloc(1, sizeof(*c));
		c->in = malloc(CTL_MAX_MSG);
		c->out = malloc(CTL_MAX_MSG);
		c->ops = (struct ctl_ops){ .add = fz_add, .del = fz_del };
		nsfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
		assert(nsfd >= 0);
		log_set_level(LOG_LVL_ERROR);
	}
	if (size > CTL_MAX_MSG)
		return;
	/* a fresh registry per input keeps runs independent */
	assert(registry_open(NULL, &c->reg) == 0);
	memcpy(c->in, data, size);
	nfds = size ? data[size - 1] % 4 : 0;
	for (i = 0; i < nfds; i++)
		fds[i] = nsfd;
	ack = handle(c, size, 0, fds, nfds, &atype, &aseq);
	assert(ack);
	assert(json_is_string(json_object_get(ack, "error")));
	assert(ctl_encode(atype, aseq, ack, c->out, CTL_MAX_MSG) > 0);
	json_decref(ack);
	registry_close(c->reg);
	c->reg = NULL;
}

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
		json_array_foreach(json_object_get(body, "workloads"), i, v) check_workload(v);
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
	serve_once(data, size);
	return 0;
}
