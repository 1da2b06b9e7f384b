"""The conversation view, the live view's default: Pilot tests at 80x24 and
160x48 on the fake source's connections (tests/tui/fakesource.conversation_flows),
checked against what the fake put in the flow table for each connection's legs."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from flowtop.query.types import ViewQuery, ViewRow
from flowtop.tui import FlowtopApp
from flowtop.tui import format as fmt
from flowtop.tui.app import DEFAULT_GROUP
from flowtop.tui.columns import COLUMNS, cell, choose
from flowtop.tui.format import Display
from flowtop.tui.screens.detail import DetailScreen
from flowtop.tui.screens.groupby import CHOICES
from flowtop.tui.screens.help import HelpScreen
from tests.tui.fakesource import FakeConversation, FakeSource
from tests.tui.helpers import make_app, screen_text, settle, table

CONNECTIONS = 40
SIZES = [(80, 24), (160, 48)]
pytestmark = pytest.mark.asyncio
sizes = pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])


def conv_app(**source: object) -> tuple[FlowtopApp, FakeSource]:
    src = FakeSource(conversations=CONNECTIONS, frames=4, **source)  # type: ignore[arg-type]
    return make_app(src, resolve=False, group=DEFAULT_GROUP), src


def leg_bytes(src: FakeSource) -> np.ndarray:
    """Each flow's bytes as the flow table holds them (the fake's legs, by index)."""
    t = src.engine.table
    rows = t.rows_of(src.keys)
    assert (rows >= 0).all()
    return np.asarray(t.column("bytes", rows), dtype=np.int64)


def ends(src: FakeSource, conv: FakeConversation) -> tuple[str, int, str, int]:
    """(client, client port, server, server port) from a client -> server leg's key."""
    k = src.keys[conv.up_rows[0]]
    ver = int(k["ip_version"])

    def addr(raw: bytes) -> str:
        return str(ipaddress.ip_address(raw[:4] if ver == 4 else raw))

    return addr(bytes(k["src"])), int(k["sport"]), addr(bytes(k["dst"])), int(k["dport"])


def by_ends(rows: tuple[ViewRow, ...]) -> dict[tuple[object, ...], ViewRow]:
    return {(r.src, r.sport, r.dst, r.dport): r for r in rows}


@sizes
async def test_opens_on_conversations(size: tuple[int, int]) -> None:
    app, src = conv_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert app.view_query.group_by == "conversation" == DEFAULT_GROUP
        snap = app.shown
        assert snap is not None and snap.matched == CONNECTIONS
        assert snap.active_flows == len(src.keys) > CONNECTIONS
        text = screen_text(pilot)
        assert "by conversation" in text
        for header in ("Client", "Server", "↑Rate", "↓Rate"):
            assert header in text
        keys = [c.key for c in table(pilot).shown]
        assert keys[:2] == ["client", "server"]
        assert {"up_bps", "down_bps"} <= set(keys)
        if size[0] >= 160:  # the wide set
            assert {"iface", "role", "up_bytes", "down_bytes", "proto", "bps"} <= set(keys)
            assert "veth-test→eth1" in text
        # Every row on screen is one connection: client and server ends as
        # addr:port, both rates in their cells.
        t = table(pilot)
        shown = {c.key: c for c in t.shown}
        for i, r in enumerate(snap.rows[: t.row_count]):
            assert t.key_at(i) == r.key
            client = cell(shown["client"], r, app.display_opts, app.names)
            assert client.endswith(f":{r.sport}") and len(client) <= shown["client"].width
            assert cell(shown["up_bps"], r, app.display_opts, app.names) == fmt.rate(r.up_bps or 0)
            assert cell(shown["down_bps"], r, app.display_opts, app.names) == fmt.rate(
                r.down_bps or 0
            )
    src.close()


