"""Real exporters and a listening `flowtop dump` in test namespaces (helpers).

Everything runs inside namespaces from tests/kernel/netns.py, exporting over
the namespace's own loopback; teardown kills every process started here.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from typing import Any

from tests.kernel.dump import RUN_DIR, DumpResult, _Reader, python
from tests.kernel.expect import udp_client, udp_sink
from tests.kernel.netns import Netns, entered

READY_TIMEOUT = 40.0


def free_port(ns: Netns, kind: int = socket.SOCK_DGRAM) -> int:
    with entered(ns.name):
        s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


class Listener:
    """`flowtop dump --listen URL --json` in ns, ended with SIGINT by result()."""

    def __init__(self, ns: Netns, *urls: str, duration: float = 120.0) -> None:
        cmd = [python(), "-m", "flowtop", "dump", "--json", "--duration", str(duration)]
        for u in urls:
            cmd += ["--listen", u]
        self.proc: subprocess.Popen[str] = ns.popen(
            cmd, cwd=RUN_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.ns = ns
        self._ready = threading.Event()
        self._err = _Reader(self.proc.stderr, self._ready)
        self._err.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"listener not ready:\n{''.join(self._err.lines)}")

    def result(self, settle: float = 2.5) -> tuple[DumpResult, list[dict[str, Any]]]:
        """After settle s (two drains), stop it; its flows and its exporter lines."""
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()  # stderr: the reader thread's
        self.proc.wait(30)
        self._err.join(5)
        err = "".join(self._err.lines)
        assert self.proc.returncode == 0, f"listener exited {self.proc.returncode}:\n{err}"
        recs = [json.loads(x) for x in out.splitlines() if x.strip()]
        res = DumpResult(self.ns.name, self.proc.returncode, out, err, recs)
        return res, [r for r in recs if r.get("type") == "exporter"]


def send_udp(a: Netns, b: Netns, dst: str, flows: dict[int, tuple[int, int]], dport: int) -> None:
    """From a to dst:dport in b: per source port, (datagrams, payload bytes each)."""
    sink = udp_sink(b, dst, dport)
    try:
        for sport, (count, size) in flows.items():
            c = udp_client(a, dst, sport)
            try:
                for _ in range(count):
                    c.sendto(b"x" * size, (dst, dport))
                    time.sleep(0.0005)
            finally:
                c.close()
    finally:
        sink.close()


def ip_bytes(count: int, size: int) -> int:
    return count * (20 + 8 + size)  # IPv4 + UDP headers


class Tee:
    """UDP on ns's loopback: each datagram received is kept and sent on to every target."""

    def __init__(self, ns: Netns, targets: list[int]) -> None:
        with entered(ns.name):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.targets = targets
        self.datagrams = 0
        self.kept: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.datagrams += 1
            self.kept.append(data)
            for port in self.targets:
                self.out.sendto(data, ("127.0.0.1", port))

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self.sock.close()
        self.out.close()

    def flow_samples(self) -> int:
        """sFlow v5 flow samples (formats 1 and 3) in the datagrams kept so far."""
        n = 0
        for d in list(self.kept):
            at = 28 if int.from_bytes(d[4:8], "big") == 1 else 40  # after the v4/v6 agent
            for _ in range(int.from_bytes(d[at - 4 : at], "big")):
                fmt, size = (
                    int.from_bytes(d[at : at + 4], "big"),
                    int.from_bytes(d[at + 4 : at + 8], "big"),
                )
                n += fmt in (1, 3)
                at += 8 + size
        return n
