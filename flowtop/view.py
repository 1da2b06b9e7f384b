"""What the live view asks of the engine: queries, snapshots, sources.

No Textual here. A ViewSource steps an engine (live or replayed) and answers
ViewQuery objects with Snapshots: filter, group, sort and the top rows, all
vectorised over the flow table's columns; only the rows the screen can show
become Python objects.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from flowtop.engine import Engine
from flowtop.filterexpr import Columns, Filter, FilterError, parse
from flowtop.flowindex import hash_words
from flowtop.flowtable import NS, FlowTable
from flowtop.model import InterfaceCounters, proto_name
from flowtop.sanitize import clean

GROUPS = ("flow", "src", "dst", "pair", "port", "proto", "iface")
SORT_KEYS = (
    "bps",
    "pps",
    "bytes",
    "packets",
    "flows",
    "src",
    "dst",
    "sport",
    "dport",
    "proto",
    "iface",
    "first_seen",
    "last_seen",
)
HISTORY_SECONDS = 60
HISTORY_KEYS = 2000


@dataclass(frozen=True, slots=True)
class ViewQuery:
    filter: str = ""
    group_by: str = "flow"
    sort: str = "bps"
    descending: bool = True
    limit: int = 100

    def __post_init__(self) -> None:
        if self.group_by not in GROUPS:
            raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
        if self.sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")


@dataclass(frozen=True, slots=True)
class ViewRow:
    key: str
    src: str | None
    sport: int | None
    dst: str | None
    dport: int | None
    proto: int | None
    proto_name: str | None
    iface: str | None
    direction: str | None
    vlan: int | None
    bps: float
    pps: float
    bytes: int
    packets: int
    flows: int
    first_seen: float
    last_seen: float
    tcp_flags: int
    rtt_us: float | None = None
    retransmits: int | None = None
    src_asn: int | None = None
    src_country: str | None = None
    dst_asn: int | None = None
    dst_country: str | None = None


@dataclass(frozen=True, slots=True)
class InterfaceRow:
    name: str
    ifindex: int
    rx_bps: float
    tx_bps: float
    rx_pps: float
    tx_pps: float
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    time: float
    interval: float
    host: str
    query: ViewQuery
    rows: tuple[ViewRow, ...]
    matched: int
    active_flows: int
    interfaces: tuple[InterfaceRow, ...]
    rx_bps: float
    tx_bps: float
    health: dict[str, int]
    problems: int
    filter_error: str | None = None


class ViewSource(Protocol):
    interval: float

    def step(self) -> None: ...

    def snapshot(self, query: ViewQuery) -> Snapshot: ...

    def history(self, row_key: str) -> list[tuple[float, float]]: ...

    def close(self) -> None: ...


# -- queries -----------------------------------------------------------------------------


def _group_fields(group: str) -> tuple[str, ...]:
    return {
        "flow": (),
        "src": ("ip_version", "src"),
        "dst": ("ip_version", "dst"),
        "pair": ("ip_version", "src", "dst"),
        "port": ("proto", "svc"),
        "proto": ("proto",),
        "iface": ("ifindex", "direction"),
    }[group]


def service_port(keys: np.ndarray) -> np.ndarray:
    """The service side of each flow: the lower non-zero port (0 for ICMP)."""
    sp = keys["sport"].astype(np.int64)
    dp = keys["dport"].astype(np.int64)
    svc = np.where((dp != 0) & ((dp <= sp) | (sp == 0)), dp, sp)
    return np.where(np.isin(keys["proto"], (1, 58)), 0, svc)


def _group_words(keys: np.ndarray, group: str) -> np.ndarray:
    """(n, 6) uint64 words identifying each flow's group (zeros where unused)."""
    g = np.zeros(len(keys), dtype=keys.dtype)
    for f in _group_fields(group):
        if f == "svc":
            g["sport"] = service_port(keys)
        else:
            g[f] = keys[f]
    return np.ascontiguousarray(g).view("<u8").reshape(-1, 6)


@dataclass
class _Agg:
    keys: np.ndarray  # one representative flow key per row
    packets: np.ndarray
    bytes: np.ndarray
    pps: np.ndarray
    Bps: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    flags: np.ndarray
    flows: np.ndarray
    ids: np.ndarray  # u64 identity of each row (flow or group)


