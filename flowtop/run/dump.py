"""`flowtop dump`: collect for a while, then print flows, interface totals and losses."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TextIO

import numpy as np

from flowtop.core.flowtable import FlowBatch
from flowtop.core.model import (
    CollectorHealth,
    FlowRecord,
    InterfaceCounters,
    proto_name,
    tcp_flags_str,
)
from flowtop.core.tcphealth import HealthGroup
from flowtop.sanitize import clean


class FlowAccumulator:
    """Sink that keeps every flow record of a run (dump's view of the engine)."""

    def __init__(self, clock_offset: float) -> None:
        self._batches: list[FlowBatch] = []
        self._offset = clock_offset

    def flows_ended(self, batch: FlowBatch) -> None:
        self._batches.append(batch)

    def per_key(self) -> FlowBatch:
        """One record per flow key over the whole run (ended and restarted flows merged)."""
        allb = FlowBatch.concat(self._batches, self._offset)
        if len(allb) == 0:
            return allb
        raw = allb.keys.view(np.dtype((np.void, allb.keys.dtype.itemsize)))
        uniq, inverse = np.unique(raw, return_inverse=True)
        inverse = inverse.ravel()
        n = len(uniq)
        first_idx = np.full(n, -1, dtype=np.int64)
        first_idx[inverse[::-1]] = np.arange(len(inverse))[::-1]
        packets = np.zeros(n, dtype="<u8")
        nbytes = np.zeros(n, dtype="<u8")
        np.add.at(packets, inverse, allb.packets)
        np.add.at(nbytes, inverse, allb.bytes)
        start = np.full(n, np.iinfo(np.uint64).max, dtype="<u8")
        np.minimum.at(start, inverse, allb.start_ns)
        end = np.zeros(n, dtype="<u8")
        np.maximum.at(end, inverse, allb.end_ns)
        flags = np.zeros(n, dtype="u1")
        np.bitwise_or.at(flags, inverse, allb.flags)
        last_idx = np.zeros(n, dtype=np.int64)
        last_idx[inverse] = np.arange(len(inverse))
        return FlowBatch(
            keys=allb.keys[first_idx],
            packets=packets,
            bytes=nbytes,
            start_ns=start,
            end_ns=end,
            flags=flags,
            dscp=allb.dscp[last_idx],
            reason=allb.reason[last_idx],
            clock_offset=self._offset,
            ext=None if allb.ext is None else allb.ext[last_idx],
            mpls=None if allb.mpls is None else allb.mpls[last_idx],
        )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


def endpoint(addr: object, port: int, proto: int, ip_version: int) -> str:
    if proto in (1, 58):
        return str(addr)
    a = f"[{addr}]" if ip_version == 6 else str(addr)
    return f"{a}:{port}"


class EntityLike(Protocol):
    @property
    def asn(self) -> int | None: ...
    @property
    def as_org(self) -> str | None: ...
    @property
    def country(self) -> str | None: ...
    @property
    def city(self) -> str | None: ...
    @property
    def label(self) -> str | None: ...


EntityOf = Callable[[int], EntityLike | None]
NameOf = Callable[[str], str | None]


def _ends(r: FlowRecord, entity_of: EntityOf | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for end, eid in (("src", r.src_ent), ("dst", r.dst_ent)):
        e = entity_of(eid) if entity_of is not None and eid >= 0 else None
        out[f"{end}_asn"] = e.asn if e else None
        out[f"{end}_as_org"] = e.as_org if e else None
        out[f"{end}_country"] = e.country if e else None
        out[f"{end}_city"] = e.city if e else None
        out[f"{end}_label"] = e.label if e else None
    return out


def flow_json(
    r: FlowRecord,
    ifname: str,
    entity_of: EntityOf | None = None,
    name_of: NameOf | None = None,
) -> dict[str, object]:
    k = r.key
    d = {
        "type": "flow",
        "iface": clean(ifname),
        "ifindex": k.ifindex,
        "direction": k.direction.label,
        "ip_version": k.ip_version,
        "proto": k.proto,
        "proto_name": proto_name(k.proto),
        "src": str(k.src),
        "dst": str(k.dst),
        "sport": k.sport,
        "dport": k.dport,
        "vlan": k.vlan,
        "packets": r.packets,
        "bytes": r.bytes,
        "first_seen": iso(r.first_seen),
        "last_seen": iso(r.last_seen),
        "tcp_flags": r.tcp_flags,
        "rtt_us": r.rtt_us,
        "rtt_min_us": r.rtt_min_us,
        "retransmits": r.retransmits,
        "rto": r.rto,
        "rtt_source": r.rtt_source,
        **_ends(r, entity_of),
    }
    if r.mpls_label is not None:
        # Only on flows that carried a label stack (README, "What is counted").
        d["mpls_label"] = r.mpls_label
    if name_of is not None:
        d["src_name"] = name_of(str(k.src))
        d["dst_name"] = name_of(str(k.dst))
    return d


@dataclass(frozen=True)
class Extras:
    """What dump prints beyond counters: names of entities, DNS names, health."""

    entity_of: EntityOf | None = None
    name_of: NameOf | None = None
    health: Sequence[HealthGroup] = ()


def write_json(
    out: TextIO,
    records: Iterable[FlowRecord],
    ifname: dict[int, str],
    ifaces: list[InterfaceCounters],
    health: CollectorHealth,
    extras: Extras = Extras(),
) -> None:
    for r in records:
        iface = ifname.get(r.key.ifindex, str(r.key.ifindex))
        out.write(json.dumps(flow_json(r, iface, extras.entity_of, extras.name_of)) + "\n")
    for g in extras.health:
        out.write(json.dumps(g.as_dict()) + "\n")
    for ic in ifaces:
        out.write(
            json.dumps(
                {
                    "type": "interface",
                    "iface": clean(ic.name),
                    "ifindex": ic.ifindex,
                    "family": ic.family,
                    "rx_packets": ic.rx_packets,
                    "rx_bytes": ic.rx_bytes,
                    "tx_packets": ic.tx_packets,
                    "tx_bytes": ic.tx_bytes,
                }
            )
            + "\n"
        )
    out.write(json.dumps({"type": "stats", **health.as_dict()}) + "\n")


def human(n: float, unit: str = "") -> str:
    for suffix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000 or suffix == "T":
            return f"{n:.0f}{suffix}{unit}" if suffix == "" else f"{n:.1f}{suffix}{unit}"
        n /= 1000
    return f"{n}"


def write_table(
    out: TextIO,
    records: Iterable[FlowRecord],
    ifname: dict[int, str],
    ifaces: list[InterfaceCounters],
    health: CollectorHealth,
    extras: Extras = Extras(),
) -> None:
    records = list(records)
    tcp = any(r.rtt_us is not None or r.retransmits is not None for r in records)
    mpls = any(r.mpls_label is not None for r in records)
    ent = extras.entity_of

    def asn(eid: int) -> str:
        e = ent(eid) if ent is not None and eid >= 0 else None
        if e is None:
            return ""
        return e.label or (f"AS{e.asn}" if e.asn else "") + (f" {e.country}" if e.country else "")

    rows: list[tuple[str, ...]] = [
        ("IFACE", "DIR", "PROTO", "SRC", "DST", "PKTS", "BYTES", "FLAGS", "VLAN")
        + (("MPLS",) if mpls else ())
        + (("RTT_MS", "RETR") if tcp else ())
        + (("SRC_AS", "DST_AS") if ent is not None else ())
    ]
    for r in records:
        k = r.key
        proto = proto_name(k.proto)
        if k.is_icmp:
            proto += " {}/{}".format(*k.icmp_type_code)
        rows.append(
            (
                clean(ifname.get(k.ifindex, str(k.ifindex))),
                "in" if k.direction == 0 else "out",
                proto,
                endpoint(k.src, k.sport, k.proto, k.ip_version),
                endpoint(k.dst, k.dport, k.proto, k.ip_version),
                str(r.packets),
                str(r.bytes),
                tcp_flags_str(r.tcp_flags) if k.proto == 6 else "",
                str(k.vlan) if k.vlan else "",
            )
            + ((str(r.mpls_label) if r.mpls_label is not None else "",) if mpls else ())
            + (
                (
                    f"{r.rtt_us / 1000:.2f}" if r.rtt_us is not None else "",
                    str(r.retransmits) if r.retransmits is not None else "",
                )
                if tcp
                else ()
            )
            + ((clean(asn(r.src_ent)), clean(asn(r.dst_ent))) if ent is not None else ())
        )
    first_tcp = 10 if mpls else 9
    _print_rows(out, rows, right={5, 6, first_tcp, first_tcp + 1} if tcp else {5, 6})
    out.write("\n")
    irows: list[tuple[str, ...]] = [
        ("IFACE", "FAMILY", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES")
    ]
    for ic in ifaces:
        if ic.rx_packets or ic.tx_packets:
            irows.append(
                (
                    clean(ic.name),
                    ic.family,
                    str(ic.rx_packets),
                    str(ic.rx_bytes),
                    str(ic.tx_packets),
                    str(ic.tx_bytes),
                )
            )
    _print_rows(out, irows, right={2, 3, 4, 5})
    out.write("\n")
    stats = health.as_dict()
    lost = {k: v for k, v in stats.items() if v}
    if extras.health:
        hrows: list[tuple[str, ...]] = [("SCOPE", "GROUP", "VERDICT", "P50_MS", "RETR%", "REASON")]
        for g in extras.health:
            hrows.append(
                (
                    g.scope,
                    clean(g.group),
                    g.verdict,
                    f"{g.rtt_p50_us / 1000:.2f}" if g.rtt_p50_us is not None else "",
                    f"{g.retransmit_ratio * 100:.2f}" if g.retransmit_ratio is not None else "",
                    clean(g.reason),
                )
            )
        _print_rows(out, hrows, right={3, 4})
        out.write("\n")
    out.write(
        "collector: "
        + (", ".join(f"{k}={v}" for k, v in sorted(lost.items())) if lost else "nothing lost")
        + "\n"
    )


def _print_rows(out: TextIO, rows: list[tuple[str, ...]], right: set[int]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.write("  ".join(cells).rstrip() + "\n")


def sorted_records(batch: FlowBatch) -> list[FlowRecord]:
    order = np.lexsort((batch.packets, batch.bytes))[::-1]
    recs = list(batch.records())
    return [recs[i] for i in order]


def emit(
    batch: FlowBatch,
    ifname: dict[int, str],
    ifaces: list[InterfaceCounters],
    health: CollectorHealth,
    as_json: bool,
    out: TextIO = sys.stdout,
    extras: Extras = Extras(),
) -> None:
    records = sorted_records(batch)
    (write_json if as_json else write_table)(out, records, ifname, ifaces, health, extras)
