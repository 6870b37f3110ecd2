"""Where ambit ambient's CPU goes at a fixed request rate (issue 9: "where
ambit loses, profile it").  One node, one node-proxy with [mesh] on (HBONE
between two enrolled pods, the `ambient` path of bench_mesh.py), bench-paced
at RATE req/s for SECONDS, and meanwhile:
  - the proxy's CPU (schedstat of all threads) and its context switches
    (voluntary + involuntary, all threads) per request;
  - `perf record -g` on the proxy process, reported by symbol (self time)
    and by DSO.

    /usr/bin/python3 tests/bench/profile_ambient.py [BUILD_DIR] [--rate 1000]
        [--seconds 10] [--plain] [--workers 2] [--iperf]
Writes BUILD/bench/profile-ambient-<rate|iperf>[-plain]-w<workers>.txt and
prints it.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "system"))

import bench_mesh as bm  # noqa: E402
from topology import Topology, wait_port  # noqa: E402


def ctx_switches(pid):
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--plain", action="store_true", help="node-proxy without [mesh]")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iperf", action="store_true",
                    help="profile a single iperf3 stream instead of paced requests")
    args = ap.parse_args()
    build = Path(args.build).resolve()
    bins, out = build / "bin", build / "bench"
    out.mkdir(parents=True, exist_ok=True)
    httpd, paced = out / "bench-httpd", out / "bench-paced"
    for exe, src in ((httpd, "httpd.c"), (paced, "paced.c")):
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(exe), str(HERE / src)], check=True)
    topo = Topology(bins=bins)
    L = []
    try:
        n1 = topo.add_node("n1")
        ca = None if args.plain else bm.make_pki(bins, topo)
        a, b = topo.add_pod(n1, "a"), topo.add_pod(n1, "b")
        b.popen([str(httpd), str(bm.PORT), str(bm.BODY)])
        b.popen(["iperf3", "-s", "-p", str(bm.IPERF_PORT)])
        wait_port(b, bm.PORT)
        wait_port(b, bm.IPERF_PORT)
        p = bm.NodeProxy(topo, n1, bins, "np", 0, ca, workers=args.workers)
        p.wait_ready()
        for pod in (a, b):
            n1.run([str(bins / "ambit-redirect"), "install", "--netns", pod.path])
            p.enrol(pod)
        cfg = bm.Config("ambient", a, b, [p.proc])
        bm.paced(cfg, args.rate, 2, paced)  # warm: tunnel up, buffers faulted in
        data = Path(topo.tmpdir) / "perf.data"
        c0, x0 = bm.cpu_s([p.pid]), ctx_switches(p.pid)
        perf = subprocess.Popen(["perf", "record", "-q", "-g", "-F", "999", "-o", str(data), "-p",
                                 str(p.pid), "--", "sleep", str(args.seconds + 1)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        t0 = time.monotonic()
        mode = ("plaintext" if args.plain else "HBONE") + f", {args.workers} workers"
        if args.iperf:
            m = bm.iperf(cfg, 1, args.seconds)
        else:
            m = bm.paced(cfg, args.rate, args.seconds, paced)
        t1 = time.monotonic()
        perf.wait(timeout=60)
        c1, x1 = bm.cpu_s([p.pid]), ctx_switches(p.pid)
        if args.iperf:
            L.append(f"ambit ambient {mode}, iperf3 1 stream x {args.seconds} s, load "
                     f"{os.getloadavg()[0]:.1f}")
            L.append(f"{m['gbps']:.2f} Gbit/s; proxy {(c1 - c0) / (t1 - t0):.2f} vCPU, "
                     f"{(c1 - c0) / (m['gbps'] * (t1 - t0) / 8):.2f} s CPU per GB, context "
                     f"switches {(x1 - x0) / (t1 - t0):.0f}/s")
        else:
            n = m["n"]
            L.append(f"ambit ambient {mode}, bench-paced {args.rate} req/s x {args.seconds} s "
                     f"({10 if args.rate <= 1000 else 50} conns), load {os.getloadavg()[0]:.1f}")
            L.append(f"achieved {m['rate']:.0f} req/s, p50 {m['p50']:.0f} us, p99 "
                     f"{m['p99']:.0f} us")
            L.append(f"proxy CPU per request {(c1 - c0) / n * 1e6:.1f} us (with perf attached; "
                     f"vCPU per 1000 req/s {(c1 - c0) / n * 1000:.3f}), context switches per "
                     f"request {(x1 - x0) / n:.2f}")
        for sort, k in (("dso", 15), ("sym", 40)):
            r = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                                "-g", "none", "--sort", sort, "--percent-limit", "0.7"],
                               capture_output=True, text=True)
            rows = [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
            L.append(f"\nperf report --sort {sort} (self time, top {k}):")
            L.extend(rows[:k])
    finally:
        topo.teardown()
    text = "\n".join(L) + "\n"
    print(text)
    name = "iperf" if args.iperf else str(args.rate)
    suffix = ("-plain" if args.plain else "") + f"-w{args.workers}"
    (out / f"profile-ambient-{name}{suffix}.txt").write_text(text)


if __name__ == "__main__":
    main()
