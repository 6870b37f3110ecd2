/*
 * hbone: HTTP/2 CONNECT tunnels over a tls_conn (see hbone.h).
 *
 * Data path, sending: hbone_stream_write() lends its buffer to the stream's
 * nghttp2 data source for the duration of one nghttp2_session_send(); the
 * read callback copies at most one TLS record's worth per DATA frame into
 * nghttp2's frame buffer, and the send callback encrypts whole frames
 * straight into the ciphertext ring (small control frames are coalesced in
 * a one-record staging buffer first, so a burst of WINDOW_UPDATEs costs one
 * record, not one each).  A DATA frame is sized so that frame header and
 * payload fill exactly one 16 KiB record.
 *
 * Receiving: ciphertext is decrypted one record at a time into a fixed
 * buffer and fed to nghttp2; DATA payload goes to on_stream_data in place.
 * Automatic WINDOW_UPDATE is off: windows reopen only through
 * hbone_stream_consume(), which is how the application's socket pushes
 * back on the remote sender.
 *
 * Per connection the engine allocates at creation only (ring, two record
 * buffers, header slots); per stream one small struct, recycled through a
 * free list.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "node-proxy/hbone.h"

#define FRAME_HD      9
#define DATA_MAX      (TLS_RECORD_MAX - FRAME_HD)
#define STAGE_DIRECT  4096 /* frames at least this big skip the staging copy */
#define AUTHORITY_MAX 64

struct hstream {
	int32_t sid;
	void *user;
	const uint8_t *wbuf; /* lent by hbone_stream_write, only during it */
	size_t wlen;
	size_t unconsumed; /* delivered to the caller, not yet consumed */
	bool tunnel;       /* client: 2xx received; server: 200 submitted */
	bool responded;    /* server: a response was submitted */
	bool refused;      /* server: a non-200 response was submitted */
	bool deferred;     /* our data source returned DEFERRED */
	bool shut;         /* END_STREAM requested */
	bool want_write;   /* a write came up short: on_stream_writable owed */
	bool eof;          /* the peer's END_STREAM seen */
	bool live;         /* false once released (struct parked on the spare list) */
	struct hstream *prev, *next;
};

struct hbone_conn {
	enum hbone_role role;
	struct hbone_config cfg;
	struct hbone_callbacks cb;
	void *arg;
	struct tls_conn *tls;
	nghttp2_session *ng;
	bool hs_reported; /* on_handshake called */
	bool failed;      /* TLS or HTTP/2 fatal: nothing more will happen */
	bool peer_closed; /* TCP EOF or close_notify */
	bool freeing;
	int in_ng; /* depth of nghttp2 calls: callbacks are running */
	uint32_t nwant;
	uint32_t nstreams;
	struct hstream *live, *spare;

	/* Header block being received (blocks never interleave in HTTP/2). */
	int32_t h_sid;
	uint32_t h_n, h_bytes;
	nghttp2_rcbuf **h_name, **h_value;

	/* Record-sized scratch: the staging buffer lives only inside pump()
	 * and the decrypt buffer only inside hbone_conn_feed(), so both are
	 * borrowed from the thread; a conn gets its own copy only when a
	 * callback of another conn re-enters the engine while they are held. */
	size_t stage_len;
	uint8_t *stage, *own_stage, *own_rbuf;
	bool stage_tl;
};

static __thread uint8_t tl_stage[TLS_RECORD_MAX], tl_rbuf[TLS_RECORD_MAX];
static __thread bool tl_stage_busy, tl_rbuf_busy;

static struct hbone_stats stats;

#define STAT_INC(field) __atomic_add_fetch(&stats.field, 1, __ATOMIC_RELAXED)

