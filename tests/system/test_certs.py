"""ambit-certs end to end: the CLI in temporary directories, cross-checked
with the openssl CLI.  No namespaces needed.

Covers the happy path (root -> node -> workload), inspect output, file
modes, and the failures an operator hits: wrong key, mismatched chain,
unreadable file, malformed PEM, missing directory, existing root, usage
errors, expired certificates.
"""

import os
import shutil
import stat
import subprocess

import pytest

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


@pytest.fixture
def certs(bins):
    exe = bins / "ambit-certs"
    assert exe.exists(), f"{exe} not built"

    def run(*args, ok=True, code=None):
        p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                           timeout=60)
        if code is not None:
            assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
        elif ok:
            assert p.returncode == 0, (args, p.stdout, p.stderr)
        else:
            assert p.returncode != 0, (args, p.stdout, p.stderr)
        return p
    return run


@pytest.fixture
def pki(certs, tmp_path):
    """root in tmp/root, node n1 in tmp/n1, workload default/web in tmp/w."""
    root = tmp_path / "root"
    root.mkdir()
    certs("init-root", "--dir", root)
    certs("issue-node", "--dir", root, "--node", "n1", "--out", tmp_path / "n1")
    certs("issue-workload", "--dir", tmp_path / "n1", "--namespace", "default",
          "--service-account", "web", "--out", tmp_path / "w")
    return tmp_path


def openssl(*args, ok=True):
    p = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30)
    if ok:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_happy_path_files_and_modes(pki):
    root, n1, w = pki / "root", pki / "n1", pki / "w"
    assert mode(root / "root-key.pem") == 0o600
    assert mode(root / "root-cert.pem") == 0o644
    assert sorted(os.listdir(n1)) == ["node-cert.pem", "node-key.pem", "root-cert.pem"]
    assert mode(n1 / "node-key.pem") == 0o600
    # The node gets the root certificate, never the root key.
    assert (n1 / "root-cert.pem").read_bytes() == (root / "root-cert.pem").read_bytes()
    assert not any("root-key" in f for f in os.listdir(n1))
    assert sorted(os.listdir(w)) == ["cert.pem", "chain.pem", "key.pem", "root-cert.pem"]
    assert mode(w / "key.pem") == 0o600
    # No temporary files left behind by the atomic writes.
    for d in (root, n1, w):
        assert not [f for f in os.listdir(d) if ".tmp." in f]


def test_openssl_agrees(pki):
    root, n1, w = pki / "root", pki / "n1", pki / "w"
    out = openssl("verify", "-CAfile", root / "root-cert.pem", "-untrusted",
                  n1 / "node-cert.pem", w / "cert.pem").stdout
    assert "OK" in out
    text = openssl("x509", "-in", w / "cert.pem", "-noout", "-text").stdout
    assert "URI:spiffe://cluster.local/ns/default/sa/web" in text
    assert "CA:FALSE" in text
    assert "prime256v1" in text or "P-256" in text
    inter = openssl("x509", "-in", n1 / "node-cert.pem", "-noout", "-text").stdout
    assert "CA:TRUE, pathlen:0" in inter
    assert "X509v3 Name Constraints: critical" in inter
    assert "URI:cluster.local" in inter
    rt = openssl("x509", "-in", root / "root-cert.pem", "-noout", "-text").stdout
    assert "CA:TRUE" in rt and "Certificate Sign" in rt
    # The keys are ordinary EC keys matching their certificates.
    for cert, key in ((w / "cert.pem", w / "key.pem"), (n1 / "node-cert.pem", n1 / "node-key.pem"),
                      (root / "root-cert.pem", root / "root-key.pem")):
        a = openssl("x509", "-in", cert, "-noout", "-pubkey").stdout
        b = openssl("ec", "-in", key, "-pubout").stdout
        assert a == b
    # chain.pem is leaf + intermediate.
    chain = (w / "chain.pem").read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2
    assert chain.startswith((w / "cert.pem").read_text())


