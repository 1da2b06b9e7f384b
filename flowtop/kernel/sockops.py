"""Local TCP health: bpf/sockops.c on the cgroup v2 root, read in batches.

The sock_ops program follows every TCP connection that opens on this host
(in flowtop's own network namespace by default) and keeps the socket's own
figures: smoothed RTT and its variation, minimum RTT, retransmitted and data
segments, retransmission timeouts, bytes acked/received, state. The
tcp:tcp_retransmit_skb tracepoint counts retransmit events beside it.
Entries are refreshed at every callback, and (per_ack) at every segment the
socket receives, so they stay one ACK behind what `ss -ti` shows.

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

import contextlib
import ctypes as ct
import errno
import logging
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flowtop.errors import ConfigError, FlowtopError, KernelFeatureError, NotRootError
from flowtop.kernel import layout
from flowtop.kernel.bpfsys import (
    BPF_PROG_ATTACH,
    BPF_PROG_DETACH,
    BPF_PROG_QUERY,
    bpf,
    prog_fd_by_id,
    prog_name_of,
)
from flowtop.kernel.program import BPF_DIR, BatchReader, _quiet_stderr, import_bcc

log = logging.getLogger(__name__)

# -- layouts (mirrors of bpf/sockops.h) -----------------------------------------------

ORIGIN_SOCKOPS = 1
ORIGIN_TRACEPOINT = 2
TCP_CLOSE = 7

CONN = np.dtype(
    [
        ("sock_cookie", "<u8"),
        ("skaddr", "<u8"),
        ("netns_cookie", "<u8"),
        ("retrans", "<u8"),
        ("data_segs", "<u8"),
        ("bytes_acked", "<u8"),
        ("bytes_received", "<u8"),
        ("tp_retrans", "<u8"),
        ("first_ns", "<u8"),
        ("last_ns", "<u8"),
        ("srtt_us", "<u4"),
        ("rttvar_us", "<u4"),
        ("min_rtt_us", "<u4"),
        ("rtt_samples", "<u4"),
        ("rto", "<u4"),
        ("state", "u1"),
        ("server", "u1"),
        ("origin", "u1"),
        ("pad", "u1"),
    ]
)
CLOSED_KEY = np.dtype([("sock_id", "<u8"), ("close_ns", "<u8")])
# struct ft_closed_conn; also what read_records() returns for every connection.
CONN_RECORD = np.dtype([("key", layout.FLOW_KEY), ("conn", CONN)])

# enum ft_so_counter, in order. The first four are data we lost.
COUNTERS = (
    "conn_map_full",
    "closed_map_full",
    "flags_failed",
    "tuple_collisions",
    "adopted",
    "stale_replaced",
    "retrans_untracked",
)
LOSS_COUNTERS = COUNTERS[:4]

_IDENT = np.dtype([("id", "<u8"), ("key", layout.FLOW_KEY)])

assert CONN.itemsize == 104
assert CONN_RECORD.itemsize == 152

PROG_PREFIX = "ftsops_"
PROG_NAME_RE = re.compile(r"^ftsops_(\d+)$")


def prog_name(pid: int | None = None) -> str:
    return f"{PROG_PREFIX}{pid if pid is not None else os.getpid()}"


# -- pure helpers -----------------------------------------------------------------


def _sock_id(r: np.ndarray) -> np.ndarray:
    c = r["conn"]
    out: np.ndarray = np.where(c["sock_cookie"] != 0, c["sock_cookie"], c["skaddr"])
    return out


def _ident(r: np.ndarray) -> np.ndarray:
    """Socket and 5-tuple as one comparable void value per record."""
    out = np.empty(len(r), dtype=_IDENT)
    out["id"] = _sock_id(r)
    out["key"] = r["key"]
    return out.view(f"V{_IDENT.itemsize}")


def merge_records(live: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """One CONN_RECORD per connection (socket and 5-tuple: a socket can be
    disconnected and connect again): the closed copy wins over a live one
    read just before the socket closed; a connection the batch read met twice
    (an entry moved while the map was walked) keeps its last copy.

    Both cases are rare: they are looked for on the 8-byte socket ids first,
    and only records sharing one are compared whole.
    """
    # Row selection and concatenation on raw bytes: numpy copies nested
    # structured records field by field, ten times slower.
    raw = f"V{CONN_RECORD.itemsize}"
    live = np.ascontiguousarray(live, dtype=CONN_RECORD)
    closed = np.ascontiguousarray(closed, dtype=CONN_RECORD)
    if len(live):
        ids = np.sort(_sock_id(live))
        if (ids[1:] == ids[:-1]).any():
            ident = _ident(live)
            _, first_rev = np.unique(ident[::-1], return_index=True)
            live = live.view(raw)[np.sort(len(ident) - 1 - first_rev)].view(CONN_RECORD)
        if len(closed):
            maybe = np.flatnonzero(np.isin(_sock_id(live), _sock_id(closed)))
            if len(maybe):
                keep = np.ones(len(live), dtype=bool)
                keep[maybe[np.isin(_ident(live[maybe]), _ident(closed))]] = False
                live = live.view(raw)[keep].view(CONN_RECORD)
    if not len(closed):
        return live
    out: np.ndarray = np.concatenate([live.view(raw), closed.view(raw)]).view(CONN_RECORD)
    return out


def to_tcp_samples(records: np.ndarray) -> np.ndarray:
    """CONN_RECORDs as layout.TCP_SAMPLE, oriented local -> remote.

    rtt_samples counts the kernel's RTT callbacks, one per round trip (it
    grows when srtt took fresh samples); rto counts timeouts of the socket.
    """
    c = records["conn"]
    out = np.zeros(len(records), dtype=layout.TCP_SAMPLE)
    out["key"] = records["key"]
    for name in ("srtt_us", "rttvar_us", "min_rtt_us", "rtt_samples", "data_segs", "rto"):
        out[name] = c[name]
    # total_retrans when sock_ops saw the socket; else the tracepoint's events.
    out["retrans"] = np.where(c["origin"] == ORIGIN_TRACEPOINT, c["tp_retrans"], c["retrans"])
    out["source"] = layout.TCP_SOURCE_SOCKOPS
    out["server"] = c["server"]
    out["state"] = c["state"]
    out["last_ns"] = c["last_ns"]
    return out


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
    """The cgroup v2 mount to attach sock_ops to, or None without one.

    A process in a mount namespace of its own where no cgroup2 is mounted
    (`ip netns exec` remounts /sys, which hides /sys/fs/cgroup) gets the
    cgroup root from a private mount made in a throw-away child (see
    _private_cgroup2): "/proc/self/fd/N" names it like a path.
    """
    try:
        mine = pick_cgroup2(cgroup2_mounts(Path("/proc/self/mountinfo").read_text()))
    except OSError:
        mine = None
    return mine if mine is not None else _private_cgroup2()


def _mount_tracefs(where: Path) -> None:
    """Mounts tracefs at its usual place when it is not there (as `make setup`
    does; under `ip netns exec`, /sys is a fresh sysfs without it)."""
    libc = ct.CDLL(None, use_errno=True)
    if where.is_dir() and libc.mount(b"tracefs", bytes(where), b"tracefs", 0, None) == 0:
        log.info("mounted tracefs at %s", where)


_PRIVATE_CG: list[int] = []  # the fd of the private cgroup2 root, once made

_PRIVATE_MOUNT = r"""
import ctypes, os, socket, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE, MNT_DETACH = 0x20000, 0x4000, 1 << 18, 2
if libc.unshare(CLONE_NEWNS) or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None):
    sys.exit(1)
