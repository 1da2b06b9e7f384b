"""The header: host, interfaces, totals, flows, collector health, interval, PAUSED;
while listening (--listen) a third line: the exporters, busiest first.

Drawn line by line (Line API): `set()` builds the two lines and repaints only
a line whose text or styles changed; the second line (collector, shown,
grouping, interfaces) seldom does, the first (rates) about every second.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.visual import Visual, visualize
from textual.widget import Widget

from flowtop.core.model import PROBLEM_COUNTERS
from flowtop.kernel import counters
from flowtop.query.types import Snapshot
from flowtop.sanitize import clean
from flowtop.tui import format as fmt
from flowtop.tui.format import Display

# What the header names when it is not 0: the problems, and the packets the
# full flow maps lost (a count of packets, not of events: not in problems).
PROBLEMS = (*PROBLEM_COUNTERS, *counters.SHOWN)


class StatusHeader(Widget):
    """Two lines of plain Text spans; styles come from the component classes (theme)."""

    COMPONENT_CLASSES = {
        "status--title",
        "status--label",
        "status--value",
        "status--ok",
        "status--warn",
        "status--paused",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot: Snapshot | None = None
        self.paused = False
        self.display_opts = Display()
        self.theme_name = ""
        self.lines: list[Text] = []  # what each line shows
        self.lines_repainted = 0  # lines set() asked to repaint (tests, bench)
        self._restyle = False
        self._styles_of: dict[str, Style] = {}  # component styles by name (_style)
        # Per line: what its strip was drawn from (text, width, style) and the strip.
        self._drawn: dict[int, tuple[tuple[Text, int, Style], Strip]] = {}

    def set(self, snapshot: Snapshot | None, paused: bool, display: Display) -> None:
        self.snapshot, self.paused, self.display_opts = snapshot, paused, display
        lines = self._split()
        if len(lines) != len(self.lines):
            # Listening adds the exporters' line: the header grows to it (2 otherwise).
            height = max(2, len(lines))
            if self.styles.height is None or self.styles.height.value != height:
                self.styles.height = height
            self.lines = lines
            self.lines_repainted += len(lines)
            self.refresh()
            return
        width = self.size.width
        changed = [
            y for y, (new, old) in enumerate(zip(lines, self.lines, strict=True)) if new != old
        ]
        self.lines = lines
        self.lines_repainted += len(changed)
        if changed:
            self.refresh(*(Region(0, y, width, 1) for y in changed))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._restyle = True  # a theme change: the lines carry the old styles
        self._styles_of.clear()
        self.refresh()

    def _split(self) -> list[Text]:
        lines = list(self.render().split("\n"))
        for line in lines:  # what split() does not carry over
            line.no_wrap, line.end = True, ""
        return lines

    def render_line(self, y: int) -> Strip:
        if self._restyle:  # here, not in notify_style_update: the styles are ready now
            self._restyle = False
            self._styles_of.clear()  # what set() read in between may be the old theme's
            self.lines = self._split() if self.lines else []
        width = self.size.width
        base = self.visual_style.rich_style
        if y >= len(self.lines):
            return Strip.blank(width, base)
        line = self.lines[y]
        drawn = self._drawn.get(y)
        if drawn is not None and drawn[0] == (line, width, base):
            return drawn[1]
        strip = self._line_strip(y, line, width, base)
        self._drawn[y] = ((line, width, base), strip)
        return strip

    def _line_strip(self, y: int, line: Text, width: int, base: Style) -> Strip:
        """Line y as Textual's Visual path draws the Text, straight from Rich's
        segments when it fits: each span's style over the widget's, then the
        background to the end. That path cost about 1 ms a line, and the
        rates line changes every second. A line too long for the width takes
        Textual's path (it breaks it at a word). tests/tui/test_repaint.py
        compares both."""
        if line.cell_len > width:
            return self.visual_strip(y)
        console = self.app.console
        segments = [
            Segment(s.text, base + s.style if s.style else base)
            for s in line.render(console, end="")
            if s.text
        ]
        return Strip(segments).extend_cell_length(width, Style(bgcolor=base.bgcolor))

    def visual_strip(self, y: int) -> Strip:
        """Line y as Textual's Visual path draws it (tests compare it with ours)."""
        visual = visualize(self, self.lines[y])
        return Visual.to_strips(self, visual, self.size.width, 1, self.visual_style)[0]

    def _style(self, name: str) -> Style:
        # Once per theme or CSS change, not per refresh: it walks the ancestors' styles.
        style = self._styles_of.get(name)
        if style is None:
            style = self.get_component_rich_style(f"status--{name}", partial=True)
            self._styles_of[name] = style
        return style

    def render(self) -> Text:
        """Both lines, with the styles of the current theme."""
        s = self.snapshot
        label, value = self._style("label"), self._style("value")
        t = Text(no_wrap=True, overflow="ellipsis", end="")
        t.append("flowtop ", self._style("title"))
        if self.paused:
            t.append(" PAUSED ", self._style("paused"))
            t.append(" ")
        if s is None:
            t.append("waiting for the first interval…", label)
            return t
        d = self.display_opts
        t.append(clean(s.host, 40), value)
        t.append("  rx ", label)
        t.append(self._rate(s.rx_bps, d), value)
        t.append("  tx ", label)
        t.append(self._rate(s.tx_bps, d), value)
        t.append("  flows ", label)
        t.append(fmt.count(s.active_flows), value)
        if s.cross_zone_bps is not None:  # zones configured (labels' zone=, a host zone)
            # Before the interval: on a narrow terminal the interval is what goes.
            t.append("  cross-zone ", label)
            t.append(self._rate(s.cross_zone_bps, d), value)
        t.append("  every ", label)
        t.append(fmt.interval(s.interval), value)
        t.append("\n")
        t.append("collector ", label)
        if s.problems:
            bad = [f"{k} {fmt.count(v)}" for k, v in s.health.items() if v and k in PROBLEMS]
            t.append(
                f" {', '.join(bad) or f'problems {fmt.count(s.problems)}'} ", self._style("warn")
            )
        else:
            t.append("ok", self._style("ok"))
        if s.tcp_health:
            worst = s.tcp_health[0]
            t.append("  network ", label)
            if worst.degraded:
                t.append(f" DEGRADED: {clean(worst.reason, 80)} ", self._style("warn"))
            else:
                t.append("healthy", self._style("ok"))
        t.append("  shown ", label)
        t.append(f"{len(s.rows)}/{fmt.count(s.matched)}", value)
        t.append("  by ", label)
        t.append(s.query.group_by, value)
        if s.query.filter:
            t.append("  filter ", label)
            t.append(clean(s.query.filter, 60), value)
        names = ", ".join(clean(i.name, 24) for i in s.interfaces)
        if names:
            t.append("  on ", label)
            t.append(names, value)
        if s.exporters:
            t.append("\n")
            self._exporters(t, s, label, value)
        return t

    def _exporters(self, t: Text, s: Snapshot, label: Style, value: Style) -> None:
        """The third line while listening: exporters busiest first, as many as fit."""
        room = (self.size.width or 80) - len("exporters 9999  +9999 more")
        t.append(f"exporters {len(s.exporters)}", label)
        used = 0
        for n, e in enumerate(s.exporters):
            parts = [("  ", label), (f"{e.address} {fmt.count(e.records_per_s)}/s", value)]
            if e.lost:
                parts.append((f" lost {fmt.count(e.lost)}", self._style("warn")))
            if e.estimated:
                parts.append((" estimated", label))
            size = sum(len(p) for p, _ in parts)
            if n and used + size > room:
                t.append(f"  +{len(s.exporters) - n} more", label)
                return
            used += size
            for text, style in parts:
                t.append(text, style)

    @staticmethod
    def _rate(bps: float, d: Display) -> str:
        return fmt.rate(bps, d.bits)
