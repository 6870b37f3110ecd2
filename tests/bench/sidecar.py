"""Per-pod HAProxy sidecars: the baseline ambit's node proxy is measured
against (docs/benchmarks.md, "Baseline: per-pod HAProxy sidecars").

Every pod of a sidecar pair gets, inside its own netns:
  - the capture rules ambit uses, installed by `ambit-redirect install` with
    its defaults (outbound TCP -> 15001, inbound TCP -> 15006, packets
    marked 0x539 never captured);
  - one HAProxy 2.6 (Debian's) from tests/bench/haproxy/sidecar.cfg.in,
    running as uid SIDECAR_UID, with both listeners forwarding to the
    original destination;
  - one nft rule of ours (table inet ambit_bench_sidecar) that marks that
    uid's packets 0x539, because HAProxy 2.6 cannot set SO_MARK on its
    server-side connections.  This is how Istio exempts its sidecar (uid
    1337), expressed with the redirector's own exemption mark.
In "mtls" mode the hop between the two sidecars is TLS 1.3 with client and
server certificates issued by `ambit-certs` (one workload SVID per pod),
both sides requiring a chain to the mesh root, a full handshake per
connection (no session reuse).  In "plain" mode it is plain TCP.

The measurement functions use the same tools and arguments as
tests/bench/bench_node_proxy.py (wrk, iperf3, bench-httpd) so rows of both
can share one table.

Module use (bench_node_proxy.py or bench_sidecar.py):
    import sidecar
    h = sidecar.setup_sidecars(topo, node, [c, d], bins, "mtls")
    m = sidecar.measure(c, d.ip, pids=h.pids, connrate=sidecar.build_connrate(build))
    h.rss_kb()   # {pod name: KiB}
    sidecar.stop_sidecars(topo, h)

CLI (needs root):
    /usr/bin/python3 tests/bench/sidecar.py config [--mode mtls|plain]   # print a rendered config
    /usr/bin/python3 tests/bench/sidecar.py smoke BUILD_DIR              # end-to-end checks, exit 1 on failure
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "system"))

HAPROXY = os.environ.get("HAPROXY", "/usr/sbin/haproxy")
TEMPLATE = REPO / "tests" / "bench" / "haproxy" / "sidecar.cfg.in"
SIDECAR_UID = 1337
PROXY_MARK = 0x539
OUT_PORT = 15001
IN_PORT = 15006
MODES = ("plain", "mtls")
DURATION = int(os.environ.get("BENCH_SECONDS", "4"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# configuration


def render_config(mode, stats, threads=2, cert=None, root=None, ssl_reuse=False):
    """HAProxy configuration text for one pod's sidecar.  cert: PEM with the
    pod's certificate chain and key; root: the mesh root certificate."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: want one of {MODES}")
    out_opts = in_opts = ""
    if mode == "mtls":
        if not cert or not root:
            raise ValueError("mtls needs cert and root")
        tls = f"ssl crt {cert} ca-file {root} verify required ssl-min-ver TLSv1.3"
        out_opts = tls + ("" if ssl_reuse else " no-ssl-reuse")
        in_opts = tls
    text = TEMPLATE.read_text()
    for k, v in {
        "THREADS": str(threads),
        "UID": str(SIDECAR_UID),
        "STATS": stats,
        "OUT_PORT": str(OUT_PORT),
        "IN_PORT": str(IN_PORT),
        "OUT_SERVER_OPTS": out_opts,
        "IN_BIND_OPTS": in_opts,
    }.items():
        text = text.replace(f"@{k}@", v)
    if "@" in re.sub(r"#.*", "", text):
        raise ValueError("unfilled field in " + str(TEMPLATE))
    return text


_EXEMPT_NFT = f"""table inet ambit_bench_sidecar {{
	chain out {{
		type route hook output priority mangle; policy accept;
		meta skuid {SIDECAR_UID} meta mark set {PROXY_MARK:#x} comment "sidecar sockets: not captured"
	}}
}}
"""