async def test_rows_are_the_connections_counted_once() -> None:
    """Each connection's row against its legs in the flow table: the client
    end, role, interfaces, and each direction's bytes once (a forwarded
    connection's two legs of one direction are not added up)."""
    app, src = conv_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app.change_query(limit=100)
        await settle(pilot)
        assert app.shown is not None
        rows = by_ends(app.shown.rows)
        assert len(rows) == CONNECTIONS
        nbytes = leg_bytes(src)
        kinds = set()
        for conv in src.conversations:
            client, cport, server, sport = ends(src, conv)
            r = rows[(client, cport, server, sport)]
            kinds.add(conv.kind)
            assert r.role == conv.kind
            assert r.flows == len(conv.up_rows) + len(conv.down_rows)
            if conv.kind == "forwarded":
                assert r.iface == f"{conv.iface_in}→{conv.iface_out}" == "veth-test→eth1"
                assert len(conv.up_rows) == len(conv.down_rows) == 2
                # the two legs carry the same bytes; the row has them once
                assert nbytes[conv.up_rows[0]] == nbytes[conv.up_rows[1]]
            else:
                assert r.iface == conv.iface_in == "eth1"
            assert r.up_bytes == nbytes[conv.up_rows[0]]
            assert r.down_bytes == nbytes[conv.down_rows[0]]
            assert r.bytes == r.up_bytes + r.down_bytes
            assert r.bps == pytest.approx((r.up_bps or 0) + (r.down_bps or 0))
            assert r.direction is None
        assert kinds == {"client", "server", "forwarded"}
        # The flow view still has every leg.
        await pilot.press("g", "f")
        await settle(pilot)
        assert app.view_query.group_by == "flow"
        assert app.shown.matched == len(src.keys)
        assert "by flow" in screen_text(pilot)
        await pilot.press("g", "v")
        await settle(pilot)
        assert app.view_query.group_by == "conversation"
        assert app.shown.matched == CONNECTIONS
    src.close()


@sizes
async def test_sorting_conversations(size: tuple[int, int]) -> None:
    app, src = conv_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        rates = [r.bps for r in app.shown.rows]  # type: ignore[union-attr]
        assert rates == sorted(rates, reverse=True) and len(set(rates)) > 1
        assert "Rate▼" in screen_text(pilot)  # the sum: both directions
        sortable = [c.sort for c in table(pilot).shown if c.sort]
        assert sortable[:2] == ["src", "dst"] and "bps" in sortable
        seen = set()
        for _ in sortable:
            await pilot.press("s")
            await settle(pilot)
            seen.add(app.view_query.sort)
        assert seen == set(sortable)
        await pilot.press("r")
        await settle(pilot)
        q = app.view_query
        rows = app.shown.rows  # type: ignore[union-attr]
        if q.sort in ("bps", "bytes", "packets", "pps", "flows"):
            got = [getattr(r, q.sort) for r in rows]
            assert got == sorted(got, reverse=q.descending)
    src.close()


async def test_client_end_stays_whole_when_cut() -> None:
    """At 80 columns an IPv6 end is cut in its address, never in its port."""
    src = FakeSource(conversations=CONNECTIONS, frames=2)
    for _ in range(2):
        src.advance()
    rows = src.snapshot(ViewQuery(group_by="conversation", limit=100)).rows
    cols = {c.key: c for c in choose(rows, "conversation", Display(resolve=False), 79)}
    v6 = [r for r in rows if r.src and ":" in r.src]
    assert v6
    for r in v6:
        for key, port in (("client", r.sport), ("server", r.dport)):
            text = cell(cols[key], r, Display(resolve=False), lambda a: None)
            assert len(text) <= cols[key].width
            assert text.startswith("[") and text.endswith(f":{port}")
    src.close()


async def test_filter_counts_the_matching_legs_only() -> None:
    """`in` keeps each connection's ingress legs: a local client's row then
    has only what it received (its sent direction is egress only)."""
    app, src = conv_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"in", "enter")
        await settle(pilot)
        app.change_query(limit=100)
        await settle(pilot)
        snap = app.shown
        assert snap is not None and snap.filter_error is None
        assert snap.matched == CONNECTIONS  # every connection has an ingress leg
        rows = by_ends(snap.rows)
        nbytes = leg_bytes(src)
        for conv in src.conversations:
            r = rows[ends(src, conv)]
            if conv.kind == "client":
                assert r.flows == 1 and r.up_bytes == 0
                assert r.down_bytes == nbytes[conv.down_rows[0]]
            elif conv.kind == "server":
                assert r.flows == 1 and r.down_bytes == 0
                assert r.up_bytes == nbytes[conv.up_rows[0]]
            else:
                assert r.flows == 2
                assert (r.up_bytes, r.down_bytes) == (
                    nbytes[conv.up_rows[0]],
                    nbytes[conv.down_rows[0]],
                )
        await pilot.press("slash", *["backspace"] * 2, *"port 53", "enter")
        await settle(pilot)
        rows53 = app.shown.rows  # type: ignore[union-attr]
        assert rows53 and all(53 in (r.sport, r.dport) for r in rows53)
        assert len(rows53) == sum(53 in ends(src, c)[1::2] for c in src.conversations)
    src.close()


