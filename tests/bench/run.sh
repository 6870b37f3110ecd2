#!/bin/sh
# make bench: the side-by-side benchmark in one run (brief §9): direct
# pod-to-pod, node-proxy plaintext, node-proxy HBONE and per-pod HAProxy
# mTLS sidecars (bench_node_proxy.py), then ambit-cni ADD/DEL latency over
# 100 pods (cni_latency.py).
#   tests/bench/run.sh BUILD_DIR   (normal -O2 build)
#   env: BENCH_SECONDS (5), BENCH_ROUNDS (2), BENCH_CNI_PODS (100)
# Results: BUILD_DIR/bench/results.md (both parts), also printed.
set -eu
cd "$(dirname "$0")/../.."
B=${1:-build}
mkdir -p "$B/bench"
cc -O2 -Wall -o "$B/bench/bench-httpd" tests/bench/httpd.c
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 tests/bench/bench_node_proxy.py "$B"
out="$B/bench/cni_latency.txt"
/usr/bin/python3 tests/bench/cni_latency.py --pods "${BENCH_CNI_PODS:-100}" --bin "$B/bin" | tee "$out"
{
	echo
	echo "## ambit-cni ADD/DEL latency ($(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg))"
	echo
	echo '```'
	cat "$out"
	echo '```'
} >>"$B/bench/results.md"
echo "results: $B/bench/results.md"
