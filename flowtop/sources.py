"""The live ViewSource: the kernel collector behind the view, optionally recorded."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flowtop.collector.collector import KernelCollector
from flowtop.config import CollectorConfig, EnrichConfig
from flowtop.engine import Engine, StopSignal
from flowtop.flowtable import FlowTable
from flowtop.record import Recorder

if TYPE_CHECKING:
    from flowtop.enrich import Enricher
    from flowtop.outputs import Outputs
from flowtop.view import TableSource

log = logging.getLogger("flowtop")


def make_enricher(cfg: EnrichConfig) -> Enricher:
    """ASN/geo databases, labels and local networks; a bad database is a warning."""
    from flowtop.enrich import Enricher, EnrichOptions

    return Enricher(
        EnrichOptions(geoip_asn=cfg.geoip_asn, geoip_city=cfg.geoip_city, labels=cfg.labels),
        warn=lambda msg: log.warning("%s", msg),
    )


def build_engine(
    cfg: CollectorConfig, enrich: EnrichConfig | None = None
) -> tuple[Engine, KernelCollector]:
    enricher = make_enricher(enrich) if enrich is not None else None
    collector = KernelCollector(
        interfaces=cfg.interfaces,
        flow_map_size=cfg.map_size,
        tc_priority=cfg.tc_priority,
        sockops=cfg.sockops,
        passive_rtt=cfg.passive_rtt,
    )
    table = FlowTable(
        max_flows=cfg.max_flows,
        idle_timeout=cfg.idle_timeout,
        active_timeout=cfg.active_timeout,
    )
    engine = Engine(collector, table, interval=cfg.interval, enricher=enricher)
    return engine, collector


class LiveSource(TableSource):
    """Steps the kernel collector every interval; close() detaches."""

    def __init__(
        self,
        cfg: CollectorConfig,
        record: str | None = None,
        outputs: Outputs | None = None,
        enrich: EnrichConfig | None = None,
    ) -> None:
        engine, self.collector = build_engine(cfg, enrich)
        super().__init__(engine)
        self._stop = StopSignal()
        self._recorder: Recorder | None = None
        self._outputs = outputs
        self._closed = False
        try:
            if outputs is not None:
                outputs.attach(engine)
            self.collector.start()
            if record:
                self._recorder = Recorder(
                    record, self.host, cfg.interval, engine.table.clock_offset
                )
        except BaseException:
            self.collector.close()
            raise
        self._next = time.monotonic() + self.interval

    def step(self) -> None:
        left = self._next - time.monotonic()
        if left > 0:
            self.collector.wait(left, self._stop.fileno)
        if self._stop.is_set():
            return
        with self._lock:
            self.engine.step()
            self._after_step()
            if self._recorder is not None and self.engine.last_drain is not None:
                self._recorder.frame(
                    self.engine.last_drain,
                    self.collector.names(),
                    self.engine.interface_counters(),
                    self.collector.program.counters(),
                )
        now = time.monotonic()
        self._next += self.interval
        if self._next < now:
            self._next = now + self.interval

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Detach, take the last drain, end every flow; safe to call twice."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.engine.shutdown()
            finally:
                self.collector.close()
                if self._recorder is not None:
                    self._recorder.close()
                if self._outputs is not None:
                    self._outputs.close(1.5)
