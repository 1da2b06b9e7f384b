"""Flow-end batches to IPFIX Data Records, a whole FlowBatch at a time.

Each column of the batch is converted with one numpy operation into the
packed, network-byte-order structured array of a flow template; the array's
bytes are the Data Records, ready to be cut into messages. No Python work per
flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from flowtop.core.flowtable import FlowBatch
from flowtop.export.ipfix.template import Template
from flowtop.kernel import layout

ICMP_PROTOS = (1, 58)
_NS_PER_MS = 1_000_000

_KEY_FIELDS = layout.FLOW_KEY.fields
assert _KEY_FIELDS is not None
_SRC = int(_KEY_FIELDS["src"][1])
_DST = int(_KEY_FIELDS["dst"][1])


@dataclass(frozen=True, slots=True)
class EncodedRecords:
    """Data Records of one template, with what they count (for loss accounting)."""

    template: Template
    records: np.ndarray  # template.dtype
    packets: np.ndarray  # per record, uint64
    octets: np.ndarray

    def __len__(self) -> int:
        return len(self.records)


def unix_ms(mono_ns: np.ndarray, clock_offset: float) -> np.ndarray:
    """CLOCK_MONOTONIC ns plus the batch's offset (s) as unix milliseconds."""
    offset_ns = round(clock_offset * 1e9)
    return (mono_ns.astype(np.int64) + offset_ns) // _NS_PER_MS


def encode_flows(
    batch: FlowBatch,
    template: Template,
    select: np.ndarray | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> EncodedRecords:
    """Records of template for the batch rows in select (a mask or indices; all if None).

    extra supplies columns the batch does not have, by IE name (such as the
    BGP AS numbers); template fields with no source stay 0.
    """
    sel = slice(None) if select is None else select
    keys = batch.keys[sel]
    n = len(keys)
    out = template.empty(n)
    cols = set(template.columns)
    version = 6 if "sourceIPv6Address" in cols else 4
    alen = 16 if version == 6 else 4
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(n, layout.FLOW_KEY.itemsize)
    out[f"sourceIPv{version}Address"] = raw[:, _SRC : _SRC + alen]
    out[f"destinationIPv{version}Address"] = raw[:, _DST : _DST + alen]

    proto = keys["proto"]
    icmp = np.isin(proto, ICMP_PROTOS)
    ports_ok = ~icmp
    out["sourceTransportPort"] = np.where(ports_ok, keys["sport"], 0)
    out["destinationTransportPort"] = np.where(ports_ok, keys["dport"], 0)
    out[f"icmpTypeCodeIPv{version}"] = np.where(icmp, keys["dport"], 0)
    out["protocolIdentifier"] = proto
    out["ipVersion"] = keys["ip_version"]
    out["vlanId"] = keys["vlan"] & 0x0FFF
    direction = keys["direction"]
    ingress = direction == layout.DIR_INGRESS
    out["ingressInterface"] = np.where(ingress, keys["ifindex"], 0)
    out["egressInterface"] = np.where(ingress, 0, keys["ifindex"])
    out["flowDirection"] = direction
    out["flowStartMilliseconds"] = unix_ms(batch.start_ns[sel], batch.clock_offset)
    out["flowEndMilliseconds"] = unix_ms(batch.end_ns[sel], batch.clock_offset)
    packets = np.asarray(batch.packets[sel], dtype=np.uint64)
    octets = np.asarray(batch.bytes[sel], dtype=np.uint64)
    out["octetDeltaCount"] = octets
    out["packetDeltaCount"] = packets
    out["tcpControlBits"] = batch.flags[sel]
    out["ipClassOfService"] = (batch.dscp[sel].astype(np.uint8) & 0x3F) << 2
    out["flowEndReason"] = batch.reason[sel]
    if "mplsTopLabelStackSection" in cols:
        # The 24 bits below MPLS_PRESENT, big-endian.
        entry = (batch.mpls_or_zeros()[sel] & layout.MPLS_ENTRY_MASK).astype(">u4")
        out["mplsTopLabelStackSection"] = entry.view(np.uint8).reshape(n, 4)[:, 1:]
    for name, values in (extra or {}).items():
        if name in cols:
            out[name] = values[sel]
    return EncodedRecords(template, out, packets, octets)


def split_by_version(
    batch: FlowBatch,
    v4: Template,
    v6: Template,
    extra: Mapping[str, np.ndarray] | None = None,
    mpls: tuple[Template, Template] | None = None,
) -> tuple[list[EncodedRecords], np.ndarray]:
    """Records for the IPv4 and IPv6 rows, and the indices of rows neither can carry.

    mpls: the (IPv4, IPv6) templates with mplsTopLabelStackSection, for the rows
    whose flow carried an MPLS label; without them (or without such rows) every
    row uses v4/v6.
    """
    version = batch.keys["ip_version"]
    out: list[EncodedRecords] = []
    if len(batch) == 0:
        return out, np.zeros(0, dtype=np.intp)
    labelled = None
    if mpls is not None and batch.mpls is not None:
        labelled = (batch.mpls & layout.MPLS_PRESENT) != 0
    for i, (ver, tmpl) in enumerate(((4, v4), (6, v6))):
        mask = version == ver
        parts: list[tuple[np.ndarray, Template]] = [(mask, tmpl)]
        if labelled is not None and mpls is not None:
            parts = [(mask & ~labelled, tmpl), (mask & labelled, mpls[i])]
        for rows, t in parts:
            if rows.all():
                out.append(encode_flows(batch, t, None, extra))
            elif rows.any():
                out.append(encode_flows(batch, t, rows, extra))
    other = np.flatnonzero((version != 4) & (version != 6))
    return out, other
