"""`flowtop --export-only` in a test namespace, exporting IPFIX to a socket the
test holds there (on the namespace's loopback) and serving Prometheus.

    with ExportOnly(ns, ["tun0"]) as exp:
        ...traffic...
        text = exp.scrape()
    records = exp.flow_records()  # after the SIGTERM flush, decoded by tests/export/decode.py
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from tests.export.decode import Decoder, fields

from .dump import RUN_DIR, _Reader, python
from .netns import Netns, entered

READY_TIMEOUT = 40.0


class ExportOnly:
    """A running `flowtop --export-only -i IF... --ipfix 127.0.0.1:P --prometheus Q`."""

    def __init__(self, ns: Netns, ifaces: Sequence[str]) -> None:
        self.ns = ns
        with entered(ns.name):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind(("127.0.0.1", 0))
        self.prom_port = int(probe.getsockname()[1])
        probe.close()
        self.sock.settimeout(0.2)
        port = int(self.sock.getsockname()[1])
        cmd = [python(), "-m", "flowtop", "--export-only"]
        for i in ifaces:
            cmd += ["-i", i]
        cmd += ["--ipfix", f"127.0.0.1:{port}", "--prometheus", str(self.prom_port)]
        self.proc: subprocess.Popen[Any] = ns.popen(
            cmd, cwd=RUN_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._ready = threading.Event()
        self._err = _Reader(self.proc.stderr, self._ready)
        self._err.start()
        self.datagrams: list[bytes] = []

    def __enter__(self) -> ExportOnly:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"flowtop --export-only not ready:\n{self.stderr}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stderr(self) -> str:
        return "".join(self._err.lines)

    def scrape(self) -> str:
        with entered(self.ns.name):
            url = f"http://127.0.0.1:{self.prom_port}/metrics"
            return str(urllib.request.urlopen(url, timeout=5).read().decode())

    def close(self) -> None:
        """SIGTERM (ends and exports every flow), then the datagrams that came."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._err.join(timeout=5)
        while True:
            try:
                self.datagrams.append(self.sock.recv(65535))
            except (TimeoutError, OSError):
                break
        self.sock.close()

    def flow_records(self) -> list[dict[int, int | bytes]]:
        """Every IPFIX data record with a packet count (IE 2), as IE id -> value."""
        dec = Decoder()
        out = []
        for data in self.datagrams:
            for _tid, values in dec.message(data).records:
                f = fields(values)
                if 2 in f:
                    out.append(f)
        return out
