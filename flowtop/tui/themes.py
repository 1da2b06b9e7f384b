"""Themes: TOML files in `themes/` (shipped inside the package), as Textual `Theme`s.

Colours live only there; widgets and .tcss use the theme's variables. A theme
file is flat keys of `textual.theme.Theme` plus a `[variables]` table.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from textual.theme import Theme

from flowtop import resources
from flowtop.errors import ConfigError

DEFAULT = "flowtop-dark"
MONO = "flowtop-mono"
# The order the theme key cycles through; other files in themes/ come after.
ORDER = ("flowtop-dark", "flowtop-light", "flowtop-high-contrast", "flowtop-mono")
_FIELDS = {
    "name", "primary", "secondary", "warning", "error", "success", "accent", "foreground",
    "background", "surface", "panel", "boost", "dark", "luminosity_spread", "text_alpha",
}  # fmt: skip


def theme_dir() -> Path:
    """$FLOWTOP_THEMES, else the installed package's themes (see flowtop.resources)."""
    return resources.themes_dir()


def _theme(path: Path, data: dict[str, Any]) -> Theme:
    unknown = set(data) - _FIELDS - {"variables"}
    if unknown:
        raise ConfigError(f"{path}: unknown theme keys: {', '.join(sorted(unknown))}")
    if "name" not in data or "primary" not in data:
        raise ConfigError(f"{path}: a theme needs at least 'name' and 'primary'")
    variables = data.pop("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ConfigError(f"{path}: [variables] must map names to colour strings")
    return Theme(**data, variables=dict(variables))


def load_themes(directory: Path | None = None) -> list[Theme]:
    """Every theme in `directory`, in cycling order; ConfigError on a broken file."""
    directory = directory or theme_dir()
    if not directory.is_dir():
        raise ConfigError(f"theme directory not found: {directory} (set FLOWTOP_THEMES)")
    themes: dict[str, Theme] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        theme = _theme(path, data)
        themes[theme.name] = theme
    missing = [n for n in ORDER if n not in themes]
    if missing:
        raise ConfigError(f"{directory}: missing themes: {', '.join(missing)}")
    rest = sorted(set(themes) - set(ORDER))
    return [themes[n] for n in (*ORDER, *rest)]


def pick_default(requested: str | None, environ: dict[str, str] | None = None) -> str:
    """The theme to start with: the requested one, else monochrome for NO_COLOR or a
    dumb terminal, else the default dark theme."""
    env = os.environ if environ is None else environ
    if requested:
        return requested
    if "NO_COLOR" in env or env.get("TERM") in ("dumb", "vt100", "vt220"):
        return MONO
    return DEFAULT
