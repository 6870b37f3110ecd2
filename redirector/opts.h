/*
 * opts: the ambit-redirect command line, parsed and bounded.
 *
 * Owns argv parsing for the CLI (kept apart from main.c so that
 * tests/fuzz/fuzz_redirect_opts.c can feed it arbitrary argv).  Nothing here
 * touches the system.  Every value is checked: ports 1-65535, 32-bit
 * marks, mark/mask pairs, CIDRs, at most REDIRECT_MAX_EXCLUDES of each
 * exclude list; the result has passed redirect_opts_validate().
 */
#ifndef AMBIT_REDIRECT_OPTS_H
#define AMBIT_REDIRECT_OPTS_H

#include <stddef.h>
#include <stdint.h>

#include "redirector/redirect.h"

enum redirect_cmd {
	REDIRECT_CMD_NONE = 0,
	REDIRECT_CMD_INSTALL,
	REDIRECT_CMD_REMOVE,
	REDIRECT_CMD_CHECK,
};

struct redirect_cli {
	enum redirect_cmd cmd;
	const char *netns; /* borrowed from argv; NULL only with dry_run or help */
	int dry_run;
	int help; /* --help/-h: print usage, nothing else is checked */
	struct redirect_opts opts;
};

/*
 * Parse argv[1..argc-1] ("install --netns /run/netns/x --exclude-port 22"),
 * accepting "--opt value" and "--opt=value".  Returns 0, or -EINVAL with
 * a one-line message in @err.  @cli borrows strings from @argv.
 */
int redirect_cli_parse(int argc, char *const argv[], struct redirect_cli *cli, char *err,
                       size_t errlen);

/* Strict number parsers shared with the library: decimal, or 0x hex for
 * marks; no sign, no blanks, no trailing bytes.  0 or -EINVAL/-ERANGE. */
int redirect_parse_port(const char *s, uint16_t *out);
int redirect_parse_u32(const char *s, uint32_t *out);
/* "0x111/0xfff" or "0x111" (mask 0xffffffff). */
int redirect_parse_mark_mask(const char *s, uint32_t *mark, uint32_t *mask);

extern const char redirect_usage[];

#endif
