#!/usr/bin/python3
"""make demo: one node, three pods, one ambit node-proxy, in under a minute.

Builds, with the project's own test harness (tests/system/topology.py), a
node network namespace and three pods joined to it by the real CNI chain
(bridge + host-local from /usr/lib/cni, then ambit-cni), with ambit-node-proxy
running inside the node netns:

  frontend  -> backend   allowed by policy (spiffe://.../sa/frontend)
  intruder  -> backend   denied (no ALLOW rule names it)
  backend                a small HTTP server on :8080

and prints a short report: the requests, the SPIFFE identities each side
proved, the mTLS handshakes, the refusal, metrics, and where the logs are.

Honesty rules: every line of the report comes from something observed in
this run (curl's output, node-proxy's admin endpoints, its log, its access
log).  A feature this build does not have (node-proxy refuses its config
key, an endpoint is missing, a counter never moved) is reported as "not
available in this build: ...", never as a success.  Exit status: 0 when
frontend -> backend requests crossed node-proxy, 1 when that core path
failed, 2 on a usage/environment error, 130/143 when interrupted.  Every
namespace, process and temp file is removed on every exit path (also
Ctrl-C / SIGTERM); node-proxy's log and access log are copied to the logs
directory first (default: <bin>/../demo, e.g. build/demo).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "system"))

NS = "demo"                 # Kubernetes namespace of the three pods
TD = "cluster.local"        # SPIFFE trust domain
APP_PORT = 8080
ADMIN, METRICS, READY = 15000, 15020, 15021
PODS = ("frontend", "backend", "intruder")
STEPS = 8


class Interrupted(BaseException):
    """SIGTERM/SIGHUP (SIGINT arrives as KeyboardInterrupt)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class CoreFailure(Exception):
    """The core path (requests through node-proxy) did not work."""


def spiffe(sa):
    return f"spiffe://{TD}/ns/{NS}/sa/{sa}"


# --------------------------------------------------------------------------
# output


class Out:
    def __init__(self, color):
        self.color = color
        self.step_no = 0
        self.t0 = time.monotonic()

    def c(self, code, s):
        return f"\033[{code}m{s}\033[0m" if self.color else s

    def line(self, s=""):
        print(s, flush=True)

    def begin(self, text):
        self.step_no += 1
        self.t_step = time.monotonic()
        print(f"[{self.step_no}/{STEPS}] {text} ...", end="", flush=True)

    def end(self, word="ok", code="32", extra=""):
        dt = time.monotonic() - self.t_step
        print(f"  {self.c(code, word)} ({dt:.1f} s){extra}", flush=True)

    def head(self, s):
        print("\n" + self.c("1", s), flush=True)


# --------------------------------------------------------------------------
# node-proxy


