"""Counts stay exact when both CPUs hit one flow at once while userspace swaps
and drains the interval maps many times, and when the stack (not scapy)
tags frames through VLAN devices."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time

import pytest

from . import frames as fr
from . import netns
from .dump import run_dump, run_dumps
from .expect import drain, udp_client, udp_sink
from .netns import MAC_A, MAC_B, Pair

pytestmark = pytest.mark.kernel

A4 = "10.200.1.1"
PER_CPU = 40_000
SOL_UDP, UDP_SEGMENT = 17, 103


def test_two_cpus_one_flow_with_fast_interval_swaps(quiet_pair: Pair) -> None:
    """2 x 40k frames of one flow from processes pinned to CPU 0 and CPU 1, with
    --interval 0.05 so the maps are swapped and drained during the burst: the
    flow has every packet and byte, nothing is lost, tx totals agree."""
    p = quiet_pair
    frame = fr.udp(MAC_A, MAC_B, A4, fr.SINK4, 31000, 31001, payload=18)
    ncpu = len(os.sched_getaffinity(0))
    cpus = [0, 1] if ncpu >= 2 else [0, 0]

    def traffic() -> None:
        with fr.Sender(p.a, "va") as s:
            pids = [
                fr.send_pinned(s.sock.fileno(), frame.data, PER_CPU, c, must_pin=False)
                for c in cpus
            ]
            codes = [os.waitpid(pid, 0)[1] for pid in pids]
        assert codes == [0, 0], codes

    before = p.a.link_stats("va")
    res = run_dump(p.a, ["va"], traffic, extra_args=["--interval", "0.05"])
    after = p.a.link_stats("va")
    n = PER_CPU * len(cpus)
    assert after["tx_packets"] - before["tx_packets"] == n
    f = res.flow(
        iface="va", direction="egress", proto=17, src=A4, dst=fr.SINK4, sport=31000, dport=31001
    )
    assert f is not None, res.flows
    assert (f["packets"], f["bytes"]) == (n, n * frame.ip_bytes), (
        f"got {(f['packets'], f['bytes'])}, sent {(n, n * frame.ip_bytes)}; stats {res.stats}"
    )
    st = res.stats
    assert st["lost_packets"] == 0 and st["flow_map_full"] == 0, st
    tx = res.iface("va")
    assert (tx["tx_packets"], tx["tx_bytes"]) == (n, n * len(frame.data))


VLAN_PUSH_C = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>

/* Tags every frame as the 8021q driver or a NIC driver would: with
 * bpf_skb_vlan_push the tag goes into skb->vlan_tci (offloaded); a second
 * push moves the first tag in-band and offloads the new, outer one. */
int ftt_vlan_push(struct __sk_buff *skb)
{
#ifdef INNER_VID
	bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), INNER_VID);
	bpf_skb_vlan_push(skb, bpf_htons(0x88A8), OUTER_VID);
#else
	bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), OUTER_VID);
#endif
	return TC_ACT_UNSPEC;
}
"""


class VlanPusher:
    """Our own TC egress filter (prio 1) that tags frames with offloaded VLAN tags,
    for interfaces without an 8021q driver. flowtop runs after it (prio 5)."""

    def __init__(self, ns: netns.Netns, ifname: str, outer: int, inner: int | None) -> None:
        import bcc
        from pyroute2 import IPRoute

        cflags = [f"-DOUTER_VID={outer}"] + ([f"-DINNER_VID={inner}"] if inner else [])
        self.bpf = bcc.BPF(text=VLAN_PUSH_C.encode(), cflags=cflags)
        fn = self.bpf.load_func(b"ftt_vlan_push", bcc.BPF.SCHED_CLS)
        with netns.entered(ns.name):
            self.ipr = IPRoute()
        idx = self.ipr.link_lookup(ifname=ifname)[0]
        self.ipr.tc("add", "clsact", idx)
        self.ipr.tc(
            "add-filter",
            "bpf",
            idx,
            fd=fn.fd,
            name="ftt_vlan_push",
            parent=0xFFFFFFF3,
            classid=1,
            direct_action=True,
            prio=1,
        )

    def close(self) -> None:
        self.ipr.close()
        self.bpf.cleanup()


