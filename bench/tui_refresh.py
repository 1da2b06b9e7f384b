"""TUI cost per refresh: widget update time with 1k/10k/100k flows, and process CPU.

    .venv/bin/python bench/tui_refresh.py [--flows 1000,10000,100000] [--cpu-seconds 10]

The source is the deterministic fake of tests/tui (the real query path over a
real FlowTable, synthetic traffic). Per refresh it prints separately:
  query   source.snapshot(query): the engine's part (filter, group, sort, top 50)
  update  MainScreen.show(): header, interfaces, table cells (the TUI's part)
  paint   until the app is idle again (layout and render of what changed)
The widget update must be O(rows shown): the same with 1k or 100k flows.
Then the whole process CPU at a 1 s refresh with 10k flows, engine included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowtop.tui import FlowtopApp
from tests.tui.fakesource import FakeSource

REFRESHES = 30


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[int(0.95 * (len(xs) - 1))]
    return f"median {statistics.median(xs) * 1e3:6.2f} ms  p95 {p95 * 1e3:6.2f} ms"


async def per_refresh(flows: int, size: tuple[int, int]) -> dict[str, list[float]]:
    # frames=0: the app's engine worker never steps; this loop does, so it can time each part.
    src = FakeSource(flows=flows, frames=0, stall=3600)
    app = FlowtopApp(src, resolve=False)
    out: dict[str, list[float]] = {"query": [], "update": [], "paint": []}
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.2)
        for i in range(REFRESHES + 3):
            src.advance()
            t0 = time.perf_counter()
            snap = src.snapshot(app.view_query)
            t1 = time.perf_counter()
            app.history.add(snap)
            app.latest = app.shown = snap
            app.main.show(snap, app.history, app.display_opts, app.paused)
            t2 = time.perf_counter()
            await pilot.pause()  # lets Textual lay out and paint
            t3 = time.perf_counter()
            if i >= 3:  # warm-up: first columns, first rows
                out["query"].append(t1 - t0)
                out["update"].append(t2 - t1)
                out["paint"].append(t3 - t2)
    src.close()
    return out


async def cpu(flows: int, seconds: float) -> tuple[float, float]:
    src = FakeSource(flows=flows, frames=None, paced=True, interval=1.0)
    app = FlowtopApp(src, resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(2.5)  # first intervals, columns built
        c0, w0, n0 = time.process_time(), time.monotonic(), app.snapshots
        await pilot.pause(seconds)
        c1, w1, n1 = time.process_time(), time.monotonic(), app.snapshots
    src.close()
    return (c1 - c0) / (w1 - w0), (n1 - n0) / (w1 - w0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flows", default="1000,10000,100000")
    p.add_argument("--cpu-seconds", type=float, default=10.0)
    p.add_argument("--cpu-flows", type=int, default=10_000)
    args = p.parse_args()
    print(f"flowtop TUI refresh, {REFRESHES} refreshes each, top 50 rows handed to the UI")
    for size in ((80, 24), (160, 48)):
        for n in (int(x) for x in args.flows.split(",")):
            r = asyncio.run(per_refresh(n, size))
            print(
                f"{size[0]}x{size[1]} {n:>7} flows  query {_ms(r['query'])}   "
                f"update {_ms(r['update'])}   paint {_ms(r['paint'])}"
            )
    if args.cpu_seconds > 0:
        share, rate = asyncio.run(cpu(args.cpu_flows, args.cpu_seconds))
        print(
            f"whole process (fake engine + TUI), {args.cpu_flows} flows, 1 s refresh, "
            f"160x48: {share * 100:.1f}% of a core ({rate:.2f} snapshots/s, pid {os.getpid()})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
