/*
 * The redirector's coordinator: enter the namespace, apply or compare the
 * nft table and the policy routing, leave.  Parsing and generation live
 * in opts.c and rules.c; this file decides order and rollback.
 */
#include "redirector/redirect.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "redirector/netns.h"
#include "redirector/nft.h"
#include "redirector/route.h"
#include "redirector/rules.h"
#include "redirector/textbuf.h"

/* libnftables keeps some process-wide state (its parser's symbol tables,
 * cache of kernel features); one operation at a time keeps it simple. */
static pthread_mutex_t redirect_lock = PTHREAD_MUTEX_INITIALIZER;

enum op { OP_INSTALL, OP_REMOVE, OP_CHECK };

/* Put the table back as it was before a failed install: the previous
 * listing, or nothing.  One transaction, like the install itself. */
static void nft_restore(const char *prev)
{
	struct textbuf ignore;
	char *buf;
	size_t n;

	tb_init(&ignore, NULL, 0);
	if (!prev) {
		nftw_run(rules_remove_cmd, &ignore);
		return;
	}
	n = strlen(rules_remove_cmd) + strlen(prev) + 1;
	buf = malloc(n);
	if (!buf) {
		nftw_run(rules_remove_cmd, &ignore);
		return;
	}
	memcpy(buf, rules_remove_cmd, strlen(rules_remove_cmd));
	memcpy(buf + strlen(rules_remove_cmd), prev, strlen(prev) + 1);
	nftw_run(buf, &ignore);
	free(buf);
}

static int do_install(const struct redirect_opts *o, struct textbuf *e)
{
	struct route_undo undo;
	char *script = NULL, *prev = NULL;
	int rc, lo;

	lo = route_lo_up();
	if (lo <= 0) {
		tb_printf(e,
		          "the loopback interface is %s in this namespace; captured "
		          "connections are redirected through it (ip link set lo up)",
		          lo == 0 ? "down" : "missing");
		return -ENETDOWN;
	}
	script = malloc(REDIRECT_RULESET_MAX);
	if (!script) {
		tb_printf(e, "out of memory");
		return -ENOMEM;
	}
	rc = rules_install_cmd(o, script, REDIRECT_RULESET_MAX);
	if (rc < 0) {
		tb_printf(e, "cannot generate the rule set: %s", strerror(-rc));
		goto out;
	}
	rc = nftw_list(&prev, e);
	if (rc && rc != -ENOENT)
		goto out;
	rc = nftw_run(script, e);
	if (rc)
		goto out; /* one transaction: nothing changed */
	rc = route_install(o, &undo, e);
	if (rc) {
		/* route_install removed what it added; now the table */
		nft_restore(prev);
		goto out;
	}
	/* objects of a family switched off by this install are stale */
	if (!o->ipv6) {
		rc = route_remove(o, 6, e);
		if (rc) {
			route_undo(o, &undo);
			nft_restore(prev);
		}
	}
out:
	free(prev);
	free(script);
	return rc;
}

static int do_remove(const struct redirect_opts *o, struct textbuf *e)
{
	char rbuf[512];
	struct textbuf re;
	int rc, r2;

	rc = nftw_run(rules_remove_cmd, e);
	/* routing goes too even when nft failed: leave as little as possible */
	tb_init(&re, rbuf, sizeof(rbuf));
	r2 = route_remove(o, 46, &re);
	if (r2)
		tb_printf(e, "%s%s", rc ? "; " : "", rbuf);
	return rc ? rc : r2;
}

static int do_check(const struct redirect_opts *o, struct textbuf *e)
{
	struct textbuf diff;
	char *expected = NULL, *actual = NULL;
	char *dbuf = NULL;
	int rc, nd = 0;

	expected = malloc(REDIRECT_RULESET_MAX);
	dbuf = malloc(REDIRECT_ERR_MAX);
	if (!expected || !dbuf) {
		tb_printf(e, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	tb_init(&diff, dbuf, REDIRECT_ERR_MAX);
	rc = redirect_ruleset(o, expected, REDIRECT_RULESET_MAX);
	if (rc < 0) {
		tb_printf(e, "cannot generate the rule set: %s", strerror(-rc));
		goto out;
	}
	rc = nftw_list(&actual, e);
	if (rc == -ENOENT) {
		tb_printf(&diff, "nft: missing table inet %s\n", REDIRECT_TABLE);
		nd++;
	} else if (rc) {
		goto out;
	} else {
		rc = rules_diff(expected, actual, &diff);
		if (rc < 0) {
			tb_printf(e, "out of memory");
			goto out;
		}
		nd += rc;
	}
	rc = route_check(o, &diff, e);
	if (rc < 0)
		goto out;
	nd += rc;
	rc = nd ? 1 : 0;
	if (nd) {
		/* drop the last newline; the caller prints its own */
		if (diff.len && dbuf[diff.len - 1] == '\n')
			dbuf[--diff.len] = '\0';
		tb_mark_cut(&diff);
		tb_printf(e, "%s", dbuf);
	}
out:
	free(expected);
	free(actual);
	free(dbuf);
	return rc;
}

static int run(enum op op, const char *path, const struct redirect_opts *o, char *err,
               size_t errlen)
{
	struct netns_guard g;
	struct textbuf e;
	int rc;

	tb_init(&e, err, errlen);
	if (!path || !o) {
		tb_printf(&e, "no network namespace path given");
		return -EINVAL;
	}
	rc = redirect_opts_validate(o, err, errlen);
	if (rc)
		return rc;
	pthread_mutex_lock(&redirect_lock);
	rc = netns_enter(path, &g, &e);
	if (rc)
		goto out;
	if (op == OP_INSTALL)
		rc = do_install(o, &e);
	else if (op == OP_REMOVE)
		rc = do_remove(o, &e);
	else
		rc = do_check(o, &e);
	netns_leave(&g);
out:
	pthread_mutex_unlock(&redirect_lock);
	tb_mark_cut(&e);
	return rc;
}

int redirect_install(const char *netns_path, const struct redirect_opts *o, char *err,
                     size_t errlen)
{
	return run(OP_INSTALL, netns_path, o, err, errlen);
}

int redirect_remove(const char *netns_path, const struct redirect_opts *o, char *err, size_t errlen)
{
	return run(OP_REMOVE, netns_path, o, err, errlen);
}

int redirect_check(const char *netns_path, const struct redirect_opts *o, char *err, size_t errlen)
{
	return run(OP_CHECK, netns_path, o, err, errlen);
}
