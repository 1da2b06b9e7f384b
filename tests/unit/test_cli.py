"""Bad input: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flowtop import options as o
from flowtop.cli import _config, build_parser
from flowtop.config import Config
from flowtop.errors import ConfigError


def flowtop(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flowtop", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def assert_one_line_error(p: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert words in lines[0], lines[0]
    assert p.stdout == ""


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["dump", "--duration", "-1"], 2, "--duration must be positive"),
        (["dump", "--duration", "abc"], 2, "invalid float value"),
        (["dump", "--tc-priority", "70000"], 2, "tc priority must be 1..65535"),
        (["dump", "--max-flows", "0"], 2, "max flows must be"),
        (["dump", "--idle-timeout", "0"], 2, "idle timeout must be positive"),
        (["dump", "-i", "bad name"], 2, "not an interface name"),
        (["--bogus"], 2, "unrecognized arguments"),
        (["nosuchcommand"], 2, "invalid choice"),
    ],
)
def test_bad_options(args: list[str], code: int, words: str) -> None:
    assert_one_line_error(flowtop(*args), code, words)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to get past the privilege check")
def test_unknown_interface() -> None:
    assert_one_line_error(flowtop("dump", "-i", "nosuchif0"), 3, "no such interface: nosuchif0")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody"
)
def test_not_root() -> None:
    p = flowtop("dump", "-i", "lo", "--duration", "1", user="nobody")
    assert_one_line_error(p, 77, "needs root")


CORE_MODULES = (
    "flowtop.core.engine", "flowtop.run.commands", "flowtop.core.flowtable", "flowtop.run.dump",
    "flowtop.query.source", "flowtop.query.filterexpr", "flowtop.run.record", "flowtop.run.sources",
    "flowtop.run.outputs", "flowtop.run.service", "flowtop.kernel.collector",
    "flowtop.run.lifecycle", "flowtop.core.readings", "flowtop.export.ipfix",
    "flowtop.export.prometheus", "flowtop.enrich", "flowtop.enrich.dns", "flowtop.core.tcphealth",
    "flowtop.kernel.sockops",
)  # fmt: skip


def test_core_modules_do_not_import_textual() -> None:
    """The engine, collector and exporters work without the UI libraries (STYLE.md)."""
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {CORE_MODULES!r}]; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def _main_with(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}; from flowtop.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_bcc_missing() -> None:
    p = _main_with("sys.modules['bcc'] = None", "dump", "-i", "lo", "--duration", "1")
    assert_one_line_error(p, 69, "bcc is not importable")


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_program_that_does_not_compile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "tc.c").write_text("int flowtop_ingress(struct __sk_buff *skb) { return nope; }\n")
    os.environ["FLOWTOP_BPF_DIR"] = str(tmp_path)
    try:
        p = flowtop("dump", "-i", "lo", "--duration", "1")
    finally:
        del os.environ["FLOWTOP_BPF_DIR"]
    assert_one_line_error(p, 69, "cannot compile or load the TC program")


# -- every option on either side of the subcommand ---------------------------------------
#
# One sample value per option, keyed by dest. The parser's own actions are the
# list of options to cover: one added without a sample here fails
# test_every_option_has_a_sample, so the table below covers it from then on.


def _samples(tmp: Path) -> dict[str, tuple[list[str], object]]:
    """dest -> (the words after the flag, the value the parser must give)."""
    cfg = tmp / "flowtop.toml"
    cfg.write_text("[collector]\nidle_timeout = 9\n")
    cfg.chmod(0o600)
    return {
        "interfaces": (["va"], ["va"]),
        "listen": (["ipfix://"], ["ipfix://"]),
        "tc_priority": (["7"], 7),
        "attach": (["tc"], "tc"),
        "max_flows": (["1000"], 1000),
        "idle_timeout": (["3.5"], 3.5),
        "active_timeout": (["30"], 30.0),
        "config": ([str(cfg)], str(cfg)),
        "geoip_asn": (["/x/asn.mmdb"], "/x/asn.mmdb"),
        "geoip_city": (["/x/city.mmdb"], "/x/city.mmdb"),
        "labels": (["/x/labels"], "/x/labels"),
        "resolve": ([], True),
        "no_resolve": ([], True),
        "ipfix": (["192.0.2.9:4739"], ["192.0.2.9:4739"]),
        "ipfix_transport": (["tcp"], "tcp"),
        "prometheus": (["9477"], "9477"),
        "export_only": ([], True),
        "delay": (["2"], 2.0),
        "theme": (["mono"], "mono"),
        "record": (["/x/rec"], "/x/rec"),
        "replay": (["/x/rec"], "/x/rec"),
        "speed": (["3"], 3.0),
        "duration": (["7"], 7.0),
        "json": ([], True),
        "conversations": ([], True),
        "interval": (["0.5"], 0.5),
        "all": ([], True),
    }


# What the Config built for a collecting mode must show for an option, when the
# option goes into the Config at all (given the sample above).
CONFIG_OF: dict[str, Callable[[Config], object]] = {
    "interfaces": lambda c: c.collector.interfaces == ("va",),
    "listen": lambda c: [str(u) for u in c.listen.urls] == ["ipfix://127.0.0.1:4739 (udp+tcp)"],
    "tc_priority": lambda c: c.collector.tc_priority == 7,
    "attach": lambda c: c.collector.attach == "tc",
    "max_flows": lambda c: c.collector.max_flows == 1000,
    "idle_timeout": lambda c: c.collector.idle_timeout == 3.5,
    "active_timeout": lambda c: c.collector.active_timeout == 30.0,
    "config": lambda c: c.path is not None and c.collector.idle_timeout == 9,
    "geoip_asn": lambda c: c.enrich.geoip_asn == "/x/asn.mmdb",
    "geoip_city": lambda c: c.enrich.geoip_city == "/x/city.mmdb",
    "labels": lambda c: c.enrich.labels == "/x/labels",
    "resolve": lambda c: c.enrich.resolve is True,
    "no_resolve": lambda c: c.enrich.resolve is False,
    "ipfix": lambda c: c.ipfix.collectors == (("192.0.2.9", 4739),),
    "ipfix_transport": lambda c: c.ipfix.transport == "tcp",
    "prometheus": lambda c: c.prometheus.listen == ("127.0.0.1", 9477),
    "delay": lambda c: c.collector.interval == 2.0,
    "interval": lambda c: c.collector.interval == 0.5,
}
BASE = {  # the words that select each mode (REPLAY's file is replaced below)
    o.LIVE: [],
    o.EXPORT: ["--export-only"],
    o.REPLAY: ["--replay", "/x/rec"],
    o.DUMP: ["dump"],
    o.DOCTOR: ["doctor"],
    o.DETACH: ["detach"],
}
SELECTOR = {"export_only": o.EXPORT, "replay": o.REPLAY}  # options that pick a mode
assert set(SELECTOR) == o.SELECTORS


def _parser_dests() -> set[str]:
    """Every option of the root parser and of each subparser, by dest."""
    import argparse

    parser = build_parser()
    dests = set()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for p in [parser, *[sp for a in subs for sp in a.choices.values()]]:
        for a in p._actions:
            if a.option_strings and not isinstance(
                a, argparse._HelpAction | argparse._VersionAction
            ):
                dests.add(a.dest.removesuffix(o.SUB))
    return dests


def test_every_option_has_a_sample(tmp_path: Path) -> None:
    assert _parser_dests() == set(_samples(tmp_path)) == {opt.dest for opt in o.OPTIONS}
    assert set(CONFIG_OF) <= set(_samples(tmp_path))


def _cases() -> list[tuple[str, str]]:
    # An option that picks a root mode is not "given in" another root mode: it
    # makes it its own (test_mode_conflicts_are_one_line has those pairs).
    return [
        (opt.dest, mode)
        for opt in o.OPTIONS
        for mode in o.MODES
        if not (opt.dest in SELECTOR and mode in o.ROOT_MODES and SELECTOR[opt.dest] != mode)
    ]


def _parse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[object, str]:
    """(namespace, "") or (None, the one error line)."""
    try:
        return o.parse(argv), ""
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert exc.code == 2, (argv, exc.code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("flowtop: error: "), err
        return None, lines[0]


@pytest.mark.parametrize(("dest", "mode"), _cases(), ids=[f"{d}-{m}" for d, m in _cases()])
def test_option_means_the_same_on_either_side_or_is_one_line(
    dest: str, mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each option, each mode, before and after the subcommand: the same parsed
    value and the same Config on both sides when it applies to the mode,
    else one line naming the option and the mode, exit 2, on both sides."""
    opt = next(x for x in o.OPTIONS if x.dest == dest)
    words, want = _samples(tmp_path)[dest]
    flag = [opt.flags[-1], *words]
    if dest in SELECTOR and mode in o.ROOT_MODES:
        argvs = [flag]
    elif mode in o.COMMANDS:
        argvs = [flag + BASE[mode], BASE[mode] + flag]
    else:
        argvs = [BASE[mode] + flag, flag + BASE[mode]]
    results = [_parse(a, capsys) for a in argvs]
    if mode in opt.modes:
        spaces = [ns for ns, _err in results]
        assert all(ns is not None for ns in spaces), results
        assert all(vars(ns) == vars(spaces[0]) for ns in spaces), spaces  # either side the same
        ns = spaces[0]
        assert getattr(ns, dest) == want
        assert opt.name in ns.given and ns.mode == mode  # type: ignore[attr-defined]
        if dest in CONFIG_OF and mode in o.COLLECTING:
            interval = ns.interval if mode == o.DUMP else ns.delay  # type: ignore[attr-defined]
            cfg = _config(ns, interval)  # type: ignore[arg-type]
            assert CONFIG_OF[dest](cfg), cfg
            assert cfg != _config(o.parse(BASE[mode]), None)  # it changed something
    else:
        for ns, line in results:
            assert ns is None
            assert opt.flags[-1] in line and o.MODE_NAMES[mode] in line, line
            assert "does not apply" in line or "do not go together" in line, line


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--export-only", "--replay", "x"], "--replay and --export-only do not go together"),
        (["--replay", "x", "--export-only"], "--replay and --export-only do not go together"),
        (["--replay", "x", "--record", "y"], "--record does not apply to --replay"),
        (["--resolve", "--no-resolve"], "--resolve and --no-resolve contradict each other"),
        (["--resolve", "dump", "--no-resolve"], "--resolve and --no-resolve contradict"),
        (["--speed", "2"], "--speed does not apply to the live view (only to --replay)"),
        (["-d", "2", "dump"], "-d/--delay does not apply to dump"),
    ],
)
def test_mode_conflicts_are_one_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, line = _parse(argv, capsys)
    assert ns is None and words in line, line


