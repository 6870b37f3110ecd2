"""Authorization policy enforced by ambit-node-proxy (node-proxy/authz.c,
docs/policy.md "Enforcement in node-proxy"): real pods enrolled with
namespace and labels, node-proxy started with [policy] policies_dir, and
policy files written, edited and broken while it runs.  Plaintext
connections carry no identity, so the rules here tell clients apart by
source IP block and port; STRICT refuses them all.  Each test checks
node-proxy's own /stats "authz" counters, so a refusal that did not come
from the policy (a closed port, a dead server) cannot pass for one."""

import json
import os
import re
import subprocess
import time

import pytest

from test_hbone_mesh import make_ca
from test_node_proxy import MODES, Proxy
from topology import PYTHON, http_server, tcp_echo_server

BACKEND_ALLOW = """
[policy backend-allow]
namespace = shop
selector = app=backend
action = ALLOW

[rule backend-allow]
ip_blocks = {frontend}/32
ports = 8080
"""

SHOP_DENY_FRONTEND = """
[policy shop-deny-frontend]
namespace = shop
action = DENY

[rule shop-deny-frontend]
ip_blocks = {frontend}
"""

SHOP_STRICT = """
[peer_authentication shop-strict]
namespace = shop
mode = STRICT
"""

BROKEN = """
[policy oops]
namespace = shop
action = allow
"""

