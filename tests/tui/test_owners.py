"""Socket owners in the live view: the Process/Service/Container columns where
the width allows, the detail screen's owner facts, group by process, service
and container (g P/S/C), the help. The real app on the fake source, whose
flows get owners as the engine's owner join writes them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import pytest

from flowtop.core.owners import STATE_UNATTRIBUTED
from flowtop.query.owners import NO_OWNER, UNATTRIBUTED
from flowtop.query.types import ViewQuery
from flowtop.tui.columns import choose
from flowtop.tui.format import Display
from flowtop.tui.screens.detail import DetailScreen, command_line, owner_facts
from flowtop.tui.screens.help import HelpScreen
from tests.tui.fakesource import FakeOwner, FakeSource
from tests.tui.helpers import make_app, screen_text, settle

CTR = "c0ffee" + "12" * 29
OWNERS = [
    FakeOwner("nginx", 4100, 33, "nginx.service", None, None, "/system.slice/nginx.service"),
    FakeOwner("curl", 4200, 1000, None, CTR, "6f1c2e4a-0000-4000-8000-000000000001",
              f"/kubepods/besteffort/pod6f1c2e4a-0000-4000-8000-000000000001/{CTR}"),
    FakeOwner("sshd", 4300, 0, "ssh.service", None, None, "/system.slice/ssh.service"),
]  # fmt: skip
FLOWS = 60


def expected_groups(attr: str) -> Counter[str]:
    """Flows per owner name as FakeSource assigns them (every 7th unattributed:
    a row of its own)."""
    out: Counter[str] = Counter()
    for i in range(FLOWS):
        if i % 7 == 6:
            out[UNATTRIBUTED] += 1
        else:
            out[getattr(OWNERS[i % len(OWNERS)], attr) or NO_OWNER] += 1
    return out


def flow_rows(owners: list[FakeOwner] | None):
    src = FakeSource(flows=FLOWS, owners=owners)
    src.advance()
    return src.snapshot(ViewQuery(limit=50)).rows


@pytest.mark.parametrize("width", [79, 100, 120, 160, 200])
def test_owner_columns_only_where_the_rest_fits(width: int) -> None:
    without = [c.key for c in choose(flow_rows(None), "flow", Display(), width)]
    rows = flow_rows(OWNERS)
    shown = [c.key for c in choose(rows, "flow", Display(), width)]
    owners = [k for k in shown if k in ("process", "service", "container")]
    # every column shown without owners is still there, in the same order
    assert [k for k in shown if k not in owners] == without
    # added in priority order: Process, then Service, then Container
    assert owners == ["process", "service", "container"][: len(owners)]
    if width <= 100:
        assert owners == []  # 80x24 keeps the existing columns only
    if width >= 160:
        assert owners == ["process", "service", "container"]
        # after the key columns, before the counters
        assert shown.index("process") == shown.index("iface") + 1


def test_unattributed_flows_show_a_question_mark_not_another_owner() -> None:
    from flowtop.tui.columns import COLUMNS, cell

    rows = flow_rows(OWNERS)
    un = [r for r in rows if r.owner_state == STATE_UNATTRIBUTED]
    assert un and all(r.comm is None and r.pid is None for r in un)
    assert {cell(COLUMNS["process"], r, Display(), lambda a: None) for r in un} == {"?"}
    shown = {cell(COLUMNS["process"], r, Display(), lambda a: None) for r in rows}
    assert shown == {"?", "nginx/4100", "curl/4200", "sshd/4300"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("key", "group", "attr"),
    [("P", "process", "comm"), ("S", "service", "service"), ("C", "container", "container")],
)
async def test_group_keys_show_one_row_per_owner(key: str, group: str, attr: str) -> None:
    app = make_app(FakeSource(flows=FLOWS, owners=OWNERS), resolve=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("g", key)
        await settle(pilot)
        assert app.view_query.group_by == group
        snap = app.shown
        assert snap is not None
        got = Counter({str(r.group): r.flows for r in snap.rows})
        assert got == expected_groups(attr)
        text = screen_text(pilot)
        assert f"by {group}" in text
        for name in got:
            shown = name[:18] if group != "container" else name[:10]
            assert shown in text


@pytest.mark.asyncio
async def test_detail_screen_shows_the_owner() -> None:
    # A real process whose command line the screen reads from /proc.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--marker-e14", "x" * 40],
        stdin=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # until it has exec'd: comm before that is the parent's
            with open(f"/proc/{child.pid}/cmdline", "rb") as f:
                if b"--marker-e14" in f.read():
                    break
            time.sleep(0.01)
        with open(f"/proc/{child.pid}/comm") as f:
            comm = f.read().strip()
        owners = [FakeOwner(comm, child.pid, os.getuid(), "app.service", CTR, None, "/a/b")]
        app = make_app(FakeSource(flows=6, owners=owners), resolve=False)
        async with app.run_test(size=(120, 48)) as pilot:
            await settle(pilot)
            first = app.shown.rows[0] if app.shown else None
            assert first is not None and first.pid == child.pid
            await pilot.press("enter")
            await pilot.pause(0.4)
            assert isinstance(app.screen, DetailScreen)
            text = re.sub(r"\s+", " ", screen_text(pilot))  # folded lines joined
            assert f" pid {child.pid} " in text
            assert f" command {comm} " in text
            assert (
                f"{sys.executable} -c import time; time.sleep(60) --marker-e14 {'x' * 40}" in text
            )
            assert " service app.service " in text
            assert f" container {CTR} " in text  # whole, not the short id
            assert " cgroup /a/b " in text
            assert " pod - " in text
            assert " user root (0) " in text or os.getuid() != 0
    finally:
        child.kill()
        child.wait()
    # gone: "(exited)", never another process's command line
    assert command_line(child.pid, comm) == "(exited)"
    row = replace(first, pid=os.getpid(), comm="not-this-comm")
    facts = dict(owner_facts(row))
    assert facts["command line"] == "(exited)"  # the pid runs another command now


def test_detail_facts_of_unattributed_and_forwarded_flows() -> None:
    rows = flow_rows(OWNERS)
    un = next(r for r in rows if r.owner_state == STATE_UNATTRIBUTED)
    assert owner_facts(un) == [
        ("owner", "unattributed: a local socket whose owner flowtop could not learn")
    ]
    assert owner_facts(replace(un, owner_state=None)) == []  # attribution off


@pytest.mark.asyncio
async def test_help_lists_the_group_keys() -> None:
    app = make_app(FakeSource(flows=6), resolve=False)
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-keys").render())
        text += str(app.screen.query_one("#help-filter").render())
        plain = re.sub(r"\s+", " ", screen_text(pilot))
        for needle in (
            "Group by (g, then)",
            "P process (command name, all its pids)",
            "S systemd service",
            "C container",
            "proc NAME",
            "container ID-PREFIX",
            "unattributed",
        ):
            assert needle in plain, needle


def test_command_line_of_a_socket_made_by_a_named_thread() -> None:
    """The kernel records the name of the thread that made the socket: a
    process whose leader has another name is still that process."""
    code = (
        "import ctypes, threading, time\n"
        "def w():\n"
        "    ctypes.CDLL(None).prctl(15, b'worker-e14', 0, 0, 0)\n"
        "    time.sleep(60)\n"
        "threading.Thread(target=w, daemon=True).start()\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, "--thread-marker"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            names = []
            for t in os.listdir(f"/proc/{child.pid}/task"):
                with open(f"/proc/{child.pid}/task/{t}/comm") as f:
                    names.append(f.read().strip())
            if "worker-e14" in names:
                break
            time.sleep(0.02)
        assert "worker-e14" in names
        assert command_line(child.pid, "worker-e14").endswith("--thread-marker")
        assert command_line(child.pid, "no-such-thread") == "(exited)"
    finally:
        child.kill()
        child.wait()
