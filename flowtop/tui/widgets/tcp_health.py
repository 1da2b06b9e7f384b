"""TCP health: RTT distribution and retransmits over time (plotext), or a plain note.

Compact (one line) on small terminals, charts when there is room. Rows carry
`rtt_us`/`retransmits` only once the kernel side measures them; until then the
panel says so instead of drawing empty axes. The charts are drawn only while
shown, and again only when what they plot (or their colours) changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from flowtop.core.tcphealth import HealthGroup
from flowtop.sanitize import clean
from flowtop.tui import format as fmt
from flowtop.tui.history import RateHistory

NO_DATA = "TCP health: no TCP data available (no RTT or retransmit measurements yet)"


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def _group_line(g: HealthGroup) -> str:
    parts = [f"{g.verdict:<8} {g.scope:<9} {clean(g.group, 32)}"]
    if g.rtt_p50_us is not None:
        parts.append(f"p50 {fmt.rtt(g.rtt_p50_us)} p95 {fmt.rtt(g.rtt_p95_us)}")
    if g.rtt_baseline_us:
        parts.append(f"base {fmt.rtt(g.rtt_baseline_us)}")
    if g.retransmit_ratio is not None:
        parts.append(f"retr {g.retransmit_ratio * 100:.2f}%")
    if g.reason:
        parts.append(clean(g.reason, 80))
    return "  ".join(parts)


def summary(history: RateHistory, groups: Sequence[HealthGroup] = (), lines: int = 1) -> str:
    """One line (or up to `lines`): the verdict first, then the worst groups."""
    if groups:
        bad = [g for g in groups if g.degraded]
        head = (
            f"TCP health: {len(bad)} of {len(groups)} degraded: {clean(bad[0].reason, 100)}"
            if bad
            else f"TCP health: healthy ({len(groups)} interfaces and remote groups)"
        )
        return "\n".join([head, *(_group_line(g) for g in groups[: max(0, lines - 1)])])
    if not history.has_tcp:
        return NO_DATA
    rtts = list(history.rtts_us)
    parts = ["TCP health:"]
    if rtts:
        parts.append(
            f"RTT p50 {fmt.rtt(_percentile(rtts, 0.5))}  p90 {fmt.rtt(_percentile(rtts, 0.9))}"
            f"  max {fmt.rtt(max(rtts))} ({len(rtts)} rows)"
        )
    if history.retransmits:
        parts.append(f"  retransmits {fmt.count(history.retransmits[-1][1])} in shown rows")
    return " ".join(parts)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


class TcpHealth(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history: RateHistory | None = None
        self._summary = NO_DATA
        self._plotted: tuple[object, ...] | None = None  # what the charts show
        self.charts_drawn = 0  # times the charts were drawn (tests, bench)

    def compose(self) -> ComposeResult:
        yield Static(Text(NO_DATA, no_wrap=True, overflow="ellipsis"), id="tcp-summary")
        with Horizontal(id="tcp-charts"):
            yield PlotextPlot(id="tcp-rtt")
            yield PlotextPlot(id="tcp-retrans")

    def set(self, history: RateHistory, charts: bool, groups: Sequence[HealthGroup] = ()) -> None:
        self.history = history
        text = summary(history, groups, lines=6 if charts else 1)
        if text != self._summary:
            self._summary = text
            self.query_one("#tcp-summary", Static).update(
                Text(text, no_wrap=True, overflow="ellipsis")
            )
        show = charts and (history.has_tcp or bool(groups))
        self.set_class(show, "-charts")
        if show:
            self._draw()

    def _colour(self, name: str) -> tuple[int, int, int]:
        value = self.app.get_css_variables().get(name, "#808080")
        try:
            return _rgb(value)
        except ValueError:
            return (128, 128, 128)

    def _draw(self) -> None:
        h = self.history
        if h is None:
            return
        rx, tx = self._colour("flowtop-rx"), self._colour("flowtop-tx")
        plotted = (h.rtts_us, tuple(h.retransmits), rx, tx)
        if plotted == self._plotted:
            return
        self._plotted = plotted
        self.charts_drawn += 1
        rtt = self.query_one("#tcp-rtt", PlotextPlot)
        plt = rtt.plt
        plt.clear_data()
        plt.title("RTT distribution (ms)")
        if h.rtts_us:
            plt.hist([v / 1000.0 for v in h.rtts_us], bins=20, color=rx)
        rtt.refresh()
        ret = self.query_one("#tcp-retrans", PlotextPlot)
        plt = ret.plt
        plt.clear_data()
        plt.title("retransmits (shown rows)")
        if h.retransmits:
            t0 = h.retransmits[-1][0]
            xs = [t - t0 for t, _ in h.retransmits]
            ys = [float(v) for _, v in h.retransmits]
            plt.plot(xs, ys, marker="braille", color=tx)
            plt.xlabel("seconds")
        ret.refresh()
