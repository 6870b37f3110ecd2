/* x509: certificate parsing, chain verification, SPIFFE IDs; see x509.h. */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs/der.h"
#include "certs/x509.h"

/* Certificates larger than this are not ours and not plausible peers. */
#define X509_DER_MAX (64 * 1024)

/* ---------------------------------------------------------------- SPIFFE */

static bool td_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool seg_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '_';
}

/* The reason a character is not allowed, for a useful message. */
static const char *bad_char_why(char c, bool in_td)
{
	if (c == '%')
		return "percent-encoding is not allowed";
	if (c == '?' || c == '#')
		return "query and fragment are not allowed";
	if (in_td && c >= 'A' && c <= 'Z')
		return "trust domain must be lowercase";
	if (in_td && c == ':')
		return "port is not allowed";
	if (in_td && c == '@')
		return "userinfo is not allowed";
	return in_td ? "invalid character in trust domain" : "invalid character in path";
}

int spiffe_id_parse(const char *s, size_t len, struct spiffe_id *out, const char **why)
{
	static const char scheme[] = "spiffe://";
	const char *seg[4];
	size_t seglen[4], nseg = 0, i, td_len;
	const char *p, *end, *w = NULL;

	if (!s || !out) {
		w = "null input";
		goto bad;
	}
	if (len > SPIFFE_ID_MAX) {
		w = "longer than 2048 bytes";
		goto bad;
	}
	if (len < sizeof(scheme) - 1 || strncasecmp(s, scheme, sizeof(scheme) - 1) != 0) {
		w = "scheme is not spiffe://";
		goto bad;
	}
	if (memcmp(s, scheme, sizeof(scheme) - 1) != 0) {
		w = "scheme must be lowercase spiffe://";
		goto bad;
	}
	p = s + sizeof(scheme) - 1;
	end = s + len;
	for (td_len = 0; p + td_len < end && p[td_len] != '/'; td_len++) {
		if (!td_char(p[td_len])) {
			w = bad_char_why(p[td_len], true);
			goto bad;
		}
	}
	if (td_len == 0) {
		w = "empty trust domain";
		goto bad;
	}
	if (td_len > SPIFFE_TD_MAX) {
		w = "trust domain longer than 255 bytes";
		goto bad;
	}
	memcpy(out->td, p, td_len);
	out->td[td_len] = '\0';
	p += td_len;
	if (p == end) {
		w = "missing /ns/<namespace>/sa/<service-account> path";
		goto bad;
	}
	/* p points at '/': split the path into segments. */
	while (p < end) {
		const char *q = ++p;

		while (q < end && *q != '/') {
			if (!seg_char(*q)) {
				w = bad_char_why(*q, false);
				goto bad;
			}
			q++;
		}
		if (q == p) {
			w = q == end ? "trailing slash" : "empty path segment";
			goto bad;
		}
		if ((q - p == 1 && p[0] == '.') || (q - p == 2 && p[0] == '.' && p[1] == '.')) {
			w = "dot segments are not allowed";
			goto bad;
		}
		if (nseg == 4) {
			w = "path has more than /ns/<namespace>/sa/<service-account>";
			goto bad;
		}
		seg[nseg] = p;
		seglen[nseg++] = (size_t)(q - p);
		p = q;
	}
	if (nseg != 4 || seglen[0] != 2 || memcmp(seg[0], "ns", 2) != 0 || seglen[2] != 2 ||
	    memcmp(seg[2], "sa", 2) != 0) {
		w = "path is not /ns/<namespace>/sa/<service-account>";
		goto bad;
	}
	for (i = 1; i < 4; i += 2) {
		if (seglen[i] > SPIFFE_SEG_MAX) {
			w = "namespace or service account longer than 253 bytes";
			goto bad;
		}
	}
	memcpy(out->ns, seg[1], seglen[1]);
	out->ns[seglen[1]] = '\0';
	memcpy(out->sa, seg[3], seglen[3]);
	out->sa[seglen[3]] = '\0';
	return 0;
bad:
	if (why)
		*why = w;
	return -EINVAL;
}

int spiffe_id_format(const struct spiffe_id *id, char *buf, size_t size)
{
	struct spiffe_id check;
	int n;

	n = snprintf(buf, size, "spiffe://%s/ns/%s/sa/%s", id->td, id->ns, id->sa);
	if (n < 0 || (size_t)n >= size)
		return -ENOSPC;
	/* Refuse to hand out something the parser would reject. */
	if (spiffe_id_parse(buf, (size_t)n, &check, NULL) < 0) {
		buf[0] = '\0';
		return -EINVAL;
	}
	return n;
}

