"""Prometheus exposition output of node-proxy's metrics module, checked by a
strict parser of text format 0.0.4 (below) and by `promtool check metrics`
when Debian's prometheus package is installed; and the Grafana dashboard
(configs/grafana/ambit-dashboard.json) against the metric names the code
emits.

The module is driven through $(O)/tests/metrics_dump (tests/unit/
test_metrics_dump.c), which reads a script of metrics calls on stdin and
prints metrics_render().  No namespaces needed.
"""

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|Inf|inf|NaN)\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
ISTIO_LABELS = [
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster", "destination_service", "destination_service_namespace",
    "destination_service_name", "destination_workload", "destination_canonical_service",
    "destination_canonical_revision", "destination_workload_namespace",
    "destination_principal", "destination_app", "destination_version", "destination_cluster",
    "request_protocol", "response_flags", "connection_security_policy",
]


class ExpositionError(Exception):
    pass


def _parse_labels(s, pos, lineno):
    """Parse `{a="b",...}` starting at s[pos] == '{'; returns (dict, end)."""
    labels = {}
    pos += 1
    while True:
        if pos < len(s) and s[pos] == "}":
            return labels, pos + 1
        m = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").match(s, pos)
        if not m:
            raise ExpositionError(f"line {lineno}: bad label name at {pos}")
        name = m.group(0)
        pos = m.end()
        if s[pos:pos + 2] != '="':
            raise ExpositionError(f"line {lineno}: expected =\" after {name}")
        pos += 2
        val = []
        while True:
            if pos >= len(s):
                raise ExpositionError(f"line {lineno}: unterminated label value")
            c = s[pos]
            if c == "\\":
                nxt = s[pos + 1:pos + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ExpositionError(f"line {lineno}: bad escape \\{nxt}")
                val.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                pos += 2
            elif c == '"':
                pos += 1
                break
            elif c == "\n":
                raise ExpositionError(f"line {lineno}: raw newline in label value")
            else:
                val.append(c)
                pos += 1
        if name in labels:
            raise ExpositionError(f"line {lineno}: duplicate label {name}")
        if name.startswith("__"):
            raise ExpositionError(f"line {lineno}: reserved label {name}")
        labels[name] = "".join(val)
        if pos < len(s) and s[pos] == ",":
            pos += 1
            continue
        if pos < len(s) and s[pos] == "}":
            return labels, pos + 1
        raise ExpositionError(f"line {lineno}: expected , or }} after label {name}")


def parse_exposition(data: bytes):
    """Strict parse of text format 0.0.4.  Returns {family: {"type", "help",
    "samples": {(name, frozenset(labels.items())): value}}}; raises
    ExpositionError on anything a Prometheus scraper would reject or that
    the format calls invalid (duplicate series, HELP/TYPE repeated or after
    samples, a family's samples not contiguous, bad names, escapes, UTF-8,
    negative counters)."""
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise ExpositionError(f"not UTF-8: {e}")
    if text and not text.endswith("\n"):
        raise ExpositionError("output does not end with a newline")
    fams = {}
    current = None
    closed = set()
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not METRIC_NAME.match(name):
                    raise ExpositionError(f"line {lineno}: bad metric name {name!r}")
                fam = fams.setdefault(name, {"type": None, "help": None, "samples": {}})
                if name in closed or (current != name and fam["samples"]):
                    raise ExpositionError(f"line {lineno}: {parts[1]} for {name} after its samples")
                if current is not None and current != name:
                    closed.add(current)
                current = name
                if parts[1] == "HELP":
                    if fam["help"] is not None:
                        raise ExpositionError(f"line {lineno}: second HELP for {name}")
                    help_text = parts[3] if len(parts) > 3 else ""
                    if re.search(r"\\[^\\n]", help_text.replace("\\\\", "")):
                        raise ExpositionError(f"line {lineno}: bad escape in HELP")
                    fam["help"] = help_text
                else:
                    if fam["type"] is not None:
                        raise ExpositionError(f"line {lineno}: second TYPE for {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ExpositionError(f"line {lineno}: bad TYPE line")
                    if fam["samples"]:
                        raise ExpositionError(f"line {lineno}: TYPE after samples")
                    fam["type"] = parts[3]
            continue
        m = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(line)
        if not m:
            raise ExpositionError(f"line {lineno}: bad sample line {line[:60]!r}")
        name = m.group(0)
        pos = m.end()
        labels = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = _parse_labels(line, pos, lineno)
        rest = line[pos:]
        if not rest.startswith(" "):
            raise ExpositionError(f"line {lineno}: expected a space before the value")
        fields = rest[1:].split(" ")
        if len(fields) not in (1, 2) or not FLOAT.match(fields[0]):
            raise ExpositionError(f"line {lineno}: bad value {rest!r}")
        if len(fields) == 2 and not re.match(r"-?\d+\Z", fields[1]):
            raise ExpositionError(f"line {lineno}: bad timestamp")
        value = float(fields[0])
        fam_name = name
        if fam_name not in fams:
            # untyped sample without HELP/TYPE: its own family
            fams[fam_name] = {"type": "untyped", "help": None, "samples": {}}
        if fam_name in closed:
            raise ExpositionError(f"line {lineno}: samples of {fam_name} not contiguous")
        if current is not None and current != fam_name:
            closed.add(current)
        current = fam_name
        fam = fams[fam_name]
        key = (name, frozenset(labels.items()))
        if key in fam["samples"]:
            raise ExpositionError(f"line {lineno}: duplicate series {name}{labels}")
        if fam["type"] == "counter" and (value < 0 or math.isnan(value)):
            raise ExpositionError(f"line {lineno}: counter {name} negative or NaN")
        fam["samples"][key] = value
    return fams


def sample(fams, name, **labels):
    """Value of the one sample of @name whose labels include @labels."""
    hits = [v for (n, ls), v in fams[name]["samples"].items()
            if n == name and all((k, val) in ls for k, val in labels.items())]
    assert len(hits) == 1, f"{name} {labels}: {len(hits)} matches"
    return hits[0]


@pytest.fixture(scope="module")
def dump(bins):
    exe = Path(os.environ.get("AMBIT_BIN", str(bins))).parent / "tests" / "metrics_dump"
    if not exe.exists():
        pytest.fail(f"{exe} not built (make unit)")

    def run(script, check=True):
        p = subprocess.run([str(exe)], input=script.encode(), capture_output=True, timeout=30)
        if check:
            assert p.returncode == 0, p.stderr.decode(errors="replace")
        return p

    return run


def promtool_check(data: bytes):
    promtool = shutil.which("promtool")
    if not promtool:
        return None
    p = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True, timeout=30)
    return p


def traffic_script(n_conns, bytes_req, bytes_resp, workers=2):
    """Both reporters of one frontend -> backend flow: the outbound side
    (reporter=source) and the inbound side (reporter=destination), spread
    over workers, as the data plane would count them."""
    common = ("source_workload=frontend\tsource_workload_namespace=shop\t"
              "source_principal=spiffe://cluster.local/ns/shop/sa/frontend\tsource_app=frontend\t"
              "destination_workload=backend\tdestination_workload_namespace=shop\t"
              "destination_principal=spiffe://cluster.local/ns/shop/sa/backend\t"
              "destination_service=backend.shop.svc.cluster.local")
    lines = [f"init\t{workers}\t64", "build\t0.0.0-test", "std",
             f"series\tsrc\tsource\tmutual_tls\t{common}",
             f"series\tdst\tdestination\tmutual_tls\t{common}"]
    for i in range(n_conns):
        w = i % workers
        for s in ("src", "dst"):
            lines.append(f"open\t{w}\t{s}")
            # received = request direction (client -> server), sent = response
            lines.append(f"bytes\t{w}\t{s}\t{bytes_resp}\t{bytes_req}")
            lines.append(f"close\t{w}\t{s}\t0")
    lines.append("render")
    return "\n".join(lines) + "\n"


def test_parser_rejects_bad_input():
    """The strict parser must be able to fail."""
    bad = [
        b"# TYPE a counter\na 1\na 2\n",                     # duplicate series
        b"# TYPE a counter\n# TYPE a counter\na 1\n",         # TYPE twice
        b"a 1\n# TYPE a counter\n",                           # TYPE after samples
        b'a{x="1} 1\n',                                       # unterminated
        b'a{x="\\q"} 1\n',                                    # bad escape
        b'a{x="1",x="2"} 1\n',                                # duplicate label
        b"a{1x=\"1\"} 1\n",                                   # bad label name
        b"a 1x\n",                                            # bad value
        b"a 1",                                               # no final newline
        b'a{x="\xff"} 1\n',                                   # not UTF-8
        b"# TYPE a counter\na -1\n",                          # negative counter
        b"# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"y\"} 2\n",  # not contiguous
        b"# TYPE a bogus\na 1\n",                             # bad type
    ]
    for b in bad:
        with pytest.raises(ExpositionError):
            parse_exposition(b)
    ok = parse_exposition(b'# HELP a x \\\\ y\n# TYPE a gauge\na{x="q\\"\\n\\\\"} +Inf\na 2 1700000000000\n')
    assert ok["a"]["samples"][("a", frozenset({("x", 'q"\n\\')}))] == math.inf


def test_known_traffic_counts_exactly_on_both_reporters(dump):
    n, req, resp = 37, 1000, 70000
    out = dump(traffic_script(n, req, resp)).stdout
    fams = parse_exposition(out)
    for rep in ("source", "destination"):
        sel = dict(reporter=rep, source_workload="frontend", destination_workload="backend",
                   connection_security_policy="mutual_tls", response_flags="-",
                   request_protocol="tcp")
        assert sample(fams, "istio_tcp_connections_opened_total", **sel) == n
        assert sample(fams, "istio_tcp_connections_closed_total", **sel) == n
        assert sample(fams, "istio_tcp_received_bytes_total", **sel) == n * req
        assert sample(fams, "istio_tcp_sent_bytes_total", **sel) == n * resp
    # every Istio sample carries exactly Istio's label set, in order
    for name in ("istio_tcp_connections_opened_total", "istio_tcp_sent_bytes_total"):
        assert fams[name]["type"] == "counter"
        for (_, ls) in fams[name]["samples"]:
            assert sorted(k for k, _ in ls) == sorted(ISTIO_LABELS)
    first = next(line for line in out.decode().splitlines()
                 if line.startswith("istio_tcp_connections_opened_total{"))
    names = re.findall(r'([a-z_]+)="', first)
    assert names == ISTIO_LABELS
    # no failures recorded for clean closes
    assert not fams["istio_tcp_connections_failed_total"]["samples"]
    assert sample(fams, "ambit_build_info", version="0.0.0-test") == 1
    assert fams["process_cpu_seconds_total"]["type"] == "counter"
    assert sample(fams, "process_open_fds") >= 3
    assert sample(fams, "process_resident_memory_bytes") > 100000


def test_failures_get_response_flags(dump):
    script = "\n".join([
        "init\t1\t16",
        "series\tc\tsource\tmutual_tls\tsource_workload=fe\tdestination_workload=be",
        "open\t0\tc", "close\t0\tc\t1",       # UF
        "open\t0\tc", "close\t0\tc\t5",       # UF,URX
        "open\t0\tc", "close\t0\tc\t32",      # DENY
        "open\t0\tc", "close\t0\tc\t32",
        "open\t0\tc", "close\t0\tc\t64",      # DC: closed, not failed
        "render"]) + "\n"
    fams = parse_exposition(dump(script).stdout)
    assert sample(fams, "istio_tcp_connections_opened_total", response_flags="-") == 5
    closed = {dict(ls)["response_flags"]: v
              for (_, ls), v in fams["istio_tcp_connections_closed_total"]["samples"].items()}
    assert closed == {"UF": 1, "UF,URX": 1, "DENY": 2, "DC": 1}
    failed = {dict(ls)["response_flags"]: v
              for (_, ls), v in fams["istio_tcp_connections_failed_total"]["samples"].items()}
    assert failed == {"UF": 1, "UF,URX": 1, "DENY": 2}


def test_hostile_label_values_stay_valid(dump):
    evil = 'a\\\\b"c\\nd}\\x0a# TYPE x counter\\x0ax 1\\xff\\xc0\\xafend'
    script = "\n".join([
        "init\t1\t16",
        f"series\te\tdestination\tnone\tsource_workload={evil}\tdestination_workload=\\xe2\\x82\\xac",
        "open\t0\te",
        "family\ttest_evil_total\tcounter\thelp with \\\\ and \\n newline\treason",
        f"inc\t0\ttest_evil_total\t3\t{evil}",
        "render"]) + "\n"
    out = dump(script).stdout
    fams = parse_exposition(out)
    want = 'a\\b"c\nd}\n# TYPE x counter\nx 1\ufffd\ufffd\ufffdend'
    assert sample(fams, "istio_tcp_connections_opened_total", source_workload=want,
                  destination_workload="\u20ac", connection_security_policy="none") == 1
    assert sample(fams, "test_evil_total", reason=want) == 3
    assert "x" not in fams
    p = promtool_check(out)
    if p is not None:
        assert p.returncode == 0, p.stdout + p.stderr


def test_series_overflow_is_bounded(dump):
    lines = ["init\t1\t8"]
    for i in range(50):
        lines += [f"series\ts{i}\tsource\tmutual_tls\tsource_workload=w{i}",
                  f"open\t0\ts{i}"]
    lines.append("render")
    fams = parse_exposition(dump("\n".join(lines) + "\n").stdout)
    opened = fams["istio_tcp_connections_opened_total"]["samples"]
    assert len(opened) == 8  # 7 real label sets + the overflow series
    assert sample(fams, "istio_tcp_connections_opened_total", reporter="overflow") == 43
    assert sum(opened.values()) == 50
    assert sample(fams, "ambit_metrics_series_dropped_total") == 43
    assert sample(fams, "ambit_metrics_series") == 8


def test_promtool_accepts_output(dump):
    out = dump(traffic_script(5, 10, 20)).stdout
    p = promtool_check(out)
    if p is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    assert p.returncode == 0, p.stdout + p.stderr
    # and promtool itself rejects broken text, so this check can fail
    bad = promtool_check(out + b"istio_tcp_sent_bytes_total{reporter=\"x\" 1\n")
    assert bad.returncode != 0


def test_dump_rejects_bad_registration(dump):
    p = dump("init\t1\t8\nfamily\tbad-name\tcounter\th\n", check=False)
    assert p.returncode != 0
    p = dump("init\t1\t8\nfamily\tistio_tcp_sent_bytes_total\tcounter\th\n", check=False)
    assert p.returncode != 0


PROMQL_WORDS = {
    "sum", "by", "rate", "irate", "increase", "avg", "max", "min", "count", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "topk", "bottomk",
    "histogram_quantile", "label_values", "offset", "bool", "clamp_min", "clamp_max",
}


def promql_metric_names(expr):
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)       # drop string literals
    expr = re.sub(r"label_values\(([^,()]+),[^)]*\)", r"\1", expr)  # Grafana: (metric, label)
    expr = re.sub(r"\{[^}]*\}", "", expr)                 # drop label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                # drop range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set()
    for tok in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if tok in PROMQL_WORDS or tok.startswith("$"):
            continue
        names.add(tok)
    return names


