#!/bin/sh
# Install everything ambit needs on a Debian 12 machine, idempotently.
#
# 1. Debian packages (build, test, benchmark).  Only missing ones are
#    installed, so a second run is quiet and fast.
# 2. wolfSSL 5.5.4 built from Debian's own source package with Debian's
#    feature set plus AES-NI/AVX assembly, into a project-local prefix
#    (.deps/wolfssl) that git ignores.  Debian's binary package lacks
#    AES-NI: ~150 MB/s AES-GCM versus ~4 GB/s, which is the data path's
#    throughput ceiling.  The build is reused when its stamp matches.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX="$ROOT/.deps/wolfssl"
SRCDIR="$ROOT/.deps/src"
# Feature set: exactly debian/rules of wolfssl 5.5.4-2, plus the assembly
# back ends that the stock package leaves out.
WOLF_FLAGS="--enable-distro --enable-pkcs11 --disable-examples \
--enable-aesni --enable-intelasm --enable-sp-asm"
# FP_ENTRIES: --enable-distro turns on the fixed-point ECC cache, a
# thread-local table of 1.4 MB that every thread of node-proxy would carry
# (idle RSS 12 MB instead of 5 MB).  P-256 runs on the SP assembly code
# (--enable-sp-asm), which does not use that cache, so two entries suffice.
WOLF_CPPFLAGS="-DFP_ENTRIES=2"
STAMP_KEY="wolfssl-5.5.4 r3 $WOLF_FLAGS $WOLF_CPPFLAGS"

PKGS="build-essential pkg-config dpkg-dev autoconf automake libtool \
liburing-dev libnghttp2-dev libnl-3-dev libnl-route-3-dev libinih-dev \
libnftables-dev libjansson-dev libcmocka-dev \
clang libclang-rt-14-dev llvm \
python3 python3-pytest containernetworking-plugins nftables iproute2 \
curl wrk iperf3 nghttp2-client tcpdump socat procps psmisc iputils-ping openssl python3-h2 python3-yaml python3-kubernetes python3-seccomp python3-cryptography patchelf strace \
podman runc busybox-static \
libwolfssl35"
# Only for make bench (per-pod sidecar baseline): tools/deps.sh bench
BENCH_PKGS="haproxy hey python3-matplotlib redis-tools"
[ "${1:-}" != bench ] || PKGS="$PKGS $BENCH_PKGS"

say() { [ -n "${QUIET:-}" ] || echo "deps: $*"; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

apt_updated=""
apt_update() {
	if [ -z "$apt_updated" ]; then
		as_root apt-get update -qq
		apt_updated=1
	fi
}

if [ -n "$missing" ]; then
	echo "deps: installing Debian packages:$missing"
	apt_update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends $missing
fi

# promtool (validates the Prometheus exposition in tests) comes from
# Debian's prometheus package, unpacked into .deps rather than installed:
# installing it would enable and start a Prometheus server on the machine.
PROMTOOL_DIR="$ROOT/.deps/prometheus"
if [ ! -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
	say "unpacking promtool from Debian's prometheus package into .deps/prometheus"
	tmp=$(mktemp -d)
	if (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1 ||
		{ apt_update && cd "$tmp" && apt-get download -q prometheus >/dev/null; }); then
		rm -rf "$PROMTOOL_DIR"
		mkdir -p "$PROMTOOL_DIR"
		dpkg-deb -x "$tmp"/prometheus_*.deb "$PROMTOOL_DIR"
	else
		echo "deps: could not download prometheus (promtool checks will be skipped)" >&2
	fi
	rm -rf "$tmp"
fi

if [ -f "$PREFIX/.stamp" ] && [ "$(cat "$PREFIX/.stamp")" = "$STAMP_KEY" ] &&
	[ -f "$PREFIX/lib/libwolfssl.so" ] && [ -f "$PREFIX/include/wolfssl/options.h" ]; then
	exit 0
fi

# A machine-wide cache lets a second clone on the same machine (CI's fresh
# checkout) reuse the build instead of spending three minutes on it.
CACHE=/var/cache/ambit/wolfssl-$(echo "$STAMP_KEY" | sha256sum | cut -c1-16)
if [ -f "$CACHE/.stamp" ] && [ "$(cat "$CACHE/.stamp")" = "$STAMP_KEY" ]; then
	rm -rf "$PREFIX"
	mkdir -p "$(dirname "$PREFIX")"
	cp -a "$CACHE" "$PREFIX"
	say "wolfSSL restored from $CACHE"
	exit 0
fi

# deb-src entry of our own: Debian 12 images ship deb822 sources without
# source indexes.  Same archive and suite as the binary entries.
SRCLIST=/etc/apt/sources.list.d/ambit-deb-src.sources
if ! apt-get source --print-uris wolfssl >/dev/null 2>&1; then
	echo "deps: adding $SRCLIST (Debian source packages)"
	as_root sh -c "cat > $SRCLIST" <<'EOS'
# Added by ambit's tools/deps.sh: source packages for building wolfSSL
# with AES-NI.  Safe to remove after the build.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
	apt_updated=""
	apt_update
fi

echo "deps: building wolfSSL 5.5.4 from Debian's source package (AES-NI), ~3 min"
rm -rf "$SRCDIR"
mkdir -p "$SRCDIR"
(cd "$SRCDIR" && apt-get source -q wolfssl >/dev/null 2>&1 ||
	(cd "$SRCDIR" && apt-get source wolfssl))
src=$(find "$SRCDIR" -maxdepth 1 -type d -name 'wolfssl-5.5.4*' | head -n1)
[ -n "$src" ] || { echo "deps: wolfssl source not found in $SRCDIR" >&2; exit 1; }
cd "$src"
[ -x ./configure ] || autoreconf -fi >"$SRCDIR/autoreconf.log" 2>&1
./configure --prefix="$PREFIX" $WOLF_FLAGS CPPFLAGS="$WOLF_CPPFLAGS" >"$SRCDIR/configure.log" 2>&1 ||
	{ tail -30 "$SRCDIR/configure.log" >&2; exit 1; }
make -j"$(nproc)" >"$SRCDIR/make.log" 2>&1 || { tail -30 "$SRCDIR/make.log" >&2; exit 1; }
rm -rf "$PREFIX"
make install >"$SRCDIR/install.log" 2>&1
# With --enable-distro, wolfssl/options.h (the feature macros every user
# must see, or struct layouts disagree) is a noinst header; Debian's
# libwolfssl-dev.install copies it by hand, and so do we.
install -m 0644 wolfssl/options.h "$PREFIX/include/wolfssl/options.h"
[ ! -f cyassl/options.h ] || install -m 0644 cyassl/options.h "$PREFIX/include/cyassl/options.h"
echo "$STAMP_KEY" >"$PREFIX/.stamp"
if mkdir -p /var/cache/ambit 2>/dev/null; then
	rm -rf "$CACHE.tmp" && cp -a "$PREFIX" "$CACHE.tmp" && rm -rf "$CACHE" &&
		mv "$CACHE.tmp" "$CACHE" || true
fi
echo "deps: wolfSSL installed in $PREFIX"
