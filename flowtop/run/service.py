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
from flowtop.errors import CollectorFailedError, FlowtopError
from flowtop.run.lifecycle import FLUSH_SECONDS, Parts, Run
from flowtop.stop import StopSignal

log = logging.getLogger("flowtop")


def run_export_only(
    cfg: Config,
    reload: Callable[[], Config],
    stop: StopSignal | None = None,
    parts: Parts | None = None,
) -> int:
    """stop: the CLI's, checked during start-up too (Interrupted: nothing left).
    parts: how the Run makes its parts (tests)."""
    logging.getLogger().setLevel(logging.INFO)
    if stop is None:
        stop = StopSignal()
        stop.install()
    hup = {"pending": False}

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        hup["pending"] = True
        stop.wake()

    # Left installed when the run ends: a late SIGHUP must not kill a process on its way out.
    signal.signal(signal.SIGHUP, on_hup)
    if not cfg.ipfix.collectors and cfg.prometheus.listen is None:
        log.warning("no IPFIX collector and no Prometheus listener: collecting for nothing")
    with Run(cfg, stop, outputs=True, parts=parts) as run:
        log.info("collecting on %s", ", ".join(run.names) or "(no interface yet)")
        failure: CollectorFailedError | None = None
        try:
            while not stop.is_set():
                run.engine.run(stop, until=lambda: hup["pending"])
                if hup["pending"]:
                    hup["pending"] = False
                    cfg = _reload(cfg, reload, run)
        except CollectorFailedError as exc:  # the flows it holds still go out, then its line
            failure = exc
        t0 = time.monotonic()
        run.shutdown()
        run.close(FLUSH_SECONDS)
        log.info("stopped in %.2f s", time.monotonic() - t0)
        if failure is not None:
            raise failure
    return 0


def _reload(cfg: Config, reload: Callable[[], Config], run: Run) -> Config:
    try:
        new = reload()
    except FlowtopError as exc:  # a bad file, a collector that does not resolve, ...
        log.error("config reload failed, keeping the running config: %s", exc)
        return cfg
    engine = run.engine
    if new.collector.interfaces != cfg.collector.interfaces:
        run.collector.reselect(new.collector.interfaces)
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
            run.replace_enricher(new.enrich)  # the old one is closed once the new one runs
        except FlowtopError as exc:  # a bad labels file: keep what runs
            log.error("config reload: %s; keeping the previous enrichment", exc)
            new = replace(new, enrich=cfg.enrich)
    outputs = run.outputs
    assert outputs is not None  # export-only always has them
    try:
        outputs.reload(new)
    except FlowtopError as exc:  # Outputs.reload kept what ran for the part that failed
        log.error("config reload: %s; keeping the running exports", exc)
        new = replace(new, ipfix=outputs.ipfix_cfg, prometheus=outputs.prom_cfg)
    log.info("config reloaded")
    return new
