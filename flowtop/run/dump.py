"""`flowtop dump`: collect for a while, then print flows, interface totals and losses.

The flow lines' JSON keys, their order and the text table's columns come from
core/fields.py; what is here is how each value is written.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol, TextIO

import numpy as np

from flowtop.core import fields
from flowtop.core.fields import Field, Text
from flowtop.core.flowtable import FlowBatch, decode_key
from flowtop.core.model import (
    CollectorHealth,
    Direction,
    FlowKey,
    FlowRecord,
    InterfaceCounters,
    proto_name,
    tcp_flags_str,
)
from flowtop.core.owners import STATE_ATTRIBUTED, STATE_UNATTRIBUTED, OwnerNames
from flowtop.core.tcphealth import HealthGroup
from flowtop.kernel import layout
from flowtop.query.monitors import MonitorStatus
from flowtop.sanitize import clean
from flowtop.wirenames.names import RDNS, SOURCE_NAMES


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
        last_idx = np.zeros(n, dtype=np.int64)
        last_idx[inverse] = np.arange(len(inverse))
        cols = {f.name: _fold(f, allb[f.name], inverse, last_idx) for f in fields.BATCH_FIELDS}
        return FlowBatch(allb.keys[first_idx], cols, self._offset)


def _fold(f: Field, col: np.ndarray, inverse: np.ndarray, last_idx: np.ndarray) -> np.ndarray:
    """One value per key (inverse: each record's key) by the field's merge rule."""
    if f.merge == fields.LAST:
        out: np.ndarray = col[last_idx]
        return out
    n = len(last_idx)
    if f.merge == fields.MIN:
        out = np.full(n, np.iinfo(col.dtype).max, dtype=col.dtype)
        np.minimum.at(out, inverse, col)
        return out
    out = np.zeros(n, dtype=col.dtype)
    ufunc = {fields.SUM: np.add, fields.MAX: np.maximum, fields.OR: np.bitwise_or}[f.merge]
    ufunc.at(out, inverse, col)
    return out


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
# A record's drops by reason name ({}: none); see Extras.drops.
DropsOf = Callable[[FlowKey], dict[str, int]]


class DropLookup(Protocol):
    """What dump needs of the engine's DropTable (core/drops.py)."""

    def by_key(self, keys: np.ndarray) -> list[dict[str, int]]: ...

    def totals(self) -> dict[str, int]: ...

    def no_flow_packets(self) -> int: ...

    @property
    def evicted(self) -> int: ...


class WireLookup(Protocol):
    """What dump needs of the engine's WireNames (wirenames/names.py): the
    name behind a record's *_name_id (cleaned already)."""

    def name(self, nid: int) -> str | None: ...


def _end_name(
    end: str, r: FlowRecord, name_of: NameOf | None, wire: WireLookup | None
) -> str | None:
    """src_name/dst_name: the end's wire name, else its reverse DNS name (--resolve)."""
    nid: int = getattr(r, f"{end}_name_id")
    if nid and wire is not None:
        got = wire.name(nid)
        if got:
            return clean(got)
    return name_of(str(getattr(r.key, end))) if name_of is not None else None


def _name_source(r: FlowRecord, name_of: NameOf | None) -> str | None:
    """dns, sni, http; rdns when only reverse DNS named an end; None: no name."""
    if r.name_source:
        return SOURCE_NAMES.get(r.name_source)
    if name_of is not None and (name_of(str(r.key.src)) or name_of(str(r.key.dst))):
        return RDNS
    return None


def _name_cell(r: FlowRecord, wire: WireLookup | None) -> str:
    """The NAME cell: the named end's wire name and its source, "" for none."""
    nid = r.dst_name_id or r.src_name_id
    got = wire.name(nid) if wire is not None and nid else None
    if not got:
        return ""
    return f"{clean(got)} ({SOURCE_NAMES.get(r.name_source, '?')})"


class OwnerLookup(Protocol):
    """What dump needs of the engine's OwnerTable: the name tables behind the
    records' *_id columns and cgroup id -> path (both cleaned already)."""

    @property
    def names(self) -> OwnerNames: ...

    def cgroup_path(self, cgroup_id: int) -> str | None: ...


# SHOWN owner fields: the record's id column and the OwnerNames table it points into.
_OWNER_NAMES = {"comm": "comm_id", "service": "service_id", "container": "container_id",
                "pod": "pod_id"}  # fmt: skip


def _owner_value(name: str, r: FlowRecord, owners: OwnerLookup | None) -> str | None:
    """comm, service, container, pod or cgroup of a record; None when unknown."""
    if owners is None:
        return None
    if name == "cgroup":
        return owners.cgroup_path(r.cgroup_id) if r.cgroup_id else None
    nid: int = getattr(r, _OWNER_NAMES[name])
    table = getattr(owners.names, name)
    return table.get(nid) if nid else None


def _process(r: FlowRecord, owners: OwnerLookup | None) -> str:
    """The PROCESS cell: comm/pid, "(unattributed)" for a local socket of
    unknown owner, "" for none (forwarded)."""
    if r.owner_state == STATE_UNATTRIBUTED:
        return "(unattributed)"
    if r.owner_state != STATE_ATTRIBUTED:
        return ""
    comm = _owner_value("comm", r, owners) or "?"
    return f"{comm}/{r.pid}" if r.pid is not None else comm


def _entity(r: FlowRecord, id_field: str, entity_of: EntityOf | None) -> EntityLike | None:
    eid: int = getattr(r, id_field)
    return entity_of(eid) if entity_of is not None and eid >= 0 else None


def _json_value(
    f: Field,
    r: FlowRecord,
    ifname: str,
    entity_of: EntityOf | None,
    name_of: NameOf | None,
    owners: OwnerLookup | None = None,
    drops_of: DropsOf | None = None,
    wire: WireLookup | None = None,
) -> object:
    k = r.key
    if f.name == "drops":  # None (key left out): not collected (off, failed, a replay)
        return drops_of(k) if drops_of is not None else None
    if f.entity is not None:
        e = _entity(r, f.entity[0], entity_of)
        return getattr(e, f.entity[1]) if e is not None else None
    if f.origin == fields.KEY:
        v = getattr(k, fields.member(f.name))
        if isinstance(v, Direction):
            return v.label
        return str(v) if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address) else v
    if f.name == "iface":
        return clean(ifname)
    if f.name == "proto_name":
        return proto_name(k.proto)
    if f.name in ("src_name", "dst_name"):
        return _end_name(f.name[:3], r, name_of, wire)
    if f.name == "name_source":
        return _name_source(r, name_of)
    if f.json_when == fields.NAMES:
        assert name_of is not None
        return name_of(str(getattr(k, fields.member(f.name))))
    if f.name in _OWNER_NAMES or f.name == "cgroup":
        return _owner_value(f.name, r, owners)
    assert f.origin != fields.SHOWN, f"{f.name}: no JSON renderer"
    v = getattr(r, f.name)
    if f.name == "tcp_flags":
        return layout.tcp_wire_flags(v)
    return iso(r.unix(v)) if f.unit == fields.MONO_NS else v


