"""The monitors panel (m) and the cross-zone header figure in the live view,
at 80x24 and 160x48, and the `monitor NAME` filter term through the real
query path. The fake source's snapshots carry fixed monitor statuses (what
query/monitors.MonitorTracker makes on a live engine) and a cross-zone rate."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flowtop.config import MonitorConfig
from flowtop.query.monitors import MonitorStatus, MonitorTracker
from flowtop.query.types import Snapshot, ViewQuery
from flowtop.tui.widgets.monitors import MonitorsPanel
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, screen_text, settle

pytestmark = pytest.mark.asyncio

STATUSES = (
    MonitorStatus(
        "web", "net 10.0.0.0/8", "host 192.0.2.1", "degraded", "3.2% retransmits, 2 RTOs",
        local_to_remote_bps=12_300_000.0, remote_to_local_bps=456_000.0,
        rtt_p50_us=1_200.0, rtt_p95_us=3_400.0, retransmit_ratio=0.032,
    ),
    MonitorStatus(
        "backup", "net 10.0.0.0/8", "host 192.0.2.2", "healthy", "",
        local_to_remote_bps=9_000.0, remote_to_local_bps=0.0,
    ),
)  # fmt: skip


class MonitorSource(FakeSource):
    def __init__(self, monitors: tuple[MonitorStatus, ...] = STATUSES, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.fixed = monitors
        # The definitions the `monitor NAME` filter term knows.
        MonitorTracker([MonitorConfig(m.name, m.local, m.remote) for m in monitors])

    def snapshot(self, query: ViewQuery) -> Snapshot:
        snap = super().snapshot(query)
        zones = 2_500_000.0 if self.fixed else None
        return replace(snap, monitors=self.fixed, cross_zone_bps=zones)


def panel_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if "Monitors:" in ln)
    return [ln.strip() for ln in lines[start : start + 3]]


async def test_monitors_panel_80x24() -> None:
    app = make_app(MonitorSource(), resolve=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        panel = app.screen.query_one(MonitorsPanel)
        assert not panel.display and "Monitors:" not in screen_text(pilot)
        text = screen_text(pilot)
        assert "cross-zone 2.50Mb/s" in text.splitlines()[0]
        await pilot.press("m")
        await settle(pilot)
        assert panel.display
        text = screen_text(pilot)
        lines = text.splitlines()
        assert len(lines) == 24 and all(len(ln) <= 80 for ln in lines)
        head, web, backup = panel_lines(text)
        assert head == "Monitors: 2, 1 degraded"
        assert web.startswith("web ") and "↑ 12.3Mb/s ↓  456kb/s" in web
        # the reason is cut at the width, the verdict is on the line
        assert "rtt 1.2ms/3.4ms  retr 3.20%  DEGRADED: 3.2%" in web
        assert "2 RTOs" not in web
        assert backup.startswith("backup ") and "rtt -  retr -  healthy" in backup
        # the talkers table and the footer are still on screen
        assert app.shown is not None and app.shown.rows
        assert "Filter" in lines[-1]
        await pilot.press("m")
        await settle(pilot)
        assert not panel.display and "Monitors:" not in screen_text(pilot)


async def test_monitors_panel_160x48_full_reason_and_bytes() -> None:
    app = make_app(MonitorSource(), resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("b")  # bytes/s
        await pilot.press("m")
        await settle(pilot)
        _, web, _ = panel_lines(screen_text(pilot))
        assert web.endswith("DEGRADED: 3.2% retransmits, 2 RTOs")
        assert "↑ 1.54MB/s ↓ 57.0kB/s" in web and "rtt 1.2ms/3.4ms  retr 3.20%" in web


async def test_no_monitors_and_no_zones() -> None:
    app = make_app(MonitorSource(monitors=()), resolve=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "cross-zone" not in screen_text(pilot)
        await pilot.press("m")
        await settle(pilot)
        assert "Monitors: none configured ([[monitor]] tables in the config file)" in screen_text(
            pilot
        )


async def test_monitor_filter_term() -> None:
    src = MonitorSource()
    app = make_app(src, resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"monitor web", "enter")
        await settle(pilot)
        shown = app.shown
        assert shown is not None and shown.filter_error is None
        # the monitor's flows: a 10/8 end and 192.0.2.1, either way round
        want = [
            i
            for i, k in enumerate(src.keys)
            if k["ip_version"] == 4 and bytes(k["dst"])[:4] == bytes([192, 0, 2, 1])
        ]
        assert shown.matched == len(want) > 0
        assert {r.dst for r in shown.rows} == {"192.0.2.1"}
        await pilot.press("slash", *["backspace"] * 11, *"monitor nope", "enter")
        await settle(pilot)
        # shown in place, the previous filter kept
        assert "unknown monitor 'nope' (at 1; known: backup, web)" in screen_text(pilot)
        assert app.view_query.filter == "monitor web"
