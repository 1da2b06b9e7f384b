"""The test harness itself (no flowtop): namespaces, quiet links, frames on
the wire as built, captures, cleanup. If these fail, the counting tests'
ground truth cannot be trusted."""

from __future__ import annotations

import os
import time

import pytest

from . import frames as fr
from . import netns
from .expect import drain, ping, udp_client, udp_sink
from .netns import MAC_A, MAC_B, Capture, Pair, Router

pytestmark = pytest.mark.kernel


def test_pair_and_cleanup() -> None:
    p = netns.make_pair()
    names = [p.a.name, p.b.name]
    try:
        assert all(os.path.exists(f"/run/netns/{n}") for n in names)
        assert p.pa.ifindex > 0 and p.pb.ifindex > 0
        assert p.a.mac("va") == MAC_A and p.b.mac("vb") == MAC_B
        # the root namespace has no va/vb
        assert netns.run(["ip", "link", "show", "dev", "va"], check=False).returncode != 0
        # a process left running inside is killed by the cleanup
        p.a.popen(["sleep", "60"])
    finally:
        p.delete()
    assert not any(os.path.exists(f"/run/netns/{n}") for n in names)


def test_quiet_pair_is_silent(quiet_pair: Pair) -> None:
    with Capture(quiet_pair.a, "va") as cap:
        time.sleep(0.5)
        assert cap.stop() == []


def test_udp_and_ping_work(pair: Pair) -> None:
    sink = udp_sink(pair.b, "10.200.1.2", 5555)
    c = udp_client(pair.a, "10.200.1.2")
    try:
        c.sendto(b"hello", ("10.200.1.2", 5555))
        assert drain(sink, 1) == 1
    finally:
        sink.close()
        c.close()
    assert ping(pair.a, "10.200.1.2", count=2) == 2
    assert ping(pair.a, "fd00:200:1::2", count=2) == 2


def test_router_forwards(router: Router) -> None:
    assert ping(router.client, "10.200.3.2", count=1) == 1
    assert ping(router.client, "fd00:200:3::2", count=1) == 1


def test_frames_cross_as_built(quiet_pair: Pair) -> None:
    """Crafted frames leave va byte for byte and reach vb (outer VLAN tag
    moved to the skb on ingress, as tc.c expects)."""
    p = quiet_pair
    sent = [
        fr.udp(MAC_A, MAC_B, "10.200.1.1", fr.SINK4, 1, 2, payload=10),
        fr.udp(MAC_A, MAC_B, "10.200.1.1", fr.SINK4, 1, 2, vlans=[(0x8100, 100)]),
        fr.udp(MAC_A, MAC_B, "10.200.1.1", fr.SINK4, 1, 2, vlans=[(0x88A8, 200), (0x8100, 100)]),
        *fr.ipv4_fragments(MAC_A, MAC_B, "10.200.1.1", fr.SINK4, 3, 4, 3000, 1000),
        fr.truncated_in_ip(MAC_A, MAC_B, "10.200.1.1", fr.SINK4),
        fr.truncated_in_tcp(MAC_A, MAC_B, "10.200.1.1", fr.SINK4, 5, 6),
        fr.malformed_ihl(MAC_A, MAC_B, "10.200.1.1", fr.SINK4),
        fr.non_ip(MAC_A, MAC_B),
    ]
    sent += fr.udp_burst(MAC_A, MAC_B, "10.200.1.1", fr.SINK4, 50)
    assert [f.data[12:14].hex() for f in sent[:3]] == ["0800", "8100", "88a8"]
    with Capture(p.a, "va", snap=2048) as ca, Capture(p.b, "vb", snap=2048) as cb:
        fr.send_frames(p.a, "va", sent)
        out = ca.stop()
        inn = cb.stop()
    assert [f.data for f in out] == [f.data for f in sent]
    assert [f.length for f in inn] == [
        len(f.data) - (4 if f.data[12:14].hex() in ("8100", "88a8") else 0) for f in sent
    ]
    # burst frames: distinct source ports, valid lengths
    ports = {int.from_bytes(f.data[34:36], "big") for f in sent[-50:]}
    assert len(ports) == 50
