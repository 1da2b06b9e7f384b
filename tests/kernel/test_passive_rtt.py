"""Passive TCP RTT and retransmits on a router that is neither end.

client (vc) <-> (vr1) router (vr2) <-> (vs) server

The TC program runs in the router's namespace, on vr1, vr2 or both; the
client and server are ordinary Linux sockets, whose own view (`ss -ti`,
`nstat`) is the ground truth:

- RTT: an htb class on the router builds a standing queue under a bulk
  transfer (the receiver's window keeps it below the pfifo limit, so the
  queue and both ends' RTT are steady); the router's passive srtt (its two
  halves added) must be within 20% or 1 ms of the client socket's srtt read
  at the same moment.
- Handshake halves: a bulk transfer towards the client keeps a queue on
  vr1's egress, so the SYN/ACK of a new connection waits and the SYN does
  not. The router's client
  half (SYN/ACK -> ACK) must match the server socket's first RTT sample (its
  SYN/ACK -> ACK), the whole handshake the client socket's (SYN -> SYN/ACK),
  and the server half stays small.
- Retransmits: nftables drops a few % of the client's packets in the
  router's forward hook, which runs after TC ingress on vr1. A dropped
  segment was seen by the ingress hook before the drop, and its
  retransmission is seen again, so attached on vr1 the router sees every
  segment the client sent: its retransmit count must be within 10% of the
  client's TcpRetransSegs and its data segment count equal to the client
  socket's data_segs_out. Attached on vr2 only, the box sits after the drop:
  it sees a retransmission as such when it fills a hole below the highest
  sequence already seen, not after a tail loss; a capture of what reached
  the server is the ground truth there.
- Attached on both legs, each forwarded packet is seen twice, yet counted
  once (data_segs equals the sender's); attached on one leg, both halves are
  still there.
- Closed connections are reported once more and deleted; a connection map
  too small for the connections counts its LRU evictions.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from flowtop.kernel import layout, maps

from . import impair
from .netns import MAC_A, MAC_B, Capture, Captured, Netns, Pair, Router, entered

pytestmark = pytest.mark.kernel

C4, S4 = "10.200.2.1", "10.200.3.2"
C6, S6 = "fd00:200:2::1", "fd00:200:3::2"
PORT = 9100


# --------------------------------------------------------------------------- #
# the program in the router
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def tracker(r: Router, ifaces: list[str], conn_map_size: int = 1024) -> Iterator[Any]:
    """flowtop's TC program attached on `ifaces` of the router; detached and
    unloaded on exit."""
    from flowtop.kernel.attach import TcAttacher
    from flowtop.kernel.program import ProgramOptions, TcProgram

    prog = TcProgram(ProgramOptions(flow_map_size=4096, tcp_conn_map_size=conn_map_size))
    try:
        with entered(r.router.name):
            att = TcAttacher(prog.ingress.fd, prog.egress.fd)
        try:
            for name in ifaces:
                att.attach(r.router.ifindex(name), name)
            yield prog
        finally:
            att.detach_all()
            att.close()
    finally:
        prog.close()


def conn(prog: Any, sport: int, dport: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(key, value, direction of sport -> dport) of one connection in the map."""
    keys, vals = prog.tcp_conns()
    for k, v in zip(keys, vals, strict=True):
        ports = (int(k["port0"]), int(k["port1"]))
        if ports == (sport, dport):
            return k, v, 0
        if ports == (dport, sport):
            return k, v, 1
    raise AssertionError(f"connection {sport} -> {dport} not tracked: {keys}")


def sample(prog: Any, src: str, sport: int) -> np.ndarray:
    """The TCP_SAMPLE record whose sender is src:sport."""
    recs = prog.tcp_samples(time.monotonic_ns())
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    want = socket.inet_pton(fam, src).ljust(16, b"\0")
    for rec in recs:
        k = rec["key"]
        if int(k["sport"]) == sport and bytes(k["src"]) == want:
            return rec
    raise AssertionError(f"no TCP sample from {src}:{sport}: {recs}")


# --------------------------------------------------------------------------- #
# the ends' own view
# --------------------------------------------------------------------------- #


