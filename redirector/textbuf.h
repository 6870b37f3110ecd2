/*
 * textbuf: bounded text output into a caller's buffer.
 *
 * The rule generator, the check report and every error message are built
 * with it.  Writes never run past the buffer: on overflow the text is cut,
 * stays NUL-terminated and the overflow flag is set, so a caller can turn
 * it into -ENOSPC (rules) or an ellipsis (messages).  The buffer is
 * borrowed, never freed here.
 */
#ifndef AMBIT_REDIRECT_TEXTBUF_H
#define AMBIT_REDIRECT_TEXTBUF_H

#include <stddef.h>

struct textbuf {
	char *buf;
	size_t cap;
	size_t len;
	int overflow;
};

/* @cap may be 0 (then nothing is ever written, only overflow is set). */
void tb_init(struct textbuf *t, char *buf, size_t cap);
void tb_printf(struct textbuf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Replace the tail by "..." if the text was cut. */
void tb_mark_cut(struct textbuf *t);

#endif
