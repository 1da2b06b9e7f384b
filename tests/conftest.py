"""Shared pytest setup.

Tests marked `kernel` need root (they build network namespaces, load BPF and
attach TC filters). Without root they are skipped, never failed; every other
missing piece (bcc, tc, a broken collector) is a failure.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel tests need root (network namespaces, BPF, TC)")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)
