"""TCP samples joined to flows, and the health verdict (no kernel: synthetic samples)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from flowtop.core import tcphealth
from flowtop.core.flowtable import FlowTable
from flowtop.core.tcphealth import HealthTracker, join
from flowtop.kernel import layout

NS = 1_000_000_000
T0 = 1000 * NS
C = "10.200.2.1"
S1 = "10.200.3.2"
S2 = "10.200.4.2"


def _key(k: np.void, ifindex: int, direction: int, src: str, dst: str, sp: int, dp: int) -> None:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    k["ifindex"] = ifindex
    k["direction"] = direction
    k["ip_version"] = a.version
    k["proto"] = 6
    k["src"] = a.packed.ljust(16, b"\0")
    k["dst"] = b.packed.ljust(16, b"\0")
    k["sport"] = sp
    k["dport"] = dp


def flows(spec: list[tuple[int, int, str, str, int, int]], now: int = T0) -> tuple:
    keys = np.zeros(len(spec), dtype=layout.FLOW_KEY)
    stats = np.zeros(len(spec), dtype=layout.FLOW_STATS)
    for i, s in enumerate(spec):
        _key(keys[i], *s)
    stats["packets"] = 10
    stats["bytes"] = 1000
    stats["first_seen_ns"] = now
    stats["last_seen_ns"] = now
    return keys, stats


def sample(
    src: str,
    dst: str,
    sp: int,
    dp: int,
    source: int,
    srtt: int = 0,
    retrans: int = 0,
    segs: int = 0,
    samples: int = 1,
    rto: int = 0,
    server: int = 0,
    min_rtt: int = 0,
) -> np.ndarray:
    s = np.zeros(1, dtype=layout.TCP_SAMPLE)
    _key(s[0]["key"], 0, 0, src, dst, sp, dp)
    s["srtt_us"] = srtt
    s["min_rtt_us"] = min_rtt or srtt
    s["rtt_samples"] = samples
    s["retrans"] = retrans
    s["data_segs"] = segs
    s["rto"] = rto
    s["source"] = source
    s["server"] = server
    return s


def table_with(spec: list[tuple[int, int, str, str, int, int]]) -> FlowTable:
    t = FlowTable(clock_offset=0.0)
    t.merge(*flows(spec), interval=1.0)
    return t


def records_by_dir(t: FlowTable) -> dict[tuple[int, int], object]:
    return {(r.key.ifindex, int(r.key.direction)): r for r in t.records()}


def test_sockops_rtt_on_both_directions_retransmits_on_the_sender_only() -> None:
    t = table_with([(1, 1, C, S1, 40000, 80), (1, 0, S1, C, 80, 40000)])
    s = sample(C, S1, 40000, 80, layout.TCP_SOURCE_SOCKOPS, srtt=20000, retrans=5, segs=100)
    upd = join(t, s, T0)
    assert len(upd.rows) == 2
    r = records_by_dir(t)
    out, inn = r[(1, 1)], r[(1, 0)]
    assert (out.rtt_us, out.rtt_source, out.retrans, out.rto) == (20000, "sockops", 5, 0)
    assert (inn.rtt_us, inn.rtt_source, inn.retrans, inn.rto) == (20000, "sockops", None, None)
    # The remote end of both rows is the peer.
    assert {bytes(a)[:4] for a in upd.remote} == {ipaddress.ip_address(S1).packed}


def test_sockops_wins_over_passive_and_passive_fills_the_rest() -> None:
    t = table_with([(1, 1, C, S1, 40000, 80), (2, 1, C, S2, 40001, 443)])
    s = np.concatenate(
        [
            sample(C, S1, 40000, 80, layout.TCP_SOURCE_PASSIVE, srtt=9000),
            sample(C, S1, 40000, 80, layout.TCP_SOURCE_SOCKOPS, srtt=11000),
            sample(C, S2, 40001, 443, layout.TCP_SOURCE_PASSIVE, srtt=7000, retrans=2, segs=9),
        ]
    )
    join(t, s, T0)
    r = records_by_dir(t)
    assert (r[(1, 1)].rtt_us, r[(1, 1)].rtt_source) == (11000, "sockops")
    assert (r[(2, 1)].rtt_us, r[(2, 1)].rtt_source, r[(2, 1)].retrans) == (7000, "passive", 2)
    assert r[(2, 1)].rto is None  # passive code cannot see RTOs


def test_no_match_leaves_flows_unknown() -> None:
    t = table_with([(1, 1, C, S1, 40000, 80)])
    upd = join(t, sample(C, S1, 40000, 81, layout.TCP_SOURCE_SOCKOPS, srtt=5), T0)
    assert len(upd.rows) == 0
    rec = next(t.records())
    assert (rec.rtt_us, rec.retrans, rec.rtt_source) == (None, None, None)


def test_passive_remote_is_the_server_side() -> None:
    # A forwarded connection: the client has the low port here, but the
    # handshake says the SYN went to S1 (server == 1: dst is the server).
    t = table_with([(1, 0, C, S1, 22, 50000), (1, 1, S1, C, 50000, 22)])
    s = sample(C, S1, 22, 50000, layout.TCP_SOURCE_PASSIVE, srtt=3000, server=1)
    upd = join(t, s, T0)
    assert {bytes(a)[:4] for a in upd.remote} == {ipaddress.ip_address(S1).packed}


def test_retransmit_deltas_between_joins() -> None:
    t = table_with([(1, 1, C, S1, 40000, 80)])
    a = join(t, sample(C, S1, 40000, 80, 1, srtt=1000, retrans=3, segs=50, samples=1), T0)
    b = join(t, sample(C, S1, 40000, 80, 1, srtt=1000, retrans=7, segs=90, samples=1), T0 + NS)
    assert (int(a.d_retrans[0]), int(a.d_segs[0])) == (3, 50)
    assert (int(b.d_retrans[0]), int(b.d_segs[0])) == (4, 40)
    assert bool(a.fresh_rtt[0]) and not bool(b.fresh_rtt[0])  # same sample count


def test_old_connection_history_is_not_news() -> None:
    t = table_with([(1, 1, C, S1, 40000, 80)])
    late = T0 + 60 * NS
    upd = join(t, sample(C, S1, 40000, 80, 1, srtt=1000, retrans=500, segs=5000), late)
    assert int(upd.d_retrans[0]) == 0


# -- verdicts ------------------------------------------------------------------------


class Feed:
    """Drives a tracker through intervals of synthetic connections."""

    def __init__(self) -> None:
        self.t = table_with(
            [
                (1, 1, C, S1, 40000, 80),
                (1, 0, S1, C, 80, 40000),
                (1, 1, C, S2, 40001, 80),
                (1, 0, S2, C, 80, 40001),
            ]
        )
        self.h = HealthTracker(ifname=lambda i: f"if{i}")
        self.cum = {S1: [0, 0, 0], S2: [0, 0, 0]}
        self.now = T0

    def step(self, per_server: dict[str, tuple[int, int, int]]) -> None:
        """per_server: (rtt_us, retransmits, segments) this interval."""
        self.now += NS
        recs = []
        for i, (srv, (rtt, retr, segs)) in enumerate(per_server.items()):
            c = self.cum[srv]
            c[0] += retr
            c[1] += segs
            c[2] += 1
            recs.append(
                sample(C, srv, 40000 + i, 80, 1, srtt=rtt, retrans=c[0], segs=c[1], samples=c[2])
            )
        upd = join(self.t, np.concatenate(recs), self.now)
        self.h.update(upd, self.now / NS)

    def by(self, scope: str, group: str) -> tcphealth.HealthGroup:
        return next(g for g in self.h.groups() if g.scope == scope and g.group == group)


def test_loss_to_one_group_names_it_and_spares_the_rest() -> None:
    f = Feed()
    for _ in range(5):
        f.step({S1: (1000, 0, 200), S2: (1000, 0, 200)})
    assert not f.h.degraded()
    for _ in range(3):
        f.step({S1: (1000, 0, 200), S2: (1000, 8, 200)})
    bad = f.by("remote", "10.200.4.0/24")
    assert bad.verdict == "degraded"
    assert bad.reason == "1.5% retransmits to 10.200.4.0/24"  # 24 of 1600 in the window
    assert f.by("remote", "10.200.3.0/24").verdict == "healthy"
    iface = f.by("interface", "if1")
    assert iface.verdict == "healthy"
    assert "1 of 2 destinations degraded (10.200.4.0/24)" in iface.reason
    assert f.h.groups()[0].group == "10.200.4.0/24"  # worst first
    # Loss stops: healthy again once the window has passed.
    for _ in range(int(tcphealth.WINDOW) + 1):
        f.step({S1: (1000, 0, 200), S2: (1000, 0, 200)})
    assert not f.h.degraded()


def test_everything_degraded_points_at_the_link() -> None:
    f = Feed()
    for _ in range(3):
        f.step({S1: (1000, 10, 200), S2: (1000, 10, 200)})
    iface = f.by("interface", "if1")
    assert iface.verdict == "degraded"
    assert iface.reason == "5.0% retransmits on if1 to all destinations"


def test_rtt_against_the_windowed_minimum() -> None:
    f = Feed()
    for _ in range(5):
        f.step({S1: (2000, 0, 10), S2: (2000, 0, 10)})
    for _ in range(tcphealth.WINDOW.__int__() + 1):
        f.step({S1: (2000, 0, 10), S2: (40000, 0, 10)})
    bad = f.by("remote", "10.200.4.0/24")
    assert bad.verdict == "degraded"
    assert bad.reason == "RTT 20.0x baseline (40.0 ms) to 10.200.4.0/24"
    assert bad.rtt_baseline_us == 2000
    assert f.by("remote", "10.200.3.0/24").verdict == "healthy"


def test_small_lan_rtt_changes_are_not_degradation() -> None:
    f = Feed()
    for _ in range(5):
        f.step({S1: (50, 0, 10), S2: (50, 0, 10)})
    for _ in range(12):
        f.step({S1: (400, 0, 10), S2: (400, 0, 10)})  # 8x, but only 0.35 ms more
    assert not f.h.degraded()


def test_health_json_line() -> None:
    f = Feed()
    for _ in range(3):
        f.step({S1: (1000, 10, 200), S2: (1000, 0, 200)})
    d = f.by("remote", "10.200.3.0/24").as_dict()
    assert d["type"] == "health" and d["verdict"] == "degraded"
    assert d["retransmit_ratio"] == pytest.approx(0.05)
    assert d["rtt_p50_us"] == 1000 and d["rtt_p95_us"] == 1000
