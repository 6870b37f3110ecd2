"""HBONE in node-proxy's data path, with real pods: per-pod SVIDs issued
from a node intermediate made by `ambit-certs`, outbound connections to a
mesh workload carried as HTTP/2 CONNECT streams over mutual TLS 1.3 to the
destination pod's 15008, and the server side connecting the app.  Each test
checks node-proxy's own counters (/stats "mesh"), so it cannot pass with
traffic that bypassed the tunnel."""

import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from topology import PYTHON, http_server, wait_port
from test_node_proxy import Proxy, enrol, _SINK_SERVER, _SEEDED_CLIENT, _MANY_ECHO_SERVER


def make_ca(topo, bins, lifetime=None):
    d = os.path.join(topo.tmpdir, "pki")
    n = os.path.join(topo.tmpdir, "n1-ca")
    os.makedirs(d, exist_ok=True)
    subprocess.run([str(bins / "ambit-certs"), "init-root", "--dir", d], check=True,
                   capture_output=True)
    subprocess.run([str(bins / "ambit-certs"), "issue-node", "--dir", d, "--node", "n1",
                    "--out", n], check=True, capture_output=True)
    return n


def write_conf(topo, ca_dir, lifetime="24h", extra=""):
    p = os.path.join(topo.tmpdir, "np-mesh.ini")
    with open(p, "w") as f:
        f.write(f"[mesh]\nca_dir = {ca_dir}\nsvid_lifetime = {lifetime}\n{extra}")
    return p


class MeshProxy(Proxy):
    def mesh(self):
        code, body = self.http("/stats")
        assert code == 200, body
        return json.loads(body)["mesh"]

    def add_sa(self, pod, sa):
        self.ctl("add", "--uid", f"uid-{pod.name}", "--namespace", "default", "--name", pod.name,
                 "--netns", pod.path, "--ip", pod.ip, "--service-account", sa)


@pytest.fixture
def hmesh(topo, bins):
    """Node n1 with pods a (sa "alpha") and b (sa "beta"), captured, enrolled,
    node-proxy with HBONE on (a CA dir from ambit-certs)."""
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    ca = make_ca(topo, bins)
    conf = write_conf(topo, ca)
    proxy = MeshProxy(topo, bins, n1, extra=["--config", conf])
    for p, sa in ((a, "alpha"), (b, "beta")):
        r = n1.run([str(bins / "ambit-redirect"), "install", "--netns", p.path])
        assert r.returncode == 0
        proxy.add_sa(p, sa)
    yield n1, a, b, proxy
    proxy.stop_clean()


def delta(m1, m0, *path):
    a, b = m1, m0
    for k in path:
        a, b = a[k], b[k]
    return a - b


def test_curl_over_hbone(hmesh, topo):
    n1, a, b, proxy = hmesh
    http_server(b, 8080)
    m0 = proxy.mesh()
    assert m0["enabled"] is True
    ids = {i["id"] for i in m0["identities"]}
    assert ids == {"spiffe://cluster.local/ns/default/sa/alpha",
                   "spiffe://cluster.local/ns/default/sa/beta"}
    for i in range(3):
        r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"])
        assert r.stdout == "b\n"
    # the app saw the request coming from the pod's own address (proxy in b)
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/peer"])
    assert r.stdout.startswith(b.ip + ":")
    m1 = proxy.mesh()
    assert delta(m1, m0, "outbound_hbone") == 4
    assert delta(m1, m0, "inbound_streams") == 4
    assert delta(m1, m0, "streams_opened", "client") == 4
    assert delta(m1, m0, "responses", "server", "200") == 4
    # pooled: one TLS connection per worker pool (two workers) for all four
    assert 1 <= delta(m1, m0, "handshakes", "client") <= 2
    assert delta(m1, m0, "handshakes", "server") == delta(m1, m0, "handshakes", "client")
    assert m1["bytes_into_tunnel"] > m0["bytes_into_tunnel"]
    # the server side logged the client's SPIFFE ID
    log = topo.log(proxy.proc)
    assert re.search(r"event=hbone_established role=server pod=uid-b "
                     r"local_id=spiffe://cluster.local/ns/default/sa/beta "
                     r"peer_id=spiffe://cluster.local/ns/default/sa/alpha", log), log[-2000:]
    # a non-mesh destination (the node's address) stays plain
    http_server(n1, 8081, body="node\n") if hasattr(n1, "popen") else None
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{n1.ip}:8081/"])
    assert r.stdout == "node\n"
    m2 = proxy.mesh()
    assert delta(m2, m1, "outbound_plain") >= 1
    assert delta(m2, m1, "outbound_hbone") == 0


