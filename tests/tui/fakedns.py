"""A stand-in for flowtop.enrich.dns.ReverseResolver in UI tests: names come
from a function instead of DNS (the real resolver has its own tests, with a DNS
server in a namespace). Same contract: name() never blocks, answers are cleaned.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable

from flowtop.sanitize import clean

Lookup = Callable[[str], str | None]


class Resolver:
    def __init__(
        self,
        on_resolved: Callable[[], None] | None = None,
        lookup: Lookup = lambda _addr: None,
        workers: int = 4,
        cache_size: int = 4096,
        queue_size: int = 256,
    ) -> None:
        self._lookup = lookup
        self._on_resolved = on_resolved
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._pending: set[str] = set()
        self._cache_size = cache_size
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"flowtop-dns-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def name(self, addr: str) -> str | None:
        """The cached name of `addr`, or None (and a lookup is queued when new)."""
        with self._lock:
            if addr in self._cache:
                self._cache.move_to_end(addr)
                return self._cache[addr]
            if addr in self._pending:
                return None
            try:
                self._queue.put_nowait(addr)
            except queue.Full:  # busy: ask again on a later refresh
                return None
            self._pending.add(addr)
        return None

    def _run(self) -> None:
        while True:
            addr = self._queue.get()
            if addr is None:
                return
            raw = self._lookup(addr)
            name = clean(raw) if raw else None
            with self._lock:
                self._pending.discard(addr)
                self._cache[addr] = name or None
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            if name and self._on_resolved is not None:
                self._on_resolved()

    def close(self, timeout: float = 0.0) -> None:
        """Stops the workers once they finish their lookup (never waits for them)."""
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break


def resolver_of(lookup: Lookup) -> Callable[[Callable[[], None]], Resolver]:
    """A FlowtopApp `resolver` factory that answers with lookup()."""
    return lambda on_resolved: Resolver(on_resolved=on_resolved, lookup=lookup)
