/*
 * checkconfig: the check-config subcommand.
 *
 * A directory given without --policies/--services is classified by its
 * contents: one with a [service ...] section is a services directory,
 * anything else a policies directory (so a mixed one fails loudly).
 */
#include <dirent.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "node-proxy/checkconfig.h"
#include "node-proxy/confdir.h"
#include "node-proxy/policy.h"
#include "node-proxy/services.h"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ambit-node-proxy check-config [options] [DIR...]\n"
	        "Validate directories of policy or service INI files offline.\n"
	        "  -p, --policies DIR        a policies.d directory\n"
	        "  -s, --services DIR        a services.d directory\n"
	        "  -r, --root-namespace NS   namespace of mesh-wide policies (default %s)\n"
	        "  -q, --quiet               print errors only\n"
	        "  -h, --help                this text\n"
	        "A DIR without -p/-s is a services directory if it has a [service] section,\n"
	        "else a policies directory.  Errors go to stderr as FILE:LINE: message.\n"
	        "Exit status: 0 valid, 1 invalid, 2 usage error.\n",
	        POLICY_DEFAULT_ROOT_NS);
}

/* Does any *.ini file of @dir have a line starting with "[service"? */
static bool looks_like_services(const char *dir)
{
	struct dirent *de;
	bool found = false;
	DIR *d = opendir(dir);

	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		char path[4096], line[256];
		size_t l = strlen(de->d_name);
		FILE *f;

		if (de->d_name[0] == '.' || l <= 4 || strcmp(de->d_name + l - 4, ".ini") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		for (int n = 0; n < 10000 && fgets(line, sizeof(line), f); n++)
			if (strncmp(line, "[service ", 9) == 0 ||
			    strncmp(line, "[service\t", 9) == 0) {
				found = true;
				break;
			}
		fclose(f);
	}
	closedir(d);
	return found;
}

static int check(const char *dir, bool services, const char *root_ns, bool quiet)
{
	struct conf_errors e;
	unsigned count = 0;
	int rc;

	conf_errors_init(&e);
	if (services) {
		struct service_set *ss = NULL;
		rc = services_load_dir(dir, &ss, &e);
		count = services_count(ss);
		services_set_put(ss);
	} else {
		struct policy_set *ps = NULL;
		rc = policy_load_dir(dir, root_ns, &ps, &e);
		count = policy_set_count(ps);
		policy_set_put(ps);
	}
	for (unsigned i = 0; i < e.n; i++)
		fprintf(stderr, "%s\n", e.msg[i]);
	if (e.dropped)
		fprintf(stderr, "%s: %u more errors not shown\n", dir, e.dropped);
	if (rc) {
		fprintf(stderr, "%s: invalid (%u error%s)\n", dir, conf_errors_count(&e),
		        conf_errors_count(&e) == 1 ? "" : "s");
		return 1;
	}
	if (!quiet)
		printf("%s: ok, %u %s\n", dir, count, services ? "services" : "policies");
	return 0;
}

int checkconfig_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "policies", required_argument, NULL, 'p' },
		{ "services", required_argument, NULL, 's' },
		{ "root-namespace", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pol[64], *svc[64], *root_ns = NULL;
	unsigned n_pol = 0, n_svc = 0;
	bool quiet = false;
	int c, bad = 0;

	optind = 0; /* the caller may have used getopt already */
	while ((c = getopt_long(argc, argv, "+p:s:r:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
		case 's':
			if ((c == 'p' ? n_pol : n_svc) == 64) {
				fprintf(stderr, "check-config: too many directories\n");
				return 2;
			}
			if (c == 'p')
				pol[n_pol++] = optarg;
			else
				svc[n_svc++] = optarg;
			break;
		case 'r':
			if (!conf_valid_dns_label(optarg)) {
				fprintf(stderr, "check-config: bad namespace \"%s\"\n", optarg);
				return 2;
			}
			root_ns = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	for (int i = optind; i < argc; i++) {
		if (n_pol + n_svc >= 64) {
			fprintf(stderr, "check-config: too many directories\n");
			return 2;
		}
		if (looks_like_services(argv[i]))
			svc[n_svc++] = argv[i];
		else
			pol[n_pol++] = argv[i];
	}
	if (n_pol + n_svc == 0) {
		usage(stderr);
		return 2;
	}
	for (unsigned i = 0; i < n_pol; i++)
		bad |= check(pol[i], false, root_ns, quiet);
	for (unsigned i = 0; i < n_svc; i++)
		bad |= check(svc[i], true, root_ns, quiet);
	fflush(stdout);
	return bad ? 1 : 0;
}
