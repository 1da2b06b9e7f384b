"""Attach/detach hygiene: stale filters after kill -9, foreign filters kept,
`flowtop detach --all`, `--tc-priority`, and a full flow map."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowtop.kernel import tcx

from . import frames as fr
from .dump import READY_MARK, READY_TIMEOUT, Collector, flowtop_cmd, run_dump
from .expect import drain, udp_client, udp_sink
from .netns import MAC_A, MAC_B, Netns, Pair, entered, flowtop_filters, foreign_filters

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
NAME_RE = re.compile(r"^flowtop_(ingress|egress)_(\d+)$")


def _add_foreign(ns: Netns, ifname: str) -> None:
    """Someone else's clsact and filters (prio 10), there before flowtop starts."""
    ns.tc("qdisc", "add", "dev", ifname, "clsact")
    for hook in ("ingress", "egress"):
        ns.tc(
            "filter",
            "add",
            "dev",
            ifname,
            hook,
            "prio",
            "10",
            "protocol",
            "ip",
            "u32",
            "match",
            "u32",
            "0",
            "0",
            "classid",
            "1:1",
        )


def _foreign_ok(ns: Netns, ifname: str) -> None:
    for hook in ("ingress", "egress"):
        ff = foreign_filters(ns, ifname, hook)
        assert any(f["pref"] == 10 and f["kind"] == "u32" for f in ff), (hook, ff)


def _names(ns: Netns, ifname: str, hook: str) -> list[str]:
    return [f["name"] for f in flowtop_filters(ns, ifname, hook)]


# The tests below that look at clsact filters (names, priorities, stale ones
# after kill -9) run with clsact; the TCX side is in test_tcx.py.
TC = ["--attach", "tc"]


def _tcx_links(ns: Netns, ifname: str) -> list[tcx.FoundLink]:
    """flowtop's TCX links on ifname (any holder)."""
    with entered(ns.name):
        return [f for f in tcx.tcx_links() if f.ifname == ifname]


def _wait_for_filter(ns: Netns, ifname: str, col: Collector, timeout: float = 40) -> bool:
    """Polls until a flowtop filter (or TCX link) of this collector is on the
    ingress hook."""
    deadline = time.monotonic() + timeout
    want = f"flowtop_ingress_{col.pid}"
    while time.monotonic() < deadline:
        if want in _names(ns, ifname, "ingress"):
            return True
        if any(f.direction == "ingress" and col.pid in f.holders for f in _tcx_links(ns, ifname)):
            return True
        if col.proc is not None and col.proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def _udp_roundtrip(p: Pair, n: int, port: int) -> None:
    sink = udp_sink(p.b, B4, port)
    c = udp_client(p.a, B4, port + 1)
    try:
        for _ in range(n):
            c.sendto(b"k" * 100, (B4, port))
        assert drain(sink, n) == n
    finally:
        sink.close()
        c.close()


def test_kill9_then_clean_run(quiet_pair: Pair) -> None:
    """kill -9 right after start and kill -9 once attached leave at most stale
    filters; the next run replaces them (exactly one flowtop filter per hook,
    its own, at priority 1), counts exactly, and leaves no flowtop filter and
    the foreign u32 filters intact when it exits."""
    p = quiet_pair
    _add_foreign(p.a, "va")

    # 1. killed before it could attach (probably while compiling)
    c1 = Collector(p.a, ["va"], extra_args=TC).start()
    time.sleep(0.2)
    c1.kill9()
    # 2. killed as soon as its filter shows up on the hook (before or right at ready)
    c2 = Collector(p.a, ["va"], extra_args=TC).start()
    attached = _wait_for_filter(p.a, "va", c2)
    c2.kill9()
    assert attached, f"second run never attached:\n{c2.stderr}"
    # 3. killed during a run
    c3 = Collector(p.a, ["va"], extra_args=TC).start()
    c3.wait_ready()
    time.sleep(0.2)
    c3.kill9()
    stale = _names(p.a, "va", "ingress") + _names(p.a, "va", "egress")
    assert stale, "kill -9 left no filter (nothing for the next run to clean up?)"
    _foreign_ok(p.a, "va")

    # 4. a normal run
    c4 = Collector(p.a, ["va"], extra_args=TC).start()
    c4.wait_ready()
    try:
        for hook in ("ingress", "egress"):
            ft = flowtop_filters(p.a, "va", hook)
            assert [f["name"] for f in ft] == [f"flowtop_{hook}_{c4.pid}"], (hook, ft)
            assert ft[0]["pref"] == 1 and ft[0]["kind"] == "bpf", ft
        _foreign_ok(p.a, "va")
        _udp_roundtrip(p, 10, 6100)
        time.sleep(0.3)
    finally:
        res = c4.stop()
    f = res.flow(iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=6101, dport=6100)
    assert f is not None and (f["packets"], f["bytes"]) == (10, 10 * 128), f
    for hook in ("ingress", "egress"):
        assert _names(p.a, "va", hook) == [], (hook, flowtop_filters(p.a, "va", hook))
    _foreign_ok(p.a, "va")


