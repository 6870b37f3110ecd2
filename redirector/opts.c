/*
 * Option parsing and validation of the redirector.  argv is untrusted in
 * the sense that matters here: it comes from scripts and CNI configs, so
 * every value is checked before anything is generated from it.
 */
#include "redirector/opts.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "redirector/textbuf.h"

const char redirect_usage[] =
    "usage: ambit-redirect install|remove|check --netns PATH [options]\n"
    "  --netns PATH               pod network namespace (/run/netns/NAME, /proc/PID/ns/net)\n"
    "  --outbound-port P          outbound capture port (15001)\n"
    "  --inbound-port P           inbound plaintext capture port (15006)\n"
    "  --hbone-port P             HBONE port, never captured (15008)\n"
    "  --proxy-mark M             SO_MARK of the proxy's sockets, never captured (0x539)\n"
    "  --connmark M/MASK          mark of transparent-proxy return traffic (0x111/0xfff)\n"
    "  --table N                  routing table for that mark (100)\n"
    "  --exclude-cidr CIDR        outbound destination not captured (repeatable, max 32)\n"
    "  --exclude-port P           outbound destination port not captured (repeatable, max 32)\n"
    "  --exclude-inbound-port P   inbound destination port not captured (repeatable, max 32)\n"
    "  --no-ipv6                  capture and route IPv4 only\n"
    "  --dry-run                  print the nft rule set and routing, change nothing\n"
    "exit: 0 ok, 1 check found differences, 2 error\n";

void redirect_opts_default(struct redirect_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->outbound_port = 15001;
	o->inbound_port = 15006;
	o->hbone_port = 15008;
	o->proxy_mark = 0x539;
	o->connmark = 0x111;
	o->connmark_mask = 0xfff;
	o->route_table = 100;
	o->ipv6 = 1;
}

