"""node-proxy benchmark, side by side in one run on one node (brief §9,
issues 3 and 4): direct pod-to-pod (1.0x), node-proxy plaintext, node-proxy
HBONE (mutual TLS 1.3 + HTTP/2 CONNECT, certificates from ambit-certs) and
per-pod HAProxy sidecars with mTLS (tests/bench/sidecar.py).  Prints a
markdown table and writes BUILD/bench/results.md.

    /usr/bin/python3 tests/bench/bench_node_proxy.py BUILD_DIR
    env: BENCH_SECONDS (5) per run, BENCH_ROUNDS (2) alternating rounds per
         node-proxy phase, BENCH_NP_ARGS extra node-proxy flags

One node-proxy process serves a pod either in plaintext or in HBONE, so the
node-proxy pods are measured in two phases, one proxy after the other on
the same pods: phase 1 plaintext (default flags: the same-node shortcut,
one proxied hop), phase 2 a proxy whose config has [mesh] ca_dir (two
proxied hops: 15001 of the client pod -> TLS -> 15008 of the server pod).
Direct and the sidecar pair are measured in every round of both phases, so
each phase alternates direct / node-proxy / sidecar; every figure is the
best of its rounds.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "system"))

import sidecar  # noqa: E402
from topology import PYTHON, Topology, netns_exec, wait_port  # noqa: E402

DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
BODY = 1024  # response body bytes (issue 4: vCPU target at 1 KiB)
PORT = 8081  # bench-httpd with BODY-byte answers in every server pod
N_IDLE = 1000

# the idle-connection server and client of the newer benchmark
from bench_mesh import _IDLE_CLIENT, _IDLE_SERVER  # noqa: E402


_PACED_CLIENT = r"""
import socket, sys, time
host, port, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
lat, buf = [], b""
t0 = time.monotonic()
n = int(rate * secs)
for i in range(n):
    due = t0 + i / rate
    d = due - time.monotonic()
    if d > 0:
        time.sleep(d)
    t = time.monotonic()
    s.sendall(req)
    while True:
        h = buf.find(b"\r\n\r\n")
        if h >= 0:
            cl = int(buf[:h].lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(buf) >= h + 4 + cl:
                buf = buf[h + 4 + cl:]
                break
        b = s.recv(65536)
        if not b:
            sys.exit("closed")
        buf += b
    lat.append(time.monotonic() - t)
lat.sort()
print("p50=%.1f p99=%.1f n=%d" % (lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99) - 1] * 1e6, n))
"""


def paced_p99(src, ip):
    """p50/p99 (us) of one keep-alive connection paced at 1000 req/s (issue
    4: added p99 at 1000 req/s); the Python client's own overhead is the
    same in every column, so the difference to direct is the proxy's."""
    r = src.run([PYTHON, "-c", _PACED_CLIENT, ip, str(PORT), "1000", str(DURATION)],
                timeout=DURATION + 30)
    m = dict(kv.split("=") for kv in r.stdout.split())
    return float(m["p50"]), float(m["p99"])


def measure(src, ip, pids, connrate_bin):
    """One round from src to ip: like sidecar.measure() but against the
    1 KiB server on PORT.  vcpu (per 1000 req/s) of pids in wrk tuples."""
    m = {"iperf": sidecar.iperf(src, ip, DURATION)}
    for k, n in (("wrk4", 4), ("wrk64", 64)):
        m[k] = sidecar.wrk(src, f"http://{ip}:{PORT}/", n, DURATION, pids)
    m["conns"], m["conn_cpu_ms"] = sidecar.connrate(src, connrate_bin, ip, PORT, DURATION,
                                                    pids=pids)
    m["paced"] = paced_p99(src, ip)
    return m