@pytest.mark.parametrize("tags", [(100, None), (200, 300)], ids=["dot1q", "qinq"])
def test_offloaded_vlan_tags_on_egress(quiet_pair: Pair, tags: tuple[int, int | None]) -> None:
    """Tags offloaded in skb->vlan_tci on egress (as a VLAN device or NIC driver
    leaves them): vlan = the offloaded (outer) VID on va egress and vb
    ingress, with the inner tag in-band for QinQ; counts exact."""
    p = quiet_pair
    outer, inner = tags
    sent = [fr.udp(MAC_A, MAC_B, A4, fr.SINK4, 32000, 32001, payload=n) for n in (1, 100, 1000)]
    pusher = VlanPusher(p.a, "va", outer, inner)
    try:
        (ra, rb), _ = run_dumps(
            [(p.a, ["va"]), (p.b, ["vb"])],
            lambda: fr.send_frames(p.a, "va", sent, repeat=2),
            # The pusher is a clsact filter at prio 1: flowtop must run after it,
            # which only clsact priorities can say (a TCX program runs before
            # every clsact filter).
            extra_args=["--attach", "tc", "--tc-priority", "5"],
        )
    finally:
        pusher.close()
    want = (2 * len(sent), 2 * sum(f.ip_bytes for f in sent))
    for res, iface, direction in ((ra, "va", "egress"), (rb, "vb", "ingress")):
        f = res.flow(
            iface=iface,
            direction=direction,
            proto=17,
            src=A4,
            dst=fr.SINK4,
            sport=32000,
            dport=32001,
        )
        assert f is not None, (iface, res.flows)
        assert (f["vlan"], f["packets"], f["bytes"]) == (outer, *want), (iface, f)
        assert res.stats["truncated"] == 0 and res.stats["non_ip"] == 0, res.stats


def test_traffic_spread_over_many_intervals(quiet_pair: Pair) -> None:
    """60 datagrams 20 ms apart with --interval 0.2: the flow spans ~6 map swaps
    and drains and is counted once, exactly."""
    p = quiet_pair
    sink = udp_sink(p.b, "10.200.1.2", 7200)
    c = udp_client(p.a, "10.200.1.2", 47200)

    box: dict[str, float] = {}

    def traffic() -> None:
        box["t0"] = time.time()
        for _ in range(60):
            c.sendto(b"s" * 50, ("10.200.1.2", 7200))
            time.sleep(0.02)
        box["t1"] = time.time()
        assert drain(sink, 60) == 60

    try:
        res = run_dump(p.a, ["va"], traffic, extra_args=["--interval", "0.2"])
    finally:
        sink.close()
        c.close()
    f = res.flow(
        iface="va", direction="egress", proto=17, src=A4, dst="10.200.1.2", sport=47200, dport=7200
    )
    assert f is not None and (f["packets"], f["bytes"]) == (60, 60 * 78), f
    # first/last seen are wall-clock times of the first and last packet
    first = dt.datetime.fromisoformat(f["first_seen"].replace("Z", "+00:00")).timestamp()
    last = dt.datetime.fromisoformat(f["last_seen"].replace("Z", "+00:00")).timestamp()
    assert box["t0"] - 0.05 <= first <= box["t0"] + 0.1, (first, box)
    assert box["t1"] - 0.1 <= last <= box["t1"] + 0.05, (last, box)
    assert last - first >= 59 * 0.02


