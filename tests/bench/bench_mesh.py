"""make bench / make bench-quick (issue 9): the ambient node proxy against
per-pod sidecars, side by side, in one run on one node.

    /usr/bin/python3 tests/bench/bench_mesh.py BUILD_DIR [--quick]
    /usr/bin/python3 tests/bench/bench_mesh.py --report BUILD_DIR/bench/results.json
    env: BENCH_SECONDS run length (4; quick 1), BENCH_ROUNDS (3),
         BENCH_PODS scale pod counts ("1,10,50,100"; quick "1,10"),
         BENCH_NP_ARGS extra flags for every node-proxy instance

Configurations, all up at the same time on one node, each with its own
client/server pod pair:
  direct          no mesh: the physical limit
  ambient         ONE ambit-node-proxy for the node, [mesh] on: HBONE mTLS
                  between the client pod's 15001 and the server pod's 15008
  ambient-plain   a second node-proxy instance without [mesh] (same-node
                  shortcut, one proxied hop): proxy cost without crypto
  ambient-fast    a third instance with [mesh] on and local_fast_path: the
                  two mesh pods of this node joined in-process (policy by
                  SPIFFE ID as for HBONE, no TLS: docs/security.md)
  ambit-sidecar   one ambit-node-proxy instance PER POD, each enrolling its
                  own pod (own control socket, state file, admin /
                  readiness / metrics ports), HBONE between the two
  haproxy         per-pod HAProxy sidecars, TLS 1.3 with client certificates
                  from the same ambit-certs root (tests/bench/sidecar.py)
  haproxy-plain   the same sidecars in plain TCP

Workloads, in every round, each workload run for every configuration
before the next workload (configuration order rotated per round), so load
from other jobs on the machine hits them alike: hey -q at 1,000 and 10,000
req/s (1 KiB answers), wrk at 4 and 64 connections, iperf3 with 1 and 8
streams, new connections/s (one request per connection), redis-benchmark
SET/GET against redis-server in the server pod.  Then per configuration
the RSS per open idle connection, then the scale part: 1..100 pods with
one ambient proxy, per-pod ambit sidecars and per-pod HAProxy sidecars.

Writes BUILD/bench/results.{md,json} and latency.png, throughput.png,
scale.png; prints the table.
"""

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "system"))

import sidecar  # noqa: E402
from topology import PYTHON, Topology, netns_exec, wait_port  # noqa: E402

BODY = 1024
PORT = 8081  # bench-httpd, 1 KiB answers
IPERF_PORT = 5201
REDIS_PORT = 6379
IDLE_PORT = 9100
CONFIGS = (
    ("direct", "direct"),
    ("ambient", "ambit ambient (HBONE)"),
    ("ambient-plain", "ambit ambient plaintext"),
    ("ambient-fast", "ambit ambient, same-node fast path"),
    ("ambit-sidecar", "ambit per-pod sidecars (HBONE)"),
    ("haproxy", "HAProxy mTLS sidecars"),
    ("haproxy-plain", "HAProxy plaintext sidecars"),
)
NAMES = dict(CONFIGS)
SCALE_KINDS = (("ambient", "ambit ambient (1 proxy)"),
               ("ambit-sidecar", "ambit per-pod sidecars"),
               ("haproxy", "HAProxy mTLS sidecars"))
# hey: -c workers x -q per-worker rate = the offered rate
HEY_RATES = {1000: (10, 100), 10000: (50, 200)}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)


def stats(v):
    """(median, min, max) of the finite values of v, or (nan, nan, nan)."""
    v = [x for x in v if x is not None and not math.isnan(x)]
    if not v:
        return (math.nan,) * 3
    return statistics.median(v), min(v), max(v)


def pct(sorted_v, p):
    if not sorted_v:
        return math.nan
    return sorted_v[min(len(sorted_v) - 1, max(0, math.ceil(p / 100 * len(sorted_v)) - 1))]


# --------------------------------------------------------------------------
# proxies


class NodeProxy:
    """One ambit-node-proxy process in the node netns with its own control
    socket, state file and admin / readiness / metrics ports (index picks
    them), so any number run side by side."""

    def __init__(self, topo, node, bins, name, index, ca_dir=None, workers=2, mesh_extra=""):
        self.topo, self.node, self.name = topo, node, name
        self.np = str(bins / "ambit-node-proxy")
        self.admin = 16000 + index
        d = Path(topo.tmpdir) / "np"
        d.mkdir(exist_ok=True)
        conf = d / f"{name}.ini"
        text = f"[telemetry]\nmetrics_port = {17000 + index}\n"
        if ca_dir:
            text += f"[mesh]\nca_dir = {ca_dir}\n{mesh_extra}"
        conf.write_text(text)
        self.sock = str(d / f"{name}.sock")
        self.proc = node.popen([self.np, "run", "--config", str(conf), "--control-socket",
                                self.sock, "--state-file", str(d / f"{name}.state"),
                                "--admin-port", str(self.admin), "--readiness-port",
                                str(16500 + index), "--workers", str(workers), "--log-level",
                                "warn", "--drain-timeout", "1s"] +
                               os.environ.get("BENCH_NP_ARGS", "").split())

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while self.ctl("status", check=False).returncode:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"node-proxy {self.name} did not start: " +
                                   self.topo.log(self.proc)[-2000:])
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def ctl(self, *args, check=True):
        return self.node.run([self.np, "ctl", "--socket", self.sock] + list(args), check=check)

    def enrol(self, pod, netns_path=None):
        """netns_path: a stand-in netns for a pod another instance serves
        (a registry entry only: its identity and address, see ambit_sidecars)."""
        self.ctl("add", "--uid", f"uid-{pod.name}", "--namespace", "bench", "--name", pod.name,
                 "--netns", netns_path or pod.path, "--ip", pod.ip, "--service-account",
                 f"sa-{pod.name}")

    def stats(self):
        def get():
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats", timeout=5) as r:
                return json.loads(r.read())
        return netns_exec(self.node, get)


class Config:
    """A client/server pair and the proxy processes that carry its traffic."""

    def __init__(self, key, src, dst, procs=()):
        self.key, self.src, self.dst = key, src, dst
        self.procs = list(procs)  # Popen of every proxy process of this path

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def rss_kb(self):
        return sum(sidecar.rss_kb(p) for p in self.pids)


