"""Socket owners in the view: the owner columns of the rows a query reads,
the name tables as arrays, and the process/service/container groups.

The engine writes per flow the owner's pid, uid, cgroup id, NameTable ids
(comm_id, service_id, container_id, pod_id) and owner_state into the flow
table (origin fields.OWNER, from core/owners.OwnerTable). Names are looked
at per name, never per flow: a filter term tests each name of a table once
and indexes the result with the flows' ids (np.take), and those per-name
results are kept until the table grows.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from flowtop.core import fields
from flowtop.core.cgroups import PATH_MAX_LEN
from flowtop.core.owners import STATE_UNATTRIBUTED
from flowtop.query.rowcolumns import RowColumns
from flowtop.sanitize import clean

if TYPE_CHECKING:
    from flowtop.core.flowtable import FlowTable
    from flowtop.core.owners import NameTable, OwnerNames

# The flow table's owner columns (core/fields.py, origin OWNER) the view reads.
OWNER_COLUMNS = (
    "pid",
    "uid",
    "cgroup_id",
    "comm_id",
    "service_id",
    "container_id",
    "pod_id",
    "owner_state",
)
# The name table behind each id column (OwnerNames attribute).
NAME_OF = {"comm_id": "comm", "service_id": "service", "container_id": "container", "pod_id": "pod"}
# Group (query.types.OWNER_GROUPS) -> the id column it is keyed by.
GROUP_COLUMN = {"process": "comm_id", "service": "service_id", "container": "container_id"}
NO_OWNER = "-"  # the value of the group of flows without that owner name
# The group of flows whose local socket's owner is unknown (owner_state
# STATE_UNATTRIBUTED): never merged with "-" (forwarded, not local) nor a name.
UNATTRIBUTED = "(unattributed)"
UNATTRIBUTED_GROUP = 1 << 62  # its group id (name ids are far below)


def available() -> bool:
    """Whether this build's flow table has the owner columns."""
    return all(n in fields.FIELD for n in OWNER_COLUMNS)


class OwnerSource(Protocol):
    """What the view needs of the engine's OwnerTable (core/owners.py)."""

    names: OwnerNames

    def cgroup_path(self, cgroup_id: int) -> str | None: ...


class OwnerArrays:
    """Per-name results over an owner's name tables, cached while a table
    does not grow (ids are never reused, so a grown table only adds names)."""

    def __init__(self, owners: OwnerSource) -> None:
        self.owners = owners
        self._hits: dict[tuple[str, str], tuple[int, np.ndarray]] = {}
        self._shown: dict[str, list[str | None]] = {}  # id column -> cleaned names by id

    def table(self, id_column: str) -> NameTable:
        out: NameTable = getattr(self.owners.names, NAME_OF[id_column])
        return out

    def matches(self, id_column: str, key: str, test: Callable[[str], bool]) -> np.ndarray:
        """test(name) for every name id of the column's table (False for no
        name), as a bool array indexed by id; `key` names the test for the cache."""
        table = self.table(id_column)
        n = len(table)
        got = self._hits.get((id_column, key))
        if got is not None and got[0] == n:
            return got[1]
        hit = np.array([test(v) if v else False for v in table.values], dtype=np.bool_)
        if len(self._hits) > 256:
            self._hits.clear()
        self._hits[(id_column, key)] = (n, hit)
        return hit

    def name(self, id_column: str, nid: int) -> str | None:
        """The cleaned display name of an id (None: no name), cleaned once per name."""
        shown = self._shown.setdefault(id_column, [])
        if nid >= len(shown):
            values = self.table(id_column).values
            shown.extend(_clean_name(v) if v else None for v in values[len(shown) :])
        return shown[nid] if 0 <= nid < len(shown) else None

    def cgroup_path(self, cgroup_id: int) -> str | None:
        if not cgroup_id:
            return None
        path = self.owners.cgroup_path(cgroup_id)
        return clean(path, PATH_MAX_LEN) if path else None


def _clean_name(v: str) -> str:
    # Names are cleaned where the OwnerTable makes them; again here, since
    # anything a process or a cgroup's creator chose is untrusted.
    return clean(v)


# The owner columns of the rows a query reads (query/rowcolumns.py).
OwnerRows = RowColumns[OwnerArrays]


def glob_test(pattern: str) -> Callable[[str], bool]:
    return lambda v: fnmatch.fnmatchcase(v, pattern)


def prefix_test(prefix: str) -> Callable[[str], bool]:
    low = prefix.lower()
    return lambda v: v.lower().startswith(low)


def owner_columns(
    table: FlowTable, rows: np.ndarray, names: tuple[str, ...] = OWNER_COLUMNS
) -> dict[str, np.ndarray]:
    """Owner columns at rows (copies)."""
    return {n: table.column(n, rows) for n in names}


def owner_groups(group: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Each flow's group id for an owner group: the name id (0: no name, the
    "-" group, which no name shares); UNATTRIBUTED_GROUP for flows of a local
    socket whose owner is unknown."""
    out: np.ndarray = cols[GROUP_COLUMN[group]].astype(np.uint64)
    out[cols["owner_state"] == STATE_UNATTRIBUTED] = UNATTRIBUTED_GROUP
    return out
