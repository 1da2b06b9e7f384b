"""The kernel collector: program + attachments + interface selection + drains."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from flowtop.kernel import build, counters, devices, layout, rtnl
from flowtop.kernel.build import Build
from flowtop.kernel.drop_records import DROP_RECORD
from flowtop.kernel.owner_records import OWNER_RECORD
from flowtop.kernel.program import ProgramOptions, TcProgram, WireOptions, require_root
from flowtop.kernel.program import request as tc_request
from flowtop.kernel.tcx import Netns, TcxAttacher, resolve_attach_mode

# pyroute2 (0.25-0.6 s of imports) only where tc speaks netlink: the clsact
# attacher (attach.py, --attach tc or a kernel without TCX) and the sweep of a
# dead flowtop's clsact filters (_sweep_clsact); links, device types and link
# events are read over rtnetlink directly (rtnl.py).
if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from flowtop.core.procsockets import ProcSnapshot
    from flowtop.kernel.attach import TcAttacher
    from flowtop.kernel.dropreasons import DropReasons
    from flowtop.kernel.drops import DropCollector
    from flowtop.kernel.owners import OwnerCollector
    from flowtop.kernel.sockops import SockOpsTracker
    from flowtop.kernel.staged import StagedProgram
    from flowtop.kernel.wirecapture import WireCapture
from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.errors import FlowtopError, InterfaceError, Interrupted

log = logging.getLogger("flowtop.collector")

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
GLOB_CHARS = set("*?[")


@dataclass(frozen=True, slots=True)
class Drain:
    """One interval's worth of kernel data."""

    batches: list[tuple[np.ndarray, np.ndarray]]  # (FLOW_KEY, FLOW_STATS) arrays
    now_ns: int  # CLOCK_MONOTONIC at the swap
    interval: float  # seconds since the previous drain
    tcp: np.ndarray | None = None  # layout.TCP_SAMPLE records (sock_ops and passive RTT)
    # (part, why) of what could not be read this time while the flows were:
    # the engine counts each in drain_errors.
    errors: tuple[tuple[str, str], ...] = ()
    # owner_records.OWNER_RECORDs reported since the last drain (read after the
    # flows, so a packet counted this interval has its socket's report here or,
    # rarely, in the next drain); None: no socket owners (off, or failed to start).
    owners: np.ndarray | None = None
    # drop_records.DROP_RECORDs of the interval (read after the flows: a new
    # flow's drop can come a drain before its row, core/drops.py) and the
    # kernel's reason table; None: no drop reasons (off, or failed to start).
    drops: np.ndarray | None = None
    drop_reasons: DropReasons | None = None


class InterfaceSelector:
    """Which interfaces to watch: names, globs, or every UP non-loopback one."""

    def __init__(self, patterns: Sequence[str] | None) -> None:
        self.patterns = list(patterns or [])

    @property
    def default(self) -> bool:
        return not self.patterns

    def matches(self, name: str, flags: int) -> bool:
        if self.default:
            return bool(flags & IFF_UP) and not flags & IFF_LOOPBACK
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def explicit(self) -> list[str]:
        return [p for p in self.patterns if not GLOB_CHARS & set(p)]


def _no_checkpoint() -> None:
    pass


P = TypeVar("P", bound="StagedProgram")


def _begun(prog: P) -> tuple[P | None, str | None]:
    """prog.begin() (checks, the compile started): prog, or None and why
    (told when start() gets to it, as if it failed there)."""
    try:
        prog.begin()
    except FlowtopError as exc:
        prog.close()
        return None, str(exc)
    return prog, None


def _finished(prog: P | None, checkpoint: Callable[[], None]) -> tuple[P | None, str | None]:
    """prog.finish() (built, attached): prog, or None and why; a stop request
    goes on up (finish() closed it)."""
    if prog is None:
        return None, None
    try:
        prog.finish(checkpoint)
    except Interrupted:
        raise
    except FlowtopError as exc:
        prog.close()
        return None, str(exc)
    return prog, None


