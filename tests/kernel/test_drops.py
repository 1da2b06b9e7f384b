"""Drop reasons from the kernel (bpf/drops.c, kernel/drops.py) against drops the tests cause.

Every test makes its own namespaces (tests/kernel/netns.py), causes a known
number of drops there (datagrams to a closed port, SYNs to a closed port, an
nftables drop rule, rp_filter, a neighbour that never answers, a full map)
and compares the collector's rows, key by key, with what it sent and with
the kernel's own counters for the same events (nstat, the rule's counter).
The collector is built inside the namespace it watches (netns_only), so
drops of other namespaces, where concurrent tests use the same ifindexes
and addresses, never count.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flowtop.errors import ConfigError, KernelFeatureError
from flowtop.kernel import counters, layout, tracefs
from flowtop.kernel.bpfsys import prog_fd_by_id
from flowtop.kernel.btf import Btf
from flowtop.kernel.build import Build, Loaded, Request
from flowtop.kernel.drop_records import DROP_KEY, DROP_RECORD, DROP_STATS
from flowtop.kernel.dropreasons import ENUM, DropReasons, from_enum, from_format
from flowtop.kernel.drops import DropCollector
from flowtop.kernel.sockops import NETNS_MAP, set_netns_cookie

from . import netns

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
A6, B6 = "fd00:200:1::1", "fd00:200:1::2"


@contextlib.contextmanager
def collector(ns: netns.Netns, **kw: int | bool) -> Iterator[DropCollector]:
    """A DropCollector of ns's devices (built in ns), closed on the way out."""
    dc = DropCollector(**kw)  # type: ignore[arg-type]
    try:
        with netns.entered(ns.name):
            dc.begin()
        dc.finish()
        yield dc
    finally:
        dc.close()


Rows = dict[tuple[int, int, int, int, str, str, int, int, str], tuple[int, int]]


def rows_of(records: np.ndarray, reasons: DropReasons) -> Rows:
    """{(ifindex, direction, ip_version, proto, src, dst, sport, dport, reason):
    (packets, bytes)}, summed."""
    out: Rows = {}
    for r in records:
        k = r["key"]
        v = int(k["ip_version"])
        n = 4 if v == 4 else 16
        src = str(ipaddress.ip_address(bytes(k["src"])[:n])) if v else ""
        dst = str(ipaddress.ip_address(bytes(k["dst"])[:n])) if v else ""
        key = (
            int(k["ifindex"]), int(k["direction"]), v, int(k["proto"]), src, dst,
            int(k["sport"]), int(k["dport"]), reasons.name(int(r["reason"])),
        )  # fmt: skip
        p, b = out.get(key, (0, 0))
        out[key] = (p + int(r["packets"]), b + int(r["bytes"]))
    return out


def collect(dc: DropCollector, until: int, timeout: float = 5.0, settle: float = 0.3) -> Rows:
    """Drains until the rows hold `until` packets in all (or timeout), then
    once more after `settle` seconds, so that late extra drops show too."""
    assert dc.reasons is not None
    acc: Rows = {}
    limit = time.monotonic() + timeout
    while True:
        for k, (p, b) in rows_of(dc.drain(), dc.reasons).items():
            q, c = acc.get(k, (0, 0))
            acc[k] = (q + p, c + b)
        if sum(p for p, _ in acc.values()) >= until or time.monotonic() > limit:
            break
        time.sleep(0.05)
    time.sleep(settle)
    for k, (p, b) in rows_of(dc.drain(), dc.reasons).items():
        q, c = acc.get(k, (0, 0))
        acc[k] = (q + p, c + b)
    return acc


def nstat(ns: netns.Netns, *names: str) -> dict[str, int]:
    """Absolute SNMP counters of ns (nstat -a: no history file, -s: none written)."""
    out = ns.exec("nstat", "-asz", *names).stdout
    vals = {p[0]: int(p[1]) for p in (ln.split() for ln in out.splitlines()) if len(p) >= 2}
    return {n: vals[n] for n in names}


def udp_socket(ns: netns.Netns, family: int = socket.AF_INET) -> socket.socket:
    with netns.entered(ns.name):
        s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
    return s


# -- layout and names ---------------------------------------------------------------


def _ctypes_layout(t: type) -> list[tuple[str, int, int]]:
    return [(n, getattr(t, n).offset, getattr(t, n).size) for n, *_ in t._fields_]  # type: ignore[attr-defined]


