"""Hand-built IPFIX / NetFlow v9 / v5 messages for the listener's tests (RFC
7011, RFC 3954 and Cisco's v5 layout written out here field by field, not
through flowtop's own exporter, so a shared misreading cannot hide)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

Field = tuple[int, int] | tuple[int, int, int]  # (ie, length[, enterprise])


def ipfix_message(
    sets: Sequence[bytes], seq: int = 0, domain: int = 1, export: int = 1_000
) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), export, seq, domain) + body


def set_(set_id: int, payload: bytes, pad: int = 0) -> bytes:
    payload += b"\0" * pad
    return struct.pack("!HH", set_id, 4 + len(payload)) + payload


def specs(fields: Sequence[Field]) -> bytes:
    out = b""
    for f in fields:
        ie, length = f[0], f[1]
        if len(f) == 3:
            out += struct.pack("!HHI", ie | 0x8000, length, f[2])
        else:
            out += struct.pack("!HH", ie, length)
    return out


def template(tid: int, fields: Sequence[Field]) -> bytes:
    return struct.pack("!HH", tid, len(fields)) + specs(fields)


def options_template(tid: int, scope: Sequence[Field], fields: Sequence[Field]) -> bytes:
    return struct.pack("!HHH", tid, len(scope) + len(fields), len(scope)) + specs([*scope, *fields])


def withdrawal(tid: int) -> bytes:
    return struct.pack("!HH", tid, 0)


def ip4(a: str) -> bytes:
    return socket.inet_aton(a)


def ip6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


# A router-like IPv4 template: reduced-size counters (4 bytes), seconds times,
# an enterprise field and an unknown IANA one in between.
V4_FIELDS: list[Field] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (5, 1),
    (6, 1),
    (10, 4),
    (14, 4),
    (1, 4),
    (2, 4),
    (150, 4),
    (151, 4),
    (100, 2, 9),  # enterprise 9 element: skipped
    (89, 1),  # forwardingStatus: not read, skipped by length
]


def v4_record(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    proto: int,
    octets: int,
    packets: int,
    ingress: int = 1,
    egress: int = 2,
    start: int = 990,
    end: int = 999,
    flags: int = 0,
    tos: int = 0,
) -> bytes:
    return (
        ip4(src)
        + ip4(dst)
        + struct.pack("!HHBBB", sport, dport, proto, tos, flags)
        + struct.pack("!IIIIII", ingress, egress, octets, packets, start, end)
        + b"\xaa\xbb"
        + b"\x40"
    )


def v9_packet(
    flowsets: Sequence[bytes],
    seq: int = 0,
    source: int = 0,
    uptime: int = 100_000,
    unix: int = 1_000,
) -> bytes:
    return struct.pack("!HHIIII", 9, len(flowsets), uptime, unix, seq, source) + b"".join(flowsets)


def v9_options_template(tid: int, scope: Sequence[Field], fields: Sequence[Field]) -> bytes:
    return struct.pack("!HHH", tid, 4 * len(scope), 4 * len(fields)) + specs([*scope, *fields])


def v5_packet(
    records: Sequence[bytes],
    seq: int = 0,
    engine: tuple[int, int] = (0, 0),
    sampling: int = 0,
    uptime: int = 100_000,
    unix: int = 1_000,
) -> bytes:
    head = struct.pack("!HHIIIIBBH", 5, len(records), uptime, unix, 0, seq, *engine, sampling)
    return head + b"".join(records)


def v5_record(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    proto: int,
    octets: int,
    packets: int,
    ingress: int = 1,
    egress: int = 2,
    first: int = 90_000,
    last: int = 99_000,
    flags: int = 0,
) -> bytes:
    return (
        ip4(src)
        + ip4(dst)
        + ip4("0.0.0.0")
        + struct.pack("!HHIIII", ingress, egress, packets, octets, first, last)
        + struct.pack("!HHBBBB", sport, dport, 0, flags, proto, 0)
        + struct.pack("!HHBBH", 0, 0, 24, 24, 0)
    )


def sflow_datagram(samples: Sequence[bytes], seq: int = 0, sub_agent: int = 0) -> bytes:
    head = (
        struct.pack("!II", 5, 1)
        + ip4("192.0.2.99")
        + struct.pack("!IIII", sub_agent, seq, 1000, len(samples))
    )
    return head + b"".join(samples)


def sflow_raw_record(header: bytes, frame_length: int, proto: int = 1) -> bytes:
    padded = header + b"\0" * (-len(header) % 4)
    body = struct.pack("!IIII", proto, frame_length, 4, len(header)) + padded
    return struct.pack("!II", 1, len(body)) + body


def sflow_flow_sample(
    records: Sequence[bytes], rate: int, in_if: int = 3, out_if: int = 0, expanded: bool = False
) -> bytes:
    if expanded:
        body = struct.pack(
            "!IIIIIIIIIII", 1, 0, in_if, rate, 1000, 0, 0, in_if, 0, out_if, len(records)
        )
        tag = 3
    else:
        body = struct.pack("!IIIIIIII", 1, in_if, rate, 1000, 0, in_if, out_if, len(records))
        tag = 1
    body += b"".join(records)
    return struct.pack("!II", tag, len(body)) + body


def eth_ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: int, vlan: int = 0) -> bytes:
    eth = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01"
    if vlan:
        eth += struct.pack("!HH", 0x8100, vlan)
    eth += b"\x08\x00"
    ip = struct.pack("!BBHHHBBH", 0x45, 0x28, 28 + payload, 0, 0, 64, 17, 0) + ip4(src) + ip4(dst)
    return eth + ip + struct.pack("!HHHH", sport, dport, 8 + payload, 0)


def eth_ipv6_tcp(src: str, dst: str, sport: int, dport: int, payload: int, flags: int) -> bytes:
    eth = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x86\xdd"
    ip = struct.pack("!IHBB", 0x60000000, 20 + payload, 6, 64) + ip6(src) + ip6(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, flags, 1000, 0, 0)
    return eth + ip + tcp


def sflow_if_counters(
    ifindex: int,
    in_octets: int,
    in_pkts: tuple[int, int, int],
    out_octets: int,
    out_pkts: tuple[int, int, int],
    speed: int = 10**9,
) -> bytes:
    """A generic interface counters record (counter record format 1, 88
    bytes): packets as (unicast, multicast, broadcast)."""
    body = struct.pack("!IIQII", ifindex, 6, speed, 1, 3)
    body += (
        struct.pack("!Q", in_octets) + struct.pack("!III", *in_pkts) + struct.pack("!III", 0, 0, 0)
    )
    body += (
        struct.pack("!Q", out_octets) + struct.pack("!III", *out_pkts) + struct.pack("!II", 0, 0)
    )
    body += struct.pack("!I", 0)
    assert len(body) == 88
    return struct.pack("!II", 1, len(body)) + body


def sflow_counter_sample(
    records: Sequence[bytes], seq: int, source: int = 3, expanded: bool = False
) -> bytes:
    if expanded:
        body = struct.pack("!IIII", seq, 0, source, len(records))
        tag = 4
    else:
        body = struct.pack("!III", seq, source, len(records))
        tag = 2
    body += b"".join(records)
    return struct.pack("!II", tag, len(body)) + body
