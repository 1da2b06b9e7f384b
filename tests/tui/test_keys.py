"""Every key of the TUI, driven with a Pilot at 80x24 and 160x48 on a fake source."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from flowtop.query.types import GROUPS
from flowtop.tui import FlowtopApp
from flowtop.tui.columns import cell
from flowtop.tui.screens.detail import DetailScreen
from flowtop.tui.screens.groupby import CHOICES, GroupByScreen
from flowtop.tui.screens.help import HelpScreen
from flowtop.tui.widgets.filterbar import FilterBar
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, screen_text, settle, table

SIZES = [(80, 24), (160, 48)]
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"]),
]


def app_of(pilot: object) -> FlowtopApp:
    app = pilot.app  # type: ignore[attr-defined]
    assert isinstance(app, FlowtopApp)
    return app


async def test_first_screen_has_the_essentials(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        text = screen_text(pilot)
        for needle in ("router-1", "eth1", "veth-test", "rx ", "tx ", "flows 60", "every 1s"):
            assert needle in text
        assert "collector ok" in text
        for header in ("Source", "SPort", "Destination", "DPort", "Proto", "Iface", "Rate"):
            assert header in text
        assert "10.0.0.1 " in text  # the biggest flow is on screen
        assert "no TCP data available" in text
        assert "PAUSED" not in text
        # only a screenful of rows is handed over, never every flow
        assert table(pilot).row_count == len(app.shown.rows) <= app.view_query.limit  # type: ignore[union-attr]


async def test_sort_next_previous_and_reverse(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert app.view_query.sort == "bps"
        assert "Rate▼" in screen_text(pilot)
        await pilot.press("s")
        await settle(pilot)
        following = [c.sort for c in table(pilot).shown if c.sort]
        assert app.view_query.sort == following[(following.index("bps") + 1) % len(following)]
        await pilot.press("S")
        await settle(pilot)
        assert app.view_query.sort == "bps"
        await pilot.press("S")
        await settle(pilot)
        assert app.view_query.sort == "iface"
        await pilot.press("s")
        await settle(pilot)
        rates = [r.bps for r in app.shown.rows]  # type: ignore[union-attr]
        assert rates == sorted(rates, reverse=True)
        await pilot.press("r")
        await settle(pilot)
        assert not app.view_query.descending
        assert "Rate▲" in screen_text(pilot)
        rates = [r.bps for r in app.shown.rows]  # type: ignore[union-attr]
        assert rates == sorted(rates)
        # the table shows the snapshot's order
        t = table(pilot)
        keys = [t.key_at(i) for i in range(t.row_count)]
        assert keys == [r.key for r in app.shown.rows]  # type: ignore[union-attr]


async def test_sort_every_sortable_column(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        sortable = [c.sort for c in table(pilot).shown if c.sort]
        seen = set()
        for _ in sortable:
            await pilot.press("s")
            await settle(pilot)
            seen.add(app.view_query.sort)
        assert seen == set(sortable)


async def test_header_click_sorts_and_reverses(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        t = table(pilot)
        x = 0
        for c in t.shown:
            if c.key == "src":
                break
            x += t.columns[c.key].get_render_width(t)  # type: ignore[index]
        await pilot.click("#talkers", offset=(x + 1, 0))
        await settle(pilot)
        assert app.view_query.sort == "src"
        assert "Source▼" in screen_text(pilot)
        await pilot.click("#talkers", offset=(x + 1, 0))
        await settle(pilot)
        assert app.view_query.sort == "src" and not app.view_query.descending


async def test_filter_good_expression(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert app.query_one(FilterBar).display
        assert isinstance(app.focused, Input)
        await pilot.press(*"udp and port 53")
        await pilot.press("enter")
        await settle(pilot)
        assert app.view_query.filter == "udp and port 53"
        rows = app.shown.rows  # type: ignore[union-attr]
        assert rows and all(r.proto_name == "udp" and 53 in (r.sport, r.dport) for r in rows)
        assert not app.query_one(FilterBar).display
        assert "filter udp and port 53" in screen_text(pilot)
        # escape in the main view clears it
        await pilot.press("escape")
        await settle(pilot)
        assert app.view_query.filter == ""
        assert len(app.shown.rows) > len(rows)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "expr",
    [
        "host 10.0.0.1",
        "src net 10.0.0.0/24 and not tcp",
        "iface veth* and out",
        "dst host 192.0.2.1 || proto icmp",
        "! (port 443 or port 80)",
        "vlan 100",
        "in && sport 20000",
    ],
)
async def test_filter_language_good(size: tuple[int, int], expr: str) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("slash", *expr, "enter")
        await settle(pilot)
        assert app.view_query.filter == expr
        assert app.shown is not None and app.shown.filter_error is None
        assert app.shown.matched <= 60


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("host", "expected an address"),
        ("port 99999", "(at"),
        ("proto bogus", "unknown protocol"),
        ("(tcp", "(at"),
        ("tcp and", "(at"),
        ("net 10.0.0.0/99", "(at"),
    ],
)
async def test_filter_language_bad_keeps_previous(
    size: tuple[int, int], expr: str, error: str
) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"tcp", "enter")
        await settle(pilot)
        before = [r.key for r in app.shown.rows]  # type: ignore[union-attr]
        await pilot.press("slash")
        await pilot.press(*["backspace"] * 3, *expr, "enter")
        await pilot.pause(0.1)
        bar = app.query_one(FilterBar)
        assert bar.display  # still open, with the error in place
        text = screen_text(pilot)
        assert error in text or error in str(app.query_one("#filter-error").render())
        assert app.view_query.filter == "tcp"  # the previous filter stays
        await settle(pilot)
        assert [r.key for r in app.shown.rows] == before  # type: ignore[union-attr]
        await pilot.press("escape")
        await pilot.pause()
        assert not bar.display
        assert app.view_query.filter == "tcp"


async def test_typing_a_filter_does_not_trigger_keys(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"sport 22 q g p c b n t r s")
        await pilot.pause()
        assert app.is_running
        assert app.view_query.sort == "bps" and not app.paused
        assert app.theme == "flowtop-dark"
        assert app.query_one("#filter-input", Input).value == "sport 22 q g p c b n t r s"


@pytest.mark.parametrize(("group", "letter", "_desc"), CHOICES)
async def test_group_by_each(size: tuple[int, int], group: str, letter: str, _desc: str) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        if group == "flow":
            await pilot.press("g", "s")  # away and back
            await settle(pilot)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, GroupByScreen)
        await pilot.press(letter)
        await settle(pilot)
        assert app.view_query.group_by == group
        rows = app.shown.rows  # type: ignore[union-attr]
        assert rows and all(r.key.startswith(f"{group}:") for r in rows)
        assert f"by {group}" in screen_text(pilot)
        shown = [c.key for c in table(pilot).shown]
        if group == "conversation":  # a connection's ends, not a group's count
            assert shown[:2] == ["client", "server"]
        elif group != "flow":
            assert "flows" in shown
            assert "sport" not in shown


async def test_group_by_picker_with_cursor(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("g", "down", "down", "enter")
        await settle(pilot)
        assert app.view_query.group_by == GROUPS[2]
        await pilot.press("g", "escape")
        await settle(pilot)
        assert app.view_query.group_by == GROUPS[2]
        assert not isinstance(app.screen, GroupByScreen)


@pytest.mark.parametrize("key", ["p", "space"])
async def test_pause_freezes_view_and_resume_catches_up(size: tuple[int, int], key: str) -> None:
    src = FakeSource(frames=3)
    app = make_app(src)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press(key)
        await pilot.pause()
        assert app.paused
        assert "PAUSED" in screen_text(pilot)
        frozen = app.shown
        src.frames = 6  # collection goes on
        while src.steps < 6:
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        assert app.shown is frozen
        assert app.latest is not None and app.latest.time > frozen.time  # type: ignore[union-attr]
        await pilot.press(key)
        await settle(pilot)
        assert not app.paused
        assert app.shown is not None and app.shown.time == src.now()
        assert "PAUSED" not in screen_text(pilot)


async def test_enter_opens_detail_and_back(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("down")
        key = table(pilot).selected_key()
        row = next(r for r in app.shown.rows if r.key == key)  # type: ignore[union-attr]
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, DetailScreen)
        assert app.screen.row_key == key
        text = screen_text(pilot)
        assert f"{row.src}:" in text and row.dst in text  # type: ignore[operator]
        for label in ("first seen", "last seen", "TCP flags", "packets", "rate, last 60 s"):
            assert label in text
        assert "2025-11-13" in text  # first/last seen from the fixed clock
        assert app.detail_key == key
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DetailScreen)
        assert app.detail_key is None


async def test_detail_of_a_group(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("g", "i")
        await settle(pilot)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, DetailScreen)
        text = screen_text(pilot)
        assert "on eth1" in text or "on veth-test" in text
        assert "flows" in text


async def test_cumulative_toggle(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert table(pilot).shown[len(table(pilot).shown) - 1].key != "bytes" or size[0] > 80
        await pilot.press("c")
        await pilot.pause()
        assert app.display_opts.cumulative
        keys = [c.key for c in table(pilot).shown]
        assert "bytes" in keys
        text = screen_text(pilot)
        assert "Total" in text
        assert "rx " in text and "/s" not in text.splitlines()[2]  # interfaces show totals
        await pilot.press("c")
        await pilot.pause()
        assert not app.display_opts.cumulative


async def test_bits_bytes_toggle(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert "b/s" in screen_text(pilot)
        await pilot.press("b")
        await pilot.pause()
        text = screen_text(pilot)
        assert "B/s" in text and "Mb/s" not in text
        await pilot.press("b")
        await pilot.pause()
        assert "Mb/s" in screen_text(pilot)


async def test_name_resolution_toggle(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for _ in range(50):  # names arrive asynchronously
            if "web.example.net" in screen_text(pilot):
                break
            await pilot.pause(0.05)
        text = screen_text(pilot)
        assert "web.example.net" in text
        assert "https" in text  # services by name
        await pilot.press("n")
        await pilot.pause()
        text = screen_text(pilot)
        assert "web.example.net" not in text and "192.0.2.1 " in text
        assert "443" in text
        await pilot.press("n")
        await pilot.pause()
        assert "web.example.net" in screen_text(pilot)  # from the cache, at once


async def test_theme_cycles_through_all(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        seen = [app.theme]
        for _ in range(len(app.theme_names)):
            await pilot.press("t")
            await pilot.pause()
            seen.append(app.theme)
        assert seen[0] == seen[-1] == "flowtop-dark"
        assert set(seen) >= {
            "flowtop-dark",
            "flowtop-light",
            "flowtop-high-contrast",
            "flowtop-mono",
        }


async def test_help_screen_lists_every_binding(size: tuple[int, int]) -> None:
    from flowtop.tui.screens.main import MainScreen

    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one("#help-keys")
        rendered = str(box.render())
        text = screen_text(pilot) + rendered
        for b in [*MainScreen.BINDINGS, *FlowtopApp.BINDINGS]:
            if b.description:  # type: ignore[union-attr]
                assert b.description in text, b  # type: ignore[union-attr]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_quit(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


async def test_selected_row_stays_selected_while_rows_move(size: tuple[int, int]) -> None:
    src = FakeSource(frames=2)
    app = make_app(src, resolve=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "down", "down")
        t = table(pilot)
        key = t.selected_key()
        moved = False
        for frames in range(3, 9):
            src.frames = frames
            await settle(pilot)
            assert t.selected_key() == key
            index = [r.key for r in app.shown.rows].index(key)  # type: ignore[union-attr, arg-type]
            assert t.cursor_row == index
            moved = moved or index != 4
        assert moved, "the fake's rates should reorder rows"


async def test_rows_update_in_place(size: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    src = FakeSource(frames=2)
    app = make_app(src, resolve=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        t = table(pilot)
        calls = {"clear": 0, "add_row": 0, "remove_row": 0, "sort": 0}
        for name in calls:
            original = getattr(t, name)

            def counted(*a: object, _n: str = name, _o: object = original, **k: object) -> object:
                calls[_n] += 1
                return _o(*a, **k)  # type: ignore[operator]

            monkeypatch.setattr(t, name, counted)

        def texts() -> list[tuple[str, ...]]:
            return [
                tuple(cell(c, r, app.display_opts, app.names) for c in t.shown)
                for r in app.shown.rows  # type: ignore[union-attr]
            ]

        before, updated = texts(), t.cells_updated
        src.frames = 3
        await settle(pilot)
        after = texts()
        # Rows are slots updated in place: nothing rebuilt, re-sorted, added or removed
        # while the number of rows stays, and exactly the cells whose text changed are
        # rewritten (rows that moved included).
        assert len(after) == len(before)
        assert calls == {"clear": 0, "add_row": 0, "remove_row": 0, "sort": 0}
        changed = sum(
            a != b
            for old, new in zip(before, after, strict=True)
            for a, b in zip(old, new, strict=True)
        )
        assert 0 < t.cells_updated - updated == changed <= len(after) * len(t.shown)
