"""System tests of ambit-cni, the chained CNI plugin.

Three groups:
  * protocol: the binary run directly with a CNI environment and stdin, for
    every command, every error code, malformed input, both spec versions;
  * enrollment against real pods (bridge + host-local from the harness) and
    a real ambit-node-proxy in the node netns: rules, registration, CHECK
    drift, DEL, GC, STATUS, fail-closed ADD when node-proxy is down;
  * the chain: topo.add_pod with ambit-cni chained after bridge, traffic
    that provably crosses node-proxy, and topo.del_pod.
Installer tests live in test_cni_install.py.

The plugin is always given a stateDir and controlSocket under the test's
temp dir, and is run inside a node netns whenever a netns is involved, so
nothing here touches the machine's own /run/ambit or root netns.
"""

import json
import os
import subprocess
import time
import urllib.request

import pytest

from topology import CNIError, http_server, netns_exec

CNI_VERSIONS = ["1.0.0", "1.1.0"]


# --------------------------------------------------------------------------
# helpers


def cni_bin(bins):
    p = bins / "ambit-cni"
    assert p.exists(), f"{p} not built"
    return p


class Result:
    def __init__(self, p):
        self.rc = p.returncode
        self.stdout = p.stdout
        self.stderr = p.stderr
        self.json = None
        if p.stdout.strip():
            # stdout must be exactly one JSON document, never log lines
            self.json = json.loads(p.stdout)

    @property
    def code(self):
        return self.json.get("code") if self.json else None

    def __repr__(self):
        return f"rc={self.rc} stdout={self.stdout!r} stderr={self.stderr[-2000:]!r}"


