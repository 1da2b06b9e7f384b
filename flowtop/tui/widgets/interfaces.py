"""One line per interface: name, rx rate, rx sparkline, tx rate, tx sparkline (60 s).

Per refresh a line repaints what moved: a rate label when its text changed (no
layout: the labels have a fixed width and one line), a sparkline when its data
did (`Sparkline.data` is reactive and compares).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label

from flowtop.query.types import InterfaceRow
from flowtop.sanitize import clean
from flowtop.tui import format as fmt
from flowtop.tui.format import Display
from flowtop.tui.history import RateHistory
from flowtop.tui.widgets.plainlabel import PlainLabel
from flowtop.tui.widgets.sparkline import Sparkline


class InterfaceLine(Horizontal):
    def __init__(self, name: str) -> None:
        super().__init__(classes="iface-line")
        self.iface = name
        self._shown = ("", "")
        self._rx_rate = PlainLabel(classes="iface-rate iface-rx-rate")
        self._rx = Sparkline([], classes="iface-spark iface-rx")
        self._tx_rate = PlainLabel(classes="iface-rate iface-tx-rate")
        self._tx = Sparkline([], classes="iface-spark iface-tx")

    def compose(self) -> ComposeResult:
        yield Label(
            Text(clean(self.iface, 64), no_wrap=True, overflow="ellipsis"), classes="iface-name"
        )
        yield from (self._rx_rate, self._rx, self._tx_rate, self._tx)

    def set(self, row: InterfaceRow, history: RateHistory, display: Display) -> None:
        if display.cumulative:
            rx = "rx " + fmt.volume(row.rx_bytes, display.bits)
            tx = "tx " + fmt.volume(row.tx_bytes, display.bits)
        else:
            rx = "rx " + fmt.rate(row.rx_bps, display.bits)
            tx = "tx " + fmt.rate(row.tx_bps, display.bits)
        if (rx, tx) != self._shown:
            self._shown = (rx, tx)
            # Fixed size (CSS width, one line): repaint only, no layout of the screen.
            self._rx_rate.show(rx)
            self._tx_rate.show(tx)
        self._rx.data = list(history.rx.get(row.name, ()))
        self._tx.data = list(history.tx.get(row.name, ()))


class InterfacesPanel(VerticalScroll):
    """Lines are mounted when an interface first appears and removed when it goes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, can_focus=False)
        self._lines: dict[str, InterfaceLine] = {}
        self._latest: tuple[Sequence[InterfaceRow], RateHistory, Display] | None = None

    def set(
        self,
        rows: Sequence[InterfaceRow],
        history: RateHistory,
        display: Display,
        max_lines: int = 6,
    ) -> None:
        self._latest = (rows, history, display)
        names = [r.name for r in rows]
        for gone in set(self._lines) - set(names):
            self._lines.pop(gone).remove()
        new = [InterfaceLine(n) for n in names if n not in self._lines]
        if new:
            for line in new:
                self._lines[line.iface] = line
            self.mount_all(new)
            self.call_after_refresh(self._fill)
        else:
            self._fill()
        self.styles.height = max(1, min(len(rows), max_lines))

    def _fill(self) -> None:
        """Fills the lines with the newest figures (also when called after a mount)."""
        if self._latest is None:
            return
        rows, history, display = self._latest
        for r in rows:
            line = self._lines.get(r.name)
            if line is not None and line.is_mounted:
                line.set(r, history, display)