def _aggregate(keys: np.ndarray, cols: dict[str, np.ndarray], group: str) -> _Agg:
    if group == "flow":
        words = np.ascontiguousarray(keys).view("<u8").reshape(-1, 6)
        return _Agg(
            keys,
            cols["packets"],
            cols["bytes"],
            cols["pps"],
            cols["Bps"],
            cols["first_ns"],
            cols["last_ns"],
            cols["flags"],
            np.ones(len(keys), dtype=np.int64),
            hash_words(words),
        )
    gid = hash_words(_group_words(keys, group))
    ids, first, inv = np.unique(gid, return_index=True, return_inverse=True)
    n = len(ids)
    first_ns = np.full(n, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(first_ns, inv, cols["first_ns"])
    last_ns = np.zeros(n, dtype=np.uint64)
    np.maximum.at(last_ns, inv, cols["last_ns"])
    flags = np.zeros(n, dtype=np.uint8)
    np.bitwise_or.at(flags, inv, cols["flags"])
    return _Agg(
        keys[first],
        np.bincount(inv, weights=cols["packets"], minlength=n).astype(np.uint64),
        np.bincount(inv, weights=cols["bytes"], minlength=n).astype(np.uint64),
        np.bincount(inv, weights=cols["pps"], minlength=n),
        np.bincount(inv, weights=cols["Bps"], minlength=n),
        first_ns,
        last_ns,
        flags,
        np.bincount(inv, minlength=n),
        ids,
    )


def _sort_order(
    a: _Agg, by: str, descending: bool, limit: int, ifnames: Mapping[int, str]
) -> np.ndarray:
    n = len(a.ids)
    numeric = {
        "bps": a.Bps,
        "pps": a.pps,
        "bytes": a.bytes,
        "packets": a.packets,
        "flows": a.flows,
        "first_seen": a.first_ns,
        "last_seen": a.last_ns,
        "sport": a.keys["sport"],
        "dport": a.keys["dport"],
        "proto": a.keys["proto"],
    }
    if by in numeric:
        vals = numeric[by].astype(np.float64)
        if descending:
            vals = -vals
        # Ties broken by identity so rows do not jump between equal refreshes.
        if limit < n:
            part = np.argpartition(vals, limit - 1)[:limit]
            return part[np.lexsort((a.ids[part], vals[part]))]
        return np.lexsort((a.ids, vals))
    if by in ("src", "dst"):
        words = np.ascontiguousarray(a.keys[by]).view(">u8").reshape(-1, 2)
        order = np.lexsort((a.ids, words[:, 1], words[:, 0], a.keys["ip_version"]))
    else:  # iface: by name, then direction
        names = sorted(set(ifnames.values()))
        rank = {n: i for i, n in enumerate(names)}
        by_index = np.array(
            [rank.get(ifnames.get(int(i), ""), -1) for i in a.keys["ifindex"]], dtype=np.int64
        )
        order = np.lexsort((a.ids, a.keys["direction"], by_index))
    if descending:
        order = order[::-1]
    return order[:limit]


def _addr(raw: bytes, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def _row(a: _Agg, i: int, group: str, offset: float, ifnames: Mapping[int, str]) -> ViewRow:
    k = a.keys[i]
    fields = _group_fields(group)
    full = group == "flow"
    ver = int(k["ip_version"])
    proto = int(k["proto"])

    def has(f: str) -> bool:
        return full or f in fields

    sport = int(k["sport"]) if full else None
    dport = int(k["dport"]) if full else None
    if group == "port":
        dport = int(service_port(a.keys[i : i + 1])[0])
    ifindex = int(k["ifindex"])
    return ViewRow(
        key=f"{group}:{int(a.ids[i]):016x}",
        src=_addr(bytes(k["src"]), ver) if has("src") else None,
        sport=sport,
        dst=_addr(bytes(k["dst"]), ver) if has("dst") else None,
        dport=dport,
        proto=proto if has("proto") else None,
        proto_name=proto_name(proto) if has("proto") else None,
        iface=clean(ifnames.get(ifindex, f"if{ifindex}")) if has("ifindex") else None,
        direction=("in", "out")[int(k["direction"])] if has("direction") else None,
        vlan=int(k["vlan"]) if full else None,
        bps=float(a.Bps[i]) * 8,
        pps=float(a.pps[i]),
        bytes=int(a.bytes[i]),
        packets=int(a.packets[i]),
        flows=int(a.flows[i]),
        first_seen=int(a.first_ns[i]) / NS + offset,
        last_seen=int(a.last_ns[i]) / NS + offset,
        tcp_flags=int(a.flags[i]),
    )


def query_table(
    table: FlowTable, query: ViewQuery, flt: Filter, ifnames: Mapping[int, str]
) -> tuple[list[ViewRow], int]:
    """The query's top rows and how many rows (flows or groups) matched."""
    _rows, keys, cols = table.live_columns()
    if len(keys) and flt.text:
        sel = np.flatnonzero(flt(Columns(keys, ifnames)))
        keys = keys[sel]
        cols = {n: c[sel] for n, c in cols.items()}
    if len(keys) == 0:
        return [], 0
    agg = _aggregate(keys, cols, query.group_by)
    order = _sort_order(agg, query.sort, query.descending, query.limit, ifnames)
    rows = [_row(agg, int(i), query.group_by, table.clock_offset, ifnames) for i in order]
    return rows, len(agg.ids)


# -- sources ------------------------------------------------------------------------------


@dataclass
class _IfaceRates:
    last: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    last_time: float = 0.0

    def update(self, counters: list[InterfaceCounters], now: float) -> tuple[InterfaceRow, ...]:
        per_if: dict[int, tuple[str, int, int, int, int]] = {}
        for c in counters:
            name, rb, rp, tb, tp = per_if.get(c.ifindex, (c.name, 0, 0, 0, 0))
            per_if[c.ifindex] = (
                name,
                rb + c.rx_bytes,
                rp + c.rx_packets,
                tb + c.tx_bytes,
                tp + c.tx_packets,
            )
        dt = now - self.last_time if self.last_time else 0.0
        rows = []
        for ifindex, (name, rb, rp, tb, tp) in sorted(per_if.items()):
            prev = self.last.get(ifindex)
            if prev is not None and dt > 0:
                rates = [
                    max(0, cur - old) / dt for cur, old in zip((rb, rp, tb, tp), prev, strict=True)
                ]
            else:
                rates = [0.0, 0.0, 0.0, 0.0]
            rows.append(
                InterfaceRow(
                    name=clean(name),
                    ifindex=ifindex,
                    rx_bps=rates[0] * 8,
                    tx_bps=rates[2] * 8,
                    rx_pps=rates[1],
                    tx_pps=rates[3],
                    rx_bytes=rb,
                    tx_bytes=tb,
                    rx_packets=rp,
                    tx_packets=tp,
                )
            )
            self.last[ifindex] = (rb, rp, tb, tp)
        self.last_time = now
        return tuple(rows)


class TableSource:
    """A ViewSource over an Engine (live or replayed): step, query, history."""

    def __init__(self, engine: Engine, host: str | None = None) -> None:
        self.engine = engine
        self.interval = engine.interval
        self.host = clean(host or socket.gethostname())
        self._lock = threading.RLock()
        self._filter = parse("")
        self._filters: dict[str, Filter] = {"": self._filter}
        self._ifrates = _IfaceRates()
        self._interfaces: tuple[InterfaceRow, ...] = ()
        self._history: OrderedDict[str, deque[tuple[float, float]]] = OrderedDict()
        self._now = time.time()

    # subclasses say what time it is (replay: the recorded time)
    def now(self) -> float:
        return time.time()

    def step(self) -> None:
        raise NotImplementedError

    def _after_step(self) -> None:
        self._now = self.now()
        self._interfaces = self._ifrates.update(self.engine.interface_counters(), self._now)

    def _compile(self, text: str) -> tuple[Filter, str | None]:
        if text in self._filters:
            return self._filters[text], None
        try:
            flt = parse(text)
        except FilterError as exc:
            return self._filter, str(exc)
        if len(self._filters) > 64:
            self._filters.clear()
        self._filters[text] = flt
        return flt, None

    def snapshot(self, query: ViewQuery) -> Snapshot:
        with self._lock:
            flt, error = self._compile(query.filter)
            if error is None:
                self._filter = flt
            ifnames = dict(self.engine.collector.names())
            rows, matched = query_table(self.engine.table, query, flt, ifnames)
            self._remember(rows)
            health = self.engine.health()
            counters = health.as_dict()
            return Snapshot(
                time=self._now,
                interval=self.interval,
                host=self.host,
                query=query,
                rows=tuple(rows),
                matched=matched,
                active_flows=len(self.engine.table),
                interfaces=self._interfaces,
                rx_bps=sum(i.rx_bps for i in self._interfaces),
                tx_bps=sum(i.tx_bps for i in self._interfaces),
                health=counters,
                problems=health.problems,
                filter_error=error,
            )

    def _remember(self, rows: list[ViewRow]) -> None:
        for r in rows:
            h = self._history.get(r.key)
            if h is None:
                h = self._history[r.key] = deque()
                if len(self._history) > HISTORY_KEYS:
                    self._history.popitem(last=False)
            else:
                self._history.move_to_end(r.key)
            if not h or h[-1][0] != self._now:
                h.append((self._now, r.bps))
            while h and h[0][0] < self._now - HISTORY_SECONDS:
                h.popleft()

    def history(self, row_key: str) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._history.get(row_key, ()))

    def close(self) -> None:
        raise NotImplementedError