def _numpy_layout(d: np.dtype) -> list[tuple[str, int, int]]:
    assert d.fields is not None
    return sorted(
        ((n, off, sub.itemsize) for n, (sub, off, *_) in d.fields.items()), key=lambda x: x[1]
    )


def test_struct_layouts_match_bcc() -> None:
    """DROP_KEY / DROP_STATS against the ctypes types bcc builds from bpf/drops.h
    (a table of those types compiled here; drops.c itself would attach)."""
    import bcc

    from flowtop.kernel.build import BPF_DIR

    text = b'#include "drops.h"\nBPF_HASH(t, struct ft_drop_key, struct ft_drop_stats, 1);\n'
    b = bcc.BPF(text=text, cflags=[f"-I{BPF_DIR}"])
    try:
        for ctype, dtype in ((b[b"t"].Key, DROP_KEY), (b[b"t"].Leaf, DROP_STATS)):
            assert ct.sizeof(ctype) == dtype.itemsize
            assert _ctypes_layout(ctype) == _numpy_layout(dtype)
        assert DROP_KEY.fields is not None and DROP_KEY.fields["flow"][0] == layout.FLOW_KEY
    finally:
        b.cleanup()


def test_reason_names_agree_with_the_tracepoint_format() -> None:
    """The table from the kernel's BTF equals the print fmt's __print_symbolic
    table on this kernel, value by value; 0 and 1 are the not-drops."""
    btf = Btf.load()
    assert btf is not None
    enum = btf.enum(ENUM)
    assert enum is not None
    from_btf = from_enum(enum)
    fmt = tracefs.tracepoint_format(tracefs.events_dir(), "skb", "kfree_skb")
    from_fmt = from_format(fmt)
    assert from_fmt is not None
    assert dict(from_btf.names) == dict(from_fmt.names)
    assert (
        from_btf.not_drops
        == from_fmt.not_drops
        == {enum["SKB_NOT_DROPPED_YET"], enum["SKB_CONSUMED"]}
    )
    for name in ("NO_SOCKET", "NETFILTER_DROP", "IP_RPFILTER", "NEIGH_FAILED", "QDISC_DROP"):
        assert from_btf.value(name) == enum[f"SKB_DROP_REASON_{name}"]


# -- drops caused on purpose --------------------------------------------------------


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_udp_to_closed_port_is_no_socket(pair: netns.Pair, family: int) -> None:
    """N datagrams to a closed port: N NO_SOCKET drops on their flow key
    (receiving veth, ingress), as many as B's UdpNoPorts; B's port
    unreachables are no drops on either side."""
    n, payload, port = 40, 100, 9999
    v6 = family == socket.AF_INET6
    src_ip, dst_ip = (A6, B6) if v6 else (A4, B4)
    snmp = ("Udp6NoPorts", "Icmp6OutDestUnreachs") if v6 else ("UdpNoPorts", "IcmpOutDestUnreachs")
    arrived = "Icmp6InDestUnreachs" if v6 else "IcmpInDestUnreachs"
    # every datagram answered: no ICMP rate limits in B (they are per namespace)
    limits = {
        "net.ipv4.icmp_ratelimit": 0,
        "net.ipv6.icmp.ratelimit": 0,
        "net.ipv4.icmp_msgs_burst": 10000,
        "net.ipv4.icmp_msgs_per_sec": 10000,
    }
    for name, value in limits.items():
        pair.b.sysctl(name, value)
    s = udp_socket(pair.a, family)
    try:
        before = nstat(pair.b, *snmp)
        before_a = nstat(pair.a, arrived)
        with collector(pair.b) as db, collector(pair.a) as da:
            for _ in range(n):
                s.sendto(b"x" * payload, (dst_ip, port))
            got = collect(db, n)
            in_a = collect(da, 0, timeout=0)
        after = nstat(pair.b, *snmp)
        after_a = nstat(pair.a, arrived)
        sport = s.getsockname()[1]
    finally:
        s.close()
    ip_len = (40 if v6 else 20) + 8 + payload
    key = (pair.pb.ifindex, layout.DIR_INGRESS, 6 if v6 else 4, 17, src_ip, dst_ip, sport, port,
           "NO_SOCKET")  # fmt: skip
    assert got == {key: (n, n * ip_len)}
    assert after[snmp[0]] - before[snmp[0]] == n
    # the port unreachables were sent (not dropped in B), and not dropped in A
    assert after[snmp[1]] - before[snmp[1]] == n
    assert after_a[arrived] - before_a[arrived] == n
    assert in_a == {}


