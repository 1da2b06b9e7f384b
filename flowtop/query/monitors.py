"""Monitors ([[monitor]] in the config): named sets of local and remote flow
ends, with their traffic both ways, TCP health and top conversations.

A monitor has `local` and `remote` filter expressions of the live view's
language, restricted to terms of flow keys and enrichment (host, net, port,
proto, iface, in/out, vlan, asn, country, label, zone, cross-zone; checked at
config load: filterexpr.check_static). Each flow end is tested alone
(filterexpr.end_view): a flow goes local->remote when its source end matches
`local` and its destination end `remote`, and remote->local the other way
round (filterexpr.monitor_ways); a flow that is both (the two sets overlap)
is local->remote. So on a host a connection of a local address to a remote
one is two flows, one each way; on a router the legs of a forwarded one are
counted once (core/conversations.counted_by_legs).

MonitorTracker is an engine observer (the engine's thread, after each step);
its figures:
- bytes and packets each way: totals since the start and the last
  interval's rates, from the interval's drained counters (exact, counted
  once);
- TCP: the step's TcpUpdate (core/tcphealth.join) rows in the monitor feed a
  window judged exactly like the TCP health groups (tcphealth.judge: RTT
  p50/p95 against the baseline, retransmit ratio, RTOs) with the monitor's
  thresholds ([health], then its own keys); retransmits and RTOs also as
  totals;
- the top 5 conversations of its flows by bytes (query_table over the flow
  table restricted to the monitor's flows).
The same tracker also sums the zone pairs of each interval (query/zones.py)
for the cross-zone rate and the Prometheus zone series.

The outputs read MonitorStatus tuples (statuses(): replaced whole each step,
so other threads read them without a lock): dump --json "monitor" lines,
Prometheus flowtop_monitor_* series, the live view's monitors panel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from flowtop.core import tcphealth
from flowtop.core.tcphealth import DEGRADED, HEALTHY, TcpUpdate
from flowtop.query import filterexpr
from flowtop.query.entities import EntityArrays
from flowtop.query.filterexpr import Columns, Filter, Mask
from flowtop.query.tablequery import query_table
from flowtop.query.types import GROUPS, ViewQuery, ViewRow
from flowtop.query.zones import DrainRecords, ZoneStep, drain_records, zone_step

if TYPE_CHECKING:
    from flowtop.config import Config, MonitorConfig
    from flowtop.core.engine import Engine
    from flowtop.core.flowtable import FlowTable

TOP = 5  # conversations a monitor lists
# Seconds between two reads of the top conversations (a query over the whole
# flow table per monitor: the other figures are per interval and cheap).
TOP_EVERY = 5.0
# Its top contributors are conversations (one row per connection, each
# direction counted once) where the query side has them, else flows.
TOP_GROUP = "conversation" if "conversation" in GROUPS else "flow"
LOCAL_TO_REMOTE = "local_to_remote"
REMOTE_TO_LOCAL = "remote_to_local"


@dataclass(frozen=True, slots=True)
class MonitorStatus:
    """One monitor after a step: what every output shows of it. Totals since
    the start; rates over the last interval; the TCP figures over the health
    window (tcphealth.WINDOW); top: its busiest conversations, most bytes
    first (read every TOP_EVERY s)."""

    name: str
    local: str
    remote: str
    verdict: str  # tcphealth.HEALTHY or DEGRADED
    reason: str  # why it is degraded ("" when healthy)
    local_to_remote_bytes: int = 0
    local_to_remote_packets: int = 0
    remote_to_local_bytes: int = 0
    remote_to_local_packets: int = 0
    local_to_remote_bps: float = 0.0
    remote_to_local_bps: float = 0.0
    local_to_remote_pps: float = 0.0
    remote_to_local_pps: float = 0.0
    rtt_p50_us: float | None = None
    rtt_p95_us: float | None = None
    rtt_baseline_us: float | None = None
    retransmit_ratio: float | None = None  # over the window
    retransmits: int = 0  # in the window
    data_segments: int = 0
    rto: int = 0
    retransmits_total: int = 0
    rto_total: int = 0
    rtt_samples_total: int = 0
    rtt_sum_us_total: float = 0.0
    top: tuple[ViewRow, ...] = ()

    @property
    def degraded(self) -> bool:
        return self.verdict == DEGRADED

    def as_dict(self) -> dict[str, object]:
        """The dump --json line (README, "Monitors")."""

        def r(v: float | None, nd: int = 0) -> float | int | None:
            return None if v is None else (round(v, nd) if nd else round(v))

        return {
            "type": "monitor",
            "name": self.name,
            "local": self.local,
            "remote": self.remote,
            "verdict": self.verdict,
            "reason": self.reason,
            "local_to_remote_bytes": self.local_to_remote_bytes,
            "local_to_remote_packets": self.local_to_remote_packets,
            "remote_to_local_bytes": self.remote_to_local_bytes,
            "remote_to_local_packets": self.remote_to_local_packets,
            "rtt_p50_us": r(self.rtt_p50_us),
            "rtt_p95_us": r(self.rtt_p95_us),
            "rtt_baseline_us": r(self.rtt_baseline_us),
            "retransmit_ratio": r(self.retransmit_ratio, 5),
            "retransmits": self.retransmits,
            "data_segments": self.data_segments,
            "rto": self.rto,
            "retransmits_total": self.retransmits_total,
            "rto_total": self.rto_total,
            "top": [_top_dict(t) for t in self.top],
        }


def _top_dict(t: ViewRow) -> dict[str, object]:
    out: dict[str, object] = {
        "src": t.src,
        "sport": t.sport,
        "dst": t.dst,
        "dport": t.dport,
        "proto": t.proto_name,
        "bytes": t.bytes,
        "packets": t.packets,
        "flows": t.flows,
    }
    for k in ("iface", "role", "up_bytes", "down_bytes"):
        v = getattr(t, k, None)
        if v is not None:
            out[k] = v
    return out


@dataclass
class _Monitor:
    """One configured monitor: its compiled ends and running figures."""

    cfg: MonitorConfig
    local: Mask
    remote: Mask
    series: tcphealth.Series = field(default_factory=tcphealth.Series)
    totals: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # l2r B, P, r2l B, P
    rates: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    retransmits_total: int = 0
    rto_total: int = 0
    rtt_samples_total: int = 0
    rtt_sum_us_total: float = 0.0
    top: tuple[ViewRow, ...] = ()

    @property
    def filter(self) -> Filter:
        local, remote = self.local, self.remote

        def mask(c: Columns) -> np.ndarray:
            up, down = filterexpr.monitor_ways(c, local, remote)
            out: np.ndarray = up | down
            return out

        return Filter(f"monitor {self.cfg.name}", mask)


NONE, UP, DOWN = 0, 1, 2  # a flow's way in a monitor: not in it, local->remote, remote->local


def _known_ways(flt: Filter, words: np.ndarray, member: np.ndarray) -> Filter:
    """flt, answered by `member` (whether each row is in the monitor, known
    already) when it is asked about exactly the rows whose key words are
    `words` (query_table asks about the live rows, in order); anything else
    is worked out by flt itself."""

    def mask(c: Columns) -> np.ndarray:
        if c.words.shape == words.shape and np.array_equal(c.words, words):
            return member
        return flt(c)

    return Filter(flt.text, mask)


class _WayMemo:
    """Each flow row's way in every monitor, worked out once per row: a
    flow's key and entities do not change while it has its row, so a step
    evaluates the monitors' expressions for new flows only. An entry holds
    while its row's first_ns and entity ids are the ones it was made for (a
    row a new flow reuses, or one looked up again after an enrichment
    reload, is worked out again); a new configuration starts a new memo."""

    def __init__(self, monitors: int) -> None:
        self._ok = np.zeros(0, dtype=bool)
        self._first = np.zeros(0, dtype=np.uint64)
        self._src = np.zeros(0, dtype=np.int64)
        self._dst = np.zeros(0, dtype=np.int64)
        self._ways = np.zeros((0, monitors), dtype=np.int8)

    def _grow(self, size: int) -> None:
        old = len(self._ok)
        if size <= old:
            return
        size = max(size, 2 * old, 1024)
        for name in ("_ok", "_first", "_src", "_dst", "_ways"):
            a = getattr(self, name)
            grown = np.zeros((size, *a.shape[1:]), dtype=a.dtype)
            grown[:old] = a
            setattr(self, name, grown)

    def ways(
        self, table: FlowTable, rows: np.ndarray, cols: Columns, monitors: Sequence[_Monitor]
    ) -> np.ndarray:
        """(len(rows), monitors) ways of the rows of cols, whose table rows
        are `rows` (-1: none, worked out every time). Vectorised: the memo's
        entries of all rows are gathered and checked at once, and the
        expressions run once over the rows it does not know."""
        if not len(rows) or not monitors:
            return np.zeros((len(rows), len(monitors)), dtype=np.int8)
        assert cols.ents is not None or cols.entities is None
        ents = cols.ents or (np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64))
        has = rows >= 0
        r = np.maximum(rows, 0)  # rows without one read row 0's entry, and miss
        self._grow(int(r.max()) + 1)
        first = table.column("first_ns", r).astype(np.uint64)
        hit = has & self._ok[r]
        hit &= self._first[r] == first
        hit &= self._src[r] == ents[0]
        hit &= self._dst[r] == ents[1]
        # np.take: a row gather of a 2-d array, several times faster than
        # fancy indexing.
        out: np.ndarray = np.take(self._ways, r, axis=0)
        need = np.flatnonzero(~hit)
        if not len(need):
            return out
        sub = cols.rows(need)
        end = filterexpr.end_view(sub, "src")
        for j, m in enumerate(monitors):
            up, down = filterexpr.monitor_ways(sub, m.local, m.remote, end)
            out[need, j] = np.where(up, UP, np.where(down, DOWN, NONE))
        # Remember the rows (not those whose entities are not looked up yet).
        miss = need[has[need]]
        rr = rows[miss]
        src, dst = ents[0][miss], ents[1][miss]
        self._first[rr] = first[miss]
        self._src[rr], self._dst[rr] = src, dst
        self._ways[rr] = out[miss]
        self._ok[rr] = (src >= 0) & (dst >= 0)
        return out


def _compile(cfg: MonitorConfig) -> _Monitor:
    return _Monitor(cfg, filterexpr.parse(cfg.local).mask, filterexpr.parse(cfg.remote).mask)


class MonitorTracker:
    """The monitors' and zone pairs' figures, step by step (module docstring)."""

    def __init__(self, monitors: Sequence[MonitorConfig] = ()) -> None:
        self._monitors: list[_Monitor] = []
        self._ea: EntityArrays | None = None
        self._ea_of: object = None
        self._statuses: tuple[MonitorStatus, ...] = ()
        self._top_at: float | None = None  # when the top conversations were read
        self.zones: ZoneStep = ZoneStep((), 0)  # the last interval's zone pairs
        self.zones_interval = 0.0
        self.zoned = False  # any zone configured (labels with zone=, a host zone)
        self.configure(monitors)

    def configure(self, monitors: Sequence[MonitorConfig]) -> None:
        """New definitions (start, reload): a monitor whose name, local and
        remote are unchanged keeps its totals and window (new thresholds
        apply); the `monitor NAME` filter term knows exactly these."""
        old = {m.cfg.name: m for m in self._monitors}
        out = []
        for cfg in monitors:
            m = old.get(cfg.name)
            if m is not None and (m.cfg.local, m.cfg.remote) == (cfg.local, cfg.remote):
                m.cfg = cfg
            else:
                m = _compile(cfg)
            out.append(m)
        self._monitors = out
        self._memo = _WayMemo(len(out))
        filterexpr.set_monitors([(m.cfg.name, m.cfg.local, m.cfg.remote) for m in out])
        self._statuses = tuple(self._status(m) for m in out)

    @property
    def names(self) -> list[str]:
        return [m.cfg.name for m in self._monitors]

    def statuses(self) -> tuple[MonitorStatus, ...]:
        return self._statuses

    @property
    def cross_zone_bps(self) -> float | None:
        """Bits/s between two different zones over the last interval; None
        when no zone is configured."""
        if not self.zoned:
            return None
        return self.zones.cross_bytes * 8 / self.zones_interval if self.zones_interval else 0.0

    def _entity_arrays(self, engine: Engine) -> EntityArrays | None:
        enricher = engine.enricher
        if enricher is None:
            return None
        if self._ea is None or self._ea_of is not enricher:
            self._ea, self._ea_of = EntityArrays(enricher), enricher
        return self._ea

    def observe(self, engine: Engine) -> None:
        """The engine observer: one step's figures (nothing new when its drain failed)."""
        d = engine.last_drain
        self.zones = ZoneStep((), 0)
        if d is None:
            return
        ea = self._entity_arrays(engine)
        self.zoned = ea is not None and ea.zoned
        if not self._monitors and not self.zoned:
            return  # nothing to count: no cost per step
        ifnames = engine.collector.names()
        recs = drain_records(d, engine.enricher, engine.table)
        if ea is not None and self.zoned:
            self.zones = zone_step(recs, ea)
            self.zones_interval = d.interval
        self.update(recs, engine.last_tcp, engine.table, ifnames, ea, d.interval, d.now_ns / 1e9)

    def update(
        self,
        recs: DrainRecords,
        tcp: TcpUpdate,
        table: FlowTable,
        ifnames: Mapping[int, str],
        ea: EntityArrays | None,
        interval: float,
        now: float,
    ) -> None:
        """One interval: its drained records, its TCP update, the table after it."""
        if not self._monitors:
            return
        cols = Columns(recs.words, ifnames, (recs.src_ent, recs.dst_ent), ea)
        ways = self._memo.ways(table, recs.rows, cols, self._monitors)
        tways = np.zeros((0, len(self._monitors)), dtype=np.int8)
        if len(tcp.rows):
            src = np.asarray(table.column("src_ent", tcp.rows), dtype=np.int64)
            dst = np.asarray(table.column("dst_ent", tcp.rows), dtype=np.int64)
            tcols = Columns(table.words_at(tcp.rows), ifnames, (src, dst), ea)
            tways = self._memo.ways(table, tcp.rows, tcols, self._monitors)
        top = self._top_at is None or now - self._top_at >= TOP_EVERY
        for j, m in enumerate(self._monitors):
            self._add_traffic(m, ways[:, j], recs, interval)
            self._add_tcp(m, tways[:, j] != NONE, tcp, now)
        if top:
            self._top_at = now
            self._read_top(table, ifnames, ea)
        self._statuses = tuple(self._status(m) for m in self._monitors)

    def refresh_top(self, engine: Engine) -> None:
        """Reads the top conversations now (dump: before the end of the run
        empties the flow table)."""
        self._read_top(engine.table, engine.collector.names(), self._entity_arrays(engine))
        self._statuses = tuple(self._status(m) for m in self._monitors)

    def _read_top(
        self, table: FlowTable, ifnames: Mapping[int, str], ea: EntityArrays | None
    ) -> None:
        # The monitors' ways of every live row at once, from the memo (the
        # expressions run only for rows it does not know): each monitor's
        # query then filters by them instead of evaluating its expressions
        # over the whole table.
        live = table.live_rows()
        words = table.words_at(live)
        ents = (table.column("src_ent", live), table.column("dst_ent", live))
        cols = Columns(words, ifnames, ents if ea is not None else None, ea)
        ways = self._memo.ways(table, live, cols, self._monitors)
        for j, m in enumerate(self._monitors):
            flt = _known_ways(m.filter, words, ways[:, j] != NONE)
            # A monitor whose flows all ended keeps the last ones it had.
            m.top = self._top(m, table, ifnames, ea, flt) or m.top

    @staticmethod
    def _add_traffic(m: _Monitor, ways: np.ndarray, recs: DrainRecords, interval: float) -> None:
        if not len(recs):
            m.rates = (0.0, 0.0, 0.0, 0.0)
            return
        # Sums per way (NONE, UP, DOWN) of the counted records, one pass
        # each; float64 sums are exact below 2**53 bytes per interval.
        way = np.where(recs.counted, ways, NONE)
        nb = np.bincount(way, weights=recs.weights[0], minlength=3)
        npk = np.bincount(way, weights=recs.weights[1], minlength=3)
        figs = [int(nb[UP]), int(npk[UP]), int(nb[DOWN]), int(npk[DOWN])]
        for i, v in enumerate(figs):
            m.totals[i] += v
        per = 1 / interval if interval > 0 else 0.0
        m.rates = (figs[0] * 8 * per, figs[2] * 8 * per, figs[1] * per, figs[3] * per)

    @staticmethod
    def _add_tcp(m: _Monitor, sel: np.ndarray, tcp: TcpUpdate, now: float) -> None:
        # A connection is two flows (one per sender) and, forwarded, each
        # on two legs: add_rows counts each sender's figures once.
        tcphealth.add_rows(m.series, tcp, sel, True, now)
        last = m.series.recent[-1]
        m.retransmits_total += last.retrans
        m.rto_total += last.rto
        m.rtt_samples_total += len(last.rtts)
        m.rtt_sum_us_total += float(last.rtts.sum())
        m.series.expire(now)

    @staticmethod
    def _top(
        m: _Monitor,
        table: FlowTable,
        ifnames: Mapping[int, str],
        ea: EntityArrays | None,
        flt: Filter | None = None,
    ) -> tuple[ViewRow, ...]:
        """The monitor's busiest conversations now (empty once the table is:
        the end of a run keeps the last ones); flt: m.filter, or one that
        gives the same answer faster (_known_ways)."""
        query = ViewQuery(group_by=TOP_GROUP, sort="bytes", limit=TOP)
        rows, _ = query_table(table, query, m.filter if flt is None else flt, ifnames, ea)
        return tuple(rows)

    @staticmethod
    def _status(m: _Monitor) -> MonitorStatus:
        g, problems = tcphealth.judge("monitor", m.cfg.name, m.series, "", m.cfg.thresholds)
        l2r_b, l2r_p, r2l_b, r2l_p = m.totals
        return MonitorStatus(
            name=m.cfg.name,
            local=m.cfg.local,
            remote=m.cfg.remote,
            verdict=DEGRADED if problems else HEALTHY,
            reason=", ".join(problems),
            local_to_remote_bytes=l2r_b,
            local_to_remote_packets=l2r_p,
            remote_to_local_bytes=r2l_b,
            remote_to_local_packets=r2l_p,
            local_to_remote_bps=m.rates[0],
            remote_to_local_bps=m.rates[1],
            local_to_remote_pps=m.rates[2],
            remote_to_local_pps=m.rates[3],
            rtt_p50_us=g.rtt_p50_us,
            rtt_p95_us=g.rtt_p95_us,
            rtt_baseline_us=g.rtt_baseline_us,
            retransmit_ratio=g.retransmit_ratio,
            retransmits=g.retransmits,
            data_segments=g.data_segments,
            rto=g.rto,
            retransmits_total=m.retransmits_total,
            rto_total=m.rto_total,
            rtt_samples_total=m.rtt_samples_total,
            rtt_sum_us_total=m.rtt_sum_us_total,
            top=m.top,
        )


def tracker_of(engine: Engine) -> MonitorTracker | None:
    """The engine's tracker (configure() attached it as an observer), if any."""
    for obs in getattr(engine, "observers", ()):  # stand-in engines (tests) have none
        owner = getattr(obs, "__self__", None)
        if isinstance(owner, MonitorTracker):
            return owner
    return None


def configure(engine: Engine, cfg: Config) -> MonitorTracker:
    """The health settings of a run (its start, each reload): [health]'s
    thresholds on the TCP health groups, and the monitors' tracker, made and
    attached as the engine's first observer (the exports read it after it)
    or reconfigured."""
    if engine.tcp_health is not None:
        engine.tcp_health.thresholds = cfg.health
    tracker = tracker_of(engine)
    if tracker is None:
        tracker = MonitorTracker(cfg.monitors)
        engine.observers.insert(0, tracker.observe)
    else:
        tracker.configure(cfg.monitors)
    return tracker
