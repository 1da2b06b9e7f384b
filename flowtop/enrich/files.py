"""Opening files named by the user without surprises: a FIFO or a device
never blocks or streams forever, anything but a regular file is refused."""

from __future__ import annotations

import os
import stat


class NotRegularFile(OSError):
    """The path names something other than a regular file."""


def _what(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "unknown type"


def open_regular(path: str) -> int:
    """A read-only fd of the regular file `path` (O_NONBLOCK: a FIFO does not
    block the open); raises OSError (NotRegularFile for anything else)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(0, f"not a regular file ({_what(st.st_mode)})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """Up to max_bytes + 1 bytes of a regular file, and its stat before reading."""
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    return data, st
