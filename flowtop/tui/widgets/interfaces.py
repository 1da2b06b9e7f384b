"""One line per interface: name, rx rate, rx sparkline, tx rate, tx sparkline (60 s).

One widget draws every line (Line API), each line straight from its
segments: the name cut to 12 cells, each rate in 14 (a cell of padding each
side), the two sparklines sharing the rest as two `1fr` columns would
(`Bars`, the same bars as Textual's Sparkline). It looks as the six widgets a
line was before (a Horizontal of a Label, two labels and two Sparklines:
tests/tui/test_interfaces.py compares the two), but a refresh renders one
widget instead of thirteen at two interfaces: most of what the panel cost was
Textual's per-widget work (styles, background walk, line filters), not the
bars. A line is built again only when its text, bars, width or the styles
change, and the panel repaints only when a visible line did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from flowtop.query.types import InterfaceRow
from flowtop.sanitize import clean
from flowtop.tui import format as fmt
from flowtop.tui.format import Display
from flowtop.tui.history import RateHistory
from flowtop.tui.widgets.sparkline import Bars

NAME_WIDTH = 12  # cells: the name, cut to fit
RATE_WIDTH = 14  # cells: "rx 12.3 Mb/s" and a cell of padding each side
FIXED = NAME_WIDTH + 2 * RATE_WIDTH  # the rest goes to the two sparklines


class _Line(NamedTuple):
    """What one interface's line shows."""

    name: str
    rx: str  # rate (or total) text
    tx: str
    rx_data: tuple[float, ...]  # the sparklines' points
    tx_data: tuple[float, ...]


class _Look(NamedTuple):
    """The styles a line is drawn with (worked out once per theme or CSS change)."""

    base: Style  # the panel's own style: what the bars lie on
    blank: Style  # padding: the background alone (as a widget's padding is)
    name: Style
    rate: Style
    rx: tuple[Color, Color]  # sparkline min and max colours
    tx: tuple[Color, Color]


def spark_widths(width: int) -> tuple[int, int]:
    """The two sparklines' widths in a line of `width` cells, as Textual's
    horizontal layout gives two `1fr` columns (the first rounded down)."""
    rest = max(0, width - FIXED)
    return rest // 2, rest - rest // 2


class InterfacesPanel(ScrollView, can_focus=False):
    """The interfaces' lines, in the snapshot's order; scrolls beyond its height."""

    COMPONENT_CLASSES = {
        "interfaces--name",
        "interfaces--rate",
        "interfaces--rx-min",
        "interfaces--rx-max",
        "interfaces--tx-min",
        "interfaces--tx-max",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[_Line] = []  # what each line shows
        self.lines_repainted = 0  # panel repaints set() asked for (tests, bench)
        self._look: _Look | None = None
        self._strips: dict[int, tuple[tuple[object, ...], Strip]] = {}  # line -> (drawn, strip)

    def set(
        self,
        rows: Sequence[InterfaceRow],
        history: RateHistory,
        display: Display,
        max_lines: int = 6,
    ) -> None:
        lines = [self._line(r, history, display) for r in rows]
        height = max(1, min(len(rows), max_lines))
        if self.styles.height is None or self.styles.height.value != height:
            self.styles.height = height
        if len(lines) != len(self.lines):
            self.virtual_size = Size(0, len(lines))
        if lines != self.lines:
            self.lines = lines
            self.lines_repainted += 1
            self.refresh()

    @staticmethod
    def _line(row: InterfaceRow, history: RateHistory, display: Display) -> _Line:
        if display.cumulative:
            rx = "rx " + fmt.volume(row.rx_bytes, display.bits)
            tx = "tx " + fmt.volume(row.tx_bytes, display.bits)
        else:
            rx = "rx " + fmt.rate(row.rx_bps, display.bits)
            tx = "tx " + fmt.rate(row.tx_bps, display.bits)
        return _Line(
            row.name,
            rx,
            tx,
            tuple(history.rx.get(row.name, ())),
            tuple(history.tx.get(row.name, ())),
        )

    # -- painting ---------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._look = None  # a theme or CSS change
        self._strips.clear()

    def _styles(self) -> _Look:
        if self._look is None:
            base = self.visual_style.rich_style
            _, background = self.background_colors

            def colour(name: str) -> Color:
                # As Textual's Sparkline: the component colour over the background.
                c = background + self.get_component_styles(f"interfaces--{name}").color
                return c.rich_color

            self._look = _Look(
                base=base,
                blank=Style(bgcolor=base.bgcolor),
                name=base + self.get_component_rich_style("interfaces--name", partial=True),
                rate=base + self.get_component_rich_style("interfaces--rate", partial=True),
                rx=(colour("rx-min"), colour("rx-max")),
                tx=(colour("tx-min"), colour("tx-max")),
            )
        return self._look

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = y + self.scroll_offset.y
        look = self._styles()
        if not 0 <= index < len(self.lines):
            return Strip.blank(width, look.blank)
        line = self.lines[index]
        drawn = (line, width, look)
        kept = self._strips.get(index)
        if kept is not None and kept[0] == drawn:
            return kept[1]
        strip = self._draw(line, width, look)
        self._strips[index] = (drawn, strip)
        return strip

    def _draw(self, line: _Line, width: int, look: _Look) -> Strip:
        # Cut, not ellipsised: what the Label the name was in drew.
        name = Text(clean(line.name, 64), no_wrap=True)
        name.truncate(NAME_WIDTH, overflow="crop")
        rx_width, tx_width = spark_widths(width)
        segments = [Segment(name.plain, look.name)]
        if name.cell_len < NAME_WIDTH:
            segments.append(Segment(" " * (NAME_WIDTH - name.cell_len), look.blank))
        for text, data, colours, spark in (
            (line.rx, line.rx_data, look.rx, rx_width),
            (line.tx, line.tx_data, look.tx, tx_width),
        ):
            shown = text[: RATE_WIDTH - 2]
            segments.append(Segment(" ", look.blank))
            segments.append(Segment(shown, look.rate))
            segments.append(Segment(" " * (RATE_WIDTH - 1 - len(shown)), look.blank))
            if spark:
                segments.extend(self._bars(data, spark, colours, look.base))
        return Strip(segments).crop_extend(0, width, look.blank).simplify()

    def _bars(
        self, data: Sequence[float], width: int, colours: tuple[Color, Color], base: Style
    ) -> list[Segment]:
        low, high = colours
        bars = Bars(list(data), width=width, height=1, min_color=low, max_color=high)
        console = self.app.console
        return list(bars.segments(console, console.options, under=base))
