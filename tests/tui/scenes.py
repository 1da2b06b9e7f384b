"""Named scenes of the real app on the fake source: snapshot tests and screenshots.

Each scene is (source options, app options, terminal size, what to do before the
picture). The same list drives tests/tui/test_snapshots.py and
scripts/screenshots.py, so the README's pictures are what the tests check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from textual.pilot import Pilot

from flowtop.query.monitors import MonitorStatus
from flowtop.query.types import Snapshot, ViewQuery
from flowtop.tui import FlowtopApp
from flowtop.tui.app import DEFAULT_GROUP
from tests.tui.conftest import no_dns
from tests.tui.fakedns import resolver_of
from tests.tui.fakesource import FakeOwner, FakeSource
from tests.tui.helpers import settle

Steps = Callable[[Pilot[None]], Awaitable[None]]


async def _nothing(pilot: Pilot[None]) -> None:
    await settle(pilot)


def _keys(*keys: str, toasts: bool = True) -> Steps:
    """Presses keys, then waits for the frame. toasts=False: the key's
    notification is cleared first (it lives 1.5 s: whether a snapshot still
    has it depends on the machine's speed)."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for k in keys:
            await pilot.press(k)
            await pilot.pause(0.05)
        await settle(pilot)
        if not toasts:
            pilot.app.clear_notifications()
        await pilot.pause(0.2)

    return run


async def _bad_filter(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("slash", *"host 10.0.0.1 and port", "enter")
    await pilot.pause(0.2)


async def _names(pilot: Pilot[None]) -> None:
    await settle(pilot)
    for _ in range(40):
        await pilot.pause(0.05)
    await settle(pilot)


@dataclass(frozen=True)
class Scene:
    name: str
    size: tuple[int, int] = (80, 24)
    source: dict[str, Any] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)
    steps: Steps = _nothing
    source_type: type[FakeSource] = FakeSource

    def make_app(self) -> FlowtopApp:
        src_opts = {"flows": 120, "frames": 8, **self.source}
        # The flow view unless the scene says: the scenes from before the
        # conversation view became the default show flows, as they did.
        app_opts = {"resolver": resolver_of(no_dns), "resolve": False, "group": "flow", **self.app}
        return FlowtopApp(self.source_type(**src_opts), **app_opts)


_CTR = "4f1d9c2b7a3e" + "5c" * 26
# Socket owners of the fake flows (the engine's owner join, faked).
DEMO_OWNERS = [
    FakeOwner("nginx", 1312, 33, "nginx.service", None, None, "/system.slice/nginx.service"),
    FakeOwner("postgres", 2208, 106, None, _CTR, None, f"/system.slice/docker-{_CTR}.scope"),
    FakeOwner("curl", 40211, 1000, "session-3.scope", None, None,
              "/user.slice/user-1000.slice/session-3.scope"),
]  # fmt: skip

# Three monitors as query/monitors.MonitorTracker reports them on a live
# engine (reasons as tcphealth.judge words them): one degraded, two healthy,
# one of them without TCP figures (UDP only).
DEMO_MONITORS = (
    MonitorStatus(
        "web-cdn", "net 10.0.0.0/8", "asn 64500", "degraded", "2.4% retransmits, 3 RTOs",
        local_to_remote_bps=12_300_000.0, remote_to_local_bps=456_000.0,
        rtt_p50_us=41_000.0, rtt_p95_us=88_000.0, retransmit_ratio=0.024,
    ),
    MonitorStatus(
        "eu-db", "zone eu-west-1a", "label db", "healthy", "",
        local_to_remote_bps=48_200_000.0, remote_to_local_bps=3_100_000.0,
        rtt_p50_us=420.0, rtt_p95_us=1_100.0, retransmit_ratio=0.0002,
    ),
    MonitorStatus(
        "syslog", "zone eu-west-1a", "port 514 and udp", "healthy", "",
        local_to_remote_bps=9_000.0, remote_to_local_bps=0.0,
    ),
)  # fmt: skip


class MonitorsSource(FakeSource):
    """The fake source with DEMO_MONITORS and a cross-zone rate in every
    snapshot (the header figure shown when zones are configured)."""

    def snapshot(self, query: ViewQuery) -> Snapshot:
        snap = super().snapshot(query)
        return replace(snap, monitors=DEMO_MONITORS, cross_zone_bps=2_500_000.0)


# The live view as it opens: conversations (40 connections: local ones and
# forwarded ones, 106 flow rows).
CONVERSATIONS = {"conversations": 40}
DEFAULT_VIEW = {"group": DEFAULT_GROUP}

SCENES = (
    Scene("main-80x24", source=CONVERSATIONS, app=DEFAULT_VIEW),
    Scene("main-160x48", size=(160, 48), source={**CONVERSATIONS, "tcp": True}, app=DEFAULT_VIEW),
    Scene(
        "detail-conversation-120x40",
        size=(120, 40),
        source={**CONVERSATIONS, "tcp": True},
        app=DEFAULT_VIEW,
        steps=_keys("down", "down", "enter"),
    ),
    Scene(
        "monitors-80x24",
        source=CONVERSATIONS,
        app=DEFAULT_VIEW,
        steps=_keys("m"),
        source_type=MonitorsSource,
    ),
    Scene(
        "monitors-160x48",
        size=(160, 48),
        source={**CONVERSATIONS, "tcp": True},
        app=DEFAULT_VIEW,
        steps=_keys("m"),
        source_type=MonitorsSource,
    ),
    Scene("flows-80x24"),
    Scene("flows-160x48", size=(160, 48)),
    Scene("names-120x30", size=(120, 30), app={"resolve": True}, steps=_names),
    Scene("filter-80x24", steps=_keys("slash", *"udp or icmp", "enter")),
    Scene("filter-error-80x24", steps=_bad_filter),
    Scene("groupby-picker-80x24", steps=_keys("g")),
    Scene("groupby-src-80x24", steps=_keys("g", "s")),
    Scene("groupby-port-120x30", size=(120, 30), steps=_keys("g", "o")),
    Scene("detail-120x36", size=(120, 36), steps=_keys("down", "enter")),
    Scene("tcp-160x48", size=(160, 48), source={"tcp": True}),
    Scene("cumulative-bytes-80x24", steps=_keys("c", "b", toasts=False)),
    Scene("paused-80x24", steps=_keys("p")),
    Scene("help-80x24", steps=_keys("question_mark")),
    Scene("owners-160x48", size=(160, 48), source={"owners": DEMO_OWNERS}),
    Scene(
        "groupby-process-120x30",
        size=(120, 30),
        source={"owners": DEMO_OWNERS},
        steps=_keys("g", "P"),
    ),
    Scene(
        "detail-owner-120x40", size=(120, 40), source={"owners": DEMO_OWNERS}, steps=_keys("enter")
    ),
    Scene("unhealthy-80x24", source={"problems": {"flow_map_full": 12, "no_flow_map": 3}}),
    Scene("theme-dark-100x30", size=(100, 30), source={"tcp": True}, app={"theme": "flowtop-dark"}),
    Scene(
        "theme-light-100x30", size=(100, 30), source={"tcp": True}, app={"theme": "flowtop-light"}
    ),
    Scene(
        "theme-high-contrast-100x30",
        size=(100, 30),
        source={"tcp": True},
        app={"theme": "flowtop-high-contrast"},
    ),
    Scene("theme-mono-100x30", size=(100, 30), source={"tcp": True}, app={"theme": "flowtop-mono"}),
)