void hbone_stats_get(struct hbone_stats *out)
{
	const uint64_t *src = (const uint64_t *)&stats;
	uint64_t *dst = (uint64_t *)out;
	size_t i;

	for (i = 0; i < sizeof(stats) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

static void stat_status(enum hbone_role role, int status)
{
	switch (status) {
	case 200:
		STAT_INC(responses[role][0]);
		break;
	case 400:
		STAT_INC(responses[role][1]);
		break;
	case 401:
		STAT_INC(responses[role][2]);
		break;
	case 503:
		STAT_INC(responses[role][3]);
		break;
	default:
		STAT_INC(responses_other[role]);
		break;
	}
}

void hbone_config_default(struct hbone_config *cfg)
{
	cfg->max_concurrent_streams = 100;
	cfg->stream_window = 4u << 20;
	cfg->conn_window = 16u << 20;
	cfg->out_buf = 256u << 10;
	cfg->max_header_bytes = 16u << 10;
	cfg->max_headers = 64;
}

/* ---- authority and request validation (untrusted input) ---------------- */

static int parse_port(const char *p, size_t n, uint16_t *out)
{
	uint32_t v = 0;
	size_t i;

	if (n == 0 || n > 5 || p[0] == '0')
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint32_t)(p[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

int hbone_parse_authority(const char *s, size_t len, struct sockaddr_storage *ss, socklen_t *sl)
{
	char host[AUTHORITY_MAX + 1];
	const char *end = s + len, *close, *colon, *p;
	uint16_t port;
	size_t hl;

	if (!s || len == 0 || len > AUTHORITY_MAX || memchr(s, '\0', len))
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		close = memchr(s, ']', len);
		if (!close || close + 1 >= end || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - (s + 1));
		if (hl == 0 || memchr(s + 1, '%', hl) || memchr(s + 1, '[', hl))
			return -EINVAL;
		memcpy(host, s + 1, hl);
		host[hl] = '\0';
		if (parse_port(close + 2, (size_t)(end - (close + 2)), &port) < 0)
			return -EINVAL;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -EINVAL;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*sl = sizeof(*sin6);
		return 0;
	}
	colon = memchr(s, ':', len);
	if (!colon || memchr(colon + 1, ':', (size_t)(end - colon - 1)))
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (hl == 0)
		return -EINVAL;
	for (p = s; p < colon; p++)
		if ((*p < '0' || *p > '9') && *p != '.')
			return -EINVAL; /* host names are not resolved here */
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (parse_port(colon + 1, (size_t)(end - colon - 1), &port) < 0)
		return -EINVAL;
	{
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -EINVAL;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*sl = sizeof(*sin);
	}
	return 0;
}

static bool nv_is(const struct hbone_nv *nv, const char *name)
{
	size_t n = strlen(name);
	return nv->name_len == n && memcmp(nv->name, name, n) == 0;
}

int hbone_validate_request(const struct hbone_nv *nv, size_t n, struct hbone_request *req)
{
	bool method = false;
	size_t i;

	memset(req, 0, sizeof(*req));
	for (i = 0; i < n; i++) {
		const struct hbone_nv *h = &nv[i];
		if (nv_is(h, ":method")) {
			if (method || h->value_len != 7 || memcmp(h->value, "CONNECT", 7) != 0)
				return 400;
			method = true;
		} else if (nv_is(h, ":authority")) {
			if (req->authority ||
			    hbone_parse_authority(h->value, h->value_len, &req->dst, &req->dst_len))
				return 400;
			req->authority = h->value;
		} else if (h->name_len > 0 && h->name[0] == ':') {
			return 400; /* :scheme/:path/:protocol: not a plain CONNECT */
		} else if (nv_is(h, "forwarded")) {
			if (!req->forwarded)
				req->forwarded = h->value;
		} else if (nv_is(h, "baggage")) {
			if (!req->baggage)
				req->baggage = h->value;
		} else if (nv_is(h, "traceparent")) {
			if (!req->traceparent)
				req->traceparent = h->value;
		}
	}
	if (!method || !req->authority)
		return 400;
	return 0;
}

/* ---- streams ------------------------------------------------------------ */

static struct hstream *stream_get(struct hbone_conn *c, int32_t sid)
{
	struct hstream *s;

	if (sid <= 0)
		return NULL;
	s = nghttp2_session_get_stream_user_data(c->ng, sid);
	if (s)
		return s;
	/* A client stream whose HEADERS are still queued has no nghttp2
	 * stream yet. */
	for (s = c->live; s; s = s->next)
		if (s->sid == sid)
			return s;
	return NULL;
}

static struct hstream *stream_new(struct hbone_conn *c, int32_t sid, void *user)
{
	struct hstream *s = c->spare;

	if (s)
		c->spare = s->next;
	else if (!(s = malloc(sizeof(*s))))
		return NULL;
	memset(s, 0, sizeof(*s));
	s->sid = sid;
	s->user = user;
	s->live = true;
	s->next = c->live;
	if (c->live)
		c->live->prev = s;
	c->live = s;
	c->nstreams++;
	return s;
}

static void stream_release(struct hbone_conn *c, struct hstream *s, uint32_t err, bool notify)
{
	if (s->want_write)
		c->nwant--;
	s->want_write = false;
	s->live = false;
	if (s->prev)
		s->prev->next = s->next;
	else
		c->live = s->next;
	if (s->next)
		s->next->prev = s->prev;
	c->nstreams--;
	if (s->unconsumed && !c->freeing)
		nghttp2_session_consume_connection(c->ng, s->unconsumed);
	if (notify && c->cb.on_stream_closed)
		c->cb.on_stream_closed(c, c->arg, s->sid, s->user, err);
	s->next = c->spare;
	c->spare = s;
}

static void want_write(struct hbone_conn *c, struct hstream *s)
{
	if (!s->want_write) {
		s->want_write = true;
		c->nwant++;
	}
}

/* ---- nghttp2 callbacks -------------------------------------------------- */

static int stage_flush(struct hbone_conn *c)
{
	int ret;

	if (!c->stage_len)
		return 0;
	ret = tls_conn_write(c->tls, c->stage, c->stage_len);
	c->stage_len = 0;
	return ret;
}

static ssize_t ng_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct hbone_conn *c = ud;

	(void)ng;
	(void)flags;
	if (c->stage_len + len > tls_conn_write_room(c->tls))
		return NGHTTP2_ERR_WOULDBLOCK;
	if (len >= STAGE_DIRECT) {
		if (stage_flush(c) < 0 || tls_conn_write(c->tls, data, len) < 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		return (ssize_t)len;
	}
	if (c->stage_len + len > TLS_RECORD_MAX && stage_flush(c) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	memcpy(c->stage + c->stage_len, data, len);
	c->stage_len += len;
	return (ssize_t)len;
}

static ssize_t ng_read_data(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct hstream *s = src->ptr;
	size_t n;

	(void)ng;
	(void)sid;
	(void)ud;
	if (s->tunnel && s->wlen) {
		n = s->wlen < length ? s->wlen : length;
		memcpy(buf, s->wbuf, n);
		s->wbuf += n;
		s->wlen -= n;
		return (ssize_t)n;
	}
	if (s->tunnel && s->shut) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	s->deferred = true;
	return NGHTTP2_ERR_DEFERRED;
}

/* One DATA frame = one TLS record. */
static ssize_t ng_read_length(nghttp2_session *ng, uint8_t type, int32_t sid, int32_t conn_win,
                              int32_t stream_win, uint32_t max_frame, void *ud)
{
	ssize_t n = DATA_MAX;

	(void)ng;
	(void)type;
	(void)sid;
	(void)ud;
	if ((ssize_t)max_frame < n)
		n = (ssize_t)max_frame;
	if (conn_win < n)
		n = conn_win;
	if (stream_win < n)
		n = stream_win;
	return n > 0 ? n : 1;
}

static void hdrs_reset(struct hbone_conn *c)
{
	uint32_t i;

	for (i = 0; i < c->h_n; i++) {
		nghttp2_rcbuf_decref(c->h_name[i]);
		nghttp2_rcbuf_decref(c->h_value[i]);
	}
	c->h_n = 0;
	c->h_bytes = 0;
	c->h_sid = 0;
}

static int ng_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct hbone_conn *c = ud;
	struct hstream *s;

	hdrs_reset(c);
	c->h_sid = f->hd.stream_id;
	if (c->role == HBONE_SERVER && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		s = stream_new(c, f->hd.stream_id, NULL);
		if (!s)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, s);
	}
	return 0;
}

static int ng_header(nghttp2_session *ng, const nghttp2_frame *f, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *ud)
{
	struct hbone_conn *c = ud;
	size_t sz = nghttp2_rcbuf_get_buf(name).len + nghttp2_rcbuf_get_buf(value).len + 32;

	(void)ng;
	(void)flags;
	if (f->hd.stream_id != c->h_sid)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	/* RFC 7541 size accounting (name + value + 32), as
	 * SETTINGS_MAX_HEADER_LIST_SIZE counts it.  Over the limit the stream
	 * is reset; the rest of the block is skipped by nghttp2. */
	if (c->h_n >= c->cfg.max_headers || c->h_bytes + sz > c->cfg.max_header_bytes) {
		hdrs_reset(c);
		STAT_INC(header_limit_resets);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	nghttp2_rcbuf_incref(name);
	nghttp2_rcbuf_incref(value);
	c->h_name[c->h_n] = name;
	c->h_value[c->h_n] = value;
	c->h_n++;
	c->h_bytes += (uint32_t)sz;
	return 0;
}

static int submit_response(struct hbone_conn *c, struct hstream *s, int status)
{
	char st[4];
	nghttp2_nv nv = { (uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE };
	nghttp2_data_provider prd = { .source.ptr = s, .read_callback = ng_read_data };
	int rv;

	snprintf(st, sizeof(st), "%03d", status);
	s->responded = true;
	stat_status(HBONE_SERVER, status);
	if (status == 200) {
		s->tunnel = true;
		rv = nghttp2_submit_response(c->ng, s->sid, &nv, 1, &prd);
		want_write(c, s); /* the tunnel is open: tell the writer */
	} else {
		s->refused = true;
		rv = nghttp2_submit_response(c->ng, s->sid, &nv, 1, NULL);
	}
	return rv ? -EIO : 0;
}

static void server_request(struct hbone_conn *c, struct hstream *s)
{
	struct hbone_nv nv[c->cfg.max_headers ? c->cfg.max_headers : 1];
	struct hbone_request req;
	uint32_t i;
	int status;

	for (i = 0; i < c->h_n; i++) {
		nghttp2_vec n = nghttp2_rcbuf_get_buf(c->h_name[i]);
		nghttp2_vec v = nghttp2_rcbuf_get_buf(c->h_value[i]);
		nv[i] =
		    (struct hbone_nv){ (const char *)n.base, n.len, (const char *)v.base, v.len };
	}
	status = hbone_validate_request(nv, c->h_n, &req);
	if (status)
		STAT_INC(bad_requests);
	if (status == 0) {
		STAT_INC(streams_opened[HBONE_SERVER]);
		req.peer_id = tls_conn_peer_id(c->tls);
		status = c->cb.on_stream_request ? c->cb.on_stream_request(c, c->arg, s->sid, &req)
		                                 : 503;
	}
	hdrs_reset(c);
	if (status > 0 && (status < 200 || status > 599))
		status = 503; /* no interim or malformed status from the decision */
	if (status > 0 && !s->responded)
		submit_response(c, s, status);
	else if (status < 0)
		nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->sid, NGHTTP2_REFUSED_STREAM);
}

static void client_response(struct hbone_conn *c, struct hstream *s)
{
	int status = 0;
	uint32_t i;

	for (i = 0; i < c->h_n; i++) {
		nghttp2_vec n = nghttp2_rcbuf_get_buf(c->h_name[i]);
		nghttp2_vec v = nghttp2_rcbuf_get_buf(c->h_value[i]);
		if (n.len == 7 && memcmp(n.base, ":status", 7) == 0 && v.len == 3)
			status =
			    (v.base[0] - '0') * 100 + (v.base[1] - '0') * 10 + (v.base[2] - '0');
	}
	hdrs_reset(c);
	if (status >= 100 && status < 200)
		return; /* interim; the final response follows */
	stat_status(HBONE_CLIENT, status);
	if (c->cb.on_stream_response)
		c->cb.on_stream_response(c, c->arg, s->sid, s->user, status);
	if (status >= 200 && status < 300) {
		s->tunnel = true;
		if (s->deferred) {
			s->deferred = false;
			nghttp2_session_resume_data(c->ng, s->sid);
		}
		want_write(c, s);
	} else {
		nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->sid, NGHTTP2_CANCEL);
	}
}

static int ng_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct hbone_conn *c = ud;
	struct hstream *s = NULL;

	if (f->hd.stream_id > 0)
		s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
		if (!s)
			break;
		if (c->role == HBONE_SERVER && f->headers.cat == NGHTTP2_HCAT_REQUEST)
			server_request(c, s);
		else if (c->role == HBONE_CLIENT && !s->tunnel)
			client_response(c, s);
		else
			hdrs_reset(c); /* trailers: ignored */
		break;
	case NGHTTP2_RST_STREAM:
		if (f->rst_stream.error_code != NGHTTP2_NO_ERROR)
			STAT_INC(resets_received);
		break;
	case NGHTTP2_GOAWAY:
		STAT_INC(goaways_received);
		if (c->cb.on_goaway)
			c->cb.on_goaway(c, c->arg, f->goaway.last_stream_id, f->goaway.error_code);
		break;
	default:
		break;
	}
	if (s && (f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !s->eof) {
		s->eof = true;
		/* Only tunnels (or a request awaiting its answer) half-close. */
		if (c->cb.on_stream_eof && !s->refused && (s->tunnel || c->role == HBONE_SERVER))
			c->cb.on_stream_eof(c, c->arg, s->sid, s->user);
	}
	return 0;
}

static int ng_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud)
{
	struct hbone_conn *c = ud;
	struct hstream *s = nghttp2_session_get_stream_user_data(ng, sid);

	(void)flags;
	if (!s || s->refused || !c->cb.on_stream_data) {
		/* Nobody will read it: give the window back at once. */
		nghttp2_session_consume(ng, sid, len);
		return 0;
	}
	s->unconsumed += len;
	c->cb.on_stream_data(c, c->arg, sid, s->user, data, len);
	return 0;
}

