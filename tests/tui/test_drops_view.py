"""Drops in the live view: the Drops column, the drops panel (d), the detail
screen, the filter terms. The real app and query path on the fake source,
whose engine has a real DropTable (core/drops.py) joined each interval with
drop records made here: flow 0 loses 5 packets an interval to NETFILTER_DROP,
flow 3 2 to NO_SOCKET, and a key no flow has 4 to IP_RPFILTER (drops on no
flow)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flowtop.core.drops import DropTable
from flowtop.kernel.drop_records import DROP_RECORD
from flowtop.kernel.dropreasons import from_enum
from flowtop.tui.screens.detail import DetailScreen
from flowtop.tui.widgets.drops import DropsPanel
from tests.tui.fakesource import MONO0, FakeSource
from tests.tui.helpers import make_app, screen_text, settle, table

pytestmark = pytest.mark.asyncio

REASONS = from_enum(
    {
        "SKB_NOT_DROPPED_YET": 0,
        "SKB_CONSUMED": 1,
        "SKB_DROP_REASON_NO_SOCKET": 3,
        "SKB_DROP_REASON_NETFILTER_DROP": 9,
        "SKB_DROP_REASON_IP_RPFILTER": 14,
    }
)
FRAMES = 5


class DropSource(FakeSource):
    def __init__(self, **kw: object) -> None:
        super().__init__(frames=FRAMES, **kw)  # type: ignore[arg-type]
        self.engine.drops = DropTable(REASONS)  # type: ignore[attr-defined]
        ghost = self.keys[1].copy()
        ghost["sport"] = 1  # no flow has it
        self.ghost = ghost

    def advance(self) -> None:
        super().advance()
        with self._lock:
            recs = np.zeros(3, dtype=DROP_RECORD)
            for r, (key, reason, n) in zip(
                recs, ((self.keys[0], 9, 5), (self.keys[3], 3, 2), (self.ghost, 14, 4)), strict=True
            ):
                r["key"], r["reason"], r["packets"], r["bytes"] = key, reason, n, n * 100
            now = int((MONO0 + self.steps * self.interval) * 1e9)
            self.engine.drops.join(self.engine.table, recs, now)  # type: ignore[attr-defined]


def _header(pilot: object) -> list[str]:
    return [str(c.label) for c in table(pilot).columns.values()]  # type: ignore[arg-type]


async def test_drops_column_where_it_fits() -> None:
    app = make_app(DropSource(), resolve=False)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        assert app.shown is not None
        got = {r.key: r.drops for r in app.shown.rows if r.drops}
        assert sorted(got.values()) == [2 * FRAMES, 5 * FRAMES]
        text = screen_text(pilot)
        assert "Drops" in text
        row0 = next(r for r in app.shown.rows if r.drops == 5 * FRAMES)
        line = next(ln for ln in text.splitlines() if f" {row0.sport} " in ln)
        assert re.search(rf"\b{5 * FRAMES}\b", line)
    # 80 columns: the view keeps its columns (Drops does not fit).
    plain = make_app(FakeSource(frames=FRAMES), resolve=False)
    async with plain.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        without = screen_text(pilot).splitlines()[4]
    app = make_app(DropSource(), resolve=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "Drops" not in screen_text(pilot)
        assert screen_text(pilot).splitlines()[4] == without


async def test_drops_panel_toggles_and_shows_reasons_and_flows() -> None:
    app = make_app(DropSource(), resolve=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        panel = app.screen.query_one(DropsPanel)
        assert not panel.display
        assert "Drops on this box" not in screen_text(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert panel.display
        text = screen_text(pilot)
        total = (5 + 2 + 4) * FRAMES
        assert (
            f"Drops on this box: {total} packets (NETFILTER_DROP {5 * FRAMES}, IP_RPFILTER "
            f"{4 * FRAMES}, NO_SOCKET {2 * FRAMES}); {4 * FRAMES} on no flow" in text
        )
        assert "(no flow: dropped before flowtop saw it)" in text
        assert re.search(rf"\b{5 * FRAMES}\s+\S+ \S+ -> \S+ on \S+ (in|out)\s+NETFILTER_DROP", text)
        await pilot.press("d")
        await settle(pilot)
        assert not panel.display and "Drops on this box" not in screen_text(pilot)


async def test_filter_dropped_and_drop_reason() -> None:
    app = make_app(DropSource(), resolve=False)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"dropped", "enter")
        await settle(pilot)
        assert app.shown is not None and app.shown.filter_error is None
        assert sorted(r.drops for r in app.shown.rows) == [2 * FRAMES, 5 * FRAMES]
        await pilot.press("slash", *["backspace"] * 7, *"drop netfilter*", "enter")
        await settle(pilot)
        assert [r.drops for r in app.shown.rows] == [5 * FRAMES]
        await pilot.press("slash", *["backspace"] * 15, *"drop bogus", "enter")
        await settle(pilot)
        assert app.shown.filter_error is not None
        assert "no such drop reason" in app.shown.filter_error


async def test_detail_lists_drops_by_reason() -> None:
    app = make_app(DropSource(), resolve=False)
    async with app.run_test(size=(120, 48)) as pilot:
        await settle(pilot)
        assert app.shown is not None
        row = next(r for r in app.shown.rows if r.drops)
        app.open_detail(row.key)
        await pilot.pause(0.4)
        assert isinstance(app.screen, DetailScreen)
        text = re.sub(r"\s+", " ", screen_text(pilot))
        reason = "NETFILTER_DROP" if row.drops == 5 * FRAMES else "NO_SOCKET"
        assert f" dropped packets {row.drops} " in text
        assert f" {reason} {row.drops} " in text
