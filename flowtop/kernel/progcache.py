"""The program cache: a start where nothing changed loads what the last compile loaded.

bcc compiles every source on every start (it has no cache: iovisor/bcc#534,
#3120), seconds of clang. After a successful compile and load the build
child (compiler.py) writes an entry describing what it loaded: each
program's type, expected attach type, license and instructions as loaded,
with the instructions that load a map fd (LD_IMM64, src_reg
BPF_PSEUDO_MAP_FD) listed as relocations by map name; each map's creation
attributes (type, sizes, flags, the inner map of a map-in-map, BTF where the
map had it); the meta the child reports. build.Build looks the entry up
before it starts a child: on a hit this process creates the maps, patches
each relocation with the new fd and loads the programs with raw bpf(2)
(load()), and no child, no bcc, runs at all. Every failure of that path (a
refused program, a map create error, a corrupt or truncated entry) closes
what it created, removes the entry, and falls back to the compile, which
writes a fresh one.

Key (cache_key()): sha256 over FORMAT, flowtop's version, the Request (its
program names, which carry this process's pid, replaced by their index:
they are what the kernel calls the programs, not what they do), the names
and contents of every file in the source's directory and -I directories,
compiler.py and btf.py (they make the meta), the kernel (uname, the BTF's
size and sha256), the kernel headers bcc compiles against, and bcc's
version and libbcc.so's path, size and mtime. Anything unreadable: no cache
for this start.

Where: $FLOWTOP_CACHE_DIR, else /var/cache/flowtop (created 0700).
$FLOWTOP_PROGRAM_CACHE=0 or [collector] program_cache = false (configure())
turn it off. A directory or entry not owned by root (or this user) or
writable by group or others is never read (a cached program is code the
kernel runs): one warning, then the compile. An entry is one file, written
atomically (temp + rename, 0600): MAGIC, FORMAT, the payload's sha256, the
payload (JSON). At most MAX_ENTRIES, the least recently used removed.
Beside an entry, a dot file is its compile lock (try_lock(): flock, held
by the compiling child until it exits; removed once the entry is written).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes as ct
import hashlib
import json
import logging
import os
import platform
import stat
import struct
import sysconfig
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flowtop
from flowtop.kernel import bpfsys

if TYPE_CHECKING:
    from flowtop.kernel.build import Loaded, Request

log = logging.getLogger(__name__)

FORMAT = 1
MAGIC = b"FTPCACHE"
_HEADER = struct.Struct("<8sI32s")
SUFFIX = ".ftpc"
MAX_ENTRIES = 32
DEFAULT_DIR = "/var/cache/flowtop"
DIR_ENV = "FLOWTOP_CACHE_DIR"
ENABLE_ENV = "FLOWTOP_PROGRAM_CACHE"  # "0": off (tests of the compile path)
# Set by build.Build for its child: the entry file to write (absent: write none).
ENTRY_ENV = "FLOWTOP_PROGCACHE_ENTRY"

# bpf_insn: code, dst_reg:4 | src_reg:4, off, imm
_INSN = struct.Struct("<BBhi")
BPF_LD_IMM64 = 0x18
BPF_PSEUDO_MAP_FD = 1
# Map types creation needs more than sizes for.
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13

_enabled = True
_warned: set[str] = set()


class CacheError(Exception):
    """An entry that cannot be used (the message says why)."""


class Uncacheable(Exception):
    """What a compile loaded cannot be described by an entry (the message says why)."""


def configure(enabled: bool) -> None:
    """[collector] program_cache: False, and the cache is never read nor written."""
    global _enabled
    _enabled = enabled


# -- the entry -------------------------------------------------------------------------------


@dataclass
class MapSpec:
    """One map as creation needs it. inner: the map whose attributes a
    map-in-map's inner maps have (created first, passed as inner_map_fd);
    btf: index into Entry.btfs, -1 none."""

    name: str
    kname: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    map_extra: int = 0
    inner: str = ""
    btf: int = -1
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


@dataclass
class ProgSpec:
    """One program. slot: its index in the request's first + later lists
    (its name is the request's), -1 for a tracepoint program, named name
    (the function) and kname (what the kernel calls it). relocs: (insn
    index, map name) of every LD_IMM64 of a map fd."""

    slot: int
    name: str
    kname: str
    prog_type: int
    attach_type: int
    license: str
    kern_version: int
    insns: bytes
    relocs: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class StageSpec:
    """One message of the build: its programs, the maps it hands over, its meta."""

    progs: list[ProgSpec]
    maps: list[str]
    meta: dict[str, Any]


@dataclass
class Entry:
    maps: list[MapSpec]
    btfs: list[bytes]
    stages: list[StageSpec]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def encode(entry: Entry) -> bytes:
    """The file's bytes: header (MAGIC, FORMAT, sha256 of the payload) and payload."""
    doc = {
        "maps": [asdict(m) for m in entry.maps],
        "btfs": [_b64(b) for b in entry.btfs],
        "stages": [
            {
                "progs": [{**asdict(p), "insns": _b64(p.insns)} for p in s.progs],
                "maps": s.maps,
                "meta": s.meta,
            }
            for s in entry.stages
        ],
    }
    payload = json.dumps(doc, sort_keys=True).encode()
    return _HEADER.pack(MAGIC, FORMAT, hashlib.sha256(payload).digest()) + payload


def decode(data: bytes) -> Entry:
    """The entry in data; CacheError when it is not a whole, current, intact one."""
    if len(data) < _HEADER.size:
        raise CacheError("truncated header")
    magic, version, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CacheError("not a program cache entry")
    if version != FORMAT:
        raise CacheError(f"format {version}, not {FORMAT}")
    payload = data[_HEADER.size :]
    if hashlib.sha256(payload).digest() != digest:
        raise CacheError("checksum mismatch (truncated or corrupt)")
    try:
        doc = json.loads(payload)
        maps = [MapSpec(**m) for m in doc["maps"]]
        btfs = [base64.b64decode(b, validate=True) for b in doc["btfs"]]
        stages = []
        for s in doc["stages"]:
            progs = []
            for p in s["progs"]:
                p = dict(p)
                p["insns"] = base64.b64decode(p["insns"], validate=True)
                p["relocs"] = [(int(i), str(n)) for i, n in p["relocs"]]
                progs.append(ProgSpec(**p))
            stages.append(StageSpec(progs, list(s["maps"]), dict(s["meta"])))
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"malformed payload: {exc}") from None
    return Entry(maps, btfs, stages)


