"""Packets the TC program hands up for names from the wire (issue 16).

The TC program (bpf/tc.c) copies a bounded prefix of a few packets into a
ring buffer: DNS responses, the first data segments a new TCP
connection's client sends (for the TLS ClientHello's server name and the
HTTP Host header), and QUIC clients' Initial packets (the ClientHello in
them, wirenames/quic.py). kernel/wirecapture.py reads the ring and gives the
userspace side (flowtop/wirenames/) WirePackets; nothing else crosses.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

# WirePacket.kind
KIND_DNS = 1  # a DNS response: UDP or TCP from a DNS port (53 or a configured one)
KIND_TCP_FIRST = 2  # one of the first data segments of a new TCP connection, client to server
KIND_QUIC = 3  # a QUIC long-header Initial: UDP to 443, client to server (wirenames/quic.py)
_KINDS = frozenset((KIND_DNS, KIND_TCP_FIRST, KIND_QUIC))


class WirePacket(NamedTuple):
    """One packet from the ring, as userspace parses it (a NamedTuple: the
    reader makes one per record, up to tens of thousands a second, and a
    tuple is made in a third of a frozen dataclass's time).

    key is the packet's own 48-byte flow key (layout.FLOW_KEY: ifindex,
    direction, ip_version, proto, src/dst 16 bytes each with IPv4 in the
    first 4, ports in host order), so a name joins flows by the same bytes.
    payload is the L4 payload's first bytes (after the UDP or TCP header),
    at most the capture length; payload_len is the payload's whole length
    in the packet (larger when the capture was cut). seq is the TCP sequence
    number of the payload's first byte (0 for UDP), so that segments of one
    connection can be put in order.
    """

    key: bytes
    kind: int
    seq: int
    payload: bytes
    payload_len: int


# The header of one ring record (struct wire_event_hdr, bpf/flowtop.h),
# followed by cap_len payload bytes.
WIRE_EVENT_HDR = np.dtype(
    [
        ("key", "V48"),
        ("kind", "u1"),
        ("pad", "V3"),
        ("seq", "<u4"),
        ("payload_len", "<u4"),
        ("cap_len", "<u4"),
    ]
)
HDR_SIZE = WIRE_EVENT_HDR.itemsize
_HDR = struct.Struct("<48sB3xIII")
assert _HDR.size == HDR_SIZE


def encode(packet: WirePacket) -> bytes:
    """The ring record the TC program writes for packet (the inverse of
    decode; tests and benches build rings with it)."""
    head = _HDR.pack(packet.key, packet.kind, packet.seq, packet.payload_len, len(packet.payload))
    return head + packet.payload


def decode(record: bytes) -> WirePacket | None:
    """The WirePacket of one ring record; None when it is not one (shorter
    than its header, a length that disagrees, an unknown kind)."""
    got, _bad = decode_span(record, [0], [len(record)])
    return got[0] if got else None


def decode_span(
    span: bytes, offsets: list[int], lengths: list[int]
) -> tuple[list[WirePacket], int]:
    """The WirePackets of the records at offsets (each lengths[i] bytes)
    in span, in order, and how many were not one (as decode says): the
    reader's path (ringbuf.RingParser.read_span copies the records it takes
    in one span)."""
    out: list[WirePacket] = []
    append = out.append
    unpack = _HDR.unpack_from
    new = tuple.__new__  # what WirePacket(...) calls, without its Python frame
    bad = 0
    for at, length in zip(offsets, lengths, strict=True):
        if length < HDR_SIZE:
            bad += 1
            continue
        key, kind, seq, payload_len, cap_len = unpack(span, at)
        # The ring rounds nothing into the record itself: its bytes are exact.
        if length != HDR_SIZE + cap_len or cap_len > payload_len or kind not in _KINDS:
            bad += 1
            continue
        start = at + HDR_SIZE
        append(new(WirePacket, (key, kind, seq, span[start : start + cap_len], payload_len)))
    return out, bad
