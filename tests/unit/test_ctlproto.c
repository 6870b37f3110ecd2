/*
 * ctlproto: encode/parse round trips and every way a datagram or a
 * workload can be wrong.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node-proxy/ctlproto.h"

static unsigned char buf[CTL_MAX_MSG + 64];
static char err[512];

static void fill_workload(struct workload *w)
{
	memset(w, 0, sizeof(*w));
	strcpy(w->uid, "0d6c2f3e-1111-2222-3333-444455556666");
	strcpy(w->ns, "default");
	strcpy(w->name, "web-7f9c");
	strcpy(w->sa, "web");
	strcpy(w->netns_path, "/run/netns/cni-1234");
	w->n_ips = 2;
	w->ips[0].family = AF_INET;
	inet_pton(AF_INET, "10.1.2.3", &w->ips[0].v4);
	w->ips[1].family = AF_INET6;
	inet_pton(AF_INET6, "fd00::5", &w->ips[1].v6);
	w->n_labels = 2;
	strcpy(w->labels[0].key, "app");
	strcpy(w->labels[0].val, "web");
	strcpy(w->labels[1].key, "app.kubernetes.io/version");
	strcpy(w->labels[1].val, "1.2");
}

/* Build a raw datagram with arbitrary header fields. */
static size_t raw(uint32_t magic, uint16_t ver, uint16_t type, uint32_t seq, uint32_t hlen,
                  const char *body)
{
	uint32_t m = htonl(magic), s = htonl(seq), l = htonl(hlen);
	uint16_t v = htons(ver), t = htons(type);
	size_t n = body ? strlen(body) : 0;

	memcpy(buf, &m, 4);
	memcpy(buf + 4, &v, 2);
	memcpy(buf + 6, &t, 2);
	memcpy(buf + 8, &s, 4);
	memcpy(buf + 12, &l, 4);
	if (n)
		memcpy(buf + CTL_HDR_LEN, body, n);
	return CTL_HDR_LEN + n;
}

static size_t good(uint16_t type, const char *body)
{
	return raw(CTL_MAGIC, CTL_VERSION, type, 7, body ? (uint32_t)strlen(body) : 0, body);
}

static int parse(size_t n, struct ctl_hdr *h, json_t **body)
{
	err[0] = 0;
	return ctl_parse(buf, n, h, body, err, sizeof(err));
}

static void workload_roundtrip(void **state)
{
	struct workload w, back;
	json_t *j;

	(void)state;
	fill_workload(&w);
	j = ctl_workload_to_json(&w);
	assert_non_null(j);
	assert_int_equal(ctl_workload_from_json(j, &back, err, sizeof(err)), 0);
	assert_memory_equal(&w, &back, sizeof(w));
	json_decref(j);
}

static void datagram_roundtrip(void **state)
{
	struct workload w, back;
	struct ctl_hdr h;
	json_t *body, *got;
	int n;

	(void)state;
	fill_workload(&w);
	body = json_pack("{s:o}", "workload", ctl_workload_to_json(&w));
	n = ctl_encode(CTL_ADD, 0xdeadbeef, body, buf, sizeof(buf));
	assert_true(n > CTL_HDR_LEN);
	assert_memory_equal(buf, "AMB1", 4);
	assert_int_equal(parse((size_t)n, &h, &got), 0);
	assert_int_equal(h.magic, CTL_MAGIC);
	assert_int_equal(h.version, CTL_VERSION);
	assert_int_equal(h.type, CTL_ADD);
	assert_int_equal(h.seq, 0xdeadbeef);
	assert_int_equal(h.len, (uint32_t)n - CTL_HDR_LEN);
	assert_true(json_equal(body, got));
	assert_int_equal(
	    ctl_workload_from_json(json_object_get(got, "workload"), &back, err, sizeof(err)), 0);
	assert_string_equal(back.uid, w.uid);
	json_decref(got);
	json_decref(body);

	/* No body: an empty object. */
	n = ctl_encode(CTL_STATUS, 1, NULL, buf, sizeof(buf));
	assert_int_equal(n, CTL_HDR_LEN);
	assert_int_equal(parse((size_t)n, &h, &got), 0);
	assert_true(json_is_object(got) && json_object_size(got) == 0);
	json_decref(got);

	/* Acks parse too. */
	body = json_pack("{s:s}", "error", "");
	n = ctl_encode(CTL_DEL | CTL_ACK, 9, body, buf, sizeof(buf));
	assert_int_equal(parse((size_t)n, &h, &got), 0);
	assert_int_equal(h.type, CTL_DEL | CTL_ACK);
	json_decref(got);
	json_decref(body);
}

