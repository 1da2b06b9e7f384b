"""The IPFIX Exporting Process: a flow-end Sink that sends to one or more collectors.

    exporter = IpfixExporter([("192.0.2.9", 4739)], transport="udp", domain_id=7)
    engine.sinks.append(exporter)
    ...
    exporter.close(timeout=5)  # on SIGTERM: sends what is queued, counts the rest

flows_ended() only queues the batch (per collector, bounded); each collector
has its own thread, transport session, sequence numbers and loss counters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from flowtop.core.flowtable import FlowBatch
from flowtop.errors import ConfigError
from flowtop.export.ipfix.link import CollectorLink, CollectorStats
from flowtop.export.ipfix.message import HEADER, MAX_MESSAGE_SIZE, SET_HEADER, Session
from flowtop.export.ipfix.records import EncodedRecords, split_by_version
from flowtop.export.ipfix.template import EXPORTER_RELIABILITY, Template, flow_template
from flowtop.export.ipfix.transport import make_transport

TRANSPORTS = ("udp", "tcp")
DEFAULT_PORT = 4739


@dataclass(frozen=True, slots=True)
class ExporterStats:
    """Totals over all collectors (each collector counts on its own), and each one."""

    messages_sent: int
    records_sent: int
    bytes_sent: int
    not_sent_flows: int
    not_sent_packets: int
    not_sent_octets: int
    send_errors: int
    connect_errors: int
    dropped_batches: int
    internal_errors: int
    collectors: tuple[CollectorStats, ...]

    @staticmethod
    def total(per: Sequence[CollectorStats]) -> ExporterStats:
        names = [f.name for f in fields(ExporterStats) if f.name != "collectors"]
        sums = {n: sum(getattr(c, n) for c in per) for n in names}
        return ExporterStats(**sums, collectors=tuple(per))


class IpfixExporter:
    """RFC 7011 exporter of flow-end records over UDP or TCP (a Sink for the engine)."""

    def __init__(
        self,
        collectors: Sequence[tuple[str, int]],
        transport: str = "udp",
        *,
        domain_id: int = 0,
        max_message_size: int = 1400,
        template_refresh: float | None = 60.0,
        template_refresh_messages: int | None = 1000,
        options_interval: float | None = 60.0,
        max_queue_flows: int = 1_000_000,
        send_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.5, 30.0),
        bgp: bool = False,
        process_id: int | None = None,
        clock: Callable[[], float] | None = None,
        start: bool = True,
    ) -> None:
        """Validate the settings (ConfigError) and start one sender thread per collector.

        template_refresh (s) and template_refresh_messages apply to UDP only:
        over TCP templates go once per connection, first. options_interval (s)
        paces the reliability statistics records (one more goes on close).
        max_queue_flows bounds what waits per collector: a batch that would
        pass it is refused and counted as not sent (an empty queue takes any
        batch, so the shutdown flush is never refused). send_timeout and
        connect_timeout bound each socket call of the sender thread;
        reconnect_backoff is (first, max) seconds, doubling. clock (unix
        seconds) drives export times, template refresh and drop times.
        """
        _validate(
            collectors,
            transport,
            domain_id,
            max_message_size,
            template_refresh,
            template_refresh_messages,
            options_interval,
            max_queue_flows,
        )
        self.bgp = bgp
        self.v4 = flow_template(4, bgp)
        self.v6 = flow_template(6, bgp)
        # Flows that carried an MPLS label go out with their top label.
        self.mpls = (flow_template(4, bgp, mpls=True), flow_template(6, bgp, mpls=True))
        self.templates: tuple[Template, ...] = (
            self.v4,
            self.v6,
            *self.mpls,
            EXPORTER_RELIABILITY,
        )
        _check_size(self.templates, max_message_size)
        self.transport = transport
        self.domain_id = domain_id
        pid = os.getpid() if process_id is None else process_id
        udp = transport == "udp"
        self._links: list[CollectorLink] = []
        for host, port in collectors:
            session = Session(
                domain_id,
                self.templates,
                max_message_size,
                refresh_interval=template_refresh if udp else None,
                refresh_messages=template_refresh_messages if udp else None,
                clock=clock,
            )
            link = CollectorLink(
                make_transport(transport, host, port),
                session,
                self._encode,
                CollectorStats((host, port), transport),
                process_id=pid & 0xFFFFFFFF,
                max_queue_flows=max_queue_flows,
                options_interval=options_interval,
                send_timeout=send_timeout,
                connect_timeout=connect_timeout,
                backoff=reconnect_backoff,
            )
            if udp:
                link.open_now()  # the source address is known at once; nothing is sent
            self._links.append(link)
        self._closed = False
        if start:
            self.start()

    def _encode(self, batch: FlowBatch) -> tuple[list[EncodedRecords], np.ndarray]:
        # With bgp the templates carry the AS numbers of both ends (the batch's
        # src_asn/dst_asn columns, from enrichment; 0 when unknown).
        return split_by_version(batch, self.v4, self.v6, self.mpls)

    def start(self) -> None:
        for link in self._links:
            link.start()

    def flows_ended(self, batch: FlowBatch) -> None:
        """Queue the batch for every collector; never blocks on the network."""
        for link in self._links:
            link.offer(batch)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is sent or counted as not sent."""
        return all(link.flush(timeout) for link in self._links)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within timeout), then a last statistics record; stop."""
        if self._closed:
            return
        self._closed = True
        for link in self._links:
            link.close(timeout)

    def stats(self) -> ExporterStats:
        return ExporterStats.total([link.stats() for link in self._links])

    def local_addresses(self) -> list[tuple[str, int]]:
        """(source ip, source port) of each open socket, to leave our own traffic out."""
        return [a for link in self._links if (a := link.local_address()) is not None]

    def __enter__(self) -> IpfixExporter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _validate(
    collectors: Sequence[tuple[str, int]],
    transport: str,
    domain_id: int,
    max_message_size: int,
    template_refresh: float | None,
    template_refresh_messages: int | None,
    options_interval: float | None,
    max_queue_flows: int,
) -> None:
    if not collectors:
        raise ConfigError("IPFIX export needs at least one collector")
    for host, port in collectors:
        if not host or not 0 < port < 65536:
            raise ConfigError(f"bad IPFIX collector {host}:{port}")
    if transport not in TRANSPORTS:
        raise ConfigError(f"IPFIX transport must be udp or tcp, not {transport!r}")
    if not 0 <= domain_id <= 0xFFFFFFFF:
        raise ConfigError(f"IPFIX observation domain id {domain_id} does not fit in 32 bits")
    if not 0 < max_message_size <= MAX_MESSAGE_SIZE:
        raise ConfigError(f"IPFIX max message size {max_message_size} outside 1..65535")
    for name, value in (
        ("template refresh", template_refresh),
        ("options interval", options_interval),
    ):
        if value is not None and value <= 0:
            raise ConfigError(f"IPFIX {name} must be positive (or off)")
    if template_refresh_messages is not None and template_refresh_messages < 1:
        raise ConfigError("IPFIX template refresh message count must be at least 1 (or off)")
    if max_queue_flows < 1:
        raise ConfigError("IPFIX queue must hold at least one flow")


def _check_size(templates: Sequence[Template], max_message_size: int) -> None:
    largest = max(max(len(t.wire), t.record_size) for t in templates)
    need = HEADER.size + SET_HEADER.size + largest
    if max_message_size < need:
        raise ConfigError(
            f"IPFIX max message size {max_message_size} is too small: at least {need} bytes"
        )
