/*
 * HTTP/2 CONNECT half of HBONE: two engines (client, server) wired back to
 * back in memory, plus a hand-driven nghttp2 client over a bare tls_conn
 * to send the server what an hbone client never would (bad authorities,
 * other methods, header floods).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>

#include "node-proxy/hbone.h"
#include "node-proxy/tls.h"

#include "tests/unit/test_hbone_util.c"

static struct tls_identity *cli_id, *srv_id;

static int setup(void **state)
{
	(void)state;
	if (pki_make())
		return -1;
	cli_id = pki_identity("client", "root");
	srv_id = pki_identity("server", "root");
	return cli_id && srv_id ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	tls_identity_unref(cli_id);
	tls_identity_unref(srv_id);
	pki_remove();
	return 0;
}

static void pair(const struct hbone_config *ccfg, const struct hbone_config *scfg,
                 struct side **cli, struct side **srv)
{
	*cli = side_new(HBONE_CLIENT, cli_id, ID_SERVER, ccfg);
	*srv = side_new(HBONE_SERVER, srv_id, NULL, scfg);
	assert_non_null(*cli);
	assert_non_null(*srv);
	run_pipe(*cli, *srv);
	assert_true(hbone_conn_established((*cli)->c));
	assert_true(hbone_conn_established((*srv)->c));
}

/* Deterministic payload for stream @sid, byte @i. */
static uint8_t pat(int32_t sid, size_t i, int dir)
{
	return (uint8_t)((i * 31 + (size_t)sid * 7 + (size_t)dir * 101) ^ (i >> 8));
}

static uint64_t pat_hash(int32_t sid, size_t n, int dir)
{
	uint64_t h = FNV0;
	size_t i;
	for (i = 0; i < n; i++) {
		uint8_t b = pat(sid, i, dir);
		h = fnv(h, &b, 1);
	}
	return h;
}

/* Write all of stream @sid's pattern (@n bytes, direction @dir), shuttling
 * between writes when the engine says wait. */
static void write_all(struct side *w, struct side *a, struct side *b, int32_t sid, size_t n,
                      int dir)
{
	static uint8_t buf[1 << 16];
	size_t off = 0, k, i;
	ssize_t r;
	int stall = 0;

	while (off < n) {
		k = n - off < sizeof(buf) ? n - off : sizeof(buf);
		for (i = 0; i < k; i++)
			buf[i] = pat(sid, off + i, dir);
		r = hbone_stream_write(w->c, sid, buf, k);
		assert_true(r >= 0);
		off += (size_t)r;
		if (r == 0) {
			run_pipe(a, b);
			assert_true(++stall < 10000);
		}
	}
}

/* ---- parsing ------------------------------------------------------------ */

static void test_authority(void **state)
{
	(void)state;
	static const char *const good[] = { "10.0.0.2:8080",         "1.2.3.4:1",
		                            "255.255.255.255:65535", "[::1]:80",
		                            "[fd00::1:2]:15008",     "[::ffff:10.0.0.1]:443" };
	static const char *const bad[] = {
		"",
		"10.0.0.2",
		"10.0.0.2:",
		"10.0.0.2:0",
		"10.0.0.2:65536",
		"10.0.0.2:99999",
		"10.0.0.2:080",
		"10.0.0.2:+80",
		"10.0.0.2:80a",
		"10.0.0.2: 80",
		":80",
		"example.com:80",
		"localhost:80",
		"10.0.0:80",
		"10.0.0.256:80",
		"010.0.0.1:80",
		"10.0.0.1.5:80",
		"::1:80",
		"[::1]",
		"[::1]:",
		"[::1:80",
		"::1]:80",
		"[::1]80",
		"[]:80",
		"[fe80::1%eth0]:80",
		"[10.0.0.1]:80",
		"[[::1]]:80",
		"[::1]:80:90",
		"10.0.0.1:80:90",
		"1.2.3.4:8080/path",
		"[0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]:80",
		"1111111111111111111111111111111111111111111111111111111111111.1:80",
	};
	struct sockaddr_storage ss;
	socklen_t sl;
	size_t i;
	char addr[64];

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(hbone_parse_authority(good[i], strlen(good[i]), &ss, &sl), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (hbone_parse_authority(bad[i], strlen(bad[i]), &ss, &sl) != -EINVAL)
			fail_msg("accepted bad authority '%s'", bad[i]);
	}
	/* Embedded NUL and lengths that cut the string. */
	assert_int_equal(hbone_parse_authority("1.2.3.4:80\0", 11, &ss, &sl), -EINVAL);
	assert_int_equal(hbone_parse_authority("1.2.3.4:8080", 8, &ss, &sl), -EINVAL);
	assert_int_equal(hbone_parse_authority("1.2.3.4:8080", 10, &ss, &sl), 0);
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 80);

	assert_int_equal(hbone_parse_authority("10.1.2.3:15008", 14, &ss, &sl), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(sl, sizeof(struct sockaddr_in));
	inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, sizeof(addr));
	assert_string_equal(addr, "10.1.2.3");
	assert_int_equal(hbone_parse_authority("[fd00::5]:9", 11, &ss, &sl), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 9);
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		n, sizeof(n) - 1, v, sizeof(v) - 1                                                 \
	}

