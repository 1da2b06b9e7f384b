"""The flow table: cumulative counters, rates, timeouts and flow-end records.

Columnar: one numpy array per column (the fields of core/fields.py that have
one, TABLE_FIELDS, plus the table's export bookkeeping), one row per flow, and
a vectorised hash index (flowindex.py) from the raw 48-byte kernel key to its
row. Merging a drained interval is a handful of numpy passes, each column by
its field's merge rule, with no Python-level work per flow; nothing per flow
is a Python object until somebody asks for records (top-N, dump, export).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowtop.core import fields
from flowtop.core.conversations import ids_and_legs
from flowtop.core.fields import KERNEL, MAX, MIN, OR, RATE, SUM, Field
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
_COUNTERS = tuple(f for f in fields.TABLE_FIELDS if f.origin == KERNEL)  # from FLOW_STATS
_RATES = tuple(f for f in fields.TABLE_FIELDS if f.origin == RATE)
# Written by TCP health, enrichment, the owner join and the drop join (set_column).
_WRITABLE = frozenset(
    f.name
    for f in fields.TABLE_FIELDS
    if f.origin in (fields.TCP, fields.ENRICH, fields.OWNER, fields.DROP, fields.WIRE)
)
# Allocated at their first write (_Columns): a run with no TCP flow, no drop
# or owners off never holds their memory (about a quarter of a row).
_LAZY = {f.name: f for f in fields.TABLE_FIELDS if f.name in _WRITABLE}
_BATCH_NAMES = frozenset(f.name for f in fields.BATCH_FIELDS)
# The table's own columns: what each flow's summed counters were at its last
# export (exp_<name>), when its current export period began, and whether the
# row holds a flow.
_EXPORTED = {f"exp_{f.name}": f for f in _COUNTERS if f.merge == SUM}
_BOOKKEEPING = {**{n: f.dtype for n, f in _EXPORTED.items()}, "exp_start_ns": "<u8", "live": "?"}
# Each row's leg of its conversation (core/conversations.legs), with conv_id.
_BOOKKEEPING["conv_leg"] = "u1"
SORT_COLUMNS = tuple(f.sort for f in fields.TABLE_FIELDS if f.sort)
# The columns gather_columns() hands the view.
VIEW_COLUMNS = (
    "packets", "bytes", "first_ns", "last_ns", "pps", "bps", "tcp_flags", "rtt_us", "retrans",
    "retrans_source", "src_ent", "dst_ent", "drop_packets",
)  # fmt: skip


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


def _record_values(row: Mapping[str, Any], of: tuple[Field, ...]) -> dict[str, Any]:
    """FlowRecord keyword arguments from one record's raw column values."""
    return {f.name: f.value(row, row[f.name]) if f.value else row[f.name] for f in of}


def blank(f: Field, n: int) -> np.ndarray:
    """n values of a column before anything is known."""
    return np.full(n, f.blank, dtype=f.dtype)


@dataclass(frozen=True, slots=True)
class FlowBatch:
    """Flow-end records in columns, what the engine hands its sinks (dump, IPFIX):
    the keys (layout.FLOW_KEY) and one array per fields.BATCH_FIELDS entry, by
    field name (batch["packets"]); decoded into FlowRecords on demand."""

    keys: np.ndarray
    columns: Mapping[str, np.ndarray]
    clock_offset: float

    def __post_init__(self) -> None:
        if self.columns.keys() != _BATCH_NAMES:
            odd = sorted(_BATCH_NAMES.symmetric_difference(self.columns))
            raise ValueError(f"FlowBatch columns: {', '.join(odd)} missing or unknown")

    @staticmethod
    def of(keys: np.ndarray, clock_offset: float, **columns: np.ndarray) -> FlowBatch:
        """A batch of the columns given; every other one blank."""
        cols = {}
        for f in fields.BATCH_FIELDS:
            given = columns.pop(f.name, None)
            cols[f.name] = blank(f, len(keys)) if given is None else np.asarray(given, f.dtype)
        if columns:
            raise ValueError(f"FlowBatch has no columns {', '.join(sorted(columns))}")
        return FlowBatch(keys, cols, clock_offset)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.keys)

    def records(self) -> Iterator[FlowRecord]:
        raw = {n: c.tolist() for n, c in self.columns.items()}
        for i in range(len(self.keys)):
            row = {n: v[i] for n, v in raw.items()}
            values = _record_values(row, fields.BATCH_FIELDS)
            yield FlowRecord(key=decode_key(self.keys[i]), clock_offset=self.clock_offset, **values)

    @staticmethod
    def concat(batches: list[FlowBatch], clock_offset: float) -> FlowBatch:
        if not batches:
            return empty_batch(clock_offset)
        keys = np.concatenate([b.keys for b in batches])
        cols = {f.name: np.concatenate([b[f.name] for b in batches]) for f in fields.BATCH_FIELDS}
        return FlowBatch(keys, cols, clock_offset)

    def select(self, keep: np.ndarray) -> FlowBatch:
        cols = {n: c[keep] for n, c in self.columns.items()}
        return FlowBatch(self.keys[keep], cols, self.clock_offset)


