"""Interface counters exporters send (sFlow counter samples, generic interface
counters: counter record format 1), as the fleet's interface rows.

Each (exporter address, sub-agent, ifIndex) is the synthetic interface its
flows are keyed on (ifmap.py: the same index and name), so an interface row
and the flows on it agree. Totals start at the device's own counters when
first heard (what `ip -s link` on it says) and then grow by each newer
sample's increase: a 32-bit packet counter that wraps adds what it counted
past 2^32, a 64-bit octet counter that goes back was reset and adds its new
value, a counter the agent does not support (all ones, as sFlow agents send
it) adds nothing. Packets are unicast + multicast + broadcast.

Samples are ordered by their counter sample's sequence number (per
interface): a repeated or older one (behind by at most LATE_WINDOW) is
ignored; one far behind is an agent restart and counts from zero again.
Bounded by the interface map's cap: past it a sample is dropped and counted
(listen_ifindex_exhausted), never silently.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from flowtop.core.model import InterfaceCounters
from flowtop.listen import counters as lc
from flowtop.listen.exporters import LATE_WINDOW, MODULUS
from flowtop.listen.ifmap import OVERFLOW, IfMap

# sFlow v5 counter record format 1 (if_counters, 88 bytes): ifIndex, ifType,
# ifSpeed, ifDirection, ifStatus, ifInOctets, ifInUcastPkts,
# ifInMulticastPkts, ifInBroadcastPkts, ifInDiscards, ifInErrors,
# ifInUnknownProtos, ifOutOctets, ifOutUcastPkts, ifOutMulticastPkts,
# ifOutBroadcastPkts, ifOutDiscards, ifOutErrors, ifPromiscuousMode
IF_COUNTERS = struct.Struct("!IIQIIQIIIIIIQIIIIII")
assert IF_COUNTERS.size == 88
FAMILY = "all"  # InterfaceCounters.family: one row per interface, every protocol


class IfSample(NamedTuple):
    """One generic interface counters record, with its sample's sequence number."""

    seq: int
    ifindex: int
    iftype: int
    speed: int
    direction: int
    status: int
    in_octets: int
    in_ucast: int
    in_mcast: int
    in_bcast: int
    in_discards: int
    in_errors: int
    in_unknown: int
    out_octets: int
    out_ucast: int
    out_mcast: int
    out_bcast: int
    out_discards: int
    out_errors: int
    promiscuous: int


# The counters summed, and their widths: rx octets, rx unicast/multicast/
# broadcast packets, tx the same.
_READ = (
    *("in_octets", "in_ucast", "in_mcast", "in_bcast"),
    *("out_octets", "out_ucast", "out_mcast", "out_bcast"),
)
_BITS = (64, 32, 32, 32, 64, 32, 32, 32)


def _values(s: IfSample) -> tuple[int | None, ...]:
    """The summed counters of s; None where the agent sent all ones (unsupported)."""
    out = []
    for name, bits in zip(_READ, _BITS, strict=True):
        v = getattr(s, name)
        out.append(None if v == (1 << bits) - 1 else v)
    return tuple(out)


@dataclass(slots=True)
class _State:
    seq: int
    last: tuple[int | None, ...]
    totals: list[int] = field(default_factory=lambda: [0] * len(_READ))


class IfCounters:
    """Interface counters of every exporter heard from, by synthetic ifindex."""

    def __init__(self, ifmap: IfMap) -> None:
        self.ifmap = ifmap
        self._by_index: dict[int, _State] = {}

    def __len__(self) -> int:
        return len(self._by_index)

    def update(
        self, address: str, sub_agent: int, samples: list[IfSample], counters: dict[str, int]
    ) -> None:
        for s in samples:
            index = self.ifmap.one(address, sub_agent, s.ifindex)
            if index == OVERFLOW:
                counters[lc.IFINDEX_EXHAUSTED] += 1
                continue
            counters[lc.IF_SAMPLES] += 1
            cur = _values(s)
            st = self._by_index.get(index)
            if st is None:
                st = self._by_index[index] = _State(s.seq, cur)
                _add(st, cur, (None,) * len(cur))
                continue
            gap = (s.seq - st.seq) % MODULUS
            if gap == 0 or (gap >= MODULUS // 2 and MODULUS - gap <= LATE_WINDOW):
                continue  # repeated, or older than what was applied
            restart = gap >= MODULUS // 2
            _add(st, cur, (None,) * len(cur) if restart else st.last)
            st.seq, st.last = s.seq, cur

    def interface_counters(self) -> list[InterfaceCounters]:
        names = self.ifmap.names()
        out = []
        for index in sorted(self._by_index):
            t = self._by_index[index].totals
            out.append(
                InterfaceCounters(
                    index, names[index], FAMILY, t[1] + t[2] + t[3], t[0], t[5] + t[6] + t[7], t[4]
                )
            )
        return out


def _add(st: _State, cur: tuple[int | None, ...], last: tuple[int | None, ...]) -> None:
    """st's totals grown by what each counter counted from last to cur."""
    for i, (c, p, bits) in enumerate(zip(cur, last, _BITS, strict=True)):
        if c is None:
            continue
        if p is None:
            st.totals[i] += c
        elif bits == 32:
            st.totals[i] += (c - p) % (1 << 32)
        else:
            st.totals[i] += c - p if c >= p else c  # a 64-bit counter going back: reset