def run_cni(bins, command, conf, env=None, netns_of=None, raw=None, drop=(), timeout=30):
    """Run ambit-cni once.  conf is a dict (dumped) or raw bytes/str via raw.
    env adds CNI_* variables (a default container id and ifname are set for
    ADD/DEL/CHECK); drop removes variables.  netns_of: a Node/Pod to run in."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e["CNI_COMMAND"] = command
    e["CNI_PATH"] = str(bins)
    if command in ("ADD", "DEL", "CHECK"):
        e.setdefault("CNI_CONTAINERID", "ctr-0123456789abcdef")
        e.setdefault("CNI_IFNAME", "eth0")
    e.update(env or {})
    for k in drop:
        e.pop(k, None)
    data = raw if raw is not None else json.dumps(conf)
    argv = [str(cni_bin(bins))]
    if netns_of is not None:
        argv = ["nsenter", f"--net={netns_of.path}"] + argv
    p = subprocess.run(argv, input=data, capture_output=True, text=True, env=e, timeout=timeout)
    return Result(p)


def conf_for(tmp, version="1.0.0", prev=None, sock=None, **extra):
    c = {
        "cniVersion": version,
        "name": "ambit-test",
        "type": "ambit-cni",
        "controlSocket": sock or os.path.join(tmp, "absent.sock"),
        "stateDir": os.path.join(tmp, "cni-state"),
        "timeoutMs": 2000,
    }
    if prev is not None:
        c["prevResult"] = prev
    c.update(extra)
    return c


FAKE_PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "ambbr0", "mac": "02:00:00:00:00:01"},
        {"name": "veth0", "mac": "02:00:00:00:00:02"},
        {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/none"},
    ],
    "ips": [{"address": "10.77.0.5/24", "gateway": "10.77.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}


def pod_env(pod, **args):
    a = dict(pod.cni_args)
    a.update(args)
    return {
        "CNI_CONTAINERID": pod.containerid,
        "CNI_NETNS": pod.path,
        "CNI_IFNAME": pod.ifname,
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in a.items() if v is not None),
    }


def nft_tables(pod):
    return pod.run(["nft", "list", "tables"]).stdout


def has_ambit_table(pod):
    return "inet ambit" in nft_tables(pod)


def ip_rules(pod):
    return pod.run(["ip", "rule", "show"]).stdout + pod.run(["ip", "-6", "rule", "show"]).stdout


def state_files(tmp):
    d = os.path.join(tmp, "cni-state", "ambit-test")
    if not os.path.isdir(d):
        return []
    return sorted(f for f in os.listdir(d) if not f.startswith("."))


class Proxy:
    """ambit-node-proxy in a node netns, control socket in the test dir."""

    def __init__(self, topo, bins, node, name="np"):
        self.topo, self.bins, self.node = topo, bins, node
        self.sock = os.path.join(topo.tmpdir, f"{name}.sock")
        self.state = os.path.join(topo.tmpdir, f"{name}.state")
        self.proc = None
        self.start()

    def start(self):
        self.proc = self.node.popen(
            [str(self.bins / "ambit-node-proxy"), "run", "--control-socket", self.sock,
             "--state-file", self.state, "--workers", "2", "--drain-timeout", "1s",
             "--log-level", "info"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("node-proxy exited: " + self.topo.log(self.proc))
            if self.http("/healthz/ready", port=15021)[0] == 200:
                return
            time.sleep(0.05)
        raise TimeoutError("node-proxy not ready: " + self.topo.log(self.proc))

    def stop(self):
        self.topo.stop(self.proc)
        self.proc = None

    def http(self, path, port=15000):
        def get():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                return None, ""
        return netns_exec(self.node, get)

    def stats(self):
        code, body = self.http("/stats")
        assert code == 200, body
        return json.loads(body)["total"]

    def wait_accepted(self, base, n, timeout=5):
        """Stats once at least n more connections than base were accepted
        (workers publish their counters asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if s["accepted"] - base["accepted"] >= n or time.monotonic() > deadline:
                return s
            time.sleep(0.05)

    def workloads(self):
        r = self.node.run([str(self.bins / "ambit-node-proxy"), "ctl", "--socket", self.sock,
                           "list", "--json"])
        return {w["uid"]: w for w in json.loads(r.stdout)}


def assert_proxied(s0, s1):
    """One request crossed node-proxy: accepted on 15001 in the client pod,
    then either relayed straight into the server pod (same-node shortcut)
    or accepted a second time on 15006 there (two hops)."""
    assert s1["accepted"] - s0["accepted"] >= 1, (s0, s1)
    hops = s1["accepted"] - s0["accepted"]
    shortcuts = s1.get("local_shortcuts", 0) - s0.get("local_shortcuts", 0)
    assert hops >= 2 or shortcuts >= 1, (s0, s1)
    assert s1["bytes_up_down"] > s0["bytes_up_down"]
    assert s1["bytes_down_up"] > s0["bytes_down_up"]


@pytest.fixture
def tmp(topo):
    return topo.tmpdir


# --------------------------------------------------------------------------
# protocol: VERSION


@pytest.mark.parametrize("version", CNI_VERSIONS)
def test_version(bins, version):
    r = run_cni(bins, "VERSION", {"cniVersion": version})
    assert r.rc == 0, r
    assert r.json == {"cniVersion": version, "supportedVersions": ["1.0.0", "1.1.0"]}


def test_version_empty_stdin_and_unknown_version(bins):
    r = run_cni(bins, "VERSION", None, raw="")
    assert r.rc == 0, r
    assert r.json["supportedVersions"] == ["1.0.0", "1.1.0"]
    r = run_cni(bins, "VERSION", {"cniVersion": "0.4.0"})
    assert r.rc == 0, r
    assert r.json["cniVersion"] in CNI_VERSIONS
    assert r.json["supportedVersions"] == ["1.0.0", "1.1.0"]


def test_version_malformed(bins):
    r = run_cni(bins, "VERSION", None, raw="{not json")
    assert r.rc != 0 and r.code == 6, r


# --------------------------------------------------------------------------
# protocol: environment errors (code 4)


def test_missing_cni_command(bins, tmp):
    r = run_cni(bins, "ADD", conf_for(tmp, prev=FAKE_PREV), drop=["CNI_COMMAND"])
    assert r.rc != 0 and r.code == 4, r
    assert set(r.json) == {"cniVersion", "code", "msg", "details"}
    assert r.json["cniVersion"] == "1.0.0"  # the request's version


def test_unknown_cni_command(bins, tmp):
    r = run_cni(bins, "FROB", conf_for(tmp))
    assert r.rc != 0 and r.code == 4, r


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_IFNAME"])
def test_missing_variables(bins, tmp, command, var):
    r = run_cni(bins, command, conf_for(tmp, prev=FAKE_PREV), drop=[var])
    assert r.rc != 0 and r.code == 4, r
    assert var in r.json["msg"]


@pytest.mark.parametrize("env", [
    {"CNI_CONTAINERID": "../../etc/passwd"},
    {"CNI_CONTAINERID": "x" * 300},
    {"CNI_IFNAME": "eth0/x"},
    {"CNI_IFNAME": "a-very-long-ifname"},
    {"CNI_NETNS": "relative/path"},
    {"CNI_ARGS": "K8S_POD_NAME"},
    {"CNI_ARGS": "K8S_POD_NAMESPACE=has space"},
    {"CNI_ARGS": "AMBIT_ENROLL=perhaps"},
    {"CNI_ARGS": "AMBIT_LABELS=app"},
    {"CNI_ARGS": "K" + "=v;K" * 3000},
])
def test_bad_variables(bins, tmp, env):
    r = run_cni(bins, "ADD", conf_for(tmp, prev=FAKE_PREV), env=env)
    assert r.rc != 0 and r.code == 4, r


def test_netns_not_a_namespace(bins, tmp):
    f = os.path.join(tmp, "plain-file")
    open(f, "w").close()
    r = run_cni(bins, "ADD", conf_for(tmp, prev=FAKE_PREV), env={"CNI_NETNS": f})
    assert r.rc != 0 and r.code == 4, r


def test_netns_missing_is_code_3(bins, tmp):
    r = run_cni(bins, "ADD", conf_for(tmp, prev=FAKE_PREV),
                env={"CNI_NETNS": os.path.join(tmp, "no-such-netns")})
    assert r.rc != 0 and r.code == 3, r


# --------------------------------------------------------------------------
# protocol: decode (6), config (7), version (1)


@pytest.mark.parametrize("raw", ["", "{", "not json", '{"cniVersion":"1.0.0",}', "\x00\x01",
                                 '{"cniVersion":"1.0.0","type":"ambit-cni","type":"x"}'])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_malformed_json(bins, command, raw):
    r = run_cni(bins, command, None, raw=raw)
    assert r.rc != 0 and r.code == 6, r
    assert r.json["msg"]


@pytest.mark.parametrize("change", [
    {"type": None},
    {"cniVersion": None},
    {"cniVersion": 1},
    {"name": "../x"},
    {"controlSocket": "relative.sock"},
    {"stateDir": 5},
    {"timeoutMs": 0},
    {"excludeNamespaces": "kube-system"},
    {"enrollNamespaces": [1]},
    {"labels": {"app": 1}},
    {"serviceAccount": "a b"},
    {"redirect": {"excludeCidrs": ["10.0.0.0/40"]}},
    {"redirect": {"excludePorts": [70000]}},
    {"redirect": {"excludeInboundPorts": "22"}},
    {"prevResult": "x"},
])
def test_invalid_config(bins, tmp, change):
    c = conf_for(tmp, prev=FAKE_PREV)
    for k, v in change.items():
        if v is None:
            c.pop(k)
        else:
            c[k] = v
    r = run_cni(bins, "ADD", c)
    assert r.rc != 0 and r.code == 7, r


def test_add_without_prev_result(bins, tmp):
    r = run_cni(bins, "ADD", conf_for(tmp))
    assert r.rc != 0 and r.code == 7, r
    assert "prevResult" in r.json["msg"]


def test_redirect_settings_rejected_as_config(bins, tmp):
    # Parsed fine, but the redirector's validation refuses duplicates.
    c = conf_for(tmp, prev=FAKE_PREV, redirect={"excludePorts": [22, 22]})
    r = run_cni(bins, "ADD", c)
    assert r.rc != 0 and r.code == 7, r


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "2.0.0"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_incompatible_version(bins, tmp, command, version):
    r = run_cni(bins, command, conf_for(tmp, version=version, prev=FAKE_PREV))
    assert r.rc != 0 and r.code == 1, r


@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_gc_need_1_1_0(bins, tmp, command):
    r = run_cni(bins, command, conf_for(tmp, version="1.0.0"))
    assert r.rc != 0 and r.code == 1, r


# --------------------------------------------------------------------------
# protocol: DEL is idempotent; logs never on stdout


@pytest.mark.parametrize("version", CNI_VERSIONS)
def test_del_without_netns_or_prev_result_twice(bins, tmp, version):
    c = conf_for(tmp, version=version)
    for _ in range(2):
        r = run_cni(bins, "DEL", c, env={"CNI_NETNS": ""})
        assert r.rc == 0, r
        assert r.stdout == "", r
        # node-proxy is unreachable: said on stderr, not an error
        assert "node-proxy" in r.stderr


def test_del_netns_gone(bins, tmp):
    r = run_cni(bins, "DEL", conf_for(tmp, prev=FAKE_PREV),
                env={"CNI_NETNS": os.path.join(tmp, "gone")})
    assert r.rc == 0 and r.stdout == "", r


def test_log_file(bins, tmp):
    log = os.path.join(tmp, "cni.log")
    r = run_cni(bins, "DEL", conf_for(tmp, logFile=log), env={"CNI_NETNS": ""})
    assert r.rc == 0 and r.stdout == "" and r.stderr == "", r
    text = open(log).read()
    assert "cmd=DEL" in text and "container=ctr-0123456789abcdef" in text


# --------------------------------------------------------------------------
# protocol: STATUS / GC with node-proxy absent


def test_status_node_proxy_absent(bins, tmp):
    r = run_cni(bins, "STATUS", conf_for(tmp, version="1.1.0"))
    assert r.rc != 0 and r.code == 50, r


def test_gc_without_valid_attachments_refused(bins, tmp):
    r = run_cni(bins, "GC", conf_for(tmp, version="1.1.0"))
    assert r.rc != 0 and r.code == 7, r


def test_gc_node_proxy_absent(bins, tmp):
    c = conf_for(tmp, version="1.1.0")
    c["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"}]
    r = run_cni(bins, "GC", c)
    assert r.rc != 0 and r.code == 11, r


