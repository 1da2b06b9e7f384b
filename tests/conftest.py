"""Shared pytest setup.

Tests marked `kernel` need root (they build network namespaces, load BPF and
attach TC filters). Without root they are skipped, never failed; every other
missing piece (bcc, tc, a broken collector) is a failure.

The program cache (flowtop/kernel/progcache.py) is a directory of this
session's own (FLOWTOP_CACHE_DIR, removed at the end): each distinct build
compiles once, every other start of the suite loads it. Tests of the
compile path turn it off (FLOWTOP_PROGRAM_CACHE=0: tests/kernel/test_build.py,
and test_lifecycle.py's interrupts during the compile and the attach).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_CACHE_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _CACHE_DIR
    _CACHE_DIR = tempfile.mkdtemp(prefix="flowtop-progcache-")  # 0700, ours
    os.environ["FLOWTOP_CACHE_DIR"] = _CACHE_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)
        if os.environ.get("FLOWTOP_CACHE_DIR") == _CACHE_DIR:
            del os.environ["FLOWTOP_CACHE_DIR"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel tests need root (network namespaces, BPF, TC)")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)