class NodeProxy:
    def __init__(self, topo, n1, bins, name, extra):
        self.topo, self.n1, self.bins = topo, n1, bins
        self.np = str(bins / "ambit-node-proxy")
        self.sock = os.path.join(topo.tmpdir, f"{name}.sock")
        self.proc = n1.popen([self.np, "run", "--control-socket", self.sock, "--state-file",
                              os.path.join(topo.tmpdir, f"{name}.state"), "--log-level", "warn",
                              "--drain-timeout", "1s"] + extra +
                             os.environ.get("BENCH_NP_ARGS", "").split())
        deadline = time.monotonic() + 10
        while self.ctl("status", check=False).returncode:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("node-proxy did not start: " + topo.log(self.proc))
            time.sleep(0.05)
        self.rss_start = sidecar.rss_kb(self.proc.pid)

    @property
    def pid(self):
        return self.proc.pid

    def ctl(self, *args, check=True):
        return self.n1.run([self.np, "ctl", "--socket", self.sock] + list(args), check=check)

    def enrol(self, pod):
        self.ctl("add", "--uid", f"uid-{pod.name}", "--namespace", "bench", "--name", pod.name,
                 "--netns", pod.path, "--ip", pod.ip, "--service-account", f"sa-{pod.name}")

    def stats(self):
        def get():
            with urllib.request.urlopen("http://127.0.0.1:15000/stats", timeout=5) as r:
                return json.loads(r.read())
        return netns_exec(self.n1, get)

    def stop(self):
        self.topo.stop(self.proc)


