/*
 * confdir: reading a directory of INI files (policies.d, services.d) with
 * inih, with exact line numbers, plus the value syntaxes both share: comma
 * lists, label selectors, ports, IPs and CIDRs.
 *
 * Untrusted input: every file is read whole into a bounded buffer
 * (CONFDIR_MAX_FILE_SIZE), every line is bounded (CONFDIR_MAX_LINE), NUL
 * bytes are refused, and section headers are parsed here (inih, as Debian
 * builds it, neither reports line numbers nor empty sections), so that an
 * empty section like a match-all rule still exists.  Errors are collected as
 * "FILE:LINE: message" strings, bounded in number.
 */
#ifndef AMBIT_NP_CONFDIR_H
#define AMBIT_NP_CONFDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node-proxy/workload.h"

#define CONFDIR_MAX_FILES     256
#define CONFDIR_MAX_FILE_SIZE (256 * 1024)
#define CONFDIR_MAX_LINE      196 /* inih's line buffer is 200 with CR, LF and NUL */
#define CONFDIR_MAX_ERRORS    32
#define CONFDIR_ERR_LEN       320
#define SELECTOR_MAX_LABELS   16

struct conf_errors {
	unsigned n;       /* messages kept in msg[] */
	unsigned dropped; /* further errors not kept */
	char msg[CONFDIR_MAX_ERRORS][CONFDIR_ERR_LEN];
};

void conf_errors_init(struct conf_errors *e);
/* Record "FILE:LINE: message" (line 0: "FILE: message"); @e NULL: drop it. */
void conf_error(struct conf_errors *e, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Append the messages of @src to @dst (NULL: nothing). */
void conf_errors_merge(struct conf_errors *dst, const struct conf_errors *src);
/* Total number of errors seen (kept + dropped). */
static inline unsigned conf_errors_count(const struct conf_errors *e)
{
	return e->n + e->dropped;
}

/*
 * Callbacks of one parse.  section() is called for every "[TYPE NAME]"
 * header, with the header's text stripped of brackets and outer blanks
 * (NULL for a header that was refused: ignore keys up to the next one);
 * kv() for every "key = value" (continuation lines of a value arrive as
 * separate calls with the same key).  Both record errors themselves through
 * conf_error() and return 0 to go on (a parse never stops at the first
 * error, so one run reports as much as possible).
 */
struct confdir_ops {
	void (*section)(void *ctx, const char *file, int line, const char *header);
	void (*kv)(void *ctx, const char *file, int line, const char *key, const char *value);
};

/* Parse @len bytes of one file called @file (used in messages).  Returns
 * the number of new errors recorded in @e (0: clean). */
unsigned confdir_parse_buf(const char *file, const char *buf, size_t len,
                           const struct confdir_ops *ops, void *ctx, struct conf_errors *e);

/* Parse every "*.ini" file of @dir (hidden files skipped) in name order.
 * A missing directory is an error; an empty one is not.  Returns the number
 * of new errors recorded in @e. */
unsigned confdir_parse_dir(const char *dir, const struct confdir_ops *ops, void *ctx,
                           struct conf_errors *e);

/* Split a comma-separated list in place: returns the next item stripped of
 * blanks (possibly ""), or NULL at the end.  *cur starts at the string. */
char *conf_next_item(char **cur);

/* Label selector "k=v, k2=v2": all must match.  An empty selector matches
 * every workload. */
struct selector {
	unsigned n;
	struct {
		char key[WL_LABEL_KEY_MAX];
		char val[WL_LABEL_VAL_MAX];
	} m[SELECTOR_MAX_LABELS];
};

/* Add the pairs of @value to @sel.  0, or -EINVAL with a reason in @err. */
int selector_parse(struct selector *sel, const char *value, char *err, size_t errlen);
bool selector_matches(const struct selector *sel, const struct workload *w);
/* The value of label @key on @w, or NULL. */
const char *workload_label(const struct workload *w, const char *key);

/* Kubernetes names: a DNS-1123 label (namespace) of 1..63 [a-z0-9-]. */
bool conf_valid_dns_label(const char *s);
/* A policy/service name: 1..253 of [a-z0-9.-], starting and ending alnum. */
bool conf_valid_name(const char *s);

/* Decimal integer in [min, max].  0 or -EINVAL. */
int conf_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);

/* An address, or a CIDR "addr/len" with no host bits set; a bare address
 * is /32 or /128.  0, or -EINVAL with a reason in @err. */
struct cidr {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t plen;
	uint8_t addr[16];
};
int cidr_parse(const char *s, struct cidr *c, char *err, size_t errlen);
bool cidr_contains(const struct cidr *c, const struct wl_ip *ip);
int conf_parse_ip(const char *s, struct wl_ip *ip);
bool wl_ip_equal(const struct wl_ip *a, const struct wl_ip *b);

#endif
