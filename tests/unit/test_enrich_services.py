"""Service names: /etc/services as libc reads it, the built-in fallback, hostile files."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowtop.enrich import services
from flowtop.enrich.services import BUILTIN, load_services, parse_services, service_name

PROTOS = {"tcp": 6, "udp": 17}


UseFile = Callable[[Path], None]


@pytest.fixture
def services_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[UseFile]:
    """Points the module at another services file for one test, then back."""

    def use(path: Path) -> None:
        monkeypatch.setattr(services, "SERVICES_PATH", str(path))
        services._system.cache_clear()

    yield use
    services._system.cache_clear()


@pytest.mark.skipif(not Path("/etc/services").exists(), reason="no /etc/services here")
def test_system_file_agrees_with_libc() -> None:
    """Every tcp/udp port of /etc/services gets the name getservbyport(3) gives."""
    table = load_services("/etc/services")
    checked = 0
    for (port, proto), name in table.items():
        pname = {6: "tcp", 17: "udp"}.get(proto)
        if pname is None:
            continue
        try:
            want = socket.getservbyport(port, pname)
        except OSError:
            continue  # NSS not reading files: nothing to compare
        assert name == want and service_name(port, proto) == want, (port, pname)
        checked += 1
    assert checked > 100
    assert service_name(22, 6) == "ssh" and service_name(53, 17) == "domain"


def test_builtin_fallback_when_the_file_is_missing(services_file: UseFile, tmp_path: Path) -> None:
    services_file(tmp_path / "none")
    assert service_name(443, 6) == "https"
    assert service_name(6379, 6) == "redis"
    assert service_name(51820, 17) == "wireguard"
    assert service_name(51820, 6) is None
    assert service_name(443, 132) == "https"  # sctp borrows the tcp names
    assert service_name(40000, 6) is None
    assert service_name(53, 1) is None  # ICMP has no ports


def test_file_entries_win_and_fallback_fills_gaps(services_file: UseFile, tmp_path: Path) -> None:
    f = tmp_path / "services"
    f.write_text("myweb 443/tcp\nfirst 7000/udp\nsecond 7000/udp\n")
    services_file(f)
    assert service_name(443, 6) == "myweb"
    assert service_name(443, 17) == "https"  # not in the file: built in
    assert service_name(7000, 17) == "first"  # first entry wins, like libc


def test_hostile_and_malformed_lines() -> None:
    text = (
        "\x1b[2Jevil\u202e 1000/tcp\n"
        "[bold]x[/bold] 1001/tcp\n"
        "noport /tcp\n"
        "badproto 1002/xyz\n"
        "big 70000/tcp\n"
        "neg -5/tcp\n"
        "unicode-digits \u0661\u0662/tcp\n"
        "\x1b[0m 1003/tcp\n"
        "sctp-only 1004/sctp\n"
        "   # just a comment\n"
    )
    table = parse_services(text)
    assert table == {
        (1000, 6): "evil",
        (1001, 6): "[bold]x[/bold]",
        (1004, 132): "sctp-only",
    }


def test_builtin_names_are_plain() -> None:
    for (port, proto), name in BUILTIN.items():
        assert 0 < port < 65536 and proto in (6, 17, 132)
        assert name.isascii() and name.replace("-", "").isalnum(), name


def test_the_live_view_names_ports_from_the_file_then_the_builtin_table(
    services_file: UseFile, tmp_path: Path
) -> None:
    """The TUI's port cells (tui.format) use this module: a port the file lacks
    but the built-in table has is named; names are cut to 16 cells."""
    from flowtop.tui import format as fmt

    f = tmp_path / "services"
    f.write_text("averyveryverylongservicename 7001/tcp\nmyssh 22/tcp\n")
    services_file(f)
    fmt.service.cache_clear()
    try:
        assert fmt.port(6379, 6, True) == "redis"  # not in the file: built in
        assert fmt.port(22, 6, True) == "myssh"  # the file wins
        assert fmt.port(7001, 6, True) == "averyveryverylo…"  # 16 cells
        assert fmt.port(7002, 6, True) == "7002"  # nobody knows it
        assert fmt.port(6379, 6, False) == "6379"  # names off
    finally:
        fmt.service.cache_clear()


@pytest.mark.skipif(not Path("/etc/services").exists(), reason="no /etc/services here")
def test_ports_missing_from_the_system_file_get_builtin_names_in_the_view() -> None:
    """Against this host's /etc/services and libc: every built-in tcp/udp port
    that getservbyport(3) does not know still gets its name in the view."""
    from flowtop.tui import format as fmt

    fmt.service.cache_clear()
    system = load_services("/etc/services")
    checked = 0
    for (port, proto), name in BUILTIN.items():
        pname = {6: "tcp", 17: "udp"}.get(proto)
        if pname is None or (port, proto) in system:
            continue
        with pytest.raises(OSError):
            socket.getservbyport(port, pname)  # libc: missing indeed
        assert fmt.port(port, proto, True) == name, (port, pname)
        checked += 1
    assert checked > 0, "every built-in port is in this /etc/services: nothing to check"