static int ng_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct hbone_conn *c = ud;
	struct hstream *s;

	if (f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code != NGHTTP2_NO_ERROR)
		STAT_INC(resets_sent);
	if (f->hd.type == NGHTTP2_GOAWAY)
		STAT_INC(goaways_sent);
	(void)c;
	if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id <= 0)
		return 0;
	s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
	/* A refused CONNECT: the response went out with END_STREAM; ask the
	 * client to stop sending too (RFC 9113 §8.1, NO_ERROR). */
	if (s && s->refused)
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, s->sid, NGHTTP2_NO_ERROR);
	return 0;
}

static int ng_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
	struct hbone_conn *c = ud;
	struct hstream *s;

	(void)err;
	/* A request whose HEADERS never left (GOAWAY, shutdown): nghttp2 made
	 * no stream for it, so no close callback will come. */
	if (f->hd.type != NGHTTP2_HEADERS || c->role != HBONE_CLIENT ||
	    nghttp2_session_find_stream(ng, f->hd.stream_id))
		return 0;
	for (s = c->live; s; s = s->next)
		if (s->sid == f->hd.stream_id) {
			stream_release(c, s, NGHTTP2_REFUSED_STREAM, true);
			break;
		}
	return 0;
}

static int ng_stream_close(nghttp2_session *ng, int32_t sid, uint32_t err, void *ud)
{
	struct hbone_conn *c = ud;
	struct hstream *s = nghttp2_session_get_stream_user_data(ng, sid);

	if (c->h_sid == sid)
		hdrs_reset(c);
	if (s) {
		nghttp2_session_set_stream_user_data(ng, sid, NULL);
		stream_release(c, s, err, true);
	}
	return 0;
}

