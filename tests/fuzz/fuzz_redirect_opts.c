/*
 * libFuzzer harness for the redirector's command line: the input is split
 * at NUL bytes into argv[1..]; whatever parses must validate and render
 * into a rule set that fits REDIRECT_RULESET_MAX, and the error message
 * must stay inside its buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "redirector/opts.h"
#include "redirector/redirect.h"
#include "redirector/rules.h"

#define MAX_ARGS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char rules[REDIRECT_RULESET_MAX];
	char *argv[MAX_ARGS + 1];
	char err[128];
	struct redirect_cli cli;
	char *copy;
	size_t i, start = 0;
	int argc = 0, rc;

	/* one spare NUL so the last argument is terminated */
	copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	argv[argc++] = (char *)"ambit-redirect";
	for (i = 0; i <= size && argc < MAX_ARGS; i++) {
		if (copy[i] == '\0') {
			argv[argc++] = copy + start;
			start = i + 1;
		}
	}
	argv[argc] = NULL;

	memset(err, 0x55, sizeof(err));
	rc = redirect_cli_parse(argc, argv, &cli, err, sizeof(err));
	if (!memchr(err, '\0', sizeof(err)))
		abort();
	if (rc == 0 && !cli.help) {
		if (redirect_opts_validate(&cli.opts, err, sizeof(err)))
			abort(); /* the parser must only hand out valid options */
		if (redirect_ruleset(&cli.opts, rules, sizeof(rules)) <= 0)
			abort();
		if (rules_install_cmd(&cli.opts, rules, sizeof(rules)) <= 0)
			abort();
	} else if (rc != 0 && err[0] == '\0') {
		abort(); /* every refusal says why */
	}
	free(copy);
	return 0;
}
