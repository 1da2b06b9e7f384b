"""Programs on a cgroup: attach, query, detach, and the stale ones.

Written for the sock_ops program; the generic functions (query_progs,
attach_prog, detach_prog, remove_stale) take the attach type and the name
pattern, and serve the socket owner programs too (owners.py: ``ftown[cie]_<pid>``
on sock_create, cgroup_skb egress and ingress), with the same ownership rule.

Ownership. The sock_ops program is named ``ftsops_<pid>`` (bpf program names
have 15 characters: the longest pid, 4194304, fits). Attached with
BPF_F_ALLOW_MULTI, it runs after whatever else is attached and never
replaces it. A cgroup attachment outlives a crashed process, so each start
removes ``ftsops_*`` programs whose owner is gone: the pid in the name must be
a live process that still holds the program (an fd with its prog_id in
/proc/<pid>/fdinfo), which a reused pid does not. Nothing else is touched.
(A flowtop in another pid namespace attached to the same cgroup would look
dead from here: run one flowtop per cgroup v2 hierarchy.)
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
import re
import struct
from collections.abc import Sequence

from flowtop.errors import KernelFeatureError
from flowtop.kernel.bpfsys import (
    BPF_PROG_ATTACH,
    BPF_PROG_DETACH,
    BPF_PROG_QUERY,
    bpf,
    prog_fd_by_id,
    prog_name_of,
)
from flowtop.kernel.cgroup import find_cgroup2

log = logging.getLogger(__name__)

PROG_PREFIX = "ftsops_"
PROG_NAME_RE = re.compile(r"^ftsops_(\d+)$")

BPF_CGROUP_SOCK_OPS = 3
BPF_F_ALLOW_MULTI = 1 << 1


def sockops_prog_name(pid: int | None = None) -> str:
    """ftsops_<pid>: the name flowtop's sock_ops program of process pid has."""
    return f"{PROG_PREFIX}{pid if pid is not None else os.getpid()}"


def query_progs(cgroup_fd: int, attach_type: int) -> list[int]:
    """Ids of the programs attached to the cgroup itself at attach_type."""
    cap = 64
    while True:
        ids = (ct.c_uint32 * cap)()
        attr = ct.create_string_buffer(64)
        struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, attach_type, 0, 0,
                         ct.addressof(ids), cap)  # fmt: skip
        try:
            bpf(BPF_PROG_QUERY, attr)
        except OSError as exc:
            if exc.errno == errno.ENOSPC and cap < 65536:
                cap *= 16
                continue
            raise
        count = struct.unpack_from("<I", attr, 24)[0]
        return list(ids[: min(count, cap)])


def attach_prog(cgroup_fd: int, prog_fd: int, attach_type: int) -> None:
    """BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI: beside whatever is there."""
    attr = ct.create_string_buffer(20)
    struct.pack_into("<IIIII", attr, 0, cgroup_fd, prog_fd, attach_type, BPF_F_ALLOW_MULTI, 0)
    bpf(BPF_PROG_ATTACH, attr)


def detach_prog(cgroup_fd: int, prog_fd: int, attach_type: int) -> None:
    attr = ct.create_string_buffer(20)
    struct.pack_into("<IIIII", attr, 0, cgroup_fd, prog_fd, attach_type, 0, 0)
    bpf(BPF_PROG_DETACH, attr)


def query_sock_ops(cgroup_fd: int) -> list[int]:
    """Ids of the sock_ops programs attached to the cgroup itself."""
    return query_progs(cgroup_fd, BPF_CGROUP_SOCK_OPS)


def attach_sock_ops(cgroup_fd: int, prog_fd: int) -> None:
    attach_prog(cgroup_fd, prog_fd, BPF_CGROUP_SOCK_OPS)


def detach_sock_ops(cgroup_fd: int, prog_fd: int) -> None:
    detach_prog(cgroup_fd, prog_fd, BPF_CGROUP_SOCK_OPS)


def holds_prog(pid: int, prog_id: int) -> bool:
    """Whether process pid has an fd open on bpf program prog_id."""
    want = f"prog_id:\t{prog_id}"
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except FileNotFoundError:
        return False
    except PermissionError:
        return True  # cannot tell: leave it alone
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        if any(line.strip() == want for line in text.splitlines()):
            return True
    return False


def remove_stale_programs(cgroup: str | None = None, everyone: bool = False) -> list[str]:
    """Detach flowtop sock_ops programs whose owner is gone (with everyone:
    every flowtop sock_ops program but this process's live ones). Returns
    what was removed, one "name (id N) from PATH" each."""
    return remove_stale((BPF_CGROUP_SOCK_OPS,), PROG_NAME_RE, "sock_ops", cgroup, everyone)


def remove_stale(
    attach_types: Sequence[int],
    name_re: re.Pattern[str],
    what: str,
    cgroup: str | None = None,
    everyone: bool = False,
) -> list[str]:
    """Detach the programs at attach_types whose name matches name_re (its
    group 1: the owner's pid) and whose owner is gone (with everyone: all
    of them but this process's live ones), from cgroup (default: the v2
    root). what names them in errors and the log ("sock_ops"). Returns what
    was removed, one "name (id N) from PATH" each."""
    path = cgroup or find_cgroup2()
    if path is None:
        return []
    try:
        cg_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise KernelFeatureError(f"cannot open cgroup {path}: {exc.strerror}") from None
    removed: list[str] = []
    try:
        for attach_type in attach_types:
            removed += _remove_stale_at(cg_fd, path, attach_type, name_re, what, everyone)
    finally:
        os.close(cg_fd)
    for line in removed:
        log.info("removed stale %s program %s", what, line)
    return removed


def _remove_stale_at(
    cg_fd: int, path: str, attach_type: int, name_re: re.Pattern[str], what: str, everyone: bool
) -> list[str]:
    removed: list[str] = []
    try:
        ids = query_progs(cg_fd, attach_type)
    except OSError as exc:
        raise KernelFeatureError(f"cannot list {what} programs on {path}: {exc.strerror}") from None
    for prog_id in ids:
        try:
            pfd = prog_fd_by_id(prog_id)
        except OSError:
            continue  # detached meanwhile
        try:
            name = prog_name_of(pfd)
            m = name_re.match(name)
            if not m:
                continue
            pid = int(m.group(1))
            # (ours too: a tracker of this process dropped without close())
            if holds_prog(pid, prog_id) and (pid == os.getpid() or not everyone):
                continue
            try:
                detach_prog(cg_fd, pfd, attach_type)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # its owner or another run removed it first
                raise KernelFeatureError(
                    f"cannot remove stale {what} program {name}: {exc.strerror}"
                ) from None
            removed.append(f"{name} (id {prog_id}) from {path}")
        finally:
            os.close(pfd)
    return removed
