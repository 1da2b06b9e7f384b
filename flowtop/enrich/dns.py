"""Reverse DNS that never blocks its caller: PTR lookups in a few worker threads.

`name(addr)` only looks at a cache under a lock and returns at once: the
cached name, or None while a lookup is pending or when there is no name; an
address not seen before (or whose entry expired) is queued for a worker. The
queue is bounded: when it is full the request is dropped and counted, and the
address is asked for again at a later call.

Answers are cached for the record's TTL clamped to [min_ttl, max_ttl];
NXDOMAIN/no PTR for negative_ttl; timeouts and errors (SERVFAIL, malformed or
oversized replies) also for negative_ttl, keeping a name known before. An
expired name is still returned while its refresh is pending, so a name does
not flicker off screen every TTL.

Lookups use dnspython with the given nameservers (else /etc/resolv.conf), one
`dns.resolver.Resolver` per worker, `timeout` seconds per lookup. Names are
untrusted: each label is decoded (UTF-8, invalid bytes replaced), escape
sequences, control and bidi characters are removed (`safe_text`), empty
labels dropped, and the result capped at 253 characters. Callers show them as
plain text (rich.text.Text), never as markup.

`netns` (a name under /run/netns or a path to a netns file) makes every
worker thread join that network namespace before its first query (setns is
per thread), so the sockets dnspython creates per query live there; the
calling thread is not moved. Tests use it to query a server inside a test
namespace; it needs CAP_SYS_ADMIN.
"""

from __future__ import annotations

import collections
import ctypes
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from flowtop.enrich.text import safe_text

log = logging.getLogger("flowtop.enrich")

MAX_NAME = 253
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"


def display_name(name: dns.name.Name) -> str | None:
    """The text to show for a PTR target: cleaned, at most MAX_NAME characters."""
    labels = [lab.decode("utf-8", errors="replace") for lab in name.labels if lab]
    text = safe_text(".".join(labels), 4 * MAX_NAME)
    parts = [p for p in text.split(".") if p.strip()]
    out = safe_text(".".join(p.strip() for p in parts), MAX_NAME)
    return out or None


