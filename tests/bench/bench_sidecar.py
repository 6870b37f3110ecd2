"""Sidecar baseline benchmark: direct pod-to-pod against per-pod HAProxy
sidecars, plaintext and mTLS, in one run on one node (tests/bench/sidecar.py
has the setup; docs/benchmarks.md the method).  Prints a markdown table and
writes BUILD/bench/sidecar.md.

    /usr/bin/python3 tests/bench/bench_sidecar.py BUILD_DIR
    env: BENCH_SECONDS (4) per run, BENCH_ROUNDS (2) alternating rounds,
         BENCH_SIDECAR_THREADS (2) HAProxy nbthread
"""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "system"))

import sidecar  # noqa: E402
from topology import Topology  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
THREADS = int(os.environ.get("BENCH_SIDECAR_THREADS", "2"))

# Brief section 9: HAProxy mTLS sidecars against direct, same machine type.
REFERENCE = {"iperf": "0.23x", "wrk4": "0.41x", "wrk64": "0.39x", "conns": "0.06x",
             "vcpu": "0.086", "rss": "15-24 MB"}


def table(res, rss_idle, rss_load, load0, load1, rounds, duration, threads):
    D = res["direct"]
    cols = [k for k in ("plain", "mtls") if k in res]
    names = {"plain": "HAProxy plaintext", "mtls": "HAProxy mTLS"}
    L = []
    L.append(f"# sidecar baseline ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs, {duration}s per run, best of {rounds} alternating rounds; "
             f"load average {load0:.1f} -> {load1:.1f})\n")
    L.append(f"Two pods on one node; per-pod HAProxy {haproxy_version()} sidecars (nbthread {threads}) "
             "behind ambit-redirect's capture rules: app -> 15001 (client pod) -> 15006 "
             "(server pod) -> app. mTLS = TLS 1.3, client certificates required, "
             "full handshake per connection.\n")
    head = "| metric | direct |" + "".join(f" {names[c]} | ratio |" for c in cols) + " brief ref. (mTLS) |"
    L.append(head)
    L.append("|---" * (head.count("|") - 1) + "|")

    def row(label, get, fmt, ratio, ref=""):
        s = f"| {label} | {fmt(get(D))} |"
        for c in cols:
            s += f" {fmt(get(res[c]))} | {ratio(get(res[c]), get(D))} |"
        L.append(s + f" {ref} |")

    x = lambda v, d: f"{v / d:.2f}x"  # noqa: E731
    plus = lambda v, d: f"+{v - d:.0f} us"  # noqa: E731
    row("iperf3 single stream (Gbit/s)", lambda r: r["iperf"], lambda v: f"{v / 1e9:.2f}", x, REFERENCE["iperf"])
    for k, n in (("wrk4", 4), ("wrk64", 64)):
        row(f"wrk {n} conns req/s", lambda r: r[k][0], lambda v: f"{v:.0f}", x, REFERENCE[k])
        row(f"wrk {n} conns p50 (us)", lambda r: r[k][1], lambda v: f"{v:.0f}", plus)
        row(f"wrk {n} conns p99 (us)", lambda r: r[k][2], lambda v: f"{v:.0f}", plus)
    row("new connections/s (1 request each, 8 in flight)", lambda r: r["conns"], lambda v: f"{v:.0f}", x,
        REFERENCE["conns"])
    L.append("")
    L.append("| sidecar cost | " + " | ".join(names[c] for c in cols) + " | brief ref. (mTLS) |")
    L.append("|---" * (len(cols) + 2) + "|")
    for k, n in (("wrk4", 4), ("wrk64", 64)):
        L.append(f"| vCPU per 1000 req/s, both sidecars, wrk {n} conns | " +
                 " | ".join(f"{res[c][k][3]:.3f}" for c in cols) + f" | {REFERENCE['vcpu']} |")
    L.append("| CPU ms per new connection, both sidecars | " +
             " | ".join(f"{res[c]['conn_cpu_ms']:.2f}" for c in cols) + " | |")
    L.append("| RSS per sidecar, idle (MiB) | " +
             " | ".join(", ".join(f"{v / 1024:.1f}" for v in rss_idle[c].values()) for c in cols) + " | |")
    L.append("| RSS per sidecar, after the runs (MiB) | " +
             " | ".join(", ".join(f"{v / 1024:.1f}" for v in rss_load[c].values()) for c in cols) +
             f" | {REFERENCE['rss']} |")
    return "\n".join(L) + "\n"


def haproxy_version():
    r = subprocess.run([sidecar.HAPROXY, "-v"], capture_output=True, text=True)
    return r.stdout.split()[2] if r.returncode == 0 else "?"


def main():
    build = Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    bins = build / "bin"
    httpd = build / "bench" / "bench-httpd"
    if not httpd.exists():
        httpd.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(httpd), str(HERE / "httpd.c")], check=True)
    connrate = sidecar.build_connrate(build)
    out_md = build / "bench" / "sidecar.md"
    topo = Topology(bins=bins)
    try:
        n1 = topo.add_node("n1")
        pairs, handles = {}, {}
        for label in ("direct", "plain", "mtls"):
            src, dst, h = sidecar.add_baseline(topo, n1, bins, httpd, label, THREADS)
            pairs[label] = (src, dst)
            if h:
                handles[label] = h
        time.sleep(0.5)
        rss_idle = {m: h.rss_kb() for m, h in handles.items()}
        res = {k: {} for k in pairs}
        load0 = os.getloadavg()[0]
        for rnd in range(ROUNDS):
            for label, (src, dst) in pairs.items():
                pids = handles[label].pids if label in handles else ()
                m = sidecar.measure(src, dst.ip, pids=pids, connrate_bin=connrate)
                sidecar.merge_best(res[label], m)
                print(f"round {rnd + 1} {label}: iperf {m['iperf'] / 1e9:.2f} Gbit/s, "
                      f"wrk4 {m['wrk4'][0]:.0f}/s, wrk64 {m['wrk64'][0]:.0f}/s, "
                      f"conns {m['conns']:.0f}/s, load {os.getloadavg()[0]:.1f}", flush=True)
        load1 = os.getloadavg()[0]
        rss_load = {m: h.rss_kb() for m, h in handles.items()}
        text = table(res, rss_idle, rss_load, load0, load1, ROUNDS, sidecar.DURATION, THREADS)
        print(text)
        out_md.write_text(text)
        print(f"written to {out_md}")
    finally:
        topo.teardown()


if __name__ == "__main__":
    main()
