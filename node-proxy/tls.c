/*
 * tls: TLS 1.3 mutual authentication over in-memory queues (see tls.h).
 *
 * wolfSSL reads ciphertext through io_recv() from the caller's buffer (no
 * copy into a queue of ours) and writes records through io_send() into a
 * fixed ring that the caller drains.  Peer checks run inside wolfSSL's
 * verify callback so a refused peer gets a proper alert; ALPN is checked
 * once the handshake completes because a peer that offers no ALPN at all
 * does not trigger wolfSSL's mismatch error.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/hash.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "node-proxy/tls.h"

#define SPIFFE_PREFIX     "spiffe://"
#define SPIFFE_PREFIX_LEN 9
#define SPIFFE_MAX        2048
#define TD_MAX            255
#define OUT_CAP_DEFAULT   (256 * 1024)
/* Ring space kept free for records wolfSSL emits on its own (alerts,
 * KeyUpdate answers) so io_send never has to refuse them. */
#define OUT_RESERVE 1024

struct tls_identity {
	int refs;            /* atomic */
	WOLFSSL_CTX *ctx[2]; /* [TLS_CLIENT], [TLS_SERVER] */
	char spiffe_id[SPIFFE_MAX + 1];
	char trust_domain[TD_MAX + 1];
};

struct tls_identity_slot {
	pthread_mutex_t lock;
	struct tls_identity *cur;
};

struct tls_conn {
	struct tls_identity *id; /* NULL in cleartext (fuzz) mode */
	WOLFSSL *ssl;
	enum tls_role role;
	bool established, failed, sniffed, cleartext;
	enum tls_fail fail;
	int peer_alert;
	char *expected; /* client: the server's SPIFFE ID, owned */
	char *peer_id;  /* verified peer SPIFFE ID, owned */
	uint8_t peer_fp[32];

	const uint8_t *in; /* caller's ciphertext, not owned */
	size_t in_len;

	uint8_t *out; /* ciphertext ring, owned, never moves */
	size_t out_cap, out_head, out_len;
};

const char *tls_fail_str(enum tls_fail f)
{
	static const char *const names[TLS_FAIL__COUNT] = {
		[TLS_FAIL_NONE] = "none",
		[TLS_FAIL_UNKNOWN_CA] = "unknown_ca",
		[TLS_FAIL_EXPIRED] = "expired",
		[TLS_FAIL_BAD_CERT] = "bad_cert",
		[TLS_FAIL_WRONG_IDENTITY] = "wrong_identity",
		[TLS_FAIL_NO_PEER_CERT] = "no_peer_cert",
		[TLS_FAIL_ALPN] = "alpn",
		[TLS_FAIL_PROTOCOL_VERSION] = "protocol_version",
		[TLS_FAIL_NOT_TLS] = "not_tls",
		[TLS_FAIL_PEER_ALERT] = "peer_alert",
		[TLS_FAIL_HANDSHAKE] = "handshake",
		[TLS_FAIL_CLOSED] = "closed",
		[TLS_FAIL_INTERNAL] = "internal",
	};
	if ((unsigned)f >= TLS_FAIL__COUNT)
		return "invalid";
	return names[f];
}

static pthread_once_t wolf_once = PTHREAD_ONCE_INIT;
static int wolf_init_rc;

static void wolf_init(void)
{
	wolf_init_rc = wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -EIO;
}

/* ---- SPIFFE IDs ------------------------------------------------------- */

static bool td_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
	       ch == '_';
}

static bool path_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '-' || ch == '_';
}

/* SPIFFE ID syntax: spiffe://<td>/<seg>(/<seg>)*, lower-case trust domain,
 * no empty, "." or ".." segments, no query or fragment.  Returns the trust
 * domain length or -EINVAL. */
