"""Writes screenshots/*.svg: the real app on the deterministic fake source.

    .venv/bin/python scripts/screenshots.py [SCENE ...]

The scenes are those of the snapshot tests (tests/tui/scenes.py), so the
pictures in the README are the screens the tests check. No root, no kernel.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tui.scenes import SCENES, Scene  # noqa: E402

OUT = ROOT / "screenshots"


async def shoot(scene: Scene) -> Path:
    app = scene.make_app()
    try:
        async with app.run_test(size=scene.size) as pilot:
            await scene.steps(pilot)
            await pilot.pause(0.1)
            path = app.save_screenshot(f"{scene.name}.svg", path=str(OUT))
    finally:
        app.source.close()
    return Path(path)


def main(argv: list[str]) -> int:
    import os

    os.environ["TZ"] = "UTC"
    time.tzset()
    os.environ.pop("NO_COLOR", None)
    wanted = set(argv)
    unknown = wanted - {s.name for s in SCENES}
    if unknown:
        print(f"unknown scenes: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    for scene in SCENES:
        if wanted and scene.name not in wanted:
            continue
        print(asyncio.run(shoot(scene)).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
