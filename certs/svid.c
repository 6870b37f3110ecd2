/* svid: in-memory X.509-SVID issuing; see svid.h. */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs/secmem.h"
#include "certs/svid.h"

/* A SEC1 P-256 key is 121 bytes, its PEM about 230: both share one locked
 * page so a node with many service accounts stays within RLIMIT_MEMLOCK. */
#define KEY_DER_CAP 256
#define KEY_PEM_CAP 512

void svid_wipe_key(struct svid *s)
{
	if (!s)
		return;
	if (s->key_der)
		explicit_bzero(s->key_der, KEY_DER_CAP + KEY_PEM_CAP);
}

void svid_free(struct svid *s)
{
	if (!s)
		return;
	svid_wipe_key(s);
	secmem_free(s->key_der);
	free(s->cert_der);
	free(s->cert_pem);
	free(s->chain_der);
	free(s->chain_pem);
	free(s);
}

int svid_issue(const struct ca *issuer, const struct spiffe_id *id, unsigned lifetime, int64_t now,
               struct svid **out, struct certs_err *err)
{
	const struct x509_cert *ic = ca_cert(issuer);
	struct x509_buf idr = ca_cert_der(issuer);
	struct ca_spec spec = { 0 };
	struct svid *s;
	ecc_key *key = NULL;
	char *ipem = NULL;
	size_t ipem_len;
	WC_RNG rng;
	int r, w, n;

	*out = NULL;
	if (!ic->is_ca)
		return certs_errf(err, -EINVAL, "issuer is not a CA");
	if (strcmp(id->td, ca_trust_domain(issuer)) != 0)
		return certs_errf(err, -EPERM, "trust domain %s is not the issuer's (%s)", id->td,
		                  ca_trust_domain(issuer));
	if (lifetime == 0)
		lifetime = SVID_LIFETIME_DEFAULT;
	if (now == 0)
		now = (int64_t)time(NULL);
	s = calloc(1, sizeof(*s));
	if (!s)
		return certs_errf(err, -ENOMEM, "out of memory");
	s->id = *id;
	n = spiffe_id_format(id, s->uri, sizeof(s->uri));
	if (n < 0) {
		r = certs_errf(err, -EINVAL, "invalid SPIFFE ID fields");
		goto fail;
	}
	key = secmem_alloc(sizeof(*key));
	s->key_der = secmem_alloc(KEY_DER_CAP + KEY_PEM_CAP);
	if (!key || !s->key_der) {
		r = certs_errf(err, -ENOMEM, "cannot allocate key memory");
		goto fail;
	}
	s->key_locked = secmem_locked(key) && secmem_locked(s->key_der);
	if ((w = wc_InitRng(&rng)) != 0) {
		r = certs_errf(err, -EIO, "RNG: %s", certs_wolf_str(w));
		goto fail;
	}
	w = wc_ecc_init(key);
	if (w == 0)
		w = wc_ecc_make_key_ex(&rng, 32, key, ECC_SECP256R1);
	wc_FreeRng(&rng);
	if (w != 0) {
		r = certs_errf(err, -EIO, "key generation failed: %s", certs_wolf_str(w));
		goto fail_key;
	}
	spec.org = "ambit";
	spec.cn = NULL;
	spec.uri = s->uri;
	spec.not_before = now - CA_BACKDATE_SECONDS;
	spec.not_after = now + (int64_t)lifetime;
	if (spec.not_after > ic->not_after)
		spec.not_after = ic->not_after;
	if (spec.not_before < ic->not_before)
		spec.not_before = ic->not_before;
	if (spec.not_after <= spec.not_before) {
		r = certs_errf(err, -EKEYEXPIRED, "issuer %s is expired at that time", ic->subject);
		goto fail_key;
	}
	spec.is_ca = false;
	spec.path_len = -1;
	spec.key_usage = "digitalSignature";
	spec.ext_key_usage = "serverAuth,clientAuth";
	r = ca_sign(issuer, &spec, key, &s->cert_der, &s->cert_der_len, err);
	if (r < 0)
		goto fail_key;
	s->not_before = spec.not_before;
	s->not_after = spec.not_after;
	s->renew_at = s->not_before + (s->not_after - s->not_before) / 2;

	w = wc_EccKeyToDer(key, s->key_der, KEY_DER_CAP);
	if (w <= 0) {
		r = certs_errf(err, -EIO, "key encoding failed: %s", certs_wolf_str(w));
		goto fail_key;
	}
	s->key_der_len = (size_t)w;
	s->key_pem = (char *)s->key_der + KEY_DER_CAP;
	w = wc_DerToPem(s->key_der, (word32)s->key_der_len, (byte *)s->key_pem, KEY_PEM_CAP - 1,
	                ECC_PRIVATEKEY_TYPE);
	if (w <= 0) {
		s->key_pem = NULL;
		r = certs_errf(err, -EIO, "key PEM encoding failed: %s", certs_wolf_str(w));
		goto fail_key;
	}
	s->key_pem[w] = '\0';
	s->key_pem_len = (size_t)w;
	r = ca_der_to_pem(s->cert_der, s->cert_der_len, CA_PEM_CERT, false, &s->cert_pem,
	                  &s->cert_pem_len, err);
	if (r < 0)
		goto fail_key;
	r = ca_der_to_pem(idr.der, idr.len, CA_PEM_CERT, false, &ipem, &ipem_len, err);
	if (r < 0)
		goto fail_key;
	s->chain_der = malloc(s->cert_der_len + idr.len);
	s->chain_pem = malloc(s->cert_pem_len + ipem_len + 1);
	if (!s->chain_der || !s->chain_pem) {
		r = certs_errf(err, -ENOMEM, "out of memory");
		goto fail_key;
	}
	memcpy(s->chain_der, s->cert_der, s->cert_der_len);
	memcpy(s->chain_der + s->cert_der_len, idr.der, idr.len);
	s->chain_der_len = s->cert_der_len + idr.len;
	memcpy(s->chain_pem, s->cert_pem, s->cert_pem_len);
	memcpy(s->chain_pem + s->cert_pem_len, ipem, ipem_len + 1);
	s->chain_pem_len = s->cert_pem_len + ipem_len;
	free(ipem);
	wc_ecc_free(key);
	secmem_free(key);
	*out = s;
	return 0;
fail_key:
	free(ipem);
	wc_ecc_free(key);
fail:
	secmem_free(key);
	svid_free(s);
	return r;
}
