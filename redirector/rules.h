/*
 * rules: the nftables text of the capture rules, and how to compare it.
 *
 * Pure functions, no system access: option values in, nft text out
 * (redirect_ruleset() in redirect.h writes the table itself).  The text is
 * written exactly as nft 1.0.6 lists it back, which makes `check` a
 * comparison of two listings; rules_diff() does that comparison and names
 * each difference.  Unit-tested in tests/unit/test_redirect_rules.c.
 */
#ifndef AMBIT_REDIRECT_RULES_H
#define AMBIT_REDIRECT_RULES_H

#include <stddef.h>

#include "redirector/redirect.h"
#include "redirector/textbuf.h"

/* One nft transaction that replaces (or creates) the table: "add table"
 * makes the "delete table" valid when nothing is installed yet.  Returns
 * the length, -EINVAL or -ENOSPC like redirect_ruleset(). */
int rules_install_cmd(const struct redirect_opts *o, char *buf, size_t len);

/* One transaction that deletes the table whether it exists or not. */
extern const char rules_remove_cmd[];

/*
 * Compare @actual (what `nft list table inet ambit` printed) with
 * @expected (redirect_ruleset()); blank lines and indentation do not
 * count.  Each difference is appended to @out as one line ("missing rule
 * in chain capture_out: ...").  Returns the number of differences, or
 * -ENOMEM.
 */
int rules_diff(const char *expected, const char *actual, struct textbuf *out);

#endif