def ss_info(ns: Netns, sport: int) -> dict[str, float]:
    """rtt/minrtt (ms), data_segs_out, total retrans of one socket, from `ss -ti`."""
    out = ns.exec("ss", "-tinH", f"( sport = :{sport} )").stdout
    info: dict[str, float] = {}
    m = re.search(r"\brtt:([\d.]+)/([\d.]+)", out)
    if m:
        info["rtt_ms"] = float(m.group(1))
    for name in ("minrtt", "data_segs_out"):
        m = re.search(rf"\b{name}:([\d.]+)", out)
        if m:
            info[name] = float(m.group(1))
    m = re.search(r"\bretrans:\d+/(\d+)", out)
    info["retrans"] = float(m.group(1)) if m else 0.0
    assert "rtt_ms" in info, f"no socket with source port {sport} in {ns.name}: {out!r}"
    return info


def retrans_segs(ns: Netns) -> int:
    """The namespace's TcpRetransSegs (nstat, absolute, history untouched)."""
    out = ns.exec("nstat", "-saz", "TcpRetransSegs").stdout
    m = re.search(r"TcpRetransSegs\s+(\d+)", out)
    assert m, out
    return int(m.group(1))


def near(got_ms: float, want_ms: float, rel: float = 0.2, abs_ms: float = 1.0) -> bool:
    return abs(got_ms - want_ms) <= max(rel * want_ms, abs_ms)


# --------------------------------------------------------------------------- #
# traffic
# --------------------------------------------------------------------------- #


class Sink(threading.Thread):
    """Accepts one connection in `ns`, reads until EOF, closes."""

    def __init__(self, ns: Netns, addr: str, port: int, rcvbuf: int = 0) -> None:
        super().__init__(daemon=True)
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with entered(ns.name):
            self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:  # before listen: the accepted socket inherits it
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind((addr, port))
        self.lsock.listen(1)
        self.lsock.settimeout(20)
        self.received = 0
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            c, _ = self.lsock.accept()
            c.settimeout(20)
            while data := c.recv(1 << 16):
                self.received += len(data)
            c.close()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.lsock.close()


def connect(ns: Netns, dst: str, port: int, cc: str | None = None) -> socket.socket:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with entered(ns.name):
        s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(20)
    if cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    s.connect((dst, port))
    return s


