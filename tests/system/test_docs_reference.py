"""docs/configuration.md against the code: every key and flag the code
accepts is documented, and every documented one exists.

Sources of truth (what the code accepts):
  * node-proxy.ini: the {section, key, K_*} table of node-proxy/config.c,
    confirmed key by key against the built ambit-node-proxy (a bad value
    must be refused as a bad value, never as an unknown key);
  * policy / service files: node-proxy/policy.c (field table, strcmp
    chain) and node-proxy/services.c (UK() table, strcmp chain);
  * CNI: the keys cni-plugin/cniconf.c reads from the config object,
    "redirect", "args", "args.cni", CNI_ARGS and the environment;
  * CLI: each program's --help output plus the long options of its getopt
    tables.
The self-checks at the end make sure a missing or a made-up entry is
reported in both directions.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
SRC = REPO / "node-proxy" / "config.c"


# --------------------------------------------------------------------------
# what the code accepts


def code_ini_keys(text=None):
    text = text if text is not None else SRC.read_text()
    m = re.search(r"static const struct key keys\[\] = \{(.*?)\n\};", text, re.S)
    assert m, "config.c: key table not found (static const struct key keys[])"
    keys = set(re.findall(r'\{\s*"([a-z_]+)",\s*"([a-z_]+)",\s*K_[A-Z]+', m.group(1)))
    assert keys, "config.c: key table is empty"
    return keys


def code_policy_keys():
    text = (REPO / "node-proxy" / "policy.c").read_text()
    m = re.search(r"field_names\[F_COUNT\] = \{(.*?)\};", text, re.S)
    assert m, "policy.c: field_names not found"
    keys = set(re.findall(r'"([a-z_]+)"', m.group(1)))
    keys |= set(re.findall(r'strcmp\(key, "([a-z_]+)"\)', text))
    return keys


def code_service_keys():
    text = (REPO / "node-proxy" / "services.c").read_text()
    keys = set(re.findall(r'(?<!define )\bUK\(([a-z_]+),', text))
    keys |= set(re.findall(r'strcmp\(key, "([a-z_]+)"\)', text))
    return keys


def code_cni_keys():
    text = (REPO / "cni-plugin" / "cniconf.c").read_text()
    prefix = {"c->root": "", "r": "redirect.", "args": "args.", "cni": "args.cni."}
    keys = set()
    for var, key in re.findall(r'\b(?:get_string|get_names|get_ports|json_object_get)\(\s*'
                               r'(c->root|r|args|cni),\s*"([^"]+)"', text):
        keys.add(prefix[var] + key)
    keys |= set(re.findall(r'args_key\(\w+, \w+, "([A-Z0-9_]+)"\)', text))
    keys |= set(re.findall(r'env_or_empty\(\w+, "(CNI_[A-Z]+)"\)', text))
    return keys


PROGRAMS = {
    # program: (--help invocations, sources with its option tables)
    "ambit-node-proxy": ([["--help"], ["ctl", "--help"], ["check-config", "--help"]],
                         ["node-proxy/main.c", "node-proxy/ctl_client.c", "node-proxy/checkconfig.c"]),
    "ambit-cni": ([["--help"]], ["cni-plugin/main.c", "cni-plugin/install.c"]),
    "ambit-redirect": ([["--help"]], ["redirector/main.c", "redirector/opts.c"]),
    "ambit-certs": ([["--help"]], ["certs/main.c"]),
}

FLAG_RE = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def help_flags(bins, prog):
    flags = set()
    for argv in PROGRAMS[prog][0]:
        p = subprocess.run([str(bins / prog)] + argv, capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, CNI_COMMAND=""))
        flags |= set(FLAG_RE.findall(p.stdout + p.stderr))
    return flags


def table_flags(prog):
    flags = set()
    for rel in PROGRAMS[prog][1]:
        p = REPO / rel
        if not p.exists():
            continue
        t = p.read_text()
        flags |= set(re.findall(r'\{\s*"([a-z][a-z0-9-]*)",\s*(?:required|no|optional)_argument', t))
        flags |= set(re.findall(r'\{\s*"--([a-z][a-z0-9-]*)",\s*[01],\s*OPT_', t))
        # sub-command position checks: strcmp(cmd, "--help")
        flags |= set(re.findall(r'strcmp\(\w+(?:\[\w+\])?, "--([a-z][a-z0-9-]*)"\)', t))
    return flags


# --------------------------------------------------------------------------
# what the page documents


def doc_section(text, heading):
    """Text from the line `heading` to the next heading of the same or a
    higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    out, on = [], False
    for ln in lines:
        if ln.startswith("#"):
            lv = len(ln) - len(ln.lstrip("#"))
            if on and lv <= level:
                break
            if ln.strip() == heading.strip() or (not on and ln.startswith(heading)):
                on = True
                continue
        if on:
            out.append(ln)
    assert on, f"heading {heading!r} not found in {DOC.name}"
    return "\n".join(out)


