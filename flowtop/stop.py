"""StopSignal: SIGINT/SIGTERM as a flag and a wake-up pipe, never as an exception.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread
happens to be. During start-up that is often inside import machinery, a
weakref callback or a finalizer, where the interpreter prints "Exception
ignored" and drops the exception: the Ctrl-C is lost and the run goes on for
its whole duration. A handler that only sets a flag cannot be lost that way;
start-up asks `check()` between its steps (compile, attach, sock_ops) and the
engine's waits wake on `fileno`.

This module imports nothing heavy, so the CLI installs it before it imports
numpy, pyroute2 or bcc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from flowtop.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """SIGINT/SIGTERM (and callers) set it; it wakes the engine's wait at once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        os.set_blocking(self._r, False)
        self.signal: int | None = None
        self._saved: dict[int, Any] = {}

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._saved.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, self._handler)

    def restore(self) -> None:
        """The handlers from before install() again (in a fresh process:
        KeyboardInterrupt for SIGINT, the default end for SIGTERM)."""
        for sig, old in self._saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._saved.clear()

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        # Only a flag and a byte: this may run inside any Python code, even a
        # finalizer, and must neither raise nor block.
        if self.signal is None:
            self.signal = signum
        self.set()

    def set(self) -> None:
        self._event.set()
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"x")

    def wake(self) -> None:
        """Interrupt a wait without stopping (a signal that wants attention)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"w")

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Interrupted when a stop was asked for (start-up calls this
        between its steps; the caller's cleanup then removes what is attached)."""
        if self._event.is_set():
            raise Interrupted(self.signal or signal.SIGINT)

    @property
    def fileno(self) -> int:
        return self._r

    def wait_with(self, waiter: Callable[[float, int], None], timeout: float) -> None:
        waiter(timeout, self._r)
        if not self.is_set():
            # A wake() without stop: consume it so the next wait waits.
            with contextlib.suppress(BlockingIOError):
                os.read(self._r, 64)
