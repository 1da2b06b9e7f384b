"""Conversations without a kernel: the id, the client end, counted once, filters, sorting."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

import numpy as np
import pytest

from flowtop.core.conversations import conversation_ids, counted_once
from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import TCP_SYN
from flowtop.kernel import layout
from flowtop.query.filterexpr import parse
from flowtop.query.tablequery import conversation_flows, query_table
from flowtop.query.types import SORT_KEYS, ViewQuery, ViewRow

T0 = 1_000 * NS
A, B = 2, 3  # the router's legs
IFNAMES = {A: "veth-a", B: "veth-b"}
IN, OUT = layout.DIR_INGRESS, layout.DIR_EGRESS
ACK = 0x10
SYN_ONLY = TCP_SYN | layout.TCP_SYN_ONLY  # what the kernel ORs in for a SYN without ACK


class F(NamedTuple):
    """One flow row: its key and counters."""

    src: str
    sport: int
    dst: str
    dport: int
    proto: int = 6
    ifindex: int = A
    direction: int = IN
    nbytes: int = 1000
    packets: int = 10
    flags: int = ACK
    first: int = 0  # ns after T0
    vlan: int = 0


def arrays(spec: list[F]) -> tuple[np.ndarray, np.ndarray]:
    k = np.zeros(len(spec), dtype=layout.FLOW_KEY)
    s = np.zeros(len(spec), dtype=layout.FLOW_STATS)
    for i, f in enumerate(spec):
        a, b = ipaddress.ip_address(f.src), ipaddress.ip_address(f.dst)
        k[i]["ifindex"], k[i]["direction"] = f.ifindex, f.direction
        k[i]["ip_version"], k[i]["proto"], k[i]["vlan"] = a.version, f.proto, f.vlan
        k[i]["src"], k[i]["dst"] = a.packed.ljust(16, b"\0"), b.packed.ljust(16, b"\0")
        k[i]["sport"], k[i]["dport"] = f.sport, f.dport
        s[i]["packets"], s[i]["bytes"], s[i]["tcp_flags"] = f.packets, f.nbytes, f.flags
        s[i]["first_seen_ns"] = s[i]["last_seen_ns"] = T0 + f.first
    return k, s


def table(spec: list[F]) -> FlowTable:
    t = FlowTable(clock_offset=0.0)
    t.merge(*arrays(spec), interval=1.0)
    return t


def convs(t: FlowTable, flt: str = "", **kw: object) -> list[ViewRow]:
    query = ViewQuery(filter=flt, group_by="conversation", **kw)  # type: ignore[arg-type]
    rows, matched = query_table(t, query, parse(flt), IFNAMES)
    assert matched >= len(rows)
    return rows


def ids(spec: list[F]) -> list[int]:
    k, _ = arrays(spec)
    out: list[int] = conversation_ids(layout.FLOW_KEY_WORDS.view(k)).tolist()
    return out


C, S = "10.0.0.1", "10.1.0.1"  # client, server


def router(
    up: int = 1000, down: int = 5000, proto: int = 6, cport: int = 40000, sport: int = 443
) -> list[F]:
    """A forwarded connection, client on leg A, server on leg B: four rows.
    Each egress row carries a little less than its ingress row, so a sum of
    both hooks, or egress counted, cannot pass for the ingress count."""
    syn, synack = (SYN_ONLY, TCP_SYN | ACK) if proto == 6 else (0, 0)
    return [
        F(C, cport, S, sport, proto, A, IN, up, 10, syn | ACK),
        F(C, cport, S, sport, proto, B, OUT, up - 100, 9, syn | ACK),
        F(S, sport, C, cport, proto, B, IN, down, 20, synack, first=5),
        F(S, sport, C, cport, proto, A, OUT, down - 100, 19, synack, first=5),
    ]


# -- the id ------------------------------------------------------------------


def test_id_is_the_same_for_every_leg_and_direction() -> None:
    got = ids(router())
    assert len(set(got)) == 1 and got[0] != 0


def test_id_differs_by_vlan_proto_and_ends() -> None:
    base = F(C, 40000, S, 443)
    other = [
        base._replace(vlan=7),
        base._replace(proto=17),
        base._replace(sport=40001),
        base._replace(dst="10.1.0.2"),
        F("2001:db8::1", 40000, "2001:db8::2", 443),
    ]
    got = ids([base, *other])
    assert len(set(got)) == len(got)
    # The reverse on a VLAN is that VLAN's conversation.
    assert ids([base._replace(vlan=7)]) == ids([F(S, 443, C, 40000, vlan=7, direction=OUT)])


def test_icmp_echo_request_and_reply_are_one_conversation() -> None:
    req = F(C, 0, S, 8 << 8, proto=1)
    rep = F(S, 0, C, 0, proto=1, direction=OUT)
    other = F(C, 0, "10.1.0.2", 8 << 8, proto=1)
    a, b, c = ids([req, rep, other])
    assert a == b != c


def test_table_fills_the_id_on_new_rows() -> None:
    spec = router()
    t = table(spec)
    rows = t.rows_of(arrays(spec)[0])
    assert (t.column("conv_id", rows) == np.uint64(ids(spec)[0])).all()


# -- the client end ------------------------------------------------------------


def test_syn_sender_is_the_client_even_from_the_low_port() -> None:
    # The SYN's sender has port 80 and the other end port 40000: the SYN wins
    # over the ephemeral-port rule.
    spec = [
        F(C, 80, S, 40000, direction=OUT, flags=SYN_ONLY | ACK, nbytes=300, first=10),
        F(S, 40000, C, 80, direction=IN, flags=TCP_SYN | ACK, nbytes=700, first=0),
    ]
    (r,) = convs(table(spec))
    assert (r.src, r.sport, r.dst, r.dport) == (C, 80, S, 40000)
    assert (r.up_bytes, r.down_bytes, r.role) == (300, 700, "client")


def test_syn_and_ack_is_not_a_client_mark() -> None:
    # Only the SYN/ACK's row (server side) is seen: the ephemeral port decides.
    spec = [F(S, 443, C, 40000, direction=OUT, flags=TCP_SYN | ACK, nbytes=500)]
    (r,) = convs(table(spec))
    assert (r.src, r.sport, r.dst, r.dport) == (C, 40000, S, 443)
    assert (r.up_bytes, r.down_bytes, r.role) == (0, 500, "server")
    assert r.tcp_flags == TCP_SYN | ACK  # the bit is not a TCP flag: masked off


def test_ephemeral_port_decides_over_first_seen() -> None:
    # The DNS answer was seen first; the client is still the 40000 end.
    spec = [
        F(S, 53, C, 40000, 17, direction=IN, nbytes=200, first=0, flags=0),
        F(C, 40000, S, 53, 17, direction=OUT, nbytes=60, first=50, flags=0),
    ]
    (r,) = convs(table(spec))
    assert (r.src, r.sport, r.dport, r.up_bytes, r.down_bytes) == (C, 40000, 53, 60, 200)
    assert r.role == "client" and r.iface == "veth-a" and r.direction is None


def test_first_seen_decides_with_equal_ports() -> None:
    spec = [
        F(S, 123, C, 123, 17, direction=IN, nbytes=90, first=100, flags=0),
        F(C, 123, S, 123, 17, direction=OUT, nbytes=76, first=0, flags=0),
    ]
    (r,) = convs(table(spec))
    assert (r.src, r.dst, r.up_bytes, r.down_bytes) == (C, S, 76, 90)
    spec2 = [f._replace(first=100 - f.first) for f in spec]
    (r2,) = convs(table(spec2))
    assert (r2.src, r2.dst, r2.up_bytes, r2.down_bytes) == (S, C, 90, 76)
    assert r2.role == "server"  # the up direction (S -> C) arrives here


# -- counted once ---------------------------------------------------------------


def test_router_four_legs_are_one_row_counted_on_ingress() -> None:
    t = table(router(up=1000, down=5000))
    (r,) = convs(t)
    assert (r.src, r.sport, r.dst, r.dport, r.proto_name) == (C, 40000, S, 443, "tcp")
    assert (r.up_bytes, r.down_bytes, r.bytes) == (1000, 5000, 6000)
    assert (r.up_packets, r.down_packets, r.packets) == (10, 20, 30)
    assert r.up_bps == 8000 and r.down_bps == 40000 and r.bps == 48000
    assert r.flows == 4 and r.role == "forwarded" and r.iface == "veth-a\u2192veth-b"
    assert r.key.startswith("conversation:") and r.tcp_flags & layout.TCP_SYN_ONLY == 0
    legs = conversation_flows(t, int(r.key.split(":")[1], 16), IFNAMES)
    assert sorted((x.iface, x.direction, x.bytes) for x in legs) == [
        ("veth-a", "in", 1000), ("veth-a", "out", 4900),
        ("veth-b", "in", 5000), ("veth-b", "out", 900),
    ]  # fmt: skip


def test_router_reversed_legs_name_the_client_side_first() -> None:
    # The client on leg B: the conversation enters by veth-b.
    spec = [f._replace(ifindex=A if f.ifindex == B else B) for f in router()]
    (r,) = convs(table(spec))
    assert r.iface == "veth-b\u2192veth-a" and (r.up_bytes, r.down_bytes) == (1000, 5000)


def test_host_two_legs_client_and_server() -> None:
    client = [
        F(C, 40000, S, 443, direction=OUT, nbytes=1000, flags=SYN_ONLY | ACK),
        F(S, 443, C, 40000, direction=IN, nbytes=5000, flags=TCP_SYN | ACK),
    ]
    (r,) = convs(table(client))
    assert (r.role, r.iface, r.up_bytes, r.down_bytes, r.flows) == (
        "client", "veth-a", 1000, 5000, 2,
    )  # fmt: skip
    server = [f._replace(direction=OUT if f.direction == IN else IN) for f in client]
    (r,) = convs(table(server))
    assert (r.role, r.src, r.up_bytes, r.down_bytes) == ("server", C, 1000, 5000)


def test_one_way_udp() -> None:
    spec = [
        F(C, 40000, S, 5001, 17, A, IN, 1234, 3, 0),
        F(C, 40000, S, 5001, 17, B, OUT, 1234, 3, 0),
    ]
    (r,) = convs(table(spec))
    assert (r.up_bytes, r.up_packets, r.down_bytes, r.down_packets) == (1234, 3, 0, 0)
    assert r.role == "forwarded" and r.iface == "veth-a\u2192veth-b" and r.flows == 2
    # Only the reply way forwarded: the client -> server way still enters by veth-a.
    back = [F(S, 5001, C, 40000, 17, B, IN, 99, 1, 0), F(S, 5001, C, 40000, 17, A, OUT, 99, 1, 0)]
    (r,) = convs(table(back))
    assert (r.src, r.up_bytes, r.down_bytes, r.iface) == (C, 0, 99, "veth-a\u2192veth-b")


def test_retransmits_per_direction_counted_once() -> None:
    t = table(router())
    k, _ = arrays(router())
    rows = t.rows_of(k)
    # Passive tracking writes a direction's retransmits on both its legs.
    t.set_column("retrans_source", rows, layout.TCP_SOURCE_PASSIVE)
    t.set_column("retrans", rows, np.array([3, 3, 1, 1]))
    t.set_column("rtt_source", rows, layout.TCP_SOURCE_PASSIVE)
    t.set_column("rtt_us", rows, np.array([900, 900, 1500, 1500]))
    (r,) = convs(t)
    assert (r.up_retransmits, r.down_retransmits, r.retransmits, r.rtt_us) == (3, 1, 4, 1500)
    (u,) = convs(table(router()))
    assert u.up_retransmits is None and u.retransmits is None and u.rtt_us is None


# -- filter, sort, several conversations -------------------------------------------


def many() -> list[F]:
    out = router(1000, 5000)
    out += router(300, 600, cport=40001, sport=22)
    out += [F("10.0.0.2", 5353, "10.1.0.9", 53, 17, A, IN, 80, 1, 0)]
    return out


def test_filter_picks_flow_rows_then_aggregates() -> None:
    t = table(many())
    assert len(convs(t)) == 3
    (r,) = convs(t, "port 22")
    assert (r.dport, r.flows, r.up_bytes, r.down_bytes) == (22, 4, 300, 600)
    # Only leg B's rows match: the conversation is shown, from those rows only.
    got = {x.dport: x for x in convs(t, "iface veth-b")}
    assert set(got) == {443, 22}
    # (its rows: egress client -> server, ingress server -> client)
    assert (got[443].flows, got[443].up_bytes, got[443].down_bytes) == (2, 900, 5000)
    assert convs(t, "port 9999") == []


def test_every_sort_key_and_limit() -> None:
    t = table(many())
    for sort in SORT_KEYS:
        for descending in (True, False):
            rows = convs(t, sort=sort, descending=descending)
            assert len(rows) == 3, sort
    assert [r.bytes for r in convs(t, sort="bytes")] == [6000, 900, 80]
    assert [r.bytes for r in convs(t, sort="bytes", descending=False, limit=2)] == [80, 900]
    assert [r.dport for r in convs(t, sort="dport", descending=False)] == [22, 53, 443]
    assert [r.flows for r in convs(t, sort="flows")] == [4, 4, 1]


def test_conversation_keys_are_stable_across_refreshes() -> None:
    spec = many()
    t = table(spec)
    before = {r.dport: r.key for r in convs(t)}
    k, s = arrays(spec)
    t.merge(k, s, interval=1.0)
    assert {r.dport: r.key for r in convs(t)} == before


@pytest.mark.parametrize("group", ["flow", "src", "port"])
def test_other_groups_have_no_conversation_fields(group: str) -> None:
    t = table(many())
    query = ViewQuery(group_by=group)
    rows, _ = query_table(t, query, parse(""), IFNAMES)
    assert rows and all(r.role is None and r.up_bytes is None for r in rows)
    assert all(r.tcp_flags & layout.TCP_SYN_ONLY == 0 for r in rows)


# -- the table's conversation slots ------------------------------------------------


def test_rows_come_and_go_the_conversations_follow() -> None:
    t = FlowTable(clock_offset=0.0, idle_timeout=5.0)
    first = router()
    t.merge(*arrays(first), interval=1.0)
    # Later: another connection; the first one idles out.
    k, s = arrays([F(C, 40001, S, 22, direction=OUT), F(S, 22, C, 40001, direction=IN)])
    s["first_seen_ns"] = s["last_seen_ns"] = T0 + 10 * NS
    t.merge(k, s, interval=1.0)
    assert len(convs(t)) == 2
    ended = t.expire(T0 + 12 * NS)
    assert len(ended) == 4
    (r,) = convs(t)
    assert (r.dport, r.flows, r.role) == (22, 2, "client")
    # The first connection comes back (rows reused): the same id and legs.
    t.merge(*arrays(first), interval=1.0)
    got = {x.dport: x for x in convs(t)}
    assert got[443].key == f"conversation:{ids(first)[0]:016x}" and got[443].flows == 4
    assert (got[443].up_bytes, got[443].down_bytes, got[443].role) == (1000, 5000, "forwarded")
    rows = t.rows_of(arrays(first)[0])
    assert t.column("conv_leg", rows).tolist() == [0, 1, 2, 3]  # (direction * 2 + hook)


def test_first_seen_within_one_batch_is_the_earliest_packet() -> None:
    # Both ways of a new conversation (equal ports) in one drained batch,
    # the reply listed first: the earlier first packet names the client.
    spec = [
        F(S, 123, C, 123, 17, direction=IN, nbytes=90, first=100, flags=0),
        F(C, 123, S, 123, 17, direction=OUT, nbytes=76, first=0, flags=0),
    ]
    (r,) = convs(table(spec))
    assert (r.src, r.up_bytes, r.role) == (C, 76, "client")


def test_many_conversations_match_a_sum_per_connection() -> None:
    # 3000 router-shaped connections, legs shuffled over two batches: every
    # one a row with its own bytes each way, whatever the sort.
    rng = np.random.default_rng(7)
    spec = []
    for i in range(3000):
        spec += router(
            up=int(rng.integers(200, 10**6)), down=int(rng.integers(200, 10**6)),
            cport=1024 + i, sport=(443, 80, 22)[i % 3],
        )  # fmt: skip
    want = {(f.sport, f.dport): f.nbytes for f in spec if f.direction == IN}
    k, s = arrays(spec)
    order = rng.permutation(len(spec))
    k, s = k[order], s[order]
    t = FlowTable(clock_offset=0.0)
    t.merge_many([(k[:5000], s[:5000]), (k[5000:], s[5000:])], interval=1.0)
    for sort in ("bytes", "bps", "flows", "dport", "src"):
        rows = convs(t, sort=sort, limit=5000)
        assert len(rows) == 3000, sort
        for r in rows:
            assert r.up_bytes == want[(r.sport, r.dport)] and r.flows == 4
            assert r.down_bytes == want[(r.dport, r.sport)]
    top = convs(t, sort="bytes", limit=10)
    every = sorted((r.bytes for r in convs(t, sort="bytes", limit=5000)), reverse=True)
    assert [r.bytes for r in top] == every[:10]


def test_table_source_conversation_snapshot_history_and_legs() -> None:
    from flowtop.core.engine import Engine
    from flowtop.kernel.collector import Drain

    from .test_view import FakeCollector, StepSource

    k, s = arrays(router())
    drains = [Drain([(k, s)], T0 + NS, 1.0), Drain([(k, s)], T0 + 2 * NS, 1.0)]
    src = StepSource(Engine(FakeCollector(drains), FlowTable(clock_offset=0.0)), host="h")
    src.step()
    snap = src.snapshot(ViewQuery(group_by="conversation"))
    (r,) = snap.rows
    assert snap.matched == 1 and snap.active_flows == 4
    assert (r.up_bytes, r.down_bytes, r.flows) == (1000, 5000, 4)
    legs = src.conversation_flows(r.key)
    assert sorted((x.direction, x.bytes) for x in legs) == [
        ("in", 1000), ("in", 5000), ("out", 900), ("out", 4900),
    ]  # fmt: skip
    assert all(x.key.startswith("flow:") for x in legs)
    src.step()
    again = src.snapshot(ViewQuery(group_by="conversation"))
    assert again.rows[0].key == r.key and again.rows[0].up_bytes == 2000
    assert len(src.history(r.key)) == 2
    assert src.conversation_flows("flow:0000000000000001") == []
    assert src.conversation_flows("conversation:zz") == []


def test_the_kept_slots_follow_the_table_through_churn() -> None:
    """Rows end, are reused by other flows and new ones come: every round,
    the ranked view (the slots kept from one refresh to the next) equals a
    fresh aggregation of the same rows (sorting by src takes the full path)."""
    rng = np.random.default_rng(3)
    t = FlowTable(clock_offset=0.0, idle_timeout=3.0)
    for rnd in range(6):
        spec = []
        for i in rng.choice(4000, 800, replace=False).tolist():
            spec += router(cport=1024 + i, sport=(443, 22)[i % 2])[: 1 + i % 4]
        k, s = arrays(spec)
        s["first_seen_ns"] = s["last_seen_ns"] = T0 + rnd * 2 * NS
        t.merge(k, s, interval=1.0)
        t.expire(T0 + rnd * 2 * NS)
        live = t.live_rows()
        got = {r.key: (r.up_bytes, r.down_bytes, r.flows) for r in convs(t, limit=10_000)}
        fresh = {
            r.key: (r.up_bytes, r.down_bytes, r.flows) for r in convs(t, sort="src", limit=10_000)
        }
        assert got == fresh and len(got) == len(set(t.column("conv_id", live).tolist()))


def test_the_view_counts_what_counted_once_keeps() -> None:
    """The counted-once rule is applied twice: as a mask over records
    (core/conversations.counted_once: zones, monitors) and over per-leg sums
    (the conversation view). Over random routers and hosts they agree."""
    rng = np.random.default_rng(7)
    spec: list[F] = []
    for i in range(300):
        c, s = f"10.0.{i // 200}.{i % 200 + 1}", f"10.1.0.{i % 50 + 1}"
        cport, sport = 30000 + i, 443
        legs = [
            F(c, cport, S, sport, 6, A, IN, 1000 + i, 10),
            F(c, cport, S, sport, 6, B, OUT, 990 + i, 9),
            F(S, sport, c, cport, 6, B, IN, 5000 + i, 20, first=5),
            F(S, sport, c, cport, 6, A, OUT, 4990 + i, 19, first=5),
        ]
        legs = [f._replace(dst=s) if f.src == c else f._replace(src=s) for f in legs]
        # Some conversations lose legs: a host's (egress out, ingress back), one-way ones.
        keep = rng.random(4) < 0.7
        spec += [f for f, k in zip(legs, keep, strict=True) if k]
    k, st = arrays(spec)
    words = layout.FLOW_KEY_WORDS.view(k)
    mask = counted_once(words)
    cid = conversation_ids(words)
    want: dict[int, int] = {}
    for i, b in zip(cid[mask].tolist(), st["bytes"][mask].tolist(), strict=True):
        want[i] = want.get(i, 0) + b
    rows = convs(table(spec), limit=10_000)
    got = {int(r.key.split(":")[1], 16): r.bytes for r in rows}
    assert len(got) == len(want) and got == want


def test_groups_count_a_forwarded_packet_once_and_the_legs_views_every_leg() -> None:
    """On a router: by source, by pair or by port a forwarded connection's
    bytes are its ingress legs' (as the conversation view counts them); by
    interface and by flow every leg is there."""
    t = table(router(up=1000, down=5000))

    def by(group: str) -> dict[str | None, int]:
        q = ViewQuery(group_by=group, limit=100)
        rows, _ = query_table(t, q, parse(""), IFNAMES)
        return {r.src if group == "src" else r.iface: r.bytes for r in rows}

    assert by("src") == {C: 1000, S: 5000}
    q = ViewQuery(group_by="port", limit=100)
    (port,) = query_table(t, q, parse(""), IFNAMES)[0]
    assert port.bytes == 6000 and port.flows == 4
    q = ViewQuery(group_by="iface", limit=100)
    ifaces = {(r.iface, r.direction): r.bytes for r in query_table(t, q, parse(""), IFNAMES)[0]}
    assert ifaces == {
        ("veth-a", "in"): 1000, ("veth-b", "out"): 900,
        ("veth-b", "in"): 5000, ("veth-a", "out"): 4900,
    }  # fmt: skip
    flows = query_table(t, ViewQuery(group_by="flow", limit=100), parse(""), IFNAMES)[0]
    assert sorted(r.bytes for r in flows) == [900, 1000, 4900, 5000]
