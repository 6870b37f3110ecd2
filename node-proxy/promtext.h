/*
 * promtext: a growable text buffer and the escaping rules of the Prometheus
 * text exposition format 0.0.4, used by the metrics renderer.
 *
 * Label values are made safe for any input bytes: backslash, double quote
 * and newline are escaped as the format requires, invalid UTF-8 becomes
 * U+FFFD (the format requires UTF-8), and a value is cut at a byte limit on
 * a character boundary.  An allocation failure latches pt_buf.err; callers
 * check it once at the end instead of after every append.
 */
#ifndef AMBIT_NP_PROMTEXT_H
#define AMBIT_NP_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

struct pt_buf {
	char *p; /* NUL-terminated when len > 0; owned, free with pt_free */
	size_t len, cap;
	int err; /* -ENOMEM once any append failed */
};

void pt_init(struct pt_buf *b);
void pt_free(struct pt_buf *b);
void pt_putn(struct pt_buf *b, const char *s, size_t n);
void pt_puts(struct pt_buf *b, const char *s);
void pt_printf(struct pt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append @s (NUL-terminated, any bytes; NULL or "" as @dflt) escaped as a
 * label value, without the quotes, reading at most @max input bytes and
 * stopping early on a UTF-8 character boundary. */
void pt_label_value(struct pt_buf *b, const char *s, size_t max, const char *dflt);
/* Append a HELP text: escapes backslash and newline. */
void pt_help(struct pt_buf *b, const char *s);
/* Append a sample value: integers exactly, NaN/+Inf/-Inf spelled as the
 * format wants, other doubles with enough digits to round-trip. */
void pt_u64(struct pt_buf *b, uint64_t v);
void pt_i64(struct pt_buf *b, int64_t v);
void pt_double(struct pt_buf *b, double v);

/* 1 if @s is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), label name
 * ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__") with @label set. */
int pt_valid_name(const char *s, int label);

/* Length of the valid UTF-8 sequence at @s (1..4) within @n bytes, or 0
 * if the bytes there are not valid UTF-8 (overlong, surrogate, > U+10FFFF,
 * truncated).  Shared with the access log's JSON writer. */
size_t pt_utf8_len(const uint8_t *s, size_t n);

#endif
