"""Sockets to one collector: UDP (connected, no IP fragmentation) or TCP.

A transport opens, sends whole IPFIX messages and closes; every failure is an
OSError for the caller (the collector link) to count. Nothing here retries.
"""

from __future__ import annotations

import contextlib
import select
import socket
from typing import Protocol

# Linux <linux/in.h>, <linux/in6.h>: set DF and fail with EMSGSIZE instead of
# fragmenting a message that does not fit the path MTU.
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
_PMTUDISC_DO = 2


class Transport(Protocol):
    stream: bool  # a byte stream (TCP): a failed send ends the transport session

    @property
    def is_open(self) -> bool: ...

    def open(self, timeout: float) -> None: ...

    def send(self, data: bytes, timeout: float) -> None: ...

    def close(self) -> None: ...

    def local_address(self) -> tuple[str, int] | None: ...


class PeerClosed(ConnectionResetError):
    """The stream's peer went away before this send: nothing of it was written."""


def _resolve(host: str, port: int, kind: socket.SocketKind) -> tuple[int, tuple[str, int]]:
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=kind)[0]
    return family, (str(addr[0]), int(addr[1]))


class _SocketTransport:
    stream = False
    kind = socket.SOCK_DGRAM

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def _connect(self, timeout: float) -> socket.socket:
        family, addr = _resolve(self.host, self.port, self.kind)
        sock = socket.socket(family, self.kind)
        try:
            self._configure(sock, family)
            sock.settimeout(timeout)
            sock.connect(addr)
        except OSError:
            sock.close()
            raise
        return sock

    def _configure(self, sock: socket.socket, family: int) -> None:
        pass

    def open(self, timeout: float) -> None:
        if self._sock is None:
            self._sock = self._connect(timeout)

    def send(self, data: bytes, timeout: float) -> None:
        if self._sock is None:
            raise ConnectionError("transport not open")
        self._sock.settimeout(timeout)
        self._sock.sendall(data)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def local_address(self) -> tuple[str, int] | None:
        if self._sock is None:
            return None
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])


class UdpTransport(_SocketTransport):
    """A connected UDP socket, so ICMP port unreachable comes back as ECONNREFUSED."""

    stream = False
    kind = socket.SOCK_DGRAM

    def _configure(self, sock: socket.socket, family: int) -> None:
        with contextlib.suppress(OSError):
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _PMTUDISC_DO)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_DO)

    def send(self, data: bytes, timeout: float) -> None:
        if self._sock is None:
            raise ConnectionError("transport not open")
        self._sock.settimeout(timeout)
        sent = self._sock.send(data)
        if sent != len(data):
            raise OSError(f"short UDP send: {sent} of {len(data)} bytes")


class TcpTransport(_SocketTransport):
    """One TCP connection; a failed send closes it (the stream is then unusable)."""

    stream = True
    kind = socket.SOCK_STREAM

    def _configure(self, sock: socket.socket, family: int) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes, timeout: float) -> None:
        try:
            self._check_peer()
            super().send(data, timeout)
        except OSError:
            self.close()
            raise

    def _check_peer(self) -> None:
        """Collectors never write to us: a readable socket means the peer closed it.

        Without this, the first message after the collector went away would
        vanish into the send buffer of a dead connection, uncounted.
        """
        sock = self._sock
        if sock is None:
            raise ConnectionError("transport not open")
        readable, _, _ = select.select([sock], [], [], 0)
        if readable and not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
            raise PeerClosed("collector closed the connection")


def make_transport(kind: str, host: str, port: int) -> Transport:
    if kind == "udp":
        return UdpTransport(host, port)
    if kind == "tcp":
        return TcpTransport(host, port)
    raise ValueError(f"unknown IPFIX transport {kind!r}: udp or tcp")
