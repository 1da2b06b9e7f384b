"""The network health verdict end to end: a router forwarding TCP to two
servers, loss induced towards one of them only.

client (vc) <-> (vr1) router (vr2) <-> (vs) server     10.200.3.0/24
                         router (vr3) <-> (vs2) server2 10.200.4.0/24

flowtop runs in the router namespace (the engine in this process, attached
to all three router legs); the router is neither end of any connection, so
every figure comes from the passive RTT/retransmit code in the TC program.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from flowtop.config import CollectorConfig, Config
from flowtop.core import tcphealth
from flowtop.core.engine import Engine
from flowtop.core.tcphealth import HealthGroup
from flowtop.run.lifecycle import Run

from . import impair
from .netns import Netns, Router, entered

# struct tcp_info (linux/tcp.h): its length up to tcpi_total_retrans, a u32 at byte 100.
TCPI_TOTAL_RETRANS = 100
TCP_INFO_LEN = TCPI_TOTAL_RETRANS + 4

pytestmark = pytest.mark.kernel

S1, S2 = "10.200.3.2", "10.200.4.2"
G1, G2 = "10.200.3.0/24", "10.200.4.0/24"


class Sink(threading.Thread):
    """Accepts connections and reads them until EOF (the server end)."""

    def __init__(self, ns: Netns, addr: str, port: int) -> None:
        super().__init__(daemon=True)
        with entered(ns.name):
            self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((addr, port))
        self.lsock.listen(4)
        self.lsock.settimeout(60)
        self.start()

    def run(self) -> None:
        try:
            conn, _ = self.lsock.accept()
            conn.settimeout(60)
            while conn.recv(1 << 16):
                pass
            conn.close()
        except OSError:
            pass
        finally:
            self.lsock.close()


class PacedSender(threading.Thread):
    """Client end: sends `rate` bytes/s in small writes until stopped."""

    def __init__(self, ns: Netns, dst: str, port: int, rate: int = 1_000_000) -> None:
        super().__init__(daemon=True)
        with entered(ns.name):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect((dst, port))
        self.rate = rate
        self.stop = threading.Event()
        self.start()

    def total_retrans(self) -> int:
        """Segments this socket's kernel sent again so far (TCP_INFO
        tcpi_total_retrans, as `ss -ti` shows it): the ground truth for a
        loss-free path, where a starved scheduler can still make it send a
        tail loss probe or time out (a real retransmission)."""
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
        return int(struct.unpack_from("I", info, TCPI_TOTAL_RETRANS)[0])

    def run(self) -> None:
        chunk = b"d" * (self.rate // 100)
        try:
            while not self.stop.wait(0.01):
                self.sock.sendall(chunk)
        except OSError:
            pass
        finally:
            self.sock.close()


@contextmanager
def engine_in(ns: Netns, interfaces: tuple[str, ...]) -> Iterator[Engine]:
    """A Run's engine in ns. Without drop reasons: nftables on the router
    stands in for loss somewhere in the network (there is no netem here);
    with them, flowtop rightly blames the box itself for those drops
    ("dropped on this box", tests/kernel/test_drops_view.py), which is not
    what these tests look at."""
    cfg = CollectorConfig(interfaces=interfaces, interval=1.0, drops=False)
    with entered(ns.name):
        run = Run(Config(collector=cfg)).start()
    with run:
        yield run.engine


def group(engine: Engine, scope: str, name: str) -> HealthGroup | None:
    assert engine.tcp_health is not None
    for g in engine.tcp_health.groups():
        if g.scope == scope and g.group == name:
            return g
    return None


def step_until(engine: Engine, cond: object, limit: float) -> float:
    """Steps the engine once a second until cond() holds; seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
        engine.step()
        if cond():  # type: ignore[operator]
            return time.monotonic() - t0
    pytest.fail(f"not within {limit:g} s: {engine.tcp_health.groups()}")  # type: ignore[union-attr]


def test_loss_towards_one_server_degrades_that_group_only(router: Router) -> None:
    r = router
    s2, _pr3, _ps2 = impair.add_server(r)
    senders: list[PacedSender] = []
    try:
        with engine_in(r.router, ("vr1", "vr2", "vr3")) as engine:
            sinks = [Sink(r.server, S1, 5001), Sink(s2, S2, 5002)]
            senders = [PacedSender(r.client, S1, 5001), PacedSender(r.client, S2, 5002)]

            def both_measured() -> bool:
                g1, g2 = group(engine, "remote", G1), group(engine, "remote", G2)
                return bool(g1 and g2 and g1.data_segments > 200 and g2.data_segments > 200)

            step_until(engine, both_measured, 10)
            for name in (G1, G2):
                g = group(engine, "remote", name)
                assert g is not None and g.verdict == "healthy", g
                # veth, no queue: well under 5 ms (application-limited senders
                # must not show their pacing as RTT)
                assert g.rtt_p50_us is not None and g.rtt_p50_us < 5000, g

            with impair.loss(r.router, 5, daddr=S2):

                def s2_degraded() -> bool:
                    g = group(engine, "remote", G2)
                    return g is not None and g.verdict == "degraded"

                took = step_until(engine, s2_degraded, 10)
                bad = group(engine, "remote", G2)
                ok = group(engine, "remote", G1)
                assert bad is not None and ok is not None
                assert bad.reason.endswith(f"retransmits to {G2}"), bad
                assert bad.retransmit_ratio is not None and bad.retransmit_ratio > 0.01
                # no loss on its path: what the sender itself sent again, at most
                sent_again = senders[0].total_retrans()
                assert ok.verdict == "healthy" and ok.retransmits <= sent_again, (ok, sent_again)
                # Only s2's traffic crosses vr3: that leg is degraded, named.
                vr3 = group(engine, "interface", "vr3")
                assert vr3 is not None and vr3.verdict == "degraded", vr3
                assert vr3.reason.endswith(f"on vr3 to {G2}"), vr3
                # vr1 carries both: one destination is fine, so not the link.
                vr1 = group(engine, "interface", "vr1")
                assert vr1 is not None and vr1.verdict == "healthy", vr1
                assert f"1 of 2 destinations degraded ({G2})" in vr1.reason, vr1
                assert impair.dropped(r.router) > 0
                print(f"degraded after {took:.1f} s: {bad.reason}")

            def s2_healthy() -> bool:
                g = group(engine, "remote", G2)
                return g is not None and g.verdict == "healthy"

            step_until(engine, s2_healthy, tcphealth.WINDOW + 5)
            for s in senders:
                s.stop.set()
            for s in (*senders, *sinks):
                s.join(10)
    finally:
        for s in senders:
            s.stop.set()
        s2.delete()
