/* ca: CA material and certificate issuing on wolfSSL's cert generation; see ca.h. */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/random.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs/ca.h"
#include "certs/der.h"
#include "certs/fileio.h"
#include "certs/secmem.h"

/* A generated certificate is well below this. */
#define CERT_BUF_MAX  4096
#define KEY_FILE_MAX  (64 * 1024)
#define CERT_FILE_MAX (1024 * 1024)

struct ca {
	uint8_t *der; /* malloc()ed */
	size_t der_len;
	struct x509_cert info;
	char td[SPIFFE_TD_MAX + 1];
	ecc_key *key; /* secmem */
	/* wolfSSL does not promise that signing with one ecc_key from several
	 * threads is safe; issuing is rare, so serialise it. */
	pthread_mutex_t sign_lock;
};

static const uint8_t OID_NAME_CONSTRAINTS[] = { 0x55, 0x1d, 0x1e };

void ca_free(struct ca *ca)
{
	if (!ca)
		return;
	if (ca->key) {
		wc_ecc_free(ca->key);
		secmem_free(ca->key);
	}
	free(ca->der);
	pthread_mutex_destroy(&ca->sign_lock);
	free(ca);
}

struct x509_buf ca_cert_der(const struct ca *ca)
{
	struct x509_buf b = { ca->der, ca->der_len };

	return b;
}

const struct x509_cert *ca_cert(const struct ca *ca)
{
	return &ca->info;
}

const char *ca_trust_domain(const struct ca *ca)
{
	return ca->td;
}

static bool td_valid(const char *td)
{
	size_t i, n = strlen(td);

	if (n == 0 || n > SPIFFE_TD_MAX)
		return false;
	for (i = 0; i < n; i++) {
		char c = td[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		      c == '_'))
			return false;
	}
	return true;
}

/* The trust domain a CA speaks for: its `spiffe://<td>` URI SAN. */
static void find_td(struct ca *ca)
{
	size_t i;

	ca->td[0] = '\0';
	for (i = 0; i < ca->info.n_uris; i++) {
		const char *u = ca->info.uris[i];

		if (strncmp(u, "spiffe://", 9) == 0 && td_valid(u + 9)) {
			snprintf(ca->td, sizeof(ca->td), "%s", u + 9);
			return;
		}
	}
}

static int new_key(WC_RNG *rng, ecc_key **out, struct certs_err *err)
{
	ecc_key *k = secmem_alloc(sizeof(*k));
	int w;

	*out = NULL;
	if (!k)
		return certs_errf(err, -ENOMEM, "cannot allocate key memory");
	w = wc_ecc_init(k);
	if (w == 0)
		w = wc_ecc_make_key_ex(rng, 32, k, ECC_SECP256R1);
	if (w != 0) {
		wc_ecc_free(k);
		secmem_free(k);
		return certs_errf(err, -EIO, "ECDSA P-256 key generation failed: %s",
		                  certs_wolf_str(w));
	}
	*out = k;
	return 0;
}

/* Time as a DER UTCTime (until 2049) or GeneralizedTime, tag and length
 * included, as wolfSSL's Cert.beforeDate wants it. */
static int put_time(int64_t t, byte *out, int *out_len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	char s[20];

	if (!gmtime_r(&tt, &tm))
		return -EINVAL;
	if (tm.tm_year + 1900 >= 1950 && tm.tm_year + 1900 < 2050) {
		strftime(s, sizeof(s), "%y%m%d%H%M%SZ", &tm);
		out[0] = DER_UTCTIME;
		out[1] = 13;
		memcpy(out + 2, s, 13);
		*out_len = 15;
	} else {
		if (tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0)
			return -EINVAL;
		strftime(s, sizeof(s), "%Y%m%d%H%M%SZ", &tm);
		out[0] = DER_GENTIME;
		out[1] = 15;
		memcpy(out + 2, s, 15);
		*out_len = 17;
	}
	return 0;
}

