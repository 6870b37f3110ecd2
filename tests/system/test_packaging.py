"""Packaging: the Kubernetes manifests (configs/k8s), the Containerfile and
the systemd units (configs/systemd), checked offline.

- Every manifest passes tests/packaging/validate_k8s.py (YAML, the API's
  field names and types via python3-kubernetes, ambit's own rules), and
  each kind of breakage a manifest can suffer is rejected by it.
- The node-proxy.ini and CNI plugin config shipped in the ConfigMap are
  accepted by the real binaries; the init container's script installs and
  uninstalls the bundled CNI plugin on scratch CNI dirs.
- The Containerfile names files that exist, installs every program the
  build makes, and its runtime packages cover every library they link.
- The systemd units pass `systemd-analyze verify`; node-proxy runs real
  traffic with only CAP_NET_ADMIN + CAP_SYS_ADMIN in its bounding set and
  only system calls and socket families the unit allows (strace), and
  ambit-enroll meshes a netns without CNI.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from topology import http_server, netns_exec

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "configs" / "k8s"
SYSTEMD = ROOT / "configs" / "systemd"
sys.path.insert(0, str(ROOT / "tests" / "packaging"))

import validate_k8s  # noqa: E402


def problems(directory):
    return validate_k8s.validate(directory, ini_reference=ROOT / "configs" / "node-proxy.ini").problems


def configmap(name):
    for p in (K8S / "base").glob("*.yaml"):
        for d in yaml.safe_load_all(p.read_text()):
            if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name:
                return d["data"] or {}
    raise KeyError(name)


def ini_drain_s(text):
    m = re.search(r"^\s*drain\s*=\s*(\S+)", text, re.M)
    return validate_k8s.duration_s(m.group(1)) if m else 30


# --- Kubernetes manifests ------------------------------------------------------

def test_manifests_valid():
    assert problems(K8S) == []


def test_api_models_available():
    """The strict field check needs Debian's python3-kubernetes (deps.sh)."""
    assert validate_k8s.K8S_MODELS is not None, "python3-kubernetes not installed"


def _sub(path, old, new):
    text = path.read_text()
    assert old in text, f"mutation target {old!r} not in {path.name}: update the test"
    path.write_text(text.replace(old, new))