def test_inspect_output(certs, pki):
    root, n1, w = pki / "root", pki / "n1", pki / "w"
    out = certs("inspect", w / "cert.pem", "--root", root / "root-cert.pem",
                "--chain-with", n1 / "node-cert.pem", "--key", w / "key.pem").stdout
    assert "SAN URI:          spiffe://cluster.local/ns/default/sa/web" in out
    assert "SPIFFE ID:        trust domain cluster.local, namespace default, service account web" in out
    assert "key:              ECDSA P-256" in out
    assert "CA:               no" in out
    assert "validity:         valid" in out
    assert "chain:            OK" in out
    assert "key check:" in out and "matches" in out
    assert "issuer:           /O=ambit/CN=ambit node n1" in out
    # chain.pem alone carries the intermediate.
    out = certs("inspect", w / "chain.pem", "--root", root / "root-cert.pem").stdout
    assert "chain:            OK" in out and "(2 certificates)" in out
    out = certs("inspect", n1 / "node-cert.pem", "--root", root / "root-cert.pem").stdout
    assert "CA:               yes, path length 0" in out
    assert "name constraints: critical" in out
    assert "permitted URI:  cluster.local" in out
    assert "keyCertSign" in out
    out = certs("inspect", root / "root-cert.pem").stdout
    assert "(self-signed)" in out and "name constraints: none" in out
    # DER input works too.
    der = pki / "leaf.der"
    openssl("x509", "-in", w / "cert.pem", "-outform", "DER", "-out", der)
    assert "spiffe://cluster.local/ns/default/sa/web" in certs("inspect", der).stdout


def test_trust_domain_and_lifetimes(certs, tmp_path):
    certs("init-root", "--dir", tmp_path, "--trust-domain", "corp.example", "--days", "30")
    certs("issue-node", "--dir", tmp_path, "--node", "edge-1", "--hours", "48")
    nd = tmp_path / "node-edge-1"  # default --out
    certs("issue-workload", "--dir", nd, "--namespace", "shop", "--service-account", "cart",
          "--hours", "2", "--out", tmp_path / "w")
    out = certs("inspect", tmp_path / "w" / "chain.pem", "--root", tmp_path / "root-cert.pem").stdout
    assert "spiffe://corp.example/ns/shop/sa/cart" in out
    assert "expires in 0d 2h" in out or "expires in 0d 1h" in out
    inter = certs("inspect", nd / "node-cert.pem").stdout
    assert "permitted URI:  corp.example" in inter
    assert "expires in 2d 0h" in inter or "expires in 1d 23h" in inter
    # A node may not outlive the root: 10 years asked, root has 30 days.
    certs("issue-node", "--dir", tmp_path, "--node", "long", "--hours", "87600")
    out = certs("inspect", tmp_path / "node-long" / "node-cert.pem").stdout
    assert "expires in 29d" in out or "expires in 30d" in out


def test_existing_root_needs_force(certs, tmp_path):
    certs("init-root", "--dir", tmp_path)
    before = (tmp_path / "root-cert.pem").read_bytes()
    p = certs("init-root", "--dir", tmp_path, code=1)
    assert "already holds a root" in p.stderr and "--force" in p.stderr
    assert (tmp_path / "root-cert.pem").read_bytes() == before
    certs("init-root", "--dir", tmp_path, "--force")
    assert (tmp_path / "root-cert.pem").read_bytes() != before
    assert mode(tmp_path / "root-key.pem") == 0o600


def test_nonexistent_dir(certs, tmp_path):
    p = certs("init-root", "--dir", tmp_path / "nope", code=1)
    assert "nope" in p.stderr and "No such file" in p.stderr
    p = certs("issue-node", "--dir", tmp_path / "nope", "--node", "x", code=1)
    assert "No such file" in p.stderr
    p = certs("issue-workload", "--dir", tmp_path / "nope", "--namespace", "a",
              "--service-account", "b", "--out", tmp_path / "w", code=1)
    assert "No such file" in p.stderr


