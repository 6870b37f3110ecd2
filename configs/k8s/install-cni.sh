#!/bin/sh
# ambit-install-cni [install]: the DaemonSet's init container.  Copies
# ambit-cni and its libraries into the node's CNI bin dir and chains
# ambit-cni into the node's primary CNI config (`ambit-cni install`,
# idempotent).
# ambit-install-cni uninstall [--remove-rules]: the reverse (the uninstall
# DaemonSet): un-chain (the original config comes back byte for byte),
# remove the binary and libraries; with --remove-rules, also remove the
# capture rules from every pod node-proxy serves, so those pods' new
# connections go direct before node-proxy itself is deleted.
#
# Environment (defaults in brackets):
#   CNI_BIN_DIR     [/host/opt/cni/bin]
#   CNI_CONF_DIR    [/host/etc/cni/net.d]
#   PLUGIN_CONFIG   [/etc/ambit/config/ambit-cni.plugin.json] JSON file
#   WAIT_SECONDS    [600] how long to wait for the cluster's main CNI plugin
#                   to write its config (ambit-cni chains after it)
#   SRC_DIR         [/usr/local/bin] where ambit-cni and ambit-cni.libs are
#   CONTROL_SOCKET  [/run/ambit/node-proxy.sock] (uninstall --remove-rules)
#
# Order matters: libraries first, then the binary (via `ambit-cni install`,
# which writes the binary before the config), so the runtime never finds a
# config that names a plugin it cannot load.
set -eu
bin_dir=${CNI_BIN_DIR:-/host/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/host/etc/cni/net.d}
plugin_config=${PLUGIN_CONFIG:-/etc/ambit/config/ambit-cni.plugin.json}
wait_s=${WAIT_SECONDS:-600}
src=${SRC_DIR:-/usr/local/bin}
ctl_socket=${CONTROL_SOCKET:-/run/ambit/node-proxy.sock}

say() { echo "ambit-install-cni: $*" >&2; }

if [ "${1:-install}" = uninstall ]; then
	[ "${2:-}" = "" ] || [ "${2:-}" = --remove-rules ] || { say "usage: $0 uninstall [--remove-rules]"; exit 2; }
	"$src/ambit-cni" uninstall --cni-conf-dir "$conf_dir" --cni-bin-dir "$bin_dir"
	rm -rf "$bin_dir/ambit-cni.libs"
	if [ "${2:-}" = --remove-rules ]; then
		# netns paths of every enrolled pod, from node-proxy's registry
		if list=$("$src/ambit-node-proxy" ctl --socket "$ctl_socket" list --json); then
			echo "$list" | sed -n 's/^ *"netns_path": *"\(.*\)",\{0,1\}$/\1/p' |
				while read -r ns; do
					if [ -e "$ns" ]; then
						"$src/ambit-redirect" remove --netns "$ns" &&
							say "capture rules removed from $ns" ||
							say "capture rules in $ns: not removed"
					fi
				done
		else
			say "node-proxy not reachable at $ctl_socket: capture rules left in its pods"
		fi
	fi
	exit 0
fi
[ "${1:-install}" = install ] || { say "usage: $0 [install] | uninstall [--remove-rules]"; exit 2; }

[ -d "$bin_dir" ] || { say "CNI bin dir $bin_dir does not exist (hostPath mount?)"; exit 1; }
[ -d "$conf_dir" ] || { say "CNI conf dir $conf_dir does not exist (hostPath mount?)"; exit 1; }
[ -r "$plugin_config" ] || { say "plugin config $plugin_config is not readable"; exit 1; }

# Libraries: a fresh directory renamed into place, so a plugin run that is
# starting right now sees either the old set or the new one.
if [ -d "$src/ambit-cni.libs" ]; then
	tmp="$bin_dir/.ambit-cni.libs.new.$$"
	rm -rf "$tmp"
	cp -r "$src/ambit-cni.libs" "$tmp"
	if [ -d "$bin_dir/ambit-cni.libs" ]; then
		old="$bin_dir/.ambit-cni.libs.old.$$"
		mv "$bin_dir/ambit-cni.libs" "$old"
		mv "$tmp" "$bin_dir/ambit-cni.libs"
		rm -rf "$old"
	else
		mv "$tmp" "$bin_dir/ambit-cni.libs"
	fi
fi

# The main plugin (Calico, Cilium, flannel, kindnet...) may still be
# starting: `ambit-cni install` refuses when there is no config to chain
# into.  Retry here rather than crash-loop with kubelet's growing backoff.
waited=0
while :; do
	if "$src/ambit-cni" install --cni-bin-dir "$bin_dir" --cni-conf-dir "$conf_dir" \
		--binary "$src/ambit-cni" --plugin-config "$(cat "$plugin_config")"; then
		exit 0
	fi
	if [ "$waited" -ge "$wait_s" ]; then
		say "gave up after ${wait_s}s"
		exit 1
	fi
	sleep 5
	waited=$((waited + 5))
done