# --------------------------------------------------------------------------
# not enrolled: prevResult passes through untouched, nothing else happens


@pytest.mark.parametrize("version", CNI_VERSIONS)
@pytest.mark.parametrize("how", ["excluded-ns", "opt-out", "allow-list", "no-netns"])
def test_not_enrolled_passes_prev_result(bins, tmp, version, how):
    c = conf_for(tmp, version=version, prev=FAKE_PREV, excludeNamespaces=["kube-system"])
    args = "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=p"
    env = {"CNI_NETNS": os.path.join(tmp, "never-opened")}
    if how == "excluded-ns":
        args = "K8S_POD_NAMESPACE=kube-system;AMBIT_ENROLL=true"
    elif how == "opt-out":
        args += ";AMBIT_ENROLL=false"
    elif how == "allow-list":
        c["enrollNamespaces"] = ["payments"]
    else:
        env["CNI_NETNS"] = ""
    env["CNI_ARGS"] = args
    r = run_cni(bins, "ADD", c, env=env)
    assert r.rc == 0, r
    want = dict(FAKE_PREV)
    want["cniVersion"] = version
    assert r.json == want
    assert state_files(tmp) == []
    r = run_cni(bins, "CHECK", c, env=env)
    assert r.rc == 0, r


def test_host_network_pod_skipped(topo, bins, tmp):
    # The plugin runs in the node netns; CNI_NETNS names that same netns.
    n1 = topo.add_node("n1")
    c = conf_for(tmp, prev=FAKE_PREV)
    r = run_cni(bins, "ADD", c, env={"CNI_NETNS": n1.path}, netns_of=n1)
    assert r.rc == 0, r
    assert r.json["ips"] == FAKE_PREV["ips"]
    assert "inet ambit" not in n1.run(["nft", "list", "tables"]).stdout
    assert state_files(tmp) == []


