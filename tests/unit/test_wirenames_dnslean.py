"""The feeder's DNS path (dnsanswers.parse_into and its lean parse _lean,
straight into a names.DnsBatch) against the full bounded parse (_parse, as
parse() falls back to it): on the responses servers send (dnspython's wire
format, the bench's shapes) the lean parse answers and puts exactly the
full parse's answers into the batch; on mutated, cut and hostile responses
it either agrees or defers (None, the batch untouched); parse_into agrees
with the full parse on every sighting of a response (first, second: parsed
and cached, third: from the cache); and WireNames.add_batch gives the table
add_answers gives."""

from __future__ import annotations

import itertools
import random

import pytest

from flowtop.wirenames import dnsanswers
from flowtop.wirenames.dnsanswers import (
    MAX_CHAIN,
    TTL_CAP,
    Parsed,
    Status,
    _lean,
    _parse,
    parse_into,
)
from flowtop.wirenames.names import DnsBatch, WireNames
from tests.unit.test_wirenames_dnsfast import _bench_shape, _common, _mutants
from tests.unit.wirenames_bytes import assert_same_dns_entries, cdn_response, dns_response

CLIENT = bytes([10, 1, 2, 3]) + bytes(12)


def _full(wire: bytes) -> Parsed:
    try:
        return _parse(wire)
    except dnsanswers._Bad:
        return dnsanswers._MALFORMED


def _want(wire: bytes) -> tuple[Status, tuple[list[object], ...]]:
    """The full parse's status and the batch it makes for CLIENT."""
    got = _full(wire)
    b = DnsBatch()
    b.add(CLIENT, got)
    return got.status, _lists(b)


def _lists(b: DnsBatch) -> tuple[list[object], ...]:
    return (list(b.keys), list(b.ttls), list(b.qnames), list(b.ends), list(b.counts))


@pytest.fixture(autouse=True)
def _no_caches() -> None:
    dnsanswers._SEEN.clear()
    dnsanswers._SHOWN.clear()
    dnsanswers._ONCE.clear()


def test_lean_parse_answers_the_common_responses_exactly() -> None:
    rng = random.Random(61)
    wires = [_bench_shape(i) for i in range(300)] + [_common(rng, i) for i in range(700)]
    lean = 0
    for w in wires:
        status, want = _want(w)
        assert status is Status.OK
        b = DnsBatch()
        got = _lean(w, CLIENT, b)
        if got is None:
            assert _lists(b) == ([], [], [], [], [])
            continue
        lean += 1
        assert got is status and _lists(b) == want, w.hex()
    # The bench's shape always, and most of the others (the rest have an
    # unrelated record, a TXT or an rrset's order the lean shape defers on).
    assert all(_lean(_bench_shape(i), CLIENT, DnsBatch()) for i in range(300))
    assert lean > 700
    # The bench's shape, by hand: the store key (version word, client,
    # address), the chain's TTL, the names.
    b = DnsBatch()
    assert _lean(_bench_shape(7), CLIENT, b) is Status.OK
    assert sorted(b.keys) == sorted(
        DnsBatch.head(4, CLIENT) + bytes(a) + bytes(12) for a in ([198, 51, 0, 7], [203, 0, 113, 1])
    )
    assert (b.ttls, b.qnames, b.ends, b.counts) == ([60, 60], ["site7.example.com"],
                                                     ["e7.cdn.test"], [2])  # fmt: skip


def test_mutated_responses_agree_or_defer() -> None:
    rng = random.Random(6161)
    seeds = [_bench_shape(i) for i in range(50)] + [_common(rng, i) for i in range(200)]
    taken = deferred = 0
    statuses = set()
    for w in seeds:
        for m in _mutants(w, rng):
            status, want = _want(m)
            statuses.add(status)
            b = DnsBatch()
            b.keys.append(b"before")  # what the batch held before is kept as it was
            b.ttls.append(-1)
            got = _lean(m, CLIENT, b)
            if got is None:
                deferred += 1
                assert _lists(b) == ([b"before"], [-1], [], [], [])
            else:
                taken += 1
                assert got is status and _lists(b)[0][1:] == want[0], m.hex()
                assert _lists(b)[1:] == ([-1, *want[1]], *want[2:])
            # The feeder's path, every sighting: lean (or parse), parse and cache, cache.
            for _ in range(3):
                b = DnsBatch()
                assert parse_into(m, CLIENT, b) is status
                assert _lists(b) == want
    assert taken > 2000 and deferred > 1000
    assert statuses == {Status.OK, Status.MALFORMED, Status.NOT_RESPONSE}