def test_ipv6_extension_header_walked(pair: netns.Pair) -> None:
    """IPv6 datagrams behind a hop-by-hop options header to a closed port:
    the key has the UDP ports past the extension header, the bytes its 8."""
    n, port = 10, 9995
    s = udp_socket(pair.a, socket.AF_INET6)
    # next header (filled by the kernel), length 0 (8 bytes), PadN of 4
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, b"\x00\x00\x01\x04\x00\x00\x00\x00")
    try:
        before = nstat(pair.b, "Udp6NoPorts")
        with collector(pair.b) as db:
            for _ in range(n):
                s.sendto(b"h" * 20, (B6, port))
            got = collect(db, n)
        after = nstat(pair.b, "Udp6NoPorts")
        sport = s.getsockname()[1]
    finally:
        s.close()
    key = (pair.pb.ifindex, layout.DIR_INGRESS, 6, 17, A6, B6, sport, port, "NO_SOCKET")
    assert got == {key: (n, n * (40 + 8 + 8 + 20))}
    assert after["Udp6NoPorts"] - before["Udp6NoPorts"] == n


def test_syn_to_closed_port_is_no_socket(pair: netns.Pair) -> None:
    """N connection attempts to a closed port: each SYN is one NO_SOCKET drop
    in B (as many as B sent RSTs); the RSTs are no drops in A."""
    n, port = 30, 9998
    socks = []
    with netns.Capture(pair.b, "vb") as cap, collector(pair.b) as db, collector(pair.a) as da:
        before = nstat(pair.b, "TcpOutRsts")
        for _ in range(n):
            with netns.entered(pair.a.name):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(c)
            c.settimeout(5)
            assert c.connect_ex((B4, port)) == errno.ECONNREFUSED
        got = collect(db, n)
        in_a = collect(da, 0, timeout=0)
        after = nstat(pair.b, "TcpOutRsts")
        frames = cap.stop()
    sports = {c.getsockname()[1] for c in socks}
    for c in socks:
        c.close()
    syns = {f.ip()[5]: f.ip()[1] for f in frames if not f.outgoing and f.ip() and f.ip()[6] == port}  # type: ignore[index]
    assert set(syns) == sports and len(sports) == n
    want = {
        (pair.pb.ifindex, layout.DIR_INGRESS, 4, 6, A4, B4, sp, port, "NO_SOCKET"): (1, syns[sp])
        for sp in sports
    }
    assert got == want
    assert after["TcpOutRsts"] - before["TcpOutRsts"] == n
    assert in_a == {}


def test_nftables_drop_rule(pair: netns.Pair) -> None:
    """An nftables rule dropping UDP to one port in B: N datagrams to it are N
    NETFILTER_DROPs on their key (the rule's counter says N); M datagrams to
    an open port beside it are received, not dropped."""
    n, m, dropped_port = 25, 15, 7000
    pair.b.exec("nft", "add", "table", "inet", "ftt")
    pair.b.exec("nft", "add", "chain", "inet", "ftt", "input",
                "{ type filter hook input priority 0 ; }")  # fmt: skip
    pair.b.exec("nft", "add", "rule", "inet", "ftt", "input", "udp", "dport", str(dropped_port),
                "counter", "drop")  # fmt: skip
    rx = udp_socket(pair.b)
    rx.settimeout(2)
    open_port = rx.getsockname()[1]
    s = udp_socket(pair.a)
    try:
        with collector(pair.b) as db:
            for _ in range(n):
                s.sendto(b"d" * 50, (B4, dropped_port))
            for _ in range(m):
                s.sendto(b"o" * 50, (B4, open_port))
            got = collect(db, n)
            received = sum(1 for _ in range(m) if rx.recv(100))
        sport = s.getsockname()[1]
    finally:
        s.close()
        rx.close()
    rules = json.loads(pair.b.exec("nft", "-j", "list", "table", "inet", "ftt").stdout)
    counter = next(
        e["counter"]["packets"]
        for item in rules["nftables"] if "rule" in item
        for e in item["rule"]["expr"] if "counter" in e
    )  # fmt: skip
    key = (pair.pb.ifindex, layout.DIR_INGRESS, 4, 17, A4, B4, sport, dropped_port,
           "NETFILTER_DROP")  # fmt: skip
    assert counter == n
    assert got == {key: (n, n * (20 + 8 + 50))}
    assert received == m


