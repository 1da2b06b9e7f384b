"""Parts for a Run without a kernel: a scripted collector and a Parts that logs.

LoggingParts makes the real enricher, outputs and recorder (only their
close() is wrapped, to log the order), a FakeCollector in place of the kernel
one and a FakeResolver in place of reverse DNS (no queries leave the test).
Every start and close goes into one list of events, in the order it happened.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from flowtop.config import Config, EnrichConfig
from flowtop.core.flowtable import NS
from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.errors import AttachError, ConfigError
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.run.lifecycle import Parts

T0 = 1_000 * NS
MMDB = Path(__file__).resolve().parents[1] / "data" / "mmdb"
ASN_DB = MMDB / "GeoLite2-ASN-Test.mmdb"
CITY_DB = MMDB / "GeoLite2-City-Test.mmdb"
TELSTRA = "1.128.0.1"  # AS1221 in the ASN test database
BREDBAND = "89.160.20.112"  # AS29518, SE


def flow(
    src: str, dst: str, sport: int, packets: int, direction: int = 1, now_ns: int = T0
) -> tuple[np.ndarray, np.ndarray]:
    """One UDP flow src:sport -> dst:53 on ifindex 2 with `packets` of 100 bytes."""
    k = np.zeros(1, dtype=layout.FLOW_KEY)
    s = np.zeros(1, dtype=layout.FLOW_STATS)
    k["ifindex"], k["ip_version"], k["proto"], k["direction"] = 2, 4, 17, direction
    k["src"] = ipaddress.ip_address(src).packed.ljust(16, b"\0")
    k["dst"] = ipaddress.ip_address(dst).packed.ljust(16, b"\0")
    k["sport"], k["dport"] = sport, 53
    s["packets"], s["bytes"] = packets, packets * 100
    s["first_seen_ns"] = s["last_seen_ns"] = now_ns
    return k, s


def mmdb_copies() -> set[int]:
    """Inodes of the MMDB copies this process has mapped (one memfd per open
    database: flowtop.enrich.geo copies each file into one and maps it)."""
    with open("/proc/self/maps") as f:
        return {int(ln.split()[4]) for ln in f if "flowtop-mmdb" in ln}


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeCollector:
    """The KernelCollector's interface, no kernel: drains come from a script
    (then empty ones); start() is the attach, stop_capture() the detach."""

    def __init__(
        self,
        events: list[str],
        script: Sequence[Drain | BaseException],
        fail_attach: bool = False,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        self.events = events
        self.script = list(script)
        self.fail_attach = fail_attach
        self.on_drain = on_drain
        self.drains = 0
        self.reselected: list[Any] = []
        self.program = SimpleNamespace(counters=lambda: {"flow_map_full": 0})

    def start(self) -> list[str]:
        self.events.append("attach")
        if self.fail_attach:
            raise AttachError("cannot attach to eth1: refused by the test")
        return ["eth1"]

    def drain(self) -> Drain:
        self.drains += 1
        if self.on_drain is not None:
            self.on_drain()
        item = self.script.pop(0) if self.script else Drain([], T0 + self.drains * NS, 1.0)
        if isinstance(item, BaseException):
            raise item
        return item

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        time.sleep(min(timeout, 0.01))

    def names(self) -> dict[int, str]:
        return {2: "eth1"}

    def interfaces(self) -> list[str]:
        return ["eth1"]

    def interface_counters(self) -> list[InterfaceCounters]:
        return [InterfaceCounters(2, "eth1", "ipv4", 0, 0, 0, 0)]

    def health(self, forced_evictions: int = 0) -> CollectorHealth:
        return CollectorHealth(forced_evictions=forced_evictions)

    def stop_capture(self) -> None:
        self.events.append("detach")

    def reselect(self, patterns: Any) -> None:
        self.reselected.append(patterns)

    def close(self) -> None:
        pass  # wrapped by LoggingParts


class FakeResolver:
    """Reverse DNS that knows no names and asks no server."""

    failures = 0

    def __init__(self, on_resolved: Callable[[], None] | None) -> None:
        self.asked: list[str] = []

    def name(self, addr: str) -> str | None:
        self.asked.append(addr)
        return None

    def stats(self) -> dict[str, int]:
        return {"queued": 0, "inflight": 0}

    def close(self, timeout: float = 0.0) -> None:
        pass  # wrapped by LoggingParts


class LoggingParts(Parts):
    """Real parts where they need no kernel or network, each start and close
    logged in `events`; `fail` names a part whose start raises, `fail_close`
    parts whose close raises (after closing for real)."""

    def __init__(
        self,
        script: list[Drain] | None = None,
        fail: str | None = None,
        fail_close: tuple[str, ...] = (),
        on_collector: Callable[[Callable[[], None]], None] | None = None,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        self.events: list[str] = []
        self.script = list(script or [])
        self.fail = fail
        self.fail_close = fail_close
        self.on_collector = on_collector
        self.on_drain = on_drain
        self.made: dict[str, list[Any]] = {}

    def _start(self, name: str) -> None:
        self.events.append(f"start {name}")
        if self.fail == name:
            raise ConfigError(f"{name} refused by the test")

    def _logged(self, name: str, part: Any) -> Any:
        real = part.close
        part.close_calls = 0

        def close(*args: Any, **kw: Any) -> None:
            self.events.append(f"close {name}")
            part.close_calls += 1
            real(*args, **kw)
            if name in self.fail_close:
                raise RuntimeError(f"{name} would not close")

        part.close = close
        self.made.setdefault(name, []).append(part)
        return part

    def enricher(self, cfg: EnrichConfig) -> Any:
        self._start("enricher")
        return self._logged("enricher", super().enricher(cfg))

    def outputs(self, cfg: Config) -> Any:
        self._start("outputs")
        return self._logged("outputs", super().outputs(cfg))

    def collector(self, cfg: Config, checkpoint: Callable[[], None]) -> Any:
        self._start("collector")
        if self.on_collector is not None:
            self.on_collector(checkpoint)  # a real collector checks between its steps
        fake = FakeCollector(self.events, self.script, self.fail == "attach", self.on_drain)
        return self._logged("collector", fake)

    def replay(self, path: str, speed: float) -> Any:
        self._start("replay")
        return self._logged("replay", super().replay(path, speed))

    def recorder(self, path: str, host: str, interval: float, clock_offset: float) -> Any:
        self._start("recorder")
        return self._logged("recorder", super().recorder(path, host, interval, clock_offset))

    def resolver(self, on_resolved: Callable[[], None] | None) -> Any:
        self._start("resolver")
        return self._logged("resolver", FakeResolver(on_resolved))

    def closes(self) -> list[str]:
        return [e for e in self.events if e.startswith("close ")]