def test_repeatable_options_collect_from_both_sides() -> None:
    ns = o.parse(["-i", "va", "dump", "-i", "vb", "--interface", "vc"])
    assert ns.interfaces == ["va", "vb", "vc"]
    ns = o.parse(["--tc-priority", "3", "dump", "--tc-priority", "5"])
    assert ns.tc_priority == 5  # as `dump --tc-priority 3 --tc-priority 5`: the last wins
    assert o.parse(["dump"]).interfaces is None and o.parse(["dump"]).duration == 5.0


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("bad = [", "Invalid value"),
        ("[collector]\nbogus = 1\n", "unknown config key collector.bogus"),
        ("[nosuch]\n", "unknown config section [nosuch]"),
    ],
)
def test_config_before_or_after_dump_is_read(
    tmp_path: Path, body: str, words: str, before: bool
) -> None:
    """`flowtop --config bad.toml dump` used to ignore the file (exit 0)."""
    path = tmp_path / "bad.toml"
    path.write_text(body)
    path.chmod(0o600)
    args = ["--config", str(path), "dump"] if before else ["dump", "--config", str(path)]
    assert_one_line_error(flowtop(*args), 2, words)


def test_unresolvable_ipfix_collector_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve is one ConfigError at start; numeric
    addresses are never looked up (no DNS here: getaddrinfo is replaced)."""
    import socket

    from flowtop.config import check_resolvable

    asked: list[str] = []

    def fake(host: str, port: int, *a: object, **kw: object) -> list[object]:
        asked.append(host)
        if host == "collector.example":
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.1", port))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    check_resolvable([("192.0.2.9", 4739), ("2001:db8::1", 4739)], "--ipfix")
    check_resolvable([("collector.example", 4739)], "--ipfix")
    assert asked == ["collector.example"]
    with pytest.raises(ConfigError, match=r"--ipfix: cannot resolve 'nohost': Name or service"):
        check_resolvable([("192.0.2.9", 4739), ("nohost", 4739)], "--ipfix")
    with pytest.raises(ConfigError, match=r"--ipfix: cannot resolve 'nohost'"):
        _config(o.parse(["--ipfix", "nohost:4739", "--export-only"]), None)


SPY = r"""
import json, signal, sys
seen = {}

