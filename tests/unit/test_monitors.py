"""Monitors: config ([[monitor]], [health]) errors as one line each, which
flows are in a monitor and which way, their bytes counted once, the TCP
verdict with the monitor's thresholds, the `monitor NAME` filter term, top
conversations, and the dump / Prometheus outputs.

Over the engine with a fake collector and a real Enricher (labels in
tmp_path); the expected figures are sums of the records written here."""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path

import numpy as np
import pytest

from flowtop.config import from_mapping
from flowtop.core import tcphealth, thresholds
from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.errors import ConfigError
from flowtop.export.prometheus import FlowMetrics, FlowtopCollector
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.query import monitors
from flowtop.query.types import ViewQuery
from flowtop.run.dump import Extras, emit

from .test_view import NS, T0, FakeCollector, StepSource
from .test_zones import HOST, SPEC, enricher, keys_stats

MONITORS = [
    # a -> b: the forwarded flow (two legs)
    {"name": "ab", "local": "zone a", "remote": "zone b"},
    # this host and the web net: both ways, with retransmits on the TCP flow
    {"name": "web", "local": f"host {HOST}", "remote": "net 10.1.0.0/24"},
    # the same flows, a monitor that tolerates more retransmits
    {"name": "web-lax", "local": f"host {HOST}", "remote": "label web", "min_retransmits": 5},
    # nothing matches
    {"name": "none", "local": "zone a", "remote": "port 9"},
]


def tcp_sample(retrans: int, segs: int) -> np.ndarray:
    """A sock_ops record of HOST:40000 -> 10.1.0.5:80 (SPEC's first flow)."""
    tcp = np.zeros(1, dtype=layout.TCP_SAMPLE)
    tk = tcp[0]["key"]
    tk["ip_version"], tk["proto"] = 4, 6
    tk["src"] = ipaddress.ip_address(HOST).packed.ljust(16, b"\0")
    tk["dst"] = ipaddress.ip_address("10.1.0.5").packed.ljust(16, b"\0")
    tk["sport"], tk["dport"] = 40000, 80
    tcp["srtt_us"], tcp["min_rtt_us"], tcp["rtt_samples"] = 12000, 11000, 3
    tcp["retrans"], tcp["data_segs"] = retrans, segs
    tcp["source"] = layout.TCP_SOURCE_SOCKOPS
    return tcp


def source(tmp_path: Path, cfg_monitors: list[dict[str, object]] = MONITORS) -> StepSource:
    frames = []
    for i, (retrans, segs) in enumerate(((0, 40), (4, 90))):
        k, s = keys_stats(SPEC, T0 + i * NS)
        frames.append(Drain([(k, s)], T0 + (i + 1) * NS, 1.0, tcp_sample(retrans, segs)))
    engine = Engine(FakeCollector(frames), FlowTable(clock_offset=0.0))
    engine.set_enricher(enricher(tmp_path))
    monitors.configure(engine, from_mapping({"monitor": cfg_monitors}))
    src = StepSource(engine, host="h")
    src.step()
    src.step()
    return src


def statuses(src: StepSource) -> dict[str, monitors.MonitorStatus]:
    return {m.name: m for m in src.snapshot(ViewQuery()).monitors}


def test_monitor_traffic_both_ways_counted_once(tmp_path: Path) -> None:
    got = statuses(source(tmp_path))
    # Two steps of SPEC: the forwarded a->b flow once per step, not twice.
    ab = got["ab"]
    assert (ab.local_to_remote_bytes, ab.local_to_remote_packets) == (2 * 500, 2 * 5)
    assert (ab.remote_to_local_bytes, ab.remote_to_local_packets) == (0, 0)
    assert ab.local_to_remote_bps == pytest.approx(500 * 8)
    web = got["web"]
    assert (web.local_to_remote_bytes, web.remote_to_local_bytes) == (2 * 1000, 2 * 8000)
    assert (web.local_to_remote_packets, web.remote_to_local_packets) == (2 * 10, 2 * 8)
    assert got["web-lax"].local_to_remote_bytes == 2 * 1000
    none = got["none"]
    assert (none.local_to_remote_bytes, none.remote_to_local_bytes) == (0, 0)
    assert none.verdict == tcphealth.HEALTHY and none.rtt_p50_us is None