class Bulk(threading.Thread):
    """Sends as fast as the connection takes it until stopped."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.stop = threading.Event()
        self.sent = 0
        self.start()

    def run(self) -> None:
        chunk = b"b" * 65536
        with contextlib.suppress(OSError):
            while not self.stop.is_set():
                self.sent += self.sock.send(chunk)


def in_order(ns: Netns, dev: str) -> None:
    """Steers everything dev receives to CPU 0 (RPS). A veth hands each packet
    to the backlog of the CPU that sent it, and a TCP sender transmits from
    the application's CPU and from the ACK softirq's: the router then sees
    a connection's segments out of order, every few thousand a few
    microseconds apart, which no retransmit detector can tell from a
    retransmission within a TSval tick. A NIC's RSS keeps a flow on one
    queue; this does the same for the veth."""
    ns.exec("sh", "-c", f"echo 1 > /sys/class/net/{dev}/queues/rx-0/rps_cpus")


def wait_received(sink: Sink, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sink.received < n:
        assert sink.error is None, sink.error
        assert time.monotonic() < deadline, f"server got {sink.received} of {n} bytes"
        time.sleep(0.01)


# --------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("family", "ifaces"),
    [(4, ["vr1", "vr2"]), (6, ["vr2"])],
    ids=["v4-both-legs", "v6-server-leg-only"],
)
def test_rtt_follows_queueing_delay(router: Router, family: int, ifaces: list[str]) -> None:
    """Bulk client -> server through a 20 Mbit/s htb on vr2: the standing queue
    (~50 ms, set by the server's window) is in both the client's srtt and the
    router's passive one, which must agree within 20% or 1 ms, three times."""
    r = router
    c_addr, s_addr = (C4, S4) if family == 4 else (C6, S6)
    impair.shape(r.router, "vr2", "20mbit")
    # The server's window (64 KiB of buffer) caps what is in flight, so the
    # queue stops growing at ~50 ms without drops; cubic keeps it there (the
    # default here, bbr, would drain it).
    sink = Sink(r.server, s_addr, PORT, rcvbuf=64 * 1024)
    with tracker(r, ifaces) as prog:
        sock = connect(r.client, s_addr, PORT, cc="cubic")
        sport = sock.getsockname()[1]
        bulk = Bulk(sock)
        try:
            # The queue fills in ~0.5 s; the passive srtt, one sample per RTT
            # and half with gain 1/8, follows within ~10 RTTs.
            time.sleep(2.0)
            pairs = []
            for _ in range(3):
                ss = ss_info(r.client, sport)["rtt_ms"]
                rec = sample(prog, c_addr, sport)
                pairs.append((rec["srtt_us"] / 1000, ss))
                time.sleep(0.3)
            _k, v, d = conn(prog, sport, PORT)
        finally:
            bulk.stop.set()
            sock.close()
            bulk.join(5)
    sink.join(5)
    assert sink.error is None and sink.received > 1_000_000, (sink.error, sink.received)
    h = v["side"]["rtt"]
    assert all(h["srtt_ns"] > 0), h
    # The queue is on the server's side of the router: that half holds it.
    assert h["srtt_ns"][d] > 10 * h["srtt_ns"][1 - d], h["srtt_ns"]
    assert rec["rtt_samples"] >= 10, rec
    assert rec["server"] == 1 and v["client"] == d + 1, (rec, v["client"])
    assert 0 < rec["min_rtt_us"] <= rec["srtt_us"], rec
    ms = [p for p, _ in pairs]
    assert min(ms) > 20, f"no queueing delay built up: {pairs}"
    bad = [(p, s) for p, s in pairs if not near(p, s)]
    assert not bad, f"passive vs client srtt (ms): {pairs}"


def test_handshake_halves(router: Router) -> None:
    """A standing queue on vr1 towards the client (a bulk transfer from the
    server through a 20 Mbit/s htb, ~50 ms, held by the client's window so
    nothing is dropped): the SYN/ACK of a new connection waits in it, the
    SYN does not. The router's client half must match the server socket's
    SYN/ACK -> ACK RTT, the whole handshake the client socket's SYN ->
    SYN/ACK RTT, and the server half stays small."""
    r = router
    impair.shape(r.router, "vr1", "20mbit")
    Sink(r.client, C4, PORT + 1, rcvbuf=64 * 1024)  # takes the bulk transfer
    sink = Sink(r.server, S4, PORT)
    with tracker(r, ["vr1", "vr2"]) as prog:
        bulk = Bulk(connect(r.server, C4, PORT + 1, cc="cubic"))
        try:
            time.sleep(1.0)  # the queue fills
            sock = connect(r.client, S4, PORT)
            sport = sock.getsockname()[1]
            client_ss = ss_info(r.client, sport)
            server_ss = ss_info(r.server, PORT)
            sock.sendall(b"x" * 1000)
            wait_received(sink, 1000)
            _k, v, d = conn(prog, sport, PORT)
            rec = sample(prog, C4, sport)
            sock.close()
        finally:
            bulk.stop.set()
            bulk.sock.close()
            bulk.join(5)
    assert v["client"] == d + 1 and v["flags"] == 0, v
    assert 0 < v["syn_ns"] < v["synack_ns"] < v["ack_ns"], v
    server_half = (v["synack_ns"] - v["syn_ns"]) / 1e6
    client_half = (v["ack_ns"] - v["synack_ns"]) / 1e6
    total = server_half + client_half
    assert client_half > 10, f"no queue in front of the SYN/ACK: {client_half:.3f} ms"
    assert 0 < server_half < 2, f"server half {server_half:.3f} ms on an idle path"
    assert near(client_half, server_ss["rtt_ms"]), (client_half, server_ss)
    assert near(total, client_ss["rtt_ms"]), (total, client_ss)
    # The handshake is each half's first sample.
    h = v["side"]["rtt"]
    assert h["samples"][d] >= 1 and h["samples"][1 - d] >= 1, h
    assert h["min_ns"][d] <= v["synack_ns"] - v["syn_ns"], h
    assert rec["server"] == 1 and rec["data_segs"] == 1, rec


@pytest.mark.parametrize(
    ("family", "ifaces", "gso", "percent"),
    [(4, ["vr1", "vr2"], True, 10), (6, ["vr1"], False, 3)],
    ids=["v4-both-legs-gso", "v6-client-leg-only"],
)
def test_retransmits_under_loss(
    router: Router, family: int, ifaces: list[str], gso: bool, percent: int
) -> None:
    """Some of the client's packets dropped in the router's forward hook (after
    TC ingress on vr1). The router counts the client's retransmissions within
    10% of its TcpRetransSegs, its data segments exactly (double sightings on
    vr1 ingress and vr2 egress counted once). With GSO the client hands over
    64 KiB super-packets: the drop takes a whole one, and the retransmissions
    come as super-packets too; both count as their segments. Then the
    connection closes and tcp_samples() deletes it after reporting it once
    more."""
    r = router
    c_addr, s_addr = (C4, S4) if family == 4 else (C6, S6)
    payload = 4 * 1024 * 1024
    if not gso:  # a segment per packet: many independent losses
        r.client.ethtool("vc", tso=False, gso=False)
        r.router.ethtool("vr1", gro=False)
    in_order(r.router, "vr1")
    sink = Sink(r.server, s_addr, PORT)
    with tracker(r, ifaces) as prog, impair.loss(r.router, percent, daddr=s_addr):
        before = retrans_segs(r.client)
        server_before = retrans_segs(r.server)
        sock = connect(r.client, s_addr, PORT)
        sport = sock.getsockname()[1]
        sock.sendall(b"d" * payload)
        wait_received(sink, payload)
        time.sleep(0.05)  # the last ACKs reach the client
        ss = ss_info(r.client, sport)
        sent_again = retrans_segs(r.client) - before
        dropped = impair.dropped(r.router)
        rec = sample(prog, c_addr, sport)
        sock.close()
        sink.join(5)
        time.sleep(0.3)  # FIN, FIN, last ACK
        _k, v, d = conn(prog, sport, PORT)
        # The server sends no data, but when the client's ACK of its FIN is
        # dropped it sends the FIN again.
        server_again = retrans_segs(r.server) - server_before
        reads = [prog.tcp_samples(time.monotonic_ns()) for _ in range(2)]
        left, _ = prog.tcp_conns()
        third = prog.tcp_samples(time.monotonic_ns())
        counters = prog.counters()
    assert dropped > (1 if gso else 10), dropped
    assert ss["retrans"] == sent_again, (ss, sent_again)
    got = int(rec["retrans"])
    assert abs(got - sent_again) <= 0.1 * sent_again, (
        f"router saw {got} retransmitted segments, the client sent {sent_again}"
    )
    assert rec["data_segs"] == ss["data_segs_out"], (rec["data_segs"], ss)
    assert rec["server"] == 1 and rec["source"] == layout.TCP_SOURCE_PASSIVE, rec
    # The server sent no data: no record for its direction.
    assert v["side"]["half"]["data_segs"][1 - d] == 0, v
    assert v["side"]["half"]["retrans"][1 - d] == server_again, (v, server_again)
    # Closed: FIN both ways; reported when seen closed and once more, then
    # deleted.
    assert all(v["side"]["half"]["flags"] & layout.HALF_FIN), v["side"]["half"]["flags"]
    for recs in reads:  # (a lost FIN is sent again after `rec` was read)
        mine = [x for x in recs if x["key"]["sport"] == sport]
        assert len(mine) == 1 and mine[0]["retrans"] >= got, recs
    assert sport not in left["port0"] and sport not in left["port1"], left
    assert not any(int(x["key"]["sport"]) == sport for x in third), third
    assert counters["tcp_conn_new"] == 1 and counters["tcp_conn_evicted"] == 0, counters


def seen_again(frames: list[Captured], src: str, sport: int) -> tuple[int, int]:
    """(data segments, segments whose end does not pass the highest end seen
    before them) among the captured IPv4 frames from src:sport: what a box at
    the capture point can tell about retransmissions."""
    want = socket.inet_aton(src)
    segs = again = 0
    high: int | None = None
    for f in frames:
        d = f.data
        if f.outgoing or len(d) < 54 or d[12:14] != b"\x08\x00" or d[23] != 6:
            continue
        ihl = (d[14] & 0x0F) * 4
        tcp = 14 + ihl
        if d[26:30] != want or struct.unpack("!H", d[tcp : tcp + 2])[0] != sport:
            continue
        seq = struct.unpack("!I", d[tcp + 4 : tcp + 8])[0]
        flags = d[tcp + 13]
        payload = struct.unpack("!H", d[16:18])[0] - ihl - (d[tcp + 12] >> 4) * 4
        length = payload + (flags & 0x01) + ((flags & 0x02) >> 1)
        if length == 0:
            continue
        end = seq + length
        segs += payload > 0
        if high is None or ((end - high) & 0xFFFFFFFF) in range(1, 1 << 31):
            high = end
        else:
            again += 1
    return segs, again


def test_after_the_drop(router: Router) -> None:
    """Attached on vr2 only, the box sits after the drop. A dropped segment
    never reaches it, but its retransmission fills a hole below the highest
    sequence the box has seen, and counts as sent again; only when nothing
    behind the lost segment got through first (a tail loss) does the
    retransmission look new. Ground truth: the frames the server received
    (a capture on vs, GRO off), run through that rule."""
    r = router
    payload = 2 * 1024 * 1024
    r.client.ethtool("vc", tso=False, gso=False)
    r.router.ethtool("vr1", gro=False)
    r.server.ethtool("vs", gro=False)
    in_order(r.router, "vr1")
    sink = Sink(r.server, S4, PORT)
    cap = Capture(r.server, "vs", snap=80)
    try:
        with tracker(r, ["vr2"]) as prog, impair.loss(r.router, 3, daddr=S4):
            before = retrans_segs(r.client)
            sock = connect(r.client, S4, PORT)
            sport = sock.getsockname()[1]
            sock.sendall(b"d" * payload)
            wait_received(sink, payload)
            time.sleep(0.05)
            ss = ss_info(r.client, sport)
            sent_again = retrans_segs(r.client) - before
            dropped = impair.dropped(r.router)
            rec = sample(prog, C4, sport)
            sock.close()
    finally:
        frames = cap.stop()
    segs, again = seen_again(frames, C4, sport)
    assert dropped > 5, dropped
    # (The rule drops pure ACKs too: "dropped" bounds the data segments lost.)
    assert ss["data_segs_out"] - dropped <= segs < ss["data_segs_out"], (segs, ss, dropped)
    assert (rec["data_segs"], rec["retrans"]) == (segs, again), (rec, segs, again)
    assert again <= sent_again, (again, sent_again)


def test_full_connection_map_is_counted(router: Router) -> None:
    """300 short connections through a router whose connection map holds 64,
    not read meanwhile: each connection is inserted once, and what the LRU
    map evicted to make room shows up as tcp_conn_evicted."""
    r = router
    n = 300
    with tracker(r, ["vr1", "vr2"], conn_map_size=64) as prog:
        with entered(r.server.name):
            lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind((S4, PORT))
        lsock.listen(n)
        try:
            for _ in range(n):
                c = connect(r.client, S4, PORT)
                c.sendall(b"x")
                a, _ = lsock.accept()
                assert a.recv(1) == b"x"
                a.close()
                c.close()
        finally:
            lsock.close()
        time.sleep(0.2)
        recs = prog.tcp_samples(time.monotonic_ns())
        live, _ = prog.tcp_conns()
        counters = prog.counters()
    assert counters["tcp_conn_new"] == n, counters
    assert counters["tcp_conn_map_full"] == 0, counters
    assert len(recs) <= 64 and 0 < len(live) <= 64, (len(recs), len(live))
    # Nothing was deleted yet (closed ones go at the second read).
    assert counters["tcp_conn_evicted"] == n - len(recs), (counters, len(recs))


# --------------------------------------------------------------------------- #
# crafted segments: what the per-CPU last-packet cache may skip
# --------------------------------------------------------------------------- #

CC, SS = "10.200.9.1", "10.200.9.2"  # not B's: its stack drops them after TC
CP, SP = 40000, 5201


def _seg(
    src: str, dst: str, sport: int, dport: int, flags: str, seq: int, ack: int,
    ts: tuple[int, int], payload: int = 0,
) -> bytes:  # fmt: skip
    from scapy.all import IP, TCP, Ether, Raw  # type: ignore[import-untyped]

    opts = [("NOP", None), ("NOP", None), ("Timestamp", ts)]
    tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, options=opts)
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst) / tcp / Raw(b"d" * payload))


