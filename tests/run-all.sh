#!/bin/sh
# Run the whole suite against one build directory and print one closing line
# "N passed, N failed" summing unit tests, fuzz corpus replays and system
# tests.  Exit status is non-zero when anything failed.
#
#   tests/run-all.sh BUILD_DIR        (make test passes build/san)
#   PYTEST_ARGS="-k redirect" tests/run-all.sh build/san
set -u
cd "$(dirname "$0")/.."
B=${1:-build/san}
export PATH="$PWD/.deps/prometheus/usr/bin:$PATH"
pass=0
fail=0
out=$(mktemp -d /tmp/ambit-tests.XXXXXX)
trap 'rm -rf "$out"' EXIT

# 1. cmocka unit tests, TAP output: "ok N - name" / "not ok N - name".
for t in "$B"/tests/test_*; do
	[ -x "$t" ] || continue
	name=$(basename "$t")
	CMOCKA_MESSAGE_OUTPUT=TAP ASAN_OPTIONS=detect_leaks=1 "$t" >"$out/$name.tap" 2>&1
	rc=$?
	p=$(grep -c '^ok ' "$out/$name.tap")
	f=$(grep -c '^not ok ' "$out/$name.tap")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # crashed or leaked outside a test case
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	if [ "$f" -ne 0 ]; then
		echo "FAIL unit $name (exit $rc):"
		sed 's/^/    /' "$out/$name.tap"
	else
		echo "ok   unit $name ($p)"
	fi
done

# 2. fuzz corpus replay: every stored input once, so a fixed crash stays fixed.
for f in build/fuzz/fuzz_*; do
	[ -x "$f" ] || continue
	name=${f##*/fuzz_}
	corpus=tests/fuzz/corpus/$name
	mkdir -p "$corpus"
	if "$f" -runs=0 "$corpus" >"$out/fuzz-$name.log" 2>&1; then
		pass=$((pass + 1))
		echo "ok   fuzz-replay $name ($(ls "$corpus" | wc -l) inputs)"
	else
		fail=$((fail + 1))
		echo "FAIL fuzz-replay $name:"
		tail -40 "$out/fuzz-$name.log" | sed 's/^/    /'
	fi
done

# 3. system tests (pytest from Debian; needs root for namespaces).
if [ -d tests/system ] && ls tests/system/test_*.py >/dev/null 2>&1; then
	AMBIT_BIN="$PWD/$B/bin" pytest-3 -p no:cacheprovider -rfE \
		--junitxml="$out/system.xml" ${PYTEST_ARGS:-} tests/system
	eval "$(/usr/bin/python3 - "$out/system.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
p = f = 0
try:
    root = ET.parse(sys.argv[1]).getroot()
    for ts in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        n = int(ts.get("tests", 0)); s = int(ts.get("skipped", 0))
        e = int(ts.get("errors", 0)) + int(ts.get("failures", 0))
        p += n - s - e; f += e
except Exception:
    f = 1
print(f"sp={p} sf={f}")
PY
)"
	pass=$((pass + sp))
	fail=$((fail + sf))
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
