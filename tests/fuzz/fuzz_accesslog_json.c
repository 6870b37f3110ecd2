/*
 * Fuzz the two writers that put untrusted bytes (workload names, HBONE
 * baggage/traceparent, peer identities) into text others parse: the access
 * log's JSON line must always parse with jansson, a Prometheus label value
 * must always be valid UTF-8 with no raw newline or unescaped quote; and
 * the parsers of HBONE's traceparent/baggage headers and of the admin
 * /logging query must not crash and must round-trip what they accept.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "node-proxy/accesslog.h"
#include "node-proxy/promtext.h"

static void check_label(const uint8_t *data, size_t size)
{
	struct pt_buf b;
	char *s = malloc(size + 1);
	size_t i, k;

	if (!s)
		return;
	memcpy(s, data, size);
	s[size] = '\0';
	pt_init(&b);
	pt_label_value(&b, s, 300, "unknown");
	for (i = 0; i < b.len; i += k) {
		k = pt_utf8_len((const uint8_t *)b.p + i, b.len - i);
		if (k == 0 || b.p[i] == '\n')
			abort();
		if (b.p[i] == '\\') {
			if (i + 1 >= b.len || !strchr("\\\"n", b.p[i + 1]))
				abort();
			k = 2;
		} else if (b.p[i] == '"') {
			abort();
		}
	}
	pt_free(&b);
	free(s);
}

/* The HBONE header parsers: whatever parses must survive a round trip
 * through our own formatter. */
static void check_trace_context(const uint8_t *data, size_t size)
{
	struct al_trace t, t2;
	struct al_baggage b, b2;
	char out[AL_BAGGAGE_BUILD_MAX];
	size_t n;

	if (al_traceparent_parse((const char *)data, size, &t) == 0) {
		al_traceparent_format(&t, out);
		if (al_traceparent_parse(out, strlen(out), &t2) ||
		    memcmp(&t.trace_id, &t2.trace_id, 16) || memcmp(&t.span_id, &t2.span_id, 8) ||
		    t.flags != t2.flags)
			abort();
	}
	if (al_baggage_parse((const char *)data, size, &b) == 0) {
		n = al_baggage_build(&b, out, sizeof(out));
		if (n == 0 &&
		    (b.cluster[0] || b.ns[0] || b.workload[0] || b.service[0] || b.version[0]))
			abort();
		if (n && (al_baggage_parse(out, n, &b2) || strcmp(b.cluster, b2.cluster) ||
		          strcmp(b.ns, b2.ns) || strcmp(b.workload, b2.workload) ||
		          strcmp(b.service, b2.service) || strcmp(b.version, b2.version)))
			abort();
	}
	(void)accesslog_apply_query((const char *)data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct al_record r;
	char *fields[10], line[AL_LINE_MAX];
	size_t caps[10], n, off = 0, i;
	json_error_t err;
	json_t *j;
	char *copy;

	check_label(data, size);
	check_trace_context(data, size);
	memset(&r, 0, sizeof(r));
	fields[0] = r.src.workload, caps[0] = sizeof(r.src.workload);
	fields[1] = r.src.ns, caps[1] = sizeof(r.src.ns);
	fields[2] = r.src.identity, caps[2] = sizeof(r.src.identity);
	fields[3] = r.dst.workload, caps[3] = sizeof(r.dst.workload);
	fields[4] = r.dst.ns, caps[4] = sizeof(r.dst.ns);
	fields[5] = r.dst.identity, caps[5] = sizeof(r.dst.identity);
	fields[6] = r.dst_service, caps[6] = sizeof(r.dst_service);
	fields[7] = r.error, caps[7] = sizeof(r.error);
	fields[8] = r.traceparent, caps[8] = sizeof(r.traceparent);
	fields[9] = r.baggage, caps[9] = sizeof(r.baggage);
	copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	/* NUL-separated fields; the first bytes also pick numbers/flags */
	for (i = 0; i < 10 && off <= size; i++) {
		al_str(fields[i], caps[i], copy + off);
		off += strlen(copy + off) + 1;
	}
	if (size >= 8) {
		memcpy(&r.end_ns, data, 8);
		r.response_flags = data[0] | (uint32_t)data[1] << 8;
		r.direction = data[2] & 1;
		r.src.addr.family = data[3] & 1 ? 2 : 10;
		memcpy(r.src.addr.ip, data, size < 16 ? size : 16);
		r.req_bytes = r.end_ns >> 1; /* jansson refuses integers past INT64_MAX */
	}
	n = accesslog_format(&r, line, sizeof(line));
	if (n == 0 || line[n - 1] != '\n' || memchr(line, '\n', n - 1))
		abort();
	j = json_loadb(line, n - 1, JSON_REJECT_DUPLICATES, &err);
	if (!j || !json_is_object(j) || json_object_size(j) != 20)
		abort();
	json_decref(j);
	free(copy);
	return 0;
}
