"""Where flowtop's data folders are: the BPF C sources and the themes.

In an installed flowtop (a wheel: pip, pipx, `make install`) they are inside the package:
the build maps the repository's top-level `bpf/` and `themes/` folders to `flowtop/bpf/`
and `flowtop/themes/` (see setup.py), and `importlib.resources` finds them there. In a
checkout, or an editable install of one, the package has no such folders (setuptools'
editable finder maps only importable modules, not data folders without `__init__.py`), so
the top-level folders next to the package are used. $FLOWTOP_BPF_DIR and $FLOWTOP_THEMES
override both.

bcc needs real directories (for `-I` and the source file), so these are `Path`s on disk.
(The live view's stylesheet already sits inside the package, next to flowtop/tui/app.py.)
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from flowtop.errors import FlowtopError

BPF_DIR_ENV = "FLOWTOP_BPF_DIR"
THEMES_ENV = "FLOWTOP_THEMES"


def _package_root(package: str) -> Path:
    root = files(package)
    if not isinstance(root, Path):
        # A zipped install (zipapp, egg): bcc cannot compile from inside an archive.
        raise FlowtopError(f"{package} is not installed as files on disk ({root})")
    return root


def _data_dir(name: str, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        return Path(override)
    packaged = _package_root("flowtop") / name
    if packaged.is_dir():
        return packaged
    checkout = _package_root("flowtop").parent / name
    if checkout.is_dir():
        return checkout
    return packaged  # missing either way: the caller names this path in its error


def bpf_dir() -> Path:
    """The BPF C sources (tc.c, sockops.c and their headers)."""
    return _data_dir("bpf", BPF_DIR_ENV)


def themes_dir() -> Path:
    """The theme files (*.toml), see flowtop.tui.themes."""
    return _data_dir("themes", THEMES_ENV)