def test_monitor_verdicts_use_their_thresholds(tmp_path: Path) -> None:
    got = statuses(source(tmp_path))
    web = got["web"]
    # 0 then 4 retransmits over 40 then 90 data segments: 4 of 90 in the window
    assert (web.retransmits, web.data_segments) == (4, 90)
    assert web.retransmit_ratio == pytest.approx(4 / 90)
    assert web.verdict == tcphealth.DEGRADED
    assert web.reason == f"{4 / 90 * 100:.1f}% retransmits"
    assert web.rtt_p50_us == 12000 and web.rtt_p95_us == 12000
    assert web.retransmits_total == 4
    # The same flows, min_retransmits = 5: healthy
    lax = got["web-lax"]
    assert (lax.retransmits, lax.data_segments) == (4, 90)
    assert lax.verdict == tcphealth.HEALTHY and lax.reason == ""
    assert got["ab"].retransmits == 0  # the TCP sample is not of its flows


def test_monitor_filter_term(tmp_path: Path) -> None:
    src = source(tmp_path)
    flows = src.snapshot(ViewQuery(filter="monitor web", group_by="flow")).rows
    assert {(r.src, r.dst) for r in flows} == {(HOST, "10.1.0.5"), ("10.1.0.5", HOST)}
    legs = src.snapshot(ViewQuery(filter="monitor ab", group_by="flow")).rows
    assert {r.iface for r in legs} == {"eth1", "if3"} and len(legs) == 2
    snap = src.snapshot(ViewQuery(filter="monitor nope"))
    assert snap.filter_error is not None
    assert snap.filter_error.startswith(
        "unknown monitor 'nope' (at 1; known: ab, none, web, web-lax)"
    )


def test_top_conversations(tmp_path: Path) -> None:
    src = source(tmp_path)
    # read at the first step (then every TOP_EVERY s): the connection's first
    # interval, both directions as one conversation
    web = statuses(src)["web"]
    assert len(web.top) == 1 and {web.top[0].src, web.top[0].dst} == {HOST, "10.1.0.5"}
    assert web.top[0].bytes == 1000 + 8000 and web.top[0].flows == 2
    tracker = monitors.tracker_of(src.engine)
    assert tracker is not None
    tracker.refresh_top(src.engine)  # what dump does before the end of its run
    web = statuses(src)["web"]
    assert web.top[0].bytes == 2 * (1000 + 8000)
    ab = statuses(src)["ab"].top
    assert len(ab) == 1 and ab[0].bytes == 2 * 500  # the forwarded one: each packet once
    assert statuses(src)["none"].top == ()
    # a monitor whose flows ended keeps its last ones
    src.engine.table.flush()
    tracker.refresh_top(src.engine)
    assert statuses(src)["web"].top == web.top


def test_end_view_each_end_alone() -> None:
    """A monitor tests each end alone: `net` of one end is not satisfied by the other."""
    from flowtop.query.filterexpr import Columns, monitor_ways, parse

    k, _ = keys_stats(SPEC)
    cols = Columns.from_keys(k, {})
    up, down = monitor_ways(cols, parse("net 10.1.0.0/24").mask, parse("net 10.2.0.0/24").mask)
    assert up.tolist() == [False, False, True, True, False, False, False]
    assert not down.any()
    up, down = monitor_ways(cols, parse("net 10.2.0.0/24").mask, parse("net 10.1.0.0/24").mask)
    assert down.tolist() == [False, False, True, True, False, False, False] and not up.any()
    # port of one end: the server end 80 is remote, HOST:40000 local
    up, down = monitor_ways(cols, parse(f"host {HOST}").mask, parse("port 80").mask)
    assert up.tolist()[:2] == [True, False] and down.tolist()[:2] == [False, True]


