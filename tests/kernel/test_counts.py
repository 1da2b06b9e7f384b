"""Exact flow and interface counts for real traffic between two namespaces.

Ground truth is what the test sent (sizes it chose) or, for TCP where the
kernel decides segmentation, an AF_PACKET capture on the same interface.
"""

from __future__ import annotations

import datetime as dt
import socket
import struct

import pytest
from scapy.all import IP, TCP, Ether, Raw  # type: ignore[import-untyped]

from . import frames as fr
from . import netns
from .dump import run_dump, run_dumps
from .expect import (
    TCP_ACK,
    TCP_FIN,
    TCP_SYN,
    TcpServer,
    drain,
    ping,
    tcp_transfer,
    udp_client,
    udp_sink,
)
from .netns import MAC_A, MAC_B, Capture, Pair, ip_lengths

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
A6, B6 = "fd00:200:1::1", "fd00:200:1::2"
SOL_PACKET, PACKET_VNET_HDR = 263, 15


def _iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_udp_sockets_exact_both_ends(pair: Pair) -> None:
    """UDP datagrams of chosen sizes, IPv4 and IPv6: A's egress and B's ingress
    both report packets = datagrams and bytes = IP header + 8 + payload."""
    sizes4 = [1, 100, 200, 512, 1000, 1472, 7, 64, 300, 1400]
    sizes6 = [1, 100, 1452, 8, 333]
    sink4 = udp_sink(pair.b, B4, 5004)
    sink6 = udp_sink(pair.b, B6, 5006)
    c4 = udp_client(pair.a, B4, 40004)
    c6 = udp_client(pair.a, B6, 40006)

    def traffic() -> None:
        for n in sizes4:
            c4.sendto(b"d" * n, (B4, 5004))
        for n in sizes6:
            c6.sendto(b"d" * n, (B6, 5006))
        assert drain(sink4, len(sizes4)) == len(sizes4)
        assert drain(sink6, len(sizes6)) == len(sizes6)

    try:
        (ra, rb), _ = run_dumps([(pair.a, ["va"]), (pair.b, ["vb"])], traffic)
    finally:
        for s in (sink4, sink6, c4, c6):
            s.close()

    want4 = (len(sizes4), sum(20 + 8 + n for n in sizes4))
    want6 = (len(sizes6), sum(40 + 8 + n for n in sizes6))
    for res, iface, direction in ((ra, "va", "egress"), (rb, "vb", "ingress")):
        f4 = res.flow(
            iface=iface, direction=direction, proto=17, src=A4, dst=B4, sport=40004, dport=5004
        )
        f6 = res.flow(
            iface=iface, direction=direction, proto=17, src=A6, dst=B6, sport=40006, dport=5006
        )
        assert f4 is not None, f"{iface} {direction}: no IPv4 UDP flow in {res.flows}"
        assert f6 is not None, f"{iface} {direction}: no IPv6 UDP flow in {res.flows}"
        assert (f4["packets"], f4["bytes"]) == want4
        assert (f6["packets"], f6["bytes"]) == want6
        assert f4["ip_version"] == 4 and f6["ip_version"] == 6
        assert f4["proto_name"].lower() == "udp"
        assert f4["vlan"] == 0 and f4["tcp_flags"] == 0
        assert f4["ifindex"] == (pair.pa.ifindex if iface == "va" else pair.pb.ifindex)
        assert _iso(f4["first_seen"]) <= _iso(f4["last_seen"])
        # nothing of ours went the other way
        other = "ingress" if direction == "egress" else "egress"
        assert res.flow(iface=iface, direction=other, proto=17, src=A4, dst=B4) is None