_empty: list[FlowBatch] = []  # the last empty_batch (one per clock offset)


def empty_batch(clock_offset: float) -> FlowBatch:
    """A batch of no flows. Shared: its zero-length arrays hold nothing a
    reader could change, and most merges and expiries end no flow (making
    one builds a blank array per field each time)."""
    if not _empty or _empty[0].clock_offset != clock_offset:
        _empty[:] = [FlowBatch.of(np.zeros(0, dtype=layout.FLOW_KEY), clock_offset)]
    return _empty[0]


class _Columns(dict[str, np.ndarray]):
    """The table's columns by name, each `cap` rows long. A writable column
    (_LAZY: TCP health, enrichment, owners, drops, names) is stored only from
    its first write (allocate()); until then reading it gives a read-only
    view of its blank, so reads need no case of their own and a stray write
    fails loudly instead of going nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self.cap = 0

    def __missing__(self, name: str) -> np.ndarray:
        f = _LAZY[name]  # KeyError for any other name: a bug, not a lazy column
        return np.broadcast_to(np.array(f.blank, dtype=f.dtype), (self.cap,))

    def allocate(self, name: str) -> np.ndarray:
        col = self.get(name)
        if col is None:
            col = self[name] = blank(_LAZY[name], self.cap)
        return col


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
        # Stack of free rows; int32: max_flows is at most 50M (config.py).
        self._free = np.zeros(0, dtype=np.int32)
        self._nfree = 0
        self._cap = 0
        self._keys = np.zeros(0, dtype=layout.FLOW_KEY)
        self._c = _Columns()
        self._c.update({f.name: blank(f, 0) for f in fields.TABLE_FIELDS if f.name not in _LAZY})
        self._c.update({n: np.zeros(0, dtype=t) for n, t in _BOOKKEEPING.items()})
        self._grow(min(initial_capacity, max_flows))
        # The last merge_many's batches' keys and the row each key got (-1:
        # no room), batch by batch, and _inserts when it ended: merged_rows()
        # hands them to readers of the same drain after the step, instead of
        # a second index lookup. _inserts counts _upsert calls that gave keys
        # rows (a row given to another key since makes those rows stale).
        self._inserts = 0
        self._merged: tuple[list[np.ndarray], list[np.ndarray], int] = ([], [], 0)

    def set_timeouts(self, idle_timeout: float, active_timeout: float) -> None:
        self.idle_ns = int(idle_timeout * NS)
        self.active_ns = int(active_timeout * NS)

    # -- storage ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def _words(self) -> np.ndarray:
        """The stored keys as uint64 words (layout.FLOW_KEY_WORDS), for the index."""
        return layout.FLOW_KEY_WORDS.view(self._keys)

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
        free = np.zeros(new_cap, dtype=np.int32)
        free[: self._nfree] = self._free[: self._nfree]
        added = np.arange(new_cap - 1, self._cap - 1, -1, dtype=np.int32)
        free[self._nfree : self._nfree + len(added)] = added
        self._free = free
        self._nfree += len(added)
        self._index.reserve_rows(new_cap)
        self._cap = self._c.cap = new_cap

    def _alloc(self, n: int) -> np.ndarray:
        if self._nfree < n:
            self._grow(self._cap + n - self._nfree)
        rows = self._free[self._nfree - n : self._nfree][::-1].astype(np.int64)
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
        cols: dict[str, np.ndarray] = {}
        for f in fields.BATCH_FIELDS:
            if f.name == "end_reason":
                cols[f.name] = np.full(len(rows), int(reason), dtype=f.dtype)
            elif f.merge == SUM:
                cols[f.name] = c[f.name][rows] - c[f"exp_{f.name}"][rows]
            elif f.merge == MIN:  # the period's start: not before the last export
                cols[f.name] = np.maximum(c[f.name][rows], c["exp_start_ns"][rows])
            else:
                cols[f.name] = c[f.name][rows]
        batch = FlowBatch(self._keys[rows].copy(), cols, self.clock_offset)
        if end:
            self._release(rows)
        # Zero-packet periods (no traffic since the last export) carry nothing.
        keep = batch["packets"] > 0
        if not keep.all():
            batch = batch.select(keep)
        return batch

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
        for f in _RATES:
            c[f.name][live] = 0.0
        ended: list[FlowBatch] = []
        touched: list[np.ndarray] = []
        created: list[np.ndarray] = []
        fin: list[np.ndarray] = []
        flags = fields.member("tcp_flags")
        merged: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        for keys, stats in batches:
            if len(keys) == 0:
                continue
            every, stats = self._upsert(keys, stats, touched, ended, created)
            merged[0].append(keys)
            merged[1].append(every)
            rows = every[every >= 0]
            for f in _COUNTERS:
                col, new = c[f.name], stats[f.member]
                if f.merge == SUM:
                    col[rows] += new
                elif f.merge == MIN:
                    col[rows] = np.minimum(col[rows], new)
                elif f.merge == MAX:
                    col[rows] = np.maximum(col[rows], new)
                elif f.merge == OR:
                    col[rows] |= new.astype(col.dtype)
                else:
                    col[rows] = new
            if interval > 0:
                for f in _RATES:
                    c[f.name][rows] += stats[fields.member(f.rate_of)] * f.scale / interval
            touched.append(rows)
            fin.append(rows[(stats[flags] & (TCP_FIN | TCP_RST)) != 0])
        self._merged = (*merged, self._inserts)
        if created:
            # A flow new in this interval starts at its first packet on any
            # CPU: a later batch (another CPU) may have lowered first_ns.
            new_rows = np.concatenate(created)
            c["exp_start_ns"][new_rows] = c["first_ns"][new_rows]
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
        created: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows for keys, creating the missing ones (evicting if full).

        New rows are appended to `created`.
        Returns (rows, stats): the row of every key (-1: none) and the stats
        of the keys that have one; keys that found no room even after
        eviction end at once (records in `ended`) and are counted as forced
        evictions.
        """
        c = self._c
        keys = np.ascontiguousarray(keys)
        words = layout.FLOW_KEY_WORDS.view(keys)
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
            self._inserts += 1
            rows[new] = new_rows
            self._keys[new_rows] = keys[new]
            self._index.insert(hashes[new], new_rows, self._words())
            for f in fields.TABLE_FIELDS:
                if f.name in c:  # a lazy column not allocated yet is blank throughout
                    c[f.name][new_rows] = f.blank
            for name in _EXPORTED:
                c[name][new_rows] = 0
            # A new flow starts at its first packet (MIN-merged: not at 0).
            first = fields.member("first_ns")
            c["first_ns"][new_rows] = stats[first][new]
            # Once per flow: a refresh of the conversation view only aggregates.
            c["conv_id"][new_rows], c["conv_leg"][new_rows] = ids_and_legs(words[new])
            c["exp_start_ns"][new_rows] = stats[first][new]
            c["live"][new_rows] = True
            created.append(new_rows)
        have = rows >= 0
        return rows, (stats if have.all() else stats[have])

    def _stats_batch(self, keys: np.ndarray, stats: np.ndarray) -> FlowBatch:
        """Records for drained flows that never get a row (no room)."""
        cols = {f.name: stats[f.member].astype(f.dtype) for f in _COUNTERS}
        reason = np.full(len(keys), int(EndReason.LACK_OF_RESOURCES), dtype="u1")
        return FlowBatch.of(keys.copy(), self.clock_offset, end_reason=reason, **cols)

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
            for name, f in _EXPORTED.items():
                c[name][active] = c[f.name][active]
            c["exp_start_ns"][active] = now_ns
        return FlowBatch.concat(out, self.clock_offset)

    def flush(self, reason: EndReason = EndReason.FORCED_END) -> FlowBatch:
        """End every flow (shutdown)."""
        live = np.flatnonzero(self._c["live"])
        return self._take(live, reason, end=True)

    # -- queries -----------------------------------------------------------------

    def _record(self, row: int) -> FlowRecord:
        values = {f.name: self._c[f.name][row].item() for f in fields.TABLE_FIELDS}
        return FlowRecord(
            key=decode_key(self._keys[row]),
            clock_offset=self.clock_offset,
            **_record_values(values, fields.TABLE_FIELDS),
        )

    def top(self, n: int, by: str = "bytes", descending: bool = True) -> list[FlowRecord]:
        """The n first flows by a column (a SORT_COLUMNS name); only those n
        become Python objects."""
        f = fields.SORTABLE.get(by)
        if f is None or not f.column:
            raise ValueError(f"cannot sort by {by!r}: one of {', '.join(SORT_COLUMNS)}")
        live = np.flatnonzero(self._c["live"])
        if len(live) == 0 or n <= 0:
            return []
        vals = self._c[f.name][live]
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
        """One column (a fields.TABLE_FIELDS name) at rows, a copy; rates as float64."""
        out: np.ndarray = self._c[name][rows]
        return out.astype(np.float64) if out.dtype.kind == "f" else out

    def set_column(self, name: str, rows: np.ndarray, values: np.ndarray | int) -> None:
        """Writes a TCP health or enrichment column at rows."""
        if name not in _WRITABLE:
            raise KeyError(name)
        col = self._c.get(name)
        if col is None:
            if not np.any(np.asarray(values) != _LAZY[name].blank) or not np.size(rows):
                return  # nothing but blanks: the column still needs no memory
            col = self._c.allocate(name)
        col[rows] = values

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """The live row of each layout.FLOW_KEY key, -1 where it has none."""
        keys = np.ascontiguousarray(keys, dtype=layout.FLOW_KEY)
        words = layout.FLOW_KEY_WORDS.view(keys)
        return self._index.lookup(words, hash_words(words), self._words())

    def merged_rows(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
        """rows_of() the keys of batches (concatenated), from what the last
        merge_many found for them, when batches are the ones it merged (the
        same key arrays, unchanged) and no key got a row since; None
        otherwise. Rows a step ended since (FIN, timeouts) are -1, as
        rows_of would say; no index lookup."""
        mkeys, mrows, inserts = self._merged
        given = [k for k, _ in batches if len(k)]
        if inserts != self._inserts or len(given) != len(mkeys):
            return None
        if any(a is not b for a, b in zip(given, mkeys, strict=True)):
            return None
        if not mrows:
            return np.zeros(0, dtype=np.int64)
        rows = mrows[0] if len(mrows) == 1 else np.concatenate(mrows)
        return np.where(self._c["live"][rows] & (rows >= 0), rows, -1)

    def keys_at(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._keys[rows]
        return out

    def words_at(self, rows: np.ndarray) -> np.ndarray:
        """Keys at rows as layout.FLOW_KEY_WORDS words (faster to gather than records)."""
        out: np.ndarray = self._words()[rows]
        return out

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Keys and the view's columns at rows (copies)."""
        return self._keys[rows], self.gather_columns(rows)

    def gather_columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """VIEW_COLUMNS at rows (column() of each)."""
        return {name: self.column(name, rows) for name in VIEW_COLUMNS}

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
            float(c["bps"][live].sum()),
        )
