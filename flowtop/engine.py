"""The loop shared by every mode: collector -> flow table -> sinks.

The engine never imports Textual; views and exporters consume what it hands
them (flow-end batches, and the table itself for top-N queries).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from flowtop.collector.collector import Drain
from flowtop.flowtable import FlowBatch, FlowTable
from flowtop.model import CollectorHealth, InterfaceCounters

if TYPE_CHECKING:
    from flowtop.enrich import Enricher

from flowtop.tcphealth import GroupNamer, HealthTracker, TcpUpdate, join, prefix_group

log = logging.getLogger("flowtop.engine")


def group_namer(enricher: Enricher) -> GroupNamer:
    """Health groups from enrichment: a CIDR label, else the ASN, else the prefix."""

    def name(addr: bytes, version: int) -> str:
        eid = int(
            enricher.lookup(
                np.frombuffer(addr.ljust(16, b"\0"), dtype="V16"), np.array([version], "u1")
            )[0]
        )
        e = enricher.entity(eid)
        if e.label:
            return e.label
        if e.asn:
            return f"AS{e.asn}"
        return prefix_group(addr, version)

    return name


class Sink(Protocol):
    def flows_ended(self, batch: FlowBatch) -> None: ...


class Collector(Protocol):
    """Where drains come from: the kernel (KernelCollector) or a recording."""

    def start(self) -> list[str]: ...

    def drain(self) -> Drain: ...

    def wait(self, timeout: float, wake_fd: int | None = None) -> None: ...

    def names(self) -> dict[int, str]: ...

    def interfaces(self) -> list[str]: ...

    def interface_counters(self) -> list[InterfaceCounters]: ...

    def health(self, forced_evictions: int = 0) -> CollectorHealth: ...

    def stop_capture(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class EngineStats:
    polls: int = 0
    last_poll_seconds: float = 0.0
    ended: int = 0


@dataclass
class Engine:
    collector: Collector
    table: FlowTable
    interval: float = 1.0
    sinks: list[Sink] = field(default_factory=list)
    stats: EngineStats = field(default_factory=EngineStats)
    last_drain: Drain | None = None
    # Called after every step (metrics); the engine's thread.
    observers: list[Callable[[Engine], None]] = field(default_factory=list)
    # (proto, address, port) of sockets whose flows must not be measured:
    # flowtop's own export traffic.
    exclude: Callable[[], list[tuple[int, str, int]]] | None = None
    # ASN/geo/labels for both ends of every flow (flowtop.enrich.Enricher).
    enricher: Enricher | None = None
    tcp_health: HealthTracker | None = None
    last_tcp: TcpUpdate = field(default_factory=TcpUpdate)

    def __post_init__(self) -> None:
        if self.tcp_health is None:
            self.tcp_health = HealthTracker(ifname=self.ifname)
        if self.enricher is not None:
            self.tcp_health.set_group_namer(group_namer(self.enricher))

    def ifname(self, ifindex: int) -> str:
        return self.collector.names().get(ifindex, str(ifindex))

    def set_enricher(self, enricher: Enricher | None) -> None:
        """Replaces the enricher (reload); live flows are looked up again."""
        self.enricher = enricher
        assert self.tcp_health is not None
        self.tcp_health.set_group_namer(group_namer(enricher) if enricher else prefix_group)
        self._forget_enrichment()

    def _forget_enrichment(self) -> None:
        rows = self.table.live_rows()
        self.table.set_column("src_ent", rows, -1)
        self.table.set_column("dst_ent", rows, -1)

    def _merged(self, d: Drain) -> None:
        """TCP samples and enrichment onto the merged rows (before FIN flows leave)."""
        self.last_tcp = join(self.table, d.tcp, d.now_ns)
        if self.enricher is None:
            return
        if self.enricher.maybe_reload():
            self._forget_enrichment()
            assert self.tcp_health is not None
            self.tcp_health.set_group_namer(group_namer(self.enricher))
        live = self.table.live_rows()
        rows = live[self.table.column("src_ent", live) < 0]
        if len(rows):
            keys = self.table.keys_at(rows)
            ver = keys["ip_version"]
            for end in ("src", "dst"):
                eids = self.enricher.lookup(keys[end], ver)
                self.table.set_column(f"{end}_ent", rows, eids)
                self.table.set_column(f"{end}_asn", rows, self.enricher.asn_of(eids))

    def step(self) -> FlowBatch:
        """Drain one interval, merge it, apply timeouts, hand ended flows to sinks."""
        t0 = time.perf_counter()
        d = self._drain()
        ended = self.table.merge_many(d.batches, d.interval, on_merged=lambda: self._merged(d))
        assert self.tcp_health is not None
        self.tcp_health.update(self.last_tcp, d.now_ns / 1e9)
        expired = self.table.expire(d.now_ns)
        batch = FlowBatch.concat([ended, expired], self.table.clock_offset)
        self._emit(batch)
        self.stats.polls += 1
        self.stats.last_poll_seconds = time.perf_counter() - t0
        for observe in self.observers:
            observe(self)
        return batch

    def _drain(self) -> Drain:
        d = self.collector.drain()
        if self.exclude is not None:
            own = self.exclude()
            if own:
                d = Drain(
                    [exclude_sockets(k, s, own) for k, s in d.batches], d.now_ns, d.interval, d.tcp
                )
        self.last_drain = d
        return d

    def _emit(self, batch: FlowBatch) -> None:
        if len(batch) == 0:
            return
        if self.enricher is not None and batch.ext is not None:
            # Flows that never had a row (no room) were not looked up yet.
            miss = batch.ext["src_ent"] < 0
            if miss.any():
                ver = batch.keys["ip_version"][miss]
                for end in ("src", "dst"):
                    eids = self.enricher.lookup(batch.keys[end][miss], ver)
                    batch.ext[f"{end}_ent"][miss] = eids
                    batch.ext[f"{end}_asn"][miss] = self.enricher.asn_of(eids)
        self.stats.ended += len(batch)
        for sink in self.sinks:
            sink.flows_ended(batch)

    def shutdown(self) -> FlowBatch:
        """Detach, drain what was counted until then, end every live flow (forced end).

        Detaching first means nothing counted after the last drain is lost.
        """
        self.collector.stop_capture()
        d = self._drain()
        ended = self.table.merge_many(d.batches, d.interval, on_merged=lambda: self._merged(d))
        flushed = self.table.flush()
        batch = FlowBatch.concat([ended, flushed], self.table.clock_offset)
        self._emit(batch)
        return batch

    def interface_counters(self) -> list[InterfaceCounters]:
        return self.collector.interface_counters()

    def health(self) -> CollectorHealth:
        return self.collector.health(self.table.forced_evictions)

    def run(
        self,
        stop: StopSignal,
        duration: float | None = None,
        on_tick: Callable[[Engine], None] | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Poll every interval until stop is set, duration has passed or until()."""
        end = None if duration is None else time.monotonic() + duration
        next_tick = time.monotonic() + self.interval
        while not stop.is_set() and not (until is not None and until()):
            now = time.monotonic()
            deadline = next_tick if end is None else min(next_tick, end)
            if deadline > now:
                stop.wait_with(self.collector.wait, deadline - now)
                continue
            if end is not None and now >= end:
                return
            self.step()
            if on_tick is not None:
                on_tick(self)
            next_tick += self.interval
            if next_tick < now:  # we fell behind: don't burst to catch up
                next_tick = now + self.interval


