/*
 * svid: a workload's X.509-SVID, issued in memory by a node's CA.
 *
 * svid_issue() makes a fresh ECDSA P-256 key and a leaf certificate with the
 * one URI SAN `spiffe://<td>/ns/<ns>/sa/<sa>` (digitalSignature, serverAuth
 * + clientAuth, CA:FALSE), signed by the node intermediate.  The private key
 * exists only in memory: its bytes sit in locked, undumpable pages
 * (certs/secmem.h) and are zeroed by svid_wipe_key() and svid_free().
 * Nothing here logs key material.  A struct svid is immutable after issue
 * apart from wiping, so readers on other threads need no lock as long as
 * the owner frees it only after they are done (node-proxy refcounts it).
 */
#ifndef AMBIT_CERTS_SVID_H
#define AMBIT_CERTS_SVID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certs/ca.h"
#include "certs/err.h"
#include "certs/x509.h"

#define SVID_LIFETIME_DEFAULT (24 * 3600)

struct svid {
	struct spiffe_id id;
	char uri[SPIFFE_ID_MAX + 1];
	int64_t not_before, not_after; /* Unix seconds */
	int64_t renew_at;              /* half-life: not_before + lifetime / 2 */
	uint8_t *cert_der;             /* the leaf */
	size_t cert_der_len;
	char *cert_pem;
	size_t cert_pem_len;
	uint8_t *chain_der; /* leaf DER followed by the intermediate's DER */
	size_t chain_der_len;
	char *chain_pem; /* leaf then intermediate, PEM */
	size_t chain_pem_len;
	uint8_t *key_der; /* SEC1 ECPrivateKey, locked memory */
	size_t key_der_len;
	char *key_pem; /* "EC PRIVATE KEY" PEM, same locked page as key_der */
	size_t key_pem_len;
	bool key_locked; /* mlock succeeded */
};

/* Issue an SVID for id from issuer (a node intermediate loaded with
 * ca_load*), valid from now - CA_BACKDATE_SECONDS for lifetime seconds
 * (0 = SVID_LIFETIME_DEFAULT), cut at the issuer's notAfter.  now = 0
 * means the current time; a past now gives an already expired certificate
 * (used by tests).  id's trust domain must equal the issuer's.  On success
 * the caller owns *out and frees it with svid_free().  Returns 0 or -errno
 * (-EINVAL bad id/lifetime, -EPERM other trust domain, -EIO crypto). */
int svid_issue(const struct ca *issuer, const struct spiffe_id *id, unsigned lifetime, int64_t now,
               struct svid **out, struct certs_err *err);

/* Zero the key bytes now (DER and PEM); the certificate stays usable for
 * display.  Idempotent. */
void svid_wipe_key(struct svid *s);

/* Wipe and free everything; NULL is a no-op. */
void svid_free(struct svid *s);

#endif
