"""The live view repaints only what changed, and what it repaints is what Textual would draw.

Two kinds of check:
  - the fast paths draw exactly Textual's lines: every table line against
    DataTable.render_line (cursor, hover, scroll, theme), the sparkline
    bars against Textual's;
  - incremental refreshes: after one row's bytes change, rows move, a row goes,
    the table shrinks or the filter changes, the screen (what the terminal was
    sent) shows the new values in the right rows, leaves the rest as it was,
    and equals a repaint of everything from scratch.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from rich.color import Color
from rich.console import Console
from rich.text import Text
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.renderables.sparkline import Sparkline as TextualBars
from textual.widgets import DataTable

from flowtop.query.types import Snapshot
from flowtop.tui import FlowtopApp
from flowtop.tui import format as fmt
from flowtop.tui.widgets.celltable import CellTable
from flowtop.tui.widgets.sparkline import Bars
from flowtop.tui.widgets.status import StatusHeader
from flowtop.tui.widgets.tcp_health import TcpHealth
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, screen_text, settle, table


def app_of(pilot: Pilot[None]) -> FlowtopApp:
    app = pilot.app
    assert isinstance(app, FlowtopApp)
    return app


def assert_lines_are_datatables(t: CellTable) -> None:
    for y in range(t.size.height):
        assert t.render_line(y) == DataTable.render_line(t, y), f"line {y}"


async def redraw(pilot: Pilot[None], snap: Snapshot) -> None:
    """Shows `snap` through the app's own drawing path, and lets Textual paint."""
    app = app_of(pilot)
    app.shown = snap
    app._draw()
    await pilot.pause()
    await pilot.pause()


async def from_scratch(pilot: Pilot[None]) -> list[str]:
    """The screen (as body() gives it) after every widget repainted everything."""
    for widget in pilot.app.screen.walk_children(with_self=True):
        widget.refresh()
    await pilot.pause()
    return body(pilot)[1]


def body(pilot: Pilot[None]) -> tuple[int, list[str]]:
    """The line index of the table's first row, and every screen line; the table's
    lines without its scrollbar (whose thumb moves when the row count does)."""
    lines = screen_text(pilot).splitlines()
    top = next(i for i, line in enumerate(lines) if "Source" in line and "Rate" in line) + 1
    t = table(pilot)
    width = t.region.x + t.scrollable_content_region.width
    end = top + t.size.height - 1
    return top, [line[:width].rstrip() if top <= i < end else line for i, line in enumerate(lines)]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.asyncio
