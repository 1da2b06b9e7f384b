"""Command line: `flowtop` (live view), `flowtop dump`, `flowtop doctor`, `flowtop detach`.

The options themselves (where each applies, how it parses) are in
flowtop.options; this module turns them into a Config and runs the mode.
"""

from __future__ import annotations

# Only light imports up here: main() installs the stop handler before it
# imports anything heavy (see flowtop.stop for why a Ctrl-C must not arrive
# as a KeyboardInterrupt during start-up).
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flowtop.errors import ConfigError, FlowtopError, Interrupted
from flowtop.stop import StopSignal

if TYPE_CHECKING:
    import argparse

    from flowtop.config import Config


def build_parser() -> argparse.ArgumentParser:
    from flowtop.options import build_parser as build

    return build()


def _config(args: argparse.Namespace, interval: float | None) -> Config:
    """The config file with the command line on top, collectors' names resolved."""
    from dataclasses import replace

    from flowtop.config import CollectorConfig, check_resolvable, load, parse_endpoint

    cfg = load(args.config)
    collector = CollectorConfig.from_options(
        interfaces=args.interfaces,
        interval=interval,
        tc_priority=args.tc_priority,
        attach=args.attach,
        max_flows=args.max_flows,
        idle_timeout=args.idle_timeout,
        active_timeout=args.active_timeout,
        base=cfg.collector,
    )
    ipfix = cfg.ipfix
    where = "ipfix.collectors"
    if args.ipfix:
        ipfix = replace(ipfix, collectors=tuple(parse_endpoint(e, "--ipfix") for e in args.ipfix))
        where = "--ipfix"
    if args.ipfix_transport:
        ipfix = replace(ipfix, transport=args.ipfix_transport)
    # A collector whose name does not resolve would be accepted and then
    # never sent anything: refuse it now (at SIGHUP: the running one stays).
    check_resolvable(ipfix.collectors, where)
    prom = cfg.prometheus
    if args.prometheus:
        listen = parse_endpoint(args.prometheus, "--prometheus", default_host="127.0.0.1")
        prom = replace(prom, listen=listen)
    enrich = cfg.enrich
    for opt in ("geoip_asn", "geoip_city", "labels"):
        if getattr(args, opt) is not None:
            enrich = replace(enrich, **{opt: getattr(args, opt)})
    if args.resolve:
        enrich = replace(enrich, resolve=True)
    if args.no_resolve:
        enrich = replace(enrich, resolve=False)
    receive = cfg.listen
    if args.listen:
        from flowtop.listen.urls import parse_url

        receive = replace(receive, urls=tuple(parse_url(u) for u in args.listen))
    return replace(
        cfg, collector=collector, ipfix=ipfix, prometheus=prom, enrich=enrich, listen=receive
    )


def main(argv: Sequence[str] | None = None) -> int:
    # First of all: from here on SIGINT/SIGTERM only set this flag, which
    # start-up checks between its steps and the engine's waits wake on.
    stop = StopSignal()
    stop.install()
    import logging

    logging.basicConfig(level=logging.WARNING, format="flowtop: %(message)s")
    from flowtop.run.malloc import return_large_frees

    return_large_frees()
    try:
        return _run(argv, stop)
    except Interrupted as exc:  # Ctrl-C during start-up: cleaned up, nothing to say
        return exc.exit_code
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
            import traceback

            traceback.print_exc()
        print(
            f"flowtop: internal error: {type(exc).__name__}: {exc} "
            "(FLOWTOP_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 70
    finally:
        early = sys.modules.get("flowtop.kernel.build")
        if early is not None:  # a compile begun early that the run never took
            early.discard_early()
        stop.restore()


def _run(argv: Sequence[str] | None, stop: StopSignal) -> int:
    from flowtop import options as o

    args = o.parse(argv)
    stop.check()
    if args.mode in (o.DOCTOR, o.DETACH):
        # Nothing to clean up there: Ctrl-C may stop them anywhere.
        stop.restore()
        stop.check()
        if args.mode == o.DOCTOR:
            from flowtop.doctor import run_doctor

            return run_doctor()
        return _detach(args.all)
    if args.mode == o.DUMP:
        if args.duration <= 0:
            raise ConfigError("--duration must be positive")
        cfg = _begin_compile(_config(args, args.interval))
        from flowtop.run.commands import run_dump

        return run_dump(cfg, args.duration, args.json, stop, conversations=args.conversations)
    if args.mode == o.EXPORT:
        cfg = _begin_compile(_config(args, args.delay))
        from flowtop.run.service import run_export_only

        return run_export_only(cfg, reload=lambda: _config(args, args.delay), stop=stop)
    if args.mode != o.REPLAY:
        cfg = _begin_compile(_config(args, args.delay))
    from flowtop.run.commands import run_live

    if args.mode == o.REPLAY:
        if args.speed <= 0:
            raise ConfigError("--speed must be positive")
        from flowtop.config import Config, EnrichConfig

        cfg = Config(enrich=EnrichConfig(resolve=True if args.resolve else None))
    return run_live(
        cfg,
        theme=args.theme,
        resolve=cfg.enrich.resolve_for(interactive=True) and not args.no_resolve,
        record=args.record,
        replay=args.replay,
        speed=args.speed,
        stop=stop,
    )


def _begin_compile(cfg: Config) -> Config:
    """Start compiling the TC program before the run's imports and checks:
    the first attachment waits for the compile, which now runs beside them
    (the collector takes the build over: kernel/build.take). Returns cfg."""
    from flowtop.kernel import progcache

    progcache.configure(cfg.collector.program_cache)
    if os.geteuid() == 0 and not cfg.listen.urls:  # listening compiles nothing
        from flowtop.kernel.build import begin_early
        from flowtop.kernel.tcrequest import request  # no numpy: the build starts sooner
        from flowtop.run.lifecycle import program_options

        begin_early(request(program_options(cfg)))
    return cfg


def _detach(everyone: bool) -> int:
    """Stale (with everyone: all) flowtop clsact filters, TCX links, sock_ops and socket
    owner programs."""
    from flowtop.kernel.attach import detach_everywhere

    if os.geteuid() != 0:
        from flowtop.errors import NotRootError

        raise NotRootError("flowtop detach needs root (or CAP_NET_ADMIN)")
    from flowtop.kernel.owners import remove_stale_owner_programs
    from flowtop.kernel.sockops_attach import remove_stale_programs
    from flowtop.kernel.tcx import remove_links

    removed = detach_everywhere(everyone=everyone)
    for name, n in removed:
        print(f"removed {n} flowtop filter(s) from {name}")
    # A dead flowtop leaves no TCX link (its fds died with it): only links of
    # live ones (everyone) or pinned ones are found here.
    links = remove_links(everyone=everyone)
    for link in links:
        print(f"detached flowtop TCX link {link.link_id} ({link.ifname} {link.direction})")
    progs = remove_stale_programs(everyone=everyone)
    for what in progs:
        print(f"removed sock_ops program {what}")
    owner_progs = remove_stale_owner_programs(everyone=everyone)
    for what in owner_progs:
        print(f"removed socket owner program {what}")
    if not removed and not links and not progs and not owner_progs:
        print("no flowtop filters, TCX links, sock_ops or socket owner programs to remove")
    return 0
