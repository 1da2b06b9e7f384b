"""Names from the wire in the live view: the Name column where the width
allows (80 and 100 columns unchanged), its source marked and the rDNS
fallback marked rdns, hostile names clean in every cell, the `name GLOB`
filter, group by name (g n), the detail facts. The real app on the TUI
tests' fake source, whose flows get names as the engine's join writes them
(a real WireNames fed real DNS responses and a ClientHello)."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from flowtop.query.filterexpr import parse
from flowtop.query.types import ViewQuery
from flowtop.tui.columns import COLUMNS, cell, choose
from flowtop.tui.format import Display
from flowtop.tui.screens.detail import name_facts
from flowtop.wirenames.feed import Feeder
from flowtop.wirenames.names import NAME_NAMED, WireNames
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, screen_text, settle
from tests.unit.wirenames_bytes import client_hello, dns_packet, dns_response, first_packet

FLOWS = 60
HOSTILE = "\x1b[31mred\x1b]52;c;QUJD\x07\u202eevil." + "x" * 300


class NamedSource(FakeSource):
    """FakeSource whose IPv4 flows to 192.0.2.1 were answered web.example.com
    (CNAME edge.cdn.test), to 192.0.2.2 a hostile name, and whose flows to
    192.0.2.3 on port 443 sent a ClientHello for api.example.org."""

    def __init__(self, **kw: object) -> None:
        super().__init__(flows=FLOWS, **kw)  # type: ignore[arg-type]
        self.wire = WireNames()
        self.engine.names = self.wire  # type: ignore[attr-defined]
        feeder = Feeder(self.wire)
        pkts = []
        for k in self.keys:
            if k["ip_version"] != 4:
                continue
            src = str(ipaddress.IPv4Address(bytes(k["src"])[:4]))
            dst = str(ipaddress.IPv4Address(bytes(k["dst"])[:4]))
            if dst == "192.0.2.1":
                pkts.append(dns_packet("10.255.0.53", src, dns_response("Web.Example.com", [
                    ("web.example.com.", 300, "CNAME", ["edge.cdn.test."]),
                    ("edge.cdn.test.", 60, "A", [dst])])))  # fmt: skip
            elif dst == "192.0.2.2":
                pkts.append(dns_packet("10.255.0.53", src, _hostile_response(src, dst)))
            elif dst == "192.0.2.3" and k["proto"] == 6 and k["direction"] == 1:
                pkts.append(first_packet(src, dst, int(k["sport"]), int(k["dport"]),
                                         client_hello("api.example.org")))  # fmt: skip
        feeder.feed(pkts)

    def advance(self) -> None:
        super().advance()
        with self._lock:
            t = self.engine.table
            rows = t.live_rows()
            c = self.wire.join(t.keys_at(rows))  # as Engine._join_names writes them
            t.set_column("src_name_id", rows, c.src_name)
            t.set_column("dst_name_id", rows, c.dst_name)
            t.set_column("name_cname_id", rows, c.cname)
            t.set_column("name_source", rows, c.source)
            t.set_column("name_state", rows, NAME_NAMED)


def _hostile_response(client: str, addr: str) -> bytes:
    """A response for a hostile query name (labels of at most 63 bytes)."""
    raw = HOSTILE.encode()
    labels = [raw[i : i + 60] for i in range(0, 240, 60)]
    qname = b"".join(bytes([len(x)]) + x for x in labels) + b"\0"
    head = bytes.fromhex("abcd818000010001 00000000".replace(" ", ""))
    ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + ipaddress.IPv4Address(addr).packed
    return head + qname + b"\x00\x01\x00\x01" + ans


def rows(src: FakeSource, query: ViewQuery | None = None):  # type: ignore[no-untyped-def]
    query = query or ViewQuery(limit=100)
    src.advance()
    return src.snapshot(query).rows


def test_rows_carry_names_and_hostile_ones_are_clean() -> None:
    got = rows(NamedSource())
    web = [r for r in got if r.dst == "192.0.2.1"]
    assert web and {(r.dst_name, r.name_cname, r.name_source) for r in web} == {
        ("web.example.com", "edge.cdn.test", "dns")}  # fmt: skip
    api = [r for r in got if r.dst == "192.0.2.3" and r.proto == 6 and r.direction == "out"]
    assert api and {(r.dst_name, r.name_source) for r in api} == {("api.example.org", "sni")}
    bad = [r for r in got if r.dst == "192.0.2.2"]
    assert bad
    for r in bad:
        assert r.dst_name is not None and r.dst_name.startswith("redevil.xxx")
        assert r.dst_name.isprintable() and "\u202e" not in r.dst_name and len(r.dst_name) <= 253
        text = cell(COLUMNS["name"], r, Display(), lambda a: None)
        assert text.isprintable() and "\x1b" not in text and text.startswith("dns  redevil")
    facts = dict(name_facts(web[0]))
    assert facts == {"source name": "-", "destination name": "web.example.com",
                     "name source": "dns", "CNAME chain end": "edge.cdn.test"}  # fmt: skip


@pytest.mark.parametrize("width", [79, 100, 120, 160, 200])
def test_name_column_only_where_the_rest_fits(width: int) -> None:
    without = [c.key for c in choose(rows(FakeSource(flows=FLOWS)), "flow", Display(), width)]
    shown = [c.key for c in choose(rows(NamedSource()), "flow", Display(), width)]
    assert [k for k in shown if k != "name"] == without
    if width <= 100:
        assert "name" not in shown
    if width >= 160:
        assert shown.index("name") == shown.index("iface") + 1


def test_cells_mark_the_source_and_fall_back_to_rdns() -> None:
    got = rows(NamedSource())
    col = replace(COLUMNS["name"], width=60)  # no cut
    rdns = {"192.0.2.4": "four.rdns.test"}.get
    by = Counter(cell(col, r, Display(resolve=True), rdns) for r in got)
    assert by["dns  web.example.com"] == sum(r.dst == "192.0.2.1" for r in got)
    four = [r for r in got if r.dst == "192.0.2.4"]
    assert {cell(col, r, Display(resolve=True), rdns) for r in four} == {"rdns four.rdns.test"}
    assert {cell(col, r, Display(resolve=False), rdns) for r in four} == {""}


def test_name_filter_and_group_over_the_query() -> None:
    src = NamedSource()
    got = rows(src, ViewQuery(filter="name *.EXAMPLE.com", limit=100))
    assert got and {r.dst_name for r in got} == {"web.example.com"}
    assert len(got) == sum(r.dst == "192.0.2.1" for r in rows(src))
    groups = rows(src, ViewQuery(group_by="name", limit=100))
    counts = {r.group: r.flows for r in groups}
    every = rows(src)
    assert counts["web.example.com"] == sum(r.dst_name == "web.example.com" for r in every)
    assert counts["api.example.org"] == sum(r.dst_name == "api.example.org" for r in every)
    assert sum(counts.values()) == FLOWS
    assert counts["-"] == sum(r.name_source is None for r in every)
    with pytest.raises(Exception, match="no names from the wire"):
        from flowtop.query.filterexpr import Columns

        keys = np.zeros(1, dtype=src.keys.dtype)
        parse("name x")(Columns.from_keys(keys, {}))


@pytest.mark.asyncio
async def test_the_app_shows_names_filters_and_groups_by_them() -> None:
    app = make_app(NamedSource(), resolve=False)
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        text = screen_text(pilot)
        assert " Name " in text and "dns  web.example.com" in text
        assert "\x1b" not in text and "\u202e" not in text
        await pilot.press("slash", *"name api.*", "enter")
        await settle(pilot)
        snap = app.shown
        assert snap is not None and snap.filter_error is None and snap.rows
        assert {r.dst_name for r in snap.rows} == {"api.example.org"}
        assert "sni  api.example.org" in screen_text(pilot)
        await pilot.press("slash", *["backspace"] * 20, "enter")
        await settle(pilot)
        await pilot.press("g", "n")
        await settle(pilot)
        assert app.view_query.group_by == "name"
        assert app.shown is not None
        groups = {r.group for r in app.shown.rows}
        assert {"web.example.com", "api.example.org", "-"} <= groups
        assert "by name" in screen_text(pilot)