def doc_ini_keys(text):
    sec = doc_section(text, "## node-proxy.ini")
    return set(re.findall(r"^\| `\[([a-z_]+)\] ([a-z_]+)` \|", sec, re.M))


def doc_first_column(text, heading):
    sec = doc_section(text, heading)
    return set(re.findall(r"^\| `([A-Za-z0-9_./-]+)` \|", sec, re.M))


def doc_flags(text, prog):
    flags = set()
    found = False
    for m in re.finditer(r"^### `" + re.escape(prog) + r"[ `]", text, re.M):
        found = True
        sec = doc_section(text[m.start():], text[m.start():].splitlines()[0])
        for row in re.findall(r"^\| (.*?) \|", sec, re.M):
            flags |= set(FLAG_RE.findall(row))
    assert found, f"no section for {prog}"
    return flags


def compare(what, code, doc):
    """Messages for entries the code accepts but the page lacks, and the
    other way round."""
    msgs = []
    for k in sorted(code - doc, key=str):
        msgs.append(f"{what}: {k} is accepted by the code but not documented in docs/configuration.md")
    for k in sorted(doc - code, key=str):
        msgs.append(f"{what}: {k} is documented in docs/configuration.md but the code does not know it")
    return msgs


@pytest.fixture(scope="module")
def page():
    return DOC.read_text()


# --------------------------------------------------------------------------
# the checks


def probe_key(bins, tmp_path, section, key):
    """Run the real node-proxy with `key = @@bad@@` (in a throwaway netns,
    in case a value were ever accepted) and return its stderr."""
    conf = tmp_path / f"{section}.{key}.ini"
    conf.write_text(f"[{section}]\n{key} = @@bad@@\n")
    argv = ["unshare", "--net", str(bins / "ambit-node-proxy"), "run", "--config", str(conf),
            "--control-socket", str(tmp_path / "np.sock"), "--state-file", str(tmp_path / "np.state")]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node-proxy started with [{section}] {key} = @@bad@@")
    assert p.returncode == 2, (section, key, p.returncode, p.stderr)
    return p.stderr


def test_ini_keys_match_the_binary(bins, tmp_path):
    keys = code_ini_keys()
    for section, key in sorted(keys):
        err = probe_key(bins, tmp_path, section, key)
        assert "unknown" not in err, f"config.c lists [{section}] {key} but the binary says: {err}"
        assert f"{section}.{key}" in err or "not an absolute path" in err or "bad value" in err, err
    # and the binary does refuse what is not in the table
    err = probe_key(bins, tmp_path, "proxy", "no_such_key_x")
    assert 'unknown key "no_such_key_x" in [proxy]' in err, err
    err = probe_key(bins, tmp_path, "no_such_section_x", "workers")
    assert "unknown section [no_such_section_x]" in err, err


def test_ini_keys_documented(page):
    msgs = compare("node-proxy.ini", code_ini_keys(), doc_ini_keys(page))
    assert not msgs, "\n".join(msgs)