def _raw_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 + UDP packet (checksums: the kernel fills the IP one; UDP 0)."""
    total = 20 + 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    return ip + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def test_rp_filter_spoofed_source(pair: netns.Pair) -> None:
    """Strict rp_filter in B and packets from A with a source B has no route
    back to (raw socket): N IP_RPFILTER drops, as B's IPReversePathFilter."""
    n, spoofed = 20, "10.99.0.1"
    pair.b.sysctl("net.ipv4.conf.all.rp_filter", 1)
    pair.b.sysctl("net.ipv4.conf.vb.rp_filter", 1)
    with netns.entered(pair.a.name):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        before = nstat(pair.b, "TcpExtIPReversePathFilter")
        with collector(pair.b) as db:
            for _ in range(n):
                raw.sendto(_raw_udp(spoofed, B4, 4444, 5555, b"s" * 30), (B4, 0))
            got = collect(db, n)
        after = nstat(pair.b, "TcpExtIPReversePathFilter")
    finally:
        raw.close()
    key = (pair.pb.ifindex, layout.DIR_INGRESS, 4, 17, spoofed, B4, 4444, 5555, "IP_RPFILTER")
    assert got == {key: (n, n * 58)}
    assert after["TcpExtIPReversePathFilter"] - before["TcpExtIPReversePathFilter"] == n


def test_bad_udp_checksum(pair: netns.Pair) -> None:
    """Datagrams to a listening socket with a wrong UDP checksum (raw socket,
    B's receive checksum offload off so that the stack checks it): N drops,
    reason UDP_CSUM, as B's UdpInCsumErrors; good datagrams arrive."""
    n, good = 15, 4
    pair.b.exec("ethtool", "-K", "vb", "rx", "off")
    rx = udp_socket(pair.b)
    port = rx.getsockname()[1]
    rx.settimeout(2)
    with netns.entered(pair.a.name):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        before = nstat(pair.b, "UdpInCsumErrors")
        with collector(pair.b) as db:
            bad = bytearray(_raw_udp(A4, B4, 4545, port, b"c" * 40))
            bad[26:28] = b"\x12\x34"  # a UDP checksum no payload has here
            for _ in range(n):
                raw.sendto(bytes(bad), (B4, 0))
            for _ in range(good):  # checksum 0: none, accepted (IPv4)
                raw.sendto(_raw_udp(A4, B4, 4545, port, b"g" * 40), (B4, 0))
            got = collect(db, n)
            received = sum(1 for _ in range(good) if rx.recv(100))
        after = nstat(pair.b, "UdpInCsumErrors")
    finally:
        raw.close()
        rx.close()
    key = (pair.pb.ifindex, layout.DIR_INGRESS, 4, 17, A4, B4, 4545, port, "UDP_CSUM")
    assert got == {key: (n, n * (20 + 8 + 40))}
    assert after["UdpInCsumErrors"] - before["UdpInCsumErrors"] == n
    assert received == good


def test_unanswered_neighbour_is_an_egress_drop(quiet_pair: netns.Pair) -> None:
    """Datagrams from A to an on-link address nobody has: queued while ARP
    asks, dropped as NEIGH_FAILED when it gives up, on A's veth, egress."""
    p, n, ghost = quiet_pair, 5, "10.200.1.77"
    p.a.ip("link", "set", "dev", "va", "arp", "on")
    p.a.sysctl("net.ipv4.neigh.va.mcast_solicit", 1)
    p.a.sysctl("net.ipv4.neigh.va.ucast_solicit", 0)
    p.a.sysctl("net.ipv4.neigh.va.app_solicit", 0)
    p.a.sysctl("net.ipv4.neigh.va.retrans_time_ms", 100)
    s = udp_socket(p.a)
    try:
        with collector(p.a) as da:
            for _ in range(n):
                s.sendto(b"g" * 64, (ghost, 6666))
            got = collect(da, n, timeout=10)
        sport = s.getsockname()[1]
    finally:
        s.close()
    key = (p.pa.ifindex, layout.DIR_EGRESS, 4, 17, A4, ghost, sport, 6666, "NEIGH_FAILED")
    assert got == {key: (n, n * (20 + 8 + 64))}


