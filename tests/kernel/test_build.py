"""The compiler stays in short-lived children (flowtop.kernel.build): what the
long-lived process maps, how many children run and when, and what a child
that dies or hangs, or a parent killed mid-compile, leaves behind.

Ground truth is /proc: a process's memory maps (/proc/PID/maps), its
children (the ppid field of /proc/*/stat), and bpftool's list of loaded
programs (a sock_ops program is named after the flowtop pid that owns it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from . import netns
from .dump import READY_MARK, Collector
from .expect import drain, udp_client, udp_sink
from .netns import Pair

pytestmark = pytest.mark.kernel

COMPILER_LIBS = ("libbcc", "libLLVM", "libclang")
COMPILER = "flowtop.kernel.compiler"


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(autouse=True)
def _compile_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests watch the compiler child: the program cache would skip it."""
    monkeypatch.setenv("FLOWTOP_PROGRAM_CACHE", "0")


def children(pid: int) -> dict[int, str]:
    """{pid: command line} of pid's live children (zombies left out)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry.name)] = cmd
    return out


def compilers(pid: int) -> dict[int, str]:
    return {c: cmd for c, cmd in children(pid).items() if COMPILER in cmd}


def ready(col: Collector) -> bool:
    """Whether flowtop says it is collecting (asserts it still runs)."""
    assert col.proc is not None
    if READY_MARK in col.stderr:
        return True
    assert col.proc.poll() is None, col.stderr
    return False


def mapped(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/maps") as f:
            text = f.read()
    except OSError:
        return []
    return [lib for lib in COMPILER_LIBS if lib in text]


def sock_ops_loaded(pid: int) -> bool:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30
    ).stdout
    return any(p.get("name") == f"ftsops_{pid}" for p in json.loads(out or "[]"))


def wait_for(cond, timeout: float, what: str, step: float = 0.002):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(step)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@contextmanager
def env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def config(tmp_path, text: str) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "flowtop.toml"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_the_compilers_run_at_once_and_none_mapped_after(quiet_pair: Pair) -> None:
    """With sock_ops, socket owners and drop reasons on (the default), the TC,
    sock_ops, owner and drop builds run as four children at the same time; once collecting,
    flowtop maps no compiler library, its children are gone (the L3 pair's
    stage included), and it still counts."""
    p = quiet_pair
    col = Collector(p.a, ["va"]).start()
    try:
        most: dict[int, str] = {}
        ever_mapped = False
        while not ready(col):
            now = compilers(col.pid)
            ever_mapped = ever_mapped or any(mapped(c) for c in now)
            if len(now) > len(most):
                most = now
            time.sleep(0.005)
        assert sorted(cmd.split()[-1] for cmd in most.values()) == [
            "drops.c", "owner.c", "sockops.c", "tc.c",
        ], most  # fmt: skip
        assert ever_mapped  # the compilers do map bcc and LLVM: what is looked for is there
        assert mapped(col.pid) == []
        assert sock_ops_loaded(col.pid)  # handed over and attached: local TCP health is on
        wait_for(lambda: not children(col.pid), 60, "exit of the compilers", 0.05)
        assert mapped(col.pid) == []
        sink = udp_sink(p.b, "10.200.1.2", 6711)
        client = udp_client(p.a, "10.200.1.2", 6712)
        for _ in range(7):
            client.sendto(b"x" * 50, ("10.200.1.2", 6711))
        assert drain(sink, 7) == 7
        sink.close()
        client.close()
        time.sleep(1.5)
    finally:
        res = col.stop()
    ours = res.find(iface="va", direction="egress", proto=17, dport=6711)
    assert sum(f["packets"] for f in ours) == 7, ours


def test_without_sock_ops_owners_and_drops_only_the_tc_program_compiles(
    quiet_pair: Pair, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tmp_path, "[collector]\nsockops = false\nowners = false\ndrops = false\n")
    col = Collector(quiet_pair.a, ["va"], extra_args=["--config", cfg]).start()
    try:
        seen: set[str] = set()
        while not ready(col):
            seen |= {cmd.split()[-1] for cmd in compilers(col.pid).values()}
            time.sleep(0.005)
        assert seen == {"tc.c"}
        assert not sock_ops_loaded(col.pid)
    finally:
        col.stop()


def cpu_of(pid: int) -> float | None:
    """User and system CPU seconds of pid's threads so far; None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bpf_objects(pid: int) -> set[str]:
    """The kinds of BPF object pid holds an fd of ("bpf-map", "bpf-prog")."""
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("anon_inode:bpf-"):
            out.add(link.split(":", 1)[1])
    return out


