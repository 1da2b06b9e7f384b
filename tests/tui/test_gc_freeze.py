"""The live view freezes what its start left out of the collector's full
scans once the first snapshot is shown, and thaws it when it ends."""

from __future__ import annotations

import gc

import pytest

from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, settle


@pytest.mark.asyncio
async def test_start_up_objects_frozen_while_the_view_runs_and_thawed_after() -> None:
    assert gc.get_freeze_count() == 0
    app = make_app(FakeSource(flows=60, frames=2), resolve=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.pause()
        assert app.gc_frozen
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, Textual, the widgets
        # Later refreshes do not freeze again (the count only falls, as frozen
        # objects are freed by their references).
        src = app.source
        assert isinstance(src, FakeSource)
        src.frames = 4
        await settle(pilot)
        assert app.snapshots >= 3
        assert gc.get_freeze_count() <= frozen
    assert not app.gc_frozen
    assert gc.get_freeze_count() == 0
    app.source.close()