def rss_kb_all(pids):
    return sum(sidecar.rss_kb(p) for p in pids)


def make_pki(bins, topo):
    pki = Path(topo.tmpdir) / "pki"
    ca_dir = Path(topo.tmpdir) / "n1-ca"
    pki.mkdir()
    subprocess.run([str(bins / "ambit-certs"), "init-root", "--dir", str(pki)], check=True,
                   capture_output=True)
    subprocess.run([str(bins / "ambit-certs"), "issue-node", "--dir", str(pki), "--node", "n1",
                    "--out", str(ca_dir)], check=True, capture_output=True)
    return ca_dir


def redis_server_path(topo):
    """Debian's redis-tools ships redis-check-rdb, which is redis-server
    itself (it picks its role from argv[0]; the redis-server package's
    /usr/bin/redis-server is a symlink to it).  Installing that package
    would start a service in the root netns, so we make the symlink."""
    exe = Path(topo.tmpdir) / "redis-server"
    if not exe.exists():
        exe.symlink_to("/usr/bin/redis-check-rdb")
    return str(exe)


def start_servers(topo, pod, httpd):
    # tune_pod() makes 1024-65535 ephemeral; keep the server ports out of it,
    # or a proxy's connection to the app from inside this pod can take the
    # idle server's port before it binds (EADDRINUSE, seen in full runs)
    pod.run(["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports="
             f"{IPERF_PORT},{REDIS_PORT},{PORT},{IDLE_PORT}"])
    pod.popen([str(httpd), str(PORT), str(BODY)])
    pod.popen(["iperf3", "-s", "-p", str(IPERF_PORT)])
    pod.popen([redis_server_path(topo), "--port", str(REDIS_PORT), "--bind", "0.0.0.0",
               "--protected-mode", "no", "--save", "", "--appendonly", "no", "--logfile", "",
               "--dir", topo.tmpdir], cwd=topo.tmpdir)


# --------------------------------------------------------------------------
# workloads: each returns a dict of figures for one run


def cpu_s(pids):
    """CPU seconds of all threads of pids, from schedstat (ns resolution;
    /proc/PID/stat counts 10 ms ticks, too coarse for idle proxies)."""
    t = 0
    for pid in pids:
        d = f"/proc/{pid}/task"
        for tid in os.listdir(d):
            try:
                with open(f"{d}/{tid}/schedstat") as f:
                    t += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
    return t / 1e9


def paced(cfg, rate, duration, paced_bin):
    """bench-paced (tests/bench/paced.c): open-loop at exactly `rate`,
    latency from each request's due time, microsecond resolution."""
    conns = 10 if rate <= 1000 else 50
    c0, t0 = cpu_s(cfg.pids), time.monotonic()
    r = cfg.src.run([str(paced_bin), cfg.dst.ip, str(PORT), str(rate), str(duration),
                     str(conns)], timeout=duration + 60)
    c1, t1 = cpu_s(cfg.pids), time.monotonic()
    m = {k: float(v) for k, v in (kv.split("=") for kv in r.stdout.split())}
    if m["errors"] > m["n"] / 100:
        raise RuntimeError("bench-paced: " + r.stdout + r.stderr)
    m["vcpu"] = ((c1 - c0) / (t1 - t0) / (m["rate"] / 1000)) if cfg.pids and m["rate"] else None
    return m


def hey(cfg, rate, duration):
    """hey -z D -c C -q Q -o csv: per-request latencies (hey prints them in
    seconds with 4 decimals, i.e. 0.1 ms resolution).  Returns achieved
    req/s, p50/p90/p99/p99.9 in us, errors, proxy vCPU per 1000 req/s and
    a log-scale histogram of the latencies (the raw sample, compactly)."""
    c, q = HEY_RATES[rate]
    url = f"http://{cfg.dst.ip}:{PORT}/"
    c0, t0 = cpu_s(cfg.pids), time.monotonic()
    r = cfg.src.run(["hey", "-z", f"{duration}s", "-c", str(c), "-q", str(q), "-o", "csv", url],
                    timeout=duration + 60)
    c1, t1 = cpu_s(cfg.pids), time.monotonic()
    lat, errors = [], 0
    for line in r.stdout.splitlines()[1:]:
        f = line.split(",")
        if len(f) < 7:
            continue
        if f[6] != "200":
            errors += 1
            continue
        lat.append(float(f[0]) * 1e6)
    lat.sort()
    n = len(lat)
    achieved = n / duration
    hist = {}
    for v in lat:
        b = int(math.floor(math.log10(max(v, 1)) * 20))  # 20 bins per decade
        hist[b] = hist.get(b, 0) + 1
    return {
        "rate": achieved, "n": n, "errors": errors,
        "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "p999": pct(lat, 99.9),
        "vcpu": ((c1 - c0) / (t1 - t0) / (achieved / 1000)) if cfg.pids and achieved else None,
        "hist_log10x20": hist,
    }


def wrk(cfg, conns, duration):
    """wrk at conns connections; for 64 also the proxies' peak RSS while it runs."""
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.25):
            peak[0] = max(peak[0], rss_kb_all(cfg.pids))

    th = threading.Thread(target=sample, daemon=True)
    if cfg.pids:
        th.start()
    try:
        rps, p50, p99, vcpu = sidecar.wrk(cfg.src, f"http://{cfg.dst.ip}:{PORT}/", conns, duration,
                                          cfg.pids)
    finally:
        stop.set()
    out = {"rps": rps, "p50": p50, "p99": p99, "vcpu": vcpu}
    if cfg.pids:
        th.join()
        out["rss_load_kb"] = peak[0]
    return out


def iperf(cfg, streams, duration):
    r = cfg.src.run(["iperf3", "-c", cfg.dst.ip, "-p", str(IPERF_PORT), "-t", str(duration),
                     "-P", str(streams), "-J"], timeout=duration + 30)
    return {"gbps": json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9}


