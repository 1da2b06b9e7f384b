"""Crafted frames (scapy) and a raw AF_PACKET sender for the kernel tests.

Every builder returns `Frame`s: the bytes to put on the wire plus the ground
truth flowtop should report for them (the flow key it belongs to and the IP
octets it adds), so tests compare against what was sent, not against a
second implementation of the parser.

Crafted IP frames go to a *sink* address: on the peer's subnet but not
assigned to it. The peer (forwarding off) drops them without answering, so
no ICMP error or reassembly adds traffic of its own.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scapy.all import (  # type: ignore[import-untyped]
    IP,
    TCP,
    UDP,
    Dot1AD,
    Dot1Q,
    Ether,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    fragment,
)

from .netns import Netns, entered

SINK4 = "10.200.1.250"
SINK6 = "fd00:200:1::250"


@dataclass(frozen=True)
class Key:
    """The part of a flow key a test can predict (ifindex/direction come from the run)."""

    ip_version: int
    proto: int
    src: str
    dst: str
    sport: int
    dport: int
    vlan: int = 0


@dataclass(frozen=True)
class Frame:
    data: bytes
    key: Key | None  # None: no flow expected (truncated in IP header, malformed, ...)
    ip_bytes: int  # IP octets flowtop should add to the flow
    mpls_label: int | None = None  # the top MPLS label the flow must report

    @property
    def l2_len(self) -> int:
        return len(self.data)


def _eth(src_mac: str, dst_mac: str, vlans: Iterable[tuple[int, int]] = ()):  # type: ignore[no-untyped-def]
    """Ethernet header with in-band tags [(tpid, vid), ...], outermost first."""
    pkt = Ether(src=src_mac, dst=dst_mac)
    for tpid, vid in vlans:
        pkt = pkt / (Dot1AD(vlan=vid) if tpid == 0x88A8 else Dot1Q(vlan=vid))
    return pkt


def _frame(l2, ip_pkt, key: Key | None) -> Frame:  # type: ignore[no-untyped-def]
    """Stacks l2/ip_pkt (scapy fills in every EtherType) and records the IP length."""
    ip_raw = bytes(ip_pkt)
    data = bytes(l2 / ip_pkt)
    assert data.endswith(ip_raw)
    return Frame(data, key, len(ip_raw))


def udp(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: int = 32,
    vlans: Iterable[tuple[int, int]] = (),
) -> Frame:
    """One UDP datagram over IPv4 or IPv6, optionally VLAN/QinQ tagged."""
    vlans = list(vlans)
    l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    ip_pkt = l3 / UDP(sport=sport, dport=dport) / Raw(b"u" * payload)
    vid = vlans[0][1] if vlans else 0
    return _frame(
        _eth(src_mac, dst_mac, vlans),
        ip_pkt,
        Key(6 if ":" in src else 4, 17, src, dst, sport, dport, vid),
    )


def tcp(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: str = "S",
    payload: int = 0,
) -> Frame:
    l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    ip_pkt = l3 / TCP(sport=sport, dport=dport, flags=flags) / Raw(b"t" * payload)
    key = Key(6 if ":" in src else 4, 6, src, dst, sport, dport)
    return _frame(_eth(src_mac, dst_mac), ip_pkt, key)


def ipv4_fragments(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: int,
    fragsize: int,
    ident: int = 4242,
) -> list[Frame]:
    """A UDP datagram split into IPv4 fragments: the first carries the ports,
    the others are counted in the (0, 0) flow of the same addresses and proto."""
    dgram = IP(src=src, dst=dst, id=ident) / UDP(sport=sport, dport=dport) / Raw(b"f" * payload)
    out = []
    for i, frag in enumerate(fragment(dgram, fragsize=fragsize)):
        key = Key(4, 17, src, dst, sport, dport) if i == 0 else Key(4, 17, src, dst, 0, 0)
        out.append(_frame(_eth(src_mac, dst_mac), frag, key))
    return out


def ipv6_ext(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: int = 40,
    ident: int = 77,
) -> list[Frame]:
    """IPv6 with hop-by-hop + destination options + routing + fragment headers.

    Two fragments of one UDP datagram: the first (offset 0, M=1) has the UDP
    header past four extension headers, so ports must be found; the second
    (offset != 0) has none: flow (0, 0) with proto 17 from the fragment header.
    """
    first = (
        IPv6(src=src, dst=dst)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(segleft=0)
        / IPv6ExtHdrFragment(offset=0, m=1, id=ident)
        / UDP(sport=sport, dport=dport, len=8 + payload + 64)
        / Raw(b"6" * payload)
    )
    second = (
        IPv6(src=src, dst=dst)
        / IPv6ExtHdrFragment(nh=17, offset=(8 + payload) // 8, m=0, id=ident)
        / Raw(b"7" * 64)
    )
    assert (8 + payload) % 8 == 0
    return [
        _frame(_eth(src_mac, dst_mac), first, Key(6, 17, src, dst, sport, dport)),
        _frame(_eth(src_mac, dst_mac), second, Key(6, 17, src, dst, 0, 0)),
    ]


def ipv6_dstopts_chain(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    n_ext: int,
    payload: int = 8,
) -> Frame:
    """IPv6 with `n_ext` destination-options headers in a row before UDP."""
    pkt = IPv6(src=src, dst=dst)
    for _ in range(n_ext):
        pkt = pkt / IPv6ExtHdrDestOpt()
    ip_pkt = pkt / UDP(sport=sport, dport=dport) / Raw(b"e" * payload)
    return _frame(_eth(src_mac, dst_mac), ip_pkt, Key(6, 17, src, dst, sport, dport))


def truncated_in_ip(src_mac: str, dst_mac: str, src: str, dst: str) -> Frame:
    """An IPv4 frame that ends 10 bytes into the IP header: no flow, `truncated`."""
    ip_pkt = IP(src=src, dst=dst) / UDP(sport=1, dport=2) / Raw(b"x" * 20)
    full = bytes(_eth(src_mac, dst_mac) / ip_pkt)
    return Frame(full[: 14 + 10], None, 0)


def truncated_in_tcp(
    src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int
) -> Frame:
    """IPv4 + 10 bytes of a 20-byte TCP header. tc.c counts it in the flow
    without ports (0, 0) with the IP bytes that crossed, and in `no_ports`
    (informational: it is in a flow), not in `truncated`."""
    ip_pkt = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S")
    full = bytes(_eth(src_mac, dst_mac) / ip_pkt)
    data = full[: 14 + 20 + 10]
    return Frame(data, Key(4, 6, src, dst, 0, 0), 20 + 10)


def malformed_ihl(src_mac: str, dst_mac: str, src: str, dst: str, ihl: int = 4) -> Frame:
    """IPv4 with IHL < 5: `malformed`, no flow."""
    ip_pkt = IP(src=src, dst=dst, ihl=ihl) / UDP(sport=3, dport=4) / Raw(b"m" * 20)
    return Frame(bytes(_eth(src_mac, dst_mac) / ip_pkt), None, 0)


def non_ip(src_mac: str, dst_mac: str, size: int = 60) -> Frame:
    """A local-experimental EtherType frame (0x88b5): interface family 'other'."""
    data = bytes(Ether(src=src_mac, dst=dst_mac, type=0x88B5) / Raw(b"n" * (size - 14)))
    return Frame(data, None, 0)


def udp_burst(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    n_flows: int,
    dport: int = 9999,
    sport_base: int = 20000,
    payload: int = 18,
) -> list[Frame]:
    """`n_flows` distinct UDP flows (source ports sport_base..), one frame each.

    Built once with scapy and patched per source port (UDP checksum zeroed,
    which IPv4 allows), so thousands of frames cost milliseconds, not seconds.
    """
    proto = udp(src_mac, dst_mac, src, dst, sport_base, dport, payload)
    raw = bytearray(proto.data)
    is6 = ":" in src
    l4 = 14 + (40 if is6 else 20)
    if not is6:
        raw[l4 + 6 : l4 + 8] = b"\x00\x00"
    out = []
    for i in range(n_flows):
        sp = sport_base + i
        raw[l4 : l4 + 2] = sp.to_bytes(2, "big")
        out.append(Frame(bytes(raw), Key(6 if is6 else 4, 17, src, dst, sp, dport), proto.ip_bytes))
    return out


class Sender:
    """Raw AF_PACKET socket on an interface inside a namespace."""

    def __init__(self, ns: Netns, ifname: str) -> None:
        with entered(ns.name):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE
        self.sock.bind((ifname, 0))

    def send(self, frames: Iterable[Frame | bytes], repeat: int = 1) -> int:
        n = 0
        for _ in range(repeat):
            for f in frames:
                data = f.data if isinstance(f, Frame) else f
                sent = self.sock.send(data)
                assert sent == len(data)
                n += 1
        return n

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_pinned(sock_fd: int, data: bytes, n: int, cpu: int, must_pin: bool = True) -> int:
    """Forks a child pinned to `cpu` that writes `data` n times to sock_fd (a
    Sender's socket: the egress hook runs on the sending CPU); its pid. A
    child that cannot be pinned exits 2 when must_pin, else sends anyway."""
    pid = os.fork()
    if pid == 0:  # child: no pytest, no finalisers, just send and leave
        code = 1
        try:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                if must_pin:
                    code = 2
                    raise
            for _ in range(n):
                os.write(sock_fd, data)
            code = 0
        finally:
            os._exit(code)
    return pid


class PinnedSenders:
    """One child per CPU of `cpus`, each pinned there, each writing the frames
    it is handed to a Sender's socket (so the hooks run on that CPU), one at
    a time: send() returns when its child has written the frame, so frames
    cross in the order given, whichever CPU sends them, at pipe speed (tens
    of microseconds a frame: a sequence fits in one clock tick)."""

    def __init__(self, sender: Sender, cpus: Sequence[int]) -> None:
        self._children: dict[int, tuple[int, int, int]] = {}  # cpu -> pid, cmd fd, ack fd
        try:
            for cpu in cpus:
                self._children[cpu] = self._fork(sender.sock.fileno(), cpu, self._fds())
        except BaseException:
            self.close()
            raise

    def _fds(self) -> list[int]:
        return [fd for _pid, cmd, ack in self._children.values() for fd in (cmd, ack)]

    @staticmethod
    def _fork(sock_fd: int, cpu: int, others: list[int]) -> tuple[int, int, int]:
        # others: the earlier children's pipe ends, which this child must not
        # keep open (an earlier child would never see its end of input).
        cmd_r, cmd_w = os.pipe()
        ack_r, ack_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no pytest, no finalisers
            code = 1
            try:
                for fd in (cmd_w, ack_r, *others):
                    os.close(fd)
                os.sched_setaffinity(0, {cpu})
                while True:
                    head = os.read(cmd_r, 4)
                    if len(head) < 4:
                        code = 0
                        break
                    (n,) = struct.unpack("<I", head)
                    data = b""
                    while len(data) < n:
                        data += os.read(cmd_r, n - len(data))
                    os.write(sock_fd, data)
                    os.write(ack_w, b"k")
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(ack_w)
        return pid, cmd_w, ack_r

    def send(self, cpu: int, frame: Frame | bytes) -> None:
        _pid, cmd, ack = self._children[cpu]
        data = frame.data if isinstance(frame, Frame) else frame
        os.write(cmd, struct.pack("<I", len(data)) + data)
        assert os.read(ack, 1) == b"k", f"the sender on CPU {cpu} failed"

    def close(self) -> None:
        codes = []
        for pid, cmd, ack in self._children.values():
            os.close(cmd)
            os.close(ack)
            codes.append(os.waitpid(pid, 0)[1])
        self._children.clear()
        assert codes == [0] * len(codes), codes

    def __enter__(self) -> PinnedSenders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_frames(ns: Netns, ifname: str, frames: Iterable[Frame | bytes], repeat: int = 1) -> int:
    with Sender(ns, ifname) as s:
        return s.send(frames, repeat)


def raw_ip(src_mac: str, dst_mac: str, ip_pkt, key: Key | None) -> Frame:  # type: ignore[no-untyped-def]
    """Any scapy IP/IPv6 packet in an Ethernet frame, with the key it must land in."""
    return _frame(_eth(src_mac, dst_mac), ip_pkt, key)


def padded(frame: Frame, to: int = 60) -> Frame:
    """The frame with zero Ethernet padding up to `to` bytes: the padding is
    not IP, so the flow's bytes stay the IP total length."""
    return Frame(frame.data + b"\0" * max(0, to - len(frame.data)), frame.key, frame.ip_bytes)


def short_payload(frame: Frame, cut: int) -> Frame:
    """Headers intact but the last `cut` payload bytes missing, so the IP total
    length claims more than crossed: the flow gets the bytes that crossed."""
    return Frame(frame.data[:-cut], frame.key, frame.ip_bytes - cut)


# --------------------------------------------------------------------------- #
# encapsulations routers carry: PPPoE sessions, MPLS label stacks
# --------------------------------------------------------------------------- #

ETH_P_PPP_DISC = 0x8863
ETH_P_PPP_SES = 0x8864
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
PPP_IP, PPP_IPV6, PPP_MPLS, PPP_LCP = 0x0021, 0x0057, 0x0281, 0xC021


def _l2(src_mac: str, dst_mac: str, ethertype: int, vlans: Iterable[tuple[int, int]]) -> bytes:
    """Ethernet header with in-band tags [(tpid, vid), ...] ending in ethertype."""

    def mac(m: str) -> bytes:
        return bytes.fromhex(m.replace(":", ""))

    out = mac(dst_mac) + mac(src_mac)
    for tpid, vid in vlans:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", ethertype)


def ip_key(ip_pkt, vlan: int = 0) -> Key:  # type: ignore[no-untyped-def]
    """The flow key of a scapy IP/IPv6 packet with a UDP or TCP header."""
    l4 = ip_pkt.payload
    proto = ip_pkt.proto if ip_pkt.version == 4 else ip_pkt.nh
    return Key(ip_pkt.version, proto, ip_pkt.src, ip_pkt.dst, l4.sport, l4.dport, vlan)


def pppoe_session(
    src_mac: str,
    dst_mac: str,
    ip_pkt,  # type: ignore[no-untyped-def]
    session: int = 0x2A,
    vlans: Sequence[tuple[int, int]] = (),
    ppp_proto: int | None = None,
) -> Frame:
    """An IP packet in a PPPoE session frame (RFC 2516: ver/type 0x11, code 0,
    session id, length of the PPP frame, then the PPP protocol field), after
    optional VLAN tags (the BRAS case). The flow is the inner packet's."""
    raw = bytes(ip_pkt)
    proto = ppp_proto if ppp_proto is not None else (PPP_IP if ip_pkt.version == 4 else PPP_IPV6)
    head = struct.pack("!BBHHH", 0x11, 0, session, len(raw) + 2, proto)
    data = _l2(src_mac, dst_mac, ETH_P_PPP_SES, vlans) + head + raw
    vid = vlans[0][1] if vlans else 0
    return Frame(data, ip_key(ip_pkt, vid), len(raw))


def pppoe_control(src_mac: str, dst_mac: str, discovery: bool, session: int = 0x2A) -> Frame:
    """Not IP, so no flow, counted in non_ip: a PADI (discovery stage, 0x8863,
    code 0x09, a Service-Name tag) or an LCP Echo-Request in a session."""
    if discovery:
        tags = struct.pack("!HH", 0x0101, 0)  # Service-Name, any
        body = struct.pack("!BBHH", 0x11, 0x09, 0, len(tags)) + tags
        return Frame(_l2(src_mac, dst_mac, ETH_P_PPP_DISC, ()) + body, None, 0)
    lcp = struct.pack("!BBHI", 9, 1, 8, 0x12345678)  # Echo-Request, id 1, magic
    head = struct.pack("!BBHHH", 0x11, 0, session, len(lcp) + 2, PPP_LCP)
    return Frame(_l2(src_mac, dst_mac, ETH_P_PPP_SES, ()) + head + lcp, None, 0)


def mpls_stack(labels: Sequence[int], tc: int = 0, ttl: int = 64) -> bytes:
    """Label stack entries (RFC 3032), the last with bottom-of-stack set."""
    out = b""
    for i, label in enumerate(labels):
        bos = 1 if i == len(labels) - 1 else 0
        out += struct.pack("!I", label << 12 | tc << 9 | bos << 8 | ttl)
    return out


def mpls(
    src_mac: str,
    dst_mac: str,
    ip_pkt,  # type: ignore[no-untyped-def]
    labels: Sequence[int],
    tc: int = 0,
    vlans: Sequence[tuple[int, int]] = (),
    multicast: bool = False,
    in_pppoe: bool = False,
) -> Frame:
    """An IP packet under an MPLS label stack (top label first), over Ethernet
    (optionally tagged) or inside a PPPoE session. The flow is the inner
    packet's, with the top label."""
    raw = bytes(ip_pkt)
    stack = mpls_stack(labels, tc)
    vid = vlans[0][1] if vlans else 0
    if in_pppoe:
        head = struct.pack("!BBHHH", 0x11, 0, 0x2A, len(stack) + len(raw) + 2, PPP_MPLS)
        data = _l2(src_mac, dst_mac, ETH_P_PPP_SES, vlans) + head + stack + raw
    else:
        et = ETH_P_MPLS_MC if multicast else ETH_P_MPLS_UC
        data = _l2(src_mac, dst_mac, et, vlans) + stack + raw
    return Frame(data, ip_key(ip_pkt, vid), len(raw), mpls_label=labels[0])


def ipv4_bad_length(
    src_mac: str, dst_mac: str, src: str, dst: str, tot_len: int, options: int = 0
) -> Frame:
    """IPv4 whose total length is smaller than its header (IHL 5 + options
    words), or 0 on a packet that is not GSO: `malformed`, no flow."""
    from scapy.all import IPOption_NOP  # type: ignore[import-untyped]

    opts = [IPOption_NOP()] * (4 * options)
    ip_pkt = IP(src=src, dst=dst, options=opts) / UDP(sport=7, dport=8) / Raw(b"L" * 30)
    raw = bytearray(bytes(ip_pkt))
    raw[2:4] = tot_len.to_bytes(2, "big")
    raw[10:12] = b"\0\0"  # (checksum: TC looks before the stack checks it)
    return Frame(_l2(src_mac, dst_mac, 0x0800, ()) + bytes(raw), None, 0)
