"""contrib/flowtop.toml, the config `make install` puts in /etc/flowtop: as
shipped it loads and configures no zone and no monitor; its commented
example of zones, [health] and [[monitor]] loads once uncommented, and its
[health] block is what it says, the defaults."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from flowtop.config import Config, from_mapping

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "flowtop.toml"
# A commented-out line of TOML (a table header or a key), not prose.
_CODE = re.compile(r"^# (\[.*\]|[a-z_]+ = .*)$")


def uncommented(text: str) -> str:
    return "\n".join(m.group(1) if (m := _CODE.match(ln)) else ln for ln in text.splitlines())


def test_shipped_config_has_no_zone_nor_monitor() -> None:
    cfg = from_mapping(tomllib.loads(CONTRIB.read_text()), str(CONTRIB))
    assert not cfg.monitors
    assert cfg.enrich.host_zone is None
    assert cfg.health == Config().health


def test_commented_example_loads() -> None:
    text = uncommented(CONTRIB.read_text())
    assert text != CONTRIB.read_text()
    cfg = from_mapping(tomllib.loads(text), str(CONTRIB))
    assert cfg.enrich.host_zone == "eu-west-1a"
    assert cfg.enrich.labels == "/etc/flowtop/labels"
    assert cfg.health == Config().health  # "These are the defaults."
    got = {m.name: (m.local, m.remote) for m in cfg.monitors}
    assert got == {
        "payments-db": ("zone eu-west-1a", "label db and port 5432"),
        "internet": ("net 10.0.0.0/8", "not net 10.0.0.0/8 and not net 192.168.0.0/16"),
    }
    pay = next(m for m in cfg.monitors if m.name == "payments-db")
    assert pay.thresholds.min_retransmits == 10
    assert pay.thresholds.min_rto == Config().health.min_rto
