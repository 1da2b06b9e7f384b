"""The top-talkers table: the snapshot's rows in order, only changed lines repainted.

Per refresh each row's cell texts are made (O(rows handed over), which the
query limits to about a screenful) and handed to CellTable.show_rows, which
writes only the cells that differ and repaints only the lines that changed
(celltable.py says why DataTable alone would repaint everything). The cursor
follows its row's key while rows move.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from flowtop.query.types import ViewRow
from flowtop.tui import columns as cols
from flowtop.tui.columns import Column, Names
from flowtop.tui.format import Display
from flowtop.tui.widgets.celltable import CellTable


class TalkersTable(CellTable):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=0)
        self.shown: tuple[Column, ...] = ()
        self._sort: tuple[str, bool] = ("bps", True)

    # -- what the screen calls ---------------------------------------------------------

    def selected_key(self) -> str | None:
        """The key of the row under the cursor."""
        return self.key_at(self.cursor_row) if self.row_count else None

    def show(
        self,
        rows: Sequence[ViewRow],
        group_by: str,
        sort: tuple[str, bool],
        display: Display,
        names: Names,
        width: int,
    ) -> None:
        """Makes the table show `rows` (in this order); call inside `app.batch_update()`."""
        wanted = cols.choose(rows, group_by, display, width)
        selected = self.selected_key()
        if wanted != self.shown or sort != self._sort:
            self._set_columns(wanted, sort)  # repaints everything, the header too
        shown = self.shown
        self.show_rows(
            [(r.key, tuple(cols.cell(c, r, display, names) for c in shown)) for r in rows]
        )
        index = self.index_of(selected) if selected is not None else None
        if index is not None and index != self.cursor_row:  # repaints its two lines itself
            self.move_cursor(row=index, animate=False, scroll=True)

    def column_sort_key(self, column_key: str) -> str | None:
        c = cols.COLUMNS.get(column_key)
        return c.sort if c is not None else None

    # -- helpers ----------------------------------------------------------------------

    def _label(self, c: Column, sort: tuple[str, bool]) -> Text:
        label = c.label
        if c.sort is not None and c.sort == sort[0]:
            label += "▼" if sort[1] else "▲"
        return Text(label, justify="right" if c.numeric else "left", no_wrap=True, end="")

    def _set_columns(self, wanted: tuple[Column, ...], sort: tuple[str, bool]) -> None:
        """Rebuilds the columns (a grouping, width, mode or sort change: rare)."""
        self.shown = wanted
        self._sort = sort
        self.set_columns(
            [(c.key, self._label(c, sort), c.width + cols.GAP, c.numeric) for c in wanted]
        )
