#!/usr/bin/python3
"""Offline validation of ambit's Kubernetes manifests (configs/k8s).

    validate_k8s.py [--rules FILE] [--ini-reference FILE] DIR

Three layers, all without a cluster:
  1. YAML: every *.yaml under DIR parses (PyYAML, Debian's python3-yaml).
  2. API shape: every object is checked against the Kubernetes API models
     of Debian's python3-kubernetes (field names, field types, required
     fields), strictly: an unknown field is an error, as a typo such as
     `readinesProbe` would otherwise be silently dropped by the API server.
     Skipped with a note when the module is missing.
  3. ambit's own rules (tests/packaging/k8s-rules.yaml): capabilities,
     probes, host mounts, RBAC verbs, references between objects (volumes,
     ConfigMap keys, Secret keys, ServiceAccount, ClusterRole), resources,
     image tags, and the node-proxy.ini keys against configs/node-proxy.ini.

Prints one line per problem, "FILE: [KIND/NAME] message"; exit status 1 when
there are problems, 2 on usage errors, 0 when clean.
"""
import argparse
import json
import pathlib
import re
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NAMESPACED = {"ServiceAccount", "ConfigMap", "Secret", "DaemonSet"}

try:  # Debian's python3-kubernetes: the API's generated models
    from kubernetes import client as k8s_client

    K8S_MODELS = k8s_client.models
except ImportError:  # pragma: no cover - depends on the machine
    K8S_MODELS = None

API_MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
}


class Report:
    def __init__(self):
        self.problems = []
        self.notes = []

    def add(self, where, msg):
        self.problems.append(f"{where}: {msg}")


def get(obj, dotted, default=None):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj


def label(src, doc):
    return f"{src} [{doc.get('kind', '?')}/{get(doc, 'metadata.name', '?')}]"


# --- layer 1: YAML -----------------------------------------------------------

def kustomization(d):
    try:
        return yaml.safe_load((pathlib.Path(d) / "kustomization.yaml").read_text()) or {}
    except yaml.YAMLError:
        return None


def is_overlay(k):
    return bool(k.get("bases") or k.get("patches") or k.get("patchesStrategicMerge"))


def overlay_dirs(directory):
    """Kustomize overlays below DIR (bases or patches): their files are
    patches, not objects."""
    out = []
    for p in sorted(pathlib.Path(directory).rglob("kustomization.yaml")):
        k = kustomization(p.parent)
        if k is not None and is_overlay(k):
            out.append(p.parent)
    return out


def load(directory, rep):
    """[(source, doc)] for every object in every *.yaml except kustomization
    files and overlays."""
    docs = []
    overlays = overlay_dirs(directory)
    for path in sorted(pathlib.Path(directory).rglob("*.yaml")):
        if path.name == "kustomization.yaml" or any(o in path.parents for o in overlays):
            continue
        rel = path.relative_to(directory)
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as e:
            rep.add(rel, f"not valid YAML: {e}".replace("\n", " "))
            continue
        for i, doc in enumerate(loaded):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                rep.add(f"{rel}#{i}", "document is not a mapping")
                continue
            docs.append((f"{rel}#{i}", doc))
    return docs


# --- layer 2: the API's field names and types ---------------------------------