/* ---- driving ------------------------------------------------------------ */

static void report_handshake(struct hbone_conn *c, enum tls_fail why)
{
	if (c->hs_reported)
		return;
	c->hs_reported = true;
	if (why == TLS_FAIL_NONE)
		STAT_INC(handshakes[c->role]);
	else if ((unsigned)why < TLS_FAIL__COUNT)
		STAT_INC(handshake_fail[c->role][why]);
	if (c->cb.on_handshake)
		c->cb.on_handshake(c, c->arg, why);
}

static void fail(struct hbone_conn *c)
{
	c->failed = true;
	if (!tls_conn_established(c->tls))
		report_handshake(c, tls_conn_failure(c->tls) ? tls_conn_failure(c->tls)
		                                             : TLS_FAIL_HANDSHAKE);
}

/* Advance TLS and let nghttp2 write what it has.  Returns 0 or -EPROTO. */
static int pump(struct hbone_conn *c)
{
	int rv;

	if (c->failed)
		return -EPROTO;
	if (c->in_ng)
		return 0; /* the outermost call pumps on its way out */
	if (!tls_conn_established(c->tls)) {
		rv = tls_conn_handshake(c->tls);
		if (rv == -EAGAIN)
			return 0;
		if (rv < 0) {
			fail(c);
			return -EPROTO;
		}
		report_handshake(c, TLS_FAIL_NONE);
	}
	if (!tl_stage_busy) {
		tl_stage_busy = c->stage_tl = true;
		c->stage = tl_stage;
	} else {
		if (!c->own_stage && !(c->own_stage = malloc(TLS_RECORD_MAX))) {
			fail(c);
			return -EPROTO;
		}
		c->stage = c->own_stage;
	}
	c->in_ng++;
	rv = nghttp2_session_send(c->ng);
	c->in_ng--;
	if (stage_flush(c) < 0)
		rv = -1;
	if (c->stage_tl)
		tl_stage_busy = c->stage_tl = false;
	c->stage = NULL;
	if (rv != 0) {
		fail(c);
		return -EPROTO;
	}
	return 0;
}