def code_ini_defaults(text=None):
    """{(section, key): default} from config_defaults() and the key table
    (fields it does not set are zero / empty after its memset)."""
    text = text if text is not None else SRC.read_text()
    fields = dict(((sec, key), f) for sec, key, f in re.findall(
        r'\{\s*"([a-z_]+)",\s*"([a-z_]+)",\s*K_[A-Z]+,\s*F\((\w+)\)', text))
    body = re.search(r"void config_defaults\(struct np_config \*c\)\s*\{(.*?)\n\}", text, re.S)
    assert body, "config.c: config_defaults() not found"
    vals = {}
    for f, expr in re.findall(r"c->(\w+) = ([^;]+);", body.group(1)):
        expr = expr.strip()
        lvl = re.fullmatch(r"LOG_LVL_([A-Z]+)", expr)
        if lvl:
            vals[f] = lvl.group(1).lower()
        else:
            assert re.fullmatch(r"[0-9xa-fA-F *<()+]+", expr), (f, expr)
            vals[f] = eval(expr, {"__builtins__": {}})  # digits and operators only
    for f, v in re.findall(r'snprintf\(c->(\w+), sizeof\(c->\w+\), "%s", "([^"]*)"\)', body.group(1)):
        vals[f] = v
    return {k: vals.get(f, 0) for k, f in fields.items()}


def doc_default(cell):
    """The default in a row's second column, normalised like the code's."""
    if re.search(r"\bunset\b", cell):
        return 0
    v = re.findall(r"`([^`]*)`", cell)[-1]
    if v in ("true", "false"):
        return int(v == "true")
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", v)
    if m:
        return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]
    if re.fullmatch(r"0x[0-9a-f]+|\d+", v):
        return int(v, 0)
    return v


def test_ini_defaults_documented(page):
    code = code_ini_defaults()
    sec = doc_section(page, "## node-proxy.ini")
    bad = []
    for s, k, cell in re.findall(r"^\| `\[([a-z_]+)\] ([a-z_]+)` \| ([^|]*) \|", sec, re.M):
        want = code.get((s, k))
        got = doc_default(cell)
        if want == "":
            want = 0
        if got != want:
            bad.append(f"[{s}] {k}: documented default {got!r}, config_defaults() has {want!r}")
    assert not bad, "\n".join(bad)


def code_uint_ranges(text=None):
    """{(section, key): (min, max)} of the K_UINT keys of config.c's table."""
    text = text if text is not None else SRC.read_text()
    out = {}
    for sec, key, lo, hi in re.findall(
            r'\{\s*"([a-z_]+)",\s*"([a-z_]+)",\s*K_UINT,\s*F\(\w+\),\s*([^,]+),\s*([^}]+?)\s*\}', text):
        assert re.fullmatch(r"[0-9xa-fA-F *<()+]+", lo + hi), (sec, key, lo, hi)
        out[(sec, key)] = (eval(lo, {"__builtins__": {}}), eval(hi, {"__builtins__": {}}))
    return out


def test_ini_ranges_documented(page):
    """A numeric key's documented range is the one config_set() enforces."""
    sec = doc_section(page, "## node-proxy.ini")
    cells = {(s, k): c for s, k, c in re.findall(r"^\| `\[([a-z_]+)\] ([a-z_]+)` \| ([^|]*) \|", sec, re.M)}
    ranges = code_uint_ranges()
    assert len(ranges) >= 10, ranges
    bad = []
    for key, (lo, hi) in ranges.items():
        if not cells.get(key, "").startswith(f"{lo}..{hi}"):
            bad.append(f"[{key[0]}] {key[1]}: code accepts {lo}..{hi}, page says {cells.get(key)!r}")
    assert not bad, "\n".join(bad)


