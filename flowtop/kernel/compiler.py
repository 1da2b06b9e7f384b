"""The child side of a build: compile with bcc, load, send the fds, exit.

``python -m flowtop.kernel.compiler FD SOURCE``: FD is a SOCK_SEQPACKET
socket to the flowtop process that started it (build.Build, whose
docstring has the wire format); SOURCE, the source file's name, is only
there for `ps`: the request on the socket says what to do. This is the
only module that imports bcc; it never runs in the long-lived process
(flowtop doctor's checks use load_bcc() too, in a process that ends with
them).

The child holds nothing that outlives it: programs and maps it created
live on only through the fds it sent. bcc attaches a source file's
``TRACEPOINT_PROBE``s as it compiles; those perf events are this process's
and are closed (detached) before the fds go: the parent attaches the
tracepoint programs itself (tracefs.attach_tracepoint), so that no event
ever runs a program twice. A watchdog thread ends the child the moment the
parent's end of the socket closes, whatever the main thread is doing (but
see _linger: a child that handed over its first stage finishes the program
cache entry, flowtop/kernel/progcache.py, which it writes before its last
message: $FLOWTOP_PROGCACHE_ENTRY names the file).

A child imports bcc and compiles only once the parent sent its go (at
once, as a rule: a held build starts its child only once the build the
first attachment waits for brought its first stage, build.py's
Priorities; a child started while such a build compiles waits for its
go). Each compile reads a one-line /proc/kallsyms in a mount namespace
of the child's own instead of the kernel's 120k lines (kallsyms.py).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from flowtop.kernel import bpfsys, kallsyms, progcache
from flowtop.kernel.build import (
    BACKGROUND_NICE,
    BCC_MISSING,
    CGROUP_SKB_EGRESS,
    CGROUP_SKB_INGRESS,
    CGROUP_SOCK_CREATE,
    GO,
    SCHED_CLS,
    SOCK_OPS,
    Request,
    send,
)
from flowtop.kernel.tracefs import TRACEPOINT_PREFIX


def load_bcc() -> Any:
    """The bcc module; whatever importing it raises (ImportError, or OSError
    when libbcc.so is missing)."""
    import bcc

    return bcc


class BuildError(Exception):
    """A failure to report to the parent as its one line."""


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """bcc's clang prints header warnings straight to fd 2; keep them for errors only."""
    if os.environ.get("FLOWTOP_BCC_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except Exception as exc:
            os.dup2(saved, 2)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            errors = [ln for ln in text.splitlines() if "error" in ln]
            if errors:
                raise type(exc)(f"{exc}: {errors[0]}") from exc
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _compile(bcc: Any, req: Request) -> tuple[Any, dict[str, Any]]:
    """The compiled module (bcc's BPF object) and what the parent is told
    about the compile (meta: for sock_ops, FT_MDEV_OFF from BTF, -1 unknown)."""
    if not os.path.isfile(req.src):
        raise BuildError(f"BPF source not found: {req.src}")
    cflags = list(req.cflags)
    meta: dict[str, Any] = {}
    if req.sockops:
        from flowtop.kernel.btf import tcp_sock_offset

        mdev_off = tcp_sock_offset("mdev_us")
        meta["mdev_off"] = mdev_off if mdev_off is not None else -1
        cflags.append(f"-DFT_MDEV_OFF={meta['mdev_off']}")
    if req.btf_offsets or req.btf_constants:
        cflags += _btf_cflags(req, meta)
    try:
        with quiet_stderr(), kallsyms.short():
            b = bcc.BPF(src_file=req.src.encode(), cflags=cflags)
    except Exception as exc:  # bcc raises bare Exception for compile/load failures
        raise BuildError(f"cannot compile or load {req.what}: {exc}") from None
    return b, meta


def _btf_cflags(req: Request, meta: dict[str, Any]) -> list[str]:
    """-D cflags for the request's BTF offsets and constants (Request says
    how); meta gets "btf_offsets" {macro: offset} and "enums"."""
    from flowtop.kernel.btf import BTF_PATH, Btf

    btf = Btf.load()
    if btf is None:
        raise BuildError(f"cannot build {req.what}: this kernel has no BTF ({BTF_PATH})")
    out: list[str] = []
    offsets: dict[str, int] = {}
    for macro, struct_name, path, size in req.btf_offsets:
        m = btf.member(struct_name, path)
        if m is None or m.size != size:
            got = "is not there" if m is None else f"is {m.size} bytes, not {size}"
            raise BuildError(f"cannot build {req.what}: {struct_name}.{path} {got} in {BTF_PATH}")
        offsets[macro] = m.offset
        out.append(f"-D{macro}={m.offset}")
    enums: dict[str, dict[str, int]] = {}
    for macro, enum, const in req.btf_constants:
        if enum not in enums:
            enums[enum] = btf.enum(enum) or {}
        out.append(f"-D{macro}={enums[enum].get(const, -1)}")
    meta["btf_offsets"] = offsets
    meta["enums"] = enums
    return out


# kind -> expected attach type (-1: none given)
ATTACH_TYPES = {
    SCHED_CLS: -1,
    SOCK_OPS: -1,
    CGROUP_SOCK_CREATE: 2,  # BPF_CGROUP_INET_SOCK_CREATE
    CGROUP_SKB_INGRESS: 0,  # BPF_CGROUP_INET_INGRESS
    CGROUP_SKB_EGRESS: 1,  # BPF_CGROUP_INET_EGRESS
}


def _load(bcc: Any, b: Any, progs: list[tuple[str, str]], what: str) -> list[int]:
    """The programs loaded from module b, their fds in the order of progs.
    Each loads in a thread of its own: the kernel's verifier is most of a
    load (the TC pair's two programs take about half a second each), bcc
    lets go of the GIL for it, and the two run on two cores."""
    # kind -> program type
    types = {
        SCHED_CLS: bcc.BPF.SCHED_CLS,
        SOCK_OPS: bcc.BPF.SOCK_OPS,
        CGROUP_SOCK_CREATE: bcc.BPF.CGROUP_SOCK,
        CGROUP_SKB_INGRESS: bcc.BPF.CGROUP_SKB,
        CGROUP_SKB_EGRESS: bcc.BPF.CGROUP_SKB,
    }
    results: list[int | str] = ["not loaded"] * len(progs)

    def load(i: int) -> None:
        name, kind = progs[i]
        try:
            fn = b.load_func(name.encode(), types[kind], attach_type=ATTACH_TYPES[kind])
            results[i] = fn.fd
        except Exception as exc:  # bcc raises bare Exception
            results[i] = str(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(1, len(progs))]
    with quiet_stderr():
        for t in threads:
            t.start()
        if progs:
            load(0)
        for t in threads:
            t.join()
        errors = [r for r in results if isinstance(r, str)]
        if errors:
            # what loaded is freed when this process exits, which it does next
            raise BuildError(f"{what}: {errors[0]}")
    return [r for r in results if isinstance(r, int)]


def _tracepoints(b: Any) -> tuple[list[str], list[int]]:
    """The tracepoint programs bcc loaded and attached, detached here (see
    the module doc): their function names and fds."""
    for tp in list(b.tracepoint_fds):
        b.detach_tracepoint(tp)
    names = [n.decode() for n in b.funcs if n.decode().startswith(TRACEPOINT_PREFIX)]
    return names, [b.funcs[n.encode()].fd for n in names]


def _module_maps(bcc: Any, b: Any) -> dict[str, int]:
    """{table name: fd} of every map bcc knows in module b (extern ones
    are the earlier module's fds)."""
    lib = bcc.lib
    lib.bpf_num_tables.restype = ct.c_size_t
    lib.bpf_num_tables.argtypes = [ct.c_void_p]
    lib.bpf_table_name.restype = ct.c_char_p
    lib.bpf_table_name.argtypes = [ct.c_void_p, ct.c_size_t]
    lib.bpf_table_fd_id.restype = ct.c_int
    lib.bpf_table_fd_id.argtypes = [ct.c_void_p, ct.c_size_t]
    out: dict[str, int] = {}
    for i in range(lib.bpf_num_tables(b.module)):
        fd = lib.bpf_table_fd_id(b.module, i)
        if fd >= 0:
            out[lib.bpf_table_name(b.module, i).decode()] = fd
    return out


class _Cache:
    """The entry this build writes (progcache.Recorder), or why it writes none."""

    def __init__(self, req: Request) -> None:
        self.path: Path | None = None
        self.note = ""
        self.rec = progcache.Recorder()
        raw = os.environ.get(progcache.ENTRY_ENV)
        if not raw:
            return
        path = Path(raw)
        try:
            # The key of the files as this compile reads them: one changed since
            # the parent looked is not written under the old key.
            if path.name != progcache.cache_key(req) + progcache.SUFFIX:
                self.note = "the sources changed during the build"
                return
        except (OSError, ValueError) as exc:
            self.note = str(exc)
            return
        self.path = path

    def stage(
        self,
        bcc: Any,
        b: Any,
        progs: list[tuple[int, str, int, int]],
        maps: list[str],
        meta: dict[str, Any],
    ) -> None:
        """progs: (slot, name, fd, expected attach type) as loaded from module b."""
        if self.path is None:
            return
        try:
            self.rec.add_maps(_module_maps(bcc, b))
            lic = bcc.lib.bpf_module_license(b.module).decode()
            kv = int(bcc.lib.bpf_module_kern_version(b.module))
            described = []
            for slot, name, fd, attach in progs:
                typ = struct.unpack_from("<I", bpfsys.obj_info(fd, 4))[0]
                kname = bpfsys.prog_name_of(fd)
                described.append((slot, name, kname, typ, attach, lic, kv, b.dump_func(name)))
            self.rec.add_stage(described, maps, meta)
        except (progcache.Uncacheable, OSError, ValueError) as exc:
            self.path, self.note = None, f"not cached: {exc}"

    def write(self) -> None:
        if self.path is None:
            return
        try:
            progcache.write(self.path, self.rec.entry())
        except OSError as exc:
            self.path, self.note = None, f"cannot write {self.path}: {exc.strerror}"
            return
        # The entry is there: a build waiting for this one's lock finds it
        # (one that opens the lock file anew takes it at once, then reads
        # the entry); a kill before leaves the empty file, not a lock.
        progcache.remove(progcache.lock_path(self.path))

    def message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The last message, with the note for the parent's log."""
        return {**msg, "cache_note": self.note} if self.note else msg


def _at_least_nice(nice: int) -> None:
    """This thread (the one that compiles) at the parent's niceness plus
    nice, or lower priority: the parent may hold it at build.HELD_NICE, or
    have released it to that already (build._Priorities)."""
    with contextlib.suppress(OSError):
        want = min(19, os.getpriority(os.PRIO_PROCESS, os.getppid()) + nice)
        if os.getpriority(os.PRIO_PROCESS, 0) < want:
            os.setpriority(os.PRIO_PROCESS, 0, want)


def _wait_go(sock: socket.socket) -> None:
    """Until the parent lets this child compile (build.py's Priorities: a
    child started while the build the first attachment waits for compiles
    waits here); a parent gone meanwhile ends it."""
    msg = sock.recv(MAX_REQUEST)
    if not msg:
        os._exit(3)
    if msg != GO:
        raise BuildError(f"the BPF compiler got {msg[:40]!r}, not its go")


def build(sock: socket.socket, req: Request) -> None:
    """Runs one request: compile, first message, later message. The cache
    entry is written before the last message (the parent ends this process
    once it has it), the maps described before the first (they are the
    parent's from then on)."""
    _at_least_nice(req.nice)
    # Before bcc's import too: three imports of it (100 MB of libraries
    # mapped and relocated) beside the TC compile delayed the first
    # attachment (4.9 s against 3.4 s, medians of 6 side by side on a
    # loaded machine).
    _wait_go(sock)
    try:
        bcc = load_bcc()
    except ImportError:
        raise BuildError(BCC_MISSING) from None
    except Exception as exc:  # OSError: libbcc.so missing
        raise BuildError(f"bcc is not importable: {exc}") from None
    cache = _Cache(req)
    b, meta = _compile(bcc, req)
    progs = [name for name, _ in req.first]
    fds = _load(bcc, b, req.first, f"cannot compile or load {req.what}")
    described = [
        (i, name, fd, ATTACH_TYPES[kind])
        for i, ((name, kind), fd) in enumerate(zip(req.first, fds, strict=True))
    ]
    if req.sockops or req.tracepoints:
        names, tp_fds = _tracepoints(b)
        progs += names
        fds += tp_fds
        described += [(-1, n, fd, -1) for n, fd in zip(names, tp_fds, strict=True)]
    try:
        map_fds = [b[name.encode()].map_fd for name in req.maps]
    except KeyError as exc:
        raise BuildError(f"cannot compile or load {req.what}: no map {exc}") from None
    cache.stage(bcc, b, described, req.maps, meta)
    first = {"progs": progs, "maps": req.maps, "meta": meta}
    if not req.later:
        cache.write()
        send(sock, cache.message(first), fds + map_fds)
        return
    send(sock, first, fds + map_fds)
    if cache.path is not None:
        _linger.set()
    # Nothing waits for these yet: the parent is attaching the first ones.
    _at_least_nice(BACKGROUND_NICE)
    module = b
    if req.later_cflags:
        # b stays alive: its public maps are what this compile's
        # "extern" ones resolve to.
        module, _ = _compile(bcc, replace(req, cflags=req.later_cflags, what=req.later_what))
        later = _load(bcc, module, req.later, f"cannot load {req.later_what}")
    else:
        later = _load(bcc, b, req.later, f"cannot load {req.later_what}")
    n = len(req.first)
    cache.stage(
        bcc,
        module,
        [
            (n + i, name, fd, ATTACH_TYPES[kind])
            for i, ((name, kind), fd) in enumerate(zip(req.later, later, strict=True))
        ],
        [],
        {},
    )
    cache.write()
    try:
        send(sock, cache.message({"progs": [name for name, _ in req.later]}), later)
    except OSError:
        if not _linger.is_set():
            raise
        # the parent went away meanwhile: the entry was what was left to do


# Set once the first message went out while a program cache entry is still
# to be written (the later stage compiling): the parent going away (a short
# run ends before the L3 pair is compiled) then no longer ends this process,
# which finishes the entry at the lowest priority within LINGER seconds.
# What it holds then is attached nowhere and freed when it exits.
_linger = threading.Event()
LINGER = 120.0
MAX_REQUEST = 1 << 20


def _watchdog(sock: socket.socket) -> None:
    """Ends this process when the parent's end of the socket goes away
    (unless it lingers for the cache entry: see _linger)."""
    p = select.poll()
    p.register(sock, select.POLLRDHUP | select.POLLHUP)
    while True:
        for _fd, ev in p.poll():
            if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                if not _linger.is_set():
                    os._exit(3)
                with contextlib.suppress(OSError):
                    # the main thread (its tid is the pid) compiles
                    os.setpriority(os.PRIO_PROCESS, os.getpid(), 19)
                time.sleep(LINGER)
                os._exit(3)


def main(argv: list[str]) -> int:
    # The parent ends this process when it is stopped; signals meant for it
    # (a Ctrl-C in a terminal) must not print a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before any thread: the mount namespace is the calling thread's.
    kallsyms.private()
    sock = socket.socket(fileno=int(argv[0]))
    request = sock.recv(MAX_REQUEST)
    if not request:
        return 3
    threading.Thread(target=_watchdog, args=(sock,), daemon=True).start()
    try:
        build(sock, Request.from_json(request))
    except BuildError as exc:
        with contextlib.suppress(OSError):  # a parent gone while this lingered
            send(sock, {"error": str(exc)})
        return 1
    except Exception as exc:  # anything else is still one line for the parent
        with contextlib.suppress(OSError):
            send(sock, {"error": f"the BPF compiler failed: {type(exc).__name__}: {exc}"})
        return 1
    # Skip bcc's atexit clean-up (it would walk what was handed over) and
    # LLVM's destructors: the kernel closes everything this process holds.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
