"""Every command-line option once: how it parses and which modes it applies to.

Modes are the subcommands (dump, doctor, detach) and the three faces of the
bare `flowtop`: the live view, `--export-only` and `--replay`. Each option is
defined on the root parser and on every subparser, so it is accepted on
either side of the subcommand and means the same there: `flowtop -i va dump`
is `flowtop dump -i va`; a repeatable option collects from both sides in
order; for the others the last one given wins, as when an option is repeated.
An option given for a mode it does not apply to is one line and exit 2,
whichever side it is on (`--ipfix` with dump, `-i` with detach).

argparse parses a subcommand's arguments into a namespace of its own and
copies it over the root's, so a subparser default would silently replace a
value given before the subcommand. Hence no argparse defaults at all
(SUPPRESS): the subparser's values go under their own names (dest + SUB) and
`parse` merges both sides, then fills in the defaults from this table.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from flowtop import __version__
from flowtop.config import DEFAULT_PATH

LIVE, EXPORT, REPLAY = "live", "export", "replay"
DUMP, DOCTOR, DETACH = "dump", "doctor", "detach"
COMMANDS = (DUMP, DOCTOR, DETACH)
MODES = (LIVE, EXPORT, REPLAY, DUMP, DOCTOR, DETACH)
MODE_NAMES = {
    LIVE: "the live view",
    EXPORT: "--export-only",
    REPLAY: "--replay",
    DUMP: "dump",
    DOCTOR: "doctor",
    DETACH: "detach",
}
COLLECTING = frozenset({LIVE, EXPORT, DUMP})  # the modes that run the kernel collector
ROOT_MODES = frozenset({LIVE, EXPORT, REPLAY})  # `flowtop` without a subcommand
SELECTORS = frozenset({"export_only", "replay"})  # dests of the options that pick a mode
SUB = "@sub"  # suffix of the subparser's copy of an option's dest


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    modes: frozenset[str]
    help: str
    kw: dict[str, Any] = field(default_factory=dict)  # add_argument keywords but dest/default
    default: Any = None

    @property
    def dest(self) -> str:
        return str(self.kw.get("dest") or self.flags[-1].lstrip("-").replace("-", "_"))

    @property
    def name(self) -> str:
        return "/".join(self.flags)

    @property
    def repeatable(self) -> bool:
        return self.kw.get("action") == "append"


def _opt(
    flags: str | tuple[str, ...], modes: frozenset[str], help: str, default: Any = None, **kw: Any
) -> Option:
    if kw.get("action") == "store_true" and default is None:
        default = False
    return Option((flags,) if isinstance(flags, str) else flags, modes, help, kw, default)


_LIVE_EXPORT = frozenset({LIVE, EXPORT})

OPTIONS: tuple[Option, ...] = (
    _opt(
        ("-i", "--interface"),
        COLLECTING,
        "interface name or glob (repeatable); default: every UP non-loopback interface",
        action="append",
        dest="interfaces",
        metavar="NAME",
    ),
    _opt(
        "--listen",
        COLLECTING,
        "receive flows instead of watching interfaces (repeatable; no root needed): "
        "ipfix://[ADDR]:PORT (UDP+TCP, default 4739), netflow://[ADDR]:PORT "
        "(v9/v5, default 2055), sflow://[ADDR]:PORT (v5, default 6343); ADDR defaults to "
        "127.0.0.1",
        action="append",
        metavar="URL",
    ),
    _opt(
        "--attach",
        COLLECTING,
        "how to attach to TC hooks: tcx links (Linux 6.6+), tc (clsact filters) or auto "
        "(default: tcx where the kernel has it)",
        choices=("auto", "tcx", "tc"),
    ),
    _opt(
        "--tc-priority",
        COLLECTING,
        "priority of flowtop's TC filters (default 1: before others)",
        type=int,
        metavar="N",
    ),
    _opt(
        "--max-flows",
        COLLECTING,
        "flows tracked at most (also caps the kernel's per-interval map)",
        type=int,
        metavar="N",
    ),
    _opt(
        "--idle-timeout",
        COLLECTING,
        "a flow idle this long ends (default 15)",
        type=float,
        metavar="S",
    ),
    _opt(
        "--active-timeout",
        COLLECTING,
        "a flow alive this long is exported (default 60)",
        type=float,
        metavar="S",
    ),
    _opt(
        "--config",
        COLLECTING,
        f"TOML config file (default {DEFAULT_PATH}, if it exists)",
        metavar="PATH",
    ),
    _opt("--geoip-asn", COLLECTING, "MaxMind ASN database (.mmdb)", metavar="PATH"),
    _opt("--geoip-city", COLLECTING, "MaxMind City or Country database", metavar="PATH"),
    _opt("--labels", COLLECTING, "CIDR labels: NAME PREFIX... [zone=Z] per line", metavar="FILE"),
    _opt(
        "--resolve",
        COLLECTING | {REPLAY},
        "reverse DNS names (default: on in the live view, off in dump/--export-only)",
        action="store_true",
    ),
    _opt(
        "--no-resolve",
        COLLECTING | {REPLAY},
        "no reverse DNS names (the live view starts with them off)",
        action="store_true",
    ),
    _opt(
        "--ipfix",
        _LIVE_EXPORT,
        "send IPFIX to this collector (repeatable)",
        action="append",
        metavar="HOST:PORT",
    ),
    _opt(
        "--ipfix-transport", _LIVE_EXPORT, "IPFIX over udp (default) or tcp", choices=("udp", "tcp")
    ),
    _opt(
        "--prometheus",
        _LIVE_EXPORT,
        "serve Prometheus metrics (loopback unless ADDR is given)",
        metavar="[ADDR:]PORT",
    ),
    _opt(
        "--export-only",
        frozenset({EXPORT}),
        "no screen: run the collector and the exports (a service)",
        action="store_true",
    ),
    _opt(
        ("-d", "--delay"),
        _LIVE_EXPORT,
        "refresh interval in seconds (default 1)",
        type=float,
        metavar="S",
    ),
    _opt(
        "--theme",
        frozenset({LIVE, REPLAY}),
        "dark, light, high-contrast or mono (default dark; mono under NO_COLOR)",
        metavar="NAME",
    ),
    _opt("--record", frozenset({LIVE}), "also write what the view shows to FILE", metavar="FILE"),
    _opt("--replay", frozenset({REPLAY}), "play a recording back (no root needed)", metavar="FILE"),
    _opt("--speed", frozenset({REPLAY}), "replay speed (default 1)", 1.0, type=float, metavar="N"),
    _opt(
        "--duration",
        frozenset({DUMP}),
        "collect this long (default 5)",
        5.0,
        type=float,
        metavar="S",
    ),
    _opt("--json", frozenset({DUMP}), "one JSON object per line", action="store_true"),
    _opt(
        "--conversations",
        frozenset({DUMP}),
        "print conversations (a connection's flows both ways and on every leg, counted once)",
        action="store_true",
    ),
    _opt("--interval", frozenset({DUMP}), "drain interval (default 1)", type=float, metavar="S"),
    _opt(
        "--all",
        frozenset({DETACH}),
        "also those of flowtop processes still running",
        action="store_true",
    ),
)
# Options that cannot be given together (in any mode).
CONFLICTS = (
    ("--resolve", "--no-resolve"),
    # one source per run (config.Config checks [listen] with [interfaces] too)
    ("--listen", "--interface"),
    ("--listen", "--record"),  # a recording of received flows: not yet
)

_SUBCOMMAND_HELP = {
    DUMP: "collect for a while, then print flows",
    DOCTOR: "check what flowtop needs and how to fix what is missing",
    DETACH: "remove TC filters left by a flowtop that died",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not a usage dump: the user knows where --help is.
        self.exit(2, f"flowtop: error: {message} (see --help)\n")


def _add(p: argparse.ArgumentParser, opt: Option, shown: bool, suffix: str) -> None:
    p.add_argument(
        *opt.flags,
        **{k: v for k, v in opt.kw.items() if k != "dest"},
        dest=opt.dest + suffix,
        default=argparse.SUPPRESS,
        help=opt.help if shown else argparse.SUPPRESS,
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flowtop", description="top for network flows (eBPF, TC)")
    p.add_argument("--version", action="version", version=f"flowtop {__version__}")
    for opt in OPTIONS:
        _add(p, opt, bool(opt.modes & ROOT_MODES), "")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        sp = sub.add_parser(command, help=_SUBCOMMAND_HELP[command])
        sp.add_argument("--version", action="version", version=f"flowtop {__version__}")
        for opt in OPTIONS:
            _add(sp, opt, command in opt.modes, SUB)
    return p


def mode_of(command: str | None, export_only: bool, replay: str | None) -> str:
    """The mode: the subcommand, else what SELECTORS chose, else the live view."""
    if command is not None:
        return command
    if export_only:
        return EXPORT
    return REPLAY if replay is not None else LIVE


def _where(modes: frozenset[str]) -> str:
    names = [MODE_NAMES[m] for m in MODES if m in modes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The merged options (every dest set, defaults filled in), plus `command`
    (None without a subcommand), `mode` and `given` (names of the options given)."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    raw = vars(ns)
    out = argparse.Namespace(command=raw.pop("command", None))
    given: list[str] = []
    for opt in OPTIONS:
        before = raw.pop(opt.dest, None)
        after = raw.pop(opt.dest + SUB, None)
        if before is None and after is None:
            value = opt.default
        else:
            given.append(opt.name)
            if opt.repeatable:
                value = [*(before or []), *(after or [])]
            else:
                value = after if after is not None else before
        setattr(out, opt.dest, value)
    out.given = given
    out.mode = mode_of(out.command, out.export_only, out.replay)
    by_name = {o.name: o for o in OPTIONS}
    for name in given:
        opt = by_name[name]
        if out.mode in opt.modes:
            continue
        if opt.dest in SELECTORS:  # --export-only, --replay: a mode of their own
            parser.error(f"{name} and {MODE_NAMES[out.mode]} do not go together")
        parser.error(
            f"{name} does not apply to {MODE_NAMES[out.mode]} (only to {_where(opt.modes)})"
        )
    for a, b in CONFLICTS:
        names = {n.split("/")[-1] for n in given}
        if a in names and b in names:
            parser.error(f"{a} and {b} contradict each other")
    return out