static size_t room(struct hbone_conn *c, struct hstream *s)
{
	int32_t sw, cw;
	size_t r = tls_conn_write_room(c->tls), frames;

	if (!s->tunnel || s->shut || c->failed || !tls_conn_established(c->tls))
		return 0;
	sw = nghttp2_session_get_stream_remote_window_size(c->ng, s->sid);
	cw = nghttp2_session_get_remote_window_size(c->ng);
	if (sw <= 0 || cw <= 0)
		return 0;
	r = r > c->stage_len ? r - c->stage_len : 0;
	frames = r / TLS_RECORD_MAX + 1;
	r = r > frames * FRAME_HD ? r - frames * FRAME_HD : 0;
	if ((size_t)sw < r)
		r = (size_t)sw;
	if ((size_t)cw < r)
		r = (size_t)cw;
	return r;
}

/* Owe-list walk: restart after every callback, which may close streams. */
static void fire_writable(struct hbone_conn *c)
{
	struct hstream *s;
	bool again = true;

	while (again && c->nwant && !c->failed && !c->in_ng) {
		again = false;
		for (s = c->live; s; s = s->next) {
			if (!s->want_write || room(c, s) == 0)
				continue;
			s->want_write = false;
			c->nwant--;
			if (c->cb.on_stream_writable)
				c->cb.on_stream_writable(c, c->arg, s->sid, s->user);
			again = true;
			break;
		}
	}
}

int hbone_conn_feed(struct hbone_conn *c, const uint8_t *buf, size_t len)
{
	bool tl = false;
	uint8_t *rbuf;
	ssize_t n;
	int rv, ret = 0;

	if (c->failed)
		return -EPROTO;
	if (c->peer_closed)
		return -EPIPE;
	if (!tl_rbuf_busy) {
		tl_rbuf_busy = tl = true;
		rbuf = tl_rbuf;
	} else if (c->own_rbuf || (c->own_rbuf = malloc(TLS_RECORD_MAX))) {
		rbuf = c->own_rbuf;
	} else {
		return -ENOMEM;
	}
	tls_conn_input(c->tls, buf, len);
	for (;;) {
		if (!tls_conn_established(c->tls)) {
			if (pump(c) < 0) {
				ret = -EPROTO;
				goto out;
			}
			if (!tls_conn_established(c->tls))
				break;
		}
		n = tls_conn_read(c->tls, rbuf, TLS_RECORD_MAX);
		if (n == -EAGAIN)
			break;
		if (n == 0) {
			c->peer_closed = true;
			break;
		}
		if (n < 0) {
			fail(c);
			ret = -EPROTO;
			goto out;
		}
		c->in_ng++;
		rv = (int)nghttp2_session_mem_recv(c->ng, rbuf, (size_t)n);
		c->in_ng--;
		if (rv < 0) {
			/* Bad preface, flood, callback failure: say GOAWAY and stop. */
			nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
			pump(c);
			c->failed = true;
			ret = -EPROTO;
			goto out;
		}
	}
	if (tls_conn_input_left(c->tls) && !c->peer_closed) {
		/* TLS stopped reading to write (ring full of its own answers,
		 * e.g. a KeyUpdate flood): input cannot be kept, so give up. */
		fail(c);
		ret = -EPROTO;
		goto out;
	}
	tls_conn_input(c->tls, NULL, 0);
	if (tl) {
		tl_rbuf_busy = false;
		tl = false;
	}
	if (pump(c) < 0) {
		ret = -EPROTO;
		goto out;
	}
	fire_writable(c);
	if (c->peer_closed)
		ret = -EPIPE;
out:
	if (tl)
		tl_rbuf_busy = false;
	return ret;
}

int hbone_conn_feed_eof(struct hbone_conn *c)
{
	c->peer_closed = true;
	if (!tls_conn_established(c->tls) && !c->failed) {
		c->failed = true;
		report_handshake(c, TLS_FAIL_CLOSED);
		return -EPROTO;
	}
	return c->failed ? -EPROTO : -EPIPE;
}

int hbone_conn_pending_out(struct hbone_conn *c, struct iovec iov[2])
{
	return tls_conn_pending_out(c->tls, iov);
}

size_t hbone_conn_out_len(const struct hbone_conn *c)
{
	return tls_conn_out_len(c->tls);
}

void hbone_conn_out_done(struct hbone_conn *c, size_t n)
{
	tls_conn_out_done(c->tls, n);
	if (c->failed || c->in_ng)
		return;
	pump(c); /* frames that waited for ring space */
	fire_writable(c);
}

int hbone_conn_established(const struct hbone_conn *c)
{
	return !c->failed && tls_conn_established(c->tls);
}

int hbone_conn_done(const struct hbone_conn *c)
{
	if (tls_conn_out_len(c->tls))
		return 0;
	if (c->failed || c->peer_closed)
		return 1;
	return !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng);
}

enum tls_fail hbone_conn_failure(const struct hbone_conn *c)
{
	return tls_conn_failure(c->tls);
}

const char *hbone_conn_peer_id(const struct hbone_conn *c)
{
	return tls_conn_peer_id(c->tls);
}

const struct tls_conn *hbone_conn_tls(const struct hbone_conn *c)
{
	return c->tls;
}

uint32_t hbone_conn_streams(const struct hbone_conn *c)
{
	return c->nstreams;
}

int hbone_conn_can_open(const struct hbone_conn *c)
{
	uint32_t max;

	if (c->role != HBONE_CLIENT || c->failed || c->peer_closed ||
	    nghttp2_session_get_next_stream_id(c->ng) > (1u << 31) - 2 ||
	    !nghttp2_session_check_request_allowed(c->ng))
		return 0;
	max = nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	return c->nstreams < max;
}

