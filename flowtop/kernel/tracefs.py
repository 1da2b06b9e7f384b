"""tracefs: where it is, mounting it when it is missing, tracepoint formats.

The sock_ops tracker's tracepoint programs need the kernel's tracepoint
descriptions (events/<category>/<name>/format and id). flowtop looks where
bcc does: /sys/kernel/debug/tracing when it exists, else /sys/kernel/tracing;
under `ip netns exec`, /sys is a fresh sysfs without tracefs, which is then
mounted at its usual place (as `make setup` does).
"""

from __future__ import annotations

import ctypes as ct
import logging
from pathlib import Path

from flowtop.errors import KernelFeatureError

log = logging.getLogger(__name__)

DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")
TRACEFS = Path("/sys/kernel/tracing")


def tracefs_dir() -> Path:
    return DEBUGFS_TRACING if DEBUGFS_TRACING.exists() else TRACEFS


def _mount_tracefs(where: Path) -> None:
    libc = ct.CDLL(None, use_errno=True)
    if where.is_dir() and libc.mount(b"tracefs", bytes(where), b"tracefs", 0, None) == 0:
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
