"""Waiting for the app to show a frame, and reading what is on the screen."""

from __future__ import annotations

import time

from textual.pilot import Pilot

from flowtop.tui import FlowtopApp
from flowtop.tui.widgets.talkers import TalkersTable
from tests.tui.fakedns import resolver_of
from tests.tui.fakesource import FakeSource


def make_app(source: FakeSource | None = None, **kw: object) -> FlowtopApp:
    """The app on a fake source; on the flow view unless `group` says otherwise
    (the tests written before the conversation view became the default are
    about flows; test_conversations.py asks for the default)."""
    from tests.tui.conftest import no_dns

    kw.setdefault("resolver", resolver_of(no_dns))
    kw.setdefault("group", "flow")
    return FlowtopApp(source or FakeSource(), **kw)  # type: ignore[arg-type]


async def settle(pilot: Pilot[None], timeout: float = 10.0) -> None:
    """Waits until the screen shows the source's newest frame for the current query."""
    app = pilot.app
    assert isinstance(app, FlowtopApp)
    src = app.source
    assert isinstance(src, FakeSource)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.02)
        shown = app.shown
        if (
            shown is not None
            and shown.query == app.view_query
            and shown.time == src.now()
            and (src.frames is None or src.steps >= src.frames)
            and not any(w.group == "query" and w.is_running for w in app.workers)
        ):
            await pilot.pause(0.05)
            return
    raise AssertionError("the app did not show the source's newest frame in time")


def screen_text(pilot: Pilot[None]) -> str:
    """Every character on the terminal, line by line."""
    return "\n".join(strip.text for strip in pilot.app.screen._compositor.render_strips())


def table(pilot: Pilot[None]) -> TalkersTable:
    return pilot.app.query_one(TalkersTable)
