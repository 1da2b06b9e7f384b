"""The TC program's names-from-the-wire ring, as WirePackets.

Made by the collector from the program's ring fd (TcProgram.wire_ring_fd)
when names are on; the userspace names side (flowtop/wirenames/) polls
fileno() and calls read() from its own thread.
"""

from __future__ import annotations

from typing import Protocol

from flowtop.kernel.ringbuf import MalformedRecord, RingBuffer
from flowtop.kernel.wire_records import WirePacket, decode_span

# Records read per read() call at most (bounded work per call).
DEFAULT_MAX = 4096


class SpanRing(Protocol):
    """What WireCapture reads: ringbuf.RingBuffer (a bench gives a RingParser
    over its own bytes, wrapped)."""

    def read_span(self, max_records: int) -> tuple[bytes, list[int], list[int]]: ...

    def pending(self) -> int: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class WireCapture:
    """What the kernel handed up for names, in the order it did.

    read(max_events) returns up to max_events WirePackets at once, never
    blocking ([] when nothing is there): DNS responses (KIND_DNS) and the
    first data segments of new TCP connections (KIND_TCP_FIRST), each with
    the packet's flow key, its TCP sequence number and a bounded prefix of
    its payload (bpf/wirenames.h says which packets, and what is counted in
    the kernel when one is not handed up: wire_rate_limited,
    wire_ring_full). fileno() is readable when records wait (epoll or
    select on it). counters(): what this side dropped, `wire_malformed`
    records that do not decode (none should) and the reads a corrupt ring
    ended. Not thread-safe: one reader.
    """

    def __init__(self, ring_fd: int) -> None:
        self._ring: SpanRing = RingBuffer(ring_fd)
        self._malformed = 0

    @classmethod
    def of_ring(cls, ring: SpanRing) -> WireCapture:
        """A capture reading `ring` (closed with it)."""
        self = cls.__new__(cls)
        self._ring, self._malformed = ring, 0
        return self

    def fileno(self) -> int:
        return self._ring.fileno()

    def read(self, max_events: int = DEFAULT_MAX) -> list[WirePacket]:
        try:
            span, offsets, lengths = self._ring.read_span(max_events)
        except MalformedRecord:
            # The kernel writes the headers; this cannot happen short of a
            # bug. Counted, and the ring stays where it was.
            self._malformed += 1
            return []
        out, bad = decode_span(span, offsets, lengths)
        self._malformed += bad
        return out

    def pending_bytes(self) -> int:
        """Bytes the kernel wrote that read() has not taken yet."""
        return self._ring.pending()

    def counters(self) -> dict[str, int]:
        return {"wire_malformed": self._malformed}

    def close(self) -> None:
        self._ring.close()
