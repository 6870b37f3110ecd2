/*
 * ambit-certs: the operator's side of the mesh PKI.
 *
 *   init-root      a self-signed root (kept off the nodes)
 *   issue-node     a node intermediate + the root certificate, for one node
 *   issue-workload a workload SVID from a node directory (tests, plain hosts)
 *   inspect        what a certificate says and whether it chains
 *
 * Exit status: 0 success, 1 failure, 2 usage.
 */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/wc_port.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "certs/ca.h"
#include "certs/fileio.h"
#include "certs/svid.h"
#include "certs/x509.h"

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: ambit-certs COMMAND [OPTIONS]\n"
    "\n"
    "  init-root --dir DIR [--trust-domain TD] [--days N] [--force]\n"
    "      create DIR/root-cert.pem and DIR/root-key.pem (default TD cluster.local,\n"
    "      3650 days)\n"
    "  issue-node --dir ROOT_DIR --node NAME [--out DIR] [--hours N] [--force]\n"
    "      create a node intermediate (default 720 h) in DIR (default\n"
    "      ROOT_DIR/node-NAME): node-cert.pem, node-key.pem, root-cert.pem\n"
    "  issue-workload --dir NODE_DIR --namespace NS --service-account SA --out DIR\n"
    "                 [--hours N]\n"
    "      create a workload SVID (default 24 h) in DIR: cert.pem, key.pem,\n"
    "      chain.pem (leaf + intermediate), root-cert.pem when NODE_DIR has one\n"
    "  inspect FILE [--root ROOT] [--chain-with INTERMEDIATE] [--key KEY] [--at T]\n"
    "      print a certificate (the first in FILE; further ones are taken as\n"
    "      intermediates); with --root verify the chain, with --key check that\n"
    "      KEY belongs to it; --at judges validity at Unix time T, not now\n";

static int usage(const char *fmt, const char *arg)
{
	if (fmt) {
		fprintf(stderr, "ambit-certs: ");
		fprintf(stderr, fmt, arg);
		fprintf(stderr, "\n");
	}
	fputs(usage_text, stderr);
	return EXIT_USAGE;
}

static int fail(const char *msg)
{
	fprintf(stderr, "ambit-certs: %s\n", msg);
	return EXIT_FAILURE;
}

static int parse_uint(const char *s, unsigned long max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || *s == '-' || v == 0 || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int check_dir(const char *dir, char *msg, size_t len)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		snprintf(msg, len, "directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(msg, len, "%s is not a directory", dir);
		return -1;
	}
	return 0;
}

static int path_join(char *out, const char *dir, const char *name)
{
	if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) {
		fprintf(stderr, "ambit-certs: path too long: %s/%s\n", dir, name);
		return -1;
	}
	return 0;
}

static void fmt_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm))
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	else
		snprintf(buf, len, "(%lld)", (long long)t);
}

/* ------------------------------------------------------------ init-root */

static int cmd_init_root(int argc, char **argv)
{
	static const struct option opts[] = { { "dir", required_argument, NULL, 'd' },
		                              { "trust-domain", required_argument, NULL, 't' },
		                              { "days", required_argument, NULL, 'n' },
		                              { "force", no_argument, NULL, 'f' },
		                              { NULL, 0, NULL, 0 } };
	const char *dir = NULL, *td = "cluster.local";
	char certp[PATH_MAX], keyp[PATH_MAX], msg[PATH_MAX + 64], nb[32], na[32];
	unsigned days = CA_ROOT_DAYS_DEFAULT;
	struct certs_err err;
	struct ca *root = NULL;
	bool force = false;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 't':
			td = optarg;
			break;
		case 'n':
			if (parse_uint(optarg, 36500, &days) < 0)
				return usage("--days wants 1..36500, not '%s'", optarg);
			break;
		case 'f':
			force = true;
			break;
		default:
			return usage(NULL, NULL);
		}
	}
	if (!dir || optind != argc)
		return usage("init-root needs --dir and no other arguments%s", "");
	if (check_dir(dir, msg, sizeof(msg)) < 0)
		return fail(msg);
	if (path_join(certp, dir, "root-cert.pem") < 0 || path_join(keyp, dir, "root-key.pem") < 0)
		return EXIT_FAILURE;
	if (!force && (access(certp, F_OK) == 0 || access(keyp, F_OK) == 0)) {
		snprintf(msg, sizeof(msg), "%s already holds a root; use --force to replace it",
		         dir);
		return fail(msg);
	}
	if (ca_create_root(td, days, 0, &root, &err) < 0 || ca_save(root, certp, keyp, &err) < 0) {
		ca_free(root);
		return fail(err.msg);
	}
	fmt_time(ca_cert(root)->not_before, nb, sizeof(nb));
	fmt_time(ca_cert(root)->not_after, na, sizeof(na));
	printf("root CA for trust domain %s\n  %s (0644)\n  %s (0600, keep offline)\n"
	       "  valid %s .. %s\n",
	       td, certp, keyp, nb, na);
	ca_free(root);
	return 0;
}