static void test_validate_request(void **state)
{
	struct hbone_request req;
	const struct hbone_nv ok[] = { NV(":method", "CONNECT"),
		                       NV(":authority", "10.0.0.1:80"),
		                       NV("forwarded", "for=\"10.0.0.9:1234\""),
		                       NV("baggage", "k=v"),
		                       NV("traceparent", "00-ab-cd-01"),
		                       NV("user-agent", "x") };
	const struct hbone_nv get[] = { NV(":method", "GET"), NV(":authority", "10.0.0.1:80") };
	const struct hbone_nv path[] = { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"),
		                         NV(":path", "/") };
	const struct hbone_nv noauth[] = { NV(":method", "CONNECT") };
	const struct hbone_nv nometh[] = { NV(":authority", "10.0.0.1:80") };
	const struct hbone_nv twice[] = { NV(":method", "CONNECT"), NV(":method", "CONNECT"),
		                          NV(":authority", "10.0.0.1:80") };
	const struct hbone_nv badauth[] = { NV(":method", "CONNECT"),
		                            NV(":authority", "svc.ns:80") };
	const struct hbone_nv proto[] = { NV(":method", "CONNECT"), NV(":protocol", "websocket"),
		                          NV(":authority", "10.0.0.1:80") };

	(void)state;
	assert_int_equal(hbone_validate_request(ok, 6, &req), 0);
	assert_string_equal(req.authority, "10.0.0.1:80");
	assert_string_equal(req.forwarded, "for=\"10.0.0.9:1234\"");
	assert_string_equal(req.baggage, "k=v");
	assert_string_equal(req.traceparent, "00-ab-cd-01");
	assert_int_equal(req.dst.ss_family, AF_INET);
	assert_int_equal(hbone_validate_request(ok, 2, &req), 0);
	assert_null(req.forwarded);
	assert_int_equal(hbone_validate_request(get, 2, &req), 400);
	assert_int_equal(hbone_validate_request(path, 3, &req), 400);
	assert_int_equal(hbone_validate_request(noauth, 1, &req), 400);
	assert_int_equal(hbone_validate_request(nometh, 1, &req), 400);
	assert_int_equal(hbone_validate_request(twice, 3, &req), 400);
	assert_int_equal(hbone_validate_request(badauth, 2, &req), 400);
	assert_int_equal(hbone_validate_request(proto, 3, &req), 400);
	assert_int_equal(hbone_validate_request(NULL, 0, &req), 400);
}

/* ---- CONNECT between two engines ----------------------------------------- */

static void test_connect_200(void **state)
{
	static const struct hbone_header h[] = {
		{ "forwarded", "for=\"10.0.0.9:40000\"" },
		{ "baggage", "k8s.namespace.name=default" },
		{ "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
	};
	struct side *cli, *srv;
	int32_t sid;
	struct srec *cs, *ss;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:8080", h, 3, NULL, &sid), 0);
	assert_true(sid > 0 && (sid & 1));
	/* Before the 200 nothing may be sent: the write waits. */
	assert_int_equal(hbone_stream_write(cli->c, sid, (const uint8_t *)"early", 5), 0);
	run_pipe(cli, srv);
	cs = &cli->s[sid];
	ss = &srv->s[sid];
	assert_int_equal(srv->requests, 1);
	assert_string_equal(ss->authority, "10.0.0.2:8080");
	assert_string_equal(ss->forwarded, h[0].value);
	assert_string_equal(ss->baggage, h[1].value);
	assert_string_equal(ss->traceparent, h[2].value);
	assert_string_equal(ss->peer, ID_CLIENT);
	assert_int_equal(cs->status, 200);
	assert_int_equal(cs->writable, 1); /* the early write is owed a wake-up */
	assert_int_equal(hbone_conn_streams(cli->c), 1);
	assert_int_equal(hbone_conn_streams(srv->c), 1);

	/* Both directions. */
	assert_int_equal(hbone_stream_write(cli->c, sid, (const uint8_t *)"hello", 5), 5);
	assert_int_equal(hbone_stream_write(srv->c, sid, (const uint8_t *)"world!", 6), 6);
	run_pipe(cli, srv);
	assert_int_equal(ss->rx, 5);
	assert_int_equal(ss->hash, fnv(FNV0, (const uint8_t *)"hello", 5));
	assert_int_equal(cs->rx, 6);

	/* Client half-closes; the server can still send. */
	assert_int_equal(hbone_stream_shutdown(cli->c, sid), 0);
	assert_int_equal(hbone_stream_write(cli->c, sid, (const uint8_t *)"x", 1), -EPIPE);
	run_pipe(cli, srv);
	assert_int_equal(ss->eof, 1);
	assert_int_equal(cs->eof, 0);
	assert_int_equal(ss->closed, 0);
	assert_int_equal(hbone_stream_write(srv->c, sid, (const uint8_t *)"more", 4), 4);
	run_pipe(cli, srv);
	assert_int_equal(cs->rx, 10);
	/* Then the server: the stream is done on both sides. */
	assert_int_equal(hbone_stream_shutdown(srv->c, sid), 0);
	run_pipe(cli, srv);
	assert_int_equal(cs->eof, 1);
	assert_int_equal(cs->closed, 1);
	assert_int_equal(cs->err, 0);
	assert_int_equal(ss->closed, 1);
	assert_int_equal(ss->err, 0);
	assert_int_equal(hbone_conn_streams(cli->c), 0);
	assert_int_equal(hbone_conn_streams(srv->c), 0);
	assert_int_equal(hbone_stream_write(cli->c, sid, (const uint8_t *)"x", 1), -ENOENT);
	side_free(cli);
	side_free(srv);
}

static void test_connect_refused_status(void **state)
{
	static const int codes[] = { 401, 503, 400, 1000, 100 };
	static const int seen[] = { 401, 503, 400, 503, 503 };
	struct side *cli, *srv;
	int32_t sid;
	size_t i;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		srv->decide = codes[i];
		assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid), 0);
		run_pipe(cli, srv);
		assert_int_equal(cli->s[sid].status, seen[i]);
		assert_int_equal(cli->s[sid].eof, 0); /* no tunnel, nothing to half-close */
		assert_int_equal(cli->s[sid].closed, 1);
		assert_int_equal(srv->s[sid].closed, 1);
		assert_int_equal(cli->s[sid].rx, 0);
	}
	assert_int_equal(hbone_conn_streams(cli->c), 0);
	assert_int_equal(hbone_conn_streams(srv->c), 0);
	assert_true(hbone_conn_can_open(cli->c)); /* the connection is fine */
	side_free(cli);
	side_free(srv);
}

