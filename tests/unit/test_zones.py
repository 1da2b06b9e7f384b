"""Zones: each end's zone from labels (and the host zone for local addresses),
the filter terms zone/src zone/dst zone/cross-zone, the zone pair group, the
per-interval zone pairs counted once (a forwarded packet's two legs), the
Prometheus zone series (bounded, "other") and dump's src_zone/dst_zone.

A real Enricher over a labels file (tmp_path) and given local networks; the
engine over a fake collector; expected figures are the sums of the drained
records written here."""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path

import numpy as np
import pytest

from flowtop.config import Config, EnrichConfig, from_mapping
from flowtop.core.conversations import counted_once
from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.enrich.enricher import Enricher, EnrichOptions, parse_networks
from flowtop.errors import ConfigError
from flowtop.export.prometheus import FlowMetrics, FlowtopCollector
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.query import monitors
from flowtop.query.entities import EntityArrays
from flowtop.query.types import ViewQuery
from flowtop.query.zones import drain_records, zone_step
from flowtop.run.dump import Extras, FlowAccumulator, emit

from .test_view import NS, T0, FakeCollector, StepSource

LABELS = """
web    10.1.0.0/24   zone=a
db     10.2.0.0/24   zone=b
cache  10.3.0.0/24   zone=a
office 192.168.0.0/24
"""
HOST = "10.9.0.1"  # this host: local, no label -> the host zone "h"

# ifindex, direction (0 in, 1 out), src, dst, sport, dport, packets, bytes
SPEC = [
    (2, 1, HOST, "10.1.0.5", 40000, 80, 10, 1000),  # h -> a
    (2, 0, "10.1.0.5", HOST, 80, 40000, 8, 8000),  # a -> h
    (2, 0, "10.1.0.5", "10.2.0.7", 41000, 5432, 5, 500),  # a -> b (in on eth1 ...)
    (3, 1, "10.1.0.5", "10.2.0.7", 41000, 5432, 5, 500),  # ... out on eth2: forwarded
    (2, 0, "10.1.0.6", "10.3.0.9", 42000, 6379, 3, 300),  # a -> a, within a zone
    (2, 0, "192.168.0.4", "10.2.0.7", 43000, 5432, 2, 200),  # no zone -> b
    (2, 0, "203.0.113.1", "192.168.0.4", 443, 44000, 1, 100),  # no zone at all
]


def keys_stats(spec: list[tuple[int, int, str, str, int, int, int, int]], t: int = T0):
    k = np.zeros(len(spec), dtype=layout.FLOW_KEY)
    s = np.zeros(len(spec), dtype=layout.FLOW_STATS)
    for i, (ifx, d, src, dst, sp, dp, p, b) in enumerate(spec):
        k[i]["ifindex"], k[i]["direction"], k[i]["ip_version"], k[i]["proto"] = ifx, d, 4, 6
        k[i]["src"] = ipaddress.ip_address(src).packed.ljust(16, b"\0")
        k[i]["dst"] = ipaddress.ip_address(dst).packed.ljust(16, b"\0")
        k[i]["sport"], k[i]["dport"] = sp, dp
        s[i]["packets"], s[i]["bytes"] = p, b
        s[i]["first_seen_ns"] = s[i]["last_seen_ns"] = t
    return k, s


def enricher(tmp_path: Path, host_zone: str | None = "h") -> Enricher:
    path = tmp_path / "labels"
    path.write_text(LABELS)
    return Enricher(
        EnrichOptions(
            labels=str(path),
            search_default_paths=False,
            local_networks=parse_networks(["10.9.0.0/24"]),
            host_zone=host_zone,
        )
    )


