/*
 * nft: the libnftables calls of the redirector.
 *
 * Runs nft scripts and lists table inet ambit in the calling thread's
 * current network namespace (the caller has entered the pod's).  A fresh
 * nft context per call: its netlink socket must be opened inside the
 * target namespace, and contexts are not shared between threads.
 */
#ifndef AMBIT_REDIRECT_NFT_H
#define AMBIT_REDIRECT_NFT_H

#include "redirector/textbuf.h"

/* Run @script as one nft transaction.  0, or -EIO/-ENOMEM with nft's own
 * error text appended to @err. */
int nftw_run(const char *script, struct textbuf *err);

/* List table inet ambit into *@out (malloc'd, the caller frees it).
 * Returns 0, -ENOENT when the table does not exist (*@out stays NULL), or
 * -EIO/-ENOMEM with a message in @err. */
int nftw_list(char **out, struct textbuf *err);

#endif