def test_udp_gso_counts_datagrams(pair: Pair) -> None:
    """UDP_SEGMENT: one 10 500-byte send with gso_size 1000 is 11 datagrams
    (10 x 1000 + 500) in one GSO skb. A's egress and B's ingress (where the
    skb still is one GSO packet) count 11 packets and every datagram's
    20 + 8 header bytes, over IPv4 and IPv6."""
    p = pair
    cases = [("10.200.1.2", 7300, 47300, 20), ("fd00:200:1::2", 7301, 47301, 40)]
    socks = []
    for dst, dport, sport, _h in cases:
        sink = udp_sink(p.b, dst, dport)
        c = udp_client(p.a, dst, sport)
        c.setsockopt(SOL_UDP, UDP_SEGMENT, 1000)
        socks.append((sink, c, dst, dport))

    def traffic() -> None:
        for sink, c, dst, dport in socks:
            for _ in range(3):
                c.sendto(b"g" * 10_500, (dst, dport))
            assert drain(sink, 33) == 33

    try:
        (ra, rb), _ = run_dumps([(p.a, ["va"]), (p.b, ["vb"])], traffic)
    finally:
        for sink, c, _d, _p in socks:
            sink.close()
            c.close()
    for (dst, dport, sport, h), src in zip(cases, (A4, "fd00:200:1::1"), strict=True):
        want = (33, 3 * (10 * (h + 8 + 1000) + (h + 8 + 500)))
        for res, iface, direction in ((ra, "va", "egress"), (rb, "vb", "ingress")):
            f = res.flow(
                iface=iface,
                direction=direction,
                proto=17,
                src=src,
                dst=dst,
                sport=sport,
                dport=dport,
            )
            assert f is not None, (iface, res.flows)
            assert (f["packets"], f["bytes"]) == want, (iface, direction, f)
    # interface counters are per skb: 3 GSO skbs per family on A's egress
    assert ra.iface_family("va", "ipv4")["tx_packets"] == 3


def test_many_flows_from_two_cpus_exact_per_flow(quiet_pair: Pair) -> None:
    """3000 distinct flows, each sent 3 times from CPU 0 and 3 times from CPU 1
    with --interval 0.05: per-CPU caches, slot collisions and the shared hash
    map all hold pieces of the same flows across many drains; every flow must
    come out with exactly 6 packets, nothing lost, nothing invented."""
    p = quiet_pair
    n_flows, rounds = 3000, 3
    burst = fr.udp_burst(MAC_A, MAC_B, A4, fr.SINK4, n_flows, dport=9997, sport_base=30000)
    blob = [f.data for f in burst]
    ncpu = len(os.sched_getaffinity(0))
    cpus = [0, 1] if ncpu >= 2 else [0, 0]

    def sender(sock_fd: int, cpu: int) -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, {cpu})
                for _ in range(rounds):
                    for d in blob:
                        os.write(sock_fd, d)
                code = 0
            finally:
                os._exit(code)
        return pid

    def traffic() -> None:
        with fr.Sender(p.a, "va") as s:
            pids = [sender(s.sock.fileno(), c) for c in cpus]
            codes = [os.waitpid(pid, 0)[1] for pid in pids]
        assert codes == [0, 0], codes

    res = run_dump(p.a, ["va"], traffic, extra_args=["--interval", "0.05"])
    ours = [
        f
        for f in res.find(iface="va", direction="egress", proto=17, src=A4, dst=fr.SINK4)
        if f["dport"] == 9997
    ]
    st = res.stats
    assert st["lost_packets"] == 0 and st["flow_map_full"] == 0, st
    per = {f["sport"]: f["packets"] for f in ours}
    want = rounds * len(cpus)
    wrong = {sp: n for sp, n in per.items() if n != want}
    missing = n_flows - len(per)
    assert not wrong and missing == 0, (
        f"{missing} flows missing, {len(wrong)} with packets != {want}: "
        f"{sorted(wrong.items())[:10]}"
    )
    assert sum(f["bytes"] for f in ours) == want * n_flows * burst[0].ip_bytes
