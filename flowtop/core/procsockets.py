"""Owners of the sockets that existed before flowtop started, read from /proc.

The kernel programs (bpf/owner.c) record a socket's owner when it is created;
a socket older than flowtop is reported with OWNER_UNKNOWN. `snapshot()`
reads, once at start-up, who owns every socket then:

1. every process's /proc/PID/fd: socket inodes -> pid (the lowest pid when
   several share a socket: the parent that made it, as a rule);
2. per distinct network namespace (the inode of /proc/PID/ns/net), its
   sockets once from /proc/PID/net/{tcp,tcp6,udp,udp6}: tuple, inode, uid;
3. the join on the inode, with /proc/PID/comm and the 0:: line of
   /proc/PID/cgroup (its path -> cgroup id: the directory's inode under the
   cgroup v2 mount).

The result is OWNER_RECORDs (kernel/owner_records.py) flagged
OWNER_FROM_PROC, so the owner table takes them like the kernel's. A process
that ends mid-scan, or a file that cannot be read, is counted in `errors`,
never raised. What /proc cannot tell is zero: sock_cookie, netns_cookie,
created_ns, gid. Listening TCP and unconnected UDP sockets have an all-zero
remote side.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from flowtop.kernel.owner_records import OWNER_FROM_PROC, OWNER_RECORD
from flowtop.sanitize import clean

PROC = "/proc"
CMDLINE_MAX_LEN = 1024
_CMDLINE_READ = 16384  # bytes of /proc/PID/cmdline read at most
# /proc/net files: proto number, whether the addresses are IPv6.
_NET_FILES = (("tcp", 6, False), ("tcp6", 6, True), ("udp", 17, False), ("udp6", 17, True))
_V4_MAPPED = bytes(10) + b"\xff\xff"
TCP_TIME_WAIT = 6  # no socket (inode 0): nobody owns it


@dataclass(frozen=True, slots=True)
class ProcSocket:
    """One socket line of /proc/PID/net/{tcp,udp}{,6}, addresses as in
    OWNER_TUPLE (16 bytes, IPv4 in the first 4; v4-mapped IPv6 as IPv4)."""

    family: int
    proto: int
    local: bytes
    lport: int
    remote: bytes
    rport: int
    uid: int
    inode: int


@dataclass(frozen=True, slots=True)
class ProcSnapshot:
    """What snapshot() found: OWNER_RECORDs of owned sockets, and the count
    of processes, network namespaces and sockets read and of reads that
    failed (a process that ended mid-scan, a file it may not read)."""

    records: np.ndarray
    processes: int
    namespaces: int
    sockets: int
    errors: int


def _addr(hexed: str) -> bytes:
    """A /proc/net address: 32-bit words, each printed as the host-order
    value of its network-order bytes."""
    raw = bytes.fromhex(hexed)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return raw.ljust(16, b"\0")


def parse_net(text: str, proto: int, ipv6: bool) -> list[ProcSocket]:
    """The sockets of one /proc/net/{tcp,udp}{,6} file (lines that do not
    parse are skipped; TIME_WAIT and other inode-0 entries have no owner)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            la, lp = f[1].split(":")
            ra, rp = f[2].split(":")
            state, uid, inode = int(f[3], 16), int(f[7]), int(f[9])
            local, remote = _addr(la), _addr(ra)
            lport, rport = int(lp, 16), int(rp, 16)
        except ValueError:
            continue
        if inode == 0 or (proto == 6 and state == TCP_TIME_WAIT):
            continue
        family = 6 if ipv6 else 4
        # An AF_INET6 socket speaking IPv4 (v4-mapped addresses) sends IPv4
        # packets: its tuple is an IPv4 one, as the kernel reports it.
        # A dual-stack listener's [::] stays IPv6 (it is no v4-mapped address).
        if ipv6 and local[:12] == _V4_MAPPED and (remote[:12] == _V4_MAPPED or not any(remote)):
            family = 4
            local = local[12:].ljust(16, b"\0")
            remote = remote[12:].ljust(16, b"\0") if any(remote) else bytes(16)
        out.append(ProcSocket(family, proto, local, lport, remote, rport, uid, inode))
    return out


def socket_inodes(pid: int, proc: str = PROC) -> set[int]:
    """Socket inodes among the open fds of a process (OSError: it is gone or
    may not be read)."""
    fd_dir = f"{proc}/{pid}/fd"
    out = set()
    for name in os.listdir(fd_dir):
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def cgroup_path(text: str) -> str | None:
    """The cgroup v2 path of /proc/PID/cgroup text: the "0::" line, which the
    kernel writes last, to the end (a cgroup name may contain a newline)."""
    if text.startswith("0::"):
        start = 3
    else:
        at = text.find("\n0::")
        if at < 0:
            return None
        start = at + 4
    return text[start:].removesuffix("\n")