def flow_json(
    r: FlowRecord,
    ifname: str,
    entity_of: EntityOf | None = None,
    name_of: NameOf | None = None,
    owners: OwnerLookup | None = None,
    drops_of: DropsOf | None = None,
    wire: WireLookup | None = None,
) -> dict[str, object]:
    """One flow line: fields.JSON_FIELDS in order (keys that are only sometimes
    there last: mpls_label on flows that carried a label, names when asked).
    owners: the engine's OwnerTable, for the owner names (null without)."""
    d: dict[str, object] = {"type": "flow"}
    for f in fields.JSON_FIELDS:
        if f.json_when == fields.NAMES and name_of is None and wire is None:
            continue
        if f.json_when == fields.WIRE_ON and wire is None:
            continue
        v = _json_value(f, r, ifname, entity_of, name_of, owners, drops_of, wire)
        if f.json_when == fields.KNOWN and v is None:
            continue
        d[str(f.json)] = v
    return d


@dataclass(frozen=True)
class Extras:
    """What dump prints beyond counters: names of entities, DNS names, health,
    socket owners (the engine's OwnerTable)."""

    entity_of: EntityOf | None = None
    name_of: NameOf | None = None
    health: Sequence[HealthGroup] = ()
    owners: OwnerLookup | None = None
    # The engine's DropTable (None: drops not collected): `drops` of each flow
    # line, and the "drops" summary line (JSON) / footer (text).
    drops: DropLookup | None = None
    drops_of: DropsOf | None = None  # emit() makes it from `drops` for the records
    # The engine's WireNames (None: names from the wire off): src_name,
    # dst_name and name_source of each flow line, the NAME text column.
    wire: WireLookup | None = None
    # --listen: ListenCollector.exporters(), one "exporter" line (JSON) or row each
    exporters: Sequence[Mapping[str, object]] = ()
    # The configured monitors at the end (query/monitors.py): one "monitor"
    # line (JSON) or row each
    monitors: Sequence[MonitorStatus] = ()
    # dump --conversations (run/dumpconv.py): a "conversation" line each
    # before the flow lines (JSON), or their table instead of the flows' (text)
    conversations: bool = False


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
        # json.dumps' default ensure_ascii writes every control and non-ASCII
        # character as an escape: no untrusted name reaches a terminal raw.
        line = flow_json(
            r, iface, extras.entity_of, extras.name_of, extras.owners, extras.drops_of, extras.wire
        )
        out.write(json.dumps(line) + "\n")
    for g in extras.health:
        out.write(json.dumps(g.as_dict()) + "\n")
    for m in extras.monitors:
        out.write(json.dumps(m.as_dict()) + "\n")
    if extras.drops is not None:
        # Every drop of the run by reason, and those of packets no flow has
        # (egress drops before TC: core/drops.py).
        d = extras.drops
        out.write(
            json.dumps(
                {
                    "type": "drops",
                    "by_reason": d.totals(),
                    "no_flow": d.no_flow_packets(),
                    "evicted": d.evicted,  # per-flow entries forgotten for room (bounded)
                }
            )
            + "\n"
        )
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
    for e in extras.exporters:  # the addresses are numeric: nothing to clean
        out.write(json.dumps({"type": "exporter", **e}) + "\n")
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
    ent = extras.entity_of
    cols = [(f, t) for f, t in fields.TEXT_COLUMNS if _shown(t, records, ent is not None)]
    rows: list[tuple[str, ...]] = [tuple(t.header for _, t in cols)]
    for r in records:
        name = ifname.get(r.key.ifindex, str(r.key.ifindex))
        rows.append(tuple(_cell(f, r, name, ent, extras.owners, extras.wire) for f, _ in cols))
    if not extras.conversations:  # else their table is printed in its place
        _print_rows(out, rows, right={i for i, (_, t) in enumerate(cols) if t.right})
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
    if extras.monitors:
        mrows: list[tuple[str, ...]] = [
            ("MONITOR", "OUT_BYTES", "IN_BYTES", "P50_MS", "P95_MS", "RETR%", "RTO", "VERDICT")
        ]
        for m in extras.monitors:
            p50, p95, ratio = m.rtt_p50_us, m.rtt_p95_us, m.retransmit_ratio
            mrows.append(
                (
                    m.name,
                    str(m.local_to_remote_bytes),
                    str(m.remote_to_local_bytes),
                    f"{p50 / 1000:.2f}" if p50 is not None else "",
                    f"{p95 / 1000:.2f}" if p95 is not None else "",
                    f"{ratio * 100:.2f}" if ratio is not None else "",
                    str(m.rto_total),
                    f"{m.verdict}: {m.reason}" if m.reason else m.verdict,
                )
            )
        _print_rows(out, mrows, right={1, 2, 3, 4, 5, 6})
        out.write("\n")
    if extras.exporters:
        xrows: list[tuple[str, ...]] = [
            (
                "EXPORTER",
                "PROTOCOL",
                "RECORDS",
                "LOST",
                "TEMPLATES",
                "MISSING",
                "ERRORS",
                "SAMPLING",
            )
        ]
        for e in extras.exporters:
            keys = ("records", "lost", "templates", "templates_missing", "errors")
            sampling = f"1:{e['sampling']} (estimated)" if e["estimated"] else "-"
            xrows.append(
                (str(e["exporter"]), str(e["protocol"]), *(str(e[k]) for k in keys), sampling)
            )
        _print_rows(out, xrows, right={2, 3, 4, 5, 6})
        out.write("\n")
    out.write(
        "collector: "
        + (", ".join(f"{k}={v}" for k, v in sorted(lost.items())) if lost else "nothing lost")
        + "\n"
    )


