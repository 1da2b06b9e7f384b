"""Packets the TC program hands up for names from the wire (issue 16).

The TC program (bpf/tc.c) copies a bounded prefix of a few packets into a
ring buffer: DNS responses, and the first data segments a new TCP
connection's client sends (for the TLS ClientHello's server name and the
HTTP Host header). kernel/wirecapture.py reads the ring and gives the
userspace side (flowtop/wirenames/) WirePackets; nothing else crosses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# WirePacket.kind
KIND_DNS = 1  # a DNS response: UDP or TCP from a DNS port (53 or a configured one)
KIND_TCP_FIRST = 2  # one of the first data segments of a new TCP connection, client to server


@dataclass(frozen=True, slots=True)
class WirePacket:
    """One packet from the ring, as userspace parses it.

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


def decode(record: bytes) -> WirePacket | None:
    """The WirePacket of one ring record; None when it is not one (shorter
    than its header, a length that disagrees, an unknown kind)."""
    if len(record) < HDR_SIZE:
        return None
    key, kind, seq, payload_len, cap_len = _HDR.unpack_from(record)
    # The ring rounds nothing into the record itself: its bytes are exact.
    if kind not in (KIND_DNS, KIND_TCP_FIRST) or len(record) != HDR_SIZE + cap_len:
        return None
    if cap_len > payload_len:
        return None
    return WirePacket(key, kind, seq, record[HDR_SIZE:], payload_len)
