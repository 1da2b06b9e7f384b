"""Flow-end batches to IPFIX Data Records, a whole FlowBatch at a time.

Each Information Element of a flow template is filled from the field that
names it in core/fields.py (Field.ie), with one numpy operation per element
into the packed, network-byte-order structured array of the template; the
array's bytes are the Data Records, ready to be cut into messages. No Python
work per flow. Most elements are the field's column as it is; the ones that
are not (addresses cut to their version, ports and ICMP type/code, the
interface by direction, times, DSCP, the MPLS entry) have an encoder here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from flowtop.core import fields
from flowtop.core.fields import Field
from flowtop.core.flowtable import FlowBatch
from flowtop.export.ipfix.template import Template
from flowtop.kernel import layout

ICMP_PROTOS = (1, 58)
_NS_PER_MS = 1_000_000

_KEY_FIELDS = layout.FLOW_KEY.fields
assert _KEY_FIELDS is not None
_KEY_OFFSETS = {name: int(spec[1]) for name, spec in _KEY_FIELDS.items()}


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


class _Rows:
    """The selected rows of a batch, as the encoders read them."""

    def __init__(self, batch: FlowBatch, sel: slice | np.ndarray, version: int) -> None:
        self.batch = batch
        self.sel = sel
        self.keys = batch.keys[sel]
        self.version = version

    def value(self, f: Field) -> np.ndarray:
        """The field's values: a key member or the batch column."""
        if f.origin == fields.KEY:
            out: np.ndarray = self.keys[fields.member(f.name)]
            return out
        col: np.ndarray = self.batch[f.name][self.sel]
        return col

    @cached_property
    def icmp(self) -> np.ndarray:
        return np.isin(self.keys["proto"], ICMP_PROTOS)

    @cached_property
    def ingress(self) -> np.ndarray:
        out: np.ndarray = self.keys["direction"] == layout.DIR_INGRESS
        return out

    def address(self, f: Field) -> np.ndarray:
        """The address octets of the version, from the raw key."""
        n, alen = len(self.keys), 16 if self.version == 6 else 4
        raw = np.ascontiguousarray(self.keys).view(np.uint8).reshape(n, layout.FLOW_KEY.itemsize)
        start = _KEY_OFFSETS[fields.member(f.name)]
        return raw[:, start : start + alen]


Encoder = Callable[[_Rows, Field], np.ndarray]


def _mpls_entry(r: _Rows, f: Field) -> np.ndarray:
    """The 24 bits below MPLS_PRESENT, big-endian."""
    entry = (r.value(f) & layout.MPLS_ENTRY_MASK).astype(">u4")
    out: np.ndarray = entry.view(np.uint8).reshape(len(r.keys), 4)[:, 1:]
    return out


# Elements that are not their field's value as it is.
_ENCODERS: dict[str, Encoder] = {
    **dict.fromkeys(
        ("sourceIPv4Address", "sourceIPv6Address", "destinationIPv4Address",
         "destinationIPv6Address"),
        _Rows.address,
    ),
    "sourceTransportPort": lambda r, f: np.where(r.icmp, 0, r.value(f)),
    "destinationTransportPort": lambda r, f: np.where(r.icmp, 0, r.value(f)),
    "icmpTypeCodeIPv4": lambda r, f: np.where(r.icmp, r.value(f), 0),
    "icmpTypeCodeIPv6": lambda r, f: np.where(r.icmp, r.value(f), 0),
    "vlanId": lambda r, f: r.value(f) & 0x0FFF,
    "ingressInterface": lambda r, f: np.where(r.ingress, r.value(f), 0),
    "egressInterface": lambda r, f: np.where(r.ingress, 0, r.value(f)),
    "flowStartMilliseconds": lambda r, f: unix_ms(r.value(f), r.batch.clock_offset),
    "flowEndMilliseconds": lambda r, f: unix_ms(r.value(f), r.batch.clock_offset),
    "ipClassOfService": lambda r, f: (r.value(f).astype(np.uint8) & 0x3F) << 2,
    # FT_TCP_SYN_ONLY is flowtop's, not a TCP flag (0x100 is NS in RFC 7125).
    "tcpControlBits": lambda r, f: layout.tcp_wire_flags(r.value(f)),
    "mplsTopLabelStackSection": _mpls_entry,
}  # fmt: skip


def encode_flows(
    batch: FlowBatch, template: Template, select: np.ndarray | None = None
) -> EncodedRecords:
    """Records of template for the batch rows in select (a mask or indices; all if None)."""
    sel: slice | np.ndarray = slice(None) if select is None else select
    version = 6 if "sourceIPv6Address" in template.columns else 4
    rows = _Rows(batch, sel, version)
    out = template.empty(len(rows.keys))
    for column, element in zip(template.columns, template.fields, strict=True):
        f = fields.BY_IE[element.name]  # KeyError: an element no field fills
        encode = _ENCODERS.get(element.name)
        out[column] = rows.value(f) if encode is None else encode(rows, f)
    packets = np.asarray(batch["packets"][sel], dtype=np.uint64)
    octets = np.asarray(batch["bytes"][sel], dtype=np.uint64)
    return EncodedRecords(template, out, packets, octets)


def split_by_version(
    batch: FlowBatch,
    v4: Template,
    v6: Template,
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
    if mpls is not None:
        labelled = (batch["mpls"] & layout.MPLS_PRESENT) != 0
        if not labelled.any():  # the common case: one template per version
            labelled = None
    for i, (ver, tmpl) in enumerate(((4, v4), (6, v6))):
        mask = version == ver
        parts: list[tuple[np.ndarray, Template]] = [(mask, tmpl)]
        if labelled is not None and mpls is not None:
            parts = [(mask & ~labelled, tmpl), (mask & labelled, mpls[i])]
        for rows, t in parts:
            if rows.all():
                out.append(encode_flows(batch, t, None))
            elif rows.any():
                out.append(encode_flows(batch, t, rows))
    other = np.flatnonzero((version != 4) & (version != 6))
    return out, other
