"""The program cache (flowtop/kernel/progcache.py) on the real kernel.

A start whose builds are all in the cache starts no compiler: every build
compiles write an entry (a fresh file: temp + rename, a new inode), a start
from the cache rewrites none of them and marks each one used (its mtime).
What it loaded must count exactly as what a compile loads: `flowtop dump
--json` on a veth pair, twice, against an AF_PACKET capture of the same
frames, with the TCP health (sock_ops) and the socket owner columns filled;
a tun device (the L3 pair, the second stage) against what the test wrote
to it. Misses (a changed header, a changed map size) compile; bad entries
(flipped byte, truncated, another version, instructions the verifier
refuses) and untrusted directories fall back to the compile and the start
succeeds. Each test has its own cache directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from scapy.all import IP, UDP, Raw  # type: ignore[import-untyped]

from flowtop.kernel import bpfsys, progcache
from flowtop.kernel.build import BPF_DIR, Build, Loaded, Request
from flowtop.kernel.owners import OwnerCollector

from . import netns
from .cgroups import SERVER, cgroups, children, service_name, spawn
from .dump import Collector, DumpResult
from .test_l3 import Tun, flow_errors
from .test_owner_dump import SENDER, _src_bytes

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
TCP, UDP_P = 6, 17


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own cache directory (not created yet: the first build does)."""
    d = tmp_path / "progcache"
    monkeypatch.setenv(progcache.DIR_ENV, str(d))
    monkeypatch.delenv(progcache.ENABLE_ENV, raising=False)
    monkeypatch.setattr(progcache, "_warned", set())
    return d


def _entries(d: Path) -> dict[str, tuple[int, int]]:
    """{entry name: (inode, mtime)}."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in progcache.entries(d)}


def _builds(d: Path) -> set[str]:
    """What each entry builds, by its first program's name (a pid cut off)."""
    out = set()
    for p in progcache.entries(d):
        name = progcache.decode(p.read_bytes()).stages[0].progs[0].name
        head, _, tail = name.rpartition("_")
        out.add(head if tail.isdigit() else name)
    return out


def _wait_for_tc_entry(d: Path, timeout: float = 180.0) -> None:
    """The TC program's entry is written once its L3 pair compiled, which a
    short run does not wait for (the child finishes it after flowtop exits)."""
    end = time.monotonic() + timeout
    while "flowtop_ingress" not in (_builds(d) if d.exists() else set()):
        assert time.monotonic() < end, f"no TC program entry in {d} after {timeout} s"
        time.sleep(0.2)


# -- a whole start, twice --------------------------------------------------------------------


def _one_start(pair: netns.Pair) -> tuple[DumpResult, dict[str, Any], dict[Any, int], int]:
    """flowtop dump on va while a local sender (own cgroup, comm ftpcsend)
    sends TCP and UDP to a server in b: (result, sender info, capture's IP
    bytes by source, sender pid)."""
    with cgroups(service_name()) as (cg,), children() as kids:
        col = Collector(pair.a, ["va"]).start()
        try:
            col.wait_ready(120)
            cap = netns.Capture(pair.a, "va")
            with cap:
                server = spawn(kids, pair.b, cg, SERVER, "ftpcsrv", addr=B4)
                sender = spawn(
                    kids, pair.a, cg, SENDER, "ftpcsend", server=B4, tcp=[20000], udp=7,
                    udp_size=300, tcp_port=server.info["tcp"], udp_port=server.info["udp"],
                )  # fmt: skip
                time.sleep(0.5)  # every segment ACKed
                frames = cap.stop()
            res = col.stop()
        finally:
            if col.proc is not None and col.proc.poll() is None:
                col.proc.kill()
                col.proc.wait(timeout=10)
        for k in kids:
            k.finish()
    return res, sender.info, _src_bytes(frames), sender.pid


