/* der: bounds-checked DER cursor, see der.h. */
#include <errno.h>
#include <string.h>

#include "certs/der.h"

int der_next(struct der *d, struct der_tlv *out)
{
	size_t i = 0, len;
	uint8_t b;

	if (d->len == 0)
		return -ENODATA;
	if (d->len < 2)
		return -EBADMSG;
	out->tag = d->p[i++];
	/* High tag numbers never occur in certificates; refusing them keeps
	 * the header a fixed shape. */
	if ((out->tag & 0x1f) == 0x1f)
		return -EBADMSG;
	b = d->p[i++];
	if (b < 0x80) {
		len = b;
	} else {
		size_t n = b & 0x7f;

		/* 0x80 is BER's indefinite length: not DER.  More than four
		 * length octets cannot describe anything we accept. */
		if (n == 0 || n > 4 || d->len - i < n)
			return -EBADMSG;
		len = 0;
		while (n--)
			len = (len << 8) | d->p[i++];
		/* DER demands the shortest form. */
		if (len < 0x80 || (b == 0x82 && len < 0x100) || (b == 0x83 && len < 0x10000) ||
		    (b == 0x84 && len < 0x1000000))
			return -EBADMSG;
	}
	if (len > d->len - i)
		return -EBADMSG;
	out->raw = d->p;
	out->raw_len = i + len;
	out->val = d->p + i;
	out->len = len;
	d->p += i + len;
	d->len -= i + len;
	return 0;
}

int der_expect(struct der *d, uint8_t tag, struct der_tlv *out)
{
	int r = der_next(d, out);

	if (r == -ENODATA)
		return -EBADMSG;
	if (r < 0)
		return r;
	return out->tag == tag ? 0 : -EBADMSG;
}

size_t der_hdr_len(size_t len)
{
	if (len < 0x80)
		return 2;
	if (len < 0x100)
		return 3;
	if (len < 0x10000)
		return 4;
	if (len < 0x1000000)
		return 5;
	return 6;
}

size_t der_put_hdr(uint8_t *out, uint8_t tag, size_t len)
{
	size_t n = der_hdr_len(len), i;

	out[0] = tag;
	if (n == 2) {
		out[1] = (uint8_t)len;
		return 2;
	}
	out[1] = (uint8_t)(0x80 | (n - 2));
	for (i = n - 1; i >= 2; i--) {
		out[i] = (uint8_t)len;
		len >>= 8;
	}
	return n;
}
