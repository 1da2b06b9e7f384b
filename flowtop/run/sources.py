"""The live ViewSource: the view's side of a Run over the kernel collector."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flowtop.query.source import TableSource
from flowtop.stop import StopSignal

if TYPE_CHECKING:
    from flowtop.kernel.collector import Drain
    from flowtop.run.lifecycle import Run
    from flowtop.run.record import Recorder


class LiveSource(TableSource):
    """Steps a started Run's engine every interval and writes each drain to
    its recorder (--record). It owns nothing: close() stops the stepping and
    ends the run's flows (Run.shutdown) under the source's lock, so that no
    step is half done; the Run closes the parts afterwards.

    A failed write of the recording is counted (record_errors), the view goes on.
    """

    def __init__(self, run: Run) -> None:
        super().__init__(run.engine)
        self._run = run
        self.collector = run.collector
        self._recorder = run.recorder
        self._stop = StopSignal()
        self._closed = False
        self._next = time.monotonic() + self.interval

    def step(self) -> None:
        left = self._next - time.monotonic()
        if left > 0 and not self._stop.is_set():
            self.collector.wait(left, self._stop.fileno)
        if self._stop.is_set():
            return
        with self._lock:
            if self._closed:
                return
            drain_before = self.engine.last_drain
            self.engine.step()
            self._after_step()
            drained = self.engine.last_drain
            if self._recorder is not None and drained is not None and drained is not drain_before:
                self._record(self._recorder, drained)
        now = time.monotonic()
        self._next += self.interval
        if self._next < now:
            self._next = now + self.interval

    def _record(self, recorder: Recorder, drained: Drain) -> None:
        try:
            recorder.frame(
                drained,
                self.collector.names(),
                self.engine.interface_counters(),
                self.collector.program.counters(),
            )
        except Exception as exc:  # a full disk ends the recording, not the view
            self.engine.failures.record.failed(exc)
        else:
            self.engine.failures.record.ok()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop stepping, detach, take the last drain, end every flow; safe to call twice."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._run.shutdown()
