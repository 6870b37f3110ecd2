"""node-proxy exports what it carries (docs/observability.md, "Wiring in
node-proxy"): after known traffic through a real node-proxy - N
connections of K request bytes and R response bytes from pod front to pod
back - :15020/metrics (scraped in the node netns) passes the strict
exposition parser and `promtool check metrics`, and the Istio TCP counters
say exactly N, N*K and N*R on reporter=source and reporter=destination with
both workloads' labels; the access log has one valid JSON line per
connection and reporter, failed ones included (UF for a closed port);
/logging switches the access log at run time and SIGHUP reopens it."""

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from test_metrics_format import ExpositionError, parse_exposition, promtool_check, sample
from test_node_proxy import Proxy
from topology import PYTHON

METRICS = 15020
NS = "shop"
TD = "cluster.local"

# Server: read the request to EOF, answer R bytes, close.  Client: send K
# bytes, half-close, read to EOF; prints what it got.
_SERVER = r"""
import socket, sys, threading
R = int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(128)
print("ready", flush=True)
def h(c):
    while c.recv(65536):
        pass
    c.sendall(b"r" * R); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()
"""

_CLIENT = r"""
import socket, sys
host, port, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
got = []
for _ in range(n):
    c = socket.create_connection((host, port), timeout=10)
    c.sendall(b"q" * k); c.shutdown(socket.SHUT_WR)
    t = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        t += len(b)
    c.close(); got.append(t)
print(" ".join(map(str, got)))
"""

MODES = {"two-hop": ["--local-shortcut", "false"], "shortcut": []}


def write_config(topo, **telemetry):
    p = Path(topo.tmpdir) / "np-telemetry.ini"
    p.write_text("[telemetry]\n" + "".join(f"{k} = {v}\n" for k, v in telemetry.items()))
    return str(p)


def enrol(topo, bins, node, proxy, pod, sa):
    r = node.run([str(bins / "ambit-redirect"), "install", "--netns", pod.path])
    assert r.returncode == 0
    proxy.ctl("add", "--uid", f"uid-{pod.name}", "--namespace", NS, "--name", pod.name,
              "--service-account", sa, "--netns", pod.path, "--ip", pod.ip,
              "--label", f"app={pod.name}-app", "--label", "version=v1")


@pytest.fixture
def shop(topo, bins, request):
    """Node n1, pods front and back (namespace shop), node-proxy with the
    access log in a file; back runs the R-byte server on 9000."""
    mode = getattr(request, "param", "two-hop")
    n1 = topo.add_node("n1")
    front = topo.add_pod(n1, "front")
    back = topo.add_pod(n1, "back")
    alog = Path(topo.tmpdir) / "access.log"
    cfg = write_config(topo, access_log=str(alog), max_series=64)
    proxy = Proxy(topo, bins, n1, extra=MODES[mode] + ["--config", cfg])
    enrol(topo, bins, n1, proxy, front, "front-sa")
    enrol(topo, bins, n1, proxy, back, "back-sa")
    srv = back.popen([PYTHON, "-c", _SERVER, "9000", str(R)], stdout=__import__("subprocess").PIPE)
    assert srv.stdout.readline().strip() == b"ready"
    yield n1, front, back, proxy, alog
    proxy.stop_clean()


R = 3000
K = 20000


def scrape(proxy):
    code, body = proxy.http("/metrics", port=METRICS)
    assert code == 200, body
    data = body.encode()
    fams = parse_exposition(data)
    p = promtool_check(data)
    if p is not None:
        assert p.returncode == 0, (p.stdout + p.stderr).decode(errors="replace")[:3000]
    return fams, data


def tcp(fams, name, **labels):
    """Sum of @name over samples whose labels include @labels (0 if none)."""
    if name not in fams:
        return 0
    return sum(v for (n, ls), v in fams[name]["samples"].items()
               if n == name and all((k, val) in ls for k, val in labels.items()))


def wait_closed(proxy, reporter, n, timeout=10, **labels):
    deadline = time.monotonic() + timeout
    while True:
        fams, data = scrape(proxy)
        got = tcp(fams, "istio_tcp_connections_closed_total", reporter=reporter, **labels)
        if got >= n or time.monotonic() > deadline:
            return fams, data
        time.sleep(0.1)


