/*
 * Shared by test_tls.c and test_hbone.c (included, not built alone):
 * a throw-away PKI made with the openssl CLI in a temp dir, identities
 * loaded from it, and a pipe that wires two engines back to back.
 *
 * PKI: root -> intermediate -> leaves (ECDSA P-256, one URI SAN each);
 * a second, foreign root with its own leaf; an expired leaf; a leaf in
 * another trust domain.
 */
/* Not every includer uses every helper. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TD         "cluster.local"
#define ID_CLIENT  "spiffe://" TD "/ns/default/sa/client"
#define ID_SERVER  "spiffe://" TD "/ns/default/sa/server"
#define ID_OTHER   "spiffe://" TD "/ns/other/sa/evil"
#define ID_FOREIGN "spiffe://evil.org/ns/default/sa/client"

static char pki_dir[64];

static const char pki_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign'\n"
    "printf \"$ca_ext\\n\" > ca.ext\n"
    "key() { openssl ecparam -name prime256v1 -genkey -noout -out \"$1.key\" 2>/dev/null; }\n"
    "root() { key $1; openssl req -new -x509 -key $1.key -subj /O=ambit-test/CN=$1 -days 30 "
    "  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign "
    "  -out $1.pem 2>/dev/null; }\n"
    "inter() { key $1; openssl req -new -key $1.key -subj /O=ambit-test/CN=$1 -out $1.csr; "
    "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 30 "
    "  -extfile ca.ext -out $1.pem 2>/dev/null; }\n"
    "leaf() { key $1; openssl req -new -key $1.key -subj /O=ambit-test -out $1.csr; "
    "  printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n"
    "extendedKeyUsage=serverAuth,clientAuth\\nsubjectAltName=critical,URI:%s\\n' \"$3\" > $1.ext; "
    "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days ${4:-2} "
    "  -extfile $1.ext -out $1.leaf 2>/dev/null; cat $1.leaf $2.pem > $1.pem; }\n"
    "root root\n"
    "inter int root\n"
    "leaf client int " ID_CLIENT "\n"
    "leaf server int " ID_SERVER "\n"
    "leaf server2 int " ID_SERVER "\n"
    "leaf other int " ID_OTHER "\n"
    "leaf tdforeign int " ID_FOREIGN "\n"
    "leaf expired int " ID_CLIENT " -1\n"
    "root root2\n"
    "leaf foreign root2 " ID_CLIENT "\n"
    /* DER forms too: the identity accepts both. */
    "openssl x509 -in client.leaf -outform DER -out client.leaf.der\n"
    "openssl x509 -in int.pem -outform DER -out int.der\n"
    "cat client.leaf.der int.der > client.chain.der\n"
    "openssl pkcs8 -topk8 -nocrypt -in client.key -outform DER -out client.key.der\n"
    "openssl x509 -in root.pem -outform DER -out root.der\n";

static int pki_make(void)
{
	char cmd[256];
	FILE *f;

	if (pki_dir[0])
		return 0;
	snprintf(pki_dir, sizeof(pki_dir), "/tmp/ambit-hbone-pki.XXXXXX");
	if (!mkdtemp(pki_dir))
		return -errno;
	snprintf(cmd, sizeof(cmd), "%s/gen.sh", pki_dir);
	f = fopen(cmd, "w");
	if (!f)
		return -errno;
	fputs(pki_script, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "sh %s/gen.sh %s", pki_dir, pki_dir);
	return system(cmd) == 0 ? 0 : -EIO;
}

static void pki_remove(void)
{
	char cmd[128];

	if (!pki_dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", pki_dir);
	pki_dir[0] = '\0';
}

/* Read pki_dir/@name into a malloc'd buffer. */
static uint8_t *pki_read(const char *name, size_t *len)
{
	char path[256];
	struct stat st;
	uint8_t *b;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", pki_dir, name);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	if (fstat(fileno(f), &st) < 0 || !(b = malloc(st.st_size + 1))) {
		fclose(f);
		return NULL;
	}
	*len = fread(b, 1, st.st_size, f);
	fclose(f);
	return b;
}

/* Identity from @leaf.pem + @leaf.key trusting @root.pem; NULL on error
 * (rc in *@rc when given). */
static struct tls_identity *pki_identity_rc(const char *leaf, const char *root, int *rc)
{
	struct tls_identity_config cfg = { 0 };
	struct tls_identity *id = NULL;
	char n1[64], n2[64], n3[64];
	uint8_t *a, *b, *c;
	int ret = -ENOENT;

	snprintf(n1, sizeof(n1), "%s.pem", leaf);
	snprintf(n2, sizeof(n2), "%s.key", leaf);
	snprintf(n3, sizeof(n3), "%s.pem", root);
	a = pki_read(n1, &cfg.chain_len);
	b = pki_read(n2, &cfg.key_len);
	c = pki_read(n3, &cfg.roots_len);
	if (a && b && c) {
		cfg.chain = a;
		cfg.key = b;
		cfg.roots = c;
		ret = tls_identity_new(&cfg, &id);
	}
	free(a);
	free(b);
	free(c);
	if (rc)
		*rc = ret;
	return id;
}

static struct tls_identity *pki_identity(const char *leaf, const char *root)
{
	return pki_identity_rc(leaf, root, NULL);
}

/* ---- an engine with recorded events ---------------------------------- */

#define MAXSID 1024

struct srec {          /* per stream */
	int status;    /* client: response; server: what we answered */
	int closed;    /* on_stream_closed seen */
	uint32_t err;  /* its code */
	int eof;       /* on_stream_eof seen */
	int writable;  /* on_stream_writable count */
	size_t rx;     /* bytes received */
	uint64_t hash; /* FNV-1a of received bytes */
	size_t unconsumed;
	char authority[80];
	char forwarded[80];
	char baggage[80];
	char traceparent[80];
	char peer[128];
};