/* ------------------------------------------------------------ issue-node */

static int copy_file(const char *from, const char *to, mode_t mode, struct certs_err *err)
{
	uint8_t *buf;
	size_t len;
	int r;

	r = certs_read_file(from, 1024 * 1024, &buf, &len, err);
	if (r < 0)
		return r;
	r = certs_write_file(to, buf, len, mode, err);
	certs_file_free(buf, len);
	return r;
}

static int make_dir(const char *dir, char *msg, size_t len)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(msg, len, "cannot create directory %s: %s", dir, strerror(errno));
		return -1;
	}
	return check_dir(dir, msg, len);
}

static int cmd_issue_node(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' }, { "node", required_argument, NULL, 'N' },
		{ "out", required_argument, NULL, 'o' }, { "hours", required_argument, NULL, 'h' },
		{ "force", no_argument, NULL, 'f' },     { NULL, 0, NULL, 0 }
	};
	const char *dir = NULL, *node = NULL, *out = NULL;
	char rc[PATH_MAX], rk[PATH_MAX], oc[PATH_MAX], ok[PATH_MAX], orc[PATH_MAX];
	char defout[PATH_MAX], msg[PATH_MAX + 64], nb[32], na[32];
	unsigned hours = CA_NODE_HOURS_DEFAULT;
	struct ca *root = NULL, *inter = NULL;
	struct certs_err err;
	bool force = false;
	int c, ret = EXIT_FAILURE;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'N':
			node = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			if (parse_uint(optarg, 24 * 36500, &hours) < 0)
				return usage("--hours wants a positive number, not '%s'", optarg);
			break;
		case 'f':
			force = true;
			break;
		default:
			return usage(NULL, NULL);
		}
	}
	if (!dir || !node || optind != argc)
		return usage("issue-node needs --dir and --node%s", "");
	if (check_dir(dir, msg, sizeof(msg)) < 0)
		return fail(msg);
	if (!out) {
		if (snprintf(defout, sizeof(defout), "%s/node-%s", dir, node) >=
		    (int)sizeof(defout))
			return fail("path too long");
		out = defout;
	}
	if (path_join(rc, dir, "root-cert.pem") < 0 || path_join(rk, dir, "root-key.pem") < 0)
		return EXIT_FAILURE;
	if (ca_load_files(rc, rk, &root, &err) < 0)
		return fail(err.msg);
	/* Issue first: a bad node name must not leave a directory behind. */
	if (ca_issue_node(root, node, hours, 0, &inter, &err) < 0) {
		fail(err.msg);
		goto out;
	}
	if (make_dir(out, msg, sizeof(msg)) < 0) {
		fail(msg);
		goto out;
	}
	if (path_join(oc, out, "node-cert.pem") < 0 || path_join(ok, out, "node-key.pem") < 0 ||
	    path_join(orc, out, "root-cert.pem") < 0)
		goto out;
	if (!force && access(ok, F_OK) == 0) {
		snprintf(msg, sizeof(msg), "%s already holds a node key; use --force to replace it",
		         out);
		fail(msg);
		goto out;
	}
	if (ca_save(inter, oc, ok, &err) < 0 || copy_file(rc, orc, 0644, &err) < 0) {
		fail(err.msg);
		goto out;
	}
	fmt_time(ca_cert(inter)->not_before, nb, sizeof(nb));
	fmt_time(ca_cert(inter)->not_after, na, sizeof(na));
	printf("node intermediate for %s (trust domain %s, name-constrained to spiffe://%s)\n"
	       "  %s (0644)\n  %s (0600)\n  %s (0644)\n  valid %s .. %s\n",
	       node, ca_trust_domain(root), ca_trust_domain(root), oc, ok, orc, nb, na);
	ret = 0;
