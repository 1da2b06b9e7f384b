"""Crafted frames: VLAN, QinQ, IPv4 fragments, IPv6 extension headers,
truncated and malformed headers, non-IP.

One run serves the whole module (compiling the BPF program costs seconds):
A sends every frame kind over AF_PACKET to a sink address; one collector in
A watches va (egress: VLAN tags in-band) and one in B watches vb (ingress: the
outer tag offloaded into skb->vlan_tci). Each test checks one kind, and all
of them check that the bad frames did not disturb the exact counts of the
good ones sent in the same run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.all import ICMP, IP, SCTP, UDP, IPOption_RR, IPv6, Raw  # type: ignore[import-untyped]

from . import frames as fr
from . import netns
from .dump import DumpResult, run_dumps
from .expect import check_flows
from .netns import MAC_A, MAC_B

pytestmark = pytest.mark.kernel

A4 = "10.200.1.1"
A6 = "fd00:200:1::1"
S4, S6 = fr.SINK4, fr.SINK6
REPEAT = 3


def _src4(n: int) -> str:
    return f"10.200.1.{n}"


def _src6(n: int) -> str:
    return f"fd00:200:1::{n:x}"


@dataclass
class CraftedRun:
    groups: dict[str, list[fr.Frame]]
    a: DumpResult  # va egress
    b: DumpResult  # vb ingress
    ifindex_a: int
    ifindex_b: int

    def all_frames(self) -> list[fr.Frame]:
        return [f for g in self.groups.values() for f in g]


def _build() -> dict[str, list[fr.Frame]]:
    g: dict[str, list[fr.Frame]] = {}
    g["plain"] = [
        fr.udp(MAC_A, MAC_B, A4, S4, 1000, 2000, payload=n) for n in (0, 10, 100, 1000)
    ] + [fr.udp(MAC_A, MAC_B, A6, S6, 1000, 2000, payload=n) for n in (0, 50, 1200)]
    g["dot1q"] = [
        fr.udp(MAC_A, MAC_B, _src4(11), S4, 1001, 2001, payload=n, vlans=[(0x8100, 100)])
        for n in (5, 500)
    ] + [fr.udp(MAC_A, MAC_B, _src6(11), S6, 1001, 2001, payload=77, vlans=[(0x8100, 101)])]
    g["qinq"] = [
        fr.udp(
            MAC_A, MAC_B, _src4(12), S4, 1002, 2002, payload=n, vlans=[(0x88A8, 200), (0x8100, 100)]
        )
        for n in (5, 600)
    ] + [
        fr.udp(
            MAC_A, MAC_B, _src6(12), S6, 1002, 2002, payload=9, vlans=[(0x88A8, 201), (0x8100, 102)]
        )
    ]
    g["frag4"] = fr.ipv4_fragments(
        MAC_A, MAC_B, _src4(21), S4, 1003, 2003, payload=3000, fragsize=1000
    )
    g["ext6"] = fr.ipv6_ext(MAC_A, MAC_B, _src6(21), S6, 1004, 2004, payload=40)
    g["ext6_six"] = [fr.ipv6_dstopts_chain(MAC_A, MAC_B, _src6(22), S6, 1005, 2005, n_ext=6)]
    # more headers than the walk takes: counted in ipv6_ext_limit, no flow
    g["ext6_limit"] = [
        dataclasses.replace(
            fr.ipv6_dstopts_chain(MAC_A, MAC_B, _src6(23), S6, 1006, 2006, n_ext=7), key=None
        )
    ]
    g["trunc_ip"] = [fr.truncated_in_ip(MAC_A, MAC_B, _src4(31), S4)]
    g["trunc_tcp"] = [fr.truncated_in_tcp(MAC_A, MAC_B, _src4(32), S4, 1007, 2007)]
    g["malformed"] = [
        fr.malformed_ihl(MAC_A, MAC_B, _src4(33), S4, ihl=4),
        fr.malformed_ihl(MAC_A, MAC_B, _src4(33), S4, ihl=0),
    ]
    g["non_ip"] = [fr.non_ip(MAC_A, MAC_B, 64)]
    # TCP flags OR-ed over the flow, CWR and ECE included: 0xC2|0x10|0x18|0x04|0x01
    g["tcp_flags"] = [
        fr.tcp(MAC_A, MAC_B, _src4(41), S4, 1008, 2008, flags=fl, payload=pl)
        for fl, pl in (("SEC", 0), ("A", 0), ("PA", 100), ("FA", 0), ("R", 0))
    ]
    # IPv4 options (IHL 8): ports are after the options
    g["ip_options"] = [
        fr.raw_ip(
            MAC_A,
            MAC_B,
            IP(src=_src4(42), dst=S4, options=[IPOption_RR(routers=["0.0.0.0"] * 2)])
            / UDP(sport=1009, dport=2009)
            / Raw(b"o" * 30),
            fr.Key(4, 17, _src4(42), S4, 1009, 2009),
        )
    ]
    # other L4: SCTP ports; ICMP unreachable 3/3 (dport 0x0303); GRE (no ports)
    g["other_l4"] = [
        fr.raw_ip(
            MAC_A,
            MAC_B,
            IP(src=_src4(43), dst=S4) / SCTP(sport=1010, dport=2010),
            fr.Key(4, 132, _src4(43), S4, 1010, 2010),
        ),
        fr.raw_ip(
            MAC_A,
            MAC_B,
            IPv6(src=_src6(43), dst=S6) / SCTP(sport=1011, dport=2011),
            fr.Key(6, 132, _src6(43), S6, 1011, 2011),
        ),
        fr.raw_ip(
            MAC_A,
            MAC_B,
            IP(src=_src4(43), dst=S4) / ICMP(type=3, code=3) / Raw(b"i" * 28),
            fr.Key(4, 1, _src4(43), S4, 0, 0x0303),
        ),
        fr.raw_ip(
            MAC_A,
            MAC_B,
            IP(src=_src4(43), dst=S4, proto=47) / Raw(b"g" * 24),
            fr.Key(4, 47, _src4(43), S4, 0, 0),
        ),
    ]
    # a 28-byte IP datagram padded to the 60-byte Ethernet minimum; and a frame
    # whose IP length claims 50 bytes more than crossed
    g["padding"] = [fr.padded(fr.udp(MAC_A, MAC_B, _src4(44), S4, 1012, 2012, payload=0))]
    g["short"] = [
        fr.short_payload(fr.udp(MAC_A, MAC_B, _src4(45), S4, 1013, 2013, payload=200), 50)
    ]
    return g


@pytest.fixture(scope="module")
def crafted() -> Iterator[CraftedRun]:
    pair = netns.make_pair(ipv6=True)
    try:
        groups = _build()
        order = [f for g in groups.values() for f in g]
        (ra, rb), _ = run_dumps(
            [(pair.a, ["va"]), (pair.b, ["vb"])],
            lambda: fr.send_frames(pair.a, "va", order, repeat=REPEAT),
        )
        yield CraftedRun(groups, ra, rb, pair.pa.ifindex, pair.pb.ifindex)
    finally:
        pair.delete()


def _check(run: CraftedRun, group: str) -> None:
    frames = run.groups[group]
    errors = check_flows(run.a, frames, "va", "egress", REPEAT)
    errors += check_flows(run.b, frames, "vb", "ingress", REPEAT)
    assert not errors, "\n".join(errors)


def test_plain_udp(crafted: CraftedRun) -> None:
    _check(crafted, "plain")


def test_dot1q_vlan_id(crafted: CraftedRun) -> None:
    """802.1Q: vlan = the tag's VID, in-band on A's egress, offloaded on B's ingress."""
    _check(crafted, "dot1q")


