"""The engine-backed commands: `flowtop dump` and the live view."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from flowtop.config import Config
from flowtop.errors import CollectorFailedError
from flowtop.run.lifecycle import Parts, Run
from flowtop.sanitize import clean
from flowtop.stop import StopSignal

# The flow table, the queries, the printing and Textual are imported once the
# Run has attached (Run.start): the first attachment needs none of them (issue 13).
if TYPE_CHECKING:
    from flowtop.core.flowtable import FlowBatch
    from flowtop.enrich.dns import ReverseResolver
    from flowtop.query.types import ViewSource
    from flowtop.run.sources import LiveSource

log = logging.getLogger("flowtop")


def emit(*args: Any, **kwargs: Any) -> None:
    """run.dump.emit, imported when the dump prints (see above)."""
    from flowtop.run import dump

    dump.emit(*args, **kwargs)


def run_dump(
    cfg: Config,
    duration: float,
    as_json: bool,
    stop: StopSignal | None = None,
    parts: Parts | None = None,
    conversations: bool = False,
) -> int:
    """Collect for `duration`, print. stop: the CLI's (installed before the
    imports); a stop before "collecting on" raises Interrupted (nothing
    printed, nothing left attached), one after it ends the run early and
    prints what was collected. parts: how the Run makes its parts (tests).
    conversations: dump --conversations (run/dumpconv.py)."""
    if stop is None:
        stop = StopSignal()
        stop.install()
    with Run(cfg, stop, parts=parts) as run:
        from flowtop.query import monitors
        from flowtop.run.dump import Extras, FlowAccumulator

        engine = run.engine
        engine.keep_all_drops()  # every flow's drops until the end (the run is bounded)
        acc = FlowAccumulator(engine.table.clock_offset)
        engine.sinks.append(acc)
        if not run.names:
            log.warning("no interface matches yet; waiting for one to appear")
        print(
            f"flowtop: collecting on {', '.join(clean(n) for n in run.names) or '(none yet)'} "
            f"for {duration:g} s (Ctrl-C to stop early)",
            file=sys.stderr,
            flush=True,
        )
        failure: CollectorFailedError | None = None
        try:
            engine.run(stop, duration=duration)
        except CollectorFailedError as exc:  # print what was collected, then its line
            failure = exc
        tracker = monitors.tracker_of(engine)
        if tracker is not None:
            tracker.refresh_top(engine)  # while the flows are still in the table
        run.shutdown()
        if tracker is not None:
            tracker.observe(engine)  # the last drain's traffic into the monitors
        ifaces = engine.interface_counters()
        ifname = run.collector.names()
        flows = acc.per_key()
        resolver = None
        if cfg.enrich.resolve_for(interactive=False):
            resolver = resolve_all(run.resolver(), flows)
        health = engine.health()
        if resolver is not None:
            health = replace(health, resolve_errors=health.resolve_errors + resolver.failures)
        assert engine.tcp_health is not None
        extras = Extras(
            entity_of=engine.enricher.entity if engine.enricher is not None else None,
            name_of=resolver.name if resolver is not None else None,
            health=engine.tcp_health.groups(),
            owners=engine.owners,
            drops=engine.drops,
            wire=engine.names,
            exporters=getattr(run.collector, "exporters", list)(),  # --listen only
            monitors=tracker.statuses() if tracker is not None else (),
            conversations=conversations,
        )
        emit(flows, ifname, ifaces, health, as_json, extras=extras)
        if failure is not None:
            raise failure
    return 0


def resolve_all(
    resolver: ReverseResolver, flows: FlowBatch, budget: float = 3.0
) -> ReverseResolver:
    """resolver, after up to `budget` seconds for every address of flows."""
    addrs = {str(r.key.src) for r in flows.records()} | {str(r.key.dst) for r in flows.records()}
    for a in addrs:
        resolver.name(a)
    end = time.monotonic() + budget
    while time.monotonic() < end:
        st = resolver.stats()
        if st["queued"] == 0 and st["inflight"] == 0:
            break
        time.sleep(0.02)
    return resolver


def run_live(
    cfg: Config,
    theme: str | None,
    resolve: bool,
    record: str | None = None,
    replay: str | None = None,
    speed: float = 1.0,
    stop: StopSignal | None = None,
    parts: Parts | None = None,
) -> int:
    """The Textual live view over the kernel (or a recording); q detaches and exits.

    stop: the CLI's, checked during start-up (compile, attach). Once the view
    runs, SIGINT/SIGTERM/SIGHUP leave the way `q` does. A collector that
    gave up (CollectorFailedError) ends the view; the CLI prints its line.
    The Run owns every part, the view's resolver too (resolver= below).
    """
    if stop is None:
        stop = StopSignal()
        stop.install()
    exports = bool(cfg.ipfix.collectors or cfg.prometheus.listen is not None)
    run = Run(
        cfg,
        stop,
        outputs=exports and replay is None,
        record=record,
        replay=replay,
        speed=speed,
        parts=parts,
    )
    with run:
        from flowtop.run.sources import LiveSource
        from flowtop.tui.app import FlowtopApp  # Textual only for the live view

        live: LiveSource | None = None
        source: ViewSource
        if run.replay is not None:
            source = run.replay
        else:
            source = live = LiveSource(run)
        app = FlowtopApp(source, theme=theme, resolve=resolve, resolver=run.resolver)

        def _terminate(_signum: int, _frame: FrameType | None) -> None:
            # SIGTERM/SIGHUP (the SSH session died), SIGINT from kill: leave the
            # way `q` does, so that the filters come off.
            source.stop()
            try:
                asyncio.get_running_loop().call_soon_threadsafe(app.exit)
            except RuntimeError:
                app.exit()

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _terminate)
        try:
            stop.check()  # a signal between the last checkpoint and the handlers above
            app.run()
        finally:
            source.stop()
            if live is not None:
                live.close()  # the flows end under the source's lock; the Run closes the rest
    if app.failure is not None:
        raise app.failure
    return app.return_code or 0