out:
	ca_free(inter);
	ca_free(root);
	return ret;
}

/* ------------------------------------------------------------ issue-workload */

static int cmd_issue_workload(int argc, char **argv)
{
	static const struct option opts[] = { { "dir", required_argument, NULL, 'd' },
		                              { "namespace", required_argument, NULL, 'n' },
		                              { "service-account", required_argument, NULL, 's' },
		                              { "out", required_argument, NULL, 'o' },
		                              { "hours", required_argument, NULL, 'h' },
		                              { NULL, 0, NULL, 0 } };
	const char *dir = NULL, *ns = NULL, *sa = NULL, *out = NULL, *why = NULL;
	char nc[PATH_MAX], nk[PATH_MAX], nr[PATH_MAX], p[PATH_MAX], msg[PATH_MAX + 64];
	char uri[SPIFFE_ID_MAX + 1], nb[32], na[32];
	unsigned hours = 24;
	struct ca *node = NULL;
	struct svid *s = NULL;
	struct spiffe_id id;
	struct certs_err err;
	int c, ret = EXIT_FAILURE;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'n':
			ns = optarg;
			break;
		case 's':
			sa = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			if (parse_uint(optarg, 24 * 3650, &hours) < 0)
				return usage("--hours wants a positive number, not '%s'", optarg);
			break;
		default:
			return usage(NULL, NULL);
		}
	}
	if (!dir || !ns || !sa || !out || optind != argc)
		return usage("issue-workload needs --dir, --namespace, --service-account and "
		             "--out%s",
		             "");
	if (check_dir(dir, msg, sizeof(msg)) < 0)
		return fail(msg);
	if (path_join(nc, dir, "node-cert.pem") < 0 || path_join(nk, dir, "node-key.pem") < 0 ||
	    path_join(nr, dir, "root-cert.pem") < 0)
		return EXIT_FAILURE;
	if (ca_load_files(nc, nk, &node, &err) < 0)
		return fail(err.msg);
	snprintf(uri, sizeof(uri), "spiffe://%s/ns/%s/sa/%s", ca_trust_domain(node), ns, sa);
	if (spiffe_id_parse(uri, strlen(uri), &id, &why) < 0) {
		snprintf(msg, sizeof(msg), "invalid SPIFFE ID %.300s: %s", uri, why);
		fail(msg);
		goto out;
	}
	if (svid_issue(node, &id, hours * 3600u, 0, &s, &err) < 0) {
		fail(err.msg);
		goto out;
	}
	if (make_dir(out, msg, sizeof(msg)) < 0) {
		fail(msg);
		goto out;
	}
	if (path_join(p, out, "key.pem") < 0 ||
	    certs_write_file(p, s->key_pem, s->key_pem_len, 0600, &err) < 0 ||
	    path_join(p, out, "cert.pem") < 0 ||
	    certs_write_file(p, s->cert_pem, s->cert_pem_len, 0644, &err) < 0 ||
	    path_join(p, out, "chain.pem") < 0 ||
	    certs_write_file(p, s->chain_pem, s->chain_pem_len, 0644, &err) < 0) {
		fail(err.msg);
		goto out;
	}
	if (access(nr, R_OK) == 0 &&
	    (path_join(p, out, "root-cert.pem") < 0 || copy_file(nr, p, 0644, &err) < 0)) {
		fail(err.msg);
		goto out;
	}
	fmt_time(s->not_before, nb, sizeof(nb));
	fmt_time(s->not_after, na, sizeof(na));
	printf("workload SVID %s\n  %s/cert.pem, %s/chain.pem (0644)\n  %s/key.pem (0600)\n"
	       "  valid %s .. %s\n",
	       s->uri, out, out, out, nb, na);
	ret = 0;
out:
	svid_free(s);
	ca_free(node);
	return ret;
}