def test_tls_on_the_wire(topo, bins):
    """A known marker sent pod a -> pod b: absent from a capture of the
    node's bridge ports with HBONE, present in a plaintext-mode control run."""
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    ca = make_ca(topo, bins)
    marker = "AMBIT-MARKER-" + hashlib.sha256(topo.tmpdir.encode()).hexdigest()[:24]
    http_server(b, 8080)
    results = {}
    for mode in ("hbone", "plain"):
        extra = ["--config", write_conf(topo, ca)] if mode == "hbone" else \
            ["--local-shortcut", "false"]
        proxy = MeshProxy(topo, bins, n1, extra=extra)
        for p in (a, b):
            if mode == "hbone":
                n1.run([str(bins / "ambit-redirect"), "install", "--netns", p.path])
            proxy.add(p)
        pcap = os.path.join(topo.tmpdir, f"{mode}.pcap")
        # "any": the pods' veth ports of the bridge (frames bridged between
        # two ports never reach the bridge device itself)
        cap = n1.popen(["tcpdump", "-i", "any", "--immediate-mode", "-U", "-w", pcap, "tcp"],
                       stderr=open(pcap + ".log", "w"))
        time.sleep(1.0)
        for _ in range(3):
            r = a.run(["curl", "-sS", "--max-time", "5", "-d", marker * 20,
                       f"http://{b.ip}:8080/"])
            assert marker in r.stdout  # POST echoes the body
        time.sleep(0.5)
        cap.send_signal(signal.SIGINT)
        cap.wait(timeout=5)
        with open(pcap, "rb") as f:
            data = f.read()
        s = proxy.stats()
        results[mode] = (marker.encode() in data, len(data), open(pcap + ".log").read())
        if mode == "hbone":
            m = proxy.mesh()
            assert m["outbound_hbone"] >= 3 and m["inbound_streams"] >= 3
        for p in (a, b):
            proxy.delete(p)
        proxy.stop_clean()
    # the capture saw the traffic both times (not an empty file)
    assert results["hbone"][1] > 4000 and results["plain"][1] > 4000, results
    assert results["hbone"][0] is False, "plaintext marker seen on the bridge with HBONE"
    assert results["plain"][0] is True, "control run: marker should be visible in plaintext"


def test_app_port_closed_resets_client(hmesh, topo):
    n1, a, b, proxy = hmesh
    m0 = proxy.mesh()
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:9/"], check=False)
    assert r.returncode != 0
    # curl: (56) Recv failure: Connection reset by peer
    assert "reset" in r.stderr.lower() or r.returncode in (52, 56), r.stderr
    m1 = proxy.mesh()
    assert delta(m1, m0, "app_connect_errors") == 1
    assert delta(m1, m0, "responses", "server", "503") == 1
    assert delta(m1, m0, "refused_by_peer") == 1


def test_bulk_checksum_and_iperf3(hmesh, topo):
    n1, a, b, proxy = hmesh
    b.popen([PYTHON, "-c", _SINK_SERVER, "7000"])
    wait_port(b, 7000, host=b.ip)
    m0 = proxy.mesh()
    r = a.run([PYTHON, "-c", _SEEDED_CLIENT, b.ip, "7000", "64"], timeout=60)
    sent, got = r.stdout.strip().splitlines()
    assert sent == got, r.stdout
    b.popen(["iperf3", "-s", "-p", "5201"])
    wait_port(b, 5201, host=b.ip)
    r = a.run(["iperf3", "-c", b.ip, "-p", "5201", "-t", "3", "-J"], timeout=30)
    j = json.loads(r.stdout)
    bps = j["end"]["sum_received"]["bits_per_second"]
    assert bps > 50e6, bps
    m1 = proxy.mesh()
    assert delta(m1, m0, "bytes_into_tunnel") > 64 << 20
    assert delta(m1, m0, "outbound_hbone") >= 3


