"""`flowtop --export-only`: the engine and its exports, no screen, as a service.

Logs one line per event to stderr. SIGTERM/SIGINT: detach, take the last
drain, end every flow and flush the exports (within 2 s). SIGHUP: read the
config file again and apply it (interfaces, timeouts, exports) without
losing the flow table; a bad file is logged and the running config kept.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from flowtop.config import Config
from flowtop.core.engine import Engine
from flowtop.errors import CollectorFailedError, FlowtopError
from flowtop.kernel.collector import KernelCollector
from flowtop.run.outputs import Outputs
from flowtop.run.sources import build_engine, make_enricher
from flowtop.stop import StopSignal

log = logging.getLogger("flowtop")
FLUSH_SECONDS = 1.5  # of the 2 s a service manager allows between TERM and KILL


def run_export_only(
    cfg: Config, reload: Callable[[], Config], stop: StopSignal | None = None
) -> int:
    """stop: the CLI's, checked during start-up too (Interrupted: nothing left)."""
    logging.getLogger().setLevel(logging.INFO)
    if stop is None:
        stop = StopSignal()
        stop.install()
    hup = {"pending": False}

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        hup["pending"] = True
        stop.wake()

    signal.signal(signal.SIGHUP, on_hup)
    if not cfg.ipfix.collectors and cfg.prometheus.listen is None:
        log.warning("no IPFIX collector and no Prometheus listener: collecting for nothing")
    engine, collector = build_engine(cfg.collector, cfg.enrich, stop.check)
    outputs: Outputs | None = None
    try:
        outputs = Outputs(cfg)
        outputs.attach(engine)
        names = collector.start()  # checks stop after its last step
        log.info("collecting on %s", ", ".join(names) or "(no interface yet)")
        failure: CollectorFailedError | None = None
        try:
            while not stop.is_set():
                engine.run(stop, until=lambda: hup["pending"])
                if hup["pending"]:
                    hup["pending"] = False
                    cfg = _reload(cfg, reload, engine, collector, outputs)
        except CollectorFailedError as exc:  # the flows it holds still go out, then its line
            failure = exc
        t0 = time.monotonic()
        engine.shutdown()
        outputs.close(FLUSH_SECONDS)
        log.info("stopped in %.2f s", time.monotonic() - t0)
        if failure is not None:
            raise failure
    finally:
        if outputs is not None:
            outputs.close(0.2)
        collector.close()
    return 0


def _reload(
    cfg: Config,
    reload: Callable[[], Config],
    engine: Engine,
    collector: KernelCollector,
    outputs: Outputs,
) -> Config:
    try:
        new = reload()
    except FlowtopError as exc:  # a bad file, a collector that does not resolve, ...
        log.error("config reload failed, keeping the running config: %s", exc)
        return cfg
    if new.collector.interfaces != cfg.collector.interfaces:
        collector.reselect(new.collector.interfaces)
    engine.table.set_timeouts(new.collector.idle_timeout, new.collector.active_timeout)
    if new.collector.interval != cfg.collector.interval:
        engine.interval = new.collector.interval
    unchanged = [
        n
        for n in ("map_size", "tc_priority", "attach")
        if getattr(new.collector, n) != getattr(cfg.collector, n)
    ]
    if unchanged:
        log.warning("%s change on restart only", " and ".join(unchanged))
    if new.enrich != cfg.enrich:
        try:
            engine.set_enricher(make_enricher(new.enrich))
        except FlowtopError as exc:  # a bad labels file: keep what runs
            log.error("config reload: %s; keeping the previous enrichment", exc)
            new = replace(new, enrich=cfg.enrich)
    try:
        outputs.reload(new)
    except FlowtopError as exc:  # Outputs.reload kept what ran for the part that failed
        log.error("config reload: %s; keeping the running exports", exc)
        new = replace(new, ipfix=outputs.ipfix_cfg, prometheus=outputs.prom_cfg)
    log.info("config reloaded")
    return new