d = tempfile.mkdtemp(prefix="flowtop-cg-")
try:
    if libc.mount(b"cgroup2", d.encode(), b"cgroup2", 0, None):
        sys.exit(2)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    libc.umount2(d.encode(), MNT_DETACH)
finally:
    os.rmdir(d)
socket.send_fds(socket.socket(fileno=int(sys.argv[1])), [b"c"], [fd])
"""


def _private_cgroup2() -> str | None:
    """The cgroup v2 root through a mount nobody else sees: a child process
    unshares its mount namespace, mounts cgroup2 on a temporary directory,
    passes an fd of it back, unmounts and removes the directory."""
    if _PRIVATE_CG:
        return f"/proc/self/fd/{_PRIVATE_CG[0]}"
    if os.geteuid() != 0:
        return None
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PRIVATE_MOUNT, str(theirs.fileno())],
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


# -- BTF: where tcp_sock.mdev_us is on the running kernel -------------------------

BTF_PATH = "/sys/kernel/btf/vmlinux"
_BTF_INT, _BTF_STRUCT, _BTF_UNION, _BTF_TYPEDEF = 1, 4, 5, 8
_BTF_QUALIFIERS = (9, 10, 11, 18)  # volatile, const, restrict, type_tag
# Bytes after struct btf_type, by kind: (fixed, per member) with vlen members.
_BTF_EXTRA: dict[int, tuple[int, int]] = {
    1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
    8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0),
    15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12),
}  # fmt: skip


def btf_member_offset(blob: bytes, struct_name: str, member: str) -> int | None:
    """Byte offset of a 4-byte integer member of a struct in a BTF blob,
    looking through anonymous struct/union members; None when not found."""
    if len(blob) < 24:
        return None
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", blob, 0
    )
    if magic != 0xEB9F:
        return None
    strs = blob[hdr_len + str_off : hdr_len + str_off + str_len]

    def name_at(off: int) -> str:
        end = strs.find(b"\0", off)
        return strs[off:end].decode(errors="replace")

    want = strs.find(b"\0" + struct_name.encode() + b"\0")
    if want < 0:
        return None
    want += 1
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    types: list[int] = [0]  # type id -> offset of its struct btf_type
    target = -1
    while pos + 12 <= end:
        name_off, info = struct.unpack_from("<II", blob, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind not in _BTF_EXTRA:
            return None
        types.append(pos)
        if kind == _BTF_STRUCT and name_off == want and target < 0:
            target = len(types) - 1
        fixed, per_member = _BTF_EXTRA[kind]
        pos += 12 + fixed + per_member * vlen
    if target < 0:
        return None

    def resolve(tid: int) -> tuple[int, int, int]:
        """(kind, size, type id) past typedefs and qualifiers."""
        for _ in range(32):
            if not 0 < tid < len(types):
                return (0, 0, tid)
            _n, info, size = struct.unpack_from("<III", blob, types[tid])
            kind = (info >> 24) & 0x1F
            if kind == _BTF_TYPEDEF or kind in _BTF_QUALIFIERS:
                tid = size
                continue
            return (kind, size, tid)
        return (0, 0, tid)

    def search(tid: int, base_bits: int, depth: int) -> int | None:
        p = types[tid]
        _n, info, _size = struct.unpack_from("<III", blob, p)
        kflag, vlen = info >> 31, info & 0xFFFF
        for i in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", blob, p + 12 + 12 * i)
            bits = int(m_off & 0xFFFFFF if kflag else m_off)
            if kflag and m_off >> 24:
                continue  # a bitfield
            kind, size, rt = resolve(m_type)
            if m_name == 0 and kind in (_BTF_STRUCT, _BTF_UNION) and depth < 8:
                found = search(rt, base_bits + bits, depth + 1)
                if found is not None:
                    return found
            elif name_at(m_name) == member:
                if kind != _BTF_INT or size != 4 or (base_bits + bits) % 32:
                    return None
                return (base_bits + bits) // 8
        return None

    return search(target, 0, 0)


def tcp_sock_offset(member: str, path: str = BTF_PATH) -> int | None:
    try:
        blob = Path(path).read_bytes()
    except OSError:
        return None
    return btf_member_offset(blob, "tcp_sock", member)


# -- bpf(2): query, attach, detach --------------------------------------------------

BPF_CGROUP_SOCK_OPS = 3
BPF_F_ALLOW_MULTI = 1 << 1
SO_NETNS_COOKIE = 71


def _query_sock_ops(cgroup_fd: int) -> list[int]:
    """Ids of the sock_ops programs attached to the cgroup itself."""
    cap = 64
    while True:
        ids = (ct.c_uint32 * cap)()
        attr = ct.create_string_buffer(64)
        struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_SOCK_OPS, 0, 0,
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


def _attach(cgroup_fd: int, prog_fd: int) -> None:
    attr = ct.create_string_buffer(20)
    struct.pack_into("<IIIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_SOCK_OPS,
                     BPF_F_ALLOW_MULTI, 0)  # fmt: skip
    bpf(BPF_PROG_ATTACH, attr)


def _detach(cgroup_fd: int, prog_fd: int) -> None:
    attr = ct.create_string_buffer(20)
    struct.pack_into("<IIIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_SOCK_OPS, 0, 0)
    bpf(BPF_PROG_DETACH, attr)


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


def netns_cookie() -> int:
    """Cookie of the calling thread's network namespace (SO_NETNS_COOKIE)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot read the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+): "
                f"{exc.strerror}"
            ) from None
    value: int = struct.unpack("<Q", raw)[0]
    return value


