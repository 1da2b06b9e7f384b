"""FlowTable with synthetic drains (no kernel): counters, rates, ends, bounds."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import EndReason
from flowtop.kernel import layout

T0 = 1_000 * NS


def keys(n: int, sport0: int = 1000, proto: int = 17) -> np.ndarray:
    k = np.zeros(n, dtype=layout.FLOW_KEY)
    k["ifindex"] = 7
    k["ip_version"] = 4
    k["proto"] = proto
    src = np.zeros((n, 16), dtype="u1")
    src[:, :4] = [10, 0, 0, 1]
    dst = np.zeros((n, 16), dtype="u1")
    dst[:, :4] = [10, 0, 0, 2]
    k["src"] = src.view("V16").ravel()
    k["dst"] = dst.view("V16").ravel()
    k["sport"] = np.arange(sport0, sport0 + n)
    k["dport"] = 53
    return k


def stats(n: int, packets: int = 1, nbytes: int = 100, t: int = T0, flags: int = 0) -> np.ndarray:
    s = np.zeros(n, dtype=layout.FLOW_STATS)
    s["packets"] = packets
    s["bytes"] = nbytes
    s["first_seen_ns"] = t
    s["last_seen_ns"] = t
    s["tcp_flags"] = flags
    return s


def table(**kw: object) -> FlowTable:
    return FlowTable(clock_offset=0.0, **kw)  # type: ignore[arg-type]


def test_merge_accumulates_and_rates_follow_last_interval() -> None:
    t = table()
    t.merge(keys(3), stats(3, packets=2, nbytes=200), interval=1.0)
    t.merge(keys(3), stats(3, packets=5, nbytes=500, t=T0 + NS), interval=0.5)
    assert len(t) == 3
    recs = {r.key.sport: r for r in t.records()}
    r = recs[1000]
    assert (r.packets, r.bytes) == (7, 700)
    assert r.pps == pytest.approx(10.0)
    assert r.bps == pytest.approx(8000.0)
    assert r.unix(r.first_ns) == pytest.approx(T0 / NS)
    assert r.unix(r.last_ns) == pytest.approx(T0 / NS + 1)
    assert r.key.src == ipaddress.IPv4Address("10.0.0.1")
    assert r.key.dport == 53


def test_rate_drops_to_zero_when_flow_is_quiet() -> None:
    t = table()
    t.merge(keys(1), stats(1, packets=10), interval=1.0)
    t.merge(keys(0), stats(0), interval=1.0)
    (r,) = list(t.records())
    assert r.pps == 0.0 and r.packets == 10


def test_tcp_flags_are_ored_and_fin_ends_the_flow() -> None:
    t = table()
    k = keys(1, proto=6)
    t.merge(k, stats(1, flags=0x02), interval=1.0)
    t.merge(k, stats(1, flags=0x10, t=T0 + NS), interval=1.0)
    ended = t.merge(k, stats(1, flags=0x11, t=T0 + 2 * NS), interval=1.0)
    assert len(t) == 0
    (r,) = list(ended.records())
    assert r.end_reason == EndReason.END_OF_FLOW
    assert r.tcp_flags == 0x13
    assert r.packets == 3


def test_idle_timeout_ends_quiet_flows_only() -> None:
    t = table(idle_timeout=15.0)
    t.merge(keys(2), stats(2), interval=1.0)
    t.merge(keys(1, sport0=1001), stats(1, t=T0 + 10 * NS), interval=1.0)
    ended = t.expire(T0 + 15 * NS)
    assert [r.key.sport for r in ended.records()] == [1000]
    assert [r.end_reason for r in ended.records()] == [EndReason.IDLE_TIMEOUT]
    assert [r.key.sport for r in t.records()] == [1001]


def test_active_timeout_exports_deltas_and_keeps_the_flow() -> None:
    t = table(active_timeout=60.0, idle_timeout=1000.0)
    k = keys(1)
    t.merge(k, stats(1, packets=10, nbytes=1000), interval=1.0)
    first = t.expire(T0 + 60 * NS)
    assert [(r.packets, r.bytes, r.end_reason) for r in first.records()] == [
        (10, 1000, EndReason.ACTIVE_TIMEOUT)
    ]
    t.merge(k, stats(1, packets=3, nbytes=300, t=T0 + 61 * NS), interval=1.0)
    assert t.expire(T0 + 100 * NS)["packets"].sum() == 0  # not yet 60 s since the export
    second = t.expire(T0 + 120 * NS)
    assert [(r.packets, r.bytes) for r in second.records()] == [(3, 300)]
    final = t.flush()
    assert len(final) == 0  # nothing new since the last export
    assert len(t) == 0


def test_new_flow_starts_at_its_earliest_packet_on_any_cpu() -> None:
    # One interval drained as per-CPU batches: the flow's row is created by
    # the batch that saw it later; its start (and active timeout) must follow
    # the earliest packet of all batches.
    t = table(active_timeout=60.0, idle_timeout=1000.0)
    k = keys(1)
    later = stats(1, packets=2, t=T0 + 5 * NS)
    earlier = stats(1, packets=3, t=T0)
    t.merge_many([(k, later), (k, earlier)], interval=1.0)
    exported = t.expire(T0 + 60 * NS)
    assert [(r.packets, r.unix(r.first_ns)) for r in exported.records()] == [(5, T0 / NS)]


def test_exports_add_up_to_cumulative_counters() -> None:
    t = table(active_timeout=2.0, idle_timeout=1000.0)
    k = keys(5)
    total = 0
    exported = 0
    for i in range(10):
        t.merge(k, stats(5, packets=i + 1, t=T0 + i * NS), interval=1.0)
        total += 5 * (i + 1)
        exported += int(t.expire(T0 + i * NS)["packets"].sum())
    exported += int(t.flush()["packets"].sum())
    assert exported == total


def test_bounded_table_evicts_least_recent_and_counts() -> None:
    t = table(max_flows=4)
    t.merge(keys(4), stats(4, t=T0), interval=1.0)
    t.merge(keys(2, sport0=1002), stats(2, t=T0 + NS), interval=1.0)  # refresh 1002, 1003
    ended = t.merge(keys(2, sport0=2000), stats(2, t=T0 + 2 * NS), interval=1.0)
    assert len(t) == 4
    assert t.forced_evictions == 2
    assert sorted(r.key.sport for r in ended.records()) == [1000, 1001]
    assert {r.end_reason for r in ended.records()} == {EndReason.LACK_OF_RESOURCES}
    assert sorted(r.key.sport for r in t.records()) == [1002, 1003, 2000, 2001]


def test_more_new_flows_than_capacity_in_one_interval_end_at_once() -> None:
    t = table(max_flows=3)
    ended = t.merge(keys(5), stats(5, packets=2, nbytes=80), interval=1.0)
    assert len(t) == 3
    assert t.forced_evictions == 2
    recs = list(ended.records())
    assert [(r.packets, r.bytes, r.end_reason) for r in recs] == [
        (2, 80, EndReason.LACK_OF_RESOURCES)
    ] * 2
    # nothing lost: what the table holds plus what ended is what came in
    assert sum(r.packets for r in t.records()) + sum(r.packets for r in recs) == 10


def test_top_orders_and_limits() -> None:
    t = table()
    s = stats(50)
    s["bytes"] = np.arange(50) * 10
    t.merge(keys(50), s, interval=1.0)
    top = t.top(5, by="bytes")
    assert [r.bytes for r in top] == [490, 480, 470, 460, 450]
    low = t.top(3, by="bytes", descending=False)
    assert [r.bytes for r in low] == [0, 10, 20]
    with pytest.raises(ValueError):
        t.top(3, by="nonsense")


def test_rows_are_reused_after_flows_end() -> None:
    t = table(initial_capacity=64)
    for round_ in range(20):
        t.merge(keys(50, sport0=round_ * 100), stats(50, t=T0 + round_ * NS), interval=1.0)
        t.flush()
    assert t._cap <= 128


def test_merge_many_sums_one_flow_seen_in_several_batches() -> None:
    """The hash map and each CPU's cache can all hold the same flow."""
    t = table(max_flows=10)
    k = keys(3)
    s1 = stats(3, packets=1, nbytes=10, t=T0 + 5)
    s2 = stats(2, packets=2, nbytes=20, t=T0)
    s2["last_seen_ns"] = T0 + 9
    ended = t.merge_many([(k, s1), (k[:2], s2), (k[:0], stats(0))], interval=1.0)
    assert len(ended) == 0 and len(t) == 3
    r = {x.key.sport: x for x in t.records()}
    assert (r[1000].packets, r[1000].bytes, r[1000].pps) == (3, 30, 3.0)
    assert r[1000].unix(r[1000].first_ns) == pytest.approx(T0 / NS)
    assert r[1000].unix(r[1000].last_ns) == pytest.approx((T0 + 9) / NS)
    assert (r[1002].packets, r[1002].bytes) == (1, 10)