int hbone_conn_goaway(struct hbone_conn *c, uint32_t h2_error)
{
	int32_t last = nghttp2_session_get_last_proc_stream_id(c->ng);

	if (c->failed)
		return -EPROTO;
	if (nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, last, h2_error, NULL, 0))
		return -EIO;
	return pump(c);
}

int hbone_conn_close(struct hbone_conn *c)
{
	if (c->failed)
		return -EPROTO;
	if (nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR))
		return -EIO;
	if (pump(c) < 0)
		return -EPROTO;
	return tls_conn_shutdown(c->tls);
}

static bool token_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
	       ch == '.';
}

static bool header_ok(const struct hbone_header *h)
{
	static const char *const banned[] = {
		"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
		"te",         "host"
	};
	size_t i, nl, vl;

	if (!h->name || !h->value)
		return false;
	nl = strlen(h->name);
	vl = strlen(h->value);
	if (nl == 0 || nl > 256 || vl > 8192)
		return false;
	for (i = 0; i < nl; i++)
		if (!token_char(h->name[i]))
			return false;
	for (i = 0; i < vl; i++)
		if ((unsigned char)h->value[i] < 0x20 && h->value[i] != '\t')
			return false;
	for (i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
		if (strcmp(h->name, banned[i]) == 0)
			return false;
	return true;
}

int hbone_stream_open(struct hbone_conn *c, const char *authority, const struct hbone_header *h,
                      size_t nh, void *su, int32_t *sid)
{
	nghttp2_nv nv[2 + 16];
	nghttp2_data_provider prd = { .read_callback = ng_read_data };
	struct sockaddr_storage ss;
	socklen_t sl;
	struct hstream *s;
	size_t i;
	int32_t id;

	*sid = 0;
	if (c->role != HBONE_CLIENT || !authority || nh > 16)
		return -EINVAL;
	if (hbone_parse_authority(authority, strlen(authority), &ss, &sl))
		return -EINVAL;
	for (i = 0; i < nh; i++)
		if (!header_ok(&h[i]))
			return -EINVAL;
	if (!hbone_conn_can_open(c))
		return -EAGAIN;
	nv[0] =
	    (nghttp2_nv){ (uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE };
	nv[1] = (nghttp2_nv){ (uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority),
		              NGHTTP2_NV_FLAG_NONE };
	for (i = 0; i < nh; i++)
		nv[2 + i] =
		    (nghttp2_nv){ (uint8_t *)h[i].name, (uint8_t *)h[i].value, strlen(h[i].name),
			          strlen(h[i].value), NGHTTP2_NV_FLAG_NONE };
	s = stream_new(c, 0, su);
	if (!s)
		return -ENOMEM;
	prd.source.ptr = s;
	id = nghttp2_submit_request(c->ng, NULL, nv, 2 + nh, &prd, s);
	if (id < 0) {
		stream_release(c, s, 0, false); /* never made: no close callback */
		return -EAGAIN;
	}
	s->sid = id;
	*sid = id;
	STAT_INC(streams_opened[HBONE_CLIENT]);
	return pump(c) < 0 ? -EPROTO : 0;
}

int hbone_stream_respond(struct hbone_conn *c, int32_t sid, int status)
{
	struct hstream *s;

	if (c->role != HBONE_SERVER || status < 200 || status > 599)
		return -EINVAL;
	s = stream_get(c, sid);
	if (!s)
		return -ENOENT;
	if (s->responded)
		return -EALREADY;
	if (submit_response(c, s, status) < 0)
		return -EIO;
	if (pump(c) < 0)
		return -EPROTO;
	fire_writable(c);
	return 0;
}

size_t hbone_stream_write_room(struct hbone_conn *c, int32_t sid)
{
	struct hstream *s = stream_get(c, sid);

	return s ? room(c, s) : 0;
}

ssize_t hbone_stream_write(struct hbone_conn *c, int32_t sid, const uint8_t *buf, size_t len)
{
	struct hstream *s = stream_get(c, sid);
	size_t r, done;

	if (!s)
		return -ENOENT;
	if (s->shut)
		return -EPIPE;
	if (c->failed)
		return -EPROTO;
	if (len == 0)
		return 0;
	r = c->in_ng ? 0 : room(c, s);
	if (r == 0) {
		want_write(c, s);
		return 0;
	}
	if (len > r)
		len = r;
	s->wbuf = buf;
	s->wlen = len;
	if (s->deferred) {
		s->deferred = false;
		nghttp2_session_resume_data(c->ng, sid);
	}
	pump(c);
	done = len - s->wlen;
	s->wbuf = NULL;
	s->wlen = 0;
	if (c->failed)
		return -EPROTO;
	if (!s->live)
		return (ssize_t)done; /* closed while sending (a reset went out) */
	if (done < len || room(c, s) == 0)
		want_write(c, s);
	return (ssize_t)done;
}

int hbone_stream_shutdown(struct hbone_conn *c, int32_t sid)
{
	struct hstream *s = stream_get(c, sid);

	if (!s)
		return -ENOENT;
	if (s->shut)
		return 0;
	s->shut = true;
	if (s->want_write) {
		s->want_write = false;
		c->nwant--;
	}
	if (s->deferred && s->tunnel) {
		s->deferred = false;
		nghttp2_session_resume_data(c->ng, sid);
	}
	return pump(c);
}

int hbone_stream_reset(struct hbone_conn *c, int32_t sid, uint32_t h2_error)
{
	struct hstream *s = stream_get(c, sid);

	if (!s)
		return -ENOENT;
	if (nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, sid, h2_error))
		return -EIO;
	return pump(c);
}

int hbone_stream_consume(struct hbone_conn *c, int32_t sid, size_t n)
{
	struct hstream *s = stream_get(c, sid);

	if (!s)
		return -ENOENT;
	if (n > s->unconsumed)
		n = s->unconsumed;
	s->unconsumed -= n;
	if (n && nghttp2_session_consume(c->ng, sid, n))
		return -EIO;
	return pump(c);
}

int hbone_stream_set_user(struct hbone_conn *c, int32_t sid, void *su)
{
	struct hstream *s = stream_get(c, sid);

	if (!s)
		return -ENOENT;
	s->user = su;
	return 0;
}

/* ---- client pool ---------------------------------------------------------- */

#define POOL_BUCKETS 256

struct pool_ent {
	struct pool_ent *next; /* bucket chain */
	const struct tls_identity *src;
	char *dst_id;
	struct sockaddr_storage dst;
	socklen_t dst_len;
	uint32_t hash;
	struct hbone_conn *c;
	void *user;
	uint64_t idle_since; /* ms of the first expire() that saw it idle; 0 busy */
};

struct hbone_pool {
	uint32_t max_streams;
	uint32_t n;
	struct pool_ent *b[POOL_BUCKETS];
};

static uint32_t fnv1a(uint32_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n--) {
		h ^= *b++;
		h *= 16777619u;
	}
	return h;
}

