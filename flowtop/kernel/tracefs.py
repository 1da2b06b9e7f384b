"""tracefs and tracepoints: where tracefs is, mounting it, attaching tracepoint programs.

The tracepoint programs (the sock_ops tracker's, the drop reasons program
on skb:kfree_skb) need the kernel's tracepoint descriptions
(events/<category>/<name>/format and id). flowtop looks where bcc does:
/sys/kernel/debug/tracing when it exists, else /sys/kernel/tracing;
under `ip netns exec`, /sys is a fresh sysfs without tracefs, which is then
mounted at its usual place (as `make setup` does). attach_tracepoint()
attaches a loaded tracepoint program (an fd from a build) with raw syscalls.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import platform
import struct
from pathlib import Path

from flowtop.errors import KernelFeatureError

log = logging.getLogger(__name__)

DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")
TRACEFS = Path("/sys/kernel/tracing")


def tracefs_dir() -> Path:
    return DEBUGFS_TRACING if DEBUGFS_TRACING.exists() else TRACEFS


_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


def _mount_tracefs(where: Path) -> None:
    if where.is_dir() and _libc.mount(b"tracefs", bytes(where), b"tracefs", 0, None) == 0:
        log.info("mounted tracefs at %s", where)


def events_dir() -> Path:
    """tracefs's events/ directory, mounting tracefs first when it is missing;
    KernelFeatureError when there is none."""
    root = tracefs_dir()
    if not (root / "events").is_dir():
        _mount_tracefs(root)
    if not (root / "events").is_dir():
        raise KernelFeatureError(
            "tracefs is not mounted at /sys/kernel/tracing "
            "(mount -t tracefs tracefs /sys/kernel/tracing, or run `make setup`)"
        )
    return root / "events"


def tracepoint_format(events: Path, category: str, name: str) -> str:
    """The format description of tracepoint category:name; KernelFeatureError
    when this kernel has no such tracepoint."""
    try:
        return (events / category / name / "format").read_text()
    except OSError:
        raise KernelFeatureError(f"this kernel has no {category}:{name} tracepoint") from None


# -- attaching a tracepoint program: perf_event_open + PERF_EVENT_IOC_SET_BPF --------

_NR_PERF_EVENT_OPEN = {
    "x86_64": 298, "aarch64": 241, "riscv64": 241, "loongarch64": 241, "armv7l": 364,
    "i686": 336, "s390x": 331,
}  # fmt: skip
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_ATTR_SIZE_VER5 = 112
# _IO('$', 0), _IO('$', 1), _IOW('$', 8, __u32) with the generic ioctl encoding
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408


TRACEPOINT_PREFIX = "tracepoint__"  # bcc's TRACEPOINT_PROBE(category, name) functions


def tracepoint_of(function: str) -> tuple[str, str]:
    """(category, name) of a bcc TRACEPOINT_PROBE function
    (tracepoint__<category>__<name>)."""
    category, _, name = function.removeprefix(TRACEPOINT_PREFIX).partition("__")
    return category, name


def attach_tracepoint(prog_fd: int, events: Path, category: str, name: str) -> int:
    """Runs the tracepoint program prog_fd at every hit of category:name, as
    bcc's bpf_attach_tracepoint does: a perf event of that tracepoint (pid
    -1, CPU 0: a program on a tracepoint runs on every CPU), the program set
    on it, enabled. Returns the perf event's fd: closing it (or exiting)
    detaches. Raises OSError."""
    nr = _NR_PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise KernelFeatureError(
            f"no perf_event_open syscall number known for {platform.machine()}"
        )
    tp_id = int((events / category / name / "id").read_text())
    attr = ct.create_string_buffer(PERF_ATTR_SIZE_VER5)
    # type, size, config, sample_period; wakeup_events @48
    struct.pack_into("<IIQQ", attr, 0, PERF_TYPE_TRACEPOINT, PERF_ATTR_SIZE_VER5, tp_id, 1)
    struct.pack_into("<I", attr, 48, 1)
    fd = int(_libc.syscall(ct.c_long(nr), attr, -1, 0, -1, ct.c_ulong(PERF_FLAG_FD_CLOEXEC)))
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    try:
        for req, arg in ((PERF_EVENT_IOC_SET_BPF, prog_fd), (PERF_EVENT_IOC_ENABLE, 0)):
            if _libc.ioctl(fd, ct.c_ulong(req), ct.c_int(arg)) != 0:
                err = ct.get_errno()
                raise OSError(err, os.strerror(err))
    except BaseException:
        os.close(fd)
        raise
    return fd


def detach_tracepoint(perf_fd: int) -> None:
    """Disables and closes a perf event from attach_tracepoint."""
    _libc.ioctl(perf_fd, ct.c_ulong(PERF_EVENT_IOC_DISABLE), ct.c_int(0))
    os.close(perf_fd)