def test_selfcheck_defaults():
    d = code_ini_defaults()
    assert d[("timeouts", "idle")] == 3600000 and d[("proxy", "log_level")] == "info"
    assert d[("paths", "control_socket")] == "/run/ambit/node-proxy.sock"
    assert d[("proxy", "workers")] == 0 and d[("marks", "proxy")] == 0x539
    assert doc_default("duration, `30s`") == 30000 and doc_default("bool, `false`") == 0
    assert doc_default("path, unset") == 0 and doc_default("mark, `0x111`") == 0x111
    changed = SRC.read_text().replace("c->drain_ms = 30 * 1000;", "c->drain_ms = 20 * 1000;")
    assert code_ini_defaults(changed)[("timeouts", "drain")] == 20000
    widened = SRC.read_text().replace("F(workers), 0, 256", "F(workers), 0, 512")
    assert code_uint_ranges(widened)[("proxy", "workers")] == (0, 512)
    assert code_uint_ranges()[("buffers", "size")] == (1024, 1 << 20)


def test_shipped_ini_uses_known_keys():
    """configs/node-proxy.ini is the commented default file: only known keys."""
    text = (REPO / "configs" / "node-proxy.ini").read_text()
    sec, used = None, set()
    for ln in text.splitlines():
        ln = ln.strip()
        if ln.startswith("["):
            sec = ln.strip("[]")
        elif ln and ln[0] not in ";#" and "=" in ln:
            used.add((sec, ln.split("=")[0].strip()))
    assert used and used <= code_ini_keys(), used - code_ini_keys()


def test_policy_and_service_keys_documented(page):
    msgs = compare("policy file", code_policy_keys(),
                   doc_first_column(page, "### Authorization policies"))
    msgs += compare("service file", code_service_keys(), doc_first_column(page, "### Services"))
    assert not msgs, "\n".join(msgs)


