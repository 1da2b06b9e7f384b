"""The detail of a conversation row (Rich renderables, no Textual): both
directions' figures side by side, where this host stands, RTT and
retransmits per direction, and its legs (each flow row in it).

Up (↑) is client -> server and down (↓) server -> client, as in the
conversation view's columns; the role line says which of them this host
sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from flowtop.query.types import ViewRow
from flowtop.tui import format as fmt
from flowtop.tui.columns import Names, clean_name
from flowtop.tui.format import Display

_PORTLESS = (1, 58)  # ICMP: the conversation is the address pair (core/conversations.py)


def is_up(leg: ViewRow, conversation: ViewRow) -> bool:
    """Whether a leg carries client -> server traffic (its source is the client end)."""
    return leg.src == conversation.src and (
        leg.sport == conversation.sport or conversation.proto in _PORTLESS
    )


# What the role means for the two directions (README: the conversation view).
ROLE_TEXT = {
    "client": "this host is the client: ↑ is what it sends (tx), ↓ what it receives (rx)",
    "server": "this host is the server: ↑ is what it receives (rx), ↓ what it sends (tx)",
    "forwarded": "forwarded: this host is neither end (↑ client to server, ↓ back)",
}


def _end(addr: str | None, port: int | None, proto: int | None, names: Names, d: Display) -> str:
    if addr is None:
        return "*"
    name = names(addr) if d.resolve else None
    shown = f"[{addr}]" if ":" in addr and port is not None else addr
    p = fmt.port(port, proto, False)
    if p and proto not in (1, 58):
        service = fmt.port(port, proto, True)
        p = p if service == p else f"{p} ({service})"
    text = f"{shown}:{p}" if p and port is not None else shown
    return f"{text}  {name}" if name else text


def title(row: ViewRow, names: Names, d: Display) -> str:
    """'tcp 10.0.0.1:52314 ⇄ 192.0.2.1:443 via eth1→wg0 (forwarded)'."""
    proto = row.proto_name or ("" if row.proto is None else str(row.proto))
    c = _end(row.src, row.sport, row.proto, names, d)
    s = _end(row.dst, row.dport, row.proto, names, d)
    where = f" via {clean_name(row.iface)}" if row.iface else ""
    return f"{proto} conversation {c} ⇄ {s}{where} ({row.role})".lstrip()


def _opt(value: float | None, show: Callable[[float], str]) -> str:
    return "n/a" if value is None else show(value)


def _worst_rtt(legs: Sequence[ViewRow] | None, row: ViewRow, up: bool) -> float | None:
    rtts = [g.rtt_us for g in legs or () if g.rtt_us is not None and is_up(g, row) == up]
    return max(rtts) if rtts else None


def directions(row: ViewRow, legs: Sequence[ViewRow] | None, d: Display) -> Table:
    """↑, ↓ and both: rate, packets/s, total, bytes, packets, retransmits,
    RTT (a direction's: the worst of its legs)."""
    t = Table(box=None, padding=(0, 2, 0, 0), show_edge=False)
    t.add_column("", style="bold", no_wrap=True)
    for label in ("↑ client→server", "↓ server→client", "both"):
        t.add_column(label, justify="right", no_wrap=True)
    lines = [
        ("rate", row.up_bps, row.down_bps, row.bps, lambda v: fmt.rate(v, d.bits)),
        ("packets/s", row.up_pps, row.down_pps, row.pps, fmt.count),
        ("total", row.up_bytes, row.down_bytes, row.bytes, lambda v: fmt.volume(v, d.bits)),
        ("bytes", row.up_bytes, row.down_bytes, row.bytes, lambda v: f"{int(v):,}"),
        ("packets", row.up_packets, row.down_packets, row.packets, lambda v: f"{int(v):,}"),
        ("retransmits", row.up_retransmits, row.down_retransmits, row.retransmits,
         lambda v: f"{int(v):,}"),
        ("RTT", _worst_rtt(legs, row, True), _worst_rtt(legs, row, False), row.rtt_us, fmt.rtt),
    ]  # fmt: skip
    for label, up, down, both, show in lines:
        t.add_row(*(Text(x) for x in (label, _opt(up, show), _opt(down, show), _opt(both, show))))
    return t


def legs_table(row: ViewRow, legs: Sequence[ViewRow] | None, d: Display) -> RenderableType:
    """Each flow row of the connection (every leg and direction, whatever the
    view's filter): interface, hook, direction, rate, bytes, packets, TCP."""
    if legs is None:
        return Text("legs: asking…")
    label = f"legs ({len(legs)} flows)"
    if len(legs) != row.flows:
        label = f"legs ({len(legs)} flows; the filter counts {row.flows})"
    t = Table(box=None, padding=(0, 2, 0, 0), show_edge=False)
    t.add_column(label, style="bold", no_wrap=True)
    t.add_column("hook", no_wrap=True)
    t.add_column("carries", no_wrap=True)
    for name in ("rate", "bytes", "packets", "RTT", "retr"):
        t.add_column(name, justify="right", no_wrap=True)
    order = sorted(legs, key=lambda g: (not is_up(g, row), g.direction != "in", g.iface or ""))
    for leg in order:
        retr = "" if leg.retransmits is None else f"{leg.retransmits:,}"
        t.add_row(
            Text(clean_name(leg.iface or "?")),
            Text("ingress" if leg.direction == "in" else "egress"),
            Text("↑ client→server" if is_up(leg, row) else "↓ server→client"),
            Text(fmt.rate(leg.bps, d.bits)),
            Text(f"{leg.bytes:,}"),
            Text(f"{leg.packets:,}"),
            Text(fmt.rtt(leg.rtt_us)),
            Text(retr),
        )
    return t


def facts(
    row: ViewRow,
    legs: Sequence[ViewRow] | None,
    names: Names,
    d: Display,
    now: float,
    present: bool,
    more: Sequence[tuple[str, str]] = (),
) -> Group:
    """The whole detail; more: the owner, names and drops lines (detail.py's)."""
    head = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    proto = row.proto_name or ("*" if row.proto is None else str(row.proto))
    last = fmt.timestamp(row.last_seen)
    vlan = "*" if row.vlan is None else str(row.vlan)
    pairs = [
        ("client", _end(row.src, row.sport, row.proto, names, d), "protocol", proto),
        ("server", _end(row.dst, row.dport, row.proto, names, d), "interface",
         clean_name(row.iface or "*")),
        ("first seen", fmt.timestamp(row.first_seen), "last seen", last),
        ("duration", fmt.age(row.last_seen - row.first_seen), "idle", fmt.age(now - row.last_seen)),
        ("flows", f"{row.flows:,}", "", ""),
        ("TCP flags", fmt.tcp_flags(row.tcp_flags), "vlan", vlan),
    ]  # fmt: skip
    for a, b, c, e in pairs:
        head.add_row(Text(a), Text(b), Text(c), Text(e))
    role = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    role.add_column(style="bold", no_wrap=True)
    role.add_column(overflow="fold")
    role.add_row(Text("role"), Text(ROLE_TEXT.get(row.role or "", row.role or "?")))
    if not present:
        role.add_row(Text("note"), Text("not in the current top rows; figures as last seen"))
    for a, b in more:
        role.add_row(Text(a), Text(b))
    blank = Text("")
    return Group(head, role, blank, directions(row, legs, d), blank, legs_table(row, legs, d))
