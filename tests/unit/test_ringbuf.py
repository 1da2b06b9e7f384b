"""kernel/ringbuf.py's parser over a fake ring laid out as the kernel lays it
out (kernel/bpf/ringbuf.c): a consumer page, then a producer page followed
by the data area twice (the kernel maps the same pages twice, so the fake
producer writes every byte at both places). Records: an 8-byte header (u32
length with BUSY bit 31 and DISCARD bit 30, u32 page offset), the bytes,
padding to 8.
"""

from __future__ import annotations

import struct

import pytest

from flowtop.kernel import wire_records
from flowtop.kernel.ringbuf import BUSY_BIT, DISCARD_BIT, MalformedRecord, RingParser
from flowtop.kernel.wire_records import KIND_DNS, KIND_TCP_FIRST, WirePacket

PAGE = 4096


class FakeRing:
    """A producer writing records as the kernel does."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.consumer = bytearray(PAGE)
        self.producer = bytearray(PAGE + 2 * size)
        self.pos = 0
        self.parser = RingParser(memoryview(self.consumer), memoryview(self.producer), size, PAGE)

    @property
    def cons(self) -> int:
        return int(struct.unpack_from("<Q", self.consumer)[0])

    def _put(self, at: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            off = (at + i) % self.size
            self.producer[PAGE + off] = byte
            self.producer[PAGE + self.size + off] = byte

    def reserve(self, payload: bytes) -> int:
        """Writes a busy record; returns its position."""
        total = (len(payload) + 8 + 7) & ~7
        assert self.pos + total - self.cons <= self.size, "ring full"
        at = self.pos
        self._put(at, struct.pack("<II", len(payload) | BUSY_BIT, 0) + payload)
        self.pos += total
        struct.pack_into("<Q", self.producer, 0, self.pos)
        return at

    def commit(self, at: int, discard: bool = False) -> None:
        length = int(struct.unpack_from("<I", self.producer, PAGE + at % self.size)[0])
        length &= ~BUSY_BIT
        self._put(at, struct.pack("<I", length | (DISCARD_BIT if discard else 0)))

    def output(self, payload: bytes) -> None:
        self.commit(self.reserve(payload))


def test_records_in_order_rounded_to_eight() -> None:
    ring = FakeRing(4096)
    records = [b"a", b"bcdefghij", b"x" * 16, b""]
    for r in records:
        ring.output(r)
    assert ring.parser.read(100) == records
    # 1 -> 16, 9 -> 24, 16 -> 24, 0 -> 8 bytes with their headers
    assert ring.cons == 16 + 24 + 24 + 8 == ring.pos
    assert ring.parser.read(100) == []


def test_stops_at_a_busy_record_and_skips_discarded() -> None:
    ring = FakeRing(4096)
    ring.output(b"one")
    busy = ring.reserve(b"two")
    ring.output(b"three")  # committed, but after a busy one
    assert ring.parser.read(100) == [b"one"]
    assert ring.cons == busy
    ring.commit(busy, discard=True)
    assert ring.parser.read(100) == [b"three"]
    assert ring.cons == ring.pos


def test_max_records_bounds_the_work() -> None:
    ring = FakeRing(4096)
    for i in range(10):
        ring.output(bytes([i]) * 5)
    assert ring.parser.read(3) == [bytes([i]) * 5 for i in range(3)]
    assert ring.parser.pending() == 7 * 16
    assert ring.parser.read(100) == [bytes([i]) * 5 for i in range(3, 10)]


def test_wraps_past_the_end_through_the_double_mapping() -> None:
    ring = FakeRing(256)
    sent: list[bytes] = []
    got: list[bytes] = []
    for i in range(100):  # many times round a 256-byte ring
        data = bytes([i]) * (i % 37 + 1)
        ring.output(data)
        sent.append(data)
        if i % 3 == 2:
            got.extend(ring.parser.read(100))
    got.extend(ring.parser.read(100))
    assert got == sent
    assert ring.cons == ring.pos > 256 * 10


def test_a_length_past_the_ring_is_malformed() -> None:
    ring = FakeRing(256)
    struct.pack_into("<II", ring.producer, PAGE, 1000, 0)
    struct.pack_into("<Q", ring.producer, 0, 1008)
    with pytest.raises(MalformedRecord):
        ring.parser.read(10)
    assert ring.cons == 0


def test_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError):
        RingParser(memoryview(bytearray(PAGE)), memoryview(bytearray(PAGE + 600)), 300, PAGE)


def _event(kind: int, seq: int, payload: bytes, payload_len: int, cap_len: int) -> bytes:
    key = bytes(range(48))
    return struct.pack("<48sB3xIII", key, kind, seq, payload_len, cap_len) + payload


def test_decode_events() -> None:
    assert wire_records.HDR_SIZE == 64
    raw = _event(KIND_TCP_FIRST, 0xDEADBEEF, b"hello", 900, 5)
    assert wire_records.decode(raw) == WirePacket(
        bytes(range(48)), KIND_TCP_FIRST, 0xDEADBEEF, b"hello", 900
    )
    assert wire_records.decode(_event(KIND_DNS, 0, b"abc", 3, 3)) == WirePacket(
        bytes(range(48)), KIND_DNS, 0, b"abc", 3
    )
    # A length that disagrees, an unknown kind, more captured than sent, short.
    assert wire_records.decode(_event(KIND_DNS, 0, b"abc", 3, 4)) is None
    assert wire_records.decode(_event(7, 0, b"abc", 3, 3)) is None
    assert wire_records.decode(_event(KIND_DNS, 0, b"abc", 2, 3)) is None
    assert wire_records.decode(b"\x00" * 10) is None