def test_forwarded_drops_ingress_and_egress(router: netns.Router) -> None:
    """On a router: a FORWARD-chain drop is on the input device, ingress
    (skb->dev is still that device there); a forwarded packet whose next
    hop never answers ARP is on the output device, egress (skb_iif is the
    input device, not that one)."""
    r, n, ghost = router, 12, "10.200.3.77"
    r.router.exec("nft", "add", "table", "inet", "ftt")
    r.router.exec("nft", "add", "chain", "inet", "ftt", "fchain",
                  "{ type filter hook forward priority 0 ; }")  # fmt: skip
    r.router.exec("nft", "add", "rule", "inet", "ftt", "fchain", "udp", "dport", "7100",
                  "counter", "drop")  # fmt: skip
    r.router.ip("link", "set", "dev", "vr2", "arp", "on")
    for key, value in (("mcast_solicit", 1), ("ucast_solicit", 0), ("app_solicit", 0),
                       ("retrans_time_ms", 100)):  # fmt: skip
        r.router.sysctl(f"net.ipv4.neigh.vr2.{key}", value)
    s = udp_socket(r.client)
    try:
        with collector(r.router) as dr:
            for _ in range(n):
                s.sendto(b"F" * 40, ("10.200.3.2", 7100))
            forward = collect(dr, n)
            for _ in range(4):
                s.sendto(b"N" * 40, (ghost, 7200))
            neigh = collect(dr, 4, timeout=10)
        sport = s.getsockname()[1]
    finally:
        s.close()
    c4 = "10.200.2.1"
    assert forward == {
        (r.pr1.ifindex, layout.DIR_INGRESS, 4, 17, c4, "10.200.3.2", sport, 7100,
         "NETFILTER_DROP"): (n, n * 68)
    }  # fmt: skip
    assert neigh == {
        (r.pr2.ifindex, layout.DIR_EGRESS, 4, 17, c4, ghost, sport, 7200, "NEIGH_FAILED"): (4, 272)
    }


def test_unwatched_device_not_counted(pair: netns.Pair) -> None:
    """watch(): drops on a device not in the list are not counted; watching
    it counts them; an empty list is every device again."""
    n, port = 10, 9997
    s = udp_socket(pair.a)
    try:
        with collector(pair.b) as db:
            lo = pair.b.ifindex("lo")
            vb = pair.pb.ifindex
            db.watch([lo])
            for _ in range(n):
                s.sendto(b"u", (B4, port))
            unwatched = collect(db, 0, timeout=0, settle=0.5)
            db.watch([lo, vb])
            for _ in range(n):
                s.sendto(b"w", (B4, port))
            watched = collect(db, n)
            db.watch([])
            for _ in range(n):
                s.sendto(b"a", (B4, port))
            every = collect(db, n)
        sport = s.getsockname()[1]
    finally:
        s.close()
    key = (vb, layout.DIR_INGRESS, 4, 17, A4, B4, sport, port, "NO_SOCKET")
    assert unwatched == {}
    assert watched == {key: (n, n * 29)}
    assert every == {key: (n, n * 29)}


class _Recorded(DropCollector):
    """A DropCollector that keeps what its build was: the Request, and
    whether it came from the program cache or a compile."""

    def _wait(self, build: Build, checkpoint: Callable[[], None]) -> Loaded:
        loaded = super()._wait(build, checkpoint)
        self.request = build.request
        self.from_cache, self.compiled = build.from_cache, build.compiled
        return loaded


