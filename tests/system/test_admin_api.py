"""node-proxy admin API: /config_dump (valid JSON, workloads + certificates
with expiry + policy state, never key material) and /quitquitquit (the
same graceful drain as SIGTERM: exit 0, no sanitizer report)."""

import json
import re

from test_hbone_mesh import hmesh  # noqa: F401  (fixture)

# Anything that could carry a private key: PEM armour, or a long run of
# base64/hex (a P-256 key is 121 bytes of DER: 164 base64 or 242 hex chars).
_KEYISH = re.compile(r"[A-Za-z0-9+/=]{120,}")


def _strings(j):
    if isinstance(j, str):
        yield j
    elif isinstance(j, dict):
        for k, v in j.items():
            yield k
            yield from _strings(v)
    elif isinstance(j, list):
        for v in j:
            yield from _strings(v)


def test_config_dump_has_state_and_no_keys(hmesh):  # noqa: F811
    n1, a, b, proxy = hmesh
    code, body = proxy.http("/config_dump")
    assert code == 200, body
    d = json.loads(body)
    names = {w.get("name") for w in d["workloads"]}
    assert {"a", "b"} <= names, d["workloads"]
    ids = {c["id"]: c for c in d["certificates"]}
    assert set(ids) == {"spiffe://cluster.local/ns/default/sa/alpha",
                        "spiffe://cluster.local/ns/default/sa/beta"}, ids
    for c in ids.values():
        assert c["not_after"] > c["not_before"] and c["serial"], c
    assert d["mesh_enabled"] is True
    assert "authorization" in d
    assert "PRIVATE" not in body and "BEGIN" not in body
    for s in _strings(d):
        assert not _KEYISH.search(s), s


def test_config_dump_detects_key_material_selfcheck():
    """The key check above can fail: a PEM key or a DER key in base64 trips it."""
    fake = {"certificates": [{"key": "MHcCAQEEI" + "A" * 150}]}
    assert any(_KEYISH.search(s) for s in _strings(fake))


def test_quitquitquit_drains_and_exits_zero(hmesh):  # noqa: F811
    n1, a, b, proxy = hmesh
    code, body = proxy.http("/config_dump")
    assert code == 200
    import urllib.request
    from topology import netns_exec

    def post():
        req = urllib.request.Request("http://127.0.0.1:15000/quitquitquit", data=b"",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    status, text = netns_exec(n1, post)
    assert status == 200 and "draining" in text
    rc = proxy.proc.wait(timeout=15)
    log = proxy.topo.log(proxy.proc)
    assert rc == 0, log[-3000:]
    assert "event=quitquitquit" in log
    assert "Sanitizer" not in log and "runtime error" not in log, log[-3000:]


def test_admin_rejects_other_methods(hmesh):  # noqa: F811
    n1, a, b, proxy = hmesh
    import urllib.request
    import urllib.error
    from topology import netns_exec

    def put():
        req = urllib.request.Request("http://127.0.0.1:15000/stats", data=b"x", method="PUT")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    assert netns_exec(n1, put) == 405
    assert proxy.ready()