async def test_detail_of_a_forwarded_conversation() -> None:
    app, src = conv_app(tcp=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        snap = app.shown
        assert snap is not None
        i, row = next((i, r) for i, r in enumerate(snap.rows) if r.role == "forwarded")
        for _ in range(i):
            await pilot.press("down")
        assert table(pilot).selected_key() == row.key
        await pilot.press("enter")
        for _ in range(40):
            await pilot.pause(0.05)
            if isinstance(app.screen, DetailScreen) and app.screen.legs is not None:
                break
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.row_key == row.key
        text = screen_text(pilot)
        assert f"{row.src}:{row.sport} ⇄ {row.dst}:{row.dport}" in text
        assert "veth-test→eth1" in text and "forwarded" in text
        assert f"{row.up_bytes:,}" in text and f"{row.down_bytes:,}" in text
        assert "↑ client→server" in text and "↓ server→client" in text
        # The legs: every flow row of the connection, with the table's bytes.
        conv = next(
            c for c in src.conversations if ends(src, c) == (row.src, row.sport, row.dst, row.dport)
        )
        nbytes = leg_bytes(src)
        legs = screen.legs
        assert legs is not None and len(legs) == 4
        assert sorted(g.bytes for g in legs) == sorted(
            int(nbytes[j]) for j in (*conv.up_rows, *conv.down_rows)
        )
        assert {(g.iface, g.direction) for g in legs} == {
            ("veth-test", "in"),
            ("eth1", "out"),
            ("eth1", "in"),
            ("veth-test", "out"),
        }
        assert text.count("ingress") == 2 and text.count("egress") == 2
        assert "legs (4 flows)" in text
        # The rate history of the conversation's key, as for a flow.
        assert "rate, last 60 s" in text
        history = src.history(row.key)
        assert len(history) >= 1 and history[-1][1] == pytest.approx(row.bps)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DetailScreen)
        assert app.detail_key is None and not app.detail_legs
    src.close()


async def test_rate_history_follows_the_conversation() -> None:
    """One history point per interval, the row's rate (both directions) each time."""
    app, src = conv_app()
    src.frames = 1
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        key = app.shown.rows[0].key  # type: ignore[union-attr]
        seen = []
        for frames in range(2, 6):
            src.frames = frames
            await settle(pilot)
            row = next(r for r in app.shown.rows if r.key == key)  # type: ignore[union-attr]
            seen.append((app.shown.time, row.bps))  # type: ignore[union-attr]
        history = src.history(key)
        assert [t for t, _ in history[-4:]] == [t for t, _ in seen]
        assert [v for _, v in history[-4:]] == pytest.approx([v for _, v in seen])
    src.close()


async def test_cumulative_keeps_both_directions() -> None:
    app, src = conv_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        keys = [c.key for c in table(pilot).shown]
        assert keys[:2] == ["client", "server"] and {"up_bytes", "down_bytes"} <= set(keys)
        assert "↑Total" in screen_text(pilot) and "↓Total" in screen_text(pilot)
    src.close()


async def test_picker_and_help_name_the_conversation_view() -> None:
    assert ("conversation", "v") in [(g, k) for g, k, _ in CHOICES]
    assert len({k for _, k, _ in CHOICES}) == len(CHOICES)  # no letter twice
    assert COLUMNS["up_bps"].label == "↑Rate" and COLUMNS["down_bps"].label == "↓Rate"
    app, src = conv_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(pilot) + str(app.screen.query_one("#help-conversations").render())
        assert "↑ is client->server" in text and "Role" in text
    src.close()


async def test_unknown_group_is_an_error() -> None:
    from flowtop.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown group"):
        FlowtopApp(FakeSource(), group="nonsense")  # type: ignore[arg-type]
