/*
 * hbone-peer: a test-only HBONE endpoint over real sockets, built from the
 * engine, for interoperability tests against independent HTTP/2 and TLS
 * stacks and for quick loopback throughput numbers.  Not a product.
 *
 *   hbone-peer server PORT CHAIN KEY ROOT [sink]
 *       Accepts HBONE on 127.0.0.1:PORT.  CONNECT to port 7 -> 401, port 9
 *       -> 503, anything else -> 200 and the tunnel echoes what it gets
 *       ("sink": discards instead).  Logs the client's SPIFFE ID.
 *   hbone-peer client PORT CHAIN KEY ROOT EXPECT_ID AUTHORITY BYTES [STREAMS]
 *       Opens STREAMS (1) CONNECT tunnels to 127.0.0.1:PORT, sends BYTES of
 *       a pattern on each, half-closes and checks the echo.  Prints one
 *       line "status=... streams=... tx=... rx=... ok=... secs=..." and
 *       exits 0 when every echo matched (or BYTES is 0 and status printed).
 *
 *   hbone-peer bench CHAIN KEY ROOT EXPECT_ID MBYTES HANDSHAKES
 *       In-memory, no sockets: MBYTES through one tunnel (client ->
 *       server, server consumes) and HANDSHAKES full mTLS handshakes;
 *       prints engine CPU cost (process CPU time, both ends counted).
 *
 * One thread, poll(), non-blocking sockets: the same call pattern the
 * io_uring data plane uses (feed what was read, send pending_out, write
 * until the engine says wait).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "node-proxy/hbone.h"

#define MAXC 64
#define MAXS 256

struct tun {
	int32_t sid;
	uint8_t *buf; /* server: bytes to echo */
	size_t len, cap;
	size_t tx, rx;
	uint64_t hash_rx, hash_tx;
	int eof, closed, status, shut;
};

struct peer {
	int fd;
	struct hbone_conn *c;
	struct tun t[MAXS];
	int nt;
};

static int sink, is_client, no_hash;
static uint64_t total_bytes;

static uint8_t pat(size_t i)
{
	return (uint8_t)(i * 131 + (i >> 9));
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	while (n--) {
		h ^= *p++;
		h *= 1099511628211ull;
	}
	return h;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	uint8_t *b;

	if (!f || fstat(fileno(f), &st) < 0)
		exit(2);
	b = malloc(st.st_size + 1);
	*len = fread(b, 1, st.st_size, f);
	fclose(f);
	return b;
}

static struct tls_identity *load(char **av)
{
	struct tls_identity_config cfg = { 0 };
	struct tls_identity *id;

	cfg.chain = slurp(av[0], &cfg.chain_len);
	cfg.key = slurp(av[1], &cfg.key_len);
	cfg.roots = slurp(av[2], &cfg.roots_len);
	if (tls_identity_new(&cfg, &id)) {
		fprintf(stderr, "hbone-peer: bad identity\n");
		exit(2);
	}
	free((void *)cfg.chain);
	free((void *)cfg.key);
	free((void *)cfg.roots);
	return id;
}

static struct tun *tun_get(struct peer *p, int32_t sid, int create)
{
	for (int i = 0; i < p->nt; i++)
		if (p->t[i].sid == sid)
			return &p->t[i];
	if (!create || p->nt == MAXS)
		return NULL;
	memset(&p->t[p->nt], 0, sizeof(p->t[0]));
	p->t[p->nt].sid = sid;
	p->t[p->nt].hash_rx = p->t[p->nt].hash_tx = 14695981039346656037ull;
	return &p->t[p->nt++];
}

/* ---- callbacks ---------------------------------------------------------- */

static void on_hs(struct hbone_conn *c, void *arg, enum tls_fail why)
{
	(void)arg;
	if (why)
		fprintf(stderr, "hbone-peer: handshake refused: %s\n", tls_fail_str(why));
	else
		fprintf(stderr, "hbone-peer: handshake ok peer=%s cipher=%s\n",
		        hbone_conn_peer_id(c), tls_conn_cipher(hbone_conn_tls(c)));
}

