"""TCP health through `flowtop dump --json`, for a connection of the host
flowtop runs on (sock_ops): RTT against `ss -ti`, retransmits against
`nstat TcpRetransSegs`, and the health lines."""

from __future__ import annotations

import socket
import threading

import pytest

from . import impair
from .dump import run_dump
from .netns import Pair, entered
from .test_sockops import nstat, ss_info

pytestmark = pytest.mark.kernel

A, B = "10.200.1.1", "10.200.1.2"


def test_local_connection_rtt_and_retransmits(quiet_pair: Pair) -> None:
    p = quiet_pair
    # Segments on the wire, one per packet: the loss rule drops segments, not
    # whole 64 KiB aggregates (a handful per run).
    p.a.ethtool("va", tso=False, gso=False)
    p.b.ethtool("vb", gro=False)
    with entered(p.b.name):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind((B, 5201))
    lsock.listen(1)
    got = {"bytes": 0}

    def serve() -> None:
        conn, _ = lsock.accept()
        while data := conn.recv(1 << 16):
            got["bytes"] += len(data)
        conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    seen: dict[str, object] = {}
    nbytes = 4_000_000

    def traffic() -> None:
        before = nstat(p.a, "TcpRetransSegs", "TcpExtTCPTimeouts")
        with entered(p.a.name):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect((B, 5201))
        # Loss on the receiver's input, after A's hooks: A retransmits.
        with impair.loss(p.b, 3, hook="input"):
            chunk = b"x" * 65536
            for _ in range(nbytes // len(chunk)):
                c.sendall(chunk)
            # All of it acknowledged: the socket's figures are final.
            while ss_info(p.a, c)["bytes_acked"] < nbytes // len(chunk) * len(chunk):
                threading.Event().wait(0.05)
        seen["ss"] = ss_info(p.a, c)
        seen["sport"] = c.getsockname()[1]
        after = nstat(p.a, "TcpRetransSegs", "TcpExtTCPTimeouts")
        seen["retrans"] = after["TcpRetransSegs"] - before["TcpRetransSegs"]
        # 3% loss now and then loses a retransmission too, which only an RTO
        # repairs: the kernel's count is the ground truth, not 0.
        seen["rto"] = after["TcpExtTCPTimeouts"] - before["TcpExtTCPTimeouts"]
        c.close()
        server.join(10)
        threading.Event().wait(1.5)  # one more interval: the close is drained

    try:
        res = run_dump(p.a, ["va"], traffic, settle=0.5)
    finally:
        lsock.close()
    out = res.flow(iface="va", direction="egress", proto=6, src=A, dst=B, dport=5201)
    back = res.flow(iface="va", direction="ingress", proto=6, src=B, dst=A, sport=5201)
    assert out is not None and back is not None, res.flows
    assert out["sport"] == seen["sport"]
    assert out["rtt_source"] == "sockops" and back["rtt_source"] == "sockops", res.stderr
    ss = seen["ss"]
    assert isinstance(ss, dict)
    assert seen["retrans"] > 0, "the loss rule dropped nothing"
    # The sender's own count, exactly: nothing else ran in A's namespace.
    assert out["retransmits"] == seen["retrans"] == ss["retrans"], (out, seen)
    assert back["retransmits"] is None  # B's retransmits are not A's to know
    assert out["rtt_us"] == pytest.approx(ss["srtt_us"], rel=0.2, abs=1000), (out, ss)
    assert out["rtt_min_us"] == ss["min_rtt_us"], (out, ss)
    assert out["rto"] == seen["rto"], (out, seen)
    health = [h for h in res.records if h.get("type") == "health"]
    assert {(h["scope"], h["group"]) for h in health} >= {
        ("interface", "va"),
        ("remote", "10.200.1.0/24"),
    }, health
    remote = next(h for h in health if h["scope"] == "remote")
    assert remote["retransmits"] == seen["retrans"]
    assert remote["verdict"] == "degraded", remote
    # "2.4% retransmits to ...", or "..., 1 RTO to ..." when a lost
    # retransmission needed a timeout (the kernel's count says whether one did).
    assert "% retransmits" in remote["reason"], remote
    assert remote["reason"].endswith(" to 10.200.1.0/24"), remote
    assert ("RTO" in remote["reason"]) == (seen["rto"] > 0), (remote, seen)
