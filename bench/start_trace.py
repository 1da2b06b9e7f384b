"""Where a start's time goes: a timeline of one flowtop start, to the first attachment.

    .venv/bin/python bench/start_trace.py [--mode dump|export-only] [--runs 3] [--cold]

flowtop runs as bench/footprint.py runs it (namespace b of a bench pair, on
ftbvb), under this file as a wrapper (`--wrap`): before flowtop.cli.main it
hooks the imports of the heavy packages (numpy, pyroute2, prometheus_client,
maxminddb, textual, bcc) and wraps the start-up steps (the cli's config and
early build, Build and its waits, the program cache's map creation and
stage loads, the Run's parts, the collector's begins, attaches and
finishes), each of which writes one line to a log file: seconds since exec
(the bench's clock, passed in the environment), the process's CPU seconds,
the thread, and the step. The build children (python -m
flowtop.kernel.compiler) write to the same log, through a sitecustomize.py
this bench puts first on their PYTHONPATH: their start, bcc's import (a
held child's comes after its go), each compile (bcc.BPF), each program
load and each message sent, labelled with the source's name ("[tc.c ...]");
the parent's lines include each go it sends to a held child (Build._go).
The bench polls vb's ingress hook as footprint.py does, prints the log and
the time to the first attachment, then stops flowtop and waits for its
cache writers.

Runs share one program cache directory: with --cold it is emptied before
each run (the first start: everything compiles), else the first run fills
it and the others start from it ("nothing changed"). Nothing here changes
flowtop; the wrapper only times it (a few microseconds per step).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

WATCH_IMPORTS = {"numpy", "pyroute2", "prometheus_client", "maxminddb", "textual", "bcc"}
# module -> (attribute owner or "", attribute) to time
STEPS: dict[str, list[tuple[str, str]]] = {
    "flowtop.cli": [("", "_config"), ("", "_begin_compile")],
    "flowtop.kernel.build": [
        ("Build", "__init__"),
        ("Build", "wait"),
        ("Build", "_start_child"),
        ("Build", "_go"),
    ],
    "flowtop.kernel.progcache": [("CachedLoad", "__init__"), ("CachedLoad", "stage")],
    "flowtop.run.lifecycle": [
        ("Run", "start"),
        ("Parts", "enricher"),
        ("Parts", "outputs"),
        ("Parts", "collector"),
    ],
    "flowtop.kernel.collector": [
        ("KernelCollector", name)
        for name in (
            "_attach",
            "_begin_drops",
            "_begin_sockops",
            "_begin_owners",
            "_start_sockops",
            "_start_owners",
            "_start_drops",
        )
    ],
    "flowtop.kernel.program": [("TcProgram", "__init__")],
}


# In a build child: what to time (bcc's compile and loads, the messages sent).
CHILD_STEPS: dict[str, list[tuple[str, str]]] = {
    "bcc": [("BPF", "__init__"), ("BPF", "load_func")],
    "flowtop.kernel.build": [("", "send")],
}
SITECUSTOMIZE = """
import sys
if "flowtop.kernel.compiler" in getattr(sys, "orig_argv", []):
    sys.path.insert(0, {bench!r})
    import start_trace
    start_trace._hooks(start_trace.CHILD_STEPS, {{"bcc"}}, sys.orig_argv[-1] + " ")
"""


def _wrap() -> int:
    """Runs flowtop.cli.main(argv) with the steps timed (see the module doc)."""
    _hooks(STEPS, WATCH_IMPORTS, "")
    import flowtop.cli

    sys.argv[0] = "flowtop"
    return flowtop.cli.main(sys.argv[2:])


def _hooks(steps: dict[str, list[tuple[str, str]]], watch: set[str], label: str) -> None:
    """The import hook that times steps and the imports of watch, writing
    to $FTB_LOG; label: what each line's thread name starts with."""
    import importlib.abc
    import importlib.util

    t0 = float(os.environ["FTB_T0"])
    log = open(os.environ["FTB_LOG"], "a", buffering=1)  # noqa: SIM115 (lives as long as the run)

    def mark(what: str) -> None:
        thread = (label + threading.current_thread().name)[:14]
        now, cpu = time.monotonic() - t0, time.process_time()
        log.write(f"{now:7.3f} s  cpu {cpu:6.3f}  [{thread:14}] {what}\n")

    def timed(obj: Any, attr: str, label: str) -> None:
        f = getattr(obj, attr)

        @functools.wraps(f)
        def step(*a: Any, **k: Any) -> Any:
            mark(f"> {label}")
            try:
                return f(*a, **k)
            finally:
                mark(f"< {label}")

        setattr(obj, attr, step)

    class Loader(importlib.abc.Loader):
        def __init__(self, inner: Any, name: str) -> None:
            self.inner, self.name = inner, name

        def create_module(self, spec: Any) -> Any:
            return self.inner.create_module(spec)

        def exec_module(self, module: Any) -> None:
            t = time.monotonic()
            self.inner.exec_module(module)
            if self.name in watch:
                mark(f"imported {self.name} ({time.monotonic() - t:.3f} s with what it imports)")
            short = self.name.rsplit(".", 1)[-1]
            for owner, attr in steps.get(self.name, []):
                timed(getattr(module, owner) if owner else module, attr, f"{short}.{owner}.{attr}")

    class Finder(importlib.abc.MetaPathFinder):
        busy = False

        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if self.busy or (name not in watch and name not in steps):
                return None
            self.busy = True
            try:
                spec = importlib.util.find_spec(name)
            finally:
                self.busy = False
            if spec is None or spec.loader is None:
                return None
            spec.loader = Loader(spec.loader, name)
            return spec

    mark("python up")
    sys.meta_path.insert(0, Finder())


def main() -> int:
    import _common as C
    import footprint as F

    C.require_root()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("dump", "export-only"), default="dump")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="an empty program cache each run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftb-trace-") as tmp, C.pair() as p:
        cache = Path(tmp) / "cache"
        site = Path(tmp) / "site"
        site.mkdir()
        bench = str(Path(__file__).resolve().parent)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(bench=bench))
        for run in range(args.runs):
            if args.cold:
                shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(mode=0o700, exist_ok=True)
            logfile = Path(tmp) / f"run{run}.log"
            cmd = F.flowtop_cmd(p, args.mode)
            cmd[1:3] = [str(Path(__file__).resolve()), "--wrap"]  # start_trace.py --wrap ARGS
            t0 = time.monotonic()
            env = dict(F.HEAD.env(cache), FTB_T0=repr(t0), FTB_LOG=str(logfile))
            # the children keep it (build._env puts flowtop's root first)
            env["PYTHONPATH"] += os.pathsep + str(site)
            proc = p.b.popen(
                cmd,
                cwd=str(F.HEAD.path),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                while not F.attached(p):
                    if proc.poll() is not None or time.monotonic() - t0 > 90:
                        raise SystemExit(f"start_trace: flowtop ended or did not attach: {proc}")
                    time.sleep(0.002)
                took = time.monotonic() - t0
                F.wait_ready(proc)
            finally:
                F.stop(proc)
                F.wait_cache_writers(cache)
            print(f"--- run {run + 1}, {args.mode}, {'cold' if args.cold else 'cache'}")
            print(logfile.read_text(), end="")
            print(
                f"first attachment on vb at {took:.3f} s (load average {os.getloadavg()[0]:.2f})\n"
            )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--wrap"]:
        sys.exit(_wrap())
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
