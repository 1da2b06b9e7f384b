"""Loopback IPFIX collectors for the tests: UDP datagrams and TCP streams."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Self

from .decode import Decoder, Message, fields


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Collector:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: list[bytes] = []
        self.peers: set[tuple[str, int]] = set()
        self.flows = 0  # flow records received so far
        self.options = 0  # options records received so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def messages(self) -> list[bytes]:
        with self.lock:
            return list(self.raw)

    def _add(self, data: bytes, decoder: Decoder, stream: list[bytes] | None = None) -> None:
        msg = decoder.message(data)
        with self.lock:
            self.raw.append(data)
            if stream is not None:
                stream.append(data)
            self.flows += sum(tid in (256, 257) for tid, _ in msg.records)
            self.options += sum(tid == 260 for tid, _ in msg.records)

    def wait_for(self, pred: Callable[[_Collector], bool], timeout: float = 5.0) -> list[bytes]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred(self):
            time.sleep(0.01)
        return self.messages()

    def wait_flows(self, n: int, timeout: float = 5.0) -> list[bytes]:
        return self.wait_for(lambda c: c.flows >= n, timeout)

    def wait_options(self, n: int = 1, timeout: float = 5.0) -> list[bytes]:
        return self.wait_for(lambda c: c.options >= n, timeout)


class UdpCollector(_Collector):
    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # SO_RCVBUFFORCE (33) needs CAP_NET_ADMIN; a loopback burst needs room
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])

    def _run(self) -> None:
        decoder = Decoder()
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            with self.lock:
                self.peers.add(peer)
            self._add(data, decoder)
        self.sock.close()


class TcpCollector(_Collector):
    """Accepts connections one after another; `connections` holds each one's messages."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.connections: list[list[bytes]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.peers.add(peer)
                self.connections.append([])
            self._read(conn)
        self.sock.close()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        decoder = Decoder()  # templates belong to one transport session
        stream = self.connections[-1]
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 4:
                    (length,) = struct.unpack_from("!H", buf, 2)
                    if len(buf) < length:
                        break
                    self._add(buf[:length], decoder, stream)
                    buf = buf[length:]


def decode_all(raw: list[bytes]) -> tuple[list[Message], list[dict[int, int | bytes]]]:
    """Messages, and the flow records in them (template 256/257) as IE id -> value."""
    dec = Decoder()
    msgs = [dec.message(m) for m in raw]
    flows = [fields(v) for m in msgs for tid, v in m.records if tid in (256, 257)]
    return msgs, flows


def options_records(msgs: list[Message]) -> list[dict[int, int | bytes]]:
    return [fields(v) for m in msgs for tid, v in m.records if tid == 260]