def test_wrong_key(certs, pki):
    root, n1 = pki / "root", pki / "n1"
    # Replace the root key with another root's key.
    other = pki / "other"
    other.mkdir()
    certs("init-root", "--dir", other)
    shutil.copy(other / "root-key.pem", root / "root-key.pem")
    p = certs("issue-node", "--dir", root, "--node", "n2", code=1)
    assert "does not match" in p.stderr
    # Node key swapped for the workload key.
    shutil.copy(pki / "w" / "key.pem", n1 / "node-key.pem")
    p = certs("issue-workload", "--dir", n1, "--namespace", "a", "--service-account", "b",
              "--out", pki / "w2", code=1)
    assert "does not match" in p.stderr
    # inspect --key with a key that is not the certificate's.
    p = certs("inspect", pki / "w" / "cert.pem", "--key", other / "root-key.pem", code=1)
    assert "does not match" in p.stderr and "key check:        FAILED" in p.stdout


def test_mismatched_chain(certs, pki):
    other = pki / "other"
    other.mkdir()
    certs("init-root", "--dir", other)
    certs("issue-node", "--dir", other, "--node", "n9", "--out", pki / "n9")
    w = pki / "w"
    # Right intermediate, foreign root.
    p = certs("inspect", w / "cert.pem", "--chain-with", pki / "n1" / "node-cert.pem",
              "--root", other / "root-cert.pem", code=1)
    assert "chain:            FAILED" in p.stdout and "chain check failed" in p.stderr
    # Foreign intermediate, right root.
    p = certs("inspect", w / "cert.pem", "--chain-with", pki / "n9" / "node-cert.pem",
              "--root", pki / "root" / "root-cert.pem", code=1)
    assert "FAILED" in p.stdout
    # Missing intermediate.
    p = certs("inspect", w / "cert.pem", "--root", pki / "root" / "root-cert.pem", code=1)
    assert "FAILED" in p.stdout
    # openssl agrees on the mismatch.
    assert openssl("verify", "-CAfile", other / "root-cert.pem", "-untrusted",
                   pki / "n1" / "node-cert.pem", w / "cert.pem", ok=False).returncode != 0