/* ------------------------------------------------------------ time */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const uint8_t *p, size_t n, unsigned *out)
{
	unsigned v = 0;

	while (n--) {
		if (*p < '0' || *p > '9')
			return -EBADMSG;
		v = v * 10 + (unsigned)(*p++ - '0');
	}
	*out = v;
	return 0;
}

/* UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ (RFC 5280 4.1.2.5). */
static int parse_time(const struct der_tlv *t, int64_t *out)
{
	static const uint8_t mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	unsigned y, mo, d, h, mi, s;
	const uint8_t *p = t->val;

	if (t->tag == DER_UTCTIME && t->len == 13) {
		if (digits(p, 2, &y) < 0)
			return -EBADMSG;
		y += y >= 50 ? 1900 : 2000;
		p += 2;
	} else if (t->tag == DER_GENTIME && t->len == 15) {
		if (digits(p, 4, &y) < 0)
			return -EBADMSG;
		p += 4;
	} else {
		return -EBADMSG;
	}
	if (digits(p, 2, &mo) < 0 || digits(p + 2, 2, &d) < 0 || digits(p + 4, 2, &h) < 0 ||
	    digits(p + 6, 2, &mi) < 0 || digits(p + 8, 2, &s) < 0 || p[10] != 'Z')
		return -EBADMSG;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || s > 59)
		return -EBADMSG;
	*out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
	return 0;
}

/* ------------------------------------------------------------ parsing */