# --------------------------------------------------------------------------
# real pods, node-proxy down: fail closed


def test_add_node_proxy_down_leaves_nothing(topo, bins, tmp):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    rules_before = ip_rules(a)
    r = run_cni(bins, "ADD", conf_for(tmp, prev=a.result), env=pod_env(a), netns_of=n1)
    assert r.rc != 0 and r.code == 11, r
    assert "node-proxy" in r.json["msg"]
    assert r.json["details"]
    assert not has_ambit_table(a)
    assert ip_rules(a) == rules_before
    assert state_files(tmp) == []
    # and the pod's network still works unmeshed for the runtime's retry
    assert f"inet {a.ip}/" in a.run(["ip", "-o", "addr", "show", "eth0"]).stdout


def test_add_state_dir_unwritable(topo, bins, tmp):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    blocker = os.path.join(tmp, "file")
    open(blocker, "w").close()
    c = conf_for(tmp, prev=a.result, stateDir=os.path.join(blocker, "sub"))
    r = run_cni(bins, "ADD", c, env=pod_env(a), netns_of=n1)
    assert r.rc != 0 and r.code == 103, r
    assert not has_ambit_table(a)


def test_add_prev_result_without_sandbox_ip(topo, bins, tmp):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    prev = json.loads(json.dumps(a.result))
    for itf in prev["interfaces"]:
        itf.pop("sandbox", None)
    r = run_cni(bins, "ADD", conf_for(tmp, prev=prev), env=pod_env(a), netns_of=n1)
    assert r.rc != 0 and r.code == 7, r
    assert not has_ambit_table(a)


