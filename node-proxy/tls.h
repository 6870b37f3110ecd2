/*
 * tls: the mutual-TLS half of HBONE, without I/O.
 *
 * A tls_identity is one workload's X.509-SVID (chain + key), the mesh
 * trust anchors and its trust domain, turned into a wolfSSL client context
 * and a server context.  It is immutable and reference counted: rotation
 * builds a new identity and swaps it into a tls_identity_slot; connections
 * already open keep a reference to the one they started with.
 *
 * A tls_conn is one TLS 1.3 connection (AES-GCM suites, ALPN "h2" required
 * both ways, both sides present certificates) over in-memory byte queues.
 * The caller hands received ciphertext in with tls_conn_input() and takes
 * ciphertext to send from a fixed ring (tls_conn_pending_out /
 * tls_conn_out_done); nothing blocks and nothing touches a socket.  Peer
 * checks: the chain must lead to the mesh root; a client requires the
 * server's single URI SAN to equal the expected SPIFFE ID; a server
 * requires the client's URI SAN to be a spiffe:// ID of its trust domain.
 * A refused handshake carries one enum tls_fail reason for the counters.
 */
#ifndef AMBIT_TLS_H
#define AMBIT_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

enum tls_role {
	TLS_CLIENT = 0,
	TLS_SERVER = 1,
};

/* Why a handshake (or an established connection) failed.  Stable order:
 * the metrics code indexes counters with it. */
enum tls_fail {
	TLS_FAIL_NONE = 0,
	TLS_FAIL_UNKNOWN_CA,       /* chain does not lead to the mesh root */
	TLS_FAIL_EXPIRED,          /* a certificate is expired or not yet valid */
	TLS_FAIL_BAD_CERT,         /* malformed certificate, bad signature, key usage */
	TLS_FAIL_WRONG_IDENTITY,   /* SAN is not the expected / in-domain SPIFFE ID */
	TLS_FAIL_NO_PEER_CERT,     /* client presented no certificate */
	TLS_FAIL_ALPN,             /* peer did not offer or select "h2" */
	TLS_FAIL_PROTOCOL_VERSION, /* peer is not TLS 1.3 */
	TLS_FAIL_NOT_TLS,          /* the first bytes are not a TLS handshake (plaintext) */
	TLS_FAIL_PEER_ALERT,       /* the peer refused us with a fatal alert */
	TLS_FAIL_HANDSHAKE,        /* any other handshake or record error */
	TLS_FAIL_CLOSED,           /* the peer closed during the handshake */
	TLS_FAIL_INTERNAL,         /* allocation or library failure on our side */
	TLS_FAIL__COUNT
};

/* Short stable name ("unknown_ca", "expired", ...) for logs and labels. */
const char *tls_fail_str(enum tls_fail f);

/* Input of tls_identity_new.  Every buffer may be DER or PEM (detected by
 * a leading "-----BEGIN"); all are copied, the caller keeps ownership. */
struct tls_identity_config {
	const uint8_t *chain; /* leaf first, then intermediates (concatenated) */
	size_t chain_len;
	const uint8_t *key; /* the leaf's EC P-256 private key (SEC1 or PKCS#8) */
	size_t key_len;
	const uint8_t *roots; /* mesh trust anchor(s) */
	size_t roots_len;
	/* Trust domain accepted from clients; NULL: the leaf's own. */
	const char *trust_domain;
};

struct tls_identity;
struct tls_conn;

/* Build an identity (refcount 1).  Checks that the key matches the leaf and
 * that the leaf carries exactly one spiffe:// URI SAN.  Returns 0 or -errno
 * (-EINVAL bad input, -ENOMEM).  The private key is wiped from our copies. */
int tls_identity_new(const struct tls_identity_config *cfg, struct tls_identity **out);
/* Take / drop a reference; safe from any thread.  unref(NULL) is a no-op. */
struct tls_identity *tls_identity_ref(struct tls_identity *id);
void tls_identity_unref(struct tls_identity *id);
/* The leaf's SPIFFE ID and trust domain; valid while a reference is held. */
const char *tls_identity_spiffe_id(const struct tls_identity *id);
const char *tls_identity_trust_domain(const struct tls_identity *id);

/* The rotation point: holds the current identity of one service account.
 * get() returns a new reference (caller unrefs), set() takes over the
 * caller's reference and drops the slot's old one.  Thread safe. */