def _c2s(flags: str, seq: int, ack: int, ts: tuple[int, int], payload: int = 0) -> bytes:
    return _seg(CC, SS, CP, SP, flags, seq, ack, ts, payload)


def _s2c(flags: str, seq: int, ack: int, ts: tuple[int, int], payload: int = 0) -> bytes:
    return _seg(SS, CC, SP, CP, flags, seq, ack, ts, payload)


@contextlib.contextmanager
def _on_vb_ingress(p: Pair) -> Iterator[Any]:
    """A small TcProgram attached to vb (ingress and egress) for crafted
    segments; detached and closed on exit."""
    from flowtop.kernel.attach import TcAttacher
    from flowtop.kernel.program import ProgramOptions, TcProgram

    prog = TcProgram(ProgramOptions(flow_map_size=4096, tcp_conn_map_size=1024))
    try:
        with entered(p.b.name):
            att = TcAttacher(prog.ingress.fd, prog.egress.fd)
        try:
            att.attach(p.pb.ifindex, p.pb.name)
            yield prog
        finally:
            att.detach_all()
            att.close()
    finally:
        prog.close()


def test_repeated_acks_skip_nothing_that_counts(quiet_pair: Pair) -> None:
    """A crafted connection, both directions sent by A over va, the program
    on vb's ingress: one observation point for both. Every pure ACK is sent
    four times with the same timestamps, as a bulk receiver does within a
    clock tick; the tracker skips those repeats (the last-packet cache) and
    echoes that cannot end a sample. Nothing they could change may differ
    from what was sent: data segments and retransmissions per direction,
    the handshake, FIN both ways, and exactly the RTT samples the
    timestamps allow (each direction's TSval stops moving after its first
    sample, so no second one can start, however long sending takes)."""
    from . import frames as fr

    p = quiet_pair
    ack3 = [_c2s("A", 1001, 5001, (101, 900))] * 4
    frames = [
        _c2s("S", 1000, 0, (100, 0)),
        _s2c("SA", 5000, 1001, (900, 100)),
        *ack3,  # completes the handshake: its ACK half
        _c2s("PA", 1001, 5001, (102, 900), 100),  # new TSval: starts a sample
        _c2s("PA", 1101, 5001, (102, 900), 100),  # same TSecr: echo skipped
        *[_s2c("A", 5001, 1201, (901, 102))] * 4,  # echoes 102: ends it, 3 repeats
        _c2s("PA", 1001, 5001, (102, 901), 100),  # sent again
        _c2s("PA", 1201, 5001, (102, 901), 100),
        _s2c("PA", 5001, 1301, (902, 102), 50),  # the server's sample starts
        *[_c2s("A", 1301, 5051, (102, 902))] * 4,  # ... and ends
        _c2s("FA", 1301, 5051, (102, 902)),
        _s2c("FA", 5051, 1302, (902, 102)),  # (sent again, a FIN would count)
        *[_c2s("A", 1302, 5052, (102, 902))] * 4,
    ]
    with _on_vb_ingress(p) as prog:
        assert fr.send_frames(p.a, p.pa.name, frames) == len(frames)
        time.sleep(0.3)
        keys, vals = prog.tcp_conns()
        counters = prog.counters()
    assert len(keys) == 1, keys
    k, v = keys[0], vals[0]
    c = 0 if (int(k["port0"]), int(k["port1"])) == (CP, SP) else 1  # the client's direction
    half, rtt = v["side"]["half"], v["side"]["rtt"]
    assert counters["tcp_conn_new"] == 1 and counters["tcp_conn_map_full"] == 0, counters
    assert v["client"] == c + 1, v["client"]
    assert v["syn_ns"] and v["synack_ns"] and v["ack_ns"], v
    assert v["flags"] == 0, v["flags"]  # no RST, nothing sent twice in the handshake
    assert (int(half["data_segs"][c]), int(half["retrans"][c])) == (4, 1), half
    assert (int(half["data_segs"][1 - c]), int(half["retrans"][1 - c])) == (1, 0), half
    assert half["flags"][c] & layout.HALF_FIN and half["flags"][1 - c] & layout.HALF_FIN, half
    # Each half: its handshake sample and one timestamp sample, none pending.
    assert [int(n) for n in rtt["samples"]] == [2, 2], rtt
    assert [int(t) for t in half["ts_time_ns"]] == [0, 0], half


