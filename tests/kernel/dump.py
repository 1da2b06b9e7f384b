"""Runs `flowtop dump` inside test namespaces and parses what it prints.

    result = run_dump(ns, ["va"], lambda: send(...))
    result.flow(direction="egress", src=..., dst=..., proto=17, sport=..., dport=...)

The collector is started with `ip netns exec NS python -m flowtop dump -i IF
--duration 60 --json`; it says `collecting on` on stderr once its TC programs
are attached, and prints its JSON lines on SIGINT.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import Netns

REPO = Path(__file__).resolve().parents[2]
# The collector runs as `python -m flowtop` from this directory (the repo by
# default; FLOWTOP_TEST_CWD points the kernel tests at another checkout).
RUN_DIR = Path(os.environ.get("FLOWTOP_TEST_CWD", REPO))
READY_MARK = "collecting on"
READY_TIMEOUT = 40.0
EXIT_TIMEOUT = 30.0


def python() -> str:
    env = os.environ.get("FLOWTOP_TEST_PYTHON")
    if env:
        return env
    venv = REPO / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    import sys

    return sys.executable


def flowtop_cmd(ns: Netns, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs `python -m flowtop ARGS` to completion inside `ns`."""
    return subprocess.run(
        ["ip", "netns", "exec", ns.name, python(), "-m", "flowtop", *args],
        cwd=RUN_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _norm(addr: str) -> str:
    return str(ipaddress.ip_address(addr))


@dataclass
class DumpResult:
    ns: str
    returncode: int
    stdout: str
    stderr: str
    records: list[dict[str, Any]]
    elapsed_ready: float = 0.0

    @property
    def flows(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("type") == "flow"]

    @property
    def interfaces(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("type") == "interface"]

    @property
    def stats(self) -> dict[str, Any]:
        s = [r for r in self.records if r.get("type") == "stats"]
        assert len(s) == 1, f"expected one stats line, got {len(s)}:\n{self.stdout[-2000:]}"
        return s[0]

    def find(self, **match: Any) -> list[dict[str, Any]]:
        """Flow records whose fields equal `match` (addresses normalised)."""
        out = []
        for f in self.flows:
            ok = True
            for k, v in match.items():
                got = f.get(k)
                ok = (
                    (got is not None and _norm(got) == _norm(v))
                    if k in ("src", "dst")
                    else got == v
                )
                if not ok:
                    break
            if ok:
                out.append(f)
        return out

    def flow(self, **match: Any) -> dict[str, Any] | None:
        """All records of one flow summed (a dump may print a flow once per
        interval); None when absent. packets/bytes summed, tcp_flags OR-ed."""
        recs = self.find(**match)
        if not recs:
            return None
        keys = {
            (
                r["iface"],
                r["direction"],
                r["ip_version"],
                r["proto"],
                _norm(r["src"]),
                _norm(r["dst"]),
                r["sport"],
                r["dport"],
                r["vlan"],
            )
            for r in recs
        }
        assert len(keys) == 1, f"{match} matches several flows: {sorted(keys)}"
        out = dict(recs[0])
        out["packets"] = sum(r["packets"] for r in recs)
        out["bytes"] = sum(r["bytes"] for r in recs)
        flags = 0
        for r in recs:
            flags |= int(r.get("tcp_flags") or 0)
        out["tcp_flags"] = flags
        out["first_seen"] = min(r["first_seen"] for r in recs)
        out["last_seen"] = max(r["last_seen"] for r in recs)
        out["records"] = len(recs)
        return out

    def total(self, **match: Any) -> tuple[int, int]:
        """(packets, bytes) over every flow record matching."""
        recs = self.find(**match)
        return sum(r["packets"] for r in recs), sum(r["bytes"] for r in recs)

    def iface(self, name: str) -> dict[str, int]:
        """Interface counters of `name` summed over families."""
        recs = [r for r in self.interfaces if r.get("iface") == name]
        out = {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0}
        for r in recs:
            for k in out:
                out[k] += int(r.get(k) or 0)
        return out

    def iface_family(self, name: str, family: str) -> dict[str, int]:
        recs = [r for r in self.interfaces if r.get("iface") == name and r.get("family") == family]
        out = {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0}
        for r in recs:
            for k in out:
                out[k] += int(r.get(k) or 0)
        return out


class _Reader(threading.Thread):
    def __init__(self, stream: Any, ready: threading.Event | None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.ready = ready
        self.lines: list[str] = []

    def run(self) -> None:
        for line in iter(self.stream.readline, ""):
            self.lines.append(line)
            if self.ready is not None and READY_MARK in line:
                self.ready.set()
        self.stream.close()


def export_only(ns: Netns, *args: str) -> tuple[subprocess.Popen[str], _Reader, threading.Event]:
    """Starts `flowtop --export-only ARGS` in ns; its stderr is read by a
    thread (the reader's lines), and the event is set once it is collecting."""
    proc = ns.popen(
        [python(), "-m", "flowtop", "--export-only", *args],
        cwd=RUN_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    err = _Reader(proc.stderr, ready)
    err.start()
    return proc, err, ready


@dataclass
class Collector:
    """A running `flowtop dump` in a namespace."""

    ns: Netns
    ifaces: Sequence[str]
    extra_args: Sequence[str] = ()
    subcommand: Sequence[str] = ("dump",)
    proc: subprocess.Popen[str] | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _out: _Reader | None = None
    _err: _Reader | None = None
    started: float = 0.0

    def start(self) -> Collector:
        cmd = [python(), "-m", "flowtop", *self.subcommand]
        for i in self.ifaces:
            cmd += ["-i", i]
        cmd += ["--duration", "60", "--json", *self.extra_args]
        self.started = time.monotonic()
        self.proc = self.ns.popen(
            cmd, cwd=RUN_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._out = _Reader(self.proc.stdout, None)
        self._err = _Reader(self.proc.stderr, self._ready)
        self._out.start()
        self._err.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise AssertionError(
                    f"flowtop exited ({self.proc.returncode}) before it was ready:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"flowtop not ready after {timeout}s:\n{self.stderr}")
        return time.monotonic() - self.started

    @property
    def stderr(self) -> str:
        return "".join(self._err.lines) if self._err else ""

    @property
    def stdout(self) -> str:
        return "".join(self._out.lines) if self._out else ""

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, check: bool = True) -> DumpResult:
        """SIGINT, wait, parse. Asserts exit 0 unless check=False."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"flowtop did not exit on SIGINT:\n{self.stderr}") from None
        assert self._out and self._err
        self._out.join(timeout=10)
        self._err.join(timeout=10)
        if check:
            assert rc == 0, f"flowtop exited {rc}:\n{self.stderr[-4000:]}"
        records = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AssertionError(f"non-JSON line on stdout: {line!r}") from e
        return DumpResult(self.ns.name, rc, self.stdout, self.stderr, records)


def run_dumps(
    targets: Sequence[tuple[Netns, Sequence[str]]],
    traffic_fn: Callable[[], Any],
    extra_args: Sequence[str] = (),
    settle: float = 0.3,
) -> tuple[list[DumpResult], Any]:
    """Starts one collector per (namespace, interfaces), waits until all are
    attached, runs traffic_fn, waits `settle` s, stops them all (SIGINT)."""
    cols = [Collector(ns, ifs, extra_args).start() for ns, ifs in targets]
    try:
        for c in cols:
            c.wait_ready()
        ret = traffic_fn()
        time.sleep(settle)
        results = [c.stop() for c in cols]
    finally:
        for c in cols:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait(timeout=10)
    return results, ret


def run_dump(
    ns: Netns,
    ifaces: Sequence[str],
    traffic_fn: Callable[[], Any],
    extra_args: Sequence[str] = (),
    settle: float = 0.3,
) -> DumpResult:
    results, _ = run_dumps([(ns, ifaces)], traffic_fn, extra_args, settle)
    return results[0]
