"""BPF programs built in a short-lived child process, handed over as file descriptors.

bcc's compiler (clang and LLVM, ~100 MB mapped) stays in a child: ``python
-m flowtop.kernel.compiler`` (compiler.py, the only module that imports
bcc) compiles one source file, loads the programs asked for, and sends their
fds and those of the maps over a Unix socket (SOCK_SEQPACKET, SCM_RIGHTS),
then exits. This process holds the fds from then on: attaching, map reads,
everything else is bpf(2) on them (bpfsys, maps, attach, tcx,
sockops_attach, tracefs). Nothing is pinned.

Wire format: this side sends one JSON request, then GO ({"go": true})
when the child may import bcc and compile (at once, unless it is held: see
Priorities); the child answers with one message per stage, each a JSON
object with its fds: {"progs": [names], "maps": [names], "meta": {...}}
(fds: the programs', then the maps', in that order) or {"error": "one
line"}. The request's "first" programs and every map come in the first
message, its "later" programs in a second one (the TC program's pair for
L3 devices: compiled a second time with other cflags and verified
meanwhile, while this process attaches the first pair).

Lifetimes. A loaded program or map lives while some fd or attachment refers
to it: once the fds are here, the child's exit frees nothing. The child
watches its socket and exits at once when this process goes away (kill -9
included), before anything it loaded was attached anywhere; this side kills
it (SIGKILL) on close() and on any failure (except a child finishing a
program cache entry after the first stage, see below). A child that dies,
says nothing within TIMEOUT seconds ($FLOWTOP_BUILD_TIMEOUT), or fails, is
one KernelFeatureError line; compile errors carry the compiler's first error
line, as bcc reported it.

The program cache (progcache.py): before it starts a child, Build looks up
the request's entry; on a hit no child runs at all: a thread creates the
maps and loads the first stage's programs here with bpf(2) at once (the
kernel's verifier, most of such a start, then runs beside this process's
imports and checks; wait() takes what it loaded), and the later stage
loads, in a thread too, only once ready() or wait() asks for it (the L3
pair: after the first attachment, or when an L3 device comes). A failed
load from the cache before anything was handed over (a corrupt entry, a
refused program) removes the entry and starts the child instead; a later
stage that fails from the cache is that stage's error (its programs must
fill the first stage's maps). On a miss the child writes the entry (the
whole build, both stages) before its last message; when this process
closes the build after the first stage, the child is not killed but
finishes the entry on its own (compiler.py) and exits. The child holds
the entry's compile lock (progcache.try_lock, a flock it inherits) until
it exits: a build missing an entry that another process compiles at that
moment (pytest-xdist's workers share a cache) starts no child, and its
wait() (or ready()) takes that entry from the cache once the lock is free,
or compiles when the other wrote none (it failed, or was killed).

Priorities (2 cores): a build of nice 0 is one the first attachment waits
for (the TC program's). While one of them compiles in a child (a cache
miss), builds nothing waits for yet (nice > 0: sock_ops, owners, drops)
are held: they start no child, and keep their request and the entry's
compile lock (if any) until their go, when its first stage is there (or it
is closed, or failed); their children then start in a thread (the caller
attaches next). A compile beside the one waited for slows it down even at
nice 19 on the other CPU (two vCPUs share a core's caches and memory
bandwidth: the TC compile took 3.7 s instead of 2.4 s beside three; with
only their imports of bcc beside it, the first attachment came at 4.9 s
instead of 3.4 s), and so do their Python start-ups. While one only loads
from the cache, their children start at once but run at HELD_NICE until it
is there. Once the first attachment waits for nothing, they go on at their
request's niceness (above this process's own, as a child's is). A wait()
for a held build starts its child (or lets it go) at once; a close()
before its go closes the lock and starts nothing. A hold is set on the
child's threads and on its autogroup (set_autogroup_nice: with autogroups,
a thread's niceness alone does nothing against other sessions). A child
already told to go when a failed hit starts the compile is not held back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flowtop
from flowtop import resources
from flowtop.errors import ConfigError, FlowtopError, KernelFeatureError
from flowtop.kernel import progcache

BPF_DIR: Path = resources.bpf_dir()
log = logging.getLogger(__name__)

# Program types, by the names bcc's BPF class gives them.
SCHED_CLS = "SCHED_CLS"
SOCK_OPS = "SOCK_OPS"
# cgroup programs; the kind names the expected attach type too (compiler.py
# loads them with it): BPF_CGROUP_INET_SOCK_CREATE, _INGRESS, _EGRESS.
CGROUP_SOCK_CREATE = "CGROUP_SOCK_CREATE"
CGROUP_SKB_INGRESS = "CGROUP_SKB_INGRESS"
CGROUP_SKB_EGRESS = "CGROUP_SKB_EGRESS"

# Seconds a build stage may take before it counts as hung; $FLOWTOP_BUILD_TIMEOUT
# overrides (a slow machine, or a test).
TIMEOUT = 300.0
TIMEOUT_ENV = "FLOWTOP_BUILD_TIMEOUT"
# Niceness of build work nothing waits for yet (the sock_ops build, the L3 pair).
BACKGROUND_NICE = 5
# Niceness of such a child while a build the first attachment waits for runs
# (see the module doc): it takes only the CPU that build leaves.
HELD_NICE = 19
MAX_MESSAGE = 1 << 16
# The message that lets a child compile (see the module doc's Priorities).
GO = b'{"go": true}'
MAX_FDS = 250  # below the kernel's SCM_MAX_FD (253)
BCC_MISSING = "bcc is not importable: install Debian's python3-bpfcc (run `make setup`)"


def no_checkpoint() -> None:
    """A wait's checkpoint that never stops it."""


