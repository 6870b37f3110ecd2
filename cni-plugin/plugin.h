/*
 * plugin: the CNI commands of ambit-cni (ADD, DEL, CHECK, STATUS, GC;
 * VERSION is answered by main.c without touching the system).
 *
 * The coordinator between the parsed request (cniconf), the capture rules
 * in the pod's netns (redirector), node-proxy's control socket (ctlproto)
 * and the per-attachment records (state).  Policy in one sentence: ADD
 * either leaves the pod fully meshed (rules + acked registration) or
 * leaves nothing and fails with code 11; DEL never fails on account of a
 * missing netns or an unreachable node-proxy, so pod deletion never wedges.
 */
#ifndef AMBIT_CNI_PLUGIN_H
#define AMBIT_CNI_PLUGIN_H

#include <jansson.h>

#include "cni-plugin/cniconf.h"

/* Run @env->cmd for the request @c.  Returns 0 with *out set to the JSON
 * to print (a new reference, or NULL for commands that print nothing), or
 * -1 with @e filled. */
int cni_plugin_run(const struct cni_env *env, const struct cni_conf *c, json_t **out,
                   struct cni_error *e);

/* Checks that need the redirector: the "redirect" excludes as a whole
 * (duplicates, IPv6 prefixes...).  Returns 0 or -1 with code 7 in @e.
 * Used by ADD and by the installer before it writes a config. */
int cni_plugin_validate(const struct cni_conf *c, struct cni_error *e);

#endif