def log_lines(path, n, timeout=5):
    """The access log's lines once it has at least @n (each must be JSON)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [l for l in text.split("\n") if l]
        if len(lines) >= n or time.monotonic() > deadline:
            assert text == "" or text.endswith("\n"), "last line not terminated"
            return [json.loads(l) for l in lines]
        time.sleep(0.05)


def run_client(pod, ip, port, n, k):
    r = pod.run([PYTHON, "-c", _CLIENT, ip, str(port), str(n), str(k)], timeout=60)
    return [int(x) for x in r.stdout.split()]


def labels_of(src, dst):
    return dict(source_workload=src.name, source_workload_namespace=NS,
                source_principal=f"spiffe://{TD}/ns/{NS}/sa/{src.name}-sa",
                source_app=f"{src.name}-app", source_version="v1",
                destination_workload=dst.name, destination_workload_namespace=NS,
                destination_principal=f"spiffe://{TD}/ns/{NS}/sa/{dst.name}-sa",
                destination_app=f"{dst.name}-app", request_protocol="tcp",
                connection_security_policy="none")


@pytest.mark.parametrize("shop", list(MODES), indirect=True)
def test_known_traffic_counts_exactly_on_both_reporters(shop):
    n1, front, back, proxy, alog = shop
    N = 7
    s0 = proxy.stats()
    assert run_client(front, back.ip, 9000, N, K) == [R] * N
    s1 = proxy.stats()
    assert s1["accepted"] - s0["accepted"] >= N * proxy.hops  # it crossed node-proxy
    want = labels_of(front, back)
    for rep in ("source", "destination"):
        fams, data = wait_closed(proxy, rep, N, **want)
        assert tcp(fams, "istio_tcp_connections_opened_total", reporter=rep, **want) == N, rep
        assert tcp(fams, "istio_tcp_connections_closed_total", reporter=rep, response_flags="-",
                   **want) == N, rep
        assert tcp(fams, "istio_tcp_received_bytes_total", reporter=rep, **want) == N * K, rep
        assert tcp(fams, "istio_tcp_sent_bytes_total", reporter=rep, **want) == N * R, rep
        assert tcp(fams, "istio_tcp_connections_failed_total", reporter=rep) == 0, rep
    # nothing counted under other labels (the app connects nowhere else)
    assert tcp(fams, "istio_tcp_connections_opened_total") == 2 * N
    # the proxy's own metrics
    assert sample(fams, "ambit_workloads_enrolled") == 2
    assert tcp(fams, "ambit_worker_connections_accepted_total") >= N * proxy.hops
    assert tcp(fams, "ambit_worker_listeners") > 0
    assert sample(fams, "process_open_fds") > 0
    assert sample(fams, "process_resident_memory_bytes") > 0
    assert b'ambit_hbone_handshakes_total{role="client"}' in data

    lines = log_lines(alog, 2 * N)
    assert len(lines) == 2 * N, lines
    for d, rep in (("outbound", "source"), ("inbound", "destination")):
        mine = [l for l in lines if l["direction"] == d]
        assert len(mine) == N, (d, lines)
        for l in mine:
            assert l["reporter"] == rep
            assert (l["src_workload"], l["dst_workload"]) == ("front", "back")
            assert l["src_namespace"] == l["dst_namespace"] == NS
            assert l["src_identity"] == f"spiffe://{TD}/ns/{NS}/sa/front-sa"
            assert l["dst_identity"] == f"spiffe://{TD}/ns/{NS}/sa/back-sa"
            assert l["dst_addr"] == f"{back.ip}:9000"
            assert l["src_addr"].startswith(front.ip + ":")
            assert l["response_flags"] == "-" and l["error"] is None
            assert l["connection_security_policy"] == "none"
            # bytes as the local workload saw them: the client sent K, the server R
            assert l["bytes_sent"] == (K if d == "outbound" else R), l
            assert l["bytes_received"] == (R if d == "outbound" else K), l
            assert isinstance(l["duration_ms"], int) and l["duration_ms"] >= 0


@pytest.mark.parametrize("shop", list(MODES), indirect=True)
def test_closed_port_is_failed_with_uf(shop):
    n1, front, back, proxy, alog = shop
    r = front.run(["curl", "-sS", "--max-time", "5", f"http://{back.ip}:9/"], check=False)
    assert r.returncode != 0
    want = labels_of(front, back)
    # the side that connects to the closed port reports UF: the destination
    # (15006 in back, or the one shortcut hop that is both)
    fams, _ = wait_closed(proxy, "destination", 1, response_flags="UF", **want)
    assert tcp(fams, "istio_tcp_connections_failed_total", reporter="destination",
               response_flags="UF", **want) == 1
    assert tcp(fams, "istio_tcp_connections_opened_total", reporter="destination", **want) == 1
    lines = log_lines(alog, 2)
    inb = [l for l in lines if l["direction"] == "inbound"]
    assert len(inb) == 1 and inb[0]["response_flags"] == "UF", lines
    assert inb[0]["error"] and "refused" in inb[0]["error"].lower(), inb
    assert inb[0]["dst_addr"] == f"{back.ip}:9"
    out = [l for l in lines if l["direction"] == "outbound"]
    assert len(out) == 1, lines
    # two hops: the source side connected to 15006 and was then reset (UC);
    # one hop: the same failure
    assert out[0]["response_flags"] in ("UF", "UC"), out
    if proxy.hops == 1:
        assert out[0]["response_flags"] == "UF"


@pytest.mark.parametrize("mode", list(MODES))
def test_policy_denial_is_failed_with_deny(topo, bins, mode):
    """A connection the destination's policy refuses counts as opened,
    closed and failed with DENY and has its access log line."""
    n1 = topo.add_node("n1")
    front = topo.add_pod(n1, "front")
    back = topo.add_pod(n1, "back")
    pdir = Path(topo.tmpdir) / "policies.d"
    pdir.mkdir()
    (pdir / "10-deny.ini").write_text(
        f"[policy deny-front]\nnamespace = {NS}\naction = DENY\n\n"
        f"[rule deny-front]\nip_blocks = {front.ip}/32\n")
    alog = Path(topo.tmpdir) / "access.log"
    cfg = write_config(topo, access_log=str(alog))
    with open(cfg, "a") as f:
        f.write(f"[policy]\npolicies_dir = {pdir}\n")
    proxy = Proxy(topo, bins, n1, extra=MODES[mode] + ["--config", cfg])
    try:
        enrol(topo, bins, n1, proxy, front, "front-sa")
        enrol(topo, bins, n1, proxy, back, "back-sa")
        back.popen([PYTHON, "-c", _SERVER, "9000", str(R)])
        time.sleep(0.3)
        r = front.run([PYTHON, "-c", _CLIENT, back.ip, "9000", "1", "10"], check=False,
                      timeout=30)
        assert r.stdout.strip() in ("", "0"), r.stdout  # refused: nothing answered
        want = labels_of(front, back)
        fams, _ = wait_closed(proxy, "destination", 1, response_flags="DENY", **want)
        assert tcp(fams, "istio_tcp_connections_failed_total", reporter="destination",
                   response_flags="DENY", **want) == 1
        assert tcp(fams, "istio_tcp_connections_opened_total", reporter="destination",
                   **want) == 1
        lines = log_lines(alog, 2 if proxy.hops == 1 else 1)
        deny = [l for l in lines if l["response_flags"] == "DENY"]
        assert deny and all(l["error"] == "denied by authorization policy" for l in deny), lines
        assert any(l["direction"] == "inbound" and l["src_workload"] == "front"
                   and l["dst_workload"] == "back" for l in deny), lines
    finally:
        proxy.stop_clean()


def test_hbone_streams_count_as_mutual_tls(topo, bins):
    """With [mesh] on, front -> back rides an HBONE tunnel: both reporters
    count the streams exactly, with connection_security_policy mutual_tls
    and the principals the handshake proved; a closed port is UF on both
    sides (503 on the CONNECT); a policy denial is DENY (401)."""
    from test_hbone_mesh import make_ca
    n1 = topo.add_node("n1")
    front = topo.add_pod(n1, "front")
    back = topo.add_pod(n1, "back")
    pdir = Path(topo.tmpdir) / "policies.d"
    pdir.mkdir()
    (pdir / "10-deny.ini").write_text(
        f"[policy deny-8000]\nnamespace = {NS}\naction = DENY\n\n"
        f"[rule deny-8000]\nports = 8000\n")
    alog = Path(topo.tmpdir) / "access.log"
    cfg = write_config(topo, access_log=str(alog))
    with open(cfg, "a") as f:
        f.write(f"[mesh]\nca_dir = {make_ca(topo, bins)}\n[policy]\npolicies_dir = {pdir}\n")
    proxy = Proxy(topo, bins, n1, extra=["--config", cfg])
    try:
        enrol(topo, bins, n1, proxy, front, "front-sa")
        enrol(topo, bins, n1, proxy, back, "back-sa")
        back.popen([PYTHON, "-c", _SERVER, "9000", str(R)])
        back.popen([PYTHON, "-c", _SERVER, "8000", str(R)])
        time.sleep(0.3)
        N = 5
        assert run_client(front, back.ip, 9000, N, K) == [R] * N
        want = labels_of(front, back)
        want["connection_security_policy"] = "mutual_tls"
        for rep in ("source", "destination"):
            fams, data = wait_closed(proxy, rep, N, **want)
            assert tcp(fams, "istio_tcp_connections_opened_total", reporter=rep, **want) == N
            assert tcp(fams, "istio_tcp_connections_closed_total", reporter=rep,
                       response_flags="-", **want) == N, rep
            assert tcp(fams, "istio_tcp_received_bytes_total", reporter=rep, **want) == N * K
            assert tcp(fams, "istio_tcp_sent_bytes_total", reporter=rep, **want) == N * R
        assert tcp(fams, "istio_tcp_connections_opened_total",
                   connection_security_policy="none") == 0  # nothing went in plaintext
        assert tcp(fams, "ambit_hbone_handshakes_total", role="client") >= 1
        assert tcp(fams, "ambit_hbone_handshakes_total", role="server") >= 1
        assert sample(fams, "ambit_pool_connections_opened_total") >= 1
        assert sample(fams, "ambit_pool_connections") >= 0
        lines = log_lines(alog, 2 * N)
        assert len(lines) == 2 * N, lines
        for l in lines:
            assert l["connection_security_policy"] == "mutual_tls", l
            assert l["src_identity"] == f"spiffe://{TD}/ns/{NS}/sa/front-sa", l
            assert l["dst_identity"] == f"spiffe://{TD}/ns/{NS}/sa/back-sa", l
            assert (l["src_workload"], l["dst_workload"]) == ("front", "back"), l
            assert l["response_flags"] == "-" and l["dst_addr"] == f"{back.ip}:9000", l
            out = l["direction"] == "outbound"
            assert l["bytes_sent"] == (K if out else R) and l["bytes_received"] == (R if out else K), l
        # trace context: the source sends traceparent, the destination logs
        # the same one, so the two hops of each connection join
        tps = {d: sorted(l["traceparent"] for l in lines if l["direction"] == d)
               for d in ("outbound", "inbound")}
        assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", t) for t in tps["outbound"]), tps
        assert tps["outbound"] == tps["inbound"] and len(set(tps["outbound"])) == N, tps
        # baggage: the source workload's metadata travels with each CONNECT
        # and the destination side records it
        for l in lines:
            if l["direction"] == "inbound":
                assert "k8s.pod.name=front" in l["baggage"], l
                assert f"k8s.namespace.name={NS}" in l["baggage"], l
        # closed port: the destination cannot connect the app (503): UF both sides
        r = front.run(["curl", "-sS", "--max-time", "5", f"http://{back.ip}:9/"], check=False)
        assert r.returncode != 0
        for rep in ("source", "destination"):
            fams, _ = wait_closed(proxy, rep, 1, response_flags="UF", **want)
            assert tcp(fams, "istio_tcp_connections_failed_total", reporter=rep,
                       response_flags="UF", **want) == 1, rep
        # denied by the destination's policy (401): DENY both sides
        r = front.run(["curl", "-sS", "--max-time", "5", f"http://{back.ip}:8000/"], check=False)
        assert r.returncode != 0
        for rep in ("source", "destination"):
            fams, _ = wait_closed(proxy, rep, 1, response_flags="DENY", **want)
            assert tcp(fams, "istio_tcp_connections_failed_total", reporter=rep,
                       response_flags="DENY", **want) == 1, rep
        lines = log_lines(alog, 2 * N + 4)
        flags = sorted((l["direction"], l["response_flags"]) for l in lines[2 * N:])
        assert flags == [("inbound", "DENY"), ("inbound", "UF"), ("outbound", "DENY"),
                         ("outbound", "UF")], lines[2 * N:]
    finally:
        proxy.stop_clean()


def test_idle_timeout_is_si(topo, bins):
    n1 = topo.add_node("n1")
    front = topo.add_pod(n1, "front")
    back = topo.add_pod(n1, "back")
    alog = Path(topo.tmpdir) / "access.log"
    cfg = write_config(topo, access_log=str(alog))
    proxy = Proxy(topo, bins, n1, extra=["--config", cfg, "--idle-timeout", "300ms"])
    try:
        enrol(topo, bins, n1, proxy, front, "front-sa")
        enrol(topo, bins, n1, proxy, back, "back-sa")
        back.popen([PYTHON, "-c", _SERVER, "9000", str(R)])
        time.sleep(0.3)
        # connect, send nothing, wait for the proxy to close it
        r = front.run([PYTHON, "-c", "import socket,sys; c=socket.create_connection((sys.argv[1], 9000));"
                       "c.settimeout(5); print(len(c.recv(10)))", back.ip], timeout=20)
        assert r.stdout.strip() == "0"  # closed by node-proxy, no bytes
        want = labels_of(front, back)
        fams, _ = wait_closed(proxy, "source", 1, response_flags="SI", **want)
        assert tcp(fams, "istio_tcp_connections_closed_total", reporter="source",
                   response_flags="SI", **want) == 1
        assert tcp(fams, "istio_tcp_connections_failed_total") == 0  # SI is not a failure
        lines = log_lines(alog, 2)
        assert lines and all(l["response_flags"] == "SI" for l in lines), lines
    finally:
        proxy.stop_clean()


def test_logging_switches_at_run_time(shop):
    n1, front, back, proxy, alog = shop
    assert run_client(front, back.ip, 9000, 1, 10) == [R]
    assert len(log_lines(alog, 2)) == 2
    code, body = proxy.http("/logging?access_log=off")
    assert code == 200 and "access_log=off" in body, body
    assert run_client(front, back.ip, 9000, 3, 10) == [R] * 3
    wait_closed(proxy, "destination", 4)
    time.sleep(0.3)  # the writer polls every 10 ms: nothing may arrive
    assert len(log_lines(alog, 3, timeout=0.2)) == 2
    code, body = proxy.http("/logging?access_log=on&sample=1&level=info")
    assert code == 200 and "access_log=on" in body and "sample=1" in body, body
    assert run_client(front, back.ip, 9000, 2, 10) == [R] * 2
    assert len(log_lines(alog, 6)) == 6
    # sampling 1 in 10^6 (exact per worker): at most one record per worker
    # and kind of line is kept, the rest are counted as sampled out
    code, _ = proxy.http("/logging?sample=1000000")
    assert code == 200
    assert run_client(front, back.ip, 9000, 4, 10) == [R] * 4
    wait_closed(proxy, "destination", 10)
    time.sleep(0.3)
    assert len(log_lines(alog, 7, timeout=0.2)) <= 6 + 2
    fams, _ = scrape(proxy)
    assert tcp(fams, "ambit_accesslog_dropped_total", reason="sampled_out") > 0
    # bad queries change nothing and answer 400
    for q in ("access_log=maybe", "sample=0", "sample=x", "level=loud", "bogus=1",
              "access_log=on&access_log=off", "level=info&level=debug"):
        code, body = proxy.http("/logging?" + q)
        assert code == 400, (q, code, body)
    code, body = proxy.http("/logging")
    assert code == 200 and "access_log=on" in body and "sample=1000000" in body, body
    # /logging is on the localhost admin port only, /metrics on the metrics port only
    assert proxy.http("/logging", port=METRICS)[0] == 404
    assert proxy.http("/metrics")[0] == 404


def test_sighup_reopens_rotated_access_log(shop):
    n1, front, back, proxy, alog = shop
    assert run_client(front, back.ip, 9000, 1, 10) == [R]
    assert len(log_lines(alog, 2)) == 2
    old = alog.with_suffix(".1")
    os.rename(alog, old)
    proxy.proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert run_client(front, back.ip, 9000, 1, 10) == [R]
    assert len(log_lines(alog, 2)) == 2
    assert len(log_lines(old, 2)) == 2
    assert proxy.ready()


def test_parser_and_promtool_can_fail():
    """The checks above would catch a broken exposition."""
    with pytest.raises(ExpositionError):
        parse_exposition(b'istio_tcp_sent_bytes_total{reporter="x" 1\n')
    p = promtool_check(b"# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n")
    if p is not None:
        assert p.returncode != 0


def test_bad_telemetry_config_is_refused(topo, bins):
    n1 = topo.add_node("n1")
    for kv in ({"max_series": "3"}, {"access_log": "relative.log"}, {"metrics_port": "70000"},
               {"access_log_sample": "x"}):
        cfg = write_config(topo, **kv)
        r = n1.run([str(bins / "ambit-node-proxy"), "run", "--config", cfg,
                    "--control-socket", os.path.join(topo.tmpdir, "x.sock")], check=False,
                   timeout=10)
        assert r.returncode == 2, (kv, r.stderr)
        assert "telemetry." in r.stderr, r.stderr