static void test_connect_deferred(void **state)
{
	struct side *cli, *srv;
	int32_t sid;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	srv->decide = 0; /* the data plane connects to the app first */
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid), 0);
	run_pipe(cli, srv);
	assert_int_equal(srv->requests, 1);
	assert_int_equal(cli->s[sid].status, 0);
	assert_int_equal(hbone_stream_respond(srv->c, sid, 200), 0);
	assert_int_equal(hbone_stream_respond(srv->c, sid, 503), -EALREADY);
	assert_int_equal(hbone_stream_respond(srv->c, sid + 2, 200), -ENOENT);
	assert_int_equal(hbone_stream_respond(srv->c, sid, 99), -EINVAL);
	assert_int_equal(hbone_stream_respond(cli->c, sid, 200), -EINVAL);
	run_pipe(cli, srv);
	assert_int_equal(cli->s[sid].status, 200);
	assert_int_equal(hbone_stream_write(srv->c, sid, (const uint8_t *)"hi", 2), 2);
	run_pipe(cli, srv);
	assert_int_equal(cli->s[sid].rx, 2);

	/* Deferred then refused. */
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.3:80", NULL, 0, NULL, &sid), 0);
	run_pipe(cli, srv);
	assert_int_equal(hbone_stream_respond(srv->c, sid, 503), 0);
	run_pipe(cli, srv);
	assert_int_equal(cli->s[sid].status, 503);
	assert_int_equal(cli->s[sid].closed, 1);
	side_free(cli);
	side_free(srv);
}

static void test_client_open_validation(void **state)
{
	static const struct hbone_header bad1[] = { { "Upper", "x" } };
	static const struct hbone_header bad2[] = { { "connection", "close" } };
	static const struct hbone_header bad3[] = { { "x-a", "a\r\nb" } };
	static const struct hbone_header bad4[] = { { ":path", "/" } };
	struct side *cli, *srv;
	int32_t sid;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	assert_int_equal(hbone_stream_open(cli->c, "svc:80", NULL, 0, NULL, &sid), -EINVAL);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.1", NULL, 0, NULL, &sid), -EINVAL);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.1:1", bad1, 1, NULL, &sid), -EINVAL);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.1:1", bad2, 1, NULL, &sid), -EINVAL);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.1:1", bad3, 1, NULL, &sid), -EINVAL);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.1:1", bad4, 1, NULL, &sid), -EINVAL);
	assert_int_equal(hbone_stream_open(srv->c, "10.0.0.1:1", NULL, 0, NULL, &sid), -EINVAL);
	assert_int_equal(hbone_conn_streams(cli->c), 0);
	side_free(cli);
	side_free(srv);
}

static void test_many_streams(void **state)
{
	enum { N = 200 };
	struct hbone_config scfg;
	struct side *cli, *srv;
	int32_t sids[N];
	size_t len[N];
	int i;

	(void)state;
	hbone_config_default(&scfg);
	scfg.max_concurrent_streams = 256;
	pair(NULL, &scfg, &cli, &srv);
	for (i = 0; i < N; i++) {
		assert_int_equal(
		    hbone_stream_open(cli->c, "10.0.0.2:5201", NULL, 0, NULL, &sids[i]), 0);
		len[i] = 1 + (size_t)i * 997 % 70000;
	}
	run_pipe(cli, srv);
	assert_int_equal(srv->requests, N);
	assert_int_equal(hbone_conn_streams(srv->c), N);
	for (i = 0; i < N; i++) {
		assert_int_equal(cli->s[sids[i]].status, 200);
		write_all(cli, cli, srv, sids[i], len[i], 0);
		write_all(srv, cli, srv, sids[i], len[N - 1 - i], 1);
	}
	for (i = 0; i < N; i++) {
		assert_int_equal(hbone_stream_shutdown(cli->c, sids[i]), 0);
		assert_int_equal(hbone_stream_shutdown(srv->c, sids[i]), 0);
	}
	run_pipe(cli, srv);
	for (i = 0; i < N; i++) {
		struct srec *ss = &srv->s[sids[i]], *cs = &cli->s[sids[i]];
		assert_int_equal(ss->rx, len[i]);
		assert_true(ss->hash == pat_hash(sids[i], len[i], 0));
		assert_int_equal(cs->rx, len[N - 1 - i]);
		assert_true(cs->hash == pat_hash(sids[i], len[N - 1 - i], 1));
		assert_int_equal(ss->eof, 1);
		assert_int_equal(cs->eof, 1);
		assert_int_equal(cs->closed, 1);
		assert_int_equal(cs->err, 0);
	}
	assert_int_equal(hbone_conn_streams(cli->c), 0);
	assert_int_equal(hbone_conn_streams(srv->c), 0);
	side_free(cli);
	side_free(srv);
}

static void test_stream_cap(void **state)
{
	struct hbone_config scfg;
	struct side *cli, *srv;
	int32_t sid[5];
	int i;

	(void)state;
	hbone_config_default(&scfg);
	scfg.max_concurrent_streams = 4;
	pair(NULL, &scfg, &cli, &srv);
	for (i = 0; i < 4; i++)
		assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid[i]),
		                 0);
	assert_false(hbone_conn_can_open(cli->c));
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid[4]), -EAGAIN);
	run_pipe(cli, srv);
	assert_int_equal(srv->requests, 4);
	assert_int_equal(hbone_stream_reset(cli->c, sid[0], HBONE_H2_CANCEL), 0);
	run_pipe(cli, srv);
	assert_true(hbone_conn_can_open(cli->c));
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid[4]), 0);
	run_pipe(cli, srv);
	assert_int_equal(srv->requests, 5);
	assert_int_equal(cli->s[sid[4]].status, 200);
	side_free(cli);
	side_free(srv);
}