def test_dump_and_prometheus(tmp_path: Path) -> None:
    src = source(tmp_path)
    tracker = monitors.tracker_of(src.engine)
    assert tracker is not None
    tracker.refresh_top(src.engine)
    st = src.snapshot(ViewQuery()).monitors
    out = io.StringIO()
    emit(src.engine.table.flush(), {2: "eth1"}, [], src.engine.health(), True, out,
         Extras(monitors=st))  # fmt: skip
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    mons = {d["name"]: d for d in lines if d["type"] == "monitor"}
    assert list(mons) == ["ab", "web", "web-lax", "none"]
    w = mons["web"]
    assert (w["local_to_remote_bytes"], w["remote_to_local_bytes"]) == (2000, 16000)
    assert (w["verdict"], w["reason"]) == ("degraded", f"{4 / 90 * 100:.1f}% retransmits")
    assert w["rtt_p50_us"] == 12000 and w["retransmit_ratio"] == round(4 / 90, 5)
    assert w["top"][0]["bytes"] == 18000
    text = io.StringIO()
    emit(src.engine.table.flush(), {}, [], src.engine.health(), False, text, Extras(monitors=st))
    assert "web-lax" in text.getvalue() and "degraded: 4.4% retransmits" in text.getvalue()

    m = FlowMetrics()
    m.set_monitors(st)
    m.publish({}, [], 0, m.snapshot.health, 0.0, 0)
    fams = {f.name: f for f in FlowtopCollector(m).collect()}
    by = {
        (x.labels["monitor"], x.labels["direction"]): x.value
        for x in fams["flowtop_monitor_bytes"].samples
    }
    assert by[("web", "local_to_remote")] == 2000 and by[("web", "remote_to_local")] == 16000
    assert by[("ab", "local_to_remote")] == 1000
    deg = {x.labels["monitor"]: x.value for x in fams["flowtop_monitor_degraded"].samples}
    assert deg == {"ab": 0, "web": 1, "web-lax": 0, "none": 0}
    samples = fams["flowtop_monitor_rtt_seconds"].samples
    rtt = {
        (x.labels["monitor"], x.labels["quantile"]): x.value
        for x in samples
        if x.labels.get("quantile")
    }
    assert rtt == {("web", "0.5"): 0.012, ("web", "0.95"): 0.012, ("web-lax", "0.5"): 0.012,
                   ("web-lax", "0.95"): 0.012}  # fmt: skip
    # 2: in the first step both flows of the connection take the fresh RTT
    # (deduplicated per sender direction, as for the TCP health groups); the
    # second step's record has the same rtt_samples: nothing fresh
    count = {x.labels["monitor"]: x.value for x in samples if x.name.endswith("_count")}
    total = {x.labels["monitor"]: x.value for x in samples if x.name.endswith("_sum")}
    assert count == {"ab": 0, "web": 2, "web-lax": 2, "none": 0}
    assert total["web"] == pytest.approx(0.024)
    ratio = {x.labels["monitor"]: x.value for x in fams["flowtop_monitor_retransmit_ratio"].samples}
    assert ratio["web"] == pytest.approx(4 / 90)


