"""One live-view refresh, engine side: query the flow table for the visible rows.

Builds FlowTables of 1k, 10k and 100k synthetic flows (distinct 5-tuples over a
few hundred hosts, random rates) and times `tablequery.query_table` for the default
view (flows by bit rate, 100 rows) and a few others, median of 15 runs each, all
in one process so the sizes are compared side by side.

Targets (issue 3): the refresh with 100k flows <= 50 ms, and no more than 2x the
cost with 1k flows. The widget update is timed by bench/tui_refresh.py.
Run: .venv/bin/python bench/view_query.py   (no root needed)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowtop.core.flowtable import FlowTable
from flowtop.kernel import layout
from flowtop.query.filterexpr import parse
from flowtop.query.tablequery import query_table
from flowtop.query.types import ViewQuery

SIZES = (1_000, 10_000, 100_000)
RUNS = 15
TARGET_MS = 50.0
TARGET_RATIO = 2.0
QUERIES = {
    "flows by rate (default)": ViewQuery(),
    "flows by bytes": ViewQuery(sort="bytes"),
    "filter 'tcp and net 10.0.0.0/16'": ViewQuery(filter="tcp and net 10.0.0.0/16"),
    "group by source": ViewQuery(group_by="src"),
    "group by service port": ViewQuery(group_by="port"),
    "sort by source address": ViewQuery(sort="src"),
}


def build(n: int) -> FlowTable:
    rng = np.random.default_rng(n)
    k = np.zeros(n, dtype=layout.FLOW_KEY)
    k["ifindex"] = rng.integers(2, 6, n)
    k["direction"] = rng.integers(0, 2, n)
    k["ip_version"] = 4
    k["proto"] = rng.choice([6, 17, 1], n, p=[0.7, 0.25, 0.05])
    src = np.zeros((n, 16), dtype="u1")
    src[:, 0], src[:, 1] = 10, 0
    src[:, 2:4] = rng.integers(0, 256, (n, 2))
    dst = np.zeros((n, 16), dtype="u1")
    dst[:, 0] = 192
    dst[:, 1:4] = rng.integers(0, 256, (n, 3))
    k["src"] = src.view("V16").ravel()
    k["dst"] = dst.view("V16").ravel()
    k["sport"] = (np.arange(n) % 60000) + 1024
    k["dport"] = rng.choice([443, 80, 53, 22, 8080], n)
    s = np.zeros(n, dtype=layout.FLOW_STATS)
    s["packets"] = rng.integers(1, 10_000, n)
    s["bytes"] = s["packets"] * rng.integers(60, 1500, n)
    s["first_seen_ns"] = s["last_seen_ns"] = time.monotonic_ns()
    t = FlowTable(max_flows=max(n, 1024))
    for start in range(0, n, 65536):
        t.merge(k[start : start + 65536], s[start : start + 65536], 1.0)
    assert len(t) == n
    return t


def timed(table: FlowTable, q: ViewQuery) -> float:
    flt = parse(q.filter)
    names = {2: "eth1", 3: "eth2", 4: "veth0", 5: "wg0"}
    out = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        rows, _ = query_table(table, q, flt, names)
        out.append((time.perf_counter() - t0) * 1e3)
        assert len(rows) == min(q.limit, len(rows))
    return statistics.median(out)


def main() -> int:
    tables = {n: build(n) for n in SIZES}
    print(f"view query per refresh, median of {RUNS} runs (ms)\n")
    head = f"{'query':36}" + "".join(f"{n:>10,}" for n in SIZES) + f"{'100k/1k':>10}"
    print(head)
    print("-" * len(head))
    worst_ms = worst_ratio = 0.0
    for name, q in QUERIES.items():
        ms = [timed(tables[n], q) for n in SIZES]
        ratio = ms[-1] / ms[0]
        print(f"{name:36}" + "".join(f"{m:10.2f}" for m in ms) + f"{ratio:9.1f}x")
        if q == ViewQuery():
            worst_ms, worst_ratio = ms[-1], ratio
    ok = worst_ms <= TARGET_MS and worst_ratio <= TARGET_RATIO
    print(
        f"\ntarget (default view): 100k flows <= {TARGET_MS:g} ms: {worst_ms:.1f} ms; "
        f"<= {TARGET_RATIO:g}x the 1k cost: {worst_ratio:.1f}x"
    )
    print(f"RESULT view_query: {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
