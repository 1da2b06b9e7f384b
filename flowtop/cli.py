"""Command line: `flowtop` (live view), `flowtop dump`, `flowtop doctor`, `flowtop detach`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import replace
from typing import NoReturn

from flowtop import __version__
from flowtop.config import DEFAULT_PATH, CollectorConfig, Config, load, parse_endpoint
from flowtop.errors import ConfigError, FlowtopError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not a usage dump: the user knows where --help is.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _collector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-i",
        "--interface",
        action="append",
        dest="interfaces",
        metavar="NAME",
        help="interface name or glob (repeatable); default: every UP non-loopback interface",
    )
    p.add_argument(
        "--tc-priority",
        type=int,
        default=None,
        metavar="N",
        help="priority of flowtop's TC filters (default 1: before others)",
    )
    p.add_argument(
        "--max-flows",
        type=int,
        default=None,
        metavar="N",
        help="flows tracked at most (also caps the kernel's per-interval map)",
    )
    p.add_argument("--idle-timeout", type=float, default=None, metavar="S")
    p.add_argument("--active-timeout", type=float, default=None, metavar="S")
    p.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML config file (default {DEFAULT_PATH}, if it exists)",
    )


def _enrich_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--geoip-asn", metavar="PATH", help="MaxMind ASN database (.mmdb)")
    p.add_argument("--geoip-city", metavar="PATH", help="MaxMind City or Country database")
    p.add_argument("--labels", metavar="FILE", help="CIDR labels: NAME PREFIX... [zone=Z] per line")
    p.add_argument(
        "--resolve",
        action="store_true",
        default=None,
        help="reverse DNS names (default: on in the live view, off in dump/--export-only)",
    )


def _export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ipfix",
        action="append",
        metavar="HOST:PORT",
        help="send IPFIX to this collector (repeatable)",
    )
    p.add_argument("--ipfix-transport", choices=("udp", "tcp"), default=None)
    p.add_argument(
        "--prometheus",
        metavar="[ADDR:]PORT",
        help="serve Prometheus metrics (loopback unless ADDR is given)",
    )
    p.add_argument(
        "--export-only",
        action="store_true",
        help="no screen: run the collector and the exports (a service)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flowtop", description="top for network flows (eBPF, TC)")
    p.add_argument("--version", action="version", version=f"flowtop {__version__}")
    _collector_options(p)
    _enrich_options(p)
    _export_options(p)
    p.add_argument(
        "-d",
        "--delay",
        type=float,
        default=None,
        metavar="S",
        help="refresh interval in seconds (default 1)",
    )
    p.add_argument(
        "--theme",
        default=None,
        metavar="NAME",
        help="dark, light, high-contrast or mono (default dark; mono under NO_COLOR)",
    )
    p.add_argument("--no-resolve", action="store_true", help="start with reverse DNS names off")
    p.add_argument("--record", metavar="FILE", help="also write what the view shows to FILE")
    p.add_argument("--replay", metavar="FILE", help="play a recording back (no root needed)")
    p.add_argument("--speed", type=float, default=1.0, metavar="N", help="replay speed (default 1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    dump = sub.add_parser("dump", help="collect for a while, then print flows")
    _collector_options(dump)
    _enrich_options(dump)
    dump.add_argument("--duration", type=float, default=5.0, metavar="S")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")
    dump.add_argument(
        "--interval", type=float, default=None, metavar="S", help="drain interval (default 1)"
    )

    sub.add_parser("doctor", help="check what flowtop needs and how to fix what is missing")

    det = sub.add_parser("detach", help="remove TC filters left by a flowtop that died")
    det.add_argument(
        "--all", action="store_true", help="also those of flowtop processes still running"
    )
    return p


def _config(args: argparse.Namespace, interval: float | None) -> Config:
    """The config file with the command line on top."""
    cfg = load(args.config)
    collector = CollectorConfig.from_options(
        interfaces=args.interfaces,
        interval=interval,
        tc_priority=args.tc_priority,
        max_flows=args.max_flows,
        idle_timeout=args.idle_timeout,
        active_timeout=args.active_timeout,
        base=cfg.collector,
    )
    ipfix = cfg.ipfix
    if getattr(args, "ipfix", None):
        ipfix = replace(ipfix, collectors=tuple(parse_endpoint(e, "--ipfix") for e in args.ipfix))
    if getattr(args, "ipfix_transport", None):
        ipfix = replace(ipfix, transport=args.ipfix_transport)
    prom = cfg.prometheus
    if getattr(args, "prometheus", None):
        listen = parse_endpoint(args.prometheus, "--prometheus", default_host="127.0.0.1")
        prom = replace(prom, listen=listen)
    enrich = cfg.enrich
    for opt in ("geoip_asn", "geoip_city", "labels"):
        if getattr(args, opt, None) is not None:
            enrich = replace(enrich, **{opt: getattr(args, opt)})
    if getattr(args, "resolve", None):
        enrich = replace(enrich, resolve=True)
    if getattr(args, "no_resolve", False):
        enrich = replace(enrich, resolve=False)
    return replace(cfg, collector=collector, ipfix=ipfix, prometheus=prom, enrich=enrich)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="flowtop: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            from flowtop.doctor import run_doctor

            return run_doctor()
        if args.command == "detach":
            return _detach(args.all)
        if args.command == "dump":
            if args.duration <= 0:
                raise ConfigError("--duration must be positive")
            from flowtop.commands import run_dump

            return run_dump(_config(args, args.interval), args.duration, args.json)
        if args.export_only:
            if args.replay or args.record:
                raise ConfigError("--export-only does not record or replay")
            from flowtop.service import run_export_only

            cfg = _config(args, args.delay)
            return run_export_only(cfg, reload=lambda: _config(args, args.delay))
        if args.replay and args.record:
            raise ConfigError("--record and --replay do not go together")
        if args.speed <= 0:
            raise ConfigError("--speed must be positive")
        from flowtop.commands import run_live

        cfg = _config(args, args.delay) if not args.replay else Config()
        return run_live(
            cfg,
            theme=args.theme,
            resolve=cfg.enrich.resolve_for(interactive=True) and not args.no_resolve,
            record=args.record,
            replay=args.replay,
            speed=args.speed,
        )
    except FlowtopError as exc:
        print(f"flowtop: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `flowtop dump | head`: the reader left; not an error worth a line.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: one line, the traceback on request
        if os.environ.get("FLOWTOP_DEBUG"):
            traceback.print_exc()
        print(
            f"flowtop: internal error: {type(exc).__name__}: {exc} "
            "(FLOWTOP_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 70


def _detach(everyone: bool) -> int:
    from flowtop.collector.attach import detach_everywhere

    if os.geteuid() != 0:
        from flowtop.errors import NotRootError

        raise NotRootError("flowtop detach needs root (or CAP_NET_ADMIN)")
    from flowtop.collector.sockops import remove_stale

    removed = detach_everywhere(everyone=everyone)
    for name, n in removed:
        print(f"removed {n} flowtop filter(s) from {name}")
    progs = remove_stale(everyone=everyone)
    for what in progs:
        print(f"removed sock_ops program {what}")
    if not removed and not progs:
        print("no flowtop filters or sock_ops programs to remove")
    return 0
