"""numpy mirrors of the structs in bpf/flowtop.h (the source of truth).

tests/kernel/test_layout.py checks these against the ctypes types bcc builds
from the header, field by field and offset by offset. FLOW_KEY_WORDS says
where each FLOW_KEY member sits in the key's six uint64 words; every reader
of raw key words goes through it, so a key member is added here and in C only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import numpy as np

from flowtop.kernel import counters

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


@dataclass(frozen=True, slots=True)
class KeyField:
    """Where one scalar key member sits in a key's little-endian uint64 words:
    its value is (words[:, word] >> shift) & mask."""

    word: int
    shift: int
    mask: int

    @property
    def bits(self) -> int:
        """The member's bits in place in its word."""
        return self.mask << self.shift


@dataclass(frozen=True)
class KeyWords:
    """A key dtype read as (n, count) little-endian uint64 words, every word,
    shift and mask derived from the dtype's member offsets and sizes.

    This is how the flow table, its hash index, the filter language, the
    view's group-by and the TCP health join read FLOW_KEY (FLOW_KEY_WORDS):
    shifting and masking plain words is several times cheaper than gathering
    structured records. Scalar members (fields) must lie within one word,
    byte members of whole words (spans: the addresses) on word boundaries;
    of() fails with an AssertionError otherwise.
    """

    dtype: np.dtype
    count: int  # words per key
    fields: Mapping[str, KeyField]  # scalar members
    spans: Mapping[str, slice]  # members of whole words (addresses): their words

    @classmethod
    def of(cls, dtype: np.dtype) -> KeyWords:
        assert dtype.fields is not None, f"{dtype} is not a struct"
        assert dtype.itemsize % 8 == 0, f"a {dtype.itemsize}-byte key is not whole words"
        fields: dict[str, KeyField] = {}
        spans: dict[str, slice] = {}
        for name, (sub, off, *_) in dtype.fields.items():
            size = sub.itemsize
            if sub.kind == "V":  # bytes (V16 addresses) are read as whole words
                assert off % 8 == 0 and size % 8 == 0, (
                    f"key member {name} (bytes {off}..{off + size}) is not whole words"
                )
                spans[name] = slice(off // 8, (off + size) // 8)
                continue
            assert sub.kind in "ui" and size <= 8, f"key member {name} is not an integer"
            assert sub.byteorder in "<|" or (sub.byteorder == "=" and sys.byteorder == "little"), (
                f"key member {name} is not little-endian"
            )
            assert off // 8 == (off + size - 1) // 8, (
                f"key member {name} (bytes {off}..{off + size}) straddles a 64-bit word"
            )
            fields[name] = KeyField(off // 8, off % 8 * 8, (1 << 8 * size) - 1)
        return cls(dtype, dtype.itemsize // 8, MappingProxyType(fields), MappingProxyType(spans))

    def view(self, keys: np.ndarray) -> np.ndarray:
        """Key records as (n, count) uint64 words (a view when contiguous)."""
        if keys.dtype.itemsize != self.dtype.itemsize:
            raise TypeError(f"{keys.dtype.itemsize}-byte keys, not {self.dtype.itemsize}")
        out: np.ndarray = np.ascontiguousarray(keys).view("<u8").reshape(-1, self.count)
        return out

    def field(self, words: np.ndarray, name: str) -> np.ndarray:
        """A scalar member of every key, as uint64."""
        f = self.fields[name]
        out: np.ndarray = (words[:, f.word] >> np.uint64(f.shift)) & np.uint64(f.mask)
        return out

    def set_field(self, words: np.ndarray, name: str, values: np.ndarray) -> None:
        """Overwrite a scalar member of every key, in place (values are masked)."""
        f = self.fields[name]
        v = (np.asarray(values).astype(np.uint64) & np.uint64(f.mask)) << np.uint64(f.shift)
        words[:, f.word] = (words[:, f.word] & ~np.uint64(f.bits)) | v

    def span(self, words: np.ndarray, name: str) -> np.ndarray:
        """(n, k) words of a whole-word member (src, dst), memory order."""
        out: np.ndarray = words[:, self.spans[name]]
        return out

    def mask(self, names: Iterable[str]) -> np.ndarray:
        """(count,) uint64 with the bits of the named members set: `words &
        mask` keeps those members and zeroes the rest (group-by identities)."""
        out = np.zeros(self.count, dtype=np.uint64)
        for name in names:
            if name in self.spans:
                out[self.spans[name]] = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
            else:
                f = self.fields[name]
                out[f.word] |= np.uint64(f.bits)
        return out

    def reversed(self, words: np.ndarray) -> np.ndarray:
        """The same keys seen from the other end: src/dst and sport/dport
        swapped, every other member kept."""
        out = words.copy()
        src, dst = self.spans["src"], self.spans["dst"]
        out[:, src], out[:, dst] = words[:, dst], words[:, src]
        sport, dport = self.field(words, "sport"), self.field(words, "dport")
        self.set_field(out, "sport", dport)
        self.set_field(out, "dport", sport)
        return out


FLOW_KEY_WORDS = KeyWords.of(FLOW_KEY)

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


# FLOW_STATS.tcp_flags: FT_TCP_SYN_ONLY, above the TCP flags byte: the flow
# sent a SYN without ACK (its source is the connection's client).
TCP_SYN_ONLY = 1 << 8
TCP_WIRE_FLAGS = 0xFF  # the TCP header's flags byte (FIN .. CWR)
_Flags = TypeVar("_Flags", int, np.ndarray)


def tcp_wire_flags(flags: _Flags) -> _Flags:
    """The TCP flags as on the wire (FT_TCP_SYN_ONLY off): what is shown and exported."""
    return flags & TCP_WIRE_FLAGS


FLOW_CACHE_ENTRY = np.dtype([("key", FLOW_KEY), ("stats", FLOW_STATS)])

IFACE_KEY = np.dtype([("ifindex", "<u4"), ("direction", "u1"), ("family", "u1"), ("pad", "<u2")])
IFACE_STATS = np.dtype([("packets", "<u8"), ("bytes", "<u8")])


# FT_IFACE_SLOT()'s slots per ifindex: each direction, each family.
IFACE_SLOTS_PER = len(DIRECTIONS) * len(FAMILIES)


def iface_slot(ifindex: int, direction: int, family: int) -> int:
    """FT_IFACE_SLOT() of flowtop.h: index into a CPU's row of the
    iface_slots array (row cpu starts at cpu * FT_IFACE_SLOTS * 6)."""
    return ifindex * IFACE_SLOTS_PER + direction * len(FAMILIES) + family


# enum ft_counter, in order (the TC program's counter array), and the kernel
# counters of packets that are in no flow (README.md, "What is counted"):
# both described in counters.py.
COUNTERS = counters.TC_COUNTERS
NOT_IN_FLOW = counters.NOT_IN_FLOW

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
        # 0, or 1 + the CPU whose tcp_pkts row may hold the direction's
        # sequence progress (kernel only)
        ("defer_cpu", "<u2"),
        ("seq_end", "<u4"),
        ("ts_last", "<u4"),
        ("ts_pending", "<u4"),
        # nonzero, set when the half is first seen: tcp_pkts entries whose
        # stamp differs belong to an earlier connection on the 4-tuple
        ("stamp", "<u4"),
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

# Mirrors struct ft_tcp_pkt of bpf/tcprtt.h: the tcp_pkts map, a plain array
# of cpu_ids() rows of cache_slots entries (index cpu * cache_slots + slot),
# the last TCP packet of a flow on a CPU and the flow's data segments that
# CPU counted there rather than in the connection entry (deferred, for the
# half whose stamp it carries; tcpconn.add_deferred adds them up).
TCP_SEG = np.dtype(
    [("seq", "<u4"), ("tsval", "<u4"), ("tsecr", "<u4"), ("has_ts", "u1"), ("pad", "V3")]
)
TCP_PKT = np.dtype(
    [
        ("key", FLOW_KEY),
        ("deferred", "<u8"),  # data segments counted here, not in the half's data_segs
        ("stamp", "<u4"),  # the TCP_HALF.stamp they belong to; 0: none
        ("seq_end", "<u4"),
        ("now", "<u8"),
        ("segs", "<u4"),
        ("payload", "<u4"),
        ("flags", "u1"),
        ("comparable", "u1"),
        ("skip_echo", "u1"),
        ("owner", "u1"),
        ("seg", TCP_SEG),
        ("pad", "<u4"),
    ]
)
assert TCP_SEG.itemsize == 16
assert TCP_PKT.itemsize == 104
