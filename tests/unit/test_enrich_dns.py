"""Reverse DNS against a real DNS server on 127.0.0.1 (written here with
dnspython's message API): caching with TTLs on a fake clock, negative
answers, a bounded queue that counts what it drops, name() that never waits,
and hostile names cleaned. The same server runs inside a network namespace in
tests/kernel/test_dns_netns.py.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.reversename
import dns.rrset
import pytest

from flowtop.enrich.dns import ReverseResolver, display_name


@dataclass
class Reply:
    """What the server answers for one address."""

    labels: tuple[bytes, ...] | None = None  # PTR target labels (without the root)
    ttl: int = 300
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR  # NXDOMAIN, SERVFAIL ...
    delay: float = 0.0  # seconds before answering
    silent: bool = False  # never answer
    raw_target: bytes | None = None  # PTR rdata written by hand (illegal names)


class PtrServer:
    """A UDP DNS server answering PTR queries from a table, in a thread.

    Bind it inside a namespace by creating it in `netns.entered(...)`: the
    socket stays in that namespace. Counts queries per address and records
    where they came from.
    """

    def __init__(self, host: str, port: int = 0, default: Reply | None = None) -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.replies: dict[str, Reply] = {}
        self.default = default or Reply(rcode=dns.rcode.NXDOMAIN)
        self.queries: collections.Counter[str] = collections.Counter()
        self.clients: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def set(self, address: str, reply: Reply) -> None:
        self.replies[address] = reply

    def count(self, address: str) -> int:
        with self._lock:
            return self.queries[address]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(wire)
                qname = q.question[0].name
                address = dns.reversename.to_address(qname)
            except Exception:
                continue
            with self._lock:
                self.queries[address] += 1
                self.clients.add(peer[0])
            reply = self.replies.get(address, self.default)
            if reply.silent:
                continue
            out = self._answer(q, reply)
            if reply.delay:
                threading.Timer(reply.delay, self._send, (out, peer)).start()
            else:
                self._send(out, peer)

    def _send(self, out: bytes, peer: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(out, peer)

    @staticmethod
    def _answer(q: dns.message.Message, reply: Reply) -> bytes:
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.AA
        resp.set_rcode(reply.rcode)
        qname = q.question[0].name
        if reply.raw_target is not None:
            # beyond what dnspython will build: header and answer by hand
            question = bytes(qname.to_wire() or b"") + struct.pack("!HH", 12, 1)
            head = struct.pack("!HHHHHH", q.id, 0x8580, 1, 1, 0, 0)
            rr = b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, reply.ttl, len(reply.raw_target))
            return head + question + rr + reply.raw_target
        if reply.labels is not None and reply.rcode == dns.rcode.NOERROR:
            target = dns.name.Name([*reply.labels, b""])
            rd = dns.rdtypes.ANY.PTR.PTR(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, dns.rdatatype.PTR, target
            )
            resp.answer.append(dns.rrset.from_rdata(qname, reply.ttl, rd))
        return resp.to_wire()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


# Hostile PTR targets and what must come out: escape sequences (CSI, OSC 52
# clipboard, C1 CSI), markup-looking text kept literally (it is never parsed),
# bidi overrides and zero-width characters dropped, invalid UTF-8 replaced.
HOSTILE: list[tuple[tuple[bytes, ...], str]] = [
    ((b"a\x1b[2Jb", b"evil", b"example"), "ab.evil.example"),
    ((b"x\x1b]52;c;SGVsbG8=\x07y", b"example"), "xy.example"),
    ((b"[bold]red[/bold]", b"example"), "[bold]red[/bold].example"),
    (("abc\u202etxt".encode(), b"example"), "abctxt.example"),
    (("zero\u200bwidth".encode(), b"ex\xc2\x9b31mample"), "zerowidth.example"),
    ((b"\x1b[2J", b"only", b"escape"), "only.escape"),
    ((b"bad\xffutf8",), "bad\ufffdutf8"),
    ((b"tab\there", b"nul\x00", b"bell\x07"), "tabhere.nul.bell"),
    ((b"[link=file:///etc/passwd]x[/link]",), "[link=file:///etc/passwd]x[/link]"),
]
# 3 labels of 63 bytes and one of 61: a legal 255-octet name, 253 characters
LONG = (*(bytes([ord("a") + i]) * 63 for i in range(3)), b"d" * 61)
LONG_TEXT = ".".join(lab.decode() for lab in LONG)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def finished(r: ReverseResolver) -> int:
    st = r.stats()
    return st["done"] + st["failed"]


def resolve(r: ReverseResolver, address: str, timeout: float = 5.0) -> str | None:
    """name(address) once its (single, new) lookup has finished."""
    before = finished(r)
    assert r.name(address) is None  # never known before: queued
    wait_for(lambda: finished(r) > before, timeout)
    return r.name(address)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def server() -> Iterator[PtrServer]:
    s = PtrServer("127.0.0.1")
    try:
        yield s
    finally:
        s.close()


def make(server: PtrServer, **kw: object) -> ReverseResolver:
    return ReverseResolver(nameservers=[server.host], port=server.port, timeout=1.0, **kw)  # type: ignore[arg-type]


def test_display_name_cleans_each_hostile_name() -> None:
    for labels, want in HOSTILE:
        assert display_name(dns.name.Name([*labels, b""])) == want
    assert len(LONG_TEXT) == 253  # the longest legal name passes whole
    assert display_name(dns.name.Name([*LONG, b""])) == LONG_TEXT
    assert display_name(dns.name.root) is None


def test_names_through_a_real_server(server: PtrServer) -> None:
    for i, (labels, _) in enumerate(HOSTILE):
        server.set(f"192.0.2.{i + 1}", Reply(labels))
    server.set("2001:db8::1", Reply((b"v6", b"example")))
    woken = threading.Semaphore(0)
    r = make(server, on_resolved=woken.release)
    try:
        for i, (_, want) in enumerate(HOSTILE):
            assert resolve(r, f"192.0.2.{i + 1}") == want
        assert resolve(r, "2001:db8::1") == "v6.example"
        assert resolve(r, "198.51.100.7") is None  # NXDOMAIN (the default)
        st = r.stats()
        assert st["names"] == len(HOSTILE) + 1 and st["negative"] == 1
        assert st["failed"] == 0 and st["dropped"] == 0 and st["inflight"] == 0
        assert server.clients == {"127.0.0.1"}
        # one wake-up per name that arrived, none for the NXDOMAIN
        assert sum(woken.acquire(blocking=False) for _ in range(100)) == len(HOSTILE) + 1
    finally:
        r.close(2)


def test_ttl_is_clamped_and_expired_names_refresh_in_background(server: PtrServer) -> None:
    clock = FakeClock()
    server.set("192.0.2.1", Reply((b"short",), ttl=5))  # below min_ttl
    server.set("192.0.2.2", Reply((b"long",), ttl=10**6))  # above max_ttl
    server.set("192.0.2.3", Reply((b"mid",), ttl=100))
    r = make(server, clock=clock, min_ttl=30, max_ttl=3600, negative_ttl=60)
    try:
        for a in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.99"):
            resolve(r, a)
        assert {a: server.count(a) for a in ("192.0.2.1", "192.0.2.2", "192.0.2.3")} == {
            "192.0.2.1": 1,
            "192.0.2.2": 1,
            "192.0.2.3": 1,
        }

        def asked(a: str, n: int) -> bool:
            r.name(a)
            wait_for(lambda: r.stats()["inflight"] == 0 and r.stats()["queued"] == 0)
            return server.count(a) == n

        clock.t += 29  # every entry still fresh
        assert all(asked(a, 1) for a in ("192.0.2.1", "192.0.2.2", "192.0.2.3"))
        assert asked("192.0.2.99", 1)  # negative answers are cached too
        clock.t += 2  # 31 s: the 5 s TTL was raised to 30 and has expired
        server.set("192.0.2.1", Reply((b"renamed",), ttl=5))
        assert r.name("192.0.2.1") == "short"  # stale name while refreshing
        wait_for(lambda: r.name("192.0.2.1") == "renamed")
        assert server.count("192.0.2.1") == 2 and server.count("192.0.2.3") == 1
        clock.t += 60  # 91 s: the 100 s TTL holds, the negative entry (60 s) expired
        assert asked("192.0.2.3", 1) and asked("192.0.2.99", 2)
        clock.t += 3500  # 3591 s: 10^6 s was capped to max_ttl 3600
        assert asked("192.0.2.2", 1)
        clock.t += 10
        assert asked("192.0.2.2", 2)
    finally:
        r.close(2)


def test_failures_keep_a_known_name_and_are_counted(server: PtrServer) -> None:
    clock = FakeClock()
    server.set("192.0.2.1", Reply((b"known",), ttl=30))
    r = make(server, clock=clock, min_ttl=30, negative_ttl=60)
    try:
        assert resolve(r, "192.0.2.1") == "known"
        server.set("192.0.2.1", Reply(rcode=dns.rcode.SERVFAIL))
        clock.t += 31
        r.name("192.0.2.1")
        wait_for(lambda: r.stats()["failed"] == 1)
        assert r.name("192.0.2.1") == "known"
        server.set("192.0.2.9", Reply(raw_target=b"\x05ab\x1b[c"))  # truncated name
        assert resolve(r, "192.0.2.9") is None
        assert r.stats()["failed"] == 2
    finally:
        r.close(2)


def test_name_never_waits_and_the_queue_is_bounded(server: PtrServer) -> None:
    server.default = Reply(silent=True)  # a dead server
    r = make(server, workers=2, queue_max=16)
    try:
        n = 500
        worst = 0.0
        for i in range(n):
            t = time.perf_counter()
            assert r.name(str(ipaddress.IPv4Address(0xC6336400 + i))) is None
            worst = max(worst, time.perf_counter() - t)
        assert worst < 0.005, f"name() took {worst * 1000:.2f} ms"
        st = r.stats()
        accepted = st["queued"] + st["inflight"] + st["done"] + st["failed"]
        assert st["queued"] <= 16 and st["inflight"] <= 2
        assert accepted + st["dropped"] == n, st
        assert st["dropped"] >= n - 16 - 2
        # the workers time out (1 s) and go on with the queue
        wait_for(lambda: r.stats()["failed"] >= 2, 3)
    finally:
        r.close()


def test_lru_cache_bound_and_invalid_input(server: PtrServer) -> None:
    for i in range(10):
        server.set(f"192.0.2.{i}", Reply((f"h{i}".encode(),)))
    r = make(server, cache_max=4)
    try:
        for i in range(10):
            resolve(r, f"192.0.2.{i}")
        assert r.stats()["cache_size"] == 4
        assert r.name("not-an-address") is None and r.name("1.2.3.4\x1b[2J") is None
        assert r.stats()["invalid"] == 2
    finally:
        r.close(2)


def test_bad_configuration_turns_lookups_off() -> None:
    r = ReverseResolver(nameservers=["not-an-ip"])
    assert not r.enabled and r.error is not None and "\n" not in r.error
    assert r.name("192.0.2.1") is None
    assert r.stats()["queued"] == 0
    r2 = ReverseResolver(nameservers=["127.0.0.1"], netns="ftt-does-not-exist")
    assert not r2.enabled and "No such file" in (r2.error or "")


def test_close_stops_the_workers(server: PtrServer) -> None:
    r = make(server, workers=3)
    threads = list(r._threads)
    assert all(t.is_alive() for t in threads)
    r.close(2)
    assert not any(t.is_alive() for t in threads)
    assert r.name("192.0.2.1") is None and r.stats()["queued"] == 0
