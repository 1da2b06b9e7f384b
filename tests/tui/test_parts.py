"""The TUI's pure parts: formatting, column choice, themes, resolver, no Textual import."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowtop.errors import ConfigError
from flowtop.query.types import ViewQuery
from flowtop.tui import FlowtopApp, themes
from flowtop.tui import format as fmt
from flowtop.tui.columns import GROUP_COLUMNS, KEY_COLUMNS, choose
from flowtop.tui.format import Display
from tests.tui.fakesource import FakeSource
from tests.tui.helpers import make_app, settle


def test_numbers() -> None:
    assert fmt.rate(0) == "0b/s"
    assert fmt.rate(1_234_567) == "1.23Mb/s"
    assert fmt.rate(8_000_000, bits=False) == "1.00MB/s"
    assert fmt.rate(999_999) == "1.00Mb/s"
    assert fmt.volume(1000) == "8.00kb"
    assert fmt.volume(1000, bits=False) == "1.00kB"
    assert fmt.count(950) == "950"
    assert fmt.count(12_345) == "12.3k"
    assert fmt.rtt(None) == "" and fmt.rtt(850) == "850us" and fmt.rtt(12_500) == "12.5ms"
    assert fmt.tcp_flags(0x12) == "SYN,ACK" and fmt.tcp_flags(0) == "-"


def test_ports() -> None:
    assert fmt.port(443, 6, True) == "https"
    assert fmt.port(443, 6, False) == "443"
    assert fmt.port(0x0800, 1, True) == "8/0"
    assert fmt.port(None, None, True) == ""
    assert fmt.port(40000, 17, True) == "40000"


def test_columns_fit_80_and_keep_essentials() -> None:
    src = FakeSource(flows=40)
    src.advance()
    rows = src.snapshot(ViewQuery()).rows
    cols = choose(rows, "flow", Display(), 79)
    keys = [c.key for c in cols]
    assert keys[: len(GROUP_COLUMNS["flow"])] == list(GROUP_COLUMNS["flow"])
    assert "bps" in keys
    assert sum(c.width + 1 for c in cols) <= 79
    cum = [c.key for c in choose(rows, "flow", Display(cumulative=True), 79)]
    assert "bytes" in cum and "bps" not in cum
    wide = [c.key for c in choose(rows, "flow", Display(), 200)]
    assert {"bps", "pps", "bytes", "packets"} <= set(wide)
    assert "rtt_us" not in wide  # no row has TCP health yet


def test_columns_of_groups() -> None:
    src = FakeSource(flows=40)
    src.advance()
    for group, expect in (("src", ["src"]), ("pair", ["src", "dst"]), ("iface", ["iface"])):
        rows = src.snapshot(ViewQuery(group_by=group)).rows
        keys = [c.key for c in choose(rows, group, Display(), 79)]
        assert [k for k in keys if k in KEY_COLUMNS] == expect
        assert "flows" in keys


def test_theme_files_load_and_are_complete() -> None:
    loaded = themes.load_themes()
    names = [t.name for t in loaded]
    assert names[:4] == list(themes.ORDER)
    for t in loaded:
        assert {"flowtop-rx", "flowtop-tx", "flowtop-muted"} <= set(t.variables)


def test_theme_file_errors(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text('name = "x"\nprimary = "#fff"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="unknown theme keys: colour"):
        themes.load_themes(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        themes.load_themes(tmp_path / "nope")


def test_theme_choice_honours_no_color_and_dumb_terminals() -> None:
    assert themes.pick_default(None, {}) == "flowtop-dark"
    assert themes.pick_default(None, {"NO_COLOR": "1"}) == "flowtop-mono"
    assert themes.pick_default(None, {"TERM": "dumb"}) == "flowtop-mono"
    assert themes.pick_default("flowtop-light", {"NO_COLOR": ""}) == "flowtop-light"


def test_unknown_theme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown theme 'neon'"):
        FlowtopApp(FakeSource(), theme="neon")  # type: ignore[arg-type]
    assert FlowtopApp(FakeSource(), theme="light").theme == "flowtop-light"  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_no_color_env_gives_monochrome(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    assert app.no_color  # Textual adds its monochrome filter by itself
    assert app.theme == "flowtop-mono"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        svg = app.export_screenshot()
    # every colour on screen is a grey: r == g == b
    import re

    colours = set(re.findall(r"#([0-9a-f]{6})", svg))
    assert colours
    for c in colours - {"c5c8c6", "292929", "ff5f57", "febc2e", "28c840"}:  # window frame
        assert c[0:2] == c[2:4] == c[4:6], c


def test_group_column_for_entity_groups() -> None:
    from dataclasses import replace

    src = FakeSource(flows=10)
    src.advance()
    rows = [replace(r, group="AS64500 Example \x1b[2J") for r in src.snapshot(ViewQuery()).rows]
    cols = choose(rows[:1], "asn", Display(), 79)
    assert cols[0].key == "group"
    from flowtop.tui.columns import cell

    text = cell(replace(cols[0], width=40), rows[0], Display(), lambda a: None)
    assert text == "AS64500 Example "  # the escape sequence is gone


def test_health_summary_names_the_worst_group() -> None:
    from flowtop.tui.history import RateHistory
    from flowtop.tui.widgets.tcp_health import summary
    from tests.tui.fakesource import TCP_HEALTH

    line = summary(RateHistory(), TCP_HEALTH)
    assert line == "TCP health: 1 of 3 degraded: 2.4% retransmits to AS64500"
    lines = summary(RateHistory(), TCP_HEALTH, lines=3).splitlines()
    assert lines[1].startswith("degraded remote    AS64500  p50 41.0ms p95 88.0ms")
    assert "retr 2.40%" in lines[1]
    assert lines[2].startswith("healthy  interface eth1")
