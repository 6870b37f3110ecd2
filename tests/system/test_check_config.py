"""`ambit-node-proxy check-config`: offline validation of policies.d and
services.d, as a user's CI pipeline would run it (docs/policy.md).

Skipped until main() dispatches the subcommand to checkconfig_main(); the
same code is unit-tested in tests/unit/test_policy_reload.c.
"""
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def run(bins, *args):
    return subprocess.run([str(bins / "ambit-node-proxy"), "check-config", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def cc(bins):
    r = run(bins, "--help")
    if r.returncode != 0 or "check-config" not in r.stdout:
        pytest.skip("ambit-node-proxy does not dispatch check-config yet")
    return bins


def test_examples_are_valid(cc):
    r = run(cc, str(REPO / "configs/policies.d"), str(REPO / "configs/services.d"))
    assert r.returncode == 0, r.stderr
    assert "policies.d: ok" in r.stdout
    assert "services.d: ok, 3 services" in r.stdout


def test_broken_files_reported_with_lines(cc, tmp_path):
    pol = tmp_path / "policies.d"
    svc = tmp_path / "services.d"
    pol.mkdir()
    svc.mkdir()
    (pol / "10-a.ini").write_text("[policy a]\nnamespace = shop\naction = allow\n"
                                  "[rule a]\nports = 80x\n")
    (pol / "20-ok.ini").write_text("[policy b]\nnamespace = shop\n")
    (svc / "s.ini").write_text("[service s]\nnamespace = shop\nvips = 10.96.0.1\n"
                               "ports = 80\nselector = app=s\nlb = fastest\n")
    r = run(cc, str(pol), str(svc))
    assert r.returncode == 1
    assert f"{pol}/10-a.ini:3: bad action \"allow\"" in r.stderr
    assert f"{pol}/10-a.ini:5: ports: bad port \"80x\"" in r.stderr
    assert f"{svc}/s.ini:6: bad lb \"fastest\"" in r.stderr
    assert "invalid (2 errors)" in r.stderr


def test_usage_errors(cc, tmp_path):
    assert run(cc).returncode == 2
    assert run(cc, "--no-such-option").returncode == 2
    r = run(cc, str(tmp_path / "missing"))
    assert r.returncode == 1
    assert "No such file or directory" in r.stderr
