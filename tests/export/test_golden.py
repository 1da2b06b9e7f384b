"""Byte-exact IPFIX messages, the expected bytes written out by hand from RFC 7011.

Export time 2024-01-02 03:04:05 UTC = 0x65937d25; flows start at
1704164645000 ms = 0x0000018cc820d888.
"""

from __future__ import annotations

from flowtop.core.model import EndReason
from flowtop.export.ipfix.message import Message, Session
from flowtop.export.ipfix.records import split_by_version
from flowtop.export.ipfix.template import EXPORTER_RELIABILITY, IPV4_FLOW, IPV6_FLOW

from .flows import Flow, batch

NOW = 1_704_164_645.0
TEMPLATES = (IPV4_FLOW, IPV6_FLOW, EXPORTER_RELIABILITY)


def hexb(text: str) -> bytes:
    return bytes.fromhex(" ".join(line.split("#")[0] for line in text.splitlines()))


def session() -> Session:
    return Session(7, TEMPLATES, 1400, refresh_interval=60, clock=lambda: NOW)


def sent(s: Session, msgs: list[Message]) -> list[Message]:
    for m in msgs:
        s.sent(m)
    return msgs


TEMPLATE_MESSAGE = hexb(
    """
    000a 00ce 65937d25 00000000 00000007  # v10, 206 bytes, export time, seq 0, domain 7
    0002 009c                             # Template Set, 156 bytes
    0100 0012                             # template 256 (IPv4 flow), 18 fields
    0008 0004  000c 0004                  # sourceIPv4Address, destinationIPv4Address
    0007 0002  000b 0002  0004 0001       # sourceTransportPort, destinationTransportPort, proto
    0020 0002  003c 0001  003a 0002       # icmpTypeCodeIPv4, ipVersion, vlanId
    000a 0004  000e 0004  003d 0001       # ingressInterface, egressInterface, flowDirection
    0098 0008  0099 0008                  # flowStartMilliseconds, flowEndMilliseconds
    0001 0008  0002 0008                  # octetDeltaCount, packetDeltaCount
    0006 0002  0005 0001  0088 0001       # tcpControlBits, ipClassOfService, flowEndReason
    0101 0012                             # template 257 (IPv6 flow), 18 fields
    001b 0010  001c 0010                  # sourceIPv6Address, destinationIPv6Address
    0007 0002  000b 0002  0004 0001
    008b 0002  003c 0001  003a 0002       # icmpTypeCodeIPv6, ipVersion, vlanId
    000a 0004  000e 0004  003d 0001
    0098 0008  0099 0008
    0001 0008  0002 0008
    0006 0002  0005 0001  0088 0001
    0003 0022                             # Options Template Set, 34 bytes
    0104 0006 0001                        # template 260, 6 fields, 1 scope field
    0090 0004                             # scope: exportingProcessId
    00a6 0008  00a7 0008  00a8 0008       # notSent{Flow,Packet,Octet}TotalCount
    0143 0008  0143 0008                  # observationTimeMilliseconds x2 (first/last drop)
    """
)

IPV4_DATA = hexb(
    """
    000a 0092 65937d25 00000000 00000007  # 146 bytes, seq 0 (templates carry no records)
    0100 0082                             # Data Set for template 256, 4 + 2 x 63 bytes
    0a000001 0a000002 04d2 0050 06        # 10.0.0.1:1234 -> 10.0.0.2:80 TCP
    0000 04 0064                          # no ICMP type/code, IPv4, VLAN 100
    00000002 00000000 00                  # ingress on ifindex 2
    0000018cc820d888 0000018cc820de64     # start, end (+1500 ms)
    00000000000000b4 0000000000000003     # 180 octets, 3 packets
    0012 b8 03                            # SYN|ACK, DSCP 46 << 2, end of flow
    0a000001 0a000003 0000 0000 01        # ICMP: ports exported as 0
    0800 04 0000                          # type 8 code 0 (echo request)
    00000000 00000003 01                  # egress on ifindex 3
    0000018cc820d888 0000018cc820d982     # start, end (+250 ms)
    0000000000000054 0000000000000001     # 84 octets, 1 packet
    0000 00 01                            # idle timeout
    """
)

IPV6_DATA = hexb(
    """
    000a 00c2 65937d25 00000002 00000007  # 194 bytes, seq 2
    0101 00b2                             # Data Set for template 257, 4 + 2 x 87 bytes
    20010db8000000000000000000000001
    20010db8000000000000000000000002
    14e9 0035 11 0000 06 0000             # :5353 -> :53 UDP, IPv6, no VLAN
    00000002 00000000 00
    0000018cc820d888 0000018cc820d888
    0000000000000078 0000000000000002     # 120 octets, 2 packets
    0000 00 04                            # forced end
    20010db8000000000000000000000002
    20010db8000000000000000000000001
    0000 0000 3a 8000 06 0000             # ICMPv6 echo request (128 << 8)
    00000002 00000000 00
    0000018cc820d888 0000018cc820d888
    0000000000000040 0000000000000001
    0000 00 01
    """
)

OPTIONS_DATA = hexb(
    """
    000a 0040 65937d25 00000000 00000007  # 64 bytes, seq 0
    0104 0030                             # Data Set for template 260, 4 + 44 bytes
    00001092                              # exportingProcessId 4242
    0000000000000005 0000000000000007     # 5 flows, 7 packets not sent
    0000000000000384                      # 900 octets not sent
    0000018cc820d888 0000018cc820d982     # first and last flow dropped
    """
)

FLOWS = [
    Flow("10.0.0.1", "10.0.0.2", 6, 1234, 80, packets=3, bytes=180, end_ms=1500,
         flags=0x12, dscp=46, vlan=100, reason=EndReason.END_OF_FLOW),
    Flow("2001:db8::1", "2001:db8::2", 17, 5353, 53, packets=2, bytes=120,
         reason=EndReason.FORCED_END),
    Flow("10.0.0.1", "10.0.0.3", 1, 0, 0x0800, bytes=84, end_ms=250, ifindex=3, direction=1),
    Flow("2001:db8::2", "2001:db8::1", 58, 0, 0x8000, bytes=64),
]  # fmt: skip


def test_template_message() -> None:
    s = session()
    assert s.templates_due()
    (msg,) = list(s.template_messages())
    assert msg.data == TEMPLATE_MESSAGE
    assert msg.kind == "templates" and msg.records == 0


def test_data_messages_ipv4_ipv6_icmp() -> None:
    s = session()
    encoded, other = split_by_version(batch(FLOWS), IPV4_FLOW, IPV6_FLOW)
    assert len(other) == 0
    v4, v6 = encoded
    msgs = sent(s, list(s.data_messages(v4)))
    assert [m.kind for m in msgs] == ["templates", "data"]
    assert msgs[0].data == TEMPLATE_MESSAGE
    assert msgs[1].data == IPV4_DATA
    assert (msgs[1].records, msgs[1].packets, msgs[1].octets) == (2, 4, 264)
    (msg,) = sent(s, list(s.data_messages(v6)))
    assert msg.data == IPV6_DATA
    assert s.sequence == 4


def test_options_message() -> None:
    s = session()
    values = (4242, 5, 7, 900, 1_704_164_645_000, 1_704_164_645_250)
    msgs = sent(s, list(s.options_messages(EXPORTER_RELIABILITY, values)))
    assert [m.data for m in msgs] == [TEMPLATE_MESSAGE, OPTIONS_DATA]
    assert s.sequence == 1  # an options record is a Data Record too
