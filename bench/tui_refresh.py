"""Live view CPU: the whole process at a 1 s refresh, this checkout side by side with another.

    .venv/bin/python bench/tui_refresh.py [--before REV] [--flows 1000,10000,100000]
                                          [--sizes 80x24,160x48] [--windows 3] [--seconds 8]
                                          [--group conversation,flow]

Each run is the real app (FlowtopApp, Textual's Linux driver) in a pseudo-terminal
of the given size, on the deterministic fake source of tests/tui (the real query
path over a real FlowTable, synthetic traffic, paced at 1 s like a live source);
the bench reads and discards what it writes to the terminal. CPU comes from
/proc/<pid>/stat over `--windows` windows of `--seconds` after a warm-up; the
median is reported, for the whole process and for its main thread (Textual's
event loop: the UI) apart from the others (the engine worker stepping the source
and querying it, Textual's input and writer threads). Also per second: the main
thread's wake-ups (context switches) and the bytes sent to the terminal.

"before" is `--before REV` (default HEAD) checked out in a throw-away git
worktree, removed afterwards; the two alternate run by run. A REV whose live
view cannot start is reported as not measured. Nothing here touches a network
interface. --group runs each tree in each of the given groupings (default:
the live view's default), e.g. the conversation view beside the flow view.
Targets (issue 13): with 10k flows, 160x48 <= 3 % and 80x24 <= 1.5 %
of a core, whole process.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {(160, 48): 3.0, (80, 24): 1.5}  # % of a core, whole process, 10k flows
TARGET_FLOWS = 10_000
WARMUP = 4.0  # seconds: start-up, first intervals, columns built
TICK = os.sysconf("SC_CLK_TCK")


def child(root: str, flows: int, group: str) -> None:
    """Runs the live view on the fake source in this terminal (the bench's
    pty); group "" is the app's default."""
    sys.path.insert(0, root)
    from flowtop.tui import FlowtopApp
    from tests.tui.fakesource import FakeSource

    source = FakeSource(flows=flows, frames=None, paced=True, interval=1.0)
    try:
        app = (
            FlowtopApp(source, resolve=False, group=group)
            if group
            else FlowtopApp(source, resolve=False)
        )
        app.run()
    finally:
        source.close()


@dataclass
class Sample:
    process: float  # % of a core
    main: float
    others: float
    wakeups: float  # main thread context switches per second
    out: float  # bytes per second to the terminal


def _ticks(path: str) -> int:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _switches(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt"))


def measure(
    root: Path, flows: int, size: tuple[int, int], windows: int, seconds: float, group: str = ""
) -> list[Sample]:
    """Starts the app in a pty, samples its CPU `windows` times, quits it with `q`."""
    cols, rows = size
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(root), str(flows), group],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=root,
        start_new_session=True,
    )
    os.close(slave)
    written = [0]

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            written[0] += len(chunk)

    threading.Thread(target=drain, daemon=True).start()
    pid = proc.pid
    samples = []
    try:
        time.sleep(WARMUP)
        for _ in range(windows):
            if proc.poll() is not None:
                raise RuntimeError(f"the live view in {root} exited ({proc.returncode})")
            t0, all0, main0 = (
                time.monotonic(),
                _ticks(f"/proc/{pid}/stat"),
                _ticks(f"/proc/{pid}/task/{pid}/stat"),
            )
            sw0, out0 = _switches(pid), written[0]
            time.sleep(seconds)
            t1, all1, main1 = (
                time.monotonic(),
                _ticks(f"/proc/{pid}/stat"),
                _ticks(f"/proc/{pid}/task/{pid}/stat"),
            )
            wall = t1 - t0
            share = 100.0 / TICK / wall
            samples.append(
                Sample(
                    process=(all1 - all0) * share,
                    main=(main1 - main0) * share,
                    others=(all1 - all0 - (main1 - main0)) * share,
                    wakeups=(_switches(pid) - sw0) / wall,
                    out=(written[0] - out0) / wall,
                )
            )
    finally:
        with contextlib.suppress(OSError):
            os.write(master, b"q")
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)  # the child's own session, started here
            proc.wait(5)
        os.close(master)
    return samples


