"""Where the cgroup v2 root is, for the sock_ops program to attach to.

A process sees cgroup v2 mounts in /proc/self/mountinfo: the hybrid
layout's /sys/fs/cgroup/unified, a unified /sys/fs/cgroup, or any other. A
process in a mount namespace of its own where none is mounted (`ip netns
exec` remounts /sys, which hides /sys/fs/cgroup) gets the root from a
private mount made by a throw-away child: ``python -m flowtop.kernel.cgroup
FD`` (main() below) unshares its mount namespace, mounts cgroup2 on a
temporary directory, sends an fd of that directory back over the Unix
socket FD (SCM_RIGHTS), then unmounts and removes the directory. Nothing is
left mounted anywhere; the parent names the root "/proc/self/fd/N", which
works wherever a path does.
"""

from __future__ import annotations

import ctypes as ct
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def cgroup2_mounts(mountinfo: str) -> list[str]:
    """Mount points of cgroup2 file systems in /proc/self/mountinfo text."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        fstype = right.split(" ", 1)[0]
        if fstype == "cgroup2" and len(fields) >= 5:
            out.append(_unescape_mount(fields[4]))
    return out


def pick_cgroup2(mounts: list[str]) -> str | None:
    """Where to attach: the hybrid layout's /sys/fs/cgroup/unified, else a
    unified /sys/fs/cgroup, else the first cgroup2 mount."""
    for preferred in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if preferred in mounts:
            return preferred
    return mounts[0] if mounts else None


def find_cgroup2() -> str | None:
    """The cgroup v2 mount to attach sock_ops to, or None without one: a
    mount this process sees, else a private one (see the module doc)."""
    try:
        mine = pick_cgroup2(cgroup2_mounts(Path("/proc/self/mountinfo").read_text()))
    except OSError:
        mine = None
    return mine if mine is not None else _private_cgroup2()


_PRIVATE_CG: list[int] = []  # the fd of the private cgroup2 root, once made


def _private_cgroup2() -> str | None:
    """The cgroup v2 root through a mount nobody else sees (main() in a child)."""
    if _PRIVATE_CG:
        return f"/proc/self/fd/{_PRIVATE_CG[0]}"
    if os.geteuid() != 0:
        return None
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", __name__, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            capture_output=True,
            timeout=20,
            check=False,
        )
        if proc.returncode != 0:
            return None
        mine.settimeout(5)
        _msg, fds, _flags, _addr = socket.recv_fds(mine, 1, 1)
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        mine.close()
        theirs.close()
    if not fds:
        return None
    _PRIVATE_CG.append(fds[0])
    return f"/proc/self/fd/{fds[0]}"


CLONE_NEWNS = 0x20000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def main(argv: list[str]) -> int:
    """The child's side of _private_cgroup2: argv[0] is the socket's fd.
    Exit status 1: cannot make a private mount namespace, 2: cannot mount."""
    sock = socket.socket(fileno=int(argv[0]))
    libc = ct.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None):
        return 1
    where = tempfile.mkdtemp(prefix="flowtop-cg-")
    try:
        if libc.mount(b"cgroup2", where.encode(), b"cgroup2", 0, None):
            return 2
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        libc.umount2(where.encode(), MNT_DETACH)
    finally:
        os.rmdir(where)
    socket.send_fds(sock, [b"c"], [fd])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
