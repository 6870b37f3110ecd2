/*
 * ctl_client: argument parsing and output for `ambit-node-proxy ctl`.  The
 * workload given on the command line goes through the same JSON validation
 * as one arriving on the socket, so the client refuses what the server
 * would refuse, with the same message.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node-proxy/ctl_client.h"
#include "node-proxy/ctlproto.h"

#define CTL_TIMEOUT_MS 10000

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ambit-node-proxy ctl [--socket PATH] [--timeout MS] COMMAND\n"
	        "  add --uid U --namespace NS --name N [--service-account SA]\n"
	        "      --netns PATH --ip IP [--ip IP]... [--label K=V]...\n"
	        "  del --uid U\n"
	        "  list [--json]\n"
	        "  status          exit 0 when ready, 1 when not\n"
	        "default socket: %s\n",
	        CTL_DEFAULT_SOCKET);
}

static int cmd_add(const char *sock, int timeout, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "uid", required_argument, NULL, 'u' },
		{ "namespace", required_argument, NULL, 'n' },
		{ "name", required_argument, NULL, 'N' },
		{ "service-account", required_argument, NULL, 's' },
		{ "netns", required_argument, NULL, 'p' },
		{ "ip", required_argument, NULL, 'i' },
		{ "label", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	json_t *o = json_object(), *ips = json_array(), *labels = json_object();
	struct workload w;
	char err[512];
	int c, fd = -1, ret = 2;

	if (!o || !ips || !labels)
		goto out;
	optind = 0;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		const char *key = NULL, *eq;

		switch (c) {
		case 'u':
			key = "uid";
			break;
		case 'n':
			key = "namespace";
			break;
		case 'N':
			key = "name";
			break;
		case 's':
			key = "service_account";
			break;
		case 'p':
			key = "netns_path";
			break;
		case 'i':
			json_array_append_new(ips, json_string(optarg));
			continue;
		case 'l':
			eq = strchr(optarg, '=');
			if (!eq) {
				fprintf(stderr, "ctl add: --label wants KEY=VALUE, got \"%s\"\n",
				        optarg);
				goto out;
			}
			/* optarg may be read-only: key by length, no NUL poked in */
			if (json_object_getn(labels, optarg, (size_t)(eq - optarg))) {
				fprintf(stderr, "ctl add: label \"%.*s\" given twice\n",
				        (int)(eq - optarg), optarg);
				goto out;
			}
			json_object_setn_new(labels, optarg, (size_t)(eq - optarg),
			                     json_string(eq + 1));
			continue;
		case 'h':
			usage(stdout);
			ret = 0;
			goto out;
		default:
			usage(stderr);
			goto out;
		}
		json_object_set_new(o, key, json_string(optarg));
	}
	if (optind != argc) {
		fprintf(stderr, "ctl add: unexpected argument \"%s\"\n", argv[optind]);
		goto out;
	}
	json_object_set(o, "ips", ips);
	json_object_set(o, "labels", labels);
	if (!json_object_get(o, "netns_path")) {
		fprintf(stderr, "ctl add: --netns is required\n");
		goto out;
	}
	if (json_array_size(ips) == 0) {
		fprintf(stderr, "ctl add: at least one --ip is required\n");
		goto out;
	}
	if (ctl_workload_from_json(o, &w, err, sizeof(err))) {
		fprintf(stderr, "ctl add: %s\n", err);
		goto out;
	}
	fd = open(w.netns_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ctl add: %s: %s\n", w.netns_path, strerror(errno));
		ret = 1;
		goto out;
	}
	if (ctl_add(sock, &w, fd, timeout, err, sizeof(err))) {
		fprintf(stderr, "ctl add: %s\n", err);
		ret = 1;
		goto out;
	}
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	json_decref(o);
	json_decref(ips);
	json_decref(labels);
	return ret;
}

