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
from flowtop.engine import StopSignal
from flowtop.errors import FlowtopError
from flowtop.outputs import Outputs
from flowtop.sources import build_engine, make_enricher

log = logging.getLogger("flowtop")
FLUSH_SECONDS = 1.5  # of the 2 s a service manager allows between TERM and KILL


def run_export_only(cfg: Config, reload: Callable[[], Config]) -> int:
    logging.getLogger().setLevel(logging.INFO)
    stop = StopSignal()
    stop.install()
    hup = {"pending": False}

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        hup["pending"] = True
        stop.wake()

    signal.signal(signal.SIGHUP, on_hup)
    if not cfg.ipfix.collectors and cfg.prometheus.listen is None:
        log.warning("no IPFIX collector and no Prometheus listener: collecting for nothing")
    engine, collector = build_engine(cfg.collector, cfg.enrich)
    outputs: Outputs | None = None
    try:
        outputs = Outputs(cfg)
        outputs.attach(engine)
        names = collector.start()
        log.info("collecting on %s", ", ".join(names) or "(no interface yet)")
        while not stop.is_set():
            engine.run(stop, until=lambda: hup["pending"])
            if hup["pending"]:
                hup["pending"] = False
                cfg = _reload(cfg, reload, engine, collector, outputs)
        t0 = time.monotonic()
        engine.shutdown()
        outputs.close(FLUSH_SECONDS)
        log.info("stopped in %.2f s", time.monotonic() - t0)
    finally:
        if outputs is not None:
            outputs.close(0.2)
        collector.close()
    return 0


def _reload(cfg: Config, reload: Callable[[], Config], engine, collector, outputs) -> Config:  # type: ignore[no-untyped-def]
    try:
        new = reload()
    except FlowtopError as exc:
        log.error("config reload failed, keeping the running config: %s", exc)
        return cfg
    if new.collector.interfaces != cfg.collector.interfaces:
        collector.reselect(new.collector.interfaces)
    engine.table.set_timeouts(new.collector.idle_timeout, new.collector.active_timeout)
    if new.collector.interval != cfg.collector.interval:
        engine.interval = new.collector.interval
    unchanged = [
        n
        for n in ("map_size", "tc_priority")
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
    except FlowtopError as exc:
        log.error("config reload: %s", exc)
    log.info("config reloaded")
    return new