# --------------------------------------------------------------------------
# real pods, node-proxy up


@pytest.fixture
def proxied(topo, bins):
    n1 = topo.add_node("n1")
    proxy = Proxy(topo, bins, n1)
    return n1, proxy


@pytest.mark.parametrize("version", CNI_VERSIONS)
def test_add_check_del(proxied, topo, bins, tmp, version):
    n1, proxy = proxied
    a = topo.add_pod(n1, "a")
    c = conf_for(tmp, version=version, prev=a.result, sock=proxy.sock,
                 labels={"team": "x", "app": "cfg"}, serviceAccount="cfg-sa")
    env = pod_env(a, AMBIT_LABELS="app:web,version:v1", K8S_POD_NAMESPACE="prod")
    r = run_cni(bins, "ADD", c, env=env, netns_of=n1)
    assert r.rc == 0, r
    want = dict(a.result)
    want["cniVersion"] = version
    assert r.json == want

    uid = a.cni_args["K8S_POD_UID"]
    w = proxy.workloads()[uid]
    assert w["namespace"] == "prod"
    assert w["name"] == "a"
    assert w["service_account"] == "cfg-sa"
    assert w["labels"] == {"team": "x", "app": "web", "version": "v1"}
    assert w["ips"] == [a.ip]
    assert w["netns_path"] == a.path
    assert has_ambit_table(a)
    assert "0x111" in ip_rules(a)
    assert len(state_files(tmp)) == 1

    r = run_cni(bins, "CHECK", c, env=env, netns_of=n1)
    assert r.rc == 0 and r.stdout == "", r

    # ADD again (runtime retry): still one registration, still one record
    r = run_cni(bins, "ADD", c, env=env, netns_of=n1)
    assert r.rc == 0, r
    assert list(proxy.workloads()) == [uid]

    # DEL twice, then once more without prevResult
    for conf in (c, c, {k: v for k, v in c.items() if k != "prevResult"}):
        r = run_cni(bins, "DEL", conf, env=env, netns_of=n1)
        assert r.rc == 0 and r.stdout == "", r
    assert uid not in proxy.workloads()
    assert not has_ambit_table(a)
    assert "0x111" not in ip_rules(a)
    assert state_files(tmp) == []