def _check_start(res: DumpResult, info: dict[str, Any], sent: dict[Any, int], pid: int) -> None:
    tcp_port, udp_port = info["tcp"][0], info["udp"]
    assert sent[(UDP_P, A4, udp_port)] == 7 * (300 + 28)
    udp = res.find(iface="va", proto=UDP_P, src=A4, sport=udp_port)
    assert [(f["packets"], f["bytes"]) for f in udp] == [(7, 7 * 328)], udp
    out = res.find(iface="va", proto=TCP, src=A4, sport=tcp_port)
    back = res.find(iface="va", proto=TCP, dst=A4, dport=tcp_port)
    assert sum(f["bytes"] for f in out) == sent[(TCP, A4, tcp_port)], (out, sent)
    assert sum(f["bytes"] for f in back) == sum(
        n for (proto, addr, _port), n in sent.items() if proto == TCP and addr == B4
    ), back
    # socket owners: the sender's flows carry its pid and comm
    assert {(f["pid"], f["comm"]) for f in [*udp, *out]} == {(pid, "ftpcsend")}
    # TCP health from sock_ops: the local connection's RTT
    assert {f["rtt_source"] for f in out} == {"sockops"}, out
    assert all(f["rtt_us"] and f["rtt_us"] > 0 for f in out), out


def test_a_second_start_compiles_nothing_and_counts_the_same(pair: netns.Pair, cache: Path) -> None:
    # frames as flowtop counts them: no GSO super-packets on the tap
    pair.a.ethtool("va", tso=False, gso=False, gro=False)
    pair.b.ethtool("vb", tso=False, gso=False, gro=False)
    first = _one_start(pair)
    _check_start(*first)
    _wait_for_tc_entry(cache)
    written = _entries(cache)
    # one entry per build: the TC program, sock_ops, the socket owner programs
    assert {"flowtop_ingress", "ftsops", "ftownc"} <= _builds(cache), _builds(cache)
    assert len(written) == len(_builds(cache))
    time.sleep(0.05)
    second = _one_start(pair)
    _check_start(*second)
    again = _entries(cache)
    # every entry read (marked used) and none written again: no build compiled
    assert again.keys() == written.keys()
    for name, (inode, mtime) in again.items():
        assert inode == written[name][0], f"{name} was written again: a build compiled"
        assert mtime > written[name][1], f"{name} was not read"


def test_the_l3_pair_from_the_cache_counts_a_tun(cache: Path) -> None:
    ns = netns.Netns.create("pcl3", ipv6=False)
    tun = None
    try:
        tun = Tun(ns, "tpc")
        tun.up("10.201.0.1/24")
        peer, here = "10.201.0.2", "10.201.0.1"
        pkts = [
            bytes(IP(src=peer, dst=here) / UDP(sport=4000 + i, dport=9) / Raw(b"x" * (50 + i)))
            for i in range(5)
        ]
        results = []
        for _ in range(2):
            col = Collector(ns, ["tpc"]).start()
            try:
                col.wait_ready(120)
                for p in pkts:
                    for _ in range(3):
                        tun.write(p)
                time.sleep(0.3)
                results.append(col.stop())
            finally:
                if col.proc is not None and col.proc.poll() is None:
                    col.proc.kill()
                    col.proc.wait(timeout=10)
            if len(results) == 1:
                _wait_for_tc_entry(cache)
                written = _entries(cache)
                time.sleep(0.05)
        for res in results:
            assert flow_errors(res, "tpc", "ingress", pkts * 3) == []
        again = _entries(cache)
        assert {n: i for n, (i, _m) in again.items()} == {n: i for n, (i, _m) in written.items()}
        tc = [p for p in progcache.entries(cache) if "flowtop_ingress" in _builds_of(p)]
        assert len(tc) == 1 and again[tc[0].name][1] > written[tc[0].name][1]
        # the L3 pair is in that entry, its second stage
        stages = progcache.decode(tc[0].read_bytes()).stages
        assert len(stages) == 2 and {p.name for p in stages[1].progs} == {
            "flowtop_l3_ingress",
            "flowtop_l3_egress",
        }
    finally:
        if tun is not None:
            tun.close()
        ns.delete()


def _builds_of(p: Path) -> set[str]:
    return {q.name for s in progcache.decode(p.read_bytes()).stages for q in s.progs}


