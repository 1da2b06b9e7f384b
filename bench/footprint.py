"""Footprint of the long-running process: RSS at 0/10k/100k flows, and start-up time.

    .venv/bin/python bench/footprint.py [--before REV] [--only rss|start|live] [--runs 5]

flowtop runs as a service would, in namespace b of a bench pair:

    ip netns exec B python -m flowtop --export-only -i ftbvb --prometheus 127.0.0.1:PORT

(the Prometheus listener on b's own loopback), and as the live view in a real
terminal: a detached tmux session of 160x48 on a private server socket
(`tmux -L ftb-...`, no status line, its server killed afterwards, also on
failure and SIGINT) running

    ip netns exec B python -m flowtop -i ftbvb --prometheus 127.0.0.1:PORT

Flows come from the C sender of _common (its packet mode, compiled here with
gcc) on an AF_PACKET socket in namespace a that writes Ethernet/IPv4/UDP
frames out of va: flow i has its own source port (and, past 64,512, the next
destination port), and the sender goes round the N flows at 25,000 frames/s,
so every flow gets a packet every N/25,000 s (4 s at 100k, well inside the
15 s idle timeout). The frames are addressed to vb's MAC and to 10.77.0.3,
which b does not have and does not forward: they cross TC ingress on vb
(where flowtop counts them) and are dropped after, without an ICMP reply.

Ground truth for "N active flows": flowtop's own flowtop_active_flows gauge,
scraped until it reaches N, cross-checked with the frames the sender says it
sent (at least N: every flow had one). Then VmRSS and RssAnon of the flowtop
python process (/proc/PID/status; for the live view the python process under
the tmux pane, not tmux nor `ip netns exec`) are sampled once a second for
5 s and the largest is kept; also whether libbcc, LLVM or clang are mapped in
it (/proc/PID/maps). Each N gets a fresh flowtop; 5 runs per N, median.

Start-up: the time from exec to the first TCX link (or clsact filter) on vb,
found by polling the hook every 2 ms, for `--export-only` and for `flowtop
dump`, two starts in a row per run, 5 runs, median: the first on an empty
program cache (a directory of its own per run, mode and tree:
FLOWTOP_CACHE_DIR), the second on what the first left there ("nothing
changed"); between the two, the first start's compiler children that still
write their entries (the L3 pair's, after flowtop stopped) are waited for. With
`--before REV`, REV is checked out in a throw-away git worktree and run from
there (cwd and PYTHONPATH; its `flowtop.__file__` is printed), HEAD and REV
alternating within each run (who goes first flips run by run).

Targets (issue 13): export-only RSS <= 64 MB with 10k flows and no
libbcc/LLVM/clang mapped; live view RSS <= 96 MB with 10k flows; start to
attach <= 3 s (first start), <= 1.5 s "when nothing changed since the last
start" (second start: loaded from the program cache, flowtop/kernel/progcache.py;
a --before tree without the cache compiles both times).
Run: .venv/bin/python bench/footprint.py   (root; ~14 minutes with --before)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import _common as C
from _common import Pair, entered

RUNS = 5
FLOW_COUNTS = (0, 10_000, 100_000)
PPS = 25_000
TARGET_RSS_MB = 64.0  # --export-only, 10k flows
TARGET_LIVE_RSS_MB = 96.0  # live view, 10k flows
TARGET_FIRST_S = 3.0
TARGET_SECOND_S = 1.5
PROM_PORT = 9469
NOWHERE4 = "10.77.0.3"  # in b's subnet, not b's: dropped after TC ingress
BASE_SPORT = 1024
DPORT = 9000
COMPILER_LIBS = ("libbcc", "libLLVM", "libclang")
TERM_SIZE = (160, 48)  # the live view's tmux window, columns x rows
PARTS = ("rss", "live", "start")
EXIT_WAIT = 60.0  # seconds a live view gets to leave after SIGINT


@dataclass(frozen=True)
class Tree:
    """A checkout whose `python -m flowtop` is run (this one, or a --before worktree)."""

    label: str  # HEAD or the --before revision
    path: Path

    def env(self, cache: Path | None = None) -> dict[str, str]:
        # cwd alone would do for `python -m` (sys.path[0]); PYTHONPATH also
        # covers the compiler children, and wins over the venv's editable finder.
        env = dict(os.environ, PYTHONPATH=str(self.path))
        if cache is not None:
            env["FLOWTOP_CACHE_DIR"] = str(cache)
        return env


HEAD = Tree("HEAD", C.ROOT)


def flowtop_cmd(p: Pair, mode: str) -> list[str]:
    prom = ["--prometheus", f"127.0.0.1:{PROM_PORT}"]
    if mode == "export-only":
        return [sys.executable, "-m", "flowtop", "--export-only", "-i", p.vb, *prom]
    if mode == "live":
        return [sys.executable, "-m", "flowtop", "-i", p.vb, *prom]
    return [sys.executable, "-m", "flowtop", "dump", "-i", p.vb, "--duration", "600", "--json"]


def start(
    p: Pair, mode: str, tree: Tree = HEAD, cache: Path | None = None
) -> subprocess.Popen[bytes]:
    return p.b.popen(
        flowtop_cmd(p, mode),
        cwd=str(tree.path),
        env=tree.env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def flowtop_file(p: Pair, tree: Tree) -> str:
    """flowtop.__file__ as `python -m flowtop` would import it in this tree."""
    code = "import flowtop; print(flowtop.__file__)"
    out = subprocess.run(
        ["ip", "netns", "exec", p.b.name, sys.executable, "-c", code],
        cwd=str(tree.path),
        env=tree.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Reads the collector's stderr until 'collecting on'."""
    assert proc.stderr is not None
    buf = b""
    end = time.monotonic() + timeout
    while b"collecting on" not in buf:
        if proc.poll() is not None:
            raise RuntimeError(f"flowtop exited early ({proc.returncode}): {buf.decode()}")
        left = end - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"flowtop not ready after {timeout} s: {buf.decode()}")
        r, _, _ = select.select([proc.stderr], [], [], left)
        if r:
            buf += proc.stderr.read1(4096)  # type: ignore[attr-defined]


def stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGINT, SIGKILL after 30 s; the seconds it took to exit."""
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return time.monotonic() - t0


def attached(p: Pair) -> bool:
    """Whether anything is on vb's ingress hook (a TCX link or a clsact filter).
    Polled every 2 ms: bpf(2) and one rtnetlink dump, and `tc` (a fork and
    exec, CPU the start being timed would miss on 2 cores) only once vb has
    a clsact qdisc."""
    from flowtop.kernel import tcx
    from flowtop.kernel.rtnl import Rtnl

    with entered(p.b):
        ifindex = socket.if_nametoindex(p.vb)
        try:
            if tcx.query_hook(ifindex, tcx.BPF_TCX_INGRESS):
                return True
        except OSError:
            pass
        with Rtnl() as rtnl:
            if rtnl.ingress_qdisc(ifindex) is None:
                return False
    out = p.b.exec("tc", "filter", "show", "dev", p.vb, "ingress", check=False).stdout
    return "flowtop_" in out


def cpu_seconds(pid: int) -> float:
    """User and system CPU of pid's threads so far (/proc/PID/stat; its
    children's only once reaped, so not a running compiler's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cache_writers(cache: Path) -> list[int]:
    """Pids of compiler children still writing an entry into cache."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes()
            if b"flowtop.kernel.compiler" not in cmd:
                continue
            env = Path(entry.path, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(b"FLOWTOP_PROGCACHE_ENTRY=" + str(cache).encode()) for e in env):
            out.append(int(entry.name))
    return out


def wait_cache_writers(cache: Path, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while cache_writers(cache):
        if time.monotonic() > end:
            raise RuntimeError(f"compilers still writing into {cache} after {timeout} s")
        time.sleep(0.1)


def time_to_attach(
    p: Pair, mode: str, tree: Tree, cache: Path | None = None
) -> tuple[float, float]:
    """Seconds from exec to the first attachment on vb, and the CPU seconds
    flowtop's own process had used by then (cpu_seconds: on a loaded machine
    the steadier figure); flowtop stopped after, and the compilers still
    writing its cache entries waited for. `ip netns exec` execs python: the
    pid is flowtop's."""
    t0 = time.monotonic()
    proc = start(p, mode, tree, cache)
    try:
        while not attached(p):
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise RuntimeError(f"flowtop exited ({proc.returncode}): {proc.stderr.read()!r}")
            if time.monotonic() - t0 > 90:
                raise RuntimeError("no attachment after 90 s")
            time.sleep(0.002)
        took = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid)
        wait_ready(proc)
        return took, cpu
    finally:
        stop(proc)
        if cache is not None:
            wait_cache_writers(cache)


