"""PlainLabel draws exactly the line Textual's Label draws, in the live view and alone."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Label

from flowtop.tui.widgets.plainlabel import PlainLabel
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, settle

TEXTS = ["rx 1.60Mb/s", "tx 0 b/s", "x", "rx 999.9Gb/s", "twelve chars", "thirteen char", ""]


class Labels(App[None]):
    CSS = """
    Label { width: 14; padding: 0 1; color: $accent; }
    #bold, #bold-label { text-style: bold italic; background: $panel; }
    """

    def compose(self) -> ComposeResult:
        yield PlainLabel(classes="p", id="plain")
        yield Label("", id="label")
        yield PlainLabel(id="bold")
        yield Label("", id="bold-label")


def line_of(label: Label) -> object:
    return list(Label.render_line(label, 0))  # what Textual's own path draws


@pytest.mark.asyncio
async def test_plain_label_lines_are_labels() -> None:
    app = Labels()
    async with app.run_test(size=(40, 6)) as pilot:
        await pilot.pause()
        for theme in ("textual-dark", "textual-light"):
            app.theme = theme
            await pilot.pause()
            for ours_id, theirs_id in (("plain", "label"), ("bold", "bold-label")):
                ours = app.query_one(f"#{ours_id}", PlainLabel)
                theirs = app.query_one(f"#{theirs_id}", Label)
                for text in TEXTS:
                    ours.show(text)
                    theirs.update(Text(text, no_wrap=True), layout=False)
                    await pilot.pause()
                    got = list(ours.render_line(0))
                    assert got == line_of(theirs), (theme, ours_id, text)
                    if len(text) <= 12:  # fits: the fast path drew it
                        assert "".join(s.text for s in got) == text
                    # the fast path's line is the Label path's on the same widget
                    assert got == line_of(ours), (theme, ours_id, text)


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_interface_rates_are_labels_lines(size: tuple[int, int]) -> None:
    app = make_app(FakeSource(flows=60))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        rates = list(app.screen.query(".iface-rate").results(PlainLabel))
        assert len(rates) == 2 * len(app.shown.interfaces)  # type: ignore[union-attr]
        shown = {r.text for r in rates}
        want = {
            f"{d} {fmt_rate}"
            for i in app.shown.interfaces  # type: ignore[union-attr]
            for d, fmt_rate in (("rx", _rate(i.rx_bps)), ("tx", _rate(i.tx_bps)))
        }
        assert shown == want
        for r in rates:
            assert list(r.render_line(0)) == line_of(r), r.text


def _rate(bps: float) -> str:
    from flowtop.tui import format as fmt

    return fmt.rate(bps, True)
