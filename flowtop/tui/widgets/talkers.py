"""The top-talkers table: rows updated in place by key, never rebuilt per refresh.

Per refresh only changed cells are touched (`update_cell`), rows that left the
top list are removed, new ones added, and the order fixed with one `sort` when
it changed. The cursor follows its row key while rows move. Cost is O(rows
handed over), which the query limits to about a screenful.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from flowtop.query.types import ViewRow
from flowtop.tui import columns as cols
from flowtop.tui.columns import Column, Names
from flowtop.tui.format import Display


class Cell:
    """One line of plain text, padded or cut to the cell width.

    Rendering a rich Text per cell (wrapping, justification) costs about 0.1 ms
    and the table re-renders every visible cell on each refresh; a single
    Segment is several times cheaper. The text is never parsed as markup, and
    what reaches it is already clean (numbers, addresses, cleaned names).
    """

    __slots__ = ("rank", "right", "text")

    def __init__(self, text: str, right: bool = False, rank: int = 0) -> None:
        self.text = text
        self.right = right
        self.rank = rank  # the row's position in the snapshot (first cell only)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        text = self.text
        size = cell_len(text)
        if size > width:
            text = set_cell_size(text, width)
        elif size < width:
            text = " " * (width - size) + text if self.right else text + " " * (width - size)
        yield Segment(text)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        size = cell_len(self.text)
        return Measurement(size, size)

    def __str__(self) -> str:
        return self.text


class TalkersTable(DataTable[Cell | Text]):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=0)
        self.shown: tuple[Column, ...] = ()
        self._cells: dict[str, tuple[str, ...]] = {}
        self._first: dict[str, Cell] = {}
        self._order: list[str] = []
        self._sort: tuple[str, bool] = ("bps", True)
        self.rows_by_key: dict[str, ViewRow] = {}

    # -- what the screen calls ---------------------------------------------------------

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # cursor outside the rows after a removal
            return None
        return row_key.value

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
            self._set_columns(wanted, sort)
        self.rows_by_key = {r.key: r for r in rows}
        new_order = [r.key for r in rows]
        for stale in set(self._cells) - self.rows_by_key.keys():
            self.remove_row(stale)
            del self._cells[stale]
            del self._first[stale]
        for rank, row in enumerate(rows):
            texts = tuple(cols.cell(c, row, display, names) for c in self.shown)
            old = self._cells.get(row.key)
            if old is None:
                cells = [Cell(t, c.numeric) for c, t in zip(self.shown, texts, strict=True)]
                self.add_row(*cells, key=row.key)
                self._first[row.key] = cells[0]
            elif old != texts:
                for i, (c, t, o) in enumerate(zip(self.shown, texts, old, strict=True)):
                    if t == o:
                        continue
                    cell = Cell(t, c.numeric)
                    if i == 0:
                        self._first[row.key] = cell
                    self.update_cell(row.key, c.key, cell)
            self._cells[row.key] = texts
            self._first[row.key].rank = rank
        if new_order != self._order:
            self._order = new_order
            if self.shown:
                self.sort(self.shown[0].key, key=lambda t: t.rank)
        if selected is not None and selected in self._cells:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False, scroll=True)

    # -- helpers ----------------------------------------------------------------------

    def _label(self, c: Column, sort: tuple[str, bool]) -> Text:
        label = c.label
        if c.sort is not None and c.sort == sort[0]:
            label += "▼" if sort[1] else "▲"
        return Text(label, justify="right" if c.numeric else "left", no_wrap=True, end="")

    def _set_columns(self, wanted: tuple[Column, ...], sort: tuple[str, bool]) -> None:
        """Rebuilds the columns (a grouping, width, mode or sort change: rare)."""
        self.clear(columns=True)
        self._cells.clear()
        self._first.clear()
        self._order = []
        self.shown = wanted
        self._sort = sort
        for c in wanted:
            self.add_column(self._label(c, sort), width=c.width + cols.GAP, key=c.key)

    def column_sort_key(self, column_key: str) -> str | None:
        c = cols.COLUMNS.get(column_key)
        return c.sort if c is not None else None

    def key_at(self, row_key: RowKey) -> str | None:
        return row_key.value
