"""Shared helpers for the benchmarks: namespaces, veth pairs, cleanup, tables.

Everything lives in network namespaces named ``ftb-<pid>-<random>-<role>``
created here; nothing touches the root namespace's interfaces. Namespaces are
deleted (with every process inside them, all started by the bench) on exit,
on exceptions and on SIGTERM/SIGINT. Stale ``ftb-`` namespaces whose creator
pid is dead are removed at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.kernel import netns  # noqa: E402  (the namespace lifecycle the tests use)

PREFIX = "ftb-"
NETNS_DIR = "/run/netns"


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("this benchmark needs root (BPF, network namespaces)")


run = netns.run  # one command runner for benches and tests


def delete_netns(name: str) -> None:
    netns.delete_netns(name, PREFIX)


def cleanup_stale() -> None:
    """Deletes ftb- namespaces left by bench runs whose process is gone."""
    netns.cleanup_stale(own_pid=None, prefix=PREFIX)


class Netns:
    def __init__(self, role: str, tag: str) -> None:
        self.name = f"{PREFIX}{os.getpid()}-{tag}-{role}"
        run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            self.sysctl(key, 1)  # no ND/MLD chatter in the counters

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def exec(
        self, *cmd: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, timeout=timeout)

    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)

    def sysctl(self, key: str, value: int | str) -> None:
        self.exec("sysctl", "-q", "-w", f"{key}={value}")

    def ifindex(self, ifname: str) -> int:
        return int(json.loads(self.ip("-j", "link", "show", "dev", ifname).stdout)[0]["ifindex"])

    def link_stats(self, ifname: str) -> dict[str, int]:
        out = json.loads(self.ip("-s", "-j", "link", "show", "dev", ifname).stdout)[0]["stats64"]
        return {
            "rx_packets": out["rx"]["packets"],
            "rx_dropped": out["rx"]["dropped"],
            "tx_packets": out["tx"]["packets"],
            "tx_dropped": out["tx"]["dropped"],
        }

    def delete(self) -> None:
        delete_netns(self.name)


class Pair:
    """Two namespaces a, b joined by veth va (in a, 10.77.0.1) <-> vb (in b, 10.77.0.2)."""

    A4 = "10.77.0.1"
    B4 = "10.77.0.2"

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.namespaces: list[Netns] = []
        self.a = self._ns("a", tag)
        self.b = self._ns("b", tag)
        self.va, self.vb = "ftbva", "ftbvb"
        self.a.ip(
            "link", "add", self.va, "type", "veth", "peer", "name", self.vb, "netns", self.b.name
        )
        for ns, dev, addr in ((self.a, self.va, self.A4), (self.b, self.vb, self.B4)):
            ns.ip("addr", "add", f"{addr}/24", "dev", dev)
            ns.ip("link", "set", "dev", dev, "up")
        # Static neighbours: no ARP in the counters.
        mac_a = json.loads(self.a.ip("-j", "link", "show", "dev", self.va).stdout)[0]["address"]
        mac_b = json.loads(self.b.ip("-j", "link", "show", "dev", self.vb).stdout)[0]["address"]
        self.a.ip("neigh", "replace", self.B4, "lladdr", mac_b, "dev", self.va, "nud", "permanent")
        self.b.ip("neigh", "replace", self.A4, "lladdr", mac_a, "dev", self.vb, "nud", "permanent")

    def _ns(self, role: str, tag: str) -> Netns:
        ns = Netns(role, tag)
        self.namespaces.append(ns)
        return ns

    def delete(self) -> None:
        for ns in self.namespaces:
            with contextlib.suppress(Exception):
                ns.delete()


@contextlib.contextmanager
def pair() -> Iterator[Pair]:
    """A namespace pair, deleted on exit, exceptions and SIGTERM/SIGINT."""
    cleanup_stale()

    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, _term) for s in (signal.SIGTERM, signal.SIGHUP)}
    p: Pair | None = None
    try:
        p = Pair.__new__(Pair)
        p.namespaces = []
        Pair.__init__(p)
        yield p
    finally:
        if p is not None:
            p.delete()
        for s, h in old.items():
            signal.signal(s, h)


def entered(ns: Netns) -> contextlib.AbstractContextManager[None]:
    """Moves the calling thread into ns for the block (netlink sockets made
    inside keep working in ns afterwards)."""
    return netns.entered(ns.name)


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5
) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- #
# output
# --------------------------------------------------------------------------- #


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 (run_time_ns/run_cnt per program), restored after."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as f:
        old = f.read().strip()
    try:
        with open(path, "w") as f:
            f.write("1")
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)
