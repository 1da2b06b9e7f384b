"""Where a struct member is on the running kernel, and what an enum's values are, from its BTF.

The sock_ops program reads tcp_sock.mdev_us (the RTT variation) at an
offset that differs between kernel builds, the drop reasons program
(bpf/drops.c) sk_buff and net_device members; /sys/kernel/btf/vmlinux says
where they are, and what `enum skb_drop_reason` holds. This is a reader of
just enough of the BTF format (Documentation/bpf/btf.rst) for that: type
records are walked once (Btf), a struct found by name, its members (and
those of anonymous structs and unions inside it) searched by name, a dotted
path going through named struct members; an enum's constants read by name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

BTF_PATH = "/sys/kernel/btf/vmlinux"
_BTF_INT, _BTF_PTR, _BTF_STRUCT, _BTF_UNION, _BTF_ENUM, _BTF_TYPEDEF = 1, 2, 4, 5, 6, 8
_BTF_ENUM64 = 19
_BTF_QUALIFIERS = (9, 10, 11, 18)  # volatile, const, restrict, type_tag
# Bytes after struct btf_type, by kind: (fixed, per member) with vlen members.
_BTF_EXTRA: dict[int, tuple[int, int]] = {
    1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
    8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0),
    15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12),
}  # fmt: skip
POINTER_SIZE = 8  # BTF does not record it; every architecture flowtop runs on is 64-bit


@dataclass(frozen=True, slots=True)
class Member:
    """One struct member as the kernel lays it out: its byte offset from the
    start of the outermost struct, its size in bytes and what it is
    ("int", "ptr", "struct", "union", "enum", "other")."""

    offset: int
    size: int
    kind: str


_KIND_NAMES = {_BTF_INT: "int", _BTF_PTR: "ptr", _BTF_STRUCT: "struct", _BTF_UNION: "union",
               _BTF_ENUM: "enum", _BTF_ENUM64: "enum"}  # fmt: skip


class Btf:
    """A BTF blob with its type records indexed once (see the module doc).
    A blob that is not BTF, or has a kind this reader does not know, reads
    as empty: every lookup answers None."""

    def __init__(self, blob: bytes) -> None:
        self._blob = blob
        self._types: list[int] = [0]  # type id -> offset of its struct btf_type
        self._strs = b""
        if len(blob) < 24:
            return
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob, 0
        )
        if magic != 0xEB9F:
            return
        self._strs = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        types = self._types
        while pos + 12 <= end:
            info = struct.unpack_from("<I", blob, pos + 4)[0]
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind not in _BTF_EXTRA:
                self._types = [0]
                return
            types.append(pos)
            fixed, per_member = _BTF_EXTRA[kind]
            pos += 12 + fixed + per_member * vlen

    @classmethod
    def load(cls, path: str = BTF_PATH) -> Btf | None:
        """The running kernel's BTF; None when it has none."""
        try:
            return cls(Path(path).read_bytes())
        except OSError:
            return None

    def _name_at(self, off: int) -> str:
        end = self._strs.find(b"\0", off)
        return self._strs[off:end].decode(errors="replace")

    def _find(self, name: str, kinds: tuple[int, ...]) -> int:
        """The first type id of one of kinds named name; -1 when none."""
        want = self._strs.find(b"\0" + name.encode() + b"\0")
        if want < 0:
            return -1
        want += 1
        for tid in range(1, len(self._types)):
            name_off, info = struct.unpack_from("<II", self._blob, self._types[tid])
            if name_off == want and (info >> 24) & 0x1F in kinds:
                return tid
        return -1

    def _resolve(self, tid: int) -> tuple[int, int, int]:
        """(kind, size, type id) past typedefs and qualifiers."""
        for _ in range(32):
            if not 0 < tid < len(self._types):
                return (0, 0, tid)
            _n, info, size = struct.unpack_from("<III", self._blob, self._types[tid])
            kind = (info >> 24) & 0x1F
            if kind == _BTF_TYPEDEF or kind in _BTF_QUALIFIERS:
                tid = size
                continue
            return (kind, POINTER_SIZE if kind == _BTF_PTR else size, tid)
        return (0, 0, tid)

    def _search(self, tid: int, name: str, depth: int) -> tuple[int, int, int, int] | None:
        """(bit offset, kind, size, type id) of member name of struct/union
        tid, looking through anonymous members; bitfields never match."""
        p = self._types[tid]
        _n, info, _size = struct.unpack_from("<III", self._blob, p)
        kflag, vlen = info >> 31, info & 0xFFFF
        for i in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", self._blob, p + 12 + 12 * i)
            bits = int(m_off & 0xFFFFFF if kflag else m_off)
            if kflag and m_off >> 24:
                continue  # a bitfield
            kind, size, rt = self._resolve(m_type)
            if m_name == 0 and kind in (_BTF_STRUCT, _BTF_UNION) and depth < 8:
                found = self._search(rt, name, depth + 1)
                if found is not None:
                    return (bits + found[0], *found[1:])
            elif m_name != 0 and self._name_at(m_name) == name:
                return (bits, kind, size, rt)
        return None

    def member(self, struct_name: str, path: str) -> Member | None:
        """Member path ("dev", or "nd_net.net" through the named struct
        member nd_net) of struct struct_name; None when not found or not on
        a byte boundary."""
        tid = self._find(struct_name, (_BTF_STRUCT,))
        if tid < 0:
            return None
        bits = 0
        kind = size = 0
        parts = path.split(".")
        for i, part in enumerate(parts):
            found = self._search(tid, part, 0)
            if found is None:
                return None
            m_bits, kind, size, tid = found
            bits += m_bits
            if i < len(parts) - 1 and kind not in (_BTF_STRUCT, _BTF_UNION):
                return None
        if bits % 8:
            return None
        return Member(bits // 8, size, _KIND_NAMES.get(kind, "other"))

    def enum(self, name: str) -> dict[str, int] | None:
        """{constant: value} of enum name (ENUM or ENUM64); None when absent."""
        tid = self._find(name, (_BTF_ENUM, _BTF_ENUM64))
        if tid < 0:
            return None
        p = self._types[tid]
        _n, info, _size = struct.unpack_from("<III", self._blob, p)
        kflag, vlen, kind = info >> 31, info & 0xFFFF, (info >> 24) & 0x1F
        out: dict[str, int] = {}
        for i in range(vlen):
            if kind == _BTF_ENUM:
                n_off, raw = struct.unpack_from("<II", self._blob, p + 12 + 8 * i)
                value = raw - (1 << 32) if kflag and raw >> 31 else raw
            else:
                n_off, lo, hi = struct.unpack_from("<III", self._blob, p + 12 + 12 * i)
                value = hi << 32 | lo
                if kflag and hi >> 31:
                    value -= 1 << 64
            out[self._name_at(n_off)] = value
        return out


def btf_member_offset(blob: bytes, struct_name: str, member: str) -> int | None:
    """Byte offset of a 4-byte integer member of a struct in a BTF blob,
    looking through anonymous struct/union members; None when not found."""
    m = Btf(blob).member(struct_name, member)
    if m is None or m.kind != "int" or m.size != 4 or m.offset % 4:
        return None
    return m.offset


def tcp_sock_offset(member: str, path: str = BTF_PATH) -> int | None:
    try:
        blob = Path(path).read_bytes()
    except OSError:
        return None
    return btf_member_offset(blob, "tcp_sock", member)
