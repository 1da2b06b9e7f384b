"""The conversation view's kept state (query/conversations.ConvSlots) and
the address text of rows (query/rows._addr), against ground truth computed
here from the table's rows and from ipaddress."""

from __future__ import annotations

import ipaddress
import random

import numpy as np

from flowtop.core.flowtable import NS, FlowTable
from flowtop.kernel import layout
from flowtop.query.conversations import ConvSlots
from flowtop.query.rows import _addr

from .test_conversations import IN, T0, A, B, C, F, S, arrays, convs, router

_KEY = layout.FLOW_KEY_WORDS


def _truth(t: FlowTable, rows: np.ndarray) -> dict[int, tuple[int, int]]:
    """Per conversation id of rows: (bytes counted once, flow rows), in
    Python: each (conversation, canonical direction) counts its ingress rows
    when it has any, else its egress rows."""
    cid = t.column("conv_id", rows).tolist()
    leg = t.column("conv_leg", rows).tolist()
    nbytes = t.column("bytes", rows).tolist()
    sums: dict[tuple[int, int], int] = {}
    for c, g, b in zip(cid, leg, nbytes, strict=True):
        sums[c, g] = sums.get((c, g), 0) + b
    out: dict[int, tuple[int, int]] = {}
    for c in set(cid):
        total = 0
        for d in (0, 1):
            total += sums[c, d * 2] if (c, d * 2) in sums else sums.get((c, d * 2 + 1), 0)
        out[c] = (total, cid.count(c))
    return out


def _check_slots(t: FlowTable, slots: ConvSlots, rows: np.ndarray) -> None:
    b = slots.buckets(t, rows)
    cid = t.column("conv_id", rows)
    assert (b >= 0).all()
    assert ((b & 3) == t.column("conv_leg", rows)).all()
    assert (slots.ids[b >> 2] == cid).all()
    # One slot per conversation: as many slots in use as distinct ids.
    assert len(np.unique(b >> 2)) == len(np.unique(cid))


def test_slots_and_the_top_conversations_follow_the_table_through_churn() -> None:
    """Rounds of new connections (some with legs missing), idle ends and
    rows reused by other flows: every round each live row's slot holds its
    conversation id and leg, and the top conversations by bytes and flows
    (and with a filter) are those a Python count of the rows gives."""
    rng = np.random.default_rng(11)
    t = FlowTable(clock_offset=0.0, idle_timeout=3.0)
    slots = ConvSlots.of(t)
    peak = 0  # the most conversations live at once
    for rnd in range(12):
        spec = []
        for i in rng.choice(3000, 600, replace=False).tolist():
            # Half the connections come back the next round, half are new.
            cport = 1024 + i + (rnd * 3000 if i % 2 else 0)
            legs = router(up=1000 + i, down=2000 + 3 * i, cport=cport, sport=(443, 22)[i % 2])
            keep = rng.random(4) < 0.8
            spec += [f for f, k in zip(legs, keep, strict=True) if k] or legs[:1]
        k, s = arrays(spec)
        s["first_seen_ns"] = s["last_seen_ns"] = T0 + rnd * 2 * NS
        t.merge(k, s, interval=1.0)
        t.expire(T0 + rnd * 2 * NS)
        live = t.live_rows()
        _check_slots(t, slots, live)
        truth = _truth(t, live)
        peak = max(peak, len(truth))
        for sort, at in (("bytes", 0), ("flows", 1)):
            want = sorted(truth, key=lambda c: (-truth[c][at], c))[:25]
            got = convs(t, sort=sort, limit=25)
            assert [int(r.key.split(":")[1], 16) for r in got] == want, (rnd, sort)
            assert [(r.bytes, r.flows) for r in got] == [truth[c] for c in want]
        sub = live[_KEY.field(t.words_at(live), "sport") == 22]
        sub = np.union1d(sub, live[_KEY.field(t.words_at(live), "dport") == 22])
        subtruth = _truth(t, sub)
        got = convs(t, "port 22", sort="bytes", limit=10_000)
        assert {int(r.key.split(":")[1], 16): (r.bytes, r.flows) for r in got} == subtruth
        _check_slots(t, slots, sub)
    # Ended rows give their slots back: no more slots than conversations
    # live at once, plus the ended rows a sweep waits for (at most 1024
    # here); the connections seen in all are several times more.
    assert len(slots.ids) <= peak + 1024 < 12 * 300
    # Then almost everything ends: the sweep frees the ended rows' slots.
    k, s = arrays(router(cport=99, sport=443))
    s["first_seen_ns"] = s["last_seen_ns"] = T0 + 100 * NS
    t.merge(k, s, interval=1.0)
    t.expire(T0 + 100 * NS)
    assert len(t) == 4 and len(convs(t)) == 1
    assert len(slots) == 1