static void print_table(json_t *wls)
{
	json_t *w, *v;
	size_t i, k;

	printf("%-38s %-20s %-28s %-16s %s\n", "UID", "NAMESPACE", "NAME", "SERVICE-ACCOUNT",
	       "IPS");
	json_array_foreach(wls, i, w)
	{
		json_t *ips = json_object_get(w, "ips");

		printf("%-38s %-20s %-28s %-16s ", json_string_value(json_object_get(w, "uid")),
		       json_string_value(json_object_get(w, "namespace")),
		       json_string_value(json_object_get(w, "name")),
		       json_string_value(json_object_get(w, "service_account")));
		json_array_foreach(ips, k, v)
		{
			printf("%s%s", k ? "," : "", json_string_value(v));
		}
		printf("\n");
	}
}

static int cmd_simple(const char *sock, int timeout, const char *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "uid", required_argument, NULL, 'u' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const char *uid = NULL;
	json_t *reply = NULL, *body = NULL;
	int c, as_json = 0, fd, r, ret = 2;
	uint16_t type;
	char err[512];

	optind = 0;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (c == 'u' && !strcmp(cmd, "del"))
			uid = optarg;
		else if (c == 'j' && !strcmp(cmd, "list"))
			as_json = 1;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ctl %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
		return 2;
	}
	if (!strcmp(cmd, "del")) {
		if (!uid) {
			fprintf(stderr, "ctl del: --uid is required\n");
			return 2;
		}
		type = CTL_DEL;
		body = json_pack("{s:s}", "uid", uid);
		if (!body)
			return 2;
	} else {
		type = !strcmp(cmd, "list") ? CTL_LIST : CTL_STATUS;
	}

	fd = ctl_client_connect(sock);
	if (fd < 0) {
		fprintf(stderr, "ctl %s: connect %s: %s\n", cmd, sock, strerror(-fd));
		json_decref(body);
		return 1;
	}
	r = ctl_client_call(fd, type, body, NULL, 0, timeout, &reply, err, sizeof(err));
	close(fd);
	if (r) {
		fprintf(stderr, "ctl %s: %s\n", cmd, err);
		ret = 1;
		goto out;
	}
	ret = 0;
	if (type == CTL_LIST) {
		json_t *wls = json_object_get(reply, "workloads");

		if (as_json)
			json_dumpf(wls, stdout, JSON_INDENT(2));
		else
			print_table(wls);
		if (as_json)
			printf("\n");
		if (json_is_true(json_object_get(reply, "truncated")))
			fprintf(stderr, "ctl list: truncated: %zu of %lld workloads shown\n",
			        json_array_size(wls),
			        (long long)json_integer_value(json_object_get(reply, "total")));
	} else if (type == CTL_STATUS) {
		int ready = json_is_true(json_object_get(reply, "ready"));

		printf("ready: %s\nworkloads: %lld\n", ready ? "yes" : "no",
		       (long long)json_integer_value(json_object_get(reply, "workloads")));
		ret = ready ? 0 : 1;
	}
out:
	json_decref(reply);
	json_decref(body);
	return ret;
}

int ctl_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = CTL_DEFAULT_SOCKET, *cmd;
	int c, timeout = CTL_TIMEOUT_MS;
	char *end;

	/* "+": stop at the command word; its options are parsed below. */
	optind = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'S':
			sock = optarg;
			break;
		case 't':
			errno = 0;
			timeout = (int)strtol(optarg, &end, 10);
			if (errno || *end || timeout <= 0) {
				fprintf(stderr, "ctl: bad --timeout \"%s\"\n", optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	if (!strcmp(cmd, "add"))
		return cmd_add(sock, timeout, argc, argv);
	if (!strcmp(cmd, "del") || !strcmp(cmd, "list") || !strcmp(cmd, "status"))
		return cmd_simple(sock, timeout, cmd, argc, argv);
	fprintf(stderr, "ctl: unknown command \"%s\"\n", cmd);
	usage(stderr);
	return 2;
}
