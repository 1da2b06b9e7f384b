"""Interface and DNS names are untrusted: they never become markup or escape sequences."""

from __future__ import annotations

import pytest

from flowtop.tui import FlowtopApp
from flowtop.tui.screens.detail import DetailScreen
from tests.tui.fakedns import resolver_of
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import screen_text, settle

CLEAR = "\x1b[2J"
OSC52 = "\x1b]52;c;ZXZpbA==\x07"  # would write the clipboard
RTL = "\u202e"  # right-to-left override
HOSTILE_IFACES = {
    2: f"{CLEAR}eth{OSC52}[bold]x[/bold]",
    3: "v" * 300,
    4: f"{RTL}lave[red]",
}
HOSTILE_NAME = f"{CLEAR}evil{OSC52}[bold red]pwn[/]{RTL}" + "d" * 300


def hostile_dns(addr: str) -> str | None:
    return HOSTILE_NAME if addr.startswith("192.0.2.") else None


def assert_clean(text: str) -> None:
    assert "\x1b" not in text
    assert "\x07" not in text
    assert RTL not in text
    assert not any(ord(ch) < 0x20 and ch != "\n" for ch in text)


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.parametrize("raw", [False, True], ids=["cleaned-by-source", "raw-from-source"])
async def test_hostile_strings_are_shown_as_plain_text(size: tuple[int, int], raw: bool) -> None:
    src = FakeSource(ifnames=HOSTILE_IFACES, raw_ifnames=raw)
    app = FlowtopApp(src, resolver=resolver_of(hostile_dns))  # type: ignore[arg-type]
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for _ in range(60):
            if "evil" in screen_text(pilot):
                break
            await pilot.pause(0.05)
        text = screen_text(pilot)
        assert_clean(text)
        assert "evil[bold" in text  # the DNS name is shown (cut at 80 columns), escapes removed
        assert "52;c;" not in text  # the OSC 52 payload went with its sequence
        assert "lave[red]" in text  # brackets stay text, never markup
        assert "eth" in text
        assert "v" * 301 not in text  # 300-character name cut
        # the header's interface list and the detail screen too
        await pilot.press("g", "i")
        await settle(pilot)
        text = screen_text(pilot)
        assert_clean(text)
        assert "eth[bold]x[/bold]" in text and "ZXZpbA" not in text
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, DetailScreen)
        assert_clean(screen_text(pilot))
        svg = app.export_screenshot()
        assert "\x1b" not in svg and RTL not in svg


@pytest.mark.asyncio
async def test_hostile_filter_text_is_plain() -> None:
    app = FlowtopApp(FakeSource(), resolver=resolver_of(hostile_dns))  # type: ignore[arg-type]
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"iface [bold]x", "enter")
        await settle(pilot)
        text = screen_text(pilot)
        assert "filter iface [bold]x" in text
        assert_clean(text)
