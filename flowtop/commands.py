"""The engine-backed commands: `flowtop dump` and the live view."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from types import FrameType

from flowtop.config import CollectorConfig, Config
from flowtop.dump import FlowAccumulator, emit
from flowtop.engine import StopSignal
from flowtop.sanitize import clean
from flowtop.sources import build_engine
from flowtop.view import ViewSource

log = logging.getLogger("flowtop")


def run_dump(cfg: CollectorConfig, duration: float, as_json: bool) -> int:
    stop = StopSignal()
    stop.install()
    engine, collector = build_engine(cfg)
    acc = FlowAccumulator(engine.table.clock_offset)
    engine.sinks.append(acc)
    try:
        names = collector.start()
        if not names:
            log.warning("no interface matches yet; waiting for one to appear")
        if not stop.is_set():
            print(
                f"flowtop: collecting on {', '.join(clean(n) for n in names) or '(none yet)'} "
                f"for {duration:g} s (Ctrl-C to stop early)",
                file=sys.stderr,
                flush=True,
            )
            engine.run(stop, duration=duration)
        engine.shutdown()
        ifaces = engine.interface_counters()
        health = engine.health()
        ifname = collector.names()
    finally:
        collector.close()
    emit(acc.per_key(), ifname, ifaces, health, as_json)
    return 0


def run_live(
    cfg: Config,
    theme: str | None,
    resolve: bool,
    record: str | None = None,
    replay: str | None = None,
    speed: float = 1.0,
) -> int:
    """The Textual live view over the kernel (or a recording); q detaches and exits."""
    from flowtop.tui.app import FlowtopApp  # Textual only for the live view

    source: ViewSource
    if replay:
        from flowtop.record import ReplaySource

        source = ReplaySource(replay, speed)
    else:
        from flowtop.sources import LiveSource

        outputs = None
        if cfg.ipfix.collectors or cfg.prometheus.listen is not None:
            from flowtop.outputs import Outputs

            outputs = Outputs(cfg)
        source = LiveSource(cfg.collector, record=record, outputs=outputs)
    app = FlowtopApp(source, theme=theme, resolve=resolve)

    def _terminate(_signum: int, _frame: FrameType | None) -> None:
        # SIGTERM/SIGHUP (the SSH session died): leave the way `q` does, so
        # that the filters come off.
        source.stop()
        try:
            asyncio.get_running_loop().call_soon_threadsafe(app.exit)
        except RuntimeError:
            app.exit()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        app.run()
    finally:
        source.close()
    return app.return_code or 0