# -- the key ---------------------------------------------------------------------------------


def _canonical_request(req: Request) -> dict[str, Any]:
    """The request's fields that change the build, program names replaced
    by their slot (in the program lists and as -D values)."""
    d = dict(req.__dict__)
    d.pop("nice", None)  # how fast, not what
    names = {name: f"\0prog{i}" for i, (name, _) in enumerate([*req.first, *req.later])}

    def flags(cflags: list[str]) -> list[str]:
        out = []
        for f in cflags:
            macro, eq, value = f.partition("=")
            out.append(f"{macro}={names[value]}" if eq and value in names else f)
        return out

    d["first"] = [[names[n], kind] for n, kind in req.first]
    d["later"] = [[names[n], kind] for n, kind in req.later]
    d["cflags"] = flags(req.cflags)
    d["later_cflags"] = flags(req.later_cflags)
    return d


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dir_digest(d: Path) -> list[tuple[str, str]]:
    return [(p.name, _file_digest(p)) for p in sorted(d.iterdir()) if p.is_file()]


def _source_dirs(req: Request) -> list[Path]:
    dirs = [Path(req.src).resolve().parent]
    for f in [*req.cflags, *req.later_cflags]:
        if f.startswith("-I"):
            p = Path(f[2:]).resolve()
            if p not in dirs:
                dirs.append(p)
    return dirs