DS = "base/40-daemonset.yaml"
BREAKAGES = {
    # name: (file, old, new, expected problem substring)
    "probe-port": (DS, "path: /healthz/ready\n              port: 15021\n            periodSeconds: 5",
                   "path: /healthz/ready\n              port: 8080\n            periodSeconds: 5",
                   "readinessProbe port 8080"),
    "probe-missing": (DS, "          livenessProbe:", "          livenessProbeX:", "livenessProbe missing"),
    "extra-capability": (DS, 'add: ["NET_ADMIN", "SYS_ADMIN"]', 'add: ["NET_ADMIN", "SYS_ADMIN", "NET_RAW"]',
                         "capability NET_RAW is not in the justified set"),
    "missing-capability": (DS, 'add: ["NET_ADMIN", "SYS_ADMIN"]', 'add: ["NET_ADMIN"]',
                           "capabilities.add must be exactly"),
    "no-drop-all": (DS, 'drop: ["ALL"]\n              add:', 'drop: ["MKNOD"]\n              add:',
                    "capabilities.drop must contain ALL"),
    "privileged": (DS, "privileged: false\n            runAsUser: 0\n            runAsNonRoot",
                   "privileged: true\n            runAsUser: 0\n            runAsNonRoot",
                   "privileged: true is not allowed"),
    "no-escalation-with-sys-admin": (DS, "runAsNonRoot: false\n", "runAsNonRoot: false\n"
                                     "            allowPrivilegeEscalation: false\n",
                                     "allowPrivilegeEscalation: false with SYS_ADMIN"),
    "host-network-off": (DS, "      hostNetwork: true\n", "      hostNetwork: false\n", "hostNetwork must be True"),
    "host-pid-on": (DS, "      hostPID: false\n", "      hostPID: true\n", "hostPID must be False"),
    "bad-yaml": (DS, "      hostNetwork: true\n", "      hostNetwork: true\n    : [oops\n", "not valid YAML"),
    "dangling-volume": (DS, "- name: state\n              mountPath: /var/lib/ambit",
                        "- name: statee\n              mountPath: /var/lib/ambit",
                        "volumeMount 'statee' names no volume"),
    "unused-volume": (DS, "            - name: services\n              mountPath: /etc/ambit/services.d\n"
                          "              readOnly: true\n", "", "volume 'services' is mounted by no container"),
    "missing-configmap-key": (DS, "/etc/ambit/config/node-proxy.ini", "/etc/ambit/config/proxy.ini",
                              "/etc/ambit/config/proxy.ini is not a key of ConfigMap ambit-node-proxy"),
    "missing-configmap": (DS, "name: ambit-services", "name: ambit-servics",
                          "ConfigMap ambit-servics not defined"),
    "secret-key": (DS, "- key: node-key.pem", "- key: node.key", "key 'node.key' not in Secret layout"),
    "propagation": (DS, "mountPropagation: HostToContainer", "mountPropagation: None",
                    "/run/netns needs mountPropagation HostToContainer"),
    "wrong-hostpath": (DS, "path: /var/lib/ambit", "path: /tmp/ambit",
                       "/var/lib/ambit must be hostPath /var/lib/ambit"),
    "hostpath-root": (DS, "path: /var/lib/ambit", "path: /", "hostPath / is not an allowed host directory"),
    "netns-writable": (DS, "mountPropagation: HostToContainer\n              readOnly: true",
                       "mountPropagation: HostToContainer\n              readOnly: false",
                       "hostPath /run/netns must be mounted readOnly"),
    "no-resources": (DS, "              cpu: 100m\n              memory: 64Mi\n            limits:\n"
                         "              cpu: \"2\"\n              memory: 512Mi\n",
                     "              cpu: 100m\n              memory: 64Mi\n",
                     "resources.limits.cpu not set"),
    "image-latest": (DS, "localhost/ambit/node:0.1.0", "localhost/ambit/node:latest",
                     "needs an explicit version tag"),
    "short-grace": (DS, "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 10",
                    "terminationGracePeriodSeconds 10 < drain"),
    "update-strategy": (DS, "maxUnavailable: 1", "maxUnavailable: 3", "updateStrategy must be"),
    "no-prestop-drain": (DS, "/quitquitquit", "/healthz/ready", "preStop must call /quitquitquit"),
    "scrape-annotation": (DS, 'prometheus.io/port: "15020"', 'prometheus.io/port: "9090"',
                          "annotation prometheus.io/port"),
    "typo-field": (DS, "          readinessProbe:", "          readinesProbe:",
                   'unknown field "readinesProbe"'),
    "wrong-type": (DS, "containerPort: 15020", 'containerPort: "metrics"', "expected an integer"),
    "unquoted-annotation": (DS, 'prometheus.io/scrape: "true"', "prometheus.io/scrape: true",
                            "expected a string"),
    "init-command": (DS, 'command: ["/usr/local/bin/ambit-install-cni"]', 'command: ["/bin/true"]',
                     "command must start with /usr/local/bin/ambit-install-cni"),
    "rbac-write-verb": ("base/10-rbac.yaml", 'verbs: ["get", "list", "watch"]',
                        'verbs: ["get", "list", "watch", "create"]', "verb 'create' not allowed"),
    "rbac-secrets": ("base/10-rbac.yaml", '["pods", "namespaces", "services"]',
                     '["pods", "namespaces", "services", "secrets"]', "resource 'secrets' not allowed"),
    "binding-to-nothing": ("base/10-rbac.yaml", "  kind: ClusterRole\n  name: ambit-node-proxy",
                           "  kind: ClusterRole\n  name: ambit-admin", "roleRef ambit-admin is not defined"),
    "service-account-missing": ("base/10-rbac.yaml", "kind: ServiceAccount\nmetadata:\n  name: ambit-node-proxy",
                                "kind: ServiceAccount\nmetadata:\n  name: ambit-agent",
                                "serviceAccountName ambit-node-proxy is not defined"),
    "wrong-namespace": ("base/21-policies.yaml", "namespace: ambit-system\n  labels",
                        "namespace: default\n  labels", "namespace must be ambit-system"),
    "ini-unknown-key": ("base/20-config.yaml", "    workers = 2\n", "    workers = 2\n    worker_threads = 2\n",
                        "key proxy.worker_threads unknown"),
    "ini-unknown-section": ("base/20-config.yaml", "    [timeouts]\n", "    [timeout]\n",
                            "section [timeout] unknown"),
    "socket-mismatch": ("base/20-config.yaml", '"controlSocket": "/run/ambit/node-proxy.sock"',
                        '"controlSocket": "/run/ambit/proxy.sock"',
                        "is not node-proxy's control_socket"),
    "socket-off-host": ("base/20-config.yaml", "control_socket = /run/ambit/node-proxy.sock",
                        "control_socket = /tmp/node-proxy.sock", "control_socket /tmp/node-proxy.sock is not on a host mount"),
    "state-in-run": ("base/20-config.yaml", "state_file = /var/lib/ambit/node-proxy.state",
                     "state_file = /run/ambit/node-proxy.state", "must persist"),
    "plugin-json": ("base/20-config.yaml", '"type": "ambit-cni",', '"type": "ambit-cni"', "is not JSON"),
    "mesh-captures-itself": ("base/20-config.yaml", ', "ambit-system"]', "]",
                             "excludeNamespaces lacks ambit-system"),
    "paths-key-unset": ("base/20-config.yaml", "    state_file = /var/lib/ambit/node-proxy.state\n", "",
                        "does not set paths.state_file"),
    "ini-garbage": ("base/20-config.yaml", "    workers = 2\n", "    workers 2\n", "not a section or key = value"),
    "kustomization-missing-file": ("base/kustomization.yaml", "  - 22-services.yaml\n",
                                   "  - 22-services.yaml\n  - 50-missing.yaml\n",
                                   "resource 50-missing.yaml does not exist"),
    "kustomization-unlisted": ("base/kustomization.yaml", "  - 22-services.yaml\n", "",
                               "22-services.yaml is not listed"),
    "overlay-hostpath": ("overlays/per-node-certs/node-certs-hostpath.yaml", "path: /etc/ambit/certs",
                         "path: /etc", "hostPath /etc is not an allowed host directory"),
    "overlay-keeps-secret": ("overlays/per-node-certs/node-certs-hostpath.yaml", "          secret: null\n", "",
                             "needs exactly one source"),
    "overlay-target": ("overlays/per-node-certs/node-certs-hostpath.yaml", "  name: ambit-node-proxy",
                       "  name: ambit-proxy", "patch target DaemonSet/ambit-proxy"),
    "overlay-base": ("overlays/per-node-certs/kustomization.yaml", "../../base", "../../bse",
                     "resource ../../bse does not exist"),
    "uninstall-caps": ("uninstall/ambit-uninstall.yaml", 'add: ["NET_ADMIN", "SYS_ADMIN"]',
                       'add: ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]', "capability SYS_PTRACE"),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_broken_manifest_rejected(name, tmp_path):
    """Each breakage, alone, makes the validator fail with a message that
    names it."""
    d = tmp_path / "k8s"
    shutil.copytree(K8S, d)
    assert problems(d) == []
    f, old, new, expect = BREAKAGES[name]
    _sub(d / f, old, new)
    found = problems(d)
    assert found, f"{name}: validator accepted the broken manifest"
    assert any(expect in p for p in found), f"{name}: expected {expect!r} in {found}"


def test_validator_cli_exit_status(tmp_path):
    tool = [sys.executable, str(ROOT / "tests" / "packaging" / "validate_k8s.py")]
    ok = subprocess.run(tool + [str(K8S)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    d = tmp_path / "k8s"
    shutil.copytree(K8S, d)
    _sub(d / DS, 'add: ["NET_ADMIN", "SYS_ADMIN"]', 'add: ["NET_ADMIN", "SYS_ADMIN", "SYS_MODULE"]')
    bad = subprocess.run(tool + [str(d)], capture_output=True, text=True)
    assert bad.returncode == 1 and "SYS_MODULE" in bad.stdout, bad.stdout
    assert subprocess.run(tool + [str(tmp_path / "nope")], capture_output=True).returncode == 2


def _kubectl():
    k = shutil.which("kubectl")
    if not k:
        pytest.skip("no kubectl (Debian: kubernetes-client); schema validation above still ran")
    return k


def test_kubectl_parses_offline(tmp_path):
    """kubectl's own decoder, without a cluster.  `create/apply --dry-run=
    client` need API discovery even with --validate=false (they fail with
    "connection refused"), so this uses `label --local`, which decodes each
    object client-side only.  The typed check is validate_k8s's job."""
    k = _kubectl()
    kc = tmp_path / "kubeconfig"
    kc.write_text("")
    env = dict(os.environ, KUBECONFIG=str(kc))
    files = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
    out = subprocess.run([k, "label", "--local", "-o", "name", "ambit.test/parsed=yes"]
                         + [a for f in files for a in ("-f", str(f))],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "daemonset.apps/ambit-node-proxy" in out.stdout
    assert "configmap/ambit-node-proxy" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / DS).read_text().replace("  template:\n", "  template: [\n", 1))
    out = subprocess.run([k, "label", "--local", "-o", "name", "x=y", "-f", str(bad)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0


def _kustomize_volumes(k, kdir, env):
    out = subprocess.run([k, "kustomize", str(kdir)], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    ds = [d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "ambit-node-proxy"]
    assert len(ds) == 1
    return docs, {v["name"]: v for v in ds[0]["spec"]["template"]["spec"]["volumes"]}


def test_kubectl_kustomize_renders_base_and_overlay(tmp_path):
    """kubectl's built-in kustomize renders the base and the per-node-certs
    overlay offline, and agrees with validate_k8s's own rendering of the
    overlay (which the validator then checks)."""
    k = _kubectl()
    kc = tmp_path / "kubeconfig"
    kc.write_text("")
    env = dict(os.environ, KUBECONFIG=str(kc))
    docs, vols = _kustomize_volumes(k, K8S / "base", env)
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "ClusterRole",
                                        "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    assert vols["node-certs"]["secret"]["secretName"] == "ambit-node-certs"
    _, vols = _kustomize_volumes(k, K8S / "overlays" / "per-node-certs", env)
    assert vols["node-certs"] == {"name": "node-certs",
                                  "hostPath": {"path": "/etc/ambit/certs", "type": "Directory"}}
    rep = validate_k8s.Report()
    mine = validate_k8s.render(K8S / "overlays" / "per-node-certs", rep)
    assert rep.problems == []
    ds = [d for _, d in mine if d["kind"] == "DaemonSet"][0]
    assert {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}["node-certs"] == \
        vols["node-certs"]


def test_configmap_ini_accepted_by_node_proxy(bins, tmp_path):
    """The real parser: pass 1 of node-proxy's option parsing loads
    --config (exit 2 on any error), then --help exits 0."""
    ini = tmp_path / "node-proxy.ini"
    ini.write_text(configmap("ambit-node-proxy")["node-proxy.ini"])
    np = str(bins / "ambit-node-proxy")
    r = subprocess.run([np, "run", "--config", str(ini), "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ini.write_text(ini.read_text().replace("workers = 2", "workers = two"))
    r = subprocess.run([np, "run", "--config", str(ini), "--help"], capture_output=True, text=True)
    assert r.returncode == 2 and "workers" in r.stderr, r.stderr


def test_daemonset_commands_match_programs(bins):
    """The flags the DaemonSet passes exist in the binary's help, and the
    environment the init containers set is what ambit-install-cni reads."""
    helptext = subprocess.run([str(bins / "ambit-node-proxy"), "--help"], capture_output=True,
                              text=True).stdout
    script = (K8S / "install-cni.sh").read_text()
    for f in (K8S / DS, K8S / "uninstall" / "ambit-uninstall.yaml"):
        spec = yaml.safe_load(f.read_text())["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            argv = (c.get("command") or []) + (c.get("args") or [])
            if argv and argv[0].endswith("/ambit-node-proxy"):
                for flag in (a for a in argv if a.startswith("--")):
                    assert flag in helptext, f"{f.name}: {flag} unknown to ambit-node-proxy"
            if argv and argv[0].endswith("/ambit-install-cni"):
                for e in c.get("env") or []:
                    assert "${" + e["name"] + ":-" in script, f"{e['name']} not read by install-cni.sh"
                for a in argv[1:]:
                    assert a in ("install", "uninstall", "--remove-rules"), a


def test_configmap_prepared_keys_parse(bins, tmp_path):
    """The ";; " lines of the ConfigMap's node-proxy.ini (settings whose keys
    are still landing) are accepted by node-proxy's parser once it knows
    them: removing the ";; " is then all the wiring needed."""
    text = configmap("ambit-node-proxy")["node-proxy.ini"]
    prepared = [ln for ln in text.splitlines() if ln.startswith(";; ")]
    if not prepared:
        return  # all wired
    ini = tmp_path / "uncommented.ini"
    ini.write_text("\n".join(ln[3:] if ln.startswith(";; ") else ln for ln in text.splitlines()))
    r = subprocess.run([str(bins / "ambit-node-proxy"), "run", "--config", str(ini), "--help"],
                       capture_output=True, text=True)
    if r.returncode == 2 and "unknown" in r.stderr:
        pytest.skip(f"not wired yet: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr


def test_grace_covers_drain():
    ds = yaml.safe_load((K8S / DS).read_text())
    grace = ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= ini_drain_s(configmap("ambit-node-proxy")["node-proxy.ini"]) + 5


# --- the init container's script and the CNI bundle ----------------------------------

PRIMARY = {
    "cniVersion": "1.0.0", "name": "podnet",
    "plugins": [{"type": "bridge", "bridge": "cni0",
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}}],
}


def _image_dir(bins, tmp_path):
    """What the image's /usr/local/bin holds: ambit-cni (+ its bundle when
    patchelf is present) and the other programs."""
    src = tmp_path / "image-bin"
    src.mkdir()
    if shutil.which("patchelf"):
        subprocess.run(["sh", str(K8S / "bundle-cni.sh"), str(bins / "ambit-cni"), str(src)],
                       check=True, capture_output=True, text=True)
    else:
        shutil.copy2(bins / "ambit-cni", src / "ambit-cni")
    for b in ("ambit-node-proxy", "ambit-redirect"):
        os.symlink(bins / b, src / b)
    return src


def _install_env(src, host, plugin_config):
    return dict(os.environ, CNI_BIN_DIR=str(host / "bin"), CNI_CONF_DIR=str(host / "net.d"),
                PLUGIN_CONFIG=str(plugin_config), SRC_DIR=str(src), WAIT_SECONDS="0")


def test_install_cni_script_installs_and_uninstalls(bins, tmp_path):
    src = _image_dir(bins, tmp_path)
    host = tmp_path / "host"
    (host / "bin").mkdir(parents=True)
    (host / "net.d").mkdir()
    primary = host / "net.d" / "10-podnet.conflist"
    original = json.dumps(PRIMARY, indent=2) + "\n"
    primary.write_text(original)
    pc = tmp_path / "ambit-cni.plugin.json"
    pc.write_text(configmap("ambit-node-proxy")["ambit-cni.plugin.json"])
    script = str(K8S / "install-cni.sh")

    r = subprocess.run(["sh", script], env=_install_env(src, host, pc), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    chain = json.loads(primary.read_text())["plugins"]
    assert [p["type"] for p in chain] == ["bridge", "ambit-cni"]
    want = json.loads(pc.read_text())
    assert {k: chain[-1][k] for k in want} == want
    installed = host / "bin" / "ambit-cni"
    assert os.access(installed, os.X_OK)
    # run as the runtime would: clean environment, from the host's bin dir
    v = subprocess.run([str(installed)], input='{"cniVersion":"1.0.0"}', capture_output=True,
                       text=True, env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"})
    assert v.returncode == 0 and "1.0.0" in json.loads(v.stdout)["supportedVersions"], v.stderr
    if (src / "ambit-cni.libs").is_dir():
        libs = sorted(p.name for p in (host / "bin" / "ambit-cni.libs").iterdir())
        assert "libnftables.so.1" in libs and "libjansson.so.4" in libs, libs
        dbg = subprocess.run([str(installed)], input='{"cniVersion":"1.0.0"}', capture_output=True,
                             text=True, env={"CNI_COMMAND": "VERSION", "LD_DEBUG": "libs"})
        loaded = re.findall(r"calling init: (\S+)", dbg.stderr)
        nft = [p for p in loaded if "libnftables" in p]
        assert nft and all(str(host / "bin" / "ambit-cni.libs") in p for p in nft), loaded
    # idempotent
    before = primary.read_text()
    r = subprocess.run(["sh", script], env=_install_env(src, host, pc), capture_output=True, text=True)
    assert r.returncode == 0 and primary.read_text() == before, r.stderr

    r = subprocess.run(["sh", script, "uninstall"], env=_install_env(src, host, pc),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert primary.read_text() == original
    assert not installed.exists() and not (host / "bin" / "ambit-cni.libs").exists()
    assert sorted(os.listdir(host / "net.d")) == ["10-podnet.conflist"]


def test_install_cni_script_refuses(bins, tmp_path):
    src = _image_dir(bins, tmp_path)
    host = tmp_path / "host"
    (host / "bin").mkdir(parents=True)
    (host / "net.d").mkdir()
    pc = tmp_path / "p.json"
    pc.write_text(configmap("ambit-node-proxy")["ambit-cni.plugin.json"])
    script = str(K8S / "install-cni.sh")
    # no primary config yet: waits (WAIT_SECONDS=0: gives up at once)
    r = subprocess.run(["sh", script], env=_install_env(src, host, pc), capture_output=True, text=True)
    assert r.returncode == 1 and "gave up" in r.stderr, r.stderr
    # a plugin config the plugin's own parser refuses
    (host / "net.d" / "10-podnet.conflist").write_text(json.dumps(PRIMARY))
    pc.write_text(json.dumps({"type": "ambit-cni", "excludeNamespaces": "kube-system"}))
    r = subprocess.run(["sh", script], env=_install_env(src, host, pc), capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert json.loads((host / "net.d" / "10-podnet.conflist").read_text()) == PRIMARY
    # missing host dir (a forgotten hostPath)
    env = _install_env(src, host, pc)
    env["CNI_BIN_DIR"] = str(host / "nope")
    r = subprocess.run(["sh", script], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "does not exist" in r.stderr


# --- Containerfile -------------------------------------------------------------------

def containerfile():
    return (K8S / "Containerfile").read_text()


def built_programs():
    progs = set()
    for mk in ROOT.glob("*/*.mk"):
        progs |= set(re.findall(r"^BINS\s*\+=\s*\$\(O\)/bin/(\S+)", mk.read_text(), re.M))
    return progs


def test_containerfile_paths_exist():
    text = containerfile()
    refs = {r.rstrip(".") for r in re.findall(r"\b((?:configs|tools|tests)/[\w./-]+)", text)}
    assert refs, "no repository paths found"
    for r in refs:
        assert (ROOT / r).exists(), f"Containerfile names {r}, which does not exist"
    # every program the build makes goes into the image, and nothing else
    named = set(re.findall(r"build/bin/(ambit-[\w-]+)", text)) | \
        set(re.findall(r"for b in ([\w -]+);", text)[0].split())
    progs = built_programs()
    assert progs, "no BINS in */*.mk"
    assert progs <= named, f"programs built but not in the image: {progs - named}"
    assert named <= progs, f"image names programs the build does not make: {named - progs}"
    # two stages, both Debian 12, the runtime copies only /out from the build
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) == 2 and all("bookworm" in f for f in froms), froms
    assert "make deps" in text and re.search(r"\bmake\b[^\n]*O=build", text)


def test_containerfile_assembly_step(bins, tmp_path):
    """The build stage's assembly RUN (the part after `make`), executed
    here on this tree's build with /out moved to a temp dir: programs get
    the image's rpath, ambit-cni its library bundle, and each runs with the
    libraries the image would hold."""
    if not shutil.which("patchelf"):
        pytest.skip("patchelf not installed")
    if not (ROOT / ".deps" / "wolfssl" / "lib").is_dir():
        pytest.skip("no .deps/wolfssl (make deps)")
    m = re.search(r"^RUN (set -eu; \\\n(?:.*\\\n)*.*\n)", containerfile(), re.M)
    assert m, "assembly RUN not found"
    out = tmp_path / "out"
    script = m.group(1).replace("/out", str(out)).replace("build/bin/", f"{bins}/")
    r = subprocess.run(["sh", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    usr = out / "usr" / "local"
    for prog in sorted(built_programs()):
        exe = usr / "bin" / prog
        assert os.access(exe, os.X_OK), prog
        dyn = subprocess.run(["readelf", "-d", str(exe)], capture_output=True, text=True).stdout
        want = "$ORIGIN/ambit-cni.libs" if prog == "ambit-cni" else "/usr/local/lib/ambit"
        assert f"[{want}]" in dyn, f"{prog}: rpath is not {want}:\n{dyn}"
    assert list((usr / "lib" / "ambit").glob("libwolfssl.so*"))
    env = dict(os.environ, LD_LIBRARY_PATH=str(usr / "lib" / "ambit"), ASAN_OPTIONS="detect_leaks=0")
    r = subprocess.run([str(usr / "bin" / "ambit-node-proxy"), "--help"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and "--config" in r.stdout, r.stderr
    r = subprocess.run([str(usr / "bin" / "ambit-certs"), "--help"], capture_output=True, text=True,
                       env=env)
    assert "init-root" in r.stdout + r.stderr
    r = subprocess.run([str(usr / "bin" / "ambit-cni")], input='{"cniVersion":"1.0.0"}',
                       capture_output=True, text=True, env={"CNI_COMMAND": "VERSION"})
    assert r.returncode == 0, r.stderr
    assert (out / "etc" / "ambit" / "node-proxy.ini").read_text() == \
        (ROOT / "configs" / "node-proxy.ini").read_text()
    assert os.access(usr / "bin" / "ambit-install-cni", os.X_OK)


def test_unit_readiness_wait(topo, bins):
    """The unit's ExecStartPost (pointed at this test's socket) returns 0
    once node-proxy is ready."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    post = unit_keys(SYSTEMD / "ambit-node-proxy.service")["ExecStartPost"][0]
    assert post.startswith("/bin/sh -c '") and post.endswith("'")
    n1 = topo.add_node("n1")
    proc, sock = _serve(topo, bins, n1)
    # what systemd hands the shell: $$ -> $, then our binary's path
    body = post[len("/bin/sh -c '"):-1].replace("$$", "$").replace(
        "/usr/local/bin/ambit-node-proxy", f"{bins}/ambit-node-proxy")
    r = n1.run(["env", f"AMBIT_CONTROL_SOCKET={sock}", "/bin/sh", "-c", body], check=False,
               timeout=40)
    assert r.returncode == 0, r.stderr
    # pointed at a socket nobody serves, it keeps waiting (cut short here)
    r = n1.run(["env", f"AMBIT_CONTROL_SOCKET={sock}.none", "/bin/sh", "-c",
                body.replace("300", "5")], check=False, timeout=40)
    assert r.returncode == 1 and "not ready" in r.stderr
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def _runtime_packages():
    stage2 = containerfile().split("\nFROM ")[2]
    m = re.search(r"apt-get install[^\n]*\\\n((?:\s+[^\n]*\\\n)*\s+[^\n]*&&)", stage2)
    assert m, "runtime apt-get install not found"
    words = m.group(1).replace("\\", " ").replace("&&", " ").split()
    return {w for w in words if not w.startswith("-")}


def test_runtime_packages_cover_linked_libraries(bins):
    """Each library a program links directly (DT_NEEDED) comes from a
    package the runtime stage installs, or is glibc/libgcc, or is the
    project's wolfSSL (copied in)."""
    plain = ROOT / "build" / "bin"
    d = plain if all((plain / p).exists() for p in built_programs()) else bins
    pkgs = _runtime_packages()
    base = {"libc6", "libgcc-s1", "libstdc++6", "libasan8", "libubsan1", "libzstd1", "zlib1g"}
    missing = {}
    for prog in sorted(built_programs()):
        exe = d / prog
        ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, check=True).stdout
        paths = dict(re.findall(r"^\s*(\S+) => (/\S+)", ldd, re.M))
        needed = re.findall(r"\(NEEDED\).*\[(.+)\]",
                            subprocess.run(["readelf", "-d", str(exe)], capture_output=True,
                                           text=True, check=True).stdout)
        for lib in needed:
            path = paths.get(lib)
            assert path, f"{prog}: {lib} unresolved"
            if "/.deps/wolfssl/" in path:
                assert "libwolfssl" in lib
                continue
            owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
            if owner.returncode:
                owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            pkg = owner.stdout.split(":")[0].strip()
            if pkg not in base and pkg not in pkgs:
                missing.setdefault(pkg or lib, []).append(prog)
    assert not missing, f"runtime stage lacks packages: {missing}"
    assert "libwolfssl35" not in pkgs, "Debian's wolfSSL (no AES-NI) must not be in the image"


# --- systemd ------------------------------------------------------------------------

def unit_keys(path):
    keys = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        k, _, v = line.partition("=")
        keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def test_node_proxy_unit_hardening():
    u = unit_keys(SYSTEMD / "ambit-node-proxy.service")
    one = {k: v[-1] for k, v in u.items()}
    assert set(one["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}
    assert "AmbientCapabilities" not in one
    assert one["NoNewPrivileges"] == "yes"
    assert one["ProtectSystem"] == "strict"
    assert set(one["ReadWritePaths"].split()) == {"/run/ambit", "/var/lib/ambit"}
    assert one["RuntimeDirectory"] == "ambit" and one["StateDirectory"] == "ambit"
    assert one["RuntimeDirectoryPreserve"] == "yes"  # the CNI plugin's records live there
    assert one.get("ProtectProc", "default") == "default"  # /proc/PID/ns/net must stay reachable
    assert one["RestrictNamespaces"] == "net"
    assert set(one["RestrictAddressFamilies"].split()) <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert one["Restart"] == "on-failure"
    assert "PrivateNetwork" not in one
    assert one["Type"] in ("exec", "simple")
    assert "ExecReload" not in one  # SIGHUP would terminate node-proxy
    assert "--config /etc/ambit/node-proxy.ini" in one["ExecStart"]
    stop = validate_k8s.duration_s(one["TimeoutStopSec"].rstrip("s") + "s")
    assert stop >= ini_drain_s((ROOT / "configs" / "node-proxy.ini").read_text()) + 5


def test_node_proxy_unit_flags_exist(bins):
    """Every flag the units pass is one the binary documents."""
    helptext = subprocess.run([str(bins / "ambit-node-proxy"), "--help"], capture_output=True,
                              text=True).stdout
    u = unit_keys(SYSTEMD / "ambit-node-proxy.service")
    for flag in re.findall(r"(--[a-z-]+)", " ".join(u["ExecStart"])):
        assert flag in helptext, f"{flag} not in ambit-node-proxy --help"


def test_enroll_unit_keeps_host_mount_namespace():
    """`ip netns attach` in ambit-enroll must pin the netns where node-proxy
    can see it: no option that gives the unit a mount namespace."""
    u = unit_keys(SYSTEMD / "ambit-enroll@.service")
    for k in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateDevices", "ProtectKernelModules",
              "ProtectKernelTunables", "ProtectControlGroups", "ReadWritePaths", "ReadOnlyPaths",
              "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "PrivateMounts",
              "MountFlags", "RootDirectory", "ProtectProc"):
        assert k not in u, f"{k} would give ambit-enroll@ its own mount namespace"
    assert set(u["CapabilityBoundingSet"][-1].split()) == {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}


def _verify(units, tmp_path, bins):
    """systemd-analyze verify on copies whose program paths point into this
    tree (verify checks that ExecStart programs exist)."""
    sa = shutil.which("systemd-analyze")
    if not sa:
        pytest.skip("systemd-analyze not installed")
    d = tmp_path / "units"
    d.mkdir(exist_ok=True)
    out = []
    for name, text in units.items():
        text = text.replace("/usr/local/bin/", f"{bins}/").replace(
            "/usr/local/sbin/ambit-enroll", str(SYSTEMD / "ambit-enroll"))
        (d / name).write_text(text)
        out.append(str(d / name))
    return subprocess.run([sa, "verify", "--man=no"] + out, capture_output=True, text=True,
                          env=dict(os.environ, SYSTEMD_LOG_COLOR="0"), timeout=60)


def _units():
    return {
        "ambit-node-proxy.service": (SYSTEMD / "ambit-node-proxy.service").read_text(),
        # the template, as an instance file (verify does not load templates
        # for instances it is only given by name), and the unit it binds to
        "ambit-enroll@myapp.service": (SYSTEMD / "ambit-enroll@.service").read_text(),
        "myapp.service": "[Service]\nExecStart=/bin/sleep infinity\n",
    }


def test_systemd_analyze_verify(bins, tmp_path):
    r = _verify(_units(), tmp_path, bins)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not out, out


def test_systemd_analyze_catches_broken_unit(bins, tmp_path):
    units = _units()
    units["ambit-node-proxy.service"] = units["ambit-node-proxy.service"].replace(
        "ProtectSystem=strict", "ProtectSytem=strict")
    r = _verify(units, tmp_path, bins)
    assert "Unknown key 'ProtectSytem'" in r.stdout + r.stderr
    units = _units()
    units["ambit-enroll@myapp.service"] = units["ambit-enroll@myapp.service"].replace(
        "BindsTo=%i.service", "BindsTo=%i-gone.service")
    r = _verify(units, tmp_path, bins)
    assert r.returncode != 0 and "myapp-gone.service" in r.stdout + r.stderr
    units = _units()
    units["ambit-node-proxy.service"] = units["ambit-node-proxy.service"].replace(
        "ExecStart=/usr/local/bin/ambit-node-proxy", "ExecStart=/usr/local/bin/ambit-node-proxyy")
    r = _verify(units, tmp_path, bins)
    assert r.returncode != 0 and "ambit-node-proxyy" in r.stdout + r.stderr


# --- the capability set and syscall filter, exercised with real traffic --------------

def _allowed_syscalls(group):
    sa = shutil.which("systemd-analyze")
    out = subprocess.run([sa, "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = line.strip()
            groups[cur] = set()
        elif cur and line.strip() and not line.strip().startswith("#"):
            groups[cur].add(line.strip())

    def expand(g, seen=()):
        res = set()
        for x in groups.get(g, ()):
            res |= expand(x, seen + (g,)) if x.startswith("@") and x not in seen else {x}
        return res
    return expand(group)


def _serve(topo, bins, node, caps="+net_admin,+sys_admin", trace=None, seccomp=None):
    sock = os.path.join(topo.tmpdir, "pk.sock")
    state = os.path.join(topo.tmpdir, "pk.state")
    cmd = [str(bins / "ambit-node-proxy"), "run", "--control-socket", sock, "--state-file", state,
           "--workers", "2", "--drain-timeout", "2s"]
    if trace:
        # LeakSanitizer cannot run under ptrace (SAN=1 builds)
        cmd = ["env", "ASAN_OPTIONS=detect_leaks=0", "strace", "-f", "-qq", "-o", trace] + cmd
    if seccomp:
        # LeakSanitizer stops the world with ptrace, which the filter refuses
        cmd = ["env", "ASAN_OPTIONS=detect_leaks=0", sys.executable,
               str(ROOT / "tests" / "packaging" / "seccomp_profile.py"), "exec", str(seccomp),
               "--"] + cmd
    # root, but only these capabilities can ever be held
    cmd = ["setpriv", f"--bounding-set=-all,{caps}", "--inh-caps=-all"] + cmd
    proc = node.popen(cmd)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("node-proxy exited: " + topo.log(proc))
        if node.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", sock, "status"],
                    check=False).returncode == 0:
            return proc, sock
        time.sleep(0.1)
    raise TimeoutError(topo.log(proc))


def _enroll(bins, node, sock, *args, check=True):
    env = f"AMBIT_BIN_DIR={bins} AMBIT_CONTROL_SOCKET={sock}"
    return node.run(f"env {env} sh {SYSTEMD / 'ambit-enroll'} " + " ".join(args), check=check)


def _stats(node):
    def get():
        with urllib.request.urlopen("http://127.0.0.1:15000/stats", timeout=5) as r:
            return json.loads(r.read())["total"]
    return netns_exec(node, get)


@pytest.mark.timeout(180)
def test_unit_capabilities_and_syscalls_suffice(topo, bins, tmp_path):
    """node-proxy with only CAP_NET_ADMIN + CAP_SYS_ADMIN (setpriv bounding
    set, as the unit's CapabilityBoundingSet) serves a netns enrolled by
    ambit-enroll (no CNI); strace shows only system calls in the unit's
    SystemCallFilter, socket families in RestrictAddressFamilies and setns
    only for network namespaces (RestrictNamespaces=net)."""
    for tool in ("setpriv", "strace", "systemd-analyze", "curl"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    trace = str(tmp_path / "np.strace")
    proc, sock = _serve(topo, bins, n1, trace=trace)
    _enroll(bins, n1, sock, "add", "--netns", a.path, "--name", "a", "--namespace", "shop")
    _enroll(bins, n1, sock, "add", "--netns", b.path, "--name", "b", "--namespace", "shop",
            "--label", "app=b")
    listed = json.loads(n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", sock, "list",
                                "--json"]).stdout)
    byname = {w["name"]: w for w in listed}
    assert set(byname) == {"a", "b"} and byname["b"]["service_account"] == "b"
    assert byname["a"]["uid"] == "ambit-a" and a.ip in byname["a"]["ips"]
    http_server(b, 8080, body="packaged")
    before = _stats(n1)["accepted"]
    for _ in range(3):
        out = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"]).stdout
        assert "packaged" in out
    assert _stats(n1)["accepted"] >= before + 3
    # del: deregistered, rules gone, traffic direct
    _enroll(bins, n1, sock, "del", "--netns", a.path, "--name", "a")
    listed = json.loads(n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", sock, "list",
                                "--json"]).stdout)
    assert [w["name"] for w in listed] == ["b"]
    chk = n1.run([str(bins / "ambit-redirect"), "check", "--netns", a.path], check=False)
    assert chk.returncode != 0, "rules still installed after ambit-enroll del"
    # strace ignores SIGTERM while it runs a command: signal node-proxy
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        os.kill(int(f.read().split()[0]), signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, topo.log(proc)

    allowed = _allowed_syscalls("@system-service")
    used, families, setns_flags = set(), set(), set()
    for line in open(trace):
        m = re.match(r"^\d+\s+(\w+)\(", line)
        if not m:
            continue
        used.add(m.group(1))
        if m.group(1) == "socket":
            families.add(line.split("(", 1)[1].split(",")[0])
        if m.group(1) == "setns":
            setns_flags.add(re.search(r"setns\(\d+, (\w+)", line).group(1))
    # execve is the exec of node-proxy itself by strace, before the filter
    # would apply (systemd installs it before exec too and allows it)
    outside = used - allowed - {"execve"}
    assert not outside, f"system calls outside @system-service: {sorted(outside)}"
    assert families and families <= {"AF_UNIX", "AF_INET", "AF_INET6"}, families
    assert setns_flags == {"CLONE_NEWNET"}, setns_flags


def test_enroll_fails_closed(topo, bins):
    """Without CAP_SYS_ADMIN node-proxy cannot enter the netns: ctl add
    fails, and ambit-enroll removes the rules it installed (no pod left
    redirecting into nothing).  Also shows SYS_ADMIN is needed."""
    for tool in ("setpriv", "curl"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    proc, sock = _serve(topo, bins, n1, caps="+net_admin")
    r = _enroll(bins, n1, sock, "add", "--netns", a.path, "--name", "a", check=False)
    assert r.returncode == 1 and "capture rules removed again" in r.stderr, r.stderr
    chk = n1.run([str(bins / "ambit-redirect"), "check", "--netns", a.path], check=False)
    assert chk.returncode != 0, "rules left behind"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def test_net_admin_is_needed(topo, bins):
    """Without CAP_NET_ADMIN node-proxy cannot mark its sockets (SO_MARK
    0x539), so it cannot serve a pod: the other half of "exactly these
    two"."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    try:
        proc, sock = _serve(topo, bins, n1, caps="+sys_admin")
    except RuntimeError as e:  # refusing to start at all is fine too
        assert "ermission" in str(e) or "EPERM" in str(e), str(e)
        return
    r = _enroll(bins, n1, sock, "add", "--netns", a.path, "--name", "a", check=False)
    assert r.returncode == 1 and "capture rules removed again" in r.stderr, r.stderr
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def test_enroll_usage_errors(bins, tmp_path):
    script = str(SYSTEMD / "ambit-enroll")
    env = dict(os.environ, AMBIT_BIN_DIR=str(bins), AMBIT_CONTROL_SOCKET=str(tmp_path / "none.sock"))
    assert subprocess.run(["sh", script], env=env, capture_output=True).returncode == 2
    assert subprocess.run(["sh", script, "add"], env=env, capture_output=True).returncode == 2
    assert subprocess.run(["sh", script, "add", "--bogus"], env=env, capture_output=True).returncode == 2
    r = subprocess.run(["sh", script, "add", "--netns", str(tmp_path / "nope")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "does not exist" in r.stderr


@pytest.mark.timeout(120)
def test_uninstall_removes_rules_of_served_pods(topo, bins, tmp_path):
    """The uninstall DaemonSet's script: un-chains the plugin and removes
    the capture rules of every pod the running node-proxy lists, so their
    traffic goes direct before node-proxy is deleted."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    proc, sock = _serve(topo, bins, n1)
    for p in (a, b):
        _enroll(bins, n1, sock, "add", "--netns", p.path, "--name", p.name)
        assert n1.run([str(bins / "ambit-redirect"), "check", "--netns", p.path],
                      check=False).returncode == 0
    src = _image_dir(bins, tmp_path)
    host = tmp_path / "host"
    (host / "bin").mkdir(parents=True)
    (host / "net.d").mkdir()
    primary = host / "net.d" / "10-podnet.conflist"
    primary.write_text(json.dumps(PRIMARY))
    pc = tmp_path / "p.json"
    pc.write_text(configmap("ambit-node-proxy")["ambit-cni.plugin.json"])
    env = _install_env(src, host, pc)
    subprocess.run(["sh", str(K8S / "install-cni.sh")], env=env, check=True, capture_output=True)
    env["CONTROL_SOCKET"] = sock
    r = n1.run(["env"] + [f"{k}={env[k]}" for k in ("CNI_BIN_DIR", "CNI_CONF_DIR", "SRC_DIR",
                                                      "CONTROL_SOCKET")]
               + ["sh", str(K8S / "install-cni.sh"), "uninstall", "--remove-rules"])
    assert r.stderr.count("capture rules removed") == 2, r.stderr
    for p in (a, b):
        assert n1.run([str(bins / "ambit-redirect"), "check", "--netns", p.path],
                      check=False).returncode != 0
    assert json.loads(primary.read_text()) == PRIMARY
    http_server(b, 8080, body="direct")
    before = _stats(n1)["accepted"]
    assert "direct" in a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"]).stdout
    assert _stats(n1)["accepted"] == before, "traffic still went through node-proxy"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def test_prestop_hook_reaches_admin_port(topo, bins):
    """The DaemonSet's preStop command, run by bash as the kubelet would
    (exec in the container, host network), reaches node-proxy's admin port
    with a well-formed request and always exits 0.  When node-proxy has
    /quitquitquit, it must then drain and exit 0 by itself."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    ds = yaml.safe_load((K8S / DS).read_text())
    c = ds["spec"]["template"]["spec"]["containers"][0]
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "/bin/bash"
    n1 = topo.add_node("n1")
    proc, sock = _serve(topo, bins, n1)
    shown = cmd[:-1] + [cmd[-1].replace(">/dev/null", "")]
    r = n1.run(shown, check=False, timeout=10)
    assert r.returncode == 0
    status = r.stdout.split("\r\n", 1)[0]
    assert status.startswith("HTTP/1."), r.stdout
    if " 200" in status:
        assert proc.wait(timeout=40) == 0, topo.log(proc)
    else:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    # no admin port: the hook still exits 0 (SIGTERM drains anyway)
    assert n1.run(cmd, check=False, timeout=10).returncode == 0


def test_policy_configmaps_pass_check_config(bins, tmp_path):
    """The policies and services shipped in the ConfigMaps, written out as
    the kubelet mounts them, pass node-proxy's own offline validation."""
    np = str(bins / "ambit-node-proxy")
    dirs = {}
    for cm, kind in (("ambit-policies", "-p"), ("ambit-services", "-s")):
        d = tmp_path / cm
        d.mkdir()
        for k, v in configmap(cm).items():
            (d / k).write_text(v)
        dirs[kind] = d
    r = subprocess.run([np, "check-config", "-p", str(dirs["-p"]), "-s", str(dirs["-s"])],
                       capture_output=True, text=True)
    if r.returncode == 2 and "check-config" not in r.stdout + r.stderr:
        pytest.skip("ambit-node-proxy has no check-config command yet")
    assert r.returncode == 0, r.stdout + r.stderr
    (dirs["-p"] / "99-bad.ini").write_text("[policy broken]\nnamespace = shop\naction = allow\n")
    r = subprocess.run([np, "check-config", "-p", str(dirs["-p"])], capture_output=True, text=True)
    assert r.returncode == 1 and "99-bad.ini" in r.stderr, r.stdout + r.stderr


SECCOMP = K8S / "seccomp" / "ambit-node-proxy.json"


def test_seccomp_profile_matches_generator():
    """configs/k8s/seccomp/ambit-node-proxy.json is what the generator makes
    from this machine's systemd @system-service (no hand edits, no drift
    from the systemd unit's filter)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    import seccomp_profile
    assert json.loads(SECCOMP.read_text()) == seccomp_profile.generate()


@pytest.mark.timeout(120)
def test_node_proxy_runs_under_seccomp_profile(topo, bins, tmp_path):
    """The Localhost seccomp profile offered for the DaemonSet, loaded into
    the kernel with libseccomp: node-proxy starts, serves an enrolled netns
    with real traffic, drains and exits 0.  A profile without io_uring_setup
    stops it at start, so the filter is really in force."""
    pytest.importorskip("seccomp", reason="python3-seccomp not installed")
    for tool in ("setpriv", "curl"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    proc, sock = _serve(topo, bins, n1, seccomp=SECCOMP)
    for p in (a, b):
        _enroll(bins, n1, sock, "add", "--netns", p.path, "--name", p.name)
    http_server(b, 8080, body="filtered")
    before = _stats(n1)["accepted"]
    assert "filtered" in a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"]).stdout
    assert _stats(n1)["accepted"] > before
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, topo.log(proc)

    prof = json.loads(SECCOMP.read_text())
    prof["syscalls"][0]["names"].remove("io_uring_setup")
    broken = tmp_path / "no-uring.json"
    broken.write_text(json.dumps(prof))
    with pytest.raises(RuntimeError, match="exited"):
        _serve(topo, bins, n1, seccomp=broken)


@pytest.mark.timeout(120)
def test_enroll_by_pid_pins_the_netns(topo, bins):
    """--pid (what --unit does after asking systemd for the main PID): the
    process's netns is pinned under /run/netns, enrolled by that path, and
    unpinned again by del."""
    for tool in ("setpriv", "curl"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    n1 = topo.add_node("n1")
    a = topo.add_pod(n1, "a")
    b = topo.add_pod(n1, "b")
    proc, sock = _serve(topo, bins, n1)
    app = a.popen(["sleep", "120"])
    name = f"{n1.netns}-app"
    pin = pathlib.Path("/run/netns") / f"ambit-{name}"
    try:
        _enroll(bins, n1, sock, "add", "--pid", str(app.pid), "--name", name)
        assert pin.exists()
        listed = json.loads(n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", sock,
                                    "list", "--json"]).stdout)
        assert [w["netns_path"] for w in listed] == [str(pin)]
        _enroll(bins, n1, sock, "add", "--netns", b.path, "--name", "b")
        http_server(b, 8080, body="pinned")
        before = _stats(n1)["accepted"]
        assert "pinned" in a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"]).stdout
        assert _stats(n1)["accepted"] > before
        _enroll(bins, n1, sock, "del", "--pid", str(app.pid), "--name", name)
        assert not pin.exists()
        r = _enroll(bins, n1, sock, "add", "--pid", "999999999", "--name", name, check=False)
        assert r.returncode == 1 and "no process" in r.stderr and not pin.exists()
        # a process in the caller's (the node's) netns: ambit-redirect refuses
        # it, and the pin made for it is removed again
        other = n1.popen(["sleep", "120"])
        r = _enroll(bins, n1, sock, "add", "--pid", str(other.pid), "--name", name, check=False)
        assert r.returncode == 1 and "capture rules not installed" in r.stderr, r.stderr
        assert not pin.exists()
    finally:
        if pin.exists():
            subprocess.run(["ip", "netns", "delete", pin.name])
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def test_install_doc_covers_shipped_files():
    """docs/install.md names every file shipped in configs/k8s and
    configs/systemd, every capability the manifests add, and every flag of
    ambit-enroll, so the guide cannot silently fall behind."""
    doc = (ROOT / "docs" / "install.md").read_text()
    for base in (K8S, SYSTEMD):
        for f in sorted(p for p in base.rglob("*") if p.is_file()):
            assert f.name in doc, f"docs/install.md does not mention {f.relative_to(ROOT)}"
    caps = set()
    for f in K8S.rglob("*.yaml"):
        caps |= set(re.findall(r'add: \[([^\]]*)\]', f.read_text()))
    for c in {x.strip(' "') for group in caps for x in group.split(",")}:
        assert c in doc, f"capability {c} not explained in docs/install.md"
    flags = set(re.findall(r"^\t(--[a-z-]+)\)", (SYSTEMD / "ambit-enroll").read_text(), re.M))
    assert flags, "no flags found in ambit-enroll"
    for fl in flags:
        assert fl in doc, f"ambit-enroll {fl} not in docs/install.md"


@pytest.mark.timeout(180)
def test_bundled_plugin_enrolls_pods_with_configmap_config(topo, bins, tmp_path):
    """The Kubernetes node path end to end, minus Kubernetes: ambit-install-cni
    puts the bundled plugin into a CNI bin dir; the runtime (the topology's
    CNI executor) finds ambit-cni there first and runs it chained after
    bridge with the ConfigMap's plugin config (paths moved to this test).
    A pod in namespace shop is enrolled and its traffic goes through
    node-proxy; a pod in ambit-system is not (excludeNamespaces)."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    src = _image_dir(bins, tmp_path)
    host = tmp_path / "host"
    (host / "bin").mkdir(parents=True)
    (host / "net.d").mkdir()
    (host / "net.d" / "10-podnet.conflist").write_text(json.dumps(PRIMARY))
    n1 = topo.add_node("n1")
    proc, sock = _serve(topo, bins, n1)
    plugin = json.loads(configmap("ambit-node-proxy")["ambit-cni.plugin.json"])
    plugin.update(controlSocket=sock, stateDir=str(tmp_path / "cni-state"),
                  logFile=str(tmp_path / "cni.log"))
    pc = tmp_path / "plugin.json"
    pc.write_text(json.dumps(plugin))
    subprocess.run(["sh", str(K8S / "install-cni.sh")], env=_install_env(src, host, pc),
                   check=True, capture_output=True)
    chained = json.loads((host / "net.d" / "10-podnet.conflist").read_text())["plugins"][-1]
    assert chained["type"] == "ambit-cni"
    topo.cni_path = f"{host / 'bin'}:{topo.cni_path}"
    a = topo.add_pod(n1, "a", extra_plugins=[chained], cni_args={"K8S_POD_NAMESPACE": "shop"})
    b = topo.add_pod(n1, "b", extra_plugins=[chained], cni_args={"K8S_POD_NAMESPACE": "shop"})
    sysp = topo.add_pod(n1, "sys", extra_plugins=[chained],
                        cni_args={"K8S_POD_NAMESPACE": "ambit-system"})
    listed = json.loads(n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", sock, "list",
                                "--json"]).stdout)
    assert sorted(w["name"] for w in listed) == ["a", "b"], listed
    assert {w["namespace"] for w in listed} == {"shop"}
    http_server(b, 8080, body="chained")
    before = _stats(n1)["accepted"]
    assert "chained" in a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"]).stdout
    assert _stats(n1)["accepted"] > before
    assert "enrolled" in (tmp_path / "cni.log").read_text()
    # the plugin that ran is the installed copy in the node's bin dir
    assert topo.find_plugin("ambit-cni") == str(host / "bin" / "ambit-cni")
    # a rolling update on this node: the old process drains and exits, the
    # new one restores both pods from the state file, no CNI call between
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    # the window docs/install.md states: captured, nobody listening -> refused
    gap = a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"], check=False)
    assert gap.returncode != 0 and "chained" not in gap.stdout
    proc, sock2 = _serve(topo, bins, n1)
    assert sock2 == sock
    listed = json.loads(n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", sock, "list",
                                "--json"]).stdout)
    assert sorted(w["name"] for w in listed) == ["a", "b"]
    before = _stats(n1)["accepted"]
    assert "chained" in a.run(["curl", "-sS", "--max-time", "5", f"http://{b.ip}:8080/"]).stdout
    assert _stats(n1)["accepted"] > before
    topo.del_pod(sysp)
    topo.del_pod(a)
    listed = json.loads(n1.run([str(bins / "ambit-node-proxy"), "ctl", "--socket", sock, "list",
                                "--json"]).stdout)
    assert [w["name"] for w in listed] == ["b"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
