"""Received (options) templates, compiled once to a numpy record layout.

A Template is what an exporter defined: its field specifiers (element id,
length, enterprise number) and how many are scope fields. Compiling it picks
the decoder's columns (elements.COLUMN_OF; the first element of a column a
template has wins, the rest are skipped like unknown ones) and, when every
field has a fixed length, a packed structured dtype of one data record, so a
whole data set decodes with one np.frombuffer (decode_fixed). A template with
variable-length fields (length 65535, RFC 7011 §7) is read record by record
(decode_variable), with every length checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowtop.listen import elements

VARIABLE = 0xFFFF
_NATIVE = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}

Columns = dict[str, np.ndarray]  # ints: uint64 (n,); addresses: uint8 (n, 4|16); ifname: object


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field specifier of a template (RFC 7011 §3.2)."""

    ie: int
    length: int  # VARIABLE: variable length
    enterprise: int = 0


@dataclass(frozen=True)
class Template:
    """A compiled (options) template of one (exporter, domain, template id)."""

    template_id: int
    fields: tuple[FieldSpec, ...]
    scope_count: int = 0
    # where each wanted column is: field index
    chosen: dict[str, int] = field(init=False, repr=False, compare=False)
    fixed: bool = field(init=False, repr=False, compare=False)
    record_len: int = field(init=False, repr=False, compare=False)  # fixed; else the minimum
    dtype: np.dtype | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chosen: dict[str, int] = {}
        for i, f in enumerate(self.fields):
            col = elements.COLUMN_OF.get(f.ie) if f.enterprise == 0 else None
            if col is None or not _fits(col, f.length):
                continue
            best = chosen.get(col)
            prefs = elements.PREFERENCE[col]
            if best is None or prefs.index(f.ie) < prefs.index(self.fields[best].ie):
                chosen[col] = i
        fixed = all(f.length != VARIABLE for f in self.fields)
        set_attr = object.__setattr__
        set_attr(self, "chosen", chosen)
        set_attr(self, "fixed", fixed)
        set_attr(
            self, "record_len", sum(f.length if f.length != VARIABLE else 1 for f in self.fields)
        )
        dtype = None
        if fixed:
            by_index = {i: c for c, i in chosen.items()}
            parts = []
            for i, f in enumerate(self.fields):
                col = by_index.get(i)
                if col is None or col in elements.TEXT_COLUMNS:
                    parts.append((f"_{i}", f"V{f.length}"))
                elif col in elements.ADDRESS_COLUMNS:
                    parts.append((col, f"V{f.length}"))
                else:
                    parts.append((col, _NATIVE.get(f.length, f"V{f.length}")))
            dtype = np.dtype(parts)
            assert dtype.itemsize == self.record_len
        set_attr(self, "dtype", dtype)

    @property
    def is_options(self) -> bool:
        return self.scope_count > 0


def _fits(col: str, length: int) -> bool:
    if col in elements.ADDRESS_COLUMNS:
        return length == elements.ADDRESS_COLUMNS[col]
    if col in elements.TEXT_COLUMNS:
        return True
    if col in elements.NTP_COLUMNS:
        return length == 8
    return 1 <= length <= 8


def _uint(raw: np.ndarray, length: int) -> np.ndarray:
    """A big-endian unsigned column of any length 1..8 as uint64."""
    if length in _NATIVE:
        return raw.astype(np.uint64)
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, length)
    wide = np.zeros((len(b), 8), dtype=np.uint8)
    wide[:, 8 - length :] = b
    out: np.ndarray = wide.view(">u8").reshape(-1).astype(np.uint64)
    return out


def decode_fixed(t: Template, data: bytes, count: int, offset: int = 0) -> Columns:
    """count records of fixed-length template t from data at offset (all in bounds)."""
    assert t.dtype is not None
    recs = np.frombuffer(data, dtype=t.dtype, count=count, offset=offset)
    out: Columns = {}
    for col, i in t.chosen.items():
        if col in elements.TEXT_COLUMNS:
            continue
        length = t.fields[i].length
        raw = recs[col]
        if col in elements.ADDRESS_COLUMNS:
            out[col] = np.ascontiguousarray(raw).view(np.uint8).reshape(count, length)
        else:
            out[col] = _uint(raw, length)
    return out


Record = dict[str, int | bytes]


def decode_variable(t: Template, data: bytes, pos: int, end: int) -> list[Record] | None:
    """Records of t in data[pos:end], one dict each; None when a length runs
    past the set. Trailing bytes shorter than one record are padding."""
    by_index = {i: c for c, i in t.chosen.items()}
    out: list[Record] = []
    while end - pos >= t.record_len:
        rec: Record = {}
        for i, f in enumerate(t.fields):
            n = f.length
            if n == VARIABLE:
                if pos >= end:
                    return None
                n = data[pos]
                pos += 1
                if n == 255:
                    if pos + 2 > end:
                        return None
                    n = int.from_bytes(data[pos : pos + 2], "big")
                    pos += 2
            if pos + n > end:
                return None
            col = by_index.get(i)
            if col is not None:
                raw = data[pos : pos + n]
                if col in elements.ADDRESS_COLUMNS or col in elements.TEXT_COLUMNS:
                    if col in elements.TEXT_COLUMNS or n == elements.ADDRESS_COLUMNS[col]:
                        rec[col] = raw
                elif 1 <= n <= 8:
                    rec[col] = int.from_bytes(raw, "big")
            pos += n
        out.append(rec)
    return out


def columns_of(records: list[Record]) -> Columns:
    """decode_variable's records as columns (only those every record has)."""
    out: Columns = {}
    if not records:
        return out
    names = set(records[0])
    for r in records[1:]:
        names &= set(r)
    for col in names:
        if col in elements.TEXT_COLUMNS:
            continue
        if col in elements.ADDRESS_COLUMNS:
            buf = b"".join(bytes(r[col]) for r in records)
            out[col] = np.frombuffer(buf, dtype=np.uint8).reshape(len(records), -1).copy()
        else:
            out[col] = np.array([r[col] for r in records], dtype=np.uint64)
    return out
