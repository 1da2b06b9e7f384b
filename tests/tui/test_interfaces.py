"""The interfaces panel, one widget, draws what Textual's own widgets drew.

The reference is the panel as it was built from stock Textual widgets (a
VerticalScroll of Horizontal lines, each a Label for the name, two padded
Labels for the rates and two textual Sparklines), with that layout's CSS; the
screen cells (character, colour, background, bold) of both must be equal, at
odd and even widths, with names shorter than, as long as and longer than the
name column, with more interfaces than lines (a scrollbar, then scrolled), in
every theme. Then, in the live view: the rates and the bars are the
snapshot's and the history's, and a refresh repaints the panel once.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.pilot import Pilot
from textual.widgets import Label
from textual.widgets import Sparkline as TextualSparkline

import flowtop.tui
from flowtop.query.types import InterfaceRow
from flowtop.sanitize import clean
from flowtop.tui import format as fmt
from flowtop.tui import themes
from flowtop.tui.format import Display
from flowtop.tui.history import RateHistory
from flowtop.tui.widgets.interfaces import InterfacesPanel
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, screen_text, settle

# The panel's layout as six widgets a line (flowtop.tcss before it was one widget).
REFERENCE_CSS = """
#ref { height: 3; padding: 0 1; scrollbar-size-vertical: 1; }
.iface-line { height: 1; }
.iface-name { width: 12; color: $foreground; text-style: bold; }
.iface-rate { width: 14; color: $flowtop-muted; padding: 0 1; }
.iface-spark { width: 1fr; height: 1; }
.iface-rx > .sparkline--max-color { color: $flowtop-rx; }
.iface-rx > .sparkline--min-color { color: $flowtop-rx 40%; }
.iface-tx > .sparkline--max-color { color: $flowtop-tx; }
.iface-tx > .sparkline--min-color { color: $flowtop-tx 40%; }
"""
NAMES = ["eth0", "exactly12chr", "a-much-longer-interface-name", "lo", "wg0"]


def rows(n: int) -> list[InterfaceRow]:
    return [
        InterfaceRow(name, i + 2, 1e3 * (i + 1) ** 5, 7.7e5 * (i + 1), 0, 0, 10**9 * i, 3, 0, 0)
        for i, name in enumerate(NAMES[:n])
    ]


def history_of(interfaces: list[InterfaceRow], points: int) -> RateHistory:
    h = RateHistory()
    for i, r in enumerate(interfaces):
        # Zero or one point (Textual's fallbacks), then a shape of its own each.
        n = (0, 1, points, points, points)[i]
        h.rx[r.name] = deque(float((k * 7919 + i * 31) % 101) for k in range(n))
        h.tx[r.name] = deque(float((k * k + i) % 37) for k in range(n))
    return h


def rate_texts(r: InterfaceRow, display: Display) -> tuple[str, str]:
    if display.cumulative:
        return "rx " + fmt.volume(r.rx_bytes, display.bits), "tx " + fmt.volume(
            r.tx_bytes, display.bits
        )
    return "rx " + fmt.rate(r.rx_bps, display.bits), "tx " + fmt.rate(r.tx_bps, display.bits)


class Both(App[None]):
    CSS_PATH = Path(flowtop.tui.__file__).with_name("flowtop.tcss")  # the live view's rules
    CSS = REFERENCE_CSS

    def __init__(self, n: int, display: Display) -> None:
        super().__init__()
        for t in themes.load_themes():
            self.register_theme(t)
        self.theme = "flowtop-dark"
        self.interfaces = rows(n)
        self.history = history_of(self.interfaces, 60)
        self.display_opts = display

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="ref"):
            for r in self.interfaces:
                rx, tx = rate_texts(r, self.display_opts)
                with Horizontal(classes="iface-line"):
                    yield Label(
                        Text(clean(r.name, 64), no_wrap=True, overflow="ellipsis"),
                        classes="iface-name",
                    )
                    yield Label(Text(rx, no_wrap=True), classes="iface-rate")
                    yield TextualSparkline(
                        list(self.history.rx[r.name]), classes="iface-spark iface-rx"
                    )
                    yield Label(Text(tx, no_wrap=True), classes="iface-rate")
                    yield TextualSparkline(
                        list(self.history.tx[r.name]), classes="iface-spark iface-tx"
                    )
        yield InterfacesPanel(id="interfaces")

    def on_mount(self) -> None:
        self.query_one(InterfacesPanel).set(
            self.interfaces, self.history, self.display_opts, max_lines=3
        )


def cells(pilot: Pilot[Any], y0: int, height: int) -> list[list[tuple[str, Any]]]:
    """The screen's cells of lines y0.. y0+height-1: character, colour,
    background, bold (what a terminal shows; not the mouse meta)."""
    strips = pilot.app.screen._compositor.render_strips()
    out = []
    for strip in strips[y0 : y0 + height]:
        line = []
        for seg in strip:
            s = seg.style
            look = (s.color, s.bgcolor, bool(s.bold)) if s is not None else None
            line.extend((ch, look) for ch in seg.text)
        out.append(line)
    return out


@pytest.mark.asyncio
@pytest.mark.parametrize("width", [80, 101, 160])
@pytest.mark.parametrize("n", [2, 5])
async def test_panel_draws_what_textuals_widgets_drew(width: int, n: int) -> None:
    app = Both(n, Display(bits=True))
    async with app.run_test(size=(width, 6)) as pilot:
        await pilot.pause()
        for theme in ("flowtop-dark", "flowtop-light", "flowtop-high-contrast"):
            app.theme = theme
            await pilot.pause()
            ref, ours = cells(pilot, 0, 3), cells(pilot, 3, 3)
            assert ours == ref, theme
            text = ["".join(ch for ch, _ in line) for line in ours]
            for r, line in zip(app.interfaces, text, strict=False):
                rx, tx = rate_texts(r, app.display_opts)
                assert rx in line and tx in line, line
        if n > 3:  # more interfaces than lines: both scroll
            for widget in (app.query_one("#ref"), app.query_one(InterfacesPanel)):
                widget.scroll_to(y=2, animate=False)
            await pilot.pause()
            ref, ours = cells(pilot, 0, 3), cells(pilot, 3, 3)
            assert ours == ref
            assert "a-much-longe rx" in "".join(ch for ch, _ in ours[0])  # the long name, cut


@pytest.mark.asyncio
async def test_panel_draws_totals_as_labels_did() -> None:
    app = Both(3, Display(cumulative=True, bits=False))
    async with app.run_test(size=(90, 6)) as pilot:
        await pilot.pause()
        assert cells(pilot, 3, 3) == cells(pilot, 0, 3)


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_live_panel_shows_the_snapshots_rates_and_repaints_once(
    size: tuple[int, int],
) -> None:
    source = FakeSource(flows=60, frames=4)
    app = make_app(source, resolve=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        panel = app.query_one(InterfacesPanel)
        shown = app.shown
        assert shown is not None
        lines = screen_text(pilot).splitlines()
        for i, r in enumerate(shown.interfaces):
            rx, tx = rate_texts(r, app.display_opts)
            assert rx in lines[2 + i] and tx in lines[2 + i], lines[2 + i]
            assert r.name in lines[2 + i]
            assert panel.lines[i].rx_data == tuple(app.history.rx[r.name])
        # One more interval: the rates and bars move, the panel repaints once;
        # the same snapshot again repaints nothing.
        before = panel.lines_repainted
        source.frames = 5
        await settle(pilot)
        assert app.shown is not None and app.shown.time > shown.time
        assert panel.lines_repainted == before + 1
        app._draw()
        await pilot.pause()
        assert panel.lines_repainted == before + 1
