/*
 * route: the policy routing that brings transparent-proxy return traffic
 * home: "ip rule fwmark CONNMARK/MASK lookup TABLE" and "local default
 * dev lo table TABLE", per address family, through libnl-route.
 *
 * Works in the calling thread's current network namespace (the caller has
 * entered the pod's).  The rule is identified by mark, mask, table and
 * action; the route by table and default destination.
 */
#ifndef AMBIT_REDIRECT_ROUTE_H
#define AMBIT_REDIRECT_ROUTE_H

#include "redirector/redirect.h"
#include "redirector/textbuf.h"

/* What route_install() created (as opposed to found in place), so that a
 * failed install deletes exactly that. */
struct route_undo {
	unsigned added; /* ROUTE_UNDO_* bits */
};

/* Add rule and route for IPv4, and IPv6 unless o->ipv6 is 0; objects
 * already present are fine.  On failure the objects added by this call
 * are deleted again and -errno is returned with a message in @err. */
int route_install(const struct redirect_opts *o, struct route_undo *u, struct textbuf *err);

/* Delete what @u says route_install() added (after a later failure). */
void route_undo(const struct redirect_opts *o, const struct route_undo *u);

/* Delete every matching rule and route; @families: 4, 6 or 46 (both).
 * Absent objects are not an error.  0 or -errno with a message. */
int route_remove(const struct redirect_opts *o, int families, struct textbuf *err);

/* Compare with what route_install() would leave: one line per difference
 * appended to @diff.  Returns the number of differences or -errno. */
int route_check(const struct redirect_opts *o, struct textbuf *diff, struct textbuf *err);

/* 1 when lo exists and is up, 0 when down, -errno when unknown. */
int route_lo_up(void);

#endif
