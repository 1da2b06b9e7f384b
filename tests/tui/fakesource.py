"""A deterministic ViewSource for the TUI tests, screenshots and benchmarks.

It is the real query path (flowtop.query.source.TableSource over a real FlowTable:
filter language, grouping, sorting, history) fed with synthetic flows instead of
a kernel collector: N flows on two interfaces, rates that follow a fixed
formula of the step number, and a fixed clock starting at T0. No root, no
kernel, no sleeping unless asked for.

`frames` steps advance the data; after that `step()` only waits `stall`
seconds, so a test sees a stable screen after the first `frames` intervals.
`paced=True` makes step() wait for each interval like a live source (benchmarks).

`conversations=N` makes the flows the legs of N connections instead
(conversation_flows): local ones (this host the client or the server, two
rows) and forwarded ones (four rows: in on one interface and out on the
other, both ways), each direction's legs carrying the same bytes.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

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
    # What the engine calls after a step (query/monitors.tracker_of looks there).
    observers: list[Callable[[Any], None]] = field(default_factory=list)

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


@dataclass(frozen=True)
class FakeConversation:
    """What conversation_flows made one connection of (the ground truth):
    its kind ("client": this host is the client, "server", "forwarded"),
    the interfaces client->server traffic enters and leaves by (the same
    one for a local connection) and the flow rows of each direction."""

    kind: str
    iface_in: str
    iface_out: str
    up_rows: tuple[int, ...]  # flow indexes carrying client->server traffic
    down_rows: tuple[int, ...]


_CONV_PORTS = {6: (443, 80, 22, 5201, 993), 17: (53, 123, 443)}
_KINDS = ("client", "forwarded", "server")


def conversation_flows(
    n: int, ifnames: dict[int, str]
) -> tuple[np.ndarray, list[FakeConversation], np.ndarray]:
    """The flow keys of n connections, what each connection is, and for each
    flow the index of its (connection, direction): 2 * connection + 0 for
    client->server, + 1 for server->client.

    This host is 10.0.0.1 on the first interface (the uplink); forwarded
    clients are 10.1.x.y behind the second interface; remote ends are in
    192.0.2.0/24 and 203.0.113.0/24 (2001:db8:: for every 7th connection).
    The client ports are distinct below 28000 connections (so are the keys).
    """
    up_if, lan_if = sorted(ifnames)[0], sorted(ifnames)[-1]
    rows: list[tuple[int, int, int, int, bytes, bytes, int, int]] = []
    convs: list[FakeConversation] = []
    slots: list[int] = []
    for c in range(n):
        kind = _KINDS[c % 3]
        proto = 17 if c % 5 == 4 else 6
        v6 = c % 7 == 6
        sport = 32768 + (c * 97) % 28000
        dport = _CONV_PORTS[proto][(c // 3) % len(_CONV_PORTS[proto])]
        if v6:
            host, lan = "2001:db8:a::1", f"2001:db8:b::{c + 1:x}"
            remote = f"2001:db8:f::{c % 5 + 1:x}"
        else:
            j = c + 1
            host, lan = "10.0.0.1", f"10.{1 + (j >> 16)}.{(j >> 8) & 255}.{j & 255}"
            remote = f"192.0.2.{c % 7 + 1}" if kind != "server" else f"203.0.113.{c % 9 + 1}"
        client, server = {"client": (host, remote), "server": (remote, host)}.get(
            kind, (lan, remote)
        )
        if kind == "server":
            dport = 22 if proto == 6 and c % 2 else (443 if proto == 6 else 53)
        cb, sb = (ipaddress.ip_address(a).packed.ljust(16, b"\0") for a in (client, server))
        ver = 6 if v6 else 4
        if kind == "forwarded":  # in by the LAN side, out by the uplink; back the other way
            legs = [(lan_if, 0, 0), (up_if, 1, 0), (up_if, 0, 1), (lan_if, 1, 1)]
            iface_in, iface_out = ifnames[lan_if], ifnames[up_if]
        else:  # what this host sends is egress (1), what it receives ingress (0)
            sends_up = 1 if kind == "client" else 0
            legs = [(up_if, sends_up, 0), (up_if, 1 - sends_up, 1)]
            iface_in = iface_out = ifnames[up_if]
        up_rows, down_rows = [], []
        for ifindex, direction, down in legs:
            (down_rows if down else up_rows).append(len(rows))
            a, b, pa, pb = (sb, cb, dport, sport) if down else (cb, sb, sport, dport)
            rows.append((ifindex, direction, ver, proto, a, b, pa, pb))
            slots.append(2 * c + down)
        convs.append(FakeConversation(kind, iface_in, iface_out, tuple(up_rows), tuple(down_rows)))
    keys = np.zeros(len(rows), dtype=layout.FLOW_KEY)
    for i, (ifindex, direction, ver, proto, a, b, pa, pb) in enumerate(rows):
        k = keys[i]
        k["ifindex"], k["direction"], k["ip_version"], k["proto"] = ifindex, direction, ver, proto
        k["src"], k["dst"], k["sport"], k["dport"] = a, b, pa, pb
    return keys, convs, np.array(slots, dtype=np.int64)


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
        conversations: int = 0,
    ) -> None:
        self.ifnames = dict(ifnames or IFACES)
        # The connections' ground truth (conversation_flows); [] for plain flows.
        self.conversations: list[FakeConversation] = []
        phase = np.arange(flows, dtype=np.float64)
        conv_keys = None
        if conversations:
            conv_keys, self.conversations, slots = conversation_flows(conversations, self.ifnames)
            flows = len(conv_keys)
            # The legs of one direction carry the same traffic (a router forwards it).
            phase = slots.astype(np.float64)
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
        self.keys = conv_keys if conv_keys is not None else flow_keys(flows, self.ifnames)
        self._phase = phase
        # Flow i is owned by owners[i % len(owners)], except every 7th: unattributed.
        self.owner_list = list(owners or ())
        if owners is not None:
            self.engine.owners = FakeOwners()
        self._closed = threading.Event()
        self._now = T0
        # Zipf-like sizes: a few elephants, many mice.
        self._base = (4_000_000 / np.power(np.arange(flows) + 1.0, 1.1)).astype(np.float64) + 200
        self._syn = np.where(self.keys["proto"] == 6, 2, 0)  # the first step's extra flags
        if conversations:
            # Per (connection, direction): downloads mostly, every 4th an upload.
            c, down = slots // 2, slots % 2
            heavy = np.where(c % 4 == 1, 1 - down, down)
            weight = 4_000_000 / np.power(c + 1.0, 1.1)
            self._base = np.where(heavy == 1, weight, weight * 0.06) + 200
            # The client sends the SYN (FT_TCP_SYN_ONLY), the server the SYN/ACK.
            syn = np.where(down == 0, 0x02 | layout.TCP_SYN_ONLY, 0x12)
            self._syn = np.where(self.keys["proto"] == 6, syn, 0)
        # What advance() uses every step, made once (the bench's pacing runs
        # it each second beside the product's code: its cost is not the
        # product's).
        self._stats = np.zeros(self.n, dtype=layout.FLOW_STATS)
        self._spread = (np.arange(self.n) % 1000).astype(np.uint64)
        self._tcp = np.where(self.keys["proto"] == 6, 0x18, 0).astype(np.uint64)
        self._tcp_syn = self._tcp | self._syn.astype(np.uint64)
        # Each (interface, direction)'s flows, in the order the counters were first made.
        self._legs = {
            (ifindex, d): np.flatnonzero(
                (self.keys["ifindex"] == ifindex) & (self.keys["direction"] == d)
            )
            for d in (0, 1)
            for ifindex in self.ifnames
        }

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
            wave = np.sin(self._phase + k * 0.7)
            wave *= 0.5
            wave += 1.0
            wave *= self._base
            if self.interval != 1.0:
                wave *= self.interval
            nbytes = wave.astype(np.uint64)
            nbytes += 60
            packets = nbytes // 900
            packets += 1
            # Every member but these stays as made (zero): the stats are only
            # read by merge, so one record array serves every step.
            stats = self._stats
            t_ns = int((MONO0 + k * self.interval) * NS)
            stats["packets"] = packets
            stats["bytes"] = nbytes
            stats["first_seen_ns"] = self._spread + (t_ns - int(self.interval * NS))
            stats["last_seen_ns"] = t_ns - self._spread
            stats["tcp_flags"] = self._tcp_syn if k == 1 else self._tcp
            self.engine.table.merge(self.keys, stats, self.interval)
            self._set_owners()
            self._set_tcp()
            for (ifindex, d), sel in self._legs.items():
                c = self.collector.counters.setdefault((ifindex, d), [0, 0])
                p, b = int(packets[sel].sum()), int(nbytes[sel].sum())
                c[0] += p
                c[1] += b + 14 * p
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

    def _set_tcp(self) -> None:
        """Connections' TCP health in the table's columns, as the engine's TCP
        join writes them (tcp=True with conversations): each TCP flow an RTT,
        and its sender retransmits growing with the steps."""
        if not (self.tcp and self.conversations):
            return
        t = self.engine.table
        rows = t.rows_of(self.keys)
        tcp = self.keys["proto"] == 6
        i = np.arange(self.n)
        t.set_column("rtt_us", rows[tcp], (2_000 + (i[tcp] // 2 % 23) * 1_700).astype(np.uint32))
        t.set_column("retrans", rows[tcp], (i[tcp] % 3 * self.steps).astype(np.uint64))
        t.set_column("retrans_source", rows[tcp], layout.TCP_SOURCE_SOCKOPS)

    def snapshot(self, query: ViewQuery) -> Snapshot:
        snap = super().snapshot(query)
        rows = snap.rows
        if self.tcp and not self.conversations:
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
