"""The fleet view in the live view (--listen): the header's exporters line
and the exporter group, at 80x24 and 160x48, over received flows decoded
from hand-built IPFIX / v5 messages (tests/listen/test_view_query.ListenView)."""

from __future__ import annotations

import time

import pytest
from textual.pilot import Pilot

from flowtop.tui import FlowtopApp
from flowtop.tui.screens.groupby import GroupByScreen
from flowtop.tui.widgets.status import StatusHeader
from tests.listen import build as b
from tests.listen.test_view_query import ListenView, ipfix
from tests.tui.fakedns import resolver_of
from tests.tui.helpers import screen_text

pytestmark = pytest.mark.asyncio

N = 12  # exporters: more than 80 columns can list


def _script() -> list[list[tuple[str, str, bytes]]]:
    """Step 1 introduces every exporter (one record each); in step 2 exporter
    i sends 3 * (i + 1) records, so 10.255.0.12 is the busiest; 10.255.0.12
    skips 5 sequence numbers (lost 5) and 203.0.113.9 is sampled 1 in 10."""
    one, two = [], []
    for i in range(1, N + 1):
        addr = f"10.255.0.{i}"
        one.append(ipfix(addr, [("10.0.0.1", 1, 1)], seq=0))
        recs = [(f"10.{i}.0.{j}", 1 + j % 2, 1) for j in range(3 * i)]
        two.append(ipfix(addr, recs, seq=1 + (5 if i == N else 0)))
    v5 = [b.v5_record("10.1.0.1", "10.1.0.2", 1000, 80, 6, 1500, 3)]
    one.append(("203.0.113.9", "netflow", b.v5_packet(v5, sampling=(1 << 14) | 10)))
    two.append(("203.0.113.9", "netflow", b.v5_packet(v5 * 2, seq=1, sampling=(1 << 14) | 10)))
    return [one, two]


def _app() -> tuple[FlowtopApp, ListenView]:
    from tests.tui.conftest import no_dns

    src = ListenView(_script())
    # The flow view: what these tests were written for (they read "by flow").
    app = FlowtopApp(src, resolver=resolver_of(no_dns), group="flow")  # type: ignore[arg-type]
    return app, src


async def _settle(pilot: Pilot[None], src: ListenView, timeout: float = 10.0) -> None:
    app = pilot.app
    assert isinstance(app, FlowtopApp)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.02)
        shown = app.shown
        if (
            shown is not None
            and src.steps >= len(src.script)
            and shown.time == src.now()
            and shown.query == app.view_query
            and not any(w.group == "query" and w.is_running for w in app.workers)
        ):
            await pilot.pause(0.05)
            return
    raise AssertionError("the app did not show the last frame in time")


# The order the header must list them in: by records/s, busiest first. How
# many fit: the header's content is the width less 2 (padding); entries take
# what is left after "exporters 9999  +9999 more": 10.255.0.12's is 25
# columns with its space, the next three's 18, then 17 each; 52 columns at
# 80 (2 entries), 132 at 160 (7).
ORDER = [f"10.255.0.{i}" for i in range(N, 0, -1)]


@pytest.mark.parametrize(("size", "want_shown"), [((80, 24), 2), ((160, 48), 7)])
async def test_header_lists_exporters_busiest_first_cut_to_width(
    size: tuple[int, int], want_shown: int
) -> None:
    app, src = _app()
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, src)
        header = app.query_one(StatusHeader)
        assert header.size.height == 3
        lines = screen_text(pilot).splitlines()
        line = lines[2]
        assert line.strip().startswith(f"exporters {N + 1} ")
        assert len(line.rstrip()) <= size[0]
        words = line.split()
        shown = [w for w in words if w.startswith("10.255.0.") or w == "203.0.113.9"]
        assert shown == ORDER[: len(shown)]
        assert len(shown) == want_shown
        assert line.rstrip().endswith(f"+{N + 1 - len(shown)} more")
        # the busiest: 36 records in the last 1 s interval, 5 lost
        assert "10.255.0.12 36/s lost 5" in line
        # the rest of the screen is still there: the rows and the footer
        assert "by flow" in lines[1]
        assert any("10.12.0." in ln for ln in lines[3:])


async def test_header_names_estimated_exporters() -> None:
    app, src = _app()
    async with app.run_test(size=(300, 40)) as pilot:  # wide enough for all
        await _settle(pilot, src)
        line = screen_text(pilot).splitlines()[2]
        assert "more" not in line
        shown = [w for w in line.split() if w.startswith("10.255.0.") or w == "203.0.113.9"]
        assert shown == [*ORDER, "203.0.113.9"]  # 2 records/s: the last
        assert "203.0.113.9 2/s estimated" in line
        assert line.count("estimated") == 1 and line.count("lost") == 1


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_group_by_exporter(size: tuple[int, int]) -> None:
    app, src = _app()
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, src)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, GroupByScreen)
        assert "e  exporter" in screen_text(pilot)
        await pilot.press("e")
        await _settle(pilot, src)
        assert app.view_query.group_by == "exporter"
        snap = app.shown
        assert snap is not None
        got = {r.group: (r.flows, r.packets) for r in snap.rows}
        want: dict[str | None, tuple[int, int]] = {
            f"10.255.0.{i}": (3 * i + 1, 3 * i + 1) for i in range(1, N + 1)
        }
        want["203.0.113.9"] = (1, 90)  # 3 packets x 3 records x 1 in 10
        assert got == want
        text = screen_text(pilot)
        assert "by exporter" in text
        assert "10.255.0.12" in text.split("\n", 3)[3]  # a row, below the header