static uint32_t pool_hash(const struct tls_identity *src, const char *dst_id,
                          const struct sockaddr *dst, socklen_t len)
{
	uint32_t h = fnv1a(2166136261u, &src, sizeof(src));

	h = fnv1a(h, dst_id, strlen(dst_id));
	return fnv1a(h, dst, len);
}

int hbone_pool_new(uint32_t max_streams, struct hbone_pool **out)
{
	struct hbone_pool *p;

	*out = NULL;
	if (max_streams == 0)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->max_streams = max_streams;
	*out = p;
	return 0;
}

void hbone_pool_free(struct hbone_pool *p)
{
	struct pool_ent *e;
	size_t i;

	if (!p)
		return;
	for (i = 0; i < POOL_BUCKETS; i++)
		while ((e = p->b[i]) != NULL) {
			p->b[i] = e->next;
			free(e->dst_id);
			free(e);
		}
	free(p);
}

static bool key_eq(const struct pool_ent *e, const struct tls_identity *src, const char *dst_id,
                   const struct sockaddr *dst, socklen_t len)
{
	return e->src == src && e->dst_len == len && memcmp(&e->dst, dst, len) == 0 &&
	       strcmp(e->dst_id, dst_id) == 0;
}

struct hbone_conn *hbone_pool_pick(struct hbone_pool *p, const struct tls_identity *src,
                                   const char *dst_id, const struct sockaddr *dst, socklen_t len,
                                   void **user)
{
	uint32_t h = pool_hash(src, dst_id, dst, len);
	struct pool_ent *e;

	if (len > sizeof(struct sockaddr_storage))
		return NULL;
	/* First fit: fewer TLS connections, fuller ones. */
	for (e = p->b[h % POOL_BUCKETS]; e; e = e->next) {
		if (e->hash != h || !key_eq(e, src, dst_id, dst, len))
			continue;
		if (hbone_conn_streams(e->c) >= p->max_streams || !hbone_conn_can_open(e->c))
			continue;
		e->idle_since = 0;
		if (user)
			*user = e->user;
		return e->c;
	}
	return NULL;
}

int hbone_pool_add(struct hbone_pool *p, const struct tls_identity *src, const char *dst_id,
                   const struct sockaddr *dst, socklen_t len, struct hbone_conn *c, void *user)
{
	struct pool_ent *e;
	uint32_t h;
	size_t i;

	if (!src || !dst_id || !dst || !c || len == 0 || len > sizeof(struct sockaddr_storage))
		return -EINVAL;
	for (i = 0; i < POOL_BUCKETS; i++)
		for (e = p->b[i]; e; e = e->next)
			if (e->c == c)
				return -EEXIST;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->dst_id = strdup(dst_id))) {
		free(e);
		return -ENOMEM;
	}
	h = pool_hash(src, dst_id, dst, len);
	e->src = src;
	memcpy(&e->dst, dst, len);
	e->dst_len = len;
	e->hash = h;
	e->c = c;
	e->user = user;
	e->next = p->b[h % POOL_BUCKETS];
	p->b[h % POOL_BUCKETS] = e;
	p->n++;
	return 0;
}

int hbone_pool_remove(struct hbone_pool *p, struct hbone_conn *c)
{
	struct pool_ent **pp, *e;
	size_t i;

	for (i = 0; i < POOL_BUCKETS; i++)
		for (pp = &p->b[i]; (e = *pp) != NULL; pp = &e->next)
			if (e->c == c) {
				*pp = e->next;
				free(e->dst_id);
				free(e);
				p->n--;
				return 0;
			}
	return -ENOENT;
}

size_t hbone_pool_expire(struct hbone_pool *p, uint64_t now_ms, uint64_t idle_ms,
                         void (*cb)(void *arg, struct hbone_conn *c, void *user), void *arg)
{
	struct pool_ent **pp, *e;
	size_t i, gone = 0;
	bool drop;

	for (i = 0; i < POOL_BUCKETS; i++) {
		pp = &p->b[i];
		while ((e = *pp) != NULL) {
			drop = false;
			if (e->c->failed || e->c->peer_closed ||
			    (hbone_conn_streams(e->c) == 0 && !hbone_conn_can_open(e->c))) {
				drop = true; /* dead, or drained by a GOAWAY */
			} else if (hbone_conn_streams(e->c) > 0) {
				e->idle_since = 0;
			} else if (e->idle_since == 0) {
				e->idle_since = now_ms ? now_ms : 1;
			} else if (now_ms - e->idle_since >= idle_ms) {
				drop = true;
			}
			if (!drop) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			p->n--;
			gone++;
			if (cb)
				cb(arg, e->c, e->user);
			free(e->dst_id);
			free(e);
		}
	}
	return gone;
}