def typed(value, typ, path, errs):
    """Check value against a python3-kubernetes openapi type string."""
    if value is None:
        return
    if typ.startswith("list["):
        if not isinstance(value, list):
            errs.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            typed(v, typ[5:-1], f"{path}[{i}]", errs)
    elif typ.startswith("dict("):
        if not isinstance(value, dict):
            errs.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        inner = typ[typ.index(",") + 1:-1].strip()
        for k, v in value.items():
            if not isinstance(k, str):
                errs.append(f"{path}: key {k!r} is not a string")
            # Quantities (resources) are strings in the models but the API
            # also accepts plain numbers for them.
            if inner == "str" and path.endswith(("limits", "requests")) and \
                    isinstance(v, (int, float)) and not isinstance(v, bool):
                continue
            typed(v, inner, f"{path}.{k}", errs)
    elif typ == "str":
        if not isinstance(value, str):
            errs.append(f"{path}: expected a string, got {type(value).__name__} {value!r}")
    elif typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            errs.append(f"{path}: expected an integer, got {value!r}")
    elif typ == "bool":
        if not isinstance(value, bool):
            errs.append(f"{path}: expected true/false, got {value!r}")
    elif typ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errs.append(f"{path}: expected a number, got {value!r}")
    elif typ in ("object", "datetime", "date"):
        return  # IntOrString, RawExtension, timestamps
    else:
        cls = getattr(K8S_MODELS, typ, None)
        if cls is None:
            return
        if not isinstance(value, dict):
            errs.append(f"{path}: expected a mapping ({typ}), got {type(value).__name__}")
            return
        by_json = {j: a for a, j in cls.attribute_map.items()}
        present = {}
        for k, v in value.items():
            attr = by_json.get(k)
            if attr is None:
                errs.append(f"{path}: unknown field \"{k}\" in {typ}")
                continue
            typed(v, cls.openapi_types[attr], f"{path}.{k}", errs)
            if v is not None:
                present[attr] = True  # stands in for the value: presence is all
        # The generated constructors refuse a missing required field.
        try:
            cls(**present)
        except ValueError as e:
            m = re.search(r"`(\w+)`", str(e))
            field = cls.attribute_map.get(m.group(1), m.group(1)) if m else "?"
            errs.append(f"{path}: required field \"{field}\" missing in {typ}")
        except TypeError:
            pass


def check_api(src, doc, rep):
    if K8S_MODELS is None:
        return
    model = API_MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if model is None:
        rep.add(label(src, doc),
                f"apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')} not known")
        return
    errs = []
    typed(doc, model, doc.get("kind", "?"), errs)
    for e in errs:
        rep.add(label(src, doc), e)


# --- layer 3: ambit's rules ------------------------------------------------------

INI_SECTION = re.compile(r"^\[([A-Za-z0-9_]+)\]$")
INI_KEY = re.compile(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$")


def ini_keys(text):
    """({(section, key): value}, [errors]) of an inih-style file."""
    keys, errs, section = {}, [], None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        m = INI_SECTION.match(line)
        if m:
            section = m.group(1)
            continue
        m = INI_KEY.match(line)
        if m and section:
            value = re.split(r"\s[;#]", m.group(2))[0].strip()
            keys[(section, m.group(1))] = value
            continue
        errs.append(f"line {n}: not a section or key = value: {raw!r}")
    return keys, errs


def code_keys():
    """(section, key) pairs of node-proxy's INI parser table, if present."""
    src = ROOT / "node-proxy" / "config.c"
    if not src.exists():
        return set()
    return set(re.findall(r'\{\s*"(\w+)",\s*"(\w+)",\s*K_[A-Z]+', src.read_text()))


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text or "")
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, None: 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def check_required(src, doc, rules, rep):
    kind = doc.get("kind")
    if kind not in rules["kinds"]:
        rep.add(label(src, doc), f"kind {kind} is not part of the package")
        return
    for f in rules["required"].get(kind, []):
        if get(doc, f) in (None, "", [], {}):
            rep.add(label(src, doc), f"missing {f}")
    if kind in NAMESPACED and get(doc, "metadata.namespace") != rules["namespace"]:
        rep.add(label(src, doc), f"namespace must be {rules['namespace']}")


def check_image(where, c, rules, rep):
    image = c.get("image", "")
    repo, _, tag = image.rpartition(":")
    if "/" in tag or not repo:
        repo, tag = image, ""
    want = rules["image"]["repository"]
    if repo != want:
        rep.add(where, f"image {image!r}: expected {want}:<tag>")
    if not tag or tag in rules["image"]["forbidden_tags"]:
        rep.add(where, f"image {image!r}: needs an explicit version tag")


