"""The exports an engine feeds: IPFIX to collectors, Prometheus /metrics.

Built from Config, hooked into an Engine (sinks, observers, the exclusion of
flowtop's own export sockets), replaced on reload, closed with a flush.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from flowtop.config import Config, EnrichConfig, IpfixConfig, PrometheusConfig
from flowtop.core.engine import Engine
from flowtop.errors import ConfigError, FlowtopError
from flowtop.query import monitors

if TYPE_CHECKING:
    # Imported where they are started: a run without collectors holds none of
    # the IPFIX exporter, one without a listener none of prometheus_client.
    from flowtop.export.ipfix import IpfixExporter
    from flowtop.export.prometheus import FlowMetrics, MetricsServer

log = logging.getLogger("flowtop")


def _proto(transport: str) -> int:
    return socket.IPPROTO_TCP if transport == "tcp" else socket.IPPROTO_UDP


class Outputs:
    """The IPFIX exporter and the Prometheus listener of one run (flowtop.run.lifecycle.Run
    owns it): attach() hooks them into the engine (ended flows to IPFIX, each step's
    Engine.readings() to the metrics), reload() swaps what changed, close() flushes."""

    def __init__(self, cfg: Config) -> None:
        # bgpSource/DestinationAsNumber go in the templates when there is an
        # ASN database to fill them.
        self.bgp = asn_database_expected(cfg.enrich)
        self.ipfix_cfg = cfg.ipfix
        self.prom_cfg = cfg.prometheus
        self.ipfix: IpfixExporter | None = None
        self.metrics: FlowMetrics | None = None
        self.server: MetricsServer | None = None
        self._engine: Engine | None = None
        self._closed = False
        try:
            self._start_ipfix(cfg.ipfix)
            self._start_prometheus(cfg.prometheus)
        except BaseException:
            self.close(0.5)
            raise

    def _start_ipfix(self, c: IpfixConfig) -> None:
        self.ipfix = self._new_ipfix(c)

    def _new_ipfix(self, c: IpfixConfig) -> IpfixExporter | None:
        if not c.collectors:
            return None
        from flowtop.export.ipfix import IpfixExporter

        exporter = IpfixExporter(
            list(c.collectors),
            c.transport,
            domain_id=c.domain_id,
            max_message_size=c.max_message_size,
            template_refresh=c.template_refresh,
            template_refresh_messages=c.template_refresh_messages or None,
            options_interval=c.options_interval,
            bgp=self.bgp,
        )
        where = ", ".join(f"{h}:{p}" for h, p in c.collectors)
        log.info("exporting IPFIX over %s to %s (domain %d)", c.transport, where, c.domain_id)
        return exporter

    def _start_prometheus(self, c: PrometheusConfig) -> None:
        if c.listen is None:
            return
        from flowtop.export.prometheus import FlowMetrics, MetricsServer

        if self.metrics is None:
            self.metrics = FlowMetrics(c.max_series)
            if self._engine is not None:
                self.metrics.on_error = self._scrape_failed
        host, port = c.listen
        self.server = MetricsServer(self.metrics, host, port, c.tls_cert, c.tls_key)
        scheme = "https" if c.tls_cert else "http"
        log.info("serving Prometheus metrics on %s://%s:%d/metrics", scheme, host, port)

    def attach(self, engine: Engine) -> None:
        self._engine = engine
        if self.ipfix is not None:
            engine.sinks.append(self.ipfix)
        engine.observers.append(self._observe)
        engine.exclude = self.own_sockets
        if self.metrics is not None:
            self.metrics.on_error = self._scrape_failed

    def _scrape_failed(self, exc: BaseException) -> None:
        if self._engine is not None:
            self._engine.failures.output.failed(exc, "Prometheus scrape")

    def own_sockets(self) -> list[tuple[int, str, int]]:
        if self.ipfix is None:
            return []
        proto = _proto(self.ipfix.transport)
        return [(proto, addr, port) for addr, port in self.ipfix.local_addresses()]

    def _observe(self, engine: Engine) -> None:
        if self.metrics is None:
            return
        r = engine.readings()
        if r.drain is not None:
            self.metrics.add_drain(r.drain)
        if r.remote is not None:
            rb = r.remote
            self.metrics.add_remote(rb.direction, rb.asn, rb.country, rb.nbytes)
        if r.owners is not None:
            o = r.owners
            self.metrics.add_owners(o.service, o.container, o.nbytes, o.packets, o.unattributed)
        self.metrics.add_tcp(r.tcp)
        tracker = monitors.tracker_of(engine)  # it observed this step before us
        if tracker is not None:
            if r.drain is not None and tracker.zoned:
                self.metrics.add_zones(tracker.zones)
            self.metrics.set_monitors(tracker.statuses())
        exporter: dict[str, int] = {}
        if self.ipfix is not None:
            st = self.ipfix.stats()  # totals over the collectors
            exporter = {
                "records_sent": st.records_sent,
                "records_not_sent": st.not_sent_flows,
                "errors": st.send_errors + st.connect_errors + st.internal_errors,
            }
        self.metrics.publish(
            r.names,
            r.interfaces,
            r.active_flows,
            r.health,
            r.poll_seconds,
            r.polls,
            exporter,
            r.tcp_groups,
        )

    def reload(self, cfg: Config, timeout: float = 1.0) -> None:
        """New settings: restart only what changed; flow state is the engine's.

        A part that cannot start with the new settings (ConfigError) keeps
        running as it was: the new IPFIX exporter is built before the old one
        goes; a Prometheus listener that cannot bind gets the old one back.
        """
        failed: list[str] = []
        if self._engine is not None:  # [health] thresholds and [[monitor]] tables
            monitors.configure(self._engine, cfg)
        if cfg.ipfix != self.ipfix_cfg:
            try:
                new = self._new_ipfix(cfg.ipfix)
            except FlowtopError as exc:
                failed.append(str(exc))
            else:
                old, self.ipfix = self.ipfix, new
                if self._engine is not None:
                    if old is not None:
                        self._engine.sinks.remove(old)
                    if new is not None:
                        self._engine.sinks.append(new)
                if old is not None:
                    old.close(timeout)
                self.ipfix_cfg = cfg.ipfix
        if cfg.prometheus != self.prom_cfg:
            if self.server is not None:
                self.server.close()
                self.server = None
            try:
                self._start_prometheus(cfg.prometheus)
            except FlowtopError as exc:
                failed.append(str(exc))
                self._start_prometheus(self.prom_cfg)  # it listened there a moment ago
            else:
                if self.metrics is not None:
                    self.metrics.max_series = cfg.prometheus.max_series
                self.prom_cfg = cfg.prometheus
        if failed:
            raise ConfigError("; ".join(failed))

    def close(self, timeout: float) -> None:
        """Flush what is queued for collectors (within timeout), stop listening.
        The listener stops even when the flush fails; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.ipfix is not None:
                self.ipfix.close(timeout)
                st = self.ipfix.stats()
                log.info(
                    "IPFIX: %d records sent, %d flows not sent", st.records_sent, st.not_sent_flows
                )
        finally:
            if self.server is not None:
                self.server.close()


def asn_database_expected(cfg: EnrichConfig) -> bool:
    from flowtop.enrich.geo import KIND_ASN, find_default

    return cfg.geoip_asn is not None or find_default(KIND_ASN) is not None
