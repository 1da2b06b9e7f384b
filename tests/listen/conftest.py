"""Fixtures of the listener's tests with real exporters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kernel.netns import Pair, make_pair


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Two namespaces joined by a veth pair, IPv4 only (removed afterwards)."""
    p = make_pair(ipv6=False)
    try:
        yield p
    finally:
        p.delete()