def status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of pid, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    return out


def compiler_mapped(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        text = f.read()
    return [lib for lib in COMPILER_LIBS if lib in text]


def active_flows() -> int:
    """flowtop_active_flows from the scrape (the calling thread must be in b)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{PROM_PORT}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("flowtop_active_flows "):
                return int(float(line.split()[1]))
    raise RuntimeError("no flowtop_active_flows in the scrape")


@dataclass(frozen=True)
class Sample:
    flows: int  # flowtop_active_flows when measured
    sent: int  # frames the sender sent (0 without a sender)
    rss_kb: int
    anon_kb: int
    file_kb: int
    mapped: tuple[str, ...]  # compiler libraries mapped in the process
    exit_s: float  # from SIGINT to the process gone


@contextlib.contextmanager
def sending(p: Pair, sender: Path, n: int) -> Iterator[list[int]]:
    """The sender going round n flows (nothing for n=0) for the block; the list
    yielded gets the frames it sent, after the block."""
    counted: list[int] = []
    if not n:
        yield counted
        return
    mac = json.loads(p.b.ip("-j", "link", "show", "dev", p.vb).stdout)[0]["address"]
    cmd = C.sender_args(
        sender, "packet", Pair.A4, NOWHERE4, DPORT, BASE_SPORT, n, PPS, 0, p.va, mac
    )
    snd = p.a.popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        yield counted
    finally:
        C.stop_process(snd, signal.SIGTERM)
        assert snd.stdout is not None
        out = snd.stdout.read()
        if out.strip():
            sent, failed, _ = C.sender_result(out)
            counted.append(sent)
            if failed:
                print(f"note: the sender saw {failed:,} failed sendto() calls", file=sys.stderr)


def measure_rss(p: Pair, pid: int, n: int, alive: Callable[[], bool]) -> tuple[int, dict[str, int]]:
    """Waits for n active flows, then the largest VmRSS of 5 samples 1 s apart.

    alive: whether flowtop still runs (an exit is an error)."""
    deadline = time.monotonic() + 30 + n / PPS * 3
    seen = 0
    with entered(p.b):
        while True:
            if not alive():
                raise RuntimeError("flowtop exited while flows were coming in")
            seen = active_flows()
            if seen >= n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if seen < n:
            raise RuntimeError(f"only {seen} of {n} flows active")
        best: dict[str, int] = {}
        for _ in range(5):
            st = status(pid)
            if st["VmRSS"] > best.get("VmRSS", 0):
                best = st
            time.sleep(1)
        seen = active_flows()
    return seen, best


def footprint(p: Pair, sender: Path, n: int) -> Sample:
    """RSS of a fresh --export-only flowtop with n active flows."""
    proc = start(p, "export-only")
    try:
        wait_ready(proc)
        with sending(p, sender, n) as sent:
            seen, best = measure_rss(p, proc.pid, n, lambda: proc.poll() is None)
            mapped = tuple(compiler_mapped(proc.pid))
        took = stop(proc)
    finally:
        stop(proc)
    return sample(n, seen, sent, best, mapped, took)


def sample(
    n: int,
    seen: int,
    sent: list[int],
    best: dict[str, int],
    mapped: tuple[str, ...],
    exit_s: float,
) -> Sample:
    frames = sent[0] if sent else 0
    if n and frames < n:
        raise RuntimeError(f"the sender sent {frames:,} frames for {n:,} flows")
    return Sample(seen, frames, best["VmRSS"], best["RssAnon"], best["RssFile"], mapped, exit_s)


# --------------------------------------------------------------------------- #
# the live view under tmux
# --------------------------------------------------------------------------- #


class Tmux:
    """A tmux server of our own (-L socket, no config but ours), killed by close()."""

    def __init__(self, tmp: Path) -> None:
        self.socket = f"ftb-{os.getpid()}-{secrets.token_hex(3)}"
        self.conf = tmp / "tmux.conf"
        # No status line: the app gets the whole 160x48. remain-on-exit: a live
        # view that dies early leaves its last screen for the error message.
        self.conf.write_text("set -g status off\nset -g remain-on-exit on\n")

    def __call__(self, *args: str, check: bool = True) -> str:
        cmd = ["tmux", "-L", self.socket, "-f", str(self.conf), *args]
        return C.run(cmd, check=check).stdout

    def pane(self, fmt: str) -> str:
        return self("display-message", "-p", "-t", "ft", fmt).strip()

    def close(self) -> None:
        self("kill-server", check=False)
        # tmux leaves the socket file behind; -L puts it here (tmux(1)).
        tmpdir = os.environ.get("TMUX_TMPDIR") or "/tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{tmpdir}/tmux-{os.getuid()}/{self.socket}")


def descendants(root: int) -> list[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def flowtop_pid(root: int) -> int | None:
    """The `python -m flowtop` process under root (not its compiler children,
    `python -m flowtop.kernel.compiler`; not the shell or `ip netns exec`)."""
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        python = b"python" in argv[0].rsplit(b"/", 1)[-1]
        if python and argv[1:3] == [b"-m", b"flowtop"]:
            return pid
    return None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def live_footprint(p: Pair, sender: Path, n: int, tmp: Path) -> tuple[Sample, str]:
    """RSS of a fresh live view (in tmux) with n active flows; also the pane's size."""
    tmux = Tmux(tmp)
    cols, rows = TERM_SIZE
    cmd = shlex.join(["ip", "netns", "exec", p.b.name, *flowtop_cmd(p, "live")])
    pid: int | None = None
    try:
        tmux("new-session", "-d", "-s", "ft", "-x", str(cols), "-y", str(rows),
             "-c", str(C.ROOT), cmd)  # fmt: skip
        size = tmux.pane("#{pane_width}x#{pane_height}")
        pane_pid = int(tmux.pane("#{pane_pid}"))

        def dead() -> bool:
            return tmux.pane("#{pane_dead}") == "1"

        def why() -> str:
            # -J: wrapped lines joined; -S -: the history too (an error line
            # printed after the view left the alternate screen).
            text = tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "ft", check=False)
            return "\n".join(line for line in text.splitlines() if line.strip())

        end = time.monotonic() + 90
        while pid is None:
            pid = flowtop_pid(pane_pid)
            if pid is None and (dead() or time.monotonic() > end):
                raise RuntimeError(f"no live view under the tmux pane: {why()}")
            time.sleep(0.05)
        with entered(p.b):  # ready: its exporter answers (the UI runs by then)
            while True:
                if not pid_alive(pid):
                    raise RuntimeError(f"the live view exited: {why()}")
                try:
                    active_flows()
                    break
                except OSError as exc:
                    if time.monotonic() > end:
                        raise RuntimeError(
                            f"the live view's scrape never answered: {why()}"
                        ) from exc
                    time.sleep(0.2)
        live = pid
        with sending(p, sender, n) as sent:
            seen, best = measure_rss(p, live, n, lambda: pid_alive(live))
            mapped = tuple(compiler_mapped(live))
            screen = why()
        # The view shows them: the sender's address is on screen (in rows) with
        # flows, and not without.
        if (Pair.A4 in screen) != bool(n):
            raise RuntimeError(f"{n:,} flows active, but the live view shows: {screen}")
        # SIGINT leaves the view the way `q` does (filters off, exit 0).
        os.kill(live, signal.SIGINT)
        t0 = time.monotonic()
        while pid_alive(live) and time.monotonic() < t0 + EXIT_WAIT:
            time.sleep(0.05)
        if pid_alive(live):
            raise RuntimeError(
                f"the live view with {n:,} flows had not left {EXIT_WAIT:g} s after SIGINT "
                f"(killed); its screen: {why()!r}"
            )
        return sample(n, seen, sent, best, mapped, time.monotonic() - t0), size
    finally:
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        tmux.close()


