"""DNS responses over TCP that span segments, put together by sequence number.

A response longer than one segment (many records, DNSSEC) starts with its
2-byte length prefix in one segment and goes on in the next ones. The
kernel hands up every segment from a DNS port with its sequence number
(bpf/wirenames.h); here a stream waits for the rest of its message, in
order. Bounded: at most `max_streams` wait (the oldest is dropped for room,
counted), each for at most `timeout` seconds and one message (at most
65,535 bytes, the prefix's limit). A gap, a segment out of order or one the
capture cut ends the stream: that message is left unparsed (counted by the
caller as dns_tcp_unparsed).

The same segment can come twice: a retransmit, or a router's two hooks
(ingress on one leg, egress on the other). A segment inside what a stream
already has, or inside a message already put together (remembered
briefly), is a copy: seen() says so and the caller skips it.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEQ_MOD = 1 << 32


@dataclass
class _Stream:
    since: float
    need: int  # bytes of the message with its prefix (0: the prefix not all here yet)
    next_seq: int  # the sequence number the next segment must start at
    data: bytearray


class DnsStreams:
    """Connection key -> the DNS message it is in the middle of."""

    def __init__(self, max_streams: int = 256, timeout: float = 10.0) -> None:
        self.max_streams = max_streams
        self.timeout = timeout
        self._streams: dict[bytes, _Stream] = {}
        # Messages put together -> (their first sequence number, the one
        # after them): copies of their segments are skipped (bounded).
        self._done: dict[bytes, tuple[int, int]] = {}
        self.dropped = 0  # streams dropped for room or time, their message unparsed

    def waiting(self, conn: bytes) -> bool:
        return conn in self._streams

    def seen(self, conn: bytes, seq: int, size: int) -> bool:
        """Whether a segment lies inside what the connection's stream has,
        or inside its last message put together: a copy."""
        s = self._streams.get(conn)
        if s is not None:
            first, end = (s.next_seq - len(s.data)) % _SEQ_MOD, s.next_seq
        elif conn in self._done:
            first, end = self._done[conn]
        else:
            return False
        off = (seq - first) % _SEQ_MOD
        return off + size <= (end - first) % _SEQ_MOD

    def start(self, conn: bytes, seq: int, payload: bytes, now: float) -> None:
        """A segment whose message (its length prefix first, or its first
        byte) goes on past it; payload: the whole segment's payload."""
        if conn not in self._streams and len(self._streams) >= self.max_streams:
            self.expire(now)
            if len(self._streams) >= self.max_streams:
                del self._streams[next(iter(self._streams))]  # the oldest
                self.dropped += 1
        need = int.from_bytes(payload[:2], "big") + 2 if len(payload) >= 2 else 0
        self._streams[conn] = _Stream(
            now, need, (seq + len(payload)) % _SEQ_MOD, bytearray(payload)
        )

    def add(self, conn: bytes, seq: int, payload: bytes, whole: bool) -> bytes | None:
        """The next segment of a waiting stream: the message (without its
        prefix) once it is complete, else None. A segment that is not the
        next in order, or that the capture cut (whole False), ends the
        stream: None, and waiting() is False after it."""
        s = self._streams[conn]
        if seq != s.next_seq or not whole:
            del self._streams[conn]
            return None
        s.data += payload
        s.next_seq = (seq + len(payload)) % _SEQ_MOD
        if not s.need and len(s.data) >= 2:
            s.need = int.from_bytes(s.data[:2], "big") + 2
        if not s.need or len(s.data) < s.need:
            return None
        del self._streams[conn]
        if len(self._done) >= 4 * self.max_streams:
            del self._done[next(iter(self._done))]  # the oldest
        self._done[conn] = ((s.next_seq - len(s.data)) % _SEQ_MOD, s.next_seq)
        # Bytes past the message are the next one's (pipelined): not read.
        return bytes(s.data[2 : s.need])

    def expire(self, now: float) -> None:
        old = [c for c, s in self._streams.items() if now - s.since > self.timeout]
        for c in old:
            del self._streams[c]
        self.dropped += len(old)