def exclude_sockets(
    keys: np.ndarray, stats: np.ndarray, own: list[tuple[int, str, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Drop flows to or from the given (proto, address, port) sockets."""
    drop = np.zeros(len(keys), dtype=bool)
    for proto, addr, port in own:
        ip = ipaddress.ip_address(addr)
        if ip.is_unspecified:
            continue
        raw = np.frombuffer(ip.packed.ljust(16, b"\0"), dtype="V16")[0]
        same = (keys["proto"] == proto) & (keys["ip_version"] == ip.version)
        drop |= same & (keys["src"] == raw) & (keys["sport"] == port)
        drop |= same & (keys["dst"] == raw) & (keys["dport"] == port)
    if not drop.any():
        return keys, stats
    return keys[~drop], stats[~drop]


class StopSignal:
    """SIGINT/SIGTERM (and callers) set it; it wakes the engine's wait at once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        os.set_blocking(self._r, False)
        self.signal: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        self.set()

    def set(self) -> None:
        self._event.set()
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"x")

    def wake(self) -> None:
        """Interrupt a wait without stopping (a signal that wants attention)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"w")

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def fileno(self) -> int:
        return self._r

    def wait_with(self, waiter: Callable[[float, int], None], timeout: float) -> None:
        waiter(timeout, self._r)
        if not self.is_set():
            # A wake() without stop: consume it so the next wait waits.
            with contextlib.suppress(BlockingIOError):
                os.read(self._r, 64)
