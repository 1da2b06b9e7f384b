"""Conversation view, engine side: one refresh of `group_by="conversation"`
beside the flow view's refresh over the same table.

Synthetic FlowTables of 1k, 10k and 100k flow rows in two shapes:
- router: each connection as 4 legs (client -> server on ingress of leg A and
  egress of leg B, the reply on ingress of B and egress of A), n/4 connections;
- host: each connection as 2 rows (egress client -> server, ingress back),
  n/2 connections.
TCP and UDP, the client's first row with FT_TCP_SYN_ONLY for TCP. Before
timing, every size's answer is checked against ground truth: as many
conversations as connections, each with flows == legs and up/down bytes
equal to what was put in. Before each timed refresh 1% of the connections
end (idle) and as many new ones come, as between two intervals (the view
keeps the rows' id order from one refresh to the next: the churn is what
it sorts).

Timed (median of RUNS, min and the thread's median CPU time beside it,
all in one process so the sizes and the two views are compared side by
side, the two views alternating run by run): query_table for the
conversation view (100 rows by rate) and for the flow view (100 rows by
rate), and the per-flow cost ratio 100k vs 1k of each.

Targets (issue 15): the conversation query at 100k flows <= 20 ms, and <= 2x
the 1k per-flow cost.
Run: .venv/bin/python bench/conversation_join.py   (no root needed)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import v4_addresses  # noqa: E402

from flowtop.core.flowtable import FlowTable  # noqa: E402
from flowtop.kernel import layout  # noqa: E402
from flowtop.query.filterexpr import parse  # noqa: E402
from flowtop.query.tablequery import query_table  # noqa: E402
from flowtop.query.types import ViewQuery  # noqa: E402

SIZES = (1_000, 10_000, 100_000)
RUNS = 25
TARGET_MS = 20.0
TARGET_RATIO = 2.0
NAMES = {2: "eth0", 3: "eth1"}
CONV = ViewQuery(group_by="conversation")
FLOW = ViewQuery()
SHAPES = {"router": 4, "host": 2}  # rows per connection
CHURN = 0.01  # of the connections replaced between two refreshes


def connections(
    conns: int, legs: int, first: int, now: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keys and stats of `conns` connections (numbered from `first`) as
    `legs` rows each, shuffled, last seen one ns apart from `now` on (so
    the idle timeout ends the oldest first); and their up and down bytes."""
    idx = np.arange(first, first + conns, dtype=np.int64)
    client, server = v4_addresses(10, idx), v4_addresses(192, idx % 4093)
    cport = (1024 + idx % 60000).astype(np.uint16)
    sport = rng.choice(np.array([443, 80, 53, 22], dtype=np.uint16), conns)
    proto = np.where(sport == 53, 17, 6).astype(np.uint8)
    up = rng.integers(60, 10_000_000, conns).astype(np.uint64)
    down = rng.integers(60, 10_000_000, conns).astype(np.uint64)
    if legs == 4:  # (ifindex, direction, client -> server?)
        shape = [(2, 0, True), (3, 1, True), (3, 0, False), (2, 1, False)]
    else:
        shape = [(2, 1, True), (2, 0, False)]
    parts_k, parts_s = [], []
    seen = now + np.arange(conns, dtype=np.uint64)
    for ifindex, direction, fwd in shape:
        k = np.zeros(conns, dtype=layout.FLOW_KEY)
        k["ifindex"], k["direction"], k["ip_version"], k["proto"] = ifindex, direction, 4, proto
        k["src"], k["dst"] = (client, server) if fwd else (server, client)
        k["sport"], k["dport"] = (cport, sport) if fwd else (sport, cport)
        s = np.zeros(conns, dtype=layout.FLOW_STATS)
        s["bytes"] = up if fwd else down
        s["packets"] = s["bytes"] // 1000 + 1
        syn = layout.TCP_SYN_ONLY | 0x02 if fwd else 0x02  # the client's SYN, the SYN/ACK
        s["tcp_flags"] = np.where(proto == 6, 0x10 | syn, 0)
        s["first_seen_ns"] = s["last_seen_ns"] = seen
        parts_k.append(k)
        parts_s.append(s)
    keys, stats = np.concatenate(parts_k), np.concatenate(parts_s)
    order = rng.permutation(len(keys))  # legs of one connection not side by side
    return keys[order], stats[order], up, down


NOW = 10**12  # ns: the synthetic clock
IDLE_NS = 10**9  # the tables' idle timeout (1 s)


