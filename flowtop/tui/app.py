"""FlowtopApp: owns the source, the engine worker and the view state.

Threading: one `engine` thread worker steps the source and posts a snapshot per
interval; a key that changes the query starts a short `query` thread worker for
an immediate snapshot. Sources must allow `snapshot()` while another thread is in
`step()` (TableSource takes its own lock); `_snap_lock` keeps snapshot calls
themselves one at a time. The UI thread never calls the source.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from textual import on, work
from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from flowtop.errors import ConfigError, FlowtopError
from flowtop.query.types import GROUPS, Snapshot, ViewQuery, ViewRow, ViewSource
from flowtop.tui import themes
from flowtop.tui.format import Display
from flowtop.tui.history import RateHistory
from flowtop.tui.messages import NamesResolved, SnapshotReady
from flowtop.tui.screens.detail import DetailScreen
from flowtop.tui.screens.groupby import GroupByScreen
from flowtop.tui.screens.help import HelpScreen
from flowtop.tui.screens.main import MainScreen

MIN_LIMIT = 50  # rows asked of the engine: a screenful and some
# The live view opens on conversations: one row per connection, both
# directions side by side (`g f`: the flow view, every leg and direction).
DEFAULT_GROUP = "conversation"


class NameSource(Protocol):
    def name(self, addr: str) -> str | None: ...

    def close(self, timeout: float = 0.0) -> None: ...

    # Optionally `failures: int`, lookups that failed so far (shown as resolve_errors).


ResolverFactory = Callable[[Callable[[], None]], NameSource]


def dns_resolver(on_resolved: Callable[[], None]) -> NameSource:
    """Reverse DNS for the view: asynchronous, TTL-cached, bounded (flowtop.enrich.dns)."""
    from flowtop.enrich.dns import ReverseResolver

    return ReverseResolver(on_resolved=on_resolved)


class FlowtopApp(App[None]):
    CSS_PATH = Path(__file__).with_name("flowtop.tcss")
    TITLE = "flowtop"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("t", "next_theme", "Theme"),
    ]

    def __init__(
        self,
        source: ViewSource,
        theme: str | None = None,
        resolve: bool = True,
        resolver: ResolverFactory | None = None,
        group: str = DEFAULT_GROUP,
    ) -> None:
        super().__init__()
        if group not in GROUPS:
            raise ConfigError(f"unknown group {group!r}; groups: {', '.join(GROUPS)}")
        self.source = source
        self.theme_names = []
        for t in themes.load_themes():
            self.register_theme(t)
            self.theme_names.append(t.name)
        self.theme = self._theme_name(themes.pick_default(theme))
        self.view_query = ViewQuery(group_by=group, limit=MIN_LIMIT)
        self.display_opts = Display(resolve=resolve)
        self.paused = False
        self.latest: Snapshot | None = None  # newest from the engine
        self.shown: Snapshot | None = None  # what the screen shows (held while paused)
        self.history = RateHistory()
        self.detail_key: str | None = None
        self.detail_legs = False  # the detail open is a conversation's: ask for its legs
        self.snapshots = 0  # received, for tests and benchmarks
        self._snap_lock = threading.Lock()
        self._make_resolver = resolver or dns_resolver
        self._resolver: NameSource | None = None
        self._names_pending = threading.Event()
        # Why the engine worker gave up (CollectorFailedError): run_live raises it.
        self.failure: FlowtopError | None = None
        self.gc_frozen = False  # the start-up's objects are out of the collector's scans

    def _theme_name(self, name: str) -> str:
        if name in self.theme_names:
            return name
        if f"flowtop-{name}" in self.theme_names:
            return f"flowtop-{name}"
        raise ConfigError(f"unknown theme {name!r}; themes: {', '.join(self.theme_names)}")

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen()

    @property
    def main(self) -> MainScreen:
        screen = self.screen_stack[0]
        assert isinstance(screen, MainScreen)
        return screen

    def start_engine(self) -> None:
        """Called by the main screen once its widgets exist."""
        self.main.show(None, self.history, self.display_opts, self.paused)
        self._engine()

    def on_resize(self) -> None:
        limit = max(MIN_LIMIT, self.size.height)
        if limit != self.view_query.limit:
            self.change_query(limit=limit)
        elif self.shown is not None:
            self._draw()

    # -- engine side (threads) --------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="engine")
    def _engine(self) -> None:
        worker = get_current_worker()
        self._publish(requested=False)
        while not worker.is_cancelled:
            try:
                self.source.step()
            except FlowtopError as exc:  # the collector gave up: leave with its line
                self.failure = exc
                self.call_from_thread(self.exit, None, exc.exit_code)
                return
            if worker.is_cancelled:
                return
            self._publish(requested=False)

    @work(thread=True, exclusive=True, exit_on_error=False, group="query", name="query")
    def _requery(self) -> None:
        self._publish(requested=True)

    def _publish(self, requested: bool) -> None:
        query, key, want_legs = self.view_query, self.detail_key, self.detail_legs
        with self._snap_lock:
            snap = self.source.snapshot(query)
            history = tuple(self.source.history(key)) if key is not None else None
            legs = self._legs(key) if want_legs and key is not None else None
        self.post_message(SnapshotReady(snap, history, key, requested, legs))

    def _legs(self, key: str) -> tuple[ViewRow, ...] | None:
        """A conversation's flow rows (query/source.TableSource.conversation_flows),
        asked only while its detail is open; None from a source without them."""
        flows_of: Callable[[str], list[ViewRow]] | None = getattr(
            self.source, "conversation_flows", None
        )
        return tuple(flows_of(key)) if flows_of is not None else None

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(
                f"{event.worker.name} stopped: {error}", severity="error", timeout=30, markup=False
            )

    # -- UI side ----------------------------------------------------------------------

    @on(SnapshotReady)
    def _snapshot_ready(self, message: SnapshotReady) -> None:
        if not self._screen_stack:
            return  # a worker's last answer arriving while the app shuts down
        snap = message.snapshot
        self.snapshots += 1
        self.history.add(snap)  # interfaces and TCP do not depend on the query
        if snap.query != self.view_query:
            return  # answers a query the user has changed since
        fresh = (
            self.latest is None or snap.time != self.latest.time or snap.query != self.latest.query
        )
        self.latest = snap
        if (not self.paused and fresh) or message.requested:
            self.shown = snap
            self._draw()
            if not self.gc_frozen:
                self.call_after_refresh(self._freeze_start_up)
        try:
            screen = self.screen
        except ScreenStackError:  # the app is shutting down between the two checks
            return
        if isinstance(screen, DetailScreen) and message.history_key == self.detail_key:
            rows = {r.key: r for r in snap.rows}
            screen.update(
                rows.get(screen.row_key),
                message.history,
                self.display_opts,
                snap.time,
                message.legs,
            )

    def _freeze_start_up(self) -> None:
        """Once the first snapshot is on screen, what the start left (modules,
        the engine, the widgets, Textual's caches: about 65k objects) goes
        into the collector's permanent generation, so that a full collection
        no longer walks it: at 10k flows one cost about 65 ms of CPU every
        20-odd refreshes, about 3 ms a refresh on average (measured at
        160x48). Not collected first: that took 220 ms for the start's 2.7k
        unreachable objects, which instead stay until `_on_unmount` thaws
        everything."""
        if self.gc_frozen:
            return
        self.gc_frozen = True
        gc.freeze()

    def _on_unmount(self) -> None:
        # Textual calls the App's underscore handler for its Unmount (at the
        # end of shutdown), not `on_unmount`.
        if self.gc_frozen:
            # Collectable again (an app in a process that goes on: the tests).
            self.gc_frozen = False
            gc.unfreeze()

    def _draw(self) -> None:
        shown = self._with_resolver(self.shown)
        self.main.show(shown, self.history, self.display_opts, self.paused)

    def _with_resolver(self, snap: Snapshot | None) -> Snapshot | None:
        """The snapshot with the view's own resolver failures (resolve_errors):
        the engine does not know the resolver, the header shows them with its."""
        failed = int(getattr(self._resolver, "failures", 0)) if self._resolver else 0
        if snap is None or not failed:
            return snap
        health = dict(snap.health)
        health["resolve_errors"] = health.get("resolve_errors", 0) + failed
        return replace(snap, health=health, problems=snap.problems + failed)

    def change_query(self, **changes: Any) -> None:
        """Replaces the query (atomically, the worker reads it) and asks for rows now."""
        self.view_query = replace(self.view_query, **changes)
        self._requery()

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused and self.latest is not None:
            self.shown = self.latest  # catch up
        self._draw()

    def redraw(self) -> None:
        """Draw the snapshot shown again (a panel was opened)."""
        self._draw()

    def toggle_display(self, field: str) -> None:
        self.display_opts = replace(
            self.display_opts, **{field: not getattr(self.display_opts, field)}
        )
        self._draw()
        flags = self.display_opts
        state = {
            "cumulative": "totals since first seen" if flags.cumulative else "rates",
            "bits": "bits" if flags.bits else "bytes",
            "resolve": "names on" if flags.resolve else "numeric (no names)",
        }[field]
        self.notify(state, timeout=1.5)

    def open_detail(self, key: str) -> None:
        if self.shown is None:
            return
        row = next((r for r in self.shown.rows if r.key == key), None)
        if row is None:
            return
        self.detail_legs = row.role is not None  # before the key: _publish reads both
        self.detail_key = key
        screen = DetailScreen(row, self.names, self.display_opts, self.shown.time)

        def closed(_: None) -> None:
            self.detail_key = None
            self.detail_legs = False

        self.push_screen(screen, closed)
        self._requery()  # fetch its history now

    # -- names ------------------------------------------------------------------------

    def names(self, addr: str) -> str | None:
        """The resolved name of an address, if known (never blocks)."""
        if not self.display_opts.resolve:
            return None
        if self._resolver is None:
            self._resolver = self._make_resolver(self._names_ready)
        return self._resolver.name(addr)

    def _names_ready(self) -> None:
        # Resolver thread: coalesce a burst of answers into one redraw.
        if not self._names_pending.is_set():
            self._names_pending.set()
            self.post_message(NamesResolved())

    @on(NamesResolved)
    def _names_resolved(self) -> None:
        self._names_pending.clear()
        if self.shown is not None:
            self._draw()

    # -- app keys ---------------------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(
            HelpScreen(
                [
                    ("Main view", list(MainScreen.BINDINGS)),
                    ("Anywhere", list(self.BINDINGS)),
                    ("Group by (g, then)", list(GroupByScreen.BINDINGS)[1:]),
                ]
            )
        )

    def action_next_theme(self) -> None:
        i = self.theme_names.index(self.theme) if self.theme in self.theme_names else -1
        self.theme = self.theme_names[(i + 1) % len(self.theme_names)]
        self.notify(f"theme: {self.theme}", timeout=1.5)

    async def action_quit(self) -> None:
        if self._resolver is not None:
            self._resolver.close()
        # Wake the engine worker from its wait so that quitting does not
        # take up to a whole refresh interval (the CLI detaches afterwards).
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            stop()
        self.exit()