def test_udp_kernel_fragmentation(pair: Pair) -> None:
    """A 3000-byte UDP datagram over a 1500 MTU: the kernel sends 3 fragments
    (IP lengths 1500, 1500, 48+20). The first is in the ports' flow, the
    others in the (0, 0) flow of the same addresses with proto 17."""
    sink = udp_sink(pair.b, B4, 5010)
    c = udp_client(pair.a, B4, 40010)
    n_dgrams = 4

    def traffic() -> None:
        for _ in range(n_dgrams):
            c.sendto(b"F" * 3000, (B4, 5010))
        assert drain(sink, n_dgrams) == n_dgrams

    with Capture(pair.a, "va") as cap:
        try:
            res = run_dump(pair.a, ["va"], traffic)
        finally:
            sink.close()
            c.close()
        frames = cap.stop()
    first = ip_lengths(frames, True, A4, B4, 17, 40010, 5010)
    all_udp = ip_lengths(frames, True, A4, B4, 17)
    rest = len(all_udp) - len(first)
    assert len(first) == n_dgrams and rest == 2 * n_dgrams, (first, all_udp)
    f = res.flow(iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=40010, dport=5010)
    g = res.flow(iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=0, dport=0)
    assert f is not None and g is not None, res.flows
    assert (f["packets"], f["bytes"]) == (n_dgrams, sum(first))
    assert (g["packets"], g["bytes"]) == (2 * n_dgrams, sum(all_udp) - sum(first))
    # 3000 + 8 UDP bytes + 3 IPv4 headers per datagram
    assert f["bytes"] + g["bytes"] == n_dgrams * (3008 + 3 * 20)


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_connection_matches_capture(pair: Pair, family: int) -> None:
    """A real TCP connection (A client, B server) with TSO/GSO off: each
    direction's flow equals what an AF_PACKET capture on va saw, packet for
    packet and IP byte for IP byte, with SYN, ACK and FIN seen both ways."""
    p = pair
    a, b = (A4, B4) if family == 4 else (A6, B6)
    for ns, ifn in ((p.a, "va"), (p.b, "vb")):
        ns.ethtool(ifn, tso=False, gso=False, gro=False)
    payload = 300_000
    server = TcpServer(p.b, b, 8080, reply=5000)
    box: dict[str, int] = {}

    def traffic() -> None:
        box["sport"] = tcp_transfer(p.a, b, 8080, payload, server, sport=41000)

    with Capture(p.a, "va") as cap:
        res = run_dump(p.a, ["va"], traffic)
        frames = cap.stop()
    sport = box["sport"]
    out_l = ip_lengths(frames, True, a, b, 6, sport, 8080)
    in_l = ip_lengths(frames, False, b, a, 6, 8080, sport)
    assert out_l and in_l
    assert max(out_l) <= 1500, "TSO/GSO still on: the capture saw super-packets"
    eg = res.flow(iface="va", direction="egress", proto=6, src=a, dst=b, sport=sport, dport=8080)
    ing = res.flow(iface="va", direction="ingress", proto=6, src=b, dst=a, sport=8080, dport=sport)
    assert eg is not None and ing is not None, res.flows
    assert (eg["packets"], eg["bytes"]) == (len(out_l), sum(out_l))
    assert (ing["packets"], ing["bytes"]) == (len(in_l), sum(in_l))
    for f in (eg, ing):
        assert f["tcp_flags"] & (TCP_SYN | TCP_ACK | TCP_FIN) == TCP_SYN | TCP_ACK | TCP_FIN, f
        assert f["proto_name"].lower() == "tcp"
        assert f["ip_version"] == family
    # payload sanity: at least the bytes sent plus the fixed headers per packet
    hdr = 40 if family == 4 else 60
    assert eg["bytes"] >= payload + hdr * eg["packets"]


def test_icmp_echo_v4_v6(pair: Pair) -> None:
    """5 echo requests of 56 bytes each way, IPv4 and IPv6. ICMP flows have
    sport 0 and dport type<<8|code: 8/0 (2048/0) and 128/129 (32768/33024)."""
    box: dict[str, int] = {}

    def traffic() -> None:
        box["v4"] = ping(pair.a, B4, count=5)
        box["v6"] = ping(pair.a, B6, count=5)

    res = run_dump(pair.a, ["va"], traffic)
    assert box == {"v4": 5, "v6": 5}
    cases = [
        ("egress", 1, A4, B4, 8 << 8, 20 + 8 + 56),
        ("ingress", 1, B4, A4, 0 << 8, 20 + 8 + 56),
        ("egress", 58, A6, B6, 128 << 8, 40 + 8 + 56),
        ("ingress", 58, B6, A6, 129 << 8, 40 + 8 + 56),
    ]
    for direction, proto, src, dst, dport, size in cases:
        f = res.flow(
            iface="va", direction=direction, proto=proto, src=src, dst=dst, sport=0, dport=dport
        )
        assert f is not None, (direction, proto, dport, res.find(iface="va", proto=proto))
        assert (f["packets"], f["bytes"]) == (5, 5 * size), (direction, proto, f)


