"""Hostile process names, command lines and cgroup paths in a real terminal:
the real app (`python -m tests.tui.run_fake`, the fake source with owners)
in tmux on a private socket. Whatever a process or a cgroup's creator chose
must reach tmux as plain text: tmux itself is the ground truth. An OSC 52
that got through would create a tmux paste buffer (set-clipboard on), an
OSC 2 would set the pane title, a bidi override would be in the pane's text;
a control run first shows that each of these detectors does fire when the
same bytes are written to the terminal raw.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowtop.core.cgroups import PATH_MAX_LEN

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

RTL = "\u202e"
OSC52 = "\x1b]52;c;UFdORUQtQ0xJUA==\x07"  # would fill the clipboard / a tmux buffer
TITLE = "\x1b]2;PWNED-TITLE\x07"  # would set the pane title
CLEAR = "\x1b[2J\x1b[H"
# What the child process calls itself (prctl PR_SET_NAME: 15 bytes at most).
CHILD_COMM = "\x1b]2;T\x07ev" + RTL + "il"
CTR = "deadbeef" + "0a" * 28


class Tmux:
    def __init__(self, name: str, conf: Path) -> None:
        self.socket = name
        self.conf = conf

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True, text=True, check=check, timeout=30,
        )  # fmt: skip

    def capture(self, target: str) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", target, check=False).stdout

    def title(self, target: str) -> str:
        return self.run("display-message", "-p", "-t", target, "#{pane_title}").stdout.strip()

    def buffers(self) -> str:
        return self.run("list-buffers", check=False).stdout

    def wait(self, target: str, pattern: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture(target)
            if re.search(pattern, screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not on screen within {timeout} s:\n{screen}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    conf = tmp_path / "tmux.conf"
    # Applications may set tmux buffers (OSC 52) and pane titles (OSC 2).
    conf.write_text("set -g set-clipboard on\nset -g allow-rename on\n")
    t = Tmux(f"ftt-{os.getpid()}-owners", conf)
    try:
        yield t
    finally:
        t.run("kill-server", check=False)


@pytest.fixture
def hostile_child() -> Iterator[subprocess.Popen[bytes]]:
    """A live process with a hostile comm and command line."""
    code = (
        "import ctypes, sys, time; "
        "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0); time.sleep(120)"
    )
    argv = [sys.executable, "-c", code, CHILD_COMM, f"{OSC52}{TITLE}{CLEAR}argv{RTL}marker"]
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{child.pid}/comm", "rb") as f:
                if f.read().startswith(b"\x1b]2;T"):
                    break
            time.sleep(0.02)
        else:
            raise AssertionError("the child did not rename itself")
        yield child
    finally:
        child.kill()
        child.wait()


def _assert_plain(tmux: Tmux, target: str, screen: str) -> None:
    assert RTL not in screen
    assert "\x1b" not in screen and "\x07" not in screen
    assert "PWNED" not in tmux.title(target)
    assert tmux.buffers() == ""  # no OSC 52 got through
    assert "UFdORUQ" not in screen  # nor its payload as text


def test_detectors_fire_on_raw_bytes(tmux: Tmux, tmp_path: Path) -> None:
    """The control: the same sequences written raw do reach tmux."""
    raw = tmp_path / "raw"
    raw.write_text(f"{OSC52}{TITLE}x{RTL}y\n")
    tmux.run("new-session", "-d", "-s", "ctl", "-x", "80", "-y", "24",
             "sh", "-c", f"cat {raw}; sleep 30")  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not tmux.buffers():
        time.sleep(0.1)
    assert "PWNED-CLIP" in tmux.run("show-buffer").stdout
    assert tmux.title("ctl") == "PWNED-TITLE"
    assert RTL in tmux.capture("ctl")


def test_hostile_owner_names_never_reach_the_terminal(
    tmux: Tmux, tmp_path: Path, hostile_child: subprocess.Popen[bytes]
) -> None:
    long_path = "/" + "/".join(f"\x1b[31m{'d' * 190}{RTL}{i}" for i in range(22))
    assert len(long_path) > 4096
    owners = [
        {  # the real child: the detail screen reads its command line from /proc
            "comm": CHILD_COMM, "pid": hostile_child.pid, "uid": os.getuid(),
            "service": f"{OSC52}svc{RTL}.service", "container": CTR,
            "pod": f"{TITLE}pod", "cgroup": long_path,
        },
        {
            "comm": f"{CLEAR}{TITLE}bad{RTL}[red]name[/]", "pid": 4242, "uid": 0,
            "service": f"{TITLE}unit[bold].scope", "container": None, "pod": None,
            "cgroup": f"/x/{OSC52}y",
        },
    ]  # fmt: skip
    spec = tmp_path / "owners.json"
    spec.write_text(json.dumps(owners))
    # No COLUMNS/LINES from the test run: the app must see the pane's size.
    cmd = (
        f"cd {ROOT} && unset COLUMNS LINES; PYTHONPATH={ROOT} TZ=UTC "
        f"{sys.executable} -m tests.tui.run_fake {spec}"
    )
    tmux.run("new-session", "-d", "-s", "app", "-x", "180", "-y", "50",
             "-e", "TERM=xterm-256color", "sh", "-c", cmd)  # fmt: skip
    # The main view: the Process and Service columns.
    screen = tmux.wait("app", r"evil/\d+.*svc\.service")
    assert f"evil/{hostile_child.pid}" in screen
    assert "badred" not in screen and "bad[red]name[/]" in screen  # brackets stay text
    assert "unit[bold].scope" in screen
    _assert_plain(tmux, "app", screen)
    # The detail screen of the top flow: command line, cgroup path, pod.
    tmux.run("send-keys", "-t", "app", "Enter")
    screen = tmux.wait("app", r"command line")
    joined = re.sub(r"\s+", "", screen)
    assert "argvmarker" in joined  # the command line read from /proc, cleaned
    assert f"pid {hostile_child.pid}" in re.sub(r" +", " ", screen)
    assert "(exited)" not in screen
    # the 4 KB path is cut to the display bound ('…' marks the cut)
    cgroup = re.search(r"cgroup\s+(/.*?)\s+service", screen, re.S)
    assert cgroup is not None, screen
    path = re.sub(r"\s+", "", cgroup.group(1))
    assert path.endswith("…") and len(path) <= PATH_MAX_LEN
    assert "pod" in screen and "pod\x07" not in screen
    _assert_plain(tmux, "app", screen)
    # Grouped by process: the names as group values.
    tmux.run("send-keys", "-t", "app", "Escape")
    tmux.wait("app", r"Rate")
    tmux.run("send-keys", "-t", "app", "g")
    tmux.wait("app", r"Group rows by")
    tmux.run("send-keys", "-t", "app", "P")
    screen = tmux.wait("app", r"by process")
    assert re.search(r"^evil\s", screen, re.M) and "bad[red]name[/]" in screen
    _assert_plain(tmux, "app", screen)
    tmux.run("send-keys", "-t", "app", "q")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "app" in tmux.run("ls", check=False).stdout:
        time.sleep(0.1)
    assert "app:" not in tmux.run("ls", check=False).stdout