static void test_backpressure_window(void **state)
{
	struct hbone_config cfg;
	struct side *cli, *srv;
	int32_t sid;
	size_t total = 0;
	int before;
	uint8_t buf[4096];
	ssize_t r;
	int rounds = 0;

	(void)state;
	memset(buf, 'a', sizeof(buf));
	hbone_config_default(&cfg);
	cfg.stream_window = 65536;
	cfg.conn_window = 1 << 20;
	pair(&cfg, &cfg, &cli, &srv);
	srv->consume = 0; /* the app behind the server does not read */
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid), 0);
	run_pipe(cli, srv);
	for (;;) {
		r = hbone_stream_write(cli->c, sid, buf, sizeof(buf));
		assert_true(r >= 0);
		total += (size_t)r;
		run_pipe(cli, srv);
		if (r == 0 && ++rounds > 3)
			break;
	}
	/* Exactly one stream window got through, no more. */
	assert_int_equal(total, 65536);
	assert_int_equal(srv->s[sid].rx, 65536);
	assert_int_equal(hbone_stream_write_room(cli->c, sid), 0);
	before = cli->s[sid].writable;

	/* The app reads half: the window reopens by that much, the writer is
	 * woken and the window-sized cap holds again. */
	assert_int_equal(hbone_stream_consume(srv->c, sid, 32768), 0);
	run_pipe(cli, srv);
	assert_true(cli->s[sid].writable > before);
	assert_int_equal(hbone_stream_write_room(cli->c, sid), 32768);
	for (rounds = 0;;) {
		r = hbone_stream_write(cli->c, sid, buf, sizeof(buf));
		total += (size_t)r;
		run_pipe(cli, srv);
		if (r == 0 && ++rounds > 3)
			break;
	}
	assert_int_equal(total, 65536 + 32768);
	/* Over-consuming is clamped to what was delivered. */
	assert_int_equal(hbone_stream_consume(srv->c, sid, 1 << 30), 0);
	run_pipe(cli, srv);
	assert_int_equal(hbone_stream_write_room(cli->c, sid), 65536);
	side_free(cli);
	side_free(srv);
}

/* Bytes delivered but never consumed on a stream that then closes must not
 * shrink the connection window for good: the engine gives them back. */
static void test_conn_window_reclaimed(void **state)
{
	struct hbone_config cfg;
	struct side *cli, *srv;
	static uint8_t buf[1 << 16];
	int32_t sid;
	int i;

	(void)state;
	hbone_config_default(&cfg);
	cfg.stream_window = 65536;
	cfg.conn_window = 131072;
	pair(&cfg, &cfg, &cli, &srv);
	srv->consume = 0;
	for (i = 0; i < 5; i++) {
		size_t tx = 0;
		ssize_t r;
		assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid), 0);
		run_pipe(cli, srv);
		while ((r = hbone_stream_write(cli->c, sid, buf, sizeof(buf))) > 0 || tx < 65536) {
			assert_true(r >= 0);
			tx += (size_t)r;
			run_pipe(cli, srv);
			if (r == 0)
				break;
		}
		/* Every stream gets its full window although none was read. */
		assert_int_equal(tx, 65536);
		assert_int_equal(srv->s[sid].rx, 65536);
		assert_int_equal(hbone_stream_reset(srv->c, sid, HBONE_H2_CANCEL), 0);
		run_pipe(cli, srv);
		assert_int_equal(cli->s[sid].closed, 1);
	}
	side_free(cli);
	side_free(srv);
}

static void test_backpressure_ring(void **state)
{
	struct side *cli, *srv;
	int32_t sid;
	size_t total = 0, out;
	static uint8_t buf[1 << 16];
	ssize_t r;
	int i;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &sid), 0);
	run_pipe(cli, srv);
	/* The network does not drain: the ring fills, then writes stop. */
	for (i = 0; i < 100; i++) {
		r = hbone_stream_write(cli->c, sid, buf, sizeof(buf));
		assert_true(r >= 0);
		total += (size_t)r;
		if (r == 0)
			break;
	}
	assert_true(r == 0);
	out = hbone_conn_out_len(cli->c);
	assert_true(out <= 256 * 1024);
	assert_true(total > 200 * 1024 && total < out);
	/* Draining fires on_stream_writable. */
	i = cli->s[sid].writable;
	run_pipe(cli, srv);
	assert_true(cli->s[sid].writable > i);
	assert_int_equal(srv->s[sid].rx, total);
	side_free(cli);
	side_free(srv);
}

static void test_reset(void **state)
{
	struct side *cli, *srv;
	int32_t a, b;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &a), 0);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:81", NULL, 0, NULL, &b), 0);
	run_pipe(cli, srv);
	assert_int_equal(hbone_stream_reset(cli->c, a, HBONE_H2_CANCEL), 0);
	assert_int_equal(hbone_stream_reset(srv->c, b, HBONE_H2_CONNECT_ERROR), 0);
	run_pipe(cli, srv);
	assert_int_equal(srv->s[a].closed, 1);
	assert_int_equal(srv->s[a].err, HBONE_H2_CANCEL);
	assert_int_equal(cli->s[a].closed, 1);
	assert_int_equal(cli->s[b].closed, 1);
	assert_int_equal(cli->s[b].err, HBONE_H2_CONNECT_ERROR);
	assert_int_equal(hbone_stream_reset(cli->c, a, 0), -ENOENT);
	assert_int_equal(hbone_conn_streams(cli->c), 0);
	assert_int_equal(hbone_conn_streams(srv->c), 0);
	side_free(cli);
	side_free(srv);
}

static void test_goaway(void **state)
{
	struct side *cli, *srv;
	int32_t a, b;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &a), 0);
	run_pipe(cli, srv);
	assert_int_equal(hbone_conn_goaway(srv->c, HBONE_H2_NO_ERROR), 0);
	run_pipe(cli, srv);
	assert_int_equal(cli->goaway, 1);
	assert_int_equal(cli->goaway_last, a);
	assert_false(hbone_conn_can_open(cli->c));
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &b), -EAGAIN);
	/* The stream in flight finishes normally. */
	assert_int_equal(hbone_stream_write(cli->c, a, (const uint8_t *)"bye", 3), 3);
	assert_int_equal(hbone_stream_shutdown(cli->c, a), 0);
	assert_int_equal(hbone_stream_shutdown(srv->c, a), 0);
	run_pipe(cli, srv);
	assert_int_equal(srv->s[a].rx, 3);
	assert_int_equal(cli->s[a].closed, 1);
	assert_int_equal(cli->s[a].err, 0);
	assert_int_equal(hbone_conn_goaway(cli->c, HBONE_H2_NO_ERROR), 0);
	run_pipe(cli, srv);
	assert_true(hbone_conn_done(srv->c));
	assert_true(hbone_conn_done(cli->c));
	side_free(cli);
	side_free(srv);
}

