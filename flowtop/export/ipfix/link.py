"""One collector: a bounded queue of flow batches and the thread that sends them.

The engine's thread only appends to the queue (or, when it is full or
closed, counts the batch as not sent); encoding, connecting with backoff and
sending all happen on the link's own thread, so a collector that is slow,
down or unreachable never holds up the caller. Every flow handed to a link is
in the end either sent or counted as not sent (flows, packets, octets), and
those totals go to the collector in Exporting Process Reliability Statistics
records (RFC 7011 §4.3).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from flowtop.core.flowtable import FlowBatch
from flowtop.export.ipfix.message import Message, Session
from flowtop.export.ipfix.records import EncodedRecords
from flowtop.export.ipfix.template import EXPORTER_RELIABILITY
from flowtop.export.ipfix.transport import PeerClosed, Transport

log = logging.getLogger("flowtop.ipfix")

Encoder = Callable[[FlowBatch], tuple[list[EncodedRecords], np.ndarray]]
_FINAL_OPTIONS_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """What one collector link has sent and lost so far."""

    collector: tuple[str, int]
    transport: str
    connected: bool = False
    queued_flows: int = 0
    messages_sent: int = 0
    records_sent: int = 0  # flow records
    bytes_sent: int = 0  # IPFIX message octets
    template_messages_sent: int = 0
    options_records_sent: int = 0
    not_sent_flows: int = 0
    not_sent_packets: int = 0
    not_sent_octets: int = 0
    dropped_batches: int = 0  # refused because the queue was full or closed
    send_errors: int = 0
    connect_errors: int = 0
    connects: int = 0
    internal_errors: int = 0  # unexpected failures of the sender (a bug): survived, counted
    first_drop_ms: int = 0  # unix ms of the first / last flow not sent; 0 if none
    last_drop_ms: int = 0
    last_error: str = ""


def _slice(enc: EncodedRecords, start: int) -> EncodedRecords:
    return EncodedRecords(
        enc.template, enc.records[start:], enc.packets[start:], enc.octets[start:]
    )


class CollectorLink:
    """Queue, thread, transport and session for one collector."""

    def __init__(
        self,
        transport: Transport,
        session: Session,
        encoder: Encoder,
        stats: CollectorStats,
        *,
        process_id: int,
        max_queue_flows: int = 1_000_000,
        options_interval: float | None = 60.0,
        send_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.transport = transport
        self.session = session
        self._encode = encoder
        self._stats = stats
        self._process_id = process_id
        self._max_queue = max_queue_flows
        self._options_interval = options_interval
        self._send_timeout = send_timeout
        self._connect_timeout = connect_timeout
        self._backoff_min, self._backoff_max = backoff
        self._backoff = self._backoff_min
        self._cond = threading.Condition()
        self._queue: deque[FlowBatch] = deque()
        self._pending: deque[EncodedRecords] = deque()
        self._queued = 0  # flows offered and not yet sent or counted as lost
        self._closing = False
        self._deadline = math.inf
        self._retry_at = 0.0
        now = time.monotonic()
        self._next_options = math.inf if options_interval is None else now + options_interval
        self._inflight: FlowBatch | None = None  # taken from the queue, not yet encoded
        self._thread = threading.Thread(
            target=self._run, name=f"ipfix-{stats.collector[0]}:{stats.collector[1]}", daemon=True
        )

    # -- caller side ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def offer(self, batch: FlowBatch) -> bool:
        """Queue batch for sending; False (and counted as not sent) if there is no room."""
        n = len(batch)
        if n == 0:
            return True
        with self._cond:
            full = self._queued > 0 and self._queued + n > self._max_queue
            if self._closing or full:
                self._lost(n, int(batch["packets"].sum()), int(batch["bytes"].sum()))
                self._bump(dropped_batches=1)
                return False
            self._queue.append(batch)
            self._queued += n
            self._cond.notify_all()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until every queued flow is sent or counted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._queued == 0, timeout)

    def close(self, timeout: float) -> None:
        """Send what is queued within timeout, count the rest, stop the thread."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout + _FINAL_OPTIONS_TIMEOUT + 0.5)
        elif self._thread.ident is None:  # never started
            self._finish()

    def open_now(self) -> None:
        """Open the transport before the thread starts (UDP: no packet is sent)."""
        self._ensure_open()

    def stats(self) -> CollectorStats:
        with self._cond:
            return replace(self._stats, connected=self.transport.is_open, queued_flows=self._queued)

    def local_address(self) -> tuple[str, int] | None:
        return self.transport.local_address()

    # -- counters (call with the lock held) --------------------------------------------

    def _bump(self, **deltas: int) -> None:
        s = self._stats
        self._stats = replace(s, **{k: getattr(s, k) + v for k, v in deltas.items()})

    def _lost(self, flows: int, packets: int, octets: int) -> None:
        if flows == 0:
            return
        now_ms = int(self.session.clock() * 1000)
        self._bump(not_sent_flows=flows, not_sent_packets=packets, not_sent_octets=octets)
        first = self._stats.first_drop_ms or now_ms
        self._stats = replace(self._stats, first_drop_ms=first, last_drop_ms=now_ms)

    def _resolved(self, flows: int) -> None:
        self._queued -= flows
        if self._queued == 0:
            self._cond.notify_all()

    # -- sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    if not self._step():
                        break
                except Exception as exc:  # a bug must not stop the export for good
                    self._failed(exc)
        finally:
            self._finish()

    def _failed(self, exc: Exception) -> None:
        """An unexpected error in a step: what it was working on is counted as
        not sent, the error is counted (and logged the first time), and the
        sender goes on after a pause, so one bad batch costs only itself."""
        with self._cond:
            batch, self._inflight = self._inflight, None
            if batch is not None:
                self._lost(len(batch), int(batch["packets"].sum()), int(batch["bytes"].sum()))
                self._resolved(len(batch))
            for e in self._pending:
                self._lost(len(e), int(e.packets.sum()), int(e.octets.sum()))
                self._resolved(len(e))
            self._pending.clear()
            first = self._stats.internal_errors == 0
            self._bump(internal_errors=1)
            self._stats = replace(self._stats, last_error=f"{type(exc).__name__}: {exc}")
        if first:
            log.error(
                "IPFIX to %s:%d: internal error %s: %s (counted; the export goes on)",
                *self._stats.collector,
                type(exc).__name__,
                exc,
            )
        time.sleep(self._backoff_min)

    def _step(self) -> bool:
        """One unit of work: connect, an options record, or one block of records."""
        batch = None
        with self._cond:
            while True:
                now = time.monotonic()
                if now >= self._deadline:
                    return False
                work = bool(self._pending or self._queue)
                connectable = self.transport.is_open or now >= self._retry_at
                if not self.transport.is_open and connectable:
                    break
                if connectable and (work or now >= self._next_options):
                    break
                if self._closing and not work:
                    return False
                wake = min(self._retry_at if work else math.inf, self._next_options, self._deadline)
                self._cond.wait(None if wake == math.inf else max(0.0, wake - now))
            if not self._pending and self._queue:
                batch = self._inflight = self._queue.popleft()
        if not self._ensure_open():
            if batch is not None:
                with self._cond:
                    self._queue.appendleft(batch)
                    self._inflight = None
            return True
        if batch is not None:
            encoded, other = self._encode(batch)
            self._inflight = None
            self._pending.extend(e for e in encoded if len(e))
            if len(other):
                with self._cond:
                    self._lost(
                        len(other),
                        int(batch["packets"][other].sum()),
                        int(batch["bytes"][other].sum()),
                    )
                    self._resolved(len(other))
        if time.monotonic() >= self._next_options:
            self._send_options(self._send_timeout)
        if self._pending:
            self._send_pending()
        return True

    def _timeout(self, wanted: float) -> float:
        return max(0.01, min(wanted, self._deadline - time.monotonic()))

    def _ensure_open(self) -> bool:
        if self.transport.is_open:
            return True
        try:
            self.transport.open(self._timeout(self._connect_timeout))
        except OSError as e:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._backoff_max)
            with self._cond:
                self._bump(connect_errors=1)
                self._stats = replace(self._stats, last_error=f"connect: {e}")
            return False
        self._backoff = self._backoff_min
        self.session.restart()
        with self._cond:
            self._bump(connects=1)
        return True

    def _send(self, msg: Message, timeout: float) -> str:
        """Send msg: "sent", "lost" (counted as not sent) or "retry" (nothing written)."""
        try:
            self.transport.send(msg.data, self._timeout(timeout))
        except PeerClosed as e:  # reconnect at once and send it on the new stream
            self.session.failed(msg)
            self._retry_at = time.monotonic()
            with self._cond:
                self._stats = replace(self._stats, last_error=f"send: {e}")
            return "retry"
        except OSError as e:
            self.session.failed(msg)
            if not self.transport.is_open:
                self._retry_at = time.monotonic() + self._backoff
            with self._cond:
                self._bump(send_errors=1)
                self._stats = replace(self._stats, last_error=f"send: {e}")
                self._lost(msg.flows, msg.packets, msg.octets)
                self._resolved(msg.flows)
            return "lost"
        self.session.sent(msg)
        with self._cond:
            self._bump(
                messages_sent=1,
                records_sent=msg.flows,
                bytes_sent=len(msg.data),
                template_messages_sent=int(msg.kind == "templates"),
                options_records_sent=msg.records if msg.kind == "options" else 0,
            )
            self._resolved(msg.flows)
        return "sent"

    def _send_pending(self) -> None:
        enc = self._pending[0]
        done = 0
        for msg in self.session.data_messages(enc):
            outcome = self._send(msg, self._send_timeout)
            if outcome != "retry":
                done += msg.flows  # sent, or counted as not sent
            if outcome != "sent" and not self.transport.is_open:
                self._pending[0] = _slice(enc, done)  # the rest goes after reconnecting
                return
        self._pending.popleft()

    def _send_options(self, timeout: float) -> None:
        with self._cond:
            s = self._stats
        values = (
            self._process_id,
            s.not_sent_flows,
            s.not_sent_packets,
            s.not_sent_octets,
            s.first_drop_ms,
            s.last_drop_ms,
        )
        for msg in self.session.options_messages(EXPORTER_RELIABILITY, values):
            if self._send(msg, timeout) != "sent":
                break
        if self._options_interval is not None:
            self._next_options = time.monotonic() + self._options_interval

    def _finish(self) -> None:
        """Count whatever is still queued as not sent, report it, close the socket."""
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            for b in left:
                self._lost(len(b), int(b["packets"].sum()), int(b["bytes"].sum()))
                self._resolved(len(b))
            for e in self._pending:
                self._lost(len(e), int(e.packets.sum()), int(e.octets.sum()))
                self._resolved(len(e))
            self._pending.clear()
            self._closing = True
        if self.transport.is_open:
            self._deadline = max(self._deadline, time.monotonic() + _FINAL_OPTIONS_TIMEOUT)
            with contextlib.suppress(OSError):
                self._send_options(_FINAL_OPTIONS_TIMEOUT)
        self.transport.close()
