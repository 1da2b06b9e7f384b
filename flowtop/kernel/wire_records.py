"""Packets the TC program hands up for names from the wire (issue 16).

The TC program (bpf/tc.c) copies a bounded prefix of a few packets into a
ring buffer: DNS responses, and the first data segments a new TCP
connection's client sends (for the TLS ClientHello's server name and the
HTTP Host header). kernel/wirecapture.py reads the ring and gives the
userspace side (flowtop/wirenames/) WirePackets; nothing else crosses.
"""

from __future__ import annotations

from dataclasses import dataclass

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
