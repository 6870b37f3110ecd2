"""Tests of the test harness itself: real namespaces, real CNI plugins."""

import ipaddress
import json
import os
import socket
import subprocess
import threading
import time

import pytest

import topology
from topology import (
    CNIError,
    CommandError,
    Topology,
    http_server,
    netns_exec,
    sha256_file,
    tcp_echo_server,
    wait_port,
)


def netns_names(prefix="amb"):
    """Our harness's namespaces (other runs may be going on concurrently, so
    tests filter by their own prefix where it matters)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith(prefix))


def sysctls():
    """The root netns's forwarding-related sysctls (what a bridge plugin
    running in the wrong netns would flip)."""
    vals = []
    for d in ("/proc/sys/net/ipv4", "/proc/sys/net/ipv4/conf/all", "/proc/sys/net/ipv4/conf/default",
              "/proc/sys/net/ipv6/conf/all", "/proc/sys/net/ipv6/conf/default"):
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if os.path.isfile(path):
                try:
                    with open(path) as f:
                        vals.append(f"{path}={f.read().strip()}")
                except OSError:
                    pass  # write-only (flush) files
    return "\n".join(vals)


def root_state():
    """What the root netns looks like (links without counters, routes,
    ip_forward, nft rules)."""
    def out(*cmd):
        return subprocess.run(list(cmd), capture_output=True, text=True).stdout

    return {
        "links": out("ip", "-o", "link", "show"),
        "addrs": out("ip", "-o", "addr", "show"),
        "routes": out("ip", "route", "show", "table", "all"),
        "rules": out("ip", "rule", "show"),
        "sysctl": sysctls(),
        "nft": out("nft", "list", "ruleset"),
    }


def assert_same_root(before, after):
    import difflib

    diffs = []
    for k in before:
        if before[k] != after[k]:
            diffs.append(f"[{k}]\n" + "\n".join(difflib.unified_diff(
                before[k].splitlines(), after[k].splitlines(), lineterm="")))
    assert not diffs, "root netns changed:\n" + "\n".join(diffs)


def own_netns():
    return os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")


def curl(pod, url, timeout=10):
    return pod.run(["curl", "-sS", "--max-time", str(timeout), url], timeout=timeout + 5).stdout


def test_two_pods_one_node_ping_and_http(topo):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    a.run(["ping", "-c", "1", "-W", "2", b.ip])
    b.run(["ping", "-c", "1", "-W", "2", a.ip])
    http_server(b, 8080)
    http_server(a, 8080)
    assert curl(a, f"http://{b.ip}:8080/") == "b\n"
    assert curl(b, f"http://{a.ip}:8080/") == "a\n"
    # The server sees the client's pod IP (no masquerading on the bridge).
    assert curl(a, f"http://{b.ip}:8080/peer").split(":")[0] == a.ip
    # The node reaches its pods through the bridge gateway address.
    assert n1.run(["curl", "-sS", "--max-time", "5", f"http://{a.ip}:8080/"]).stdout == "a\n"


def test_pod_addresses_distinct_and_in_subnet(topo):
    n1 = topo.add_node("n1")
    pods = [topo.add_pod(n1, f"p{i}") for i in range(4)]
    ips = [p.ip for p in pods]
    assert len(set(ips)) == len(ips)
    for p in pods:
        addr = ipaddress.ip_address(p.ip)
        assert addr in n1.subnet
        assert p.ip != n1.gateway
        assert p.result["cniVersion"] == "1.0.0"
        # The address really is on the pod's eth0 and the default route
        # points at the node's bridge.
        assert f"{p.ip}/{n1.subnet.prefixlen}" in p.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
        assert f"default via {n1.gateway} dev eth0" in p.run(["ip", "route"]).stdout
        # lo is up, as a runtime leaves it: the pod reaches itself on 127.0.0.1.
        assert "LOOPBACK,UP" in p.run(["ip", "link", "show", "lo"]).stdout
        p.run(["ping", "-c", "1", "-W", "2", "127.0.0.1"])
    # ip_forward is on in the node, set inside the node netns.
    assert n1.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"


def test_del_pod_removes_netns_veth_and_releases_ip(topo):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    veth = a.host_veth
    assert veth and veth.startswith("veth")
    assert veth in n1.run(["ip", "-o", "link", "show", "master", n1.bridge]).stdout
    ipam_file = os.path.join(n1.ipam_dir, topology.NETWORK_NAME, a.ip)
    assert os.path.exists(ipam_file)
    old_ip, old_ns = a.ip, a.netns

    topo.del_pod(a)

    assert old_ns not in netns_names()
    assert not os.path.exists(a.path)
    assert veth not in n1.run(["ip", "-o", "link", "show"]).stdout
    assert not os.path.exists(ipam_file), "host-local kept the address"
    # b is unaffected
    b.run(["ping", "-c", "1", "-W", "2", n1.gateway])
    # Re-adding gets an address again.
    c = topo.add_pod(n1, "c")
    assert ipaddress.ip_address(c.ip) in n1.subnet


def test_ip_exhaustion_and_reuse(topo):
    """A /29 has 5 pod addresses: the 6th ADD fails with host-local's error
    and is rolled back; after a DEL the freed address is handed out again."""
    n1 = topo.add_node("n1", subnet=f"10.{topo.octet}.9.0/29")
    pods = [topo.add_pod(n1, f"p{i}") for i in range(5)]
    assert len({p.ip for p in pods}) == 5
    with pytest.raises(CNIError) as ei:
        topo.add_pod(n1, "full")
    assert "no IP addresses available" in ei.value.msg
    assert ei.value.plugin == "bridge"
    assert f"{topo.prefix}-n1-full" not in netns_names()
    ports = n1.run(["ip", "-o", "link", "show", "master", n1.bridge]).stdout
    assert ports.count("veth") == 5, ports
    freed = pods[2].ip
    topo.del_pod(pods[2])
    again = topo.add_pod(n1, "again")
    assert again.ip == freed
    again.run(["ping", "-c", "1", "-W", "2", pods[0].ip])


def test_two_nodes_pod_to_pod(topo):
    n1 = topo.add_node("n1")
    n2 = topo.add_node("n2")
    ip1, ip2 = topo.link_nodes(n1, n2)
    a = topo.add_pod(n1, "a")
    c = topo.add_pod(n2, "c")
    assert ipaddress.ip_address(a.ip) in n1.subnet
    assert ipaddress.ip_address(c.ip) in n2.subnet
    assert not n1.subnet.overlaps(n2.subnet)
    http_server(c, 8080)
    http_server(a, 9090)
    assert curl(a, f"http://{c.ip}:8080/") == "c\n"
    assert curl(c, f"http://{a.ip}:9090/") == "a\n"
    # Routed, not NATed: c sees a's pod IP.
    assert curl(a, f"http://{c.ip}:8080/peer").split(":")[0] == a.ip
    # Path goes through both node gateways (2 hops before c).
    a.run(["ping", "-c", "1", "-W", "2", ip2])
    out = a.run(["ping", "-c", "1", "-W", "2", c.ip]).stdout
    assert "ttl=62" in out


def test_bulk_transfer_and_echo(topo):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    http_server(b, 8080)
    dst = os.path.join(topo.tmpdir, "dl")
    a.run(["curl", "-sS", "--max-time", "20", "-o", dst, f"http://{b.ip}:8080/bytes/5000000"], timeout=30)
    assert os.path.getsize(dst) == 5000000
    import hashlib

    assert sha256_file(dst) == hashlib.sha256(b"x" * 5000000).hexdigest()

    tcp_echo_server(b, 7000)

    def talk():
        with socket.create_connection((b.ip, 7000), timeout=5) as s:
            s.sendall(b"hello ambit")
            return s.recv(100)

    assert netns_exec(a, talk) == b"hello ambit"


def test_netns_exec_sockets_live_in_pod(topo):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    orig = own_netns()
    srv = netns_exec(a, socket.create_server, ("0.0.0.0", 4242))
    try:
        # Visible in a's netns, not in the node's.
        assert ":4242" in a.run(["ss", "-Hltn"]).stdout
        assert ":4242" not in n1.run(["ss", "-Hltn"]).stdout
        wait_port(a, 4242)
        with topology.in_netns(a):
            c = socket.create_connection(("127.0.0.1", 4242), timeout=2)
        conn, peer = srv.accept()
        assert peer[0] == "127.0.0.1"
        conn.close()
        c.close()
    finally:
        srv.close()
    # Back in our own netns after the with-block.
    assert own_netns() == orig
    with pytest.raises(TimeoutError):
        wait_port(a, 4243, timeout=0.5)


def test_run_errors_carry_output(topo):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    with pytest.raises(CommandError) as ei:
        a.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert ei.value.returncode == 3
    assert "boom" in str(ei.value)
    r = a.run("exit 5", check=False)
    assert r.returncode == 5
    assert a.run(["cat"], input="piped").stdout == "piped"


def test_bad_plugin_config_raises_cni_error_and_leaves_nothing(topo):
    n1 = topo.add_node("n1")
    before = netns_names(topo.prefix)
    orig = n1.conflist

    def broken(extra_plugins=None):
        c = orig(extra_plugins)
        c["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.300.0.0/24"}]]
        return c

    n1.conflist = broken
    with pytest.raises(CNIError) as ei:
        topo.add_pod(n1, "bad")
    n1.conflist = orig
    err = ei.value
    assert isinstance(err.code, int) and err.code > 0
    assert err.plugin == "bridge" and err.command == "ADD"
    assert "invalid CIDR" in err.msg and "10.300.0.0" in err.msg, err.msg
    assert "code %d" % err.code in str(err)
    assert netns_names(topo.prefix) == before
    assert not topo.pods and "bad" not in n1.pods
    # No bridge port or veth was left in the node.
    assert "veth" not in n1.run(["ip", "-o", "link"]).stdout
    # The node still works.
    p = topo.add_pod(n1, "good")
    assert ipaddress.ip_address(p.ip) in n1.subnet


def test_failing_chained_plugin_rolls_back(topo):
    """A chained plugin that fails after bridge succeeded: CNIError with its
    code; bridge's veth and host-local's address are rolled back by DEL."""
    n1 = topo.add_node("n1")
    first = topo.add_pod(n1, "first")  # so the bridge exists
    with pytest.raises(CNIError) as ei:
        # "tuning" with an invalid sysctl fails in ADD after bridge ran.
        topo.add_pod(n1, "bad", extra_plugins=[{"type": "tuning", "sysctl": {"net.no.such.thing": "1"}}])
    assert ei.value.plugin == "tuning"
    assert ei.value.code is not None
    links = n1.run(["ip", "-o", "link", "show", "master", n1.bridge]).stdout
    assert links.count("veth") == 1, links
    ipam = os.listdir(os.path.join(n1.ipam_dir, topology.NETWORK_NAME))
    assert sorted(x for x in ipam if x[0].isdigit()) == [first.ip]


def test_missing_plugin_is_reported(topo):
    n1 = topo.add_node("n1")
    with pytest.raises(CNIError) as ei:
        topo.add_pod(n1, "x", extra_plugins=[{"type": "no-such-plugin-ambit"}])
    assert "no-such-plugin-ambit" in str(ei.value)
    assert "x" not in n1.pods
    assert f"{topo.prefix}-n1-x" not in netns_names()


def test_prev_result_and_cni_args_passed_like_libcni(topo, tmp_path):
    """A recording plugin chained after bridge sees prevResult, name,
    cniVersion and the CNI_* environment, in ADD and in DEL."""
    rec = tmp_path / "rec"
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    plugin = plugdir / "ambit-record"
    plugin.write_text(
        "#!/bin/sh\n"
        f"f={rec}.$CNI_COMMAND\n"
        "cat > $f.stdin\n"
        "env | grep ^CNI_ | sort > $f.env\n"
        "readlink /proc/self/ns/net > $f.ns\n"
        "if [ $CNI_COMMAND = ADD ]; then\n"
        f"  {topology.PYTHON} -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[\"prevResult\"]))' $f.stdin\n"
        "fi\n"
    )
    plugin.chmod(0o755)
    topo.cni_path += f":{plugdir}"
    n1 = topo.add_node("n1")
    p = topo.add_pod(n1, "rec", extra_plugins=[{"type": "ambit-record", "mode": "x"}],
                     cni_args={"K8S_POD_NAMESPACE": "prod", "EXTRA": "1"})
    add = json.loads((tmp_path / "rec.ADD.stdin").read_text())
    assert add["name"] == topology.NETWORK_NAME and add["cniVersion"] == "1.0.0"
    assert add["mode"] == "x" and add["type"] == "ambit-record"
    assert add["prevResult"]["ips"][0]["address"].split("/")[0] == p.ip
    env = dict(line.split("=", 1) for line in (tmp_path / "rec.ADD.env").read_text().splitlines())
    assert env["CNI_COMMAND"] == "ADD"
    assert env["CNI_NETNS"] == p.path
    assert env["CNI_IFNAME"] == "eth0"
    assert env["CNI_CONTAINERID"] == p.containerid
    args = dict(kv.split("=", 1) for kv in env["CNI_ARGS"].split(";"))
    assert args["K8S_POD_NAMESPACE"] == "prod" and args["K8S_POD_NAME"] == "rec"
    assert args["EXTRA"] == "1" and args["K8S_POD_UID"]
    assert env["CNI_PATH"].split(":")[0] == "/usr/lib/cni"
    # The plugin ran in the node's netns, not the root one.
    node_ns = n1.run(["readlink", "/proc/self/ns/net"]).stdout.strip()
    assert (tmp_path / "rec.ADD.ns").read_text().strip() == node_ns
    assert p.result == add["prevResult"]  # passthrough plugin: result unchanged
    topo.del_pod(p)
    dele = json.loads((tmp_path / "rec.DEL.stdin").read_text())
    assert dele["prevResult"] == p.result


def test_teardown_removes_everything_and_root_untouched(bins):
    before = root_state()
    t = Topology(bins=bins)
    prefix = t.prefix
    assert len(prefix) == 8 and prefix.startswith("amb")
    n1 = t.add_node("n1")
    n2 = t.add_node("n2")
    t.link_nodes(n1, n2)
    a = t.add_pod(n1, "a")
    b = t.add_pod(n2, "b")
    srv = http_server(b, 8080)
    sleeper = a.popen(["sleep", "1000"])
    # A process started outside popen inside a pod is also reaped.
    stray = subprocess.Popen(["nsenter", f"--net={a.path}", "sleep", "1000"])
    assert netns_names(prefix)
    assert os.path.isdir(t.tmpdir)
    assert t.marker.exists()
    assert_same_root(before, root_state())
    t.teardown()
    t.teardown()  # idempotent
    assert t.errors == []
    assert not netns_names(prefix)
    assert srv.poll() is not None and sleeper.poll() is not None
    assert stray.wait(timeout=5) is not None
    assert not os.path.exists(t.tmpdir)
    assert not t.marker.exists()
    assert_same_root(before, root_state())


def test_teardown_after_failure_in_middle(bins):
    """A test body that raises half-way still leaves nothing behind."""
    t = Topology(bins=bins)
    prefix = t.prefix
    with pytest.raises(RuntimeError):
        with t:
            n1 = t.add_node("n1")
            t.add_pod(n1, "a")
            raise RuntimeError("test failed here")
    assert not netns_names(prefix)


def test_sweep_removes_dead_runs_only(bins):
    """A run whose owner died is swept; a live run is left alone."""
    script = (
        "import sys, os; sys.path.insert(0, %r)\n"
        "from topology import Topology\n"
        "t = Topology(); n = t.add_node('n1'); a = t.add_pod(n, 'a')\n"
        "p1 = t.popen(['sleep', '1000']); p2 = a.popen(['sleep', '1001'])\n"
        "print(t.prefix, p1.pid, p2.pid, flush=True); os._exit(0)\n"  # dies without teardown
    ) % os.path.dirname(topology.__file__)
    out = subprocess.run([topology.PYTHON, "-c", script], capture_output=True, text=True, check=True).stdout
    dead, pid1, pid2 = out.split()
    assert topology._pid_start_time(int(pid1)) is not None
    assert dead.startswith("amb") and netns_names(dead)
    live = Topology(bins=bins)
    try:
        live.add_node("n1")
        swept = topology.sweep_stale()
        assert dead in swept
        assert live.prefix not in swept
        assert not netns_names(dead)
        assert netns_names(live.prefix)
        assert not (topology.MARKER_DIR / f"{dead}.json").exists()
        # The dead run's processes, in the root netns and in its pod, are gone.
        for pid in (pid1, pid2):
            for _ in range(50):
                if topology._pid_start_time(int(pid)) is None:
                    break
                time.sleep(0.1)
            assert topology._pid_start_time(int(pid)) is None, f"pid {pid} survived the sweep"
    finally:
        live.teardown()


def test_sigterm_tears_down(bins):
    script = (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from topology import Topology\n"
        "t = Topology(); n = t.add_node('n1'); t.add_pod(n, 'a')\n"
        "print(t.prefix, flush=True); time.sleep(60)\n"
    ) % os.path.dirname(topology.__file__)
    p = subprocess.Popen([topology.PYTHON, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        prefix = p.stdout.readline().strip()
        assert netns_names(prefix)
        p.terminate()
        p.wait(timeout=30)
        assert not netns_names(prefix)
        assert not (topology.MARKER_DIR / f"{prefix}.json").exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_interface_names_fit(topo):
    n1 = topo.add_node("n1")
    n2 = topo.add_node("n2")
    topo.link_nodes(n1, n2)
    for node in (n1, n2):
        for line in node.run(["ip", "-o", "link"]).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            assert len(name) <= 15
    assert any(l[0].startswith(topo.prefix) for l in n1.links)


def test_bad_names_rejected(topo):
    with pytest.raises(ValueError):
        topo.add_node("Bad_Name")
    n1 = topo.add_node("n1")
    with pytest.raises(ValueError):
        topo.add_node("n1")
    with pytest.raises(ValueError):
        topo.add_pod(n1, "x" * 40)


@pytest.mark.timeout(3)
def test_hung_test_is_stopped_by_timeout_marker(topo):
    """The harness's own per-test timeout: a command that would hang is
    interrupted and its process killed."""
    n1 = topo.add_node("n1")
    t0 = time.monotonic()
    with pytest.raises(topology.TestTimeout):
        n1.run(["sleep", "30"], timeout=60)
    assert time.monotonic() - t0 < 5
    assert topology._netns_pids(n1.netns) == []
