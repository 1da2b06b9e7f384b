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
from typing import TYPE_CHECKING, Protocol

import numpy as np

from flowtop.core.engine import Engine
from flowtop.core.flowindex import hash_words
from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import InterfaceCounters, proto_name
from flowtop.core.tcphealth import HealthGroup
from flowtop.kernel import layout
from flowtop.query.filterexpr import Columns, Filter, FilterError, parse
from flowtop.sanitize import clean

if TYPE_CHECKING:
    from flowtop.enrich import Enricher, Entity

GROUPS = ("flow", "src", "dst", "pair", "port", "proto", "iface", "asn", "country", "label")
# Groups by what enrichment knows of each flow's remote end.
ENTITY_GROUPS = ("asn", "country", "label")
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
    "rtt",
    "retrans",
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
    src_label: str | None = None
    dst_label: str | None = None
    group: str | None = None  # the value of an asn/country/label group


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
    tcp_health: tuple[HealthGroup, ...] = ()  # worst first


class ViewSource(Protocol):
    interval: float

    def step(self) -> None: ...

    def snapshot(self, query: ViewQuery) -> Snapshot: ...

    def history(self, row_key: str) -> list[tuple[float, float]]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


# -- queries -----------------------------------------------------------------------------
#
# Keys travel as (n, 6) uint64 words (the raw 48-byte flow keys): gathering and
# masking plain words is several times cheaper than structured records, and a
# group's identity is the key with the bytes the group ignores masked off.

_ALL = 0xFFFF_FFFF_FFFF_FFFF
_VER = 0xFF << 40  # ip_version byte of word 0
_GROUP_MASKS: dict[str, tuple[int, ...]] = {
    "src": (_VER, _ALL, _ALL, 0, 0, 0),
    "dst": (_VER, 0, 0, _ALL, _ALL, 0),
    "pair": (_VER, _ALL, _ALL, _ALL, _ALL, 0),
    "proto": (0xFF << 48, 0, 0, 0, 0, 0),
    "iface": (0xFF_FFFF_FFFF, 0, 0, 0, 0, 0),  # ifindex and direction
}
_GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "flow": ("src", "dst", "ports", "proto", "iface", "vlan"),
    "src": ("src",),
    "dst": ("dst",),
    "pair": ("src", "dst"),
    "port": ("proto", "service"),
    "proto": ("proto",),
    "iface": ("iface",),
    "asn": (),
    "country": (),
    "label": (),
}


class EntityArrays:
    """The enricher's entities as numpy arrays (index: entity id), rebuilt as it grows."""

    def __init__(self, enricher: Enricher) -> None:
        self._enricher = enricher
        self._n = -1
        self._attrs: dict[str, np.ndarray] = {}

    def _refresh(self) -> None:
        ents = self._enricher.entities
        if len(ents) == self._n:
            return
        self._attrs = {
            "asn": np.array([e.asn or 0 for e in ents], dtype=np.int64),
            "country": np.array([e.country or "" for e in ents], dtype=object),
            "label": np.array([e.label or "" for e in ents], dtype=object),
            "local": np.array([e.local for e in ents], dtype=bool),
        }
        labels = {v: i for i, v in enumerate(sorted(set(self._attrs["label"].tolist())))}
        self._attrs["label_id"] = np.array(
            [labels[v] for v in self._attrs["label"].tolist()], dtype=np.int64
        )
        self._attrs["country_id"] = np.array(
            [
                int.from_bytes(c.encode()[:4].ljust(4, b"\0"), "little")
                for c in self._attrs["country"].tolist()
            ],
            dtype=np.int64,
        )
        self._n = len(ents)

    def attr(self, name: str) -> np.ndarray:
        self._refresh()
        return self._attrs[name]

    def entity(self, eid: int) -> Entity:
        return self._enricher.entity(max(eid, 0))


def _remote_ents(
    words: np.ndarray, ents: tuple[np.ndarray, np.ndarray], ea: EntityArrays
) -> np.ndarray:
    """The entity of each flow's remote end: the end that is not local; when
    both or neither are, the source of ingress and the destination of egress."""
    src, dst = np.maximum(ents[0], 0), np.maximum(ents[1], 0)
    local = ea.attr("local")
    sl, dl = local[src], local[dst]
    ingress = _field(words, "direction") == 0
    use_src = np.where(sl != dl, dl, ingress)
    out: np.ndarray = np.where(use_src, src, dst)
    return out


def _field(words: np.ndarray, name: str) -> np.ndarray:
    return Columns(words, {}).field(name)


