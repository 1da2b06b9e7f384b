"""The IPFIX Information Elements flowtop uses: one immutable table.

Ids, names, abstract types and lengths are those of the IANA "IPFIX
Information Elements" registry (RFC 7012, RFC 7125 for tcpControlBits). Each
element knows how it is laid out on the wire both for `struct` (per record)
and for numpy (whole columns at once); nothing here can be changed at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# abstract data type -> (default length, struct code, numpy dtype), network byte order;
# "{n}" stands for the element's length (octetArray has no length of its own)
_TYPES: Mapping[str, tuple[int, str, str]] = MappingProxyType(
    {
        "unsigned8": (1, "B", "u1"),
        "unsigned16": (2, "H", ">u2"),
        "unsigned32": (4, "I", ">u4"),
        "unsigned64": (8, "Q", ">u8"),
        "dateTimeMilliseconds": (8, "Q", ">u8"),
        "ipv4Address": (4, "4s", "(4,)u1"),
        "ipv6Address": (16, "16s", "(16,)u1"),
        "octetArray": (0, "{n}s", "({n},)u1"),
    }
)


@dataclass(frozen=True, slots=True)
class InformationElement:
    """One IANA Information Element (enterprise number 0)."""

    name: str
    id: int
    type: str
    length: int

    @property
    def struct_code(self) -> str:
        return _TYPES[self.type][1].format(n=self.length)

    @property
    def dtype(self) -> str:
        return _TYPES[self.type][2].format(n=self.length)


def _table(
    *rows: tuple[int, str, str] | tuple[int, str, str, int],
) -> Mapping[str, InformationElement]:
    """Rows of (id, name, type[, length]): the length for types without a fixed one."""
    ies = {}
    for ie_id, name, kind, *length in rows:
        size = length[0] if length else _TYPES[kind][0]
        assert size > 0, f"{name}: {kind} needs a length"
        ies[name] = InformationElement(name, ie_id, kind, size)
    assert len({e.id for e in ies.values()}) == len(rows), "duplicate IE id"
    return MappingProxyType(ies)


IES: Mapping[str, InformationElement] = _table(
    (1, "octetDeltaCount", "unsigned64"),
    (2, "packetDeltaCount", "unsigned64"),
    (4, "protocolIdentifier", "unsigned8"),
    (5, "ipClassOfService", "unsigned8"),
    (6, "tcpControlBits", "unsigned16"),
    (7, "sourceTransportPort", "unsigned16"),
    (8, "sourceIPv4Address", "ipv4Address"),
    (10, "ingressInterface", "unsigned32"),
    (11, "destinationTransportPort", "unsigned16"),
    (12, "destinationIPv4Address", "ipv4Address"),
    (14, "egressInterface", "unsigned32"),
    (16, "bgpSourceAsNumber", "unsigned32"),
    (17, "bgpDestinationAsNumber", "unsigned32"),
    (27, "sourceIPv6Address", "ipv6Address"),
    (28, "destinationIPv6Address", "ipv6Address"),
    (32, "icmpTypeCodeIPv4", "unsigned16"),
    (58, "vlanId", "unsigned16"),
    (60, "ipVersion", "unsigned8"),
    (61, "flowDirection", "unsigned8"),
    # The top label stack entry without its TTL: label << 4 | traffic class << 1 | bottom
    # of stack, 3 octets (the IANA registry's description; RFC 3032 for the fields).
    (70, "mplsTopLabelStackSection", "octetArray", 3),
    (136, "flowEndReason", "unsigned8"),
    (139, "icmpTypeCodeIPv6", "unsigned16"),
    (144, "exportingProcessId", "unsigned32"),
    (149, "observationDomainId", "unsigned32"),
    (152, "flowStartMilliseconds", "dateTimeMilliseconds"),
    (153, "flowEndMilliseconds", "dateTimeMilliseconds"),
    (166, "notSentFlowTotalCount", "unsigned64"),
    (167, "notSentPacketTotalCount", "unsigned64"),
    (168, "notSentOctetTotalCount", "unsigned64"),
    (323, "observationTimeMilliseconds", "dateTimeMilliseconds"),
)


def ie(name: str) -> InformationElement:
    """The element called name; KeyError names it if flowtop does not know it."""
    try:
        return IES[name]
    except KeyError:
        raise KeyError(f"unknown IPFIX Information Element {name!r}") from None