def remove_stale_programs(cgroup: str | None = None, everyone: bool = False) -> list[str]:
    """Detach flowtop sock_ops programs whose owner is gone (with everyone:
    every flowtop sock_ops program but this process's live ones). Returns
    what was removed, one "name (id N) from PATH" each."""
    path = cgroup or find_cgroup2()
    if path is None:
        return []
    try:
        cg_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise KernelFeatureError(f"cannot open cgroup {path}: {exc.strerror}") from None
    removed: list[str] = []
    try:
        try:
            ids = _query_sock_ops(cg_fd)
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot list sock_ops programs on {path}: {exc.strerror}"
            ) from None
        for prog_id in ids:
            try:
                pfd = prog_fd_by_id(prog_id)
            except OSError:
                continue  # detached meanwhile
            try:
                name = prog_name_of(pfd)
                m = PROG_NAME_RE.match(name)
                if not m:
                    continue
                pid = int(m.group(1))
                # (ours too: a tracker of this process dropped without close())
                if holds_prog(pid, prog_id) and (pid == os.getpid() or not everyone):
                    continue
                try:
                    _detach(cg_fd, pfd)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        continue  # its owner or another run removed it first
                    raise KernelFeatureError(
                        f"cannot remove stale sock_ops program {name}: {exc.strerror}"
                    ) from None
                removed.append(f"{name} (id {prog_id}) from {path}")
            finally:
                os.close(pfd)
    finally:
        os.close(cg_fd)
    for what in removed:
        log.info("removed stale sock_ops program %s", what)
    return removed