static void encode_too_big(void **state)
{
	json_t *body = json_object();
	char *big = malloc(CTL_MAX_MSG);

	(void)state;
	memset(big, 'a', CTL_MAX_MSG - 1);
	big[CTL_MAX_MSG - 1] = 0;
	json_object_set_new(body, "x", json_string(big));
	assert_int_equal(ctl_encode(CTL_ADD, 1, body, buf, sizeof(buf)), -EMSGSIZE);
	assert_int_equal(ctl_encode(CTL_ADD, 1, NULL, buf, 10), -EMSGSIZE);
	json_decref(body);
	free(big);
}

static void bad_datagrams(void **state)
{
	struct ctl_hdr h;
	json_t *b;
	size_t n;

	(void)state;
	/* short header */
	good(CTL_LIST, NULL);
	assert_int_equal(parse(0, &h, &b), -EPROTO);
	assert_int_equal(parse(15, &h, &b), -EPROTO);
	assert_non_null(strstr(err, "short"));
	assert_null(b);
	assert_int_equal(h.seq, 0);

	/* bad magic: header unreadable, seq not echoed */
	n = raw(0x41424344, CTL_VERSION, CTL_LIST, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	assert_non_null(strstr(err, "magic"));
	assert_int_equal(h.seq, 0);

	/* wrong version, named in the error; seq echoed */
	n = raw(CTL_MAGIC, 2, CTL_LIST, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "version 2"));
	assert_non_null(strstr(err, "supported: 1"));
	assert_int_equal(h.seq, 5);

	/* unknown types */
	n = raw(CTL_MAGIC, CTL_VERSION, 0, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	assert_non_null(strstr(err, "unknown message type"));
	n = raw(CTL_MAGIC, CTL_VERSION, 6, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	n = raw(CTL_MAGIC, CTL_VERSION, 0x180, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	n = raw(CTL_MAGIC, CTL_VERSION, 0x7f, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	n = raw(CTL_MAGIC, CTL_VERSION, 0x86, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	/* the bare ack (answer to an unusable datagram) is known */
	n = raw(CTL_MAGIC, CTL_VERSION, CTL_ACK, 5, 0, NULL);
	assert_int_equal(parse(n, &h, &b), 0);
	json_decref(b);

	/* length field vs datagram: truncated, trailing bytes, huge */
	n = raw(CTL_MAGIC, CTL_VERSION, CTL_DEL, 5, 100, "{\"uid\":\"x\"}");
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	assert_non_null(strstr(err, "length mismatch"));
	n = raw(CTL_MAGIC, CTL_VERSION, CTL_DEL, 5, 3, "{\"uid\":\"x\"}");
	assert_int_equal(parse(n, &h, &b), -EPROTO);
	n = raw(CTL_MAGIC, CTL_VERSION, CTL_DEL, 5, 0xffffffffu, NULL);
	assert_int_equal(parse(n, &h, &b), -EPROTO);

	/* oversize datagram */
	raw(CTL_MAGIC, CTL_VERSION, CTL_DEL, 5, CTL_MAX_MSG + 1 - CTL_HDR_LEN, NULL);
	assert_int_equal(parse(CTL_MAX_MSG + 1, &h, &b), -EPROTO);
	assert_non_null(strstr(err, "too large"));

	/* bad JSON, non-object, trailing garbage, duplicates, NUL, depth */
	assert_int_equal(parse(good(CTL_DEL, "{\"uid\":"), &h, &b), -EPROTO);
	assert_non_null(strstr(err, "bad JSON"));
	assert_int_equal(parse(good(CTL_DEL, "[1,2]"), &h, &b), -EPROTO);
	assert_non_null(strstr(err, "not a JSON object"));
	assert_int_equal(parse(good(CTL_DEL, "\"x\""), &h, &b), -EPROTO);
	assert_int_equal(parse(good(CTL_DEL, "{} {}"), &h, &b), -EPROTO);
	assert_int_equal(parse(good(CTL_DEL, "{\"uid\":\"a\",\"uid\":\"b\"}"), &h, &b), -EPROTO);
	assert_non_null(strstr(err, "duplicate"));
	assert_int_equal(parse(good(CTL_DEL, "{\"uid\":\"a\\u0000b\"}"), &h, &b), -EPROTO);
	assert_int_equal(parse(good(CTL_DEL, "{\"a\":[[[[[[[[[1]]]]]]]]]}"), &h, &b), -EPROTO);
	assert_non_null(strstr(err, "nested"));
	/* brackets inside strings do not count toward depth */
	assert_int_equal(parse(good(CTL_DEL, "{\"a\":\"[[[[[[[[[[[[\\\"[[[[[\"}"), &h, &b), 0);
	json_decref(b);
	assert_int_equal(parse(good(CTL_DEL, "{\"uid\":\"\xff\xfe\"}"), &h, &b), -EPROTO);
	assert_null(b);
}

static const char *base = "{\"uid\":\"u1\",\"namespace\":\"ns\",\"name\":\"pod\","
                          "\"netns_path\":\"/run/netns/p\",\"ips\":[\"10.0.0.1\"]";

/* Parse base + @extra + "}" (or @whole when given) as a workload. */
static int wl(const char *extra, const char *whole, struct workload *w)
{
	char text[8192];
	json_error_t je;
	json_t *j;
	int r;

	if (whole)
		snprintf(text, sizeof(text), "%s", whole);
	else
		snprintf(text, sizeof(text), "%s%s}", base, extra);
	j = json_loads(text, 0, &je);
	assert_non_null(j);
	err[0] = 0;
	r = ctl_workload_from_json(j, w, err, sizeof(err));
	json_decref(j);
	if (r)
		assert_true(err[0] != 0);
	return r;
}

static void workload_defaults(void **state)
{
	struct workload w;

	(void)state;
	assert_int_equal(wl("", NULL, &w), 0);
	assert_string_equal(w.sa, "default");
	assert_int_equal(w.n_labels, 0);
	assert_int_equal(w.n_ips, 1);
	assert_int_equal(w.ips[0].family, AF_INET);
	assert_int_equal(wl(",\"service_account\":\"\"", NULL, &w), 0);
	assert_string_equal(w.sa, "default");
	/* unknown keys are ignored (forward compatible) */
	assert_int_equal(wl(",\"future\":{\"x\":1}", NULL, &w), 0);
	assert_int_equal(wl(",\"labels\":{}", NULL, &w), 0);
	assert_int_equal(wl(",\"labels\":{\"k\":\"\"}", NULL, &w), 0);
}

static void workload_bad(void **state)
{
	char big[2048], text[4096];
	struct workload w;
	int i;

	(void)state;
	assert_int_equal(wl(NULL, "[]", &w), -EINVAL);
	assert_int_equal(wl(NULL, "{\"namespace\":\"n\",\"name\":\"p\",\"ips\":[]}", &w), -EINVAL);
	assert_non_null(strstr(err, "missing \"uid\""));
	assert_int_equal(wl(NULL, "{\"uid\":\"u\",\"name\":\"p\",\"ips\":[]}", &w), -EINVAL);
	assert_int_equal(wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\",\"ips\":[]}", &w), -EINVAL);
	assert_int_equal(wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\"}", &w),
	                 -EINVAL);
	assert_non_null(strstr(err, "ips"));
	assert_int_equal(wl(NULL, "{\"uid\":5,\"namespace\":\"n\",\"name\":\"p\",\"ips\":[]}", &w),
	                 -EINVAL);
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[]}", &w), -EINVAL);
	assert_non_null(strstr(err, "empty"));

	/* overlong strings, one past each bound; the bound itself is fine */
	memset(big, 'a', sizeof(big));
	big[WL_UID_MAX] = 0;
	snprintf(text, sizeof(text),
	         "{\"uid\":\"%s\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[]}", big);
	assert_int_equal(wl(NULL, text, &w), -EINVAL);
	assert_non_null(strstr(err, "too long"));
	big[WL_UID_MAX - 1] = 0;
	snprintf(text, sizeof(text),
	         "{\"uid\":\"%s\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[]}", big);
	assert_int_equal(wl(NULL, text, &w), 0);
	memset(big, 'a', sizeof(big));
	big[WL_NAME_MAX] = 0;
	snprintf(text, sizeof(text), ",\"service_account\":\"%s\"", big);
	assert_int_equal(wl(text, NULL, &w), -EINVAL);
	snprintf(text, sizeof(text),
	         "{\"uid\":\"u\",\"namespace\":\"%s\",\"name\":\"p\",\"ips\":[]}", big);
	assert_int_equal(wl(NULL, text, &w), -EINVAL);
	snprintf(text, sizeof(text),
	         "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"%s\",\"ips\":[]}", big);
	assert_int_equal(wl(NULL, text, &w), -EINVAL);
	memset(big, 'a', sizeof(big));
	big[0] = '/';
	big[256] = 0;
	snprintf(
	    text, sizeof(text),
	    "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"netns_path\":\"%s\",\"ips\":[]}",
	    big);
	assert_int_equal(wl(NULL, text, &w), -EINVAL);
	memset(big, 'k', sizeof(big));
	big[WL_LABEL_KEY_MAX] = 0;
	snprintf(text, sizeof(text), ",\"labels\":{\"%s\":\"v\"}", big);
	assert_int_equal(wl(text, NULL, &w), -EINVAL);
	big[WL_LABEL_KEY_MAX - 1] = 0;
	snprintf(text, sizeof(text), ",\"labels\":{\"%s\":\"v\"}", big);
	assert_int_equal(wl(text, NULL, &w), 0);
	big[WL_LABEL_VAL_MAX] = 0;
	snprintf(text, sizeof(text), ",\"labels\":{\"k\":\"%s\"}", big);
	assert_int_equal(wl(text, NULL, &w), -EINVAL);

	/* characters: identity parts end up in a SPIFFE URI path */
	assert_int_equal(wl(",\"service_account\":\"a/sa/b\"", NULL, &w), -EINVAL);
	assert_non_null(strstr(err, "invalid character"));
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"a b\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[]}", &w),
	    -EINVAL);
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\\n\",\"name\":\"p\",\"ips\":[]}", &w),
	    -EINVAL);
	assert_int_equal(wl(NULL,
	                    "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"netns_path\":"
	                    "\"relative\",\"ips\":[]}",
	                    &w),
	                 -EINVAL);
	assert_non_null(strstr(err, "absolute"));
	assert_int_equal(wl(",\"labels\":{\"a b\":\"v\"}", NULL, &w), -EINVAL);
	assert_int_equal(wl(",\"labels\":{\"k\":\"v\\u0001\"}", NULL, &w), -EINVAL);

	/* ips */
	assert_int_equal(wl(NULL,
	                    "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":"
	                    "[\"10.0.0.1\",\"10.0.0.2\",\"fd00::1\",\"fd00::2\",\"10.0.0.5\"]}",
	                    &w),
	                 -EINVAL);
	assert_non_null(strstr(err, "too many ips"));
	assert_int_equal(wl(NULL,
	                    "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":"
	                    "[\"10.0.0.1\",\"10.0.0.2\",\"fd00::1\",\"fd00::2\"]}",
	                    &w),
	                 0);
	assert_int_equal(w.n_ips, 4);
	assert_int_equal(w.ips[3].family, AF_INET6);
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[\"10.0.0.256\"]}",
	       &w),
	    -EINVAL);
	assert_non_null(strstr(err, "not an IPv4 or IPv6"));
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[\"\"]}", &w),
	    -EINVAL);
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[7]}", &w),
	    -EINVAL);
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":[\"10.0.0.1/24\"]}",
	       &w),
	    -EINVAL);
	assert_int_equal(
	    wl(NULL, "{\"uid\":\"u\",\"namespace\":\"n\",\"name\":\"p\",\"ips\":\"10.0.0.1\"}", &w),
	    -EINVAL);

	/* labels: type and count */
	assert_int_equal(wl(",\"labels\":[]", NULL, &w), -EINVAL);
	assert_int_equal(wl(",\"labels\":{\"k\":1}", NULL, &w), -EINVAL);
	strcpy(text, ",\"labels\":{");
	for (i = 0; i <= WL_MAX_LABELS; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s\"k%d\":\"v\"",
		         i ? "," : "", i);
	strcat(text, "}");
	assert_int_equal(wl(text, NULL, &w), -EINVAL);
	assert_non_null(strstr(err, "too many labels"));
	/* exactly the maximum is fine */
	strcpy(text, ",\"labels\":{");
	for (i = 0; i < WL_MAX_LABELS; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s\"k%d\":\"v\"",
		         i ? "," : "", i);
	strcat(text, "}");
	assert_int_equal(wl(text, NULL, &w), 0);
	assert_int_equal(w.n_labels, WL_MAX_LABELS);
}

