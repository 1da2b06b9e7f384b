"""Enter on a row: its full key, counters, TCP flags, first/last seen (a
conversation row: both directions and its legs, conversation.py), its
names from the wire (both ends', the source, the CNAME chain end), its
socket owner (process, user, command line, cgroup, service, container, pod),
its drops on this box by reason,
rate history."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Sequence
from functools import lru_cache

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from flowtop.core import fields
from flowtop.core.owners import COMM_MAX_LEN, STATE_ATTRIBUTED, STATE_UNATTRIBUTED
from flowtop.core.procsockets import CMDLINE_MAX_LEN, PROC, cmdline
from flowtop.query.types import ViewRow
from flowtop.sanitize import clean
from flowtop.tui import format as fmt
from flowtop.tui.columns import Names, clean_name
from flowtop.tui.format import Display
from flowtop.tui.screens import conversation


def _addr(a: str | None, names: Names, d: Display) -> str:
    if a is None:
        return "*"
    name = names(a) if d.resolve else None
    return f"{a} ({name})" if name else a


def title(row: ViewRow, names: Names, d: Display) -> str:
    """The row's key in one line: 'tcp 10.0.0.1:443 -> 10.0.0.2:5123 on eth1 in'."""
    if row.role is not None:
        return conversation.title(row, names, d)
    parts = []
    if row.proto_name or row.proto is not None:
        parts.append(row.proto_name or str(row.proto))
    src = _addr(row.src, names, d)
    dst = _addr(row.dst, names, d)
    sport = fmt.source_port(row.sport, row.proto, False)
    dport = fmt.port(row.dport, row.proto, False)
    parts.append(f"{src}{':' + sport if sport else ''} -> {dst}{':' + dport if dport else ''}")
    if row.iface:
        parts.append(f"on {clean_name(row.iface)} {row.direction or ''}".rstrip())
    if row.vlan:
        parts.append(f"vlan {row.vlan}")
    return " ".join(parts)


@lru_cache(maxsize=256)
def user_name(uid: int) -> str:
    """'name (uid)', or the uid alone when the passwd database has no name."""
    try:
        return f"{clean(pwd.getpwuid(uid).pw_name)} ({uid})"
    except KeyError:
        return str(uid)


_TASKS_READ = 256  # threads whose names are compared at most


def _comm_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except OSError:
        return None
    return clean(raw.removesuffix(b"\n").decode("utf-8", "replace"), COMM_MAX_LEN)


def _runs(pid: int, comm: str, proc: str) -> bool:
    """Whether the process has a thread named comm: the kernel recorded the
    name of the thread that made the socket, which may not be the leader."""
    if _comm_of(f"{proc}/{pid}/comm") == comm:
        return True
    try:
        with os.scandir(f"{proc}/{pid}/task") as tasks:
            for i, t in enumerate(tasks):
                if i >= _TASKS_READ:
                    break
                if _comm_of(f"{t.path}/comm") == comm:
                    return True
    except OSError:
        pass
    return False


def command_line(pid: int, comm: str | None, proc: str = PROC) -> str:
    """The process's command line now (cleaned, bounded by procsockets), or
    "(exited)" when it is gone or its pid now runs no thread of that name
    (the pid was reused)."""
    text = cmdline(pid, proc)
    if text is None or (comm is not None and not _runs(pid, comm, proc)):
        return "(exited)"
    return text or f"[{comm or pid}]"  # kernel threads have no command line


CommandLine = Callable[[int, str | None], str]


def owner_facts(row: ViewRow, command: CommandLine = command_line) -> list[tuple[str, str]]:
    """The owner of a flow row as (label, text) pairs; none without attribution."""
    if row.owner_state is None:
        return []
    lbl = fields.title
    if row.owner_state == STATE_UNATTRIBUTED:
        return [("owner", "unattributed: a local socket whose owner flowtop could not learn")]
    if row.owner_state != STATE_ATTRIBUTED:
        return [("owner", "none (not a local socket's flow)")]
    out = [
        (lbl("pid"), str(row.pid) if row.pid else "?"),
        (lbl("uid"), "?" if row.uid is None else user_name(row.uid)),
        (lbl("comm"), row.comm or "?"),
        ("command line", command(row.pid, row.comm) if row.pid else "?"),
        (lbl("cgroup"), row.cgroup or "?"),
        (lbl("service"), row.service or "-"),
        (lbl("container"), row.container or "-"),
        (lbl("pod"), row.pod or "-"),
    ]
    return [(a, clean(b, CMDLINE_MAX_LEN)) for a, b in out]


def name_facts(row: ViewRow) -> list[tuple[str, str]]:
    """The names from the wire of a flow row as (label, text) pairs: both
    ends', the source and the CNAME chain end; none when it has none."""
    if row.name_source is None:
        return []
    out = [
        ("source name", row.src_name or "-"),
        ("destination name", row.dst_name or "-"),
        (fields.title("name_source"), row.name_source),
    ]
    if row.name_cname:
        out.append((fields.title("name_cname_id"), row.name_cname))
    return [(a, clean(b)) for a, b in out]


