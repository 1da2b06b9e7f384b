"""A Prometheus scrape with 100k flows in the table, and what the engine pays per interval.

FlowMetrics is fed one drained interval of N synthetic flows (on 8 interfaces,
both directions, 4 protocols, like a router), published with a FlowTable of N
flows' worth of health counters, served by MetricsServer on 127.0.0.1, and
scraped over HTTP (urllib) 20 times. The engine side (add_drain + publish) is
timed separately: it runs once per interval on the engine thread.

Target (issue 4): a scrape with 100k flows in the table <= 100 ms.
Run: .venv/bin/python bench/prometheus_scrape.py   (no root needed)
"""

from __future__ import annotations

import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.export.prometheus import FlowMetrics, MetricsServer
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain

SIZES = (1_000, 100_000)
SCRAPES = 20
TARGET_MS = 100.0


def drain(n: int) -> Drain:
    rng = np.random.default_rng(n)
    k = np.zeros(n, dtype=layout.FLOW_KEY)
    k["ifindex"] = rng.integers(2, 10, n)
    k["direction"] = rng.integers(0, 2, n)
    k["proto"] = rng.choice([6, 17, 1, 58], n)
    k["sport"] = np.arange(n) % 65536
    s = np.zeros(n, dtype=layout.FLOW_STATS)
    s["packets"] = rng.integers(1, 1000, n)
    s["bytes"] = s["packets"] * 800
    return Drain([(k, s)], time.monotonic_ns(), 1.0)


def main() -> int:
    names = {i: f"eth{i}" for i in range(2, 10)}
    ifaces = [
        InterfaceCounters(i, names[i], fam, 10, 1000, 20, 2000)
        for i in names
        for fam in ("ipv4", "ipv6", "other")
    ]
    print("Prometheus: engine-side cost per interval and scrape time (median, ms)\n")
    print(f"{'flows':>8} {'add_drain+publish':>18} {'scrape':>8} {'series':>7} {'bytes':>7}")
    worst = 0.0
    for n in SIZES:
        m = FlowMetrics(max_series=500)
        d = drain(n)
        t0 = time.perf_counter()
        m.add_drain(d)
        m.publish(names, ifaces, n, CollectorHealth(kernel={"flow_map_full": 0}), 0.01, 1)
        engine_ms = (time.perf_counter() - t0) * 1e3
        srv = MetricsServer(m, "127.0.0.1", 0)
        try:
            url = f"http://127.0.0.1:{srv.address[1]}/metrics"
            times, body = [], b""
            for _ in range(SCRAPES):
                t0 = time.perf_counter()
                body = urllib.request.urlopen(url, timeout=10).read()
                times.append((time.perf_counter() - t0) * 1e3)
        finally:
            srv.close()
        series = sum(1 for ln in body.splitlines() if ln.startswith(b"flowtop_flow_bytes_total{"))
        ms = statistics.median(times)
        worst = max(worst, ms)
        print(f"{n:>8,} {engine_ms:>18.1f} {ms:>8.2f} {series:>7} {len(body):>7}")
    ok = worst <= TARGET_MS
    print(f"\ntarget: scrape with 100k flows <= {TARGET_MS:g} ms: {worst:.2f} ms")
    print(f"RESULT prometheus_scrape: {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