def service_port(words: np.ndarray) -> np.ndarray:
    """The service side of each flow: the lower non-zero port (0 for ICMP)."""
    sp = _field(words, "sport").astype(np.int64)
    dp = _field(words, "dport").astype(np.int64)
    svc = np.where((dp != 0) & ((dp <= sp) | (sp == 0)), dp, sp)
    out: np.ndarray = np.where(np.isin(_field(words, "proto"), (1, 58)), 0, svc)
    return out


def _group_words(words: np.ndarray, group: str) -> np.ndarray:
    """(n, 6) uint64 words identifying each flow's group."""
    if group == "port":
        g = np.zeros_like(words)
        g[:, 0] = _field(words, "proto") << np.uint64(48)
        g[:, 5] = service_port(words).astype(np.uint64)
        return g
    out: np.ndarray = words & np.array(_GROUP_MASKS[group], dtype=np.uint64)
    return out


@dataclass
class _Agg:
    words: np.ndarray  # one representative flow key per row, as words
    rtt: np.ndarray  # worst (largest) known RTT of the row's flows, 0 = none
    retrans: np.ndarray  # retransmits summed over flows that know them
    retr_known: np.ndarray  # flows of the row that know their retransmits
    src_ent: np.ndarray  # entity ids of a representative flow (-1 = none)
    dst_ent: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    pps: np.ndarray
    Bps: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    flags: np.ndarray
    flows: np.ndarray
    ids: np.ndarray  # u64 identity of each row (flow or group)


def _aggregate(
    words: np.ndarray, cols: dict[str, np.ndarray], group: str, gid: np.ndarray | None = None
) -> _Agg:
    known = (cols["retr_src"] > 0).astype(np.int64)
    if group == "flow":
        return _Agg(
            words,
            cols["rtt_us"],
            cols["retrans"],
            known,
            cols["src_ent"],
            cols["dst_ent"],
            cols["packets"],
            cols["bytes"],
            cols["pps"],
            cols["Bps"],
            cols["first_ns"],
            cols["last_ns"],
            cols["flags"],
            np.ones(len(words), dtype=np.int64),
            hash_words(words),
        )
    if gid is None:
        gid = hash_words(_group_words(words, group))
    # One sort, then every reduction runs over contiguous runs of a group.
    order = np.argsort(gid, kind="stable")
    g = gid[order]
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))

    def red(ufunc: np.ufunc, col: np.ndarray) -> np.ndarray:
        out: np.ndarray = ufunc.reduceat(col[order], starts)
        return out

    rep = order[starts]
    return _Agg(
        words[rep],
        red(np.maximum, cols["rtt_us"]),
        red(np.add, cols["retrans"] * known),
        red(np.add, known),
        cols["src_ent"][rep],
        cols["dst_ent"][rep],
        red(np.add, cols["packets"]),
        red(np.add, cols["bytes"]),
        red(np.add, cols["pps"]),
        red(np.add, cols["Bps"]),
        red(np.minimum, cols["first_ns"]),
        red(np.maximum, cols["last_ns"]),
        red(np.bitwise_or, cols["flags"]),
        np.diff(np.concatenate((starts, [len(g)]))),
        g[starts],
    )


def _sort_order(
    a: _Agg, by: str, descending: bool, limit: int, ifnames: Mapping[int, str]
) -> np.ndarray:
    n = len(a.ids)
    counters = {
        "bps": a.Bps,
        "pps": a.pps,
        "bytes": a.bytes,
        "packets": a.packets,
        "flows": a.flows,
        "first_seen": a.first_ns,
        "last_seen": a.last_ns,
        "rtt": a.rtt,
        "retrans": a.retrans,
    }
    if by in counters or by in ("sport", "dport", "proto"):
        col = counters[by] if by in counters else _field(a.words, by)
        vals = col.astype(np.float64)
        if descending:
            vals = -vals
        # Ties broken by identity so rows do not jump between equal refreshes.
        if limit < n:
            part = np.argpartition(vals, limit - 1)[:limit]
            out: np.ndarray = part[np.lexsort((a.ids[part], vals[part]))]
            return out
        out = np.lexsort((a.ids, vals))
        return out
    if by in ("src", "dst"):
        w = a.words[:, 1:3] if by == "src" else a.words[:, 3:5]
        be = w.byteswap()  # network byte order as numbers: address order
        order = np.lexsort((a.ids, be[:, 1], be[:, 0], _field(a.words, "ip_version")))
    else:  # iface: by name, then direction
        rank = {n: i for i, n in enumerate(sorted(set(ifnames.values())))}
        ifx = _field(a.words, "ifindex")
        by_index = np.array([rank.get(ifnames.get(int(i), ""), -1) for i in ifx], dtype=np.int64)
        order = np.lexsort((a.ids, _field(a.words, "direction"), by_index))
    if descending:
        order = order[::-1]
    out = order[:limit]
    return out