uint32_t hbone_pool_conns(const struct hbone_pool *p)
{
	return p->n;
}

uint32_t hbone_pool_streams(const struct hbone_pool *p)
{
	const struct pool_ent *e;
	uint32_t n = 0;
	size_t i;

	for (i = 0; i < POOL_BUCKETS; i++)
		for (e = p->b[i]; e; e = e->next)
			n += hbone_conn_streams(e->c);
	return n;
}

/* ---- lifetime ----------------------------------------------------------- */

static int session_new(struct hbone_conn *c)
{
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[4];
	size_t niv = 0;
	int rv = -ENOMEM;

	if (nghttp2_session_callbacks_new(&cbs) || nghttp2_option_new(&opt))
		goto out;
	nghttp2_session_callbacks_set_send_callback(cbs, ng_send);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, ng_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback2(cbs, ng_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, ng_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, ng_data_chunk);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, ng_frame_send);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, ng_frame_not_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, ng_stream_close);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, ng_read_length);
	/* The application decides when received bytes are consumed. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_no_closed_streams(opt, 1);
	nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
	if ((c->role == HBONE_CLIENT ? nghttp2_session_client_new2(&c->ng, cbs, c, opt)
	                             : nghttp2_session_server_new2(&c->ng, cbs, c, opt)) != 0)
		goto out;
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
		                              c->cfg.max_concurrent_streams };
	iv[niv++] =
	    (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->cfg.stream_window };
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
		                              c->cfg.max_header_bytes };
	if (c->role == HBONE_CLIENT)
		iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 };
	if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, niv) ||
	    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
	                                          (int32_t)c->cfg.conn_window)) {
		rv = -EINVAL;
		goto out;
	}
	rv = 0;
out:
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	return rv;
}

static int conn_alloc(const struct hbone_config *cfg, const struct hbone_callbacks *cb, void *arg,
                      enum hbone_role role, struct hbone_conn **out)
{
	struct hbone_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (cfg)
		c->cfg = *cfg;
	else
		hbone_config_default(&c->cfg);
	if (c->cfg.stream_window == 0 || c->cfg.stream_window > 0x7fffffff ||
	    c->cfg.conn_window < 65535 || c->cfg.conn_window > 0x7fffffff ||
	    c->cfg.max_headers == 0 || c->cfg.max_headers > 1024 ||
	    c->cfg.max_header_bytes < 1024) {
		free(c);
		return -EINVAL;
	}
	if (cb)
		c->cb = *cb;
	c->arg = arg;
	c->role = role;
	c->h_name = calloc(c->cfg.max_headers, sizeof(*c->h_name));
	c->h_value = calloc(c->cfg.max_headers, sizeof(*c->h_value));
	if (!c->h_name || !c->h_value) {
		free(c->h_name);
		free(c->h_value);
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

int hbone_conn_new(enum hbone_role role, struct tls_identity *id, const char *expected_peer,
                   const struct hbone_config *cfg, const struct hbone_callbacks *cb, void *arg,
                   struct hbone_conn **out)
{
	struct hbone_conn *c = NULL;
	int ret;

	*out = NULL;
	if (role != HBONE_CLIENT && role != HBONE_SERVER)
		return -EINVAL;
	ret = conn_alloc(cfg, cb, arg, role, &c);
	if (ret)
		return ret;
	ret = tls_conn_new(id, (enum tls_role)role, expected_peer, c->cfg.out_buf, &c->tls);
	if (ret)
		goto fail;
	ret = session_new(c);
	if (ret)
		goto fail;
	if (role == HBONE_CLIENT)
		pump(c); /* ClientHello */
	*out = c;
	return 0;
fail:
	hbone_conn_free(c);
	return ret;
}

#ifdef AMBIT_FUZZ
int hbone_conn_new_cleartext_server(const struct hbone_config *cfg,
                                    const struct hbone_callbacks *cb, void *arg,
                                    struct hbone_conn **out)
{
	struct hbone_conn *c = NULL;
	int ret;

	*out = NULL;
	ret = conn_alloc(cfg, cb, arg, HBONE_SERVER, &c);
	if (ret)
		return ret;
	ret = tls_conn_new_cleartext(c->cfg.out_buf, "spiffe://cluster.local/ns/fuzz/sa/fuzz",
	                             &c->tls);
	if (!ret)
		ret = session_new(c);
	if (ret) {
		hbone_conn_free(c);
		return ret;
	}
	c->hs_reported = true;
	*out = c;
	return 0;
}
#endif

void hbone_conn_free(struct hbone_conn *c)
{
	struct hstream *s;

	if (!c)
		return;
	c->freeing = true;
	while ((s = c->live) != NULL)
		stream_release(c, s, NGHTTP2_CANCEL, true);
	hdrs_reset(c);
	while ((s = c->spare) != NULL) {
		c->spare = s->next;
		free(s);
	}
	/* No callbacks from here on: nghttp2_session_del does not call any. */
	nghttp2_session_del(c->ng);
	tls_conn_free(c->tls);
	free(c->h_name);
	free(c->h_value);
	free(c->own_stage);
	free(c->own_rbuf);
	free(c);
}