static const uint8_t OID_SAN[] = { 0x55, 0x1d, 0x11 };
static const uint8_t OID_NC[] = { 0x55, 0x1d, 0x1e };
static const uint8_t OID_EC_PUB[] = { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01 };
static const uint8_t OID_P256[] = { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t OID_P384[] = { 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t OID_RSA[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01 };
static const uint8_t OID_ED25519[] = { 0x2b, 0x65, 0x70 };

static bool oid_is(const struct der_tlv *t, const uint8_t *oid, size_t len)
{
	return t->tag == DER_OID && t->len == len && memcmp(t->val, oid, len) == 0;
}

/* Copy an IA5String-like value that must be printable ASCII. */
static int copy_ascii(char *dst, size_t cap, const struct der_tlv *t, struct certs_err *err,
                      const char *what)
{
	size_t i;

	if (t->len == 0)
		return certs_errf(err, -EBADMSG, "empty %s", what);
	if (t->len >= cap)
		return certs_errf(err, -E2BIG, "%s longer than %zu bytes", what, cap - 1);
	for (i = 0; i < t->len; i++)
		if (t->val[i] < 0x21 || t->val[i] > 0x7e)
			return certs_errf(err, -EBADMSG, "%s has a non-printable byte", what);
	memcpy(dst, t->val, t->len);
	dst[t->len] = '\0';
	return 0;
}

static int parse_san(const struct der_tlv *val, struct x509_cert *c, struct certs_err *err)
{
	struct der d = der_enter(val), names;
	struct der_tlv seq, gn;
	int r;

	if (der_expect(&d, DER_SEQUENCE, &seq) < 0 || d.len != 0)
		return certs_errf(err, -EBADMSG, "malformed subjectAltName");
	names = der_enter(&seq);
	if (names.len == 0)
		return certs_errf(err, -EBADMSG, "empty subjectAltName");
	while ((r = der_next(&names, &gn)) == 0) {
		if (gn.tag == DER_CTX(6)) {
			if (c->n_uris == X509_MAX_URIS)
				return certs_errf(err, -E2BIG, "more than %d URI SANs",
				                  X509_MAX_URIS);
			r = copy_ascii(c->uris[c->n_uris], X509_URI_MAX, &gn, err, "URI SAN");
			if (r < 0)
				return r;
			c->n_uris++;
		} else if (gn.tag == DER_CTX(2)) {
			if (c->n_dns == X509_MAX_DNS) {
				c->n_other_sans++;
				continue;
			}
			r = copy_ascii(c->dns[c->n_dns], X509_DNS_MAX, &gn, err, "DNS SAN");
			if (r < 0)
				return r;
			c->n_dns++;
		} else {
			c->n_other_sans++;
		}
	}
	return r == -ENODATA ? 0 : certs_errf(err, r, "malformed subjectAltName entry");
}

static int parse_subtrees(const struct der_tlv *t, struct x509_cert *c, bool permitted,
                          struct certs_err *err)
{
	struct der d = der_enter(t), st;
	struct der_tlv sub, base;
	int r;

	if (d.len == 0)
		return certs_errf(err, -EBADMSG, "empty name-constraint subtrees");
	while ((r = der_next(&d, &sub)) == 0) {
		size_t *n = permitted ? &c->n_nc_permitted_uri : &c->n_nc_excluded_uri;
		char(*list)[X509_NC_MAX] = permitted ? c->nc_permitted_uri : c->nc_excluded_uri;

		if (sub.tag != DER_SEQUENCE)
			return certs_errf(err, -EBADMSG, "malformed GeneralSubtree");
		st = der_enter(&sub);
		if (der_next(&st, &base) < 0)
			return certs_errf(err, -EBADMSG, "malformed GeneralSubtree base");
		/* minimum/maximum are left to the default (RFC 5280: MUST). */
		if (st.len != 0)
			return certs_errf(err, -EBADMSG,
			                  "name constraint with minimum/maximum is not supported");
		if (base.tag != DER_CTX(6)) {
			c->n_nc_other++;
			continue;
		}
		if (*n == X509_MAX_NC)
			return certs_errf(err, -E2BIG, "more than %d URI name constraints",
			                  X509_MAX_NC);
		r = copy_ascii(list[*n], X509_NC_MAX, &base, err, "URI name constraint");
		if (r < 0)
			return r;
		(*n)++;
	}
	return r == -ENODATA ? 0 : certs_errf(err, r, "malformed name constraints");
}

static int parse_nc(const struct der_tlv *val, struct x509_cert *c, struct certs_err *err)
{
	struct der d = der_enter(val), nc;
	struct der_tlv seq, t;
	int r, last = -1;

	if (der_expect(&d, DER_SEQUENCE, &seq) < 0 || d.len != 0)
		return certs_errf(err, -EBADMSG, "malformed nameConstraints");
	nc = der_enter(&seq);
	if (nc.len == 0)
		return certs_errf(err, -EBADMSG, "empty nameConstraints");
	while ((r = der_next(&nc, &t)) == 0) {
		int which = t.tag == DER_CTX_CONS(0) ? 0 : t.tag == DER_CTX_CONS(1) ? 1 : -1;

		if (which <= last)
			return certs_errf(err, -EBADMSG, "malformed nameConstraints");
		last = which;
		r = parse_subtrees(&t, c, which == 0, err);
		if (r < 0)
			return r;
	}
	if (r != -ENODATA)
		return certs_errf(err, r, "malformed nameConstraints");
	c->has_name_constraints = true;
	return 0;
}

static int parse_extensions(const struct der_tlv *exts3, struct x509_cert *c, struct certs_err *err)
{
	struct der d = der_enter(exts3), list, e;
	struct der_tlv seq, ext, oid, crit, val;
	bool seen_san = false, seen_nc = false;
	int r;

	if (der_expect(&d, DER_SEQUENCE, &seq) < 0 || d.len != 0)
		return certs_errf(err, -EBADMSG, "malformed extensions");
	list = der_enter(&seq);
	while ((r = der_next(&list, &ext)) == 0) {
		bool critical = false;

		if (ext.tag != DER_SEQUENCE)
			return certs_errf(err, -EBADMSG, "malformed extension");
		e = der_enter(&ext);
		if (der_expect(&e, DER_OID, &oid) < 0 || der_next(&e, &crit) < 0)
			return certs_errf(err, -EBADMSG, "malformed extension");
		if (crit.tag == DER_BOOLEAN) {
			if (crit.len != 1)
				return certs_errf(err, -EBADMSG, "malformed extension");
			critical = crit.val[0] != 0;
			if (der_next(&e, &val) < 0)
				return certs_errf(err, -EBADMSG, "malformed extension");
		} else {
			val = crit;
		}
		if (val.tag != DER_OCTET_STRING || e.len != 0)
			return certs_errf(err, -EBADMSG, "malformed extension value");
		if (oid_is(&oid, OID_SAN, sizeof(OID_SAN))) {
			if (seen_san)
				return certs_errf(err, -EBADMSG, "duplicate subjectAltName");
			seen_san = true;
			r = parse_san(&val, c, err);
		} else if (oid_is(&oid, OID_NC, sizeof(OID_NC))) {
			if (seen_nc)
				return certs_errf(err, -EBADMSG, "duplicate nameConstraints");
			seen_nc = true;
			c->nc_critical = critical;
			r = parse_nc(&val, c, err);
		}
		if (r < 0)
			return r;
	}
	return r == -ENODATA ? 0 : certs_errf(err, r, "malformed extensions");
}

static void key_type(const struct der_tlv *spki, struct x509_cert *c)
{
	struct der d = der_enter(spki), a;
	struct der_tlv alg, oid, param;

	snprintf(c->key_type, sizeof(c->key_type), "unknown");
	if (der_expect(&d, DER_SEQUENCE, &alg) < 0)
		return;
	a = der_enter(&alg);
	if (der_expect(&a, DER_OID, &oid) < 0)
		return;
	if (oid_is(&oid, OID_EC_PUB, sizeof(OID_EC_PUB))) {
		if (der_next(&a, &param) == 0 && oid_is(&param, OID_P256, sizeof(OID_P256)))
			snprintf(c->key_type, sizeof(c->key_type), "ECDSA P-256");
		else if (oid_is(&param, OID_P384, sizeof(OID_P384)))
			snprintf(c->key_type, sizeof(c->key_type), "ECDSA P-384");
		else
			snprintf(c->key_type, sizeof(c->key_type), "ECDSA (other curve)");
	} else if (oid_is(&oid, OID_RSA, sizeof(OID_RSA))) {
		snprintf(c->key_type, sizeof(c->key_type), "RSA");
	} else if (oid_is(&oid, OID_ED25519, sizeof(OID_ED25519))) {
		snprintf(c->key_type, sizeof(c->key_type), "Ed25519");
	}
}

static int copy_raw(uint8_t *dst, size_t cap, size_t *len, const struct der_tlv *t,
                    struct certs_err *err, const char *what)
{
	if (t->raw_len > cap)
		return certs_errf(err, -E2BIG, "%s larger than %zu bytes", what, cap);
	memcpy(dst, t->raw, t->raw_len);
	*len = t->raw_len;
	return 0;
}

/* Our own walk over the TBSCertificate: what wolfSSL does not keep. */
static int walk_cert(const uint8_t *der, size_t len, struct x509_cert *c, struct certs_err *err)
{
	struct der d = der_init(der, len), cert, tbs;
	struct der_tlv t_cert, t_tbs, t, t_validity, nb, na;
	struct der v;
	size_t i;
	int r;

	if (der_expect(&d, DER_SEQUENCE, &t_cert) < 0 || d.len != 0)
		return certs_errf(err, -EBADMSG, "not a DER certificate");
	cert = der_enter(&t_cert);
	if (der_expect(&cert, DER_SEQUENCE, &t_tbs) < 0)
		return certs_errf(err, -EBADMSG, "malformed TBSCertificate");
	tbs = der_enter(&t_tbs);
	if (der_next(&tbs, &t) < 0)
		return certs_errf(err, -EBADMSG, "malformed TBSCertificate");
	if (t.tag == DER_CTX_CONS(0) && der_next(&tbs, &t) < 0) /* version */
		return certs_errf(err, -EBADMSG, "malformed TBSCertificate");
	if (t.tag != DER_INTEGER || t.len == 0)
		return certs_errf(err, -EBADMSG, "malformed serial number");
	if (t.len > 32)
		return certs_errf(err, -E2BIG, "serial number longer than 32 bytes");
	for (i = 0; i < t.len; i++)
		snprintf(c->serial_hex + 2 * i, 3, "%02x", t.val[i]);
	if (der_expect(&tbs, DER_SEQUENCE, &t) < 0) /* signature algorithm */
		return certs_errf(err, -EBADMSG, "malformed signature algorithm");
	if (der_expect(&tbs, DER_SEQUENCE, &t) < 0)
		return certs_errf(err, -EBADMSG, "malformed issuer");
	if ((r = copy_raw(c->issuer_raw, sizeof(c->issuer_raw), &c->issuer_raw_len, &t, err,
	                  "issuer")) < 0)
		return r;
	if (der_expect(&tbs, DER_SEQUENCE, &t_validity) < 0)
		return certs_errf(err, -EBADMSG, "malformed validity");
	v = der_enter(&t_validity);
	if (der_next(&v, &nb) < 0 || der_next(&v, &na) < 0 || v.len != 0 ||
	    parse_time(&nb, &c->not_before) < 0 || parse_time(&na, &c->not_after) < 0)
		return certs_errf(err, -EBADMSG, "malformed validity");
	if (der_expect(&tbs, DER_SEQUENCE, &t) < 0)
		return certs_errf(err, -EBADMSG, "malformed subject");
	if ((r = copy_raw(c->subject_raw, sizeof(c->subject_raw), &c->subject_raw_len, &t, err,
	                  "subject")) < 0)
		return r;
	if (der_expect(&tbs, DER_SEQUENCE, &t) < 0)
		return certs_errf(err, -EBADMSG, "malformed public key");
	if ((r = copy_raw(c->spki, sizeof(c->spki), &c->spki_len, &t, err, "public key")) < 0)
		return r;
	key_type(&t, c);
	while ((r = der_next(&tbs, &t)) == 0) {
		if (t.tag == DER_CTX(1) || t.tag == DER_CTX(2)) /* unique IDs */
			continue;
		if (t.tag != DER_CTX_CONS(3) || tbs.len != 0)
			return certs_errf(err, -EBADMSG, "malformed TBSCertificate tail");
		r = parse_extensions(&t, c, err);
		if (r < 0)
			return r;
	}
	if (r != -ENODATA)
		return certs_errf(err, -EBADMSG, "malformed TBSCertificate");
	c->self_signed = c->subject_raw_len == c->issuer_raw_len &&
	                 memcmp(c->subject_raw, c->issuer_raw, c->issuer_raw_len) == 0;
	return 0;
}

int x509_parse(const uint8_t *der, size_t len, struct x509_cert *c, struct certs_err *err)
{
	DecodedCert dc;
	int r, w;

	if (!der || !c || len == 0)
		return certs_errf(err, -EINVAL, "empty certificate");
	if (len > X509_DER_MAX)
		return certs_errf(err, -E2BIG, "certificate larger than %d bytes", X509_DER_MAX);
	memset(c, 0, sizeof(*c));
	c->path_len = -1;
	r = walk_cert(der, len, c, err);
	if (r < 0)
		return r;

	/* wolfSSL's parser checks what we do not walk (names, algorithm
	 * identifiers, critical extensions it does not know) and gives the
	 * printable names and the decoded basic constraints / key usage. */
	wc_InitDecodedCert(&dc, der, (word32)len, NULL);
	w = wc_ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL);
	if (w != 0) {
		r = certs_errf(err, -EBADMSG, "certificate rejected by parser: %s",
		               certs_wolf_str(w));
		goto out;
	}
	snprintf(c->subject, sizeof(c->subject), "%s", dc.subject);
	snprintf(c->issuer, sizeof(c->issuer), "%s", dc.issuer);
	c->is_ca = dc.isCA;
	c->path_len = dc.isCA && dc.pathLengthSet ? dc.pathLength : -1;
	c->has_key_usage = dc.extKeyUsageSet;
	c->key_usage = dc.extKeyUsage;
	c->key_oid = dc.keyOID;
	r = 0;
out:
	wc_FreeDecodedCert(&dc);
	return r;
}

/* ------------------------------------------------------------ PEM */

int x509_load_certs(const uint8_t *buf, size_t len, struct x509_buf *out, size_t max,
                    uint8_t **storage, struct certs_err *err)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	static const char end[] = "-----END CERTIFICATE-----";
	const uint8_t *p = buf, *stop = buf + len;
	uint8_t *st;
	size_t used = 0, n = 0;
	int r;

	*storage = NULL;
	if (!buf || len == 0)
		return certs_errf(err, -EBADMSG, "empty file");
	if (len > 1024 * 1024)
		return certs_errf(err, -E2BIG, "file larger than 1 MiB");
	st = malloc(len);
	if (!st)
		return certs_errf(err, -ENOMEM, "out of memory");
	if (buf[0] == DER_SEQUENCE) {
		/* A single DER certificate. */
		if (max < 1) {
			r = certs_errf(err, -E2BIG, "too many certificates");
			goto fail;
		}
		memcpy(st, buf, len);
		out[0].der = st;
		out[0].len = len;
		*storage = st;
		return 1;
	}
	for (;;) {
		const uint8_t *b = memmem(p, (size_t)(stop - p), begin, sizeof(begin) - 1), *e;
		int w;

		if (!b)
			break;
		e = memmem(b, (size_t)(stop - b), end, sizeof(end) - 1);
		if (!e) {
			r = certs_errf(err, -EBADMSG, "PEM certificate without END line");
			goto fail;
		}
		e += sizeof(end) - 1;
		if (n == max) {
			r = certs_errf(err, -E2BIG, "more than %zu certificates", max);
			goto fail;
		}
		w = wc_CertPemToDer(b, (int)(e - b), st + used, (int)(len - used), CERT_TYPE);
		if (w <= 0) {
			r = certs_errf(err, -EBADMSG, "malformed PEM certificate %zu: %s", n + 1,
			               certs_wolf_str(w));
			goto fail;
		}
		out[n].der = st + used;
		out[n].len = (size_t)w;
		used += (size_t)w;
		n++;
		p = e;
	}
	if (n == 0) {
		r = certs_errf(err, -EBADMSG, "no certificate found (neither PEM nor DER)");
		goto fail;
	}
	*storage = st;
	return (int)n;
fail:
	free(st);
	return r;
}