def source(tmp_path: Path, steps: int = 1, host_zone: str | None = "h") -> StepSource:
    frames = []
    for i in range(steps):
        k, s = keys_stats(SPEC, T0 + i * NS)
        frames.append(Drain([(k, s)], T0 + (i + 1) * NS, 1.0))
    engine = Engine(FakeCollector(frames), FlowTable(clock_offset=0.0))
    engine.set_enricher(enricher(tmp_path, host_zone))
    monitors.configure(engine, Config())
    src = StepSource(engine, host="h")
    for _ in range(steps):
        src.step()
    return src


def rows(src: StepSource, **kw: object) -> list:
    snap = src.snapshot(ViewQuery(**kw))  # type: ignore[arg-type]
    assert snap.filter_error is None, snap.filter_error
    return list(snap.rows)


def test_entity_zones_from_labels_and_host_zone(tmp_path: Path) -> None:
    e = enricher(tmp_path)
    addrs = ["10.1.0.5", "10.2.0.7", HOST, "192.168.0.4", "203.0.113.1"]
    raw = np.array([ipaddress.ip_address(a).packed.ljust(16, b"\0") for a in addrs], "V16")
    eids = e.lookup(raw, np.full(len(addrs), 4, np.uint8))
    assert [e.entity(int(i)).zone for i in eids] == ["a", "b", "h", None, None]
    assert e.zoned
    # Without a host zone, the local address has none; a label's zone wins over it.
    e2 = enricher(tmp_path, host_zone=None)
    assert e2.entity(int(e2.lookup(raw[2:3], np.array([4], np.uint8))[0])).zone is None


def test_zone_filter_terms(tmp_path: Path) -> None:
    src = source(tmp_path)

    def ends(flt: str) -> set[tuple[str, str, int]]:
        return {(r.src, r.dst, r.iface == "eth1") for r in rows(src, filter=flt, group_by="flow")}

    assert {(s, d) for s, d, _ in ends("src zone a")} == {
        ("10.1.0.5", HOST),
        ("10.1.0.5", "10.2.0.7"),
        ("10.1.0.6", "10.3.0.9"),
    }
    assert {(s, d) for s, d, _ in ends("dst zone b")} == {
        ("10.1.0.5", "10.2.0.7"),
        ("192.168.0.4", "10.2.0.7"),
    }
    assert {(s, d) for s, d, _ in ends("zone h")} == {(HOST, "10.1.0.5"), ("10.1.0.5", HOST)}
    assert {(s, d) for s, d, _ in ends("zone [ab] and not zone a")} == {("192.168.0.4", "10.2.0.7")}
    # cross-zone: both ends zoned and different (a->a, none->b and none->none are not)
    assert {(s, d) for s, d, _ in ends("cross-zone")} == {
        (HOST, "10.1.0.5"),
        ("10.1.0.5", HOST),
        ("10.1.0.5", "10.2.0.7"),
    }
    assert len(rows(src, filter="cross-zone", group_by="flow")) == 4  # both legs
    assert rows(src, filter="zone nowhere", group_by="flow") == []


def test_zone_filter_errors(tmp_path: Path) -> None:
    src = source(tmp_path)
    snap = src.snapshot(ViewQuery(filter="src zone"))
    assert snap.filter_error == "expected a zone name (at the end)"


def test_group_by_zone_pair_counts_forwarded_once(tmp_path: Path) -> None:
    src = source(tmp_path)
    got = {r.group: (r.bytes, r.packets, r.flows) for r in rows(src, group_by="zone", sort="bytes")}
    assert got == {
        "h→a": (1000, 10, 1),
        "a→h": (8000, 8, 1),
        "a→b": (500, 5, 2),  # two legs, the bytes once
        "a→a": (300, 3, 1),
        "-→b": (200, 2, 1),
        "-→-": (100, 1, 1),
    }


def test_counted_once_keeps_ingress_legs() -> None:
    k, _ = keys_stats(SPEC)
    got = counted_once(layout.FLOW_KEY_WORDS.view(k))
    # Only the egress leg of the forwarded flow is left out; the host's own
    # egress flow (no ingress record of it) counts.
    assert got.tolist() == [True, True, True, False, True, True, True]


