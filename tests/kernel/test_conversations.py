"""Conversations through a router: one row per connection, each direction counted once.

client (vc) <-> (vr1) router (vr2) <-> (vs) server

One run, two collectors at once: `dump --conversations --json` on the router
over both legs, and on the client's vc only (the host's view). A TCP
connection and a UDP exchange cross the router; the ground truth of each
direction's IP bytes and packets is an AF_PACKET capture (the frames the TC
hooks see: offloads off, so one frame is one segment) and, for UDP, the
datagrams the test sent.
"""

from __future__ import annotations

from typing import Any

import pytest

from .dump import DumpResult, run_dumps
from .expect import TcpServer, drain, tcp_transfer, udp_client, udp_sink
from .netns import Capture, Captured, Router, ip_lengths

pytestmark = pytest.mark.kernel

C4, S4 = "10.200.2.1", "10.200.3.2"
# The client's TCP port is below the server's: only the SYN's sender
# (FT_TCP_SYN_ONLY) names the client; the ephemeral-port rule would pick the
# other end.
TCP_CPORT, TCP_SPORT = 5000, 9000
UDP_CPORT, UDP_SPORT = 43000, 7000
UP_PAYLOAD, DOWN_PAYLOAD = 300_000, 120_000
UP_DGRAMS = [10, 100, 1000, 1472, 64]
DOWN_DGRAMS = [20, 700, 3]


def conversations(res: DumpResult, proto: int, client: str, cport: int) -> list[dict[str, Any]]:
    return [
        r
        for r in res.records
        if r.get("type") == "conversation"
        and r["proto"] == proto
        and r["client"] == client
        and r["client_port"] == cport
    ]


def way(frames: list[Captured], outgoing: bool, src: str, dst: str, proto: int, sp: int, dp: int):
    """(packets, IP bytes) of one direction of a flow in a capture."""
    lens = ip_lengths(frames, outgoing, src, dst, proto, sp, dp)
    return len(lens), sum(lens)


