"""TableSource: the ViewSource over an Engine (live or replayed), and the
interface rates it shows.

It compiles the query's filter (keeping the last good one), answers it with
query_table under a lock (the UI thread asks while the engine thread
steps), and keeps a short rate history per row key for the detail screen.
Subclasses (run/sources.py: live, run/record.py: replay) say how to step
and what time it is.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import cast

from flowtop.core.drops import summary as drop_summary
from flowtop.core.engine import Engine
from flowtop.core.model import InterfaceCounters
from flowtop.query.entities import EntityArrays
from flowtop.query.exporters import ExporterArrays, ExporterRates, FleetSource
from flowtop.query.filterexpr import Filter, FilterError, parse
from flowtop.query.monitors import tracker_of
from flowtop.query.names import NameArrays
from flowtop.query.owners import OwnerArrays, available
from flowtop.query.tablequery import conversation_flows, query_table
from flowtop.query.types import ExporterRow, InterfaceRow, Snapshot, ViewQuery, ViewRow
from flowtop.sanitize import clean

HISTORY_SECONDS = 60
HISTORY_KEYS = 2000


@dataclass
class _IfaceRates:
    """Per-interface rates from the cumulative counters (entries of one ifindex summed)."""

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
        self._oa: OwnerArrays | None = None
        self._na: NameArrays | None = None
        self._fa: ExporterArrays | None = None
        self._exporter_rates = ExporterRates()
        self._exporters: tuple[ExporterRow, ...] = ()

    # subclasses say what time it is (replay: the recorded time)
    def now(self) -> float:
        return time.time()

    def step(self) -> None:
        raise NotImplementedError

    def _after_step(self) -> None:
        self._now = self.now()
        self._interfaces = self._ifrates.update(self.engine.interface_counters(), self._now)
        fleet = getattr(self.engine.collector, "exporters", None)  # --listen only
        if fleet is not None:
            self._exporters = self._exporter_rates.update(fleet(), self._now)

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
            oa = self._owner_arrays()
            dt = getattr(self.engine, "drops", None)  # core/drops.DropTable; stand-ins have none
            na = self._name_arrays()
            fa = self._fleet_arrays()
            table = self.engine.table
            try:
                rows, matched = query_table(table, query, flt, ifnames, ea, oa, dt, na, fa)
            except FilterError as exc:  # a term the data cannot answer (no enrichment)
                error = str(exc)
                self._filter = parse("")
                rows, matched = query_table(table, query, self._filter, ifnames, ea, oa, dt, na, fa)
            self._remember(rows)
            health = self.engine.health()
            counters = health.as_dict()
            tracker = tracker_of(self.engine)  # monitors and zones (the engine's thread)
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
                drops=drop_summary(dt, table) if dt is not None else None,
                exporters=self._exporters,
                monitors=tracker.statuses() if tracker is not None else (),
                cross_zone_bps=tracker.cross_zone_bps if tracker is not None else None,
            )

    def _entity_arrays(self) -> EntityArrays | None:
        enricher = self.engine.enricher
        if enricher is None:
            return None
        if self._ea is None or self._ea_of is not enricher:
            self._ea = EntityArrays(enricher)
            self._ea_of = enricher
        return self._ea

    def _owner_arrays(self) -> OwnerArrays | None:
        # Engines without attribution (off, failed to start) have owners None.
        owners = getattr(self.engine, "owners", None)
        if owners is None or not available():
            return None
        if self._oa is None or self._oa.owners is not owners:
            self._oa = OwnerArrays(owners)
        return self._oa

    def _name_arrays(self) -> NameArrays | None:
        # Engines without names from the wire (off, a replay, stand-ins) have none.
        wire = getattr(self.engine, "names", None)
        if wire is None:
            return None
        if self._na is None or self._na.wire is not wire:
            self._na = NameArrays(wire)
        return self._na

    def _fleet_arrays(self) -> ExporterArrays | None:
        # Only a listening run's collector (listen/collector.py) has exporters.
        if getattr(self.engine.collector, "fleet_entries", None) is None:
            return None
        collector = cast("FleetSource", self.engine.collector)
        if self._fa is None or self._fa.source is not collector:
            self._fa = ExporterArrays(collector)
        self._fa.refresh()
        return self._fa

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

    def conversation_flows(self, row_key: str) -> list[ViewRow]:
        """The flow rows (every leg and direction) of a conversation row, by
        its key ("conversation:<id>"), most bytes first; [] for another row
        or a conversation that ended."""
        group, _, hexid = row_key.partition(":")
        if group != "conversation":
            return []
        try:
            conv_id = int(hexid, 16)
        except ValueError:
            return []
        with self._lock:
            ifnames = dict(self.engine.collector.names())
            dt = getattr(self.engine, "drops", None)
            ea, oa, na = self._entity_arrays(), self._owner_arrays(), self._name_arrays()
            return conversation_flows(self.engine.table, conv_id, ifnames, ea, oa, dt, na)

    def stop(self) -> None:
        """Make a step() in progress return now (no more steps are wanted)."""

    def close(self) -> None:
        raise NotImplementedError