/* --- client against a scripted peer ---------------------------------------- */

enum script { S_SILENT, S_STALE_THEN_ERROR, S_WRONG_TYPE, S_CLOSE, S_HUGE, S_WITH_FD, S_OK };

struct peer {
	int fd;
	enum script what;
};

static void send_ack(int fd, uint16_t type, uint32_t seq, const char *error, int attach_fd)
{
	static unsigned char out[CTL_MAX_MSG];
	json_t *b = json_pack("{s:s}", "error", error);
	int n = ctl_encode(type, seq, b, out, sizeof(out));
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} cm;
	struct iovec iov = { .iov_base = out, .iov_len = (size_t)n };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (attach_fd >= 0) {
		struct cmsghdr *c;

		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.b;
		m.msg_controllen = sizeof(cm.b);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &attach_fd, sizeof(int));
	}
	sendmsg(fd, &m, MSG_NOSIGNAL);
	json_decref(b);
}

static void *peer_main(void *arg)
{
	static unsigned char in[CTL_MAX_MSG];
	struct peer *p = arg;
	struct ctl_hdr h;
	json_t *body = NULL;
	char e[128];
	ssize_t n = recv(p->fd, in, sizeof(in), 0);

	if (n < 0 || ctl_parse(in, (size_t)n, &h, &body, e, sizeof(e)))
		return NULL;
	json_decref(body);
	switch (p->what) {
	case S_SILENT:
		break;
	case S_STALE_THEN_ERROR:
		send_ack(p->fd, h.type | CTL_ACK, h.seq - 1, "stale", -1);
		send_ack(p->fd, h.type | CTL_ACK, h.seq, "boom", -1);
		break;
	case S_WRONG_TYPE:
		send_ack(p->fd, CTL_DEL | CTL_ACK, h.seq, "", -1);
		break;
	case S_CLOSE:
		shutdown(p->fd, SHUT_RDWR);
		break;
	case S_HUGE: {
		static unsigned char big[CTL_MAX_MSG + 100];

		memset(big, ' ', sizeof(big));
		send(p->fd, big, sizeof(big), MSG_NOSIGNAL);
		break;
	}
	case S_WITH_FD: {
		int pf[2];

		if (pipe(pf) == 0) {
			send_ack(p->fd, h.type | CTL_ACK, h.seq, "", pf[0]);
			close(pf[0]);
			close(pf[1]);
		}
		break;
	}
	case S_OK:
		send_ack(p->fd, h.type | CTL_ACK, h.seq, "", -1);
		break;
	}
	return NULL;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)))
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static int scripted(enum script what, int timeout_ms, json_t **reply)
{
	struct peer p = { .what = what };
	pthread_t th;
	int sv[2], r;

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	p.fd = sv[1];
	assert_int_equal(pthread_create(&th, NULL, peer_main, &p), 0);
	err[0] = 0;
	r = ctl_client_call(sv[0], CTL_STATUS, NULL, NULL, 0, timeout_ms, reply, err, sizeof(err));
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	return r;
}