def conns(cfg, duration, crate):
    rate, ms = sidecar.connrate(cfg.src, crate, cfg.dst.ip, PORT, duration, pids=cfg.pids)
    return {"rate": rate, "cpu_ms": ms}


def redis(cfg, requests):
    """redis-benchmark -t set,get, 50 clients, 1 KiB values: req/s, p50/p99 (us)."""
    c0, t0 = cpu_s(cfg.pids), time.monotonic()
    r = cfg.src.run(["redis-benchmark", "-h", cfg.dst.ip, "-p", str(REDIS_PORT), "-t", "set,get",
                     "-n", str(requests), "-c", "50", "-d", str(BODY), "--csv"], timeout=300)
    c1, t1 = cpu_s(cfg.pids), time.monotonic()
    out = {}
    for line in r.stdout.splitlines()[1:]:
        f = [x.strip('"') for x in line.split(",")]
        if len(f) >= 7 and f[0] in ("SET", "GET"):
            k = f[0].lower()
            out[f"{k}_rps"] = float(f[1])
            out[f"{k}_p50"] = float(f[4]) * 1e3
            out[f"{k}_p99"] = float(f[6]) * 1e3
    if "get_rps" not in out or "set_rps" not in out:
        raise RuntimeError("redis-benchmark: " + r.stdout[-500:] + r.stderr[-500:])
    ops = 2 * requests
    out["cpu_ms_per_1k_ops"] = ((c1 - c0) * 1e3 / ops * 1000) if cfg.pids else None
    _ = t1 - t0
    return out


# --------------------------------------------------------------------------
# memory per open connection

_IDLE_SERVER = r"""
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
async def handle(r, w):
    while await r.read(65536):
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]), backlog=4096)
    await srv.serve_forever()
asyncio.run(main())
"""

_IDLE_CLIENT = r"""
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = [socket.create_connection((host, port), timeout=30) for _ in range(n)]
for s in socks:
    s.sendall(b"x")       # one byte through the proxies, then idle
print("ready", flush=True)
sys.stdin.readline()
"""


