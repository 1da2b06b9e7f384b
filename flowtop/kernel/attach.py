"""TC attach/detach with pyroute2: only our own filters, never anyone else's.

Our filters are cls_bpf direct-action filters on the clsact ingress/egress
hooks, named ``flowtop_<direction>_<pid>``. The pid in the name is what lets
a new run tell a filter left by a crashed (dead) flowtop from one owned by
another flowtop still running. We create the clsact qdisc when it is missing
and remove it again on detach only when we created it and nothing else is
attached to it.

Which program goes on a device depends on its type: Ethernet devices get the
programs that parse Ethernet headers, every other device (tun, WireGuard,
PPP, IP tunnels) the ones that start at the network header. devices.is_l3
decides from the device type read over netlink at attach time; the program
fds come from a callable (TcProgram.fd) so that this attacher and
tcx.TcxAttacher pick programs the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from flowtop.errors import AttachError, InterfaceError
from flowtop.kernel import devices
from flowtop.kernel.rtnl import Rtnl

PARENT_INGRESS = 0xFFFFFFF2
PARENT_EGRESS = 0xFFFFFFF3
HOOKS = (("ingress", PARENT_INGRESS), ("egress", PARENT_EGRESS))
NAME_RE = re.compile(r"^flowtop_(ingress|egress)_(\d+)$")
DEFAULT_PRIORITY = 1

# The program fd for (direction, l3): "ingress"/"egress", and whether the
# device has no Ethernet header (TcProgram.fd).
ProgFd = Callable[[str, bool], int]
# Whether a device (ifindex, ifname) has no Ethernet header (devices.is_l3).
IsL3 = Callable[[int, str], bool]


def filter_name(direction: str, pid: int | None = None) -> str:
    return f"flowtop_{direction}_{pid if pid is not None else os.getpid()}"


@dataclass(frozen=True, slots=True)
class TcFilter:
    """A flowtop filter found on a hook."""

    ifindex: int
    parent: int
    prio: int
    handle: int
    name: str

    @property
    def pid(self) -> int:
        m = NAME_RE.match(self.name)
        return int(m.group(2)) if m else -1


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


@dataclass
class Attachment:
    """What we put on one interface, so that we remove exactly that."""

    ifindex: int
    ifname: str
    created_qdisc: bool
    filters: list[TcFilter] = field(default_factory=list)
    l3: bool = False  # the programs for devices without an Ethernet header


class TcAttacher:
    """Attaches the ingress/egress programs to interfaces by ifindex.

    prog_fd(direction, l3) gives the program for a hook (TcProgram.fd);
    is_l3(ifindex, ifname) says which kind a device is (default: devices.is_l3
    over this attacher's netlink socket, so in the namespace it was made in).
    The older form TcAttacher(ingress_fd, egress_fd[, priority]) still works
    for devices with an Ethernet header (and refuses the others).
    """

    def __init__(
        self,
        prog_fd: ProgFd | int,
        egress_fd: int | None = None,
        priority: int = DEFAULT_PRIORITY,
        is_l3: IsL3 | None = None,
    ) -> None:
        if callable(prog_fd):
            if egress_fd is not None:
                raise TypeError("TcAttacher(prog_fd, ...): pass priority by keyword")
            self._prog_fd: ProgFd = prog_fd
        elif egress_fd is not None:
            self._prog_fd = _ethernet_only({"ingress": prog_fd, "egress": egress_fd})
        else:
            raise TypeError("TcAttacher needs prog_fd(direction, l3) (TcProgram.fd)")
        self._priority = priority
        self._ipr = IPRoute()
        self._rtnl = Rtnl()  # device types, in the namespace of self._ipr
        self._is_l3: IsL3 = is_l3 or (lambda i, n: devices.is_l3(i, n, self._rtnl))
        self.attached: dict[int, Attachment] = {}

    def close(self) -> None:
        self._ipr.close()
        self._rtnl.close()

    # -- discovery -----------------------------------------------------------

    def flowtop_filters(self, ifindex: int) -> Iterator[TcFilter]:
        yield from list_flowtop_filters(self._ipr, ifindex)

    # -- attach / detach -----------------------------------------------------

    def attach(self, ifindex: int, ifname: str) -> Attachment:
        if ifindex in self.attached:
            return self.attached[ifindex]
        l3 = self._is_l3(ifindex, ifname)
        fds = {direction: self._prog_fd(direction, l3) for direction, _parent in HOOKS}
        remove_stale_filters(self._ipr, ifindex)
        created = self._ensure_clsact(ifindex, ifname)
        att = Attachment(ifindex, ifname, created, l3=l3)
        self.attached[ifindex] = att
        try:
            for direction, parent in HOOKS:
                name = filter_name(direction)
                self._ipr.tc(
                    "add-filter",
                    "bpf",
                    ifindex,
                    fd=fds[direction],
                    name=name,
                    parent=parent,
                    classid=1,
                    direct_action=True,
                    prio=self._priority,
                )
                found = [f for f in self.flowtop_filters(ifindex) if f.name == name]
                att.filters.extend(found)
        except NetlinkError as exc:
            self.detach(ifindex)
            if exc.code == errno.ENODEV:
                raise InterfaceError(f"interface {ifname} disappeared while attaching") from None
            hint = ""
            if exc.code in (errno.EINVAL, errno.EEXIST):
                hint = (
                    f" (another filter may use priority {self._priority} with a different "
                    "protocol: choose another with --tc-priority)"
                )
            raise AttachError(f"cannot attach to {ifname}: {os.strerror(exc.code)}{hint}") from None
        return att

    def _ensure_clsact(self, ifindex: int, ifname: str) -> bool:
        try:
            self._ipr.tc("add", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            if exc.code == errno.ENODEV:
                raise InterfaceError(f"no such interface: {ifname}") from None
            raise AttachError(
                f"cannot add clsact qdisc on {ifname}: {os.strerror(exc.code)}"
            ) from None
        return True

    def detach(self, ifindex: int) -> None:
        att = self.attached.pop(ifindex, None)
        if att is None:
            return
        for f in att.filters:
            _delete_filter(self._ipr, f)
        if att.created_qdisc and not _hook_has_filters(self._ipr, ifindex):
            with contextlib.suppress(NetlinkError):
                self._ipr.tc("del", "clsact", ifindex)

    def forget(self, ifindex: int) -> None:
        """The interface is gone; its filters went with it."""
        self.attached.pop(ifindex, None)

    def detach_all(self) -> None:
        for ifindex in list(self.attached):
            self.detach(ifindex)


def _ethernet_only(fds: dict[str, int]) -> ProgFd:
    def fd(direction: str, l3: bool) -> int:
        if l3:
            raise AttachError("no TC program for devices without an Ethernet header was given")
        return fds[direction]

    return fd


def list_flowtop_filters(ipr: IPRoute, ifindex: int) -> Iterator[TcFilter]:
    for _direction, parent in HOOKS:
        try:
            msgs = ipr.get_filters(index=ifindex, parent=parent)
        except NetlinkError:
            continue
        for msg in msgs:
            if _attr(msg, "TCA_KIND") != "bpf":
                continue
            opts = _attr(msg, "TCA_OPTIONS")
            name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
            if not name or not NAME_RE.match(name):
                continue
            # A filter dump lists the prio chain head (handle 0) and each
            # filter; only the latter carries options.
            yield TcFilter(ifindex, parent, msg["info"] >> 16, msg["handle"], name)


def _delete_filter(ipr: IPRoute, f: TcFilter) -> bool:
    try:
        ipr.tc("del-filter", "bpf", f.ifindex, f.handle, parent=f.parent, prio=f.prio)
    except NetlinkError as exc:
        if exc.code in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            return False
        raise AttachError(f"cannot remove filter {f.name}: {os.strerror(exc.code)}") from None
    return True


def _hook_has_filters(ipr: IPRoute, ifindex: int) -> bool:
    for _direction, parent in HOOKS:
        try:
            if list(ipr.get_filters(index=ifindex, parent=parent)):
                return True
        except NetlinkError:
            continue
    return False


def remove_stale_filters(ipr: IPRoute, ifindex: int, everyone: bool = False) -> int:
    """Remove flowtop filters whose owner is dead (all of them with everyone)."""
    removed = 0
    for f in list(list_flowtop_filters(ipr, ifindex)):
        if f.pid == os.getpid():
            continue
        if everyone or not pid_alive(f.pid):
            removed += _delete_filter(ipr, f)
    return removed


def detach_everywhere(everyone: bool = False) -> list[tuple[str, int]]:
    """`flowtop detach`: stale (or, with everyone, all) flowtop filters on every link."""
    out: list[tuple[str, int]] = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            n = remove_stale_filters(ipr, link["index"], everyone=everyone)
            if n:
                out.append((link.get_attr("IFLA_IFNAME"), n))
    return out
