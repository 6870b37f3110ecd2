/*
 * ctlproto: wire format of the node-proxy control protocol and a small
 * blocking client.  Everything read from the socket is untrusted: the
 * header is decoded field by field from a byte buffer whose length was
 * checked first, the body is parsed by jansson only after a depth scan,
 * and every workload field is checked against the bounds of workload.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "node-proxy/ctlproto.h"

/* Deep enough for every message of version 1 (a LIST ack is 4 levels:
 * body, workloads array, workload, labels); anything deeper is hostile. */
#define CTL_MAX_DEPTH 8

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* --- workload <-> JSON ---------------------------------------------------- */

json_t *ctl_workload_to_json(const struct workload *w)
{
	json_t *o = json_object(), *ips = json_array(), *labels = json_object();
	char buf[INET6_ADDRSTRLEN];
	unsigned i;
	int r;

	if (!o || !ips || !labels)
		goto fail;
	if (json_object_set_new(o, "uid", json_string(w->uid)) ||
	    json_object_set_new(o, "namespace", json_string(w->ns)) ||
	    json_object_set_new(o, "name", json_string(w->name)) ||
	    json_object_set_new(o, "service_account", json_string(w->sa)) ||
	    json_object_set_new(o, "netns_path", json_string(w->netns_path)))
		goto fail;
	for (i = 0; i < w->n_ips && i < WL_MAX_IPS; i++) {
		const struct wl_ip *ip = &w->ips[i];

		if (!inet_ntop(ip->family,
		               ip->family == AF_INET ? (const void *)&ip->v4
		                                     : (const void *)&ip->v6,
		               buf, sizeof(buf)))
			goto fail;
		if (json_array_append_new(ips, json_string(buf)))
			goto fail;
	}
	for (i = 0; i < w->n_labels && i < WL_MAX_LABELS; i++)
		if (json_object_set_new(labels, w->labels[i].key, json_string(w->labels[i].val)))
			goto fail;
	/* set_new consumes its value even when it fails. */
	r = json_object_set_new(o, "ips", ips);
	ips = NULL;
	if (r)
		goto fail;
	r = json_object_set_new(o, "labels", labels);
	labels = NULL;
	if (r)
		goto fail;
	return o;
fail:
	json_decref(o);
	json_decref(ips);
	json_decref(labels);
	return NULL;
}

enum str_class {
	STR_ID,    /* namespace, name, service account: [A-Za-z0-9._-] */
	STR_TOKEN, /* uid, label key: printable ASCII, no space */
	STR_TEXT,  /* label value: printable ASCII */
	STR_PATH,  /* netns path: absolute, printable ASCII */
};