static void test_free_with_open_streams(void **state)
{
	struct side *cli, *srv;
	int32_t a, b;

	(void)state;
	pair(NULL, NULL, &cli, &srv);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &a), 0);
	run_pipe(cli, srv);
	/* Queued, never sent. */
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &b), 0);
	hbone_conn_free(cli->c);
	cli->c = NULL;
	assert_int_equal(cli->closed_total, 2);
	assert_int_equal(cli->s[a].err, HBONE_H2_CANCEL);
	/* The server sees the TCP close. */
	assert_int_equal(hbone_conn_feed_eof(srv->c), -EPIPE);
	assert_true(hbone_conn_done(srv->c));
	side_free(cli);
	side_free(srv);
}

static void test_rotation(void **state)
{
	struct tls_identity_slot *slot;
	struct tls_identity *old, *cur, *rotated;
	struct side *srv_a, *srv_b, *cli_a, *cli_b;
	uint8_t fa[32], fb[32];
	int32_t sa, sb;

	(void)state;
	/* The server identity lives in a slot; conn A starts with the first
	 * certificate, then the slot is rotated and conn B starts. */
	old = pki_identity("server", "root");
	assert_int_equal(tls_identity_slot_new(old, &slot), 0);
	cur = tls_identity_slot_get(slot);
	cli_a = side_new(HBONE_CLIENT, cli_id, ID_SERVER, NULL);
	srv_a = side_new(HBONE_SERVER, cur, NULL, NULL);
	tls_identity_unref(cur);
	run_pipe(cli_a, srv_a);
	assert_true(hbone_conn_established(cli_a->c));
	assert_int_equal(hbone_stream_open(cli_a->c, "10.0.0.2:80", NULL, 0, NULL, &sa), 0);
	run_pipe(cli_a, srv_a);

	rotated = pki_identity("server2", "root");
	assert_non_null(rotated);
	assert_string_equal(tls_identity_spiffe_id(rotated), ID_SERVER);
	tls_identity_slot_set(slot, rotated); /* drops the slot's old reference */
	cur = tls_identity_slot_get(slot);
	assert_ptr_equal(cur, rotated);
	cli_b = side_new(HBONE_CLIENT, cli_id, ID_SERVER, NULL);
	srv_b = side_new(HBONE_SERVER, cur, NULL, NULL);
	tls_identity_unref(cur);
	run_pipe(cli_b, srv_b);
	assert_true(hbone_conn_established(cli_b->c));
	assert_int_equal(tls_conn_peer_fingerprint(hbone_conn_tls(cli_a->c), fa), 0);
	assert_int_equal(tls_conn_peer_fingerprint(hbone_conn_tls(cli_b->c), fb), 0);
	assert_memory_not_equal(fa, fb, 32);

	/* The old connection still carries data after the rotation. */
	write_all(cli_a, cli_a, srv_a, sa, 100000, 0);
	assert_int_equal(hbone_stream_open(cli_b->c, "10.0.0.2:80", NULL, 0, NULL, &sb), 0);
	run_pipe(cli_b, srv_b);
	write_all(cli_b, cli_b, srv_b, sb, 1000, 0);
	run_pipe(cli_a, srv_a);
	run_pipe(cli_b, srv_b);
	assert_int_equal(srv_a->s[sa].rx, 100000);
	assert_true(srv_a->s[sa].hash == pat_hash(sa, 100000, 0));
	assert_int_equal(srv_b->s[sb].rx, 1000);
	side_free(cli_a);
	side_free(srv_a); /* last reference to the old identity goes here */
	side_free(cli_b);
	side_free(srv_b);
	tls_identity_slot_free(slot);
}

/* Two engines chained in one thread, as a node proxy relaying between an
 * inbound and an outbound tunnel would: callbacks of one connection write
 * into the other, both while the first is decrypting (feed) and while it
 * is encrypting (a stream closing inside its send path). */
static int32_t relay_sid;

static void relay_data(struct side *s, int32_t sid, const uint8_t *d, size_t n)
{
	struct side *out = s->hook_arg;
	(void)sid;
	assert_int_equal(hbone_stream_write(out->c, relay_sid, d, n), (ssize_t)n);
}

static void relay_closed(struct side *s, int32_t sid)
{
	struct side *out = s->hook_arg;
	(void)sid;
	assert_int_equal(hbone_stream_write(out->c, relay_sid, (const uint8_t *)"bye", 3), 3);
	assert_int_equal(hbone_stream_shutdown(out->c, relay_sid), 0);
}

static void test_relay_between_engines(void **state)
{
	struct side *c1, *s1, *c2, *s2;
	int32_t a;

	(void)state;
	pair(NULL, NULL, &c1, &s1);
	pair(NULL, NULL, &c2, &s2);
	assert_int_equal(hbone_stream_open(c2->c, "10.0.0.3:80", NULL, 0, NULL, &relay_sid), 0);
	run_pipe(c2, s2);
	assert_int_equal(c2->s[relay_sid].status, 200);
	s1->data_hook = relay_data;
	s1->closed_hook = relay_closed;
	s1->hook_arg = c2;
	assert_int_equal(hbone_stream_open(c1->c, "10.0.0.2:80", NULL, 0, NULL, &a), 0);
	run_pipe(c1, s1);
	assert_int_equal(hbone_stream_write(c1->c, a, (const uint8_t *)"hello relay", 11), 11);
	run_pipe(c1, s1); /* s1's on_stream_data writes into c2 */
	run_pipe(c2, s2);
	assert_int_equal(s2->s[relay_sid].rx, 11);
	/* s1 closes its stream from its own send path: the close callback
	 * writes into c2 while s1 holds the thread's staging buffer. */
	assert_int_equal(hbone_stream_shutdown(c1->c, a), 0);
	run_pipe(c1, s1);
	assert_int_equal(hbone_stream_shutdown(s1->c, a), 0);
	run_pipe(c1, s1);
	assert_int_equal(s1->s[a].closed, 1);
	run_pipe(c2, s2);
	assert_int_equal(s2->s[relay_sid].rx, 14);
	assert_int_equal(s2->s[relay_sid].eof, 1);
	side_free(c1);
	side_free(s1);
	side_free(c2);
	side_free(s2);
}

