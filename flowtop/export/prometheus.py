"""Prometheus metrics: a custom collector over snapshots the engine hands it.

The engine thread calls observe() after every step; it folds the interval's
drained flows into per-(interface, direction, protocol) counters and stores
an immutable snapshot. collect() (the HTTP server's thread) only formats the
latest snapshot, so a scrape never touches the flow table and costs the
same with 100k flows as with ten.

Label sets are bounded: at most max_series (interface, direction, protocol)
series; flows of further combinations are counted in one series labelled
"other", and a series once created keeps its labels (counters stay monotonic).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from flowtop import __version__
from flowtop.collector.collector import Drain
from flowtop.errors import ConfigError
from flowtop.model import CollectorHealth, InterfaceCounters, proto_name

OTHER = ("other", "other", "other")
# Kernel counters exported as totals, with what they count.
KERNEL_COUNTERS = {
    "flow_map_full": "flow inserts that failed because the kernel flow map was full",
    "lost_packets": "packets not counted in any flow (their insert failed)",
    "lost_bytes": "IP bytes not counted in any flow (their insert failed)",
    "iface_map_full": "interface counter inserts that failed",
    "truncated": "frames that ended inside a header flowtop needed",
    "malformed": "frames with an impossible header field",
    "ipv6_ext_limit": "IPv6 packets with more extension headers than flowtop walks",
    "non_ip": "frames that are not IP (counted on interfaces only)",
}


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    interfaces: tuple[InterfaceCounters, ...] = ()
    flows: tuple[tuple[tuple[str, str, str], int, int], ...] = ()  # labels, bytes, packets
    active_flows: int = 0
    health: CollectorHealth = field(default_factory=CollectorHealth)
    poll_seconds: float = 0.0
    polls: int = 0
    exporter: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


class FlowMetrics:
    """Accumulates roll-ups on the engine thread; serves snapshots to scrapes."""

    def __init__(self, max_series: int = 500) -> None:
        self.max_series = max_series
        self._totals: dict[tuple[int, int, int], list[int]] = {}
        self._other = [0, 0]
        self._snapshot = MetricsSnapshot()
        self.errors: dict[str, int] = {}

    def add_drain(self, drain: Drain) -> None:
        """Fold one interval's drained flows into the (ifindex, dir, proto) totals."""
        for keys, stats in drain.batches:
            if len(keys) == 0:
                continue
            ident = (
                keys["ifindex"].astype(np.uint64) << np.uint64(16)
                | keys["direction"].astype(np.uint64) << np.uint64(8)
                | keys["proto"].astype(np.uint64)
            )
            uniq, inv = np.unique(ident, return_inverse=True)
            nbytes = np.bincount(inv, weights=stats["bytes"].astype(np.float64))
            npkts = np.bincount(inv, weights=stats["packets"].astype(np.float64))
            for u, b, p in zip(uniq.tolist(), nbytes.tolist(), npkts.tolist(), strict=True):
                key = (u >> 16, (u >> 8) & 0xFF, u & 0xFF)
                slot = self._totals.get(key)
                if slot is None:
                    if len(self._totals) >= self.max_series - 1:
                        self._other[0] += int(b)
                        self._other[1] += int(p)
                        continue
                    slot = self._totals[key] = [0, 0]
                slot[0] += int(b)
                slot[1] += int(p)

    def publish(
        self,
        names: dict[int, str],
        interfaces: list[InterfaceCounters],
        active_flows: int,
        health: CollectorHealth,
        poll_seconds: float,
        polls: int,
        exporter: dict[str, int] | None = None,
    ) -> None:
        flows = [
            (
                (names.get(i, f"if{i}"), ("ingress", "egress")[d], proto_name(p)),
                v[0],
                v[1],
            )
            for (i, d, p), v in self._totals.items()
        ]
        if self._other != [0, 0]:
            flows.append((OTHER, self._other[0], self._other[1]))
        self._snapshot = MetricsSnapshot(
            interfaces=tuple(interfaces),
            flows=tuple(flows),
            active_flows=active_flows,
            health=health,
            poll_seconds=poll_seconds,
            polls=polls,
            exporter=dict(exporter or {}),
            errors=dict(self.errors),
        )

    @property
    def snapshot(self) -> MetricsSnapshot:
        return self._snapshot