static int char_ok(enum str_class c, unsigned char ch)
{
	switch (c) {
	case STR_ID:
		return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		       (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
	case STR_TOKEN:
		return ch > 0x20 && ch < 0x7f;
	case STR_TEXT:
	case STR_PATH:
		return ch >= 0x20 && ch < 0x7f;
	}
	return 0;
}

/* Check @s (@n bytes, field @what) and copy it into @dst of @cap bytes. */
static int copy_str(const char *s, size_t n, const char *what, enum str_class c, int required,
                    char *dst, size_t cap, char *err, size_t errlen)
{
	size_t i;

	if (n != strlen(s)) {
		seterr(err, errlen, "\"%s\" contains a NUL byte", what);
		return -EINVAL;
	}
	if (n >= cap) {
		seterr(err, errlen, "\"%s\" is too long (%zu bytes, max %zu)", what, n, cap - 1);
		return -EINVAL;
	}
	if (n == 0 && required) {
		seterr(err, errlen, "\"%s\" is empty", what);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		if (!char_ok(c, (unsigned char)s[i])) {
			seterr(err, errlen, "\"%s\" has an invalid character at offset %zu", what,
			       i);
			return -EINVAL;
		}
	}
	if (c == STR_PATH && n > 0 && s[0] != '/') {
		seterr(err, errlen, "\"%s\" must be an absolute path", what);
		return -EINVAL;
	}
	memcpy(dst, s, n + 1);
	return 0;
}

/*
 * Copy JSON string @v (field @what) into @dst after checking type, length
 * and characters.  NULL @v means absent: an error when @required, else
 * @def is copied.  Returns 0 or -EINVAL with a message.
 */
static int get_str(const json_t *v, const char *what, enum str_class c, int required,
                   const char *def, char *dst, size_t cap, char *err, size_t errlen)
{
	if (!v) {
		if (required) {
			seterr(err, errlen, "missing \"%s\"", what);
			return -EINVAL;
		}
		snprintf(dst, cap, "%s", def);
		return 0;
	}
	if (!json_is_string(v)) {
		seterr(err, errlen, "\"%s\" must be a string", what);
		return -EINVAL;
	}
	return copy_str(json_string_value(v), json_string_length(v), what, c, required, dst, cap,
	                err, errlen);
}

int ctl_workload_from_json(const json_t *j, struct workload *w, char *err, size_t errlen)
{
	const json_t *ips, *labels, *v;
	const char *key;
	size_t i;
	int r;

	memset(w, 0, sizeof(*w));
	if (!json_is_object(j)) {
		seterr(err, errlen, "workload must be a JSON object");
		return -EINVAL;
	}
	const json_t *o = j;

	if ((r = get_str(json_object_get(o, "uid"), "uid", STR_TOKEN, 1, NULL, w->uid,
	                 sizeof(w->uid), err, errlen)) ||
	    (r = get_str(json_object_get(o, "namespace"), "namespace", STR_ID, 1, NULL, w->ns,
	                 sizeof(w->ns), err, errlen)) ||
	    (r = get_str(json_object_get(o, "name"), "name", STR_ID, 1, NULL, w->name,
	                 sizeof(w->name), err, errlen)) ||
	    (r = get_str(json_object_get(o, "service_account"), "service_account", STR_ID, 0,
	                 "default", w->sa, sizeof(w->sa), err, errlen)) ||
	    (r = get_str(json_object_get(o, "netns_path"), "netns_path", STR_PATH, 0, "",
	                 w->netns_path, sizeof(w->netns_path), err, errlen)))
		return r;
	if (!w->sa[0]) /* an explicit "" means the default account too */
		snprintf(w->sa, sizeof(w->sa), "default");

	ips = json_object_get(o, "ips");
	if (!json_is_array(ips)) {
		seterr(err, errlen, ips ? "\"ips\" must be an array" : "missing \"ips\"");
		return -EINVAL;
	}
	if (json_array_size(ips) > WL_MAX_IPS) {
		seterr(err, errlen, "too many ips (%zu, max %d)", json_array_size(ips), WL_MAX_IPS);
		return -EINVAL;
	}
	json_array_foreach(ips, i, v)
	{
		struct wl_ip *ip = &w->ips[i];
		const char *s = json_string_value(v);

		if (!s || json_string_length(v) != strlen(s) || strlen(s) >= INET6_ADDRSTRLEN) {
			seterr(err, errlen, "ips[%zu] must be an IP address string", i);
			return -EINVAL;
		}
		if (inet_pton(AF_INET, s, &ip->v4) == 1) {
			ip->family = AF_INET;
		} else if (inet_pton(AF_INET6, s, &ip->v6) == 1) {
			ip->family = AF_INET6;
		} else {
			seterr(err, errlen, "ips[%zu] \"%s\" is not an IPv4 or IPv6 address", i, s);
			return -EINVAL;
		}
		w->n_ips++;
	}

	labels = json_object_get(o, "labels");
	if (labels && !json_is_object(labels)) {
		seterr(err, errlen, "\"labels\" must be an object");
		return -EINVAL;
	}
	if (labels && json_object_size(labels) > WL_MAX_LABELS) {
		seterr(err, errlen, "too many labels (%zu, max %d)", json_object_size(labels),
		       WL_MAX_LABELS);
		return -EINVAL;
	}
	if (labels) {
		/* const-correct iteration is not offered by jansson 2.14. */
		json_object_foreach((json_t *)labels, key, v)
		{
			struct wl_label *l = &w->labels[w->n_labels];

			if ((r = copy_str(key, strlen(key), "label key", STR_TOKEN, 1, l->key,
			                  sizeof(l->key), err, errlen)))
				return r;
			if ((r = get_str(v, "label value", STR_TEXT, 0, NULL, l->val,
			                 sizeof(l->val), err, errlen)))
				return r;
			w->n_labels++;
		}
	}
	return 0;
}

/* --- datagrams ------------------------------------------------------------ */

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get_be16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void put_be16(unsigned char *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

/* A request type, its ack, or the bare CTL_ACK that answers a datagram
 * whose type could not be used. */
static int type_known(uint16_t t)
{
	uint16_t base = t & ~CTL_ACK;

	return t == CTL_ACK ||
	       ((t & ~(CTL_ACK | 0x7f)) == 0 && base >= CTL_ADD && base <= CTL_STATUS);
}

/*
 * Bound the nesting of @p before jansson sees it: jansson recurses once
 * per level and allows 2048, far more than a version 1 message needs.
 * Brackets inside strings do not count; escapes are skipped.
 */
static int depth_ok(const unsigned char *p, size_t n)
{
	int depth = 0, in_str = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = p[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
		} else if (c == '"') {
			in_str = 1;
		} else if (c == '{' || c == '[') {
			if (++depth > CTL_MAX_DEPTH)
				return 0;
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return 1;
}

int ctl_parse(const void *buf, size_t len, struct ctl_hdr *h, json_t **body, char *err,
              size_t errlen)
{
	const unsigned char *p = buf;
	json_error_t jerr;
	json_t *j;

	memset(h, 0, sizeof(*h));
	*body = NULL;
	if (len < CTL_HDR_LEN) {
		seterr(err, errlen, "short datagram: %zu bytes, the header alone is %d", len,
		       CTL_HDR_LEN);
		return -EPROTO;
	}
	if (get_be32(p) != CTL_MAGIC) {
		seterr(err, errlen, "bad magic 0x%08x (want 0x%08x \"AMB1\")", get_be32(p),
		       CTL_MAGIC);
		return -EPROTO;
	}
	/* From here the header is readable: fill it so an error ack can echo
	 * the sequence number. */
	h->magic = CTL_MAGIC;
	h->version = get_be16(p + 4);
	h->type = get_be16(p + 6);
	h->seq = get_be32(p + 8);
	h->len = get_be32(p + 12);
	if (h->version != CTL_VERSION) {
		seterr(err, errlen, "unsupported protocol version %u (supported: %d)", h->version,
		       CTL_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (!type_known(h->type)) {
		seterr(err, errlen, "unknown message type %u", h->type);
		return -EPROTO;
	}
	if (len > CTL_MAX_MSG) {
		seterr(err, errlen, "datagram too large: %zu bytes (max %d)", len, CTL_MAX_MSG);
		return -EPROTO;
	}
	if ((size_t)h->len != len - CTL_HDR_LEN) {
		seterr(err, errlen, "length mismatch: header says %u body bytes, datagram has %zu",
		       h->len, len - CTL_HDR_LEN);
		return -EPROTO;
	}
	if (h->len == 0) {
		/* An empty body stands for {} (LIST and STATUS need nothing). */
		*body = json_object();
		return *body ? 0 : -ENOMEM;
	}
	if (!depth_ok(p + CTL_HDR_LEN, h->len)) {
		seterr(err, errlen, "JSON nested deeper than %d levels", CTL_MAX_DEPTH);
		return -EPROTO;
	}
	j = json_loadb((const char *)p + CTL_HDR_LEN, h->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		seterr(err, errlen, "bad JSON body at line %d column %d: %s", jerr.line,
		       jerr.column, jerr.text);
		return -EPROTO;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		seterr(err, errlen, "body is not a JSON object");
		return -EPROTO;
	}
	*body = j;
	return 0;
}

int ctl_encode(uint16_t type, uint32_t seq, const json_t *body, void *buf, size_t cap)
{
	unsigned char *p = buf;
	size_t n = 0;

	if (cap > CTL_MAX_MSG)
		cap = CTL_MAX_MSG;
	if (cap < CTL_HDR_LEN)
		return -EMSGSIZE;
	if (body) {
		n = json_dumpb(body, (char *)p + CTL_HDR_LEN, cap - CTL_HDR_LEN, JSON_COMPACT);
		if (n == 0)
			return -EINVAL; /* not encodable (e.g. a bare NaN) */
		if (n > cap - CTL_HDR_LEN)
			return -EMSGSIZE;
	}
	put_be32(p, CTL_MAGIC);
	put_be16(p + 4, CTL_VERSION);
	put_be16(p + 6, type);
	put_be32(p + 8, seq);
	put_be32(p + 12, (uint32_t)n);
	return (int)(CTL_HDR_LEN + n);
}

/* --- client --------------------------------------------------------------- */

int ctl_client_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Close every fd an SCM_RIGHTS message delivered; a reply never carries
 * any, but a confused peer must not make us leak. */
static void close_cmsg_fds(struct msghdr *m)
{
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int), i;
			int fd;

			for (i = 0; i < n; i++) {
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				close(fd);
			}
		}
	}
}

static atomic_uint ctl_next_seq = 1;

int ctl_client_call(int fd, uint16_t type, json_t *body, const int *fds, size_t nfds,
                    int timeout_ms, json_t **reply, char *err, size_t errlen)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * CTL_MAX_FDS)];
		struct cmsghdr align;
	} cm;
	unsigned char *buf;
	struct iovec iov;
	struct msghdr m;
	struct ctl_hdr h;
	json_t *ack = NULL, *e;
	uint32_t seq;
	int64_t deadline = now_ms() + timeout_ms;
	ssize_t n;
	int len, r;

	do /* 0 is reserved for acks to unreadable datagrams */
		seq = atomic_fetch_add(&ctl_next_seq, 1);
	while (seq == 0);
	if (reply)
		*reply = NULL;
	if (err && errlen)
		err[0] = 0;
	if (nfds > CTL_MAX_FDS) {
		seterr(err, errlen, "too many fds (%zu, max %d)", nfds, CTL_MAX_FDS);
		return -EINVAL;
	}
	buf = malloc(CTL_MAX_MSG);
	if (!buf)
		return -ENOMEM;
	len = ctl_encode(type, seq, body, buf, CTL_MAX_MSG);
	if (len < 0) {
		r = len;
		seterr(err, errlen, "request does not fit in one datagram");
		goto out;
	}

	iov = (struct iovec){ .iov_base = buf, .iov_len = (size_t)len };
	m = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		struct cmsghdr *c;

		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	while ((n = sendmsg(fd, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n < 0) {
		r = -errno;
		seterr(err, errlen, "send: %s", strerror(errno));
		goto out;
	}

	/* Acks come in order; one with an older seq belongs to an earlier
	 * call that timed out and is skipped. */
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();

		if (left < 0)
			left = 0;
		r = poll(&pfd, 1, timeout_ms < 0 ? -1 : (int)left);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			seterr(err, errlen, "poll: %s", strerror(errno));
			goto out;
		}
		if (r == 0) {
			r = -ETIMEDOUT;
			seterr(err, errlen, "no ack within %d ms", timeout_ms);
			goto out;
		}
		iov = (struct iovec){ .iov_base = buf, .iov_len = CTL_MAX_MSG };
		m = (struct msghdr){ .msg_iov = &iov,
			             .msg_iovlen = 1,
			             .msg_control = cm.buf,
			             .msg_controllen = sizeof(cm.buf) };
		n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			r = -errno;
			seterr(err, errlen, "recv: %s", strerror(errno));
			goto out;
		}
		close_cmsg_fds(&m);
		if (n == 0) {
			r = -ECONNRESET;
			seterr(err, errlen, "node-proxy closed the control connection");
			goto out;
		}
		if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
			r = -EPROTO;
			seterr(err, errlen, "ack truncated");
			goto out;
		}
		r = ctl_parse(buf, (size_t)n, &h, &ack, err, errlen);
		if (r)
			goto out;
		if (h.seq != seq && h.seq != 0) {
			json_decref(ack);
			ack = NULL;
			continue;
		}
		break;
	}
	/* seq 0 is the server's answer to a datagram it could not read at
	 * all; report it like any other error ack. */
	if (!(h.type & CTL_ACK) || (h.seq != 0 && h.type != (type | CTL_ACK))) {
		r = -EPROTO;
		seterr(err, errlen, "unexpected reply type 0x%x", h.type);
		goto out;
	}
	e = json_object_get(ack, "error");
	if (!json_is_string(e)) {
		r = -EPROTO;
		seterr(err, errlen, "ack without an error string");
		goto out;
	}
	if (json_string_length(e) > 0) {
		r = -EREMOTEIO;
		seterr(err, errlen, "%s", json_string_value(e));
	} else {
		r = 0;
	}
	if (reply) {
		*reply = ack;
		ack = NULL;
	}
