/*
 * ambit-redirect: install, remove or check the capture rules of one pod
 * network namespace.  Exit status: 0 ok, 1 check found differences,
 * 2 any error (bad options, namespace, privilege, nftables, netlink).
 */
#include <stdio.h>
#include <string.h>

#include "redirector/opts.h"
#include "redirector/redirect.h"
#include "redirector/rules.h"

static void print_routing(const struct redirect_opts *o, const char *verb)
{
	printf("# ip -4 rule %s fwmark 0x%x/0x%x lookup %u pref %u\n", verb, o->connmark,
	       o->connmark_mask, o->route_table, REDIRECT_RULE_PRIO);
	printf("# ip -4 route %s local 0.0.0.0/0 dev lo table %u\n", verb, o->route_table);
	if (o->ipv6 || !strcmp(verb, "del")) {
		printf("# ip -6 rule %s fwmark 0x%x/0x%x lookup %u pref %u\n", verb, o->connmark,
		       o->connmark_mask, o->route_table, REDIRECT_RULE_PRIO);
		printf("# ip -6 route %s local ::/0 dev lo table %u\n", verb, o->route_table);
	}
}

/* What the command would apply, as an nft script (routing as comments). */
static int dry_run(const struct redirect_cli *cli)
{
	static char buf[REDIRECT_RULESET_MAX];
	int n;

	switch (cli->cmd) {
	case REDIRECT_CMD_INSTALL:
		n = rules_install_cmd(&cli->opts, buf, sizeof(buf));
		break;
	case REDIRECT_CMD_CHECK:
		n = redirect_ruleset(&cli->opts, buf, sizeof(buf));
		break;
	default:
		n = snprintf(buf, sizeof(buf), "%s", rules_remove_cmd);
		break;
	}
	if (n < 0) {
		fprintf(stderr, "ambit-redirect: cannot generate the rule set\n");
		return 2;
	}
	fputs(buf, stdout);
	print_routing(&cli->opts, cli->cmd == REDIRECT_CMD_REMOVE ? "del" : "add");
	return fflush(stdout) ? 2 : 0;
}

int main(int argc, char **argv)
{
	static char err[REDIRECT_ERR_MAX];
	struct redirect_cli cli;
	const char *what;
	int rc;

	if (redirect_cli_parse(argc, argv, &cli, err, sizeof(err))) {
		fprintf(stderr, "ambit-redirect: %s\n%s", err, redirect_usage);
		return 2;
	}
	if (cli.help) {
		fputs(redirect_usage, stdout);
		return 0;
	}
	if (cli.dry_run)
		return dry_run(&cli);

	switch (cli.cmd) {
	case REDIRECT_CMD_INSTALL:
		what = "install";
		rc = redirect_install(cli.netns, &cli.opts, err, sizeof(err));
		break;
	case REDIRECT_CMD_REMOVE:
		what = "remove";
		rc = redirect_remove(cli.netns, &cli.opts, err, sizeof(err));
		break;
	default:
		what = "check";
		rc = redirect_check(cli.netns, &cli.opts, err, sizeof(err));
		if (rc == 1) {
			printf("%s differs from the expected capture rules:\n%s\n", cli.netns, err);
			return 1;
		}
		break;
	}
	if (rc) {
		fprintf(stderr, "ambit-redirect: %s in %s failed: %s\n", what, cli.netns, err);
		return 2;
	}
	return 0;
}
