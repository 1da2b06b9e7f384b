"""Snapshot tests (pytest-textual-snapshot) of every scene; update with --snapshot-update."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tui.scenes import SCENES, Scene


@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_scene(scene: Scene, snap_compare: Any) -> None:
    app = scene.make_app()
    try:
        assert snap_compare(app, terminal_size=scene.size, run_before=scene.steps)
    finally:
        app.source.close()
