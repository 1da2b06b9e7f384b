"""Decoded records -> layout.FLOW_KEY / FLOW_STATS batches, so everything
downstream (flow table, view, dump, IPFIX re-export, Prometheus) is the
kernel's code path.

Pending collects what the decoders accepted during one drain: the raw bytes
of fixed-length data sets per (exporter, domain, template), so a template's
records decode with one np.frombuffer however many messages brought them,
and the columns of variable-length records. flows() turns them into batches:

- key: the record's addresses, ports, protocol (ICMP: type/code in dport as
  the kernel keys it), VLAN; ifindex the synthetic index (ifmap.py) of the
  record's interface on its exporter, direction ingress when the record
  says so (flowDirection 0) or, without flowDirection, when it has a non-zero
  ingressInterface: a record with both interfaces is one flow on the
  ingress one. Egress otherwise, on egressInterface.
- stats: packets and bytes times the domain's sampling interval (estimates,
  counted in listen_records_sampled and shown per exporter), TCP flags,
  DSCP (ipClassOfService >> 2). last_seen is when flowtop received the
  record (the idle timeout runs from there); first_seen is that minus the
  flow's age at export by the exporter's own clock (its export time minus
  the flow's start, in ms, µs/ns, s or sysUpTime: _age_ms; no clock
  agreement needed), at most a day.
- records with the same key in one drain are merged (the flow table takes
  distinct keys per batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowtop.kernel import layout
from flowtop.listen import counters as lc
from flowtop.listen.exporters import DomainState, Exporter
from flowtop.listen.ifmap import IfMap
from flowtop.listen.templates import Columns, FieldSpec, Record, Template, columns_of, decode_fixed

MAX_AGE_MS = 86_400_000
_ICMP = (1, 58)
_SRC = layout.FLOW_KEY.fields["src"][1]  # type: ignore[index]
_DST = layout.FLOW_KEY.fields["dst"][1]  # type: ignore[index]

# The v5 record (Cisco's fixed 48 bytes) as a template of IANA ids, so it
# decodes like any other fixed-length data set.
V5_TEMPLATE = Template(
    0,
    tuple(
        FieldSpec(ie, n)
        for ie, n in (
            (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4),
            (7, 2), (11, 2), (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1),
            (13, 1), (210, 2),
        )
    ),
)  # fmt: skip
assert V5_TEMPLATE.record_len == 48


@dataclass(slots=True)
class _Chunks:
    ex: Exporter
    domain: int
    state: DomainState
    template: Template
    parts: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    export_ms: list[int] = field(default_factory=list)
    uptime: list[int] = field(default_factory=list)  # -1: the format has none


@dataclass(slots=True)
class _Records:
    ex: Exporter
    domain: int
    state: DomainState
    recs: list[Record] = field(default_factory=list)
    export_ms: list[int] = field(default_factory=list)
    uptime: list[int] = field(default_factory=list)  # empty: the format has none


@dataclass(slots=True)
class _Block:
    ex: Exporter
    domain: int
    state: DomainState
    cols: Columns
    n: int


class Pending:
    """What the decoders accepted since the last flows()."""

    def __init__(self) -> None:
        self._fixed: dict[tuple[str, int, int], _Chunks] = {}
        # variable-length and sFlow records per (exporter, domain, their columns)
        self._var: dict[tuple[str, int, tuple[str, ...], bool], _Records] = {}
        self._blocks: list[_Block] = []  # records already in columns (sFlow's bulk reader)
        self.records = 0

    def __len__(self) -> int:
        return self.records

    def fixed(
        self,
        ex: Exporter,
        domain: int,
        d: DomainState,
        t: Template,
        msg: bytes,
        offset: int,
        count: int,
        export_ms: int,
        uptime: int | None,
    ) -> None:
        key = (ex.address, domain, id(t))
        c = self._fixed.get(key)
        if c is None or c.template is not t:
            c = self._fixed[key] = _Chunks(ex, domain, d, t)
        c.parts.append(msg[offset : offset + count * t.record_len])
        c.counts.append(count)
        c.export_ms.append(export_ms)
        c.uptime.append(-1 if uptime is None else uptime)
        ex.records += count
        self.records += count

    def v5(
        self,
        ex: Exporter,
        domain: int,
        d: DomainState,
        msg: bytes,
        offset: int,
        count: int,
        export_ms: int,
        uptime: int,
    ) -> None:
        self.fixed(ex, domain, d, V5_TEMPLATE, msg, offset, count, export_ms, uptime)

    def variable(
        self,
        ex: Exporter,
        domain: int,
        d: DomainState,
        recs: list[Record],
        export_ms: int,
        uptime: int | None,
    ) -> None:
        n = len(recs)
        if not n:
            return
        key = (ex.address, domain, tuple(sorted(recs[0])), uptime is None)
        r = self._var.get(key)
        if r is None or r.state is not d:
            r = self._var[key] = _Records(ex, domain, d)
        r.recs.extend(recs)
        r.export_ms.extend([export_ms] * n)
        if uptime is not None:
            r.uptime.extend([uptime] * n)
        ex.records += n
        self.records += n

    def columns(self, ex: Exporter, domain: int, d: DomainState, cols: Columns) -> None:
        """Records of one (exporter, domain) already as columns (no times: age 0)."""
        n = len(next(iter(cols.values())))
        if not n:
            return
        self._blocks.append(_Block(ex, domain, d, cols, n))
        ex.records += n
        self.records += n

    def flows(
        self, ifmap: IfMap, now_ns: int, counters: dict[str, int]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Everything pending as (FLOW_KEY, FLOW_STATS) batches of distinct keys; cleared."""
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for c in self._fixed.values():
            n = sum(c.counts)
            cols = decode_fixed(c.template, b"".join(c.parts), n)
            counts = np.array(c.counts)
            cols["export_ms"] = np.repeat(np.array(c.export_ms, dtype=np.uint64), counts)
            if c.uptime[0] >= 0:
                cols["uptime"] = np.repeat(np.array(c.uptime, dtype=np.uint64), counts)
            parts.append(_to_flows(cols, n, c.ex, c.domain, c.state, ifmap, now_ns, counters))
        for v in self._var.values():
            cols = columns_of(v.recs)
            cols["export_ms"] = np.array(v.export_ms, dtype=np.uint64)
            if v.uptime:
                cols["uptime"] = np.array(v.uptime, dtype=np.uint64)
            parts.append(
                _to_flows(cols, len(v.recs), v.ex, v.domain, v.state, ifmap, now_ns, counters)
            )
        for b in self._blocks:
            b.cols["export_ms"] = np.zeros(b.n, dtype=np.uint64)
            parts.append(_to_flows(b.cols, b.n, b.ex, b.domain, b.state, ifmap, now_ns, counters))
        self._fixed.clear()
        self._var.clear()
        self._blocks.clear()
        self.records = 0
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return []
        keys = np.concatenate([k for k, _ in parts])
        stats = np.concatenate([s for _, s in parts])
        return [merge_duplicates(keys, stats)]


