"""The last minute of interface rates and TCP health, kept by the UI per snapshot."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from flowtop.query.types import Snapshot

SECONDS = 60.0


@dataclass
class RateHistory:
    """rx/tx bits/s per interface, plus retransmits and RTTs of the shown rows."""

    points: int = 60
    rx: dict[str, deque[float]] = field(default_factory=dict)
    tx: dict[str, deque[float]] = field(default_factory=dict)
    retransmits: deque[tuple[float, int]] = field(default_factory=deque)
    rtts_us: tuple[float, ...] = ()
    last_time: float | None = None

    def add(self, snap: Snapshot) -> bool:
        """Records a snapshot once (re-queries of the same step are ignored)."""
        if self.last_time is not None and snap.time <= self.last_time:
            return False
        self.last_time = snap.time
        self.points = max(2, round(SECONDS / max(snap.interval, 0.01)))
        for i in snap.interfaces:
            for book, value in ((self.rx, i.rx_bps), (self.tx, i.tx_bps)):
                d = book.get(i.name)
                if d is None or d.maxlen != self.points:
                    d = book[i.name] = deque(d or (), maxlen=self.points)
                d.append(value)
        rtts = tuple(r.rtt_us for r in snap.rows if r.rtt_us is not None)
        retr = [r.retransmits for r in snap.rows if r.retransmits is not None]
        if rtts:
            self.rtts_us = rtts
        if retr or self.retransmits:
            self.retransmits.append((snap.time, sum(retr)))
            while self.retransmits and self.retransmits[0][0] < snap.time - SECONDS:
                self.retransmits.popleft()
        return True

    @property
    def has_tcp(self) -> bool:
        return bool(self.rtts_us) or bool(self.retransmits)
