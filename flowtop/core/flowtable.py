"""The flow table: cumulative counters, rates, timeouts and flow-end records.

Columnar: one numpy array per field, one row per flow, and a vectorised hash
index (flowindex.py) from the raw 48-byte kernel key to its row. Merging a
drained interval is a handful of numpy passes, with no Python-level work per
flow; nothing per flow is a Python object until somebody asks for records
(top-N, dump, export).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from flowtop.core.flowindex import FlowIndex, hash_words
from flowtop.core.model import (
    TCP_FIN,
    TCP_RST,
    Direction,
    EndReason,
    FlowKey,
    FlowRecord,
)
from flowtop.kernel import layout

NS = 1_000_000_000
_COLUMNS: dict[str, str] = {
    "packets": "<u8",
    "bytes": "<u8",
    "first_ns": "<u8",
    "last_ns": "<u8",
    "exp_packets": "<u8",  # counted up to the last export of this flow
    "exp_bytes": "<u8",
    "exp_start_ns": "<u8",  # start of the current export period
    "pps": "<f4",
    "Bps": "<f4",
    "flags": "u1",
    "dscp": "u1",
    "mpls": "<u4",  # layout.FLOW_STATS.mpls of the last packet (0: no MPLS)
    "live": "?",
}
# What a flow gains beyond counters: TCP health (joined from sock_ops or the
# passive RTT code, cumulative for the connection) and enrichment (ids into
# the Enricher's entity table). Flow-end records carry them as `ext`.
EXT = np.dtype(
    [
        ("rtt_us", "<u4"),  # smoothed path RTT, 0 = unknown
        ("rtt_min_us", "<u4"),
        ("rtt_src", "u1"),  # layout.TCP_SOURCE_*: where the RTT came from
        ("retr_src", "u1"),  # where retrans/rto came from, 0 = unknown
        ("rtt_samples", "<u4"),
        ("retrans", "<u8"),  # segments this flow's sender retransmitted
        ("data_segs", "<u8"),
        ("rto", "<u4"),
        ("src_ent", "<i4"),  # Enricher entity ids, -1 = not looked up
        ("dst_ent", "<i4"),
        ("src_asn", "<u4"),  # from the entities, for IPFIX bgp*AsNumber; 0 = unknown
        ("dst_asn", "<u4"),
    ]
)
EXT_NAMES: tuple[str, ...] = EXT.names or ()
SORT_COLUMNS = ("bytes", "packets", "bps", "pps", "first_seen", "last_seen")


def mono_to_unix_offset() -> float:
    """Seconds to add to CLOCK_MONOTONIC (bpf_ktime_get_ns) to get unix time."""
    return time.time() - time.monotonic()


def decode_key(k: np.void) -> FlowKey:
    ver = int(k["ip_version"])
    if ver == 4:
        src: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
            bytes(k["src"])[:4]
        )
        dst: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
            bytes(k["dst"])[:4]
        )
    else:
        src = ipaddress.IPv6Address(bytes(k["src"]))
        dst = ipaddress.IPv6Address(bytes(k["dst"]))
    return FlowKey(
        ifindex=int(k["ifindex"]),
        direction=Direction(int(k["direction"])),
        ip_version=ver,
        proto=int(k["proto"]),
        src=src,
        dst=dst,
        sport=int(k["sport"]),
        dport=int(k["dport"]),
        vlan=int(k["vlan"]),
    )


@dataclass(frozen=True, slots=True)
class FlowBatch:
    """Flow records in columns (what ended in one step), decoded on demand."""

    keys: np.ndarray  # layout.FLOW_KEY
    packets: np.ndarray
    bytes: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    flags: np.ndarray
    dscp: np.ndarray
    reason: np.ndarray  # EndReason values
    clock_offset: float
    ext: np.ndarray | None = None  # EXT per record; None: nothing known
    mpls: np.ndarray | None = None  # layout.FLOW_STATS.mpls per record; None: none had MPLS

    def ext_or_empty(self) -> np.ndarray:
        return self.ext if self.ext is not None else empty_ext(len(self.keys))

    def mpls_or_zeros(self) -> np.ndarray:
        return self.mpls if self.mpls is not None else np.zeros(len(self.keys), dtype="<u4")

    def __len__(self) -> int:
        return len(self.keys)

    def records(self) -> Iterator[FlowRecord]:
        off = self.clock_offset
        ext = self.ext_or_empty()
        mpls = self.mpls_or_zeros()
        for i in range(len(self.keys)):
            yield FlowRecord(
                key=decode_key(self.keys[i]),
                packets=int(self.packets[i]),
                bytes=int(self.bytes[i]),
                first_seen=int(self.start_ns[i]) / NS + off,
                last_seen=int(self.end_ns[i]) / NS + off,
                tcp_flags=int(self.flags[i]),
                dscp=int(self.dscp[i]),
                end_reason=EndReason(int(self.reason[i])),
                mpls_label=layout.mpls_label(int(mpls[i])),
                **ext_fields(ext[i]),
            )

    @staticmethod
    def concat(batches: list[FlowBatch], clock_offset: float) -> FlowBatch:
        if not batches:
            return empty_batch(clock_offset)
        cols = {f: np.concatenate([getattr(b, f) for b in batches]) for f in _BATCH_FIELDS}
        ext = None
        if any(b.ext is not None for b in batches):
            ext = np.concatenate([b.ext_or_empty() for b in batches])
        mpls = None
        if any(b.mpls is not None for b in batches):
            mpls = np.concatenate([b.mpls_or_zeros() for b in batches])
        return FlowBatch(**cols, clock_offset=clock_offset, ext=ext, mpls=mpls)

    def select(self, keep: np.ndarray) -> FlowBatch:
        cols = {f: getattr(self, f)[keep] for f in _BATCH_FIELDS}
        ext = None if self.ext is None else self.ext[keep]
        mpls = None if self.mpls is None else self.mpls[keep]
        return FlowBatch(**cols, clock_offset=self.clock_offset, ext=ext, mpls=mpls)


_BATCH_FIELDS = ("keys", "packets", "bytes", "start_ns", "end_ns", "flags", "dscp", "reason")


def _some(mpls: np.ndarray) -> np.ndarray | None:
    """A batch's MPLS column, None when no record has a label (the common case:
    the exporters then skip the MPLS templates without looking)."""
    return mpls if mpls.any() else None


def empty_ext(n: int) -> np.ndarray:
    ext = np.zeros(n, dtype=EXT)
    ext["src_ent"] = -1
    ext["dst_ent"] = -1
    return ext


class ExtFields(TypedDict):
    rtt_us: int | None
    rtt_min_us: int | None
    rtt_source: str | None
    retransmits: int | None
    rto: int | None
    src_ent: int
    dst_ent: int


def ext_fields(e: np.void) -> ExtFields:
    """FlowRecord keyword arguments for one EXT row."""
    rtt_src = int(e["rtt_src"])
    retr_src = int(e["retr_src"])
    return {
        "rtt_us": int(e["rtt_us"]) if rtt_src and e["rtt_us"] else None,
        "rtt_min_us": int(e["rtt_min_us"]) if rtt_src and e["rtt_min_us"] else None,
        "rtt_source": layout.TCP_SOURCES[rtt_src] if rtt_src else None,
        "retransmits": int(e["retrans"]) if retr_src else None,
        "rto": int(e["rto"]) if retr_src == layout.TCP_SOURCE_SOCKOPS else None,
        "src_ent": int(e["src_ent"]),
        "dst_ent": int(e["dst_ent"]),
    }


def empty_batch(clock_offset: float) -> FlowBatch:
    z = np.zeros(0, dtype="<u8")
    return FlowBatch(
        np.zeros(0, dtype=layout.FLOW_KEY),
        z,
        z,
        z,
        z,
        np.zeros(0, "u1"),
        np.zeros(0, "u1"),
        np.zeros(0, "u1"),
        clock_offset,
    )


class FlowTable:
    """Bounded table of live flows keyed by the kernel's flow key."""

    def __init__(
        self,
        max_flows: int = 1_000_000,
        idle_timeout: float = 15.0,
        active_timeout: float = 60.0,
        clock_offset: float | None = None,
        initial_capacity: int = 1024,
    ) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self.idle_ns = int(idle_timeout * NS)
        self.active_ns = int(active_timeout * NS)
        self.clock_offset = mono_to_unix_offset() if clock_offset is None else clock_offset
        self.forced_evictions = 0
        self._index = FlowIndex(min(initial_capacity, max_flows))
        self._free = np.zeros(0, dtype=np.int64)  # stack of free rows
        self._nfree = 0
        self._cap = 0
        self._keys = np.zeros(0, dtype=layout.FLOW_KEY)
        self._c: dict[str, np.ndarray] = {n: np.zeros(0, dtype=t) for n, t in _COLUMNS.items()}
        self._c.update({n: np.zeros(0, dtype=EXT[n]) for n in EXT_NAMES})
        self._grow(min(initial_capacity, max_flows))

    def set_timeouts(self, idle_timeout: float, active_timeout: float) -> None:
        self.idle_ns = int(idle_timeout * NS)
        self.active_ns = int(active_timeout * NS)

    # -- storage ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def _words(self) -> np.ndarray:
        """The stored keys as (rows, 6) uint64 words, for the index."""
        return self._keys.view("<u8").reshape(-1, 6)

    def _grow(self, need: int) -> None:
        new_cap = min(self.max_flows, max(need, self._cap + self._cap // 2, 64))
        if new_cap <= self._cap:
            return
        keys = np.zeros(new_cap, dtype=layout.FLOW_KEY)
        keys[: self._cap] = self._keys
        self._keys = keys
        for name, col in self._c.items():
            grown = np.zeros(new_cap, dtype=col.dtype)
            grown[: self._cap] = col
            self._c[name] = grown
        free = np.zeros(new_cap, dtype=np.int64)
        free[: self._nfree] = self._free[: self._nfree]
        added = np.arange(new_cap - 1, self._cap - 1, -1, dtype=np.int64)
        free[self._nfree : self._nfree + len(added)] = added
        self._free = free
        self._nfree += len(added)
        self._index.reserve_rows(new_cap)
        self._cap = new_cap

    def _alloc(self, n: int) -> np.ndarray:
        if self._nfree < n:
            self._grow(self._cap + n - self._nfree)
        rows = self._free[self._nfree - n : self._nfree][::-1].copy()
        self._nfree -= n
        return rows

    def _release(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self._index.delete(rows)
        self._c["live"][rows] = False
        self._free[self._nfree : self._nfree + len(rows)] = rows
        self._nfree += len(rows)

    def _take(self, rows: np.ndarray, reason: EndReason, end: bool) -> FlowBatch:
        """Records for rows (deltas since their last export); removes them if end."""
        c = self._c
        start = np.maximum(c["first_ns"][rows], c["exp_start_ns"][rows])
        batch = FlowBatch(
            keys=self._keys[rows].copy(),
            packets=c["packets"][rows] - c["exp_packets"][rows],
            bytes=c["bytes"][rows] - c["exp_bytes"][rows],
            start_ns=start,
            end_ns=c["last_ns"][rows].copy(),
            flags=c["flags"][rows].copy(),
            dscp=c["dscp"][rows].copy(),
            reason=np.full(len(rows), int(reason), dtype="u1"),
            clock_offset=self.clock_offset,
            ext=self.ext_at(rows),
            mpls=_some(c["mpls"][rows]),
        )
        if end:
            self._release(rows)
        # Zero-packet periods (no traffic since the last export) carry nothing.
        keep = batch.packets > 0
        if not keep.all():
            batch = batch.select(keep)
        return batch

    def ext_at(self, rows: np.ndarray) -> np.ndarray:
        ext = np.zeros(len(rows), dtype=EXT)
        for name in EXT_NAMES:
            ext[name] = self._c[name][rows]
        return ext

    # -- updates ---------------------------------------------------------------

    def merge(self, keys: np.ndarray, stats: np.ndarray, interval: float) -> FlowBatch:
        """Add one drained interval with distinct keys (see merge_many)."""
        return self.merge_many([(keys, stats)], interval)

    def merge_many(
        self,
        batches: list[tuple[np.ndarray, np.ndarray]],
        interval: float,
        on_merged: Callable[[], None] | None = None,
    ) -> FlowBatch:
        """Add one drained interval given as batches, keys distinct within each.

        on_merged runs after the counters are in and before flows that saw
        FIN/RST leave the table (TCP health and enrichment write their
        columns then, so the last records carry them).
        Returns the flows that ended: TCP FIN/RST seen, or evicted for room.
        """
        c = self._c
        live = c["live"]
        c["pps"][live] = 0.0
        c["Bps"][live] = 0.0
        ended: list[FlowBatch] = []
        touched: list[np.ndarray] = []
        fin: list[np.ndarray] = []
        for keys, stats in batches:
            if len(keys) == 0:
                continue
            rows, stats = self._upsert(keys, stats, touched, ended)
            c["packets"][rows] += stats["packets"]
            c["bytes"][rows] += stats["bytes"]
            c["last_ns"][rows] = np.maximum(c["last_ns"][rows], stats["last_seen_ns"])
            c["flags"][rows] |= stats["tcp_flags"].astype("u1")
            c["dscp"][rows] = stats["dscp"]
            c["mpls"][rows] = stats["mpls"]
            if interval > 0:
                c["pps"][rows] += stats["packets"] / interval
                c["Bps"][rows] += stats["bytes"] / interval
            touched.append(rows)
            fin.append(rows[(stats["tcp_flags"] & (TCP_FIN | TCP_RST)) != 0])
        if on_merged is not None:
            on_merged()
        if fin:
            fin_rows = np.unique(np.concatenate(fin))
            if len(fin_rows):
                ended.append(self._take(fin_rows, EndReason.END_OF_FLOW, end=True))
        return FlowBatch.concat(ended, self.clock_offset)

    def _upsert(
        self,
        keys: np.ndarray,
        stats: np.ndarray,
        touched: list[np.ndarray],
        ended: list[FlowBatch],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows for keys, creating the missing ones (evicting if full).

        Returns (rows, stats) for the keys that have a row; keys that found
        no room even after eviction end at once (records in `ended`) and are
        counted as forced evictions.
        """
        c = self._c
        keys = np.ascontiguousarray(keys)
        words = keys.view("<u8").reshape(-1, 6)
        hashes = hash_words(words)
        rows = self._index.lookup(words, hashes, self._words())
        new = np.flatnonzero(rows < 0)
        if len(new):
            overflow = len(self) + len(new) - self.max_flows
            if overflow > 0:
                keep = np.concatenate([*touched, rows[rows >= 0]])
                ended.append(self._evict(overflow, exclude=np.unique(keep)))
            take = min(len(new), self.max_flows - len(self))
            if take < len(new):
                # More new flows in one interval than the table holds: they
                # end at once, counted and with their packets, never dropped.
                spill = new[take:]
                self.forced_evictions += len(spill)
                ended.append(self._stats_batch(keys[spill], stats[spill]))
                new = new[:take]
            new_rows = self._alloc(len(new))
            rows[new] = new_rows
            self._keys[new_rows] = keys[new]
            self._index.insert(hashes[new], new_rows, self._words())
            for name in ("packets", "bytes", "exp_packets", "exp_bytes", "flags", "mpls"):
                c[name][new_rows] = 0
            c["first_ns"][new_rows] = stats["first_seen_ns"][new]
            c["exp_start_ns"][new_rows] = stats["first_seen_ns"][new]
            c["last_ns"][new_rows] = 0
            c["pps"][new_rows] = 0.0
            c["Bps"][new_rows] = 0.0
            c["live"][new_rows] = True
            for name in EXT_NAMES:
                c[name][new_rows] = -1 if name.endswith("_ent") else 0
        have = rows >= 0
        rows, stats = rows[have], stats[have]
        # A flow already in the table but first seen earlier in another batch
        # of this interval (another CPU's cache) keeps its earliest start.
        c["first_ns"][rows] = np.minimum(c["first_ns"][rows], stats["first_seen_ns"])
        return rows, stats

    def _stats_batch(self, keys: np.ndarray, stats: np.ndarray) -> FlowBatch:
        """Records for drained flows that never get a row (no room)."""
        return FlowBatch(
            keys=keys.copy(),
            packets=stats["packets"].copy(),
            bytes=stats["bytes"].copy(),
            start_ns=stats["first_seen_ns"].copy(),
            end_ns=stats["last_seen_ns"].copy(),
            flags=stats["tcp_flags"].astype("u1"),
            dscp=stats["dscp"].copy(),
            reason=np.full(len(keys), int(EndReason.LACK_OF_RESOURCES), dtype="u1"),
            clock_offset=self.clock_offset,
            ext=empty_ext(len(keys)),
            mpls=_some(stats["mpls"].copy()),
        )

    def _evict(self, n: int, exclude: np.ndarray) -> FlowBatch:
        """Forced end of the n least recently seen flows to make room."""
        live = np.flatnonzero(self._c["live"])
        if len(exclude):
            live = np.setdiff1d(live, exclude, assume_unique=True)
        n = min(n, len(live))
        if n == 0:
            return empty_batch(self.clock_offset)
        last = self._c["last_ns"][live]
        victims = live[np.argpartition(last, n - 1)[:n]] if n < len(live) else live
        self.forced_evictions += n
        return self._take(victims, EndReason.LACK_OF_RESOURCES, end=True)

    def expire(self, now_ns: int) -> FlowBatch:
        """Idle and active timeouts at CLOCK_MONOTONIC time now_ns."""
        c = self._c
        live = np.flatnonzero(c["live"])
        if len(live) == 0:
            return empty_batch(self.clock_offset)
        out: list[FlowBatch] = []
        idle = live[c["last_ns"][live] + self.idle_ns <= now_ns]
        if len(idle):
            out.append(self._take(idle, EndReason.IDLE_TIMEOUT, end=True))
            live = np.flatnonzero(c["live"])
        active = live[c["exp_start_ns"][live] + self.active_ns <= now_ns]
        if len(active):
            out.append(self._take(active, EndReason.ACTIVE_TIMEOUT, end=False))
            c["exp_packets"][active] = c["packets"][active]
            c["exp_bytes"][active] = c["bytes"][active]
            c["exp_start_ns"][active] = now_ns
        return FlowBatch.concat(out, self.clock_offset)

    def flush(self, reason: EndReason = EndReason.FORCED_END) -> FlowBatch:
        """End every flow (shutdown)."""
        live = np.flatnonzero(self._c["live"])
        return self._take(live, reason, end=True)

    # -- queries -----------------------------------------------------------------

    def _record(self, row: int) -> FlowRecord:
        c = self._c
        off = self.clock_offset
        return FlowRecord(
            key=decode_key(self._keys[row]),
            packets=int(c["packets"][row]),
            bytes=int(c["bytes"][row]),
            first_seen=int(c["first_ns"][row]) / NS + off,
            last_seen=int(c["last_ns"][row]) / NS + off,
            tcp_flags=int(c["flags"][row]),
            dscp=int(c["dscp"][row]),
            pps=float(c["pps"][row]),
            bps=float(c["Bps"][row]) * 8,
            mpls_label=layout.mpls_label(int(c["mpls"][row])),
            **ext_fields(self.ext_at(np.array([row]))[0]),
        )

    def _sort_values(self, by: str, rows: np.ndarray) -> np.ndarray:
        c = self._c
        col = {
            "bytes": "bytes",
            "packets": "packets",
            "bps": "Bps",
            "pps": "pps",
            "first_seen": "first_ns",
            "last_seen": "last_ns",
        }.get(by)
        if col is None:
            raise ValueError(f"cannot sort by {by!r}: one of {', '.join(SORT_COLUMNS)}")
        values: np.ndarray = c[col][rows]
        return values

    def top(self, n: int, by: str = "bytes", descending: bool = True) -> list[FlowRecord]:
        """The n first flows by a column; only those n become Python objects."""
        live = np.flatnonzero(self._c["live"])
        if len(live) == 0 or n <= 0:
            return []
        vals = self._sort_values(by, live)
        if descending:
            vals = -vals.astype(np.float64)
        if n < len(live):
            part = np.argpartition(vals, n - 1)[:n]
            order = part[np.argsort(vals[part], kind="stable")]
        else:
            order = np.argsort(vals, kind="stable")
        return [self._record(int(r)) for r in live[order]]

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._c["live"])

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """One column (see gather() for names) at rows, a copy."""
        out: np.ndarray = self._c[name][rows]
        return out.astype(np.float64) if name in ("pps", "Bps") else out

    def set_column(self, name: str, rows: np.ndarray, values: np.ndarray | int) -> None:
        """Writes an EXT column (TCP health, enrichment) at rows."""
        if name not in EXT_NAMES:
            raise KeyError(name)
        self._c[name][rows] = values

    def keys_at(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._keys[rows]
        return out

    def words_at(self, rows: np.ndarray) -> np.ndarray:
        """Keys at rows as (n, 6) uint64 words (faster to gather than records)."""
        out: np.ndarray = self._words()[rows]
        return out

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Keys and the view's columns at rows (copies)."""
        return self._keys[rows], self.gather_columns(rows)

    def gather_columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "packets": self._c["packets"][rows],
            "bytes": self._c["bytes"][rows],
            "first_ns": self._c["first_ns"][rows],
            "last_ns": self._c["last_ns"][rows],
            "pps": self._c["pps"][rows].astype(np.float64),
            "Bps": self._c["Bps"][rows].astype(np.float64),
            "flags": self._c["flags"][rows],
            "rtt_us": self._c["rtt_us"][rows],
            "retrans": self._c["retrans"][rows],
            "retr_src": self._c["retr_src"][rows],
            "src_ent": self._c["src_ent"][rows],
            "dst_ent": self._c["dst_ent"][rows],
        }

    def records(self) -> Iterator[FlowRecord]:
        for r in np.flatnonzero(self._c["live"]):
            yield self._record(int(r))

    def totals(self) -> tuple[int, int, float, float]:
        """(packets, bytes, pps, bps) over live flows."""
        c = self._c
        live = c["live"]
        return (
            int(c["packets"][live].sum()),
            int(c["bytes"][live].sum()),
            float(c["pps"][live].sum()),
            float(c["Bps"][live].sum()) * 8,
        )