def _libbcc() -> Path:
    """libbcc.so.0 as the dynamic loader finds it (bcc loads it by that name)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [*os.environ.get("LD_LIBRARY_PATH", "").split(":")]
    for base in ("/lib", "/usr/lib", "/usr/local/lib"):
        dirs += [f"{base}/{multiarch}", base]
    dirs.append("/lib64")
    for d in dirs:
        if d and os.path.exists(p := os.path.join(d, "libbcc.so.0")):
            return Path(p).resolve()
    raise OSError("libbcc.so.0 not found")


@lru_cache(maxsize=1)
def _environment() -> tuple[Any, ...]:
    """What every key shares: the kernel, its headers, bcc, the compiler's own code."""
    import importlib.util

    u = os.uname()
    btf = Path("/sys/kernel/btf/vmlinux")
    btf_id: Any = [btf.stat().st_size, _file_digest(btf)] if btf.exists() else None
    headers = os.path.realpath(f"/lib/modules/{u.release}/build")
    if not os.path.isdir(headers):
        raise OSError(f"no kernel headers at {headers}")
    # the same path with other contents (a package reinstalled): their stamps
    stamps = []
    for name in ("Makefile", "include/generated/autoconf.h", "include/config/kernel.release"):
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(os.path.join(headers, name))
            stamps.append([name, st.st_size, st.st_mtime_ns])
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("bcc is not importable")
    bcc_dir = Path(next(iter(spec.submodule_search_locations)))
    lib = _libbcc()
    st = lib.stat()
    here = Path(__file__).resolve().parent
    return (
        u.release,
        u.version,
        platform.machine(),
        btf_id,
        headers,
        stamps,
        (bcc_dir / "version.py").read_text(),
        _file_digest(bcc_dir / "__init__.py"),
        [str(lib), st.st_size, st.st_mtime_ns],
        [_file_digest(here / n) for n in ("compiler.py", "btf.py", "progcache.py")],
    )


def cache_key(req: Request) -> str:
    """The entry's key (see the module doc); OSError when an input is unreadable."""
    inputs = [
        FORMAT,
        flowtop.__version__,
        _canonical_request(req),
        [(str(d), _dir_digest(d)) for d in _source_dirs(req)],
        _environment(),
    ]
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


# -- the directory ---------------------------------------------------------------------------


def _warn_once(what: str, msg: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning(msg)


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def enabled() -> bool:
    """Neither the config nor $FLOWTOP_PROGRAM_CACHE turned the cache off."""
    return _enabled and os.environ.get(ENABLE_ENV, "1") not in ("0", "off", "false", "no")


def cache_dir(create: bool = True) -> Path | None:
    """The cache directory to use, or None (off, not creatable, not trusted)."""
    if not enabled():
        return None
    d = Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)
    try:
        if create and not d.exists():
            os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.stat(d)
    except OSError as exc:
        if create:
            _warn_once(str(d), f"program cache off: cannot create {d}: {exc.strerror}")
        return None
    if not stat.S_ISDIR(st.st_mode) or not _trusted(st):
        _warn_once(
            str(d),
            f"program cache off: {d} is not a directory owned by root and writable "
            f"only by its owner (mode {st.st_mode & 0o777:04o}, uid {st.st_uid})",
        )
        return None
    return d


def entry_path(req: Request) -> Path | None:
    """Where req's entry is (or would be written); None: no cache for this build."""
    d = cache_dir()
    if d is None:
        return None
    try:
        return d / (cache_key(req) + SUFFIX)
    except (OSError, ValueError) as exc:  # ValueError: a file that is not text
        log.info("program cache off for %s: %s", req.what, exc)
        return None