class KernelCollector:
    """checkpoint: called during start-up, while the compiles run (every
    50 ms), before each attach and around sock_ops; a stop request raises
    there (StopSignal.check) and the caller's close() removes what is
    attached. The TC program, the sock_ops program (sockops=True only) and
    the socket owner programs (owners=True only) compile in child processes
    at once (flowtop.kernel.build). sock_ops and the owner programs are
    optional: either failing is one warning line and the run goes on
    without it (sockops_error, owners_error say why)."""

    def __init__(
        self,
        interfaces: Sequence[str] | None = None,
        flow_map_size: int = 65536,
        tc_priority: int | None = None,  # None: attach.DEFAULT_PRIORITY
        attach: str = "auto",
        sockops: bool = True,
        passive_rtt: bool = True,
        checkpoint: Callable[[], None] = _no_checkpoint,
        owners: bool = True,
        owner_rereport: float | None = None,
        names: WireOptions | None = None,
        drops: bool = True,
    ) -> None:
        self._checkpoint = checkpoint
        self._owner_rereport = owner_rereport  # None: OwnerCollector's default
        self.selector = InterfaceSelector(interfaces)
        self.sockops: SockOpsTracker | None = None
        self.sockops_error: str | None = None
        # Socket owners: the collector once attached, and the /proc snapshot of
        # the sockets older than its programs (taken right after they attach).
        self.owners: OwnerCollector | None = None
        self.owners_error: str | None = None
        self.owner_snapshot: ProcSnapshot | None = None
        self._owner_build: OwnerCollector | None = None
        # Drop reasons (kernel/drops.py): begun with the others (its compile
        # runs beside them), attached in start(), watching the attached interfaces.
        self.drops: DropCollector | None = None
        self.drops_error: str | None = None
        self._drop_build: DropCollector | None = None
        tracker: SockOpsTracker | None = None
        self._names: dict[int, str] = {}
        self._seen: dict[int, str] = {}  # every interface attached this run, for labels
        # Sockets of this namespace (made here: a later call from a thread in
        # another one still asks this one).
        self._netns = Netns()
        try:
            self._rtnl = rtnl.Rtnl()
        except BaseException:
            self._netns.close()
            raise
        self._tc_ipr: IPRoute | None = None  # made for the first clsact sweep
        program: TcProgram | None = None
        wire: WireCapture | None = None
        tc_build: Build | None = None
        try:
            self._check_explicit()
            # Before the compile: `--attach tcx` on a kernel without TCX fails at once.
            self.attach_mode, self.attach_reason = resolve_attach_mode(attach)
            checkpoint()
            options = ProgramOptions(
                flow_map_size=flow_map_size, passive_rtt=passive_rtt, wire=names
            )
            require_root()
            # The compiles run at once, each in a child: the TC program's
            # first (the first attachment waits for it; begun early by the
            # cli), then the drop reasons', sock_ops' and the owners', held
            # at low priority until its first stage is here (build.py).
            tc_build = build.take(tc_request(options))
            if drops:
                self._drop_build = self._begin_drops()
            if sockops:
                tracker = self._begin_sockops()
            if owners:
                self._owner_build = self._begin_owners()
            program = TcProgram(options, checkpoint, tc_build)
            if (ring := program.wire_ring_fd()) is not None:
                from flowtop.kernel.wirecapture import WireCapture

                wire = WireCapture(ring)
            checkpoint()
        except BaseException:
            # A half-built collector must not leave netlink sockets or compiler
            # processes behind.
            self._rtnl.close()
            self._netns.close()
            if wire is not None:
                wire.close()
            if tracker is not None:
                tracker.close()
            if self._owner_build is not None:
                self._owner_build.close()
                self._owner_build = None
            if self._drop_build is not None:
                self._drop_build.close()
                self._drop_build = None
            if program is not None:
                program.close()
            elif tc_build is not None:
                tc_build.close()
            raise
        self._tracker = tracker
        self.program = program
        # Names from the wire (names given): the ring's reader, for the
        # userspace names thread; None when names are off.
        self.wire_capture = wire
        self.attacher: TcAttacher | TcxAttacher
        if self.attach_mode == "tcx":
            self.attacher = TcxAttacher(self.program.fd, devices.is_l3)
        else:
            from flowtop.kernel.attach import TcAttacher

            if tc_priority is None:
                self.attacher = TcAttacher(self.program.fd)
            else:
                self.attacher = TcAttacher(self.program.fd, priority=tc_priority)
        log.info("attaching with %s", self.attach_reason)
        # Bound before start() lists the links: a device that comes meanwhile
        # is an event.
        self._events = rtnl.LinkEvents()
        self._last_drain = time.monotonic_ns()
        self.attach_errors = 0
        self._closed = False

    # -- interfaces -----------------------------------------------------------------

    def _links(self) -> list[tuple[int, str, int]]:
        return [(link.index, link.name, link.flags) for link in self._rtnl.links()]

    def _check_explicit(self) -> None:
        names = {name for _i, name, _f in self._links()}
        for want in self.selector.explicit():
            if want not in names:
                raise InterfaceError(f"no such interface: {want}")

    def start(self) -> list[str]:
        """Attach to every selected interface; returns their names."""
        explicit = set(self.selector.explicit())
        for ifindex, name, flags in self._links():
            if not self.selector.matches(name, flags):
                continue
            self._checkpoint()
            try:
                self._attach(ifindex, name)
            except FlowtopError as exc:
                # Asked for by name: that is the user's error to see. Picked by a
                # glob or by default: skip it, count it, say it once.
                if name in explicit:
                    raise
                self.attach_errors += 1
                log.warning("skipping %s: %s", name, exc)
        self._checkpoint()
        self._start_sockops()
        self._checkpoint()
        self._start_owners()
        self._checkpoint()
        self._start_drops()
        self._checkpoint()
        return self.interfaces()

    def reselect(self, patterns: Sequence[str] | None) -> None:
        """A new interface selection (config reload): attach and detach to match."""
        self.selector = InterfaceSelector(patterns)
        links = self._links()
        for ifindex, name, flags in links:
            wanted = self.selector.matches(name, flags)
            if wanted and ifindex not in self._names:
                try:
                    self._attach(ifindex, name)
                except FlowtopError as exc:
                    self.attach_errors += 1
                    log.warning("cannot attach to %s: %s", name, exc)
            elif not wanted and ifindex in self._names:
                self.attacher.detach(ifindex)
                del self._names[ifindex]
                log.info("detached from %s", name)
        self._watch_drops()

    def _attach(self, ifindex: int, name: str) -> None:
        self.program.reset_iface(ifindex)
        if self.attach_mode == "tcx":
            self._sweep_clsact(ifindex)
        self.attacher.attach(ifindex, name)
        self._names[ifindex] = name
        self._seen[ifindex] = name
        log.info("attached to %s", name)
        self._watch_drops()

    def _sweep_clsact(self, ifindex: int) -> None:
        """Removes the clsact filters of a dead flowtop (say, an older one run
        with --attach tc): they would count every packet a second time for
        nobody. Only a device with a qdisc on its ingress parent (clsact, or
        ingress) can hold tc filters, and most have none: pyroute2 is
        imported for the others alone."""
        try:
            if self._rtnl.ingress_qdisc(ifindex) is None:
                return
        except OSError:
            pass  # cannot tell: sweep, as when there is one
        from flowtop.kernel.attach import remove_stale_filters

        if self._tc_ipr is None:
            from pyroute2 import IPRoute

            with self._netns.entered():  # this collector's namespace, as self._rtnl
                self._tc_ipr = IPRoute()
        remove_stale_filters(self._tc_ipr, ifindex)

    def interfaces(self) -> list[str]:
        return [self._names[i] for i in sorted(self._names)]

    def names(self) -> dict[int, str]:
        """ifindex -> name of every interface attached during this run."""
        return dict(self._seen)

    def ifname(self, ifindex: int) -> str:
        return self._seen.get(ifindex, f"if{ifindex}")

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        """Sleep up to timeout, handling interface arrivals and departures meanwhile.

        Returns early when wake_fd becomes readable (a stop request).
        """
        deadline = time.monotonic() + timeout
        fds = [self._events.fileno()] + ([wake_fd] if wake_fd is not None else [])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select(fds, [], [], left)
            if wake_fd is not None and wake_fd in ready:
                return
            if ready:
                try:
                    self._handle_link_events()
                except Exception as exc:  # e.g. ENOBUFS: the event socket overran
                    # Interfaces that came or went meanwhile are missed, not the run.
                    self.attach_errors += 1
                    log.warning("reading interface events failed: %s", exc)

    def _handle_link_events(self) -> None:
        for ev in self._events.read():
            ifindex = ev.link.index
            name = ev.link.name or self._names.get(ifindex, "")
            if ev.event == "RTM_DELLINK":
                if ifindex in self._names:
                    log.info("interface %s went away", name)
                    self.attacher.forget(ifindex)
                    self._names.pop(ifindex, None)
                    self._watch_drops()
                continue
            if ev.event != "RTM_NEWLINK":
                continue
            if ifindex in self._names:
                self._names[ifindex] = self._seen[ifindex] = name  # renamed
                continue
            if self.selector.matches(name, ev.link.flags):
                try:
                    self._attach(ifindex, name)
                except Exception as exc:  # the link may vanish mid-attach
                    self.attach_errors += 1
                    log.warning("cannot attach to %s: %s", name, exc)

    # -- data ------------------------------------------------------------------------

    def _begin_sockops(self) -> SockOpsTracker | None:
        """Local TCP health's checks and compile (SockOpsTracker.begin); a
        failure is told when start() gets to it, as if it happened there."""
        from flowtop.kernel.sockops import SockOpsTracker

        tracker, self.sockops_error = _begun(SockOpsTracker())
        return tracker

    def _start_sockops(self) -> None:
        """Local TCP health; without it flowtop still runs (passive RTT only)."""
        tracker, self._tracker = self._tracker, None
        self.sockops, err = _finished(tracker, self._checkpoint)
        self.sockops_error = err or self.sockops_error
        if self.sockops is None and self.sockops_error is not None:
            log.warning("local TCP health (sock_ops) disabled: %s", self.sockops_error)

    def _begin_owners(self) -> OwnerCollector | None:
        """Socket owners' checks and compile (OwnerCollector.begin), beside the
        TC build; a failure is told when start() gets to it."""
        from flowtop.kernel.owners import OwnerCollector

        owner, self.owners_error = _begun(OwnerCollector(rereport=self._owner_rereport))
        return owner

    def _start_owners(self) -> None:
        """Socket owners attached, then the /proc snapshot: every socket is then
        either seen by the programs (made after they attached) or older and in
        the snapshot. Without them flowtop still runs (no attribution)."""
        owner, self._owner_build = self._owner_build, None
        self.owners, err = _finished(owner, self._checkpoint)
        self.owners_error = err or self.owners_error
        if self.owners is not None:
            from flowtop.core.procsockets import snapshot

            owner = self.owners
            self.owner_snapshot = snap = snapshot(owner.cgroup)
            log.info(
                "socket owners on %s; %d older sockets of %d processes in %d network "
                "namespaces from /proc (%d unreadable)",
                owner.cgroup, len(snap.records), snap.processes, snap.namespaces, snap.errors,
            )  # fmt: skip
        if self.owners is None and self.owners_error is not None:
            log.warning("socket owners (process attribution) disabled: %s", self.owners_error)

    def _begin_drops(self) -> DropCollector | None:
        """Drop reasons' checks and compile (DropCollector.begin), beside the
        TC build; a failure is told when start() gets to it."""
        from flowtop.kernel.drops import DropCollector

        dc, self.drops_error = _begun(DropCollector())
        return dc

    def _start_drops(self) -> None:
        """Drop reasons attached, watching the attached interfaces; without
        them flowtop still runs (no drops shown)."""
        dc, self._drop_build = self._drop_build, None
        if dc is not None:
            dc.watch(self._watch_list())
        self.drops, err = _finished(dc, self._checkpoint)
        self.drops_error = err or self.drops_error
        if self.drops is None and self.drops_error is not None:
            log.warning("drop reasons disabled: %s", self.drops_error)

    def _watch_list(self) -> list[int]:
        # With nothing attached an empty list would make the drop program count
        # every device: an ifindex no device has stands for "none".
        return sorted(self._names) or [0xFFFF_FFFF]

    def _watch_drops(self) -> None:
        """The drop program counts drops on exactly the attached interfaces."""
        dc = self.drops
        if dc is None:
            return
        try:
            dc.watch(self._watch_list())
        except FlowtopError as exc:  # more interfaces than its watch list holds
            self.attach_errors += 1
            log.warning("drop reasons: %s", exc)

    def drain(self) -> Drain:
        """The interval just ended. A flow map that cannot be read raises (the
        engine counts it and skips the interval); a TCP sample map that cannot
        be read is left out of this drain and named in Drain.errors, so that
        the flows still count."""
        batches = self.program.drain_flows()
        now = time.monotonic_ns()
        interval = (now - self._last_drain) / 1e9
        self._last_drain = now
        parts: list[np.ndarray] = []
        errors: list[tuple[str, str]] = []
        readers: list[tuple[str, Callable[[int], np.ndarray]]] = [
            ("passive TCP", self.program.tcp_samples)
        ]
        if self.sockops is not None:
            readers.append(("sock_ops", self.sockops.read))
        for what, read in readers:
            try:
                parts.append(read(now))
            except (FlowtopError, OSError) as exc:
                errors.append((f"reading the {what} samples", str(exc)))
        if not parts:
            tcp = np.zeros(0, dtype=layout.TCP_SAMPLE)
        else:
            tcp = np.concatenate(parts) if len(parts) > 1 else parts[0]
        owners: np.ndarray | None = None
        if self.owners is not None:
            try:
                owners = self.owners.drain()
            except (FlowtopError, OSError) as exc:
                # What was not read stays in the map for the next drain
                # (unless it fills: owner_endpoints_full counts that).
                owners = np.zeros(0, dtype=OWNER_RECORD)
                errors.append(("reading the socket owners", str(exc)))
        drops: np.ndarray | None = None
        if self.drops is not None:
            try:
                drops = self.drops.drain()
            except (FlowtopError, OSError) as exc:  # left in the map for the next drain
                drops = np.zeros(0, dtype=DROP_RECORD)
                errors.append(("reading the drops", str(exc)))
        reasons = self.drops.reasons if self.drops is not None else None
        return Drain(batches, now, interval, tcp, tuple(errors), owners, drops, reasons)

    def interface_counters(self) -> list[InterfaceCounters]:
        raw = self.program.iface_counters(self._seen)
        out = []
        names = self._seen
        for ifindex in sorted(names):
            for fam, fam_name in enumerate(layout.FAMILIES):
                rx = raw.get((ifindex, layout.DIR_INGRESS, fam), (0, 0))
                tx = raw.get((ifindex, layout.DIR_EGRESS, fam), (0, 0))
                out.append(
                    InterfaceCounters(ifindex, names[ifindex], fam_name, rx[0], rx[1], tx[0], tx[1])
                )
        return out

    def health(self, forced_evictions: int = 0) -> CollectorHealth:
        kernel = self.program.counters()
        if self.sockops is not None:
            kernel.update({f"sockops_{k}": v for k, v in self.sockops.counters().items()})
        if self.owners is not None:
            got = self.owners.counters()
            kernel.update({f"{counters.OWNER}_{k}": got[k] for k in counters.OWNER_LOSSES})
        if self.drops is not None:
            dropped = self.drops.counters()
            kernel.update({f"{counters.DROPS}_{k}": dropped[k] for k in counters.DROPS_LOSSES})
        return CollectorHealth(
            kernel=kernel,
            forced_evictions=forced_evictions,
            attach_errors=self.attach_errors,  # drain_errors: the engine counts those
        )

    def stop_capture(self) -> None:
        """Detach every filter; the maps stay readable until close()."""
        self.attacher.detach_all()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.attacher.detach_all()
        finally:
            self.attacher.close()
            with contextlib.suppress(Exception):
                self._events.close()
            with contextlib.suppress(Exception):
                self._rtnl.close()
            if self._tc_ipr is not None:
                with contextlib.suppress(Exception):
                    self._tc_ipr.close()
            self._netns.close()
            for tracker in (self.sockops, self._tracker):
                if tracker is not None:
                    tracker.close()
            for owner in (self.owners, self._owner_build):
                if owner is not None:
                    owner.close()
            for dc in (self.drops, self._drop_build):
                if dc is not None:
                    dc.close()
            if self.wire_capture is not None:
                self.wire_capture.close()
            self.program.close()
