/*
 * redirector: the capture rules of one pod network namespace.
 *
 * Owns the nftables table "ambit" (ip + ip6 families, one "inet" table) and
 * the policy routing (fwmark 0x111/0xfff -> table 100, local default route
 * via lo in table 100) inside a pod's netns.  Everything is applied
 * atomically: either the whole rule set is in place or none of it is.
 *
 * Used by the ambit-redirect CLI and linked by the CNI plugin.
 */
#ifndef AMBIT_REDIRECT_H
#define AMBIT_REDIRECT_H

#include <stddef.h>
#include <stdint.h>

#define REDIRECT_MAX_EXCLUDES 32

struct redirect_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint8_t prefix_len;
};

struct redirect_opts {
	uint16_t outbound_port;  /* 15001 */
	uint16_t inbound_port;   /* 15006 */
	uint16_t hbone_port;     /* 15008 */
	uint32_t proxy_mark;     /* 0x539 */
	uint32_t connmark;       /* 0x111 */
	uint32_t connmark_mask;  /* 0xfff */
	uint32_t route_table;    /* 100 */
	int ipv6;                /* also install ip6 rules and routes */
	size_t n_exclude_cidrs;
	struct redirect_cidr exclude_cidrs[REDIRECT_MAX_EXCLUDES];   /* outbound dst not captured */
	size_t n_exclude_out_ports;
	uint16_t exclude_out_ports[REDIRECT_MAX_EXCLUDES];           /* outbound dst ports */
	size_t n_exclude_in_ports;
	uint16_t exclude_in_ports[REDIRECT_MAX_EXCLUDES];            /* inbound dst ports */
};

/* Fill @o with the defaults of brief section 6. */
void redirect_opts_default(struct redirect_opts *o);

/*
 * Install (idempotently), remove, or check the rules inside the network
 * namespace at @netns_path (e.g. /run/netns/x or /proc/PID/ns/net).  The
 * calling thread enters the netns for the duration and returns to its own.
 * Return 0 or -errno; on failure a human-readable message is written to
 * @err (always NUL-terminated).  redirect_check() returns 0 when the
 * installed state matches @o exactly, 1 when it differs (what differs is
 * written to @err), or -errno when it could not look.
 */
int redirect_install(const char *netns_path, const struct redirect_opts *o, char *err,
		     size_t errlen);
int redirect_remove(const char *netns_path, const struct redirect_opts *o, char *err,
		    size_t errlen);
int redirect_check(const char *netns_path, const struct redirect_opts *o, char *err,
		   size_t errlen);

#endif
