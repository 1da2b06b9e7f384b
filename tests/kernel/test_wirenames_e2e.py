"""Names from the wire, end to end: `flowtop dump --json` on a router names
the flows it forwards after the DNS answers, TLS ClientHellos and HTTP
requests that crossed it, and a flowtop on the client names the client's
own connections.

client (vc) <-> (vr1) router (vr2) <-> (vs) server

The server namespace runs a DNS server (dnspython) answering A and AAAA
records behind a CNAME chain, and TCP servers that read what they are sent.
The client asks, then connects to the answered address: a plain TCP
connection (named by DNS), a TLS ClientHello with a server name (SNI,
preferred over DNS for that connection), a ClientHello split over two
segments, and an HTTP request with a Host header. And a burst of 100k DNS
responses with the rate limit out of the way: the full ring is counted and
survived.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.unit.wirenames_bytes import client_hello

from . import netns
from .dump import Collector
from .netns import Pair, Router

pytestmark = pytest.mark.kernel

C4, S4 = "10.200.2.1", "10.200.3.2"
C6, S6 = "fd00:200:2::1", "fd00:200:3::2"
NS4 = "10.200.3.53"  # the DNS server: an address no answer names
QNAME = "www.shop.example"
CNAME_END = "edge-7.cdn.example"


class ZoneServer:
    """A UDP DNS server in a thread: QNAME -> CNAME chain -> A S4 / AAAA S6,
    with the given TTL; other names NXDOMAIN. Counts the answers it sent."""

    def __init__(self, host: str, ttl: int, names: dict[str, tuple[str, str]]) -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.sock.settimeout(0.05)
        self.ttl = ttl
        self.names = names  # qname -> (A, AAAA) through CNAME_END
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            q = dns.message.from_wire(wire)
            r = dns.message.make_response(q)
            qn = q.question[0].name
            want = self.names.get(qn.to_text(omit_final_dot=True))
            if want is None:
                r.set_rcode(dns.rcode.NXDOMAIN)
            else:
                end = dns.name.from_text(CNAME_END)
                r.answer.append(dns.rrset.from_text(qn, self.ttl, "IN", "CNAME", end.to_text()))
                rdtype = q.question[0].rdtype
                addr = want[0] if rdtype == dns.rdatatype.A else want[1]
                r.answer.append(
                    dns.rrset.from_text(end, self.ttl, "IN", dns.rdatatype.to_text(rdtype), addr)
                )
            self.sock.sendto(r.to_wire(), peer)
            self.answers += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Sink:
    """A TCP server that accepts and reads everything (no TLS: the ClientHello
    is all the router needs to see)."""

    def __init__(self, host: str, port: int) -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.received = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    self.received += len(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def send_tcp(host: str, port: int, *parts: bytes, sport: int) -> None:
    """Connect from sport and send parts as separate segments (NODELAY and a
    pause between them), then close."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", sport))
        s.settimeout(5)
        s.connect((host, port))
        for p in parts:
            s.sendall(p)
            time.sleep(0.05)


