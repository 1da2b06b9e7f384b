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
parent's end of the socket closes, whatever the main thread is doing.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from flowtop.kernel.build import (
    BACKGROUND_NICE,
    BCC_MISSING,
    CGROUP_SKB_EGRESS,
    CGROUP_SKB_INGRESS,
    CGROUP_SOCK_CREATE,
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
        with quiet_stderr():
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


def _load(bcc: Any, b: Any, progs: list[tuple[str, str]], what: str) -> list[int]:
    # kind -> (program type, expected attach type; -1: none given)
    types = {
        SCHED_CLS: (bcc.BPF.SCHED_CLS, -1),
        SOCK_OPS: (bcc.BPF.SOCK_OPS, -1),
        CGROUP_SOCK_CREATE: (bcc.BPF.CGROUP_SOCK, 2),  # BPF_CGROUP_INET_SOCK_CREATE
        CGROUP_SKB_INGRESS: (bcc.BPF.CGROUP_SKB, 0),  # BPF_CGROUP_INET_INGRESS
        CGROUP_SKB_EGRESS: (bcc.BPF.CGROUP_SKB, 1),  # BPF_CGROUP_INET_EGRESS
    }
    fds = []
    for name, kind in progs:
        prog_type, attach_type = types[kind]
        try:
            with quiet_stderr():
                fds.append(b.load_func(name.encode(), prog_type, attach_type=attach_type).fd)
        except Exception as exc:  # bcc raises bare Exception
            raise BuildError(f"{what}: {exc}") from None
    return fds


def _tracepoints(b: Any) -> tuple[list[str], list[int]]:
    """The tracepoint programs bcc loaded and attached, detached here (see
    the module doc): their function names and fds."""
    for tp in list(b.tracepoint_fds):
        b.detach_tracepoint(tp)
    names = [n.decode() for n in b.funcs if n.decode().startswith(TRACEPOINT_PREFIX)]
    return names, [b.funcs[n.encode()].fd for n in names]


def build(sock: socket.socket, req: Request) -> None:
    """Runs one request: compile, first message, later message."""
    if req.nice:
        os.nice(req.nice)
    try:
        bcc = load_bcc()
    except ImportError:
        raise BuildError(BCC_MISSING) from None
    except Exception as exc:  # OSError: libbcc.so missing
        raise BuildError(f"bcc is not importable: {exc}") from None
    b, meta = _compile(bcc, req)
    progs = [name for name, _ in req.first]
    fds = _load(bcc, b, req.first, f"cannot compile or load {req.what}")
    if req.sockops or req.tracepoints:
        names, tp_fds = _tracepoints(b)
        progs += names
        fds += tp_fds
    try:
        map_fds = [b[name.encode()].map_fd for name in req.maps]
    except KeyError as exc:
        raise BuildError(f"cannot compile or load {req.what}: no map {exc}") from None
    send(sock, {"progs": progs, "maps": req.maps, "meta": meta}, fds + map_fds)
    if req.later:
        # Nothing waits for these yet: the parent is attaching the first ones.
        os.nice(max(0, BACKGROUND_NICE - req.nice))
        if req.later_cflags:
            # b stays alive: its public maps are what this compile's
            # "extern" ones resolve to.
            b2, _ = _compile(bcc, replace(req, cflags=req.later_cflags, what=req.later_what))
            later = _load(bcc, b2, req.later, f"cannot load {req.later_what}")
        else:
            later = _load(bcc, b, req.later, f"cannot load {req.later_what}")
        send(sock, {"progs": [name for name, _ in req.later]}, later)


def _watchdog(sock: socket.socket) -> None:
    """Ends this process when the parent's end of the socket goes away."""
    p = select.poll()
    p.register(sock, select.POLLRDHUP | select.POLLHUP)
    while True:
        for _fd, ev in p.poll():
            if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                os._exit(3)


def main(argv: list[str]) -> int:
    # The parent ends this process when it is stopped; signals meant for it
    # (a Ctrl-C in a terminal) must not print a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    request = sock.recv(1 << 20)
    if not request:
        return 3
    threading.Thread(target=_watchdog, args=(sock,), daemon=True).start()
    try:
        build(sock, Request.from_json(request))
    except BuildError as exc:
        send(sock, {"error": str(exc)})
        return 1
    except Exception as exc:  # anything else is still one line for the parent
        send(sock, {"error": f"the BPF compiler failed: {type(exc).__name__}: {exc}"})
        return 1
    # Skip bcc's atexit clean-up (it would walk what was handed over) and
    # LLVM's destructors: the kernel closes everything this process holds.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
