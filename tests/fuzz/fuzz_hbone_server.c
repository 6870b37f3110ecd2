/*
 * libFuzzer: arbitrary bytes into an HBONE server's HTTP/2 layer, as they
 * would arrive after a completed TLS handshake (the TLS layer is a
 * pass-through in fuzz builds).  The callbacks answer some CONNECTs at
 * once (200 or 503), defer others and answer them afterwards, write into
 * open tunnels, consume received bytes and half-close, so that most of the
 * engine's paths run on hostile input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node-proxy/hbone.h"

#define MAXP 16

struct st {
	int32_t pending[MAXP];
	int np;
	int32_t open[MAXP];
	int no;
};

static void drop(int32_t *a, int *n, int32_t sid)
{
	for (int i = 0; i < *n; i++)
		if (a[i] == sid) {
			a[i] = a[--*n];
			return;
		}
}

static int on_req(struct hbone_conn *c, void *arg, int32_t sid, const struct hbone_request *r)
{
	struct st *s = arg;
	(void)c;
	if (!r->authority || !r->peer_id)
		abort();
	switch (sid % 3) {
	case 0:
		if (s->np < MAXP)
			s->pending[s->np++] = sid;
		return 0;
	case 1:
		if (s->no < MAXP)
			s->open[s->no++] = sid;
		return 200;
	default:
		return 503;
	}
}

static void on_data(struct hbone_conn *c, void *arg, int32_t sid, void *su, const uint8_t *d,
                    size_t n)
{
	(void)arg;
	(void)su;
	(void)d;
	if (sid & 2)
		hbone_stream_consume(c, sid, n);
}

static void on_closed(struct hbone_conn *c, void *arg, int32_t sid, void *su, uint32_t err)
{
	struct st *s = arg;
	(void)c;
	(void)su;
	(void)err;
	drop(s->pending, &s->np, sid);
	drop(s->open, &s->no, sid);
}

static void drain(struct hbone_conn *c)
{
	hbone_conn_out_done(c, hbone_conn_out_len(c));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct hbone_callbacks cb = {
		.on_stream_request = on_req,
		.on_stream_data = on_data,
		.on_stream_closed = on_closed,
	};
	static const uint8_t payload[300];
	struct hbone_config cfg;
	struct hbone_conn *c;
	struct st s = { 0 };
	size_t off = 0, k;
	int i;

	hbone_config_default(&cfg);
	cfg.max_concurrent_streams = 8;
	cfg.out_buf = TLS_OUT_CAP_MIN; /* smallest ring: exercises ring-full paths */
	if (hbone_conn_new_cleartext_server(&cfg, &cb, &s, &c))
		return 0;
	/* Feed in uneven pieces so frames straddle feeds. */
	while (off < size) {
		k = 1 + (data[off] % 97) * 13;
		if (k > size - off)
			k = size - off;
		if (hbone_conn_feed(c, data + off, k) < 0)
			break;
		off += k;
		if (data[off - 1] & 1)
			drain(c);
	}
	while (s.np) {
		int32_t sid = s.pending[--s.np];
		if (hbone_stream_respond(c, sid, sid & 4 ? 200 : 401) == 0 && (sid & 4) &&
		    s.no < MAXP)
			s.open[s.no++] = sid;
	}
	for (i = 0; i < s.no; i++) {
		hbone_stream_write(c, s.open[i], payload, sizeof(payload));
		if (s.open[i] & 8)
			hbone_stream_shutdown(c, s.open[i]);
		else if (s.open[i] & 16)
			hbone_stream_reset(c, s.open[i], HBONE_H2_CANCEL);
	}
	drain(c);
	hbone_conn_goaway(c, HBONE_H2_NO_ERROR);
	drain(c);
	(void)hbone_conn_done(c);
	hbone_conn_free(c);
	return 0;
}
