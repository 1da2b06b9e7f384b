"""Which top-talker columns to show at a width, and each cell's text (no Textual).

Columns a grouping drops (every row has None there) are left out; RTT,
retransmits and ASN/country only appear when some row has a value. What does
not fit the width goes, least important first: in rate mode the totals go
before the rates, in cumulative mode the rates go first. The socket owner
columns (Process, Service, Container) come last in that order of priority:
only where the width has room after every other column; the wire name
(Name) after them.

The conversation view (group "conversation") has columns of its own
(choose_conversation): the client and server ends as addr:port, the role
of this host, and each direction's figures side by side (up = client to
server, down = server to client, on every row).

A column showing a flow field is keyed by the field's name and takes its
label, width and sort name from core/fields.py (Field.tui, Field.sort); its
cell text is made here (CELLS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from flowtop.core import fields
from flowtop.core.owners import STATE_UNATTRIBUTED
from flowtop.query.types import ViewRow
from flowtop.sanitize import clean
from flowtop.tui import format as fmt
from flowtop.tui.format import Display
from flowtop.wirenames.names import RDNS

Names = Callable[[str], str | None]  # address -> resolved (clean) name or None
GAP = 1  # blank cells between two columns (the table has no cell padding)


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int  # minimum width
    sort: str | None  # flowtop.query.types.SORT_KEYS entry, None when not sortable
    numeric: bool = False
    grow: int = 0  # extra width it may take when there is room


def _addr(which: str) -> Callable[[ViewRow, Display, Names], str]:
    def f(r: ViewRow, d: Display, names: Names) -> str:
        a: str | None = getattr(r, which)
        if a is None:
            return ""
        return (names(a) or a) if d.resolve else a

    return f


def _iface(r: ViewRow, d: Display, names: Names) -> str:
    """Direction first ('in  eth1', 'out veth0'): a cut then shortens the name, not it."""
    if r.iface is None:
        return ""
    name = clean_name(r.iface)
    return f"{r.direction:<3} {name}" if r.direction else name


@lru_cache(maxsize=1024)
def clean_name(name: str) -> str:
    """Interface names come from the system: cleaned again here (cheap, cached)."""
    return clean(name)


def _asn(which: str) -> Callable[[ViewRow, Display, Names], str]:
    def f(r: ViewRow, d: Display, names: Names) -> str:
        asn: int | None = getattr(r, f"{which}_asn")
        cc: str | None = getattr(r, f"{which}_country")
        label: str | None = getattr(r, f"{which}_label")
        parts = [label or (f"AS{asn}" if asn else ""), cc or ""]
        return " ".join(p for p in parts if p)

    return f


def _process(r: ViewRow, d: Display, names: Names) -> str:
    """'comm/pid'; '?' for a local socket whose owner is unknown (unattributed)."""
    if r.comm is None and r.pid is None:
        return "?" if r.owner_state == STATE_UNATTRIBUTED else ""
    comm = clean_name(r.comm or "")
    return f"{comm}/{r.pid}" if r.pid else comm


def _name(r: ViewRow, d: Display, names: Names) -> str:
    """The named (server) end's wire name after its source ('sni  api.example'),
    else the reverse DNS name of an end marked rdns (resolver on); the source
    first, so that a cut shortens the name, not it."""
    wire = r.dst_name or r.src_name
    if wire is not None:
        return f"{r.name_source or '?':<4} {clean_name(wire)}"
    if d.resolve:
        for a in (r.dst, r.src):
            got = names(a) if a is not None else None
            if got:
                return f"{RDNS:<4} {clean_name(got)}"
    return ""


def _container(r: ViewRow, d: Display, names: Names) -> str:
    # The short id, as `docker ps` shows it; the detail screen has it whole.
    return clean_name(r.container or "")[:CONTAINER_SHORT]


CONTAINER_SHORT = 12


def _maybe(value: float | None, show: Callable[[float], str]) -> str:
    return "" if value is None else show(value)


def _retr_updown(r: ViewRow, d: Display, names: Names) -> str:
    """'up/down' retransmits ('3/0'); '-' for a direction that knows none."""
    if r.up_retransmits is None and r.down_retransmits is None:
        return "" if r.retransmits is None else fmt.count(r.retransmits)
    up = "-" if r.up_retransmits is None else fmt.count(r.up_retransmits)
    down = "-" if r.down_retransmits is None else fmt.count(r.down_retransmits)
    return f"{up}/{down}"


# What the Role column shows for query/types.ViewRow.role.
ROLES = {"client": "client", "server": "server", "forwarded": "fwd"}

CELLS: dict[str, Callable[[ViewRow, Display, Names], str]] = {
    "src": _addr("src"),
    # ICMP has no source port: its key keeps type/code in dport only.
    "sport": lambda r, d, n: fmt.source_port(r.sport, r.proto, d.resolve),
    "dst": _addr("dst"),
    "dport": lambda r, d, n: fmt.port(r.dport, r.proto, d.resolve),
    "proto": lambda r, d, n: r.proto_name or ("" if r.proto is None else str(r.proto)),
    "iface": _iface,
    "flows": lambda r, d, n: fmt.count(r.flows),
    "bps": lambda r, d, n: fmt.rate(r.bps, d.bits),
    "pps": lambda r, d, n: fmt.count(r.pps),
    "bytes": lambda r, d, n: fmt.volume(r.bytes, d.bits),
    "packets": lambda r, d, n: fmt.count(r.packets),
    "rtt_us": lambda r, d, n: fmt.rtt(r.rtt_us),
    "retrans": lambda r, d, n: "" if r.retransmits is None else fmt.count(r.retransmits),
    "drop_packets": lambda r, d, n: fmt.count(r.drops) if r.drops else "",
    "src_as": _asn("src"),
    "dst_as": _asn("dst"),
    "group": lambda r, d, n: clean_name(r.group or ""),
    "process": _process,
    "service": lambda r, d, n: clean_name(r.service or ""),
    "container": _container,
    "name": _name,
    # The conversation view's own (cell() makes "client" and "server": they
    # are cut in the address, never the port).
    "client": lambda r, d, n: _end_text(r.src, r.sport, r.proto, d, n, client=True),
    "server": lambda r, d, n: _end_text(r.dst, r.dport, r.proto, d, n, client=False),
    "role": lambda r, d, n: ROLES.get(r.role or "", r.role or ""),
    "up_bps": lambda r, d, n: _maybe(r.up_bps, lambda v: fmt.rate(v, d.bits)),
    "down_bps": lambda r, d, n: _maybe(r.down_bps, lambda v: fmt.rate(v, d.bits)),
    "up_bytes": lambda r, d, n: _maybe(r.up_bytes, lambda v: fmt.volume(v, d.bits)),
    "down_bytes": lambda r, d, n: _maybe(r.down_bytes, lambda v: fmt.volume(v, d.bits)),
    "retr_updown": _retr_updown,
}

# The view's own columns: what a group has that a single flow does not.
_GROUP_ONLY = (
    Column("flows", "Flows", 5, "flows", numeric=True),
    Column("group", "Group", 18, None, grow=30),
)
# The socket owner of a flow (query/owners.py), shown where the width allows.
_OWNER_COLUMNS = (
    Column("process", "Process", 12, None, grow=12),
    Column("service", "Service", 12, None, grow=18),
    Column("container", "Container", CONTAINER_SHORT, None),
)
_FIELD_COLUMNS = tuple(
    Column(f.name, t.label, t.width, f.sort, t.numeric, t.grow)
    for f in fields.FIELDS
    if (t := f.tui) is not None
)
# The conversation view's own: up (↑) is client to server, down (↓) server
# to client. The sum columns (Rate, Total, Pkts) are the flow fields' and sort
# as they do; ↑ and ↓ do not sort (no sort key of one direction).
CONVERSATION_COLUMNS = (
    Column("client", "Client", 16, "src", grow=30),
    Column("server", "Server", 16, "dst", grow=30),
    Column("role", "Role", 6, None),
    Column("up_bps", "↑Rate", 9, None, numeric=True),
    Column("down_bps", "↓Rate", 9, None, numeric=True),
    Column("up_bytes", "↑Total", 7, None, numeric=True),
    Column("down_bytes", "↓Total", 7, None, numeric=True),
    Column("retr_updown", "Retr↑/↓", 7, "retrans", numeric=True),
)
COLUMNS: dict[str, Column] = {
    c.key: c for c in (*_FIELD_COLUMNS, *_GROUP_ONLY, *_OWNER_COLUMNS, *CONVERSATION_COLUMNS)
}
assert COLUMNS.keys() == CELLS.keys(), "a column without a cell, or a cell without a column"
KEY_COLUMNS = ("group", "src", "sport", "dst", "dport", "proto", "iface")
# Shown when some row has a value, after the counters (Drops: when some row
# had packets dropped on this box, so views without drops keep their columns).
_EXTRAS = ("rtt_us", "retrans", "src_as", "dst_as", "drop_packets")
# Shown when some row has a value and there is room after everything else,
# in this order; on screen they follow the key columns.
OWNER_KEYS = tuple(c.key for c in _OWNER_COLUMNS)
# The wire name: shown when some row has one and there is room after the
# owner columns (so 80 and 100 columns keep theirs); on screen after the keys.
NAME_KEYS = ("name",)
# What each column needs from a row to be worth showing.
_PRESENT: dict[str, Callable[[ViewRow], bool]] = {
    "group": lambda r: r.group is not None,
    "src": lambda r: r.src is not None,
    "sport": lambda r: r.sport is not None,
    "dst": lambda r: r.dst is not None,
    "dport": lambda r: r.dport is not None,
    "proto": lambda r: r.proto is not None,
    "iface": lambda r: r.iface is not None,
    "rtt_us": lambda r: r.rtt_us is not None,
    "retrans": lambda r: r.retransmits is not None,
    "retr_updown": lambda r: r.retransmits is not None or r.up_retransmits is not None,
    "drop_packets": lambda r: r.drops > 0,
    "src_as": lambda r: bool(r.src_asn or r.src_country or r.src_label),
    "dst_as": lambda r: bool(r.dst_asn or r.dst_country or r.dst_label),
    "process": lambda r: r.comm is not None or r.owner_state == STATE_UNATTRIBUTED,
    "service": lambda r: r.service is not None,
    "container": lambda r: r.container is not None,
    "name": lambda r: r.name_source is not None,
}
# Which key columns each grouping keeps (used when there are no rows yet).
GROUP_COLUMNS = {
    "flow": KEY_COLUMNS[1:],
    "src": ("src",),
    "dst": ("dst",),
    "pair": ("src", "dst"),
    "port": ("dport", "proto"),
    "proto": ("proto",),
    "iface": ("iface",),
    "asn": ("group",),
    "country": ("group",),
    "label": ("group",),
    "process": ("group",),
    "service": ("group",),
    "container": ("group",),
    "name": ("group",),
    "exporter": ("group",),
    "conversation": ("client", "server", "proto", "iface"),
}


def _span(cols: Sequence[Column]) -> int:
    return sum(c.width + GAP for c in cols)


def choose(
    rows: Sequence[ViewRow], group_by: str, display: Display, width: int
) -> tuple[Column, ...]:
    """The columns to show, in order, with widths filling `width` cells."""
    if group_by == "conversation":
        return choose_conversation(rows, display, width)
    keys = [k for k in GROUP_COLUMNS.get(group_by, KEY_COLUMNS)]
    if rows:
        keys = [k for k in KEY_COLUMNS if any(_PRESENT[k](r) for r in rows)]
    metrics = ["bps", "pps", "bytes", "packets"]
    if display.cumulative:
        metrics = ["bytes", "packets", "bps", "pps"]
    if group_by != "flow":
        metrics.insert(1, "flows")
    extras = [k for k in _EXTRAS if any(_PRESENT[k](r) for r in rows)]
    wanted = keys + metrics[:1]  # never dropped
    owners = [k for k in OWNER_KEYS if any(_PRESENT[k](r) for r in rows)]
    wire = [k for k in NAME_KEYS if any(_PRESENT[k](r) for r in rows)]
    optional = metrics[1:2] + extras[:2] + metrics[2:] + extras[2:] + owners + wire
    cols = [COLUMNS[k] for k in wanted]
    for k in optional:
        if _span([*cols, COLUMNS[k]]) <= width:
            cols.append(COLUMNS[k])
    order = [*KEY_COLUMNS, *NAME_KEYS, *OWNER_KEYS, *metrics, *_EXTRAS]
    cols.sort(key=lambda c: order.index(c.key))
    return tuple(_grow(cols, width))


def choose_conversation(
    rows: Sequence[ViewRow], display: Display, width: int
) -> tuple[Column, ...]:
    """The conversation view's columns: client, server and both directions'
    rates (or totals, cumulative) are never dropped; then the role, the sum,
    the protocol, the interfaces, the other direction-pairs and TCP health,
    drops, owners and the wire name as the width allows."""
    up_down = ["up_bps", "down_bps", "bps"]
    totals = ["up_bytes", "down_bytes", "bytes"]
    if display.cumulative:
        up_down, totals = totals, up_down
    tcp = [k for k in ("rtt_us", "retr_updown") if any(_PRESENT[k](r) for r in rows)]
    drops = [k for k in ("drop_packets",) if any(_PRESENT[k](r) for r in rows)]
    ases = [k for k in ("src_as", "dst_as") if any(_PRESENT[k](r) for r in rows)]
    owners = [k for k in OWNER_KEYS if any(_PRESENT[k](r) for r in rows)]
    wire = [k for k in NAME_KEYS if any(_PRESENT[k](r) for r in rows)]
    wanted = ["client", "server", *up_down[:2]]
    optional = [
        "role", up_down[2], "proto", "iface", *totals, *tcp, *drops, "packets", "flows",
        *ases, *owners, *wire,
    ]  # fmt: skip
    cols = [COLUMNS[k] for k in wanted]
    for k in optional:
        if _span([*cols, COLUMNS[k]]) <= width:
            cols.append(COLUMNS[k])
    order = [
        "client", "server", *NAME_KEYS, *OWNER_KEYS, "proto", "iface", "role", *up_down,
        *totals, "packets", "flows", "rtt_us", "retr_updown", "drop_packets", "src_as", "dst_as",
    ]  # fmt: skip
    cols.sort(key=lambda c: order.index(c.key))
    return tuple(_grow(cols, width))


def _end_text(
    addr: str | None, port: int | None, proto: int | None, d: Display, names: Names, client: bool
) -> str:
    return "".join(_end(addr, port, proto, d, names, client))


def _end(
    addr: str | None, port: int | None, proto: int | None, d: Display, names: Names, client: bool
) -> tuple[str, str]:
    """A conversation end as (address or name, ':port'); an IPv6 address in
    brackets when a port follows; no port for ICMP's client end."""
    if addr is None:
        return "", ""
    shown = (names(addr) or addr) if d.resolve else addr
    p = fmt.source_port(port, proto, d.resolve) if client else fmt.port(port, proto, d.resolve)
    if not p:
        return shown, ""
    if ":" in shown:
        shown = f"[{shown}]"
    return shown, f":{p}"