def test_wrk_over_hbone(hmesh, topo):
    n1, a, b, proxy = hmesh
    http_server(b, 8080)
    m0 = proxy.mesh()
    r = a.run(["wrk", "-t", "2", "-c", "16", "-d", "3s", f"http://{b.ip}:8080/"], timeout=30)
    m = re.search(r"(\d+) requests in", r.stdout)
    assert m and int(m.group(1)) > 100, r.stdout
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    m1 = proxy.mesh()
    assert delta(m1, m0, "inbound_streams") >= 16
    assert delta(m1, m0, "bytes_out_of_tunnel") > 0
    # 16 connections, one tunnel per worker pool
    assert delta(m1, m0, "handshakes", "client") <= 2


_CONCURRENT_ECHO_CLIENT = r"""
import asyncio, hashlib, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def one(i, opened, go):
    r, w = await asyncio.open_connection(host, port)
    opened.append(i)
    await go.wait()            # all n are open at once before any byte moves
    data = os.urandom(size)
    async def send():
        w.write(data); await w.drain(); w.write_eof()
    t = asyncio.create_task(send())
    got = await r.readexactly(size)
    await t
    w.close()
    return hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
async def main():
    opened, go = [], asyncio.Event()
    tasks = [asyncio.create_task(one(i, opened, go)) for i in range(n)]
    while len(opened) < n:
        await asyncio.sleep(0.05)
    print("open", len(opened), flush=True)
    go.set()
    ok = await asyncio.gather(*tasks)
    print("intact", sum(ok), "of", n, flush=True)
asyncio.run(main())
"""


def test_many_streams_few_tunnels(hmesh, topo):
    """200 concurrent connections a -> b, 256 KiB each way per connection,
    checksummed: all ride a handful of TLS connections (the pool)."""
    n1, a, b, proxy = hmesh
    b.popen([PYTHON, "-c", _MANY_ECHO_SERVER, "7100"])
    wait_port(b, 7100, host=b.ip)
    m0 = proxy.mesh()
    r = a.run([PYTHON, "-c", _CONCURRENT_ECHO_CLIENT, b.ip, "7100", "200", str(256 << 10)],
              timeout=120)
    assert "open 200" in r.stdout and "intact 200 of 200" in r.stdout, r.stdout + r.stderr
    m1 = proxy.mesh()
    assert delta(m1, m0, "outbound_hbone") >= 200
    assert delta(m1, m0, "inbound_streams") >= 200
    # 200 streams, at most 100 per tunnel, one pool per worker (2 workers)
    hs = delta(m1, m0, "handshakes", "client")
    assert 2 <= hs <= 6, hs
    assert delta(m1, m0, "bytes_into_tunnel") >= 200 * (256 << 10) * 2


def test_rotation_during_transfer(topo, bins):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    ca = make_ca(topo, bins)
    proxy = MeshProxy(topo, bins, n1, extra=["--config", write_conf(topo, ca)])
    for p, sa in ((a, "alpha"), (b, "beta")):
        n1.run([str(bins / "ambit-redirect"), "install", "--netns", p.path])
        proxy.add_sa(p, sa)
    b.popen(["iperf3", "-s", "-p", "5201"])
    wait_port(b, 5201, host=b.ip)
    before = {i["id"]: i for i in proxy.mesh()["identities"]}
    ip = a.popen(["iperf3", "-c", b.ip, "-p", "5201", "-t", "6", "-J"],
                 stdout=subprocess.PIPE, text=True)
    time.sleep(2)
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = {i["id"]: i for i in proxy.mesh()["identities"]}
        if all(after[k]["generation"] > before[k]["generation"] for k in before):
            break
        time.sleep(0.1)
    alpha = "spiffe://cluster.local/ns/default/sa/alpha"
    assert after[alpha]["serial"] != before[alpha]["serial"]
    assert after[alpha]["sha256"] != before[alpha]["sha256"]
    out, _ = ip.communicate(timeout=30)
    assert ip.returncode == 0
    j = json.loads(out)
    assert j["end"]["sum_received"]["bytes"] > 10 << 20
    # a new connection after rotation presents the new certificate
    http_server(b, 8080)
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"])
    assert r.stdout == "b\n"
    log = topo.log(proxy.proc)
    fps = re.findall(r"role=server pod=uid-b local_id=\S+ peer_id=" + re.escape(alpha) +
                     r" peer_addr=\S+ peer_cert_sha256=([0-9a-f]{64})", log)
    assert fps[0] == before[alpha]["sha256"], (fps, before[alpha])
    assert fps[-1] == after[alpha]["sha256"], (fps, after[alpha])
    proxy.stop_clean()


