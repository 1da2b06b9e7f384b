"""The Information Elements the decoders read, by id, with the flow column each fills.

Ids come from the exporter's table (export/ipfix/ie.py IES, the IANA
registry) for the elements flowtop exports itself; EXTRA adds the ones
routers commonly send that flowtop does not export (IANA ids; NetFlow v9
field types 1..127 are the same numbers, RFC 3954 §8). Every other element,
and every enterprise-specific one, is skipped by its length.

A column is an unsigned integer (any length 1..8, reduced-size encoding
allowed: RFC 7011 §6.2) or an address (4 or 16 octets, exactly).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from flowtop.export.ipfix.ie import IES

# IANA ids flowtop's exporter has no use for, but routers send.
EXTRA: Mapping[str, int] = MappingProxyType(
    {
        "flowEndSysUpTime": 21,
        "flowStartSysUpTime": 22,
        "samplingInterval": 34,
        "samplingAlgorithm": 35,
        "samplerRandomInterval": 50,
        "interfaceName": 82,
        "octetTotalCount": 85,
        "packetTotalCount": 86,
        "flowStartSeconds": 150,
        "flowEndSeconds": 151,
        "flowStartMicroseconds": 154,
        "flowEndMicroseconds": 155,
        "flowStartNanoseconds": 156,
        "flowEndNanoseconds": 157,
        "systemInitTimeMilliseconds": 160,
        "dot1qVlanId": 243,
        "samplingPacketInterval": 305,
        "samplingPacketSpace": 306,
    }
)


def _id(name: str) -> int:
    return IES[name].id if name in IES else EXTRA[name]


# element name -> the decoder's column (several elements may fill one column:
# the first one a template has wins, in this order).
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sourceIPv4Address", "src4"),
    ("destinationIPv4Address", "dst4"),
    ("sourceIPv6Address", "src6"),
    ("destinationIPv6Address", "dst6"),
    ("sourceTransportPort", "sport"),
    ("destinationTransportPort", "dport"),
    ("protocolIdentifier", "proto"),
    ("ipClassOfService", "tos"),
    ("tcpControlBits", "flags"),
    ("ingressInterface", "in_if"),
    ("egressInterface", "out_if"),
    ("flowDirection", "direction"),
    ("vlanId", "vlan"),
    ("dot1qVlanId", "vlan"),
    ("icmpTypeCodeIPv4", "icmp"),
    ("icmpTypeCodeIPv6", "icmp"),
    ("ipVersion", "ipver"),
    ("octetDeltaCount", "bytes"),
    ("octetTotalCount", "bytes"),
    ("packetDeltaCount", "packets"),
    ("packetTotalCount", "packets"),
    ("flowStartMilliseconds", "start_ms"),
    ("flowEndMilliseconds", "end_ms"),
    ("flowStartSeconds", "start_s"),
    ("flowEndSeconds", "end_s"),
    # dateTimeMicroseconds / dateTimeNanoseconds: both NTP timestamps (RFC 7011
    # §6.1.9-10), 8 octets exactly
    ("flowStartMicroseconds", "start_ntp"),
    ("flowStartNanoseconds", "start_ntp"),
    ("flowEndMicroseconds", "end_ntp"),
    ("flowEndNanoseconds", "end_ntp"),
    ("flowStartSysUpTime", "start_up"),
    ("flowEndSysUpTime", "end_up"),
    # options records (exporters.py reads them)
    ("samplingInterval", "sampling"),
    ("samplerRandomInterval", "sampling"),
    ("samplingPacketSpace", "sampling_space"),
    ("samplingPacketInterval", "sampling_taken"),
    ("interfaceName", "ifname"),
    ("systemInitTimeMilliseconds", "init_ms"),
)
COLUMN_OF: Mapping[int, str] = MappingProxyType({_id(n): c for n, c in reversed(_COLUMNS)})
# The columns wanted in order of preference (first element present wins).
PREFERENCE: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        c: tuple(_id(n) for n, cc in _COLUMNS if cc == c)
        for c in dict.fromkeys(c for _, c in _COLUMNS)
    }
)
ADDRESS_COLUMNS: Mapping[str, int] = MappingProxyType(
    {"src4": 4, "dst4": 4, "src6": 16, "dst6": 16}
)
TEXT_COLUMNS = frozenset({"ifname"})
NTP_COLUMNS = frozenset({"start_ntp", "end_ntp"})  # no reduced-size encoding (RFC 7011 §6.2)