def idle_rss(topo, cfg, n):
    """KiB of proxy RSS (all processes of the path) per open idle client
    connection: n connections held, RSS before and after.  Measured after
    the load runs, so buffer pages already faulted in do not count."""
    srv = cfg.dst.popen([PYTHON, "-c", _IDLE_SERVER, str(IDLE_PORT)])
    try:
        try:
            wait_port(cfg.dst, IDLE_PORT, timeout=30)
        except Exception as e:
            raise RuntimeError(f"idle server: {e}; its log: {topo.log(srv)[-500:]!r}, "
                               f"exit status {srv.poll()}") from None
        time.sleep(0.3)
        before = cfg.rss_kb()
        cl = cfg.src.popen([PYTHON, "-c", _IDLE_CLIENT, cfg.dst.ip, str(IDLE_PORT), str(n)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if cl.stdout.readline().strip() != "ready":
            raise RuntimeError("idle client failed: " + topo.log(cl)[-300:])
        time.sleep(0.5)
        after = cfg.rss_kb()
        cl.stdin.write("\n")
        cl.stdin.flush()
        cl.wait(timeout=30)
        return (after - before) / n
    finally:
        topo.stop(srv)


# --------------------------------------------------------------------------
# scale: proxy memory / idle CPU / enroll time against pod count


def measure_idle(pids, window, samples=3):
    """RSS total (KiB) and idle CPU (vCPU) of pids: `samples` readings each."""
    rss, cpu = [], []
    for _ in range(samples):
        c0, t0 = cpu_s(pids), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_s(pids), time.monotonic()
        cpu.append((c1 - c0) / (t1 - t0))
        rss.append(rss_kb_all(pids))
    return rss, cpu


def scale(topo, n1, bins, ca_dir, counts, window):
    top = max(counts)
    log(f"scale: creating {top} pods")
    pods = []
    for i in range(top):
        pods.append(topo.add_pod(n1, f"s{i}"))
        if (i + 1) % 25 == 0:
            log(f"scale: {i + 1} pods")
    res = {}
    index = 100  # NodeProxy port index (traffic instances use 0..9)

    def checkpoint(kind, k, pids):
        time.sleep(1.0)
        rss, cpu = measure_idle(pids, window)
        res[kind]["points"].append({"pods": k, "processes": len(pids), "rss_kb": rss,
                                    "vcpu_idle": cpu})
        m = stats(rss)[0] / 1024
        log(f"scale {kind}: {k} pods, {len(pids)} processes, RSS {m:.1f} MiB, "
            f"idle CPU {stats(cpu)[0] * 1000:.1f} mvCPU")

    # ambient: one proxy, pods enrolled one after the other
    res["ambient"] = {"points": [], "enroll_ms": []}
    p = NodeProxy(topo, n1, bins, "scale-ambient", index, ca_dir)
    index += 1
    p.wait_ready()
    for i, pod in enumerate(pods):
        t0 = time.monotonic()
        p.enrol(pod)
        res["ambient"]["enroll_ms"].append((time.monotonic() - t0) * 1e3)
        if i + 1 in counts:
            checkpoint("ambient", i + 1, [p.pid])
    topo.stop(p.proc)

    # ambit sidecars: one instance per pod (start, ready, enrol its pod)
    res["ambit-sidecar"] = {"points": [], "enroll_ms": []}
    insts = []
    for i, pod in enumerate(pods):
        t0 = time.monotonic()
        q = NodeProxy(topo, n1, bins, f"scale-sc-{pod.name}", index, ca_dir)
        index += 1
        q.wait_ready()
        q.enrol(pod)
        res["ambit-sidecar"]["enroll_ms"].append((time.monotonic() - t0) * 1e3)
        insts.append(q)
        if i + 1 in counts:
            checkpoint("ambit-sidecar", i + 1, [x.pid for x in insts])
    for q in insts:
        topo.stop(q.proc, grace=5)

    # HAProxy mTLS sidecars: workload certificate, config, start, listening
    res["haproxy"] = {"points": [], "enroll_ms": []}
    work = Path(topo.tmpdir) / "scale-haproxy"
    root, _ = sidecar.make_certs(bins, work / "pki", [])
    procs = []
    for i, pod in enumerate(pods):
        t0 = time.monotonic()
        w = work / f"sa-{pod.name}"
        subprocess.run([str(bins / "ambit-certs"), "issue-workload", "--dir",
                        str(work / "pki" / "n1"), "--namespace", "default", "--service-account",
                        pod.name, "--out", str(w)], check=True, capture_output=True)
        pem = work / f"{pod.name}.pem"
        pem.write_bytes((w / "chain.pem").read_bytes() + (w / "key.pem").read_bytes())
        cfgf = work / f"{pod.name}.cfg"
        cfgf.write_text(sidecar.render_config("mtls", str(work / f"{pod.name}.stats"), 2, str(pem),
                                              root))
        proc = pod.popen([sidecar.HAPROXY, "-db", "-f", str(cfgf)])
        deadline = time.monotonic() + 20
        while not re.search(rf":{sidecar.IN_PORT}\b", pod.run(["ss", "-Htln"]).stdout):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"haproxy in {pod.name}: " + topo.log(proc)[-1000:])
            time.sleep(0.01)
        res["haproxy"]["enroll_ms"].append((time.monotonic() - t0) * 1e3)
        procs.append(proc)
        if i + 1 in counts:
            checkpoint("haproxy", i + 1, [x.pid for x in procs])
    for proc in procs:
        topo.stop(proc)
    return res


# --------------------------------------------------------------------------
# main


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1])

    def ver(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    return {"nproc": os.cpu_count(), "model": model, "kernel": platform.release(),
            "mem_total_kb": mem, "loadavg_start": os.getloadavg(),
            "tools": {"haproxy": ver([sidecar.HAPROXY, "-v"]), "wrk": ver(["wrk", "-v"]),
                      "iperf3": ver(["iperf3", "-v"]),
                      "redis-benchmark": ver(["redis-benchmark", "--version"]),
                      "hey": "Debian hey " + ver(["dpkg-query", "-W", "-f", "${Version}", "hey"])}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", metavar="JSON",
                    help="only re-render results.md and the plots from a results.json")
    args = ap.parse_args()
    if args.report:
        result = json.loads(Path(args.report).read_text())
        out = Path(args.report).parent
        text = report(result)
        (out / "results.md").write_text(text)
        print(text)
        plots(result, out)
        return
    quick = args.quick
    duration = int(os.environ.get("BENCH_SECONDS", "1" if quick else "4"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    counts = [int(x) for x in os.environ.get("BENCH_PODS", "1,10" if quick else
                                             "1,10,50,100").split(",")]
    n_idle = 200 if quick else 1000
    redis_n = 4000 if quick else 20000
    window = 1.0 if quick else 2.0

    build = Path(args.build).resolve()
    bins = build / "bin"
    outdir = build / "bench"
    outdir.mkdir(parents=True, exist_ok=True)
    httpd = outdir / "bench-httpd"
    if not httpd.exists():
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(httpd), str(HERE / "httpd.c")], check=True)
    crate = sidecar.build_connrate(build)
    paced_bin = outdir / "bench-paced"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(paced_bin), str(HERE / "paced.c")], check=True)
    for tool in ("hey", "wrk", "iperf3", "redis-benchmark", "/usr/bin/redis-check-rdb",
                 sidecar.HAPROXY):
        if not subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).stdout:
            raise SystemExit(f"{tool} missing: tools/deps.sh bench installs it")

    t_start = time.time()
    info = machine()
    info.update({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": quick,
                 "duration_s": duration, "rounds": rounds, "pod_counts": counts,
                 "idle_connections": n_idle, "redis_requests": redis_n, "body_bytes": BODY,
                 "np_args": os.environ.get("BENCH_NP_ARGS", "")})
    log(f"bench: {info['nproc']} x {info['model']}, kernel {info['kernel']}, {duration}s runs, "
        f"{rounds} rounds, pods {counts}")
    topo = Topology(bins=bins)
    raw = {k: {} for k, _ in CONFIGS}  # config -> workload -> [round results]
    loads = []
    try:
        n1 = topo.add_node("n1")
        ca_dir = make_pki(bins, topo)
        cfgs = {}
        pairs = {}
        for key, _ in CONFIGS:
            src = topo.add_pod(n1, f"{key}-a")
            dst = topo.add_pod(n1, f"{key}-b")
            for p in (src, dst):
                sidecar.tune_pod(p)
            start_servers(topo, dst, httpd)
            pairs[key] = (src, dst)
        log("pods and servers up")
        # ambient: one node proxy for the node, the pair plus 8 more pods
        amb = NodeProxy(topo, n1, bins, "ambient", 0, ca_dir)
        ambp = NodeProxy(topo, n1, bins, "ambient-plain", 1)
        ambf = NodeProxy(topo, n1, bins, "ambient-fast", 4, ca_dir,
                         mesh_extra="local_fast_path = true\n")
        extra = [topo.add_pod(n1, f"e{i}") for i in range(8)]
        for p in (amb, ambp, ambf):
            p.wait_ready()
        for key, proxy, pods in (("ambient", amb, list(pairs["ambient"]) + extra),
                                 ("ambient-plain", ambp, pairs["ambient-plain"]),
                                 ("ambient-fast", ambf, pairs["ambient-fast"])):
            for pod in pods:
                n1.run([str(bins / "ambit-redirect"), "install", "--netns", pod.path])
                proxy.enrol(pod)
            cfgs[key] = Config(key, *pairs[key], [proxy.proc])
        # ambit per-pod sidecars: an instance per pod, each enrolling its own
        # pod.  node-proxy only tunnels to destinations in its registry
        # (there is no remote-workload discovery yet), so the client pod's
        # instance also gets the server pod as a registry entry whose netns
        # is an empty stand-in: that instance's listeners for it sit unused
        # in the stand-in, the tunnel goes to the real pod's 15008, served
        # by the server pod's own instance.
        sa, sb = pairs["ambit-sidecar"]
        inst_a = NodeProxy(topo, n1, bins, "sidecar-a", 2, ca_dir)
        inst_b = NodeProxy(topo, n1, bins, "sidecar-b", 3, ca_dir)
        for i in (inst_a, inst_b):
            i.wait_ready()
        for pod, inst in ((sa, inst_a), (sb, inst_b)):
            n1.run([str(bins / "ambit-redirect"), "install", "--netns", pod.path])
            inst.enrol(pod)
        standin = topo._new_netns("n1-standin-b")
        inst_a.enrol(sb, netns_path=f"/run/netns/{standin}")
        cfgs["ambit-sidecar"] = Config("ambit-sidecar", sa, sb, [inst_a.proc, inst_b.proc])
        for key, mode in (("haproxy", "mtls"), ("haproxy-plain", "plain")):
            h = sidecar.setup_sidecars(topo, n1, list(pairs[key]), bins, mode)
            cfgs[key] = Config(key, *pairs[key], h.procs.values())
        cfgs["direct"] = Config("direct", *pairs["direct"])
        for key, _ in CONFIGS:
            wait_port(pairs[key][1], PORT)
            wait_port(pairs[key][1], REDIS_PORT)
            r = pairs[key][0].run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w",
                                   "%{http_code} %{size_download}",
                                   f"http://{pairs[key][1].ip}:{PORT}/"], check=False)
            if r.stdout != f"200 {BODY}":
                raise RuntimeError(f"{key}: curl through the path: {r.stdout} {r.stderr}")
        log("all configurations answer; proxies idle")
        time.sleep(1.0)
        idle = {k: cfgs[k].rss_kb() for k, _ in CONFIGS if cfgs[k].pids}
        s0 = {"ambient": amb.stats(), "ambient-fast": ambf.stats(), "sidecar-a": inst_a.stats(),
              "sidecar-b": inst_b.stats()}

        workloads = [
            ("paced1k", "paced 1000 req/s", lambda c: paced(c, 1000, duration, paced_bin)),
            ("paced10k", "paced 10000 req/s", lambda c: paced(c, 10000, duration, paced_bin)),
            ("hey1k", "hey 1000 req/s", lambda c: hey(c, 1000, duration)),
            ("hey10k", "hey 10000 req/s", lambda c: hey(c, 10000, duration)),
            ("wrk4", "wrk 4 conns", lambda c: wrk(c, 4, duration)),
            ("wrk64", "wrk 64 conns", lambda c: wrk(c, 64, duration)),
            ("iperf1", "iperf3 1 stream", lambda c: iperf(c, 1, duration)),
            ("iperf8", "iperf3 8 streams", lambda c: iperf(c, 8, duration)),
            ("conns", "new connections", lambda c: conns(c, duration, crate)),
            ("redis", "redis-benchmark", lambda c: redis(c, redis_n)),
        ]
        order = [k for k, _ in CONFIGS]
        for rnd in range(rounds):
            rot = order[rnd % len(order):] + order[:rnd % len(order)]
            for wkey, wname, fn in workloads:
                for key in rot:
                    try:
                        m = fn(cfgs[key])
                    except Exception as e:  # one failed run is a gap, not the end
                        log(f"round {rnd + 1}/{rounds} {wname} {key}: FAILED {e}")
                        m = {"error": str(e)[:300]}
                    m["load1"] = os.getloadavg()[0]
                    raw[key].setdefault(wkey, []).append(m)
                    log(f"round {rnd + 1}/{rounds} {wname:16s} {key:14s} {brief(wkey, m)}")
            loads.append(os.getloadavg())
        s1 = {"ambient": amb.stats(), "ambient-fast": ambf.stats(), "sidecar-a": inst_a.stats(),
              "sidecar-b": inst_b.stats()}
        mesh = mesh_check(s0, s1)
        log(f"tunnel counters: {mesh}")
        per_conn = {}
        for key, _ in CONFIGS:
            if not cfgs[key].pids:
                continue
            try:
                per_conn[key] = idle_rss(topo, cfgs[key], n_idle)
            except Exception as e:
                log(f"{key}: idle-connection RSS failed: {e}")
                per_conn[key] = math.nan
            log(f"RSS per open connection {key}: {per_conn[key]:.2f} KiB ({n_idle} idle)")
        for p in (amb, ambp, ambf, inst_a, inst_b):
            topo.stop(p.proc)
        for key in ("haproxy", "haproxy-plain"):
            for proc in cfgs[key].procs:
                topo.stop(proc)
        sc = scale(topo, n1, bins, ca_dir, counts, window)
    finally:
        topo.teardown()
    info["loadavg_end"] = os.getloadavg()
    info["loadavg_rounds"] = loads
    info["wall_s"] = time.time() - t_start
    result = {"machine": info, "configs": NAMES, "raw": raw, "rss_idle_kb": idle,
              "rss_per_conn_kb": per_conn, "tunnels": mesh, "scale": sc}
    text = report(result)
    (outdir / "results.json").write_text(json.dumps(result, indent=1, default=str))
    (outdir / "results.md").write_text(text)
    print(text)
    try:
        plots(result, outdir)
    except Exception as e:
        print(f"plots failed: {e}", file=sys.stderr)
        raise
    log(f"written: {outdir}/results.md, results.json, latency.png, throughput.png, scale.png "
        f"({info['wall_s'] / 60:.1f} min)")