def test_add_rules_fail_undoes_registration(proxied, topo, bins, tmp):
    # The redirector refuses a pod whose loopback is down (captured
    # connections go through it).  node-proxy was asked concurrently and
    # acked: the registration must be taken back, nothing left (code 100).
    n1, proxy = proxied
    a = topo.add_pod(n1, "a")
    a.run(["ip", "link", "set", "lo", "down"])
    r = run_cni(bins, "ADD", conf_for(tmp, prev=a.result, sock=proxy.sock), env=pod_env(a),
                netns_of=n1)
    assert r.rc != 0 and r.code == 100, r
    assert "loopback" in r.json["details"]
    assert proxy.workloads() == {}
    assert not has_ambit_table(a)
    assert "0x111" not in ip_rules(a)
    assert state_files(tmp) == []


def test_concurrent_add_del(proxied, topo, bins, tmp):
    # kubelet starts pods in parallel: 12 ADDs at once, then 12 DELs and a
    # GC racing them; every pod ends registered, then every one gone.
    import concurrent.futures as cf
    n1, proxy = proxied
    pods = [topo.add_pod(n1, f"p{i}") for i in range(12)]
    c = conf_for(tmp, version="1.1.0", sock=proxy.sock)

    def add(p):
        return run_cni(bins, "ADD", dict(c, prevResult=p.result), env=pod_env(p), netns_of=n1)

    def dele(p):
        return run_cni(bins, "DEL", c, env=pod_env(p), netns_of=n1)

    with cf.ThreadPoolExecutor(12) as ex:
        for r in ex.map(add, pods):
            assert r.rc == 0, r
    assert len(proxy.workloads()) == 12
    assert len(state_files(tmp)) == 12
    assert all(has_ambit_table(p) for p in pods)
    gc = dict(c)
    gc["cni.dev/valid-attachments"] = [{"containerID": p.containerid, "ifname": "eth0"}
                                       for p in pods]
    with cf.ThreadPoolExecutor(13) as ex:
        g = ex.submit(run_cni, bins, "GC", gc, None, n1)
        for r in ex.map(dele, pods):
            assert r.rc == 0, r
        assert g.result().rc == 0, g.result()
    assert proxy.workloads() == {}
    assert state_files(tmp) == []
    assert not any(has_ambit_table(p) for p in pods)


def test_check_detects_drift(proxied, topo, bins, tmp):
    n1, proxy = proxied
    a = topo.add_pod(n1, "a")
    c = conf_for(tmp, prev=a.result, sock=proxy.sock)
    env = pod_env(a)
    assert run_cni(bins, "ADD", c, env=env, netns_of=n1).rc == 0
    a.run(["nft", "delete", "table", "inet", "ambit"])
    r = run_cni(bins, "CHECK", c, env=env, netns_of=n1)
    assert r.rc != 0 and r.code == 101, r
    # re-ADD repairs; then node-proxy forgetting the pod is drift too
    assert run_cni(bins, "ADD", c, env=env, netns_of=n1).rc == 0
    assert run_cni(bins, "CHECK", c, env=env, netns_of=n1).rc == 0
    n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", proxy.sock, "del", "--uid",
            a.cni_args["K8S_POD_UID"]])
    r = run_cni(bins, "CHECK", c, env=env, netns_of=n1)
    assert r.rc != 0 and r.code == 102, r
    # node-proxy gone entirely: CHECK cannot verify, try again later
    proxy.stop()
    r = run_cni(bins, "CHECK", c, env=env, netns_of=n1)
    assert r.rc != 0 and r.code == 11, r