async def test_table_lines_are_datatables(size: tuple[int, int]) -> None:
    app = make_app(FakeSource(flows=120, frames=3), resolve=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        t = table(pilot)
        assert t.row_count == len(app.shown.rows) > t.size.height  # type: ignore[union-attr]
        assert_lines_are_datatables(t)
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert t.cursor_row == 3
        assert_lines_are_datatables(t)
        await pilot.hover("#talkers", offset=(3, 6))  # the hover highlight
        await pilot.pause()
        assert t.hover_coordinate.row == 5
        assert_lines_are_datatables(t)
        t.scroll_to(y=7, animate=False)
        await pilot.pause()
        assert t.scroll_offset.y == 7
        assert_lines_are_datatables(t)
        await pilot.press("t")  # another theme: other styles
        await pilot.pause()
        assert app.theme != "flowtop-dark"
        assert_lines_are_datatables(t)


class Wide(App[None]):
    """A CellTable wider than the screen, to scroll it sideways."""

    def compose(self) -> ComposeResult:
        yield CellTable(cursor_type="row", cell_padding=0)

    def on_mount(self) -> None:
        t = self.query_one(CellTable)
        t.set_columns(
            [(f"c{i}", Text(f"col {i}", justify="right"), 9, i % 2 == 1) for i in range(6)]
        )
        t.show_rows([(f"r{r}", tuple(f"{r}.{i}" for i in range(6))) for r in range(8)])


@pytest.mark.asyncio
async def test_scrolled_sideways_lines_are_datatables() -> None:
    app = Wide()
    async with app.run_test(size=(30, 12)) as pilot:
        await pilot.pause()
        t = app.query_one(CellTable)
        assert_lines_are_datatables(t)
        t.scroll_to(x=7, animate=False)
        await pilot.pause()
        assert t.scroll_offset.x == 7
        assert_lines_are_datatables(t)
        assert "2.3" in screen_text(pilot)


def test_bars_are_textuals_bars() -> None:
    console = Console(width=80, file=open("/dev/null", "w"))  # noqa: SIM115
    rng = random.Random(13)
    for _ in range(400):
        n = rng.choice([0, 1, 2, 3, 5, 17, 59, 60, 61, 120])
        width = rng.choice([1, 2, 5, 19, 59, 60, 80])
        height = rng.choice([1, 1, 2, 3])
        data = [rng.random() * 1e7 if rng.random() > 0.1 else 0.0 for _ in range(n)]
        kw = {
            "width": width,
            "height": height,
            "min_color": Color.from_rgb(10, 20, 30),
            "max_color": Color.from_rgb(200, 100, 50),
        }
        options = console.options.update_dimensions(width, height)
        ours = list(console.render(Bars(data, **kw), options))  # type: ignore[arg-type]
        assert ours == list(console.render(TextualBars(data, **kw), options))  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_one_changed_row_repaints_that_line_only() -> None:
    app = make_app(FakeSource(flows=120, frames=3), resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        snap = app.shown
        assert snap is not None
        t = table(pilot)
        assert "bytes" in [c.key for c in t.shown]  # the Total column is on screen
        top, before = body(pilot)
        row = snap.rows[3]
        new_bytes = row.bytes + 987_654_321
        rows = list(snap.rows)
        rows[3] = replace(row, bytes=new_bytes)
        repainted = t.lines_repainted
        await redraw(pilot, replace(snap, rows=tuple(rows)))
        _, after = body(pilot)
        assert t.lines_repainted - repainted == 1
        old_total, new_total = fmt.volume(row.bytes), fmt.volume(new_bytes)
        assert old_total != new_total
        assert new_total in after[top + 3] and old_total not in after[top + 3]
        assert after[top + 3].replace(new_total, old_total.rjust(len(new_total))) == before[top + 3]
        assert [line for i, line in enumerate(after) if i != top + 3] == [
            line for i, line in enumerate(before) if i != top + 3
        ]
        assert after == await from_scratch(pilot)
        assert_lines_are_datatables(t)


@pytest.mark.asyncio
async def test_rows_that_move_end_up_in_order() -> None:
    app = make_app(FakeSource(flows=120, frames=3), resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        snap = app.shown
        assert snap is not None
        t = table(pilot)
        top, before = body(pilot)
        rows = list(snap.rows)
        rows[2], rows[6] = rows[6], rows[2]
        rows.insert(9, rows.pop(0))  # the first row moves down to the tenth place
        repainted = t.lines_repainted
        await redraw(pilot, replace(snap, rows=tuple(rows)))
        _, after = body(pilot)
        old_order = [r.key for r in snap.rows]
        moved = [old_order.index(r.key) for r in rows]  # where each line's row was before
        visible = t.size.height - 1
        for i in range(visible):
            assert after[top + i] == before[top + moved[i]], i
        changed = sum(1 for i in range(visible) if moved[i] != i)
        assert changed == 10  # lines 0-9: every one of them shows another row
        assert t.lines_repainted - repainted == changed
        assert t.cursor_row == 9  # the cursor followed its row
        assert t.keys() == [r.key for r in rows]
        for i, r in enumerate(rows[:visible]):
            assert r.src is not None and after[top + i].startswith(r.src + " ")
        assert after == await from_scratch(pilot)
        assert_lines_are_datatables(t)


@pytest.mark.asyncio
async def test_a_row_that_goes_is_gone_and_a_shorter_table_leaves_blanks() -> None:
    app = make_app(FakeSource(flows=120, frames=3), resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        snap = app.shown
        assert snap is not None
        t = table(pilot)
        top, before = body(pilot)
        gone = snap.rows[4]
        rows = [r for r in snap.rows if r.key != gone.key]
        await redraw(pilot, replace(snap, rows=tuple(rows)))
        _, after = body(pilot)
        visible = t.size.height - 1
        assert before[top + 4] not in after
        assert after[top : top + 4] == before[top : top + 4]
        assert after[top + 4 : top + visible - 1] == before[top + 5 : top + visible]
        last = rows[visible - 1]  # scrolled into view from below
        assert last.src is not None and after[top + visible - 1].startswith(last.src + " ")
        assert gone.key not in list(t.keys()) and t.row_count == len(rows)
        assert after == await from_scratch(pilot)
        # ten rows left: the lines under them are emptied
        repainted = t.lines_repainted
        await redraw(pilot, replace(snap, rows=tuple(rows[:10])))
        _, short = body(pilot)
        assert t.lines_repainted - repainted == visible - 10
        assert short[top : top + 10] == after[top : top + 10]
        assert all(not line.strip() for line in short[top + 10 : top + visible])
        assert short == await from_scratch(pilot)
        assert_lines_are_datatables(t)


@pytest.mark.asyncio
async def test_a_filter_change_repaints_every_line() -> None:
    app = make_app(FakeSource(flows=120, frames=3), resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        t = table(pilot)
        top, before = body(pilot)
        visible = t.size.height - 1
        assert any(" tcp " in line for line in before[top : top + visible])
        columns = t.shown
        repainted = t.lines_repainted
        await pilot.press("slash", *"udp", "enter")
        await settle(pilot)
        _, after = body(pilot)
        rows = app.shown.rows  # type: ignore[union-attr]
        assert rows and all(r.proto_name == "udp" for r in rows)
        shown = min(visible, len(rows))
        assert all(" udp " in line for line in after[top : top + shown])
        assert not any(" tcp " in line for line in after[top : top + visible])
        assert t.shown == columns  # the same columns: the lines, not the table, were redrawn
        differ = sum(before[top + i] != after[top + i] for i in range(visible))
        assert differ >= visible - 1  # (the top row may be the same udp flow)
        assert t.lines_repainted - repainted == differ
        assert after == await from_scratch(pilot)
        assert_lines_are_datatables(t)


@pytest.mark.asyncio
async def test_header_repaints_the_line_that_changed() -> None:
    app = make_app(FakeSource(flows=120, frames=3), resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        snap = app.shown
        assert snap is not None
        header = app.query_one(StatusHeader)
        before = body(pilot)[1]
        repainted = header.lines_repainted
        await redraw(pilot, snap)  # the same: nothing to repaint
        assert header.lines_repainted == repainted
        assert body(pilot)[1] == before
        rx = snap.rx_bps * 3 + 1e6
        await redraw(pilot, replace(snap, rx_bps=rx))
        after = body(pilot)[1]
        assert header.lines_repainted - repainted == 1
        assert f"rx {fmt.rate(rx)}" in after[0] and f"rx {fmt.rate(snap.rx_bps)}" in before[0]
        assert after[1:] == before[1:]
        assert after == await from_scratch(pilot)


@pytest.mark.asyncio
async def test_tcp_charts_drawn_when_shown_and_changed() -> None:
    src = FakeSource(flows=120, frames=3, tcp=True)
    app = make_app(src, resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        tcp = app.query_one(TcpHealth)
        assert "RTT distribution (ms)" in screen_text(pilot)  # the charts are on screen
        drawn = tcp.charts_drawn
        assert drawn >= 1
        snap = app.shown
        assert snap is not None
        await redraw(pilot, snap)  # the same data: not drawn again
        assert tcp.charts_drawn == drawn
        src.frames = 4  # a new interval: new retransmit history
        await settle(pilot)
        assert tcp.charts_drawn == drawn + 1
        assert "retransmits (shown rows)" in screen_text(pilot)
    small = make_app(FakeSource(flows=120, frames=3, tcp=True), resolve=False)
    async with small.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert small.query_one(TcpHealth).charts_drawn == 0  # no room: never drawn
        assert "RTT distribution" not in screen_text(pilot)
        assert "TCP health:" in screen_text(pilot)


@pytest.mark.asyncio
async def test_header_follows_a_theme_change() -> None:
    app = make_app(FakeSource(flows=120, frames=3), resolve=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        header = app.query_one(StatusHeader)
        dark = list(header.lines)
        await pilot.press("t")
        await pilot.pause()
        await pilot.pause()
        assert app.theme == "flowtop-light"
        assert header.lines != dark  # same text, other styles
        assert [line.plain for line in header.lines] == [line.plain for line in dark]
        assert header.lines == list(header.render().split("\n"))  # the new theme's


def header_cells(pilot: Pilot[None], header: StatusHeader) -> list[list[tuple[str, object]]]:
    """The header's lines as the terminal shows them: character and style
    without the mouse meta (Textual's path adds offsets, ours does not)."""
    strips = pilot.app.screen._compositor.render_strips()
    y0 = header.region.y
    out = []
    for strip in strips[y0 : y0 + header.region.height]:
        line: list[tuple[str, object]] = []
        for seg in strip:
            s = seg.style
            look = None if s is None else (s.color, s.bgcolor, s.bold, s.dim, s.italic, s.reverse)
            line.extend((ch, look) for ch in seg.text)
        out.append(line)
    return out


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_header_lines_are_textuals(size: tuple[int, int]) -> None:
    """Each header line, drawn from Rich's segments when it fits, is what
    Textual's Visual path draws on the screen: every theme, paused, with
    problems, degraded TCP, and a filter too long for the width (that line
    takes Textual's path, which breaks it at a word)."""
    src = FakeSource(flows=120, frames=3, tcp=True, problems={"flow_map_full": 12})
    app = make_app(src, resolve=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        header = app.query_one(StatusHeader)
        snap = app.shown
        assert snap is not None
        fitted = 0
        for theme in app.theme_names:
            app.theme = theme
            for paused in (False, True):
                for query in (snap.query, replace(snap.query, filter="udp or port 53 " * 4)):
                    header.set(replace(snap, query=query), paused, app.display_opts)
                    await pilot.pause()
                    ours = header_cells(pilot, header)
                    fitted += sum(line.cell_len <= header.size.width for line in header.lines)
                    # The same lines through Textual's path only.
                    header._line_strip = lambda y, *_: header.visual_strip(y)  # type: ignore[method-assign]
                    header._drawn.clear()
                    header.refresh()
                    await pilot.pause()
                    assert header_cells(pilot, header) == ours, (theme, paused, query.filter)
                    del header._line_strip
                    header._drawn.clear()
        assert fitted >= len(app.theme_names) * 4  # the fast path drew (the rates line at least)
        assert "DEGRADED" in screen_text(pilot) and "flow_map_full 12" in screen_text(pilot)
