"""The top MPLS label from the kernel's FLOW_STATS.mpls to flow records and dump."""

from __future__ import annotations

import io
import json

from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import CollectorHealth
from flowtop.kernel import layout
from flowtop.run.dump import FlowAccumulator, emit

from .test_flowtable import T0, keys, stats


def entry(label: int, tc: int = 0) -> int:
    return layout.MPLS_PRESENT | label << 4 | tc << 1 | 1


def test_label_follows_the_last_packet_and_reaches_records() -> None:
    t = FlowTable(clock_offset=0.0)
    k = keys(2)
    s = stats(2)
    s["mpls"] = [entry(16), 0]
    t.merge(k, s, 1.0)
    recs = {r.key.sport: r for r in t.records()}
    assert recs[1000].mpls == 16 and recs[1001].mpls is None
    s = stats(1, t=T0 + NS)
    s["mpls"] = entry(0xFFFFF, tc=7)  # the same 5-tuple moved to another LSP
    t.merge(k[:1], s, 1.0)
    (end,) = [r for r in t.flush().records() if r.key.sport == 1000]
    assert end.mpls == 0xFFFFF


def test_batches_without_labels_carry_none() -> None:
    t = FlowTable(clock_offset=0.0)
    t.merge(keys(3), stats(3), 1.0)
    b = t.flush()
    assert not (b["mpls"] & layout.MPLS_PRESENT).any() and len(b) == 3


def test_dump_json_has_mpls_label_only_on_labelled_flows() -> None:
    t = FlowTable(clock_offset=0.0)
    acc = FlowAccumulator(0.0)
    s = stats(2, nbytes=100)
    s["mpls"] = [entry(1000), 0]
    acc.flows_ended(t.merge(keys(2), s, 1.0))
    acc.flows_ended(t.flush())
    out = io.StringIO()
    emit(acc.per_key(), {7: "eth0"}, [], CollectorHealth(), as_json=True, out=out)
    flows = [json.loads(x) for x in out.getvalue().splitlines() if '"flow"' in x]
    by_port = {f["sport"]: f for f in flows}
    assert by_port[1000]["mpls_label"] == 1000
    assert "mpls_label" not in by_port[1001]
    table = io.StringIO()
    emit(acc.per_key(), {7: "eth0"}, [], CollectorHealth(), as_json=False, out=table)
    header, *rows = table.getvalue().splitlines()
    assert "MPLS" in header.split()
    assert any(r.split()[-1] == "1000" for r in rows if "10.0.0.1:1000" in r)