static void client_transport(void **state)
{
	json_t *reply = NULL;
	int before = count_fds();

	(void)state;
	assert_int_equal(scripted(S_OK, 2000, &reply), 0);
	assert_non_null(reply);
	json_decref(reply);
	assert_int_equal(scripted(S_SILENT, 50, NULL), -ETIMEDOUT);
	assert_non_null(strstr(err, "no ack"));
	/* an ack for an earlier, timed-out request is skipped */
	assert_int_equal(scripted(S_STALE_THEN_ERROR, 2000, &reply), -EREMOTEIO);
	assert_string_equal(err, "boom");
	/* the error ack's body is handed over too */
	assert_string_equal(json_string_value(json_object_get(reply, "error")), "boom");
	json_decref(reply);
	assert_int_equal(scripted(S_WRONG_TYPE, 2000, NULL), -EPROTO);
	assert_int_equal(scripted(S_CLOSE, 2000, NULL), -ECONNRESET);
	assert_int_equal(scripted(S_HUGE, 2000, NULL), -EPROTO);
	assert_non_null(strstr(err, "truncated"));
	/* a peer that sends fds back does not make the client leak them */
	assert_int_equal(scripted(S_WITH_FD, 2000, NULL), 0);
	assert_int_equal(count_fds(), before);
	/* no server at all */
	assert_true(ctl_client_connect("/nonexistent/ambit.sock") == -ENOENT);
	int ready = 1;
	assert_int_equal(ctl_status("/nonexistent/ambit.sock", 100, &ready, err, sizeof(err)),
	                 -ENOENT);
	assert_int_equal(ready, 0);
	assert_non_null(strstr(err, "connect"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(workload_roundtrip), cmocka_unit_test(datagram_roundtrip),
		cmocka_unit_test(encode_too_big),     cmocka_unit_test(bad_datagrams),
		cmocka_unit_test(workload_defaults),  cmocka_unit_test(workload_bad),
		cmocka_unit_test(client_transport),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