def test_dashboard_uses_only_emitted_metrics(dump):
    path = ROOT / "configs" / "grafana" / "ambit-dashboard.json"
    dash = json.loads(path.read_text())
    assert dash["schemaVersion"] >= 36
    assert dash["title"] and dash["uid"]
    emitted = set(parse_exposition(dump(traffic_script(1, 1, 1)).stdout))
    # the standard families exist even before traffic; istio_* always have HELP/TYPE
    assert {"istio_tcp_connections_failed_total", "ambit_policy_decisions_total"} <= emitted

    exprs = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                exprs.append(t["expr"])
            if p.get("type") != "row":
                assert p.get("datasource"), p.get("title")
                assert p.get("gridPos"), p.get("title")

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            exprs.append(q["query"])
    assert len(exprs) >= 15
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for e in exprs:
        names = promql_metric_names(e)
        assert names, e
        used |= names
    unknown = used - emitted
    assert not unknown, f"dashboard uses metrics the code never emits: {sorted(unknown)}"
    # the panels the brief asks for are there
    for must in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                 "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total",
                 "istio_tcp_connections_failed_total", "ambit_policy_decisions_total",
                 "ambit_hbone_handshake_failures_total", "ambit_workloads_enrolled",
                 "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds"):
        assert must in used, must
    assert any("connection_security_policy" in e for e in exprs)


def test_promql_name_extraction_can_fail():
    assert promql_metric_names('sum by (a) (rate(foo_total{x="y"}[5m])) / bar') == {"foo_total", "bar"}
    assert promql_metric_names("label_values(ambit_build_info, instance)") == {"ambit_build_info"}
