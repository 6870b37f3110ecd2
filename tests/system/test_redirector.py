"""System tests of ambit-redirect with real pods (bridge + host-local CNI).

The capture is proven from the packets' point of view: a tiny listener in
pod A's own netns on 15001/15006 answers every connection with the
SO_ORIGINAL_DST the kernel recorded, so `curl http://B:8080/` from A
returning "orig=B:8080" means the connection was redirected inside A and
the original destination survived.  The transparent return path (connmark
0x111 + policy routing) is proven with an IP_TRANSPARENT socket that
spoofs another pod's address, which only gets its SYN-ACK back through
table 100.  The machine's root netns is compared before and after every
test.
"""

import os
import re
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from topology import PYTHON, http_server, netns_exec, wait_port

SO_MARK = 36
IP_TRANSPARENT = 19

# Prints and answers "orig=<SO_ORIGINAL_DST> local=<sockname>" for each
# connection, on IPv4 and IPv6 (two sockets, v6only, so each family's
# getsockopt level is the natural one).
ORIG_DST_LISTENER = r"""
import select, socket, struct, sys, threading
port = int(sys.argv[1])
def orig(c, fam):
    if fam == socket.AF_INET:
        raw = c.getsockopt(socket.SOL_IP, 80, 16)          # SO_ORIGINAL_DST
        return "%s:%d" % (socket.inet_ntop(socket.AF_INET, raw[4:8]),
                          struct.unpack("!H", raw[2:4])[0])
    raw = c.getsockopt(socket.IPPROTO_IPV6, 80, 28)       # IP6T_SO_ORIGINAL_DST
    return "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                        struct.unpack("!H", raw[2:4])[0])
def serve(c, fam):
    with c:
        try:
            o = orig(c, fam)
        except OSError as e:
            o = "none(errno %d)" % e.errno
        c.settimeout(5)
        try:
            c.recv(65536)
        except OSError:
            pass
        local = c.getsockname()
        body = ("orig=%s local=%s:%d\n" % (o, local[0], local[1])).encode()
        print(body.decode().strip(), flush=True)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % len(body) + body)
socks = []
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(64)
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, s.family), daemon=True).start()
"""


# --------------------------------------------------------------------------
# helpers


def redirect(bins, *args, user=None, timeout=30):
    """Run ambit-redirect from the test process (outside every pod), as a
    CNI plugin would.  user="nobody" drops to uid/gid 65534 first."""
    cmd = [str(bins / "ambit-redirect")] + [str(a) for a in args]
    if user == "nobody":
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def orig_listener(pod, port):
    p = pod.popen([PYTHON, "-c", ORIG_DST_LISTENER, str(port)])
    wait_port(pod, port)
    return p


def curl(pod, url, timeout=5, check=True):
    p = pod.run(["curl", "-sS", "--max-time", str(timeout), url], check=check, timeout=timeout + 10)
    return p.stdout if check else p


def ruleset(pod):
    return pod.run(["nft", "list", "ruleset"]).stdout


def routing(pod):
    """Rules and table-100 routes of both families, one string."""
    out = []
    for fam in ("-4", "-6"):
        out.append(pod.run(["ip", fam, "rule", "show"]).stdout)
        out.append(pod.run(["ip", fam, "route", "show", "table", "100"], check=False).stdout)
    return "".join(out)


def nothing_installed(pod):
    assert "ambit" not in ruleset(pod)
    r = routing(pod)
    assert "fwmark" not in r and "local default" not in r, r


def root_snapshot():
    def out(*cmd):
        return subprocess.run(list(cmd), capture_output=True, text=True).stdout

    return {
        "nft": out("nft", "list", "ruleset"),
        "rules4": out("ip", "-4", "rule", "show"),
        "rules6": out("ip", "-6", "rule", "show"),
        "table100": out("ip", "-4", "route", "show", "table", "100")
        + out("ip", "-6", "route", "show", "table", "100"),
    }


