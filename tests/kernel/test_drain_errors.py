"""A kernel map that really fails under a running engine, and a recording that
cannot be written: counted, shown, survived.

The engine runs in this process (attached to va in namespace a). The flow maps'
file descriptors are closed under it, so every drain's BPF syscalls fail
with EBADF, and put back (dup2 of a copy) so that they work again: the
intervals in between are counted in drain_errors and skipped, nothing the
kernel counted meanwhile is lost, and a run of MAX_DRAIN_FAILURES ends the
run with CollectorFailedError.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flowtop.config import CollectorConfig, Config
from flowtop.core.engine import MAX_DRAIN_FAILURES, Engine
from flowtop.errors import CollectorFailedError
from flowtop.query.types import ViewQuery
from flowtop.run.dump import FlowAccumulator
from flowtop.run.lifecycle import Run
from flowtop.run.sources import LiveSource

from .expect import drain, udp_client, udp_sink
from .netns import Pair, entered

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
PORT = 6600


@contextmanager
def engine_in(p: Pair) -> Iterator[tuple[Engine, FlowAccumulator]]:
    cfg = CollectorConfig(interfaces=("va",), sockops=False, idle_timeout=3600)
    with entered(p.a.name):
        run = Run(Config(collector=cfg)).start()
    with run:
        acc = FlowAccumulator(run.engine.table.clock_offset)
        run.engine.sinks.append(acc)
        yield run.engine, acc


def send(p: Pair, n: int) -> None:
    sink = udp_sink(p.b, B4, PORT)
    c = udp_client(p.a, B4, PORT + 1)
    try:
        for _ in range(n):
            c.sendto(b"d" * 72, (B4, PORT))
        assert drain(sink, n) == n
    finally:
        sink.close()
        c.close()


class ClosedMaps:
    """Closes the fds of both interval flow maps (the reader's BPF calls then
    fail with EBADF, as for a map gone from under it) until restore()."""

    def __init__(self, engine: Engine) -> None:
        program = engine.collector.program  # type: ignore[attr-defined]
        self.fds = [program.map_fd("flows_a"), program.map_fd("flows_b")]
        self.saved = [os.dup(fd) for fd in self.fds]
        for fd in self.fds:
            os.close(fd)

    def restore(self) -> None:
        for fd, copy in zip(self.fds, self.saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        self.saved = []


def ours(acc: FlowAccumulator) -> tuple[int, int]:
    recs = [
        r
        for r in acc.per_key().records()
        if r.key.proto == 17 and r.key.sport == PORT + 1 and r.key.dport == PORT
    ]
    return sum(r.packets for r in recs), sum(r.bytes for r in recs)


def test_closed_flow_maps_are_counted_skipped_and_lose_nothing(
    quiet_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    p = quiet_pair
    with engine_in(p) as (engine, acc):
        send(p, 5)
        engine.step()
        broken = ClosedMaps(engine)
        try:
            send(p, 4)
            for _ in range(3):
                engine.step()  # each fails inside the kernel: counted, not raised
        finally:
            broken.restore()
        h = engine.health()
        assert h.drain_errors == 3 and h.problems >= 3, h
        assert engine.stats.polls == 1
        failed = [r.getMessage() for r in caplog.records if "kernel maps failed" in r.getMessage()]
        assert len(failed) == 1 and "Bad file descriptor" in failed[0], failed
        send(p, 3)
        engine.step()
        engine.step()
        engine.shutdown()
        # what the kernel counted while the reads failed was read later: nothing lost
        assert ours(acc) == (12, 12 * (20 + 8 + 72))
        assert engine.health().drain_errors == 3
        tx = sum(c.tx_packets for c in engine.interface_counters() if c.name == "va")
        assert tx == 12


def test_maps_that_never_come_back_end_the_run_with_one_line(quiet_pair: Pair) -> None:
    p = quiet_pair
    with engine_in(p) as (engine, _acc):
        engine.step()
        broken = ClosedMaps(engine)
        try:
            for _ in range(MAX_DRAIN_FAILURES - 1):
                engine.step()
            with pytest.raises(CollectorFailedError) as exc:
                engine.step()
        finally:
            broken.restore()
        msg = str(exc.value)
        assert f"{MAX_DRAIN_FAILURES} intervals in a row" in msg and "\n" not in msg, msg
        assert engine.health().drain_errors == MAX_DRAIN_FAILURES


def test_a_recording_that_cannot_be_written_is_counted_and_the_view_goes_on(
    quiet_pair: Pair, tmp_path: Path
) -> None:
    """--record to a pipe whose reader goes away: every frame after that is a
    record error (EPIPE from the kernel), the source keeps stepping and counting."""
    p = quiet_pair
    fifo = tmp_path / "rec"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    cfg = CollectorConfig(interfaces=("va",), interval=0.2, sockops=False)
    with entered(p.a.name):
        run = Run(Config(collector=cfg), record=str(fifo)).start()
    source = LiveSource(run)
    try:
        assert os.read(reader, 1 << 16).startswith(b"FLOWTOP-REC")
        source.step()
        os.read(reader, 1 << 20)  # a first frame made it
        os.close(reader)
        for _ in range(3):
            send(p, 2)
            source.step()
        snap = source.snapshot(ViewQuery())
        assert snap.health["record_errors"] == 3 and snap.problems >= 3, snap.health
        rows = [r for r in snap.rows if r.sport == PORT + 1 and r.dport == PORT]
        assert sum(r.packets for r in rows) == 6, rows  # the view still counts
        t0 = time.monotonic()
        source.step()
        assert time.monotonic() - t0 < 2
        assert source.engine.health().record_errors == 4
    finally:
        source.close()
        run.close()