def test_interface_counters_match_ip_link(quiet_pair: Pair) -> None:
    """On an interface nothing else uses, flowtop's rx/tx packets and bytes
    (skb->len, Ethernet header included) equal the `ip -s link` deltas."""
    p = quiet_pair
    sink_b = udp_sink(p.b, B4, 6000)
    sink_a = udp_sink(p.a, A4, 6001)
    ca = udp_client(p.a, B4, 42000)
    cb = udp_client(p.b, A4, 42001)
    non_ip = [fr.non_ip(MAC_A, MAC_B, 60 + i) for i in range(7)]
    sizes = [10, 200, 1400, 33, 512, 0, 1472, 99]
    before = p.a.link_stats("va")

    def traffic() -> None:
        for n in sizes:
            ca.sendto(b"i" * n, (B4, 6000))
        for n in sizes[:5]:
            cb.sendto(b"o" * n, (A4, 6001))
        fr.send_frames(p.a, "va", non_ip)
        assert drain(sink_b, len(sizes)) == len(sizes)
        assert drain(sink_a, 5) == 5

    try:
        res = run_dump(p.a, ["va"], traffic)
    finally:
        for s in (sink_a, sink_b, ca, cb):
            s.close()
    after = p.a.link_stats("va")
    delta = {k: after[k] - before[k] for k in after}
    got = res.iface("va")
    assert got == delta, f"flowtop {got} != ip -s link delta {delta}"
    # and what we know we sent
    assert delta["tx_packets"] == len(sizes) + len(non_ip)
    assert delta["tx_bytes"] == sum(14 + 28 + n for n in sizes) + sum(len(f.data) for f in non_ip)
    assert delta["rx_packets"] == 5
    fam4 = res.iface_family("va", "ipv4")
    other = res.iface_family("va", "other")
    assert fam4["tx_packets"] == len(sizes) and other["tx_packets"] == len(non_ip)
    assert other["tx_bytes"] == sum(len(f.data) for f in non_ip)
    assert res.stats["non_ip"] == len(non_ip)


@pytest.mark.parametrize("ifindexes", [(4095, 4094), (70000, 70001)], ids=["4095", "70000"])
def test_large_ifindex(ifindexes: tuple[int, int]) -> None:
    """Hosts with thousands of interfaces: ifindex 4095 and 70000 (past any small
    per-ifindex array) get exact flows and interface counters like ip -s link."""
    p = netns.make_pair(ipv6=False, ifindex=ifindexes)
    try:
        assert (p.pa.ifindex, p.pb.ifindex) == ifindexes
        sink = udp_sink(p.b, B4, 6400)
        c = udp_client(p.a, B4, 46400)
        sizes = [1, 500, 1472]
        before = p.a.link_stats("va")

        def traffic() -> None:
            for n in sizes:
                c.sendto(b"q" * n, (B4, 6400))
            assert drain(sink, len(sizes)) == len(sizes)

        try:
            res = run_dump(p.a, ["va"], traffic)
        finally:
            sink.close()
            c.close()
        after = p.a.link_stats("va")
    finally:
        p.delete()
    f = res.flow(iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=46400, dport=6400)
    assert f is not None, res.flows
    assert (f["ifindex"], f["packets"], f["bytes"]) == (
        ifindexes[0],
        len(sizes),
        sum(28 + n for n in sizes),
    )
    assert res.iface("va") == {k: after[k] - before[k] for k in after}
    assert res.iface("va")["tx_packets"] == len(sizes)


def test_gso_packet_without_segment_count(quiet_pair: Pair) -> None:
    """GSO packets from a virtio-net header (what a VM's tap/vhost or an
    AF_PACKET socket with PACKET_VNET_HDR hands the kernel) carry gso_size but
    gso_segs = 0 (SKB_GSO_DODGY: the kernel computes it later). A 20 000-byte
    TCP payload with gso_size 1448 is 14 segments on the wire: va (TSO off)
    segments it after TC egress; flowtop on va egress must still count 14
    packets and 14 headers' worth of bytes, like the capture on vb."""
    p = quiet_pair
    p.a.ethtool("va", tso=False, gso=False)
    payload, mss = 20_000, 1448
    pkt = (
        Ether(src=MAC_A, dst=MAC_B)
        / IP(src=A4, dst=fr.SINK4)
        / TCP(sport=1200, dport=2200, flags="PA")
        / Raw(b"v" * payload)
    )
    data = bytes(pkt)
    # struct virtio_net_hdr: NEEDS_CSUM, GSO_TCPV4, hdr_len, gso_size, csum_start/offset
    vnet = struct.pack("<BBHHHH", 1, 1, 14 + 20 + 20, mss, 14 + 20, 16)
    with netns.entered(p.a.name):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.bind(("va", 0))
    try:
        with Capture(p.b, "vb") as cap:
            (ra, rb), _ = run_dumps(
                [(p.a, ["va"]), (p.b, ["vb"])], lambda: [sock.send(vnet + data) for _ in range(2)]
            )
            frames = cap.stop()
    finally:
        sock.close()
    segs = ip_lengths(frames, False, A4, fr.SINK4, 6, 1200, 2200)
    n = -(-payload // mss)
    assert len(segs) == 2 * n and sum(segs) == 2 * (payload + 40 * n), segs
    for res, iface, direction in ((ra, "va", "egress"), (rb, "vb", "ingress")):
        f = res.flow(
            iface=iface, direction=direction, proto=6, src=A4, dst=fr.SINK4, sport=1200, dport=2200
        )
        assert f is not None, res.flows
        assert (f["packets"], f["bytes"]) == (len(segs), sum(segs)), (
            f"{iface} {direction}: flowtop {(f['packets'], f['bytes'])}, "
            f"wire {(len(segs), sum(segs))}"
        )
