"""Where a struct member is on the running kernel, from its BTF.

The sock_ops program reads tcp_sock.mdev_us (the RTT variation) at an
offset that differs between kernel builds; /sys/kernel/btf/vmlinux says
where it is. This is a reader of just enough of the BTF format
(Documentation/bpf/btf.rst) for that: type records are walked once, the
struct found by name, its members (and those of anonymous structs and unions
inside it) searched for a 4-byte integer.
"""

from __future__ import annotations

import struct
from pathlib import Path

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