static int spiffe_check(const char *s, size_t len)
{
	size_t i, td, seg;

	if (len <= SPIFFE_PREFIX_LEN || len > SPIFFE_MAX ||
	    memcmp(s, SPIFFE_PREFIX, SPIFFE_PREFIX_LEN) != 0)
		return -EINVAL;
	for (i = SPIFFE_PREFIX_LEN; i < len && s[i] != '/'; i++)
		if (!td_char(s[i]))
			return -EINVAL;
	td = i - SPIFFE_PREFIX_LEN;
	if (td == 0 || td > TD_MAX || i == len)
		return -EINVAL;
	while (i < len) { /* s[i] == '/' */
		i++;
		seg = i;
		while (i < len && s[i] != '/') {
			if (!path_char(s[i]))
				return -EINVAL;
			i++;
		}
		if (i == seg || (i - seg == 1 && s[seg] == '.') ||
		    (i - seg == 2 && s[seg] == '.' && s[seg + 1] == '.'))
			return -EINVAL;
	}
	return (int)td;
}

/* The single URI SAN of a DER certificate, which must be a SPIFFE ID.
 * Returns 0, -EBADMSG (unparseable), -EINVAL (none, several, not SPIFFE),
 * -ENOSPC (@outlen too small). */
int tls_spiffe_id_from_der(const uint8_t *der, size_t len, char *out, size_t outlen)
{
	DecodedCert dc;
	DNS_entry *e, *uri = NULL;
	int n = 0, ret = 0;

	if (len > 0xffffffffu)
		return -EBADMSG;
	wc_InitDecodedCert(&dc, der, (word32)len, NULL);
	if (wc_ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) != 0) {
		ret = -EBADMSG;
		goto out;
	}
	for (e = dc.altNames; e; e = e->next) {
		if (e->type == ASN_URI_TYPE) {
			uri = e;
			n++;
		}
	}
	if (n != 1 || uri->len <= 0 || !uri->name || spiffe_check(uri->name, uri->len) < 0) {
		ret = -EINVAL;
		goto out;
	}
	if ((size_t)uri->len >= outlen) {
		ret = -ENOSPC;
		goto out;
	}
	memcpy(out, uri->name, uri->len);
	out[uri->len] = '\0';
out:
	wc_FreeDecodedCert(&dc);
	return ret;
}

/* ---- identity --------------------------------------------------------- */

static bool is_pem(const uint8_t *b, size_t len)
{
	while (len && (*b == ' ' || *b == '\n' || *b == '\r' || *b == '\t')) {
		b++;
		len--;
	}
	return len >= 10 && memcmp(b, "-----BEGIN", 10) == 0;
}

static int fmt(const uint8_t *b, size_t len)
{
	return is_pem(b, len) ? WOLFSSL_FILETYPE_PEM : WOLFSSL_FILETYPE_ASN1;
}

/* Length of the leading DER SEQUENCE (tag + length + body), 0 if invalid. */
static size_t der_seq_len(const uint8_t *b, size_t len)
{
	size_t hdr, body = 0, i, nlen;

	if (len < 2 || b[0] != 0x30)
		return 0;
	if (b[1] < 0x80) {
		hdr = 2;
		body = b[1];
	} else {
		nlen = b[1] & 0x7f;
		if (nlen == 0 || nlen > 3 || len < 2 + nlen)
			return 0;
		for (i = 0; i < nlen; i++)
			body = (body << 8) | b[2 + i];
		hdr = 2 + nlen;
	}
	if (body > len - hdr)
		return 0;
	return hdr + body;
}

static WOLFSSL_CTX *ctx_new(const struct tls_identity_config *cfg, enum tls_role role);

