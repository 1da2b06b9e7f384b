"""Config files: every key checked, unknown keys and unsafe files refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowtop.config import Config, ConfigError, load, parse_endpoint

GOOD = """
[interfaces]
include = ["eth*", "wan0"]

[collector]
interval = 2
idle_timeout = 30
active_timeout = 120
max_flows = 100000
tc_priority = 7

[ipfix]
collectors = ["192.0.2.10:4739", "[2001:db8::1]:4739", "collector.example:2055"]
transport = "tcp"
domain_id = 42
max_message_size = 1200
template_refresh = 30
options_interval = 120

[prometheus]
listen = 9477
max_series = 200
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    p = tmp_path / "flowtop.toml"
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def test_a_full_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD))
    assert cfg.collector.interfaces == ("eth*", "wan0")
    assert (cfg.collector.interval, cfg.collector.idle_timeout) == (2.0, 30.0)
    assert cfg.collector.max_flows == 100000 and cfg.collector.tc_priority == 7
    assert cfg.ipfix.collectors == (
        ("192.0.2.10", 4739),
        ("2001:db8::1", 4739),
        ("collector.example", 2055),
    )
    assert (cfg.ipfix.transport, cfg.ipfix.domain_id, cfg.ipfix.max_message_size) == (
        "tcp", 42, 1200,
    )  # fmt: skip
    assert cfg.prometheus.listen == ("127.0.0.1", 9477)  # loopback unless told otherwise
    assert cfg.prometheus.max_series == 200


def test_missing_default_file_means_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowtop.config.DEFAULT_PATH", "/nonexistent/flowtop.toml")
    assert load(None) == Config()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[colector]\ninterval = 1", "unknown config section [colector]"),
        ("[collector]\ninterval_s = 1", "unknown config key collector.interval_s"),
        ("[collector]\ninterval = 'fast'", "collector.interval must be a number"),
        ("[collector]\ninterval = 0", "collector.interval must be between 0.05 and 3600"),
        ("[collector]\nmax_flows = 1.5", "collector.max_flows must be a whole number"),
        ("[collector]\ntc_priority = 70000", "collector.tc_priority must be between 1 and"),
        ("[collector]\nidle_timeout = true", "collector.idle_timeout must be a number"),
        ("[interfaces]\ninclude = 'eth0'", "interfaces.include must be a list of strings"),
        ("[interfaces]\ninclude = ['bad name']", "not an interface name or glob"),
        ("[ipfix]\ncollectors = ['10.0.0.1']", "ipfix.collectors: expected HOST:PORT"),
        ("[ipfix]\ncollectors = ['10.0.0.1:99999']", "bad port"),
        ("[ipfix]\ncollectors = ['bad host!:4739']", "not a host name or address"),
        ("[ipfix]\ntransport = 'sctp'", "ipfix.transport must be udp or tcp"),
        ("[ipfix]\nmax_message_size = 100", "ipfix.max_message_size must be between 256"),
        ("[ipfix]\ndomain_id = -1", "ipfix.domain_id must be between 0"),
        ("[prometheus]\nlisten = 'localhost'", "prometheus.listen: expected [ADDRESS:]PORT"),
        ("[prometheus]\ntls_cert = '/etc/hostname'", "tls_cert and prometheus.tls_key go together"),
        ("[prometheus]\ntls_cert = '/nope'\ntls_key = '/nope'", "cannot read /nope"),
        ("collector = 3", "[collector] must be a table"),
        ("[collector\ninterval = 1", "config "),  # TOML syntax error, with position
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, text))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_group_or_world_writable_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, mode=0o664)
    with pytest.raises(ConfigError, match=r"writable by group or others \(mode 0664\); run: chmod"):
        load(path)


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    ("text", "default", "expect"),
    [
        ("9477", "127.0.0.1", ("127.0.0.1", 9477)),
        ("0.0.0.0:9477", "127.0.0.1", ("0.0.0.0", 9477)),
        ("[::1]:9477", None, ("::1", 9477)),
        ("host-1.example:4739", None, ("host-1.example", 4739)),
    ],
)
def test_endpoints(text: str, default: str | None, expect: tuple[str, int]) -> None:
    assert parse_endpoint(text, "x", default) == expect


def test_the_shipped_example_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "contrib" / "flowtop.toml"
    cfg = load(write(tmp_path, example.read_text()))
    assert cfg.ipfix.collectors and cfg.prometheus.listen == ("127.0.0.1", 9477)
