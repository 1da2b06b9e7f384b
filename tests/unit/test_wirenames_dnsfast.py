"""The lean DNS parse (dnsanswers._quick) against the full bounded one
(dnsanswers._parse): on the responses servers send (dnspython's wire format,
the bench's shapes) the lean one answers and agrees exactly; on mutated and
cut responses it either agrees or defers (None) to the full one. The name
cleaning's shortcut (_text) against hostname.shown_name."""

from __future__ import annotations

import itertools
import random

import pytest

from flowtop.wirenames import dnsanswers
from flowtop.wirenames.dnsanswers import Parsed, Status, _parse, _quick, _text, parse
from flowtop.wirenames.hostname import shown_name
from tests.unit.wirenames_bytes import dns_response


def _full(wire: bytes) -> Parsed:
    """What the full parse makes of wire (parse()'s fallback, _Bad included)."""
    try:
        return _parse(wire)
    except dnsanswers._Bad:
        return dnsanswers._MALFORMED


def _common(rng: random.Random, i: int) -> bytes:
    """A response of the shapes a resolver sends: the question, a CNAME chain
    of 0-3 links (targets sharing the question's suffix or not), A and AAAA
    records of its end, now and then an unrelated record or another class."""
    name = f"h{i}.z{rng.randrange(9)}.example.com"
    chain = [name]
    for j in range(rng.randrange(4)):
        chain.append(rng.choice([f"e{i}-{j}.cdn.test", f"c{j}.{name}", f"x{j}.example.com"]))
    rrsets: list[tuple[str, int, str, list[str]]] = []
    for a, b in itertools.pairwise(chain):
        rrsets.append((a + ".", rng.randrange(0, 90000), "CNAME", [b + "."]))
    end = chain[-1] + "."
    v4 = [f"198.51.{rng.randrange(256)}.{k}" for k in range(rng.randrange(0, 4))]
    v6 = [f"2001:db8::{rng.randrange(1 << 16):x}" for _ in range(rng.randrange(0, 3))]
    if v4:
        rrsets.append((end, rng.randrange(0, 90000), "A", v4))
    if v6:
        rrsets.append((end, rng.randrange(0, 90000), "AAAA", v6))
    if rng.random() < 0.2:
        rrsets.append(("other.test.", 60, "A", ["203.0.113.9"]))
    if rng.random() < 0.1:
        rrsets.append((end, 60, "TXT", ['"v=spf1 -all"']))
    return dns_response(name, rrsets, qtype="AAAA" if v6 and not v4 else "A")


def _bench_shape(i: int) -> bytes:
    """bench/wirename_events.py's distinct response: a CNAME and two A records."""
    name = f"site{i}.example.com"
    a = f"198.{51 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
    return dns_response(name, [(name + ".", 300, "CNAME", [f"e{i}.cdn.test."]),
                               (f"e{i}.cdn.test.", 60, "A", [a, "203.0.113.1"])])  # fmt: skip


@pytest.fixture(autouse=True)
def _no_caches() -> None:
    dnsanswers._SEEN.clear()
    dnsanswers._SHOWN.clear()


def test_lean_parse_answers_the_common_responses_exactly() -> None:
    rng = random.Random(16)
    wires = [_bench_shape(i) for i in range(300)] + [_common(rng, i) for i in range(700)]
    answered = 0
    for w in wires:
        full = _full(w)
        assert full.status is Status.OK
        quick = _quick(w)
        assert quick is not None, w.hex()  # servers compress: the lean path takes them all
        assert quick == full
        answered += bool(full.addrs)
    assert answered > 600  # most of them name addresses (the rest: no A/AAAA at the end)
    # The bench's shape, by hand: the qname, the chain's end, both addresses, the chain's TTL.
    got = _quick(_bench_shape(7))
    assert got is not None
    assert (got.qname, got.cname_end) == ("site7.example.com", "e7.cdn.test")
    want = [
        (4, bytes([198, 51, 0, 7]) + bytes(12), 60),
        (4, bytes([203, 0, 113, 1]) + bytes(12), 60),
    ]
    assert sorted(got.addrs) == want  # an rrset's order is dnspython's


