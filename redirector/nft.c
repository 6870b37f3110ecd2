#include "redirector/nft.h"

#include <errno.h>
#include <nftables/libnftables.h>
#include <stdlib.h>
#include <string.h>

#include "redirector/redirect.h"

static struct nft_ctx *ctx_new(struct textbuf *err)
{
	struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);

	if (!ctx) {
		tb_printf(err, "nftables: cannot create a context");
		return NULL;
	}
	if (nft_ctx_buffer_output(ctx) || nft_ctx_buffer_error(ctx)) {
		tb_printf(err, "nftables: cannot buffer output");
		nft_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

/* The first error nft reported, with the command it points at.  A failed
 * batch makes nft repeat the error for every command in it; one is
 * enough to say what went wrong. */
static void copy_error(struct nft_ctx *ctx, struct textbuf *err)
{
	const char *e = nft_ctx_get_error_buffer(ctx);
	const char *msg, *eol, *cmd = NULL, *cmd_end = NULL;

	msg = e ? strstr(e, "Error: ") : NULL;
	if (!msg) {
		tb_printf(err, "nftables: command failed");
		return;
	}
	msg += strlen("Error: ");
	eol = strchrnul(msg, '\n');
	if (*eol) {
		cmd = eol + 1;
		cmd_end = strchrnul(cmd, '\n');
	}
	tb_printf(err, "nftables: %.*s", (int)(eol - msg), msg);
	if (cmd && cmd_end > cmd)
		tb_printf(err, " (in '%.*s')", (int)(cmd_end - cmd > 120 ? 120 : cmd_end - cmd),
		          cmd);
}

int nftw_run(const char *script, struct textbuf *err)
{
	struct nft_ctx *ctx = ctx_new(err);
	int rc = 0;

	if (!ctx)
		return -ENOMEM;
	if (nft_run_cmd_from_buffer(ctx, script)) {
		copy_error(ctx, err);
		rc = -EIO;
	}
	nft_ctx_free(ctx);
	return rc;
}

/* Does "list tables inet" name our table?  Looking first keeps "missing
 * table" apart from every other failure without parsing error text. */
static int table_exists(struct nft_ctx *ctx, struct textbuf *err)
{
	const char *out, *p;
	size_t tl = strlen("table inet " REDIRECT_TABLE);

	if (nft_run_cmd_from_buffer(ctx, "list tables inet")) {
		copy_error(ctx, err);
		return -EIO;
	}
	out = nft_ctx_get_output_buffer(ctx);
	for (p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (!strncmp(p, "table inet " REDIRECT_TABLE, tl) && (p[tl] == '\n' || !p[tl]))
			return 1;
	}
	return 0;
}

int nftw_list(char **out, struct textbuf *err)
{
	struct nft_ctx *ctx = ctx_new(err);
	const char *text;
	int rc;

	*out = NULL;
	if (!ctx)
		return -ENOMEM;
	rc = table_exists(ctx, err);
	if (rc <= 0) {
		rc = rc ? rc : -ENOENT;
		goto out;
	}
	/* output buffers are per command; re-arm for the listing */
	nft_ctx_unbuffer_output(ctx);
	nft_ctx_buffer_output(ctx);
	if (nft_run_cmd_from_buffer(ctx, "list table inet " REDIRECT_TABLE)) {
		copy_error(ctx, err);
		rc = -EIO;
		goto out;
	}
	text = nft_ctx_get_output_buffer(ctx);
	*out = strdup(text ? text : "");
	rc = *out ? 0 : -ENOMEM;
	if (rc)
		tb_printf(err, "out of memory");
out:
	nft_ctx_free(ctx);
	return rc;
}
