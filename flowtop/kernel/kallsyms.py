"""The build child's answer to bcc's one question about /proc/kallsyms.

On every compile, bcc's clang front end (BFrontendAction::DoMiscWorkAround
in bcc 0.26) reads the whole of /proc/kallsyms (120k symbols here: about
0.2 s of CPU, 0.3-0.5 s of a loaded machine's wall time, a tenth of the TC
program's compile) to learn one thing: whether the kernel has
bpf_probe_read_kernel (without it, bcc defines that helper as the older
bpf_probe_read). The kernel's BTF answers the same question in
milliseconds: its string section names every kernel function.

So the build child (compiler.py) first moves into a private mount namespace
(private(): unshare(CLONE_NEWNS), every mount private, so nothing it mounts
is seen anywhere else), and around each compile short() mounts over
/proc/kallsyms a file with that one line (or none: the kernel has no such
function), from a detached tmpfs (the new mount API: no directory made,
nothing to remove), and unmounts it after. The namespace and the tmpfs go
with the process, kill -9 included. Without BTF, without the mount API, or
without the right to unshare (a container), the compile reads the real file.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
from collections.abc import Iterator

from flowtop.kernel.cgroup import CLONE_NEWNS, MNT_DETACH, MS_PRIVATE, MS_REC

KALLSYMS = b"/proc/kallsyms"
BTF_PATH = "/sys/kernel/btf/vmlinux"
# What bcc looks up; its line as /proc/kallsyms has it (bcc skips address 0).
SYMBOL = b"bpf_probe_read_kernel"
LINE = b"ffffffff81000000 T " + SYMBOL + b"\n"

# Syscall numbers of the mount API: the same on every architecture (>= 424).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSCONFIG_CMD_CREATE = 6
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long

# The detached tmpfs holding the one-line file (an fd of its root), once
# private() made it; None: the compiles read the real /proc/kallsyms.
_tree: int | None = None


def _check(res: int, what: str) -> int:
    if res < 0:
        err = ct.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return res


def _sys(nr: int, what: str, *args: object) -> int:
    """syscall(nr, args...): its result; OSError on failure."""
    return _check(int(_libc.syscall(nr, *args)), what)


def has_symbol(btf_path: str = BTF_PATH) -> bool | None:
    """Whether the kernel's BTF names SYMBOL (a whole string of its string
    section); None without BTF."""
    try:
        with open(btf_path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return b"\0" + SYMBOL + b"\0" in data


def private() -> bool:
    """This process into a mount namespace of its own with the one-line file
    ready (see the module doc); False: not possible here, nothing changed
    but, at worst, the namespace (private: nothing leaks out of it)."""
    global _tree
    found = has_symbol()
    if found is None:
        return False
    fds: list[int] = []
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare")
        _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate")
        fs = _sys(_SYS_FSOPEN, "fsopen", b"tmpfs", _FSOPEN_CLOEXEC)
        fds.append(fs)
        _sys(_SYS_FSCONFIG, "fsconfig", fs, _FSCONFIG_CMD_CREATE, None, None, 0)
        mnt = _sys(_SYS_FSMOUNT, "fsmount", fs, _FSMOUNT_CLOEXEC, 0)
        fds.append(mnt)
        fd = os.open("kallsyms", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444, dir_fd=mnt)
        try:
            if found:
                os.write(fd, LINE)
        finally:
            os.close(fd)
    except OSError:
        for fd in fds:
            os.close(fd)
        return False
    os.close(fs)  # the mount holds the tmpfs
    _tree = mnt
    return True


@contextlib.contextmanager
def short() -> Iterator[bool]:
    """/proc/kallsyms is the one-line file meanwhile (True), or the real
    one (False: private() did not make it, or the mount failed)."""
    if _tree is None:
        yield False
        return
    try:
        flags = _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC
        clone = _sys(_SYS_OPEN_TREE, "open_tree", _tree, b"kallsyms", flags)
        try:
            where = (_AT_FDCWD, KALLSYMS, _MOVE_MOUNT_F_EMPTY_PATH)
            _sys(_SYS_MOVE_MOUNT, "move_mount", clone, b"", *where)
        finally:
            os.close(clone)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        _libc.umount2(KALLSYMS, MNT_DETACH)
