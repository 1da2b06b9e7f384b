"""Kernel drops joined to flows: per flow key and reason over the run, and per flow row.

What comes in: each drain's drop_records.DROP_RECORDs (DropCollector.drain:
flow key as layout.FLOW_KEY, reason value, packets, bytes since the last
drain). What goes out:

- DropTable keeps the drops per (flow key, reason) cumulatively, as numpy
  arrays (no Python object per drop): the per-reason breakdown that the
  detail screen, `dump --json`'s `drops` and the `drop REASON` filter read,
  the panel's top dropped flows, and the totals per reason (Prometheus
  flowtop_drops_total{reason}: bounded by the kernel's reason list).
- join() adds each drain's drops to the flow table's DROP columns of the
  rows with that key (fields.py: drop_packets, drop_bytes, drop_reason: the
  row's reason with the most packets), by the same 48-byte key the flow
  table is indexed by (FlowTable.rows_of): one vectorised lookup per drain.

Drops on no flow. Which packets the TC program counted before they were
dropped decides whether a drop has a flow row:
- ingress drops (netfilter input/forward, rp_filter, no socket, bad
  checksums) happen after TC ingress, which counted the packet: the flow
  has a row. The flow map is drained before the drop map, so a new flow's
  drop can arrive one drain before its row: records without a row are held
  for one more drain (PENDING) before they count as on no flow;
- egress drops before TC egress (netfilter output, a dead neighbour, a full
  qdisc before the clsact hook) are of packets TC never counted: no row.
  They get none (a row with zero passed packets would show in the talkers
  and the exports as a flow that never carried anything); they are counted
  per reason in no_flow (the panel shows them, flowtop_drops_total counts
  them) and their keys stay in the DropTable like every other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

import numpy as np

from flowtop.core.flowindex import hash_words
from flowtop.kernel import layout
from flowtop.kernel.drop_records import DROP_RECORD
from flowtop.kernel.dropreasons import DropReasons

# drop_reason column value of a flow without drops: SKB_NOT_DROPPED_YET,
# which the drop program never reports.
NO_REASON = 0
# Drains a drop record without a flow row waits for one (see the module doc).
PENDING = 1
DEFAULT_MAX_ENTRIES = 65536

# One (flow key, reason) of the table, cumulative; last_ns: CLOCK_MONOTONIC of
# the drain that last added to it.
ENTRY = np.dtype(
    [
        ("key", layout.FLOW_KEY),
        ("reason", "<u4"),
        ("packets", "<u8"),
        ("bytes", "<u8"),
        ("last_ns", "<u8"),
    ]
)
# The identity of an entry, padded to whole uint64 words (hashing, comparing).
_ID_WORDS = np.dtype({"names": ["key", "reason"], "formats": [layout.FLOW_KEY, "<u4"],
                      "offsets": [0, layout.FLOW_KEY.itemsize], "itemsize": 56})  # fmt: skip
_KEY_VOID = np.dtype((np.void, layout.FLOW_KEY.itemsize))


class RowsOf(Protocol):
    """What the join needs of the flow table (core/flowtable.FlowTable)."""

    def rows_of(self, keys: np.ndarray) -> np.ndarray: ...  # row per key, -1: none

    def column(self, name: str, rows: np.ndarray) -> np.ndarray: ...

    def set_column(self, name: str, rows: np.ndarray, values: np.ndarray | int) -> None: ...


def _ids(keys: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    """(key, reason) as 56-byte rows of 7 uint64 words (the 52 bytes, zero-padded)."""
    ids = np.zeros(len(keys), dtype=_ID_WORDS)
    ids["key"] = keys
    ids["reason"] = reasons
    return ids.view(np.uint64).reshape(len(keys), _ID_WORDS.itemsize // 8)


def _group(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first index, inverse) of the distinct rows of ids (_ids): np.unique
    over their 64-bit hashes (sorting u64 is many times faster than sorting
    52-byte voids), checked against the rows themselves; on a hash collision
    (never seen in practice) the rows are compared whole instead."""
    _, first, inv = np.unique(hash_words(ids), return_index=True, return_inverse=True)
    inv = inv.ravel()
    if (ids[first][inv] == ids).all():
        return first, inv
    voids = np.ascontiguousarray(ids).view(np.dtype((np.void, ids.shape[1] * 8))).ravel()
    _, first, inv = np.unique(voids, return_index=True, return_inverse=True)
    return first, inv.ravel()