def ask(server: str, qname: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(qname, rdtype)
    return dns.query.udp(q, server, timeout=3)


@pytest.fixture
def served(router: Router) -> Iterator[dict[str, Any]]:
    """DNS on S4:53 and S6:53, TCP sinks on 443, 8443 and 80 (v4) and 443 (v6)."""
    made: list[Any] = []
    add_dns_address(router)
    try:
        with netns.entered(router.server.name):
            names = {QNAME: (S4, S6), "short.shop.example": (S4, S6)}
            made.append(ZoneServer(NS4, 300, names))
            made.append(ZoneServer(S6, 300, names))
            for host, port in ((S4, 443), (S4, 8443), (S4, 80), (S4, 9000), (S6, 443)):
                made.append(Sink(host, port))
        yield {"router": router}
    finally:
        for m in made:
            m.close()


def add_dns_address(router: Router) -> None:
    """NS4 on the server's vs (the veths are NOARP: the router gets a static
    neighbour entry for it, as for the other addresses)."""
    router.server.ip("addr", "add", f"{NS4}/24", "dev", "vs")
    router.router.ip("neigh", "replace", NS4, "lladdr", router.ps.mac, "dev", "vr2")


def named(res: Any, **match: Any) -> dict[str, Any]:
    f = res.flow(**match)
    assert f is not None, (match, [x for x in res.flows if x.get("proto") == 6])
    return f


def test_router_names_forwarded_flows_from_dns_sni_and_http(
    router: Router, served: dict[str, Any]
) -> None:
    hello = client_hello("sni.shop.example")
    assert len(hello) > 200
    col = Collector(router.router, ["vr1", "vr2"]).start()
    on_client = Collector(router.client, ["vc"]).start()
    try:
        col.wait_ready()
        on_client.wait_ready()
        with netns.entered(router.client.name):
            a = ask(NS4, QNAME, "A")
            aaaa = ask(S6, QNAME, "AAAA")
            assert [r.rdtype for r in a.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
            assert aaaa.answer[-1][0].address == S6
            send_tcp(S4, 9000, b"plain bytes, no name in them", sport=41000)
            send_tcp(S6, 443, hello, sport=41001)
            send_tcp(S4, 443, hello, sport=41002)
            cut = 60  # inside the handshake, before the extensions
            send_tcp(S4, 8443, hello[:cut], hello[cut:], sport=41003)
            send_tcp(
                S4,
                80,
                b"GET /index.html HTTP/1.1\r\nHost: plain.shop.example:80\r\nAccept: */*\r\n\r\n",
                sport=41004,
            )
        time.sleep(2.5)  # two intervals: the names are joined to the flows' rows
    finally:
        res = col.stop()
        mine = on_client.stop()

    # a connection only DNS named: the queried name, on the server end, both ways
    f = named(res, iface="vr1", direction="ingress", src=C4, dst=S4, sport=41000, dport=9000)
    assert (f["dst_name"], f["name_source"]) == (QNAME, "dns"), f
    assert f["src_name"] is None, f
    back = named(res, iface="vr1", direction="egress", src=S4, dst=C4, sport=9000, dport=41000)
    assert (back["src_name"], back["name_source"]) == (QNAME, "dns"), back
    # IPv6 answers name IPv6 flows; SNI names its own connection, over DNS
    f = named(res, iface="vr2", direction="egress", src=C6, dst=S6, sport=41001, dport=443)
    assert (f["dst_name"], f["name_source"]) == ("sni.shop.example", "sni"), f
    f = named(res, iface="vr1", direction="ingress", src=C4, dst=S4, sport=41002, dport=443)
    assert (f["dst_name"], f["name_source"]) == ("sni.shop.example", "sni"), f
    f = named(res, iface="vr1", direction="ingress", src=C4, dst=S4, sport=41003, dport=8443)
    assert (f["dst_name"], f["name_source"]) == ("sni.shop.example", "sni"), f
    f = named(res, iface="vr1", direction="ingress", src=C4, dst=S4, sport=41004, dport=80)
    assert (f["dst_name"], f["name_source"]) == ("plain.shop.example", "http"), f
    # the client's own flowtop names its connections the same way
    f = named(mine, iface="vc", direction="egress", src=C4, dst=S4, sport=41000, dport=9000)
    assert (f["dst_name"], f["name_source"]) == (QNAME, "dns"), f
    f = named(mine, iface="vc", direction="egress", src=C4, dst=S4, sport=41003, dport=8443)
    assert (f["dst_name"], f["name_source"]) == ("sni.shop.example", "sni"), f
    f = named(mine, iface="vc", direction="egress", src=C4, dst=S4, sport=41004, dport=80)
    assert (f["dst_name"], f["name_source"]) == ("plain.shop.example", "http"), f
    # a flow to an address no answer named has no name (the DNS server's own)
    dnsflow = named(res, iface="vr1", direction="ingress", src=C4, dst=NS4, dport=53, proto=17)
    assert dnsflow["dst_name"] is None and dnsflow["name_source"] is None, dnsflow


def test_a_dns_name_expires_with_its_ttl(router: Router, tmp_path: Path) -> None:
    """TTL 3 (and [names] min_ttl below it): a connection made within the TTL
    is named, one made after it is not."""
    conf = tmp_path / "flowtop.toml"
    conf.write_text("[names]\nmin_ttl = 1\n")
    conf.chmod(0o600)
    made: list[Any] = []
    add_dns_address(router)
    try:
        with netns.entered(router.server.name):
            made.append(ZoneServer(NS4, 3, {QNAME: (S4, S6)}))
            made.append(Sink(S4, 9000))
        col = Collector(router.router, ["vr1"], ["--config", str(conf)]).start()
        try:
            col.wait_ready()
            with netns.entered(router.client.name):
                ask(NS4, QNAME, "A")
                send_tcp(S4, 9000, b"early", sport=42000)
                time.sleep(6)
                send_tcp(S4, 9000, b"late", sport=42001)
            time.sleep(2.5)
        finally:
            res = col.stop()
    finally:
        for m in made:
            m.close()
    early = named(res, iface="vr1", direction="ingress", src=C4, dst=S4, sport=42000, dport=9000)
    late = named(res, iface="vr1", direction="ingress", src=C4, dst=S4, sport=42001, dport=9000)
    assert (early["dst_name"], early["name_source"]) == (QNAME, "dns"), early
    assert late["dst_name"] is None and late["name_source"] is None, late


class TcpZoneServer(Sink):
    """A DNS-over-TCP server in a thread: any question gets `records` A
    records (S4 the last), the response written in two parts (NODELAY, a
    pause between them), so that it spans two segments."""

    def __init__(self, host: str, records: int) -> None:
        self.records = records
        self.sizes: list[int] = []  # the framed responses' sizes, as sent
        super().__init__(host, 53)

    def _read(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            n = int.from_bytes(conn.recv(2), "big")
            q = dns.message.from_wire(conn.recv(n))
            r = dns.message.make_response(q)
            addrs = [f"198.51.100.{i + 1}" for i in range(self.records - 1)] + [S4]
            r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", *addrs))
            wire = r.to_wire()
            framed = len(wire).to_bytes(2, "big") + wire
            half = len(framed) // 2
            conn.sendall(framed[:half])
            time.sleep(0.1)
            conn.sendall(framed[half:])
            self.sizes.append(len(framed))
            time.sleep(0.2)


def test_a_tcp_dns_response_over_two_segments_names_the_flow(router: Router) -> None:
    """A response of 60 A records over TCP (about 1 kB, written in two
    parts: two segments, the answered S4 in the second), seen on both of
    the router's legs: the client's next connection to S4 is named by it,
    and nothing is counted unparsed or malformed."""
    made: list[Any] = []
    add_dns_address(router)
    try:
        with netns.entered(router.server.name):
            srv = TcpZoneServer(NS4, 60)
            made += [srv, Sink(S4, 9000)]
        col = Collector(router.router, ["vr1", "vr2"]).start()
        try:
            col.wait_ready()
            with netns.entered(router.client.name):
                got = dns.query.tcp(
                    dns.message.make_query("bulk.shop.example", "A"), NS4, timeout=5
                )
                send_tcp(S4, 9000, b"after a big answer", sport=43000)
            time.sleep(2.5)
        finally:
            res = col.stop()
    finally:
        for m in made:
            m.close()
    assert S4 in {rd.address for rd in got.answer[0]} and len(got.answer[0]) == 60
    assert srv.sizes == [2 + 35 + 60 * 16], srv.sizes  # S4's record past the first half
    st = res.stats
    assert st["names_unparsed"] == 0 and st["names_malformed"] == 0, st
    f = named(res, iface="vr1", direction="ingress", src=C4, dst=S4, sport=43000, dport=9000)
    assert (f["dst_name"], f["name_source"]) == ("bulk.shop.example", "dns"), f


def test_a_burst_of_100k_dns_responses_is_counted_and_survived(
    quiet_pair: Pair, tmp_path: Path
) -> None:
    """100k DNS responses in a burst, every one of them a name to learn, with
    the kernel's rate limit out of the way: what the ring refused (if it
    filled) is counted, every response is either handed up, refused by the
    rate or refused by the full ring (exactly), the flow's counters stay
    exact, the names side parses what came up without one malformed, and
    the run ends normally with the name learnt."""
    n = 100_000
    p = quiet_pair
    conf = tmp_path / "flowtop.toml"
    conf.write_text("[names]\nrate = 1000000\n")
    conf.chmod(0o600)
    q = dns.message.make_query(QNAME, "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(QNAME + ".", 300, "IN", "A", "10.200.1.2"))
    wire = r.to_wire()
    with netns.entered(p.b.name):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("10.200.1.2", 53))
    with netns.entered(p.a.name):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.bind(("10.200.1.1", 40053))
    col = Collector(p.a, ["va"], ["--config", str(conf)]).start()
    try:
        col.wait_ready()
        t0 = time.monotonic()
        for _ in range(n):
            server.sendto(wire, ("10.200.1.1", 40053))
        sent_in = time.monotonic() - t0
        time.sleep(1.0)  # the reader catches up; then a flow to the answered address
        client.sendto(b"after the burst", ("10.200.1.2", 9999))
        time.sleep(2.5)
    finally:
        res = col.stop()
        server.close()
        client.close()
    f = res.flow(iface="va", direction="ingress", proto=17, sport=53, dport=40053)
    assert f is not None and f["packets"] == n, f
    st = res.stats
    up, limited, full = st["wire_events"], st["wire_rate_limited"], st["wire_ring_full"]
    assert up + limited + full == n, (st, sent_in)
    # Whether the ring fills depends on the reader's pace against this
    # Python sender's (since the bulk ring read it mostly keeps up); a
    # full ring counted exactly is tests/kernel/test_wirecapture.py's.
    assert up > 0, st
    assert st["names_malformed"] == 0 and st["names_dropped"] == 0, st
    after = res.flow(iface="va", direction="egress", proto=17, dport=9999)
    assert after is not None, res.flows
    assert (after["dst_name"], after["name_source"]) == (QNAME, "dns"), after