static void test_stats_and_close(void **state)
{
	struct hbone_stats a, b;
	struct side *cli, *srv;
	int32_t s1, s2, s3;

	(void)state;
	hbone_stats_get(&a);
	pair(NULL, NULL, &cli, &srv);
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &s1), 0);
	run_pipe(cli, srv);
	srv->decide = 401;
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &s2), 0);
	run_pipe(cli, srv);
	srv->decide = 200;
	assert_int_equal(hbone_stream_open(cli->c, "10.0.0.2:80", NULL, 0, NULL, &s3), 0);
	run_pipe(cli, srv);
	assert_int_equal(hbone_stream_reset(cli->c, s3, HBONE_H2_CANCEL), 0);
	run_pipe(cli, srv);
	/* Hard close from the client: GOAWAY + close_notify; the server sees
	 * the GOAWAY, then the clean TLS end. */
	assert_int_equal(hbone_conn_close(cli->c), 0);
	run_pipe(cli, srv);
	assert_int_equal(srv->goaway, 1);
	assert_int_equal(rb, -EPIPE);
	assert_true(hbone_conn_done(srv->c));
	hbone_stats_get(&b);
	assert_true(b.handshakes[HBONE_CLIENT] >= a.handshakes[HBONE_CLIENT] + 1);
	assert_true(b.handshakes[HBONE_SERVER] >= a.handshakes[HBONE_SERVER] + 1);
	assert_true(b.streams_opened[HBONE_CLIENT] >= a.streams_opened[HBONE_CLIENT] + 3);
	assert_true(b.streams_opened[HBONE_SERVER] >= a.streams_opened[HBONE_SERVER] + 3);
	assert_true(b.responses[HBONE_SERVER][0] >= a.responses[HBONE_SERVER][0] + 2);
	assert_true(b.responses[HBONE_CLIENT][2] >= a.responses[HBONE_CLIENT][2] + 1);
	assert_true(b.resets_sent >= a.resets_sent + 1);
	assert_true(b.resets_received >= a.resets_received + 1);
	assert_true(b.goaways_sent >= a.goaways_sent + 1);
	assert_true(b.goaways_received >= a.goaways_received + 1);
	side_free(cli);
	side_free(srv);

	/* A refused handshake is counted under its reason. */
	hbone_stats_get(&a);
	srv = side_new(HBONE_SERVER, srv_id, NULL, NULL);
	assert_int_equal(hbone_conn_feed(srv->c, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18),
	                 -EPROTO);
	hbone_stats_get(&b);
	assert_true(b.handshake_fail[HBONE_SERVER][TLS_FAIL_NOT_TLS] >=
	            a.handshake_fail[HBONE_SERVER][TLS_FAIL_NOT_TLS] + 1);
	side_free(srv);
}

static int expired;
static struct hbone_conn *expired_conn;

static void on_expire(void *arg, struct hbone_conn *c, void *user)
{
	(void)arg;
	assert_ptr_equal(user, (void *)0x1234);
	expired++;
	expired_conn = c;
}

static void test_pool(void **state)
{
	struct hbone_pool *pool;
	struct side *ca, *sa, *cb, *sb;
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(15008) };
	struct sockaddr_in other = dst;
	int32_t a1, a2, b1;
	void *user = NULL;

	(void)state;
	dst.sin_addr.s_addr = htonl(0x0a000002);
	other.sin_addr.s_addr = htonl(0x0a000003);
	assert_int_equal(hbone_pool_new(0, &pool), -EINVAL);
	assert_int_equal(hbone_pool_new(2, &pool), 0);
	pair(NULL, NULL, &ca, &sa);
	pair(NULL, NULL, &cb, &sb);
#define PICK(src, id, d) hbone_pool_pick(pool, src, id, (struct sockaddr *)(d), sizeof(*(d)), &user)
	assert_null(PICK(cli_id, ID_SERVER, &dst));
	assert_int_equal(hbone_pool_add(pool, cli_id, ID_SERVER, (struct sockaddr *)&dst,
	                                sizeof(dst), ca->c, (void *)0x1234),
	                 0);
	assert_int_equal(hbone_pool_add(pool, cli_id, ID_SERVER, (struct sockaddr *)&dst,
	                                sizeof(dst), ca->c, NULL),
	                 -EEXIST);
	assert_ptr_equal(PICK(cli_id, ID_SERVER, &dst), ca->c);
	assert_ptr_equal(user, (void *)0x1234);
	/* Any other key part: no match. */
	assert_null(PICK(srv_id, ID_SERVER, &dst));
	assert_null(PICK(cli_id, ID_OTHER, &dst));
	assert_null(PICK(cli_id, ID_SERVER, &other));

	/* The stream cap sends the next stream to another connection. */
	assert_int_equal(hbone_stream_open(ca->c, "10.0.0.2:80", NULL, 0, NULL, &a1), 0);
	assert_int_equal(hbone_stream_open(ca->c, "10.0.0.2:81", NULL, 0, NULL, &a2), 0);
	assert_null(PICK(cli_id, ID_SERVER, &dst));
	assert_int_equal(hbone_pool_add(pool, cli_id, ID_SERVER, (struct sockaddr *)&dst,
	                                sizeof(dst), cb->c, (void *)0x1234),
	                 0);
	assert_ptr_equal(PICK(cli_id, ID_SERVER, &dst), cb->c);
	assert_int_equal(hbone_stream_open(cb->c, "10.0.0.2:82", NULL, 0, NULL, &b1), 0);
	assert_int_equal(hbone_pool_conns(pool), 2);
	assert_int_equal(hbone_pool_streams(pool), 3);
	run_pipe(ca, sa);
	run_pipe(cb, sb);

	/* Busy connections never expire. */
	assert_int_equal(hbone_pool_expire(pool, 1000, 500, on_expire, NULL), 0);
	assert_int_equal(hbone_pool_expire(pool, 100000, 500, on_expire, NULL), 0);
	/* A becomes idle: it goes only after idle_ms of seeing it idle. */
	assert_int_equal(hbone_stream_reset(ca->c, a1, HBONE_H2_CANCEL), 0);
	assert_int_equal(hbone_stream_reset(ca->c, a2, HBONE_H2_CANCEL), 0);
	run_pipe(ca, sa);
	assert_int_equal(hbone_pool_streams(pool), 1);
	assert_int_equal(hbone_pool_expire(pool, 200000, 500, on_expire, NULL), 0);
	assert_int_equal(hbone_pool_expire(pool, 200499, 500, on_expire, NULL), 0);
	assert_int_equal(hbone_pool_expire(pool, 200500, 500, on_expire, NULL), 1);
	assert_int_equal(expired, 1);
	assert_ptr_equal(expired_conn, ca->c);
	assert_int_equal(hbone_pool_remove(pool, ca->c), -ENOENT);

	/* B gets a GOAWAY: no new streams; once its stream ends it goes at
	 * once, not after the idle time. */
	assert_int_equal(hbone_conn_goaway(sb->c, HBONE_H2_NO_ERROR), 0);
	run_pipe(cb, sb);
	assert_null(PICK(cli_id, ID_SERVER, &dst));
	assert_int_equal(hbone_pool_expire(pool, 300000, 500, on_expire, NULL), 0);
	assert_int_equal(hbone_stream_reset(cb->c, b1, HBONE_H2_CANCEL), 0);
	run_pipe(cb, sb);
	assert_int_equal(hbone_pool_expire(pool, 300001, 500, on_expire, NULL), 1);
	assert_ptr_equal(expired_conn, cb->c);
	assert_int_equal(hbone_pool_conns(pool), 0);

	/* remove() of a live entry. */
	assert_int_equal(hbone_pool_add(pool, cli_id, ID_SERVER, (struct sockaddr *)&dst,
	                                sizeof(dst), ca->c, NULL),
	                 0);
	assert_int_equal(hbone_pool_remove(pool, ca->c), 0);
	assert_int_equal(hbone_pool_conns(pool), 0);
	assert_int_equal(hbone_pool_add(pool, cli_id, ID_SERVER, (struct sockaddr *)&dst,
	                                sizeof(dst), ca->c, NULL),
	                 0);