def test_eviction_spares_flows_touched_earlier_in_the_interval() -> None:
    t = table(max_flows=4)
    t.merge(keys(3), stats(3, t=T0), interval=1.0)  # old: 1000..1002
    a = keys(1, sport0=1000)  # refreshed in batch 1
    b = keys(2, sport0=3000)  # two new in batch 2: one old flow must go
    ended = t.merge_many([(a, stats(1, t=T0 + NS)), (b, stats(2, t=T0 + NS))], interval=1.0)
    gone = sorted(x.key.sport for x in ended.records())
    assert len(gone) == 1 and gone[0] in (1001, 1002)
    assert 1000 in {x.key.sport for x in t.records()}
    assert len(t) == 4


def test_writable_columns_take_memory_only_from_their_first_real_write() -> None:
    t = table(initial_capacity=64)
    t.merge(keys(40), stats(40), interval=1.0)
    rows = t.live_rows()
    before = sum(c.nbytes for c in t._c.values())
    # Not allocated yet: reads are the blank, writes of nothing but blanks keep it so.
    assert "rtt_us" not in t._c and "drop_packets" not in t._c
    assert (t.column("src_ent", rows) == -1).all()
    t.set_column("drop_packets", rows, 0)
    t.set_column("rtt_us", rows[:0], 123)
    assert "drop_packets" not in t._c and "rtt_us" not in t._c
    assert sum(c.nbytes for c in t._c.values()) == before
    # The first real write allocates the column, blank everywhere else, and
    # growing the table keeps what was written.
    t.set_column("rtt_us", rows[:3], 777)
    assert t._c["rtt_us"].nbytes == 4 * t._cap
    t.merge(keys(200, sport0=5000), stats(200), interval=1.0)
    assert t._cap >= 240
    live = t.live_rows()
    sports, rtts = t.keys_at(live)["sport"].tolist(), t.column("rtt_us", live).tolist()
    got = dict(zip(sports, rtts, strict=True))
    assert len(got) == 240
    written = {int(s) for s in t.keys_at(rows[:3])["sport"]}
    assert {s for s, v in got.items() if v == 777} == written
    assert all(v == 0 for s, v in got.items() if s not in written)
    # A stray write into a column that is not allocated fails loudly.
    with pytest.raises(ValueError):
        t._c["retrans"][rows] = 1
    # The ended flows' records carry the written values and the blanks.
    ended = t.flush()
    assert len(ended) == 240
    assert sorted(ended["rtt_us"].tolist()) == [0] * 237 + [777] * 3
    assert (ended["drop_packets"] == 0).all() and (ended["src_ent"] == -1).all()