def check_container(where, c, rules, rep):
    check_image(where, c, rules, rep)
    for part in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if get(c, f"resources.{part}.{res}") in (None, ""):
                rep.add(where, f"resources.{part}.{res} not set")
    sc = c.get("securityContext") or {}
    if not sc:
        rep.add(where, "no securityContext")
    if sc.get("privileged") is True:
        rep.add(where, "privileged: true is not allowed")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        rep.add(where, "capabilities.drop must contain ALL")
    added = [str(a).upper().removeprefix("CAP_") for a in (caps.get("add") or [])]
    for a in added:
        if a not in rules["allowed_capabilities"]:
            rep.add(where, f"capability {a} is not in the justified set "
                           f"{rules['allowed_capabilities']}")
    if "SYS_ADMIN" in added and sc.get("allowPrivilegeEscalation") is False:
        rep.add(where, "allowPrivilegeEscalation: false with SYS_ADMIN is refused by the API")


def probe_ok(where, c, kind, want, rep):
    p = c.get(kind)
    if not p:
        rep.add(where, f"{kind} missing")
        return
    port = get(p, "httpGet.port")
    if port != want["port"]:
        rep.add(where, f"{kind} port {port!r}, expected {want['port']}")
    if get(p, "httpGet.path") != want["path"]:
        rep.add(where, f"{kind} path {get(p, 'httpGet.path')!r}, expected {want['path']}")


