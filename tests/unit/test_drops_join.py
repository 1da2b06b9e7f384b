"""Kernel drops joined to flows (core/drops.py) through the engine, and what
shows them: dump (JSON and text), the view's filter terms and sort, the
Drops column, Prometheus. Drop records are made here as DropCollector.drain
hands them out (drop_records.DROP_RECORD); the reason table is a made-up
`enum skb_drop_reason` (the values differ between kernels: nothing here
depends on which)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from flowtop.core.drops import NO_REASON, DropTable
from flowtop.core.engine import Engine
from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.tcphealth import DEGRADED, HealthGroup, HealthTracker, TcpUpdate
from flowtop.export.prometheus import FlowMetrics
from flowtop.kernel.collector import Drain
from flowtop.kernel.drop_records import DROP_RECORD
from flowtop.kernel.dropreasons import from_enum
from flowtop.query.filterexpr import FilterError, parse
from flowtop.query.tablequery import query_table
from flowtop.query.types import ViewQuery
from flowtop.run.dump import Extras, FlowAccumulator, emit
from flowtop.tui.columns import choose
from flowtop.tui.format import Display

from .test_engine_errors import Scripted, flow
from .test_prometheus import exposition, published

T0 = 1_000 * NS
REASONS = from_enum(
    {
        "SKB_NOT_DROPPED_YET": 0,
        "SKB_CONSUMED": 1,
        "SKB_DROP_REASON_NOT_SPECIFIED": 2,
        "SKB_DROP_REASON_NO_SOCKET": 3,
        "SKB_DROP_REASON_NETFILTER_DROP": 9,
        "SKB_DROP_REASON_IP_RPFILTER": 14,
        "SKB_DROP_REASON_MAX": 15,
    }
)
NO_SOCKET, NETFILTER, RPF = 3, 9, 14


def drops(*items: tuple[int, int, int]) -> np.ndarray:
    """DROP_RECORDs of the test flows: (sport, reason, packets); 100-byte packets."""
    out = np.zeros(len(items), dtype=DROP_RECORD)
    for i, (sport, reason, packets) in enumerate(items):
        out[i]["key"] = flow(sport, 1)[0][0]
        out[i]["reason"] = reason
        out[i]["packets"] = packets
        out[i]["bytes"] = packets * 100
    return out


def step(i: int, flows: list[tuple[int, int]], recs: np.ndarray | None) -> Drain:
    fl = [flow(sport, n, T0 + i * NS) for sport, n in flows]
    batches = (
        [(np.concatenate([k for k, _ in fl]), np.concatenate([s for _, s in fl]))] if fl else []
    )
    return Drain(
        batches, T0 + i * NS, 1.0, drops=recs, drop_reasons=REASONS if recs is not None else None
    )


def run(script: list[Drain]) -> tuple[Engine, FlowAccumulator]:
    table = FlowTable(clock_offset=0.0, idle_timeout=3600, active_timeout=3600)
    engine = Engine(Scripted(script), table, interval=1.0)  # type: ignore[arg-type]
    acc = FlowAccumulator(0.0)
    engine.sinks.append(acc)
    for _ in script:
        engine.step()
    return engine, acc


def column(engine: Engine, name: str, sport: int) -> int:
    t = engine.table
    rows = t.live_rows()
    row = rows[t.keys_at(rows)["sport"] == sport]
    assert len(row) == 1
    return int(t.column(name, row)[0])


def dump_lines(engine: Engine, acc: FlowAccumulator, as_json: bool = True) -> str:
    engine.shutdown()
    out = io.StringIO()
    emit(acc.per_key(), {2: "eth1"}, [], engine.health(), as_json=as_json, out=out,
         extras=Extras(drops=engine.drops))  # fmt: skip
    return out.getvalue()


SCRIPT = [
    step(0, [(1000, 20), (1001, 8)], drops((1000, NO_SOCKET, 3), (1000, NETFILTER, 5))),
    step(1, [(1000, 4)], drops((1000, NETFILTER, 2))),
    step(2, [(1001, 1)], drops()),
]


def test_drops_joined_to_their_flows_rows() -> None:
    engine, _ = run(SCRIPT)
    assert column(engine, "drop_packets", 1000) == 10
    assert column(engine, "drop_bytes", 1000) == 1000
    assert column(engine, "drop_reason", 1000) == NETFILTER  # 7 packets beat 3
    assert (column(engine, "drop_packets", 1001), column(engine, "drop_reason", 1001)) == (
        0, NO_REASON,
    )  # fmt: skip
    assert engine.drops is not None
    assert engine.drops.totals() == {"NETFILTER_DROP": 7, "NO_SOCKET": 3}
    assert engine.drops.no_flow_packets() == 0


def test_dump_json_drops_field_and_summary() -> None:
    engine, acc = run(SCRIPT)
    lines = [json.loads(x) for x in dump_lines(engine, acc).splitlines()]
    by = {x["sport"]: x for x in lines if x["type"] == "flow"}
    assert by[1000]["drops"] == {"NETFILTER_DROP": 7, "NO_SOCKET": 3}
    assert list(by[1000]["drops"]) == ["NETFILTER_DROP", "NO_SOCKET"]  # most first
    assert by[1001]["drops"] == {}
    summary = [x for x in lines if x["type"] == "drops"]
    assert summary == [
        {
            "type": "drops",
            "by_reason": {"NETFILTER_DROP": 7, "NO_SOCKET": 3},
            "no_flow": 0,
            "evicted": 0,
        }
    ]


def test_dump_without_drops_collected_has_no_drops_key_nor_column() -> None:
    engine, acc = run([step(0, [(1000, 3)], None)])
    assert engine.drops is None
    text = dump_lines(engine, acc)
    flows = [json.loads(x) for x in text.splitlines() if '"flow"' in x]
    assert len(flows) == 1 and "drops" not in flows[0]
    assert '"type": "drops"' not in text
    engine2, acc2 = run([step(0, [(1000, 3)], None)])
    assert "DROPS" not in dump_lines(engine2, acc2, as_json=False).splitlines()[0]


def test_dump_text_drops_column() -> None:
    engine, acc = run(SCRIPT)
    lines = dump_lines(engine, acc, as_json=False).splitlines()
    at = lines[0].index("DROPS")  # right-aligned, as wide as its header here
    cells = {ln.split()[3]: ln[at : at + 5].strip() for ln in lines[1:3]}
    assert cells == {"10.0.0.1:1000": "10", "10.0.0.1:1001": ""}  # blank: no drops


def test_a_drop_whose_row_comes_a_drain_later_joins_it() -> None:
    """The drop map is read after the flow map: a new flow's first dropped
    packet can be drained before its row exists; it waits one drain."""
    engine, _ = run(
        [step(0, [(1000, 1)], drops((2000, NO_SOCKET, 4))), step(1, [(2000, 4)], drops())]
    )
    assert column(engine, "drop_packets", 2000) == 4
    assert engine.drops is not None and engine.drops.no_flow_packets() == 0


def test_drops_of_no_flow_are_counted_per_reason() -> None:
    """An egress drop before TC egress has no flow row: after its one drain
    of grace it counts as on no flow, and no row is made for it."""
    engine, acc = run(
        [
            step(0, [(1000, 1)], drops((3000, RPF, 6))),
            step(1, [(1000, 1)], drops()),
            step(2, [(1000, 1)], drops()),
        ]
    )
    assert engine.drops is not None
    assert engine.drops.no_flow == {RPF: 6}
    assert len(engine.table) == 1
    top = engine.drops.top(5, engine.table)
    assert [(int(t.key["sport"]), t.packets, dict(t.reasons), t.has_row) for t in top] == [
        (3000, 6, {"IP_RPFILTER": 6}, False)
    ]
    lines = [json.loads(x) for x in dump_lines(engine, acc).splitlines()]
    assert next(x for x in lines if x["type"] == "drops")["no_flow"] == 6


def test_table_bound_evicts_oldest_and_counts() -> None:
    t = DropTable(REASONS, max_entries=3)
    t.add(drops((1, NO_SOCKET, 1), (2, NO_SOCKET, 1)), 10)
    t.add(drops((3, NO_SOCKET, 1), (4, NO_SOCKET, 1)), 20)
    assert len(t.entries) == 3 and t.evicted == 1
    assert sorted(int(k) for k in t.entries["key"]["sport"]) == [2, 3, 4]
    assert t.totals() == {"NO_SOCKET": 4}  # evicted entries' packets still counted


def test_entries_of_gone_flows_expire() -> None:
    table = FlowTable(clock_offset=0.0)
    t = DropTable(REASONS, keep_s=5.0)
    k, s = flow(1000, 1, T0)
    table.merge(k, s, 1.0)
    t.join(table, drops((1000, NO_SOCKET, 1), (1001, NO_SOCKET, 1)), T0)
    assert t.expire(table, T0 + 4 * NS) == 0
    assert t.expire(table, T0 + 6 * NS) == 1  # 1001 (no row) goes, 1000 (live) stays
    assert [int(x) for x in t.entries["key"]["sport"]] == [1000]


def _view(engine: Engine, text: str, sort: str = "bps") -> list[tuple[int | None, int]]:
    q = ViewQuery(filter=text, sort=sort)
    rows, _ = query_table(engine.table, q, parse(text), {2: "eth1"}, dt=engine.drops)
    return [(r.sport, r.drops) for r in rows]


def test_filter_terms_and_sort() -> None:
    engine, _ = run(
        [
            step(0, [(1000, 20), (1001, 8), (1002, 30)],
                 drops((1000, NO_SOCKET, 3), (1001, NETFILTER, 5))),
        ]
    )  # fmt: skip
    assert sorted(_view(engine, "dropped")) == [(1000, 3), (1001, 5)]
    assert _view(engine, "not dropped") == [(1002, 0)]
    assert _view(engine, "drop netfilter_drop") == [(1001, 5)]
    assert _view(engine, "drop NET*") == [(1001, 5)]
    assert sorted(_view(engine, "drop no_socket or drop ip_rpfilter")) == [(1000, 3)]
    assert _view(engine, "", sort="drops") == [(1001, 5), (1000, 3), (1002, 0)]
    with pytest.raises(FilterError, match="no such drop reason") as err:
        _view(engine, "drop BOGUS")
    assert "SKB_" not in str(err.value) and "Traceback" not in str(err.value)
    with pytest.raises(FilterError, match="expected a drop reason"):
        parse("drop")
    with pytest.raises(FilterError, match="not a drop reason name"):
        parse("drop a;b")


def test_filter_without_drops_collected_is_one_error() -> None:
    engine, _ = run([step(0, [(1000, 2)], None)])
    q = ViewQuery(filter="dropped")
    with pytest.raises(FilterError, match="no drop reasons"):
        query_table(engine.table, q, parse("dropped"), {2: "eth1"}, dt=None)


def test_drops_column_only_when_some_row_has_drops() -> None:
    engine, _ = run(SCRIPT)
    q = ViewQuery()
    rows, _ = query_table(engine.table, q, parse(""), {2: "eth1"}, dt=engine.drops)
    wide = [c.key for c in choose(rows, "flow", Display(), 160)]
    assert "drop_packets" in wide
    quiet, _ = query_table(engine.table, q, parse("not dropped"), {2: "eth1"}, dt=engine.drops)
    assert "drop_packets" not in [c.key for c in choose(quiet, "flow", Display(), 160)]
    # The 80-column view keeps its columns: Drops only fits after the others.
    narrow = [c.key for c in choose(rows, "flow", Display(), 80)]
    base = [c.key for c in choose(quiet, "flow", Display(), 80)]
    assert narrow == base


def test_prometheus_drops_total_by_reason() -> None:
    m = FlowMetrics()
    for d in SCRIPT:
        m.add_drain(d)
    text = exposition(published(m))
    series = {
        ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln.startswith("flowtop_drops_total{")
    }
    assert series == {
        'flowtop_drops_total{reason="NETFILTER_DROP"}': 7.0,
        'flowtop_drops_total{reason="NO_SOCKET"}': 3.0,
    }
    assert 'flowtop_drop_bytes_total{reason="NETFILTER_DROP"} 700.0' in text
    # Without drops collected there is no drops family at all.
    bare = FlowMetrics()
    bare.add_drain(step(0, [(1000, 1)], None))
    assert "flowtop_drops_total" not in exposition(published(bare))


def test_health_verdict_blames_this_box() -> None:
    """Drops on this box make the interface and the remote group degraded,
    and the reason says where and why, not the network."""
    engine, _ = run(SCRIPT)
    assert engine.tcp_health is not None
    by = {(g.scope, g.group): g for g in engine.tcp_health.groups()}
    want = "dropped on this box: NETFILTER_DROP, 7 packets (and NO_SOCKET, 3)"
    assert by[("interface", "eth1")].verdict == DEGRADED
    assert by[("interface", "eth1")].reason == want
    remote = [g for (scope, _), g in by.items() if scope == "remote"]
    assert [(g.verdict, g.reason) for g in remote] == [(DEGRADED, want)]
    # The window passes without drops: healthy again (no groups left at all).
    t = engine.tcp_health
    t.update(TcpUpdate(), (T0 + 20 * NS) / 1e9)
    assert t.groups() == []


def test_health_drops_come_before_the_networks_reason() -> None:
    t = HealthTracker(ifname=lambda i: "eth1")
    t.add_drops(drops((1000, NETFILTER, 4)), REASONS, 1.0)
    g = HealthGroup("interface", "eth1", DEGRADED, "2.0% retransmits on eth1 to all destinations",
                    None, None, None, 0.02, 10, 500, 0)  # fmt: skip
    out = t._with_drops([g])
    assert [x.reason for x in out if x.scope == "interface"] == [
        "dropped on this box: NETFILTER_DROP, 4 packets; 2.0% retransmits on eth1 to all "
        "destinations"
    ]


def test_drop_counters_are_problems_the_header_names() -> None:
    from flowtop.core.model import CollectorHealth
    from flowtop.tui.widgets.status import PROBLEMS

    h = CollectorHealth(kernel={"drops_map_full": 3, "drops_unreadable": 2})
    assert h.problems == 5
    assert {"drops_map_full", "drops_unreadable"} <= set(PROBLEMS)


def test_hash_collisions_fall_back_to_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowtop.core.drops as dmod

    monkeypatch.setattr(dmod, "hash_words", lambda w: np.zeros(len(w), dtype=np.uint64))
    t = DropTable(REASONS)
    t.add(drops((1, NO_SOCKET, 1), (2, NO_SOCKET, 2), (1, NO_SOCKET, 3), (1, RPF, 1)), 10)
    got = {(int(e["key"]["sport"]), int(e["reason"])): int(e["packets"]) for e in t.entries}
    assert got == {(1, NO_SOCKET): 4, (2, NO_SOCKET): 2, (1, RPF): 1}


def test_a_full_table_is_shown_in_the_dump_and_the_panel() -> None:
    from flowtop.core.drops import summary
    from flowtop.tui.widgets.drops import render

    engine, acc = run(SCRIPT)
    assert engine.drops is not None
    engine.drops.max_entries = 1
    engine.drops.add(drops((1001, RPF, 1)), T0 + 5 * NS)  # 3 entries into room for 1
    assert engine.drops.evicted == 2
    text = render(summary(engine.drops, engine.table), {2: "eth1"}, 4)
    assert "2 flow reasons forgotten (table full)" in text.splitlines()[0]
    lines = [json.loads(x) for x in dump_lines(engine, acc).splitlines()]
    assert next(x for x in lines if x["type"] == "drops")["evicted"] == 2
