"""The first data segments of TCP connections, put in order by sequence
number until their start can be read (a ClientHello split over two
segments). Bounded: at most `max_conns` connections wait, each for at most
`timeout` seconds (then forgotten: most are another protocol's, with
nothing to read) and MAX_SEGMENTS segments; the ones dropped for room are
counted."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SEGMENTS = 2  # the kernel hands up a connection's first two data segments
MAX_BYTES = 16384  # bytes kept per connection


@dataclass
class _Pending:
    since: float
    segments: list[tuple[int, bytes, bool]] = field(default_factory=list)  # seq, data, whole


class FirstData:
    """Connection key -> its first segments so far."""

    def __init__(self, max_conns: int = 1024, timeout: float = 10.0) -> None:
        self.max_conns = max_conns
        self.timeout = timeout
        self._pending: dict[bytes, _Pending] = {}
        # Connections read (or given up on) -> when: their later segments
        # are not a start to read (bounded; forgotten after timeout).
        self._done: dict[bytes, float] = {}
        self.dropped = 0  # connections dropped for room

    def add(self, conn: bytes, seq: int, data: bytes, whole: bool, now: float) -> bytes | None:
        """This segment added; the connection's contiguous bytes from its
        lowest sequence number so far (a gap ends them, as does a cut
        capture); None for a connection already done."""
        if conn in self._done:
            return None
        p = self._pending.get(conn)
        if p is None:
            if len(self._pending) >= self.max_conns:
                self._expire(now)
                if len(self._pending) >= self.max_conns:
                    del self._pending[next(iter(self._pending))]  # the oldest
                    self.dropped += 1
            p = self._pending[conn] = _Pending(now)
        if all(s != seq for s, _d, _w in p.segments) and len(p.segments) < MAX_SEGMENTS:
            p.segments.append((seq, data, whole))
        return _contiguous(p.segments)

    def full(self, conn: bytes) -> bool:
        """Whether the connection has all the segments it will get."""
        p = self._pending.get(conn)
        return p is not None and len(p.segments) >= MAX_SEGMENTS

    def done(self, conn: bytes, now: float) -> None:
        self._pending.pop(conn, None)
        if len(self._done) >= 4 * self.max_conns:
            del self._done[next(iter(self._done))]  # the oldest
        self._done[conn] = now

    def _expire(self, now: float) -> None:
        old = [k for k, p in self._pending.items() if p.since < now - self.timeout]
        for k in old:
            del self._pending[k]
        while self._done:
            k = next(iter(self._done))  # in the order they were done
            if self._done[k] >= now - self.timeout:
                break
            del self._done[k]

    def expire(self, now: float) -> None:
        if self._pending or self._done:
            self._expire(now)

    def __len__(self) -> int:
        return len(self._pending)


def _contiguous(segments: list[tuple[int, bytes, bool]]) -> bytes:
    first = min(segments, key=lambda s: _rel(s[0], segments[0][0]))
    base = first[0]
    out = bytearray()
    for seq, data, whole in sorted(segments, key=lambda s: _rel(s[0], base)):
        if _rel(seq, base) != len(out):
            break  # a gap (or an overlap): what follows cannot be read in order
        out += data
        if not whole or len(out) >= MAX_BYTES:
            break
    return bytes(out[:MAX_BYTES])


def _rel(seq: int, base: int) -> int:
    """seq's distance after base, modulo 2**32 (signed: before is negative)."""
    d = (seq - base) & 0xFFFF_FFFF
    return d - (1 << 32) if d >= 1 << 31 else d
