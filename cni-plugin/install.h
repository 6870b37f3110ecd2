/*
 * install: putting ambit-cni on a node and taking it off again, what a
 * DaemonSet's init container runs.
 *
 * Owns the node's CNI directories for the duration of one call: copies the
 * binary into the CNI bin dir, and chains {"type": "ambit-cni", ...} at
 * the end of the plugin list of the cluster's primary network config - the
 * lexically first *.conf, *.conflist or *.json, which is the one kubelet's
 * runtime (libcni) uses.  A single-plugin .conf is converted into a
 * .conflist.  Every write is a temp file plus rename in the same
 * directory, so the runtime never reads a half-written config.  The
 * original is kept as <file>.ambit-orig and put back byte for byte by
 * uninstall (unless the primary plugin rewrote its file meanwhile: then
 * only ambit's entry is taken out).
 */
#ifndef AMBIT_CNI_INSTALL_H
#define AMBIT_CNI_INSTALL_H

#include <jansson.h>
#include <stddef.h>

#define INSTALL_BACKUP_SUFFIX ".ambit-orig"
#define INSTALL_PLUGIN_TYPE   "ambit-cni"

/* Chain ambit into the primary config of @conf_dir.  @plugin is the
 * plugin entry's extra keys (borrowed; may be NULL); "type" is forced.
 * Idempotent: a second call changes nothing, or updates ambit's entry in
 * place when @plugin changed.  Returns 0 or -errno, with a message in
 * @err. */
int install_conf(const char *conf_dir, const json_t *plugin, char *err, size_t errlen);

/* Undo install_conf.  0 also when nothing was installed. */
int uninstall_conf(const char *conf_dir, char *err, size_t errlen);

/* Copy @src to @bin_dir/ambit-cni (mode 0755) atomically. */
int install_binary(const char *src, const char *bin_dir, char *err, size_t errlen);

/* `ambit-cni install|uninstall ...`; returns the process exit status. */
int install_main(int argc, char **argv);

#endif