def facts(
    row: ViewRow,
    names: Names,
    d: Display,
    now: float,
    present: bool,
    command: CommandLine = command_line,
) -> Group:
    t = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")

    def port(p: int | None) -> str:
        if p is None:
            return "*"
        name = fmt.port(p, row.proto, True)
        num = fmt.port(p, row.proto, False)
        return num if name == num else f"{num} ({name})"

    iface = f"{clean_name(row.iface or '*')} {row.direction or ''}"
    vlan = "*" if row.vlan is None else str(row.vlan)
    retrans = "n/a" if row.retransmits is None else str(row.retransmits)
    lbl = fields.title  # what a flow field is called (core/fields.py)
    last = fmt.timestamp(row.last_seen)
    pairs = [
        (lbl("src"), _addr(row.src, names, d), lbl("sport"), port(row.sport)),
        (lbl("dst"), _addr(row.dst, names, d), lbl("dport"), port(row.dport)),
        (lbl("proto"), row.proto_name or "*", lbl("iface"), iface),
        (lbl("bps"), fmt.rate(row.bps, d.bits), lbl("pps"), fmt.count(row.pps)),
        ("total", fmt.volume(row.bytes, d.bits), lbl("packets"), f"{row.packets:,}"),
        (lbl("bytes"), f"{row.bytes:,}", "flows", f"{row.flows:,}"),
        (lbl("first_ns"), fmt.timestamp(row.first_seen), lbl("last_ns"), last),
        ("duration", fmt.age(row.last_seen - row.first_seen), "idle", fmt.age(now - row.last_seen)),
        (lbl("tcp_flags"), fmt.tcp_flags(row.tcp_flags), lbl("vlan"), vlan),
        (lbl("rtt_us"), fmt.rtt(row.rtt_us) or "n/a", lbl("retrans"), retrans),
    ]  # fmt: skip
    if row.src_asn is not None or row.src_country:
        pairs.append((lbl("src_as"), f"AS{row.src_asn} {row.src_country or ''}", "", ""))
    if row.dst_asn is not None or row.dst_country:
        pairs.append((lbl("dst_as"), f"AS{row.dst_asn} {row.dst_country or ''}", "", ""))
    for a, b, c, e in pairs:
        t.add_row(Text(a), Text(b), Text(c), Text(e))
    if not present:
        t.add_row(Text("note"), Text("not in the current top rows; figures as last seen"), "", "")
    # The owner in a table of its own: a command line or a cgroup path takes
    # the whole width, folded over lines when longer.
    owner = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    owner.add_column(style="bold", no_wrap=True)
    owner.add_column(overflow="fold")
    for a, b in [*name_facts(row), *owner_facts(row, command), *drop_facts(row)]:
        owner.add_row(Text(a), Text(b))
    return Group(t, owner)


def drop_facts(row: ViewRow) -> list[tuple[str, str]]:
    """A flow's packets dropped on this box, one line per reason; none without drops."""
    if not row.drops:
        return []
    out = [(fields.title("drop_packets"), f"{row.drops:,}")]
    out += [(f"  {clean(name, 40)}", f"{n:,}") for name, n in row.drop_reasons]
    return out


class DetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,enter,backspace", "close", "Back"),
    ]

    def __init__(self, row: ViewRow, names: Names, display: Display, now: float) -> None:
        super().__init__()
        self.row = row
        self.names = names
        self.display_opts = display
        self.now = now
        self.present = True
        self.history: Sequence[tuple[float, float]] = ()
        self.legs: Sequence[ViewRow] | None = None  # a conversation's flow rows, once asked
        self._ready = False
        self._cmdlines: dict[tuple[int, str | None], str] = {}  # read once per process

    def _command(self, pid: int, comm: str | None) -> str:
        got = self._cmdlines.get((pid, comm))
        if got is None:
            got = self._cmdlines[(pid, comm)] = command_line(pid, comm)
        return got

    @property
    def row_key(self) -> str:
        return self.row.key

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-box"):
            yield Static(id="detail-title")
            yield Static(id="detail-facts")
            yield PlotextPlot(id="detail-chart")
        yield Footer()

    def on_mount(self) -> None:
        self._ready = True
        self._redraw()

    def action_close(self) -> None:
        self.dismiss(None)

    def update(
        self,
        row: ViewRow | None,
        history: Sequence[tuple[float, float]] | None,
        display: Display,
        now: float,
        legs: Sequence[ViewRow] | None = None,
    ) -> None:
        """Fresh figures for this row (None: it left the top rows, keep the last ones)."""
        self.present = row is not None
        if row is not None:
            self.row = row
        if history is not None:
            self.history = history
        if legs is not None:
            self.legs = legs
        self.display_opts = display
        self.now = now
        self._redraw()

    def _redraw(self) -> None:
        if not self._ready:
            return  # on_mount draws what arrived until then
        try:
            title_widget = self.query_one("#detail-title", Static)
        except NoMatches:  # the screen is going away
            return
        d = self.display_opts
        title_widget.update(Text(title(self.row, self.names, d), no_wrap=False, overflow="fold"))
        if self.row.role is not None:
            row = self.row
            more = [*name_facts(row), *owner_facts(row, self._command), *drop_facts(row)]
            shown = conversation.facts(row, self.legs, self.names, d, self.now, self.present, more)
        else:
            shown = facts(self.row, self.names, d, self.now, self.present, self._command)
        self.query_one("#detail-facts", Static).update(shown)
        chart = self.query_one("#detail-chart", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        values = [v if d.bits else v / 8 for _, v in self.history]
        scale, prefix = 1.0, ""
        for div, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if values and max(values) >= div:
                scale, prefix = div, p
                break
        unit = f"{prefix}b/s" if d.bits else f"{prefix}B/s"
        plt.title(f"rate, last 60 s ({unit})")
        if self.history:
            t_end = self.history[-1][0]
            xs = [t - t_end for t, _ in self.history]
            ys = [v / scale for v in values]
            colour = self.app.get_css_variables().get("flowtop-rx", "#808080").lstrip("#")
            try:
                rgb = (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))
            except ValueError:
                rgb = (128, 128, 128)
            plt.plot(xs, ys, marker="braille", color=rgb)
            plt.xlim(-60, 0)
            plt.xlabel("seconds")
        chart.refresh()
