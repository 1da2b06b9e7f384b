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
        ("pad", "V7"),
    ]
)

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
