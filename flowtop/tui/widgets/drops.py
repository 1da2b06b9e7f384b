"""The drops panel (key `d`): packets the kernel dropped on this box, by reason
and by flow, from the engine's DropTable (core/drops.py, Snapshot.drops).

Hidden until asked for; one line when drops are not collected or there are
none. Every name here is from the kernel's reason list or an address, and is
cleaned anyway (the panel is a terminal).
"""

from __future__ import annotations

from textual.widgets import Static

from flowtop.core.drops import DropLine, DropSummary
from flowtop.core.model import proto_name
from flowtop.sanitize import clean
from flowtop.tui import format as fmt

OFF = "Drops: not collected (drop reasons are off or could not start)"
NONE = "Drops: none on this box"
REASONS_SHOWN = 6  # reasons on the first line, most packets first


def _end(addr: str, port: int, proto: int, ver: int) -> str:
    if proto in (1, 58) or not port:
        return addr
    return f"[{addr}]:{port}" if ver == 6 else f"{addr}:{port}"


def flow_line(d: DropLine, ifname: str) -> str:
    """'  12  udp 10.0.0.1:5000 -> 10.0.0.2:7100 on vr1 in  NETFILTER_DROP 12'."""
    where = f"on {clean(ifname, 16)} {'in' if d.direction == 0 else 'out'}"
    if d.ip_version:
        what = (
            f"{proto_name(d.proto)} {_end(d.src, d.sport, d.proto, d.ip_version)} -> "
            f"{_end(d.dst, d.dport, d.proto, d.ip_version)}"
        )
    else:
        what = "not IP"
    why = ", ".join(f"{clean(n, 40)} {fmt.count(p)}" for n, p in d.reasons[:3])
    flag = "" if d.has_row else "  (no flow: dropped before flowtop saw it)"
    return f"{fmt.count(d.packets):>6}  {what} {where}  {why}{flag}"


def render(s: DropSummary | None, ifname: dict[int, str], lines: int) -> str:
    """The panel's text: totals by reason, then the top flows (lines in all)."""
    if s is None:
        return OFF
    if not s.total:
        return NONE
    reasons = ", ".join(f"{clean(n, 40)} {fmt.count(p)}" for n, p in s.by_reason[:REASONS_SHOWN])
    if len(s.by_reason) > REASONS_SHOWN:
        reasons += f", {len(s.by_reason) - REASONS_SHOWN} more"
    head = f"Drops on this box: {fmt.count(s.total)} packets ({reasons})"
    if s.no_flow:
        head += f"; {fmt.count(s.no_flow)} on no flow"
    if s.evicted:  # the per-flow breakdown is bounded: say what it lost
        head += f"; {fmt.count(s.evicted)} flow reasons forgotten (table full)"
    body = [flow_line(d, ifname.get(d.ifindex, f"if{d.ifindex}")) for d in s.top]
    return "\n".join([head, *body[: max(0, lines - 1)]])


class DropsPanel(Static):
    """Toggled by MainScreen (action_drops); set() on every snapshot while shown."""

    DEFAULT_CSS = """
    DropsPanel { height: auto; max-height: 11; padding: 0 1; color: $text-muted; }
    """

    def set(self, s: DropSummary | None, ifname: dict[int, str], lines: int = 6) -> None:
        self.update(render(s, ifname, lines))
