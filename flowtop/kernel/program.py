"""The TC programs (bpf/tc.c) and their maps, as the collector uses them.

TcProgram has them built in a child process (flowtop.kernel.build: the
compiler never loads here), hands out their fds for the attachers, and
reads the maps through those fds (flowtop.kernel.maps): the interval flow
maps and per-CPU caches of two generations (see the comment in bpf/tc.c),
the interface counters, the counter array, and the passive TCP connection
map (flowtop.kernel.tcpconn).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from flowtop.errors import KernelFeatureError, NotRootError
from flowtop.kernel import counters, layout, maps
from flowtop.kernel.build import Build, Loaded
from flowtop.kernel.tcpconn import TcpConnTable

# The build request's parts live in tcrequest.py (no numpy: the cli starts
# the build with them); importable from here as before.
from flowtop.kernel.tcrequest import (
    FUNCTIONS as FUNCTIONS,
)
from flowtop.kernel.tcrequest import (
    MAPS as MAPS,
)
from flowtop.kernel.tcrequest import (
    WIRE_FUNCTION as WIRE_FUNCTION,
)
from flowtop.kernel.tcrequest import (
    WIRE_RING as WIRE_RING,
)
from flowtop.kernel.tcrequest import (
    WIRE_TAIL as WIRE_TAIL,
)
from flowtop.kernel.tcrequest import (
    ProgramOptions as ProgramOptions,
)
from flowtop.kernel.tcrequest import (
    WireOptions as WireOptions,
)
from flowtop.kernel.tcrequest import (
    request as request,
)
from flowtop.kernel.tcrequest import (
    wire_options as wire_options,
)


@dataclass(frozen=True, slots=True)
class Prog:
    """A loaded program: its function name in bpf/tc.c and its fd."""

    name: str
    fd: int


def _no_checkpoint() -> None:
    pass


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError("flowtop needs root (or CAP_BPF and CAP_NET_ADMIN) to load BPF")


class TcProgram:
    """The TC programs and their maps, by fd.

    checkpoint: called while the build runs (StopSignal.check: a stop
    request raises there and nothing is left). build: the build of
    request(options), when the caller started it already (it is closed
    with this program, or at once when the program fails).
    """

    def __init__(
        self,
        options: ProgramOptions,
        checkpoint: Callable[[], None] = _no_checkpoint,
        build: Build | None = None,
    ) -> None:
        try:
            require_root()
        except NotRootError:
            if build is not None:
                build.close()
            raise
        self.options = options
        self._build = build if build is not None else Build(request(options))
        self._loaded: list[Loaded] = []
        self._l3_error: KernelFeatureError | None = None
        try:
            first = self._build.wait(checkpoint)
            self._loaded.append(first)
            self.ingress = Prog(
                FUNCTIONS[("ingress", False)], first.progs[FUNCTIONS[("ingress", False)]]
            )
            self.egress = Prog(
                FUNCTIONS[("egress", False)], first.progs[FUNCTIONS[("egress", False)]]
            )
            self._maps = first.maps
            self._progs: dict[tuple[str, bool], Prog] = {
                ("ingress", False): self.ingress,
                ("egress", False): self.egress,
            }
            self._gen = _Generations(self._maps)
            if options.wire is not None:
                # Before any attachment: a packet handed up meanwhile is lost.
                maps.update_u32(self._maps[WIRE_TAIL], 0, first.progs[WIRE_FUNCTION])
        except BaseException:
            self.close()
            raise
        self._drainer = maps.BatchReader(
            options.flow_map_size, layout.FLOW_KEY, layout.FLOW_STATS, True, "the flow map"
        )
        self._cache_drainer = maps.CacheDrainer(options.cache_slots)
        self._iface_reader = maps.BatchReader(
            64, layout.IFACE_KEY, maps.percpu(layout.IFACE_STATS), what="the interface counters"
        )
        # One interface's slots (both directions, every family) in each CPU's
        # row of iface_slots (see bpf/tc.c).
        self._iface_vals = np.zeros(
            (maps.cpu_ids(), layout.IFACE_SLOTS_PER), dtype=layout.IFACE_STATS
        )
        # The connection map and the per-CPU rows of deferred data segments
        # (tcp_pkts, cpu_ids() rows of cache_slots, like the flow cache).
        self._tcp = (
            TcpConnTable(self._maps["tcp_conns"], self._maps["tcp_pkts"], options.cache_slots)
            if options.passive_rtt
            else None
        )

    @property
    def build_pid(self) -> int | None:
        """The compiler child's pid while it runs (for tests)."""
        return self._build.pid

    def fd(self, direction: str, l3: bool) -> int:
        """The program fd for a hook ("ingress"/"egress") of a device with an
        Ethernet header (l3=False) or without one (l3=True, devices.is_l3):
        what an attacher (attach.TcAttacher, tcx.TcxAttacher) attaches."""
        if direction not in layout.DIRECTIONS:
            raise ValueError(f"no TC program for direction {direction!r}")
        if l3:
            self._load_l3()
        return self._progs[(direction, l3)].fd

    def _load_l3(self, block: bool = True) -> None:
        """Takes the L3 pair from the build: waiting for it (block), or only
        when it is there. A failed load is raised here, every time."""
        if self._l3_error is not None:
            if block:
                raise self._l3_error
            return
        if ("ingress", True) in self._progs or not (block or self._build.ready()):
            return
        try:
            later = self._build.wait()
        except KernelFeatureError as exc:
            self._l3_error = exc
            if block:
                raise
            return
        self._loaded.append(later)
        for direction in layout.DIRECTIONS:
            name = FUNCTIONS[(direction, True)]
            self._progs[(direction, True)] = Prog(name, later.progs[name])

    def prog_fds(self) -> dict[tuple[str, bool], int]:
        """{(direction, l3): fd} of the four programs (see fd()), all loaded."""
        self._load_l3()
        return {hook: p.fd for hook, p in self._progs.items()}

    def map_fd(self, name: str) -> int:
        """The fd of one of the maps userspace uses (MAPS, tcp_conns, tcp_pkts, WIRE_RING)."""
        return self._maps[name]

    def wire_ring_fd(self) -> int | None:
        """The fd of the names-from-the-wire ring buffer; None when the
        program was built without it (ProgramOptions.wire)."""
        return self._maps.get(WIRE_RING)

    def drain_flows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Swap buffers and return the interval just ended as (keys, stats) batches.

        Keys are distinct within a batch, not across batches: the hash map
        first, then each CPU's cache (a flow can be in all of them).
        """
        self._load_l3(block=False)  # the build's second message, when it came
        old_flows, old_cache = self._gen.flip()
        keys, stats = self._drainer.read(old_flows)
        batches = [(keys.copy(), stats.copy())]  # the engine keeps them past the next drain
        batches.extend(self._cache_drainer.drain(old_cache))
        return batches

    def active_flow_map(self) -> tuple[str, int]:
        """(name, fd) of the hash map the programs fill now (for tests and benches)."""
        name = ("flows_a", "flows_b")[self._gen.active]
        return name, self._maps[name]

    def iface_counters(
        self, ifindexes: Iterable[int]
    ) -> dict[tuple[int, int, int], tuple[int, int]]:
        """(ifindex, direction, family) -> (packets, bytes), summed over CPUs."""
        out: dict[tuple[int, int, int], tuple[int, int]] = {}
        vals, row = self._iface_vals, self.options.iface_slots * layout.IFACE_SLOTS_PER
        for ifindex in ifindexes:
            if ifindex >= self.options.iface_slots:
                continue
            first = layout.iface_slot(ifindex, layout.DIR_INGRESS, 0)
            maps.read_rows(self._maps["iface_slots"], first, layout.IFACE_SLOTS_PER, row, vals)
            packets = vals["packets"].sum(axis=0, dtype=np.uint64).tolist()
            nbytes = vals["bytes"].sum(axis=0, dtype=np.uint64).tolist()
            for slot_key in _iface_slot_keys(ifindex):
                i = layout.iface_slot(*slot_key) - first
                out[slot_key] = (packets[i], nbytes[i])
        keys, vals = self._iface_reader.read(self._maps["iface_counters"])
        packets = vals["packets"].sum(axis=1).tolist()
        nbytes = vals["bytes"].sum(axis=1).tolist()
        for i, k in enumerate(keys.tolist()):
            out[(k[0], k[1], k[2])] = (packets[i], nbytes[i])
        return out

    def reset_iface(self, ifindex: int) -> None:
        """Zero an interface's counters (at attach: ifindexes can be reused)."""
        if ifindex < self.options.iface_slots:
            row = self.options.iface_slots * layout.IFACE_SLOTS_PER
            first = layout.iface_slot(ifindex, layout.DIR_INGRESS, 0)
            keys = np.array(
                [
                    cpu * row + first + i
                    for cpu in range(maps.cpu_ids())
                    for i in range(layout.IFACE_SLOTS_PER)
                ],
                dtype="<u4",
            )
            maps.update_batch(
                self._maps["iface_slots"], keys, np.zeros(len(keys), dtype=layout.IFACE_STATS)
            )
        keys, _vals = self._iface_reader.read(self._maps["iface_counters"])
        for k in keys[keys["ifindex"] == ifindex].copy():
            maps.delete(self._maps["iface_counters"], np.array([k], dtype=layout.IFACE_KEY))

    def counters(self) -> dict[str, int]:
        sums = maps.percpu_sums(self._maps["counters"], len(counters.TC_COUNTERS))
        out = dict(zip(counters.TC_COUNTERS, sums, strict=True))
        # Not a kernel counter: worked out by tcp_samples() (see TcpConnTable).
        out["tcp_conn_evicted"] = self._tcp.evicted if self._tcp is not None else 0
        return out

    def tcp_samples(self, now_ns: int) -> np.ndarray:
        """layout.TCP_SAMPLE records of the connections the passive tracker
        follows (two per connection when data went both ways), cumulative per
        connection; deletes closed connections (after reporting them once
        more) and idle ones. now_ns: time.monotonic_ns(). Empty when the
        program was built without passive RTT."""
        if self._tcp is None:
            return np.zeros(0, dtype=layout.TCP_SAMPLE)
        return self._tcp.samples(now_ns, self.counters()["tcp_conn_new"])

    def tcp_conns(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw connection map: (layout.TCP_CONN_KEY, layout.TCP_CONN) arrays."""
        if self._tcp is None:
            return np.zeros(0, dtype=layout.TCP_CONN_KEY), np.zeros(0, dtype=layout.TCP_CONN)
        keys, vals = self._tcp.read()
        return keys.copy(), vals.copy()

    def close(self) -> None:
        """Ends the build if it still runs and closes every fd (what is
        attached stays until the attacher detaches it)."""
        self._build.close()
        for loaded in self._loaded:
            loaded.close()
        self._loaded.clear()


def _iface_slot_keys(ifindex: int) -> Iterator[tuple[int, int, int]]:
    for direction in (layout.DIR_INGRESS, layout.DIR_EGRESS):
        for family in range(len(layout.FAMILIES)):
            yield (ifindex, direction, family)


class _Generations:
    """The two generations of interval maps (see the comment in bpf/tc.c).

    flip() makes the other generation active and returns the fds of the
    retired one once no program can still be writing to it: the rewrite of
    a map-in-map slot waits for an RCU grace period, one per flip.
    """

    def __init__(self, fds: dict[str, int]) -> None:
        self._gen_fd = fds["active_gen"]
        self._flow_maps = fds["flow_maps"]
        self._flows = (fds["flows_a"], fds["flows_b"])
        self._caches = (fds["cache_a"], fds["cache_b"])
        for gen in (0, 1):
            self._update(self._flow_maps, gen, self._flows[gen])
        self.active = 0
        self._update(self._gen_fd, 0, 0)

    def _update(self, fd: int, key: int, value: int) -> None:
        try:
            maps.update_u32(fd, key, value)
        except OSError as exc:
            raise KernelFeatureError(f"cannot switch maps: {exc.strerror}") from None

    def flip(self) -> tuple[int, int]:
        old = self.active
        self._update(self._gen_fd, 0, 1 - old)
        self.active = 1 - old
        # The fence: same value, but the kernel waits for running programs.
        self._update(self._flow_maps, old, self._flows[old])
        return self._flows[old], self._caches[old]