int tls_identity_new(const struct tls_identity_config *cfg, struct tls_identity **out)
{
	struct tls_identity *id = NULL;
	uint8_t *leaf = NULL;
	size_t leaf_len;
	int ret, tdl;

	*out = NULL;
	pthread_once(&wolf_once, wolf_init);
	if (wolf_init_rc)
		return wolf_init_rc;
	if (!cfg || !cfg->chain || !cfg->chain_len || !cfg->key || !cfg->key_len || !cfg->roots ||
	    !cfg->roots_len || cfg->chain_len > 1 << 20 || cfg->key_len > 1 << 16 ||
	    cfg->roots_len > 1 << 20)
		return -EINVAL;

	id = calloc(1, sizeof(*id));
	if (!id)
		return -ENOMEM;
	id->refs = 1;

	/* The leaf in DER, to read our own SPIFFE ID. */
	if (is_pem(cfg->chain, cfg->chain_len)) {
		leaf = malloc(cfg->chain_len);
		if (!leaf) {
			ret = -ENOMEM;
			goto fail;
		}
		ret = wc_CertPemToDer(cfg->chain, (int)cfg->chain_len, leaf, (int)cfg->chain_len,
		                      CERT_TYPE);
		if (ret <= 0) {
			ret = -EINVAL;
			goto fail;
		}
		leaf_len = (size_t)ret;
		ret = tls_spiffe_id_from_der(leaf, leaf_len, id->spiffe_id, sizeof(id->spiffe_id));
	} else {
		leaf_len = der_seq_len(cfg->chain, cfg->chain_len);
		ret = leaf_len ? tls_spiffe_id_from_der(cfg->chain, leaf_len, id->spiffe_id,
		                                        sizeof(id->spiffe_id))
		               : -EINVAL;
	}
	if (ret < 0) {
		ret = -EINVAL;
		goto fail;
	}

	if (cfg->trust_domain) {
		size_t n = strlen(cfg->trust_domain);
		size_t i;
		if (n == 0 || n > TD_MAX) {
			ret = -EINVAL;
			goto fail;
		}
		for (i = 0; i < n; i++)
			if (!td_char(cfg->trust_domain[i])) {
				ret = -EINVAL;
				goto fail;
			}
		memcpy(id->trust_domain, cfg->trust_domain, n + 1);
	} else {
		tdl = spiffe_check(id->spiffe_id, strlen(id->spiffe_id));
		memcpy(id->trust_domain, id->spiffe_id + SPIFFE_PREFIX_LEN, (size_t)tdl);
		id->trust_domain[tdl] = '\0';
	}

	id->ctx[TLS_CLIENT] = ctx_new(cfg, TLS_CLIENT);
	id->ctx[TLS_SERVER] = ctx_new(cfg, TLS_SERVER);
	if (!id->ctx[TLS_CLIENT] || !id->ctx[TLS_SERVER]) {
		ret = -EINVAL;
		goto fail;
	}
	free(leaf);
	*out = id;
	return 0;
fail:
	free(leaf);
	if (id) {
		if (id->ctx[TLS_CLIENT])
			wolfSSL_CTX_free(id->ctx[TLS_CLIENT]);
		if (id->ctx[TLS_SERVER])
			wolfSSL_CTX_free(id->ctx[TLS_SERVER]);
		free(id);
	}
	return ret;
}

struct tls_identity *tls_identity_ref(struct tls_identity *id)
{
	if (id)
		__atomic_add_fetch(&id->refs, 1, __ATOMIC_RELAXED);
	return id;
}

