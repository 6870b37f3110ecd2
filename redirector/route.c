/*
 * Policy routing through libnl-route.  Deletion works from dumped objects
 * (the kernel matches deletes on protocol, metric and nexthop, which a
 * dump carries exactly), never from hand-built templates.
 */
#include "redirector/route.h"

#include <errno.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
	ROUTE_UNDO_RULE4 = 1,
	ROUTE_UNDO_ROUTE4 = 2,
	ROUTE_UNDO_RULE6 = 4,
	ROUTE_UNDO_ROUTE6 = 8,
};

static const char *fam_name(int fam)
{
	return fam == AF_INET ? "IPv4" : "IPv6";
}

static const char *any_addr(int fam)
{
	return fam == AF_INET ? "0.0.0.0/0" : "::/0";
}

/* libnl error codes carry less than errno; keep the common ones. */
static int nl_to_errno(int nlerr)
{
	switch (-nlerr) {
	case NLE_PERM:
		return -EPERM;
	case NLE_NOACCESS:
		return -EACCES;
	case NLE_EXIST:
		return -EEXIST;
	case NLE_OBJ_NOTFOUND:
		return -ENOENT;
	case NLE_NOMEM:
		return -ENOMEM;
	case NLE_INVAL:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static struct nl_sock *sock_open(struct textbuf *err)
{
	struct nl_sock *sk = nl_socket_alloc();
	int rc;

	if (!sk) {
		tb_printf(err, "netlink: out of memory");
		return NULL;
	}
	rc = nl_connect(sk, NETLINK_ROUTE);
	if (rc < 0) {
		tb_printf(err, "netlink: cannot connect: %s", nl_geterror(rc));
		nl_socket_free(sk);
		return NULL;
	}
	return sk;
}

int route_lo_up(void)
{
	struct ifreq ifr;
	int fd, rc;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	rc = ioctl(fd, SIOCGIFFLAGS, &ifr) ? -errno : !!(ifr.ifr_flags & IFF_UP);
	close(fd);
	return rc;
}

/* Caches may hold both families whatever was asked; @fam filters. */
static int rule_matches(struct rtnl_rule *r, const struct redirect_opts *o, int fam)
{
	return rtnl_rule_get_family(r) == fam && rtnl_rule_get_action(r) == FR_ACT_TO_TBL &&
	       rtnl_rule_get_mark(r) == o->connmark && rtnl_rule_get_mask(r) == o->connmark_mask &&
	       rtnl_rule_get_table(r) == o->route_table;
}

static int route_matches(struct rtnl_route *rt, const struct redirect_opts *o, int fam)
{
	struct nl_addr *dst = rtnl_route_get_dst(rt);

	return rtnl_route_get_family(rt) == fam && rtnl_route_get_table(rt) == o->route_table &&
	       dst && nl_addr_get_prefixlen(dst) == 0;
}

static int add_rule(struct nl_sock *sk, const struct redirect_opts *o, int fam, int *added,
                    struct textbuf *err)
{
	struct rtnl_rule *r = rtnl_rule_alloc();
	int rc;

	*added = 0;
	if (!r) {
		tb_printf(err, "netlink: out of memory");
		return -ENOMEM;
	}
	rtnl_rule_set_family(r, fam);
	rtnl_rule_set_prio(r, REDIRECT_RULE_PRIO);
	rtnl_rule_set_mark(r, o->connmark);
	rtnl_rule_set_mask(r, o->connmark_mask);
	rtnl_rule_set_table(r, o->route_table);
	rtnl_rule_set_action(r, FR_ACT_TO_TBL);
	/* NLM_F_EXCL: without it the kernel happily stacks duplicates */
	rc = rtnl_rule_add(sk, r, NLM_F_EXCL);
	rtnl_rule_put(r);
	if (rc == -NLE_EXIST)
		return 0;
	if (rc < 0) {
		tb_printf(err, "adding %s rule fwmark 0x%x/0x%x lookup %u: %s", fam_name(fam),
		          o->connmark, o->connmark_mask, o->route_table, nl_geterror(rc));
		return nl_to_errno(rc);
	}
	*added = 1;
	return 0;
}

static int add_route(struct nl_sock *sk, const struct redirect_opts *o, int fam, int *added,
                     struct textbuf *err)
{
	static const uint8_t zero[16];
	struct rtnl_route *rt = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	struct nl_addr *dst = nl_addr_build(fam, zero, fam == AF_INET ? 4 : 16);
	unsigned lo = if_nametoindex("lo");
	int rc;

	*added = 0;
	if (!rt || !nh || !dst) {
		tb_printf(err, "netlink: out of memory");
		rc = -ENOMEM;
		goto out;
	}
	nl_addr_set_prefixlen(dst, 0);
	rtnl_route_set_family(rt, fam);
	rtnl_route_set_table(rt, o->route_table);
	rtnl_route_set_type(rt, RTN_LOCAL);
	rc = rtnl_route_set_dst(rt, dst);
	if (rc < 0) {
		tb_printf(err, "netlink: %s", nl_geterror(rc));
		rc = nl_to_errno(rc);
		goto out;
	}
	rtnl_route_nh_set_ifindex(nh, (int)lo);
	rtnl_route_add_nexthop(rt, nh);
	nh = NULL; /* owned by rt now */
	rc = rtnl_route_add(sk, rt, NLM_F_EXCL);
	if (rc == -NLE_EXIST) {
		rc = 0;
		goto out;
	}
	if (rc < 0) {
		tb_printf(err, "adding %s route local %s dev lo table %u: %s%s", fam_name(fam),
		          any_addr(fam), o->route_table, nl_geterror(rc),
		          fam == AF_INET6 ? " (IPv6 disabled in the pod? then use --no-ipv6)" : "");
		rc = nl_to_errno(rc);
		goto out;
	}
	*added = 1;
out:
	if (nh)
		rtnl_route_nh_free(nh);
	if (dst)
		nl_addr_put(dst);
	if (rt)
		rtnl_route_put(rt);
	return rc;
}

/* Delete matching rules (@rules) or routes of one family; with @only_prio
 * set, only the rule of our priority (undoing exactly what we added). */
static int del_family(struct nl_sock *sk, const struct redirect_opts *o, int fam, int rules,
                      int only_prio, struct textbuf *err)
{
	struct nl_cache *cache = NULL;
	struct nl_object *obj;
	int rc, ret = 0;

	rc = rules ? rtnl_rule_alloc_cache(sk, fam, &cache)
	           : rtnl_route_alloc_cache(sk, fam, 0, &cache);
	if (rc == -NLE_AF_NOSUPPORT)
		return 0; /* a kernel without that family has nothing to delete */
	if (rc < 0) {
		tb_printf(err, "listing %s %s: %s", fam_name(fam), rules ? "rules" : "routes",
		          nl_geterror(rc));
		return nl_to_errno(rc);
	}
	for (obj = nl_cache_get_first(cache); obj; obj = nl_cache_get_next(obj)) {
		if (rules) {
			struct rtnl_rule *r = (struct rtnl_rule *)obj;
			if (!rule_matches(r, o, fam) ||
			    (only_prio && rtnl_rule_get_prio(r) != REDIRECT_RULE_PRIO))
				continue;
			rc = rtnl_rule_delete(sk, r, 0);
		} else {
			struct rtnl_route *rt = (struct rtnl_route *)obj;
			if (!route_matches(rt, o, fam) || rtnl_route_get_type(rt) != RTN_LOCAL)
				continue;
			rc = rtnl_route_delete(sk, rt, 0);
		}
		if (rc < 0 && rc != -NLE_OBJ_NOTFOUND && !ret) {
			tb_printf(err, "deleting %s %s: %s", fam_name(fam),
			          rules ? "rule" : "route", nl_geterror(rc));
			ret = nl_to_errno(rc);
		}
	}
	nl_cache_free(cache);
	return ret;
}

static void undo_with(struct nl_sock *sk, const struct redirect_opts *o, unsigned added)
{
	struct textbuf ignore;

	tb_init(&ignore, NULL, 0);
	if (added & ROUTE_UNDO_ROUTE6)
		del_family(sk, o, AF_INET6, 0, 1, &ignore);
	if (added & ROUTE_UNDO_RULE6)
		del_family(sk, o, AF_INET6, 1, 1, &ignore);
	if (added & ROUTE_UNDO_ROUTE4)
		del_family(sk, o, AF_INET, 0, 1, &ignore);
	if (added & ROUTE_UNDO_RULE4)
		del_family(sk, o, AF_INET, 1, 1, &ignore);
}

int route_install(const struct redirect_opts *o, struct route_undo *u, struct textbuf *err)
{
	struct nl_sock *sk;
	int rc, added;

	u->added = 0;
	sk = sock_open(err);
	if (!sk)
		return -EIO;
	rc = add_rule(sk, o, AF_INET, &added, err);
	u->added |= added ? ROUTE_UNDO_RULE4 : 0;
	if (!rc) {
		rc = add_route(sk, o, AF_INET, &added, err);
		u->added |= added ? ROUTE_UNDO_ROUTE4 : 0;
	}
	if (!rc && o->ipv6) {
		rc = add_rule(sk, o, AF_INET6, &added, err);
		u->added |= added ? ROUTE_UNDO_RULE6 : 0;
	}
	if (!rc && o->ipv6) {
		rc = add_route(sk, o, AF_INET6, &added, err);
		u->added |= added ? ROUTE_UNDO_ROUTE6 : 0;
	}
	if (rc) {
		undo_with(sk, o, u->added);
		u->added = 0;
	}
	nl_socket_free(sk);
	return rc;
}

void route_undo(const struct redirect_opts *o, const struct route_undo *u)
{
	struct textbuf ignore;
	struct nl_sock *sk;

	tb_init(&ignore, NULL, 0);
	if (!u->added)
		return;
	sk = sock_open(&ignore);
	if (!sk)
		return;
	undo_with(sk, o, u->added);
	nl_socket_free(sk);
}

int route_remove(const struct redirect_opts *o, int families, struct textbuf *err)
{
	struct nl_sock *sk = sock_open(err);
	int rc = 0, r;
	int fams[2] = { AF_INET, AF_INET6 };
	size_t i;

	if (!sk)
		return -EIO;
	for (i = 0; i < 2; i++) {
		if ((fams[i] == AF_INET && families == 6) || (fams[i] == AF_INET6 && families == 4))
			continue;
		/* a route's removal does not depend on the rule; try both */
		r = del_family(sk, o, fams[i], 1, 0, err);
		rc = rc ? rc : r;
		r = del_family(sk, o, fams[i], 0, 0, err);
		rc = rc ? rc : r;
	}
	nl_socket_free(sk);
	return rc;
}

static int check_family(struct nl_sock *sk, const struct redirect_opts *o, int fam, int want,
                        struct textbuf *diff, struct textbuf *err)
{
	struct nl_cache *rules = NULL, *routes = NULL;
	struct nl_object *obj;
	int nrules = 0, nroutes = 0, nd = 0, rc;
	int lo = (int)if_nametoindex("lo");
	const char *fn = fam_name(fam);

	rc = rtnl_rule_alloc_cache(sk, fam, &rules);
	if (rc >= 0)
		rc = rtnl_route_alloc_cache(sk, fam, 0, &routes);
	if (rc == -NLE_AF_NOSUPPORT && !want) {
		rc = 0; /* no such family in this kernel: nothing to find */
		goto out;
	}
	if (rc < 0) {
		tb_printf(err, "listing %s routing: %s", fn, nl_geterror(rc));
		rc = nl_to_errno(rc);
		goto out;
	}
	for (obj = nl_cache_get_first(rules); obj; obj = nl_cache_get_next(obj)) {
		struct rtnl_rule *r = (struct rtnl_rule *)obj;

		if (!rule_matches(r, o, fam))
			continue;
		nrules++;
		if (want && rtnl_rule_get_prio(r) != REDIRECT_RULE_PRIO) {
			tb_printf(diff,
			          "routing: %s rule fwmark 0x%x/0x%x lookup %u has priority %u, "
			          "expected %u\n",
			          fn, o->connmark, o->connmark_mask, o->route_table,
			          rtnl_rule_get_prio(r), REDIRECT_RULE_PRIO);
			nd++;
		}
	}
	for (obj = nl_cache_get_first(routes); obj; obj = nl_cache_get_next(obj)) {
		struct rtnl_route *rt = (struct rtnl_route *)obj;
		struct rtnl_nexthop *nh;

		if (!route_matches(rt, o, fam))
			continue;
		nroutes++;
		nh = rtnl_route_nexthop_n(rt, 0);
		if (want && (rtnl_route_get_type(rt) != RTN_LOCAL || !nh ||
		             rtnl_route_nh_get_ifindex(nh) != lo)) {
			tb_printf(diff,
			          "routing: %s default route in table %u is not "
			          "'local %s dev lo'\n",
			          fn, o->route_table, any_addr(fam));
			nd++;
		}
	}
	if (nrules != want) {
		tb_printf(diff, "routing: %s ip rule fwmark 0x%x/0x%x lookup %u: %s\n", fn,
		          o->connmark, o->connmark_mask, o->route_table,
		          nrules < want ? "missing"
		          : want        ? "present more than once"
		                        : "present but IPv6 is off");
		nd++;
	}
	if (nroutes != want && !(nroutes > 1 && want)) {
		tb_printf(diff, "routing: %s route local %s dev lo table %u: %s\n", fn,
		          any_addr(fam), o->route_table,
		          nroutes < want ? "missing" : "present but IPv6 is off");
		nd++;
	}
	rc = nd;
out:
	if (rules)
		nl_cache_free(rules);
	if (routes)
		nl_cache_free(routes);
	return rc;
}

int route_check(const struct redirect_opts *o, struct textbuf *diff, struct textbuf *err)
{
	struct nl_sock *sk = sock_open(err);
	int n4, n6 = 0;

	if (!sk)
		return -EIO;
	n4 = check_family(sk, o, AF_INET, 1, diff, err);
	if (n4 >= 0)
		n6 = check_family(sk, o, AF_INET6, o->ipv6 ? 1 : 0, diff, err);
	nl_socket_free(sk);
	if (n4 < 0)
		return n4;
	if (n6 < 0)
		return n6;
	return n4 + n6;
}
