#!/bin/sh
# bundle-cni.sh BINARY DESTDIR
#
# Make ambit-cni runnable on a node that is not Debian 12.  The CNI plugin
# is executed by the container runtime on the host, outside the image, so
# the libraries it links (libnftables, libnftnl, libmnl, libxtables, libgmp,
# libjansson, libnl-3, libnl-route-3, ...) must travel with it.  Writes
#   DESTDIR/ambit-cni            the binary, DT_RPATH $ORIGIN/ambit-cni.libs
#   DESTDIR/ambit-cni.libs/      every non-glibc library it loads, each
#                                with RUNPATH $ORIGIN
# DT_RPATH (not RUNPATH) on the binary because RPATH also applies to the
# dependencies of dependencies; RUNPATH would only cover direct ones.
# glibc itself is not bundled: a bundled libc under the host's dynamic
# loader breaks.  The host needs the newest glibc symbol version the
# bundle uses (GLIBC_2.34 with Debian 12's libraries; see install.md).
set -eu
[ $# -eq 2 ] || { echo "usage: $0 BINARY DESTDIR" >&2; exit 2; }
bin=$1
dest=$2
libs=$dest/ambit-cni.libs
command -v patchelf >/dev/null || { echo "$0: patchelf is required" >&2; exit 1; }
mkdir -p "$libs"
install -m 0755 "$bin" "$dest/ambit-cni"
# ldd prints "name => /path (addr)"; glibc's own objects stay with the host.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r name path; do
	case "$name" in
	libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | \
		libresolv.so.* | ld-linux*.so.* | libutil.so.*) continue ;;
	esac
	cp -L "$path" "$libs/$name"
	chmod 0644 "$libs/$name"
	patchelf --set-rpath '$ORIGIN' "$libs/$name"
done
if ldd "$bin" | grep -q 'not found'; then
	echo "$0: $bin has unresolved libraries" >&2
	exit 1
fi
patchelf --force-rpath --set-rpath '$ORIGIN/ambit-cni.libs' "$dest/ambit-cni"