# -- the tracker ----------------------------------------------------------------------


class SockOpsTracker:
    """Per-connection TCP figures of this host's sockets (see the module doc).

    netns_only: only sockets of the network namespace of the thread that
    calls start(); otherwise every namespace's (their 5-tuples may collide:
    counted in tuple_collisions).

    per_ack: also refresh a connection on every segment it receives, so that
    its srtt is at most one ACK behind `ss` (without: up to a round trip, and
    several while a loss is repaired). Costs one program run per received
    segment of a tracked socket.
    """

    def __init__(
        self,
        cgroup: str | None = None,
        map_size: int = 65536,
        netns_only: bool = True,
        per_ack: bool = True,
    ) -> None:
        if map_size < 1:
            raise ConfigError(f"sock_ops map size must be at least 1, not {map_size}")
        self.cgroup_arg = cgroup
        self.map_size = map_size
        self.netns_only = netns_only
        self.per_ack = per_ack
        self.cgroup: str | None = None
        self.netns_cookie: int | None = None
        self.prog_name = prog_name()
        self.prog_id: int | None = None
        self.rttvar_available = False
        self.removed_stale: list[str] = []
        self._bpf: Any = None
        self._prog_fd = -1
        self._cg_fd = -1
        self._attached = False
        self._reader: BatchReader | None = None
        self._drainer: BatchReader | None = None

    def __enter__(self) -> SockOpsTracker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._bpf is not None:
            return
        if os.geteuid() != 0:
            raise NotRootError(
                "local TCP health needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
            )
        bcc = import_bcc()
        cgroup = self.cgroup_arg or find_cgroup2()
        if cgroup is None:
            raise KernelFeatureError(
                "no cgroup v2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)"
            )
        if not os.path.isfile(os.path.join(cgroup, "cgroup.controllers")):
            raise KernelFeatureError(f"{cgroup} is not a cgroup v2 directory")
        tracefs = Path(bcc.TRACEFS)
        tp_format = tracefs / "events" / "tcp" / "tcp_retransmit_skb" / "format"
        if not (tracefs / "events").is_dir():
            _mount_tracefs(tracefs)
        if not (tracefs / "events").is_dir():
            raise KernelFeatureError(
                "tracefs is not mounted at /sys/kernel/tracing "
                "(mount -t tracefs tracefs /sys/kernel/tracing, or run `make setup`)"
            )
        if not tp_format.is_file():
            raise KernelFeatureError("this kernel has no tcp:tcp_retransmit_skb tracepoint")
        src = BPF_DIR / "sockops.c"
        if not src.is_file():
            raise KernelFeatureError(f"BPF source not found: {src}")
        self.cgroup = cgroup
        self.netns_cookie = netns_cookie()
        mdev_off = tcp_sock_offset("mdev_us")
        self.rttvar_available = mdev_off is not None
        has_err = "field:int err;" in tp_format.read_text()
        cflags = [
            f"-I{BPF_DIR}",
            f"-DFT_PROG_NAME={self.prog_name}",
            f"-DFT_CONN_MAP_SIZE={self.map_size}",
            f"-DFT_CLOSED_MAP_SIZE={self.map_size}",
            f"-DFT_NETNS_ONLY={int(self.netns_only)}",
            f"-DFT_NETNS_COOKIE={self.netns_cookie}ULL",
            f"-DFT_MDEV_OFF={mdev_off if mdev_off is not None else -1}",
            f"-DFT_TP_HAS_ERR={int(has_err)}",
            f"-DFT_PER_ACK={int(self.per_ack)}",
        ]
        try:
            self.removed_stale = remove_stale_programs(cgroup)
            with _quiet_stderr():
                self._bpf = bcc.BPF(src_file=str(src).encode(), cflags=cflags)
            fn = self._bpf.load_func(self.prog_name.encode(), bcc.BPF.SOCK_OPS)
            self._prog_fd = fn.fd
        except FlowtopError:
            self.close()
            raise
        except Exception as exc:  # bcc raises bare Exception for compile/load failures
            self.close()
            raise KernelFeatureError(
                f"cannot compile or load the sock_ops program: {exc}"
            ) from None
        try:
            self._cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
            _attach(self._cg_fd, self._prog_fd)
            self._attached = True
        except OSError as exc:
            self.close()
            raise KernelFeatureError(
                f"cannot attach sock_ops to {cgroup}: {exc.strerror}"
            ) from None
        self.prog_id = self._own_prog_id()
        lib = bcc.libbcc.lib
        self._reader = BatchReader(
            lib, self.map_size, layout.FLOW_KEY, CONN, what="the sock_ops connection map"
        )
        self._drainer = BatchReader(
            lib, self.map_size, CLOSED_KEY, CONN_RECORD, True, "the sock_ops closed map"
        )

    def _own_prog_id(self) -> int | None:
        with open(f"/proc/self/fdinfo/{self._prog_fd}") as f:
            for line in f:
                if line.startswith("prog_id:"):
                    return int(line.split()[1])
        return None

    def close(self) -> None:
        """Detach and free; safe to call twice and after a failed start()."""
        if self._attached:
            self._attached = False
            try:
                _detach(self._cg_fd, self._prog_fd)
            except OSError as exc:
                log.warning("detaching %s from %s: %s", self.prog_name, self.cgroup, exc)
        if self._cg_fd >= 0:
            os.close(self._cg_fd)
            self._cg_fd = -1
        if self._bpf is not None:
            prog, self._bpf = self._bpf, None
            with contextlib.suppress(Exception):
                prog.cleanup()
        self._prog_fd = -1
        self._reader = None
        self._drainer = None

    @property
    def started(self) -> bool:
        return self._bpf is not None and self._attached

    # -- data -------------------------------------------------------------------------

    def read_records(self) -> np.ndarray:
        """Every tracked connection as a CONN_RECORD: the live ones, then
        those closed since the last read (state TCP_CLOSE), each once."""
        if self._bpf is None or self._reader is None or self._drainer is None:
            raise FlowtopError("the sock_ops tracker is not started")
        keys, vals = self._reader.read(self._bpf[b"conns"].map_fd)
        ks = layout.FLOW_KEY.itemsize
        raw = np.empty((len(keys), CONN_RECORD.itemsize), dtype=np.uint8)
        raw[:, :ks] = keys.view(np.uint8).reshape(len(keys), ks)
        raw[:, ks:] = vals.view(np.uint8).reshape(len(vals), CONN.itemsize)
        live = raw.view(CONN_RECORD).reshape(len(keys))
        _ck, closed = self._drainer.read(self._bpf[b"closed"].map_fd)
        return merge_records(live, closed.copy())

    def read(self, now_ns: int | None = None) -> np.ndarray:
        """layout.TCP_SAMPLE records, one per connection, cumulative.

        now_ns is the caller's drain time; this source does not need it (the
        kernel stamps last_ns on every update) but takes it so that both TCP
        sources are read the same way.
        """
        del now_ns
        return to_tcp_samples(self.read_records())

    def stats(self) -> dict[str, int]:
        """Every counter of bpf/sockops.h, losses and bookkeeping alike."""
        if self._bpf is None:
            return dict.fromkeys(COUNTERS, 0)
        table = self._bpf[b"so_counters"]
        return {name: int(sum(table[ct.c_int(i)])) for i, name in enumerate(COUNTERS)}

    def counters(self) -> dict[str, int]:
        """What could not be accounted for: connections not tracked (map
        full, callbacks refused, 5-tuple held by another socket) and closed
        connections whose last record was dropped."""
        s = self.stats()
        return {name: s[name] for name in LOSS_COUNTERS}
