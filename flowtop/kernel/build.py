"""Compile bpf/*.c with bcc and load its programs: the only module that imports bcc.

Options reach the C code as -D cflags; the sources are never edited. What
the rest of flowtop gets from here are file descriptors: a Compiled object
names the programs it loaded and the maps the compile created, and every
later use of them (attaching, map reads) goes through bpf(2) on those fds
(flowtop.kernel.bpfsys, maps, attach, tcx, sockops_attach).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowtop import resources
from flowtop.errors import KernelFeatureError

BPF_DIR: Path = resources.bpf_dir()

# Program types by the name bcc's BPF class gives them.
SCHED_CLS = "SCHED_CLS"
SOCK_OPS = "SOCK_OPS"


def load_bcc() -> Any:
    """The bcc module; whatever importing it raises (ImportError, or OSError
    when libbcc.so is missing)."""
    import bcc

    return bcc


def import_bcc() -> Any:
    """The bcc module, or one KernelFeatureError line when it is not installed."""
    try:
        return load_bcc()
    except ImportError:
        raise KernelFeatureError(
            "bcc is not importable: install Debian's python3-bpfcc (run `make setup`)"
        ) from None


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


class Compiled:
    """One source file compiled by bcc, its programs loaded on demand.

    what names it in errors ("the TC program"): a failed compile or load is
    one KernelFeatureError line, "cannot compile or load <what>: <bcc's
    message>: <the compiler's first error line>". The fds stay valid until
    close().
    """

    def __init__(self, src: Path, cflags: list[str], what: str) -> None:
        bcc = import_bcc()
        if not src.is_file():
            raise KernelFeatureError(f"BPF source not found: {src}")
        self.what = what
        self._types = {SCHED_CLS: bcc.BPF.SCHED_CLS, SOCK_OPS: bcc.BPF.SOCK_OPS}
        try:
            with quiet_stderr():
                self._bpf: Any = bcc.BPF(src_file=str(src).encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for compile/load failures
            raise KernelFeatureError(f"cannot compile or load {what}: {exc}") from None

    def prog_fd(self, name: str, kind: str, what: str | None = None) -> int:
        """Loads (verifies) function name as a program of kind; its fd.
        what: how to name it in an error, instead of the whole source's."""
        try:
            with quiet_stderr():
                fn = self._bpf.load_func(name.encode(), self._types[kind])
        except Exception as exc:  # bcc raises bare Exception
            if what is not None:
                raise KernelFeatureError(f"cannot load {what}: {exc}") from None
            raise KernelFeatureError(f"cannot compile or load {self.what}: {exc}") from None
        fd: int = fn.fd
        return fd

    def map_fd(self, name: str) -> int:
        fd: int = self._bpf[name.encode()].map_fd
        return fd

    def close(self) -> None:
        """Unloads what bcc holds (programs stay alive while an fd or an
        attachment refers to them)."""
        with contextlib.suppress(Exception):
            self._bpf.cleanup()
