"""The listening sockets and the reader thread that feeds a bounded queue.

Receiver binds every URL's sockets at construction (so a port in use is a
clear error before anything starts), and once started a thread moves what
arrives into a queue of at most max_bytes: a datagram that finds it full is
dropped and counted (queue_full), never blocks the socket. take() hands the
queue over (the engine's thread decodes it at each drain).

TCP (IPFIX only, RFC 7011 §10.4): at most MAX_CONNECTIONS at once (more are
refused and counted), each a stream of messages framed by their length
field; a stream whose framing breaks (not version 10, a length under 16) is
closed and counted as a decode error, and so is a message larger than
MAX_MESSAGE.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from dataclasses import dataclass

from flowtop.errors import FlowtopError
from flowtop.listen.urls import ListenUrl

MAX_CONNECTIONS = 64
MAX_MESSAGE = 65535
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
RCVBUF = 8 * 1024 * 1024
_BURST = 512  # datagrams read per wake-up of one socket


class ListenError(FlowtopError):
    """A listening socket that cannot be opened."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Message:
    """One export message as received: what to decode it as, and from whom."""

    data: bytes
    address: str  # the exporter (source address, no port)
    protocol: str  # "ipfix", "netflow" or "sflow"
    tcp: bool


@dataclass(slots=True)
class _Conn:
    sock: socket.socket
    address: str
    buf: bytearray


class Receiver:
    def __init__(self, urls: list[ListenUrl], max_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.queue_full = 0
        self.framing_errors = 0
        self.refused = 0
        self._queue: list[Message] = []
        self._queued = 0
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._conns: dict[int, _Conn] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.bound: list[str] = []
        try:
            for url in urls:
                self._bind(url)
        except BaseException:
            self.close()
            raise
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

    def _bind(self, url: ListenUrl) -> None:
        fam = socket.AF_INET6 if url.family_v6 else socket.AF_INET
        kinds = [k for k, on in ((socket.SOCK_DGRAM, url.udp), (socket.SOCK_STREAM, url.tcp)) if on]
        for kind in kinds:
            s = socket.socket(fam, kind)
            self._socks.append(s)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if kind == socket.SOCK_DGRAM:
                    with contextlib.suppress(OSError):  # the kernel caps it: best effort
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                s.bind((url.host, url.port))
                if kind == socket.SOCK_STREAM:
                    s.listen(16)
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise ListenError(f"cannot listen on {url}: {why}") from None
            s.setblocking(False)
            tag = ("udp" if kind == socket.SOCK_DGRAM else "accept", url.protocol)
            self._sel.register(s, selectors.EVENT_READ, tag)
        self.bound.append(str(url))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="flowtop-listen", daemon=True)
            self._thread.start()

    def take(self) -> list[Message]:
        with self._lock:
            out, self._queue, self._queued = self._queue, [], 0
        return out

    def _put(self, m: Message) -> None:
        with self._lock:
            if self._queued + len(m.data) > self.max_bytes:
                self.queue_full += 1
                return
            self._queue.append(m)
            self._queued += len(m.data)

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=1.0):
                what, proto = key.data
                if what == "wake":
                    return
                if what == "udp":
                    self._read_udp(key.fileobj, proto)  # type: ignore[arg-type]
                elif what == "accept":
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                else:
                    self._read_tcp(key.fd)

    def _read_udp(self, s: socket.socket, proto: str) -> None:
        for _ in range(_BURST):
            try:
                data, addr = s.recvfrom(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP errors reported on the socket: nothing to read
            self._put(Message(data, _host(addr[0]), proto, False))

    def _accept(self, s: socket.socket) -> None:
        try:
            conn, addr = s.accept()
        except OSError:
            return
        if len(self._conns) >= MAX_CONNECTIONS:
            self.refused += 1
            conn.close()
            return
        conn.setblocking(False)
        self._conns[conn.fileno()] = _Conn(conn, _host(addr[0]), bytearray())
        self._sel.register(conn, selectors.EVENT_READ, ("tcp", "ipfix"))

    def _read_tcp(self, fd: int) -> None:
        c = self._conns[fd]
        try:
            data = c.sock.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the exporter: the stream ends like a close
            data = b""
        if not data:
            self._drop(fd)
            return
        c.buf += data
        while len(c.buf) >= 4:
            version = int.from_bytes(c.buf[0:2], "big")
            length = int.from_bytes(c.buf[2:4], "big")
            if version != 10 or length < 16:
                self.framing_errors += 1
                self._drop(fd)
                return
            if len(c.buf) < length:
                break
            self._put(Message(bytes(c.buf[:length]), c.address, "ipfix", True))
            del c.buf[:length]

    def _drop(self, fd: int) -> None:
        c = self._conns.pop(fd, None)
        if c is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(c.sock)
            c.sock.close()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in list(self._conns):
            self._drop(fd)
        for s in self._socks:
            s.close()
        self._socks.clear()
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1


def _host(address: str) -> str:
    """An IPv4-mapped IPv6 source as its IPv4 address."""
    return address[7:] if address.startswith("::ffff:") else address
