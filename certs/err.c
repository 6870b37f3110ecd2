/* err: error messages for certs/, see err.h. */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <stdarg.h>
#include <stdio.h>

#include "certs/err.h"

int certs_errf(struct certs_err *e, int err_no, const char *fmt, ...)
{
	va_list ap;

	if (e) {
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return err_no;
}

const char *certs_wolf_str(int wolf_err)
{
	const char *s = wc_GetErrorString(wolf_err);

	return s ? s : "unknown wolfSSL error";
}
