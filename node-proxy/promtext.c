/*
 * promtext: text buffer and exposition-format escaping (see promtext.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node-proxy/promtext.h"

void pt_init(struct pt_buf *b)
{
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
	b->err = 0;
}

void pt_free(struct pt_buf *b)
{
	free(b->p);
	pt_init(b);
}

/* Make room for @n more bytes plus the terminating NUL. */
static int pt_reserve(struct pt_buf *b, size_t n)
{
	size_t want, cap;
	char *p;

	if (b->err)
		return b->err;
	if (n > SIZE_MAX / 2 - b->len - 1)
		goto nomem;
	want = b->len + n + 1;
	if (want <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 4096;
	while (cap < want)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		goto nomem;
	b->p = p;
	b->cap = cap;
	return 0;
nomem:
	b->err = -ENOMEM;
	return b->err;
}

void pt_putn(struct pt_buf *b, const char *s, size_t n)
{
	if (pt_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void pt_puts(struct pt_buf *b, const char *s)
{
	pt_putn(b, s, strlen(s));
}

void pt_printf(struct pt_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || pt_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

size_t pt_utf8_len(const uint8_t *s, size_t n)
{
	uint32_t cp;
	size_t len, i;

	if (n == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0; /* continuation byte, C0/C1 overlong lead, or > F4 */
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF
	 * are not UTF-8 (RFC 3629). */
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	if (cp >= 0xd800 && cp <= 0xdfff)
		return 0;
	return len;
}

void pt_label_value(struct pt_buf *b, const char *s, size_t max, const char *dflt)
{
	const uint8_t *u;
	size_t n, i, k, run;

	if (!s || !*s)
		s = dflt;
	u = (const uint8_t *)s;
	n = strnlen(s, max);
	for (i = 0; i < n;) {
		/* Copy runs of plain ASCII in one go: label strings are built
		 * per connection, and byte-at-a-time appends dominated. */
		for (run = i;
		     run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '\\' && u[run] != '"';
		     run++)
			;
		if (run > i) {
			pt_putn(b, s + i, run - i);
			i = run;
			continue;
		}
		k = pt_utf8_len(u + i, n - i);
		if (k == 0) {
			/* Invalid (or cut at @max): one replacement character
			 * per bad byte keeps the output valid UTF-8. */
			pt_putn(b, "\xef\xbf\xbd", 3);
			i++;
			continue;
		}
		if (u[i] == '\\')
			pt_putn(b, "\\\\", 2);
		else if (u[i] == '"')
			pt_putn(b, "\\\"", 2);
		else if (u[i] == '\n')
			pt_putn(b, "\\n", 2);
		else
			pt_putn(b, s + i, k);
		i += k;
	}
}

void pt_help(struct pt_buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			pt_putn(b, "\\\\", 2);
		else if (*s == '\n')
			pt_putn(b, "\\n", 2);
		else
			pt_putn(b, s, 1);
	}
}

void pt_u64(struct pt_buf *b, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

	pt_putn(b, tmp, (size_t)n);
}

void pt_i64(struct pt_buf *b, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

	pt_putn(b, tmp, (size_t)n);
}

void pt_double(struct pt_buf *b, double v)
{
	char tmp[40];
	int n;

	if (isnan(v)) {
		pt_puts(b, "NaN");
		return;
	}
	if (isinf(v)) {
		pt_puts(b, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (v == (double)(int64_t)v && fabs(v) < 9.0e15) {
		pt_i64(b, (int64_t)v);
		return;
	}
	n = snprintf(tmp, sizeof(tmp), "%.17g", v);
	pt_putn(b, tmp, (size_t)n);
}

int pt_valid_name(const char *s, int label)
{
	size_t i;

	if (!s || !*s)
		return 0;
	if (label && s[0] == '_' && s[1] == '_')
		return 0;
	for (i = 0; s[i]; i++) {
		char c = s[i];
		int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
		            (!label && c == ':');
		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return 0;
	}
	return 1;
}