def _chain(n: int, loop: bool = False) -> bytes:
    """A response whose CNAME chain has n links (the last back to the
    question when loop), then an A record of its end."""
    names = ["q.test"] + [f"c{i}.test" for i in range(n)]
    pairs = enumerate(itertools.pairwise(names))
    rr = [(a + ".", 100 + i, "CNAME", [b + "."]) for i, (a, b) in pairs]
    if loop:
        rr.append((names[-1] + ".", 50, "CNAME", ["q.test."]))
    rr.append((("q.test" if loop else names[-1]) + ".", 200, "A", ["192.0.2.7"]))
    return dns_response("q.test", rr)


def test_chains_loops_and_hostile_messages_defer_or_agree() -> None:
    head = bytes.fromhex("123481800001000100000000")
    q = b"\x01a\x04test\x00\x00\x01\x00\x01"
    rr = b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"  # A, IN, 60 s, 192.0.2.1
    cases = [
        head + b"\xc0\x0c\x00\x01\x00\x01",  # the question's name a pointer to itself
        head + q + b"\x01a\x04test\x00" + rr,  # the owner written out
        head + q + b"\xc0\x0c" + rr[:-1],  # cut rdata
        head + q + b"\xc0\x30" + rr,  # a forward pointer
        head + b"\x3f" + b"a" * 63 + b"\x00\x00\x01\x00\x01",  # a question, no answer (count 1)
        head[:4] + b"\x00\x02" + head[6:] + q + q,  # two questions: the full parse's
        head + b"".join(b"\x3f" + b"b" * 63 for _ in range(5)) + b"\x00\x00\x01\x00\x01",  # > 255
        head + b"\x09ev\x1b[31mil\x00\x00\x01\x00\x01" + b"\xc0\x0c" + rr,  # an escape: cleaned
        head + b"\x01\x00\x00\x00\x01\x00\x01",  # a question name of one NUL byte
        head + q + b"\xc0\x0c" + rr[:2] + b"\x00\x03" + rr[4:],  # another class
    ]
    cases += [_chain(n) for n in (1, 2, MAX_CHAIN - 1, MAX_CHAIN, MAX_CHAIN + 1, MAX_CHAIN + 3)]
    cases += [_chain(n, loop=True) for n in (0, 1, 2, 3, 5)]
    for w in cases:
        status, want = _want(w)
        b = DnsBatch()
        got = _lean(w, CLIENT, b)
        assert got is None or (got is status and _lists(b) == want), w.hex()
        assert parse_into(w, CLIENT, DnsBatch()) is status
    # Taken by the lean parse and exact: the chain up to MAX_CHAIN links, its
    # smallest TTL on the address; past it and loops defer (the full parse's
    # walk of MAX_CHAIN links decides).
    for n in (1, 2, MAX_CHAIN):
        b = DnsBatch()
        assert _lean(_chain(n), CLIENT, b) is Status.OK
        assert (b.ttls, b.ends) == ([100], [f"c{n - 1}.test"])
    assert _lean(_chain(MAX_CHAIN + 1), CLIENT, DnsBatch()) is None
    assert all(_lean(_chain(n, loop=True), CLIENT, DnsBatch()) is None for n in (1, 2, 3))
    assert _lean(cases[1], CLIENT, DnsBatch()) is None and _want(cases[1])[1][0]
    b = DnsBatch()
    assert _lean(cases[7], CLIENT, b) is Status.OK and b.qnames == ["evil"]


def test_add_batch_is_add_answers() -> None:
    rng = random.Random(9)
    a, b = WireNames(ttl_floor=20), WireNames(ttl_floor=20)
    batch = DnsBatch()
    for i in range(400):
        ttls = [rng.choice([0, 19, 20, 21, TTL_CAP - 1, TTL_CAP, TTL_CAP + 1, 86400]) for _ in "ab"]
        wire, client = cdn_response(i, ttls)
        answers, _st = dnsanswers.parse_response(wire)
        a.add_answers(client, answers, 1000.0)
        assert parse_into(wire, client, batch) is Status.OK
    assert b.add_batch(batch, 1000.0) == len(batch.keys) == 400 * 3
    assert b.add_batch(DnsBatch(), 1000.0) == 0
    assert_same_dns_entries(a, b)
    assert a.names.values == b.names.values  # interned in the same order
    assert a.counters()["dns_entries"] == b.counters()["dns_entries"]


def test_a_response_read_once_is_cached_on_its_second_sight() -> None:
    # A distinct response leaves no Parsed behind (garbage for the collector
    # when nearly all are distinct); one seen again is parsed and cached.
    wire = _bench_shape(3)
    status, want = _want(wire)
    for sight in range(3):
        b = DnsBatch()
        assert parse_into(wire[:1] + bytes([sight]) + wire[2:], CLIENT, b) is status
        assert _lists(b) == want
        assert len(dnsanswers._SEEN) == (sight > 0) and len(dnsanswers._ONCE) == 1