# --------------------------------------------------------------------------- #
# output
# --------------------------------------------------------------------------- #


def mb(samples: list[Sample], field: str) -> float:
    return C.median([float(getattr(x, field)) for x in samples]) / 1024


def rss_table(rows: dict[int, list[Sample]], runs: int) -> str:
    out = []
    for n, r in rows.items():
        if not r:
            out.append([f"{n:,}", f"0/{runs}", "not measured", "", "", "", "", "", ""])
            continue
        mapped = sorted({lib for x in r for lib in x.mapped})
        out.append(
            [f"{n:,}", f"{len(r)}/{runs}", f"{min(x.flows for x in r):,}",
             f"{C.median([x.sent for x in r]):,.0f}", f"{mb(r, 'rss_kb'):.1f}",
             f"{mb(r, 'anon_kb'):.1f}", f"{mb(r, 'file_kb'):.1f}", ",".join(mapped) or "-",
             f"{C.median([x.exit_s for x in r]):.1f}"]
        )  # fmt: skip
    header = ("flows sent", "runs ok", "active (min)", "frames sent", "RSS MB", "anon MB")
    return C.table(out, (*header, "file MB", "compiler", "exit s"))


def spread(xs: list[float]) -> list[str]:
    if not xs:
        return ["not measured", ""]
    return [f"{C.median(xs):.2f}", f"{min(xs):.2f}-{max(xs):.2f} ({len(xs)})"]