static int on_req(struct hbone_conn *c, void *arg, int32_t sid, const struct hbone_request *r)
{
	struct peer *p = arg;
	uint16_t port =
	    ntohs(r->dst.ss_family == AF_INET ? ((const struct sockaddr_in *)&r->dst)->sin_port
	                                      : ((const struct sockaddr_in6 *)&r->dst)->sin6_port);

	(void)c;
	fprintf(stderr, "hbone-peer: CONNECT %s from %s%s%s\n", r->authority, r->peer_id,
	        r->forwarded ? " forwarded=" : "", r->forwarded ? r->forwarded : "");
	if (port == 7)
		return 401;
	if (port == 9)
		return 503;
	if (!tun_get(p, sid, 1))
		return 503;
	return 200;
}

static void on_resp(struct hbone_conn *c, void *arg, int32_t sid, void *su, int status)
{
	struct tun *t = tun_get(arg, sid, 0);
	(void)c;
	(void)su;
	if (t)
		t->status = status;
}

static void on_data(struct hbone_conn *c, void *arg, int32_t sid, void *su, const uint8_t *d,
                    size_t n)
{
	struct peer *p = arg;
	struct tun *t = tun_get(p, sid, 0);

	(void)su;
	if (!t)
		return;
	t->rx += n;
	total_bytes += n;
	if (!no_hash)
		t->hash_rx = fnv(t->hash_rx, d, n);
	if (sink || is_client) {
		hbone_stream_consume(c, sid, n);
		return;
	}
	/* Bounded by our stream window: consumed only once echoed. */
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2;
		t->buf = realloc(t->buf, t->cap);
		if (!t->buf)
			exit(3);
	}
	memcpy(t->buf + t->len, d, n);
	t->len += n;
}

static void on_eof(struct hbone_conn *c, void *arg, int32_t sid, void *su)
{
	struct tun *t = tun_get(arg, sid, 0);
	(void)c;
	(void)su;
	if (t)
		t->eof = 1;
}

static void on_closed(struct hbone_conn *c, void *arg, int32_t sid, void *su, uint32_t err)
{
	struct peer *p = arg;
	struct tun *t = tun_get(p, sid, 0);
	(void)c;
	(void)su;
	if (err)
		fprintf(stderr, "hbone-peer: stream %d closed with h2 error %u\n", sid, err);
	if (t) {
		t->closed = 1;
		free(t->buf);
		t->buf = NULL;
	}
}

static const struct hbone_callbacks cbs = {
	.on_handshake = on_hs,
	.on_stream_request = on_req,
	.on_stream_response = on_resp,
	.on_stream_data = on_data,
	.on_stream_eof = on_eof,
	.on_stream_closed = on_closed,
};

/* ---- socket plumbing ------------------------------------------------------ */

/* Send what the engine has; 0, or -1 when the socket is dead. */
static int flush_out(struct peer *p)
{
	struct iovec iov[2];
	ssize_t n;
	int k;

	while ((k = hbone_conn_pending_out(p->c, iov)) > 0) {
		n = writev(p->fd, iov, k);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		hbone_conn_out_done(p->c, (size_t)n);
	}
	return 0;
}

/* Server: echo buffered bytes as far as the engine takes them. */
static void pump_echo(struct peer *p)
{
	for (int i = 0; i < p->nt; i++) {
		struct tun *t = &p->t[i];
		ssize_t w;
		if (t->closed)
			continue;
		while (t->len) {
			w = hbone_stream_write(p->c, t->sid, t->buf, t->len);
			if (w <= 0)
				break;
			memmove(t->buf, t->buf + w, t->len - (size_t)w);
			t->len -= (size_t)w;
			hbone_stream_consume(p->c, t->sid, (size_t)w);
		}
		if (t->eof && !t->len && !t->shut) {
			t->shut = 1;
			hbone_stream_shutdown(p->c, t->sid);
		}
	}
}