def test_qinq_outer_vlan_id(crafted: CraftedRun) -> None:
    """802.1ad outer 200 + 802.1Q inner 100: vlan = 200 (outermost) both ways."""
    _check(crafted, "qinq")
    for res in (crafted.a, crafted.b):
        assert not res.find(src=_src4(12), vlan=100), "inner VID reported as the flow's vlan"


def test_ipv4_fragments(crafted: CraftedRun) -> None:
    """3008-byte UDP datagram in 1000-byte fragments: first fragment in the
    (1003, 2003) flow, the other 3 in (0, 0), proto 17, same addresses."""
    frames = crafted.groups["frag4"]
    assert len(frames) == 4
    _check(crafted, "frag4")
    f0 = crafted.a.flow(
        iface="va", direction="egress", src=_src4(21), dst=S4, proto=17, sport=0, dport=0
    )
    assert f0 is not None and f0["packets"] == 3 * REPEAT


def test_ipv6_extension_headers(crafted: CraftedRun) -> None:
    """HBH + DST + routing + fragment(offset 0): ports found past 4 headers;
    the offset != 0 fragment goes to (0, 0) with proto 17."""
    _check(crafted, "ext6")


def test_ipv6_six_extension_headers(crafted: CraftedRun) -> None:
    """Six destination-options headers still fit the bounded walk."""
    _check(crafted, "ext6_six")


