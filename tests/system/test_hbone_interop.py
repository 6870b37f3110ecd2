"""HBONE interoperability with an independent stack.

The other side is hyper-h2 (python3-h2, a pure-Python HTTP/2
implementation, not nghttp2) on Python's ssl module (OpenSSL, not
wolfSSL), with client certificates and ALPN h2:

- our HBONE server (tests/hbone-peer, built from node-proxy/hbone.c) accepts
  CONNECT tunnels from a hyper-h2 client: 200 + echo, 401 and 503, a client
  from a foreign CA and a TLS 1.2 client are refused;
- our HBONE client connects through a hyper-h2 CONNECT server and gets its
  echo back.

Everything runs on 127.0.0.1 with ports picked by the kernel; certificates
are made per test run with the openssl CLI.
"""

import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

h2 = pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.events  # noqa: E402

TD = "cluster.local"
ID_CLIENT = f"spiffe://{TD}/ns/default/sa/client"
ID_SERVER = f"spiffe://{TD}/ns/default/sa/server"

PKI = r"""
set -e
cd "$1"
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > ca.ext
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null; }
root() { key $1; openssl req -new -x509 -key $1.key -subj /O=ambit-test/CN=$1 -days 30 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -out $1.pem 2>/dev/null; }
inter() { key $1; openssl req -new -key $1.key -subj /O=ambit-test/CN=$1 -out $1.csr;
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 30 \
  -extfile ca.ext -out $1.pem 2>/dev/null; }
leaf() { key $1; openssl req -new -key $1.key -subj /O=ambit-test -out $1.csr;
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:%s\n' "$3" > $1.ext;
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 2 \
  -extfile $1.ext -out $1.leaf 2>/dev/null; cat $1.leaf $2.pem > $1.pem; }
root root
inter int root
leaf client int spiffe://cluster.local/ns/default/sa/client
leaf server int spiffe://cluster.local/ns/default/sa/server
root root2
leaf foreign root2 spiffe://cluster.local/ns/default/sa/client
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("hbone-pki")
    subprocess.run(["sh", "-c", PKI, "pki", str(d)], check=True)
    return d


@pytest.fixture(scope="module")
def peer_bin():
    b = Path(os.environ.get("AMBIT_BIN", Path(__file__).resolve().parents[2] / "build/bin"))
    p = b.parent / "tests" / "hbone-peer"
    assert p.exists(), f"{p} not built (make unit)"
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


@pytest.fixture
def hbone_server(pki, peer_bin, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    p = subprocess.Popen(
        [peer_bin, "server", str(port), pki / "server.pem", pki / "server.key", pki / "root.pem"],
        stderr=log,
    )
    try:
        wait_port(port)
        yield port, log
    finally:
        p.kill()
        p.wait()
        log.close()


def client_ctx(pki, leaf="client", tls12=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # SPIFFE: the URI SAN is checked below
    ctx.load_verify_locations(pki / "root.pem")
    ctx.load_cert_chain(pki / f"{leaf}.pem", pki / f"{leaf}.key")
    ctx.set_alpn_protocols(["h2"])
    return ctx


def uri_sans(cert):
    return [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]


class H2Client:
    """A hyper-h2 HBONE client over an OpenSSL socket."""

    def __init__(self, port, ctx):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw)
        assert self.sock.selected_alpn_protocol() == "h2"
        assert self.sock.version() == "TLSv1.3"
        assert uri_sans(self.sock.getpeercert()) == [ID_SERVER]
        # Plain CONNECT has no :path/:scheme; hyper-h2 4.1 validates for
        # the non-CONNECT form, so outbound validation is off.
        cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.status = {}
        self.data = {}
        self.ended = set()
        self.reset = {}

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def connect(self, authority, extra=()):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", authority), *extra])
        self.flush()
        self.data[sid] = bytearray()
        return sid

    def pump(self, until, timeout=10):
        end = time.time() + timeout
        while not until():
            assert time.time() < end, "timeout waiting for the HBONE server"
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            for ev in self.conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    self.status[ev.stream_id] = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    self.data[ev.stream_id] += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.ended.add(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    self.reset[ev.stream_id] = ev.error_code
            self.flush()

    def send(self, sid, payload, end=True):
        view = memoryview(payload)
        while view:
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            self.conn.send_data(sid, bytes(view[:win]))
            view = view[win:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()


def test_h2_client_to_hbone_server(pki, hbone_server):
    port, log = hbone_server
    c = H2Client(port, client_ctx(pki))
    sid = c.connect("10.0.0.2:8080", [("forwarded", 'for="10.0.0.9:4000"')])
    c.pump(lambda: sid in c.status)
    assert c.status[sid] == 200
    payload = os.urandom(3 * 1024 * 1024 + 17)  # beyond the 64 KiB default windows
    c.send(sid, payload)
    c.pump(lambda: sid in c.ended)
    assert bytes(c.data[sid]) == payload
    # Several streams at once on the same connection.
    sids = [c.connect(f"10.0.0.{i}:80") for i in range(3, 13)]
    c.pump(lambda: all(s in c.status for s in sids))
    for s in sids:
        c.send(s, f"stream {s}".encode() * 100)
    c.pump(lambda: all(s in c.ended for s in sids))
    for s in sids:
        assert bytes(c.data[s]) == f"stream {s}".encode() * 100
    c.sock.close()
    log.seek(0)
    text = log.read()
    assert f"handshake ok peer={ID_CLIENT}" in text
    assert 'CONNECT 10.0.0.2:8080 from ' + ID_CLIENT + ' forwarded=for="10.0.0.9:4000"' in text


def test_h2_client_refusals(pki, hbone_server):
    port, _ = hbone_server
    c = H2Client(port, client_ctx(pki))
    s401 = c.connect("10.0.0.2:7")
    s503 = c.connect("10.0.0.2:9")
    s400 = c.connect("svc.default.svc:80")
    s400b = c.connect("10.0.0.2:0")
    c.pump(lambda: all(s in c.status for s in (s401, s503, s400, s400b)))
    assert c.status[s401] == 401
    assert c.status[s503] == 503
    assert c.status[s400] == 400
    assert c.status[s400b] == 400
    # The connection stays usable.
    ok = c.connect("10.0.0.2:80")
    c.pump(lambda: ok in c.status)
    assert c.status[ok] == 200


def expect_handshake_refused(port, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = ctx.wrap_socket(raw)
        # TLS 1.3: a refused client certificate surfaces on first read.
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        if not s.recv(1):
            raise ConnectionError("closed")
    raw.close()


def test_refused_foreign_ca_and_tls12(pki, hbone_server):
    port, log = hbone_server
    expect_handshake_refused(port, client_ctx(pki, leaf="foreign"))
    expect_handshake_refused(port, client_ctx(pki, tls12=True))
    time.sleep(0.2)
    log.seek(0)
    text = log.read()
    assert "handshake refused: unknown_ca" in text
    assert "handshake refused: protocol_version" in text


def h2_connect_server(pki, port, ready, stop, seen):
    """A hyper-h2 CONNECT server that echoes each tunnel."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    ctx.load_verify_locations(pki / "root.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4)
    ls.settimeout(0.2)
    ready.set()
    while not stop.is_set():
        try:
            raw, _ = ls.accept()
        except socket.timeout:
            continue
        raw.settimeout(10)
        try:
            s = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            seen["refused"] = seen.get("refused", 0) + 1  # our client said no
            raw.close()
            continue
        seen["alpn"] = s.selected_alpn_protocol()
        seen["peer"] = uri_sans(s.getpeercert())
        cfg = h2.config.H2Configuration(
            client_side=False, validate_inbound_headers=False, validate_outbound_headers=False
        )
        conn = h2.connection.H2Connection(config=cfg)
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        pending = {}
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                for ev in conn.receive_data(chunk):
                    if isinstance(ev, h2.events.RequestReceived):
                        hd = dict(ev.headers)
                        seen.setdefault("requests", []).append(
                            (hd.get(b":method"), hd.get(b":authority"))
                        )
                        conn.send_headers(ev.stream_id, [(":status", "200")])
                        pending[ev.stream_id] = bytearray()
                    elif isinstance(ev, h2.events.DataReceived):
                        pending[ev.stream_id] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        pending[ev.stream_id] = (pending[ev.stream_id], True)
                # Echo what the windows allow; end after the peer ended.
                for sid, buf in list(pending.items()):
                    ended = isinstance(buf, tuple)
                    data = buf[0] if ended else buf
                    while data:
                        win = min(
                            conn.local_flow_control_window(sid), conn.max_outbound_frame_size
                        )
                        if win <= 0:
                            break
                        conn.send_data(sid, bytes(data[:win]))
                        del data[:win]
                    if ended and not data:
                        conn.end_stream(sid)
                        del pending[sid]
                s.sendall(conn.data_to_send())
        except (ssl.SSLError, OSError, h2.exceptions.ProtocolError):
            pass
        s.close()
    ls.close()