def test_uid_falls_back_to_container_id(proxied, topo, bins, tmp):
    n1, proxy = proxied
    a = topo.add_pod(n1, "a")
    c = conf_for(tmp, prev=a.result, sock=proxy.sock)
    env = pod_env(a, K8S_POD_UID=None, K8S_POD_NAME=None, K8S_POD_NAMESPACE=None)
    assert run_cni(bins, "ADD", c, env=env, netns_of=n1).rc == 0
    w = proxy.workloads()
    assert list(w) == [a.containerid[:63]]
    assert w[a.containerid[:63]]["namespace"] == "default"
    # DEL with no CNI_ARGS at all still finds the uid through the record
    env["CNI_ARGS"] = ""
    assert run_cni(bins, "DEL", c, env=env, netns_of=n1).rc == 0
    assert proxy.workloads() == {}


def test_del_node_proxy_down_succeeds(proxied, topo, bins, tmp):
    n1, proxy = proxied
    a = topo.add_pod(n1, "a")
    c = conf_for(tmp, prev=a.result, sock=proxy.sock)
    assert run_cni(bins, "ADD", c, env=pod_env(a), netns_of=n1).rc == 0
    proxy.stop()
    r = run_cni(bins, "DEL", c, env=pod_env(a), netns_of=n1)
    assert r.rc == 0, r
    assert "did not deregister" in r.stderr
    assert not has_ambit_table(a)
    assert state_files(tmp) == []


def test_status(proxied, bins, tmp):
    n1, proxy = proxied
    c = conf_for(tmp, version="1.1.0", sock=proxy.sock)
    r = run_cni(bins, "STATUS", c, netns_of=n1)
    assert r.rc == 0 and r.stdout == "", r
    proxy.stop()
    r = run_cni(bins, "STATUS", c, netns_of=n1)
    assert r.rc != 0 and r.code == 50, r


def test_gc(proxied, topo, bins, tmp):
    n1, proxy = proxied
    pods = [topo.add_pod(n1, n) for n in ("a", "b", "c")]
    c = conf_for(tmp, version="1.1.0", sock=proxy.sock)
    for p in pods:
        cc = dict(c, prevResult=p.result)
        assert run_cni(bins, "ADD", cc, env=pod_env(p), netns_of=n1).rc == 0
    assert len(proxy.workloads()) == 3
    gc = dict(c)
    gc["cni.dev/valid-attachments"] = [{"containerID": pods[0].containerid, "ifname": "eth0"},
                                       {"containerID": pods[2].containerid, "ifname": "eth0"}]
    r = run_cni(bins, "GC", gc, netns_of=n1)
    assert r.rc == 0 and r.stdout == "", r
    uids = set(proxy.workloads())
    assert uids == {pods[0].cni_args["K8S_POD_UID"], pods[2].cni_args["K8S_POD_UID"]}
    assert len(state_files(tmp)) == 2
    # idempotent
    r = run_cni(bins, "GC", gc, netns_of=n1)
    assert r.rc == 0, r
    assert set(proxy.workloads()) == uids
    # a registration without a record whose netns path is gone is stale too
    n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", proxy.sock, "add", "--uid",
            "orphan", "--namespace", "default", "--name", "orphan", "--netns", pods[1].path,
            "--ip", pods[1].ip])
    assert "orphan" in proxy.workloads()
    topo.del_pod(pods[1])  # removes /run/netns/<b>
    r = run_cni(bins, "GC", gc, netns_of=n1)
    assert r.rc == 0, r
    assert set(proxy.workloads()) == uids


# --------------------------------------------------------------------------
# the chain: bridge + host-local + ambit-cni through the harness


def ambit_plugin(proxy, tmp, **extra):
    p = {"type": "ambit-cni", "controlSocket": proxy.sock,
         "stateDir": os.path.join(tmp, "cni-state"), "excludeNamespaces": ["kube-system"]}
    p.update(extra)
    return p


