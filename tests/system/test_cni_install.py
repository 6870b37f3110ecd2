"""Tests of `ambit-cni install|uninstall` on temporary CNI directories:
insertion at the end of the primary conflist, idempotence, byte-exact
uninstall, .conf -> .conflist conversion, the lexical choice of the primary
config, refusals (incompatible version, bad plugin config, no config), and
the installed result actually working as a chain config."""

import json
import os
import subprocess

import pytest

BRIDGE_CONFLIST = """{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
"""

# Odd formatting on purpose: uninstall must restore these exact bytes.
BRIDGE_CONF = '{ "cniVersion":"1.0.0", "name":"podnet",\n\t"type":"bridge","bridge":"cni0",' \
              '"ipam":{"type":"host-local","subnet":"10.22.0.0/16"} }\n'


@pytest.fixture
def dirs(tmp_path):
    b, c = tmp_path / "bin", tmp_path / "net.d"
    b.mkdir()
    c.mkdir()
    return b, c


def cni(bins, *args, check=True):
    p = subprocess.run([str(bins / "ambit-cni")] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=30)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def install(bins, dirs, *extra, check=True):
    b, c = dirs
    return cni(bins, "install", "--cni-bin-dir", b, "--cni-conf-dir", c, *extra, check=check)


def uninstall(bins, dirs, check=True):
    b, c = dirs
    return cni(bins, "uninstall", "--cni-bin-dir", b, "--cni-conf-dir", c, check=check)


def listing(d):
    return sorted(p.name for p in d.iterdir())


def snapshot(d):
    return {p.name: p.read_bytes() for p in d.iterdir()}


def plugins(path):
    return [p["type"] for p in json.loads(path.read_text())["plugins"]]


def test_insert_reinsert_uninstall(bins, dirs):
    b, c = dirs
    f = c / "10-bridge.conflist"
    f.write_text(BRIDGE_CONFLIST)
    os.chmod(f, 0o640)
    other = c / "99-other.conflist"
    other.write_text(BRIDGE_CONFLIST.replace("k8s-pod-network", "other"))
    before = snapshot(c)

    install(bins, dirs)
    assert (b / "ambit-cni").exists() and os.access(b / "ambit-cni", os.X_OK)
    assert (b / "ambit-cni").read_bytes() == (bins / "ambit-cni").read_bytes()
    assert plugins(f) == ["bridge", "portmap", "ambit-cni"]
    assert json.loads(f.read_text())["cniVersion"] == "1.0.0"
    assert os.stat(f).st_mode & 0o777 == 0o640
    assert other.read_bytes() == before["99-other.conflist"]  # only the primary
    assert listing(c) == ["10-bridge.conflist", "10-bridge.conflist.ambit-orig",
                          "99-other.conflist"]

    # re-insert: no duplicate, no change at all
    after_first = snapshot(c)
    install(bins, dirs)
    assert snapshot(c) == after_first

    uninstall(bins, dirs)
    assert snapshot(c) == before
    assert not (b / "ambit-cni").exists()
    # uninstall twice is fine
    uninstall(bins, dirs)
    assert snapshot(c) == before


def test_plugin_config_update_in_place(bins, dirs):
    b, c = dirs
    f = c / "10-bridge.conflist"
    f.write_text(BRIDGE_CONFLIST)
    install(bins, dirs, "--plugin-config", '{"excludeNamespaces":["kube-system"]}')
    entry = json.loads(f.read_text())["plugins"][-1]
    assert entry == {"type": "ambit-cni", "excludeNamespaces": ["kube-system"]}
    install(bins, dirs, "--plugin-config",
            '{"excludeNamespaces":["kube-system"],"controlSocket":"/run/x.sock"}')
    ps = json.loads(f.read_text())["plugins"]
    assert [p["type"] for p in ps] == ["bridge", "portmap", "ambit-cni"]
    assert ps[-1]["controlSocket"] == "/run/x.sock"
    uninstall(bins, dirs)
    assert f.read_text() == BRIDGE_CONFLIST


def test_conf_converted_to_conflist(bins, dirs):
    b, c = dirs
    f = c / "10-podnet.conf"
    f.write_text(BRIDGE_CONF)
    install(bins, dirs)
    assert listing(c) == ["10-podnet.conf.ambit-orig", "10-podnet.conflist"]
    lst = json.loads((c / "10-podnet.conflist").read_text())
    assert lst["cniVersion"] == "1.0.0" and lst["name"] == "podnet"
    assert [p["type"] for p in lst["plugins"]] == ["bridge", "ambit-cni"]
    assert "cniVersion" not in lst["plugins"][0] and "name" not in lst["plugins"][0]
    assert lst["plugins"][0]["ipam"] == {"type": "host-local", "subnet": "10.22.0.0/16"}
    snap = snapshot(c)
    install(bins, dirs)
    assert snapshot(c) == snap
    uninstall(bins, dirs)
    assert listing(c) == ["10-podnet.conf"]
    assert f.read_text() == BRIDGE_CONF