void tls_identity_unref(struct tls_identity *id)
{
	if (!id || __atomic_sub_fetch(&id->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	/* wolfSSL wipes the private key it holds when the context goes. */
	wolfSSL_CTX_free(id->ctx[TLS_CLIENT]);
	wolfSSL_CTX_free(id->ctx[TLS_SERVER]);
	free(id);
}

const char *tls_identity_spiffe_id(const struct tls_identity *id)
{
	return id->spiffe_id;
}

const char *tls_identity_trust_domain(const struct tls_identity *id)
{
	return id->trust_domain;
}

int tls_identity_slot_new(struct tls_identity *initial, struct tls_identity_slot **out)
{
	struct tls_identity_slot *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	s->cur = initial;
	*out = s;
	return 0;
}

struct tls_identity *tls_identity_slot_get(struct tls_identity_slot *s)
{
	struct tls_identity *id;

	pthread_mutex_lock(&s->lock);
	id = tls_identity_ref(s->cur);
	pthread_mutex_unlock(&s->lock);
	return id;
}

void tls_identity_slot_set(struct tls_identity_slot *s, struct tls_identity *id)
{
	struct tls_identity *old;

	pthread_mutex_lock(&s->lock);
	old = s->cur;
	s->cur = id;
	pthread_mutex_unlock(&s->lock);
	tls_identity_unref(old);
}

void tls_identity_slot_free(struct tls_identity_slot *s)
{
	if (!s)
		return;
	tls_identity_unref(s->cur);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- per-connection I/O callbacks -------------------------------------- */

static size_t ring_free(const struct tls_conn *c)
{
	return c->out_cap - c->out_len;
}

static void ring_put(struct tls_conn *c, const uint8_t *b, size_t n)
{
	size_t tail = (c->out_head + c->out_len) % c->out_cap;
	size_t first = c->out_cap - tail;

	if (first > n)
		first = n;
	memcpy(c->out + tail, b, first);
	memcpy(c->out, b + first, n - first);
	c->out_len += n;
}

/* Mark a failure once: the first reason is the one that counts. */
static void set_fail(struct tls_conn *c, enum tls_fail f)
{
	if (!c->fail)
		c->fail = f;
}

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct tls_conn *c = arg;
	size_t n;

	(void)ssl;
	if (c->in_len == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (!c->sniffed) {
		/* The peer's first record must be a handshake (or, from a
		 * server refusing us, an alert), version major 3.  Anything
		 * else is plaintext or garbage: say so instead of "handshake". */
		if ((c->in[0] != 0x16 && c->in[0] != 0x15) || (c->in_len > 1 && c->in[1] != 0x03)) {
			set_fail(c, TLS_FAIL_NOT_TLS);
			return WOLFSSL_CBIO_ERR_GENERAL;
		}
		c->sniffed = true;
	}
	n = sz > 0 ? (size_t)sz : 0;
	if (n > c->in_len)
		n = c->in_len;
	memcpy(buf, c->in, n);
	c->in += n;
	c->in_len -= n;
	return (int)n;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct tls_conn *c = arg;
	size_t n = sz > 0 ? (size_t)sz : 0;

	(void)ssl;
	if (ring_free(c) == 0)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	if (n > ring_free(c))
		n = ring_free(c);
	ring_put(c, (const uint8_t *)buf, n);
	return (int)n;
}

static enum tls_fail fail_from_verify(int err)
{
	switch (err) {
	case ASN_NO_SIGNER_E:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case ASN_SELF_SIGNED_E:
		return TLS_FAIL_UNKNOWN_CA;
	case ASN_AFTER_DATE_E:
	case ASN_BEFORE_DATE_E:
	case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
	case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return TLS_FAIL_EXPIRED;
	default:
		return TLS_FAIL_BAD_CERT;
	}
}

/* Called by wolfSSL for every certificate of the peer's chain (intermediates
 * first, leaf last at depth 0) with its own verdict in @preverify. */
static int verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct tls_conn *c = store->userCtx;
	const WOLFSSL_BUFFER_INFO *leaf;
	char *idbuf;
	size_t idlen, tdlen;
	int ret;

	if (!c)
		return 0;
	if (!preverify) {
		set_fail(c, fail_from_verify(store->error));
		return 0;
	}
	if (store->error_depth != 0)
		return 1;
	if (!store->certs || store->totalCerts < 1) {
		set_fail(c, TLS_FAIL_BAD_CERT);
		return 0;
	}
	leaf = &store->certs[0];
	idbuf = malloc(SPIFFE_MAX + 1);
	if (!idbuf) {
		set_fail(c, TLS_FAIL_INTERNAL);
		return 0;
	}
	ret = tls_spiffe_id_from_der(leaf->buffer, leaf->length, idbuf, SPIFFE_MAX + 1);
	if (ret < 0) {
		free(idbuf);
		set_fail(c, ret == -EBADMSG ? TLS_FAIL_BAD_CERT : TLS_FAIL_WRONG_IDENTITY);
		return 0;
	}
	idlen = strlen(idbuf);
	if (c->role == TLS_CLIENT) {
		ret = strcmp(idbuf, c->expected) == 0;
	} else {
		tdlen = strlen(c->id->trust_domain);
		ret = idlen > SPIFFE_PREFIX_LEN + tdlen &&
		      memcmp(idbuf + SPIFFE_PREFIX_LEN, c->id->trust_domain, tdlen) == 0 &&
		      idbuf[SPIFFE_PREFIX_LEN + tdlen] == '/';
	}
	if (!ret) {
		free(idbuf);
		set_fail(c, TLS_FAIL_WRONG_IDENTITY);
		return 0;
	}
	if (wc_Sha256Hash(leaf->buffer, leaf->length, c->peer_fp) != 0) {
		free(idbuf);
		set_fail(c, TLS_FAIL_INTERNAL);
		return 0;
	}
	free(c->peer_id);
	c->peer_id = idbuf;
	return 1;
}

static WOLFSSL_CTX *ctx_new(const struct tls_identity_config *cfg, enum tls_role role)
{
	static int groups[] = { WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1 };
	WOLFSSL_CTX *ctx;
	int mode = WOLFSSL_VERIFY_PEER;

	ctx = wolfSSL_CTX_new(role == TLS_CLIENT ? wolfTLSv1_3_client_method()
	                                         : wolfTLSv1_3_server_method());
	if (!ctx)
		return NULL;
	if (role == TLS_SERVER)
		mode |= WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	if (wolfSSL_CTX_set_cipher_list(ctx, "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384") !=
	        WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_groups(ctx, groups, 2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_load_verify_buffer(ctx, cfg->roots, (long)cfg->roots_len,
	                                   fmt(cfg->roots, cfg->roots_len)) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_certificate_chain_buffer_format(ctx, cfg->chain, (long)cfg->chain_len,
	                                                    fmt(cfg->chain, cfg->chain_len)) !=
	        WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_PrivateKey_buffer(ctx, cfg->key, (long)cfg->key_len,
	                                      fmt(cfg->key, cfg->key_len)) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS)
		goto fail;
	/* No session tickets: no resumption state to keep, and a server does
	 * not emit a record behind the caller's back after the handshake. */
	if (role == TLS_SERVER)
		wolfSSL_CTX_no_ticket_TLSv13(ctx);
	wolfSSL_CTX_set_verify(ctx, mode, verify_cb);
	wolfSSL_CTX_SetIORecv(ctx, io_recv);
	wolfSSL_CTX_SetIOSend(ctx, io_send);
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

/* ---- connection -------------------------------------------------------- */

static int conn_alloc(size_t out_cap, struct tls_conn **out)
{
	struct tls_conn *c;

	if (out_cap == 0)
		out_cap = OUT_CAP_DEFAULT;
	if (out_cap < TLS_OUT_CAP_MIN)
		out_cap = TLS_OUT_CAP_MIN;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->out = malloc(out_cap);
	if (!c->out) {
		free(c);
		return -ENOMEM;
	}
	c->out_cap = out_cap;
	c->peer_alert = -1;
	*out = c;
	return 0;
}

int tls_conn_new(struct tls_identity *id, enum tls_role role, const char *expected_peer,
                 size_t out_cap, struct tls_conn **out)
{
	struct tls_conn *c = NULL;
	int ret;

	*out = NULL;
	if (!id || (role != TLS_CLIENT && role != TLS_SERVER))
		return -EINVAL;
	if (role == TLS_CLIENT &&
	    (!expected_peer || spiffe_check(expected_peer, strlen(expected_peer)) < 0))
		return -EINVAL;
	ret = conn_alloc(out_cap, &c);
	if (ret)
		return ret;
	c->role = role;
	if (role == TLS_CLIENT) {
		c->expected = strdup(expected_peer);
		if (!c->expected) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	c->ssl = wolfSSL_new(id->ctx[role]);
	if (!c->ssl) {
		ret = -ENOMEM;
		goto fail;
	}
	if (wolfSSL_UseALPN(c->ssl, (char *)"h2", 2, WOLFSSL_ALPN_FAILED_ON_MISMATCH) !=
	    WOLFSSL_SUCCESS) {
		ret = -EIO;
		goto fail;
	}
	wolfSSL_SetIOReadCtx(c->ssl, c);
	wolfSSL_SetIOWriteCtx(c->ssl, c);
	wolfSSL_SetCertCbCtx(c->ssl, c);
	c->id = tls_identity_ref(id);
	*out = c;
	return 0;
fail:
	tls_conn_free(c);
	return ret;
}

#ifdef AMBIT_FUZZ
int tls_conn_new_cleartext(size_t out_cap, const char *peer_id, struct tls_conn **out)
{
	struct tls_conn *c;
	int ret = conn_alloc(out_cap, &c);

	if (ret)
		return ret;
	c->cleartext = c->established = true;
	c->peer_id = strdup(peer_id);
	if (!c->peer_id) {
		tls_conn_free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}
#endif

void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	if (c->ssl)
		wolfSSL_free(c->ssl);
	tls_identity_unref(c->id);
	free(c->expected);
	free(c->peer_id);
	free(c->out);
	free(c);
}

void tls_conn_input(struct tls_conn *c, const uint8_t *buf, size_t len)
{
	c->in = buf;
	c->in_len = len;
}

size_t tls_conn_input_left(const struct tls_conn *c)
{
	return c->in_len;
}

/* Turn a wolfSSL error into a failure reason, keeping one set earlier by
 * the verify callback or the sniffer. */
static void classify(struct tls_conn *c, int err)
{
	WOLFSSL_ALERT_HISTORY h;

	c->failed = true;
	if (wolfSSL_get_alert_history(c->ssl, &h) == WOLFSSL_SUCCESS && h.last_rx.code > 0)
		c->peer_alert = h.last_rx.code;
	switch (err) {
	case VERSION_ERROR:
		set_fail(c, TLS_FAIL_PROTOCOL_VERSION);
		break;
	case UNKNOWN_ALPN_PROTOCOL_NAME_E:
		set_fail(c, TLS_FAIL_ALPN);
		break;
	case NO_PEER_CERT:
		set_fail(c, TLS_FAIL_NO_PEER_CERT);
		break;
	case FATAL_ERROR:
		set_fail(c, TLS_FAIL_PEER_ALERT);
		break;
	case ASN_NO_SIGNER_E:
	case ASN_AFTER_DATE_E:
	case ASN_BEFORE_DATE_E:
		set_fail(c, fail_from_verify(err));
		break;
	case SOCKET_PEER_CLOSED_E:
	case ZERO_RETURN:
		set_fail(c, TLS_FAIL_CLOSED);
		break;
	case MEMORY_E:
		set_fail(c, TLS_FAIL_INTERNAL);
		break;
	default:
		set_fail(c, TLS_FAIL_HANDSHAKE);
		break;
	}
}

int tls_conn_handshake(struct tls_conn *c)
{
	char *proto = NULL;
	unsigned short plen = 0;
	int ret, err;

	if (c->failed)
		return -EPROTO;
	if (c->established)
		return 0;
	ret = c->role == TLS_CLIENT ? wolfSSL_connect(c->ssl) : wolfSSL_accept(c->ssl);
	if (ret != WOLFSSL_SUCCESS) {
		err = wolfSSL_get_error(c->ssl, ret);
		if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
			if (c->fail) { /* the sniffer refused the input */
				c->failed = true;
				return -EPROTO;
			}
			return -EAGAIN;
		}
		classify(c, err);
		return -EPROTO;
	}
	if (wolfSSL_ALPN_GetProtocol(c->ssl, &proto, &plen) != WOLFSSL_SUCCESS || plen != 2 ||
	    memcmp(proto, "h2", 2) != 0) {
		c->failed = true;
		set_fail(c, TLS_FAIL_ALPN);
		/* Tell the peer why before the caller closes. */
		wolfSSL_shutdown(c->ssl);
		return -EPROTO;
	}
	if (!c->peer_id) { /* the verify callback never saw a leaf */
		c->failed = true;
		set_fail(c, TLS_FAIL_NO_PEER_CERT);
		return -EPROTO;
	}
	c->established = true;
	return 0;
}

int tls_conn_established(const struct tls_conn *c)
{
	return c->established;
}

ssize_t tls_conn_read(struct tls_conn *c, uint8_t *buf, size_t len)
{
	int ret, err;

	if (c->failed)
		return -EPROTO;
	if (!c->established)
		return -EAGAIN;
	if (len > INT32_MAX)
		len = INT32_MAX;
	if (c->cleartext) {
		if (c->in_len == 0)
			return -EAGAIN;
		if (len > c->in_len)
			len = c->in_len;
		memcpy(buf, c->in, len);
		c->in += len;
		c->in_len -= len;
		return (ssize_t)len;
	}
	ret = wolfSSL_read(c->ssl, buf, (int)len);
	if (ret > 0)
		return ret;
	err = wolfSSL_get_error(c->ssl, ret);
	if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
		return -EAGAIN;
	if (err == WOLFSSL_ERROR_ZERO_RETURN || err == ZERO_RETURN)
		return 0;
	classify(c, err);
	return -EPROTO;
}

size_t tls_conn_write_room(const struct tls_conn *c)
{
	size_t f = ring_free(c), records;

	if (c->failed || f <= OUT_RESERVE + TLS_RECORD_OVERHEAD)
		return 0;
	f -= OUT_RESERVE;
	if (c->cleartext)
		return f;
	records = f / (TLS_RECORD_MAX + TLS_RECORD_OVERHEAD) + 1;
	return f - records * TLS_RECORD_OVERHEAD;
}

int tls_conn_write(struct tls_conn *c, const uint8_t *buf, size_t len)
{
	int ret;

	if (c->failed || !c->established)
		return -EPROTO;
	if (len == 0)
		return 0;
	if (len > tls_conn_write_room(c))
		return -ENOBUFS;
	if (c->cleartext) {
		ring_put(c, buf, len);
		return 0;
	}
	ret = wolfSSL_write(c->ssl, buf, (int)len);
	if (ret == (int)len)
		return 0;
	classify(c, wolfSSL_get_error(c->ssl, ret));
	return -EPROTO;
}

int tls_conn_shutdown(struct tls_conn *c)
{
	if (c->failed)
		return -EPROTO;
	if (c->cleartext || !c->established)
		return 0;
	wolfSSL_shutdown(c->ssl); /* queues close_notify; no answer awaited */
	return 0;
}

int tls_conn_pending_out(const struct tls_conn *c, struct iovec iov[2])
{
	size_t first;

	if (c->out_len == 0)
		return 0;
	first = c->out_cap - c->out_head;
	if (first >= c->out_len) {
		iov[0].iov_base = c->out + c->out_head;
		iov[0].iov_len = c->out_len;
		return 1;
	}
	iov[0].iov_base = c->out + c->out_head;
	iov[0].iov_len = first;
	iov[1].iov_base = c->out;
	iov[1].iov_len = c->out_len - first;
	return 2;
}

size_t tls_conn_out_len(const struct tls_conn *c)
{
	return c->out_len;
}

void tls_conn_out_done(struct tls_conn *c, size_t n)
{
	if (n > c->out_len)
		n = c->out_len;
	c->out_head = (c->out_head + n) % c->out_cap;
	c->out_len -= n;
	if (c->out_len == 0)
		c->out_head = 0; /* next burst starts contiguous */
}

enum tls_fail tls_conn_failure(const struct tls_conn *c)
{
	return c->fail;
}

int tls_conn_peer_alert(const struct tls_conn *c)
{
	return c->peer_alert;
}

const char *tls_conn_peer_id(const struct tls_conn *c)
{
	return c->established ? c->peer_id : NULL;
}

int tls_conn_peer_fingerprint(const struct tls_conn *c, uint8_t out[32])
{
	if (!c->established || !c->peer_id || c->cleartext)
		return -ENOENT;
	memcpy(out, c->peer_fp, 32);
	return 0;
}

const char *tls_conn_cipher(const struct tls_conn *c)
{
	if (!c->established || c->cleartext)
		return NULL;
	return wolfSSL_get_cipher_name(c->ssl);
}
