"""The fleet view's query side: received flows by exporter (--listen).

A received flow's key carries a synthetic ifindex (listen/ifmap.py) that
stands for (exporter address, observation domain, the exporter's own
ifindex). ExporterArrays keeps that mapping as arrays indexed by the
synthetic ifindex, so the filter terms `exporter ADDR|CIDR` and `ifindex N`
and the exporter group index them with the flows' ifindex column: a term
tests each exporter once (cached until new ones appear), never each flow.

The exporter group is per address: an exporter's observation domains are
folded into one row (its interfaces are told apart by `g i`, whose names
carry ADDR#DOMAIN/ifN). Flows past the interface cap (ifindex OVERFLOW)
and unknown indexes are the OTHER group.

ExporterRates turns the collector's per-exporter counters into the header's
line: records/s over the last interval, lost, estimated (sampled).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from flowtop.query.types import ExporterRow
from flowtop.sanitize import clean

OTHER = "(other)"  # the group of flows whose interface has no exporter entry


class FleetSource(Protocol):
    """What the view needs of the ListenCollector (listen/collector.py)."""

    def fleet_entries(self, start: int = 0) -> list[tuple[str, int, int]]: ...

    def exporters(self) -> list[dict[str, object]]: ...


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ExporterArrays:
    """Synthetic ifindex -> exporter id and the exporter's ifindex, as arrays
    (index 0 and indexes not handed out yet: exporter id 0, no exporter)."""

    def __init__(self, source: FleetSource) -> None:
        self.source = source
        self.addresses: list[str] = [OTHER]  # by exporter id; 0: none
        self._ids: dict[str, int] = {}
        self._eid = np.zeros(1, dtype=np.uint32)  # by synthetic ifindex
        self._ifindex = np.full(1, -1, dtype=np.int64)  # by synthetic ifindex; -1: none
        self._hits: dict[str, tuple[int, np.ndarray]] = {}

    def refresh(self) -> None:
        """Take the synthetic indexes the collector handed out since the last call."""
        new = self.source.fleet_entries(len(self._eid) - 1)
        if not new:
            return
        eids = np.empty(len(new), dtype=np.uint32)
        ifx = np.empty(len(new), dtype=np.int64)
        for j, (address, _domain, ifindex) in enumerate(new):
            eid = self._ids.get(address)
            if eid is None:
                eid = self._ids[address] = len(self.addresses)
                self.addresses.append(address)
            eids[j] = eid
            ifx[j] = ifindex
        self._eid = np.concatenate((self._eid, eids))
        self._ifindex = np.concatenate((self._ifindex, ifx))

    def _at(self, ifindex: np.ndarray) -> np.ndarray:
        """Positions in the per-index arrays (0 for an index without an entry)."""
        idx = ifindex.astype(np.int64)
        out: np.ndarray = np.where(idx < len(self._eid), idx, 0)
        return out

    def exporter_ids(self, ifindex: np.ndarray) -> np.ndarray:
        """Each flow's exporter id (0: none), from its key's ifindex."""
        out: np.ndarray = self._eid[self._at(ifindex)]
        return out

    def exporter_ifindex(self, ifindex: np.ndarray) -> np.ndarray:
        """Each flow's interface index on its exporter (-1: none)."""
        out: np.ndarray = self._ifindex[self._at(ifindex)]
        return out

    def in_network(self, net: Network, ifindex: np.ndarray) -> np.ndarray:
        """Flows whose exporter's address is in net."""
        key = str(net)
        n = len(self.addresses)
        got = self._hits.get(key)
        if got is None or got[0] != n:
            hit = np.array([_in(a, net) for a in self.addresses], dtype=np.bool_)
            hit[0] = False
            if len(self._hits) > 64:
                self._hits.clear()
            got = self._hits[key] = (n, hit)
        out: np.ndarray = got[1][self.exporter_ids(ifindex)]
        return out

    def address(self, eid: int) -> str:
        return self.addresses[eid] if 0 <= eid < len(self.addresses) else OTHER


def _in(address: str, net: Network) -> bool:
    try:
        return ipaddress.ip_address(address) in net
    except ValueError:  # OTHER
        return False


class ExporterRates:
    """Records/s per exporter between two updates, the header's line."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._last_time = 0.0

    def update(
        self, exporters: Sequence[Mapping[str, object]], now: float
    ) -> tuple[ExporterRow, ...]:
        dt = now - self._last_time if self._last_time else 0.0
        rows = []
        seen: dict[str, int] = {}
        for e in exporters:
            address = str(e["exporter"])
            records = int(e["records"])  # type: ignore[call-overload]
            prev = self._last.get(address)
            rate = max(0, records - prev) / dt if prev is not None and dt > 0 else 0.0
            seen[address] = records
            rows.append(
                ExporterRow(
                    address=clean(address, 64),
                    records_per_s=rate,
                    records=records,
                    lost=int(e["lost"]),  # type: ignore[call-overload]
                    estimated=bool(e["estimated"]),
                )
            )
        self._last = seen  # an evicted exporter's entry goes with it
        self._last_time = now
        rows.sort(key=lambda r: (-r.records_per_s, -r.records, r.address))
        return tuple(rows)
