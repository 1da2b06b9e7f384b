"""The interactive view (Textual). Nothing in the engine imports this package."""

from __future__ import annotations

from flowtop.tui.app import FlowtopApp

__all__ = ["FlowtopApp"]