def build(n: int, legs: int) -> tuple[FlowTable, np.ndarray, np.ndarray]:
    """n flow rows of n // legs connections; returns the table and each
    connection's up and down bytes (ground truth)."""
    conns = n // legs
    keys, stats, up, down = connections(conns, legs, 0, NOW, np.random.default_rng(n + legs))
    t = FlowTable(max_flows=2 * max(n, 1024), idle_timeout=IDLE_NS / 1e9, clock_offset=0.0)
    for start in range(0, len(keys), 65536):
        t.merge(keys[start : start + 65536], stats[start : start + 65536], 1.0)
    assert len(t) == conns * legs
    return t, up, down


def churn(t: FlowTable, n: int, legs: int, run: int) -> None:
    """Between two refreshes, as between two intervals: CHURN of the
    connections end (the oldest, idle) and as many new ones come."""
    step = max(1, int(n // legs * CHURN))
    rng = np.random.default_rng(run)
    first = n // legs + run * step
    keys, stats, _, _ = connections(step, legs, first, NOW + 10**10 + first, rng)
    t.merge(keys, stats, 1.0)
    t.expire(NOW + (run + 1) * step + IDLE_NS)


def check(t: FlowTable, legs: int, up: np.ndarray, down: np.ndarray) -> None:
    """The conversation view against ground truth: every connection one row
    with its legs and its bytes each way (all rows asked for)."""
    q = ViewQuery(group_by="conversation", sort="bytes", limit=len(up) + 1)
    rows, matched = query_table(t, q, parse(""), NAMES)
    assert matched == len(up) == len(rows), (matched, len(up))
    assert all(r.flows == legs for r in rows)
    got = sorted((r.up_bytes, r.down_bytes) for r in rows)
    assert got == sorted(zip(up.tolist(), down.tolist(), strict=True))
    assert {r.role for r in rows} == {"forwarded" if legs == 4 else "client"}


Times = tuple[list[float], list[float]]  # wall-clock ms, CPU ms (this thread)


def timed(t: FlowTable, n: int, legs: int) -> tuple[Times, Times]:
    """Milliseconds of each refresh, conversation and flow view alternating
    (the same moment's load on both), the table churned before each pair:
    wall clock, and this thread's CPU time (what a shared machine's other
    processes do not add to)."""
    conv: Times = ([], [])
    flow: Times = ([], [])
    for run in range(RUNS):
        churn(t, n, legs, run)
        pair = ((CONV, conv), (FLOW, flow))
        # Which view goes first alternates: the first formats the new rows'
        # addresses, the second finds them in rows.py's cache.
        for q, out in pair if run % 2 else pair[::-1]:
            t0, c0 = time.perf_counter(), time.thread_time()
            query_table(t, q, parse(q.filter), NAMES)
            c1, t1 = time.thread_time(), time.perf_counter()
            out[0].append((t1 - t0) * 1e3)
            out[1].append((c1 - c0) * 1e3)
    return conv, flow


def main() -> int:
    ok = True
    print(f"conversation view vs flow view, engine side: median of {RUNS} refreshes (100 rows)")
    for shape, legs in SHAPES.items():
        conv_ms: dict[int, float] = {}
        flow_ms: dict[int, float] = {}
        for n in SIZES:
            t, up, down = build(n, legs)
            check(t, legs, up, down)
            (conv, conv_cpu), (flow, flow_cpu) = timed(t, n, legs)
            conv_ms[n], flow_ms[n] = statistics.median(conv), statistics.median(flow)
            print(
                f"  {shape:6} {n:>7,} flows ({n // legs:>6,} conversations): "
                f"conversations {conv_ms[n]:6.2f} ms (min {min(conv):5.2f}, "
                f"CPU {statistics.median(conv_cpu):5.2f})   "
                f"flows {flow_ms[n]:5.2f} ms (min {min(flow):5.2f}, "
                f"CPU {statistics.median(flow_cpu):5.2f})   "
                f"ratio {conv_ms[n] / flow_ms[n]:4.1f}x"
            )
        lo, hi = SIZES[0], SIZES[-1]
        conv_ratio = (conv_ms[hi] / hi) / (conv_ms[lo] / lo)
        flow_ratio = (flow_ms[hi] / hi) / (flow_ms[lo] / lo)
        met = conv_ms[hi] <= TARGET_MS and conv_ratio <= TARGET_RATIO
        ok &= met
        print(
            f"  {shape}: per-flow cost 100k vs 1k: conversations {conv_ratio:.2f}x, "
            f"flows {flow_ratio:.2f}x; target <= {TARGET_MS:.0f} ms at 100k and <= "
            f"{TARGET_RATIO:.0f}x: {'met' if met else 'NOT met'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