def make_certs(bins, workdir, service_accounts, namespace="default"):
    """Root, node intermediate n1 and one workload SVID per service account,
    all from ambit-certs.  Returns (root_pem, {sa: haproxy_pem}) where the
    HAProxy PEM is chain (leaf + intermediate) followed by the key."""
    certs = Path(bins) / "ambit-certs"
    d = Path(workdir)
    (d / "root").mkdir(parents=True, exist_ok=True)
    subprocess.run([certs, "init-root", "--dir", d / "root"], check=True, capture_output=True)
    subprocess.run([certs, "issue-node", "--dir", d / "root", "--node", "n1", "--out", d / "n1"],
                   check=True, capture_output=True)
    out = {}
    for sa in service_accounts:
        w = d / f"sa-{sa}"
        subprocess.run([certs, "issue-workload", "--dir", d / "n1", "--namespace", namespace,
                        "--service-account", sa, "--out", w], check=True, capture_output=True)
        pem = d / f"{sa}.pem"
        pem.write_bytes((w / "chain.pem").read_bytes() + (w / "key.pem").read_bytes())
        os.chmod(pem, 0o600)
        out[sa] = str(pem)
    return str(d / "n1" / "root-cert.pem"), out


# --------------------------------------------------------------------------
# sidecars


class Sidecars:
    """Handle of running sidecars: procs (Popen), pids, stats sockets."""

    def __init__(self, mode):
        self.mode = mode
        self.procs = {}  # pod name -> Popen
        self.stats = {}  # pod name -> unix socket path
        self.pods = []

    @property
    def pids(self):
        return [p.pid for p in self.procs.values()]

    def rss_kb(self):
        return {name: rss_kb(p.pid) for name, p in self.procs.items()}

    def info(self, pod_name):
        """HAProxy `show info` of one sidecar as a dict."""
        return dict(line.split(": ", 1) for line in
                    stats_cmd(self.stats[pod_name], "show info").splitlines() if ": " in line)