def brief(wkey, m):
    if "error" in m:
        return "error"
    if wkey.startswith("paced"):
        return (f"{m['rate']:.0f} req/s p50 {m['p50']:.0f} p99 {m['p99']:.0f} p99.9 "
                f"{m['p999']:.0f} us")
    if wkey.startswith("hey"):
        return (f"{m['rate']:.0f} req/s p50 {m['p50']:.0f} p99 {m['p99']:.0f} p99.9 "
                f"{m['p999']:.0f} us, {m['errors']} errors")
    if wkey.startswith("wrk"):
        return f"{m['rps']:.0f} req/s p50 {m['p50']:.0f} p99 {m['p99']:.0f} us"
    if wkey.startswith("iperf"):
        return f"{m['gbps']:.2f} Gbit/s"
    if wkey == "conns":
        return f"{m['rate']:.0f} conns/s"
    if wkey == "redis":
        return f"SET {m['set_rps']:.0f}/s GET {m['get_rps']:.0f}/s"
    return ""


def mesh_check(s0, s1):
    """Tunnel counters over the rounds: the HBONE paths really tunnelled."""
    out = {}
    for k in s0:
        a, b = s0[k].get("mesh", {}), s1[k].get("mesh", {})
        out[k] = {f: b.get(f, 0) - a.get(f, 0) for f in ("outbound_hbone", "outbound_plain",
                                                         "inbound_streams", "local_fast_path")}
        out[k]["handshakes"] = {r: b.get("handshakes", {}).get(r, 0) -
                                a.get("handshakes", {}).get(r, 0) for r in ("client", "server")}
    return out