struct side {
	struct hbone_conn *c;
	int hs; /* on_handshake calls */
	enum tls_fail why;
	int decide;  /* server answer from on_stream_request (0: later) */
	int consume; /* consume received bytes at once */
	int requests;
	int goaway;
	int32_t goaway_last;
	int closed_total;
	/* Optional: run inside the data / closed callbacks (relay tests). */
	void (*data_hook)(struct side *s, int32_t sid, const uint8_t *d, size_t n);
	void (*closed_hook)(struct side *s, int32_t sid);
	void *hook_arg;
	struct srec s[MAXSID];
};

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	while (n--) {
		h ^= *p++;
		h *= 1099511628211ull;
	}
	return h;
}
#define FNV0 14695981039346656037ull

static void ev_hs(struct hbone_conn *c, void *arg, enum tls_fail why)
{
	struct side *s = arg;
	(void)c;
	s->hs++;
	s->why = why;
}

static void cpy(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "");
}

static int ev_req(struct hbone_conn *c, void *arg, int32_t sid, const struct hbone_request *r)
{
	struct side *s = arg;
	struct srec *e = &s->s[sid % MAXSID];
	(void)c;
	s->requests++;
	cpy(e->authority, sizeof(e->authority), r->authority);
	cpy(e->forwarded, sizeof(e->forwarded), r->forwarded);
	cpy(e->baggage, sizeof(e->baggage), r->baggage);
	cpy(e->traceparent, sizeof(e->traceparent), r->traceparent);
	cpy(e->peer, sizeof(e->peer), r->peer_id);
	e->status = s->decide;
	return s->decide;
}

static void ev_resp(struct hbone_conn *c, void *arg, int32_t sid, void *su, int status)
{
	struct side *s = arg;
	(void)c;
	(void)su;
	s->s[sid % MAXSID].status = status;
}

static void ev_data(struct hbone_conn *c, void *arg, int32_t sid, void *su, const uint8_t *d,
                    size_t n)
{
	struct side *s = arg;
	struct srec *e = &s->s[sid % MAXSID];
	(void)su;
	if (e->rx == 0)
		e->hash = FNV0;
	e->hash = fnv(e->hash, d, n);
	e->rx += n;
	if (s->consume)
		hbone_stream_consume(c, sid, n);
	else
		e->unconsumed += n;
	if (s->data_hook)
		s->data_hook(s, sid, d, n);
}

static void ev_eof(struct hbone_conn *c, void *arg, int32_t sid, void *su)
{
	struct side *s = arg;
	(void)c;
	(void)su;
	s->s[sid % MAXSID].eof++;
}

static void ev_writable(struct hbone_conn *c, void *arg, int32_t sid, void *su)
{
	struct side *s = arg;
	(void)c;
	(void)su;
	s->s[sid % MAXSID].writable++;
}

static void ev_closed(struct hbone_conn *c, void *arg, int32_t sid, void *su, uint32_t err)
{
	struct side *s = arg;
	(void)c;
	(void)su;
	s->s[sid % MAXSID].closed++;
	s->s[sid % MAXSID].err = err;
	s->closed_total++;
	if (s->closed_hook)
		s->closed_hook(s, sid);
}

static void ev_goaway(struct hbone_conn *c, void *arg, int32_t last, uint32_t err)
{
	struct side *s = arg;
	(void)c;
	(void)err;
	s->goaway++;
	s->goaway_last = last;
}

static const struct hbone_callbacks test_cbs = {
	.on_handshake = ev_hs,
	.on_stream_request = ev_req,
	.on_stream_response = ev_resp,
	.on_stream_data = ev_data,
	.on_stream_eof = ev_eof,
	.on_stream_writable = ev_writable,
	.on_stream_closed = ev_closed,
	.on_goaway = ev_goaway,
};

static struct side *side_new(enum hbone_role role, struct tls_identity *id, const char *expect,
                             const struct hbone_config *cfg)
{
	struct side *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->decide = 200;
	s->consume = 1;
	if (hbone_conn_new(role, id, expect, cfg, &test_cbs, s, &s->c) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

static void side_free(struct side *s)
{
	if (!s)
		return;
	hbone_conn_free(s->c);
	free(s);
}

/* Move at most @max bytes of @from's output into @to.  Returns bytes moved;
 * the feed result lands in *@rc. */
static size_t move_some(struct hbone_conn *from, struct hbone_conn *to, size_t max, int *rc)
{
	struct iovec iov[2];
	int n = hbone_conn_pending_out(from, iov), i;
	size_t tot = 0, k;

	for (i = 0; i < n && tot < max; i++) {
		k = iov[i].iov_len;
		if (k > max - tot)
			k = max - tot;
		*rc = hbone_conn_feed(to, iov[i].iov_base, k);
		tot += k;
	}
	if (tot)
		hbone_conn_out_done(from, tot);
	return tot;
}

/* Shuttle bytes both ways until nothing moves; feed results recorded. */
static int ra, rb;
static void run_pipe_chunked(struct side *a, struct side *b, size_t chunk)
{
	size_t moved;
	int guard = 0;

	ra = rb = 0;
	do {
		moved = 0;
		int r = 0;
		if (hbone_conn_out_len(a->c)) {
			moved += move_some(a->c, b->c, chunk, &r);
			if (r)
				rb = r;
		}
		r = 0;
		if (hbone_conn_out_len(b->c)) {
			moved += move_some(b->c, a->c, chunk, &r);
			if (r)
				ra = r;
		}
	} while (moved && ++guard < 1000000);
}

static void run_pipe(struct side *a, struct side *b)
{
	run_pipe_chunked(a, b, (size_t)-1);
}