/* nameConstraints, critical, permitting URIs with host == base. */
static size_t nc_extension(const char *base, uint8_t *out)
{
	uint8_t tmp[600];
	size_t bl = strlen(base), n, gn, sub, perm, nc, oct, body;

	/* Sizes inside out: GeneralName, GeneralSubtree, [0], NameConstraints. */
	gn = der_hdr_len(bl) + bl;
	sub = der_hdr_len(gn) + gn;
	perm = der_hdr_len(sub) + sub;
	nc = der_hdr_len(perm) + perm;
	oct = der_hdr_len(nc) + nc;
	body = 2 + sizeof(OID_NAME_CONSTRAINTS) + 3 + oct;
	n = der_put_hdr(tmp, DER_SEQUENCE, body);
	tmp[n++] = DER_OID;
	tmp[n++] = sizeof(OID_NAME_CONSTRAINTS);
	memcpy(tmp + n, OID_NAME_CONSTRAINTS, sizeof(OID_NAME_CONSTRAINTS));
	n += sizeof(OID_NAME_CONSTRAINTS);
	tmp[n++] = DER_BOOLEAN;
	tmp[n++] = 1;
	tmp[n++] = 0xff;
	n += der_put_hdr(tmp + n, DER_OCTET_STRING, nc);
	n += der_put_hdr(tmp + n, DER_SEQUENCE, perm);
	n += der_put_hdr(tmp + n, DER_CTX_CONS(0), sub);
	n += der_put_hdr(tmp + n, DER_SEQUENCE, gn);
	n += der_put_hdr(tmp + n, DER_CTX(6), bl);
	memcpy(tmp + n, base, bl);
	n += bl;
	memcpy(out, tmp, n);
	return n;
}

/*
 * wolfSSL 5.5.4 (without WOLFSSL_ASN_TEMPLATE / WOLFSSL_CUSTOM_OID, as
 * Debian builds it) cannot write nameConstraints.  wc_MakeCert_ex() leaves
 * the unsigned TBSCertificate in buf and wc_SignCert_ex() signs whatever
 * TBS it is given, so the extension is appended to the TBS in between.
 * Returns the new TBS length or -errno.
 */
static int splice_extension(uint8_t *buf, size_t body, size_t cap, const uint8_t *ext,
                            size_t ext_len)
{
	struct der d = der_init(buf, body), in;
	struct der_tlv tbs, t, last = { 0 };
	const uint8_t *old = NULL;
	size_t prefix, old_len = 0, seq, a3, content, total, n;
	uint8_t *tmp;
	int r;

	if (der_expect(&d, DER_SEQUENCE, &tbs) < 0 || d.len != 0)
		return -EBADMSG;
	in = der_enter(&tbs);
	while ((r = der_next(&in, &t)) == 0)
		last = t;
	if (r != -ENODATA || !last.raw)
		return -EBADMSG;
	if (last.tag == DER_CTX_CONS(3)) {
		struct der e = der_enter(&last);
		struct der_tlv s;

		if (der_expect(&e, DER_SEQUENCE, &s) < 0 || e.len != 0)
			return -EBADMSG;
		old = s.val;
		old_len = s.len;
		prefix = (size_t)(last.raw - tbs.val);
	} else {
		prefix = tbs.len;
	}
	seq = old_len + ext_len;
	a3 = der_hdr_len(seq) + seq;
	content = prefix + der_hdr_len(a3) + a3;
	total = der_hdr_len(content) + content;
	if (total > cap)
		return -ENOSPC;
	tmp = malloc(total);
	if (!tmp)
		return -ENOMEM;
	n = der_put_hdr(tmp, DER_SEQUENCE, content);
	memcpy(tmp + n, tbs.val, prefix);
	n += prefix;
	n += der_put_hdr(tmp + n, DER_CTX_CONS(3), a3);
	n += der_put_hdr(tmp + n, DER_SEQUENCE, seq);
	if (old_len)
		memcpy(tmp + n, old, old_len);
	n += old_len;
	memcpy(tmp + n, ext, ext_len);
	n += ext_len;
	memcpy(buf, tmp, n);
	free(tmp);
	return (int)n;
}

/* GeneralNames with one URI, the raw form Cert.altNames holds. */
static int uri_altnames(const char *uri, byte *out, size_t cap)
{
	size_t ul = strlen(uri), inner = der_hdr_len(ul) + ul, n;

	if (der_hdr_len(inner) + inner > cap)
		return -E2BIG;
	n = der_put_hdr(out, DER_SEQUENCE, inner);
	n += der_put_hdr(out + n, DER_CTX(6), ul);
	memcpy(out + n, uri, ul);
	return (int)(n + ul);
}