def test_plaintext_config_unchanged(topo, bins):
    """Without [mesh] ca_dir: HBONE off, 15008 refused, outbound plain."""
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    proxy = MeshProxy(topo, bins, n1)
    for p in (a, b):
        enrol(topo, bins, n1, p, proxy)
    http_server(b, 8080)
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"])
    assert r.stdout == "b\n"
    assert proxy.mesh() == {"enabled": False}
    assert proxy.stats()["local_shortcuts"] >= 1
    proxy.stop_clean()


def test_bad_mesh_config_refused(topo, bins, tmp_path):
    conf = tmp_path / "bad.ini"
    conf.write_text("[mesh]\nca_dir = /nonexistent/ca\n")
    r = subprocess.run([str(bins / "ambit-node-proxy"), "run", "--config", str(conf),
                        "--control-socket", str(tmp_path / "s"), "--state-file",
                        str(tmp_path / "st"), "--admin-port", "15990",
                        "--readiness-port", "15991"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "mesh" in r.stderr and "/nonexistent/ca" in r.stderr
    conf.write_text("[mesh]\ntrust_domain = Bad Domain\n")
    r = subprocess.run([str(bins / "ambit-node-proxy"), "run", "--config", str(conf)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "bad.ini:2" in r.stderr


def _expired_svid(ca_dir, out):
    """spiffe://cluster.local/ns/default/sa/alpha, signed by the node
    intermediate in ca_dir, valid from 2 days ago to 1 day ago."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    with open(os.path.join(ca_dir, "node-cert.pem"), "rb") as f:
        node_pem = f.read()
    node = x509.load_pem_x509_certificate(node_pem)
    with open(os.path.join(ca_dir, "node-key.pem"), "rb") as f:
        node_key = serialization.load_pem_private_key(f.read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ambit")]))
            .issuer_name(node.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=2))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/alpha")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(node_key, hashes.SHA256()))
    os.makedirs(out)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with open(out + "/cert.pem", "wb") as f:
        f.write(pem)
    with open(out + "/chain.pem", "wb") as f:
        f.write(pem + node_pem)
    with open(out + "/key.pem", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return out


def s_client(node, args):
    """openssl s_client from node's netns; bytes out (a server that accepted
    may have sent HTTP/2 frames, which s_client echoes)."""
    return subprocess.run(["nsenter", f"--net={node.path}", "--", "openssl", "s_client"] + args,
                          input=b"", capture_output=True, timeout=10)


def _server_fail(m, reason):
    return m["handshake_failures"]["server"][reason]


def test_refused_handshakes_counted(hmesh, topo, bins):
    """Peers that are not mesh clients, straight to b's 15008 from the node
    netns (not captured): each refused with its own reason."""
    n1, a, b, proxy = hmesh
    http_server(b, 8080)
    m0 = proxy.mesh()
    # plaintext HTTP to 15008
    r = n1.run(["curl", "-sS", "--max-time", "3", f"http://{b.ip}:15008/"], check=False)
    assert r.returncode != 0
    # TLS 1.2 only
    r = s_client(n1, ["-connect", f"{b.ip}:15008", "-tls1_2", "-alpn", "h2"])
    assert r.returncode != 0
    # a client certificate from a foreign CA (another root, same trust domain)
    other = os.path.join(topo.tmpdir, "other-pki")
    os.makedirs(other)
    subprocess.run([str(bins / "ambit-certs"), "init-root", "--dir", other], check=True,
                   capture_output=True)
    subprocess.run([str(bins / "ambit-certs"), "issue-node", "--dir", other, "--node", "x",
                    "--out", other + "/node"], check=True, capture_output=True)
    subprocess.run([str(bins / "ambit-certs"), "issue-workload", "--dir", other + "/node",
                    "--namespace", "default", "--service-account", "alpha", "--out",
                    other + "/wl"], check=True, capture_output=True)
    r = s_client(n1, ["-connect", f"{b.ip}:15008", "-tls1_3", "-alpn", "h2",
                "-cert", other + "/wl/cert.pem", "-key", other + "/wl/key.pem",
                "-cert_chain", other + "/wl/chain.pem"])
    # a valid mesh SVID (same CA) but ALPN http/1.1; and no client certificate
    ca = os.path.join(topo.tmpdir, "n1-ca")
    wl = os.path.join(topo.tmpdir, "wl-ok")
    subprocess.run([str(bins / "ambit-certs"), "issue-workload", "--dir", ca, "--namespace",
                    "default", "--service-account", "alpha", "--out", wl], check=True,
                   capture_output=True)
    s_client(n1, ["-connect", f"{b.ip}:15008", "-tls1_3", "-alpn", "http/1.1",
            "-cert", wl + "/cert.pem", "-key", wl + "/key.pem", "-cert_chain", wl + "/chain.pem"])
    s_client(n1, ["-connect", f"{b.ip}:15008", "-tls1_3", "-alpn", "h2"])
    # an SVID from the right CA that expired yesterday
    exp = _expired_svid(ca, os.path.join(topo.tmpdir, "expired"))
    s_client(n1, ["-connect", f"{b.ip}:15008", "-tls1_3", "-alpn", "h2",
            "-cert", exp + "/cert.pem", "-key", exp + "/key.pem", "-cert_chain",
            exp + "/chain.pem"])
    # control: the same SVID with h2 is accepted (OpenSSL as the client)
    r = s_client(n1, ["-connect", f"{b.ip}:15008", "-tls1_3", "-alpn", "h2", "-cert",
                      wl + "/cert.pem", "-key", wl + "/key.pem", "-cert_chain", wl + "/chain.pem"])
    assert b"ALPN protocol: h2" in r.stdout, r.stdout[-1500:]
    time.sleep(0.5)
    m1 = proxy.mesh()
    assert _server_fail(m1, "alpn") - _server_fail(m0, "alpn") == 1
    assert _server_fail(m1, "expired") - _server_fail(m0, "expired") == 1
    assert _server_fail(m1, "no_peer_cert") - _server_fail(m0, "no_peer_cert") == 1
    assert _server_fail(m1, "not_tls") - _server_fail(m0, "not_tls") == 1
    assert _server_fail(m1, "protocol_version") - _server_fail(m0, "protocol_version") == 1
    assert _server_fail(m1, "unknown_ca") - _server_fail(m0, "unknown_ca") == 1
    assert delta(m1, m0, "handshakes", "server") == 1
    # the mesh path still works afterwards
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"])
    assert r.stdout == "b\n"


def test_pod_delete_drains_tunnels(hmesh, topo):
    """ctl del of the destination: open tunnelled connections keep working
    within the drain deadline (3 s in Proxy), then are reset; the pod's
    tunnels and streams are gone afterwards."""
    import socket
    n1, a, b, proxy = hmesh
    b.popen([PYTHON, "-c", _MANY_ECHO_SERVER, "7200"])
    wait_port(b, 7200, host=b.ip)
    s = a.exec(socket.create_connection, (b.ip, 7200), 5)
    s.settimeout(5)
    s.sendall(b"one")
    assert s.recv(16) == b"one"
    proxy.delete(b)
    s.sendall(b"two")
    assert s.recv(16) == b"two"  # still relayed while draining
    t0 = time.monotonic()
    try:
        got = s.recv(16)
    except ConnectionResetError:
        got = None
    waited = time.monotonic() - t0
    assert got in (None, b""), got
    assert 1.5 < waited < 5, waited
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = proxy.mesh()
        if m["streams_active"] == 0 and m["tunnels_active"] == 0:
            break
        time.sleep(0.1)
    assert m["streams_active"] == 0 and m["tunnels_active"] == 0, m
    assert [i["id"] for i in m["identities"]] == ["spiffe://cluster.local/ns/default/sa/alpha"]


_FAKE_HBONE_SERVER = r"""
import socket, ssl, sys
cert, key, chain, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(chain, key)
ctx.set_alpn_protocols(["h2"])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(16)
while True:
    c, _ = s.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True)
        t.recv(1024)
    except Exception as e:
        print("handshake:", e, flush=True)
    finally:
        c.close()
"""


def test_wrong_server_identity_refused(topo, bins):
    """A destination registered as service account "gamma" whose 15008 is
    answered by an impostor holding a valid mesh SVID of another account
    (same CA): the client refuses it (wrong_identity) and resets the app's
    connection; nothing reaches the impostor's tunnel."""
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    d = topo.add_pod(n1, "d")
    ca = make_ca(topo, bins)
    proxy = MeshProxy(topo, bins, n1, extra=["--config", write_conf(topo, ca)])
    n1.run([str(bins / "ambit-redirect"), "install", "--netns", a.path])
    proxy.add_sa(a, "alpha")
    # "c" is registered with d's address but e's netns (its listeners open
    # there): to node-proxy, d.ip is workload default/gamma, while d itself
    # is not enrolled and runs the impostor on 15008
    e = topo.add_pod(n1, "e")
    proxy.ctl("add", "--uid", "uid-c", "--namespace", "default", "--name", "c", "--netns",
              e.path, "--ip", d.ip, "--service-account", "gamma")
    wl = os.path.join(topo.tmpdir, "evil")
    subprocess.run([str(bins / "ambit-certs"), "issue-workload", "--dir", ca, "--namespace",
                    "default", "--service-account", "evil", "--out", wl], check=True,
                   capture_output=True)
    d.popen([PYTHON, "-c", _FAKE_HBONE_SERVER, wl + "/cert.pem", wl + "/key.pem",
             wl + "/chain.pem", "15008"])
    wait_port(d, 15008, host=d.ip)
    m0 = proxy.mesh()
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{d.ip}:8080/"], check=False)
    assert r.returncode != 0
    m1 = proxy.mesh()
    assert delta(m1, m0, "handshake_failures", "client", "wrong_identity") == 1, m1
    assert delta(m1, m0, "outbound_hbone") == 1
    assert delta(m1, m0, "stream_resets") >= 1
    log = topo.log(proxy.proc)
    assert "event=hbone_handshake_failed role=client pod=uid-a" in log and \
        "reason=wrong_identity" in log, log[-2000:]


def test_idle_timeout_and_workload_counts(topo, bins):
    """[timeouts] idle applies to tunnelled connections too; /workloads
    counts them on both pods and /connections lists both ends while open."""
    import socket
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    ca = make_ca(topo, bins)
    proxy = MeshProxy(topo, bins, n1, extra=["--config", write_conf(topo, ca),
                                              "--idle-timeout", "2s"])
    for p, sa in ((a, "alpha"), (b, "beta")):
        n1.run([str(bins / "ambit-redirect"), "install", "--netns", p.path])
        proxy.add_sa(p, sa)
    b.popen([PYTHON, "-c", _MANY_ECHO_SERVER, "7300"])
    wait_port(b, 7300, host=b.ip)
    s = a.exec(socket.create_connection, (b.ip, 7300), 5)
    s.settimeout(8)
    s.sendall(b"hi")
    assert s.recv(16) == b"hi"
    conns = {w["uid"]: w["connections"] for w in proxy.json("/workloads")}
    assert conns["uid-a"] >= 1 and conns["uid-b"] >= 1, conns
    # /connections lists both ends of the tunnelled connection
    cs = proxy.json("/connections")["connections"]
    out = [c for c in cs if c["pod"] == "uid-a" and c["dst"] == f"{b.ip}:7300"]
    inn = [c for c in cs if c["pod"] == "uid-b" and c["kind"] == "hbone"]
    assert len(out) == 1 and out[0]["kind"] == "outbound" and out[0]["state"] == "open", cs
    assert out[0]["src"].startswith(a.ip + ":") and out[0]["bytes_down_up"] == 2, cs
    assert len(inn) == 1 and inn[0]["dst"] == f"{b.ip}:7300", cs
    assert inn[0]["src"].startswith(a.ip + ":") and inn[0]["bytes_up_down"] == 2, cs
    t0 = time.monotonic()
    try:
        got = s.recv(16)
    except ConnectionResetError:
        got = None
    assert got in (None, b"")
    assert 1.5 < time.monotonic() - t0 < 5
    assert proxy.stats()["idle_timeouts"] >= 1
    proxy.stop_clean()
