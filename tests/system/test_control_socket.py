"""Control socket of a running ambit-node-proxy: malformed, truncated and
oversized datagrams, a non-netns fd, fds where none belong, an unknown
version -- each answered with an error ack, node-proxy stays up, and its
open fd count is the same before and after."""

import array
import json
import os
import socket
import struct
import time

from test_node_proxy import Proxy

MAGIC = 0x414D4231


def dgram(typ, seq, body=b"", version=1, magic=MAGIC, hlen=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return struct.pack(">IHHII", magic, version, typ, seq,
                       len(body) if hlen is None else hlen) + body


def call(path, data, fds=()):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.settimeout(5)
        s.connect(path)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        s.sendmsg([data], anc)
        ack = s.recv(70000)
    finally:
        s.close()
    magic, ver, typ, seq, n = struct.unpack(">IHHII", ack[:16])
    assert magic == MAGIC and ver == 1 and typ & 0x80 and n == len(ack) - 16
    return typ, seq, json.loads(ack[16:])["error"]


def test_control_socket_bad_input(topo, bins):  # noqa: F811
    node = topo.add_node("n1")
    pod = topo.add_pod(node, "a")
    proxy = Proxy(topo, bins, node)
    proxy.add(pod)  # one real pod, so the proxy is in its steady state
    time.sleep(0.2)
    before = proxy.fds()

    r, w = os.pipe()
    uts = os.open("/proc/self/ns/uts", os.O_RDONLY)
    ns1 = os.open(pod.path, os.O_RDONLY)
    ns2 = os.open(pod.path, os.O_RDONLY)
    wl = {"uid": "x", "namespace": "default", "name": "x", "ips": ["10.99.0.1"]}
    cases = [
        (b"AMB1", (), "short datagram"),
        (b"", (), "short datagram"),
        (dgram(4, 1, magic=0x12345678), (ns1,), "bad magic"),
        (dgram(5, 2, version=9), (), "supported: 1"),
        (dgram(77, 3), (), "unknown message type"),
        (dgram(2, 4, b'{"uid":"a"}', hlen=500), (), "length mismatch"),
        (dgram(2, 5, b'{"uid":"a"}', hlen=3), (), "length mismatch"),
        (dgram(2, 6, b" " * 70000), (ns1,), "larger than 65536"),
        (dgram(2, 7, b'{"uid":'), (), "bad JSON"),
        (dgram(2, 8, b'{"uid":"a","uid":"b"}'), (), "duplicate"),
        (dgram(1, 9, {"workload": wl}), (r,), "fd is not a network namespace"),
        (dgram(1, 10, {"workload": wl}), (uts,), "fd is not a network namespace"),
        (dgram(1, 11, {"workload": wl}), (), "exactly one fd"),
        (dgram(1, 12, {"workload": wl}), (ns1, ns2), "got 2"),
        (dgram(1, 13, {"workload": dict(wl, ips=["10.0.0.256"])}), (ns1,), "not an IPv4"),
        (dgram(2, 14, {"uid": "x"}), (r, w), "no fds"),
    ]
    for data, fds, want in cases:
        for _ in range(20):  # repeated, so a leak would show in the count
            typ, seq, err = call(proxy.sock, data, fds)
            assert want in err, (data[:40], err)
    for fd in (r, w, uts, ns1, ns2):
        os.close(fd)

    assert proxy.proc.poll() is None
    assert proxy.ctl("status").returncode == 0
    listed = json.loads(proxy.ctl("list", "--json").stdout)
    assert [w["uid"] for w in listed] == [f"uid-{pod.name}"]
    assert proxy.settled_fds(before) == before