def start_table(
    starts: dict[tuple[str, str, str], list[float]],
    trees: list[Tree],
    cpus: dict[tuple[str, str, str], list[float]],
) -> str:
    """Wall seconds to the first attachment, and the median CPU seconds of
    flowtop's own process by then (cpus), per tree; HEAD/REV of both."""
    rows = []
    rev = trees[1] if len(trees) > 1 else None

    def cpu(key: tuple[str, str, str]) -> str:
        got = cpus.get(key, [])
        return f"{C.median(got):.2f}" if got else "-"

    def ratio(a: list[float], b: list[float]) -> str:
        return f"{C.median(a) / C.median(b):.2f}" if a and b else "-"

    for mode in ("export-only", "dump"):
        for which in ("first", "second"):
            key = (mode, which, HEAD.label)
            h = starts.get(key, [])
            row = [mode, which, *spread(h), cpu(key)]
            if rev is not None:
                rkey = (mode, which, rev.label)
                r = starts.get(rkey, [])
                row += [*spread(r), cpu(rkey), ratio(h, r)]
                row.append(ratio(cpus.get(key, []), cpus.get(rkey, [])))
            rows.append(row)
    header = ["command", "start", "HEAD median s", "HEAD min-max (n)", "HEAD CPU s"]
    if rev is not None:
        header += [f"{rev.label} median s", f"{rev.label} min-max (n)", f"{rev.label} CPU s"]
        header += ["HEAD/REV", "HEAD/REV CPU"]
    return C.table(rows, header)


T = TypeVar("T")


def attempt(errors: list[str], what: str, fn: Callable[[], T]) -> T | None:
    """fn(), or None with its error recorded (one failed run does not lose the others)."""
    try:
        return fn()
    except RuntimeError as exc:
        errors.append(f"{what}: {exc}")
        print(f"footprint: {what} failed: {exc}", file=sys.stderr)
        return None


def rss_result(name: str, rows: dict[int, list[Sample]], target: float, compiler: bool) -> str:
    """The RESULT line for the 10k-flow row; compiler: whether a mapped compiler misses."""
    r = rows[10_000]
    if not r:
        return f"RESULT footprint {name}: 10k flows not measured  MISS"
    rss = mb(r, "rss_kb")
    ok = rss <= target
    text = f"RESULT footprint {name}: RSS {rss:.1f} MB with 10k flows (<= {target:g})"
    mapped = any(x.mapped for got in rows.values() for x in got)
    if compiler:
        ok = ok and not mapped
        text += f", compiler mapped: {'yes' if mapped else 'no'}"
    return f"{text}  {C.verdict(ok)}"