/* ------------------------------------------------------------ inspect */

static void print_ku(unsigned ku)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = { { X509_KU_DIGITAL_SIGNATURE, "digitalSignature" },
		      { 0x0040, "nonRepudiation" },
		      { X509_KU_KEY_ENCIPHERMENT, "keyEncipherment" },
		      { 0x0010, "dataEncipherment" },
		      { X509_KU_KEY_AGREEMENT, "keyAgreement" },
		      { X509_KU_KEY_CERT_SIGN, "keyCertSign" },
		      { X509_KU_CRL_SIGN, "cRLSign" } };
	const char *sep = "";
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (ku & names[i].bit) {
			printf("%s%s", sep, names[i].name);
			sep = ", ";
		}
	printf("\n");
}

static void print_cert(const struct x509_cert *c, int64_t now)
{
	char nb[32], na[32];
	struct spiffe_id id;
	size_t i;

	fmt_time(c->not_before, nb, sizeof(nb));
	fmt_time(c->not_after, na, sizeof(na));
	printf("subject:          %s\n", c->subject);
	printf("issuer:           %s%s\n", c->issuer, c->self_signed ? " (self-signed)" : "");
	printf("serial:           %s\n", c->serial_hex);
	printf("key:              %s\n", c->key_type);
	printf("not before:       %s\n", nb);
	printf("not after:        %s\n", na);
	if (now < c->not_before)
		printf("validity:         NOT YET VALID (starts in %lld s)\n",
		       (long long)(c->not_before - now));
	else if (now > c->not_after)
		printf("validity:         EXPIRED (%lld s ago)\n", (long long)(now - c->not_after));
	else
		printf("validity:         valid, expires in %lldd %lldh\n",
		       (long long)((c->not_after - now) / 86400),
		       (long long)((c->not_after - now) % 86400 / 3600));
	if (c->is_ca && c->path_len >= 0)
		printf("CA:               yes, path length %d\n", c->path_len);
	else
		printf("CA:               %s\n", c->is_ca ? "yes" : "no");
	printf("key usage:        ");
	if (c->has_key_usage)
		print_ku(c->key_usage);
	else
		printf("(not restricted)\n");
	for (i = 0; i < c->n_uris; i++)
		printf("SAN URI:          %s\n", c->uris[i]);
	for (i = 0; i < c->n_dns; i++)
		printf("SAN DNS:          %s\n", c->dns[i]);
	if (c->n_other_sans)
		printf("SAN other:        %zu entries\n", c->n_other_sans);
	if (!c->is_ca && x509_svid_id(c, NULL, &id, NULL) == 0)
		printf("SPIFFE ID:        trust domain %s, namespace %s, service account %s\n",
		       id.td, id.ns, id.sa);
	if (c->has_name_constraints) {
		printf("name constraints: %s\n", c->nc_critical ? "critical" : "not critical");
		for (i = 0; i < c->n_nc_permitted_uri; i++)
			printf("  permitted URI:  %s\n", c->nc_permitted_uri[i]);
		for (i = 0; i < c->n_nc_excluded_uri; i++)
			printf("  excluded URI:   %s\n", c->nc_excluded_uri[i]);
		if (c->n_nc_other)
			printf("  other subtrees: %zu (not checked by ambit)\n", c->n_nc_other);
	} else if (c->is_ca) {
		printf("name constraints: none\n");
	}
}

static int load_certs_file(const char *path, struct x509_buf *out, size_t max, uint8_t **store,
                           struct certs_err *err)
{
	struct certs_err e2;
	uint8_t *buf;
	size_t len;
	int n;

	n = certs_read_file(path, 1024 * 1024, &buf, &len, err);
	if (n < 0)
		return n;
	n = x509_load_certs(buf, len, out, max, store, &e2);
	certs_file_free(buf, len);
	if (n < 0)
		return certs_errf(err, n, "%s: %s", path, e2.msg);
	return n;
}

