"""Prometheus metrics: a custom collector over snapshots the engine hands it.

The engine thread calls observe() after every step; it folds the interval's
drained flows into per-(interface, direction, protocol) counters and stores
an immutable snapshot. collect() (the HTTP server's thread) only formats the
latest snapshot, so a scrape never touches the flow table and costs the
same with 100k flows as with ten.

Label sets are bounded: at most max_series (interface, direction, protocol)
series; flows of further combinations are counted in one series labelled
"other", and a series once created keeps its labels (counters stay monotonic).
The families by socket owner (service, container) are bounded the same way,
each on its own, and so are the zone pairs (flowtop_zone_*: one "other"
pair past max_series). The monitor families (flowtop_monitor_*) have a
series per configured monitor: the config bounds them (config.MAX_MONITORS).

Which per-flow fields feed which family, under what name and help, is in
core/fields.py (Field.metrics): every kernel counter with a family labelled
fields.FLOW_LABELS is summed per series here without further code.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from flowtop import __version__
from flowtop.core import fields
from flowtop.core.model import CollectorHealth, InterfaceCounters, proto_name
from flowtop.core.tcphealth import DEGRADED, HEALTHY, HealthGroup, TcpUpdate
from flowtop.errors import ConfigError
from flowtop.kernel import counters
from flowtop.kernel.collector import Drain
from flowtop.kernel.dropreasons import DropReasons
from flowtop.listen import counters as listen_counters
from flowtop.query.monitors import LOCAL_TO_REMOTE, REMOTE_TO_LOCAL, MonitorStatus
from flowtop.query.zones import ZoneStep

OTHER = ("other", "other", "other")
# The kernel counters summed per (interface, direction, protocol) series, with
# their family (by name: the order of the exposition).
FLOW_COUNTERS: tuple[tuple[str, fields.Metric], ...] = tuple(
    sorted(
        (
            (fields.member(f.name), m)
            for f in fields.FIELDS
            if f.origin == fields.KERNEL
            for m in f.metrics
            if m.labels == fields.FLOW_LABELS
        ),
        key=lambda fm: fm[1].name,
    )
)


def _metric(field: str, labels: tuple[str, ...]) -> fields.Metric:
    """The family a field feeds under these labels."""
    return next(m for m in fields.FIELD[field].metrics if m.labels == labels)


RTT = _metric("rtt_us", ("ifname",))
RETRANSMITS = _metric("retrans", ("ifname",))
RTO = _metric("rto", ("ifname",))
REMOTE_BYTES = _metric("bytes", ("direction", "asn", "country"))
# Bytes and packets by the socket owner's service and container (add_owners):
# (label, family name, help's "by ..." part).
OWNER_FAMILIES = (
    (
        "service",
        "flowtop_service",
        "the systemd unit (service or scope) of the local socket's owner",
    ),
    ("container", "flowtop_container", "the container id of the local socket's owner"),
)
OWNER_OTHER = "other"  # the label of the series past max_series (no unit or id is "other")
# Kernel counters exported as totals, with what they count.
KERNEL_COUNTERS = counters.PROMETHEUS_HELP


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    interfaces: tuple[InterfaceCounters, ...] = ()
    # labels, then the FLOW_COUNTERS totals in order
    flows: tuple[tuple[tuple[str, str, str], tuple[int, ...]], ...] = ()
    active_flows: int = 0
    health: CollectorHealth = field(default_factory=CollectorHealth)
    poll_seconds: float = 0.0
    polls: int = 0
    exporter: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    # ifname -> (cumulative bucket counts, sum of seconds, count)
    rtt: tuple[tuple[str, tuple[int, ...], float, int], ...] = ()
    retransmits: tuple[tuple[str, int], ...] = ()  # ifname, segments
    rto: tuple[tuple[str, int], ...] = ()
    verdicts: tuple[tuple[str, str, int], ...] = ()  # scope, group, 1 = degraded
    verdict_counts: tuple[tuple[str, int], ...] = ()  # verdict, groups
    remote: tuple[tuple[tuple[str, str, str], int], ...] = ()  # (direction, asn, country), bytes
    # per OWNER_FAMILIES label: (name, bytes, packets) per series
    owners: dict[str, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)
    owner_unattributed: int = 0  # live flows of local sockets of unknown owner
    # reason name -> (packets, bytes) the kernel dropped (flowtop_drops_total);
    # None: drops not collected (no family then)
    drops: tuple[tuple[str, int, int], ...] | None = None
    # (src zone, dst zone), bytes, packets per zone pair (add_zones)
    zones: tuple[tuple[tuple[str, str], int, int], ...] = ()
    monitors: tuple[MonitorStatus, ...] = ()  # the configured monitors (set_monitors)


ZONE_OTHER = ("other", "other")  # the zone pair past max_series


# RTT histogram buckets, seconds: LAN to intercontinental to a bad day.
RTT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
# Health verdict series at most (interfaces first, then remote groups worst first).
MAX_VERDICT_SERIES = 50


class FlowMetrics:
    """Accumulates roll-ups on the engine thread; serves snapshots to scrapes."""

    def __init__(self, max_series: int = 500) -> None:
        self.max_series = max_series
        self._totals: dict[tuple[int, int, int], list[int]] = {}  # FLOW_COUNTERS totals
        self._other = [0] * len(FLOW_COUNTERS)
        self._snapshot = MetricsSnapshot()
        self.errors: dict[str, int] = {}
        self._rtt: dict[int, tuple[np.ndarray, list[float]]] = {}  # ifindex -> buckets, [sum, n]
        self._retrans: dict[int, int] = {}
        self._rto: dict[int, int] = {}
        self._remote: dict[tuple[int, int, str], int] = {}
        self._remote_other = [0, 0]
        # OWNER_FAMILIES label -> name -> [bytes, packets]; OWNER_OTHER is the overflow
        self._owners: dict[str, dict[str, list[int]]] = {lbl: {} for lbl, _, _ in OWNER_FAMILIES}
        self._owner_unattributed = 0
        # drop reason name -> [packets, bytes]; None until a drain carries drops.
        # Names come from the kernel's enum: the label set is bounded by it.
        self._drops: dict[str, list[int]] | None = None
        # (src zone, dst zone) -> [bytes, packets]; ZONE_OTHER is the overflow
        self._zones: dict[tuple[str, str], list[int]] = {}
        self._monitors: tuple[MonitorStatus, ...] = ()
        # Received flows (--listen): (exporter, records, lost) per exporter, at
        # most max_series (the rest summed as "other"); None: not listening.
        self.listen: tuple[tuple[str, int, int], ...] | None = None
        # Told about a scrape that failed (the HTTP thread); Outputs counts it
        # in the engine's output_errors. Without one: errors["scrape"].
        self.on_error: Callable[[BaseException], None] | None = None

    def set_listen(self, exporters: Sequence[Mapping[str, Any]]) -> None:
        """The listener's per-exporter table (ListenCollector.exporters()), bounded."""
        rows = sorted(exporters, key=lambda e: -int(e["records"]))
        out = [(str(e["exporter"]), int(e["records"]), int(e["lost"])) for e in rows]
        keep = self.max_series - 1
        if len(out) > self.max_series:
            rest = out[keep:]
            out = [*out[:keep], ("other", sum(r for _, r, _ in rest), sum(x for _, _, x in rest))]
        self.listen = tuple(out)

    def scrape_failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)
        else:
            self.errors["scrape"] = self.errors.get("scrape", 0) + 1

    def add_tcp(self, upd: TcpUpdate) -> None:
        """Fresh RTT samples into the histograms; retransmit and RTO deltas."""
        if len(upd.rows) == 0:
            return
        for ifindex in np.unique(upd.ifindex).tolist():
            on = upd.ifindex == ifindex
            if len(self._rtt) < self.max_series or ifindex in self._rtt:
                rtts = upd.rtt_us[on & upd.fresh_rtt] / 1e6
                slot = self._rtt.setdefault(
                    ifindex, (np.zeros(len(RTT_BUCKETS), np.int64), [0.0, 0])
                )
                if len(rtts):
                    idx = np.searchsorted(RTT_BUCKETS, rtts, side="left")
                    slot[0][:] += np.cumsum(np.bincount(idx, minlength=len(RTT_BUCKETS) + 1))[:-1]
                    slot[1][0] += float(rtts.sum())
                    slot[1][1] += len(rtts)
            self._retrans[ifindex] = self._retrans.get(ifindex, 0) + int(upd.d_retrans[on].sum())
            self._rto[ifindex] = self._rto.get(ifindex, 0) + int(upd.d_rto[on].sum())

    def add_remote(
        self, direction: np.ndarray, asn: np.ndarray, country: np.ndarray, nbytes: np.ndarray
    ) -> None:
        """Bytes by (direction, remote AS, remote country), at most max_series series."""
        if len(direction) == 0:
            return
        ident = np.stack([direction.astype(np.int64), asn.astype(np.int64)], axis=1)
        keys = [(int(d), int(a), str(c)) for (d, a), c in zip(ident.tolist(), country, strict=True)]
        for k, b in zip(keys, nbytes.tolist(), strict=True):
            slot = self._remote.get(k)
            if slot is None and len(self._remote) >= self.max_series - 1:
                self._remote_other[k[0] & 1] += int(b)
                continue
            self._remote[k] = (slot or 0) + int(b)

    def add_owners(
        self,
        service: np.ndarray,
        container: np.ndarray,
        nbytes: np.ndarray,
        packets: np.ndarray,
        unattributed: int,
    ) -> None:
        """One interval's bytes and packets of local flows with their owner's
        service and container names (object arrays, None: no name; such
        flows count in neither family), at most max_series series each (the
        last one "other"); unattributed: how many live flows are of a local
        socket whose owner is unknown now (the gauge)."""
        self._owner_unattributed = int(unattributed)
        if len(nbytes) == 0:
            return
        b = np.asarray(nbytes, dtype=np.float64)
        p = np.asarray(packets, dtype=np.float64)
        for label, names in (("service", service), ("container", container)):
            keys = np.array([n or "" for n in names.tolist()], dtype=object)
            uniq, inv = np.unique(keys.astype(str), return_inverse=True)
            sums = zip(
                uniq.tolist(),
                np.bincount(inv.ravel(), weights=b, minlength=len(uniq)).tolist(),
                np.bincount(inv.ravel(), weights=p, minlength=len(uniq)).tolist(),
                strict=True,
            )
            series = self._owners[label]
            for name, nb, npk in sums:
                if not name:
                    continue
                slot = series.get(name)
                if slot is None:
                    full = len(series) - (OWNER_OTHER in series) >= self.max_series - 1
                    slot = series.setdefault(OWNER_OTHER if full else name, [0, 0])
                slot[0] += int(nb)
                slot[1] += int(npk)

    def add_zones(self, step: ZoneStep) -> None:
        """One interval's bytes and packets per zone pair (query/zones.py:
        counted once), at most max_series pairs (the last one "other")."""
        for pair, nb, npk in step.pairs:
            slot = self._zones.get(pair)
            if slot is None:
                full = len(self._zones) - (ZONE_OTHER in self._zones) >= self.max_series - 1
                slot = self._zones.setdefault(ZONE_OTHER if full else pair, [0, 0])
            slot[0] += nb
            slot[1] += npk

    def set_monitors(self, statuses: tuple[MonitorStatus, ...]) -> None:
        """The monitors after this step (query/monitors.MonitorTracker)."""
        self._monitors = statuses

    def add_drain(self, drain: Drain) -> None:
        """Fold one interval's drained flows into the (ifindex, dir, proto)
        totals, and its drops into the per-reason ones."""
        if drain.drops is not None and drain.drop_reasons is not None:
            self._add_drops(drain.drops, drain.drop_reasons)
        for keys, stats in drain.batches:
            if len(keys) == 0:
                continue
            ident = (
                keys["ifindex"].astype(np.uint64) << np.uint64(16)
                | keys["direction"].astype(np.uint64) << np.uint64(8)
                | keys["proto"].astype(np.uint64)
            )
            uniq, inv = np.unique(ident, return_inverse=True)
            sums = [
                np.bincount(inv, weights=stats[member].astype(np.float64)).tolist()
                for member, _ in FLOW_COUNTERS
            ]
            for u, *values in zip(uniq.tolist(), *sums, strict=True):
                key = (u >> 16, (u >> 8) & 0xFF, u & 0xFF)
                slot = self._totals.get(key)
                if slot is None:
                    if len(self._totals) >= self.max_series - 1:
                        slot = self._other
                    else:
                        slot = self._totals[key] = [0] * len(FLOW_COUNTERS)
                for i, v in enumerate(values):
                    slot[i] += int(v)

    def _add_drops(self, recs: np.ndarray, reasons: DropReasons) -> None:
        if self._drops is None:
            self._drops = {}
        if not len(recs):
            return
        uniq, inv = np.unique(recs["reason"], return_inverse=True)
        inv = inv.ravel()
        pk = np.zeros(len(uniq), dtype=np.uint64)
        by = np.zeros(len(uniq), dtype=np.uint64)
        np.add.at(pk, inv, recs["packets"])
        np.add.at(by, inv, recs["bytes"])
        for r, p, b in zip(uniq.tolist(), pk.tolist(), by.tolist(), strict=True):
            slot = self._drops.setdefault(reasons.name(r), [0, 0])
            slot[0] += p
            slot[1] += b

    def publish(
        self,
        names: dict[int, str],
        interfaces: list[InterfaceCounters],
        active_flows: int,
        health: CollectorHealth,
        poll_seconds: float,
        polls: int,
        exporter: dict[str, int] | None = None,
        verdicts_of: Sequence[HealthGroup] = (),
    ) -> None:
        def ifn(i: int) -> str:
            return names.get(i, f"if{i}")

        verdicts = [
            (g.scope, g.group, int(g.degraded)) for g in verdicts_of if g.scope == "interface"
        ]
        for g in verdicts_of:  # worst first
            if g.scope != "interface" and len(verdicts) < MAX_VERDICT_SERIES:
                verdicts.append((g.scope, g.group, int(g.degraded)))
        counts = [(v, sum(1 for g in verdicts_of if g.verdict == v)) for v in (HEALTHY, DEGRADED)]
        dirs = ("ingress", "egress")
        remote = [
            ((dirs[d & 1], f"AS{a}" if a else "unknown", c or "unknown"), b)
            for (d, a, c), b in self._remote.items()
        ]
        for d, b in enumerate(self._remote_other):
            if b:
                remote.append(((dirs[d], "other", "other"), b))
        rtt = tuple(
            (ifn(i), tuple(int(x) for x in b), s_n[0], int(s_n[1]))
            for i, (b, s_n) in self._rtt.items()
        )
        flows = [
            ((names.get(i, f"if{i}"), ("ingress", "egress")[d], proto_name(p)), tuple(v))
            for (i, d, p), v in self._totals.items()
        ]
        if any(self._other):
            flows.append((OTHER, tuple(self._other)))
        self._snapshot = MetricsSnapshot(
            interfaces=tuple(interfaces),
            flows=tuple(flows),
            active_flows=active_flows,
            health=health,
            poll_seconds=poll_seconds,
            polls=polls,
            exporter=dict(exporter or {}),
            errors=dict(self.errors),
            rtt=rtt,
            retransmits=tuple((ifn(i), n) for i, n in self._retrans.items()),
            rto=tuple((ifn(i), n) for i, n in self._rto.items()),
            verdicts=tuple(verdicts),
            verdict_counts=tuple(counts),
            remote=tuple(remote),
            owners={
                lbl: tuple((n, v[0], v[1]) for n, v in series.items())
                for lbl, series in self._owners.items()
            },
            owner_unattributed=self._owner_unattributed,
            drops=(
                None
                if self._drops is None
                else tuple((n, v[0], v[1]) for n, v in sorted(self._drops.items()))
            ),
            zones=tuple((pair, v[0], v[1]) for pair, v in self._zones.items()),
            monitors=self._monitors,
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
        try:
            yield from self._collect(self._metrics.snapshot)
        except Exception as exc:  # the scrape gets an error; the count shows it
            self._metrics.scrape_failed(exc)
            raise

    def _collect(self, s: MetricsSnapshot) -> Iterator[Metric]:
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

        families = [
            CounterMetricFamily(m.name, m.help, labels=list(m.labels)) for _, m in FLOW_COUNTERS
        ]
        for labels, values in s.flows:
            for fam, v in zip(families, values, strict=True):
                fam.add_metric(list(labels), v)
        yield from families

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
        yield from self._tcp(s)
        yield from self._owner_families(s)
        yield from self._drop_families(s)
        yield from self._zone_families(s)
        yield from self._monitor_families(s)
        yield from self._listen_families(self._metrics.listen, s.health.kernel)
        errs = CounterMetricFamily("flowtop_errors", "errors by subsystem", labels=["subsystem"])
        merged = dict(s.errors)
        merged["drain"] = s.health.drain_errors
        merged["attach"] = s.health.attach_errors
        merged["enrich"] = s.health.enrich_errors
        merged["output"] = s.health.output_errors  # the exports' own failures
        merged["record"] = s.health.record_errors
        merged["resolve"] = s.health.resolve_errors
        merged["exporter"] = merged.get("exporter", 0) + s.exporter.get("errors", 0)
        for sub, n in sorted(merged.items()):
            errs.add_metric([sub], n)
        yield errs

    @staticmethod
    def _listen_families(
        listen: tuple[tuple[str, int, int], ...] | None, kernel: Mapping[str, int]
    ) -> Iterator[Metric]:
        """Received flows (--listen): per exporter, and the listener's counters."""
        if listen is None:
            return
        recs = CounterMetricFamily(
            "flowtop_listen_exporter_records",
            "flow records received, by exporter",
            labels=["exporter"],
        )
        lost = GaugeMetricFamily(
            "flowtop_listen_exporter_lost_records",
            "records (NetFlow v9: export packets) the exporter's sequence numbers say are "
            "missing, by exporter",
            labels=["exporter"],
        )
        for name, n, x in listen:
            recs.add_metric([name], n)
            lost.add_metric([name], x)
        yield recs
        yield lost
        for name in listen_counters.ALL:
            yield CounterMetricFamily(
                f"flowtop_{name}",
                f"listener: {name[7:].replace('_', ' ')}",
                value=kernel.get(name, 0),
            )

    @staticmethod
    def _zone_families(s: MetricsSnapshot) -> Iterator[Metric]:
        labels = ["src_zone", "dst_zone"]
        nbytes = CounterMetricFamily(
            "flowtop_zone_bytes", "IP bytes between zones (each packet once, also when "
            "forwarded), by the zones of the source and destination ends", labels=labels,
        )  # fmt: skip
        packets = CounterMetricFamily(
            "flowtop_zone_packets", "packets between zones, by source and destination zone",
            labels=labels,
        )  # fmt: skip
        for pair, b, p in s.zones:
            nbytes.add_metric(list(pair), b)
            packets.add_metric(list(pair), p)
        yield nbytes
        yield packets

    @staticmethod
    def _monitor_families(s: MetricsSnapshot) -> Iterator[Metric]:
        way = ["monitor", "direction"]
        nbytes = CounterMetricFamily(
            "flowtop_monitor_bytes", "IP bytes of a monitor's flows, local_to_remote or "
            "remote_to_local (each packet once)", labels=way,
        )  # fmt: skip
        packets = CounterMetricFamily(
            "flowtop_monitor_packets", "packets of a monitor's flows, by direction", labels=way
        )
        # A summary: the quantiles over the health window (as a client
        # library's summary has them over its window), count and sum since the start.
        rtt = Metric(
            "flowtop_monitor_rtt_seconds",
            "RTT samples of a monitor's TCP flows: quantiles 0.5 and 0.95 over the health window",
            "summary",
        )
        ratio = GaugeMetricFamily(
            "flowtop_monitor_retransmit_ratio",
            "retransmitted / sent data segments of a monitor's TCP flows over the health window",
            labels=["monitor"],
        )
        retrans = CounterMetricFamily(
            "flowtop_monitor_retransmits", "retransmitted segments of a monitor's TCP flows",
            labels=["monitor"],
        )  # fmt: skip
        rto = CounterMetricFamily(
            "flowtop_monitor_rto", "retransmission timeouts of a monitor's TCP flows",
            labels=["monitor"],
        )  # fmt: skip
        degraded = GaugeMetricFamily(
            "flowtop_monitor_degraded",
            "1 when a monitor's health verdict is degraded (the reason is in dump and the "
            "live view)",
            labels=["monitor"],
        )
        for m in s.monitors:
            for d, b, p in (
                (LOCAL_TO_REMOTE, m.local_to_remote_bytes, m.local_to_remote_packets),
                (REMOTE_TO_LOCAL, m.remote_to_local_bytes, m.remote_to_local_packets),
            ):
                nbytes.add_metric([m.name, d], b)
                packets.add_metric([m.name, d], p)
            for q, v in (("0.5", m.rtt_p50_us), ("0.95", m.rtt_p95_us)):
                if v is not None:
                    rtt.add_sample(rtt.name, {"monitor": m.name, "quantile": q}, v / 1e6)
            rtt.add_sample(f"{rtt.name}_count", {"monitor": m.name}, m.rtt_samples_total)
            rtt.add_sample(f"{rtt.name}_sum", {"monitor": m.name}, m.rtt_sum_us_total / 1e6)
            if m.retransmit_ratio is not None:
                ratio.add_metric([m.name], m.retransmit_ratio)
            retrans.add_metric([m.name], m.retransmits_total)
            rto.add_metric([m.name], m.rto_total)
            degraded.add_metric([m.name], int(m.degraded))
        yield from (nbytes, packets, rtt, ratio, retrans, rto, degraded)

    @staticmethod
    def _drop_families(s: MetricsSnapshot) -> Iterator[Metric]:
        if s.drops is not None:
            packets = CounterMetricFamily(
                "flowtop_drops", "packets the kernel dropped on the watched interfaces, by "
                "reason (enum skb_drop_reason)", labels=["reason"],
            )  # fmt: skip
            nbytes = CounterMetricFamily(
                "flowtop_drop_bytes", "IP bytes of those packets, by reason", labels=["reason"]
            )
            for name, p, b in s.drops:
                packets.add_metric([name], p)
                nbytes.add_metric([name], b)
            yield packets
            yield nbytes
            # What the drop program could not count (a full map, an unreadable packet).
            uncounted = CounterMetricFamily(
                "flowtop_drops_uncounted", "kernel drops flowtop could not count, by cause",
                labels=["cause"],
            )  # fmt: skip
            for cause in counters.DROPS_LOSSES:
                uncounted.add_metric([cause], s.health.kernel.get(f"{counters.DROPS}_{cause}", 0))
            yield uncounted

    @staticmethod
    def _owner_families(s: MetricsSnapshot) -> Iterator[Metric]:
        for label, name, by in OWNER_FAMILIES:
            nbytes = CounterMetricFamily(
                f"{name}_bytes", f"IP bytes of local flows by {by}", labels=[label]
            )
            packets = CounterMetricFamily(
                f"{name}_packets", f"packets of local flows by {by}", labels=[label]
            )
            for value, b, p in s.owners.get(label, ()):
                nbytes.add_metric([value], b)
                packets.add_metric([value], p)
            yield nbytes
            yield packets
        yield GaugeMetricFamily(
            "flowtop_owner_unattributed_flows",
            "live flows of a local socket whose owner (process) is unknown",
            value=s.owner_unattributed,
        )

    @staticmethod
    def _tcp(s: MetricsSnapshot) -> Iterator[Metric]:
        rtt = HistogramMetricFamily(RTT.name, RTT.help, labels=list(RTT.labels))
        for ifname, buckets, total, count in s.rtt:
            les = [(f"{b:g}", c) for b, c in zip(RTT_BUCKETS, buckets, strict=True)]
            rtt.add_metric([ifname], [*les, ("+Inf", count)], total)
        yield rtt
        retr = CounterMetricFamily(
            RETRANSMITS.name, RETRANSMITS.help, labels=list(RETRANSMITS.labels)
        )
        for ifname, n in s.retransmits:
            retr.add_metric([ifname], n)
        yield retr
        rto = CounterMetricFamily(RTO.name, RTO.help, labels=list(RTO.labels))
        for ifname, n in s.rto:
            rto.add_metric([ifname], n)
        yield rto
        verdict = GaugeMetricFamily(
            "flowtop_health_degraded",
            f"1 when the network health verdict is degraded (interfaces, then the worst "
            f"remote groups; at most {MAX_VERDICT_SERIES} series)",
            labels=["scope", "group"],
        )
        for scope, group, bad in s.verdicts:
            verdict.add_metric([scope, group], bad)
        yield verdict
        counts = GaugeMetricFamily(
            "flowtop_health_groups", "interfaces and remote groups by verdict", labels=["verdict"]
        )
        for v, n in s.verdict_counts:
            counts.add_metric([v], n)
        yield counts
        remote = CounterMetricFamily(
            REMOTE_BYTES.name, REMOTE_BYTES.help, labels=list(REMOTE_BYTES.labels)
        )
        for labels, n in s.remote:
            remote.add_metric(list(labels), n)
        yield remote


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