def idle_rss(topo, proxy, c, d):
    """RSS delta of N_IDLE idle connections c -> d, measured after the load
    runs (buffer pages already faulted in, so the delta is what a
    connection itself costs).  Returns KiB per client connection, with
    every proxy-side socket / stream of it counted."""
    srv = d.popen([PYTHON, "-c", _IDLE_SERVER, "9100"])
    try:
        wait_port(d, 9100, timeout=30)
    except Exception as e:
        raise RuntimeError(f"idle server: {e}: " + topo.log(srv)) from None
    before = sidecar.rss_kb(proxy.pid)
    cl = c.popen([PYTHON, "-c", _IDLE_CLIENT, d.ip, "9100", str(N_IDLE)],
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if cl.stdout.readline().strip() != "ready":
        topo.stop(srv)
        raise RuntimeError("idle client: " + topo.log(cl)[-500:])
    time.sleep(0.5)
    after = sidecar.rss_kb(proxy.pid)
    cl.stdin.write("\n")
    cl.stdin.flush()
    cl.wait(timeout=10)
    topo.stop(srv)
    return (after - before) / N_IDLE


def main():
    build = Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    bins = build / "bin"
    httpd = build / "bench" / "bench-httpd"
    if not httpd.exists():
        httpd.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(httpd), str(HERE / "httpd.c")], check=True)
    crate = sidecar.build_connrate(build)
    out_md = build / "bench" / "results.md"
    topo = Topology(bins=bins)
    load = [os.getloadavg()]
    try:
        n1 = topo.add_node("n1")
        # direct and sidecar pairs (servers on 8080 (64 B) and 5201 started
        # by add_baseline; we add the 1 KiB server on PORT)
        a, b, _ = sidecar.add_baseline(topo, n1, bins, httpd, "direct")
        sa, sb, sh = sidecar.add_baseline(topo, n1, bins, httpd, "mtls")
        # node-proxy pair + 8 more pods: 10 enrolled
        c = topo.add_pod(n1, "c")
        d = topo.add_pod(n1, "d")
        extra = [topo.add_pod(n1, f"e{i}") for i in range(8)]
        for p in (c, d):
            sidecar.tune_pod(p)
        for p in (b, sb, d):
            p.popen([str(httpd), str(PORT), str(BODY)])
        for p in (d,):
            p.popen(["iperf3", "-s", "-p", "5201"])
        for p in (c, d, *extra):
            n1.run([str(bins / "ambit-redirect"), "install", "--netns", p.path])
        wait_port(d, 5201)
        for p in (b, d):
            wait_port(p, PORT)

        pki = os.path.join(topo.tmpdir, "pki")
        ca_dir = os.path.join(topo.tmpdir, "n1-ca")
        os.makedirs(pki)
        subprocess.run([str(bins / "ambit-certs"), "init-root", "--dir", pki], check=True,
                       capture_output=True)
        subprocess.run([str(bins / "ambit-certs"), "issue-node", "--dir", pki, "--node", "n1",
                        "--out", ca_dir], check=True, capture_output=True)
        conf = os.path.join(topo.tmpdir, "np-mesh.ini")
        with open(conf, "w") as f:
            f.write(f"[mesh]\nca_dir = {ca_dir}\n")

        # direct is kept per phase as well: each node-proxy column is divided
        # by the direct figure of its own rounds, so load that changes
        # between the phases does not bias one column's ratio
        res = {k: {} for k in ("direct", "direct:plain", "direct:hbone", "plain", "hbone", "mtls")}
        mem = {}
        mesh = {}
        for phase, flags in (("plain", []), ("hbone", ["--config", conf])):
            proxy = NodeProxy(topo, n1, bins, f"np-{phase}", flags)
            for p in (c, d, *extra):
                proxy.enrol(p)
            time.sleep(0.5)
            mem[phase] = {"start": proxy.rss_start, "idle10": sidecar.rss_kb(proxy.pid)}
            s0 = proxy.stats()
            for rnd in range(ROUNDS):
                for label, src, dst, pids in (("direct", a, b, ()), (phase, c, d, [proxy.pid]),
                                              ("mtls", sa, sb, sh.pids)):
                    m = measure(src, dst.ip, pids, crate)
                    for key in (label, f"direct:{phase}") if label == "direct" else (label,):
                        old = res[key].get("paced")
                        sidecar.merge_best(res[key], m)
                        if old:
                            res[key]["paced"] = (min(old[0], m["paced"][0]),
                                                 min(old[1], m["paced"][1]))
                    print(f"{phase} round {rnd + 1} {label}: iperf {m['iperf'] / 1e9:.2f} Gbit/s, "
                          f"wrk4 {m['wrk4'][0]:.0f}/s, wrk64 {m['wrk64'][0]:.0f}/s, "
                          f"conns {m['conns']:.0f}/s, load {os.getloadavg()[0]:.1f}", flush=True)
            s1 = proxy.stats()
            mem[phase]["load"] = sidecar.rss_kb(proxy.pid)
            try:
                mem[phase]["per_idle"] = idle_rss(topo, proxy, c, d)
            except Exception as e:  # reported as n/a, the rest of the run still counts
                print(f"{phase}: idle-connection RSS failed: {e}", flush=True)
                mem[phase]["per_idle"] = float("nan")
            tot0, tot1 = s0["total"], s1["total"]
            mesh[phase] = {
                "accepted": tot1["accepted"] - tot0["accepted"],
                "shortcuts": tot1.get("local_shortcuts", 0) - tot0.get("local_shortcuts", 0),
                "resets": tot1["resets"] - tot0["resets"],
            }
            if phase == "hbone":
                m0, m1 = s0["mesh"], s1["mesh"]
                if not m1.get("enabled"):
                    raise RuntimeError("HBONE phase: mesh not enabled in /stats")
                mesh[phase].update({
                    "outbound_hbone": m1["outbound_hbone"] - m0["outbound_hbone"],
                    "outbound_plain": m1["outbound_plain"] - m0["outbound_plain"],
                    "inbound_streams": m1["inbound_streams"] - m0["inbound_streams"],
                    "hs_client": m1["handshakes"]["client"] - m0["handshakes"]["client"],
                    "hs_server": m1["handshakes"]["server"] - m0["handshakes"]["server"],
                    "identities": len(m1["identities"]),
                })
                if mesh[phase]["outbound_hbone"] < 1000 or mesh[phase]["outbound_plain"] > 10:
                    raise RuntimeError(f"HBONE phase did not go through the tunnel: {mesh[phase]}")
            for p in (c, d, *extra):
                proxy.ctl("del", "--uid", f"uid-{p.name}", check=False)
            proxy.stop()
        mem["mtls"] = sh.rss_kb()
        load.append(os.getloadavg())
        text = table(res, mem, mesh, load)
        print(text)
        out_md.parent.mkdir(parents=True, exist_ok=True)
        out_md.write_text(text)
        print(f"written to {out_md}")
    finally:
        topo.teardown()