@pytest.mark.exclusive  # detach --all: every live flowtop's sock_ops and owner programs
def test_detach_all_removes_stale_filters(quiet_pair: Pair) -> None:
    """After kill -9 of a run at --tc-priority 7, `flowtop detach --all` in the
    namespace removes the stale filters and nothing else."""
    p = quiet_pair
    _add_foreign(p.a, "va")
    c = Collector(p.a, ["va"], extra_args=[*TC, "--tc-priority", "7"]).start()
    c.wait_ready()
    for hook in ("ingress", "egress"):
        ft = flowtop_filters(p.a, "va", hook)
        assert [(f["name"], f["pref"]) for f in ft] == [(f"flowtop_{hook}_{c.pid}", 7)], ft
    c.kill9()
    assert _names(p.a, "va", "ingress") == [f"flowtop_ingress_{c.pid}"]
    proc = flowtop_cmd(p.a, "detach", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for hook in ("ingress", "egress"):
        assert _names(p.a, "va", hook) == [], (hook, flowtop_filters(p.a, "va", hook))
    _foreign_ok(p.a, "va")


def test_flow_map_full_is_reported(quiet_pair: Pair) -> None:
    """--max-flows 256 and 5000 distinct UDP flows (2 packets each) in one burst,
    more than the kernel map plus any per-CPU cache in front of it can hold:
    the overflow is counted (flow_map_full > 0), lost packets/bytes are exactly
    what is missing from the flows, and interface totals are still exact."""
    p = quiet_pair
    n_flows = 5000
    burst = fr.udp_burst(MAC_A, MAC_B, A4, fr.SINK4, n_flows, dport=9999)
    before = p.a.link_stats("va")
    res = run_dump(
        p.a,
        ["va"],
        lambda: fr.send_frames(p.a, "va", burst, repeat=2),
        extra_args=["--max-flows", "256"],
    )
    after = p.a.link_stats("va")
    sent_pk = 2 * len(burst)
    sent_by = 2 * sum(f.ip_bytes for f in burst)
    ours = [
        f
        for f in res.find(iface="va", direction="egress", proto=17, src=A4, dst=fr.SINK4)
        if f["dport"] == 9999 and 20000 <= f["sport"] < 20000 + n_flows
    ]
    got_pk = sum(f["packets"] for f in ours)
    got_by = sum(f["bytes"] for f in ours)
    st = res.stats
    assert st["flow_map_full"] > 0, (st, len(ours), got_pk)
    assert st["lost_packets"] == sent_pk - got_pk, (st, got_pk, sent_pk)
    assert st["lost_bytes"] == sent_by - got_by, (st, got_by, sent_by)
    assert got_pk > 0
    tx = res.iface("va")
    assert tx["tx_packets"] == sent_pk == after["tx_packets"] - before["tx_packets"]
    assert (
        tx["tx_bytes"]
        == after["tx_bytes"] - before["tx_bytes"]
        == sum(len(f.data) for f in burst) * 2
    )


def _has_clsact(ns: Netns, ifname: str) -> bool:
    return "clsact" in ns.tc("qdisc", "show", "dev", ifname).stdout


def test_duration_ends_run_and_cleans_up(quiet_pair: Pair) -> None:
    """--duration 1 ends the run by itself (exit 0, results printed); the filters
    and the clsact qdisc flowtop added itself are gone afterwards."""
    p = quiet_pair
    assert not _has_clsact(p.a, "va")
    col = Collector(p.a, ["va"], extra_args=TC)
    col.extra_args = ["--duration", "1"]  # the later --duration wins
    col.start()
    col.wait_ready()
    _udp_roundtrip(p, 3, 6200)
    assert col.proc is not None
    rc = col.proc.wait(timeout=20)
    res = col.stop()
    assert rc == 0, col.stderr
    f = res.flow(iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=6201, dport=6200)
    assert f is not None and (f["packets"], f["bytes"]) == (3, 3 * 128), f
    assert res.stats is not None
    for hook in ("ingress", "egress"):
        assert flowtop_filters(p.a, "va", hook) == []
    assert not _has_clsact(p.a, "va"), p.a.tc("qdisc", "show", "dev", "va").stdout


def test_unknown_interface_is_one_line_error(quiet_pair: Pair) -> None:
    p = quiet_pair
    proc = flowtop_cmd(p.a, "dump", "-i", "nosuch0", "--duration", "5", "--json")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nosuch0" in lines[0], proc.stderr
    assert not _has_clsact(p.a, "va")


def test_two_live_collectors_do_not_remove_each_other(quiet_pair: Pair) -> None:
    """A second flowtop on the same interface must not take the first one's
    filters for stale ones (its pid is alive): both count the same traffic
    exactly, and each removes only its own filters."""
    p = quiet_pair
    c1 = Collector(p.a, ["va"], extra_args=TC).start()
    c2: Collector | None = None
    try:
        c1.wait_ready()
        c2 = Collector(p.a, ["va"], extra_args=TC).start()
        c2.wait_ready()
        for hook in ("ingress", "egress"):
            assert sorted(_names(p.a, "va", hook)) == sorted(
                [f"flowtop_{hook}_{c1.pid}", f"flowtop_{hook}_{c2.pid}"]
            ), hook
        _udp_roundtrip(p, 7, 6300)
        time.sleep(0.3)
        r2 = c2.stop()
        for hook in ("ingress", "egress"):
            assert _names(p.a, "va", hook) == [f"flowtop_{hook}_{c1.pid}"], hook
        r1 = c1.stop()
    finally:
        for c in (c1, c2):
            if c is not None and c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait(timeout=10)
    for res in (r1, r2):
        f = res.flow(
            iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=6301, dport=6300
        )
        assert f is not None and (f["packets"], f["bytes"]) == (7, 7 * 128), f
    for hook in ("ingress", "egress"):
        assert _names(p.a, "va", hook) == []
    assert not _has_clsact(p.a, "va")


# -- Ctrl-C at every point of start-up ------------------------------------------------------
#
# The race this guards against: a SIGINT before the stop handler was installed
# arrived as a KeyboardInterrupt in the middle of the imports, where one raised
# inside importlib's module-lock weakref callback is printed as "Exception
# ignored" and dropped: the Ctrl-C was lost and `dump` ran its whole
# --duration. The handler is now installed first thing in main() and only sets
# a flag that every step of start-up checks. Each point is hit RUNS times,
# alternately with clsact and TCX, with a busy loop on every CPU so that the
# timing is not the quiet machine's.
#
# Where in a point's window (WINDOW seconds after its marker) the signal goes
# is stratified: run i of n at a random moment within the i-th n-th of the
# window, so that a few runs cover all of it (uniform moments bunch up and
# leave gaps). A run past the importing point costs a compile or two (seconds
# of CPU), so those points have few runs: as many per attachment mode.

RUNS = {"importing": 10, "compiling": 4, "attaching": 4, "collecting": 2}
WINDOW = {"importing": 0.1, "compiling": 0.5, "attaching": 0.6, "collecting": 0.0}
# The compile runs in a child (flowtop/kernel/build.py), which a Ctrl-C ends at
# once; the bound leaves room for the attach and the clean-up under the CPU hog.
# The bug this catches ran on for the whole --duration (60 s).
EXIT_BOUND = 15.0


# The stop points whose starts must compile (a child with bcc mapped, then the
# staged programs compiling behind the first attach): the program cache would
# skip that. Importing too: from the cache, a start verifies the TC program in
# a thread from its first steps, and a Ctrl-C then waits for the verifier
# (about 3 s a run under the CPU hog; a compile child ends at once). The
# other tests of this file start from the session's cache.
COMPILED_POINTS = ("importing", "compiling", "attaching")


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """A busy loop on every CPU, niced so that start-up slows without taking minutes."""
    code = "import os\nos.nice(10)\nwhile True: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait(timeout=10)


def _mapped(pid: int, lib: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return lib in f.read()
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    """Pids whose parent is pid (the ppid field of /proc/*/stat)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _wait_mapped(col: Collector, lib: str, in_child: bool = False) -> None:
    """Until the collector's process (in_child: one of its children, the
    compilers) has `lib` mapped (it got that far)."""
    deadline = time.monotonic() + READY_TIMEOUT
    assert col.proc is not None
    while not any(_mapped(p, lib) for p in (_children(col.pid) if in_child else [col.pid])):
        assert col.proc.poll() is None, f"exited before loading {lib}:\n{col.stderr}"
        assert time.monotonic() < deadline, f"never loaded {lib}:\n{col.stderr}"
        time.sleep(0.002)


def _sock_ops_progs(pid: int) -> list[str]:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30
    ).stdout
    return [p.get("name", "") for p in json.loads(out or "[]") if p.get("name") == f"ftsops_{pid}"]


def _bpffs_entries(pid: int) -> list[str]:
    root = Path("/sys/fs/bpf")
    return [str(p) for p in root.rglob("*") if str(pid) in p.name] if root.is_dir() else []


# Where the signal goes, and what must come out: an exit status of 130 and
# nothing on stdout before "collecting on" (Interrupted), 0 and the results
# after it (dump's documented "Ctrl-C to stop early").
POINTS = list(RUNS)


def _interrupt_once(p: Pair, point: str, run: int) -> tuple[float | None, str | None]:
    """One start-up of dump on p.a's va, SIGINT at `point`: (seconds it took
    to exit, None) or (None or seconds, what was wrong)."""
    rng = random.Random(f"{point}-{run}-{os.getpid()}")
    delay = WINDOW[point] * (run + rng.random()) / RUNS[point]
    # Both attachments, alternately: each has its own attach path to interrupt.
    mode = ("tc", "tcx")[run % 2]
    col = Collector(p.a, ["va"], extra_args=["--attach", mode]).start()
    assert col.proc is not None
    pid = col.pid
    try:
        if point == "importing":  # numpy is loaded: flowtop's own imports are under way
            _wait_mapped(col, "_multiarray_umath")
        elif point == "compiling":  # bcc is loaded: the TC program compiles now
            _wait_mapped(col, "libbcc", in_child=True)
        elif point == "attaching":  # its first filter is on: the rest, then sock_ops
            assert _wait_for_filter(p.a, "va", col), col.stderr
        else:
            col.wait_ready()
        time.sleep(delay)
        t0 = time.monotonic()
        col.proc.send_signal(signal.SIGINT)
        try:
            rc = col.proc.wait(timeout=EXIT_BOUND)
        except subprocess.TimeoutExpired:
            return None, f"run {run}: still running {EXIT_BOUND:g} s after SIGINT"
        took = time.monotonic() - t0
        res = col.stop(check=False)
    finally:
        if col.proc.poll() is None:
            col.proc.kill()
            col.proc.wait(timeout=10)
    ready = READY_MARK in res.stderr
    want = 0 if ready else 130
    problems = []
    if rc != want:
        problems.append(f"exit {rc}, wanted {want} (ready={ready})")
    if "Traceback" in res.stderr or "Exception ignored" in res.stderr:
        problems.append("a traceback")
    if ready and len([r for r in res.records if r.get("type") == "stats"]) != 1:
        problems.append("no results after collecting")
    if not ready and res.stdout:
        problems.append(f"output before collecting: {res.stdout[:200]!r}")
    if point == "collecting" and not ready:
        problems.append("never said it was collecting")
    for hook in ("ingress", "egress"):
        if flowtop_filters(p.a, "va", hook):
            problems.append(f"a flowtop filter left on va {hook}")
    if _has_clsact(p.a, "va"):
        problems.append("its clsact qdisc left on va")
    if _tcx_links(p.a, "va"):
        problems.append(f"TCX links left on va: {_tcx_links(p.a, 'va')}")
    if _sock_ops_progs(pid):
        problems.append(f"sock_ops program ftsops_{pid} left loaded")
    if _bpffs_entries(pid):
        problems.append(f"bpffs entries left: {_bpffs_entries(pid)}")
    if not problems:
        return took, None
    p.a.tc("qdisc", "del", "dev", "va", "clsact", check=False)  # a clean va for the next run
    return took, f"run {run} ({mode}): {'; '.join(problems)}\n{res.stderr[-1500:]}"


@pytest.mark.exclusive  # start-up under its CPU hog, exit bounded: no other test's load
@pytest.mark.parametrize("point", POINTS)
def test_sigint_during_startup_leaves_nothing(
    quiet_pair: Pair, cpu_hog: None, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if point in COMPILED_POINTS:
        monkeypatch.setenv("FLOWTOP_PROGRAM_CACHE", "0")
    outcomes = [_interrupt_once(quiet_pair, point, run) for run in range(RUNS[point])]
    bad = [why for _took, why in outcomes if why is not None]
    took = [t for t, _why in outcomes if t is not None]
    assert not bad, "\n".join(bad)
    print(f"{point}: exit {min(took):.2f}..{max(took):.2f} s after SIGINT, {len(took)} runs")


def test_userspace_table_evictions_keep_every_flow(quiet_pair: Pair) -> None:
    """--max-flows 256 caps the userspace table too. 1000 distinct flows in 4
    bursts of 250 (each fits the kernel map; --interval 0.05 drains between
    bursts): the table must evict, and every flow still appears once with its
    packet, or is accounted as lost."""
    p = quiet_pair
    burst = fr.udp_burst(MAC_A, MAC_B, A4, fr.SINK4, 1000, dport=9998)

    def traffic() -> None:
        for i in range(4):
            fr.send_frames(p.a, "va", burst[i * 250 : (i + 1) * 250])
            time.sleep(0.2)

    res = run_dump(p.a, ["va"], traffic, extra_args=["--max-flows", "256", "--interval", "0.05"])
    ours = [
        f
        for f in res.find(iface="va", direction="egress", proto=17, src=A4, dst=fr.SINK4)
        if f["dport"] == 9998
    ]
    st = res.stats
    got_pk = sum(f["packets"] for f in ours)
    assert got_pk + st["lost_packets"] == 1000, (got_pk, st)
    assert len({f["sport"] for f in ours}) == len(ours), "a flow printed twice"
    assert st["forced_evictions"] > 0, st
    assert res.iface("va")["tx_packets"] == 1000


@pytest.mark.exclusive  # detach --all: every live flowtop's sock_ops and owner programs
def test_detach_without_all_keeps_live_collectors(quiet_pair: Pair) -> None:
    """`flowtop detach` (no --all) removes a killed run's filters but not those
    of a collector still running, which keeps counting exactly; --all then
    removes the live one's too, and the foreign filters stay throughout."""
    p = quiet_pair
    _add_foreign(p.a, "va")
    dead = Collector(p.a, ["va"], extra_args=TC).start()
    dead.wait_ready()
    dead.kill9()
    live = Collector(p.a, ["va"], extra_args=TC).start()
    try:
        live.wait_ready()
        for hook in ("ingress", "egress"):
            # the new run may already have removed the dead one's filters itself
            assert f"flowtop_{hook}_{live.pid}" in _names(p.a, "va", hook)
        proc = flowtop_cmd(p.a, "detach")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        for hook in ("ingress", "egress"):
            assert _names(p.a, "va", hook) == [f"flowtop_{hook}_{live.pid}"], hook
        _udp_roundtrip(p, 4, 6500)
        time.sleep(0.3)
        proc = flowtop_cmd(p.a, "detach", "--all")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        for hook in ("ingress", "egress"):
            assert _names(p.a, "va", hook) == [], hook
        res = live.stop()
    finally:
        if live.proc is not None and live.proc.poll() is None:
            live.proc.kill()
            live.proc.wait(timeout=10)
    f = res.flow(iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=6501, dport=6500)
    assert f is not None and (f["packets"], f["bytes"]) == (4, 4 * 128), f
    _foreign_ok(p.a, "va")