static int cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = { { "root", required_argument, NULL, 'r' },
		                              { "chain-with", required_argument, NULL, 'c' },
		                              { "key", required_argument, NULL, 'k' },
		                              { "at", required_argument, NULL, 'a' },
		                              { NULL, 0, NULL, 0 } };
	const char *file = NULL, *rootp = NULL, *interp = NULL, *keyp = NULL;
	struct x509_buf chain[X509_CHAIN_MAX], extra[X509_CHAIN_MAX], root[1];
	uint8_t *st1 = NULL, *st2 = NULL, *st3 = NULL;
	struct x509_cert cert;
	struct certs_err err;
	int64_t now = (int64_t)time(NULL);
	int c, n, m, i, ret = EXIT_FAILURE;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			rootp = optarg;
			break;
		case 'c':
			interp = optarg;
			break;
		case 'k':
			keyp = optarg;
			break;
		case 'a': {
			char *end;

			errno = 0;
			now = (int64_t)strtoll(optarg, &end, 10);
			if (errno || *optarg == '\0' || *end != '\0' || now <= 0)
				return usage("--at wants Unix seconds, not '%s'", optarg);
			break;
		}
		default:
			return usage(NULL, NULL);
		}
	}
	if (optind != argc - 1)
		return usage("inspect needs exactly one FILE%s", "");
	file = argv[optind];
	n = load_certs_file(file, chain, X509_CHAIN_MAX, &st1, &err);
	if (n < 0)
		return fail(err.msg);
	if (x509_parse(chain[0].der, chain[0].len, &cert, &err) < 0) {
		fprintf(stderr, "ambit-certs: %s: %s\n", file, err.msg);
		goto out;
	}
	printf("file:             %s (%d certificate%s)\n", file, n, n == 1 ? "" : "s");
	print_cert(&cert, now);
	ret = 0;
	if (keyp) {
		uint8_t *kb;
		size_t kl;

		if (certs_read_file(keyp, 64 * 1024, &kb, &kl, &err) < 0) {
			fail(err.msg);
			ret = EXIT_FAILURE;
			goto out;
		}
		i = ca_key_matches(chain[0].der, chain[0].len, kb, kl, &err);
		certs_file_free(kb, kl);
		if (i < 0) {
			printf("key check:        FAILED\n");
			fprintf(stderr, "ambit-certs: key %s: %s\n", keyp, err.msg);
			ret = EXIT_FAILURE;
		} else {
			printf("key check:        %s matches\n", keyp);
		}
	}
	if (rootp) {
		if (interp) {
			m = load_certs_file(interp, extra, X509_CHAIN_MAX, &st2, &err);
			if (m < 0) {
				fail(err.msg);
				ret = EXIT_FAILURE;
				goto out;
			}
			for (i = 0; i < m && n < X509_CHAIN_MAX; i++)
				chain[n++] = extra[i];
		}
		m = load_certs_file(rootp, root, 1, &st3, &err);
		if (m < 0) {
			fail(err.msg);
			ret = EXIT_FAILURE;
			goto out;
		}
		if (x509_verify_chain(chain, (size_t)n, root, now, &err) < 0) {
			printf("chain:            FAILED: %s\n", err.msg);
			fprintf(stderr, "ambit-certs: chain check failed: %s\n", err.msg);
			ret = EXIT_FAILURE;
		} else {
			printf("chain:            OK (%d certificate%s up to root %s)\n", n,
			       n == 1 ? "" : "s", rootp);
		}
	} else if (interp) {
		ret = usage("--chain-with needs --root%s", "");
	}
out:
	free(st1);
	free(st2);
	free(st3);
	return ret;
}

static int dispatch(int argc, char **argv);

int main(int argc, char **argv)
{
	int r;

	wolfCrypt_Init();
	r = dispatch(argc, argv);
	wolfCrypt_Cleanup();
	return r;
}

static int dispatch(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2)
		return usage(NULL, NULL);
	cmd = argv[1];
	/* getopt_long on the arguments after the command. */
	argc--;
	argv++;
	if (strcmp(cmd, "init-root") == 0)
		return cmd_init_root(argc, argv);
	if (strcmp(cmd, "issue-node") == 0)
		return cmd_issue_node(argc, argv);
	if (strcmp(cmd, "issue-workload") == 0)
		return cmd_issue_workload(argc, argv);
	if (strcmp(cmd, "inspect") == 0)
		return cmd_inspect(argc, argv);
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	return usage("unknown command '%s'", cmd);
}
