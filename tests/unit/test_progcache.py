"""The program cache's pieces without a kernel: the entry format, the key's
inputs, relocation finding and patching, the directory's trust rules and
its bound (flowtop/kernel/progcache.py)."""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from flowtop.kernel import progcache
from flowtop.kernel.build import CGROUP_SKB_EGRESS, SCHED_CLS, Request
from flowtop.kernel.progcache import (
    CacheError,
    Entry,
    MapSpec,
    ProgSpec,
    StageSpec,
    Uncacheable,
)

INSN = struct.Struct("<BBhi")
EXIT = INSN.pack(0x95, 0, 0, 0)
MOV_R0_0 = INSN.pack(0xB7, 0, 0, 0)


def ld_map_fd(dst: int, fd: int) -> bytes:
    """LD_IMM64 dst, map fd (src_reg BPF_PSEUDO_MAP_FD): two slots."""
    return INSN.pack(0x18, dst | (1 << 4), 0, fd) + INSN.pack(0, 0, 0, 0)


def ld_imm64(dst: int, value: int, src: int = 0) -> bytes:
    return INSN.pack(0x18, dst | (src << 4), 0, value & 0xFFFFFFFF) + INSN.pack(
        0, 0, 0, value >> 32
    )


def _entry() -> Entry:
    insns = ld_map_fd(1, 40) + MOV_R0_0 + ld_map_fd(2, 41) + EXIT
    return Entry(
        maps=[
            MapSpec("inner", "inner", 1, 4, 8, 16, 0),
            MapSpec("outer", "outer", 12, 4, 4, 2, 0, inner="inner", btf=0, btf_key_type_id=3),
        ],
        btfs=[b"\x9f\xeb\x01\x00btf bytes"],
        stages=[
            StageSpec(
                [ProgSpec(0, "f", "f", 3, -1, "GPL", 0, insns, [(0, "inner"), (3, "outer")])],
                ["outer"],
                {"btf_offsets": {"X": 8}, "enums": {"e": {"A": 1}}},
            )
        ],
    )


# -- the entry format ------------------------------------------------------------------------


def test_an_entry_round_trips() -> None:
    entry = _entry()
    assert progcache.decode(progcache.encode(entry)) == entry


def test_the_header_is_magic_version_and_the_payloads_sha256() -> None:
    import hashlib

    data = progcache.encode(_entry())
    magic, version, digest = struct.unpack_from("<8sI32s", data)
    assert magic == b"FTPCACHE" and version == progcache.FORMAT
    assert digest == hashlib.sha256(data[44:]).digest()


@pytest.mark.parametrize("where", [0, 20, 44, -1])
def test_a_flipped_byte_is_refused(where: int) -> None:
    data = bytearray(progcache.encode(_entry()))
    data[where] ^= 0x01
    with pytest.raises(CacheError):
        progcache.decode(bytes(data))


@pytest.mark.parametrize("keep", [0, 10, 44, 45, 200])
def test_a_truncated_entry_is_refused(keep: int) -> None:
    data = progcache.encode(_entry())
    assert keep < len(data)
    with pytest.raises(CacheError):
        progcache.decode(data[:keep])


def test_another_format_version_is_refused() -> None:
    data = bytearray(progcache.encode(_entry()))
    struct.pack_into("<I", data, 8, progcache.FORMAT + 1)
    with pytest.raises(CacheError, match="format"):
        progcache.decode(bytes(data))


def test_a_payload_with_the_right_checksum_but_wrong_shape_is_refused() -> None:
    import hashlib

    payload = b'{"maps": [{"name": 1}], "btfs": [], "stages": []}'
    data = struct.pack("<8sI32s", b"FTPCACHE", progcache.FORMAT, hashlib.sha256(payload).digest())
    with pytest.raises(CacheError, match="malformed"):
        progcache.decode(data + payload)


# -- relocations -----------------------------------------------------------------------------