def test_a_row_reused_by_another_leg_of_the_same_conversation() -> None:
    """A leg ends and, in the same interval, another leg of the same
    conversation takes its row (the table reuses the last freed row): the
    row's bucket follows the new leg, and the view counts it."""
    t = FlowTable(clock_offset=0.0, idle_timeout=1.0)
    first = [
        F(C, 40000, S, 443, 6, A, IN, 1000, 10),
        F(S, 443, C, 40000, 6, A, layout.DIR_EGRESS, 5000, 20),
    ]
    k, s = arrays(first)
    t.merge(k, s, interval=1.0)
    (r,) = convs(t)
    assert (r.up_bytes, r.down_bytes, r.flows) == (1000, 5000, 2)
    old = t.live_rows()
    slots = ConvSlots.of(t)
    before = slots.buckets(t, old).tolist()
    # The egress row goes idle; the same conversation's ingress reply comes.
    k, s = arrays([first[0]._replace(nbytes=100, packets=1)])
    s["first_seen_ns"] = s["last_seen_ns"] = T0 + 3 * NS
    t.merge(k, s, interval=1.0)
    t.expire(T0 + 3 * NS)
    k, s = arrays([F(S, 443, C, 40000, 6, B, IN, 7000, 30, first=3 * NS)])
    t.merge(k, s, interval=1.0)
    live = t.live_rows()
    assert sorted(live.tolist()) == sorted(old.tolist())  # the freed row was reused
    after = slots.buckets(t, live).tolist()
    assert sorted(after) != sorted(before) and len({b >> 2 for b in after}) == 1
    _check_slots(t, slots, live)
    (r,) = convs(t)
    assert (r.up_bytes, r.down_bytes, r.flows) == (1100, 7000, 2)
    # Each direction entered once (A, then B) and left by none: not
    # forwarded; this host receives the down direction: the client end.
    assert (r.role, r.iface) == ("client", "veth-a")


def test_addresses_read_as_ipaddress_writes_them() -> None:
    """The rows' address text (inet_ntop with ipaddress where glibc writes
    an embedded IPv4 address) equals ipaddress's, over random IPv6
    addresses rich in zero groups, the embedded-IPv4 forms and IPv4."""
    rnd = random.Random(5)
    cases = [bytes(16), bytes(15) + b"\x01", bytes(10) + b"\xff\xff\x0a\x00\x00\x01",
             bytes(12) + b"\x0a\x00\x00\x01", bytes(11) + b"\x01" + bytes(4)]  # fmt: skip
    for _ in range(20_000):
        groups = [rnd.choice((0, 0, 0, 1, 0xFFFF, rnd.randrange(65536))) for _ in range(8)]
        cases.append(b"".join(g.to_bytes(2, "big") for g in groups))
    for raw in cases:
        assert _addr(raw, 6) == str(ipaddress.IPv6Address(raw)), raw.hex()
    for _ in range(2000):
        raw = bytes(rnd.randrange(256) for _ in range(4)) + bytes(12)
        assert _addr(raw, 4) == str(ipaddress.IPv4Address(raw[:4]))
    assert _addr(bytes(16), 4) == "0.0.0.0"