out:
	json_decref(ack);
	free(buf);
	return r;
}

static int call_once(const char *sock, uint16_t type, json_t *body, const int *fds, size_t nfds,
                     int timeout_ms, json_t **reply, char *err, size_t errlen)
{
	int fd, r;

	fd = ctl_client_connect(sock);
	if (fd < 0) {
		seterr(err, errlen, "connect %s: %s", sock, strerror(-fd));
		return fd;
	}
	r = ctl_client_call(fd, type, body, fds, nfds, timeout_ms, reply, err, errlen);
	close(fd);
	return r;
}

int ctl_add(const char *sock, const struct workload *w, int netns_fd, int timeout_ms, char *err,
            size_t errlen)
{
	json_t *body = json_object(), *wj = ctl_workload_to_json(w);
	int r = -ENOMEM;

	if (!body || !wj || json_object_set_new(body, "workload", wj)) {
		wj = NULL;
		seterr(err, errlen, "out of memory");
		goto out;
	}
	r = call_once(sock, CTL_ADD, body, &netns_fd, 1, timeout_ms, NULL, err, errlen);
out:
	json_decref(body);
	return r;
}

int ctl_del(const char *sock, const char *uid, int timeout_ms, char *err, size_t errlen)
{
	json_t *body = json_pack("{s:s}", "uid", uid);
	int r;

	if (!body) {
		seterr(err, errlen, "bad uid");
		return -EINVAL;
	}
	r = call_once(sock, CTL_DEL, body, NULL, 0, timeout_ms, NULL, err, errlen);
	json_decref(body);
	return r;
}

int ctl_status(const char *sock, int timeout_ms, int *ready, char *err, size_t errlen)
{
	json_t *reply = NULL;
	int r;

	*ready = 0;
	r = call_once(sock, CTL_STATUS, NULL, NULL, 0, timeout_ms, &reply, err, errlen);
	if (r == 0)
		*ready = json_is_true(json_object_get(reply, "ready"));
	json_decref(reply);
	return r;
}
