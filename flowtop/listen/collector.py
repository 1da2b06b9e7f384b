"""ListenCollector: the engine's Collector over IPFIX / NetFlow received from exporters.

It has the interface of KernelCollector and ReplayCollector (start, drain,
wait, names, interfaces, interface_counters, health, stop_capture, close),
so the engine, the flow table, the live view, dump, IPFIX re-export and
Prometheus run on received flows unchanged. The reader thread (sockets.py)
only queues datagrams; drain() decodes everything queued since the last one
on the engine's thread and returns it as one batch of distinct keys.

No root and no kernel: nothing is attached anywhere. health() carries the
listener's counters (counters.py) in CollectorHealth.kernel; exporters()
the per-exporter table (`dump --json` "exporter" lines, Prometheus).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from dataclasses import dataclass

from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.kernel.collector import Drain
from flowtop.listen import counters as lc
from flowtop.listen import ipfix, netflow, sflow
from flowtop.listen.exporters import (
    DEFAULT_MAX_EXPORTERS,
    DEFAULT_MAX_TEMPLATES,
    DEFAULT_TEMPLATE_LIFETIME,
    ExporterTable,
)
from flowtop.listen.flows import Pending
from flowtop.listen.ifcounters import IfCounters
from flowtop.listen.ifmap import DEFAULT_CAP, IfMap
from flowtop.listen.sockets import DEFAULT_QUEUE_BYTES, Message, Receiver
from flowtop.listen.urls import ListenUrl

log = logging.getLogger("flowtop")


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """What config.ListenConfig hands the collector."""

    urls: tuple[ListenUrl, ...]
    max_exporters: int = DEFAULT_MAX_EXPORTERS
    max_templates: int = DEFAULT_MAX_TEMPLATES
    template_lifetime: float = DEFAULT_TEMPLATE_LIFETIME
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    max_interfaces: int = DEFAULT_CAP


class Decoder:
    """Messages -> exporter state and pending flows (no sockets: the bench and
    the unit tests drive it directly)."""

    def __init__(self, opts: ListenOptions) -> None:
        self.table = ExporterTable(opts.max_exporters, opts.max_templates, opts.template_lifetime)
        self.ifmap = IfMap(opts.max_interfaces)
        self.pending = Pending()
        self.ifcounters = IfCounters(self.ifmap)
        self._sflow = sflow.Batch()
        self.sflow_bulk: bool | None = None  # the sampled headers' reader (None: by size)
        self.lock = threading.Lock()  # decode/flows vs. exporters() from another thread

    def decode(self, messages: list[Message], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            for m in messages:
                ex = self.table.get(m.address, now)
                # a NetFlow port takes IPFIX too (version 10), as nfcapd does;
                # an IPFIX port only IPFIX.
                if m.protocol == "sflow":
                    sflow.decode(m.data, ex, self.table, self._sflow, self.ifcounters)
                elif m.protocol == "ipfix" or m.data[:2] == b"\x00\x0a":
                    ipfix.decode(m.data, ex, self.table, self.pending, now, m.tcp)
                else:
                    netflow.decode(m.data, ex, self.table, self.pending, now)
            # the sampled headers of every sFlow datagram above, read at once
            self._sflow.flush(self.pending, self.table.counters, self.sflow_bulk)

    def flows(self, now_ns: int) -> list[tuple]:  # type: ignore[type-arg]
        with self.lock:
            return self.pending.flows(self.ifmap, now_ns, self.table.counters)

    def exporters(self) -> list[dict[str, object]]:
        with self.lock:
            return [ex.as_dict() for ex in self.table]


class ListenCollector:
    def __init__(self, opts: ListenOptions) -> None:
        self.opts = opts
        self.decoder = Decoder(opts)
        self.receiver = Receiver(list(opts.urls), opts.queue_bytes)
        self._last_ns = time.monotonic_ns()
        self.program = self  # run/sources.py records program.counters() with each frame

    def start(self) -> list[str]:
        self.receiver.start()
        return self.interfaces()

    def drain(self) -> Drain:
        self.decoder.decode(self.receiver.take())
        now_ns = time.monotonic_ns()
        batches = self.decoder.flows(now_ns)
        interval = (now_ns - self._last_ns) / 1e9
        self._last_ns = now_ns
        return Drain(batches, now_ns, interval)

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        if timeout <= 0:
            return
        if wake_fd is None:
            time.sleep(timeout)
        else:
            select.select([wake_fd], [], [], timeout)

    def names(self) -> dict[int, str]:
        with self.decoder.lock:
            return self.decoder.ifmap.names()

    def fleet_entries(self, start: int = 0) -> list[tuple[str, int, int]]:
        """The synthetic ifindexes from start + 1 on, as (exporter, domain,
        exporter's ifindex): what query/exporters.ExporterArrays reads."""
        with self.decoder.lock:
            return self.decoder.ifmap.entries(start)

    def interfaces(self) -> list[str]:
        """The listening endpoints (what "collecting on" names)."""
        return list(self.receiver.bound)

    def interface_counters(self) -> list[InterfaceCounters]:
        """The interfaces exporters send counters of (sFlow counter samples)."""
        with self.decoder.lock:
            return self.decoder.ifcounters.interface_counters()

    def counters(self) -> dict[str, int]:
        with self.decoder.lock:
            out = dict(self.decoder.table.counters)
        out[lc.QUEUE_FULL] += self.receiver.queue_full
        out[lc.DECODE_ERRORS] += self.receiver.framing_errors
        return out

    def health(self, forced_evictions: int = 0) -> CollectorHealth:
        return CollectorHealth(kernel=self.counters(), forced_evictions=forced_evictions)

    def exporters(self) -> list[dict[str, object]]:
        return self.decoder.exporters()

    def reselect(self, patterns: object) -> None:
        """A reload that asks for interfaces: a listening run cannot switch (restart it)."""
        log.warning("config reload: interfaces ignored while listening (restart flowtop)")

    def stop_capture(self) -> None:
        """Stop receiving; what is queued is still decoded by the next drain."""
        self.receiver.close()

    def close(self) -> None:
        self.receiver.close()
