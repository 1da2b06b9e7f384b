"""The live ViewSource: the kernel collector behind the view, optionally recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowtop.config import CollectorConfig, EnrichConfig
from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.kernel.collector import KernelCollector
from flowtop.run.record import Recorder
from flowtop.stop import StopSignal

if TYPE_CHECKING:
    from flowtop.enrich import Enricher
    from flowtop.kernel.collector import Drain
    from flowtop.run.outputs import Outputs
from flowtop.query.view import TableSource

log = logging.getLogger("flowtop")


def make_enricher(cfg: EnrichConfig) -> Enricher:
    """ASN/geo databases, labels and local networks; a bad database is a warning."""
    from flowtop.enrich import Enricher, EnrichOptions

    return Enricher(
        EnrichOptions(geoip_asn=cfg.geoip_asn, geoip_city=cfg.geoip_city, labels=cfg.labels),
        warn=lambda msg: log.warning("%s", msg),
    )


def _no_checkpoint() -> None:
    pass


def build_engine(
    cfg: CollectorConfig,
    enrich: EnrichConfig | None = None,
    checkpoint: Callable[[], None] = _no_checkpoint,
) -> tuple[Engine, KernelCollector]:
    """checkpoint (StopSignal.check): called between the steps of start-up;
    what it raises leaves nothing behind (the collector closes itself)."""
    enricher = make_enricher(enrich) if enrich is not None else None
    try:
        checkpoint()
        collector = KernelCollector(
            interfaces=cfg.interfaces,
            flow_map_size=cfg.map_size,
            tc_priority=cfg.tc_priority,
            attach=cfg.attach,
            sockops=cfg.sockops,
            passive_rtt=cfg.passive_rtt,
            checkpoint=checkpoint,
        )
    except BaseException:
        if enricher is not None:
            enricher.close()
        raise
    table = FlowTable(
        max_flows=cfg.max_flows,
        idle_timeout=cfg.idle_timeout,
        active_timeout=cfg.active_timeout,
    )
    engine = Engine(collector, table, interval=cfg.interval, enricher=enricher)
    return engine, collector


class LiveSource(TableSource):
    """Steps the kernel collector every interval; close() detaches.

    startup: the CLI's StopSignal, checked between the steps of start-up (a
    Ctrl-C while it compiles or attaches stops it there, nothing left behind).
    A failed write of the recording is counted (record_errors), the view goes on.
    """

    def __init__(
        self,
        cfg: CollectorConfig,
        record: str | None = None,
        outputs: Outputs | None = None,
        enrich: EnrichConfig | None = None,
        startup: StopSignal | None = None,
    ) -> None:
        check = startup.check if startup is not None else _no_checkpoint
        engine, self.collector = build_engine(cfg, enrich, check)
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
            check()
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
            drain_before = self.engine.last_drain
            self.engine.step()
            self._after_step()
            drained = self.engine.last_drain
            if self._recorder is not None and drained is not None and drained is not drain_before:
                self._record(self._recorder, drained)
        now = time.monotonic()
        self._next += self.interval
        if self._next < now:
            self._next = now + self.interval

    def _record(self, recorder: Recorder, drained: Drain) -> None:
        try:
            recorder.frame(
                drained,
                self.collector.names(),
                self.engine.interface_counters(),
                self.collector.program.counters(),
            )
        except Exception as exc:  # a full disk ends the recording, not the view
            self.engine.failures.record.failed(exc)
        else:
            self.engine.failures.record.ok()

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