def test_primary_is_lexically_first(bins, dirs):
    b, c = dirs
    (c / "20-b.conflist").write_text(BRIDGE_CONFLIST)
    (c / "05-a.json").write_text(BRIDGE_CONFLIST.replace("k8s-pod-network", "first"))
    (c / "README").write_text("not a config")
    (c / "00-notes.txt").write_text("{}")
    install(bins, dirs)
    assert plugins(c / "05-a.json") == ["bridge", "portmap", "ambit-cni"]
    assert plugins(c / "20-b.conflist") == ["bridge", "portmap"]
    uninstall(bins, dirs)
    assert plugins(c / "05-a.json") == ["bridge", "portmap"]


def test_primary_rewritten_by_its_owner(bins, dirs):
    # The main plugin's agent rewrites its conflist (dropping ambit) and
    # we install again: the new version becomes the one to restore.
    b, c = dirs
    f = c / "10-bridge.conflist"
    f.write_text(BRIDGE_CONFLIST)
    install(bins, dirs)
    v2 = BRIDGE_CONFLIST.replace("10.88.0.0/16", "10.99.0.0/16")
    f.write_text(v2)
    install(bins, dirs)
    assert plugins(f) == ["bridge", "portmap", "ambit-cni"]
    uninstall(bins, dirs)
    assert f.read_text() == v2


def test_owner_changed_file_after_install(bins, dirs):
    # Edited while ambit was in: uninstall keeps the edit, drops only ambit.
    b, c = dirs
    f = c / "10-bridge.conflist"
    f.write_text(BRIDGE_CONFLIST)
    install(bins, dirs)
    j = json.loads(f.read_text())
    j["plugins"][0]["mtu"] = 1400
    f.write_text(json.dumps(j))
    uninstall(bins, dirs)
    j = json.loads(f.read_text())
    assert [p["type"] for p in j["plugins"]] == ["bridge", "portmap"]
    assert j["plugins"][0]["mtu"] == 1400
    assert listing(c) == ["10-bridge.conflist"]


def test_refusals(bins, dirs):
    b, c = dirs
    # nothing to chain into yet
    p = install(bins, dirs, check=False)
    assert p.returncode != 0 and "no network config" in p.stderr
    # a version ambit-cni cannot speak: installing would break every pod
    f = c / "10-old.conflist"
    f.write_text(BRIDGE_CONFLIST.replace("1.0.0", "0.3.1"))
    before = snapshot(c)
    p = install(bins, dirs, check=False)
    assert p.returncode != 0 and "0.3.1" in p.stderr
    assert snapshot(c) == before
    f.write_text(BRIDGE_CONFLIST)
    before = snapshot(c)
    for bad in ('{"timeoutMs": "soon"}', "[1]", "{nope", '{"redirect": {"excludePorts": [0]}}',
                '{"redirect": {"excludePorts": [22, 22]}}'):
        p = install(bins, dirs, "--plugin-config", bad, check=False)
        assert p.returncode != 0, bad
        assert snapshot(c) == before, bad
    # unparsable primary config
    f.write_text("{ broken")
    p = install(bins, dirs, check=False)
    assert p.returncode != 0
    # usage errors
    assert cni(bins, "install", check=False).returncode == 2
    assert cni(bins, "install", "--cni-conf-dir", c, check=False).returncode == 2
    assert cni(bins, "frobnicate", check=False).returncode == 2


def test_no_temp_files_left(bins, dirs):
    b, c = dirs
    (c / "10-podnet.conf").write_text(BRIDGE_CONF)
    install(bins, dirs)
    uninstall(bins, dirs)
    assert listing(c) == ["10-podnet.conf"]
    assert listing(b) == []


def test_installed_conflist_drives_a_pod(topo, bins, tmp_path):
    """The conflist the installer wrote, run through the harness's libcni
    executor: the pod comes up with ambit-cni chained (and, node-proxy
    being absent here, excluded by namespace so ADD passes through)."""
    n1 = topo.add_node("n1")
    conf_dir = tmp_path / "net.d"
    bin_dir = tmp_path / "bin"
    conf_dir.mkdir()
    bin_dir.mkdir()
    base = n1.conflist()
    (conf_dir / "10-test.conflist").write_text(json.dumps(base, indent=2))
    install(bins, (bin_dir, conf_dir), "--plugin-config",
            json.dumps({"excludeNamespaces": ["default"],
                        "stateDir": str(tmp_path / "state"),
                        "controlSocket": str(tmp_path / "none.sock")}))
    lst = json.loads((conf_dir / "10-test.conflist").read_text())
    assert lst["plugins"][-1]["type"] == "ambit-cni"
    topo.cni_path = f"/usr/lib/cni:{bin_dir}"
    a = topo.add_pod(n1, "a", extra_plugins=lst["plugins"][len(base["plugins"]):])
    assert a.ip
    topo.del_pod(a)
