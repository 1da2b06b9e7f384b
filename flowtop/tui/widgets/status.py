"""The header: host, interfaces, totals, flows, collector health, interval, PAUSED."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
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

    def set(self, snapshot: Snapshot | None, paused: bool, display: Display) -> None:
        self.snapshot, self.paused, self.display_opts = snapshot, paused, display
        self.refresh()

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"status--{name}", partial=True)

    def render(self) -> Text:
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
        return t

    @staticmethod
    def _rate(bps: float, d: Display) -> str:
        return fmt.rate(bps, d.bits)