def test_ipv6_extension_limit(crafted: CraftedRun) -> None:
    """Seven headers: not a flow, counted in ipv6_ext_limit."""
    for res in (crafted.a, crafted.b):
        assert not res.find(src=_src6(23)), res.find(src=_src6(23))
        assert res.stats["ipv6_ext_limit"] == REPEAT, res.stats


def test_truncated(crafted: CraftedRun) -> None:
    """Cut inside the IPv4 header: no flow, `truncated`; cut inside the TCP
    header: a (0, 0) TCP flow with the 30 IP bytes that crossed, `no_ports`."""
    _check(crafted, "trunc_tcp")
    for res in (crafted.a, crafted.b):
        assert not res.find(src=_src4(31)), res.find(src=_src4(31))
        assert res.stats["truncated"] == REPEAT, res.stats
        assert res.stats["no_ports"] == REPEAT, res.stats


def test_malformed(crafted: CraftedRun) -> None:
    """IHL 4 and IHL 0: no flow, counted in `malformed`."""
    for res in (crafted.a, crafted.b):
        assert not res.find(src=_src4(33)), res.find(src=_src4(33))
        assert res.stats["malformed"] == 2 * REPEAT, res.stats


def test_non_ip(crafted: CraftedRun) -> None:
    for res in (crafted.a, crafted.b):
        assert res.stats["non_ip"] == REPEAT, res.stats


def test_nothing_lost_and_exit_clean(crafted: CraftedRun) -> None:
    """Every good flow of the run exact (the bad frames disturbed nothing),
    nothing reported lost, both collectors exited 0."""
    good = [f for f in crafted.all_frames() if f.key is not None]
    errors = check_flows(crafted.a, good, "va", "egress", REPEAT)
    errors += check_flows(crafted.b, good, "vb", "ingress", REPEAT)
    assert not errors, "\n".join(errors)
    for res in (crafted.a, crafted.b):
        assert res.returncode == 0
        st = res.stats
        assert st["flow_map_full"] == 0 and st["lost_packets"] == 0 and st["lost_bytes"] == 0, st


def test_ipv4_interface_bytes(crafted: CraftedRun) -> None:
    """IPv4-family interface counters are exact here (nothing else sends IPv4):
    both ends count whole frames, tags included, as the devices' own counters
    (ip -s link) do, although on B's ingress the kernel has moved the outer
    tag out of the frame into vlan_tci before flowtop sees it."""
    v4 = []
    for f in crafted.all_frames():
        d = f.data
        et = int.from_bytes(d[12:14], "big")
        off = 14
        while et in (0x8100, 0x88A8):
            et = int.from_bytes(d[off + 2 : off + 4], "big")
            off += 4
        if et == 0x0800:
            v4.append(f)
    tagged = sum(1 for f in v4 if int.from_bytes(f.data[12:14], "big") in (0x8100, 0x88A8))
    a = crafted.a.iface_family("va", "ipv4")
    b = crafted.b.iface_family("vb", "ipv4")
    assert (a["tx_packets"], a["tx_bytes"]) == (
        REPEAT * len(v4),
        REPEAT * sum(len(f.data) for f in v4),
    )
    assert tagged > 0
    assert (b["rx_packets"], b["rx_bytes"]) == (
        REPEAT * len(v4),
        REPEAT * sum(len(f.data) for f in v4),
    )