class FlowtopCollector(Collector):
    """prometheus_client custom collector over FlowMetrics snapshots."""

    def __init__(self, metrics: FlowMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no describe-time collect: families depend on the snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._metrics.snapshot
        info = InfoMetricFamily("flowtop_build", "flowtop build information")
        info.add_metric([], {"version": __version__})
        yield info

        names = (
            ("rx", "bytes", "rx_bytes"),
            ("rx", "packets", "rx_packets"),
            ("tx", "bytes", "tx_bytes"),
            ("tx", "packets", "tx_packets"),
        )
        for way, unit, attr in names:
            fam = CounterMetricFamily(
                f"flowtop_interface_{way}_{unit}",
                f"{unit} {'received' if way == 'rx' else 'sent'} as the device counts them "
                "(L2, per skb), while flowtop was attached",
                labels=["ifname", "family"],
            )
            for ic in s.interfaces:
                fam.add_metric([ic.name, ic.family], getattr(ic, attr))
            yield fam

        fb = CounterMetricFamily(
            "flowtop_flow_bytes",
            "IP bytes of flows (IP header + payload), by interface, direction and protocol",
            labels=["ifname", "direction", "proto"],
        )
        fp = CounterMetricFamily(
            "flowtop_flow_packets",
            "packets of flows (segments of GSO packets), by interface, direction and protocol",
            labels=["ifname", "direction", "proto"],
        )
        for labels, nbytes, npkts in s.flows:
            fb.add_metric(list(labels), nbytes)
            fp.add_metric(list(labels), npkts)
        yield fb
        yield fp

        yield GaugeMetricFamily(
            "flowtop_active_flows", "flows in the flow table", value=s.active_flows
        )
        kernel = s.health.kernel
        for name, doc in KERNEL_COUNTERS.items():
            yield CounterMetricFamily(f"flowtop_kernel_{name}", doc, value=kernel.get(name, 0))
        yield CounterMetricFamily(
            "flowtop_forced_evictions",
            "flows ended early because the flow table was full",
            value=s.health.forced_evictions,
        )
        yield GaugeMetricFamily(
            "flowtop_poll_duration_seconds",
            "time the last drain + merge + timeouts took",
            value=s.poll_seconds,
        )
        yield CounterMetricFamily("flowtop_polls", "collection intervals done", value=s.polls)
        exp = CounterMetricFamily(
            "flowtop_exporter_records",
            "IPFIX flow records by outcome",
            labels=["outcome"],
        )
        for outcome in ("sent", "not_sent"):
            exp.add_metric([outcome], s.exporter.get(f"records_{outcome}", 0))
        yield exp
        errs = CounterMetricFamily("flowtop_errors", "errors by subsystem", labels=["subsystem"])
        merged = dict(s.errors)
        merged["drain"] = s.health.drain_errors
        merged["attach"] = s.health.attach_errors
        merged["exporter"] = merged.get("exporter", 0) + s.exporter.get("errors", 0)
        for sub, n in sorted(merged.items()):
            errs.add_metric([sub], n)
        yield errs


class MetricsServer:
    """The /metrics HTTP(S) listener on its own registry."""

    def __init__(
        self,
        metrics: FlowMetrics,
        host: str,
        port: int,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FlowtopCollector(metrics))
        try:
            self._server, self._thread = start_http_server(
                port, addr=host, registry=self.registry, certfile=certfile, keyfile=keyfile
            )
        except ssl.SSLError as exc:
            # prometheus_client re-raises with its own message in args[0].
            why = str(exc.args[0] if exc.args else exc).replace("\n", " ")
            raise ConfigError(f"Prometheus TLS: {why}") from None
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for Prometheus on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.address: tuple[Any, ...] = self._server.server_address

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