static void set_nb(int fd)
{
	int one = 1;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int serve(int port, struct tls_identity *id)
{
	static uint8_t rbuf[1 << 17];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct peer *peers[MAXC] = { 0 };
	struct pollfd pfd[MAXC + 1];
	int lfd, one = 1, i;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 64) < 0) {
		perror("hbone-peer: listen");
		return 2;
	}
	fprintf(stderr, "hbone-peer: listening on 127.0.0.1:%d as %s\n", port,
	        tls_identity_spiffe_id(id));
	for (;;) {
		pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		for (i = 0; i < MAXC; i++) {
			pfd[i + 1] = (struct pollfd){ .fd = -1 };
			if (peers[i]) {
				pfd[i + 1].fd = peers[i]->fd;
				pfd[i + 1].events =
				    POLLIN | (hbone_conn_out_len(peers[i]->c) ? POLLOUT : 0);
			}
		}
		if (poll(pfd, MAXC + 1, -1) < 0)
			continue;
		if (pfd[0].revents & POLLIN) {
			int fd = accept(lfd, NULL, NULL);
			for (i = 0; fd >= 0 && i < MAXC && peers[i]; i++)
				;
			if (fd >= 0 && i < MAXC) {
				struct peer *p = calloc(1, sizeof(*p));
				set_nb(fd);
				p->fd = fd;
				if (hbone_conn_new(HBONE_SERVER, id, NULL, NULL, &cbs, p, &p->c)) {
					close(fd);
					free(p);
				} else {
					peers[i] = p;
				}
			} else if (fd >= 0) {
				close(fd);
			}
		}
		for (i = 0; i < MAXC; i++) {
			struct peer *p = peers[i];
			int dead = 0;
			if (!p || !pfd[i + 1].revents)
				continue;
			if (pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = read(p->fd, rbuf, sizeof(rbuf));
				if (n > 0) {
					if (hbone_conn_feed(p->c, rbuf, (size_t)n) < 0)
						dead = 1;
				} else if (n == 0 || errno != EAGAIN) {
					hbone_conn_feed_eof(p->c);
					dead = 1;
				}
			}
			pump_echo(p);
			if (flush_out(p) < 0)
				dead = 1;
			pump_echo(p);
			if (flush_out(p) < 0)
				dead = 1;
			if (dead || hbone_conn_done(p->c)) {
				flush_out(p);
				close(p->fd);
				hbone_conn_free(p->c);
				free(p);
				peers[i] = NULL;
			}
		}
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int client(int port, struct tls_identity *id, const char *expect, const char *authority,
                  size_t bytes, int nstreams)
{
	static uint8_t rbuf[1 << 17], wbuf[1 << 16];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct peer *p = calloc(1, sizeof(*p));
	struct hbone_header fwd = { "forwarded", "for=\"127.0.0.1:1\"" };
	uint64_t want = 14695981039346656037ull;
	double t0 = now();
	int i, done, ok = 1, status = 0;
	size_t rx = 0, tx = 0;

	for (size_t k = 0; k < bytes; k++) {
		uint8_t b = pat(k);
		want = fnv(want, &b, 1);
	}
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(p->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("hbone-peer: connect");
		return 2;
	}
	set_nb(p->fd);
	if (hbone_conn_new(HBONE_CLIENT, id, expect, NULL, &cbs, p, &p->c))
		return 2;
	for (i = 0; i < nstreams; i++) {
		int32_t sid;
		if (hbone_stream_open(p->c, authority, &fwd, 1, NULL, &sid))
			return 2;
		tun_get(p, sid, 1);
	}
	for (;;) {
		struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
		/* Write every open tunnel's pattern as far as the engine lets us,
		 * sending as we go: draining the ring makes room for more. */
		size_t progress;
		do {
			progress = 0;
			for (i = 0; i < p->nt; i++) {
				struct tun *t = &p->t[i];
				while (t->status == 200 && !t->closed && t->tx < bytes) {
					size_t k = bytes - t->tx < sizeof(wbuf) ? bytes - t->tx
					                                        : sizeof(wbuf);
					for (size_t j = 0; j < k; j++)
						wbuf[j] = pat(t->tx + j);
					ssize_t w = hbone_stream_write(p->c, t->sid, wbuf, k);
					if (w <= 0)
						break;
					t->tx += (size_t)w;
					progress += (size_t)w;
				}
				if (t->status == 200 && t->tx == bytes && !t->shut) {
					t->shut = 1;
					hbone_stream_shutdown(p->c, t->sid);
				}
			}
			if (flush_out(p) < 0)
				goto out;
		} while (progress);
		if (flush_out(p) < 0)
			break;
		for (done = 0, i = 0; i < p->nt; i++)
			done += p->t[i].closed || (p->t[i].status && p->t[i].status != 200);
		if (done == p->nt || hbone_conn_failure(p->c))
			break;
		if (hbone_conn_out_len(p->c))
			pfd.events |= POLLOUT;
		if (poll(&pfd, 1, 10000) <= 0)
			break;
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(p->fd, rbuf, sizeof(rbuf));
			if (n > 0) {
				if (hbone_conn_feed(p->c, rbuf, (size_t)n) < 0 &&
				    hbone_conn_failure(p->c))
					break;
			} else if (n == 0 || errno != EAGAIN) {
				hbone_conn_feed_eof(p->c);
				break;
			}
		}
	}
out:
	for (i = 0; i < p->nt; i++) {
		struct tun *t = &p->t[i];
		status = status ? status : t->status;
		rx += t->rx;
		tx += t->tx;
		if (t->status != 200 || t->tx != bytes || (!sink && t->rx != bytes) ||
		    (!sink && t->hash_rx != want))
			ok = 0;
	}
	if (hbone_conn_failure(p->c))
		ok = 0;
	printf("status=%d streams=%d tx=%zu rx=%zu ok=%d fail=%s secs=%.3f\n", status, p->nt, tx,
	       rx, ok, tls_fail_str(hbone_conn_failure(p->c)), now() - t0);
	hbone_conn_free(p->c);
	close(p->fd);
	free(p);
	return ok || bytes == 0 ? 0 : 1;
}