# --------------------------------------------------------------------------
# report

# (key, label, unit, getter(raw config) -> list per round, higher is better)
def _get(w, f, scale=1.0):
    def g(r):
        return [m[f] * scale if m.get(f) is not None else None for m in r.get(w, [])
                if "error" not in m]
    return g


METRICS = [
    ("paced1k_p50", "1,000 req/s (open loop): p50", "us", _get("paced1k", "p50"), False),
    ("paced1k_p90", "1,000 req/s (open loop): p90", "us", _get("paced1k", "p90"), False),
    ("paced1k_p99", "1,000 req/s (open loop): p99", "us", _get("paced1k", "p99"), False),
    ("paced1k_p999", "1,000 req/s (open loop): p99.9", "us", _get("paced1k", "p999"), False),
    ("paced10k_rate", "10,000 req/s (open loop): achieved", "req/s", _get("paced10k", "rate"),
     True),
    ("paced10k_p50", "10,000 req/s (open loop): p50", "us", _get("paced10k", "p50"), False),
    ("paced10k_p90", "10,000 req/s (open loop): p90", "us", _get("paced10k", "p90"), False),
    ("paced10k_p99", "10,000 req/s (open loop): p99", "us", _get("paced10k", "p99"), False),
    ("paced10k_p999", "10,000 req/s (open loop): p99.9", "us", _get("paced10k", "p999"), False),
    ("hey1k_p50", "1,000 req/s (hey -q): p50", "us", _get("hey1k", "p50"), False),
    ("hey1k_p90", "1,000 req/s (hey -q): p90", "us", _get("hey1k", "p90"), False),
    ("hey1k_p99", "1,000 req/s (hey -q): p99", "us", _get("hey1k", "p99"), False),
    ("hey1k_p999", "1,000 req/s (hey -q): p99.9", "us", _get("hey1k", "p999"), False),
    ("hey10k_rate", "10,000 req/s (hey -q): achieved", "req/s", _get("hey10k", "rate"), True),
    ("hey10k_p50", "10,000 req/s (hey -q): p50", "us", _get("hey10k", "p50"), False),
    ("hey10k_p90", "10,000 req/s (hey -q): p90", "us", _get("hey10k", "p90"), False),
    ("hey10k_p99", "10,000 req/s (hey -q): p99", "us", _get("hey10k", "p99"), False),
    ("hey10k_p999", "10,000 req/s (hey -q): p99.9", "us", _get("hey10k", "p999"), False),
    ("wrk4", "max req/s, 4 conns (wrk)", "req/s", _get("wrk4", "rps"), True),
    ("wrk64", "max req/s, 64 conns (wrk)", "req/s", _get("wrk64", "rps"), True),
    ("wrk64_p99", "64 conns: p99", "us", _get("wrk64", "p99"), False),
    ("iperf1", "throughput, 1 stream (iperf3)", "Gbit/s", _get("iperf1", "gbps"), True),
    ("iperf8", "throughput, 8 streams", "Gbit/s", _get("iperf8", "gbps"), True),
    ("conns", "new connections/s", "1/s", _get("conns", "rate"), True),
    ("redis_set", "redis SET/s (50 clients)", "1/s", _get("redis", "set_rps"), True),
    ("redis_get", "redis GET/s", "1/s", _get("redis", "get_rps"), True),
    ("redis_get_p99", "redis GET p99", "us", _get("redis", "get_p99"), False),
    ("vcpu1k", "proxy vCPU per 1,000 req/s at 1,000 req/s (open loop)", "vCPU",
     _get("paced1k", "vcpu"), False),
    ("vcpu10k", "proxy vCPU per 1,000 req/s at 10,000 req/s (open loop)", "vCPU",
     _get("paced10k", "vcpu"), False),
    ("vcpu1k_hey", "proxy vCPU per 1,000 req/s at 1,000 req/s (hey)", "vCPU",
     _get("hey1k", "vcpu"), False),
    ("vcpu64", "proxy vCPU per 1,000 req/s, wrk 64", "vCPU", _get("wrk64", "vcpu"), False),
    ("conn_cpu", "proxy CPU per new connection", "ms", _get("conns", "cpu_ms"), False),
    ("redis_cpu", "proxy CPU per 1,000 redis ops", "ms", _get("redis", "cpu_ms_per_1k_ops"),
     False),
    ("rss_load", "proxy RSS under load (peak, wrk 64)", "MiB",
     _get("wrk64", "rss_load_kb", 1 / 1024), False),
]

