/*
 * err: the error message that goes with a -errno from certs/.
 *
 * Every certs/ function that can fail for a reason a human must read (a bad
 * file, a key that does not match, a chain that does not verify) takes an
 * optional struct certs_err and fills it with one line, no trailing newline.
 * Passing NULL is allowed and skips the formatting.
 */
#ifndef AMBIT_CERTS_ERR_H
#define AMBIT_CERTS_ERR_H

struct certs_err {
	char msg[256];
};

/* Format into e->msg (no-op when e is NULL).  Returns -err_no so a caller
 * can write "return certs_errf(e, -EINVAL, ...)". */
int certs_errf(struct certs_err *e, int err_no, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* wolfSSL/wolfCrypt error code as text (never NULL). */
const char *certs_wolf_str(int wolf_err);

#endif
