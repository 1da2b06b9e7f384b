"""Messages from the engine worker to the UI."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from flowtop.query.types import Snapshot, ViewRow


@dataclass
class SnapshotReady(Message):
    """A snapshot for the current query; `requested` when it answers a query change.
    legs: the flow rows of the conversation whose detail is open (tui/legs.py)."""

    snapshot: Snapshot
    history: tuple[tuple[float, float], ...] | None = None
    history_key: str | None = None
    requested: bool = False
    legs: tuple[ViewRow, ...] | None = None


@dataclass
class NamesResolved(Message):
    """New reverse-DNS names are in the resolver's cache."""
