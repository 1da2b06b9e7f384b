"""Ground truth helpers: what flowtop must report for what a test sent."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from .dump import DumpResult
from .frames import Frame, Key
from .netns import Netns, entered

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def expected_flows(frames: Iterable[Frame]) -> dict[Key, tuple[int, int]]:
    """{key: (packets, IP bytes)} of the frames that belong to a flow."""
    out: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for f in frames:
        if f.key is None:
            continue
        out[f.key][0] += 1
        out[f.key][1] += f.ip_bytes
    return {k: (v[0], v[1]) for k, v in out.items()}


def key_match(key: Key, iface: str, direction: str) -> dict[str, Any]:
    return {
        "iface": iface,
        "direction": direction,
        "ip_version": key.ip_version,
        "proto": key.proto,
        "src": key.src,
        "dst": key.dst,
        "sport": key.sport,
        "dport": key.dport,
        "vlan": key.vlan,
    }


def check_flows(
    res: DumpResult, frames: Iterable[Frame], iface: str, direction: str, repeat: int = 1
) -> list[str]:
    """Compares every expected flow; returns a list of mismatch descriptions."""
    errors = []
    for key, (pk, by) in expected_flows(frames).items():
        got = res.flow(**key_match(key, iface, direction))
        want = (pk * repeat, by * repeat)
        if got is None:
            near = res.find(iface=iface, direction=direction, src=key.src, dst=key.dst)
            seen = [
                (n["proto"], n["sport"], n["dport"], n["vlan"], n["packets"], n["bytes"])
                for n in near
            ]
            errors.append(
                f"{iface} {direction} {key}: missing (want {want}); "
                f"same addresses (proto, sport, dport, vlan, packets, bytes): {seen}"
            )
        elif (got["packets"], got["bytes"]) != want:
            errors.append(
                f"{iface} {direction} {key}: got packets/bytes "
                f"{(got['packets'], got['bytes'])}, want {want}"
            )
    return errors


def udp_sink(ns: Netns, addr: str, port: int) -> socket.socket:
    """A bound UDP socket in `ns` (so datagrams to it draw no ICMP error)."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with entered(ns.name):
        s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((addr, port))
    return s


def udp_client(
    ns: Netns, family_addr: str, sport: int = 0, bind_addr: str | None = None
) -> socket.socket:
    fam = socket.AF_INET6 if ":" in family_addr else socket.AF_INET
    with entered(ns.name):
        s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((bind_addr or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), sport))
    return s


def drain(sock: socket.socket, expect: int, timeout: float = 5.0) -> int:
    sock.settimeout(0.2)
    got = 0
    deadline = time.monotonic() + timeout
    while got < expect and time.monotonic() < deadline:
        try:
            sock.recv(65536)
            got += 1
        except TimeoutError:
            continue
    return got


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(ns: Netns, dst: str, count: int = 5, payload: int = 56, ident: int = 0x4654) -> int:
    """ICMP/ICMPv6 echo like `ping -c count -s payload`; returns replies seen."""
    v6 = ":" in dst
    with entered(ns.name):
        if v6:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(1.0)
    replies = 0
    try:
        for seq in range(1, count + 1):
            typ = 128 if v6 else 8
            body = bytes(range(payload % 256)) * (payload // 256 + 1)
            body = body[:payload]
            hdr = struct.pack("!BBHHH", typ, 0, 0, ident, seq)
            if v6:
                pkt = hdr + body  # the kernel fills in the ICMPv6 checksum
            else:
                pkt = struct.pack("!BBHHH", typ, 0, _csum(hdr + body), ident, seq) + body
            s.sendto(pkt, (dst, 0))
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    data = s.recv(2048)
                except TimeoutError:
                    break
                icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
                rtype, _c, _s, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
                if rtype == (129 if v6 else 0) and rid == ident and rseq == seq:
                    replies += 1
                    break
    finally:
        s.close()
    return replies


class TcpServer(threading.Thread):
    """Accepts one connection, reads until EOF, echoes `reply` bytes, closes."""

    def __init__(self, ns: Netns, addr: str, port: int, reply: int = 0) -> None:
        super().__init__(daemon=True)
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with entered(ns.name):
            self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((addr, port))
        self.lsock.listen(1)
        self.lsock.settimeout(30)
        self.reply = reply
        self.received = 0
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            conn, _ = self.lsock.accept()
            conn.settimeout(30)
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                self.received += len(data)
            if self.reply:
                conn.sendall(b"r" * self.reply)
            conn.close()
        except BaseException as e:  # reported by the test through .error
            self.error = e
        finally:
            self.lsock.close()


def tcp_transfer(
    ns: Netns, dst: str, port: int, payload: int, server: TcpServer, sport: int = 0
) -> int:
    """Client in `ns`: connect, send `payload` bytes, shut down, read the reply until
    EOF, close. Returns the client's source port."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with entered(ns.name):
        c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(30)
    if sport:
        c.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
    c.connect((dst, port))
    local_port = c.getsockname()[1]
    chunk = b"p" * 65536
    left = payload
    while left > 0:
        n = c.send(chunk[: min(left, len(chunk))])
        left -= n
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()
    server.join(timeout=30)
    if server.error is not None:
        raise server.error
    assert server.received == payload, (server.received, payload)
    return int(local_port)
