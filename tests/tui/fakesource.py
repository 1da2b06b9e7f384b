"""A deterministic ViewSource for the TUI tests, screenshots and benchmarks.

It is the real query path (flowtop.query.source.TableSource over a real FlowTable:
filter language, grouping, sorting, history) fed with synthetic flows instead of
a kernel collector: N flows on two interfaces, rates that follow a fixed
formula of the step number, and a fixed clock starting at T0. No root, no
kernel, no sleeping unless asked for.

`frames` steps advance the data; after that `step()` only waits `stall`
seconds, so a test sees a stable screen after the first `frames` intervals.
`paced=True` makes step() wait for each interval like a live source (benchmarks).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.core.owners import STATE_ATTRIBUTED, STATE_UNATTRIBUTED, OwnerNames, OwnerTable
from flowtop.core.tcphealth import HealthGroup
from flowtop.kernel import layout
from flowtop.query.source import TableSource
from flowtop.query.types import Snapshot, ViewQuery

T0 = 1_763_000_000.0  # 2025-11-13 02:13:20 UTC
MONO0 = 1000.0  # the fake monotonic clock at T0 (seconds)
IFACES = {2: "eth1", 3: "veth-test"}
_PORTS = {6: (443, 80, 22, 8080, 5201, 993), 17: (53, 123, 5201, 4789, 443, 514)}


@dataclass
class FakeCollector:
    ifnames: dict[int, str]
    problems: dict[str, int] = field(default_factory=dict)
    counters: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (if, dir)

    def names(self) -> dict[int, str]:
        return dict(self.ifnames)

    def interface_counters(self) -> list[InterfaceCounters]:
        out = []
        for ifindex, name in sorted(self.ifnames.items()):
            rx = self.counters.get((ifindex, 0), [0, 0])
            tx = self.counters.get((ifindex, 1), [0, 0])
            out.append(InterfaceCounters(ifindex, name, "ipv4", rx[0], rx[1], tx[0], tx[1]))
        return out


TCP_HEALTH = (
    HealthGroup(
        "remote", "AS64500", "degraded", "2.4% retransmits to AS64500",
        41_000.0, 88_000.0, 9_800.0, 0.024, 120, 5000, 1,
    ),
    HealthGroup(
        "interface", "eth1", "healthy", "1 of 2 destinations degraded (AS64500)",
        12_000.0, 80_000.0, 9_800.0, 0.011, 121, 11000, 1,
    ),
    HealthGroup("remote", "198.51.100.0/24", "healthy", "", 9_900.0, 11_000.0, 9_800.0,
                0.0, 1, 6000, 0),
)  # fmt: skip


@dataclass(frozen=True)
class FakeOwner:
    """A socket owner given to flows (names as given: not cleaned, like a
    process or a cgroup's creator could choose them)."""

    comm: str
    pid: int
    uid: int = 0
    service: str | None = None
    container: str | None = None
    pod: str | None = None
    cgroup: str | None = None


@dataclass
class FakeOwners:
    """The engine's OwnerTable as the view reads it: real name tables
    (NameTable.intern, no cleaning) and cgroup paths by id."""

    names: OwnerNames = field(default_factory=lambda: OwnerTable().names)
    paths: dict[int, str] = field(default_factory=dict)

    def cgroup_path(self, cgroup_id: int) -> str | None:
        return self.paths.get(cgroup_id)


@dataclass
class FakeEngine:
    table: FlowTable
    collector: FakeCollector
    interval: float
    enricher: None = None
    tcp_health: None = None
    owners: FakeOwners | None = None

    def interface_counters(self) -> list[InterfaceCounters]:
        return self.collector.interface_counters()

    def health(self) -> CollectorHealth:
        return CollectorHealth(kernel=dict(self.collector.problems))


def flow_keys(n: int, ifnames: dict[int, str]) -> np.ndarray:
    """n distinct, deterministic flow keys over the given interfaces."""
    keys = np.zeros(n, dtype=layout.FLOW_KEY)
    ifindexes = sorted(ifnames)
    for i in range(n):
        k = keys[i]
        k["ifindex"] = ifindexes[(i // 3) % len(ifindexes)] if i % 5 else ifindexes[0]
        k["direction"] = i % 2
        proto = 1 if i % 17 == 16 else (17 if i % 4 == 3 else 6)
        v6 = i % 9 == 8
        k["ip_version"] = 6 if v6 else 4
        k["proto"] = 58 if (v6 and proto == 1) else proto
        if v6:
            src = ipaddress.IPv6Address(f"2001:db8:{i >> 8:x}::{(i & 0xFF) + 1:x}").packed
            dst = ipaddress.IPv6Address(f"2001:db8:ffff::{i % 5 + 1:x}").packed
        else:
            j = i + 1
            src = ipaddress.IPv4Address(f"10.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}")
            src = src.packed + bytes(12)
            dst = ipaddress.IPv4Address(f"192.0.2.{i % 7 + 1}").packed + bytes(12)
        k["src"] = src
        k["dst"] = dst
        if proto == 1:
            k["sport"], k["dport"] = 0, (8 << 8) if i % 2 else 0
        else:
            k["sport"] = 20000 + (i * 37) % 40000
            k["dport"] = _PORTS[proto][(i // 4 if proto == 17 else i) % 6]
        k["vlan"] = 100 if i % 13 == 0 else 0
    return keys


class FakeSource(TableSource):
    def __init__(
        self,
        flows: int = 60,
        interval: float = 1.0,
        frames: int | None = 5,
        stall: float = 0.2,
        ifnames: dict[int, str] | None = None,
        tcp: bool = False,
        problems: dict[str, int] | None = None,
        host: str = "router-1",
        raw_ifnames: bool = False,
        paced: bool = False,
        owners: list[FakeOwner] | None = None,
    ) -> None:
        self.ifnames = dict(ifnames or IFACES)
        collector = FakeCollector(self.ifnames, dict(problems or {}))
        table = FlowTable(clock_offset=T0 - MONO0, max_flows=max(flows, 1) * 2)
        super().__init__(FakeEngine(table, collector, interval), host)  # type: ignore[arg-type]
        self.collector = collector
        self.n = flows
        self.frames = frames
        self.stall = stall
        self.tcp = tcp
        self.raw_ifnames = raw_ifnames
        self.paced = paced  # step() waits for the next interval, like a live source
        self._next = time.monotonic() + interval
        self.steps = 0
        self.keys = flow_keys(flows, self.ifnames)
        # Flow i is owned by owners[i % len(owners)], except every 7th: unattributed.
        self.owner_list = list(owners or ())
        if owners is not None:
            self.engine.owners = FakeOwners()
        self._closed = threading.Event()
        self._now = T0
        # Zipf-like sizes: a few elephants, many mice.
        self._base = (4_000_000 / np.power(np.arange(flows) + 1.0, 1.1)).astype(np.float64) + 200

    def now(self) -> float:
        return T0 + self.steps * self.interval

    def step(self) -> None:
        if self.frames is not None and self.steps >= self.frames:
            self._closed.wait(self.stall)
            return
        if self.paced:
            if self._closed.wait(max(0.0, self._next - time.monotonic())):
                return
            self._next = max(self._next + self.interval, time.monotonic())
        if self._closed.is_set():
            return
        self.advance()

    def advance(self) -> None:
        """One interval of synthetic traffic, at once."""
        with self._lock:
            self.steps += 1
            k = self.steps
            idx = np.arange(self.n, dtype=np.float64)
            wave = 1.0 + 0.5 * np.sin(k * 0.7 + idx)
            nbytes = (self._base * wave * self.interval).astype(np.uint64) + 60
            packets = nbytes // 900 + 1
            stats = np.zeros(self.n, dtype=layout.FLOW_STATS)
            t_ns = int((MONO0 + k * self.interval) * NS)
            stats["packets"] = packets
            stats["bytes"] = nbytes
            stats["first_seen_ns"] = t_ns - int(self.interval * NS) + (np.arange(self.n) % 1000)
            stats["last_seen_ns"] = t_ns - (np.arange(self.n) % 1000)
            stats["tcp_flags"] = np.where(self.keys["proto"] == 6, 0x18 | (2 if k == 1 else 0), 0)
            self.engine.table.merge(self.keys, stats, self.interval)
            self._set_owners()
            for d in (0, 1):
                for ifindex in self.ifnames:
                    sel = (self.keys["ifindex"] == ifindex) & (self.keys["direction"] == d)
                    c = self.collector.counters.setdefault((ifindex, d), [0, 0])
                    c[0] += int(packets[sel].sum())
                    c[1] += int(nbytes[sel].sum() + 14 * packets[sel].sum())
            self._after_step()

    def _set_owners(self) -> None:
        """The owner columns, as the engine's owner join writes them."""
        fo = self.engine.owners
        if fo is None or not self.owner_list:
            return
        t = self.engine.table
        rows = t.live_rows()
        index = {bytes(k): i for i, k in enumerate(self.keys)}
        nm = fo.names
        for row, key in zip(rows.tolist(), t.keys_at(rows), strict=True):
            i = index[bytes(key)]
            r = np.array([row])
            if i % 7 == 6:
                t.set_column("owner_state", r, STATE_UNATTRIBUTED)
                continue
            o = self.owner_list[i % len(self.owner_list)]
            cgid = 0
            if o.cgroup is not None:
                cgid = 100 + self.owner_list.index(o)
                fo.paths[cgid] = o.cgroup
            t.set_column("pid", r, o.pid)
            t.set_column("uid", r, o.uid)
            t.set_column("cgroup_id", r, cgid)
            t.set_column("comm_id", r, nm.comm.intern(o.comm))
            t.set_column("service_id", r, nm.service.intern(o.service))
            t.set_column("container_id", r, nm.container.intern(o.container))
            t.set_column("pod_id", r, nm.pod.intern(o.pod))
            t.set_column("owner_state", r, STATE_ATTRIBUTED)

    def snapshot(self, query: ViewQuery) -> Snapshot:
        snap = super().snapshot(query)
        rows = snap.rows
        if self.tcp:
            rows = tuple(
                replace(
                    r,
                    rtt_us=float(200 + (int(r.key[-4:], 16) % 997) * 37),
                    retransmits=int(r.key[-2:], 16) % 5 * self.steps,
                )
                if r.proto == 6
                else r
                for r in rows
            )
        if self.raw_ifnames:  # as if a source forgot to clean: the UI must cope
            rows = tuple(replace(r, iface=self._raw_name(r.iface)) if r.iface else r for r in rows)
        health = snap.tcp_health
        if self.tcp:
            health = TCP_HEALTH
        return replace(snap, rows=rows, tcp_health=health)

    def _raw_name(self, cleaned: str) -> str:
        from flowtop.sanitize import clean

        for name in self.ifnames.values():
            if clean(name) == cleaned:
                return name
        return cleaned

    def close(self) -> None:
        self._closed.set()
