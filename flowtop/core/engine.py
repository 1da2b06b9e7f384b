"""The loop shared by every mode: collector -> flow table -> sinks.

The engine never imports Textual; views and exporters consume what it hands
them (flow-end batches, and the table itself for top-N queries).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from flowtop.core.drops import DropTable
from flowtop.core.flowtable import FlowBatch, FlowTable, empty_batch
from flowtop.core.joins import NameJoin, OwnerJoin
from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.core.owners import OwnerTable
from flowtop.core.readings import EngineReadings, owner_bytes, remote_bytes
from flowtop.errors import CollectorFailedError
from flowtop.kernel.collector import Drain
from flowtop.stop import StopSignal
from flowtop.wirenames.names import WireNames

if TYPE_CHECKING:
    from flowtop.core.procsockets import ProcSnapshot
    from flowtop.enrich import Enricher
    from flowtop.kernel.dropreasons import DropReasons

from flowtop.core.tcphealth import GroupNamer, HealthTracker, TcpUpdate, join, prefix_group

log = logging.getLogger("flowtop.engine")

# Intervals in a row whose drain failed before a run gives up: a kernel map
# that fails once is skipped and counted; one that never works again ends
# the run with one line instead of a view that silently shows nothing.
MAX_DRAIN_FAILURES = 10


def _enricher_errors(enricher: Enricher | None) -> int:
    # Enricher.errors; stand-ins (tests) without it have none.
    return int(getattr(enricher, "errors", 0)) if enricher is not None else 0


def _one_line(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return " ".join(text.split())[:300]


class PartFailures:
    """The failures of one part that runs beside the flow path (the drain,
    enrichment, the exports, the recorder): every one counted,
    one log line when a run of them starts (per source) and one when it
    ends, never one per interval. Thread-safe: exporters and the metrics
    server count from their own threads."""

    def __init__(self, part: str, what: str) -> None:
        self.part = part  # shown as f"{part}_errors" (CollectorHealth)
        self.what = what  # for the log line: "reading the kernel maps"
        self.total = 0
        self._streaks: dict[str, int] = {}
        self._lock = threading.Lock()

    def failed(self, exc: BaseException | str, source: str = "") -> int:
        """Count a failure of `source`; returns how many in a row it has had."""
        with self._lock:
            self.total += 1
            streak = self._streaks.get(source, 0) + 1
            self._streaks[source] = streak
        if streak == 1:
            log.warning(
                "%s%s failed: %s; going on (counted in %s_errors)",
                self.what,
                f" ({source})" if source else "",
                _one_line(exc),
                self.part,
            )
        return streak

    def ok(self, source: str = "") -> None:
        with self._lock:
            streak = self._streaks.pop(source, 0)
        if streak:
            log.info(
                "%s%s works again after %d failure(s)",
                self.what,
                f" ({source})" if source else "",
                streak,
            )

    def ok_except(self, failing: set[str]) -> None:
        """Every source but those in failing works (again)."""
        with self._lock:
            back = [src for src in self._streaks if src not in failing]
        for src in back:
            self.ok(src)


@dataclass
class Failures:
    """One counter per part; Engine.health() shows each as <part>_errors."""

    drain: PartFailures = field(
        default_factory=lambda: PartFailures("drain", "reading the kernel maps")
    )
    enrich: PartFailures = field(default_factory=lambda: PartFailures("enrich", "enrichment"))
    output: PartFailures = field(default_factory=lambda: PartFailures("output", "an export"))
    record: PartFailures = field(
        default_factory=lambda: PartFailures("record", "writing the recording")
    )


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
    # Called after every step (metrics: they read Engine.readings()); the engine's thread.
    observers: list[Callable[[Engine], None]] = field(default_factory=list)
    # (proto, address, port) of sockets whose flows must not be measured:
    # flowtop's own export traffic.
    exclude: Callable[[], list[tuple[int, str, int]]] | None = None
    # ASN/geo/labels for both ends of every flow (flowtop.enrich.Enricher).
    enricher: Enricher | None = None
    tcp_health: HealthTracker | None = None
    last_tcp: TcpUpdate = field(default_factory=TcpUpdate)
    failures: Failures = field(default_factory=Failures)
    _enrich_errors_before: int = 0  # of enrichers replaced since (reload)
    # Who owns the local sockets (core/owners.py), None: no attribution (off,
    # failed to start, a replay). Fed by Drain.owners; its names resolve the
    # flows' comm_id/service_id/container_id/pod_id (owners.names).
    owners: OwnerTable | None = None
    # Names from the wire (wirenames/names.py), None: off (not collected, a
    # replay). Fed by its reader thread (wirenames/reader.py); its `names`
    # resolve the flows' src_name_id/dst_name_id/name_cname_id.
    names: WireNames | None = None
    # The joins of those two onto the flows (core/joins.py), made by use_owners/use_names.
    _joins: list[OwnerJoin | NameJoin] = field(default_factory=list)
    _names_catch_up: Callable[[], object] | None = None
    # Kernel drops per flow key and reason (core/drops.py), made by use_drops
    # (the run, once the drop program runs) or at the first drain that carries
    # drop reasons (Drain.drop_reasons); None: no drops
    # collected (off, failed to start, a replay). Entries of keys without a
    # live flow go after drop_keep_s without drops (None: kept for the run: dump).
    drops: DropTable | None = None
    drop_keep_s: float | None = 60.0

    def __post_init__(self) -> None:
        if self.tcp_health is None:
            self.tcp_health = HealthTracker(ifname=self.ifname)
        if self.enricher is not None:
            self.tcp_health.set_group_namer(group_namer(self.enricher))

    def ifname(self, ifindex: int) -> str:
        return self.collector.names().get(ifindex, str(ifindex))

    def set_enricher(self, enricher: Enricher | None) -> None:
        """Replaces the enricher (reload); live flows are looked up again."""
        self._enrich_errors_before += _enricher_errors(self.enricher)
        self.enricher = enricher
        assert self.tcp_health is not None
        self.tcp_health.set_group_namer(group_namer(enricher) if enricher else prefix_group)
        self._forget_enrichment()

    def _forget_enrichment(self) -> None:
        rows = self.table.live_rows()
        self.table.set_column("src_ent", rows, -1)
        self.table.set_column("dst_ent", rows, -1)

    def _merged(self, d: Drain) -> None:
        """TCP samples, names, owners, drops and enrichment onto the merged
        rows (before FIN flows leave)."""
        self.last_tcp = join(self.table, d.tcp, d.now_ns)
        for j in self._joins:
            try:
                j.rows(self.table, d, self.interval)
            except Exception as exc:  # the rows stay pending and are tried again
                self.failures.enrich.failed(exc, j.what)
            else:
                self.failures.enrich.ok(j.what)
        if d.drops is not None and d.drop_reasons is not None:
            try:
                self._join_drops(d)
            except Exception as exc:  # this interval's drops miss their flows (counted)
                self.failures.enrich.failed(exc, "drops")
            else:
                self.failures.enrich.ok("drops")
        if self.enricher is None:
            return
        try:
            self._enrich_rows(self.enricher)
        except Exception as exc:  # the rows stay unenriched and are tried again next time
            self.failures.enrich.failed(exc)
        else:
            self.failures.enrich.ok()

    def use_owners(self, owners: OwnerTable, snapshot: ProcSnapshot | None = None) -> None:
        """Attribute flows from now on: owners is fed each drain's Drain.owners;
        snapshot (the sockets older than the owner programs) goes in first."""
        if snapshot is not None:
            owners.add_snapshot(snapshot)
        self.owners = owners
        self._joins = [j for j in self._joins if not isinstance(j, OwnerJoin)]
        self._joins.append(OwnerJoin(owners))

    def use_drops(self, reasons: DropReasons) -> None:
        """Join drops from now on (the collector's drop program runs): the
        view's drop filter terms work before the first drain."""
        if self.drops is None:
            self.drops = DropTable(reasons, keep_s=self.drop_keep_s)

    def keep_all_drops(self) -> None:
        """Keep every key's drops for the run (dump: its run is bounded)."""
        self.drop_keep_s = None
        if self.drops is not None:
            self.drops.keep_ns = None

    def _join_drops(self, d: Drain) -> None:
        """The interval's drops onto their flows' rows (DropTable.join: one
        vectorised key lookup), after the counters merged and before FIN
        flows leave, so their last records carry them."""
        assert d.drops is not None and d.drop_reasons is not None
        self.use_drops(d.drop_reasons)
        assert self.drops is not None
        self.drops.join(self.table, d.drops, d.now_ns)
        self.drops.expire(self.table, d.now_ns)
        assert self.tcp_health is not None
        self.tcp_health.add_drops(d.drops, d.drop_reasons, d.now_ns / 1e9)

    def use_names(self, names: WireNames, catch_up: Callable[[], object] | None = None) -> None:
        """Name flows from the wire from now on (a reader thread feeds names;
        catch_up, when given, feeds what is still waiting at once: shutdown()
        calls it before its last join)."""
        self.names = names
        self._names_catch_up = catch_up
        self._joins = [j for j in self._joins if not isinstance(j, NameJoin)]
        self._joins.insert(0, NameJoin(names))

    @property
    def owners_unattributed(self) -> int:
        """Flows settled unattributed so far (CollectorHealth.owners_unattributed)."""
        return sum(j.unattributed for j in self._joins if isinstance(j, OwnerJoin))

    def _enrich_rows(self, enricher: Enricher) -> None:
        if enricher.maybe_reload():
            self._forget_enrichment()
            assert self.tcp_health is not None
            self.tcp_health.set_group_namer(group_namer(enricher))
        live = self.table.live_rows()
        rows = live[self.table.column("src_ent", live) < 0]
        if len(rows):
            keys = self.table.keys_at(rows)
            ver = keys["ip_version"]
            for end in ("src", "dst"):
                eids = enricher.lookup(keys[end], ver)
                self.table.set_column(f"{end}_ent", rows, eids)
                self.table.set_column(f"{end}_asn", rows, enricher.asn_of(eids))

    def step(self) -> FlowBatch:
        """Drain one interval, merge it, apply timeouts, hand ended flows to sinks.

        A drain that fails is counted (drain_errors) and its interval skipped;
        after MAX_DRAIN_FAILURES in a row, CollectorFailedError ends the run.
        """
        t0 = time.perf_counter()
        try:
            d = self._drain()
        except Exception as exc:  # KernelFeatureError/OSError from a map read, or any collector's
            # Nothing new this interval: observers must not count the last one twice.
            self.last_drain, self.last_tcp = None, TcpUpdate()
            self._drain_failed(exc)
            self._observe()
            return empty_batch(self.table.clock_offset)
        ended = self.table.merge_many(d.batches, d.interval, on_merged=lambda: self._merged(d))
        assert self.tcp_health is not None
        self.tcp_health.update(self.last_tcp, d.now_ns / 1e9)
        expired = self.table.expire(d.now_ns)
        batch = FlowBatch.concat([ended, expired], self.table.clock_offset)
        self._emit(batch)
        self.stats.polls += 1
        self.stats.last_poll_seconds = time.perf_counter() - t0
        self._observe()
        return batch

    def _drain_failed(self, exc: Exception) -> None:
        streak = self.failures.drain.failed(exc)
        if streak >= MAX_DRAIN_FAILURES:
            raise CollectorFailedError(
                f"reading the kernel maps failed {streak} intervals in a row, giving up: "
                f"{_one_line(exc)}"
            ) from None

    def _observe(self) -> None:
        for observe in self.observers:
            name = getattr(observe, "__qualname__", f"{type(observe).__name__} observer")
            try:
                observe(self)
            except Exception as exc:  # a metrics update must not stop the collection
                self.failures.output.failed(exc, name)
            else:
                self.failures.output.ok(name)

    def _drain(self) -> Drain:
        d = self.collector.drain()
        # The flow map ("") was read; so was every part not named in d.errors.
        self.failures.drain.ok_except({what for what, _why in d.errors})
        for what, why in d.errors:
            self.failures.drain.failed(why, what)
        if self.exclude is not None:
            own = self.exclude()
            if own:
                d = replace(d, batches=[exclude_sockets(k, s, own) for k, s in d.batches])
        self.last_drain = d
        return d

    def _emit(self, batch: FlowBatch) -> None:
        if len(batch) == 0:
            return
        for j in self._joins:
            try:
                j.ended(batch)
            except Exception as exc:  # they go out without it rather than not at all
                self.failures.enrich.failed(exc, f"{j.what} of ended flows")
            else:
                self.failures.enrich.ok(f"{j.what} of ended flows")
        if self.enricher is not None:
            try:
                self._enrich_batch(self.enricher, batch.columns, batch.keys)
            except Exception as exc:  # the flows go out without AS/geo rather than not at all
                self.failures.enrich.failed(exc, "ended flows")
            else:
                self.failures.enrich.ok("ended flows")
        self.stats.ended += len(batch)
        for sink in self.sinks:
            name = type(sink).__name__
            try:
                sink.flows_ended(batch)
            except Exception as exc:  # one failing export must not stop the others
                self.failures.output.failed(exc, name)
            else:
                self.failures.output.ok(name)

    @staticmethod
    def _enrich_batch(enricher: Enricher, ext: Mapping[str, np.ndarray], keys: np.ndarray) -> None:
        # Flows that never had a row (no room) were not looked up yet.
        miss = ext["src_ent"] < 0
        if miss.any():
            ver = keys["ip_version"][miss]
            for end in ("src", "dst"):
                eids = enricher.lookup(keys[end][miss], ver)
                ext[f"{end}_ent"][miss] = eids
                ext[f"{end}_asn"][miss] = enricher.asn_of(eids)

    def shutdown(self) -> FlowBatch:
        """Detach, drain what was counted until then, end every live flow (forced end).

        Detaching first means nothing counted after the last drain is lost.
        """
        self.collector.stop_capture()
        if self._names_catch_up is not None:
            self._names_catch_up()
        try:
            d = self._drain()
        except Exception as exc:  # the last interval is lost (counted); the rest still ends
            self.failures.drain.failed(exc)
            ended = empty_batch(self.table.clock_offset)
        else:
            ended = self.table.merge_many(d.batches, d.interval, on_merged=lambda: self._merged(d))
        flushed = self.table.flush()
        batch = FlowBatch.concat([ended, flushed], self.table.clock_offset)
        self._emit(batch)
        return batch

    def interface_counters(self) -> list[InterfaceCounters]:
        return self.collector.interface_counters()

    def readings(self) -> EngineReadings:
        """The read side for the exports: what the last step left (engine thread)."""
        d = self.last_drain
        enricher = self.enricher
        assert self.tcp_health is not None
        return EngineReadings(
            drain=d,
            remote=remote_bytes(d, enricher) if d is not None and enricher is not None else None,
            owners=(
                owner_bytes(d, self.owners, self.table)
                if d is not None and self.owners is not None
                else None
            ),
            tcp=self.last_tcp,
            names=self.collector.names(),
            interfaces=self.interface_counters(),
            active_flows=len(self.table),
            health=self.health(),
            poll_seconds=self.stats.last_poll_seconds,
            polls=self.stats.polls,
            tcp_groups=tuple(self.tcp_health.groups()),
        )

    def health(self) -> CollectorHealth:
        """The collector's counters with every part's failures (<part>_errors)."""
        h = self.collector.health(self.table.forced_evictions)
        f = self.failures
        enrich = self._enrich_errors_before + _enricher_errors(self.enricher)
        names = self._names_health()
        enrich += names["read_errors"]
        return replace(
            h,
            drain_errors=h.drain_errors + f.drain.total,
            enrich_errors=h.enrich_errors + f.enrich.total + enrich,
            output_errors=h.output_errors + f.output.total,
            record_errors=h.record_errors + f.record.total,
            owners_unattributed=h.owners_unattributed + self.owners_unattributed,
            names_dropped=h.names_dropped + names["dropped"],
            names_unparsed=h.names_unparsed + names["unparsed"],
            names_malformed=h.names_malformed + names["malformed"],
        )  # resolve_errors: the resolvers count their own (dump and the view add them)

    def _names_health(self) -> dict[str, int]:
        """CollectorHealth's names_* counters (and the reader's read errors,
        counted in enrich_errors) from WireNames.counters; 0 when off."""
        c = self.names.counters() if self.names is not None else {}
        g = c.get
        return {
            "dropped": g("evicted", 0) + g("first_dropped", 0) + g("quic_dropped", 0),
            "unparsed": g("dns_tcp_unparsed", 0)
            + g("first_incomplete", 0)
            + g("quic_unparsed", 0)
            + g("quic_off", 0),
            "malformed": g("dns_malformed", 0)
            + g("first_malformed", 0)
            + g("bad_packets", 0)
            + g("quic_malformed", 0),
            "read_errors": g("read_errors", 0),
        }

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