def _mutants(wire: bytes, rng: random.Random) -> list[bytes]:
    out = []
    for _ in range(40):
        b = bytearray(wire)
        how = rng.randrange(6)
        if how == 0:  # a byte changed anywhere
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif how == 1:  # a byte in the header or the question (counts, flags, labels)
            b[rng.randrange(min(len(b), 40))] = rng.randrange(256)
        elif how == 2:  # cut
            del b[rng.randrange(len(b)) :]
        elif how == 3:  # bytes inserted
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif how == 4:  # a pointer aimed anywhere (loops, forward, into labels)
            at = rng.randrange(12, len(b) - 1)
            b[at], b[at + 1] = 0xC0 | rng.randrange(4), rng.randrange(256)
        else:  # the answer count, the rdata length of some record
            if rng.random() < 0.5:
                b[6:8] = rng.randrange(70).to_bytes(2, "big")
            else:
                at = rng.randrange(12, len(b) - 1)
                b[at : at + 2] = rng.randrange(40).to_bytes(2, "big")
        out.append(bytes(b))
    return out


def test_mutated_responses_agree_or_defer() -> None:
    rng = random.Random(1616)
    seeds = [_bench_shape(i) for i in range(50)] + [_common(rng, i) for i in range(200)]
    taken = deferred = 0
    statuses = set()
    for w in seeds:
        for m in _mutants(w, rng):
            full = _full(m)
            quick = _quick(m)
            statuses.add(full.status)
            if quick is None:
                deferred += 1
            else:
                taken += 1
                assert quick == full, m.hex()
            dnsanswers._SEEN.clear()
            assert parse(m) == full  # the path the feeder takes gives the full parse's facts
    # Both sides of the fast path were exercised, over every status.
    assert taken > 2000 and deferred > 1000
    assert statuses == {Status.OK, Status.MALFORMED, Status.NOT_RESPONSE}


def test_hostile_and_odd_messages_defer_or_agree() -> None:
    head = bytes.fromhex("1234818000010001 00000000".replace(" ", ""))
    q = b"\x01a\x04test\x00\x00\x01\x00\x01"
    rr = b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"  # A, IN, 60 s, 192.0.2.1
    cases = [
        head + b"\xc0\x0c\x00\x01\x00\x01",  # the question's name a pointer to itself
        head + q + b"\x01a\x04test\x00" + rr,  # the owner written out
        head + q + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02",  # cut rdata
        head + q + b"\xc0\x30\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01",  # forward
        head + b"\x3f" + b"a" * 63 + b"\x00\x00\x01\x00\x01",  # a question, no answer (count 1)
        head[:4] + b"\x00\x02" + head[6:] + q + q,  # two questions: the full parse's
        head + b"".join(b"\x3f" + b"b" * 63 for _ in range(5)) + b"\x00\x00\x01\x00\x01",  # > 255
    ]
    for w in cases:
        quick = _quick(w)
        assert quick is None or quick == _full(w)
    assert _quick(cases[1]) == _full(cases[1])  # an owner written out: read as _parse does
    assert _full(cases[1]).addrs
    assert _quick(cases[-1]) is None and _full(cases[-1]).status is Status.MALFORMED


def test_names_shortcut_is_shown_name() -> None:
    rng = random.Random(253)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-_." + b" \t\x1b\x7f\xc3\xa9\xe2\x80\xae/*A"
    names = [b"", b".", b"a.", b"..", b"a" * 253, b"a" * 254, b"x.example.com", b"-", b"_a._b"]
    for _ in range(5000):
        n = rng.choice([rng.randrange(1, 20), rng.randrange(240, 270)])
        names.append(bytes(rng.choice(alphabet) for _ in range(n)).lower())
    for name in names:
        dnsanswers._SHOWN.clear()
        assert _text(name) == shown_name(name.decode("utf-8", "replace")), name
