"""numpy mirrors of the structs in bpf/flowtop.h (the source of truth).

tests/kernel/test_layout.py checks these against the ctypes types bcc builds
from the header, field by field and offset by offset.
"""

from __future__ import annotations

import numpy as np

DIR_INGRESS = 0
DIR_EGRESS = 1
DIRECTIONS = ("ingress", "egress")

FAMILY_OTHER = 0
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
FAMILIES = ("other", "ipv4", "ipv6")

FLOW_KEY = np.dtype(
    [
        ("ifindex", "<u4"),
        ("direction", "u1"),
        ("ip_version", "u1"),
        ("proto", "u1"),
        ("pad0", "u1"),
        ("src", "V16"),
        ("dst", "V16"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("vlan", "<u2"),
        ("pad1", "<u2"),
    ]
)

FLOW_STATS = np.dtype(
    [
        ("packets", "<u8"),
        ("bytes", "<u8"),
        ("first_seen_ns", "<u8"),
        ("last_seen_ns", "<u8"),
        ("tcp_flags", "<u8"),
        ("dscp", "u1"),
        ("pad", "V3"),
        ("mpls", "<u4"),  # MPLS_PRESENT | top label entry >> 8 of the last packet; 0 = none
    ]
)

# FLOW_STATS.mpls: FT_MPLS_PRESENT, and the 24 bits IPFIX's
# mplsTopLabelStackSection carries (label << 4 | traffic class << 1 | bottom).
MPLS_PRESENT = 1 << 24
MPLS_ENTRY_MASK = MPLS_PRESENT - 1


def mpls_label(mpls: int) -> int | None:
    """The 20-bit label of a FLOW_STATS.mpls value, None when there was none."""
    return (mpls & MPLS_ENTRY_MASK) >> 4 if mpls & MPLS_PRESENT else None


FLOW_CACHE_ENTRY = np.dtype([("key", FLOW_KEY), ("stats", FLOW_STATS)])

IFACE_KEY = np.dtype([("ifindex", "<u4"), ("direction", "u1"), ("family", "u1"), ("pad", "<u2")])
IFACE_STATS = np.dtype([("packets", "<u8"), ("bytes", "<u8")])


def iface_slot(ifindex: int, direction: int, family: int) -> int:
    """FT_IFACE_SLOT() of flowtop.h: index into the iface_slots array."""
    return ifindex * 6 + direction * 3 + family


# enum ft_counter, in order.
COUNTERS = (
    "flow_map_full",
    "lost_packets",
    "lost_bytes",
    "iface_map_full",
    "truncated",
    "malformed",
    "ipv6_ext_limit",
    "no_flow_map",
    "non_ip",
    "tcp_conn_new",
    "tcp_conn_map_full",
    "tcp_ts_stale",
    "no_ports",
    "mpls_limit",
    "net_seek_limit",
)

# Kernel counters of packets that are in no flow (each is one packet, except
# lost_packets, which counts the segments of failed inserts; flow_map_full
# counts those inserts and is left out so they are not counted twice). Over
# non-GSO traffic, the packets of every flow plus these equal the packets the
# programs saw (the interface counters), exactly. no_ports is not here: those
# packets are in a flow (README.md, "What is counted").
NOT_IN_FLOW = (
    "lost_packets",
    "truncated",
    "malformed",
    "ipv6_ext_limit",
    "no_flow_map",
    "non_ip",
    "mpls_limit",
    "net_seek_limit",
)

assert FLOW_KEY.itemsize == 48
assert FLOW_STATS.itemsize == 48
assert FLOW_CACHE_ENTRY.itemsize == 96
assert IFACE_KEY.itemsize == 8

# TCP health samples: what the sock_ops tracker (local sockets) and the TC
# program's passive RTT code (any TCP crossing an attached hook) report, one
# record per connection and sending direction, cumulative for the connection.
# key: a FLOW_KEY with ifindex=0, direction=0, vlan=0, proto=6; src/sport is
# the sender of the data the retransmit/segment counters describe (for
# sock_ops: the local socket), dst/dport its peer.
TCP_SOURCE_NONE = 0
TCP_SOURCE_SOCKOPS = 1
TCP_SOURCE_PASSIVE = 2
TCP_SOURCES = ("", "sockops", "passive")

TCP_SAMPLE = np.dtype(
    [
        ("key", FLOW_KEY),
        ("srtt_us", "<u4"),  # smoothed RTT of the whole path (both halves), 0 = none yet
        ("rttvar_us", "<u4"),
        ("min_rtt_us", "<u4"),  # minimum RTT seen on the connection, 0 = none yet
        ("rtt_samples", "<u4"),  # RTT samples so far (fresh sample: it grew)
        ("retrans", "<u8"),  # segments src retransmitted
        ("data_segs", "<u8"),  # data segments src sent (the ratio's denominator)
        ("rto", "<u4"),  # retransmission timeouts of src's socket (sock_ops only)
        ("source", "u1"),  # TCP_SOURCE_*
        ("server", "u1"),  # 1: dst is the server (src opened), 2: src is, 0: unknown
        ("state", "u1"),  # TCP state (sock_ops), 0 when unknown
        ("pad", "u1"),
        ("last_ns", "<u8"),  # CLOCK_MONOTONIC of the last update
    ]
)
assert TCP_SAMPLE.itemsize == 96

# Passive TCP tracking in the TC program (bpf/tcprtt.h): struct tcp_conn_key,
# struct tcp_half and struct tcp_conn of flowtop.h. Direction d of a
# connection goes from endpoint d (addr<d>, port<d>) to endpoint 1 - d.
TCP_CONN_KEY = np.dtype(
    [
        ("addr0", "V16"),
        ("addr1", "V16"),
        ("port0", "<u2"),
        ("port1", "<u2"),
        ("ip_version", "u1"),
        ("pad", "V3"),
    ]
)

HALF_SEEN = 0x01
HALF_SEQ = 0x02
HALF_TS = 0x04
HALF_FIN = 0x08
HALF_ACK_DUE = 0x10

TCP_HALF = np.dtype(
    [
        ("obs_ifindex", "<u4"),
        ("obs_hook", "u1"),
        ("flags", "u1"),
        ("pad", "V2"),
        ("seq_end", "<u4"),
        ("ts_last", "<u4"),
        ("ts_pending", "<u4"),
        ("pad2", "V4"),
        ("ts_time_ns", "<u8"),
        ("data_segs", "<u8"),
        ("retrans", "<u8"),
        ("last_ns", "<u8"),  # CLOCK_MONOTONIC_COARSE
    ]
)

TCP_RTT = np.dtype(
    [
        ("srtt_ns", "<u8"),  # box <-> the direction's receiver, smoothed; 0 = none
        ("mdev_ns", "<u8"),
        ("min_ns", "<u8"),
        ("next_start_ns", "<u8"),
        ("samples", "<u4"),
        ("pad", "V4"),
    ]
)

CONN_RST = 0x01
CONN_SYN_AGAIN = 0x02
CONN_SYNACK_AGAIN = 0x04

TCP_SIDE = np.dtype([("rtt", TCP_RTT), ("pad", "V24"), ("half", TCP_HALF)])

TCP_CONN = np.dtype(
    [
        ("syn_ns", "<u8"),  # handshake, CLOCK_MONOTONIC; 0 = not seen
        ("synack_ns", "<u8"),
        ("ack_ns", "<u8"),
        ("isn", "<u4"),
        ("client", "u1"),  # 0 unknown, 1: endpoint 0 sent the SYN, 2: endpoint 1
        ("flags", "u1"),
        ("pad", "V2"),
        ("side", TCP_SIDE, (2,)),  # index: direction
    ]
)
assert TCP_CONN_KEY.itemsize == 40
assert TCP_HALF.itemsize == 56
assert TCP_RTT.itemsize == 40
assert TCP_SIDE.itemsize == 120
assert TCP_CONN.itemsize == 272
