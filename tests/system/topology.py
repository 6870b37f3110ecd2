"""Test topology for ambit system tests: nodes and pods as network namespaces.

A *node* is a network namespace of its own (loopback up, ip_forward=1 inside
it).  A *pod* is a network namespace joined to its node by the real reference
CNI plugins from /usr/lib/cni (bridge + host-local), executed the way libcni
executes a cniVersion 1.0.0 conflist: ADD plugin by plugin in order, each
getting the previous plugin's result as prevResult; DEL in reverse order with
the cached final result.  Plugins run inside the node's netns, so the bridge,
the host-side veths and the node's routes never touch the machine's root
network namespace.  Extra plugins (ambit-cni) are chained after bridge.

Every name a run creates (namespaces, inter-node veths, the temp dir) starts
with a per-run prefix "amb" + 5 hex digits.  A marker file
/run/ambit-test/<prefix>.json records the owning PID; a later run removes the
leftovers of runs whose owner is dead (sweep_stale), never anything else.

    from topology import Topology, wait_port, http_server
    topo = Topology()                       # or the `topo` fixture
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")               # a.ip, a.netns, a.path, a.result
    b = topo.add_pod(n1, "b")
    srv = http_server(b, 8080)              # GET / answers "b\\n"
    a.run(["curl", "-sf", f"http://{b.ip}:8080/"]).stdout == "b\\n"
    n2 = topo.add_node("n2"); topo.link_nodes(n1, n2)
    topo.add_pod(n1, "c", extra_plugins=[{"type": "ambit-cni", ...}],
                 cni_args={"K8S_POD_NAMESPACE": "prod"})
    topo.del_pod(a)                         # CNI DEL in reverse order
    topo.teardown()                         # idempotent; also atexit/SIGTERM

Plugin failures raise CNIError with the plugin's CNI error code and msg; the
half-added pod is rolled back (DEL over the whole chain, netns deleted).
"""

import atexit
import contextlib
import ctypes
import hashlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CNI_VERSION = "1.0.0"
NETWORK_NAME = "ambit-test"
CNI_PLUGIN_DIR = "/usr/lib/cni"
BRIDGE_NAME = "ambbr0"  # inside each node's netns, so one fixed name is fine
MARKER_DIR = Path("/run/ambit-test")
NETNS_DIR = Path("/run/netns")
PYTHON = "/usr/bin/python3"  # Debian's; the PATH one may be a pyenv build
NSENTER = "nsenter"
REPO = Path(__file__).resolve().parents[2]
PLUGIN_TIMEOUT = 60
CLONE_NEWNET = 0x40000000

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


# --------------------------------------------------------------------------
# errors


class CNIError(Exception):
    """A CNI plugin failed.  code/msg/details come from the plugin's error
    JSON (CNI spec "Error" object); plugin and command say who and when."""

    def __init__(self, code, msg, details="", plugin="", command="", stderr="", rc=None):
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin
        self.command = command
        self.stderr = stderr
        self.rc = rc
        text = f"CNI {command} {plugin}: code {code}: {msg}"
        if details:
            text += f" ({details})"
        if stderr.strip():
            text += f"\n--- plugin stderr ---\n{stderr.strip()}"
        super().__init__(text)


class CNIProtocolError(CNIError):
    """The plugin broke the protocol (no/invalid JSON on stdout, timeout);
    code is None."""


