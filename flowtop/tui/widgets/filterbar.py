"""The `/` filter line: an Input and, under it, the parse error when there is one."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from flowtop.query.filterexpr import FilterError, parse
from flowtop.sanitize import clean

PLACEHOLDER = "filter, e.g. host 10.0.0.1 and not port 22, iface eth* and in"


class FilterBar(Vertical):
    """Enter applies (when it parses), Escape closes and keeps the previous filter."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=True)]

    @dataclass
    class Applied(Message):
        """A filter expression that parsed."""

        text: str

    @dataclass
    class Closed(Message):
        """The bar closed without a change."""

    def compose(self) -> ComposeResult:
        yield Input(placeholder=PLACEHOLDER, id="filter-input", compact=True)
        yield Static("", id="filter-error")

    def open(self, current: str) -> None:
        self.display = True
        self.show_error(None)
        field = self.query_one(Input)
        field.value = current
        field.cursor_position = len(current)
        field.focus()

    def show_error(self, error: str | None) -> None:
        label = self.query_one("#filter-error", Static)
        label.display = error is not None
        label.update(Text(clean(error or "", 200), no_wrap=True, overflow="ellipsis"))

    @on(Input.Submitted, "#filter-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        try:
            parse(text)
        except FilterError as exc:
            self.show_error(str(exc))
            return
        self.show_error(None)
        self.display = False
        self.post_message(self.Applied(text))

    def action_cancel(self) -> None:
        self.show_error(None)
        self.display = False
        self.post_message(self.Closed())
