"""`g`: pick what rows are grouped by (a letter or the cursor and Enter)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

# (group, hot key, description)
CHOICES = (
    ("conversation", "v", "conversation (a connection, both ways)"),
    ("flow", "f", "flow (5-tuple, interface, direction)"),
    ("src", "s", "source address"),
    ("dst", "d", "destination address"),
    ("pair", "p", "source and destination pair"),
    ("port", "o", "service / port"),
    ("proto", "r", "protocol"),
    ("iface", "i", "interface and direction"),
    ("asn", "a", "remote AS (needs an ASN database)"),
    ("country", "c", "remote country (needs a City/Country database)"),
    ("label", "l", "remote CIDR label (needs --labels)"),
    ("process", "P", "process (command name, all its pids)"),
    ("service", "S", "systemd service of the socket's owner"),
    ("container", "C", "container of the socket's owner"),
    ("name", "n", "name from the wire (DNS answer, TLS SNI, HTTP Host)"),
    ("exporter", "e", "exporter (received flows, --listen)"),
    ("zone", "z", "zone pair: source zone→destination zone (labels' zone=, host zone)"),
)


class GroupByScreen(ModalScreen[str | None]):
    BINDINGS = [
        Binding("escape", "dismiss_none", "Cancel"),
        *(Binding(k, f"pick('{g}')", d, show=False) for g, k, d in CHOICES),
    ]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="groupby-box"):
            yield Static("Group rows by", id="groupby-title")
            yield OptionList(
                *(Option(Text(f"{k}  {d}"), id=g) for g, k, d in CHOICES), id="groupby-list"
            )

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = [g for g, _, _ in CHOICES].index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_pick(self, group: str) -> None:
        self.dismiss(group)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
