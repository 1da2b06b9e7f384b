"""PlainLabel: a Label of one line of plain text, drawn straight into its line.

Label draws through Textual's Visual path (visualize, Content, wrap and
format, strips): about 0.5 ms a draw, and the interface panel's rate labels
change every second. When the text fits on the widget's one line, what that
path makes of it is one segment, the text in the widget's style with the
content offset as meta; PlainLabel makes that segment itself (kept until the
text, width or style change). Anything else (a text wider than the widget,
more lines, a selection, alignment, link meta) takes Label's own path.
tests/tui/test_plainlabel.py compares both.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widgets import Label

_OFFSET = Style.from_meta({"offset": (0, 0)})  # where the segment starts in the content


class PlainLabel(Label):
    """One line of plain text (never markup); `show()` changes it."""

    def __init__(
        self, text: str = "", *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(Text(text, no_wrap=True), id=id, classes=classes, markup=False)
        self.text = text
        self._drawn: tuple[object, ...] | None = None  # what _strip shows
        self._strip = Strip([])

    def show(self, text: str) -> None:
        """Shows `text`; the widget has a fixed size: a repaint, no layout."""
        if text != self.text:
            self.text = text
            self.update(Text(text, no_wrap=True), layout=False)

    def render_line(self, y: int) -> Strip:
        text, (width, height), style = self.text, self.size, self.visual_style
        if (
            y != 0
            or height != 1
            or not text
            or cell_len(text) > width
            or "\n" in text
            or style.rich_style._meta is not None  # link styles would apply: Label's path
            or self.text_selection is not None
            or self.styles.content_align != ("left", "top")
            or self.styles.text_align not in ("left", "start")
        ):
            return super().render_line(y)
        drawn = (text, width, style)
        if drawn != self._drawn:
            self._drawn = drawn
            self._strip = Strip([Segment(text, style.rich_style + _OFFSET)], cell_len(text))
        return self._strip