def table(res, mem, mesh, load):
    D = res["direct"]
    cols = (("plain", "node-proxy plaintext"), ("hbone", "node-proxy HBONE"),
            ("mtls", "HAProxy mTLS sidecars"))
    base = {"plain": res["direct:plain"], "hbone": res["direct:hbone"], "mtls": D}
    # targets: (column, test on ratio/value, text)
    L = []
    L.append(f"# node-proxy benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs, {DURATION}s per run, best of {ROUNDS} rounds per "
             f"node-proxy phase; load average (1/5/15 min) at start "
             f"{'/'.join(f'{x:.1f}' for x in load[0])}, at end "
             f"{'/'.join(f'{x:.1f}' for x in load[-1])})\n")
    L.append(f"One node; each column its own client/server pod pair; bench-httpd answers {BODY} B "
             "bodies. node-proxy plaintext = default flags, same-node shortcut: ONE proxied hop "
             f"(accepted {mesh['plain']['accepted']}, shortcuts {mesh['plain']['shortcuts']}). "
             "node-proxy HBONE = [mesh] ca_dir from ambit-certs, pods enrolled with "
             "namespace + service account: TWO hops, 15001 -> mTLS 1.3 + HTTP/2 CONNECT -> 15008 "
             f"(during its rounds: outbound_hbone {mesh['hbone']['outbound_hbone']}, "
             f"outbound_plain {mesh['hbone']['outbound_plain']}, inbound_streams "
             f"{mesh['hbone']['inbound_streams']}, TLS handshakes client/server "
             f"{mesh['hbone']['hs_client']}/{mesh['hbone']['hs_server']}, identities "
             f"{mesh['hbone']['identities']}). HAProxy = per-pod sidecars, TLS 1.3 with client "
             "certificates, full handshake per connection. Direct and HAProxy are measured in "
             "every round of both phases; each node-proxy ratio is against direct in the same "
             "phase's rounds, the HAProxy ratio against direct over both.\n")
    head = ("| metric | direct, plaintext phase | node-proxy plaintext | ratio | "
            "direct, HBONE phase | node-proxy HBONE | ratio | direct, both phases | "
            "HAProxy mTLS sidecars | ratio | targets |")
    L.append(head)
    L.append("|---" * (head.count("|") - 1) + "|")
    verdict = []

    def mark(ok):
        return "met" if ok else "MISSED"

    def x(v, d):
        return f"{v / d:.2f}x"

    def plus(v, d):
        return f"{v - d:+.0f} us"

    def row(label, get, fmt, ratio, tg=""):
        s = "| " + label + " |"
        for k, _ in cols:
            s += f" {fmt(get(base[k]))} | {fmt(get(res[k]))} | {ratio(get(res[k]), get(base[k]))} |"
        L.append(s + f" {tg} |")

    def tgt(name, k, val, ok_fn, goal):
        ok = ok_fn(val)
        verdict.append(f"| {name} | {goal} | {val} | {mark(ok)} |")

    ip = lambda r: r["iperf"]  # noqa: E731
    row("iperf3 single stream (Gbit/s)", ip, lambda v: f"{v / 1e9:.2f}", x,
        "plain >= 0.5x; HBONE >= 0.4x")
    for k, n in (("wrk4", 4), ("wrk64", 64)):
        row(f"wrk {n} conns req/s", lambda r: r[k][0], lambda v: f"{v:.0f}", x,
            "plain >= 0.6x; HBONE >= 0.5x" if n == 64 else "")
        row(f"wrk {n} conns p50 (us)", lambda r: r[k][1], lambda v: f"{v:.0f}", plus,
            "plain added <= 60 us" if n == 4 else "")
        row(f"wrk {n} conns p99 (us)", lambda r: r[k][2], lambda v: f"{v:.0f}", plus)
    row("1000 req/s paced, 1 conn: p50 (us)", lambda r: r["paced"][0], lambda v: f"{v:.0f}", plus)
    row("1000 req/s paced, 1 conn: p99 (us)", lambda r: r["paced"][1], lambda v: f"{v:.0f}", plus,
        "HBONE added <= 200 us")
    row("new connections/s (1 request each, 8 in flight)", lambda r: r["conns"],
        lambda v: f"{v:.0f}", x, "HBONE >= 0.3x")
    L.append("")
    L.append("| proxy cost | " + " | ".join(n for _, n in cols) + " | targets |")
    L.append("|---" * (len(cols) + 2) + "|")
    for k, n in (("wrk4", 4), ("wrk64", 64)):
        L.append(f"| vCPU per 1000 req/s, wrk {n} conns, 1 KiB | " +
                 " | ".join(f"{res[c][k][3]:.3f}" for c, _ in cols) +
                 (" | HBONE <= 0.03 (ztunnel 0.06; HAProxy ref. 0.086) |" if n == 64 else " | |"))
    L.append("| CPU ms per new connection | " +
             " | ".join(f"{res[c]['conn_cpu_ms']:.3f}" for c, _ in cols) + " | |")
    sc = mem["mtls"]
    L.append(f"| RSS at start, no pods (MiB) | {mem['plain']['start'] / 1024:.1f} | "
             f"{mem['hbone']['start'] / 1024:.1f} | | |")
    L.append(f"| RSS idle, 10 pods enrolled (MiB) | {mem['plain']['idle10'] / 1024:.1f} | "
             f"{mem['hbone']['idle10'] / 1024:.1f} | 2 sidecars: "
             f"{sum(sc.values()) / 1024:.1f} (per sidecar {', '.join(f'{v / 1024:.1f}' for v in sc.values())}; "
             f"x10 pods = {sum(sc.values()) / 2 * 10 / 1024:.0f}) | plain <= 8 MB |")
    L.append(f"| RSS after the load runs (MiB) | {mem['plain']['load'] / 1024:.1f} | "
             f"{mem['hbone']['load'] / 1024:.1f} | | |")
    L.append(f"| RSS per idle client connection (KiB; {N_IDLE} idle, all proxy-side ends) | "
             f"{mem['plain']['per_idle']:.2f} | {mem['hbone']['per_idle']:.2f} | | "
             "<= 16 KiB |")

    P, H = res["plain"], res["hbone"]
    DP, DH = res["direct:plain"], res["direct:hbone"]
    tgt("plaintext iperf3 vs direct", "", f"{P['iperf'] / DP['iperf']:.2f}x",
        lambda v: float(v[:-1]) >= 0.5, ">= 0.5x")
    tgt("plaintext wrk 64 req/s vs direct", "", f"{P['wrk64'][0] / DP['wrk64'][0]:.2f}x",
        lambda v: float(v[:-1]) >= 0.6, ">= 0.6x")
    tgt("plaintext added p50, wrk 4", "", f"{P['wrk4'][1] - DP['wrk4'][1]:+.0f} us",
        lambda v: float(v.split()[0]) <= 60, "<= +60 us")
    tgt("plaintext RSS idle, 10 pods", "", f"{mem['plain']['idle10'] / 1024:.1f} MiB",
        lambda v: float(v.split()[0]) * 1.048576 <= 8, "<= 8 MB")
    tgt("plaintext RSS per idle connection", "", f"{mem['plain']['per_idle']:.2f} KiB",
        lambda v: float(v.split()[0]) <= 16, "<= 16 KiB")
    tgt("HBONE iperf3 vs direct", "", f"{H['iperf'] / DH['iperf']:.2f}x",
        lambda v: float(v[:-1]) >= 0.4, ">= 0.4x")
    tgt("HBONE wrk 64 req/s vs direct", "", f"{H['wrk64'][0] / DH['wrk64'][0]:.2f}x",
        lambda v: float(v[:-1]) >= 0.5, ">= 0.5x")
    tgt("HBONE new connections/s vs direct", "", f"{H['conns'] / DH['conns']:.2f}x",
        lambda v: float(v[:-1]) >= 0.3, ">= 0.3x")
    tgt("HBONE vCPU per 1000 req/s, 1 KiB, wrk 64", "", f"{H['wrk64'][3]:.3f}",
        lambda v: float(v) <= 0.03, "<= 0.03")
    tgt("HBONE RSS per idle tunnelled connection", "", f"{mem['hbone']['per_idle']:.2f} KiB",
        lambda v: float(v.split()[0]) <= 16, "<= 16 KiB")
    tgt("HBONE added p99 at 1000 req/s (1 conn, paced)", "",
        f"{H['paced'][1] - DH['paced'][1]:+.0f} us", lambda v: float(v.split()[0]) <= 200,
        "<= +200 us")
    L.append("")
    L.append("| target (issues 3, 4) | goal | this run | |")
    L.append("|---|---|---|---|")
    L.extend(verdict)
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