def read(path: Path) -> Entry | None:
    """The entry at path; None when there is none. CacheError when it is unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"cannot open: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or not _trusted(st):
            raise CacheError("not a regular file owned by root and writable only by it")
        try:
            data = f.read()
        except OSError as exc:
            raise CacheError(f"cannot read: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: pruned last
    return decode(data)


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write(path: Path, entry: Entry) -> None:
    """Writes entry atomically (temp + rename, 0600), then prunes the directory."""
    data = encode(entry)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove(Path(tmp))
        raise
    prune(path.parent)


# -- the compile lock ------------------------------------------------------------------------

LOCK_SUFFIX = ".lock"
# try_lock(): the lock could not be taken nor checked (no file): compile unlocked.
UNLOCKED = -1


def lock_path(path: Path) -> Path:
    """The lock file of the entry at path (a dot file: entries() and prune()
    never count it)."""
    return path.with_name("." + path.name + LOCK_SUFFIX)


def try_lock(path: Path) -> int | None:
    """The compile lock of the entry at path, so that two processes missing
    it at once (pytest-xdist's workers share a cache) do not both compile
    it: an fd holding flock(LOCK_EX) on its lock file, which the compiler
    child inherits and holds until it exits, after it wrote the entry and
    removed the file (the kernel drops a flock with its last fd: a crash
    leaves no stale lock, at most the empty file).
    None: another process holds it (it is compiling that entry now);
    UNLOCKED: no lock file here (unwritable directory, …): compile anyway."""
    import fcntl

    try:
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return UNLOCKED
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        return UNLOCKED
    return fd


def entries(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*" + SUFFIX) if not p.name.startswith("."))


def prune(d: Path, keep: int = MAX_ENTRIES) -> None:
    """At most keep entries: the least recently used go."""
    found = []
    for p in entries(d):
        with contextlib.suppress(OSError):
            found.append((p.stat().st_mtime_ns, p))
    found.sort()
    for _, p in found[: max(0, len(found) - keep)]:
        remove(p)
        remove(lock_path(p))


# -- loading (this process) ------------------------------------------------------------------

# union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size,
# max_entries, map_flags, inner_map_fd, numa_node, map_name[16],
# map_ifindex, btf_fd, btf_key_type_id, btf_value_type_id,
# btf_vmlinux_value_type_id, map_extra (u64 at 64)
_MAP_CREATE = struct.Struct("<IIIIIII16sIIIII4xQ")
# BPF_BTF_LOAD: btf, btf_log_buf, btf_size, btf_log_size, btf_log_level
_BTF_LOAD = struct.Struct("<QQIII4x")
# BPF_PROG_LOAD up to expected_attach_type: prog_type, insn_cnt, insns,
# license, log_level, log_size, log_buf, kern_version, prog_flags,
# prog_name[16], prog_ifindex, expected_attach_type
_PROG_LOAD = struct.Struct("<IIQQIIQII16sII")
_ATTR_SIZE = 128


def _attr(layout: struct.Struct, *values: Any) -> ct.Array[ct.c_char]:
    buf = ct.create_string_buffer(_ATTR_SIZE)
    layout.pack_into(buf, 0, *values)
    return buf


def _btf_load(blob: bytes) -> int:
    data = ct.create_string_buffer(blob, len(blob))
    return bpfsys.bpf(bpfsys.BPF_BTF_LOAD, _attr(_BTF_LOAD, ct.addressof(data), 0, len(blob), 0, 0))


def _create_map(m: MapSpec, inner_fd: int, btf_fd: int) -> int:
    btf = btf_fd if m.btf >= 0 else 0
    attr = _attr(
        _MAP_CREATE,
        m.type, m.key_size, m.value_size, m.max_entries, m.flags,
        inner_fd if m.inner else 0, 0, m.kname.encode()[:15], 0,
        btf, m.btf_key_type_id if btf else 0, m.btf_value_type_id if btf else 0, 0, m.map_extra,
    )  # fmt: skip
    return bpfsys.bpf(bpfsys.BPF_MAP_CREATE, attr)


def patch(insns: bytes, relocs: Sequence[tuple[int, str]], fds: dict[str, int]) -> bytes:
    """insns with each relocation's LD_IMM64 loading fds[map name];
    CacheError when a relocation points at anything else."""
    out = bytearray(insns)
    n = len(insns) // _INSN.size
    for index, name in relocs:
        if not 0 <= index < n - 1 or name not in fds:
            raise CacheError(f"relocation {index} -> {name!r} is out of place")
        code, regs, off, _imm = _INSN.unpack_from(out, index * _INSN.size)
        if code != BPF_LD_IMM64 or regs >> 4 != BPF_PSEUDO_MAP_FD:
            raise CacheError(f"relocation {index} is not a map fd load")
        _INSN.pack_into(out, index * _INSN.size, code, regs, off, fds[name])
        nxt = (index + 1) * _INSN.size
        c2, r2, o2, _ = _INSN.unpack_from(out, nxt)
        _INSN.pack_into(out, nxt, c2, r2, o2, 0)
    return bytes(out)


def _load_prog(p: ProgSpec, name: str, insns: bytes) -> int:
    code = ct.create_string_buffer(insns, len(insns))
    lic = ct.create_string_buffer(p.license.encode())
    attr = _attr(
        _PROG_LOAD,
        p.prog_type, len(insns) // _INSN.size, ct.addressof(code), ct.addressof(lic),
        0, 0, 0, p.kern_version, 0, name.encode()[:15], 0, max(0, p.attach_type),
    )  # fmt: skip
    return bpfsys.bpf(bpfsys.BPF_PROG_LOAD, attr)


# What a well-formed payload with values out of range raises while it is packed.
_MALFORMED = (struct.error, TypeError, ValueError, OverflowError, AttributeError)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class CachedLoad:
    """An entry loaded in this process, stage by stage (build.Build on a hit).

    The constructor creates the maps (and their BTF); stage(i) loads stage
    i's programs, each in a thread of its own (the verifier is most of a
    start from the cache, and a root process's loads run in parallel), and
    returns the Loaded the build's message i would have brought. Any
    failure is CacheError, with whatever that call created closed. close()
    closes this object's own fds: the programs hold the maps they use, the
    Loadeds hold dups of the maps they hand over.
    """

    def __init__(self, entry: Entry, req: Request) -> None:
        if len(entry.stages) != (2 if req.later else 1):
            raise CacheError("the stages differ from the request's")
        self.entry = entry
        self.names = [n for n, _ in [*req.first, *req.later]]
        self._btf_fds: list[int] = []
        self.maps: dict[str, int] = {}
        try:
            self._create()
        except _MALFORMED as exc:
            self.close()
            raise CacheError(f"malformed entry: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        for blob in self.entry.btfs:
            try:
                self._btf_fds.append(_btf_load(blob))
            except OSError as exc:
                raise CacheError(f"cannot load a map's BTF: {exc.strerror}") from None
        for m in self.entry.maps:
            if m.inner and m.inner not in self.maps:
                raise CacheError(f"map {m.name}: its inner map {m.inner} comes later")
            if m.btf >= len(self._btf_fds):
                raise CacheError(f"map {m.name}: no BTF {m.btf}")
            btf_fd = self._btf_fds[m.btf] if m.btf >= 0 else 0
            try:
                self.maps[m.name] = _create_map(m, self.maps.get(m.inner, 0), btf_fd)
            except OSError as exc:
                raise CacheError(f"cannot create map {m.name}: {exc.strerror}") from None

    def stage(self, index: int) -> Loaded:
        from flowtop.kernel.build import Loaded

        spec = self.entry.stages[index]
        jobs = []
        for p in spec.progs:
            if p.slot >= len(self.names):
                raise CacheError(f"program slot {p.slot} is not in the request")
            name = self.names[p.slot] if p.slot >= 0 else p.name
            jobs.append((p, name, name if p.slot >= 0 else p.kname))
        results: list[int | Exception] = [CacheError("not loaded")] * len(jobs)

        def run(i: int) -> None:
            p, _name, kname = jobs[i]
            try:
                results[i] = _load_prog(p, kname, patch(p.insns, p.relocs, self.maps))
            except OSError as exc:
                results[i] = CacheError(f"the kernel refused {kname}: {exc.strerror}")
            except CacheError as exc:
                results[i] = exc
            except _MALFORMED as exc:
                results[i] = CacheError(f"malformed entry: {exc}")

        threads = [
            threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(jobs))
        ]
        for t in threads:
            t.start()
        if jobs:
            run(0)
        for t in threads:
            t.join()
        fds = [r for r in results if isinstance(r, int)]
        errors = [r for r in results if not isinstance(r, int)]
        if errors:
            _close_all(fds)
            raise errors[0]
        loaded = Loaded(meta=dict(spec.meta))
        loaded.progs = {name: fd for (_p, name, _k), fd in zip(jobs, fds, strict=True)}
        try:
            for mname in spec.maps:
                if mname not in self.maps:
                    raise CacheError(f"no map {mname}")
                loaded.maps[mname] = os.dup(self.maps[mname])
        except BaseException:
            loaded.close()
            raise
        return loaded

    def close(self) -> None:
        _close_all([*self._btf_fds, *self.maps.values()])
        self._btf_fds.clear()
        self.maps.clear()


def load(entry: Entry, req: Request) -> list[Loaded]:
    """Every stage of entry, loaded here, all or nothing (CacheError)."""
    cached = CachedLoad(entry, req)
    out: list[Loaded] = []
    try:
        for i in range(len(entry.stages)):
            out.append(cached.stage(i))
    except BaseException:
        for loaded in out:
            loaded.close()
        raise
    finally:
        cached.close()
    return out


# -- describing a load (the build child) -----------------------------------------------------

# struct bpf_map_info: type, id, key_size, value_size, max_entries,
# map_flags, name[16], ifindex, btf_vmlinux_value_type_id, netns_dev,
# netns_ino, btf_id, btf_key_type_id, btf_value_type_id, btf_vmlinux_id,
# map_extra
_MAP_INFO = struct.Struct("<IIIIII16sIIQQIIIIQ")
# struct bpf_btf_info: btf, btf_size, id
_BTF_INFO = struct.Struct("<QII")


def map_spec(name: str, fd: int, btfs: dict[int, int], blobs: list[bytes]) -> MapSpec:
    """The map behind fd as creation needs it; its BTF appended to blobs
    once per BTF object (btfs: BTF id -> index). Uncacheable for what the
    cache cannot recreate."""
    (typ, _id, ks, vs, n, flags, kname, ifindex, vmlinux_value, _dev, _ino,
     btf_id, btf_key, btf_value, _vmlinux_id, extra) = _MAP_INFO.unpack(
        bpfsys.obj_info(fd, _MAP_INFO.size)
    )  # fmt: skip
    if ifindex or vmlinux_value:
        raise Uncacheable(f"map {name} is offloaded or a struct_ops map")
    m = MapSpec(
        name, kname.split(b"\0", 1)[0].decode(), typ, ks, vs, n, flags, extra,
        btf_key_type_id=btf_key, btf_value_type_id=btf_value,
    )  # fmt: skip
    if btf_id:
        if btf_id not in btfs:
            btfs[btf_id] = len(blobs)
            blobs.append(_btf_blob(btf_id))
        m.btf = btfs[btf_id]
    return m


def _btf_blob(btf_id: int) -> bytes:
    attr = ct.create_string_buffer(12)
    struct.pack_into("<I", attr, 0, btf_id)
    fd = bpfsys.bpf(bpfsys.BPF_BTF_GET_FD_BY_ID, attr)
    try:
        size = _BTF_INFO.unpack_from(bpfsys.obj_info(fd, _BTF_INFO.size))[1]
        buf = ct.create_string_buffer(size)
        info = ct.create_string_buffer(_BTF_INFO.size)
        _BTF_INFO.pack_into(info, 0, ct.addressof(buf), size, 0)
        bpfsys.obj_info_into(fd, info)
        return buf.raw
    finally:
        os.close(fd)


def find_relocs(insns: bytes, fd_names: dict[int, str]) -> list[tuple[int, str]]:
    """(index, map name) of every LD_IMM64 of a map fd in insns; Uncacheable
    for an LD_IMM64 of anything else the kernel resolves (map values, BTF
    ids, …) or of an fd that is no known map."""
    if len(insns) % _INSN.size:
        raise Uncacheable("instructions are not whole")
    relocs = []
    i, n = 0, len(insns) // _INSN.size
    while i < n:
        code, regs, _off, imm = _INSN.unpack_from(insns, i * _INSN.size)
        if code == BPF_LD_IMM64:
            src = regs >> 4
            if src == BPF_PSEUDO_MAP_FD:
                if imm not in fd_names:
                    raise Uncacheable(f"instruction {i} loads fd {imm}, which is no known map")
                relocs.append((i, fd_names[imm]))
            elif src != 0:
                raise Uncacheable(f"instruction {i} is an LD_IMM64 with src_reg {src}")
            i += 2
            continue
        i += 1
    return relocs


def _probe_inner(outer_fd: int, key_size: int, candidates: dict[str, int]) -> str:
    """A map whose attributes the inner maps of the map-in-map outer_fd
    have: the first candidate the kernel accepts as an element (removed
    again at once: the map is still the child's own)."""
    key = ct.create_string_buffer(max(key_size, 4))
    for name, fd in candidates.items():
        if fd == outer_fd:
            continue
        value = ct.c_uint32(fd)
        attr = ct.create_string_buffer(32)
        struct.pack_into("<I4xQQQ", attr, 0, outer_fd, ct.addressof(key), ct.addressof(value), 0)
        try:
            bpfsys.bpf(bpfsys.BPF_MAP_UPDATE_ELEM, attr)
        except OSError:
            continue
        attr = ct.create_string_buffer(32)
        struct.pack_into("<I4xQ", attr, 0, outer_fd, ct.addressof(key))
        bpfsys.bpf(bpfsys.BPF_MAP_DELETE_ELEM, attr)
        return name
    raise Uncacheable("a map-in-map's inner map is none of the source's maps")


class Recorder:
    """Collects an entry in the build child, stage by stage (compiler.py
    calls it; it never imports bcc itself: the caller passes what bcc said)."""

    def __init__(self) -> None:
        self.maps: dict[str, MapSpec] = {}
        self.map_fds: dict[str, int] = {}  # the first fd seen of each map
        self.fd_names: dict[int, str] = {}  # every fd seen, of every module
        self.map_ids: dict[str, int] = {}
        self.btf_ids: dict[int, int] = {}
        self.btfs: list[bytes] = []
        self.stages: list[StageSpec] = []

    def add_maps(self, fds: dict[str, int]) -> None:
        """The maps a module has (name -> fd): kept as map specs. An extern
        map of a later module is the same map under another fd (bcc dups
        it): the same name must be the same map id."""
        for name, fd in fds.items():
            map_id = bpfsys.map_info(fd).map_id
            if self.map_ids.setdefault(name, map_id) != map_id:
                raise Uncacheable(f"two maps are named {name}")
            self.map_fds.setdefault(name, fd)
            self.fd_names[fd] = name
        for name, fd in fds.items():
            if name in self.maps:
                continue
            m = map_spec(name, fd, self.btf_ids, self.btfs)
            if m.type in (BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS):
                m.inner = _probe_inner(fd, m.key_size, self.map_fds)
            self.maps[name] = m

    def add_stage(
        self,
        progs: Sequence[tuple[int, str, str, int, int, str, int, bytes]],
        maps: list[str],
        meta: dict[str, Any],
    ) -> None:
        """One message: (slot, name, kernel name, type, expected attach type,
        license, kern_version, insns) per program; the maps it hands over."""
        specs = [
            ProgSpec(
                slot, name, kname, typ, attach, lic, kv, insns, find_relocs(insns, self.fd_names)
            )
            for slot, name, kname, typ, attach, lic, kv, insns in progs
        ]
        for mname in maps:
            if mname not in self.maps:
                raise Uncacheable(f"map {mname} is not among the source's maps")
        self.stages.append(StageSpec(specs, list(maps), dict(meta)))

    def entry(self) -> Entry:
        """The entry: only the maps some program or stage uses, inner maps first."""
        used: set[str] = {m for s in self.stages for m in s.maps}
        used |= {n for s in self.stages for p in s.progs for _, n in p.relocs}
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order:
                return
            inner = self.maps[name].inner
            if inner:
                visit(inner)
            order.append(name)

        for name in sorted(used):
            visit(name)
        return Entry([self.maps[n] for n in order], self.btfs, self.stages)