#undef PICK
	hbone_pool_free(pool); /* frees the entry, not the connection */
	side_free(ca);
	side_free(sa);
	side_free(cb);
	side_free(sb);
}

/* ---- a hand-driven nghttp2 client over a bare tls_conn -------------------- */

struct rawh2 {
	struct tls_conn *tls;
	nghttp2_session *ng;
	int status[64];
	uint32_t rst[64];
	int closed[64];
	int goaway;
};

static ssize_t rh_send(nghttp2_session *ng, const uint8_t *d, size_t n, int fl, void *ud)
{
	struct rawh2 *r = ud;
	(void)ng;
	(void)fl;
	if (tls_conn_write(r->tls, d, n) < 0)
		return NGHTTP2_ERR_WOULDBLOCK;
	return (ssize_t)n;
}

static int rh_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
	struct rawh2 *r = ud;
	(void)ng;
	(void)flags;
	if (nl == 7 && memcmp(name, ":status", 7) == 0 && vl == 3 && f->hd.stream_id < 64)
		r->status[f->hd.stream_id] = atoi((const char *)value);
	return 0;
}

static int rh_frame(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct rawh2 *r = ud;
	(void)ng;
	if (f->hd.type == NGHTTP2_RST_STREAM && f->hd.stream_id < 64)
		r->rst[f->hd.stream_id] = f->rst_stream.error_code + 1;
	if (f->hd.type == NGHTTP2_GOAWAY)
		r->goaway++;
	return 0;
}

static int rh_close(nghttp2_session *ng, int32_t sid, uint32_t err, void *ud)
{
	struct rawh2 *r = ud;
	(void)ng;
	(void)err;
	if (sid < 64)
		r->closed[sid]++;
	return 0;
}

static struct rawh2 *rawh2_new(void)
{
	struct rawh2 *r = calloc(1, sizeof(*r));
	nghttp2_session_callbacks *cb;

	assert_non_null(r);
	assert_int_equal(tls_conn_new(cli_id, TLS_CLIENT, ID_SERVER, 0, &r->tls), 0);
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, rh_send);
	nghttp2_session_callbacks_set_on_header_callback(cb, rh_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, rh_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, rh_close);
	assert_int_equal(nghttp2_session_client_new(&r->ng, cb, r), 0);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(r->ng, NGHTTP2_FLAG_NONE, NULL, 0);
	return r;
}

static void rawh2_free(struct rawh2 *r)
{
	nghttp2_session_del(r->ng);
	tls_conn_free(r->tls);
	free(r);
}

static void rawh2_run(struct rawh2 *r, struct side *srv)
{
	static uint8_t in[1 << 18], plain[1 << 14];
	struct iovec iov[2];
	size_t moved, inl;
	int guard = 0, n, i;
	ssize_t k;

	do {
		moved = 0;
		if (tls_conn_handshake(r->tls) == 0)
			nghttp2_session_send(r->ng);
		n = tls_conn_pending_out(r->tls, iov);
		for (i = 0; i < n; i++) {
			hbone_conn_feed(srv->c, iov[i].iov_base, iov[i].iov_len);
			moved += iov[i].iov_len;
		}
		tls_conn_out_done(r->tls, tls_conn_out_len(r->tls));
		inl = 0;
		n = hbone_conn_pending_out(srv->c, iov);
		for (i = 0; i < n; i++) {
			memcpy(in + inl, iov[i].iov_base, iov[i].iov_len);
			inl += iov[i].iov_len;
		}
		hbone_conn_out_done(srv->c, inl);
		moved += inl;
		tls_conn_input(r->tls, in, inl);
		if (tls_conn_handshake(r->tls) == 0)
			while ((k = tls_conn_read(r->tls, plain, sizeof(plain))) > 0)
				nghttp2_session_mem_recv(r->ng, plain, (size_t)k);
	} while (moved && ++guard < 1000);
}

static int32_t rawh2_req(struct rawh2 *r, const nghttp2_nv *nv, size_t n)
{
	return nghttp2_submit_request(r->ng, NULL, nv, n, NULL, NULL);
}

#define MKNV(n, v)                                                                                 \
	{                                                                                          \
		(uint8_t *)n, (uint8_t *)v, sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE     \
	}