def _netns_fd(netns: str) -> int:
    path = netns if "/" in netns else os.path.join(_NETNS_DIR, netns)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class ReverseResolver:
    def __init__(
        self,
        nameservers: list[str] | None = None,
        timeout: float = 2.0,
        workers: int = 4,
        queue_max: int = 1024,
        cache_max: int = 65536,
        min_ttl: float = 30,
        max_ttl: float = 3600,
        negative_ttl: float = 60,
        clock: Callable[[], float] = time.monotonic,
        *,
        port: int = 53,
        netns: str | None = None,
        on_resolved: Callable[[], None] | None = None,
    ) -> None:
        """on_resolved: called from a worker thread when a new or changed name
        arrives (a UI wakes its refresh with it; it must be thread-safe)."""
        self.timeout = timeout
        self.queue_max = queue_max
        self.cache_max = cache_max
        self.min_ttl, self.max_ttl, self.negative_ttl = min_ttl, max_ttl, negative_ttl
        self._clock = clock
        self._on_resolved = on_resolved
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[str] = collections.deque()
        self._pending: set[str] = set()
        # address -> (name or None, expiry on `clock`)
        self._cache: collections.OrderedDict[str, tuple[str | None, float]] = (
            collections.OrderedDict()
        )
        self._counts = dict.fromkeys(
            ("inflight", "done", "names", "negative", "failed", "dropped", "invalid", "errors"), 0
        )
        self._closed = False
        self.error: str | None = None  # why lookups are off (bad resolv.conf, netns)
        self._threads: list[threading.Thread] = []
        self._netns_fd: int | None = None
        try:
            self._servers, self._port = self._configure(nameservers, port)
            if netns is not None:
                self._netns_fd = _netns_fd(netns)
        except (OSError, dns.exception.DNSException, ValueError) as e:
            self.error = safe_text(" ".join(str(e).split()), 160) or type(e).__name__
            self._closed = True
            return
        for i in range(max(1, workers)):
            t = threading.Thread(target=self._run, name=f"flowtop-rdns-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    @staticmethod
    def _configure(nameservers: list[str] | None, port: int) -> tuple[list[str], int]:
        if nameservers is None:
            system = dns.resolver.Resolver()  # /etc/resolv.conf
            return [str(s) for s in system.nameservers], system.port
        for s in nameservers:
            ipaddress.ip_address(s)  # ValueError: one line in self.error
        if not nameservers:
            raise ValueError("no nameservers")
        return list(nameservers), port

    def _resolver(self) -> dns.resolver.Resolver:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = list(self._servers)
        r.port = self._port
        r.timeout = self.timeout
        r.lifetime = self.timeout
        r.cache = None
        return r

    # -- the caller's side: never blocks on the network ------------------------
    def name(self, address: str) -> str | None:
        """The cached name of `address`, or None (and a lookup is queued)."""
        with self._lock:
            ent = self._cache.get(address)
            if ent is not None:
                self._cache.move_to_end(address)
                name, expires = ent
                if self._clock() >= expires and address not in self._pending:
                    self._submit(address)  # refresh; the stale name meanwhile
                return name
            if address not in self._pending:
                self._submit(address)
            return None

    def _submit(self, address: str) -> None:
        if self._closed:
            return
        if len(self._queue) >= self.queue_max:
            self._counts["dropped"] += 1
            return
        try:
            ipaddress.ip_address(address)
        except ValueError:
            self._counts["invalid"] += 1
            return
        self._queue.append(address)
        self._pending.add(address)
        self._wake.notify()

    def stats(self) -> dict[str, int]:
        """Counters: queued and inflight (now); done (answered: names +
        negative), names, negative (NXDOMAIN, no PTR), failed (timeouts,
        SERVFAIL, malformed replies); dropped (requests refused because the
        queue was full: an address is asked for again at a later call and
        counts again); invalid (not an IP address); errors (the on_resolved
        callback raised: the worker went on); cache_size."""
        with self._lock:
            out = dict(self._counts)
            out["queued"] = len(self._queue)
            out["cache_size"] = len(self._cache)
        return out

    @property
    def failures(self) -> int:
        """Lookups that failed (timeouts, SERVFAIL, bad replies) and callback
        errors: what a view shows as resolve_errors. NXDOMAIN is an answer."""
        with self._lock:
            return self._counts["failed"] + self._counts["errors"]

    @property
    def enabled(self) -> bool:
        return self.error is None and not self._closed

    # -- workers -----------------------------------------------------------
    def _run(self) -> None:
        if self._netns_fd is not None:
            try:
                _setns(self._netns_fd)
            except OSError as e:
                with self._lock:
                    self.error = f"netns: {e.strerror}"
                    self._closed = True
                    self._counts["failed"] += len(self._queue)
                    self._queue.clear()
                    self._pending.clear()
                    self._wake.notify_all()
                return
        resolver = self._resolver()
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                address = self._queue.popleft()
                self._counts["inflight"] += 1
            outcome, name, ttl = self._query(resolver, address)
            self._store(address, outcome, name, ttl)

    def _query(
        self, resolver: dns.resolver.Resolver, address: str
    ) -> tuple[str, str | None, float]:
        """("name"|"negative"|"failed", name, ttl)."""
        try:
            qname = dns.reversename.from_address(address)
            ans = resolver.resolve(qname, "PTR", lifetime=self.timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return "negative", None, self.negative_ttl
        except dns.exception.DNSException:  # timeout, SERVFAIL, malformed reply
            return "failed", None, self.negative_ttl
        except Exception:  # anything else a hostile reply triggers: not our worker's end
            log.debug("reverse lookup of %s failed", address, exc_info=True)
            return "failed", None, self.negative_ttl
        rrset = ans.rrset
        if rrset is None or len(rrset) == 0:
            return "negative", None, self.negative_ttl
        targets = [getattr(rd, "target", None) for rd in rrset]
        names = [display_name(t) for t in targets if isinstance(t, dns.name.Name)]
        name = next((n for n in names if n), None)
        if name is None:
            return "negative", None, self.negative_ttl
        ttl = min(max(float(rrset.ttl), self.min_ttl), self.max_ttl)
        return "name", name, ttl

    def _store(self, address: str, outcome: str, name: str | None, ttl: float) -> None:
        notify = False
        with self._lock:
            c = self._counts
            c["inflight"] -= 1
            self._pending.discard(address)
            old = self._cache.pop(address, None)
            if outcome == "failed":
                c["failed"] += 1
                name = old[0] if old else None  # keep a name we knew
            else:
                c["done"] += 1
                c["names" if outcome == "name" else "negative"] += 1
            self._cache[address] = (name, self._clock() + ttl)
            while len(self._cache) > self.cache_max:
                self._cache.popitem(last=False)
            notify = name is not None and (old is None or old[0] != name)
        if notify and self._on_resolved is not None:
            try:
                self._on_resolved()
            except Exception:  # the caller's trouble must not end this worker
                log.debug("on_resolved failed", exc_info=True)
                with self._lock:
                    self._counts["errors"] += 1

    def close(self, timeout: float = 0.0) -> None:
        """Stops the workers (a lookup in flight ends within `timeout` of the
        resolver); waits up to `timeout` seconds for them, never longer."""
        with self._lock:
            self._closed = True
            self._pending.difference_update(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._netns_fd is not None and not any(t.is_alive() for t in self._threads):
            os.close(self._netns_fd)
            self._netns_fd = None
