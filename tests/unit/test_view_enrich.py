"""Enrichment in the view: filter terms asn/country/label, group-by, row fields,
and TCP health columns; through the engine, with a small in-memory enricher."""

from __future__ import annotations

import ipaddress

import numpy as np

from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.enrich.enricher import Entity
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.query.types import ViewQuery

from .test_view import NS, T0, FakeCollector, StepSource

LOCAL = "10.0.0.1"
GOOGLE = Entity(asn=15169, as_org="Google LLC", country="US")
CLOUDFLARE = Entity(asn=13335, as_org="Cloudflare", country="AU")
LAN = Entity(label="lan", zone="b", local=True)
BY_ADDR = {LOCAL: LAN, "8.8.8.8": GOOGLE, "8.8.4.4": GOOGLE, "1.1.1.1": CLOUDFLARE}


class MemoryEnricher:
    """The Enricher interface over a fixed address -> Entity map."""

    def __init__(self) -> None:
        self.entities: list[Entity] = [Entity()]
        self.lookups = 0

    def _id(self, e: Entity) -> int:
        if e not in self.entities:
            self.entities.append(e)
        return self.entities.index(e)

    def lookup(self, addrs: np.ndarray, versions: np.ndarray) -> np.ndarray:
        self.lookups += len(addrs)
        out = np.zeros(len(addrs), dtype=np.int32)
        for i, (a, v) in enumerate(zip(addrs, versions, strict=True)):
            raw = bytes(a)[:4] if v == 4 else bytes(a)
            out[i] = self._id(BY_ADDR.get(str(ipaddress.ip_address(raw)), Entity()))
        return out

    def entity(self, eid: int) -> Entity:
        return self.entities[eid]

    def asn_of(self, eids: np.ndarray) -> np.ndarray:
        return np.array([self.entities[e].asn or 0 for e in eids], dtype=np.uint32)

    def maybe_reload(self) -> bool:
        return False

    def close(self) -> None:
        pass


SPEC = [  # ifindex, dir, src, dst, sport, dport, bytes
    (2, 1, LOCAL, "8.8.8.8", 40000, 443, 5000),
    (2, 1, LOCAL, "8.8.4.4", 40001, 53, 700),
    (2, 0, "1.1.1.1", LOCAL, 443, 40002, 9000),
    (2, 0, "192.0.2.9", LOCAL, 123, 123, 100),
]


def drain() -> Drain:
    k = np.zeros(len(SPEC), dtype=layout.FLOW_KEY)
    s = np.zeros(len(SPEC), dtype=layout.FLOW_STATS)
    for i, (ifx, d, src, dst, sp, dp, b) in enumerate(SPEC):
        k[i]["ifindex"], k[i]["direction"], k[i]["ip_version"] = ifx, d, 4
        k[i]["proto"] = 6 if sp != 123 else 17
        k[i]["src"] = ipaddress.ip_address(src).packed.ljust(16, b"\0")
        k[i]["dst"] = ipaddress.ip_address(dst).packed.ljust(16, b"\0")
        k[i]["sport"], k[i]["dport"] = sp, dp
        s[i]["packets"], s[i]["bytes"] = 10, b
        s[i]["first_seen_ns"] = s[i]["last_seen_ns"] = T0
    tcp = np.zeros(1, dtype=layout.TCP_SAMPLE)
    tk = tcp[0]["key"]
    tk["ip_version"], tk["proto"] = 4, 6
    tk["src"] = k[0]["src"]
    tk["dst"] = k[0]["dst"]
    tk["sport"], tk["dport"] = 40000, 443
    tcp["srtt_us"], tcp["rtt_samples"], tcp["retrans"], tcp["data_segs"] = 12000, 3, 4, 90
    tcp["source"] = layout.TCP_SOURCE_SOCKOPS
    return Drain([(k, s)], T0 + NS, 1.0, tcp)


def source(enricher: MemoryEnricher | None) -> StepSource:
    engine = Engine(
        FakeCollector([drain()]),
        FlowTable(clock_offset=0.0),
        enricher=enricher,  # type: ignore[arg-type]
    )
    src = StepSource(engine, host="h")
    src.step()
    return src


def rows(src: StepSource, **kw: object) -> list:
    snap = src.snapshot(ViewQuery(**kw))  # type: ignore[arg-type]
    assert snap.filter_error is None, snap.filter_error
    return list(snap.rows)


def test_flow_rows_carry_enrichment_and_tcp_health() -> None:
    src = source(MemoryEnricher())
    top = {r.dst: r for r in rows(src)}
    g = top["8.8.8.8"]
    assert (g.dst_asn, g.dst_country, g.src_label) == (15169, "US", "lan")
    assert (g.rtt_us, g.retransmits) == (12000, 4)
    assert top[LOCAL].rtt_us is None  # the UDP flow and the other TCP flow have none


def test_filter_terms() -> None:
    src = source(MemoryEnricher())
    assert {r.dst for r in rows(src, filter="asn 15169")} == {"8.8.8.8", "8.8.4.4"}
    assert {r.dst for r in rows(src, filter="asn AS15169 and port 53")} == {"8.8.4.4"}
    assert [r.src for r in rows(src, filter="country au")] == ["1.1.1.1"]
    assert [r.src for r in rows(src, filter="src country AU")] == ["1.1.1.1"]
    assert rows(src, filter="dst country AU") == []
    assert len(rows(src, filter="label l*")) == 4  # the local end of every flow
    assert rows(src, filter="src label lan and not asn 15169") == []


def test_group_by_remote_asn_country_label() -> None:
    src = source(MemoryEnricher())
    by_asn = {r.group: (r.bytes, r.flows) for r in rows(src, group_by="asn", sort="bytes")}
    assert by_asn == {
        "AS15169 Google LLC": (5700, 2),
        "AS13335 Cloudflare": (9000, 1),
        "unknown AS": (100, 1),
    }
    by_cc = {r.group: r.bytes for r in rows(src, group_by="country", sort="bytes")}
    assert by_cc == {"US": 5700, "AU": 9000, "unknown country": 100}
    # The remote end is never the local one, so no group is "lan".
    assert {r.group for r in rows(src, group_by="label")} == {"(no label)"}


def test_sort_by_worst_health() -> None:
    src = source(MemoryEnricher())
    assert rows(src, sort="rtt")[0].dst == "8.8.8.8"
    assert rows(src, sort="retrans")[0].retransmits == 4


def test_enrichment_terms_without_enrichment_say_so() -> None:
    src = source(None)
    snap = src.snapshot(ViewQuery(filter="asn 15169"))
    assert snap.filter_error is not None and "no enrichment" in snap.filter_error
    assert len(snap.rows) == 4  # the filter is not applied


def test_records_get_entities_once() -> None:
    enricher = MemoryEnricher()
    src = source(enricher)
    first = enricher.lookups
    # Both ends of every flow, and the health group of the TCP flow's remote end.
    assert first == 2 * len(SPEC) + 1
    src.engine.collector.frames.append(drain())  # type: ignore[attr-defined]
    src.step()
    assert enricher.lookups == first  # known flows are not looked up again
