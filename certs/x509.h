/*
 * x509: reading certificates that arrive from outside — files, peers in a
 * TLS handshake — and deciding whether they form a valid mesh identity.
 *
 * x509_parse() turns one DER certificate into a flat struct x509_cert (no
 * pointers into the input, so the input may be freed afterwards).  It uses
 * wolfSSL's parser for the overall structure and a bounds-checked DER cursor
 * (certs/der.h) for what wolfSSL 5.5.4 does not keep: URI SANs as written,
 * URI name constraints, raw names and the validity window.
 * x509_verify_chain() checks leaf -> intermediates -> root at a given time,
 * including URI name constraints, which wolfSSL's own verifier ignores.
 * spiffe_id_parse() validates `spiffe://<td>/ns/<ns>/sa/<sa>` by the SPIFFE
 * ID rules.  All three read untrusted bytes; tests/fuzz/fuzz_x509.c covers
 * them.
 */
#ifndef AMBIT_CERTS_X509_H
#define AMBIT_CERTS_X509_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certs/err.h"

/* SPIFFE limits: a whole ID is at most 2048 bytes, a trust domain 255. */
#define SPIFFE_ID_MAX  2048
#define SPIFFE_TD_MAX  255
#define SPIFFE_SEG_MAX 253 /* our cap for one of ns / sa: a DNS subdomain */

struct spiffe_id {
	char td[SPIFFE_TD_MAX + 1];
	char ns[SPIFFE_SEG_MAX + 1];
	char sa[SPIFFE_SEG_MAX + 1];
};

/* Parse s[0..len) (need not be NUL-terminated) as exactly
 * `spiffe://<td>/ns/<ns>/sa/<sa>`.  The trust domain holds only [a-z0-9._-];
 * path segments only [a-zA-Z0-9._-], are non-empty and not "." or "..";
 * no percent-encoding, query, fragment, port, userinfo or trailing slash.
 * Returns 0, or -EINVAL with *why (if why != NULL) set to a static reason. */
int spiffe_id_parse(const char *s, size_t len, struct spiffe_id *out, const char **why);

/* Write the ID as a NUL-terminated URI into buf.  Returns its length, or
 * -ENOSPC when size is too small, -EINVAL when a field is not valid. */
int spiffe_id_format(const struct spiffe_id *id, char *buf, size_t size);

/* Key usage bits (the values wolfSSL uses). */
#define X509_KU_DIGITAL_SIGNATURE 0x0080
#define X509_KU_KEY_ENCIPHERMENT  0x0020
#define X509_KU_KEY_AGREEMENT     0x0008
#define X509_KU_KEY_CERT_SIGN     0x0004
#define X509_KU_CRL_SIGN          0x0002

#define X509_MAX_URIS    4
#define X509_URI_MAX     512
#define X509_MAX_DNS     4
#define X509_DNS_MAX     256
#define X509_MAX_NC      4
#define X509_NC_MAX      256
#define X509_NAME_MAX    336
#define X509_RAWNAME_MAX 1024
#define X509_SPKI_MAX    600

