"""The monitors panel (key `m`): each configured monitor ([[monitor]];
query/monitors.py, Snapshot.monitors) on one line: name, local->remote (↑)
and remote->local (↓) rates, RTT p50/p95, retransmit ratio, verdict and reason.

Hidden until asked for; one line when no monitor is configured. Names and
reasons are cleaned (the panel is a terminal).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from flowtop.query.monitors import MonitorStatus
from flowtop.sanitize import clean
from flowtop.tui import format as fmt

NONE = "Monitors: none configured ([[monitor]] tables in the config file)"
NAME_WIDTH = 10


def monitor_line(m: MonitorStatus, bits: bool = True) -> str:
    """'db         ↑ 1.20Mb/s ↓  30.0kb/s  rtt 1.20ms/3.40ms  retr 0.12%  healthy'
    (↑ local->remote, ↓ remote->local); the reason last, cut on a narrow terminal."""
    rtt = (
        f"rtt {fmt.rtt(m.rtt_p50_us)}/{fmt.rtt(m.rtt_p95_us)}"
        if m.rtt_p50_us is not None
        else "rtt -"
    )
    retr = f"retr {m.retransmit_ratio * 100:.2f}%" if m.retransmit_ratio is not None else "retr -"
    verdict = f"{m.verdict.upper()}: {clean(m.reason, 120)}" if m.degraded else m.verdict
    up, down = fmt.rate(m.local_to_remote_bps, bits), fmt.rate(m.remote_to_local_bps, bits)
    return (
        f"{clean(m.name, NAME_WIDTH):<{NAME_WIDTH}} ↑{up:>9} ↓{down:>9}  {rtt}  {retr}  {verdict}"
    )


def render(monitors: Sequence[MonitorStatus], lines: int, bits: bool = True) -> str:
    """The panel's text: a head line, then one line per monitor (lines in all)."""
    if not monitors:
        return NONE
    bad = sum(1 for m in monitors if m.degraded)
    head = f"Monitors: {len(monitors)}, " + (f"{bad} degraded" if bad else "all healthy")
    body = [monitor_line(m, bits) for m in monitors]
    shown = body[: max(0, lines - 1)]
    if len(body) > len(shown):
        head += f" ({len(body) - len(shown)} not shown)"
    return "\n".join([head, *shown])


class MonitorsPanel(Static):
    """Toggled by MainScreen (action_monitors); set() on every snapshot while shown."""

    DEFAULT_CSS = """
    MonitorsPanel {
        height: auto; max-height: 11; padding: 0 1; color: $text-muted;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    def set(self, monitors: Sequence[MonitorStatus], lines: int = 6, bits: bool = True) -> None:
        # One line per monitor: cut at the width, never wrapped.
        self.update(Text(render(monitors, lines, bits), no_wrap=True, overflow="ellipsis"))
