"""Real packet payloads for the names-from-the-wire tests: DNS responses
built by dnspython, TLS ClientHellos written by Python's ssl (MemoryBIO, no
socket), HTTP request heads, and WirePackets carrying them."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import struct

import dns.message
import dns.rrset

from flowtop.kernel.layout import FLOW_KEY
from flowtop.kernel.wire_records import KIND_DNS, KIND_TCP_FIRST, WirePacket
from flowtop.wirenames.names import WireNames


def dns_response(qname: str, rrsets: list[tuple[str, int, str, list[str]]],
                 qtype: str = "A") -> bytes:  # fmt: skip
    """A response to a query for qname with the given answer rrsets
    (owner, ttl, type, rdatas), as dnspython writes it (names compressed)."""
    q = dns.message.make_query(qname, qtype)
    r = dns.message.make_response(q)
    for owner, ttl, rtype, rdatas in rrsets:
        r.answer.append(dns.rrset.from_text(owner, ttl, "IN", rtype, *rdatas))
    return r.to_wire()


def client_hello(server_hostname: str) -> bytes:
    """The first flight a TLS client sends: a real ClientHello with SNI."""
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def hostile_hello(raw_name: bytes) -> bytes:
    """A real ClientHello whose SNI bytes are replaced by raw_name (same
    length, so every length field stays right): what ssl would never send."""
    n = len(raw_name)
    labels = [b"a" * min(60, n - i) for i in range(0, n, 61)]
    placeholder = b".".join(labels)[:n]
    if placeholder.endswith(b"."):
        placeholder = placeholder[:-1] + b"a"
    hello = client_hello(placeholder.decode())
    assert hello.count(placeholder) == 1
    return hello.replace(placeholder, raw_name)


def http_request(host: str, path: str = "/") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.0\r\n"
            "Accept: */*\r\n\r\n").encode()  # fmt: skip


def flow_key(src: str, dst: str, sport: int, dport: int, proto: int = 6,
             ifindex: int = 2, direction: int = 0) -> bytes:  # fmt: skip
    """A layout.FLOW_KEY's bytes."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    k = bytearray(FLOW_KEY.itemsize)
    off = {n: FLOW_KEY.fields[n][1] for n in FLOW_KEY.names}  # type: ignore[index]
    struct.pack_into("<I", k, off["ifindex"], ifindex)
    k[off["direction"]], k[off["ip_version"]], k[off["proto"]] = direction, s.version, proto
    k[off["src"] : off["src"] + 16] = s.packed.ljust(16, b"\0")
    k[off["dst"] : off["dst"] + 16] = d.packed.ljust(16, b"\0")
    struct.pack_into("<HH", k, off["sport"], sport, dport)
    return bytes(k)


def dns_packet(server: str, client: str, wire: bytes, cport: int = 40000,
               tcp: bool = False) -> WirePacket:  # fmt: skip
    """A DNS response from server:53 to client, as the kernel hands it up."""
    payload = struct.pack("!H", len(wire)) + wire if tcp else wire
    key = flow_key(server, client, 53, cport, proto=6 if tcp else 17)
    return WirePacket(key, KIND_DNS, 0, payload, len(payload))


def first_packet(client: str, server: str, cport: int, sport: int, data: bytes,
                 seq: int = 1000, payload_len: int | None = None) -> WirePacket:  # fmt: skip
    key = flow_key(client, server, cport, sport)
    return WirePacket(key, KIND_TCP_FIRST, seq, data,
                      len(data) if payload_len is None else payload_len)  # fmt: skip


def cdn_response(i: int, ttls: list[int]) -> tuple[bytes, bytes]:
    """Response i of a resolver's mix (40 names, each a CNAME to one of 7 CDN
    names with two A records and one AAAA; TTLs ttls[0] on the CNAME, ttls[1]
    on the addresses) and its client (one of 4, 16 bytes as in a flow key)."""
    wire = dns_response(f"n{i % 40}.test", [
        (f"n{i % 40}.test.", ttls[0], "CNAME", [f"e{i % 7}.cdn.test."]),
        (f"e{i % 7}.cdn.test.", ttls[1], "A", [f"192.0.2.{i % 9}", f"198.51.100.{i % 5}"]),
        (f"e{i % 7}.cdn.test.", ttls[1], "AAAA", [f"2001:db8::{i % 3}"])])  # fmt: skip
    return wire, bytes([10, 0, i % 4, 1]) + bytes(12)


def assert_same_dns_entries(a: WireNames, b: WireNames) -> None:
    """a and b hold the same DNS entries: keys, names, CNAME ends, deadlines."""
    for w in (a, b):
        w._dns.flush()
    ra, rb = a._dns, b._dns
    assert ra.rows.keys() == rb.rows.keys() and len(ra.rows) > 20
    for key in ra.rows:
        i, j = ra.rows[key], rb.rows[key]
        assert a.names.get(int(ra.name[i])) == b.names.get(int(rb.name[j]))
        assert a.names.get(int(ra.cname[i])) == b.names.get(int(rb.cname[j]))
        assert ra.deadline[i] == rb.deadline[j]