def test_the_other_compiles_wait_for_the_tc_programs_first_stage(quiet_pair: Pair) -> None:
    """A first start (no program cache): the sock_ops, owner and drop
    builds' children start only once the TC build's first stage is here
    (build.py's Priorities: held builds start their child at their go).
    Ground truth from /proc, sampled every few ms: flowtop's children, then
    whether flowtop holds a BPF program fd (the TC build's first stage
    received: it is the first build it waits for; a child seen before a
    look that finds none was started before that stage came). Afterwards
    they compile (CPU, BPF objects of their own) and what they built is
    attached: sock_ops is loaded and nothing is reported disabled."""
    p = quiet_pair
    col = Collector(p.a, ["va"]).start()
    names: dict[int, str] = {}
    early: set[str] = set()  # the builds with a child before the TC build's first stage
    objs: dict[int, set[str]] = {}  # per other child: the BPF objects it ever held
    last: dict[int, float] = {}  # per other child: its last CPU seen
    try:
        while True:
            assert col.proc is not None and col.proc.poll() is None, col.stderr
            kids = compilers(col.pid)
            if bpf_objects(col.pid) & {"bpf-prog"}:
                break
            for k, cmd in kids.items():
                early.add(names.setdefault(k, cmd.split()[-1]))
            time.sleep(0.003)
        end = time.monotonic() + 120
        while not ready(col) or len(last) < 3 or any(not gone(k) for k in last):
            assert time.monotonic() < end, (names, last, col.stderr)
            for k, cmd in compilers(col.pid).items():
                if names.setdefault(k, cmd.split()[-1]) == "tc.c":
                    continue
                cpu = cpu_of(k)
                if cpu is not None and not gone(k):
                    last[k] = cpu
                    objs.setdefault(k, set()).update(bpf_objects(k))
            time.sleep(0.003)
        attached = sock_ops_loaded(col.pid)
    finally:
        col.stop()
    assert early == {"tc.c"}, names  # none of the others had a child yet
    assert sorted(names[k] for k in last) == ["drops.c", "owner.c", "sockops.c"], names
    for k, cpu in last.items():
        # they did compile: CPU (a compile is most of a build) and maps or programs
        assert cpu > 0.05 and objs[k], (names[k], cpu, objs[k])
    assert attached, col.stderr
    assert "disabled" not in col.stderr, col.stderr


@pytest.mark.exclusive  # its stale sock_ops program: any other start removes it
@pytest.mark.parametrize("run", range(3))
def test_kill9_of_flowtop_while_compiling_leaves_nothing(quiet_pair: Pair, run: int) -> None:
    """SIGKILL of flowtop at a random moment while its compilers run: the
    children notice (their socket closes) and exit at once, nothing is
    attached, and a sock_ops program that was not attached yet (loaded in a
    child, handed over or not) is unloaded with its last fd. One attached
    already (its compile won the race) outlives the process by kernel
    design: the next start's stale clean-up removes it."""
    from flowtop.kernel.sockops_attach import remove_stale_programs

    rng = random.Random(f"kill9-{run}-{os.getpid()}")
    col = Collector(quiet_pair.a, ["va"]).start()
    pid = col.pid
    try:
        kids = wait_for(lambda: compilers(pid), 40, "compiler child")
        wait_for(lambda: any(mapped(k) for k in compilers(pid)), 40, "a compiler with bcc mapped")
        time.sleep(rng.uniform(0, 1.5))
        kids = compilers(pid)
        sockops_compiling = any(cmd.endswith("sockops.c ") for cmd in kids.values())
    finally:
        col.kill9()
    assert kids, "the kill came after the compiles: not the point under test"
    for k in kids:
        wait_for(lambda k=k: gone(k), 5, f"exit of compiler {k}", 0.01)
    assert not netns.flowtop_filters(quiet_pair.a, "va", "ingress")
    assert not netns.flowtop_filters(quiet_pair.a, "va", "egress")
    if sockops_compiling:
        assert wait_for(lambda: not sock_ops_loaded(pid), 10, "sock_ops program unloaded", 0.2)
    elif sock_ops_loaded(pid):
        removed = remove_stale_programs()
        assert any(r.startswith(f"ftsops_{pid} ") for r in removed), removed
        assert not sock_ops_loaded(pid)