/* One parsed certificate; owns nothing, copies everything it keeps. */
struct x509_cert {
	char subject[X509_NAME_MAX]; /* "/O=ambit/CN=..." as wolfSSL prints it */
	char issuer[X509_NAME_MAX];
	uint8_t subject_raw[X509_RAWNAME_MAX]; /* Name DER, for issuer matching */
	size_t subject_raw_len;
	uint8_t issuer_raw[X509_RAWNAME_MAX];
	size_t issuer_raw_len;
	char serial_hex[2 * 32 + 1];
	int64_t not_before, not_after; /* Unix seconds */
	bool is_ca;
	int path_len;                /* -1 when absent */
	bool has_key_usage;          /* false: any usage */
	unsigned key_usage;          /* X509_KU_* */
	char key_type[32];           /* "ECDSA P-256", "RSA", ... */
	uint32_t key_oid;            /* wolfSSL key OID sum (ECDSAk, RSAk) */
	bool self_signed;            /* subject == issuer */
	uint8_t spki[X509_SPKI_MAX]; /* SubjectPublicKeyInfo DER */
	size_t spki_len;
	size_t n_uris; /* URI SANs, printable ASCII only */
	char uris[X509_MAX_URIS][X509_URI_MAX];
	size_t n_dns;
	char dns[X509_MAX_DNS][X509_DNS_MAX];
	size_t n_other_sans; /* IP, email, ... (counted, not kept) */
	bool has_name_constraints;
	bool nc_critical;
	size_t n_nc_permitted_uri, n_nc_excluded_uri;
	char nc_permitted_uri[X509_MAX_NC][X509_NC_MAX];
	char nc_excluded_uri[X509_MAX_NC][X509_NC_MAX];
	size_t n_nc_other; /* subtrees of other name types (not enforced) */
};

/* Parse one DER certificate.  Returns 0, -EBADMSG for malformed input,
 * -E2BIG when a field exceeds the limits above, -EINVAL for NULL/empty. */
int x509_parse(const uint8_t *der, size_t len, struct x509_cert *out, struct certs_err *err);

/* A borrowed DER buffer. */
struct x509_buf {
	const uint8_t *der;
	size_t len;
};

/* The certificates in a file's bytes: PEM text with one or more
 * CERTIFICATE blocks (other blocks are skipped), or one DER certificate.
 * out[i].der points into one allocation returned in *storage (caller frees
 * it with free()).  Returns the number of certificates (>= 1), -EBADMSG when
 * there is none or a block does not decode, -E2BIG when more than max. */
int x509_load_certs(const uint8_t *buf, size_t len, struct x509_buf *out, size_t max,
                    uint8_t **storage, struct certs_err *err);

#define X509_CHAIN_MAX 4

/* Verify chain[0] (leaf) -> chain[1..n) (intermediates, each issuing the one
 * before) -> root, at time now (Unix seconds; 0 means the current time).
 * Checks issuer names, ECDSA/RSA signatures, validity windows, CA flag,
 * keyCertSign, path length and URI name constraints of every CA above a
 * certificate.  The root must be self-signed.  Returns 0, -EKEYREJECTED
 * (bad signature or name mismatch), -EKEYEXPIRED (outside validity),
 * -EPERM (not a CA, path length, name constraints), -EBADMSG (parse). */
int x509_verify_chain(const struct x509_buf *chain, size_t n, const struct x509_buf *root,
                      int64_t now, struct certs_err *err);

/* The SPIFFE identity of an X.509-SVID: exactly one URI SAN, a valid
 * SPIFFE ID, not a CA.  When td is non-NULL the ID must be in that trust
 * domain.  Returns 0, -EINVAL (no/too many URIs, bad ID, CA), -EPERM (other
 * trust domain). */
int x509_svid_id(const struct x509_cert *leaf, const char *td, struct spiffe_id *out,
                 struct certs_err *err);

/* The identity of a TLS peer whose chain wolfSSL has already verified
 * (signatures, validity, CA flags): parse the leaf and, when given, the
 * intermediate that issued it; apply x509_svid_id(leaf, td) and the
 * intermediate's URI name constraints, which wolfSSL 5.5.4 does not
 * enforce.  No signature work, a few microseconds.  Returns 0 or the
 * -errno of x509_parse / x509_svid_id, -EPERM for a name-constraint
 * violation. */
int x509_peer_id(const struct x509_buf *leaf, const struct x509_buf *issuer, const char *td,
                 struct spiffe_id *out, struct certs_err *err);

/* RFC 5280 URI name-constraint match: does uri's host equal base (or, for
 * a base starting with '.', lie below it)?  Case-insensitive. */
bool x509_uri_in_subtree(const char *uri, const char *base);

#endif
