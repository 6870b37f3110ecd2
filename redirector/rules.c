/*
 * Generation of table inet ambit.  Why each rule exists is in
 * docs/redirector.md; the comments below only note what nft's listing
 * format forces on the text.
 */
#include "redirector/rules.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

const char rules_remove_cmd[] = "add table inet " REDIRECT_TABLE "\n"
                                "delete table inet " REDIRECT_TABLE "\n";

/* "meta mark & 0x00000fff == 0x00000111"; nft drops an all-ones mask. */
static void match_masked(struct textbuf *t, const char *key, uint32_t val, uint32_t mask)
{
	if (mask == UINT32_MAX)
		tb_printf(t, "%s 0x%08x", key, val);
	else
		tb_printf(t, "%s & 0x%08x == 0x%08x", key, mask, val);
}

/* "ct mark set ct mark & ~mask | mark": keep the ct mark bits outside the
 * mask.  nft lists the and-mask with the or-bits folded in (an
 * equivalent form), and drops the expression when nothing is kept. */
static void set_ct_mark(struct textbuf *t, uint32_t mark, uint32_t mask)
{
	if (mask == UINT32_MAX)
		tb_printf(t, "ct mark set 0x%08x", mark);
	else
		tb_printf(t, "ct mark set ct mark & 0x%08x | 0x%08x", ~mask | mark, mark);
}

static void print_cidr(struct textbuf *t, const struct redirect_cidr *c)
{
	char s[INET6_ADDRSTRLEN];
	struct redirect_cidr m = *c;
	unsigned full = c->family == AF_INET ? 32 : 128;
	size_t i, bytes = c->family == AF_INET ? 4 : 16;

	/* nft lists the network address; clear host bits like it does */
	for (i = 0; i < bytes; i++) {
		unsigned bit0 = (unsigned)i * 8;
		if (bit0 >= m.prefix_len)
			m.addr[i] = 0;
		else if (bit0 + 8 > m.prefix_len)
			m.addr[i] &= (uint8_t)(0xff00u >> (m.prefix_len - bit0));
	}
	if (!inet_ntop(c->family, m.addr, s, sizeof(s)))
		s[0] = '\0';
	tb_printf(t, "%s daddr %s", c->family == AF_INET ? "ip" : "ip6", s);
	if (m.prefix_len != full)
		tb_printf(t, "/%u", m.prefix_len);
}

int redirect_ruleset(const struct redirect_opts *o, char *buf, size_t len)
{
	struct textbuf t;
	uint32_t cm = o->connmark, mask = o->connmark_mask;
	size_t i;

	if (redirect_opts_validate(o, NULL, 0))
		return -EINVAL;
	tb_init(&t, buf, len);

	tb_printf(&t, "table inet %s {\n", REDIRECT_TABLE);

	tb_printf(&t, "\tchain connmark_in {\n"
	              "\t\ttype filter hook prerouting priority mangle; policy accept;\n");
	tb_printf(&t, "\t\tmeta mark 0x%08x ", o->proxy_mark);
	set_ct_mark(&t, cm, mask);
	tb_printf(&t, " comment \"proxy connection to a local app\"\n\t\t");
	match_masked(&t, "meta mark", cm, mask);
	tb_printf(&t, " ");
	set_ct_mark(&t, cm, mask);
	tb_printf(&t, " comment \"transparent proxy connection\"\n\t\tct direction reply ");
	match_masked(&t, "ct mark", cm, mask);
	tb_printf(&t, " meta mark set ct mark comment \"return traffic: restore fwmark\"\n"
	              "\t}\n\n");

	tb_printf(&t, "\tchain connmark_out {\n"
	              "\t\ttype route hook output priority mangle; policy accept;\n"
	              "\t\tct direction reply ");
	match_masked(&t, "ct mark", cm, mask);
	tb_printf(&t, " meta mark set ct mark comment \"return traffic: restore fwmark\"\n"
	              "\t}\n\n");

	tb_printf(&t, "\tchain capture_in {\n"
	              "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
	              "\t\tmeta l4proto != tcp return\n");
	if (!o->ipv6)
		tb_printf(&t, "\t\tmeta nfproto ipv6 return comment \"IPv6 not captured\"\n");
	tb_printf(&t, "\t\tiif \"lo\" return comment \"local traffic\"\n");
	tb_printf(&t, "\t\tmeta mark 0x%08x return comment \"proxy socket\"\n", o->proxy_mark);
	tb_printf(&t, "\t\ttcp dport %u return comment \"HBONE\"\n", o->hbone_port);
	for (i = 0; i < o->n_exclude_in_ports; i++)
		tb_printf(&t, "\t\ttcp dport %u return comment \"excluded inbound port\"\n",
		          o->exclude_in_ports[i]);
	tb_printf(&t,
	          "\t\tmeta l4proto tcp redirect to :%u comment \"inbound capture\"\n"
	          "\t}\n\n",
	          o->inbound_port);

	/* nft has no symbolic dstnat priority for the output hook */
	tb_printf(&t, "\tchain capture_out {\n"
	              "\t\ttype nat hook output priority -100; policy accept;\n"
	              "\t\tmeta l4proto != tcp return\n");
	if (!o->ipv6)
		tb_printf(&t, "\t\tmeta nfproto ipv6 return comment \"IPv6 not captured\"\n");
	tb_printf(&t, "\t\tmeta mark 0x%08x return comment \"proxy socket\"\n\t\t", o->proxy_mark);
	match_masked(&t, "meta mark", cm, mask);
	tb_printf(&t, " return comment \"transparent proxy socket\"\n");
	tb_printf(&t, "\t\toif \"lo\" return comment \"local destination\"\n");
	tb_printf(&t, "\t\tip daddr 127.0.0.0/8 return comment \"loopback\"\n");
	if (o->ipv6)
		tb_printf(&t, "\t\tip6 daddr ::1 return comment \"loopback\"\n");
	for (i = 0; i < o->n_exclude_cidrs; i++) {
		tb_printf(&t, "\t\t");
		print_cidr(&t, &o->exclude_cidrs[i]);
		tb_printf(&t, " return comment \"excluded destination\"\n");
	}
	for (i = 0; i < o->n_exclude_out_ports; i++)
		tb_printf(&t, "\t\ttcp dport %u return comment \"excluded port\"\n",
		          o->exclude_out_ports[i]);
	tb_printf(&t,
	          "\t\tmeta l4proto tcp redirect to :%u comment \"outbound capture\"\n"
	          "\t}\n}\n",
	          o->outbound_port);

	if (t.overflow)
		return -ENOSPC;
	return (int)t.len;
}