def _size(text: str) -> tuple[int, int]:
    cols, rows = text.split("x")
    return int(cols), int(rows)


def median(samples: list[Sample], field: str) -> float:
    return float(statistics.median(float(getattr(s, field)) for s in samples))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="HEAD", help="git revision to compare with ('' to skip)")
    p.add_argument("--flows", default="1000,10000,100000")
    p.add_argument("--sizes", default="80x24,160x48")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--group", default="", help="groupings to run, comma-separated ('': default)")
    args = p.parse_args()
    groups = args.group.split(",")
    sizes = [_size(s) for s in args.sizes.split(",")]
    flow_counts = [int(x) for x in args.flows.split(",")]
    sys.path.insert(0, str(ROOT))
    # Not at the top: the child (--child) must import flowtop from its own tree,
    # and _common imports this checkout's.
    from bench import _common as C

    with contextlib.ExitStack() as stack:
        trees: dict[str, Path] = {"after": ROOT}
        if args.before:
            trees = {
                "before": stack.enter_context(C.worktree(args.before, "flowtop-tui-before-")),
                "after": ROOT,
            }
        print(
            f"flowtop live view, whole process at a 1 s refresh; median of {args.windows} x "
            f"{args.seconds:g} s after {WARMUP:g} s; before = {args.before or '-'}, after = {ROOT}"
        )
        # (tree, size, flows, group) -> samples, or why not measured
        results: dict[tuple[str, tuple[int, int], int, str], list[Sample] | str] = {}
        n = 0
        for size in sizes:
            for flows in flow_counts:
                runs = [(name, g) for g in groups for name in trees]
                for name, g in runs if n % 2 == 0 else runs[::-1]:  # alternate who goes first
                    try:
                        got: list[Sample] | str = measure(
                            trees[name], flows, size, args.windows, args.seconds, g
                        )
                    except RuntimeError as exc:
                        got = str(exc)
                    results[name, size, flows, g] = got
                n += 1
        rows = []
        order = sorted(results, key=lambda k: (k[1], k[2], k[3], k[0] != "before"))
        for name, size, flows, g in order:
            r = results[name, size, flows, g]
            label = f"{size[0]}x{size[1]}"
            if isinstance(r, str):
                rows.append([label, f"{flows:,}", g or "-", name, "not measured", "", "", "", ""])
                continue
            rows.append(
                [
                    label,
                    f"{flows:,}",
                    g or "-",
                    name,
                    f"{median(r, 'process'):.2f}%",
                    f"{median(r, 'main'):.2f}%",
                    f"{median(r, 'others'):.2f}%",
                    f"{median(r, 'wakeups'):.1f}",
                    f"{median(r, 'out') / 1000:.1f}",
                ]
            )
        print(
            C.table(
                rows,
                [
                    "size",
                    "flows",
                    "group",
                    "tree",
                    "process",
                    "UI thread",
                    "other threads",
                    "UI wake-ups/s",
                    "kB/s out",
                ],
            )
        )
        ok = True
        verdicts = []
        for size, target in TARGETS.items():
            if ("after", size, TARGET_FLOWS, groups[0]) not in results:
                # --flows without the target's count: no verdict, not a pass
                ok = False
                verdicts.append(f"{size[0]}x{size[1]} not run at {TARGET_FLOWS:,}")
                continue
            r = results["after", size, TARGET_FLOWS, groups[0]]  # the first grouping
            if isinstance(r, str):
                ok = False
                verdicts.append(f"{size[0]}x{size[1]} not measured")
                continue
            cpu = median(r, "process")
            ok = ok and cpu <= target
            verdicts.append(f"{size[0]}x{size[1]} {cpu:.2f}% (<= {target:g}%)")
        print(
            f"\nRESULT tui_refresh, {TARGET_FLOWS:,} flows: {', '.join(verdicts)}  {C.verdict(ok)}"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) == 5 else "")
        raise SystemExit(0)
    raise SystemExit(main())
