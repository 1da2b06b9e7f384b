"""Devices without an Ethernet header: tun (IFF_TUN), as WireGuard, PPP and the
IP tunnels are seen by TC, with real traffic.

This kernel has no wireguard, ppp, ipip, gre or sit modules; tun is the L3
device it can create. TUNSETLINK gives a (down) tun device another device
type, so the same tun data path is also attached as ARPHRD_PPP, RAWIP,
TUNNEL (ipip), TUNNEL6 (ip6tnl) and IPGRE: what changes is the type flowtop
reads at attach time and the program it picks.

Ground truth: the test process is the other end of every tun device. What it
writes to the fd is what the device receives (ingress); what it reads from
the fd is everything the device transmitted (egress), byte for byte; `ip -s
link` counts both. A router whose server leg is a pair of tun devices
bridged by the test (with a known delay) carries real TCP, and the passive
RTT seen on the tun leg is checked against that delay and the client's own
`ss -ti`.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import fcntl
import heapq
import json
import os
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from scapy.all import (  # type: ignore[import-untyped]
    ICMP,
    IP,
    TCP,
    UDP,
    ICMPv6EchoRequest,
    IPv6,
    Raw,
)

from flowtop.kernel import devices

from . import netns
from .dump import DumpResult, run_dump
from .expect import TcpServer, udp_sink
from .frames import Key
from .netns import Netns, entered, tcx_programs

pytestmark = pytest.mark.kernel

TUNSETIFF = 0x400454CA
TUNSETLINK = 0x400454CD
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD


class Tun:
    """A tun device (IFF_TUN) in a namespace; the test holds its fd, non-blocking."""

    def __init__(self, ns: Netns, name: str, pi: bool = False, arphrd: int | None = None) -> None:
        self.ns, self.name, self.pi = ns, name, pi
        with entered(ns.name):
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            try:
                flags = IFF_TUN | (0 if pi else IFF_NO_PI)
                fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
                if arphrd is not None:
                    fcntl.ioctl(self.fd, TUNSETLINK, arphrd)  # only while down
            except BaseException:
                os.close(self.fd)
                raise
        os.set_blocking(self.fd, False)

    def up(self, ip4: str, ip6: str | None = None) -> None:
        self.ns.ip("addr", "add", ip4, "dev", self.name)
        if ip6:
            self.ns.ip("-6", "addr", "add", ip6, "dev", self.name, "nodad")
        self.ns.ip("link", "set", self.name, "up")

    def write(self, pkt: bytes) -> None:
        if self.pi:
            proto = ETH_P_IP if pkt[0] >> 4 == 4 else ETH_P_IPV6
            pkt = struct.pack("!HH", 0, proto) + pkt
        os.write(self.fd, pkt)

    def read_all(self) -> list[bytes]:
        out = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            out.append(data[4:] if self.pi else data)

    def close(self) -> None:
        os.close(self.fd)


def key_of(pkt: bytes) -> tuple[Key, int]:
    """The flow key of an IP packet as flowtop forms it, and its IP octets."""
    v = pkt[0] >> 4
    ip = IP(pkt) if v == 4 else IPv6(pkt)
    proto = int(ip.proto if v == 4 else ip.nh)
    l4 = ip.payload
    if proto in (1, 58):
        sport, dport = 0, int(l4.type) << 8 | int(l4.code)
    else:
        sport, dport = int(l4.sport), int(l4.dport)
    return Key(v, proto, str(ip.src), str(ip.dst), sport, dport), len(pkt)


def expected(pkts: list[bytes]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, list[int]] = {}
    for p in pkts:
        k, n = key_of(p)
        e = out.setdefault(k, [0, 0])
        e[0] += 1
        e[1] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def flow_errors(res: DumpResult, iface: str, direction: str, pkts: list[bytes]) -> list[str]:
    errors = []
    for k, want in expected(pkts).items():
        got = res.flow(
            iface=iface, direction=direction, ip_version=k.ip_version, proto=k.proto,
            src=k.src, dst=k.dst, sport=k.sport, dport=k.dport, vlan=0,
        )  # fmt: skip
        have = None if got is None else (got["packets"], got["bytes"])
        if have != want:
            errors.append(f"{iface} {direction} {k}: got {have}, want {want}")
    ours = sum(
        f["packets"] for f in res.flows if f["iface"] == iface and f["direction"] == direction
    )
    if ours != len(pkts):
        errors.append(f"{iface} {direction}: {ours} packets in flows, {len(pkts)} crossed")
    return errors


# --------------------------------------------------------------------------- #
# flows and counters on tun devices of several types
# --------------------------------------------------------------------------- #

# name, ARPHRD_* given with TUNSETLINK (None: tun's own, ARPHRD_NONE), packet info header
TYPES = [
    ("none", None, False),
    ("none_pi", None, True),
    ("ppp", 512, False),
    ("rawip", 519, False),
    ("ipip", 768, False),
    ("ip6tnl", 769, False),
    ("gre", 778, False),
]


@dataclass
class TunRun:
    res: DumpResult
    ns: Netns
    sent: dict[str, list[bytes]] = field(default_factory=dict)  # ingress, per device
    received: dict[str, list[bytes]] = field(default_factory=dict)  # egress
    link: dict[str, dict[str, int]] = field(default_factory=dict)  # ip -s link deltas
    link_type: dict[str, str] = field(default_factory=dict)
    filters: dict[str, list[str]] = field(default_factory=dict)  # program names on the hooks


def _addrs(i: int) -> tuple[str, str, str, str]:
    """(ours v4, peer v4, ours v6, peer v6) of device i."""
    return f"10.201.{i}.1", f"10.201.{i}.2", f"fd00:201:{i}::1", f"fd00:201:{i}::2"


def _ingress_packets(i: int) -> list[bytes]:
    us4, peer4, us6, peer6 = _addrs(i)
    pkts = [bytes(IP(src=peer4, dst=us4) / UDP(sport=5000 + i, dport=6000) / Raw(b"u" * n))
            for n in (0, 100, 1400)]  # fmt: skip
    pkts += [bytes(IPv6(src=peer6, dst=us6) / UDP(sport=5000 + i, dport=6000) / Raw(b"v" * n))
             for n in (8, 1000)]  # fmt: skip
    pkts += [bytes(IP(src=peer4, dst=us4) / ICMP(type=8, id=i, seq=s) / Raw(b"p" * 56))
             for s in range(3)]  # fmt: skip
    pkts += [bytes(IPv6(src=peer6, dst=us6) / ICMPv6EchoRequest(id=i, seq=s) / Raw(b"q" * 40))
             for s in range(2)]  # fmt: skip
    # to a closed port: each SYN draws one RST
    pkts += [bytes(IP(src=peer4, dst=us4) / TCP(sport=40000 + i, dport=7, flags="S"))]
    pkts += [bytes(IPv6(src=peer6, dst=us6) / TCP(sport=40000 + i, dport=7, flags="S"))]
    return pkts


def _prog_names(ns: Netns, dev: str) -> list[str]:
    """Names of flowtop's BPF programs on the device's hooks (ingress, egress):
    TCX links, and clsact filters."""
    names = []
    for hook in ("ingress", "egress"):
        names += [str(link["prog"]) for link in tcx_programs(ns, dev, hook)]
        out = ns.tc("-j", "filter", "show", "dev", dev, hook).stdout
        for ent in json.loads(out or "[]"):
            prog = (ent.get("options") or {}).get("prog") or {}
            if prog.get("name"):
                names.append(str(prog["name"]))
    return names


@pytest.fixture(scope="module")
def tun_run() -> Iterator[TunRun]:
    ns = Netns.create("l3")
    tuns: list[Tun] = []
    socks: list[socket.socket] = []
    try:
        for i, (name, arphrd, pi) in enumerate(TYPES, 1):
            t = Tun(ns, f"t{name}", pi=pi, arphrd=arphrd)
            tuns.append(t)
            us4, _p4, us6, _p6 = _addrs(i)
            t.up(f"{us4}/24", f"{us6}/64")
            socks += [udp_sink(ns, us4, 6000), udp_sink(ns, us6, 6000)]
        with entered(ns.name):
            out4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            out6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        socks += [out4, out6]
        time.sleep(0.3)
        for t in tuns:
            t.read_all()  # whatever the kernel sent before the run
        run = TunRun(res=None, ns=ns)  # type: ignore[arg-type]
        before = {t.name: ns.link_stats(t.name) for t in tuns}

        def traffic() -> None:
            for i, t in enumerate(tuns, 1):
                _us4, peer4, _us6, peer6 = _addrs(i)
                run.sent[t.name] = _ingress_packets(i)
                for p in run.sent[t.name]:
                    t.write(p)
                for n in (5, 500):
                    out4.sendto(b"o" * n, (peer4, 9000 + i))
                out6.sendto(b"o" * 77, (peer6, 9000 + i))
                run.filters[t.name] = _prog_names(ns, t.name)
            time.sleep(0.5)
            for t in tuns:
                run.received[t.name] = t.read_all()

        run.res = run_dump(ns, [t.name for t in tuns], traffic)
        for t in tuns:
            after = ns.link_stats(t.name)
            run.link[t.name] = {k: after[k] - before[t.name][k] for k in after}
            info = json.loads(ns.ip("-d", "-j", "link", "show", "dev", t.name).stdout)[0]
            run.link_type[t.name] = str(info["link_type"])
        yield run
    finally:
        for s in socks:
            s.close()
        for t in tuns:
            with contextlib.suppress(OSError):
                t.close()
        ns.delete()


@pytest.mark.parametrize("kind", [t[0] for t in TYPES])
def test_tun_flows_exact(tun_run: TunRun, kind: str) -> None:
    """Every packet written (ingress) and read back (egress: echo replies, RSTs,
    locally sent UDP) is in its flow, exact packets and IP bytes; nothing is
    counted as non-IP, truncated or malformed."""
    dev = f"t{kind}"
    sent, received = tun_run.sent[dev], tun_run.received[dev]
    # the kernel answered each echo request and each SYN, and sent our UDP
    assert Counter(key_of(p)[0].proto for p in received) == Counter({1: 3, 58: 2, 6: 2, 17: 3})
    res = tun_run.res
    errors = flow_errors(res, dev, "ingress", sent) + flow_errors(res, dev, "egress", received)
    assert not errors, "\n".join(errors)
    for name in ("non_ip", "truncated", "malformed", "net_seek_limit", "no_ports"):
        assert res.stats[name] == 0, res.stats


@pytest.mark.parametrize("kind", [t[0] for t in TYPES])
def test_tun_interface_counters_equal_ip_link(tun_run: TunRun, kind: str) -> None:
    """No Ethernet header to add: flowtop's rx/tx equal ip -s link, which equal
    the packets written to and read from the fd."""
    dev = f"t{kind}"
    sent, received = tun_run.sent[dev], tun_run.received[dev]
    truth = {
        "rx_packets": len(sent),
        "rx_bytes": sum(map(len, sent)),
        "tx_packets": len(received),
        "tx_bytes": sum(map(len, received)),
    }
    assert tun_run.link[dev] == truth
    assert tun_run.res.iface(dev) == truth
    v6 = tun_run.res.iface_family(dev, "ipv6")
    assert v6["rx_packets"] == sum(1 for p in sent if p[0] >> 4 == 6)


def test_tun_every_packet_counted_once(tun_run: TunRun) -> None:
    """Over all the devices: packets in flows + the not-in-flow counters ==
    the packets the hooks saw (no GSO here) == what crossed the fds."""
    from flowtop.kernel import layout

    res = tun_run.res
    seen = sum(c["rx_packets"] + c["tx_packets"] for c in (res.iface(d) for d in tun_run.sent))
    crossed = sum(len(tun_run.sent[d]) + len(tun_run.received[d]) for d in tun_run.sent)
    in_flows = sum(f["packets"] for f in res.flows)
    assert in_flows + sum(res.stats[n] for n in layout.NOT_IN_FLOW) == seen == crossed


@pytest.mark.parametrize(("kind", "arphrd"), [(t[0], t[1]) for t in TYPES])
def test_device_type_picks_the_l3_programs(tun_run: TunRun, kind: str, arphrd: int | None) -> None:
    dev = f"t{kind}"
    want = {None: "none", 512: "ppp", 519: "[519]", 768: "ipip", 769: "tunnel6", 778: "gre"}
    assert tun_run.link_type[dev] == want[arphrd]
    assert devices.l3_type(0xFFFE if arphrd is None else arphrd)
    # the kernel keeps 15 characters of a program name
    assert sorted(tun_run.filters[dev]) == ["flowtop_l3_egre", "flowtop_l3_ingr"]


# --------------------------------------------------------------------------- #
# the network header behind something else (BPF_PROG_TEST_RUN)
# --------------------------------------------------------------------------- #

BPF_PROG_TEST_RUN = 10
_libc = ct.CDLL(None, use_errno=True)


def _test_run(prog_fd: int, data: bytes) -> int:
    """Runs a SCHED_CLS program once on data (bpf(BPF_PROG_TEST_RUN)); returns its verdict."""
    buf = ct.create_string_buffer(data, len(data))
    attr = ct.create_string_buffer(80)
    struct.pack_into("<IIIIQQI", attr, 0, prog_fd, 0, len(data), 0, ct.addressof(buf), 0, 1)
    if _libc.syscall(321, BPF_PROG_TEST_RUN, attr, 80) != 0:  # 321: __NR_bpf on x86_64
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return int(struct.unpack_from("<i", attr, 4)[0])


def test_l3_program_finds_the_network_header_behind_a_prefix() -> None:
    """The kernel's test run builds the skb of an Ethernet device: the network
    header is 14 bytes in, skb->data at the start (as on a GRE device's
    ingress, where the outer headers stay in front). The L3 program must find
    the IPv4 header there from skb->protocol and the network header, even
    though the prefix itself starts like an IPv4 header (0x45), and count the
    packet from the network header on."""
    from flowtop.kernel import layout
    from flowtop.kernel.program import ProgramOptions, TcProgram

    if os.uname().machine != "x86_64":
        pytest.skip("bpf(2) syscall number known for x86_64 only")
    ns = Netns.create("tr")
    prog = TcProgram(ProgramOptions(flow_map_size=64, passive_rtt=False))
    try:
        ip = bytes(
            IP(src="10.203.0.1", dst="10.203.0.2") / UDP(sport=1234, dport=53) / Raw(b"d" * 50)
        )
        prefix = bytes.fromhex("450000aabbcc0200000000010800")  # dst, src, IPv4
        with entered(ns.name):
            lo = socket.if_nametoindex("lo")
            for _ in range(3):
                assert _test_run(prog.fd("ingress", True), prefix + ip) == -1  # TC_ACT_UNSPEC
        flows = [
            (k, s) for keys, stats in prog.drain_flows() for k, s in zip(keys, stats, strict=True)
        ]
        assert len(flows) == 1, flows
        k, s = flows[0]
        assert (int(k["ifindex"]), int(k["proto"]), int(k["sport"]), int(k["dport"])) == (
            lo,
            17,
            1234,
            53,
        )
        assert bytes(k["src"])[:4] == socket.inet_aton("10.203.0.1")
        assert (int(s["packets"]), int(s["bytes"])) == (3, 3 * len(ip))
        rx = prog.iface_counters([lo])[(lo, layout.DIR_INGRESS, layout.FAMILY_IPV4)]
        assert rx == (3, 3 * len(ip))  # the 14-byte prefix is not the device's
        assert prog.counters()["net_seek_limit"] == 0
    finally:
        prog.close()
        ns.delete()


# --------------------------------------------------------------------------- #
# passive TCP RTT on a router's tun leg
# --------------------------------------------------------------------------- #

DELAY = 0.010  # each way, added by the pump between the two tun devices


class Pump(threading.Thread):
    """Moves packets between two tun fds, each DELAY late (a heap of due times)."""

    def __init__(self, a: Tun, b: Tun) -> None:
        super().__init__(daemon=True)
        self.a, self.b = a, b
        self.stop = threading.Event()
        self.moved = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        due: list[tuple[float, int, int, bytes]] = []
        seq = 0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                while due and due[0][0] <= now:
                    _t, _s, fd, pkt = heapq.heappop(due)
                    os.write(fd, pkt)
                    self.moved += 1
                wait = min(0.05, max(0.0, due[0][0] - now)) if due else 0.05
                ready, _, _ = select.select([self.a.fd, self.b.fd], [], [], wait)
                for src in ready:
                    dst = self.b.fd if src == self.a.fd else self.a.fd
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            pkt = os.read(src, 1 << 16)
                            seq += 1
                            heapq.heappush(due, (time.monotonic() + DELAY, seq, dst, pkt))
        except BaseException as e:  # reported by the test
            self.error = e


def _ss_rtt_ms(ns: Netns, dport: int) -> float:
    out = ns.exec("ss", "-tinH", "state", "established", f"( dport = :{dport} )").stdout
    m = re.search(r"\brtt:([\d.]+)/", out)
    assert m, out
    return float(m.group(1))


def test_passive_rtt_on_a_tun_leg() -> None:
    """client (vc) <-> (vr1) router (tunr) ~ pump ~ (tuns) server. flowtop in
    the router on tunr only: the TCP flow there gets a passive RTT of at least
    the pump's 2 x 10 ms, close to the client socket's own srtt, and the
    interface counters equal ip -s link."""
    made: list[Netns] = []
    tuns: list[Tun] = []
    try:
        for role in ("c", "r", "s"):
            made.append(Netns.create(role, ipv6=False))
        c, r, s = made
        netns.veth(c, "vc", r, "vr1", "02:00:c9:00:01:01", "02:00:c9:00:01:02",
                   ip4=("10.202.1.1", "10.202.1.2"), ip6=None, ipv6=False)  # fmt: skip
        tr, ts = Tun(r, "tunr"), Tun(s, "tuns")
        tuns += [tr, ts]
        tr.up("10.202.2.1/24")
        ts.up("10.202.2.2/24")
        r.sysctl("net.ipv4.ip_forward", 1)
        c.ip("route", "add", "default", "via", "10.202.1.2")
        s.ip("route", "add", "default", "dev", "tuns")
        pump = Pump(tr, ts)
        pump.start()
        port = 9300
        server = TcpServer(s, "10.202.2.2", port, reply=20000)
        before = r.link_stats("tunr")
        rtt_ss: list[float] = []

        def traffic() -> None:
            with entered(c.name):
                cl = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            cl.settimeout(30)
            cl.connect(("10.202.2.2", port))
            for _ in range(30):  # data for 1.5 s: timestamp samples every RTT or so
                cl.sendall(b"d" * 4000)
                time.sleep(0.05)
            rtt_ss.append(_ss_rtt_ms(c, port))
            cl.shutdown(socket.SHUT_WR)
            got = 0
            while data := cl.recv(65536):
                got += len(data)
            cl.close()
            assert got == 20000
            server.join(timeout=30)
            time.sleep(3 * DELAY)

        res = run_dump(r, ["tunr"], traffic)
        pump.stop.set()
        pump.join(timeout=5)
        after = r.link_stats("tunr")
    finally:
        for t in tuns:
            with contextlib.suppress(OSError):
                t.close()
        for ns in made:
            ns.delete()
    assert pump.error is None, pump.error
    assert server.error is None and server.received == 30 * 4000
    f = res.flow(
        iface="tunr", direction="egress", proto=6, src="10.202.1.1", dst="10.202.2.2", dport=port
    )
    assert f is not None, res.flows
    assert f["rtt_source"] == "passive", f
    rtt_ms = f["rtt_us"] / 1000
    assert 2 * DELAY * 1000 <= rtt_ms <= 2 * DELAY * 1000 + 15, (rtt_ms, rtt_ss)
    assert abs(rtt_ms - rtt_ss[0]) <= max(0.3 * rtt_ss[0], 3.0), (rtt_ms, rtt_ss)
    back = res.flow(iface="tunr", direction="ingress", proto=6, src="10.202.2.2", sport=port)
    assert back is not None and back["rtt_source"] == "passive", back
    assert abs(back["rtt_us"] - f["rtt_us"]) <= 0.3 * f["rtt_us"], (back, f)
    assert res.iface("tunr") == {k: after[k] - before[k] for k in after}


# --------------------------------------------------------------------------- #
# the same flows in IPFIX and Prometheus
# --------------------------------------------------------------------------- #


def test_tun_flows_reach_ipfix_and_prometheus() -> None:
    """`--export-only` on a tun device: the packets written to it are in the
    Prometheus flow and interface counters and in the IPFIX records
    (ingressInterface = the tun's ifindex), exact."""
    from .exporting import ExportOnly

    ns = Netns.create("ex")
    t = None
    try:
        t = Tun(ns, "tunx")
        t.up("10.204.1.1/24", "fd00:204:1::1/64")
        sinks = [udp_sink(ns, "10.204.1.1", 6000), udp_sink(ns, "fd00:204:1::1", 6000)]
        pkts = [bytes(IP(src="10.204.1.2", dst="10.204.1.1") / UDP(sport=5000, dport=6000)
                      / Raw(b"x" * n)) for n in range(0, 1000, 100)]  # fmt: skip
        pkts += [bytes(IPv6(src="fd00:204:1::2", dst="fd00:204:1::1") / UDP(sport=5000, dport=6000)
                       / Raw(b"y" * n)) for n in (1, 2, 3, 4)]  # fmt: skip
        ifindex = ns.ifindex("tunx")
        with ExportOnly(ns, ["tunx"]) as exp:
            for p in pkts:
                t.write(p)
            time.sleep(1.5)  # an interval: the metrics have it
            text = exp.scrape()
        for s in sinks:
            s.close()
    finally:
        if t is not None:
            t.close()
        ns.delete()
    v4 = [p for p in pkts if p[0] >> 4 == 4]
    assert (
        f'flowtop_flow_packets_total{{direction="ingress",ifname="tunx",proto="udp"}} {len(pkts)}.0'
        in text
    ), text
    assert f'flowtop_interface_rx_packets_total{{family="ipv4",ifname="tunx"}} {len(v4)}.0' in text
    assert (
        f'flowtop_interface_rx_bytes_total{{family="ipv4",ifname="tunx"}} {sum(map(len, v4))}.0'
        in text
    )
    recs = [r for r in exp.flow_records() if r.get(10) == ifindex and r.get(7) == 5000]
    by_version = {4: [0, 0], 6: [0, 0]}
    for r in recs:
        by_version[int(r[60])][0] += int(r[2])  # ipVersion, packetDeltaCount
        by_version[int(r[60])][1] += int(r[1])  # octetDeltaCount
    assert by_version == {
        4: [len(v4), sum(map(len, v4))],
        6: [len(pkts) - len(v4), sum(len(p) for p in pkts if p[0] >> 4 == 6)],
    }, recs