def key_voids(keys: np.ndarray) -> np.ndarray:
    """Flow keys as 48-byte void scalars (np.isin, np.unique)."""
    return np.ascontiguousarray(keys, dtype=layout.FLOW_KEY).view(_KEY_VOID)


def _sum_by(values: np.ndarray, weights: np.ndarray) -> dict[int, int]:
    """{value: summed weights}: one Python step per distinct value (here:
    reasons, bounded by the kernel's list), never per record."""
    if not len(values):
        return {}
    uniq, inv = np.unique(values, return_inverse=True)
    sums = group_sums(inv.ravel(), weights, len(uniq))
    return {int(u): int(s) for u, s in zip(uniq, sums, strict=True)}


def group_sums(inv: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Summed weights per group (inv: each item's group of n), as uint64.
    np.bincount in float64 (several times faster than np.add.at): exact
    below 2**53, far above any packet or byte count of a run."""
    return np.bincount(inv, weights=weights.astype(np.float64), minlength=n).astype(np.uint64)


@dataclass(frozen=True, slots=True)
class DroppedFlow:
    """One key of the drops panel: a flow key and its drops by reason name."""

    key: np.void  # layout.FLOW_KEY
    packets: int
    bytes: int
    reasons: Mapping[str, int]  # reason name -> packets, most first
    has_row: bool  # a live flow row has this key (False: drops on no flow)


class DropTable:
    """Drops per (flow key, reason) over the run, bounded; see the module doc.

    max_entries bounds the (key, reason) entries: when more arrive, the ones
    dropped from longest ago go (counted in `evicted`; their packets stay in
    the totals and the flow rows). keep_s: an entry whose key has no live
    flow row and that got no drop for this long is forgotten (None: kept for
    the run, as dump does; its run is bounded).
    """

    def __init__(
        self,
        reasons: DropReasons,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        keep_s: float | None = 60.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.reasons = reasons
        self.max_entries = max_entries
        self.keep_ns = None if keep_s is None else int(keep_s * 1e9)
        self.entries = np.zeros(0, dtype=ENTRY)
        # Totals over the run per reason value (flowtop_drops_total).
        self.total_packets: dict[int, int] = {}
        self.total_bytes: dict[int, int] = {}
        # Of those, drops whose key had no flow row (egress drops before TC).
        self.no_flow: dict[int, int] = {}
        self.evicted = 0  # entries forgotten for room (their packets still counted)
        self._pending = np.zeros(0, dtype=DROP_RECORD)

    # -- in ---------------------------------------------------------------------

    def add(self, recs: np.ndarray, now_ns: int) -> None:
        """One drain's DROP_RECORDs into the entries and the totals."""
        if not len(recs):
            return
        for name, tot in (("packets", self.total_packets), ("bytes", self.total_bytes)):
            for r, v in _sum_by(recs["reason"], recs[name]).items():
                tot[r] = tot.get(r, 0) + v
        new = np.zeros(len(recs), dtype=ENTRY)
        for name in ("key", "reason", "packets", "bytes"):
            new[name] = recs[name]
        new["last_ns"] = now_ns
        both = np.concatenate([self.entries, new])
        first, inv = _group(_ids(both["key"], both["reason"]))
        out = both[first]
        for name in ("packets", "bytes"):
            out[name] = group_sums(inv, both[name], len(out))
        # Every new record is of now, no older entry later than that.
        fresh = np.bincount(inv[len(self.entries) :], minlength=len(out)) > 0
        out["last_ns"][fresh] = now_ns
        if len(out) > self.max_entries:
            over = len(out) - self.max_entries
            keep = np.argsort(out["last_ns"], kind="stable")[over:]
            out = out[np.sort(keep)]
            self.evicted += over
        self.entries = out

    def join(self, table: RowsOf, recs: np.ndarray, now_ns: int) -> np.ndarray:
        """add(recs), then their packets and bytes onto the flow rows of their
        keys (and each such row's top reason); records held from the last
        drain go first. Returns the rows that got drops."""
        self.add(recs, now_ns)
        held, self._pending = self._pending, np.zeros(0, dtype=DROP_RECORD)
        todo = np.concatenate([held, recs]) if len(held) else recs
        if not len(todo):
            return np.zeros(0, dtype=np.int64)
        rows = table.rows_of(todo["key"])
        miss = rows < 0
        if miss.any():
            # New ones wait one drain for their row; held ones are on no flow.
            late = np.zeros(len(todo), dtype=bool)
            late[: len(held)] = True
            for r, v in _sum_by(todo["reason"][miss & late], todo["packets"][miss & late]).items():
                self.no_flow[r] = self.no_flow.get(r, 0) + v
            self._pending = todo[miss & ~late].copy()
        have = ~miss
        if not have.any():
            return np.zeros(0, dtype=np.int64)
        urows, inv = np.unique(rows[have], return_inverse=True)
        inv = inv.ravel()
        for col, name in (("drop_packets", "packets"), ("drop_bytes", "bytes")):
            add = group_sums(inv, todo[name][have], len(urows))
            table.set_column(col, urows, table.column(col, urows) + add)
        self._top_reasons(table, urows)
        return urows

    def _top_reasons(self, table: RowsOf, rows: np.ndarray) -> None:
        """drop_reason of rows: the reason of their key's entry with the most packets."""
        e = self.entries
        erows = table.rows_of(e["key"])
        sel = np.flatnonzero(np.isin(erows, rows))
        if not len(sel):
            return
        er, pk = erows[sel], e["packets"][sel]
        order = np.lexsort((pk, er))
        er_sorted = er[order]
        last = np.r_[er_sorted[1:] != er_sorted[:-1], True]
        table.set_column("drop_reason", er_sorted[last], e["reason"][sel][order][last])

    def expire(self, table: RowsOf, now_ns: int) -> int:
        """Forget entries older than keep_s whose key has no live row; how many."""
        if self.keep_ns is None or not len(self.entries):
            return 0
        e = self.entries
        old = e["last_ns"].astype(np.int64) + self.keep_ns <= now_ns
        if not old.any():
            return 0
        gone = old & (table.rows_of(e["key"]) < 0)
        n = int(gone.sum())
        if n:
            self.entries = e[~gone]
        return n

    # -- out --------------------------------------------------------------------

    def name(self, value: int) -> str:
        return self.reasons.name(value)

    def by_key(self, keys: np.ndarray) -> list[dict[str, int]]:
        """{reason name: packets} of each key (most packets first; {} for a key
        without drops). One dict per key asked for: for the records dump or the
        detail screen writes out, not for whole tables."""
        out: list[dict[str, int]] = [{} for _ in range(len(keys))]
        e = self.entries
        if not len(e) or not len(keys):
            return out
        want = key_voids(keys)
        ev = key_voids(e["key"])
        uniq, inv = np.unique(want, return_inverse=True)
        inv = inv.ravel()
        sel = np.flatnonzero(np.isin(ev, uniq))
        if not len(sel):
            return out
        pos = np.searchsorted(uniq, ev[sel])
        per: dict[int, list[tuple[int, int]]] = {}
        for p, r, n in zip(pos.tolist(), e["reason"][sel].tolist(), e["packets"][sel].tolist(),
                           strict=True):  # fmt: skip
            per.setdefault(p, []).append((n, r))
        for i, p in enumerate(inv.tolist()):
            got = per.get(p)
            if got:
                out[i] = {self.name(r): n for n, r in sorted(got, key=lambda t: (-t[0], t[1]))}
        return out

    def keys_with(self, values: Iterable[int] | None = None) -> np.ndarray:
        """The distinct keys (48-byte voids, sorted) that have drops of these
        reason values (None: any)."""
        e = self.entries
        if values is not None:
            e = e[np.isin(e["reason"], np.fromiter(values, dtype=np.uint32))]
        return np.unique(key_voids(e["key"]))

    def matching(self, pattern_values: Iterable[int] | None, words: np.ndarray) -> np.ndarray:
        """A mask over flow keys given as layout.FLOW_KEY_WORDS words: which
        have drops (of these reason values; None: of any)."""
        keys = np.ascontiguousarray(words).view(layout.FLOW_KEY).reshape(-1)
        if not len(self.entries):
            return np.zeros(len(keys), dtype=bool)
        return np.isin(key_voids(keys), self.keys_with(pattern_values))

    def top(self, n: int, table: RowsOf | None = None) -> list[DroppedFlow]:
        """The n keys with the most dropped packets (the panel)."""
        e = self.entries
        if not len(e) or n <= 0:
            return []
        kv = key_voids(e["key"])
        uniq, first, inv = np.unique(kv, return_index=True, return_inverse=True)
        inv = inv.ravel()
        pk = group_sums(inv, e["packets"], len(uniq))
        by = group_sums(inv, e["bytes"], len(uniq))
        order = np.argsort(-pk.astype(np.float64), kind="stable")[:n]
        keys = e["key"][first[order]]
        rows = table.rows_of(keys) if table is not None else np.full(len(keys), -1)
        per = self.by_key(keys)
        return [
            DroppedFlow(keys[i], int(pk[o]), int(by[o]), per[i], bool(rows[i] >= 0))
            for i, o in enumerate(order.tolist())
        ]

    def totals(self) -> dict[str, int]:
        """{reason name: packets} over the run, most first (all keys)."""
        items = sorted(self.total_packets.items(), key=lambda t: (-t[1], t[0]))
        return {self.name(r): v for r, v in items}

    def no_flow_packets(self) -> int:
        """Drops on no flow so far, with those still waiting a drain for their
        row (at the end of a run there is no next drain)."""
        return sum(self.no_flow.values()) + int(self._pending["packets"].sum())

    def values_matching(self, pattern: str) -> list[int]:
        """Reason values whose name matches pattern (case-insensitive glob)."""
        pat = pattern.upper().removeprefix("SKB_DROP_REASON_")
        return sorted(v for v, nm in self.reasons.names.items() if fnmatchcase(nm, pat))


class DropRows:
    """The drops of the rows a view query reads, for its filter terms
    (query/filterexpr.py: `dropped`, `drop REASON`); columns read when asked."""

    def __init__(self, table: RowsOf, rows: np.ndarray, drops: DropTable) -> None:
        self._table = table
        self._rows = rows
        self.table = drops

    def packets(self) -> np.ndarray:
        """drop_packets of every row."""
        return self._table.column("drop_packets", self._rows)

    def of_reasons(self, values: Iterable[int], words: np.ndarray) -> np.ndarray:
        """Which rows (their key words) have drops of these reason values."""
        return self.table.matching(values, words)


@dataclass(frozen=True, slots=True)
class DropLine:
    """One flow key of the drops panel, as text and numbers (no numpy)."""

    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    ifindex: int
    direction: int  # layout.DIR_*
    ip_version: int  # 0: not IP (only the device and reason are known)
    packets: int
    reasons: tuple[tuple[str, int], ...]  # most packets first
    has_row: bool  # False: drops on no flow (egress drops before TC)


@dataclass(frozen=True, slots=True)
class DropSummary:
    """What the live view's drops panel shows: the run's drops by reason, those
    on no flow, and the keys with the most dropped packets."""

    total: int
    by_reason: tuple[tuple[str, int], ...]  # most first
    no_flow: int
    top: tuple[DropLine, ...]
    evicted: int = 0  # (key, reason) entries forgotten for room (DropTable.max_entries)


def summary(drops: DropTable, table: RowsOf, n: int = 8) -> DropSummary:
    """The panel's figures now (n keys at most)."""
    from flowtop.core.flowtable import decode_key  # the table imports nothing of this module

    lines = []
    for f in drops.top(n, table):
        k = decode_key(f.key)
        ver = k.ip_version
        lines.append(
            DropLine(
                k.proto, str(k.src) if ver else "", k.sport, str(k.dst) if ver else "", k.dport,
                k.ifindex, int(k.direction), ver, f.packets, tuple(f.reasons.items()), f.has_row,
            )
        )  # fmt: skip
    totals = drops.totals()
    return DropSummary(
        sum(totals.values()), tuple(totals.items()), drops.no_flow_packets(), tuple(lines),
        drops.evicted,
    )  # fmt: skip