int rules_install_cmd(const struct redirect_opts *o, char *buf, size_t len)
{
	size_t head = sizeof(rules_remove_cmd) - 1;
	int n;

	if (len <= head)
		return redirect_opts_validate(o, NULL, 0) ? -EINVAL : -ENOSPC;
	memcpy(buf, rules_remove_cmd, head);
	n = redirect_ruleset(o, buf + head, len - head);
	if (n < 0)
		return n;
	return n + (int)head;
}

/* --- comparison ----------------------------------------------------------- */

#define OBJ_TOP   (-1) /* "table inet ambit {" itself */
#define OBJ_TABLE (-2) /* table attributes ("flags dormant") */

struct line {
	const char *s; /* trimmed, NUL-terminated inside listing.copy */
	int obj;       /* index of the enclosing depth-1 block, or OBJ_* */
	int hdr;       /* this line opens that block */
};

struct listing {
	char *copy;
	struct line *lines;
	size_t n;
};

static void listing_free(struct listing *l)
{
	free(l->copy);
	free(l->lines);
}

/* Cut an nft "# ..." annotation (e.g. "# progname nft" after an owned
 * table's brace); a '#' inside a quoted comment is text. */
static void strip_comment(char *line)
{
	int quoted = 0;

	for (; *line; line++) {
		if (*line == '"')
			quoted = !quoted;
		else if (*line == '#' && !quoted) {
			*line = '\0';
			return;
		}
	}
}

/* Split into trimmed, non-blank lines; note for each the depth-1 block
 * ("chain x {", "set y {") it belongs to.  Deeper blocks (multi-line set
 * elements) stay opaque lines of their block. */
static int listing_parse(const char *text, struct listing *l)
{
	size_t cap = 1, i;
	char *p, *save = NULL, *tok;
	int depth = 0, obj = OBJ_TOP, nobj = 0;

	memset(l, 0, sizeof(*l));
	for (i = 0; text[i]; i++)
		cap += text[i] == '\n';
	l->copy = strdup(text);
	l->lines = calloc(cap, sizeof(*l->lines));
	if (!l->copy || !l->lines) {
		listing_free(l);
		return -ENOMEM;
	}
	for (p = l->copy; (tok = strtok_r(p, "\n", &save)); p = NULL) {
		size_t k;
		int opens, closes, hdr;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		strip_comment(tok);
		k = strlen(tok);
		while (k && (tok[k - 1] == ' ' || tok[k - 1] == '\t' || tok[k - 1] == '\r'))
			tok[--k] = '\0';
		if (!k)
			continue;
		opens = tok[k - 1] == '{';
		closes = !strcmp(tok, "}");
		if (l->n >= cap)
			break;
		if (closes) {
			if (depth > 0)
				depth--;
			continue;
		}
		hdr = opens && depth == 1;
		if (hdr)
			obj = nobj++;
		l->lines[l->n].s = tok;
		l->lines[l->n].obj = depth == 0 ? OBJ_TOP : depth == 1 && !hdr ? OBJ_TABLE : obj;
		l->lines[l->n].hdr = hdr;
		l->n++;
		if (opens)
			depth++;
	}
	return 0;
}