int ca_sign(const struct ca *issuer, const struct ca_spec *spec, void *subject_key,
            uint8_t **der_out, size_t *der_len, struct certs_err *err)
{
	ecc_key *skey = subject_key;
	ecc_key *signer = issuer ? issuer->key : skey;
	WC_RNG rng;
	Cert *cert = NULL;
	uint8_t *buf = NULL;
	int w, r, body, alt, blen;

	*der_out = NULL;
	*der_len = 0;
	if (issuer && spec->not_after > issuer->info.not_after)
		return certs_errf(err, -EINVAL, "certificate would outlive its issuer %s",
		                  issuer->info.subject);
	w = wc_InitRng(&rng);
	if (w != 0)
		return certs_errf(err, -EIO, "RNG: %s", certs_wolf_str(w));
	cert = calloc(1, sizeof(*cert));
	buf = malloc(CERT_BUF_MAX);
	if (!cert || !buf) {
		r = certs_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if ((w = wc_InitCert(cert)) != 0)
		goto wolf_fail;
	cert->sigType = CTC_SHA256wECDSA;
	if (spec->org)
		snprintf(cert->subject.org, sizeof(cert->subject.org), "%s", spec->org);
	if (spec->cn)
		snprintf(cert->subject.commonName, sizeof(cert->subject.commonName), "%s",
		         spec->cn);
	cert->isCA = spec->is_ca;
	cert->basicConstSet = 1;
	if (spec->is_ca && spec->path_len >= 0) {
		cert->pathLen = (byte)spec->path_len;
		cert->pathLenSet = 1;
	}
	if (put_time(spec->not_before, cert->beforeDate, &cert->beforeDateSz) < 0 ||
	    put_time(spec->not_after, cert->afterDate, &cert->afterDateSz) < 0) {
		r = certs_errf(err, -EINVAL, "validity out of range");
		goto out;
	}
	if (spec->uri) {
		alt = uri_altnames(spec->uri, cert->altNames, sizeof(cert->altNames));
		if (alt < 0) {
			r = certs_errf(err, alt, "URI SAN too long");
			goto out;
		}
		cert->altNamesSz = alt;
	}
	if (issuer) {
		/* The issuer's subject bytes as they are, so name chaining is an
		 * exact match for every verifier. */
		if ((w = wc_SetIssuerRaw(cert, issuer->der, (int)issuer->der_len)) != 0)
			goto wolf_fail;
		cert->selfSigned = 0;
		if ((w = wc_SetAuthKeyIdFromCert(cert, issuer->der, (int)issuer->der_len)) != 0)
			goto wolf_fail;
	} else {
		if ((w = wc_SetAuthKeyIdFromPublicKey_ex(cert, ECC_TYPE, skey)) != 0)
			goto wolf_fail;
	}
	if ((w = wc_SetSubjectKeyIdFromPublicKey_ex(cert, ECC_TYPE, skey)) != 0)
		goto wolf_fail;
	if (spec->key_usage && (w = wc_SetKeyUsage(cert, spec->key_usage)) != 0)
		goto wolf_fail;
	if (spec->ext_key_usage && (w = wc_SetExtKeyUsage(cert, spec->ext_key_usage)) != 0)
		goto wolf_fail;
	body = wc_MakeCert_ex(cert, buf, CERT_BUF_MAX, ECC_TYPE, skey, &rng);
	if (body < 0) {
		w = body;
		goto wolf_fail;
	}
	if (spec->nc_uri) {
		uint8_t ext[600];
		size_t elen;

		if (strlen(spec->nc_uri) > 255) {
			r = certs_errf(err, -E2BIG, "name-constraint base too long");
			goto out;
		}
		elen = nc_extension(spec->nc_uri, ext);
		body = splice_extension(buf, (size_t)body, CERT_BUF_MAX - 128, ext, elen);
		if (body < 0) {
			r = certs_errf(err, body, "cannot add nameConstraints to the certificate");
			goto out;
		}
	}
	if (issuer)
		pthread_mutex_lock(&((struct ca *)issuer)->sign_lock);
	blen = wc_SignCert_ex(body, CTC_SHA256wECDSA, buf, CERT_BUF_MAX, ECC_TYPE, signer, &rng);
	if (issuer)
		pthread_mutex_unlock(&((struct ca *)issuer)->sign_lock);
	if (blen < 0) {
		w = blen;
		goto wolf_fail;
	}
	*der_out = buf;
	*der_len = (size_t)blen;
	buf = NULL;
	r = 0;
	goto out;
wolf_fail:
	r = certs_errf(err, -EIO, "certificate generation failed: %s", certs_wolf_str(w));
out:
	free(buf);
	free(cert);
	wc_FreeRng(&rng);
	return r;
}

int ca_der_to_pem(const uint8_t *der, size_t len, enum ca_pem_type type, bool secret, char **pem,
                  size_t *pem_len, struct certs_err *err)
{
	size_t cap = len * 4 / 3 + len / 48 + 128;
	char *out = secret ? secmem_alloc(cap) : malloc(cap);
	int w;

	*pem = NULL;
	*pem_len = 0;
	if (!out)
		return certs_errf(err, -ENOMEM, "out of memory");
	w = wc_DerToPem(der, (word32)len, (byte *)out, (word32)cap - 1,
	                type == CA_PEM_CERT ? CERT_TYPE : ECC_PRIVATEKEY_TYPE);
	if (w <= 0) {
		if (secret)
			secmem_free(out);
		else
			free(out);
		return certs_errf(err, -EIO, "PEM encoding failed: %s", certs_wolf_str(w));
	}
	out[w] = '\0';
	*pem = out;
	*pem_len = (size_t)w;
	return 0;
}

/* Parse der into a fresh struct ca (key still unset). */
static int ca_new(uint8_t *der, size_t len, struct ca **out, struct certs_err *err)
{
	struct ca *ca = calloc(1, sizeof(*ca));
	int r;

	*out = NULL;
	if (!ca) {
		free(der);
		return certs_errf(err, -ENOMEM, "out of memory");
	}
	pthread_mutex_init(&ca->sign_lock, NULL);
	ca->der = der;
	ca->der_len = len;
	r = x509_parse(der, len, &ca->info, err);
	if (r < 0) {
		ca_free(ca);
		return r;
	}
	find_td(ca);
	*out = ca;
	return 0;
}

int ca_create_root(const char *td, unsigned days, int64_t now, struct ca **out,
                   struct certs_err *err)
{
	struct ca_spec spec = { 0 };
	char uri[SPIFFE_TD_MAX + 16];
	ecc_key *key = NULL;
	struct ca *ca = NULL;
	uint8_t *der;
	size_t len;
	WC_RNG rng;
	int r, w;

	*out = NULL;
	if (!td_valid(td))
		return certs_errf(err, -EINVAL,
		                  "invalid trust domain '%s' (lowercase letters, digits, . - _)",
		                  td);
	if (days == 0 || days > 36500)
		return certs_errf(err, -EINVAL, "root lifetime must be 1..36500 days");
	if (now == 0)
		now = (int64_t)time(NULL);
	if ((w = wc_InitRng(&rng)) != 0)
		return certs_errf(err, -EIO, "RNG: %s", certs_wolf_str(w));
	r = new_key(&rng, &key, err);
	wc_FreeRng(&rng);
	if (r < 0)
		return r;
	snprintf(uri, sizeof(uri), "spiffe://%s", td);
	spec.org = "ambit";
	spec.cn = "ambit mesh root CA";
	spec.uri = uri;
	spec.not_before = now - CA_BACKDATE_SECONDS;
	spec.not_after = now + (int64_t)days * 86400;
	spec.is_ca = true;
	spec.path_len = -1;
	spec.key_usage = "keyCertSign,cRLSign";
	r = ca_sign(NULL, &spec, key, &der, &len, err);
	if (r < 0)
		goto fail;
	r = ca_new(der, len, &ca, err);
	if (r < 0)
		goto fail;
	ca->key = key;
	*out = ca;
	return 0;
fail:
	wc_ecc_free(key);
	secmem_free(key);
	return r;
}

static bool node_valid(const char *node)
{
	size_t i, n = strlen(node);

	if (n == 0 || n > 63)
		return false;
	for (i = 0; i < n; i++) {
		char c = node[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

int ca_issue_node(const struct ca *root, const char *node, unsigned hours, int64_t now,
                  struct ca **out, struct certs_err *err)
{
	struct ca_spec spec = { 0 };
	char uri[SPIFFE_TD_MAX + 16], cn[80];
	ecc_key *key = NULL;
	struct ca *ca = NULL;
	uint8_t *der;
	size_t len;
	WC_RNG rng;
	int r, w;

	*out = NULL;
	if (!node_valid(node))
		return certs_errf(err, -EINVAL,
		                  "invalid node name '%s' (1..63 of letters, digits, . - _)", node);
	if (root->td[0] == '\0')
		return certs_errf(err, -EINVAL,
		                  "root certificate has no spiffe://<trust-domain> "
		                  "URI SAN");
	if (hours == 0 || hours > 24 * 36500)
		return certs_errf(err, -EINVAL, "node lifetime must be at least one hour");
	if (now == 0)
		now = (int64_t)time(NULL);
	if ((w = wc_InitRng(&rng)) != 0)
		return certs_errf(err, -EIO, "RNG: %s", certs_wolf_str(w));
	r = new_key(&rng, &key, err);
	wc_FreeRng(&rng);
	if (r < 0)
		return r;
	snprintf(uri, sizeof(uri), "spiffe://%s", root->td);
	snprintf(cn, sizeof(cn), "ambit node %s", node);
	spec.org = "ambit";
	spec.cn = cn;
	spec.uri = uri;
	spec.not_before = now - CA_BACKDATE_SECONDS;
	spec.not_after = now + (int64_t)hours * 3600;
	if (spec.not_after > root->info.not_after)
		spec.not_after = root->info.not_after;
	if (spec.not_before < root->info.not_before)
		spec.not_before = root->info.not_before;
	spec.is_ca = true;
	spec.path_len = 0;
	spec.key_usage = "keyCertSign,cRLSign";
	spec.nc_uri = root->td;
	r = ca_sign(root, &spec, key, &der, &len, err);
	if (r < 0)
		goto fail;
	r = ca_new(der, len, &ca, err);
	if (r < 0)
		goto fail;
	ca->key = key;
	*out = ca;
	return 0;
fail:
	wc_ecc_free(key);
	secmem_free(key);
	return r;
}

/* Decode an EC private key (PEM or DER; SEC1 or PKCS#8) into secmem. */
static int load_key(const uint8_t *in, size_t len, ecc_key **out, struct certs_err *err)
{
	uint8_t *der = secmem_alloc(len + 1);
	ecc_key *k = secmem_alloc(sizeof(*k));
	word32 idx = 0, dlen;
	int w, r;

	*out = NULL;
	if (!der || !k) {
		r = certs_errf(err, -ENOMEM, "out of memory");
		goto fail;
	}
	if (len > 0 && in[0] == DER_SEQUENCE) {
		memcpy(der, in, len);
		dlen = (word32)len;
	} else {
		if (!memmem(in, len, "-----BEGIN", 10)) {
			r = certs_errf(err, -EBADMSG, "key is neither PEM nor DER");
			goto fail;
		}
		if (memmem(in, len, "ENCRYPTED", 9)) {
			r = certs_errf(err, -EBADMSG, "encrypted keys are not supported");
			goto fail;
		}
		w = wc_KeyPemToDer(in, (int)len, der, (int)len, NULL);
		if (w <= 0) {
			r = certs_errf(err, -EBADMSG, "malformed PEM key: %s", certs_wolf_str(w));
			goto fail;
		}
		dlen = (word32)w;
	}
	if ((w = wc_ecc_init(k)) != 0) {
		r = certs_errf(err, -EIO, "ecc init: %s", certs_wolf_str(w));
		goto fail;
	}
	w = wc_EccPrivateKeyDecode(der, &idx, k, dlen);
	if (w != 0) {
		/* PKCS#8 wraps the SEC1 key; unwrap and retry. */
		int off = wc_GetPkcs8TraditionalOffset(der, &idx, dlen);

		idx = off >= 0 ? (word32)off : 0;
		wc_ecc_free(k);
		wc_ecc_init(k);
		w = off >= 0 ? wc_EccPrivateKeyDecode(der, &idx, k, dlen) : w;
	}
	if (w != 0) {
		r = certs_errf(err, -EBADMSG, "not an EC private key: %s", certs_wolf_str(w));
		wc_ecc_free(k);
		goto fail;
	}
	if (k->type == ECC_PRIVATEKEY_ONLY && (w = wc_ecc_make_pub(k, NULL)) != 0) {
		r = certs_errf(err, -EBADMSG, "cannot derive public key: %s", certs_wolf_str(w));
		wc_ecc_free(k);
		goto fail;
	}
	secmem_free(der);
	*out = k;
	return 0;
fail:
	secmem_free(der);
	secmem_free(k);
	return r;
}

/* 0 when k's public key is the one in info. */
static int key_is_certs(ecc_key *k, const struct x509_cert *info, struct certs_err *err)
{
	uint8_t spki[X509_SPKI_MAX];
	int w;

	w = wc_EccPublicKeyToDer(k, spki, sizeof(spki), 1);
	if (w <= 0 || (size_t)w != info->spki_len || memcmp(spki, info->spki, (size_t)w) != 0)
		return certs_errf(err, -EKEYREJECTED, "private key does not match certificate %s",
		                  info->subject);
	return 0;
}

int ca_key_matches(const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len,
                   struct certs_err *err)
{
	struct x509_cert *info = malloc(sizeof(*info));
	ecc_key *k = NULL;
	int r;

	if (!info)
		return certs_errf(err, -ENOMEM, "out of memory");
	r = x509_parse(cert, cert_len, info, err);
	if (r < 0)
		goto out;
	r = load_key(key, key_len, &k, err);
	if (r < 0)
		goto out;
	r = key_is_certs(k, info, err);
	wc_ecc_free(k);
	secmem_free(k);
out:
	free(info);
	return r;
}

int ca_load(const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len,
            struct ca **out, struct certs_err *err)
{
	struct x509_buf certs[X509_CHAIN_MAX];
	struct ca *ca = NULL;
	uint8_t *store = NULL, *der;
	ecc_key *k = NULL;
	int n, r;

	*out = NULL;
	n = x509_load_certs(cert, cert_len, certs, X509_CHAIN_MAX, &store, err);
	if (n < 0)
		return n;
	der = malloc(certs[0].len);
	if (!der) {
		free(store);
		return certs_errf(err, -ENOMEM, "out of memory");
	}
	memcpy(der, certs[0].der, certs[0].len);
	r = ca_new(der, certs[0].len, &ca, err);
	free(store);
	if (r < 0)
		return r;
	if (!ca->info.is_ca) {
		r = certs_errf(err, -EPERM, "certificate %s is not a CA", ca->info.subject);
		goto fail;
	}
	r = load_key(key, key_len, &k, err);
	if (r < 0)
		goto fail;
	ca->key = k;
	r = key_is_certs(k, &ca->info, err);
	if (r < 0)
		goto fail;
	*out = ca;
	return 0;
fail:
	ca_free(ca);
	return r;
}

int ca_load_files(const char *cert_path, const char *key_path, struct ca **out,
                  struct certs_err *err)
{
	uint8_t *c = NULL, *k = NULL;
	size_t cl, kl;
	struct certs_err e2;
	int r;

	*out = NULL;
	r = certs_read_file(cert_path, CERT_FILE_MAX, &c, &cl, err);
	if (r < 0)
		return r;
	r = certs_read_file(key_path, KEY_FILE_MAX, &k, &kl, err);
	if (r < 0)
		goto out;
	r = ca_load(c, cl, k, kl, out, &e2);
	if (r < 0)
		certs_errf(err, r, "%s / %s: %s", cert_path, key_path, e2.msg);
out:
	certs_file_free(c, cl);
	certs_file_free(k, kl);
	return r;
}

int ca_save(const struct ca *ca, const char *cert_path, const char *key_path, struct certs_err *err)
{
	uint8_t *kder = NULL;
	char *pem = NULL, *kpem = NULL;
	size_t plen, kplen;
	int r, w;

	r = ca_der_to_pem(ca->der, ca->der_len, CA_PEM_CERT, false, &pem, &plen, err);
	if (r < 0)
		return r;
	if (key_path) {
		kder = secmem_alloc(512);
		if (!kder) {
			r = certs_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		w = wc_EccKeyToDer(ca->key, kder, 512);
		if (w <= 0) {
			r = certs_errf(err, -EIO, "key encoding failed: %s", certs_wolf_str(w));
			goto out;
		}
		r = ca_der_to_pem(kder, (size_t)w, CA_PEM_EC_KEY, true, &kpem, &kplen, err);
		if (r < 0)
			goto out;
		/* Key first: a certificate without its key is useless, the
		 * reverse at least lets the operator re-issue. */
		r = certs_write_file(key_path, kpem, kplen, 0600, err);
		if (r < 0)
			goto out;
	}
	r = certs_write_file(cert_path, pem, plen, 0644, err);
out:
	free(pem);
	secmem_free(kpem);
	secmem_free(kder);
	return r;
}