@contextlib.contextmanager
def own_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty program cache directory for this test alone (0700, root's)."""
    d = tempfile.mkdtemp(prefix="ftt-progcache-")
    monkeypatch.setenv("FLOWTOP_CACHE_DIR", d)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_one_build_serves_every_namespace(
    pair: netns.Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two collectors in two namespaces build the same Request (the cookie is
    a run-time value): the first compiles, the second loads the first's cache
    entry; each still counts only its own namespace's drops (datagrams to a
    closed port each way). A cookie of 0 in the map counts nothing."""
    n, port = 20, 9994
    sa, sb = udp_socket(pair.a), udp_socket(pair.b)
    try:
        with own_cache(monkeypatch) as cache:
            da, db = _Recorded(), _Recorded()
            try:
                for dc, ns in ((da, pair.a), (db, pair.b)):
                    with netns.entered(ns.name):
                        dc.begin()
                    dc.finish()
                entries = sorted(p.name for p in cache.iterdir())
                for _ in range(n):
                    sa.sendto(b"x" * 10, (B4, port))
                    sb.sendto(b"y" * 10, (A4, port))
                in_b = collect(db, n)
                in_a = collect(da, n)
                # the namespace filter closed: nothing counts, not everything
                assert db.loaded is not None
                set_netns_cookie(db.loaded.maps[NETNS_MAP], 0)
                for _ in range(n):
                    sa.sendto(b"z" * 10, (B4, port))
                closed = collect(db, 0, timeout=0, settle=0.5)
                lost = db.counters()
            finally:
                da.close()
                db.close()
        a_port, b_port = sa.getsockname()[1], sb.getsockname()[1]
    finally:
        sa.close()
        sb.close()
    assert da.request.to_json() == db.request.to_json()
    assert (da.compiled, da.from_cache) == (True, False)
    assert (db.compiled, db.from_cache) == (False, True)
    assert len(entries) == 1 and entries[0].endswith(".ftpc")
    assert da.netns_cookie != db.netns_cookie
    b_key = (pair.pb.ifindex, layout.DIR_INGRESS, 4, 17, A4, B4, a_port, port, "NO_SOCKET")
    a_key = (pair.pa.ifindex, layout.DIR_INGRESS, 4, 17, B4, A4, b_port, port, "NO_SOCKET")
    assert in_b == {b_key: (n, n * 38)}
    assert in_a == {a_key: (n, n * 38)}
    assert closed == {}
    assert lost["no_netns"] == 0


def test_full_map_counted(pair: netns.Pair) -> None:
    """A drops map of 4 entries and drops of 10 distinct keys: 4 keys
    counted, the other 6 drops in map_full; after a drain there is room."""
    socks = [udp_socket(pair.a) for _ in range(10)]
    sports = [s.getsockname()[1] for s in socks]
    try:
        with collector(pair.b, map_size=4) as db:
            for s in socks:
                s.sendto(b"f", (B4, 9996))
            got = collect(db, 4, settle=0.5)
            c = db.counters()
            socks[0].sendto(b"f", (B4, 9996))
            again = collect(db, 1)
    finally:
        for s in socks:
            s.close()
    assert len(got) == 4 and all(v == (1, 29) for v in got.values())
    assert {k[6] for k in got} < set(sports)
    assert c["map_full"] == 6
    key = (pair.pb.ifindex, layout.DIR_INGRESS, 4, 17, A4, B4, sports[0], 9996, "NO_SOCKET")
    assert again == {key: (1, 29)}


def test_counters_and_bad_input() -> None:
    """counters() names every slot of enum ft_drop_counter plus the derived
    ones; bad sizes and watch lists are one ConfigError."""
    dc = DropCollector()
    assert list(dc.counters()) == [*counters.DROPS_COUNTERS, *counters.DROPS_DERIVED]
    with pytest.raises(ConfigError):
        DropCollector(map_size=0)
    with pytest.raises(ConfigError):
        DropCollector(watch_max=0)
    with pytest.raises(ConfigError):
        DropCollector(watch_max=2).watch([1, 2, 3])
    with pytest.raises(ConfigError):
        dc.watch([0])
    assert DROP_RECORD.itemsize == 72


class _BadMember(DropCollector):
    def _request(self) -> Request:
        req = super()._request()
        return replace(req, btf_offsets=[*req.btf_offsets, ("FT_X", "sk_buff", "no_such", 4)])


def test_a_member_the_btf_lacks_is_one_line() -> None:
    """A member the kernel's BTF does not have fails the build with one line
    naming it, and leaves nothing attached."""
    dc = _BadMember()
    with pytest.raises(KernelFeatureError) as exc:
        dc.start()
    assert "sk_buff.no_such is not there" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not dc.started and dc.prog_fd == -1


_CHILD = """
import sys, time
from flowtop.kernel.drops import DropCollector
from flowtop.kernel.sockops import NETNS_MAP, set_netns_cookie
dc = DropCollector(netns_only=False)
dc.start()
print(dc.prog_id, flush=True)
time.sleep(60)
"""


def _prog_exists(prog_id: int) -> bool:
    try:
        fd = prog_fd_by_id(prog_id)
    except OSError as exc:
        assert exc.errno == errno.ENOENT
        return False
    os.close(fd)
    return True


def test_nothing_left_after_close_or_kill() -> None:
    """The program lives only through this process's fds and perf event:
    gone after close(), and after a SIGKILL of a process that ran one."""
    dc = DropCollector()
    dc.start()
    prog_id = dc.prog_id
    assert prog_id is not None and _prog_exists(prog_id)
    dc.close()
    dc.close()  # idempotent
    deadline = time.monotonic() + 5
    while _prog_exists(prog_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _prog_exists(prog_id)

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        child_id = int(line)
        assert _prog_exists(child_id)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _prog_exists(child_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _prog_exists(child_id)