/* ------------------------------------------------------------ verify */

bool x509_uri_in_subtree(const char *uri, const char *base)
{
	const char *h = strstr(uri, "://"), *he;
	size_t hl, bl = strlen(base);

	if (!h || bl == 0)
		return false;
	h += 3;
	he = h + strcspn(h, "/?#");
	/* userinfo and port are not part of the host. */
	for (const char *q = h; q < he; q++)
		if (*q == '@')
			h = q + 1;
	for (const char *q = h; q < he; q++)
		if (*q == ':') {
			he = q;
			break;
		}
	hl = (size_t)(he - h);
	if (base[0] == '.')
		return hl > bl && strncasecmp(he - bl, base, bl) == 0;
	return hl == bl && strncasecmp(h, base, bl) == 0;
}

/* Does ca's name constraints allow every name of c? */
static int nc_allows(const struct x509_cert *ca, const struct x509_cert *c, struct certs_err *err,
                     size_t depth)
{
	size_t i, j;

	if (!ca->has_name_constraints)
		return 0;
	/* Only URI subtrees are enforced here; any other subtree type means we
	 * cannot judge DNS/other names below, so such names are refused. */
	if (ca->n_nc_other && (c->n_dns || c->n_other_sans))
		return certs_errf(err, -EPERM,
		                  "certificate %zu has names of a constrained type this verifier "
		                  "does not check",
		                  depth);
	for (i = 0; i < c->n_uris; i++) {
		bool ok = ca->n_nc_permitted_uri == 0;

		for (j = 0; j < ca->n_nc_permitted_uri; j++)
			ok = ok || x509_uri_in_subtree(c->uris[i], ca->nc_permitted_uri[j]);
		for (j = 0; j < ca->n_nc_excluded_uri; j++)
			if (x509_uri_in_subtree(c->uris[i], ca->nc_excluded_uri[j]))
				ok = false;
		if (!ok)
			return certs_errf(err, -EPERM,
			                  "URI %s of certificate %zu is outside the name "
			                  "constraints of its issuer %s",
			                  c->uris[i], depth, ca->subject);
	}
	return 0;
}

