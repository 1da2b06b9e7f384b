"""Run: the one object that owns what a run starts, and closes it again.

Every mode (the live view, `flowtop dump`, `--export-only`, `--replay`) gets
its parts from a Run. start() (or entering `with Run(...) as run`) makes them
in this order, asking the stop flag (StopSignal.check) before each next one:

  1. enricher   ASN/geo databases, labels, local networks   (not for --replay)
  2. collector  the BPF programs compiled and loaded, not yet attached; for
                --replay the recording instead (ReplaySource, with its engine)
  3. attach     collector.start(): the programs go onto the interfaces
  4. engine     flow table and loop over the collector; the enricher is
                hooked into it (it holds nothing to close)
  5. recorder   --record FILE
  6. outputs    IPFIX exporters, the Prometheus listener    (modes that export),
                hooked into the engine
  7. resolvers  reverse DNS, made when the mode asks (resolver()): dump after
                collecting, the live view when it first shows a name

The cheap parts that fail on a bad config come before the compile (the
config itself checked the outputs' addresses); the recording file is opened
only once the programs load.
The engine, the recorder and the outputs come after the attachment: their
imports (the flow table and queries, prometheus_client, http.server, the
IPFIX encoder) and sockets are nothing the first attachment needs, and a
start is timed to it (issue 13). The kernel counts meanwhile and the
engine's first drain comes an interval after start() returns; a part that
fails there (a port in use, a recording that cannot be written) detaches
again like any later failure.

close() closes them in the reverse order, each exactly once: resolvers,
outputs (IPFIX flushed within `flush` seconds), recorder, collector (detach,
free the programs), enricher. That happens on every path:

- normal end: the mode calls shutdown() first (detach, the last drain, every
  flow ended and handed to the sinks), then close() or leaves the `with`;
- SIGINT/SIGTERM: they set the stop flag; during start() the next check
  raises Interrupted (an error, below), afterwards the mode's loop ends and
  it ends normally;
- an error: an exception while starting a part closes the parts started
  before it and propagates; one raised later propagates through the `with`,
  which closes everything;
- reload (SIGHUP in export-only): replace_enricher() puts the new enricher
  into the engine before the old one is closed; Outputs.reload() builds a
  new IPFIX exporter before the old one goes. A reload that fails keeps what
  runs (the caller logs one line).

A part whose close fails does not keep the others open, and each failure is
reported once: the first one is raised after all are closed (when no other
exception is on its way), any other is logged as one line.

Ownership: the Run owns every part above. The engine, LiveSource and the
outputs only use what they are given; the live view gets its resolver from
resolver() (and may close it early: closing twice is harmless).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from flowtop.config import Config, EnrichConfig, ListenConfig
from flowtop.sanitize import clean
from flowtop.stop import StopSignal

# The engine, the flow table and the monitors (numpy, pyroute2) are imported
# where a run makes them: the cli reads program_options() from here before
# that, to start the TC program's build (or its load from the program cache)
# as early as it can, beside those imports.
if TYPE_CHECKING:
    from flowtop.core.engine import Engine
    from flowtop.enrich import Enricher
    from flowtop.enrich.dns import ReverseResolver
    from flowtop.kernel.collector import KernelCollector
    from flowtop.kernel.tcrequest import ProgramOptions
    from flowtop.listen.collector import ListenCollector
    from flowtop.run.outputs import Outputs
    from flowtop.run.record import Recorder, ReplaySource
    from flowtop.wirenames.reader import WireSource

log = logging.getLogger("flowtop")

FLUSH_SECONDS = 1.5  # IPFIX flush at a normal end: of the 2 s between SIGTERM and SIGKILL
ERROR_FLUSH_SECONDS = 0.2  # on the way out with an error: do not hang on a collector

T = TypeVar("T")


def program_options(cfg: Config) -> ProgramOptions:
    """The TC program's build options from a run's config: one place, for the
    cli's early compile (kernel/build.begin_early) and the collector that
    takes it over (the two must ask for the same build)."""
    from flowtop.kernel.tcrequest import ProgramOptions, wire_options

    c, n = cfg.collector, cfg.names
    return ProgramOptions(
        flow_map_size=c.map_size,
        passive_rtt=c.passive_rtt,
        wire=wire_options(n.enabled, n.dns_ports, n.rate),
    )


class Parts:
    """How a Run makes each part: the real ones. Tests pass a subclass that
    replaces some with fakes (a collector without a kernel, say)."""

    def enricher(self, cfg: EnrichConfig) -> Enricher:
        """ASN/geo databases, labels and local networks; a bad database is a
        warning, a bad labels file a ConfigError."""
        from flowtop.enrich import Enricher, EnrichOptions

        return Enricher(
            EnrichOptions(
                geoip_asn=cfg.geoip_asn,
                geoip_city=cfg.geoip_city,
                labels=cfg.labels,
                host_zone=cfg.host_zone,
            ),
            warn=lambda msg: log.warning("%s", msg),
        )

    def outputs(self, cfg: Config) -> Outputs:
        from flowtop.run.outputs import Outputs

        return Outputs(cfg)

    def collector(self, config: Config, checkpoint: Callable[[], None]) -> KernelCollector:
        """Compiled and loaded, not attached; checkpoint is called between its
        steps (what it raises leaves nothing behind: the collector closes itself)."""
        from flowtop.kernel.collector import KernelCollector
        from flowtop.kernel.owners import REREPORT_MAX

        cfg = config.collector
        options = program_options(config)
        return KernelCollector(
            interfaces=cfg.interfaces,
            flow_map_size=options.flow_map_size,
            tc_priority=cfg.tc_priority,
            attach=cfg.attach,
            sockops=cfg.sockops,
            passive_rtt=options.passive_rtt,
            names=options.wire,
            checkpoint=checkpoint,
            owners=cfg.owners,
            drops=cfg.drops,
            # An idle socket's tuple must be reported again before the owner
            # table forgets it (after an idle timeout without flows).
            owner_rereport=min(REREPORT_MAX, cfg.idle_timeout / 2),
        )

    def listener(self, cfg: ListenConfig) -> ListenCollector:
        """The sockets bound (a port in use fails here), not yet receiving."""
        from flowtop.listen.collector import ListenCollector, ListenOptions

        return ListenCollector(
            ListenOptions(
                urls=cfg.urls,
                max_exporters=cfg.max_exporters,
                max_templates=cfg.max_templates,
                template_lifetime=cfg.template_lifetime,
                queue_bytes=cfg.queue_mb * 1024 * 1024,
            )
        )

    def replay(self, path: str, speed: float) -> ReplaySource:
        from flowtop.run.record import ReplaySource

        return ReplaySource(path, speed)

    def recorder(self, path: str, host: str, interval: float, clock_offset: float) -> Recorder:
        from flowtop.run.record import Recorder

        return Recorder(path, host, interval, clock_offset)

    def resolver(self, on_resolved: Callable[[], None] | None) -> ReverseResolver:
        from flowtop.enrich.dns import ReverseResolver

        return ReverseResolver(on_resolved=on_resolved)


@dataclass(frozen=True, slots=True)
class _Open:
    name: str  # for the line that says its close failed
    close: Callable[[], None]


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())[:300]


def _no_check() -> None:
    pass


class Run:
    """The parts of one run, started in one order and closed in the reverse
    order on every path (see the module docstring).

    cfg: what to start. stop: the CLI's StopSignal, asked between the steps of
    start-up (None: never interrupted). outputs: start the IPFIX/Prometheus
    outputs (export-only always, the live view when configured). record: a
    recording to write. replay: a recording to play back instead of the kernel.
    """

    def __init__(
        self,
        cfg: Config,
        stop: StopSignal | None = None,
        *,
        outputs: bool = False,
        record: str | None = None,
        replay: str | None = None,
        speed: float = 1.0,
        parts: Parts | None = None,
    ) -> None:
        self.cfg = cfg
        self._check = stop.check if stop is not None else _no_check
        self._want_outputs = outputs
        self._record = record
        self._replay_path = replay
        self._speed = speed
        self._parts = parts or Parts()
        self.enricher: Enricher | None = None
        self.outputs: Outputs | None = None
        self.recorder: Recorder | None = None
        self.replay: ReplaySource | None = None
        self.names: list[str] = []  # the interfaces start() attached to
        self._kernel: KernelCollector | ListenCollector | None = None
        self._engine: Engine | None = None
        self._open: list[_Open] = []  # in start order
        self._state = "new"  # -> "started" -> "closed"
        self._shut_down = False
        self._flush = ERROR_FLUSH_SECONDS

    # -- the parts ---------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the run has not started")
        return self._engine

    @property
    def collector(self) -> KernelCollector | ListenCollector:
        """The kernel collector, or the listener with --listen (every mode but --replay)."""
        if self._kernel is None:
            raise RuntimeError("this run has no kernel collector")
        return self._kernel

    # -- start -------------------------------------------------------------------------------

    def start(self) -> Run:
        """Start every part (module docstring); on any exception, including
        Interrupted, the parts already started are closed and it propagates."""
        if self._state != "new":
            raise RuntimeError(f"run already {self._state}")
        self._state = "started"
        try:
            if self._replay_path is not None:
                self._start_replay(self._replay_path)
            else:
                self._start_kernel()
        except BaseException:
            self._close_all(ERROR_FLUSH_SECONDS, raise_first=False)
            raise
        return self

    def _own(self, name: str, part: T, close: Callable[[], None]) -> T:
        self._open.append(_Open(name, close))
        return part

    def _start_replay(self, path: str) -> None:
        self._check()
        from flowtop.query import monitors

        replay = self._parts.replay(path, self._speed)
        self.replay = self._own("the recording", replay, replay.close)
        self._engine = replay.engine
        monitors.configure(self._engine, self.cfg)
        self._check()

    def _start_kernel(self) -> None:
        cfg, parts, check = self.cfg, self._parts, self._check
        check()
        self.enricher = self._own(
            "the enrichment", parts.enricher(cfg.enrich), self._close_enricher
        )
        check()
        # --listen / [listen]: received flows take the kernel's place (no root, no BPF)
        source: KernelCollector | ListenCollector
        kernel: KernelCollector | None = None
        listener: ListenCollector | None = None
        if cfg.listen.urls:
            source = listener = parts.listener(cfg.listen)
        else:
            source = kernel = parts.collector(cfg, check)
        self._kernel = self._own("the collector", source, source.close)
        self.names = source.start()  # checks stop between its steps and after the last
        check()
        # The engine after the attachment: its imports (the flow table, the
        # queries, the monitors) are nothing the attachment needs, and it
        # holds nothing to close; the kernel counts meanwhile, the first
        # drain comes an interval after start() (module docstring).
        from flowtop.core.engine import Engine
        from flowtop.core.flowtable import FlowTable
        from flowtop.query import monitors

        c = cfg.collector
        table = FlowTable(
            max_flows=c.max_flows, idle_timeout=c.idle_timeout, active_timeout=c.active_timeout
        )
        self._engine = Engine(source, table, interval=c.interval, enricher=self.enricher)
        monitors.configure(self._engine, cfg)  # [health] thresholds, [[monitor]], zones
        check()
        if self._record is not None:
            host = clean(socket.gethostname())
            rec = parts.recorder(self._record, host, c.interval, table.clock_offset)
            self.recorder = self._own("the recording", rec, rec.close)
            check()
        if self._want_outputs:
            self._start_outputs(listener)
        if kernel is None:  # listening: no local sockets, drops or wire names
            return
        owner = getattr(kernel, "owners", None)  # stand-in collectors (tests) have none
        if owner is not None:
            from flowtop.core.cgroups import CgroupPaths
            from flowtop.core.owners import OwnerTable

            # Entries live as long as the flows (the engine keeps live ones alive).
            owners = OwnerTable(CgroupPaths(owner.cgroup), idle_timeout=c.idle_timeout)
            self.engine.use_owners(owners, kernel.owner_snapshot)
        dropper = getattr(kernel, "drops", None)  # stand-in collectors (tests) have none
        if dropper is not None and dropper.reasons is not None:
            self.engine.use_drops(dropper.reasons)
        # kernel/wirecapture.WireCapture, None when off; stand-in collectors have none
        self._start_wire_names(getattr(kernel, "wire_capture", None))

    def _start_outputs(self, listener: ListenCollector | None) -> None:
        """The exports, hooked into the engine (after the attachment: the
        module docstring says why; the engine's first drain comes later)."""
        outputs = self._parts.outputs(self.cfg)
        self.outputs = self._own("the exports", outputs, lambda: outputs.close(self._flush))
        outputs.attach(self.engine)
        metrics = outputs.metrics
        if metrics is not None and listener is not None:  # the exporters' series
            exporters = listener.exporters
            self.engine.observers.append(lambda _e: metrics.set_listen(exporters()))
        self._check()

    def _start_wire_names(self, capture: WireSource | None) -> None:
        """Names from the wire (issue 16): a reader thread feeds WireNames from
        the collector's capture (None: off); it stops before the collector
        closes the capture (parts close in reverse order)."""
        if capture is None:
            return
        from flowtop.wirenames.names import WireNames
        from flowtop.wirenames.reader import WireNameReader

        # Connection names live as long as the flows (the engine's join keeps them).
        names = WireNames(
            idle_timeout=self.cfg.collector.idle_timeout, ttl_floor=self.cfg.names.min_ttl
        )
        reader = WireNameReader(capture, names)
        self._own("the wire name reader", reader, reader.stop)
        reader.start()
        self.engine.use_names(names, reader.catch_up)

    def resolver(self, on_resolved: Callable[[], None] | None = None) -> ReverseResolver:
        """A reverse DNS resolver that this run closes (first of its parts).
        on_resolved: called from a worker thread when a name arrives."""
        if self._state != "started":
            raise RuntimeError(f"resolver() on a run that is {self._state}")
        r = self._parts.resolver(on_resolved)
        return self._own("the reverse DNS resolver", r, r.close)

    # -- while it runs -----------------------------------------------------------------------

    def replace_enricher(self, cfg: EnrichConfig) -> None:
        """Reload: a new enricher from cfg goes into the engine, then the old
        one is closed (once). A FlowtopError making it (a bad labels file)
        changes nothing: the running enricher stays."""
        new = self._parts.enricher(cfg)
        try:
            self.engine.set_enricher(new)
        except BaseException:
            new.close()
            raise
        old, self.enricher = self.enricher, new
        if old is not None:
            self._close_quietly("the previous enrichment", old.close)

    def shutdown(self) -> None:
        """The normal end: detach, take the last drain, end every live flow
        (handed to the sinks: IPFIX, dump's accumulator). Once; a replay has
        nothing to end. The parts stay open until close()."""
        if self._shut_down or self._kernel is None or self._engine is None:
            return
        self._shut_down = True
        self._engine.shutdown()

    # -- close -------------------------------------------------------------------------------

    def _close_enricher(self) -> None:
        if self.enricher is not None:  # the current one: a reload may have replaced it
            self.enricher.close()

    def close(self, flush: float = FLUSH_SECONDS) -> None:
        """Close every part in the reverse order of start, each once; IPFIX is
        flushed within `flush` seconds. The first failure is raised after all
        are closed, any other logged. A second call does nothing."""
        self._close_all(flush, raise_first=True)

    def __enter__(self) -> Run:
        if self._state == "new":
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._close_all(FLUSH_SECONDS, raise_first=True)
        else:  # that exception goes on; failures to close are logged
            self._close_all(ERROR_FLUSH_SECONDS, raise_first=False)

    def _close_all(self, flush: float, raise_first: bool) -> None:
        self._state = "closed"
        self._flush = flush
        first: BaseException | None = None
        while self._open:
            part = self._open.pop()
            try:
                part.close()
            except BaseException as exc:  # the other parts must still close
                if raise_first and first is None:
                    first = exc
                else:
                    log.error("closing %s failed: %s", part.name, _one_line(exc))
        if first is not None:
            raise first

    @staticmethod
    def _close_quietly(name: str, close: Callable[[], None]) -> None:
        try:
            close()
        except Exception as exc:  # the run goes on with its successor
            log.error("closing %s failed: %s", name, _one_line(exc))
