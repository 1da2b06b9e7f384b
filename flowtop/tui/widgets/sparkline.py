"""Textual's Sparkline bars, drawn without a Fraction, a Color and a Style per bar.

Textual's renderable partitions the data with Fraction arithmetic and blends a
new Color (and Style) for every bar: about 1.6 ms for a 60-cell line, and the
interface panel (widgets/interfaces.py) draws two of them per interface every
second. `Bars` yields the same segments with integer partitions and one Style
per distinct colour. tests/tui/test_repaint.py compares it with Textual's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.renderables.sparkline import Sparkline as SparklineRenderable


@lru_cache(maxsize=4096)
def _colour(red: int, green: int, blue: int) -> Style:
    return Style.from_color(Color.from_rgb(red, green, blue))


class Bars(SparklineRenderable[float]):
    """The same bars as textual.renderables.sparkline.Sparkline, computed cheaply."""

    def _partitions(self, data: Sequence[float], buckets: int) -> Iterator[Sequence[float]]:
        # Fraction(n, buckets) * i truncated == n * i // buckets (non-negative ints).
        n = len(data)
        for i in range(buckets):
            part = data[n * i // buckets : n * (i + 1) // buckets]
            if part:
                yield part

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.segments(console, options)

    def segments(
        self, console: Console, options: ConsoleOptions, under: Style | None = None
    ) -> Iterator[Segment]:
        """The bars, line by line ("\\n" between lines); with `under`, each
        bar's style is `under + its style`, as a widget's style is applied to them."""
        width = self.width or options.max_width
        height = self.height or 1
        data = list(self.data)
        low_colour, high_colour = self.min_color.color, self.max_color.color
        if (
            len(data) < 2
            or low_colour is None
            or high_colour is None
            or low_colour.triplet is None
            or high_colour.triplet is None
        ):
            for segment in super().__rich_console__(console, options):
                assert isinstance(segment, Segment)  # what Textual's renderable yields
                if under:
                    segment = Segment(segment.text, under + segment.style, None)
                yield segment
            return
        r1, g1, b1 = low_colour.triplet
        dr, dg, db = (
            c2 - c1 for c1, c2 in zip(low_colour.triplet, high_colour.triplet, strict=True)
        )
        levels = len(self.BARS)
        top_level = levels * height - 1
        minimum, maximum = min(data), max(data)
        extent = maximum - minimum or 1
        summary = self.summary_function
        # Per bucket once: its bar level and colour (Textual works them out per bar).
        bars: list[tuple[int, Style | None]] = []
        for part in self._partitions(data, width):
            ratio = (summary(part) - minimum) / extent
            colour = _colour(int(r1 + dr * ratio), int(g1 + dg * ratio), int(b1 + db * ratio))
            bars.append((int(ratio * top_level), under + colour if under else colour))
        blank, newline = Segment(" ", under or None), Segment("\n", under or None)
        step = len(bars) / width
        for line in reversed(range(height)):
            low, high = line * levels, (line + 1) * levels
            index = 0.0  # a float sum, as Textual's (the same buckets are picked)
            for _ in range(width):
                level, style = bars[int(index)]
                index += step
                if level < low:
                    yield blank
                elif level >= high:
                    yield Segment("█", style)
                else:
                    yield Segment(self.BARS[level % levels], style)
            if line > 0:
                yield newline