static const char *find_hdr(const struct listing *l, const char *hdr, int *obj)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		if (l->lines[i].hdr && !strcmp(l->lines[i].s, hdr)) {
			*obj = l->lines[i].obj;
			return l->lines[i].s;
		}
	}
	return NULL;
}

static size_t count_in(const struct listing *l, int obj, const char *s)
{
	size_t i, n = 0;

	for (i = 0; i < l->n; i++)
		n += l->lines[i].obj == obj && !l->lines[i].hdr && !strcmp(l->lines[i].s, s);
	return n;
}

/* "chain capture_out {" -> "chain capture_out" */
/* Is line @i the first of its text in its block?  Repeated lines are
 * reported once. */
static int first_of_kind(const struct listing *l, size_t i)
{
	size_t k;

	for (k = 0; k < i; k++)
		if (l->lines[k].obj == l->lines[i].obj && !strcmp(l->lines[k].s, l->lines[i].s))
			return 0;
	return 1;
}

static int name_len(const char *hdr)
{
	size_t n = strlen(hdr);

	return (int)(n >= 2 ? n - 2 : n);
}

/* What a line is, for the report: a chain's "type ... hook ..." line is
 * its definition, a table-level line ("flags dormant") an attribute. */
static const char *line_kind(const char *s, int obj)
{
	if (obj == OBJ_TABLE)
		return "attribute";
	return strncmp(s, "type ", 5) ? "rule" : "definition";
}

static int diff_block(const struct listing *e, int eo, const struct listing *a, int ao,
                      const char *hdr, struct textbuf *out)
{
	size_t i, j;
	int nd = 0;

	for (i = 0; i < e->n; i++) {
		const struct line *x = &e->lines[i];
		if (x->obj != eo || x->hdr || !first_of_kind(e, i))
			continue;
		if (count_in(a, ao, x->s) < count_in(e, eo, x->s)) {
			tb_printf(out, "nft: %s %s in %.*s: %s\n",
			          strncmp(x->s, "type ", 5) ? "missing" : "different",
			          line_kind(x->s, eo), name_len(hdr), hdr, x->s);
			nd++;
		}
	}
	for (i = 0; i < a->n; i++) {
		const struct line *x = &a->lines[i];
		if (x->obj != ao || x->hdr || !first_of_kind(a, i))
			continue;
		if (count_in(a, ao, x->s) > count_in(e, eo, x->s)) {
			tb_printf(out, "nft: unexpected %s in %.*s: %s\n", line_kind(x->s, ao),
			          name_len(hdr), hdr, x->s);
			nd++;
		}
	}
	if (nd)
		return nd;
	/* same lines; now the order, which decides what a packet meets first */
	for (i = 0, j = 0;; i++, j++) {
		while (i < e->n && (e->lines[i].obj != eo || e->lines[i].hdr))
			i++;
		while (j < a->n && (a->lines[j].obj != ao || a->lines[j].hdr))
			j++;
		if (i >= e->n || j >= a->n)
			break;
		if (strcmp(e->lines[i].s, a->lines[j].s)) {
			tb_printf(out, "nft: rules out of order in %.*s at: %s\n", name_len(hdr),
			          hdr, a->lines[j].s);
			return 1;
		}
	}
	return 0;
}

int rules_diff(const char *expected, const char *actual, struct textbuf *out)
{
	struct listing e, a;
	size_t i;
	int nd = 0, ao, eo;

	if (listing_parse(expected, &e))
		return -ENOMEM;
	if (listing_parse(actual, &a)) {
		listing_free(&e);
		return -ENOMEM;
	}
	for (i = 0; i < e.n; i++) {
		const struct line *x = &e.lines[i];
		if (!x->hdr)
			continue;
		if (!find_hdr(&a, x->s, &ao)) {
			tb_printf(out, "nft: missing %.*s\n", name_len(x->s), x->s);
			nd++;
			continue;
		}
		nd += diff_block(&e, x->obj, &a, ao, x->s, out);
	}
	nd += diff_block(&e, OBJ_TABLE, &a, OBJ_TABLE, "table inet " REDIRECT_TABLE " {", out);
	for (i = 0; i < a.n; i++) {
		const struct line *x = &a.lines[i];
		if (x->hdr && !find_hdr(&e, x->s, &eo)) {
			tb_printf(out, "nft: unexpected %.*s\n", name_len(x->s), x->s);
			nd++;
		}
	}
	listing_free(&e);
	listing_free(&a);
	return nd;
}