# connects, checks one echo, prints "open", then reports how it ended
_LONG_CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"ping\n")
assert s.recv(100) == b"ping\n"
print("open", flush=True)
s.settimeout(60)
try:
    d = s.recv(100)
    print("eof" if not d else "data", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
except socket.timeout:
    print("timeout", flush=True)
"""


class PolicyProxy(Proxy):
    """node-proxy with a policies directory of its own (files written by
    the test) and helpers for the "authz" object of /stats."""

    def __init__(self, topo, bins, node, files, extra=(), conf_extra=""):
        self.pdir = os.path.join(topo.tmpdir, "policies.d")
        os.makedirs(self.pdir, exist_ok=True)
        for name, text in files.items():
            self.write(name, text)
        conf = os.path.join(topo.tmpdir, "np-policy.ini")
        with open(conf, "w") as f:
            f.write(f"[policy]\npolicies_dir = {self.pdir}\n{conf_extra}")
        super().__init__(topo, bins, node, extra=["--config", conf] + list(extra))

    def write(self, name, text):
        # written aside and renamed in: the reload never sees half a file
        tmp = os.path.join(self.pdir, "." + name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.pdir, name))

    def authz(self):
        return self.json("/stats")["authz"]

    def wait_generation(self, gen, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            a = self.authz()
            if a["generation"] >= gen:
                return a
            time.sleep(0.05)
        raise TimeoutError(f"policy generation {gen} not reached: {self.authz()}")

    def enrol(self, pod, ns, labels):
        r = self.node.run([str(self.bins / "ambit-redirect"), "install", "--netns", pod.path])
        assert r.returncode == 0
        args = ["add", "--uid", f"uid-{pod.name}", "--namespace", ns, "--name", pod.name,
                "--service-account", pod.name, "--netns", pod.path, "--ip", pod.ip]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        self.ctl(*args)


# curl's exit for a connection reset right after the handshake: 7 when the
# RST arrives before it saw the connect complete, 55 when it lands between
# the connect and curl's getpeername() (ENOTCONN), else 56 (recv) or 52
REFUSED = (7, 52, 55, 56)


def curl(pod, ip, port):
    return pod.run(["curl", "-sS", "--max-time", "5", f"http://{ip}:{port}/"], check=False)


@pytest.fixture
def shop(topo, bins, request):
    """Node n1 with frontend and intruder (shop) and backend (shop,
    app=backend, HTTP on 8080 and 9090); node-proxy with BACKEND_ALLOW.
    Parametrized (indirect) with "shortcut" or "two-hop"."""
    n1 = topo.add_node("n1")
    fe = topo.add_pod(n1, "frontend")
    intr = topo.add_pod(n1, "intruder")
    be = topo.add_pod(n1, "backend")
    mode = getattr(request, "param", "shortcut")
    proxy = PolicyProxy(topo, bins, n1, {"10-backend.ini": BACKEND_ALLOW.format(frontend=fe.ip)},
                        extra=MODES[mode])
    proxy.enrol(fe, "shop", {"app": "frontend"})
    proxy.enrol(intr, "shop", {"app": "intruder"})
    proxy.enrol(be, "shop", {"app": "backend"})
    http_server(be, 8080)
    http_server(be, 9090)
    yield n1, fe, intr, be, proxy
    proxy.stop_clean()


BOTH = pytest.mark.parametrize("shop", list(MODES), indirect=True)


@BOTH
def test_allow_deny_port_scope(shop):
    n1, fe, intr, be, proxy = shop
    a0 = proxy.authz()
    assert a0["enabled"] and a0["policies"] == 1
    r = curl(fe, be.ip, 8080)
    assert r.returncode == 0 and r.stdout == "backend\n", r.stderr
    a1 = proxy.authz()
    assert a1["by_reason"]["allow_match"] == a0["by_reason"]["allow_match"] + 1
    # the intruder's client sees the refusal: reset, no answer
    r = curl(intr, be.ip, 8080)
    assert r.returncode in REFUSED, (r.returncode, r.stderr)
    a2 = proxy.authz()
    assert a2["by_reason"]["deny_no_match"] == a1["by_reason"]["deny_no_match"] + 1
    # the rule is port-scoped: frontend to 9090 is not allowed
    r = curl(fe, be.ip, 9090)
    assert r.returncode in REFUSED, (r.returncode, r.stderr)
    a3 = proxy.authz()
    assert a3["denied"] == a2["denied"] + 1
    # the decisions in Prometheus form, by action and deciding policy
    code, body = proxy.http("/metrics", port=15020)
    assert code == 200, body
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in body.splitlines() if line.startswith("ambit_policy_decisions_total{")}
    assert samples.get('ambit_policy_decisions_total{action="ALLOW",policy="shop/backend-allow"}') \
        == 1, samples
    assert samples.get('ambit_policy_decisions_total{action="DENY",policy="none"}') == 2, samples
    # a workload no ALLOW policy selects stays open (allow_no_policy)
    http_server(intr, 8080)
    r = curl(be, intr.ip, 8080)
    assert r.returncode == 0 and r.stdout == "intruder\n", r.stderr
    assert proxy.authz()["by_reason"]["allow_no_policy"] > a3["by_reason"]["allow_no_policy"]


def test_namespace_deny_beats_allow_and_strict(shop):
    n1, fe, intr, be, proxy = shop
    gen = proxy.authz()["generation"]
    assert curl(fe, be.ip, 8080).returncode == 0
    # a namespace-wide DENY matching frontend wins over the ALLOW that names it
    proxy.write("20-deny.ini", SHOP_DENY_FRONTEND.format(frontend=fe.ip))
    a = proxy.wait_generation(gen + 1)
    r = curl(fe, be.ip, 8080)
    assert r.returncode in REFUSED, (r.returncode, r.stderr)
    a1 = proxy.authz()
    assert a1["by_reason"]["deny_match"] == a["by_reason"]["deny_match"] + 1
    # removed again: allowed again
    os.unlink(os.path.join(proxy.pdir, "20-deny.ini"))
    proxy.wait_generation(gen + 2)
    assert curl(fe, be.ip, 8080).returncode == 0
    # STRICT in shop: plaintext is refused even where an ALLOW matches,
    # and to workloads without any ALLOW policy
    http_server(intr, 8080)
    assert curl(be, intr.ip, 8080).returncode == 0
    proxy.write("00-strict.ini", SHOP_STRICT)
    a2 = proxy.wait_generation(gen + 3)
    for client, server in ((fe, be), (be, intr)):
        r = curl(client, server.ip, 8080)
        assert r.returncode in REFUSED, (r.returncode, r.stderr)
    a3 = proxy.authz()
    assert a3["by_reason"]["deny_plaintext"] == a2["by_reason"]["deny_plaintext"] + 2


@BOTH
def test_edit_closes_open_connection(shop, topo):
    n1, fe, intr, be, proxy = shop
    tcp_echo_server(be, 8081)
    tcp_echo_server(be, 8082)
    rule = BACKEND_ALLOW.format(frontend=fe.ip)
    proxy.write("10-backend.ini", rule.replace("ports = 8080", "ports = 8080, 8081, 8082"))
    gen = proxy.wait_generation(2)["generation"]
    conns = {}
    for port in (8081, 8082):
        conns[port] = fe.popen([PYTHON, "-c", _LONG_CLIENT, be.ip, str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert conns[port].stdout.readline().strip() == "open"
    revoked0 = proxy.authz()["revoked"]
    # 8081 leaves the rule: its open connection is now denied, 8082's is not
    t0 = time.monotonic()
    proxy.write("10-backend.ini", rule.replace("ports = 8080", "ports = 8080, 8082"))
    out = conns[8081].stdout.readline().strip()
    dt = time.monotonic() - t0
    assert out == "reset", out
    assert dt < 2.0, dt
    a = proxy.authz()
    assert a["generation"] == gen + 1
    assert a["revoked"] == revoked0 + 1
    time.sleep(0.3)
    assert conns[8082].poll() is None, conns[8082].stdout.read()
    conns[8082].kill()
    conns[8081].wait(timeout=5)


def test_broken_file_keeps_enforcement(shop):
    n1, fe, intr, be, proxy = shop
    a0 = proxy.authz()
    proxy.write("30-broken.ini", BROKEN)
    deadline = time.monotonic() + 5
    while proxy.authz()["policy_reloads_failed"] == a0["policy_reloads_failed"]:
        assert time.monotonic() < deadline, proxy.authz()
        time.sleep(0.05)
    a1 = proxy.authz()
    assert a1["generation"] == a0["generation"]
    assert "30-broken.ini:4" in a1["last_error"], a1["last_error"]
    assert "30-broken.ini:4" in proxy.topo.log(proxy.proc)
    # the set in force is unchanged: frontend allowed, intruder denied
    assert curl(fe, be.ip, 8080).returncode == 0
    assert curl(intr, be.ip, 8080).returncode in REFUSED
    a2 = proxy.authz()
    assert a2["allowed"] == a1["allowed"] + 1 and a2["denied"] == a1["denied"] + 1
    # fixing the file loads it
    proxy.write("30-broken.ini", BROKEN.replace("allow", "ALLOW"))
    proxy.wait_generation(a0["generation"] + 1)


def test_startup_refuses_broken_dir(topo, bins):
    n1 = topo.add_node("n1")
    pdir = os.path.join(topo.tmpdir, "bad.d")
    os.makedirs(pdir)
    with open(os.path.join(pdir, "10-x.ini"), "w") as f:
        f.write(BROKEN)
    conf = os.path.join(topo.tmpdir, "np-bad.ini")
    with open(conf, "w") as f:
        f.write(f"[policy]\npolicies_dir = {pdir}\n")
    r = n1.run([str(bins / "ambit-node-proxy"), "run", "--config", conf, "--control-socket",
                os.path.join(topo.tmpdir, "np.sock"), "--state-file",
                os.path.join(topo.tmpdir, "np.state")], check=False, timeout=10)
    assert r.returncode == 1
    assert "10-x.ini:4" in r.stderr + r.stdout
    # a policies_dir that is not absolute is a config error
    with open(conf, "w") as f:
        f.write("[policy]\npolicies_dir = relative/dir\n")
    r = n1.run([str(bins / "ambit-node-proxy"), "run", "--config", conf], check=False,
               timeout=10)
    assert r.returncode != 0 and "absolute" in r.stderr + r.stdout


def test_check_config_exit_codes(bins, tmp_path):
    good = tmp_path / "good"
    bad = tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "10.ini").write_text(BACKEND_ALLOW.format(frontend="10.1.2.3") + SHOP_STRICT)
    (bad / "10.ini").write_text(BROKEN)

    def cc(*args):
        return subprocess.run([str(bins / "ambit-node-proxy"), "check-config", *args],
                              capture_output=True, text=True, timeout=30)

    r = cc("-p", str(good))
    assert r.returncode == 0 and "ok, 2 policies" in r.stdout, r.stdout + r.stderr
    r = cc("-p", str(bad))
    assert r.returncode == 1 and "10.ini:4" in r.stderr, r.stdout + r.stderr
    r = cc("--no-such-flag")
    assert r.returncode == 2


HBONE_ALLOW = """
[policy backend-allow]
namespace = shop
selector = app=backend

[rule backend-allow]
principals = spiffe://cluster.local/ns/shop/sa/frontend
ports = 8080, 8081
"""


def _revoke_port_8081(fe, be, proxy, revoked0):
    """A long connection fe -> be:8081 is open; HBONE_ALLOW loses port 8081:
    the connection is closed within 2 s and counted as revoked."""
    cut = fe.popen([PYTHON, "-c", _LONG_CLIENT, be.ip, "8081"], stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True)
    assert cut.stdout.readline().strip() == "open"
    t0 = time.monotonic()
    proxy.write("10-backend.ini", HBONE_ALLOW.replace("ports = 8080, 8081", "ports = 8080"))
    out = cut.stdout.readline().strip()
    dt = time.monotonic() - t0
    assert out in ("reset", "eof"), out
    assert dt < 2.0, dt
    assert proxy.authz()["revoked"] == revoked0 + 1
    cut.wait(timeout=5)


def test_hbone_principals(topo, bins):
    """With HBONE on, pod to pod rides mTLS: the backend's policy sees the
    client's SPIFFE id.  The allowed identity passes, another one gets 401
    (its client a reset), and an edit revokes an open stream."""
    n1 = topo.add_node("n1")
    fe = topo.add_pod(n1, "frontend")
    intr = topo.add_pod(n1, "intruder")
    be = topo.add_pod(n1, "backend")
    legacy = topo.add_pod(n1, "legacy")  # never enrolled: outside the mesh
    ca = make_ca(topo, bins)
    proxy = PolicyProxy(topo, bins, n1, {"10-backend.ini": HBONE_ALLOW},
                        conf_extra=f"[mesh]\nca_dir = {ca}\n")
    try:
        proxy.enrol(fe, "shop", {"app": "frontend"})
        proxy.enrol(intr, "shop", {"app": "intruder"})
        proxy.enrol(be, "shop", {"app": "backend"})
        http_server(be, 8080)
        tcp_echo_server(be, 8081)
        s0 = proxy.json("/stats")
        r = curl(fe, be.ip, 8080)
        assert r.returncode == 0 and r.stdout == "backend\n", r.stderr
        r = curl(intr, be.ip, 8080)
        assert r.returncode in REFUSED, (r.returncode, r.stderr)
        s1 = proxy.json("/stats")
        a0, a1, m0, m1 = s0["authz"], s1["authz"], s0["mesh"], s1["mesh"]
        assert a1["hbone_allowed"] - a0["hbone_allowed"] == 1
        assert a1["hbone_denied"] - a0["hbone_denied"] == 1
        assert m1["responses"]["server"]["401"] - m0["responses"]["server"]["401"] == 1
        assert m1["responses"]["server"]["200"] - m0["responses"]["server"]["200"] == 1
        assert "principal=spiffe://cluster.local/ns/shop/sa/intruder" in topo.log(proxy.proc)
        # an open HBONE stream is revoked when its port leaves the rule
        _revoke_port_8081(fe, be, proxy, a1["revoked"])
        # the allowed path still works after the change
        assert curl(fe, be.ip, 8080).returncode == 0
        # STRICT in shop: a pod outside the mesh (not enrolled) reaches the
        # backend in plaintext and is refused; the mesh client rides mTLS
        gen = proxy.authz()["generation"]
        proxy.write("00-strict.ini", SHOP_STRICT)
        a2 = proxy.wait_generation(gen + 1)
        r = curl(legacy, be.ip, 8080)
        assert r.returncode in REFUSED, (r.returncode, r.stderr)
        assert curl(fe, be.ip, 8080).returncode == 0
        a3 = proxy.authz()
        assert a3["by_reason"]["deny_plaintext"] == a2["by_reason"]["deny_plaintext"] + 1
        assert a3["hbone_allowed"] == a2["hbone_allowed"] + 1
    finally:
        proxy.stop_clean()


SERVICE = """
[service backend]
namespace = shop
vips = 10.96.0.10
ports = 80:8080
selector = app=backend
max_connections = {maxc}
max_pending = {maxc}
"""

# N requests, one new TCP connection each; prints the count per answer
_SPREAD_CLIENT = r"""
import collections, http.client, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = collections.Counter()
for i in range(n):
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/")
    seen[c.getresponse().read().decode().strip()] += 1
    c.close()
for k, v in sorted(seen.items()):
    print(k, v)
"""


def test_service_vip_balanced(topo, bins):
    """A VIP balanced over 3 endpoints (pods enrolled here): each gets a
    fair share of 3,000 requests (a new connection each); a circuit-breaker limit refuses the
    excess with a reset and counts it."""
    n1 = topo.add_node("n1")
    client = topo.add_pod(n1, "client")
    eps = [topo.add_pod(n1, f"be{i}") for i in range(3)]
    sdir = os.path.join(topo.tmpdir, "services.d")
    os.makedirs(sdir)
    with open(os.path.join(sdir, "10-backend.ini"), "w") as f:
        f.write(SERVICE.format(maxc=100))
    proxy = PolicyProxy(topo, bins, n1, {}, conf_extra=f"services_dir = {sdir}\n")
    try:
        proxy.enrol(client, "shop", {"app": "client"})
        for p in eps:
            proxy.enrol(p, "shop", {"app": "backend"})
            http_server(p, 8080)
            tcp_echo_server(p, 8081)
        r = client.run([PYTHON, "-c", _SPREAD_CLIENT, "10.96.0.10", "80", "3000"], timeout=300,
                       check=False)
        assert r.returncode == 0, r.stderr[-500:] + topo.log(proxy.proc)[-3000:]
        counts = dict(line.split() for line in r.stdout.split("\n") if line)
        print("spread over 3000 connections:", counts)
        assert sorted(counts) == ["be0", "be1", "be2"], r.stdout
        assert sum(int(v) for v in counts.values()) == 3000, counts
        for k, v in counts.items():
            assert int(v) >= 800, counts  # 1000 expected each
        s = proxy.authz()["services"]
        assert s["routed"] >= 3000
        # the metrics name the service the clients addressed (and the pod)
        code, text = proxy.http("/metrics", port=15020)
        assert code == 200, text
        for i in range(3):
            assert re.search(r'istio_tcp_connections_opened_total\{[^}]*reporter="source"[^}]*'
                             r'destination_service="backend\.shop\.svc\.cluster\.local"[^}]*'
                             rf'destination_workload="be{i}"', text), \
                [ln for ln in text.split("\n") if "connections_opened" in ln]
        assert s["by_service"]["shop/backend"]["endpoints"] == 3
        assert s["by_service"]["shop/backend"]["active_connections"] == 0
        # circuit breaker: max_connections = 2 (a reload keeps the state);
        # two held open, the third refused
        gen = proxy.authz()["generation"]
        with open(os.path.join(sdir, ".tmp"), "w") as f:
            f.write(SERVICE.format(maxc=2))
        os.rename(os.path.join(sdir, ".tmp"), os.path.join(sdir, "10-backend.ini"))
        proxy.wait_generation(gen + 1)
        held = []
        for _ in range(2):
            p = client.popen([PYTHON, "-c", _LONG_CLIENT.replace("ping", "GET / HTTP/1.0"),
                              "10.96.0.10", "80"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
            held.append(p)
        deadline = time.monotonic() + 5
        while proxy.authz()["services"]["by_service"]["shop/backend"]["active_connections"] < 2:
            assert time.monotonic() < deadline, proxy.authz()["services"]
            time.sleep(0.05)
        r = curl(client, "10.96.0.10", 80)
        assert r.returncode in REFUSED, (r.returncode, r.stderr)
        s2 = proxy.authz()["services"]
        assert s2["refused"] == s["refused"] + 1
        assert s2["by_service"]["shop/backend"]["refused_connections"] >= 1
        for p in held:
            p.kill()
        # released on close: a new connection is served again
        deadline = time.monotonic() + 5
        while curl(client, "10.96.0.10", 80).returncode != 0:
            assert time.monotonic() < deadline, proxy.authz()["services"]
            time.sleep(0.1)
    finally:
        proxy.stop_clean()


def test_reload_under_load(topo, bins):
    """wrk on an allowed path (keep-alive, to a pod) and on a service VIP
    (a new connection per request) while policies and services are edited
    50 times: no failed request, nothing revoked, no descriptor left."""
    n1 = topo.add_node("n1")
    fe = topo.add_pod(n1, "frontend")
    eps = [topo.add_pod(n1, f"be{i}") for i in range(3)]
    sdir = os.path.join(topo.tmpdir, "services.d")
    os.makedirs(sdir)

    def write_service(maxc):
        with open(os.path.join(sdir, ".tmp"), "w") as f:
            f.write(SERVICE.format(maxc=maxc))
        os.rename(os.path.join(sdir, ".tmp"), os.path.join(sdir, "10-backend.ini"))

    write_service(1000)
    allow = BACKEND_ALLOW.format(frontend=fe.ip)
    legacy = SHOP_DENY_FRONTEND.format(frontend="10.200.0.0/16")
    proxy = PolicyProxy(topo, bins, n1, {"10-backend.ini": allow},
                        conf_extra=f"services_dir = {sdir}\n")
    try:
        proxy.enrol(fe, "shop", {"app": "frontend"})
        for p in eps:
            proxy.enrol(p, "shop", {"app": "backend"})
            http_server(p, 8080)
        fds0 = proxy.fds()
        a0 = proxy.authz()
        wrk_ka = fe.popen(["wrk", "-t1", "-c8", "-d8s", f"http://{eps[0].ip}:8080/"])
        # a new connection per request: any refused or reset one fails it
        vip = fe.popen([PYTHON, "-c", _SPREAD_CLIENT, "10.96.0.10", "80", "600"])
        for i in range(50):
            if i % 2:
                proxy.write("20-legacy.ini", legacy)
            else:
                with open(os.path.join(proxy.pdir, "20-legacy.ini"), "w") as f:
                    f.write("; nothing\n")
            write_service(1000 + i)
            time.sleep(0.12)
        wrk_ka.wait(timeout=30)
        assert vip.wait(timeout=60) == 0, topo.log(vip)
        a1 = proxy.authz()
        out = topo.log(wrk_ka)
        print(out, topo.log(vip))
        assert "Requests/sec" in out, out
        assert "Socket errors" not in out and "Non-2xx" not in out, out
        assert sum(int(line.split()[1]) for line in topo.log(vip).split("\n") if line) == 600
        assert a1["generation"] - a0["generation"] >= 10, (a0, a1)
        assert a1["policy_reloads_failed"] == a0["policy_reloads_failed"]
        assert a1["revoked"] == a0["revoked"]
        assert a1["denied"] == a0["denied"]
        assert a1["services"]["routed"] - a0["services"]["routed"] == 600
        assert a1["services"]["refused"] == 0
        # every connection closed: no claim held, no descriptor left
        deadline = time.monotonic() + 5
        while proxy.fds() > fds0 or \
                a1["services"]["by_service"]["shop/backend"]["active_connections"]:
            assert time.monotonic() < deadline, (proxy.fds(), fds0, a1["services"])
            time.sleep(0.1)
            a1 = proxy.authz()
    finally:
        proxy.stop_clean()


def test_service_retry_eject_readmit(topo, bins):
    """One endpoint's app is killed: its failed connects are retried on
    another endpoint (no client error), it is ejected after 2 failures in
    a row, and re-admitted once it is back and the ejection expired."""
    n1 = topo.add_node("n1")
    client = topo.add_pod(n1, "client")
    eps = [topo.add_pod(n1, f"be{i}") for i in range(3)]
    sdir = os.path.join(topo.tmpdir, "services.d")
    os.makedirs(sdir)
    with open(os.path.join(sdir, "10-backend.ini"), "w") as f:
        f.write(SERVICE.format(maxc=100) + "retries = 2\noutlier_consecutive_failures = 2\n"
                "outlier_ejection_ms = 1000\n")
    # same-node shortcut (default): the connect goes to the endpoint's app
    # itself, so a dead app is a failed connect here (two-hop, it would be
    # the endpoint's own 15006 accepting and then resetting)
    proxy = PolicyProxy(topo, bins, n1, {}, conf_extra=f"services_dir = {sdir}\n")
    try:
        proxy.enrol(client, "shop", {"app": "client"})
        servers = []
        for p in eps:
            proxy.enrol(p, "shop", {"app": "backend"})
            servers.append(http_server(p, 8080))
        topo.stop(servers[2])
        s0 = proxy.authz()["services"]
        r = client.run([PYTHON, "-c", _SPREAD_CLIENT, "10.96.0.10", "80", "150"], timeout=120,
                       check=False)
        assert r.returncode == 0, r.stderr[-500:]
        counts = dict(line.split() for line in r.stdout.split("\n") if line)
        print("with be2 down:", counts)
        assert sorted(counts) == ["be0", "be1"], counts
        s1 = proxy.authz()["services"]
        assert s1["retries"] > s0["retries"]
        assert s1["connect_failed"] > s0["connect_failed"]
        assert s1["by_service"]["shop/backend"]["ejections"] >= 1
        # back, and the ejection (1 s) is over: be2 gets traffic again
        http_server(eps[2], 8080)
        time.sleep(1.2)
        r = client.run([PYTHON, "-c", _SPREAD_CLIENT, "10.96.0.10", "80", "150"], timeout=120)
        counts = dict(line.split() for line in r.stdout.split("\n") if line)
        print("be2 back:", counts)
        assert int(counts.get("be2", 0)) >= 20, counts
    finally:
        proxy.stop_clean()


def test_service_health_check(topo, bins):
    """health_check = tcp:8081: the endpoint whose check port is closed is
    marked unhealthy and gets no traffic although its app port answers;
    once its check passes it is balanced to again."""
    n1 = topo.add_node("n1")
    client = topo.add_pod(n1, "client")
    eps = [topo.add_pod(n1, f"be{i}") for i in range(3)]
    sdir = os.path.join(topo.tmpdir, "services.d")
    os.makedirs(sdir)
    with open(os.path.join(sdir, "10-backend.ini"), "w") as f:
        f.write(SERVICE.format(maxc=100) + "health_check = tcp:8081\nhealth_interval_ms = 200\n")
    proxy = PolicyProxy(topo, bins, n1, {}, conf_extra=f"services_dir = {sdir}\n")
    try:
        proxy.enrol(client, "shop", {"app": "client"})
        for i, p in enumerate(eps):
            proxy.enrol(p, "shop", {"app": "backend"})
            http_server(p, 8080)
            if i < 2:
                tcp_echo_server(p, 8081)
        deadline = time.monotonic() + 5
        while proxy.authz()["services"]["by_service"]["shop/backend"]["unhealthy_now"] != 1:
            assert time.monotonic() < deadline, proxy.authz()["services"]
            time.sleep(0.1)
        r = client.run([PYTHON, "-c", _SPREAD_CLIENT, "10.96.0.10", "80", "100"], timeout=120)
        counts = dict(line.split() for line in r.stdout.split("\n") if line)
        print("be2 unhealthy:", counts)
        assert sorted(counts) == ["be0", "be1"], counts
        assert proxy.authz()["services"]["health_checks"]["failed"] >= 2
        tcp_echo_server(eps[2], 8081)
        deadline = time.monotonic() + 5
        while proxy.authz()["services"]["by_service"]["shop/backend"]["unhealthy_now"] != 0:
            assert time.monotonic() < deadline, proxy.authz()["services"]
            time.sleep(0.1)
        r = client.run([PYTHON, "-c", _SPREAD_CLIENT, "10.96.0.10", "80", "150"], timeout=120)
        counts = dict(line.split() for line in r.stdout.split("\n") if line)
        print("be2 healthy:", counts)
        assert int(counts.get("be2", 0)) >= 20, counts
    finally:
        proxy.stop_clean()


def _service_setup(topo, bins, n_eps, service_extra="", mesh_extra=None):
    """Node n1 with a client and n_eps endpoints of shop/backend (HTTP on
    8080), node-proxy with SERVICE + service_extra; HBONE on (plus
    mesh_extra in [mesh]) unless mesh_extra is None.  The access log goes
    to proxy.alog."""
    n1 = topo.add_node("n1")
    client = topo.add_pod(n1, "client")
    eps = [topo.add_pod(n1, f"be{i}") for i in range(n_eps)]
    sdir = os.path.join(topo.tmpdir, "services.d")
    os.makedirs(sdir)
    with open(os.path.join(sdir, "10-backend.ini"), "w") as f:
        f.write(SERVICE.format(maxc=100) + service_extra)
    alog = os.path.join(topo.tmpdir, "access.log")
    conf = f"services_dir = {sdir}\n"
    if mesh_extra is not None:
        conf += f"[mesh]\nca_dir = {make_ca(topo, bins)}\n{mesh_extra}"
    proxy = PolicyProxy(topo, bins, n1, {}, conf_extra=conf +
                        f"[telemetry]\naccess_log = {alog}\n")
    proxy.alog = alog
    proxy.enrol(client, "shop", {"app": "client"})
    servers = []
    for p in eps:
        proxy.enrol(p, "shop", {"app": "backend"})
        servers.append(http_server(p, 8080))
    return client, eps, servers, proxy


def _service_mesh(topo, bins, n_eps, service_extra="", mesh_extra=""):
    return _service_setup(topo, bins, n_eps, service_extra, mesh_extra)


def _access_log(proxy, want, timeout=5):
    """The access log's records once at least @want are written."""
    deadline = time.monotonic() + timeout
    while True:
        with open(proxy.alog) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        if len(recs) >= want or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def _spread(client, n):
    r = client.run([PYTHON, "-c", _SPREAD_CLIENT, "10.96.0.10", "80", str(n)], timeout=180,
                   check=False)
    assert r.returncode == 0, r.stderr[-800:]
    return {k: int(v) for k, v in (line.split() for line in r.stdout.split("\n") if line)}


def test_service_vip_over_hbone(topo, bins):
    """With HBONE on, a VIP's chosen endpoint is a mesh workload: every
    balanced connection is a CONNECT stream to that endpoint, whose tunnel
    proves the endpoint's own SPIFFE ID; nothing goes in plaintext."""
    client, eps, servers, proxy = _service_mesh(topo, bins, 3)
    try:
        s0 = proxy.json("/stats")
        counts = _spread(client, 150)
        print("over HBONE:", counts)
        assert sorted(counts) == ["be0", "be1", "be2"], counts
        assert min(counts.values()) >= 20, counts
        s1 = proxy.json("/stats")
        m0, m1 = s0["mesh"], s1["mesh"]
        assert m1["outbound_hbone"] - m0["outbound_hbone"] == 150, m1
        assert m1["outbound_plain"] == m0["outbound_plain"], m1
        assert m1["responses"]["server"]["200"] - m0["responses"]["server"]["200"] == 150
        assert s1["authz"]["services"]["routed"] - s0["authz"]["services"]["routed"] == 150
        assert s1["authz"]["hbone_allowed"] - s0["authz"]["hbone_allowed"] == 150
        log = topo.log(proxy.proc)
        for i in range(3):
            # the client side of a tunnel to be<i> verified be<i>'s identity
            assert re.search(r"event=hbone_established role=client pod=uid-client \S+ "
                             rf"peer_id=spiffe://cluster\.local/ns/shop/sa/be{i} ", log), log[-3000:]
        # the source reporter names the endpoint's principal, not the VIP's,
        # and the service the client addressed
        code, text = proxy.http("/metrics", port=15020)
        assert code == 200, text
        for i in range(3):
            assert re.search(r'istio_tcp_connections_opened_total\{[^}]*reporter="source"[^}]*'
                             r'destination_service="backend\.shop\.svc\.cluster\.local",'
                             r'destination_service_namespace="shop",'
                             r'destination_service_name="backend"[^}]*'
                             r'destination_principal="spiffe://cluster\.local/ns/shop/sa/'
                             rf'be{i}"', text), \
                [ln for ln in text.split("\n") if "connections_opened" in ln]
        # both hops' records: 150 outbound naming the service, 150 inbound
        recs = _access_log(proxy, 300)
        out = [r for r in recs if r["direction"] == "outbound"]
        assert len(out) == 150, len(out)
        assert all(r["dst_service"] == "backend.shop.svc.cluster.local" and
                   r["connection_security_policy"] == "mutual_tls" and
                   r["dst_identity"].startswith("spiffe://cluster.local/ns/shop/sa/be")
                   for r in out), out[:3]
    finally:
        proxy.stop_clean()


def test_service_hbone_retry_eject_readmit(topo, bins):
    """HBONE: an endpoint whose app is dead answers the CONNECT with 503;
    the client's stream is sent to another endpoint (no client error), the
    dead one is ejected after 2 failures and re-admitted once it is back."""
    client, eps, servers, proxy = _service_mesh(
        topo, bins, 3, "retries = 2\noutlier_consecutive_failures = 2\n"
                       "outlier_ejection_ms = 1000\nretry_backoff_ms = 0\n")
    try:
        topo.stop(servers[2])
        s0 = proxy.json("/stats")
        counts = _spread(client, 150)
        print("be2 down:", counts)
        assert sorted(counts) == ["be0", "be1"], counts
        s1 = proxy.json("/stats")
        sv0, sv1 = s0["authz"]["services"], s1["authz"]["services"]
        assert sv1["retries"] > sv0["retries"], sv1
        assert sv1["connect_failed"] > sv0["connect_failed"], sv1
        assert sv1["by_service"]["shop/backend"]["ejections"] >= 1, sv1
        assert s1["mesh"]["stream_retries"] > s0["mesh"]["stream_retries"]
        assert s1["mesh"]["responses"]["server"]["503"] > s0["mesh"]["responses"]["server"]["503"]
        # each failed attempt has its own record (UF, to be2); no client
        # connection failed for good (no URX)
        recs = [r for r in _access_log(proxy, 300) if r["direction"] == "outbound"]
        uf = [r for r in recs if r["response_flags"] != "-"]
        assert uf and all(r["response_flags"] == "UF" and r["dst_workload"] == "be2"
                          for r in uf), uf[:3]
        assert len(recs) - len(uf) == 150, (len(recs), len(uf))
        http_server(eps[2], 8080)
        time.sleep(1.2)
        counts = _spread(client, 150)
        print("be2 back:", counts)
        assert counts.get("be2", 0) >= 20, counts
        # every stream and claim is gone once the clients are
        deadline = time.monotonic() + 5
        while True:
            st = proxy.json("/stats")
            if st["mesh"]["streams_active"] == 0 and \
                    st["authz"]["services"]["by_service"]["shop/backend"]["active_connections"] == 0:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
    finally:
        proxy.stop_clean()


_TIMED_CLIENT = r"""
import http.client, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, port, timeout=20)
    c.request("GET", "/")
    body = c.getresponse().read().decode().strip()
    c.close()
    print(body, "%.3f" % (time.monotonic() - t0), flush=True)
"""


@pytest.mark.parametrize("hbone", [False, True, "fast_path"],
                         ids=["plaintext", "hbone", "mesh-fast-path"])
def test_service_retry_backoff(topo, bins, hbone):
    """retry_backoff_ms: a retried connection waits before its next
    attempt, so every retried one takes at least the backoff (a lower
    bound only: load can make it slower, never faster)."""
    extra = "retries = 1\nretry_backoff_ms = 400\noutlier_consecutive_failures = 0\n"
    mesh = None if not hbone else "local_fast_path = true\n" if hbone == "fast_path" else ""
    client, eps, servers, proxy = _service_setup(topo, bins, 2, extra, mesh)
    try:
        topo.stop(servers[1])
        r0 = proxy.authz()["services"]["retries"]
        r = client.run([PYTHON, "-c", _TIMED_CLIENT, "10.96.0.10", "80", "12"], timeout=120,
                       check=False)
        assert r.returncode == 0, r.stderr[-800:]
        rows = [line.split() for line in r.stdout.split("\n") if line]
        assert len(rows) == 12 and all(b == "be0" for b, _ in rows), rows
        retried = proxy.authz()["services"]["retries"] - r0
        slow = sum(1 for _, t in rows if float(t) >= 0.4)
        print("retried", retried, "slow", slow, rows)
        assert retried >= 1, rows  # be1 is picked about half the time
        assert slow >= retried, (slow, retried, rows)
        if hbone == "fast_path":  # joined in-process: no tunnel at all
            m = proxy.json("/stats")["mesh"]
            assert m["local_fast_path"] >= 12 and m["tunnels_dialled"] == 0, m
    finally:
        proxy.stop_clean()


def test_mesh_local_fast_path(topo, bins):
    """[mesh] local_fast_path: a mesh pod to a mesh pod of the same node is
    joined in-process, no tunnel, yet judged exactly like an HBONE stream:
    by the client's SPIFFE ID (allowed / denied), STRICT satisfied, an
    edit revokes an open connection, and telemetry reports mutual_tls with
    both principals.  A pod outside the mesh still gets no way in."""
    n1 = topo.add_node("n1")
    fe = topo.add_pod(n1, "frontend")
    intr = topo.add_pod(n1, "intruder")
    be = topo.add_pod(n1, "backend")
    legacy = topo.add_pod(n1, "legacy")  # never enrolled: outside the mesh
    ca = make_ca(topo, bins)
    alog = os.path.join(topo.tmpdir, "access.log")
    proxy = PolicyProxy(topo, bins, n1,
                        {"10-backend.ini": HBONE_ALLOW, "00-strict.ini": SHOP_STRICT},
                        conf_extra=f"[mesh]\nca_dir = {ca}\nlocal_fast_path = true\n"
                                   f"[telemetry]\naccess_log = {alog}\n")
    proxy.alog = alog
    try:
        proxy.enrol(fe, "shop", {"app": "frontend"})
        proxy.enrol(intr, "shop", {"app": "intruder"})
        proxy.enrol(be, "shop", {"app": "backend"})
        http_server(be, 8080)
        tcp_echo_server(be, 8081)
        s0 = proxy.json("/stats")
        r = curl(fe, be.ip, 8080)
        assert r.returncode == 0 and r.stdout == "backend\n", r.stderr
        r = curl(intr, be.ip, 8080)
        assert r.returncode in REFUSED, (r.returncode, r.stderr)
        r = curl(legacy, be.ip, 8080)  # plaintext from outside: STRICT
        assert r.returncode in REFUSED, (r.returncode, r.stderr)
        s1 = proxy.json("/stats")
        a0, a1, m0, m1 = s0["authz"], s1["authz"], s0["mesh"], s1["mesh"]
        assert m1["local_fast_path"] - m0["local_fast_path"] == 2, m1
        assert m1["tunnels_dialled"] == m0["tunnels_dialled"] == 0, m1
        assert m1["outbound_hbone"] == m0["outbound_hbone"], m1
        assert a1["hbone_allowed"] - a0["hbone_allowed"] == 1
        assert a1["hbone_denied"] - a0["hbone_denied"] == 1
        assert a1["by_reason"]["deny_plaintext"] - a0["by_reason"]["deny_plaintext"] == 1
        assert "principal=spiffe://cluster.local/ns/shop/sa/intruder" in topo.log(proxy.proc)
        # an open fast-path connection is revoked when its port leaves the rule
        _revoke_port_8081(fe, be, proxy, a1["revoked"])
        assert curl(fe, be.ip, 8080).returncode == 0
        # reported as the mutual TLS a tunnel would have been, both principals
        code, text = proxy.http("/metrics", port=15020)
        assert code == 200, text
        for rep in ("source", "destination"):
            assert re.search(r'istio_tcp_connections_opened_total\{reporter="' + rep +
                             r'",source_workload="frontend"[^}]*source_principal="spiffe://'
                             r'cluster\.local/ns/shop/sa/frontend"[^}]*destination_principal='
                             r'"spiffe://cluster\.local/ns/shop/sa/backend"[^}]*'
                             r'connection_security_policy="mutual_tls"', text), \
                [ln for ln in text.split("\n") if "connections_opened" in ln]
        recs = _access_log(proxy, 1)
        assert any(r["src_workload"] == "frontend" and r["dst_workload"] == "backend" and
                   r["connection_security_policy"] == "mutual_tls" for r in recs), recs[:4]
    finally:
        proxy.stop_clean()


# N requests, one new connection each; a failed one is counted, not fatal
_COUNTING_CLIENT = r"""
import collections, http.client, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = collections.Counter()
for i in range(n):
    try:
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.request("GET", "/")
        seen[c.getresponse().read().decode().strip()] += 1
        c.close()
    except OSError as e:
        seen["error"] += 1
for k, v in sorted(seen.items()):
    print(k, v, flush=True)
"""


@pytest.mark.parametrize("hbone", [False, True], ids=["plaintext", "hbone"])
def test_service_endpoint_dies_under_load(topo, bins, hbone):
    """An endpoint's app is killed while a client keeps opening connections
    to the VIP: at most the one in flight fails, the rest are served by the
    others (retried on them), and the dead endpoint is ejected."""
    extra = "retries = 2\noutlier_consecutive_failures = 2\noutlier_ejection_ms = 30000\n"
    client, eps, servers, proxy = _service_setup(topo, bins, 3, extra, "" if hbone else None)
    try:
        load = client.popen([PYTHON, "-c", _COUNTING_CLIENT, "10.96.0.10", "80", "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # kill be2 once it has served some of the load
        deadline = time.monotonic() + 60
        while proxy.authz()["services"]["routed"] < 100:
            assert time.monotonic() < deadline and load.poll() is None, proxy.authz()
            time.sleep(0.05)
        topo.stop(servers[2], grace=0.2)
        out, _ = load.communicate(timeout=180)
        counts = {k: int(v) for k, v in (line.split() for line in out.split("\n") if line)}
        print("be2 killed under load:", counts)
        assert counts.get("error", 0) <= 1, counts
        assert sum(counts.values()) == 600, counts
        assert counts.get("be2", 0) >= 10, counts  # it was serving before
        sv = proxy.authz()["services"]
        assert sv["by_service"]["shop/backend"]["ejections"] >= 1, sv
    finally:
        proxy.stop_clean()