static double cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Move everything pending from @a to @b and back until quiet. */
static void shuttle(struct peer *a, struct peer *b)
{
	struct iovec iov[2];
	int moved, n, i;

	do {
		moved = 0;
		n = hbone_conn_pending_out(a->c, iov);
		for (i = 0; i < n; i++)
			hbone_conn_feed(b->c, iov[i].iov_base, iov[i].iov_len);
		if (n) {
			hbone_conn_out_done(a->c, hbone_conn_out_len(a->c));
			moved = 1;
		}
		n = hbone_conn_pending_out(b->c, iov);
		for (i = 0; i < n; i++)
			hbone_conn_feed(a->c, iov[i].iov_base, iov[i].iov_len);
		if (n) {
			hbone_conn_out_done(b->c, hbone_conn_out_len(b->c));
			moved = 1;
		}
	} while (moved);
}

static int bench(struct tls_identity *id, const char *expect, size_t mbytes, int hs)
{
	static uint8_t wbuf[1 << 16];
	struct peer *cp = calloc(1, sizeof(*cp)), *sp = calloc(1, sizeof(*sp));
	size_t total = mbytes << 20, tx = 0;
	double c0, c1;
	int32_t sid;
	int i;

	sink = 1;
	is_client = 1;
	no_hash = 1;
	memset(wbuf, 0x5a, sizeof(wbuf));
	c0 = cpu();
	for (i = 0; i < hs; i++) {
		hbone_conn_new(HBONE_CLIENT, id, expect, NULL, NULL, NULL, &cp->c);
		hbone_conn_new(HBONE_SERVER, id, NULL, NULL, NULL, NULL, &sp->c);
		shuttle(cp, sp);
		if (!hbone_conn_established(cp->c) || !hbone_conn_established(sp->c))
			return 1;
		hbone_conn_free(cp->c);
		hbone_conn_free(sp->c);
	}
	c1 = cpu();
	if (hs)
		printf("handshakes=%d cpu=%.3fs per_handshake_both_ends=%.0fus "
		       "handshakes_per_cpu_second=%.0f\n",
		       hs, c1 - c0, (c1 - c0) / hs * 1e6, hs / (c1 - c0));
	{
		/* Resident memory of idle established connections (both ends). */
		enum { N = 200 };
		static struct peer cs[N], ss[N];
		long pages0, pages1, x;
		FILE *f = fopen("/proc/self/statm", "r");
		if (!f || fscanf(f, "%ld %ld", &x, &pages0) != 2)
			return 1;
		fclose(f);
		for (i = 0; i < N; i++) {
			hbone_conn_new(HBONE_CLIENT, id, expect, NULL, NULL, NULL, &cs[i].c);
			hbone_conn_new(HBONE_SERVER, id, NULL, NULL, NULL, NULL, &ss[i].c);
			shuttle(&cs[i], &ss[i]);
		}
		f = fopen("/proc/self/statm", "r");
		if (!f || fscanf(f, "%ld %ld", &x, &pages1) != 2)
			return 1;
		fclose(f);
		printf("idle_conn_rss_per_end=%ldKiB\n", (pages1 - pages0) * 4 / (2 * N));
		for (i = 0; i < N; i++) {
			hbone_conn_free(cs[i].c);
			hbone_conn_free(ss[i].c);
		}
	}
	if (!total)
		return 0;
	cp->fd = sp->fd = -1;
	hbone_conn_new(HBONE_CLIENT, id, expect, NULL, &cbs, cp, &cp->c);
	hbone_conn_new(HBONE_SERVER, id, NULL, NULL, &cbs, sp, &sp->c);
	shuttle(cp, sp);
	hbone_stream_open(cp->c, "10.0.0.2:80", NULL, 0, NULL, &sid);
	tun_get(cp, sid, 1);
	shuttle(cp, sp);
	c0 = cpu();
	while (tx < total) {
		ssize_t w = hbone_stream_write(cp->c, sid, wbuf, sizeof(wbuf));
		if (w > 0)
			tx += (size_t)w;
		else
			shuttle(cp, sp);
	}
	shuttle(cp, sp);
	c1 = cpu();
	printf("bulk=%zuMiB cpu=%.3fs engine_MBps_per_core_both_ends=%.0f\n", mbytes, c1 - c0,
	       (double)total / (c1 - c0) / 1e6);
	return 0;
}