static void test_server_rejects(void **state)
{
	static const char *const bad_auth[] = { "10.0.0.2",       "10.0.0.2:0",  "10.0.0.2:65536",
		                                "svc.default:80", "[::1:80",     "[fe80::1%lo]:80",
		                                "::1:80",         "1.2.3.4:80x", "a:b:c" };
	struct side *srv = side_new(HBONE_SERVER, srv_id, NULL, NULL);
	struct rawh2 *r = rawh2_new();
	nghttp2_nv nv[3] = { MKNV(":method", "CONNECT"), MKNV(":authority", "") };
	char overlong[200];
	int32_t sid;
	size_t i;

	(void)state;
	assert_non_null(srv);
	for (i = 0; i < sizeof(bad_auth) / sizeof(bad_auth[0]); i++) {
		nv[1].value = (uint8_t *)bad_auth[i];
		nv[1].valuelen = strlen(bad_auth[i]);
		sid = rawh2_req(r, nv, 2);
		assert_true(sid > 0);
		rawh2_run(r, srv);
		if (r->status[sid] != 400)
			fail_msg("authority '%s': status %d", bad_auth[i], r->status[sid]);
		assert_int_equal(r->closed[sid], 1);
	}
	memset(overlong, '1', sizeof(overlong) - 1);
	overlong[sizeof(overlong) - 1] = '\0';
	memcpy(overlong + 150, ":80", 4);
	nv[1].value = (uint8_t *)overlong;
	nv[1].valuelen = strlen(overlong);
	sid = rawh2_req(r, nv, 2);
	rawh2_run(r, srv);
	assert_int_equal(r->status[sid], 400);
	assert_int_equal(srv->requests, 0); /* none reached the data plane */

	/* Not CONNECT. */
	{
		nghttp2_nv get[] = { MKNV(":method", "GET"), MKNV(":scheme", "https"),
			             MKNV(":path", "/"), MKNV(":authority", "10.0.0.2:80") };
		sid = rawh2_req(r, get, 4);
		rawh2_run(r, srv);
		assert_int_equal(r->status[sid], 400);
	}

	/* Too many header fields: the stream is reset, the connection lives. */
	{
		nghttp2_nv many[80];
		char names[80][8];
		many[0] = (nghttp2_nv)MKNV(":method", "CONNECT");
		many[1] = (nghttp2_nv)MKNV(":authority", "10.0.0.2:80");
		for (i = 2; i < 80; i++) {
			snprintf(names[i], sizeof(names[i]), "x-%zu", i);
			many[i] = (nghttp2_nv){ (uint8_t *)names[i], (uint8_t *)"v",
				                strlen(names[i]), 1, NGHTTP2_NV_FLAG_NONE };
		}
		sid = rawh2_req(r, many, 80);
		rawh2_run(r, srv);
		assert_int_equal(r->status[sid], 0);
		assert_int_equal(r->rst[sid], NGHTTP2_INTERNAL_ERROR + 1);
		assert_int_equal(r->closed[sid], 1);
	}
	/* An oversized header block (one 20 KiB value). */
	{
		static char big[20 * 1024];
		nghttp2_nv h[3] = { MKNV(":method", "CONNECT"), MKNV(":authority", "10.0.0.2:80"),
			            MKNV("baggage", "") };
		memset(big, 'b', sizeof(big) - 1);
		h[2].value = (uint8_t *)big;
		h[2].valuelen = sizeof(big) - 1;
		sid = rawh2_req(r, h, 3);
		rawh2_run(r, srv);
		assert_int_equal(r->status[sid], 0);
		assert_true(r->rst[sid] > 0);
	}
	assert_int_equal(srv->requests, 0);
	assert_int_equal(r->goaway, 0);
	assert_int_equal(hbone_conn_streams(srv->c), 0);

	/* The same connection still serves a good request. */
	nv[1].value = (uint8_t *)"10.0.0.2:80";
	nv[1].valuelen = 11;
	sid = rawh2_req(r, nv, 2);
	rawh2_run(r, srv);
	assert_int_equal(r->status[sid], 200);
	assert_int_equal(srv->requests, 1);
	rawh2_free(r);
	side_free(srv);
}

static void test_server_garbage_h2(void **state)
{
	struct side *srv = side_new(HBONE_SERVER, srv_id, NULL, NULL);
	struct rawh2 *r = rawh2_new();
	static const uint8_t junk[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x07\x00\x00\x00"
	                              "\x00\x00garbage-frames-here";

	(void)state;
	/* TLS comes up, then the HTTP/2 layer gets garbage: GOAWAY, -EPROTO. */
	rawh2_run(r, srv);
	assert_true(hbone_conn_established(srv->c));
	assert_int_equal(tls_conn_write(r->tls, junk, sizeof(junk)), 0);
	{
		struct iovec iov[2];
		int n = tls_conn_pending_out(r->tls, iov), i, rc = 0;
		for (i = 0; i < n; i++)
			rc |= hbone_conn_feed(srv->c, iov[i].iov_base, iov[i].iov_len);
		tls_conn_out_done(r->tls, tls_conn_out_len(r->tls));
		(void)rc;
	}
	rawh2_run(r, srv);
	assert_true(r->goaway >= 1);
	rawh2_free(r);
	side_free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_authority),
		cmocka_unit_test(test_validate_request),
		cmocka_unit_test(test_connect_200),
		cmocka_unit_test(test_connect_refused_status),
		cmocka_unit_test(test_connect_deferred),
		cmocka_unit_test(test_client_open_validation),
		cmocka_unit_test(test_many_streams),
		cmocka_unit_test(test_stream_cap),
		cmocka_unit_test(test_backpressure_window),
		cmocka_unit_test(test_conn_window_reclaimed),
		cmocka_unit_test(test_backpressure_ring),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_goaway),
		cmocka_unit_test(test_free_with_open_streams),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_stats_and_close),
		cmocka_unit_test(test_relay_between_engines),
		cmocka_unit_test(test_pool),
		cmocka_unit_test(test_server_rejects),
		cmocka_unit_test(test_server_garbage_h2),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
