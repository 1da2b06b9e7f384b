"""dump's aggregation and output formats, on synthetic flow records."""

from __future__ import annotations

import io
import json

from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.run.dump import FlowAccumulator, emit
from flowtop.sanitize import clean

from .test_flowtable import T0, keys, stats

FIELDS = [
    "type", "iface", "ifindex", "direction", "ip_version", "proto", "proto_name", "src", "dst",
    "sport", "dport", "vlan", "packets", "bytes", "first_seen", "last_seen", "tcp_flags",
    "rtt_us", "rtt_min_us", "retransmits", "rto", "rtt_source",
    "src_asn", "src_as_org", "src_country", "src_city", "src_label", "src_zone",
    "dst_asn", "dst_as_org", "dst_country", "dst_city", "dst_label", "dst_zone",
    "pid", "comm", "uid", "cgroup", "service", "container", "pod",
]  # fmt: skip


def run_table() -> FlowAccumulator:
    t = FlowTable(clock_offset=0.0, idle_timeout=5.0)
    acc = FlowAccumulator(0.0)
    k = keys(2, proto=6)
    acc.flows_ended(t.merge(k, stats(2, packets=3, nbytes=300, flags=0x02), 1.0))
    # flow 1000 ends with FIN, then starts again: one line in the dump, summed
    acc.flows_ended(t.merge(k[:1], stats(1, packets=1, nbytes=40, t=T0 + NS, flags=0x11), 1.0))
    acc.flows_ended(t.merge(k[:1], stats(1, packets=2, nbytes=80, t=T0 + 2 * NS, flags=0x10), 1.0))
    acc.flows_ended(t.flush())
    return acc


def test_per_key_sums_restarted_flows() -> None:
    b = run_table().per_key()
    assert len(b) == 2
    by_port = {int(k["sport"]): i for i, k in enumerate(b.keys)}
    i = by_port[1000]
    assert (int(b["packets"][i]), int(b["bytes"][i]), int(b["tcp_flags"][i])) == (6, 420, 0x13)
    assert int(b["first_ns"][i]) == T0 and int(b["last_ns"][i]) == T0 + 2 * NS
    j = by_port[1001]
    assert (int(b["packets"][j]), int(b["bytes"][j])) == (3, 300)


def test_json_lines_have_exactly_the_documented_fields() -> None:
    out = io.StringIO()
    ifaces = [InterfaceCounters(7, "veth\x1b[31m0", "ipv4", 1, 2, 3, 4)]
    health = CollectorHealth(kernel={"flow_map_full": 2}, forced_evictions=1)
    emit(run_table().per_key(), {7: "veth0"}, ifaces, health, as_json=True, out=out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    flows = [x for x in lines if x["type"] == "flow"]
    assert [f["bytes"] for f in flows] == [420, 300]  # sorted by bytes
    for f in flows:
        assert list(f) == FIELDS
    assert flows[0]["first_seen"] == "1970-01-01T00:16:40.000+00:00"
    assert flows[0]["proto_name"] == "tcp" and flows[0]["direction"] == "ingress"
    (iface,) = [x for x in lines if x["type"] == "interface"]
    assert iface["iface"] == "veth0"  # the whole escape sequence removed
    (st,) = [x for x in lines if x["type"] == "stats"]
    assert st["flow_map_full"] == 2 and st["forced_evictions"] == 1


def test_table_output_lists_flows_interfaces_and_losses() -> None:
    out = io.StringIO()
    ifaces = [InterfaceCounters(7, "veth0", "ipv4", 1, 2, 3, 4)]
    emit(run_table().per_key(), {7: "veth0"}, ifaces, CollectorHealth(), as_json=False, out=out)
    text = out.getvalue()
    header, first = text.splitlines()[:2]
    assert header.split() == [
        "IFACE",
        "DIR",
        "PROTO",
        "SRC",
        "DST",
        "PKTS",
        "BYTES",
        "FLAGS",
        "VLAN",
    ]
    assert first.split()[:7] == ["veth0", "in", "tcp", "10.0.0.1:1000", "10.0.0.2:53", "6", "420"]
    assert "collector: nothing lost" in text


def test_clean_removes_controls_and_bidi() -> None:
    assert clean("a\x1b]52;c;ZZ\x07b\u202ec\x00d") == "abcd"  # the whole OSC 52 goes
    assert clean("\x1b[2Jx\x9b31my\u2028z") == "xyz"
    assert len(clean("x" * 1000)) == 253
    assert clean("[bold]ok[/bold]") == "[bold]ok[/bold]"  # markup is the view's job


def test_empty_run() -> None:
    out = io.StringIO()
    emit(FlowAccumulator(0.0).per_key(), {}, [], CollectorHealth(), as_json=True, out=out)
    assert [json.loads(x)["type"] for x in out.getvalue().splitlines()] == ["stats"]


def test_json_enrichment_names_and_health_lines() -> None:
    from flowtop.core.tcphealth import HealthGroup
    from flowtop.enrich.enricher import Entity
    from flowtop.run.dump import Extras

    b = run_table().per_key()
    assert {"src_ent", "dst_ent", "rtt_us", "retrans"} <= set(b.columns)
    b["src_ent"][:] = 1  # every source: a hostile AS name, cleaned by the enricher
    b["dst_ent"][:] = -1  # never looked up: nulls
    b["rtt_us"][:], b["rtt_min_us"][:], b["rtt_source"][:] = 1500, 900, 2
    b["retrans"][:], b["retrans_source"][:] = 7, 2
    ent = Entity(asn=64500, as_org="Example", country="NL", city="Amsterdam", label="db")
    health = HealthGroup("remote", "AS64500", "degraded", "2.0% retransmits to AS64500",
                         1500.0, 2500.0, 900.0, 0.02, 7, 350, 0)  # fmt: skip
    extras = Extras(
        entity_of=lambda eid: ent if eid == 1 else None,
        name_of=lambda a: "host.example" if a.endswith(".1") else None,
        health=[health],
    )
    out = io.StringIO()
    emit(b, {7: "veth0"}, [], CollectorHealth(), as_json=True, out=out, extras=extras)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    f = next(x for x in lines if x["type"] == "flow")
    assert list(f) == [*FIELDS, "src_name", "dst_name"]
    assert (f["rtt_us"], f["rtt_min_us"], f["rtt_source"], f["retransmits"], f["rto"]) == (
        1500, 900, "passive", 7, None,
    )  # fmt: skip
    assert (f["src_asn"], f["src_as_org"], f["src_country"], f["src_city"], f["src_label"]) == (
        64500, "Example", "NL", "Amsterdam", "db",
    )  # fmt: skip
    assert f["dst_asn"] is None and f["dst_label"] is None
    (h,) = [x for x in lines if x["type"] == "health"]
    assert h == {
        "type": "health", "scope": "remote", "group": "AS64500", "verdict": "degraded",
        "reason": "2.0% retransmits to AS64500", "rtt_p50_us": 1500, "rtt_p95_us": 2500,
        "rtt_baseline_us": 900, "retransmit_ratio": 0.02, "retransmits": 7,
        "data_segments": 350, "rto": 0,
    }  # fmt: skip
    table = io.StringIO()
    emit(b, {7: "veth0"}, [], CollectorHealth(), as_json=False, out=table, extras=extras)
    text = table.getvalue()
    assert "RTT_MS" in text and "SRC_AS" in text and "2.0% retransmits to AS64500" in text