def _tc_compiler(pid: int) -> int:
    got = wait_for(
        lambda: [c for c, cmd in compilers(pid).items() if cmd.endswith("tc.c ")], 40, "tc build"
    )
    return int(got[0])


def _one_error_line(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("flowtop: error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


def test_a_compiler_that_dies_is_one_line(quiet_pair: Pair) -> None:
    col = Collector(quiet_pair.a, ["va"]).start()
    child = _tc_compiler(col.pid)
    os.kill(child, signal.SIGKILL)
    assert col.proc is not None
    rc = col.proc.wait(timeout=30)
    col.stop(check=False)
    line = _one_error_line(col.stderr)
    assert rc == 69, col.stderr
    assert "was killed by signal 9 (SIGKILL) building the TC program" in line, line
    assert not children(col.pid)


def test_a_compiler_that_hangs_is_one_line_and_ended(quiet_pair: Pair) -> None:
    with env(FLOWTOP_BUILD_TIMEOUT="3"):
        col = Collector(quiet_pair.a, ["va"]).start()
    child = _tc_compiler(col.pid)
    os.kill(child, signal.SIGSTOP)
    assert col.proc is not None
    t0 = time.monotonic()
    try:
        rc = col.proc.wait(timeout=30)
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)
    took = time.monotonic() - t0
    col.stop(check=False)
    line = _one_error_line(col.stderr)
    assert rc == 69 and took < 10, (rc, took, col.stderr)
    assert "did not finish building the TC program within 3 s" in line, line
    assert wait_for(lambda: gone(child), 5, "end of the hung compiler", 0.01)


def test_compile_error_shows_the_compilers_message(quiet_pair: Pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bpf = tmp_path / "bpf"
    bpf.mkdir()
    (bpf / "tc.c").write_text("int flowtop_ingress(struct __sk_buff *skb) { return nope; }\n")
    with env(FLOWTOP_BPF_DIR=str(bpf)):
        col = Collector(quiet_pair.a, ["va"]).start()
    assert col.proc is not None
    rc = col.proc.wait(timeout=60)
    col.stop(check=False)
    line = _one_error_line(col.stderr)
    assert rc == 69
    assert "cannot compile or load the TC program" in line
    assert "use of undeclared identifier 'nope'" in line, line


# -- what a start imports before its first attachment (issue 13) -------------------

# Modules the first attachment needs none of: netlink's library (TCX attaches
# with bpf(2), links come over rtnetlink), the engine and its queries, the
# exports, Textual.
LATE = (
    "pyroute2",
    "prometheus_client",
    "flowtop.core.engine",
    "flowtop.core.flowtable",
    "flowtop.query.monitors",
    "flowtop.run.outputs",
    "textual",
)
# flowtop.cli.main with the first KernelCollector._attach reporting which of
# LATE were loaded then, and main's end which are loaded at all.
IMPORT_WRAPPER = """
import sys
from flowtop.kernel import collector
LATE = {late!r}
real = collector.KernelCollector._attach
def attach(self, ifindex, name):
    if not getattr(collector, "_seen_first", False):
        collector._seen_first = True
        got = ",".join(m for m in LATE if m in sys.modules) or "-"
        print("at the first attachment:", got, file=sys.stderr, flush=True)
    return real(self, ifindex, name)
collector.KernelCollector._attach = attach
from flowtop.cli import main
rc = main(sys.argv[1:])
print("at the end:", ",".join(m for m in LATE if m in sys.modules) or "-", file=sys.stderr)
sys.exit(rc)
"""


def test_the_build_request_imports_no_numpy() -> None:
    """What the cli imports to begin the TC build (cli._begin_compile): numpy
    only comes after the build started."""
    from .dump import RUN_DIR, python

    code = (
        "import sys\n"
        "from flowtop.config import Config\n"
        "from flowtop.kernel.build import begin_early\n"
        "from flowtop.kernel.tcrequest import request\n"
        "from flowtop.run.lifecycle import program_options\n"
        "req = request(program_options(Config()))\n"
        "print(req.what, [n for n, _ in req.first], 'numpy' in sys.modules)\n"
    )
    out = subprocess.run(
        [python(), "-c", code], cwd=RUN_DIR, capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=3)
    assert out[-1].strip().endswith("False"), out
    assert "flowtop_ingress" in out[-1] and "flowtop_egress" in out[-1], out


def test_export_only_attaches_before_the_engine_and_the_exports(quiet_pair: Pair) -> None:
    """--export-only with a Prometheus listener: none of LATE is loaded at the
    first attachment; afterwards the engine and the listener are there and
    /metrics answers with the interface's counters."""
    import urllib.request

    from .dump import RUN_DIR, python

    p = quiet_pair
    code = IMPORT_WRAPPER.format(late=LATE)
    proc = p.b.popen(
        [python(), "-c", code, "--export-only", "-i", "vb", "--prometheus", "127.0.0.1:19391"],
        cwd=RUN_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        end = time.monotonic() + 120
        while not any("collecting on" in ln for ln in lines):
            assert time.monotonic() < end and proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        first = [ln for ln in lines if ln.startswith("at the first attachment:")]
        assert first == ["at the first attachment: -\n"], lines
        with netns.entered(p.b.name):
            body = urllib.request.urlopen("http://127.0.0.1:19391/metrics", timeout=10).read()
        assert b"\nflowtop_active_flows " in body, body[:400]
    finally:
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    assert proc.returncode == 0, lines
    end_line = [ln for ln in lines if ln.startswith("at the end:")]
    assert len(end_line) == 1, lines
    loaded = set(end_line[0].split(":", 1)[1].strip().split(","))
    # the engine, the flow table and the exports did start (pyroute2: no clsact on vb)
    assert {"prometheus_client", "flowtop.core.engine", "flowtop.run.outputs"} <= loaded, lines
    assert "pyroute2" not in loaded, lines


# -- held builds: no child before their go (build.py's Priorities) ---------------------------


def _tc_request():  # type: ignore[no-untyped-def]
    """The TC program's build (nice 0: what the first attachment waits for)."""
    from flowtop.config import Config
    from flowtop.kernel.tcrequest import request
    from flowtop.run.lifecycle import program_options

    return request(program_options(Config()))


def _owner_request(**kw):  # type: ignore[no-untyped-def]
    """The socket owner programs' build (nice BACKGROUND_NICE: held beside the TC build)."""
    from flowtop.kernel.owners import OwnerCollector

    return OwnerCollector(**kw)._request()


def _sources(pid: int) -> list[str]:
    """The source names of pid's compiler children."""
    return sorted(cmd.split()[-1] for cmd in compilers(pid).values())


def _nice_of(pid: int) -> tuple[int, int | None]:
    """(pid's main thread's niceness, its autogroup's or None)."""
    from flowtop.kernel.build import autogroup_nice

    with open(f"/proc/{pid}/stat") as f:
        nice = int(f.read().rsplit(")", 1)[1].split()[16])
    return nice, autogroup_nice(pid)


def test_a_held_build_starts_its_child_at_the_go() -> None:
    """A build of nice > 0 begun while the TC build compiles has no child
    until the TC build's first stage is taken (its go): then its child
    starts (in a thread: wait() returned first) at its request's niceness
    (its autogroup at 0: no hold), and it loads. Ground truth: this process's
    children in /proc and their niceness."""
    from flowtop.kernel.build import BACKGROUND_NICE, Build

    me = os.getpid()
    fg = Build(_tc_request())
    bg = Build(_owner_request())
    got = []
    try:
        assert fg.pid is not None and bg.pid is None and bg.compiled
        assert not bg.ready()
        assert _sources(me) == ["tc.c"]
        got.append(fg.wait())
        child = wait_for(lambda: bg.pid, 30, "the held build's child", 0.01)
        assert "owner.c" in _sources(me)
        # Set as it starts (and by itself, compiler._at_least_nice): no hold.
        unheld = {(BACKGROUND_NICE, 0), (BACKGROUND_NICE, None)}
        wait_for(lambda: _nice_of(child) in unheld, 30, "the child at its request's niceness")
        got.append(bg.wait())
        assert sorted(got[-1].progs) == sorted(n for n, _ in bg.request.first)
    finally:
        fg.close()
        bg.close()
        for one in got:
            one.close()


def test_a_wait_for_a_held_build_starts_it_at_once() -> None:
    """wait() for a held build while the TC build still compiles: its child
    starts there and then, goes on at once (no go to wait for: no
    deadlock) and hands over; the TC build hands over afterwards."""
    from flowtop.kernel.build import Build

    fg = Build(_tc_request())
    bg = Build(_owner_request())
    got = []
    try:
        assert bg.pid is None
        got.append(bg.wait())
        assert bg.compiled and sorted(got[-1].progs) == sorted(n for n, _ in bg.request.first)
        got.append(fg.wait())
        assert "flowtop_ingress" in got[-1].progs
    finally:
        fg.close()
        bg.close()
        for one in got:
            one.close()


def test_a_held_build_closed_before_its_go_starts_nothing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A held build missing its program cache entry holds the entry's
    compile lock from its start (another process would wait for it, not
    compile too); closed before its go it closes the lock (another look
    gets it) and never starts a child, also not at the go. Ground truth:
    the lock (progcache.try_lock, a flock on a file description of its
    own: refused while another holds it, in this process too) and this
    process's children."""
    from flowtop.kernel import progcache
    from flowtop.kernel.build import Build

    me = os.getpid()
    fg = Build(_tc_request())  # no cache for it (the autouse fixture)
    monkeypatch.setenv(progcache.DIR_ENV, str(tmp_path / "progcache"))
    monkeypatch.delenv(progcache.ENABLE_ENV)
    bg = Build(_owner_request())
    got = []
    try:
        entry = progcache.entry_path(bg.request)
        assert entry is not None and bg.pid is None
        assert progcache.try_lock(entry) is None  # bg holds it
        bg.close()
        lock = progcache.try_lock(entry)
        assert lock is not None and lock >= 0
        os.close(lock)
        got.append(fg.wait())  # the go: nothing left to start
        assert bg.pid is None and _sources(me) == ["tc.c"]
        assert not [t for t in threading.enumerate() if t.name == "compiler-spawn"]
        assert progcache.entries(tmp_path / "progcache") == []
    finally:
        fg.close()
        bg.close()
        for one in got:
            one.close()


def _nices(pid: int) -> set[tuple[int, int | None]]:
    """(niceness, autogroup niceness) of each of pid's threads."""
    from flowtop.kernel.build import autogroup_nice

    out = set()
    group = autogroup_nice(pid)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out.add((int(f.read().rsplit(")", 1)[1].split()[16]), group))
    return out


def test_beside_a_cache_hit_a_background_compile_runs_at_held_nice(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A build of nice 0 loading from the program cache (no child compiles
    for it): a build of nice > 0 begun meanwhile starts its child at once,
    at HELD_NICE, every thread and its autogroup (alone in it: a thread's
    niceness alone would not hold it back against other sessions), and at
    its request's niceness (its autogroup at 0) once the first one's first
    stage is here; one
    begun when nothing is waited for is not held. Ground truth: the
    children's niceness in /proc. The held child is stopped (SIGSTOP)
    meanwhile so that it is still there to look at, then goes on and loads."""
    from flowtop.kernel import progcache
    from flowtop.kernel.bpfsys import map_info
    from flowtop.kernel.build import BACKGROUND_NICE, HELD_NICE, Build

    monkeypatch.setenv(progcache.DIR_ENV, str(tmp_path / "progcache"))
    monkeypatch.delenv(progcache.ENABLE_ENV)
    fg_req = replace(_owner_request(), nice=0)
    got = []
    first = Build(fg_req)
    try:
        got.append(first.wait())  # compiled; the entry is written before its message
    finally:
        first.close()
    fg = Build(fg_req)
    bg = Build(_owner_request(endpoints_size=1000))
    try:
        assert fg.pid is None and bg.pid is not None  # a hit; the other one compiles
        os.kill(bg.pid, signal.SIGSTOP)
        group = {HELD_NICE, None}
        assert {n for n, _ in _nices(bg.pid)} == {HELD_NICE}
        assert {g for _, g in _nices(bg.pid)} <= group
        got.append(fg.wait())
        assert fg.from_cache
        group = {0, None}  # the hold ends
        assert {n for n, _ in _nices(bg.pid)} == {BACKGROUND_NICE}  # released, every thread
        assert {g for _, g in _nices(bg.pid)} <= group
        os.kill(bg.pid, signal.SIGCONT)
        got.append(bg.wait())
        assert map_info(got[-1].maps["endpoints"]).max_entries == 1000
        alone = Build(_owner_request(endpoints_size=1001))
        try:
            assert alone.pid is not None
            assert HELD_NICE not in {n for n, _ in _nices(alone.pid)}  # nothing waited for
            got.append(alone.wait())
        finally:
            alone.close()
    finally:
        fg.close()
        bg.close()
        for one in got:
            one.close()
