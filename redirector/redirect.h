/*
 * redirector: the capture rules of one pod network namespace.
 *
 * Owns the nftables table "ambit" (ip + ip6 families, one "inet" table) and
 * the policy routing (fwmark 0x111/0xfff -> table 100, local default route
 * via lo in table 100) inside a pod's netns.  Everything is applied
 * atomically: either the whole rule set is in place or none of it is.
 * docs/redirector.md explains each rule.
 *
 * Used by the ambit-redirect CLI and linked by the CNI plugin
 * ($(O)/lib/libambit-redirect.a, link with -lnftables -lnl-route-3 -lnl-3).
 * The install/remove/check calls are serialized by a process-wide mutex and
 * switch only the calling thread's network namespace, so they are safe in a
 * multi-threaded process.
 */
#ifndef AMBIT_REDIRECT_H
#define AMBIT_REDIRECT_H

#include <stddef.h>
#include <stdint.h>

#define REDIRECT_MAX_EXCLUDES 32
#define REDIRECT_TABLE        "ambit"     /* nft table inet ambit */
#define REDIRECT_RULE_PRIO    32764       /* ip rule priority: before main (32766) */
#define REDIRECT_RULESET_MAX  (32 * 1024) /* enough for any valid options */
#define REDIRECT_ERR_MAX      4096        /* an @err size that holds any check report */

struct redirect_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint8_t prefix_len;
};

struct redirect_opts {
	uint16_t outbound_port; /* 15001 */
	uint16_t inbound_port;  /* 15006 */
	uint16_t hbone_port;    /* 15008 */
	uint32_t proxy_mark;    /* 0x539 */
	uint32_t connmark;      /* 0x111 */
	uint32_t connmark_mask; /* 0xfff */
	uint32_t route_table;   /* 100 */
	int ipv6;               /* also install ip6 rules and routes */
	size_t n_exclude_cidrs;
	struct redirect_cidr exclude_cidrs[REDIRECT_MAX_EXCLUDES]; /* outbound dst not captured */
	size_t n_exclude_out_ports;
	uint16_t exclude_out_ports[REDIRECT_MAX_EXCLUDES]; /* outbound dst ports */
	size_t n_exclude_in_ports;
	uint16_t exclude_in_ports[REDIRECT_MAX_EXCLUDES]; /* inbound dst ports */
};

/* Fill @o with the defaults of brief section 6 (IPv6 on, no excludes). */
void redirect_opts_default(struct redirect_opts *o);

/*
 * Check @o for values the rules cannot express or that would break
 * forwarding: zero or equal ports, zero marks, a connmark outside its
 * mask, a proxy mark that matches the connmark under the mask, reserved
 * routing tables (0, 253-255), counts above REDIRECT_MAX_EXCLUDES,
 * duplicate excludes, bad prefix lengths, IPv6 CIDRs with ipv6 off.
 * Returns 0 or -EINVAL with a message in @err.  Every call below
 * validates too; this is for callers that build @o themselves.
 */
int redirect_opts_validate(const struct redirect_opts *o, char *err, size_t errlen);

/*
 * Parse "10.0.0.0/8", "10.1.2.3" (/32), "fd00::/64" or "::1" (/128) into
 * @c.  Host bits beyond the prefix are cleared.  Returns 0 or -EINVAL.
 */
int redirect_parse_cidr(const char *s, struct redirect_cidr *c);

/*
 * Write into @buf the nftables table that install applies, exactly as
 * `nft list table inet ambit` prints it back (check compares the two).
 * Returns the length written (without the NUL), -EINVAL for invalid @o,
 * or -ENOSPC when @len is too small (REDIRECT_RULESET_MAX always fits).
 */
int redirect_ruleset(const struct redirect_opts *o, char *buf, size_t len);

/*
 * Install (idempotently), remove, or check the rules inside the network
 * namespace at @netns_path (e.g. /run/netns/x or /proc/PID/ns/net).  The
 * calling thread enters the netns for the duration and returns to its own.
 * The host's initial network namespace and the calling thread's own are
 * refused (-EBUSY): the caller always sits outside the pod.
 * Return 0 or -errno; on failure a human-readable message is written to
 * @err (always NUL-terminated).  redirect_check() returns 0 when the
 * installed state matches @o exactly, 1 when it differs (what differs is
 * written to @err, one line each), or -errno when it could not look.
 *
 * install: the nft table is replaced in one transaction, then the policy
 * routing is added; if routing fails, the routing objects just added are
 * deleted and the previous table (or none) is put back.
 * remove: deletes the table and every ip rule / table route matching
 * @o's marks and table, both families; absent objects are not an error.
 */
int redirect_install(const char *netns_path, const struct redirect_opts *o, char *err,
                     size_t errlen);
int redirect_remove(const char *netns_path, const struct redirect_opts *o, char *err,
                    size_t errlen);
int redirect_check(const char *netns_path, const struct redirect_opts *o, char *err, size_t errlen);

#endif