def _shown(col: Text, records: list[FlowRecord], entities: bool) -> bool:
    """Whether a text column is shown: always, with entities, or when some
    flow has a value in a column of its group."""
    if col.group is None:
        return True
    if col.group == "entity":
        return entities
    if col.group == "drops":  # some flow had drops
        return any(r.drop_packets for r in records)
    if col.group == "wire":  # some flow has a name from the wire
        return any(r.name_source for r in records)
    if col.group == "owner":  # some flow is a local socket's
        return any(r.owner_state in (STATE_ATTRIBUTED, STATE_UNATTRIBUTED) for r in records)
    same = [f.name for f, t in fields.TEXT_COLUMNS if t.group == col.group]
    return any(getattr(r, n) is not None for r in records for n in same)


def _cell(
    f: Field,
    r: FlowRecord,
    ifname: str,
    ent: EntityOf | None,
    owners: OwnerLookup | None = None,
    wire: WireLookup | None = None,
) -> str:
    """A text table cell."""
    k = r.key
    if f.name == "iface":
        return clean(ifname)
    if f.name == "direction":
        return "in" if k.direction == 0 else "out"
    if f.name == "proto_name":
        return proto_name(k.proto) + (" {}/{}".format(*k.icmp_type_code) if k.is_icmp else "")
    if f.name in ("src", "dst"):
        port = k.sport if f.name == "src" else k.dport
        return endpoint(getattr(k, f.name), port, k.proto, k.ip_version)
    if f.name == "tcp_flags":
        return tcp_flags_str(layout.tcp_wire_flags(r.tcp_flags)) if k.proto == 6 else ""
    if f.name == "vlan":
        return str(k.vlan) if k.vlan else ""
    if f.name == "rtt_us":
        return f"{r.rtt_us / 1000:.2f}" if r.rtt_us is not None else ""
    if f.name in ("src_as", "dst_as"):
        e = _entity(r, f"{f.name[:3]}_ent", ent)
        if e is None:
            return ""
        return clean(
            e.label or (f"AS{e.asn}" if e.asn else "") + (f" {e.country}" if e.country else "")
        )
    if f.name == "process":
        return _process(r, owners)
    if f.name == "name":
        return _name_cell(r, wire)
    assert f.origin != fields.SHOWN, f"{f.name}: no text renderer"
    v = getattr(k, fields.member(f.name)) if f.origin == fields.KEY else getattr(r, f.name)
    return "" if v is None else str(v)


def _print_rows(out: TextIO, rows: list[tuple[str, ...]], right: set[int]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.write("  ".join(cells).rstrip() + "\n")


def _drops_of(drops: DropLookup, batch: FlowBatch) -> DropsOf:
    """The batch's drops by key: one DropTable lookup for all of it; only
    the keys with drops are decoded."""
    per = drops.by_key(batch.keys)
    got = {decode_key(batch.keys[i]): d for i, d in enumerate(per) if d}
    return lambda key: got.get(key, {})


def sorted_records(batch: FlowBatch) -> list[FlowRecord]:
    order = np.lexsort((batch["packets"], batch["bytes"]))[::-1]
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
    if extras.drops is not None and extras.drops_of is None:
        extras = replace(extras, drops_of=_drops_of(extras.drops, batch))
    if extras.conversations:
        from flowtop.run.dumpconv import write_conversations  # it builds on this module

        write_conversations(out, batch, ifname, as_json, extras)
    (write_json if as_json else write_table)(out, records, ifname, ifaces, health, extras)