class NodeProxy:
    """ambit-node-proxy in the node netns, configured by an INI file.

    Optional features are config groups: when this build's node-proxy
    refuses a key or section of a group ("unknown key"/"unknown section",
    exit 2 before it does anything), the group is dropped, recorded as not
    available, and the proxy started again without it."""

    def __init__(self, topo, bins, node, tmp):
        self.topo, self.bins, self.node, self.tmp = topo, bins, node, tmp
        self.sock = os.path.join(tmp, "node-proxy.sock")
        self.state = os.path.join(tmp, "node-proxy.state")
        self.conf = os.path.join(tmp, "node-proxy.ini")
        self.proc = None
        self.missing = []       # (feature, why)
        self.enabled = set()    # feature names whose config was accepted

    def start(self, groups):
        """groups: list of (feature, [(section, key, value), ...]) tried in
        order; several groups may share a feature name (alternatives)."""
        base = [("proxy", "workers", "2"), ("proxy", "log_level", "info"),
                ("paths", "control_socket", self.sock), ("paths", "state_file", self.state),
                ("timeouts", "drain", "1s")]
        groups = list(groups)
        tried = {}
        for _ in range(len(groups) + 1):
            lines, owner = self._write(base, groups)
            self.proc = self.node.popen([str(self.bins / "ambit-node-proxy"), "run",
                                         "--config", self.conf])
            bad = self._wait_ready()
            if bad is None:
                self.enabled |= {f for f, _ in groups}
                return
            lineno, msg = bad
            g = owner.get(lineno)
            if g is None:
                raise RuntimeError(f"node-proxy refused its base config: {msg}")
            groups.remove(g)
            tried.setdefault(g[0], []).append(f"[{g[1][0][0]}] {g[1][0][1]}")
            if not any(f == g[0] for f, _ in groups):
                self.missing.append((g[0], "node-proxy refuses its config key: tried "
                                     + ", ".join(tried[g[0]])))
        raise RuntimeError("node-proxy did not start")

    def _write(self, base, groups):
        by_sec = {}
        for s, k, v in base:
            by_sec.setdefault(s, []).append((k, v, None))
        # one alternative per feature at a time: the first still listed
        seen = set()
        for g in groups:
            if g[0] in seen:
                continue
            seen.add(g[0])
            for s, k, v in g[1]:
                by_sec.setdefault(s, []).append((k, v, g))
        text, owner, n = [], {}, 0
        for s, kvs in by_sec.items():
            text.append(f"[{s}]")
            n += 1
            for k, v, g in kvs:
                text.append(f"{k} = {v}")
                n += 1
                if g is not None:
                    owner[n] = g
        # a section that exists only for an optional group: its header line
        # belongs to that group too ("unknown section" names the header line)
        n = 0
        for s, kvs in by_sec.items():
            n += 1
            gs = {id(g): g for _, _, g in kvs}
            if None not in gs and len(gs) == 1:
                owner[n] = next(iter(gs.values()))
            n += len(kvs)
        Path(self.conf).write_text("\n".join(text) + "\n")
        return text, owner

    def _wait_ready(self, timeout=15):
        """None once ready; (line, message) when the config was refused."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                log = self.topo.log(self.proc)
                m = re.search(re.escape(self.conf) + r":(\d+): (unknown (?:key|section)[^\n]*)", log)
                if rc == 2 and m:
                    return int(m.group(1)), m.group(2).strip()
                raise RuntimeError(f"node-proxy exited with {rc}:\n{log[-2000:]}")
            if self.get("/healthz/ready", READY)[0] == 200:
                return None
            time.sleep(0.05)
        raise RuntimeError("node-proxy not ready after %ds:\n%s" % (timeout, self.topo.log(self.proc)[-2000:]))

    def get(self, path, port=ADMIN):
        from topology import netns_exec

        def get():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode(errors="replace")
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode(errors="replace")
            except OSError:
                return None, ""
        return netns_exec(self.node, get)

    def json(self, path):
        code, body = self.get(path)
        if code != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def stats(self):
        return self.json("/stats") or {}

    def log(self):
        return self.topo.log(self.proc) if self.proc else ""


# --------------------------------------------------------------------------
# the run


POLICY = f"""\
; the demo's policy: backend takes connections from frontend's identity only
[policy backend-allow]
namespace = {NS}
selector = app=backend
action = ALLOW