# --------------------------------------------------------------------------- #
# crafted segments on two CPUs: deferred data segments
# --------------------------------------------------------------------------- #

CLOCK_MONOTONIC_COARSE = 6  # the kernel's coarse clock, the tracker's "tick"


def _coarse_ns() -> int:
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


def _next_tick() -> int:
    """Waits for the coarse clock to move; its new reading."""
    t0 = _coarse_ns()
    while (t := _coarse_ns()) == t0:
        pass
    return t


def test_deferred_segments_across_cpus(quiet_pair: Pair) -> None:
    """One direction's data segments sent from two CPUs in turn, all with
    the same timestamps and within one clock tick: the in-order ones a CPU
    may defer (counted in its tcp_pkts entry, not in the connection) must
    not hide a retransmission from the other CPU, either way round:
    CPU 0 defers 1101..1301, CPU 1 then sees 1101 again (a retransmission
    only if it takes CPU 0's sequence progress), then CPU 0 sees 1301 again
    after CPU 1 sent it (a retransmission only if CPU 1 ended CPU 0's
    deferral). The last segment stays deferred in CPU 1's entry: the raw
    connection lacks it, the samples userspace makes (tcp_samples) have it."""
    from . import frames as fr

    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    c0, c1 = cpus
    p = quiet_pair
    ts = (102, 900)

    def data(port: int, seq: int) -> bytes:
        return _seg(CC, SS, port, SP, "PA", seq, 5001, ts, 100)

    def script(port: int) -> list[tuple[int, bytes]]:
        return [
            (c0, _seg(CC, SS, port, SP, "S", 1000, 0, (100, 0))),
            (c0, _seg(SS, CC, SP, port, "SA", 5000, 1001, (900, 100))),
            (c0, _seg(CC, SS, port, SP, "A", 1001, 5001, (101, 900))),
            (c0, data(port, 1001)),  # CPU 0 owns the direction
            (c0, data(port, 1101)),  # deferred
            (c0, data(port, 1201)),  # deferred
            (c1, data(port, 1101)),  # sent again
            (c1, data(port, 1301)),  # CPU 1 owns it
            (c0, data(port, 1301)),  # sent again
            (c1, data(port, 1401)),
            (c1, data(port, 1501)),  # deferred, and left in CPU 1's entry
        ]

    with _on_vb_ingress(p) as prog:
        with fr.Sender(p.a, p.pa.name) as sender, fr.PinnedSenders(sender, cpus) as snd:
            for attempt in range(50):
                port = CP + 100 + attempt
                frames = script(port)
                t = _next_tick()
                for cpu, frame in frames:
                    snd.send(cpu, frame)
                if _coarse_ns() == t:  # all of it in one tick
                    break
            else:
                pytest.fail("no attempt sent its segments within one clock tick")
        time.sleep(0.2)
        keys, vals = prog.tcp_conns()
        samples = prog.tcp_samples(time.monotonic_ns())
        slots = prog.options.cache_slots
        rows = np.zeros((maps.cpu_ids(), slots), dtype=layout.TCP_PKT)
        maps.read_rows(prog.map_fd("tcp_pkts"), 0, slots, slots, rows)
    mine = [i for i in range(len(keys)) if port in (int(keys[i]["port0"]), int(keys[i]["port1"]))]
    assert len(mine) == 1, keys
    k, v = keys[mine[0]], vals[mine[0]]
    c = 0 if int(k["port0"]) == port else 1  # the client's direction
    half = v["side"]["half"]
    assert int(half["retrans"][c]) == 2, half
    # 8 data segments were sent; the last one is still in CPU 1's entry.
    assert int(half["data_segs"][c]) == 7, half
    flow = (rows["key"]["sport"] == port) & (rows["deferred"] > 0)
    assert [(cpu, int(rows["deferred"][cpu][flow[cpu]].sum())) for cpu in cpus] == [
        (c0, 0),
        (c1, 1),
    ], rows["deferred"][flow]
    rec = samples[samples["key"]["sport"] == port]
    assert len(rec) == 1, samples
    assert (int(rec["data_segs"][0]), int(rec["retrans"][0])) == (8, 2), rec
