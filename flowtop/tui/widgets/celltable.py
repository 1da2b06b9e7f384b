"""CellTable: a DataTable of one-line plain-text rows that repaints only changed lines.

Textual's DataTable repaints the whole table on every `update_cell`, `add_row`,
`remove_row` or `sort`: each bumps a counter that all of its row, cell and line
caches are keyed on, then asks for a full refresh, and each repainted cell goes
through Rich (Styled(Padding(cell))). `remove_row` also rebuilds the row index
and re-sets the cursor and hover (their watchers find cell regions by sorting
every row). With every rate in the top-talkers table changing each second and
rows moving and leaving the top, that was most of the live view's CPU.

Here the DataTable rows are fixed slots, "0", "1", ...: `show_rows()` puts row
i of what is to be shown into slot i, writing only the cells that differ (no
sort, no add/remove unless the row count changes), then repaints the lines
whose (key, texts) changed. Body lines are built straight from the texts and
kept as Strips keyed on what they show (texts, cursor, hover, scroll, widths,
style), so a line that did not change costs a lookup. The header and any
other value take DataTable's own path; what a line looks like is DataTable's
(tests/tui/test_repaint.py compares every line with DataTable.render_line).
The key a row shows is `key_at(index)`; DataTable's row keys are the slots.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, Self

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._segment_tools import line_crop
from textual.cache import LRUCache
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

STYLES_KEPT = 512  # cell styles of a row by position: a few screenfuls, cursor or not
LINES_KEPT = 512  # rendered body lines: a few screenfuls
Line = tuple[str, tuple[str, ...]]  # what a row shows: its key and its cell texts


class Cell:
    """One line of plain text, padded or cut to the cell width.

    Never parsed as markup: what reaches it is already clean (numbers,
    addresses, cleaned names).
    """

    __slots__ = ("right", "text")

    def __init__(self, text: str, right: bool = False) -> None:
        self.text = text
        self.right = right

    def fit(self, width: int) -> str:
        """The text padded (left or right aligned) or cut to `width` cells."""
        text = self.text
        size = cell_len(text)
        if size > width:
            return set_cell_size(text, width)
        if size < width:
            return " " * (width - size) + text if self.right else text + " " * (width - size)
        return text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.fit(options.max_width))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        size = cell_len(self.text)
        return Measurement(size, size)

    def __str__(self) -> str:
        return self.text


class _Paint(NamedTuple):
    top: int  # header lines
    scroll_x: int
    scroll_y: int
    width: int
    widths: tuple[int, ...]  # of the columns
    keys: tuple[Any, ...]  # column keys
    base_style: Style
    cursor_row: int  # -1: no cursor shown
    hover_row: int
    flags: tuple[object, ...]  # show_cursor, show_hover_cursor, pseudo classes
    plain: bool  # no fixed rows or columns, no row labels, one-line rows: lines are ours
    look: tuple[object, ...]  # what a row's line depends on, besides its texts and place


class CellTable(DataTable[Cell | Text]):
    """Rows of plain-text Cells in fixed slots, one line each; a header of Text."""

    _quiet = False  # inside show_rows(): whole-table repaints are dropped
    _pass: _Paint | None = None  # what the lines of the current paint share

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._shown: list[Line] = []  # slot i shows _shown[i]
        self._index: dict[str, int] = {}  # key -> slot
        self._right: tuple[bool, ...] = ()  # per column: right-aligned
        self._column_keys: tuple[ColumnKey, ...] = ()
        self._cell_styles: LRUCache[Hashable, list[Style]] = LRUCache(STYLES_KEPT)
        self._lines_kept: LRUCache[Hashable, Strip] = LRUCache(LINES_KEPT)
        self.cells_updated = 0  # cells show_rows() rewrote in place (tests, bench)
        self.lines_repainted = 0  # body lines show_rows() asked to repaint (tests, bench)

    # -- what the owner calls ---------------------------------------------------------

    def set_columns(self, columns: Sequence[tuple[str, Text, int, bool]]) -> None:
        """Replaces columns and rows: (key, header label, width, right-aligned) each."""
        self.clear(columns=True)  # repaints everything
        self._shown = []
        self._index = {}
        self._right = tuple(right for _, _, _, right in columns)
        self._column_keys = tuple(
            self.add_column(label, width=width, key=key) for key, label, width, _ in columns
        )

    def show_rows(self, rows: Sequence[Line]) -> None:
        """Shows `rows` (key, one text per column) in this order, repainting what changed."""
        before = self._shown
        with self._quietly():
            for slot in range(len(before) - 1, len(rows) - 1, -1):
                self.remove_row(str(slot))  # the last ones: no row moves
            for slot, (row, old) in enumerate(zip(rows, before, strict=False)):
                if row[1] != old[1]:
                    self._write(slot, row[1], old[1])
            for slot in range(len(before), len(rows)):
                self.add_row(*self._cells(rows[slot][1]), key=str(slot))
        self._shown = list(rows)
        self._index = {key: slot for slot, (key, _) in enumerate(rows)}
        self._repaint(before, self._shown)

    def key_at(self, index: int) -> str | None:
        """The key of the row shown at a row index."""
        return self._shown[index][0] if 0 <= index < len(self._shown) else None

    def index_of(self, key: str) -> int | None:
        return self._index.get(key)

    def keys(self) -> list[str]:
        """The keys of the rows shown, top to bottom."""
        return [key for key, _ in self._shown]

    # -- updating ---------------------------------------------------------------------

    def _cells(self, texts: Sequence[str]) -> list[Cell]:
        return [Cell(t, r) for t, r in zip(texts, self._right, strict=True)]

    def _write(self, slot: int, texts: Sequence[str], old: Sequence[str]) -> None:
        """Writes the cells that differ into a slot (what update_cell does, once)."""
        data = self._data[RowKey(str(slot))]
        for key, text, was, right in zip(self._column_keys, texts, old, self._right, strict=True):
            if text != was:
                data[key] = Cell(text, right)
                self.cells_updated += 1
        self._update_count += 1  # DataTable's own caches go stale, as update_cell does

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """DataTable calls inside ask for no whole-table repaint."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _repaint(self, before: Sequence[Line], after: Sequence[Line]) -> None:
        """Repaints the visible lines that differ (and lines a shorter table left).

        A row whose key stayed is repainted from its first to its last changed
        cell only: the terminal is then sent just that span of the line.
        """
        top = self.header_height if self.show_header else 0
        scroll_x, scroll_y = self.scroll_offset
        width, height = self.size
        edges = [0]
        for column in self.ordered_columns:
            edges.append(edges[-1] + column.get_render_width(self))
        regions = []
        for i in range(max(len(before), len(after))):
            if i < len(before) and i < len(after) and before[i] == after[i]:
                continue
            y = top + i - scroll_y
            if not top <= y < height:
                continue
            x0, x1 = 0, width
            if i < len(before) and i < len(after) and before[i][0] == after[i][0]:
                changed = [
                    c
                    for c, (a, b) in enumerate(zip(before[i][1], after[i][1], strict=True))
                    if a != b
                ]
                x0, x1 = edges[changed[0]] - scroll_x, edges[changed[-1] + 1] - scroll_x
            x0, x1 = max(0, x0), min(width, x1)
            if x1 > x0:  # (the changed cells may be scrolled out of view)
                regions.append(Region(x0, y, x1 - x0, 1))
        self.lines_repainted += len(regions)
        if regions:
            self.refresh(*regions)

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> Self:
        # A layout asked for here (remove_row) is not lost: when the row count
        # changes, DataTable sets virtual_size on idle, which lays out.
        if self._quiet and not regions and not recompose:
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def clear(self, columns: bool = False) -> Self:
        self._cell_styles.clear()
        self._lines_kept.clear()
        self._shown = []
        self._index = {}
        return super().clear(columns)

    def notify_style_update(self) -> None:
        self._cell_styles.clear()  # a theme or CSS change: other component styles
        self._lines_kept.clear()
        super().notify_style_update()

    # -- painting ---------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        self._pass = self._paint()
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def _paint(self) -> _Paint:
        """What every line of one paint shares, worked out once per paint
        (rich_style walks the ancestors' backgrounds; reactives cost a lookup)."""
        columns = self.ordered_columns
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        widths = tuple(c.get_render_width(self) for c in columns)
        keys = tuple(c.key for c in columns)
        base_style = self.rich_style
        flags = (self.show_cursor, self._show_hover_cursor, self.get_pseudo_class_state())
        return _Paint(
            top=self.header_height if self.show_header else 0,
            scroll_x=scroll_x,
            scroll_y=scroll_y,
            width=width,
            widths=widths,
            keys=keys,
            base_style=base_style,
            cursor_row=self.cursor_coordinate.row if self.show_cursor else -1,
            hover_row=self.hover_coordinate.row,
            flags=flags,
            plain=not (self.fixed_rows or self.fixed_columns or self._labelled_row_exists)
            and len(columns) == len(self._right),
            look=(scroll_x, width, widths, keys, base_style, flags),
        )

    def render_line(self, y: int) -> Strip:
        p = self._pass or self._paint()
        row_index = y - p.top + p.scroll_y
        if y < p.top or not p.plain or not 0 <= row_index < len(self._shown):
            return super().render_line(y)  # the header, below the last row, or not plain
        texts = self._shown[row_index][1]
        cursor, hover = row_index == p.cursor_row, row_index == p.hover_row
        key = (texts, row_index, cursor, hover, p.look)
        strip = self._lines_kept.get(key)
        if strip is None:
            strip = self._body_line(p, row_index, texts, cursor, hover)
            self._lines_kept[key] = strip
        return strip

    def _body_line(
        self, p: _Paint, row_index: int, texts: Sequence[str], cursor: bool, hover: bool
    ) -> Strip:
        """One row as DataTable._render_line draws it: cells, then the rest of the width."""
        styles = self._row_styles(p, row_index, cursor, hover)
        segments = [
            Segment(Cell(text, right).fit(width), style)
            for text, right, width, style in zip(texts, self._right, p.widths, styles, strict=False)
        ]
        table_width = sum(p.widths)
        segments.append(Segment(" " * max(0, p.width - table_width), styles[-1]))
        if p.scroll_x == 0 and table_width <= p.width:
            # What line_crop, adjust_cell_length and simplify would leave as it is:
            # each segment is exactly its width, and every style differs from the
            # next (each carries its own column).
            return Strip(segments, p.width)
        line = line_crop(segments, p.scroll_x, p.scroll_x + p.width, p.width)
        return Strip(line).adjust_cell_length(p.width, p.base_style).simplify()

    def _row_styles(self, p: _Paint, row_index: int, cursor: bool, hover: bool) -> list[Style]:
        """The style of each cell of a row, and last that of the space after them.

        DataTable's sums (base + meta + cursor/hover component + post); the meta
        carries the row and column for mouse clicks, so they are kept per row.
        """
        key = (row_index, cursor, hover, p.look)
        styles = self._cell_styles.get(key)
        if styles is None:
            component, post = self._styles(cursor, hover)
            styles = [
                p.base_style + Style.from_meta({"row": row_index, "column": i}) + component + post
                for i in range(len(p.keys))
            ]
            out_of_bounds = {"row": row_index, "column": 0, "out_of_bounds": True}
            styles.append(p.base_style + component + Style.from_meta(out_of_bounds))
            self._cell_styles[key] = styles
        return styles

    def _styles(self, cursor: bool, hover: bool) -> tuple[Style, Style]:
        """The cursor/hover component style and post style of a body cell (DataTable's)."""
        return self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
