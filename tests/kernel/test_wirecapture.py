"""Names from the wire, the kernel side (issue 16): what the TC program hands
up through its ring buffer, read by kernel/wirecapture.py.

Two namespaces over a veth pair (a.va 10.200.1.1 <-> b.vb 10.200.1.2); the
TC program with names on is attached to va, both hooks. The test process
opens the sockets inside the namespaces itself, so it knows every byte sent:
DNS responses made with dnspython, a TLS ClientHello from Python's ssl (a
MemoryBIO, no server needed) sent over a real TCP connection, and a tun
device for the pair of devices without an Ethernet header. Ground truth is
what was sent, the SYN's sequence number from a packet capture on va, and
the program's own flow counters.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import dns.message
import dns.rrset
import pytest
from scapy.all import IP, UDP  # type: ignore[import-untyped]

from flowtop.kernel import layout
from flowtop.kernel.attach import TcAttacher
from flowtop.kernel.program import ProgramOptions, TcProgram, WireOptions
from flowtop.kernel.wire_records import KIND_DNS, KIND_TCP_FIRST, WirePacket
from flowtop.kernel.wirecapture import WireCapture

from . import netns
from .netns import Capture, Netns, Pair, entered
from .test_l3 import Tun

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
A6, B6 = "fd00:200:1::1", "fd00:200:1::2"
EXTRA_PORT = 5353


@contextlib.contextmanager
def attached(
    options: ProgramOptions, ns: Netns, ifname: str
) -> Iterator[tuple[TcProgram, WireCapture]]:
    prog = TcProgram(options)
    try:
        ring = prog.wire_ring_fd()
        assert ring is not None
        wire = WireCapture(ring)
        try:
            with entered(ns.name):
                att = TcAttacher(prog.fd)
            try:
                att.attach(ns.ifindex(ifname), ifname)
                yield prog, wire
            finally:
                att.detach_all()
                att.close()
        finally:
            wire.close()
    finally:
        prog.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    p = netns.make_pair(ipv6=True)
    try:
        yield p
    finally:
        p.delete()


@pytest.fixture(scope="module")
def names(pair: Pair) -> Iterator[tuple[TcProgram, WireCapture]]:
    """The program with names on (53 and EXTRA_PORT, a rate no test reaches) on a.va."""
    options = ProgramOptions(
        flow_map_size=4096, wire=WireOptions(dns_ports=(EXTRA_PORT,), rate=1_000_000)
    )
    with attached(options, pair.a, "va") as got:
        yield got


def read_all(wire: WireCapture, settle: float = 0.2) -> list[WirePacket]:
    time.sleep(settle)
    out: list[WirePacket] = []
    while batch := wire.read(1000):
        out.extend(batch)
    return out


def addr16(text: str) -> bytes:
    raw = ipaddress.ip_address(text).packed
    return raw + bytes(16 - len(raw))


def flow_key(
    ifindex: int, direction: int, proto: int, src: str, dst: str, sport: int, dport: int
) -> bytes:
    version = ipaddress.ip_address(src).version
    return struct.pack(
        "<IBBBx16s16sHHHxx",
        ifindex, direction, version, proto, addr16(src), addr16(dst), sport, dport, 0,
    )  # fmt: skip


def dns_response(name: str, n_records: int = 1, qid: int = 4242) -> tuple[bytes, bytes]:
    """(query, response) wire bytes; the response has n_records A records."""
    q = dns.message.make_query(name, "A", id=qid)
    r = dns.message.make_response(q)
    addrs = [f"192.0.2.{i % 250 + 1}" for i in range(n_records)]
    r.answer.append(dns.rrset.from_text_list(name + ".", 300, "IN", "A", addrs))
    return q.to_wire(), r.to_wire()


def udp_socket(ns: Netns, family: int, bind: tuple[str, int]) -> socket.socket:
    with entered(ns.name):
        s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(bind)
    s.settimeout(2)
    return s


def exchange(
    pair: Pair, port: int, responses: list[bytes], v6: bool = False
) -> tuple[int, list[bytes]]:
    """A client in a sends one query per response to b:port, the server in b
    answers each with its bytes; returns (the client's port, queries sent)."""
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    a, b = (A6, B6) if v6 else (A4, B4)
    srv = udp_socket(pair.b, fam, (b, port))
    cli = udp_socket(pair.a, fam, (a, 0))
    queries = []
    try:
        for i, resp in enumerate(responses):
            q = dns.message.make_query(f"q{i}.example", "A").to_wire()
            cli.sendto(q, (b, port))
            queries.append(q)
            got, peer = srv.recvfrom(4096)
            assert got == q
            srv.sendto(resp, peer)
            assert cli.recv(65536) == resp
        return cli.getsockname()[1], queries
    finally:
        srv.close()
        cli.close()


def test_dns_responses_over_udp(pair: Pair, names: tuple[TcProgram, WireCapture]) -> None:
    prog, wire = names
    read_all(wire, 0)
    before = prog.counters()
    responses = [dns_response("www.example.com", n)[1] for n in (1, 3, 80)]
    assert len(responses[2]) > 1000  # more than one old 512-byte UDP message
    cport, _queries = exchange(pair, 53, responses)
    v6port, _ = exchange(pair, 53, [responses[0]], v6=True)
    got = read_all(wire)
    va = pair.a.ifindex("va")
    want4 = flow_key(va, layout.DIR_INGRESS, 17, B4, A4, 53, cport)
    want6 = flow_key(va, layout.DIR_INGRESS, 17, B6, A6, 53, v6port)
    # One event per response, none for the queries (they go *to* port 53).
    assert [(p.key, p.kind, p.seq) for p in got] == [(want4, KIND_DNS, 0)] * 3 + [
        (want6, KIND_DNS, 0)
    ]
    assert [p.payload for p in got] == [*responses, responses[0]]
    assert [p.payload_len for p in got] == [len(r) for r in (*responses, responses[0])]
    after = prog.counters()
    assert after["wire_events"] - before["wire_events"] == 4
    assert after["wire_rate_limited"] == before["wire_rate_limited"]
    assert after["wire_ring_full"] == before["wire_ring_full"]


def test_dns_extra_port_and_others(pair: Pair, names: tuple[TcProgram, WireCapture]) -> None:
    _prog, wire = names
    read_all(wire, 0)
    resp = dns_response("extra.example")[1]
    cport, _ = exchange(pair, EXTRA_PORT, [resp])
    exchange(pair, EXTRA_PORT + 1, [resp])  # not a configured port
    got = read_all(wire)
    va = pair.a.ifindex("va")
    assert [(p.key, p.kind, p.payload, p.payload_len) for p in got] == [
        (flow_key(va, layout.DIR_INGRESS, 17, B4, A4, EXTRA_PORT, cport), KIND_DNS, resp, len(resp))
    ]


def client_hello(server_name: str) -> bytes:
    """The TLS ClientHello Python's ssl sends for server_name (no server needed)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and server_name.encode() in hello
    return hello


class TcpPeers:
    """A listening socket in b and a client in a, connected; the server side."""

    def __init__(self, pair: Pair, port: int) -> None:
        with entered(pair.b.name):
            self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((B4, port))
        self.lsock.listen(4)
        with entered(pair.a.name):
            self.cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cli.settimeout(2)
        self.cli.connect((B4, port))
        self.srv, _ = self.lsock.accept()
        self.srv.settimeout(2)
        self.srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port

    @property
    def cport(self) -> int:
        return int(self.cli.getsockname()[1])

    def send(self, data: bytes) -> None:
        """The client sends data; the server reads all of it (one segment each:
        TCP_NODELAY, and the previous one acknowledged before)."""
        self.cli.sendall(data)
        got = b""
        while len(got) < len(data):
            got += self.srv.recv(65536)
        assert got == data
        time.sleep(0.05)

    def reply(self, data: bytes) -> None:
        self.srv.sendall(data)
        got = b""
        while len(got) < len(data):
            got += self.cli.recv(65536)
        time.sleep(0.05)

    def close(self) -> None:
        for s in (self.cli, self.srv, self.lsock):
            s.close()


def syn_seq(frames: list[netns.Captured], cport: int) -> int:
    """The client's ISN: the sequence number of its SYN on va (outgoing)."""
    for f in frames:
        ip = f.ip()
        if ip and f.outgoing and ip[2] == 6 and ip[5] == cport:
            tcp = f.data[14 + 20 :]
            if tcp[13] & 0x12 == 0x02:
                return int(struct.unpack("!I", tcp[4:8])[0])
    raise AssertionError(f"no SYN from port {cport} captured")


def test_new_tcp_connection_first_segments(
    pair: Pair, names: tuple[TcProgram, WireCapture]
) -> None:
    _prog, wire = names
    read_all(wire, 0)
    hello = client_hello("sni.example.test")
    with Capture(pair.a, "va") as cap:
        peers = TcpPeers(pair, 8443)
        try:
            peers.send(hello)
            peers.reply(b"S" * 300)  # the server's data: never handed up
            peers.send(b"B" * 100)
            peers.send(b"C" * 100)  # a third segment: not handed up
            cport = peers.cport
        finally:
            peers.close()
        frames = cap.stop()
    isn = syn_seq(frames, cport)
    got = read_all(wire)
    key = flow_key(pair.a.ifindex("va"), layout.DIR_EGRESS, 6, A4, B4, cport, 8443)
    assert [(p.key, p.kind, p.seq, p.payload, p.payload_len) for p in got] == [
        (key, KIND_TCP_FIRST, (isn + 1) & 0xFFFFFFFF, hello, len(hello)),
        (key, KIND_TCP_FIRST, (isn + 1 + len(hello)) & 0xFFFFFFFF, b"B" * 100, 100),
    ]


def test_client_hello_split_over_two_segments(
    pair: Pair, names: tuple[TcProgram, WireCapture]
) -> None:
    _prog, wire = names
    read_all(wire, 0)
    hello = client_hello("split.example.test")
    with Capture(pair.a, "va") as cap:
        peers = TcpPeers(pair, 8444)
        try:
            peers.send(hello[:100])
            peers.send(hello[100:])
            cport = peers.cport
        finally:
            peers.close()
        frames = cap.stop()
    isn = syn_seq(frames, cport)
    got = read_all(wire)
    assert [p.kind for p in got] == [KIND_TCP_FIRST] * 2
    assert [p.seq for p in got] == [(isn + 1) & 0xFFFFFFFF, (isn + 101) & 0xFFFFFFFF]
    assert b"".join(p.payload for p in got) == hello


def test_connection_older_than_the_program_is_not_handed_up(pair: Pair) -> None:
    """Its SYN was not seen: nothing of it goes up, though its packets count."""
    peers = TcpPeers(pair, 8445)
    try:
        options = ProgramOptions(flow_map_size=4096, wire=WireOptions(rate=1_000_000))
        with attached(options, pair.a, "va") as (prog, wire):
            peers.send(client_hello("old.example.test"))
            peers.send(b"x" * 50)
            got = read_all(wire)
            counters = prog.counters()
            flows = prog.drain_flows()
    finally:
        peers.close()
    assert got == []
    assert counters["wire_events"] == 0
    packets = sum(int(s["packets"]) for keys, stats in flows for s in stats)
    assert packets >= 4  # two data segments, their ACKs: seen and counted


def test_l3_pair_hands_up_dns_responses() -> None:
    ns = Netns.create("tun", ipv6=False)
    try:
        tun = Tun(ns, "ftw0")
        try:
            tun.up("10.201.0.1/24")
            options = ProgramOptions(flow_map_size=4096, wire=WireOptions(rate=1_000_000))
            with attached(options, ns, "ftw0") as (prog, wire):
                _q, resp = dns_response("tun.example")
                pkts = [
                    bytes(
                        IP(src="10.201.0.2", dst="10.201.0.1")
                        / UDP(sport=53, dport=40000 + i)
                        / resp
                    )
                    for i in range(3)
                ]
                # A query into the tunnel (to port 53): not a response.
                query = IP(src="10.201.0.2", dst="10.201.0.1") / UDP(sport=40009, dport=53) / _q
                for pkt in (*pkts, bytes(query)):
                    tun.write(pkt)
                got = read_all(wire)
                counters = prog.counters()
                ifindex = ns.ifindex("ftw0")
        finally:
            tun.close()
    finally:
        ns.delete()
    want = [
        flow_key(ifindex, layout.DIR_INGRESS, 17, "10.201.0.2", "10.201.0.1", 53, 40000 + i)
        for i in range(3)
    ]
    assert [(p.key, p.kind, p.payload, p.payload_len) for p in got] == [
        (k, KIND_DNS, resp, len(resp)) for k in want
    ]
    assert counters["wire_events"] == 3


def burst(pair: Pair, n: int, resp: bytes) -> tuple[int, float]:
    """n DNS responses b:53 -> a from one CPU as fast as they go; returns the
    client's port and the seconds the burst took."""
    srv = udp_socket(pair.b, socket.AF_INET, (B4, 53))
    cli = udp_socket(pair.a, socket.AF_INET, (A4, 0))
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    mask = os.sched_getaffinity(0)
    # One CPU: the sender's egress and the veth peer's ingress run on it, so
    # one CPU's token bucket sees the whole burst.
    os.sched_setaffinity(0, {min(mask)})
    try:
        t0 = time.monotonic()
        for _ in range(n):
            srv.sendto(resp, cli.getsockname())
        elapsed = time.monotonic() - t0
        for _ in range(n):
            assert cli.recv(65536) == resp
        return cli.getsockname()[1], elapsed
    finally:
        os.sched_setaffinity(0, mask)
        srv.close()
        cli.close()


def flow_packets(prog: TcProgram, key: bytes) -> int:
    total = 0
    for keys, stats in prog.drain_flows():
        raw = keys.view(f"V{layout.FLOW_KEY.itemsize}")
        for i in range(len(keys)):
            if bytes(raw[i]) == key:
                total += int(stats[i]["packets"])
    return total


def test_rate_limit(pair: Pair) -> None:
    rate, n = 50, 400
    options = ProgramOptions(flow_map_size=4096, wire=WireOptions(rate=rate))
    with attached(options, pair.a, "va") as (prog, wire):
        resp = dns_response("burst.example")[1]
        cport, elapsed = burst(pair, n, resp)
        got = read_all(wire)
        counters = prog.counters()
        packets = flow_packets(prog, flow_key(pair.a.ifindex("va"), 0, 17, B4, A4, 53, cport))
    handed, limited = counters["wire_events"], counters["wire_rate_limited"]
    assert handed + limited == n and counters["wire_ring_full"] == 0, counters
    # The bucket starts full (one second's worth: `rate` events) and gains one
    # event per 1/rate s on the coarse clock (a tick late at most).
    assert rate <= handed <= rate + int((elapsed + 0.02) * rate) + 1, (handed, elapsed)
    assert len(got) == handed and all(p.payload == resp for p in got)
    assert packets == n  # every packet in its flow all the same


def test_full_ring(pair: Pair) -> None:
    n, cap = 200, 256
    options = ProgramOptions(
        flow_map_size=4096, wire=WireOptions(rate=1_000_000, cap=cap, ring_bytes=4 * 4096)
    )
    with attached(options, pair.a, "va") as (prog, wire):
        resp = dns_response("full.example", 20)[1]
        assert len(resp) > cap
        cport, _elapsed = burst(pair, n, resp)  # the ring is not read meanwhile
        c1 = prog.counters()
        got = read_all(wire, 0)
        # Read: there is room again.
        _, _ = burst(pair, 5, resp)
        got2 = read_all(wire)
        c2 = prog.counters()
        key = flow_key(pair.a.ifindex("va"), 0, 17, B4, A4, 53, cport)
        flows = prog.drain_flows()
    assert c1["wire_events"] + c1["wire_ring_full"] == n and c1["wire_rate_limited"] == 0, c1
    # Records of 8 + 64 + 256 bytes: 49 fit in 16 KiB.
    assert c1["wire_events"] == (4 * 4096) // (8 + 64 + cap), c1
    assert len(got) == c1["wire_events"]
    assert all((p.key, p.payload, p.payload_len) == (key, resp[:cap], len(resp)) for p in got)
    assert len(got2) == 5 and c2["wire_ring_full"] == c1["wire_ring_full"]
    assert wire.counters() == {"wire_malformed": 0}
    packets = sum(
        int(s["packets"])
        for keys, stats in flows
        for k, s in zip(keys.view(f"V{layout.FLOW_KEY.itemsize}"), stats, strict=True)
        if bytes(k) == key
    )
    assert packets == n
