/*
 * ca: a certificate authority of the mesh PKI — a CA certificate with its
 * ECDSA P-256 private key — and the issuing of certificates from it.
 *
 * Two kinds exist: the long-lived root (self-signed, kept off the nodes) and
 * one intermediate per node (CA:TRUE, pathlen 0, signed by the root, name-
 * constrained to the trust domain's spiffe:// URIs).  A node proxy loads its
 * intermediate with ca_load() and hands it to svid_issue().  The trust
 * domain of a CA is read from its own `spiffe://<td>` URI SAN.
 *
 * A struct ca owns its key in locked memory (certs/secmem.h); ca_free()
 * wipes it.  A struct ca is read-only after creation, so several threads
 * may issue from one CA at the same time.
 */
#ifndef AMBIT_CERTS_CA_H
#define AMBIT_CERTS_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certs/err.h"
#include "certs/x509.h"

struct ca;

/* Lifetimes used by the CLI when none is given. */
#define CA_ROOT_DAYS_DEFAULT  3650
#define CA_NODE_HOURS_DEFAULT 720
/* notBefore is set this far in the past to absorb clock skew between nodes. */
#define CA_BACKDATE_SECONDS 300

/* Load a CA from certificate and key bytes, each PEM or DER (SEC1 or
 * PKCS#8 EC key).  Fails with -EKEYREJECTED when the key does not belong
 * to the certificate, -EPERM when the certificate is not a CA, -EBADMSG for
 * malformed input.  On success *out is owned by the caller (ca_free). */
int ca_load(const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len,
            struct ca **out, struct certs_err *err);

/* Does the private key in key (PEM or DER) belong to the certificate cert
 * (DER)?  Returns 0, -EKEYREJECTED when it does not, -EBADMSG when either
 * does not decode. */
int ca_key_matches(const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len,
                   struct certs_err *err);

/* ca_load() from two files. */
int ca_load_files(const char *cert_path, const char *key_path, struct ca **out,
                  struct certs_err *err);

/* A new self-signed root for trust domain td, valid from now - backdate for
 * days days (now: Unix seconds, 0 = current time). */
int ca_create_root(const char *td, unsigned days, int64_t now, struct ca **out,
                   struct certs_err *err);

/* A new intermediate for node name (1..63 of [A-Za-z0-9._-]) signed by
 * root, valid for hours hours but never past the root's notAfter.  Carries
 * a critical nameConstraints extension permitting only URIs whose host is
 * the trust domain. */
int ca_issue_node(const struct ca *root, const char *node, unsigned hours, int64_t now,
                  struct ca **out, struct certs_err *err);

/* Write the certificate (mode 0644) and key (mode 0600) as PEM, atomically.
 * key_path may be NULL to write the certificate only. */
int ca_save(const struct ca *ca, const char *cert_path, const char *key_path,
            struct certs_err *err);

/* The CA's certificate (DER) and its parsed form; valid while ca lives. */
struct x509_buf ca_cert_der(const struct ca *ca);
const struct x509_cert *ca_cert(const struct ca *ca);
/* The CA's trust domain ("" when its certificate has no spiffe:// SAN). */
const char *ca_trust_domain(const struct ca *ca);

/* Wipe the key and free; NULL is a no-op. */
void ca_free(struct ca *ca);

/* What a certificate issued by ca_sign() looks like. */
struct ca_spec {
	const char *org;    /* subject O (may be NULL) */
	const char *cn;     /* subject CN (may be NULL) */
	const char *uri;    /* the one URI SAN, or NULL */
	int64_t not_before; /* Unix seconds */
	int64_t not_after;
	bool is_ca;
	int path_len;              /* CA only; -1 = no limit */
	const char *key_usage;     /* wolfSSL wc_SetKeyUsage() list */
	const char *ext_key_usage; /* wc_SetExtKeyUsage() list, or NULL */
	const char *nc_uri;        /* permitted URI name-constraint base, or NULL */
};

/* Issue a certificate for the public half of subject_key (a wolfSSL
 * ecc_key *, void here so this header does not pull in wolfSSL).  issuer
 * NULL means self-signed with subject_key.  *der is malloc()ed, caller
 * frees.  For svid.c and tests; most callers want ca_issue_node() or
 * svid_issue(). */
int ca_sign(const struct ca *issuer, const struct ca_spec *spec, void *subject_key, uint8_t **der,
            size_t *der_len, struct certs_err *err);

/* DER -> PEM ("CERTIFICATE" or "EC PRIVATE KEY" per type below) into a new
 * buffer from alloc (malloc or secmem_alloc), NUL-terminated. */
enum ca_pem_type { CA_PEM_CERT, CA_PEM_EC_KEY };
int ca_der_to_pem(const uint8_t *der, size_t len, enum ca_pem_type type, bool secret, char **pem,
                  size_t *pem_len, struct certs_err *err);

#endif