def test_router_and_host_see_one_row_per_connection(router: Router) -> None:
    r = router
    for ns, ifname in ((r.client, "vc"), (r.server, "vs")):
        ns.ethtool(ifname, tso=False, gso=False, gro=False)
    for ifname in ("vr1", "vr2"):
        r.router.ethtool(ifname, tso=False, gso=False, gro=False)
    server = TcpServer(r.server, S4, TCP_SPORT, reply=DOWN_PAYLOAD)
    sink = udp_sink(r.server, S4, UDP_SPORT)
    uc = udp_client(r.client, S4, UDP_CPORT)

    def traffic() -> None:
        sport = tcp_transfer(r.client, S4, TCP_SPORT, UP_PAYLOAD, server, sport=TCP_CPORT)
        assert sport == TCP_CPORT
        for n in UP_DGRAMS:
            uc.sendto(b"u" * n, (S4, UDP_SPORT))
        assert drain(sink, len(UP_DGRAMS)) == len(UP_DGRAMS)
        for n in DOWN_DGRAMS:
            sink.sendto(b"d" * n, (C4, UDP_CPORT))
        assert drain(uc, len(DOWN_DGRAMS)) == len(DOWN_DGRAMS)

    cap_r = Capture(r.router, "vr1", snap=64)
    cap_c = Capture(r.client, "vc", snap=64)
    try:
        (on_router, on_host), _ = run_dumps(
            [(r.router, ["vr1", "vr2"]), (r.client, ["vc"])], traffic, ["--conversations"]
        )
    finally:
        rframes = cap_r.stop()
        cframes = cap_c.stop()
        sink.close()
        uc.close()

    # Ground truth: on vr1 the client -> server way arrives, the reply leaves.
    tcp_up = way(rframes, False, C4, S4, 6, TCP_CPORT, TCP_SPORT)
    tcp_down = way(rframes, True, S4, C4, 6, TCP_SPORT, TCP_CPORT)
    assert tcp_up[1] > UP_PAYLOAD and tcp_down[1] > DOWN_PAYLOAD  # headers on top
    # The client's own capture saw the same frames (routing changes no length).
    assert way(cframes, True, C4, S4, 6, TCP_CPORT, TCP_SPORT) == tcp_up
    assert way(cframes, False, S4, C4, 6, TCP_SPORT, TCP_CPORT) == tcp_down
    udp_up = (len(UP_DGRAMS), sum(28 + n for n in UP_DGRAMS))
    udp_down = (len(DOWN_DGRAMS), sum(28 + n for n in DOWN_DGRAMS))
    assert way(rframes, False, C4, S4, 17, UDP_CPORT, UDP_SPORT) == udp_up
    assert way(rframes, True, S4, C4, 17, UDP_SPORT, UDP_CPORT) == udp_down

    for proto, cport, sport, up, down in (
        (6, TCP_CPORT, TCP_SPORT, tcp_up, tcp_down),
        (17, UDP_CPORT, UDP_SPORT, udp_up, udp_down),
    ):
        # The router: one row for the four legs, each way counted once.
        rows = conversations(on_router, proto, C4, cport)
        assert len(rows) == 1, on_router.records
        (c,) = rows
        assert (c["server"], c["server_port"], c["role"], c["flows"]) == (
            S4, sport, "forwarded", 4,
        )  # fmt: skip
        assert (c["iface"], c["in_iface"], c["out_iface"]) == ("vr1→vr2", "vr1", "vr2")
        assert (c["up_packets"], c["up_bytes"]) == up, (proto, c)
        assert (c["down_packets"], c["down_bytes"]) == down, (proto, c)
        assert (c["packets"], c["bytes"]) == (up[0] + down[0], up[1] + down[1])
        # No conversation of the reverse orientation.
        assert conversations(on_router, proto, S4, sport) == []
        # The same run's flow lines: four flows, every leg with its own counts.
        for iface, direction, src, dst, sp, dp, want in (
            ("vr1", "ingress", C4, S4, cport, sport, up),
            ("vr2", "egress", C4, S4, cport, sport, up),
            ("vr2", "ingress", S4, C4, sport, cport, down),
            ("vr1", "egress", S4, C4, sport, cport, down),
        ):
            f = on_router.flow(
                iface=iface, direction=direction, proto=proto, src=src, dst=dst, sport=sp, dport=dp
            )
            assert f is not None and (f["packets"], f["bytes"]) == want, (iface, direction, f)
        legs = on_router.find(proto=proto, src=C4, sport=cport) + on_router.find(
            proto=proto, dst=C4, dport=cport
        )
        assert len({(f["iface"], f["direction"]) for f in legs}) == 4

        # The client host: one row, this host the client, one interface.
        (h,) = conversations(on_host, proto, C4, cport)
        assert (h["role"], h["iface"], h["flows"], h["in_iface"]) == ("client", "vc", 2, None)
        assert (h["up_packets"], h["up_bytes"]) == up, h
        assert (h["down_packets"], h["down_bytes"]) == down, h

    (tcp,) = conversations(on_router, 6, C4, TCP_CPORT)
    assert tcp["tcp_flags"] & 0x12 == 0x12 and tcp["tcp_flags"] <= 0xFF  # SYN, ACK; no bit 8
    assert all(int(f["tcp_flags"]) <= 0xFF for f in on_router.flows)
    # The average rates over the conversation's life (None when all of it
    # fell within one tick of the kernel's coarse clock): both directions
    # over the same life, so their ratio is the bytes'.
    assert (tcp["up_bps"] is None) == (tcp["down_bps"] is None), tcp
    if tcp["up_bps"] is not None:
        assert tcp["up_bps"] > 0
        ratio = tcp["up_bps"] / tcp["down_bps"]
        assert abs(ratio - tcp["up_bytes"] / tcp["down_bytes"]) < 1e-9, tcp
