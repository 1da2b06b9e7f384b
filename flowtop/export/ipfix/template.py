"""IPFIX (Options) Templates, compiled once to a packing plan.

A Template is an immutable list of Information Elements. On creation it
compiles two equivalent layouts of one Data Record: a `struct.Struct` (for a
record at a time: options records, the benchmark's baseline) and a packed
numpy dtype in network byte order (for whole FlowBatches at once). The
template's own wire form (RFC 7011 §3.4.1, §3.4.2.2) is computed once too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from flowtop.export.ipfix.ie import InformationElement, ie

TEMPLATE_SET_ID = 2
OPTIONS_TEMPLATE_SET_ID = 3
MIN_TEMPLATE_ID = 256

# Template ids used by flowtop's exporting process.
IPV4_FLOW_ID = 256
IPV6_FLOW_ID = 257
IPV4_FLOW_BGP_ID = 258
IPV6_FLOW_BGP_ID = 259
EXPORTER_RELIABILITY_ID = 260
IPV4_FLOW_MPLS_ID = 261
IPV6_FLOW_MPLS_ID = 262
IPV4_FLOW_BGP_MPLS_ID = 263
IPV6_FLOW_BGP_MPLS_ID = 264


@dataclass(frozen=True)
class Template:
    """A Template (scope_count == 0) or Options Template (scope_count >= 1)."""

    template_id: int
    fields: tuple[InformationElement, ...]
    scope_count: int = 0
    columns: tuple[str, ...] = field(init=False)
    struct: struct.Struct = field(init=False, repr=False, compare=False)
    dtype: np.dtype = field(init=False, repr=False, compare=False)
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not MIN_TEMPLATE_ID <= self.template_id <= 0xFFFF:
            raise ValueError(f"template id {self.template_id} outside 256..65535")
        if not self.fields or not 0 <= self.scope_count <= len(self.fields):
            raise ValueError("a template needs fields and at most that many scope fields")
        cols = _column_names(self.fields)
        plan = struct.Struct("!" + "".join(f.struct_code for f in self.fields))
        dtype = np.dtype([(c, f.dtype) for c, f in zip(cols, self.fields, strict=True)])
        assert plan.size == dtype.itemsize == sum(f.length for f in self.fields)
        specs = b"".join(struct.pack("!HH", f.id, f.length) for f in self.fields)
        if self.scope_count:
            head = struct.pack("!HHH", self.template_id, len(self.fields), self.scope_count)
        else:
            head = struct.pack("!HH", self.template_id, len(self.fields))
        set_attr = object.__setattr__
        set_attr(self, "columns", cols)
        set_attr(self, "struct", plan)
        set_attr(self, "dtype", dtype)
        set_attr(self, "wire", head + specs)

    @property
    def is_options(self) -> bool:
        return self.scope_count > 0

    @property
    def set_id(self) -> int:
        """The id of the set that carries this template's definition."""
        return OPTIONS_TEMPLATE_SET_ID if self.is_options else TEMPLATE_SET_ID

    @property
    def record_size(self) -> int:
        return self.struct.size

    def pack(self, *values: int | bytes) -> bytes:
        """One Data Record, values in field order."""
        return self.struct.pack(*values)

    def empty(self, n: int) -> np.ndarray:
        """n zeroed Data Records as a structured array (fields named by `columns`)."""
        return np.zeros(n, dtype=self.dtype)


def _column_names(fields: tuple[InformationElement, ...]) -> tuple[str, ...]:
    """IE names, with a repeated element numbered (observationTimeMilliseconds_2)."""
    seen: dict[str, int] = {}
    out = []
    for f in fields:
        seen[f.name] = seen.get(f.name, 0) + 1
        out.append(f.name if seen[f.name] == 1 else f"{f.name}_{seen[f.name]}")
    return tuple(out)


def template(template_id: int, *names: str, scope: int = 0) -> Template:
    return Template(template_id, tuple(ie(n) for n in names), scope)


# The flow templates' elements in wire order (public: tests/export/test_golden.py).
# Each is filled from the flow field that names it (core/fields.py Field.ie,
# export/ipfix/records.py); tests/unit/test_fields.py checks every one has one.
_FLOW_HEAD = ("sourceIPv{v}Address", "destinationIPv{v}Address")
_FLOW_TAIL = (
    "sourceTransportPort",
    "destinationTransportPort",
    "protocolIdentifier",
    "icmpTypeCodeIPv{v}",
    "ipVersion",
    "vlanId",
    "ingressInterface",
    "egressInterface",
    "flowDirection",
    "flowStartMilliseconds",
    "flowEndMilliseconds",
    "octetDeltaCount",
    "packetDeltaCount",
    "tcpControlBits",
    "ipClassOfService",
    "flowEndReason",
)
_BGP = ("bgpSourceAsNumber", "bgpDestinationAsNumber")
_MPLS = ("mplsTopLabelStackSection",)
_FLOW_IDS = {
    (4, False, False): IPV4_FLOW_ID,
    (6, False, False): IPV6_FLOW_ID,
    (4, True, False): IPV4_FLOW_BGP_ID,
    (6, True, False): IPV6_FLOW_BGP_ID,
    (4, False, True): IPV4_FLOW_MPLS_ID,
    (6, False, True): IPV6_FLOW_MPLS_ID,
    (4, True, True): IPV4_FLOW_BGP_MPLS_ID,
    (6, True, True): IPV6_FLOW_BGP_MPLS_ID,
}


def flow_template(ip_version: int, bgp: bool = False, mpls: bool = False) -> Template:
    """The flow-record template for IPv4 or IPv6; bgp adds the AS number pair,
    mpls the top MPLS label (for the flows that carried one: a record of a flow
    without a label uses the template without the field, rather than a made-up
    label 0)."""
    if ip_version not in (4, 6):
        raise ValueError(f"no flow template for IP version {ip_version}")
    names = [n.format(v=ip_version) for n in (*_FLOW_HEAD, *_FLOW_TAIL)]
    if bgp:
        names += _BGP
    if mpls:
        names += _MPLS
    return template(_FLOW_IDS[(ip_version, bgp, mpls)], *names)


# RFC 7011 §4.3: the Exporting Process Reliability Statistics Options Template.
# The two observation times are "time first flow dropped" and "time last flow
# dropped" (0 while nothing was dropped).
EXPORTER_RELIABILITY = template(
    EXPORTER_RELIABILITY_ID,
    "exportingProcessId",
    "notSentFlowTotalCount",
    "notSentPacketTotalCount",
    "notSentOctetTotalCount",
    "observationTimeMilliseconds",
    "observationTimeMilliseconds",
    scope=1,
)

IPV4_FLOW = flow_template(4)
IPV6_FLOW = flow_template(6)