def test_unreadable_and_malformed(certs, pki, tmp_path):
    w = pki / "w"
    p = certs("inspect", tmp_path / "missing.pem", code=1)
    assert "cannot open" in p.stderr and "missing.pem" in p.stderr
    p = certs("inspect", tmp_path, code=1)  # a directory
    assert "not a regular file" in p.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n")
    p = certs("inspect", bad, code=1)
    assert "malformed PEM" in p.stderr
    trunc = tmp_path / "trunc.pem"
    trunc.write_text((w / "cert.pem").read_text()[:-40])
    p = certs("inspect", trunc, code=1)
    assert "END line" in p.stderr or "malformed" in p.stderr
    junk = tmp_path / "junk.pem"
    junk.write_bytes(os.urandom(300).replace(b"0", b"1"))
    certs("inspect", junk, code=1)
    # Corrupt base64 payload inside a well-formed PEM frame.
    lines = (w / "cert.pem").read_text().splitlines()
    lines[3] = "A" * len(lines[3])
    (tmp_path / "corrupt.pem").write_text("\n".join(lines) + "\n")
    certs("inspect", tmp_path / "corrupt.pem", code=1)
    # Malformed key for a node directory.
    n1 = pki / "n1"
    (n1 / "node-key.pem").write_text("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
    p = certs("issue-workload", "--dir", n1, "--namespace", "a", "--service-account", "b",
              "--out", tmp_path / "w2", code=1)
    assert "key" in p.stderr
    # Unreadable file (root bypasses permissions, so use a dangling path).
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.pem")
    p = certs("inspect", tmp_path / "dangling.pem", code=1)
    assert "cannot open" in p.stderr


def test_bad_names_and_usage(certs, pki, tmp_path):
    p = certs("init-root", "--dir", tmp_path, "--trust-domain", "Bad.Domain", code=1)
    assert "trust domain" in p.stderr
    p = certs("issue-node", "--dir", pki / "root", "--node", "bad/name", code=1)
    assert "node name" in p.stderr
    p = certs("issue-workload", "--dir", pki / "n1", "--namespace", "..",
              "--service-account", "x", "--out", tmp_path / "w", code=1)
    assert "SPIFFE ID" in p.stderr
    p = certs("issue-workload", "--dir", pki / "n1", "--namespace", "a%2f",
              "--service-account", "x", "--out", tmp_path / "w", code=1)
    assert "percent" in p.stderr
    certs(code=2)
    certs("frobnicate", code=2)
    certs("init-root", code=2)
    certs("init-root", "--dir", tmp_path, "--days", "0", code=2)
    certs("init-root", "--dir", tmp_path, "--days", "-5", code=2)
    certs("issue-node", "--dir", pki / "root", code=2)
    certs("inspect", code=2)
    certs("inspect", "a", "b", code=2)
    certs("inspect", pki / "w" / "cert.pem", "--chain-with", pki / "n1" / "node-cert.pem", code=2)
    assert "usage" in certs("--help").stdout


def test_expired_detected_by_openssl_and_inspect(certs, pki, tmp_path):
    # A 1-hour workload certificate checked at a time two hours ahead.
    w = pki / "w1h"
    certs("issue-workload", "--dir", pki / "n1", "--namespace", "default",
          "--service-account", "short", "--hours", "1", "--out", w)
    import time
    later = int(time.time()) + 2 * 3600
    p = openssl("verify", "-attime", later, "-CAfile", pki / "root" / "root-cert.pem",
                "-untrusted", pki / "n1" / "node-cert.pem", w / "cert.pem", ok=False)
    assert p.returncode != 0 and "expired" in (p.stdout + p.stderr)
    # The node intermediate (720 h) is still fine then.
    openssl("verify", "-attime", later, "-CAfile", pki / "root" / "root-cert.pem",
            pki / "n1" / "node-cert.pem")
    # inspect judges the same way.
    p = certs("inspect", w / "chain.pem", "--root", pki / "root" / "root-cert.pem",
              "--at", later, code=1)
    assert "validity:         EXPIRED" in p.stdout
    assert "chain:            FAILED" in p.stdout and "expired" in p.stdout
    p = certs("inspect", w / "chain.pem", "--root", pki / "root" / "root-cert.pem",
              "--at", later - 3 * 86400, code=1)
    assert "NOT YET VALID" in p.stdout and "not valid yet" in p.stdout
    out = certs("inspect", w / "chain.pem", "--root", pki / "root" / "root-cert.pem").stdout
    assert "chain:            OK" in out
    certs("inspect", w / "cert.pem", "--at", "yesterday", code=2)


def test_reissue_node_needs_force(certs, pki):
    n1 = pki / "n1"
    before = (n1 / "node-key.pem").read_bytes()
    p = certs("issue-node", "--dir", pki / "root", "--node", "n1", "--out", n1, code=1)
    assert "already holds a node key" in p.stderr
    assert (n1 / "node-key.pem").read_bytes() == before
    certs("issue-node", "--dir", pki / "root", "--node", "n1", "--out", n1, "--force")
    assert (n1 / "node-key.pem").read_bytes() != before
    # SVIDs from the old intermediate still chain to the root with the old
    # intermediate; the new intermediate verifies new SVIDs.
    certs("issue-workload", "--dir", n1, "--namespace", "default", "--service-account", "web",
          "--out", pki / "w-new")
    out = certs("inspect", pki / "w-new" / "chain.pem", "--root", pki / "root" / "root-cert.pem").stdout
    assert "chain:            OK" in out
    out = certs("inspect", pki / "w" / "chain.pem", "--root", pki / "root" / "root-cert.pem").stdout
    assert "chain:            OK" in out