def test_policy_keys_accepted_by_check_config(bins, tmp_path, page):
    """When the binary dispatches check-config: every documented policy and
    service key is accepted as a key (errors, if any, are about values)."""
    p = subprocess.run([str(bins / "ambit-node-proxy"), "check-config", "--help"],
                       capture_output=True, text=True, timeout=10)
    if "check-config" not in p.stdout + p.stderr or "--policies" not in p.stdout + p.stderr:
        pytest.skip("this ambit-node-proxy does not dispatch check-config")
    pdir = tmp_path / "p"
    pdir.mkdir()
    rules = doc_first_column(page, "### Authorization policies") - {
        "namespace", "selector", "action", "mode"}
    body = "[policy p]\nnamespace = shop\naction = DENY\nselector = app=x\n[rule p]\n"
    body += "".join(f"{k} = bogus value\n" for k in sorted(rules))
    body += "no_such_key_x = 1\n"
    (pdir / "a.ini").write_text(body)
    r = subprocess.run([str(bins / "ambit-node-proxy"), "check-config", "-p", str(pdir)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "no_such_key_x" in r.stderr, r.stderr
    for k in rules:
        assert not re.search(rf"unknown key \"?{k}\"?", r.stderr), (k, r.stderr)


def test_cni_keys_documented(page):
    code = code_cni_keys()
    assert {"controlSocket", "redirect.excludeCidrs", "args.cni.AMBIT_LABELS", "K8S_POD_UID",
            "CNI_NETNS"} <= code, code
    doc = doc_first_column(page, "## CNI plugin configuration")
    msgs = compare("CNI", code, doc)
    assert not msgs, "\n".join(msgs)


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_cli_flags_documented(bins, page, prog):
    helped = help_flags(bins, prog)
    assert len(helped) >= 3, (prog, helped)
    code = helped | table_flags(prog)
    assert len(code) >= 3, (prog, code)
    msgs = compare(f"{prog} flag", code, doc_flags(page, prog))
    assert not msgs, "\n".join(msgs)


def test_help_lists_every_long_option(bins):
    """A long option in a getopt table that --help never mentions would be
    undocumented for users reading --help."""
    for prog in PROGRAMS:
        missing = table_flags(prog) - help_flags(bins, prog) - {"help"}
        assert not missing, (prog, missing)


# --------------------------------------------------------------------------
# self-checks: the comparison catches both directions


def test_selfcheck_detects_undocumented_and_unknown(page):
    code = code_ini_keys() | {("proxy", "fake_key_for_selfcheck")}
    msgs = compare("node-proxy.ini", code, doc_ini_keys(page))
    assert any("fake_key_for_selfcheck" in m and "not documented" in m for m in msgs), msgs

    base = set(compare("node-proxy.ini", code_ini_keys(), doc_ini_keys(page)))
    cut = re.sub(r"^\| `\[proxy\] workers` \|.*\n", "", page, flags=re.M)
    assert cut != page
    msgs = set(compare("node-proxy.ini", code_ini_keys(), doc_ini_keys(cut))) - base
    assert msgs == {"node-proxy.ini: ('proxy', 'workers') is accepted by the code but not "
                    "documented in docs/configuration.md"}, msgs

    extra = page.replace("| `[proxy] workers` |", "| `[proxy] bogus_doc_key` | x | y |\n| `[proxy] workers` |")
    msgs = compare("node-proxy.ini", code_ini_keys(), doc_ini_keys(extra))
    assert any("bogus_doc_key" in m and "does not know" in m for m in msgs), msgs

    # the source parse itself: a key added to a table is seen
    src = SRC.read_text().replace('{ "proxy", "workers"',
                                  '{ "proxy", "new_key", K_BOOL, F(workers), 0, 0 },\n\t{ "proxy", "workers"')
    assert ("proxy", "new_key") in code_ini_keys(src)


def test_selfcheck_flags(bins, page):
    doc = doc_flags(page, "ambit-redirect")
    cut = re.sub(r"^\| `--dry-run` \|.*\n", "", page, flags=re.M)
    assert "dry-run" in doc and "dry-run" not in doc_flags(cut, "ambit-redirect")
    code = help_flags(bins, "ambit-redirect") | table_flags("ambit-redirect")
    base = set(compare("f", code, doc))
    assert set(compare("f", code, doc_flags(cut, "ambit-redirect"))) - base == {
        "f: dry-run is accepted by the code but not documented in docs/configuration.md"}
    assert set(compare("f", code, doc | {"bogus-flag"})) - base == {
        "f: bogus-flag is documented in docs/configuration.md but the code does not know it"}


# --------------------------------------------------------------------------
# links between the cross-cutting pages and the rest of docs/


def github_anchor(heading):
    """GitHub's anchor of a markdown heading: lower case, punctuation other
    than '-' and '_' dropped, spaces to '-'."""
    h = heading.strip().lstrip("#").strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path):
    text = path.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # no headings inside code
    return {github_anchor(ln) for ln in text.splitlines() if ln.startswith("#")}


def link_problems(text, base):
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, frag = target.partition("#")
        dest = (base / file) if file else None
        if dest is not None and not dest.exists():
            bad.append(f"{target}: no such file")
        elif frag and dest is not None and dest.suffix == ".md" and frag not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{frag} in {dest.name}")
    return bad


@pytest.mark.parametrize("page_name", ["architecture.md", "configuration.md", "security.md",
                                       "operations.md"])
def test_relative_links_resolve(page_name):
    page = REPO / "docs" / page_name
    bad = link_problems(page.read_text(), page.parent)
    # same-page anchors
    own = anchors(page)
    bad += [f"#{f}: no such heading" for f in re.findall(r"\]\(#([^)\s]+)\)", page.read_text())
            if f not in own]
    assert not bad, "\n".join(bad)


def test_selfcheck_anchor():
    assert github_anchor("### Failure reasons (`enum tls_fail`, `tls_fail_str()`)") == \
        "failure-reasons-enum-tls_fail-tls_fail_str"
    assert github_anchor("## node-proxy.ini") == "node-proxyini"
    docs = REPO / "docs"
    assert link_problems("[x](hbone.md#no-such-heading) [y](nope.md) [z](hbone.md#tests)", docs) == [
        "hbone.md#no-such-heading: no heading with anchor #no-such-heading in hbone.md",
        "nope.md: no such file"]