def test_relocations_are_every_map_fd_load_by_name() -> None:
    insns = ld_map_fd(1, 7) + MOV_R0_0 + ld_imm64(3, 7) + ld_map_fd(2, 9) + EXIT
    # the plain 64-bit constant 7 (src_reg 0) is no relocation, though it equals an fd
    assert progcache.find_relocs(insns, {7: "a", 9: "b"}) == [(0, "a"), (5, "b")]


def test_an_fd_that_is_no_known_map_is_uncacheable() -> None:
    with pytest.raises(Uncacheable, match="fd 8"):
        progcache.find_relocs(ld_map_fd(1, 8) + EXIT, {7: "a"})


@pytest.mark.parametrize("src", [2, 3, 4, 5, 6])  # map value, BTF id, func, idx, idx value
def test_other_ld_imm64_kinds_are_uncacheable(src: int) -> None:
    with pytest.raises(Uncacheable, match=f"src_reg {src}"):
        progcache.find_relocs(ld_imm64(1, 7, src) + EXIT, {7: "a"})


def test_patching_sets_each_relocation_to_the_new_fd_and_nothing_else() -> None:
    insns = ld_map_fd(1, 7) + MOV_R0_0 + ld_imm64(3, 0x1_0000_0007) + ld_map_fd(2, 9) + EXIT
    out = progcache.patch(insns, [(0, "a"), (5, "b")], {"a": 101, "b": 202})
    assert len(out) == len(insns)
    got = [INSN.unpack_from(out, i * 8) for i in range(len(out) // 8)]
    want = [INSN.unpack_from(insns, i * 8) for i in range(len(insns) // 8)]
    assert got[0] == (0x18, 0x11, 0, 101) and got[5] == (0x18, 0x12, 0, 202)
    assert got[1] == got[6] == (0, 0, 0, 0)  # the upper halves: an fd is 32 bits
    assert [g for i, g in enumerate(got) if i not in (0, 5)] == [
        w for i, w in enumerate(want) if i not in (0, 5)
    ]
    # what it found is what it patches: the result's relocations are the new fds
    assert progcache.find_relocs(out, {101: "a", 202: "b"}) == [(0, "a"), (5, "b")]


def test_a_relocation_that_points_elsewhere_is_a_cache_error() -> None:
    insns = MOV_R0_0 + ld_map_fd(1, 7) + EXIT
    for reloc in [(0, "a"), (3, "a"), (9, "a"), (1, "zz")]:
        with pytest.raises(CacheError):
            progcache.patch(insns, [reloc], {"a": 5})
    plain = ld_imm64(1, 7) + EXIT
    with pytest.raises(CacheError, match="not a map fd load"):
        progcache.patch(plain, [(0, "a")], {"a": 5})


# -- the key ---------------------------------------------------------------------------------


@pytest.fixture
def src_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A BPF source dir of its own, and a fixed environment part of the key."""
    d = tmp_path / "bpf"
    d.mkdir()
    (d / "prog.c").write_text('#include "hdr.h"\nint f(void *ctx) { return X; }\n')
    (d / "hdr.h").write_text("#define X 0\n")
    monkeypatch.setattr(progcache, "_environment", lambda: ("kernel", "bcc"))
    return d


def _req(d: Path, name: str = "ftown_123", **kw: object) -> Request:
    base = Request(
        src=str(d / "prog.c"),
        cflags=[f"-I{d}", f"-DFT_NAME={name}", "-DFT_SIZE=64"],
        first=[(name, CGROUP_SKB_EGRESS)],
        maps=["m"],
        what="the test program",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_the_key_is_stable_and_ignores_program_names_and_niceness(src_dir: Path) -> None:
    key = progcache.cache_key(_req(src_dir))
    assert len(key) == 64 and key == progcache.cache_key(_req(src_dir))
    # the pid in a program's name (and its -D) is what the kernel calls it, not what it does
    assert progcache.cache_key(_req(src_dir, name="ftown_999")) == key
    assert progcache.cache_key(_req(src_dir, nice=5)) == key


def test_every_build_input_changes_the_key(src_dir: Path) -> None:
    key = progcache.cache_key(_req(src_dir))
    others = {
        "cflag": _req(src_dir, cflags=[f"-I{src_dir}", "-DFT_NAME=ftown_123", "-DFT_SIZE=65"]),
        "kind": _req(src_dir, first=[("ftown_123", SCHED_CLS)]),
        "maps": _req(src_dir, maps=["m", "n"]),
        "later": _req(src_dir, later=[("g", SCHED_CLS)]),
        "later cflags": _req(src_dir, later_cflags=["-DL3=1"]),
        "sockops": _req(src_dir, sockops=True),
        "btf offsets": _req(src_dir, btf_offsets=[("O", "sk_buff", "len", 4)]),
    }
    keys = {what: progcache.cache_key(r) for what, r in others.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys), keys


def test_a_changed_or_added_header_changes_the_key(src_dir: Path) -> None:
    key = progcache.cache_key(_req(src_dir))
    (src_dir / "hdr.h").write_text("#define X 1\n")
    changed = progcache.cache_key(_req(src_dir))
    (src_dir / "new.h").write_text("\n")
    added = progcache.cache_key(_req(src_dir))
    (src_dir / "new.h").rename(src_dir / "renamed.h")
    renamed = progcache.cache_key(_req(src_dir))
    assert len({key, changed, added, renamed}) == 4


def test_an_include_dir_besides_the_sources_is_part_of_the_key(
    src_dir: Path, tmp_path: Path
) -> None:
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "extra.h").write_text("1\n")
    req = _req(src_dir, cflags=[f"-I{src_dir}", f"-I{inc}", "-DFT_NAME=ftown_123"])
    key = progcache.cache_key(req)
    (inc / "extra.h").write_text("2\n")
    assert progcache.cache_key(req) != key


def test_the_environment_covers_kernel_headers_btf_and_bcc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real environment part: bcc's libbcc.so (its size and mtime) and the
    kernel headers' resolved path are in it; a missing input is OSError."""
    progcache._environment.cache_clear()
    try:
        try:
            env = progcache._environment()
        except OSError as exc:
            pytest.skip(f"no build environment here: {exc}")
        u = os.uname()
        assert env[0] == u.release and env[1] == u.version
        assert env[4] == os.path.realpath(f"/lib/modules/{u.release}/build")
        assert [s[0] for s in env[5]][:1] == ["Makefile"]  # the headers' stamps
        lib = tmp_path / "libbcc.so.0"
        lib.write_bytes(b"x")
        monkeypatch.setattr(progcache, "_libbcc", lambda: lib)
        progcache._environment.cache_clear()
        one = progcache._environment()
        lib.write_bytes(b"xy")
        progcache._environment.cache_clear()
        assert progcache._environment() != one
        fake = os.uname_result(("Linux", "h", "no-such-kernel", u.version, u.machine))
        monkeypatch.setattr(os, "uname", lambda: fake)
        progcache._environment.cache_clear()
        with pytest.raises(OSError, match="headers"):
            progcache._environment()
    finally:
        progcache._environment.cache_clear()


# -- the directory ---------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv(progcache.DIR_ENV, str(d))
    monkeypatch.delenv(progcache.ENABLE_ENV, raising=False)
    monkeypatch.setattr(progcache, "_warned", set())
    return d


def test_the_directory_is_created_private(cache: Path) -> None:
    assert progcache.cache_dir() == cache
    assert cache.stat().st_mode & 0o777 == 0o700


def test_off_by_env_or_config(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(progcache.ENABLE_ENV, "0")
    assert progcache.cache_dir() is None and not cache.exists()
    monkeypatch.delenv(progcache.ENABLE_ENV)
    progcache.configure(False)
    try:
        assert progcache.cache_dir() is None and not cache.exists()
    finally:
        progcache.configure(True)
    assert progcache.cache_dir() == cache


def test_a_group_writable_directory_is_not_trusted(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache.mkdir(mode=0o700)
    os.chmod(cache, 0o770)
    with caplog.at_level(logging.WARNING, "flowtop.kernel.progcache"):
        assert progcache.cache_dir() is None
        assert progcache.cache_dir() is None
    warnings = [r for r in caplog.records if "program cache off" in r.getMessage()]
    assert len(warnings) == 1 and "0770" in warnings[0].getMessage()  # once


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_directory_of_another_user_is_not_trusted(cache: Path) -> None:
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    assert progcache.cache_dir() is None


def test_an_entry_others_may_write_is_refused(cache: Path) -> None:
    d = progcache.cache_dir()
    assert d is not None
    path = d / ("0" * 64 + progcache.SUFFIX)
    progcache.write(path, _entry())
    assert path.stat().st_mode & 0o777 == 0o600
    assert progcache.read(path) == _entry()
    os.chmod(path, 0o622)
    with pytest.raises(CacheError, match="writable only by it"):
        progcache.read(path)
    assert progcache.read(d / "missing.ftpc") is None


def test_writes_are_atomic_and_the_directory_is_bounded(cache: Path) -> None:
    d = progcache.cache_dir()
    assert d is not None
    paths = [d / (f"{i:064x}" + progcache.SUFFIX) for i in range(5)]
    for i, p in enumerate(paths):
        progcache.write(p, _entry())
        os.utime(p, ns=(i * 10**9, i * 10**9))  # written in this order
    assert progcache.entries(d) == paths
    progcache.read(paths[0])  # used just now: the most recent
    progcache.prune(d, keep=3)
    assert progcache.entries(d) == sorted([paths[0], paths[3], paths[4]])
    assert not [p for p in d.iterdir() if p.name.startswith(".tmp-")]


def test_the_compile_lock_is_one_holder_and_goes_with_its_fd(cache: Path) -> None:
    """try_lock: the first open of an entry's lock file holds it, a second
    (another process, or another build here) is told it is held, and the
    lock is free again once the holder's fd is closed (a dead holder's
    are); the lock file is not an entry; a directory it cannot be made in
    is UNLOCKED (compile anyway)."""
    d = progcache.cache_dir()
    assert d is not None
    path = d / ("1" * 64 + progcache.SUFFIX)
    fd = progcache.try_lock(path)
    assert fd is not None and fd >= 0
    try:
        assert progcache.try_lock(path) is None
        assert progcache.lock_path(path).exists()
        assert progcache.entries(d) == []
    finally:
        os.close(fd)
    again = progcache.try_lock(path)
    assert again is not None and again >= 0
    os.close(again)
    assert progcache.try_lock(d / "nowhere" / path.name) == progcache.UNLOCKED


def test_pruning_an_entry_removes_its_lock_file(cache: Path) -> None:
    d = progcache.cache_dir()
    assert d is not None
    paths = [d / (f"{i:064x}" + progcache.SUFFIX) for i in range(3)]
    for i, p in enumerate(paths):
        progcache.write(p, _entry())
        fd = progcache.try_lock(p)
        assert fd is not None and fd >= 0
        os.close(fd)
        os.utime(p, ns=(i * 10**9, i * 10**9))
    progcache.prune(d, keep=2)
    assert progcache.entries(d) == paths[1:]
    assert not progcache.lock_path(paths[0]).exists()
    assert progcache.lock_path(paths[1]).exists()


def test_values_out_of_range_are_a_cache_error_before_any_bpf_call(src_dir: Path) -> None:
    """A payload of the right shape and checksum but with a size no bpf_attr
    can hold: CacheError (the caller compiles), not a crash."""
    entry = _entry()
    entry.btfs = []
    entry.maps = [MapSpec("m", "m", 1, -1, 8, 16, 0)]
    with pytest.raises(CacheError, match="malformed"):
        progcache.CachedLoad(entry, _req(src_dir))