static int check_sig(const struct x509_buf *child, const struct x509_cert *parent)
{
	return wc_CheckCertSigPubKey(child->der, (word32)child->len, NULL, parent->spki,
	                             (word32)parent->spki_len, (int)parent->key_oid);
}

int x509_verify_chain(const struct x509_buf *chain, size_t n, const struct x509_buf *root,
                      int64_t now, struct certs_err *err)
{
	struct x509_cert *c;
	struct x509_buf bufs[X509_CHAIN_MAX + 1];
	size_t i, j, total = n + 1;
	int r = 0, w;

	if (n == 0 || n > X509_CHAIN_MAX || !root)
		return certs_errf(err, -EINVAL, "chain must hold 1..%d certificates",
		                  X509_CHAIN_MAX);
	if (now == 0)
		now = (int64_t)time(NULL);
	/* All parsed certificates are ~5 KiB each: keep them off the stack. */
	c = calloc(total, sizeof(*c));
	if (!c)
		return certs_errf(err, -ENOMEM, "out of memory");
	for (i = 0; i < total; i++) {
		struct certs_err e2;

		bufs[i] = i < n ? chain[i] : *root;
		r = x509_parse(bufs[i].der, bufs[i].len, &c[i], &e2);
		if (r < 0) {
			certs_errf(err, r, "%s: %s",
			           i == n ? "root"
			           : i    ? "intermediate"
			                  : "leaf",
			           e2.msg);
			goto out;
		}
	}
	if (!c[n].self_signed || !c[n].is_ca) {
		r = certs_errf(err, -EPERM, "root %s is not a self-signed CA", c[n].subject);
		goto out;
	}
	if ((w = check_sig(&bufs[n], &c[n])) != 0) {
		r = certs_errf(err, -EKEYREJECTED, "root self-signature does not verify: %s",
		               certs_wolf_str(w));
		goto out;
	}
	for (i = 0; i < n; i++) {
		const struct x509_cert *p = &c[i + 1];

		if (c[i].issuer_raw_len != p->subject_raw_len ||
		    memcmp(c[i].issuer_raw, p->subject_raw, p->subject_raw_len) != 0) {
			r = certs_errf(err, -EKEYREJECTED,
			               "certificate %zu (%s) was issued by %s, not by %s", i,
			               c[i].subject, c[i].issuer, p->subject);
			goto out;
		}
		if (!p->is_ca) {
			r = certs_errf(err, -EPERM, "issuer %s is not a CA", p->subject);
			goto out;
		}
		if (p->has_key_usage && !(p->key_usage & X509_KU_KEY_CERT_SIGN)) {
			r = certs_errf(err, -EPERM, "issuer %s may not sign certificates",
			               p->subject);
			goto out;
		}
		if ((w = check_sig(&bufs[i], p)) != 0) {
			r = certs_errf(err, -EKEYREJECTED,
			               "signature of certificate %zu (%s) does not verify with the "
			               "key of %s: %s",
			               i, c[i].subject, p->subject, certs_wolf_str(w));
			goto out;
		}
		/* CAs strictly between p and the leaf. */
		if (p->path_len >= 0 && (int)i > p->path_len) {
			r = certs_errf(err, -EPERM, "path length of %s exceeded", p->subject);
			goto out;
		}
	}
	for (i = 0; i < total; i++) {
		const char *what = i == n ? "root" : i ? "intermediate" : "leaf";

		if (now < c[i].not_before) {
			r = certs_errf(err, -EKEYEXPIRED, "%s %s is not valid yet", what,
			               c[i].subject);
			goto out;
		}
		if (now > c[i].not_after) {
			r = certs_errf(err, -EKEYEXPIRED, "%s %s has expired", what, c[i].subject);
			goto out;
		}
	}
	for (j = 1; j < total; j++)
		for (i = 0; i < j; i++)
			if ((r = nc_allows(&c[j], &c[i], err, i)) < 0)
				goto out;
	r = 0;
out:
	free(c);
	return r;
}

