"""The few raw bpf(2) calls flowtop makes where no library does them.

bcc compiles and loads programs and reads maps; what it does not offer (sock_ops
attachment with BPF_F_ALLOW_MULTI, TCX links, queries, object info) goes
through :func:`bpf` here, one place for the syscall number and the command
values (include/uapi/linux/bpf.h). Every call raises OSError with the
kernel's errno; callers turn that into a FlowtopError with one clear line.
The fds it returns are O_CLOEXEC, as every bpf(2) fd is.
"""

from __future__ import annotations

import ctypes as ct
import os
import platform
import struct
from typing import Any

from flowtop.errors import KernelFeatureError

_NR_BPF = {
    "x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "ppc64": 361,
    "s390x": 351, "armv7l": 386, "i686": 357, "loongarch64": 280,
}  # fmt: skip

# enum bpf_cmd
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_DETACH = 34

# enum bpf_prog_type
BPF_PROG_TYPE_SCHED_CLS = 3

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


def bpf(cmd: int, attr: Any) -> int:
    """bpf(cmd, attr, sizeof attr) on a ctypes buffer; the result (an fd or 0)."""
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise KernelFeatureError(f"no bpf(2) syscall number known for {platform.machine()}")
    res = int(_libc.syscall(ct.c_long(nr), ct.c_int(cmd), attr, ct.c_uint(len(attr))))
    if res < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def prog_fd_by_id(prog_id: int) -> int:
    """An fd on the loaded program with this id (BPF_PROG_GET_FD_BY_ID)."""
    attr = ct.create_string_buffer(12)
    struct.pack_into("<III", attr, 0, prog_id, 0, 0)
    return bpf(BPF_PROG_GET_FD_BY_ID, attr)


def prog_name_of(fd: int) -> str:
    """The program's name as the kernel keeps it (15 characters at most)."""
    info = ct.create_string_buffer(80)  # struct bpf_prog_info up to name[16]
    attr = ct.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, fd, len(info), ct.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
