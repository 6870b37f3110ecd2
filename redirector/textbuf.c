#include "redirector/textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void tb_init(struct textbuf *t, char *buf, size_t cap)
{
	t->buf = buf;
	t->cap = cap;
	t->len = 0;
	t->overflow = 0;
	if (cap)
		buf[0] = '\0';
}

void tb_printf(struct textbuf *t, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	int n;

	if (t->overflow || !t->cap) {
		t->overflow = 1;
		return;
	}
	room = t->cap - t->len;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, room, fmt, ap);
	va_end(ap);
	if (n < 0) {
		t->buf[t->len] = '\0';
		t->overflow = 1;
		return;
	}
	if ((size_t)n >= room) {
		/* vsnprintf left a cut, terminated string; keep it */
		t->len = t->cap - 1;
		t->overflow = 1;
		return;
	}
	t->len += (size_t)n;
}

void tb_mark_cut(struct textbuf *t)
{
	if (!t->overflow || t->cap < 4)
		return;
	memcpy(t->buf + t->cap - 4, "...", 4);
}