def test_hbone_client_to_h2_server(pki, peer_bin):
    port = free_port()
    ready, stop, seen = threading.Event(), threading.Event(), {}
    t = threading.Thread(target=h2_connect_server, args=(pki, port, ready, stop, seen))
    t.start()
    try:
        ready.wait(5)
        r = subprocess.run(
            [peer_bin, "client", str(port), pki / "client.pem", pki / "client.key",
             pki / "root.pem", ID_SERVER, "10.0.0.2:8080", "200000", "3"],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "status=200 streams=3 tx=600000 rx=600000 ok=1" in r.stdout
        assert seen["alpn"] == "h2"
        assert seen["peer"] == [ID_CLIENT]
        assert seen["requests"][0] == (b"CONNECT", b"10.0.0.2:8080")
        # The same client refuses a server with another identity.
        r = subprocess.run(
            [peer_bin, "client", str(port), pki / "client.pem", pki / "client.key",
             pki / "root.pem", "spiffe://cluster.local/ns/default/sa/other", "10.0.0.2:80", "0"],
            capture_output=True, text=True, timeout=60,
        )
        assert "fail=wrong_identity" in r.stdout, r.stdout + r.stderr
        assert r.returncode != 0 or "ok=0" in r.stdout
    finally:
        stop.set()
        t.join()
