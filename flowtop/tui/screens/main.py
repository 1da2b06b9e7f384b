"""The main view: header, interfaces, top talkers, TCP health, drops (d), filter line, footer."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer

from flowtop.query.types import Snapshot
from flowtop.tui.format import Display
from flowtop.tui.history import RateHistory
from flowtop.tui.screens.groupby import GroupByScreen
from flowtop.tui.widgets.drops import DropsPanel
from flowtop.tui.widgets.filterbar import FilterBar
from flowtop.tui.widgets.interfaces import InterfacesPanel
from flowtop.tui.widgets.monitors import MonitorsPanel
from flowtop.tui.widgets.status import StatusHeader
from flowtop.tui.widgets.talkers import TalkersTable
from flowtop.tui.widgets.tcp_health import TcpHealth

if TYPE_CHECKING:
    from flowtop.tui.app import FlowtopApp

CHARTS_MIN_HEIGHT = 40  # TCP charts below the table from this terminal height on


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort(1)", "Sort"),
        Binding("S", "sort(-1)", "Sort back", show=False),
        Binding("r", "reverse", "Reverse", show=False),
        Binding("g", "group", "Group"),
        Binding("p,space", "pause", "Pause", key_display="p"),
        Binding("enter", "detail", "Detail", show=False),
        Binding("c", "cumulative", "Rate/total", show=False),
        Binding("b", "bits", "Bits/bytes", show=False),
        Binding("n", "names", "Names", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("d", "drops", "Drops panel", show=False),
        Binding("m", "monitors", "Monitors panel", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        # Kept, not queried: show() runs every refresh.
        self._interfaces = InterfacesPanel(id="interfaces")
        self._table = TalkersTable(id="talkers")
        self._tcp = TcpHealth(id="tcp")
        self._drops = DropsPanel(id="drops")
        self._drops.display = False  # until `d`
        self._monitors = MonitorsPanel(id="monitors")
        self._monitors.display = False  # until `m`

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield self._interfaces
        yield self._table
        yield self._tcp
        yield self._drops
        yield self._monitors
        yield FilterBar(id="filterbar")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(FilterBar).display = False
        self.query_one(TalkersTable).focus()
        self.flowtop.start_engine()

    @property
    def flowtop(self) -> FlowtopApp:
        return cast("FlowtopApp", self.app)

    # -- drawing ----------------------------------------------------------------------

    def show(
        self, snap: Snapshot | None, history: RateHistory, display: Display, paused: bool
    ) -> None:
        """Draws a snapshot (or only the header, before the first one)."""
        app = self.flowtop
        tall = self.app.size.height >= CHARTS_MIN_HEIGHT
        try:
            header = self.query_one(StatusHeader)
        except NoMatches:  # a snapshot that arrives while the app shuts down
            return
        with self.app.batch_update():
            header.set(snap, paused, display)
            if snap is None:
                return
            self._interfaces.set(snap.interfaces, history, display, max_lines=8 if tall else 3)
            table = self._table
            table.show(
                snap.rows,
                snap.query.group_by,
                (snap.query.sort, snap.query.descending),
                display,
                app.names,
                max(20, table.size.width - 1 if table.size.width else self.app.size.width - 1),
            )
            self._tcp.set(history, charts=tall, groups=snap.tcp_health)
            if self._drops.display:
                ifnames = {i.ifindex: i.name for i in snap.interfaces}
                self._drops.set(snap.drops, ifnames, lines=10 if tall else 4)
            if self._monitors.display:
                self._monitors.set(snap.monitors, lines=10 if tall else 4, bits=display.bits)
            if snap.filter_error:
                self.query_one(FilterBar).show_error(snap.filter_error)

    # -- keys -------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one(FilterBar).open(self.flowtop.view_query.filter)

    @on(FilterBar.Applied)
    def _filter_applied(self, event: FilterBar.Applied) -> None:
        self.flowtop.change_query(filter=event.text)
        self.query_one(TalkersTable).focus()

    @on(FilterBar.Closed)
    def _filter_closed(self) -> None:
        self.query_one(TalkersTable).focus()

    def action_clear_filter(self) -> None:
        if self.flowtop.view_query.filter:
            self.flowtop.change_query(filter="")

    def action_sort(self, step: int) -> None:
        keys = [c.sort for c in self.query_one(TalkersTable).shown if c.sort is not None]
        if not keys:
            return
        current = self.flowtop.view_query.sort
        i = keys.index(current) if current in keys else -step
        self.flowtop.change_query(sort=keys[(i + step) % len(keys)])

    def action_reverse(self) -> None:
        self.flowtop.change_query(descending=not self.flowtop.view_query.descending)

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = self.query_one(TalkersTable).column_sort_key(str(event.column_key.value))
        if key is None:
            self.notify("this column cannot be sorted on", severity="warning", timeout=2)
            return
        q = self.flowtop.view_query
        if key == q.sort:
            self.flowtop.change_query(descending=not q.descending)
        else:
            self.flowtop.change_query(sort=key)

    def action_group(self) -> None:
        def picked(group: str | None) -> None:
            if group is not None:
                self.flowtop.change_query(group_by=group)

        self.app.push_screen(GroupByScreen(self.flowtop.view_query.group_by), picked)

    def action_drops(self) -> None:
        self._drops.display = not self._drops.display
        if self._drops.display:
            self.flowtop.redraw()

    def action_monitors(self) -> None:
        self._monitors.display = not self._monitors.display
        if self._monitors.display:
            self.flowtop.redraw()

    def action_pause(self) -> None:
        self.flowtop.toggle_pause()

    def action_cumulative(self) -> None:
        self.flowtop.toggle_display("cumulative")

    def action_bits(self) -> None:
        self.flowtop.toggle_display("bits")

    def action_names(self) -> None:
        self.flowtop.toggle_display("resolve")

    def action_detail(self) -> None:
        key = self.query_one(TalkersTable).selected_key()
        if key is not None:
            self.flowtop.open_detail(key)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        key = self._table.key_at(event.cursor_row)  # the table's own row keys are slots
        if key is not None:
            self.flowtop.open_detail(key)
