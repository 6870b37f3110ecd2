"""ambit-cni under a real container runtime: podman 4.3 with its CNI backend.

podman runs inside a node netns (nsenter --net), so the bridge it makes via
the bridge plugin and the host-side veths live in that node, never in the
machine's root netns.  Everything podman keeps is private to the test: its
own containers.conf (CONTAINERS_CONF), --root/--runroot storage (vfs), a
temp dir, file locks and events, and a CNI config dir holding one conflist:
bridge + host-local + ambit-cni, cniVersion 1.0.0 (what Debian 12's libcni
speaks).  The image is a busybox rootfs made here and `podman import`ed.

Settings this VM needs (brief section 8): runc (crun refuses the cgroup
layout), cgroupfs, ulimits at or below the caller's.  Two machine paths
podman 4.3 cannot be pointed elsewhere: libcni's result cache
/var/lib/cni/results (each entry removed again by DEL) and the image-copy
metadata cache /var/lib/containers/cache/blob-info-cache-v1.boltdb.

Skipped when podman, runc or busybox-static are not installed.
"""

import io
import json
import os
import shutil
import tarfile
import time

import pytest

from test_cni import Proxy, assert_proxied

IMAGE = "localhost/ambit-busybox:test"

pytestmark = pytest.mark.skipif(
    not (shutil.which("podman") and shutil.which("runc") and os.path.exists("/bin/busybox")),
    reason="needs podman, runc and busybox-static (Debian packages)")


def busybox_rootfs_tar(path):
    """A rootfs with busybox and the applets the tests use."""
    with tarfile.open(path, "w") as t:
        def add_dir(name):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        for d in ("bin", "www", "etc", "tmp", "proc", "sys", "dev"):
            add_dir(d)
        t.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "httpd", "wget", "sleep", "cat", "ip"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "busybox"
            t.addfile(ti)
        data = b"hello from a\n"
        ti = tarfile.TarInfo("www/index.html")
        ti.size = len(data)
        ti.mode = 0o644
        t.addfile(ti, io.BytesIO(data))


class Podman:
    def __init__(self, topo, bins, node, proxy_sock):
        self.topo, self.node = topo, node
        self.dir = os.path.join(topo.tmpdir, "podman")
        d = self.dir
        for sub in ("root", "runroot", "tmp", "cni", "ipam", "state"):
            os.makedirs(os.path.join(d, sub))
        self.conf = os.path.join(d, "containers.conf")
        self.state = os.path.join(d, "state")
        self.cni_log = os.path.join(d, "cni.log")
        with open(self.conf, "w") as f:
            f.write(f"""[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
lock_type = "file"
[network]
network_backend = "cni"
cni_plugin_dirs = ["/usr/lib/cni", "{bins}"]
network_config_dir = "{d}/cni"
default_network = "ambitnet"
""")
        self.subnet = f"10.{topo.octet}.250.0/24"
        conflist = {
            "cniVersion": "1.0.0",
            "name": "ambitnet",
            "plugins": [
                {"type": "bridge", "bridge": "ambpm0", "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                          "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": os.path.join(d, "ipam")}},
                {"type": "ambit-cni", "controlSocket": proxy_sock, "stateDir": self.state,
                 "logFile": self.cni_log, "timeoutMs": 2000},
            ],
        }
        with open(os.path.join(d, "cni", "ambitnet.conflist"), "w") as f:
            json.dump(conflist, f, indent=2)
        tar = os.path.join(d, "rootfs.tar")
        busybox_rootfs_tar(tar)
        self.run("import", tar, IMAGE)

    def run(self, *args, check=True, timeout=120):
        argv = ["env", f"CONTAINERS_CONF={self.conf}", "podman",
                "--root", os.path.join(self.dir, "root"),
                "--runroot", os.path.join(self.dir, "runroot"),
                "--storage-driver", "vfs", "--network-backend", "cni",
                "--cgroup-manager", "cgroupfs"] + [str(a) for a in args]
        return self.node.run(argv, check=check, timeout=timeout)

    def ip(self, name):
        return self.run("inspect", "-f", "{{.NetworkSettings.Networks.ambitnet.IPAddress}}",
                        name).stdout.strip()

    def names(self):
        return self.run("ps", "-a", "--format", "{{.Names}}").stdout.split()

    def cleanup(self):
        self.run("rm", "-f", "-a", "-t", "0", check=False)


def netns_entries():
    # podman's own (netns-<uuid>); other tests may be adding theirs meanwhile
    return {n for n in os.listdir("/run/netns") if n.startswith("netns-")}


def records(pm):
    d = os.path.join(pm.state, "ambitnet")
    return [f for f in os.listdir(d) if not f.startswith(".")] if os.path.isdir(d) else []


def ipam_reserved(pm):
    d = os.path.join(pm.dir, "ipam", "ambitnet")
    if not os.path.isdir(d):
        return []
    return [f for f in os.listdir(d) if f[0].isdigit()]


@pytest.fixture
def world(topo, bins):
    node = topo.add_node("pm")
    proxy = Proxy(topo, bins, node)
    pm = Podman(topo, bins, node, proxy.sock)
    try:
        yield node, proxy, pm
    finally:
        pm.cleanup()


def test_podman_containers_are_meshed(world):
    node, proxy, pm = world
    before = netns_entries()
    pm.run("run", "-d", "--name", "a", IMAGE, "httpd", "-f", "-p", "8080", "-h", "/www")
    a_ip = pm.ip("a")
    w = {x["name"]: x for x in proxy.workloads().values()}
    assert "a" in w, w
    assert w["a"]["ips"] == [a_ip]
    assert len(records(pm)) == 1

    s0 = proxy.stats()
    r = pm.run("run", "--rm", "--name", "b", IMAGE, "wget", "-qO-", f"http://{a_ip}:8080/")
    assert r.stdout == "hello from a\n"
    s1 = proxy.wait_accepted(s0, 1)
    # b's outbound was captured (15001 in b) and relayed into a by node-proxy
    assert_proxied(s0, s1)
    # b was removed (--rm): deregistered, record gone
    assert [x["name"] for x in proxy.workloads().values()] == ["a"]
    assert len(records(pm)) == 1

    pm.run("rm", "-f", "-t", "0", "a")
    assert proxy.workloads() == {}
    assert records(pm) == []
    assert ipam_reserved(pm) == []
    assert netns_entries() == before
    log = open(pm.cni_log).read()
    assert log.count(" enrolled ") == 2, log


def test_podman_container_refused_when_node_proxy_down(world):
    node, proxy, pm = world
    proxy.stop()
    before = netns_entries()
    t0 = time.monotonic()
    r = pm.run("run", "--rm", "-d", "--name", "c", IMAGE, "sleep", "100", check=False)
    assert r.returncode != 0, r
    assert "ambit-cni" in r.stderr and "node-proxy" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30
    assert "c" not in pm.names()
    assert records(pm) == []
    assert ipam_reserved(pm) == []
    assert netns_entries() == before
    assert "ADD failed (code 11)" in open(pm.cni_log).read()

    # node-proxy back: the same container starts and is meshed
    proxy.start()
    pm.run("run", "-d", "--name", "c", IMAGE, "sleep", "100")
    assert [x["name"] for x in proxy.workloads().values()] == ["c"]