static int digit_val(char c, int hex)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (hex && c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (hex && c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Strict unsigned parse of the whole string: decimal, or 0x hex when
 * @allow_hex.  Rejects "", signs, blanks, trailing bytes and overflow. */
static int parse_uint(const char *s, uint64_t max, int allow_hex, uint64_t *out)
{
	unsigned base = 10;
	uint64_t v = 0;
	int d;

	if (!s || !*s)
		return -EINVAL;
	if (allow_hex && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (!*s)
			return -EINVAL;
	}
	for (; *s; s++) {
		d = digit_val(*s, base == 16);
		if (d < 0)
			return -EINVAL;
		v = v * base + (unsigned)d;
		if (v > max)
			return -ERANGE;
	}
	*out = v;
	return 0;
}

int redirect_parse_port(const char *s, uint16_t *out)
{
	uint64_t v;
	int rc = parse_uint(s, 65535, 0, &v);

	if (rc)
		return rc;
	if (v == 0)
		return -ERANGE;
	*out = (uint16_t)v;
	return 0;
}

int redirect_parse_u32(const char *s, uint32_t *out)
{
	uint64_t v;
	int rc = parse_uint(s, UINT32_MAX, 1, &v);

	if (rc)
		return rc;
	*out = (uint32_t)v;
	return 0;
}

int redirect_parse_mark_mask(const char *s, uint32_t *mark, uint32_t *mask)
{
	char tmp[32];
	const char *slash = strchr(s, '/');
	size_t n;
	int rc;

	if (!slash) {
		*mask = UINT32_MAX;
		return redirect_parse_u32(s, mark);
	}
	n = (size_t)(slash - s);
	if (n >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	rc = redirect_parse_u32(tmp, mark);
	if (rc)
		return rc;
	return redirect_parse_u32(slash + 1, mask);
}

static void clear_host_bits(struct redirect_cidr *c)
{
	size_t bytes = c->family == AF_INET ? 4 : 16;
	size_t i;

	for (i = 0; i < bytes; i++) {
		unsigned bit0 = (unsigned)i * 8;
		if (bit0 >= c->prefix_len)
			c->addr[i] = 0;
		else if (bit0 + 8 > c->prefix_len)
			c->addr[i] &= (uint8_t)(0xff00u >> (c->prefix_len - bit0));
	}
}

int redirect_parse_cidr(const char *s, struct redirect_cidr *c)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	uint64_t plen;
	int max;

	if (n == 0 || n >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, n);
	addr[n] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, addr, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	if (slash) {
		if (parse_uint(slash + 1, (uint64_t)max, 0, &plen))
			return -EINVAL;
	} else {
		plen = (uint64_t)max;
	}
	c->prefix_len = (uint8_t)plen;
	clear_host_bits(c);
	return 0;
}

static int cidr_equal(const struct redirect_cidr *a, const struct redirect_cidr *b)
{
	struct redirect_cidr x = *a, y = *b;

	clear_host_bits(&x);
	clear_host_bits(&y);
	return x.family == y.family && x.prefix_len == y.prefix_len &&
	       !memcmp(x.addr, y.addr, x.family == AF_INET ? 4 : 16);
}

static int check_ports(const uint16_t *p, size_t n, const char *what, struct textbuf *e)
{
	size_t i, j;

	if (n > REDIRECT_MAX_EXCLUDES) {
		tb_printf(e, "too many %s (at most %d)", what, REDIRECT_MAX_EXCLUDES);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		if (p[i] == 0) {
			tb_printf(e, "%s: port 0 is not a port", what);
			return -EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (p[i] == p[j]) {
				tb_printf(e, "%s %u given twice", what, p[i]);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int redirect_opts_validate(const struct redirect_opts *o, char *err, size_t errlen)
{
	struct textbuf e;
	size_t i, j;
	int rc;

	tb_init(&e, err, errlen);
	if (!o->outbound_port || !o->inbound_port || !o->hbone_port) {
		tb_printf(&e, "ports must be 1-65535");
		return -EINVAL;
	}
	if (o->outbound_port == o->inbound_port || o->outbound_port == o->hbone_port ||
	    o->inbound_port == o->hbone_port) {
		tb_printf(&e, "outbound (%u), inbound (%u) and HBONE (%u) ports must differ",
		          o->outbound_port, o->inbound_port, o->hbone_port);
		return -EINVAL;
	}
	if (!o->proxy_mark) {
		tb_printf(&e, "the proxy mark must not be 0 (unmarked traffic is the app's)");
		return -EINVAL;
	}
	if (!o->connmark || !o->connmark_mask || (o->connmark & ~o->connmark_mask)) {
		tb_printf(&e,
		          "connmark 0x%x/0x%x: mark and mask must be non-zero, mark inside mask",
		          o->connmark, o->connmark_mask);
		return -EINVAL;
	}
	if ((o->proxy_mark & o->connmark_mask) == o->connmark) {
		/* the proxy's outbound sockets would be routed to the local table */
		tb_printf(&e, "proxy mark 0x%x matches connmark 0x%x/0x%x", o->proxy_mark,
		          o->connmark, o->connmark_mask);
		return -EINVAL;
	}
	if (o->route_table == 0 || (o->route_table >= 253 && o->route_table <= 255)) {
		tb_printf(&e, "routing table %u is reserved (0, 253 default, 254 main, 255 local)",
		          o->route_table);
		return -EINVAL;
	}
	if (o->n_exclude_cidrs > REDIRECT_MAX_EXCLUDES) {
		tb_printf(&e, "too many --exclude-cidr (at most %d)", REDIRECT_MAX_EXCLUDES);
		return -EINVAL;
	}
	for (i = 0; i < o->n_exclude_cidrs; i++) {
		const struct redirect_cidr *c = &o->exclude_cidrs[i];

		if ((c->family != AF_INET && c->family != AF_INET6) ||
		    c->prefix_len > (c->family == AF_INET ? 32 : 128)) {
			tb_printf(&e, "--exclude-cidr #%zu: bad family or prefix length", i + 1);
			return -EINVAL;
		}
		if (c->family == AF_INET6 && !o->ipv6) {
			tb_printf(&e, "--exclude-cidr #%zu is IPv6 but IPv6 is off (--no-ipv6)",
			          i + 1);
			return -EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (cidr_equal(c, &o->exclude_cidrs[j])) {
				tb_printf(&e, "--exclude-cidr #%zu repeats #%zu", i + 1, j + 1);
				return -EINVAL;
			}
		}
	}
	rc = check_ports(o->exclude_out_ports, o->n_exclude_out_ports, "--exclude-port", &e);
	if (!rc)
		rc = check_ports(o->exclude_in_ports, o->n_exclude_in_ports,
		                 "--exclude-inbound-port", &e);
	return rc;
}

/* --- command line ---------------------------------------------------------- */

enum opt_id {
	OPT_NETNS,
	OPT_OUT_PORT,
	OPT_IN_PORT,
	OPT_HBONE_PORT,
	OPT_PROXY_MARK,
	OPT_CONNMARK,
	OPT_TABLE,
	OPT_EXCL_CIDR,
	OPT_EXCL_PORT,
	OPT_EXCL_IN_PORT,
	OPT_NO_IPV6,
	OPT_DRY_RUN,
	OPT_HELP,
};

static const struct {
	const char *name;
	int has_arg;
	enum opt_id id;
} options[] = {
	{ "--netns", 1, OPT_NETNS },
	{ "--outbound-port", 1, OPT_OUT_PORT },
	{ "--inbound-port", 1, OPT_IN_PORT },
	{ "--hbone-port", 1, OPT_HBONE_PORT },
	{ "--proxy-mark", 1, OPT_PROXY_MARK },
	{ "--connmark", 1, OPT_CONNMARK },
	{ "--table", 1, OPT_TABLE },
	{ "--exclude-cidr", 1, OPT_EXCL_CIDR },
	{ "--exclude-port", 1, OPT_EXCL_PORT },
	{ "--exclude-inbound-port", 1, OPT_EXCL_IN_PORT },
	{ "--no-ipv6", 0, OPT_NO_IPV6 },
	{ "--dry-run", 0, OPT_DRY_RUN },
	{ "--help", 0, OPT_HELP },
	{ "-h", 0, OPT_HELP },
};

static int add_port(uint16_t *list, size_t *n, const char *name, const char *val, struct textbuf *e)
{
	uint16_t p;

	if (*n >= REDIRECT_MAX_EXCLUDES) {
		tb_printf(e, "too many %s (at most %d)", name, REDIRECT_MAX_EXCLUDES);
		return -EINVAL;
	}
	if (redirect_parse_port(val, &p)) {
		tb_printf(e, "%s '%.40s': not a port (1-65535)", name, val);
		return -EINVAL;
	}
	list[(*n)++] = p;
	return 0;
}

static int apply_opt(struct redirect_cli *cli, enum opt_id id, const char *name, const char *val,
                     struct textbuf *e)
{
	struct redirect_opts *o = &cli->opts;
	uint16_t *port = NULL;

	switch (id) {
	case OPT_NETNS:
		if (cli->netns) {
			tb_printf(e, "--netns given twice");
			return -EINVAL;
		}
		if (!*val) {
			tb_printf(e, "--netns: empty path");
			return -EINVAL;
		}
		cli->netns = val;
		return 0;
	case OPT_OUT_PORT:
		port = &o->outbound_port;
		break;
	case OPT_IN_PORT:
		port = &o->inbound_port;
		break;
	case OPT_HBONE_PORT:
		port = &o->hbone_port;
		break;
	case OPT_PROXY_MARK:
		if (redirect_parse_u32(val, &o->proxy_mark)) {
			tb_printf(e, "--proxy-mark '%.40s': not a 32-bit mark", val);
			return -EINVAL;
		}
		return 0;
	case OPT_CONNMARK:
		if (redirect_parse_mark_mask(val, &o->connmark, &o->connmark_mask)) {
			tb_printf(e, "--connmark '%.40s': expected MARK/MASK, e.g. 0x111/0xfff",
			          val);
			return -EINVAL;
		}
		return 0;
	case OPT_TABLE:
		if (redirect_parse_u32(val, &o->route_table)) {
			tb_printf(e, "--table '%.40s': not a table number", val);
			return -EINVAL;
		}
		return 0;
	case OPT_EXCL_CIDR:
		if (o->n_exclude_cidrs >= REDIRECT_MAX_EXCLUDES) {
			tb_printf(e, "too many --exclude-cidr (at most %d)", REDIRECT_MAX_EXCLUDES);
			return -EINVAL;
		}
		if (redirect_parse_cidr(val, &o->exclude_cidrs[o->n_exclude_cidrs])) {
			tb_printf(e, "--exclude-cidr '%.60s': not an IPv4/IPv6 address or CIDR",
			          val);
			return -EINVAL;
		}
		o->n_exclude_cidrs++;
		return 0;
	case OPT_EXCL_PORT:
		return add_port(o->exclude_out_ports, &o->n_exclude_out_ports, name, val, e);
	case OPT_EXCL_IN_PORT:
		return add_port(o->exclude_in_ports, &o->n_exclude_in_ports, name, val, e);
	case OPT_NO_IPV6:
		o->ipv6 = 0;
		return 0;
	case OPT_DRY_RUN:
		cli->dry_run = 1;
		return 0;
	case OPT_HELP:
		cli->help = 1;
		return 0;
	}
	if (redirect_parse_port(val, port)) {
		tb_printf(e, "%s '%.40s': not a port (1-65535)", name, val);
		return -EINVAL;
	}
	return 0;
}

static int parse_command(const char *s, enum redirect_cmd *cmd)
{
	if (!strcmp(s, "install"))
		*cmd = REDIRECT_CMD_INSTALL;
	else if (!strcmp(s, "remove"))
		*cmd = REDIRECT_CMD_REMOVE;
	else if (!strcmp(s, "check"))
		*cmd = REDIRECT_CMD_CHECK;
	else
		return -EINVAL;
	return 0;
}

int redirect_cli_parse(int argc, char *const argv[], struct redirect_cli *cli, char *err,
                       size_t errlen)
{
	struct textbuf e;
	int i, rc;

	tb_init(&e, err, errlen);
	memset(cli, 0, sizeof(*cli));
	redirect_opts_default(&cli->opts);

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *eq, *val = NULL;
		size_t k, nlen;

		if (a[0] != '-') {
			if (cli->cmd != REDIRECT_CMD_NONE) {
				tb_printf(&e, "unexpected argument '%.40s'", a);
				return -EINVAL;
			}
			if (parse_command(a, &cli->cmd)) {
				tb_printf(&e, "unknown command '%.40s' (install, remove or check)",
				          a);
				return -EINVAL;
			}
			continue;
		}
		eq = strchr(a, '=');
		nlen = eq ? (size_t)(eq - a) : strlen(a);
		for (k = 0; k < sizeof(options) / sizeof(options[0]); k++) {
			if (strlen(options[k].name) == nlen && !strncmp(options[k].name, a, nlen))
				break;
		}
		if (k == sizeof(options) / sizeof(options[0])) {
			tb_printf(&e, "unknown option '%.*s'", (int)(nlen > 40 ? 40 : nlen), a);
			return -EINVAL;
		}
		if (options[k].has_arg) {
			if (eq) {
				val = eq + 1;
			} else if (i + 1 < argc) {
				val = argv[++i];
			} else {
				tb_printf(&e, "%s needs a value", options[k].name);
				return -EINVAL;
			}
		} else if (eq) {
			tb_printf(&e, "%s takes no value", options[k].name);
			return -EINVAL;
		}
		rc = apply_opt(cli, options[k].id, options[k].name, val, &e);
		if (rc)
			return rc;
		if (cli->help)
			return 0;
	}
	if (cli->cmd == REDIRECT_CMD_NONE) {
		tb_printf(&e, "missing command (install, remove or check)");
		return -EINVAL;
	}
	if (!cli->netns && !cli->dry_run) {
		tb_printf(&e, "missing --netns PATH");
		return -EINVAL;
	}
	return redirect_opts_validate(&cli->opts, err, errlen);
}