def test_chain_traffic_through_node_proxy(proxied, topo, bins, tmp):
    n1, proxy = proxied
    plug = [ambit_plugin(proxy, tmp)]
    a = topo.add_pod(n1, "a", extra_plugins=plug, cni_args={"AMBIT_LABELS": "app:a"})
    b = topo.add_pod(n1, "b", extra_plugins=plug, cni_args={"AMBIT_SERVICE_ACCOUNT": "bsa"})
    w = proxy.workloads()
    assert w[a.cni_args["K8S_POD_UID"]]["labels"] == {"app": "a"}
    assert w[b.cni_args["K8S_POD_UID"]]["service_account"] == "bsa"
    assert has_ambit_table(a) and has_ambit_table(b)
    topo.check_pod(a)

    http_server(b, 8080)
    s0 = proxy.stats()
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"])
    assert r.stdout == "b\n"
    s1 = proxy.wait_accepted(s0, 1)
    assert_proxied(s0, s1)

    # DEL over the chain in reverse order, netns still there: everything
    # ambit added is gone (rules, routing, registration, record) ...
    rules_before = ip_rules(a)
    topo._cni_del(a)
    assert not has_ambit_table(a)
    assert "0x111" in rules_before and "0x111" not in ip_rules(a)
    assert a.cni_args["K8S_POD_UID"] not in proxy.workloads()
    assert len(state_files(tmp)) == 1
    # ... and the harness's own DEL (a second one) plus netns removal is fine
    topo.del_pod(a)
    topo.del_pod(b)
    assert proxy.workloads() == {}
    assert state_files(tmp) == []


def test_chain_identity_from_conf_args(proxied, topo, bins, tmp):
    # What Multus does with a pod's cni-args: "args": {"cni": {...}} in the
    # plugin's config.  CNI_ARGS still wins where both are given.
    n1, proxy = proxied
    plug = [ambit_plugin(proxy, tmp, serviceAccount="static", labels={"team": "t"},
                         args={"cni": {"AMBIT_SERVICE_ACCOUNT": "from-args",
                                       "AMBIT_LABELS": {"app": "args", "v": "1"}}})]
    a = topo.add_pod(n1, "a", extra_plugins=plug, cni_args={"AMBIT_LABELS": "v:2"})
    w = proxy.workloads()[a.cni_args["K8S_POD_UID"]]
    assert w["service_account"] == "from-args"
    assert w["labels"] == {"team": "t", "app": "args", "v": "2"}
    plug[0]["args"]["cni"]["AMBIT_ENROLL"] = False
    b = topo.add_pod(n1, "b", extra_plugins=plug)
    assert b.cni_args["K8S_POD_UID"] not in proxy.workloads()


def test_chain_opt_out_not_captured(proxied, topo, bins, tmp):
    n1, proxy = proxied
    plug = [ambit_plugin(proxy, tmp)]
    a = topo.add_pod(n1, "a", extra_plugins=plug, cni_args={"AMBIT_ENROLL": "false"})
    b = topo.add_pod(n1, "b", extra_plugins=plug, cni_args={"K8S_POD_NAMESPACE": "kube-system"})
    assert proxy.workloads() == {}
    assert not has_ambit_table(a) and not has_ambit_table(b)
    http_server(b, 8080)
    s0 = proxy.stats()
    assert a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"]).stdout == "b\n"
    assert proxy.stats()["accepted"] == s0["accepted"]


def test_chain_add_fails_when_node_proxy_down(proxied, topo, bins, tmp):
    n1, proxy = proxied
    plug = [ambit_plugin(proxy, tmp)]
    proxy.stop()
    with pytest.raises(CNIError) as ei:
        topo.add_pod(n1, "a", extra_plugins=plug)
    assert ei.value.code == 11
    assert ei.value.plugin == "ambit-cni"
    assert state_files(tmp) == []
    # the harness rolled the pod back: no netns of it remains
    assert not any(ns.endswith("-n1-a") for ns in topo.netns_created)