class TestTimeout(Exception):
    """Raised (by conftest's SIGALRM handler) inside a test or its setup that
    ran out of time."""

    __test__ = False  # not a pytest test class despite the name


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the output, so a failing
    pod.run() says why in the pytest report."""

    def __str__(self):
        s = super().__str__()
        if self.stdout:
            s += f"\n--- stdout ---\n{self.stdout.rstrip()}"
        if self.stderr:
            s += f"\n--- stderr ---\n{self.stderr.rstrip()}"
        return s


# --------------------------------------------------------------------------
# small process helpers


def _cmdlist(cmd):
    if isinstance(cmd, (str, bytes)):
        return ["sh", "-c", cmd]
    return [str(c) for c in cmd]


def _run(cmd, check=True, timeout=30, input=None, env=None):
    """Run cmd, capture text output; on failure raise CommandError.

    Output that is not UTF-8 (a TLS client echoing the peer's binary
    HTTP/2 frames, say) is decoded with replacement characters rather than
    failing the test in the harness."""
    p = subprocess.run(
        _cmdlist(cmd),
        input=input,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
    )
    if check and p.returncode != 0:
        raise CommandError(p.returncode, p.args, p.stdout, p.stderr)
    return p


def _nsenter(path, cmd):
    return [NSENTER, f"--net={path}", "--"] + _cmdlist(cmd)


def _quiet(fn, *args, **kw):
    """Call fn, swallowing any error; for teardown steps.  Returns the
    exception (or None) so callers can record it."""
    try:
        fn(*args, **kw)
        return None
    except Exception as e:  # noqa: BLE001 - teardown must go on
        return e


def _pid_start_time(pid):
    """Start time of pid in clock ticks since boot (field 22 of
    /proc/PID/stat), or None when the process does not exist.  Used with the
    PID to tell a live owner from a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens: split after the last ')'.
    rest = data[data.rfind(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return None  # exited, waiting to be reaped by its parent
    return int(rest[19])


def _netns_list():
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _netns_pids(name):
    p = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _kill_pid(pid, grace=2.0):
    """SIGTERM pid, then SIGKILL after grace seconds.  Only for PIDs we know
    belong to this harness (tracked Popen objects, processes inside our own
    namespaces)."""
    if pid == os.getpid():
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _pid_start_time(pid) is None:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _delete_netns(name):
    """Kill whatever still runs in our namespace, then delete it."""
    for pid in _netns_pids(name):
        _kill_pid(pid, grace=1.0)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _root_links_with_prefix(prefix):
    p = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    names = []
    for line in p.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix):
                names.append(name)
    return names


# --------------------------------------------------------------------------
# running code inside a netns from the test process

_libc = ctypes.CDLL(None, use_errno=True)


def _ns_path(obj):
    """Path of a netns given a Pod, Node, netns name or path."""
    if hasattr(obj, "path"):
        return str(obj.path)
    s = str(obj)
    return s if s.startswith("/") else str(NETNS_DIR / s)


def _setns(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({path}): {os.strerror(e)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_netns(obj):
    """Switch the *calling thread* into obj's netns for the with-block.
    Sockets created inside keep living in that netns afterwards and can be
    used from any thread.  Other threads are not affected."""
    self_ns = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        _setns(_ns_path(obj))
        try:
            yield
        finally:
            if _libc.setns(self_ns, CLONE_NEWNET) != 0:
                # Cannot return to our own netns: continuing would run the
                # rest of the session in a pod.  Stop hard.
                os.write(2, b"topology: setns back to own netns failed\n")
                os._exit(70)
    finally:
        os.close(self_ns)


def netns_exec(obj, fn, *args, **kwargs):
    """Run fn(*args, **kwargs) on a fresh thread that has entered obj's netns
    (Pod, Node, name or path) and return its result (or raise its
    exception).  E.g. netns_exec(pod, socket.create_connection, (ip, 80))
    gives a socket whose traffic originates in the pod."""
    box = {}

    def body():
        try:
            _setns(_ns_path(obj))
            box["r"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in caller
            box["e"] = e

    t = threading.Thread(target=body, name="netns_exec", daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box.get("r")


# --------------------------------------------------------------------------
# traffic helpers


def wait_port(netns_obj, port, host="127.0.0.1", timeout=10):
    """Poll a TCP connect to host:port from inside netns_obj's netns until it
    succeeds; raise TimeoutError after timeout seconds."""

    def poll():
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return True
            except OSError as e:
                last = e
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{host}:{port} not reachable in {_ns_path(netns_obj)} after {timeout}s: {last}")
            time.sleep(0.05)

    return netns_exec(netns_obj, poll)


_HTTP_SERVER = r"""
import http.server, sys, socketserver
port, body = int(sys.argv[1]), sys.argv[2].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _reply(self, data):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
    def do_GET(self):
        if self.path == "/":
            return self._reply(body)
        if self.path.startswith("/bytes/"):
            return self._reply(b"x" * int(self.path[7:]))
        if self.path == "/peer":
            return self._reply(("%s:%d\n" % self.client_address[:2]).encode())
        self.send_error(404)
    do_HEAD = do_GET
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self._reply(data)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", port), H).serve_forever()
"""


def http_server(pod, port, body=None, timeout=10):
    """Start a small threaded HTTP/1.1 server in pod on 0.0.0.0:port and wait
    until it listens.  GET / answers body (default "<pod name>\\n"),
    GET /bytes/N answers N bytes of "x", GET /peer answers the client's
    "ip:port\\n", POST echoes the request body.  Returns the tracked Popen."""
    if body is None:
        body = f"{pod.name}\n"
    p = pod.popen([PYTHON, "-c", _HTTP_SERVER, str(port), body])
    _wait_listening(pod, p, port, timeout)
    return p


_ECHO_SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(128)
def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def tcp_echo_server(pod, port, timeout=10):
    """Start a threaded TCP echo server in pod on 0.0.0.0:port, wait until it
    listens, return the tracked Popen."""
    p = pod.popen([PYTHON, "-c", _ECHO_SERVER, str(port)])
    _wait_listening(pod, p, port, timeout)
    return p


def _wait_listening(obj, proc, port, timeout):
    try:
        wait_port(obj, port, timeout=timeout)
    except TimeoutError:
        rc = proc.poll()
        log = ""
        if getattr(proc, "log_path", None):
            with contextlib.suppress(OSError):
                log = Path(proc.log_path).read_text()[-2000:]
        raise TimeoutError(f"server on port {port} in {obj.netns} did not listen (exit {rc}): {log}") from None


def sha256_file(path):
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# namespaces


class _Netns:
    """Common part of Node and Pod: a named netns with run/popen."""

    def __init__(self, topo, name, netns):
        self.topo = topo
        self.name = name
        self.netns = netns
        self.path = str(NETNS_DIR / netns)

    def run(self, cmd, check=True, timeout=30, input=None):
        """Run cmd (list, or str for sh -c) inside this netns; returns
        CompletedProcess with text stdout/stderr.  check=True raises
        CommandError (with output) on non-zero exit."""
        return _run(_nsenter(self.path, cmd), check=check, timeout=timeout, input=input)

    def popen(self, cmd, **kw):
        """Start cmd inside this netns; tracked and killed at teardown."""
        return self.topo.popen(cmd, netns=self, **kw)

    def exec(self, fn, *args, **kwargs):
        """netns_exec(self, fn, ...)."""
        return netns_exec(self, fn, *args, **kwargs)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} netns={self.netns}>"


class Node(_Netns):
    """A node: netns with loopback up and ip_forward=1; pods hang off the
    bridge BRIDGE_NAME inside it.  subnet is the pod CIDR; gateway, the
    bridge's address and the node's own address on the pod network, is .1."""

    def __init__(self, topo, name, netns, index, subnet):
        super().__init__(topo, name, netns)
        self.index = index
        self.subnet = ipaddress.ip_network(subnet)
        self.gateway = str(self.subnet.network_address + 1)
        self.bridge = BRIDGE_NAME
        self.ipam_dir = os.path.join(topo.tmpdir, "ipam", name)
        self.pods = {}
        self.links = []  # (local ifname, local ip, peer node, peer ip)

    @property
    def ip(self):
        """The node's address on its pod network (the bridge gateway)."""
        return self.gateway

    def conflist(self, extra_plugins=None):
        """The conflist this node uses for a pod (a dict)."""
        plugins = [
            {
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(self.subnet), "gateway": self.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.ipam_dir,
                },
            }
        ]
        plugins += [dict(p) for p in (extra_plugins or [])]
        return {"cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": plugins}


class Pod(_Netns):
    """A pod: netns joined to its node by the CNI chain.  result is the
    final CNI result (dict); ip the first IPv4 address without prefix."""

    def __init__(self, topo, node, name, netns, ifname, containerid, conflist, cni_args):
        super().__init__(topo, name, netns)
        self.node = node
        self.ifname = ifname
        self.containerid = containerid
        self.conflist = conflist
        self.cni_args = cni_args
        self.result = None
        self.ip = None
        self.ips = []
        self.prefix_len = None

    def _set_result(self, result):
        self.result = result
        self.ips = []
        for ipc in result.get("ips", []):
            iface = ipaddress.ip_interface(ipc["address"])
            self.ips.append(str(iface.ip))
            if self.ip is None and iface.version == 4:
                self.ip = str(iface.ip)
                self.prefix_len = iface.network.prefixlen
        if self.ip is None and self.ips:
            self.ip = self.ips[0]

    @property
    def host_veth(self):
        """Name of the pod's veth end inside the node netns, from the result."""
        for itf in (self.result or {}).get("interfaces", []):
            if not itf.get("sandbox") and itf.get("name") != self.node.bridge:
                return itf.get("name")
        return None


# --------------------------------------------------------------------------
# the topology

_rng = random.SystemRandom()  # independent of tests seeding `random`
_live = []  # Topology objects not yet torn down (for atexit / SIGTERM)
_handlers_installed = False
_swept = False


def _teardown_all():
    for t in list(_live):
        # A forked child (multiprocessing, os.fork in a test) inherits _live
        # and atexit: only the process that built a topology tears it down.
        if t.owner_pid == os.getpid():
            _quiet(t.teardown)


def _on_sigterm(signum, frame):
    _teardown_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_sigterm)


def sweep_stale(verbose=False):
    """Remove namespaces, root-ns links, temp dirs and marker files left by
    earlier runs of this harness whose owning process is dead.  Only names
    recorded in a marker file are touched.  Returns the prefixes swept."""
    swept = []
    try:
        markers = sorted(MARKER_DIR.glob("amb*.json"))
    except OSError:
        return swept
    for m in markers:
        try:
            info = json.loads(m.read_text())
            prefix = info["prefix"]
            pid = int(info["pid"])
            start = info.get("start")
        except (OSError, ValueError, KeyError):
            continue
        if not re.fullmatch(r"amb[0-9a-f]{5}", prefix) or m.stem != prefix:
            continue
        cur = _pid_start_time(pid)
        if cur is not None and (start is None or cur == start):
            continue  # owner alive: not ours to touch
        # Processes the dead run started (PID and start time recorded, so a
        # reused PID is never hit), then its namespaces.
        for pr in info.get("procs", []):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                ppid, pstart = int(pr["pid"]), pr["start"]
                if ppid > 1 and pstart is not None and _pid_start_time(ppid) == pstart:
                    group = ppid if os.getpgid(ppid) == ppid else None
                    _kill_pid(ppid, grace=0.5)
                    if group:  # its children, started in its own session
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(group, signal.SIGKILL)
        for ns in _netns_list():
            if ns.startswith(prefix + "-"):
                _quiet(_delete_netns, ns)
        for link in _root_links_with_prefix(prefix):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        tmp = info.get("tmpdir")
        if tmp and os.path.basename(tmp).startswith(prefix + "-"):
            shutil.rmtree(tmp, ignore_errors=True)
        _quiet(m.unlink)
        swept.append(prefix)
        if verbose:
            print(f"topology: swept stale run {prefix} (pid {pid} gone)", file=sys.stderr)
    return swept


def _default_bins():
    return Path(os.environ.get("AMBIT_BIN") or (REPO / "build" / "bin")).resolve()


class Topology:
    """One test's world: nodes, pods, links, tracked processes.  Always call
    teardown() (the `topo` fixture does); atexit and SIGTERM do it too."""

    def __init__(self, bins=None, plugin_timeout=PLUGIN_TIMEOUT):
        global _swept
        if os.geteuid() != 0:
            raise PermissionError("ambit system tests need root (network namespaces)")
        if not _swept:
            _swept = True
            sweep_stale()
        self.bins = Path(bins) if bins else _default_bins()
        self.cni_path = f"{CNI_PLUGIN_DIR}:{self.bins}"
        self.plugin_timeout = plugin_timeout
        # A fresh prefix; retry in the (unlikely) event it is in use.
        MARKER_DIR.mkdir(parents=True, exist_ok=True)
        while True:
            self.prefix = "amb" + "%05x" % _rng.getrandbits(20)
            marker = MARKER_DIR / f"{self.prefix}.json"
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                continue
        self.marker = marker
        self.tmpdir = tempfile.mkdtemp(prefix=self.prefix + "-")
        os.close(fd)
        self._marker_procs = []
        self._write_marker()
        self.octet = _rng.randint(16, 250)  # 10.<octet>.<node>.0/24
        self.nodes = {}
        self.pods = []  # in creation order
        self.procs = []
        self.netns_created = []  # every netns we made, creation order
        self.links = []
        self.errors = []  # teardown problems (for the fixture to report)
        self._torn_down = False
        self.owner_pid = os.getpid()
        self._lock = threading.RLock()
        _live.append(self)
        _install_handlers()

    def _write_marker(self):
        """(Re)write the marker atomically: owner PID + start time, temp dir,
        tracked processes; what sweep_stale needs if we die uncleanly."""
        info = {
            "prefix": self.prefix,
            "pid": os.getpid(),
            "start": _pid_start_time(os.getpid()),
            "tmpdir": self.tmpdir,
            "procs": self._marker_procs,
        }
        tmp = f"{self.marker}.tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.rename(tmp, self.marker)

    # -- naming ---------------------------------------------------------

    def _check_name(self, name):
        if not _NAME_RE.match(name):
            raise ValueError(f"bad name {name!r}: want [a-z0-9-], at most 31 chars")

    def _new_netns(self, suffix):
        name = f"{self.prefix}-{suffix}"
        _run(["ip", "netns", "add", name])
        self.netns_created.append(name)
        _run(_nsenter(NETNS_DIR / name, ["ip", "link", "set", "lo", "up"]))
        return name

    # -- nodes ----------------------------------------------------------

    def add_node(self, name, subnet=None):
        """Create node `name` (netns <prefix>-<name>, lo up, ip_forward=1).
        subnet defaults to 10.<run octet>.<node index>.0/24."""
        self._check_name(name)
        if name in self.nodes:
            raise ValueError(f"node {name} exists")
        index = len(self.nodes) + 1
        if index > 200:
            raise ValueError("too many nodes")
        if subnet is None:
            subnet = f"10.{self.octet}.{index}.0/24"
        netns = self._new_netns(name)
        node = Node(self, name, netns, index, subnet)
        node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # The bridge is made here rather than by the first ADD, with a fixed
        # MAC and the gateway address: the node then has its pod-network
        # address before any pod exists, and a bridge that a failed first
        # ADD left without ports does not keep the all-zero MAC that makes
        # the reference plugin's next ADD fail ("could not set bridge's
        # mac").  The bridge plugin adopts an existing bridge of that name.
        mac = "02:a5:%02x:%02x:%02x:%02x" % (self.octet, index, _rng.getrandbits(8), _rng.getrandbits(8))
        node.run(["ip", "link", "add", node.bridge, "address", mac, "type", "bridge"])
        node.run(["ip", "addr", "add", f"{node.gateway}/{node.subnet.prefixlen}", "dev", node.bridge])
        node.run(["ip", "link", "set", node.bridge, "up"])
        os.makedirs(node.ipam_dir, exist_ok=True)
        self.nodes[name] = node
        return node

    def link_nodes(self, n1, n2):
        """veth pair between two nodes, a /30 on it (10.<octet>.254.4k+1/2)
        and routes for each other's pod subnet.  Returns (ip1, ip2)."""
        k = len(self.links)
        if k >= 63:
            raise ValueError("too many links")
        base = ipaddress.ip_address(f"10.{self.octet}.254.0") + 4 * k
        ip1, ip2 = str(base + 1), str(base + 2)
        if1, if2 = f"{self.prefix}x{k}a", f"{self.prefix}x{k}b"
        # Created directly inside n1 with the peer moved straight into n2:
        # the pair never exists in the root netns.
        _run(["ip", "-n", n1.netns, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", n2.netns])
        self.links.append((if1, n1, if2, n2))
        for node, ifn, ip, peer, peer_ip in ((n1, if1, ip1, n2, ip2), (n2, if2, ip2, n1, ip1)):
            node.run(["ip", "addr", "add", f"{ip}/30", "dev", ifn])
            node.run(["ip", "link", "set", ifn, "up"])
            node.run(["ip", "route", "add", str(peer.subnet), "via", peer_ip, "dev", ifn])
            node.links.append((ifn, ip, peer, peer_ip))
        return ip1, ip2

    # -- pods -----------------------------------------------------------

    def add_pod(self, node, name, extra_plugins=None, cni_args=None, ifname="eth0"):
        """Create pod `name` on node: netns <prefix>-<node>-<name> (lo up),
        then CNI ADD of bridge+host-local followed by extra_plugins.
        cni_args add to/override the CNI_ARGS defaults (None drops a key).
        On a plugin error the pod is rolled back and CNIError raised."""
        if isinstance(node, str):
            node = self.nodes[node]
        self._check_name(name)
        if name in node.pods:
            raise ValueError(f"pod {name} exists on {node.name}")
        args = {
            "IgnoreUnknown": "1",
            "K8S_POD_NAMESPACE": "default",
            "K8S_POD_NAME": name,
            "K8S_POD_INFRA_CONTAINER_ID": None,
            "K8S_POD_UID": None,
        }
        netns = self._new_netns(f"{node.name}-{name}")
        containerid = f"{netns}-{_rng.getrandbits(32):08x}"
        args["K8S_POD_INFRA_CONTAINER_ID"] = containerid
        args["K8S_POD_UID"] = _uuid_from(containerid)
        for k, v in (cni_args or {}).items():
            if v is None:
                args.pop(k, None)
            else:
                args[k] = str(v)
        pod = Pod(self, node, name, netns, ifname, containerid, node.conflist(extra_plugins), args)
        try:
            result = self._cni_add(pod)
        except BaseException:
            _quiet(self._cni_del, pod, best_effort=True)
            _quiet(_delete_netns, netns)
            with contextlib.suppress(ValueError):
                self.netns_created.remove(netns)
            raise
        pod._set_result(result)
        node.pods[name] = pod
        self.pods.append(pod)
        return pod

    def del_pod(self, pod, check=True):
        """CNI DEL (reverse order, prevResult = cached result), then delete
        the pod's netns.  With check=True a plugin error raises CNIError
        (after the netns is gone anyway)."""
        err = None
        try:
            self._cni_del(pod)
        except CNIError as e:
            err = e
        _delete_netns(pod.netns)
        with contextlib.suppress(ValueError):
            self.netns_created.remove(pod.netns)
        with contextlib.suppress(ValueError):
            self.pods.remove(pod)
        pod.node.pods.pop(pod.name, None)
        if err is not None and check:
            raise err

    def check_pod(self, pod):
        """CNI CHECK over the chain in order with prevResult = cached result."""
        for plugin in pod.conflist["plugins"]:
            self._exec_plugin(pod, "CHECK", plugin, pod.result)

    def _cni_add(self, pod):
        prev = None
        pod._added = []  # plugins whose ADD ran (for info)
        for plugin in pod.conflist["plugins"]:
            out = self._exec_plugin(pod, "ADD", plugin, prev)
            pod._added.append(plugin["type"])
            if not out:
                raise CNIProtocolError(None, "plugin printed no result", plugin=plugin["type"], command="ADD")
            # Keep the last good result so a rollback DEL gets it.
            pod.result = out
            prev = out
        return prev

    def _cni_del(self, pod, timeout=None, best_effort=False):
        """DEL every plugin in reverse order.  Like libcni, stops at the
        first failing plugin and raises its error; best_effort (rollback,
        teardown) runs every plugin and raises the first error at the end."""
        first = None
        for plugin in reversed(pod.conflist["plugins"]):
            try:
                self._exec_plugin(pod, "DEL", plugin, pod.result, timeout=timeout)
            except CNIError as e:
                if not best_effort:
                    raise
                first = first or e
        if first is not None:
            raise first

    def plugin_env(self, pod, command):
        """Environment a plugin gets (the test process's env plus CNI_*)."""
        env = dict(os.environ)
        env.update(
            {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": pod.containerid,
                "CNI_NETNS": pod.path,
                "CNI_IFNAME": pod.ifname,
                "CNI_ARGS": ";".join(f"{k}={v}" for k, v in pod.cni_args.items()),
                "CNI_PATH": self.cni_path,
            }
        )
        return env

    def find_plugin(self, ptype):
        for d in self.cni_path.split(":"):
            p = os.path.join(d, ptype)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
        raise CNIProtocolError(None, f"failed to find plugin {ptype!r} in path {self.cni_path}", plugin=ptype)

    def _exec_plugin(self, pod, command, plugin, prev, timeout=None):
        """Run one plugin inside pod's node netns; returns the parsed result
        (None when the plugin printed nothing, normal for DEL/CHECK)."""
        ptype = plugin.get("type", "")
        conf = dict(plugin)
        conf["name"] = pod.conflist["name"]
        conf["cniVersion"] = pod.conflist["cniVersion"]
        if prev is not None:
            conf["prevResult"] = prev
        else:
            conf.pop("prevResult", None)
        binary = self.find_plugin(ptype)
        try:
            p = subprocess.run(
                _nsenter(pod.node.path, [binary]),
                input=json.dumps(conf),
                capture_output=True,
                text=True,
                env=self.plugin_env(pod, command),
                timeout=timeout or self.plugin_timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise CNIProtocolError(None, f"timed out after {e.timeout}s", plugin=ptype, command=command) from None
        out = p.stdout.strip()
        if p.returncode != 0:
            try:
                ej = json.loads(out)
                code, msg, details = ej.get("code"), ej.get("msg", ""), ej.get("details", "")
            except (ValueError, AttributeError):
                raise CNIProtocolError(
                    None,
                    f"exit {p.returncode} without error JSON: {out[:500]!r}",
                    plugin=ptype,
                    command=command,
                    stderr=p.stderr,
                    rc=p.returncode,
                ) from None
            raise CNIError(code, msg, details, plugin=ptype, command=command, stderr=p.stderr, rc=p.returncode)
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            raise CNIProtocolError(
                None, f"invalid JSON on stdout: {out[:500]!r}", plugin=ptype, command=command, stderr=p.stderr
            ) from None

    # -- processes ------------------------------------------------------

    def popen(self, cmd, netns=None, **kw):
        """Start cmd (in netns if given: Pod, Node, name or path; else in the
        test process's own netns) as a tracked process in its own session.
        stdout+stderr default to a log file (proc.log_path).  Killed (by
        PID / its process group) at teardown."""
        argv = _cmdlist(cmd)
        base = os.path.basename(argv[0]) if argv else "proc"
        if netns is not None:
            argv = _nsenter(_ns_path(netns), argv)
        kw.setdefault("start_new_session", True)
        log_path = None
        logf = None
        if "stdout" not in kw:
            n = len(self.procs)
            where = getattr(netns, "netns", None) or "root"
            log_path = os.path.join(self.tmpdir, f"proc{n}-{where}-{base}.log")
            logf = open(log_path, "wb")
            kw["stdout"] = logf
            kw.setdefault("stderr", subprocess.STDOUT)
        try:
            p = subprocess.Popen(argv, **kw)
        finally:
            if logf:
                logf.close()
        p.log_path = log_path
        self.procs.append(p)
        start = _pid_start_time(p.pid)
        if start is not None:
            self._marker_procs.append({"pid": p.pid, "start": start})
            _quiet(self._write_marker)
        return p

    def log(self, proc):
        """Text of a tracked process's log file ('' if none)."""
        try:
            return Path(proc.log_path).read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    def stop(self, proc, grace=2.0):
        """Stop one tracked process now (TERM, then KILL), reap it."""
        self._kill_proc(proc, grace)

    def _kill_proc(self, p, grace=2.0):
        if p.poll() is not None:
            return
        group = p.pid if self._own_group(p) else None
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                if group:
                    os.killpg(group, sig)
                else:
                    os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if group:
            # Children left in the group after the leader exited.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)

    @staticmethod
    def _own_group(p):
        try:
            return os.getpgid(p.pid) == p.pid
        except ProcessLookupError:
            return False

    # -- teardown -------------------------------------------------------

    def teardown(self):
        """Delete everything this run made.  Every step is independent
        (errors recorded in self.errors, never raised); safe to call twice."""
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
            # 1. CNI DEL of live pods, newest first, while the processes a
            #    plugin may talk to (node proxy) still run.
            for pod in reversed(list(self.pods)):
                e = _quiet(self._cni_del, pod, timeout=20, best_effort=True)
                if e:
                    self.errors.append(f"DEL {pod.name}: {e}")
            self.pods.clear()
            # 2. tracked processes
            for p in reversed(self.procs):
                e = _quiet(self._kill_proc, p)
                if e:
                    self.errors.append(f"kill {p.pid}: {e}")
            # 3. namespaces (pods first), killing stray processes inside
            for ns in reversed(list(self.netns_created)):
                e = _quiet(_delete_netns, ns)
                if e:
                    self.errors.append(f"netns {ns}: {e}")
            for ns in _netns_list():  # anything else with our prefix
                if ns.startswith(self.prefix + "-"):
                    _quiet(_delete_netns, ns)
            left = [ns for ns in _netns_list() if ns.startswith(self.prefix + "-")]
            if left:
                self.errors.append(f"namespaces left: {left}")
            # 4. links with our prefix in the root netns (there should be none)
            for link in _root_links_with_prefix(self.prefix):
                self.errors.append(f"link {link} found in the root netns")
                subprocess.run(["ip", "link", "del", link], capture_output=True)
            # 5. temp dir and marker
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            _quiet(self.marker.unlink)
            with contextlib.suppress(ValueError):
                _live.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.teardown()


def _uuid_from(s):
    h = hashlib.sha256(s.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