def fmt(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit in ("vCPU",):
        return f"{v:.3f}"
    if unit in ("Gbit/s", "ms"):
        return f"{v:.2f}" if v < 100 else f"{v:.0f}"
    if unit == "MiB":
        return f"{v:.1f}"
    return f"{v:.0f}"


def ratio(a, b):
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def summarize(result):
    raw = result["raw"]
    out = {}
    for key, _, unit, get, _hb in METRICS:
        out[key] = {c: stats(get(raw.get(c, {}))) for c, _ in CONFIGS}
    return out


def targets(result, S):
    """[(metric row or None, name, goal, value, met)] for ambit ambient."""
    sc = result["scale"]
    top = max(result["machine"]["pod_counts"])

    def med(k, c):
        return S[k][c][0]

    def rss_at(kind, n):
        pt = next((p for p in sc[kind]["points"] if p["pods"] == n), None)
        return stats(pt["rss_kb"])[0] / 1024 if pt else math.nan

    def div(a, b):
        return a / b if b and not math.isnan(b) else math.nan

    amb_mem, hap_mem = rss_at("ambient", top), rss_at("haproxy", top)
    t = [
        ("iperf1", "throughput (iperf3, 1 stream) vs HAProxy mTLS", ">= 2x",
         div(med("iperf1", "ambient"), med("iperf1", "haproxy")), lambda v: v >= 2),
        ("iperf1", "single-stream throughput vs direct", ">= 0.5x",
         div(med("iperf1", "ambient"), med("iperf1", "direct")), lambda v: v >= 0.5),
        ("wrk64", "req/s at 64 connections vs direct", ">= 0.6x",
         div(med("wrk64", "ambient"), med("wrk64", "direct")), lambda v: v >= 0.6),
        ("vcpu1k", "CPU per request vs HAProxy mTLS at 1,000 req/s (HAProxy ÷ ambient)", ">= 2x",
         div(med("vcpu1k", "haproxy"), med("vcpu1k", "ambient")), lambda v: v >= 2),
        ("vcpu1k", "vCPU per 1,000 req/s at 1,000 req/s", "<= 0.03", med("vcpu1k", "ambient"),
         lambda v: v <= 0.03),
        ("vcpu64", "CPU per request vs HAProxy mTLS at wrk 64 (HAProxy ÷ ambient)", ">= 2x",
         div(med("vcpu64", "haproxy"), med("vcpu64", "ambient")), lambda v: v >= 2),
        ("vcpu64", "vCPU per 1,000 req/s at wrk 64 (saturated)", "<= 0.03",
         med("vcpu64", "ambient"), lambda v: v <= 0.03),
        (None, f"proxy memory at {top} pods vs the {top} HAProxy mTLS sidecars",
         "<= 1/20 (0.05x)", div(amb_mem, hap_mem), lambda v: v <= 0.05),
    ]
    out = []
    for row, name, goal, v, ok in t:
        good = (not math.isnan(v)) and ok(v)
        shown = f"{v:.3f}" if goal.startswith("<= 0.") else f"{v:.2f}x"
        out.append((row, name, goal, shown, good))
    return out


def report(result):
    info = result["machine"]
    S = summarize(result)
    T = targets(result, S)
    cols = [k for k, _ in CONFIGS]
    L = []
    la = info["loadavg_start"]
    le = info["loadavg_end"]
    L.append(f"## make bench{'-quick' if info['quick'] else ''}: {info['date']}, "
             f"{info['nproc']} x {info['model']}, kernel {info['kernel']}; load average "
             f"(1/5/15 min) {la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f} at start, "
             f"{le[0]:.1f}/{le[1]:.1f}/{le[2]:.1f} at end; {info['duration_s']} s per run, "
             f"{info['rounds']} rounds; {info['wall_s'] / 60:.1f} min\n")
    L.append("Each cell: median of the rounds [min–max]. Latencies in µs. Ratios in the "
             "right-hand columns are ambit ambient's median over direct's and over the HAProxy "
             "mTLS sidecars'.\n")
    head = "| metric | unit | " + " | ".join(NAMES[c] for c in cols) + \
        " | ambient ÷ direct | ambient ÷ HAProxy mTLS | target |"
    L.append(head)
    L.append("|---" * (head.count("|") - 1) + "|")

    def cell(s, unit):
        if math.isnan(s[0]):
            return "n/a"
        return f"{fmt(s[0], unit)} [{fmt(s[1], unit)}–{fmt(s[2], unit)}]"

    for key, label, unit, _g, _hb in METRICS:
        row = S[key]
        L.append(f"| {label} | {unit} | " + " | ".join(cell(row[c], unit) for c in cols) +
                 f" | {ratio(row['ambient'][0], row['direct'][0])} | "
                 f"{ratio(row['ambient'][0], row['haproxy'][0])} | "
                 f"{'; '.join(f'{n}: {g} → {v} ' + ('met' if ok else 'MISSED') for r, n, g, v, ok in T if r == key)} |")
    # memory rows
    idle = result["rss_idle_kb"]
    pc = result["rss_per_conn_kb"]
    L.append("| proxy RSS idle (2 pods; ambient: 10 enrolled) | MiB | " + " | ".join(
        "—" if c not in idle else f"{idle[c] / 1024:.1f}" for c in cols) +
        f" | — | {ratio(idle.get('ambient'), idle.get('haproxy'))} | |")
    L.append(f"| proxy RSS per open idle connection ({info['idle_connections']} conns) | KiB | " +
             " | ".join("—" if c not in pc else fmt(pc[c], "ms") for c in cols) +
             f" | — | {ratio(pc.get('ambient'), pc.get('haproxy'))} | |")
    L.append("")

    # ratios of every configuration
    L.append("Ratio of each configuration to direct / to the HAProxy mTLS sidecars (medians):\n")
    head = "| metric | " + " | ".join(NAMES[c] for c in cols[1:]) + " |"
    L.append(head)
    L.append("|---" * (head.count("|") - 1) + "|")
    for key, label, unit, _g, _hb in METRICS:
        row = S[key]
        if math.isnan(row["direct"][0]) and math.isnan(row["haproxy"][0]):
            continue
        L.append(f"| {label} | " + " | ".join(
            f"{ratio(row[c][0], row['direct'][0])} / {ratio(row[c][0], row['haproxy'][0])}"
            for c in cols[1:]) + " |")
    L.append("")

    # scale
    sc = result["scale"]
    counts = info["pod_counts"]
    L.append("Scale: total RSS and idle CPU of all proxy processes against the number of pods "
             "(median of 3 readings [min–max]); enroll = time until the pod's proxy listens "
             "(ambient: `ctl add`; ambit sidecar: start + ready + `ctl add`; HAProxy: workload "
             "certificate + config + start until 15006 listens), median [min–max] over all "
             "pods.\n")
    head = "| pods | " + " | ".join(f"{n} RSS MiB | {n} idle mvCPU" for _, n in SCALE_KINDS) + \
        " | target: ambient RSS ÷ HAProxy RSS |"
    L.append(head)
    L.append("|---" * (head.count("|") - 1) + "|")
    for n in counts:
        cells = []
        for k, _ in SCALE_KINDS:
            pt = next((p for p in sc[k]["points"] if p["pods"] == n), None)
            if not pt:
                cells += ["—", "—"]
                continue
            r = stats([x / 1024 for x in pt["rss_kb"]])
            c = stats([x * 1000 for x in pt["vcpu_idle"]])
            cells += [f"{r[0]:.1f} [{r[1]:.1f}–{r[2]:.1f}]", f"{c[0]:.1f} [{c[1]:.1f}–{c[2]:.1f}]"]
        tg = [f"{g} → {v} " + ("met" if ok else "MISSED") for r, nm, g, v, ok in T
              if r is None and n == max(counts)]
        L.append(f"| {n} | " + " | ".join(cells) + f" | {'; '.join(tg)} |")
    L.append("| enroll, ms | " + " | ".join(
        f"{stats(sc[k]['enroll_ms'])[0]:.1f} [{stats(sc[k]['enroll_ms'])[1]:.1f}–"
        f"{stats(sc[k]['enroll_ms'])[2]:.1f}] | " for k, _ in SCALE_KINDS) + " |")
    L.append("")
    L.append(f"Idle with {max(counts)} pods: ambit ambient holds "
             f"{ratio(*[stats(next(p for p in sc[k]['points'] if p['pods'] == max(counts))['rss_kb'])[0] for k in ('ambient', 'haproxy')])} "
             f"of the HAProxy sidecars' memory and "
             f"{ratio(*[stats(next(p for p in sc[k]['points'] if p['pods'] == max(counts))['rss_kb'])[0] for k in ('ambient', 'ambit-sidecar')])} "
             f"of the ambit per-pod sidecars'.")
    L.append("")

    L.append("| target (ambit ambient, issue 9) | goal | this run | |")
    L.append("|---|---|---|---|")
    for _r, name, goal, shown, good in T:
        L.append(f"| {name} | {goal} | {shown} | {'met' if good else 'MISSED'} |")
    L.append("")
    tn = result["tunnels"]
    L.append("Tunnel counters over the rounds (HBONE really used): " + "; ".join(
        f"{k}: outbound_hbone {v['outbound_hbone']}, outbound_plain {v['outbound_plain']}, "
        f"inbound_streams {v['inbound_streams']}, handshakes client/server "
        f"{v['handshakes']['client']}/{v['handshakes']['server']}" for k, v in tn.items()) + ".")
    result["verdicts"] = [(n, g, v, ok) for _r, n, g, v, ok in T]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------
# plots


def plots(result, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S = summarize(result)
    cols = [k for k, _ in CONFIGS]
    info = result["machine"]
    sub = (f"{info['date']}, {info['nproc']} vCPU, load {info['loadavg_start'][0]:.1f}; "
           f"median of {info['rounds']} rounds, bars = min–max")

    # latency percentiles per configuration
    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    pcts = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"))
    panels = (("paced1k", "1,000 req/s, open loop (bench-paced, 10 conns)"),
              ("paced10k", "10,000 req/s, open loop (bench-paced, 50 conns)"),
              ("hey1k", "1,000 req/s (hey -c 10 -q 100; 0.1 ms resolution)"),
              ("hey10k", "10,000 req/s offered (hey -c 50 -q 200)"))
    for ax, (rate, title) in zip(axes.flat, panels):
        for c in cols:
            st = [S[f"{rate}_{p}"][c] for p, _ in pcts]
            med = [v[0] for v in st]
            ax.errorbar(range(len(pcts)), med, yerr=[[m - v[1] for m, v in zip(med, st)],
                                                     [v[2] - m for m, v in zip(med, st)]],
                        marker="o", capsize=3, label=NAMES[c])
        ax.set_xticks(range(len(pcts)), [n for _, n in pcts])
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (µs, log scale)")
        ax.set_title(f"HTTP, 1 KiB answers, {title}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Request latency per configuration — " + sub, fontsize=9)
    fig.tight_layout()
    fig.savefig(outdir / "latency.png", dpi=100)
    plt.close(fig)

    # throughput and cost bars
    panels = (("wrk64", "max req/s, 64 connections (wrk)", "requests/s"),
              ("iperf1", "throughput, 1 stream (iperf3)", "Gbit/s"),
              ("conns", "new connections/s", "connections/s"),
              ("vcpu1k", "proxy CPU at 1,000 req/s", "vCPU per 1,000 req/s"))
    fig, axes = plt.subplots(1, 4, figsize=(17, 5))
    for ax, (k, title, unit) in zip(axes, panels):
        med = [S[k][c][0] for c in cols]
        err = [[m - S[k][c][1] for m, c in zip(med, cols)],
               [S[k][c][2] - m for m, c in zip(med, cols)]]
        med = [0 if math.isnan(m) else m for m in med]
        err = [[0 if math.isnan(x) else x for x in e] for e in err]
        ax.bar(range(len(cols)), med, yerr=err, capsize=3,
               color=[f"C{i}" for i in range(len(cols))])
        ax.set_xticks(range(len(cols)), [NAMES[c].replace(" (", "\n(").replace(" side", "\nside")
                                         for c in cols], rotation=60, fontsize=7, ha="right")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Throughput and proxy cost — " + sub, fontsize=9)
    fig.tight_layout()
    fig.savefig(outdir / "throughput.png", dpi=110)
    plt.close(fig)

    # scale: memory and CPU against pod count
    sc = result["scale"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for kind, name in SCALE_KINDS:
        pts = sc[kind]["points"]
        x = [p["pods"] for p in pts]
        for ax, field, mul in ((axes[0], "rss_kb", 1 / 1024), (axes[1], "vcpu_idle", 1000)):
            s = [stats([v * mul for v in p[field]]) for p in pts]
            ax.errorbar(x, [v[0] for v in s], yerr=[[v[0] - v[1] for v in s],
                                                    [v[2] - v[0] for v in s]],
                        marker="o", capsize=3, label=name)
    axes[0].set_ylabel("total proxy RSS (MiB, log scale)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("total proxy CPU while idle (milli-vCPU)")
    for ax, t in zip(axes, ("memory", "idle CPU")):
        ax.set_xlabel("pods on the node")
        ax.set_xscale("log")
        ax.set_title(f"proxy {t} against pod count")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Scale — " + sub, fontsize=9)
    fig.tight_layout()
    fig.savefig(outdir / "scale.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