@dataclass
class Loaded:
    """What one message of a build brought: fds by program and map name.
    This process owns them: close() closes every one."""

    progs: dict[str, int] = field(default_factory=dict)
    maps: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for fd in (*self.progs.values(), *self.maps.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.progs.clear()
        self.maps.clear()


@dataclass(frozen=True)
class Request:
    """What to build: src compiled with cflags; programs (name, kind) to load
    first and later (a second message); maps to hand over. sockops: the
    sock_ops recipe (tracepoint programs too, FT_MDEV_OFF from BTF);
    tracepoints, btf_offsets, btf_constants: those parts of it for any
    source (the drop reasons program). what:
    how errors name it ("the TC program"); later_what for the second stage,
    which runs at a niceness of at least BACKGROUND_NICE (nothing waits
    for it yet) and may compile src again (later_cflags)."""

    src: str
    cflags: list[str]
    first: list[tuple[str, str]]
    maps: list[str]
    what: str
    later: list[tuple[str, str]] = field(default_factory=list)
    later_what: str = ""
    # Non-empty: the later programs come from a second compile of src with
    # these cflags, in the same child, after the first message; its maps
    # declared "extern" are the first compile's public ones (bcc shares
    # them within a process), so both stages fill the same maps.
    later_cflags: list[str] = field(default_factory=list)
    sockops: bool = False
    # Hand over the source's TRACEPOINT_PROBE programs too (sockops implies it).
    tracepoints: bool = False
    # (macro, struct, member path, size in bytes): the compiler adds
    # -Dmacro=<byte offset> from the running kernel's BTF (btf.Btf.member); a
    # member it does not find, or of another size, fails the build.
    btf_offsets: list[tuple[str, str, str, int]] = field(default_factory=list)
    # (macro, enum, constant): -Dmacro=<value> from the BTF, -1 when the enum
    # has no such constant; meta["enums"][enum] is the whole enum ({} absent).
    btf_constants: list[tuple[str, str, str]] = field(default_factory=list)
    # Niceness of the child (os.nice): a build nothing waits for yet runs
    # beside the one the first attachment waits for without slowing it down
    # on a busy machine (on an idle one each has a core).
    nice: int = 0

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Request:
        d = json.loads(raw)
        d["first"] = [tuple(x) for x in d["first"]]
        d["later"] = [tuple(x) for x in d["later"]]
        d["btf_offsets"] = [tuple(x) for x in d.get("btf_offsets", [])]
        d["btf_constants"] = [tuple(x) for x in d.get("btf_constants", [])]
        return cls(**d)


def send(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One message with its fds (the child's side)."""
    data = json.dumps(msg).encode()
    if len(data) > MAX_MESSAGE or len(fds) > MAX_FDS:
        raise ValueError("message too large")
    socket.send_fds(sock, [data], list(fds))


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One message, or None at end of file (the child is gone)."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    except OSError:  # ECONNRESET: it died with a message of ours unread
        return None
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    msg: dict[str, Any] = json.loads(data)
    return msg, fds


def timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds above 0, not {raw!r}")
    return value


def _env(entry: Path | None = None) -> dict[str, str]:
    """The child imports the same flowtop as this process, wherever it is;
    entry: the program cache entry it writes (none: it writes none)."""
    env = dict(os.environ)
    root = str(Path(flowtop.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.pop(progcache.ENTRY_ENV, None)
    if entry is not None:
        env[progcache.ENTRY_ENV] = str(entry)
    return env


class Build:
    """One build (see the module doc): from the program cache when it has
    the request's entry (progcache: no child at all; from_cache says so
    once wait() took it), else a compile in a child started at once. Its
    results are taken with wait()."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.timeout = timeout()
        self._stages = 2 if request.later else 1
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        # True once wait() took the first stage from the cache; compiled:
        # a compiler child was started (at once, or after a failed cache load).
        self.from_cache = False
        self.compiled = False
        # A cache hit: the first stage loading in a thread from construction
        # on, what it brought (or why it failed), and the entry's maps the
        # later stage's programs use (kept for it).
        self._first_thread: threading.Thread | None = None
        self._first: Loaded | BaseException | None = None
        self._first_maps: progcache.CachedLoad | None = None  # the thread's, until taken
        self._cached: progcache.CachedLoad | None = None
        # The later stage loading from the cache (a thread, started when
        # asked for: nothing waits for it at the first attachment), and
        # what it brought.
        self._later_thread: threading.Thread | None = None
        self._later: Loaded | progcache.CacheError | None = None
        # A miss while another process compiles the same entry (it holds the
        # entry's lock): wait() and ready() wait for its entry (_poll_other).
        self._deferred = False
        # A held build's child is started only at its go (_Priorities.defer):
        # until then the entry's compile lock (or UNLOCKED) waits here.
        # _spawning: taken to start the child, or to give up doing so.
        self._unspawned: int | None = None
        self._spawning = threading.Lock()
        self._spawn_error: KernelFeatureError | None = None
        _priorities.begin(self)
        try:
            entry: progcache.Entry | None = None
            self._entry_path = progcache.entry_path(request)
            if self._entry_path is not None:
                try:
                    entry = progcache.read(self._entry_path)
                except progcache.CacheError as exc:
                    self._drop_entry(str(exc))
            if entry is None:
                self._start_or_defer()
            else:
                self._begin_cached(entry)
        except BaseException:
            _priorities.end(self)
            raise

    def _drop_entry(self, why: str) -> None:
        log.warning(
            "program cache: %s for %s: %s; compiling", self._entry_path, self.request.what, why
        )
        if self._entry_path is not None:
            progcache.remove(self._entry_path)

    def _start_or_defer(self) -> None:
        """A miss: the child, holding the entry's compile lock; or, while
        another process holds it (compiling the same entry), nothing yet:
        wait() and ready() wait for its entry (_poll_other)."""
        if self._entry_path is None:
            self._start_child()
            return
        self._deferred = True
        self._poll_other()

    def _read_entry(self) -> progcache.Entry | None:
        assert self._entry_path is not None
        try:
            return progcache.read(self._entry_path)
        except progcache.CacheError as exc:
            self._drop_entry(str(exc))
            return None

    def _poll_other(self) -> bool:
        """Whether this deferred build could go on: the entry is there (it
        loads here as a hit), or the lock is free and there is still no
        entry (the other one failed, or was killed; none ran: this is the
        first look): this build compiles, holding the lock."""
        assert self._entry_path is not None
        entry = self._read_entry()
        if entry is None:
            lock = progcache.try_lock(self._entry_path)
            if lock is None:
                return False
            entry = self._read_entry()  # written between the look and the lock?
            if entry is None:
                self._deferred = False
                self._start_child(lock)
                return True
            if lock >= 0:
                # the entry is there: nobody needs the file this made again
                progcache.remove(progcache.lock_path(self._entry_path))
                os.close(lock)
        self._deferred = False
        self._begin_cached(entry)
        return True

    def _wait_other(self, checkpoint: Callable[[], None]) -> None:
        limit = time.monotonic() + self.timeout
        while not self._poll_other():
            time.sleep(0.05)
            checkpoint()
            if time.monotonic() > limit:
                raise KernelFeatureError(
                    f"another process compiling {self.request.what} for the program cache "
                    f"did not finish within {self.timeout:g} s ({TIMEOUT_ENV})"
                )

    def _start_child(self, lock: int = progcache.UNLOCKED) -> None:
        """The compiler child; lock (an fd, when not UNLOCKED): the entry's
        compile lock, which the child holds from now on (this copy is
        closed once it started, whatever happens). A held build starts none
        yet (_Priorities.defer): it keeps lock until its go (end()), a wait()
        for it, or close()."""
        if importlib.util.find_spec("bcc") is None:
            if lock >= 0:
                os.close(lock)
            raise KernelFeatureError(BCC_MISSING)
        self.compiled = True
        with self._spawning:
            if _priorities.defer(self):
                self._unspawned = lock
                return
            self._spawn_and_close(lock)

    def _spawn_and_close(self, lock: int) -> None:
        try:
            self._spawn(lock)
        finally:
            if lock >= 0:
                os.close(lock)

    def _spawn_held(self) -> None:
        """The child of a held build, started now (its go, or a wait() for
        it); nothing once it started or the build closed. A failure to
        start it is wait()'s error."""
        with self._spawning:
            lock, self._unspawned = self._unspawned, None
            if lock is None:
                return
            try:
                self._spawn_and_close(lock)
            except KernelFeatureError as exc:
                self._spawn_error = exc

    def _spawn(self, lock: int) -> None:
        request = self.request
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                # the source's name: only for `ps` and tests to tell the builds apart
                [
                    sys.executable,
                    "-m",
                    "flowtop.kernel.compiler",
                    str(theirs.fileno()),
                    Path(request.src).name,
                ],
                pass_fds=(theirs.fileno(), *([lock] if lock >= 0 else [])),
                stdin=subprocess.DEVNULL,
                env=_env(self._entry_path),
                # Its own session: a Ctrl-C in the terminal goes to flowtop,
                # which ends the child itself.
                start_new_session=True,
            )
        except OSError as exc:
            self._sock.close()
            raise KernelFeatureError(f"cannot start the BPF compiler: {exc.strerror}") from None
        finally:
            theirs.close()
        go = _priorities.started(self, self._proc.pid)
        # A child that died at once shows at wait(): its socket is closed.
        with contextlib.suppress(OSError):
            self._sock.send(request.to_json())
            if go:
                self._sock.send(GO)

    def _go(self) -> bool:
        """Lets a held child compile (_Priorities); False: this held build
        has no child yet (_spawn_held starts it)."""
        with self._spawning:
            unspawned, sock = self._unspawned is not None, self._sock
        if unspawned:
            return False
        if sock is not None:
            with contextlib.suppress(OSError):  # gone, or closed meanwhile
                sock.send(GO)
        return True

    @property
    def pid(self) -> int | None:
        """The compiler child's, while it runs; None on a cache hit."""
        return self._proc.pid if self._proc is not None else None

    def _begin_cached(self, entry: progcache.Entry) -> None:
        """The first stage from the entry, loading in a thread from now on."""

        def first() -> None:
            try:
                cached = progcache.CachedLoad(entry, self.request)
            except BaseException as exc:
                self._first = exc
                return
            try:
                self._first = cached.stage(0)
            except BaseException as exc:
                cached.close()
                self._first = exc
                return
            if self.request.later:
                self._first_maps = cached  # the later stage's programs use its maps
            else:
                cached.close()

        self._first_thread = threading.Thread(target=first, name="progcache-first", daemon=True)
        self._first_thread.start()

    def _join(self, thread: threading.Thread, checkpoint: Callable[[], None]) -> None:
        while thread.is_alive():
            thread.join(0.05)
            if thread.is_alive():
                checkpoint()

    def _take_cached(self, checkpoint: Callable[[], None]) -> Loaded | None:
        """The first stage the cache thread loaded, or None: it failed
        (logged, entry removed, nothing left loaded) and the child compile
        runs instead."""
        thread = self._first_thread
        assert thread is not None
        self._join(thread, checkpoint)
        self._first_thread = None
        got, self._first = self._first, None
        self._cached, self._first_maps = self._first_maps, None
        if isinstance(got, Loaded):
            self.from_cache = True
            return got
        if isinstance(got, progcache.CacheError):
            self._drop_entry(str(got))
            assert self._entry_path is not None
            # Another process compiling it too (it found the bad entry
            # gone): compile anyway, unlocked, rather than wait here.
            lock = progcache.try_lock(self._entry_path)
            self._start_child(progcache.UNLOCKED if lock is None else lock)
            return None
        raise got if got is not None else KernelFeatureError(f"{self.request.what}: not loaded")

    def _begin_later_cached(self) -> None:
        """The later stage from the cache, loading in a thread from now on."""
        cached, self._cached = self._cached, None
        assert cached is not None

        def later() -> None:
            try:
                self._later = cached.stage(1)
            except progcache.CacheError as exc:
                self._later = exc
            finally:
                cached.close()

        self._later_thread = threading.Thread(target=later, name="progcache-later", daemon=True)
        self._later_thread.start()

    def _wait_later_cached(self, checkpoint: Callable[[], None]) -> Loaded:
        """The later stage from the cache thread. Its failure cannot fall
        back to a compile (a child's programs would fill the child's maps,
        not the first stage's): it is this stage's error, as a failed
        compile of it would be, and the entry goes."""
        if self._later_thread is None:
            self._begin_later_cached()
        thread = self._later_thread
        assert thread is not None
        self._join(thread, checkpoint)
        self._stages = 0
        got, self._later = self._later, None
        if isinstance(got, progcache.CacheError) or got is None:
            self._drop_entry(str(got))
            raise KernelFeatureError(
                f"cannot load {self.request.later_what} from the program cache: {got}"
            )
        return got

    @property
    def done(self) -> bool:
        """Every message received (or the build failed): nothing more to wait for."""
        return self._stages == 0

    def wait(self, checkpoint: Callable[[], None] = no_checkpoint) -> Loaded:
        """The next message's programs and maps. checkpoint is called every
        50 ms meanwhile (a stop request raises there; close() then ends the
        child). KernelFeatureError when the child failed, died, or sent
        nothing within self.timeout seconds."""
        if self._stages == 0:
            raise KernelFeatureError(f"{self.request.what}: nothing more to load")
        if self._deferred:
            try:
                self._wait_other(checkpoint)
            except BaseException:
                self._fail()
                raise
        if self._first_thread is not None:
            try:
                first = self._take_cached(checkpoint)
            except BaseException:
                self._fail()
                raise
            if first is not None:
                self._stages -= 1
                _priorities.end(self)
                return first
        elif self._later_thread is not None or self._cached is not None:
            return self._wait_later_cached(checkpoint)
        # A held build's child starts now (a go starting it meanwhile: that
        # is waited for), then goes on at once: something waits for it.
        self._spawn_held()
        if self._spawn_error is not None:
            self._fail()
            raise self._spawn_error
        _priorities.release(self)
        assert self._sock is not None
        later = self.request.later and self._stages == 1
        what = self.request.later_what if later else self.request.what
        limit = time.monotonic() + self.timeout
        while True:
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if ready:
                break
            checkpoint()
            if time.monotonic() > limit:
                self._fail()
                raise KernelFeatureError(
                    f"the BPF compiler did not finish building {what} within "
                    f"{self.timeout:g} s ({TIMEOUT_ENV})"
                )
        got = _receive(self._sock)
        if got is None:
            status = self._exit_status()
            self._fail()
            raise KernelFeatureError(f"the BPF compiler {status} building {what}")
        msg, fds = got
        if "error" in msg:
            for fd in fds:
                os.close(fd)
            self._fail()
            raise KernelFeatureError(str(msg["error"]))
        names = [*msg.get("progs", []), *msg.get("maps", [])]
        if len(names) != len(fds):
            for fd in fds:
                os.close(fd)
            self._fail()
            raise KernelFeatureError(f"the BPF compiler sent {len(fds)} fds for {len(names)}")
        if msg.get("cache_note"):
            log.info("program cache, %s: %s", what, msg["cache_note"])
        n = len(msg.get("progs", []))
        loaded = Loaded(
            dict(zip(msg.get("progs", []), fds[:n], strict=True)),
            dict(zip(msg.get("maps", []), fds[n:], strict=True)),
            dict(msg.get("meta", {})),
        )
        self._stages -= 1
        _priorities.end(self)
        if self._stages == 0:
            self._reap()
        return loaded

    def ready(self) -> bool:
        """Whether the next message is there (wait() would not block)."""
        if self._stages == 0:
            return False
        if self._deferred and not self._poll_other():
            return False
        if self._first_thread is not None:
            return not self._first_thread.is_alive()
        if self._cached is not None:  # asked for now: it loads from here on
            self._begin_later_cached()
        if self._later_thread is not None:
            return not self._later_thread.is_alive()
        if self._unspawned is not None or self._spawning.locked():
            return False  # held, or its child starting
        if self._sock is None:
            return True
        ready, _, _ = select.select([self._sock], [], [], 0)
        return bool(ready)

    def _exit_status(self) -> str:
        rc = self._reap()
        if rc is None:
            return "closed its socket"
        if rc < 0:
            return f"was killed by signal {-rc} ({signal.Signals(-rc).name})"
        return f"exited with status {rc}"

    def _reap(self, timeout: float = 10) -> int | None:
        proc, self._proc = self._proc, None
        if self._sock is not None:
            self._sock.close()
        if proc is None:
            return None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def _fail(self) -> None:
        self._stages = 0
        self.close()

    def close(self) -> None:
        """Ends the child if it still runs (SIGKILL: it holds nothing that
        outlives it) and drops whatever it did not hand over. Idempotent.
        The exception: a child that sent the first stage and compiles the
        later one for a program cache entry is left to finish that."""
        writing = self._stages == 1 and bool(self.request.later) and self._entry_path is not None
        self._stages = 0
        self._deferred = False
        with self._spawning:  # a child being started meanwhile is there after this
            lock, self._unspawned = self._unspawned, None
        if lock is not None and lock >= 0:
            os.close(lock)
        _priorities.end(self)
        for thread in (self._first_thread, self._later_thread):
            if thread is not None:
                # A verifier call cannot be interrupted; it ends within seconds.
                thread.join()
        self._first_thread = self._later_thread = None
        for got in (self._first, self._later):
            if isinstance(got, Loaded):
                got.close()
        self._first = self._later = None
        for maps in (self._first_maps, self._cached):
            if maps is not None:
                maps.close()
        self._first_maps = self._cached = None
        proc, self._proc = self._proc, None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if writing and proc is not None and proc.poll() is None:
            # The first stage is here and the child compiles the later one
            # for the cache entry: it finishes that on its own (compiler.py
            # _linger) instead of being killed; reaped when it exits.
            threading.Thread(target=proc.wait, name="compiler-reaper", daemon=True).start()
            return
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if proc is not None:
            proc.wait(timeout=10)


class _Priorities:
    """The niceness and the go of the compiler children (see the module
    doc): children of builds with nice > 0 started while a build of nice 0
    waits for its first stage run at HELD_NICE until none does, and wait
    for their go while such a build compiles in a child. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # By id(): builds the first attachment waits for; those of them
        # compiling in a child; builds whose child runs at HELD_NICE; builds
        # whose child waits for its go.
        self._foreground: set[int] = set()
        self._compiling: set[int] = set()
        self._held: dict[int, Build] = {}
        self._waiting: dict[int, Build] = {}

    def begin(self, b: Build) -> None:
        if b.request.nice == 0:
            with self._lock:
                self._foreground.add(id(b))

    def defer(self, b: Build) -> bool:
        """Whether b's child should start only at its go (end() or
        release()): b is nothing waited for yet, and a build the first
        attachment waits for compiles in a child (its Python's start-up and
        imports would take CPU from that one). Then b waits for its go."""
        if b.request.nice <= 0:
            return False
        with self._lock:
            if not self._compiling:
                return False
            self._waiting[id(b)] = b
            return True

    def started(self, b: Build, pid: int) -> bool:
        """b's child started as pid: whether it may compile at once (False:
        it gets its go from end() or release())."""
        with self._lock:
            if b.request.nice <= 0:
                if id(b) in self._foreground:
                    self._compiling.add(id(b))
                return True
            held = bool(self._foreground)
            if held:
                self._held[id(b)] = b
            go = not self._compiling
            if not go:
                self._waiting[id(b)] = b
        if held:
            _renice(pid, HELD_NICE, group=HELD_NICE)
        else:
            # From its start: its Python's start-up runs beside this
            # process's work (after a go: the first attachment).
            _at_request_nice([b])
        return go

    def end(self, b: Build) -> None:
        """b's first stage is here, or b is closed: if it was the last one
        compiling, the waiting children get their go; if the last one waited
        for, the held children go on at their requests' niceness."""
        with self._lock:
            key = id(b)
            self._foreground.discard(key)
            self._compiling.discard(key)
            self._held.pop(key, None)
            self._waiting.pop(key, None)
            held: list[Build] = []
            if not self._foreground:
                held, self._held = list(self._held.values()), {}
            waiting: list[Build] = []
            if not self._compiling:
                waiting, self._waiting = list(self._waiting.values()), {}
        # Their niceness first: a go'd compile starts where it should.
        _at_request_nice(held)
        unspawned = [w for w in waiting if not w._go()]
        if unspawned:
            # Not in the caller's thread: that build attaches next.
            threading.Thread(
                target=_spawn_held, args=(unspawned,), name="compiler-spawn", daemon=True
            ).start()

    def release(self, b: Build) -> None:
        """Something waits for b now: it goes on at once, at its niceness."""
        with self._lock:
            held = self._held.pop(id(b), None)
            waiting = self._waiting.pop(id(b), None)
        if held is not None:
            _at_request_nice([held])
        if waiting is not None and not waiting._go():
            waiting._spawn_held()


def _spawn_held(builds: Sequence[Build]) -> None:
    """The children of held builds, started one after the other (a thread
    of their own: _Priorities.end)."""
    for b in builds:
        b._spawn_held()


def _at_request_nice(builds: Sequence[Build]) -> None:
    """Each build's child (while it runs) to its request's niceness,
    relative to this process's, as the child sets its own
    (compiler._at_least_nice)."""
    if not builds:
        return
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    for h in builds:
        proc = h._proc
        # Not reaped (poll() is None): the pid is still that child's.
        if proc is not None and proc.poll() is None:
            _renice(proc.pid, min(HELD_NICE, base + h.request.nice))


def _renice(pid: int, nice: int, group: int = 0) -> None:
    """Every thread of pid to nice (Linux's niceness is per thread; the
    child compiles in its main one and loads in others), and its autogroup
    to group (set_autogroup_nice); a child gone meanwhile is nothing to do."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    set_autogroup_nice(pid, group)


def autogroup_nice(pid: int) -> int | None:
    """The niceness of pid's autogroup; None without autogroups (no
    /proc/PID/autogroup)."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def set_autogroup_nice(pid: int, nice: int) -> None:
    """pid's autogroup to nice. A compiler child is alone in an autogroup
    of its own (a session of its own: start_new_session), and with
    autogroups on (kernel.sched_autogroup_enabled=1, Debian's default) the
    scheduler shares the CPU between autogroups first, by their niceness:
    its threads' niceness then only orders them among themselves, and a
    child at nice 19 took as much CPU as one at nice 0 beside it (1.25 s
    each of one CPU's 2.5 s; 2.43 s and 0.03 s once its autogroup was at 19
    too). Only a hold (HELD_NICE) sets it: at a request's niceness a child
    keeps its autogroup's fair share (a run is collecting only once its
    builds are in; a compile whose autogroup was at 19 beside two busy
    processes of other sessions had not finished after 76 s). Nothing to
    do without autogroups, or when the kernel refuses (without
    CAP_SYS_ADMIN, one change in 100 ms machine-wide)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


_priorities = _Priorities()


# Builds started before anything asked for them (begin_early), by request.
_EARLY: dict[bytes, Build] = {}


def begin_early(request: Request) -> None:
    """Start the build of request now, for a caller that asks for it later
    (take()): the compile then runs beside whatever this process does
    meanwhile (imports, interface checks). Errors are left for take()'s
    caller to meet when it builds for itself."""
    key = request.to_json()
    if key not in _EARLY:
        with contextlib.suppress(FlowtopError):
            _EARLY[key] = Build(request)


def take(request: Request) -> Build:
    """The build of request: the one begin_early() started, else a new one."""
    early = _EARLY.pop(request.to_json(), None)
    return early if early is not None else Build(request)


def discard_early() -> None:
    """End the early builds nobody took (the run stopped before)."""
    while _EARLY:
        _EARLY.popitem()[1].close()