@pytest.fixture(autouse=True)
def root_untouched():
    """Whatever a test does, the machine's root netns keeps its rules."""
    before = root_snapshot()
    yield
    assert root_snapshot() == before, "the root network namespace was modified"


@pytest.fixture
def pods(topo):
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    return n1, a, b


def marked_get(pod, ip, port, mark=None, transparent_src=None, timeout=3):
    """From inside pod: connect to ip:port (optionally with SO_MARK, or as an
    IP_TRANSPARENT socket bound to someone else's address), send an HTTP GET
    of /peer, return the response body."""

    def go():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if mark is not None:
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
            if transparent_src is not None:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                s.bind((transparent_src, 0))
            s.settimeout(timeout)
            s.connect((ip, port))
            s.sendall(b"GET /peer HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
            return data.decode().split("\r\n\r\n", 1)[-1]
        finally:
            s.close()

    return netns_exec(pod, go)


# --------------------------------------------------------------------------
# capture


def test_outbound_lands_on_15001_with_original_dst(topo, bins, pods):
    _, a, b = pods
    http_server(b, 8080)
    orig_listener(a, 15001)
    assert curl(a, f"http://{b.ip}:8080/") == "b\n"  # plain before install
    ok(redirect(bins, "install", "--netns", a.path))
    out = curl(a, f"http://{b.ip}:8080/")
    assert out.startswith(f"orig={b.ip}:8080 local=127.0.0.1:15001"), out
    # B is not captured: it still answers A directly
    assert curl(b, f"http://{b.ip}:8080/") == "b\n"


def test_inbound_lands_on_15006_with_original_dst(topo, bins, pods):
    _, a, b = pods
    http_server(a, 8080)
    orig_listener(a, 15006)
    ok(redirect(bins, "install", "--netns", a.path))
    out = curl(b, f"http://{a.ip}:8080/")
    assert out.startswith(f"orig={a.ip}:8080 local={a.ip}:15006"), out
    # inside A, its own service is reached directly (loopback is exempt)
    assert curl(a, "http://127.0.0.1:8080/") == "a\n"
    assert curl(a, f"http://{a.ip}:8080/") == "a\n"


def test_hbone_port_not_redirected(topo, bins, pods):
    _, a, b = pods
    http_server(a, 15008, body="hbone\n")
    orig_listener(a, 15006)
    ok(redirect(bins, "install", "--netns", a.path))
    assert curl(b, f"http://{a.ip}:15008/") == "hbone\n"
    # and a non-default HBONE port moves the exemption with it
    ok(redirect(bins, "install", "--netns", a.path, "--hbone-port", "15009"))
    assert curl(b, f"http://{a.ip}:15008/").startswith(f"orig={a.ip}:15008")


def test_proxy_mark_bypasses_capture(topo, bins, pods):
    _, a, b = pods
    http_server(b, 8080)
    orig_listener(a, 15001)
    ok(redirect(bins, "install", "--netns", a.path))
    # the proxy's own sockets (SO_MARK 0x539) reach B itself
    assert marked_get(a, b.ip, 8080, mark=0x539).startswith(f"{a.ip}:")
    # an unmarked or differently marked socket is captured
    assert marked_get(a, b.ip, 8080).startswith(f"orig={b.ip}:8080")
    assert marked_get(a, b.ip, 8080, mark=0x538).startswith(f"orig={b.ip}:8080")
    # --proxy-mark changes which mark is exempt
    ok(redirect(bins, "install", "--netns", a.path, "--proxy-mark", "0x538"))
    assert marked_get(a, b.ip, 8080, mark=0x538).startswith(f"{a.ip}:")
    assert marked_get(a, b.ip, 8080, mark=0x539).startswith(f"orig={b.ip}:8080")


def test_transparent_return_traffic_uses_connmark_and_table_100(topo, bins, pods):
    """The inbound proxy in B connects to B's app with IP_TRANSPARENT from
    A's address, so the app sees the real client.  The app's SYN-ACK to A's
    address only reaches the proxy socket via ct mark -> fwmark 0x111 ->
    table 100 (local default via lo)."""
    _, a, b = pods
    http_server(b, 8080)
    # without the rules the reply is routed out to the real A: no connection
    with pytest.raises(OSError):
        marked_get(b, b.ip, 8080, mark=0x539, transparent_src=a.ip, timeout=2)
    ok(redirect(bins, "install", "--netns", b.path))
    peer = marked_get(b, b.ip, 8080, mark=0x539, transparent_src=a.ip)
    assert peer.startswith(f"{a.ip}:"), peer  # the app saw A as its client
    ct = b.run(["cat", "/proc/net/nf_conntrack"], check=False).stdout
    if ct:  # conntrack listing available: the connection carries 0x111
        assert re.search(rf"src={re.escape(a.ip)} dst={re.escape(b.ip)} .*dport=8080 .*mark=273\b", ct), ct
    ok(redirect(bins, "remove", "--netns", b.path))
    with pytest.raises(OSError):
        marked_get(b, b.ip, 8080, mark=0x539, transparent_src=a.ip, timeout=2)


def test_excludes(topo, bins, pods):
    _, a, b = pods
    http_server(b, 8080)
    http_server(b, 9090)
    http_server(a, 8080)
    orig_listener(a, 15001)
    orig_listener(a, 15006)
    ok(redirect(bins, "install", "--netns", a.path, "--exclude-cidr", f"{b.ip}/32"))
    assert curl(a, f"http://{b.ip}:8080/") == "b\n"
    ok(redirect(bins, "install", "--netns", a.path, "--exclude-port", "9090",
                "--exclude-inbound-port", "8080"))
    assert curl(a, f"http://{b.ip}:9090/") == "b\n"
    assert curl(a, f"http://{b.ip}:8080/").startswith(f"orig={b.ip}:8080")
    assert curl(b, f"http://{a.ip}:8080/") == "a\n"


def add_ipv6(a, b):
    a.run(["ip", "addr", "add", "fd00:a5::a/64", "dev", "eth0", "nodad"])
    b.run(["ip", "addr", "add", "fd00:a5::b/64", "dev", "eth0", "nodad"])
    return "fd00:a5::a", "fd00:a5::b"


def test_ipv6_capture_and_no_ipv6(topo, bins, pods):
    _, a, b = pods
    a6, b6 = add_ipv6(a, b)
    b.popen([PYTHON, "-m", "http.server", "--bind", "::", "8080"])
    wait_port(b, 8080, host="::1")
    orig_listener(a, 15001)
    orig_listener(a, 15006)
    ok(redirect(bins, "install", "--netns", a.path))
    out = curl(a, f"http://[{b6}]:8080/")
    assert out.startswith(f"orig=[{b6}]:8080 local=::1:15001"), out
    out = curl(b, f"http://[{a6}]:8080/")
    assert out.startswith(f"orig=[{a6}]:8080 local={a6}:15006"), out
    r = routing(a)
    assert r.count("fwmark 0x111/0xfff lookup 100") == 2, r
    # an excluded IPv6 destination is reached directly
    ok(redirect(bins, "install", "--netns", a.path, "--exclude-cidr", "fd00:a5::b"))
    assert "Directory listing" in curl(a, f"http://[{b6}]:8080/")
    # IPv4 only: IPv6 passes untouched, the IPv6 routing objects go away
    ok(redirect(bins, "install", "--netns", a.path, "--no-ipv6"))
    assert "Directory listing" in curl(a, f"http://[{b6}]:8080/")
    r = routing(a)
    assert r.count("fwmark 0x111/0xfff lookup 100") == 1, r
    ok(redirect(bins, "check", "--netns", a.path, "--no-ipv6"))


# --------------------------------------------------------------------------
# install / remove / check


def test_remove_restores_plain_connectivity(topo, bins, pods):
    _, a, b = pods
    http_server(b, 8080)
    orig_listener(a, 15001)
    before_nft, before_routing = ruleset(a), routing(a)
    ok(redirect(bins, "install", "--netns", a.path))
    assert curl(a, f"http://{b.ip}:8080/").startswith("orig=")
    ok(redirect(bins, "remove", "--netns", a.path))
    assert curl(a, f"http://{b.ip}:8080/") == "b\n"
    assert ruleset(a) == before_nft
    assert routing(a) == before_routing
    nothing_installed(a)
    ok(redirect(bins, "remove", "--netns", a.path))  # removing nothing is fine
    nothing_installed(a)


def test_install_twice_is_one_rule_set(topo, bins, pods):
    _, a, _ = pods
    ok(redirect(bins, "install", "--netns", a.path))
    once, once_routing = ruleset(a), routing(a)
    ok(redirect(bins, "install", "--netns", a.path))
    assert ruleset(a) == once
    assert routing(a) == once_routing
    assert once.count("table inet ambit") == 1
    assert once_routing.count("fwmark 0x111/0xfff lookup 100") == 2  # v4 + v6
    # the listing is exactly what --dry-run prints (generation == kernel)
    dry = ok(redirect(bins, "check", "--dry-run")).stdout
    assert [l for l in once.splitlines() if l.strip()] == [
        l for l in dry.splitlines() if l.strip() and not l.startswith("#")]
    ok(redirect(bins, "check", "--netns", a.path))
    # a different option set replaces the table instead of adding one
    ok(redirect(bins, "install", "--netns", a.path, "--exclude-port", "22"))
    assert ruleset(a).count("table inet ambit") == 1
    assert "tcp dport 22 return" in ruleset(a)


def nft_handle(pod, chain, comment):
    out = pod.run(["nft", "-a", "list", "chain", "inet", "ambit", chain]).stdout
    for line in out.splitlines():
        if f'comment "{comment}"' in line:
            return line.rsplit("# handle ", 1)[1].strip()
    raise AssertionError(f"no rule {comment!r} in {out}")


def test_check_detects_drift(topo, bins, pods):
    _, a, _ = pods
    p = redirect(bins, "check", "--netns", a.path)
    assert p.returncode == 1
    assert "missing table inet ambit" in p.stdout
    assert "IPv4 ip rule fwmark 0x111/0xfff lookup 100: missing" in p.stdout

    ok(redirect(bins, "install", "--netns", a.path))
    ok(redirect(bins, "check", "--netns", a.path))

    # a rule deleted by hand is named
    h = nft_handle(a, "capture_out", "outbound capture")
    a.run(["nft", "delete", "rule", "inet", "ambit", "capture_out", "handle", h])
    p = redirect(bins, "check", "--netns", a.path)
    assert p.returncode == 1, p
    assert ('missing rule in chain capture_out: meta l4proto tcp redirect to :15001 '
            'comment "outbound capture"') in p.stdout
    assert p.stdout.count("\n") == 2, p.stdout  # header + exactly one difference

    # a rule added by hand, an ip rule removed, a route changed
    a.run(["nft", "add", "rule", "inet", "ambit", "capture_in", "tcp", "dport", "22", "return"])
    a.run(["ip", "-6", "rule", "del", "fwmark", "0x111/0xfff", "lookup", "100"])
    a.run(["ip", "-4", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", "100"])
    p = redirect(bins, "check", "--netns", a.path)
    assert p.returncode == 1
    assert "unexpected rule in chain capture_in: tcp dport 22 return" in p.stdout
    assert "IPv6 ip rule fwmark 0x111/0xfff lookup 100: missing" in p.stdout
    assert "IPv4 route local 0.0.0.0/0 dev lo table 100: missing" in p.stdout

    # options that differ from the installed ones are drift too
    ok(redirect(bins, "install", "--netns", a.path))
    p = redirect(bins, "check", "--netns", a.path, "--exclude-port", "443")
    assert p.returncode == 1
    assert 'missing rule in chain capture_out: tcp dport 443 return comment "excluded port"' in p.stdout
    # a dormant table is not "installed"
    a.run(["nft", "add", "table", "inet", "ambit", "{ flags dormant; }"])
    p = redirect(bins, "check", "--netns", a.path)
    assert p.returncode == 1 and "flags dormant" in p.stdout
    ok(redirect(bins, "install", "--netns", a.path))
    ok(redirect(bins, "check", "--netns", a.path))


# --------------------------------------------------------------------------
# errors: clear message, exit 2, nothing left behind


def assert_error(p, *needles):
    assert p.returncode == 2, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    for n in needles:
        assert n in p.stderr, f"{n!r} not in {p.stderr!r}"
    assert "ambit-redirect:" in p.stderr


def test_bad_netns_paths(topo, bins, pods):
    _, a, _ = pods
    assert_error(redirect(bins, "install", "--netns", f"/run/netns/{topo.prefix}-nope"),
                 "cannot open network namespace", "No such file or directory")
    with tempfile.NamedTemporaryFile(prefix=topo.prefix) as f:
        assert_error(redirect(bins, "install", "--netns", f.name), "is not a namespace file")
    assert_error(redirect(bins, "install", "--netns", "/proc/self/ns/uts"),
                 "not a network namespace")
    assert_error(redirect(bins, "install", "--netns", "/run/netns"), "not a namespace file")
    # the host's own namespace is refused (check is read-only, so safe to try)
    assert_error(redirect(bins, "check", "--netns", "/proc/self/ns/net"), "host's network namespace")
    nothing_installed(a)


def test_own_netns_refused(topo, bins, pods):
    n1, a, _ = pods
    p = n1.run([str(bins / "ambit-redirect"), "install", "--netns", n1.path], check=False)
    assert_error(p, "caller's own network namespace")
    assert "ambit" not in n1.run(["nft", "list", "ruleset"]).stdout
    p = a.run([str(bins / "ambit-redirect"), "install", "--netns", "/proc/self/ns/net"], check=False)
    assert_error(p, "caller's own network namespace")
    nothing_installed(a)


def test_unprivileged_refused(topo, bins, pods):
    _, a, _ = pods
    for cmd in ("install", "remove", "check"):
        assert_error(redirect(bins, cmd, "--netns", a.path, user="nobody"),
                     "Operation not permitted", "CAP_SYS_ADMIN")
    nothing_installed(a)
    # and an installed rule set survives an unprivileged remove
    ok(redirect(bins, "install", "--netns", a.path))
    assert_error(redirect(bins, "remove", "--netns", a.path, user="nobody"), "Operation not permitted")
    ok(redirect(bins, "check", "--netns", a.path))


@pytest.mark.parametrize("args,needle", [
    (["install", "--netns", "{ns}", "--exclude-cidr", "10.0.0.0/33"], "--exclude-cidr '10.0.0.0/33'"),
    (["install", "--netns", "{ns}", "--outbound-port", "0"], "--outbound-port '0': not a port"),
    (["install", "--netns", "{ns}", "--inbound-port", "65536"], "--inbound-port '65536'"),
    (["install", "--netns", "{ns}", "--proxy-mark", "0x"], "--proxy-mark"),
    (["install", "--netns", "{ns}", "--connmark", "0x1111/0xfff"], "mark inside mask"),
    (["install", "--netns", "{ns}", "--table", "254"], "reserved"),
    (["install", "--netns", "{ns}", "--frobnicate"], "unknown option '--frobnicate'"),
    (["install"], "missing --netns"),
    (["install", "--netns", "{ns}", "--no-ipv6", "--exclude-cidr", "fd00::/8"], "IPv6 is off"),
])
def test_bad_options(topo, bins, pods, args, needle):
    _, a, _ = pods
    p = redirect(bins, *[x.format(ns=a.path) for x in args])
    assert_error(p, needle, "usage:")
    nothing_installed(a)


def test_too_many_excludes(topo, bins, pods):
    _, a, _ = pods
    args = ["install", "--netns", a.path]
    for i in range(33):
        args += ["--exclude-port", str(1000 + i)]
    assert_error(redirect(bins, *args), "too many --exclude-port (at most 32)")
    nothing_installed(a)
    ok(redirect(bins, *args[:-2]))  # 32 is fine
    ok(redirect(bins, "check", *args[1:-2]))


def test_loopback_down_refused(topo, bins, pods):
    _, a, _ = pods
    a.run(["ip", "link", "set", "lo", "down"])
    assert_error(redirect(bins, "install", "--netns", a.path), "loopback interface is down")
    nothing_installed(a)


def test_routing_failure_rolls_back(topo, bins, pods):
    """IPv6 disabled in the pod: the nft table goes in, then the IPv6 route
    fails; the IPv4 routing just added and the table must be undone, and a
    previously installed table must come back as it was."""
    _, a, _ = pods
    a.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.lo.disable_ipv6=1"])
    before_nft, before_routing = ruleset(a), routing(a)
    assert_error(redirect(bins, "install", "--netns", a.path), "IPv6 route", "--no-ipv6")
    assert ruleset(a) == before_nft
    assert routing(a) == before_routing
    nothing_installed(a)

    ok(redirect(bins, "install", "--netns", a.path, "--no-ipv6", "--exclude-port", "22"))
    prev_nft, prev_routing = ruleset(a), routing(a)
    assert_error(redirect(bins, "install", "--netns", a.path), "IPv6 route")
    assert ruleset(a) == prev_nft
    assert routing(a) == prev_routing
    ok(redirect(bins, "check", "--netns", a.path, "--no-ipv6", "--exclude-port", "22"))
    # --no-ipv6 is the way out
    ok(redirect(bins, "install", "--netns", a.path, "--no-ipv6"))
    ok(redirect(bins, "check", "--netns", a.path, "--no-ipv6"))


def test_nft_failure_leaves_nothing(topo, bins, pods):
    """A transaction the kernel refuses (another process holds an owned
    table of the same name) fails cleanly: one-line reason, exit 2, no
    routing added, the other table untouched; check names the difference."""
    _, a, _ = pods
    a.popen(["sh", "-c", "(echo 'add table inet ambit { flags owner; }'; exec sleep 600) | nft -i"])
    deadline = time.monotonic() + 10
    while "table inet ambit" not in a.run(["nft", "list", "tables"]).stdout:
        assert time.monotonic() < deadline, "owned table did not appear"
        time.sleep(0.1)
    before_nft, before_routing = ruleset(a), routing(a)
    p = redirect(bins, "install", "--netns", a.path)
    assert_error(p, "nftables: Could not process rule: Operation not permitted")
    assert p.stderr.count("\n") == 1, p.stderr
    assert ruleset(a) == before_nft
    assert routing(a) == before_routing
    assert "fwmark" not in before_routing
    p = redirect(bins, "check", "--netns", a.path)
    assert p.returncode == 1
    assert "unexpected attribute in table inet ambit: flags owner" in p.stdout
    assert "missing chain capture_out" in p.stdout


def test_dry_run_touches_nothing(topo, bins, pods):
    _, a, _ = pods
    p = ok(redirect(bins, "install", "--netns", a.path, "--dry-run", "--exclude-cidr", "10.96.0.0/12"))
    assert p.stdout.startswith("add table inet ambit\ndelete table inet ambit\ntable inet ambit {\n")
    assert "ip daddr 10.96.0.0/12 return" in p.stdout
    assert "# ip -4 rule add fwmark 0x111/0xfff lookup 100" in p.stdout
    nothing_installed(a)
    # the printed script is a valid nft script
    a.run(["nft", "-c", "-f", "-"], input=p.stdout)