# -- one build in this process ---------------------------------------------------------------


@pytest.fixture
def bpf_copy(tmp_path: Path) -> Path:
    d = tmp_path / "bpf"
    shutil.copytree(BPF_DIR, d)
    return d


def _owner_request(bpf: Path, **kw: Any) -> Request:
    """The socket owner programs' build (three cgroup programs, an
    sk_storage map with BTF) from the sources in bpf."""
    req = OwnerCollector(**kw)._request()
    return replace(
        req,
        src=str(bpf / "owner.c"),
        cflags=[f.replace(str(BPF_DIR), str(bpf)) for f in req.cflags],
    )


def _build(req: Request) -> tuple[Loaded, bool, bool]:
    """(what it loaded, from the cache, a compiler child ran)."""
    b = Build(req)
    started = b.pid is not None
    try:
        loaded = b.wait()
    finally:
        b.close()
    assert started <= b.compiled
    return loaded, b.from_cache, b.compiled


def _describe(loaded: Loaded) -> tuple[Any, ...]:
    maps = {n: bpfsys.map_info(fd) for n, fd in loaded.maps.items()}
    return (
        sorted(loaded.progs),
        {n: (m.type, m.key_size, m.value_size, m.max_entries) for n, m in maps.items()},
        {n: struct.unpack_from("<I", bpfsys.obj_info(fd, 4))[0] for n, fd in loaded.progs.items()},
        loaded.meta,
    )


def test_a_build_from_the_cache_is_what_the_compile_loaded(bpf_copy: Path, cache: Path) -> None:
    req = _owner_request(bpf_copy)
    compiled_l, hit, compiled = _build(req)
    try:
        assert not hit and compiled
        assert len(progcache.entries(cache)) == 1
        cached, hit, compiled = _build(req)
        try:
            assert hit and not compiled  # no child at all
            assert _describe(cached) == _describe(compiled_l)
            # new objects, not the same ones
            ids = {bpfsys.prog_id_of(fd) for fd in compiled_l.progs.values()}
            assert ids.isdisjoint(bpfsys.prog_id_of(fd) for fd in cached.progs.values())
            # the kernel calls the programs what this request calls them
            assert {bpfsys.prog_name_of(fd) for fd in cached.progs.values()} == {
                n[:15] for n in cached.progs
            }
        finally:
            cached.close()
    finally:
        compiled_l.close()


def test_a_changed_header_or_map_size_misses(bpf_copy: Path, cache: Path) -> None:
    req = _owner_request(bpf_copy)
    _build(req)[0].close()
    one = set(_entries(cache))
    loaded, hit, _ = _build(req)
    loaded.close()
    assert hit
    with open(bpf_copy / "owner.h", "a") as f:
        f.write("\n/* changed */\n")
    loaded, hit, compiled = _build(req)
    loaded.close()
    assert not hit and compiled
    two = set(_entries(cache))
    assert len(two) == 2 and one < two
    loaded, hit, compiled = _build(_owner_request(bpf_copy, endpoints_size=1000))
    try:
        assert not hit and compiled
        assert bpfsys.map_info(loaded.maps["endpoints"]).max_entries == 1000
    finally:
        loaded.close()
    assert len(_entries(cache)) == 3


def _bpf_fds() -> set[str]:
    """This process's fds on BPF programs, maps and BTF."""
    out = set()
    for p in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(p).startswith(("anon_inode:bpf", "anon_inode:btf")):
                out.add(p.name)
        except OSError:
            pass
    return out


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x20
    return bytes(b)


def _version(data: bytes) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, 8, progcache.FORMAT + 7)
    return bytes(b)


def _refused(data: bytes) -> bytes:
    """The first program's first instruction an invalid opcode, the checksum right."""
    e = progcache.decode(data)
    p = e.stages[0].progs[0]
    p.insns = b"\xff" + p.insns[1:]
    return progcache.encode(e)