class Spy:
    # Notes, when a heavy module is first imported, what SIGINT would do there.
    def find_spec(self, name, path=None, target=None):
        heavy = ("numpy", "pyroute2", "bcc", "textual", "flowtop.core.engine")
        if name in heavy and name not in seen:
            h = signal.getsignal(signal.SIGINT)
            seen[name] = type(getattr(h, "__self__", h)).__name__
        return None

sys.meta_path.insert(0, Spy())
from flowtop.cli import main
rc = main(sys.argv[1:])
print(json.dumps(seen))
sys.exit(rc)
"""


@pytest.mark.parametrize(
    "mode", [["dump"], ["--export-only"], []], ids=["dump", "export-only", "live"]
)
def test_ctrl_c_is_a_flag_before_anything_heavy_is_imported(
    tmp_path: Path, mode: list[str]
) -> None:
    """The race behind a lost Ctrl-C: a SIGINT that arrives during the imports
    as a KeyboardInterrupt can be raised inside importlib's weakref callback,
    where Python drops it ("Exception ignored"). So by the time numpy,
    pyroute2 or the engine are imported, SIGINT must already only set the
    StopSignal flag. (An interface that does not exist stops the run right
    after the imports; as root, the compile begun early is ended then.)"""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    empty.chmod(0o600)
    p = subprocess.run(
        [sys.executable, "-c", SPY, *mode, "--config", str(empty), "-i", "ftnosuch0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode != 0 and "ftnosuch0" in p.stderr, p.stderr
    seen = json.loads(p.stdout)
    assert "numpy" in seen, seen
    # pyroute2, the engine and Textual come after the first attachment now
    # (issue 13): a run that stops before it does not import them at all.
    assert not {"pyroute2", "flowtop.core.engine", "textual"} & set(seen), seen
    assert set(seen.values()) == {"StopSignal"}, seen
