"""What routers carry on Ethernet: PPPoE sessions and MPLS label stacks, IPv4
lengths that cannot be, and the "every packet counted once" invariant.

One run serves the module: A sends every frame kind over AF_PACKET on a quiet
veth pair (IPv4 only on the interfaces, static neighbours, ARP off: nothing
else crosses); one collector watches va (egress) and one vb (ingress). The
ground truth is what was sent: the inner packet of each frame, its IP
length, its top label.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.all import IP, TCP, UDP, IPv6, Raw  # type: ignore[import-untyped]

from flowtop.kernel import layout

from . import frames as fr
from . import netns
from .dump import DumpResult, run_dumps
from .expect import check_flows, key_match
from .netns import MAC_A, MAC_B

pytestmark = pytest.mark.kernel

S4, S6 = fr.SINK4, fr.SINK6
REPEAT = 3


def _v4(n: int, sport: int, payload: int = 20, tcp: bool = False):  # type: ignore[no-untyped-def]
    l4 = TCP(sport=sport, dport=80, flags="PA") if tcp else UDP(sport=sport, dport=5000)
    return IP(src=f"10.200.7.{n}", dst=S4) / l4 / Raw(b"v" * payload)


def _v6(n: int, sport: int, payload: int = 20):  # type: ignore[no-untyped-def]
    return (
        IPv6(src=f"fd00:200:7::{n:x}", dst=S6) / UDP(sport=sport, dport=5000) / Raw(b"6" * payload)
    )


@dataclass
class EncapRun:
    groups: dict[str, list[fr.Frame]]
    a: DumpResult  # va egress
    b: DumpResult  # vb ingress
    link_a: dict[str, int]  # ip -s link deltas over the run
    link_b: dict[str, int]

    def frames(self) -> list[fr.Frame]:
        return [f for g in self.groups.values() for f in g]


def _build() -> dict[str, list[fr.Frame]]:
    g: dict[str, list[fr.Frame]] = {}
    g["plain"] = [fr.raw_ip(MAC_A, MAC_B, _v4(1, 1000), fr.ip_key(_v4(1, 1000)))]
    g["pppoe"] = (
        [fr.pppoe_session(MAC_A, MAC_B, _v4(2, 1001, payload=n)) for n in (0, 300, 1400)]
        + [fr.pppoe_session(MAC_A, MAC_B, _v6(2, 1002, payload=n)) for n in (10, 1000)]
        + [fr.pppoe_session(MAC_A, MAC_B, _v4(3, 1003, tcp=True, payload=50))]
    )
    # the BRAS case: PPPoE over 802.1Q and over QinQ; the flow's vlan is the outer VID
    g["pppoe_vlan"] = [
        fr.pppoe_session(MAC_A, MAC_B, _v4(4, 1004), vlans=[(0x8100, 300)]),
        fr.pppoe_session(MAC_A, MAC_B, _v6(4, 1005), vlans=[(0x88A8, 400), (0x8100, 301)]),
    ]
    # PPPoE discovery (PADI) and LCP in a session: not IP
    g["pppoe_control"] = [
        fr.pppoe_control(MAC_A, MAC_B, discovery=True),
        fr.pppoe_control(MAC_A, MAC_B, discovery=False),
    ]
    # one to four labels, IPv4 and IPv6, unicast and multicast EtherTypes, TC bits
    g["mpls"] = [
        fr.mpls(MAC_A, MAC_B, _v4(10 + depth, 1100 + depth, payload=40 * depth), labels)
        for depth, labels in ((1, [16]), (2, [1000, 17]), (3, [2000, 3000, 4000]),
                              (4, [0xFFFFF, 5, 6, 7]))
    ] + [
        fr.mpls(MAC_A, MAC_B, _v6(10 + depth, 1200 + depth), [100 + depth] * depth, tc=5)
        for depth in (1, 2, 3, 4)
    ] + [
        fr.mpls(MAC_A, MAC_B, _v4(15, 1105), [77], multicast=True),
        fr.mpls(MAC_A, MAC_B, _v4(16, 1106, tcp=True), [88, 99]),
    ]  # fmt: skip
    g["mpls_vlan"] = [fr.mpls(MAC_A, MAC_B, _v4(17, 1107), [500, 501], vlans=[(0x8100, 302)])]
    g["mpls_pppoe"] = [fr.mpls(MAC_A, MAC_B, _v4(18, 1108), [600], in_pppoe=True)]
    # the walk's bound (tc.c: FT_MPLS_MAX_DEPTH = 8) is exact; one more label is counted
    g["mpls_deep"] = [fr.mpls(MAC_A, MAC_B, _v4(19, 1109), list(range(30, 38)))]
    g["mpls_limit"] = [
        dataclasses.replace(fr.mpls(MAC_A, MAC_B, _v4(20, 1110), list(range(40, 49))), key=None)
    ]
    # bottom of stack followed by a pseudowire control word (first nibble 0): not IP
    pw = fr.mpls(MAC_A, MAC_B, _v4(21, 1111), [700])
    g["mpls_pw"] = [fr.Frame(pw.data[:18] + b"\0\0\0\0" + pw.data[18:], None, 0)]
    # cut inside the label stack and inside the PPPoE header: truncated
    g["truncated"] = [
        fr.Frame(fr.mpls(MAC_A, MAC_B, _v4(22, 1112), [1, 2, 3]).data[: 14 + 6], None, 0),
        fr.Frame(fr.pppoe_session(MAC_A, MAC_B, _v4(23, 1113)).data[: 14 + 5], None, 0),
        fr.truncated_in_ip(MAC_A, MAC_B, "10.200.7.24", S4),
    ]
    # IP header fine, TCP header cut: in a flow without ports, and in no_ports
    g["no_ports"] = [fr.truncated_in_tcp(MAC_A, MAC_B, "10.200.7.25", S4, 1114, 80)]
    # IPv4 total length below the header length (20, or 24 with options), or 0 without GSO
    g["bad_length"] = [
        fr.ipv4_bad_length(MAC_A, MAC_B, "10.200.7.26", S4, tot_len=12),
        fr.ipv4_bad_length(MAC_A, MAC_B, "10.200.7.26", S4, tot_len=19),
        fr.ipv4_bad_length(MAC_A, MAC_B, "10.200.7.26", S4, tot_len=22, options=1),
        fr.ipv4_bad_length(MAC_A, MAC_B, "10.200.7.26", S4, tot_len=0),
    ]
    # a PPPoE session header with a bad version/type: malformed
    bad = bytearray(fr.pppoe_session(MAC_A, MAC_B, _v4(27, 1115)).data)
    bad[14] = 0x21
    g["bad_pppoe"] = [fr.Frame(bytes(bad), None, 0)]
    g["ext_limit"] = [
        dataclasses.replace(
            fr.ipv6_dstopts_chain(MAC_A, MAC_B, "fd00:200:7::28", S6, 1116, 5000, n_ext=7),
            key=None,
        )
    ]
    g["non_ip"] = [fr.non_ip(MAC_A, MAC_B, 70)]
    return g


@pytest.fixture(scope="module")
def run() -> Iterator[EncapRun]:
    pair = netns.make_pair(ipv6=False)
    try:
        groups = _build()
        order = [f for grp in groups.values() for f in grp]
        before = (pair.a.link_stats("va"), pair.b.link_stats("vb"))
        (ra, rb), _ = run_dumps(
            [(pair.a, ["va"]), (pair.b, ["vb"])],
            lambda: fr.send_frames(pair.a, "va", order, repeat=REPEAT),
        )
        after = (pair.a.link_stats("va"), pair.b.link_stats("vb"))
        da, db = ({k: x[k] - y[k] for k in x} for x, y in zip(after, before, strict=True))
        yield EncapRun(groups, ra, rb, da, db)
    finally:
        pair.delete()


def _check(run: EncapRun, *groups: str) -> None:
    frames = [f for g in groups for f in run.groups[g]]
    errors = check_flows(run.a, frames, "va", "egress", REPEAT)
    errors += check_flows(run.b, frames, "vb", "ingress", REPEAT)
    for res, iface, direction in ((run.a, "va", "egress"), (run.b, "vb", "ingress")):
        for f in frames:
            assert f.key is not None
            got = res.flow(**key_match(f.key, iface, direction))
            if got is not None and got.get("mpls_label") != f.mpls_label:
                errors.append(f"{iface} {f.key}: mpls_label {got.get('mpls_label')}, "
                              f"want {f.mpls_label}")  # fmt: skip
    assert not errors, "\n".join(errors)


def test_pppoe_session_inner_flows(run: EncapRun) -> None:
    """IPv4 and IPv6 in PPPoE sessions: the inner flows, exact packets and IP
    bytes (the PPPoE and PPP headers are not IP octets), no label."""
    _check(run, "pppoe")


def test_pppoe_over_vlan(run: EncapRun) -> None:
    _check(run, "pppoe_vlan")
    assert run.a.find(src="10.200.7.4", vlan=300) and run.b.find(src="fd00:200:7::4", vlan=400)


def test_mpls_one_to_four_labels(run: EncapRun) -> None:
    """The inner flow of each stack depth, with the top label in mpls_label."""
    _check(run, "mpls", "mpls_vlan", "mpls_pppoe", "mpls_deep")


def test_mpls_stack_deeper_than_the_walk_is_counted(run: EncapRun) -> None:
    for res in (run.a, run.b):
        assert not res.find(src="10.200.7.20"), res.find(src="10.200.7.20")
        assert res.stats["mpls_limit"] == REPEAT, res.stats


def test_malformed_ipv4_lengths_and_pppoe_header(run: EncapRun) -> None:
    """Total length 12, 19 (< 20), 22 (< 24 with options) and 0 without GSO,
    and a PPPoE version/type that is not 1/1: no flow, `malformed`."""
    n = len(run.groups["bad_length"]) + len(run.groups["bad_pppoe"])
    for res in (run.a, run.b):
        assert not res.find(src="10.200.7.26") and not res.find(src="10.200.7.27")
        assert res.stats["malformed"] == n * REPEAT, res.stats


def test_control_and_non_ip_payloads_are_non_ip(run: EncapRun) -> None:
    """PPPoE discovery, LCP, an MPLS pseudowire: counted as non_ip, no flow."""
    n = sum(len(run.groups[g]) for g in ("pppoe_control", "mpls_pw", "non_ip"))
    for res in (run.a, run.b):
        assert not res.find(src="10.200.7.21")
        assert res.stats["non_ip"] == n * REPEAT, res.stats


def test_truncated_and_no_ports_kept_apart(run: EncapRun) -> None:
    """Cut inside the label stack, the PPPoE header or the IP header: no flow,
    `truncated`. Cut inside the TCP header: in the (0, 0) flow and in
    `no_ports`, not in `truncated`."""
    _check(run, "no_ports")
    for res in (run.a, run.b):
        assert res.stats["truncated"] == len(run.groups["truncated"]) * REPEAT, res.stats
        assert res.stats["no_ports"] == len(run.groups["no_ports"]) * REPEAT, res.stats


def test_every_packet_counted_once(run: EncapRun) -> None:
    """Packets in flows + the not-in-flow counters == packets the hook saw
    (the interface counters, which equal ip -s link), on both hooks; and no
    good flow is disturbed by the bad frames."""
    sent = len(run.frames()) * REPEAT
    for res, iface, link, side in (
        (run.a, "va", run.link_a, "tx"),
        (run.b, "vb", run.link_b, "rx"),
    ):
        counters = res.iface(iface)
        assert counters == link, f"{iface}: flowtop {counters} != ip -s link {link}"
        seen = counters[f"{side}_packets"]
        assert seen == sent
        in_flows = sum(f["packets"] for f in res.flows)
        not_in_flow = sum(res.stats[n] for n in layout.NOT_IN_FLOW)
        assert in_flows + not_in_flow == seen, (
            in_flows,
            {n: res.stats[n] for n in layout.NOT_IN_FLOW},
        )
        good = [f for f in run.frames() if f.key is not None]
        assert in_flows == len(good) * REPEAT
        assert res.stats["lost_packets"] == 0 and res.stats["flow_map_full"] == 0
    good = [f for f in run.frames() if f.key is not None]
    errors = check_flows(run.a, good, "va", "egress", REPEAT)
    errors += check_flows(run.b, good, "vb", "ingress", REPEAT)
    assert not errors, "\n".join(errors)


def test_mpls_top_label_in_ipfix() -> None:
    """`--export-only` on vb: the record of an MPLS flow carries
    mplsTopLabelStackSection (label << 4 | TC << 1 | S of the top entry); the
    record of a flow without a label does not, and both count exactly."""
    from .exporting import ExportOnly

    pair = netns.make_pair(ipv6=False)
    try:
        labelled = fr.mpls(MAC_A, MAC_B, _v4(30, 1300, payload=64), [1234, 5], tc=3)
        plain = fr.raw_ip(MAC_A, MAC_B, _v4(31, 1301), fr.ip_key(_v4(31, 1301)))
        with ExportOnly(pair.b, ["vb"]) as exp:
            fr.send_frames(pair.a, "va", [labelled, plain], repeat=4)
            time.sleep(0.5)
    finally:
        pair.delete()
    recs = {int(r[7]): r for r in exp.flow_records() if r.get(7) in (1300, 1301)}
    assert sorted(recs) == [1300, 1301], exp.flow_records()
    assert recs[1300][70] == 1234 << 4 | 3 << 1 | 0  # the top entry is not the bottom
    assert (recs[1300][2], recs[1300][1]) == (4, 4 * labelled.ip_bytes)
    assert 70 not in recs[1301]
    assert (recs[1301][2], recs[1301][1]) == (4, 4 * plain.ip_bytes)
