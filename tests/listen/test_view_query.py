"""The fleet view's query side over received flows: `exporter`, `ifindex`,
the exporter group and the header's exporter rates. Flows come from
hand-built IPFIX / v5 messages through the listener's own decode path into
a real Engine and FlowTable (no sockets, no kernel)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.kernel import layout
from flowtop.listen.collector import ListenCollector, ListenOptions
from flowtop.listen.sockets import Message
from flowtop.query.filterexpr import Columns, FilterError, parse
from flowtop.query.source import TableSource
from flowtop.query.types import Snapshot, ViewQuery
from tests.listen import build as b

T = 300
T0 = 1_763_000_000.0


class ListenView(TableSource):
    """The live view's source over a ListenCollector without sockets: each
    step() decodes the next script entry's messages [(exporter, protocol,
    message)], steps the engine, and advances a fixed clock by the interval."""

    def __init__(
        self, script: list[list[tuple[str, str, bytes]]], max_interfaces: int = 65536
    ) -> None:
        self.listener = ListenCollector(ListenOptions(urls=(), max_interfaces=max_interfaces))
        table = FlowTable(clock_offset=0.0)
        super().__init__(Engine(self.listener, table, 1.0), "collector-1")  # type: ignore[arg-type]
        self.script = list(script)
        self.steps = 0
        self._now = T0
        self._closed = threading.Event()

    def now(self) -> float:
        return T0 + self.steps * self.interval

    def step(self) -> None:
        if self.steps >= len(self.script):  # the script is over: a stable screen
            self._closed.wait(0.2)
            return
        with self._lock:
            self.listener.decoder.decode(
                [Message(m, addr, proto, False) for addr, proto, m in self.script[self.steps]]
            )
            self.steps += 1
            self.engine.step()
            self._after_step()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()


def ipfix(
    exporter: str, flows: list[tuple[str, int, int]], seq: int = 0, domain: int = 1
) -> tuple[str, str, bytes]:
    """A message from exporter: a template and one record per (src, ingress, packets)."""
    recs = b"".join(
        b.v4_record(src, "10.9.0.1", 1000 + i, 443, 6, 100 * p, p, ingress=ifx, egress=99)
        for i, (src, ifx, p) in enumerate(flows)
    )
    sets = [b.set_(2, b.template(T, b.V4_FIELDS)), b.set_(T, recs)]
    return exporter, "ipfix", b.ipfix_message(sets, seq=seq, domain=domain)


# Three exporters; 192.0.2.1 with two observation domains that reuse ifindex 7.
FLEET = [
    ipfix("192.0.2.1", [("10.0.0.1", 7, 5), ("10.0.0.2", 8, 3)], domain=1),
    ipfix("192.0.2.1", [("10.0.0.3", 7, 11)], domain=2),
    ipfix("192.0.2.2", [("10.0.0.4", 7, 2), ("10.0.0.5", 9, 13)]),
    ipfix("198.51.100.7", [("10.0.0.6", 3, 17)]),
]


def _view(script: list[list[tuple[str, str, bytes]]], **kw: int) -> ListenView:
    v = ListenView(script, **kw)
    for _ in script:
        v.step()
    return v


def _flows(snap: Snapshot) -> set[tuple[str | None, int]]:
    return {(r.src, r.packets) for r in snap.rows}


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("exporter 192.0.2.1", {("10.0.0.1", 5), ("10.0.0.2", 3), ("10.0.0.3", 11)}),
        (
            "exporter 192.0.2.0/24",
            {("10.0.0.1", 5), ("10.0.0.2", 3), ("10.0.0.3", 11), ("10.0.0.4", 2), ("10.0.0.5", 13)},
        ),
        ("exporter 198.51.100.7", {("10.0.0.6", 17)}),
        ("exporter 203.0.113.1", set()),
        ("exporter ::1", set()),
        ("ifindex 7", {("10.0.0.1", 5), ("10.0.0.3", 11), ("10.0.0.4", 2)}),
        ("ifindex 3", {("10.0.0.6", 17)}),
        ("ifindex 99", set()),  # the egress interface: records here are keyed by ingress
        ("exporter 192.0.2.1 and ifindex 7", {("10.0.0.1", 5), ("10.0.0.3", 11)}),
        ("not exporter 192.0.2.0/24", {("10.0.0.6", 17)}),
        ("ifindex 9 or exporter 198.51.100.7", {("10.0.0.5", 13), ("10.0.0.6", 17)}),
    ],
)
def test_fleet_filter_terms(expr: str, want: set[tuple[str, int]]) -> None:
    v = _view([FLEET])
    snap = v.snapshot(ViewQuery(filter=expr))
    assert snap.filter_error is None
    assert _flows(snap) == want
    assert snap.matched == len(want)
    # the synthetic ifindex is not what `ifindex` tests: the names say which
    # exporter interface each flow is on
    for r in snap.rows:
        if expr == "ifindex 7":
            assert r.iface is not None and r.iface.endswith("/if7")


def test_fleet_group_by_exporter_folds_domains() -> None:
    v = _view([FLEET])
    snap = v.snapshot(ViewQuery(group_by="exporter", sort="packets"))
    got = [(r.group, r.flows, r.packets, r.bytes) for r in snap.rows]
    assert got == [
        ("192.0.2.1", 3, 19, 1900),
        ("198.51.100.7", 1, 17, 1700),
        ("192.0.2.2", 2, 15, 1500),
    ]
    assert snap.matched == 3
    assert all(r.key.startswith("exporter:") for r in snap.rows)
    # with a filter: only the matching flows are grouped
    snap = v.snapshot(ViewQuery(group_by="exporter", filter="ifindex 7", sort="packets"))
    assert [(r.group, r.flows, r.packets) for r in snap.rows] == [
        ("192.0.2.1", 2, 16),
        ("192.0.2.2", 1, 2),
    ]


def test_interfaces_past_the_cap_are_other_and_counted() -> None:
    # room for two interfaces: 192.0.2.1#1's two take it, the rest overflow
    v = _view([FLEET], max_interfaces=2)
    snap = v.snapshot(ViewQuery(group_by="exporter", sort="packets"))
    assert [(r.group, r.flows, r.packets) for r in snap.rows] == [
        ("(other)", 4, 43),
        ("192.0.2.1", 2, 8),
    ]
    assert v.listener.decoder.ifmap.exhausted == 4  # counted, never merged silently
    snap = v.snapshot(ViewQuery(filter="exporter 192.0.2.0/24"))
    assert _flows(snap) == {("10.0.0.1", 5), ("10.0.0.2", 3)}
    snap = v.snapshot(ViewQuery(filter="ifindex 7"))
    assert _flows(snap) == {("10.0.0.1", 5)}


def test_exporters_that_appear_later_are_taken_in() -> None:
    v = _view([FLEET[:1]])
    assert _flows(v.snapshot(ViewQuery(filter="exporter 198.51.100.7"))) == set()
    v.script.append(FLEET[3:])
    v.step()
    assert _flows(v.snapshot(ViewQuery(filter="exporter 198.51.100.7"))) == {("10.0.0.6", 17)}
    assert _flows(v.snapshot(ViewQuery(filter="ifindex 3"))) == {("10.0.0.6", 17)}


def test_header_exporter_rates_lost_and_estimated() -> None:
    recs = [b.v5_record("10.1.0.1", "10.1.0.2", 1000, 80, 6, 1500, 3)]
    step1 = [
        ipfix("192.0.2.1", [("10.0.0.1", 7, 5)], seq=0),
        ipfix("192.0.2.2", [("10.0.0.4", 7, 2)], seq=0),
        ("203.0.113.5", "netflow", b.v5_packet(recs, sampling=(1 << 14) | 10)),
    ]
    step2 = [
        # 192.0.2.1: 4 records, seq 1 expected, 3 missing between
        ipfix("192.0.2.1", [(f"10.0.1.{i}", 7, 1) for i in range(4)], seq=4),
        ipfix("192.0.2.2", [("10.0.0.4", 7, 2), ("10.0.0.5", 7, 2)], seq=1),
    ]
    v = _view([step1, step2])
    ex = v.snapshot(ViewQuery()).exporters
    assert [(e.address, e.records_per_s, e.records, e.lost, e.estimated) for e in ex] == [
        ("192.0.2.1", 4.0, 5, 3, False),
        ("192.0.2.2", 2.0, 3, 0, False),
        ("203.0.113.5", 0.0, 1, 0, True),
    ]


def test_fleet_terms_need_received_flows_and_good_arguments() -> None:
    cols = Columns.from_keys(np.zeros(2, dtype=layout.FLOW_KEY), {})
    for expr in ("exporter 192.0.2.1", "ifindex 3"):
        with pytest.raises(FilterError, match="only with --listen"):
            parse(expr)(cols)
    for expr, msg in (
        ("exporter", "expected a network"),
        ("exporter router-1", "not a network: 'router-1'"),
        ("ifindex", "expected an interface index"),
        ("ifindex -1", "expected an interface index"),
        ("ifindex 4294967296", "expected an interface index"),
    ):
        with pytest.raises(FilterError, match=msg):
            parse(expr)
