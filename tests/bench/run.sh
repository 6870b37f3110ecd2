#!/bin/sh
# make bench: node-proxy against direct pod-to-pod, in one run.
#   tests/bench/run.sh BUILD_DIR   (normal -O2 build; results in BUILD_DIR/bench/results.md)
set -eu
cd "$(dirname "$0")/../.."
B=${1:-build}
mkdir -p "$B/bench"
cc -O2 -Wall -o "$B/bench/bench-httpd" tests/bench/httpd.c
exec /usr/bin/python3 tests/bench/bench_node_proxy.py "$B"
