/*
 * der: a bounds-checked cursor over DER (X.690) bytes.
 *
 * Everything in certs/ that walks certificate bytes itself (extensions the
 * wolfSSL 5.5.4 parser does not keep, such as URI name constraints, and the
 * splice that adds nameConstraints to a generated certificate) reads them
 * through this cursor.  It accepts single-byte tags and definite lengths of
 * at most four length octets, and never reads past the end of its window.
 * No allocation; values point into the caller's buffer.
 */
#ifndef AMBIT_CERTS_DER_H
#define AMBIT_CERTS_DER_H

#include <stddef.h>
#include <stdint.h>

/* Common tags. */
#define DER_BOOLEAN      0x01
#define DER_INTEGER      0x02
#define DER_BIT_STRING   0x03
#define DER_OCTET_STRING 0x04
#define DER_OID          0x06
#define DER_UTCTIME      0x17
#define DER_GENTIME      0x18
#define DER_SEQUENCE     0x30
#define DER_SET          0x31
#define DER_CTX(n)       (0x80 | (n)) /* [n] IMPLICIT, primitive */
#define DER_CTX_CONS(n)  (0xa0 | (n)) /* [n], constructed */

/* A window of bytes still to read. */
struct der {
	const uint8_t *p;
	size_t len;
};

/* One element: tag, the value bytes, and the whole element (header+value). */
struct der_tlv {
	uint8_t tag;
	const uint8_t *val;
	size_t len;
	const uint8_t *raw;
	size_t raw_len;
};

static inline struct der der_init(const uint8_t *p, size_t len)
{
	struct der d = { p, len };
	return d;
}

/* Read the next element and advance.  Returns 0, -ENODATA at the end of the
 * window, or -EBADMSG on a malformed header or a length past the window. */
int der_next(struct der *d, struct der_tlv *out);

/* der_next() and require tag; -EBADMSG on another tag. */
int der_expect(struct der *d, uint8_t tag, struct der_tlv *out);

/* A cursor over the value of a constructed element. */
static inline struct der der_enter(const struct der_tlv *t)
{
	return der_init(t->val, t->len);
}

/* Bytes a header for a value of len bytes takes (2..6). */
size_t der_hdr_len(size_t len);

/* Write tag and length of a value of len bytes to out (der_hdr_len(len)
 * bytes); returns the header size. */
size_t der_put_hdr(uint8_t *out, uint8_t tag, size_t len);

#endif