int main(int argc, char **argv)
{
	struct tls_identity *id;

	signal(SIGPIPE, SIG_IGN);
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (argc >= 6 && strcmp(argv[1], "server") == 0) {
		sink = argc > 6 && strcmp(argv[6], "sink") == 0;
		id = load(argv + 3);
		return serve(atoi(argv[2]), id);
	}
	if (argc >= 9 && strcmp(argv[1], "client") == 0) {
		id = load(argv + 3);
		is_client = 1;
		sink = getenv("HBONE_PEER_SINK") != NULL;
		int rc = client(atoi(argv[2]), id, argv[6], argv[7], strtoull(argv[8], NULL, 0),
		                argc > 9 ? atoi(argv[9]) : 1);
		tls_identity_unref(id);
		return rc;
	}
	if (argc >= 8 && strcmp(argv[1], "bench") == 0) {
		id = load(argv + 2);
		int rc = bench(id, argv[5], strtoull(argv[6], NULL, 0), atoi(argv[7]));
		tls_identity_unref(id);
		return rc;
	}
	fprintf(stderr, "usage: hbone-peer server PORT CHAIN KEY ROOT [sink]\n"
	                "       hbone-peer client PORT CHAIN KEY ROOT EXPECT_ID AUTHORITY BYTES "
	                "[STREAMS]\n");
	return 2;
}