[rule backend-allow]
principals = {spiffe("frontend")}
ports = {APP_PORT}
"""


def curl(pod, url):
    """(ok, status line, body, curl error) of one GET from inside pod."""
    r = pod.run(["curl", "-sS", "-i", "--max-time", "5", url], check=False, timeout=15)
    if r.returncode != 0:
        return False, None, "", (r.stderr.strip().splitlines() or ["curl exit %d" % r.returncode])[-1]
    head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
    status = head.splitlines()[0] if head else ""
    return status.split(" ")[1:2] == ["200"], status, body.strip(), ""


def total(stats, key):
    return (stats.get("total") or {}).get(key, 0)


def mesh(stats):
    m = stats.get("mesh")
    return m if isinstance(m, dict) and m.get("enabled") else None


def kv(line):
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))


def run(args, out, state):
    from topology import Topology, http_server

    bins = Path(args.bin).resolve()
    missing = state["missing"]

    # 1. certificates
    topo = Topology(bins=bins)
    state["topo"] = topo
    if args.verbose:
        out.line(f"run prefix {topo.prefix}, temp dir {topo.tmpdir}")
    out.begin("certificates: offline root CA + node intermediate (ambit-certs)")
    state["prefix"], state["tmpdir"] = topo.prefix, topo.tmpdir
    tmp = topo.tmpdir
    ca, nodeca = os.path.join(tmp, "root-ca"), os.path.join(tmp, "node-ca")
    certs = str(bins / "ambit-certs")
    os.makedirs(ca, mode=0o700)
    os.makedirs(nodeca, mode=0o700)
    for argv in ([certs, "init-root", "--dir", ca, "--trust-domain", TD, "--days", "1"],
                 [certs, "issue-node", "--dir", ca, "--node", "demo-node", "--out", nodeca,
                  "--hours", "2"]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:2])}: {r.stderr.strip()}")
    out.end()

    # 2. node
    out.begin("node: network namespace with bridge ambbr0")
    node = topo.add_node("node")
    out.end(extra=f"  {node.netns} gateway {node.gateway}")

    # 3. node-proxy
    out.begin("node-proxy in the node netns (control socket, admin :15000)")
    pdir = os.path.join(tmp, "policies.d")
    os.makedirs(pdir)
    Path(pdir, "50-demo.ini").write_text(POLICY)
    state["access_log"] = alog = os.path.join(tmp, "access.log")
    np = NodeProxy(topo, bins, node, tmp)
    state["np"] = np
    groups = [
        ("mTLS/HBONE", [("mesh", "ca_dir", nodeca), ("mesh", "trust_domain", TD)]),
        ("authorization policy", [("policy", "policies_dir", pdir)]),
    ] + [("access log", [(sec, key, alog)]) for sec, key in access_log_keys()]
    np.start(groups)
    missing.extend(np.missing)
    out.end(extra=f"  pid {np.proc.pid}, features configured: "
            + (", ".join(sorted(np.enabled)) or "none beyond plain capture"))

    # 4. pods
    out.begin("pods frontend, backend, intruder via CNI bridge + host-local + ambit-cni")
    plug = [{"type": "ambit-cni", "controlSocket": np.sock,
             "stateDir": os.path.join(tmp, "cni-state"), "logFile": os.path.join(tmp, "cni.log"),
             "timeoutMs": 5000}]
    pods = {}
    for name in PODS:
        pods[name] = topo.add_pod(node, name, extra_plugins=plug, cni_args={
            "K8S_POD_NAMESPACE": NS, "AMBIT_SERVICE_ACCOUNT": name, "AMBIT_LABELS": f"app:{name}"})
    out.end()
    out.line("      pods created: " + "  ".join(f"{n} {p.ip}" for n, p in pods.items()))
    wl = np.json("/workloads") or []
    enrolled = {w.get("name") for w in wl if isinstance(w, dict)}
    if not set(PODS) <= enrolled:
        raise CoreFailure(f"node-proxy does not list every pod as enrolled: {sorted(enrolled)}")

    # 5. backend app
    out.begin(f"backend: HTTP server on :{APP_PORT} (plain HTTP, the app knows nothing of the mesh)")
    http_server(pods["backend"], APP_PORT)
    out.end()

    url = f"http://{pods['backend'].ip}:{APP_PORT}/"
    s0 = np.stats()

    # 6. frontend -> backend
    out.begin(f"frontend -> backend: {args.requests} requests with curl")
    good = []
    for _ in range(args.requests):
        ok, status, body, err = curl(pods["frontend"], url)
        good.append(ok)
        state["front"].append((ok, status, body, err))
    s1 = wait_counter(np, s0, args.requests)
    state["through"] = total(s1, "accepted") - total(s0, "accepted")
    if not all(good):
        out.end("FAILED", "31")
        raise CoreFailure("frontend -> backend: " + "; ".join(
            (f[1] or f[3]) for f in state["front"] if not f[0]))
    if state["through"] < args.requests:
        out.end("FAILED", "31")
        raise CoreFailure(f"requests succeeded but node-proxy accepted only {state['through']} "
                          f"connections: the traffic did not cross it")
    out.end()

    # 7. intruder -> backend
    out.begin("intruder -> backend: same request, identity not allowed")
    ok, status, body, err = curl(pods["intruder"], url)
    state["intr"] = (ok, status, body, err)
    s2 = np.stats()
    out.end("answered (NOT refused)" if ok else "refused", "33" if ok else "32")

    # 8. evidence
    out.begin("collecting identities, handshakes, metrics, logs")
    time.sleep(0.2)  # workers publish counters asynchronously; access log writer polls 10 ms
    deadline = time.monotonic() + 1.5
    while "access log" in np.enabled and time.monotonic() < deadline and \
            not (os.path.exists(alog) and os.path.getsize(alog) > 0):
        time.sleep(0.05)
    state["s0"], state["s1"], state["s2"], state["s3"] = s0, s1, s2, np.stats()
    state["wl"] = np.json("/workloads") or []
    code, body = np.get("/metrics", METRICS)
    state["metrics"] = body if code == 200 else None
    state["pods"] = {n: p.ip for n, p in pods.items()}
    state["np_log"] = np.log()
    out.end()


def access_log_keys():
    """Where this tree's node-proxy takes the access log path from: keys of
    config.c's table that name it (the binary must still accept the key,
    and lines must appear, before the report says the log works)."""
    keys = []
    try:
        src = (REPO / "node-proxy" / "config.c").read_text()
        keys = [(s, k) for s, k, kind in re.findall(r'\{\s*"(\w+)",\s*"(\w+)",\s*(K_\w+)', src)
                if kind == "K_PATH" and re.search(r"access_?log", s + "_" + k)]
    except OSError:
        pass
    return keys or [("paths", "access_log")]


def wait_counter(np, base, n, timeout=3):
    deadline = time.monotonic() + timeout
    while True:
        s = np.stats()
        if total(s, "accepted") - total(base, "accepted") >= n or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


# --------------------------------------------------------------------------
# report


def delta(m_a, m_b, *path):
    """m_b[path] - m_a[path] for nested counters (0 when absent)."""
    def get(m):
        for k in path:
            m = m.get(k, 0) if isinstance(m, dict) else 0
        return m if isinstance(m, int) else 0
    return get(m_b or {}) - get(m_a or {})


def report(out, state, logs_dir):
    missing = state["missing"]
    np = state.get("np")
    mesh_on = np is not None and "mTLS/HBONE" in np.enabled
    log = state.get("np_log", "")
    s0, s1, s3 = state.get("s0", {}), state.get("s1", {}), state.get("s3", {})
    m0, m1, m3 = mesh(s0), mesh(s1), mesh(s3)

    out.head("frontend -> backend")
    url = f"http://{state['pods']['backend']}:{APP_PORT}/"
    for ok, status, body, err in state["front"]:
        out.line(f"  GET {url}  ->  {status}  body {body!r}" if ok else f"  GET {url}  ->  FAILED: {status or err}")
    if m0 is not None and m1 is not None:
        out.line(f"  captured on frontend's :15001 and sent into HBONE tunnels: "
                 f"{delta(m0, m1, 'outbound_hbone')} connection(s); "
                 f"bytes into tunnels {delta(m0, m1, 'bytes_into_tunnel')}, "
                 f"out of tunnels {delta(m0, m1, 'bytes_out_of_tunnel')}")
    else:
        out.line(f"  node-proxy accepted {state['through']} captured connection(s) and relayed them "
                 f"as plain TCP (bytes client->server {delta(s0, s1, 'total', 'bytes_down_up')}, "
                 f"server->client {delta(s0, s1, 'total', 'bytes_up_down')})")

    out.head("identities (X.509-SVIDs issued on this node by its intermediate)")
    est = [kv(l) for l in log.splitlines() if "event=hbone_established" in l]
    ids = {}
    for w in state.get("wl", []):
        if isinstance(w, dict) and w.get("name") in PODS:
            ids[w["name"]] = w
    for n in PODS:
        w = ids.get(n, {})
        out.line(f"  {n:9} {state['pods'][n]:15} ns={w.get('namespace', '?')} "
                 f"sa={w.get('service_account', '?'):9} ->  {spiffe(w.get('service_account', n))}")
    if m3 and isinstance(m3.get("identities"), list):
        out.line(f"  node-proxy holds {len(m3['identities'])} SVID(s), keys in memory only "
                 f"(issued {m3.get('svids_issued')}, failures {m3.get('svid_failures')}):")
        for i in m3["identities"]:
            if not isinstance(i, dict):
                continue
            na = i.get("not_after")
            until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(na)) if isinstance(na, int) else "?"
            out.line(f"    {i.get('id')}  serial {str(i.get('serial', ''))[:12]}...  valid until {until}")
        out.line("    (the demo's node intermediate lives 2 h; SVIDs never outlive their issuer)")
    pairs = {}
    for e in est:
        k = (e.get("role"), e.get("local_id"), e.get("peer_id"))
        pairs[k] = pairs.get(k, 0) + 1
    client = {k: v for k, v in pairs.items() if k[0] == "client" and k[2] == spiffe("backend")}
    server = {k: v for k, v in pairs.items() if k[0] == "server" and k[1] == spiffe("backend")}
    if client or server:
        out.line("  proven in the mTLS handshakes (node-proxy log, event=hbone_established):")
        for (_, local, peer), n in client.items():
            out.line(f"    source side      {local} verified the server as {peer}  (x{n})")
        for (_, local, peer), n in server.items():
            out.line(f"    destination side {local} verified the client as {peer}  (x{n})")
    elif mesh_on:
        missing.append(("identities seen by each side", "no event=hbone_established line in node-proxy's log"))
    else:
        missing.append(("identities seen by each side", "mTLS/HBONE is off, so no identity is proven on the wire"))

    out.head("mTLS (HBONE: TLS 1.3 + HTTP/2 CONNECT to :15008 in the backend pod)")
    if m0 is not None and m1 is not None:
        hc, hsv = delta(m0, m1, "handshakes", "client"), delta(m0, m1, "handshakes", "server")
        sc = delta(m0, m1, "streams_opened", "client")
        ok200 = delta(m0, m1, "responses", "server", "200")
        fails = sum(sum(v.values()) for v in (m3.get("handshake_failures") or {}).values()
                    if isinstance(v, dict))
        out.line(f"  frontend's {len(state['front'])} requests: {sc} CONNECT stream(s) over {hc} mTLS "
                 f"connection(s) (pooled per worker, {len((s1.get('workers') or []))} workers); "
                 f"handshakes client {hc} / server {hsv}; destination answered 200 x{ok200}")
        out.line(f"  handshake failures so far: {fails}")
        for e in est[:1]:
            out.line(f"  cipher {e.get('cipher')}; backend's certificate sha256 "
                     f"{next((x.get('peer_cert_sha256', '') for x in est if x.get('role') == 'client'), '')[:16]}...")
        if hc + hsv == 0 and sc == 0:
            missing.append(("mTLS on the frontend -> backend path",
                            "the [mesh] config was accepted but no handshake or stream was counted"))
    else:
        why = next((w for f, w in missing if f == "mTLS/HBONE"), None) or \
            "node-proxy's /stats has no enabled \"mesh\" object"
        out.line("  not available in this build: mTLS/HBONE - the requests above were relayed as plain TCP")
        if not any(f == "mTLS/HBONE" for f, _ in missing):
            missing.append(("mTLS/HBONE", why))

    out.head("policy (policies.d/50-demo.ini: ALLOW to app=backend from "
             + spiffe("frontend") + f", port {APP_PORT})")
    ok, status, body, err = state["intr"]
    have_policy = np is not None and "authorization policy" in np.enabled
    a0, a1, a3 = (s.get("authz") for s in (s0, s1, s3))
    authz_on = isinstance(a3, dict) and a3.get("enabled")
    if authz_on:
        out.line(f"  frontend -> backend: allowed x{delta(a0, a1, 'hbone_allowed')} "
                 f"(decisions on the destination side, per CONNECT stream)")
    if ok:
        out.line(f"  intruder -> backend: GET {url}  ->  {status}  (the request was answered)")
        if not have_policy:
            out.line("  not available in this build: authorization policy (no policy directory key); "
                     "the intruder was NOT refused")
        else:
            out.line("  not available in this build: policy enforcement on the data path; "
                     "the policy was loaded but the intruder was NOT refused")
            missing.append(("authorization policy enforcement", "policy loaded, intruder still answered"))
    else:
        out.line(f"  intruder -> backend: GET {url}  ->  refused: {err or status}")
        denied401 = delta(m1, m3, "responses", "server", "401")
        denied = delta(a1, a3, "hbone_denied") if authz_on else 0
        if denied401 > 0:
            out.line(f"  the destination side answered the intruder's CONNECT with 401 (denied by policy) x{denied401}")
        deny = [kv(l) for l in log.splitlines() if "event=authz_denied" in l]
        for e in deny[:2]:
            out.line(f"  node-proxy: event=authz_denied principal={e.get('principal')} port={e.get('port')} "
                     f"reason={e.get('reason')} policy={e.get('policy')}")
        if denied401 == 0 and denied == 0 and not deny:
            out.line("  (refused, but node-proxy recorded no policy denial for it)")
            missing.append(("policy denial evidence", "the intruder failed, but no 401 or authz_denied was seen"))

    out.head("metrics")
    mt = state.get("metrics")
    if mt:
        own = ("ambit_hbone_handshakes_total", "ambit_hbone_handshake_failures_total",
               "ambit_policy_decisions_total", "ambit_workloads_enrolled",
               "ambit_accesslog_lines_total")
        istio = ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                 "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total")
        lines = [l for l in mt.splitlines() if not l.startswith("#")]
        for l in lines:
            if l.startswith(own):
                out.line("  " + compact_metric(l))
        rows = [istio_row(l) for l in lines if l.startswith(istio)]
        rows = [r for r in rows if r and r[2] in PODS]
        if rows:
            out.line(f"  {'istio_tcp_*_total':20} {'reporter':11} {'source -> destination':22} "
                     f"{'security':10} {'flags':6} value")
            for name, rep, src, dst, sec, flags, v, _ in rows[:16]:
                out.line(f"  {name:20} {rep:11} {src + ' -> ' + dst:22} {sec:10} {flags:6} {v}")
            proven = sum(1 for r in rows if r[7] == (spiffe(r[2]), spiffe(r[3])))
            out.line(f"  {proven} of these {len(rows)} series carry source_principal and "
                     f"destination_principal = the two SPIFFE IDs above")
        out.line(f"  (from http://127.0.0.1:{METRICS}/metrics in the node netns)")
        if not any(l.startswith("istio_tcp_") for l in mt.splitlines()):
            missing.append(("Istio TCP metrics", f":{METRICS}/metrics answers, but has no "
                            "istio_tcp_* series after the requests"))
            out.line("  not available in this build: istio_tcp_* series for the connections of this run")
    else:
        missing.append(("Prometheus metrics", f":{METRICS}/metrics does not answer"))
        t = s3.get("total", {})
        out.line(f"  not available in this build: :{METRICS}/metrics - node-proxy's own /stats instead:")
        out.line("  /stats total: " + "  ".join(
            f"{k}={t.get(k)}" for k in ("accepted", "active", "resets", "connect_errors",
                                        "hbone_refused", "pool_exhausted") if k in t))
        m = mesh(s3)
        if m:
            out.line("  /stats mesh:  " + "  ".join(
                f"{k}={m.get(k)}" for k in ("tunnels_dialled", "tunnels_accepted", "outbound_hbone",
                                            "inbound_streams", "refused_by_peer", "bytes_into_tunnel",
                                            "bytes_out_of_tunnel") if k in m))

    out.head("logs (kept after the clean-up)")
    os.makedirs(logs_dir, exist_ok=True)
    dst = os.path.join(logs_dir, "node-proxy.log")
    Path(dst).write_text(log)
    out.line(f"  node-proxy log: {dst} ({len(log.splitlines())} lines)")
    alog = state.get("access_log")
    if np is not None and "access log" in np.enabled and alog and os.path.exists(alog) \
            and os.path.getsize(alog) > 0:
        adst = os.path.join(logs_dir, "access.log")
        shutil.copyfile(alog, adst)
        lines = Path(adst).read_text().splitlines()
        out.line(f"  access log:     {adst} ({len(lines)} lines, one JSON object per connection)")
        for l in pick_access_lines(lines):
            out.line("    " + l)
    else:
        with_al = np is not None and "access log" in np.enabled
        why = "configured, but nothing was written" if with_al else "no access log key in this node-proxy"
        if not any(f == "access log" for f, _ in missing):
            missing.append(("access log", why))
        out.line(f"  access log:     not available in this build ({why})")
    cl = state.get("cni_log")
    if cl:
        out.line(f"  ambit-cni log:  {cl}")


def pick_access_lines(lines, n=3):
    """A few access log records of this run, reduced to the fields a reader
    checks: who, proven identities, security, flags, bytes."""
    recs = []
    for l in lines:
        try:
            r = json.loads(l)
        except ValueError:
            continue
        if isinstance(r, dict):
            recs.append(r)
    # one allowed frontend connection per reporter, then the intruder's
    chosen = []
    for want in (("frontend", "destination"), ("frontend", "source"), ("intruder", None)):
        for r in recs:
            if r.get("src_workload") == want[0] and (want[1] is None or r.get("reporter") == want[1]) \
                    and r not in chosen:
                chosen.append(r)
                break
    if not chosen:
        chosen = recs[:1]
    keys = ("reporter", "src_workload", "src_identity", "dst_workload", "dst_identity",
            "connection_security_policy", "response_flags", "bytes_sent", "bytes_received")
    return [" ".join(f"{k}={r.get(k)}" for k in keys if k in r) for r in chosen[:n]]


def istio_row(l):
    """(short name, reporter, src, dst, security, flags, value, principals) of one
    istio_tcp_* sample, None when it does not parse."""
    m = re.match(r"^istio_tcp_(\w+)_total\{(.*)\}\s+(\S+)$", l)
    if not m:
        return None
    lab = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
    return (m.group(1), lab.get("reporter", "?"), lab.get("source_workload", "?"),
            lab.get("destination_workload", "?"), lab.get("connection_security_policy", "?"),
            lab.get("response_flags", "?"), m.group(3),
            (lab.get("source_principal"), lab.get("destination_principal")))


def compact_metric(l):
    """An Istio series has ~25 labels; keep the ones a reader needs."""
    m = re.match(r"^([a-zA-Z_:]+)\{(.*)\}\s+(\S+)$", l)
    if not m:
        return l[:160]
    name, labels, v = m.groups()
    keep = ("reporter", "source_workload", "destination_workload", "source_principal",
            "destination_principal", "connection_security_policy", "response_flags", "role",
            "action", "policy")
    parts = [p for p in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels) if p[0] in keep]
    return name + "{" + ",".join(f'{k}="{val}"' for k, val in parts) + "} " + v


# --------------------------------------------------------------------------
# main


def main():
    ap = argparse.ArgumentParser(description="ambit demo: one node, three pods, one node-proxy")
    ap.add_argument("--bin", default=os.environ.get("AMBIT_BIN") or str(REPO / "build" / "bin"),
                    help="directory of the built programs (default: $AMBIT_BIN or build/bin)")
    ap.add_argument("--logs-dir", help="where node-proxy's logs are kept (default: BIN/../demo)")
    ap.add_argument("--requests", type=int, default=3, help="frontend -> backend requests (3)")
    ap.add_argument("--verbose", action="store_true", help="print the run prefix and temp dir")
    ap.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    args = ap.parse_args()
    if not 1 <= args.requests <= 100:
        ap.error("--requests wants 1..100")
    out = Out(args.color == "always" or (args.color == "auto" and sys.stdout.isatty()))
    bins = Path(args.bin).resolve()
    logs_dir = args.logs_dir or str(bins.parent / "demo")

    if os.geteuid() != 0:
        print("demo: needs root (network namespaces); try: sudo make demo", file=sys.stderr)
        return 2
    for b in ("ambit-node-proxy", "ambit-cni", "ambit-certs"):
        if not os.access(bins / b, os.X_OK):
            print(f"demo: {bins / b} not built (run make)", file=sys.stderr)
            return 2
    for tool in ("curl", "nft", "ip", "nsenter"):
        if shutil.which(tool) is None:
            print(f"demo: {tool} not found (tools/deps.sh installs it)", file=sys.stderr)
            return 2
    if not os.path.exists("/usr/lib/cni/bridge"):
        print("demo: /usr/lib/cni/bridge missing (containernetworking-plugins)", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise Interrupted(signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    # Ctrl-C must clean up even when started with SIGINT ignored (a shell
    # without job control ignores it in background commands)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    out.line(out.c("1", "ambit demo: one node, three pods (frontend, backend, intruder), one node-proxy"))
    state = {"missing": [], "front": [], "topo": None}
    rc = 0
    try:
        try:
            run(args, out, state)
            report(out, state, logs_dir)
            orderly_stop(out, state, logs_dir)
        except CoreFailure as e:
            out.line(f"\n{out.c('31', 'FAILED')}: {e}")
            keep_logs(state, logs_dir, out)
            rc = 1
        except (KeyboardInterrupt, Interrupted) as e:
            sig = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            out.line(f"\ninterrupted ({signal.Signals(sig).name})")
            rc = 128 + sig
        except Exception as e:  # noqa: BLE001 - report any failure, then clean up
            out.line(f"\n{out.c('31', 'FAILED')}: {type(e).__name__}: {e}")
            keep_logs(state, logs_dir, out)
            rc = 1
    except (KeyboardInterrupt, Interrupted) as e:
        # a second signal while reporting the first failure
        rc = 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)
    finally:
        cleanup(state, out)
    if rc == 0:
        out.head("not available in this build")
        if state["missing"]:
            seen = set()
            for f, why in state["missing"]:
                if f not in seen:
                    seen.add(f)
                    out.line(f"  not available in this build: {f} ({why})")
        else:
            out.line("  nothing: every part of the demo ran")
        out.line(f"\n{out.c('32', 'demo OK')}: frontend -> backend through node-proxy "
                 f"({time.monotonic() - out.t0:.1f} s in all)")
    return rc


def orderly_stop(out, state, logs_dir):
    """The normal way out, so the report can say how it went: every pod
    removed with CNI DEL (rules, registration, SVID), then node-proxy
    stopped with SIGTERM, which must drain and exit 0 (a sanitizer build
    would also report leaks here)."""
    topo, np = state["topo"], state["np"]
    t = time.monotonic()
    print("\nshutdown: CNI DEL of the pods, then SIGTERM to node-proxy ...", end="", flush=True)
    problems = []
    for pod in reversed(list(topo.pods)):
        try:
            topo.del_pod(pod)
        except Exception as e:  # noqa: BLE001 - reported, teardown still runs
            problems.append(f"CNI DEL {pod.name}: {e}")
    wl = np.json("/workloads")
    if wl:
        problems.append(f"node-proxy still lists {len(wl)} workload(s) after DEL")
    np.proc.send_signal(signal.SIGTERM)
    try:
        rc = np.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        rc = None
        problems.append("node-proxy did not exit within 15 s of SIGTERM")
    log = np.log()
    Path(logs_dir, "node-proxy.log").write_text(log)
    if rc not in (0, None):
        problems.append(f"node-proxy exited with status {rc}")
    if "Sanitizer" in log or "runtime error" in log:
        problems.append(f"sanitizer report in node-proxy's log ({logs_dir}/node-proxy.log)")
    dt = time.monotonic() - t
    if problems:
        print(f"  {out.c('31', 'problems')} ({dt:.1f} s)", flush=True)
        for p in problems:
            out.line(f"  {p}")
        state["missing"].append(("clean shutdown", "; ".join(problems)))
    else:
        print(f"  ok ({dt:.1f} s)", flush=True)
        out.line("  pods removed (CNI DEL), node-proxy drained and exited 0")


def keep_logs(state, logs_dir, out):
    np = state.get("np")
    if np is None or np.proc is None:
        return
    try:
        os.makedirs(logs_dir, exist_ok=True)
        dst = os.path.join(logs_dir, "node-proxy.log")
        Path(dst).write_text(np.log())
        out.line(f"node-proxy log kept in {dst}")
    except OSError:
        pass


def cleanup(state, out):
    """Tear everything down; further signals only print a note meanwhile
    (a Python handler, not SIG_IGN, so programs started here get the
    default dispositions back at exec)."""
    def note(signum, frame):
        print(" (still cleaning up)", end="", flush=True)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, note)
    topo = state.get("topo")
    if topo is None:
        return
    t = time.monotonic()
    print("cleaning up: remaining pods, processes, namespaces, temp dir ...", end="", flush=True)
    topo.teardown()
    errs = topo.errors
    print(f"  {'ok' if not errs else 'with problems'} ({time.monotonic() - t:.1f} s)", flush=True)
    for e in errs:
        print(f"  cleanup: {e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
