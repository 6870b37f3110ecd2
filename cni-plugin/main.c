/*
 * ambit-cni: entry point.
 *
 * Two personalities in one binary, so a DaemonSet image ships one file:
 *   - `ambit-cni install|uninstall ...` (argv) - the node installer;
 *   - otherwise a CNI plugin: CNI_COMMAND and friends in the environment,
 *     the network configuration on stdin, the result or error on stdout.
 * stdout carries exactly one JSON document (or nothing); diagnostics go to
 * stderr or the configured log file.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cni-plugin/cniconf.h"
#include "cni-plugin/cnilog.h"
#include "cni-plugin/install.h"
#include "cni-plugin/plugin.h"

static const char *get_env(const char *name)
{
	return getenv(name);
}

static int print_json(json_t *j)
{
	int r = json_dumpf(j, stdout, JSON_COMPACT | JSON_ENCODE_ANY);

	if (r == 0 && fputc('\n', stdout) == EOF)
		r = -1;
	if (fflush(stdout) == EOF)
		r = -1;
	return r;
}

static int print_error(const char *version, const struct cni_error *e)
{
	json_t *j = json_pack("{s:s, s:i, s:s, s:s}", "cniVersion", version, "code", e->code, "msg",
	                      e->msg, "details", e->details);

	if (j) {
		print_json(j);
		json_decref(j);
	}
	return 1;
}

/* Read all of stdin, at most CNI_STDIN_MAX bytes.  Returns 0 or -1 with
 * @e set.  *buf is malloc'ed (NUL-terminated) and owned by the caller. */
static int read_stdin(char **buf, size_t *len, struct cni_error *e)
{
	size_t cap = 65536, n = 0;
	char *b = malloc(cap + 1), *nb;
	ssize_t r;

	*buf = NULL;
	if (!b)
		return cni_fail(e, CNI_ERR_IO, "out of memory");
	for (;;) {
		if (n == cap) {
			if (cap >= CNI_STDIN_MAX) {
				free(b);
				return cni_fail(e, CNI_ERR_DECODE,
				                "network configuration larger than %u bytes",
				                CNI_STDIN_MAX);
			}
			cap *= 2;
			nb = realloc(b, cap + 1);
			if (!nb) {
				free(b);
				return cni_fail(e, CNI_ERR_IO, "out of memory");
			}
			b = nb;
		}
		r = read(STDIN_FILENO, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = errno;

			free(b);
			/* A closed stdin is an empty one (VERSION probes). */
			if (err == EBADF) {
				*buf = calloc(1, 1);
				*len = 0;
				return *buf ? 0 : cni_fail(e, CNI_ERR_IO, "out of memory");
			}
			cni_fail(e, CNI_ERR_IO, "cannot read stdin");
			cni_details(e, "%s", strerror(err));
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

static int print_version(const struct cni_conf *c)
{
	const char *v = cni_version_supported(c->version) ? c->version : CNI_VERSION_DEFAULT;
	json_t *j =
	    json_pack("{s:s, s:[s,s]}", "cniVersion", v, "supportedVersions", "1.0.0", "1.1.0");

	if (!j)
		return 1;
	print_json(j);
	json_decref(j);
	return 0;
}

int main(int argc, char **argv)
{
	struct cni_error e = { 0 };
	struct cni_env env;
	struct cni_conf *c;
	json_t *out = NULL;
	char *in = NULL;
	size_t len = 0;
	int rc = 1;

	if (argc >= 2)
		return install_main(argc, argv);
	/* A runtime that closed its end early must not kill us mid-cleanup. */
	signal(SIGPIPE, SIG_IGN);

	c = calloc(1, sizeof(*c));
	if (!c)
		return 1;
	if (cni_env_read(&env, get_env, &e)) {
		struct cni_error e2;

		cnilog_context(env.command, env.container_id);
		cnilog(CNILOG_ERR, "%s", e.msg);
		/* Answer in the request's version when it has a usable one. */
		if (read_stdin(&in, &len, &e2) == 0)
			cni_conf_parse(in, len, CNI_CMD_VERSION, c, &e2);
		print_error(cni_version_supported(c->version) ? c->version : CNI_VERSION_DEFAULT,
		            &e);
		goto out;
	}
	cnilog_context(env.command, env.container_id);
	if (read_stdin(&in, &len, &e) || cni_conf_parse(in, len, env.cmd, c, &e)) {
		cnilog(CNILOG_ERR, "%s: %s", e.msg, e.details);
		print_error(c->version[0] ? c->version : CNI_VERSION_DEFAULT, &e);
		goto out;
	}
	if (c->log_file[0] && cnilog_open(c->log_file))
		cnilog(CNILOG_WARN, "cannot open logFile %s; logging to stderr", c->log_file);
	if (env.cmd == CNI_CMD_VERSION) {
		rc = print_version(c);
		goto out;
	}
	if (cni_plugin_run(&env, c, &out, &e)) {
		print_error(c->version, &e);
		goto out;
	}
	rc = 0;
	if (out && print_json(out)) {
		cnilog(CNILOG_ERR, "cannot write the result to stdout");
		rc = 1;
	}
out:
	json_decref(out);
	cni_conf_free(c);
	free(c);
	free(in);
	cnilog_close();
	return rc;
}
