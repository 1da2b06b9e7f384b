"""The thread that reads the kernel's WireCapture and feeds WireNames.

It polls the capture's file descriptor, reads what is there in batches and
hands them to a Feeder; it stops when its stop event is set (Run.close
through `stop()`), within one poll timeout. A read that fails is counted
(read_errors in WireNames.counters), logged once per run of failures, and
retried after a pause: the names side never ends a run.
"""

from __future__ import annotations

import logging
import select
import threading
from typing import Protocol

from flowtop.kernel.wire_records import WirePacket
from flowtop.wirenames.feed import Feeder
from flowtop.wirenames.names import WireNames

log = logging.getLogger("flowtop.wirenames")

BATCH = 4096  # WirePackets read per call
POLL_MS = 200  # the longest a stop waits for the thread


class WireSource(Protocol):
    """What the reader needs of kernel/wirecapture.WireCapture."""

    def read(self, max_events: int) -> list[WirePacket]: ...

    def fileno(self) -> int: ...


class WireNameReader:
    """Feeds `names` from `capture` on a thread of its own (daemon: a hung
    read cannot keep the process alive)."""

    def __init__(self, capture: WireSource, names: WireNames) -> None:
        self.capture = capture
        self.feeder = Feeder(names)
        self._stop = threading.Event()
        self._pumping = threading.Lock()  # the thread's pump, or catch_up()
        self._thread = threading.Thread(target=self._run, name="flowtop-wirenames", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        poll = select.poll()
        failing = False
        try:
            poll.register(self.capture.fileno(), select.POLLIN)
        except (OSError, ValueError) as exc:
            log.warning("names from the wire are off: cannot poll the capture: %s", exc)
            return
        while not self._stop.is_set():
            try:
                if poll.poll(POLL_MS):
                    self.pump()
                failing = False
            except Exception as exc:  # counted and retried; the run goes on
                self.feeder.counts["read_errors"] += 1
                self.feeder.names.parse = dict(self.feeder.counts)
                if not failing:
                    log.warning("reading the wire capture failed: %s; going on", exc)
                failing = True
                self._stop.wait(0.5)

    def catch_up(self) -> int:
        """What the capture holds now, read and fed on the caller's thread
        (the engine's, before its last join at the end of a run: a name that
        came in the last moments still names its flows)."""
        try:
            return self.pump()
        except Exception as exc:  # counted; the run's end goes on
            self.feeder.counts["read_errors"] += 1
            self.feeder.names.parse = dict(self.feeder.counts)
            log.warning("reading the wire capture failed: %s", exc)
            return 0

    def pump(self) -> int:
        """Reads and feeds what the capture has now; how many packets."""
        with self._pumping:
            return self._pump()

    def _pump(self) -> int:
        total = 0
        while True:
            got = self.capture.read(BATCH)
            if not got:
                return total
            self.feeder.feed(got)
            total += len(got)
            if len(got) < BATCH:
                return total