def main() -> int:
    C.require_root()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--before", default="", help="git revision to compare start-up with")
    ap.add_argument("--only", choices=PARTS, help="run one part (default: all)")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit("footprint: error: --runs must be at least 1")
    parts = (args.only,) if args.only else PARTS
    rows: dict[int, list[Sample]] = {n: [] for n in FLOW_COUNTS}
    live: dict[int, list[Sample]] = {n: [] for n in FLOW_COUNTS}
    starts: dict[tuple[str, str, str], list[float]] = {}
    cpus: dict[tuple[str, str, str], list[float]] = {}
    sizes: set[str] = set()
    errors: list[str] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ftb-")))
        trees = [HEAD]
        if args.before and "start" in parts:
            # Its own label even for `--before HEAD` (the commit beside this
            # tree's uncommitted changes): the figures are keyed by label.
            label = args.before if args.before != HEAD.label else "HEAD commit"
            trees.append(Tree(label, stack.enter_context(C.worktree(args.before))))
        p = stack.enter_context(C.pair())
        sender = C.build_sender(tmp)
        if "start" in parts:
            for tree in trees:
                print(f"{tree.label}: python -m flowtop runs {flowtop_file(p, tree)}")
            print()
        for run in range(args.runs):
            if "start" in parts:
                order = trees if run % 2 == 0 else trees[::-1]
                for mode in ("export-only", "dump"):
                    for tree in order:
                        # first: an empty program cache; second: what the first left
                        cache = tmp / f"cache-{run}-{mode}-{trees.index(tree)}"
                        cache.mkdir(mode=0o700)
                        for which in ("first", "second"):
                            took = attempt(
                                errors,
                                f"run {run + 1} start {mode} {which} {tree.label}",
                                lambda: time_to_attach(p, mode, tree, cache),  # noqa: B023 (called now)
                            )
                            if took is not None:
                                key = (mode, which, tree.label)
                                starts.setdefault(key, []).append(took[0])
                                cpus.setdefault(key, []).append(took[1])
            for n in FLOW_COUNTS:
                if "rss" in parts:
                    got = attempt(
                        errors,
                        f"run {run + 1} export-only {n:,} flows",
                        lambda: footprint(p, sender, n),  # noqa: B023 (called now)
                    )
                    if got is not None:
                        rows[n].append(got)
                if "live" in parts:
                    shown = attempt(
                        errors,
                        f"run {run + 1} live view {n:,} flows",
                        lambda: live_footprint(p, sender, n, tmp),  # noqa: B023 (called now)
                    )
                    if shown is not None:
                        live[n].append(shown[0])
                        sizes.add(shown[1])

    results = []
    if "rss" in parts:
        print(f"flowtop --export-only on one veth, {args.runs} fresh runs per row, median\n")
        print(rss_table(rows, args.runs))
        print()
        results.append(rss_result("--export-only", rows, TARGET_RSS_MB, compiler=True))
    if "live" in parts:
        print(
            f"flowtop live view in tmux {TERM_SIZE[0]}x{TERM_SIZE[1]} "
            f"(pane {', '.join(sorted(sizes)) or '-'}) "
            f"on one veth, with --prometheus, {args.runs} fresh runs per row, median\n"
        )
        print(rss_table(live, args.runs))
        print()
        results.append(rss_result("live view", live, TARGET_LIVE_RSS_MB, compiler=False))
    if "start" in parts:
        print(
            "exec to the first attachment on vb (TCX link or clsact filter), "
            f"{args.runs} runs, two starts in a row each (first: empty program cache, "
            "second: the cache the first left), median; CPU s: flowtop's own process "
            "by then (not its compiler children)"
            + (f"; HEAD and {args.before} alternating" if len(trees) > 1 else "")
            + "\n"
        )
        print(start_table(starts, trees, cpus))
        print()
        for which, target, note in (
            ("first", TARGET_FIRST_S, ""),
            ("second", TARGET_SECOND_S, "; from the program cache"),
        ):
            figs = {m: starts.get((m, which, HEAD.label), []) for m in ("export-only", "dump")}
            ok = all(v and C.median(v) <= target for v in figs.values())
            text = ", ".join(
                f"{m} {C.median(v):.2f} s" if v else f"{m} not measured" for m, v in figs.items()
            )
            results.append(
                f"RESULT footprint start ({which}): {text} (<= {target:g} s{note})  {C.verdict(ok)}"
            )
    if errors:
        print(f"{len(errors)} failed measurement(s):")
        print("\n".join(f"  {e}" for e in errors))
        print()
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
