"""The parts of flowtop's build that pyproject.toml cannot declare.

1. Layout: the repository keeps the BPF C sources in `bpf/` and the themes in `themes/` at
   the top level; the wheel carries them inside the package, as `flowtop/bpf/` and
   `flowtop/themes/` (package_dir maps the folders in; flowtop.resources finds them).
2. flowtop(1) and the bash and zsh completion, generated at build time from
   flowtop.cli.build_parser() with argparse-manpage and shtab (both in pyproject.toml's
   [build-system] requires), and the service's unit and example config: all installed as
   wheel data, which pip puts under the environment's prefix (`share/...` below).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from setuptools import Command, find_packages, setup
from setuptools.command.build import build

ROOT = Path(__file__).resolve().parent
# Generated files go under build/: git ignores it and sdist prunes it.
GENERATED = "build/flowtop-share"
MANPAGE = "man/man1/flowtop.1"
BASH_COMPLETION = "bash-completion/completions/flowtop"
ZSH_COMPLETION = "zsh/site-functions/_flowtop"

# Options that take a file name (completed as files) and the interface option (completed
# with this host's interfaces), on the root parser and every subcommand. An option missing
# from the parser fails the build, so renaming one cannot silently lose its completion.
FILE_OPTIONS = ("--config", "--geoip-asn", "--geoip-city", "--labels", "--record", "--replay")
INTERFACE_OPTION = "--interface"


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and its subcommands' parsers, depth first."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += _parsers(sub)
    return out


def _mark_completions(parser: argparse.ArgumentParser) -> None:
    import shtab

    seen: set[str] = set()
    for p in _parsers(parser):
        for action in p._actions:
            flags = set(action.option_strings)
            if flags & set(FILE_OPTIONS):
                action.complete = shtab.FILE
            elif INTERFACE_OPTION in flags:
                action.complete = shtab.cmd("ls /sys/class/net")
            seen |= flags
    missing = {*FILE_OPTIONS, INTERFACE_OPTION} - seen
    if missing:
        raise SystemExit(f"setup.py: options not in flowtop.cli: {', '.join(sorted(missing))}")


def _roff_items(items: list[tuple[str, str]]) -> str:
    return "\n".join(f".TP\n.B {name}\n{text}" for name, text in items)


def _manpage(parser: argparse.ArgumentParser) -> str:
    from argparse_manpage.manpage import Manpage

    from flowtop import __version__, resources
    from flowtop.config import DEFAULT_PATH

    man = Manpage(parser)
    man.description = parser.description
    man.source = f"flowtop {__version__}"
    man.manual = "User Commands"
    files = [
        (DEFAULT_PATH, "the configuration, read when it exists (see --config); root-owned, "
         "not writable by group or others"),
    ]  # fmt: skip
    environment = [
        (resources.BPF_DIR_ENV, "directory of the BPF C sources, instead of the installed ones"),
        (resources.THEMES_ENV, "directory of the theme files, instead of the installed ones"),
        ("NO_COLOR", "start with the monochrome theme"),
        ("FLOWTOP_DEBUG", "print the traceback of an internal error"),
    ]
    man.add_section("files", "=", _roff_items(files))
    man.add_section("environment", "=", _roff_items(environment))
    man.add_section("see also", "=", ".BR tc (8),\n.BR bpftool (8),\n.BR systemctl (1)")
    return str(man)


class build_share(Command):
    """Writes flowtop(1) and the shell completions under GENERATED."""

    description = "generate flowtop(1) and bash/zsh completion from flowtop.cli"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        import shtab

        # This tree's flowtop.cli, not an installed one. build_parser() must stay importable
        # with the standard library only: the build environment has no runtime dependency.
        sys.path.insert(0, str(ROOT))
        from flowtop.cli import build_parser

        out = ROOT / GENERATED
        pages = {MANPAGE: _manpage(build_parser())}
        parser = build_parser()
        _mark_completions(parser)
        pages[BASH_COMPLETION] = shtab.complete(parser, shell="bash")
        pages[ZSH_COMPLETION] = shtab.complete(parser, shell="zsh")
        for rel, text in pages.items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


class build_with_share(build):
    sub_commands = [*build.sub_commands, ("build_share", None)]


def _generated(rel: str) -> tuple[str, list[str]]:
    return (f"share/{Path(rel).parent}", [f"{GENERATED}/{rel}"])


setup(
    packages=[*find_packages(include=["flowtop*"]), "flowtop.bpf", "flowtop.themes"],
    package_dir={"flowtop.bpf": "bpf", "flowtop.themes": "themes"},
    package_data={
        "flowtop": ["py.typed"],
        "flowtop.bpf": ["*.c", "*.h"],
        "flowtop.themes": ["*.toml"],
        "flowtop.tui": ["*.tcss"],
    },
    data_files=[
        _generated(MANPAGE),
        _generated(BASH_COMPLETION),
        _generated(ZSH_COMPLETION),
        # For `make install` and for installing the service from a wheel alone.
        ("share/flowtop", ["contrib/flowtop.service", "contrib/flowtop.toml"]),
    ],
    cmdclass={"build": build_with_share, "build_share": build_share},
)