def _addr(raw: bytes, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def _ends(a: _Agg, i: int, ea: EntityArrays | None, shown: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    if ea is None:
        return out
    for end in ("src", "dst"):
        eid = int((a.src_ent if end == "src" else a.dst_ent)[i])
        if end not in shown or eid < 0:
            continue
        e = ea.entity(eid)
        out[f"{end}_asn"] = e.asn
        out[f"{end}_country"] = e.country
        out[f"{end}_label"] = e.label
    return out


class _Nothing:
    asn: int | None = None
    as_org: str | None = None
    country: str | None = None
    label: str | None = None


_NOTHING = _Nothing()


def _group_value(group: str, e: Entity | _Nothing) -> str:
    if group == "asn":
        if not e.asn:
            return "unknown AS"
        return f"AS{e.asn} {e.as_org}" if e.as_org else f"AS{e.asn}"
    if group == "country":
        return e.country or "unknown country"
    return e.label or "(no label)"


def _row(
    a: _Agg,
    i: int,
    group: str,
    offset: float,
    ifnames: Mapping[int, str],
    ea: EntityArrays | None = None,
    group_eid: np.ndarray | None = None,
) -> ViewRow:
    k = np.ascontiguousarray(a.words[i]).view(layout.FLOW_KEY)[0]
    shown = _GROUP_COLUMNS[group]
    ver = int(k["ip_version"])
    proto = int(k["proto"])
    ifindex = int(k["ifindex"])
    ports = "ports" in shown
    dport = int(k["dport"]) if ports else None
    if "service" in shown:
        dport = int(service_port(a.words[i : i + 1])[0])
    gval = None
    if group in ENTITY_GROUPS:
        eid = int(group_eid[i]) if group_eid is not None else 0
        gval = _group_value(group, ea.entity(eid) if ea is not None else _NOTHING)
    rtt = int(a.rtt[i])
    return ViewRow(
        key=f"{group}:{int(a.ids[i]):016x}",
        src=_addr(bytes(k["src"]), ver) if "src" in shown else None,
        sport=int(k["sport"]) if ports else None,
        dst=_addr(bytes(k["dst"]), ver) if "dst" in shown else None,
        dport=dport,
        proto=proto if "proto" in shown else None,
        proto_name=proto_name(proto) if "proto" in shown else None,
        iface=clean(ifnames.get(ifindex, f"if{ifindex}")) if "iface" in shown else None,
        direction=("in", "out")[int(k["direction"])] if "iface" in shown else None,
        vlan=int(k["vlan"]) if "vlan" in shown else None,
        bps=float(a.Bps[i]) * 8,
        pps=float(a.pps[i]),
        bytes=int(a.bytes[i]),
        packets=int(a.packets[i]),
        flows=int(a.flows[i]),
        first_seen=int(a.first_ns[i]) / NS + offset,
        last_seen=int(a.last_ns[i]) / NS + offset,
        tcp_flags=int(a.flags[i]),
        rtt_us=float(rtt) if rtt else None,
        retransmits=int(a.retrans[i]) if a.retr_known[i] else None,
        group=gval,
        **_ends(a, i, ea, shown),  # type: ignore[arg-type]
    )


_FLOW_SORT_COLUMNS = {
    "bps": "Bps",
    "pps": "pps",
    "bytes": "bytes",
    "packets": "packets",
    "flows": "packets",  # one flow per row: order by packets
    "first_seen": "first_ns",
    "last_seen": "last_ns",
}


def _ents(table: FlowTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return table.column("src_ent", rows), table.column("dst_ent", rows)


def _matching(
    table: FlowTable, flt: Filter, ifnames: Mapping[int, str], ea: EntityArrays | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Live rows passing the filter (and their key words, when read)."""
    rows = table.live_rows()
    if not flt.text or len(rows) == 0:
        return rows, None
    words = table.words_at(rows)
    ents = _ents(table, rows) if ea is not None else None
    keep = flt(Columns(words, ifnames, ents, ea))
    return rows[keep], words[keep]


def _smallest(vals: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest values, plus every value tied with the k-th.

    Ties are all returned so that the caller's tie-break by identity decides
    the last places, and equal rows do not swap between refreshes. With many
    values, a threshold from a sample first narrows the partition to a few
    hundred candidates (partitioning 100k values costs ~1 ms; this ~0.1 ms).
    """
    n = len(vals)
    if k >= n:
        return np.arange(n)
    cand = None
    if n > 20 * k and n > 4096:
        step = n // 2048
        sample = vals[::step]
        m = min(len(sample) - 1, 2 * (k * len(sample) // n + 1))
        thresh = np.partition(sample, m)[m]
        idx = np.flatnonzero(vals <= thresh)
        if k <= len(idx) <= n // 4:
            cand = idx
    if cand is None:
        cand = np.arange(n)
    part = cand[np.argpartition(vals[cand], k - 1)[:k]]
    edge = vals[part].max()
    out: np.ndarray = np.union1d(part, np.flatnonzero(vals == edge))
    return out


def _top_flows(
    table: FlowTable,
    query: ViewQuery,
    flt: Filter,
    ifnames: Mapping[int, str],
    ea: EntityArrays | None = None,
) -> tuple[list[ViewRow], int]:
    """The flow view sorted by a counter: only the top rows are gathered.

    The sort column alone is read for every (matching) flow; keys and the
    other columns only for the rows on screen, so a refresh costs little
    more with 100k flows than with 1k.
    """
    rows, _ = _matching(table, flt, ifnames, ea)
    matched = len(rows)
    if matched == 0:
        return [], 0
    vals = np.asarray(table.column(_FLOW_SORT_COLUMNS[query.sort], rows), dtype=np.float64)
    if query.descending:
        # Partition at the front: introselect near the end of an array full
        # of equal values (idle flows at rate 0) is several times slower.
        np.negative(vals, out=vals)
    limit = min(query.limit, matched)
    top = _smallest(vals, limit)
    sel = rows[top]
    agg = _aggregate(table.words_at(sel), table.gather_columns(sel), "flow")
    order = np.lexsort((agg.ids, vals[top]))[:limit]
    off = table.clock_offset
    return [_row(agg, int(i), "flow", off, ifnames, ea) for i in order], matched


def query_table(
    table: FlowTable,
    query: ViewQuery,
    flt: Filter,
    ifnames: Mapping[int, str],
    ea: EntityArrays | None = None,
) -> tuple[list[ViewRow], int]:
    """The query's top rows and how many rows (flows or groups) matched."""
    if query.group_by == "flow" and query.sort in _FLOW_SORT_COLUMNS:
        return _top_flows(table, query, flt, ifnames, ea)
    rows, words = _matching(table, flt, ifnames, ea)
    if len(rows) == 0:
        return [], 0
    if words is None:
        words = table.words_at(rows)
    gid = None
    group_eid = None
    if query.group_by in ENTITY_GROUPS:
        if ea is not None:
            remote = _remote_ents(words, _ents(table, rows), ea)
            attr = {"asn": "asn", "country": "country_id", "label": "label_id"}[query.group_by]
            gid = ea.attr(attr)[remote].astype(np.uint64)
        else:
            remote = np.zeros(len(rows), dtype=np.int64)
            gid = np.zeros(len(rows), dtype=np.uint64)
        order0 = np.argsort(gid, kind="stable")
        g = gid[order0]
        starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
        group_eid = remote[order0[starts]]
    agg = _aggregate(words, table.gather_columns(rows), query.group_by, gid)
    order = _sort_order(agg, query.sort, query.descending, query.limit, ifnames)
    out = [
        _row(agg, int(i), query.group_by, table.clock_offset, ifnames, ea, group_eid) for i in order
    ]
    return out, len(agg.ids)


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
        self._ea: EntityArrays | None = None
        self._ea_of: object = None

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
            ea = self._entity_arrays()
            try:
                rows, matched = query_table(self.engine.table, query, flt, ifnames, ea)
            except FilterError as exc:  # a term the data cannot answer (no enrichment)
                error = str(exc)
                self._filter = parse("")
                rows, matched = query_table(self.engine.table, query, self._filter, ifnames, ea)
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
                tcp_health=tuple(self.engine.tcp_health.groups() if self.engine.tcp_health else ()),
            )

    def _entity_arrays(self) -> EntityArrays | None:
        enricher = self.engine.enricher
        if enricher is None:
            return None
        if self._ea is None or self._ea_of is not enricher:
            self._ea = EntityArrays(enricher)
            self._ea_of = enricher
        return self._ea

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

    def stop(self) -> None:
        """Make a step() in progress return now (no more steps are wanted)."""

    def close(self) -> None:
        raise NotImplementedError
