"""Names from the wire in the view: the name columns of the rows a query
reads, the WireNames name table as per-name results, and the name group.

The engine writes per flow the WireNames.names ids of both ends' names, the
CNAME chain end and the named end's source (origin fields.WIRE, from
wirenames/names.WireNames). As with owners (query/owners.py), names are
tested per name, never per flow: a filter term tests each name once and
indexes the result with the flows' ids.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from flowtop.query.rowcolumns import RowColumns
from flowtop.sanitize import clean
from flowtop.wirenames.hostname import NAME_MAX_LEN
from flowtop.wirenames.names import SOURCE_NAMES

if TYPE_CHECKING:
    from flowtop.core.flowtable import FlowTable
    from flowtop.core.owners import NameTable

# The flow table's name columns (core/fields.py, origin WIRE) the view reads.
NAME_COLUMNS = ("src_name_id", "dst_name_id", "name_cname_id", "name_source")
NO_NAME = "-"  # the group of flows without a wire name


class NameSource(Protocol):
    """What the view needs of the engine's WireNames."""

    names: NameTable


class NameArrays:
    """Per-name results over WireNames.names, cached while the table does
    not grow (ids are never reused). The name table is read without the
    WireNames lock: its values list only grows (appends are atomic)."""

    def __init__(self, wire: NameSource) -> None:
        self.wire = wire
        self._hits: dict[str, tuple[int, np.ndarray]] = {}
        self._shown: list[str | None] = []

    def matches(self, key: str, test: Callable[[str], bool]) -> np.ndarray:
        """test(name) for every name id (False for none), indexed by id."""
        values = list(self.wire.names.values)
        n = len(values)
        got = self._hits.get(key)
        if got is not None and got[0] == n:
            return got[1]
        hit = np.array([test(v) if v else False for v in values], dtype=np.bool_)
        if len(self._hits) > 256:
            self._hits.clear()
        self._hits[key] = (n, hit)
        return hit

    def name(self, nid: int) -> str | None:
        """The cleaned name of an id (None: none), cleaned once per name:
        WireNames cleans them as they come; again here, being untrusted."""
        if nid >= len(self._shown):
            values = self.wire.names.values
            self._shown.extend(clean(v, NAME_MAX_LEN) if v else None
                               for v in values[len(self._shown) :])  # fmt: skip
        return self._shown[nid] if 0 < nid < len(self._shown) else None


# The name columns of the rows a query reads (query/rowcolumns.py).
NameRows = RowColumns[NameArrays]


def glob_test(pattern: str) -> Callable[[str], bool]:
    """Case-insensitive glob (names are shown in lower case)."""
    low = pattern.lower()
    return lambda v: fnmatch.fnmatchcase(v.lower(), low)


def name_mask(rows: NameRows, key: str, test: Callable[[str], bool]) -> np.ndarray:
    """Flows whose source or destination wire name passes test."""
    src, dst = rows.column("src_name_id"), rows.column("dst_name_id")
    hit = rows.arrays.matches(key, test)  # after the ids: the table only grows
    out: np.ndarray = hit[src] | hit[dst]
    return out


def name_columns(table: FlowTable, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {n: table.column(n, rows) for n in NAME_COLUMNS}


def shown_id(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Each flow's shown name id: the named (server) end's, dst first."""
    dst, src = cols["dst_name_id"], cols["src_name_id"]
    out: np.ndarray = np.where(dst != 0, dst, src).astype(np.uint64)
    return out


def source_name(code: int) -> str | None:
    return SOURCE_NAMES.get(code)