@pytest.fixture(scope="module")
def good_entry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, bytes]]:
    """One compile of the owner programs: (bpf copy, entry name, entry bytes)."""
    base = tmp_path_factory.mktemp("pcgood")
    bpf = base / "bpf"
    shutil.copytree(BPF_DIR, bpf)
    d = base / "cache"
    mp = pytest.MonkeyPatch()
    mp.setenv(progcache.DIR_ENV, str(d))
    mp.delenv(progcache.ENABLE_ENV, raising=False)
    try:
        _build(_owner_request(bpf))[0].close()
        (entry,) = progcache.entries(d)
        yield bpf, entry.name, entry.read_bytes()
    finally:
        mp.undo()


@pytest.mark.parametrize(
    "spoil",
    [_flip, lambda d: d[: len(d) // 3], _version, _refused],
    ids=["flipped", "truncated", "version", "refused"],
)
def test_a_bad_entry_compiles_and_is_replaced(
    good_entry: tuple[Path, str, bytes],
    cache: Path,
    spoil: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bpf, name, data = good_entry
    cache.mkdir(mode=0o700)
    bad = spoil(data)
    assert bad != data
    fd = os.open(cache / name, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, bad)
    os.close(fd)
    before = _bpf_fds()
    with caplog.at_level(logging.WARNING, "flowtop.kernel.build"):
        loaded, hit, compiled = _build(_owner_request(bpf))
    try:
        assert not hit and compiled
        assert len(loaded.progs) == 3 and loaded.maps.keys() == {"endpoints", "owner_counters"}
    finally:
        loaded.close()
    # nothing of the failed path left open
    assert _bpf_fds() == before
    assert [r for r in caplog.records if "compiling" in r.getMessage()], caplog.text
    fresh = (cache / name).read_bytes()
    assert fresh != bad
    progcache.decode(fresh)  # whole and current again
    loaded, hit, _ = _build(_owner_request(bpf))
    loaded.close()
    assert hit


def test_a_refused_l3_pair_is_that_stages_error_and_the_entry_goes(cache: Path) -> None:
    """The L3 pair loads from the cache after the first stage was handed
    over: its failure cannot fall back to a compile (that would fill other
    maps), so it is the stage's error, as a failed compile of it is."""
    from flowtop.errors import KernelFeatureError
    from flowtop.kernel.program import ProgramOptions, request

    req = request(ProgramOptions(flow_map_size=4096))
    b = Build(req)
    try:
        first, later = b.wait(), b.wait()
    finally:
        b.close()
    first.close()
    later.close()
    (entry,) = progcache.entries(cache)
    e = progcache.decode(entry.read_bytes())
    p = e.stages[1].progs[0]
    p.insns = b"\xff" + p.insns[1:]
    entry.write_bytes(progcache.encode(e))
    before = _bpf_fds()
    b = Build(req)
    try:
        first = b.wait()
        assert b.from_cache and not b.compiled
        assert bpfsys.map_info(first.maps["flows_a"]).max_entries == 4096
        with pytest.raises(KernelFeatureError, match="from the program cache"):
            b.wait()
        assert not entry.exists()
    finally:
        b.close()
        first.close()
    assert _bpf_fds() == before


@pytest.mark.parametrize("how", ["group-writable", "not root's"])
def test_an_untrusted_directory_is_ignored(
    bpf_copy: Path, cache: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache.mkdir(mode=0o700)
    if how == "group-writable":
        os.chmod(cache, 0o775)
    else:
        os.chown(cache, 65534, 65534)
    with caplog.at_level(logging.WARNING, "flowtop.kernel.progcache"):
        loaded, hit, compiled = _build(_owner_request(bpf_copy))
    try:
        assert not hit and compiled and len(loaded.progs) == 3
    finally:
        loaded.close()
    assert "program cache off" in caplog.text
    assert list(cache.iterdir()) == []  # neither read nor written


def test_off_in_the_config_or_env_writes_nothing(
    bpf_copy: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    progcache.configure(False)  # [collector] program_cache = false
    try:
        loaded, hit, compiled = _build(_owner_request(bpf_copy))
        loaded.close()
    finally:
        progcache.configure(True)
    assert not hit and compiled and not cache.exists()
    monkeypatch.setenv(progcache.ENABLE_ENV, "0")
    loaded, hit, compiled = _build(_owner_request(bpf_copy))
    loaded.close()
    assert not hit and compiled and not cache.exists()


# -- start-up order (issue 13) ---------------------------------------------------------------


def _prog_names() -> set[str]:
    """The kernel's names of the BPF programs this process holds fds on."""
    out = set()
    for p in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(p) == "anon_inode:bpf-prog":
                out.add(bpfsys.prog_name_of(int(p.name)))
        except OSError:
            pass
    return out


def _until(cond: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"no {what} after {timeout} s"
        time.sleep(0.01)


def test_a_hit_loads_the_first_stage_at_once_and_the_l3_pair_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a hit the TC program's first stage is in the kernel before anyone
    waits for it (the verifier runs beside the start's imports), and the L3
    pair is not loaded until ready() (the drain) or wait() asks for it.
    Ground truth: the programs this process holds fds on, by the kernel's
    names. The session's cache (conftest) is used: a first build writes
    the entry when it is not there yet."""
    from flowtop.kernel.program import ProgramOptions, request

    monkeypatch.delenv(progcache.ENABLE_ENV, raising=False)
    req = request(ProgramOptions())
    first_names = {n[:15] for n, _ in req.first}
    l3_names = {n[:15] for n, _ in req.later}
    path = progcache.entry_path(req)
    assert path is not None
    if not path.exists():
        b = Build(req)
        try:
            for loaded in (b.wait(), b.wait()):  # the entry is written before the last
                loaded.close()
        finally:
            b.close()
    assert path.exists()
    before = _bpf_fds()
    assert not (first_names | l3_names) & _prog_names()
    b = Build(req)
    try:
        assert b.pid is None  # a hit: no compiler child
        _until(lambda: first_names <= _prog_names(), 60, "first stage loaded without a wait()")
        assert not l3_names & _prog_names()
        first = b.wait()
        assert b.from_cache and not b.compiled
        assert {n[:15] for n in first.progs} == first_names
        time.sleep(1.5)  # a verifier run of the pair takes longer than nothing
        assert not l3_names & _prog_names(), "the L3 pair loaded before anyone asked"
        _until(b.ready, 60, "L3 pair after ready()")
        later = b.wait()
        assert sorted(later.progs) == sorted(n for n, _ in req.later)
        assert l3_names <= _prog_names()
        assert b.done
        later.close()
        first.close()
    finally:
        b.close()
    assert _bpf_fds() == before


def test_a_build_closed_while_its_hit_loads_leaves_nothing(bpf_copy: Path, cache: Path) -> None:
    req = _owner_request(bpf_copy)
    _build(req)[0].close()
    before = _bpf_fds()
    b = Build(req)
    assert b.pid is None
    b.close()  # the load thread may be mid-verifier: it is joined, what it made closed
    assert _bpf_fds() == before
    with pytest.raises(Exception, match="nothing more to load"):
        b.wait()


def _nices(pid: int) -> set[int]:
    """The niceness of each thread of pid (/proc/PID/task/TID/stat field 19)."""
    out = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out.add(int(f.read().rsplit(")", 1)[1].split()[16]))
    return out


def test_background_compiles_are_held_until_the_first_stage_is_there(
    bpf_copy: Path, cache: Path
) -> None:
    """A build of nice 0 (what the first attachment waits for: the TC
    program) compiling: a build of nice > 0 started meanwhile starts no
    child until the first one's first stage is here, then loads; one
    started when nothing is waited for is not held. Ground truth: the
    children in /proc and their niceness."""
    from flowtop.kernel.build import BACKGROUND_NICE, HELD_NICE

    fg_req = replace(_owner_request(bpf_copy), nice=0)
    bg_req = _owner_request(bpf_copy, endpoints_size=1000)
    assert bg_req.nice == BACKGROUND_NICE
    fg = Build(fg_req)
    bg = Build(bg_req)
    loaded: list[Loaded] = []
    try:
        # held while fg compiles: no child until fg's go (test_build.py has
        # the go, and HELD_NICE beside a cache hit)
        assert fg.pid is not None and bg.pid is None
        assert HELD_NICE not in _nices(fg.pid)
        loaded.append(fg.wait())
        loaded.append(bg.wait())
        assert bpfsys.map_info(loaded[-1].maps["endpoints"]).max_entries == 1000
        alone = Build(replace(bg_req, cflags=[*bg_req.cflags, "-DFT_ALONE=1"]))
        try:
            assert alone.pid is not None
            assert HELD_NICE not in _nices(alone.pid)  # nothing waited for: not held
            loaded.append(alone.wait())
        finally:
            alone.close()
    finally:
        fg.close()
        bg.close()
        for one in loaded:
            one.close()


# -- two processes missing the same entry at once (pytest-xdist) -----------------------------


def _other_process_build(req: Request) -> subprocess.Popen[str]:
    """A process of its own starting Build(req), printing its compiler
    child's pid, then waiting for a line on stdin before it waits for the
    build: a second process missing the same entry at the same time."""
    from .dump import RUN_DIR, python

    code = (
        "import sys\n"
        "from flowtop.kernel.build import Build, Request\n"
        "b = Build(Request.from_json(sys.argv[1].encode()))\n"
        "print(b.pid, flush=True)\n"
        "sys.stdin.readline()\n"
        "loaded = b.wait()\n"
        "b.close()\n"
        "print(sorted(loaded.progs), flush=True)\n"
    )
    return subprocess.Popen(
        [python(), "-c", code, req.to_json().decode()],
        cwd=RUN_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_second_process_missing_the_same_entry_waits_and_loads_it(
    bpf_copy: Path, cache: Path
) -> None:
    """Another process compiling an entry (it holds the entry's lock): a
    build of the same request here starts no child, waits, and loads what
    the other one wrote; one compile for two builds. Ground truth: the
    compiler processes (pids, whose children), the entry file, the kernel's
    programs."""
    req = _owner_request(bpf_copy)
    other = _other_process_build(req)
    assert other.stdin is not None and other.stdout is not None
    try:
        their_child = int(other.stdout.readline())
        b = Build(req)
        try:
            assert b.pid is None and not b.compiled  # waiting for the other one
            assert progcache.entries(cache) == []
            other.stdin.write("\n")
            other.stdin.flush()
            loaded = b.wait()
            try:
                assert b.from_cache and not b.compiled and b.pid is None
                assert len(progcache.entries(cache)) == 1
                assert sorted(loaded.progs) == sorted(n for n, _ in req.first)
                assert all(bpfsys.prog_id_of(fd) > 0 for fd in loaded.progs.values())
            finally:
                loaded.close()
        finally:
            b.close()
        assert other.stdout.readline().strip() == str(sorted(n for n, _ in req.first))
        # the entry, and no lock file left beside it
        assert [p.name for p in cache.iterdir()] == [p.name for p in progcache.entries(cache)]
    finally:
        other.stdin.close()
        assert other.wait(timeout=60) == 0
    assert not os.path.exists(f"/proc/{their_child}/stat") or _state(their_child) == "Z"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_killed_compile_leaves_no_lock_and_the_waiting_build_compiles(
    bpf_copy: Path, cache: Path
) -> None:
    """The other process's compiler killed (kill -9) before it wrote the
    entry: the lock goes with it (flock), and the build waiting here
    compiles itself and writes the entry."""
    import signal

    req = _owner_request(bpf_copy)
    other = _other_process_build(req)
    assert other.stdin is not None and other.stdout is not None
    try:
        their_child = int(other.stdout.readline())
        b = Build(req)
        try:
            assert b.pid is None
            os.kill(their_child, signal.SIGKILL)
            loaded = b.wait()
            try:
                assert b.compiled and not b.from_cache
                assert sorted(loaded.progs) == sorted(n for n, _ in req.first)
            finally:
                loaded.close()
        finally:
            b.close()
        assert len(progcache.entries(cache)) == 1
        assert [p.name for p in cache.iterdir()] == [p.name for p in progcache.entries(cache)]
    finally:
        other.kill()
        other.wait(timeout=30)