def test_zone_step_and_cross_zone_rate(tmp_path: Path) -> None:
    src = source(tmp_path, steps=2)
    tracker = monitors.tracker_of(src.engine)
    assert tracker is not None
    pairs = {p: (b, n) for p, b, n in tracker.zones.pairs}
    assert pairs == {
        ("h", "a"): (1000, 10),
        ("a", "h"): (8000, 8),
        ("a", "b"): (500, 5),
        ("a", "a"): (300, 3),
        ("unknown", "b"): (200, 2),
    }
    assert tracker.zones.cross_bytes == 1000 + 8000 + 500
    snap = src.snapshot(ViewQuery())
    assert snap.cross_zone_bps == pytest.approx(9500 * 8 / 1.0)


def test_no_zones_no_cross_zone_figure() -> None:
    # Labels without zone= and no host zone: the header figure is hidden (None).
    engine = Engine(FakeCollector([Drain([keys_stats(SPEC)], T0 + NS, 1.0)]), FlowTable())
    monitors.configure(engine, Config())
    src = StepSource(engine, host="h")
    src.step()
    assert src.snapshot(ViewQuery()).cross_zone_bps is None


def test_prometheus_zone_series_bounded(tmp_path: Path) -> None:
    e = enricher(tmp_path)
    k, s = keys_stats(SPEC)
    recs = drain_records(Drain([(k, s)], T0 + NS, 1.0), e, FlowTable())  # no rows: looked up
    step = zone_step(recs, EntityArrays(e))
    m = FlowMetrics(max_series=3)
    m.add_zones(step)
    m.add_zones(step)
    m.publish({}, [], 0, m.snapshot.health, 0.0, 0)
    fams = {f.name: f for f in FlowtopCollector(m).collect()}
    got = {
        (x.labels["src_zone"], x.labels["dst_zone"]): x.value
        for x in fams["flowtop_zone_bytes"].samples
        if x.name.endswith("_total")
    }
    # Pairs in order of appearance: two of their own, then "other" for the rest.
    assert len(got) == 3 and ("other", "other") in got
    assert sum(got.values()) == 2 * (1000 + 8000 + 500 + 300 + 200)
    pk = [x.value for x in fams["flowtop_zone_packets"].samples if x.name.endswith("_total")]
    assert sum(pk) == 2 * (10 + 8 + 5 + 3 + 2)


def test_dump_json_src_dst_zone(tmp_path: Path) -> None:
    src = source(tmp_path)
    acc = FlowAccumulator(0.0)
    acc.flows_ended(src.engine.table.flush())
    out = io.StringIO()
    e = src.engine.enricher
    assert e is not None
    emit(acc.per_key(), {2: "eth1", 3: "eth2"}, [], src.engine.health(), True, out,
         Extras(entity_of=e.entity))  # fmt: skip
    flows = [json.loads(line) for line in out.getvalue().splitlines()]
    zones = {
        (f["src"], f["dst"]): (f["src_zone"], f["dst_zone"]) for f in flows if f["type"] == "flow"
    }
    assert zones[(HOST, "10.1.0.5")] == ("h", "a")
    assert zones[("192.168.0.4", "10.2.0.7")] == (None, "b")
    assert zones[("203.0.113.1", "192.168.0.4")] == (None, None)


def test_config_host_zone() -> None:
    cfg = from_mapping({"enrich": {"host_zone": "eu-west-1a"}})
    assert cfg.enrich.host_zone == "eu-west-1a"
    with pytest.raises(ConfigError, match=r"enrich\.host_zone must be 1-32"):
        from_mapping({"enrich": {"host_zone": "bad zone"}})
    with pytest.raises(ConfigError, match=r"enrich\.host_zone must be a string"):
        from_mapping({"enrich": {"host_zone": 3}})
    assert EnrichConfig().host_zone is None
