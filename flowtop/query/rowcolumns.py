"""The columns of the rows one query reads, each read from the flow table once,
when first asked: a filter without owner or name terms reads none of theirs."""

from __future__ import annotations

from typing import Generic, TypeVar

import numpy as np

from flowtop.core.flowtable import FlowTable

A = TypeVar("A")


class RowColumns(Generic[A]):
    """Columns of `rows` (read lazily) and the name arrays (`arrays`: the
    owner or wire-name tables as arrays) the filter terms test them against."""

    def __init__(self, table: FlowTable, rows: np.ndarray, arrays: A) -> None:
        self._table = table
        self._rows = rows
        self.arrays = arrays
        self._cols: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        got = self._cols.get(name)
        if got is None:
            got = self._cols[name] = self._table.column(name, self._rows)
        return got
