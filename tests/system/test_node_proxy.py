"""System tests of ambit-node-proxy: real pods (bridge + host-local CNI),
capture rules from ambit-redirect, node-proxy running in the node netns and
pods enrolled with `ambit-node-proxy ctl add`.  Traffic is made by curl,
wrk and iperf3; each test checks node-proxy's own counters moved, so a
test cannot pass with traffic that bypassed the proxy."""

import json
import os
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from topology import PYTHON, http_server, netns_exec, wait_port

ADMIN = 15000


class Proxy:
    """One ambit-node-proxy process in a node netns."""

    def __init__(self, topo, bins, node, extra=()):
        self.topo, self.bins, self.node = topo, bins, node
        self.sock = os.path.join(topo.tmpdir, "np.sock")
        self.state = os.path.join(topo.tmpdir, "np.state")
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        self.proc = self.node.popen(
            [str(self.bins / "ambit-node-proxy"), "run", "--control-socket", self.sock,
             "--state-file", self.state, "--workers", "2", "--drain-timeout", "3s",
             "--log-level", "info"] + self.extra)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("node-proxy exited: " + self.topo.log(self.proc))
            if self.ready():
                return
            time.sleep(0.05)
        raise TimeoutError("node-proxy not ready: " + self.topo.log(self.proc))

    def http(self, path, port=ADMIN, host="127.0.0.1"):
        def get():
            try:
                with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                return None, ""
        return netns_exec(self.node, get)

    def ready(self):
        return self.http("/healthz/ready", port=15021)[0] == 200

    def stats(self):
        code, body = self.http("/stats")
        assert code == 200, body
        return json.loads(body)["total"]

    def json(self, path):
        code, body = self.http(path)
        assert code == 200, body
        return json.loads(body)

    def ctl(self, *args, check=True):
        return self.node.run([str(self.bins / "ambit-node-proxy"), "ctl", "--socket", self.sock]
                             + list(args), check=check)

    def add(self, pod):
        self.ctl("add", "--uid", f"uid-{pod.name}", "--namespace", "default", "--name", pod.name,
                 "--netns", pod.path, "--ip", pod.ip)

    def delete(self, pod):
        self.ctl("del", "--uid", f"uid-{pod.name}")

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid()}/fd"))

    def pid(self):
        # node.popen runs nsenter, which execs the program: same pid
        return self.proc.pid

    def rss_kb(self):
        with open(f"/proc/{self.pid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def enrol(topo, bins, node, pod, proxy):
    topo_run = node.run([str(bins / "ambit-redirect"), "install", "--netns", pod.path])
    assert topo_run.returncode == 0
    proxy.add(pod)


@pytest.fixture
def mesh(topo, bins):
    """Node n1 with pods a and b, both captured and enrolled."""
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    proxy = Proxy(topo, bins, n1)
    for p in (a, b):
        enrol(topo, bins, n1, p, proxy)
    return n1, a, b, proxy


def test_curl_both_directions(mesh, topo):
    n1, a, b, proxy = mesh
    http_server(b, 8080)
    http_server(a, 8080)
    s0 = proxy.stats()
    r = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"])
    assert r.stdout == "b\n"
    r = b.run(["curl", "-sS", "--max-time", "5", f"http://{a.ip}:8080/"])
    assert r.stdout == "a\n"
    s1 = proxy.stats()
    # each request crosses two hops: 15001 in the client pod, 15006 in the server pod
    assert s1["accepted"] - s0["accepted"] >= 4
    assert s1["bytes_down_up"] > s0["bytes_down_up"]
    assert s1["bytes_up_down"] > s0["bytes_up_down"]