int x509_svid_id(const struct x509_cert *leaf, const char *td, struct spiffe_id *out,
                 struct certs_err *err)
{
	const char *why = NULL;

	if (leaf->is_ca)
		return certs_errf(err, -EINVAL, "an X.509-SVID leaf must not be a CA");
	if (leaf->n_uris != 1)
		return certs_errf(err, -EINVAL, "an X.509-SVID has exactly one URI SAN (found %zu)",
		                  leaf->n_uris);
	if (spiffe_id_parse(leaf->uris[0], strlen(leaf->uris[0]), out, &why) < 0)
		return certs_errf(err, -EINVAL, "URI SAN %s is not a SPIFFE ID: %s", leaf->uris[0],
		                  why);
	if (td && strcmp(out->td, td) != 0)
		return certs_errf(err, -EPERM, "SPIFFE ID %s is not in trust domain %s",
		                  leaf->uris[0], td);
	return 0;
}

int x509_peer_id(const struct x509_buf *leaf, const struct x509_buf *issuer, const char *td,
                 struct spiffe_id *out, struct certs_err *err)
{
	struct x509_cert *c = malloc(2 * sizeof(*c));
	int r;

	if (!c)
		return certs_errf(err, -ENOMEM, "out of memory");
	r = x509_parse(leaf->der, leaf->len, &c[0], err);
	if (r < 0)
		goto out;
	r = x509_svid_id(&c[0], td, out, err);
	if (r < 0 || !issuer)
		goto out;
	r = x509_parse(issuer->der, issuer->len, &c[1], err);
	if (r < 0)
		goto out;
	r = nc_allows(&c[1], &c[0], err, 0);
out:
	free(c);
	return r;
}