struct tls_identity_slot;
int tls_identity_slot_new(struct tls_identity *initial, struct tls_identity_slot **out);
struct tls_identity *tls_identity_slot_get(struct tls_identity_slot *s);
void tls_identity_slot_set(struct tls_identity_slot *s, struct tls_identity *id);
void tls_identity_slot_free(struct tls_identity_slot *s);

/* The SPIFFE ID of a DER certificate: its single URI SAN, which must be a
 * well-formed spiffe:// ID, NUL-terminated into @out.  Returns 0, -EBADMSG
 * (not a certificate), -EINVAL (no, several or malformed URI SANs),
 * -ENOSPC (@outlen too small).  The same check peers go through. */
int tls_spiffe_id_from_der(const uint8_t *der, size_t len, char *out, size_t outlen);

/* Smallest accepted out_cap; also what one plaintext record may cost. */
#define TLS_RECORD_MAX      16384
#define TLS_RECORD_OVERHEAD 64
#define TLS_OUT_CAP_MIN     (4 * (TLS_RECORD_MAX + TLS_RECORD_OVERHEAD))

/* New connection on @id (a reference is taken).  @expected_peer: for a
 * client the exact SPIFFE ID the server must present (required); ignored
 * by a server.  @out_cap: size of the ciphertext ring (0: 256 KiB; at least
 * TLS_OUT_CAP_MIN).  Returns 0 or -errno. */
int tls_conn_new(struct tls_identity *id, enum tls_role role, const char *expected_peer,
                 size_t out_cap, struct tls_conn **out);
void tls_conn_free(struct tls_conn *c);

/* Offer received ciphertext.  The bytes are read in place by the next
 * tls_conn_handshake / tls_conn_read calls; the caller keeps @buf valid
 * until tls_conn_input_left() is 0 (tls_conn_read drains it fully unless it
 * returns plaintext first). */
void tls_conn_input(struct tls_conn *c, const uint8_t *buf, size_t len);
size_t tls_conn_input_left(const struct tls_conn *c);

/* Advance the handshake: 0 established, -EAGAIN needs more input (check
 * pending_out), -EPROTO refused (see tls_conn_failure). */
int tls_conn_handshake(struct tls_conn *c);
int tls_conn_established(const struct tls_conn *c);

/* Decrypt into @buf: > 0 bytes, -EAGAIN no complete record left, 0 the peer
 * sent close_notify, -EPROTO fatal (tls_conn_failure says why). */
ssize_t tls_conn_read(struct tls_conn *c, uint8_t *buf, size_t len);
/* Encrypt all of @buf (any length) into the ring.  Returns 0, -ENOBUFS when
 * tls_conn_write_room() is smaller than @len (nothing written), -EPROTO. */
int tls_conn_write(struct tls_conn *c, const uint8_t *buf, size_t len);
/* Plaintext bytes tls_conn_write accepts now, record overhead deducted. */
size_t tls_conn_write_room(const struct tls_conn *c);
/* Queue close_notify.  0 or -EPROTO. */
int tls_conn_shutdown(struct tls_conn *c);

/* Ciphertext waiting to be sent, oldest first, in up to two pieces; returns
 * the number of iovecs filled (0: nothing).  The bytes stay valid and in
 * place until consumed with tls_conn_out_done, whatever else is called
 * meanwhile: a send may stay in flight across other calls. */
int tls_conn_pending_out(const struct tls_conn *c, struct iovec iov[2]);
size_t tls_conn_out_len(const struct tls_conn *c);
void tls_conn_out_done(struct tls_conn *c, size_t n);

enum tls_fail tls_conn_failure(const struct tls_conn *c);
/* TLS alert description we received (-1: none), for logs. */
int tls_conn_peer_alert(const struct tls_conn *c);
/* The peer's SPIFFE ID once verified, else NULL.  Valid until free. */
const char *tls_conn_peer_id(const struct tls_conn *c);
/* SHA-256 of the peer's leaf certificate (DER) into @out once verified:
 * 0, or -ENOENT before that.  For logs and rotation checks. */
int tls_conn_peer_fingerprint(const struct tls_conn *c, uint8_t out[32]);
/* Negotiated cipher suite name, NULL before the handshake. */
const char *tls_conn_cipher(const struct tls_conn *c);

/* Cleartext pass-through connection for fuzzing the HTTP/2 layer without
 * TLS: input is returned by read, writes go to the ring unchanged.  Only in
 * fuzz builds (AMBIT_FUZZ), never in the library. */
#ifdef AMBIT_FUZZ
int tls_conn_new_cleartext(size_t out_cap, const char *peer_id, struct tls_conn **out);
#endif

#endif