def test_tcp_flags_or(crafted: CraftedRun) -> None:
    """SYN|ECE|CWR, ACK, PSH|ACK, FIN|ACK, RST: tcp_flags is exactly their OR."""
    _check(crafted, "tcp_flags")
    for res, iface, direction in ((crafted.a, "va", "egress"), (crafted.b, "vb", "ingress")):
        f = res.flow(
            iface=iface, direction=direction, proto=6, src=_src4(41), dst=S4, sport=1008, dport=2008
        )
        assert f is not None and f["tcp_flags"] == 0xC2 | 0x10 | 0x18 | 0x11 | 0x04, f


def test_ipv4_options(crafted: CraftedRun) -> None:
    assert crafted.groups["ip_options"][0].data[14] & 0x0F > 5
    _check(crafted, "ip_options")


def test_other_l4_protocols(crafted: CraftedRun) -> None:
    """SCTP ports (v4 and v6), ICMP type/code in dport, GRE without ports."""
    _check(crafted, "other_l4")


def test_ethernet_padding_not_counted(crafted: CraftedRun) -> None:
    f = crafted.groups["padding"][0]
    assert len(f.data) == 60 and f.ip_bytes == 28
    _check(crafted, "padding")


def test_ip_length_beyond_frame(crafted: CraftedRun) -> None:
    """IP total length 228 but 178 IP bytes crossed: the flow gets 178."""
    _check(crafted, "short")


def test_nonlinear_jumbo_frames() -> None:
    """Frames over a page sent on AF_PACKET are non-linear: only the Ethernet
    header is in the linear area, so every other header has to be pulled in.
    MTU 9000: 6000-byte UDP/TCP/ICMP over IPv4 and IPv6, and IPv6 whose
    extension headers end deep in the packet: a 232-byte hop-by-hop header,
    and an SRv6 routing header with 11 segments (184 bytes). All must be exact
    flows with their ports on va egress and vb ingress, nothing truncated."""
    from scapy.all import (  # type: ignore[import-untyped]
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrSegmentRouting,
        PadN,
    )

    p = netns.make_pair(ipv6=True)
    try:
        for ns, ifn in ((p.a, "va"), (p.b, "vb")):
            ns.ip("link", "set", "dev", ifn, "mtu", "9000")
        big = 6000
        hbh = IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * 226)])
        sent = [
            fr.udp(MAC_A, MAC_B, _src4(51), S4, 1101, 2101, payload=big),
            fr.udp(MAC_A, MAC_B, _src6(51), S6, 1102, 2102, payload=big),
            fr.tcp(MAC_A, MAC_B, _src4(52), S4, 1103, 2103, flags="PA", payload=big),
            fr.raw_ip(
                MAC_A,
                MAC_B,
                IP(src=_src4(53), dst=S4) / ICMP(type=8, code=0) / Raw(b"e" * big),
                fr.Key(4, 1, _src4(53), S4, 0, 0x0800),
            ),
            fr.raw_ip(
                MAC_A,
                MAC_B,
                IPv6(src=_src6(54), dst=S6) / hbh / UDP(sport=1104, dport=2104) / Raw(b"h" * big),
                fr.Key(6, 17, _src6(54), S6, 1104, 2104),
            ),
        ]
        segs = [f"fd00:200:9::{i + 1:x}" for i in range(11)]
        srh = IPv6ExtHdrSegmentRouting(addresses=segs, segleft=0)
        sent.append(
            fr.raw_ip(
                MAC_A,
                MAC_B,
                IPv6(src=_src6(55), dst=S6) / srh / UDP(sport=1105, dport=2105) / Raw(b"s" * big),
                fr.Key(6, 17, _src6(55), S6, 1105, 2105),
            )
        )
        assert all(len(f.data) > 4096 for f in sent)
        (ra, rb), _ = run_dumps(
            [(p.a, ["va"]), (p.b, ["vb"])],
            lambda: fr.send_frames(p.a, "va", sent, repeat=2),
        )
    finally:
        p.delete()
    errors = check_flows(ra, sent, "va", "egress", 2) + check_flows(rb, sent, "vb", "ingress", 2)
    for res in (ra, rb):
        if res.stats["truncated"]:
            errors.append(f"{res.ns}: truncated = {res.stats['truncated']} (nothing was)")
    assert not errors, "\n".join(errors)