def test_reconfigure_keeps_totals_of_unchanged_monitors(tmp_path: Path) -> None:
    src = source(tmp_path)
    tracker = monitors.tracker_of(src.engine)
    assert tracker is not None
    same, changed = dict(MONITORS[1]), dict(MONITORS[0], remote="zone a")
    monitors.configure(src.engine, from_mapping({"monitor": [same, changed]}))
    got = {m.name: m for m in tracker.statuses()}
    assert got["web"].local_to_remote_bytes == 2000  # kept
    assert got["ab"].local_to_remote_bytes == 0  # a new definition starts at 0
    assert src.snapshot(ViewQuery(filter="monitor web-lax")).filter_error is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"monitor": {"name": "x"}}, "monitor must be an array of tables ([[monitor]])"),
        ({"monitor": [{"local": "zone a", "remote": "zone b"}]},
         "monitor 1: name must be a letter, then up to 31 letters, digits, '_' or '-'"),
        ({"monitor": [{"name": "a b", "local": "zone a", "remote": "zone b"}]},
         "monitor 1: name 'a b' must be a letter, then up to 31 letters, digits, '_' or '-'"),
        ({"monitor": [{"name": "m", "local": "zone a", "remote": "zone b"}] * 2},
         "monitor m: the name is given twice"),
        ({"monitor": [{"name": "m", "local": "zone a"}]},
         "monitor m: remote is missing (a filter expression)"),
        ({"monitor": [{"name": "m", "local": "zone a", "remote": "   "}]},
         "monitor m.remote is empty (a filter expression)"),
        ({"monitor": [{"name": "m", "local": "zone a and", "remote": "zone b"}]},
         "monitor m.local: expected a filter term (at the end)"),
        ({"monitor": [{"name": "m", "local": "zone a", "remote": "bogus 1"}]},
         "monitor m.remote: unknown filter term 'bogus' (at 1)"),
        ({"monitor": [{"name": "m", "local": "proc nginx", "remote": "zone b"}]},
         "monitor m.local: proc: a monitor takes terms of flow keys and enrichment only "
         "(not socket owners, drops, wire names or exporters)"),
        ({"monitor": [{"name": "m", "local": "zone a", "remote": "zone b", "colour": 1}]},
         "monitor m: unknown key 'colour' (known: name, local, remote, rtt_factor, "
         "rtt_floor_ms, min_rtt_samples, retransmit_ratio, min_segments, min_retransmits, "
         "min_rto)"),
        ({"monitor": [{"name": "m", "local": "zone a", "remote": "zone b",
                       "retransmit_ratio": 2}]},
         "monitor m.retransmit_ratio must be between 0 and 1, not 2"),
        ({"monitor": [{"name": "m", "local": 3, "remote": "zone b"}]},
         "monitor m.local must be a string, not int"),
        ({"health": {"rtt_factor": 0.5}}, "health.rtt_factor must be between 1 and 1000, not 0.5"),
        ({"health": {"min_rto": 0}}, "health.min_rto must be between 1 and 1000000000, not 0"),
        ({"health": {"window": 3}}, "unknown config key health.window (known: rtt_factor, "
         "rtt_floor_ms, min_rtt_samples, retransmit_ratio, min_segments, min_retransmits, "
         "min_rto)"),
        ({"monitor": [{"name": f"m{i}", "local": "zone a", "remote": "zone b"}
                      for i in range(65)]}, "at most 64 [[monitor]] tables, not 65"),
    ],
)  # fmt: skip
def test_config_errors_one_line(body: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_mapping(body)
    assert str(exc.value) == message
    assert "\n" not in str(exc.value)


def test_health_thresholds_config() -> None:
    cfg = from_mapping(
        {
            "health": {"rtt_factor": 3, "rtt_floor_ms": 2.5, "min_retransmits": 1},
            "monitor": [
                {"name": "a", "local": "zone a", "remote": "zone b"},
                {"name": "b", "local": "zone a", "remote": "zone b", "min_retransmits": 7},
            ],
        }
    )
    assert cfg.health == thresholds.Thresholds(
        rtt_factor=3.0, rtt_floor_us=2500.0, min_retransmits=1
    )
    a, b = cfg.monitors
    assert a.thresholds == cfg.health  # [health]'s own
    assert b.thresholds == thresholds.Thresholds(
        rtt_factor=3.0, rtt_floor_us=2500.0, min_retransmits=7
    )
    # the defaults are the constants the verdict used before they became keys
    d = from_mapping({}).health
    assert (d.rtt_factor, d.rtt_floor_us, d.min_rtt_samples) == (
        thresholds.RTT_FACTOR, thresholds.RTT_FLOOR_US, thresholds.MIN_RTT_SAMPLES)  # fmt: skip
    assert (d.retransmit_ratio, d.min_segments, d.min_retransmits, d.min_rto) == (
        thresholds.RETRANS_RATIO, thresholds.MIN_SEGMENTS, thresholds.MIN_RETRANS, 1)  # fmt: skip


def test_health_tracker_thresholds_from_config(tmp_path: Path) -> None:
    """[health] reaches the TCP health groups: the same retransmits are
    degraded at the defaults and healthy with min_retransmits = 10."""
    for over, verdict in (({}, tcphealth.DEGRADED), ({"min_retransmits": 10}, tcphealth.HEALTHY)):
        frames = []
        for i, (retrans, segs) in enumerate(((0, 40), (4, 90))):
            k, s = keys_stats(SPEC, T0 + i * NS)
            frames.append(Drain([(k, s)], T0 + (i + 1) * NS, 1.0, tcp_sample(retrans, segs)))
        engine = Engine(FakeCollector(frames), FlowTable(clock_offset=0.0))
        monitors.configure(engine, from_mapping({"health": over}))
        engine.step()
        engine.step()
        assert engine.tcp_health is not None
        remote = [g for g in engine.tcp_health.groups() if g.scope == "remote"]
        assert [g.verdict for g in remote] == [verdict], remote


def test_memo_recomputes_a_reused_row(tmp_path: Path) -> None:
    """A flow's way is remembered by its table row; a new flow in the row
    (the old one ended) is worked out again: its bytes go where it belongs."""
    inside = [(2, 1, HOST, "10.1.0.5", 40000, 80, 10, 1000)]  # web: local -> remote
    outside = [(2, 1, HOST, "203.0.113.9", 40001, 80, 7, 700)]  # in no monitor
    frames = []
    for i, spec in enumerate((inside, inside, outside, inside)):
        k, s = keys_stats(spec, T0 + i * NS)
        frames.append(Drain([(k, s)], T0 + (i + 1) * NS, 1.0))
    engine = Engine(FakeCollector(frames), FlowTable(clock_offset=0.0))
    engine.set_enricher(enricher(tmp_path))
    tracker = monitors.configure(engine, from_mapping({"monitor": [MONITORS[1]]}))
    engine.step()
    engine.step()
    row = int(engine.table.rows_of(keys_stats(inside)[0])[0])
    engine.table.flush()  # the flow ends: its row is free
    engine.step()  # the other flow takes it
    assert int(engine.table.rows_of(keys_stats(outside)[0])[0]) == row
    web = tracker.statuses()[0]
    assert (web.local_to_remote_bytes, web.remote_to_local_bytes) == (2000, 0)
    engine.table.flush()
    engine.step()  # and the first flow again
    assert tracker.statuses()[0].local_to_remote_bytes == 3000


def test_reload_applies_health_and_monitors() -> None:
    """SIGHUP (Outputs.reload): the new [health] thresholds reach the TCP
    health groups and the new [[monitor]] tables the tracker and the filter."""
    from flowtop.run.outputs import Outputs

    engine = Engine(FakeCollector([]), FlowTable(clock_offset=0.0))
    cfg = from_mapping({})
    monitors.configure(engine, cfg)
    out = Outputs(cfg)
    out.attach(engine)
    new = from_mapping({"health": {"min_segments": 7}, "monitor": MONITORS[:2]})
    out.reload(new)
    tracker = monitors.tracker_of(engine)
    assert tracker is not None and tracker.names == ["ab", "web"]
    assert engine.tcp_health is not None and engine.tcp_health.thresholds.min_segments == 7
    # one tracker, the first observer (the exports read it after it ran)
    assert engine.observers[0] == tracker.observe
    trackers = [o for o in engine.observers if isinstance(getattr(o, "__self__", None),
                                                          monitors.MonitorTracker)]  # fmt: skip
    assert len(trackers) == 1
    out.close(0.1)
