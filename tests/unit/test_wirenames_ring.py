"""The bulk path from the ring to the names table: RingParser.read_span (one
copy per read) against read(), wire_records.decode_span against decode,
WireCapture over a ring laid out as the kernel's, and
WireNames.add_responses against add_answers."""

from __future__ import annotations

import random
import struct

import numpy as np

from flowtop.kernel import wire_records
from flowtop.kernel.wire_records import KIND_DNS, KIND_TCP_FIRST, WirePacket, decode, encode
from flowtop.kernel.wirecapture import WireCapture
from flowtop.wirenames import dnsanswers
from flowtop.wirenames.dnsanswers import TTL_CAP, clamp_ttl
from flowtop.wirenames.names import WireNames
from tests.unit.test_ringbuf import FakeRing
from tests.unit.wirenames_bytes import assert_same_dns_entries, cdn_response, dns_response


class _Ring:
    """A FakeRing as WireCapture reads it."""

    def __init__(self, ring: FakeRing) -> None:
        self.ring = ring

    def read_span(self, max_records: int) -> tuple[bytes, list[int], list[int]]:
        return self.ring.parser.read_span(max_records)

    def pending(self) -> int:
        return self.ring.parser.pending()

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def _packet(rng: random.Random) -> WirePacket:
    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
    return WirePacket(
        bytes(rng.randrange(256) for _ in range(48)),
        rng.choice([KIND_DNS, KIND_TCP_FIRST]),
        rng.randrange(1 << 32),
        payload,
        len(payload) + rng.choice([0, 0, rng.randrange(1000)]),
    )


def test_read_span_gives_read_s_records_and_consumes_once() -> None:
    rng = random.Random(5)
    a, b = FakeRing(1024), FakeRing(1024)
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    for i in range(300):  # round a small ring many times: records wrap past its end
        data = bytes([i & 255]) * rng.randrange(0, 40)
        discard = rng.random() < 0.1
        for ring in (a, b):
            if discard:
                ring.commit(ring.reserve(data), discard=True)
            else:
                ring.output(data)
        if i % 3 == 2:  # at most 2 of the 3 written (all every 30): reads stop short at times
            n = 2 if i % 30 != 29 else 10_000
            got_a += a.parser.read(n)
            span, offs, lens = b.parser.read_span(n)
            got_b += [span[o : o + n] for o, n in zip(offs, lens, strict=True)]
            assert a.cons == b.cons
    got_a += a.parser.read(10_000)
    got_b += b.parser.read(10_000)
    assert got_a == got_b and a.cons == a.pos and b.cons == b.pos


def test_read_span_stops_at_a_busy_record() -> None:
    ring = FakeRing(4096)
    ring.output(b"one")
    busy = ring.reserve(b"two")
    ring.output(b"three")
    span, offs, lens = ring.parser.read_span(100)
    assert [span[o : o + n] for o, n in zip(offs, lens, strict=True)] == [b"one"]
    assert ring.cons == busy
    assert ring.parser.read_span(100) == (b"", [], [])
    ring.commit(busy)
    assert ring.parser.read(100) == [b"two", b"three"]


def test_decode_span_is_decode_of_each() -> None:
    rng = random.Random(6)
    records = []
    for _ in range(2000):
        raw = bytearray(encode(_packet(rng)))
        how = rng.randrange(8)
        if how == 0:
            raw = raw[: rng.randrange(len(raw))]  # short, or a length that disagrees
        elif how == 1:
            raw[48] = rng.randrange(256)  # the kind
        elif how == 2:
            struct.pack_into("<I", raw, 56, rng.randrange(100))  # payload_len
        records.append(bytes(raw))
    want = [decode(r) for r in records]
    span = b"".join(records)
    offs = np.cumsum([0] + [len(r) for r in records[:-1]]).tolist()
    got, bad = wire_records.decode_span(span, offs, [len(r) for r in records])
    assert got == [p for p in want if p is not None]
    assert bad == sum(p is None for p in want) > 300


def test_capture_over_a_ring_gives_the_packets_written() -> None:
    rng = random.Random(7)
    ring = FakeRing(1 << 16)
    capture = WireCapture.of_ring(_Ring(ring))
    sent = [_packet(rng) for _ in range(500)]
    got: list[WirePacket] = []
    for i, p in enumerate(sent):
        ring.output(encode(p))
        if i % 7 == 0:
            ring.output(b"\x00" * 10)  # not a record the program writes: counted
        if i % 50 == 49:
            got += capture.read(30)
    while batch := capture.read(30):
        got += batch
    assert got == sent
    assert capture.counters() == {"wire_malformed": len(range(0, 500, 7))}


def test_add_responses_is_add_answers() -> None:
    rng = random.Random(8)
    a, b = WireNames(ttl_floor=20), WireNames(ttl_floor=20)
    for i in range(300):
        ttls = [rng.choice([0, 19, 20, 21, TTL_CAP - 1, TTL_CAP, TTL_CAP + 1, 86400]) for _ in "ab"]
        wire, client = cdn_response(i, ttls)
        now = float(i)
        answers, _st = dnsanswers.parse_response(wire)
        a.add_answers(client, answers, now)
        assert b.add_responses([(client, dnsanswers.parse(wire))], now) == len(answers)
        assert {x.ttl for x in answers} == {min(ttls)}
    assert_same_dns_entries(a, b)
    # The deadlines are clamp_ttl's, floor above the cap too.
    c = WireNames(ttl_floor=TTL_CAP + 100)
    wire = dns_response("x.test", [("x.test.", 5, "A", ["192.0.2.1"])])
    c.add_responses([(bytes(16), dnsanswers.parse(wire))], 1000.0)
    c._dns.flush()
    assert c._dns.deadline[c._dns.rows[next(iter(c._dns.rows))]] == 1000.0 + clamp_ttl(
        5, TTL_CAP + 100
    )
