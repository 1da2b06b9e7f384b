"""Queries (filter, group, sort, limit), sources and record/replay, without a kernel."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import numpy as np
import pytest

from flowtop.core.engine import Engine
from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.query.filterexpr import parse
from flowtop.query.source import TableSource
from flowtop.query.tablequery import query_table
from flowtop.query.types import ViewQuery
from flowtop.run.record import Recorder, RecordingError, ReplaySource

T0 = 1_000 * NS


def flows(spec: list[tuple[str, str, int, int, int, int]], ifindex: int = 2):
    """spec: (src, dst, proto, sport, dport, bytes) -> (keys, stats)."""
    k = np.zeros(len(spec), dtype=layout.FLOW_KEY)
    s = np.zeros(len(spec), dtype=layout.FLOW_STATS)
    for i, (src, dst, proto, sp, dp, nbytes) in enumerate(spec):
        a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        k[i]["ifindex"], k[i]["ip_version"], k[i]["proto"] = ifindex, a.version, proto
        k[i]["src"], k[i]["dst"] = a.packed.ljust(16, b"\0"), b.packed.ljust(16, b"\0")
        k[i]["sport"], k[i]["dport"] = sp, dp
        s[i]["packets"], s[i]["bytes"] = max(1, nbytes // 100), nbytes
        s[i]["first_seen_ns"] = s[i]["last_seen_ns"] = T0
    return k, s


SPEC = [
    ("10.0.0.1", "192.0.2.1", 6, 40001, 443, 9000),
    ("10.0.0.1", "192.0.2.2", 6, 40002, 443, 5000),
    ("10.0.0.2", "192.0.2.1", 17, 5353, 53, 300),
    ("10.0.0.3", "192.0.2.9", 6, 22, 50000, 7000),
    ("2001:db8::1", "2001:db8::2", 17, 1000, 2000, 100),
]


def table() -> FlowTable:
    t = FlowTable(clock_offset=0.0)
    t.merge(*flows(SPEC), interval=1.0)
    return t


def q(t: FlowTable, **kw: object) -> list:
    query = ViewQuery(**kw)  # type: ignore[arg-type]
    rows, _ = query_table(t, query, parse(query.filter), {2: "eth1"})
    return rows


def test_flows_sorted_by_rate_with_full_columns() -> None:
    rows = q(table())
    assert [r.bytes for r in rows] == [9000, 7000, 5000, 300, 100]
    top = rows[0]
    assert (top.src, top.sport, top.dst, top.dport, top.proto_name) == (
        "10.0.0.1", 40001, "192.0.2.1", 443, "tcp",
    )  # fmt: skip
    assert top.bps == 9000 * 8 and top.flows == 1 and top.iface == "eth1"
    assert top.direction == "in" and top.first_seen == pytest.approx(T0 / NS)
    assert rows[-1].src == "2001:db8::1"


def test_group_by_source_sums_and_blanks_other_columns() -> None:
    rows = q(table(), group_by="src")
    by = {r.src: r for r in rows}
    assert by["10.0.0.1"].bytes == 14000 and by["10.0.0.1"].flows == 2
    assert by["10.0.0.1"].dst is None and by["10.0.0.1"].sport is None
    assert rows[0].src == "10.0.0.1"


@pytest.mark.parametrize(
    ("group", "expect"),
    [
        ("dst", {"192.0.2.1": 9300, "192.0.2.2": 5000, "192.0.2.9": 7000, "2001:db8::2": 100}),
        ("port", {443: 14000, 53: 300, 22: 7000, 1000: 100}),
        ("proto", {"tcp": 21000, "udp": 400}),
        ("pair", {("10.0.0.1", "192.0.2.1"): 9000}),
        ("iface", {("eth1", "in"): 21400}),
    ],
)
def test_group_by(group: str, expect: dict[object, int]) -> None:
    rows = q(table(), group_by=group)
    key = {
        "dst": lambda r: r.dst,
        "port": lambda r: r.dport,
        "proto": lambda r: r.proto_name,
        "pair": lambda r: (r.src, r.dst),
        "iface": lambda r: (r.iface, r.direction),
    }[group]
    got = {key(r): r.bytes for r in rows}
    for k, v in expect.items():
        assert got[k] == v


def test_filter_limit_and_sorts() -> None:
    t = table()
    assert [r.bytes for r in q(t, filter="tcp and dport 443")] == [9000, 5000]
    assert [r.bytes for r in q(t, limit=2)] == [9000, 7000]
    assert [r.bytes for r in q(t, sort="bytes", descending=False, limit=2)] == [100, 300]
    assert [r.src for r in q(t, sort="src", descending=False)][:3] == [
        "10.0.0.1", "10.0.0.1", "10.0.0.2",
    ]  # fmt: skip
    assert q(t, sort="dport")[0].dport == 50000


def test_row_keys_are_stable_and_distinct() -> None:
    a, b = q(table()), q(table())
    assert [r.key for r in a] == [r.key for r in b]
    assert len({r.key for r in a}) == len(a)


class FakeCollector:
    """Drains from a list, like a recording but in memory."""

    def __init__(self, frames: list[Drain]) -> None:
        self.frames = list(frames)
        self.n = 0

    def start(self) -> list[str]:
        return ["eth1"]

    def drain(self) -> Drain:
        if not self.frames:
            return Drain([], T0, 0.0)
        self.n += 1
        return self.frames.pop(0)

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        pass

    def names(self) -> dict[int, str]:
        return {2: "eth1"}

    def interfaces(self) -> list[str]:
        return ["eth1"]

    def interface_counters(self) -> list[InterfaceCounters]:
        return [InterfaceCounters(2, "eth1", "ipv4", self.n * 10, self.n * 1000, 0, 0)]

    def health(self, forced_evictions: int = 0) -> CollectorHealth:
        return CollectorHealth(kernel={"flow_map_full": 1}, forced_evictions=forced_evictions)

    def stop_capture(self) -> None:
        pass

    def close(self) -> None:
        pass


class StepSource(TableSource):
    def step(self) -> None:
        self.engine.step()
        self._after_step()

    def close(self) -> None:
        pass


def frames() -> list[Drain]:
    k, s = flows(SPEC)
    out = []
    for i in range(3):
        s2 = s.copy()
        s2["first_seen_ns"] = s2["last_seen_ns"] = T0 + i * NS
        out.append(Drain([(k, s2)], T0 + (i + 1) * NS, 1.0))
    return out


def test_table_source_snapshot_filter_error_keeps_previous_filter() -> None:
    src = StepSource(Engine(FakeCollector(frames()), FlowTable(clock_offset=0.0)), host="h")
    src.step()
    snap = src.snapshot(ViewQuery(filter="udp"))
    assert snap.filter_error is None and snap.matched == 2 and snap.active_flows == 5
    bad = src.snapshot(ViewQuery(filter="udp and"))
    assert bad.filter_error is not None and "expected a filter term" in bad.filter_error
    assert [r.key for r in bad.rows] == [r.key for r in snap.rows]  # previous filter kept
    assert snap.problems == 1 and snap.health["flow_map_full"] == 1
    assert snap.host == "h" and snap.interfaces[0].name == "eth1"
    src.snapshot(ViewQuery())
    src.step()
    again = src.snapshot(ViewQuery())
    assert again.interfaces[0].rx_bps > 0
    hist = src.history(again.rows[0].key)
    assert len(hist) == 2 and hist[-1][1] == again.rows[0].bps


def test_record_and_replay_give_the_same_view(tmp_path: Path) -> None:
    path = str(tmp_path / "run.ftrec")
    live = StepSource(Engine(FakeCollector(frames()), FlowTable(clock_offset=0.0)), host="h")
    rec = Recorder(path, "h", 1.0, 0.0)
    live_snaps = []
    for _ in range(3):
        live.step()
        d = live.engine.last_drain
        assert d is not None
        rec.frame(d, {2: "eth1"}, live.engine.interface_counters(), {"flow_map_full": 1})
        live_snaps.append(live.snapshot(ViewQuery(group_by="src")))
    rec.close()
    replay = ReplaySource(path, speed=1000)
    try:
        for want in live_snaps:
            assert replay.advance()
            got = replay.snapshot(ViewQuery(group_by="src"))
            assert [(r.key, r.bytes, r.bps) for r in got.rows] == [
                (r.key, r.bytes, r.bps) for r in want.rows
            ]
            assert got.time == pytest.approx(want.time - (want.time - got.time))
            assert got.health["flow_map_full"] == 1
        assert not replay.advance() and replay.ended
    finally:
        replay.close()


def test_replay_of_a_cut_recording_ends_cleanly(tmp_path: Path) -> None:
    path = str(tmp_path / "cut.ftrec")
    rec = Recorder(path, "h", 1.0, 0.0)
    for d in frames():
        rec.frame(d, {2: "eth1"}, [], {})
    rec.close()
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 10)
    replay = ReplaySource(path)
    assert replay.advance() and replay.advance() and not replay.advance()
    replay.close()


def test_not_a_recording(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"hello world, not a recording")
    with pytest.raises(RecordingError, match="is not a flowtop recording"):
        ReplaySource(str(p))
    with pytest.raises(RecordingError, match="cannot read"):
        ReplaySource(str(tmp_path / "missing"))


@pytest.mark.parametrize("n", [10, 5000, 100_000])
@pytest.mark.parametrize("zeros", [0.0, 0.7, 1.0])
def test_smallest_matches_a_full_sort(n: int, zeros: float) -> None:
    from flowtop.query.ordering import smallest

    rng = np.random.default_rng(n)
    vals = rng.integers(1, 50_000, n).astype(np.float64)
    vals[rng.random(n) < zeros] = 0.0
    vals = -vals  # as the view does for descending order
    for k in (1, 100):
        got = smallest(vals, k)
        kth = np.sort(vals)[min(k, n) - 1]
        expect = np.flatnonzero(vals <= kth)
        assert np.array_equal(np.sort(got), expect)