def cmdline(pid: int, proc: str = PROC) -> str | None:
    """The command line of a process, arguments joined by spaces, cleaned for
    display and at most CMDLINE_MAX_LEN long; None when the process is gone
    (an empty string for kernel threads and zombies)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            raw = f.read(_CMDLINE_READ)
    except OSError:
        return None
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    # Line breaks inside an argument (a `-c` script) read as spaces, not as
    # words run together once clean() drops them.
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return clean(text, CMDLINE_MAX_LEN).strip()


def _pids(proc: str) -> list[int]:
    return sorted(int(n) for n in os.listdir(proc) if n.isdigit())


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def _read_net(proc: str, pids: list[int], name: str) -> tuple[str | None, int]:
    """/proc/PID/net/NAME of a namespace through the first of its pids still
    there, and 1 when none could be read (0 when the file does not exist:
    a namespace without IPv6)."""
    for pid in pids:
        try:
            return _read(f"{proc}/{pid}/net/{name}"), 0
        except FileNotFoundError:
            if os.path.exists(f"{proc}/{pid}"):
                return None, 0  # the process is there, the file is not
        except OSError:
            pass
    return None, 1


def _cgroup_id(root: str | None, path: str | None) -> int:
    if root is None or path is None:
        return 0
    try:
        return os.stat(root + path.rstrip("/") if path != "/" else root).st_ino
    except (OSError, ValueError):  # gone meanwhile; ValueError: a NUL in it
        return 0


def snapshot(
    cgroup_root: str | None, proc: str = PROC, pids: Iterable[int] | None = None
) -> ProcSnapshot:
    """Owners of every socket the processes have open now (see the module
    doc). cgroup_root: the cgroup v2 mount (kernel/cgroup.find_cgroup2()),
    None to leave cgroup ids 0. pids: the processes to look at (all of them
    by default)."""
    errors = 0
    owner_of: dict[int, int] = {}  # socket inode -> lowest pid
    netns_pids: dict[int, list[int]] = {}  # netns inode -> pids in it with sockets
    try:
        todo = sorted(pids) if pids is not None else _pids(proc)
    except OSError:
        return ProcSnapshot(np.zeros(0, OWNER_RECORD), 0, 0, 0, 1)
    seen = 0
    for pid in todo:
        try:
            inodes = socket_inodes(pid, proc)
            ns = os.stat(f"{proc}/{pid}/ns/net").st_ino
        except OSError:
            errors += 1
            continue
        seen += 1
        if not inodes:
            continue
        netns_pids.setdefault(ns, []).append(pid)
        for ino in inodes:
            owner_of.setdefault(ino, pid)  # pids go up: the first is the lowest
    socks: list[ProcSocket] = []
    for in_ns in netns_pids.values():
        for name, proto, v6 in _NET_FILES:
            text, failed = _read_net(proc, in_ns, name)
            errors += failed
            if text is not None:
                socks.extend(parse_net(text, proto, v6))
    who: dict[int, tuple[bytes, int] | None] = {}  # pid -> (comm, cgroup id), None: gone
    rows = []
    for s in socks:
        pid = owner_of.get(s.inode, 0)
        if not pid:
            continue  # no process holds it (an fd passed on and closed, a kernel socket)
        if pid not in who:
            try:
                comm = _read(f"{proc}/{pid}/comm").removesuffix("\n")
                cg = _cgroup_id(cgroup_root, cgroup_path(_read(f"{proc}/{pid}/cgroup")))
                who[pid] = (comm.encode("utf-8", "surrogateescape")[:15], cg)
            except OSError:
                errors += 1
                who[pid] = None
        w = who[pid]
        if w is not None:
            rows.append((s, pid, *w))
    out = np.zeros(len(rows), OWNER_RECORD)
    t, o = out["tuple"], out["owner"]
    for name, col in (
        ("family", [r[0].family for r in rows]),
        ("proto", [r[0].proto for r in rows]),
        ("lport", [r[0].lport for r in rows]),
        ("rport", [r[0].rport for r in rows]),
        ("local", [r[0].local for r in rows]),
        ("remote", [r[0].remote for r in rows]),
    ):
        t[name] = np.array(col, dtype=t.dtype[name]) if rows else t[name]
    o["tgid"] = [r[1] for r in rows]
    o["uid"] = [r[0].uid for r in rows]
    o["comm"] = [r[2] for r in rows]
    o["cgroup_id"] = [r[3] for r in rows]
    o["flags"] = OWNER_FROM_PROC
    return ProcSnapshot(out, seen, len(netns_pids), len(socks), errors)
