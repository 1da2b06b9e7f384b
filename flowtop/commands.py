"""The engine-backed commands: `flowtop dump` and the live view."""

from __future__ import annotations

import logging
import sys
import time

from flowtop.collector.collector import KernelCollector
from flowtop.config import CollectorConfig
from flowtop.dump import FlowAccumulator, emit, human
from flowtop.engine import Engine, StopSignal
from flowtop.flowtable import FlowTable
from flowtop.model import proto_name
from flowtop.sanitize import clean

log = logging.getLogger("flowtop")


def _engine(cfg: CollectorConfig) -> Engine:
    collector = KernelCollector(
        interfaces=cfg.interfaces, flow_map_size=cfg.map_size, tc_priority=cfg.tc_priority
    )
    table = FlowTable(
        max_flows=cfg.max_flows,
        idle_timeout=cfg.idle_timeout,
        active_timeout=cfg.active_timeout,
    )
    return Engine(collector, table, interval=cfg.interval)


def _started(engine: Engine) -> list[str]:
    names = engine.collector.start()
    if not names:
        log.warning("no interface matches yet; waiting for one to appear")
    return names


def run_dump(cfg: CollectorConfig, duration: float, as_json: bool) -> int:
    stop = StopSignal()
    stop.install()
    engine = _engine(cfg)
    acc = FlowAccumulator(engine.table.clock_offset)
    engine.sinks.append(acc)
    try:
        names = _started(engine)
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
        ifname = dict(engine.collector._seen)
    finally:
        engine.collector.close()
    emit(acc.per_key(), ifname, ifaces, health, as_json)
    return 0


def run_live(cfg: CollectorConfig) -> int:
    """Plain-text live view; the Textual UI replaces it."""
    stop = StopSignal()
    stop.install()
    engine = _engine(cfg)
    tty = sys.stdout.isatty()

    def show(e: Engine) -> None:
        _pk, _by, pps, bps = e.table.totals()
        h = e.health()
        lines = [
            f"flowtop  {time.strftime('%H:%M:%S')}  on {', '.join(e.collector.interfaces())}  "
            f"flows {len(e.table)}  {human(bps, 'b/s')}  {human(pps, 'p/s')}  "
            f"lost {h.problems}",
            f"{'PROTO':7} {'SRC':40} {'DST':40} {'RATE':>10} {'BYTES':>10}",
        ]
        for r in e.table.top(20, by="bps"):
            k = r.key
            lines.append(
                f"{proto_name(k.proto):7} {f'{k.src}:{k.sport}':40} {f'{k.dst}:{k.dport}':40} "
                f"{human(r.bps, 'b/s'):>10} {human(r.bytes, 'B'):>10}"
            )
        text = "\n".join(lines)
        sys.stdout.write(("\x1b[H\x1b[2J" if tty else "") + text + "\n")
        sys.stdout.flush()

    try:
        _started(engine)
        engine.run(stop, on_tick=show)
        engine.shutdown()
    finally:
        engine.collector.close()
    return 0
