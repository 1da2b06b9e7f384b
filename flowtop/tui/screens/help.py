"""`?`: every key of the main view, built from the bindings so it cannot go stale."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

FILTER_HELP = (
    "Filter terms: host A, src A, dst A, net CIDR, src net CIDR, dst net CIDR, port P,\n"
    "sport P, dport P, proto tcp|udp|icmp|icmpv6|sctp|N, tcp, udp, iface NAME (glob),\n"
    "in, out, vlan N; socket owners: proc NAME (command name, glob), pid N,\n"
    "user NAME|UID, service GLOB, container ID-PREFIX, unattributed;\n"
    "names from the wire: name GLOB (either end, case-insensitive);\n"
    "drops on this box: dropped, drop REASON (NETFILTER_DROP, NO_SOCKET, ..., glob);\n"
    "received flows (--listen): exporter A|CIDR, ifindex N (the exporter's own);\n"
    "zones: [src|dst] zone Z (glob), cross-zone; monitor NAME ([[monitor]], m: panel);\n"
    "combine with and/&&, or/||, not/!, parentheses. On conversations a row is shown\n"
    "when any of its flows matches, with the matching flows' figures."
)
CONVERSATION_HELP = (
    "Conversations (g v, the default): one row per connection, Client and Server ends;\n"
    "↑ is client->server and ↓ server->client on every row. Role: client (this host\n"
    "is the client: ↑ = tx), server (↑ = rx), fwd (forwarded; Iface IN→OUT).\n"
    "Each direction is counted once (its ingress legs, else its egress legs); g f\n"
    "shows every leg and direction as flows."
)


def _keys(b: BindingType) -> tuple[str, str] | None:
    if isinstance(b, Binding):
        return (b.key_display or b.key, b.description)
    if len(b) >= 3:
        return (b[0], b[2])
    return None


def bindings_table(groups: Iterable[tuple[str, Iterable[BindingType]]]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for title, bindings in groups:
        table.add_row(Text(title, style="underline"), "")
        seen: set[str] = set()
        for b in bindings:
            kd = _keys(b)
            if kd is None or not kd[1] or kd[1] in seen:
                continue
            seen.add(kd[1])
            table.add_row(Text(kd[0]), Text(kd[1]))
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close", show=True),
    ]

    def __init__(self, groups: list[tuple[str, list[BindingType]]]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text("flowtop keys", style="bold"), id="help-title")
            yield Static(bindings_table(self.groups), id="help-keys")
            yield Static(Text(CONVERSATION_HELP), id="help-conversations")
            yield Static(Text(FILTER_HELP), id="help-filter")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