def _grow(cols: list[Column], width: int) -> list[Column]:
    """Hands spare width out one cell at a time to the columns that may grow."""
    spare = width - _span(cols)
    extra = dict.fromkeys((c.key for c in cols), 0)
    growing = [c for c in cols if c.grow]
    while spare > 0 and growing:
        for c in list(growing):
            if spare <= 0:
                break
            if extra[c.key] >= c.grow:
                growing.remove(c)
                continue
            extra[c.key] += 1
            spare -= 1
    return [Column(c.key, c.label, c.width + extra[c.key], c.sort, c.numeric, 0) for c in cols]


def cell(col: Column, row: ViewRow, display: Display, names: Names) -> str:
    """A cell's plain text, cut to the column width ('…' marks a cut)."""
    if col.key in _ENDS:  # a conversation end: cut the address, keep the port
        addr, port = _ENDS[col.key](row, display, names)
        if len(addr) + len(port) > col.width:
            keep = max(1, col.width - len(port) - 1)
            addr = addr[:keep] + "…"
        text = addr + port
        return text if len(text) <= col.width else text[: col.width - 1] + "…"
    text = CELLS[col.key](row, display, names)
    if len(text) > col.width:
        text = text[: col.width - 1] + "…"
    return text


_ENDS: dict[str, Callable[[ViewRow, Display, Names], tuple[str, str]]] = {
    "client": lambda r, d, n: _end(r.src, r.sport, r.proto, d, n, client=True),
    "server": lambda r, d, n: _end(r.dst, r.dport, r.proto, d, n, client=False),
}