def check_pod(src, doc, objs, rules, ini, rep):
    """Pod template of a DaemonSet: references, mounts, containers."""
    name = get(doc, "metadata.name")
    where = label(src, doc)
    spec = get(doc, "spec.template.spec") or {}
    sel = get(doc, "spec.selector.matchLabels") or {}
    tl = get(doc, "spec.template.metadata.labels") or {}
    if any(tl.get(k) != v for k, v in sel.items()):
        rep.add(where, "spec.selector.matchLabels do not match the template labels")
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    if len(volumes) != len(spec.get("volumes") or []):
        rep.add(where, "duplicate volume names")
    containers = [("initContainers", c) for c in spec.get("initContainers") or []] + \
                 [("containers", c) for c in spec.get("containers") or []]
    used = set()
    for group, c in containers:
        cw = f"{where} {group}/{c.get('name')}"
        check_container(cw, c, rules, rep)
        paths = set()
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                rep.add(cw, f"volumeMount {m.get('name')!r} names no volume")
            used.add(m.get("name"))
            if m.get("mountPath") in paths:
                rep.add(cw, f"mountPath {m.get('mountPath')} mounted twice")
            paths.add(m.get("mountPath"))
            if m.get("mountPropagation") == "Bidirectional":
                rep.add(cw, "Bidirectional propagation needs a privileged container")
        # files named in command/args/env under a ConfigMap mount must exist
        words = (c.get("command") or []) + (c.get("args") or []) + \
                [e.get("value") or "" for e in c.get("env") or []]
        for m in c.get("volumeMounts") or []:
            v = volumes.get(m.get("name")) or {}
            cm = get(v, "configMap.name")
            if not cm:
                continue
            prefix = m["mountPath"].rstrip("/") + "/"
            keys = set((get(objs.get(("ConfigMap", cm), {}), "data") or {}).keys())
            for w in words:
                if isinstance(w, str) and w.startswith(prefix) and w[len(prefix):] not in keys:
                    rep.add(cw, f"{w} is not a key of ConfigMap {cm}")
    for v in volumes:
        if v not in used:
            rep.add(where, f"volume {v!r} is mounted by no container")
    for vname, v in volumes.items():
        sources = [k for k in v if k != "name"]
        if len(sources) != 1:
            rep.add(where, f"volume {vname}: needs exactly one source, has {sources}")
    allowed_hp = rules.get("host_paths") or {}
    for vname, v in volumes.items():
        hp = get(v, "hostPath.path")
        if hp is None:
            continue
        if hp not in allowed_hp:
            rep.add(where, f"volume {vname}: hostPath {hp} is not an allowed host directory")
        elif allowed_hp[hp] == "ro":
            for group, c in containers:
                for m in c.get("volumeMounts") or []:
                    if m.get("name") == vname and not m.get("readOnly"):
                        rep.add(f"{where} {group}/{c.get('name')}",
                                f"hostPath {hp} must be mounted readOnly")
    for vname, v in volumes.items():
        if "configMap" in v:
            cm = objs.get(("ConfigMap", get(v, "configMap.name")))
            if cm is None:
                rep.add(where, f"volume {vname}: ConfigMap {get(v, 'configMap.name')} not defined")
                continue
            keys = set((cm.get("data") or {}).keys())
            for it in get(v, "configMap.items") or []:
                if it.get("key") not in keys:
                    rep.add(where, f"volume {vname}: key {it.get('key')!r} not in ConfigMap")
        if "secret" in v:
            sec = objs.get(("Secret", get(v, "secret.secretName")))
            if sec is None:
                rep.add(where, f"volume {vname}: Secret {get(v, 'secret.secretName')} "
                               "has no layout in the package")
                continue
            keys = set((sec.get("stringData") or {}).keys()) | set((sec.get("data") or {}).keys())
            for it in get(v, "secret.items") or []:
                if it.get("key") not in keys:
                    rep.add(where, f"volume {vname}: key {it.get('key')!r} not in Secret layout")
    sa = spec.get("serviceAccountName")
    if sa and ("ServiceAccount", sa) not in objs:
        rep.add(where, f"serviceAccountName {sa} is not defined")

    want = rules["daemonsets"].get(name)
    if want is None:
        rep.add(where, "DaemonSet not described in k8s-rules.yaml")
        return
    for key in ("hostNetwork", "hostPID", "serviceAccountName"):
        if key in want and spec.get(key, False if key != "serviceAccountName" else None) != want[key]:
            rep.add(where, f"{key} must be {want[key]}")
    upd = get(doc, "spec.updateStrategy") or {}
    if upd.get("type") != want["update"]["type"] or \
            get(upd, "rollingUpdate.maxUnavailable") != want["update"]["maxUnavailable"]:
        rep.add(where, f"updateStrategy must be {want['update']}")
    ann = get(doc, "spec.template.metadata.annotations") or {}
    for k, v in (want.get("annotations") or {}).items():
        if ann.get(k) != v:
            rep.add(where, f"annotation {k} must be {v!r}")
    by_name = {c.get("name"): c for _, c in containers}

    def host_mounts(c, table, cw):
        mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
        for mp, hp in table.items():
            m = mounts.get(mp)
            if m is None:
                rep.add(cw, f"no mount at {mp}")
                continue
            got = get(volumes.get(m.get("name")) or {}, "hostPath.path")
            if got != hp:
                rep.add(cw, f"{mp} must be hostPath {hp}, is {got!r}")
        for mp, prop in (want.get("propagation") or {}).items():
            if mp in mounts and mounts[mp].get("mountPropagation") != prop:
                rep.add(cw, f"{mp} needs mountPropagation {prop}")

    init = by_name.get(want.get("init_container"))
    if want.get("init_container"):
        iw = f"{where} initContainers/{want['init_container']}"
        if init is None or init not in (spec.get("initContainers") or []):
            rep.add(where, f"init container {want['init_container']} missing")
        else:
            if (init.get("command") or [None])[0] != want["init_command"]:
                rep.add(iw, f"command must start with {want['init_command']}")
            host_mounts(init, want.get("init_host_mounts") or {}, iw)
    main = want.get("main_container")
    if not main:
        return
    c = by_name.get(main)
    cw = f"{where} containers/{main}"
    if c is None:
        rep.add(where, f"container {main} missing")
        return
    caps = sorted(str(a).upper() for a in get(c, "securityContext.capabilities.add") or [])
    if caps != sorted(want["capabilities"]):
        rep.add(cw, f"capabilities.add must be exactly {want['capabilities']}, is {caps}")
    for kind in want["probes"]["kinds"]:
        probe_ok(cw, c, kind, want["probes"], rep)
    if c.get("startupProbe"):
        probe_ok(cw, c, "startupProbe", want["probes"], rep)
    pre = " ".join(get(c, "lifecycle.preStop.exec.command") or [])
    for s in want.get("prestop_contains") or []:
        if s not in pre:
            rep.add(cw, f"preStop must call {s}")
    host_mounts(c, want.get("host_mounts") or {}, cw)
    ports = {p.get("containerPort") for p in c.get("ports") or []}
    if want["probes"]["port"] not in ports:
        rep.add(cw, f"port {want['probes']['port']} not declared")
    drain = duration_s((ini or {}).get(("timeouts", "drain"), "30s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if drain is not None and grace < drain + want.get("grace_margin_seconds", 0):
        rep.add(where, f"terminationGracePeriodSeconds {grace} < drain {drain:g} s + "
                       f"{want.get('grace_margin_seconds', 0)} s margin")


def check_rbac(src, doc, objs, rules, rep):
    where = label(src, doc)
    if doc["kind"] == "ClusterRole":
        for r in doc.get("rules") or []:
            if r.get("apiGroups") != [""]:
                rep.add(where, f"apiGroups {r.get('apiGroups')}: only the core group is needed")
            for v in r.get("verbs") or []:
                if v not in rules["rbac"]["verbs"]:
                    rep.add(where, f"verb {v!r} not allowed (read-only: {rules['rbac']['verbs']})")
            for res in r.get("resources") or []:
                if res not in rules["rbac"]["resources"]:
                    rep.add(where, f"resource {res!r} not allowed")
    if doc["kind"] == "ClusterRoleBinding":
        if ("ClusterRole", get(doc, "roleRef.name")) not in objs:
            rep.add(where, f"roleRef {get(doc, 'roleRef.name')} is not defined")
        for s in doc.get("subjects") or []:
            if s.get("kind") == "ServiceAccount" and ("ServiceAccount", s.get("name")) not in objs:
                rep.add(where, f"subject ServiceAccount {s.get('name')} is not defined")


def check_kustomization(kdir, rules, rep):
    """A base lists every manifest beside it (examples excepted) and only
    files that exist; images name the node image."""
    kdir = pathlib.Path(kdir)
    where = str(kdir / "kustomization.yaml")
    k = kustomization(kdir)
    if k is None:
        rep.add(where, "not valid YAML")
        return
    listed = set(k.get("resources") or []) | set(k.get("bases") or [])
    for r in listed:
        if not (kdir / r).exists():
            rep.add(where, f"resource {r} does not exist")
    if not is_overlay(k):
        for p in kdir.glob("*.yaml"):
            if p.name != "kustomization.yaml" and ".example." not in p.name and p.name not in listed:
                rep.add(where, f"{p.name} is not listed in resources")
    for img in k.get("images") or []:
        if img.get("name") != rules["image"]["repository"]:
            rep.add(where, f"images: {img.get('name')} is not the node image")


def check_paths(objs, ini, rules, rep, ref=None):
    """The CNI plugin (on the host) and node-proxy (in the pod) must meet at
    the same control socket, on a host directory both see, and the registry
    must live on the host so it survives the container."""
    where = "ConfigMap ambit-node-proxy"
    cm = objs.get(("ConfigMap", "ambit-node-proxy")) or {}
    text = (cm.get("data") or {}).get("ambit-cni.plugin.json")
    if text is None:
        rep.add(where, "no ambit-cni.plugin.json")
        return
    try:
        plugin = json.loads(text)
    except ValueError as e:
        rep.add(where, f"ambit-cni.plugin.json is not JSON: {e}")
        return
    if not isinstance(plugin, dict) or plugin.get("type") != "ambit-cni":
        rep.add(where, 'ambit-cni.plugin.json: "type" must be "ambit-cni"')
        return
    sock = (ini or {}).get(("paths", "control_socket"), "/run/ambit/node-proxy.sock")
    state = (ini or {}).get(("paths", "state_file"), "/var/lib/ambit/node-proxy.state")
    if plugin.get("controlSocket", "/run/ambit/node-proxy.sock") != sock:
        rep.add(where, f"ambit-cni.plugin.json controlSocket {plugin.get('controlSocket')!r} "
                       f"is not node-proxy's control_socket {sock!r}")
    excluded = plugin.get("excludeNamespaces") or []
    for ns in (rules["namespace"], "kube-system"):
        if ns not in excluded:
            rep.add(where, f"ambit-cni.plugin.json excludeNamespaces lacks {ns}")
    mounts = rules["daemonsets"]["ambit-node-proxy"].get("host_mounts") or {}
    for what, path in (("control_socket", sock), ("state_file", state)):
        host = [m for m in mounts if path.startswith(m.rstrip("/") + "/")]
        if not host:
            rep.add(where, f"node-proxy.ini {what} {path} is not on a host mount "
                           f"({', '.join(sorted(mounts))})")
    if not state.startswith("/var/lib/"):
        rep.add(where, f"node-proxy.ini state_file {state} must persist across reboots "
                       "of the pod (under /var/lib)")
    # Every [paths] key node-proxy knows is set explicitly, to a path the
    # container mounts: a new path key (certificates, policies...) fails
    # here until the manifests provide it.
    ds = objs.get(("DaemonSet", "ambit-node-proxy")) or {}
    main = rules["daemonsets"]["ambit-node-proxy"].get("main_container")
    mounts = [m.get("mountPath", "") for c in get(ds, "spec.template.spec.containers") or []
              if c.get("name") == main for m in c.get("volumeMounts") or []]
    for (sec, key) in sorted(ref or {}):
        if sec != "paths":
            continue
        value = (ini or {}).get((sec, key))
        if value is None:
            rep.add(where, f"node-proxy.ini does not set paths.{key}")
        elif ds and not any(value == m or value.startswith(m.rstrip("/") + "/") for m in mounts):
            rep.add(where, f"node-proxy.ini paths.{key} = {value} is on no volume of "
                           f"container {main}")


def merge_patch(base, patch):
    """Strategic merge, the subset kustomize overlays here use: mappings
    merge key by key, null deletes a key, lists of mappings with "name"
    merge by name (new names are appended), other lists are replaced."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and isinstance(out.get(k), list) and v and \
                all(isinstance(x, dict) and "name" in x for x in v + out[k]):
            items = [dict(x) for x in out[k]]
            for pv in v:
                for i, bv in enumerate(items):
                    if bv["name"] == pv["name"]:
                        items[i] = merge_patch(bv, pv)
                        break
                else:
                    items.append(pv)
            out[k] = items
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def render(kdir, rep):
    """The objects a kustomization produces: its bases and resources
    (directories rendered recursively) with its patches applied."""
    kdir = pathlib.Path(kdir)
    kpath = kdir / "kustomization.yaml"
    k = kustomization(kdir)
    if k is None:
        rep.add(kpath, "not valid YAML")
        return []
    docs = []
    for r in (k.get("bases") or []) + (k.get("resources") or []):
        target = (kdir / r).resolve()
        if target.is_dir():
            if (target / "kustomization.yaml").exists():
                docs += render(target, rep)
            else:
                rep.add(kpath, f"resource {r} has no kustomization.yaml")
        elif target.exists():
            try:
                docs += [(f"{kdir.name}:{r}#{i}", d)
                         for i, d in enumerate(yaml.safe_load_all(target.read_text())) if d]
            except yaml.YAMLError as e:
                rep.add(target, f"not valid YAML: {e}".replace("\n", " "))
        else:
            rep.add(kpath, f"resource {r} does not exist")
    patches = list(k.get("patchesStrategicMerge") or []) + \
        [p.get("path") for p in k.get("patches") or [] if isinstance(p, dict)]
    for name in patches:
        ppath = kdir / (name or "")
        if not ppath.is_file():
            rep.add(kpath, f"patch {name} does not exist")
            continue
        try:
            patch = yaml.safe_load(ppath.read_text())
        except yaml.YAMLError as e:
            rep.add(ppath, f"not valid YAML: {e}".replace("\n", " "))
            continue
        key = (patch.get("kind"), get(patch, "metadata.name"))
        for i, (src, d) in enumerate(docs):
            if (d.get("kind"), get(d, "metadata.name")) == key:
                docs[i] = (f"{src}+{ppath.name}", merge_patch(d, patch))
                break
        else:
            rep.add(ppath, f"patch target {key[0]}/{key[1]} not among the overlay's resources")
    return docs


def validate(directory, rules_path=HERE / "k8s-rules.yaml", ini_reference=None):
    rep = Report()
    rules = yaml.safe_load(pathlib.Path(rules_path).read_text())
    if K8S_MODELS is None:
        rep.notes.append("python3-kubernetes not installed: API field check skipped")
    docs = load(directory, rep)
    check_set(directory, docs, rules, ini_reference, rep)
    for o in overlay_dirs(directory):
        rendered = render(o, rep)
        if rendered:
            check_set(o, rendered, rules, ini_reference, rep)
    for kpath in sorted(pathlib.Path(directory).rglob("kustomization.yaml")):
        check_kustomization(kpath.parent, rules, rep)
    return rep


def check_set(directory, docs, rules, ini_reference, rep):
    """Every check over one set of objects (the package, or an overlay's
    rendering of it)."""
    objs = {}
    for src, doc in docs:
        key = (doc.get("kind"), get(doc, "metadata.name"))
        if key in objs:
            rep.add(label(src, doc), "defined twice")
        objs[key] = doc
    ref = None
    if ini_reference and pathlib.Path(ini_reference).exists():
        ref, errs = ini_keys(pathlib.Path(ini_reference).read_text())
        for e in errs:
            rep.add(ini_reference, e)
        # plus the keys the parser's table accepts (node-proxy/config.c):
        # the sample file may lag behind a key that already works
        ref.update({k: None for k in code_keys()})
    ini = None
    cm = objs.get(("ConfigMap", "ambit-node-proxy"))
    if cm is None:
        rep.add(directory, "ConfigMap ambit-node-proxy missing")
    elif "node-proxy.ini" not in (cm.get("data") or {}):
        rep.add(directory, "ConfigMap ambit-node-proxy has no node-proxy.ini")
    else:
        ini, errs = ini_keys(cm["data"]["node-proxy.ini"])
        for e in errs:
            rep.add("ConfigMap ambit-node-proxy node-proxy.ini", e)
        if ref is not None:
            sections = {s for s, _ in ref}
            for (s, k) in ini:
                if s not in sections:
                    rep.add("ConfigMap ambit-node-proxy node-proxy.ini",
                            f"section [{s}] unknown to {ini_reference}")
                elif (s, k) not in ref:
                    rep.add("ConfigMap ambit-node-proxy node-proxy.ini",
                            f"key {s}.{k} unknown to {ini_reference}")
    check_paths(objs, ini, rules, rep, ref)
    for src, doc in docs:
        check_required(src, doc, rules, rep)
        check_api(src, doc, rep)
        if doc.get("kind") in ("ClusterRole", "ClusterRoleBinding"):
            check_rbac(src, doc, objs, rules, rep)
        if doc.get("kind") == "DaemonSet":
            check_pod(src, doc, objs, rules, ini, rep)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--rules", default=str(HERE / "k8s-rules.yaml"))
    ap.add_argument("--ini-reference", default=str(ROOT / "configs" / "node-proxy.ini"))
    a = ap.parse_args(argv)
    if not pathlib.Path(a.dir).is_dir():
        print(f"validate_k8s: {a.dir} is not a directory", file=sys.stderr)
        return 2
    rep = validate(a.dir, a.rules, a.ini_reference)
    for n in rep.notes:
        print(f"note: {n}")
    for p in rep.problems:
        print(p)
    print(f"validate_k8s: {len(rep.problems)} problem(s) in {a.dir}")
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
