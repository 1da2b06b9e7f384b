"""The cheaper per-step path of zones and monitors gives what the direct one
gives: counted_by_legs (from the flow table's conv_id/conv_leg) against
core/conversations.counted_once (from the keys), its sort with a forced
truncated-hash collision, FlowTable.merged_rows against rows_of (flows
ended by FIN, by timeout, spilled for lack of room, keys in two batches),
drain_records over the merged rows against the lookup path, the dense zone
pair sums against the sort, and the monitors' top conversations read with
the memo's ways against the query with the monitor's own expressions.

Over many steps of churning synthetic connections (router legs and host
flows, TCP, UDP and ICMP), the tracker's totals are checked against sums
of the records the test wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowtop.config import from_mapping
from flowtop.core import conversations
from flowtop.core.conversations import counted_once, ids_and_legs
from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.core.model import TCP_FIN
from flowtop.enrich.enricher import Enricher, EnrichOptions, parse_networks
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.query import monitors, zones
from flowtop.query.entities import EntityArrays
from flowtop.query.tablequery import query_table
from flowtop.query.types import ViewQuery

from .test_view import NS, T0, FakeCollector

_KEY = layout.FLOW_KEY_WORDS
LABELS = "lan 10.0.0.0/8 zone=a\nsvc 192.0.2.0/24 zone=b\n"
MONITORS: list[dict[str, object]] = [
    {"name": "w", "local": "net 10.0.0.0/8", "remote": "host 192.0.2.1"},
    {"name": "z", "local": "zone a", "remote": "zone b and port 443"},
]
# ifindex, direction, client -> server? (a router's four legs)
ROUTER = ((2, 0, True), (3, 1, True), (3, 0, False), (2, 1, False))
HOST = ((2, 1, True), (2, 0, False))  # this host is the client


def v4(first: int, idx: np.ndarray) -> np.ndarray:
    a = np.zeros((len(idx), 16), dtype=np.uint8)
    a[:, 0] = first
    a[:, 1], a[:, 2], a[:, 3] = (idx >> 16) & 0xFF, (idx >> 8) & 0xFF, idx & 0xFF
    return a.view("V16").ravel()


def records(
    conns: np.ndarray, legs: tuple[tuple[int, int, bool], ...], now: int, up: int = 700
) -> tuple[np.ndarray, np.ndarray]:
    """Keys and stats of connections (numbers) on the given legs: client
    10.x, server 192.0.2.(c % 7 + 1), port 443 or 80 (TCP), 53 (UDP) or an
    ICMP echo; up bytes client -> server per record, 3x that back."""
    n = len(conns)
    srv = np.zeros((n, 16), dtype=np.uint8)
    srv[:, :3] = (192, 0, 2)
    srv[:, 3] = conns % 7 + 1
    kind = conns % 5
    proto = np.where(kind == 4, 1, np.where(kind == 3, 17, 6)).astype(np.uint8)
    sport = np.where(kind == 3, 53, np.where(conns % 2 == 0, 443, 80)).astype(np.uint16)
    cport = (1024 + conns % 60000).astype(np.uint16)
    ks, ss = [], []
    for ifindex, direction, fwd in legs:
        k = np.zeros(n, dtype=layout.FLOW_KEY)
        k["ifindex"], k["direction"], k["ip_version"], k["proto"] = ifindex, direction, 4, proto
        a, b = v4(10, conns), srv.view("V16").ravel()
        k["src"], k["dst"] = (a, b) if fwd else (b, a)
        pa, pb = cport, sport
        icmp = proto == 1
        k["sport"], k["dport"] = (pa, pb) if fwd else (pb, pa)
        k["sport"][icmp], k["dport"][icmp] = 0, np.where(fwd, 8, 0)  # echo request / reply
        s = np.zeros(n, dtype=layout.FLOW_STATS)
        s["packets"], s["bytes"] = 2, up if fwd else 3 * up
        s["first_seen_ns"] = s["last_seen_ns"] = now
        ks.append(k)
        ss.append(s)
    return np.concatenate(ks), np.concatenate(ss)


def mixed(rng: np.random.Generator, n: int, now: int) -> tuple[np.ndarray, np.ndarray]:
    """Router connections (some with only some legs in the interval) and host
    flows, shuffled."""
    k1, s1 = records(np.arange(n), ROUTER, now)
    k2, s2 = records(np.arange(n, 2 * n), HOST, now)
    k, s = np.concatenate([k1, k2]), np.concatenate([s1, s2])
    keep = rng.random(len(k)) < 0.8  # an idle leg is not in the interval
    order = rng.permutation(int(keep.sum()))
    return k[keep][order], s[keep][order]


def test_counted_by_legs_is_counted_once() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 10, 500, 5000):
        k, _ = mixed(rng, n, T0)
        words = _KEY.view(k)
        conv, leg = ids_and_legs(words)
        want = counted_once(words)
        assert not want.all()  # the router's egress legs with an ingress one
        assert conversations.counted_by_legs(conv, leg).tolist() == want.tolist()
    # One direction of hooks only: everything counts.
    k, _ = records(np.arange(50), HOST[:1], T0)
    conv, leg = ids_and_legs(_KEY.view(k))
    assert conversations.counted_by_legs(conv, leg).all()


def test_counted_sorted_collision_takes_the_search() -> None:
    # Two oriented ids equal in their low 40 bits (what the sort keeps) but
    # not whole: the sort says so (None) and counted_by_legs still answers
    # exactly. Records: 0 ingress id A, 1 egress id B, 2 egress id A.
    a = np.uint64(0x1234_5678_9A)
    b = a | np.uint64(1 << 50)
    conv = np.array([a, b, a], dtype=np.uint64) // np.uint64(2)
    leg = np.array([0, 1, 1], dtype=np.uint8)
    oriented = conv * np.uint64(2) + (leg >> 1).astype(np.uint64)
    assert (oriented[0] << np.uint64(24)) == (oriented[1] << np.uint64(24))
    assert conversations._counted_sorted(oriented, (leg & 1).astype(bool)) is None
    # B has no ingress record: it counts; A's egress does not.
    assert conversations.counted_by_legs(conv, leg).tolist() == [True, True, False]


def test_merged_rows_is_rows_of() -> None:
    rng = np.random.default_rng(3)
    table = FlowTable(max_flows=900, idle_timeout=2.0)
    for step in range(6):
        now = T0 + step * NS
        k, s = mixed(rng, 200, now)
        s["tcp_flags"][rng.random(len(s)) < 0.05] = TCP_FIN  # some end in the step
        if step == 3:
            s["last_seen_ns"][: len(s) // 3] = now - 5 * NS  # these idle out
        half = len(k) // 2
        # Two batches (two CPUs), the second with some keys of the first.
        b2 = np.concatenate([k[half:], k[: half // 4]])
        s2 = np.concatenate([s[half:], s[: half // 4]])
        batches = [(k[:half], s[:half]), (b2, s2)]
        table.merge_many(batches, 1.0)
        table.expire(now)
        got = table.merged_rows(batches)
        want = table.rows_of(np.concatenate([k[:half], b2]))
        assert got is not None
        assert got.tolist() == want.tolist()
        assert (want < 0).any()  # ended, idle, or no room (900 rows for ~1100 keys)
        # Other arrays, or a table that gave rows to keys since: no answer.
        assert table.merged_rows([(k[:half].copy(), s[:half]), (b2, s2)]) is None
    assert table.forced_evictions > 0
    k, s = mixed(rng, 10, T0 + 9 * NS)
    k["sport"] += 7  # new keys: rows given
    table.merge(k, s, 1.0)
    assert table.merged_rows(batches) is None


def engine_with(tmp_path: Path, frames: list[Drain], cfg: list[dict[str, object]]) -> Engine:
    labels = tmp_path / "labels"
    labels.write_text(LABELS)
    opts = EnrichOptions(
        labels=str(labels),
        search_default_paths=False,
        local_networks=parse_networks(["10.9.0.0/24"]),
    )
    engine = Engine(FakeCollector(frames), FlowTable(clock_offset=0.0, idle_timeout=3.0))
    engine.set_enricher(Enricher(opts))
    monitors.configure(engine, from_mapping({"monitor": cfg}))
    return engine


def test_drain_records_merged_rows_as_looked_up(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    k, s = mixed(rng, 300, T0)
    s["tcp_flags"][::9] = TCP_FIN  # some rows end in the step: looked up from their keys
    d = Drain([(k, s)], T0 + NS, 1.0)
    engine = engine_with(tmp_path, [d], MONITORS)
    engine.step()
    fast = zones.drain_records(d, engine.enricher, engine.table)
    # Copies of the key arrays: not what the table merged, so rows_of.
    slow = zones.drain_records(Drain([(k.copy(), s)], d.now_ns, 1.0), engine.enricher, engine.table)
    assert (fast.rows < 0).sum() == len(k[::9])
    for name in ("rows", "src_ent", "dst_ent", "packets", "bytes", "counted"):
        assert getattr(fast, name).tolist() == getattr(slow, name).tolist(), name
    assert fast.counted.tolist() == counted_once(_KEY.view(k)).tolist()
    assert (fast.src_ent > 0).all()  # looked up, also for the ended ones


def test_zone_step_dense_as_sorted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    k, s = mixed(rng, 400, T0)
    d = Drain([(k, s)], T0 + NS, 1.0)
    engine = engine_with(tmp_path, [d], [])
    engine.step()
    assert engine.enricher is not None
    ea = EntityArrays(engine.enricher)
    recs = zones.drain_records(d, engine.enricher, engine.table)
    dense = zones.zone_step(recs, ea)
    monkeypatch.setattr(zones, "_DENSE_ZONES", 0)
    assert zones.zone_step(recs, ea) == dense
    # And what went in: a (10.x, the clients) -> b and back, each packet once.
    once = counted_once(_KEY.view(k))
    client = np.array(k["src"]).view(np.uint8).reshape(-1, 16)[:, 0] == 10
    pairs = {p: (b, n) for p, b, n in dense.pairs}
    for pair, sel in ((("a", "b"), client), (("b", "a"), ~client)):
        assert pairs[pair] == (
            int(s["bytes"][once & sel].sum()),
            int(s["packets"][once & sel].sum()),
        )
    assert set(pairs) == {("a", "b"), ("b", "a")}
    assert dense.cross_bytes == int(s["bytes"][once].sum())


def test_tracker_over_churn_matches_the_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    conns = np.arange(400)
    fresh = len(conns)
    frames, want = [], {"w": [0, 0], "z": [0, 0]}
    for step in range(12):
        now = T0 + step * NS
        gone = rng.choice(len(conns), 20, replace=False)
        conns = conns.copy()
        conns[gone] = np.arange(fresh, fresh + 20)
        fresh += 20
        k, s = records(conns, ROUTER, now, up=100 + step)
        frames.append(Drain([(k, s)], now + NS, 1.0))
        # Ground truth: each connection once per direction (the ingress legs).
        srv, port = conns % 7 + 1, np.where(conns % 5 == 3, 53, np.where(conns % 2 == 0, 443, 80))
        tcp_udp = conns % 5 != 4  # ICMP has no port
        for name, sel in (("w", srv == 1), ("z", tcp_udp & (port == 443))):
            want[name][0] += int(sel.sum()) * (100 + step)
            want[name][1] += int(sel.sum()) * 3 * (100 + step)
    engine = engine_with(tmp_path, frames, MONITORS)
    tracker = monitors.tracker_of(engine)
    assert tracker is not None
    for _ in range(12):
        engine.step()
        # The top conversations read with the memo's ways are the query's
        # with the monitor's own expressions.
        ea = tracker._entity_arrays(engine)
        names = engine.collector.names()
        tracker._read_top(engine.table, names, ea)
        for m in tracker._monitors:
            query = ViewQuery(group_by=monitors.TOP_GROUP, sort="bytes", limit=monitors.TOP)
            direct, _ = query_table(engine.table, query, m.filter, names, ea)
            assert list(m.top) == direct and direct
    got = {s.name: [s.local_to_remote_bytes, s.remote_to_local_bytes] for s in tracker.statuses()}
    assert got == want