def stats_cmd(path, cmd):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(cmd.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode()


def tune_pod(pod):
    """Per-netns TCP settings for connection-rate runs, applied to every pod
    of every mode alike: a wide ephemeral range and TIME_WAIT reuse, so
    tens of thousands of short connections do not run out of ports."""
    pod.run(["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"])


def setup_sidecars(topo, node, pods, bins, mode, threads=2, ssl_reuse=False):
    """Capture rules + exemption + one HAProxy in each pod of `pods`.
    Returns a Sidecars handle; the processes are tracked by topo (killed at
    teardown) and stop_sidecars() stops them earlier."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}")
    if not os.access(HAPROXY, os.X_OK):
        raise RuntimeError(f"{HAPROXY} missing: apt-get install -y --no-install-recommends haproxy")
    bins = Path(bins)
    work = Path(topo.tmpdir) / f"sidecar-{mode}"
    work.mkdir(parents=True, exist_ok=True)
    root = certs = None
    if mode == "mtls":
        root, certs = make_certs(bins, work / "pki", [p.name for p in pods])
    h = Sidecars(mode)
    for p in pods:
        node.run([str(bins / "ambit-redirect"), "install", "--netns", p.path])
        p.run(["nft", "-f", "-"], input=_EXEMPT_NFT)
        stats = str(work / f"{p.name}.stats")
        cfg = work / f"{p.name}.cfg"
        cfg.write_text(render_config(mode, stats, threads, certs and certs[p.name], root, ssl_reuse))
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], check=True, capture_output=True)
        proc = p.popen([HAPROXY, "-db", "-f", str(cfg)])
        h.procs[p.name] = proc
        h.stats[p.name] = stats
        h.pods.append(p)
    # Readiness from the listening sockets, not by connecting: a probe
    # connection would only be rejected by the loop guard.
    for p in pods:
        deadline = time.monotonic() + 10
        while True:
            out = p.run(["ss", "-Htln"]).stdout
            if all(re.search(rf":{port}\b", out) for port in (OUT_PORT, IN_PORT)):
                break
            if time.monotonic() > deadline or h.procs[p.name].poll() is not None:
                raise RuntimeError(f"sidecar in {p.name} not listening: " + topo.log(h.procs[p.name]))
            time.sleep(0.05)
    return h


def add_baseline(topo, node, bins, httpd, mode, threads=2, prefix="sc"):
    """One ready-to-measure pair for another benchmark: pods
    <prefix>-<mode>-a (client) and -b (server, bench-httpd on 8080 and
    iperf3 -s on 5201), tuned like tune_pod(), with sidecars in `mode`
    ("plain"/"mtls") or none ("direct").  Returns (src, dst, handle or
    None).  The pods must not be enrolled in node-proxy (both would want
    15001/15006 in the same netns)."""
    from topology import wait_port

    src = topo.add_pod(node, f"{prefix}-{mode}-a")
    dst = topo.add_pod(node, f"{prefix}-{mode}-b")
    for p in (src, dst):
        tune_pod(p)
    dst.popen([str(httpd), "8080", "64"])
    dst.popen(["iperf3", "-s", "-p", "5201"])
    wait_port(dst, 8080)
    wait_port(dst, 5201)
    h = None if mode == "direct" else setup_sidecars(topo, node, [src, dst], bins, mode, threads)
    return src, dst, h


def stop_sidecars(topo, h):
    for proc in h.procs.values():
        topo.stop(proc)


# --------------------------------------------------------------------------
# measurements (same invocations as bench_node_proxy.py)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pids):
    """utime + stime of all threads of pids, in clock ticks."""
    t = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        t += int(rest[11]) + int(rest[12])
    return t


def parse_lat(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def wrk(pod, url, conns, duration=DURATION, pids=()):
    """wrk --latency -t1 (-t2 from 8 connections) -cN: (req/s, p50 us, p99 us,
    vCPU per 1000 req/s of pids or None)."""
    threads = 1 if conns < 8 else 2
    c0, t0 = cpu_ticks(pids), time.monotonic()
    r = pod.run(["wrk", "--latency", f"-t{threads}", f"-c{conns}", f"-d{duration}s", url],
                timeout=duration + 30)
    c1, t1 = cpu_ticks(pids), time.monotonic()
    out = r.stdout
    if "Socket errors" in out or "Non-2xx" in out:
        raise RuntimeError("wrk errors:\n" + out)
    rps = float(out.split("Requests/sec:")[1].split()[0])
    p50 = parse_lat(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_lat(re.search(r"\s99%\s+(\S+)", out).group(1))
    vcpu = (c1 - c0) / CLK_TCK / (t1 - t0) / (rps / 1000) if pids else None
    return rps, p50, p99, vcpu


def iperf(pod, ip, duration=DURATION):
    r = pod.run(["iperf3", "-c", ip, "-t", str(duration), "-J"], timeout=duration + 30)
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]


def connrate(pod, binary, ip, port=8080, duration=DURATION, conc=8, pids=()):
    """New connections per second, one HTTP request per TCP connection:
    (rate, CPU ms of pids per connection or None)."""
    c0 = cpu_ticks(pids)
    r = pod.run([str(binary), ip, str(port), str(duration), str(conc)], timeout=duration + 30)
    c1 = cpu_ticks(pids)
    m = dict(kv.split("=") for kv in r.stdout.split())
    n = int(m["conns"])
    if n == 0 or int(m["errors"]) > n // 100:
        raise RuntimeError("connrate errors: " + r.stdout + r.stderr)
    return float(m["rate"]), ((c1 - c0) / CLK_TCK * 1e3 / n if pids else None)


def measure(src, dst_ip, pids=(), connrate_bin=None, duration=DURATION):
    """One round from pod src to dst_ip (bench-httpd on 8080, iperf3 -s on
    5201 there): {"iperf": bit/s, "wrk4"/"wrk64": (rps, p50, p99, vcpu),
    "conns": new connections/s or None, "conn_cpu_ms": CPU ms of pids per
    new connection or None}.  pids: proxy processes whose CPU
    is charged to the traffic (vcpu = None without)."""
    m = {"iperf": iperf(src, dst_ip, duration)}
    for k, n in (("wrk4", 4), ("wrk64", 64)):
        m[k] = wrk(src, f"http://{dst_ip}:8080/", n, duration, pids)
    m["conns"], m["conn_cpu_ms"] = (connrate(src, connrate_bin, dst_ip, 8080, duration, pids=pids)
                                    if connrate_bin else (None, None))
    return m


def merge_best(best, m):
    """Keep the best of rounds: highest rates, lowest latencies and CPU."""
    if not best:
        best.update(m)
        return best
    best["iperf"] = max(best["iperf"], m["iperf"])
    for k in ("wrk4", "wrk64"):
        o, n = best[k], m[k]
        best[k] = (max(o[0], n[0]), min(o[1], n[1]), min(o[2], n[2]),
                   None if o[3] is None else min(o[3], n[3]))
    if m["conns"] is not None:
        best["conns"] = max(best["conns"] or 0, m["conns"])
    if m["conn_cpu_ms"] is not None:
        best["conn_cpu_ms"] = min(best["conn_cpu_ms"] or 1e9, m["conn_cpu_ms"])
    return best


# --------------------------------------------------------------------------
# connection-rate client (C; compiled into BUILD/bench on first use)

_CONNRATE_C = r"""
/* bench-connrate HOST PORT SECONDS CONC: CONC connections in flight, each
 * connect, one HTTP/1.1 GET, read the whole response (Content-Length),
 * close; prints conns= errors= seconds= rate=.  Part of the benchmark, not
 * the product (generated by tests/bench/sidecar.py). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
	int fd, sent;
	size_t got, need;
	char buf[8192];
};

static struct sockaddr_in sa;
static int ep;
static long done, errs;
static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void start(struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
	int one = 1;

	for (;;) {
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (c->fd < 0) {
			perror("socket");
			exit(1);
		}
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->sent = 0;
		c->got = c->need = 0;
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EINPROGRESS)
			break;
		errs++;
		close(c->fd);
		if (errs > 100000) {
			perror("connect");
			exit(1);
		}
	}
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void finish(struct conn *c, int ok)
{
	close(c->fd);
	if (ok)
		done++;
	else
		errs++;
	start(c);
}

int main(int argc, char **argv)
{
	double secs, t0, end;
	int conc;
	struct conn *cs;
	struct epoll_event evs[256];

	if (argc != 5)
		return 2;
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
		return 2;
	secs = atof(argv[3]);
	conc = atoi(argv[4]);
	if (conc < 1 || conc > 1024 || secs <= 0)
		return 2;
	cs = calloc((size_t)conc, sizeof(*cs));
	ep = epoll_create1(0);
	t0 = now();
	end = t0 + secs;
	for (int i = 0; i < conc; i++)
		start(&cs[i]);
	while (now() < end) {
		int n = epoll_wait(ep, evs, 256, 100);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c->sent) {
				int err = 0;
				socklen_t l = sizeof(err);
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
				if (err || write(c->fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
					finish(c, 0);
					continue;
				}
				c->sent = 1;
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				continue;
			}
			ssize_t r = read(c->fd, c->buf + c->got, sizeof(c->buf) - 1 - c->got);
			if (r <= 0) {
				finish(c, 0);
				continue;
			}
			c->got += (size_t)r;
			c->buf[c->got] = 0;
			if (!c->need) {
				char *h = strstr(c->buf, "\r\n\r\n"), *cl = strcasestr(c->buf, "Content-Length:");
				if (h && cl)
					c->need = (size_t)(h + 4 - c->buf) + strtoul(cl + 15, NULL, 10);
				else if (h || c->got >= sizeof(c->buf) - 1) {
					finish(c, 0);
					continue;
				}
			}
			if (c->need && c->got >= c->need)
				finish(c, 1);
		}
	}
	t0 = now() - t0;
	printf("conns=%ld errors=%ld seconds=%.3f rate=%.1f\n", done, errs, t0, (double)done / t0);
	return 0;
}
"""


def build_connrate(build):
    """Compile the connection-rate client into BUILD/bench/bench-connrate
    (if older than this file) and return its path."""
    out = Path(build) / "bench" / "bench-connrate"
    if not out.exists() or out.stat().st_mtime < Path(__file__).stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        src = out.with_suffix(".c")
        src.write_text(_CONNRATE_C)
        subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(out), str(src)], check=True)
    return out


# --------------------------------------------------------------------------
# CLI


def smoke(build):
    """End to end: curl through sidecars in both modes; in mtls mode the hop
    between the sidecars is TLS (both sidecars count SSL connections),
    plaintext to a pod's captured port is refused, and a TLS client without
    a certificate is refused.  Returns a list of failures."""
    from topology import Topology, http_server

    build = Path(build).resolve()
    bins = build / "bin"
    topo = Topology(bins=bins)
    bad = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            bad.append(what)

    try:
        n1 = topo.add_node("n1")
        for mode in MODES:
            a = topo.add_pod(n1, f"{mode}-a")
            b = topo.add_pod(n1, f"{mode}-b")
            http_server(b, 8080)
            h = setup_sidecars(topo, n1, [a, b], bins, mode)
            r = a.run(["curl", "-sS", "-m", "5", f"http://{b.ip}:8080/"], check=False)
            check(r.returncode == 0 and r.stdout == f"{b.name}\n", f"{mode}: curl A -> B through sidecars: {r.stdout!r} {r.stderr.strip()}")
            ia, ib = h.info(a.name), h.info(b.name)
            ssl_a, ssl_b = int(ia.get("CumSslConns", 0)), int(ib.get("CumSslConns", 0))
            conns_b = int(ib.get("CumConns", 0))
            check(conns_b >= 1, f"{mode}: B's sidecar accepted the connection (CumConns={conns_b})")
            if mode == "mtls":
                check(ssl_a >= 1 and ssl_b >= 1, f"mtls: TLS on the sidecar hop (CumSslConns A={ssl_a} B={ssl_b})")
                # from the node: not captured on the way out, captured into B's 15006
                r = n1.run(["curl", "-sS", "-m", "5", f"http://{b.ip}:8080/"], check=False)
                check(r.returncode != 0, "mtls: plaintext to B's app port refused")
                r = n1.run(["openssl", "s_client", "-connect", f"{b.ip}:8080", "-tls1_3", "-quiet",
                            "-CAfile", str(Path(topo.tmpdir) / "sidecar-mtls" / "pki" / "n1" / "root-cert.pem")],
                           input="GET / HTTP/1.0\r\n\r\n", check=False, timeout=10)
                check(b.name not in r.stdout, "mtls: TLS client without a certificate refused")
                # a client certificate from another mesh's root
                other = Path(topo.tmpdir) / "foreign"
                _, fc = make_certs(topo.bins, other, ["x"])
                r = n1.run(["openssl", "s_client", "-connect", f"{b.ip}:8080", "-tls1_3", "-quiet",
                            "-cert", fc["x"], "-key", fc["x"]],
                           input="GET / HTTP/1.0\r\n\r\n", check=False, timeout=10)
                check(b.name not in r.stdout, "mtls: client certificate from a foreign root refused")
            else:
                check(ssl_a == 0 and ssl_b == 0, "plain: no TLS on the sidecar hop")
            before = int(h.info(a.name)["CumConns"])
            r = a.run(["curl", "-sS", "-m", "3", f"http://127.0.0.1:{OUT_PORT}/"], check=False)
            after = int(h.info(a.name)["CumConns"])
            check(r.returncode != 0 and after - before <= 2, f"{mode}: loop guard: a connection to the sidecar's own port is rejected ({after - before} accepted)")
            stop_sidecars(topo, h)
            r = a.run(["curl", "-sS", "-m", "3", f"http://{b.ip}:8080/"], check=False)
            check(r.returncode != 0, f"{mode}: with the sidecars stopped, A -> B fails (traffic was captured)")
    finally:
        topo.teardown()
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config", help="print a rendered sidecar configuration")
    c.add_argument("--mode", choices=MODES, default="mtls")
    c.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("smoke", help="end-to-end checks of the sidecar setup (root)")
    s.add_argument("build", nargs="?", default="build")
    args = ap.parse_args()
    if args.cmd == "config":
        print(render_config(args.mode, "/run/sidecar.stats", args.threads,
                            "/etc/sidecar/pod.pem", "/etc/sidecar/root-cert.pem"), end="")
        print("\n# plus, in the pod's netns, after `ambit-redirect install`:\n" +
              "".join("# " + line + "\n" for line in _EXEMPT_NFT.splitlines()), end="")
        return 0
    bad = smoke(args.build)
    print(f"{len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
