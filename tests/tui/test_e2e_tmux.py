"""End to end: the real `python -m flowtop` in tmux, in a test namespace, real UDP.

A <-> B over veth va/vb (tests/kernel/netns.py). flowtop runs in A on va inside
a tmux session on a private tmux socket; a thread sends UDP from A to B; the
pane must show the conversation (the default view: A the client, its sent
rate under ↑) with a plausible rate within 3 s, and `g f` the flow. `q` must
exit with status 0 and leave no flowtop filter on va.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel import netns

ROOT = Path(__file__).resolve().parents[2]
RATE_PPS = 1000
PAYLOAD = 972  # + 8 UDP + 20 IP = 1000 IP bytes: 8 Mb/s at 1000 packets/s
EXPECTED_BPS = RATE_PPS * (PAYLOAD + 28) * 8

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, BPF, TC)"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


class Tmux:
    def __init__(self, name: str) -> None:
        self.socket = name
        self.session = name

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check
        )

    def capture(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session, check=False).stdout

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session, check=False).returncode == 0

    def kill(self) -> None:
        self.run("kill-server", check=False)


@pytest.fixture
def quiet_pair() -> Iterator[netns.Pair]:
    """A <-> B, IPv4 only and quiet (as tests/kernel's fixture); deleted afterwards."""
    netns.cleanup_stale(own_pid=None)
    p = netns.make_pair(ipv6=False)
    try:
        yield p
    finally:
        p.delete()


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"ftt-{os.getpid()}-tui")
    try:
        yield t
    finally:
        t.kill()


def _sender(pair: netns.Pair, stop: threading.Event) -> None:
    with netns.entered(pair.a.name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        payload = b"x" * PAYLOAD
        nxt = time.monotonic()
        while not stop.is_set():
            s.sendto(payload, ("10.200.1.2", 5201))
            nxt += 1.0 / RATE_PPS
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        s.close()


def _wait(tmux: Tmux, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.capture()
        if re.search(pattern, screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not on screen within {timeout} s:\n{screen}")


_UNITS = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


def _rate(tmux: Tmux, pattern: str, timeout: float = 4.0) -> tuple[float, str]:
    """The b/s the pattern's groups read on screen once plausible (or the last seen)."""
    deadline = time.monotonic() + timeout
    bps, screen = 0.0, ""
    while time.monotonic() < deadline:
        screen = tmux.capture()
        m = re.search(pattern, screen)
        if m:
            bps = float(m.group(1)) * _UNITS[m.group(2)]
            if 0.5 * EXPECTED_BPS <= bps <= 1.5 * EXPECTED_BPS:
                break
        time.sleep(0.3)
    return bps, screen


def test_live_flow_shows_up_and_q_exits_cleanly(
    quiet_pair: netns.Pair, tmux: Tmux, tmp_path: Path
) -> None:
    pair = quiet_pair
    exit_file = tmp_path / "exit"
    cmd = (
        f"cd {ROOT} && ip netns exec {pair.a.name} {sys.executable} -m flowtop -i va -d 1; "
        f"echo EXIT=$? > {exit_file}"
    )
    tmux.run(
        "new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "48",
        "-e", "TERM=xterm-256color", "sh", "-c", cmd,
    )  # fmt: skip
    stop = threading.Event()
    sender = threading.Thread(target=_sender, args=(pair, stop), daemon=True)
    try:
        _wait(tmux, r"flowtop .*every 1s", timeout=60)  # BPF compiled and attached
        sender.start()
        t0 = time.monotonic()
        conversation = r"10\.200\.1\.1:\S+\s+10\.200\.1\.2:\S+\s+udp"
        screen = _wait(tmux, conversation, timeout=3.0)
        assert time.monotonic() - t0 <= 3.0
        assert "by conversation" in screen
        # a plausible rate once a full interval has passed: what A sends is ↑
        # (Iface only where the width has room)
        rate = _rate(tmux, conversation + r"\s+(?:va\s+)?client\s+([\d.]+)([kMG]?)b/s")
        assert 0.5 * EXPECTED_BPS <= rate[0] <= 1.5 * EXPECTED_BPS, rate[1]
        # The flow view (g f): the flow out of va with the same rate.
        tmux.run("send-keys", "-t", tmux.session, "g")
        _wait(tmux, r"Group rows by", timeout=5)
        tmux.run("send-keys", "-t", tmux.session, "f")
        _wait(tmux, r"by flow", timeout=5)
        bps, screen = _rate(
            tmux, r"10\.200\.1\.1\s.*10\.200\.1\.2\s.*udp\s+out\s+va\s+([\d.]+)([kMG]?)b/s"
        )
        assert 0.5 * EXPECTED_BPS <= bps <= 1.5 * EXPECTED_BPS, screen
        assert "va" in screen.splitlines()[1] or " va " in screen
    finally:
        stop.set()
        if sender.is_alive():
            sender.join(5)
    tmux.run("send-keys", "-t", tmux.session, "q")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not exit_file.exists():
        time.sleep(0.1)
    assert exit_file.exists(), tmux.capture()
    assert exit_file.read_text().strip() == "EXIT=0"
    assert netns.flowtop_filters(pair.a, "va", "ingress") == []
    assert netns.flowtop_filters(pair.a, "va", "egress") == []
