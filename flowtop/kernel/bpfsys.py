"""The raw bpf(2) calls flowtop makes: one place for the syscall and the command values.

bcc compiles and loads the programs (flowtop.kernel.build); everything done
with them afterwards goes through :func:`bpf` on their file descriptors: map
reads and writes (flowtop.kernel.maps), sock_ops attachment with
BPF_F_ALLOW_MULTI, TCX links, queries, object info. The command numbers and
``union bpf_attr`` layouts are the kernel's uapi (include/uapi/linux/bpf.h).
Every call raises OSError with the kernel's errno; callers turn that into a
FlowtopError with one clear line. The fds it returns are O_CLOEXEC, as every
bpf(2) fd is.
"""

from __future__ import annotations

import ctypes as ct
import os
import platform
import struct
from dataclasses import dataclass
from typing import Any

from flowtop.errors import KernelFeatureError

_NR_BPF = {
    "x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "ppc64": 361,
    "s390x": 351, "armv7l": 386, "i686": 357, "loongarch64": 280,
}  # fmt: skip

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_BTF_LOAD = 18
BPF_BTF_GET_FD_BY_ID = 19
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27
BPF_LINK_CREATE = 28
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_DETACH = 34

# enum bpf_prog_type
BPF_PROG_TYPE_SCHED_CLS = 3

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long
_NR = _NR_BPF.get(platform.machine())


def bpf(cmd: int, attr: Any) -> int:
    """bpf(cmd, attr, sizeof attr) on a ctypes buffer; the result (an fd or 0)."""
    if _NR is None:
        raise KernelFeatureError(f"no bpf(2) syscall number known for {platform.machine()}")
    res = int(_libc.syscall(ct.c_long(_NR), ct.c_int(cmd), attr, ct.c_uint(len(attr))))
    if res < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def prog_fd_by_id(prog_id: int) -> int:
    """An fd on the loaded program with this id (BPF_PROG_GET_FD_BY_ID)."""
    attr = ct.create_string_buffer(12)
    struct.pack_into("<III", attr, 0, prog_id, 0, 0)
    return bpf(BPF_PROG_GET_FD_BY_ID, attr)


def _obj_info(fd: int, size: int) -> bytes:
    info = ct.create_string_buffer(size)
    obj_info_into(fd, info)
    return info.raw


def obj_info_into(fd: int, info: Any) -> None:
    """BPF_OBJ_GET_INFO_BY_FD into a ctypes buffer (pointers in it already set)."""
    attr = ct.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, fd, len(info), ct.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)


def obj_info(fd: int, size: int) -> bytes:
    """The first size bytes of the object's info (struct bpf_{prog,map,btf}_info)."""
    return _obj_info(fd, size)


def prog_name_of(fd: int) -> str:
    """The program's name as the kernel keeps it (15 characters at most)."""
    info = _obj_info(fd, 80)  # struct bpf_prog_info up to name[16]
    return info[64:80].split(b"\0", 1)[0].decode(errors="replace")


def prog_name_by_id(prog_id: int) -> str | None:
    """The name of the loaded program with this id; None when it is gone."""
    try:
        fd = prog_fd_by_id(prog_id)
    except OSError:
        return None  # unloaded since whoever found the id
    try:
        return prog_name_of(fd)
    finally:
        os.close(fd)


def prog_id_of(fd: int) -> int:
    """The program's id (struct bpf_prog_info.id)."""
    value: int = struct.unpack_from("<I", _obj_info(fd, 8), 4)[0]
    return value


# struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16]
_MAP_INFO = struct.Struct("<IIIIII16s")


@dataclass(frozen=True, slots=True)
class MapInfo:
    """A map as the kernel describes it (BPF_OBJ_GET_INFO_BY_FD)."""

    type: int
    map_id: int
    key_size: int
    value_size: int
    max_entries: int
    name: str


def map_info(fd: int) -> MapInfo:
    typ, map_id, ks, vs, n, _flags, name = _MAP_INFO.unpack_from(_obj_info(fd, _MAP_INFO.size))
    return MapInfo(typ, map_id, ks, vs, n, name.split(b"\0", 1)[0].decode(errors="replace"))