def _u(cols: Columns, name: str, n: int) -> np.ndarray:
    got = cols.get(name)
    return got if got is not None else np.zeros(n, dtype=np.uint64)


def _to_flows(
    cols: Columns,
    n: int,
    ex: Exporter,
    domain: int,
    d: DomainState,
    ifmap: IfMap,
    now_ns: int,
    counters: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    keys = np.zeros(n, dtype=layout.FLOW_KEY)
    raw = keys.view(np.uint8).reshape(n, layout.FLOW_KEY.itemsize)
    v4 = "src4" in cols and "dst4" in cols
    v6 = "src6" in cols and "dst6" in cols
    both = v4 and v6 and "ipver" in cols
    is6 = cols["ipver"] == 6 if both else np.full(n, v6 and not v4)
    keyed = np.full(n, v4 or v6)
    if v4:
        m = ~is6
        raw[m, _SRC : _SRC + 4] = cols["src4"][m]
        raw[m, _DST : _DST + 4] = cols["dst4"][m]
    if v6:
        raw[is6, _SRC : _SRC + 16] = cols["src6"][is6]
        raw[is6, _DST : _DST + 16] = cols["dst6"][is6]
    keys["ip_version"] = np.where(is6, 6, 4)
    proto = _u(cols, "proto", n)
    keys["proto"] = proto
    icmp = np.isin(proto, _ICMP)
    sport, dport = _u(cols, "sport", n), _u(cols, "dport", n)
    if "icmp" in cols:
        dport = np.where(icmp, cols["icmp"], dport)
    keys["sport"] = np.where(icmp, 0, sport)
    keys["dport"] = dport
    keys["vlan"] = _u(cols, "vlan", n) & 0x0FFF
    in_if, out_if = _u(cols, "in_if", n), _u(cols, "out_if", n)
    if "direction" in cols:
        ingress = cols["direction"] == 0
    else:
        ingress = (in_if != 0) | ("out_if" not in cols)
    keys["direction"] = np.where(ingress, layout.DIR_INGRESS, layout.DIR_EGRESS)
    ifindex = np.where(ingress, in_if, out_if).astype(np.uint32)
    before = ifmap.exhausted
    keys["ifindex"] = ifmap.many(ex.address, domain, ifindex, d.ifnames)
    counters[lc.IFINDEX_EXHAUSTED] += ifmap.exhausted - before

    stats = np.zeros(n, dtype=layout.FLOW_STATS)
    stats["packets"] = _scaled(_u(cols, "packets", n), d.sampling)
    stats["bytes"] = _scaled(_u(cols, "bytes", n), d.sampling)
    if d.sampling > 1:
        counters[lc.RECORDS_SAMPLED] += n
    stats["tcp_flags"] = _u(cols, "flags", n) & 0xFF
    stats["dscp"] = (_u(cols, "tos", n) >> 2) & 0x3F
    stats["last_seen_ns"] = now_ns
    # (a young boot's clock cannot go below 0)
    stats["first_seen_ns"] = now_ns - np.minimum(_age_ms(cols, n, d.init_ms) * 1_000_000, now_ns)
    counters[lc.RECORDS] += int(np.count_nonzero(keyed))
    if not keyed.all():
        counters[lc.RECORDS_UNKEYED] += int(np.count_nonzero(~keyed))
        return keys[keyed], stats[keyed]
    return keys, stats


def _scaled(counts: np.ndarray, sampling: int) -> np.ndarray:
    """counts times the sampling interval, saturating at 2^64 - 1 (never wrapping)."""
    if sampling <= 1:
        return counts
    top = np.uint64(0xFFFF_FFFF_FFFF_FFFF // sampling)
    out: np.ndarray = np.where(
        counts > top, np.uint64(0xFFFF_FFFF_FFFF_FFFF), counts * np.uint64(sampling)
    )
    return out


NTP_UNIX_S = 2_208_988_800  # 1900-01-01 to 1970-01-01


def ntp_ms(v: np.ndarray) -> np.ndarray:
    """NTP timestamps (seconds since 1900 in the top 32 bits, the fraction below)
    as unix milliseconds."""
    v = v.astype(np.uint64)
    sec = (v >> np.uint64(32)).astype(np.int64) - NTP_UNIX_S
    frac = (v & np.uint64(0xFFFF_FFFF)).astype(np.int64)
    out: np.ndarray = sec * 1000 + ((frac * 1000) >> 32)
    return out


def _age_ms(cols: Columns, n: int, init_ms: int | None = None) -> np.ndarray:
    """How old each flow was when exported (ms, 0..MAX_AGE_MS), by the exporter's
    clock: the export time minus its start (ms, then µs/ns, then s); sysUpTime
    starts against the message's uptime (v9, v5), else against the exporter's
    init time (the record's systemInitTimeMilliseconds, else an options
    record's: init_ms); with neither, the flow's duration (end - start: it is
    taken to end when exported, so the age is never overstated); else 0."""
    export = cols["export_ms"].astype(np.int64)
    if "start_ms" in cols:
        age = export - cols["start_ms"].astype(np.int64)
    elif "start_ntp" in cols:
        age = export - ntp_ms(cols["start_ntp"])
    elif "start_s" in cols:
        age = export - cols["start_s"].astype(np.int64) * 1000
    elif "start_up" in cols and "uptime" in cols:  # sysUpTime ms, wrapping at 2^32
        age = (cols["uptime"].astype(np.int64) - cols["start_up"].astype(np.int64)) % (1 << 32)
    elif "start_up" in cols and "init_ms" in cols:
        age = export - (cols["init_ms"].astype(np.int64) + cols["start_up"].astype(np.int64))
    elif "start_up" in cols and init_ms is not None:
        age = export - (init_ms + cols["start_up"].astype(np.int64))
    elif "start_up" in cols and "end_up" in cols:
        age = (cols["end_up"].astype(np.int64) - cols["start_up"].astype(np.int64)) % (1 << 32)
    else:
        return np.zeros(n, dtype=np.uint64)
    out: np.ndarray = np.clip(age, 0, MAX_AGE_MS).astype(np.uint64)
    return out


def merge_duplicates(keys: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One record per distinct key: counters summed, flags OR'd, first_seen the
    earliest, last_seen the latest, DSCP the last record's."""
    n = len(keys)
    if n < 2:
        return keys, stats
    void = np.ascontiguousarray(keys).view(f"V{layout.FLOW_KEY.itemsize}")
    uniq, first, inverse = np.unique(void, return_index=True, return_inverse=True)
    if len(uniq) == n:
        return keys, stats
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    s = stats[order]
    out = np.zeros(len(uniq), dtype=layout.FLOW_STATS)
    out["packets"] = np.add.reduceat(s["packets"], bounds)
    out["bytes"] = np.add.reduceat(s["bytes"], bounds)
    out["tcp_flags"] = np.bitwise_or.reduceat(s["tcp_flags"], bounds)
    out["first_seen_ns"] = np.minimum.reduceat(s["first_seen_ns"], bounds)
    out["last_seen_ns"] = np.maximum.reduceat(s["last_seen_ns"], bounds)
    ends = np.r_[bounds[1:], len(s)] - 1
    out["dscp"] = s["dscp"][ends]
    return keys[first], out
